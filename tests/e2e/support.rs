//! Launchers and clients the end-to-end tests share: gateway processes with their admin API,
//! baresip, SIPp, tone files and a tone detector.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ript-gateway");

/// A unique scratch directory under the system temp dir.
pub fn scratch(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("ript-e2e-{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A port free for UDP and TCP (and its successor for TCP: baresip's TLS listener).
pub fn free_port() -> u16 {
    loop {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = u.local_addr().unwrap().port();
        if p < u16::MAX - 4
            && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
        {
            return p;
        }
    }
}

/// An even port whose next three are free for UDP too: SIPp binds audio RTP/RTCP and video
/// RTP/RTCP from its `-mp` (`free_port` checked only two, and a parallel test's socket took
/// the video port: errno 98). Taken below the kernel's ephemeral range (32768-60999), so no
/// socket the kernel numbers for another test can take it between this check and SIPp's
/// bind. nextest runs each test in its own process, hence the pid in the start; a test runs
/// two SIPps at once, hence the counter.
pub fn free_media_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 12000;
    const SLOTS: u32 = 2000; // 12000-19999, four ports each
    let start = std::process::id().wrapping_mul(7) + NEXT.fetch_add(1, Ordering::Relaxed);
    (0..SLOTS)
        .filter_map(|i| u16::try_from(FIRST + ((start + i) % SLOTS) * 4).ok())
        .find(|&p| (p..p + 4).all(|q| std::net::UdpSocket::bind(("127.0.0.1", q)).is_ok()))
        .expect("no free media ports in 12000-19999")
}

/// One `ript-gateway run` process on ephemeral loopback ports, its SQLite under its own dir.
#[derive(Debug)]
pub struct Gateway {
    child: Child,
    pub name: &'static str,
    pub dir: PathBuf,
    pub admin: SocketAddr,
    pub token: String,
    pub sip_udp: SocketAddr,
    pub ript_url: String,
    /// The RTP port range, for a restart.
    rtp_ports: String,
    extra_env: Vec<(String, String)>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} gateway log ---\n{}", self.name, self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A gateway process just started: what its stdout said.
struct Launched {
    child: Child,
    admin: SocketAddr,
    sip_udp: SocketAddr,
    ript_url: String,
}

/// Starts `ript-gateway run` on `dir` (its data and SQLite), appending to its log there.
fn launch(name: &str, dir: &Path, rtp_ports: &str, extra_env: &[(String, String)]) -> Launched {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("gateway.log"))
        .unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env_remove("DATABASE_URL")
        .env("RIPT_TOKEN", "e2e-static-token-not-for-customers")
        .env(
            "RIPT_LOG",
            "info,ript_gateway=debug,quinn=warn,h3=warn,sqlx=warn",
        )
        .env("RIPT_INSTANCE_ID", name)
        .env("RIPT_SIP_LISTEN", "udp:127.0.0.1:0,tcp:127.0.0.1:0")
        .env("RIPT_ADMIN_LISTEN", "127.0.0.1:0")
        .env("RIPT_RTP_PORTS", rtp_ports)
        .env("RIPT_MEDIA_ADDRESS", "127.0.0.1")
        .env("RIPT_CONFIG", "")
        .env("RIPT_SIP_ALLOW", "")
        .env("RIPT_SIP_USERS", "")
        .env("RIPT_SIP_REGISTER", "")
        // SIPp answers only the first challenge and only MD5.
        .env("RIPT_SIP_DIGEST_ALGORITHMS", "MD5")
        .envs(extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let (mut sip_udp, mut admin) = (None, None);
    let ript_url = loop {
        let Some(Ok(line)) = lines.next() else {
            let log = std::fs::read_to_string(dir.join("gateway.log")).unwrap_or_default();
            panic!("{name} gateway exited before listening:\n{log}");
        };
        if let Some(a) = line.strip_prefix("sip listening on udp:") {
            sip_udp = a.parse().ok();
        }
        if let Some(a) = line.strip_prefix("admin api listening on http://") {
            admin = a.parse().ok();
        }
        if let Some(rest) = line.strip_prefix("ript listening on ") {
            break rest.trim_end_matches(ript_proto::ROOT_PATH).to_owned();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    Launched {
        child,
        admin: admin.expect("admin line"),
        sip_udp: sip_udp.expect("sip udp line"),
        ript_url,
    }
}

impl Gateway {
    pub fn start(name: &'static str, rtp_ports: &str) -> Gateway {
        Gateway::start_with(name, rtp_ports, Vec::new())
    }

    /// [`Gateway::start`] with more environment (settings) for this gateway.
    pub fn start_with(
        name: &'static str,
        rtp_ports: &str,
        extra_env: Vec<(String, String)>,
    ) -> Gateway {
        let dir = scratch(name);
        let l = launch(name, &dir, rtp_ports, &extra_env);
        let token = std::fs::read_to_string(dir.join("admin-token"))
            .unwrap()
            .trim()
            .to_owned();
        Gateway {
            child: l.child,
            name,
            dir,
            admin: l.admin,
            token,
            sip_udp: l.sip_udp,
            ript_url: l.ript_url,
            rtp_ports: rtp_ports.to_owned(),
            extra_env,
        }
    }

    /// Stops the process and starts it again on the same data directory (database, keys,
    /// certificate); its listeners get new ports.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let l = launch(self.name, &self.dir, &self.rtp_ports, &self.extra_env);
        self.child = l.child;
        self.admin = l.admin;
        self.sip_udp = l.sip_udp;
        self.ript_url = l.ript_url;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("gateway.log")).unwrap_or_default()
    }

    /// The RIPT server's dev certificate (clients pin it).
    pub fn cert_pem(&self) -> String {
        std::fs::read_to_string(self.dir.join("ript-cert.pem")).unwrap()
    }

    /// One admin API request: the status and the JSON body (Null when empty).
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut s = TcpStream::connect(self.admin).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let body = body.map(Value::to_string).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
             Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            self.admin,
            self.token,
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {out}"));
        let text = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        // Chunked bodies: the JSON starts at the first brace.
        let json = text
            .find(['{', '['])
            .and_then(|i| {
                let end = text.rfind(['}', ']'])?;
                serde_json::from_str(text.get(i..=end)?).ok()
            })
            .unwrap_or(Value::Null);
        (status, json)
    }

    /// Creates a resource; its id.
    pub fn create(&self, path: &str, body: Value) -> String {
        let (status, v) = self.api("POST", path, Some(&body));
        assert_eq!(status, 201, "{} POST {path}: {v}", self.name);
        v["id"].as_str().unwrap().to_owned()
    }

    /// The value of one metrics series, if present.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let mut s = TcpStream::connect(self.admin).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let req = format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
             Authorization: Bearer {}\r\nContent-Length: 0\r\n\r\n",
            self.admin, self.token
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    /// Waits until the routing snapshot holds `routes` routes (the configuration written
    /// through the API is in use).
    pub fn wait_routes(&self, routes: usize) {
        let series = r#"gateway_config_objects{kind="routes"}"#;
        let loaded = within(Duration::from_secs(10), || {
            self.metric(series) == Some(routes as f64)
        });
        assert!(
            loaded,
            "{}: routes never loaded:\n{}",
            self.name,
            self.log()
        );
    }

    /// The CDRs, newest first, once there are at least `n`.
    pub fn cdrs(&self, n: usize) -> Vec<Value> {
        let mut last = Value::Null;
        let ok = within(Duration::from_secs(15), || {
            let (status, v) = self.api("GET", "/api/v1/cdrs", None);
            assert_eq!(status, 200, "{v}");
            let enough = v["items"].as_array().is_some_and(|a| a.len() >= n);
            last = v;
            enough
        });
        if !ok {
            panic!("{}: fewer than {n} CDRs: {last}\n{}", self.name, self.log());
        }
        last["items"].as_array().unwrap().clone()
    }
}

