use crate::types::{Direction, TargetKind};

/// Who is at fault for an [`Error`] (ARCHITECTURE §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Category {
    /// A peer sent something well-formed that is not allowed in the call's state (a
    /// provisional after the answer, a server-only RIPT event from a client, …).
    Peer,
    /// Our caller (the shell) used the API wrongly: an input of the other direction, an
    /// input before the call started or after [`Action::Done`](crate::Action::Done), a
    /// status outside the input's class, a target of the wrong kind.
    Misuse,
}

/// Every error of the call core. An input that returns an error changed nothing: no state,
/// no action (the machine never panics on any input sequence).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The call already emitted [`Action::Done`](crate::Action::Done); the shell should have
    /// dropped it.
    #[error("call has ended")]
    Ended,
    /// The input belongs to the other direction (e.g. a SIP INVITE for a call whose SIP leg is
    /// outbound).
    #[error("{input} is not an input of a {direction} call")]
    WrongDirection {
        input: &'static str,
        direction: Direction,
    },
    /// The shell delivered an input its own leg could not have produced yet (or again).
    #[error("{input} cannot arrive in state {state}")]
    OutOfOrder {
        input: &'static str,
        state: &'static str,
    },
    /// A peer's input that the call's state does not allow; it was ignored.
    #[error("{input} is not allowed in state {state}")]
    Unexpected {
        input: &'static str,
        state: &'static str,
    },
    /// A SIP status outside the class the input carries (a `Failed` with a 2xx, …).
    #[error("status {status} is not valid for {input}")]
    BadStatus { input: &'static str, status: u16 },
    /// A RIPT event name this profile does not know (ript-profile §9: logged and ignored).
    #[error("unknown ript event {name}")]
    UnknownEvent { name: String },
    /// A route target whose kind does not match the call's outbound leg.
    #[error("target {index} is not a {expected} target")]
    TargetKind { index: usize, expected: TargetKind },
}

impl Error {
    pub fn category(&self) -> Category {
        match self {
            Error::Unexpected { .. } | Error::UnknownEvent { .. } => Category::Peer,
            Error::Ended
            | Error::WrongDirection { .. }
            | Error::OutOfOrder { .. }
            | Error::BadStatus { .. }
            | Error::TargetKind { .. } => Category::Misuse,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_lowercase_without_period() {
        let errors = [
            Error::Ended,
            Error::WrongDirection {
                input: "sip invite",
                direction: Direction::RiptToSip,
            },
            Error::OutOfOrder {
                input: "ript started",
                state: "answered",
            },
            Error::Unexpected {
                input: "sip provisional",
                state: "answered",
            },
            Error::BadStatus {
                input: "sip failed",
                status: 200,
            },
            Error::UnknownEvent {
                name: "Shrug".into(),
            },
            Error::TargetKind {
                index: 1,
                expected: TargetKind::Ript,
            },
        ];
        for e in errors {
            let s = e.to_string();
            assert!(!s.ends_with('.'), "{s}");
            assert!(s.starts_with(|c: char| c.is_lowercase()), "{s}");
        }
        assert_eq!(
            Error::WrongDirection {
                input: "sip invite",
                direction: Direction::RiptToSip
            }
            .to_string(),
            "sip invite is not an input of a ript-to-sip call"
        );
    }

    #[test]
    fn categories() {
        assert_eq!(Error::Ended.category(), Category::Misuse);
        assert_eq!(
            Error::Unexpected {
                input: "x",
                state: "y"
            }
            .category(),
            Category::Peer
        );
        assert_eq!(
            Error::UnknownEvent { name: "x".into() }.category(),
            Category::Peer
        );
    }
}
