//! Bodies of the fuzz targets in `fuzz/` (cargo-fuzz), shared with the corpus replay test
//! (`tests/corpus.rs`) so both run exactly the same code.
//!
//! Each body feeds arbitrary bytes to the parsers. A panic is what fuzzing hunts for;
//! besides that, each body checks invariants that must hold for any input and returns `Err`
//! with a description when one is broken (the callers turn that into a failure).

use crate::digest::{
    self, Algorithm, AuthError, Challenge, Challenger, Credentials, NonceCounts, NonceIssuer,
    QopPolicy, Role, Secret,
};
use crate::msg::{
    self, Contacts, Headers, Message, Method, MsgError, NameAddr, Request, Response, StreamItem,
    Via,
};
use crate::sdp::{self, Direction, Local, SRTP_SUITES, Sdp, SdpError, SrtpMode};

/// The size cap the `sip_message` target reads a stream with: small enough for fuzz inputs
/// to reach the size errors.
pub const STREAM_MAX_SIZE: usize = 4096;

/// The realm of the `digest_header` target's [`digest_challenger`].
pub const DIGEST_REALM: &str = "fuzz.example";
/// The nonce secret of [`digest_challenger`].
pub const DIGEST_SECRET: &[u8; 32] = b"sip-proto-fuzz-digest-secret-32b";
/// The `opaque` of [`digest_challenger`].
pub const DIGEST_OPAQUE: &str = "fuzz-opaque";
/// The user and password every lookup of the `digest_header` target answers with.
pub const DIGEST_USER: &str = "alice";
/// See [`DIGEST_USER`].
pub const DIGEST_PASSWORD: &str = "correct horse";
/// The wall clock (Unix ms) the `digest_header` target verifies at.
pub const DIGEST_NOW_MS: u64 = 1_795_460_220_000;

/// `Err` names the broken invariant.
pub type Outcome = Result<(), String>;

fn check(ok: bool, what: impl FnOnce() -> String) -> Outcome {
    if ok { Ok(()) } else { Err(what()) }
}

// ------------------------------------------------------------------------------------------
// sip_message
// ------------------------------------------------------------------------------------------

/// `sip_message`: the input as a datagram ([`msg::parse`]), as the start of a stream
/// ([`msg::parse_stream`] with [`STREAM_MAX_SIZE`], read whole and split in two: at the
/// middle and at `first byte / 256` of the length) and through [`msg::salvage_request`].
///
/// Invariants: a parsed message re-serialises with `to_bytes` to bytes that parse to the same
/// message (Content-Length added when it was missing) and serialise to the same bytes; the
/// typed accessors return, and those of the headers `parse` checks (Via, From, To, Call-ID,
/// CSeq, Content-Length) fail only for a missing or repeated header; the top Via is the first
/// of the Vias; every parsed Via and name-addr prints (`Display`) to a value that parses
/// back equal; a request that validates is answered (`Response::for_request`, `ack_for`)
/// with messages that parse and validate; an answerable request (not ACK) is salvaged with
/// its own headers, and salvaged headers are answerable; a stream gives the same messages,
/// errors and keep-alives wherever it is split, and each message it delimits parses as a
/// datagram of the same octets.
pub fn sip_message(data: &[u8]) -> Outcome {
    let salvaged = msg::salvage_request(data);
    if let Some(h) = &salvaged {
        check(h.is_answerable(), || {
            format!("salvaged headers are not answerable: {h:?}")
        })?;
        if let Ok(r) = Response::for_headers(h, 400, "Bad Request", "fuzz") {
            let _ = msg::parse(&r.to_bytes());
        }
    }
    match msg::parse(data) {
        Ok((m, used)) => {
            check(used > 0 && used <= data.len(), || {
                format!("parse took {used} of {} octets", data.len())
            })?;
            message_round_trip(&m)?;
            accessors(m.headers())?;
            let _ = m.validate();
            if let Message::Request(r) = &m {
                let _ = msg::uri_host_port(r.uri());
                let expected = (*r.method() != Method::Ack && r.headers().is_answerable())
                    .then(|| r.headers().clone());
                check(salvaged == expected, || {
                    format!("{r:?} is salvaged as {salvaged:?}")
                })?;
                answers(r)?;
            }
        }
        Err(e) => {
            let _ = (e.status(), e.reason_phrase(), e.closes_stream());
        }
    }
    let whole = read_stream(&[data])?;
    let len = data.len();
    let chosen = data.first().map_or(0, |&b| usize::from(b) * len / 256);
    for at in [len / 2, chosen] {
        let (a, b) = data.split_at_checked(at).unwrap_or((data, &[]));
        let split = read_stream(&[a, b])?;
        check(split == whole, || {
            format!("a stream split at {at} reads as {split:?}, in one piece as {whole:?}")
        })?;
    }
    Ok(())
}

