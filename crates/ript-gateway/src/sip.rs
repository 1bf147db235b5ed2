//! The gateway's SIP service (until call mapping exists): OPTIONS keepalives, a registrar for
//! configured PBXs, and a clean 404 for INVITEs (no route yet). SIP peers are admitted only by
//! an IP allow-list or by digest authentication (RFC 3261 §22, RFC 8760).

use sip_proto::digest::{Algorithm, Challenger, Credentials, NonceIssuer, Role, Secret};
use sip_proto::msg::{Contacts, Request, Response};
use sip_transport::{Incoming, Responder};
use std::collections::HashMap;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// An IP network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, prefix) = match s.trim().split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s.trim(), None),
        };
        let net: IpAddr = ip
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?} has a bad prefix length"))?,
            None => max,
        };
        Ok(Cidr { net, prefix })
    }
}

impl Cidr {
    /// The prefix length: larger is more specific.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Who may talk to us.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    pub allow: Vec<Cidr>,
    /// Digest users: username → password.
    pub users: HashMap<String, String>,
    /// Challenge algorithms in offer order (RFC 8760: strongest first); empty = SHA-256, MD5.
    pub algorithms: Vec<Algorithm>,
}

pub const REALM: &str = "ript-gateway";
const MAX_EXPIRES: u32 = 3600;

struct Binding {
    contact: String,
    until: Instant,
}

struct Service {
    /// The configured admission plus the store's SIP peers (refreshed from `peers`).
    admission: Admission,
    /// The configured admission alone.
    base: Admission,
    peers: tokio::sync::watch::Receiver<Admission>,
    challenger: Option<Challenger>,
    bindings: HashMap<String, Vec<Binding>>,
    responder: Responder,
}

fn random16() -> [u8; 16] {
    uuid::Uuid::new_v4().into_bytes()
}

