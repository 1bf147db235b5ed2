//! Hostile input: every answer is a 4xx problem document naming the field where there is
//! one; never a 5xx, never plain text.
use crate::both_dbs;
use crate::common::{TOKEN, serve};
use crate::peers::peer;
use serde_json::{Value, json};

fn with(mut doc: Value, path: &[&str], v: Value) -> Value {
    let mut at = &mut doc;
    for (i, k) in path.iter().enumerate() {
        if i + 1 == path.len() {
            at[*k] = v;
            break;
        }
        at = &mut at[*k];
    }
    doc
}

fn without(mut doc: Value, key: &str) -> Value {
    doc.as_object_mut().unwrap().remove(key);
    doc
}

both_dbs!(hostile_bodies_are_4xx_problems_naming_the_field, |db| {
    let srv = serve(db.store.clone()).await;
    let p = || peer("hostile");
    let cases: Vec<(Value, u16, &str)> = vec![
        (with(p(), &["name"], json!(5)), 422, "name"),
        (with(p(), &["max_cps"], json!("ten")), 422, "max_cps"),
        (with(p(), &["max_cps"], json!(-1)), 422, "max_cps"),
        (with(p(), &["max_cps"], json!(1e300)), 422, "max_cps"),
        (with(p(), &["max_cps"], json!(0)), 422, "max_cps"),
        (
            with(p(), &["transport"], json!("carrier-pigeon")),
            422,
            "transport",
        ),
        (
            with(p(), &["addresses"], json!("pbx.example")),
            422,
            "addresses",
        ),
        (
            with(p(), &["addresses"], json!(["pbx example"])),
            422,
            "addresses",
        ),
        (
            with(p(), &["addresses"], json!(["a\u{0}b"])),
            422,
            "addresses[0]",
        ),
        (
            with(p(), &["allow_list"], json!(["300.1.1.1/8"])),
            422,
            "allow_list",
        ),
        (with(p(), &["codecs"], json!([])), 422, "codecs"),
        (with(p(), &["codecs"], json!(["PC MU"])), 422, "codecs"),
        (
            with(p(), &["inbound_auth", "password"], json!(12345)),
            422,
            "inbound_auth.password",
        ),
        (
            with(p(), &["inbound_auth", "password"], json!("***")),
            422,
            "inbound_auth.password",
        ),
        (
            with(p(), &["inbound_auth", "password"], json!("")),
            422,
            "inbound_auth",
        ),
        (
            with(p(), &["number_rules", "plus"], json!("maybe")),
            422,
            "number_rules.plus",
        ),
        (
            with(p(), &["number_rules", "country_code"], json!("4a")),
            422,
            "number_rules.country_code",
        ),
        (with(p(), &["surprise"], json!(1)), 422, "surprise"),
        (with(p(), &["name"], json!("")), 422, "name"),
        (with(p(), &["name"], json!("x".repeat(5000))), 422, "name"),
        (with(p(), &["name"], json!("bell\u{7}")), 422, "name"),
        (without(p(), "codecs"), 422, "codecs"),
        (without(p(), "transport"), 422, "transport"),
        (json!([p()]), 422, "body"),
        (json!("peer"), 422, "body"),
        (json!(null), 422, "body"),
    ];
    for (body, status, field) in cases {
        for (method, path) in [("POST", "/api/v1/sip-peers".to_owned())] {
            let r = srv.call(method, &path, Some(body.clone())).await;
            assert_eq!(r.problem(status).as_deref(), Some(field), "{method} {body}");
            assert!(
                !r.text.contains("12345"),
                "the value is not echoed: {}",
                r.text
            );
        }
    }

    // The same through PUT on an existing peer.
    let id = srv.call("POST", "/api/v1/sip-peers", Some(p())).await.json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = srv
        .call(
            "PUT",
            &format!("/api/v1/sip-peers/{id}"),
            Some(with(p(), &["max_cps"], json!("x"))),
        )
        .await;
    assert_eq!(r.problem(422).as_deref(), Some("max_cps"));

    // Not JSON at all.
    let auth = format!("Bearer {TOKEN}");
    let h = [("authorization", auth.as_str())];
    for (ct, body, status) in [
        ("application/json", b"{\"name\": ".to_vec(), 400),
        ("application/json", b"{\"name\": \"a\",}".to_vec(), 400),
        ("application/json", b"".to_vec(), 400),
        ("application/json", vec![0xff, 0xfe, 0x00], 400),
        ("application/json", b"{} {}".to_vec(), 400),
        ("text/plain", p().to_string().into_bytes(), 415),
        ("application/x-www-form-urlencoded", b"name=x".to_vec(), 415),
    ] {
        let r = srv
            .raw("POST", "/api/v1/sip-peers", &h, Some((ct, body.clone())))
            .await;
        r.problem(status);
    }
    let r = srv.raw("POST", "/api/v1/sip-peers", &h, None).await;
    r.problem(415);

    // Huge bodies: just over the limit; announced far over it (answered before the body is
    // sent, as a client using `Expect: 100-continue` sees); chunked, with no length given.
    let mut doc = p();
    doc["name"] = json!("n".repeat(64 * 1024));
    srv.call("POST", "/api/v1/sip-peers", Some(doc))
        .await
        .problem(413);
    let head = format!(
        "POST /api/v1/sip-peers HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 1073741824\r\nExpect: 100-continue"
    );
    srv.raw_tcp(&head, b"").await.problem(413);
    let head = format!(
        "POST /api/v1/sip-peers HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked"
    );
    let mut chunked = Vec::new();
    for _ in 0..20 {
        chunked.extend_from_slice(format!("1000\r\n{}\r\n", " ".repeat(0x1000)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    srv.raw_tcp(&head, &chunked).await.problem(413);

    // Duplicate names.
    let r = srv.call("POST", "/api/v1/sip-peers", Some(p())).await;
    assert_eq!(r.problem(409).as_deref(), Some("name"));
    let other = srv
        .call("POST", "/api/v1/sip-peers", Some(peer("other")))
        .await;
    let other_id = other.json["id"].as_str().unwrap().to_owned();
    let r = srv
        .call("PUT", &format!("/api/v1/sip-peers/{other_id}"), Some(p()))
        .await;
    assert_eq!(r.problem(409).as_deref(), Some("name"));
});

both_dbs!(hostile_ids_names_and_queries, |db| {
    let srv = serve(db.store.clone()).await;
    // SQL metacharacters and unicode are data: stored and read back verbatim.
    for name in [
        "'; DROP TABLE sip_peers; --",
        "\" OR \"1\"=\"1",
        "Zürich 東京 📞 الرياض",
        "%_\\",
        "$1",
    ] {
        let r = srv
            .call("POST", "/api/v1/sip-peers", Some(peer(name)))
            .await;
        assert_eq!(r.status, 201, "{name}: {}", r.text);
        let id = r.json["id"].as_str().unwrap();
        assert_eq!(
            srv.get(&format!("/api/v1/sip-peers/{id}")).await.json["name"],
            name
        );
        let q = format!("/api/v1/sip-peers?name={}", urlencode(name));
        let found = srv.get(&q).await;
        assert_eq!(found.status, 200, "{}", found.text);
        assert_eq!(found.json["items"][0]["name"], name);
    }
    assert_eq!(
        srv.get("/api/v1/sip-peers").await.json["items"]
            .as_array()
            .unwrap()
            .len(),
        5
    );

    // Unknown and odd ids.
    for id in [
        "no-such-id",
        "00000000-0000-0000-0000-000000000000",
        "%27%20OR%20%271%27%3D%271",
        "%E6%9D%B1%E4%BA%AC",
        "%00",
        "%FF%FE",
        &"a".repeat(3000),
    ] {
        let path = format!("/api/v1/sip-peers/{id}");
        let r = srv.get(&path).await;
        assert!(matches!(r.status, 400 | 404), "{id}: {}", r.text);
        r.problem(r.status);
        srv.call("DELETE", &path, None).await.problem(r.status);
        let put = srv.call("PUT", &path, Some(peer("x"))).await;
        put.problem(r.status);
    }

    // Query strings.
    for (q, field) in [
        ("limit=abc", "limit"),
        ("limit=0", "limit"),
        ("limit=100000", "limit"),
        ("limit=-1", "limit"),
        ("offset=-5", "offset"),
        ("offset=99999999999999999999", "offset"),
        ("offset=18446744073709551615", "offset"),
        ("bogus=1", "bogus"),
        ("name=%00", "name"),
    ] {
        let r = srv.get(&format!("/api/v1/sip-peers?{q}")).await;
        assert_eq!(r.problem(400).as_deref(), Some(field), "{q}");
    }
});

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
