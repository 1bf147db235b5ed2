//! `ript-gateway bench relay`: what the media relay costs per RTP packet, measured on
//! loopback inside one process against a plain UDP forwarder carrying the same load.
//!
//! Per stream (a call): two "UA" sockets and, in between, one `media_relay::Bridge` on two
//! port pairs from a `PortAllocator` (or, for the baseline, two plain `recv_from → send_to`
//! tasks on the same kind of ports). Flow `k` is sent from UA socket `k` and received on UA
//! socket `k ^ 1`. Four threads, so the figures can be told apart:
//!
//! - the forwarder (Bridges or plain): a `current_thread` tokio runtime on its own OS thread;
//!   its CPU time is read with `CLOCK_THREAD_CPUTIME_ID` from inside that thread, after setup
//!   and after the load has drained;
//! - the sender: a plain thread pacing every flow at `--pps` with correct RTP sequence numbers
//!   and timestamps, the flows' phases spread evenly over the packet interval, each packet
//!   carrying its send time (ns since a shared monotonic origin) in its payload;
//! - the sink: a `current_thread` runtime counting packets, sequence gaps and one-way latency
//!   per flow;
//! - the caller's runtime, which only coordinates.
//!
//! Only 127.0.0.1 is used; the load is bounded by `--streams`, `--pps` and `--seconds`.

use anyhow::{Context, anyhow};
use media_relay::{Bridge, Latch, LegConfig, PortAllocator, PortRange, RtpPair};
use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// `println!` that ignores a closed stdout (`bench relay | head` must not panic).
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

mod chain;

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The forwarders' RTP/RTCP port range.
const PORTS: (u16, u16) = (40000, 59999);
const HEADER: usize = 12;
/// G.711 at 20 ms: 160 bytes of payload.
const PAYLOAD: usize = 160;
const PACKET: usize = HEADER + PAYLOAD;
const CLOCK_RATE: u32 = 8000;
/// After the sender stops, the sink gets until nothing has arrived for `DRAIN_QUIET` (at most
/// `DRAIN_MAX`) to receive what is still in flight: what is missing then counts as lost.
const DRAIN_QUIET: Duration = Duration::from_millis(200);
const DRAIN_MAX: Duration = Duration::from_secs(10);
/// When the sender starts after being spawned (every flow starts on its own phase).
const LEAD: Duration = Duration::from_millis(20);
/// Descriptors per stream: 2 UA sockets + their clones for the sender + 2 RTP/RTCP pairs.
const FDS_PER_STREAM: u64 = 8;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// RTP through media-relay Bridges and through a plain UDP forwarder: CPU per packet,
    /// packets/s, loss, one-way latency.
    Relay(RelayArgs),
    /// Calls through the whole chain (SIP UAs -> customer -> RIPT -> provider -> SIP UAs, both
    /// gateways in this process): setup rate and time, loss, one-way latency, CPU and RSS per
    /// call against the load generator alone.
    Chain(chain::ChainArgs),
}

#[derive(Debug, clap::Args)]
struct RelayArgs {
    /// Bidirectional streams (calls), two RTP flows each.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=2000))]
    streams: u32,
    /// Seconds of load per forwarder.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    seconds: u64,
    /// Packets per second per flow (50 = G.711 in 20 ms packets; packets stay 172 bytes).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pps: u32,
    /// Run only the baseline: a plain recv_from → send_to forwarder (default: both).
    #[arg(long, conflicts_with = "no_plain")]
    plain: bool,
    /// Run only the media relay, without the baseline.
    #[arg(long)]
    no_plain: bool,
    /// Both forwarders' runtime waits this long before sleeping on its sockets (the gateway's
    /// `media.coalesce_us`); 0: it wakes for every packet.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=5000))]
    coalesce_us: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Relay,
    Plain,
}

impl Kind {
    fn title(self) -> &'static str {
        match self {
            Kind::Relay => "relay: media-relay Bridge (latching, RTP validation, RFC 3550 stats)",
            Kind::Plain => "plain: recv_from -> send_to forwarder (baseline)",
        }
    }
}

