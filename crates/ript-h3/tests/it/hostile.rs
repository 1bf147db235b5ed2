//! Bad input on every endpoint gets the profile's status and a problem+json body, and the
//! server keeps serving other calls.

use super::*;
use http::Method;
use ript_proto::events::EventKind;

async fn problem(c: &Client, m: Method, url: &str, body: Option<Vec<u8>>) -> (u16, String) {
    let r = within(c.request(m, url, Some("application/json"), body.map(Into::into)))
        .await
        .unwrap();
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "status {}",
        r.status
    );
    let p = r.problem().expect("problem+json body");
    assert_eq!(p.status, r.status);
    (r.status, p.short_type().to_owned())
}

#[tokio::test]
async fn call_creation_errors_follow_the_profile() {
    let mut h = harness().await;
    let c = h.client();
    let hd = h.handler(&c).await.uri.unwrap();
    let calls = format!("{}/calls", h.tg);
    let body = |handler: &str, dest: &str| {
        Some(
            serde_json::to_vec(&serde_json::json!({"handler": handler, "destination": dest}))
                .unwrap(),
        )
    };
    assert_eq!(
        problem(&c, Method::POST, &calls, Some(b"{not json".to_vec())).await,
        (400, "malformed-request".into())
    );
    assert_eq!(
        problem(&c, Method::POST, &calls, Some(br#"{"handler":7}"#.to_vec()))
            .await
            .0,
        400
    );
    assert_eq!(
        problem(&c, Method::POST, &calls, body(&hd, "not-a-number"))
            .await
            .0,
        400
    );
    assert_eq!(
        problem(&c, Method::POST, &calls, body(&hd, "+19005551000")).await,
        (403, "forbidden".into())
    );
    assert_eq!(
        problem(&c, Method::POST, &calls, body(&hd, "+19995551000")).await,
        (404, "unreachable".into())
    );
    let unknown = format!("{}/handlers/00000000-0000-0000-0000-000000000000", h.tg);
    assert_eq!(
        problem(&c, Method::POST, &calls, body(&unknown, "+14085551000")).await,
        (500, "unknown-handler".into())
    );
    // A handler is scoped to its TG: the same URI on another TG is unknown.
    let b = h.client_with(TOKEN_B, true);
    let other_calls = format!("{}/calls", h.server.tg_url("other"));
    assert_eq!(
        problem(&b, Method::POST, &other_calls, body(&hd, "+14085551000"))
            .await
            .0,
        500
    );
    // Oversized JSON: 413.
    let huge = vec![b' '; 70 * 1024];
    assert_eq!(
        problem(&c, Method::POST, &calls, Some(huge)).await,
        (413, "too-large".into())
    );
    // Garbage after all of that: a normal call still works.
    let (_d, mut out, _inc) = h.call(&c).await;
    next_matching(&mut out.events, |e| {
        matches!(e, CallEvent::State(EventKind::Proceeding, _))
    })
    .await;
}

#[tokio::test]
async fn another_tenants_call_is_404_everywhere() {
    let mut h = harness().await;
    let a = h.client();
    let (d, _out, _inc) = h.call(&a).await;
    let b = h.client_with(TOKEN_B, true);
    for (m, suffix) in [
        (Method::GET, ""),
        (Method::POST, ""),
        (Method::GET, "/events"),
        (Method::PUT, "/events"),
        (Method::PUT, "/media"),
        (Method::GET, "/media"),
    ] {
        let (status, _) =
            problem(&b, m.clone(), &format!("{}{suffix}", d.uri), Some(vec![1])).await;
        assert_eq!(status, 404, "{m} {suffix}");
    }
}

#[tokio::test]
async fn garbage_media_is_400_invalid_chunk_and_the_call_goes_on() {
    let mut h = harness().await;
    let c = h.client_with(TOKEN_A, false);
    let (d, mut out, mut inc) = h.call(&c).await;
    let media = format!("{}/media", d.uri);
    let put = |b: Vec<u8>| {
        c.request(
            Method::PUT,
            &media,
            Some("application/octet-stream"),
            Some(b.into()),
        )
    };
    let r = within(put(vec![0x05, 0x3f, 0x00, 0x01, 0x01, 0x00]))
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    let p = r.problem().unwrap();
    assert_eq!(p.short_type(), "invalid-chunk");
    assert!(
        p.detail.contains("unknown tag 63"),
        "the detail names the reason: {}",
        p.detail
    );
    let r = within(put(vec![])).await.unwrap();
    assert_eq!(r.status, 400);
    let r = within(put(vec![0xff; 17 * 1024])).await.unwrap();
    assert_eq!(r.status, 413);
    // One valid and one invalid chunk: 400, but the valid one is used.
    let mut body = vec![];
    ript_proto::chunk::MediaChunk::new(
        1,
        ript_h3::wall_ms(),
        PayloadType::PCMU,
        9,
        9,
        vec![7; 160],
    )
    .encode_frame(&mut body, None);
    body.extend([0x03, 0x3f, 0x00, 0x00]);
    let r = within(put(body)).await.unwrap();
    assert_eq!(r.status, 400);
    match next_matching(&mut inc.events, |e| matches!(e, CallEvent::Media(_))).await {
        CallEvent::Media(m) => assert_eq!((m.source, m.media[0]), (9, 7)),
        _ => unreachable!(),
    }
    // Its ack rides on the next answer, with the next chunk's.
    let mut next = vec![];
    ript_proto::chunk::MediaChunk::new(
        2,
        ript_h3::wall_ms(),
        PayloadType::PCMU,
        9,
        9,
        vec![7; 160],
    )
    .encode_frame(&mut next, None);
    let r = within(put(next)).await.unwrap();
    assert_eq!(r.status, 200);
    let mut acked: Vec<u64> = ript_proto::chunk::frames(&r.body)
        .filter_map(|f| match f {
            Ok(ript_proto::chunk::Chunk::Ack(a)) if a.source == 9 => Some(a.seq),
            _ => None,
        })
        .collect();
    acked.sort_unstable();
    assert_eq!(acked, vec![1, 2]);
    inc.control.state(EventKind::Answered, None).await.unwrap();
    next_matching(&mut out.events, |e| {
        matches!(e, CallEvent::State(EventKind::Answered, _))
    })
    .await;
}

#[tokio::test]
async fn malformed_event_stream_resets_that_byway_only() {
    let mut h = harness().await;
    let c = h.client();
    let (d, mut out, inc) = h.call(&c).await;
    next_matching(&mut out.events, |e| {
        matches!(e, CallEvent::State(EventKind::Proceeding, _))
    })
    .await;
    let mut put = c
        .open_raw(
            Method::PUT,
            &format!("{}/events", d.uri),
            Some("application/json"),
        )
        .await
        .unwrap();
    assert_eq!(within(put.response()).await.unwrap(), 200);
    put.send(b"[{\"direction\":\"c2s\"}, garbage".to_vec())
        .await
        .unwrap();
    // The server resets the byway (H3_REQUEST_CANCELLED), it does not just end it.
    assert!(
        within(put.body()).await.is_err(),
        "a malformed byway is reset"
    );
    // A truncated stream (ends inside an object) is survived too.
    let mut put2 = c
        .open_raw(
            Method::PUT,
            &format!("{}/events", d.uri),
            Some("application/json"),
        )
        .await
        .unwrap();
    put2.send(b"[{\"direction\":\"c2".to_vec()).await.unwrap();
    put2.finish().await.unwrap();
    assert_eq!(within(put2.response()).await.unwrap(), 200);
    // The call itself is unaffected.
    inc.control.state(EventKind::Answered, None).await.unwrap();
    next_matching(&mut out.events, |e| {
        matches!(e, CallEvent::State(EventKind::Answered, _))
    })
    .await;
    assert_eq!(within(c.get_call(&d.uri)).await.unwrap().state, "answered");
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let h = harness().await;
    let c = h.client();
    assert_eq!(
        problem(&c, Method::GET, &format!("{}/nothing", h.root), None)
            .await
            .0,
        404
    );
    assert_eq!(problem(&c, Method::DELETE, &h.tg, None).await.0, 405);
    let addr = h.server.local_addr().unwrap();
    assert_eq!(
        problem(&c, Method::GET, &format!("https://{addr}/elsewhere"), None)
            .await
            .0,
        404
    );
}
