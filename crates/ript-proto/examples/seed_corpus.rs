//! Writes the fuzz seed corpus (`fuzz/corpus/<target>/`) that `tests/corpus.rs` replays:
//! `cargo run -p ript-proto --example seed_corpus`. The passport seeds get a fresh key each
//! run, so regenerating changes those files.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    unused_imports
)]

use ript_proto::adv;
use ript_proto::chunk::{
    self, Ack, Chunk, MediaChunk, MediaDirection, MediaKey, Package, PayloadType,
};
use ript_proto::chunk::{SeqState, Truncated};
use ript_proto::events::{Event, EventDecoder, EventDirection, EventEncoder, EventKind};
use ript_proto::fuzzing;
use ript_proto::model::Reason;
use ript_proto::passport::{self, Claims, TN_AUTH_LIST_OID, TnAuthList, TnEntry};
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

// ---------------------------------------------------------------------------------------
// Seed corpus

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = fuzz_dir().join("corpus").join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), data).unwrap();
}

fn key() -> MediaKey {
    MediaKey::new(&fuzzing::CHUNK_KEY).unwrap()
}

fn chunk_seeds() {
    let t = "chunk_frames";
    let ack = |seq: u64, receive_time: Option<u64>| Ack {
        direction: MediaDirection::C2s,
        source: 1,
        sink: 2,
        seq,
        receive_time,
    };
    let mut voice = MediaChunk::new(
        1,
        1_795_460_220_123,
        PayloadType::OPUS,
        1,
        2,
        vec![0xfc; 40],
    );
    voice.marker = true;
    voice.audio_level = Some(30);
    let mut b = Vec::new();
    voice.encode_frame(&mut b, None);
    write(t, "media-clear.bin", &b);
    let media_only = b.clone();

    let mut b = Vec::new();
    ack(7, Some(1_795_460_220_200)).encode_frame(&mut b);
    write(t, "ack.bin", &b);

    // A client PUT: one media frame and pending acks (the last without a receive time).
    let mut b = Vec::new();
    MediaChunk::new(
        9,
        1_795_460_220_300,
        PayloadType::PCMU,
        1,
        1,
        vec![0xff; 160],
    )
    .encode_frame(&mut b, None);
    ack(5, Some(1_795_460_220_250)).encode_frame(&mut b);
    ack(6, None).encode_frame(&mut b);
    write(t, "media-and-acks.bin", &b);

    // Video with every envelope field and extensions on both sides of tag 4.
    let mut v = MediaChunk::new(
        1 << 40,
        1_795_460_220_400,
        PayloadType::H264,
        2,
        3,
        vec![0x65; 24],
    );
    v.reference = true;
    v.spatial = Some(1);
    v.temporal = Some(2);
    v.extensions = vec![(64, vec![]), (200, vec![1, 2, 3])];
    v.package = Package::Clear {
        media: vec![0x65; 24],
        extensions: vec![(99, vec![7])],
    };
    let mut b = Vec::new();
    v.encode_frame(&mut b, None);
    write(t, "video-extensions.bin", &b);

    // Sealed with the target's key, both directions.
    for (name, dir) in [
        ("sealed-c2s.bin", MediaDirection::C2s),
        ("sealed-s2c.bin", MediaDirection::S2c),
    ] {
        let mut m = MediaChunk::new(
            42,
            1_795_460_220_500,
            PayloadType::PCMA,
            3,
            4,
            vec![0xd5; 80],
        );
        m.package = Package::Clear {
            media: vec![0xd5; 80],
            extensions: vec![(99, vec![1])],
        };
        let mut b = Vec::new();
        m.encode_frame(&mut b, Some((&key(), dir, 42)));
        write(t, name, &b);
    }

    // A flushed buffer: full values first, then short ones across a 16-bit seq wrap, sealed.
    let mut state = SeqState::new(0x1_fffe);
    let mut b = Vec::new();
    for i in 0..5u64 {
        let (seq, full) = state.next_seq();
        let (s, ts) = SeqState::wire(full, seq, 1_795_460_220_000 + 20 * i);
        let mut m = MediaChunk::new(0, 0, PayloadType::OPUS, 1, 1, vec![i as u8; 20]);
        m.seq = s;
        m.timestamp = Some(ts);
        m.encode_frame(&mut b, Some((&key(), MediaDirection::S2c, seq)));
        state.on_ack(seq);
    }
    write(t, "flush-sealed-short-seq.bin", &b);

    // Short seq without history, and a two-byte payload type.
    let mut m = MediaChunk::new(0, 0, PayloadType(300), 1, 1, vec![1]);
    m.seq = Truncated::short(0x1234, 2);
    m.timestamp = None;
    let mut b = Vec::new();
    m.encode_frame(&mut b, None);
    write(t, "short-seq-no-timestamp.bin", &b);

    // Broken ones.
    write(
        t,
        "truncated-frame.bin",
        &media_only[..media_only.len() / 2],
    );
    write(t, "truncated-varint.bin", &[0x40]);
    write(
        t,
        "empty-frame-then-media.bin",
        &[&[0x00u8][..], &media_only[..]].concat(),
    );
    let tlv = |out: &mut Vec<u8>, tag: u64, v: &[u8]| {
        chunk::put_varint(out, tag);
        chunk::put_varint(out, v.len() as u64);
        out.extend_from_slice(v);
    };
    let frame = |c: &[u8]| {
        let mut out = Vec::new();
        chunk::put_varint(&mut out, c.len() as u64);
        out.extend_from_slice(c);
        out
    };
    let mut c = Vec::new();
    tlv(&mut c, 1, &[1]);
    tlv(&mut c, 63, &[]);
    write(
        t,
        "unknown-tag-below-64.bin",
        &[frame(&c), media_only.clone()].concat(),
    );
    let mut c = Vec::new();
    tlv(&mut c, 6, &[1]);
    tlv(&mut c, 6, &[1]);
    write(t, "repeated-tag.bin", &frame(&c));
    let mut c = Vec::new();
    for (tag, v) in [
        (1, &[1u8][..]),
        (3, &[0][..]),
        (6, &[1][..]),
        (7, &[1][..]),
        (14, &[0; 20][..]),
        (64, &[][..]),
    ] {
        tlv(&mut c, tag, v);
    }
    write(t, "sealed-not-last.bin", &frame(&c));
    let mut c = Vec::new();
    for (tag, v) in [
        (5, &[1u8][..]),
        (12, &[0, 1][..]),
        (16, &[0][..]),
        (6, &[1][..]),
        (7, &[1][..]),
        (1, &[1, 2][..]),
    ] {
        tlv(&mut c, tag, v);
    }
    write(t, "ack-short-seq.bin", &frame(&c));
    let mut c = Vec::new();
    for (tag, v) in [
        (1, &[1u8][..]),
        (3, &[0][..]),
        (6, &[1][..]),
        (7, &[1][..]),
        (4, &[1][..]),
        (14, &[2][..]),
    ] {
        tlv(&mut c, tag, v);
    }
    write(t, "media-and-sealed.bin", &frame(&c));
}