pub async fn bench(a: BenchArgs) -> ExitCode {
    let r = match a.what {
        What::Relay(args) => relay(args).await,
        What::Chain(args) => chain::chain(args).await,
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn relay(a: RelayArgs) -> anyhow::Result<()> {
    raise_fd_limit(u64::from(a.streams) * FDS_PER_STREAM + 64)?;
    let kinds: &[Kind] = match (a.plain, a.no_plain) {
        (true, _) => &[Kind::Plain],
        (false, true) => &[Kind::Relay],
        (false, false) => &[Kind::Relay, Kind::Plain],
    };
    let stop = Arc::new(AtomicBool::new(false));
    let on_signal = {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, Ordering::Relaxed);
            }
        })
    };
    say!(
        "bench relay: {} streams = {} RTP flows x {} pkt/s ({PACKET}-byte RTP, {PAYLOAD}-byte payload), {} s per forwarder, wake-up coalescing {} us, 127.0.0.1",
        a.streams,
        a.streams * 2,
        a.pps,
        a.seconds,
        a.coalesce_us
    );
    say!(
        "cpus: {}, loadavg at start: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "?".to_owned())
    );
    let origin = Instant::now();
    let mut done = Vec::new();
    for &kind in kinds {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let r = phase(kind, &a, origin, &stop).await?;
        r.print();
        done.push(r);
    }
    on_signal.abort();
    if let [relay, plain] = done.as_slice() {
        let (r, p) = (relay.cpu_us_per_packet(), plain.cpu_us_per_packet());
        if p > 0.0 {
            say!("ratio relay/plain cpu us/packet: {:.2}", r / p);
        }
    }
    if stop.load(Ordering::Relaxed) {
        say!("(interrupted: the figures cover the load sent until then)");
    }
    Ok(())
}

/// Raises the soft RLIMIT_NOFILE towards the hard one when `need` descriptors do not fit.
fn raise_fd_limit(need: u64) -> anyhow::Result<()> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current.is_none_or(|c| c >= need) {
        return Ok(());
    }
    let got = lim.maximum.map_or(need, |m| m.min(need));
    lim.current = Some(got);
    setrlimit(Resource::Nofile, lim).context("raising RLIMIT_NOFILE")?;
    anyhow::ensure!(
        got >= need,
        "need {need} file descriptors, the hard limit allows {got}: use fewer --streams or raise `ulimit -Hn`"
    );
    Ok(())
}

/// One forwarder's measurement.
#[derive(Debug)]
struct Phase {
    kind: Kind,
    send: SendReport,
    fwd: FwdReport,
    sink: SinkReport,
    /// While sending, in % of all CPUs' time: (busy, stolen by the hypervisor).
    machine: Option<(f64, f64)>,
}

impl Phase {
    fn cpu_us_per_packet(&self) -> f64 {
        if self.fwd.forwarded == 0 {
            return 0.0;
        }
        self.fwd.cpu.as_secs_f64() * 1e6 / self.fwd.forwarded as f64
    }

    fn print(&self) {
        let wall = self.send.wall.as_secs_f64().max(1e-9);
        let sent: u64 = self.send.sent.iter().sum();
        let received: u64 = self.sink.received.iter().sum();
        let lost = sent.saturating_sub(received);
        let streams_with_loss = self
            .send
            .sent
            .iter()
            .zip(&self.sink.received)
            .filter(|(s, r)| r < s)
            .count();
        let pct = |d: Duration| d.as_secs_f64() * 100.0 / wall;
        let us = |ns: u64| ns as f64 / 1000.0;
        say!("== {} ==", self.kind.title());
        say!("sent packets: {sent}");
        say!("offered pkt/s: {:.1}", sent as f64 / wall);
        say!("relayed packets: {}", self.fwd.forwarded);
        say!("relayed pkt/s: {:.1}", self.fwd.forwarded as f64 / wall);
        say!("received packets: {received}");
        say!(
            "loss %: {:.3} ({lost} packets, {} seq gaps, {streams_with_loss} flows with loss)",
            if sent == 0 {
                0.0
            } else {
                lost as f64 * 100.0 / sent as f64
            },
            self.sink.gaps
        );
        say!(
            "latency p50 us: {:.1}",
            us(self.sink.latency.quantile(0.50))
        );
        say!(
            "latency p99 us: {:.1}",
            us(self.sink.latency.quantile(0.99))
        );
        say!("latency max us: {:.1}", us(self.sink.latency.max));
        say!("cpu us/packet: {:.2}", self.cpu_us_per_packet());
        say!("cpu % of one core: {:.1}", pct(self.fwd.cpu));
        if let Some((user, sys)) = self.fwd.split {
            let all = (user + sys).as_secs_f64().max(1e-9);
            say!(
                "cpu user/kernel % (tick-sampled): {:.0}/{:.0}",
                user.as_secs_f64() * 100.0 / all,
                sys.as_secs_f64() * 100.0 / all
            );
        }
        say!(
            "load generator cpu % of one core: sender {:.1}, sink {:.1}",
            pct(self.send.cpu),
            pct(self.sink.cpu)
        );
        if let Some((busy, steal)) = self.machine {
            say!(
                "machine cpu % (all cpus, /proc/stat, tick-sampled): busy {busy:.1}, steal {steal:.1}"
            );
        }
        let mut notes = Vec::new();
        if self.send.errors > 0 {
            notes.push(format!("{} send errors", self.send.errors));
        }
        if self.kind == Kind::Relay {
            say!(
                "relay counters: {} packets refused (0 expected), {} forwarded on RFC 3550 probation (1 per flow expected: {})",
                self.fwd.refused,
                self.fwd.probation,
                self.send.sent.len()
            );
        }
        if self.fwd.silent > 0 {
            notes.push(format!("{} bridges gave no stats", self.fwd.silent));
        }
        if self.sink.foreign > 0 {
            notes.push(format!("{} packets of another flow", self.sink.foreign));
        }
        if !notes.is_empty() {
            say!("anomalies: {}", notes.join(", "));
        }
    }
}

