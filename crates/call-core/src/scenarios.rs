//! Scenario tests: whole calls driven through `Call`, names citing ript-profile §5 where a
//! row of its signaling table is exercised. No I/O; time is a plain `Instant` moved by hand.

use crate::verdict::bucket;
use crate::*;
use ript_proto::events::EventKind;
use ript_proto::model::Reason;
use std::time::{Duration, Instant};

const T0_MS: i64 = 1_790_000_000_000;

struct H {
    call: Call,
    now: Instant,
    wall: i64,
    log: Vec<Action>,
}

fn sip_to_ript(targets: &[&str]) -> H {
    h(
        Direction::SipToRipt,
        targets.iter().map(|t| Target::ript(*t)).collect(),
    )
}

fn ript_to_sip(targets: &[&str]) -> H {
    h(
        Direction::RiptToSip,
        targets.iter().map(|t| Target::sip(*t)).collect(),
    )
}

fn h(direction: Direction, targets: Vec<Target>) -> H {
    let now = origin();
    let call = Call::new("call-1", direction, targets, now, T0_MS).unwrap();
    let mut h = H {
        call,
        now,
        wall: T0_MS,
        log: Vec::new(),
    };
    h.drain();
    h
}

/// Any origin works: time only ever moves forward from it by hand.
#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

fn ev(kind: EventKind) -> RiptInput {
    RiptInput::Event { kind, reason: None }
}

fn ev_sip(kind: EventKind, sip: u16) -> RiptInput {
    RiptInput::Event {
        kind,
        reason: Some(Reason::sip(sip, "x")),
    }
}

fn reject(status: u16) -> Action {
    Action::Sip(SipAction::Reject {
        status,
        reason_phrase: verdict::reason_phrase(status),
    })
}

fn start(t: &str) -> Action {
    Action::Ript(RiptAction::Start {
        target: Target::ript(t),
    })
}

fn invite(t: &str) -> Action {
    Action::Sip(SipAction::Invite {
        target: Target::sip(t),
    })
}

fn state(kind: EventKind, reason: Option<Reason>) -> Action {
    Action::Ript(RiptAction::State { kind, reason })
}

fn end(reason: Option<Reason>) -> Action {
    Action::Ript(RiptAction::End { reason })
}

impl H {
    fn tick(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        self.wall += i64::try_from(ms).unwrap();
    }

    fn drain(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        while let Some(a) = self.call.poll_action() {
            out.push(a.clone());
            self.log.push(a);
        }
        out
    }

    /// Leg actions only (no Persist, Cdr, Done).
    fn legs(actions: Vec<Action>) -> Vec<Action> {
        actions
            .into_iter()
            .filter(|a| matches!(a, Action::Sip(_) | Action::Ript(_)))
            .collect()
    }

    fn sip(&mut self, i: SipInput) -> Vec<Action> {
        self.tick(10);
        self.call.handle_sip(self.now, self.wall, i).unwrap();
        Self::legs(self.drain())
    }

    fn ript(&mut self, i: RiptInput) -> Vec<Action> {
        self.tick(10);
        self.call.handle_ript(self.now, self.wall, i).unwrap();
        Self::legs(self.drain())
    }

    fn hangup(&mut self) -> Vec<Action> {
        self.tick(10);
        self.call.handle_hangup(self.now, self.wall).unwrap();
        Self::legs(self.drain())
    }

    fn sip_err(&mut self, i: SipInput) -> Error {
        let before = self.call.snapshot();
        let e = self.call.handle_sip(self.now, self.wall, i).unwrap_err();
        assert!(self.drain().is_empty(), "an error emits nothing");
        if !self.call.is_done() {
            assert_eq!(self.call.snapshot(), before, "an error changes nothing");
        }
        e
    }

    fn ript_err(&mut self, i: RiptInput) -> Error {
        let before = self.call.snapshot();
        let e = self.call.handle_ript(self.now, self.wall, i).unwrap_err();
        assert!(self.drain().is_empty(), "an error emits nothing");
        if !self.call.is_done() {
            assert_eq!(self.call.snapshot(), before, "an error changes nothing");
        }
        e
    }

    /// The call finished: exactly one CDR and one Done, Done last with the CDR right before
    /// it, and the last snapshot says `ended`. Returns the CDR.
    fn cdr(&self) -> CdrRecord {
        assert!(self.call.is_done());
        assert_eq!(self.call.state(), CallState::Ended);
        let cdrs: Vec<&CdrRecord> = self
            .log
            .iter()
            .filter_map(|a| match a {
                Action::Cdr(c) => Some(c),
                _ => None,
            })
            .collect();
        assert_eq!(cdrs.len(), 1, "exactly one cdr: {:?}", self.log);
        let dones = self.log.iter().filter(|a| **a == Action::Done).count();
        assert_eq!(dones, 1, "exactly one done");
        let n = self.log.len();
        assert_eq!(self.log[n - 1], Action::Done);
        assert!(matches!(self.log[n - 2], Action::Cdr(_)));
        assert!(matches!(&self.log[n - 3], Action::Persist(s) if s.state == "ended"));
        assert_eq!(self.call.poll_timeout(), None);
        cdrs[0].clone()
    }

    fn persisted_states(&self) -> Vec<String> {
        self.log
            .iter()
            .filter_map(|a| match a {
                Action::Persist(s) => Some(s.state.clone()),
                _ => None,
            })
            .collect()
    }

    /// SIP-to-RIPT up to an answered call on target `t1`.
    fn answered_sip_to_ript(&mut self) {
        assert_eq!(self.sip(SipInput::Invite { has_sdp: true }), [start("t1")]);
        assert!(self.ript(RiptInput::Started).is_empty());
        assert_eq!(
            self.ript(ev(EventKind::Answered)),
            [Action::Sip(SipAction::Accept)]
        );
    }

    /// RIPT-to-SIP up to an answered call on target `p1`.
    fn answered_ript_to_sip(&mut self) {
        assert_eq!(self.ript(RiptInput::Started), [invite("p1")]);
        assert_eq!(
            self.sip(SipInput::Answered { has_sdp: true }),
            [state(EventKind::Answered, None)]
        );
    }
}

// ---------------------------------------------------------------------------------------
// ript-profile §5, row by row, both directions

#[test]
fn ript5_proceeding_maps_to_100_trying_which_the_ua_already_sent() {
    // RIPT → SIP: nothing to send (the INVITE server transaction sent 100 Trying).
    let mut h = sip_to_ript(&["t1"]);
    assert_eq!(h.sip(SipInput::Invite { has_sdp: true }), [start("t1")]);
    assert!(h.ript(RiptInput::Started).is_empty());
    assert!(h.ript(ev(EventKind::Proceeding)).is_empty());
    assert_eq!(h.call.state(), CallState::Proceeding);
    // SIP → RIPT: a 183 without SDP is proceeding, which the RIPT call already is.
    let mut h = ript_to_sip(&["p1"]);
    assert_eq!(h.ript(RiptInput::Started), [invite("p1")]);
    assert!(
        h.sip(SipInput::Provisional {
            status: 183,
            has_sdp: false
        })
        .is_empty()
    );
    assert_eq!(h.call.state(), CallState::Proceeding);
}

