//! RFC 8226 certificate authority behind `POST {tg}/certs` (ript-profile §2, §8, §9), and the
//! client-side helper that builds the CSR for it.
//!
//! The CSR names its telephone numbers in a TNAuthList extension (id-pe-TNAuthList,
//! 1.3.6.1.5.5.7.1.26) inside its PKCS#9 extensionRequest attribute; a CSR without one falls
//! back to its subject CN (`+14085551000` or `14085551000`). The issued leaf carries the CSR's
//! P-256 key and a TNAuthList with exactly those numbers, so it can sign ES256 PASSporTs.
//!
//! CSRs are parsed and their self-signature verified with x509-parser directly: rcgen's
//! `CertificateSigningRequestParams::from_der` answers `UnsupportedExtension` for any
//! extension it does not know, TNAuthList included.

use std::fmt;
use std::time::{Duration, SystemTime};

use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::DecodePrivateKey;
use p256::pkcs8::DecodePublicKey;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SerialNumber,
    SignatureAlgorithm,
};
use ript_proto::passport::{TN_AUTH_LIST_OID, TnAuthList, TnEntry};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::prelude::{FromDer, X509Certificate, parse_x509_certificate};

/// id-pe-TNAuthList as arcs, for rcgen's custom extensions.
const TN_AUTH_LIST_ARCS: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 26];
/// Issued certificates are valid from `now - 60 s` (clock skew) ...
const BACKDATE: Duration = Duration::from_secs(60);
/// ... to `now + 365 days`.
const LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Latest accepted `now` (year 9000): keeps the date arithmetic far from `time`'s limits.
const MAX_NOW_SECS: u64 = 221_845_392_000;
/// E.164: at most 15 digits.
const MAX_DIGITS: usize = 15;

/// Errors of the certificate authority and of [`make_csr`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// The CSR body exceeds [`ript_proto::limits::CSR_BODY`].
    #[error("certificate signing request exceeds {limit} bytes")]
    TooLarge { limit: usize },
    /// The CSR cannot be parsed, its signature does not verify, or what it asks for is not
    /// something this CA issues.
    #[error("certificate signing request is invalid: {0}")]
    BadCsr(&'static str),
    /// A requested number is not vouched for by this server (`403 number-not-allowed`).
    #[error("number is not vouched for by this server")]
    NumberNotAllowed,
    /// [`make_csr`] was given no number or something that is not a telephone number.
    #[error("telephone number must be 1 to 15 digits with an optional leading '+'")]
    InvalidNumber,
    /// The CA certificate or key given to [`CertAuthority::from_pem`] is unusable.
    #[error("ca certificate or key is invalid: {0}")]
    BadCa(&'static str),
    /// `now` is before 1970 or absurdly far in the future.
    #[error("issuing time is out of range")]
    Time,
    /// rcgen failed to build or sign a certificate or request.
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
}

impl From<CaError> for ript_proto::Error {
    fn from(e: CaError) -> Self {
        use ript_proto::Error;
        match e {
            CaError::TooLarge { limit } => Error::TooLarge { what: "csr", limit },
            CaError::NumberNotAllowed => Error::NumberNotAllowed,
            CaError::BadCsr(reason) => Error::Invalid {
                what: "csr",
                reason,
            },
            CaError::InvalidNumber => Error::Invalid {
                what: "telephone number",
                reason: "not 1 to 15 digits",
            },
            CaError::BadCa(reason) => Error::Invalid { what: "ca", reason },
            CaError::Time => Error::Invalid {
                what: "issuing time",
                reason: "out of range",
            },
            CaError::Certificate(_) => Error::Invalid {
                what: "certificate",
                reason: "cannot be generated",
            },
        }
    }
}

/// A certificate issued by [`CertAuthority::issue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// URL-safe identifier (lowercase hex of the certificate serial) for `{tg}/certs/{id}`.
    pub id: String,
    /// Leaf PEM followed by the CA PEM (`application/pem-certificate-chain`).
    pub pem: String,
    /// DER chain, leaf first, then the CA (the shape `passport::verify` takes).
    pub der_chain: Vec<Vec<u8>>,
    /// The numbers the certificate vouches for, with a leading `+`.
    pub numbers: Vec<String>,
}

