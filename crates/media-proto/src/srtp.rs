//! SRTP (RFC 3711, RFC 7714) keyed by SDES (RFC 4568): the `a=crypto` attribute, master keys
//! from caller-supplied random bytes, and a two-direction session over rtc-srtp contexts.
//!
//! RFC 4568 §6.1: each side's `a=crypto` carries the key *it* encrypts with, so a session
//! protects with our key and unprotects with the peer's.

use crate::Error;
use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use bytes::Bytes;
use rtc_shared::error::Error as RtcError;
use rtc_srtp::context::Context;
use rtc_srtp::crypto::providers::RingCrypto;
use rtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use rtc_srtp::protection_profile::ProtectionProfile;
use std::fmt;
use std::str::FromStr;

/// Peers differ on whether they pad base64 (RFC 4568 §9.2 says base64 of RFC 3548, padded;
/// some omit the `=`); both decode to the same bytes.
const B64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Replay window in packets (RFC 3711 §3.3.2 asks for at least 64; libsrtp uses 128).
const REPLAY_WINDOW: usize = 128;

/// RFC 3711 §9.2: at most 2^48 SRTP packets under one master key.
const MAX_LIFETIME_LOG2: u32 = 48;

/// The SDES crypto suites we implement (RFC 4568 §6.2, RFC 7714 §14.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
    AeadAes128Gcm,
}

impl Suite {
    /// Every suite, strongest first (an offer lists them in this order).
    pub const ALL: [Suite; 3] = [
        Suite::AeadAes128Gcm,
        Suite::AesCm128HmacSha1_80,
        Suite::AesCm128HmacSha1_32,
    ];

    /// The name used in `a=crypto`.
    pub fn name(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Suite::AeadAes128Gcm => "AEAD_AES_128_GCM",
        }
    }

    pub fn key_len(self) -> usize {
        16
    }

    pub fn salt_len(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 | Suite::AesCm128HmacSha1_32 => 14,
            // RFC 7714 §12: a 96-bit salt.
            Suite::AeadAes128Gcm => 12,
        }
    }

    /// Length of the `inline:` key material: master key ‖ master salt.
    pub fn key_salt_len(self) -> usize {
        self.key_len() + self.salt_len()
    }

    fn profile(self) -> ProtectionProfile {
        match self {
            Suite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            Suite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
            Suite::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
        }
    }

    /// Where the SRTCP E flag and index start, counted back from the packet end (RFC 3711
    /// §3.4: index then tag; RFC 7714 §9.3: tag then index).
    fn srtcp_index_from_end(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 | Suite::AesCm128HmacSha1_32 => 4 + 10,
            Suite::AeadAes128Gcm => 4,
        }
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Suite {
    type Err = Error;

    /// ABNF literals are case-insensitive (RFC 5234 §2.3).
    fn from_str(s: &str) -> Result<Self, Error> {
        Suite::ALL
            .into_iter()
            .find(|x| x.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| Error::SrtpSuite(s.chars().take(64).collect()))
    }
}

const MAX_KEY_SALT: usize = 30;

/// A master key and salt for one suite. `Debug` does not print the key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MasterKey {
    suite: Suite,
    key_salt: [u8; MAX_KEY_SALT],
}

impl MasterKey {
    /// `key_salt` is the master key followed by the master salt, exactly
    /// [`Suite::key_salt_len`] bytes. For a local key these come from a CSPRNG of the
    /// caller's: this crate draws no randomness.
    pub fn new(suite: Suite, key_salt: &[u8]) -> Result<Self, Error> {
        let expected = suite.key_salt_len();
        let mut buf = [0u8; MAX_KEY_SALT];
        match buf.get_mut(..expected) {
            Some(dst) if key_salt.len() == expected => dst.copy_from_slice(key_salt),
            _ => {
                return Err(Error::SrtpKeyLength {
                    expected,
                    got: key_salt.len(),
                });
            }
        }
        Ok(MasterKey {
            suite,
            key_salt: buf,
        })
    }

    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// Master key ‖ master salt, as carried in `inline:`.
    pub fn key_salt(&self) -> &[u8] {
        self.key_salt
            .get(..self.suite.key_salt_len())
            .unwrap_or_default()
    }

