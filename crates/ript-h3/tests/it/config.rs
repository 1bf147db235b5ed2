//! Configuration changed while the server runs: hosted TGs replaced through
//! [`ript_h3::server::ServerHandle::set_tgs`], customer TG registrations told to the
//! application and preloaded at start.

use super::*;
use ript_h3::server::Registration;
use ript_proto::events::EventKind;
use ript_proto::model::{CustomerTg, DestinationPolicy};
use std::sync::Mutex;

fn is_state(k: EventKind) -> impl Fn(&CallEvent) -> bool {
    move |e| matches!(e, CallEvent::State(s, _) if *s == k)
}

async fn call_on(h: &mut Harness, c: &Client, tg_uri: &str) -> (OutboundCall, IncomingCall) {
    let handler = Handler {
        handler_id: "h1".into(),
        advertisement: "1 out: PCMU; 1 in: PCMU;".into(),
        uri: None,
    };
    let handler = within(c.register_handler(tg_uri, &handler)).await.unwrap();
    let d = within(c.create_call(
        tg_uri,
        &CallCreate {
            handler: handler.uri.unwrap(),
            destination: "+14089529999".into(),
            passport: None,
        },
    ))
    .await
    .unwrap();
    let out = c.start_call(&d, CallTimers::default());
    let inc = within(h.server.next_call()).await.unwrap();
    (out, inc)
}

#[tokio::test]
async fn tg_added_at_runtime_is_listed_and_callable() {
    let mut h = harness().await;
    let a = h.client();
    let main_ca = h.server.tg_ca_pem("main").unwrap();
    let handle = h.server.handle();
    handle
        .set_tgs(vec![
            tg("main", "tenant-a"),
            tg("other", "tenant-b"),
            tg("extra", "tenant-a"),
        ])
        .unwrap();
    assert_eq!(handle.tg_ids(), ["extra", "main", "other"]);
    // A TG whose id stays keeps its CA (certificates it issued stay valid).
    assert_eq!(handle.tg_ca_pem("main").unwrap(), main_ca);
    let extra = h.server.tg_url("extra");
    let list = within(a.provider_tgs(&h.root)).await.unwrap();
    let uris: Vec<&str> = list.providertgs.iter().map(|t| t.uri.as_str()).collect();
    assert_eq!(uris, [extra.as_str(), h.tg.as_str()]);
    let origins = within(a.tg(&extra))
        .await
        .unwrap()
        .outbound
        .origins
        .unwrap();
    assert_eq!(origins, handle.tg_ca_pem("extra").unwrap());
    assert_ne!(origins, main_ca, "a new TG gets its own CA");
    let (mut out, inc) = call_on(&mut h, &a, &extra).await;
    assert_eq!(inc.tg, "extra");
    assert_eq!(inc.tenant, "tenant-a");
    inc.control.state(EventKind::Answered, None).await.unwrap();
    next_matching(&mut out.events, is_state(EventKind::Answered)).await;
}

#[tokio::test]
async fn removed_tg_refuses_new_calls_and_calls_in_progress_go_on() {
    let mut h = harness().await;
    let a = h.client();
    let handler = h.handler(&a).await;
    let (d, mut out, inc) = h.call(&a).await;
    h.server
        .set_tgs(vec![tg("other", "tenant-b"), tg("extra", "tenant-a")])
        .unwrap();
    let e = within(a.create_call(
        &h.tg,
        &CallCreate {
            handler: handler.uri.unwrap(),
            destination: "+14089529999".into(),
            passport: None,
        },
    ))
    .await
    .unwrap_err();
    assert_eq!(e.status(), Some(404));
    assert_eq!(within(a.tg(&h.tg)).await.unwrap_err().status(), Some(404));
    let list = within(a.provider_tgs(&h.root)).await.unwrap();
    assert_eq!(list.providertgs.len(), 1);
    assert_eq!(list.providertgs[0].uri, h.server.tg_url("extra"));
    assert!(h.server.tg_ca_pem("main").is_none());
    // The call created before the change is undisturbed.
    inc.control.state(EventKind::Answered, None).await.unwrap();
    next_matching(&mut out.events, is_state(EventKind::Answered)).await;
    assert_eq!(within(a.get_call(&d.uri)).await.unwrap().state, "answered");
    // Back again under the same id: a new CA (the old one went with the TG) and callable.
    h.server
        .set_tgs(vec![tg("main", "tenant-a"), tg("other", "tenant-b")])
        .unwrap();
    let main = h.tg.clone();
    let (_out, inc) = call_on(&mut h, &a, &main).await;
    assert_eq!(inc.tg, "main");
}

#[tokio::test]
async fn tg_carrying_its_ca_uses_it() {
    let ca = Arc::new(ript_h3::ca::CertAuthority::generate("persisted").unwrap());
    let mut t = tg("main", "tenant-a");
    t.ca = Some(ca.clone());
    let h = harness_with(move |o| o.tgs = vec![t]).await;
    assert_eq!(h.server.tg_ca_pem("main").unwrap(), ca.cert_pem());
    let kept = h.server.tg_ca("main").unwrap();
    assert_eq!(kept.key_pem(), ca.key_pem());
    // Reloading it from its PEMs (what a restart does) gives the same anchor.
    let again = ript_h3::ca::CertAuthority::from_pem(kept.cert_pem(), kept.key_pem()).unwrap();
    let mut t = tg("main", "tenant-a");
    t.ca = Some(Arc::new(again));
    h.server.set_tgs(vec![t]).unwrap();
    assert_eq!(h.server.tg_ca_pem("main").unwrap(), ca.cert_pem());
    let a = h.client();
    let tgd = within(a.tg(&h.tg)).await.unwrap();
    assert_eq!(tgd.outbound.origins.as_deref(), Some(ca.cert_pem()));
}

