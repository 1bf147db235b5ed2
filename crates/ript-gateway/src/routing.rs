//! Routing over a snapshot of the store: which SIP peer a request comes from, where a call to
//! a number goes (ordered targets, failover order), E.164 normalisation per peer, and the
//! calls-per-second and concurrency caps of peers, upstreams and hosted TGs.
//!
//! The snapshot is rebuilt when the store's configuration version moves (polled each second,
//! so a change made on any instance sharing the database applies to the next call), and a
//! call routes on the snapshot current when it arrived.

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use store::model::{Endpoint, EndpointKind};
use tracing::{info, warn};

/// The configuration calls are routed on.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub version: i64,
    pub peers: Vec<store::peer::SipPeer>,
    pub upstreams: Vec<store::upstream::RiptUpstream>,
    pub hosted: Vec<store::hosted::HostedTg>,
    pub routes: Vec<store::route::Route>,
}

/// Why a call has nowhere to go.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoRoute {
    #[error("no route from this source matches the destination")]
    Unmatched,
    #[error("the matching route has no usable target")]
    NoTarget,
}

/// Every row of one repository, page by page.
macro_rules! all {
    ($repo:expr) => {{
        let mut out = Vec::new();
        let mut page = store::Page::first(store::Page::MAX_LIMIT);
        loop {
            let batch = $repo.list(&store::Scope::Admin, page).await?;
            let n = batch.len();
            out.extend(batch);
            if n < store::Page::MAX_LIMIT as usize {
                break out;
            }
            page.offset += n as u64;
        }
    }};
}

impl Snapshot {
    pub async fn load(st: &store::Store, version: i64) -> store::Result<Snapshot> {
        Ok(Snapshot {
            version,
            peers: all!(st.sip_peers()),
            upstreams: all!(st.ript_upstreams()),
            hosted: all!(st.hosted_tgs()),
            routes: all!(st.routes()),
        })
    }

    pub fn peer(&self, id: &str) -> Option<&store::peer::SipPeer> {
        self.peers.iter().find(|p| p.id == id && p.enabled)
    }

    pub fn upstream(&self, id: &str) -> Option<&store::upstream::RiptUpstream> {
        self.upstreams.iter().find(|u| u.id == id && u.enabled)
    }

    pub fn hosted_tg(&self, id: &str) -> Option<&store::hosted::HostedTg> {
        self.hosted.iter().find(|h| h.id == id && h.enabled)
    }

    /// The enabled peer whose digest username is `user`.
    pub fn peer_by_user(&self, user: &str) -> Option<&store::peer::SipPeer> {
        self.peers
            .iter()
            .filter(|p| p.enabled)
            .find(|p| p.inbound_auth.as_ref().is_some_and(|d| d.username == user))
    }

    /// The enabled peer that admits `ip` by its allow-list (or, when it has none, by the IP
    /// literals among its addresses). The most specific allow-list entry wins.
    pub fn peer_by_ip(&self, ip: IpAddr) -> Option<&store::peer::SipPeer> {
        let mut best: Option<(u8, &store::peer::SipPeer)> = None;
        for p in self.peers.iter().filter(|p| p.enabled) {
            for c in peer_sources(p) {
                if c.contains(ip) && best.is_none_or(|(len, _)| c.prefix() > len) {
                    best = Some((c.prefix(), p));
                }
            }
        }
        best.map(|(_, p)| p)
    }