/// A UA socket on an ephemeral loopback port.
fn ua_socket() -> std::io::Result<std::net::UdpSocket> {
    let s = std::net::UdpSocket::bind((LO, 0))?;
    s.set_nonblocking(true)?;
    Ok(s)
}

fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<std::thread::JoinHandle<T>> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .with_context(|| format!("spawning {name}"))
}

async fn join<T: Send + 'static>(h: std::thread::JoinHandle<T>) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(move || h.join())
        .await
        .context("joining a bench thread")?
        .map_err(|_| anyhow!("a bench thread panicked"))
}

/// Runs the load through one forwarder and collects the figures. Every early return drops
/// the stop channels, which ends the threads already started.
async fn phase(
    kind: Kind,
    a: &RelayArgs,
    origin: Instant,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Phase> {
    let flows = a.streams as usize * 2;
    let ua = (0..flows)
        .map(|_| ua_socket())
        .collect::<std::io::Result<Vec<_>>>()
        .context("binding the UA sockets")?;
    let addrs = ua
        .iter()
        .map(|s| s.local_addr())
        .collect::<std::io::Result<Vec<_>>>()?;

    let (ready_tx, ready_rx) = oneshot::channel();
    let (fwd_stop, fwd_stop_rx) = oneshot::channel();
    let timeout = Duration::from_secs(a.seconds + 3600);
    let coalesce = Duration::from_micros(u64::from(a.coalesce_us));
    let fwd = spawn("bench-forwarder", move || {
        forwarder(kind, &addrs, timeout, coalesce, ready_tx, fwd_stop_rx)
    })?;
    let Ok(ports) = ready_rx.await else {
        return Err(join(fwd)
            .await?
            .err()
            .unwrap_or_else(|| anyhow!("the forwarder ended early")));
    };

    let targets = ua
        .iter()
        .zip(&ports)
        .map(|(s, &p)| Ok((s.try_clone()?, SocketAddr::new(LO, p))))
        .collect::<std::io::Result<Vec<_>>>()?;
    let (sink_ready_tx, sink_ready_rx) = oneshot::channel();
    let (sink_stop, sink_stop_rx) = oneshot::channel();
    let progress = Arc::new(AtomicU64::new(0));
    let sink = {
        let progress = progress.clone();
        spawn("bench-sink", move || {
            sink(ua, origin, &progress, sink_ready_tx, sink_stop_rx)
        })?
    };
    if sink_ready_rx.await.is_err() {
        return Err(join(sink)
            .await?
            .err()
            .unwrap_or_else(|| anyhow!("the sink ended early")));
    }

    let pace = Pace {
        pps: a.pps,
        seconds: a.seconds,
        go: Instant::now() + LEAD,
    };
    let stop = stop.clone();
    let m0 = machine_cpu();
    let send = join(spawn("bench-sender", move || {
        sender(targets, pace, origin, &stop)
    })?)
    .await?;
    let machine = m0
        .zip(machine_cpu())
        .and_then(|((b0, s0, t0), (b1, s1, t1))| {
            let total = t1.checked_sub(t0).filter(|&t| t > 0)? as f64;
            Some((
                b1.saturating_sub(b0) as f64 * 100.0 / total,
                s1.saturating_sub(s0) as f64 * 100.0 / total,
            ))
        });
    drain(&progress, send.sent.iter().sum(), DRAIN_QUIET).await;
    let _ = fwd_stop.send(());
    let fwd = join(fwd).await??;
    let _ = sink_stop.send(());
    let sink = join(sink).await??;
    Ok(Phase {
        kind,
        send,
        fwd,
        sink,
        machine,
    })
}

/// Waits until the sink has received `sent` packets or nothing more for `quiet` (at most
/// `DRAIN_MAX`).
async fn drain(progress: &AtomicU64, sent: u64, quiet: Duration) {
    let start = Instant::now();
    let (mut last, mut changed) = (progress.load(Ordering::Relaxed), start);
    while start.elapsed() < DRAIN_MAX {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = progress.load(Ordering::Relaxed);
        if now >= sent {
            return;
        }
        if now != last {
            (last, changed) = (now, Instant::now());
        } else if changed.elapsed() >= quiet {
            return;
        }
    }
}

/// The calling thread's (user, kernel) CPU time from /proc, at clock-tick resolution.
fn thread_user_sys() -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name: state is field 3, utime 14, stime 15 (proc(5)).
    let mut f = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let (user, sys) = (
        f.next()?.parse::<u64>().ok()?,
        f.next()?.parse::<u64>().ok()?,
    );
    let tick = 1_000_000_000 / rustix::param::clock_ticks_per_second().max(1);
    Some((
        Duration::from_nanos(user * tick),
        Duration::from_nanos(sys * tick),
    ))
}

