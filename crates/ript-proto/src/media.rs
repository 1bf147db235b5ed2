//! Sans-IO media path bookkeeping shared by both roles: the ≥ 5 s buffer and the server's
//! pending-GET downlink (ript-profile §6, §9).

use crate::limits;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub const BUFFER_AGE: Duration = Duration::from_secs(5);

/// Frames held while no path can carry them, dropped by age (oldest first).
#[derive(Debug, Default)]
pub struct MediaBuffer {
    frames: VecDeque<(Instant, Vec<u8>)>,
    dropped: u64,
}

impl MediaBuffer {
    pub fn push(&mut self, now: Instant, frame: Vec<u8>) {
        self.expire(now);
        self.frames.push_back((now, frame));
    }

    pub fn expire(&mut self, now: Instant) {
        while self
            .frames
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > BUFFER_AGE)
        {
            self.frames.pop_front();
            self.dropped += 1;
        }
    }

    /// Up to `max` frames, oldest first.
    pub fn take(&mut self, now: Instant, max: usize) -> Vec<Vec<u8>> {
        self.expire(now);
        let n = max.min(self.frames.len());
        self.frames.drain(..n).map(|(_, f)| f).collect()
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Identifies one pending `GET {call}/media` inside the shell.
pub type GetId = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownlinkOutput {
    /// Answer this GET with 200 and this body (frames, already framed).
    Answer(GetId, Vec<u8>),
    /// Answer this GET with 204 (a 31st GET pushed it out).
    NoContent(GetId),
    /// Emit `media-panic` (once per gap).
    Panic,
}

/// The server's reverse media path over byways: answers the most recent pending GET with
/// one frame, or buffers and panics once per gap. (Acks of the client's media travel in
/// the answers to its PUTs, not here.)
#[derive(Debug, Default)]
pub struct Downlink {
    pending: VecDeque<GetId>,
    buffer: MediaBuffer,
    in_gap: bool,
    /// Datagram session open: media goes there, not to GETs.
    datagrams: bool,
    out: VecDeque<DownlinkOutput>,
}

impl Downlink {
    pub fn handle_get(&mut self, now: Instant, id: GetId) {
        self.in_gap = false;
        if !self.buffer.is_empty() {
            let frames = self.buffer.take(now, limits::FLUSH_FRAMES);
            if !frames.is_empty() {
                let body = frames.concat();
                self.out.push_back(DownlinkOutput::Answer(id, body));
                return;
            }
        }
        self.pending.push_back(id);
        if self.pending.len() > limits::SERVER_PENDING_GETS
            && let Some(old) = self.pending.pop_front()
        {
            self.out.push_back(DownlinkOutput::NoContent(old));
        }
    }

    /// The shell lost a pending GET (client reset it).
    pub fn handle_get_gone(&mut self, id: GetId) {
        self.pending.retain(|g| *g != id);
    }

    /// The datagram session opened (`open`) or closed. Opening returns the frames buffered
    /// during the gap that are at most 5 s old, oldest first, for the shell to send as
    /// datagrams (ript-profile §6: both sides buffer ≥ 5 s while paths are re-established);
    /// closing returns nothing (later media goes to GETs or the buffer again).
    pub fn set_datagrams(&mut self, now: Instant, open: bool) -> Vec<Vec<u8>> {
        self.datagrams = open;
        if !open {
            return Vec::new();
        }
        self.in_gap = false;
        self.buffer.take(now, usize::MAX)
    }

    /// A media frame for the client. Returns it back when the datagram path should carry it.
    pub fn handle_media(&mut self, now: Instant, frame: Vec<u8>) -> Option<Vec<u8>> {
        if self.datagrams {
            return Some(frame);
        }
        match self.pending.pop_back() {
            Some(id) => {
                self.out.push_back(DownlinkOutput::Answer(id, frame));
            }
            None => {
                if !self.in_gap {
                    self.in_gap = true;
                    self.out.push_back(DownlinkOutput::Panic);
                }
                self.buffer.push(now, frame);
            }
        }
        None
    }

    /// Every pending GET, to be answered 404 when the call ends.
    pub fn drain_pending(&mut self) -> Vec<GetId> {
        self.pending.drain(..).collect()
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    #[must_use]
    pub fn poll_output(&mut self) -> Option<DownlinkOutput> {
        self.out.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any origin works: virtual time only ever adds to it.
    #[allow(clippy::disallowed_methods)]
    fn origin() -> Instant {
        Instant::now()
    }

    fn drain(d: &mut Downlink) -> Vec<DownlinkOutput> {
        std::iter::from_fn(|| d.poll_output()).collect()
    }

    #[test]
    fn answers_the_most_recent_get_and_pushes_out_the_31st() {
        let t = origin();
        let mut d = Downlink::default();
        for id in 0..31 {
            d.handle_get(t, id);
        }
        assert_eq!(drain(&mut d), vec![DownlinkOutput::NoContent(0)]);
        assert_eq!(d.pending(), 30);
        d.handle_media(t, vec![1]);
        assert_eq!(drain(&mut d), vec![DownlinkOutput::Answer(30, vec![1])]);
    }

    #[test]
    fn gap_panics_once_buffers_by_age_and_flushes_at_most_50() {
        let t = origin();
        let mut d = Downlink::default();
        for i in 0..60u8 {
            d.handle_media(t + Duration::from_millis(u64::from(i) * 100), vec![i]);
        }
        assert_eq!(drain(&mut d), vec![DownlinkOutput::Panic], "once per gap");
        // At 6.0 s the chunks older than 5 s (0..=9) are gone.
        d.handle_get(t + Duration::from_millis(6_000), 1);
        match drain(&mut d).as_slice() {
            [DownlinkOutput::Answer(1, body)] => {
                assert_eq!(body.len(), 50);
                assert_eq!(body[0], 10, "oldest kept first");
            }
            o => panic!("{o:?}"),
        }
        d.handle_get(t + Duration::from_millis(6_000), 2);
        assert!(drain(&mut d).is_empty(), "buffer flushed: the GET waits");
        assert_eq!(d.pending(), 1);
        d.handle_media(t + Duration::from_millis(6_500), vec![99]);
        assert_eq!(drain(&mut d), vec![DownlinkOutput::Answer(2, vec![99])]);
        // A new gap panics again.
        d.handle_media(t + Duration::from_millis(7_000), vec![1]);
        d.handle_media(t + Duration::from_millis(7_000), vec![2]);
        assert_eq!(drain(&mut d), vec![DownlinkOutput::Panic]);
    }

    #[test]
    fn datagram_mode_bypasses_gets() {
        let t = origin();
        let mut d = Downlink::default();
        d.handle_get(t, 1);
        assert!(d.set_datagrams(t, true).is_empty(), "nothing was buffered");
        assert_eq!(d.handle_media(t, vec![5]), Some(vec![5]));
        assert!(drain(&mut d).is_empty());
        assert_eq!(d.drain_pending(), vec![1]);
    }

    #[test]
    fn opening_datagrams_flushes_the_gap_buffer_oldest_first() {
        let t = origin();
        let mut d = Downlink::default();
        // 70 frames over 7 s with no GET pending: a gap, buffered.
        for i in 0..70u8 {
            d.handle_media(t + Duration::from_millis(u64::from(i) * 100), vec![i]);
        }
        assert_eq!(drain(&mut d), vec![DownlinkOutput::Panic]);
        // At 7.0 s frames older than 5 s (0..=19) are gone; the rest all go, oldest first
        // (no 50-frame cap: each becomes its own datagram).
        let flushed = d.set_datagrams(t + Duration::from_millis(7_000), true);
        let want: Vec<Vec<u8>> = (20..70u8).map(|i| vec![i]).collect();
        assert_eq!(flushed, want);
        assert_eq!(d.buffered(), 0);
        assert!(drain(&mut d).is_empty());
        assert_eq!(
            d.handle_media(t + Duration::from_secs(8), vec![1]),
            Some(vec![1])
        );
        // Closing returns nothing; media buffers again and a new gap panics again.
        assert!(
            d.set_datagrams(t + Duration::from_secs(8), false)
                .is_empty()
        );
        assert_eq!(d.handle_media(t + Duration::from_secs(9), vec![2]), None);
        assert_eq!(drain(&mut d), vec![DownlinkOutput::Panic]);
        assert_eq!(d.buffered(), 1);
        assert!(
            d.set_datagrams(t + Duration::from_secs(9), false)
                .is_empty()
        );
        assert_eq!(
            d.buffered(),
            1,
            "closing keeps the buffer for the next path"
        );
        assert_eq!(
            d.set_datagrams(t + Duration::from_secs(10), true),
            vec![vec![2]]
        );
    }
}