    /// Targets for a call from `source` to `dest` (E.164) from `caller`, in the order to try:
    /// the first matching enabled route (lowest priority value), its targets by priority,
    /// weighted-shuffled within a priority. Disabled or missing targets are left out.
    pub fn route(
        &self,
        source: &Endpoint,
        dest: &str,
        caller: &str,
        rng: &mut impl rand::Rng,
    ) -> Result<(String, Vec<Endpoint>), NoRoute> {
        let mut candidates: Vec<&store::route::Route> = self
            .routes
            .iter()
            .filter(|r| r.enabled && r.source == *source)
            .filter(|r| pattern_matches(&r.destination_pattern, dest))
            .filter(|r| {
                r.caller_pattern
                    .as_deref()
                    .is_none_or(|p| pattern_matches(p, caller))
            })
            .collect();
        candidates.sort_by_key(|r| (r.priority, r.name.clone()));
        let route = candidates.first().ok_or(NoRoute::Unmatched)?;
        let mut targets: Vec<&store::route::RouteTarget> = route
            .targets
            .iter()
            .filter(|t| self.usable(&t.endpoint))
            .collect();
        targets.sort_by_key(|t| t.priority);
        let mut ordered = Vec::with_capacity(targets.len());
        for group in targets.chunk_by(|a, b| a.priority == b.priority) {
            ordered.extend(
                weighted_order(group, rng)
                    .into_iter()
                    .map(|t| t.endpoint.clone()),
            );
        }
        if ordered.is_empty() {
            return Err(NoRoute::NoTarget);
        }
        Ok((route.id.clone(), ordered))
    }

    /// Whether some enabled route from `source` serves `dest` with a usable target (caller
    /// patterns aside: the caller is not known yet where this is asked).
    pub fn has_route(&self, source: &Endpoint, dest: &str) -> bool {
        self.routes.iter().any(|r| {
            r.enabled
                && r.source == *source
                && pattern_matches(&r.destination_pattern, dest)
                && r.targets.iter().any(|t| self.usable(&t.endpoint))
        })
    }

    fn usable(&self, e: &Endpoint) -> bool {
        match e.kind {
            EndpointKind::SipPeer => self.peer(&e.id).is_some(),
            EndpointKind::Upstream => self.upstream(&e.id).is_some(),
            // A hosted TG as a target means "toward that customer's registered customer TGs".
            EndpointKind::HostedTg => self.hosted_tg(&e.id).is_some(),
        }
    }
}

/// Weighted random order without replacement (weight 0 goes last).
fn weighted_order<'a>(
    group: &[&'a store::route::RouteTarget],
    rng: &mut impl rand::Rng,
) -> Vec<&'a store::route::RouteTarget> {
    let mut left: Vec<&store::route::RouteTarget> = group.to_vec();
    let mut out = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let total: u64 = left.iter().map(|t| u64::from(t.weight)).sum();
        let pick = if total == 0 {
            0
        } else {
            let mut x = rng.random_range(0..total);
            left.iter()
                .position(|t| {
                    let w = u64::from(t.weight);
                    if x < w {
                        true
                    } else {
                        x -= w;
                        false
                    }
                })
                .unwrap_or(0)
        };
        out.push(left.remove(pick));
    }
    out
}

fn pattern_matches(pattern: &str, number: &str) -> bool {
    ript_proto::pattern::NumberPattern::from_str(pattern).is_ok_and(|p| p.matches(number))
}

fn peer_sources(p: &store::peer::SipPeer) -> Vec<crate::sip::Cidr> {
    let entries: Vec<String> = if p.allow_list.is_empty() {
        p.addresses
            .iter()
            .filter_map(|h| host_ip(h).map(|ip| ip.to_string()))
            .collect()
    } else {
        p.allow_list.clone()
    };
    entries.iter().filter_map(|c| c.parse().ok()).collect()
}

