//! `ript-gateway demo`: the newcomer's "it works" in one command. Two gateways run in this
//! process on loopback with in-memory SQLite — a customer (in front of a PBX) and a provider
//! (in front of a SIP core) — configured through their admin APIs exactly as an operator
//! would. Two built-in SIP phones call each other through them: the PBX phone sends a 1 kHz
//! tone and the digits 1 2 3 (RFC 4733), the core phone a 440 Hz tone; each side detects what
//! it hears. The ladder of SIP messages and RIPT requests/events is printed as it happens,
//! then what was detected and the media counters of both gateways' CDRs.

use crate::config::{self, RunArgs};
use crate::run::{self, Started};
use anyhow::{Context, anyhow, bail};
use media_proto::g711::{linear_to_ulaw, ulaw_to_linear};
use serde_json::{Value, json};
use sip_proto::sdp::{self, Local, Sdp, SrtpMode};
use sip_proto::session::{OfferKind, SessionEvent};
use sip_transport::{Endpoint, EndpointConfig, Listen, Target, Transport};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::{Mutex, oneshot};

const PBX_HZ: f64 = 1000.0;
const CORE_HZ: f64 = 440.0;
const DIGITS: &str = "123";
const CALLED: &str = "+14085552000";
const CALLER: &str = "+14085551000";
/// RTP payload type of telephone-event in the phones' SDP.
const TE_PT: u8 = 101;