/// The whole machine's CPU time counters from /proc/stat: (busy, steal, total) in ticks.
fn machine_cpu() -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .take(8)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let &[user, nice, system, idle, iowait, irq, softirq, steal] = v.as_slice() else {
        return None;
    };
    let total = user + nice + system + idle + iowait + irq + softirq + steal;
    Some((user + nice + system + irq + softirq, steal, total))
}

fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

// ---- the forwarder thread ----

#[derive(Debug, Default)]
struct FwdReport {
    /// The forwarder thread's CPU time from after setup to after the drain.
    cpu: Duration,
    /// The same as (user, kernel), at clock-tick resolution.
    split: Option<(Duration, Duration)>,
    /// RTP packets the forwarder read (and, here, sent on).
    forwarded: u64,
    /// Relay only: packets its counters refused (not forwarded).
    refused: u64,
    /// Relay only: packets forwarded while on RFC 3550 probation (the first of each flow).
    probation: u64,
    /// Bridges that did not answer for their stats (ended early).
    silent: usize,
}

enum Running {
    Relay(Vec<Bridge>),
    Plain {
        tasks: Vec<tokio::task::JoinHandle<()>>,
        count: Arc<AtomicU64>,
    },
}

/// The forwarder's own thread and runtime: sets up, reports the port each UA sends to,
/// measures its thread's CPU time until `stop`.
fn forwarder(
    kind: Kind,
    uas: &[SocketAddr],
    timeout: Duration,
    coalesce: Duration,
    ready: oneshot::Sender<Vec<u16>>,
    stop: oneshot::Receiver<()>,
) -> anyhow::Result<FwdReport> {
    let rt = crate::runtime::coalescing(
        tokio::runtime::Builder::new_current_thread().enable_all(),
        coalesce,
    )
    .build()
    .context("building the forwarder runtime")?;
    rt.block_on(async move {
        let (ports, running) = start_forwarder(kind, uas, timeout)?;
        let (t0, split0) = (thread_cpu(), thread_user_sys());
        if ready.send(ports).is_err() {
            return Ok(FwdReport::default());
        }
        let _ = stop.await;
        let cpu = thread_cpu().saturating_sub(t0);
        let split = split0
            .zip(thread_user_sys())
            .map(|((u0, s0), (u1, s1))| (u1.saturating_sub(u0), s1.saturating_sub(s0)));
        let mut report = FwdReport {
            cpu,
            split,
            ..FwdReport::default()
        };
        match running {
            Running::Relay(bridges) => {
                for b in &bridges {
                    match b.stats().await {
                        Some(s) => {
                            let refused = s.a.dropped + s.b.dropped;
                            report.forwarded +=
                                s.a.packets + s.b.packets + s.a.unvalidated + s.b.unvalidated;
                            report.refused += refused;
                            report.probation += s.a.unvalidated + s.b.unvalidated;
                        }
                        None => report.silent += 1,
                    }
                }
            }
            Running::Plain { tasks, count } => {
                for t in &tasks {
                    t.abort();
                }
                report.forwarded = count.load(Ordering::Relaxed);
            }
        }
        Ok(report)
    })
}

