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
/// (DER; see [`verify_chain`] for the rules), validity at `now_secs`, and the 60 s `iat`
/// window. `chain` is DER, leaf first. A leaf with a keyUsage extension must allow
/// digitalSignature.
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
    match leaf.key_usage() {
        Ok(None) => {}
        Ok(Some(ku)) if ku.value.digital_signature() => {}
        _ => return Err(PassportError::Untrusted),
    }
    let list = tn_auth_list(&leaf)?.ok_or(PassportError::NotAuthorized)?;
    if !list.covers(&claims.orig.tn) {
        return Err(PassportError::NotAuthorized);
    }
    if now_secs.abs_diff(claims.iat) > MAX_AGE_SECS {
        return Err(PassportError::Stale);
    }
    Ok(claims)
}

/// Longest `chain` [`verify_chain`] accepts: the leaf, intermediates and, if included, the
/// trust anchor.
pub const MAX_CHAIN: usize = 5;

/// Validates `chain` (DER, leaf first, at most [`MAX_CHAIN`] certificates) up to one of
/// `anchors` (DER), at `now_secs`:
///
/// - every certificate in `chain` is valid at `now_secs`, and so is the anchor that signs
///   the last one;
/// - each certificate is issued by the next one, or the last by an anchor: its issuer name
///   equals the issuer's subject and the issuer's key verifies its signature;
/// - every certificate used as an issuer (each element after the first, and the anchor) has
///   basicConstraints `cA` true, keyCertSign if it has a keyUsage extension, and a
///   pathLenConstraint (if any) no smaller than the number of intermediates below it;
/// - an issuer other than the anchor that carries a TNAuthList only issues certificates
///   whose own TNAuthList it covers (each number and whole range inside one of its entries,
///   an SPC only if it lists the same SPC); a certificate without one is refused.
///
/// The chain may end with the anchor itself; a certificate that *is* an anchor (the same
/// to-be-signed bytes) ends the walk, so a configured anchor used directly as the leaf is
/// trusted as is. Errors: [`PassportError::Untrusted`] for a broken rule,
/// [`PassportError::Validity`] for a certificate outside its validity period,
/// [`PassportError::Certificate`] for one that does not parse (or an empty chain).
pub fn verify_chain(
    chain: &[Vec<u8>],
    anchors: &[Vec<u8>],
    now_secs: u64,
) -> Result<(), PassportError> {
    let t = i64::try_from(now_secs)
        .ok()
        .and_then(|s| ASN1Time::from_timestamp(s).ok());
    let t = t.ok_or(PassportError::Validity)?;
    if chain.len() > MAX_CHAIN {
        return Err(PassportError::Untrusted);
    }
    fn parse(d: &[u8]) -> Result<X509Certificate<'_>, PassportError> {
        parse_x509_certificate(d)
            .map(|(_, c)| c)
            .map_err(|_| PassportError::Certificate)
    }
    let certs: Vec<X509Certificate<'_>> =
        chain.iter().map(|d| parse(d)).collect::<Result<_, _>>()?;
    let roots: Vec<X509Certificate<'_>> =
        anchors.iter().map(|d| parse(d)).collect::<Result<_, _>>()?;
    let is_anchor = |c: &X509Certificate<'_>| {
        roots
            .iter()
            .any(|r| r.tbs_certificate.as_ref() == c.tbs_certificate.as_ref())
    };
    for (i, cert) in certs.iter().enumerate() {
        if !cert.validity().is_valid_at(t) {
            return Err(PassportError::Validity);
        }
        // A chain may include the anchor itself; stop there (its link to the certificate
        // below, if any, was checked in the previous round).
        if is_anchor(cert) {
            return Ok(());
        }
        // The issuer of `cert` has `i` intermediates below it (chain elements 1..=i).
        if let Some(parent) = certs.get(i + 1) {
            check_link(cert, parent, i, is_anchor(parent))?;
            continue;
        }
        let signed_by_anchor = roots
            .iter()
            .any(|r| r.validity().is_valid_at(t) && check_link(cert, r, i, true).is_ok());
        return if signed_by_anchor {
            Ok(())
        } else {
            Err(PassportError::Untrusted)
        };
    }
    Err(PassportError::Certificate)
}

