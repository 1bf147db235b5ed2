//! RFC 4733 sender → network → receiver in virtual time: clean round trips, and a property
//! over lossy, duplicating, reordering links.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
// Any origin works: virtual time only ever adds to it.
#![allow(clippy::disallowed_methods)]

use media_proto::dtmf::{
    DtmfEvent, DtmfPacket, DtmfReceiver, DtmfSender, EndCause, ReceiverConfig, SenderConfig,
};
use proptest::prelude::*;
use std::time::{Duration, Instant};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Everything the sender emits for `digits` queued at `t0`, as (send time, packet).
fn send_all(cfg: SenderConfig, t0: Instant, digits: &[(u8, u64)]) -> Vec<(Instant, DtmfPacket)> {
    let mut s = DtmfSender::new(cfg, t0, 0x1234_5678);
    for (event, dur) in digits {
        s.handle_digit(t0, *event, ms(*dur)).unwrap();
    }
    let mut sent = Vec::new();
    while let Some(t) = s.poll_timeout() {
        while let Some(p) = s.poll_transmit(t) {
            sent.push((t, p));
        }
        if s.is_idle() {
            break;
        }
    }
    sent
}

/// Delivers packets in arrival order, firing the receiver's timer whenever it falls due before
/// the next arrival, and once more at the end.
fn receive_all(cfg: ReceiverConfig, arrivals: &[(Instant, DtmfPacket)]) -> Vec<DtmfEvent> {
    let mut r = DtmfReceiver::new(cfg);
    let mut out = Vec::new();
    for (at, p) in arrivals {
        while let Some(d) = r.poll_timeout().filter(|d| d <= at) {
            r.handle_timeout(d);
            out.extend(std::iter::from_fn(|| r.poll_event()));
        }
        r.handle_packet(*at, p.timestamp, p.marker, &p.payload.encode())
            .unwrap();
        out.extend(std::iter::from_fn(|| r.poll_event()));
    }
    while let Some(d) = r.poll_timeout() {
        r.handle_timeout(d);
        out.extend(std::iter::from_fn(|| r.poll_event()));
    }
    out
}

#[test]
fn round_trip_keeps_digits_and_durations() {
    let digits: Vec<(u8, u64)> = vec![
        (1, 100),
        (2, 40),
        (3, 250),
        (10, 65),
        (11, 100),
        (12, 333),
        (15, 90),
        (0, 1000),
    ];
    for (rate, interval) in [(8000, 20), (8000, 50), (16000, 30), (48000, 20)] {
        let cfg = SenderConfig {
            interval: ms(interval),
            ..SenderConfig::new(rate)
        };
        let t0 = Instant::now();
        let sent = send_all(cfg, t0, &digits);
        let events = receive_all(ReceiverConfig::new(rate), &sent);
        let ended: Vec<(Option<char>, u32, EndCause)> = events
            .iter()
            .filter_map(|e| match e {
                DtmfEvent::Ended {
                    duration_ms, cause, ..
                } => Some((e.digit(), *duration_ms, *cause)),
                DtmfEvent::Began { .. } => None,
            })
            .collect();
        assert_eq!(
            events.len(),
            2 * digits.len(),
            "{rate}/{interval}: {events:?}"
        );
        for (i, ((event, dur), (digit, got, cause))) in digits.iter().zip(&ended).enumerate() {
            assert_eq!(
                *digit,
                media_proto::dtmf::char_of(*event),
                "{rate}/{interval} #{i}"
            );
            assert_eq!(*cause, EndCause::EndBit);
            assert!(
                u64::from(*got).abs_diff(*dur) <= interval,
                "{rate}/{interval} #{i}: {got} ms for {dur} ms"
            );
            // Began comes right before its Ended.
            assert!(matches!(events[2 * i], DtmfEvent::Began { .. }));
        }
    }
}

#[test]
fn round_trip_of_a_long_event_at_48khz_spans_segments() {
    let cfg = SenderConfig {
        interval: ms(20),
        ..SenderConfig::new(48000)
    };
    let t0 = Instant::now();
    let sent = send_all(cfg, t0, &[(5, 4000), (6, 100)]);
    let events = receive_all(ReceiverConfig::new(48000), &sent);
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(matches!(
        events[1],
        DtmfEvent::Ended {
            event: 5,
            timestamp: 0x1234_5678,
            duration: 192_000,
            duration_ms: 4000,
            cause: EndCause::EndBit
        }
    ));
}