fn event_seeds() {
    let t = "event_stream";
    let call = "https://gw.example/.well-known/ript/v1/calls/1";
    let ev = |kind: EventKind| Event::new(EventDirection::S2c, 1_795_460_220_123, call, kind);
    let stream = |split: u8, events: &[Event], close: bool| {
        let mut enc = EventEncoder::default();
        let mut out = vec![split];
        out.extend_from_slice(enc.open());
        for e in events {
            out.extend(enc.encode(e));
        }
        if close {
            out.extend_from_slice(enc.close());
        }
        out
    };
    let busy = Some(Reason::sip(486, "Busy \"Here\" } ] \\"));
    write(
        t,
        "call-lifecycle.bin",
        &stream(
            10,
            &[
                ev(EventKind::Proceeding),
                ev(EventKind::Alerting),
                ev(EventKind::Answered),
                ev(EventKind::End).with_reason(Some(Reason::sip(200, "Normal"))),
            ],
            true,
        ),
    );
    let mut ping = Event::new(
        EventDirection::C2s,
        1_795_460_220_123,
        call,
        EventKind::Ping,
    );
    ping.nonce = Some("7".into());
    let mut pong = ev(EventKind::Pong);
    pong.nonce = Some("7".into());
    write(t, "ping-pong.bin", &stream(0, &[ping, pong], false));
    write(
        t,
        "declined-with-reason.bin",
        &stream(200, &[ev(EventKind::Declined).with_reason(busy)], true),
    );
    let mut migrate = ev(EventKind::Migrate);
    migrate.uri = Some(format!("{call}-moved"));
    let mut changed = ev(EventKind::HandlerChanged);
    changed.handler = Some("h-{1}".into());
    write(
        t,
        "migrate-and-handler-changed.bin",
        &stream(33, &[migrate, changed, ev(EventKind::MediaPanic)], false),
    );
    write(
        t,
        "unknown-event-unicode.bin",
        &stream(
            90,
            &[ev(EventKind::Other("x-new \u{e9}\u{1F600}".into()))],
            true,
        ),
    );
    let extra = "\x05 \r\n[ {\"direction\":\"c2s\",\"timestamp\":\"t\",\"call\":\"c\",\"event\":\"ping\",\
                 \"nonce\":\"7\",\"extra\":{\"a\":[1,\"]}\"]}}\t,\n{\"direction\":\"s2c\",\
                 \"timestamp\":\"t\",\"call\":\"c\",\"event\":\"end\",\"reason\":{}}]  ";
    write(t, "whitespace-and-unknown-fields.bin", extra.as_bytes());
    write(t, "empty-array.bin", b"\x01[]");
    write(t, "no-array-start.bin", b"\x00{}");
    write(t, "not-an-object.bin", b"\x01[1,2]");
    let ok = r#"{"direction":"c2s","timestamp":"t","call":"c","event":"end"}"#;
    write(t, "bad-separator.bin", format!("\x03[{ok} x").as_bytes());
    write(t, "truncated-object.bin", b"\x05[{\"direction\":");
    write(
        t,
        "trailing-data.bin",
        format!("\x02[{ok}] {ok}").as_bytes(),
    );
    write(t, "bad-object.bin", b"\x04[{\"a\":1}]");
    let escapes = r#"[{"direction":"c2s","timestamp":"\\","call":"c\\\"}]","event":"end"}]"#;
    write(
        t,
        "escaped-quotes-in-strings.bin",
        &[&b"\x08"[..], escapes.as_bytes()].concat(),
    );
}

