//! Admin bearer tokens: a static token from the configuration, compared in constant time,
//! and/or the tokens issued into the store's admin token table.

use crate::AdminState;
use crate::error::Error;
use axum::Extension;
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

/// Shortest static token accepted: 128 bits of base64 is 22 characters.
pub const MIN_STATIC_TOKEN_LEN: usize = 22;

/// How admin tokens are verified. Both sources may be enabled; with neither, every request is
/// refused.
#[derive(Clone, Default)]
pub struct AdminAuth {
    /// SHA-256 of the static token. Comparing fixed-length digests keeps the comparison time
    /// independent of both the token's length and where a guess first differs.
    static_digest: Option<[u8; 32]>,
    store_tokens: bool,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("static_token", &self.static_digest.map(|_| "***"))
            .field("store_tokens", &self.store_tokens)
            .finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl AdminAuth {
    /// Nothing accepted until a source is added.
    pub fn none() -> Self {
        AdminAuth::default()
    }

    /// Accepts `token` (from the configuration; at least [`MIN_STATIC_TOKEN_LEN`] characters).
    pub fn with_static_token(mut self, token: &str) -> Result<Self, Error> {
        if token.chars().count() < MIN_STATIC_TOKEN_LEN {
            return Err(Error::WeakToken {
                min: MIN_STATIC_TOKEN_LEN,
            });
        }
        self.static_digest = Some(digest(token));
        Ok(self)
    }

    /// Accepts the tokens issued into the store's admin token table.
    pub fn with_store_tokens(mut self) -> Self {
        self.store_tokens = true;
        self
    }

    /// Whether `presented` is a valid admin token. Database trouble is an error (503), not a
    /// refusal, so an outage is not mistaken for a wrong token.
    pub async fn verify(&self, store: &store::Store, presented: &str) -> Result<bool, Error> {
        if let Some(expected) = &self.static_digest
            && constant_time_eq(expected, &digest(presented))
        {
            return Ok(true);
        }
        if self.store_tokens {
            return Ok(store.admin_tokens().verify(presented).await?.is_some());
        }
        Ok(false)
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive, RFC 6750
/// §2.1).
fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Middleware refusing requests without a valid admin token.
pub(crate) async fn require_admin(
    Extension(state): Extension<AdminState>,
    req: Request,
    next: Next,
) -> Result<Response, Error> {
    let Some(token) = bearer(&req) else {
        return Err(Error::Unauthorized { presented: false });
    };
    let ok = state
        .metrics
        .time_db("verify_admin_token", state.auth.verify(&state.store, token))
        .await?;
    if !ok {
        tracing::info!("admin request with an invalid token refused");
        return Err(Error::Unauthorized { presented: true });
    }
    Ok(next.run(req).await)
}