/// A digit of the property: event code, length, and whether it is long enough to need
/// segments at 48 kHz.
fn digit() -> impl Strategy<Value = (u8, u64)> {
    (0u8..=16, prop_oneof![8 => 40u64..400, 1 => 1300u64..3000])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Each digit with at least one packet through is reported exactly once (one Began, one
    /// Ended, in order); digits with none are absent; an Ended from an end packet carries the
    /// exact duration, any other never more than the truth; and when an end packet got
    /// through with no silence near the timeout before it, the end packet is what ended it.
    #[test]
    fn receiver_survives_loss_duplication_and_reordering(
        digits in prop::collection::vec(digit(), 1..6),
        rate in prop_oneof![Just(8000u32), Just(48000u32)],
        interval in prop_oneof![Just(20u64), Just(50u64)],
        fate in prop::collection::vec((0u8..100, 0u8..100, 0u64..19, 0u64..19), 2000),
        loss in 0u8..50,
        dup in 0u8..30,
    ) {
        let t0 = Instant::now();
        let cfg = SenderConfig { interval: ms(interval), ..SenderConfig::new(rate) };
        let sent = send_all(cfg, t0, &digits);
        prop_assume!(sent.len() <= fate.len());

        // Which digit each packet belongs to: a marker opens the next one.
        let mut owner = Vec::with_capacity(sent.len());
        let mut idx = 0usize;
        for (i, (_, p)) in sent.iter().enumerate() {
            if p.marker && i > 0 {
                idx += 1;
            }
            owner.push(idx);
        }
        prop_assert_eq!(idx + 1, digits.len());

        // The link: loss, duplication, and jitter below one interval (< 20 ms) so that packets
        // reorder within a digit but never across digits (the sender keeps more than one
        // interval between them).
        let mut arrivals: Vec<(Instant, usize, usize)> = Vec::new(); // (arrival, packet, digit)
        for (i, ((sent_at, _), (l, d, j1, j2))) in sent.iter().zip(&fate).enumerate() {
            if *l < loss {
                continue;
            }
            arrivals.push((*sent_at + ms(*j1), i, owner[i]));
            if *d < dup {
                arrivals.push((*sent_at + ms(*j2), i, owner[i]));
            }
        }
        arrivals.sort_by_key(|(at, i, _)| (*at, *i));
        let delivered: Vec<(Instant, DtmfPacket)> =
            arrivals.iter().map(|(at, i, _)| (*at, sent[*i].1)).collect();
        let events = receive_all(ReceiverConfig::new(rate), &delivered);

        let mut ev = events.iter();
        for (k, (event, dur)) in digits.iter().enumerate() {
            let mine: Vec<&(Instant, usize, usize)> =
                arrivals.iter().filter(|(_, _, o)| *o == k).collect();
            let Some(first) = mine.first() else { continue };
            let first_ts = sent[first.1].1.timestamp;
            let began = ev.next();
            prop_assert_eq!(began, Some(&DtmfEvent::Began { event: *event, timestamp: first_ts }));
            let Some(DtmfEvent::Ended { event: e, timestamp, duration, cause, .. }) = ev.next()
            else {
                return Err(TestCaseError::fail(format!("digit {k} not ended: {events:?}")));
            };
            prop_assert_eq!(*e, *event);
            prop_assert_eq!(*timestamp, first_ts);
            let total = u32::try_from(u64::from(rate) * (*dur).max(40) / 1000).unwrap();
            // The digit's first packet carries timestamp ts0; later segments ts0 + k·0xFFFF.
            let ts0 = sent.iter().zip(&owner).find(|(_, o)| **o == k).map(|((_, p), _)| p.timestamp).unwrap();
            let skipped = first_ts.wrapping_sub(ts0);
            match cause {
                EndCause::EndBit => prop_assert_eq!(*duration, total - skipped),
                _ => prop_assert!(*duration <= total, "{} > {}", duration, total),
            }
            // Send-time gaps of the survivors up to the first end packet that got through.
            let mut by_send: Vec<usize> = mine.iter().map(|(_, i, _)| *i).collect();
            by_send.sort_unstable();
            by_send.dedup();
            if let Some(end_pos) = by_send.iter().position(|i| sent[*i].1.payload.end) {
                let quiet = by_send[..=end_pos]
                    .windows(2)
                    .map(|w| sent[w[1]].0 - sent[w[0]].0)
                    .max()
                    .unwrap_or_default();
                if quiet <= ms(120) {
                    prop_assert_eq!(*cause, EndCause::EndBit, "quiet {:?}: {:?}", quiet, events);
                }
            }
        }
        prop_assert_eq!(ev.next(), None, "extra events: {:?}", events);
    }

    /// Whatever four bytes arrive with whatever timestamps, the receiver never panics and never
    /// reports more ends than begins.
    #[test]
    fn receiver_never_panics(
        packets in prop::collection::vec((any::<u32>(), any::<bool>(), any::<[u8; 4]>(), 0u64..300), 0..200),
    ) {
        let t0 = Instant::now();
        let mut r = DtmfReceiver::new(ReceiverConfig::default());
        let mut t = t0;
        let (mut began, mut ended) = (0usize, 0usize);
        for (ts, marker, payload, dt) in packets {
            t += ms(dt);
            r.handle_packet(t, ts, marker, &payload).unwrap();
            r.handle_timeout(t);
            while let Some(e) = r.poll_event() {
                match e {
                    DtmfEvent::Began { .. } => began += 1,
                    DtmfEvent::Ended { .. } => ended += 1,
                }
                prop_assert!(ended <= began);
            }
        }
        prop_assert!(began - ended <= 1);
    }
}
