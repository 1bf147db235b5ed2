//! SDP (RFC 4566) for the SIP leg and the RFC 3264 answerer: codec choice with the offerer's
//! payload type numbers, direction/hold, rejected streams (port 0), telephone-event and
//! SDES `a=crypto` (RFC 4568) keys. Parsing goes through rtc-sdp; printing is ours so the
//! output is deterministic.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::fmt::Write as _;

/// Largest SDP body accepted.
pub const MAX_SDP: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    #[error("sdp is malformed")]
    Malformed,
    #[error("sdp exceeds {MAX_SDP} bytes")]
    TooLarge,
    #[error("no acceptable media stream (488)")]
    NotAcceptable,
    #[error("the answer does not match the offer")]
    AnswerMismatch,
}

impl SdpError {
    /// The SIP status a UAS answers with (RFC 3261 §13.3.1.3, RFC 3264 §6).
    pub fn status(&self) -> u16 {
        match self {
            SdpError::NotAcceptable | SdpError::AnswerMismatch => 488,
            _ => 400,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn attr(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// RFC 3264 §6.1: the answer's direction for an offered one, given what we want.
    pub fn answer(self, want: Direction) -> Direction {
        let (we_send, we_recv) = match want {
            Direction::SendRecv => (true, true),
            Direction::SendOnly => (true, false),
            Direction::RecvOnly => (false, true),
            Direction::Inactive => (false, false),
        };
        let (they_send, they_recv) = match self {
            Direction::SendRecv => (true, true),
            Direction::SendOnly => (true, false),
            Direction::RecvOnly => (false, true),
            Direction::Inactive => (false, false),
        };
        match (we_send && they_recv, we_recv && they_send) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }
}

/// `a=rtpmap:<pt> <name>/<rate>[/<channels>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtpmap {
    pub pt: u8,
    pub name: String,
    pub rate: u32,
    pub channels: u8,
}

/// An SDES key (RFC 4568 `a=crypto`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crypto {
    pub tag: u32,
    pub suite: String,
    /// Master key ‖ master salt, decoded from `inline:`.
    pub key_salt: Vec<u8>,
}

impl Crypto {
    /// `None` also for lines we could not honour: an MKI or several keys change the SRTP
    /// packet format (RFC 4568 §9.1), and session parameters other than a window-size hint,
    /// `KDR=0` or an ignorable `-` extension change the transform (§6.3); media-proto's SRTP
    /// supports neither, so the answerer must pick another line or refuse.
    fn parse(v: &str) -> Option<Crypto> {
        let mut it = v.split_whitespace();
        let tag = it.next()?.parse().ok()?;
        let suite = it.next()?.to_owned();
        let params = it.next()?;
        if params.contains(';') {
            return None;
        }
        let inline = params.strip_prefix("inline:")?;
        let mut parts = inline.split('|');
        let key_b64 = parts.next()?;
        if parts.any(|p| p.contains(':')) {
            return None;
        }
        let harmless = |p: &str| {
            let up = p.to_ascii_uppercase();
            up.starts_with("WSH=") || up == "KDR=0" || p.starts_with('-')
        };
        if !it.all(harmless) {
            return None;
        }
        let key_salt = B64.decode(key_b64).ok()?;
        Some(Crypto {
            tag,
            suite,
            key_salt,
        })
    }

