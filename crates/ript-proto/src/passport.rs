//! PASSporT (RFC 8225, ES256) and RFC 8226 TNAuthList checks (ript-profile §8).
//!
//! Certificate fetching (`x5u`) is the shell's job: verification takes the chain as DER.

use crate::PassportError;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use x509_parser::prelude::*;

/// id-pe-TNAuthList (RFC 8226 §9).
pub const TN_AUTH_LIST_OID: &str = "1.3.6.1.5.5.7.1.26";
/// ript-profile §8: `iat` must be within 60 s of now.
pub const MAX_AGE_SECS: u64 = 60;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
    x5u: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orig {
    pub tn: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dest {
    pub tn: Vec<String>,
}

/// PASSporT claims; fields are declared in lexicographic order so serialisation is the
/// RFC 8225 §9 deterministic form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub dest: Dest,
    pub iat: u64,
    pub orig: Orig,
    pub origid: String,
}

impl Claims {
    /// `tn` values carry digits only (no `+`).
    pub fn new(orig_tn: &str, dest_tn: &str, iat: u64, origid: &str) -> Self {
        Claims {
            dest: Dest {
                tn: vec![dest_tn.trim_start_matches('+').to_owned()],
            },
            iat,
            orig: Orig {
                tn: orig_tn.trim_start_matches('+').to_owned(),
            },
            origid: origid.to_owned(),
        }
    }

    /// The call description's `from`: `+` and `orig.tn` (ript-profile §9).
    pub fn from_e164(&self) -> String {
        format!("+{}", self.orig.tn)
    }

    /// `dest.tn` against a call's destination: E.164 digits, or the part before `@`.
    pub fn covers_destination(&self, destination: &str) -> bool {
        let want = match destination.split_once('@') {
            Some((user, _)) => user.trim_start_matches('+'),
            None => destination.trim_start_matches('+'),
        };
        self.dest.tn.iter().any(|t| t == want)
    }
}

/// Signs a compact PASSporT (ES256; RFC 6979 deterministic, so no randomness needed).
pub fn sign(claims: &Claims, x5u: &str, key: &SigningKey) -> String {
    let header = Header {
        alg: "ES256".into(),
        typ: "passport".into(),
        x5u: x5u.into(),
    };
    let h = B64.encode(serde_json::to_vec(&header).unwrap_or_default());
    let c = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
    let input = format!("{h}.{c}");
    let sig: Signature = key.sign(input.as_bytes());
    format!("{input}.{}", B64.encode(sig.to_bytes()))
}

/// The `x5u` of a compact PASSporT, so the shell can fetch the certificate before verifying.
pub fn x5u(jws: &str) -> Result<String, PassportError> {
    let h = jws.split('.').next().ok_or(PassportError::Format)?;
    let bytes = B64.decode(h).map_err(|_| PassportError::Format)?;
    let header: Header = serde_json::from_slice(&bytes).map_err(|_| PassportError::Header)?;
    Ok(header.x5u)
}

/// Verifies signature, TNAuthList coverage of `orig.tn`, the chain to one of `anchors`
/// (DER), validity at `now_secs`, and the 60 s `iat` window. `chain` is DER, leaf first.
pub fn verify(
    jws: &str,
    chain: &[Vec<u8>],
    anchors: &[Vec<u8>],
    now_secs: u64,
) -> Result<Claims, PassportError> {
    let mut parts = jws.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(PassportError::Format);
    };
    let header: Header = B64
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(PassportError::Header)?;
    if header.alg != "ES256" || header.typ != "passport" || header.x5u.is_empty() {
        return Err(PassportError::Header);
    }
    let claims: Claims = B64
        .decode(c)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(PassportError::Claims)?;
    let sig_bytes = B64.decode(s).map_err(|_| PassportError::Format)?;
    let sig = Signature::from_slice(&sig_bytes).map_err(|_| PassportError::Signature)?;

    let leaf_der = chain.first().ok_or(PassportError::Certificate)?;
    let (_, leaf) = parse_x509_certificate(leaf_der).map_err(|_| PassportError::Certificate)?;
    let key = VerifyingKey::from_sec1_bytes(&leaf.public_key().subject_public_key.data)
        .map_err(|_| PassportError::Certificate)?;
    let input_len = h.len() + 1 + c.len();
    let input = jws.get(..input_len).ok_or(PassportError::Format)?;
    key.verify(input.as_bytes(), &sig)
        .map_err(|_| PassportError::Signature)?;

    verify_chain(chain, anchors, now_secs)?;
    let list = tn_auth_list(&leaf)?.ok_or(PassportError::NotAuthorized)?;
    if !list.covers(&claims.orig.tn) {
        return Err(PassportError::NotAuthorized);
    }
    if now_secs.abs_diff(claims.iat) > MAX_AGE_SECS {
        return Err(PassportError::Stale);
    }
    Ok(claims)
}