    fn split(&self) -> (&[u8], &[u8]) {
        self.key_salt().split_at(self.suite.key_len())
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("suite", &self.suite)
            .field("key_salt", &"<redacted>")
            .finish()
    }
}

/// One SDES `a=crypto` attribute (RFC 4568 §9.1) with a single inline key and no MKI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CryptoAttr {
    /// Identifies the line; the answer echoes the tag of the offer line it accepts.
    pub tag: u32,
    pub key: MasterKey,
    /// Key lifetime in packets, when given. Informational: the session stops at the SRTP
    /// maximum of 2^48 packets (RFC 3711 §9.2) but does not enforce a shorter lifetime;
    /// re-keying is an offer/answer matter.
    pub lifetime: Option<u64>,
}

impl CryptoAttr {
    pub fn new(tag: u32, key: MasterKey) -> Self {
        CryptoAttr {
            tag,
            key,
            lifetime: None,
        }
    }

    /// Parses the attribute value (`1 AES_CM_128_HMAC_SHA1_80 inline:…`), with or without a
    /// leading `a=crypto:`. Refused: unknown suites, key material of the wrong length, bad
    /// base64, MKIs and several keys (unsupported), session parameters that change the SRTP
    /// transform (RFC 4568 §6.3.7 makes an unknown one fatal), a lifetime above 2^48.
    pub fn parse(value: &str) -> Result<Self, Error> {
        let value = value.trim();
        let value = value.strip_prefix("a=").unwrap_or(value);
        let value = value.strip_prefix("crypto:").unwrap_or(value);
        let mut fields = value.split_ascii_whitespace();
        let tag = fields
            .next()
            .filter(|t| (1..=9).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse().ok())
            .ok_or(Error::Crypto("tag is not 1 to 9 digits"))?;
        let suite: Suite = fields
            .next()
            .ok_or(Error::Crypto("no crypto suite"))?
            .parse()?;
        let key_params = fields.next().ok_or(Error::Crypto("no key parameters"))?;
        // RFC 4568 §9.1: several key-params are separated by ';' and need MKIs to tell apart.
        if key_params.contains(';') {
            return Err(Error::SrtpUnsupported("several master keys (mki)"));
        }
        let inline = key_params
            .get(..7)
            .filter(|m| m.eq_ignore_ascii_case("inline:"))
            .and_then(|_| key_params.get(7..))
            .ok_or(Error::Crypto("key method is not inline"))?;
        let mut parts = inline.split('|');
        let b64 = parts.next().unwrap_or_default();
        let key_salt = B64_LENIENT
            .decode(b64)
            .map_err(|_| Error::Crypto("key is not base64"))?;
        let key = MasterKey::new(suite, &key_salt)?;
        let mut lifetime = None;
        for p in parts {
            if p.contains(':') {
                return Err(Error::SrtpUnsupported("mki"));
            }
            if lifetime.is_some() {
                return Err(Error::Crypto("two lifetimes"));
            }
            lifetime = Some(parse_lifetime(p)?);
        }
        for param in fields {
            session_param(param)?;
        }
        Ok(CryptoAttr { tag, key, lifetime })
    }
}

fn parse_lifetime(p: &str) -> Result<u64, Error> {
    let bad = Error::Crypto("lifetime is not a number or 2^n");
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    let n = match p.strip_prefix("2^") {
        Some(e) if digits(e) => {
            let e: u32 = e.parse().map_err(|_| bad.clone())?;
            if e > MAX_LIFETIME_LOG2 {
                return Err(Error::Crypto("lifetime above 2^48 packets"));
            }
            1u64 << e
        }
        None if digits(p) => p.parse().map_err(|_| bad.clone())?,
        _ => return Err(bad),
    };
    if n == 0 || n > 1u64 << MAX_LIFETIME_LOG2 {
        return Err(Error::Crypto("lifetime above 2^48 packets"));
    }
    Ok(n)
}