    fn attr(&self) -> String {
        format!(
            "{} {} inline:{}",
            self.tag,
            self.suite,
            B64.encode(&self.key_salt)
        )
    }
}

/// SRTP suites we implement (via rtc-srtp), in preference order.
pub const SRTP_SUITES: &[&str] = &[
    "AEAD_AES_128_GCM",
    "AES_CM_128_HMAC_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub kind: String,
    pub port: u16,
    pub proto: String,
    /// Payload types in offer order.
    pub formats: Vec<u8>,
    /// The formats that are not payload types (e.g. `t38` of `m=image … udptl t38`), in
    /// offer order; printed after [`formats`](Self::formats).
    pub other_formats: Vec<String>,
    pub rtpmaps: Vec<Rtpmap>,
    pub fmtps: Vec<(u8, String)>,
    pub direction: Direction,
    /// Media-level `c=` address, if any.
    pub address: Option<String>,
    pub crypto: Vec<Crypto>,
    pub ptime: Option<u32>,
}

impl Media {
    /// The codec name and rate of a payload type (rtpmap, or RFC 3551 static types).
    pub fn codec(&self, pt: u8) -> Option<(String, u32)> {
        if let Some(m) = self.rtpmaps.iter().find(|m| m.pt == pt) {
            return Some((m.name.clone(), m.rate));
        }
        match pt {
            0 => Some(("PCMU".into(), 8000)),
            8 => Some(("PCMA".into(), 8000)),
            9 => Some(("G722".into(), 8000)),
            13 => Some(("CN".into(), 8000)),
            18 => Some(("G729".into(), 8000)),
            _ => None,
        }
    }