impl Gateway {
    /// The first CDR (newest first) that `pred` accepts, once there is one.
    pub fn cdr_where(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let found = within(Duration::from_secs(15), || {
            let (status, v) = self.api("GET", "/api/v1/cdrs", None);
            assert_eq!(status, 200, "{v}");
            let hit = v["items"]
                .as_array()
                .and_then(|a| a.iter().find(|c| pred(c)).cloned());
            last = v;
            if let Some(h) = hit {
                last = h;
                return true;
            }
            false
        });
        assert!(
            found,
            "{}: no CDR {what}: {last}\n{}",
            self.name,
            self.log()
        );
        last
    }
}

/// Polls `f` until it holds or `limit` passes (for state in another process, which offers
/// nothing to await).
pub fn within(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The two gateways and what the provider issued to the customer.
#[derive(Debug)]
pub struct Pair {
    pub customer: Gateway,
    pub provider: Gateway,
    pub hosted_tg: String,
    pub upstream: String,
    pub pbx_peer: String,
    pub core_peer: String,
}

/// What differs between the tests' SIP peers.
#[derive(Debug)]
pub struct Peers {
    /// The PBX's SIP address (the customer gateway admits it by IP).
    pub pbx: SocketAddr,
    /// The SIP core's address (the provider gateway sends to it).
    pub core: SocketAddr,
    pub media_mode: &'static str,
    /// Extra fields of the PBX peer at the customer gateway (caps, digest).
    pub pbx_extra: Value,
    /// Extra or replaced fields of the provider's hosted TG (`require_passport`, ...).
    pub hosted_extra: Value,
    /// `dtmf` of the SIP core peer at the provider.
    pub core_dtmf: &'static str,
    pub pbx_dtmf: &'static str,
    /// The customer gateway's RIPT server offers HTTP/3 datagrams (off: the provider's calls
    /// toward it carry media on byways).
    pub customer_datagrams: bool,
}

impl Default for Peers {
    fn default() -> Self {
        Peers {
            pbx: "127.0.0.1:5060".parse().unwrap(),
            core: "127.0.0.1:5060".parse().unwrap(),
            media_mode: "datagrams",
            pbx_extra: json!({}),
            hosted_extra: json!({}),
            core_dtmf: "rfc4733",
            pbx_dtmf: "rfc4733",
            customer_datagrams: true,
        }
    }
}

fn peer(name: &str, addr: SocketAddr, dtmf: &str) -> Value {
    json!({
        "name": name,
        "transport": "udp",
        "addresses": [addr.to_string()],
        "allow_list": ["127.0.0.1/32"],
        "registration": "none",
        "dtmf": dtmf,
        "codecs": ["PCMU", "PCMA"],
        "srtp": "off",
    })
}

/// Ports of each gateway's RTP toward SIP peers (24 pairs each): distinct per process and
/// test, so parallel tests rarely meet on a port (the allocator skips ports another process
/// holds anyway).
pub fn port_ranges() -> [String; 2] {
    static N: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 4;
    let block = 20000 + (std::process::id() % 40) as u16 * 400 + n * 100;
    std::array::from_fn(|i| {
        let s = block + 48 * i as u16;
        format!("{s}-{}", s + 47)
    })
}

impl Pair {
    /// Starts both gateways and configures them through their admin APIs: the provider hosts
    /// a TG for customer "acme" and routes its calls to the SIP core; the customer's PBX
    /// peer routes everything to the provider's TG as an upstream.
    pub fn start(p: Peers) -> Pair {
        let [c_rtp, p_rtp] = port_ranges();
        let provider = Gateway::start("provider", &p_rtp);
        let customer = Gateway::start_with(
            "customer",
            &c_rtp,
            vec![(
                "RIPT_HTTP3_DATAGRAMS".to_owned(),
                p.customer_datagrams.to_string(),
            )],
        );
        let mut hosted = json!({
            "tenant": "acme",
            "name": "acme-main",
            "vouched_numbers": ["+1408555*"],
            "destination_pattern": "+*",
            "advertisement": {},
            "customer_tgs": [],
        });
        if let (Some(o), Some(extra)) = (hosted.as_object_mut(), p.hosted_extra.as_object()) {
            for (k, v) in extra {
                o.insert(k.clone(), v.clone());
            }
        }
        let hosted_tg = provider.create("/api/v1/hosted-tgs", hosted);
        let (status, cred) = provider.api(
            "POST",
            &format!("/api/v1/hosted-tgs/{hosted_tg}/credentials"),
            Some(&json!({"name": "acme-gw", "kind": "token"})),
        );
        assert_eq!(status, 201, "{cred}");
        let secret = cred["secret"].as_str().unwrap().to_owned();
        let core_peer = provider.create("/api/v1/sip-peers", peer("core", p.core, p.core_dtmf));
        provider.create(
            "/api/v1/routes",
            json!({
                "name": "acme to core",
                "priority": 10,
                "source": {"kind": "hosted_tg", "id": hosted_tg},
                "destination_pattern": "+1408*",
                "targets": [{"endpoint": {"kind": "sip_peer", "id": core_peer}, "priority": 0, "weight": 1}],
            }),
        );
        let mut pbx = peer("pbx", p.pbx, p.pbx_dtmf);
        if let (Some(o), Some(extra)) = (pbx.as_object_mut(), p.pbx_extra.as_object()) {
            for (k, v) in extra {
                o.insert(k.clone(), v.clone());
            }
        }
        let pbx_peer = customer.create("/api/v1/sip-peers", pbx);
        let upstream = customer.create(
            "/api/v1/upstreams",
            json!({
                "name": "provider",
                "root_url": provider.ript_url,
                "trunk_group": hosted_tg,
                "auth": {"kind": "token", "token": secret},
                "trust_anchors_pem": provider.cert_pem(),
                "media_mode": p.media_mode,
            }),
        );
        customer.create(
            "/api/v1/routes",
            json!({
                "name": "pbx to provider",
                "priority": 10,
                "source": {"kind": "sip_peer", "id": pbx_peer},
                "destination_pattern": "+1*",
                "targets": [{"endpoint": {"kind": "upstream", "id": upstream}, "priority": 0, "weight": 1}],
            }),
        );
        provider.wait_routes(1);
        customer.wait_routes(1);
        Pair {
            customer,
            provider,
            hosted_tg,
            upstream,
            pbx_peer,
            core_peer,
        }
    }
}

impl Pair {
    /// Adds the reverse direction — SIP core → provider → RIPT → customer → PBX — to a started
    /// pair, configured through the admin APIs only: the customer hosts a TG for tenant
    /// "provider" (vouching for +1408 callers), issues a token for it and routes its calls to
    /// the PBX; the provider pins
    /// the customer's certificate for its customer TGs; the customer names that TG and token
    /// in its upstream, so it registers them with the provider (`POST /customertgs`); once
    /// the provider holds the registration, it routes the core's calls to the hosted TG.
    /// Returns the customer's hosted TG.
    pub fn reverse(&self) -> String {
        let (customer, provider) = (&self.customer, &self.provider);
        let inbound = customer.create(
            "/api/v1/hosted-tgs",
            json!({
                "tenant": "provider",
                "name": "from-provider",
                // Caller numbers the provider may present (certificates for its passports).
                "vouched_numbers": ["+1408*"],
                "destination_pattern": "+*",
                "advertisement": {},
                "customer_tgs": [],
            }),
        );
        let (status, cred) = customer.api(
            "POST",
            &format!("/api/v1/hosted-tgs/{inbound}/credentials"),
            Some(&json!({"name": "provider-gw", "kind": "token"})),
        );
        assert_eq!(status, 201, "{cred}");
        let token = cred["secret"].as_str().unwrap().to_owned();
        customer.create(
            "/api/v1/routes",
            json!({
                "name": "provider to pbx",
                "priority": 10,
                "source": {"kind": "hosted_tg", "id": inbound},
                "destination_pattern": "+1408*",
                "targets": [{"endpoint": {"kind": "sip_peer", "id": self.pbx_peer}, "priority": 0, "weight": 1}],
            }),
        );
        // Before the customer registers: this PUT replaces the (still empty) customer TGs.
        let path = format!("/api/v1/hosted-tgs/{}", self.hosted_tg);
        let (status, mut tg) = provider.api("GET", &path, None);
        assert_eq!(status, 200, "{tg}");
        tg["customer_tg_trust_anchors_pem"] = json!(customer.cert_pem());
        let (status, v) = provider.api("PUT", &path, Some(&tg));
        assert_eq!(status, 200, "{v}");
        // The upstream as read back, its secrets masked ("***" keeps them), plus our TG.
        let path = format!("/api/v1/upstreams/{}", self.upstream);
        let (status, mut up) = customer.api("GET", &path, None);
        assert_eq!(status, 200, "{up}");
        up["customer_tg"] = json!({
            "hosted_tg_id": inbound,
            "token": token,
            "destinations": "+1408*",
        });
        let (status, v) = customer.api("PUT", &path, Some(&up));
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["customer_tg"]["token"], "***", "{v}");
        let path = format!("/api/v1/hosted-tgs/{}", self.hosted_tg);
        let registered = within(Duration::from_secs(15), || {
            let (_, tg) = provider.api("GET", &path, None);
            tg["customer_tgs"].as_array().is_some_and(|a| {
                a.iter().any(|c| {
                    c["url"]
                        .as_str()
                        .is_some_and(|u| u.ends_with(&format!("/providertgs/{inbound}")))
                })
            })
        });
        if !registered {
            panic!(
                "the provider never got the customer tg:\n--- customer ---\n{}\n--- provider ---\n{}",
                customer.log(),
                provider.log()
            );
        }
        // Created after the registration was stored: the snapshot with this route has it.
        provider.create(
            "/api/v1/routes",
            json!({
                "name": "core to acme",
                "priority": 10,
                "source": {"kind": "sip_peer", "id": self.core_peer},
                "destination_pattern": "+1408*",
                "targets": [{"endpoint": {"kind": "hosted_tg", "id": self.hosted_tg}, "priority": 0, "weight": 1}],
            }),
        );
        provider.wait_routes(2);
        customer.wait_routes(2);
        inbound
    }
}

