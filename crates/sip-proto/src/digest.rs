//! SIP digest authentication: RFC 3261 §22 with the algorithms of RFC 8760 / RFC 7616
//! (`MD5`, `SHA-256`, `SHA-512-256` and their `-sess` variants), `qop=auth`, and RFC 2069
//! compatibility (no `qop`) for old peers.
//!
//! Sans-IO like the rest of the crate: nothing here reads a clock or draws randomness.
//!
//! * **Time** is wall-clock **milliseconds since the Unix epoch** (`now_unix_ms: u64`), the
//!   unit the store uses (ARCHITECTURE §7). It must be wall clock, not monotonic, because a
//!   nonce issued by one gateway instance may be verified by another that shares the secret.
//!   The caller reads it from its `WallClock`.
//! * **Randomness** comes in as bytes: 16 bytes per nonce ([`NonceIssuer::issue`]) and a
//!   caller-made `cnonce` string for the responder ([`respond`]).
//!
//! # Roles
//!
//! * **Responder** (UAC answering a 401/407): [`Challenge::parse`] each `WWW-Authenticate` /
//!   `Proxy-Authenticate` value, pick one with [`select_challenge`], answer it with [`respond`]
//!   or [`respond_with_ha1`], and print the result with [`Credentials::to_header_value`].
//! * **Challenger** (UAS / registrar / proxy): a [`Challenger`] per realm issues
//!   [`Challenger::challenges`] for the 401/407 and checks the retried request's
//!   [`Credentials`] with [`Challenger::verify`] (or [`Challenger::verify_counted`] with a
//!   [`NonceCounts`] replay window). On error, [`AuthError::reaction`] tells what to answer.
//!
//! # Nonces
//!
//! Nonces are stateless and tamper-evident (see [`NonceIssuer`]):
//! `base64url-nopad(0x01 ‖ issued_unix_ms (u64 BE) ‖ 16 random bytes ‖ HMAC-SHA256(secret,
//! label ‖ 0x01 ‖ issued ‖ random ‖ realm))`, 76 characters. Any instance that holds the
//! secret verifies any other's nonce; a nonce only works in the realm it was issued for.
//!
//! # `stale`
//!
//! RFC 2617 §3.2.1 / RFC 7616 §3.3: `stale=true` tells the client that its *credentials were
//! right* but the nonce was not acceptable any more, so it retries with the new nonce without
//! asking its user for a password. [`Challenger::verify`] therefore returns
//! [`AuthError::Stale`] (reaction `Challenge { stale: true }`) only after the response has
//! been checked against the password: an expired nonce with a wrong response is
//! [`AuthError::WrongResponse`].
//!
//! # Header syntax
//!
//! One challenge or credentials per header value (RFC 3261 §7.3.1: these headers are never
//! comma-combined; several challenges are several header fields). Parameter names and the
//! scheme are case-insensitive; values may be tokens or quoted-strings (with `\` escapes);
//! folded whitespace (CRLF + SP/HTAB) is accepted; empty list elements are skipped; unknown
//! parameters are ignored; a repeated parameter, a control character, a value over
//! [`MAX_HEADER_LEN`] bytes or more than [`MAX_PARAMS`] parameters are errors. Parsing never
//! panics and never indexes.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest, Sha256, Sha512_256};
use subtle::ConstantTimeEq;

/// Largest `WWW-Authenticate` / `Authorization` value the parser accepts, in bytes.
pub const MAX_HEADER_LEN: usize = 4096;
/// Most parameters one header value may carry (known and unknown together).
pub const MAX_PARAMS: usize = 32;
/// Shortest nonce secret [`NonceIssuer::new`] accepts, in bytes.
pub const MIN_SECRET_LEN: usize = 16;
/// Default nonce lifetime: 5 minutes. A REGISTER refreshed less often than this gets one
/// extra `stale=true` round trip, which costs nothing in user interaction.
pub const DEFAULT_NONCE_LIFETIME: Duration = Duration::from_secs(300);
/// How far in the future (ms) a nonce's timestamp may lie before it is treated as stale:
/// room for clock skew between gateway instances that share the secret.
pub const CLOCK_SKEW_MS: u64 = 10_000;

/// Random bytes per nonce ([`NonceIssuer::issue`]).
pub const NONCE_RANDOM_LEN: usize = 16;
const NONCE_VERSION: u8 = 1;
const NONCE_TAG_LEN: usize = 32;
const NONCE_RAW_LEN: usize = 1 + 8 + NONCE_RANDOM_LEN + NONCE_TAG_LEN;
/// Length in characters of every nonce this module issues.
pub const NONCE_LEN: usize = NONCE_RAW_LEN.div_ceil(3) * 4;
const NONCE_MAC_LABEL: &[u8] = b"sip-proto digest nonce\0";

type HmacSha256 = Hmac<Sha256>;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Who is at fault for an [`AuthError`] (ARCHITECTURE §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Malformed header bytes from the peer.
    Parse,
    /// Well-formed, but the credentials or challenge are not acceptable.
    Peer,
    /// Our caller used the API wrongly (bad secret, unprintable field, …).
    Misuse,
}

/// What a challenger answers to a request whose credentials failed [`Challenger::verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// 400 Bad Request: the credentials are malformed or inconsistent, or their `uri`
    /// is not the Request-URI (RFC 2617 §3.2.2.5).
    BadRequest,
    /// 401 / 407 with fresh [`Challenger::challenges`]. `stale: true` means the client
    /// proved it knows the password and only needs the new nonce. A registrar may answer
    /// 403 instead after repeated `stale: false` failures (RFC 3261 §22.3 permits it).
    Challenge {
        /// Value for the new challenges' `stale` parameter.
        stale: bool,
    },
    /// 500: the failure is our own (see [`Category::Misuse`]).
    ServerError,
}

impl Reaction {
    /// SIP status code for this reaction; `role` decides 401 or 407.
    pub fn status(self, role: Role) -> u16 {
        match self {
            Reaction::BadRequest => 400,
            Reaction::Challenge { .. } => role.challenge_status(),
            Reaction::ServerError => 500,
        }
    }
}

