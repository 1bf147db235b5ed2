//! Sans-IO B2BUA core: one [`Call`] per call maps a SIP leg to a RIPT leg.
//!
//! Nothing here opens a socket, spawns a task, reads a clock or draws randomness: monotonic
//! time comes in as `now: Instant`, wall-clock time as `wall_ms` (Unix-epoch milliseconds),
//! and the outputs are [`Action`]s the shell carries out. SDP bodies and media stay in the
//! shell; the core only knows whether a message carried SDP and, for hold, the media
//! direction.
//!
//! # Directions and legs
//! * [`Direction::SipToRipt`]: an INVITE arrived ([`SipInput::Invite`]); the core creates
//!   the call on each RIPT target in turn ([`RiptAction::Start`]) as the RIPT client.
//! * [`Direction::RiptToSip`]: a RIPT call arrived on our server ([`RiptInput::Started`]);
//!   the core sends an INVITE to each SIP target in turn ([`SipAction::Invite`]).
//!
//! # Contract with the shell (the per-call task in the binary)
//! * Build the call with [`Call::new`] and the route targets, then feed it what the legs
//!   report through [`Call::handle_sip`], [`Call::handle_ript`], the admin API's
//!   [`Call::handle_hangup`] and [`Call::handle_timeout`]. After every input drain
//!   [`Call::poll_action`] until `None`, in order, then re-arm one timer to
//!   [`Call::poll_timeout`] (mostly `None`: the UA and the RIPT machines own their timers).
//! * Actions of one input come in this order: leg orders ([`Action::Sip`],
//!   [`Action::Ript`]), then [`Action::Persist`] when the snapshot changed, then — once per
//!   call — [`Action::Cdr`] and [`Action::Done`]. After `Done` drop the call (and any leg
//!   still open); every later input returns [`Error::Ended`].
//! * An input the state does not allow is ignored and returns an [`Error`]: category
//!   [`Category::Peer`] for a peer's misbehaviour (log it), [`Category::Misuse`] for a
//!   shell bug. The machine never panics.
//! * A new `Invite`/`Start` action means the previous outbound attempt is over (it failed);
//!   only one outbound attempt exists at a time.
//! * Leg-local matters never reach the core: 100 Trying (the INVITE server transaction sends
//!   it), PRACK, session refreshes, RIPT pings, migrations, media byways.
//!
//! # Mapping (ript-profile §5), recorded in docs/protocol.md
//! Progress: RIPT `proceeding` ↔ 100 Trying (both already implied: no message either way);
//! RIPT `alerting` → 180 (or 183 with SDP, see [`Call::with_early_media`]); SIP 180 or any
//! 18x with SDP → `alerting`, other 18x → `proceeding` (nothing sent: a RIPT call is
//! `proceeding` from its creation). `answered` ↔ 200. Finals: [`Verdict`]. CANCEL or BYE
//! from the caller before the answer → `end` (reason 487); RIPT `end` before the answer →
//! CANCEL of our INVITE, or 487 to the SIP caller. BYE ↔ `end` after the answer.

mod call;
mod error;
mod types;
pub mod verdict;

pub use call::{
    ADMIN_HANGUP, Action, CONNECTION_LOST, Call, CallState, END_GUARD, RiptAction, RiptInput,
    SipAction, SipInput,
};
pub use error::{Category, Error};
pub use types::{
    CallId, CdrRecord, Direction, EndedBy, MediaDirection, Snapshot, Target, TargetKind,
};
pub use verdict::Verdict;

#[cfg(test)]
mod scenarios;
