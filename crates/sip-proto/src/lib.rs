//! Sans-IO SIP (RFC 3261): transaction machines and the transaction layer, driven by the
//! `sip-transport` shell. Time is an input; nothing here opens a socket or reads a clock.

pub mod dialog;
pub mod digest;
pub mod fuzzing;
pub mod layer;
pub mod msg;
pub mod register;
pub mod sdp;
pub mod txn;
