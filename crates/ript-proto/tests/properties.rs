#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Property tests of the codecs and grammars of the wire contract (ript-profile §3-§6, §8-§9):
//! round trips for generated valid values, and "never panics" for arbitrary input (the
//! latter mostly through the shared fuzz-target bodies of `ript_proto::fuzzing`, which also
//! check their invariants).

use proptest::collection::{btree_set, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use ript_proto::adv::{self, Advertisement, Codec, Directive, DirectiveEntry, MediaKind};
use ript_proto::adv::{StreamAd, StreamDir};
use ript_proto::chunk::{self, Ack, Chunk, Extender, MediaChunk, MediaDirection, MediaKey};
use ript_proto::chunk::{Package, PayloadType, Truncated};
use ript_proto::events::{Event, EventDecoder, EventDirection, EventEncoder, EventKind};
use ript_proto::fuzzing;
use ript_proto::model::Reason;
use ript_proto::passport::{self, Claims, TnAuthList, TnEntry};
use ript_proto::pattern::NumberPattern;
use ript_proto::{ChunkError, PassportError};

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(128)
}

// ---------------------------------------------------------------------------------------
// Media chunks (ript-profile §6, §9)

fn truncated() -> impl Strategy<Value = Truncated> {
    (any::<u64>(), 1u8..=8).prop_map(|(v, len)| Truncated::short(v, len))
}

fn extensions() -> impl Strategy<Value = Vec<(u64, Vec<u8>)>> {
    let tag = prop_oneof![64u64..=300, 64u64..=chunk::VARINT_MAX];
    vec((tag, vec(any::<u8>(), 0..12)), 0..4)
}

fn clear_package() -> impl Strategy<Value = Package> {
    (vec(any::<u8>(), 0..64), extensions())
        .prop_map(|(media, extensions)| Package::Clear { media, extensions })
}

fn media_chunk_with(package: impl Strategy<Value = Package>) -> impl Strategy<Value = MediaChunk> {
    let ids = (
        truncated(),
        option::of(truncated()),
        any::<u32>(),
        any::<u8>(),
        any::<u8>(),
    );
    let flags = (
        any::<bool>(),
        any::<bool>(),
        option::of(any::<u8>()),
        option::of(any::<u8>()),
        option::of(0u8..=127),
    );
    (ids, flags, extensions(), package).prop_map(
        |(
            (seq, timestamp, pt, source, sink),
            (marker, reference, spatial, temporal, audio_level),
            extensions,
            package,
        )| MediaChunk {
            seq,
            timestamp,
            payload_type: PayloadType(pt),
            source,
            sink,
            marker,
            reference,
            spatial,
            temporal,
            audio_level,
            extensions,
            package,
        },
    )
}

fn direction() -> impl Strategy<Value = MediaDirection> {
    prop_oneof![Just(MediaDirection::C2s), Just(MediaDirection::S2c)]
}

fn ack() -> impl Strategy<Value = Ack> {
    (
        direction(),
        any::<u8>(),
        any::<u8>(),
        any::<u64>(),
        option::of(any::<u64>()),
    )
        .prop_map(|(direction, source, sink, seq, receive_time)| Ack {
            direction,
            source,
            sink,
            seq,
            receive_time,
        })
}

fn any_chunk() -> impl Strategy<Value = Chunk> {
    let package = prop_oneof![
        4 => clear_package(),
        1 => vec(any::<u8>(), 0..48).prop_map(Package::Sealed),
    ];
    prop_oneof![
        3 => media_chunk_with(package).prop_map(Chunk::Media),
        1 => ack().prop_map(Chunk::Ack),
    ]
}

