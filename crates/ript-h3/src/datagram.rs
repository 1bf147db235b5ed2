//! RFC 9297 HTTP Datagrams framed by hand: quarter stream id (varint) ‖ payload.
//!
//! h3-datagram 0.0.2 writes quarter stream id 0 for every datagram (hyperium/h3#345, fixed
//! upstream but unreleased), so both directions go through raw quinn datagrams.

use bytes::Bytes;
use ript_proto::chunk::{get_varint, put_varint};

pub(crate) fn encode(stream_id: u64, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + 8);
    put_varint(&mut out, stream_id / 4);
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// A connection's datagram sender, used straight from a call's task. It never waits: when
/// quinn's datagram send buffer (4 MiB, `tls::SOCKET_BUFFER`) is full, quinn drops the oldest
/// queued datagrams, which is what real-time media wants (a late chunk is worth less than a
/// fresh one). Sending here instead of through a sender task saves a task wake-up per chunk.
#[derive(Clone, Debug)]
pub(crate) struct DatagramOut(quinn::Connection);

impl DatagramOut {
    pub(crate) fn new(conn: quinn::Connection) -> Self {
        DatagramOut(conn)
    }

    /// Queues `payload` for request stream `stream_id`; false when it was not queued (the
    /// connection is gone, the peer takes no datagrams, or it is larger than the path allows).
    pub(crate) fn send(&self, stream_id: u64, payload: &[u8]) -> bool {
        self.0.send_datagram(encode(stream_id, payload)).is_ok()
    }
}

/// `(request stream id, payload)`; `None` for a datagram without a valid prefix.
pub(crate) fn decode(raw: &Bytes) -> Option<(u64, Bytes)> {
    let (qsid, n) = get_varint(raw).ok()?;
    Some((qsid.checked_mul(4)?, raw.slice(n..)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn quarter_stream_ids_round_trip() {
        let d = super::encode(8, b"hi");
        assert_eq!(&d[..], &[2, b'h', b'i']);
        assert_eq!(
            super::decode(&d),
            Some((8, bytes::Bytes::from_static(b"hi")))
        );
        assert_eq!(super::decode(&bytes::Bytes::from_static(&[0x40])), None);
    }
}