/// Everything that can go wrong in digest authentication. `Display` is lowercase and never
/// contains a secret; it may name a header parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    // --- Parse ---
    /// The header value is longer than [`MAX_HEADER_LEN`].
    #[error("authentication header exceeds {limit} bytes")]
    TooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The header value has more than [`MAX_PARAMS`] parameters.
    #[error("authentication header has more than {limit} parameters")]
    TooManyParams {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The header value does not follow the RFC 3261 §25.1 grammar.
    #[error("authentication header syntax error at byte {at}: expected {expected}")]
    Syntax {
        /// Byte offset in the header value.
        at: usize,
        /// What the grammar wanted there.
        expected: &'static str,
    },
    /// A parameter name occurs twice (RFC 7235 §2.1).
    #[error("authentication header repeats the parameter at byte {at}")]
    DuplicateParam {
        /// Byte offset of the second occurrence.
        at: usize,
    },
    /// A required parameter is absent.
    #[error("authentication header lacks the {0} parameter")]
    MissingParam(&'static str),
    /// A parameter's value is malformed (e.g. `nc` not 8 hex digits).
    #[error("authentication header has an invalid {0} parameter")]
    InvalidParam(&'static str),
    /// `cnonce` / `nc` present without `qop`, or `qop=auth` without them.
    #[error("qop, cnonce and nc are inconsistent")]
    QopParamsInconsistent,

    // --- Peer ---
    /// The scheme is not `Digest` (e.g. `Basic`).
    #[error("authentication scheme is not digest")]
    NotDigest,
    /// The algorithm is not one this module implements.
    #[error("digest algorithm is not supported")]
    UnsupportedAlgorithm,
    /// The credentials use an algorithm the challenger does not offer.
    #[error("digest algorithm was not offered")]
    AlgorithmNotOffered,
    /// The qop is not `auth` (e.g. `auth-int`, which needs the body).
    #[error("digest qop is not supported")]
    UnsupportedQop,
    /// No `qop` in the credentials, but the challenger requires `qop=auth`, or a `-sess`
    /// algorithm is used (it needs `cnonce`, which only comes with `qop`).
    #[error("digest qop is required")]
    QopRequired,
    /// The credentials' realm is not the challenger's.
    #[error("credentials are for another realm")]
    RealmMismatch,
    /// The credentials' `opaque` is not the one the challenger sends.
    #[error("opaque does not match")]
    OpaqueMismatch,
    /// The credentials' `uri` is not the Request-URI.
    #[error("digest uri does not match the request uri")]
    UriMismatch,
    /// The nonce was not issued by us for this realm (forged, tampered, other secret).
    #[error("nonce is not authentic")]
    InvalidNonce,
    /// The response is right but the nonce expired (or is from too far in the future):
    /// re-challenge with `stale=true`.
    #[error("nonce is stale")]
    Stale,
    /// The response is right but this nonce count was already used with this nonce.
    #[error("nonce count was replayed")]
    Replay,
    /// The lookup knows no such user. Answer it as [`AuthError::WrongResponse`].
    #[error("unknown user")]
    UnknownUser,
    /// The response does not match the password.
    #[error("digest response is wrong")]
    WrongResponse,

    // --- Misuse ---
    /// The nonce secret is shorter than [`MIN_SECRET_LEN`].
    #[error("nonce secret is shorter than {min} bytes")]
    WeakSecret {
        /// The minimum length.
        min: usize,
    },
    /// An argument or a field to print is unusable (control character, empty list, bad
    /// H(A1) hex, zero nonce count, …); the payload names it.
    #[error("invalid {0}")]
    InvalidArgument(&'static str),
}

impl AuthError {
    /// Who is at fault.
    pub fn category(&self) -> Category {
        use AuthError::*;
        match self {
            TooLarge { .. }
            | TooManyParams { .. }
            | Syntax { .. }
            | DuplicateParam { .. }
            | MissingParam(_)
            | InvalidParam(_)
            | QopParamsInconsistent => Category::Parse,
            WeakSecret { .. } | InvalidArgument(_) => Category::Misuse,
            NotDigest | UnsupportedAlgorithm | AlgorithmNotOffered | UnsupportedQop
            | QopRequired | RealmMismatch | OpaqueMismatch | UriMismatch | InvalidNonce | Stale
            | Replay | UnknownUser | WrongResponse => Category::Peer,
        }
    }

    /// What a challenger answers. Unknown user and wrong response react identically so a
    /// client cannot probe for user names.
    pub fn reaction(&self) -> Reaction {
        use AuthError::*;
        match self {
            // RFC 2617 §3.2.2.5: a digest-uri that is not the Request-URI gets 400.
            UriMismatch => Reaction::BadRequest,
            // RFC 7616 §3.3: stale=true only when the digest itself was valid.
            Stale | Replay => Reaction::Challenge { stale: true },
            _ => match self.category() {
                Category::Parse => Reaction::BadRequest,
                Category::Peer => Reaction::Challenge { stale: false },
                Category::Misuse => Reaction::ServerError,
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Algorithm, qop, role
// ---------------------------------------------------------------------------------------------

/// A digest `algorithm` (RFC 7616 §3.3, registry "HTTP Digest Hash Algorithms"). Unknown
/// tokens are kept as [`Algorithm::Other`] so a UAC can skip such challenges (RFC 8760 §2.4).
/// An absent `algorithm` parameter means [`Algorithm::Md5`] (RFC 2617 §3.2.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `MD5`.
    Md5,
    /// `MD5-sess`.
    Md5Sess,
    /// `SHA-256`.
    Sha256,
    /// `SHA-256-sess`.
    Sha256Sess,
    /// `SHA-512-256` (SHA-512/256).
    Sha512_256,
    /// `SHA-512-256-sess`.
    Sha512_256Sess,
    /// Any other token, as received.
    Other(String),
}

impl Algorithm {
    /// Parses a token case-insensitively; never fails.
    pub fn from_token(token: &str) -> Algorithm {
        const KNOWN: [(&str, Algorithm); 6] = [
            ("MD5", Algorithm::Md5),
            ("MD5-sess", Algorithm::Md5Sess),
            ("SHA-256", Algorithm::Sha256),
            ("SHA-256-sess", Algorithm::Sha256Sess),
            ("SHA-512-256", Algorithm::Sha512_256),
            ("SHA-512-256-sess", Algorithm::Sha512_256Sess),
        ];
        KNOWN
            .into_iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(token))
            .map_or_else(|| Algorithm::Other(token.to_owned()), |(_, alg)| alg)
    }

    /// The canonical token.
    pub fn as_str(&self) -> &str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
            Algorithm::Sha512_256 => "SHA-512-256",
            Algorithm::Sha512_256Sess => "SHA-512-256-sess",
            Algorithm::Other(s) => s,
        }
    }

    /// Whether this module can compute it.
    pub fn is_supported(&self) -> bool {
        self.hash().is_some()
    }

    /// Whether it is a `-sess` variant (H(A1) also covers nonce and cnonce).
    pub fn is_sess(&self) -> bool {
        matches!(
            self,
            Algorithm::Md5Sess | Algorithm::Sha256Sess | Algorithm::Sha512_256Sess
        )
    }

    /// Length in hex characters of this algorithm's H(A1) and response, if supported.
    pub fn hex_len(&self) -> Option<usize> {
        self.hash().map(HashFn::hex_len)
    }

    fn hash(&self) -> Option<HashFn> {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => Some(HashFn::Md5),
            Algorithm::Sha256 | Algorithm::Sha256Sess => Some(HashFn::Sha256),
            Algorithm::Sha512_256 | Algorithm::Sha512_256Sess => Some(HashFn::Sha512_256),
            Algorithm::Other(_) => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `qop` value (RFC 2617 §3.2.1). Only [`Qop::Auth`] is computed; `auth-int` and unknown
/// values are kept so challenges that list them still parse.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Qop {
    /// `auth`: authentication only.
    Auth,
    /// `auth-int`: also covers the body; not supported.
    AuthInt,
    /// Any other token, as received.
    Other(String),
}

impl Qop {
    /// Parses a token case-insensitively; never fails.
    pub fn from_token(token: &str) -> Qop {
        if token.eq_ignore_ascii_case("auth") {
            Qop::Auth
        } else if token.eq_ignore_ascii_case("auth-int") {
            Qop::AuthInt
        } else {
            Qop::Other(token.to_owned())
        }
    }

    /// The canonical token.
    pub fn as_str(&self) -> &str {
        match self {
            Qop::Auth => "auth",
            Qop::AuthInt => "auth-int",
            Qop::Other(s) => s,
        }
    }
}

impl fmt::Display for Qop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which kind of authentication a challenger performs (RFC 3261 §22.2, §22.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// UAS or registrar: 401, `WWW-Authenticate`, `Authorization`.
    Uas,
    /// Proxy: 407, `Proxy-Authenticate`, `Proxy-Authorization`.
    Proxy,
}

impl Role {
    /// 401 or 407.
    pub fn challenge_status(self) -> u16 {
        match self {
            Role::Uas => 401,
            Role::Proxy => 407,
        }
    }

    /// Header that carries the challenge.
    pub fn challenge_header(self) -> &'static str {
        match self {
            Role::Uas => "WWW-Authenticate",
            Role::Proxy => "Proxy-Authenticate",
        }
    }

    /// Header that carries the credentials.
    pub fn credentials_header(self) -> &'static str {
        match self {
            Role::Uas => "Authorization",
            Role::Proxy => "Proxy-Authorization",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Header model
// ---------------------------------------------------------------------------------------------

/// A `Digest` challenge: one `WWW-Authenticate` or `Proxy-Authenticate` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Protection space, shown to users and part of H(A1). Required.
    pub realm: String,
    /// Server nonce. Required.
    pub nonce: String,
    /// Hash algorithm; [`Algorithm::Md5`] when the parameter is absent.
    pub algorithm: Algorithm,
    /// Offered qop values; empty means an RFC 2069 challenge (responses without qop).
    pub qop: Vec<Qop>,
    /// Opaque string the client must echo.
    pub opaque: Option<String>,
    /// `stale=true`: retry with this nonce without prompting (any other value is false).
    pub stale: bool,
    /// Space-separated URI list of the protection space (ignored by SIP clients in practice).
    pub domain: Option<String>,
}

impl Challenge {
    /// Parses one header value such as
    /// `Digest realm="atlanta.com", nonce="…", algorithm=SHA-256, qop="auth"`.
    pub fn parse(value: &str) -> Result<Challenge, AuthError> {
        let mut params = parse_digest(value)?;
        let realm = params
            .take("realm")
            .ok_or(AuthError::MissingParam("realm"))?;
        let nonce = params
            .take("nonce")
            .ok_or(AuthError::MissingParam("nonce"))?;
        let algorithm = params.algorithm()?;
        let qop = match params.take("qop") {
            None => Vec::new(),
            Some(list) => parse_qop_list(&list)?,
        };
        let stale = params
            .take("stale")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        Ok(Challenge {
            realm,
            nonce,
            algorithm,
            qop,
            opaque: params.take("opaque"),
            stale,
            domain: params.take("domain"),
        })
    }

    /// Prints the header value (without the header name). Fails with
    /// [`AuthError::InvalidArgument`] if a field holds a control character or a token field
    /// (`algorithm`, `qop`) is not a token, so the output can never break the SIP message.
    pub fn to_header_value(&self) -> Result<String, AuthError> {
        let mut w = Writer::new();
        w.quoted("realm", &self.realm)?;
        if let Some(domain) = &self.domain {
            w.quoted("domain", domain)?;
        }
        w.quoted("nonce", &self.nonce)?;
        if let Some(opaque) = &self.opaque {
            w.quoted("opaque", opaque)?;
        }
        if self.stale {
            w.token("stale", "true")?;
        }
        w.token("algorithm", self.algorithm.as_str())?;
        if !self.qop.is_empty() {
            let mut list = String::new();
            for (i, q) in self.qop.iter().enumerate() {
                if !is_token(q.as_str()) {
                    return Err(AuthError::InvalidArgument("qop"));
                }
                if i > 0 {
                    list.push(',');
                }
                list.push_str(q.as_str());
            }
            w.quoted("qop", &list)?;
        }
        Ok(w.finish())
    }

    /// Whether [`respond`] can answer this challenge: supported algorithm, and either
    /// `qop=auth` offered or no qop at all (a `-sess` algorithm needs `qop=auth`).
    pub fn is_answerable(&self) -> bool {
        self.algorithm.is_supported() && choose_qop(self).is_ok()
    }
}

impl FromStr for Challenge {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Challenge::parse(s)
    }
}

/// `Digest` credentials: one `Authorization` or `Proxy-Authorization` value.
///
/// `cnonce` and `nc` come with `qop` and only with it (RFC 2617 §3.2.2); the parser keeps
/// what was sent and [`Challenger::verify`] checks the combination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name (unquoted value).
    pub username: String,
    /// Realm being answered.
    pub realm: String,
    /// Nonce being answered.
    pub nonce: String,
    /// `uri` (digest-uri): must equal the Request-URI.
    pub uri: String,
    /// Request digest, lowercase hex as printed by this module (any case is accepted).
    pub response: String,
    /// Algorithm; [`Algorithm::Md5`] when absent.
    pub algorithm: Algorithm,
    /// Client nonce (with `qop`).
    pub cnonce: Option<String>,
    /// Chosen qop; `None` for an RFC 2069 response.
    pub qop: Option<Qop>,
    /// Nonce count (with `qop`); printed as 8 lowercase hex digits.
    pub nc: Option<u32>,
    /// Echo of the challenge's `opaque`.
    pub opaque: Option<String>,
}

impl Credentials {
    /// Parses one header value such as
    /// `Digest username="bob", realm="biloxi.com", nonce="…", uri="sip:bob@biloxi.com",
    /// response="…", qop=auth, nc=00000001, cnonce="…"`.
    pub fn parse(value: &str) -> Result<Credentials, AuthError> {
        let mut params = parse_digest(value)?;
        let username = params
            .take("username")
            .ok_or(AuthError::MissingParam("username"))?;
        let realm = params
            .take("realm")
            .ok_or(AuthError::MissingParam("realm"))?;
        let nonce = params
            .take("nonce")
            .ok_or(AuthError::MissingParam("nonce"))?;
        let uri = params.take("uri").ok_or(AuthError::MissingParam("uri"))?;
        let response = params
            .take("response")
            .ok_or(AuthError::MissingParam("response"))?;
        if response.is_empty()
            || response.len() > 128
            || !response.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(AuthError::InvalidParam("response"));
        }
        let algorithm = params.algorithm()?;
        let qop = match params.take("qop") {
            None => None,
            Some(q) if is_token(&q) => Some(Qop::from_token(&q)),
            Some(_) => return Err(AuthError::InvalidParam("qop")),
        };
        let nc = params.take("nc").map(|v| parse_nc(&v)).transpose()?;
        Ok(Credentials {
            username,
            realm,
            nonce,
            uri,
            response,
            algorithm,
            cnonce: params.take("cnonce"),
            qop,
            nc,
            opaque: params.take("opaque"),
        })
    }

    /// Prints the header value (without the header name); fails like
    /// [`Challenge::to_header_value`].
    pub fn to_header_value(&self) -> Result<String, AuthError> {
        let mut w = Writer::new();
        w.quoted("username", &self.username)?;
        w.quoted("realm", &self.realm)?;
        w.quoted("nonce", &self.nonce)?;
        w.quoted("uri", &self.uri)?;
        w.quoted("response", &self.response)?;
        w.token("algorithm", self.algorithm.as_str())?;
        if let Some(cnonce) = &self.cnonce {
            w.quoted("cnonce", cnonce)?;
        }
        if let Some(opaque) = &self.opaque {
            w.quoted("opaque", opaque)?;
        }
        if let Some(qop) = &self.qop {
            w.token("qop", qop.as_str())?;
        }
        if let Some(nc) = self.nc {
            w.token("nc", &format!("{nc:08x}"))?;
        }
        Ok(w.finish())
    }
}

impl FromStr for Credentials {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Credentials::parse(s)
    }
}