/// An ECDSA P-256 CA issuing RFC 8226 (TNAuthList) certificates.
pub struct CertAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_der: Vec<u8>,
    cert_pem: String,
    key_pem: String,
}

impl fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("CertAuthority")
            .field("cert_der_len", &self.cert_der.len())
            .finish_non_exhaustive()
    }
}

impl CertAuthority {
    /// A fresh self-signed CA (P-256, `CA:TRUE, pathlen:0`, keyCertSign + cRLSign) named
    /// `common_name`. Validity is rcgen's default, 1975-01-01 to 4096-01-01.
    pub fn generate(common_name: &str) -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        let cert_der = cert.der().to_vec();
        let key_pem = key.serialize_pem();
        Ok(CertAuthority {
            cert_pem: crate::tls::pem_encode("CERTIFICATE", &cert_der),
            issuer: Issuer::new(params, key),
            cert_der,
            key_pem,
        })
    }

    /// A CA persisted earlier: its certificate (PEM, first block) and PKCS#8 private key
    /// (PEM). The certificate must be a CA and match the key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(key_pem)
            .map_err(|_| CaError::BadCa("private key cannot be parsed"))?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|_| CaError::BadCa("certificate is not pem"))?;
        if pem.label != "CERTIFICATE" {
            return Err(CaError::BadCa("pem block is not a certificate"));
        }
        let cert_der = pem.contents;
        {
            let cert =
                parse_cert(&cert_der).ok_or(CaError::BadCa("certificate cannot be parsed"))?;
            let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
            if !is_ca {
                return Err(CaError::BadCa("certificate is not a ca"));
            }
            if let Ok(Some(ku)) = cert.key_usage()
                && !ku.value.key_cert_sign()
            {
                return Err(CaError::BadCa("certificate may not sign certificates"));
            }
            if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
                return Err(CaError::BadCa("key does not match the certificate"));
            }
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der.as_slice().into(), key)
            .map_err(|_| CaError::BadCa("certificate cannot be used as issuer"))?;
        Ok(CertAuthority {
            cert_pem: crate::tls::pem_encode("CERTIFICATE", &cert_der),
            key_pem: key_pem.to_owned(),
            issuer,
            cert_der,
        })
    }

    /// The CA certificate, PEM (a trust anchor for verifiers; persist with [`Self::key_pem`]).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER (the `anchors` entry of `passport::verify`).
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA private key, PKCS#8 PEM. Secret.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a TNAuthList certificate for a PEM PKCS#10 CSR.
    ///
    /// Every requested number (digits with a leading `+`) is passed to `allowed`; one refusal
    /// fails the whole request with [`CaError::NumberNotAllowed`]. The CSR's self-signature
    /// must verify and its key must be ECDSA P-256 (PASSporTs are ES256). Validity runs from
    /// `now - 60 s` to `now + 365 days`; the serial is random.
    pub fn issue(
        &self,
        csr_pem: &[u8],
        allowed: impl Fn(&str) -> bool,
        now: SystemTime,
    ) -> Result<IssuedCert, CaError> {
        let limit = ript_proto::limits::CSR_BODY;
        if csr_pem.len() > limit {
            return Err(CaError::TooLarge { limit });
        }
        let request = parse_csr(csr_pem)?;
        let numbers: Vec<String> = request.digits.iter().map(|d| format!("+{d}")).collect();
        if !numbers.iter().all(|n| allowed(n)) {
            return Err(CaError::NumberNotAllowed);
        }
        let (not_before, not_after) = validity(now)?;

        let serial = random_serial();
        let id = hex(serial.as_ref());
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            numbers.first().cloned().unwrap_or_default(),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(serial);
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let list = TnAuthList(request.digits.into_iter().map(TnEntry::One).collect());
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                TN_AUTH_LIST_ARCS,
                list.to_der(),
            ));
        let leaf = params.signed_by(&request.key, &self.issuer)?;
        let leaf_der = leaf.der().to_vec();
        let pem = format!(
            "{}{}",
            crate::tls::pem_encode("CERTIFICATE", &leaf_der),
            self.cert_pem
        );
        Ok(IssuedCert {
            id,
            pem,
            der_chain: vec![leaf_der, self.cert_der.clone()],
            numbers,
        })
    }
}