fn start_forwarder(
    kind: Kind,
    uas: &[SocketAddr],
    timeout: Duration,
) -> anyhow::Result<(Vec<u16>, Running)> {
    let alloc = PortAllocator::new(LO, PortRange::new(PORTS.0, PORTS.1)?);
    let mut ports = Vec::with_capacity(uas.len());
    let mut bridges = Vec::new();
    let mut tasks = Vec::new();
    let count = Arc::new(AtomicU64::new(0));
    let leg = |ua: SocketAddr| LegConfig {
        remote: Some(ua),
        latch: Latch::FirstSource,
        clock_rate: CLOCK_RATE,
        srtp: None,
        media: None,
        hold: false,
    };
    for pair in uas.chunks_exact(2) {
        let &[ua_a, ua_b] = pair else { continue };
        let a = alloc.allocate().context("allocating relay ports")?;
        let b = alloc.allocate().context("allocating relay ports")?;
        ports.extend([a.port, b.port]);
        match kind {
            Kind::Relay => bridges.push(Bridge::start(a, leg(ua_a), b, leg(ua_b), timeout)?),
            Kind::Plain => {
                let (a, b) = (Arc::new(a), Arc::new(b));
                tasks.push(tokio::spawn(plain(
                    a.clone(),
                    b.clone(),
                    ua_b,
                    count.clone(),
                )));
                tasks.push(tokio::spawn(plain(b, a, ua_a, count.clone())));
            }
        }
    }
    let running = match kind {
        Kind::Relay => Running::Relay(bridges),
        Kind::Plain => Running::Plain { tasks, count },
    };
    Ok((ports, running))
}

/// The baseline: every datagram from `from`'s RTP port goes out of `to`'s to `dst`, with no
/// validation, latching or statistics (one counter, for the measurement).
async fn plain(from: Arc<RtpPair>, to: Arc<RtpPair>, dst: SocketAddr, count: Arc<AtomicU64>) {
    let mut buf = [0u8; 2048];
    loop {
        match from.rtp.recv_from(&mut buf).await {
            Ok((n, _)) => {
                let _ = to.rtp.try_send_to(buf.get(..n).unwrap_or_default(), dst);
                count.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(_) => return,
        }
    }
}

// ---- the sender thread ----

#[derive(Debug, Clone, Copy)]
struct Pace {
    pps: u32,
    seconds: u64,
    go: Instant,
}

#[derive(Debug)]
struct SendReport {
    /// Packets sent per flow.
    sent: Vec<u64>,
    errors: u64,
    /// From the first scheduled send to the end of sending.
    wall: Duration,
    cpu: Duration,
}

fn ssrc(flow: usize) -> u32 {
    0x5254_0000 ^ (flow as u32)
}

pub(super) fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(d) = buf.get_mut(at..at + bytes.len()) {
        d.copy_from_slice(bytes);
    }
}

/// The pacing every bench sends with: packet `r` of flow `k` (of `n`) is due at
/// `go + r/pps + k/(n·pps)`, so sends are spread evenly over the packet interval, and
/// `send(k, r)` is called when it is. A late sender catches up; nothing due at or after
/// `go + seconds` is sent, and nothing at all after half as long again (an overloaded machine
/// stays bounded in time).
pub(super) fn pace_flows(
    n: usize,
    go: Instant,
    seconds: u64,
    pps: u32,
    stop: &AtomicBool,
    mut send: impl FnMut(usize, u64),
) {
    let n = n.max(1) as u64;
    let interval_ns = 1_000_000_000 / u64::from(pps.max(1));
    let end = go + Duration::from_secs(seconds);
    let hard_end = end + Duration::from_secs(seconds.div_ceil(2));
    let mut slot: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let (round, k) = (slot / n, slot % n);
        let due = go + Duration::from_nanos(round * interval_ns + k * interval_ns / n);
        if due >= end {
            break;
        }
        let now = Instant::now();
        if now >= hard_end {
            break;
        }
        if due > now {
            std::thread::sleep(due - now);
            continue;
        }
        slot += 1;
        send(k as usize, round);
    }
}