/// Checks each certificate is signed by the next one (or by an anchor) and the last one is
/// signed by a configured trust anchor; all valid at `now_secs`.
pub fn verify_chain(
    chain: &[Vec<u8>],
    anchors: &[Vec<u8>],
    now_secs: u64,
) -> Result<(), PassportError> {
    let t = i64::try_from(now_secs)
        .ok()
        .and_then(|s| ASN1Time::from_timestamp(s).ok());
    let t = t.ok_or(PassportError::Validity)?;
    fn parse(d: &[u8]) -> Result<X509Certificate<'_>, PassportError> {
        parse_x509_certificate(d)
            .map(|(_, c)| c)
            .map_err(|_| PassportError::Certificate)
    }
    let certs: Vec<X509Certificate<'_>> =
        chain.iter().map(|d| parse(d)).collect::<Result<_, _>>()?;
    let roots: Vec<X509Certificate<'_>> =
        anchors.iter().map(|d| parse(d)).collect::<Result<_, _>>()?;
    for (i, cert) in certs.iter().enumerate() {
        if !cert.validity().is_valid_at(t) {
            return Err(PassportError::Validity);
        }
        // A chain may include the anchor itself; stop there.
        if roots
            .iter()
            .any(|r| r.tbs_certificate.as_ref() == cert.tbs_certificate.as_ref())
        {
            return Ok(());
        }
        if let Some(next) = certs.get(i + 1) {
            cert.verify_signature(Some(next.public_key()))
                .map_err(|_| PassportError::Untrusted)?;
            continue;
        }
        let signed_by_anchor = roots.iter().any(|r| {
            r.validity().is_valid_at(t)
                && r.subject() == cert.issuer()
                && cert.verify_signature(Some(r.public_key())).is_ok()
        });
        return if signed_by_anchor {
            Ok(())
        } else {
            Err(PassportError::Untrusted)
        };
    }
    Err(PassportError::Certificate)
}

// ---------------------------------------------------------------------------------------
// TNAuthList (RFC 8226 §9, EXPLICIT TAGS):
//   TNAuthorizationList ::= SEQUENCE SIZE (1..MAX) OF TNEntry
//   TNEntry ::= CHOICE { spc [0] IA5String, range [1] SEQUENCE { start TelephoneNumber,
//                        count INTEGER }, one [2] TelephoneNumber }
// Written by hand: the structure is three tiny cases and no kept DER crate in our stack
// encodes it; parsing uses the same few lines so both directions stay consistent.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TnEntry {
    Spc(String),
    Range { start: String, count: u64 },
    One(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TnAuthList(pub Vec<TnEntry>);

impl TnAuthList {
    /// Whether `tn` (digits, `+` ignored) is one of the numbers or inside a range.
    pub fn covers(&self, tn: &str) -> bool {
        let tn = tn.trim_start_matches('+');
        self.0.iter().any(|e| match e {
            TnEntry::One(n) => n == tn,
            TnEntry::Range { start, count } => {
                start.len() == tn.len()
                    && match (start.parse::<u64>(), tn.parse::<u64>()) {
                        (Ok(s), Ok(n)) => n >= s && n - s < *count,
                        _ => false,
                    }
            }
            TnEntry::Spc(_) => false,
        })
    }

    pub fn to_der(&self) -> Vec<u8> {
        let mut entries = Vec::new();
        for e in &self.0 {
            match e {
                TnEntry::Spc(s) => der(&mut entries, 0xa0, &ia5(s)),
                TnEntry::Range { start, count } => {
                    let mut seq = ia5(start);
                    der(&mut seq, 0x02, &int_bytes(*count));
                    let mut wrapped = Vec::new();
                    der(&mut wrapped, 0x30, &seq);
                    der(&mut entries, 0xa1, &wrapped);
                }
                TnEntry::One(n) => der(&mut entries, 0xa2, &ia5(n)),
            }
        }
        let mut out = Vec::new();
        der(&mut out, 0x30, &entries);
        out
    }

    pub fn from_der(buf: &[u8]) -> Option<Self> {
        let (t, body, rest) = read_der(buf)?;
        if t != 0x30 || !rest.is_empty() {
            return None;
        }
        let mut list = Vec::new();
        let mut cur = body;
        while !cur.is_empty() {
            let (t, inner, rest) = read_der(cur)?;
            cur = rest;
            let entry = match t {
                0xa0 => TnEntry::Spc(read_ia5(inner)?),
                0xa2 => TnEntry::One(read_ia5(inner)?),
                0xa1 => {
                    let (t, seq, _) = read_der(inner)?;
                    if t != 0x30 {
                        return None;
                    }
                    let (t1, start, rest) = read_der(seq)?;
                    let (t2, count, _) = read_der(rest)?;
                    // A DER INTEGER of 2^63 or more takes a leading zero byte (`int_bytes`).
                    let count = match count {
                        [0, low @ ..] if low.len() == 8 => low,
                        c => c,
                    };
                    if t1 != 0x16 || t2 != 0x02 || count.len() > 8 || count.is_empty() {
                        return None;
                    }
                    TnEntry::Range {
                        start: String::from_utf8(start.to_vec()).ok()?,
                        count: count.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b)),
                    }
                }
                _ => return None,
            };
            list.push(entry);
        }
        (!list.is_empty()).then_some(TnAuthList(list))
    }
}

