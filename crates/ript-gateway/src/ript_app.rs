//! The RIPT server's application backed by the store: bearer tokens are the static
//! `ript.token` or customer credentials issued through the admin API, hosted TGs follow the
//! store's configuration, and customer TG registrations (`POST {root}/customertgs`) are kept
//! in the hosted TG of their tenant so they survive a restart.

use ript_h3::ca::CertAuthority;
use ript_h3::server::{AuthFuture, HostedTg, Registration, ServerApp, ServerHandle};
use ript_proto::adv::Advertisement;
use ript_proto::model::{CallTimers, CustomerTg, DestinationPolicy};
use ript_proto::pattern::NumberPattern;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// The tenant of the static `ript.token`, the only one that sees the echo TG.
pub const DEFAULT_TENANT: &str = "default";
/// The id of the built-in echo TG, whose calls `run` answers with the echo application.
pub const ECHO_TG: &str = "default";
/// What a hosted TG advertises when the store holds no advertisement for it.
pub const DEFAULT_ADVERTISEMENT: &str = "1 in: PCMU; PCMA; opus; 1 out: PCMU; PCMA; opus;";

/// How long an authentication answer is reused: every media PUT authenticates, and a database
/// round trip per chunk would cost more than the chunk. A revoked token also stops working at
/// the next configuration reload (the follower clears the cache), so this bounds only the
/// time before that reload is seen.
const AUTH_TTL: Duration = Duration::from_secs(5);
/// Cached answers at most; random tokens sprayed at us must not grow memory without bound.
const AUTH_CACHE_MAX: usize = 4096;
/// Registrations waiting to be written to the store.
const PENDING_CHANGES: usize = 1024;
/// How often the configuration version is polled.
const POLL: Duration = Duration::from_secs(1);

/// The built-in echo TG of tenant [`DEFAULT_TENANT`].
pub fn echo_tg() -> anyhow::Result<HostedTg> {
    Ok(HostedTg {
        id: ECHO_TG.into(),
        name: "default".into(),
        description: "echo trunk group (calls are answered and media echoed)".into(),
        tenants: vec![DEFAULT_TENANT.into()],
        destinations: NumberPattern::any(),
        vouch: "+*".parse()?,
        advertisement: DEFAULT_ADVERTISEMENT.parse()?,
        timers: CallTimers::default(),
        require_passport: false,
        trust_anchors: vec![],
        ca: None,
    })
}

/// Recent answers of the credential lookup, keyed by token.
#[derive(Default)]
struct AuthCache {
    entries: HashMap<String, (Option<String>, Instant)>,
}

impl AuthCache {
    fn get(&self, token: &str, now: Instant) -> Option<Option<String>> {
        self.entries
            .get(token)
            .filter(|(_, at)| now.saturating_duration_since(*at) < AUTH_TTL)
            .map(|(tenant, _)| tenant.clone())
    }

    fn put(&mut self, token: &str, tenant: Option<String>, now: Instant) {
        if self.entries.len() >= AUTH_CACHE_MAX {
            self.entries
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < AUTH_TTL);
            if self.entries.len() >= AUTH_CACHE_MAX {
                // Still full of fresh answers (a flood of tokens): start over rather than
                // grow; the price is a few more database lookups.
                self.entries.clear();
            }
        }
        self.entries.insert(token.to_owned(), (tenant, now));
    }
}

/// A customer TG registration to persist: `tg` `None` is a removal.
struct Change {
    tenant: String,
    id: String,
    tg: Option<CustomerTg>,
}

/// The [`ServerApp`] of `run`.
pub struct StoreApp {
    static_token: String,
    store: store::Store,
    /// The routing snapshot and caps new calls are admitted on (set once the SIP side is up).
    routing: std::sync::OnceLock<(
        tokio::sync::watch::Receiver<Arc<crate::routing::Snapshot>>,
        Arc<crate::routing::Limits>,
    )>,
    cache: Mutex<AuthCache>,
    changes: mpsc::Sender<Change>,
}

impl std::fmt::Debug for StoreApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens are secrets: neither the static one nor the cached ones are printed.
        f.debug_struct("StoreApp").finish_non_exhaustive()
    }
}