/// Client side: a fresh P-256 key and a PEM CSR asking for `numbers` (CN = the first number as
/// given, TNAuthList with all of them as an extensionRequest). The key signs PASSporTs
/// (`ript_proto::passport::sign`) once the certificate is issued.
pub fn make_csr(numbers: &[&str]) -> Result<(p256::ecdsa::SigningKey, String), CaError> {
    let first = numbers.first().ok_or(CaError::InvalidNumber)?;
    let digits: Vec<String> = numbers
        .iter()
        .map(|n| {
            normalize(n)
                .map(str::to_owned)
                .ok_or(CaError::InvalidNumber)
        })
        .collect::<Result<_, _>>()?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, *first);
    params.distinguished_name = dn;
    let list = TnAuthList(digits.into_iter().map(TnEntry::One).collect());
    params
        .custom_extensions
        .push(CustomExtension::from_oid_content(
            TN_AUTH_LIST_ARCS,
            list.to_der(),
        ));
    let csr = params.serialize_request(&key)?.pem()?;
    let signing = p256::ecdsa::SigningKey::from_pkcs8_der(key.serialized_der())
        .map_err(|_| CaError::Certificate(rcgen::Error::CouldNotParseKeyPair))?;
    Ok((signing, csr))
}

/// The certificates of a PEM chain (`application/pem-certificate-chain`, what
/// `POST {tg}/certs` and `GET {tg}/certs/{id}` answer) as DER, in order; blocks that are not
/// certificates are skipped.
pub fn pem_chain_der(pem: &str) -> Vec<Vec<u8>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .filter_map(Result::ok)
        .map(|c| c.to_vec())
        .collect()
}

/// A certificate's notAfter in Unix seconds (`None` when it does not parse or lies before
/// 1970), so a holder knows when to enrol again.
pub fn not_after_secs(der: &[u8]) -> Option<u64> {
    let cert = parse_cert(der)?;
    u64::try_from(cert.validity().not_after.timestamp()).ok()
}

/// What a verified CSR asks for.
struct Request {
    /// Telephone numbers, digits only, deduplicated, in request order.
    digits: Vec<String>,
    key: P256Spki,
}

/// A validated P-256 public key in the form rcgen writes into a certificate.
struct P256Spki(Vec<u8>);

impl PublicKeyData for P256Spki {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

fn parse_csr(csr_pem: &[u8]) -> Result<Request, CaError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(csr_pem)
        .map_err(|_| CaError::BadCsr("body is not pem"))?;
    if pem.label != "CERTIFICATE REQUEST" && pem.label != "NEW CERTIFICATE REQUEST" {
        return Err(CaError::BadCsr("pem block is not a certificate request"));
    }
    let (rest, csr) = X509CertificationRequest::from_der(&pem.contents)
        .map_err(|_| CaError::BadCsr("pkcs#10 structure cannot be parsed"))?;
    if !rest.is_empty() {
        return Err(CaError::BadCsr("trailing bytes after the request"));
    }
    csr.verify_signature()
        .map_err(|_| CaError::BadCsr("signature does not verify"))?;
    let info = &csr.certification_request_info;
    let public = p256::PublicKey::from_public_key_der(info.subject_pki.raw)
        .map_err(|_| CaError::BadCsr("public key is not ecdsa p-256"))?;
    let key = P256Spki(public.to_encoded_point(false).as_bytes().to_vec());

    let mut list: Option<TnAuthList> = None;
    for attr in info.iter_attributes() {
        let ParsedCriAttribute::ExtensionRequest(req) = attr.parsed_attribute() else {
            continue;
        };
        for ext in &req.extensions {
            if ext.oid.to_id_string() != TN_AUTH_LIST_OID {
                continue;
            }
            if list.is_some() {
                return Err(CaError::BadCsr("tnauthlist requested twice"));
            }
            list = Some(
                TnAuthList::from_der(ext.value)
                    .ok_or(CaError::BadCsr("tnauthlist cannot be parsed"))?,
            );
        }
    }

