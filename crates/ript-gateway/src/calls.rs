//! The call-mapping shell: one task per call owns its [`call_core::Call`], feeds it what the
//! SIP leg (a `sip_ua::Call`) and the RIPT leg (an `ript_h3` client or server call) report,
//! and carries out the actions it returns. SDP and media stay here: the SIP peer's offer is
//! answered (or our offer built) with the peer's codecs, and [`crate::media::CallMedia`]
//! bridges RTP and RIPT chunks in whatever codecs the two sides chose.
//!
//! Every call runs in a `call` span carrying its id, so one grep follows it across SIP and
//! RIPT; numbers stay out of info-level logs.
//!
//! A call's future lives as long as the call, and is as large as the largest future it
//! awaits in place, for its whole life; an async function's future also holds its arguments
//! twice. So the set-up runs in a future of its own (freed once the call is set up), the
//! call's state is boxed, and the rare steps of a call (answers, re-offers, RIPT state
//! events, the end) are awaited boxed: an established call costs little memory.

use crate::live::{Ending, LiveCall, LiveCalls, NewCall};
use crate::media::{CallMedia, RiptCodec, RiptSink, SipSide};
use crate::routing::{Limits, Snapshot, from_e164, to_e164};
use call_core::{Action, RiptAction, RiptInput, SipAction, SipInput};
use media_relay::{BridgeEvent, Codec, DtmfMode, LegMedia, PortAllocator, RtpPair};
use ript_h3::CallEvent;
use ript_h3::client::{Client, ClientOptions};
use ript_proto::events::EventKind;
use ript_proto::model::{CallCreate, CallDescription, CallTimers, Handler, Reason};
use sip_proto::sdp::{self, Local, Sdp, SrtpMode};
use sip_proto::session::{EndReason, OfferKind, SessionEvent};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use store::model::{Endpoint, EndpointKind};
use tokio::sync::{Mutex, mpsc, watch};
use tracing::{Instrument, Span, debug, info, info_span, warn};

/// Why a call could not be set up on our side.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("media: {0}")]
    Media(&'static str),
    #[error("upstream: {0}")]
    Upstream(String),
    #[error("ript: {0}")]
    Ript(#[from] ript_h3::Error),
}

impl CallError {
    /// The HTTP status to report the failure as (a refusal of our call creation).
    fn http_status(&self) -> Option<u16> {
        match self {
            CallError::Ript(e) => e.status(),
            _ => None,
        }
    }
}

/// The handler advertisement the gateway registers with upstream TGs: it sends and receives
/// every codec it can bridge, in 20 ms packets (what SIP peers send).
pub const HANDLER_ADVERTISEMENT: &str = "1 in: PCMU,ptime=20; PCMA,ptime=20; opus,ptime=20; 1 out: PCMU,ptime=20; PCMA,ptime=20; opus,ptime=20;";

/// Codecs the SIP side may use (the relay converts between them and the RIPT codec).
const BRIDGEABLE: &[&str] = &["PCMU", "PCMA", "opus"];

/// Everything a call task needs; one per gateway.
#[derive(Debug)]
pub struct Gw {
    pub caller: sip_ua::Caller,
    pub routing: watch::Receiver<Arc<Snapshot>>,
    pub limits: Arc<Limits>,
    pub live: Arc<LiveCalls>,
    /// RTP toward SIP peers.
    pub ports: PortAllocator,
    /// The address written in our SDP.
    pub media_ip: String,
    /// `host:port` for our From/Contact domain in INVITEs we send.
    pub sip_domain: String,
    pub clients: RiptClients,
    pub instance_id: String,
    /// `ript-gateway demo`: print RIPT events under this label.
    pub ladder: Option<String>,
}

impl Gw {
    fn ladder(&self, what: impl FnOnce() -> String) {
        if let Some(l) = &self.ladder {
            crate::run::ladder(l, &what());
        }
    }
}

/// RIPT clients per TG we call — an upstream's, or a customer TG registered with one of our
/// hosted TGs — each with its handler registered at that TG.
#[derive(Debug, Default)]
pub struct RiptClients {
    by_tg: Mutex<HashMap<String, Arc<TgClient>>>,
}

#[derive(Debug)]
struct TgClient {
    /// What the client was built from ([`TgSpec::version`]).
    version: String,
    client: Client,
    tg_uri: String,
    handler: String,
    /// Caller certificates enrolled at this upstream (ript-profile §8).
    certs: crate::identity::Certs,
}

/// A TG we call as a RIPT client and what its client is built from.
struct TgSpec {
    /// Keys [`RiptClients`]: `upstream:{id}` or `customer_tg:{hosted tg id}:{name}`, so an
    /// upstream and a customer TG never share an entry.
    key: String,
    /// Changes whenever anything below changes, so the client is rebuilt.
    version: String,
    /// For logs: the upstream's or the customer TG's name.
    label: String,
    tg_uri: String,
    /// `None`: the system roots.
    trust_pem: Option<String>,
    token: String,
    prefer_datagrams: bool,
}

impl std::fmt::Debug for TgSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never in logs.
        f.debug_struct("TgSpec")
            .field("key", &self.key)
            .field("tg_uri", &self.tg_uri)
            .finish_non_exhaustive()
    }
}

/// The bearer token an upstream's client presents.
fn upstream_token(up: &store::upstream::RiptUpstream) -> Result<String, CallError> {
    match &up.auth {
        store::upstream::UpstreamAuth::None => Ok(String::new()),
        store::upstream::UpstreamAuth::Token { token } => Ok(token.expose().to_owned()),
        store::upstream::UpstreamAuth::OauthClient { .. } => Err(CallError::Upstream(
            "OAuth client credentials are not supported yet; use a token".into(),
        )),
    }
}

/// A RIPT client trusting `trust_pem` (else the system roots) and presenting `token`.
fn new_client(
    trust_pem: Option<&str>,
    token: String,
    prefer_datagrams: bool,
) -> Result<Client, CallError> {
    let pem = match trust_pem {
        Some(p) => p.as_bytes().to_vec(),
        None => std::fs::read(sip_transport::tls::SYSTEM_CA_BUNDLE)
            .map_err(|e| CallError::Upstream(format!("system trust store: {e}")))?,
    };
    let trust = ript_h3::tls::Trust::from_pem(&pem)?;
    let mut opts = ClientOptions::new(trust, token);
    opts.prefer_datagrams = prefer_datagrams;
    Ok(Client::new(opts)?)
}

/// A client for requests to an upstream outside calls (the customer TG registration).
pub(crate) fn upstream_client(up: &store::upstream::RiptUpstream) -> Result<Client, CallError> {
    new_client(up.trust_anchors_pem.as_deref(), upstream_token(up)?, true)
}

impl TgSpec {
    fn upstream(up: &store::upstream::RiptUpstream) -> Result<TgSpec, CallError> {
        Ok(TgSpec {
            key: format!("upstream:{}", up.id),
            version: up.updated_at.to_string(),
            label: up.name.clone(),
            tg_uri: tg_uri(&up.root_url, &up.trunk_group),
            trust_pem: up.trust_anchors_pem.clone(),
            token: upstream_token(up)?,
            prefer_datagrams: up.media_mode != store::upstream::MediaMode::Byways,
        })
    }

    /// Customer TG `c`, kept in hosted TG `holder`; `trust_pem` as chosen by
    /// [`customer_tg_specs`].
    fn customer_tg(
        holder: &store::hosted::HostedTg,
        c: &store::hosted::CustomerTg,
        token: &store::Secret,
        trust_pem: Option<&str>,
    ) -> TgSpec {
        // The entry has no timestamp of its own (the hosted TG's moves with every other
        // registration): a digest of what the client is built from, so an unrelated
        // registration does not make us register a new handler here.
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&c.url, token.expose(), trust_pem).hash(&mut h);
        TgSpec {
            key: format!("customer_tg:{}:{}", holder.id, c.name),
            version: format!("{:x}", h.finish()),
            label: c.name.clone(),
            tg_uri: c.url.clone(),
            trust_pem: trust_pem.map(str::to_owned),
            token: token.expose().to_owned(),
            prefer_datagrams: true,
        }
    }
}

