//! Authentication, routing errors, health, readiness, metrics and the OpenAPI document.
use crate::both_dbs;
use crate::common::{TOKEN, auth, serve, serve_state};
use admin_api::{AdminAuth, AdminState, Metrics, ReadinessProbe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

both_dbs!(tokens_are_required_and_checked, |db| {
    let srv = serve(db.store.clone()).await;
    let wrong = format!("Bearer {TOKEN}x");
    let short = format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]);
    let basic = format!("Basic {TOKEN}");
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![("authorization", wrong.as_str())],
        vec![("authorization", short.as_str())],
        vec![("authorization", basic.as_str())],
        vec![("authorization", "Bearer")],
        vec![("authorization", "Bearer ")],
        vec![("authorization", TOKEN)],
    ];
    for path in [
        "/api/v1/sip-peers",
        "/api/v1/sip-peers/x",
        "/api/v1/openapi.json",
        "/metrics",
        "/api/v1/no-such",
    ] {
        for headers in &cases {
            let r = srv.raw("GET", path, headers, None).await;
            r.problem(401);
            let challenge = r.headers["www-authenticate"].to_str().unwrap();
            assert!(challenge.starts_with("Bearer"), "{challenge}");
        }
    }
    // The scheme is case-insensitive (RFC 6750 §2.1 via RFC 9110 §11.1).
    let lower = format!("bearer {TOKEN}");
    let r = srv
        .raw(
            "GET",
            "/api/v1/sip-peers",
            &[("authorization", lower.as_str())],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    // Health and readiness need no token.
    assert_eq!(srv.raw("GET", "/healthz", &[], None).await.status, 200);
    assert_eq!(srv.raw("GET", "/readyz", &[], None).await.status, 200);

    // A static token too short to be a secret is refused at configuration time.
    assert!(AdminAuth::none().with_static_token("short").is_err());
    // No token source at all: nothing is accepted.
    let closed = serve_state(AdminState::new(
        db.store.clone(),
        AdminAuth::none(),
        Metrics::new(),
    ))
    .await;
    closed.get("/api/v1/sip-peers").await.problem(401);
});

both_dbs!(routing_errors_are_problems, |db| {
    let srv = serve(db.store.clone()).await;
    srv.get("/").await.problem(404);
    srv.get("/nope").await.problem(404);
    srv.get("/api/v1/nope").await.problem(404);
    srv.get("/api/v1/sip-peers/a/b").await.problem(404);
    let r = srv.call("PATCH", "/api/v1/sip-peers", None).await;
    r.problem(405);
    assert!(r.headers.contains_key("allow"), "{:?}", r.headers);
    srv.call("DELETE", "/api/v1/sip-peers", None)
        .await
        .problem(405);
    srv.call("POST", "/healthz", None).await.problem(405);
});

struct Flag(AtomicBool);

impl ReadinessProbe for Flag {
    fn not_ready(&self) -> Vec<&'static str> {
        if self.0.load(Ordering::SeqCst) {
            Vec::new()
        } else {
            vec!["sip-listener"]
        }
    }
}

both_dbs!(readiness_follows_the_database_and_the_probe, |db| {
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let state =
        AdminState::new(db.store.clone(), auth(), Metrics::new()).with_readiness(flag.clone());
    let srv = serve_state(state).await;
    let r = srv.get("/readyz").await;
    r.problem(503);
    assert!(r.text.contains("sip-listener"), "{}", r.text);
    flag.0.store(true, Ordering::SeqCst);
    let r = srv.get("/readyz").await;
    assert_eq!((r.status, r.json["status"].as_str()), (200, Some("ready")));

    // Database gone: readiness and every database-backed route answer 503 without internals.
    db.store.close().await;
    let r = srv.get("/readyz").await;
    r.problem(503);
    let r = srv.get("/api/v1/sip-peers").await;
    r.problem(503);
    assert_eq!(r.json["detail"], "database unavailable");
    assert_eq!(srv.get("/healthz").await.status, 200);
});

both_dbs!(metrics_count_requests_and_database_latency, |db| {
    let srv = serve(db.store.clone()).await;
    assert_eq!(srv.get("/api/v1/sip-peers").await.status, 200);
    srv.get("/api/v1/sip-peers/nope").await.problem(404);
    srv.raw("GET", "/api/v1/sip-peers", &[], None)
        .await
        .problem(401);
    let m = srv.get("/metrics").await;
    assert_eq!(m.status, 200);
    assert!(
        m.content_type().starts_with("text/plain"),
        "{}",
        m.content_type()
    );
    let text = m.text;
    for needle in [
        "admin_http_requests_total{route=\"/api/v1/sip-peers\",method=\"GET\",status=\"200\"} 1",
        "admin_http_requests_total{route=\"/api/v1/sip-peers/{id}\",method=\"GET\",status=\"404\"} 1",
        "admin_http_requests_total{route=\"/api/v1/sip-peers\",method=\"GET\",status=\"401\"} 1",
        "db_query_duration_seconds_bucket{op=\"sip_peers.list\"",
        "db_query_duration_seconds_count{op=\"sip_peers.get\"} 1",
        "gateway_calls_started_total{direction=\"sip_to_ript\"} 0",
        "gateway_calls_active 0",
        "# HELP admin_http_requests_total",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    srv.metrics.call_started(admin_api::Direction::SipToRipt);
    let text = srv.get("/metrics").await.text;
    assert!(
        text.contains("gateway_calls_started_total{direction=\"sip_to_ript\"} 1"),
        "{text}"
    );
    assert!(text.contains("gateway_calls_active 1"), "{text}");
});

both_dbs!(openapi_document_describes_every_route, |db| {
    let srv = serve(db.store.clone()).await;
    let r = srv.get("/api/v1/openapi.json").await;
    assert_eq!(r.status, 200);
    let doc = r.json;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    for schema in [
        "SipPeer",
        "Upstream",
        "HostedTg",
        "NumberBlock",
        "Route",
        "Call",
        "Cdr",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/openapi.json",
        "/api/v1/sip-peers",
        "/api/v1/sip-peers/{id}",
        "/api/v1/upstreams",
        "/api/v1/upstreams/{id}",
        "/api/v1/hosted-tgs",
        "/api/v1/hosted-tgs/{id}",
        "/api/v1/hosted-tgs/{id}/credentials",
        "/api/v1/customer-credentials",
        "/api/v1/customer-credentials/{id}",
        "/api/v1/numbers",
        "/api/v1/numbers/{id}",
        "/api/v1/routes",
        "/api/v1/routes/{id}",
        "/api/v1/calls",
        "/api/v1/calls/{id}",
        "/api/v1/cdrs",
        "/api/v1/cdrs/{id}",
        "/api/v1/admin-tokens",
        "/api/v1/admin-tokens/{id}",
    ] {
        assert!(paths.contains_key(p), "{p} missing from {:?}", paths.keys());
    }
    // Every operation documents its problem responses; secured ones the 401.
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.contains_key("503"), "{method} {path}");
            let public = matches!(path.as_str(), "/healthz" | "/readyz");
            assert_eq!(responses.contains_key("401"), !public, "{method} {path}");
            if op.get("requestBody").is_some() {
                for code in ["413", "415", "422"] {
                    let ct = &responses[code]["content"];
                    assert!(
                        ct["application/problem+json"].is_object(),
                        "{method} {path} {code}"
                    );
                }
            }
        }
    }
    // The library function gives the same document.
    assert_eq!(
        serde_json::to_value(admin_api::openapi()).unwrap()["paths"],
        doc["paths"]
    );
});