impl StoreApp {
    /// The application, and the task writing registrations to the store in the order they
    /// were made (a quick register-then-delete must not end up registered).
    pub fn new(store: store::Store, static_token: String) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(PENDING_CHANGES);
        tokio::spawn(persist_registrations(store.clone(), rx));
        Arc::new(StoreApp {
            static_token,
            store,
            routing: std::sync::OnceLock::new(),
            cache: Mutex::default(),
            changes: tx,
        })
    }

    /// Admits new calls on hosted TGs by the routing snapshot and caps from now on.
    pub fn set_routing(
        &self,
        routing: tokio::sync::watch::Receiver<Arc<crate::routing::Snapshot>>,
        limits: Arc<crate::routing::Limits>,
    ) {
        let _ = self.routing.set((routing, limits));
    }

    /// Drops every cached authentication answer (credentials may have been revoked).
    fn forget_tokens(&self) {
        lock(&self.cache).entries.clear();
    }

    async fn tenant_of(&self, token: &str) -> Option<String> {
        // Constant-time compare: the token is a secret.
        if constant_time_eq(token.as_bytes(), self.static_token.as_bytes()) {
            return Some(DEFAULT_TENANT.to_owned());
        }
        let now = Instant::now();
        if let Some(answer) = lock(&self.cache).get(token, now) {
            return answer;
        }
        match self.store.customer_credentials().verify_token(token).await {
            Ok(credential) => {
                let tenant = credential.map(|c| c.tenant);
                lock(&self.cache).put(token, tenant.clone(), now);
                tenant
            }
            Err(e) => {
                // Not cached: the next request asks the database again.
                warn!(error = %e, "customer token cannot be checked (database); refused");
                None
            }
        }
    }
}

