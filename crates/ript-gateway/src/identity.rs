//! Caller identity (ript-profile §8: STIR PASSporTs, RFC 8224/8225/8226) for both roles.
//!
//! - Customer (SIP → RIPT upstream): the caller's E.164 number gets an RFC 8226 certificate
//!   from the upstream TG (`POST {tg}/certs`), enrolled on the number's first call and kept
//!   per upstream and number ([`Certs`]); every call creation then carries a PASSporT signed
//!   with it (`orig` = caller, `dest` = destination, `iat` = now, `origid` = a fresh UUID,
//!   `x5u` = the certificate's `Location`). A number the upstream does not vouch for
//!   (`403 number-not-allowed`) calls without a passport. A valid RFC 8224 `Identity` header
//!   on the SIP INVITE, issued by that same upstream, is passed on instead of signing anew.
//! - Provider (hosted TG → SIP): the passport the RIPT server verified travels on unchanged
//!   as the INVITE's `Identity` header ([`identity_header`]); the caller it names is already
//!   the call description's `from`, which becomes the From user.
//!
//! Numbers are logged at debug level only.

use ript_h3::client::Client;
use ript_proto::model::{CallCreate, CallDescription};
use ript_proto::passport::{self, Claims};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, info};

/// A refused enrolment (`403 number-not-allowed`, a bad request) is not retried for this long.
const REFUSED_FOR: Duration = Duration::from_secs(300);
/// An enrolment that failed for another reason (the upstream unreachable) waits this long.
const FAILED_FOR: Duration = Duration::from_secs(10);
/// A certificate is replaced this long before it expires.
const RENEW_BEFORE_SECS: u64 = 24 * 60 * 60;
/// Numbers remembered per upstream at most: callers come from SIP From headers, so a peer
/// sending random numbers must not grow memory without bound.
const MAX_NUMBERS: usize = 10_000;

/// A certificate enrolled for one number, and the key it certifies.
struct Cert {
    key: p256::ecdsa::SigningKey,
    /// The certificate's URL (the enrolment's `Location`), the passports' `x5u`.
    x5u: String,
    /// Unix seconds after which a new certificate is enrolled.
    renew_at: u64,
}

enum Slot {
    Empty,
    Issued(Arc<Cert>),
    /// Enrolment failed; not tried again before `until`.
    Failed {
        until: Instant,
    },
}

/// The certificates of one upstream, by caller number (E.164 with `+`). Each number has its
/// own lock, so the first calls of one number share one enrolment while other numbers go on.
#[derive(Default)]
pub struct Certs {
    by_number: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
    /// The TG's issuing CA (`outbound.origins`, DER), to check passports offered from SIP.
    tg_ca: tokio::sync::Mutex<Option<Vec<u8>>>,
}

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("Certs").finish_non_exhaustive()
    }
}

fn wall_secs() -> u64 {
    ript_h3::wall_ms() / 1000
}

