//! The customer side of calls a provider sends us over RIPT (ript-inbound): every enabled
//! upstream configured with a `customer_tg` learns our customer TG — the URL of one of our
//! hosted TGs and the token the upstream is to present there — through
//! `POST {root}/customertgs` (ript-profile §2), on start-up and whenever the upstream changes.
//!
//! The registration's URI is recorded in the store, so a restart replaces it (`PUT`) instead
//! of piling up another one at the upstream; a `404` on that `PUT` (the upstream forgot it)
//! registers anew. An upstream that no longer wants one (disabled, deleted, `customer_tg`
//! removed) has it removed (`DELETE`, best effort). Failures are retried with a backoff from
//! 2 s, doubling up to 60 s. The calls themselves then arrive on our RIPT server like any
//! customer's and are routed from that hosted TG (`calls::ript_to_sip`).

use crate::routing::Snapshot;
use anyhow::Context;
use ript_proto::model::{CustomerTg, DestinationPolicy};
use ript_proto::pattern::NumberPattern;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use store::upstream::RiptUpstream;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

const FIRST_RETRY: Duration = Duration::from_secs(2);
const MAX_RETRY: Duration = Duration::from_secs(60);

/// What we registered (or tried to) with one upstream.
struct State {
    /// What the registration was made from ([`Wanted::version`]).
    version: String,
    /// After a failure: when to try again, and the wait that took.
    retry: Option<(Instant, Duration)>,
    /// Where the registration lives at the upstream, once made.
    uri: Option<String>,
    /// The upstream as last seen: its credentials remove the registration after the upstream
    /// itself is deleted.
    upstream: RiptUpstream,
}

/// What we want registered with one upstream.
struct Wanted {
    body: CustomerTg,
    /// The upstream's `updated_at` (which covers the token and destinations we hand over)
    /// and our TG URL: a change of either is a new registration.
    version: String,
}