impl ServerApp for StoreApp {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        Box::pin(self.tenant_of(token))
    }

    /// ript-profile §2: a destination no route serves is `404` at call creation, a TG over
    /// its caps `503`, before any call exists.
    fn admit_call(
        &self,
        _tenant: &str,
        tg: &ript_h3::server::HostedTg,
        call: &ript_proto::model::CallCreate,
    ) -> Result<(), ript_proto::Error> {
        if tg.id == ECHO_TG {
            return Ok(());
        }
        let Some((routing, limits)) = self.routing.get() else {
            return Err(ript_proto::Error::Overloaded);
        };
        let snap = routing.borrow().clone();
        let source = store::model::Endpoint {
            kind: store::model::EndpointKind::HostedTg,
            id: tg.id.clone(),
        };
        let refusal = if !snap.has_route(&source, &call.destination) {
            Some((ript_proto::Error::DestinationUnreachable, 404, "no route"))
        } else {
            let caps = snap
                .hosted_tg(&tg.id)
                .map_or((None, None), |h| (h.max_cps, h.max_concurrent));
            limits.would_refuse(&source, caps.0, caps.1).then_some((
                ript_proto::Error::Overloaded,
                503,
                "over the trunk group's caps",
            ))
        };
        let Some((error, status, why)) = refusal else {
            return Ok(());
        };
        info!(tg = %tg.id, reason = why, "call creation refused");
        // Every call attempt leaves a CDR, this one too (written off the request's path).
        let now = i64::try_from(ript_h3::wall_ms()).unwrap_or(i64::MAX);
        let cdr = store::cdr::Cdr {
            id: String::new(),
            call_id: uuid::Uuid::new_v4().to_string(),
            started_at: now,
            answered_at: None,
            ended_at: now,
            caller: String::new(),
            callee: call.destination.clone(),
            source,
            target: None,
            route_id: None,
            sip_call_id: None,
            ript_call_id: None,
            sip_codec: None,
            ript_codec: None,
            sip_status: Some(status),
            ript_reason: Some(format!("{status} {why}")),
            media: store::cdr::MediaCounters::default(),
        };
        let st = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = st.cdrs().insert(cdr).await {
                warn!(error = %e, "cannot write the CDR");
            }
        });
        Err(error)
    }

    fn customer_tg_changed(&self, tenant: &str, id: &str, tg: Option<&CustomerTg>) {
        let change = Change {
            tenant: tenant.to_owned(),
            id: id.to_owned(),
            tg: tg.cloned(),
        };
        if self.changes.try_send(change).is_err() {
            warn!(%tenant, registration = %id, "customer tg change not persisted (queue full); it holds until restart");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Every hosted TG visible in `scope`, in creation order.
async fn all_hosted_tgs(
    st: &store::Store,
    scope: &store::Scope,
) -> store::Result<Vec<store::hosted::HostedTg>> {
    let mut all = Vec::new();
    let mut page = store::Page::first(store::Page::MAX_LIMIT);
    loop {
        let batch = st.hosted_tgs().list(scope, page).await?;
        let n = batch.len();
        all.extend(batch);
        if n < store::Page::MAX_LIMIT as usize {
            return Ok(all);
        }
        page.offset += n as u64;
    }
}

/// Writes each registration change into the hosted TG of its tenant, in order.
async fn persist_registrations(st: store::Store, mut rx: mpsc::Receiver<Change>) {
    while let Some(c) = rx.recv().await {
        if let Err(e) = persist(&st, &c).await {
            warn!(tenant = %c.tenant, registration = %c.id, error = %e,
                "customer tg change not persisted; it holds until restart");
        }
    }
}

/// A registration lives as the hosted TG's customer TG named after the registration id; a
/// new one goes to the tenant's first enabled hosted TG (creation order). A tenant without a
/// hosted TG (the static token's) keeps its registrations in memory only.
async fn persist(st: &store::Store, c: &Change) -> anyhow::Result<()> {
    let scope = store::Scope::Tenant(c.tenant.clone());
    let tgs = all_hosted_tgs(st, &scope).await?;
    let holder = tgs
        .iter()
        .position(|t| t.customer_tgs.iter().any(|e| e.name == c.id));
    let target = match (&c.tg, holder) {
        (_, Some(i)) => i,
        (Some(_), None) => match tgs
            .iter()
            .position(|t| t.enabled)
            .or_else(|| (!tgs.is_empty()).then_some(0))
        {
            Some(i) => i,
            None => {
                debug!(tenant = %c.tenant, "no hosted tg to keep the registration in");
                return Ok(());
            }
        },
        (None, None) => return Ok(()),
    };
    let Some(mut tg) = tgs.into_iter().nth(target) else {
        return Ok(());
    };
    tg.customer_tgs.retain(|e| e.name != c.id);
    if let Some(reg) = &c.tg {
        tg.customer_tgs.push(store::hosted::CustomerTg {
            name: c.id.clone(),
            url: reg.tg.clone(),
            token: (!reg.token.is_empty()).then(|| store::Secret::new(reg.token.clone())),
        });
    }
    let id = tg.id.clone();
    st.hosted_tgs()
        .update(&store::Scope::Admin, &id, tg)
        .await?;
    info!(tenant = %c.tenant, registration = %c.id, hosted_tg = %id,
        removed = c.tg.is_none(), "customer tg registration persisted");
    Ok(())
}

/// The registrations persisted by [`StoreApp`] (and customer TGs an operator configured with a
/// token), to preload into the server. The store keeps no destination pattern for them: they
/// come back allowing any destination.
pub async fn load_registrations(st: &store::Store) -> Vec<Registration> {
    let tgs = match all_hosted_tgs(st, &store::Scope::Admin).await {
        Ok(t) => t,
        Err(e) => {
            warn!(error = %e, "hosted tgs unreadable; no customer tg registrations loaded");
            return Vec::new();
        }
    };
    let mut owner: HashMap<String, String> = HashMap::new();
    let mut regs = Vec::new();
    for t in tgs {
        for c in t.customer_tgs {
            let Some(token) = c.token else {
                debug!(hosted_tg = %t.id, "customer tg without a token not loaded");
                continue;
            };
            // Registration ids are global on the server; operator-chosen names may repeat
            // across tenants, and the first one keeps the id.
            if owner.get(&c.name).is_some_and(|o| *o != t.tenant) {
                warn!(hosted_tg = %t.id, "customer tg name already used by another tenant; not loaded");
                continue;
            }
            owner.insert(c.name.clone(), t.tenant.clone());
            regs.push(Registration {
                tenant: t.tenant.clone(),
                id: c.name,
                tg: CustomerTg {
                    tg: c.url,
                    token: token.expose().to_owned(),
                    outbound: DestinationPolicy {
                        destinations: NumberPattern::any(),
                    },
                    uri: None,
                },
            });
        }
    }
    regs
}

/// A store hosted TG as the RIPT server hosts it (without its CA).
fn ript_tg(t: &store::hosted::HostedTg) -> anyhow::Result<HostedTg> {
    let destinations: NumberPattern = t
        .destination_pattern
        .parse()
        .map_err(|e| anyhow::anyhow!("destination_pattern: {e}"))?;
    // One pattern from several: the union of their entries. With exclusions this is stricter
    // than "any of the patterns", never looser. No entry: vouch for nothing.
    let vouch = if t.vouched_numbers.is_empty() {
        "*,!*".to_owned()
    } else {
        t.vouched_numbers.join(",")
    };
    let vouch: NumberPattern = vouch
        .parse()
        .map_err(|e| anyhow::anyhow!("vouched_numbers: {e}"))?;
    Ok(HostedTg {
        id: t.id.clone(),
        name: t.name.clone(),
        description: String::new(),
        tenants: vec![t.tenant.clone()],
        destinations,
        vouch,
        advertisement: advertisement(&t.advertisement)?,
        timers: CallTimers::default(),
        // ript-profile §8: passports chain to this TG's own CA (the certificates it issues
        // through `POST {tg}/certs`); no other anchors are configured yet.
        require_passport: t.require_passport,
        trust_anchors: vec![],
        ca: None,
    })
}

/// A hosted TG's advertisement from its stored JSON: a ript-profile §4 string, or an object
/// holding one as `"advertisement"`, or `{"media": [codec, ...]}` (one source and one sink
/// with those codecs, in preference order); null or `{}` is [`DEFAULT_ADVERTISEMENT`].
fn advertisement(v: &serde_json::Value) -> anyhow::Result<Advertisement> {
    use serde_json::Value;
    let text = match v {
        Value::Null => DEFAULT_ADVERTISEMENT.to_owned(),
        Value::String(s) => s.clone(),
        Value::Object(o) if o.is_empty() => DEFAULT_ADVERTISEMENT.to_owned(),
        Value::Object(o) => match (o.get("advertisement"), o.get("media")) {
            (Some(Value::String(s)), _) => s.clone(),
            (None, Some(Value::Array(codecs))) if !codecs.is_empty() => {
                let names = codecs
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Option<Vec<&str>>>()
                    .ok_or_else(|| anyhow::anyhow!("advertisement: media lists a non-string"))?;
                let list = names.join("; ");
                format!("1 in: {list}; 1 out: {list};")
            }
            _ => anyhow::bail!(
                "advertisement: expected a string, {{\"advertisement\": string}} or {{\"media\": [codec, ...]}}"
            ),
        },
        _ => anyhow::bail!("advertisement: expected a string or an object"),
    };
    text.parse()
        .map_err(|e| anyhow::anyhow!("advertisement: {e}"))
}

/// Where a TG's CA is kept between restarts: `<dir>/<id>-cert.pem` and `<id>-key.pem` (0600).
/// `None` for an id that is not a plain file name (store ids are UUIDs).
fn ca_paths(dir: &Path, id: &str) -> Option<(PathBuf, PathBuf)> {
    let plain = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    plain.then(|| {
        (
            dir.join(format!("{id}-cert.pem")),
            dir.join(format!("{id}-key.pem")),
        )
    })
}

fn load_ca(dir: &Path, id: &str) -> Option<Arc<CertAuthority>> {
    let (cert, key) = ca_paths(dir, id)?;
    let (c, k) = (
        std::fs::read_to_string(&cert).ok()?,
        std::fs::read_to_string(&key).ok()?,
    );
    match CertAuthority::from_pem(&c, &k) {
        Ok(ca) => Some(Arc::new(ca)),
        Err(e) => {
            warn!(tg = %id, path = %cert.display(), error = %e, "stored tg ca unusable; a new one replaces it");
            None
        }
    }
}

fn save_ca(dir: &Path, id: &str, ca: &CertAuthority) -> anyhow::Result<()> {
    let Some((cert, key)) = ca_paths(dir, id) else {
        return Ok(());
    };
    std::fs::create_dir_all(dir)?;
    crate::run::write_secret(&key, ca.key_pem().as_bytes())?;
    std::fs::write(&cert, ca.cert_pem())?;
    Ok(())
}

/// Keeps the server's hosted TGs equal to the store's enabled ones (plus the echo TG).
struct Follower {
    store: store::Store,
    server: ServerHandle,
    app: Arc<StoreApp>,
    ca_dir: PathBuf,
    echo: HostedTg,
}

impl Follower {
    /// Loads the hosted TGs into the server; false when the store could not be read (the
    /// server keeps the last set).
    async fn reload(&self) -> bool {
        let stored = match all_hosted_tgs(&self.store, &store::Scope::Admin).await {
            Ok(t) => t,
            Err(e) => {
                warn!(error = %e, "hosted tgs unreadable; keeping the last ones");
                return false;
            }
        };
        let mut tgs = vec![self.echo.clone()];
        for t in stored.iter().filter(|t| t.enabled) {
            match ript_tg(t) {
                Ok(tg) => tgs.push(tg),
                Err(e) => warn!(tg = %t.id, error = %e, "hosted tg skipped"),
            }
        }
        // A TG the server already hosts keeps its CA; one new to it gets the CA stored under
        // its id from an earlier run, if any.
        let hosted = self.server.tg_ids();
        for tg in &mut tgs {
            if hosted.binary_search(&tg.id).is_err() {
                tg.ca = load_ca(&self.ca_dir, &tg.id);
            }
        }
        let fresh: Vec<String> = tgs
            .iter()
            .filter(|t| t.ca.is_none() && hosted.binary_search(&t.id).is_err())
            .map(|t| t.id.clone())
            .collect();
        let n = tgs.len();
        // Generating the CAs of new TGs is CPU work: off the runtime's workers.
        let server = self.server.clone();
        let applied = match tokio::task::spawn_blocking(move || server.set_tgs(tgs)).await {
            Ok(r) => r.map_err(anyhow::Error::from),
            Err(e) => Err(anyhow::Error::from(e)),
        };
        if let Err(e) = applied {
            warn!(error = %e, "hosted tgs not applied; keeping the last ones");
            return false;
        }
        for id in fresh {
            if let Some(ca) = self.server.tg_ca(&id)
                && let Err(e) = save_ca(&self.ca_dir, &id, &ca)
            {
                warn!(tg = %id, error = %e, "tg ca not stored; a restart gives this tg a new one");
            }
        }
        info!(tgs = n, "hosted tgs loaded");
        true
    }

    /// Polls the configuration version every second (a primary-key read) and reloads when it
    /// moved, like `sip::follow_peers`.
    async fn follow(self, mut seen: Option<i64>) {
        let mut tick = tokio::time::interval(POLL);
        loop {
            tick.tick().await;
            let v = match self.store.config_version().await {
                Ok(v) => v,
                Err(e) => {
                    warn!(error = %e, "configuration version unreadable; keeping the last hosted tgs");
                    continue;
                }
            };
            if seen == Some(v) {
                continue;
            }
            // Credentials may have been revoked: ask the database again.
            self.app.forget_tokens();
            if self.reload().await {
                seen = Some(v);
            }
        }
    }
}

/// Loads the store's hosted TGs into the server now, then follows the store in a task. TG CAs
/// are kept under `ca_dir` across restarts.
pub async fn follow_hosted_tgs(
    store: store::Store,
    server: ServerHandle,
    app: Arc<StoreApp>,
    ca_dir: PathBuf,
) -> anyhow::Result<()> {
    let f = Follower {
        store,
        server,
        app,
        ca_dir,
        echo: echo_tg()?,
    };
    // The version is read before the load: a change made in between is loaded again.
    let v = f.store.config_version().await.ok();
    let seen = if f.reload().await { v } else { None };
    tokio::spawn(f.follow(seen));
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use serde_json::json;

    #[test]
    fn advertisement_forms() {
        let default: Advertisement = DEFAULT_ADVERTISEMENT.parse().unwrap();
        assert_eq!(advertisement(&json!(null)).unwrap(), default);
        assert_eq!(advertisement(&json!({})).unwrap(), default);
        assert_eq!(
            advertisement(&json!("1 in: opus; 1 out: opus;"))
                .unwrap()
                .to_string(),
            "1 in: opus; 1 out: opus;"
        );
        assert_eq!(
            advertisement(&json!({"advertisement": "1 in: PCMA;"}))
                .unwrap()
                .to_string(),
            "1 in: PCMA;"
        );
        let m = advertisement(&json!({"media": ["opus", "PCMU"]})).unwrap();
        assert_eq!(m.streams.len(), 2);
        for bad in [
            json!("nonsense"),
            json!(3),
            json!([1]),
            json!({"media": []}),
            json!({"media": [1]}),
            json!({"other": true}),
        ] {
            assert!(advertisement(&bad).is_err(), "{bad}");
        }
    }

    fn stored(dest: &str, vouched: &[&str]) -> store::hosted::HostedTg {
        store::hosted::HostedTg {
            id: "0b6c1c9e-6f39-4a1e-9d1c-000000000001".into(),
            tenant: "acme".into(),
            name: "acme-main".into(),
            enabled: true,
            vouched_numbers: vouched.iter().map(|s| (*s).to_owned()).collect(),
            require_passport: false,
            destination_pattern: dest.into(),
            advertisement: json!(null),
            customer_tgs: vec![],
            customer_tg_trust_anchors_pem: None,
            max_cps: None,
            max_concurrent: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn store_tg_maps_to_a_hosted_tg() {
        let t = ript_tg(&stored("+1*,!+1900*", &["+1408555*", "+14155550100"])).unwrap();
        assert_eq!(t.id, "0b6c1c9e-6f39-4a1e-9d1c-000000000001");
        assert_eq!(t.tenants, ["acme"]);
        assert!(t.destinations.matches("+14085551000"));
        assert!(!t.destinations.matches("+19005551000"));
        assert!(t.vouch.matches("+14085550001") && t.vouch.matches("+14155550100"));
        assert!(!t.vouch.matches("+14155550101"));
        assert!(!t.require_passport);
        let none = ript_tg(&stored("*", &[])).unwrap();
        assert!(!none.vouch.matches("+14085550001"), "no vouched numbers");
        let mut strict = stored("*", &[]);
        strict.require_passport = true;
        assert!(ript_tg(&strict).unwrap().require_passport);
        assert!(ript_tg(&stored("not a pattern", &[])).is_err());
    }

    #[test]
    fn auth_cache_expires_and_stays_bounded() {
        let mut c = AuthCache::default();
        let t0 = Instant::now();
        c.put("a", Some("acme".into()), t0);
        c.put("b", None, t0);
        assert_eq!(c.get("a", t0), Some(Some("acme".into())));
        assert_eq!(c.get("b", t0), Some(None), "negative answers are cached");
        assert_eq!(c.get("a", t0 + AUTH_TTL), None, "expired");
        for i in 0..AUTH_CACHE_MAX * 2 {
            c.put(&i.to_string(), None, t0);
        }
        assert!(c.entries.len() <= AUTH_CACHE_MAX);
    }

    #[test]
    fn ca_paths_only_for_plain_ids() {
        let d = Path::new("/data/tg-ca");
        assert!(ca_paths(d, "0b6c1c9e-6f39-4a1e-9d1c-000000000001").is_some());
        assert!(ca_paths(d, "default").is_some());
        for bad in ["", "../x", "a/b", "a.b"] {
            assert!(ca_paths(d, bad).is_none(), "{bad}");
        }
    }
}