impl Certs {
    fn slot(&self, number: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut map = self.by_number.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(number) && map.len() >= MAX_NUMBERS {
            // Full: start over rather than grow (the price is enrolling again).
            map.clear();
        }
        Arc::clone(
            map.entry(number.to_owned())
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Slot::Empty))),
        )
    }

    /// The certificate for `number`, enrolled at `tg_uri` when there is none (or it is due
    /// for renewal); `None` when the upstream refused or enrolment failed recently. The flag
    /// says whether it was enrolled by this call.
    async fn cert(&self, client: &Client, tg_uri: &str, number: &str) -> Option<(Arc<Cert>, bool)> {
        let slot = self.slot(number);
        let mut slot = slot.lock().await;
        match &*slot {
            Slot::Issued(c) if wall_secs() < c.renew_at => return Some((Arc::clone(c), false)),
            Slot::Failed { until } if Instant::now() < *until => return None,
            _ => {}
        }
        match enroll(client, tg_uri, number).await {
            Ok(c) => {
                let c = Arc::new(c);
                *slot = Slot::Issued(Arc::clone(&c));
                Some((c, true))
            }
            Err(e) => {
                let wait = if e.status().is_some_and(|s| (400..500).contains(&s)) {
                    REFUSED_FOR
                } else {
                    FAILED_FOR
                };
                info!(error = %e, problem = ?e.problem_type(), "no caller certificate; calls go without a passport");
                debug!(%number, "certificate refused");
                *slot = Slot::Failed {
                    until: Instant::now() + wait,
                };
                None
            }
        }
    }

    /// Drops `number`'s certificate if it is still the one at `x5u`.
    async fn forget(&self, number: &str, x5u: &str) {
        let slot = self.slot(number);
        let mut slot = slot.lock().await;
        if matches!(&*slot, Slot::Issued(c) if c.x5u == x5u) {
            *slot = Slot::Empty;
        }
    }

    /// The TG's issuing CA (DER), fetched once from the TG description.
    async fn tg_ca(&self, client: &Client, tg_uri: &str) -> Option<Vec<u8>> {
        let mut ca = self.tg_ca.lock().await;
        if ca.is_none() {
            let tg = client.tg(tg_uri).await.ok()?;
            *ca = tg
                .outbound
                .origins
                .as_deref()
                .and_then(|pem| ript_h3::ca::pem_chain_der(pem).into_iter().next());
        }
        ca.clone()
    }

    /// A passport offered in the SIP INVITE's `Identity` headers that may travel on as is: a
    /// full-form PASSporT whose `info` is its `x5u`, a certificate this upstream issued (under
    /// `{tg}/certs/`: we fetch nothing elsewhere), a chain to the TG's CA, `orig` = `caller`,
    /// `dest` = `destination`, `iat` within 60 s.
    async fn offered(
        &self,
        client: &Client,
        tg_uri: &str,
        offered: &[String],
        caller: &str,
        destination: &str,
    ) -> Option<String> {
        let certs = format!("{tg_uri}/certs/");
        for value in offered {
            let Some(h) = parse_identity_header(value) else {
                debug!("unparsable Identity header ignored");
                continue;
            };
            let x5u = match passport::x5u(&h.passport) {
                Ok(x) if x == h.info && x.starts_with(&certs) => x,
                _ => {
                    debug!(info = %h.info, "Identity header not issued by this upstream; ignored");
                    continue;
                }
            };
            let (Ok(pem), Some(anchor)) = (
                client.fetch_cert(&x5u).await,
                self.tg_ca(client, tg_uri).await,
            ) else {
                info!("certificate of an Identity header unavailable; ignored");
                continue;
            };
            let chain = ript_h3::ca::pem_chain_der(&pem);
            match passport::verify(&h.passport, &chain, &[anchor], wall_secs()) {
                Ok(c) if c.from_e164() == caller && c.covers_destination(destination) => {
                    return Some(h.passport);
                }
                Ok(_) => info!("Identity header names another caller or destination; ignored"),
                Err(e) => info!(error = %e, "Identity header does not verify; ignored"),
            }
        }
        None
    }
}

/// Enrols a certificate for `number` at `tg_uri` (a fresh P-256 key per certificate).
async fn enroll(client: &Client, tg_uri: &str, number: &str) -> Result<Cert, ript_h3::Error> {
    let (key, csr) = ript_h3::ca::make_csr(&[number]).map_err(ript_proto::Error::from)?;
    let (x5u, pem) = client.enroll_cert(tg_uri, &csr).await?;
    let not_after = ript_h3::ca::pem_chain_der(&pem)
        .first()
        .and_then(|der| ript_h3::ca::not_after_secs(der))
        .ok_or(ript_h3::Error::Unexpected(
            "certificate without a parsable leaf",
        ))?;
    info!(%x5u, "caller certificate enrolled");
    Ok(Cert {
        key,
        x5u,
        renew_at: not_after.saturating_sub(RENEW_BEFORE_SECS),
    })
}

fn sign(cert: &Cert, caller: &str, destination: &str) -> String {
    // ript-profile §9: `dest.tn` carries the digits before `@` of a `number@domain`.
    let dest = destination.split('@').next().unwrap_or(destination);
    let origid = uuid::Uuid::new_v4().to_string();
    let claims = Claims::new(caller, dest, wall_secs(), &origid);
    passport::sign(&claims, &cert.x5u, &cert.key)
}

/// Whether a `403` answer to a call creation blames the passport (the profile gives the
/// passport and the destination policy the same problem type; the detail tells them apart).
fn passport_refused(e: &ript_h3::Error) -> bool {
    match e {
        ript_h3::Error::Status {
            status: 403,
            problem,
        } => problem.as_ref().is_some_and(|p| {
            let d = p.detail.to_ascii_lowercase();
            d.contains("passport") || d.contains("certificate")
        }),
        _ => false,
    }
}

