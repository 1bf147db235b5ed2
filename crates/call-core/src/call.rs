//! The [`Call`] machine: one per call, mapping the SIP leg to the RIPT leg (a B2BUA core).
//!
//! See the crate docs for the contract with the shell; the signaling map (ript-profile §5)
//! is in [`crate::verdict`] for finals and in the handlers below for progress.

use crate::error::Error;
use crate::types::{CallId, CdrRecord, Direction, EndedBy, MediaDirection, Snapshot, Target};
use crate::verdict::{Verdict, bucket, reason_phrase};
use ript_proto::events::EventKind;
use ript_proto::model::Reason;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long a call that is over waits for its outbound leg to confirm the teardown (the
/// outcome of a cancelled INVITE, or the creation of a RIPT call still in flight) before it
/// finishes anyway: 64·T1 with RFC 3261's default T1 (Timer B). The UA and the RIPT client
/// report much sooner; this only bounds a shell that never does.
pub const END_GUARD: Duration = Duration::from_secs(32);

/// Reason text of an operator's hang-up ([`Call::handle_hangup`]).
pub const ADMIN_HANGUP: &str = "administrative hangup";
/// Reason text when a leg's connection is gone ([`RiptInput::LegLost`]).
pub const CONNECTION_LOST: &str = "connection lost";

/// What the shell's SIP leg (a high-level UA, `sip-ua`) reports. SDP bodies stay in the
/// shell; the core only learns whether a message carried one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipInput {
    /// A new INVITE from a SIP peer (starts a [`Direction::SipToRipt`] call). The UA has
    /// already sent 100 Trying.
    Invite { has_sdp: bool },
    /// A provisional response (101–199) to our INVITE ([`Direction::RiptToSip`]).
    Provisional { status: u16, has_sdp: bool },
    /// A 2xx to our INVITE ([`Direction::RiptToSip`]).
    Answered { has_sdp: bool },
    /// A final non-2xx (300–699) to our INVITE ([`Direction::RiptToSip`]), including the
    /// UA's synthetic 408 (timeout) and 503 (transport failure, RFC 3261 §8.1.3.1).
    Failed { status: u16 },
    /// The SIP peer sent BYE (the UA answered it).
    Bye,
    /// The SIP peer's CANCEL ended its INVITE ([`Direction::SipToRipt`]): the UA has already
    /// answered the INVITE 487. A CANCEL after our 2xx does nothing in SIP (RFC 3261 §9.2)
    /// and must not be reported; if it is reported after the core asked for
    /// [`SipAction::Accept`], the CANCEL won the race and the accept failed.
    Cancel,
    /// A re-INVITE or UPDATE from the SIP peer changed the media direction (hold/resume).
    /// The UA answers the offer itself.
    Hold { direction: MediaDirection },
    /// A session refresh (RFC 4028) went through: local to the SIP leg, ignored.
    SessionRefreshed,
}

impl SipInput {
    fn name(&self) -> &'static str {
        match self {
            SipInput::Invite { .. } => "sip invite",
            SipInput::Provisional { .. } => "sip provisional",
            SipInput::Answered { .. } => "sip answered",
            SipInput::Failed { .. } => "sip failed",
            SipInput::Bye => "sip bye",
            SipInput::Cancel => "sip cancel",
            SipInput::Hold { .. } => "sip hold",
            SipInput::SessionRefreshed => "sip session refresh",
        }
    }
}

/// What the shell's RIPT leg (`ript-h3` client or server with `ript-proto`'s call machines)
/// reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RiptInput {
    /// The RIPT call exists: our `POST {tg}/calls` got its 2xx ([`Direction::SipToRipt`]),
    /// or a client created a call on our server ([`Direction::RiptToSip`], starts the call).
    Started,
    /// Our `POST {tg}/calls` was refused with this HTTP status ([`Direction::SipToRipt`]);
    /// `reason` is e.g. the problem's title. A request that got no response at all is
    /// [`RiptInput::LegLost`].
    Refused {
        http_status: u16,
        reason: Option<String>,
    },
    /// A state event from the peer (ript-profile §5). Events local to the RIPT leg
    /// (`migrate`, `ping`, `pong`, `media-panic`, `handler-changed`) are accepted and ignored.
    Event {
        kind: EventKind,
        reason: Option<Reason>,
    },
    /// The RIPT peer asked for a new directive that changes the media direction (hold).
    Hold { direction: MediaDirection },
    /// The RIPT leg is gone beyond recovery (the client's migrations failed, the server's
    /// 30 s without a signaling byway ran out, or the request creating the call failed).
    LegLost,
}

