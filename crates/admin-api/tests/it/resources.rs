//! The other resources over HTTP: upstreams, hosted TGs and their credentials, numbers,
//! routes, admin tokens, live calls and CDRs.
use crate::both_dbs;
use crate::common::{Reply, Server, TOKEN, auth, captured_logs, serve, serve_state};
use admin_api::{AdminState, CallControl, HangUp, Metrics};
use serde_json::{Value, json};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use store::Scope;

const SECRETS: &[&str] = &[
    "client-secret-value",
    "private-key-material",
    "media-key-value",
    "cust-token-value",
    "new-token-value",
    "handed-over-token",
];

#[track_caller]
fn no_secrets(text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "secret {s} leaked: {text}");
    }
}

fn upstream(name: &str) -> Value {
    json!({
        "name": name,
        "root_url": "https://ript.example/.well-known/ript",
        "trunk_group": "tg-1",
        "auth": {"kind": "oauth_client", "token_url": "https://auth.example/token",
                 "client_id": "gw", "client_secret": "client-secret-value", "scope": "ript"},
        "trust_anchors_pem": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "client_cert_pem": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "client_key_pem": "-----BEGIN PRIVATE KEY-----\nprivate-key-material\n-----END PRIVATE KEY-----\n",
        "media_mode": "datagrams",
        "media_key": "media-key-value",
        "max_cps": 5,
        "customer_tg": {"hosted_tg_id": "hosted-1", "token": "handed-over-token"}
    })
}

fn hosted(tenant: &str, name: &str) -> Value {
    json!({
        "tenant": tenant,
        "name": name,
        "vouched_numbers": ["+1408555*"],
        "destination_pattern": "*",
        "advertisement": {"media": ["opus", "pcmu"]},
        "customer_tgs": [
            {"name": "main", "url": "https://cust.example/tg", "token": "cust-token-value"},
            {"name": "backup", "url": "https://cust2.example/tg"}
        ],
        "customer_tg_trust_anchors_pem": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "max_concurrent": 50
    })
}

async fn create(srv: &Server, path: &str, body: Value) -> Reply {
    let r = srv.call("POST", path, Some(body)).await;
    assert_eq!(r.status, 201, "{path}: {}", r.text);
    no_secrets(&r.text);
    r
}

fn id(r: &Reply) -> String {
    r.json["id"].as_str().unwrap().to_owned()
}

