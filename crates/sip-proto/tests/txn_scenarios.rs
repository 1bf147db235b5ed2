//! RFC 3261 §17 transaction scenarios in virtual time: every timer and retransmission rule,
//! lost ACK, lost final response, CANCEL racing a 2xx. No sleeps: time jumps to deadlines.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
#![allow(clippy::disallowed_methods)]

use sip_proto::txn::*;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Msg {
    Invite,
    Bye,
    Resp(u16),
    Ack,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Drives one machine, recording what it transmits and delivers, and when.
trait Machine {
    fn poll_output(&mut self) -> Option<Output<Msg>>;
    fn poll_timeout(&self) -> Option<(Instant, Timer)>;
    fn handle_timeout(&mut self, now: Instant);
}

macro_rules! machine {
    ($t:ty) => {
        impl Machine for $t {
            fn poll_output(&mut self) -> Option<Output<Msg>> {
                <$t>::poll_output(self)
            }
            fn poll_timeout(&self) -> Option<(Instant, Timer)> {
                <$t>::poll_timeout(self)
            }
            fn handle_timeout(&mut self, now: Instant) {
                <$t>::handle_timeout(self, now)
            }
        }
    };
}
machine!(ClientInvite<Msg>);
machine!(ClientNonInvite<Msg>);
machine!(ServerInvite<Msg>);
machine!(ServerNonInvite<Msg>);

#[derive(Debug, Default)]
struct Log {
    sent: Vec<(Duration, Msg)>,
    delivered: Vec<(Duration, Msg)>,
    timeouts: Vec<(Duration, Timer)>,
    terminated: Option<Duration>,
}

fn drain(m: &mut dyn Machine, t0: Instant, now: Instant, log: &mut Log) {
    while let Some(o) = m.poll_output() {
        let at = now - t0;
        match o {
            Output::Transmit(x) => log.sent.push((at, x)),
            Output::Deliver(x) => log.delivered.push((at, x)),
            Output::Timeout(t) => log.timeouts.push((at, t)),
            Output::Terminated => log.terminated = Some(at),
        }
    }
}

/// Runs one machine alone until it has no deadline left or `limit` passed.
fn run_alone(m: &mut dyn Machine, t0: Instant, limit: Duration) -> Log {
    let mut log = Log::default();
    drain(m, t0, t0, &mut log);
    while let Some((at, _)) = m.poll_timeout() {
        if at - t0 > limit {
            break;
        }
        m.handle_timeout(at);
        drain(m, t0, at, &mut log);
    }
    log
}

fn times(v: &[(Duration, Msg)], want: &Msg) -> Vec<u64> {
    v.iter()
        .filter(|(_, m)| m == want)
        .map(|(t, _)| t.as_millis() as u64)
        .collect()
}

const UDP: Reliability = Reliability::Unreliable;
const TCP: Reliability = Reliability::Reliable;

fn cfg() -> TimerConfig {
    TimerConfig::default()
}

#[test]
fn rfc3261_17_1_1_2_timer_a_doubles_and_timer_b_fires_after_64_t1() {
    let t0 = Instant::now();
    let mut ict = ClientInvite::new(t0, Msg::Invite, UDP, cfg());
    let log = run_alone(&mut ict, t0, Duration::from_secs(60));
    assert_eq!(
        times(&log.sent, &Msg::Invite),
        vec![0, 500, 1500, 3500, 7500, 15500, 31500]
    );
    assert_eq!(log.timeouts, vec![(Duration::from_secs(32), Timer::B)]);
    assert_eq!(log.terminated, Some(Duration::from_secs(32)));
    assert_eq!(ict.state(), IctState::Terminated);
}

#[test]
fn rfc3261_17_1_1_2_reliable_transport_skips_timer_a() {
    let t0 = Instant::now();
    let mut ict = ClientInvite::new(t0, Msg::Invite, TCP, cfg());
    let log = run_alone(&mut ict, t0, Duration::from_secs(60));
    assert_eq!(times(&log.sent, &Msg::Invite), vec![0]);
    assert_eq!(log.timeouts, vec![(Duration::from_secs(32), Timer::B)]);
}

#[test]
fn rfc3261_17_1_1_provisional_stops_retransmits_and_timer_b() {
    let t0 = Instant::now();
    let mut ict = ClientInvite::new(t0, Msg::Invite, UDP, cfg());
    let mut log = Log::default();
    drain(&mut ict, t0, t0, &mut log);
    ict.handle_response(t0 + ms(100), 180, Msg::Resp(180), |_, _| Some(Msg::Ack));
    let rest = run_alone(&mut ict, t0, Duration::from_secs(60));
    assert_eq!(rest.delivered, vec![(ms(0), Msg::Resp(180))]);
    assert!(
        times(&rest.sent, &Msg::Invite).is_empty(),
        "no retransmission in Proceeding"
    );
    // Figure 5: Timer B belongs to Calling; a ringing call ends by CANCEL (the TU's
    // no-answer timer), not by the transaction.
    assert!(rest.timeouts.is_empty(), "{:?}", rest.timeouts);
    assert_eq!(ict.state(), IctState::Proceeding);
}

#[test]
fn rfc3261_17_1_1_3_non_2xx_is_acked_by_the_transaction_and_timer_d_waits_32s() {
    for (rel, d) in [(UDP, 32_000u64), (TCP, 0)] {
        let t0 = Instant::now();
        let mut ict = ClientInvite::new(t0, Msg::Invite, rel, cfg());
        let _ = run_alone(&mut ict, t0, ms(0));
        ict.handle_response(t0 + ms(200), 486, Msg::Resp(486), |req, resp| {
            assert_eq!((req, resp), (&Msg::Invite, &Msg::Resp(486)));
            Some(Msg::Ack)
        });
        let mut log = Log::default();
        drain(&mut ict, t0, t0 + ms(200), &mut log);
        assert_eq!(log.sent, vec![(ms(200), Msg::Ack)]);
        assert_eq!(log.delivered, vec![(ms(200), Msg::Resp(486))]);
        if rel == UDP {
            assert_eq!(ict.state(), IctState::Completed);
            // A retransmitted 486 (our ACK was lost) is ACKed again and not passed up.
            ict.handle_response(t0 + ms(700), 486, Msg::Resp(486), |_, _| {
                panic!("ACK is built once")
            });
            let mut again = Log::default();
            drain(&mut ict, t0, t0 + ms(700), &mut again);
            assert_eq!(again.sent, vec![(ms(700), Msg::Ack)]);
            assert!(again.delivered.is_empty());
            let rest = run_alone(&mut ict, t0, Duration::from_secs(60));
            assert_eq!(rest.terminated, Some(ms(200 + d)));
        } else {
            assert_eq!(
                log.terminated,
                Some(ms(200)),
                "Timer D is zero on reliable transports"
            );
        }
    }
}

#[test]
fn rfc6026_2xx_retransmissions_reach_the_tu_until_timer_m() {
    let t0 = Instant::now();
    let mut ict = ClientInvite::new(t0, Msg::Invite, UDP, cfg());
    let _ = run_alone(&mut ict, t0, ms(0));
    ict.handle_response(t0 + ms(50), 200, Msg::Resp(200), |_, _| {
        panic!("the TU ACKs a 2xx")
    });
    ict.handle_response(t0 + ms(600), 200, Msg::Resp(200), |_, _| panic!());
    let mut log = Log::default();
    drain(&mut ict, t0, t0 + ms(600), &mut log);
    assert_eq!(
        log.delivered.len(),
        2,
        "a lost ACK makes the UAS resend its 200: the TU sees it"
    );
    assert!(log.sent.is_empty());
    assert_eq!(ict.state(), IctState::Accepted);
    let rest = run_alone(&mut ict, t0, Duration::from_secs(60));
    assert_eq!(rest.terminated, Some(ms(50 + 32_000)));
}

#[test]
fn rfc3261_17_1_2_2_timer_e_caps_at_t2_and_timer_f_fires() {
    let t0 = Instant::now();
    let mut nict = ClientNonInvite::new(t0, Msg::Bye, UDP, cfg());
    let log = run_alone(&mut nict, t0, Duration::from_secs(60));
    assert_eq!(
        times(&log.sent, &Msg::Bye),
        vec![
            0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    assert_eq!(log.timeouts, vec![(Duration::from_secs(32), Timer::F)]);
}

#[test]
fn rfc3261_17_1_2_2_proceeding_retransmits_every_t2_and_timer_k_is_t4() {
    let t0 = Instant::now();
    let mut nict = ClientNonInvite::new(t0, Msg::Bye, UDP, cfg());
    let _ = run_alone(&mut nict, t0, ms(600)); // sent at 0 and 500
    nict.handle_response(t0 + ms(600), 100, Msg::Resp(100));
    let mut log = Log::default();
    drain(&mut nict, t0, t0 + ms(600), &mut log);
    assert_eq!(nict.state(), NictState::Proceeding);
    // Timer E was armed for 1500 ms in Trying; from Proceeding it re-arms at T2.
    let mut rest = Log::default();
    let mut now = t0 + ms(600);
    while let Some((at, _)) = nict.poll_timeout() {
        if at - t0 > ms(10_000) {
            break;
        }
        now = at;
        nict.handle_timeout(at);
        drain(&mut nict, t0, at, &mut rest);
    }
    assert_eq!(times(&rest.sent, &Msg::Bye), vec![1500, 5500, 9500]);
    nict.handle_response(now, 200, Msg::Resp(200));
    let mut at_final = Log::default();
    drain(&mut nict, t0, now, &mut at_final);
    assert_eq!(at_final.delivered, vec![(now - t0, Msg::Resp(200))]);
    let done = run_alone(&mut nict, t0, Duration::from_secs(60));
    assert_eq!(done.terminated, Some(now - t0 + Duration::from_secs(5)));
}

#[test]
fn rfc3261_17_2_1_timer_g_retransmits_final_until_timer_h() {
    let t0 = Instant::now();
    let mut ist = ServerInvite::new(t0, Msg::Invite, Some(Msg::Resp(100)), UDP, cfg());
    let mut log = Log::default();
    drain(&mut ist, t0, t0, &mut log);
    assert_eq!(log.delivered, vec![(ms(0), Msg::Invite)]);
    assert_eq!(log.sent, vec![(ms(0), Msg::Resp(100))]);
    ist.send_response(t0, 486, Msg::Resp(486)).unwrap();
    let log = run_alone(&mut ist, t0, Duration::from_secs(60));
    // Doubling from T1, capped at T2 = 4 s, until Timer H at 64·T1.
    assert_eq!(
        times(&log.sent, &Msg::Resp(486)),
        vec![
            0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    assert_eq!(log.timeouts, vec![(Duration::from_secs(32), Timer::H)]);
}

#[test]
fn rfc3261_17_2_1_ack_confirms_then_timer_i_absorbs_retransmitted_acks() {
    for (rel, i) in [(UDP, 5_000u64), (TCP, 0)] {
        let t0 = Instant::now();
        let mut ist = ServerInvite::new(t0, Msg::Invite, None, rel, cfg());
        let _ = run_alone(&mut ist, t0, ms(0));
        ist.send_response(t0, 603, Msg::Resp(603)).unwrap();
        ist.handle_ack(t0 + ms(100), Msg::Ack);
        let mut log = Log::default();
        drain(&mut ist, t0, t0 + ms(100), &mut log);
        assert!(
            log.delivered.is_empty(),
            "the ACK of a non-2xx stays in the transaction"
        );
        if rel == UDP {
            assert_eq!(ist.state(), IstState::Confirmed);
            ist.handle_ack(t0 + ms(200), Msg::Ack);
            let rest = run_alone(&mut ist, t0, Duration::from_secs(60));
            assert!(
                times(&rest.sent, &Msg::Resp(603)).is_empty(),
                "no G after the ACK"
            );
            assert_eq!(rest.terminated, Some(ms(100 + i)));
        } else {
            assert_eq!(log.terminated, Some(ms(100)));
        }
    }
}

#[test]
fn rfc3261_17_2_1_retransmitted_invite_gets_the_last_provisional_again() {
    let t0 = Instant::now();
    let mut ist = ServerInvite::new(t0, Msg::Invite, Some(Msg::Resp(100)), UDP, cfg());
    let _ = run_alone(&mut ist, t0, ms(0));
    ist.send_response(t0 + ms(10), 180, Msg::Resp(180)).unwrap();
    ist.handle_retransmission(t0 + ms(500));
    let mut log = Log::default();
    drain(&mut ist, t0, t0 + ms(500), &mut log);
    assert_eq!(
        log.sent,
        vec![(ms(500), Msg::Resp(180)), (ms(500), Msg::Resp(180))]
    );
}

#[test]
fn rfc6026_lost_200_is_the_tus_and_acks_go_up_in_accepted() {
    let t0 = Instant::now();
    let mut ist = ServerInvite::new(t0, Msg::Invite, None, UDP, cfg());
    let _ = run_alone(&mut ist, t0, ms(0));
    ist.send_response(t0, 200, Msg::Resp(200)).unwrap();
    // The client never saw the 200 and retransmits the INVITE: absorbed, no resend by us.
    ist.handle_retransmission(t0 + ms(500));
    // The TU's own 2xx retransmission (RFC 3261 §13.3.1.4) passes through.
    ist.send_response(t0 + ms(500), 200, Msg::Resp(200))
        .unwrap();
    ist.handle_ack(t0 + ms(700), Msg::Ack);
    let log = run_alone(&mut ist, t0, Duration::from_secs(60));
    assert_eq!(times(&log.sent, &Msg::Resp(200)), vec![0, 0]);
    assert_eq!(
        log.delivered.iter().filter(|(_, m)| *m == Msg::Ack).count(),
        1
    );
    assert_eq!(
        log.terminated,
        Some(Duration::from_secs(32)),
        "Timer L = 64·T1"
    );
}

#[test]
fn cancel_racing_200_cannot_turn_the_invite_into_487() {
    // RFC 3261 §9.2: CANCEL after the final response has no effect on the INVITE.
    let t0 = Instant::now();
    let mut ist = ServerInvite::new(t0, Msg::Invite, None, UDP, cfg());
    ist.send_response(t0, 200, Msg::Resp(200)).unwrap();
    assert_eq!(
        ist.send_response(t0 + ms(1), 487, Msg::Resp(487)),
        Err(TxnError::AlreadyFinal)
    );
    // The CANCEL has its own non-INVITE server transaction and gets its own 200.
    let mut cancel = ServerNonInvite::new(t0, Msg::Bye, UDP, cfg());
    cancel
        .send_response(t0 + ms(1), 200, Msg::Resp(200))
        .unwrap();
    assert_eq!(cancel.state(), NistState::Completed);
}

#[test]
fn rfc3261_17_2_2_nist_resends_final_on_retransmission_and_timer_j() {
    for (rel, j) in [(UDP, 32_000u64), (TCP, 0)] {
        let t0 = Instant::now();
        let mut nist = ServerNonInvite::new(t0, Msg::Bye, rel, cfg());
        let _ = run_alone(&mut nist, t0, ms(0));
        nist.handle_retransmission(t0 + ms(10));
        nist.send_response(t0 + ms(20), 200, Msg::Resp(200))
            .unwrap();
        if rel == UDP {
            nist.handle_retransmission(t0 + ms(520));
        }
        let log = run_alone(&mut nist, t0, Duration::from_secs(60));
        let want = if rel == UDP { vec![20, 520] } else { vec![20] };
        // Outputs queued before run_alone's first drain are stamped at t0.
        assert_eq!(times(&log.sent, &Msg::Resp(200)).len(), want.len());
        // Reliable: Timer J is zero, so the transaction ended inside send_response (drained
        // at t0 by run_alone); unreliable: 64·T1 after the final response.
        let end = if rel == UDP { ms(20 + j) } else { ms(0) };
        assert_eq!(log.terminated, Some(end));
        assert_eq!(
            nist.send_response(t0, 200, Msg::Resp(200)),
            Err(TxnError::AlreadyFinal)
        );
    }
}

#[test]
fn bad_status_codes_are_refused() {
    let t0 = Instant::now();
    let mut nist = ServerNonInvite::new(t0, Msg::Bye, UDP, cfg());
    assert_eq!(
        nist.send_response(t0, 99, Msg::Resp(99)),
        Err(TxnError::BadStatus(99))
    );
    assert_eq!(
        nist.send_response(t0, 700, Msg::Resp(700)),
        Err(TxnError::BadStatus(700))
    );
}

/// Two machines over a link that drops the listed transmissions (by index).
#[test]
fn lossy_link_nict_and_nist_recover_by_retransmission() {
    let t0 = Instant::now();
    let mut client = ClientNonInvite::new(t0, Msg::Bye, UDP, cfg());
    let mut server: Option<ServerNonInvite<Msg>> = None;
    let drop_c2s = [0usize, 1]; // the first two BYEs are lost
    let mut c2s = 0usize;
    let mut now = t0;
    let mut got: Option<(Duration, Msg)> = None;
    for _ in 0..100 {
        while let Some(o) = client.poll_output() {
            match o {
                Output::Transmit(m) => {
                    let lost = drop_c2s.contains(&c2s);
                    c2s += 1;
                    if lost {
                        continue;
                    }
                    match &mut server {
                        None => {
                            let mut s = ServerNonInvite::new(now, m, UDP, cfg());
                            while s.poll_output().is_some() {}
                            s.send_response(now, 200, Msg::Resp(200)).unwrap();
                            server = Some(s);
                        }
                        Some(s) => s.handle_retransmission(now),
                    }
                }
                Output::Deliver(m) => got = Some((now - t0, m)),
                Output::Timeout(t) => panic!("timed out: {t:?}"),
                Output::Terminated => {}
            }
        }
        if let Some(s) = &mut server {
            while let Some(o) = s.poll_output() {
                if let Output::Transmit(Msg::Resp(code)) = o {
                    client.handle_response(now, code, Msg::Resp(code));
                    while let Some(c) = client.poll_output() {
                        if let Output::Deliver(m) = c {
                            got = Some((now - t0, m));
                        }
                    }
                }
            }
        }
        if got.is_some() {
            break;
        }
        match client.poll_timeout() {
            Some((at, _)) => {
                now = at;
                client.handle_timeout(at);
            }
            None => break,
        }
    }
    assert_eq!(
        got,
        Some((ms(1500), Msg::Resp(200))),
        "third BYE at 1.5 s gets through"
    );
}