/// The customer TGs a call toward hosted TG `hosted_id` may go to, in the order to try: those
/// kept in that hosted TG, then those kept in the other hosted TGs of its tenant (a
/// registration through `POST {root}/customertgs` is the tenant's, and is kept in the tenant's
/// first enabled hosted TG). Entries without a token are left out: the customer's server
/// would refuse us (ript-profile §1, every request carries a bearer token). Trust: the
/// holder's `customer_tg_trust_anchors_pem`, else the target's, else the system roots.
fn customer_tg_specs(snap: &Snapshot, hosted_id: &str) -> Vec<TgSpec> {
    let Some(target) = snap.hosted_tg(hosted_id) else {
        return Vec::new();
    };
    let holders = std::iter::once(target).chain(
        snap.hosted
            .iter()
            .filter(|h| h.enabled && h.tenant == target.tenant && h.id != target.id),
    );
    let mut out = Vec::new();
    for holder in holders {
        let trust = holder
            .customer_tg_trust_anchors_pem
            .as_deref()
            .or(target.customer_tg_trust_anchors_pem.as_deref());
        for c in &holder.customer_tgs {
            match &c.token {
                Some(token) => out.push(TgSpec::customer_tg(holder, c, token, trust)),
                None => debug!(customer_tg = %c.name, "customer tg without a token skipped"),
            }
        }
    }
    out
}

impl RiptClients {
    /// The client and handler for `spec`, built (and the handler registered) on first use
    /// and again after what it is built from changed.
    async fn get(&self, spec: &TgSpec, instance_id: &str) -> Result<Arc<TgClient>, CallError> {
        if let Some(u) = self.by_tg.lock().await.get(&spec.key)
            && u.version == spec.version
        {
            return Ok(Arc::clone(u));
        }
        // Built without the lock: a customer TG that is offline may take the request timeout
        // to fail, and must not hold up calls toward every other TG meanwhile. Two calls
        // racing here each register a handler; the later one is kept, both work.
        let client = new_client(
            spec.trust_pem.as_deref(),
            spec.token.clone(),
            spec.prefer_datagrams,
        )?;
        // ript-profile §2: a call names a handler registered on the TG it is created on
        // (else `500 unknown-handler`), whoever hosts that TG.
        let h = client
            .register_handler(
                &spec.tg_uri,
                &Handler {
                    handler_id: format!("gw-{instance_id}"),
                    advertisement: HANDLER_ADVERTISEMENT.to_owned(),
                    uri: None,
                },
            )
            .await?;
        let handler = h
            .uri
            .ok_or_else(|| CallError::Upstream("the handler registration named no URI".into()))?;
        info!(tg = %spec.label, tg_uri = %spec.tg_uri, "handler registered");
        let u = Arc::new(TgClient {
            version: spec.version.clone(),
            client,
            tg_uri: spec.tg_uri.clone(),
            handler,
            certs: crate::identity::Certs::default(),
        });
        self.by_tg
            .lock()
            .await
            .insert(spec.key.clone(), Arc::clone(&u));
        Ok(u)
    }

    async fn forget(&self, key: &str) {
        self.by_tg.lock().await.remove(key);
    }

    /// Creates the call to `dest` on the TG of `spec`, with `caller`'s identity (a passport
    /// offered in the INVITE's `Identity` headers, else one signed with a certificate that
    /// TG issues for `caller`, else none: see [`crate::identity::create_call`]).
    async fn create_call(
        &self,
        spec: &TgSpec,
        instance_id: &str,
        dest: &str,
        caller: &str,
        offered: &[String],
    ) -> Result<(Arc<TgClient>, CallDescription), CallError> {
        let u = self.get(spec, instance_id).await?;
        let create = CallCreate {
            handler: u.handler.clone(),
            destination: dest.to_owned(),
            passport: None,
        };
        let created =
            crate::identity::create_call(&u.client, &u.tg_uri, &u.certs, create, caller, offered);
        match created.await {
            Ok(d) => Ok((u, d)),
            Err(e) => {
                // A handler the server forgot (a restart) is registered afresh next time.
                if e.status() == Some(500) {
                    self.forget(&spec.key).await;
                }
                Err(e.into())
            }
        }
    }
}

/// The TG URI of an upstream: `trunk_group` when it is a URI, else the TG of that id under
/// the root (the well-known path added when the root lacks it).
pub fn tg_uri(root: &str, tg: &str) -> String {
    if tg.starts_with("https://") {
        return tg.to_owned();
    }
    format!("{}/providertgs/{tg}", ript_root(root))
}

/// An upstream's RIPT root with the well-known path (added when the configured root lacks
/// it) and no trailing slash.
pub(crate) fn ript_root(root: &str) -> String {
    let root = root.trim_end_matches('/');
    if root.ends_with(ript_proto::ROOT_PATH) {
        root.to_owned()
    } else {
        format!("{root}{}", ript_proto::ROOT_PATH)
    }
}

/// The user part of a SIP URI (`sip:+1408555@host;x` → `+1408555`; `""` when it names only a
/// host), or the number of a tel URI (`tel:+1408555;phone-context=…` → `+1408555`).
pub fn uri_user(uri: &str) -> &str {
    let uri = uri.trim().trim_start_matches('<');
    let Some((scheme, rest)) = uri.split_once(':') else {
        return "";
    };
    if scheme.eq_ignore_ascii_case("tel") {
        let end = rest.find([';', '>']).unwrap_or(rest.len());
        return rest.get(..end).unwrap_or("");
    }
    // The user part ends at '@'; a ';' or '?' before any '@' means there is none.
    match (rest.find('@'), rest.find([';', '?', '>'])) {
        (Some(at), Some(p)) if p < at => "",
        (Some(at), _) => {
            let user = rest.get(..at).unwrap_or("");
            // user;params@host (RFC 3261 §19.1.1 user parameters) keep only the user.
            user.split(';').next().unwrap_or("")
        }
        (None, _) => "",
    }
}

fn wall_ms() -> i64 {
    i64::try_from(ript_h3::wall_ms()).unwrap_or(i64::MAX)
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn endpoint_target(e: &Endpoint) -> call_core::Target {
    let kind = match e.kind {
        EndpointKind::SipPeer => "sip_peer",
        EndpointKind::Upstream => "upstream",
        EndpointKind::HostedTg => "hosted_tg",
    };
    let id = format!("{kind}:{}", e.id);
    match e.kind {
        EndpointKind::SipPeer => call_core::Target::sip(id),
        _ => call_core::Target::ript(id),
    }
}

fn target_endpoint(t: &call_core::Target) -> Option<Endpoint> {
    let (kind, id) = t.id.split_once(':')?;
    let kind = match kind {
        "sip_peer" => EndpointKind::SipPeer,
        "upstream" => EndpointKind::Upstream,
        "hosted_tg" => EndpointKind::HostedTg,
        _ => return None,
    };
    Some(Endpoint {
        kind,
        id: id.to_owned(),
    })
}

/// Codecs to use toward a peer: its configured order restricted to what we bridge, or all
/// of them when it configured none we know.
fn peer_codecs(peer: &store::peer::SipPeer) -> Vec<String> {
    let mut c: Vec<String> = peer
        .codecs
        .iter()
        .filter(|c| BRIDGEABLE.iter().any(|b| b.eq_ignore_ascii_case(c)))
        .cloned()
        .collect();
    if c.is_empty() {
        c = vec!["PCMU".into(), "PCMA".into()];
    }
    c
}

fn relay_codec(name: &str, rate: u32) -> Option<Codec> {
    match name.to_ascii_uppercase().as_str() {
        "PCMU" => Some(Codec::PCMU),
        "PCMA" => Some(Codec::PCMA),
        "OPUS" if rate == 48_000 => Some(Codec::OPUS),
        _ => None,
    }
}

fn direction_of(d: sdp::Direction) -> call_core::MediaDirection {
    match d {
        sdp::Direction::SendRecv => call_core::MediaDirection::SendRecv,
        sdp::Direction::SendOnly => call_core::MediaDirection::SendOnly,
        sdp::Direction::RecvOnly => call_core::MediaDirection::RecvOnly,
        sdp::Direction::Inactive => call_core::MediaDirection::Inactive,
    }
}

/// The SIP leg's media from an SDP plan.
fn sip_side(plan: &sdp::AudioPlan, peer: &store::peer::SipPeer) -> Option<SipSide> {
    let codec = relay_codec(&plan.codec, plan.rate)?;
    let remote = plan
        .remote_address
        .as_deref()
        .and_then(|a| a.parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, plan.remote_port));
    let dtmf = match (peer.dtmf, plan.telephone_event) {
        (store::peer::DtmfMode::Rfc4733, Some(pt)) => DtmfMode::Rfc4733 { pt },
        _ => DtmfMode::Info,
    };
    Some(SipSide {
        remote,
        media: LegMedia::new(plan.pt, codec, dtmf),
        hold: matches!(
            plan.direction,
            sdp::Direction::SendOnly | sdp::Direction::Inactive
        ),
    })
}

