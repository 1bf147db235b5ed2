//! `ript-gateway bench chain`: calls through the whole chain, loaded by built-in SIP phones.
//!
//! PBX phones (one `sip_ua::UserAgent` placing every call) → customer gateway → RIPT (one
//! HTTP/3 connection, upstream media mode datagrams or byways) → provider gateway → core
//! phones (one `UserAgent` answering every call with 200 at once). Both gateways run in this
//! process, configured through their admin APIs exactly as `ript-gateway demo` does, on their
//! own multi-thread tokio runtime each (threads `gw-customer`, `gw-provider`) so their CPU
//! time can be told apart from each other's and from the load generator's.
//!
//! Phases:
//! 1. baseline: the same RTP load, UA socket → UA socket directly, without gateways (what
//!    the load generator alone costs);
//! 2. setup: `--calls` INVITEs at `--cps`, INVITE → 200 timed at the UAC;
//! 3. media: every established call carries G.711 PCMU in 20 ms packets both ways for
//!    `--seconds` (one sender thread, the flows' phases spread over the 20 ms interval, each
//!    payload carrying its send time, flow and index; one sink thread counting loss and
//!    one-way latency per direction);
//! 4. teardown: BYE from the PBX side, then RSS once the calls are gone.
//!
//! With `--soak`, the calls churn instead for the given time and the bench reports RSS,
//! descriptors and tasks at intervals ([`soak`]).
//!
//! CPU: process time (CLOCK_PROCESS_CPUTIME_ID) and per-thread time (/proc/self/task/*/stat, clock ticks)
//! over the media phase; "gateways" are the threads of their runtimes plus any thread that is
//! neither the load generator's nor the main runtime's (SQLite workers…).

use super::{Hist, LO, join, put, raise_fd_limit, spawn};
use crate::demo::{self, Gateway, Phone};
use crate::run;
use anyhow::{Context, anyhow, bail};
use sip_proto::sdp::{self, Local, Sdp, SrtpMode};
use sip_proto::session::SessionEvent;
use sip_transport::{Target, Transport};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

mod soak;

const CALLER: &str = "+14085551000";
/// Called numbers are `+1408` and the call's index on 7 digits.
const CALLED_PREFIX: &str = "+1408";
const HEADER: usize = 12;
/// G.711 at 20 ms.
const PAYLOAD: usize = 160;
const PACKET: usize = HEADER + PAYLOAD;
const PPS: u64 = 50;
const TS_STEP: u32 = 160;
/// Payload: send time (ns since the bench's origin), flow, packet index.
const AT_TIME: usize = HEADER;
const AT_FLOW: usize = HEADER + 8;
const AT_INDEX: usize = HEADER + 12;
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);
const DRAIN_QUIET: Duration = Duration::from_millis(300);
/// Gateway runtime threads' name (their CPU time is told apart by it).
/// The gateways' runtime threads: "gw-customer" and "gw-provider".
const GW_THREAD: &str = "gw-";
/// Descriptors per call: 2 UA sockets + their clones for the sender + the gateways' RTP/RTCP
/// pairs (2 per gateway) and a margin for streams/sockets.
const FDS_PER_CALL: u64 = 16;

#[derive(Debug, clap::Args)]
pub(super) struct ChainArgs {
    /// Concurrent calls through the chain.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=5000))]
    calls: u32,
    /// Seconds of media once every call is set up.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    seconds: u64,
    /// Call setup rate while ramping up (INVITEs per second).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10000))]
    cps: u32,
    /// The customer's upstream in media mode byways (default: datagrams).
    #[arg(long)]
    byways: bool,
    /// Skip the baseline run (UA to UA without gateways).
    #[arg(long)]
    no_baseline: bool,
    /// Worker threads of each gateway's runtime.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    gw_threads: u32,
    /// The gateways' `media.coalesce_us`: their workers wait this long before sleeping on
    /// their sockets; 0: they wake for every packet.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=5000))]
    coalesce_us: u32,
    /// SIP messages per second accepted from one source address, at both gateways
    /// (`sip.rate_per_sec`) and at the phones. Every phone and gateway here is 127.0.0.1, so a
    /// gateway's default (200) would cap setup near 100 calls/s and let SIP retransmissions
    /// (T1 = 500 ms) decide the setup times: the default does not limit the bench.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
    sip_rate: u32,
    /// Soak for this many seconds: keep `--calls` calls up, each replaced by a new one when it
    /// ends after its hold time, and report RSS, descriptors and tasks every `--report-every`
    /// seconds (no baseline; `--seconds` does not apply).
    #[arg(long, conflicts_with = "seconds", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    soak: Option<u64>,
    /// Soak: mean seconds a call is held (each call's hold is 0.5-1.5 times this, spread by
    /// the call's number, so calls do not all end together).
    #[arg(long, default_value_t = 30, requires = "soak", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    hold: u64,
    /// Soak: seconds between reports.
    #[arg(long, default_value_t = 60, requires = "soak", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    report_every: u64,
}