// ---------------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------------

struct RawParam {
    /// Lowercased name.
    name: String,
    value: String,
}

struct Params(Vec<RawParam>);

impl Params {
    fn take(&mut self, name: &str) -> Option<String> {
        let pos = self.0.iter().position(|p| p.name == name)?;
        Some(self.0.swap_remove(pos).value)
    }

    fn algorithm(&mut self) -> Result<Algorithm, AuthError> {
        match self.take("algorithm") {
            None => Ok(Algorithm::Md5),
            Some(a) if is_token(&a) => Ok(Algorithm::from_token(&a)),
            Some(_) => Err(AuthError::InvalidParam("algorithm")),
        }
    }
}

/// RFC 3261 §25.1 `token` characters.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.pos.saturating_add(ahead)).copied()
    }

    fn advance(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n).min(self.bytes.len());
    }

    /// Whether CRLF followed by SP/HTAB (a header fold) starts here.
    fn at_fold(&self) -> bool {
        self.peek() == Some(b'\r')
            && self.peek_at(1) == Some(b'\n')
            && matches!(self.peek_at(2), Some(b' ' | b'\t'))
    }

    /// Skips LWS (RFC 3261 §25.1: `[*WSP CRLF] 1*WSP`), tolerating any number of folds.
    fn skip_lws(&mut self) {
        loop {
            if matches!(self.peek(), Some(b' ' | b'\t')) {
                self.advance(1);
            } else if self.at_fold() {
                self.advance(2);
            } else {
                break;
            }
        }
    }

    fn token(&mut self) -> Option<&'a str> {
        let start = self.pos;
        while self.peek().is_some_and(is_token_char) {
            self.advance(1);
        }
        if self.pos == start {
            return None;
        }
        // Token characters are ASCII, so this slice is on char boundaries.
        std::str::from_utf8(self.bytes.get(start..self.pos)?).ok()
    }

    fn syntax(&self, expected: &'static str) -> AuthError {
        AuthError::Syntax {
            at: self.pos,
            expected,
        }
    }

    /// RFC 3261 §25.1 `quoted-string`, unescaped. Control characters (other than HTAB and
    /// folds) are rejected, escaped or not, so values are always printable again.
    fn quoted_string(&mut self) -> Result<String, AuthError> {
        if self.peek() != Some(b'"') {
            return Err(self.syntax("'\"'"));
        }
        self.advance(1);
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.syntax("closing '\"'")),
                Some(b'"') => {
                    self.advance(1);
                    break;
                }
                Some(b'\\') => match self.peek_at(1) {
                    Some(c) if c == b'\t' || (0x20..0x7f).contains(&c) => {
                        out.push(c);
                        self.advance(2);
                    }
                    _ => return Err(self.syntax("printable character after '\\'")),
                },
                Some(b'\r') if self.at_fold() => self.advance(2),
                Some(c) if (c < 0x20 && c != b'\t') || c == 0x7f => {
                    return Err(self.syntax("printable character"));
                }
                Some(c) => {
                    out.push(c);
                    self.advance(1);
                }
            }
        }
        // Only whole ASCII bytes were dropped, so multi-byte sequences are intact.
        String::from_utf8(out).map_err(|_| self.syntax("utf-8"))
    }
}

/// Parses `Digest` + comma-separated `name=value` pairs.
fn parse_digest(input: &str) -> Result<Params, AuthError> {
    if input.len() > MAX_HEADER_LEN {
        return Err(AuthError::TooLarge {
            limit: MAX_HEADER_LEN,
        });
    }
    let mut c = Cursor {
        bytes: input.as_bytes(),
        pos: 0,
    };
    c.skip_lws();
    let scheme = c.token().ok_or_else(|| c.syntax("authentication scheme"))?;
    if !scheme.eq_ignore_ascii_case("digest") {
        return Err(AuthError::NotDigest);
    }
    // RFC 3261 §25.1: challenge = "Digest" LWS digest-cln *(COMMA digest-cln)
    let after_scheme = c.pos;
    c.skip_lws();
    if c.pos == after_scheme && c.peek().is_some() {
        return Err(c.syntax("whitespace after the scheme"));
    }
    let mut params: Vec<RawParam> = Vec::new();
    loop {
        c.skip_lws();
        match c.peek() {
            None => break,
            // Empty list elements (RFC 7230 §7) are tolerated.
            Some(b',') => {
                c.advance(1);
                continue;
            }
            Some(_) => {}
        }
        let at = c.pos;
        let name = c
            .token()
            .ok_or_else(|| c.syntax("parameter name"))?
            .to_ascii_lowercase();
        c.skip_lws();
        if c.peek() != Some(b'=') {
            return Err(c.syntax("'='"));
        }
        c.advance(1);
        c.skip_lws();
        let value = if c.peek() == Some(b'"') {
            c.quoted_string()?
        } else {
            c.token()
                .ok_or_else(|| c.syntax("token or quoted-string"))?
                .to_owned()
        };
        if params.iter().any(|p| p.name == name) {
            return Err(AuthError::DuplicateParam { at });
        }
        if params.len() >= MAX_PARAMS {
            return Err(AuthError::TooManyParams { limit: MAX_PARAMS });
        }
        params.push(RawParam { name, value });
        c.skip_lws();
        match c.peek() {
            None => break,
            Some(b',') => c.advance(1),
            Some(_) => return Err(c.syntax("',' or end of header")),
        }
    }
    Ok(Params(params))
}

/// `qop="auth,auth-int"` (challenge side): comma-separated tokens, blanks allowed.
fn parse_qop_list(list: &str) -> Result<Vec<Qop>, AuthError> {
    let mut out = Vec::new();
    for item in list.split(',') {
        let item = item.trim_matches([' ', '\t']);
        if item.is_empty() {
            continue;
        }
        if !is_token(item) {
            return Err(AuthError::InvalidParam("qop"));
        }
        let q = Qop::from_token(item);
        if !out.contains(&q) {
            out.push(q);
        }
    }
    Ok(out)
}

/// `nc-value = 8LHEX` (RFC 2617 §3.2.2). Upper case is accepted too; the response is then
/// checked against the lowercase form, as the RFC requires senders to use.
fn parse_nc(v: &str) -> Result<u32, AuthError> {
    if v.len() != 8 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AuthError::InvalidParam("nc"));
    }
    u32::from_str_radix(v, 16).map_err(|_| AuthError::InvalidParam("nc"))
}

// ---------------------------------------------------------------------------------------------
// Printer
// ---------------------------------------------------------------------------------------------

struct Writer {
    out: String,
    first: bool,
}

impl Writer {
    fn new() -> Writer {
        Writer {
            out: String::from("Digest "),
            first: true,
        }
    }

    fn sep(&mut self, name: &str) {
        if !self.first {
            self.out.push_str(", ");
        }
        self.first = false;
        self.out.push_str(name);
        self.out.push('=');
    }

    fn quoted(&mut self, name: &'static str, value: &str) -> Result<(), AuthError> {
        if value.chars().any(|c| c.is_ascii_control() && c != '\t') {
            return Err(AuthError::InvalidArgument(name));
        }
        self.sep(name);
        self.out.push('"');
        for c in value.chars() {
            if c == '"' || c == '\\' {
                self.out.push('\\');
            }
            self.out.push(c);
        }
        self.out.push('"');
        Ok(())
    }

    fn token(&mut self, name: &'static str, value: &str) -> Result<(), AuthError> {
        if !is_token(value) {
            return Err(AuthError::InvalidArgument(name));
        }
        self.sep(name);
        self.out.push_str(value);
        Ok(())
    }

    fn finish(self) -> String {
        self.out
    }
}

// ---------------------------------------------------------------------------------------------
// Digest computation (RFC 2617 §3.2.2, RFC 7616 §3.4)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HashFn {
    Md5,
    Sha256,
    Sha512_256,
}

impl HashFn {
    fn hex_len(self) -> usize {
        match self {
            HashFn::Md5 => 32,
            HashFn::Sha256 | HashFn::Sha512_256 => 64,
        }
    }

    /// Lowercase hex of H(parts joined by ':').
    fn hex(self, parts: &[&str]) -> String {
        fn run<D: Digest>(parts: &[&str]) -> String {
            let mut d = D::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    d.update(b":");
                }
                d.update(p.as_bytes());
            }
            to_hex(&d.finalize())
        }
        match self {
            HashFn::Md5 => run::<Md5>(parts),
            HashFn::Sha256 => run::<Sha256>(parts),
            HashFn::Sha512_256 => run::<Sha512_256>(parts),
        }
    }
}

fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        s.push(char::from_digit(u32::from(b & 0x0f), 16).unwrap_or('0'));
    }
    s
}

/// H(A1) to store instead of a cleartext password: `H(username ":" realm ":" password)`,
/// lowercase hex, with the hash of `algorithm`.
///
/// Store one value per hash family a user may be challenged with (MD5 and SHA-256 give
/// different values). For a `-sess` algorithm this returns the same value as its base
/// algorithm: the session H(A1) is derived from it per request (RFC 7616 §3.4.2), so the
/// stored value serves both. The realm is part of the hash: changing the realm invalidates
/// stored values.
pub fn ha1(
    algorithm: &Algorithm,
    username: &str,
    realm: &str,
    password: &str,
) -> Result<String, AuthError> {
    let h = algorithm.hash().ok_or(AuthError::UnsupportedAlgorithm)?;
    Ok(h.hex(&[username, realm, password]))
}

/// The qop part of a request digest.
struct QopInput<'a> {
    nc: u32,
    cnonce: &'a str,
}

/// Computes the request digest from a stored (base) H(A1).
fn request_digest(
    algorithm: &Algorithm,
    ha1_base: &str,
    nonce: &str,
    method: &str,
    uri: &str,
    qop: Option<&QopInput<'_>>,
) -> Result<String, AuthError> {
    let h = algorithm.hash().ok_or(AuthError::UnsupportedAlgorithm)?;
    let ha1_base = normalize_ha1(h, ha1_base)?;
    let ha1 = if algorithm.is_sess() {
        // RFC 7616 §3.4.2: A1 = H(user:realm:passwd) ":" nonce ":" cnonce
        let cnonce = qop.map(|q| q.cnonce).ok_or(AuthError::QopRequired)?;
        h.hex(&[&ha1_base, nonce, cnonce])
    } else {
        ha1_base
    };
    // qop=auth: A2 = Method ":" request-uri (RFC 2617 §3.2.2.3).
    let ha2 = h.hex(&[method, uri]);
    Ok(match qop {
        Some(q) => {
            let nc = format!("{:08x}", q.nc);
            h.hex(&[&ha1, nonce, &nc, q.cnonce, Qop::Auth.as_str(), &ha2])
        }
        // RFC 2069 compatibility (RFC 2617 §3.2.2.1): no qop.
        None => h.hex(&[&ha1, nonce, &ha2]),
    })
}

