//! Domain values of one call: ids, directions, route targets, and the records the call hands
//! to the shell ([`Snapshot`] to persist, [`CdrRecord`] to write once at the end).

use ript_proto::model::Reason;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The gateway's id of a call (the key its snapshot and CDR are stored under).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallId(pub String);

impl CallId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for CallId {
    fn from(s: &str) -> Self {
        CallId(s.to_owned())
    }
}

impl From<String> for CallId {
    fn from(s: String) -> Self {
        CallId(s)
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which leg is inbound (ARCHITECTURE §6: direction is relative to the gateway).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// An INVITE arrived from a SIP peer; we are the RIPT client and create the call on a
    /// RIPT server (`POST {tg}/calls`). SIP leg inbound (UAS), RIPT leg outbound (client).
    SipToRipt,
    /// A RIPT call arrived on our RIPT server; we send an INVITE to a SIP peer. RIPT leg
    /// inbound (server), SIP leg outbound (UAC).
    RiptToSip,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SipToRipt => "sip-to-ript",
            Direction::RiptToSip => "ript-to-sip",
        }
    }

    /// The kind of route target the outbound leg goes to.
    pub fn outbound_kind(self) -> TargetKind {
        match self {
            Direction::SipToRipt => TargetKind::Ript,
            Direction::RiptToSip => TargetKind::Sip,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of peer a route [`Target`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// A SIP peer or trunk (the shell resolves it to a transport target).
    Sip,
    /// A RIPT trunk group (the shell resolves it to a TG URI, handler and token).
    Ript,
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetKind::Sip => "sip",
            TargetKind::Ript => "ript",
        })
    }
}

/// One route target, opaque to the core: it is tried in the order given and echoed back in
/// [`SipAction::Invite`](crate::SipAction::Invite) / [`RiptAction::Start`](crate::RiptAction::Start),
/// snapshots and CDRs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Target {
    pub id: String,
    pub kind: TargetKind,
}

impl Target {
    pub fn sip(id: impl Into<String>) -> Self {
        Target {
            id: id.into(),
            kind: TargetKind::Sip,
        }
    }

    pub fn ript(id: impl Into<String>) -> Self {
        Target {
            id: id.into(),
            kind: TargetKind::Ript,
        }
    }
}

/// The media direction of a hold change, as offered by the leg that changed it (RFC 3264
/// §8.4: `sendonly` puts the other side on hold, `inactive` both). The B2BUA relays it to the
/// other leg unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaDirection {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl MediaDirection {
    /// The SDP attribute name (`sendrecv`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            MediaDirection::SendRecv => "sendrecv",
            MediaDirection::SendOnly => "sendonly",
            MediaDirection::RecvOnly => "recvonly",
            MediaDirection::Inactive => "inactive",
        }
    }
}

impl fmt::Display for MediaDirection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who ended a call (for the CDR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    /// The SIP leg: a BYE or CANCEL from the SIP peer, or the final response of our INVITE.
    SipLeg,
    /// The RIPT leg: an event, a refusal or the loss of the call.
    RiptLeg,
    /// An operator through the admin API ([`Call::handle_hangup`](crate::Call::handle_hangup)).
    Admin,
    /// The gateway itself: no route target at all.
    Gateway,
}

/// The state of a call as the store keeps it: written on every change
/// ([`Action::Persist`](crate::Action::Persist)) so another instance can see (and later take
/// over) the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: CallId,
    /// Increases by one with every snapshot of this call: a store keeps the highest.
    pub seq: u64,
    /// [`CallState::name`](crate::CallState::name) of the call's state.
    pub state: String,
    pub direction: Direction,
    /// The route target of the current (or last) outbound attempt.
    pub target: Option<Target>,
    /// How many targets were tried so far (1 for the first attempt).
    pub attempts: u32,
    /// Wall clock (Unix-epoch ms) when the call was created.
    pub started_at_ms: i64,
    /// Wall clock when both legs were answered.
    pub answered_at_ms: Option<i64>,
    /// The media direction last relayed by a hold change.
    pub media: MediaDirection,
}

/// The call detail record, emitted exactly once, right before [`Action::Done`](crate::Action::Done).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CdrRecord {
    pub id: CallId,
    pub direction: Direction,
    /// The route target of the last outbound attempt (`None`: there was none).
    pub target: Option<Target>,
    /// How many targets were tried.
    pub attempts: u32,
    /// Wall clock (Unix-epoch ms) when the call was created.
    pub started_at_ms: i64,
    /// When the caller was connected (`None` for calls that were never answered end to end).
    pub answered_at_ms: Option<i64>,
    pub ended_at_ms: i64,
    /// The final status of the SIP leg's INVITE (sent on an inbound leg, received on an
    /// outbound one; 200 for answered calls). `None` when the SIP leg never got one.
    pub sip_status: Option<u16>,
    /// The RIPT `reason` of the call's end (sent or received).
    pub ript_reason: Option<Reason>,
    /// The CDR/metrics bucket, one of [`crate::verdict::bucket`].
    pub bucket: &'static str,
    pub ended_by: EndedBy,
}
