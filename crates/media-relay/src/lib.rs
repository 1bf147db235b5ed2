//! The RTP shell: port pairs from a configured range, symmetric RTP with latching to a
//! learned source (comedia, RFC 4961), relays between two legs, counters and RTP timeout,
//! SRTP/SRTCP on either leg, and per-leg media transforms (payload type mapping, G.711 law
//! conversion, G.711 ⇄ Opus transcoding, RFC 4733 ⇄ SIP INFO, comfort noise) for a B2BUA
//! between unlike peers.

mod ports;
mod relay;
mod transform;

pub use ports::{PortAllocator, PortRange, RtpPair};
pub use relay::{
    Bridge, BridgeEnd, BridgeStats, LEARN_PACKETS, Latch, LegConfig, LegStats, PacketSink,
    RELATCH_SILENCE,
};
pub use transform::{BridgeEvent, Codec, DtmfMode, LegMedia};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("no free port pair in {start}..={end}")]
    Exhausted { start: u16, end: u16 },
    #[error("invalid port range {start}..={end}: needs an even start and at least one pair")]
    BadRange { start: u16, end: u16 },
    /// The two legs' codecs differ in a way the relay does not translate (µ-law ⇄ A-law and
    /// G.711 ⇄ Opus are).
    #[error("cannot bridge {a} to {b}: only pcmu, pcma and opus/48000 are converted")]
    UnsupportedCodecs { a: Codec, b: Codec },
    /// Our caller asked for something the bridge cannot do.
    #[error("misuse: {0}")]
    Misuse(&'static str),
    #[error("the bridge has stopped")]
    Stopped,
}