#[test]
fn ript5_proceeding_before_call_creation_reported_counts_as_created() {
    let mut h = sip_to_ript(&["t1"]);
    h.sip(SipInput::Invite { has_sdp: true });
    assert!(h.ript(ev(EventKind::Proceeding)).is_empty());
    assert_eq!(h.call.state(), CallState::Proceeding);
    // The call exists, so a CANCEL ends it at once.
    assert_eq!(
        h.sip(SipInput::Cancel),
        [end(Some(Reason::sip(487, "Request Terminated")))]
    );
    assert_eq!(h.cdr().bucket, bucket::CANCELLED);
}

#[test]
fn ript5_alerting_maps_to_180_ringing() {
    let mut h = sip_to_ript(&["t1"]);
    h.sip(SipInput::Invite { has_sdp: true });
    h.ript(RiptInput::Started);
    assert_eq!(
        h.ript(ev(EventKind::Alerting)),
        [Action::Sip(SipAction::Provisional {
            status: 180,
            with_sdp: false
        })]
    );
    // Once only.
    assert!(h.ript(ev(EventKind::Alerting)).is_empty());
    assert_eq!(h.call.state(), CallState::Alerting);
}

#[test]
fn ript5_alerting_with_early_media_maps_to_183_with_sdp() {
    let mut h = sip_to_ript(&["t1"]);
    h.call = Call::new(
        "call-1",
        Direction::SipToRipt,
        vec![Target::ript("t1")],
        h.now,
        T0_MS,
    )
    .unwrap()
    .with_early_media(true);
    h.drain();
    h.sip(SipInput::Invite { has_sdp: true });
    assert_eq!(
        h.ript(ev(EventKind::Alerting)),
        [Action::Sip(SipAction::Provisional {
            status: 183,
            with_sdp: true
        })]
    );
}

#[test]
fn ript5_early_media_needs_an_offer_in_the_invite() {
    let mut h = sip_to_ript(&["t1"]);
    h.call = Call::new(
        "call-1",
        Direction::SipToRipt,
        vec![Target::ript("t1")],
        h.now,
        T0_MS,
    )
    .unwrap()
    .with_early_media(true);
    h.drain();
    h.sip(SipInput::Invite { has_sdp: false });
    assert_eq!(
        h.ript(ev(EventKind::Alerting)),
        [Action::Sip(SipAction::Provisional {
            status: 180,
            with_sdp: false
        })]
    );
}

#[test]
fn ript5_180_and_183_with_sdp_map_to_alerting() {
    for (status, has_sdp) in [(180, false), (183, true), (180, true)] {
        let mut h = ript_to_sip(&["p1"]);
        h.ript(RiptInput::Started);
        assert_eq!(
            h.sip(SipInput::Provisional { status, has_sdp }),
            [state(EventKind::Alerting, None)],
            "{status} {has_sdp}"
        );
        assert_eq!(h.call.state(), CallState::Alerting);
        // A later 183 without SDP does not step back.
        assert!(
            h.sip(SipInput::Provisional {
                status: 183,
                has_sdp: false
            })
            .is_empty()
        );
        assert_eq!(h.call.state(), CallState::Alerting);
    }
}

#[test]
fn ript5_answered_maps_to_200_ok_both_ways() {
    let mut h = sip_to_ript(&["t1"]);
    h.answered_sip_to_ript();
    assert_eq!(h.call.state(), CallState::Answered);
    assert_eq!(h.call.snapshot().answered_at_ms, Some(T0_MS + 30));

    let mut h = ript_to_sip(&["p1"]);
    h.answered_ript_to_sip();
    assert_eq!(h.call.state(), CallState::Answered);
    assert_eq!(h.call.snapshot().answered_at_ms, Some(T0_MS + 20));
}

#[test]
fn ript5_486_maps_to_declined_and_back() {
    // RIPT declined {sip 486} → 486 to the SIP caller.
    let mut h = sip_to_ript(&["t1", "t2"]);
    h.sip(SipInput::Invite { has_sdp: true });
    h.ript(RiptInput::Started);
    assert_eq!(h.ript(ev_sip(EventKind::Declined, 486)), [reject(486)]);
    let cdr = h.cdr();
    assert_eq!(cdr.bucket, bucket::BUSY);
    assert_eq!(cdr.sip_status, Some(486));
    assert_eq!(cdr.attempts, 1, "486 never fails over");
    // SIP 486 → declined {sip 486} to the RIPT caller.
    let mut h = ript_to_sip(&["p1", "p2"]);
    h.ript(RiptInput::Started);
    assert_eq!(
        h.sip(SipInput::Failed { status: 486 }),
        [state(
            EventKind::Declined,
            Some(Reason::sip(486, "Busy Here"))
        )]
    );
    let cdr = h.cdr();
    assert_eq!(cdr.bucket, bucket::BUSY);
    assert_eq!(cdr.attempts, 1);
}

#[test]
fn ript5_600_and_603_map_to_declined_and_back() {
    for (status, b) in [(600, bucket::BUSY), (603, bucket::DECLINED)] {
        let mut h = sip_to_ript(&["t1", "t2"]);
        h.sip(SipInput::Invite { has_sdp: true });
        assert_eq!(
            h.ript(ev_sip(EventKind::Declined, status)),
            [reject(status)]
        );
        assert_eq!(h.cdr().bucket, b);

        let mut h = ript_to_sip(&["p1", "p2"]);
        h.ript(RiptInput::Started);
        let out = h.sip(SipInput::Failed { status });
        assert_eq!(
            out,
            [state(
                EventKind::Declined,
                Some(Reason::sip(status, verdict::reason_phrase(status)))
            )]
        );
        assert_eq!(h.cdr().bucket, b);
    }
}

#[test]
fn ript5_declined_without_code_maps_to_603() {
    let mut h = sip_to_ript(&["t1", "t2"]);
    h.sip(SipInput::Invite { has_sdp: true });
    h.ript(RiptInput::Started);
    assert_eq!(h.ript(ev(EventKind::Declined)), [reject(603)]);
    let cdr = h.cdr();
    assert_eq!(cdr.bucket, bucket::DECLINED);
    assert_eq!(cdr.ript_reason, None, "the reason is kept as received");
}

#[test]
fn ript5_other_4xx_5xx_6xx_map_to_failed_with_the_sip_code() {
    // RIPT failed {sip N} → N to the SIP caller (single target, so 5xx cannot fail over).
    for status in [404, 488, 500, 503, 604, 606] {
        let mut h = sip_to_ript(&["t1"]);
        h.sip(SipInput::Invite { has_sdp: true });
        h.ript(RiptInput::Started);
        assert_eq!(
            h.ript(ev_sip(EventKind::Failed, status)),
            [reject(status)],
            "{status}"
        );
        assert_eq!(h.cdr().sip_status, Some(status));
    }
    // SIP N → failed {sip N, text} to the RIPT caller.
    for status in [404, 488, 500, 503, 604, 606] {
        let mut h = ript_to_sip(&["p1"]);
        h.ript(RiptInput::Started);
        assert_eq!(
            h.sip(SipInput::Failed { status }),
            [state(
                EventKind::Failed,
                Some(Reason::sip(status, verdict::reason_phrase(status)))
            )],
            "{status}"
        );
        let cdr = h.cdr();
        assert_eq!(cdr.sip_status, Some(status));
        assert_eq!(cdr.ended_by, EndedBy::SipLeg);
    }
}

