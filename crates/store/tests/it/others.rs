use crate::both_dbs;
use serde_json::json;
use sqlx::Row as _;
use store::calls::CallSnapshot;
use store::cdr::{Cdr, CdrFilter, MediaCounters};
use store::hosted::{CredentialKind, CustomerTg, HostedTg};
use store::model::{Endpoint, EndpointKind};
use store::number::NumberBlock;
use store::route::{Route, RouteTarget};
use store::upstream::{MediaMode, RiptUpstream, UpstreamAuth, UpstreamCustomerTg};
use store::{Error, Page, Scope, Secret, SecretKey, Store};

const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const KEY_PEM: &str =
    "-----BEGIN PRIVATE KEY-----\nprivate-key-material\n-----END PRIVATE KEY-----\n";

fn upstream(name: &str) -> RiptUpstream {
    RiptUpstream {
        id: String::new(),
        name: name.into(),
        enabled: true,
        root_url: "https://ript.example/.well-known/ript".into(),
        trunk_group: "tg-1".into(),
        auth: UpstreamAuth::OauthClient {
            token_url: "https://auth.example/token".into(),
            client_id: "gw".into(),
            client_secret: Secret::new("client-secret-value"),
            scope: Some("ript".into()),
        },
        trust_anchors_pem: Some(PEM.into()),
        client_cert_pem: Some(PEM.into()),
        client_key_pem: Some(Secret::new(KEY_PEM)),
        media_mode: MediaMode::Datagrams,
        media_key: Some(Secret::new("media-key-value")),
        max_cps: Some(5),
        max_concurrent: None,
        customer_tg: None,
        created_at: 0,
        updated_at: 0,
    }
}

fn ep(kind: EndpointKind, id: &str) -> Endpoint {
    Endpoint {
        kind,
        id: id.into(),
    }
}

fn hosted(tenant: &str, name: &str) -> HostedTg {
    HostedTg {
        id: String::new(),
        tenant: tenant.into(),
        name: name.into(),
        enabled: true,
        vouched_numbers: vec!["+1408555*".into()],
        require_passport: false,
        destination_pattern: "*".into(),
        advertisement: json!({"media": ["opus", "pcmu"]}),
        customer_tgs: vec![
            CustomerTg {
                name: "main".into(),
                url: "https://cust.example/tg".into(),
                token: Some(Secret::new("cust-token-value")),
            },
            CustomerTg {
                name: "backup".into(),
                url: "https://cust2.example/tg".into(),
                token: None,
            },
        ],
        customer_tg_trust_anchors_pem: Some(PEM.into()),
        max_cps: None,
        max_concurrent: Some(50),
        created_at: 0,
        updated_at: 0,
    }
}

fn assert_not_in(raw: &[u8], needle: &str) {
    assert!(
        !raw.windows(needle.len()).any(|w| w == needle.as_bytes()),
        "{needle} in clear"
    );
}

both_dbs!(upstream_round_trip_and_secrets, |db| {
    let repo = db.store.ript_upstreams();
    let u = repo
        .create(&Scope::Admin, upstream("carrier"))
        .await
        .unwrap();
    assert_eq!(repo.get(&Scope::Admin, &u.id).await.unwrap(), u);
    let row = sqlx::query("SELECT auth_secret, client_key_pem, media_key, auth_params FROM ript_upstreams WHERE id = $1")
        .bind(u.id.clone()).fetch_one(db.store.pool()).await.unwrap();
    assert_not_in(
        &row.try_get::<Vec<u8>, _>("auth_secret").unwrap(),
        "client-secret-value",
    );
    assert_not_in(
        &row.try_get::<Vec<u8>, _>("client_key_pem").unwrap(),
        "private-key-material",
    );
    assert_not_in(
        &row.try_get::<Vec<u8>, _>("media_key").unwrap(),
        "media-key-value",
    );
    assert!(
        !row.try_get::<String, _>("auth_params")
            .unwrap()
            .contains("secret")
    );
    let api = serde_json::to_string(&u).unwrap();
    assert!(
        !api.contains("client-secret-value")
            && !api.contains("private-key")
            && !api.contains("media-key"),
        "{api}"
    );

    let mut tok = upstream("carrier");
    tok.auth = UpstreamAuth::Token {
        token: Secret::new("static-token"),
    };
    tok.media_key = None;
    let t = repo.update(&Scope::Admin, &u.id, tok).await.unwrap();
    assert_eq!(repo.get(&Scope::Admin, &u.id).await.unwrap(), t);

    let mut bad = upstream("x");
    bad.root_url = "http://ript.example/".into();
    assert!(matches!(
        repo.create(&Scope::Admin, bad).await,
        Err(Error::Invalid {
            field: "root_url",
            ..
        })
    ));
    let mut bad = upstream("x");
    bad.client_key_pem = None;
    assert!(matches!(
        repo.create(&Scope::Admin, bad).await,
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        repo.create(&Scope::Admin, upstream("carrier")).await,
        Err(Error::Conflict { field: "name" })
    ));

    let wrong = Store::connect(&db.url, SecretKey::generate().unwrap())
        .await
        .unwrap();
    assert!(matches!(
        wrong.ript_upstreams().get(&Scope::Admin, &u.id).await,
        Err(Error::Decrypt { .. })
    ));
    wrong.close().await;
});