pub async fn demo() -> ExitCode {
    match run_demo().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("demo: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// A gateway running in this process.
pub(crate) struct Gateway {
    pub(crate) label: &'static str,
    pub(crate) started: Started,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start_gateway(label: &'static str, dir: &std::path::Path) -> anyhow::Result<Gateway> {
    start_gateway_on(&tokio::runtime::Handle::current(), label, dir, &[], true).await
}

/// Starts a gateway on the runtime `rt` (the bench keeps the gateways on their own runtime);
/// `extra` settings (environment variable names) are added to the demo's, or replace them;
/// `ladder` prints the SIP/RIPT ladder of its calls.
pub(crate) async fn start_gateway_on(
    rt: &tokio::runtime::Handle,
    label: &'static str,
    dir: &std::path::Path,
    extra: &[(&'static str, String)],
    ladder: bool,
) -> anyhow::Result<Gateway> {
    let data = dir.join(label);
    let mut vars: Vec<(&str, String)> = vec![
        ("RIPT_DATA_DIR", data.display().to_string()),
        ("DATABASE_URL", "sqlite::memory:".into()),
        ("RIPT_HTTP3_LISTEN", "127.0.0.1:0".into()),
        ("RIPT_SIP_LISTEN", "udp:127.0.0.1:0".into()),
        ("RIPT_ADMIN_LISTEN", "127.0.0.1:0".into()),
        // Only the peers configured below are admitted.
        ("RIPT_SIP_ALLOW", String::new()),
        ("RIPT_INSTANCE_ID", label.into()),
        ("RIPT_MEDIA_ADDRESS", "127.0.0.1".into()),
    ];
    vars.retain(|(name, _)| extra.iter().all(|(e, _)| e != name));
    vars.extend(extra.iter().cloned());
    let env = move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
    let mut s = config::load(&RunArgs::default(), &env).map_err(|e| anyhow!("{e}"))?;
    s.ladder = ladder.then(|| label.to_owned());
    let (tx, rx) = oneshot::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = rt.spawn(run::run_until(
        s,
        async move {
            let _ = stopped.await;
        },
        Some(tx),
    ));
    let started = rx
        .await
        .map_err(|_| anyhow!("the {label} gateway did not start"))?;
    Ok(Gateway {
        label,
        started,
        stop: Some(stop),
        task,
    })
}

impl Gateway {
    pub(crate) async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }

    /// One admin API request over HTTP/1.1: status and JSON body.
    pub(crate) async fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let text = http(
            self.started.admin,
            &self.started.admin_token,
            method,
            path,
            body,
        )
        .await?;
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow!("no HTTP status from the {} admin API", self.label))?;
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let json = match (body.find(['{', '[']), body.rfind(['}', ']'])) {
            (Some(a), Some(b)) if a <= b => body
                .get(a..=b)
                .and_then(|j| serde_json::from_str(j).ok())
                .unwrap_or(Value::Null),
            _ => Value::Null,
        };
        Ok((status, json))
    }

    pub(crate) async fn create(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let (status, v) = self.api("POST", path, Some(&body)).await?;
        if status != 201 {
            bail!("{} POST {path}: {status} {v}", self.label);
        }
        Ok(v)
    }

    /// The admin API's `/metrics` response (status line, headers and Prometheus text).
    pub(crate) async fn metrics(&self) -> anyhow::Result<String> {
        http(
            self.started.admin,
            &self.started.admin_token,
            "GET",
            "/metrics",
            None,
        )
        .await
    }

    /// Waits until the gateway routes on `routes` routes (its configuration is in use).
    pub(crate) async fn wait_routes(&self, routes: usize) -> anyhow::Result<()> {
        let want = format!("gateway_config_objects{{kind=\"routes\"}} {routes}");
        for _ in 0..100 {
            let text = self.metrics().await?;
            if text.lines().any(|l| l.trim() == want) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the {} gateway never loaded its routes", self.label)
    }
}

async fn http(
    addr: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .context("admin API timeout")??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A built-in SIP phone: a user agent on its own loopback port and an RTP socket.
pub(crate) struct Phone {
    label: &'static str,
    pub(crate) ua: sip_ua::UserAgent,
    pub(crate) sip: SocketAddr,
    rtp: Arc<UdpSocket>,
}

impl Phone {
    pub(crate) async fn new(label: &'static str) -> anyhow::Result<Phone> {
        Self::with_sip_rate(label, EndpointConfig::default().rate_per_sec).await
    }

    /// A phone whose endpoint accepts `rate_per_sec` SIP messages per second from one source
    /// (the bench's phones and gateways all send from 127.0.0.1).
    pub(crate) async fn with_sip_rate(
        label: &'static str,
        rate_per_sec: u32,
    ) -> anyhow::Result<Phone> {
        let endpoint = Endpoint::bind(EndpointConfig {
            listen: vec![Listen {
                transport: Transport::Udp,
                addr: "127.0.0.1:0".parse()?,
            }],
            rate_per_sec,
            ..Default::default()
        })
        .await?;
        let sip = endpoint
            .local()
            .first()
            .map(|l| l.addr)
            .ok_or_else(|| anyhow!("no SIP listener"))?;
        let cfg = sip_ua::UaConfig {
            user: label.to_owned(),
            ..Default::default()
        };
        let ua = sip_ua::UserAgent::new(endpoint, cfg);
        let rtp = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        Ok(Phone {
            label,
            ua,
            sip,
            rtp,
        })
    }

    fn rtp_port(&self) -> u16 {
        self.rtp.local_addr().map_or(0, |a| a.port())
    }

    fn local(&self) -> Local {
        Local {
            address: "127.0.0.1".into(),
            audio_port: self.rtp_port(),
            codecs: vec!["PCMU".into()],
            srtp: SrtpMode::Off,
            keys: vec![],
            want: sdp::Direction::SendRecv,
            session_id: 1,
            session_version: 1,
        }
    }

    fn step(&self, what: &str) {
        run::ladder(self.label, what);
    }
}

/// What a phone heard: decoded audio and the digits of telephone-events.
#[derive(Debug, Default)]
struct Heard {
    samples: Vec<i16>,
    digits: String,
    packets: u64,
}

/// Receives RTP on `sock` into `heard` until aborted.
async fn listen(sock: Arc<UdpSocket>, heard: Arc<Mutex<Heard>>) {
    let mut buf = [0u8; 2048];
    let mut last_event_ts = None;
    while let Ok(n) = sock.recv(&mut buf).await {
        let Some(p) = buf.get(..n) else { continue };
        let Ok(pkt) = media_proto::rtp::parse(bytes::Bytes::copy_from_slice(p)) else {
            continue;
        };
        let mut h = heard.lock().await;
        h.packets += 1;
        match pkt.header.payload_type {
            0 => h
                .samples
                .extend(pkt.payload.iter().map(|b| ulaw_to_linear(*b))),
            TE_PT => {
                // One digit per event (its timestamp), reported at its first end packet.
                if let Ok(ev) = media_proto::dtmf::TelephoneEvent::decode(&pkt.payload)
                    && ev.end
                    && last_event_ts != Some(pkt.header.timestamp)
                {
                    last_event_ts = Some(pkt.header.timestamp);
                    if let Some(d) = media_proto::dtmf::char_of(ev.event) {
                        h.digits.push(d);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Sends `seconds` of a `hz` tone (PCMU, 20 ms packets) to `to`, then `digits` as RFC 4733.
async fn talk(sock: Arc<UdpSocket>, to: SocketAddr, hz: f64, seconds: u32, digits: &str) {
    let ssrc: u32 = rand::random();
    let (mut seq, mut ts) = (rand::random::<u16>(), rand::random::<u32>());
    let mut n: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let send = |payload: Vec<u8>, pt: u8, marker: bool, ts: u32, seq: &mut u16| {
        let pkt = media_proto::rtp::Packet {
            header: media_proto::rtp::Header {
                version: 2,
                marker,
                payload_type: pt,
                sequence_number: *seq,
                timestamp: ts,
                ssrc,
                ..Default::default()
            },
            payload: payload.into(),
        };
        *seq = seq.wrapping_add(1);
        if let Ok(b) = media_proto::rtp::serialize(&pkt) {
            let _ = sock.try_send_to(&b, to);
        }
    };
    for i in 0..seconds * 50 {
        tick.tick().await;
        let frame: Vec<u8> = (0..160)
            .map(|_| {
                let t = n as f64 / 8000.0;
                n += 1;
                linear_to_ulaw(((2.0 * std::f64::consts::PI * hz * t).sin() * 8000.0) as i16)
            })
            .collect();
        send(frame, 0, i == 0, ts, &mut seq);
        ts = ts.wrapping_add(160);
    }
    for d in digits.chars() {
        let Some(event) = media_proto::dtmf::event_of(d) else {
            continue;
        };
        // RFC 4733 §2.5: a 100 ms event in 20 ms updates, its end sent three times; then
        // 60 ms of pause.
        for k in 1..=5u16 {
            tick.tick().await;
            let ev = media_proto::dtmf::TelephoneEvent {
                event,
                end: k == 5,
                volume: 10,
                duration: k * 160,
            };
            let repeats = if k == 5 { 3 } else { 1 };
            for _ in 0..repeats {
                send(ev.encode().to_vec(), TE_PT, k == 1, ts, &mut seq);
            }
        }
        ts = ts.wrapping_add(800);
        for _ in 0..3 {
            tick.tick().await;
            ts = ts.wrapping_add(160);
        }
    }
}

/// A JSON object's member, `Null` when absent (JSON from our own API, but no panics).
pub(crate) fn field<'a>(v: &'a Value, k: &str) -> &'a Value {
    v.get(k).unwrap_or(&Value::Null)
}

pub(crate) fn media_addr(body: &[u8]) -> anyhow::Result<SocketAddr> {
    let s = Sdp::parse(body)?;
    let ip = s
        .media_address(0)
        .ok_or_else(|| anyhow!("SDP without an address"))?
        .parse()?;
    let port = s.media.first().map(|m| m.port).unwrap_or(0);
    Ok(SocketAddr::new(ip, port))
}

/// Share of `samples`' energy at `hz` (Goertzel over the whole buffer).
fn tone_share(samples: &[i16], hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / 8000.0;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2, mut energy) = (0.0f64, 0.0f64, 0.0f64);
    for &x in samples {
        let x = f64::from(x);
        energy += x * x;
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    if energy == 0.0 || samples.is_empty() {
        return 0.0;
    }
    2.0 * (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (energy * samples.len() as f64)
}

/// The operator's configuration of the demo's chain, through the admin APIs: the provider
/// hosts a TG for acme (with a bearer token) and routes it to the SIP peer `core`; the customer
/// admits the SIP peer `pbx` and routes it to the provider's TG (upstream `media_mode`).
/// Returns the customer's SIP address (where the PBX sends its INVITEs); `say` gets one line
/// per step.
pub(crate) async fn configure(
    provider: &Gateway,
    customer: &Gateway,
    pbx: SocketAddr,
    core: SocketAddr,
    media_mode: &str,
    say: impl Fn(&str),
) -> anyhow::Result<SocketAddr> {
    say("\nconfiguring through the admin APIs:");
    let peer = |name: &str, addr: SocketAddr| {
        json!({
            "name": name, "transport": "udp", "addresses": [addr.to_string()],
            "allow_list": ["127.0.0.1/32"], "registration": "none", "dtmf": "rfc4733",
            "codecs": ["PCMU", "PCMA"], "srtp": "off",
        })
    };

    let tg = provider
        .create(
            "/api/v1/hosted-tgs",
            json!({"tenant": "acme", "name": "acme-main", "vouched_numbers": ["+1408555*"],
                   "destination_pattern": "+*", "advertisement": {}, "customer_tgs": []}),
        )
        .await?;
    let tg_id = field(&tg, "id").as_str().unwrap_or_default().to_owned();
    say(&format!("  provider: hosted TG {tg_id} for customer acme"));
    let (status, cred) = provider
        .api(
            "POST",
            &format!("/api/v1/hosted-tgs/{tg_id}/credentials"),
            Some(&json!({"name": "acme-gw", "kind": "token"})),
        )
        .await?;
    if status != 201 {
        bail!("issuing the customer token: {status} {cred}");
    }
    let secret = field(&cred, "secret")
        .as_str()
        .unwrap_or_default()
        .to_owned();
    say("  provider: bearer token issued to acme (shown once, stored hashed)");
    let core_peer = provider
        .create("/api/v1/sip-peers", peer("core", core))
        .await?;
    provider
        .create(
            "/api/v1/routes",
            json!({"name": "acme to core", "priority": 10,
                   "source": {"kind": "hosted_tg", "id": tg_id},
                   "destination_pattern": "+1408*",
                   "targets": [{"endpoint": {"kind": "sip_peer", "id": field(&core_peer, "id")}, "priority": 0, "weight": 1}]}),
        )
        .await?;
    say(&format!(
        "  provider: SIP peer core at {}, route +1408* -> core",
        core
    ));
    let pbx_peer = customer
        .create("/api/v1/sip-peers", peer("pbx", pbx))
        .await?;
    let upstream = customer
        .create(
            "/api/v1/upstreams",
            json!({"name": "provider", "root_url": provider.started.ript_root,
                   "trunk_group": tg_id, "auth": {"kind": "token", "token": secret},
                   "trust_anchors_pem": provider.started.cert_pem, "media_mode": media_mode}),
        )
        .await?;
    customer
        .create(
            "/api/v1/routes",
            json!({"name": "pbx to provider", "priority": 10,
                   "source": {"kind": "sip_peer", "id": field(&pbx_peer, "id")},
                   "destination_pattern": "+1*",
                   "targets": [{"endpoint": {"kind": "upstream", "id": field(&upstream, "id")}, "priority": 0, "weight": 1}]}),
        )
        .await?;
    say(&format!(
        "  customer: SIP peer pbx at {}, upstream {}, route +1* -> provider",
        pbx, provider.started.ript_root
    ));
    provider.wait_routes(1).await?;
    customer.wait_routes(1).await?;
    let customer_sip = customer
        .started
        .sip_udp
        .ok_or_else(|| anyhow!("the customer gateway has no UDP SIP listener"))?;
    Ok(customer_sip)
}

async fn run_demo() -> anyhow::Result<bool> {
    run::QUIET.store(true, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ript-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = demo_in(&dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn demo_in(dir: &std::path::Path) -> anyhow::Result<bool> {
    println!(
        "ript-gateway demo: PBX phone -> customer gateway -> RIPT (HTTP/3) -> provider gateway -> core phone"
    );
    let provider = start_gateway("provider", dir).await?;
    let customer = start_gateway("customer", dir).await?;
    let pbx = Phone::new("pbx").await?;
    let mut core = Phone::new("core").await?;
    let customer_sip = configure(&provider, &customer, pbx.sip, core.sip, "datagrams", |l| {
        println!("{l}")
    })
    .await?;

    println!("\nthe call ({CALLER} -> {CALLED}):");
    let pbx_heard = Arc::new(Mutex::new(Heard::default()));
    let core_heard = Arc::new(Mutex::new(Heard::default()));
    let pbx_rx = tokio::spawn(listen(pbx.rtp.clone(), pbx_heard.clone()));
    let core_rx = tokio::spawn(listen(core.rtp.clone(), core_heard.clone()));
    let offer = sdp::offer(&pbx.local()).ok_or_else(|| anyhow!("no offer"))?;
    pbx.step("SIP  -> INVITE (PCMU, telephone-event)");
    let mut out = pbx
        .ua
        .call(sip_ua::CallOptions {
            uri: format!("sip:{CALLED}@{customer_sip}"),
            from: format!("<sip:{CALLER}@{}>", pbx.sip),
            to: format!("<sip:{CALLED}@{customer_sip}>"),
            target: Target::new(Transport::Udp, customer_sip),
            offer: Some(offer.to_text().into_bytes()),
            credentials: None,
            headers: vec![],
        })
        .await?;

    // The core phone answers whatever arrives, after ringing briefly.
    let incoming = tokio::time::timeout(Duration::from_secs(10), core.ua.next_event())
        .await
        .context("the core phone got no call")?;
    let Some(sip_ua::UaEvent::Call(inc)) = incoming else {
        bail!("the core phone got no call");
    };
    core.step("SIP  <- INVITE");
    let mut inbound = inc.call;
    let body = inc.request.body().to_vec();
    let (answer, _) = sdp::answer(&Sdp::parse(&body)?, &core.local())?;
    inbound.provisional(180, None).await?;
    core.step("SIP  -> 180 Ringing");
    tokio::time::sleep(Duration::from_millis(300)).await;
    inbound.accept(Some(answer.to_text().into_bytes())).await?;
    core.step("SIP  -> 200 OK (PCMU)");
    let to_gateway_from_core = media_addr(&body)?;
    let to_gateway_from_pbx = loop {
        match tokio::time::timeout(Duration::from_secs(10), out.next_event()).await {
            Ok(Some(SessionEvent::Progress { status })) => pbx.step(&format!("SIP  <- {status}")),
            Ok(Some(SessionEvent::RemoteAnswer { body })) => {
                pbx.step("SIP  <- 200 OK");
                break media_addr(&body)?;
            }
            Ok(Some(SessionEvent::Terminated { status, .. })) => {
                bail!("the call failed: {status:?}")
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => bail!("the call was not answered"),
        }
    };
    // Drain the core's offer event (already answered above).
    while let Ok(Some(ev)) =
        tokio::time::timeout(Duration::from_millis(200), inbound.next_event()).await
    {
        if let SessionEvent::RemoteOffer {
            kind: OfferKind::Invite,
            ..
        } = ev
        {
            continue;
        }
    }

    println!("\nmedia: 2 s of tone each way, then the PBX presses {DIGITS}");
    let a = tokio::spawn(talk(
        pbx.rtp.clone(),
        to_gateway_from_pbx,
        PBX_HZ,
        2,
        DIGITS,
    ));
    let b = tokio::spawn(talk(core.rtp.clone(), to_gateway_from_core, CORE_HZ, 2, ""));
    let _ = a.await;
    let _ = b.await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    pbx.step("SIP  -> BYE");
    out.bye().await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(ev) = inbound.next_event().await {
            if let SessionEvent::Terminated { .. } = ev {
                core.step("SIP  <- BYE");
                break;
            }
        }
    })
    .await;
    pbx_rx.abort();
    core_rx.abort();

    let core_h = core_heard.lock().await;
    let pbx_h = pbx_heard.lock().await;
    let core_share = tone_share(&core_h.samples, PBX_HZ);
    let pbx_share = tone_share(&pbx_h.samples, CORE_HZ);
    println!("\ndetected:");
    println!(
        "  core phone: {} RTP packets, {:.0} % of its audio at 1 kHz (the PBX's tone), digits {:?}",
        core_h.packets,
        core_share * 100.0,
        core_h.digits
    );
    println!(
        "  pbx phone:  {} RTP packets, {:.0} % of its audio at 440 Hz (the core's tone)",
        pbx_h.packets,
        pbx_share * 100.0
    );

    // CDRs are written as the calls end (the provider's after its BYE is answered).
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!("\nCDRs:");
    for gw in [&customer, &provider] {
        let mut cdr = Value::Null;
        for _ in 0..50 {
            let (_, v) = gw.api("GET", "/api/v1/cdrs", None).await?;
            if let Some(c) = field(&v, "items").as_array().and_then(|a| a.first()) {
                cdr = c.clone();
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let m = field(&cdr, "media");
        println!(
            "  {:>8}: SIP {} RIPT codec {} | RTP in {} out {} | RIPT chunks in {} out {} | lost {}",
            gw.label,
            field(&cdr, "sip_status"),
            field(&cdr, "ript_codec"),
            field(m, "rtp_packets_in"),
            field(m, "rtp_packets_out"),
            field(m, "ript_chunks_in"),
            field(m, "ript_chunks_out"),
            field(m, "packets_lost")
        );
    }
    let ok = core_share > 0.8 && pbx_share > 0.8 && core_h.digits == DIGITS;
    drop((core_h, pbx_h));
    customer.stop().await;
    provider.stop().await;
    if ok {
        println!("\nok: tones heard both ways and digits {DIGITS} detected");
    } else {
        println!("\nFAILED: see the figures above");
    }
    Ok(ok)
}