    let mut digits: Vec<String> = Vec::new();
    match list {
        Some(TnAuthList(entries)) => {
            for entry in entries {
                let TnEntry::One(n) = entry else {
                    return Err(CaError::BadCsr(
                        "tnauthlist may only request single telephone numbers",
                    ));
                };
                let d = normalize(&n).ok_or(CaError::BadCsr("tnauthlist holds a non-number"))?;
                if !digits.iter().any(|x| x == d) {
                    digits.push(d.to_owned());
                }
            }
        }
        None => {
            let cn = info
                .subject
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .ok_or(CaError::BadCsr("no tnauthlist and no common name"))?;
            let d = normalize(cn).ok_or(CaError::BadCsr(
                "no tnauthlist and the common name is not a telephone number",
            ))?;
            digits.push(d.to_owned());
        }
    }
    if digits.is_empty() {
        return Err(CaError::BadCsr("no telephone number requested"));
    }
    Ok(Request { digits, key })
}

/// `+14085551000` / `14085551000` → `14085551000`; `None` unless 1..=15 ASCII digits.
fn normalize(n: &str) -> Option<&str> {
    let d = n.strip_prefix('+').unwrap_or(n);
    (!d.is_empty() && d.len() <= MAX_DIGITS && d.bytes().all(|b| b.is_ascii_digit())).then_some(d)
}

fn validity(now: SystemTime) -> Result<(SystemTime, SystemTime), CaError> {
    let since = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| CaError::Time)?;
    if since.as_secs() > MAX_NOW_SECS {
        return Err(CaError::Time);
    }
    let from = now.checked_sub(BACKDATE).ok_or(CaError::Time)?;
    let until = now.checked_add(LIFETIME).ok_or(CaError::Time)?;
    Ok((from, until))
}

