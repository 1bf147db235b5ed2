//! `bench chain --soak`: the chain kept under churning load for a long time, reporting what
//! would show a leak.
//!
//! `--calls` lines each keep one call up at a time: a line places its call (the lines' first
//! calls at `--cps`), the call carries PCMU 20 ms both ways for its hold time, the PBX phone
//! hangs up (BYE), and once the core phone has seen the call end the line places the next
//! one. Hold times are spread over 0.5–1.5 × `--hold` by the call's number (golden-ratio
//! steps), so calls end and are replaced continuously rather than in waves.
//!
//! Media: one sender thread paces two flows per line ([`crate::bench::pace_flows`]) and sends
//! on whichever call the line has up at that moment (nothing between calls); one sink thread
//! receives on the sockets of the calls up, added and removed as calls start and end. Loss is
//! counted per ended call (sent − received once the core phone has seen the BYE), so packets
//! still in flight at a report do not count as lost.
//!
//! Every `--report-every` seconds, one line: calls up, set up and failed so far, packets, RSS,
//! open descriptors, alive tokio tasks of each gateway runtime and of the main runtime
//! (`RuntimeMetrics::num_alive_tasks`), threads, and the gateways' own active-call gauges.
//! When the soak ends every call is hung up and the same figures are taken once both gateways
//! report no active call, and again once what outlives a call by design has run out (SIP
//! transactions, 64·T1; the RIPT server's 60 s retention of an ended call).
//!
//! The gateways keep their SQLite in files in the bench's temporary directory (set up by the
//! caller): in memory, every CDR would stay in RSS and look like a leak.

use super::{
    AT_FLOW, AT_INDEX, AT_TIME, Answered, ChainArgs, Flow, PACKET, PPS, TS_STEP, answer_all, place,
    rss_kib,
};
use crate::bench::{Hist, join, put, spawn};
use crate::demo::{self, Gateway, Phone};
use anyhow::{Context, anyhow, bail};
use ript_proto::call::RETENTION;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Wire indices (the called number's 7 digits, the payload's flow numbers) wrap here: far
/// more calls than can be up at once.
const INDEX_SPACE: u64 = 10_000_000;
/// How long a line waits for the core phone to see a call the PBX phone saw answered, and to
/// see the call's BYE through the chain.
const CORE_WAIT: Duration = Duration::from_secs(10);
/// A line whose setup failed places its next call after this (so a failing chain is not
/// flooded with retries).
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// UDP SIP transactions outlive their call by 64·T1 (RFC 3261 Timers D and J).
const SIP_TRANSACTIONS: Duration = Duration::from_secs(32);
/// What outlives the last call by design: the SIP transactions, and each ended call the RIPT
/// server keeps (with its task) for `RETENTION` (60 s, ript-profile §2). The figures are
/// taken again once both are over, and a second.
const LINGER: Duration = Duration::from_secs(
    if SIP_TRANSACTIONS.as_secs() > RETENTION.as_secs() {
        SIP_TRANSACTIONS.as_secs()
    } else {
        RETENTION.as_secs()
    } + 1,
);
/// How long the gateways get to report no active call once every line has hung up.
const QUIESCE_MAX: Duration = Duration::from_secs(30);
/// After its deadline the sender would stop on its own: a margin past the soak's end for
/// the lines to hang up (they stop sending first).
const SENDER_MARGIN: u64 = 120;

/// The golden ratio's fractional part: `n·φ mod 1` is spread evenly over [0, 1) for any run
/// of consecutive `n`.
const PHI_FRACTION: f64 = 0.618_033_988_749_895;

/// How long call `n` is held: 0.5–1.5 × `mean`, by the call's number (deterministic).
fn hold_of(n: u64, mean: Duration) -> Duration {
    mean.mul_f64(0.5 + (n as f64 * PHI_FRACTION).fract())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The runtimes whose alive tasks are counted: (customer, provider).
pub(super) type Runtimes<'a> = (&'a tokio::runtime::Handle, &'a tokio::runtime::Handle);

/// What a leak would show, at one moment.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Since the soak's first INVITE.
    at: Duration,
    rss_kib: u64,
    fds: u64,
    threads: u64,
    /// Alive tasks: customer runtime, provider runtime, main runtime (phones and bench).
    tasks: [usize; 3],
}