/// The RTP header of packet `round` of `flow` (PCMU; marker on the first; the flow's SSRC).
pub(super) fn rtp_header(buf: &mut [u8], flow: usize, round: u64, ts_step: u32) {
    let seq = (flow as u16).wrapping_mul(1000).wrapping_add(round as u16);
    let ts = (flow as u32)
        .wrapping_mul(100_000)
        .wrapping_add((round as u32).wrapping_mul(ts_step));
    let marker = if round == 0 { 0x80 } else { 0 };
    put(buf, 0, &[0x80, marker]); // V=2, PT 0 (PCMU)
    put(buf, 2, &seq.to_be_bytes());
    put(buf, 4, &ts.to_be_bytes());
    put(buf, 8, &ssrc(flow).to_be_bytes());
}

/// Sends every flow at `pace.pps` for `pace.seconds` ([`pace_flows`]), each packet carrying
/// its send time.
fn sender(
    targets: Vec<(std::net::UdpSocket, SocketAddr)>,
    pace: Pace,
    origin: Instant,
    stop: &AtomicBool,
) -> SendReport {
    let ts_step = CLOCK_RATE / pace.pps.max(1);
    let mut sent = vec![0u64; targets.len()];
    let mut errors = 0;
    let mut buf = [0xffu8; PACKET];
    let cpu0 = thread_cpu();
    pace_flows(
        targets.len(),
        pace.go,
        pace.seconds,
        pace.pps,
        stop,
        |flow, round| {
            let (Some((sock, dst)), Some(count)) = (targets.get(flow), sent.get_mut(flow)) else {
                return;
            };
            rtp_header(&mut buf, flow, round, ts_step);
            let t = u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
            put(&mut buf, HEADER, &t.to_be_bytes());
            match sock.send_to(&buf, dst) {
                Ok(_) => *count += 1,
                Err(_) => errors += 1,
            }
        },
    );
    SendReport {
        sent,
        errors,
        wall: Instant::now().saturating_duration_since(pace.go),
        cpu: thread_cpu().saturating_sub(cpu0),
    }
}

// ---- the sink thread ----

#[derive(Debug)]
struct SinkReport {
    /// Packets received per flow.
    received: Vec<u64>,
    /// Sequence numbers skipped (packets missing between received ones).
    gaps: u64,
    /// Packets whose SSRC is not the flow expected on that socket.
    foreign: u64,
    latency: Hist,
    cpu: Duration,
}

#[derive(Debug)]
struct SinkState {
    received: Vec<u64>,
    last_seq: Vec<Option<u16>>,
    gaps: u64,
    foreign: u64,
    latency: Hist,
}

fn be_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

impl SinkState {
    fn packet(&mut self, flow: usize, pkt: &[u8], now_ns: u64) {
        let (Some(seq), Some(src), Some(sent_ns)) =
            (be_u16(pkt, 2), be_u32(pkt, 8), be_u64(pkt, HEADER))
        else {
            self.foreign += 1;
            return;
        };
        let (Some(count), Some(last)) = (self.received.get_mut(flow), self.last_seq.get_mut(flow))
        else {
            return;
        };
        if src != ssrc(flow) {
            self.foreign += 1;
            return;
        }
        *count += 1;
        match *last {
            None => *last = Some(seq),
            Some(l) => {
                let d = seq.wrapping_sub(l);
                if (1..0x8000).contains(&d) {
                    self.gaps += u64::from(d - 1);
                    *last = Some(seq);
                }
            }
        }
        self.latency.record(now_ns.saturating_sub(sent_ns));
    }
}