/// Where a [`ript_proto::adv::Directive`] sends our audio: (source, sink) of its first entry.
fn directive_ids(d: &str) -> (u8, u8) {
    d.parse::<ript_proto::adv::Directive>()
        .ok()
        .and_then(|d| d.entries.first().map(|e| (e.source, e.sink)))
        .unwrap_or((1, 1))
}

/// ` (486 Busy Here)` for a ladder line, or nothing.
fn reason_suffix(r: &Option<Reason>) -> String {
    reason_text(r).map_or_else(String::new, |t| format!(" ({t})"))
}

fn reason_text(r: &Option<Reason>) -> Option<String> {
    r.as_ref().and_then(|r| match (&r.sip, &r.text) {
        (Some(c), Some(t)) => Some(format!("{c} {t}")),
        (Some(c), None) => Some(c.to_string()),
        (None, Some(t)) => Some(t.clone()),
        (None, None) => None,
    })
}

/// What the SIP leg's session events mean to the core, for an inbound (UAS) SIP leg.
fn inbound_sip_input(ev: &SessionEvent) -> Option<SipInput> {
    match ev {
        SessionEvent::Terminated { reason, .. } => Some(match reason {
            EndReason::Cancelled => SipInput::Cancel,
            // Our own rejection or BYE comes back as the session's end: nothing new.
            EndReason::Rejected | EndReason::LocalBye => return None,
            _ => SipInput::Bye,
        }),
        SessionEvent::RefreshDone => Some(SipInput::SessionRefreshed),
        _ => None,
    }
}

/// ... and for an outbound (UAC) SIP leg.
fn outbound_sip_input(ev: &SessionEvent, answered: bool) -> Option<SipInput> {
    match ev {
        SessionEvent::Progress { status } => Some(SipInput::Provisional {
            status: *status,
            has_sdp: false,
        }),
        SessionEvent::Answered => Some(SipInput::Answered { has_sdp: true }),
        SessionEvent::Terminated { reason, status } => Some(match reason {
            EndReason::LocalBye => return None,
            EndReason::RemoteBye | EndReason::SessionExpired | EndReason::DialogGone => {
                SipInput::Bye
            }
            _ if answered => SipInput::Bye,
            EndReason::Rejected => SipInput::Failed {
                status: status.unwrap_or(500),
            },
            EndReason::Timeout => SipInput::Failed {
                status: status.unwrap_or(408),
            },
            EndReason::Cancelled => SipInput::Failed { status: 487 },
            _ => SipInput::Failed {
                status: status.unwrap_or(500),
            },
        }),
        SessionEvent::RefreshDone => Some(SipInput::SessionRefreshed),
        _ => None,
    }
}

/// State shared by both directions' tasks.
struct Leg {
    gw: Arc<Gw>,
    snap: Arc<Snapshot>,
    core: call_core::Call,
    live: Option<LiveCall>,
    cdr: Option<call_core::CdrRecord>,
    media: Option<CallMedia>,
    sip_pair: Option<RtpPair>,
    caller: String,
    callee: String,
    source: Endpoint,
    route_id: Option<String>,
    sip_codec: Option<String>,
    _slot: Option<crate::routing::Slot>,
    done: bool,
    /// The RIPT leg's media counters, taken before we end it (they go with the call).
    ript_final: Option<ript_h3::MediaStats>,
}

impl Leg {
    /// A re-INVITE or UPDATE offer from the SIP peer (hold, resume, a move): answered from
    /// the same `port` and the peer's codecs (RFC 3264 direction); the relay follows and the
    /// core learns the new direction.
    async fn answer_reoffer(
        &mut self,
        sip: &sip_ua::Call,
        peer: &store::peer::SipPeer,
        port: u16,
        body: &[u8],
    ) {
        let Ok(offer) = Sdp::parse(body) else {
            let _ = sip.reject_offer(400).await;
            return;
        };
        let local = Local {
            address: self.gw.media_ip.clone(),
            audio_port: port,
            codecs: peer_codecs(peer),
            srtp: SrtpMode::Off,
            keys: vec![],
            want: sdp::Direction::SendRecv,
            session_id: 1,
            session_version: rand::random::<u16>().into(),
        };
        let Ok((ans, plan)) = sdp::answer(&offer, &local) else {
            let _ = sip.reject_offer(488).await;
            return;
        };
        if let Err(e) = sip.answer(ans.to_text().into_bytes()).await {
            debug!(error = %e, "answer");
            return;
        }
        if let (Some(side), Some(m)) = (sip_side(&plan, peer), &self.media) {
            m.update_sip(side).await;
        }
        let _ = self.core.handle_sip(
            now(),
            wall_ms(),
            SipInput::Hold {
                direction: direction_of(plan.direction),
            },
        );
    }

    /// Ends a call the gateway refused before any outbound attempt (caps, no route, SDP):
    /// its CDR says so.
    async fn refused(mut self, status: u16, ript_reason: Option<Reason>, bucket: &'static str) {
        self.cdr = Some(call_core::CdrRecord {
            id: self.core.id().clone(),
            direction: self.core.direction(),
            target: None,
            attempts: 0,
            started_at_ms: wall_ms(),
            answered_at_ms: None,
            ended_at_ms: wall_ms(),
            sip_status: Some(status),
            ript_reason,
            bucket,
            ended_by: call_core::EndedBy::Gateway,
        });
        self.finish().await;
    }

    /// The operator asked to hang up (admin API).
    fn hang_up(&mut self) {
        info!("hung up through the admin API");
        let _ = self.core.handle_hangup(now(), wall_ms());
    }

    /// The SIP leg's media ended (RTP timeout, or the bridge failed): the call ends.
    fn media_ended(&mut self, end: media_relay::BridgeEnd) {
        info!(?end, "media ended");
        self.media = None;
        let _ = self.core.handle_hangup(now(), wall_ms());
    }

    /// A digit the SIP peer sent by INFO goes toward the RIPT leg as telephone-events.
    async fn info_digit_in(&self, req: &sip_proto::msg::Request) {
        let ct = req.headers().content_type().unwrap_or_default().to_owned();
        match media_proto::dtmf::parse_info(&ct, req.body()) {
            Ok(d) => {
                if let Some(m) = &self.media
                    && !m.digit_to_ript(d.digit, d.duration_ms).await
                {
                    debug!("digit not relayed");
                }
            }
            Err(e) => debug!(error = %e, "INFO without a digit"),
        }
    }

    /// Keeps the RIPT leg's counters before it ends.
    async fn keep_ript_stats(&mut self) {
        if let Some(m) = &self.media
            && let Some(s) = m.ript_stats().await
        {
            self.ript_final = Some(s);
        }
    }
}