impl Sample {
    fn take(runtimes: Runtimes<'_>, t0: Instant) -> Sample {
        let alive = |rt: &tokio::runtime::Handle| rt.metrics().num_alive_tasks();
        Sample {
            at: t0.elapsed(),
            rss_kib: rss_kib(),
            fds: open_fds(),
            threads: status_field("Threads:").unwrap_or(0),
            tasks: [
                alive(runtimes.0),
                alive(runtimes.1),
                alive(&tokio::runtime::Handle::current()),
            ],
        }
    }

    fn figures(&self) -> String {
        let [customer, provider, main] = self.tasks;
        format!(
            "rss KiB {}, fds {}, tasks customer {customer} provider {provider} main {main}, threads {}",
            self.rss_kib, self.fds, self.threads
        )
    }

    /// `self − earlier`, signed, as one line.
    fn growth_since(&self, earlier: &Sample) -> String {
        let d = |a: u64, b: u64| i128::from(a) - i128::from(b);
        let t = |a: usize, b: usize| a as i128 - b as i128;
        let [c1, p1, m1] = self.tasks;
        let [c0, p0, m0] = earlier.tasks;
        format!(
            "rss KiB {:+}, fds {:+}, tasks customer {:+} provider {:+} main {:+}, threads {:+}",
            d(self.rss_kib, earlier.rss_kib),
            d(self.fds, earlier.fds),
            t(c1, c0),
            t(p1, p0),
            t(m1, m0),
            d(self.threads, earlier.threads)
        )
    }
}

/// Open descriptors of this process.
fn open_fds() -> u64 {
    // The directory being read is itself one open descriptor.
    std::fs::read_dir("/proc/self/fd")
        .map_or(0, |d| d.count() as u64)
        .saturating_sub(1)
}

/// A number field of /proc/self/status (`VmRSS:` in KiB, `Threads:`…).
pub(super) fn status_field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The gateway's own `gateway_calls_active` gauge.
async fn calls_active(gw: &Gateway) -> Option<u64> {
    let text = gw.metrics().await.ok()?;
    let v: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("gateway_calls_active "))?
        .trim()
        .parse()
        .ok()?;
    Some(v as u64)
}

/// Counters shared by the lines, the sender and the reports.
#[derive(Debug)]
struct Totals {
    up: AtomicU64,
    set_up: AtomicU64,
    failed: AtomicU64,
    failures: Mutex<BTreeMap<String, u64>>,
    /// INVITE → 200 at the PBX phone, ns.
    setup: Mutex<Hist>,
    /// Calls whose end the core phone did not see within `CORE_WAIT` of the BYE.
    unseen_byes: AtomicU64,
    /// Packets sent, every call, per direction (0: pbx → core, 1: core → pbx).
    sent: [AtomicU64; 2],
    send_errors: AtomicU64,
    /// Of the ended calls: packets sent and received per direction.
    ended_sent: [AtomicU64; 2],
    ended_received: [AtomicU64; 2],
}