/// RFC 4568 §6.3: which SRTP session parameters we can live with.
fn session_param(p: &str) -> Result<(), Error> {
    let (name, value) = p.split_once('=').unwrap_or((p, ""));
    match name.to_ascii_uppercase().as_str() {
        // §6.3.6: a hint for the receiver's replay window; ours is fixed.
        "WSH" => Ok(()),
        // §6.3.1: key derivation rate 0 means derive once, which is what rtc-srtp does.
        "KDR" if value == "0" => Ok(()),
        "KDR" => Err(Error::SrtpUnsupported("key derivation rate other than 0")),
        "UNENCRYPTED_SRTP" | "UNENCRYPTED_SRTCP" | "UNAUTHENTICATED_SRTP" => Err(
            Error::SrtpUnsupported("unencrypted or unauthenticated srtp"),
        ),
        "FEC_ORDER" | "FEC_KEY" => Err(Error::SrtpUnsupported("fec parameters")),
        // §9.2: an extension starting with '-' may be ignored when not understood.
        _ if p.starts_with('-') => Ok(()),
        _ => Err(Error::SrtpUnsupported("unknown session parameter")),
    }
}

impl fmt::Display for CryptoAttr {
    /// The attribute value, without `a=crypto:`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} inline:{}",
            self.tag,
            self.key.suite,
            STANDARD.encode(self.key.key_salt())
        )?;
        match self.lifetime {
            Some(n) if n.is_power_of_two() => write!(f, "|2^{}", n.trailing_zeros()),
            Some(n) => write!(f, "|{n}"),
            None => Ok(()),
        }
    }
}

/// The two keys of one SRTP session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionKeys {
    /// The peer's key (from its `a=crypto`): decrypts what it sends.
    pub inbound: MasterKey,
    /// Our key (in our `a=crypto`): encrypts what we send.
    pub outbound: MasterKey,
}

/// SRTP and SRTCP for one peer: one rtc-srtp context per direction, replay protection on
/// the inbound one. Suites may differ per direction.
pub struct SrtpSession {
    outbound: Context,
    inbound: Context,
    inbound_suite: Suite,
    outbound_suite: Suite,
}

impl fmt::Debug for SrtpSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpSession")
            .field("inbound_suite", &self.inbound_suite)
            .field("outbound_suite", &self.outbound_suite)
            .finish_non_exhaustive()
    }
}

fn context(key: &MasterKey, replay: bool) -> Result<Context, Error> {
    let (k, s) = key.split();
    let (rtp, rtcp) = if replay {
        (
            Some(srtp_replay_protection(REPLAY_WINDOW)),
            Some(srtcp_replay_protection(REPLAY_WINDOW)),
        )
    } else {
        (None, None)
    };
    Context::new(k, s, key.suite.profile(), rtp, rtcp, &RingCrypto)
        .map_err(|_| Error::Srtp("cannot build the srtp context"))
}

fn map_err(e: RtcError) -> Error {
    match e {
        RtcError::RtpFailedToVerifyAuthTag
        | RtcError::RtcpFailedToVerifyAuthTag
        | RtcError::ErrFailedToVerifyAuthTag => Error::SrtpAuth,
        RtcError::SrtpSsrcDuplicated(..)
        | RtcError::SrtcpSsrcDuplicated(..)
        | RtcError::ErrDuplicated => Error::SrtpReplay,
        RtcError::ErrTooShortRtp
        | RtcError::ErrTooShortRtcp
        | RtcError::SrtpTooSmall(..)
        | RtcError::SrtcpTooSmall(..) => Error::Srtp("packet too short"),
        RtcError::ErrExceededMaxPackets => Error::Srtp("master key used up (rfc 3711 §9.2)"),
        _ => Error::Srtp("malformed packet"),
    }
}

impl SrtpSession {
    pub fn new(keys: &SessionKeys) -> Result<Self, Error> {
        Ok(SrtpSession {
            outbound: context(&keys.outbound, false)?,
            inbound: context(&keys.inbound, true)?,
            inbound_suite: keys.inbound.suite,
            outbound_suite: keys.outbound.suite,
        })
    }

    /// Encrypts and authenticates one RTP packet for the peer.
    pub fn protect_rtp(&mut self, packet: &[u8]) -> Result<Bytes, Error> {
        rtp_header_ok(packet)?;
        self.outbound
            .encrypt_rtp(packet)
            .map(|b| b.freeze())
            .map_err(map_err)
    }

    /// Authenticates, replay-checks and decrypts one SRTP packet from the peer.
    pub fn unprotect_rtp(&mut self, packet: &[u8]) -> Result<Bytes, Error> {
        rtp_header_ok(packet)?;
        self.inbound
            .decrypt_rtp(packet)
            .map(|b| b.freeze())
            .map_err(map_err)
    }