impl Leg {
    /// Ends the call's registration with the store: the CDR from the core's record.
    async fn finish(mut self) {
        let Some(live) = self.live.take() else { return };
        let cdr = self.cdr.take();
        let (mut media, ript_out, ript_in, lost) = (store::cdr::MediaCounters::default(), 0, 0, 0);
        let _ = (ript_out, ript_in, lost);
        if let Some(m) = &self.media {
            use std::sync::atomic::Ordering::Relaxed;
            media.ript_chunks_out = m.counters.chunks_out.load(Relaxed);
            media.ript_chunks_in = m.counters.chunks_in.load(Relaxed);
            if let Some(s) = m.stats().await {
                debug!(stats = ?s, chunk_errors = m.counters.chunk_errors.load(Relaxed), "media");
                media.rtp_packets_in = s.a.packets;
                media.rtp_packets_out = s.b.packets;
                media.packets_lost = u64::try_from(s.a.lost.max(0)).unwrap_or(0);
            }
            // Chunks the RIPT peer never acknowledged count as lost too (ript-profile §6
            // acks); chunks still in flight at the end are among them.
            let ript = match m.ript_stats().await {
                Some(r) => Some(r),
                None => self.ript_final.take(),
            };
            if let Some(r) = ript {
                debug!(
                    sent = r.sent,
                    acked = r.acked,
                    rtt_p50_ms = r.rtt_p50_ms,
                    "ript media"
                );
                media.packets_lost += r.sent.saturating_sub(r.acked);
            }
        }
        let ript_codec = self.media.as_ref().map(|m| m.codec().name().to_owned());
        let end = Ending {
            bucket: cdr.as_ref().map_or("failed", |c| c.bucket),
            caller: self.caller.clone(),
            callee: self.callee.clone(),
            source: self.source.clone(),
            target: cdr
                .as_ref()
                .and_then(|c| c.target.as_ref())
                .and_then(target_endpoint),
            route_id: self.route_id.clone(),
            sip_codec: self.sip_codec.clone(),
            ript_codec,
            sip_status: cdr.as_ref().and_then(|c| c.sip_status),
            ript_reason: cdr.as_ref().and_then(|c| reason_text(&c.ript_reason)),
            media,
        };
        info!(
            bucket = end.bucket,
            sip_status = ?end.sip_status,
            ript_reason = ?end.ript_reason,
            "call ended"
        );
        live.finish(end).await;
    }
}

// ---------------------------------------------------------------------------------------
// SIP → RIPT

/// A call from a SIP peer (already admitted as `peer`) toward RIPT. Not an async function,
/// to keep its arguments out of the call's future (see the module documentation).
pub fn sip_to_ript(
    gw: Arc<Gw>,
    inc: sip_ua::IncomingCall,
    peer: store::peer::SipPeer,
) -> impl Future<Output = ()> {
    let set_up = Box::pin(SipToRipt::set_up(gw, inc, peer));
    async move {
        if let Some((me, span)) = set_up.await {
            me.run().instrument(span).await;
        }
    }
}

/// The outcome of a RIPT call creation attempt.
type Created = Result<(Arc<TgClient>, CallDescription), CallError>;

/// A refusal decided before the core runs: status, headers, CDR bucket.
type EarlyRefusal = (u16, Vec<(String, String)>, &'static str);

struct SipToRipt {
    leg: Leg,
    sip: sip_ua::Call,
    peer: store::peer::SipPeer,
    dest: String,
    answer: Option<String>,
    ript: Option<ript_h3::client::OutboundCall>,
    ript_uri: Option<String>,
    creating: Option<tokio::task::JoinHandle<Created>>,
    early_sent: bool,
    /// The SIP peer's media until the RIPT leg exists to bridge it to.
    pending_side: Option<SipSide>,
    /// The INVITE's RFC 8224 `Identity` header values (a valid one travels on as passport).
    identity: Vec<String>,
}

impl SipToRipt {
    /// Registers the call and starts it in its span; `None` when it was refused (and has
    /// ended).
    async fn set_up(
        gw: Arc<Gw>,
        inc: sip_ua::IncomingCall,
        peer: store::peer::SipPeer,
    ) -> Option<(Box<SipToRipt>, Span)> {
        let live = gw
            .live
            .start(NewCall {
                direction: admin_api::Direction::SipToRipt,
                sip_call_id: Some(inc.call.call_id().to_owned()),
                ript_call_id: None,
            })
            .await;
        let span = info_span!("call", id = %live.id(), sip = %inc.call.call_id());
        let me = Self::start(gw, inc, peer, live)
            .instrument(span.clone())
            .await?;
        Some((Box::new(me), span))
    }

    /// Routes the INVITE and answers its offer; `None` when the call was refused (and has
    /// ended).
    async fn start(
        gw: Arc<Gw>,
        inc: sip_ua::IncomingCall,
        peer: store::peer::SipPeer,
        live: LiveCall,
    ) -> Option<SipToRipt> {
        let snap = gw.routing.borrow().clone();
        debug!(config = snap.version, "routing");
        let source = Endpoint {
            kind: EndpointKind::SipPeer,
            id: peer.id.clone(),
        };
        let req = inc.request;
        // The number is the Request-URI's user part; a Request-URI naming only our host (some
        // PBXs, and SIPp's digest) leaves it to the To header.
        let raw_dest = match uri_user(req.uri()) {
            "" => req
                .headers()
                .to()
                .map(|t| uri_user(&t.uri).to_owned())
                .unwrap_or_default(),
            user => user.to_owned(),
        };
        let raw_from = req
            .headers()
            .from()
            .map(|f| uri_user(&f.uri).to_owned())
            .unwrap_or_default();
        let dest = to_e164(&peer.number_rules, &raw_dest);
        let caller = to_e164(&peer.number_rules, &raw_from).unwrap_or(raw_from);
        debug!(dest = ?dest, %caller, "sip call");
        let slot = gw.limits.admit(&source, peer.max_cps, peer.max_concurrent);
        let targets_result = dest
            .as_deref()
            .map(|d| snap.route(&source, d, &caller, &mut rand::rng()));
        let core = call_core::Call::new(
            live.id(),
            call_core::Direction::SipToRipt,
            match &targets_result {
                Some(Ok((_, t))) if slot.is_ok() => t.iter().map(endpoint_target).collect(),
                _ => Vec::new(),
            },
            now(),
            wall_ms(),
        );
        let core = match core {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot start the call");
                let _ = inc.call.reject(500).await;
                return None;
            }
        };
        let mut me = SipToRipt {
            leg: Leg {
                gw: Arc::clone(&gw),
                snap: Arc::clone(&snap),
                core,
                live: Some(live),
                cdr: None,
                media: None,
                sip_pair: None,
                caller,
                callee: dest.clone().unwrap_or(raw_dest),
                source,
                route_id: match &targets_result {
                    Some(Ok((id, _))) => Some(id.clone()),
                    _ => None,
                },
                sip_codec: None,
                _slot: None,
                done: false,
                ript_final: None,
            },
            sip: inc.call,
            peer,
            dest: dest.unwrap_or_default(),
            answer: None,
            ript: None,
            ript_uri: None,
            creating: None,
            early_sent: false,
            pending_side: None,
            identity: req
                .headers()
                .get_all("Identity")
                .map(str::to_owned)
                .collect(),
        };
        // Refusals decided before the core runs: caps, numbers, SDP.
        let refusal: Option<EarlyRefusal> = match (&slot, &targets_result) {
            (Err(c), _) => {
                info!(cap = %c, "call refused by a cap");
                Some((
                    503,
                    vec![("Retry-After".to_owned(), c.retry_after().to_string())],
                    "rejected",
                ))
            }
            (_, None) => Some((404, vec![], "no_route")),
            (_, Some(Err(e))) => {
                info!(reason = %e, "no route");
                Some((404, vec![], "no_route"))
            }
            _ => None,
        };
        if let Some((status, headers, bucket)) = refusal {
            me.refuse(status, headers, bucket).await;
            return None;
        }
        me.leg._slot = slot.ok();
        // The SIP peer's offer, answered now: the relay converts to whatever the RIPT side
        // chooses, so the answer needs only the peer's codecs.
        let body = req.body();
        if body.is_empty() {
            info!("INVITE without SDP (late offer) is not supported");
            me.refuse(488, vec![], "rejected").await;
            return None;
        }
        match me.answer_offer(body) {
            Ok(()) => {}
            Err(status) => {
                me.refuse(status, vec![], "rejected").await;
                return None;
            }
        }
        let r = me
            .leg
            .core
            .handle_sip(now(), wall_ms(), SipInput::Invite { has_sdp: true });
        if let Err(e) = r {
            warn!(error = %e, "core refused the INVITE");
        }
        Some(me)
    }

    /// The call, from the core's first actions to its CDR.
    async fn run(mut self: Box<Self>) {
        self.drain().await;
        self.run_loop().await;
        Box::pin(self.leg.finish()).await;
    }

    /// Refuses the INVITE before any RIPT leg exists; the CDR says why.
    async fn refuse(self, status: u16, headers: Vec<(String, String)>, bucket: &'static str) {
        if let Err(e) = self.sip.reject_with(status, headers).await {
            debug!(error = %e, "reject");
        }
        self.leg.refused(status, None, bucket).await;
    }

    fn answer_offer(&mut self, body: &[u8]) -> Result<(), u16> {
        let offer = Sdp::parse(body).map_err(|e| e.status())?;
        let pair = self.leg.gw.ports.allocate().map_err(|e| {
            warn!(error = %e, "no RTP port");
            503u16
        })?;
        let local = Local {
            address: self.leg.gw.media_ip.clone(),
            audio_port: pair.port,
            codecs: peer_codecs(&self.peer),
            srtp: SrtpMode::Off,
            keys: vec![],
            want: sdp::Direction::SendRecv,
            session_id: rand::random::<u32>().into(),
            session_version: 1,
        };
        let (ans, plan) = sdp::answer(&offer, &local).map_err(|e| e.status())?;
        let side = sip_side(&plan, &self.peer).ok_or(488u16)?;
        self.leg.sip_codec = Some(plan.codec.clone());
        self.answer = Some(ans.to_text());
        self.leg.sip_pair = Some(pair);
        self.pending_side = Some(side);
        Ok(())
    }
}