fn normalize_ha1(h: HashFn, ha1: &str) -> Result<String, AuthError> {
    if ha1.len() != h.hex_len() || !ha1.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AuthError::InvalidArgument("h(a1)"));
    }
    Ok(ha1.to_ascii_lowercase())
}

// ---------------------------------------------------------------------------------------------
// Responder (UAC)
// ---------------------------------------------------------------------------------------------

/// Picks the challenge to answer from the 401/407's challenges, in header order: the first
/// one [`Challenge::is_answerable`]. RFC 8760 §2.4: the UAS lists its algorithms in order of
/// preference and the UAC uses the topmost one it supports, ignoring the others.
pub fn select_challenge<'a, I>(challenges: I) -> Option<&'a Challenge>
where
    I: IntoIterator<Item = &'a Challenge>,
{
    challenges.into_iter().find(|c| c.is_answerable())
}

fn choose_qop(ch: &Challenge) -> Result<Option<Qop>, AuthError> {
    if ch.qop.contains(&Qop::Auth) {
        Ok(Some(Qop::Auth))
    } else if !ch.qop.is_empty() {
        // Only auth-int or unknown values offered.
        Err(AuthError::UnsupportedQop)
    } else if ch.algorithm.is_sess() {
        Err(AuthError::QopRequired)
    } else {
        Ok(None)
    }
}

/// Answers `ch` with a cleartext password. See [`respond_with_ha1`].
pub fn respond(
    ch: &Challenge,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
    nc: u32,
) -> Result<Credentials, AuthError> {
    let ha1 = ha1(&ch.algorithm, username, &ch.realm, password)?;
    respond_with_ha1(ch, username, &ha1, method, uri, cnonce, nc)
}

/// Answers `ch` with a stored H(A1) (as made by [`ha1`] for `ch.algorithm`).
///
/// * `method`: the request's method (`REGISTER`, `INVITE`, …); `uri`: its Request-URI
///   exactly as it will be sent.
/// * qop: `auth` when offered; with no `qop` in the challenge an RFC 2069 response is made
///   and `cnonce` / `nc` are not used. A challenge offering only `auth-int` is
///   [`AuthError::UnsupportedQop`].
/// * `cnonce`: fresh caller randomness, e.g. 16 random bytes in hex. `nc`: 1 for the first
///   request with this nonce, then one more for each further request that reuses it (the
///   caller keeps that count per nonce; a `stale=true` challenge brings a new nonce and
///   starts again at 1).
pub fn respond_with_ha1(
    ch: &Challenge,
    username: &str,
    ha1: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
    nc: u32,
) -> Result<Credentials, AuthError> {
    if !ch.algorithm.is_supported() {
        return Err(AuthError::UnsupportedAlgorithm);
    }
    let qop = choose_qop(ch)?;
    let qop_input = match qop {
        Some(_) => {
            if cnonce.is_empty() {
                return Err(AuthError::InvalidArgument("cnonce"));
            }
            if nc == 0 {
                return Err(AuthError::InvalidArgument("nc"));
            }
            Some(QopInput { nc, cnonce })
        }
        None => None,
    };
    let response = request_digest(
        &ch.algorithm,
        ha1,
        &ch.nonce,
        method,
        uri,
        qop_input.as_ref(),
    )?;
    Ok(Credentials {
        username: username.to_owned(),
        realm: ch.realm.clone(),
        nonce: ch.nonce.clone(),
        uri: uri.to_owned(),
        response,
        algorithm: ch.algorithm.clone(),
        cnonce: qop_input.as_ref().map(|q| q.cnonce.to_owned()),
        qop,
        nc: qop_input.as_ref().map(|q| q.nc),
        opaque: ch.opaque.clone(),
    })
}

// ---------------------------------------------------------------------------------------------
// Challenger (UAS / registrar / proxy)
// ---------------------------------------------------------------------------------------------

/// Makes and checks stateless, tamper-evident nonces.
///
/// Format (76 characters, base64url without padding, so it needs no escaping in a
/// quoted-string):
///
/// ```text
/// nonce = base64url( 0x01 ‖ issued_unix_ms: u64 BE ‖ random: [u8; 16] ‖ tag: [u8; 32] )
/// tag   = HMAC-SHA256(secret, "sip-proto digest nonce\0" ‖ 0x01 ‖ issued ‖ random ‖ realm)
/// ```
///
/// The timestamp gives the nonce its age without server state; the random bytes make every
/// nonce unique (so nonce counts can be tracked per nonce); the tag makes any change
/// detectable and binds the nonce to its realm. The secret must be shared by every gateway
/// instance that may see the retried request. Rotate it with
/// [`NonceIssuer::with_previous_secret`]: new nonces use the new secret and nonces made with
/// the previous one stay valid until they expire.
#[derive(Clone)]
pub struct NonceIssuer {
    current: HmacSha256,
    previous: Option<HmacSha256>,
}

impl fmt::Debug for NonceIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NonceIssuer")
            .field("previous", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

fn keyed_mac(secret: &[u8]) -> Result<HmacSha256, AuthError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(AuthError::WeakSecret {
            min: MIN_SECRET_LEN,
        });
    }
    HmacSha256::new_from_slice(secret).map_err(|_| AuthError::InvalidArgument("nonce secret"))
}

impl NonceIssuer {
    /// An issuer keyed with `secret` (at least [`MIN_SECRET_LEN`] bytes of real randomness).
    pub fn new(secret: &[u8]) -> Result<NonceIssuer, AuthError> {
        Ok(NonceIssuer {
            current: keyed_mac(secret)?,
            previous: None,
        })
    }

    /// Also accepts nonces made with `previous` (key rotation).
    pub fn with_previous_secret(mut self, previous: &[u8]) -> Result<NonceIssuer, AuthError> {
        self.previous = Some(keyed_mac(previous)?);
        Ok(self)
    }

    fn tag(key: &HmacSha256, issued: &[u8; 8], random: &[u8], realm: &str) -> HmacSha256 {
        let mut mac = key.clone();
        mac.update(NONCE_MAC_LABEL);
        mac.update(&[NONCE_VERSION]);
        mac.update(issued);
        mac.update(random);
        mac.update(realm.as_bytes());
        mac
    }

    /// A new nonce for `realm`, stamped `now_unix_ms`; `random` must be fresh randomness.
    pub fn issue(&self, realm: &str, now_unix_ms: u64, random: &[u8; NONCE_RANDOM_LEN]) -> String {
        let issued = now_unix_ms.to_be_bytes();
        let tag = Self::tag(&self.current, &issued, random, realm)
            .finalize()
            .into_bytes();
        let mut raw = Vec::with_capacity(NONCE_RAW_LEN);
        raw.push(NONCE_VERSION);
        raw.extend_from_slice(&issued);
        raw.extend_from_slice(random);
        raw.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Checks that `nonce` was issued by this issuer (or with the previous secret) for
    /// `realm`, in constant time, and returns its issue time (Unix ms). Does not judge age.
    pub fn check(&self, realm: &str, nonce: &str) -> Result<u64, AuthError> {
        if nonce.len() != NONCE_LEN {
            return Err(AuthError::InvalidNonce);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(nonce)
            .map_err(|_| AuthError::InvalidNonce)?;
        let (version, rest) = raw.split_first().ok_or(AuthError::InvalidNonce)?;
        let (issued, rest) = rest
            .split_first_chunk::<8>()
            .ok_or(AuthError::InvalidNonce)?;
        let (random, tag) = rest
            .split_at_checked(NONCE_RANDOM_LEN)
            .ok_or(AuthError::InvalidNonce)?;
        if *version != NONCE_VERSION || tag.len() != NONCE_TAG_LEN {
            return Err(AuthError::InvalidNonce);
        }
        let ok = std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .any(|key| {
                Self::tag(key, issued, random, realm)
                    .verify_slice(tag)
                    .is_ok()
            });
        if ok {
            Ok(u64::from_be_bytes(*issued))
        } else {
            Err(AuthError::InvalidNonce)
        }
    }
}

/// How a challenger treats `qop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QopPolicy {
    /// Offer `qop="auth"` and reject responses without qop (default; RFC 7616 §3.3 clients
    /// MUST use a qop that was offered).
    #[default]
    Require,
    /// Offer `qop="auth"` but also accept RFC 2069 responses (no qop) from old clients.
    /// Such responses carry no nonce count, so they can be replayed until the nonce expires.
    AllowLegacy,
    /// Offer no qop at all (an RFC 2069 challenge); accept responses with or without qop.
    Omit,
}

/// The stored secret for a user, returned by the lookup passed to [`Challenger::verify`].
#[derive(Clone)]
pub enum Secret {
    /// Cleartext password.
    Password(String),
    /// H(A1) as made by [`ha1`] for the algorithm the lookup was asked about (for a `-sess`
    /// algorithm: the base algorithm's value).
    Ha1(String),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Secret::Password(_) => "Secret::Password(..)",
            Secret::Ha1(_) => "Secret::Ha1(..)",
        })
    }
}

/// Issues challenges for one realm and verifies credentials against them.
#[derive(Debug, Clone)]
pub struct Challenger {
    realm: String,
    role: Role,
    issuer: NonceIssuer,
    algorithms: Vec<Algorithm>,
    nonce_lifetime_ms: u64,
    qop: QopPolicy,
    opaque: Option<String>,
    domain: Option<String>,
}

impl Challenger {
    /// A challenger for `realm` offering `SHA-256` then `MD5` (RFC 8760 §2.4 order of
    /// preference; MD5 stays for the many phones without SHA-256), with `qop="auth"`
    /// required, nonces valid for [`DEFAULT_NONCE_LIFETIME`], no `opaque` and no `domain`.
    pub fn new(realm: impl Into<String>, role: Role, issuer: NonceIssuer) -> Challenger {
        Challenger {
            realm: realm.into(),
            role,
            issuer,
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            nonce_lifetime_ms: duration_ms(DEFAULT_NONCE_LIFETIME),
            qop: QopPolicy::Require,
            opaque: None,
            domain: None,
        }
    }

    /// Algorithms to offer, most preferred first; one challenge each. Must be non-empty,
    /// supported and without repeats.
    pub fn with_algorithms(mut self, algorithms: Vec<Algorithm>) -> Result<Challenger, AuthError> {
        let repeated = algorithms
            .iter()
            .enumerate()
            .any(|(i, a)| algorithms.iter().skip(i + 1).any(|b| a == b));
        if algorithms.is_empty() || repeated || !algorithms.iter().all(Algorithm::is_supported) {
            return Err(AuthError::InvalidArgument("algorithms"));
        }
        self.algorithms = algorithms;
        Ok(self)
    }

    /// How long a nonce is accepted after it was issued (millisecond resolution).
    pub fn with_nonce_lifetime(mut self, lifetime: Duration) -> Challenger {
        self.nonce_lifetime_ms = duration_ms(lifetime);
        self
    }

    /// The [`QopPolicy`].
    pub fn with_qop_policy(mut self, qop: QopPolicy) -> Challenger {
        self.qop = qop;
        self
    }