/// Runs the SIP service on `ua` until it closes: OPTIONS, REGISTER and the rest answered
/// here, INVITEs admitted (allow-list or digest) and handed to a call task toward RIPT when
/// `calls` is given (404 without one).
///
/// `peers` carries the admission the store's SIP peers add (allow-lists, digest users); it
/// changes without a restart when the configuration does.
pub async fn serve(
    mut ua: sip_ua::UserAgent,
    admission: Admission,
    peers: tokio::sync::watch::Receiver<Admission>,
    calls: Option<Arc<crate::calls::Gw>>,
) {
    // Always ready to challenge: digest users may arrive with the configuration later.
    let challenger = {
        let secret: Vec<u8> = random16()
            .iter()
            .chain(random16().iter())
            .copied()
            .collect();
        match NonceIssuer::new(&secret) {
            Ok(issuer) => {
                let ch = Challenger::new(REALM, Role::Uas, issuer);
                if admission.algorithms.is_empty() {
                    Some(ch)
                } else {
                    match ch.with_algorithms(admission.algorithms.clone()) {
                        Ok(ch) => Some(ch),
                        Err(e) => {
                            warn!(error = %e, "digest algorithms refused; digest authentication disabled");
                            None
                        }
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, "digest authentication disabled");
                None
            }
        }
    };
    let mut svc = Service {
        admission: admission.clone(),
        base: admission,
        peers,
        challenger,
        bindings: HashMap::new(),
        responder: ua.handle(),
    };
    while let Some(ev) = ua.next_event().await {
        if svc.peers.has_changed().unwrap_or(false) {
            let extra = svc.peers.borrow_and_update().clone();
            svc.admission = svc.base.clone();
            svc.admission.allow.extend(extra.allow);
            // Configured users win over a store peer of the same name.
            for (u, p) in extra.users {
                svc.admission.users.entry(u).or_insert(p);
            }
        }
        match ev {
            sip_ua::UaEvent::Request(inc) => {
                let resp = svc.handle(&inc);
                if let Some(resp) = resp
                    && let Err(e) = svc.responder.respond(inc.txn, resp).await
                {
                    warn!(error = %e, "sip endpoint closed");
                    return;
                }
            }
            sip_ua::UaEvent::Call(ic) => svc.call(ic, calls.as_ref()),
            _ => {}
        }
    }
}

impl Service {
    /// An INVITE: admitted, its peer identified, and handed to a call task (which answers
    /// it); refusals answered here, in a task of their own (the loop never waits on a call).
    fn call(&self, ic: sip_ua::IncomingCall, calls: Option<&Arc<crate::calls::Gw>>) {
        match self.caller_peer(&ic, calls) {
            // The call's own future is spawned as it is: wrapped in another one, it would
            // carry this function's state for the whole call.
            Ok((gw, peer)) => {
                tokio::spawn(crate::calls::sip_to_ript(gw, ic, peer));
            }
            Err(r) => {
                tokio::spawn(async move {
                    let _ = ic.call.reject_with(r.status, r.headers).await;
                });
            }
        }
    }

    /// The SIP peer an INVITE comes from (by its digest user, else by its source address)
    /// and the gateway that routes it; the refusal when it is not admitted or from no
    /// configured peer.
    fn caller_peer(
        &self,
        ic: &sip_ua::IncomingCall,
        calls: Option<&Arc<crate::calls::Gw>>,
    ) -> Result<(Arc<crate::calls::Gw>, store::peer::SipPeer), Refusal> {
        let user = self.admit(&ic.request, ic.source)?;
        let Some(gw) = calls else {
            return Err(Refusal::status(404));
        };
        let snap = gw.routing.borrow().clone();
        let peer = user
            .as_deref()
            .and_then(|u| snap.peer_by_user(u))
            .or_else(|| snap.peer_by_ip(ic.source.ip()));
        match peer {
            Some(p) => Ok((Arc::clone(gw), p.clone())),
            None => {
                // Admitted by the static allow-list or users, which name no peer and so no
                // route.
                info!(source = %ic.source, "INVITE from no configured SIP peer: 404");
                Err(Refusal::status(404))
            }
        }
    }
}

/// Why a request was not admitted: the status and headers (challenges) to answer with.
#[derive(Debug, Clone)]
struct Refusal {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Refusal {
    fn status(status: u16) -> Self {
        Refusal {
            status,
            headers: Vec::new(),
        }
    }

    fn response(&self, req: &Request) -> Option<Response> {
        let phrase = match self.status {
            400 => "Bad Request",
            401 => "Unauthorized",
            _ => "Forbidden",
        };
        let mut r = reply(req, self.status, phrase)?;
        for (n, v) in &self.headers {
            let _ = r.headers_mut().push(n, v);
        }
        Some(r)
    }
}

/// A response with a fresh To tag (RFC 3261 §8.2.6.2); `None` only if the request lacks what
/// a response copies, which the transport already refused.
fn reply(req: &Request, code: u16, reason: &str) -> Option<Response> {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    match Response::for_request(req, code, reason, tag.get(..16).unwrap_or(&tag)) {
        Ok(r) => Some(r),
        Err(e) => {
            warn!(error = %e, code, "cannot build a response");
            None
        }
    }
}

impl Service {
    fn handle(&mut self, inc: &Incoming) -> Option<Response> {
        let req = &inc.request;
        let method = req.method().as_str().to_ascii_uppercase();
        let call_id = req.headers().call_id().unwrap_or("-");
        debug!(%method, call_id, source = %inc.source, "sip request");
        if method == "OPTIONS" {
            // Keepalives are answered for anyone: they reveal nothing and peers probe with them.
            let mut r = reply(req, 200, "OK")?;
            let _ = r.headers_mut().push("Allow", sip_transport::ALLOW);
            let _ = r.headers_mut().push("Accept", "application/sdp");
            return Some(r);
        }
        if method == "ACK" {
            return None;
        }
        if let Err(r) = self.admit(req, inc.source) {
            return r.response(req);
        }
        match method.as_str() {
            "REGISTER" => self.register(req),
            _ => reply(req, 481, "Call/Transaction Does Not Exist"),
        }
    }

    /// Ok when the source is allow-listed (`None`) or the request carries valid credentials
    /// (the digest user); otherwise the refusal: a digest challenge (401), 403 when no users
    /// are configured, 400 for malformed credentials.
    fn admit(&self, req: &Request, source: SocketAddr) -> Result<Option<String>, Refusal> {
        if self.admission.allow.iter().any(|c| c.contains(source.ip())) {
            return Ok(None);
        }
        let ch = match &self.challenger {
            Some(ch) if !self.admission.users.is_empty() => ch,
            _ => {
                info!(%source, "sip peer not allow-listed: 403");
                return Err(Refusal::status(403));
            }
        };
        let mut stale = false;
        if let Some(v) = req.headers().get("Authorization") {
            match Credentials::parse(v) {
                Ok(creds) => {
                    let users = &self.admission.users;
                    let lookup = |user: &str, _realm: &str, _alg: &Algorithm| {
                        users.get(user).map(|p| Secret::Password(p.clone()))
                    };
                    match ch.verify(
                        &creds,
                        req.method().as_str(),
                        req.uri(),
                        ript_h3::wall_ms(),
                        lookup,
                    ) {
                        Ok(()) => return Ok(Some(creds.username.clone())),
                        Err(e) => {
                            stale = matches!(e, sip_proto::digest::AuthError::Stale);
                            info!(%source, error = %e, digest_uri = %creds.uri, request_uri = %req.uri(), "digest authentication failed");
                            if e.reaction() == sip_proto::digest::Reaction::BadRequest {
                                return Err(Refusal::status(400));
                            }
                        }
                    }
                }
                Err(_) => return Err(Refusal::status(400)),
            }
        }
        let headers = ch
            .challenges(ript_h3::wall_ms(), &random16(), stale)
            .iter()
            .filter_map(|c| c.to_header_value().ok())
            .map(|v| ("WWW-Authenticate".to_owned(), v))
            .collect();
        Err(Refusal {
            status: 401,
            headers,
        })
    }

    /// RFC 3261 §10.3: bindings per address-of-record with expiry.
    fn register(&mut self, req: &Request) -> Option<Response> {
        let Ok(to) = req.headers().to() else {
            return reply(req, 400, "Bad Request");
        };
        let aor = to.uri.clone();
        let default_expires = req
            .headers()
            .expires()
            .ok()
            .flatten()
            .unwrap_or(MAX_EXPIRES)
            .min(MAX_EXPIRES);
        let now = Instant::now();
        match req.headers().contacts() {
            Ok(Contacts::Wildcard) => {
                if default_expires != 0 {
                    return reply(req, 400, "Bad Request");
                }
                self.bindings.remove(&aor);
            }
            Ok(Contacts::Addrs(list)) => {
                let entry = self.bindings.entry(aor.clone()).or_default();
                entry.retain(|b| b.until > now);
                for c in list {
                    let secs = c
                        .param("expires")
                        .flatten()
                        .and_then(|v| v.parse::<u32>().ok())
                        .unwrap_or(default_expires)
                        .min(MAX_EXPIRES);
                    entry.retain(|b| b.contact != c.uri);
                    if secs > 0 {
                        entry.push(Binding {
                            contact: c.uri.clone(),
                            until: now + Duration::from_secs(u64::from(secs)),
                        });
                    }
                }
                info!(aor = %sip_redacted(&aor), bindings = entry.len(), "registered");
            }
            Err(_) => return reply(req, 400, "Bad Request"),
        }
        let mut r = reply(req, 200, "OK")?;
        if let Some(bs) = self.bindings.get(&aor) {
            for b in bs {
                let left = b.until.saturating_duration_since(now).as_secs();
                let _ = r
                    .headers_mut()
                    .push("Contact", &format!("<{}>;expires={left}", b.contact));
            }
        }
        Some(r)
    }
}

/// Addresses of record contain phone numbers: keep only the domain at info level.
fn sip_redacted(aor: &str) -> String {
    match aor.split_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => "***".to_owned(),
    }
}

/// One `sip.register` entry: `user:password@host:port[/transport]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub user: String,
    pub password: String,
    pub host: String,
    pub port: u16,
    pub transport: sip_transport::Transport,
}

