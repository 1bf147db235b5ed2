//! Advertisements, directives and negotiation (ript-profile §4, §9).
//!
//! ```text
//! advertisement = 1*( WS id WS ("in" / "out") WS ":" 1*( WS codec WS ";" ) ) WS
//! directive     = 1*( WS id WS "to" WS id WS ":" WS codec WS ";" ) WS
//! codec         = name *( WS "," WS param )
//! param         = pname [ WS "=" WS ["-"] 1*DIGIT ]
//! ```

use crate::Error;
use std::fmt;

/// `in` = sink (receives), `out` = source (sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamDir {
    In,
    Out,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    pub name: String,
    /// In the order written; values default to 1 when `=` is absent.
    pub params: Vec<(String, i64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamAd {
    pub id: u8,
    pub dir: StreamDir,
    pub codecs: Vec<Codec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Advertisement {
    pub streams: Vec<StreamAd>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectiveEntry {
    pub source: u8,
    pub sink: u8,
    pub codec: Codec,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Directive {
    pub entries: Vec<DirectiveEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Audio,
    Video,
    Other,
}

/// Names every implementation handles, in their registered spelling (ript-profile §4, §6).
const KNOWN: &[(&str, MediaKind)] = &[
    ("PCMU", MediaKind::Audio),
    ("PCMA", MediaKind::Audio),
    ("G722", MediaKind::Audio),
    ("G729", MediaKind::Audio),
    ("opus", MediaKind::Audio),
    ("CN", MediaKind::Audio),
    ("telephone-event", MediaKind::Audio),
    ("H264", MediaKind::Video),
    ("VP8", MediaKind::Video),
    ("AV1", MediaKind::Video),
];

pub fn media_kind(name: &str) -> MediaKind {
    KNOWN
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map_or(MediaKind::Other, |(_, k)| *k)
}

fn canonical_name(name: &str) -> String {
    KNOWN
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map_or_else(|| name.to_owned(), |(n, _)| (*n).to_owned())
}

/// ript-profile §9: `CN` and `telephone-event` ride on any audio stream, never as its codec.
fn is_auxiliary(name: &str) -> bool {
    name.eq_ignore_ascii_case("CN") || name.eq_ignore_ascii_case("telephone-event")
}

/// Default value of a parameter for a media kind (ript-profile §4); `None` = unknown param.
pub fn param_default(kind: MediaKind, pname: &str) -> Option<i64> {
    let p = pname.to_ascii_lowercase();
    let v = match (kind, p.as_str()) {
        (_, "br") => i64::MAX,
        (MediaKind::Audio, "sr") => 48000,
        (MediaKind::Audio, "ss") => 16,
        (MediaKind::Audio, "cbr") => 0,
        (MediaKind::Audio, "ch") => 1,
        (MediaKind::Audio, "ptime") => 30,
        (MediaKind::Video, "fps") => 30,
        (MediaKind::Video, "pr") => i64::MAX,
        (MediaKind::Video, "depth") => 8,
        (MediaKind::Video, "max-width" | "max-height") => i64::MAX,
        (MediaKind::Video, "tlay" | "slay") => 1,
        _ => return None,
    };
    Some(v)
}

impl Codec {
    pub fn new(name: &str) -> Self {
        Codec {
            name: canonical_name(name),
            params: vec![],
        }
    }

    pub fn with(mut self, pname: &str, value: i64) -> Self {
        self.params.push((pname.to_owned(), value));
        self
    }

    pub fn kind(&self) -> MediaKind {
        media_kind(&self.name)
    }

    pub fn param(&self, pname: &str) -> Option<i64> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(pname))
            .map(|(_, v)| *v)
    }

    /// The value in effect: stated, else the profile default.
    pub fn effective(&self, pname: &str) -> Option<i64> {
        self.param(pname)
            .or_else(|| param_default(self.kind(), pname))
    }

    fn same(&self, other: &Codec) -> bool {
        self.name.eq_ignore_ascii_case(&other.name)
    }
}

impl StreamAd {
    /// The stream's media type: that of its first codec of known type.
    pub fn kind(&self) -> MediaKind {
        self.codecs
            .iter()
            .map(Codec::kind)
            .find(|k| *k != MediaKind::Other)
            .unwrap_or(MediaKind::Other)
    }
}

// ---------------------------------------------------------------------------------------
// Parser

struct Cursor<'a> {
    s: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Cursor<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\r' | b'\n') = self.s.get(self.at) {
            self.at += 1;
        }
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }
    fn done(&self) -> bool {
        self.at >= self.s.len()
    }
    fn err(&self, expected: &'static str) -> Error {
        Error::Grammar {
            what: self.what,
            at: self.at,
            expected,
        }
    }
    fn expect(&mut self, b: u8, expected: &'static str) -> Result<(), Error> {
        if self.peek() == Some(b) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.err(expected))
        }
    }
    fn id(&mut self) -> Result<u8, Error> {
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) && self.at - start < 4 {
            self.at += 1;
        }
        let digits = self.s.get(start..self.at).unwrap_or_default();
        if digits.is_empty() || digits.len() > 3 {
            self.at = start;
            return Err(self.err("stream id 1..255"));
        }
        let v: u32 = digits.iter().fold(0, |a, d| a * 10 + u32::from(d - b'0'));
        match u8::try_from(v) {
            Ok(id) if id >= 1 => Ok(id),
            _ => {
                self.at = start;
                Err(self.err("stream id 1..255"))
            }
        }
    }
    fn name(&mut self) -> Result<&'a str, Error> {
        let start = self.at;
        if !self.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
            return Err(self.err("name"));
        }
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            self.at += 1;
        }
        let bytes = self.s.get(start..self.at).unwrap_or_default();
        std::str::from_utf8(bytes).map_err(|_| self.err("name"))
    }
    /// Matches the literal `w` (any case). Not a whole `name`: WS may be empty, so in
    /// `1to2:` the word `to` is directly followed by the sink id.
    fn word(&mut self, w: &'static str) -> Result<(), Error> {
        let end = self.at + w.len();
        match self.s.get(self.at..end) {
            Some(b) if b.eq_ignore_ascii_case(w.as_bytes()) => {
                self.at = end;
                Ok(())
            }
            _ => Err(self.err(w)),
        }
    }
    fn value(&mut self) -> Result<i64, Error> {
        let neg = self.peek() == Some(b'-');
        if neg {
            self.at += 1;
        }
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        let digits = self.s.get(start..self.at).unwrap_or_default();
        if digits.is_empty() {
            return Err(self.err("digits"));
        }
        let mut v: i64 = 0;
        for d in digits {
            let d = i64::from(d - b'0');
            v = v
                .checked_mul(10)
                .and_then(|v| {
                    if neg {
                        v.checked_sub(d)
                    } else {
                        v.checked_add(d)
                    }
                })
                .ok_or_else(|| self.err("a value that fits i64"))?;
        }
        Ok(v)
    }
    fn codec(&mut self) -> Result<Codec, Error> {
        let name = self.name()?;
        let mut codec = Codec::new(name);
        loop {
            let save = self.at;
            self.ws();
            if self.peek() != Some(b',') {
                self.at = save;
                return Ok(codec);
            }
            self.at += 1;
            self.ws();
            let pname = self.name()?.to_owned();
            let save = self.at;
            self.ws();
            let value = if self.peek() == Some(b'=') {
                self.at += 1;
                self.ws();
                self.value()?
            } else {
                self.at = save;
                1
            };
            codec.params.push((pname, value));
        }
    }
}