/// An order to the SIP leg's UA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipAction {
    /// A provisional response to the inbound INVITE; `with_sdp`: carry the answer (early media).
    Provisional { status: u16, with_sdp: bool },
    /// 200 OK to the inbound INVITE (with the shell's SDP).
    Accept,
    /// A final non-2xx to the inbound INVITE.
    Reject {
        status: u16,
        reason_phrase: &'static str,
    },
    /// Send an INVITE to this target (outbound leg; any earlier attempt is over).
    Invite { target: Target },
    /// CANCEL our pending INVITE (the UA waits for a provisional first, RFC 3261 §9.1, and
    /// ACKs and BYEs a 2xx that crosses it). Report its outcome as `Failed`/`Answered`.
    Cancel,
    /// End the established dialog.
    Bye,
    /// Send a re-INVITE offering this media direction.
    Hold { direction: MediaDirection },
}

/// An order to the RIPT leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RiptAction {
    /// Create the call on this target, `POST {tg}/calls` (client role; any earlier attempt
    /// is over).
    Start { target: Target },
    /// Server role: send this state event (`alerting`, `answered`, `declined`, `failed`,
    /// `noanswer`) with `ServerCommand::State`. Never `end`: see [`RiptAction::End`].
    State {
        kind: EventKind,
        reason: Option<Reason>,
    },
    /// End the call: `ClientCall::end` in the client role, `ServerCommand::State(End, …)` in
    /// the server role.
    End { reason: Option<Reason> },
    /// Ask for a new directive with this media direction (`POST {call}`).
    Hold { direction: MediaDirection },
}

/// One output of the call; drain with [`Call::poll_action`] after every input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Sip(SipAction),
    Ript(RiptAction),
    /// Write this snapshot (after the leg actions of the same input).
    Persist(Snapshot),
    /// The call's record, exactly once, right before [`Action::Done`].
    Cdr(CdrRecord),
    /// The last action: drop the call; every later input returns [`Error::Ended`].
    Done,
}

/// The state of a call; names are what [`Snapshot::state`] stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallState {
    /// Created; waiting for the inbound leg (SIP INVITE or RIPT call creation).
    Idle,
    /// An outbound attempt was sent and has not progressed yet.
    Trying,
    /// The outbound leg is proceeding (RIPT call created or `proceeding`; SIP 1xx without
    /// SDP other than 180).
    Proceeding,
    /// The outbound leg is alerting (RIPT `alerting`; SIP 180 or an 18x with SDP).
    Alerting,
    /// Both legs answered.
    Answered,
    /// The call is over; the outbound leg has not confirmed the teardown yet (a cancelled
    /// INVITE without its final response, or a RIPT call still being created).
    Cancelling,
    /// Finished: CDR and [`Action::Done`] emitted.
    Ended,
}

impl CallState {
    pub fn name(self) -> &'static str {
        match self {
            CallState::Idle => "idle",
            CallState::Trying => "trying",
            CallState::Proceeding => "proceeding",
            CallState::Alerting => "alerting",
            CallState::Answered => "answered",
            CallState::Cancelling => "cancelling",
            CallState::Ended => "ended",
        }
    }

    /// An outbound attempt is in progress and nothing is answered yet.
    fn is_setup(self) -> bool {
        matches!(
            self,
            CallState::Trying | CallState::Proceeding | CallState::Alerting
        )
    }
}

/// How the call ended, decided when it did; becomes the CDR.
#[derive(Debug, Clone)]
struct Outcome {
    sip_status: Option<u16>,
    ript_reason: Option<Reason>,
    bucket: &'static str,
    ended_by: EndedBy,
}

impl Outcome {
    fn of(v: Verdict, ended_by: EndedBy) -> Self {
        Outcome {
            sip_status: Some(v.sip_status),
            ript_reason: v.ript_reason,
            bucket: v.bucket,
            ended_by,
        }
    }

    /// An answered call that ended with a BYE or an `end`.
    fn answered(ript_reason: Option<Reason>, ended_by: EndedBy) -> Self {
        Outcome {
            sip_status: Some(200),
            ript_reason,
            bucket: bucket::ANSWERED,
            ended_by,
        }
    }
}