impl Totals {
    fn new() -> Self {
        Totals {
            up: AtomicU64::new(0),
            set_up: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            failures: Mutex::new(BTreeMap::new()),
            setup: Mutex::new(Hist::new()),
            unseen_byes: AtomicU64::new(0),
            sent: [AtomicU64::new(0), AtomicU64::new(0)],
            send_errors: AtomicU64::new(0),
            ended_sent: [AtomicU64::new(0), AtomicU64::new(0)],
            ended_received: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    fn fail(&self, e: &anyhow::Error) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let why = format!("{e:#}")
            .split(": ")
            .last()
            .unwrap_or("?")
            .to_owned();
        *lock(&self.failures).entry(why).or_default() += 1;
    }

    fn sum(counters: &[AtomicU64; 2]) -> u64 {
        counters.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// The call a line has up: where the sender sends its two flows.
struct Live {
    index: u32,
    /// Direction 0: from the PBX phone's socket to the customer; 1: from the core phone's
    /// socket to the provider.
    flows: [Flow; 2],
    /// Packets sent per direction (also each flow's next packet index).
    sent: [u64; 2],
}

/// One line's call, between the sender thread and the line's task.
type Line = Mutex<Option<Live>>;

/// A line waiting for its call to show up at the core phone, then to end there.
struct Waiter {
    answered: Option<oneshot::Sender<Answered>>,
    ended: oneshot::Sender<()>,
}

type Waiters = Mutex<HashMap<u32, Waiter>>;

/// Hands the core phone's answered and ended calls to the lines waiting for them.
async fn dispatch(
    waiters: Arc<Waiters>,
    mut answered: mpsc::UnboundedReceiver<Answered>,
    mut ended: mpsc::UnboundedReceiver<Option<u32>>,
) {
    loop {
        tokio::select! {
            // A call's answer is sent before its end: taken first, it is never dropped for a
            // waiter its end already removed.
            biased;
            Some(a) = answered.recv() => {
                let to = lock(&waiters).get_mut(&a.index).and_then(|w| w.answered.take());
                if let Some(to) = to {
                    let _ = to.send(a);
                }
            }
            Some(index) = ended.recv() => {
                if let Some(w) = index.and_then(|i| lock(&waiters).remove(&i)) {
                    let _ = w.ended.send(());
                }
            }
            else => return,
        }
    }
}

/// What the lines share.
struct Ctx {
    caller: sip_ua::Caller,
    pbx_sip: SocketAddr,
    customer_sip: SocketAddr,
    hold: Duration,
    lines: Arc<Vec<Line>>,
    waiters: Arc<Waiters>,
    sink: mpsc::UnboundedSender<SinkCmd>,
    totals: Arc<Totals>,
    next_call: AtomicU64,
}

/// Line `slot`: from `first` until the soak ends, one call after another.
async fn line(ctx: Arc<Ctx>, slot: usize, first: Instant, mut end: watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep_until(first.into()) => {}
        _ = end.wait_for(|&e| e) => return,
    }
    while !*end.borrow() {
        let n = ctx.next_call.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = call_once(&ctx, slot, n, &mut end).await {
            ctx.totals.fail(&e);
            tokio::select! {
                _ = tokio::time::sleep(RETRY_PAUSE) => {}
                _ = end.wait_for(|&e| e) => return,
            }
        }
    }
}

/// Call `n` on line `slot`: set up, media for its hold time (or until the soak ends), BYE.
/// An error is a failed setup; once the call is up it is always hung up and accounted.
async fn call_once(
    ctx: &Ctx,
    slot: usize,
    n: u64,
    end: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let index = u32::try_from(n % INDEX_SPACE).unwrap_or(0);
    let (answered_tx, answered_rx) = oneshot::channel();
    let (ended_tx, ended_rx) = oneshot::channel();
    lock(&ctx.waiters).insert(
        index,
        Waiter {
            answered: Some(answered_tx),
            ended: ended_tx,
        },
    );
    let r = up_and_down(ctx, slot, n, index, (answered_rx, ended_rx), end).await;
    // Whatever the dispatcher did not take (a failed setup, an unseen BYE).
    lock(&ctx.waiters).remove(&index);
    r
}

async fn up_and_down(
    ctx: &Ctx,
    slot: usize,
    n: u64,
    index: u32,
    (answered, ended): (oneshot::Receiver<Answered>, oneshot::Receiver<()>),
    end: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let placed = place(ctx.caller.clone(), ctx.pbx_sip, ctx.customer_sip, index).await?;
    let setup_ns = u64::try_from(placed.setup.as_nanos()).unwrap_or(u64::MAX);
    lock(&ctx.totals.setup).record(setup_ns);
    let core = match tokio::time::timeout(CORE_WAIT, answered).await {
        Ok(Ok(core)) => core,
        _ => {
            let _ = placed.bye.send(());
            bail!("answered at the PBX but never seen at the core");
        }
    };
    let clones = placed
        .sock
        .try_clone()
        .and_then(|p| Ok((p, core.sock.try_clone()?)));
    let (pbx_tx, core_tx) = match clones {
        Ok(c) => c,
        Err(e) => {
            let _ = placed.bye.send(());
            return Err(e).context("cloning the call's sockets");
        }
    };
    let added = ctx.sink.send(SinkCmd::Add {
        index,
        pbx: placed.sock,
        core: core.sock,
    });
    if added.is_err() {
        let _ = placed.bye.send(());
        bail!("the sink has ended");
    }
    let line = ctx
        .lines
        .get(slot)
        .ok_or_else(|| anyhow!("no line {slot}"))?;
    *lock(line) = Some(Live {
        index,
        flows: [(pbx_tx, placed.to_gateway), (core_tx, core.to_gateway)],
        sent: [0; 2],
    });
    let totals = &ctx.totals;
    totals.set_up.fetch_add(1, Ordering::Relaxed);
    totals.up.fetch_add(1, Ordering::Relaxed);

    let hang_up = Instant::now() + hold_of(n, ctx.hold);
    tokio::select! {
        _ = tokio::time::sleep_until(hang_up.into()) => {}
        _ = end.wait_for(|&e| e) => {}
    }
    // No packet of this call is sent once it is taken off the line (the sender sends under
    // the line's lock), so what was sent before the BYE is all there is to receive.
    let sent = lock(line).take().map_or([0; 2], |l| l.sent);
    let _ = placed.bye.send(());
    let seen = matches!(tokio::time::timeout(CORE_WAIT, ended).await, Ok(Ok(())));
    if !seen {
        totals.unseen_byes.fetch_add(1, Ordering::Relaxed);
    }
    let (tx, rx) = oneshot::channel();
    let received = if ctx
        .sink
        .send(SinkCmd::Remove {
            index,
            received: tx,
        })
        .is_ok()
    {
        rx.await.unwrap_or([0; 2])
    } else {
        [0; 2]
    };
    for ((s, r), (ts, tr)) in sent
        .iter()
        .zip(&received)
        .zip(totals.ended_sent.iter().zip(&totals.ended_received))
    {
        ts.fetch_add(*s, Ordering::Relaxed);
        tr.fetch_add(*r, Ordering::Relaxed);
    }
    totals.up.fetch_sub(1, Ordering::Relaxed);
    Ok(())
}

// ---- the sender thread ----

/// Paces two flows per line at 50 packets/s ([`crate::bench::pace_flows`]) and sends each
/// packet on the call the line has up then, if any. The packet index and RTP sequence start
/// at 0 with each call; the flow number in the payload is `index·2 + direction`.
fn sender(
    lines: &[Line],
    go: Instant,
    seconds: u64,
    origin: Instant,
    stop: &AtomicBool,
    totals: &Totals,
) {
    // PCMU silence (0xff) after the marks.
    let mut buf = [0xffu8; PACKET];
    let pps = u32::try_from(PPS).unwrap_or(50);
    crate::bench::pace_flows(lines.len() * 2, go, seconds, pps, stop, |k, _| {
        let (Some(line), dir) = (lines.get(k / 2), k % 2) else {
            return;
        };
        let mut line = lock(line);
        let Some(live) = line.as_mut() else {
            return;
        };
        let flow = live.index as usize * 2 + dir;
        let (Some((sock, dst)), Some(count), Some(total)) = (
            live.flows.get(dir),
            live.sent.get_mut(dir),
            totals.sent.get(dir),
        ) else {
            return;
        };
        crate::bench::rtp_header(&mut buf, flow, *count, TS_STEP);
        let t = u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        put(&mut buf, AT_TIME, &t.to_be_bytes());
        put(&mut buf, AT_FLOW, &(flow as u32).to_be_bytes());
        put(&mut buf, AT_INDEX, &(*count as u32).to_be_bytes());
        match sock.send_to(&buf, *dst) {
            Ok(_) => {
                *count += 1;
                total.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                totals.send_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
}

// ---- the sink thread ----

/// The sink's orders: receive a new call's media, or stop and tell what was received.
enum SinkCmd {
    Add {
        index: u32,
        pbx: std::net::UdpSocket,
        core: std::net::UdpSocket,
    },
    Remove {
        index: u32,
        received: oneshot::Sender<[u64; 2]>,
    },
}

#[derive(Debug)]
struct SinkState {
    /// Packets received per call up, per direction.
    calls: HashMap<u32, [u64; 2]>,
    latency: [Hist; 2],
    /// Packets without this call's flow number where its marks are.
    unreadable: u64,
}

impl SinkState {
    fn packet(&mut self, index: u32, dir: usize, pkt: &[u8], now_ns: u64) {
        let field = |at: usize, len: usize| pkt.get(at..at + len);
        let (Some(t), Some(f)) = (
            field(AT_TIME, 8).and_then(|b| b.try_into().ok().map(u64::from_be_bytes)),
            field(AT_FLOW, 4).and_then(|b| b.try_into().ok().map(u32::from_be_bytes)),
        ) else {
            self.unreadable += 1;
            return;
        };
        if f as usize != index as usize * 2 + dir {
            self.unreadable += 1;
            return;
        }
        if let Some(c) = self.calls.get_mut(&index).and_then(|c| c.get_mut(dir)) {
            *c += 1;
        }
        if let Some(h) = self.latency.get_mut(dir) {
            h.record(now_ns.saturating_sub(t));
        }
    }
}

#[derive(Debug)]
struct SinkReport {
    latency: [Hist; 2],
    unreadable: u64,
    /// Calls whose sockets could not be registered with the sink's runtime.
    refused: u64,
}

async fn receive(
    sock: tokio::net::UdpSocket,
    index: u32,
    dir: usize,
    state: Rc<RefCell<SinkState>>,
    origin: Instant,
) {
    let mut buf = [0u8; 2048];
    loop {
        match sock.recv(&mut buf).await {
            Ok(n) => {
                let now = u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
                state
                    .borrow_mut()
                    .packet(index, dir, buf.get(..n).unwrap_or_default(), now);
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(_) => return,
        }
    }
}

/// The sink's own thread and runtime, until every sender of orders is gone.
fn sink(mut cmds: mpsc::UnboundedReceiver<SinkCmd>, origin: Instant) -> anyhow::Result<SinkReport> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the sink runtime")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let state = Rc::new(RefCell::new(SinkState {
            calls: HashMap::new(),
            latency: [Hist::new(), Hist::new()],
            unreadable: 0,
        }));
        let mut refused = 0;
        let mut tasks: HashMap<u32, [tokio::task::JoinHandle<()>; 2]> = HashMap::new();
        let receiving = |sock: std::net::UdpSocket, index: u32, dir: usize| {
            let sock = tokio::net::UdpSocket::from_std(sock)?;
            std::io::Result::Ok(tokio::task::spawn_local(receive(
                sock,
                index,
                dir,
                state.clone(),
                origin,
            )))
        };
        while let Some(cmd) = cmds.recv().await {
            match cmd {
                SinkCmd::Add { index, pbx, core } => {
                    state.borrow_mut().calls.insert(index, [0; 2]);
                    // The core phone's socket receives direction 0 (pbx → core), the PBX
                    // phone's direction 1.
                    match (receiving(core, index, 0), receiving(pbx, index, 1)) {
                        (Ok(a), Ok(b)) => {
                            tasks.insert(index, [a, b]);
                        }
                        (a, b) => {
                            for t in [a, b].into_iter().flatten() {
                                t.abort();
                            }
                            refused += 1;
                        }
                    }
                }
                SinkCmd::Remove { index, received } => {
                    for t in tasks.remove(&index).into_iter().flatten() {
                        t.abort();
                    }
                    let r = state.borrow_mut().calls.remove(&index).unwrap_or_default();
                    let _ = received.send(r);
                }
            }
        }
        for t in tasks.into_values().flatten() {
            t.abort();
        }
        let s = state.replace(SinkState {
            calls: HashMap::new(),
            latency: [Hist::new(), Hist::new()],
            unreadable: 0,
        });
        Ok(SinkReport {
            latency: s.latency,
            unreadable: s.unreadable,
            refused,
        })
    })
}

// ---- the soak ----

fn interval_line(s: &Sample, totals: &Totals, active: (Option<u64>, Option<u64>)) -> String {
    let sent = Totals::sum(&totals.sent);
    let ended_sent = Totals::sum(&totals.ended_sent);
    let lost = ended_sent.saturating_sub(Totals::sum(&totals.ended_received));
    let gauge = |v: Option<u64>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
    format!(
        "t {} s: calls up {}, set up {}, failed {}; packets sent {sent}, lost {lost} of {ended_sent} on ended calls ({:.3} %); {}; gateway calls active customer {} provider {}",
        s.at.as_secs(),
        totals.up.load(Ordering::Relaxed),
        totals.set_up.load(Ordering::Relaxed),
        totals.failed.load(Ordering::Relaxed),
        lost as f64 * 100.0 / ended_sent.max(1) as f64,
        s.figures(),
        gauge(active.0),
        gauge(active.1),
    )
}

/// Keeps `a.calls` calls up through the chain for `seconds`, reporting every
/// `a.report_every` seconds; then hangs up and reports what is left.
#[allow(clippy::too_many_arguments)]
pub(super) async fn soak(
    a: &ChainArgs,
    seconds: u64,
    mode: &str,
    provider: &Gateway,
    customer: &Gateway,
    runtimes: Runtimes<'_>,
    origin: Instant,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let pbx = Phone::with_sip_rate("pbx", a.sip_rate).await?;
    let core = Phone::with_sip_rate("core", a.sip_rate).await?;
    let (pbx_sip, core_sip) = (pbx.sip, core.sip);
    let customer_sip = demo::configure(provider, customer, pbx_sip, core_sip, mode, |_| {}).await?;
    let (answered_tx, answered_rx) = mpsc::unbounded_channel();
    let (ended_tx, ended_rx) = mpsc::unbounded_channel();
    let answering = tokio::spawn(answer_all(core, answered_tx, ended_tx));
    let waiters = Arc::new(Waiters::default());
    let dispatching = tokio::spawn(dispatch(waiters.clone(), answered_rx, ended_rx));

    let hold = Duration::from_secs(a.hold);
    say!(
        "== soak: {} calls kept up for {seconds} s, each held {}-{} s ({} s mean) then replaced, reports every {} s ==",
        a.calls,
        hold.mul_f64(0.5).as_secs_f64(),
        hold.mul_f64(1.5).as_secs_f64(),
        a.hold,
        a.report_every
    );
    let before = Sample::take(runtimes, Instant::now());
    say!("before calls: {}", before.figures());

    let totals = Arc::new(Totals::new());
    let lines: Arc<Vec<Line>> = Arc::new((0..a.calls).map(|_| Mutex::new(None)).collect());
    let (sink_tx, sink_rx) = mpsc::unbounded_channel();
    let sink = spawn("bench-sink", move || sink(sink_rx, origin))?;
    let sender_stop = Arc::new(AtomicBool::new(false));
    let sending = {
        let (lines, totals, sender_stop) = (lines.clone(), totals.clone(), sender_stop.clone());
        let go = Instant::now() + Duration::from_millis(20);
        spawn("bench-sender", move || {
            sender(
                &lines,
                go,
                seconds + SENDER_MARGIN,
                origin,
                &sender_stop,
                &totals,
            )
        })?
    };
    let ctx = Arc::new(Ctx {
        caller: pbx.ua.caller(),
        pbx_sip,
        customer_sip,
        hold,
        lines,
        waiters,
        sink: sink_tx,
        totals: totals.clone(),
        next_call: AtomicU64::new(0),
    });
    let (end_tx, end_rx) = watch::channel(false);
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..a.calls)
        .map(|slot| {
            let first = t0 + Duration::from_secs_f64(f64::from(slot) / f64::from(a.cps));
            tokio::spawn(line(ctx.clone(), slot as usize, first, end_rx.clone()))
        })
        .collect();
    drop(ctx);