impl std::str::FromStr for Upstream {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (cred, rest) = s
            .rsplit_once('@')
            .ok_or("expected user:password@host:port[/transport]")?;
        let (user, password) = cred.split_once(':').ok_or("expected user:password@…")?;
        if user.is_empty() || password.is_empty() {
            return Err("empty user or password".into());
        }
        let (hostport, transport) = match rest.split_once('/') {
            Some((hp, t)) => (hp, t),
            None => (rest, "udp"),
        };
        let transport = match transport.to_ascii_lowercase().as_str() {
            "udp" => sip_transport::Transport::Udp,
            "tcp" => sip_transport::Transport::Tcp,
            "tls" => sip_transport::Transport::Tls,
            other => return Err(format!("unknown transport {other}")),
        };
        let bad_port = || format!("bad port in {hostport}");
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("bad host in {hostport}"))?;
            match after.strip_prefix(':') {
                Some(p) => (h, p.parse::<u16>().map_err(|_| bad_port())?),
                None if after.is_empty() => (h, transport.default_port()),
                None => return Err(format!("bad host in {hostport}")),
            }
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad_port())?),
                None => (hostport, transport.default_port()),
            }
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '@') {
            return Err(format!("bad host in {hostport}"));
        }
        Ok(Upstream {
            user: user.to_owned(),
            password: password.to_owned(),
            host: host.to_owned(),
            port,
            transport,
        })
    }
}