pub(super) async fn chain(a: ChainArgs) -> anyhow::Result<()> {
    raise_fd_limit(u64::from(a.calls) * FDS_PER_CALL + 512)?;
    run::QUIET.store(true, Ordering::Relaxed);
    let mode = if a.byways { "byways" } else { "datagrams" };
    match a.soak {
        None => say!(
            "bench chain: {} calls at {} calls/s, {} s of PCMU 20 ms both ways, pbx UA -> customer -> RIPT ({mode}) -> provider -> core UA, SIP rate limit {} msg/s per source, gateways: {} workers each, wake-up coalescing {} us, 127.0.0.1",
            a.calls,
            a.cps,
            a.seconds,
            a.sip_rate,
            a.gw_threads,
            a.coalesce_us
        ),
        Some(soak) => say!(
            "bench chain --soak {soak}: {} calls kept up (first ones at {} calls/s), held {} s on average, PCMU 20 ms both ways, pbx UA -> customer -> RIPT ({mode}) -> provider -> core UA, SIP rate limit {} msg/s per source, gateways: {} workers each, wake-up coalescing {} us, SQLite in files, 127.0.0.1",
            a.calls,
            a.cps,
            a.hold,
            a.sip_rate,
            a.gw_threads,
            a.coalesce_us
        ),
    }
    say!(
        "cpus: {}, loadavg at start: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "?".to_owned())
    );
    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let on_signal = {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, Ordering::Relaxed);
            }
        })
    };

    let baseline = if a.no_baseline || a.soak.is_some() {
        None
    } else {
        let calls = (0..a.calls)
            .map(|_| Ok((udp()?, udp()?)))
            .collect::<std::io::Result<Vec<_>>>()
            .context("binding the baseline's UA sockets")?;
        let flows = calls
            .into_iter()
            .map(|(p, c)| {
                let (pa, ca) = (p.local_addr()?, c.local_addr()?);
                Ok(((p, ca), (c, pa)))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let m = media(flows, a.seconds, origin, &stop).await?;
        m.print("baseline: the load generator alone, UA -> UA directly");
        Some(m)
    };

    let dir = std::env::temp_dir().join(format!("ript-bench-chain-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let runtime = |label: &str| {
        crate::runtime::coalescing(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(a.gw_threads as usize)
                .thread_name(format!("{GW_THREAD}{label}"))
                .enable_all(),
            Duration::from_micros(u64::from(a.coalesce_us)),
        )
        .build()
        .context("building a gateway's runtime")
    };
    let (customer_rt, provider_rt) = (runtime("customer")?, runtime("provider")?);
    let result = through_gateways(
        &a,
        mode,
        (customer_rt.handle(), provider_rt.handle()),
        &dir,
        origin,
        &stop,
        baseline,
    )
    .await;
    customer_rt.shutdown_background();
    provider_rt.shutdown_background();
    let _ = std::fs::remove_dir_all(&dir);
    on_signal.abort();
    if stop.load(Ordering::Relaxed) {
        say!("(interrupted: the figures cover the load sent until then)");
    }
    result
}

fn udp() -> std::io::Result<std::net::UdpSocket> {
    let s = std::net::UdpSocket::bind((LO, 0))?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// VmRSS of this process in KiB.
fn rss_kib() -> u64 {
    soak::status_field("VmRSS:").unwrap_or(0)
}

/// This process's CPU time, user + system, all threads (CLOCK_PROCESS_CPUTIME_ID).
fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// CPU time (clock ticks → Duration) of every live thread of this process, by thread name.
fn threads_cpu() -> BTreeMap<String, Duration> {
    let tick = 1_000_000_000 / rustix::param::clock_ticks_per_second().max(1);
    let mut by_name = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return by_name;
    };
    for e in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let name = head.split_once('(').map_or("?", |(_, n)| n).to_owned();
        let mut f = rest.split_whitespace().skip(11);
        let (Some(u), Some(s)) = (
            f.next().and_then(|x| x.parse::<u64>().ok()),
            f.next().and_then(|x| x.parse::<u64>().ok()),
        ) else {
            continue;
        };
        *by_name.entry(name).or_insert(Duration::ZERO) += Duration::from_nanos((u + s) * tick);
    }
    by_name
}

/// CPU time of the thread groups over a phase.
#[derive(Debug, Default, Clone, Copy)]
struct Threads {
    /// Each gateway's runtime (workers and blocking pool).
    customer: Duration,
    provider: Duration,
    /// Threads of no group: the gateways' SQLite workers, tracing…
    other: Duration,
    /// The load generator's sink thread (the sender has ended when threads are read).
    sink: Duration,
    /// The main runtime: the phones' SIP, the bench's coordination.
    main: Duration,
}

impl Threads {
    /// The gateways: both runtimes and the threads of no group.
    fn gateways(&self) -> Duration {
        self.customer + self.provider + self.other
    }
}

fn split_threads(
    before: &BTreeMap<String, Duration>,
    after: &BTreeMap<String, Duration>,
) -> Threads {
    let mut t = Threads::default();
    for (name, cpu) in after {
        let d = cpu.saturating_sub(before.get(name).copied().unwrap_or_default());
        let group = if name.starts_with("gw-customer") {
            &mut t.customer
        } else if name.starts_with("gw-provider") {
            &mut t.provider
        } else if name.starts_with("bench-sender") || name.starts_with("bench-sink") {
            &mut t.sink
        } else if name.starts_with("tokio-runtime") || name.starts_with("ript-gateway") {
            &mut t.main
        } else {
            &mut t.other
        };
        *group += d;
    }
    t
}

/// One RTP flow: sent from the socket to the address.
type Flow = (std::net::UdpSocket, SocketAddr);

/// The media phase's figures.
#[derive(Debug)]
struct Media {
    calls: usize,
    wall: Duration,
    /// Per direction (0: pbx → core, 1: core → pbx).
    sent: [u64; 2],
    received: [u64; 2],
    /// Packets missing between received ones, by payload index.
    gaps: [u64; 2],
    latency: [Hist; 2],
    /// Packets whose payload did not carry our marks (rewritten or foreign).
    unreadable: u64,
    send_errors: u64,
    process_cpu: Duration,
    /// From /proc, clock ticks.
    threads: Threads,
    /// The sender thread's CPU time (CLOCK_THREAD_CPUTIME_ID).
    sender_cpu: Duration,
    rss_load: u64,
}

impl Media {
    fn received_total(&self) -> u64 {
        self.received.iter().sum()
    }

    fn print(&self, title: &str) {
        let us = |ns: u64| ns as f64 / 1000.0;
        say!("== {title} ==");
        say!("calls with media: {}", self.calls);
        let dirs = ["pbx -> core", "core -> pbx"].into_iter();
        for (((name, &s), &r), (h, gaps)) in dirs
            .zip(&self.sent)
            .zip(&self.received)
            .zip(self.latency.iter().zip(&self.gaps))
        {
            let lost = s.saturating_sub(r);
            say!(
                "{name}: sent packets {s}, received {r}, loss % {:.3} ({lost} lost, {} index gaps)",
                if s == 0 {
                    0.0
                } else {
                    lost as f64 * 100.0 / s as f64
                },
                gaps
            );
            say!(
                "{name}: latency us p50 {:.1} p99 {:.1} p99.9 {:.1} max {:.1}",
                us(h.quantile(0.5)),
                us(h.quantile(0.99)),
                us(h.quantile(0.999)),
                us(h.max)
            );
        }
        let wall = self.wall.as_secs_f64().max(1e-9);
        let t = self.threads;
        say!(
            "process cpu s: {:.2} over {:.2} s ({:.1} % of one core)",
            self.process_cpu.as_secs_f64(),
            wall,
            self.process_cpu.as_secs_f64() * 100.0 / wall
        );
        say!(
            "thread cpu s (tick-sampled but the sender): gateways {:.2} = customer runtime {:.2} + provider runtime {:.2} + other threads (SQLite…) {:.2}; load generator sender {:.2} + sink {:.2}; main runtime (SIP phones) {:.2}",
            t.gateways().as_secs_f64(),
            t.customer.as_secs_f64(),
            t.provider.as_secs_f64(),
            t.other.as_secs_f64(),
            self.sender_cpu.as_secs_f64(),
            t.sink.as_secs_f64(),
            t.main.as_secs_f64()
        );
        say!("rss KiB at full load: {}", self.rss_load);
        if self.unreadable > 0 || self.send_errors > 0 {
            say!(
                "anomalies: {} packets without our payload marks, {} send errors",
                self.unreadable,
                self.send_errors
            );
        }
    }
}

/// Sends and receives every flow pair for `seconds` and measures. `pairs[c]` is call `c`:
/// (pbx socket → its destination, core socket → its destination).
async fn media(
    pairs: Vec<(Flow, Flow)>,
    seconds: u64,
    origin: Instant,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Media> {
    let calls = pairs.len();
    let mut targets = Vec::with_capacity(calls * 2);
    let mut socks = Vec::with_capacity(calls * 2);
    for ((p, pd), (c, cd)) in pairs {
        targets.push((p.try_clone()?, pd));
        targets.push((c.try_clone()?, cd));
        socks.push(p);
        socks.push(c);
    }
    let (ready_tx, ready_rx) = oneshot::channel();
    let (sink_stop, sink_stop_rx) = oneshot::channel();
    let progress = Arc::new(AtomicU64::new(0));
    let sink = {
        let progress = progress.clone();
        spawn("bench-sink", move || {
            sink(socks, origin, &progress, ready_tx, sink_stop_rx)
        })?
    };
    if ready_rx.await.is_err() {
        return Err(join(sink)
            .await?
            .err()
            .unwrap_or_else(|| anyhow!("the sink ended early")));
    }
    let go = Instant::now() + Duration::from_millis(20);
    let (cpu0, threads0) = (process_cpu(), threads_cpu());
    let sender = {
        let stop = stop.clone();
        spawn("bench-sender", move || {
            sender(targets, seconds, go, origin, &stop)
        })?
    };
    // RSS at full load: halfway through.
    tokio::time::sleep(Duration::from_millis(seconds * 500)).await;
    let rss_load = rss_kib();
    let (sent, send_errors, wall, sender_cpu) = join(sender).await?;
    let total: u64 = sent.iter().sum();
    super::drain(&progress, total, DRAIN_QUIET).await;
    let (cpu1, threads1) = (process_cpu(), threads_cpu());
    let _ = sink_stop.send(());
    let s = join(sink).await??;
    let mut by_dir = [0u64; 2];
    for (flow, n) in sent.iter().enumerate() {
        if let Some(d) = by_dir.get_mut(flow % 2) {
            *d += n;
        }
    }
    Ok(Media {
        calls,
        wall,
        sent: by_dir,
        received: s.received,
        gaps: s.gaps,
        latency: s.latency,
        unreadable: s.unreadable,
        send_errors,
        process_cpu: cpu1.saturating_sub(cpu0),
        threads: split_threads(&threads0, &threads1),
        sender_cpu,
        rss_load,
    })
}

/// Packet `r` of flow `k` (of `n`) is due at `go + r·20 ms + k·20 ms/n` ([`super::pace_flows`]).
/// Returns the packets sent per flow, send errors, the wall time of sending and the sender's
/// CPU time.
fn sender(
    targets: Vec<Flow>,
    seconds: u64,
    go: Instant,
    origin: Instant,
    stop: &AtomicBool,
) -> (Vec<u64>, u64, Duration, Duration) {
    let mut sent = vec![0u64; targets.len()];
    let mut errors = 0;
    // PCMU silence (0xff) after the marks.
    let mut buf = [0xffu8; PACKET];
    let cpu0 = super::thread_cpu();
    let pps = u32::try_from(PPS).unwrap_or(50);
    super::pace_flows(targets.len(), go, seconds, pps, stop, |flow, round| {
        let (Some((sock, dst)), Some(count)) = (targets.get(flow), sent.get_mut(flow)) else {
            return;
        };
        super::rtp_header(&mut buf, flow, round, TS_STEP);
        let t = u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        put(&mut buf, AT_TIME, &t.to_be_bytes());
        put(&mut buf, AT_FLOW, &(flow as u32).to_be_bytes());
        put(&mut buf, AT_INDEX, &(round as u32).to_be_bytes());
        match sock.send_to(&buf, dst) {
            Ok(_) => *count += 1,
            Err(_) => errors += 1,
        }
    });
    (
        sent,
        errors,
        Instant::now().saturating_duration_since(go),
        super::thread_cpu().saturating_sub(cpu0),
    )
}

#[derive(Debug)]
struct SinkReport {
    received: [u64; 2],
    gaps: [u64; 2],
    latency: [Hist; 2],
    unreadable: u64,
}

#[derive(Debug)]
struct SinkState {
    received: [u64; 2],
    gaps: [u64; 2],
    latency: [Hist; 2],
    unreadable: u64,
    /// The highest packet index seen per flow.
    last: Vec<Option<u32>>,
}

impl SinkState {
    /// A packet arrived on the socket of flow `expected`'s receiver.
    fn packet(&mut self, expected: usize, pkt: &[u8], now_ns: u64) {
        let field = |at: usize, len: usize| pkt.get(at..at + len);
        let (Some(t), Some(f), Some(i)) = (
            field(AT_TIME, 8).and_then(|b| b.try_into().ok().map(u64::from_be_bytes)),
            field(AT_FLOW, 4).and_then(|b| b.try_into().ok().map(u32::from_be_bytes)),
            field(AT_INDEX, 4).and_then(|b| b.try_into().ok().map(u32::from_be_bytes)),
        ) else {
            self.unreadable += 1;
            return;
        };
        if f as usize != expected {
            self.unreadable += 1;
            return;
        }
        let d = expected % 2;
        let (Some(count), Some(gaps), Some(lat), Some(last)) = (
            self.received.get_mut(d),
            self.gaps.get_mut(d),
            self.latency.get_mut(d),
            self.last.get_mut(expected),
        ) else {
            return;
        };
        *count += 1;
        match *last {
            Some(l) if i > l => {
                *gaps += u64::from(i - l - 1);
                *last = Some(i);
            }
            Some(_) => {}
            None => {
                *gaps += u64::from(i);
                *last = Some(i);
            }
        }
        lat.record(now_ns.saturating_sub(t));
    }
}

/// The sink's own thread and runtime: socket `j` receives flow `j ^ 1`.
fn sink(
    socks: Vec<std::net::UdpSocket>,
    origin: Instant,
    progress: &Arc<AtomicU64>,
    ready: oneshot::Sender<()>,
    stop: oneshot::Receiver<()>,
) -> anyhow::Result<SinkReport> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the sink runtime")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let flows = socks.len();
        let state = Rc::new(RefCell::new(SinkState {
            received: [0; 2],
            gaps: [0; 2],
            latency: [Hist::new(), Hist::new()],
            unreadable: 0,
            last: vec![None; flows],
        }));
        let mut tasks = Vec::with_capacity(flows);
        for (j, s) in socks.into_iter().enumerate() {
            let sock = tokio::net::UdpSocket::from_std(s)?;
            let (state, progress) = (state.clone(), progress.clone());
            tasks.push(tokio::task::spawn_local(async move {
                let mut buf = [0u8; 2048];
                loop {
                    match sock.recv(&mut buf).await {
                        Ok(n) => {
                            let now =
                                u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
                            state
                                .borrow_mut()
                                .packet(j ^ 1, buf.get(..n).unwrap_or_default(), now);
                            progress.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                        Err(_) => return,
                    }
                }
            }));
        }
        if ready.send(()).is_err() {
            return Err(anyhow!("the bench gave up"));
        }
        let _ = stop.await;
        for t in &tasks {
            t.abort();
        }
        drop(tasks);
        let s = state.replace(SinkState {
            received: [0; 2],
            gaps: [0; 2],
            latency: [Hist::new(), Hist::new()],
            unreadable: 0,
            last: Vec::new(),
        });
        Ok(SinkReport {
            received: s.received,
            gaps: s.gaps,
            latency: s.latency,
            unreadable: s.unreadable,
        })
    })
}

