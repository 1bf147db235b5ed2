//! SIP transport (RFC 3261 §18): UDP and TCP listeners on IPv4 and IPv6, Content-Length
//! framing on streams, `received`/`rport` (RFC 3581), a message size cap and a per-source
//! rate limit; the async driver of the `sip-proto` transaction layer.
//!
//! Responses always go back to the packet's source address (with the `rport` port when the
//! client asked for it, RFC 3581) or on the connection the request came on. The stack never
//! resolves or contacts a host taken from a message it is answering.

mod driver;
mod listen;

pub use driver::{ALLOW, Endpoint, EndpointConfig, Incoming, Responder};
pub use listen::{Listen, Transport};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid listen spec {0:?} (expected udp:ADDR:PORT or tcp:ADDR:PORT)")]
    ListenSpec(String),
    #[error("transaction: {0}")]
    Layer(#[from] sip_proto::layer::LayerError),
    #[error("the endpoint has shut down")]
    Closed,
}
