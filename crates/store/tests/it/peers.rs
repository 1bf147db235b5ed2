use crate::both_dbs;
use sqlx::Row as _;
use store::peer::*;
use store::{Error, Page, Scope, Secret, SecretKey, Store};

pub fn sample(name: &str) -> SipPeer {
    SipPeer {
        id: String::new(),
        name: name.to_owned(),
        enabled: true,
        transport: SipTransport::Tls,
        addresses: vec!["pbx.example:5061".into(), "[2001:db8::1]:5061".into()],
        allow_list: vec!["192.0.2.0/24".into()],
        inbound_auth: Some(DigestCredentials {
            username: "pbx".into(),
            password: Secret::new("in-secret-ü"),
        }),
        outbound_auth: Some(DigestCredentials {
            username: "gw".into(),
            password: Secret::new("out-secret"),
        }),
        registration: RegistrationMode::Outbound,
        dtmf: DtmfMode::Rfc4733,
        codecs: vec!["opus".into(), "PCMU".into()],
        srtp: SrtpMode::Optional,
        number_rules: NumberRules {
            country_code: Some("44".into()),
            national_prefix: Some("0".into()),
            plus: PlusHandling::Strip,
            tech_prefix: Some("9#".into()),
        },
        max_cps: Some(10),
        max_concurrent: Some(100),
        options_interval_s: Some(30),
        created_at: 0,
        updated_at: 0,
    }
}