/// Keeps the registrations equal to the upstreams of the routing snapshot; see the module
/// documentation. `root` is our RIPT server's root URL (`https://authority/.well-known/…`),
/// under which our hosted TGs live.
pub async fn follow(
    store: store::Store,
    mut routing: watch::Receiver<Arc<Snapshot>>,
    root: String,
) {
    let mut states: HashMap<String, State> = HashMap::new();
    loop {
        let snap = routing.borrow_and_update().clone();
        let next = reconcile(&store, &snap, &root, &mut states).await;
        tokio::select! {
            changed = routing.changed() => if changed.is_err() {
                return;
            },
            () = sleep_until(next) => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One pass: registers what is wanted and due, removes what is no longer wanted. Returns when
/// a failed registration is due again.
async fn reconcile(
    store: &store::Store,
    snap: &Snapshot,
    root: &str,
    states: &mut HashMap<String, State>,
) -> Option<Instant> {
    let now = Instant::now();
    for up in &snap.upstreams {
        let wanted = match (&up.customer_tg, up.enabled) {
            (Some(c), true) => wanted(snap, root, up, c),
            _ => {
                unregister_unwanted(store, up, states.remove(&up.id)).await;
                continue;
            }
        };
        let wanted = match wanted {
            Ok(w) => w,
            Err(e) => {
                // A configuration mistake: said at each configuration change, not retried
                // before one (a registration already made stays).
                warn!(upstream = %up.name, error = %e, "customer tg not registered");
                continue;
            }
        };
        let old = states.get(&up.id).filter(|s| s.version == wanted.version);
        match old.map(|s| s.retry) {
            Some(None) => continue,
            Some(Some((at, _))) if at > now => continue,
            _ => {}
        }
        let last_wait = old.and_then(|s| s.retry).map(|(_, w)| w);
        // The upstream was moved to another root (another provider): the registration made
        // at the old one goes, with the credentials it was made with.
        if let Some(s) = states.get(&up.id)
            && let Some(uri) = &s.uri
            && !under_root(up, uri)
        {
            unregister(&s.upstream, uri).await;
        }
        // The URI we know from this run wins over the stored one (a store write may have
        // failed after the upstream took the registration).
        let known = match states.get(&up.id).and_then(|s| s.uri.clone()) {
            Some(u) => Some(u),
            None => store
                .customer_tg_registration(&up.id)
                .await
                .unwrap_or_else(|e| {
                    warn!(error = %e, "stored customer tg registration unreadable");
                    None
                }),
        };
        let (uri, retry) = match register(store, up, &wanted.body, known.clone()).await {
            Ok(uri) => {
                info!(upstream = %up.name, tg = %wanted.body.tg, registration = %uri, "customer tg registered");
                (Some(uri), None)
            }
            Err(e) => {
                let wait = last_wait.map_or(FIRST_RETRY, |w| (w * 2).min(MAX_RETRY));
                warn!(upstream = %up.name, error = format!("{e:#}"), retry_in = ?wait,
                    "customer tg registration failed");
                (known, Some((now + wait, wait)))
            }
        };
        states.insert(
            up.id.clone(),
            State {
                version: wanted.version,
                retry,
                uri,
                upstream: up.clone(),
            },
        );
    }
    // Upstreams deleted since the last pass: only their credentials as we last saw them are
    // left to remove the registration with.
    let gone: Vec<String> = states
        .keys()
        .filter(|id| !snap.upstreams.iter().any(|u| &u.id == *id))
        .cloned()
        .collect();
    for id in gone {
        if let Some(s) = states.remove(&id)
            && let Some(uri) = &s.uri
        {
            unregister(&s.upstream, uri).await;
        }
    }
    states
        .values()
        .filter_map(|s| s.retry.map(|(at, _)| at))
        .min()
}

/// The registration `up` should hold, or why it cannot have one.
fn wanted(
    snap: &Snapshot,
    root: &str,
    up: &RiptUpstream,
    c: &store::upstream::UpstreamCustomerTg,
) -> anyhow::Result<Wanted> {
    // A TG our server does not host would only answer the upstream's calls with 404.
    if snap.hosted_tg(&c.hosted_tg_id).is_none() {
        anyhow::bail!(
            "customer_tg.hosted_tg_id: hosted tg {} is missing or disabled",
            c.hosted_tg_id
        );
    }
    let destinations: NumberPattern = c
        .destinations
        .parse()
        .map_err(|e| anyhow::anyhow!("customer_tg.destinations: {e}"))?;
    let tg = format!("{root}/providertgs/{}", c.hosted_tg_id);
    Ok(Wanted {
        version: format!("{}|{tg}", up.updated_at),
        body: CustomerTg {
            tg,
            token: c.token.expose().to_owned(),
            outbound: DestinationPolicy { destinations },
            uri: None,
        },
    })
}

/// Registers `body` with `up`: replaces the registration at `known` when it is one of this
/// upstream's, else makes a new one. The registration's URI.
async fn register(
    store: &store::Store,
    up: &RiptUpstream,
    body: &CustomerTg,
    known: Option<String>,
) -> anyhow::Result<String> {
    check_token(store, up, body).await?;
    let client = crate::calls::upstream_client(up)?;
    // A URI under another root belongs to the upstream this one was before an edit.
    if let Some(uri) = known.filter(|u| under_root(up, u)) {
        match client.put_customer_tg(&uri, body).await {
            Ok(_) => return Ok(uri),
            Err(e) if e.status() == Some(404) => {
                debug!(registration = %uri, "the upstream forgot our registration; registering anew");
            }
            Err(e) => return Err(e).context("replacing the registration"),
        }
    }
    let reg = client
        .register_customer_tg(&crate::calls::ript_root(&up.root_url), body)
        .await
        .context("registering")?;
    let uri = reg
        .uri
        .ok_or_else(|| anyhow::anyhow!("the upstream's registration named no uri"))?;
    store
        .set_customer_tg_registration(&up.id, Some(&uri))
        .await
        .context("recording the registration")?;
    Ok(uri)
}

/// Whether registration `uri` was made at `up`'s root (`{root}/customertgs/{id}`).
fn under_root(up: &RiptUpstream, uri: &str) -> bool {
    let root = crate::calls::ript_root(&up.root_url);
    uri.strip_prefix(&root)
        .is_some_and(|rest| rest.starts_with("/customertgs/"))
}

/// The token we hand over must let the upstream in on our hosted TG: a customer credential
/// of that TG's tenant (ript-profile §1: another tenant's TG is `404`). Said here, where the
/// operator looks, rather than as refused calls later.
async fn check_token(
    store: &store::Store,
    up: &RiptUpstream,
    body: &CustomerTg,
) -> anyhow::Result<()> {
    let Some(c) = &up.customer_tg else {
        return Ok(());
    };
    let tenant = store
        .hosted_tgs()
        .get(&store::Scope::Admin, &c.hosted_tg_id)
        .await
        .context("customer_tg.hosted_tg_id")?
        .tenant;
    match store
        .customer_credentials()
        .verify_token(&body.token)
        .await?
    {
        Some(cred) if cred.tenant == tenant => Ok(()),
        _ => anyhow::bail!(
            "customer_tg.token is not a token credential of tenant {tenant:?} (the owner of \
             hosted tg {}): the upstream's calls would be refused",
            c.hosted_tg_id
        ),
    }
}

/// `up` wants no registration (any more): remove the one it has, if any.
async fn unregister_unwanted(store: &store::Store, up: &RiptUpstream, state: Option<State>) {
    let uri = match state.and_then(|s| s.uri) {
        Some(u) => Some(u),
        None => match store.customer_tg_registration(&up.id).await {
            Ok(u) => u,
            Err(e) => {
                warn!(error = %e, "stored customer tg registration unreadable");
                None
            }
        },
    };
    let Some(uri) = uri else { return };
    unregister(up, &uri).await;
    if let Err(e) = store.set_customer_tg_registration(&up.id, None).await {
        warn!(upstream = %up.name, error = %e, "customer tg registration removal not recorded");
    }
}

/// Best effort: an upstream that cannot be reached keeps the registration (and may call the
/// hosted TG, which decides for itself whether to take calls).
async fn unregister(up: &RiptUpstream, uri: &str) {
    let removed = match crate::calls::upstream_client(up) {
        Ok(client) => client.delete(uri).await.map_err(anyhow::Error::from),
        Err(e) => Err(e.into()),
    };
    match removed {
        Ok(()) => {
            info!(upstream = %up.name, registration = %uri, "customer tg registration removed")
        }
        Err(e) if matches!(e.downcast_ref::<ript_h3::Error>(), Some(h) if h.status() == Some(404)) =>
            {}
        Err(e) => {
            warn!(upstream = %up.name, registration = %uri, error = format!("{e:#}"),
                "customer tg registration not removed")
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use store::upstream::{MediaMode, UpstreamAuth, UpstreamCustomerTg};

    fn upstream(customer_tg: Option<UpstreamCustomerTg>) -> RiptUpstream {
        RiptUpstream {
            id: "u1".into(),
            name: "provider".into(),
            enabled: true,
            root_url: "https://p.example".into(),
            trunk_group: "tg".into(),
            auth: UpstreamAuth::None,
            trust_anchors_pem: None,
            client_cert_pem: None,
            client_key_pem: None,
            media_mode: MediaMode::Auto,
            media_key: None,
            max_cps: None,
            max_concurrent: None,
            customer_tg,
            created_at: 0,
            updated_at: 7,
        }
    }

    fn ours(id: &str, enabled: bool) -> store::hosted::HostedTg {
        store::hosted::HostedTg {
            id: id.into(),
            tenant: "provider".into(),
            name: "from-provider".into(),
            enabled,
            vouched_numbers: vec![],
            destination_pattern: "*".into(),
            advertisement: serde_json::Value::Null,
            customer_tgs: vec![],
            customer_tg_trust_anchors_pem: None,
            require_passport: false,
            max_cps: None,
            max_concurrent: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn only_a_registration_at_the_upstreams_root_is_replaced() {
        let up = upstream(None);
        assert!(under_root(
            &up,
            "https://p.example/.well-known/ript/v1/customertgs/abc"
        ));
        for other in [
            "https://q.example/.well-known/ript/v1/customertgs/abc",
            "https://p.example.evil/.well-known/ript/v1/customertgs/abc",
            "https://p.example/.well-known/ript/v1/providertgs/abc",
        ] {
            assert!(!under_root(&up, other), "{other}");
        }
    }

    #[test]
    fn the_registration_names_our_hosted_tg_under_our_root() {
        let c = UpstreamCustomerTg {
            hosted_tg_id: "h1".into(),
            token: store::Secret::new("handed-over"),
            destinations: "+1408*".into(),
        };
        let up = upstream(Some(c.clone()));
        let snap = Snapshot {
            hosted: vec![ours("h1", true), ours("h2", false)],
            ..Snapshot::default()
        };
        let root = "https://c.example:8443/.well-known/ript/v1";
        let w = wanted(&snap, root, &up, &c).unwrap();
        assert_eq!(w.body.tg, format!("{root}/providertgs/h1"));
        assert_eq!(w.body.token, "handed-over");
        assert_eq!(w.body.outbound.destinations.to_string(), "+1408*");
        assert_eq!(w.body.uri, None);
        // Another edit of the upstream is another registration.
        let mut later = up.clone();
        later.updated_at = 8;
        assert_ne!(wanted(&snap, root, &later, &c).unwrap().version, w.version);
        // A hosted TG we do not serve (missing or disabled) is not registered.
        for missing in ["h2", "h3"] {
            let mut c = c.clone();
            c.hosted_tg_id = missing.into();
            let e = wanted(&snap, root, &up, &c).err().unwrap().to_string();
            assert!(e.contains("customer_tg.hosted_tg_id"), "{e}");
        }
    }
}