fn local_sdp(port: u16) -> Local {
    Local {
        address: "127.0.0.1".into(),
        audio_port: port,
        codecs: vec!["PCMU".into()],
        srtp: SrtpMode::Off,
        keys: vec![],
        want: sdp::Direction::SendRecv,
        session_id: 1,
        session_version: 1,
    }
}

/// The core side of one answered call (its session ends on the gateway's BYE).
struct Answered {
    index: u32,
    sock: std::net::UdpSocket,
    /// Where the provider gateway receives this call's RTP.
    to_gateway: SocketAddr,
}

/// The PBX side of one established call.
struct Placed {
    index: u32,
    sock: std::net::UdpSocket,
    to_gateway: SocketAddr,
    setup: Duration,
    answered: Instant,
    bye: oneshot::Sender<()>,
}

/// The call index from a Request-URI `sip:+1408NNNNNNN@host`.
fn index_of(uri: &str) -> Option<u32> {
    let user = uri.strip_prefix("sip:")?.split('@').next()?;
    user.strip_prefix(CALLED_PREFIX)?.parse().ok()
}

/// Answers every call on the core phone with 200 at once; each answered call's session is
/// kept (and its events drained) until it ends, which `ended` is told (with the call's index).
async fn answer_all(
    mut core: Phone,
    answered: mpsc::UnboundedSender<Answered>,
    ended: mpsc::UnboundedSender<Option<u32>>,
) {
    while let Some(ev) = core.ua.next_event().await {
        let sip_ua::UaEvent::Call(inc) = ev else {
            continue;
        };
        let (answered, ended) = (answered.clone(), ended.clone());
        tokio::spawn(async move {
            let mut call = inc.call;
            let index = index_of(inc.request.uri());
            let r = async {
                let index = index.ok_or_else(|| anyhow!("unknown called number"))?;
                let body = inc.request.body().to_vec();
                let sock = udp()?;
                let (answer, _) =
                    sdp::answer(&Sdp::parse(&body)?, &local_sdp(sock.local_addr()?.port()))?;
                call.accept(Some(answer.to_text().into_bytes())).await?;
                anyhow::Ok(Answered {
                    index,
                    sock,
                    to_gateway: demo::media_addr(&body)?,
                })
            }
            .await;
            match r {
                Ok(a) => {
                    let _ = answered.send(a);
                }
                Err(_) => {
                    let _ = call.reject(500).await;
                }
            }
            while let Some(ev) = call.next_event().await {
                if let SessionEvent::Terminated { .. } = ev {
                    let _ = ended.send(index);
                    break;
                }
            }
        });
    }
}