/// Creates the RIPT call `create` at `tg_uri` with the caller's identity: a valid passport
/// offered in the SIP `Identity` headers (`offered`), else one signed with `caller`'s
/// certificate from `certs`, else none (a `caller` that is not E.164, or a number the
/// upstream does not vouch for). A certificate from the cache that the upstream no longer
/// accepts (it forgot it, e.g. after a restart) is replaced once and the creation retried.
pub async fn create_call(
    client: &Client,
    tg_uri: &str,
    certs: &Certs,
    mut create: CallCreate,
    caller: &str,
    offered: &[String],
) -> Result<CallDescription, ript_h3::Error> {
    if create.passport.is_some() || !ript_proto::pattern::is_e164(caller) {
        return client.create_call(tg_uri, &create).await;
    }
    let dest = create.destination.clone();
    if !offered.is_empty()
        && let Some(p) = certs.offered(client, tg_uri, offered, caller, &dest).await
    {
        debug!("the INVITE's Identity travels on as the passport");
        create.passport = Some(p);
        return client.create_call(tg_uri, &create).await;
    }
    let Some((cert, fresh)) = certs.cert(client, tg_uri, caller).await else {
        return client.create_call(tg_uri, &create).await;
    };
    create.passport = Some(sign(&cert, caller, &dest));
    match client.create_call(tg_uri, &create).await {
        Err(e) if passport_refused(&e) => {
            certs.forget(caller, &cert.x5u).await;
            if fresh {
                return Err(e);
            }
            info!(error = %e, "passport refused; enrolling the caller's certificate again");
            let Some((cert, _)) = certs.cert(client, tg_uri, caller).await else {
                return Err(e);
            };
            create.passport = Some(sign(&cert, caller, &dest));
            client.create_call(tg_uri, &create).await
        }
        r => r,
    }
}

/// An RFC 8224 `Identity` header field value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeader {
    /// The PASSporT (`signed-identity-digest`).
    pub passport: String,
    /// The `info` URI (without the angle brackets).
    pub info: String,
    pub alg: Option<String>,
    pub ppt: Option<String>,
}

/// The `Identity` header value for a verified passport (RFC 8224 §4): the full form
/// `header.claims.signature`, `info` = its `x5u` in angle brackets, `alg=ES256`. No `ppt`:
/// ript-profile §8 passports are base PASSporTs (no `ppt` header, RFC 8225), and RFC 8224 §4
/// ties the parameter to that header. `None` for a JWS without a readable `x5u`.
pub fn identity_header(jws: &str) -> Option<String> {
    let x5u = passport::x5u(jws).ok()?;
    // The info URI sits in <> and may not contain '>' (RFC 3261 absoluteURI has none).
    (!x5u.contains(['>', '<', ' ', '\r', '\n'])).then(|| format!("{jws};info=<{x5u}>;alg=ES256"))
}

/// The extra INVITE headers carrying a verified passport (nothing without one).
pub fn sip_headers(jws: Option<&str>) -> Vec<(String, String)> {
    jws.and_then(identity_header)
        .map(|v| vec![("Identity".to_owned(), v)])
        .unwrap_or_default()
}