async fn sink_one(
    sock: tokio::net::UdpSocket,
    flow: usize,
    state: Rc<RefCell<SinkState>>,
    origin: Instant,
    progress: Arc<AtomicU64>,
) {
    let mut buf = [0u8; 2048];
    loop {
        match sock.recv(&mut buf).await {
            Ok(n) => {
                let now = u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
                state
                    .borrow_mut()
                    .packet(flow, buf.get(..n).unwrap_or_default(), now);
                progress.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(_) => return,
        }
    }
}

/// The sink's own thread and runtime: UA socket `j` receives flow `j ^ 1`.
fn sink(
    ua: Vec<std::net::UdpSocket>,
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
        let flows = ua.len();
        let state = Rc::new(RefCell::new(SinkState {
            received: vec![0; flows],
            last_seq: vec![None; flows],
            gaps: 0,
            foreign: 0,
            latency: Hist::new(),
        }));
        let mut tasks = Vec::with_capacity(flows);
        for (j, s) in ua.into_iter().enumerate() {
            let sock = tokio::net::UdpSocket::from_std(s)?;
            tasks.push(tokio::task::spawn_local(sink_one(
                sock,
                j ^ 1,
                state.clone(),
                origin,
                progress.clone(),
            )));
        }
        let t0 = thread_cpu();
        if ready.send(()).is_err() {
            return Err(anyhow!("the bench gave up"));
        }
        let _ = stop.await;
        let cpu = thread_cpu().saturating_sub(t0);
        for t in &tasks {
            t.abort();
        }
        drop(tasks);
        let s = state.replace(SinkState {
            received: Vec::new(),
            last_seq: Vec::new(),
            gaps: 0,
            foreign: 0,
            latency: Hist::new(),
        });
        Ok(SinkReport {
            received: s.received,
            gaps: s.gaps,
            foreign: s.foreign,
            latency: s.latency,
            cpu,
        })
    })
}

// ---- latency histogram ----

/// Log-linear histogram of nanoseconds: exact below 1024, then 512 buckets per power of
/// two (within 0.2 %).
#[derive(Debug)]
struct Hist {
    buckets: Vec<u64>,
    count: u64,
    max: u64,
}

const LINEAR: u64 = 1024;
const SUB_BITS: u32 = 9;
const SUB: u64 = 1 << SUB_BITS;

impl Hist {
    fn new() -> Self {
        Hist {
            buckets: vec![0; Self::index(u64::MAX) + 1],
            count: 0,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < LINEAR {
            return v as usize;
        }
        let e = u64::from(63 - v.leading_zeros()); // >= 10
        let sub = (v >> (e - u64::from(SUB_BITS))) - SUB;
        (LINEAR + (e - 10) * SUB + sub) as usize
    }

    /// The smallest value of bucket `i`.
    fn lower(i: usize) -> u64 {
        let i = i as u64;
        if i < LINEAR {
            return i;
        }
        let (e, sub) = ((i - LINEAR) / SUB + 10, (i - LINEAR) % SUB);
        (SUB + sub) << (e - u64::from(SUB_BITS))
    }

    fn record(&mut self, v: u64) {
        if let Some(b) = self.buckets.get_mut(Self::index(v)) {
            *b += 1;
        }
        self.count += 1;
        self.max = self.max.max(v);
    }

    /// The value at quantile `q` (0 when empty).
    fn quantile(&self, q: f64) -> u64 {
        let rank = ((q * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &b) in self.buckets.iter().enumerate() {
            seen += b;
            if seen >= rank {
                return Self::lower(i).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_contiguous_and_tight() {
        for v in [
            0,
            1,
            1023,
            1024,
            1025,
            2047,
            2048,
            123_456,
            1 << 40,
            u64::MAX,
        ] {
            let i = Hist::index(v);
            assert!(Hist::lower(i) <= v, "{v}");
            if v < u64::MAX {
                assert!(Hist::lower(i + 1) > v, "{v}");
            }
            assert!((v - Hist::lower(i)) as f64 <= v as f64 * 0.002, "{v}");
        }
        let mut h = Hist::new();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5);
        assert!((499_000..=500_000).contains(&p50), "{p50}");
        assert_eq!(h.max, 1_000_000);
    }

    #[test]
    fn sink_counts_gaps_and_foreign_packets() {
        let mut s = SinkState {
            received: vec![0; 2],
            last_seq: vec![None; 2],
            gaps: 0,
            foreign: 0,
            latency: Hist::new(),
        };
        let pkt = |flow: usize, seq: u16| {
            let mut b = [0u8; PACKET];
            put(&mut b, 2, &seq.to_be_bytes());
            put(&mut b, 8, &ssrc(flow).to_be_bytes());
            put(&mut b, HEADER, &5u64.to_be_bytes());
            b
        };
        for seq in [65534, 65535, 1, 2] {
            s.packet(0, &pkt(0, seq), 10);
        }
        s.packet(1, &pkt(0, 7), 10);
        assert_eq!(s.received, vec![4, 0]);
        assert_eq!(s.gaps, 1, "0 is missing across the wrap");
        assert_eq!(s.foreign, 1);
        assert_eq!(s.latency.quantile(0.5), 5);
    }
}