/// Records what [`ServerApp::customer_tg_changed`] is told; authenticates like `App`.
#[derive(Default)]
struct Recorder {
    changes: Mutex<Vec<(String, String, Option<CustomerTg>)>>,
}

impl ServerApp for Recorder {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        Box::pin(async move {
            // Answered after a yield, as a database lookup would be.
            tokio::task::yield_now().await;
            match token {
                TOKEN_A => Some("tenant-a".to_owned()),
                TOKEN_B => Some("tenant-b".to_owned()),
                _ => None,
            }
        })
    }

    fn customer_tg_changed(&self, tenant: &str, id: &str, tg: Option<&CustomerTg>) {
        self.changes
            .lock()
            .unwrap()
            .push((tenant.to_owned(), id.to_owned(), tg.cloned()));
    }
}

fn customer_tg(url: &str) -> CustomerTg {
    CustomerTg {
        tg: url.into(),
        token: "customer-secret".into(),
        outbound: DestinationPolicy {
            destinations: "+1408555*".parse().unwrap(),
        },
        uri: None,
    }
}

#[tokio::test]
async fn customer_tg_changes_reach_the_app_and_preloads_are_served() {
    let app = Arc::new(Recorder::default());
    let identity = Identity::self_signed(&["localhost", "127.0.0.1"]).unwrap();
    let mut opts = ServerOptions::new(
        "127.0.0.1:0".parse().unwrap(),
        identity.clone(),
        vec![tg("main", "tenant-a")],
    );
    opts.customer_tgs = vec![
        Registration {
            tenant: "tenant-a".into(),
            id: "persisted-1".into(),
            tg: customer_tg("https://pbx.a.test/.well-known/ript/v1/providertgs/in"),
        },
        Registration {
            tenant: "tenant-a".into(),
            id: "not/a/segment".into(),
            tg: customer_tg("https://pbx.a.test/x"),
        },
    ];
    let server = Server::bind(opts, app.clone()).await.unwrap();
    let h = Harness {
        root: server.root_url(),
        tg: server.tg_url("main"),
        server,
        identity,
    };
    let a = h.client();
    // The preloaded registration answers under its id, with a URI of this server.
    let preloaded = format!("{}/customertgs/persisted-1", h.root);
    let got = within(a.get_customer_tg(&preloaded)).await.unwrap();
    assert_eq!(got.uri.as_deref(), Some(preloaded.as_str()));
    assert_eq!(h.server.customer_tgs("tenant-a").len(), 1, "bad id skipped");
    assert!(
        app.changes.lock().unwrap().is_empty(),
        "preloads are not told"
    );

    let created = within(a.register_customer_tg(
        &h.root,
        &customer_tg("https://pbx.a.test/.well-known/ript/v1/providertgs/second"),
    ))
    .await
    .unwrap();
    let uri = created.uri.clone().unwrap();
    let id = uri.rsplit('/').next().unwrap().to_owned();
    {
        let changes = app.changes.lock().unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(
            (changes[0].0.as_str(), changes[0].1.as_str()),
            ("tenant-a", id.as_str())
        );
        assert_eq!(changes[0].2.as_ref(), Some(&created));
    }
    let regs = h.server.handle().customer_tgs("tenant-a");
    let ids: Vec<&str> = regs.iter().map(|r| r.id.as_str()).collect();
    let mut want = vec!["persisted-1", id.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);
    assert!(h.server.customer_tgs("tenant-b").is_empty());
    // The token is a secret: not in a registration's Debug.
    assert!(!format!("{regs:?}").contains("customer-secret"));

    let mut changed = created.clone();
    changed.outbound.destinations = "*".parse().unwrap();
    within(a.put_customer_tg(&uri, &changed)).await.unwrap();
    // Another tenant's attempts change nothing and tell the app nothing.
    let b = h.client_with(TOKEN_B, true);
    assert_eq!(
        within(b.delete(&uri)).await.unwrap_err().status(),
        Some(404)
    );
    within(a.delete(&uri)).await.unwrap();
    let changes = app.changes.lock().unwrap().clone();
    assert_eq!(changes.len(), 3, "{changes:?}");
    assert_eq!(
        changes[1]
            .2
            .as_ref()
            .map(|c| c.outbound.destinations.to_string()),
        Some("*".to_owned())
    );
    assert_eq!(changes[2], ("tenant-a".to_owned(), id.clone(), None));
    assert_eq!(h.server.customer_tgs("tenant-a").len(), 1);

    // set_customer_tgs replaces every registration.
    h.server.set_customer_tgs(vec![]);
    assert_eq!(
        within(a.get_customer_tg(&preloaded))
            .await
            .unwrap_err()
            .status(),
        Some(404)
    );
    // A wrong token is still refused by the asynchronous authentication.
    let bad = h.client_with("nope", true);
    assert_eq!(
        within(bad.provider_tgs(&h.root))
            .await
            .unwrap_err()
            .status(),
        Some(401)
    );
}
