//! Every resource row of ript-profile §2 except calls and byways.

use super::*;
use http::Method;
use ript_proto::model::CustomerTg;

#[tokio::test]
async fn providertgs_lists_only_the_tokens_tgs_and_tg_describes_itself() {
    let h = harness().await;
    let a = h.client();
    let list = within(a.provider_tgs(&h.root)).await.unwrap();
    assert_eq!(list.providertgs.len(), 1);
    assert_eq!(list.providertgs[0].uri, h.tg);
    let tg = within(a.tg(&h.tg)).await.unwrap();
    assert_eq!(tg.name, "main trunk");
    assert_eq!(tg.outbound.destinations.to_string(), "*,!+1900*");
    assert!(
        tg.outbound
            .origins
            .as_deref()
            .unwrap_or("")
            .contains("BEGIN CERTIFICATE")
    );
    assert_eq!(tg.timers().retry_backoff_ms, 2000);
    tg.advertisement.parse::<Advertisement>().unwrap();
    // Tenant isolation: another customer's TG is a 404, never a 403.
    let e = within(a.tg(&h.server.tg_url("other"))).await.unwrap_err();
    assert_eq!(e.status(), Some(404));
    let b = h.client_with(TOKEN_B, true);
    let list = within(b.provider_tgs(&h.root)).await.unwrap();
    assert_eq!(list.providertgs.len(), 1);
    assert_eq!(list.providertgs[0].uri, h.server.tg_url("other"));
}

#[tokio::test]
async fn missing_or_wrong_token_is_401_with_www_authenticate() {
    let h = harness().await;
    let bad = h.client_with("not-a-token", true);
    let r = within(bad.request(Method::GET, &format!("{}/providertgs", h.root), None, None))
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.problem().unwrap().status, 401);
    let empty = h.client_with("", true);
    let r = within(empty.request(Method::GET, &h.tg, None, None))
        .await
        .unwrap();
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn handlers_crud_is_scoped_to_tenant() {
    let h = harness().await;
    let a = h.client();
    let created = h.handler(&a).await;
    let uri = created.uri.clone().unwrap();
    assert!(uri.starts_with(&format!("{}/handlers/", h.tg)));
    assert_eq!(created.advertisement, "1 out: PCMU; 1 in: PCMU; opus;");
    assert_eq!(within(a.get_handler(&uri)).await.unwrap(), created);
    let mut new = created.clone();
    new.advertisement = "1 out: opus;".into();
    let put = within(a.put_handler(&uri, &new)).await.unwrap();
    assert_eq!(put.advertisement, "1 out: opus;");
    assert_eq!(
        within(a.get_handler(&uri)).await.unwrap().advertisement,
        "1 out: opus;"
    );
    // Another tenant cannot see, change or delete it.
    let b = h.client_with(TOKEN_B, true);
    assert_eq!(
        within(b.get_handler(&uri)).await.unwrap_err().status(),
        Some(404)
    );
    assert_eq!(
        within(b.delete(&uri)).await.unwrap_err().status(),
        Some(404)
    );
    within(a.delete(&uri)).await.unwrap();
    assert_eq!(
        within(a.get_handler(&uri)).await.unwrap_err().status(),
        Some(404)
    );
    // A malformed advertisement is a 400 problem.
    let bad = Handler {
        handler_id: "x".into(),
        advertisement: "1 sideways: PCMU;".into(),
        uri: None,
    };
    let e = within(a.register_handler(&h.tg, &bad)).await.unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert_eq!(e.problem_type(), Some("malformed-request"));
}

