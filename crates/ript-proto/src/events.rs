//! Signaling byway events and the streaming-JSON codec (ript-profile §5).

use crate::model::Reason;
use crate::{StreamError, limits};
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventDirection {
    #[serde(rename = "c2s")]
    C2s,
    #[serde(rename = "s2c")]
    S2c,
}

/// Event names; unknown ones are kept so they can be logged and ignored (ript-profile §9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Proceeding,
    Alerting,
    Answered,
    Declined,
    Failed,
    Noanswer,
    End,
    Migrate,
    Ping,
    Pong,
    MediaPanic,
    HandlerChanged,
    Other(String),
}

const NAMES: &[(&str, EventKind)] = &[
    ("proceeding", EventKind::Proceeding),
    ("alerting", EventKind::Alerting),
    ("answered", EventKind::Answered),
    ("declined", EventKind::Declined),
    ("failed", EventKind::Failed),
    ("noanswer", EventKind::Noanswer),
    ("end", EventKind::End),
    ("migrate", EventKind::Migrate),
    ("ping", EventKind::Ping),
    ("pong", EventKind::Pong),
    ("media-panic", EventKind::MediaPanic),
    ("handler-changed", EventKind::HandlerChanged),
];

impl EventKind {
    pub fn name(&self) -> &str {
        match self {
            EventKind::Other(s) => s,
            k => NAMES.iter().find(|(_, n)| n == k).map_or("", |(s, _)| s),
        }
    }

    pub fn from_name(s: &str) -> Self {
        NAMES
            .iter()
            .find(|(n, _)| *n == s)
            .map_or_else(|| EventKind::Other(s.to_owned()), |(_, k)| k.clone())
    }

    /// States of a call: the events the call description's `state` names.
    pub fn is_state(&self) -> bool {
        matches!(
            self,
            EventKind::Proceeding
                | EventKind::Alerting
                | EventKind::Answered
                | EventKind::Declined
                | EventKind::Failed
                | EventKind::Noanswer
                | EventKind::End
        )
    }

    pub fn is_final(&self) -> bool {
        matches!(
            self,
            EventKind::Declined | EventKind::Failed | EventKind::Noanswer | EventKind::End
        )
    }

    /// Events only a server may send (ript-profile §5; `proceeding` is allowed from a
    /// client in the inbound extension, so it is not in this list).
    pub fn is_server_only(&self) -> bool {
        matches!(
            self,
            EventKind::Alerting
                | EventKind::Answered
                | EventKind::Declined
                | EventKind::Failed
                | EventKind::Noanswer
                | EventKind::Migrate
                | EventKind::Pong
                | EventKind::MediaPanic
                | EventKind::HandlerChanged
        )
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(EventKind::from_name(&s))
    }
}

/// One event object on a signaling byway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub direction: EventDirection,
    pub timestamp: String,
    pub call: String,
    pub event: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
}

impl Event {
    pub fn new(direction: EventDirection, epoch_ms: u64, call: &str, event: EventKind) -> Self {
        Event {
            direction,
            timestamp: crate::timestamp::format_ms(epoch_ms),
            call: call.to_owned(),
            event,
            reason: None,
            uri: None,
            nonce: None,
            handler: None,
        }
    }

    pub fn with_reason(mut self, reason: Option<Reason>) -> Self {
        self.reason = reason;
        self
    }
}

/// Writes the endless JSON array: `[` first, then `obj`, `,\nobj`, ... and `]` at the end.
#[derive(Debug, Default)]
pub struct EventEncoder {
    opened: bool,
    count: u64,
}

impl EventEncoder {
    /// The bytes that open the array, sent right after the headers.
    pub fn open(&mut self) -> &'static [u8] {
        self.opened = true;
        b"[\n"
    }

    /// One event (with its separator); opens the array first if that was not done.
    pub fn encode(&mut self, ev: &Event) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        if !self.opened {
            out.extend_from_slice(self.open());
        }
        if self.count > 0 {
            out.push(b',');
        }
        // Serialising a struct of strings and integers cannot fail.
        out.extend_from_slice(&serde_json::to_vec(ev).unwrap_or_default());
        out.push(b'\n');
        self.count += 1;
        out
    }

    pub fn close(&mut self) -> &'static [u8] {
        if self.opened { b"]" } else { b"[]" }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    BeforeArray,
    BeforeFirst,
    BeforeObject,
    InObject,
    AfterObject,
    Closed,
}

