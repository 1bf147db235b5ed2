#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! The RFC 4475 and RFC 5118 torture messages against the message facade, with the verdicts
//! of `shared/sip-torture/README.md`, and properties: no panic on any input, and
//! `parse(to_bytes(m)) == m`.
//!
//! The corpus is read from `$SIP_TORTURE_DIR` when set, else from the shared directory next
//! to the workspace.

use proptest::prelude::*;
use proptest::sample::Index;
use sip_proto::msg::{self, Contacts, Message, Method, MsgError, Request, Response, StreamItem};
use std::path::PathBuf;
use std::sync::LazyLock;

fn corpus_dir() -> PathBuf {
    std::env::var_os("SIP_TORTURE_DIR").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/sip-torture/"
            ))
        },
        PathBuf::from,
    )
}

fn read(rel: &str) -> Vec<u8> {
    let path = corpus_dir().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rfc4475(name: &str) -> Vec<u8> {
    read(&format!("rfc4475/{name}.dat"))
}

fn wire5118(name: &str) -> Vec<u8> {
    read(&format!("rfc5118-wire/{name}.dat"))
}

fn list_dir(sub: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(corpus_dir().join(sub))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|n| n.strip_suffix(".dat").map(str::to_owned))
        .collect();
    names.sort();
    names
}

fn request(bytes: &[u8]) -> (Request, usize) {
    match msg::parse(bytes) {
        Ok((Message::Request(r), n)) => (r, n),
        other => panic!("expected a request, got {other:?}"),
    }
}

fn response(bytes: &[u8]) -> Response {
    match msg::parse(bytes) {
        Ok((Message::Response(r), _)) => r,
        other => panic!("expected a response, got {other:?}"),
    }
}

// ------------------------------------------------------------------------------------------
// Verdicts
// ------------------------------------------------------------------------------------------

/// What the facade does with a torture message.
#[derive(Debug, Clone, Copy)]
enum Verdict {
    /// Parses and passes `validate()`.
    Accept,
    /// `parse` refuses it with this status; `answer`: whether `salvage_request` finds the
    /// headers to answer from (else it is dropped: a response, or too little to answer).
    Refuse { status: u16, answer: bool },
    /// Parses; the defect is caught above the parser.
    Defect(Check),
}

