//! Writes the fuzz seed corpus of sip-proto's targets (`fuzz/corpus/<target>/`) that
//! `tests/corpus.rs` replays: `cargo run -p sip-proto --example seed_corpus`.
//!
//! The `sip_message` seeds are the RFC 4475 and RFC 5118 (wire form) torture messages, read
//! from `$SIP_TORTURE_DIR` when set, else from the shared directory next to the workspace
//! (as `tests/torture.rs` does), plus a few valid requests and responses. Everything is
//! deterministic: regenerating writes the same files.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use sip_proto::digest::{self, Algorithm, Credentials};
use sip_proto::fuzzing;
use std::fs;
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn torture_dir() -> PathBuf {
    std::env::var_os("SIP_TORTURE_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/sip-torture"),
        PathBuf::from,
    )
}

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = fuzz_dir().join("corpus").join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), data).unwrap();
}

/// CRLF line ends for a message or SDP written with `\n`.
fn crlf(text: &str) -> String {
    text.replace('\n', "\r\n")
}

/// A message written with `\n` line ends, `{len}` standing for the body length.
fn message(head: &str, body: &str) -> Vec<u8> {
    let head = crlf(head).replace("{len}", &body.len().to_string());
    [head.as_bytes(), b"\r\n", body.as_bytes()].concat()
}

// ---------------------------------------------------------------------------------------
// sip_message

fn sip_message_seeds() {
    let t = "sip_message";
    for (sub, prefix) in [("rfc4475", "rfc4475"), ("rfc5118-wire", "rfc5118")] {
        let dir = torture_dir().join(sub);
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "dat"))
            .collect();
        files.sort();
        for f in files {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            write(t, &format!("{prefix}-{name}"), &fs::read(&f).unwrap());
        }
    }

    let offer = crlf(OFFER_PCMU_PCMA_TE);
    write(
        t,
        "valid-invite-with-sdp.sip",
        &message(
            "INVITE sip:+14085551000@gw.example;user=phone SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK74bf9;rport
Max-Forwards: 70
From: \"Alice \\\"A\\\"\" <sip:alice@atlanta.example>;tag=9fxced76sl
To: <sip:+14085551000@gw.example;user=phone>
Call-ID: 3848276298220188511@atlanta.example
CSeq: 1 INVITE
Contact: <sip:alice@192.0.2.10:5060;transport=udp>;expires=60
Route: <sip:proxy.example;lr>, <sip:[2001:db8::5]:5070;lr>
Supported: timer, 100rel
Session-Expires: 1800;refresher=uac
Content-Type: application/sdp
Content-Length: {len}
",
            &offer,
        ),
    );
    let answer = crlf(
        "v=0
o=- 7 8 IN IP4 192.0.2.1
s=-
c=IN IP4 192.0.2.1
t=0 0
m=audio 40000 RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
",
    );
    write(
        t,
        "valid-200-with-record-route.sip",
        &message(
            "SIP/2.0 200 OK
Via: SIP/2.0/TLS proxy.example:5061;branch=z9hG4bK2d4790.1;received=198.51.100.7
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK74bf9;rport=5060;received=192.0.2.10
Record-Route: <sip:proxy.example;lr;transport=tls>,<sip:edge.example;lr>
From: \"Alice\" <sip:alice@atlanta.example>;tag=9fxced76sl
To: <sip:+14085551000@gw.example;user=phone>;tag=8321234356
Call-ID: 3848276298220188511@atlanta.example
CSeq: 1 INVITE
Contact: <sip:gw@192.0.2.1:5060>
Content-Type: application/sdp
Content-Length: {len}
",
            &answer,
        ),
    );
    let challenger = fuzzing::digest_challenger().unwrap();
    let challenges = challenger.challenges(fuzzing::DIGEST_NOW_MS - 60_000, &[0x11; 16], false);
    let creds = digest::respond(
        &challenges[0],
        fuzzing::DIGEST_USER,
        fuzzing::DIGEST_PASSWORD,
        "REGISTER",
        "sip:fuzz.example",
        "0a4f113b",
        1,
    )
    .unwrap();
    write(
        t,
        "valid-register-with-authorization.sip",
        &message(
            &format!(
                "REGISTER sip:fuzz.example SIP/2.0
v: SIP/2.0/TCP [2001:db8::2]:5061;branch=z9hG4bKnashds7
Max-Forwards: 70
f: <sip:alice@fuzz.example>;tag=a73kszlfl
t: <sip:alice@fuzz.example>
i: 1j9FpLxk3uxtm8tn@[2001:db8::2]
CSeq: 2 REGISTER
m: <sip:alice@[2001:db8::2]:5061;transport=tcp>;q=0.7;expires=3600, <sip:alice@192.0.2.4>;q=0.1
Expires: 7200
Authorization: {}
l: {{len}}
",
                creds.to_header_value().unwrap()
            ),
            "",
        ),
    );
    // A stream: a keep-alive, two requests, a keep-alive and the start of a third request.
    let options = message(
        "OPTIONS sip:[2001:db8::10]:5070;transport=tcp SIP/2.0
Via: SIP/2.0/TCP [2001:db8::2]:5061;branch=z9hG4bK-opt-1;rport
Max-Forwards: 0
From: <sip:probe@[2001:db8::2]>;tag=p1
To: <sip:[2001:db8::10]:5070>
Call-ID: opt-1@[2001:db8::2]
CSeq: 7 OPTIONS
Accept: application/sdp
Content-Length: {len}
",
        "",
    );
    let bye = message(
        "BYE sip:gw@192.0.2.1:5060 SIP/2.0
Via: SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bKbye1
Max-Forwards: 70
From: \"Alice\" <sip:alice@atlanta.example>;tag=9fxced76sl
To: <sip:+14085551000@gw.example;user=phone>;tag=8321234356
Call-ID: 3848276298220188511@atlanta.example
CSeq: 2 BYE
Content-Length: {len}
",
        "",
    );
    let stream = [
        &b"\r\n\r\n"[..],
        &options,
        &bye,
        b"\r\n\r\n",
        &bye[..bye.len() / 2],
    ]
    .concat();
    write(t, "valid-stream-keepalives-options-bye.sip", &stream);
    write(t, "valid-options-ipv6-tcp.sip", &options);
}

