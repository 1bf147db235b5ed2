use crate::problem::Problem;

/// Who is at fault for an error (ARCHITECTURE §4); decides logging level and wire reaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Malformed bytes from the peer.
    Parse,
    /// Well-formed but not allowed by the profile or by policy.
    Peer,
    /// Our own caller used the API wrongly.
    Misuse,
    /// A timer expired.
    Timeout,
}

/// Every error of the RIPT core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("malformed json in {what}: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} is invalid: {reason}")]
    Invalid {
        what: &'static str,
        reason: &'static str,
    },
    #[error("{what} syntax error at byte {at}: expected {expected}")]
    Grammar {
        what: &'static str,
        at: usize,
        expected: &'static str,
    },
    #[error("invalid number pattern entry at position {index}")]
    Pattern { index: usize },
    #[error("{what} exceeds {limit} bytes")]
    TooLarge { what: &'static str, limit: usize },
    #[error("event stream: {0}")]
    Stream(#[from] StreamError),
    #[error("media chunk: {0}")]
    Chunk(#[from] ChunkError),
    #[error("passport: {0}")]
    Passport(#[from] PassportError),
    #[error("destination is outside the trunk group's policy")]
    DestinationNotAllowed,
    #[error("destination is not reachable through this trunk group")]
    DestinationUnreachable,
    #[error("unknown handler")]
    UnknownHandler,
    #[error("number is not vouched for by this server")]
    NumberNotAllowed,
    #[error("no such resource")]
    NotFound,
    /// `allow`: the resource's allowed methods, for the `Allow` header (e.g. `"GET, POST"`).
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("event {event} is not allowed in state {state}")]
    InvalidTransition {
        state: &'static str,
        event: &'static str,
    },
    #[error("call has ended")]
    CallEnded,
    #[error("overloaded, retry later")]
    Overloaded,
}

impl Error {
    pub fn category(&self) -> Category {
        match self {
            Error::Json { .. }
            | Error::Grammar { .. }
            | Error::Pattern { .. }
            | Error::Stream(_)
            | Error::Chunk(_)
            | Error::TooLarge { .. }
            | Error::Invalid { .. } => Category::Parse,
            Error::InvalidTransition { .. } => Category::Misuse,
            _ => Category::Peer,
        }
    }

    /// The `Allow` header value a 405 answer carries (RFC 9110 §15.5.6); `None` otherwise.
    pub fn allow(&self) -> Option<&'static str> {
        match self {
            Error::MethodNotAllowed { allow } => Some(allow),
            _ => None,
        }
    }

    /// The problem+json document this error answers with (ript-profile §1, §2, §9).
    pub fn problem(&self) -> Problem {
        use Error::*;
        let (status, kind, title) = match self {
            Json { .. } | Invalid { .. } | Grammar { .. } | Pattern { .. } | Stream(_) => {
                (400, "malformed-request", "Malformed request")
            }
            Chunk(_) => (400, "invalid-chunk", "Invalid media chunk"),
            TooLarge { .. } => (413, "too-large", "Payload too large"),
            Passport(_) | DestinationNotAllowed => (403, "forbidden", "Outside policy"),
            NumberNotAllowed => (403, "number-not-allowed", "Number not allowed"),
            DestinationUnreachable => (404, "unreachable", "Destination not reachable"),
            NotFound | CallEnded => (404, "not-found", "Not found"),
            // ript-profile §2: the draft's own choice, kept for interop.
            UnknownHandler => (500, "unknown-handler", "Unknown handler"),
            MethodNotAllowed { .. } => (405, "method-not-allowed", "Method not allowed"),
            Unauthorized => (401, "unauthorized", "Unauthorized"),
            InvalidTransition { .. } => (409, "invalid-state", "Invalid state"),
            Overloaded => (503, "overloaded", "Service unavailable"),
        };
        Problem::new(status, kind, title, self.to_string())
    }
}

/// Streaming-JSON event byway errors (ript-profile §5).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    #[error("expected '[' to open the event array, found byte {0:#04x}")]
    NoArrayStart(u8),
    #[error("expected ',' or ']' after an event, found byte {0:#04x}")]
    BadSeparator(u8),
    #[error("expected an event object, found byte {0:#04x}")]
    NotAnObject(u8),
    #[error("event object exceeds {0} bytes")]
    ObjectTooLarge(usize),
    #[error("event object is not valid json: {0}")]
    BadObject(String),
    #[error("stream ended inside an event object")]
    Truncated,
    #[error("bytes after the closing ']'")]
    TrailingData,
}

/// Media chunk codec errors (ript-profile §6, §9).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    #[error("truncated varint")]
    TruncatedVarint,
    #[error("frame length exceeds the remaining bytes")]
    TruncatedFrame,
    #[error("tlv value exceeds the chunk")]
    TruncatedTlv,
    #[error("empty frame")]
    EmptyFrame,
    #[error("unknown tag {0} below 64")]
    UnknownTag(u64),
    #[error("tag {0} repeated")]
    RepeatedTag(u64),
    #[error("tag {0} has an invalid length")]
    BadLength(u64),
    #[error("tag {0} has an invalid value")]
    BadValue(u64),
    #[error("required tag {0} missing")]
    Missing(u64),
    #[error("both or neither of media (4) and sealed package (14)")]
    PackageChoice,
    #[error("sealed package is not the last tlv")]
    SealedNotLast,
    #[error("sealed package cannot be opened")]
    Unseal,
    #[error("sealed package but no key configured")]
    NoKey,
    #[error("unknown control type {0}")]
    UnknownControl(u16),
    #[error("no media frame in the body")]
    Empty,
}

/// PASSporT / certificate errors (ript-profile §8).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PassportError {
    #[error("not a compact jws")]
    Format,
    #[error("header is not ES256 passport with x5u")]
    Header,
    #[error("claims are malformed")]
    Claims,
    #[error("signature does not verify")]
    Signature,
    #[error("iat outside the 60 s window")]
    Stale,
    #[error("certificate cannot be parsed")]
    Certificate,
    #[error("certificate chain does not end at a trust anchor")]
    Untrusted,
    #[error("certificate is expired or not yet valid")]
    Validity,
    #[error("certificate TNAuthList does not cover the originating number")]
    NotAuthorized,
    #[error("destination does not match the passport")]
    DestinationMismatch,
    #[error("signing key is invalid")]
    Key,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_not_allowed_carries_the_allow_header() {
        let e = Error::MethodNotAllowed { allow: "GET, POST" };
        assert_eq!(e.allow(), Some("GET, POST"));
        let p = e.problem();
        assert_eq!(p.status, 405);
        assert_eq!(p.short_type(), "method-not-allowed");
        assert_eq!(p.detail, "method not allowed");
        assert_eq!(Error::NotFound.allow(), None);
    }
}
