//! RIPT over HTTP/3: the async shell around `ript-proto` (quinn + h3 + rustls).
//!
//! [`server::Server`] exposes every resource of ript-profile §2; [`client::Client`] speaks
//! to such a server, one QUIC connection per peer shared by all calls. Media travels as
//! HTTP Datagrams bound to an extended CONNECT (preferred) or over media byways.

pub mod ca;
pub mod client;
mod datagram;
mod error;
mod media;
pub mod server;
pub mod tls;

pub use error::Error;
pub use media::{CallEvent, MediaHandler, MediaStats, OutgoingMedia, ReceivedMedia};

/// Wall clock in Unix-epoch ms: the shell reads it, the sans-IO core receives it.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Monotonic time from tokio, so paused test time reaches the core machines.
pub(crate) fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Locks a mutex; a poisoned lock only means another task panicked, the data is still usable.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