// ---------------------------------------------------------------------------------------
// sdp

const OFFER_PCMU_PCMA_TE: &str = "v=0
o=alice 2890844526 2890844526 IN IP4 192.0.2.10
s=-
c=IN IP4 192.0.2.10
t=0 0
m=audio 49170 RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
a=sendrecv
";

fn sdp_seeds() {
    let t = "sdp";
    let seeds: &[(&str, &str)] = &[
        ("offer-pcmu-pcma-telephone-event.sdp", OFFER_PCMU_PCMA_TE),
        (
            "offer-opus-stereo.sdp",
            "v=0
o=- 4611731400430051336 2 IN IP4 198.51.100.3
s=call
c=IN IP4 198.51.100.3
b=AS:64
t=0 0
a=group:BUNDLE 0
m=audio 9000 RTP/AVP 111 9 0 8 13 110 126
a=rtpmap:111 opus/48000/2
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:9 G722/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
a=maxptime:60
",
        ),
        (
            "hold-sendonly.sdp",
            "v=0
o=alice 2890844526 2890844527 IN IP4 192.0.2.10
s=-
c=IN IP4 192.0.2.10
t=0 0
m=audio 49170 RTP/AVP 8 0
a=sendonly
",
        ),
        (
            "hold-inactive-session-level.sdp",
            "v=0
o=alice 2890844526 2890844528 IN IP4 192.0.2.10
s=-
c=IN IP4 192.0.2.10
t=0 0
a=inactive
m=audio 49170 RTP/AVP 0
",
        ),
        (
            "hold-rfc2543-zero-address.sdp",
            "v=0
o=alice 2890844526 2890844529 IN IP4 192.0.2.10
s=-
c=IN IP4 0.0.0.0
t=0 0
m=audio 49170 RTP/AVP 0 101
a=rtpmap:101 telephone-event/8000
",
        ),
        (
            "savp-sdes-crypto.sdp",
            "v=0
o=- 1 1 IN IP4 203.0.113.9
s=-
t=0 0
m=audio 16384 RTP/SAVP 0 8 101
c=IN IP4 203.0.113.9
a=rtpmap:101 telephone-event/8000
a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|1:32
a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj
a=crypto:3 AEAD_AES_128_GCM inline:MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0 UNENCRYPTED_SRTCP
a=crypto:x BROKEN inline:***
",
        ),
        (
            "audio-and-video.sdp",
            "v=0
o=bob 2808844564 2808844564 IN IP4 192.0.2.20
s=-
c=IN IP4 192.0.2.20
t=0 0
m=audio 49172 RTP/AVP 96 0
a=rtpmap:96 opus/48000/2
a=recvonly
m=video 49174 RTP/AVPF 97 98
a=rtpmap:97 H264/90000
a=fmtp:97 profile-level-id=42e01f;packetization-mode=1
a=rtpmap:98 VP8/90000
a=rtcp-fb:* nack
",
        ),
        (
            "ipv6-media-level-address.sdp",
            "v=0
o=bob 280744730 28977631 IN IP6 2001:db8::10
s=-
t=0 0
m=audio 22334 RTP/AVP 0
c=IN IP6 2001:db8::10
m=audio 0 RTP/AVP 8
m=video 22336 RTP/AVP 31
c=IN IP4 192.0.2.30
",
        ),
        (
            "image-t38-and-audio.sdp",
            "v=0
o=- 1 2 IN IP4 192.0.2.40
s=-
c=IN IP4 192.0.2.40
t=0 0
m=image 49180 udptl t38
a=T38FaxVersion:0
a=T38MaxBitRate:14400
m=audio 49182 RTP/AVP 0
",
        ),
        (
            "malformed-port.sdp",
            "v=0
o=- 1 1 IN IP4 192.0.2.1
s=-
t=0 0
m=audio 99999 RTP/AVP 0
",
        ),
        (
            "malformed-order.sdp",
            "v=0
s=-
o=- 1 1 IN IP4 192.0.2.1
t=0 0
m=audio 4000 RTP/AVP 0
",
        ),
        (
            "malformed-attributes.sdp",
            "v=0
o=- 1 1 IN IP4 192.0.2.1
s=-
c=IN IP4 192.0.2.1
t=0 0
m=audio 4000 RTP/AVP 0 300 abc 96
a=rtpmap:96
a=rtpmap:x PCMU/8000
a=rtpmap:96 opus/fast
a=fmtp:96
a=ptime:twenty
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:!!notbase64!!
",
        ),
    ];
    for (name, text) in seeds {
        write(t, name, crlf(text).as_bytes());
    }
}