/// Places call `index` and waits for its 200; the session then waits for `bye`.
async fn place(
    caller: sip_ua::Caller,
    pbx_sip: SocketAddr,
    customer_sip: SocketAddr,
    index: u32,
) -> anyhow::Result<Placed> {
    let sock = udp()?;
    let offer =
        sdp::offer(&local_sdp(sock.local_addr()?.port())).ok_or_else(|| anyhow!("no offer"))?;
    let called = format!("{CALLED_PREFIX}{index:07}");
    let t0 = Instant::now();
    let mut call = caller
        .call(sip_ua::CallOptions {
            uri: format!("sip:{called}@{customer_sip}"),
            from: format!("<sip:{CALLER}@{pbx_sip}>"),
            to: format!("<sip:{called}@{customer_sip}>"),
            target: Target::new(Transport::Udp, customer_sip),
            offer: Some(offer.to_text().into_bytes()),
            credentials: None,
            headers: vec![],
        })
        .await?;
    let answer = loop {
        match tokio::time::timeout_at((t0 + SETUP_TIMEOUT).into(), call.next_event()).await {
            Ok(Some(SessionEvent::RemoteAnswer { body })) => break body,
            Ok(Some(SessionEvent::Terminated { status, .. })) => {
                bail!("call {index} failed: {status:?}")
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => bail!("call {index} was not answered"),
        }
    };
    let setup = t0.elapsed();
    let to_gateway = demo::media_addr(&answer)?;
    let answered = Instant::now();
    let (bye, bye_rx) = oneshot::channel::<()>();
    // The session waits for `bye`; the call's end is seen at the core phone, when the
    // provider's BYE arrives there.
    tokio::spawn(async move {
        tokio::select! {
            _ = bye_rx => {}
            _ = async { while call.next_event().await.is_some() {} } => return,
        }
        let _ = call.bye().await;
        while call.next_event().await.is_some() {}
    });
    Ok(Placed {
        index,
        sock,
        to_gateway,
        setup,
        answered,
        bye,
    })
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).copied().unwrap_or_default()
}