/// Starts every upstream registration. Hosts come from the operator's configuration, so they
/// are resolved here (never hosts from messages).
pub async fn start_registrations(
    endpoint: &sip_transport::Endpoint,
    upstreams: &[Upstream],
) -> anyhow::Result<Vec<sip_ua::RegistrationHandle>> {
    let mut out = Vec::new();
    for up in upstreams {
        let addr = tokio::net::lookup_host((up.host.as_str(), up.port))
            .await?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{}: no address", up.host))?;
        let local = endpoint.local_addr(up.transport).ok_or_else(|| {
            anyhow::anyhow!(
                "no {} listener to register {} from",
                up.transport.as_str(),
                up.host
            )
        })?;
        let host = if up.host.contains(':') {
            format!("[{}]", up.host)
        } else {
            up.host.clone()
        };
        let param = match up.transport {
            sip_transport::Transport::Udp => String::new(),
            t => format!(";transport={}", t.as_str().to_ascii_lowercase()),
        };
        let cfg = sip_proto::register::RegistrationConfig::new(
            format!("sip:{}@{host}", up.user),
            format!("sip:{host}:{}{param}", up.port),
            format!("sip:{}@{local}{param}", up.user),
            up.user.clone(),
            sip_proto::digest::Secret::Password(up.password.clone()),
        );
        let mut target = sip_transport::Target::new(up.transport, addr);
        if up.transport == sip_transport::Transport::Tls {
            target = target.with_server_name(up.host.clone());
        }
        let h = sip_ua::register(endpoint.handle(), cfg, target)?;
        info!(registrar = %addr, user = %up.user, "registering upstream");
        out.push(h);
    }
    Ok(out)
}