/// Incremental decoder: feed it bytes as they arrive, split anywhere; it yields complete
/// events. Its buffer never holds more than one object (capped at 64 KiB).
#[derive(Debug)]
pub struct EventDecoder {
    phase: Phase,
    buf: Vec<u8>,
    depth: u32,
    in_string: bool,
    escaped: bool,
    max_object: usize,
    failed: Option<StreamError>,
}

impl Default for EventDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl EventDecoder {
    pub fn new() -> Self {
        Self::with_limit(limits::EVENT_OBJECT)
    }

    pub fn with_limit(max_object: usize) -> Self {
        EventDecoder {
            phase: Phase::BeforeArray,
            buf: Vec::new(),
            depth: 0,
            in_string: false,
            escaped: false,
            max_object,
            failed: None,
        }
    }

    /// True once the closing `]` was seen.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Feeds bytes; returns the events completed by them. After an error the byway is
    /// unusable (the caller resets it) and every later call returns the same error.
    ///
    /// Events completed before a bad byte in the same chunk are not lost: if there are any,
    /// this call returns `Ok(those events)` and remembers the error, which the next `feed`
    /// and [`Self::finish`] return. Only a chunk that completes no event before its error
    /// returns `Err` at once. (So after processing an `Ok`, a caller that must notice the
    /// failure promptly checks [`Self::error`] or calls `finish`.)
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Event>, StreamError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut out = Vec::new();
        match self.feed_inner(bytes, &mut out) {
            Ok(()) => Ok(out),
            Err(e) => {
                self.failed = Some(e.clone());
                if out.is_empty() { Err(e) } else { Ok(out) }
            }
        }
    }

    /// The error this decoder failed with, if it did (also when `feed` still returned the
    /// events completed before it).
    pub fn error(&self) -> Option<&StreamError> {
        self.failed.as_ref()
    }

    /// The peer ended its body: fine between objects, an error inside one (or after a
    /// remembered error, that error).
    pub fn finish(&self) -> Result<(), StreamError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.phase {
            Phase::InObject => Err(StreamError::Truncated),
            _ => Ok(()),
        }
    }

    fn feed_inner(&mut self, bytes: &[u8], out: &mut Vec<Event>) -> Result<(), StreamError> {
        for &b in bytes {
            let ws = matches!(b, b' ' | b'\t' | b'\r' | b'\n');
            match self.phase {
                Phase::BeforeArray => match b {
                    _ if ws => {}
                    b'[' => self.phase = Phase::BeforeFirst,
                    _ => return Err(StreamError::NoArrayStart(b)),
                },
                Phase::BeforeFirst | Phase::BeforeObject => match b {
                    _ if ws => {}
                    b']' if self.phase == Phase::BeforeFirst => self.phase = Phase::Closed,
                    b'{' => {
                        self.phase = Phase::InObject;
                        self.depth = 1;
                        self.buf.clear();
                        self.buf.push(b);
                    }
                    _ => return Err(StreamError::NotAnObject(b)),
                },
                Phase::InObject => {
                    if self.buf.len() >= self.max_object {
                        return Err(StreamError::ObjectTooLarge(self.max_object));
                    }
                    self.buf.push(b);
                    if self.in_string {
                        if self.escaped {
                            self.escaped = false;
                        } else if b == b'\\' {
                            self.escaped = true;
                        } else if b == b'"' {
                            self.in_string = false;
                        }
                        continue;
                    }
                    match b {
                        b'"' => self.in_string = true,
                        b'{' | b'[' => self.depth += 1,
                        b'}' | b']' => {
                            self.depth = self.depth.saturating_sub(1);
                            if self.depth == 0 {
                                let ev: Event = serde_json::from_slice(&self.buf)
                                    .map_err(|e| StreamError::BadObject(e.to_string()))?;
                                out.push(ev);
                                self.buf.clear();
                                self.phase = Phase::AfterObject;
                            }
                        }
                        _ => {}
                    }
                }
                Phase::AfterObject => match b {
                    _ if ws => {}
                    b',' => self.phase = Phase::BeforeObject,
                    b']' => self.phase = Phase::Closed,
                    _ => return Err(StreamError::BadSeparator(b)),
                },
                Phase::Closed => {
                    if !ws {
                        return Err(StreamError::TrailingData);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind) -> Event {
        Event::new(
            EventDirection::S2c,
            1_795_460_220_123,
            "https://gw/calls/1",
            kind,
        )
    }

    #[test]
    fn encoder_output_decodes_at_every_split_point() {
        let mut enc = EventEncoder::default();
        let mut wire = enc.open().to_vec();
        let mut e3 = ev(EventKind::Declined).with_reason(Some(Reason::sip(486, "Busy \"Here\" }")));
        e3.uri = Some("x{[".into());
        let events = vec![
            ev(EventKind::Proceeding),
            ev(EventKind::Other("x-new".into())),
            e3,
        ];
        for e in &events {
            wire.extend(enc.encode(e));
        }
        wire.extend_from_slice(enc.close());
        for split in 0..wire.len() {
            let mut d = EventDecoder::new();
            let mut got = d.feed(&wire[..split]).unwrap();
            got.extend(d.feed(&wire[split..]).unwrap());
            assert_eq!(got, events, "split at {split}");
            assert!(d.is_closed());
        }
    }

    #[test]
    fn accepts_any_json_whitespace_and_unknown_fields() {
        let mut d = EventDecoder::new();
        let s = " \r\n[ {\"direction\":\"c2s\",\"timestamp\":\"t\",\"call\":\"c\",\"event\":\"ping\",\
                 \"nonce\":\"7\",\"extra\":{\"a\":[1,2]}}\t,\n";
        let got = d.feed(s.as_bytes()).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event, EventKind::Ping);
        assert_eq!(got[0].nonce.as_deref(), Some("7"));
        assert!(d.finish().is_ok());
    }

    #[test]
    fn rejects_garbage_with_typed_errors() {
        assert_eq!(
            EventDecoder::new().feed(b"{}"),
            Err(StreamError::NoArrayStart(b'{'))
        );
        assert_eq!(
            EventDecoder::new().feed(b"[1"),
            Err(StreamError::NotAnObject(b'1'))
        );
        let mut d = EventDecoder::new();
        assert!(matches!(
            d.feed(b"[{\"a\":1}"),
            Err(StreamError::BadObject(_))
        ));
        assert!(d.feed(b"]").is_err(), "a failed decoder stays failed");
        let ok = br#"{"direction":"c2s","timestamp":"t","call":"c","event":"end"}"#;
        let mut d = EventDecoder::new();
        d.feed(b"[").unwrap();
        d.feed(ok).unwrap();
        assert_eq!(d.feed(b" x"), Err(StreamError::BadSeparator(b'x')));
        let mut d = EventDecoder::new();
        d.feed(b"[{\"direction\":").unwrap();
        assert_eq!(d.finish(), Err(StreamError::Truncated));
    }

    #[test]
    fn events_before_a_bad_byte_are_delivered_then_the_error() {
        let end = br#"{"direction":"s2c","timestamp":"t","call":"c","event":"end"}"#;
        let mut chunk = b"[".to_vec();
        chunk.extend_from_slice(end);
        chunk.extend_from_slice(b",garbage");
        let mut d = EventDecoder::new();
        let got = d.feed(&chunk).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event, EventKind::End);
        assert_eq!(d.error(), Some(&StreamError::NotAnObject(b'g')));
        assert_eq!(d.finish(), Err(StreamError::NotAnObject(b'g')));
        assert_eq!(d.feed(b"]"), Err(StreamError::NotAnObject(b'g')));

        // Two events, then a bad separator: both delivered; the next feed reports it.
        let mut chunk = b"[".to_vec();
        chunk.extend_from_slice(end);
        chunk.push(b',');
        chunk.extend_from_slice(end);
        chunk.extend_from_slice(b" x");
        let mut d = EventDecoder::new();
        assert_eq!(d.feed(&chunk).unwrap().len(), 2);
        assert_eq!(d.feed(b""), Err(StreamError::BadSeparator(b'x')));
        assert_eq!(d.finish(), Err(StreamError::BadSeparator(b'x')));

        // No event completed before the error: `Err` at once, as before.
        let mut d = EventDecoder::new();
        assert_eq!(d.feed(b"[x"), Err(StreamError::NotAnObject(b'x')));
        assert_eq!(d.error(), Some(&StreamError::NotAnObject(b'x')));
        assert_eq!(EventDecoder::new().error(), None);
    }

    #[test]
    fn caps_one_object_not_the_stream() {
        let mut d = EventDecoder::with_limit(80);
        let ok = br#"{"direction":"c2s","timestamp":"t","call":"c","event":"end"}"#;
        d.feed(b"[").unwrap();
        for _ in 0..100 {
            assert_eq!(d.feed(ok).unwrap().len(), 1);
            d.feed(b",").unwrap();
        }
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(100));
        assert_eq!(d.feed(big.as_bytes()), Err(StreamError::ObjectTooLarge(80)));
    }
}
