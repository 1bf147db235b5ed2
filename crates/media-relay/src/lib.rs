//! The RTP shell: port pairs from a configured range, symmetric RTP with latching to the
//! first source (comedia, RFC 4961), relays between two legs, counters and RTP timeout,
//! SRTP/SRTCP on either leg.

mod ports;
mod relay;

pub use ports::{PortAllocator, PortRange, RtpPair};
pub use relay::{Bridge, BridgeEnd, BridgeStats, Latch, LegConfig, LegStats};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("no free port pair in {start}..={end}")]
    Exhausted { start: u16, end: u16 },
    #[error("invalid port range {start}..={end}: needs an even start and at least one pair")]
    BadRange { start: u16, end: u16 },
}