impl SipToRipt {
    /// Carries out the core's actions until it has none.
    async fn drain(&mut self) {
        while let Some(a) = self.leg.core.poll_action() {
            debug!(action = ?a, "core");
            match a {
                Action::Sip(SipAction::Provisional { status, with_sdp }) => {
                    let body =
                        with_sdp.then(|| self.answer.clone().unwrap_or_default().into_bytes());
                    if with_sdp {
                        self.early_sent = true;
                    }
                    if let Err(e) = self.sip.provisional(status, body).await {
                        debug!(error = %e, "provisional");
                    }
                }
                Action::Sip(SipAction::Accept) => {
                    let body = self.answer.clone().map(String::into_bytes);
                    if let Err(e) = self.sip.accept(body).await {
                        // The CANCEL won the race: the UA reports it as the session's end.
                        debug!(error = %e, "accept");
                    }
                    // No more early-media cue to watch for: chunks go straight to the bridge.
                    if let Some(m) = self.leg.media.as_mut() {
                        m.relay_on_ript_task().await;
                    }
                }
                Action::Sip(SipAction::Reject { status, .. }) => {
                    if let Err(e) = self.sip.reject(status).await {
                        debug!(error = %e, "reject");
                    }
                }
                Action::Sip(SipAction::Bye) => {
                    if let Err(e) = self.sip.bye().await {
                        debug!(error = %e, "bye");
                    }
                }
                Action::Sip(other) => debug!(action = ?other, "not for an inbound SIP leg"),
                Action::Ript(RiptAction::Start { target }) => self.start_ript(&target),
                Action::Ript(RiptAction::End { reason }) => {
                    self.leg
                        .gw
                        .ladder(|| format!("RIPT -> event end{}", reason_suffix(&reason)));
                    // Rare steps are boxed (see the module documentation).
                    Box::pin(self.leg.keep_ript_stats()).await;
                    if let Some(r) = &self.ript
                        && let Err(e) = r.control.end(reason).await
                    {
                        debug!(error = %e, "ript end");
                    }
                }
                Action::Ript(RiptAction::Hold { direction }) => {
                    // The relay already follows the SIP peer's hold; the RIPT peer learns
                    // nothing it needs (media simply pauses).
                    debug!(%direction, "hold");
                }
                Action::Ript(RiptAction::State { .. }) => {}
                Action::Persist(snap) => {
                    if let Some(l) = self.leg.live.as_mut() {
                        l.set_state(&snap.state).await;
                    }
                }
                Action::Cdr(c) => self.leg.cdr = Some(c),
                Action::Done => self.leg.done = true,
            }
        }
    }

    fn start_ript(&mut self, target: &call_core::Target) {
        // A new attempt: whatever the previous one left is gone.
        self.ript = None;
        self.leg.media = None;
        let gw = Arc::clone(&self.leg.gw);
        let snap = Arc::clone(&self.leg.snap);
        let dest = self.dest.clone();
        let (caller, identity) = (self.leg.caller.clone(), self.identity.clone());
        let endpoint = target_endpoint(target);
        self.creating = Some(tokio::spawn(
            async move {
                let Some(e) = endpoint else {
                    return Err(CallError::Upstream("unknown target".into()));
                };
                let candidates = match e.kind {
                    EndpointKind::Upstream => {
                        let up = snap
                            .upstream(&e.id)
                            .ok_or_else(|| CallError::Upstream("upstream gone".into()))?;
                        vec![TgSpec::upstream(up)?]
                    }
                    // A hosted TG as a target: toward the customer TGs its customer registered.
                    EndpointKind::HostedTg => customer_tg_specs(&snap, &e.id),
                    EndpointKind::SipPeer => {
                        return Err(CallError::Upstream(
                            "a SIP peer is not a RIPT target".into(),
                        ));
                    }
                };
                // Several customer TGs: each is tried in turn until one takes the call (a
                // creation refused by one says nothing about the next, like a failed route
                // target); the last refusal is the attempt's.
                let mut last = CallError::Upstream("no customer tg registered".into());
                for spec in &candidates {
                    match gw.clients.create_call(spec, &gw.instance_id, &dest, &caller, &identity).await {
                        Ok(created) => return Ok(created),
                        Err(err) => {
                            if candidates.len() > 1 {
                                info!(tg = %spec.label, error = %err, "customer tg refused the call; trying the next");
                            }
                            last = err;
                        }
                    }
                }
                Err(last)
            }
            .in_current_span(),
        ));
    }

    /// The RIPT call exists: start its signaling and the media bridge.
    async fn ript_created(&mut self, up: &TgClient, d: CallDescription) {
        info!(ript = %d.uri, "ript call created");
        self.leg.gw.ladder(|| {
            format!(
                "RIPT -> POST {{tg}}/calls 201, directives: we send {:?}, we receive {:?}",
                d.client_directives, d.server_directives
            )
        });
        let call = up.client.start_call(&d, CallTimers::default());
        let codec = RiptCodec::from_directive(&d.client_directives)
            .unwrap_or(RiptCodec(ript_proto::chunk::PayloadType::PCMU));
        let ids = directive_ids(&d.client_directives);
        if let (Some(pair), Some(side)) = (self.leg.sip_pair.take(), self.pending_side.clone()) {
            match CallMedia::start(
                pair,
                side,
                codec,
                RiptSink::Client(call.control.clone()),
                ids,
            ) {
                Ok(m) => self.leg.media = Some(m),
                Err(e) => warn!(error = %e, "no media bridge"),
            }
        }
        self.ript_uri = Some(d.uri.clone());
        self.ript = Some(call);
        let _ = self
            .leg
            .core
            .handle_ript(now(), wall_ms(), RiptInput::Started);
        self.drain().await;
    }

    async fn run_loop(&mut self) {
        let mut digits: Option<mpsc::Receiver<BridgeEvent>> = None;
        while !self.leg.done {
            if digits.is_none() {
                digits = self.leg.media.as_mut().and_then(|m| m.digits.take());
            }
            let deadline = self.leg.core.poll_timeout();
            tokio::select! {
                ev = self.sip.next_event() => match ev {
                    Some(ev) => self.on_sip(ev).await,
                    None => {
                        let _ = self.leg.core.handle_sip(now(), wall_ms(), SipInput::Bye);
                    }
                },
                created = opt_join(self.creating.as_mut()) => {
                    self.creating = None;
                    match created {
                        Ok(Ok((up, d))) => Box::pin(self.ript_created(&up, d)).await,
                        Ok(Err(e)) => {
                            info!(error = %e, "ript call creation failed");
                            let input = match e.http_status() {
                                Some(s) => RiptInput::Refused { http_status: s, reason: Some(e.to_string()) },
                                None => RiptInput::LegLost,
                            };
                            let _ = self.leg.core.handle_ript(now(), wall_ms(), input);
                        }
                        Err(_) => {
                            let _ = self.leg.core.handle_ript(now(), wall_ms(), RiptInput::LegLost);
                        }
                    }
                }
                ev = opt_recv(self.ript.as_mut().map(|r| &mut r.events)) => {
                    self.on_ript(ev).await;
                }
                d = opt_recv(digits.as_mut()) => match d {
                    Some(BridgeEvent::Digit { from_leg_b: true, digit, duration_ms }) => {
                        info_digit_out(&self.sip, digit, duration_ms).await;
                    }
                    Some(_) => {}
                    None => digits = None,
                },
                () = opt_hang_up(self.leg.live.as_mut()) => self.leg.hang_up(),
                end = opt_media_end(self.leg.media.as_mut()) => self.leg.media_ended(end),
                () = opt_sleep(deadline) => {
                    self.leg.core.handle_timeout(now(), wall_ms());
                }
            }
            self.drain().await;
        }
    }