#[derive(Debug, Clone, Copy)]
enum Check {
    /// `validate()` fails with this error; `answer`: `Headers::is_answerable`.
    Validate(MsgError, bool),
    /// `contacts()` fails (a registrar answers 400).
    ContactsErr,
    /// Left to a layer that needs it; the reason is the documentation.
    NotInspected(&'static str),
}

use Check::*;
use Verdict::*;

const fn refuse(status: u16, answer: bool) -> Verdict {
    Refuse { status, answer }
}

/// Every RFC 4475 archive member. §3.1.1 must parse; §3.1.2 is refused with 400 (505 for
/// badvers) or parses and the defect is caught where the table says; §3.2-3.4 are
/// well-formed and tested above the parser.
const RFC4475: &[(&str, &str, Verdict)] = &[
    // 3.1.1: valid, must parse
    ("wsinv", "3.1.1.1", Accept),
    ("intmeth", "3.1.1.2", Accept),
    ("esc01", "3.1.1.3", Accept),
    ("escnull", "3.1.1.4", Accept),
    ("esc02", "3.1.1.5", Accept),
    ("lwsdisp", "3.1.1.6", Accept),
    ("longreq", "3.1.1.7", Accept),
    ("dblreq", "3.1.1.8", Accept),
    ("semiuri", "3.1.1.9", Accept),
    ("transports", "3.1.1.10", Accept),
    ("mpart01", "3.1.1.11", Accept),
    ("unreason", "3.1.1.12", Accept),
    ("noreason", "3.1.1.13", Accept),
    // 3.1.2: invalid
    ("badinv01", "3.1.2.1", refuse(400, true)), // empty Via list elements
    ("clerr", "3.1.2.2", refuse(400, true)),    // body shorter than Content-Length
    ("ncl", "3.1.2.3", refuse(400, true)),      // negative Content-Length
    ("scalar02", "3.1.2.4", refuse(400, true)), // CSeq above 2^31-1
    ("scalarlg", "3.1.2.5", refuse(400, false)), // a response: dropped
    ("quotbal", "3.1.2.6", refuse(400, true)),  // unterminated quoted string in To
    ("ltgtruri", "3.1.2.7", refuse(400, true)), // <> around the Request-URI
    ("lwsruri", "3.1.2.8", refuse(400, true)),  // LWS inside the Request-URI
    ("lwsstart", "3.1.2.9", refuse(400, true)), // several SPs in the request line
    ("trws", "3.1.2.10", refuse(400, true)),    // SPs after the version
    ("escruri", "3.1.2.11", refuse(400, true)), // URI headers in the Request-URI
    (
        "baddate",
        "3.1.2.12",
        Defect(NotInspected(
            "Date is never interpreted: the RFC advises ignoring a bad Date that is not needed",
        )),
    ),
    ("regbadct", "3.1.2.13", Defect(ContactsErr)), // addr-spec Contact with '?': 400 at the registrar
    ("badaspec", "3.1.2.14", refuse(400, true)),   // SPs inside <> in To
    ("baddn", "3.1.2.15", refuse(400, true)), // no empty line; unquoted non-token display names
    ("badvers", "3.1.2.16", refuse(505, true)),
    (
        "mismatch01",
        "3.1.2.17",
        Defect(Validate(MsgError::CSeqMethodMismatch, true)),
    ),
    // The TU answers the unknown method with 501 first (RFC 3261 §8.2.1), as the RFC prefers.
    (
        "mismatch02",
        "3.1.2.18",
        Defect(Validate(MsgError::CSeqMethodMismatch, true)),
    ),
    ("bigcode", "3.1.2.19", refuse(400, false)), // a response: dropped
    // 3.2 - 3.4: well-formed; the torture is above the parser
    (
        "badbranch",
        "3.2.1",
        Defect(NotInspected(
            "branch is the bare cookie: Via::has_rfc3261_branch() is false for the transaction layer",
        )),
    ),
    (
        "insuf",
        "3.3.1",
        Defect(Validate(MsgError::MissingHeader("From"), false)),
    ),
    (
        "unkscm",
        "3.3.2",
        Defect(NotInspected("the TU answers 416 by scheme")),
    ),
    (
        "novelsc",
        "3.3.3",
        Defect(NotInspected("the TU answers 416 by scheme")),
    ),
    (
        "unksm2",
        "3.3.4",
        Defect(NotInspected("a registrar refuses a non-SIP To")),
    ),
    (
        "bext01",
        "3.3.5",
        Defect(NotInspected("the TU answers 420 from Require")),
    ),
    (
        "invut",
        "3.3.6",
        Defect(NotInspected("the TU answers 415 by Content-Type")),
    ),
    (
        "regaut01",
        "3.3.7",
        Defect(NotInspected("Authorization is for digest auth")),
    ),
    (
        "multi01",
        "3.3.8",
        Defect(Validate(MsgError::DuplicateHeader("From"), true)),
    ),
    ("mcl01", "3.3.9", refuse(400, true)), // two Content-Lengths: framing undefined
    (
        "bcast",
        "3.3.10",
        Defect(NotInspected("a response: Via routing is the TU's")),
    ),
    (
        "zeromf",
        "3.3.11",
        Defect(NotInspected("Max-Forwards 0: a proxy answers 483")),
    ),
    ("cparam01", "3.3.12", Accept),
    ("cparam02", "3.3.13", Accept),
    ("regescrt", "3.3.14", Accept),
    (
        "sdp01",
        "3.3.15",
        Defect(NotInspected("the TU answers 406 by Accept")),
    ),
    ("inv2543", "3.4.1", Accept),
    ("test", "-", refuse(400, false)), // no SIP version, a line without ':'; no Via or CSeq
];

fn check_verdict(name: &str, bytes: &[u8], verdict: Verdict) {
    let parsed = msg::parse(bytes);
    match verdict {
        Accept | Defect(_) => {
            let (m, _) = parsed.unwrap_or_else(|e| panic!("{name}: refused: {e}"));
            match verdict {
                Accept => {
                    m.validate()
                        .unwrap_or_else(|e| panic!("{name}: validate: {e}"));
                }
                Defect(NotInspected(why)) => {
                    m.validate()
                        .unwrap_or_else(|e| panic!("{name} ({why}): validate: {e}"));
                }
                Defect(Validate(expected, answer)) => {
                    assert_eq!(m.validate(), Err(expected), "{name}");
                    assert_eq!(expected.status(), 400, "{name}");
                    assert_eq!(m.headers().is_answerable(), answer, "{name}");
                }
                Defect(ContactsErr) => {
                    m.validate().unwrap();
                    let e = m.headers().contacts().unwrap_err();
                    assert_eq!(e.status(), 400, "{name}");
                }
                Refuse { .. } => unreachable!(),
            }
        }
        Refuse { status, answer } => {
            let e = parsed.map(|_| ()).unwrap_err();
            assert_eq!(e.status(), status, "{name}: {e}");
            let salvaged = msg::salvage_request(bytes);
            assert_eq!(salvaged.is_some(), answer, "{name}: salvage");
            if let Some(h) = salvaged {
                // The answer copies Via, From, To, Call-ID and CSeq as written.
                let r = Response::for_headers(&h, e.status(), e.reason_phrase(), "t4475").unwrap();
                let wire = String::from_utf8_lossy(&r.to_bytes()).into_owned();
                assert!(
                    wire.starts_with(&format!("SIP/2.0 {status} {}\r\n", e.reason_phrase())),
                    "{name}"
                );
                for header in ["Via", "From", "To", "Call-ID", "CSeq"] {
                    let v = h.get(header).unwrap();
                    assert!(wire.contains(v), "{name}: {header}");
                }
            }
        }
    }
}

#[test]
fn rfc4475_every_archive_member_has_its_verdict() {
    let names: Vec<&str> = RFC4475.iter().map(|(n, _, _)| *n).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, list_dir("rfc4475"), "the table covers the archive");
    for (name, _, verdict) in RFC4475 {
        check_verdict(name, &rfc4475(name), *verdict);
    }
}