both_dbs!(
    upstream_customer_tg_sealed_and_registration_kept_apart,
    |db| {
        let repo = db.store.ript_upstreams();
        let mut with = upstream("carrier");
        with.customer_tg = Some(UpstreamCustomerTg {
            hosted_tg_id: "hosted-1".into(),
            token: Secret::new("handed-over-token"),
            destinations: "+1408*".into(),
        });
        let u = repo.create(&Scope::Admin, with.clone()).await.unwrap();
        assert_eq!(repo.get(&Scope::Admin, &u.id).await.unwrap(), u);
        let row =
            sqlx::query("SELECT customer_tg, customer_tg_token FROM ript_upstreams WHERE id = $1")
                .bind(u.id.clone())
                .fetch_one(db.store.pool())
                .await
                .unwrap();
        assert_not_in(
            &row.try_get::<Vec<u8>, _>("customer_tg_token").unwrap(),
            "handed-over-token",
        );
        assert!(
            !row.try_get::<String, _>("customer_tg")
                .unwrap()
                .contains("handed-over")
        );
        let api = serde_json::to_string(&u).unwrap();
        assert!(!api.contains("handed-over-token"), "{api}");

        // The registration URI is runtime state: recorded without a configuration change, kept
        // across updates of the upstream, gone with it.
        assert_eq!(
            db.store.customer_tg_registration(&u.id).await.unwrap(),
            None
        );
        let v = db.store.config_version().await.unwrap();
        let uri = "https://ript.example/.well-known/ript/v1/customertgs/abc";
        db.store
            .set_customer_tg_registration(&u.id, Some(uri))
            .await
            .unwrap();
        assert_eq!(db.store.config_version().await.unwrap(), v);
        assert_eq!(
            repo.get(&Scope::Admin, &u.id).await.unwrap(),
            u,
            "updated_at kept"
        );
        let mut without = with;
        without.customer_tg = None;
        let w = repo.update(&Scope::Admin, &u.id, without).await.unwrap();
        assert_eq!(w.customer_tg, None);
        assert_eq!(repo.get(&Scope::Admin, &u.id).await.unwrap(), w);
        assert_eq!(
            db.store
                .customer_tg_registration(&u.id)
                .await
                .unwrap()
                .as_deref(),
            Some(uri)
        );
        db.store
            .set_customer_tg_registration(&u.id, None)
            .await
            .unwrap();
        assert_eq!(
            db.store.customer_tg_registration(&u.id).await.unwrap(),
            None
        );
        assert_eq!(
            db.store.customer_tg_registration("nope").await.unwrap(),
            None
        );

        let mut bad = upstream("bad");
        bad.customer_tg = Some(UpstreamCustomerTg {
            hosted_tg_id: "hosted-1".into(),
            token: Secret::new(""),
            destinations: "*".into(),
        });
        assert!(matches!(
            repo.create(&Scope::Admin, bad.clone()).await,
            Err(Error::Invalid {
                field: "customer_tg.token",
                ..
            })
        ));
        if let Some(c) = bad.customer_tg.as_mut() {
            c.token = Secret::new("t");
            c.destinations = "+1 408".into();
        }
        assert!(matches!(
            repo.create(&Scope::Admin, bad).await,
            Err(Error::Invalid {
                field: "customer_tg.destinations",
                ..
            })
        ));
    }
);