/// What reading a stream yields: the items but keep-alives, the keep-alive octets, and the
/// octets left over (an incomplete message).
#[derive(Debug, PartialEq)]
struct StreamRead {
    items: Vec<Read>,
    keepalive: usize,
    left: Vec<u8>,
}

#[derive(Debug, PartialEq)]
enum Read {
    Message(Message, usize),
    Malformed(MsgError, usize),
    /// The framing is lost: the connection closes.
    Lost(MsgError),
}

/// Feeds `pieces` one after the other to a buffer read with [`msg::parse_stream`], like a
/// transport does; checks each delimited message against [`msg::parse_datagram`].
fn read_stream(pieces: &[&[u8]]) -> Result<StreamRead, String> {
    let mut buf: Vec<u8> = Vec::new();
    let mut start = 0usize;
    let mut items = Vec::new();
    let mut keepalive = 0usize;
    let mut lost = false;
    for piece in pieces {
        buf.extend_from_slice(piece);
        // Once the framing is lost nothing more is read; the rest is left over.
        while !lost {
            let rest = buf.get(start..).unwrap_or_default();
            let item = match msg::parse_stream(rest, STREAM_MAX_SIZE) {
                Ok(StreamItem::Incomplete) => break,
                Ok(item) => item,
                Err(e) => {
                    check(e.closes_stream(), || {
                        format!("parse_stream failed with {e:?}, which keeps the stream")
                    })?;
                    items.push(Read::Lost(e));
                    lost = true;
                    continue;
                }
            };
            let n = match &item {
                StreamItem::KeepAlive(n)
                | StreamItem::Message(_, n)
                | StreamItem::Malformed(_, n) => *n,
                StreamItem::Incomplete => 0,
            };
            let octets = rest
                .get(..n)
                .filter(|_| n > 0)
                .ok_or_else(|| format!("{item:?} from a buffer of {} octets", rest.len()))?;
            match item {
                StreamItem::KeepAlive(_) => {
                    check(octets.chunks(2).all(|c| c == b"\r\n"), || {
                        format!("keep-alive of {octets:?}")
                    })?;
                    keepalive += n;
                }
                StreamItem::Message(m, _) => {
                    let datagram = msg::parse_datagram(octets, STREAM_MAX_SIZE);
                    check(datagram.as_ref() == Ok(&(m.clone(), n)), || {
                        format!("stream message {m:?} parses as a datagram as {datagram:?}")
                    })?;
                    items.push(Read::Message(m, n));
                }
                StreamItem::Malformed(e, _) => {
                    check(!e.closes_stream(), || {
                        format!("malformed message with {e:?}, which loses the framing")
                    })?;
                    let datagram = msg::parse_datagram(octets, STREAM_MAX_SIZE);
                    check(datagram.as_ref().err() == Some(&e), || {
                        format!("stream refuses {octets:?} with {e:?}, a datagram: {datagram:?}")
                    })?;
                    items.push(Read::Malformed(e, n));
                }
                StreamItem::Incomplete => {}
            }
            start += n;
        }
    }
    Ok(StreamRead {
        items,
        keepalive,
        left: buf.get(start..).unwrap_or_default().to_vec(),
    })
}

