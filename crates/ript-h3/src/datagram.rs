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