    pub fn is_secure(&self) -> bool {
        self.proto.to_ascii_uppercase().contains("SAVP")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdp {
    pub origin_user: String,
    pub session_id: u64,
    pub session_version: u64,
    pub origin_address: String,
    /// Session-level `c=` address.
    pub address: Option<String>,
    pub media: Vec<Media>,
}

impl Sdp {
    pub fn parse(body: &[u8]) -> Result<Sdp, SdpError> {
        if body.len() > MAX_SDP {
            return Err(SdpError::TooLarge);
        }
        let mut cur = std::io::Cursor::new(body);
        let sd = rtc_sdp::description::session::SessionDescription::unmarshal(&mut cur)
            .map_err(|_| SdpError::Malformed)?;
        let addr = |c: &Option<rtc_sdp::description::common::ConnectionInformation>| {
            c.as_ref()
                .and_then(|c| c.address.as_ref())
                .map(|a| a.address.clone())
        };
        let session_dir = direction_of(&sd.attributes);
        let mut media = Vec::new();
        for md in &sd.media_descriptions {
            let port = u16::try_from(md.media_name.port.value).map_err(|_| SdpError::Malformed)?;
            let mut formats = Vec::new();
            let mut other_formats = Vec::new();
            for f in &md.media_name.formats {
                // Non-RTP formats (e.g. `t38` of image/t38) are kept out of the list.
                match f.parse::<u8>() {
                    Ok(pt) => formats.push(pt),
                    Err(_) => other_formats.push(f.clone()),
                }
            }
            let mut rtpmaps = Vec::new();
            let mut fmtps = Vec::new();
            let mut crypto = Vec::new();
            let mut ptime = None;
            for a in &md.attributes {
                let v = a.value.as_deref().unwrap_or("");
                match a.key.to_ascii_lowercase().as_str() {
                    "rtpmap" => {
                        if let Some(m) = parse_rtpmap(v) {
                            rtpmaps.push(m);
                        }
                    }
                    "fmtp" => {
                        if let Some((pt, rest)) = v.split_once(' ')
                            && let Ok(pt) = pt.parse()
                        {
                            fmtps.push((pt, rest.trim().to_owned()));
                        }
                    }
                    "crypto" => {
                        if let Some(c) = Crypto::parse(v) {
                            crypto.push(c);
                        }
                    }
                    "ptime" => ptime = v.trim().parse().ok(),
                    _ => {}
                }
            }
            media.push(Media {
                kind: md.media_name.media.clone(),
                port,
                proto: md.media_name.protos.join("/"),
                formats,
                other_formats,
                rtpmaps,
                fmtps,
                direction: direction_of(&md.attributes)
                    .or(session_dir)
                    .unwrap_or(Direction::SendRecv),
                address: addr(&md.connection_information),
                crypto,
                ptime,
            });
        }
        Ok(Sdp {
            origin_user: sd.origin.username.clone(),
            session_id: sd.origin.session_id,
            session_version: sd.origin.session_version,
            origin_address: sd.origin.unicast_address.clone(),
            address: addr(&sd.connection_information),
            media,
        })
    }

    /// The address media of stream `i` goes to (media-level `c=` over session-level).
    pub fn media_address(&self, i: usize) -> Option<&str> {
        self.media
            .get(i)
            .and_then(|m| m.address.as_deref())
            .or(self.address.as_deref())
    }

    /// RFC 3264 §8.4 hold: sendonly/inactive, or the RFC 2543 `c=0.0.0.0`.
    pub fn is_hold(&self, i: usize) -> bool {
        let Some(m) = self.media.get(i) else {
            return false;
        };
        matches!(m.direction, Direction::SendOnly | Direction::Inactive)
            || self.media_address(i) == Some("0.0.0.0")
    }

    pub fn to_text(&self) -> String {
        let ip = |a: &str| if a.contains(':') { "IP6" } else { "IP4" };
        let mut s = String::with_capacity(512);
        let _ = write!(
            s,
            "v=0\r\no={} {} {} IN {} {}\r\ns=-\r\n",
            self.origin_user,
            self.session_id,
            self.session_version,
            ip(&self.origin_address),
            self.origin_address
        );
        if let Some(a) = &self.address {
            let _ = write!(s, "c=IN {} {a}\r\n", ip(a));
        }
        s.push_str("t=0 0\r\n");
        for m in &self.media {
            let fmts: Vec<String> = m
                .formats
                .iter()
                .map(u8::to_string)
                .chain(m.other_formats.iter().cloned())
                .collect();
            let _ = write!(
                s,
                "m={} {} {} {}\r\n",
                m.kind,
                m.port,
                m.proto,
                fmts.join(" ")
            );
            if let Some(a) = &m.address {
                let _ = write!(s, "c=IN {} {a}\r\n", ip(a));
            }
            for r in &m.rtpmaps {
                if r.channels > 1 {
                    let _ = write!(
                        s,
                        "a=rtpmap:{} {}/{}/{}\r\n",
                        r.pt, r.name, r.rate, r.channels
                    );
                } else {
                    let _ = write!(s, "a=rtpmap:{} {}/{}\r\n", r.pt, r.name, r.rate);
                }
            }
            for (pt, f) in &m.fmtps {
                let _ = write!(s, "a=fmtp:{pt} {f}\r\n");
            }
            if let Some(p) = m.ptime {
                let _ = write!(s, "a=ptime:{p}\r\n");
            }
            for c in &m.crypto {
                let _ = write!(s, "a=crypto:{}\r\n", c.attr());
            }
            let _ = write!(s, "a={}\r\n", m.direction.attr());
        }
        s
    }
}

fn direction_of(attrs: &[rtc_sdp::description::common::Attribute]) -> Option<Direction> {
    attrs
        .iter()
        .find_map(|a| match a.key.to_ascii_lowercase().as_str() {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        })
}

fn parse_rtpmap(v: &str) -> Option<Rtpmap> {
    let (pt, rest) = v.split_once(' ')?;
    let mut parts = rest.trim().split('/');
    let name = parts.next()?.to_owned();
    let rate = parts.next()?.parse().ok()?;
    // Absent, malformed or 0 (which would not print back): one channel.
    let channels = parts
        .next()
        .and_then(|c| c.parse().ok())
        .filter(|&c| c > 0)
        .unwrap_or(1);
    Some(Rtpmap {
        pt: pt.parse().ok()?,
        name,
        rate,
        channels,
    })
}

/// SRTP policy toward a peer (issue: off / optional / required).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpMode {
    Off,
    Optional,
    Required,
}

/// What we can do on our side of a call.
#[derive(Debug, Clone)]
pub struct Local {
    pub address: String,
    pub audio_port: u16,
    /// Codec names in our preference order (e.g. `["PCMU", "PCMA", "opus"]`).
    pub codecs: Vec<String>,
    pub srtp: SrtpMode,
    /// Our SDES key ‖ salt for each suite we may pick (randomness is injected).
    pub keys: Vec<(String, Vec<u8>)>,
    pub want: Direction,
    pub session_id: u64,
    pub session_version: u64,
}

/// The outcome for the audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioPlan {
    /// Index of the m-line.
    pub index: usize,
    /// Chosen codec: the offerer's payload type number, name and clock rate.
    pub pt: u8,
    pub codec: String,
    pub rate: u32,
    /// telephone-event payload type, if both support it.
    pub telephone_event: Option<u8>,
    pub remote_address: Option<String>,
    pub remote_port: u16,
    pub direction: Direction,
    /// (remote key, our key) when SRTP was agreed, with the suite.
    pub srtp: Option<(String, Vec<u8>, Vec<u8>)>,
}

/// RFC 3264 §6: answers `offer`. The first audio stream we can serve is accepted; every other
/// m-line is rejected with port 0, keeping the m-line count and order.
pub fn answer(offer: &Sdp, local: &Local) -> Result<(Sdp, AudioPlan), SdpError> {
    let mut media = Vec::with_capacity(offer.media.len());
    let mut plan = None;
    for (i, m) in offer.media.iter().enumerate() {
        let accepted = if plan.is_none() && m.port != 0 && m.kind.eq_ignore_ascii_case("audio") {
            choose(offer, i, m, local)
        } else {
            None
        };
        match accepted {
            Some((answer_media, p)) => {
                media.push(answer_media);
                plan = Some(p);
            }
            None => media.push(Media {
                kind: m.kind.clone(),
                port: 0,
                proto: m.proto.clone(),
                // RFC 3264 §6: a rejected stream still lists a format (any one).
                formats: m.formats.first().copied().into_iter().collect(),
                other_formats: match m.formats.first() {
                    Some(_) => vec![],
                    None => m.other_formats.iter().take(1).cloned().collect(),
                },
                rtpmaps: vec![],
                fmtps: vec![],
                direction: Direction::Inactive,
                address: None,
                crypto: vec![],
                ptime: None,
            }),
        }
    }
    let plan = plan.ok_or(SdpError::NotAcceptable)?;
    let sdp = Sdp {
        origin_user: "-".into(),
        session_id: local.session_id,
        session_version: local.session_version,
        origin_address: local.address.clone(),
        address: Some(local.address.clone()),
        media,
    };
    Ok((sdp, plan))
}

fn choose(offer: &Sdp, i: usize, m: &Media, local: &Local) -> Option<(Media, AudioPlan)> {
    let secure = m.is_secure();
    if (secure && local.srtp == SrtpMode::Off) || (!secure && local.srtp == SrtpMode::Required) {
        return None;
    }
    let srtp = if secure {
        let theirs = SRTP_SUITES
            .iter()
            .find_map(|s| m.crypto.iter().find(|c| c.suite.eq_ignore_ascii_case(s)))?;
        let ours = local
            .keys
            .iter()
            .find(|(s, _)| s.eq_ignore_ascii_case(&theirs.suite))?;
        Some((theirs.clone(), ours.1.clone()))
    } else {
        None
    };
    // Our preference decides among codecs the offer lists (RFC 3264 allows either).
    let (pt, codec, rate) = local.codecs.iter().find_map(|want| {
        m.formats.iter().find_map(|pt| {
            m.codec(*pt)
                .filter(|(n, _)| n.eq_ignore_ascii_case(want))
                .map(|(n, r)| (*pt, n, r))
        })
    })?;
    let te = m.formats.iter().copied().find(|pt| {
        m.codec(*pt)
            .is_some_and(|(n, r)| n.eq_ignore_ascii_case("telephone-event") && r == rate)
    });
    let mut formats = vec![pt];
    let mut rtpmaps = vec![Rtpmap {
        pt,
        name: codec.clone(),
        rate,
        channels: m
            .rtpmaps
            .iter()
            .find(|r| r.pt == pt)
            .map_or(1, |r| r.channels),
    }];
    let mut fmtps: Vec<(u8, String)> = m.fmtps.iter().filter(|(p, _)| *p == pt).cloned().collect();
    if let Some(te) = te {
        formats.push(te);
        rtpmaps.push(Rtpmap {
            pt: te,
            name: "telephone-event".into(),
            rate,
            channels: 1,
        });
        fmtps.push((te, "0-16".into()));
    }
    let direction = m.direction.answer(local.want);
    let crypto = srtp
        .as_ref()
        .map(|(theirs, key)| {
            vec![Crypto {
                tag: theirs.tag,
                suite: theirs.suite.clone(),
                key_salt: key.clone(),
            }]
        })
        .unwrap_or_default();
    let answer_media = Media {
        kind: m.kind.clone(),
        port: local.audio_port,
        proto: m.proto.clone(),
        formats,
        other_formats: vec![],
        rtpmaps,
        fmtps,
        direction,
        address: None,
        crypto,
        ptime: m.ptime,
    };
    let plan = AudioPlan {
        index: i,
        pt,
        codec,
        rate,
        telephone_event: te,
        remote_address: offer.media_address(i).map(str::to_owned),
        remote_port: m.port,
        direction,
        srtp: srtp.map(|(theirs, ours)| (theirs.suite, theirs.key_salt, ours)),
    };
    Some((answer_media, plan))
}

/// Payload types we offer for codecs without a static one (RFC 3551 §6 static types are
/// kept), and telephone-event.
const DYNAMIC_PTS: &[(&str, u8, u32, u8)] = &[("opus", 111, 48_000, 2)];
pub const OFFER_TELEPHONE_EVENT_PT: u8 = 101;

/// An offer for one audio stream: `local.codecs` in order (names we cannot number are left
/// out), telephone-event on the first codec's clock, plain RTP (`local.srtp` is not offered:
/// our SDES offers are not implemented). `None` when no codec is left.
pub fn offer(local: &Local) -> Option<Sdp> {
    let mut formats = Vec::new();
    let mut rtpmaps = Vec::new();
    let mut fmtps = Vec::new();
    let mut first_rate = None;
    for name in &local.codecs {
        let known = match name.to_ascii_uppercase().as_str() {
            "PCMU" => Some((0, "PCMU", 8000, 1)),
            "PCMA" => Some((8, "PCMA", 8000, 1)),
            "G722" => Some((9, "G722", 8000, 1)),
            "G729" => Some((18, "G729", 8000, 1)),
            _ => DYNAMIC_PTS
                .iter()
                .find(|(n, ..)| n.eq_ignore_ascii_case(name))
                .map(|(n, pt, r, ch)| (*pt, *n, *r, *ch)),
        };
        let Some((pt, n, rate, channels)) = known else {
            continue;
        };
        if formats.contains(&pt) {
            continue;
        }
        formats.push(pt);
        rtpmaps.push(Rtpmap {
            pt,
            name: n.to_owned(),
            rate,
            channels,
        });
        if n == "opus" {
            fmtps.push((pt, "useinbandfec=1".to_owned()));
        }
        first_rate.get_or_insert(rate);
    }
    let rate = first_rate?;
    formats.push(OFFER_TELEPHONE_EVENT_PT);
    rtpmaps.push(Rtpmap {
        pt: OFFER_TELEPHONE_EVENT_PT,
        name: "telephone-event".into(),
        rate,
        channels: 1,
    });
    fmtps.push((OFFER_TELEPHONE_EVENT_PT, "0-16".into()));
    Some(Sdp {
        origin_user: "-".into(),
        session_id: local.session_id,
        session_version: local.session_version,
        origin_address: local.address.clone(),
        address: Some(local.address.clone()),
        media: vec![Media {
            kind: "audio".into(),
            port: local.audio_port,
            proto: "RTP/AVP".into(),
            formats,
            other_formats: vec![],
            rtpmaps,
            fmtps,
            direction: local.want,
            address: None,
            crypto: vec![],
            ptime: Some(20),
        }],
    })
}

/// RFC 3264 §6: what an answer to our [`offer`] chose for the audio stream — its first
/// format that we offered, telephone-event if kept, the peer's address and direction.
pub fn plan_from_answer(offer: &Sdp, answer: &Sdp) -> Result<AudioPlan, SdpError> {
    let (i, m) = answer
        .media
        .iter()
        .enumerate()
        .find(|(_, m)| m.kind.eq_ignore_ascii_case("audio") && m.port != 0)
        .ok_or(SdpError::NotAcceptable)?;
    let ours = offer.media.first().ok_or(SdpError::NotAcceptable)?;
    let (pt, codec, rate) = m
        .formats
        .iter()
        .find_map(|pt| {
            let (name, rate) = m.codec(*pt).or_else(|| ours.codec(*pt))?;
            let offered = ours.formats.iter().any(|o| {
                ours.codec(*o)
                    .is_some_and(|(n, r)| n.eq_ignore_ascii_case(&name) && r == rate)
            });
            (offered
                && !name.eq_ignore_ascii_case("telephone-event")
                && !name.eq_ignore_ascii_case("CN"))
            .then_some((*pt, name, rate))
        })
        .ok_or(SdpError::NotAcceptable)?;
    let te = m.formats.iter().copied().find(|pt| {
        m.codec(*pt)
            .is_some_and(|(n, r)| n.eq_ignore_ascii_case("telephone-event") && r == rate)
    });
    Ok(AudioPlan {
        index: i,
        pt,
        codec,
        rate,
        telephone_event: te,
        remote_address: answer.media_address(i).map(str::to_owned),
        remote_port: m.port,
        direction: m.direction,
        srtp: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 49170 RTP/AVP 8 0 96 101\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\nm=video 51372 RTP/AVP 31\r\n";

    fn local() -> Local {
        Local {
            address: "127.0.0.1".into(),
            audio_port: 30000,
            codecs: vec!["PCMU".into(), "PCMA".into()],
            srtp: SrtpMode::Optional,
            keys: SRTP_SUITES
                .iter()
                .map(|s| ((*s).to_owned(), vec![7u8; 30]))
                .collect(),
            want: Direction::SendRecv,
            session_id: 1,
            session_version: 1,
        }
    }

    #[test]
    fn our_offer_lists_codecs_in_order_and_reads_the_answer() {
        let mut l = local();
        l.codecs = vec!["PCMA".into(), "opus".into(), "speex".into(), "PCMU".into()];
        let o = offer(&l).unwrap();
        let text = o.to_text();
        assert!(
            text.contains("m=audio 30000 RTP/AVP 8 111 0 101\r\n"),
            "{text}"
        );
        assert!(text.contains("a=rtpmap:111 opus/48000/2\r\n"), "{text}");
        assert!(
            text.contains("a=rtpmap:101 telephone-event/8000\r\n"),
            "{text}"
        );
        let reparsed = Sdp::parse(text.as_bytes()).unwrap();
        assert_eq!(reparsed, o);
        // The peer answers with its own payload type numbers for what we offered.
        let ans = Sdp::parse(
            b"v=0\r\no=- 1 1 IN IP4 127.0.0.9\r\ns=-\r\nc=IN IP4 127.0.0.9\r\nt=0 0\r\n\
              m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendonly\r\n",
        )
        .unwrap();
        let p = plan_from_answer(&o, &ans).unwrap();
        assert_eq!((p.pt, p.codec.as_str(), p.rate), (0, "PCMU", 8000));
        assert_eq!(p.telephone_event, Some(101));
        assert_eq!(
            (p.remote_address.as_deref(), p.remote_port),
            (Some("127.0.0.9"), 4000)
        );
        assert_eq!(p.direction, Direction::SendOnly);
        // An answer choosing nothing we offered is refused.
        let bad = Sdp::parse(
            b"v=0\r\no=- 1 1 IN IP4 127.0.0.9\r\ns=-\r\nc=IN IP4 127.0.0.9\r\nt=0 0\r\n\
              m=audio 4000 RTP/AVP 18\r\n",
        )
        .unwrap();
        assert!(plan_from_answer(&o, &bad).is_err());
        l.codecs = vec!["speex".into()];
        assert!(offer(&l).is_none());
    }

    #[test]
    fn answer_uses_our_preference_offer_numbers_and_rejects_video() {
        let offer = Sdp::parse(OFFER.as_bytes()).unwrap();
        assert_eq!(offer.media[0].formats, vec![8, 0, 96, 101]);
        let (ans, plan) = answer(&offer, &local()).unwrap();
        assert_eq!((plan.pt, plan.codec.as_str(), plan.rate), (0, "PCMU", 8000));
        assert_eq!(plan.telephone_event, Some(101));
        assert_eq!(
            (plan.remote_address.as_deref(), plan.remote_port),
            (Some("192.0.2.10"), 49170)
        );
        assert_eq!(ans.media.len(), 2, "one answer m-line per offered m-line");
        assert_eq!(ans.media[1].port, 0, "video rejected");
        let text = ans.to_text();
        assert!(text.contains("m=audio 30000 RTP/AVP 0 101\r\n"), "{text}");
        assert!(text.contains("a=rtpmap:101 telephone-event/8000\r\n"));
        assert!(text.contains("a=sendrecv\r\n"));
        // What we print parses back to the same model.
        assert_eq!(Sdp::parse(text.as_bytes()).unwrap(), ans);
    }

    #[test]
    fn hold_is_sendonly_inactive_or_zero_address_and_is_answered_in_kind() {
        let held = OFFER.replace("a=ptime:20\r\n", "a=ptime:20\r\na=sendonly\r\n");
        let offer = Sdp::parse(held.as_bytes()).unwrap();
        assert!(offer.is_hold(0));
        let (_, plan) = answer(&offer, &local()).unwrap();
        assert_eq!(plan.direction, Direction::RecvOnly);
        let old_style = OFFER.replace("c=IN IP4 192.0.2.10", "c=IN IP4 0.0.0.0");
        assert!(Sdp::parse(old_style.as_bytes()).unwrap().is_hold(0));
        let inactive = OFFER.replace("a=ptime:20\r\n", "a=inactive\r\n");
        let (_, plan) = answer(&Sdp::parse(inactive.as_bytes()).unwrap(), &local()).unwrap();
        assert_eq!(plan.direction, Direction::Inactive);
        assert!(!Sdp::parse(OFFER.as_bytes()).unwrap().is_hold(0));
    }

    #[test]
    fn no_common_codec_or_srtp_policy_mismatch_is_488() {
        let mut l = local();
        l.codecs = vec!["G729".into()];
        let offer = Sdp::parse(OFFER.as_bytes()).unwrap();
        let e = answer(&offer, &l).unwrap_err();
        assert_eq!((e.clone(), e.status()), (SdpError::NotAcceptable, 488));
        let mut req = local();
        req.srtp = SrtpMode::Required;
        assert_eq!(answer(&offer, &req).unwrap_err(), SdpError::NotAcceptable);
    }

    #[test]
    fn sdes_offer_gets_our_key_for_the_preferred_suite() {
        let key = B64.encode([1u8; 30]);
        let savp = OFFER
            .replace("RTP/AVP 8 0 96 101", "RTP/SAVP 0 101")
            .replace("a=ptime:20\r\n", &format!("a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{key}\r\na=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{key}|2^20\r\n"));
        let offer = Sdp::parse(savp.as_bytes()).unwrap();
        let (ans, plan) = answer(&offer, &local()).unwrap();
        let (suite, theirs, ours) = plan.srtp.unwrap();
        assert_eq!(
            suite, "AES_CM_128_HMAC_SHA1_80",
            "our preference among the offered suites"
        );
        assert_eq!((theirs, ours), (vec![1u8; 30], vec![7u8; 30]));
        assert_eq!(
            ans.media[0].crypto[0].tag, 2,
            "the answer echoes the chosen tag"
        );
        let mut off = local();
        off.srtp = SrtpMode::Off;
        assert_eq!(answer(&offer, &off).unwrap_err(), SdpError::NotAcceptable);
    }

    #[test]
    fn sdes_lines_we_cannot_honour_are_not_chosen() {
        let key = B64.encode([1u8; 30]);
        let unusable = [
            format!("inline:{key}|2^20|1:4"),
            format!("inline:{key}|1:4"),
            format!("inline:{key}|2^20|1:4;inline:{key}|2^20|2:4"),
            format!("inline:{key} UNENCRYPTED_SRTCP"),
            format!("inline:{key} KDR=1"),
        ];
        for params in &unusable {
            // The better suite with an unusable key loses to the plainer usable one.
            let savp = OFFER
                .replace("RTP/AVP 8 0 96 101", "RTP/SAVP 0 101")
                .replace("a=ptime:20\r\n", &format!("a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{key}\r\na=crypto:2 AES_CM_128_HMAC_SHA1_80 {params}\r\n"));
            let offer = Sdp::parse(savp.as_bytes()).unwrap();
            assert_eq!(offer.media[0].crypto.len(), 1, "{params}");
            let (ans, plan) = answer(&offer, &local()).unwrap();
            assert_eq!(plan.srtp.unwrap().0, "AES_CM_128_HMAC_SHA1_32", "{params}");
            assert_eq!(ans.media[0].crypto[0].tag, 1, "{params}");
        }
        // Tolerated: a lifetime, a window-size hint, KDR=0, an ignorable extension.
        let ok = OFFER
            .replace("RTP/AVP 8 0 96 101", "RTP/SAVP 0 101")
            .replace(
                "a=ptime:20\r\n",
                &format!(
                    "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{key}|2^31 WSH=64 KDR=0 -X\r\n"
                ),
            );
        assert_eq!(Sdp::parse(ok.as_bytes()).unwrap().media[0].crypto.len(), 1);
    }

    #[test]
    fn non_rtp_formats_are_printed_and_a_rejected_image_stream_keeps_one() {
        // Found by the sdp fuzz target: `m=image … udptl t38` was printed without formats,
        // which is no SDP, by `to_text` of the offer and in the answer rejecting the stream.
        let t38 = OFFER.replace(
            "m=video 51372 RTP/AVP 31\r\n",
            "m=image 49180 udptl t38\r\na=T38FaxVersion:0\r\n",
        );
        let offer = Sdp::parse(t38.as_bytes()).unwrap();
        assert!(offer.media[1].formats.is_empty());
        assert_eq!(offer.media[1].other_formats, ["t38"]);
        assert_eq!(Sdp::parse(offer.to_text().as_bytes()).unwrap(), offer);
        let (ans, _) = answer(&offer, &local()).unwrap();
        let text = ans.to_text();
        assert!(text.contains("m=image 0 udptl t38\r\n"), "{text}");
        assert_eq!(Sdp::parse(text.as_bytes()).unwrap(), ans);
    }

    #[test]
    fn zero_channels_read_as_one() {
        // Found by the sdp fuzz target: `opus/48000/000` kept 0 channels, which printed
        // without a channel count and so parsed back as 1.
        let zero = OFFER.replace("opus/48000/2", "opus/48000/000");
        let offer = Sdp::parse(zero.as_bytes()).unwrap();
        assert_eq!(offer.media[0].rtpmaps[0].channels, 1);
        assert_eq!(Sdp::parse(offer.to_text().as_bytes()).unwrap(), offer);
    }

    #[test]
    fn malformed_and_oversized_bodies() {
        assert_eq!(Sdp::parse(b"hello"), Err(SdpError::Malformed));
        assert_eq!(
            Sdp::parse(&vec![b'a'; MAX_SDP + 1]),
            Err(SdpError::TooLarge)
        );
        assert!(
            Sdp::parse(
                b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 99999 RTP/AVP 0\r\n"
            )
            .is_err()
        );
    }
}
