//! RTP parsing (through rtc-rtp) and RFC 3550 receive statistics.

use crate::Error;
use bytes::Bytes;
use rtc_shared::marshal::{Marshal, Unmarshal};

pub use rtc_rtp::header::Header;
pub use rtc_rtp::packet::Packet;

/// Parses an RTP packet; RTCP (payload types 72–76 with the marker, RFC 5761 §4) is refused.
pub fn parse(buf: Bytes) -> Result<Packet, Error> {
    if buf.len() < 12 {
        return Err(Error::Rtp("shorter than the fixed header"));
    }
    if buf.first().is_some_and(|b| b >> 6 != 2) {
        return Err(Error::Rtp("version is not 2"));
    }
    if buf.get(1).is_some_and(|b| (200..=204).contains(b)) {
        return Err(Error::Rtp("rtcp on the rtp port"));
    }
    let mut b = buf;
    Packet::unmarshal(&mut b).map_err(|_| Error::Rtp("header or extension overruns the packet"))
}

pub fn serialize(p: &Packet) -> Result<Bytes, Error> {
    p.marshal()
        .map(|b| b.freeze())
        .map_err(|_| Error::Rtp("cannot serialise"))
}

const RTP_SEQ_MOD: u32 = 1 << 16;
const MAX_DROPOUT: u32 = 3000;
const MAX_MISORDER: u32 = 100;
const MIN_SEQUENTIAL: u32 = 2;

/// Per-source receive statistics (RFC 3550 Appendix A.1 and A.8).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecvStats {
    max_seq: u16,
    /// Wraps seen, times 2^16. u64: a u32 overflowed after 65536 wraps, which a sender can
    /// force with ~1.4M packets jumping forward by just under MAX_DROPOUT.
    cycles: u64,
    base_seq: u32,
    bad_seq: u32,
    probation: u32,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    transit: i64,
    jitter: f64,
    started: bool,
    pub packets: u64,
    pub bytes: u64,
    /// Packets refused by sequence validation (probation, big jumps).
    pub invalid: u64,
}