/// `to_bytes` then `parse` gives the message back (with Content-Length added when it had
/// none), and the serialisation is a fixpoint.
fn message_round_trip(m: &Message) -> Outcome {
    let wire = m.to_bytes();
    let mut expected = m.clone();
    if !m.headers().contains("Content-Length") {
        expected
            .headers_mut()
            .push("Content-Length", &m.body().len().to_string())
            .map_err(|e| format!("cannot add Content-Length: {e}"))?;
    }
    // No size cap: `to_bytes` may add a little (a space after each colon, Content-Length).
    let back = msg::parse_datagram(&wire, usize::MAX);
    let Ok((back, used)) = back else {
        return Err(format!(
            "{m:?} serialises as {:?}, which does not parse: {back:?}",
            String::from_utf8_lossy(&wire)
        ));
    };
    check(back == expected && used == wire.len(), || {
        format!(
            "{m:?} serialises as {:?}, which parses as {back:?} ({used} octets)",
            String::from_utf8_lossy(&wire)
        )
    })?;
    let again = back.to_bytes();
    check(again == wire, || {
        format!(
            "serialising is not a fixpoint: {:?} then {:?}",
            String::from_utf8_lossy(&wire),
            String::from_utf8_lossy(&again)
        )
    })
}

/// A header `parse` checked fails only by being absent or repeated.
fn checked_by_parse<T: std::fmt::Debug>(name: &str, r: &Result<T, MsgError>) -> Outcome {
    check(
        matches!(
            r,
            Ok(_) | Err(MsgError::MissingHeader(_) | MsgError::DuplicateHeader(_))
        ),
        || format!("{name} of a parsed message: {r:?}"),
    )
}

/// Every typed accessor of a parsed message's headers.
fn accessors(h: &Headers) -> Outcome {
    let _ = (h.len(), h.is_empty(), h.content_type(), h.max_forwards());
    let _ = (h.is_answerable(), h.expires());
    for (name, _) in h.iter() {
        let _ = (
            h.get(name),
            h.count(name),
            h.get_all(name).count(),
            msg::canonical_name(name),
        );
    }
    let vias = h.vias();
    checked_by_parse("Via", &vias)?;
    let top = h.top_via();
    if let Ok(vias) = &vias {
        check(
            vias.first()
                .map_or(matches!(top, Err(MsgError::MissingHeader(_))), |first| {
                    top.as_ref() == Ok(first)
                }),
            || format!("the top Via is {top:?} of {vias:?}"),
        )?;
        for v in vias {
            via_round_trip(v)?;
        }
    }
    checked_by_parse("Call-ID", &h.call_id())?;
    checked_by_parse("CSeq", &h.cseq())?;
    checked_by_parse("Content-Length", &h.content_length())?;
    let mut addrs = Vec::new();
    for (name, r) in [("From", h.from()), ("To", h.to())] {
        checked_by_parse(name, &r)?;
        addrs.extend(r.ok());
    }
    if let Ok(Contacts::Addrs(list)) = h.contacts() {
        addrs.extend(list);
    }
    addrs.extend(h.routes().into_iter().flatten());
    addrs.extend(h.record_routes().into_iter().flatten());
    for a in &addrs {
        name_addr_round_trip(a)?;
    }
    Ok(())
}

/// A Via prints to a value that parses back equal.
fn via_round_trip(v: &Via) -> Outcome {
    let _ = (
        v.sent_by(),
        v.sent_by_ip(),
        v.received_ip(),
        v.has_rfc3261_branch(),
    );
    let _ = v.param("ttl");
    let printed = v.to_string();
    let mut h = Headers::new();
    h.push("Via", &printed)
        .map_err(|e| format!("{v:?} prints as {printed:?}, which is no header value: {e}"))?;
    let back = h.vias();
    check(
        back.as_ref().is_ok_and(|b| b == std::slice::from_ref(v)),
        || format!("{v:?} prints as {printed:?}, which parses as {back:?}"),
    )
}

/// A name-addr prints to a value that parses back equal.
fn name_addr_round_trip(a: &NameAddr) -> Outcome {
    let _ = (a.param("lr"), msg::uri_host_port(&a.uri));
    let printed = a.to_string();
    let mut h = Headers::new();
    h.push("From", &printed)
        .map_err(|e| format!("{a:?} prints as {printed:?}, which is no header value: {e}"))?;
    let back = h.from();
    check(back.as_ref() == Ok(a), || {
        format!("{a:?} prints as {printed:?}, which parses as {back:?}")
    })
}

