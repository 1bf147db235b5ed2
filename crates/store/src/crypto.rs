//! Secrets at rest.
//!
//! Two kinds of secret, two treatments:
//! - Secrets the gateway must *present* (upstream tokens and OAuth client secrets, SIP digest
//!   passwords, TLS private keys, end-to-end media keys) are encrypted with AES-256-GCM under
//!   a [`SecretKey`] from the environment, with a fresh random 96-bit nonce per value and the
//!   table/column/row id as associated data, so a ciphertext copied to another row or column
//!   does not decrypt. Stored as `version(1) || nonce(12) || ciphertext || tag(16)`.
//! - Secrets the gateway only *verifies* (admin tokens, customer tokens, OAuth client secrets
//!   it issues) are stored as SHA-256 hashes. These are 256-bit random values generated here,
//!   so a fast unsalted hash is adequate: brute force over 2^256 is out of reach and there is
//!   no low-entropy password to protect with a slow KDF. Comparisons are constant-time.

use crate::error::{Error, Result};
use base64::Engine as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

const FORMAT_V1: u8 = 1;

/// The 32-byte AES-256-GCM key protecting stored secrets. Debug never prints it.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SecretKey(bytes)
    }

    /// Reads a standard-base64 32-byte key from the environment variable `var`
    /// (conventionally `RIPT_SECRET_KEY`; generate one with `openssl rand -base64 32`).
    pub fn from_env(var: &str) -> Result<Self> {
        let text = std::env::var(var).map_err(|_| Error::Key("environment variable not set"))?;
        Self::from_base64(&text)
    }

    pub fn from_base64(text: &str) -> Result<Self> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| Error::Key("not valid base64"))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| Error::Key("must decode to exactly 32 bytes"))?;
        Ok(SecretKey(key))
    }

    /// A fresh random key (tests, first-run setup).
    pub fn generate() -> Result<Self> {
        let mut k = [0u8; 32];
        SystemRandom::new()
            .fill(&mut k)
            .map_err(|_| Error::Key("system random source failed"))?;
        Ok(SecretKey(k))
    }

    fn aead(&self) -> Result<LessSafeKey> {
        let unbound =
            UnboundKey::new(&AES_256_GCM, &self.0).map_err(|_| Error::Key("rejected by AES"))?;
        Ok(LessSafeKey::new(unbound))
    }

    /// Encrypts `plain`, binding it to `aad` (`table.column:row-id`).
    pub(crate) fn seal(&self, aad: &str, plain: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| Error::Key("system random source failed"))?;
        let mut buf = plain.to_vec();
        self.aead()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut buf,
            )
            .map_err(|_| Error::Key("encryption failed"))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + buf.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Decrypts a value produced by [`SecretKey::seal`] with the same `aad`.
    pub(crate) fn open(&self, column: &'static str, aad: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        let bad = Error::Decrypt { column };
        let (version, rest) = sealed.split_first().ok_or(Error::Corrupt { column })?;
        if *version != FORMAT_V1 || rest.len() < NONCE_LEN {
            return Err(Error::Corrupt { column });
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| Error::Corrupt { column })?;
        let mut buf = ct.to_vec();
        let plain = self
            .aead()?
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut buf)
            .map_err(|_| bad)?;
        Ok(plain.to_vec())
    }

    pub(crate) fn seal_str(&self, aad: &str, s: &Secret) -> Result<Vec<u8>> {
        self.seal(aad, s.0.as_bytes())
    }

    pub(crate) fn open_str(
        &self,
        column: &'static str,
        aad: &str,
        sealed: &[u8],
    ) -> Result<Secret> {
        let plain = self.open(column, aad, sealed)?;
        String::from_utf8(plain)
            .map(Secret)
            .map_err(|_| Error::Corrupt { column })
    }
}

/// A secret value the gateway must present to someone else. It deserializes from a plain
/// string (the admin API accepts it) but has no `Serialize` and a redacting `Debug`, so it
/// cannot leak through the API or logs; fields holding it are `skip_serializing`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The plaintext, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A freshly issued bearer token or client secret: shown to the caller once, stored hashed.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct IssuedSecret(String);

impl IssuedSecret {
    pub(crate) fn generate() -> Result<Self> {
        let mut raw = [0u8; 32];
        SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| Error::Key("system random source failed"))?;
        Ok(IssuedSecret(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw),
        ))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for IssuedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IssuedSecret(***)")
    }
}

/// SHA-256 of a token; see the module doc for why this is adequate.
pub(crate) fn hash_token(token: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

/// Compares two byte strings in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_aad_binding() -> Result<()> {
        let k = SecretKey::generate()?;
        let sealed = k.seal("t.c:1", b"hunter2")?;
        assert_eq!(k.open("c", "t.c:1", &sealed)?, b"hunter2");
        assert!(matches!(
            k.open("c", "t.c:2", &sealed),
            Err(Error::Decrypt { .. })
        ));
        let other = SecretKey::generate()?;
        assert!(matches!(
            other.open("c", "t.c:1", &sealed),
            Err(Error::Decrypt { .. })
        ));
        // Two seals of the same value differ (fresh nonce).
        assert_ne!(sealed, k.seal("t.c:1", b"hunter2")?);
        Ok(())
    }

    #[test]
    fn key_parsing_and_redaction() {
        assert!(SecretKey::from_base64("c2hvcnQ=").is_err());
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert!(SecretKey::from_base64(&b64).is_ok());
        assert_eq!(format!("{:?}", Secret::new("pw")), "Secret(***)");
        assert!(!format!("{:?}", SecretKey::from_bytes([9; 32])).contains('9'));
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