    /// Encrypts and authenticates one (compound) RTCP packet for the peer.
    pub fn protect_rtcp(&mut self, packet: &[u8]) -> Result<Bytes, Error> {
        rtcp_header_ok(packet)?;
        self.outbound
            .encrypt_rtcp(packet)
            .map(|b| b.freeze())
            .map_err(map_err)
    }

    /// Authenticates, replay-checks and decrypts one SRTCP packet from the peer.
    pub fn unprotect_rtcp(&mut self, packet: &[u8]) -> Result<Bytes, Error> {
        rtcp_header_ok(packet)?;
        // RFC 3711 §3.4: E = 0 would mean the payload is sent in the clear, which only the
        // UNENCRYPTED_SRTCP parameter allows; we never agree to it. rtc-srtp's AES-CM path
        // returns such packets without checking their tag, so they stop here.
        let e_flag = packet
            .len()
            .checked_sub(self.inbound_suite.srtcp_index_from_end())
            .and_then(|i| packet.get(i))
            .ok_or(Error::Srtp("packet too short"))?;
        if e_flag & 0x80 == 0 {
            return Err(Error::Srtp("unencrypted srtcp was not negotiated"));
        }
        self.inbound
            .decrypt_rtcp(packet)
            .map(|b| b.freeze())
            .map_err(map_err)
    }
}

/// RFC 3550 §5.1: version 2 and at least the fixed header (the CSRC list and extension are
/// bounds-checked by the header parser).
fn rtp_header_ok(p: &[u8]) -> Result<(), Error> {
    match p.first() {
        Some(b) if p.len() >= 12 && b >> 6 == 2 => Ok(()),
        _ => Err(Error::Srtp("not an rtp packet")),
    }
}