    /// An `opaque` value sent in every challenge and required back unchanged.
    pub fn with_opaque(mut self, opaque: impl Into<String>) -> Challenger {
        self.opaque = Some(opaque.into());
        self
    }

    /// A `domain` value sent in every challenge.
    pub fn with_domain(mut self, domain: impl Into<String>) -> Challenger {
        self.domain = Some(domain.into());
        self
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The role (401 or 407).
    pub fn role(&self) -> Role {
        self.role
    }

    /// One challenge per offered algorithm, most preferred first, sharing one fresh nonce;
    /// send each as its own `WWW-Authenticate` / `Proxy-Authenticate` header
    /// ([`Role::challenge_header`]) in this order (RFC 8760 §2.4). `stale` comes from
    /// [`AuthError::reaction`] (false for a first challenge).
    pub fn challenges(
        &self,
        now_unix_ms: u64,
        random: &[u8; NONCE_RANDOM_LEN],
        stale: bool,
    ) -> Vec<Challenge> {
        let nonce = self.issuer.issue(&self.realm, now_unix_ms, random);
        let qop = match self.qop {
            QopPolicy::Require | QopPolicy::AllowLegacy => vec![Qop::Auth],
            QopPolicy::Omit => Vec::new(),
        };
        self.algorithms
            .iter()
            .map(|algorithm| Challenge {
                realm: self.realm.clone(),
                nonce: nonce.clone(),
                algorithm: algorithm.clone(),
                qop: qop.clone(),
                opaque: self.opaque.clone(),
                stale,
                domain: self.domain.clone(),
            })
            .collect()
    }

    /// Verifies `creds` from a request with `method` and `request_uri` (the Request-URI
    /// exactly as received; it must equal the digest `uri` byte for byte, which is also
    /// what the response covers). `lookup(username, realm, algorithm)` returns the user's
    /// [`Secret`] or `None` for an unknown user.
    ///
    /// Checks, in this order: realm, offered algorithm, opaque, qop/cnonce/nc consistency
    /// and policy, uri, nonce authenticity, response (constant time), then nonce age. An
    /// expired (or far-future) but authentic nonce with a correct response is
    /// [`AuthError::Stale`]. Nonce counts are not tracked: use
    /// [`Challenger::verify_counted`] for replay protection within a nonce's lifetime.
    pub fn verify<F>(
        &self,
        creds: &Credentials,
        method: &str,
        request_uri: &str,
        now_unix_ms: u64,
        lookup: F,
    ) -> Result<(), AuthError>
    where
        F: FnOnce(&str, &str, &Algorithm) -> Option<Secret>,
    {
        self.verify_inner(creds, method, request_uri, now_unix_ms, lookup)
            .map(|_| ())
    }

    /// [`Challenger::verify`], then records `nc` in `counts` and fails with
    /// [`AuthError::Replay`] if this nonce count was already accepted for this nonce.
    /// Responses without qop (only possible with [`QopPolicy::AllowLegacy`] / `Omit`) carry
    /// no count and are not tracked.
    pub fn verify_counted<F>(
        &self,
        creds: &Credentials,
        method: &str,
        request_uri: &str,
        now_unix_ms: u64,
        lookup: F,
        counts: &mut NonceCounts,
    ) -> Result<(), AuthError>
    where
        F: FnOnce(&str, &str, &Algorithm) -> Option<Secret>,
    {
        let issued = self.verify_inner(creds, method, request_uri, now_unix_ms, lookup)?;
        match creds.nc {
            Some(nc) if creds.qop.is_some() => {
                let expires = issued.saturating_add(self.nonce_lifetime_ms);
                counts.record(&creds.nonce, nc, expires, now_unix_ms)
            }
            _ => Ok(()),
        }
    }

    /// Returns the nonce's issue time on success.
    fn verify_inner<F>(
        &self,
        creds: &Credentials,
        method: &str,
        request_uri: &str,
        now_unix_ms: u64,
        lookup: F,
    ) -> Result<u64, AuthError>
    where
        F: FnOnce(&str, &str, &Algorithm) -> Option<Secret>,
    {
        if creds.realm != self.realm {
            return Err(AuthError::RealmMismatch);
        }
        if !self.algorithms.contains(&creds.algorithm) {
            return Err(AuthError::AlgorithmNotOffered);
        }
        if let Some(opaque) = &self.opaque
            && creds.opaque.as_ref() != Some(opaque)
        {
            return Err(AuthError::OpaqueMismatch);
        }
        let qop = match (&creds.qop, &creds.cnonce, creds.nc) {
            (Some(Qop::Auth), Some(cnonce), Some(nc)) if !cnonce.is_empty() && nc > 0 => {
                Some(QopInput { nc, cnonce })
            }
            (Some(Qop::Auth), _, _) => return Err(AuthError::QopParamsInconsistent),
            (Some(_), _, _) => return Err(AuthError::UnsupportedQop),
            // RFC 2617 §3.2.2: cnonce and nc MUST NOT be sent without qop.
            (None, Some(_), _) | (None, _, Some(_)) => {
                return Err(AuthError::QopParamsInconsistent);
            }
            (None, None, None) => {
                if self.qop == QopPolicy::Require || creds.algorithm.is_sess() {
                    return Err(AuthError::QopRequired);
                }
                None
            }
        };
        if creds.uri != request_uri {
            return Err(AuthError::UriMismatch);
        }
        let issued = self.issuer.check(&self.realm, &creds.nonce)?;
        let secret =
            lookup(&creds.username, &self.realm, &creds.algorithm).ok_or(AuthError::UnknownUser)?;
        let ha1_base = match secret {
            Secret::Password(password) => {
                ha1(&creds.algorithm, &creds.username, &self.realm, &password)?
            }
            Secret::Ha1(ha1) => ha1,
        };
        let expected = request_digest(
            &creds.algorithm,
            &ha1_base,
            &creds.nonce,
            method,
            &creds.uri,
            qop.as_ref(),
        )?;
        let received = creds.response.to_ascii_lowercase();
        if !bool::from(expected.as_bytes().ct_eq(received.as_bytes())) {
            return Err(AuthError::WrongResponse);
        }
        // Age only now: Stale promises the client its credentials were right.
        let too_old = now_unix_ms.saturating_sub(issued) > self.nonce_lifetime_ms;
        let from_future = issued.saturating_sub(now_unix_ms) > CLOCK_SKEW_MS;
        if too_old || from_future {
            return Err(AuthError::Stale);
        }
        Ok(issued)
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A bounded replay window of nonce counts, keyed by nonce (RFC 7616 §3.3, §5.10).
///
/// Per nonce it keeps the highest `nc` accepted and a 64-entry bitmap below it, like an
/// IPsec anti-replay window: counts may arrive out of order (parallel requests over UDP),
/// but each is accepted once; counts 64 or more below the highest are refused. Entries
/// expire with their nonce. When `capacity` nonces are tracked, expired entries are dropped
/// and then, if still full, the one expiring soonest; a dropped nonce's counts are
/// forgotten, so size it above the number of nonces live at once (≈ requests per nonce
/// lifetime). State is per instance: with several gateway instances a replay to another
/// instance is not caught. Deterministic (`BTreeMap`), no hashing randomness.
#[derive(Debug, Clone)]
pub struct NonceCounts {
    capacity: usize,
    entries: BTreeMap<String, NcWindow>,
}

#[derive(Debug, Clone, Copy)]
struct NcWindow {
    highest: u32,
    /// Bit `i` set: count `highest - i` was accepted.
    seen: u64,
    expires_unix_ms: u64,
}

impl NonceCounts {
    /// Tracks at most `capacity` nonces (at least 1).
    pub fn new(capacity: usize) -> NonceCounts {
        NonceCounts {
            capacity: capacity.max(1),
            entries: BTreeMap::new(),
        }
    }

    /// Number of nonces tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no nonce is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Accepts `nc` for `nonce` once; [`AuthError::Replay`] for a repeat or a count too far
    /// below the highest seen.
    pub fn record(
        &mut self,
        nonce: &str,
        nc: u32,
        expires_unix_ms: u64,
        now_unix_ms: u64,
    ) -> Result<(), AuthError> {
        if let Some(w) = self.entries.get_mut(nonce) {
            if nc > w.highest {
                let shift = nc - w.highest;
                w.seen = if shift >= 64 { 0 } else { w.seen << shift } | 1;
                w.highest = nc;
                return Ok(());
            }
            let back = w.highest - nc;
            if back >= 64 {
                return Err(AuthError::Replay);
            }
            let bit = 1u64 << back;
            if w.seen & bit != 0 {
                return Err(AuthError::Replay);
            }
            w.seen |= bit;
            return Ok(());
        }
        if self.entries.len() >= self.capacity {
            self.entries.retain(|_, w| w.expires_unix_ms > now_unix_ms);
        }
        if self.entries.len() >= self.capacity {
            let soonest = self
                .entries
                .iter()
                .min_by_key(|(_, w)| w.expires_unix_ms)
                .map(|(k, _)| k.clone());
            if let Some(k) = soonest {
                self.entries.remove(&k);
            }
        }
        self.entries.insert(
            nonce.to_owned(),
            NcWindow {
                highest: nc,
                seen: 1,
                expires_unix_ms,
            },
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const T0: u64 = 1_790_000_000_000; // Unix ms, late 2026
    const RND: [u8; 16] = [7; 16];

    fn qop_auth(nonce: &str, realm: &str, alg: Algorithm, opaque: Option<&str>) -> Challenge {
        Challenge {
            realm: realm.into(),
            nonce: nonce.into(),
            algorithm: alg,
            qop: vec![Qop::Auth],
            opaque: opaque.map(Into::into),
            stale: false,
            domain: None,
        }
    }

    // --- published vectors ---

    #[test]
    fn rfc2617_3_5_example() {
        let ch = qop_auth(
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "testrealm@host.com",
            Algorithm::Md5,
            Some("5ccc069c403ebaf9f0171e9517f40e41"),
        );
        let c = respond(
            &ch,
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "0a4f113b",
            1,
        )
        .unwrap();
        assert_eq!(c.response, "6629fae49393a05397450978507c4ef1");
        // And the RFC's own Authorization header parses to the same response.
        let wire = "Digest username=\"Mufasa\",\r\n realm=\"testrealm@host.com\",\r\n \
                    nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\",\r\n uri=\"/dir/index.html\",\r\n \
                    qop=auth,\r\n nc=00000001,\r\n cnonce=\"0a4f113b\",\r\n \
                    response=\"6629fae49393a05397450978507c4ef1\",\r\n \
                    opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"";
        let parsed = Credentials::parse(wire).unwrap();
        assert_eq!(parsed, c);
    }

    const RFC7616_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const RFC7616_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    const RFC7616_OPAQUE: &str = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";

    #[test]
    fn rfc7616_3_9_1_md5_and_sha256() {
        for (alg, expected) in [
            (Algorithm::Md5, "8ca523f5e9506fed4657c9700eebdbec"),
            (
                Algorithm::Sha256,
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
        ] {
            let wire = format!(
                "Digest\r\n realm=\"http-auth@example.org\",\r\n qop=\"auth, auth-int\",\r\n \
                 algorithm={alg},\r\n nonce=\"{RFC7616_NONCE}\",\r\n opaque=\"{RFC7616_OPAQUE}\""
            );
            let ch = Challenge::parse(&wire).unwrap();
            assert_eq!(ch.qop, vec![Qop::Auth, Qop::AuthInt]);
            assert_eq!(ch.algorithm, alg);
            let c = respond(
                &ch,
                "Mufasa",
                "Circle of Life",
                "GET",
                "/dir/index.html",
                RFC7616_CNONCE,
                1,
            )
            .unwrap();
            assert_eq!(c.response, expected, "{alg}");
            assert_eq!(c.qop, Some(Qop::Auth));
            assert_eq!(c.opaque.as_deref(), Some(RFC7616_OPAQUE));
        }
    }

    // draft-smith-sipping-auth-examples-01 (SIP flavoured, bob/zanzibar@biloxi.com); the
    // -sess and SHA-512-256 values were computed independently with Python's hashlib.
    const BOB_NONCE: &str = "dcd98b7102dd2f0e8b11d0f600bfb0c093";

    #[test]
    fn sip_auth_examples_qop_and_rfc2069() {
        assert_eq!(
            ha1(&Algorithm::Md5, "bob", "biloxi.com", "zanzibar").unwrap(),
            "12af60467a33e8518da5c68bbff12b11"
        );
        let mut ch = qop_auth(BOB_NONCE, "biloxi.com", Algorithm::Md5, None);
        let c = respond(
            &ch,
            "bob",
            "zanzibar",
            "INVITE",
            "sip:bob@biloxi.com",
            "0a4f113b",
            1,
        )
        .unwrap();
        assert_eq!(c.response, "89eb0059246c02b2f6ee02c7961d5ea3");
        // Same from the stored H(A1), in upper case.
        let c2 = respond_with_ha1(
            &ch,
            "bob",
            "12AF60467A33E8518DA5C68BBFF12B11",
            "INVITE",
            "sip:bob@biloxi.com",
            "0a4f113b",
            1,
        )
        .unwrap();
        assert_eq!(c2, c);
        // No qop in the challenge: RFC 2069 response, no cnonce/nc/qop sent.
        ch.qop.clear();
        let legacy = respond(
            &ch,
            "bob",
            "zanzibar",
            "INVITE",
            "sip:bob@biloxi.com",
            "x",
            9,
        )
        .unwrap();
        assert_eq!(legacy.response, "bf57e4e0d0bffc0fbaedce64d59add5e");
        assert_eq!((legacy.qop, legacy.cnonce, legacy.nc), (None, None, None));
    }

    #[test]
    fn sess_and_sha512_256_vectors() {
        for (alg, expected) in [
            (
                Algorithm::Sha256Sess,
                "40fb4705be6765fa1ee8278d3169ce959b91e88a04b2608b9fa273fda27eba9e",
            ),
            (
                Algorithm::Sha512_256,
                "de21270dfb2d9596656449967c261c7ab7b637cf862615555e957d0b0ba8413a",
            ),
            (
                Algorithm::Sha512_256Sess,
                "88f0b46a9bcc6e29f8262f01cba67173279a526bd4a1508c5bd41866e1d67e2f",
            ),
        ] {
            let ch = qop_auth(BOB_NONCE, "biloxi.com", alg.clone(), None);
            let c = respond(
                &ch,
                "bob",
                "zanzibar",
                "REGISTER",
                "sip:biloxi.com",
                "0a4f113b",
                2,
            )
            .unwrap();
            assert_eq!(c.response, expected, "{alg}");
        }
        let ch = qop_auth(BOB_NONCE, "biloxi.com", Algorithm::Md5Sess, None);
        let c = respond(
            &ch,
            "bob",
            "zanzibar",
            "INVITE",
            "sip:bob@biloxi.com",
            "0a4f113b",
            1,
        )
        .unwrap();
        assert_eq!(c.response, "e4e4ea61d186d07a92c9e1f6919902e9");
    }

    #[test]
    fn responder_refusals() {
        let mut ch = qop_auth(
            BOB_NONCE,
            "biloxi.com",
            Algorithm::Other("SHA-3".into()),
            None,
        );
        let r = |ch: &Challenge| respond(ch, "bob", "pw", "INVITE", "sip:b@c", "cn", 1);
        assert_eq!(r(&ch), Err(AuthError::UnsupportedAlgorithm));
        ch.algorithm = Algorithm::Md5;
        ch.qop = vec![Qop::AuthInt];
        assert_eq!(r(&ch), Err(AuthError::UnsupportedQop));
        ch.qop.clear();
        ch.algorithm = Algorithm::Md5Sess;
        assert_eq!(r(&ch), Err(AuthError::QopRequired));
        ch.algorithm = Algorithm::Md5;
        ch.qop = vec![Qop::Auth];
        assert_eq!(
            respond(&ch, "bob", "pw", "INVITE", "sip:b@c", "", 1),
            Err(AuthError::InvalidArgument("cnonce"))
        );
        assert_eq!(
            respond(&ch, "bob", "pw", "INVITE", "sip:b@c", "cn", 0),
            Err(AuthError::InvalidArgument("nc"))
        );
        assert_eq!(
            respond_with_ha1(&ch, "bob", "abc", "INVITE", "sip:b@c", "cn", 1),
            Err(AuthError::InvalidArgument("h(a1)"))
        );
    }

    #[test]
    fn rfc8760_2_4_select_topmost_supported() {
        let a = qop_auth("n", "r", Algorithm::Other("SHA-3-512".into()), None);
        let mut b = qop_auth("n", "r", Algorithm::Sha256, None);
        b.qop = vec![Qop::AuthInt];
        let c = qop_auth("n", "r", Algorithm::Sha512_256, None);
        let d = qop_auth("n", "r", Algorithm::Md5, None);
        let all = [a, b, c, d];
        assert_eq!(
            select_challenge(&all).unwrap().algorithm,
            Algorithm::Sha512_256
        );
        assert!(select_challenge(all.iter().take(2)).is_none());
    }

    // --- challenger round trips ---

    fn registrar() -> Challenger {
        Challenger::new("biloxi.com", Role::Uas, NonceIssuer::new(SECRET).unwrap())
    }

    fn bob(user: &str, _realm: &str, _alg: &Algorithm) -> Option<Secret> {
        (user == "bob").then(|| Secret::Password("zanzibar".into()))
    }

    /// 401 → pick → respond → print → parse, as a UAC and a registrar would.
    fn answer(ch: &Challenge, password: &str, uri: &str, nc: u32) -> Credentials {
        let wire_ch = ch.to_header_value().unwrap();
        let ch = Challenge::parse(&wire_ch).unwrap();
        let c = respond(
            &ch,
            "bob",
            password,
            "REGISTER",
            uri,
            "a1b2c3d4e5f60718",
            nc,
        )
        .unwrap();
        Credentials::parse(&c.to_header_value().unwrap()).unwrap()
    }

    #[test]
    fn round_trip_sha256_then_md5() {
        let reg = registrar();
        let chs = reg.challenges(T0, &RND, false);
        assert_eq!(chs.len(), 2);
        assert_eq!(chs[0].algorithm, Algorithm::Sha256);
        assert_eq!(chs[1].algorithm, Algorithm::Md5);
        assert_eq!(chs[0].nonce.len(), NONCE_LEN);
        for ch in &chs {
            let creds = answer(ch, "zanzibar", "sip:biloxi.com", 1);
            assert_eq!(creds.algorithm, ch.algorithm);
            assert_eq!(
                reg.verify(&creds, "REGISTER", "sip:biloxi.com", T0 + 1_000, bob),
                Ok(())
            );
            // Stored H(A1) instead of the password.
            let stored = |u: &str, r: &str, a: &Algorithm| {
                Some(Secret::Ha1(ha1(a, u, r, "zanzibar").unwrap()))
            };
            assert_eq!(
                reg.verify(&creds, "REGISTER", "sip:biloxi.com", T0 + 1_000, stored),
                Ok(())
            );
            // Method is covered by the digest.
            assert_eq!(
                reg.verify(&creds, "INVITE", "sip:biloxi.com", T0 + 1_000, bob),
                Err(AuthError::WrongResponse)
            );
        }
    }

    #[test]
    fn wrong_password_and_unknown_user() {
        let reg = registrar();
        let ch = &reg.challenges(T0, &RND, false)[0];
        let creds = answer(ch, "wrong", "sip:biloxi.com", 1);
        let e = reg
            .verify(&creds, "REGISTER", "sip:biloxi.com", T0, bob)
            .unwrap_err();
        assert_eq!(e, AuthError::WrongResponse);
        assert_eq!(e.reaction(), Reaction::Challenge { stale: false });
        assert_eq!(e.reaction().status(Role::Uas), 401);
        assert_eq!(e.reaction().status(Role::Proxy), 407);
        let e = reg
            .verify(&creds, "REGISTER", "sip:biloxi.com", T0, |_, _, _| None)
            .unwrap_err();
        assert_eq!(e, AuthError::UnknownUser);
        assert_eq!(e.reaction(), Reaction::Challenge { stale: false });
    }

    #[test]
    fn tampered_and_foreign_nonces() {
        let reg = registrar();
        let ch = &reg.challenges(T0, &RND, false)[0];
        let good = answer(ch, "zanzibar", "sip:biloxi.com", 1);
        let verify = |c: &Credentials| reg.verify(c, "REGISTER", "sip:biloxi.com", T0, bob);

        // Flip each character in turn: never accepted.
        for i in 0..good.nonce.len() {
            let mut bytes = good.nonce.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let nonce = String::from_utf8(bytes).unwrap();
            let mut ch2 = ch.clone();
            ch2.nonce = nonce;
            let forged = answer(&ch2, "zanzibar", "sip:biloxi.com", 1);
            assert_eq!(verify(&forged), Err(AuthError::InvalidNonce), "char {i}");
        }
        // Made-up nonce of any shape.
        for n in ["", "abc", BOB_NONCE, &"A".repeat(NONCE_LEN)] {
            let mut ch2 = ch.clone();
            ch2.nonce = n.into();
            let forged = answer(&ch2, "zanzibar", "sip:biloxi.com", 1);
            assert_eq!(verify(&forged), Err(AuthError::InvalidNonce));
        }
        // Same secret, other realm's nonce.
        let other = Challenger::new("atlanta.com", Role::Uas, NonceIssuer::new(SECRET).unwrap());
        let mut ch2 = ch.clone();
        ch2.nonce = other.challenges(T0, &RND, false)[0].nonce.clone();
        assert_eq!(
            verify(&answer(&ch2, "zanzibar", "sip:biloxi.com", 1)),
            Err(AuthError::InvalidNonce)
        );
        // Other secret.
        let stranger = Challenger::new(
            "biloxi.com",
            Role::Uas,
            NonceIssuer::new(b"another secret of 32 bytes......").unwrap(),
        );
        let c = answer(
            &stranger.challenges(T0, &RND, false)[0],
            "zanzibar",
            "sip:biloxi.com",
            1,
        );
        assert_eq!(verify(&c), Err(AuthError::InvalidNonce));
        assert_eq!(
            AuthError::InvalidNonce.reaction(),
            Reaction::Challenge { stale: false }
        );
    }

    #[test]
    fn secret_rotation() {
        let old = b"old secret, at least 16 bytes";
        let new = b"new secret, at least 16 bytes";
        let before = Challenger::new("biloxi.com", Role::Uas, NonceIssuer::new(old).unwrap());
        let creds = answer(
            &before.challenges(T0, &RND, false)[0],
            "zanzibar",
            "sip:biloxi.com",
            1,
        );
        let after = Challenger::new(
            "biloxi.com",
            Role::Uas,
            NonceIssuer::new(new)
                .unwrap()
                .with_previous_secret(old)
                .unwrap(),
        );
        assert_eq!(
            after.verify(&creds, "REGISTER", "sip:biloxi.com", T0, bob),
            Ok(())
        );
        let without = Challenger::new("biloxi.com", Role::Uas, NonceIssuer::new(new).unwrap());
        assert_eq!(
            without.verify(&creds, "REGISTER", "sip:biloxi.com", T0, bob),
            Err(AuthError::InvalidNonce)
        );
    }

    #[test]
    fn expired_nonce_is_stale_only_with_the_right_password() {
        let reg = registrar().with_nonce_lifetime(Duration::from_secs(30));
        let ch = &reg.challenges(T0, &RND, false)[0];
        let creds = answer(ch, "zanzibar", "sip:biloxi.com", 1);
        let at = |now| reg.verify(&creds, "REGISTER", "sip:biloxi.com", now, bob);
        assert_eq!(at(T0 + 30_000), Ok(()));
        let e = at(T0 + 30_001).unwrap_err();
        assert_eq!(e, AuthError::Stale);
        assert_eq!(e.reaction(), Reaction::Challenge { stale: true });
        // From the future beyond the skew allowance (clock went back): stale too.
        assert_eq!(at(T0 - CLOCK_SKEW_MS), Ok(()));
        assert_eq!(at(T0 - CLOCK_SKEW_MS - 1), Err(AuthError::Stale));
        // Expired and wrong password: not stale.
        let wrong = answer(ch, "guess", "sip:biloxi.com", 1);
        assert_eq!(
            reg.verify(&wrong, "REGISTER", "sip:biloxi.com", T0 + 60_000, bob),
            Err(AuthError::WrongResponse)
        );
        // The re-challenge carries stale=true on the wire.
        let again = reg.challenges(T0 + 30_001, &[9; 16], true);
        let v = again[0].to_header_value().unwrap();
        assert!(v.contains("stale=true"), "{v}");
        assert!(Challenge::parse(&v).unwrap().stale);
    }

    #[test]
    fn uri_must_match_request_uri() {
        let reg = registrar();
        let ch = &reg.challenges(T0, &RND, false)[0];
        let creds = answer(ch, "zanzibar", "sip:biloxi.com", 1);
        let e = reg
            .verify(&creds, "REGISTER", "sip:biloxi.com;transport=tcp", T0, bob)
            .unwrap_err();
        assert_eq!(e, AuthError::UriMismatch);
        assert_eq!(e.reaction(), Reaction::BadRequest);
    }

    #[test]
    fn realm_algorithm_opaque_and_qop_policy() {
        let reg = registrar()
            .with_algorithms(vec![Algorithm::Sha256])
            .unwrap()
            .with_opaque("op\"aque");
        let ch = &reg.challenges(T0, &RND, false)[0];
        let good = answer(ch, "zanzibar", "sip:biloxi.com", 1);
        assert_eq!(good.opaque.as_deref(), Some("op\"aque"));
        let v = |c: &Credentials| reg.verify(c, "REGISTER", "sip:biloxi.com", T0, bob);
        assert_eq!(v(&good), Ok(()));

        let mut c = good.clone();
        c.realm = "atlanta.com".into();
        assert_eq!(v(&c), Err(AuthError::RealmMismatch));

        let mut md5 = ch.clone();
        md5.algorithm = Algorithm::Md5;
        assert_eq!(
            v(&answer(&md5, "zanzibar", "sip:biloxi.com", 1)),
            Err(AuthError::AlgorithmNotOffered)
        );

        let mut c = good.clone();
        c.opaque = None;
        assert_eq!(v(&c), Err(AuthError::OpaqueMismatch));

        let mut c = good.clone();
        c.cnonce = None;
        assert_eq!(v(&c), Err(AuthError::QopParamsInconsistent));
        let mut c = good.clone();
        c.qop = Some(Qop::AuthInt);
        assert_eq!(v(&c), Err(AuthError::UnsupportedQop));
        let mut c = good.clone();
        c.qop = None;
        assert_eq!(v(&c), Err(AuthError::QopParamsInconsistent));
        assert_eq!(
            AuthError::QopParamsInconsistent.reaction(),
            Reaction::BadRequest
        );

        // An RFC 2069 answer (client ignored qop): refused by Require, accepted by AllowLegacy.
        let mut legacy_ch = ch.clone();
        legacy_ch.qop.clear();
        let legacy = answer(&legacy_ch, "zanzibar", "sip:biloxi.com", 1);
        assert_eq!(v(&legacy), Err(AuthError::QopRequired));
        let lenient = reg.clone().with_qop_policy(QopPolicy::AllowLegacy);
        assert_eq!(
            lenient.verify(&legacy, "REGISTER", "sip:biloxi.com", T0, bob),
            Ok(())
        );
    }

    #[test]
    fn rfc2069_challenger_round_trip() {
        let reg = registrar()
            .with_algorithms(vec![Algorithm::Md5])
            .unwrap()
            .with_qop_policy(QopPolicy::Omit);
        let ch = &reg.challenges(T0, &RND, false)[0];
        let v = ch.to_header_value().unwrap();
        assert!(!v.contains("qop"), "{v}");
        let creds = answer(ch, "zanzibar", "sip:biloxi.com", 1);
        assert_eq!(creds.qop, None);
        assert!(!creds.to_header_value().unwrap().contains("nc="));
        assert_eq!(
            reg.verify(&creds, "REGISTER", "sip:biloxi.com", T0, bob),
            Ok(())
        );
    }

    #[test]
    fn sess_round_trip_and_proxy_role() {
        let proxy = Challenger::new(
            "atlanta.com",
            Role::Proxy,
            NonceIssuer::new(SECRET).unwrap(),
        )
        .with_algorithms(vec![Algorithm::Sha256Sess, Algorithm::Md5Sess])
        .unwrap();
        assert_eq!(proxy.role().challenge_header(), "Proxy-Authenticate");
        assert_eq!(proxy.role().credentials_header(), "Proxy-Authorization");
        for ch in proxy.challenges(T0, &RND, false) {
            let c = respond(
                &ch,
                "alice",
                "pw",
                "INVITE",
                "sip:bob@biloxi.com",
                "cafe",
                1,
            )
            .unwrap();
            let stored =
                |u: &str, r: &str, a: &Algorithm| Some(Secret::Ha1(ha1(a, u, r, "pw").unwrap()));
            assert_eq!(
                proxy.verify(&c, "INVITE", "sip:bob@biloxi.com", T0, stored),
                Ok(())
            );
        }
    }

    #[test]
    fn nonce_count_replay_window() {
        let reg = registrar();
        let ch = &reg.challenges(T0, &RND, false)[0];
        let mut counts = NonceCounts::new(8);
        let v = |nc: u32, counts: &mut NonceCounts| {
            let c = answer(ch, "zanzibar", "sip:biloxi.com", nc);
            reg.verify_counted(&c, "REGISTER", "sip:biloxi.com", T0, bob, counts)
        };
        assert_eq!(v(1, &mut counts), Ok(()));
        assert_eq!(v(1, &mut counts), Err(AuthError::Replay));
        assert_eq!(v(3, &mut counts), Ok(()));
        assert_eq!(v(2, &mut counts), Ok(())); // out of order, first time
        assert_eq!(v(2, &mut counts), Err(AuthError::Replay));
        assert_eq!(v(100, &mut counts), Ok(()));
        assert_eq!(v(36, &mut counts), Err(AuthError::Replay)); // 64 or more below the highest
        assert_eq!(v(37, &mut counts), Ok(()));
        assert_eq!(
            AuthError::Replay.reaction(),
            Reaction::Challenge { stale: true }
        );
        // Wrong password never touches the counts.
        let wrong = answer(ch, "guess", "sip:biloxi.com", 500);
        assert_eq!(
            reg.verify_counted(&wrong, "REGISTER", "sip:biloxi.com", T0, bob, &mut counts),
            Err(AuthError::WrongResponse)
        );
        assert_eq!(v(500, &mut counts), Ok(()));
    }

    #[test]
    fn nonce_counts_are_bounded() {
        let mut counts = NonceCounts::new(2);
        counts.record("a", 1, 100, 0).unwrap();
        counts.record("b", 1, 200, 0).unwrap();
        counts.record("c", 1, 300, 0).unwrap(); // evicts "a", the soonest to expire
        assert_eq!(counts.len(), 2);
        assert_eq!(counts.record("b", 1, 200, 0), Err(AuthError::Replay));
        counts.record("d", 1, 400, 250).unwrap(); // "b" expired: dropped first
        assert_eq!(counts.record("c", 1, 300, 250), Err(AuthError::Replay));
        assert_eq!(counts.len(), 2);
    }

    #[test]
    fn configuration_misuse() {
        assert_eq!(
            NonceIssuer::new(b"short").unwrap_err(),
            AuthError::WeakSecret {
                min: MIN_SECRET_LEN
            }
        );
        assert_eq!(
            AuthError::WeakSecret { min: 16 }.reaction(),
            Reaction::ServerError
        );
        for bad in [
            vec![],
            vec![Algorithm::Other("X".into())],
            vec![Algorithm::Md5, Algorithm::Md5],
        ] {
            assert!(registrar().with_algorithms(bad).is_err());
        }
        // Debug never shows secrets.
        let s = format!(
            "{:?} {:?}",
            registrar(),
            Secret::Password("zanzibar".into())
        );
        assert!(
            !s.contains("zanzibar") && !s.contains("0123456789abcdef"),
            "{s}"
        );
    }

    // --- header syntax ---

    #[test]
    fn challenge_parse_print_round_trip() {
        let ch = Challenge {
            realm: "atlanta.com \"main\" \\ office".into(),
            nonce: "f84f1cec41e6cbe5aea9c8e88d359".into(),
            algorithm: Algorithm::Sha512_256Sess,
            qop: vec![Qop::Auth, Qop::AuthInt, Qop::Other("x-new".into())],
            opaque: Some(String::new()),
            stale: true,
            domain: Some("sip:ss1.carrier.com sip:ss2.carrier.com".into()),
        };
        let v = ch.to_header_value().unwrap();
        assert_eq!(
            v,
            "Digest realm=\"atlanta.com \\\"main\\\" \\\\ office\", \
             domain=\"sip:ss1.carrier.com sip:ss2.carrier.com\", \
             nonce=\"f84f1cec41e6cbe5aea9c8e88d359\", opaque=\"\", stale=true, \
             algorithm=SHA-512-256-sess, qop=\"auth,auth-int,x-new\""
        );
        assert_eq!(Challenge::parse(&v).unwrap(), ch);
        assert_eq!(v.parse::<Challenge>().unwrap(), ch);
    }

    #[test]
    fn rfc3261_example_challenge_and_leniency() {
        // RFC 3261 §20.44 example, FALSE in upper case, folded over lines.
        let ch = Challenge::parse(
            "Digest realm=\"atlanta.com\",\r\n domain=\"sip:boxesbybob.com\", qop=\"auth\",\r\n\t\
             nonce=\"f84f1cec41e6cbe5aea9c8e88d359\",\r\n opaque=\"\", stale=FALSE, algorithm=MD5",
        )
        .unwrap();
        assert_eq!(ch.realm, "atlanta.com");
        assert_eq!(ch.qop, vec![Qop::Auth]);
        assert_eq!(ch.opaque.as_deref(), Some(""));
        assert!(!ch.stale);
        // Case-insensitive scheme, names, algorithm and qop; token/quoted either way; no
        // algorithm means MD5; unknown params ignored; empty list elements skipped.
        let ch = Challenge::parse(
            "  dIgEsT  REALM = biloxi.com ,, NONCE=\"n\" , qop=AUTH, Algorithm=\"sha-256\", \
             charset=UTF-8, userhash=false,",
        )
        .unwrap();
        assert_eq!(ch.realm, "biloxi.com");
        assert_eq!(ch.nonce, "n");
        assert_eq!(ch.qop, vec![Qop::Auth]);
        assert_eq!(ch.algorithm, Algorithm::Sha256);
        let ch = Challenge::parse("Digest realm=\"r\", nonce=\"n\"").unwrap();
        assert_eq!(ch.algorithm, Algorithm::Md5);
        assert!(ch.qop.is_empty());
        assert!(ch.is_answerable()); // answered the RFC 2069 way
        // UTF-8 in quoted strings is kept.
        let ch = Challenge::parse("Digest realm=\"réseau\", nonce=\"n\"").unwrap();
        assert_eq!(ch.realm, "réseau");
    }

    #[test]
    fn credentials_parse_print_round_trip() {
        let c = Credentials {
            username: "bob \"the\" builder".into(),
            realm: "biloxi.com".into(),
            nonce: "n o n c e".into(),
            uri: "sip:bob@biloxi.com;transport=tcp".into(),
            response: "0123456789abcdef0123456789abcdef".into(),
            algorithm: Algorithm::Md5,
            cnonce: Some("0a4f113b".into()),
            qop: Some(Qop::Auth),
            nc: Some(0xdead_beef),
            opaque: Some("x".into()),
        };
        let v = c.to_header_value().unwrap();
        assert!(v.contains("nc=deadbeef") && v.contains("qop=auth,"), "{v}");
        assert_eq!(Credentials::parse(&v).unwrap(), c);
        // Upper-case hex nc is read.
        let v2 = v.replace("nc=deadbeef", "nc=DEADBEEF");
        assert_eq!(v2.parse::<Credentials>().unwrap(), c);
        // Legacy: no qop, cnonce, nc.
        let legacy = Credentials {
            cnonce: None,
            qop: None,
            nc: None,
            opaque: None,
            ..c
        };
        let v = legacy.to_header_value().unwrap();
        assert!(
            !v.contains("qop") && !v.contains("nc=") && !v.contains("cnonce"),
            "{v}"
        );
        assert_eq!(Credentials::parse(&v).unwrap(), legacy);
    }

    #[test]
    fn malformed_headers_are_typed_errors() {
        let ok = "Digest username=\"u\", realm=\"r\", nonce=\"n\", uri=\"sip:a\", response=\"ab\"";
        assert!(Credentials::parse(ok).is_ok());
        let cases: &[(&str, AuthError)] = &[
            (
                "",
                AuthError::Syntax {
                    at: 0,
                    expected: "authentication scheme",
                },
            ),
            ("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", AuthError::NotDigest),
            ("Digest", AuthError::MissingParam("username")),
            (
                "Digest,username=\"u\"",
                AuthError::Syntax {
                    at: 6,
                    expected: "whitespace after the scheme",
                },
            ),
            (
                "Digest username",
                AuthError::Syntax {
                    at: 15,
                    expected: "'='",
                },
            ),
            (
                "Digest username=",
                AuthError::Syntax {
                    at: 16,
                    expected: "token or quoted-string",
                },
            ),
            (
                "Digest username=\"u",
                AuthError::Syntax {
                    at: 18,
                    expected: "closing '\"'",
                },
            ),
            (
                "Digest username=\"u\" realm=\"r\"",
                AuthError::Syntax {
                    at: 20,
                    expected: "',' or end of header",
                },
            ),
            (
                "Digest username=\"a\nb\"",
                AuthError::Syntax {
                    at: 18,
                    expected: "printable character",
                },
            ),
            (
                "Digest username=\"a\\\u{1}\"",
                AuthError::Syntax {
                    at: 18,
                    expected: "printable character after '\\'",
                },
            ),
            (
                "Digest username=\"u\", USERNAME=\"v\"",
                AuthError::DuplicateParam { at: 21 },
            ),
            (
                &ok.replace("response=\"ab\"", "response=\"xyz\""),
                AuthError::InvalidParam("response"),
            ),
            (&format!("{ok}, nc=1"), AuthError::InvalidParam("nc")),
            (&format!("{ok}, nc=0000000g"), AuthError::InvalidParam("nc")),
            (
                &format!("{ok}, algorithm=\"MD 5\""),
                AuthError::InvalidParam("algorithm"),
            ),
            (
                &format!("{ok}, qop=\"a b\""),
                AuthError::InvalidParam("qop"),
            ),
            (
                &ok.replace(", uri=\"sip:a\"", ""),
                AuthError::MissingParam("uri"),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                &Credentials::parse(input).unwrap_err(),
                expected,
                "{input:?}"
            );
            assert_eq!(
                expected.category(),
                match expected {
                    AuthError::NotDigest => Category::Peer,
                    _ => Category::Parse,
                }
            );
        }
        let long = format!(
            "Digest realm=\"{}\", nonce=\"n\"",
            "a".repeat(MAX_HEADER_LEN)
        );
        assert_eq!(
            Challenge::parse(&long),
            Err(AuthError::TooLarge {
                limit: MAX_HEADER_LEN
            })
        );
        let many: String = (0..=MAX_PARAMS).map(|i| format!("p{i}=v, ")).collect();
        assert_eq!(
            Challenge::parse(&format!("Digest {many}")),
            Err(AuthError::TooManyParams { limit: MAX_PARAMS })
        );
        assert_eq!(
            Challenge::parse("Digest nonce=\"n\""),
            Err(AuthError::MissingParam("realm"))
        );
        assert_eq!(
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", qop=\"auth,a/b\""),
            Err(AuthError::InvalidParam("qop"))
        );
    }

    #[test]
    fn printer_refuses_header_injection() {
        let mut ch = qop_auth("n", "evil\r\nVia: x", Algorithm::Md5, None);
        assert_eq!(
            ch.to_header_value(),
            Err(AuthError::InvalidArgument("realm"))
        );
        ch.realm = "r".into();
        ch.algorithm = Algorithm::Other("MD5, x=y".into());
        assert_eq!(
            ch.to_header_value(),
            Err(AuthError::InvalidArgument("algorithm"))
        );
        ch.algorithm = Algorithm::Md5;
        ch.qop = vec![Qop::Other("a\"b".into())];
        assert_eq!(ch.to_header_value(), Err(AuthError::InvalidArgument("qop")));
        let c = respond(
            &qop_auth("n", "r", Algorithm::Md5, None),
            "bob",
            "pw",
            "REGISTER",
            "sip:r",
            "bad\ncnonce",
            1,
        )
        .unwrap();
        assert_eq!(
            c.to_header_value(),
            Err(AuthError::InvalidArgument("cnonce"))
        );
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_strings_never_panics(s in any::<String>()) {
            let _ = Challenge::parse(&s);
            let _ = Credentials::parse(&s);
        }

        #[test]
        fn parsing_arbitrary_bytes_never_panics(
            b in proptest::collection::vec(any::<u8>(), 0..(MAX_HEADER_LEN + 64)),
        ) {
            let s = String::from_utf8_lossy(&b);
            let _ = Challenge::parse(&s);
            let _ = Credentials::parse(&s);
            let with_scheme = format!("Digest {s}");
            let _ = Challenge::parse(&with_scheme);
            let _ = Credentials::parse(&with_scheme);
        }

        #[test]
        fn parsing_digest_like_strings_never_panics(
            s in "(?i:digest)[ \t]{0,2}([a-z]{1,8}[ ]?=[ ]?(\"([^\"\\\\]|\\\\.){0,12}\"|[a-z0-9-]{0,8})[ ,\r\n\t]{0,3}){0,10}"
        ) {
            let _ = Challenge::parse(&s);
            let _ = Credentials::parse(&s);
        }

        #[test]
        fn challenge_round_trips(
            realm in "[^\\p{Cc}]{0,20}",
            nonce in "[ -~]{1,40}",
            opaque in proptest::option::of("[^\\p{Cc}]{0,20}"),
            stale in any::<bool>(),
            alg in 0usize..7,
        ) {
            let algorithm = [
                Algorithm::Md5, Algorithm::Md5Sess, Algorithm::Sha256, Algorithm::Sha256Sess,
                Algorithm::Sha512_256, Algorithm::Sha512_256Sess, Algorithm::Other("X-1".into()),
            ][alg].clone();
            let ch = Challenge { realm, nonce, algorithm, qop: vec![Qop::Auth], opaque, stale, domain: None };
            let v = ch.to_header_value().unwrap();
            prop_assert_eq!(Challenge::parse(&v).unwrap(), ch);
        }

        #[test]
        fn credentials_round_trip_and_verify(
            user in "[^\\p{Cc}]{1,16}",
            password in "\\PC{0,16}",
            uri in "sip:[a-z0-9.@;=]{1,30}",
            nc in 1u32..,
            sha in any::<bool>(),
            rnd in any::<[u8; 16]>(),
        ) {
            let reg = registrar();
            let chs = reg.challenges(T0, &rnd, false);
            let ch = &chs[usize::from(!sha)];
            let c = respond(ch, &user, &password, "INVITE", &uri, "0a4f113b", nc).unwrap();
            let c2 = Credentials::parse(&c.to_header_value().unwrap()).unwrap();
            prop_assert_eq!(&c2, &c);
            let lookup = |u: &str, _: &str, _: &Algorithm| (u == user).then(|| Secret::Password(password.clone()));
            prop_assert_eq!(reg.verify(&c2, "INVITE", &uri, T0, lookup), Ok(()));
        }
    }
}
