//! Sans-IO media for the SIP leg: G.711 conversion, RTP parsing and RFC 3550 receive
//! statistics, RFC 4733 telephone-events (and the SIP INFO bodies that carry digits), and the
//! mapping between RTP streams and RIPT media chunks, SRTP keyed by SDES. No sockets, no
//! clocks, no randomness.

pub mod chunkmap;
pub mod dtmf;
pub mod g711;
pub mod rtp;
pub mod srtp;

/// Errors of the media core.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("rtp packet is malformed: {0}")]
    Rtp(&'static str),
    #[error("telephone-event payload is malformed")]
    Event,
    #[error("dtmf body is malformed")]
    DtmfBody,
    #[error("no mapping for payload type {0}")]
    PayloadType(u8),
    #[error("sdes crypto attribute is malformed: {0}")]
    Crypto(&'static str),
    #[error("srtp suite {0} is not supported")]
    SrtpSuite(String),
    #[error("srtp master key and salt must be {expected} bytes, not {got}")]
    SrtpKeyLength { expected: usize, got: usize },
    #[error("sdes {0} is not supported")]
    SrtpUnsupported(&'static str),
    #[error("srtp authentication failed")]
    SrtpAuth,
    #[error("srtp packet is a replay")]
    SrtpReplay,
    #[error("srtp packet refused: {0}")]
    Srtp(&'static str),
}