fn advertisement_seeds() {
    let t = "advertisement";
    let seeds: &[(&str, &str)] = &[
        (
            "negotiation-profile.txt",
            "1 out: PCMU; opus,sr=24000,ptime=20; 2 in: opus; PCMU;|\
             5 in: opus,cbr=1; PCMU; 3 in: PCMA; 4 in: opus; 9 out: PCMA; opus;",
        ),
        (
            "aux-codecs-and-video.txt",
            "1 out: telephone-event; CN; 2 out: H264;|\
             1 in: telephone-event; CN; PCMU; 2 in: PCMU; 3 in: H264;",
        ),
        (
            "unknown-params.txt",
            "1 out: opus,cbr=0,x=3;|7 in: opus,cbr=1,x=5,y=2;",
        ),
        (
            "video-params.txt",
            "1 out: H264,fps=60,max-width=1920,max-height=1080; VP8; AV1,tlay=3,slay=2;|\
             1 in: AV1,depth=10; H264,fps=30,br=2000;",
        ),
        (
            "whitespace-and-case.txt",
            " 1 IN :pcmu ;Opus , sr=16000,cbr;\r\n2 out:\tPCMU;",
        ),
        ("directive.txt", "1 to 2 : opus , ch = 2 ;3 TO 4:PCMU;"),
        (
            "directive-no-whitespace.txt",
            "1to2:PCMU;3 to 004:opus,ch=-2;",
        ),
        ("pattern-exclusions.txt", "*,!+1900*"),
        ("pattern-only-exclusions.txt", "!+1900*, !+1976*"),
        ("pattern-mixed.txt", "+14085551000,+44*,1000@pbx.example"),
        ("value-overflow.txt", "1 in: PCMU,sr=99999999999999999999;"),
        (
            "value-min.txt",
            "1 in: X,p=-9223372036854775808;|1 out: X,p=9223372036854775807;",
        ),
        ("bad-id.txt", "0 in: PCMU; 256 out: PCMU;"),
        ("repeated-stream.txt", "1 in: PCMU; 1 in: PCMA;"),
        ("truncated.txt", "1 in: PCMU"),
    ];
    for (name, text) in seeds {
        write(t, name, text.as_bytes());
    }
}

fn passport_seeds() {
    let t = "passport";
    let list = TnAuthList(vec![
        TnEntry::Spc("1234".into()),
        TnEntry::Range {
            start: "14085550000".into(),
            count: 1000,
        },
        TnEntry::One("14089529999".into()),
    ]);
    write(t, "tn-auth-list.der", &list.to_der());
    write(
        t,
        "tn-auth-list-one.der",
        &TnAuthList(vec![TnEntry::One("14085551000".into())]).to_der(),
    );
    let huge = TnAuthList(vec![TnEntry::Range {
        start: "1".into(),
        count: u64::MAX,
    }]);
    write(t, "tn-auth-list-huge-count.der", &huge.to_der());
    write(t, "tn-auth-list-truncated.der", &[0x30, 0x05, 0xa2]);

    // A certificate carrying a TNAuthList, whose key signs a passport.
    let kp = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["sti.example".to_owned()]).unwrap();
    let oid: Vec<u64> = TN_AUTH_LIST_OID
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    params
        .custom_extensions
        .push(rcgen::CustomExtension::from_oid_content(
            &oid,
            list.to_der(),
        ));
    let cert = params.self_signed(&kp).unwrap();
    write(t, "certificate.der", cert.der());

    use p256::pkcs8::DecodePrivateKey;
    let key = p256::ecdsa::SigningKey::from_pkcs8_der(&kp.serialize_der()).unwrap();
    let claims = Claims::new("+14085550001", "+14089529999", fuzzing::PASSPORT_NOW, "u-1");
    let jws = passport::sign(&claims, "https://sti.example/cert.der", &key);
    write(t, "passport.txt", jws.as_bytes());
    let mut parts = jws.split('.');
    let (h, c) = (parts.next().unwrap(), parts.next().unwrap());
    write(t, "passport-unsigned.txt", format!("{h}.{c}").as_bytes());
    write(
        t,
        "passport-bad-signature.txt",
        format!("{h}.{c}.AAAA").as_bytes(),
    );
    write(t, "passport-four-parts.txt", format!("{jws}.x").as_bytes());
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = b64.encode(br#"{"alg":"none","typ":"passport","x5u":"https://x"}"#);
    write(
        t,
        "passport-alg-none.txt",
        format!("{none}.{c}.").as_bytes(),
    );
}

fn main() {
    chunk_seeds();
    event_seeds();
    advertisement_seeds();
    passport_seeds();
}