    async fn on_sip(&mut self, ev: SessionEvent) {
        debug!(event = ?ev, "sip");
        match &ev {
            SessionEvent::Info(req) => {
                self.leg.info_digit_in(req).await;
                return;
            }
            SessionEvent::RemoteOffer { body, kind } if *kind != OfferKind::Invite => {
                self.reoffer(body).await;
                return;
            }
            _ => {}
        }
        if let Some(input) = inbound_sip_input(&ev)
            && let Err(e) = self.leg.core.handle_sip(now(), wall_ms(), input)
        {
            debug!(error = %e, "sip input ignored");
        }
    }

    /// A re-INVITE or UPDATE offer from the SIP peer (hold, resume, a move): answered from
    /// the same port and codecs; the bridge follows.
    async fn reoffer(&mut self, body: &[u8]) {
        let port = self
            .answer
            .as_deref()
            .and_then(|a| Sdp::parse(a.as_bytes()).ok())
            .and_then(|s| s.media.first().map(|m| m.port))
            .unwrap_or(0);
        Box::pin(self.leg.answer_reoffer(&self.sip, &self.peer, port, body)).await;
    }

    async fn on_ript(&mut self, ev: Option<CallEvent>) {
        match ev {
            Some(CallEvent::Media(m)) => {
                if !self.early_sent
                    && matches!(
                        self.leg.core.state(),
                        call_core::CallState::Proceeding | call_core::CallState::Alerting
                    )
                {
                    // Media before the answer: early media (ringback, announcements). The
                    // SIP caller gets our answer in a 183 so it plays what comes.
                    self.early_sent = true;
                    let body = self.answer.clone().map(String::into_bytes);
                    if let Err(e) = self.sip.provisional(183, body).await {
                        debug!(error = %e, "183");
                    }
                }
                if let Some(media) = self.leg.media.as_mut() {
                    media.relay_to_sip(m);
                    if self.early_sent {
                        media.relay_on_ript_task().await;
                    }
                }
            }
            Some(CallEvent::State(kind, reason)) | Some(CallEvent::Ended(kind, reason)) => {
                if let Err(e) =
                    self.leg
                        .core
                        .handle_ript(now(), wall_ms(), RiptInput::Event { kind, reason })
                {
                    debug!(error = %e, "ript event ignored");
                }
            }
            Some(other) => debug!(event = ?other, "ript"),
            None => {
                self.ript = None;
                let _ = self
                    .leg
                    .core
                    .handle_ript(now(), wall_ms(), RiptInput::LegLost);
            }
        }
    }
}

/// A digit from the RIPT leg toward a SIP peer that takes digits by INFO.
async fn info_digit_out(sip: &sip_ua::Call, digit: char, duration_ms: u32) {
    let body = media_proto::dtmf::dtmf_relay_body(digit, duration_ms);
    if let Err(e) = sip.info("application/dtmf-relay", body.into_bytes()).await {
        debug!(error = %e, "info");
    }
}