/// A request that validates gets responses and an ACK that parse and validate.
fn answers(r: &Request) -> Outcome {
    if r.validate().is_err() {
        return Ok(());
    }
    let rh = r.headers();
    for (status, reason) in [(100, "Trying"), (486, "Busy Here")] {
        let resp = Response::for_request(r, status, reason, "fuzz-tag")
            .map_err(|e| format!("no {status} for {r:?}: {e}"))?;
        let wire = resp.to_bytes();
        let back = msg::parse_datagram(&wire, usize::MAX);
        let Ok((Message::Response(back), _)) = back else {
            return Err(format!("the {status} to {r:?} parses as {back:?}"));
        };
        back.validate()
            .map_err(|e| format!("the {status} {back:?} does not validate: {e}"))?;
        let (h, same) = (back.headers(), |a: &str, b: &str| format!("{a} is not {b}"));
        check(h.vias() == rh.vias(), || {
            same("response Vias", "request Vias")
        })?;
        check(h.call_id() == rh.call_id(), || same("Call-ID", "Call-ID"))?;
        check(h.cseq() == rh.cseq(), || same("CSeq", "CSeq"))?;
        check(h.from() == rh.from(), || same("From", "From"))?;
        let (to, req_to) = (h.to(), rh.to());
        let tag = match (&req_to, status) {
            (Ok(t), _) if t.tag.is_some() => t.tag.clone(),
            (_, 100) => None,
            _ => Some("fuzz-tag".to_owned()),
        };
        check(
            to.as_ref().ok().map(|t| (&t.uri, &t.tag))
                == req_to.as_ref().ok().map(|t| (&t.uri, &tag)),
            || format!("To of the {status}: {to:?}, of the request: {req_to:?}"),
        )?;
        if status == 100 || *r.method() == Method::Ack {
            continue;
        }
        let ack = r
            .ack_for(&resp)
            .map_err(|e| format!("no ACK for {resp:?}: {e}"))?;
        let wire = ack.to_bytes();
        let back = msg::parse_datagram(&wire, usize::MAX);
        let Ok((Message::Request(back), _)) = back else {
            return Err(format!("the ACK {ack:?} parses as {back:?}"));
        };
        back.validate()
            .map_err(|e| format!("the ACK {back:?} does not validate: {e}"))?;
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// sdp
// ------------------------------------------------------------------------------------------

/// The fixed [`Local`] the `sdp` target answers with: opus, PCMU, PCMA, SRTP optional with
/// a key for every suite, sendrecv.
#[must_use]
pub fn sdp_local() -> Local {
    Local {
        address: "192.0.2.1".into(),
        audio_port: 40_000,
        codecs: vec!["opus".into(), "PCMU".into(), "PCMA".into()],
        srtp: SrtpMode::Optional,
        keys: SRTP_SUITES
            .iter()
            .map(|s| {
                let len = if s.starts_with("AEAD") { 28 } else { 30 };
                ((*s).to_owned(), vec![0x5a; len])
            })
            .collect(),
        want: Direction::SendRecv,
        session_id: 7,
        session_version: 8,
    }
}

/// `sdp`: the input as an SDP body through [`Sdp::parse`], the accessors, and
/// [`sdp::answer`] with [`sdp_local`].
///
/// Invariants: a parsed SDP prints with `to_text` to text that parses back equal; the answer
/// is refused only as not acceptable, else has one m-line per offered m-line, accepts exactly
/// the audio stream its plan names (with a payload type the offer lists, our port, the
/// RFC 3264 direction, SRTP exactly when the stream is secure) and rejects the others with
/// port 0, and prints to text that parses back equal too.
pub fn sdp(data: &[u8]) -> Outcome {
    let Ok(offer) = Sdp::parse(data) else {
        return Ok(());
    };
    sdp_round_trip("offer", &offer)?;
    for i in 0..=offer.media.len() {
        let _ = (offer.media_address(i), offer.is_hold(i));
    }
    for m in &offer.media {
        let _ = m.is_secure();
        for pt in &m.formats {
            let _ = m.codec(*pt);
        }
    }
    let local = sdp_local();
    let (answer, plan) = match sdp::answer(&offer, &local) {
        Ok(a) => a,
        Err(e) => {
            return check(e == SdpError::NotAcceptable, || {
                format!("the answer to {offer:?} fails with {e:?}")
            });
        }
    };
    check(answer.media.len() == offer.media.len(), || {
        format!("{offer:?} is answered with {answer:?}")
    })?;
    let offered = offer.media.get(plan.index);
    let accepted = answer.media.get(plan.index);
    let (Some(offered), Some(accepted)) = (offered, accepted) else {
        return Err(format!("{plan:?} names no m-line of {answer:?}"));
    };
    check(
        offered.kind.eq_ignore_ascii_case("audio")
            && offered.port != 0
            && offered.formats.contains(&plan.pt)
            && accepted.port == local.audio_port
            && accepted.formats.first() == Some(&plan.pt)
            && plan.direction == offered.direction.answer(local.want)
            && accepted.direction == plan.direction
            && plan.srtp.is_some() == offered.is_secure()
            && plan.remote_port == offered.port,
        || format!("{offer:?} is answered with {answer:?}, {plan:?}"),
    )?;
    for (i, m) in answer.media.iter().enumerate() {
        check(i == plan.index || m.port == 0, || {
            format!("m-line {i} of {answer:?} is not rejected")
        })?;
    }
    sdp_round_trip("answer", &answer)
}

fn sdp_round_trip(what: &str, s: &Sdp) -> Outcome {
    let text = s.to_text();
    let back = Sdp::parse(text.as_bytes());
    let expected = if text.len() > sdp::MAX_SDP {
        Err(SdpError::TooLarge)
    } else {
        Ok(s.clone())
    };
    check(back == expected, || {
        format!("the {what} {s:?} prints as {text:?}, which parses as {back:?}")
    })
}

// ------------------------------------------------------------------------------------------
// digest_header
// ------------------------------------------------------------------------------------------

/// The challenger of the `digest_header` target: realm [`DIGEST_REALM`], every supported
/// algorithm, legacy (no qop) responses allowed, opaque [`DIGEST_OPAQUE`], nonces keyed
/// with [`DIGEST_SECRET`].
pub fn digest_challenger() -> Result<Challenger, AuthError> {
    Challenger::new(DIGEST_REALM, Role::Uas, NonceIssuer::new(DIGEST_SECRET)?)
        .with_algorithms(vec![
            Algorithm::Sha256,
            Algorithm::Md5,
            Algorithm::Sha512_256,
            Algorithm::Sha256Sess,
            Algorithm::Md5Sess,
            Algorithm::Sha512_256Sess,
        ])
        .map(|c| {
            c.with_qop_policy(QopPolicy::AllowLegacy)
                .with_opaque(DIGEST_OPAQUE)
        })
}

/// `digest_header`: the input (as lossy UTF-8) as a challenge and as credentials; a
/// challenge is answered with [`digest::respond`], credentials are verified by
/// [`digest_challenger`] at [`DIGEST_NOW_MS`] with the Request-URI they name.
///
/// Invariants: whatever parses prints with `to_header_value` and parses back equal (or, when
/// printing took it over [`digest::MAX_HEADER_LEN`], as too large);
/// `respond` succeeds exactly for an answerable challenge, with a response of the
/// algorithm's length; verification with the right password and with its H(A1) agree; a
/// wrong password, an unknown user or another Request-URI never verify, and a wrong password
/// never gets `stale`; credentials that verify are refused as a replay the second time
/// they are counted (when they carry a nonce count).
pub fn digest_header(data: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(data);
    if let Ok(ch) = Challenge::parse(&text) {
        challenge(&ch)?;
    }
    if let Ok(creds) = Credentials::parse(&text) {
        credentials_round_trip(&creds)?;
        verify(&creds)?;
    }
    Ok(())
}

fn challenge(ch: &Challenge) -> Outcome {
    let printed = ch
        .to_header_value()
        .map_err(|e| format!("{ch:?} does not print: {e}"))?;
    let back = Challenge::parse(&printed);
    check(back == printed_expected(&printed, ch), || {
        format!("{ch:?} prints as {printed:?}, which parses as {back:?}")
    })?;
    let _ = digest::select_challenge([ch]);
    let creds = digest::respond(
        ch,
        DIGEST_USER,
        DIGEST_PASSWORD,
        "REGISTER",
        "sip:fuzz.example",
        "0a4f113b",
        1,
    );
    check(creds.is_ok() == ch.is_answerable(), || {
        format!("{ch:?} is answered with {creds:?}")
    })?;
    if let Ok(c) = &creds {
        check(Some(c.response.len()) == ch.algorithm.hex_len(), || {
            format!("{ch:?} is answered with {c:?}")
        })?;
        credentials_round_trip(c)?;
    }
    Ok(())
}

fn credentials_round_trip(c: &Credentials) -> Outcome {
    let printed = c
        .to_header_value()
        .map_err(|e| format!("{c:?} does not print: {e}"))?;
    let back = Credentials::parse(&printed);
    check(back == printed_expected(&printed, c), || {
        format!("{c:?} prints as {printed:?}, which parses as {back:?}")
    })
}

/// What a printed header value parses as: the value printed, unless printing (quotes,
/// escapes, `algorithm`) took it over the size cap.
fn printed_expected<T: Clone>(printed: &str, value: &T) -> Result<T, AuthError> {
    if printed.len() > digest::MAX_HEADER_LEN {
        Err(AuthError::TooLarge {
            limit: digest::MAX_HEADER_LEN,
        })
    } else {
        Ok(value.clone())
    }
}

fn verify(creds: &Credentials) -> Outcome {
    let challenger =
        digest_challenger().map_err(|e| format!("the fixed challenger is refused: {e}"))?;
    let run = |uri: &str, secret: Option<Secret>| {
        let r = challenger.verify(creds, "REGISTER", uri, DIGEST_NOW_MS, |_, _, _| secret);
        if let Err(e) = &r {
            let _ = (e.category(), e.reaction(), e.reaction().status(Role::Uas));
        }
        r
    };
    let password = || Some(Secret::Password(DIGEST_PASSWORD.to_owned()));
    let right = run(&creds.uri, password());
    if let Ok(ha1) = digest::ha1(
        &creds.algorithm,
        &creds.username,
        DIGEST_REALM,
        DIGEST_PASSWORD,
    ) {
        let by_ha1 = run(&creds.uri, Some(Secret::Ha1(ha1)));
        check(by_ha1 == right, || {
            format!("{creds:?} verifies as {right:?} by password, as {by_ha1:?} by H(A1)")
        })?;
    }
    let wrong = run(
        &creds.uri,
        Some(Secret::Password(format!("{DIGEST_PASSWORD}!"))),
    );
    let unknown = run(&creds.uri, None);
    let other_uri = run(&format!("{}x", creds.uri), password());
    check(
        !matches!(wrong, Ok(()) | Err(AuthError::Stale | AuthError::Replay))
            && unknown.is_err()
            && other_uri.is_err(),
        || {
            format!(
                "{creds:?}: wrong password {wrong:?}, unknown user {unknown:?}, \
                 other uri {other_uri:?}"
            )
        },
    )?;
    if right.is_ok() {
        let mut counts = NonceCounts::new(4);
        let mut counted = || {
            challenger.verify_counted(
                creds,
                "REGISTER",
                &creds.uri,
                DIGEST_NOW_MS,
                |_, _, _| password(),
                &mut counts,
            )
        };
        let (first, second) = (counted(), counted());
        let replay = if creds.qop.is_some() {
            Err(AuthError::Replay)
        } else {
            Ok(())
        };
        check(first.is_ok() && second == replay, || {
            format!("{creds:?} counted twice: {first:?}, then {second:?}")
        })?;
    }
    Ok(())
}