both_dbs!(upstreams_round_trip_with_write_only_secrets, |db| {
    let srv = serve(db.store.clone()).await;
    let r = create(&srv, "/api/v1/upstreams", upstream("carrier")).await;
    let uid = id(&r);
    assert_eq!(r.json["auth"]["client_secret"], "***");
    assert_eq!(r.json["client_key_pem"], "***");
    assert_eq!(r.json["media_key"], "***");
    assert_eq!(r.json["auth"]["client_id"], "gw");
    assert_eq!(
        r.json["customer_tg"],
        json!({"hosted_tg_id": "hosted-1", "token": "***", "destinations": "*"})
    );
    let got = srv.get(&format!("/api/v1/upstreams/{uid}")).await;
    assert_eq!(got.json, r.json);

    // PUT back with masks keeps every secret; a new token replaces the auth.
    let mut doc = got.json.clone();
    doc["trunk_group"] = json!("tg-2");
    let put = srv
        .call(
            "PUT",
            &format!("/api/v1/upstreams/{uid}"),
            Some(doc.clone()),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.text);
    let stored = db
        .store
        .ript_upstreams()
        .get(&Scope::Admin, &uid)
        .await
        .unwrap();
    assert_eq!(stored.trunk_group, "tg-2");
    assert_eq!(stored.media_key.unwrap().expose(), "media-key-value");
    assert_eq!(
        stored.customer_tg.map(|c| c.token.expose().to_owned()),
        Some("handed-over-token".to_owned())
    );
    assert!(
        stored
            .client_key_pem
            .unwrap()
            .expose()
            .contains("private-key-material")
    );
    doc["auth"] = json!({"kind": "token", "token": "new-token-value"});
    doc["media_key"] = Value::Null;
    let put = srv
        .call(
            "PUT",
            &format!("/api/v1/upstreams/{uid}"),
            Some(doc.clone()),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.text);
    no_secrets(&put.text);
    assert_eq!(put.json["auth"], json!({"kind": "token", "token": "***"}));
    assert_eq!(put.json["media_key"], Value::Null);
    let stored = db
        .store
        .ript_upstreams()
        .get(&Scope::Admin, &uid)
        .await
        .unwrap();
    assert!(
        matches!(stored.auth, store::upstream::UpstreamAuth::Token { ref token } if token.expose() == "new-token-value")
    );
    // A mask where nothing is stored is refused, naming the field.
    doc["media_key"] = json!("***");
    let r = srv
        .call("PUT", &format!("/api/v1/upstreams/{uid}"), Some(doc))
        .await;
    assert_eq!(r.problem(422).as_deref(), Some("media_key"));
    let bad = srv
        .call(
            "POST",
            "/api/v1/upstreams",
            Some(json!({"root_url": "http://x"})),
        )
        .await;
    bad.problem(422);
    let mut plain_http = upstream("plain");
    plain_http["root_url"] = json!("http://ript.example/");
    let r = srv
        .call("POST", "/api/v1/upstreams", Some(plain_http))
        .await;
    assert_eq!(r.problem(422).as_deref(), Some("root_url"));
    let r = srv
        .call("POST", "/api/v1/upstreams", Some(upstream("carrier")))
        .await;
    assert_eq!(r.problem(409).as_deref(), Some("name"));

    let list = srv.get("/api/v1/upstreams?limit=10").await;
    assert_eq!(list.json["items"].as_array().unwrap().len(), 1);
    no_secrets(&list.text);
    assert_eq!(
        srv.call("DELETE", &format!("/api/v1/upstreams/{uid}"), None)
            .await
            .status,
        204
    );
    srv.get(&format!("/api/v1/upstreams/{uid}"))
        .await
        .problem(404);
    no_secrets(&captured_logs());
});