/// The TNAuthList of a certificate, if it has one.
pub fn tn_auth_list(cert: &X509Certificate<'_>) -> Result<Option<TnAuthList>, PassportError> {
    for ext in cert.extensions() {
        if ext.oid.to_id_string() == TN_AUTH_LIST_OID {
            return TnAuthList::from_der(ext.value)
                .map(Some)
                .ok_or(PassportError::Certificate);
        }
    }
    Ok(None)
}

fn ia5(s: &str) -> Vec<u8> {
    let mut v = Vec::new();
    der(&mut v, 0x16, s.as_bytes());
    v
}

fn read_ia5(inner: &[u8]) -> Option<String> {
    let (t, v, _) = read_der(inner)?;
    (t == 0x16 && v.is_ascii())
        .then(|| String::from_utf8(v.to_vec()).ok())
        .flatten()
}

fn int_bytes(v: u64) -> Vec<u8> {
    let b = v.to_be_bytes();
    let skip = b.iter().take_while(|x| **x == 0).count().min(7);
    let mut out: Vec<u8> = b.get(skip..).unwrap_or(&b).to_vec();
    if out.first().is_some_and(|x| x & 0x80 != 0) {
        out.insert(0, 0);
    }
    out
}

fn der(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let b = (len as u64).to_be_bytes();
        let skip = b.iter().take_while(|x| **x == 0).count();
        let lb = b.get(skip..).unwrap_or_default();
        out.push(0x80 | lb.len() as u8);
        out.extend_from_slice(lb);
    }
    out.extend_from_slice(value);
}

fn read_der(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = buf.split_first()?;
    let (&l0, rest) = rest.split_first()?;
    let (len, rest) = if l0 < 0x80 {
        (usize::from(l0), rest)
    } else {
        let n = usize::from(l0 & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let lb = rest.get(..n)?;
        (
            lb.iter().fold(0usize, |a, b| (a << 8) | usize::from(*b)),
            rest.get(n..)?,
        )
    };
    Some((tag, rest.get(..len)?, rest.get(len..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tn_auth_list_round_trip_and_coverage() {
        let l = TnAuthList(vec![
            TnEntry::Spc("1234".into()),
            TnEntry::Range {
                start: "14085550000".into(),
                count: 1000,
            },
            TnEntry::One("14089529999".into()),
        ]);
        let d = l.to_der();
        assert_eq!(TnAuthList::from_der(&d), Some(l.clone()));
        assert!(l.covers("+14085550999"));
        assert!(!l.covers("14085551000"));
        assert!(l.covers("14089529999"));
        assert!(!l.covers("1234"));
        assert_eq!(TnAuthList::from_der(&[0x30, 0x05, 0xa2]), None);
        // Regression (tests/properties.rs): counts of 2^63 and more are written with a
        // leading zero (9 bytes) and were then refused.
        let huge = TnAuthList(vec![TnEntry::Range {
            start: "0".into(),
            count: 1 << 63,
        }]);
        assert_eq!(TnAuthList::from_der(&huge.to_der()), Some(huge));
        assert_eq!(TnAuthList::from_der(&[]), None);
    }

    #[test]
    fn claims_serialise_deterministically() {
        let c = Claims::new("+14085551000", "+14089529999", 1_700_000_000, "u-1");
        let s = String::from_utf8(serde_json::to_vec(&c).unwrap()).unwrap();
        assert_eq!(
            s,
            r#"{"dest":{"tn":["14089529999"]},"iat":1700000000,"orig":{"tn":"14085551000"},"origid":"u-1"}"#
        );
        assert!(c.covers_destination("+14089529999"));
        assert!(c.covers_destination("14089529999@pbx.example"));
        assert!(!c.covers_destination("+14089520000"));
        assert_eq!(c.from_e164(), "+14085551000");
    }
}