impl RecvStats {
    /// Feeds one packet: its seq, RTP timestamp, payload size, and its arrival expressed in
    /// RTP timestamp units of the stream's clock. Returns false when A.1 validation rejects it.
    pub fn update(
        &mut self,
        seq: u16,
        rtp_ts: u32,
        payload_len: usize,
        arrival_ts_units: u32,
    ) -> bool {
        if !self.started {
            self.init_seq(seq);
            self.max_seq = seq.wrapping_sub(1);
            self.probation = MIN_SEQUENTIAL;
            self.started = true;
        }
        if !self.update_seq(seq) {
            self.invalid += 1;
            return false;
        }
        self.packets += 1;
        self.bytes += payload_len as u64;
        // A.8: J += (|D| - J) / 16 with D the transit-time difference.
        let transit = i64::from(arrival_ts_units) - i64::from(rtp_ts);
        if self.received > 1 {
            let d = (transit - self.transit).abs() as f64;
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.transit = transit;
        true
    }

    fn init_seq(&mut self, seq: u16) {
        self.base_seq = u32::from(seq);
        self.max_seq = seq;
        self.bad_seq = RTP_SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
    }

    fn update_seq(&mut self, seq: u16) -> bool {
        let udelta = u32::from(seq.wrapping_sub(self.max_seq));
        if self.probation > 0 {
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.init_seq(seq);
                    self.received += 1;
                    return true;
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
            }
            return false;
        } else if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(u64::from(RTP_SEQ_MOD));
            }
            self.max_seq = seq;
        } else if udelta <= RTP_SEQ_MOD - MAX_MISORDER {
            if u32::from(seq) == self.bad_seq {
                // Two sequential packets after a big jump: the source restarted.
                self.init_seq(seq);
            } else {
                self.bad_seq = (u32::from(seq) + 1) & (RTP_SEQ_MOD - 1);
                return false;
            }
        }
        // Duplicates and reordered packets within MAX_MISORDER are counted.
        self.received += 1;
        true
    }

    /// Highest sequence number seen, extended with the wrap count.
    pub fn extended_max(&self) -> u64 {
        self.cycles.saturating_add(u64::from(self.max_seq))
    }

    pub fn expected(&self) -> u64 {
        self.extended_max()
            .saturating_add(1)
            .saturating_sub(u64::from(self.base_seq))
    }

    /// Cumulative packets lost (may be negative with duplicates, RFC 3550 §6.4.1).
    pub fn lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    /// Interarrival jitter in timestamp units.
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// Fraction lost since the last call, as the 8-bit fixed point of a receiver report.
    pub fn fraction_lost(&mut self) -> u8 {
        let expected = self.expected();
        let interval_expected = expected.saturating_sub(self.expected_prior);
        self.expected_prior = expected;
        let interval_received = self.received.saturating_sub(self.received_prior);
        self.received_prior = self.received;
        let lost = interval_expected.saturating_sub(interval_received);
        if interval_expected == 0 || lost == 0 {
            0
        } else {
            u8::try_from((lost << 8) / interval_expected).unwrap_or(255)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u16, ts: u32) -> Bytes {
        let p = Packet {
            header: Header {
                version: 2,
                payload_type: 0,
                sequence_number: seq,
                timestamp: ts,
                ssrc: 7,
                ..Default::default()
            },
            payload: Bytes::from_static(&[0xff; 160]),
        };
        serialize(&p).unwrap()
    }

    #[test]
    fn parses_and_refuses() {
        let p = parse(pkt(5, 800)).unwrap();
        assert_eq!(
            (
                p.header.sequence_number,
                p.header.timestamp,
                p.payload.len()
            ),
            (5, 800, 160)
        );
        assert!(parse(Bytes::from_static(&[0x80, 0x00])).is_err());
        assert!(parse(Bytes::from_static(&[0x40; 20])).is_err(), "version 1");
        let mut rtcp = pkt(1, 1).to_vec();
        rtcp[1] = 200;
        assert!(parse(Bytes::from(rtcp)).is_err());
        // CSRC count 15 with no room for them.
        let mut short = pkt(1, 1).to_vec();
        short[0] = 0x8f;
        short.truncate(20);
        assert!(parse(Bytes::from(short)).is_err());
    }

    #[test]
    fn rfc3550_a1_probation_wrap_and_loss() {
        let mut s = RecvStats::default();
        assert!(!s.update(65530, 0, 160, 0), "first packet is on probation");
        for (i, seq) in (65531..=65535u16).chain(0..10).enumerate() {
            let i = i as u32 + 1;
            assert!(s.update(seq, i * 160, 160, i * 160));
        }
        assert_eq!(s.extended_max(), 65536 + 9);
        assert_eq!(s.lost(), 0);
        // Skip 10..=14: five lost.
        for (k, seq) in (15..20u16).enumerate() {
            s.update(seq, 4000 + k as u32 * 160, 160, 4000 + k as u32 * 160);
        }
        assert_eq!(s.lost(), 5);
        assert!(s.fraction_lost() > 0);
        assert_eq!(s.fraction_lost(), 0, "no new loss since the last report");
        // A wild jump is refused once, then accepted as a restart when sequential.
        assert!(!s.update(40000, 0, 160, 0));
        assert!(s.update(40001, 160, 160, 160));
    }

    #[test]
    fn more_than_65536_wraps_do_not_overflow() {
        let mut s = RecvStats::default();
        // Out of probation first (A.1: two sequential packets).
        for seq in 0..3 {
            s.update(seq, 0, 0, 0);
        }
        let mut seq = 2u16;
        // Jumps just under MAX_DROPOUT are in-order packets: a wrap every 22 or so.
        let wraps = 65_537u64;
        let n = wraps * u64::from(RTP_SEQ_MOD) / 2999 + 1;
        for _ in 0..n {
            seq = seq.wrapping_add(2999);
            s.update(seq, 0, 0, 0);
        }
        assert!(s.extended_max() >= wraps * u64::from(RTP_SEQ_MOD));
    }

    #[test]
    fn rfc3550_a8_jitter_tracks_transit_variation() {
        let mut s = RecvStats::default();
        // Packets every 160 units, arrivals alternately 0 and 80 units late.
        for i in 0..200u32 {
            let late = if i % 2 == 0 { 0 } else { 80 };
            s.update(i as u16, i * 160, 160, i * 160 + late);
        }
        assert!((s.jitter() - 80.0).abs() < 10.0, "jitter {}", s.jitter());
        let mut steady = RecvStats::default();
        for i in 0..200u32 {
            steady.update(i as u16, i * 160, 160, i * 160 + 40);
        }
        assert!(steady.jitter() < 1.0);
    }
}