#[tokio::test]
async fn customer_tgs_crud() {
    let h = harness().await;
    let a = h.client();
    let c = CustomerTg {
        tg: "https://pbx.customer.test/.well-known/ript/v1/providertgs/in".into(),
        token: "customer-secret".into(),
        outbound: ript_proto::model::DestinationPolicy {
            destinations: "+1408555*".parse().unwrap(),
        },
        uri: None,
    };
    let created = within(a.register_customer_tg(&h.root, &c)).await.unwrap();
    let uri = created.uri.clone().unwrap();
    assert!(uri.starts_with(&format!("{}/customertgs/", h.root)));
    assert_eq!(within(a.get_customer_tg(&uri)).await.unwrap().tg, c.tg);
    let mut changed = c.clone();
    changed.outbound.destinations = "*".parse().unwrap();
    let put = within(a.put_customer_tg(&uri, &changed)).await.unwrap();
    assert_eq!(put.outbound.destinations.to_string(), "*");
    let b = h.client_with(TOKEN_B, true);
    assert_eq!(
        within(b.get_customer_tg(&uri)).await.unwrap_err().status(),
        Some(404)
    );
    within(a.delete(&uri)).await.unwrap();
    assert_eq!(
        within(a.get_customer_tg(&uri)).await.unwrap_err().status(),
        Some(404)
    );
    let mut plain = c.clone();
    plain.tg = "http://insecure.test/tg".into();
    assert_eq!(
        within(a.register_customer_tg(&h.root, &plain))
            .await
            .unwrap_err()
            .status(),
        Some(400)
    );
}

#[tokio::test]
async fn oauth_page_answers() {
    let h = harness().await;
    let a = h.client();
    let addr = h.server.local_addr().unwrap();
    let r = within(a.request(
        Method::GET,
        &format!("https://{addr}/.well-known/ript-oauth"),
        None,
        None,
    ))
    .await
    .unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn certs_enrol_fetch_without_token_and_passports_gate_calls() {
    use ript_h3::ca::make_csr;
    use ript_proto::passport::{Claims, sign};
    let mut h = harness().await;
    let a = h.client();
    let (key, csr) = make_csr(&["+14085551000"]).unwrap();
    let (x5u, pem) = within(a.enroll_cert(&h.tg, &csr)).await.unwrap();
    assert!(x5u.starts_with(&format!("{}/certs/", h.tg)), "{x5u}");
    assert!(pem.matches("BEGIN CERTIFICATE").count() >= 2, "leaf and CA");
    // Verifiers fetch the certificate without a token.
    let nobody = h.client_with("", true);
    assert_eq!(within(nobody.fetch_cert(&x5u)).await.unwrap(), pem);
    // A number this server does not vouch for: 403 number-not-allowed.
    let (_, csr_bad) = make_csr(&["+33123456789"]).unwrap();
    let e = within(a.enroll_cert(&h.tg, &csr_bad)).await.unwrap_err();
    assert_eq!(
        (e.status(), e.problem_type()),
        (Some(403), Some("number-not-allowed"))
    );
    // Garbage and oversized CSRs.
    let e = within(a.enroll_cert(&h.tg, "not a csr")).await.unwrap_err();
    assert_eq!(e.status(), Some(400));
    let e = within(a.enroll_cert(&h.tg, &"x".repeat(65 * 1024)))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(413));

    let hd = h.handler(&a).await.uri.unwrap();
    let now = ript_h3::wall_ms() / 1000;
    let create = |passport: String| ript_proto::model::CallCreate {
        handler: hd.clone(),
        destination: "+14089529999".into(),
        passport: Some(passport),
    };
    let good = sign(
        &Claims::new("+14085551000", "+14089529999", now, "o-1"),
        &x5u,
        &key,
    );
    let d = within(a.create_call(&h.tg, &create(good.clone())))
        .await
        .unwrap();
    assert_eq!(d.from, "+14085551000");
    let inc = within(h.server.next_call()).await.unwrap();
    assert_eq!(inc.passport.unwrap().orig.tn, "14085551000");
    assert_eq!(inc.passport_jws.as_deref(), Some(good.as_str()));
    // Forged: signed by a key the certificate does not hold.
    let (other_key, _) = make_csr(&["+14085551000"]).unwrap();
    let forged = sign(
        &Claims::new("+14085551000", "+14089529999", now, "o-2"),
        &x5u,
        &other_key,
    );
    let e = within(a.create_call(&h.tg, &create(forged)))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403));
    // Stale, another caller, another destination: all 403.
    for claims in [
        Claims::new("+14085551000", "+14089529999", now - 600, "o-3"),
        Claims::new("+14085551001", "+14089529999", now, "o-4"),
        Claims::new("+14085551000", "+14080000000", now, "o-5"),
    ] {
        let e = within(a.create_call(&h.tg, &create(sign(&claims, &x5u, &key))))
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(403), "{claims:?}");
    }
    let e = within(a.create_call(&h.tg, &create("a.b.c".into())))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403));
}