/// Removes our upstream bindings on shutdown, waiting at most 2 s in all.
pub async fn unregister_all(regs: Vec<sip_ua::RegistrationHandle>) {
    let all = async {
        for mut r in regs {
            r.unregister().await;
            while let Some(s) = r.changed().await {
                if s == sip_ua::RegState::Unregistered {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), all).await;
}

/// What the store's enabled SIP peers admit: their allow-lists (or, when a peer lists none,
/// the IP literals among its addresses) and their inbound digest credentials.
pub fn peers_admission(peers: &[store::peer::SipPeer]) -> Admission {
    let mut a = Admission::default();
    for p in peers.iter().filter(|p| p.enabled) {
        let sources: Vec<String> = if p.allow_list.is_empty() {
            p.addresses
                .iter()
                .filter_map(|h| {
                    let host = h.rsplit_once(':').map_or(h.as_str(), |(h, _)| h);
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    host.parse::<IpAddr>()
                        .ok()
                        .or_else(|| h.parse::<IpAddr>().ok())
                        .map(|ip| ip.to_string())
                })
                .collect()
        } else {
            p.allow_list.clone()
        };
        for c in sources {
            match c.parse::<Cidr>() {
                Ok(c) => a.allow.push(c),
                Err(e) => warn!(peer = %p.name, error = %e, "allow-list entry ignored"),
            }
        }
        if let Some(d) = &p.inbound_auth {
            a.users
                .insert(d.username.clone(), d.password.expose().to_owned());
        }
    }
    a
}

/// Keeps `tx` equal to what the store's SIP peers admit: polls the store's configuration
/// version every second (a primary-key read) and reloads the peers when it moved, so changes
/// made through the admin API, here or on another instance sharing the database, apply to the
/// next request without a restart.
pub async fn follow_peers(st: store::Store, tx: tokio::sync::watch::Sender<Admission>) {
    let mut seen = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if tx.is_closed() {
            return;
        }
        let v = match st.config_version().await {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "configuration version unreadable; keeping the last peers");
                continue;
            }
        };
        if seen == Some(v) {
            continue;
        }
        let mut peers = Vec::new();
        let mut page = store::Page::first(store::Page::MAX_LIMIT);
        let complete = loop {
            match st.sip_peers().list(&store::Scope::Admin, page).await {
                Ok(batch) => {
                    let n = batch.len();
                    peers.extend(batch);
                    if n < store::Page::MAX_LIMIT as usize {
                        break true;
                    }
                    page.offset += n as u64;
                }
                Err(e) => {
                    warn!(error = %e, "SIP peers unreadable; keeping the last ones");
                    break false;
                }
            }
        };
        if complete {
            info!(version = v, peers = peers.len(), "SIP peers loaded");
            tx.send_replace(peers_admission(&peers));
            seen = Some(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matching() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(
            c.contains("::ffff:10.1.0.9".parse().unwrap()),
            "v4-mapped v6"
        );
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        let any: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(any.contains("192.0.2.1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn upstream_entries_parse_and_refuse() {
        let u: Upstream = "gw:s3cret@10.0.0.5:5070/tcp".parse().unwrap();
        assert_eq!(
            (
                u.user.as_str(),
                u.password.as_str(),
                u.host.as_str(),
                u.port
            ),
            ("gw", "s3cret", "10.0.0.5", 5070)
        );
        assert_eq!(u.transport, sip_transport::Transport::Tcp);
        let u: Upstream = "gw:p@w:rd@sip.example.net".parse().unwrap();
        assert_eq!((u.password.as_str(), u.port), ("p@w:rd", 5060));
        let u: Upstream = "gw:x@[::1]:5062/tls".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 5062));
        let u: Upstream = "gw:x@[::1]/tls".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 5061));
        for bad in [
            "nohost",
            "gw@h:5060",
            ":x@h",
            "gw:x@h:99999",
            "gw:x@h/sctp",
            "gw:x@",
        ] {
            assert!(bad.parse::<Upstream>().is_err(), "{bad}");
        }
    }
}