#[test]
fn ript5_failed_without_code_maps_to_502() {
    let mut h = sip_to_ript(&["t1"]);
    h.sip(SipInput::Invite { has_sdp: true });
    h.ript(RiptInput::Started);
    assert_eq!(h.ript(ev(EventKind::Failed)), [reject(502)]);
    assert_eq!(h.cdr().bucket, bucket::FAILED);
}

#[test]
fn ript5_408_480_487_map_to_noanswer_and_back() {
    for status in [408, 480, 487] {
        let mut h = ript_to_sip(&["p1"]);
        h.ript(RiptInput::Started);
        assert_eq!(
            h.sip(SipInput::Failed { status }),
            [state(
                EventKind::Noanswer,
                Some(Reason::sip(status, verdict::reason_phrase(status)))
            )]
        );
        assert_eq!(h.cdr().bucket, bucket::NO_ANSWER);

        let mut h = sip_to_ript(&["t1"]);
        h.sip(SipInput::Invite { has_sdp: true });
        h.ript(RiptInput::Started);
        assert_eq!(
            h.ript(ev_sip(EventKind::Noanswer, status)),
            [reject(status)]
        );
        assert_eq!(h.cdr().bucket, bucket::NO_ANSWER);
    }
}

#[test]
fn ript5_noanswer_without_code_maps_to_480() {
    let mut h = sip_to_ript(&["t1", "t2"]);
    h.sip(SipInput::Invite { has_sdp: true });
    h.ript(RiptInput::Started);
    h.ript(ev(EventKind::Alerting));
    assert_eq!(h.ript(ev(EventKind::Noanswer)), [reject(480)]);
    let cdr = h.cdr();
    assert_eq!(cdr.bucket, bucket::NO_ANSWER);
    assert_eq!(cdr.attempts, 1, "480 does not fail over");
}

#[test]
fn ript5_bye_maps_to_end_after_answer() {
    // SIP caller hangs up → end.
    let mut h = sip_to_ript(&["t1"]);
    h.answered_sip_to_ript();
    assert_eq!(h.sip(SipInput::Bye), [end(None)]);
    let cdr = h.cdr();
    assert_eq!(
        (cdr.bucket, cdr.sip_status, cdr.ended_by),
        (bucket::ANSWERED, Some(200), EndedBy::SipLeg)
    );
    assert_eq!(cdr.answered_at_ms, Some(T0_MS + 30));
    assert_eq!(cdr.ended_at_ms, T0_MS + 40);
    // SIP callee hangs up → end.
    let mut h = ript_to_sip(&["p1"]);
    h.answered_ript_to_sip();
    assert_eq!(h.sip(SipInput::Bye), [end(None)]);
    assert_eq!(h.cdr().ended_by, EndedBy::SipLeg);
}

#[test]
fn ript5_end_maps_to_bye_after_answer() {
    // RIPT server ends → BYE to the SIP caller.
    let mut h = sip_to_ript(&["t1"]);
    h.answered_sip_to_ript();
    let reason = Some(Reason::sip(200, "hung up"));
    assert_eq!(
        h.ript(RiptInput::Event {
            kind: EventKind::End,
            reason: reason.clone()
        }),
        [Action::Sip(SipAction::Bye)]
    );
    let cdr = h.cdr();
    assert_eq!(cdr.bucket, bucket::ANSWERED);
    assert_eq!(cdr.ript_reason, reason);
    assert_eq!(cdr.ended_by, EndedBy::RiptLeg);
    // RIPT client ends → BYE to the SIP callee.
    let mut h = ript_to_sip(&["p1"]);
    h.answered_ript_to_sip();
    assert_eq!(h.ript(ev(EventKind::End)), [Action::Sip(SipAction::Bye)]);
    assert_eq!(h.cdr().bucket, bucket::ANSWERED);
}

#[test]
fn ript5_cancel_before_answer_maps_to_end() {
    let mut h = sip_to_ript(&["t1"]);
    h.sip(SipInput::Invite { has_sdp: true });
    h.ript(RiptInput::Started);
    h.ript(ev(EventKind::Alerting));
    // The UA already answered the INVITE 487; the RIPT call gets `end`.
    assert_eq!(
        h.sip(SipInput::Cancel),
        [end(Some(Reason::sip(487, "Request Terminated")))]
    );
    let cdr = h.cdr();
    assert_eq!(
        (cdr.bucket, cdr.sip_status, cdr.ended_by),
        (bucket::CANCELLED, Some(487), EndedBy::SipLeg)
    );
    assert_eq!(cdr.answered_at_ms, None);
}

#[test]
fn ript5_bye_on_early_dialog_from_the_caller_is_a_cancel() {
    let mut h = sip_to_ript(&["t1"]);
    h.sip(SipInput::Invite { has_sdp: true });
    h.ript(RiptInput::Started);
    assert_eq!(
        h.sip(SipInput::Bye),
        [end(Some(Reason::sip(487, "Request Terminated")))]
    );
    assert_eq!(h.cdr().bucket, bucket::CANCELLED);
}

#[test]
fn ript5_end_before_answer_cancels_the_invite() {
    let mut h = ript_to_sip(&["p1", "p2"]);
    h.ript(RiptInput::Started);
    h.sip(SipInput::Provisional {
        status: 180,
        has_sdp: false,
    });
    assert_eq!(h.ript(ev(EventKind::End)), [Action::Sip(SipAction::Cancel)]);
    assert_eq!(h.call.state(), CallState::Cancelling);
    assert!(h.call.poll_timeout().is_some());
    // The UA reports the INVITE's outcome: 487.
    assert!(h.sip(SipInput::Failed { status: 487 }).is_empty());
    let cdr = h.cdr();
    assert_eq!(
        (cdr.bucket, cdr.sip_status, cdr.ended_by, cdr.attempts),
        (bucket::CANCELLED, Some(487), EndedBy::RiptLeg, 1)
    );
}

#[test]
fn ript5_end_from_the_server_before_answer_gives_487_to_the_caller() {
    let mut h = sip_to_ript(&["t1", "t2"]);
    h.sip(SipInput::Invite { has_sdp: true });
    h.ript(RiptInput::Started);
    assert_eq!(h.ript(ev(EventKind::End)), [reject(487)]);
    let cdr = h.cdr();
    assert_eq!(cdr.attempts, 1, "an end never fails over");
    assert_eq!(cdr.bucket, bucket::CANCELLED);
    // An end carrying a code passes it on.
    let mut h = sip_to_ript(&["t1"]);
    h.sip(SipInput::Invite { has_sdp: true });
    h.ript(RiptInput::Started);
    assert_eq!(h.ript(ev_sip(EventKind::End, 408)), [reject(408)]);
}