/// A headless baresip with its own config directory, killed on drop.
#[derive(Debug)]
pub struct Baresip {
    child: Child,
    pub dir: PathBuf,
    pub sip: SocketAddr,
    ctrl: SocketAddr,
    log: mpsc::Receiver<String>,
    seen: Vec<String>,
    /// ctrl_tcp events (JSON), from a connection kept open from the start.
    events: mpsc::Receiver<Value>,
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let (sip, log) = (self.sip, self.log_so_far());
            eprintln!("--- baresip {sip} ---\n{log}");
        }
        if std::env::var_os("E2E_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Baresip {
    /// baresip as `user` on loopback `port`, playing `tone_hz` (an 8 kHz WAV through aufile)
    /// and dumping what it decodes (sndfile); auto-answers; commands through ctrl_tcp.
    pub fn start(name: &str, user: &str, tone_hz: f64, port: u16) -> Baresip {
        let dir = scratch(name);
        let ctrl = free_port();
        let wav = dir.join("tone.wav");
        std::fs::write(&wav, wav_tone(tone_hz, 8000, 30)).unwrap();
        std::fs::write(
            dir.join("accounts"),
            format!("<sip:{user}@127.0.0.1>;regint=0;answermode=auto;audio_codecs=PCMU,PCMA\n"),
        )
        .unwrap();
        std::fs::write(
            dir.join("config"),
            format!(
                "sip_listen 127.0.0.1:{port}\nnet_interface 127.0.0.1\n\
                 module_path /usr/lib/baresip/modules\n\
                 module g711.so\nmodule aufile.so\nmodule aubridge.so\n\
                 module_app account.so\nmodule_app menu.so\n\
                 module_app ctrl_tcp.so\nctrl_tcp_listen 127.0.0.1:{ctrl}\n\
                 audio_player aubridge,nil\naudio_source aufile,{}\n\
                 rtcp_mux no\nmodule sndfile.so\nsnd_path {}\n",
                wav.display(),
                dir.display()
            ),
        )
        .unwrap();
        let mut child = Command::new("baresip")
            .arg("-f")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("baresip not runnable ({e}): run scripts/test"));
        let stdout = child.stdout.take().unwrap();
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let (etx, events) = mpsc::channel();
        let mut b = Baresip {
            child,
            dir,
            sip: SocketAddr::from(([127, 0, 0, 1], port)),
            ctrl: SocketAddr::from(([127, 0, 0, 1], ctrl)),
            log,
            seen: Vec::new(),
            events,
        };
        b.wait_for("baresip is ready", Duration::from_secs(10));
        let conn = TcpStream::connect(b.ctrl).unwrap();
        std::thread::spawn(move || read_netstrings(conn, &etx));
        b
    }

    /// Blocks until baresip logs a line containing `what`.
    pub fn wait_for(&mut self, what: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        if let Some(l) = self.seen.iter().find(|l| l.contains(what)) {
            return l.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(what) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "baresip {} never logged {what:?}:\n{}",
                    self.sip,
                    self.seen.join("\n")
                ),
            }
        }
    }

    pub fn log_so_far(&mut self) -> String {
        self.seen.extend(self.log.try_iter());
        self.seen.join("\n")
    }

    /// Waits for a ctrl_tcp event of `kind` (`CALL_DTMF_START`, …); its JSON.
    pub fn wait_event(&mut self, kind: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) if v["type"] == kind => return v,
                Ok(_) => {}
                Err(_) => {
                    let (sip, log) = (self.sip, self.log_so_far());
                    panic!("baresip {sip} sent no {kind} event:\n{log}")
                }
            }
        }
    }

    /// One ctrl_tcp command (a JSON netstring), e.g. `dial` with a URI or `hangup`.
    pub fn command(&self, command: &str, params: &str) {
        let msg = json!({"command": command, "params": params, "token": "e2e"}).to_string();
        let mut s = TcpStream::connect(self.ctrl).unwrap();
        s.write_all(format!("{}:{msg},", msg.len()).as_bytes())
            .unwrap();
        // The response is not needed: baresip's log says what happened.
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf);
    }

    /// The samples baresip decoded (its sndfile `-dec.wav` dump), once the call is closed.
    pub fn decoded(&mut self) -> (u32, Vec<i16>) {
        self.wait_for("terminated", Duration::from_secs(10));
        let dump = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
            .unwrap_or_else(|| panic!("no sndfile dump:\n{}", self.log_so_far()));
        wav_first_channel(&std::fs::read(dump).unwrap())
    }
}