#[test]
fn rfc4475_3_1_1_valid_messages_parse_over_a_stream_too() {
    for (name, section, _) in RFC4475 {
        if !section.starts_with("3.1.1") {
            continue;
        }
        let bytes = rfc4475(name);
        let (datagram, n) = msg::parse(&bytes).unwrap();
        match msg::parse_stream(&bytes, msg::DEFAULT_MAX_MESSAGE_SIZE).unwrap() {
            StreamItem::Message(m, used) => {
                assert_eq!((m, used), (datagram, n), "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

// ------------------------------------------------------------------------------------------
// RFC 4475 §3.1.1 spot checks
// ------------------------------------------------------------------------------------------

#[test]
fn rfc4475_3_1_1_1_wsinv_short_tortuous_invite() {
    let (r, _) = request(&rfc4475("wsinv"));
    let h = r.headers();
    assert_eq!(*r.method(), Method::Invite);
    assert_eq!(r.uri(), "sip:vivekg@chair-dnrc.example.com;unknownparam");
    assert_eq!(h.call_id().unwrap(), "wsinv.ndaksdj@192.0.2.1");
    assert_eq!(h.cseq().unwrap(), (9, Method::Invite));
    assert_eq!(h.max_forwards(), Some(68));
    assert_eq!(h.get("Subject"), Some(""));
    assert_eq!(
        h.get("newfangledheader"),
        Some("newfangled value continued newfangled value")
    );
    let to = h.to().unwrap();
    assert_eq!(to.uri, "sip:vivekg@chair-dnrc.example.com");
    assert_eq!(to.tag.as_deref(), Some("1918181833n"));
    let from = h.from().unwrap();
    assert_eq!(from.display.as_deref(), Some(r#"J Rosenberg \""#));
    assert_eq!(from.tag.as_deref(), Some("98asjd8"));
    let vias = h.vias().unwrap();
    let hops: Vec<_> = vias
        .iter()
        .map(|v| {
            (
                v.transport.as_str(),
                v.sent_by_host.as_str(),
                v.branch.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        hops,
        [
            ("UDP", "192.0.2.2", Some("390skdjuw")),
            ("TCP", "spindle.example.com", Some("z9hG4bK9ikj8")),
            ("UDP", "192.168.255.111", Some("z9hG4bK30239")),
        ]
    );
    let Contacts::Addrs(contacts) = h.contacts().unwrap() else {
        panic!("wildcard")
    };
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0].display.as_deref(), Some(r#"Quoted string """#));
    assert_eq!(contacts[0].param("newparam"), Some(Some("newvalue")));
    assert_eq!(contacts[0].param("secondparam"), Some(None));
    assert_eq!(contacts[0].param("q"), Some(Some("0.33")));
    let routes = h.routes().unwrap();
    assert_eq!(
        routes[0].uri,
        "sip:services.example.com;lr;unknownwith=value;unknown-no-value"
    );
    assert_eq!(h.content_type(), Some("application/sdp"));
    assert_eq!(h.content_length().unwrap(), Some(150));
    assert_eq!(r.body().len(), 150);
}

#[test]
fn rfc4475_3_1_1_2_intmeth_unknown_method_and_odd_characters() {
    let (r, _) = request(&rfc4475("intmeth"));
    let method = "!interesting-Method0123456789_*+`.%indeed'~";
    assert_eq!(*r.method(), Method::Other(method.into()));
    assert_eq!(
        r.uri(),
        "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com"
    );
    let h = r.headers();
    assert_eq!(
        h.cseq().unwrap(),
        (139_122_385, Method::Other(method.into()))
    );
    assert_eq!(h.max_forwards(), Some(255));
    assert_eq!(
        h.call_id().unwrap(),
        r#"intmeth.word%ZK-!.*_+'@word`~)(><:\/"][?}{"#
    );
    assert_eq!(
        h.to().unwrap().display.as_deref(),
        Some("BEL:\u{7} NUL:\u{0} DEL:\u{7f}")
    );
    let from = h.from().unwrap();
    assert_eq!(
        from.display.as_deref(),
        Some("token1~` token2'+_ token3*%!.-")
    );
    assert_eq!(from.tag.as_deref(), Some("_token~1'+`*%!-."));
    assert_eq!(
        h.get("EXTENSIONHEADER-!.%*+_`'~"),
        Some("\u{feff}\u{5927}\u{505c}\u{96fb}")
    );
    // A UAS answers 501; the answer copies the odd CSeq and adds a To tag.
    let answer = Response::for_request(&r, 501, "Not Implemented", "t1").unwrap();
    let back = response(&answer.to_bytes());
    assert_eq!(back.headers().to().unwrap().tag.as_deref(), Some("t1"));
    assert_eq!(back.headers().cseq().unwrap().1.as_str(), method);
}

#[test]
fn rfc4475_3_1_1_3_esc01_escapes_are_kept_as_written() {
    let (r, _) = request(&rfc4475("esc01"));
    let h = r.headers();
    assert_eq!(r.uri(), "sip:sips%3Auser%40example.com@example.net");
    assert_eq!(h.to().unwrap().uri, "sip:%75se%72@example.com");
    assert_eq!(h.from().unwrap().uri, "sip:I%20have%20spaces@example.net");
    assert_eq!(h.content_type(), Some("application/sdp"));
    let Contacts::Addrs(c) = h.contacts().unwrap() else {
        panic!()
    };
    assert_eq!(
        c[0].uri,
        "sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31"
    );
}

#[test]
fn rfc4475_3_1_1_4_escnull_registers_two_distinct_contacts() {
    let (r, _) = request(&rfc4475("escnull"));
    let h = r.headers();
    assert_eq!(h.to().unwrap().uri, "sip:null-%00-null@example.com");
    let Contacts::Addrs(c) = h.contacts().unwrap() else {
        panic!()
    };
    let uris: Vec<_> = c.iter().map(|a| a.uri.as_str()).collect();
    assert_eq!(
        uris,
        ["sip:%00@host5.example.com", "sip:%00%00@host5.example.com"]
    );
    assert_eq!(h.content_length().unwrap(), Some(0));
}

#[test]
fn rfc4475_3_1_1_5_esc02_percent_is_literal_in_tokens() {
    let (r, _) = request(&rfc4475("esc02"));
    let h = r.headers();
    assert_eq!(*r.method(), Method::Other("RE%47IST%45R".into()));
    assert_ne!(*r.method(), Method::Register);
    assert_eq!(
        h.cseq().unwrap(),
        (29344, Method::Other("RE%47IST%45R".into()))
    );
    assert_eq!(h.to().unwrap().display.as_deref(), Some("%Z%45"));
    assert_eq!(
        h.top_via().unwrap().branch.as_deref(),
        Some("z9hG4bK209%fzsnel234")
    );
    // `C%6Fntact` is an extension header, not Contact.
    let Contacts::Addrs(c) = h.contacts().unwrap() else {
        panic!()
    };
    let uris: Vec<_> = c.iter().map(|a| a.uri.as_str()).collect();
    assert_eq!(
        uris,
        [
            "sip:alias1@host1.example.com",
            "sip:alias3@host3.example.com"
        ]
    );
    assert_eq!(h.get("C%6Fntact"), Some("<sip:alias2@host2.example.com>"));
}

#[test]
fn rfc4475_3_1_1_6_lwsdisp_display_name_without_space() {
    let (r, _) = request(&rfc4475("lwsdisp"));
    let from = r.headers().from().unwrap();
    assert_eq!(from.display.as_deref(), Some("caller"));
    assert_eq!(from.uri, "sip:caller@example.com");
}

#[test]
fn rfc4475_3_1_1_7_longreq_long_values_and_34_vias() {
    let (r, _) = request(&rfc4475("longreq"));
    let h = r.headers();
    let vias = h.vias().unwrap();
    assert_eq!(vias.len(), 34);
    assert_eq!(vias[0].sent_by_host, "sip33.example.com");
    assert_eq!(vias[33].received.as_deref(), Some("192.0.2.5"));
    assert!(vias[33].branch.as_ref().unwrap().len() > 200);
    assert!(h.from().unwrap().tag.unwrap().len() > 150);
    assert!(h.to().unwrap().display.unwrap().contains("extremeextreme"));
    assert_eq!(r.body().len(), 150);
}

#[test]
fn rfc4475_3_1_1_8_dblreq_takes_only_the_register() {
    let bytes = rfc4475("dblreq");
    let (r, used) = request(&bytes);
    assert_eq!(*r.method(), Method::Register);
    assert_eq!(
        r.headers().call_id().unwrap(),
        "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
    );
    assert!(r.body().is_empty());
    assert!(bytes[used..].starts_with(b"\r\nINVITE sip:joe@example.com"));
    // On a stream, the same octets are two messages with a CRLF keep-alive between.
    let item = msg::parse_stream(&bytes, 4096).unwrap();
    let StreamItem::Message(Message::Request(first), n) = item else {
        panic!("{item:?}")
    };
    assert_eq!((first, n), (r, used));
    assert_eq!(
        msg::parse_stream(&bytes[used..], 4096).unwrap(),
        StreamItem::KeepAlive(2)
    );
    let used = used + 2;
    let StreamItem::Message(Message::Request(second), m) =
        msg::parse_stream(&bytes[used..], 4096).unwrap()
    else {
        panic!()
    };
    assert_eq!(*second.method(), Method::Invite);
    assert_eq!(second.body().len(), 150);
    // Its Content-Length (150) stops short of the datagram's end, too.
    assert_eq!(&bytes[used + m..], b"C\r\n\r\n");
}

#[test]
fn rfc4475_3_1_1_9_semiuri_and_a_folded_accept() {
    let (r, _) = request(&rfc4475("semiuri"));
    assert_eq!(r.uri(), "sip:user;par=u%40example.net@example.com");
    assert_eq!(
        r.headers().get("Accept"),
        Some(
            "application/sdp, application/pkcs7-mime, multipart/mixed, multipart/signed, message/sip, message/sipfrag"
        )
    );
}

#[test]
fn rfc4475_3_1_1_10_transports_known_and_unknown() {
    let (r, _) = request(&rfc4475("transports"));
    let t: Vec<_> = r
        .headers()
        .vias()
        .unwrap()
        .into_iter()
        .map(|v| v.transport)
        .collect();
    assert_eq!(t, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
}

#[test]
fn rfc4475_3_1_1_11_mpart01_binary_body_framed_by_content_length() {
    let bytes = rfc4475("mpart01");
    let (r, used) = request(&bytes);
    assert_eq!(used, bytes.len());
    assert_eq!(r.body().len(), 553);
    assert_eq!(r.headers().content_length().unwrap(), Some(553));
    assert!(r.body().contains(&0));
    assert!(r.body().ends_with(b"--7a9cbec02ceef655--\r\n"));
    assert_eq!(r.headers().top_via().unwrap().rport, Some(None));
    assert_eq!(
        r.headers().content_type(),
        Some("multipart/mixed;boundary=7a9cbec02ceef655")
    );
}

#[test]
fn rfc4475_3_1_1_12_13_unusual_and_empty_reason_phrases() {
    let r = response(&rfc4475("unreason"));
    assert_eq!(r.status(), 200);
    assert!(r.reason().starts_with("= 2**3 * 5**2 "));
    assert!(
        r.reason()
            .chars()
            .any(|c| ('\u{400}'..='\u{4ff}').contains(&c))
    );
    assert_eq!(r.body().len(), 154);
    let r = response(&rfc4475("noreason"));
    assert_eq!((r.status(), r.reason()), (100, ""));
    assert!(r.to_bytes().starts_with(b"SIP/2.0 100 \r\n"));
}

// ------------------------------------------------------------------------------------------
// RFC 4475 §3.1.2 - §3.4 spot checks
// ------------------------------------------------------------------------------------------

#[test]
fn rfc4475_3_1_2_errors_name_their_cause() {
    let cases: &[(&str, MsgError)] = &[
        (
            "clerr",
            MsgError::Framing("the body is shorter than Content-Length"),
        ),
        ("ncl", MsgError::Framing("negative Content-Length")),
        ("mcl01", MsgError::Framing("more than one Content-Length")),
        ("badvers", MsgError::UnsupportedVersion),
    ];
    for (name, expected) in cases {
        assert_eq!(msg::parse(&rfc4475(name)).unwrap_err(), *expected, "{name}");
    }
    for (name, header) in [
        ("badinv01", "Via"),
        ("scalar02", "CSeq"),
        ("scalarlg", "CSeq"),
        ("quotbal", "To"),
        ("badaspec", "To"),
    ] {
        match msg::parse(&rfc4475(name)) {
            Err(MsgError::Header { name: h, .. }) => assert_eq!(h, header, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    for name in ["ltgtruri", "lwsruri", "lwsstart", "trws", "escruri"] {
        match msg::parse(&rfc4475(name)) {
            Err(MsgError::Parse { what, .. }) => {
                assert!(what.starts_with("request"), "{name}: {what}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    // Framing errors lose a stream; the others do not.
    assert!(msg::parse(&rfc4475("ncl")).unwrap_err().closes_stream());
    assert!(!msg::parse(&rfc4475("trws")).unwrap_err().closes_stream());
}

#[test]
fn rfc4475_3_1_2_16_badvers_is_answered_505_with_a_to_tag() {
    let bytes = rfc4475("badvers");
    let e = msg::parse(&bytes).unwrap_err();
    let h = msg::salvage_request(&bytes).unwrap();
    let r = Response::for_headers(&h, e.status(), e.reason_phrase(), "v7").unwrap();
    let back = response(&r.to_bytes());
    assert_eq!(
        (back.status(), back.reason()),
        (505, "Version Not Supported")
    );
    let bh = back.headers();
    assert_eq!(bh.call_id().unwrap(), "badvers.31417@c.example.com");
    assert_eq!(bh.to().unwrap().tag.as_deref(), Some("v7"));
    assert_eq!(bh.to().unwrap().display.as_deref(), Some("T. Watson"));
    assert_eq!(bh.cseq().unwrap(), (1, Method::Options));
}

#[test]
fn rfc4475_3_1_2_over_a_stream_malformed_messages_keep_or_lose_the_framing() {
    // A bad request line is delimited: skip it and carry on.
    let trws = rfc4475("trws");
    match msg::parse_stream(&trws, 4096).unwrap() {
        StreamItem::Malformed(e, n) => {
            assert_eq!((e.status(), n), (400, trws.len()));
            assert!(msg::salvage_request(&trws[..n]).is_some());
        }
        other => panic!("{other:?}"),
    }
    // Negative or doubled Content-Length: the stream is lost.
    for name in ["ncl", "mcl01"] {
        let e = msg::parse_stream(&rfc4475(name), 4096).unwrap_err();
        assert!(e.closes_stream(), "{name}");
    }
    // clerr over a stream is merely incomplete.
    assert_eq!(
        msg::parse_stream(&rfc4475("clerr"), 65_535).unwrap(),
        StreamItem::Incomplete
    );
}

#[test]
fn rfc4475_3_3_and_3_4_higher_layer_cases_carry_what_the_tu_needs() {
    let (r, _) = request(&rfc4475("badbranch"));
    let via = r.headers().top_via().unwrap();
    assert_eq!(via.branch.as_deref(), Some("z9hG4bK"));
    assert!(!via.has_rfc3261_branch());

    let (r, _) = request(&rfc4475("unkscm"));
    assert_eq!(r.uri(), "nobodyKnowsThisScheme:totallyopaquecontent");
    assert!(msg::uri_host_port(r.uri()).is_err());

    let (r, _) = request(&rfc4475("unksm2"));
    assert_eq!(r.headers().to().unwrap().uri, "isbn:2983792873");

    let (r, _) = request(&rfc4475("zeromf"));
    assert_eq!(r.headers().max_forwards(), Some(0));

    let (r, _) = request(&rfc4475("cparam01"));
    let Contacts::Addrs(c) = r.headers().contacts().unwrap() else {
        panic!()
    };
    assert_eq!(c[0].uri, "sip:+19725552222@gw1.example.net");
    assert_eq!(c[0].param("unknownparam"), Some(None));

    let (r, _) = request(&rfc4475("cparam02"));
    let Contacts::Addrs(c) = r.headers().contacts().unwrap() else {
        panic!()
    };
    assert_eq!(c[0].uri, "sip:+19725552222@gw1.example.net;unknownparam");
    assert!(c[0].params.is_empty());

    let (r, _) = request(&rfc4475("regescrt"));
    let Contacts::Addrs(c) = r.headers().contacts().unwrap() else {
        panic!()
    };
    assert_eq!(
        c[0].uri,
        "sip:user@example.com?Route=%3Csip:sip.example.com%3E"
    );

    // RFC 2543: no branch, no Max-Forwards, no Content-Length (body to the datagram's end).
    let bytes = rfc4475("inv2543");
    let (r, used) = request(&bytes);
    assert_eq!(used, bytes.len());
    assert_eq!(r.body().len(), 105);
    assert_eq!(r.headers().top_via().unwrap().branch, None);
    assert_eq!(r.headers().max_forwards(), None);
    assert_eq!(
        r.headers().record_routes().unwrap()[0].uri,
        "sip:UserB@example.com;maddr=ss1.example.com"
    );

    // Overlarge scalars answered by accessors: Max-Forwards 300 reads as absent, Expires errs.
    let scalar = String::from_utf8(rfc4475("scalar02"))
        .unwrap()
        .replace("36893488147419103232", "1");
    let (r, _) = request(scalar.as_bytes());
    assert_eq!(r.headers().max_forwards(), None);
    assert_eq!(r.headers().expires().unwrap_err().status(), 400);
}

// ------------------------------------------------------------------------------------------
// RFC 5118
// ------------------------------------------------------------------------------------------

#[test]
fn rfc5118_wire_messages_keep_their_ipv6_hosts() {
    assert_eq!(list_dir("rfc5118-wire").len(), 12);
    for name in list_dir("rfc5118-wire") {
        let bytes = wire5118(&name);
        let parsed = msg::parse(&bytes);
        if name == "ipv6-bad" {
            // §4.2: an IPv6 address outside [] in the Request-URI.
            let e = parsed.unwrap_err();
            assert_eq!(e.status(), 400);
            assert!(msg::salvage_request(&bytes).is_some());
            continue;
        }
        let (m, used) = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
        m.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(used, bytes.len(), "{name}");
    }

    let (r, _) = request(&wire5118("ipv6-good"));
    assert_eq!(r.uri(), "sip:[2001:db8::10]");
    assert_eq!(
        msg::uri_host_port(r.uri()).unwrap(),
        ("[2001:db8::10]", None)
    );
    let via = r.headers().top_via().unwrap();
    assert_eq!(
        (via.sent_by_host.as_str(), via.sent_by_port),
        ("[2001:db8::9:1]", None)
    );
    assert_eq!(via.sent_by_ip(), "2001:db8::9:1".parse().ok());
    let Contacts::Addrs(c) = r.headers().contacts().unwrap() else {
        panic!()
    };
    assert_eq!(c[0].uri, "sip:caller@[2001:db8::1]");

    // §4.3 / §4.4
    let (r, _) = request(&wire5118("port-ambiguous"));
    assert_eq!(
        msg::uri_host_port(r.uri()).unwrap(),
        ("[2001:db8::10:5070]", None)
    );
    let (r, _) = request(&wire5118("port-unambiguous"));
    assert_eq!(
        msg::uri_host_port(r.uri()).unwrap(),
        ("[2001:db8::10]", Some(5070))
    );

    // §4.5: received with and without brackets
    for (name, written) in [
        ("via-received-param-with-delim", "[2001:db8::9:255]"),
        ("via-received-param-no-delim", "2001:db8::9:255"),
    ] {
        let (r, _) = request(&wire5118(name));
        let via = r.headers().top_via().unwrap();
        assert_eq!(via.received.as_deref(), Some(written), "{name}");
        assert_eq!(via.received_ip(), "2001:db8::9:255".parse().ok(), "{name}");
    }

    // §4.6 / §4.8: SDP bodies by the recomputed Content-Length
    let (r, _) = request(&wire5118("ipv6-in-sdp"));
    assert_eq!(r.body().len(), 251);
    assert!(String::from_utf8_lossy(r.body()).contains("c=IN IP6 2001:db8::20"));
    let (r, _) = request(&wire5118("mult-ip-in-sdp"));
    assert_eq!(r.body().len(), 189);

    // §4.7
    let (r, _) = request(&wire5118("mult-ip-in-header"));
    let hops: Vec<_> = r
        .headers()
        .vias()
        .unwrap()
        .into_iter()
        .map(|v| (v.sent_by_host, v.sent_by_port, v.received))
        .collect();
    assert_eq!(
        hops,
        [
            ("[2001:db8::9:1]".to_owned(), Some(6050), None),
            ("192.0.2.1".to_owned(), None, None),
            (
                "[2001:db8::9:255]".to_owned(),
                None,
                Some("192.0.2.200".to_owned())
            ),
        ]
    );

    // §4.9
    let (r, _) = request(&wire5118("ipv4-mapped-ipv6"));
    let via = r.headers().top_via().unwrap();
    assert_eq!(via.sent_by(), "[::ffff:192.0.2.10]:19823");
    let Contacts::Addrs(c) = r.headers().contacts().unwrap() else {
        panic!()
    };
    assert_eq!(c[0].display.as_deref(), Some("T. desk phone"));
    assert_eq!(c[0].uri, "sip:ted@[::ffff:192.0.2.2]");
    assert_eq!(r.body().len(), 245);

    // §4.10: the three-colon form is tolerated and kept as written.
    let (r, _) = request(&wire5118("ipv6-bug-abnf-3-colons"));
    assert_eq!(r.uri(), "sip:user@[2001:db8:::192.0.2.1]");
    assert_eq!(
        r.headers().to().unwrap().uri,
        "sip:user@[2001:db8:::192.0.2.1]"
    );
    let (r, _) = request(&wire5118("ipv6-correct-abnf-2-colons"));
    assert_eq!(r.uri(), "sip:user@[2001:db8::192.0.2.1]");
}

#[test]
fn rfc5118_archive_form_with_bare_lf_is_not_sip_on_the_wire() {
    // The RFC's archive members end lines with LF only (see the corpus README); RFC 3261 §7
    // requires CRLF, so they are refused, never misread.
    for name in list_dir("rfc5118") {
        let e = msg::parse(&read(&format!("rfc5118/{name}.dat"))).unwrap_err();
        assert_eq!(e.status(), 400, "{name}");
    }
}

// ------------------------------------------------------------------------------------------
// Building messages
// ------------------------------------------------------------------------------------------

/// The requests of the corpus that parse and validate.
fn valid_messages() -> Vec<(String, Vec<u8>, Message)> {
    let mut out = Vec::new();
    let files = RFC4475
        .iter()
        .map(|(n, _, _)| format!("rfc4475/{n}.dat"))
        .chain(
            list_dir("rfc5118-wire")
                .into_iter()
                .map(|n| format!("rfc5118-wire/{n}.dat")),
        );
    for rel in files {
        let bytes = read(&rel);
        if let Ok((m, _)) = msg::parse(&bytes) {
            out.push((rel, bytes, m));
        }
    }
    out
}

#[test]
fn rfc3261_18_3_parse_of_to_bytes_gives_the_message_back() {
    let all = valid_messages();
    assert_eq!(
        all.len(),
        33 + 11,
        "every file but the 17 refused ones and ipv6-bad"
    );
    for (rel, _, m) in all {
        let wire = m.to_bytes();
        let (back, used) = msg::parse(&wire).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(used, wire.len(), "{rel}");
        if m.headers().contains("Content-Length") {
            assert_eq!(back, m, "{rel}");
        } else {
            // inv2543: Content-Length is added; otherwise the same.
            let mut expected = m.clone();
            expected
                .headers_mut()
                .push("Content-Length", &m.body().len().to_string())
                .unwrap();
            assert_eq!(back, expected, "{rel}");
        }
        assert_eq!(back.to_bytes(), wire, "{rel}: serialisation is a fixpoint");
    }
}

#[test]
fn rfc3261_8_2_6_every_valid_request_can_be_answered() {
    for (rel, _, m) in valid_messages() {
        let Message::Request(req) = m else { continue };
        if req.validate().is_err() || *req.method() == Method::Ack {
            continue;
        }
        let answer = Response::for_request(&req, 486, "Busy Here", "tag-1").unwrap();
        let back = response(&answer.to_bytes());
        back.validate().unwrap_or_else(|e| panic!("{rel}: {e}"));
        let (h, rh) = (back.headers(), req.headers());
        assert_eq!(h.vias().unwrap(), rh.vias().unwrap(), "{rel}");
        assert_eq!(h.call_id().unwrap(), rh.call_id().unwrap(), "{rel}");
        assert_eq!(h.cseq().unwrap(), rh.cseq().unwrap(), "{rel}");
        assert_eq!(h.from().unwrap(), rh.from().unwrap(), "{rel}");
        let (to, req_to) = (h.to().unwrap(), rh.to().unwrap());
        assert_eq!(to.uri, req_to.uri, "{rel}");
        let tag = req_to.tag.as_deref().unwrap_or("tag-1");
        assert_eq!(to.tag.as_deref(), Some(tag), "{rel}");
    }
}

#[test]
fn rfc3261_8_2_6_1_trying_copies_timestamp_and_adds_no_tag() {
    let req = Request::new(Method::Invite, "sip:bob@example.com")
        .unwrap()
        .with_header("Via", "SIP/2.0/UDP a.example.com;branch=z9hG4bK1")
        .unwrap()
        .with_header("From", "<sip:alice@example.com>;tag=f")
        .unwrap()
        .with_header("To", "<sip:bob@example.com>")
        .unwrap()
        .with_header("Call-ID", "c1")
        .unwrap()
        .with_header("CSeq", "1 INVITE")
        .unwrap()
        .with_header("Timestamp", "54")
        .unwrap();
    let trying = Response::for_request(&req, 100, "Trying", "ignored").unwrap();
    assert_eq!(trying.headers().get("Timestamp"), Some("54"));
    assert_eq!(trying.headers().to().unwrap().tag, None);
    assert!(Response::for_request(&req, 180, "Ringing", "bad tag").is_err());
}

#[test]
fn rfc3261_17_1_1_3_ack_for_a_non_2xx() {
    let (invite, _) = request(&rfc4475("wsinv"));
    let busy = Response::for_request(&invite, 486, "Busy Here", "b1").unwrap();
    let ack = invite.ack_for(&busy).unwrap();
    let (back, _) = request(&ack.to_bytes());
    back.validate().unwrap();
    assert_eq!(*back.method(), Method::Ack);
    assert_eq!(back.uri(), invite.uri());
    let h = back.headers();
    assert_eq!(h.vias().unwrap(), [invite.headers().top_via().unwrap()]);
    assert_eq!(h.cseq().unwrap(), (9, Method::Ack));
    assert_eq!(h.to().unwrap().tag.as_deref(), Some("1918181833n"));
    assert_eq!(h.call_id().unwrap(), "wsinv.ndaksdj@192.0.2.1");
    assert_eq!(h.routes().unwrap(), invite.headers().routes().unwrap());
    assert_eq!(h.max_forwards(), Some(68));
}

#[test]
fn limits_answer_413_and_513() {
    let bytes = rfc4475("longreq");
    assert_eq!(
        msg::parse_datagram(&bytes, 1000).unwrap_err(),
        MsgError::MessageTooLarge { limit: 1000 }
    );
    let e = msg::parse_stream(&bytes, 3000).unwrap_err();
    assert_eq!(e.status(), 513);
    let huge = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 99999999999999999999999\r\n\r\n";
    assert_eq!(msg::parse(huge).unwrap_err().status(), 413);
    let big = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 70000\r\n\r\n";
    assert_eq!(
        msg::parse(big).unwrap_err(),
        MsgError::BodyTooLarge { limit: 65_535 }
    );
    assert!(msg::parse(big).unwrap_err().closes_stream());
    // A stream without a terminated header section and beyond the cap is lost.
    let mut endless = b"OPTIONS sip:a@b SIP/2.0\r\n".to_vec();
    endless.extend(std::iter::repeat_n(b'x', 5000));
    assert_eq!(msg::parse_stream(&endless, 4096).unwrap_err().status(), 513);
    assert_eq!(
        msg::parse_stream(&endless[..2000], 4096).unwrap(),
        StreamItem::Incomplete
    );
}

#[test]
fn rfc3261_7_bare_lf_or_cr_in_the_header_section_is_refused() {
    let good = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nX: y\r\nContent-Length: 0\r\n\r\n";
    assert!(msg::parse(good.as_bytes()).is_ok());
    for bad in [
        good.replace("X: y\r\n", "X: y\n"),
        good.replace("X: y", "X: \ry"),
    ] {
        assert_eq!(
            msg::parse(bad.as_bytes()).unwrap_err().status(),
            400,
            "{bad:?}"
        );
    }
    // Leading CRLFs are skipped and counted (RFC 3261 §7.5).
    let padded = format!("\r\n\r\n{good}");
    let (_, used) = msg::parse(padded.as_bytes()).unwrap();
    assert_eq!(used, padded.len());
    // A stream needs Content-Length.
    let no_length = good.replace("Content-Length: 0\r\n", "");
    assert!(msg::parse(no_length.as_bytes()).is_ok());
    let e = msg::parse_stream(no_length.as_bytes(), 4096).unwrap_err();
    assert!(e.closes_stream());
}

#[test]
fn rfc5626_4_4_1_keep_alives_are_reported_so_an_idle_stream_never_fills() {
    assert_eq!(
        msg::parse_stream(b"\r\n\r\n", 4096).unwrap(),
        StreamItem::KeepAlive(4)
    );
    assert_eq!(
        msg::parse_stream(b"\r", 4096).unwrap(),
        StreamItem::Incomplete
    );
    assert_eq!(
        msg::parse_stream(b"", 4096).unwrap(),
        StreamItem::Incomplete
    );
    // Over a datagram a lone keep-alive is no message (and nothing to answer).
    assert!(msg::parse(b"\r\n\r\n").is_err());
    assert!(msg::salvage_request(b"\r\n\r\n").is_none());
}

#[test]
fn salvage_never_answers_ack_or_responses() {
    let ack = String::from_utf8(rfc4475("badvers"))
        .unwrap()
        .replacen("OPTIONS", "ACK", 1);
    assert!(msg::parse(ack.as_bytes()).is_err());
    assert!(msg::salvage_request(ack.as_bytes()).is_none());
    assert!(msg::salvage_request(&rfc4475("bigcode")).is_none());
    assert!(msg::salvage_request(&rfc4475("unreason")).is_none());
}

// ------------------------------------------------------------------------------------------
// Properties
// ------------------------------------------------------------------------------------------

/// Every corpus file, read once for all property cases.
fn corpus() -> &'static [Vec<u8>] {
    static CORPUS: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
        let mut all: Vec<Vec<u8>> = RFC4475.iter().map(|(n, _, _)| rfc4475(n)).collect();
        all.extend(list_dir("rfc5118-wire").iter().map(|n| wire5118(n)));
        all.extend(
            list_dir("rfc5118")
                .iter()
                .map(|n| read(&format!("rfc5118/{n}.dat"))),
        );
        all
    });
    &CORPUS
}

/// The valid messages, each through the wire once so that it carries Content-Length.
fn framed_valid() -> &'static [Message] {
    static VALID: LazyLock<Vec<Message>> = LazyLock::new(|| {
        valid_messages()
            .into_iter()
            .map(|(_, _, m)| msg::parse(&m.to_bytes()).unwrap().0)
            .collect()
    });
    &VALID
}

/// Whatever parses serialises to something that parses to the same message (with
/// Content-Length added when it was missing).
fn assert_roundtrip(m: &Message) {
    let wire = m.to_bytes();
    let (back, used) = msg::parse(&wire).expect("to_bytes output must parse");
    assert_eq!(used, wire.len());
    assert_eq!(back.body(), m.body());
    if m.headers().contains("Content-Length") {
        assert_eq!(&back, m);
    }
    assert_eq!(back.to_bytes(), wire);
}

fn exercise(bytes: &[u8]) {
    if let Ok((m, used)) = msg::parse(bytes) {
        assert!(used <= bytes.len());
        assert_roundtrip(&m);
        let _ = m.validate();
        let h = m.headers();
        let _ = (
            h.vias(),
            h.contacts(),
            h.routes(),
            h.record_routes(),
            h.expires(),
        );
        let _ = (h.max_forwards(), h.content_length(), h.is_answerable());
        if let Message::Request(r) = &m {
            let _ = msg::uri_host_port(r.uri());
            let _ = Response::for_request(r, 400, "Bad Request", "x");
        }
    }
    match msg::parse_stream(bytes, 4096) {
        Ok(StreamItem::Message(_, n) | StreamItem::Malformed(_, n) | StreamItem::KeepAlive(n)) => {
            assert!(n > 0 && n <= bytes.len());
        }
        Ok(StreamItem::Incomplete) | Err(_) => {}
    }
    if let Some(h) = msg::salvage_request(bytes) {
        let _ = Response::for_headers(&h, 400, "Bad Request", "x");
    }
}

proptest! {
    // 512 cases unless PROPTEST_CASES says otherwise.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
        exercise(&bytes);
    }

    #[test]
    fn parse_never_panics_on_sip_looking_bytes(
        start in prop_oneof![
            Just("INVITE sip:a@b SIP/2.0\r\n"),
            Just("SIP/2.0 200 OK\r\n"),
            Just("\r\nOPTIONS sip:[::1]:5060 SIP/2.0\r\n"),
        ],
        lines in proptest::collection::vec(
            "(Via|v|From|t|To|CSeq|Call-ID|l|Content-Length|m|Route|Max-Forwards|X)[ \t]*:[ -~\t\u{80}-\u{10ffff}]{0,40}",
            0..8,
        ),
        body in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let mut bytes = start.as_bytes().to_vec();
        for l in &lines {
            bytes.extend_from_slice(l.as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(&body);
        exercise(&bytes);
    }

    #[test]
    fn parse_never_panics_on_mutated_torture_messages(
        file in any::<Index>(),
        edits in proptest::collection::vec((any::<Index>(), any::<u8>(), 0u8..4), 1..6),
    ) {
        let mut bytes = file.get(corpus()).clone();
        for (at, byte, op) in edits {
            if bytes.is_empty() {
                bytes.push(byte);
                continue;
            }
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                2 => { bytes.remove(i); }
                _ => bytes.truncate(i),
            }
        }
        exercise(&bytes);
    }

    #[test]
    fn built_requests_survive_the_wire(
        method in prop_oneof![Just("INVITE".to_owned()), "[A-Za-z0-9!%*_+`'~.-]{1,12}"],
        extra in proptest::collection::vec(("X-[A-Za-z0-9!%*_+`'~.-]{1,10}", "\\PC{0,30}"), 0..6),
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut req = Request::new(Method::parse(&method).unwrap(), "sip:bob@[2001:db8::1]:5070;transport=tcp")
            .unwrap()
            .with_header("Via", "SIP/2.0/TCP [2001:db8::2];branch=z9hG4bKp;rport").unwrap()
            .with_header("From", "\"A \\\"b\\\"\" <sip:a@example.com>;tag=1").unwrap()
            .with_header("To", "<sip:bob@example.com>").unwrap()
            .with_header("Call-ID", "prop@example.com").unwrap()
            .with_header("CSeq", &format!("2147483647 {method}")).unwrap();
        for (name, value) in &extra {
            req.headers_mut().push(name, value).unwrap();
        }
        req.set_body(body);
        req.validate().unwrap();
        let (back, used) = msg::parse(&req.to_bytes()).unwrap();
        let mut expected = req.clone();
        expected.headers_mut().push("Content-Length", &req.body().len().to_string()).unwrap();
        prop_assert_eq!(used, req.to_bytes().len());
        prop_assert_eq!(back, Message::Request(expected));
    }

    #[test]
    fn a_stream_of_messages_comes_out_whole_however_it_is_cut(
        picks in proptest::collection::vec(any::<Index>(), 1..6),
        keepalive in proptest::collection::vec(any::<bool>(), 6),
        cuts in proptest::collection::vec(1usize..400, 1..20),
    ) {
        let sent: Vec<Message> = picks.iter().map(|p| p.get(framed_valid()).clone()).collect();
        let mut wire = Vec::new();
        for (m, ka) in sent.iter().zip(keepalive) {
            if ka {
                wire.extend_from_slice(b"\r\n\r\n");
            }
            wire.extend_from_slice(&m.to_bytes());
        }
        let mut received = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = 0;
        let mut cut = cuts.iter().cycle();
        while received.len() < sent.len() {
            match msg::parse_stream(&buf, msg::DEFAULT_MAX_MESSAGE_SIZE).unwrap() {
                StreamItem::Message(m, n) => {
                    received.push(m);
                    buf.drain(..n);
                }
                StreamItem::KeepAlive(n) => {
                    buf.drain(..n);
                }
                StreamItem::Malformed(e, _) => panic!("{e}"),
                StreamItem::Incomplete => {
                    prop_assert!(fed < wire.len(), "stalled");
                    let take = (*cut.next().unwrap()).min(wire.len() - fed);
                    buf.extend_from_slice(&wire[fed..fed + take]);
                    fed += take;
                }
            }
        }
        prop_assert_eq!(received, sent);
    }
}