both_dbs!(peer_crud_round_trip, |db| {
    let repo = db.store.sip_peers();
    let created = repo.create(&Scope::Admin, sample("pbx-a")).await.unwrap();
    assert_eq!(created.id.len(), 36);
    assert!(created.created_at > 0);
    let got = repo.get(&Scope::Admin, &created.id).await.unwrap();
    assert_eq!(got, created);

    let mut changed = got.clone();
    changed.codecs = vec!["PCMA".into()];
    changed.inbound_auth = None;
    changed.registration = RegistrationMode::None;
    changed.outbound_auth = None;
    let updated = repo
        .update(&Scope::Admin, &created.id, changed.clone())
        .await
        .unwrap();
    assert_eq!(updated.created_at, created.created_at);
    let got = repo.get(&Scope::Admin, &created.id).await.unwrap();
    assert_eq!(got.codecs, vec!["PCMA".to_owned()]);
    assert_eq!(got.inbound_auth, None);
    assert_eq!(got, updated);

    let by_name = repo.find_by_name("pbx-a").await.unwrap().unwrap();
    assert_eq!(by_name.id, created.id);

    repo.delete(&Scope::Admin, &created.id).await.unwrap();
    assert!(matches!(
        repo.get(&Scope::Admin, &created.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        repo.delete(&Scope::Admin, &created.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        repo.update(&Scope::Admin, "no-such-id", sample("x")).await,
        Err(Error::NotFound { .. })
    ));
});

both_dbs!(peer_conflict_validation_and_paging, |db| {
    let repo = db.store.sip_peers();
    repo.create(&Scope::Admin, sample("dup")).await.unwrap();
    let e = repo.create(&Scope::Admin, sample("dup")).await.unwrap_err();
    assert!(matches!(e, Error::Conflict { field: "name" }), "{e:?}");
    let other = repo.create(&Scope::Admin, sample("other")).await.unwrap();
    let e = repo
        .update(&Scope::Admin, &other.id, sample("dup"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Conflict { field: "name" }), "{e:?}");

    let mut bad = sample("bad");
    bad.allow_list = vec!["300.1.1.1".into()];
    assert!(matches!(
        repo.create(&Scope::Admin, bad).await,
        Err(Error::Invalid {
            field: "allow_list",
            ..
        })
    ));
    let mut bad = sample("bad");
    bad.codecs.clear();
    assert!(matches!(
        repo.create(&Scope::Admin, bad).await,
        Err(Error::Invalid {
            field: "codecs",
            ..
        })
    ));

    for i in 0..5 {
        repo.create(&Scope::Admin, sample(&format!("p{i}")))
            .await
            .unwrap();
    }
    let all = repo.list(&Scope::Admin, Page::first(100)).await.unwrap();
    assert_eq!(all.len(), 7);
    let p1 = repo
        .list(
            &Scope::Admin,
            Page {
                limit: 3,
                offset: 0,
            },
        )
        .await
        .unwrap();
    let p2 = repo
        .list(
            &Scope::Admin,
            Page {
                limit: 3,
                offset: 3,
            },
        )
        .await
        .unwrap();
    let p3 = repo
        .list(
            &Scope::Admin,
            Page {
                limit: 3,
                offset: 6,
            },
        )
        .await
        .unwrap();
    assert_eq!((p1.len(), p2.len(), p3.len()), (3, 3, 1));
    let mut ids: Vec<_> = p1
        .iter()
        .chain(&p2)
        .chain(&p3)
        .map(|p| p.id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 7);
});

both_dbs!(peers_are_invisible_to_tenants, |db| {
    let repo = db.store.sip_peers();
    let p = repo.create(&Scope::Admin, sample("global")).await.unwrap();
    let t = Scope::Tenant("acme".into());
    assert!(matches!(
        repo.get(&t, &p.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(repo.list(&t, Page::default()).await.unwrap().is_empty());
    assert!(matches!(
        repo.delete(&t, &p.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        repo.create(&t, sample("x")).await,
        Err(Error::NotFound { .. })
    ));
});

both_dbs!(peer_secrets_encrypted_at_rest, |db| {
    let repo = db.store.sip_peers();
    let p = repo.create(&Scope::Admin, sample("sec")).await.unwrap();
    let row =
        sqlx::query("SELECT inbound_password, outbound_password FROM sip_peers WHERE id = $1")
            .bind(p.id.clone())
            .fetch_one(db.store.pool())
            .await
            .unwrap();
    for col in ["inbound_password", "outbound_password"] {
        let raw: Vec<u8> = row.try_get(col).unwrap();
        let needle = if col == "inbound_password" {
            "in-secret".as_bytes()
        } else {
            b"out-secret"
        };
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle),
            "{col} stored in clear"
        );
        assert!(raw.len() > needle.len() + 12, "nonce and tag present");
    }
    // Round trip with the right key.
    let got = repo.get(&Scope::Admin, &p.id).await.unwrap();
    assert_eq!(
        got.inbound_auth.as_ref().unwrap().password.expose(),
        "in-secret-ü"
    );
    // A second instance with another key fails cleanly, naming the column.
    let wrong = Store::connect(&db.url, SecretKey::generate().unwrap())
        .await
        .unwrap();
    let e = wrong
        .sip_peers()
        .get(&Scope::Admin, &p.id)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Decrypt {
                column: "inbound_password"
            }
        ),
        "{e:?}"
    );
    wrong.close().await;
    // Neither Debug nor the API serialization shows passwords.
    let shown = format!("{got:?}") + &serde_json::to_string(&p).unwrap();
    assert!(!shown.contains("secret"), "{shown}");
});

both_dbs!(config_version_bumps_and_is_shared, |db| {
    let other = Store::connect(&db.url, db.key.clone()).await.unwrap();
    let v0 = db.store.config_version().await.unwrap();
    let repo = db.store.sip_peers();
    let p = repo.create(&Scope::Admin, sample("v")).await.unwrap();
    let v1 = other.config_version().await.unwrap();
    assert_eq!(v1, v0 + 1);
    repo.update(&Scope::Admin, &p.id, sample("v2"))
        .await
        .unwrap();
    assert_eq!(other.config_version().await.unwrap(), v0 + 2);
    // A failed write does not bump.
    let _ = repo.create(&Scope::Admin, sample("v2")).await.unwrap_err();
    assert_eq!(other.config_version().await.unwrap(), v0 + 2);
    repo.delete(&Scope::Admin, &p.id).await.unwrap();
    assert_eq!(other.config_version().await.unwrap(), v0 + 3);
    // The other instance sees the change itself, not only the counter.
    assert!(other.sip_peers().get(&Scope::Admin, &p.id).await.is_err());
    other.close().await;
});

both_dbs!(metacharacters_and_unicode_round_trip, |db| {
    let repo = db.store.sip_peers();
    let names = [
        "Robert'); DROP TABLE sip_peers;--",
        "100% _under_ \\back\\ \"quoted\"",
        "Zürich 東京 🚀 ﷽",
        "$1 $2 ? :name",
    ];
    for n in names {
        let p = repo.create(&Scope::Admin, sample(n)).await.unwrap();
        assert_eq!(repo.get(&Scope::Admin, &p.id).await.unwrap().name, n);
        assert_eq!(repo.find_by_name(n).await.unwrap().unwrap().id, p.id);
    }
    assert!(repo.find_by_name("100%").await.unwrap().is_none());
    assert_eq!(
        repo.list(&Scope::Admin, Page::default())
            .await
            .unwrap()
            .len(),
        names.len()
    );
});
