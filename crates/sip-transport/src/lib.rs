//! SIP transport (RFC 3261 §18): UDP, TCP and TLS listeners on IPv4 and IPv6,
//! Content-Length framing on streams, `received`/`rport` (RFC 3581), a message size cap and a
//! per-source rate limit; the async driver of the `sip-proto` transaction layer, for server
//! and client transactions.
//!
//! # Listeners
//! [`Listen`] specs are `udp:127.0.0.1:5060`, `tcp:[::1]:5060`, `tls:0.0.0.0:5061` (a
//! comma-separated list with [`Listen::parse_list`]). A `tls:` listener needs
//! [`EndpointConfig::tls_server`] (see [`tls::server_config_from_files`]).
//!
//! # Serving and sending
//! [`Endpoint::next_event`] yields new requests ([`Event::Request`]), ACKs of 2xx
//! responses, 2xx retransmissions for the UAC and Timer H expiries; [`Handle::respond`]
//! answers, [`Handle::request`] starts a client transaction toward a [`Target`] the caller
//! resolved, and [`Handle::send_ack`] sends the ACK of a 2xx.
//!
//! Responses always go back to the packet's source address (with the `rport` port when the
//! client asked for it, RFC 3581) or on the connection the request came on. The stack never
//! resolves or contacts a host taken from a message it is answering. Our requests leave
//! UDP from the listening socket whose address is their Via sent-by, so rport works through
//! NAT.
//!
//! # Connections
//! TCP and TLS connections, inbound and outgoing, are pooled by (transport, peer address):
//! a request to an address that already has a connection uses it (RFC 3261 §18.1.1). Our
//! TCP/TLS Vias carry `alias` (RFC 5923) and a peer's `alias` is honoured when its sent-by
//! has the connection's own IP, so two endpoints share one connection in both directions.
//! Connections idle for [`EndpointConfig::idle_timeout`] close; inbound ones are capped at
//! [`EndpointConfig::max_inbound_connections`]. A failed connect or TLS handshake fails the
//! transactions waiting on it with a synthetic 503.
//!
//! # TLS
//! rustls with the ring provider, TLS 1.2 and 1.3, server authentication only. The server
//! name comes from [`Target::server_name`], or the certificate must carry the target's IP.

mod conn;
mod driver;
mod listen;
pub mod observe;
pub mod tls;

pub use conn::Stats;
pub use driver::{ALLOW, ClientTxn, Endpoint, EndpointConfig, Event, Handle, Incoming, Responder};
pub use listen::{Listen, Target, Transport};
pub use observe::Observer;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid listen spec {0:?} (expected udp:ADDR:PORT, tcp:ADDR:PORT or tls:ADDR:PORT)")]
    ListenSpec(String),
    #[error("transaction: {0}")]
    Layer(#[from] sip_proto::layer::LayerError),
    #[error("message: {0}")]
    Message(#[from] sip_proto::msg::MsgError),
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    #[error("certificate: {0}")]
    Certificate(&'static str),
    #[error("transport failed sending to {0}")]
    Transport(std::net::SocketAddr),
    /// The caller asked for something this endpoint cannot do as configured.
    #[error("misuse: {0}")]
    Misuse(&'static str),
    #[error("the endpoint has shut down")]
    Closed,
}