/// One call: a SIP leg and a RIPT leg, one of them inbound, the other tried over the route
/// targets in order. Sans-IO: every input takes `now` and `wall_ms`; outputs are drained
/// with [`Call::poll_action`] and the one deadline read with [`Call::poll_timeout`].
#[derive(Debug)]
pub struct Call {
    id: CallId,
    direction: Direction,
    targets: Vec<Target>,
    /// Targets tried so far; the current one is `targets[attempts - 1]`.
    attempts: u32,
    state: CallState,
    /// The current RIPT outbound call exists (SIP-to-RIPT: its creation succeeded).
    outbound_created: bool,
    /// The inbound leg was told `alerting` / 18x (never repeated, not even after failover).
    alerted: bool,
    inbound_sdp: bool,
    early_media: bool,
    media: MediaDirection,
    started_at_ms: i64,
    answered_at_ms: Option<i64>,
    outcome: Option<Outcome>,
    guard: Option<Instant>,
    last_now: Instant,
    persisted: Option<Snapshot>,
    actions: VecDeque<Action>,
    done: bool,
}

impl Call {
    /// A new call in [`CallState::Idle`]; its first action is a [`Action::Persist`].
    /// `targets` are tried in order and must all be of the outbound leg's kind
    /// ([`Direction::outbound_kind`]); an empty list makes the call fail with "no route"
    /// once the inbound leg starts.
    pub fn new(
        id: impl Into<CallId>,
        direction: Direction,
        targets: Vec<Target>,
        now: Instant,
        wall_ms: i64,
    ) -> Result<Call, Error> {
        let expected = direction.outbound_kind();
        if let Some(index) = targets.iter().position(|t| t.kind != expected) {
            return Err(Error::TargetKind { index, expected });
        }
        let mut call = Call {
            id: id.into(),
            direction,
            targets,
            attempts: 0,
            state: CallState::Idle,
            outbound_created: false,
            alerted: false,
            inbound_sdp: false,
            early_media: false,
            media: MediaDirection::SendRecv,
            started_at_ms: wall_ms,
            answered_at_ms: None,
            outcome: None,
            guard: None,
            last_now: now,
            persisted: None,
            actions: VecDeque::new(),
            done: false,
        };
        call.persist_if_changed();
        Ok(call)
    }

    /// SIP-to-RIPT only: relay a RIPT `alerting` as 183 with SDP (early media from the RIPT
    /// side) instead of 180 Ringing, when the INVITE carried an offer (without one, our SDP
    /// in a 183 would be an offer, which needs 100rel: the core does not go there). Off by
    /// default: the caller then plays its own ringback.
    pub fn with_early_media(mut self, on: bool) -> Self {
        self.early_media = on;
        self
    }

    pub fn id(&self) -> &CallId {
        &self.id
    }

    pub fn direction(&self) -> Direction {
        self.direction
    }

    pub fn state(&self) -> CallState {
        self.state
    }

    /// The target of the current (or last) outbound attempt.
    pub fn target(&self) -> Option<&Target> {
        let i = usize::try_from(self.attempts.checked_sub(1)?).ok()?;
        self.targets.get(i)
    }

    /// How many targets were tried so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The media direction last relayed by a hold change.
    pub fn media(&self) -> MediaDirection {
        self.media
    }