// ---------------------------------------------------------------------------------------
// digest_header

fn digest_seeds() {
    let t = "digest_header";
    let fixed: &[(&str, &str)] = &[
        (
            "rfc2617-challenge.txt",
            "Digest realm=\"testrealm@host.com\",\r\n qop=\"auth,auth-int\",\r\n \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\",\r\n \
             opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        ),
        (
            "rfc2617-authorization.txt",
            "Digest username=\"Mufasa\",\r\n realm=\"testrealm@host.com\",\r\n \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\",\r\n uri=\"/dir/index.html\",\r\n \
             qop=auth,\r\n nc=00000001,\r\n cnonce=\"0a4f113b\",\r\n \
             response=\"6629fae49393a05397450978507c4ef1\",\r\n \
             opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        ),
        (
            "rfc7616-sha256-challenge.txt",
            "Digest\r\n realm=\"http-auth@example.org\",\r\n qop=\"auth, auth-int\",\r\n \
             algorithm=SHA-256,\r\n nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\",\r\n \
             opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"",
        ),
        (
            "rfc7616-sha256-authorization.txt",
            "Digest username=\"Mufasa\", realm=\"http-auth@example.org\", \
             uri=\"/dir/index.html\", algorithm=SHA-256, \
             nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", nc=00000001, \
             cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\", qop=auth, \
             response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\", \
             opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"",
        ),
        (
            "rfc3261-challenge-md5.txt",
            "Digest realm=\"atlanta.com\", domain=\"sip:ss1.carrier.com\", qop=\"auth\", \
             nonce=\"f84f1cec41e6cbe5aea9c8e88d359\", opaque=\"\", stale=FALSE, algorithm=MD5",
        ),
        ("malformed-basic.txt", "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        (
            "malformed-unterminated-quote.txt",
            "Digest username=\"bob\", realm=\"biloxi.com\", nonce=\"dcd98b7102dd2f0e8b11d0f6\", \
             uri=\"sip:bob@biloxi.com\", response=\"245f23415f11432b3434341c022\", \
             nc=1, cnonce=\"0a4f",
        ),
    ];
    for (name, text) in fixed {
        write(t, name, text.as_bytes());
    }

    // Against the target's challenger: a challenge it sends, and credentials that verify.
    let challenger = fuzzing::digest_challenger().unwrap();
    let issued = fuzzing::DIGEST_NOW_MS - 60_000;
    let fresh = challenger.challenges(issued, &[0x11; 16], false);
    let pick = |challenges: &[digest::Challenge], alg: Algorithm| {
        challenges
            .iter()
            .find(|c| c.algorithm == alg)
            .unwrap()
            .clone()
    };
    let answer = |ch: &digest::Challenge| -> Credentials {
        digest::respond(
            ch,
            fuzzing::DIGEST_USER,
            fuzzing::DIGEST_PASSWORD,
            "REGISTER",
            "sip:fuzz.example",
            "f2/wE4q74E6zIJEt",
            1,
        )
        .unwrap()
    };
    let sha256 = pick(&fresh, Algorithm::Sha256);
    write(
        t,
        "fixed-challenge-sha256.txt",
        sha256.to_header_value().unwrap().as_bytes(),
    );
    let mut creds = Vec::new();
    creds.push(("fixed-credentials-sha256.txt", answer(&sha256)));
    creds.push((
        "fixed-credentials-md5-sess.txt",
        answer(&pick(&fresh, Algorithm::Md5Sess)),
    ));
    let mut legacy = pick(&fresh, Algorithm::Md5);
    legacy.qop.clear();
    creds.push(("fixed-credentials-md5-no-qop.txt", answer(&legacy)));
    let old = challenger.challenges(issued - 3_600_000, &[0x22; 16], false);
    creds.push((
        "fixed-credentials-stale.txt",
        answer(&pick(&old, Algorithm::Sha512_256)),
    ));
    for (name, c) in creds {
        write(t, name, c.to_header_value().unwrap().as_bytes());
    }
}

fn main() {
    sip_message_seeds();
    sdp_seeds();
    digest_seeds();
    // Report what the bodies make of the seeds (tests/corpus.rs fails on any error).
    type Body = fn(&[u8]) -> fuzzing::Outcome;
    let targets: [(&str, Body); 3] = [
        ("sip_message", fuzzing::sip_message),
        ("sdp", fuzzing::sdp),
        ("digest_header", fuzzing::digest_header),
    ];
    for (target, body) in targets {
        let dir = fuzz_dir().join("corpus").join(target);
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            if let Err(e) = body(&fs::read(&f).unwrap()) {
                eprintln!("{target}: {}: {e}", f.display());
            }
        }
    }
}