// ---------------------------------------------------------------------------------------
// Failover

#[test]
fn failover_ript_503_tries_the_next_target() {
    let mut h = sip_to_ript(&["t1", "t2"]);
    h.sip(SipInput::Invite { has_sdp: true });
    h.ript(RiptInput::Started);
    h.ript(ev(EventKind::Alerting));
    assert_eq!(h.ript(ev_sip(EventKind::Failed, 503)), [start("t2")]);
    assert_eq!(h.call.state(), CallState::Trying);
    assert_eq!(h.call.target(), Some(&Target::ript("t2")));
    assert_eq!(h.call.attempts(), 2);
    h.ript(RiptInput::Started);
    // The caller already heard 180: not again.
    assert!(h.ript(ev(EventKind::Alerting)).is_empty());
    assert_eq!(
        h.ript(ev(EventKind::Answered)),
        [Action::Sip(SipAction::Accept)]
    );
    h.sip(SipInput::Bye);
    let cdr = h.cdr();
    assert_eq!(cdr.target, Some(Target::ript("t2")));
    assert_eq!(cdr.attempts, 2);
}

#[test]
fn failover_refused_call_creation_503_and_leg_lost() {
    let mut h = sip_to_ript(&["t1", "t2", "t3"]);
    h.sip(SipInput::Invite { has_sdp: true });
    assert_eq!(
        h.ript(RiptInput::Refused {
            http_status: 503,
            reason: Some("Service unavailable".into())
        }),
        [start("t2")]
    );
    assert_eq!(h.ript(RiptInput::LegLost), [start("t3")]);
    h.ript(RiptInput::Started);
    assert_eq!(
        h.ript(ev(EventKind::Answered)),
        [Action::Sip(SipAction::Accept)]
    );
}

#[test]
fn failover_sip_503_and_408_try_the_next_target() {
    let mut h = ript_to_sip(&["p1", "p2", "p3"]);
    assert_eq!(h.ript(RiptInput::Started), [invite("p1")]);
    assert_eq!(h.sip(SipInput::Failed { status: 503 }), [invite("p2")]);
    assert_eq!(h.sip(SipInput::Failed { status: 408 }), [invite("p3")]);
    h.answered_ript_to_sip_after_invite();
}

impl H {
    fn answered_ript_to_sip_after_invite(&mut self) {
        assert_eq!(
            self.sip(SipInput::Answered { has_sdp: false }),
            [state(EventKind::Answered, None)]
        );
    }
}

#[test]
fn failover_never_on_486_600_603_or_declined() {
    for status in [486, 600, 603] {
        let mut h = ript_to_sip(&["p1", "p2"]);
        h.ript(RiptInput::Started);
        let out = h.sip(SipInput::Failed { status });
        assert!(matches!(
            &out[..],
            [Action::Ript(RiptAction::State {
                kind: EventKind::Declined,
                ..
            })]
        ));
        assert_eq!(h.cdr().attempts, 1);
    }
    // A declined carrying a 5xx code still never fails over.
    let mut h = sip_to_ript(&["t1", "t2"]);
    h.sip(SipInput::Invite { has_sdp: true });
    assert_eq!(h.ript(ev_sip(EventKind::Declined, 503)), [reject(503)]);
    assert_eq!(h.cdr().attempts, 1);
}

#[test]
fn failover_never_on_other_4xx() {
    for status in [403, 404, 480, 484, 488] {
        let mut h = ript_to_sip(&["p1", "p2"]);
        h.ript(RiptInput::Started);
        let out = h.sip(SipInput::Failed { status });
        assert!(
            matches!(&out[..], [Action::Ript(RiptAction::State { .. })]),
            "{status}"
        );
        assert_eq!(h.cdr().attempts, 1, "{status}");
    }
}

#[test]
fn failover_all_targets_fail_inbound_gets_the_last_failure() {
    let mut h = ript_to_sip(&["p1", "p2", "p3"]);
    h.ript(RiptInput::Started);
    h.sip(SipInput::Failed { status: 503 });
    h.sip(SipInput::Failed { status: 500 });
    assert_eq!(
        h.sip(SipInput::Failed { status: 408 }),
        [state(
            EventKind::Noanswer,
            Some(Reason::sip(408, "Request Timeout"))
        )]
    );
    let cdr = h.cdr();
    assert_eq!(cdr.attempts, 3);
    assert_eq!(cdr.sip_status, Some(408));
    assert_eq!(cdr.target, Some(Target::sip("p3")));

    let mut h = sip_to_ript(&["t1", "t2"]);
    h.sip(SipInput::Invite { has_sdp: true });
    h.ript(RiptInput::Refused {
        http_status: 503,
        reason: None,
    });
    assert_eq!(h.ript(ev_sip(EventKind::Failed, 500)), [reject(500)]);
    let cdr = h.cdr();
    assert_eq!((cdr.attempts, cdr.sip_status), (2, Some(500)));
}

#[test]
fn failover_stops_at_a_final_failure_after_a_retryable_one() {
    let mut h = sip_to_ript(&["t1", "t2", "t3"]);
    h.sip(SipInput::Invite { has_sdp: true });
    h.ript(RiptInput::LegLost);
    assert_eq!(h.ript(ev_sip(EventKind::Failed, 404)), [reject(404)]);
    let cdr = h.cdr();
    assert_eq!((cdr.attempts, cdr.bucket), (2, bucket::NO_ROUTE));
}

#[test]
fn ript2_call_creation_refused_403_404_map_to_sip_403_404() {
    for (http, b) in [(403, bucket::REJECTED), (404, bucket::NO_ROUTE)] {
        let mut h = sip_to_ript(&["t1", "t2"]);
        h.sip(SipInput::Invite { has_sdp: true });
        assert_eq!(
            h.ript(RiptInput::Refused {
                http_status: http,
                reason: None
            }),
            [reject(http)]
        );
        let cdr = h.cdr();
        assert_eq!((cdr.bucket, cdr.attempts), (b, 1));
        assert_eq!(cdr.ended_by, EndedBy::RiptLeg);
    }
}

#[test]
fn no_targets_is_no_route_both_ways() {
    let mut h = sip_to_ript(&[]);
    assert_eq!(h.sip(SipInput::Invite { has_sdp: true }), [reject(404)]);
    let cdr = h.cdr();
    assert_eq!(
        (cdr.bucket, cdr.attempts, cdr.target.clone(), cdr.ended_by),
        (bucket::NO_ROUTE, 0, None, EndedBy::Gateway)
    );

    let mut h = ript_to_sip(&[]);
    assert_eq!(
        h.ript(RiptInput::Started),
        [state(EventKind::Failed, Some(Reason::sip(404, "No Route")))]
    );
    assert_eq!(h.cdr().bucket, bucket::NO_ROUTE);
}