/// Parses an `Identity` header value (RFC 8224 §4, with errata 6499's base64url digest):
/// `digest ;info=<uri> *(;name[=value])`. `None` when the digest is not base64url-and-dots
/// or `info` is missing. Parameter names are case-insensitive; unknown ones are ignored.
pub fn parse_identity_header(value: &str) -> Option<IdentityHeader> {
    let (digest, mut rest) = value.split_once(';')?;
    let digest = digest.trim();
    let is_b64url = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if digest.is_empty() || !digest.bytes().all(is_b64url) {
        return None;
    }
    let (mut info, mut alg, mut ppt) = (None, None, None);
    loop {
        let r = rest.trim_start();
        let end = r.find(['=', ';']).unwrap_or(r.len());
        let name = r.get(..end)?.trim().to_ascii_lowercase();
        let after = r.get(end..)?;
        let (val, next) = match after.strip_prefix('=') {
            Some(v) => {
                let v = v.trim_start();
                if let Some(inner) = v.strip_prefix('<') {
                    let close = inner.find('>')?;
                    (inner.get(..close)?.to_owned(), inner.get(close + 1..)?)
                } else {
                    let stop = v.find(';').unwrap_or(v.len());
                    let token = v.get(..stop)?.trim().trim_matches('"');
                    (token.to_owned(), v.get(stop..)?)
                }
            }
            None => (String::new(), after),
        };
        if name.is_empty() {
            return None;
        }
        match name.as_str() {
            "info" => info = Some(val),
            "alg" => alg = Some(val),
            "ppt" => ppt = Some(val),
            _ => {}
        }
        let next = next.trim_start();
        if next.is_empty() {
            break;
        }
        rest = next.strip_prefix(';')?;
    }
    Some(IdentityHeader {
        passport: digest.to_owned(),
        info: info.filter(|i| !i.is_empty())?,
        alg,
        ppt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const X5U: &str = "https://p.example/.well-known/ript/v1/providertgs/tg/certs/ab12";

    fn jws() -> String {
        let (key, _) = ript_h3::ca::make_csr(&["+14085551000"]).unwrap();
        let c = Claims::new("+14085551000", "+14085552000", 1_700_000_000, "o-1");
        passport::sign(&c, X5U, &key)
    }

    #[test]
    fn rfc8224_4_identity_header_round_trip() {
        let j = jws();
        let v = identity_header(&j).unwrap();
        assert_eq!(v, format!("{j};info=<{X5U}>;alg=ES256"));
        assert_eq!(
            j.matches('.').count(),
            2,
            "full form: header.claims.signature"
        );
        let h = parse_identity_header(&v).unwrap();
        assert_eq!(h.passport, j);
        assert_eq!(h.info, X5U);
        assert_eq!(h.alg.as_deref(), Some("ES256"));
        assert_eq!(h.ppt, None);
        assert_eq!(
            sip_headers(Some(&j)),
            vec![("Identity".to_owned(), v.clone())]
        );
        assert!(sip_headers(None).is_empty());
        assert_eq!(identity_header("not a jws"), None);
    }

    #[test]
    fn rfc8224_4_identity_header_parsing() {
        let h = parse_identity_header(
            "aaa.bbb.ccc ; INFO = <https://x.example/a;b=c> ; ppt=\"shaken\";alg=ES256;foo",
        )
        .unwrap();
        assert_eq!(h.passport, "aaa.bbb.ccc");
        assert_eq!(h.info, "https://x.example/a;b=c");
        assert_eq!(h.ppt.as_deref(), Some("shaken"));
        assert_eq!(h.alg.as_deref(), Some("ES256"));
        for bad in [
            "aaa.bbb.ccc",
            "aaa.bbb.ccc;alg=ES256",
            "aaa.b+b.ccc;info=<https://x>",
            ";info=<https://x>",
            "aaa..ccc;info=<https://x",
            "aaa..ccc;info=<>",
            "aaa..ccc;info=<https://x> junk",
            "aaa..ccc;;info=<https://x>",
        ] {
            assert_eq!(parse_identity_header(bad), None, "{bad}");
        }
        // The RFC 8225 §7 compact form parses (the verifier then refuses it: no claims).
        assert!(parse_identity_header("aaa..ccc;info=<https://x>").is_some());
    }

    #[test]
    fn a_403_blames_the_passport_only_when_it_says_so() {
        let refusal = |detail: &str| ript_h3::Error::Status {
            status: 403,
            problem: Some(ript_proto::Problem::new(
                403,
                "forbidden",
                "Outside policy",
                detail,
            )),
        };
        assert!(passport_refused(&refusal(
            "passport: certificate chain does not end at a trust anchor"
        )));
        assert!(!passport_refused(&refusal(
            "destination is outside the trunk group's policy"
        )));
        assert!(!passport_refused(&ript_h3::Error::Status {
            status: 500,
            problem: None
        }));
    }

    #[test]
    fn signed_passports_carry_the_call() {
        let ca = ript_h3::ca::CertAuthority::generate("test ca").unwrap();
        let (key, csr) = ript_h3::ca::make_csr(&["+14085551000"]).unwrap();
        let issued = ca
            .issue(csr.as_bytes(), |_| true, std::time::SystemTime::now())
            .unwrap();
        let cert = Cert {
            key,
            x5u: X5U.into(),
            renew_at: 0,
        };
        let j = sign(&cert, "+14085551000", "14085552000@core.example");
        assert_eq!(passport::x5u(&j).unwrap(), X5U);
        let anchors = [ca.cert_der().to_vec()];
        let c = passport::verify(&j, &issued.der_chain, &anchors, wall_secs()).unwrap();
        assert_eq!(c.orig.tn, "14085551000");
        assert_eq!(c.dest.tn, ["14085552000"]);
        assert!(c.iat.abs_diff(wall_secs()) <= 1);
        assert_eq!(c.origid.len(), 36, "a UUID");
        assert_ne!(
            sign(&cert, "+14085551000", "+14085552000"),
            sign(&cert, "+14085551000", "+14085552000"),
            "a fresh origid per call"
        );
    }
}