both_dbs!(hosted_tgs_and_customer_credentials, |db| {
    let srv = serve(db.store.clone()).await;
    let r = create(&srv, "/api/v1/hosted-tgs", hosted("acme", "main")).await;
    let tg = id(&r);
    assert_eq!(r.json["customer_tgs"][0]["token"], "***");
    assert_eq!(r.json["customer_tgs"][1]["token"], Value::Null);
    assert_eq!(r.json["advertisement"], json!({"media": ["opus", "pcmu"]}));
    assert_eq!(r.json["require_passport"], false, "absent means false");
    assert!(
        r.json["customer_tg_trust_anchors_pem"]
            .as_str()
            .is_some_and(|p| p.contains("BEGIN CERTIFICATE")),
        "{}",
        r.json
    );
    // The same name under another tenant is fine; under the same tenant it conflicts.
    let mut strict = hosted("globex", "main");
    strict["require_passport"] = json!(true);
    let g = create(&srv, "/api/v1/hosted-tgs", strict).await;
    assert_eq!(g.json["require_passport"], true);
    let stored = db.store.hosted_tgs().get(&Scope::Admin, &id(&g)).await;
    assert!(stored.unwrap().require_passport);
    srv.call("POST", "/api/v1/hosted-tgs", Some(hosted("acme", "main")))
        .await
        .problem(409);
    let mut bad = hosted("acme", "x");
    bad["advertisement"] = json!([1]);
    assert_eq!(
        srv.call("POST", "/api/v1/hosted-tgs", Some(bad))
            .await
            .problem(422)
            .as_deref(),
        Some("advertisement")
    );
    let mut bad = hosted("acme", "y");
    bad["destination_pattern"] = json!("+1408x");
    assert_eq!(
        srv.call("POST", "/api/v1/hosted-tgs", Some(bad))
            .await
            .problem(422)
            .as_deref(),
        Some("destination_pattern")
    );

    // Reordered customer TGs keep their tokens by name.
    let mut doc = r.json.clone();
    let tgs = doc["customer_tgs"].as_array().unwrap().clone();
    doc["customer_tgs"] = json!([tgs[1], tgs[0]]);
    let put = srv
        .call("PUT", &format!("/api/v1/hosted-tgs/{tg}"), Some(doc))
        .await;
    assert_eq!(put.status, 200, "{}", put.text);
    let stored = db.store.hosted_tgs().get(&Scope::Admin, &tg).await.unwrap();
    assert_eq!(stored.customer_tgs[1].name, "main");
    assert_eq!(
        stored.customer_tgs[1].token.as_ref().unwrap().expose(),
        "cust-token-value"
    );

    // Credentials: the secret is shown once, works with the store, and is never listed.
    let issued = srv
        .call(
            "POST",
            &format!("/api/v1/hosted-tgs/{tg}/credentials"),
            Some(json!({"name": "pbx", "kind": "token"})),
        )
        .await;
    assert_eq!(issued.status, 201, "{}", issued.text);
    let secret = issued.json["secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 40);
    assert_eq!(issued.json["tenant"], "acme");
    assert_eq!(issued.json["hosted_tg_id"], tg.as_str());
    let found = db
        .store
        .customer_credentials()
        .verify_token(&secret)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, id(&issued));
    let oauth = srv
        .call(
            "POST",
            &format!("/api/v1/hosted-tgs/{tg}/credentials"),
            Some(json!({"name": "app", "kind": "oauth_client"})),
        )
        .await;
    assert_eq!(oauth.status, 201);
    assert!(oauth.json["client_id"].is_string());
    srv.call(
        "POST",
        &format!("/api/v1/hosted-tgs/{tg}/credentials"),
        Some(json!({"name": "pbx", "kind": "token"})),
    )
    .await
    .problem(409);
    srv.call(
        "POST",
        "/api/v1/hosted-tgs/nope/credentials",
        Some(json!({"name": "z", "kind": "token"})),
    )
    .await
    .problem(404);
    let r = srv
        .call(
            "POST",
            &format!("/api/v1/hosted-tgs/{tg}/credentials"),
            Some(json!({"name": "z", "kind": "password"})),
        )
        .await;
    assert_eq!(r.problem(422).as_deref(), Some("kind"));
    let list = srv.get("/api/v1/customer-credentials").await;
    assert_eq!(list.json["items"].as_array().unwrap().len(), 2);
    assert!(!list.text.contains(&secret));
    assert!(!list.text.contains(oauth.json["secret"].as_str().unwrap()));
    assert!(!captured_logs().contains(&secret));
    let cred = id(&issued);
    assert_eq!(
        srv.call(
            "DELETE",
            &format!("/api/v1/customer-credentials/{cred}"),
            None
        )
        .await
        .status,
        204
    );
    srv.call(
        "DELETE",
        &format!("/api/v1/customer-credentials/{cred}"),
        None,
    )
    .await
    .problem(404);
    assert!(
        db.store
            .customer_credentials()
            .verify_token(&secret)
            .await
            .unwrap()
            .is_none()
    );

    assert_eq!(
        srv.call("DELETE", &format!("/api/v1/hosted-tgs/{tg}"), None)
            .await
            .status,
        204
    );
    no_secrets(&captured_logs());
});