#[test]
fn targets_of_the_wrong_kind_are_refused() {
    let now = origin();
    let e = Call::new(
        "c",
        Direction::SipToRipt,
        vec![Target::ript("t1"), Target::sip("p1")],
        now,
        T0_MS,
    )
    .unwrap_err();
    assert_eq!(
        e,
        Error::TargetKind {
            index: 1,
            expected: TargetKind::Ript
        }
    );
    assert_eq!(e.category(), Category::Misuse);
}

// ---------------------------------------------------------------------------------------
// CANCEL races

#[test]
fn cancel_while_call_creation_is_in_flight_ends_the_call_once_created() {
    let mut h = sip_to_ript(&["t1"]);
    h.sip(SipInput::Invite { has_sdp: true });
    // No `end` is possible yet: the call has no URI.
    assert!(h.sip(SipInput::Cancel).is_empty());
    assert_eq!(h.call.state(), CallState::Cancelling);
    assert!(!h.call.is_done());
    assert_eq!(
        h.ript(RiptInput::Started),
        [end(Some(Reason::sip(487, "Request Terminated")))]
    );
    assert_eq!(h.cdr().bucket, bucket::CANCELLED);
}

#[test]
fn cancel_racing_answered_ends_the_ript_leg() {
    // The RIPT answer arrives after the SIP CANCEL (creation still unconfirmed).
    let mut h = sip_to_ript(&["t1"]);
    h.sip(SipInput::Invite { has_sdp: true });
    assert!(h.sip(SipInput::Cancel).is_empty());
    assert_eq!(
        h.ript(ev(EventKind::Answered)),
        [end(Some(Reason::sip(487, "Request Terminated")))]
    );
    let cdr = h.cdr();
    assert_eq!(cdr.bucket, bucket::CANCELLED);
    assert_eq!(cdr.answered_at_ms, None);
}

#[test]
fn cancel_that_beat_our_accept_ends_the_answered_ript_leg() {
    // The core sent Accept, but the UA had already answered the CANCEL 487.
    let mut h = sip_to_ript(&["t1"]);
    h.answered_sip_to_ript();
    assert_eq!(
        h.sip(SipInput::Cancel),
        [end(Some(Reason::sip(487, "Request Terminated")))]
    );
    let cdr = h.cdr();
    assert_eq!(
        (cdr.bucket, cdr.sip_status, cdr.answered_at_ms),
        (bucket::CANCELLED, Some(487), None)
    );
}

#[test]
fn cancel_after_the_ript_call_ended_it_ignores_late_events() {
    let mut h = sip_to_ript(&["t1"]);
    h.sip(SipInput::Invite { has_sdp: true });
    h.ript(RiptInput::Started);
    h.sip(SipInput::Cancel);
    h.cdr();
    // The server's answer crossed our `end`: the call is done, the input is refused.
    assert_eq!(h.ript_err(ev(EventKind::Answered)), Error::Ended);
    assert_eq!(Error::Ended.category(), Category::Misuse);
    h.cdr();
}

#[test]
fn cancel_while_creation_in_flight_then_refused_just_finishes() {
    let mut h = sip_to_ript(&["t1", "t2"]);
    h.sip(SipInput::Invite { has_sdp: true });
    h.sip(SipInput::Cancel);
    // A retryable refusal must not start another attempt: the caller is gone.
    assert!(
        h.ript(RiptInput::Refused {
            http_status: 503,
            reason: None
        })
        .is_empty()
    );
    let cdr = h.cdr();
    assert_eq!((cdr.bucket, cdr.attempts), (bucket::CANCELLED, 1));
}

#[test]
fn ript_end_racing_sip_200_byes_the_callee() {
    let mut h = ript_to_sip(&["p1"]);
    h.ript(RiptInput::Started);
    assert_eq!(h.ript(ev(EventKind::End)), [Action::Sip(SipAction::Cancel)]);
    // The 2xx won the race with our CANCEL.
    assert_eq!(
        h.sip(SipInput::Answered { has_sdp: true }),
        [Action::Sip(SipAction::Bye)]
    );
    let cdr = h.cdr();
    assert_eq!(
        (cdr.bucket, cdr.sip_status, cdr.answered_at_ms),
        (bucket::CANCELLED, Some(200), None)
    );
}

#[test]
fn cancelling_ignores_the_rest_of_the_setup() {
    let mut h = ript_to_sip(&["p1", "p2"]);
    h.ript(RiptInput::Started);
    h.ript(ev(EventKind::End));
    assert!(
        h.sip(SipInput::Provisional {
            status: 180,
            has_sdp: false
        })
        .is_empty()
    );
    assert!(h.ript(RiptInput::LegLost).is_empty());
    assert!(h.hangup().is_empty());
    // 503 after CANCEL: no failover.
    assert!(h.sip(SipInput::Failed { status: 503 }).is_empty());
    assert_eq!(h.cdr().attempts, 1);
}

#[test]
fn end_guard_finishes_a_call_whose_outbound_leg_never_confirms() {
    let mut h = ript_to_sip(&["p1"]);
    h.ript(RiptInput::Started);
    h.ript(ev(EventKind::End));
    let deadline = h.call.poll_timeout().unwrap();
    assert_eq!(deadline, h.now + END_GUARD);
    // A spurious (early) timeout does nothing.
    h.call
        .handle_timeout(deadline - Duration::from_millis(1), h.wall);
    assert!(h.drain().is_empty());
    assert!(!h.call.is_done());
    h.call.handle_timeout(deadline, h.wall + 32_000);
    h.drain();
    let cdr = h.cdr();
    assert_eq!((cdr.bucket, cdr.sip_status), (bucket::CANCELLED, Some(487)));
    assert_eq!(cdr.ended_at_ms, h.wall + 32_000);
    // Later timeouts are ignored.
    h.call.handle_timeout(deadline + END_GUARD, h.wall);
    assert!(h.drain().is_empty());
}

#[test]
fn end_guard_also_bounds_a_call_creation_that_never_answers() {
    let mut h = sip_to_ript(&["t1"]);
    h.sip(SipInput::Invite { has_sdp: true });
    h.sip(SipInput::Cancel);
    let deadline = h.call.poll_timeout().unwrap();
    h.call.handle_timeout(deadline, h.wall);
    h.drain();
    assert_eq!(h.cdr().bucket, bucket::CANCELLED);
}

#[test]
fn time_going_backwards_counts_as_the_last_time() {
    let mut h = ript_to_sip(&["p1"]);
    h.ript(RiptInput::Started);
    h.tick(1000);
    h.call
        .handle_ript(h.now, h.wall, ev(EventKind::End))
        .unwrap();
    h.drain();
    let deadline = h.call.poll_timeout().unwrap();
    // An input with an older `now` does not move the guard earlier or fire it.
    h.call
        .handle_timeout(h.now - Duration::from_secs(60), h.wall);
    assert!(!h.call.is_done());
    assert_eq!(h.call.poll_timeout(), Some(deadline));
}

// ---------------------------------------------------------------------------------------
// BYE from either side, and crossing ends