/// Bytes shaped like TLV lists: mostly known tags with short values, so the decoder's
/// checks (lengths, repeats, order, kinds) are reached far more often than with noise.
fn tlv_soup() -> impl Strategy<Value = Vec<u8>> {
    let tlv = (
        prop_oneof![0u64..=20, 60u64..=70, Just(chunk::VARINT_MAX)],
        vec(any::<u8>(), 0..10),
    );
    vec(vec(tlv, 0..10), 1..4).prop_map(|frames| {
        let mut body = Vec::new();
        for tlvs in frames {
            let mut c = Vec::new();
            for (t, v) in tlvs {
                chunk::put_varint(&mut c, t);
                chunk::put_varint(&mut c, v.len() as u64);
                c.extend(v);
            }
            chunk::put_varint(&mut body, c.len() as u64);
            body.extend(c);
        }
        body
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn chunks_round_trip_through_a_multi_frame_body(chunks in vec(any_chunk(), 1..6)) {
        let mut body = Vec::new();
        for c in &chunks {
            c.encode_frame(&mut body);
        }
        let got: Vec<_> = chunk::frames(&body).collect();
        let want: Vec<_> = chunks.iter().cloned().map(Ok).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(chunk::raw_frames(&body).count(), chunks.len());
    }

    #[test]
    fn sealed_chunks_open_to_their_package(
        m in media_chunk_with(clear_package()),
        key in any::<[u8; 16]>(),
        dir in direction(),
        full_seq in any::<u64>(),
    ) {
        let key = MediaKey::new(&key).unwrap();
        let mut body = Vec::new();
        m.encode_frame(&mut body, Some((&key, dir, full_seq)));
        let raw = chunk::raw_frames(&body).next().unwrap();
        let Ok(Chunk::Media(d)) = chunk::decode_chunk(raw) else {
            panic!("sealed chunk does not decode: {:?}", chunk::decode_chunk(raw));
        };
        prop_assert!(matches!(d.package, Package::Sealed(_)));
        let mut envelope = d.clone();
        envelope.package = m.package.clone();
        prop_assert_eq!(&envelope, &m, "the envelope is carried in clear");
        let Package::Clear { media, extensions } = m.package.clone() else { unreachable!() };
        prop_assert_eq!(chunk::open(raw, &key, dir, full_seq), Ok((media, extensions)));
        let other = match dir {
            MediaDirection::C2s => MediaDirection::S2c,
            MediaDirection::S2c => MediaDirection::C2s,
        };
        prop_assert_eq!(chunk::open(raw, &key, other, full_seq), Err(ChunkError::Unseal));
        prop_assert_eq!(
            chunk::open(raw, &key, dir, full_seq.wrapping_add(1)),
            Err(ChunkError::Unseal)
        );
    }

    #[test]
    fn extender_recovers_values_near_the_last_one(
        start in any::<u64>(),
        len in 2u8..=7,
        steps in vec(-100i64..=100, 1..30),
    ) {
        let mut x = Extender::default();
        prop_assert_eq!(x.extend(Truncated::full(start)), Some(start));
        let mut v = start;
        for d in steps {
            v = v.saturating_add_signed(d);
            prop_assert_eq!(x.extend(Truncated::short(v, len)), Some(v));
        }
    }

    #[test]
    fn extender_never_panics(last in any::<u64>(), value in any::<u64>(), len in any::<u8>()) {
        let mut x = Extender::default();
        x.extend(Truncated::full(last));
        // The fields are public: the extender must survive any pair, not only `short`'s.
        let _ = x.extend(Truncated { value, len });
    }

    #[test]
    fn extender_peek_then_commit_is_extend(
        inputs in vec((any::<u64>(), 1u8..=9), 1..20),
    ) {
        let mut a = Extender::default();
        let mut b = Extender::default();
        for (value, len) in inputs {
            let t = if len > 8 { Truncated { value, len } } else { Truncated::short(value, len) };
            let before = b;
            let peeked = b.peek(t);
            prop_assert_eq!(b, before);
            if let Some(v) = peeked {
                b.commit(t, v);
            }
            prop_assert_eq!(a.extend(t), peeked);
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn chunk_decoding_never_panics(bytes in vec(any::<u8>(), 0..256), seq in any::<u64>()) {
        let _ = chunk::frames(&bytes).count();
        let _ = chunk::decode_chunk(&bytes);
        let key = MediaKey::new(&fuzzing::CHUNK_KEY).unwrap();
        let _ = chunk::open(&bytes, &key, MediaDirection::C2s, seq);
        prop_assert_eq!(fuzzing::chunk_frames(&bytes), Ok(()));
    }

    #[test]
    fn tlv_shaped_bodies_keep_the_codec_invariants(body in tlv_soup()) {
        prop_assert_eq!(fuzzing::chunk_frames(&body), Ok(()));
    }
}

// ---------------------------------------------------------------------------------------
// Advertisements and directives (ript-profile §4)

const REGISTERED: &[&str] = &[
    "PCMU",
    "PCMA",
    "G722",
    "G729",
    "opus",
    "CN",
    "telephone-event",
    "H264",
    "VP8",
    "AV1",
];

/// `name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." )`
fn gname() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9_.-]{0,10}"
}

/// Registered names in their registered spelling, or names no registered one matches
/// case-insensitively (those are canonicalised by the parser, so they would not round trip
/// in another spelling).
fn codec_name() -> impl Strategy<Value = String> {
    prop_oneof![
        select(REGISTERED).prop_map(str::to_owned),
        gname().prop_filter("registered names are canonicalised", |n| {
            adv::media_kind(n) == MediaKind::Other
        }),
    ]
}

fn codec() -> impl Strategy<Value = Codec> {
    (codec_name(), vec((gname(), any::<i64>()), 0..4))
        .prop_map(|(name, params)| Codec { name, params })
}

fn advertisement() -> impl Strategy<Value = Advertisement> {
    btree_set((any::<bool>(), 1u8..=255), 1..6)
        .prop_flat_map(|keys| {
            let n = keys.len();
            let keys: Vec<_> = keys.into_iter().collect();
            (Just(keys).prop_shuffle(), vec(vec(codec(), 1..4), n))
        })
        .prop_map(|(keys, codecs)| Advertisement {
            streams: keys
                .into_iter()
                .zip(codecs)
                .map(|((out, id), codecs)| StreamAd {
                    id,
                    dir: if out { StreamDir::Out } else { StreamDir::In },
                    codecs,
                })
                .collect(),
        })
}

fn directive() -> impl Strategy<Value = Directive> {
    vec((1u8..=255, 1u8..=255, codec()), 0..5).prop_map(|entries| Directive {
        entries: entries
            .into_iter()
            .map(|(source, sink, codec)| DirectiveEntry {
                source,
                sink,
                codec,
            })
            .collect(),
    })
}

/// Choices for rendering a value with the grammar's freedom: any WS (possibly none) between
/// tokens, any case for words and registered names, `=1` omitted, ids with leading zeros.
#[derive(Debug, Clone)]
struct Noise {
    ws: Vec<String>,
    bits: Vec<bool>,
    i: usize,
    j: usize,
}

fn noise() -> impl Strategy<Value = Noise> {
    (vec("[ \t\r\n]{0,2}", 1..16), vec(any::<bool>(), 1..16)).prop_map(|(ws, bits)| Noise {
        ws,
        bits,
        i: 0,
        j: 0,
    })
}

impl Noise {
    fn ws(&mut self) -> String {
        self.i += 1;
        self.ws[self.i % self.ws.len()].clone()
    }
    fn bit(&mut self) -> bool {
        self.j += 1;
        self.bits[self.j % self.bits.len()]
    }
    fn case(&mut self, w: &str) -> String {
        w.chars()
            .map(|c| {
                if self.bit() {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect()
    }
    fn id(&mut self, id: u8) -> String {
        if self.bit() {
            format!("{id:03}")
        } else {
            id.to_string()
        }
    }
    fn codec(&mut self, c: &Codec) -> String {
        let mut s = if REGISTERED.contains(&c.name.as_str()) {
            self.case(&c.name)
        } else {
            c.name.clone()
        };
        for (n, v) in &c.params {
            s += &format!("{},{}{n}", self.ws(), self.ws());
            if *v != 1 || self.bit() {
                s += &format!("{}={}{v}", self.ws(), self.ws());
            }
        }
        s
    }
    fn advertisement(&mut self, a: &Advertisement) -> String {
        let mut s = String::new();
        for st in &a.streams {
            let dir = match st.dir {
                StreamDir::In => "in",
                StreamDir::Out => "out",
            };
            s += &format!(
                "{}{}{}{}{}:",
                self.ws(),
                self.id(st.id),
                self.ws(),
                self.case(dir),
                self.ws()
            );
            for c in &st.codecs {
                s += &format!("{}{}{};", self.ws(), self.codec(c), self.ws());
            }
        }
        s + &self.ws()
    }
    fn directive(&mut self, d: &Directive) -> String {
        let mut s = String::new();
        for e in &d.entries {
            s += &format!(
                "{}{}{}{}{}{}{}:{}{}{};",
                self.ws(),
                self.id(e.source),
                self.ws(),
                self.case("to"),
                self.ws(),
                self.id(e.sink),
                self.ws(),
                self.ws(),
                self.codec(&e.codec),
                self.ws()
            );
        }
        s + &self.ws()
    }
}

/// Strings over the grammar's alphabet, with its words as tokens.
fn grammar_soup() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        select(
            &[
                "in",
                "out",
                "to",
                "IN",
                "To",
                "1",
                "2",
                "255",
                "256",
                "0",
                "001",
                "opus",
                "PCMU",
                "pcma",
                "CN",
                "telephone-event",
                "H264",
                "sr",
                "cbr",
                "x",
                ":",
                ";",
                ",",
                "=",
                "-",
                "*",
                "!",
                "+",
                " ",
                "\t",
                "\r\n",
                "|",
                "@",
                "+1408",
                "+1900*",
                "1000@pbx.example",
            ][..]
        )
        .prop_map(str::to_owned),
        "[0-9a-z,;:=*!+ \t-]{1,3}",
    ];
    vec(token, 0..24).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn advertisements_round_trip_through_display(a in advertisement()) {
        let s = a.to_string();
        prop_assert_eq!(s.parse::<Advertisement>().unwrap(), a);
    }

    #[test]
    fn advertisements_parse_with_any_whitespace_and_case(a in advertisement(), mut n in noise()) {
        let s = n.advertisement(&a);
        let got = s.parse::<Advertisement>();
        prop_assert!(got.as_ref().is_ok_and(|g| *g == a), "{:?} parsed as {:?}", s, got);
    }

    #[test]
    fn directives_round_trip_through_display(d in directive()) {
        prop_assert_eq!(d.to_string().parse::<Directive>().unwrap(), d);
    }

    #[test]
    fn directives_parse_with_any_whitespace_and_case(d in directive(), mut n in noise()) {
        let s = n.directive(&d);
        let got = s.parse::<Directive>();
        prop_assert!(got.as_ref().is_ok_and(|g| *g == d), "{:?} parsed as {:?}", s, got);
    }

    #[test]
    fn negotiation_of_generated_advertisements_keeps_its_invariants(
        client in advertisement(),
        server in advertisement(),
    ) {
        prop_assert_eq!(fuzzing::advertisement(format!("{client}|{server}").as_bytes()), Ok(()));
    }

    #[test]
    fn grammar_parsers_never_panic_on_arbitrary_text(s in any::<String>()) {
        let _ = s.parse::<Advertisement>();
        let _ = s.parse::<Directive>();
        let _ = s.parse::<NumberPattern>();
        prop_assert_eq!(fuzzing::advertisement(s.as_bytes()), Ok(()));
    }

    #[test]
    fn grammar_parsers_never_panic_on_grammar_shaped_text(s in grammar_soup()) {
        let _ = s.parse::<Advertisement>();
        let _ = s.parse::<Directive>();
        let _ = s.parse::<NumberPattern>();
        prop_assert_eq!(fuzzing::advertisement(s.as_bytes()), Ok(()));
    }
}

// ---------------------------------------------------------------------------------------
// Number patterns (ript-profile §3)

#[derive(Debug, Clone)]
enum Entry {
    Any,
    Exact(String),
    Prefix(String),
}

impl Entry {
    fn text(&self) -> String {
        match self {
            Entry::Any => "*".to_owned(),
            Entry::Exact(n) => n.clone(),
            Entry::Prefix(p) => format!("{p}*"),
        }
    }
    /// The profile's rule, written independently of the library.
    fn matches(&self, number: &str) -> bool {
        match self {
            Entry::Any => true,
            Entry::Exact(n) => n == number,
            Entry::Prefix(p) => e164(number) && number.starts_with(p.as_str()),
        }
    }
}

/// `+` and 1 to 15 ASCII digits (ript-profile §3), spelled out without the library.
fn e164(number: &str) -> bool {
    let mut chars = number.chars();
    let digits = chars.clone().skip(1).count();
    chars.next() == Some('+') && (1..=15).contains(&digits) && chars.all(|c| c.is_ascii_digit())
}

fn pattern_entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        1 => Just(Entry::Any),
        3 => "\\+[0-9]{1,15}".prop_map(Entry::Exact),
        3 => "\\+[0-9]{0,15}".prop_map(Entry::Prefix),
        2 => "[A-Za-z0-9._-][A-Za-z0-9+._-]{0,8}@[A-Za-z0-9.:\\[\\]-]{1,10}".prop_map(Entry::Exact),
    ]
}

type PatternItem = (bool, Entry, String, String, String);

fn pattern_items() -> impl Strategy<Value = Vec<PatternItem>> {
    let ws = || "[ \t\r\n]{0,2}";
    vec((any::<bool>(), pattern_entry(), ws(), ws(), ws()), 1..6)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn number_patterns_round_trip_and_match_like_the_profile(
        items in pattern_items(),
        extra in "\\+[0-9]{1,15}",
    ) {
        let text: Vec<String> = items
            .iter()
            .map(|(excl, e, before, bang, after)| {
                let bang = if *excl { format!("!{bang}") } else { String::new() };
                format!("{before}{bang}{}{after}", e.text())
            })
            .collect();
        let text = text.join(",");
        let p: NumberPattern = text.parse().unwrap();
        let include: Vec<&Entry> = items.iter().filter(|i| !i.0).map(|i| &i.1).collect();
        let exclude: Vec<&Entry> = items.iter().filter(|i| i.0).map(|i| &i.1).collect();
        let canonical: Vec<String> = include
            .iter()
            .map(|e| e.text())
            .chain(exclude.iter().map(|e| format!("!{}", e.text())))
            .collect();
        let canonical = canonical.join(",");
        prop_assert_eq!(p.to_string(), canonical.clone());
        prop_assert_eq!(canonical.parse::<NumberPattern>().unwrap(), p.clone());
        let mut numbers = vec![extra];
        for (_, e, ..) in &items {
            if let Entry::Exact(n) | Entry::Prefix(n) = e {
                numbers.push(n.clone());
                numbers.push(format!("{n}5"));
                // Not E.164, yet starting with the prefix: a prefix must not match these.
                numbers.push(format!("{n}@evil.example"));
                numbers.push(format!("{n}5@evil.example"));
            }
        }
        for n in &numbers {
            let want = (include.is_empty() || include.iter().any(|e| e.matches(n)))
                && !exclude.iter().any(|e| e.matches(n));
            prop_assert_eq!(p.matches(n), want, "{} against {}", n, text);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Event byways (ript-profile §5)

/// Strings that stress the decoder's string and nesting tracking.
fn tricky() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\"{}\\[\\]\\\\,:/a-z \u{e9}\u{2028}\u{1F600}\u{0}\u{1f}]{0,16}",
    ]
}

fn event_kind() -> impl Strategy<Value = EventKind> {
    let known = select(
        &[
            "proceeding",
            "alerting",
            "answered",
            "declined",
            "failed",
            "noanswer",
            "end",
            "migrate",
            "ping",
            "pong",
            "media-panic",
            "handler-changed",
        ][..],
    )
    .prop_map(EventKind::from_name);
    // Unknown names decode as `Other`; a known name never does.
    let other = tricky().prop_filter_map("known names decode as their kind", |s| {
        matches!(EventKind::from_name(&s), EventKind::Other(_)).then_some(EventKind::Other(s))
    });
    prop_oneof![known, other]
}

fn event() -> impl Strategy<Value = Event> {
    let reason = option::of(
        (option::of(any::<u16>()), option::of(tricky()))
            .prop_map(|(sip, text)| Reason { sip, text }),
    );
    (
        prop_oneof![Just(EventDirection::C2s), Just(EventDirection::S2c)],
        (tricky(), tricky(), event_kind()),
        reason,
        (
            option::of(tricky()),
            option::of(tricky()),
            option::of(tricky()),
        ),
    )
        .prop_map(
            |(direction, (timestamp, call, event), reason, (uri, nonce, handler))| Event {
                direction,
                timestamp,
                call,
                event,
                reason,
                uri,
                nonce,
                handler,
            },
        )
}

/// Bytes over the JSON structural alphabet, so the decoder's phases are all reached.
fn json_soup() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        select(
            &[
                "[",
                "]",
                "{",
                "}",
                "\"",
                "\\",
                ",",
                ":",
                " ",
                "\n",
                "\"direction\":\"c2s\"",
                "\"timestamp\":\"t\"",
                "\"call\":\"c\"",
                "\"event\":\"end\"",
                "1",
                "null",
                "\u{e9}",
            ][..]
        )
        .prop_map(|t| t.as_bytes().to_vec()),
        vec(any::<u8>(), 1..3),
    ];
    vec(token, 0..40).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn events_round_trip_split_anywhere(
        events in vec(event(), 0..4),
        cuts in vec(any::<Index>(), 2..=3),
        close in any::<bool>(),
    ) {
        let mut enc = EventEncoder::default();
        let mut wire = enc.open().to_vec();
        for e in &events {
            wire.extend(enc.encode(e));
        }
        if close {
            wire.extend_from_slice(enc.close());
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        cuts.sort_unstable();
        let mut d = EventDecoder::new();
        let mut got = Vec::new();
        let mut at = 0;
        for cut in cuts.into_iter().chain([wire.len()]) {
            got.extend(d.feed(&wire[at..cut]).unwrap());
            at = cut;
        }
        prop_assert_eq!(got, events);
        prop_assert_eq!(d.is_closed(), close);
        prop_assert!(d.finish().is_ok());
    }

    #[test]
    fn event_decoding_never_panics_and_ignores_split_points(
        bytes in prop_oneof![vec(any::<u8>(), 0..256), json_soup()],
        split in any::<Index>(),
    ) {
        let split = split.index(bytes.len() + 1);
        let mut d = EventDecoder::new();
        let _ = d.feed(&bytes[..split]);
        let _ = d.feed(&bytes[split..]);
        let _ = d.finish();
        // The fuzz body splits at its first byte's value and checks split invariance.
        let mut data = vec![u8::try_from(split).unwrap_or(u8::MAX)];
        data.extend(&bytes);
        prop_assert_eq!(fuzzing::event_stream(&data), Ok(()));
    }
}

// ---------------------------------------------------------------------------------------
// PASSporT and TNAuthList (ript-profile §8)

fn tn_entry() -> impl Strategy<Value = TnEntry> {
    prop_oneof![
        "[ -~]{0,12}".prop_map(TnEntry::Spc),
        "[ -~]{0,12}".prop_map(TnEntry::One),
        ("[0-9]{1,15}", any::<u64>()).prop_map(|(start, count)| TnEntry::Range { start, count }),
    ]
}

/// Bytes shaped like DER: the TNAuthList tags with consistent short lengths, mostly.
fn der_soup() -> impl Strategy<Value = Vec<u8>> {
    let node = (
        select(&[0x30u8, 0xa0, 0xa1, 0xa2, 0x16, 0x02, 0x04][..]),
        vec(any::<u8>(), 0..12),
        any::<bool>(),
    );
    vec(node, 1..6).prop_map(|nodes| {
        // Nest from the innermost out; `wrap` = contain everything so far, else append.
        let mut out: Vec<u8> = Vec::new();
        for (tag, value, wrap) in nodes.into_iter().rev() {
            let body = if wrap {
                std::mem::take(&mut out)
            } else {
                value
            };
            let mut node = vec![tag, body.len() as u8];
            node.extend(body);
            out.splice(0..0, node);
        }
        out
    })
}

fn fixed_signing_key() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[0x42; 32]).unwrap()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn tn_auth_lists_round_trip_through_der(entries in vec(tn_entry(), 1..5)) {
        let list = TnAuthList(entries);
        prop_assert_eq!(TnAuthList::from_der(&list.to_der()), Some(list));
    }

    #[test]
    fn tn_auth_list_parsing_never_panics(
        bytes in prop_oneof![vec(any::<u8>(), 0..128), der_soup()],
    ) {
        let _ = TnAuthList::from_der(&bytes);
        prop_assert_eq!(fuzzing::passport(&bytes), Ok(()));
    }

    #[test]
    fn passports_never_verify_without_a_chain(s in any::<String>()) {
        prop_assert!(passport::verify(&s, &[], &[], fuzzing::PASSPORT_NOW).is_err());
        prop_assert_eq!(fuzzing::passport(s.as_bytes()), Ok(()));
    }

    #[test]
    fn signed_passports_parse_but_need_a_certificate(
        orig in "\\+?[0-9]{1,15}",
        dest in "\\+?[0-9]{1,15}",
        iat in any::<u64>(),
        origid in tricky(),
        x5u in "https://[a-z]{1,10}\\.example/[ -~]{0,20}",
        at in any::<Index>(),
        junk in tricky(),
    ) {
        let claims = Claims::new(&orig, &dest, iat, &origid);
        let jws = passport::sign(&claims, &x5u, &fixed_signing_key());
        prop_assert_eq!(passport::x5u(&jws), Ok(x5u));
        prop_assert_eq!(
            passport::verify(&jws, &[], &[], fuzzing::PASSPORT_NOW),
            Err(PassportError::Certificate)
        );
        // `jws` is ASCII: every index is a char boundary.
        let mut broken = jws.clone();
        broken.insert_str(at.index(jws.len() + 1), &junk);
        prop_assert!(passport::verify(&broken, &[], &[], fuzzing::PASSPORT_NOW).is_err());
        prop_assert_eq!(fuzzing::passport(broken.as_bytes()), Ok(()));
    }
}
