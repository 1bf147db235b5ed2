//! Sans-IO media for the SIP leg: G.711 conversion, RTP parsing and RFC 3550 receive
//! statistics, RFC 4733 telephone-events (and the SIP INFO bodies that carry digits), RFC 3389
//! comfort noise, the mapping between RTP streams and RIPT media chunks, and SRTP keyed by
//! SDES. No sockets, no clocks, no randomness.

pub mod chunkmap;
pub mod cn;
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
    #[error("comfort noise payload is malformed")]
    ComfortNoise,
    /// Our caller asked for something this layer cannot do (a full digit queue, a character
    /// that is no DTMF digit).
    #[error("misuse: {0}")]
    Misuse(&'static str),
}