impl std::str::FromStr for Advertisement {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let mut c = Cursor {
            s: s.as_bytes(),
            at: 0,
            what: "advertisement",
        };
        let mut streams: Vec<StreamAd> = Vec::new();
        c.ws();
        while !c.done() {
            let id = c.id()?;
            c.ws();
            let dir = if c.word("in").is_ok() {
                StreamDir::In
            } else {
                c.word("out").map_err(|_| c.err("'in' or 'out'"))?;
                StreamDir::Out
            };
            c.ws();
            c.expect(b':', "':'")?;
            let mut codecs = Vec::new();
            loop {
                let save = c.at;
                c.ws();
                if !c.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
                    c.at = save;
                    break;
                }
                let codec = c.codec()?;
                c.ws();
                c.expect(b';', "';' after a codec")?;
                codecs.push(codec);
            }
            if codecs.is_empty() {
                return Err(c.err("at least one codec"));
            }
            if streams.iter().any(|st| st.id == id && st.dir == dir) {
                return Err(Error::Invalid {
                    what: "advertisement",
                    reason: "stream id repeated",
                });
            }
            streams.push(StreamAd { id, dir, codecs });
            c.ws();
        }
        if streams.is_empty() {
            return Err(c.err("a stream"));
        }
        Ok(Advertisement { streams })
    }
}