/// 16 random bytes (UUIDv4: 122 random bits), first byte in 0x40..=0x7f so the DER INTEGER
/// is positive, exactly 16 bytes long, and its hex equals the id.
fn random_serial() -> SerialNumber {
    let mut bytes = *uuid::Uuid::new_v4().as_bytes();
    if let Some(b) = bytes.first_mut() {
        *b = (*b & 0x3f) | 0x40;
    }
    SerialNumber::from_slice(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_cert(der: &[u8]) -> Option<X509Certificate<'_>> {
    parse_x509_certificate(der)
        .ok()
        .and_then(|(rest, c)| rest.is_empty().then_some(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ript_proto::PassportError;
    use ript_proto::passport::{self, Claims};

    const NOW: u64 = 1_700_000_000;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
    }

    fn allow_408(n: &str) -> bool {
        n.starts_with("+1408")
    }

    fn pem_of(der: &[u8]) -> String {
        crate::tls::pem_encode("CERTIFICATE REQUEST", der)
    }

    fn csr_der(pem: &str) -> Vec<u8> {
        x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .unwrap()
            .1
            .contents
    }

    #[test]
    fn issued_cert_verifies_a_passport() {
        let ca = CertAuthority::generate("RIPT test CA").unwrap();
        let (key, csr) = make_csr(&["+14085551000"]).unwrap();
        let issued = ca.issue(csr.as_bytes(), allow_408, now()).unwrap();
        assert_eq!(issued.numbers, vec!["+14085551000".to_owned()]);
        assert_eq!(issued.der_chain.len(), 2);
        assert_eq!(issued.der_chain[1], ca.cert_der());
        assert_eq!(issued.id.len(), 32);
        assert!(issued.id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(issued.pem.ends_with(ca.cert_pem()));
        assert_eq!(issued.pem.matches("-----BEGIN CERTIFICATE-----").count(), 2);

        let leaf = parse_cert(&issued.der_chain[0]).unwrap();
        assert_eq!(hex(leaf.raw_serial()), issued.id);
        assert_eq!(
            passport::tn_auth_list(&leaf).unwrap(),
            Some(TnAuthList(vec![TnEntry::One("14085551000".into())]))
        );
        assert_eq!(leaf.validity().not_before.timestamp(), NOW as i64 - 60);
        assert_eq!(
            leaf.validity().not_after.timestamp(),
            NOW as i64 + 365 * 86_400
        );
        assert!(!leaf.basic_constraints().unwrap().unwrap().value.ca);
        assert_eq!(pem_chain_der(&issued.pem), issued.der_chain);
        assert_eq!(
            not_after_secs(&issued.der_chain[0]),
            Some(NOW + 365 * 86_400)
        );
        assert_eq!(not_after_secs(b"junk"), None);

        let claims = Claims::new("+14085551000", "+14089529999", NOW, "origid-1");
        let jws = passport::sign(&claims, "https://tg.example/certs/x", &key);
        let got =
            passport::verify(&jws, &issued.der_chain, &[ca.cert_der().to_vec()], NOW + 5).unwrap();
        assert_eq!(got, claims);
        // The chain without the CA also verifies (the anchor signs the leaf directly).
        passport::verify(&jws, &issued.der_chain[..1], &[ca.cert_der().to_vec()], NOW).unwrap();
    }

    #[test]
    fn several_numbers_are_all_checked_and_carried() {
        let ca = CertAuthority::generate("RIPT test CA").unwrap();
        let (_, csr) = make_csr(&["+14085551000", "14085551001", "+14085551000"]).unwrap();
        let issued = ca.issue(csr.as_bytes(), allow_408, now()).unwrap();
        assert_eq!(issued.numbers, vec!["+14085551000", "+14085551001"]);
        let leaf = parse_cert(&issued.der_chain[0]).unwrap();
        let list = passport::tn_auth_list(&leaf).unwrap().unwrap();
        assert!(list.covers("14085551000") && list.covers("14085551001"));

        let (_, csr) = make_csr(&["+14085551000", "+12125550000"]).unwrap();
        assert!(matches!(
            ca.issue(csr.as_bytes(), allow_408, now()),
            Err(CaError::NumberNotAllowed)
        ));
    }

    #[test]
    fn refused_number_is_not_allowed() {
        let ca = CertAuthority::generate("RIPT test CA").unwrap();
        let (_, csr) = make_csr(&["+12125550000"]).unwrap();
        let seen = std::cell::RefCell::new(Vec::new());
        let err = ca
            .issue(
                csr.as_bytes(),
                |n| {
                    seen.borrow_mut().push(n.to_owned());
                    allow_408(n)
                },
                now(),
            )
            .unwrap_err();
        assert!(matches!(err, CaError::NumberNotAllowed));
        assert_eq!(seen.into_inner(), vec!["+12125550000".to_owned()]);
        let e: ript_proto::Error = err.into();
        assert_eq!(e.problem().status, 403);
        assert!(matches!(e, ript_proto::Error::NumberNotAllowed));
    }

    #[test]
    fn cn_is_the_fallback_without_tnauthlist() {
        let ca = CertAuthority::generate("RIPT test CA").unwrap();
        for cn in ["14085551000", "+14085551000"] {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, cn);
            params.distinguished_name = dn;
            let csr = params.serialize_request(&key).unwrap().pem().unwrap();
            let issued = ca.issue(csr.as_bytes(), allow_408, now()).unwrap();
            assert_eq!(issued.numbers, vec!["+14085551000"]);
            let leaf = parse_cert(&issued.der_chain[0]).unwrap();
            assert!(
                passport::tn_auth_list(&leaf)
                    .unwrap()
                    .unwrap()
                    .covers("14085551000")
            );
        }
        // A CN that is not a number, and no TNAuthList.
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        assert!(matches!(
            ca.issue(csr.as_bytes(), |_| true, now()),
            Err(CaError::BadCsr(_))
        ));
    }

    #[test]
    fn garbage_and_tampered_csrs_are_bad() {
        let ca = CertAuthority::generate("RIPT test CA").unwrap();
        for body in [
            &b""[..],
            b"hello",
            b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            b"-----BEGIN CERTIFICATE REQUEST-----\n!!!\n-----END CERTIFICATE REQUEST-----\n",
        ] {
            assert!(
                matches!(ca.issue(body, |_| true, now()), Err(CaError::BadCsr(_))),
                "{body:?}"
            );
        }
        // A certificate is not a request.
        assert!(matches!(
            ca.issue(ca.cert_pem().as_bytes(), |_| true, now()),
            Err(CaError::BadCsr(_))
        ));

        // Same length, other number: the signature no longer matches the request info.
        let (_, csr) = make_csr(&["+14085551000"]).unwrap();
        let mut der = csr_der(&csr);
        let (from, to) = (b"14085551000", b"14085559999");
        let mut replaced = 0;
        let mut i = 0;
        while i + from.len() <= der.len() {
            if &der[i..i + from.len()] == from {
                der[i..i + from.len()].copy_from_slice(to);
                replaced += 1;
            }
            i += 1;
        }
        assert_eq!(replaced, 2, "cn and tnauthlist");
        let err = ca
            .issue(pem_of(&der).as_bytes(), |_| true, now())
            .unwrap_err();
        assert!(
            matches!(err, CaError::BadCsr("signature does not verify")),
            "{err}"
        );
        let e: ript_proto::Error = err.into();
        assert!(matches!(e, ript_proto::Error::Invalid { what: "csr", .. }));
        assert_eq!(e.problem().status, 400);

        // A flipped bit in the signature itself.
        let mut der = csr_der(&csr);
        *der.last_mut().unwrap() ^= 0x01;
        assert!(matches!(
            ca.issue(pem_of(&der).as_bytes(), |_| true, now()),
            Err(CaError::BadCsr(_))
        ));
    }

    #[test]
    fn ranges_and_non_p256_keys_are_refused() {
        let ca = CertAuthority::generate("RIPT test CA").unwrap();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        let list = TnAuthList(vec![TnEntry::Range {
            start: "14085550000".into(),
            count: 100,
        }]);
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                TN_AUTH_LIST_ARCS,
                list.to_der(),
            ));
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        assert!(matches!(
            ca.issue(csr.as_bytes(), |_| true, now()),
            Err(CaError::BadCsr(_))
        ));

        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "+14085551000");
        params.distinguished_name = dn;
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        assert!(matches!(
            ca.issue(csr.as_bytes(), |_| true, now()),
            Err(CaError::BadCsr("public key is not ecdsa p-256"))
        ));
    }

    #[test]
    fn oversized_csr_is_too_large() {
        let ca = CertAuthority::generate("RIPT test CA").unwrap();
        let (_, csr) = make_csr(&["+14085551000"]).unwrap();
        let mut body = csr.into_bytes();
        body.resize(ript_proto::limits::CSR_BODY + 1, b'\n');
        let err = ca.issue(&body, |_| true, now()).unwrap_err();
        assert!(matches!(err, CaError::TooLarge { limit } if limit == 64 * 1024));
        let e: ript_proto::Error = err.into();
        assert!(matches!(
            e,
            ript_proto::Error::TooLarge {
                what: "csr",
                limit: 65_536
            }
        ));
        assert_eq!(e.problem().status, 413);
        // Exactly at the limit is still accepted.
        body.truncate(ript_proto::limits::CSR_BODY);
        ca.issue(&body, |_| true, now()).unwrap();
    }

    #[test]
    fn other_ca_is_untrusted() {
        let ca = CertAuthority::generate("RIPT test CA").unwrap();
        let other = CertAuthority::generate("RIPT test CA").unwrap();
        let (key, csr) = make_csr(&["+14085551000"]).unwrap();
        let issued = ca.issue(csr.as_bytes(), allow_408, now()).unwrap();
        let jws = passport::sign(
            &Claims::new("+14085551000", "+14089529999", NOW, "o"),
            "https://tg.example/certs/x",
            &key,
        );
        assert_eq!(
            passport::verify(&jws, &issued.der_chain, &[other.cert_der().to_vec()], NOW),
            Err(PassportError::Untrusted)
        );
        assert_eq!(
            passport::verify(
                &jws,
                &issued.der_chain[..1],
                &[other.cert_der().to_vec()],
                NOW
            ),
            Err(PassportError::Untrusted)
        );
    }

    #[test]
    fn cert_for_another_number_is_not_authorized() {
        let ca = CertAuthority::generate("RIPT test CA").unwrap();
        let (key, csr) = make_csr(&["+14085552000"]).unwrap();
        let issued = ca.issue(csr.as_bytes(), allow_408, now()).unwrap();
        let jws = passport::sign(
            &Claims::new("+14085551000", "+14089529999", NOW, "o"),
            "https://tg.example/certs/x",
            &key,
        );
        assert_eq!(
            passport::verify(&jws, &issued.der_chain, &[ca.cert_der().to_vec()], NOW),
            Err(PassportError::NotAuthorized)
        );
    }

    #[test]
    fn expired_certificate_fails_validity() {
        let ca = CertAuthority::generate("RIPT test CA").unwrap();
        let (key, csr) = make_csr(&["+14085551000"]).unwrap();
        let issued = ca.issue(csr.as_bytes(), allow_408, now()).unwrap();
        let later = NOW + 366 * 86_400;
        let jws = passport::sign(
            &Claims::new("+14085551000", "+14089529999", later, "o"),
            "https://tg.example/certs/x",
            &key,
        );
        assert_eq!(
            passport::verify(&jws, &issued.der_chain, &[ca.cert_der().to_vec()], later),
            Err(PassportError::Validity)
        );
    }

    #[test]
    fn ca_round_trips_through_pem() {
        let ca = CertAuthority::generate("RIPT test CA").unwrap();
        let again = CertAuthority::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(again.cert_der(), ca.cert_der());
        assert_eq!(again.cert_pem(), ca.cert_pem());
        let (key, csr) = make_csr(&["+14085551000"]).unwrap();
        let issued = again.issue(csr.as_bytes(), allow_408, now()).unwrap();
        let jws = passport::sign(
            &Claims::new("+14085551000", "+14089529999", NOW, "o"),
            "https://tg.example/certs/x",
            &key,
        );
        passport::verify(&jws, &issued.der_chain, &[ca.cert_der().to_vec()], NOW).unwrap();

        // Serials are random: two certificates for the same CSR differ.
        let second = again.issue(csr.as_bytes(), allow_408, now()).unwrap();
        assert_ne!(second.id, issued.id);

        // Mismatched key, non-CA certificate, garbage.
        let other = CertAuthority::generate("other").unwrap();
        assert!(matches!(
            CertAuthority::from_pem(ca.cert_pem(), other.key_pem()),
            Err(CaError::BadCa(_))
        ));
        let leaf_pem = crate::tls::pem_encode("CERTIFICATE", &issued.der_chain[0]);
        assert!(matches!(
            CertAuthority::from_pem(&leaf_pem, ca.key_pem()),
            Err(CaError::BadCa(_))
        ));
        assert!(matches!(
            CertAuthority::from_pem("nope", ca.key_pem()),
            Err(CaError::BadCa(_))
        ));
        assert!(matches!(
            CertAuthority::from_pem(ca.cert_pem(), "nope"),
            Err(CaError::BadCa(_))
        ));
        assert!(!format!("{ca:?}").contains("PRIVATE"));
    }

    #[test]
    fn make_csr_rejects_non_numbers() {
        assert!(matches!(make_csr(&[]), Err(CaError::InvalidNumber)));
        assert!(matches!(make_csr(&["alice"]), Err(CaError::InvalidNumber)));
        assert!(matches!(make_csr(&["+"]), Err(CaError::InvalidNumber)));
        assert!(matches!(
            make_csr(&["+1234567890123456"]),
            Err(CaError::InvalidNumber)
        ));
    }

    #[test]
    fn issuing_time_out_of_range() {
        let ca = CertAuthority::generate("RIPT test CA").unwrap();
        let (_, csr) = make_csr(&["+14085551000"]).unwrap();
        let before_epoch = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
        assert!(matches!(
            ca.issue(csr.as_bytes(), |_| true, before_epoch),
            Err(CaError::Time)
        ));
    }

    #[test]
    fn authority_is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<CertAuthority>();
        assert_send_sync::<CaError>();
    }
}