/// Reads `len:json,` netstrings from baresip's ctrl_tcp until it closes, sending each event.
fn read_netstrings(mut conn: TcpStream, tx: &mpsc::Sender<Value>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(colon) = buf.iter().position(|b| *b == b':') {
            let Some(len) = std::str::from_utf8(&buf[..colon])
                .ok()
                .and_then(|l| l.parse::<usize>().ok())
            else {
                return;
            };
            if buf.len() < colon + 1 + len + 1 {
                break;
            }
            if let Ok(v) = serde_json::from_slice::<Value>(&buf[colon + 1..colon + 1 + len])
                && v["event"] == true
                && tx.send(v).is_err()
            {
                return;
            }
            buf.drain(..colon + 1 + len + 1);
        }
    }
}

/// A 16-bit mono PCM WAV of `seconds` of a `hz` tone at `rate`.
pub fn wav_tone(hz: f64, rate: u32, seconds: u32) -> Vec<u8> {
    let n = rate * seconds;
    let mut data = Vec::with_capacity(n as usize * 2);
    for k in 0..n {
        let x = 8000.0 * (2.0 * std::f64::consts::PI * hz * f64::from(k) / f64::from(rate)).sin();
        data.extend_from_slice(&(x as i16).to_le_bytes());
    }
    let mut w = Vec::with_capacity(44 + data.len());
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&rate.to_le_bytes());
    w.extend_from_slice(&(rate * 2).to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(data.len() as u32).to_le_bytes());
    w.extend_from_slice(&data);
    w
}