#[test]
fn bye_and_ript_end_crossing_finish_once() {
    let mut h = sip_to_ript(&["t1"]);
    h.answered_sip_to_ript();
    assert_eq!(h.sip(SipInput::Bye), [end(None)]);
    assert_eq!(h.ript_err(ev(EventKind::End)), Error::Ended);
    h.cdr();

    let mut h = ript_to_sip(&["p1"]);
    h.answered_ript_to_sip();
    assert_eq!(h.ript(ev(EventKind::End)), [Action::Sip(SipAction::Bye)]);
    assert_eq!(h.sip_err(SipInput::Bye), Error::Ended);
    h.cdr();
}

#[test]
fn ript_leg_lost_after_answer_byes_the_sip_leg() {
    let mut h = sip_to_ript(&["t1"]);
    h.answered_sip_to_ript();
    assert_eq!(h.ript(RiptInput::LegLost), [Action::Sip(SipAction::Bye)]);
    let cdr = h.cdr();
    assert_eq!(
        (cdr.bucket, cdr.ended_by),
        (bucket::ANSWERED, EndedBy::RiptLeg)
    );
    assert_eq!(
        cdr.ript_reason.and_then(|r| r.text).as_deref(),
        Some(CONNECTION_LOST)
    );

    let mut h = ript_to_sip(&["p1"]);
    h.answered_ript_to_sip();
    assert_eq!(h.ript(RiptInput::LegLost), [Action::Sip(SipAction::Bye)]);
    assert_eq!(h.cdr().bucket, bucket::ANSWERED);
}

#[test]
fn ript_client_lost_before_answer_cancels_the_invite() {
    let mut h = ript_to_sip(&["p1"]);
    h.ript(RiptInput::Started);
    assert_eq!(h.ript(RiptInput::LegLost), [Action::Sip(SipAction::Cancel)]);
    h.sip(SipInput::Failed { status: 487 });
    let cdr = h.cdr();
    assert_eq!(
        (cdr.bucket, cdr.ended_by),
        (bucket::FAILED, EndedBy::RiptLeg)
    );
}

// ---------------------------------------------------------------------------------------
// Hold

#[test]
fn hold_from_sip_maps_to_a_ript_directive_and_back() {
    let mut h = sip_to_ript(&["t1"]);
    h.answered_sip_to_ript();
    assert_eq!(
        h.sip(SipInput::Hold {
            direction: MediaDirection::SendOnly
        }),
        [Action::Ript(RiptAction::Hold {
            direction: MediaDirection::SendOnly
        })]
    );
    assert_eq!(h.call.media(), MediaDirection::SendOnly);
    // Unchanged direction: nothing to relay, nothing to persist.
    let before = h.log.len();
    assert!(
        h.sip(SipInput::Hold {
            direction: MediaDirection::SendOnly
        })
        .is_empty()
    );
    assert_eq!(h.log.len(), before);
    assert_eq!(
        h.ript(RiptInput::Hold {
            direction: MediaDirection::SendRecv
        }),
        [Action::Sip(SipAction::Hold {
            direction: MediaDirection::SendRecv
        })]
    );
    let media: Vec<MediaDirection> = h
        .log
        .iter()
        .filter_map(|a| match a {
            Action::Persist(s) => Some(s.media),
            _ => None,
        })
        .collect();
    assert_eq!(
        &media[media.len() - 2..],
        [MediaDirection::SendOnly, MediaDirection::SendRecv]
    );
}

#[test]
fn hold_from_ript_maps_to_a_reinvite_and_back() {
    let mut h = ript_to_sip(&["p1"]);
    h.answered_ript_to_sip();
    assert_eq!(
        h.ript(RiptInput::Hold {
            direction: MediaDirection::Inactive
        }),
        [Action::Sip(SipAction::Hold {
            direction: MediaDirection::Inactive
        })]
    );
    assert_eq!(
        h.sip(SipInput::Hold {
            direction: MediaDirection::RecvOnly
        }),
        [Action::Ript(RiptAction::Hold {
            direction: MediaDirection::RecvOnly
        })]
    );
    assert_eq!(h.call.snapshot().media, MediaDirection::RecvOnly);
}

#[test]
fn hold_before_answer_is_a_peer_error() {
    let mut h = sip_to_ript(&["t1"]);
    h.sip(SipInput::Invite { has_sdp: true });
    let e = h.sip_err(SipInput::Hold {
        direction: MediaDirection::SendOnly,
    });
    assert_eq!(e.category(), Category::Peer);
    let e = h.ript_err(RiptInput::Hold {
        direction: MediaDirection::SendOnly,
    });
    assert_eq!(e.category(), Category::Peer);
}

// ---------------------------------------------------------------------------------------
// Admin hang-up

#[test]
fn admin_hangup_before_answer_sip_to_ript() {
    let mut h = sip_to_ript(&["t1"]);
    h.sip(SipInput::Invite { has_sdp: true });
    h.ript(RiptInput::Started);
    assert_eq!(
        h.hangup(),
        [reject(487), end(Some(Reason::sip(487, ADMIN_HANGUP)))]
    );
    let cdr = h.cdr();
    assert_eq!(
        (cdr.bucket, cdr.ended_by, cdr.sip_status),
        (bucket::CANCELLED, EndedBy::Admin, Some(487))
    );
}

#[test]
fn admin_hangup_before_call_creation_waits_for_it() {
    let mut h = sip_to_ript(&["t1"]);
    h.sip(SipInput::Invite { has_sdp: true });
    assert_eq!(h.hangup(), [reject(487)]);
    assert_eq!(h.call.state(), CallState::Cancelling);
    assert_eq!(
        h.ript(RiptInput::Started),
        [end(Some(Reason::sip(487, ADMIN_HANGUP)))]
    );
    assert_eq!(h.cdr().ended_by, EndedBy::Admin);
}

#[test]
fn admin_hangup_before_answer_ript_to_sip() {
    let mut h = ript_to_sip(&["p1"]);
    h.ript(RiptInput::Started);
    assert_eq!(
        h.hangup(),
        [
            end(Some(Reason::sip(487, ADMIN_HANGUP))),
            Action::Sip(SipAction::Cancel)
        ]
    );
    assert!(h.sip(SipInput::Failed { status: 487 }).is_empty());
    let cdr = h.cdr();
    assert_eq!(
        (cdr.bucket, cdr.ended_by),
        (bucket::CANCELLED, EndedBy::Admin)
    );
}

#[test]
fn admin_hangup_after_answer_byes_and_ends() {
    let admin = Some(Reason {
        sip: None,
        text: Some(ADMIN_HANGUP.to_owned()),
    });
    let mut h = sip_to_ript(&["t1"]);
    h.answered_sip_to_ript();
    assert_eq!(
        h.hangup(),
        [Action::Sip(SipAction::Bye), end(admin.clone())]
    );
    let cdr = h.cdr();
    assert_eq!(
        (cdr.bucket, cdr.ended_by),
        (bucket::ANSWERED, EndedBy::Admin)
    );

    let mut h = ript_to_sip(&["p1"]);
    h.answered_ript_to_sip();
    assert_eq!(h.hangup(), [Action::Sip(SipAction::Bye), end(admin)]);
    h.cdr();
}