/// One link of a chain: `issuer` issued `child`, and may issue certificates at all (with
/// `below` intermediates under it); a TNAuthList of an `issuer` that is not an anchor
/// constrains `child`'s.
fn check_link(
    child: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
    below: usize,
    issuer_is_anchor: bool,
) -> Result<(), PassportError> {
    let untrusted = PassportError::Untrusted;
    if child.issuer() != issuer.subject() {
        return Err(untrusted);
    }
    match issuer.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {
            if let Some(max) = bc.value.path_len_constraint
                && usize::try_from(max).is_ok_and(|max| max < below)
            {
                return Err(untrusted);
            }
        }
        _ => return Err(untrusted),
    }
    match issuer.key_usage() {
        Ok(None) => {}
        Ok(Some(ku)) if ku.value.key_cert_sign() => {}
        _ => return Err(untrusted),
    }
    child
        .verify_signature(Some(issuer.public_key()))
        .map_err(|_| PassportError::Untrusted)?;
    if !issuer_is_anchor && let Some(allowed) = tn_auth_list(issuer)? {
        let requested = tn_auth_list(child)?.ok_or(PassportError::Untrusted)?;
        if !allowed.covers_list(&requested) {
            return Err(untrusted);
        }
    }
    Ok(())
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

    /// Whether every entry of `other` is inside this list: a number (`One`) covered by a
    /// number or range here, a range entirely inside one range (or equal to a one-number
    /// entry), an SPC only if this list has the same SPC. Numbers are compared as digit
    /// strings of equal length, like [`Self::covers`].
    pub fn covers_list(&self, other: &TnAuthList) -> bool {
        other.0.iter().all(|e| self.covers_entry(e))
    }

    fn covers_entry(&self, entry: &TnEntry) -> bool {
        if let TnEntry::Spc(spc) = entry {
            return self
                .0
                .iter()
                .any(|p| matches!(p, TnEntry::Spc(mine) if mine == spc));
        }
        let Some((len, start, count)) = span(entry) else {
            return false;
        };
        self.0.iter().any(|p| {
            span(p).is_some_and(|(plen, pstart, pcount)| {
                plen == len
                    && start
                        .checked_sub(pstart)
                        .and_then(|offset| offset.checked_add(count))
                        .is_some_and(|end| end <= pcount)
            })
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

/// A number or range as (digit count, first number, count); `None` for an SPC or a number
/// that is not 1 to 19 ASCII digits.
fn span(e: &TnEntry) -> Option<(usize, u64, u64)> {
    let number = |s: &str| {
        (!s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match e {
        TnEntry::One(n) => Some((n.len(), number(n)?, 1)),
        TnEntry::Range { start, count } => Some((start.len(), number(start)?, *count)),
        TnEntry::Spc(_) => None,
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
    fn tn_auth_list_coverage_of_lists() {
        let one = |n: &str| TnEntry::One(n.into());
        let range = |s: &str, count| TnEntry::Range {
            start: s.into(),
            count,
        };
        let parent = TnAuthList(vec![
            range("14085550000", 1000),
            one("14089529999"),
            TnEntry::Spc("1234".into()),
        ]);
        let covers = |entries: Vec<TnEntry>| parent.covers_list(&TnAuthList(entries));
        assert!(!covers(vec![one("14085551000")]), "just past the range");
        assert!(covers(vec![one("14085550999"), one("14089529999")]));
        assert!(covers(vec![range("14085550000", 1000)]), "the whole range");
        assert!(covers(vec![range("14085550500", 500)]), "the tail");
        assert!(!covers(vec![range("14085550500", 501)]), "one past the end");
        assert!(!covers(vec![range("14085549999", 2)]), "starts before");
        assert!(covers(vec![range("14089529999", 1)]), "one-number range");
        assert!(!covers(vec![range("14089529999", 2)]));
        assert!(!covers(vec![range("1408555000", 10)]), "other digit count");
        assert!(!covers(vec![range("14085550000", u64::MAX)]), "no overflow");
        assert!(covers(vec![TnEntry::Spc("1234".into())]));
        assert!(!covers(vec![TnEntry::Spc("9999".into())]));
        assert!(!covers(vec![one("+14085550001")]), "digits only");
        assert!(!covers(vec![one("")]));
        assert!(
            !covers(vec![one("14085550001"), one("19005550000")]),
            "every entry must be covered"
        );
        let spc_only = TnAuthList(vec![TnEntry::Spc("1234".into())]);
        assert!(!spc_only.covers_list(&TnAuthList(vec![one("14085550001")])));
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
