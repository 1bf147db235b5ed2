use crate::both_dbs;
use crate::common::{Backend, captured_logs, serve};
use serde_json::{Value, json};
use store::Store;

pub const IN_SECRET: &str = "in-secret-Zq9ü";
pub const OUT_SECRET: &str = "out-secret-Kx7";

pub fn peer(name: &str) -> Value {
    json!({
        "name": name,
        "transport": "tls",
        "addresses": ["pbx.example:5061", "[2001:db8::1]:5061"],
        "allow_list": ["192.0.2.0/24"],
        "inbound_auth": {"username": "pbx", "password": IN_SECRET},
        "outbound_auth": {"username": "gw", "password": OUT_SECRET},
        "registration": "outbound",
        "dtmf": "rfc4733",
        "codecs": ["opus", "PCMU"],
        "srtp": "optional",
        "number_rules": {"country_code": "44", "national_prefix": "0", "plus": "strip", "tech_prefix": "9#"},
        "max_cps": 10,
        "max_concurrent": 100,
        "options_interval_s": 30
    })
}

#[track_caller]
fn no_secrets(text: &str) {
    for s in [IN_SECRET, OUT_SECRET] {
        assert!(!text.contains(s), "secret leaked: {text}");
    }
}

both_dbs!(peer_crud_round_trip_over_http, |db| {
    let srv = serve(db.store.clone()).await;
    let r = srv
        .call("POST", "/api/v1/sip-peers", Some(peer("pbx-a")))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    no_secrets(&r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    assert_eq!(
        r.headers["location"].to_str().unwrap(),
        format!("/api/v1/sip-peers/{id}")
    );
    assert_eq!(r.json["inbound_auth"]["password"], "***");
    assert_eq!(r.json["inbound_auth"]["username"], "pbx");
    assert_eq!(r.json["number_rules"]["plus"], "strip");
    assert!(r.json["created_at"].as_i64().unwrap() > 0);

    let got = srv.get(&format!("/api/v1/sip-peers/{id}")).await;
    assert_eq!(got.status, 200);
    no_secrets(&got.text);
    assert_eq!(got.json, r.json);

    // The stored secret is the one sent, though no response shows it.
    let stored = db
        .store
        .sip_peers()
        .get(&store::Scope::Admin, &id)
        .await
        .unwrap();
    assert_eq!(stored.inbound_auth.unwrap().password.expose(), IN_SECRET);

    // GET, change, PUT back with the masks: secrets kept, the rest replaced.
    let mut doc = got.json.clone();
    doc["codecs"] = json!(["PCMA"]);
    doc["outbound_auth"]["password"] = json!("new-out-secret");
    let put = srv
        .call("PUT", &format!("/api/v1/sip-peers/{id}"), Some(doc))
        .await;
    assert_eq!(put.status, 200, "{}", put.text);
    assert_eq!(put.json["codecs"], json!(["PCMA"]));
    assert_eq!(put.json["created_at"], r.json["created_at"]);
    let stored = db
        .store
        .sip_peers()
        .get(&store::Scope::Admin, &id)
        .await
        .unwrap();
    assert_eq!(stored.inbound_auth.unwrap().password.expose(), IN_SECRET);
    assert_eq!(
        stored.outbound_auth.unwrap().password.expose(),
        "new-out-secret"
    );

    // Paging.
    for n in ["pbx-b", "pbx-c"] {
        assert_eq!(
            srv.call("POST", "/api/v1/sip-peers", Some(peer(n)))
                .await
                .status,
            201
        );
    }
    let page = srv.get("/api/v1/sip-peers?limit=2&offset=1").await;
    assert_eq!(page.status, 200, "{}", page.text);
    let names: Vec<_> = page.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("pbx-b"), json!("pbx-c")]);
    assert_eq!(
        (page.json["limit"].as_u64(), page.json["offset"].as_u64()),
        (Some(2), Some(1))
    );
    no_secrets(&page.text);
    let all = srv.get("/api/v1/sip-peers").await;
    assert_eq!(all.json["items"].as_array().unwrap().len(), 3);
    let named = srv.get("/api/v1/sip-peers?name=pbx-c").await;
    assert_eq!(named.json["items"].as_array().unwrap().len(), 1);
    assert_eq!(named.json["items"][0]["name"], "pbx-c");

    let del = srv
        .call("DELETE", &format!("/api/v1/sip-peers/{id}"), None)
        .await;
    assert_eq!(del.status, 204, "{}", del.text);
    assert_eq!(
        srv.get(&format!("/api/v1/sip-peers/{id}"))
            .await
            .problem(404),
        None
    );
    srv.call("DELETE", &format!("/api/v1/sip-peers/{id}"), None)
        .await
        .problem(404);

    no_secrets(&captured_logs());
    no_secrets(&srv.get("/metrics").await.text);
});

both_dbs!(changes_through_one_instance_are_seen_by_another, |db| {
    // Two routers, each with its own pool, over one database: what one writes the other
    // reads. (SQLite runs it too, over the same file.)
    let second = Store::connect(&db.url, db.key.clone()).await.unwrap();
    let a = serve(db.store.clone()).await;
    let b = serve(second.clone()).await;
    let created = a
        .call("POST", "/api/v1/sip-peers", Some(peer("shared")))
        .await;
    assert_eq!(created.status, 201);
    let id = created.json["id"].as_str().unwrap();
    let seen = b.get(&format!("/api/v1/sip-peers/{id}")).await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.json, created.json);

    let mut doc = seen.json.clone();
    doc["enabled"] = json!(false);
    assert_eq!(
        b.call("PUT", &format!("/api/v1/sip-peers/{id}"), Some(doc))
            .await
            .status,
        200
    );
    assert_eq!(
        a.get(&format!("/api/v1/sip-peers/{id}")).await.json["enabled"],
        false
    );
    // Names are unique across instances.
    let dup = b
        .call("POST", "/api/v1/sip-peers", Some(peer("shared")))
        .await;
    assert_eq!(dup.problem(409).as_deref(), Some("name"));
    assert_eq!(
        b.call("DELETE", &format!("/api/v1/sip-peers/{id}"), None)
            .await
            .status,
        204
    );
    a.get(&format!("/api/v1/sip-peers/{id}")).await.problem(404);
    if db.backend == Backend::Postgres {
        // The version counter other instances poll moved with every write.
        assert!(second.config_version().await.unwrap() >= 3);
    }
    second.close().await;
});