both_dbs!(hosted_tgs_tenant_isolation, |db| {
    let repo = db.store.hosted_tgs();
    let acme = Scope::Tenant("acme".into());
    let globex = Scope::Tenant("globex".into());
    let a = repo.create(&acme, hosted("acme", "main")).await.unwrap();
    // Same name in another tenant is fine; twice in one tenant is a conflict.
    let mut strict = hosted("globex", "main");
    strict.require_passport = true;
    let g = repo.create(&globex, strict).await.unwrap();
    assert!(repo.get(&globex, &g.id).await.unwrap().require_passport);
    assert!(matches!(
        repo.create(&acme, hosted("acme", "main")).await,
        Err(Error::Conflict { field: "name" })
    ));
    // A tenant cannot create for another tenant.
    assert!(matches!(
        repo.create(&acme, hosted("globex", "x")).await,
        Err(Error::Invalid {
            field: "tenant",
            ..
        })
    ));

    let got = repo.get(&acme, &a.id).await.unwrap();
    assert_eq!(got, a);
    assert_eq!(
        got.customer_tgs[0].token.as_ref().unwrap().expose(),
        "cust-token-value"
    );
    assert!(got.customer_tgs[1].token.is_none());
    let raw: Vec<u8> = sqlx::query("SELECT customer_tg_tokens FROM hosted_tgs WHERE id = $1")
        .bind(a.id.clone())
        .fetch_one(db.store.pool())
        .await
        .unwrap()
        .try_get("customer_tg_tokens")
        .unwrap();
    assert_not_in(&raw, "cust-token-value");

    // Another customer's TG is NotFound for every operation.
    assert!(matches!(
        repo.get(&acme, &g.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        repo.update(&acme, &g.id, hosted("acme", "stolen")).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        repo.delete(&acme, &g.id).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(repo.list(&acme, Page::default()).await.unwrap().len(), 1);
    assert_eq!(
        repo.list(&Scope::Admin, Page::default())
            .await
            .unwrap()
            .len(),
        2
    );
    let mut bad = hosted("acme", "bad");
    bad.destination_pattern = "+1 408".into();
    assert!(matches!(
        repo.create(&acme, bad).await,
        Err(Error::Invalid {
            field: "destination_pattern",
            ..
        })
    ));
    repo.delete(&acme, &a.id).await.unwrap();
});

both_dbs!(customer_credentials_hashed_and_scoped, |db| {
    let acme = Scope::Tenant("acme".into());
    let globex = Scope::Tenant("globex".into());
    let tg = db
        .store
        .hosted_tgs()
        .create(&acme, hosted("acme", "main"))
        .await
        .unwrap();
    let creds = db.store.customer_credentials();
    let (tok, secret) = creds
        .issue(&acme, &tg.id, "ci token", CredentialKind::Token)
        .await
        .unwrap();
    assert_eq!(tok.tenant, "acme");
    assert!(format!("{secret:?}").contains("***"));
    let raw: Vec<u8> = sqlx::query("SELECT secret_hash FROM customer_credentials WHERE id = $1")
        .bind(tok.id.clone())
        .fetch_one(db.store.pool())
        .await
        .unwrap()
        .try_get("secret_hash")
        .unwrap();
    assert_eq!(raw.len(), 32);
    assert_not_in(&raw, secret.expose());
    assert_eq!(
        creds
            .verify_token(secret.expose())
            .await
            .unwrap()
            .unwrap()
            .id,
        tok.id
    );
    assert!(creds.verify_token("wrong").await.unwrap().is_none());

    let (client, csecret) = creds
        .issue(&acme, &tg.id, "oauth", CredentialKind::OauthClient)
        .await
        .unwrap();
    let cid = client.client_id.clone().unwrap();
    assert_eq!(
        creds
            .verify_client(&cid, csecret.expose())
            .await
            .unwrap()
            .unwrap()
            .id,
        client.id
    );
    assert!(
        creds
            .verify_client(&cid, secret.expose())
            .await
            .unwrap()
            .is_none()
    );
    // A client secret is not a bearer token.
    assert!(
        creds
            .verify_token(csecret.expose())
            .await
            .unwrap()
            .is_none()
    );

    assert!(matches!(
        creds
            .issue(&acme, &tg.id, "ci token", CredentialKind::Token)
            .await,
        Err(Error::Conflict { field: "name" })
    ));
    assert!(matches!(
        creds
            .issue(&globex, &tg.id, "x", CredentialKind::Token)
            .await,
        Err(Error::NotFound { .. })
    ));
    assert!(
        creds
            .list(&globex, Page::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(creds.list(&acme, Page::default()).await.unwrap().len(), 2);
    assert!(matches!(
        creds.revoke(&globex, &tok.id).await,
        Err(Error::NotFound { .. })
    ));
    creds.revoke(&acme, &tok.id).await.unwrap();
    assert!(creds.verify_token(secret.expose()).await.unwrap().is_none());
    // Deleting the TG removes its credentials.
    db.store.hosted_tgs().delete(&acme, &tg.id).await.unwrap();
    assert!(
        creds
            .verify_client(&cid, csecret.expose())
            .await
            .unwrap()
            .is_none()
    );
});

both_dbs!(numbers_crud_and_scoping, |db| {
    let repo = db.store.numbers();
    let acme = Scope::Tenant("acme".into());
    let block = NumberBlock {
        id: String::new(),
        tenant: Some("acme".into()),
        first: "+14085550100".into(),
        last: Some("+14085550199".into()),
        owner: ep(EndpointKind::HostedTg, "tg-1"),
        vouch: true,
        description: "Zürich's \"main\" block; 100%".into(),
        created_at: 0,
        updated_at: 0,
    };
    let b = repo.create(&acme, block.clone()).await.unwrap();
    assert_eq!(repo.get(&acme, &b.id).await.unwrap(), b);
    assert!(
        b.contains("+14085550150") && !b.contains("+14085550200") && !b.contains("+140855501500")
    );
    assert!(matches!(
        repo.get(&Scope::Tenant("globex".into()), &b.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        repo.create(&acme, block.clone()).await,
        Err(Error::Conflict { field: "first" })
    ));
    let mut bad = block.clone();
    bad.first = "4085550100".into();
    assert!(matches!(
        repo.create(&acme, bad).await,
        Err(Error::Invalid { field: "first", .. })
    ));
    let mut bad = block.clone();
    bad.last = Some("+14085550099".into());
    assert!(matches!(
        repo.create(&acme, bad).await,
        Err(Error::Invalid { field: "last", .. })
    ));
    // Operator-owned numbers (no tenant) are invisible to tenants.
    let mut op = block.clone();
    op.tenant = None;
    op.first = "+442071234567".into();
    op.last = None;
    let o = repo.create(&Scope::Admin, op).await.unwrap();
    assert!(matches!(
        repo.get(&acme, &o.id).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(repo.list(&acme, Page::default()).await.unwrap().len(), 1);
    assert_eq!(
        repo.list(&Scope::Admin, Page::default())
            .await
            .unwrap()
            .len(),
        2
    );
    let mut moved = b.clone();
    moved.vouch = false;
    repo.update(&acme, &b.id, moved).await.unwrap();
    assert!(!repo.get(&acme, &b.id).await.unwrap().vouch);
});

both_dbs!(routes_crud, |db| {
    let repo = db.store.routes();
    let src = ep(EndpointKind::SipPeer, "peer-1");
    let route = Route {
        id: String::new(),
        name: "to carrier".into(),
        enabled: true,
        priority: 10,
        source: src.clone(),
        destination_pattern: "+1*,!+1900*".into(),
        caller_pattern: Some("+1408*".into()),
        targets: vec![
            RouteTarget {
                endpoint: ep(EndpointKind::Upstream, "up-1"),
                priority: 0,
                weight: 70,
            },
            RouteTarget {
                endpoint: ep(EndpointKind::Upstream, "up-2"),
                priority: 0,
                weight: 30,
            },
            RouteTarget {
                endpoint: ep(EndpointKind::Upstream, "up-3"),
                priority: 1,
                weight: 1,
            },
        ],
        created_at: 0,
        updated_at: 0,
    };
    let r = repo.create(&Scope::Admin, route.clone()).await.unwrap();
    assert_eq!(repo.get(&Scope::Admin, &r.id).await.unwrap(), r);
    let mut other = route.clone();
    other.name = "other".into();
    other.source = ep(EndpointKind::HostedTg, "tg-9");
    repo.create(&Scope::Admin, other).await.unwrap();
    let for_src = repo.list_for_source(&src, Page::default()).await.unwrap();
    assert_eq!(for_src.len(), 1);
    assert_eq!(for_src[0].id, r.id);
    assert!(matches!(
        repo.create(&Scope::Admin, route.clone()).await,
        Err(Error::Conflict { field: "name" })
    ));
    let mut bad = route.clone();
    bad.name = "bad".into();
    bad.targets.clear();
    assert!(matches!(
        repo.create(&Scope::Admin, bad).await,
        Err(Error::Invalid {
            field: "targets",
            ..
        })
    ));
    let mut bad = route.clone();
    bad.name = "bad".into();
    bad.destination_pattern = "+1'; --".into();
    assert!(matches!(
        repo.create(&Scope::Admin, bad).await,
        Err(Error::Invalid {
            field: "destination_pattern",
            ..
        })
    ));
    repo.delete(&Scope::Admin, &r.id).await.unwrap();
    assert!(matches!(
        repo.get(&Scope::Admin, &r.id).await,
        Err(Error::NotFound { .. })
    ));
});

both_dbs!(admin_tokens_hashed_verify_revoke, |db| {
    let tokens = db.store.admin_tokens();
    let v0 = db.store.config_version().await.unwrap();
    let (t, secret) = tokens.issue("ops").await.unwrap();
    assert_eq!(db.store.config_version().await.unwrap(), v0 + 1);
    assert!(secret.expose().len() >= 43, "256-bit token");
    let raw: Vec<u8> = sqlx::query("SELECT token_hash FROM admin_tokens WHERE id = $1")
        .bind(t.id.clone())
        .fetch_one(db.store.pool())
        .await
        .unwrap()
        .try_get("token_hash")
        .unwrap();
    assert_not_in(&raw, secret.expose());
    assert_eq!(
        tokens.verify(secret.expose()).await.unwrap(),
        Some(t.clone())
    );
    assert_eq!(tokens.verify("nope").await.unwrap(), None);
    assert!(matches!(
        tokens.issue("ops").await,
        Err(Error::Conflict { field: "name" })
    ));
    assert_eq!(tokens.list(Page::default()).await.unwrap(), vec![t.clone()]);
    tokens.revoke(&t.id).await.unwrap();
    assert_eq!(tokens.verify(secret.expose()).await.unwrap(), None);
    assert!(matches!(
        tokens.revoke(&t.id).await,
        Err(Error::NotFound { .. })
    ));
});

both_dbs!(calls_upsert_and_takeover, |db| {
    let calls = db.store.calls();
    let mut c = CallSnapshot {
        id: "call-1".into(),
        instance_id: "gw-a".into(),
        state: "ringing".into(),
        sip_call_id: Some("abc@pbx".into()),
        ript_call_id: None,
        cookies: vec!["s=1; Path=/".into()],
        sip_leg: json!({"from_tag": "x", "to_tag": null}),
        ript_leg: json!({}),
        revision: 0,
        started_at: 1_000,
        updated_at: 0,
    };
    let s1 = calls.upsert(&c).await.unwrap();
    assert_eq!(s1.revision, 1);
    c.state = "answered".into();
    c.ript_call_id = Some("https://ript.example/calls/7".into());
    let s2 = calls.upsert(&c).await.unwrap();
    assert_eq!((s2.revision, s2.state.as_str()), (2, "answered"));
    assert_eq!(calls.get("call-1").await.unwrap(), s2);

    // Another instance sharing the database takes it over; the old owner's late write loses.
    let b = Store::connect(&db.url, db.key.clone()).await.unwrap();
    assert_eq!(b.calls().list_by_instance("gw-a").await.unwrap().len(), 1);
    assert!(b.calls().take_over("call-1", "gw-a", "gw-b").await.unwrap());
    assert!(!b.calls().take_over("call-1", "gw-a", "gw-c").await.unwrap());
    c.state = "stale".into();
    assert!(matches!(
        calls.upsert(&c).await,
        Err(Error::Conflict {
            field: "instance_id"
        })
    ));
    let now = b.calls().get("call-1").await.unwrap();
    assert_eq!(
        (now.instance_id.as_str(), now.state.as_str(), now.revision),
        ("gw-b", "answered", 3)
    );
    b.calls().delete("call-1").await.unwrap();
    assert!(matches!(
        calls.get("call-1").await,
        Err(Error::NotFound { .. })
    ));
    b.close().await;
});

fn cdr(i: i64, caller: &str, status: u16, peer: &str) -> Cdr {
    Cdr {
        id: String::new(),
        call_id: format!("call-{i}"),
        started_at: 1_000_000 + i * 1_000,
        answered_at: (status == 200).then_some(1_000_000 + i * 1_000 + 200),
        ended_at: 1_000_000 + i * 1_000 + 900,
        caller: caller.into(),
        callee: "+15550001111".into(),
        source: ep(EndpointKind::SipPeer, peer),
        target: (status == 200).then(|| ep(EndpointKind::Upstream, "up-1")),
        route_id: Some("r1".into()),
        sip_call_id: Some(format!("{i}@pbx")),
        ript_call_id: None,
        sip_codec: Some("PCMU".into()),
        ript_codec: Some("opus".into()),
        sip_status: Some(status),
        ript_reason: (status != 200).then(|| "busy".into()),
        media: MediaCounters {
            rtp_packets_in: 10,
            rtp_packets_out: 11,
            ript_chunks_in: 12,
            ript_chunks_out: 13,
            packets_lost: 1,
        },
    }
}

both_dbs!(cdr_queries_filters_and_paging, |db| {
    let cdrs = db.store.cdrs();
    let v0 = db.store.config_version().await.unwrap();
    for i in 0..10 {
        let (caller, status, peer) = if i % 2 == 0 {
            ("+14085550001", 200, "p1")
        } else {
            ("+14085550002", 486, "p2")
        };
        cdrs.insert(cdr(i, caller, status, peer)).await.unwrap();
    }
    assert_eq!(
        db.store.config_version().await.unwrap(),
        v0,
        "CDRs are not configuration"
    );
    let all = cdrs
        .query(&CdrFilter::default(), Page::first(100))
        .await
        .unwrap();
    assert_eq!(all.len(), 10);
    assert_eq!(all[0].call_id, "call-9", "newest first");
    assert_eq!(all[1].duration_ms(), 700);
    assert_eq!(all[0].duration_ms(), 0);
    assert_eq!(all[9].duration_ms(), 700);
    assert_eq!(cdrs.get(&all[9].id).await.unwrap(), all[9]);

    let f = CdrFilter {
        number: Some("+14085550002".into()),
        ..Default::default()
    };
    assert_eq!(cdrs.query(&f, Page::first(100)).await.unwrap().len(), 5);
    let f = CdrFilter {
        number: Some("+15550001111".into()),
        ..Default::default()
    };
    assert_eq!(
        cdrs.query(&f, Page::first(100)).await.unwrap().len(),
        10,
        "callee matches too"
    );
    let f = CdrFilter {
        sip_status: Some(486),
        ..Default::default()
    };
    assert!(
        cdrs.query(&f, Page::first(100))
            .await
            .unwrap()
            .iter()
            .all(|c| c.ript_reason.as_deref() == Some("busy"))
    );
    let f = CdrFilter {
        endpoint_id: Some("up-1".into()),
        ..Default::default()
    };
    assert_eq!(cdrs.query(&f, Page::first(100)).await.unwrap().len(), 5);
    let f = CdrFilter {
        from: Some(1_002_000),
        to: Some(1_006_000),
        endpoint_id: Some("p1".into()),
        ..Default::default()
    };
    let got: Vec<_> = cdrs
        .query(&f, Page::first(100))
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.call_id)
        .collect();
    assert_eq!(got, vec!["call-4", "call-2"]);
    let f = CdrFilter {
        number: Some("' OR 1=1 --".into()),
        ..Default::default()
    };
    assert!(cdrs.query(&f, Page::first(100)).await.unwrap().is_empty());

    let mut seen = Vec::new();
    let mut page = Page {
        limit: 3,
        offset: 0,
    };
    loop {
        let batch = cdrs.query(&CdrFilter::default(), page).await.unwrap();
        if batch.is_empty() {
            break;
        }
        seen.extend(batch.into_iter().map(|c| c.call_id));
        page.offset += 3;
    }
    let expect: Vec<_> = (0..10).rev().map(|i| format!("call-{i}")).collect();
    assert_eq!(seen, expect);

    let mut bad = cdr(99, "+1", 200, "p1");
    bad.ended_at = bad.started_at - 1;
    assert!(matches!(
        cdrs.insert(bad).await,
        Err(Error::Invalid {
            field: "ended_at",
            ..
        })
    ));
    assert!(matches!(
        cdrs.get("missing").await,
        Err(Error::NotFound { .. })
    ));
});