impl std::str::FromStr for Directive {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let mut c = Cursor {
            s: s.as_bytes(),
            at: 0,
            what: "directive",
        };
        let mut entries = Vec::new();
        c.ws();
        while !c.done() {
            let source = c.id()?;
            c.ws();
            c.word("to")?;
            c.ws();
            let sink = c.id()?;
            c.ws();
            c.expect(b':', "':'")?;
            c.ws();
            let codec = c.codec()?;
            c.ws();
            c.expect(b';', "';' after a codec")?;
            entries.push(DirectiveEntry {
                source,
                sink,
                codec,
            });
            c.ws();
        }
        // An empty directive is legal: nothing flows that way (e.g. no common codec).
        Ok(Directive { entries })
    }
}

// ---------------------------------------------------------------------------------------
// Canonical printer: `1 in: PCMU; opus,ch=2;` with single spaces, `=value` always written.

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for (n, v) in &self.params {
            write!(f, ",{n}={v}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Advertisement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, st) in self.streams.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            let dir = match st.dir {
                StreamDir::In => "in",
                StreamDir::Out => "out",
            };
            write!(f, "{} {dir}:", st.id)?;
            for c in &st.codecs {
                write!(f, " {c};")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Directive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{} to {}: {};", e.source, e.sink, e.codec)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Negotiation

/// The outcome of negotiation: what the client sends (`client`) and what the server sends
/// (`server`), each `source to sink: codec;`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Negotiated {
    pub client: Directive,
    pub server: Directive,
}

/// Runs the server side of ript-profile §4 negotiation.
pub fn negotiate(client: &Advertisement, server: &Advertisement) -> Negotiated {
    Negotiated {
        client: pair_up(client, server, false),
        server: pair_up(server, client, true),
    }
}

/// Pairs `senders`' sources with `receivers`' sinks. The codec order preference is always
/// the server's: for client sources that is the order in the server sink, for server
/// sources the order in the server source.
fn pair_up(
    senders: &Advertisement,
    receivers: &Advertisement,
    sender_is_server: bool,
) -> Directive {
    let mut sources: Vec<&StreamAd> = senders
        .streams
        .iter()
        .filter(|s| s.dir == StreamDir::Out)
        .collect();
    sources.sort_by_key(|s| s.id);
    let mut sinks: Vec<&StreamAd> = receivers
        .streams
        .iter()
        .filter(|s| s.dir == StreamDir::In)
        .collect();
    sinks.sort_by_key(|s| s.id);
    let mut used = vec![false; sinks.len()];
    let mut entries = Vec::new();
    for src in sources {
        for (i, sink) in sinks.iter().enumerate() {
            if used.get(i).copied().unwrap_or(true) || sink.kind() != src.kind() {
                continue;
            }
            let (pref, other) = if sender_is_server {
                (src, *sink)
            } else {
                (*sink, src)
            };
            let pick = pref
                .codecs
                .iter()
                .filter(|c| !is_auxiliary(&c.name))
                .find_map(|pc| {
                    other
                        .codecs
                        .iter()
                        .find(|oc| oc.same(pc))
                        .map(|oc| (pc, oc))
                });
            if let Some((a, b)) = pick {
                if let Some(slot) = used.get_mut(i) {
                    *slot = true;
                }
                entries.push(DirectiveEntry {
                    source: src.id,
                    sink: sink.id,
                    codec: merge(a, b),
                });
                break;
            }
        }
    }
    Directive { entries }
}

/// Every parameter = min of both (a side that omits one contributes its default), except
/// `cbr` = max; unknown parameters survive only when both state them; defaults not written.
fn merge(a: &Codec, b: &Codec) -> Codec {
    let kind = a.kind();
    let mut names: Vec<String> = Vec::new();
    for (n, _) in a.params.iter().chain(b.params.iter()) {
        if !names.iter().any(|x| x.eq_ignore_ascii_case(n)) {
            names.push(n.to_ascii_lowercase());
        }
    }
    let mut out = Codec {
        name: a.name.clone(),
        params: vec![],
    };
    for n in names {
        let default = param_default(kind, &n);
        let (va, vb) = match default {
            Some(d) => (a.param(&n).unwrap_or(d), b.param(&n).unwrap_or(d)),
            None => match (a.param(&n), b.param(&n)) {
                (Some(x), Some(y)) => (x, y),
                _ => continue,
            },
        };
        let v = if n == "cbr" { va.max(vb) } else { va.min(vb) };
        if Some(v) != default {
            out.params.push((n, v));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adv(s: &str) -> Advertisement {
        s.parse().unwrap()
    }

    #[test]
    fn parses_the_grammar_with_any_whitespace_and_case() {
        let a = adv(" 1 IN :pcmu ;Opus , sr=16000,cbr;\r\n2 out:\tPCMU;");
        assert_eq!(a.streams.len(), 2);
        assert_eq!(a.streams[0].dir, StreamDir::In);
        assert_eq!(a.streams[0].codecs[0].name, "PCMU");
        assert_eq!(
            a.streams[0].codecs[1].params,
            vec![("sr".into(), 16000), ("cbr".into(), 1)]
        );
        assert_eq!(
            a.to_string(),
            "1 in: PCMU; opus,sr=16000,cbr=1; 2 out: PCMU;"
        );
        assert_eq!(adv(&a.to_string()), a);
    }

    #[test]
    fn rejects_bad_advertisements_with_position() {
        for bad in [
            "",
            "0 in: PCMU;",
            "256 in: PCMU;",
            "1 up: PCMU;",
            "1 in PCMU;",
            "1 in: ;",
            "1 in: PCMU",
            "1 in: PCMU,sr=;",
            "1 in: PCMU,sr=99999999999999999999;",
            "1 in: PCMU; 1 in: PCMA;",
        ] {
            assert!(bad.parse::<Advertisement>().is_err(), "{bad:?}");
        }
        match "1 in: PCMU x".parse::<Advertisement>() {
            Err(Error::Grammar { at, .. }) => assert_eq!(at, 11),
            other => panic!("{other:?}"),
        }
        assert_eq!(adv("1 in: X,p=-5;").streams[0].codecs[0].params[0].1, -5);
    }

    #[test]
    fn directive_round_trip() {
        let d: Directive = "1 to 2 : opus , ch = 2 ;3 TO 4:PCMU;".parse().unwrap();
        assert_eq!(d.to_string(), "1 to 2: opus,ch=2; 3 to 4: PCMU;");
        assert_eq!(d.to_string().parse::<Directive>().unwrap(), d);
        assert!("1 to : PCMU;".parse::<Directive>().is_err());
    }

    #[test]
    fn words_need_no_whitespace_after_them() {
        // Regression (tests/properties.rs): WS may be empty, but `to2` was read as one name.
        let d: Directive = "1to2:PCMU;3TO004:opus;".parse().unwrap();
        assert_eq!(d.to_string(), "1 to 2: PCMU; 3 to 4: opus;");
        assert_eq!(
            adv("1in:PCMU;2out:opus;").to_string(),
            "1 in: PCMU; 2 out: opus;"
        );
        for bad in ["1 tox 2: PCMU;", "1 t: PCMU;", "1 int: PCMU;", "1 o: PCMU;"] {
            assert!(
                bad.parse::<Directive>().is_err() && bad.parse::<Advertisement>().is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn negotiation_pairs_lowest_sink_server_preference_and_min_params() {
        let client = adv("1 out: PCMU; opus,sr=24000,ptime=20; 2 in: opus; PCMU;");
        let server = adv("5 in: opus,cbr=1; PCMU; 3 in: PCMA; 4 in: opus; 9 out: PCMA; opus;");
        let n = negotiate(&client, &server);
        // Sink 3 (lowest) shares no codec; sink 4 is lower than 5 and shares opus.
        assert_eq!(n.client.to_string(), "1 to 4: opus,sr=24000,ptime=20;");
        // Server prefers PCMA on its source; the client sink lacks it, so opus.
        assert_eq!(n.server.to_string(), "9 to 2: opus;");
        let n2 = negotiate(
            &adv("1 out: opus,cbr=0,x=3;"),
            &adv("7 in: opus,cbr=1,x=5,y=2;"),
        );
        assert_eq!(n2.client.to_string(), "1 to 7: opus,cbr=1,x=3;");
    }

    #[test]
    fn aux_codecs_and_media_kinds_never_pair_alone() {
        let n = negotiate(
            &adv("1 out: telephone-event; CN; 2 out: H264;"),
            &adv("1 in: telephone-event; CN; PCMU; 2 in: PCMU; 3 in: H264;"),
        );
        assert_eq!(n.client.to_string(), "2 to 3: H264;");
        // Each sink serves one source.
        let n = negotiate(&adv("1 out: PCMU; 2 out: PCMU;"), &adv("1 in: PCMU;"));
        assert_eq!(n.client.entries.len(), 1);
        assert_eq!(n.client.entries[0].source, 1);
    }
}