/// RFC 3550 §6.4: version 2, a header and the sender SSRC.
fn rtcp_header_ok(p: &[u8]) -> Result<(), Error> {
    match p.first() {
        Some(b) if p.len() >= 8 && b >> 6 == 2 => Ok(()),
        _ => Err(Error::Srtp("not an rtcp packet")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn session(suite: Suite, key_salt: &[u8]) -> SrtpSession {
        let k = MasterKey::new(suite, key_salt).unwrap();
        SrtpSession::new(&SessionKeys {
            inbound: k,
            outbound: k,
        })
        .unwrap()
    }

    // Reference packets of libsrtp's test/srtp_driver.c (`srtp_validate`, `srtp_validate_gcm`),
    // an independent implementation: master key+salt, SSRC 0xcafebabe, seq 0x1234.
    const CM_KEY: &str = "e1f97a0d3e018be0d64fa32c06de4139 0ec675ad498afeebb6960b3aabe6";
    const RTP_PLAIN: &str = "800f1234decafbadcafebabe abababababababababababababababab";
    const CM80_RTP: &str = "800f1234decafbadcafebabe 4e55dc4ce79978d88ca4d215949d2402 \
                            b78d6acc99ea179b8dbb";
    const RTCP_PLAIN: &str = "81c8000bcafebabe abababababababababababababababab";
    const CM_RTCP: &str = "81c8000bcafebabe 7128035be487b9bdbef89041f977a5a8 \
                           80000001 993e08cd54d6c1230798";
    const GCM_KEY: &str = "000102030405060708090a0b0c0d0e0f a0a1a2a3a4a5a6a7a8a9aaab";
    const GCM_RTP: &str = "800f1234decafbadcafebabe c5002ede04cfdd2eb91159e0880aa06e \
                           d2976826f796b201df3131a127e8a392";
    const GCM_RTCP: &str = "81c8000bcafebabe c98b8b5df0392a55852b6c21ac8e7025 \
                            c52c6fbea2b3b446ea31123ba88ce61e 80000001";

    #[test]
    fn libsrtp_reference_packets_for_all_three_suites() {
        // SHA1_32 shares the keystream and truncates the RTP tag to 4 bytes (RFC 3711 §4.2);
        // SRTCP keeps the 80-bit tag in both (RFC 4568 §6.2.2).
        let cm32_rtp = &hex(CM80_RTP)[..32];
        for (suite, key, rtp, rtcp) in [
            (
                Suite::AesCm128HmacSha1_80,
                CM_KEY,
                hex(CM80_RTP),
                hex(CM_RTCP),
            ),
            (
                Suite::AesCm128HmacSha1_32,
                CM_KEY,
                cm32_rtp.to_vec(),
                hex(CM_RTCP),
            ),
            (Suite::AeadAes128Gcm, GCM_KEY, hex(GCM_RTP), hex(GCM_RTCP)),
        ] {
            let mut tx = session(suite, &hex(key));
            assert_eq!(
                tx.protect_rtp(&hex(RTP_PLAIN)).unwrap()[..],
                rtp[..],
                "{suite}"
            );
            assert_eq!(
                tx.protect_rtcp(&hex(RTCP_PLAIN)).unwrap()[..],
                rtcp[..],
                "{suite}"
            );
            let mut rx = session(suite, &hex(key));
            assert_eq!(
                rx.unprotect_rtp(&rtp).unwrap()[..],
                hex(RTP_PLAIN)[..],
                "{suite}"
            );
            assert_eq!(
                rx.unprotect_rtcp(&rtcp).unwrap()[..],
                hex(RTCP_PLAIN)[..],
                "{suite}"
            );
        }
    }

    fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 0x00];
        p.extend(seq.to_be_bytes());
        p.extend((u32::from(seq) * 160).to_be_bytes());
        p.extend(ssrc.to_be_bytes());
        p.extend((0..160).map(|i| (i as u8) ^ (seq as u8)));
        p
    }

    fn rr(ssrc: u32) -> Vec<u8> {
        // RFC 3550 §6.4.2 receiver report with no report blocks.
        let mut p = vec![0x80, 201, 0, 1];
        p.extend(ssrc.to_be_bytes());
        p
    }

    fn pair(suite: Suite) -> (SrtpSession, SrtpSession) {
        let ours = MasterKey::new(suite, &vec![7u8; suite.key_salt_len()]).unwrap();
        let theirs = MasterKey::new(suite, &vec![9u8; suite.key_salt_len()]).unwrap();
        let a = SrtpSession::new(&SessionKeys {
            inbound: theirs,
            outbound: ours,
        })
        .unwrap();
        let b = SrtpSession::new(&SessionKeys {
            inbound: ours,
            outbound: theirs,
        })
        .unwrap();
        (a, b)
    }

    #[test]
    fn round_trips_both_ways_across_a_sequence_wrap() {
        for suite in Suite::ALL {
            let (mut a, mut b) = pair(suite);
            for seq in (65530..=65535).chain(0..5u16) {
                let p = rtp(seq, 0x1111);
                let wire = a.protect_rtp(&p).unwrap();
                assert_ne!(wire[12..172], p[12..], "{suite}: payload is encrypted");
                assert_eq!(b.unprotect_rtp(&wire).unwrap()[..], p[..], "{suite}");
                let back = rtp(seq, 0x2222);
                let wire = b.protect_rtp(&back).unwrap();
                assert_eq!(a.unprotect_rtp(&wire).unwrap()[..], back[..], "{suite}");
            }
            let wire = a.protect_rtcp(&rr(0x1111)).unwrap();
            assert_eq!(
                b.unprotect_rtcp(&wire).unwrap()[..],
                rr(0x1111)[..],
                "{suite}"
            );
        }
    }

    #[test]
    fn tampering_anywhere_and_the_wrong_key_fail_authentication() {
        for suite in Suite::ALL {
            let (mut a, mut b) = pair(suite);
            let wire = a.protect_rtp(&rtp(1, 5)).unwrap();
            // A header bit (the marker), a payload bit, the last tag bit.
            for i in [1, 20, wire.len() - 1] {
                let mut t = wire.to_vec();
                t[i] ^= 0x01;
                assert_eq!(
                    b.unprotect_rtp(&t),
                    Err(Error::SrtpAuth),
                    "{suite} byte {i}"
                );
            }
            // The untouched packet still passes: failures left no state behind.
            assert!(b.unprotect_rtp(&wire).is_ok(), "{suite}");
            let rtcp = a.protect_rtcp(&rr(5)).unwrap();
            let mut t = rtcp.to_vec();
            t[6] ^= 0x10;
            assert_eq!(b.unprotect_rtcp(&t), Err(Error::SrtpAuth), "{suite}");
            // Our own outbound key does not open what we sent: the directions are separate.
            let (mut a2, _) = pair(suite);
            assert_eq!(
                a2.unprotect_rtp(&a.protect_rtp(&rtp(2, 5)).unwrap()),
                Err(Error::SrtpAuth),
                "{suite}"
            );
        }
    }

    #[test]
    fn replays_are_refused_and_reordering_within_the_window_is_not() {
        for suite in Suite::ALL {
            let (mut a, mut b) = pair(suite);
            let w: Vec<Bytes> = (10..14)
                .map(|s| a.protect_rtp(&rtp(s, 3)).unwrap())
                .collect();
            b.unprotect_rtp(&w[0]).unwrap();
            b.unprotect_rtp(&w[2]).unwrap();
            b.unprotect_rtp(&w[1]).unwrap();
            assert_eq!(b.unprotect_rtp(&w[2]), Err(Error::SrtpReplay), "{suite}");
            assert_eq!(b.unprotect_rtp(&w[0]), Err(Error::SrtpReplay), "{suite}");
            b.unprotect_rtp(&w[3]).unwrap();
            // Far behind the window: refused as a replay too (RFC 3711 §3.3.2).
            for s in 14..(14 + REPLAY_WINDOW as u16 + 10) {
                b.unprotect_rtp(&a.protect_rtp(&rtp(s, 3)).unwrap())
                    .unwrap();
            }
            let old = a.protect_rtp(&rtp(9, 3));
            assert_eq!(
                b.unprotect_rtp(&old.unwrap()),
                Err(Error::SrtpReplay),
                "{suite}"
            );
            let c = a.protect_rtcp(&rr(3)).unwrap();
            b.unprotect_rtcp(&c).unwrap();
            assert_eq!(b.unprotect_rtcp(&c), Err(Error::SrtpReplay), "{suite}");
        }
    }

    #[test]
    fn srtcp_with_the_e_flag_cleared_is_refused_not_passed_through() {
        for suite in Suite::ALL {
            let (mut a, mut b) = pair(suite);
            let mut c = a.protect_rtcp(&rr(3)).unwrap().to_vec();
            let at = c.len() - suite.srtcp_index_from_end();
            c[at] &= 0x7f;
            assert!(
                matches!(b.unprotect_rtcp(&c), Err(Error::Srtp(_))),
                "{suite}"
            );
        }
    }

    #[test]
    fn short_and_non_rtp_input_is_an_error() {
        for suite in Suite::ALL {
            let (mut a, mut b) = pair(suite);
            for p in [&[][..], &[0x80; 11][..], &[0x40; 40][..], &rtp(1, 1)[..14]] {
                assert!(b.unprotect_rtp(p).is_err(), "{suite} {p:?}");
                assert!(b.unprotect_rtcp(p).is_err(), "{suite} {p:?}");
            }
            // Header plus less than a tag.
            let w = a.protect_rtp(&rtp(1, 1)).unwrap();
            assert!(b.unprotect_rtp(&w[..13]).is_err());
            assert!(a.protect_rtcp(&[0x80, 201, 0]).is_err());
            // CSRC count 15 with no room for them.
            let mut csrc = rtp(2, 1);
            csrc[0] = 0x8f;
            csrc.truncate(30);
            assert!(a.protect_rtp(&csrc).is_err());
        }
    }

    #[test]
    fn parses_crypto_lines() {
        let b64 = STANDARD.encode(hex(CM_KEY));
        let c = CryptoAttr::parse(&format!(
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{b64}|2^31"
        ))
        .unwrap();
        assert_eq!(c.tag, 1);
        assert_eq!(c.key.suite(), Suite::AesCm128HmacSha1_80);
        assert_eq!(c.key.key_salt(), &hex(CM_KEY)[..]);
        assert_eq!(c.lifetime, Some(1 << 31));
        assert_eq!(
            c.to_string(),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{b64}|2^31")
        );
        // Without prefix, decimal lifetime, tolerated session parameters, lower case.
        let c = CryptoAttr::parse(&format!(
            "22 aes_cm_128_hmac_sha1_32 INLINE:{b64}|1000 KDR=0 WSH=64 -X-ANY"
        ))
        .unwrap();
        assert_eq!(
            (c.tag, c.key.suite(), c.lifetime),
            (22, Suite::AesCm128HmacSha1_32, Some(1000))
        );
        // GCM: 28 bytes, padded or not.
        let g = STANDARD.encode(hex(GCM_KEY));
        assert!(g.ends_with('='));
        for v in [g.clone(), g.trim_end_matches('=').to_owned()] {
            let c = CryptoAttr::parse(&format!("3 AEAD_AES_128_GCM inline:{v}")).unwrap();
            assert_eq!(c.key.key_salt(), &hex(GCM_KEY)[..]);
            assert_eq!(c.to_string(), format!("3 AEAD_AES_128_GCM inline:{g}"));
        }
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        let b64 = STANDARD.encode(hex(CM_KEY));
        let gcm = STANDARD.encode(hex(GCM_KEY));
        let cases: &[(String, Error)] = &[
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{b64}|2^20|1:4"),
                Error::SrtpUnsupported("mki"),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{b64}|1:4"),
                Error::SrtpUnsupported("mki"),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{b64}|2^20|1:4;inline:{b64}|2^20|2:4"),
                Error::SrtpUnsupported("several master keys (mki)"),
            ),
            (
                format!("1 AES_256_CM_HMAC_SHA1_80 inline:{b64}"),
                Error::SrtpSuite("AES_256_CM_HMAC_SHA1_80".into()),
            ),
            (
                format!("1 AEAD_AES_128_GCM inline:{b64}"),
                Error::SrtpKeyLength {
                    expected: 28,
                    got: 30,
                },
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{gcm}"),
                Error::SrtpKeyLength {
                    expected: 30,
                    got: 28,
                },
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:!!notbase64!!".into(),
                Error::Crypto("key is not base64"),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{b64} UNENCRYPTED_SRTCP"),
                Error::SrtpUnsupported("unencrypted or unauthenticated srtp"),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{b64} KDR=24"),
                Error::SrtpUnsupported("key derivation rate other than 0"),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{b64} FOO=1"),
                Error::SrtpUnsupported("unknown session parameter"),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{b64}|2^49"),
                Error::Crypto("lifetime above 2^48 packets"),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{b64}|2^x"),
                Error::Crypto("lifetime is not a number or 2^n"),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{b64}|5|6"),
                Error::Crypto("two lifetimes"),
            ),
            (
                format!("1234567890 AES_CM_128_HMAC_SHA1_80 inline:{b64}"),
                Error::Crypto("tag is not 1 to 9 digits"),
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80".into(),
                Error::Crypto("no key parameters"),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 uri:{b64}"),
                Error::Crypto("key method is not inline"),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(CryptoAttr::parse(line).as_ref(), Err(want), "{line}");
        }
    }

    #[test]
    fn master_keys_check_length_and_keep_the_key_out_of_debug() {
        for s in Suite::ALL {
            let k = MasterKey::new(s, &vec![0xa5; s.key_salt_len()]).unwrap();
            assert!(!format!("{k:?}").contains("165"), "{k:?}");
            assert!(MasterKey::new(s, &vec![0; s.key_salt_len() + 1]).is_err());
            assert!(MasterKey::new(s, &[]).is_err());
            // A generated line parses back to the same key.
            let line = CryptoAttr::new(9, k).to_string();
            assert_eq!(CryptoAttr::parse(&line).unwrap().key, k);
            assert_eq!(s.name().parse::<Suite>().unwrap(), s);
        }
        assert!(!format!("{:?}", pair(Suite::AeadAes128Gcm).0).contains("key"));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,200}") {
            let _ = CryptoAttr::parse(&s);
        }

        #[test]
        fn unprotect_never_panics(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..300),
            rtcp in any::<bool>(),
            suite in 0..3usize,
        ) {
            let (_, mut b) = pair(Suite::ALL[suite]);
            if let Some(first) = bytes.first_mut() {
                *first = (*first & 0x3f) | 0x80;
            }
            if rtcp {
                let _ = b.unprotect_rtcp(&bytes);
            } else {
                let _ = b.unprotect_rtp(&bytes);
            }
        }
    }
}