#[allow(clippy::too_many_arguments)]
async fn through_gateways(
    a: &ChainArgs,
    mode: &str,
    (customer_rt, provider_rt): (&tokio::runtime::Handle, &tokio::runtime::Handle),
    dir: &std::path::Path,
    origin: Instant,
    stop: &Arc<AtomicBool>,
    baseline: Option<Media>,
) -> anyhow::Result<()> {
    let rss_start = rss_kib();
    let settings = |label: &str, rtp_ports: &str| {
        let mut s = vec![
            ("RIPT_RTP_PORTS", rtp_ports.to_owned()),
            ("RIPT_SIP_RATE", a.sip_rate.to_string()),
        ];
        // A soak sets up calls by the hundred thousand: an in-memory database would keep
        // every CDR in RSS, indistinguishable from a leak.
        if a.soak.is_some() {
            let db = dir.join(format!("{label}.db"));
            s.push((
                "DATABASE_URL",
                format!("sqlite://{}?mode=rwc", db.display()),
            ));
        }
        s
    };
    let provider = demo::start_gateway_on(
        provider_rt,
        "provider",
        dir,
        &settings("provider", "30000-39999"),
        false,
    )
    .await?;
    let customer = demo::start_gateway_on(
        customer_rt,
        "customer",
        dir,
        &settings("customer", "20000-29999"),
        false,
    )
    .await?;
    let r = match a.soak {
        Some(seconds) => {
            soak::soak(
                a,
                seconds,
                mode,
                &provider,
                &customer,
                (customer_rt, provider_rt),
                origin,
                stop,
            )
            .await
        }
        None => {
            load(
                a, mode, &provider, &customer, origin, stop, baseline, rss_start,
            )
            .await
        }
    };
    customer.stop().await;
    provider.stop().await;
    r
}

