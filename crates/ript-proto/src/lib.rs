//! Sans-IO core of RIPT as closed by `ript-profile.md` (the wire contract).
//!
//! Nothing here opens a socket, spawns a task, reads a clock or draws randomness:
//! monotonic time comes in as `now: Instant`, wall-clock time as milliseconds since the
//! Unix epoch, and the outputs are values the shell (`ript-h3`) carries out.

pub mod adv;
pub mod call;
pub mod chunk;
mod error;
pub mod events;
pub mod fuzzing;
pub mod media;
pub mod model;
pub mod passport;
pub mod pattern;
pub mod problem;
pub mod timestamp;

pub use error::{Category, ChunkError, Error, PassportError, StreamError};
pub use problem::Problem;

/// ript-profile §2: size caps for bodies.
pub mod limits {
    /// JSON request bodies (calls, handlers, customer TGs).
    pub const JSON_BODY: usize = 64 * 1024;
    /// One `PUT {call}/media` body.
    pub const MEDIA_PUT: usize = 16 * 1024;
    /// One object on an event byway.
    pub const EVENT_OBJECT: usize = 64 * 1024;
    /// A CSR body on `POST {tg}/certs`.
    pub const CSR_BODY: usize = 64 * 1024;
    /// Pending `GET {call}/media` a server holds per call.
    pub const SERVER_PENDING_GETS: usize = 30;
    /// Pending `GET {call}/media` a client keeps open.
    pub const CLIENT_PENDING_GETS: usize = 20;
    /// `PUT {call}/media` a client has in flight per call (a second of 20 ms frames); beyond
    /// it new media is dropped, stale by the time a slower path would carry it.
    pub const CLIENT_PENDING_PUTS: usize = 50;
    /// Media frames one GET response may carry when flushing a buffer.
    pub const FLUSH_FRAMES: usize = 50;
}

/// The well-known root path of every RIPT server (ript-profile §2).
pub const ROOT_PATH: &str = "/.well-known/ript/v1";
/// The OAuth start page (ript-profile §2).
pub const OAUTH_PATH: &str = "/.well-known/ript-oauth";
