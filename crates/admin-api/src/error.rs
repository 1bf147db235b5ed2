//! The crate's one error type and its single mapping to the wire: RFC 9457 problem details.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Media type of every error body (RFC 9457 §3).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Everything a request can fail with. Categorized by who is at fault: the client (4xx, with
/// the offending `field` where there is one) or the server's dependencies (503, no internals).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No or wrong `Authorization: Bearer` admin token.
    #[error("a valid admin bearer token is required")]
    Unauthorized {
        /// `true` when a token was presented but is not valid (RFC 6750 `invalid_token`).
        presented: bool,
    },
    /// The id names nothing (or the path names no route).
    #[error("{kind} not found")]
    NotFound { kind: &'static str },
    /// The path exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A uniqueness rule was violated.
    #[error("{field} already exists")]
    Conflict { field: String },
    /// The body parsed but a value is refused (store validation, wrong JSON type, missing field).
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The request could not be parsed at all (JSON syntax, query string).
    #[error("bad request: {reason}")]
    BadRequest {
        field: Option<String>,
        reason: String,
    },
    /// The body is larger than [`crate::BODY_LIMIT`].
    #[error("request body larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The body is not `application/json`.
    #[error("request body must be application/json")]
    UnsupportedMediaType,
    /// A dependency (database, call control, listeners) cannot serve now; retrying may help.
    #[error("{what} unavailable")]
    Unavailable { what: &'static str },
    /// A configured static admin token is too short to be a secret.
    #[error("static admin token must be at least {min} characters")]
    WeakToken { min: usize },
    /// Something on our side is wrong (undecryptable stored secret, malformed stored row).
    #[error("internal error")]
    Internal,
}

/// The RFC 9457 problem document, plus `field` naming the offending input.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct Problem {
    /// A URI identifying the problem type.
    #[serde(rename = "type")]
    #[schema(example = "urn:ript-gateway:problem:invalid")]
    pub type_: String,
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What happened in this occurrence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request field (JSON path such as `inbound_auth.password`, or a query parameter) at
    /// fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::Conflict { .. } => StatusCode::CONFLICT,
            Error::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::WeakToken { .. } | Error::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            Error::Unauthorized { .. } => "unauthorized",
            Error::NotFound { .. } => "not-found",
            Error::MethodNotAllowed => "method-not-allowed",
            Error::Conflict { .. } => "conflict",
            Error::Invalid { .. } => "invalid",
            Error::BadRequest { .. } => "bad-request",
            Error::TooLarge { .. } => "too-large",
            Error::UnsupportedMediaType => "unsupported-media-type",
            Error::Unavailable { .. } => "unavailable",
            Error::WeakToken { .. } | Error::Internal => "internal",
        }
    }

    fn field(&self) -> Option<String> {
        match self {
            Error::Conflict { field } | Error::Invalid { field, .. } => Some(field.clone()),
            Error::BadRequest { field, .. } => field.clone(),
            _ => None,
        }
    }

    pub fn problem(&self) -> Problem {
        let status = self.status();
        Problem {
            type_: format!("urn:ript-gateway:problem:{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: Some(self.to_string()),
            field: self.field(),
        }
    }
}

/// Store errors: client faults keep their field; database trouble becomes 503 and anything
/// else 500, both with the internals logged here and never sent.
impl From<store::Error> for Error {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::NotFound { kind } => Error::NotFound { kind },
            store::Error::Conflict { field } => Error::Conflict {
                field: field.to_owned(),
            },
            store::Error::Invalid { field, reason } => Error::Invalid {
                field: field.to_owned(),
                reason,
            },
            store::Error::Database(_) | store::Error::Migrate(_) => {
                tracing::warn!(error = %e, "database unavailable");
                Error::Unavailable { what: "database" }
            }
            other => {
                tracing::error!(error = %other, "store failure");
                Error::Internal
            }
        }
    }
}

pub(crate) fn problem_response(status: StatusCode, problem: &Problem) -> Response {
    let body = serde_json::to_vec(problem).unwrap_or_default();
    let mut res = (status, body).into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    res
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let mut res = problem_response(self.status(), &self.problem());
        if let Error::Unauthorized { presented } = self {
            // RFC 6750 §3: a 401 names the scheme; `invalid_token` when one was sent.
            let value = if presented {
                "Bearer realm=\"admin\", error=\"invalid_token\""
            } else {
                "Bearer realm=\"admin\""
            };
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(value));
        }
        res
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