#[test]
fn admin_hangup_of_an_idle_call_just_finishes() {
    let mut h = sip_to_ript(&["t1"]);
    assert!(h.hangup().is_empty());
    let cdr = h.cdr();
    assert_eq!(
        (cdr.bucket, cdr.sip_status, cdr.attempts),
        (bucket::CANCELLED, None, 0)
    );
    assert_eq!(
        h.call.handle_hangup(h.now, h.wall).unwrap_err(),
        Error::Ended
    );
}

// ---------------------------------------------------------------------------------------
// Snapshots, CDRs, errors

#[test]
fn persist_on_every_state_change_and_only_then() {
    let mut h = sip_to_ript(&["t1"]);
    h.sip(SipInput::Invite { has_sdp: true });
    h.ript(RiptInput::Started);
    h.ript(ev(EventKind::Proceeding));
    h.ript(ev(EventKind::Alerting));
    h.ript(ev(EventKind::Alerting));
    h.ript(ev(EventKind::Answered));
    h.ript(ev(EventKind::Answered));
    h.ript(ev(EventKind::Ping));
    h.sip(SipInput::SessionRefreshed);
    h.sip(SipInput::Bye);
    assert_eq!(
        h.persisted_states(),
        [
            "idle",
            "trying",
            "proceeding",
            "alerting",
            "answered",
            "ended"
        ]
    );
    let seqs: Vec<u64> = h
        .log
        .iter()
        .filter_map(|a| match a {
            Action::Persist(s) => Some(s.seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4, 5]);
    h.cdr();
}

#[test]
fn persist_on_failover_even_when_the_state_name_stays() {
    let mut h = ript_to_sip(&["p1", "p2"]);
    h.ript(RiptInput::Started);
    h.sip(SipInput::Failed { status: 503 });
    let last = h
        .log
        .iter()
        .rev()
        .find_map(|a| match a {
            Action::Persist(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(last.state, "trying");
    assert_eq!(last.target, Some(Target::sip("p2")));
    assert_eq!(last.attempts, 2);
    assert_eq!(h.persisted_states(), ["idle", "trying", "trying"]);
}

#[test]
fn replayed_state_events_on_a_new_byway_are_ignored() {
    let mut h = sip_to_ript(&["t1"]);
    h.answered_sip_to_ript();
    let before = h.log.len();
    // ript-profile §5: a new reverse byway first receives the current state event.
    assert!(h.ript(ev(EventKind::Answered)).is_empty());
    assert!(h.ript(ev(EventKind::Alerting)).is_empty());
    assert!(h.ript(ev(EventKind::Migrate)).is_empty());
    assert_eq!(h.log.len(), before);
}

#[test]
fn leg_local_inputs_are_ignored() {
    let mut h = sip_to_ript(&["t1"]);
    h.sip(SipInput::Invite { has_sdp: true });
    for k in [
        EventKind::Ping,
        EventKind::Pong,
        EventKind::Migrate,
        EventKind::MediaPanic,
        EventKind::HandlerChanged,
    ] {
        assert!(h.ript(ev(k)).is_empty());
    }
    assert!(h.sip(SipInput::SessionRefreshed).is_empty());
    let mut h = ript_to_sip(&["p1"]);
    h.ript(RiptInput::Started);
    assert!(h.ript(ev(EventKind::Ping)).is_empty());
    // ript-inbound: a client may send proceeding; nothing to relay.
    assert!(h.ript(ev(EventKind::Proceeding)).is_empty());
}

#[test]
fn inputs_of_the_other_direction_are_misuse() {
    let mut h = sip_to_ript(&["t1"]);
    h.sip(SipInput::Invite { has_sdp: true });
    for i in [
        SipInput::Provisional {
            status: 180,
            has_sdp: false,
        },
        SipInput::Answered { has_sdp: true },
        SipInput::Failed { status: 486 },
    ] {
        let e = h.sip_err(i);
        assert!(matches!(e, Error::WrongDirection { .. }), "{e}");
        assert_eq!(e.category(), Category::Misuse);
    }
    let mut h = ript_to_sip(&["p1"]);
    h.ript(RiptInput::Started);
    assert!(matches!(
        h.sip_err(SipInput::Invite { has_sdp: true }),
        Error::WrongDirection { .. }
    ));
    assert!(matches!(
        h.sip_err(SipInput::Cancel),
        Error::WrongDirection { .. }
    ));
    assert!(matches!(
        h.ript_err(RiptInput::Refused {
            http_status: 503,
            reason: None
        }),
        Error::WrongDirection { .. }
    ));
}

#[test]
fn inputs_before_the_call_started_are_misuse() {
    let mut h = sip_to_ript(&["t1"]);
    for i in [
        RiptInput::Started,
        RiptInput::LegLost,
        ev(EventKind::Answered),
        ev(EventKind::Failed),
    ] {
        assert_eq!(h.ript_err(i).category(), Category::Misuse);
    }
    assert_eq!(h.sip_err(SipInput::Bye).category(), Category::Misuse);
    let mut h = ript_to_sip(&["p1"]);
    assert_eq!(
        h.sip_err(SipInput::Answered { has_sdp: true }).category(),
        Category::Misuse
    );
    assert_eq!(h.ript_err(ev(EventKind::End)).category(), Category::Misuse);
    h.ript(RiptInput::Started);
    // Started twice, Invite twice.
    assert_eq!(h.ript_err(RiptInput::Started).category(), Category::Misuse);
    let mut h = sip_to_ript(&["t1"]);
    h.sip(SipInput::Invite { has_sdp: true });
    assert_eq!(
        h.sip_err(SipInput::Invite { has_sdp: true }).category(),
        Category::Misuse
    );
}

#[test]
fn statuses_outside_the_input_class_are_misuse() {
    let mut h = ript_to_sip(&["p1"]);
    h.ript(RiptInput::Started);
    for i in [
        SipInput::Failed { status: 200 },
        SipInput::Failed { status: 180 },
        SipInput::Failed { status: 700 },
        SipInput::Provisional {
            status: 200,
            has_sdp: false,
        },
    ] {
        let e = h.sip_err(i);
        assert!(matches!(e, Error::BadStatus { .. }), "{e}");
    }
}

#[test]
fn peer_misbehaviour_is_ignored_as_peer_errors() {
    // A server event not allowed after the answer.
    let mut h = sip_to_ript(&["t1"]);
    h.answered_sip_to_ript();
    for k in [EventKind::Declined, EventKind::Failed, EventKind::Noanswer] {
        let e = h.ript_err(ev(k));
        assert_eq!(e.category(), Category::Peer, "{e}");
    }
    // Unknown event names (ript-profile §9).
    let e = h.ript_err(ev(EventKind::Other("shrug".into())));
    assert_eq!(
        e,
        Error::UnknownEvent {
            name: "shrug".into()
        }
    );
    assert_eq!(e.category(), Category::Peer);
    // A refusal after the call was created.
    assert_eq!(
        h.ript_err(RiptInput::Refused {
            http_status: 404,
            reason: None
        })
        .category(),
        Category::Misuse
    );
    assert_eq!(h.call.state(), CallState::Answered);

    // Server-only events from a RIPT client.
    let mut h = ript_to_sip(&["p1"]);
    h.ript(RiptInput::Started);
    for k in [EventKind::Answered, EventKind::Alerting, EventKind::Pong] {
        assert_eq!(h.ript_err(ev(k)).category(), Category::Peer);
    }
    // The callee never BYEs an early dialog (RFC 3261 §15); a provisional after the 2xx.
    assert_eq!(h.sip_err(SipInput::Bye).category(), Category::Peer);
    h.sip(SipInput::Answered { has_sdp: true });
    assert!(
        h.sip(SipInput::Answered { has_sdp: true }).is_empty(),
        "2xx retransmission"
    );
    assert_eq!(
        h.sip_err(SipInput::Provisional {
            status: 180,
            has_sdp: false
        })
        .category(),
        Category::Peer
    );
    assert_eq!(
        h.sip_err(SipInput::Failed { status: 500 }).category(),
        Category::Peer
    );
}

#[test]
fn every_input_after_done_returns_ended_and_emits_nothing() {
    let mut h = ript_to_sip(&["p1"]);
    h.ript(RiptInput::Started);
    h.sip(SipInput::Failed { status: 486 });
    h.cdr();
    let n = h.log.len();
    assert_eq!(h.sip_err(SipInput::Bye), Error::Ended);
    assert_eq!(h.ript_err(RiptInput::LegLost), Error::Ended);
    assert_eq!(
        h.call.handle_hangup(h.now, h.wall).unwrap_err(),
        Error::Ended
    );
    h.call.handle_timeout(h.now + END_GUARD, h.wall);
    assert!(h.drain().is_empty());
    assert_eq!(h.log.len(), n);
}

#[test]
fn snapshot_round_trips_through_json_and_cdr_serializes() {
    let mut h = sip_to_ript(&["t1"]);
    h.answered_sip_to_ript();
    let s = h.call.snapshot();
    let json = serde_json::to_string(&s).unwrap();
    assert!(json.contains("\"direction\":\"sip_to_ript\""), "{json}");
    assert!(json.contains("\"state\":\"answered\""), "{json}");
    assert!(json.contains("\"kind\":\"ript\""), "{json}");
    let back: Snapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    h.sip(SipInput::Bye);
    let cdr = serde_json::to_value(h.cdr()).unwrap();
    assert_eq!(cdr["bucket"], "answered");
    assert_eq!(cdr["ended_by"], "sip_leg");
    assert_eq!(cdr["sip_status"], 200);
    assert_eq!(cdr["started_at_ms"], T0_MS);
}

#[test]
fn cdr_times_come_from_the_wall_clock_inputs() {
    let mut h = ript_to_sip(&["p1"]);
    h.ript(RiptInput::Started); // +10
    h.sip(SipInput::Provisional {
        status: 180,
        has_sdp: false,
    }); // +20
    h.sip(SipInput::Answered { has_sdp: true }); // +30
    h.tick(60_000);
    h.sip(SipInput::Bye); // +60040
    let cdr = h.cdr();
    assert_eq!(cdr.started_at_ms, T0_MS);
    assert_eq!(cdr.answered_at_ms, Some(T0_MS + 30));
    assert_eq!(cdr.ended_at_ms, T0_MS + 60_040);
}

/// Deterministic input soup (a tiny LCG, no RNG crate): whatever arrives, the call never
/// panics, emits at most one CDR and one Done, Done last, and nothing after it.
#[test]
fn arbitrary_input_sequences_keep_the_invariants() {
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let kinds = [
        EventKind::Proceeding,
        EventKind::Alerting,
        EventKind::Answered,
        EventKind::Declined,
        EventKind::Failed,
        EventKind::Noanswer,
        EventKind::End,
        EventKind::Ping,
        EventKind::Other("x".into()),
    ];
    let dirs = [
        MediaDirection::SendRecv,
        MediaDirection::SendOnly,
        MediaDirection::Inactive,
    ];
    for round in 0..3000 {
        let (direction, targets) = if round % 2 == 0 {
            (
                Direction::SipToRipt,
                vec![Target::ript("t1"), Target::ript("t2")],
            )
        } else {
            (
                Direction::RiptToSip,
                vec![Target::sip("p1"), Target::sip("p2")],
            )
        };
        let mut now = origin();
        let mut call = Call::new("fuzz", direction, targets, now, 0).unwrap();
        let mut log = Vec::new();
        for step in 0..(5 + next(20)) {
            now += Duration::from_millis(next(40_000));
            let wall = i64::try_from(step).unwrap();
            let status = [100, 180, 183, 200, 408, 486, 487, 503, 603, 699, 700][next(11) as usize];
            let _ = match next(6) {
                0 => call.handle_sip(
                    now,
                    wall,
                    match next(8) {
                        0 => SipInput::Invite {
                            has_sdp: next(2) == 0,
                        },
                        1 => SipInput::Provisional {
                            status,
                            has_sdp: next(2) == 0,
                        },
                        2 => SipInput::Answered { has_sdp: true },
                        3 => SipInput::Failed { status },
                        4 => SipInput::Bye,
                        5 => SipInput::Cancel,
                        6 => SipInput::Hold {
                            direction: dirs[next(3) as usize],
                        },
                        _ => SipInput::SessionRefreshed,
                    },
                ),
                1 | 2 => call.handle_ript(
                    now,
                    wall,
                    match next(5) {
                        0 => RiptInput::Started,
                        1 => RiptInput::Refused {
                            http_status: [403, 404, 500, 503][next(4) as usize],
                            reason: None,
                        },
                        2 => RiptInput::LegLost,
                        3 => RiptInput::Hold {
                            direction: dirs[next(3) as usize],
                        },
                        _ => RiptInput::Event {
                            kind: kinds[next(kinds.len() as u64) as usize].clone(),
                            reason: None,
                        },
                    },
                ),
                3 => {
                    if next(4) == 0 {
                        call.handle_hangup(now, wall)
                    } else {
                        Ok(())
                    }
                }
                _ => {
                    if let Some(t) = call.poll_timeout() {
                        call.handle_timeout(t.max(now), wall);
                    }
                    Ok(())
                }
            };
            while let Some(a) = call.poll_action() {
                log.push(a);
            }
        }
        let cdrs = log.iter().filter(|a| matches!(a, Action::Cdr(_))).count();
        let dones = log.iter().filter(|a| **a == Action::Done).count();
        assert!(cdrs <= 1 && dones == cdrs, "round {round}: {log:?}");
        if dones == 1 {
            assert_eq!(log.last(), Some(&Action::Done), "round {round}: {log:?}");
            assert!(call.is_done());
        }
        // Persist seqs increase by one.
        let seqs: Vec<u64> = log
            .iter()
            .filter_map(|a| match a {
                Action::Persist(s) => Some(s.seq),
                _ => None,
            })
            .collect();
        assert!(seqs.iter().enumerate().all(|(i, s)| *s == i as u64));
    }
}
