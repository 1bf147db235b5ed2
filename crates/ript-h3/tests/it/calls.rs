//! Calls, every event of ript-profile §5, both media paths, migration and the §7 timers.

use super::*;
use http::Method;
use ript_proto::call::{MediaPath, MigrateTrigger};
use ript_proto::events::{EventDecoder, EventKind};
use ript_proto::model::Reason;

fn is_state(k: EventKind) -> impl Fn(&CallEvent) -> bool {
    move |e| matches!(e, CallEvent::State(s, _) if *s == k)
}

fn is_path(p: MediaPath) -> impl Fn(&CallEvent) -> bool {
    move |e| matches!(e, CallEvent::MediaPath(x) if *x == p)
}

/// Sends `n` chunks each way and checks they arrive with extended seqs and get acked.
async fn media_both_ways(out: &mut OutboundCall, inc: &mut IncomingCall, n: u8) {
    for i in 0..n {
        out.control.send_media(pcmu(1, 1, i)).unwrap();
    }
    let mut seqs = vec![];
    while seqs.len() < usize::from(n) {
        if let CallEvent::Media(m) =
            next_matching(&mut inc.events, |e| matches!(e, CallEvent::Media(_))).await
        {
            assert_eq!(m.media.len(), 160);
            assert_eq!(m.payload_type, PayloadType::PCMU);
            seqs.push(m.seq);
        }
    }
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), usize::from(n), "every chunk once");
    for i in 0..n {
        inc.control.send_media(pcmu(1, 1, i)).unwrap();
    }
    let mut got = 0;
    while got < n {
        if let CallEvent::Media(m) =
            next_matching(&mut out.events, |e| matches!(e, CallEvent::Media(_))).await
        {
            assert_eq!(m.media.len(), 160);
            got += 1;
        }
    }
    // Acks flow both ways: poll the senders' stats until everything sent is acknowledged.
    within(async {
        loop {
            let (a, b) = (
                out.control.stats().await.unwrap(),
                inc.control.stats().await.unwrap(),
            );
            if a.acked >= a.sent && b.acked >= b.sent && a.sent > 0 && b.sent > 0 {
                return;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn call_over_datagrams_alerting_answered_media_and_client_end() {
    let mut h = harness().await;
    let c = h.client();
    let (d, mut out, mut inc) = h.call(&c).await;
    assert!(d.uri.starts_with(&format!("{}/calls/", h.tg)));
    let id = d.uri.rsplit('/').next().unwrap();
    assert!(uuid_like(id), "call URI carries a UUID: {id}");
    assert_eq!(d.client_directives, "1 to 1: PCMU;");
    // Server preference: its source lists PCMU first.
    assert_eq!(d.server_directives, "1 to 1: PCMU;");
    assert_eq!(d.state, "proceeding");
    next_matching(&mut out.events, is_state(EventKind::Proceeding)).await;
    next_matching(&mut out.events, is_path(MediaPath::Datagrams)).await;
    inc.control.state(EventKind::Alerting, None).await.unwrap();
    next_matching(&mut out.events, is_state(EventKind::Alerting)).await;
    inc.control.state(EventKind::Answered, None).await.unwrap();
    next_matching(&mut out.events, is_state(EventKind::Answered)).await;
    media_both_ways(&mut out, &mut inc, 20).await;
    assert!(
        inc.control.stats().await.unwrap().datagrams,
        "server used datagrams"
    );
    assert_eq!(c.get_call(&d.uri).await.unwrap().state, "answered");

    out.control
        .end(Some(Reason::sip(200, "caller hung up")))
        .await
        .unwrap();
    match next_matching(&mut inc.events, |e| matches!(e, CallEvent::Ended(..))).await {
        CallEvent::Ended(k, r) => {
            assert_eq!(k, EventKind::End);
            assert_eq!(r, Some(Reason::sip(200, "caller hung up")));
        }
        _ => unreachable!(),
    }
    next_matching(&mut out.events, |e| {
        matches!(e, CallEvent::Ended(EventKind::End, _))
    })
    .await;
    // ript-profile §2/§9 after the end: GET answers the final state, byways and POST 404,
    // DELETE 405 with Allow.
    let desc = within(c.get_call(&d.uri)).await.unwrap();
    assert_eq!(desc.state, "end");
    assert_eq!(desc.reason, Some(Reason::sip(200, "caller hung up")));
    let r = within(c.request(Method::GET, &format!("{}/events", d.uri), None, None))
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    let r = within(c.request(
        Method::PUT,
        &format!("{}/media", d.uri),
        None,
        Some(vec![1u8, 2].into()),
    ))
    .await
    .unwrap();
    assert_eq!(r.status, 404);
    let r = within(c.request(Method::POST, &d.uri, None, None))
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    let r = within(c.request(Method::DELETE, &d.uri, None, None))
        .await
        .unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, POST"));
}

/// With a media handler set on each side, received chunks go to the handler, on the call's
/// task, and no longer show up as `CallEvent::Media`; the call's other events still do.
#[tokio::test]
async fn media_handlers_take_the_media_in_place_of_events_both_roles() {
    let mut h = harness().await;
    let c = h.client();
    let (_d, mut out, mut inc) = h.call(&c).await;
    next_matching(&mut out.events, is_path(MediaPath::Datagrams)).await;
    inc.control.state(EventKind::Answered, None).await.unwrap();
    next_matching(&mut out.events, is_state(EventKind::Answered)).await;
    let (to_client, mut at_client) = tokio::sync::mpsc::unbounded_channel();
    let (to_server, mut at_server) = tokio::sync::mpsc::unbounded_channel();
    out.control
        .set_media_handler(Box::new(move |m| {
            let _ = to_client.send(m);
        }))
        .await
        .unwrap();
    inc.control
        .set_media_handler(Box::new(move |m| {
            let _ = to_server.send(m);
        }))
        .await
        .unwrap();
    for i in 0..5 {
        out.control.send_media(pcmu(1, 1, i)).unwrap();
        inc.control.send_media(pcmu(1, 1, 100 + i)).unwrap();
    }
    for i in 0..5 {
        let (a, b) = (
            within(at_server.recv()).await.unwrap(),
            within(at_client.recv()).await.unwrap(),
        );
        assert_eq!(a.media, pcmu(1, 1, i).media, "client → server, in order");
        assert_eq!(
            b.media,
            pcmu(1, 1, 100 + i).media,
            "server → client, in order"
        );
    }
    out.control.end(None).await.unwrap();
    for events in [&mut out.events, &mut inc.events] {
        loop {
            match within(events.recv()).await {
                Some(CallEvent::Media(m)) => panic!("media reached the events: {m:?}"),
                Some(CallEvent::Ended(..)) | None => break,
                Some(_) => {}
            }
        }
    }
}

/// Over byways each frame is a PUT: a client flooding faster than PUTs complete keeps at
/// most `CLIENT_PENDING_PUTS` in flight and drops the rest, and the call goes on.
#[tokio::test]
async fn byway_media_puts_in_flight_are_capped_and_the_excess_dropped() {
    let mut h = harness_with(|o| o.enable_datagrams = false).await;
    let c = h.client();
    let (_d, mut out, inc) = h.call(&c).await;
    next_matching(&mut out.events, is_path(MediaPath::Byways)).await;
    inc.control.state(EventKind::Answered, None).await.unwrap();
    next_matching(&mut out.events, is_state(EventKind::Answered)).await;
    let flood = 4 * ript_proto::limits::CLIENT_PENDING_PUTS;
    for i in 0..flood {
        out.control.send_media(pcmu(1, 1, (i % 200) as u8)).unwrap();
    }
    let s = within(async {
        loop {
            let s = out.control.stats().await.unwrap();
            if s.sent as usize >= flood {
                return s;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        s.puts_dropped > 0 && (s.puts_dropped as usize) < flood,
        "some of {flood} frames sent at once were dropped: {s:?}"
    );
    // Every frame that was not dropped reaches the server.
    within(async {
        loop {
            let got = inc.control.stats().await.unwrap().received;
            if got + s.puts_dropped >= flood as u64 {
                assert_eq!(got + s.puts_dropped, flood as u64);
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test]
async fn call_over_byways_with_server_end() {
    let mut h = harness().await;
    let c = h.client_with(TOKEN_A, false);
    let (d, mut out, mut inc) = h.call(&c).await;
    next_matching(&mut out.events, is_path(MediaPath::Byways)).await;
    inc.control.state(EventKind::Answered, None).await.unwrap();
    next_matching(&mut out.events, is_state(EventKind::Answered)).await;
    media_both_ways(&mut out, &mut inc, 20).await;
    assert!(!inc.control.stats().await.unwrap().datagrams);
    inc.control
        .state(EventKind::End, Some(Reason::sip(200, "callee hung up")))
        .await
        .unwrap();
    match next_matching(&mut out.events, |e| matches!(e, CallEvent::Ended(..))).await {
        CallEvent::Ended(k, r) => {
            assert_eq!(k, EventKind::End);
            assert_eq!(r, Some(Reason::sip(200, "callee hung up")));
        }
        _ => unreachable!(),
    }
    assert_eq!(within(c.get_call(&d.uri)).await.unwrap().state, "end");
}

#[tokio::test]
async fn missing_datagram_settings_send_the_client_to_byways() {
    let mut h = harness_with(|o| o.enable_datagrams = false).await;
    let c = h.client();
    let (_d, mut out, mut inc) = h.call(&c).await;
    // Datagrams never come up: the first media path announced is byways.
    let first = next_matching(&mut out.events, |e| matches!(e, CallEvent::MediaPath(_))).await;
    assert_eq!(first, CallEvent::MediaPath(MediaPath::Byways));
    inc.control.state(EventKind::Answered, None).await.unwrap();
    media_both_ways(&mut out, &mut inc, 5).await;
    assert!(!inc.control.stats().await.unwrap().datagrams);
}

#[tokio::test]
async fn final_states_declined_failed_noanswer_reach_the_client_with_reasons() {
    let mut h = harness().await;
    let c = h.client();
    for (kind, code) in [
        (EventKind::Declined, 486),
        (EventKind::Failed, 503),
        (EventKind::Noanswer, 480),
    ] {
        let (d, mut out, inc) = h.call(&c).await;
        next_matching(&mut out.events, is_state(EventKind::Proceeding)).await;
        inc.control
            .state(kind.clone(), Some(Reason::sip(code, "x")))
            .await
            .unwrap();
        match next_matching(&mut out.events, |e| matches!(e, CallEvent::Ended(..))).await {
            CallEvent::Ended(k, r) => {
                assert_eq!(k, kind);
                assert_eq!(r.unwrap().sip, Some(code));
            }
            _ => unreachable!(),
        }
        let desc = within(c.get_call(&d.uri)).await.unwrap();
        assert_eq!(desc.state, kind.name());
        // Illegal after a final state.
        assert!(inc.control.state(EventKind::Answered, None).await.is_err());
    }
}

#[tokio::test]
async fn server_requested_migration_keeps_the_call() {
    let mut h = harness().await;
    let c = h.client();
    let (_d, mut out, mut inc) = h.call(&c).await;
    next_matching(&mut out.events, is_path(MediaPath::Datagrams)).await;
    inc.control.state(EventKind::Answered, None).await.unwrap();
    next_matching(&mut out.events, is_state(EventKind::Answered)).await;
    inc.control.migrate(None).await.unwrap();
    next_matching(&mut out.events, |e| {
        matches!(e, CallEvent::Migrating(MigrateTrigger::ServerRequest))
    })
    .await;
    next_matching(&mut out.events, is_path(MediaPath::Datagrams)).await;
    media_both_ways(&mut out, &mut inc, 10).await;
    inc.control.state(EventKind::End, None).await.unwrap();
    next_matching(&mut out.events, |e| matches!(e, CallEvent::Ended(..))).await;
}

#[tokio::test]
async fn client_detects_a_lost_byway_and_migrates() {
    let mut h = harness().await;
    let c = h.client_with(TOKEN_A, false);
    let (_d, mut out, mut inc) = h.call(&c).await;
    next_matching(&mut out.events, is_path(MediaPath::Byways)).await;
    inc.control.state(EventKind::Answered, None).await.unwrap();
    next_matching(&mut out.events, is_state(EventKind::Answered)).await;
    inc.control.drop_byways().await.unwrap();
    next_matching(&mut out.events, |e| {
        matches!(e, CallEvent::Migrating(MigrateTrigger::BywayReset))
    })
    .await;
    next_matching(&mut out.events, is_path(MediaPath::Byways)).await;
    media_both_ways(&mut out, &mut inc, 10).await;
    // Signaling works on the new byways too.
    inc.control
        .state(EventKind::End, Some(Reason::sip(200, "bye")))
        .await
        .unwrap();
    next_matching(&mut out.events, |e| matches!(e, CallEvent::Ended(..))).await;
}

#[tokio::test]
async fn no_signaling_byway_ends_the_call_then_byways_404() {
    let mut h = harness_with(|o| o.no_byway_timeout = Duration::from_millis(300)).await;
    let c = h.client();
    let hd = h.handler(&c).await;
    let d = within(c.create_call(
        &h.tg,
        &CallCreate {
            handler: hd.uri.unwrap(),
            destination: "+14085550000".into(),
            passport: None,
        },
    ))
    .await
    .unwrap();
    let mut inc = within(h.server.next_call()).await.unwrap();
    // Nobody opens a signaling byway: the server ends the call.
    match next_matching(&mut inc.events, |e| matches!(e, CallEvent::Ended(..))).await {
        CallEvent::Ended(k, r) => {
            assert_eq!(k, EventKind::End);
            assert_eq!(r.unwrap().sip, Some(408));
        }
        _ => unreachable!(),
    }
    let desc = within(c.get_call(&d.uri)).await.unwrap();
    assert_eq!(desc.state, "end");
    assert!(desc.reason.is_some());
    for (m, p) in [
        (Method::GET, "events"),
        (Method::PUT, "events"),
        (Method::GET, "media"),
    ] {
        let r = within(c.request(m.clone(), &format!("{}/{p}", d.uri), None, None))
            .await
            .unwrap();
        assert_eq!(r.status, 404, "{m} {p}");
    }
}

/// Every event read from a raw reverse byway up to and including `want`.
async fn events_until(
    s: &mut ript_h3::client::RawStream,
    dec: &mut EventDecoder,
    want: EventKind,
) -> Vec<ript_proto::events::Event> {
    within(async {
        let mut seen = vec![];
        loop {
            let b = s.recv().await.unwrap().expect("reverse byway ended");
            for ev in dec.feed(&b).unwrap() {
                let done = ev.event == want;
                seen.push(ev);
                if done {
                    return seen;
                }
            }
        }
    })
    .await
}

/// Reads events from a raw reverse byway until `want` arrives.
async fn expect_event(
    s: &mut ript_h3::client::RawStream,
    dec: &mut EventDecoder,
    want: EventKind,
) -> ript_proto::events::Event {
    within(async {
        loop {
            let b = s.recv().await.unwrap().expect("reverse byway ended");
            for ev in dec.feed(&b).unwrap() {
                if ev.event == want {
                    return ev;
                }
            }
        }
    })
    .await
}

#[tokio::test]
async fn raw_byways_ping_pong_media_panic_handler_changed_and_end_echo() {
    let mut h = harness().await;
    let c = h.client();
    let hd = h.handler(&c).await;
    let d = within(c.create_call(
        &h.tg,
        &CallCreate {
            handler: hd.uri.clone().unwrap(),
            destination: "+14085550000".into(),
            passport: None,
        },
    ))
    .await
    .unwrap();
    let inc = within(h.server.next_call()).await.unwrap();
    let ev_url = format!("{}/events", d.uri);
    let mut get = c.open_raw(Method::GET, &ev_url, None).await.unwrap();
    get.finish().await.unwrap();
    assert_eq!(within(get.response()).await.unwrap(), 200);
    let mut dec = EventDecoder::new();
    // A new reverse byway first receives the current state.
    let first = expect_event(&mut get, &mut dec, EventKind::Proceeding).await;
    assert_eq!(first.call, d.uri);
    let mut put = c
        .open_raw(Method::PUT, &ev_url, Some("application/json"))
        .await
        .unwrap();
    let ping = format!(
        "[{{\"direction\":\"c2s\",\"timestamp\":\"2026-11-23T18:57:00.123Z\",\"call\":\"{}\",\"event\":\"ping\",\"nonce\":\"n-7\"}},\n",
        d.uri
    );
    // Split an object across two writes: the server's decoder is incremental.
    let (a, b) = ping.split_at(40);
    put.send(a.to_owned()).await.unwrap();
    put.send(b.to_owned()).await.unwrap();
    let pong = expect_event(&mut get, &mut dec, EventKind::Pong).await;
    assert_eq!(pong.nonce.as_deref(), Some("n-7"));
    // Media with no pending GET and no datagram session: media-panic, once per gap.
    inc.control.send_media(pcmu(1, 1, 0)).unwrap();
    inc.control.send_media(pcmu(1, 1, 1)).unwrap();
    expect_event(&mut get, &mut dec, EventKind::MediaPanic).await;
    // The buffered chunks flush into the next GET, oldest first.
    let r = within(c.request(Method::GET, &format!("{}/media", d.uri), None, None))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let seqs: Vec<u64> = ript_proto::chunk::frames(&r.body)
        .map(|f| match f.unwrap() {
            ript_proto::chunk::Chunk::Media(m) => m.seq.value,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(seqs.len(), 2);
    assert_eq!(seqs[1], seqs[0] + 1, "oldest first");
    // A second gap panics once more; the handler-changed marker then proves no third one.
    inc.control.send_media(pcmu(1, 1, 2)).unwrap();
    inc.control
        .handler_changed(hd.uri.clone().unwrap())
        .await
        .unwrap();
    let seen = events_until(&mut get, &mut dec, EventKind::HandlerChanged).await;
    let panics = seen
        .iter()
        .filter(|e| e.event == EventKind::MediaPanic)
        .count();
    assert_eq!(
        panics, 1,
        "one media-panic for the second gap, none for the first again"
    );
    assert_eq!(seen.last().unwrap().handler, hd.uri);
    inc.control.state(EventKind::Alerting, None).await.unwrap();
    expect_event(&mut get, &mut dec, EventKind::Alerting).await;
    inc.control.state(EventKind::Answered, None).await.unwrap();
    expect_event(&mut get, &mut dec, EventKind::Answered).await;
    inc.control
        .migrate(Some("https://elsewhere.test/calls/1".into()))
        .await
        .unwrap();
    let m = expect_event(&mut get, &mut dec, EventKind::Migrate).await;
    assert_eq!(m.uri.as_deref(), Some("https://elsewhere.test/calls/1"));
    // The client's end is echoed s2c with its reason, then the reverse byway closes.
    let end = format!(
        "{{\"direction\":\"c2s\",\"timestamp\":\"2026-11-23T18:57:01.000Z\",\"call\":\"{}\",\"event\":\"end\",\"reason\":{{\"sip\":487,\"text\":\"gone\"}}}}]",
        d.uri
    );
    put.send(end).await.unwrap();
    put.finish().await.unwrap();
    let echoed = expect_event(&mut get, &mut dec, EventKind::End).await;
    assert_eq!(echoed.direction, ript_proto::events::EventDirection::S2c);
    assert_eq!(echoed.reason, Some(Reason::sip(487, "gone")));
    let rest = within(get.body()).await.unwrap();
    dec.feed(&rest).unwrap();
    assert!(dec.is_closed(), "reverse byway ends with ]");
    assert_eq!(within(put.response()).await.unwrap(), 200);
}

#[tokio::test]
async fn a_31st_pending_get_pushes_out_the_oldest_with_204_and_the_rest_404_at_end() {
    let mut h = harness().await;
    let c = h.client();
    let hd = h.handler(&c).await;
    let d = within(c.create_call(
        &h.tg,
        &CallCreate {
            handler: hd.uri.unwrap(),
            destination: "+14085550000".into(),
            passport: None,
        },
    ))
    .await
    .unwrap();
    let inc = within(h.server.next_call()).await.unwrap();
    // Keep the call alive with a signaling byway.
    let mut ev = c
        .open_raw(Method::GET, &format!("{}/events", d.uri), None)
        .await
        .unwrap();
    ev.finish().await.unwrap();
    assert_eq!(within(ev.response()).await.unwrap(), 200);
    let url = format!("{}/media", d.uri);
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    for _ in 0..31 {
        let (c, url, tx) = (c.clone(), url.clone(), tx.clone());
        tokio::spawn(async move {
            let r = c
                .request(Method::GET, &url, None, None)
                .await
                .map(|r| r.status);
            let _ = tx.send(r).await;
        });
    }
    assert_eq!(within(rx.recv()).await.unwrap().unwrap(), 204);
    inc.control.state(EventKind::End, None).await.unwrap();
    for _ in 0..30 {
        assert_eq!(within(rx.recv()).await.unwrap().unwrap(), 404);
    }
}

#[tokio::test]
async fn call_update_renegotiates_changes_handler_and_refuses_unknown_ones() {
    use ript_proto::model::CallUpdate;
    let mut h = harness().await;
    let c = h.client();
    let (d, mut out, _inc) = h.call(&c).await;
    next_matching(&mut out.events, is_state(EventKind::Proceeding)).await;
    // Empty body: a new directive, the same one for the same handler.
    let r = within(c.request(Method::POST, &d.uri, None, None))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let again: ript_proto::model::CallDescription = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (again.client_directives.as_str(), again.handler.as_str()),
        (d.client_directives.as_str(), d.handler.as_str())
    );
    // Another handler of this TG: the directives follow its advertisement.
    let opus_only = Handler {
        handler_id: "opus".into(),
        advertisement: "1 out: opus; 1 in: opus;".into(),
        uri: None,
    };
    let h2 = within(c.register_handler(&h.tg, &opus_only))
        .await
        .unwrap()
        .uri
        .unwrap();
    let upd = within(c.update_call(
        &d.uri,
        &CallUpdate {
            handler: Some(h2.clone()),
        },
    ))
    .await
    .unwrap();
    assert_eq!(upd.handler, h2);
    assert_eq!(upd.client_directives, "1 to 1: opus;");
    assert_eq!(within(c.get_call(&d.uri)).await.unwrap().handler, h2);
    // Unknown or deleted handler: 500 unknown-handler (ript-profile §2).
    within(c.delete(&h2)).await.unwrap();
    let e = within(c.update_call(&d.uri, &CallUpdate { handler: Some(h2) }))
        .await
        .unwrap_err();
    assert_eq!(
        (e.status(), e.problem_type()),
        (Some(500), Some("unknown-handler"))
    );
}

#[tokio::test]
async fn all_calls_to_one_peer_share_one_connection() {
    let mut h = harness().await;
    let c = h.client();
    let (_d1, mut o1, _i1) = h.call(&c).await;
    let (_d2, mut o2, _i2) = h.call(&c).await;
    next_matching(&mut o1.events, is_path(MediaPath::Datagrams)).await;
    next_matching(&mut o2.events, is_path(MediaPath::Datagrams)).await;
    assert_eq!(h.server.connections_accepted(), 1);
}