    // Reports at every interval and one at the end.
    let soak_end = t0 + Duration::from_secs(seconds);
    let every = Duration::from_secs(a.report_every);
    let mut reports = Vec::new();
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    let mut k = 1u32;
    loop {
        let due = (t0 + every * k).min(soak_end);
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            _ = &mut interrupted => {
                stop.store(true, Ordering::Relaxed);
            }
        }
        let s = Sample::take(runtimes, t0);
        let active = (calls_active(customer).await, calls_active(provider).await);
        say!("{}", interval_line(&s, &totals, active));
        reports.push(s);
        if due >= soak_end || stop.load(Ordering::Relaxed) {
            break;
        }
        k += 1;
    }

    // Hang up: every line ends its call (or its setup) and stops.
    let _ = end_tx.send(true);
    let hang_up = Instant::now();
    for t in tasks {
        let _ = t.await;
    }
    sender_stop.store(true, Ordering::Relaxed);
    join(sending).await?;
    // The lines held the last senders of the sink's orders: it ends.
    let sunk = join(sink).await??;
    let mut quiet = false;
    while hang_up.elapsed() < QUIESCE_MAX {
        if calls_active(customer).await == Some(0) && calls_active(provider).await == Some(0) {
            quiet = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = Sample::take(runtimes, t0);
    let hung_up_in = hang_up.elapsed();
    tokio::time::sleep(LINGER).await;
    let lingered = Sample::take(runtimes, t0);
    answering.abort();
    dispatching.abort();

    summary(
        &totals,
        &sunk,
        &reports,
        (&before, &after, &lingered),
        quiet,
        hung_up_in,
    );
    Ok(())
}

fn summary(
    totals: &Totals,
    sunk: &SinkReport,
    reports: &[Sample],
    (before, after, lingered): (&Sample, &Sample, &Sample),
    quiet: bool,
    hung_up_in: Duration,
) {
    let ms = |ns: u64| ns as f64 / 1e6;
    let us = |ns: u64| ns as f64 / 1e3;
    say!("== soak: calls ==");
    let set_up = totals.set_up.load(Ordering::Relaxed);
    say!(
        "calls set up: {set_up}, failed setups: {}, calls whose BYE the core phone did not see: {}",
        totals.failed.load(Ordering::Relaxed),
        totals.unseen_byes.load(Ordering::Relaxed)
    );
    for (why, n) in lock(&totals.failures).iter() {
        say!("  {n} x {why}");
    }
    {
        let h = lock(&totals.setup);
        say!(
            "setup ms (INVITE -> 200 at the UAC): p50 {:.2} p99 {:.2} max {:.2}",
            ms(h.quantile(0.5)),
            ms(h.quantile(0.99)),
            ms(h.max)
        );
    }
    let dirs = ["pbx -> core", "core -> pbx"];
    for (((name, s), r), h) in dirs
        .iter()
        .zip(&totals.ended_sent)
        .zip(&totals.ended_received)
        .zip(&sunk.latency)
    {
        let (s, r) = (s.load(Ordering::Relaxed), r.load(Ordering::Relaxed));
        let lost = s.saturating_sub(r);
        say!(
            "{name}: sent packets {s}, received {r}, loss % {:.3} ({lost} lost); latency us p50 {:.1} p99 {:.1} p99.9 {:.1} max {:.1}",
            lost as f64 * 100.0 / s.max(1) as f64,
            us(h.quantile(0.5)),
            us(h.quantile(0.99)),
            us(h.quantile(0.999)),
            us(h.max)
        );
    }
    if sunk.unreadable > 0 || sunk.refused > 0 || totals.send_errors.load(Ordering::Relaxed) > 0 {
        say!(
            "anomalies: {} packets without their call's marks, {} calls the sink could not receive, {} send errors",
            sunk.unreadable,
            sunk.refused,
            totals.send_errors.load(Ordering::Relaxed)
        );
    }
    say!("== soak: resources ==");
    say!("before calls: {}", before.figures());
    if let (Some(first), Some(last)) = (reports.first(), reports.last()) {
        say!(
            "first report (t {} s): {}",
            first.at.as_secs(),
            first.figures()
        );
        // The first interval includes the ramp-up and warm-up (pools, caches, allocator
        // arenas): growth is measured from the second report when there is one. The provider's
        // tasks grow until the first calls' RETENTION is over, then plateau.
        let from = reports
            .get(1)
            .filter(|_| reports.len() > 2)
            .unwrap_or(first);
        if !std::ptr::eq(from, first) {
            say!(
                "second report (t {} s): {}",
                from.at.as_secs(),
                from.figures()
            );
        }
        say!(
            "last report (t {} s): {}",
            last.at.as_secs(),
            last.figures()
        );
        let span = last.at.saturating_sub(from.at).as_secs_f64();
        if from.at < RETENTION {
            say!(
                "(the RIPT server keeps each ended call and its task {} s: task counts plateau only after that)",
                RETENTION.as_secs()
            );
        }
        say!(
            "growth last - {} report over {span:.0} s: {}{}",
            if std::ptr::eq(from, first) {
                "first"
            } else {
                "second"
            },
            last.growth_since(from),
            if span > 0.0 {
                format!(
                    " (rss {:+.0} KiB/h)",
                    (last.rss_kib as f64 - from.rss_kib as f64) * 3600.0 / span
                )
            } else {
                String::new()
            }
        );
        // Warm-up growth slows down, a leak's does not: the last interval tells them apart
        // better than the average.
        if let [.., previous, last] = reports
            && reports.len() > 2
        {
            let span = last.at.saturating_sub(previous.at).as_secs_f64().max(1e-9);
            say!(
                "growth over the last interval ({span:.0} s): {} (rss {:+.0} KiB/h)",
                last.growth_since(previous),
                (last.rss_kib as f64 - previous.rss_kib as f64) * 3600.0 / span
            );
        }
    }
    say!(
        "after all calls ended ({}, {:.1} s after the hang-up): {}",
        if quiet {
            "both gateways report 0 active calls"
        } else {
            "the gateways still report active calls"
        },
        hung_up_in.as_secs_f64(),
        after.figures()
    );
    say!(
        "after the SIP transactions and the RIPT retention ({} s later): {}",
        LINGER.as_secs(),
        lingered.figures()
    );
    say!(
        "after the retention - before calls: {}",
        lingered.growth_since(before)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_are_spread_around_the_mean() {
        let mean = Duration::from_secs(30);
        let holds: Vec<Duration> = (0..1000).map(|n| hold_of(n, mean)).collect();
        assert!(
            holds
                .iter()
                .all(|h| (15.0..45.0).contains(&h.as_secs_f64()))
        );
        let avg = holds.iter().map(Duration::as_secs_f64).sum::<f64>() / 1000.0;
        assert!((avg - 30.0).abs() < 0.5, "{avg}");
        // Consecutive calls do not end together.
        assert!(holds.windows(2).all(|w| w[0] != w[1]));
    }
}