/// The sample rate and first channel of a 16-bit PCM WAV; the data chunk runs to the end of
/// the file (libsndfile writes the sizes only when it closes it).
pub fn wav_first_channel(w: &[u8]) -> (u32, Vec<i16>) {
    assert_eq!(&w[..4], b"RIFF");
    let mut at = 12;
    let mut format = None;
    loop {
        let id = &w[at..at + 4];
        let len = u32::from_le_bytes(w[at + 4..at + 8].try_into().unwrap()) as usize;
        if id == b"fmt " {
            let f = &w[at + 8..];
            let channels = usize::from(u16::from_le_bytes([f[2], f[3]]));
            let rate = u32::from_le_bytes(f[4..8].try_into().unwrap());
            format = Some((channels, rate));
        }
        if id == b"data" {
            let (channels, rate) = format.expect("fmt before data");
            let samples = w[at + 8..]
                .chunks_exact(2 * channels)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect();
            return (rate, samples);
        }
        at += 8 + len + (len & 1);
    }
}

/// Share of the signal's energy at `hz` (Goertzel over the buffer).
pub fn tone_share(samples: &[i16], hz: f64, rate: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * hz / rate;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut energy = 0.0;
    for &x in samples {
        let x = f64::from(x);
        energy += x * x;
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    if energy == 0.0 {
        0.0
    } else {
        2.0 * power / (energy * samples.len() as f64)
    }
}

/// The audible part of a decoded dump: from the first to the last loud sample (the call's
/// audio without the silence around it; contiguous, so a tone stays a tone).
pub fn voiced(samples: &[i16]) -> Vec<i16> {
    let loud = |s: &i16| s.unsigned_abs() > 500;
    match (
        samples.iter().position(loud),
        samples.iter().rposition(loud),
    ) {
        (Some(a), Some(b)) => samples.get(a..=b).unwrap_or_default().to_vec(),
        _ => Vec::new(),
    }
}

/// Runs one SIPp scenario from `tests/sipp/` to its end, `@NAME@` placeholders replaced
/// by `subst`; its exit status and error log. `args` name the target and `-s` the number.
pub fn sipp(scenario: &str, subst: &[(&str, &str)], args: &[String]) -> (bool, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/sipp");
    let mut xml = std::fs::read_to_string(root.join(format!("{scenario}.xml"))).unwrap();
    for (k, v) in subst {
        xml = xml.replace(&format!("@{k}@"), v);
    }
    let dir = scratch(&format!("sipp-{scenario}"));
    let file = dir.join(format!("{scenario}.xml"));
    std::fs::write(&file, xml).unwrap();
    let err = dir.join("errors.log");
    let mp = free_media_port();
    let out = Command::new("sipp")
        .arg("-sf")
        .arg(&file)
        .args([
            "-m",
            "1",
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-timeout",
            "40s",
        ])
        .args(["-nostdin", "-trace_err", "-error_file"])
        .arg(&err)
        .arg("-mp")
        .arg(mp.to_string())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("sipp not runnable ({e}): run scripts/test"));
    let log = std::fs::read_to_string(&err).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.success(),
        format!("{log}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

/// SIPp as the PBX: calls `number` through the customer gateway.
pub fn pbx(
    scenario: &str,
    subst: &[(&str, &str)],
    gw: &Gateway,
    port: u16,
    number: &str,
) -> (bool, String) {
    sipp(
        scenario,
        subst,
        &[
            gw.sip_udp.to_string(),
            "-p".into(),
            port.to_string(),
            "-s".into(),
            number.into(),
        ],
    )
}

/// SIPp as the SIP core on `port`, in a thread (it waits for the call).
pub fn core(
    scenario: &'static str,
    subst: Vec<(&'static str, String)>,
    port: u16,
) -> std::thread::JoinHandle<(bool, String)> {
    std::thread::spawn(move || {
        let subst: Vec<(&str, &str)> = subst.iter().map(|(k, v)| (*k, v.as_str())).collect();
        sipp(scenario, &subst, &["-p".into(), port.to_string()])
    })
}