/// The IP literal of `host[:port]` / `[v6]:port`, if it is one.
pub fn host_ip(h: &str) -> Option<IpAddr> {
    if let Ok(ip) = h.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = h.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    let host = h.rsplit_once(':').map_or(h, |(h, _)| h);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// A number from a peer (Request-URI or From user part) in E.164, by the peer's rules: the
/// tech prefix is stripped, visual separators dropped; `+` numbers are kept, numbers starting
/// with the national prefix get the country code, other digit strings are taken as E.164
/// without the `+`. `None` when nothing like a number remains.
pub fn to_e164(rules: &store::peer::NumberRules, raw: &str) -> Option<String> {
    let mut s = raw.trim();
    if let Some(tp) = rules.tech_prefix.as_deref().filter(|t| !t.is_empty()) {
        s = s.strip_prefix(tp).unwrap_or(s);
    }
    let plus = s.starts_with('+');
    let digits: String = s
        .chars()
        .filter(|c| !matches!(c, '-' | '.' | '(' | ')' | ' ' | '+'))
        .collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let e164 = if plus {
        format!("+{digits}")
    } else {
        match (
            rules.national_prefix.as_deref().filter(|p| !p.is_empty()),
            rules.country_code.as_deref().filter(|c| !c.is_empty()),
        ) {
            (Some(np), Some(cc)) if digits.starts_with(np) => {
                format!("+{cc}{}", digits.get(np.len()..).unwrap_or(""))
            }
            _ => format!("+{digits}"),
        }
    };
    ript_proto::pattern::is_e164(&e164).then_some(e164)
}

/// An E.164 number as the peer wants it: `+` kept or stripped, tech prefix in front.
pub fn from_e164(rules: &store::peer::NumberRules, e164: &str) -> String {
    let n = match rules.plus {
        store::peer::PlusHandling::Keep => e164.to_owned(),
        store::peer::PlusHandling::Strip => e164.trim_start_matches('+').to_owned(),
    };
    match rules.tech_prefix.as_deref() {
        Some(tp) => format!("{tp}{n}"),
        None => n,
    }
}

/// Keeps `tx` equal to the store's configuration; see the module documentation.
pub async fn follow(
    st: store::Store,
    tx: tokio::sync::watch::Sender<Arc<Snapshot>>,
    metrics: admin_api::Metrics,
) {
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
                warn!(error = %e, "configuration version unreadable; keeping the last routes");
                continue;
            }
        };
        if seen == Some(v) {
            continue;
        }
        match Snapshot::load(&st, v).await {
            Ok(s) => {
                info!(
                    version = v,
                    peers = s.peers.len(),
                    upstreams = s.upstreams.len(),
                    hosted_tgs = s.hosted.len(),
                    routes = s.routes.len(),
                    "routing configuration loaded"
                );
                metrics.config_reloaded();
                metrics.config_objects("sip_peers", s.peers.len());
                metrics.config_objects("upstreams", s.upstreams.len());
                metrics.config_objects("hosted_tgs", s.hosted.len());
                metrics.config_objects("routes", s.routes.len());
                tx.send_replace(Arc::new(s));
                seen = Some(v);
            }
            Err(e) => warn!(error = %e, "routing configuration unreadable; keeping the last"),
        }
    }
}

/// Calls-per-second and concurrency caps per endpoint (peer, upstream, hosted TG). Counted
/// per instance: instances sharing a database each enforce the cap.
#[derive(Debug, Default)]
pub struct Limits {
    state: Mutex<HashMap<Endpoint, Usage>>,
}

#[derive(Debug, Default)]
struct Usage {
    /// Start of the current one-second window and the calls admitted in it.
    window: Option<tokio::time::Instant>,
    in_window: u32,
    active: u32,
}

/// Why a cap refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Capped {
    #[error("calls per second cap reached")]
    Cps,
    #[error("concurrent calls cap reached")]
    Concurrent,
}

impl Capped {
    /// Seconds a refused caller should wait (SIP Retry-After, RIPT Retry-After).
    pub fn retry_after(self) -> u32 {
        match self {
            Capped::Cps => 1,
            Capped::Concurrent => 5,
        }
    }
}

/// One admitted call; dropping it frees its concurrency slot.
#[derive(Debug)]
pub struct Slot {
    limits: Arc<Limits>,
    endpoint: Endpoint,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut st = self
            .limits
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(u) = st.get_mut(&self.endpoint) {
            u.active = u.active.saturating_sub(1);
        }
    }
}

impl Limits {
    /// Whether [`Limits::admit`] would refuse a call now (nothing is counted).
    pub fn would_refuse(
        &self,
        endpoint: &Endpoint,
        cps: Option<u32>,
        concurrent: Option<u32>,
    ) -> bool {
        let now = tokio::time::Instant::now();
        let st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(u) = st.get(endpoint) else {
            return cps == Some(0) || concurrent == Some(0);
        };
        let fresh = u
            .window
            .is_none_or(|w| now.duration_since(w) >= Duration::from_secs(1));
        let in_window = if fresh { 0 } else { u.in_window };
        cps.is_some_and(|c| in_window >= c) || concurrent.is_some_and(|c| u.active >= c)
    }