    /// True once [`Action::Done`] was emitted.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The call's current snapshot (its `seq` is that of the last one emitted).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            id: self.id.clone(),
            seq: self.persisted.as_ref().map_or(0, |s| s.seq),
            state: self.state.name().to_owned(),
            direction: self.direction,
            target: self.target().cloned(),
            attempts: self.attempts,
            started_at_ms: self.started_at_ms,
            answered_at_ms: self.answered_at_ms,
            media: self.media,
        }
    }

    // -----------------------------------------------------------------------------------
    // Inputs

    /// An event of the SIP leg. An error means the input was ignored (nothing changed).
    pub fn handle_sip(&mut self, now: Instant, wall_ms: i64, input: SipInput) -> Result<(), Error> {
        let now = self.enter(now)?;
        let r = match self.direction {
            Direction::SipToRipt => self.sip_inbound(now, input),
            Direction::RiptToSip => self.sip_outbound(wall_ms, input),
        };
        self.leave(wall_ms);
        r
    }

    /// An event of the RIPT leg. An error means the input was ignored (nothing changed).
    pub fn handle_ript(
        &mut self,
        now: Instant,
        wall_ms: i64,
        input: RiptInput,
    ) -> Result<(), Error> {
        let now = self.enter(now)?;
        let r = match self.direction {
            Direction::SipToRipt => self.ript_outbound(wall_ms, input),
            Direction::RiptToSip => self.ript_inbound(now, input),
        };
        self.leave(wall_ms);
        r
    }

    /// An operator hangs the call up (admin API). Before the answer the inbound leg is
    /// refused with 487 (SIP) or ended with `end` (RIPT) and the outbound attempt cancelled;
    /// after it, BYE on SIP and `end` on RIPT. During [`CallState::Cancelling`] it does
    /// nothing (the call is already over).
    pub fn handle_hangup(&mut self, now: Instant, wall_ms: i64) -> Result<(), Error> {
        let now = self.enter(now)?;
        match self.state {
            CallState::Idle => self.finish(Outcome {
                sip_status: None,
                ript_reason: None,
                bucket: bucket::CANCELLED,
                ended_by: EndedBy::Admin,
            }),
            s if s.is_setup() => {
                let reason = Some(Reason::sip(487, ADMIN_HANGUP));
                match self.direction {
                    Direction::SipToRipt => self.sip(SipAction::Reject {
                        status: 487,
                        reason_phrase: reason_phrase(487),
                    }),
                    Direction::RiptToSip => self.ript(RiptAction::End {
                        reason: reason.clone(),
                    }),
                }
                self.abandon(
                    now,
                    Outcome {
                        sip_status: Some(487),
                        ript_reason: reason,
                        bucket: bucket::CANCELLED,
                        ended_by: EndedBy::Admin,
                    },
                );
            }
            CallState::Answered => {
                let reason = Some(Reason {
                    sip: None,
                    text: Some(ADMIN_HANGUP.to_owned()),
                });
                self.sip(SipAction::Bye);
                self.ript(RiptAction::End {
                    reason: reason.clone(),
                });
                self.finish(Outcome::answered(reason, EndedBy::Admin));
            }
            _ => {}
        }
        self.leave(wall_ms);
        Ok(())
    }

    /// The deadline of [`Call::poll_timeout`] passed (a spurious call does nothing).
    pub fn handle_timeout(&mut self, now: Instant, wall_ms: i64) {
        let Ok(now) = self.enter(now) else {
            return;
        };
        if self.state == CallState::Cancelling && self.guard.is_some_and(|g| now >= g) {
            // The outbound leg never confirmed; give up on it (the shell drops it).
            self.finish_as_decided();
        }
        self.leave(wall_ms);
    }

    // -----------------------------------------------------------------------------------
    // Outputs

    /// The next action; drain until `None` after every input.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        let next = self.actions.pop_front();
        if next.is_none() {
            // Drained: an idle call keeps no room for actions (it may last for hours, next
            // to thousands of others).
            self.actions.shrink_to_fit();
        }
        next
    }

    /// When to call [`Call::handle_timeout`]: only while [`CallState::Cancelling`] (the
    /// [`END_GUARD`]); the UA and the RIPT machines own every other timer.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == CallState::Cancelling {
            self.guard
        } else {
            None
        }
    }

    // -----------------------------------------------------------------------------------
    // SIP leg inbound (SIP-to-RIPT: we are the UAS)

    fn sip_inbound(&mut self, now: Instant, input: SipInput) -> Result<(), Error> {
        let name = input.name();
        match input {
            SipInput::Invite { has_sdp } => {
                if self.state != CallState::Idle {
                    return Err(self.out_of_order(name));
                }
                self.inbound_sdp = has_sdp;
                if !self.start_next() {
                    let v = Verdict::no_route();
                    self.tell_inbound_final(&v);
                    self.finish(Outcome::of(v, EndedBy::Gateway));
                }
                Ok(())
            }
            SipInput::Bye | SipInput::Cancel => match self.state {
                CallState::Idle | CallState::Ended => Err(self.out_of_order(name)),
                // ript-profile §5: CANCEL before the answer ↔ `end`. RFC 3261 §15 lets a
                // caller BYE an early dialog too: the same for us.
                s if s.is_setup() => {
                    let v = Verdict::cancelled();
                    self.abandon(now, Outcome::of(v, EndedBy::SipLeg));
                    Ok(())
                }
                CallState::Answered if input == SipInput::Bye => {
                    self.ript(RiptAction::End { reason: None });
                    self.finish(Outcome::answered(None, EndedBy::SipLeg));
                    Ok(())
                }
                CallState::Answered => {
                    // The CANCEL reached the UA before our accept did: the caller got 487,
                    // never our 200, so the RIPT leg that answered is ended.
                    let v = Verdict::cancelled();
                    self.ript(RiptAction::End {
                        reason: v.ript_reason.clone(),
                    });
                    self.answered_at_ms = None;
                    self.finish(Outcome::of(v, EndedBy::SipLeg));
                    Ok(())
                }
                _ => Ok(()),
            },
            SipInput::Hold { direction } => self.relay_hold(name, direction, true),
            SipInput::SessionRefreshed => Ok(()),
            SipInput::Provisional { .. } | SipInput::Answered { .. } | SipInput::Failed { .. } => {
                Err(self.wrong_direction(name))
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // SIP leg outbound (RIPT-to-SIP: we are the UAC)

    fn sip_outbound(&mut self, wall_ms: i64, input: SipInput) -> Result<(), Error> {
        let name = input.name();
        match input {
            SipInput::Invite { .. } | SipInput::Cancel => Err(self.wrong_direction(name)),
            SipInput::Provisional { status, has_sdp } => {
                if !(100..=199).contains(&status) {
                    return Err(Error::BadStatus {
                        input: name,
                        status,
                    });
                }
                match self.state {
                    s if s.is_setup() => {
                        // ript-profile §5: 180, or 183 with SDP (early media) → alerting;
                        // 183 without SDP (and other 1xx) → proceeding, which the RIPT call
                        // already is from its creation (docs/protocol.md), so nothing is sent.
                        if status == 180 || has_sdp {
                            self.state = CallState::Alerting;
                            self.alert_inbound();
                        } else if s == CallState::Trying {
                            self.state = CallState::Proceeding;
                        }
                        Ok(())
                    }
                    CallState::Cancelling => Ok(()),
                    CallState::Answered => Err(self.unexpected(name)),
                    _ => Err(self.out_of_order(name)),
                }
            }
            SipInput::Answered { .. } => match self.state {
                s if s.is_setup() => {
                    // ript-profile §5: 200 OK ↔ answered.
                    self.state = CallState::Answered;
                    self.answered_at_ms = Some(wall_ms);
                    self.ript(RiptAction::State {
                        kind: EventKind::Answered,
                        reason: None,
                    });
                    Ok(())
                }
                // A 2xx retransmission.
                CallState::Answered => Ok(()),
                CallState::Cancelling => {
                    // The 2xx crossed our CANCEL (RFC 3261 §9.1): end that dialog.
                    self.sip(SipAction::Bye);
                    self.set_sip_status(200);
                    self.finish_as_decided();
                    Ok(())
                }
                _ => Err(self.out_of_order(name)),
            },
            SipInput::Failed { status } => {
                if !(300..=699).contains(&status) {
                    return Err(Error::BadStatus {
                        input: name,
                        status,
                    });
                }
                match self.state {
                    s if s.is_setup() => {
                        self.attempt_failed(Verdict::from_sip(status), EndedBy::SipLeg);
                        Ok(())
                    }
                    CallState::Cancelling => {
                        self.set_sip_status(status);
                        self.finish_as_decided();
                        Ok(())
                    }
                    CallState::Answered => Err(self.unexpected(name)),
                    _ => Err(self.out_of_order(name)),
                }
            }
            SipInput::Bye => match self.state {
                CallState::Answered => {
                    // ript-profile §5: BYE ↔ end.
                    self.ript(RiptAction::End { reason: None });
                    self.finish(Outcome::answered(None, EndedBy::SipLeg));
                    Ok(())
                }
                CallState::Cancelling => Ok(()),
                // RFC 3261 §15: a callee never BYEs an early dialog.
                s if s.is_setup() => Err(self.unexpected(name)),
                _ => Err(self.out_of_order(name)),
            },
            SipInput::Hold { direction } => self.relay_hold(name, direction, true),
            SipInput::SessionRefreshed => Ok(()),
        }
    }

    // -----------------------------------------------------------------------------------
    // RIPT leg outbound (SIP-to-RIPT: we are the RIPT client)

    fn ript_outbound(&mut self, wall_ms: i64, input: RiptInput) -> Result<(), Error> {
        match input {
            RiptInput::Started => match self.state {
                CallState::Trying => {
                    // docs/protocol.md: a RIPT call is `proceeding` from its creation; the
                    // UA already sent 100 Trying, so SIP hears nothing.
                    self.outbound_created = true;
                    self.state = CallState::Proceeding;
                    Ok(())
                }
                CallState::Proceeding | CallState::Alerting | CallState::Answered => Ok(()),
                CallState::Cancelling => {
                    self.end_created_outbound();
                    Ok(())
                }
                _ => Err(self.out_of_order("ript started")),
            },
            RiptInput::Refused {
                http_status,
                reason,
            } => match self.state {
                s if s.is_setup() && !self.outbound_created => {
                    let v = Verdict::from_refusal(http_status, reason.as_deref());
                    self.attempt_failed(v, EndedBy::RiptLeg);
                    Ok(())
                }
                CallState::Cancelling if !self.outbound_created => {
                    self.finish_as_decided();
                    Ok(())
                }
                _ => Err(self.out_of_order("ript refused")),
            },
            RiptInput::LegLost => match self.state {
                s if s.is_setup() => {
                    self.attempt_failed(Verdict::leg_lost(), EndedBy::RiptLeg);
                    Ok(())
                }
                CallState::Answered => {
                    self.sip(SipAction::Bye);
                    self.finish(Outcome::answered(
                        Some(Reason {
                            sip: None,
                            text: Some(CONNECTION_LOST.to_owned()),
                        }),
                        EndedBy::RiptLeg,
                    ));
                    Ok(())
                }
                CallState::Cancelling => {
                    self.finish_as_decided();
                    Ok(())
                }
                _ => Err(self.out_of_order("ript leg lost")),
            },
            RiptInput::Hold { direction } => self.relay_hold("ript hold", direction, false),
            RiptInput::Event { kind, reason } => self.server_event(wall_ms, kind, reason),
        }
    }

    /// A state event from the RIPT server (we are its client).
    fn server_event(
        &mut self,
        wall_ms: i64,
        kind: EventKind,
        reason: Option<Reason>,
    ) -> Result<(), Error> {
        let name = event_input_name(&kind);
        match kind {
            // ript-profile §5, §7: local to the RIPT leg.
            EventKind::Migrate
            | EventKind::Ping
            | EventKind::Pong
            | EventKind::MediaPanic
            | EventKind::HandlerChanged => return Ok(()),
            EventKind::Other(name) => return Err(Error::UnknownEvent { name }),
            _ => {}
        }
        if self.state == CallState::Idle {
            return Err(self.out_of_order(name));
        }
        match kind {
            EventKind::Proceeding | EventKind::Alerting | EventKind::Answered => match self.state {
                s if s.is_setup() => {
                    self.outbound_created = true;
                    match kind {
                        // ript-profile §5: proceeding ↔ 100 Trying, which the UA sent.
                        EventKind::Proceeding if s == CallState::Trying => {
                            self.state = CallState::Proceeding;
                        }
                        EventKind::Proceeding => {}
                        EventKind::Alerting => {
                            self.state = CallState::Alerting;
                            self.alert_inbound();
                        }
                        _ => {
                            self.state = CallState::Answered;
                            self.answered_at_ms = Some(wall_ms);
                            self.sip(SipAction::Accept);
                        }
                    }
                    Ok(())
                }
                // ript-profile §5: a new reverse byway first receives the current state.
                CallState::Answered => Ok(()),
                CallState::Cancelling => {
                    // The call exists (and may have answered) after the caller left: end it.
                    self.end_created_outbound();
                    Ok(())
                }
                _ => Err(self.unexpected(name)),
            },
            _ => match self.state {
                s if s.is_setup() => {
                    if let Some(v) = Verdict::from_ript(&kind, reason.as_ref()) {
                        self.outbound_created = true;
                        self.attempt_failed(v, EndedBy::RiptLeg);
                    }
                    Ok(())
                }
                CallState::Answered if kind == EventKind::End => {
                    // ript-profile §5: end ↔ BYE.
                    self.sip(SipAction::Bye);
                    self.finish(Outcome::answered(reason, EndedBy::RiptLeg));
                    Ok(())
                }
                CallState::Cancelling => {
                    // The server ended the call itself: nothing left to end.
                    self.finish_as_decided();
                    Ok(())
                }
                _ => Err(self.unexpected(name)),
            },
        }
    }

    // -----------------------------------------------------------------------------------
    // RIPT leg inbound (RIPT-to-SIP: we are the RIPT server)

    fn ript_inbound(&mut self, now: Instant, input: RiptInput) -> Result<(), Error> {
        match input {
            RiptInput::Started => {
                if self.state != CallState::Idle {
                    return Err(self.out_of_order("ript started"));
                }
                if !self.start_next() {
                    let v = Verdict::no_route();
                    self.tell_inbound_final(&v);
                    self.finish(Outcome::of(v, EndedBy::Gateway));
                }
                Ok(())
            }
            RiptInput::Refused { .. } => Err(self.wrong_direction("ript refused")),
            RiptInput::LegLost => self.inbound_ript_gone(
                now,
                "ript leg lost",
                Some(Reason {
                    sip: None,
                    text: Some(CONNECTION_LOST.to_owned()),
                }),
                bucket::FAILED,
            ),
            RiptInput::Hold { direction } => self.relay_hold("ript hold", direction, false),
            RiptInput::Event { kind, reason } => match kind {
                // ript-profile §5: end ↔ BYE, or CANCEL before the answer.
                EventKind::End => {
                    self.inbound_ript_gone(now, "ript end", reason, bucket::CANCELLED)
                }
                // `proceeding` from a client (ript-inbound) and pings stay in the RIPT leg.
                EventKind::Proceeding | EventKind::Ping => Ok(()),
                EventKind::Other(name) => Err(Error::UnknownEvent { name }),
                // ript-profile §9: server-only events from a client are ignored.
                _ => Err(self.unexpected(event_input_name(&kind))),
            },
        }
    }

    /// The RIPT client ended its call or lost it.
    fn inbound_ript_gone(
        &mut self,
        now: Instant,
        name: &'static str,
        reason: Option<Reason>,
        bucket_before_answer: &'static str,
    ) -> Result<(), Error> {
        match self.state {
            s if s.is_setup() => {
                self.abandon(
                    now,
                    Outcome {
                        sip_status: Some(487),
                        ript_reason: reason,
                        bucket: bucket_before_answer,
                        ended_by: EndedBy::RiptLeg,
                    },
                );
                Ok(())
            }
            CallState::Answered => {
                self.sip(SipAction::Bye);
                self.finish(Outcome::answered(reason, EndedBy::RiptLeg));
                Ok(())
            }
            CallState::Cancelling => Ok(()),
            _ => Err(self.out_of_order(name)),
        }
    }

    // -----------------------------------------------------------------------------------
    // Shared steps

    /// Starts the next outbound attempt; false when the targets ran out.
    fn start_next(&mut self) -> bool {
        let Some(target) = usize::try_from(self.attempts)
            .ok()
            .and_then(|i| self.targets.get(i))
            .cloned()
        else {
            return false;
        };
        self.attempts += 1;
        self.state = CallState::Trying;
        self.outbound_created = false;
        match self.direction {
            Direction::SipToRipt => self.ript(RiptAction::Start { target }),
            Direction::RiptToSip => self.sip(SipAction::Invite { target }),
        }
        true
    }

    /// The outbound attempt failed before any answer: the next target when the verdict
    /// allows it and one is left, else the inbound leg gets this (the last) failure.
    fn attempt_failed(&mut self, v: Verdict, ended_by: EndedBy) {
        if v.retryable && self.start_next() {
            return;
        }
        self.tell_inbound_final(&v);
        self.finish(Outcome::of(v, ended_by));
    }

    /// The inbound leg's final answer before any answer (ript-profile §5, both ways).
    fn tell_inbound_final(&mut self, v: &Verdict) {
        match self.direction {
            Direction::SipToRipt => self.sip(SipAction::Reject {
                status: v.sip_status,
                reason_phrase: reason_phrase(v.sip_status),
            }),
            Direction::RiptToSip if v.ript_event == EventKind::End => self.ript(RiptAction::End {
                reason: v.ript_reason.clone(),
            }),
            Direction::RiptToSip => self.ript(RiptAction::State {
                kind: v.ript_event.clone(),
                reason: v.ript_reason.clone(),
            }),
        }
    }

    /// ript-profile §5: alerting ↔ 180 Ringing, or 183 with SDP (early media). Once per call.
    fn alert_inbound(&mut self) {
        if self.alerted {
            return;
        }
        self.alerted = true;
        match self.direction {
            Direction::SipToRipt if self.early_media && self.inbound_sdp => {
                self.sip(SipAction::Provisional {
                    status: 183,
                    with_sdp: true,
                });
            }
            Direction::SipToRipt => self.sip(SipAction::Provisional {
                status: 180,
                with_sdp: false,
            }),
            Direction::RiptToSip => self.ript(RiptAction::State {
                kind: EventKind::Alerting,
                reason: None,
            }),
        }
    }

    /// The inbound leg (or an operator) ended the call before the answer: tear the outbound
    /// attempt down and finish, or wait in [`CallState::Cancelling`] for it to confirm.
    fn abandon(&mut self, now: Instant, outcome: Outcome) {
        let reason = outcome.ript_reason.clone();
        self.outcome = Some(outcome);
        match self.direction {
            Direction::SipToRipt if self.outbound_created => {
                self.ript(RiptAction::End { reason });
                self.finish_as_decided();
            }
            Direction::SipToRipt => {
                // The call creation is still in flight: it can be ended only once it exists.
                self.state = CallState::Cancelling;
                self.guard = Some(now + END_GUARD);
            }
            Direction::RiptToSip => {
                self.sip(SipAction::Cancel);
                self.state = CallState::Cancelling;
                self.guard = Some(now + END_GUARD);
            }
        }
    }

    /// SIP-to-RIPT in [`CallState::Cancelling`]: the RIPT call now exists; end it and finish.
    fn end_created_outbound(&mut self) {
        self.outbound_created = true;
        let reason = self.outcome.as_ref().and_then(|o| o.ript_reason.clone());
        self.ript(RiptAction::End { reason });
        self.finish_as_decided();
    }

    fn relay_hold(
        &mut self,
        name: &'static str,
        direction: MediaDirection,
        from_sip: bool,
    ) -> Result<(), Error> {
        if self.state != CallState::Answered {
            return Err(self.unexpected(name));
        }
        if direction == self.media {
            return Ok(());
        }
        self.media = direction;
        if from_sip {
            self.ript(RiptAction::Hold { direction });
        } else {
            self.sip(SipAction::Hold { direction });
        }
        Ok(())
    }

    fn set_sip_status(&mut self, status: u16) {
        if let Some(o) = self.outcome.as_mut() {
            o.sip_status = Some(status);
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        self.outcome = Some(outcome);
        self.finish_as_decided();
    }

    fn finish_as_decided(&mut self) {
        self.state = CallState::Ended;
        self.guard = None;
    }

    fn sip(&mut self, a: SipAction) {
        self.actions.push_back(Action::Sip(a));
    }

    fn ript(&mut self, a: RiptAction) {
        self.actions.push_back(Action::Ript(a));
    }

    fn out_of_order(&self, input: &'static str) -> Error {
        Error::OutOfOrder {
            input,
            state: self.state.name(),
        }
    }

    fn unexpected(&self, input: &'static str) -> Error {
        Error::Unexpected {
            input,
            state: self.state.name(),
        }
    }

    fn wrong_direction(&self, input: &'static str) -> Error {
        Error::WrongDirection {
            input,
            direction: self.direction,
        }
    }

    /// Every input starts here: refuse after `Done`; a `now` earlier than the last one
    /// counts as the last one.
    fn enter(&mut self, now: Instant) -> Result<Instant, Error> {
        if self.done {
            return Err(Error::Ended);
        }
        self.last_now = self.last_now.max(now);
        Ok(self.last_now)
    }

    /// Every input ends here: a snapshot if anything changed, and the CDR and `Done` once
    /// the call ended.
    fn leave(&mut self, wall_ms: i64) {
        self.persist_if_changed();
        if self.state != CallState::Ended || self.done {
            return;
        }
        let o = self.outcome.take().unwrap_or(Outcome {
            sip_status: None,
            ript_reason: None,
            bucket: bucket::FAILED,
            ended_by: EndedBy::Gateway,
        });
        let cdr = CdrRecord {
            id: self.id.clone(),
            direction: self.direction,
            target: self.target().cloned(),
            attempts: self.attempts,
            started_at_ms: self.started_at_ms,
            answered_at_ms: self.answered_at_ms,
            ended_at_ms: wall_ms,
            sip_status: o.sip_status,
            ript_reason: o.ript_reason,
            bucket: o.bucket,
            ended_by: o.ended_by,
        };
        self.actions.push_back(Action::Cdr(cdr));
        self.actions.push_back(Action::Done);
        self.done = true;
    }

    fn persist_if_changed(&mut self) {
        let mut s = self.snapshot();
        if let Some(last) = &self.persisted {
            if *last == s {
                return;
            }
            s.seq = last.seq + 1;
        }
        self.persisted = Some(s.clone());
        self.actions.push_back(Action::Persist(s));
    }
}

fn event_input_name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Proceeding => "ript proceeding",
        EventKind::Alerting => "ript alerting",
        EventKind::Answered => "ript answered",
        EventKind::Declined => "ript declined",
        EventKind::Failed => "ript failed",
        EventKind::Noanswer => "ript noanswer",
        EventKind::End => "ript end",
        EventKind::Migrate => "ript migrate",
        EventKind::Ping => "ript ping",
        EventKind::Pong => "ript pong",
        EventKind::MediaPanic => "ript media-panic",
        EventKind::HandlerChanged => "ript handler-changed",
        EventKind::Other(_) => "ript event",
    }
}