both_dbs!(numbers_and_routes, |db| {
    let srv = serve(db.store.clone()).await;
    let block = json!({
        "tenant": "acme",
        "first": "+14085550100",
        "last": "+14085550199",
        "owner": {"kind": "hosted_tg", "id": "tg-1"},
        "vouch": true,
        "description": "Zürich's \"main\" block; 100%"
    });
    let r = create(&srv, "/api/v1/numbers", block.clone()).await;
    let nid = id(&r);
    assert_eq!(
        srv.get(&format!("/api/v1/numbers/{nid}")).await.json,
        r.json
    );
    assert_eq!(
        srv.call("POST", "/api/v1/numbers", Some(block.clone()))
            .await
            .problem(409)
            .as_deref(),
        Some("first")
    );
    let mut bad = block.clone();
    bad["first"] = json!("14085550100");
    assert_eq!(
        srv.call("POST", "/api/v1/numbers", Some(bad))
            .await
            .problem(422)
            .as_deref(),
        Some("first")
    );
    let mut bad = block.clone();
    bad["owner"]["kind"] = json!("fax");
    assert_eq!(
        srv.call("POST", "/api/v1/numbers", Some(bad))
            .await
            .problem(422)
            .as_deref(),
        Some("owner.kind")
    );
    let mut doc = r.json.clone();
    doc["vouch"] = json!(false);
    let put = srv
        .call("PUT", &format!("/api/v1/numbers/{nid}"), Some(doc))
        .await;
    assert_eq!(
        (put.status, put.json["vouch"].as_bool()),
        (200, Some(false))
    );
    assert_eq!(
        srv.get("/api/v1/numbers").await.json["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        srv.call("DELETE", &format!("/api/v1/numbers/{nid}"), None)
            .await
            .status,
        204
    );

    let route = |name: &str, source: &str| {
        json!({
            "name": name,
            "priority": 10,
            "source": {"kind": "sip_peer", "id": source},
            "destination_pattern": "+1*,!+1900*",
            "caller_pattern": "+1408*",
            "targets": [
                {"endpoint": {"kind": "upstream", "id": "up-1"}, "priority": 0, "weight": 70},
                {"endpoint": {"kind": "upstream", "id": "up-2"}, "priority": 1, "weight": 30}
            ]
        })
    };
    let a = create(&srv, "/api/v1/routes", route("to carrier", "pbx-1")).await;
    create(&srv, "/api/v1/routes", route("other", "pbx-2")).await;
    let by_source = srv
        .get("/api/v1/routes?source_kind=sip_peer&source_id=pbx-1")
        .await;
    assert_eq!(by_source.status, 200, "{}", by_source.text);
    let items = by_source.json["items"].as_array().unwrap();
    assert_eq!(
        (items.len(), items[0]["name"].as_str()),
        (1, Some("to carrier"))
    );
    assert_eq!(
        srv.get("/api/v1/routes").await.json["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        srv.get("/api/v1/routes?source_id=pbx-1")
            .await
            .problem(400)
            .as_deref(),
        Some("source_id")
    );
    assert_eq!(
        srv.get("/api/v1/routes?source_kind=modem&source_id=x")
            .await
            .problem(400)
            .as_deref(),
        Some("source_kind")
    );
    let mut bad = route("bad", "pbx-1");
    bad["targets"] = json!([]);
    assert_eq!(
        srv.call("POST", "/api/v1/routes", Some(bad))
            .await
            .problem(422)
            .as_deref(),
        Some("targets")
    );
    let mut doc = a.json.clone();
    doc["enabled"] = json!(false);
    let rid = id(&a);
    assert_eq!(
        srv.call("PUT", &format!("/api/v1/routes/{rid}"), Some(doc))
            .await
            .json["enabled"],
        false
    );
    assert_eq!(
        srv.call("DELETE", &format!("/api/v1/routes/{rid}"), None)
            .await
            .status,
        204
    );
});

both_dbs!(admin_tokens_issued_into_the_store_authenticate, |db| {
    let state = AdminState::new(db.store.clone(), auth().with_store_tokens(), Metrics::new());
    let srv = serve_state(state).await;
    let issued = srv
        .call("POST", "/api/v1/admin-tokens", Some(json!({"name": "ops"})))
        .await;
    assert_eq!(issued.status, 201, "{}", issued.text);
    let secret = issued.json["secret"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {secret}");
    let r = srv
        .raw(
            "GET",
            "/api/v1/admin-tokens",
            &[("authorization", bearer.as_str())],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!r.text.contains(&secret));
    assert_eq!(r.json["items"][0]["name"], "ops");
    srv.call("POST", "/api/v1/admin-tokens", Some(json!({"name": "ops"})))
        .await
        .problem(409);
    let tid = id(&issued);
    assert_eq!(
        srv.call("DELETE", &format!("/api/v1/admin-tokens/{tid}"), None)
            .await
            .status,
        204
    );
    srv.raw(
        "GET",
        "/api/v1/admin-tokens",
        &[("authorization", bearer.as_str())],
        None,
    )
    .await
    .problem(401);
    // The static token still works; neither secret was logged.
    assert_eq!(srv.get("/api/v1/admin-tokens").await.status, 200);
    let logs = captured_logs();
    assert!(!logs.contains(&secret) && !logs.contains(TOKEN));
});

/// Records hang-ups; ends calls it knows, says "other instance" for the rest.
struct Recorder {
    mine: Vec<String>,
    asked: Mutex<Vec<String>>,
}

impl CallControl for Recorder {
    fn hang_up<'a>(
        &'a self,
        call_id: &'a str,
    ) -> Pin<Box<dyn Future<Output = HangUp> + Send + 'a>> {
        Box::pin(async move {
            if let Ok(mut a) = self.asked.lock() {
                a.push(call_id.to_owned());
            }
            if self.mine.iter().any(|c| c == call_id) {
                HangUp::Ending
            } else {
                HangUp::OtherInstance
            }
        })
    }
}

both_dbs!(live_calls_and_cdrs, |db| {
    use store::calls::CallSnapshot;
    for (id, instance) in [("call-1", "gw-a"), ("call-2", "gw-a"), ("call-3", "gw-b")] {
        db.store
            .calls()
            .upsert(&CallSnapshot {
                id: id.into(),
                instance_id: instance.into(),
                state: "answered".into(),
                sip_call_id: Some(format!("{id}@pbx")),
                ript_call_id: None,
                cookies: vec!["session=cookie-secret; Path=/".into()],
                sip_leg: json!({"srtp_key": "leg-secret"}),
                ript_leg: json!({}),
                revision: 0,
                started_at: 1_000,
                updated_at: 0,
            })
            .await
            .unwrap();
    }
    let control = Arc::new(Recorder {
        mine: vec!["call-1".into()],
        asked: Mutex::new(Vec::new()),
    });
    let state = AdminState::new(db.store.clone(), auth(), Metrics::new())
        .with_instance_id("gw-a")
        .with_call_control(control.clone());
    let srv = serve_state(state).await;
    let mine = srv.get("/api/v1/calls").await;
    assert_eq!(mine.status, 200, "{}", mine.text);
    assert_eq!(mine.json["items"].as_array().unwrap().len(), 2);
    assert!(
        !mine.text.contains("cookie-secret") && !mine.text.contains("leg-secret"),
        "{}",
        mine.text
    );
    let paged = srv.get("/api/v1/calls?limit=1&offset=1").await;
    assert_eq!(paged.json["items"][0]["id"], "call-2");
    let theirs = srv.get("/api/v1/calls?instance_id=gw-b").await;
    assert_eq!(theirs.json["items"][0]["id"], "call-3");
    assert_eq!(
        srv.get("/api/v1/calls/call-3").await.json["instance_id"],
        "gw-b"
    );
    srv.get("/api/v1/calls/nope").await.problem(404);
    assert_eq!(
        srv.call("DELETE", "/api/v1/calls/call-1", None)
            .await
            .status,
        202
    );
    assert_eq!(
        srv.call("DELETE", "/api/v1/calls/call-3", None)
            .await
            .problem(409)
            .as_deref(),
        Some("instance_id")
    );
    srv.call("DELETE", "/api/v1/calls/nope", None)
        .await
        .problem(404);
    assert_eq!(
        *control.asked.lock().unwrap(),
        vec!["call-1".to_owned(), "call-3".to_owned()]
    );
    // Without call control (and without an instance id) the API says so instead of pretending.
    let bare = serve(db.store.clone()).await;
    bare.call("DELETE", "/api/v1/calls/call-1", None)
        .await
        .problem(503);
    assert_eq!(
        bare.get("/api/v1/calls").await.problem(400).as_deref(),
        Some("instance_id")
    );

    // CDRs by time, number, peer and cause.
    use store::cdr::{Cdr, MediaCounters};
    use store::model::{Endpoint, EndpointKind};
    for (i, caller, status, peer) in [
        (0, "+14085550001", 200, "pbx-1"),
        (1, "+14085550002", 486, "pbx-1"),
        (2, "+14085550001", 486, "pbx-2"),
        (3, "+14085550003", 200, "pbx-2"),
    ] {
        db.store
            .cdrs()
            .insert(Cdr {
                id: String::new(),
                call_id: format!("call-{i}"),
                started_at: 1_000_000 + i * 1_000,
                answered_at: (status == 200).then_some(1_000_000 + i * 1_000 + 200),
                ended_at: 1_000_000 + i * 1_000 + 900,
                caller: caller.into(),
                callee: "+15550001111".into(),
                source: Endpoint {
                    kind: EndpointKind::SipPeer,
                    id: peer.into(),
                },
                target: None,
                route_id: None,
                sip_call_id: None,
                ript_call_id: None,
                sip_codec: Some("PCMU".into()),
                ript_codec: None,
                sip_status: Some(status),
                ript_reason: (status != 200).then(|| "busy".into()),
                media: MediaCounters::default(),
            })
            .await
            .unwrap();
    }
    let ids = |r: &Reply| -> Vec<String> {
        r.json["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["call_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = srv.get("/api/v1/cdrs").await;
    assert_eq!(ids(&all), ["call-3", "call-2", "call-1", "call-0"]);
    assert_eq!(all.json["items"][3]["duration_ms"], 700);
    assert_eq!(
        ids(&srv.get("/api/v1/cdrs?from=1001000&to=1003000").await),
        ["call-2", "call-1"]
    );
    assert_eq!(
        ids(&srv.get("/api/v1/cdrs?number=%2B14085550001").await),
        ["call-2", "call-0"]
    );
    assert_eq!(
        ids(&srv.get("/api/v1/cdrs?peer=pbx-2").await),
        ["call-3", "call-2"]
    );
    assert_eq!(
        ids(&srv.get("/api/v1/cdrs?sip_status=486&peer=pbx-1").await),
        ["call-1"]
    );
    assert_eq!(
        ids(&srv.get("/api/v1/cdrs?ript_reason=busy&limit=1").await),
        ["call-2"]
    );
    let one = &all.json["items"][0];
    let cdr_id = one["id"].as_str().unwrap();
    assert_eq!(&srv.get(&format!("/api/v1/cdrs/{cdr_id}")).await.json, one);
    srv.get("/api/v1/cdrs/nope").await.problem(404);
    for (q, field) in [
        ("from=yesterday", "from"),
        ("sip_status=70000", "sip_status"),
        ("from=5&to=1", "to"),
        ("number=%00", "number"),
        ("cause=busy", "cause"),
    ] {
        assert_eq!(
            srv.get(&format!("/api/v1/cdrs?{q}"))
                .await
                .problem(400)
                .as_deref(),
            Some(field),
            "{q}"
        );
    }
});