    /// Admits one call on `endpoint` under `cps` and `concurrent` (either may be unset).
    pub fn admit(
        self: &Arc<Self>,
        endpoint: &Endpoint,
        cps: Option<u32>,
        concurrent: Option<u32>,
    ) -> Result<Slot, Capped> {
        let now = tokio::time::Instant::now();
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let u = st.entry(endpoint.clone()).or_default();
        if u.window
            .is_none_or(|w| now.duration_since(w) >= Duration::from_secs(1))
        {
            u.window = Some(now);
            u.in_window = 0;
        }
        if cps.is_some_and(|c| u.in_window >= c) {
            return Err(Capped::Cps);
        }
        if concurrent.is_some_and(|c| u.active >= c) {
            return Err(Capped::Concurrent);
        }
        u.in_window += 1;
        u.active += 1;
        Ok(Slot {
            limits: Arc::clone(self),
            endpoint: endpoint.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::peer::{NumberRules, PlusHandling};

    fn rules(
        cc: Option<&str>,
        np: Option<&str>,
        plus: PlusHandling,
        tp: Option<&str>,
    ) -> NumberRules {
        NumberRules {
            country_code: cc.map(str::to_owned),
            national_prefix: np.map(str::to_owned),
            plus,
            tech_prefix: tp.map(str::to_owned),
        }
    }

    #[test]
    fn numbers_normalise_to_e164_and_back() {
        let uk = rules(Some("44"), Some("0"), PlusHandling::Strip, Some("9#"));
        assert_eq!(
            to_e164(&uk, "9#02079460000").as_deref(),
            Some("+442079460000")
        );
        assert_eq!(
            to_e164(&uk, "+1 (408) 555-1000").as_deref(),
            Some("+14085551000")
        );
        assert_eq!(
            to_e164(&uk, "442079460000").as_deref(),
            Some("+442079460000")
        );
        assert_eq!(from_e164(&uk, "+442079460000"), "9#442079460000");
        let plain = NumberRules::default();
        assert_eq!(
            to_e164(&plain, "+14085551000").as_deref(),
            Some("+14085551000")
        );
        assert_eq!(from_e164(&plain, "+14085551000"), "+14085551000");
        for bad in ["", "alice", "+", "+1408x"] {
            assert_eq!(to_e164(&plain, bad), None, "{bad}");
        }
    }

    #[test]
    fn weighted_order_keeps_every_target_once() {
        let t = |w| store::route::RouteTarget {
            endpoint: Endpoint {
                kind: EndpointKind::SipPeer,
                id: format!("w{w}"),
            },
            priority: 1,
            weight: w,
        };
        let ts = [t(0), t(1), t(5)];
        let refs: Vec<&store::route::RouteTarget> = ts.iter().collect();
        let mut rng = rand::rng();
        let mut first_heavy = 0;
        for _ in 0..200 {
            let o = weighted_order(&refs, &mut rng);
            assert_eq!(o.len(), 3);
            assert_eq!(o.last().map(|t| t.weight), Some(0), "weight 0 goes last");
            if o.first().map(|t| t.weight) == Some(5) {
                first_heavy += 1;
            }
        }
        // 5:1 odds; 200 draws put the heavy one first far more often than not.
        assert!(first_heavy > 120, "{first_heavy}");
    }

    #[tokio::test(start_paused = true)]
    async fn caps_refuse_beyond_cps_and_concurrency() {
        let limits = Arc::new(Limits::default());
        let e = Endpoint {
            kind: EndpointKind::SipPeer,
            id: "p".into(),
        };
        let a = limits.admit(&e, Some(2), Some(3)).unwrap();
        let _b = limits.admit(&e, Some(2), Some(3)).unwrap();
        assert_eq!(limits.admit(&e, Some(2), Some(3)).unwrap_err(), Capped::Cps);
        tokio::time::advance(Duration::from_secs(1)).await;
        let _c = limits.admit(&e, Some(2), Some(3)).unwrap();
        assert_eq!(
            limits.admit(&e, Some(2), Some(3)).unwrap_err(),
            Capped::Concurrent
        );
        drop(a);
        assert!(limits.admit(&e, Some(2), Some(3)).is_ok());
    }
}
