use ript_proto::Problem;

/// Errors of the RIPT HTTP/3 shell.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("tls configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("invalid certificate or key: {0}")]
    Certificate(&'static str),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("http/3 connection: {0}")]
    H3(#[from] h3::error::ConnectionError),
    #[error("http/3 stream: {0}")]
    Stream(#[from] h3::error::StreamError),
    #[error("invalid url {0:?}")]
    Url(String),
    #[error("peer answered {status}: {}", .problem.as_ref().map_or("", |p| p.detail.as_str()))]
    Status {
        status: u16,
        problem: Option<Problem>,
    },
    #[error("unexpected response: {0}")]
    Unexpected(&'static str),
    #[error("protocol: {0}")]
    Proto(#[from] ript_proto::Error),
    #[error("call is gone")]
    CallGone,
    #[error("the call's queue is full; media dropped")]
    Backpressure,
    #[error("timed out: {0}")]
    Timeout(&'static str),
}

impl Error {
    /// HTTP status of a peer's error answer, if that is what this is.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The profile's short problem type of a peer's error answer (`unknown-handler`, ...).
    pub fn problem_type(&self) -> Option<&str> {
        match self {
            Error::Status {
                problem: Some(p), ..
            } => Some(p.short_type()),
            _ => None,
        }
    }
}
