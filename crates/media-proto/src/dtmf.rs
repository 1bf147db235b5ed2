//! RFC 4733 telephone-events and the SIP INFO bodies that carry DTMF
//! (`application/dtmf-relay` and `application/dtmf`).

use crate::Error;

/// One telephone-event payload (RFC 4733 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// 0–9, 10 = `*`, 11 = `#`, 12–15 = A–D, 16 = flash (RFC 4733 §3.2).
    pub event: u8,
    pub end: bool,
    /// Power level, 0 to −63 dBm0, written as 0..=63.
    pub volume: u8,
    /// In timestamp units of the stream's clock.
    pub duration: u16,
}

impl TelephoneEvent {
    pub fn encode(&self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3f),
            d[0],
            d[1],
        ]
    }

    pub fn decode(b: &[u8]) -> Result<Self, Error> {
        match b {
            [event, flags, d0, d1, ..] => Ok(TelephoneEvent {
                event: *event,
                end: flags & 0x80 != 0,
                volume: flags & 0x3f,
                duration: u16::from_be_bytes([*d0, *d1]),
            }),
            _ => Err(Error::Event),
        }
    }
}

/// The RFC 4733 event code of a DTMF character.
pub fn event_of(c: char) -> Option<u8> {
    match c.to_ascii_uppercase() {
        d @ '0'..='9' => Some(d as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        l @ 'A'..='D' => Some(l as u8 - b'A' + 12),
        _ => None,
    }
}

/// The DTMF character of an RFC 4733 event code (16 = flash has none).
pub fn char_of(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + event - 12)),
        _ => None,
    }
}

/// A digit from a SIP INFO body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoDigit {
    pub digit: char,
    /// Milliseconds; `application/dtmf` has none (callers use their default).
    pub duration_ms: Option<u32>,
}

/// Parses `application/dtmf-relay` (`Signal=5\r\nDuration=160\r\n`) or `application/dtmf`
/// (`5`) by content type (case-insensitive, parameters ignored).
pub fn parse_info(content_type: &str, body: &[u8]) -> Result<InfoDigit, Error> {
    let ct = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let text = std::str::from_utf8(body).map_err(|_| Error::DtmfBody)?;
    if body.len() > 1024 {
        return Err(Error::DtmfBody);
    }
    match ct.as_str() {
        "application/dtmf-relay" => {
            let mut digit = None;
            let mut duration = None;
            for line in text.lines() {
                let Some((k, v)) = line.split_once('=') else {
                    continue;
                };
                match k.trim().to_ascii_lowercase().as_str() {
                    "signal" => digit = v.trim().chars().next().filter(|c| event_of(*c).is_some()),
                    "duration" => duration = v.trim().parse::<u32>().ok().filter(|d| *d <= 60_000),
                    _ => {}
                }
            }
            let digit = digit.ok_or(Error::DtmfBody)?;
            Ok(InfoDigit {
                digit: digit.to_ascii_uppercase(),
                duration_ms: duration,
            })
        }
        "application/dtmf" => {
            let t = text.trim();
            let mut cs = t.chars();
            match (cs.next(), cs.next()) {
                (Some(c), None) if event_of(c).is_some() => Ok(InfoDigit {
                    digit: c.to_ascii_uppercase(),
                    duration_ms: None,
                }),
                _ => Err(Error::DtmfBody),
            }
        }
        _ => Err(Error::DtmfBody),
    }
}

/// The `application/dtmf-relay` body for a digit.
pub fn dtmf_relay_body(digit: char, duration_ms: u32) -> String {
    format!("Signal={digit}\r\nDuration={duration_ms}\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4733_payload_round_trip() {
        let e = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 1280,
        };
        assert_eq!(e.encode(), [11, 0x8a, 0x05, 0x00]);
        assert_eq!(TelephoneEvent::decode(&e.encode()).unwrap(), e);
        assert!(TelephoneEvent::decode(&[1, 2, 3]).is_err());
    }

    #[test]
    fn digit_mapping_is_total_over_the_dtmf_alphabet() {
        for c in "0123456789*#ABCD".chars() {
            assert_eq!(char_of(event_of(c).unwrap()), Some(c));
        }
        assert_eq!(event_of('x'), None);
        assert_eq!(char_of(16), None);
    }

    #[test]
    fn info_bodies() {
        let d = parse_info("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n").unwrap();
        assert_eq!(
            d,
            InfoDigit {
                digit: '5',
                duration_ms: Some(160)
            }
        );
        let d = parse_info(
            "Application/DTMF-Relay; charset=x",
            b"signal= #\nduration=250",
        )
        .unwrap();
        assert_eq!(d.digit, '#');
        assert_eq!(parse_info("application/dtmf", b"b").unwrap().digit, 'B');
        for (ct, body) in [
            ("application/dtmf-relay", &b"Duration=160"[..]),
            ("application/dtmf-relay", b"Signal=x"),
            ("application/dtmf", b"12"),
            ("text/plain", b"5"),
            ("application/dtmf", b"\xff"),
        ] {
            assert!(parse_info(ct, body).is_err(), "{ct} {body:?}");
        }
        assert_eq!(
            parse_info(
                "application/dtmf-relay",
                dtmf_relay_body('7', 100).as_bytes()
            )
            .unwrap()
            .digit,
            '7'
        );
    }
}
