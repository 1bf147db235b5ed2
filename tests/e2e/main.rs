//! The gateway end to end: two `ript-gateway run` processes on loopback — the customer (a PBX's
//! gateway) and the provider (fronting a SIP core) — configured only through their admin APIs,
//! with baresip and SIPp as the PBX and the SIP core. A call crosses PBX → customer gateway →
//! RIPT over HTTP/3 → provider gateway → SIP core, or the reverse (`reverse`): SIP core →
//! provider → the customer TG the customer gateway registered → customer gateway → PBX.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod calls;
mod identity;
mod reverse;
mod signaling;
mod support;

pub use std::net::SocketAddr;
pub use support::*;