/// Futures over optional parts of a call (pending forever when the part is absent), so
/// one `select!` can wait on all of them.
async fn opt_recv<T>(rx: Option<&mut mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

async fn opt_join<T>(
    h: Option<&mut tokio::task::JoinHandle<T>>,
) -> Result<T, tokio::task::JoinError> {
    match h {
        Some(h) => h.await,
        None => std::future::pending().await,
    }
}

async fn opt_hang_up(l: Option<&mut LiveCall>) {
    match l {
        Some(l) => l.hang_up_requested().await,
        None => std::future::pending().await,
    }
}

async fn opt_media_end(m: Option<&mut CallMedia>) -> media_relay::BridgeEnd {
    match m {
        Some(m) => m.ended().await,
        None => std::future::pending().await,
    }
}

async fn opt_sleep(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

// ---------------------------------------------------------------------------------------
// RIPT → SIP

/// A RIPT call that arrived on hosted TG `c.tg`, toward the SIP peers its route names. Not
/// an async function, to keep its arguments out of the call's future.
pub fn ript_to_sip(gw: Arc<Gw>, c: ript_h3::server::IncomingCall) -> impl Future<Output = ()> {
    let set_up = Box::pin(RiptToSip::set_up(gw, c));
    async move {
        if let Some((me, span)) = set_up.await {
            me.run().instrument(span).await;
        }
    }
}

struct RiptToSip {
    leg: Leg,
    ript: ript_h3::server::CallControl,
    /// `None` once the RIPT call's event channel closed.
    events: Option<mpsc::Receiver<CallEvent>>,
    description: CallDescription,
    sip: Option<sip_ua::Call>,
    peer: Option<store::peer::SipPeer>,
    offer: Option<Sdp>,
    answered: bool,
    /// The call's verified passport (compact JWS), for the INVITE's `Identity` header.
    passport: Option<String>,
}

impl RiptToSip {
    /// Registers the call and starts it in its span; `None` when it was refused (and has
    /// ended).
    async fn set_up(
        gw: Arc<Gw>,
        c: ript_h3::server::IncomingCall,
    ) -> Option<(Box<RiptToSip>, Span)> {
        let live = gw
            .live
            .start(NewCall {
                direction: admin_api::Direction::RiptToSip,
                sip_call_id: None,
                ript_call_id: Some(c.description.uri.clone()),
            })
            .await;
        let span = info_span!("call", id = %live.id(), ript = %c.description.uri);
        let me = Self::start(gw, c, live).instrument(span.clone()).await?;
        Some((Box::new(me), span))
    }

    /// Routes the call and starts the core; `None` when the call was refused (and has
    /// ended).
    async fn start(
        gw: Arc<Gw>,
        c: ript_h3::server::IncomingCall,
        live: LiveCall,
    ) -> Option<RiptToSip> {
        let snap = gw.routing.borrow().clone();
        let source = Endpoint {
            kind: EndpointKind::HostedTg,
            id: c.tg.clone(),
        };
        let dest = c.description.to.clone();
        let caller = c.description.from.clone();
        let tg = snap.hosted_tg(&c.tg).cloned();
        let slot = gw.limits.admit(
            &source,
            tg.as_ref().and_then(|t| t.max_cps),
            tg.as_ref().and_then(|t| t.max_concurrent),
        );
        let routed = snap.route(&source, &dest, &caller, &mut rand::rng());
        let targets = match (&slot, &routed) {
            (Ok(_), Ok((_, t))) => t.iter().map(endpoint_target).collect(),
            _ => Vec::new(),
        };
        let core = match call_core::Call::new(
            live.id(),
            call_core::Direction::RiptToSip,
            targets,
            now(),
            wall_ms(),
        ) {
            Ok(core) => core,
            Err(e) => {
                warn!(error = %e, "cannot start the call");
                return None;
            }
        };
        let mut me = RiptToSip {
            leg: Leg {
                gw: Arc::clone(&gw),
                snap: Arc::clone(&snap),
                core,
                live: Some(live),
                cdr: None,
                media: None,
                sip_pair: None,
                caller,
                callee: dest,
                source,
                route_id: routed.as_ref().ok().map(|(id, _)| id.clone()),
                sip_codec: None,
                _slot: None,
                done: false,
                ript_final: None,
            },
            ript: c.control,
            events: Some(c.events),
            description: c.description,
            sip: None,
            peer: None,
            offer: None,
            answered: false,
            passport: c.passport_jws,
        };
        match (slot, routed) {
            (Err(cap), _) => {
                info!(cap = %cap, "call refused by a cap");
                let reason = Reason::sip(503, "Service Unavailable");
                let _ = me.ript.state(EventKind::Failed, Some(reason.clone())).await;
                me.refused(503, reason, "rejected").await;
                return None;
            }
            (_, Err(e)) => {
                info!(reason = %e, "no route");
                let reason = Reason::sip(404, "Not Found");
                let _ = me.ript.state(EventKind::Failed, Some(reason.clone())).await;
                me.refused(404, reason, "no_route").await;
                return None;
            }
            (Ok(slot), Ok(_)) => me.leg._slot = Some(slot),
        }
        let _ = me
            .leg
            .core
            .handle_ript(now(), wall_ms(), RiptInput::Started);
        Some(me)
    }

    /// The call, from the core's first actions to its CDR.
    async fn run(mut self: Box<Self>) {
        self.drain().await;
        self.run_loop().await;
        Box::pin(self.leg.finish()).await;
    }

    async fn refused(self, status: u16, reason: Reason, bucket: &'static str) {
        self.leg.refused(status, Some(reason), bucket).await;
    }

    async fn drain(&mut self) {
        while let Some(a) = self.leg.core.poll_action() {
            debug!(action = ?a, "core");
            match a {
                Action::Sip(SipAction::Invite { target }) => {
                    // Rare steps are boxed (see the module documentation).
                    if let Err(status) = Box::pin(self.invite(&target)).await {
                        let _ =
                            self.leg
                                .core
                                .handle_sip(now(), wall_ms(), SipInput::Failed { status });
                    }
                }
                Action::Sip(SipAction::Cancel) => {
                    if let Some(s) = &self.sip
                        && let Err(e) = s.cancel().await
                    {
                        debug!(error = %e, "cancel");
                    }
                }
                Action::Sip(SipAction::Bye) => {
                    if let Some(s) = &self.sip
                        && let Err(e) = s.bye().await
                    {
                        debug!(error = %e, "bye");
                    }
                }
                Action::Sip(SipAction::Hold { direction }) => self.hold(direction).await,
                Action::Sip(other) => debug!(action = ?other, "not for an outbound SIP leg"),
                Action::Ript(RiptAction::State { kind, reason }) => {
                    self.leg
                        .gw
                        .ladder(|| format!("RIPT -> event {kind}{}", reason_suffix(&reason)));
                    if let Err(e) = Box::pin(self.ript.state(kind, reason)).await {
                        debug!(error = %e, "ript state");
                    }
                }
                Action::Ript(RiptAction::End { reason }) => {
                    self.leg
                        .gw
                        .ladder(|| format!("RIPT -> event end{}", reason_suffix(&reason)));
                    Box::pin(self.leg.keep_ript_stats()).await;
                    if let Err(e) = Box::pin(self.ript.state(EventKind::End, reason)).await {
                        debug!(error = %e, "ript end");
                    }
                }
                Action::Ript(other) => debug!(action = ?other, "not for an inbound RIPT leg"),
                Action::Persist(snap) => {
                    if let Some(l) = self.leg.live.as_mut() {
                        l.set_state(&snap.state).await;
                    }
                }
                Action::Cdr(c) => self.leg.cdr = Some(c),
                Action::Done => self.leg.done = true,
            }
        }
    }

    /// Sends the INVITE of one attempt; `Err(status)` when it cannot even be sent.
    async fn invite(&mut self, target: &call_core::Target) -> Result<(), u16> {
        self.sip = None;
        self.leg.media = None;
        let peer = target_endpoint(target)
            .and_then(|e| self.leg.snap.peer(&e.id).cloned())
            .ok_or(404u16)?;
        let addr_text = peer.addresses.first().cloned().ok_or(404u16)?;
        let addr = match addr_text.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                let with_port = if addr_text.contains(':') {
                    addr_text.clone()
                } else {
                    format!("{addr_text}:5060")
                };
                tokio::net::lookup_host(with_port)
                    .await
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or(503u16)?
            }
        };
        let transport = match peer.transport {
            store::peer::SipTransport::Udp => sip_transport::Transport::Udp,
            store::peer::SipTransport::Tcp => sip_transport::Transport::Tcp,
            store::peer::SipTransport::Tls => sip_transport::Transport::Tls,
        };
        if self.leg.sip_pair.is_none() {
            self.leg.sip_pair = Some(self.leg.gw.ports.allocate().map_err(|e| {
                warn!(error = %e, "no RTP port");
                503u16
            })?);
        }
        let port = self.leg.sip_pair.as_ref().map_or(0, |p| p.port);
        let offer = sdp::offer(&Local {
            address: self.leg.gw.media_ip.clone(),
            audio_port: port,
            codecs: peer_codecs(&peer),
            srtp: SrtpMode::Off,
            keys: vec![],
            want: sdp::Direction::SendRecv,
            session_id: rand::random::<u32>().into(),
            session_version: 1,
        })
        .ok_or(488u16)?;
        let rules = &peer.number_rules;
        let host = match addr {
            SocketAddr::V4(a) => a.to_string(),
            SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        };
        let to_user = from_e164(rules, &self.leg.callee);
        let from_user = if ript_proto::pattern::is_e164(&self.leg.caller) {
            from_e164(rules, &self.leg.caller)
        } else {
            "anonymous".to_owned()
        };
        let opts = sip_ua::CallOptions {
            uri: format!("sip:{to_user}@{host}"),
            from: format!("<sip:{from_user}@{}>", self.leg.gw.sip_domain),
            to: format!("<sip:{to_user}@{host}>"),
            target: sip_transport::Target::new(transport, addr),
            offer: Some(offer.to_text().into_bytes()),
            credentials: peer
                .outbound_auth
                .as_ref()
                .map(|d| (d.username.clone(), d.password.expose().to_owned())),
            // ript-profile §8: the passport travels on as an RFC 8224 Identity header.
            headers: crate::identity::sip_headers(self.passport.as_deref()),
        };
        let call = self.leg.gw.caller.call(opts).await.map_err(|e| {
            info!(error = %e, "INVITE not sent");
            503u16
        })?;
        info!(sip = %call.call_id(), peer = %peer.name, "INVITE sent");
        if let Some(l) = self.leg.live.as_mut() {
            l.set_sip_call_id(call.call_id());
        }
        self.sip = Some(call);
        self.peer = Some(peer);
        self.offer = Some(offer);
        Ok(())
    }

    async fn hold(&mut self, direction: call_core::MediaDirection) {
        let (Some(sip), Some(peer), Some(port)) = (
            &self.sip,
            &self.peer,
            self.offer
                .as_ref()
                .and_then(|o| o.media.first().map(|m| m.port)),
        ) else {
            return;
        };
        let want = match direction {
            call_core::MediaDirection::SendRecv => sdp::Direction::SendRecv,
            call_core::MediaDirection::SendOnly => sdp::Direction::SendOnly,
            call_core::MediaDirection::RecvOnly => sdp::Direction::RecvOnly,
            call_core::MediaDirection::Inactive => sdp::Direction::Inactive,
        };
        let Some(offer) = sdp::offer(&Local {
            address: self.leg.gw.media_ip.clone(),
            audio_port: port,
            codecs: peer_codecs(peer),
            srtp: SrtpMode::Off,
            keys: vec![],
            want,
            session_id: 1,
            session_version: rand::random::<u16>().into(),
        }) else {
            return;
        };
        if let Err(e) = sip.reinvite(Some(offer.to_text().into_bytes())).await {
            debug!(error = %e, "re-INVITE");
        }
    }

    /// The SIP peer's answer (or early-media preview): start or move the media bridge.
    async fn sip_answer(&mut self, body: &[u8]) {
        let (Some(offer), Some(peer)) = (&self.offer, &self.peer) else {
            return;
        };
        let plan = match Sdp::parse(body).and_then(|a| sdp::plan_from_answer(offer, &a)) {
            Ok(p) => p,
            Err(e) => {
                info!(error = %e, "unusable SDP answer");
                return;
            }
        };
        let Some(side) = sip_side(&plan, peer) else {
            info!(codec = %plan.codec, "the peer's codec cannot be bridged");
            return;
        };
        self.leg.sip_codec = Some(plan.codec.clone());
        if let Some(m) = &self.leg.media {
            m.update_sip(side).await;
            return;
        }
        let Some(pair) = self.leg.sip_pair.take() else {
            return;
        };
        let server = &self.description.server_directives;
        let codec = RiptCodec::from_directive(server)
            .unwrap_or(RiptCodec(ript_proto::chunk::PayloadType::PCMU));
        match CallMedia::start(
            pair,
            side,
            codec,
            RiptSink::Server(self.ript.clone()),
            directive_ids(server),
        ) {
            Ok(mut m) => {
                m.relay_on_ript_task().await;
                self.leg.media = Some(m);
            }
            Err(e) => warn!(error = %e, "no media bridge"),
        }
    }

    async fn run_loop(&mut self) {
        let mut digits: Option<mpsc::Receiver<BridgeEvent>> = None;
        while !self.leg.done {
            if digits.is_none() {
                digits = self.leg.media.as_mut().and_then(|m| m.digits.take());
            }
            let deadline = self.leg.core.poll_timeout();
            tokio::select! {
                ev = opt_session(self.sip.as_mut()) => match ev {
                    Some(ev) => self.on_sip(ev).await,
                    None => {
                        self.sip = None;
                        let input = if self.answered { SipInput::Bye } else { SipInput::Failed { status: 500 } };
                        let _ = self.leg.core.handle_sip(now(), wall_ms(), input);
                    }
                },
                ev = opt_recv(self.events.as_mut()) => self.on_ript(ev).await,
                d = opt_recv(digits.as_mut()) => match d {
                    Some(BridgeEvent::Digit { from_leg_b: true, digit, duration_ms }) => {
                        if let Some(sip) = &self.sip {
                            info_digit_out(sip, digit, duration_ms).await;
                        }
                    }
                    Some(_) => {}
                    None => digits = None,
                },
                () = opt_hang_up(self.leg.live.as_mut()) => self.leg.hang_up(),
                end = opt_media_end(self.leg.media.as_mut()) => self.leg.media_ended(end),
                () = opt_sleep(deadline) => {
                    self.leg.core.handle_timeout(now(), wall_ms());
                }
            }
            self.drain().await;
        }
    }

    async fn on_sip(&mut self, ev: SessionEvent) {
        debug!(event = ?ev, "sip");
        match &ev {
            // Rare steps are boxed (see the module documentation).
            SessionEvent::EarlyMedia { body } => {
                Box::pin(self.sip_answer(body)).await;
                let _ = self.leg.core.handle_sip(
                    now(),
                    wall_ms(),
                    SipInput::Provisional {
                        status: 183,
                        has_sdp: true,
                    },
                );
                return;
            }
            SessionEvent::RemoteAnswer { body } => {
                Box::pin(self.sip_answer(body)).await;
                return;
            }
            SessionEvent::Info(req) => {
                self.leg.info_digit_in(req).await;
                return;
            }
            SessionEvent::RemoteOffer { body, .. } => {
                // The peer's re-INVITE or UPDATE (hold, a move): same port and codecs.
                self.peer_reoffer(body).await;
                return;
            }
            SessionEvent::Answered => self.answered = true,
            _ => {}
        }
        if let Some(input) = outbound_sip_input(&ev, self.answered)
            && let Err(e) = self.leg.core.handle_sip(now(), wall_ms(), input)
        {
            debug!(error = %e, "sip input ignored");
        }
    }

    async fn peer_reoffer(&mut self, body: &[u8]) {
        let (Some(sip), Some(peer)) = (&self.sip, &self.peer) else {
            return;
        };
        let port = self
            .offer
            .as_ref()
            .and_then(|o| o.media.first().map(|m| m.port))
            .unwrap_or(0);
        Box::pin(self.leg.answer_reoffer(sip, peer, port, body)).await;
    }

    async fn on_ript(&mut self, ev: Option<CallEvent>) {
        match ev {
            Some(CallEvent::Media(m)) => {
                if let Some(media) = self.leg.media.as_mut() {
                    media.relay_to_sip(m);
                }
            }
            Some(CallEvent::State(kind, reason)) | Some(CallEvent::Ended(kind, reason)) => {
                if let Err(e) =
                    self.leg
                        .core
                        .handle_ript(now(), wall_ms(), RiptInput::Event { kind, reason })
                {
                    debug!(error = %e, "ript event ignored");
                }
            }
            Some(other) => debug!(event = ?other, "ript"),
            None => {
                self.events = None;
                let _ = self
                    .leg
                    .core
                    .handle_ript(now(), wall_ms(), RiptInput::LegLost);
            }
        }
    }
}