#[allow(clippy::too_many_arguments)]
async fn load(
    a: &ChainArgs,
    mode: &str,
    provider: &Gateway,
    customer: &Gateway,
    origin: Instant,
    stop: &Arc<AtomicBool>,
    baseline: Option<Media>,
    rss_start: u64,
) -> anyhow::Result<()> {
    let pbx = Phone::with_sip_rate("pbx", a.sip_rate).await?;
    let core = Phone::with_sip_rate("core", a.sip_rate).await?;
    let (pbx_sip, core_sip) = (pbx.sip, core.sip);
    let customer_sip = demo::configure(provider, customer, pbx_sip, core_sip, mode, |_| {}).await?;
    let (answered_tx, mut answered_rx) = mpsc::unbounded_channel();
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel();
    let answering = tokio::spawn(answer_all(core, answered_tx, ended_tx));
    // Let the gateways settle after configuration.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = rss_kib();

    // Setup.
    let caller = pbx.ua.caller();
    let cpu0 = process_cpu();
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(a.calls as usize);
    for i in 0..a.calls {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let due = t0 + Duration::from_secs_f64(f64::from(i) / f64::from(a.cps));
        tokio::time::sleep_until(due.into()).await;
        tasks.push(tokio::spawn(place(
            caller.clone(),
            pbx_sip,
            customer_sip,
            i,
        )));
    }
    let mut placed = Vec::new();
    let mut failures: BTreeMap<String, u32> = BTreeMap::new();
    let mut last_answer = t0;
    for t in tasks {
        match t.await {
            Ok(Ok(p)) => {
                last_answer = last_answer.max(p.answered);
                placed.push(p);
            }
            Ok(Err(e)) => {
                *failures
                    .entry(
                        format!("{e:#}")
                            .split(": ")
                            .last()
                            .unwrap_or("?")
                            .to_owned(),
                    )
                    .or_default() += 1
            }
            Err(e) => *failures.entry(e.to_string()).or_default() += 1,
        }
    }
    let setup_wall = t0.elapsed();
    let setup_cpu = process_cpu().saturating_sub(cpu0);
    // Every established call's core side (its 200 went out before the PBX got it).
    let mut cores: HashMap<u32, Answered> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while cores.len() < placed.len() && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), answered_rx.recv()).await {
            Ok(Some(x)) => {
                cores.insert(x.index, x);
            }
            Ok(None) => break,
            Err(_) => {}
        }
    }
    let mut setups: Vec<Duration> = placed.iter().map(|p| p.setup).collect();
    setups.sort();
    let failed: u32 = failures.values().sum();
    say!("== setup: {} INVITEs at {} calls/s ==", a.calls, a.cps);
    say!("calls set up: {}", placed.len());
    say!("calls failed: {failed}");
    for (why, n) in &failures {
        say!("  {n} x {why}");
    }
    let span = last_answer
        .saturating_duration_since(t0)
        .as_secs_f64()
        .max(1e-9);
    say!(
        "setup ms (INVITE -> 200 at the UAC): p50 {:.2} p99 {:.2} max {:.2}; {} over 50 ms, {} over 450 ms (SIP T1 retransmission)",
        quantile(&setups, 0.5).as_secs_f64() * 1e3,
        quantile(&setups, 0.99).as_secs_f64() * 1e3,
        setups.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        setups.iter().filter(|d| d.as_millis() > 50).count(),
        setups.iter().filter(|d| d.as_millis() > 450).count()
    );
    say!(
        "achieved setup rate calls/s: {:.1} (first INVITE to last 200 in {:.2} s)",
        placed.len() as f64 / span,
        span
    );
    say!(
        "setup cpu ms per call (process, incl. the UAs): {:.2} ({:.2} s over {:.2} s)",
        setup_cpu.as_secs_f64() * 1e3 / placed.len().max(1) as f64,
        setup_cpu.as_secs_f64(),
        setup_wall.as_secs_f64()
    );

    // Media over the calls established on both sides.
    let mut pairs = Vec::new();
    let mut byes = Vec::new();
    for p in placed {
        match cores.remove(&p.index) {
            Some(c) => {
                pairs.push(((p.sock, p.to_gateway), (c.sock, c.to_gateway)));
            }
            None => say!(
                "call {} was answered at the PBX but never seen at the core",
                p.index
            ),
        }
        byes.push(p.bye);
    }
    let calls = pairs.len();
    if calls == 0 {
        bail!("no call was set up");
    }
    let m = media(pairs, a.seconds, origin, stop).await?;
    m.print(&format!("chain: {mode}"));

    // Teardown.
    let rss_load = m.rss_load;
    let t1 = Instant::now();
    let byes_sent = byes.len();
    for bye in byes {
        let _ = bye.send(());
    }
    let mut ended_ok = 0;
    let deadline = t1 + Duration::from_secs(10);
    while ended_ok < calls {
        match tokio::time::timeout_at(deadline.into(), ended_rx.recv()).await {
            Ok(Some(_)) => ended_ok += 1,
            Ok(None) | Err(_) => break,
        }
    }
    let teardown = t1.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = rss_kib();
    answering.abort();
    say!(
        "== teardown: {byes_sent} BYEs from the PBX phone, {ended_ok} of the {calls} calls with media ended at the core phone in {:.2} s ==",
        teardown.as_secs_f64()
    );

    // Derived figures.
    let call_s = calls as f64 * m.wall.as_secs_f64();
    let pkts = m.received_total().max(1) as f64;
    let gw = m.threads.gateways();
    say!("== chain figures ==");
    say!(
        "gateways cpu s per call-second: {:.5} (thread-sampled; process incl. generator {:.5})",
        gw.as_secs_f64() / call_s,
        m.process_cpu.as_secs_f64() / call_s
    );
    say!(
        "gateways cpu us per relayed packet: {:.2} end to end, {:.2} per hop (2 hops)",
        gw.as_secs_f64() * 1e6 / pkts,
        gw.as_secs_f64() * 1e6 / pkts / 2.0
    );
    say!(
        "cpu us per relayed packet per gateway: customer {:.2}, provider {:.2} (their runtimes only; other threads {:.2})",
        m.threads.customer.as_secs_f64() * 1e6 / pkts,
        m.threads.provider.as_secs_f64() * 1e6 / pkts,
        m.threads.other.as_secs_f64() * 1e6 / pkts
    );
    if let Some(b) = &baseline {
        let bp = b.received_total().max(1) as f64;
        let (c_us, b_us) = (
            m.process_cpu.as_secs_f64() * 1e6 / pkts,
            b.process_cpu.as_secs_f64() * 1e6 / bp,
        );
        say!(
            "process cpu us per packet: chain {c_us:.2}, baseline {b_us:.2}, chain - baseline {:.2} ({:.2} per hop), ratio chain/baseline {:.2}",
            c_us - b_us,
            (c_us - b_us) / 2.0,
            c_us / b_us.max(1e-9)
        );
        let dirs = ["pbx -> core", "core -> pbx"].into_iter();
        for (name, (c, bl)) in dirs.zip(m.latency.iter().zip(&b.latency)) {
            let added = |q: f64| (c.quantile(q) as f64 - bl.quantile(q) as f64) / 1000.0;
            say!(
                "{name}: added latency us (chain - baseline) p50 {:.1} p99 {:.1} p99.9 {:.1}; per hop p50 {:.1} p99 {:.1}",
                added(0.5),
                added(0.99),
                added(0.999),
                added(0.5) / 2.0,
                added(0.99) / 2.0
            );
        }
    }
    say!(
        "rss KiB: at start {rss_start}, gateways up (before calls) {rss_before}, at full load {rss_load}, after the calls {rss_after}"
    );
    say!(
        "rss KiB per call ((at load - before) / calls, incl. the generator's sockets): {:.1}",
        rss_load.saturating_sub(rss_before) as f64 / calls as f64
    );
    Ok(())
}