async fn opt_session(c: Option<&mut sip_ua::Call>) -> Option<SessionEvent> {
    match c {
        Some(c) => c.next_event().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn user_parts_of_sip_and_tel_uris() {
        assert_eq!(
            uri_user("sip:+14085551000@gw.example;transport=udp"),
            "+14085551000"
        );
        assert_eq!(uri_user("<sips:alice@[::1]:5061>"), "alice");
        assert_eq!(uri_user("sip:127.0.0.1:5060"), "");
        assert_eq!(uri_user("sip:host;maddr=x@y"), "");
        assert_eq!(uri_user("tel:+14085551000;phone-context=x"), "+14085551000");
        assert_eq!(uri_user("nonsense"), "");
    }

    fn hosted(id: &str, tenant: &str, entries: &[(&str, Option<&str>)]) -> store::hosted::HostedTg {
        store::hosted::HostedTg {
            id: id.into(),
            tenant: tenant.into(),
            name: id.into(),
            enabled: true,
            vouched_numbers: vec![],
            destination_pattern: "*".into(),
            advertisement: serde_json::Value::Null,
            customer_tgs: entries
                .iter()
                .map(|(name, token)| store::hosted::CustomerTg {
                    name: (*name).into(),
                    url: format!("https://{name}.example/tg"),
                    token: token.map(store::Secret::new),
                })
                .collect(),
            customer_tg_trust_anchors_pem: None,
            require_passport: false,
            max_cps: None,
            max_concurrent: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn customer_tgs_of_the_target_first_then_its_tenants() {
        let mut target = hosted("t", "acme", &[("a", Some("ta")), ("notoken", None)]);
        target.customer_tg_trust_anchors_pem = Some("target-pem".into());
        let mut other = hosted("o", "acme", &[("b", Some("tb"))]);
        other.customer_tg_trust_anchors_pem = Some("other-pem".into());
        let foreign = hosted("f", "globex", &[("c", Some("tc"))]);
        let mut off = hosted("d", "acme", &[("e", Some("te"))]);
        off.enabled = false;
        let snap = Snapshot {
            hosted: vec![other, foreign, off, target],
            ..Snapshot::default()
        };
        let specs = customer_tg_specs(&snap, "t");
        let got: Vec<(&str, &str, Option<&str>)> = specs
            .iter()
            .map(|s| (s.label.as_str(), s.token.as_str(), s.trust_pem.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("a", "ta", Some("target-pem")),
                ("b", "tb", Some("other-pem"))
            ]
        );
        assert_eq!(specs[0].tg_uri, "https://a.example/tg");
        // Keys never meet an upstream's, nor another hosted TG's entry of the same name.
        assert_eq!(specs[0].key, "customer_tg:t:a");
        assert!(customer_tg_specs(&snap, "d").is_empty(), "disabled target");
        assert!(customer_tg_specs(&snap, "missing").is_empty());
    }

    #[test]
    fn a_customer_tg_client_is_rebuilt_only_when_its_own_entry_changes() {
        let t = hosted("t", "acme", &[("a", Some("ta")), ("b", Some("tb"))]);
        let snap = Snapshot {
            hosted: vec![t.clone()],
            ..Snapshot::default()
        };
        let v1 = customer_tg_specs(&snap, "t")[0].version.clone();
        let mut t2 = t.clone();
        t2.updated_at = 99;
        t2.customer_tgs.pop();
        let snap = Snapshot {
            hosted: vec![t2.clone()],
            ..Snapshot::default()
        };
        assert_eq!(customer_tg_specs(&snap, "t")[0].version, v1);
        t2.customer_tgs[0].token = Some(store::Secret::new("new"));
        let snap = Snapshot {
            hosted: vec![t2],
            ..Snapshot::default()
        };
        assert_ne!(customer_tg_specs(&snap, "t")[0].version, v1);
        assert!(!format!("{:?}", customer_tg_specs(&snap, "t")[0]).contains("new"));
    }

    #[test]
    fn tg_uris_from_roots() {
        assert_eq!(
            tg_uri("https://p.example:8443", "tg1"),
            "https://p.example:8443/.well-known/ript/v1/providertgs/tg1"
        );
        assert_eq!(
            tg_uri("https://p.example/.well-known/ript/v1/", "tg1"),
            "https://p.example/.well-known/ript/v1/providertgs/tg1"
        );
        assert_eq!(tg_uri("https://x", "https://y/tg"), "https://y/tg");
        assert_eq!(
            ript_root("https://p.example:8443/"),
            "https://p.example:8443/.well-known/ript/v1"
        );
    }
}
