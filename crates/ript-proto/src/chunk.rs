//! Media chunk codec (ript-profile §6, §9): varints, frames, TLVs, truncated seq/timestamp
//! extension, acknowledgements and AES-128-GCM sealing.

use crate::ChunkError;
use ring::aead;

pub mod tag {
    pub const SEQ: u64 = 1;
    pub const TIMESTAMP: u64 = 2;
    pub const PAYLOAD_TYPE: u64 = 3;
    pub const MEDIA: u64 = 4;
    pub const KIND: u64 = 5;
    pub const SOURCE: u64 = 6;
    pub const SINK: u64 = 7;
    pub const REFERENCE: u64 = 8;
    pub const SPATIAL: u64 = 9;
    pub const TEMPORAL: u64 = 10;
    pub const AUDIO_LEVEL: u64 = 11;
    pub const CONTROL_TYPE: u64 = 12;
    pub const MARKER: u64 = 13;
    pub const SEALED: u64 = 14;
    pub const ACK_DIRECTION: u64 = 16;
    pub const ACK_RECEIVE_TIME: u64 = 17;
    /// Tags from here on are extensions: skipped when unknown.
    pub const FIRST_EXTENSION: u64 = 64;
}

/// Fixed payload types (ript-profile §6): RIPT has no dynamic types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PayloadType(pub u32);

impl PayloadType {
    pub const PCMU: Self = Self(0);
    pub const PCMA: Self = Self(8);
    pub const G722: Self = Self(9);
    pub const CN: Self = Self(13);
    pub const G729: Self = Self(18);
    pub const OPUS: Self = Self(100);
    pub const TELEPHONE_EVENT: Self = Self(101);
    pub const H264: Self = Self(110);
    pub const VP8: Self = Self(111);
    pub const AV1: Self = Self(112);

    pub fn for_codec(name: &str) -> Option<Self> {
        Self::CODECS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, p)| *p)
    }

    /// The codec name of a fixed type (`None` for types this profile does not define).
    pub fn codec_name(self) -> Option<&'static str> {
        Self::CODECS
            .iter()
            .find(|(_, p)| *p == self)
            .map(|(n, _)| *n)
    }

    const CODECS: [(&'static str, Self); 10] = [
        ("PCMU", Self::PCMU),
        ("PCMA", Self::PCMA),
        ("G722", Self::G722),
        ("CN", Self::CN),
        ("G729", Self::G729),
        ("opus", Self::OPUS),
        ("telephone-event", Self::TELEPHONE_EVENT),
        ("H264", Self::H264),
        ("VP8", Self::VP8),
        ("AV1", Self::AV1),
    ];
}

// ---------------------------------------------------------------------------------------
// QUIC varints (RFC 9000 §16)

pub const VARINT_MAX: u64 = (1 << 62) - 1;

pub fn varint_len(v: u64) -> usize {
    match v {
        0..=63 => 1,
        64..=16_383 => 2,
        16_384..=1_073_741_823 => 4,
        _ => 8,
    }
}

/// Appends `v` (values above 2^62-1 are clamped; callers never produce them).
pub fn put_varint(out: &mut Vec<u8>, v: u64) {
    let v = v.min(VARINT_MAX);
    match varint_len(v) {
        1 => out.push(v as u8),
        2 => out.extend_from_slice(&((v as u16) | 0x4000).to_be_bytes()),
        4 => out.extend_from_slice(&((v as u32) | 0x8000_0000).to_be_bytes()),
        _ => out.extend_from_slice(&(v | 0xc000_0000_0000_0000).to_be_bytes()),
    }
}

/// Reads a varint at the front of `buf`: `(value, bytes used)`.
pub fn get_varint(buf: &[u8]) -> Result<(u64, usize), ChunkError> {
    let first = *buf.first().ok_or(ChunkError::TruncatedVarint)?;
    let len = 1usize << (first >> 6);
    let bytes = buf.get(..len).ok_or(ChunkError::TruncatedVarint)?;
    let mut v = u64::from(first & 0x3f);
    for b in bytes.iter().skip(1) {
        v = (v << 8) | u64::from(*b);
    }
    Ok((v, len))
}

fn be_uint(value: &[u8], tag: u64, max_len: usize) -> Result<u64, ChunkError> {
    if value.is_empty() || value.len() > max_len {
        return Err(ChunkError::BadLength(tag));
    }
    Ok(value.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b)))
}

fn put_tlv(out: &mut Vec<u8>, tag: u64, value: &[u8]) {
    put_varint(out, tag);
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

fn put_uint(out: &mut Vec<u8>, tag: u64, v: u64, len: usize) {
    let bytes = v.to_be_bytes();
    put_tlv(out, tag, bytes.get(8 - len.clamp(1, 8)..).unwrap_or(&bytes));
}

/// Smallest big-endian length that holds `v` (at least 1).
fn min_len(v: u64) -> usize {
    (8 - (v.leading_zeros() as usize / 8)).max(1)
}

// ---------------------------------------------------------------------------------------
// Values

/// A seq or timestamp as carried: the low `len` bytes of the full value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated {
    pub value: u64,
    pub len: u8,
}

impl Truncated {
    pub fn full(value: u64) -> Self {
        Truncated { value, len: 8 }
    }

    pub fn short(value: u64, len: u8) -> Self {
        let len = len.clamp(1, 8);
        let mask = if len == 8 {
            u64::MAX
        } else {
            (1u64 << (8 * u32::from(len))) - 1
        };
        Truncated {
            value: value & mask,
            len,
        }
    }

    pub fn is_full(&self) -> bool {
        self.len >= 8
    }
}

/// Extends truncated values from the last one seen, like RTP's extended sequence number:
/// the candidate nearest to the last value wins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extender {
    last: Option<u64>,
}

impl Extender {
    /// Forgets history (a new instance or path: the sender returns to full values).
    pub fn reset(&mut self) {
        self.last = None;
    }

    /// The value [`Self::extend`] would return for `t`, without recording it: `None` when a
    /// truncated value arrives with no history to extend it from. Lets the shell authenticate
    /// a chunk (the AEAD nonce holds the full seq) before [`Self::commit`]ting its seq, so a
    /// forged chunk cannot move the reference.
    pub fn peek(&self, t: Truncated) -> Option<u64> {
        // `len` above 8 (only possible through the public fields) also carries everything.
        if t.len >= 8 {
            return Some(t.value);
        }
        let last = self.last?;
        let bits = 8 * u32::from(t.len);
        let span = 1u64 << bits;
        let base = last & !(span - 1);
        let cand = base | t.value;
        [cand.checked_sub(span), Some(cand), cand.checked_add(span)]
            .into_iter()
            .flatten()
            .min_by_key(|c| c.abs_diff(last))
            .or(Some(cand))
    }

    /// Records `value` (the extension of `t`) as seen.
    pub fn commit(&mut self, t: Truncated, value: u64) {
        // A full value is authoritative: after a migration or on a new sender instance the
        // seq may restart anywhere (even lower), and later short values extend from it.
        // A truncated one only moves the reference forward (reordering).
        self.last = Some(match self.last {
            Some(last) if !t.is_full() => last.max(value),
            _ => value,
        });
    }

    /// [`Self::peek`] then [`Self::commit`] of its answer.
    pub fn extend(&mut self, t: Truncated) -> Option<u64> {
        let v = self.peek(t)?;
        self.commit(t, v);
        Some(v)
    }
}

/// The package: codec output and package-level extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Package {
    Clear {
        media: Vec<u8>,
        extensions: Vec<(u64, Vec<u8>)>,
    },
    /// AEAD output of tag 14, to be opened with [`open`].
    Sealed(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaChunk {
    pub seq: Truncated,
    pub timestamp: Option<Truncated>,
    pub payload_type: PayloadType,
    pub source: u8,
    pub sink: u8,
    pub marker: bool,
    pub reference: bool,
    pub spatial: Option<u8>,
    pub temporal: Option<u8>,
    pub audio_level: Option<u8>,
    /// Envelope extensions (tags ≥ 64), in order.
    pub extensions: Vec<(u64, Vec<u8>)>,
    pub package: Package,
}

/// Direction of the acknowledged media, ript-profile §6 tag 16, also the first nonce byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaDirection {
    C2s = 0,
    S2c = 1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub direction: MediaDirection,
    pub source: u8,
    pub sink: u8,
    /// Full seq of the acknowledged chunk.
    pub seq: u64,
    pub receive_time: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    Media(MediaChunk),
    Ack(Ack),
}

// ---------------------------------------------------------------------------------------
// Encoding

impl MediaChunk {
    /// A clear chunk with a full seq and timestamp.
    pub fn new(
        seq: u64,
        timestamp_ms: u64,
        pt: PayloadType,
        source: u8,
        sink: u8,
        media: Vec<u8>,
    ) -> Self {
        MediaChunk {
            seq: Truncated::full(seq),
            timestamp: Some(Truncated::full(timestamp_ms)),
            payload_type: pt,
            source,
            sink,
            marker: false,
            reference: false,
            spatial: None,
            temporal: None,
            audio_level: None,
            extensions: vec![],
            package: Package::Clear {
                media,
                extensions: vec![],
            },
        }
    }

    fn envelope(&self, out: &mut Vec<u8>) {
        put_uint(out, tag::SEQ, self.seq.value, usize::from(self.seq.len));
        if let Some(ts) = self.timestamp {
            put_uint(out, tag::TIMESTAMP, ts.value, usize::from(ts.len));
        }
        put_uint(
            out,
            tag::PAYLOAD_TYPE,
            u64::from(self.payload_type.0),
            min_len(u64::from(self.payload_type.0)).min(4),
        );
        put_tlv(out, tag::SOURCE, &[self.source]);
        put_tlv(out, tag::SINK, &[self.sink]);
        if self.marker {
            put_tlv(out, tag::MARKER, &[]);
        }
        if self.reference {
            put_tlv(out, tag::REFERENCE, &[]);
        }
        if let Some(v) = self.spatial {
            put_tlv(out, tag::SPATIAL, &[v]);
        }
        if let Some(v) = self.temporal {
            put_tlv(out, tag::TEMPORAL, &[v]);
        }
        if let Some(v) = self.audio_level {
            put_tlv(out, tag::AUDIO_LEVEL, &[v]);
        }
        for (t, v) in &self.extensions {
            put_tlv(out, *t, v);
        }
    }

    /// Appends this chunk's TLVs to `out`. With `seal` = (key, direction, full seq) a clear
    /// package is sealed into tag 14; a package that is already sealed is written as is.
    pub fn encode_into(&self, out: &mut Vec<u8>, seal: Option<(&MediaKey, MediaDirection, u64)>) {
        let start = out.len();
        self.envelope(out);
        match (&self.package, seal) {
            (Package::Clear { media, extensions }, None) => {
                put_tlv(out, tag::MEDIA, media);
                for (t, v) in extensions {
                    put_tlv(out, *t, v);
                }
            }
            (Package::Clear { media, extensions }, Some((key, dir, full_seq))) => {
                let mut plain = Vec::with_capacity(media.len() + 24);
                put_tlv(&mut plain, tag::MEDIA, media);
                for (t, v) in extensions {
                    put_tlv(&mut plain, *t, v);
                }
                let aad = out.get(start..).unwrap_or_default().to_vec();
                let nonce = nonce(dir, self.source, self.sink, full_seq);
                key.seal(nonce, &aad, &mut plain);
                put_tlv(out, tag::SEALED, &plain);
            }
            (Package::Sealed(s), _) => put_tlv(out, tag::SEALED, s),
        }
    }

    /// One frame (`length chunk`) appended to `out`.
    pub fn encode_frame(&self, out: &mut Vec<u8>, seal: Option<(&MediaKey, MediaDirection, u64)>) {
        let mut chunk = Vec::with_capacity(64);
        self.encode_into(&mut chunk, seal);
        put_varint(out, chunk.len() as u64);
        out.extend_from_slice(&chunk);
    }
}

impl Ack {
    pub fn encode_frame(&self, out: &mut Vec<u8>) {
        let mut c = Vec::with_capacity(32);
        put_tlv(&mut c, tag::KIND, &[1]);
        put_tlv(&mut c, tag::CONTROL_TYPE, &1u16.to_be_bytes());
        put_tlv(&mut c, tag::ACK_DIRECTION, &[self.direction as u8]);
        put_tlv(&mut c, tag::SOURCE, &[self.source]);
        put_tlv(&mut c, tag::SINK, &[self.sink]);
        put_uint(&mut c, tag::SEQ, self.seq, 8);
        if let Some(t) = self.receive_time {
            put_uint(&mut c, tag::ACK_RECEIVE_TIME, t, min_len(t));
        }
        put_varint(out, c.len() as u64);
        out.extend_from_slice(&c);
    }
}

impl Chunk {
    pub fn encode_frame(&self, out: &mut Vec<u8>) {
        match self {
            Chunk::Media(m) => m.encode_frame(out, None),
            Chunk::Ack(a) => a.encode_frame(out),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Decoding

/// Decodes every frame of a body or datagram. A bad chunk yields an error and the next
/// frame is still read; broken framing yields one error and ends the iteration.
pub fn frames(buf: &[u8]) -> impl Iterator<Item = Result<Chunk, ChunkError>> + '_ {
    raw_frames_checked(buf).map(|r| r.and_then(decode_chunk))
}

/// One TLV: tag, value, offset of the TLV's first byte in the chunk.
type Tlv<'a> = (u64, &'a [u8], usize);
/// Extension TLVs (tags ≥ 64) in order.
pub type Extensions = Vec<(u64, Vec<u8>)>;

/// Splits a TLV list.
fn tlvs(buf: &[u8]) -> Result<Vec<Tlv<'_>>, ChunkError> {
    let mut out = Vec::with_capacity(8);
    let mut at = 0;
    while at < buf.len() {
        let rest = buf.get(at..).unwrap_or_default();
        let (t, n1) = get_varint(rest)?;
        let (l, n2) = get_varint(rest.get(n1..).unwrap_or_default())?;
        let l = usize::try_from(l).map_err(|_| ChunkError::TruncatedTlv)?;
        let vstart = n1 + n2;
        let value = rest
            .get(vstart..vstart + l)
            .ok_or(ChunkError::TruncatedTlv)?;
        out.push((t, value, at));
        at += vstart + l;
    }
    Ok(out)
}

fn one_byte(v: &[u8], t: u64) -> Result<u8, ChunkError> {
    match v {
        [b] => Ok(*b),
        _ => Err(ChunkError::BadLength(t)),
    }
}

fn flag(v: &[u8], t: u64) -> Result<bool, ChunkError> {
    match v {
        [] | [1] => Ok(true),
        _ => Err(ChunkError::BadValue(t)),
    }
}

/// Decodes one chunk (the bytes inside a frame).
pub fn decode_chunk(buf: &[u8]) -> Result<Chunk, ChunkError> {
    if buf.is_empty() {
        return Err(ChunkError::EmptyFrame);
    }
    let list = tlvs(buf)?;
    let mut seen: u64 = 0; // bit per known tag < 64
    let mut seq = None;
    let mut ts = None;
    let mut pt = None;
    let mut media = None;
    let mut kind = 0u8;
    let mut source = None;
    let mut sink = None;
    let mut reference = false;
    let mut spatial = None;
    let mut temporal = None;
    let mut level = None;
    let mut control = None;
    let mut marker = false;
    let mut sealed: Option<(&[u8], usize)> = None;
    let mut ack_dir = None;
    let mut ack_time = None;
    let mut env_ext = Vec::new();
    let mut pkg_ext = Vec::new();
    for (i, (t, v, off)) in list.iter().copied().enumerate() {
        if t < tag::FIRST_EXTENSION {
            let bit = 1u64 << t;
            if seen & bit != 0 {
                return Err(ChunkError::RepeatedTag(t));
            }
            seen |= bit;
        }
        if sealed.is_some() {
            return Err(ChunkError::SealedNotLast);
        }
        match t {
            tag::SEQ => {
                seq = Some(Truncated {
                    value: be_uint(v, t, 8)?,
                    len: v.len() as u8,
                })
            }
            tag::TIMESTAMP => {
                ts = Some(Truncated {
                    value: be_uint(v, t, 8)?,
                    len: v.len() as u8,
                })
            }
            tag::PAYLOAD_TYPE => pt = Some(PayloadType(be_uint(v, t, 4)? as u32)),
            tag::MEDIA => media = Some(v),
            tag::KIND => {
                kind = one_byte(v, t)?;
                if kind > 1 {
                    return Err(ChunkError::BadValue(t));
                }
            }
            tag::SOURCE => source = Some(one_byte(v, t)?),
            tag::SINK => sink = Some(one_byte(v, t)?),
            tag::REFERENCE => reference = flag(v, t)?,
            tag::SPATIAL => spatial = Some(one_byte(v, t)?),
            tag::TEMPORAL => temporal = Some(one_byte(v, t)?),
            tag::AUDIO_LEVEL => {
                let l = one_byte(v, t)?;
                if l > 127 {
                    return Err(ChunkError::BadValue(t));
                }
                level = Some(l);
            }
            tag::CONTROL_TYPE => match v {
                [a, b] => control = Some(u16::from_be_bytes([*a, *b])),
                _ => return Err(ChunkError::BadLength(t)),
            },
            tag::MARKER => {
                if !v.is_empty() {
                    return Err(ChunkError::BadLength(t));
                }
                marker = true;
            }
            tag::SEALED => {
                if i + 1 != list.len() {
                    return Err(ChunkError::SealedNotLast);
                }
                sealed = Some((v, off));
            }
            tag::ACK_DIRECTION => {
                ack_dir = Some(match one_byte(v, t)? {
                    0 => MediaDirection::C2s,
                    1 => MediaDirection::S2c,
                    _ => return Err(ChunkError::BadValue(t)),
                })
            }
            tag::ACK_RECEIVE_TIME => ack_time = Some(be_uint(v, t, 8)?),
            t if t >= tag::FIRST_EXTENSION => {
                // ript-profile §9: extensions after tag 4 belong to the package.
                if media.is_some() {
                    pkg_ext.push((t, v.to_vec()));
                } else {
                    env_ext.push((t, v.to_vec()));
                }
            }
            t => return Err(ChunkError::UnknownTag(t)),
        }
    }
    let source = source.ok_or(ChunkError::Missing(tag::SOURCE))?;
    let sink = sink.ok_or(ChunkError::Missing(tag::SINK))?;
    let seq = seq.ok_or(ChunkError::Missing(tag::SEQ))?;
    if kind == 1 {
        let ct = control.ok_or(ChunkError::Missing(tag::CONTROL_TYPE))?;
        if ct != 1 {
            return Err(ChunkError::UnknownControl(ct));
        }
        if !seq.is_full() {
            return Err(ChunkError::BadLength(tag::SEQ));
        }
        if media.is_some() || sealed.is_some() || pt.is_some() {
            return Err(ChunkError::PackageChoice);
        }
        return Ok(Chunk::Ack(Ack {
            direction: ack_dir.ok_or(ChunkError::Missing(tag::ACK_DIRECTION))?,
            source,
            sink,
            seq: seq.value,
            receive_time: ack_time,
        }));
    }
    if control.is_some() || ack_dir.is_some() || ack_time.is_some() {
        return Err(ChunkError::BadValue(tag::KIND));
    }
    let payload_type = pt.ok_or(ChunkError::Missing(tag::PAYLOAD_TYPE))?;
    let package = match (media, sealed) {
        (Some(m), None) => Package::Clear {
            media: m.to_vec(),
            extensions: pkg_ext,
        },
        (None, Some((s, _))) => Package::Sealed(s.to_vec()),
        _ => return Err(ChunkError::PackageChoice),
    };
    Ok(Chunk::Media(MediaChunk {
        seq,
        timestamp: ts,
        payload_type,
        source,
        sink,
        marker,
        reference,
        spatial,
        temporal,
        audio_level: level,
        extensions: env_ext,
        package,
    }))
}

// ---------------------------------------------------------------------------------------
// Sealing (ript-profile §6)

/// An end-to-end media key (AES-128-GCM), configured out of band.
pub struct MediaKey(aead::LessSafeKey);

impl std::fmt::Debug for MediaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MediaKey(..)")
    }
}

impl MediaKey {
    pub fn new(key: &[u8; 16]) -> Result<Self, ChunkError> {
        let k = aead::UnboundKey::new(&aead::AES_128_GCM, key).map_err(|_| ChunkError::NoKey)?;
        Ok(MediaKey(aead::LessSafeKey::new(k)))
    }

    fn seal(&self, nonce: [u8; 12], aad: &[u8], buf: &mut Vec<u8>) {
        // Sealing only fails for inputs over 2^36 bytes, far beyond a 16 KiB chunk.
        let _ = self.0.seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(aad),
            buf,
        );
    }
}

/// nonce = direction(1) ‖ source(1) ‖ sink(1) ‖ 0x00 ‖ seq(8, full).
pub fn nonce(dir: MediaDirection, source: u8, sink: u8, full_seq: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[0] = dir as u8;
    n[1] = source;
    n[2] = sink;
    n[4..].copy_from_slice(&full_seq.to_be_bytes());
    n
}

/// Opens the sealed package of the raw chunk `raw` (the bytes inside its frame), given the
/// full (extended) seq; returns the clear package (media and package extensions).
pub fn open(
    raw: &[u8],
    key: &MediaKey,
    dir: MediaDirection,
    full_seq: u64,
) -> Result<(Vec<u8>, Extensions), ChunkError> {
    let list = tlvs(raw)?;
    let (_, sealed, off) = list
        .iter()
        .copied()
        .find(|(t, _, _)| *t == tag::SEALED)
        .ok_or(ChunkError::PackageChoice)?;
    let (source, sink) = envelope_ids(&list)?;
    let aad = raw.get(..off).ok_or(ChunkError::TruncatedTlv)?;
    let mut buf = sealed.to_vec();
    let plain = key
        .0
        .open_in_place(
            aead::Nonce::assume_unique_for_key(nonce(dir, source, sink, full_seq)),
            aead::Aad::from(aad),
            &mut buf,
        )
        .map_err(|_| ChunkError::Unseal)?;
    let mut media = None;
    let mut ext = Vec::new();
    for (t, v, _) in tlvs(plain)? {
        match t {
            tag::MEDIA if media.is_none() => media = Some(v.to_vec()),
            t if t >= tag::FIRST_EXTENSION => ext.push((t, v.to_vec())),
            t => return Err(ChunkError::UnknownTag(t)),
        }
    }
    Ok((media.ok_or(ChunkError::Missing(tag::MEDIA))?, ext))
}

fn envelope_ids(list: &[Tlv<'_>]) -> Result<(u8, u8), ChunkError> {
    let find = |t: u64| {
        list.iter()
            .find(|(x, _, _)| *x == t)
            .ok_or(ChunkError::Missing(t))
            .and_then(|(_, v, _)| one_byte(v, t))
    };
    Ok((find(tag::SOURCE)?, find(tag::SINK)?))
}

/// The raw chunk bytes of every well-framed frame, stopping at broken framing.
pub fn raw_frames(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    raw_frames_checked(buf).map_while(Result::ok)
}

/// The raw chunk bytes of every frame (needed to open sealed packages, whose AAD is the
/// envelope's exact bytes). Broken framing yields one error and ends the iteration.
pub fn raw_frames_checked(buf: &[u8]) -> impl Iterator<Item = Result<&[u8], ChunkError>> {
    let mut rest = buf;
    let mut done = false;
    std::iter::from_fn(move || {
        if done || rest.is_empty() {
            return None;
        }
        let step = get_varint(rest).and_then(|(len, n)| {
            let end = usize::try_from(len)
                .ok()
                .and_then(|l| n.checked_add(l))
                .ok_or(ChunkError::TruncatedFrame)?;
            let chunk = rest.get(n..end).ok_or(ChunkError::TruncatedFrame)?;
            Ok((chunk, end))
        });
        match step {
            Ok((chunk, end)) => {
                rest = rest.get(end..).unwrap_or_default();
                Some(Ok(chunk))
            }
            Err(e) => {
                done = true;
                Some(Err(e))
            }
        }
    })
}

// ---------------------------------------------------------------------------------------
// Sender-side truncation state (ript-profile §6)

/// Numbers a media stream's chunks and decides between full and short seq/timestamp: full
/// values until one carrying them is acknowledged, again after any new path.
#[derive(Debug, Clone, Default)]
pub struct SeqState {
    next: u64,
    first_full_unacked: Option<u64>,
    acked_full: bool,
}

impl SeqState {
    pub fn new(first: u64) -> Self {
        SeqState {
            next: first,
            first_full_unacked: None,
            acked_full: false,
        }
    }

    /// The next seq and whether to send it (and the timestamp) in full.
    pub fn next_seq(&mut self) -> (u64, bool) {
        let s = self.next;
        self.next += 1;
        let full = !self.acked_full;
        if full && self.first_full_unacked.is_none() {
            self.first_full_unacked = Some(s);
        }
        (s, full)
    }

    /// Feed acknowledged sequence numbers: once a full one is acked, go short.
    pub fn on_ack(&mut self, seq: u64) {
        if self.first_full_unacked.is_some_and(|f| seq >= f) {
            self.acked_full = true;
        }
    }

    /// New path, migration or reconnection: full values again.
    pub fn reset_path(&mut self) {
        self.acked_full = false;
        self.first_full_unacked = None;
    }

    /// Builds the wire form of `seq` / `timestamp` for the current mode.
    pub fn wire(full: bool, seq: u64, ts: u64) -> (Truncated, Truncated) {
        if full {
            (Truncated::full(seq), Truncated::full(ts))
        } else {
            (Truncated::short(seq, 2), Truncated::short(ts, 4))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_rfc9000_examples() {
        // RFC 9000 §A.1 sample encodings.
        for (bytes, v) in [
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c][..],
                151_288_809_941_952_652u64,
            ),
            (&[0x9d, 0x7f, 0x3e, 0x7d][..], 494_878_333),
            (&[0x7b, 0xbd][..], 15_293),
            (&[0x25][..], 37),
        ] {
            assert_eq!(get_varint(bytes).unwrap(), (v, bytes.len()));
            let mut out = vec![];
            put_varint(&mut out, v);
            assert_eq!(out, bytes);
        }
        assert_eq!(get_varint(&[0x40]), Err(ChunkError::TruncatedVarint));
    }

    #[test]
    fn media_and_ack_round_trip() {
        let mut m = MediaChunk::new(
            1 << 40,
            1_795_460_220_123,
            PayloadType::OPUS,
            1,
            2,
            vec![9; 80],
        );
        m.marker = true;
        m.audio_level = Some(30);
        m.extensions.push((70, vec![1, 2]));
        let a = Ack {
            direction: MediaDirection::S2c,
            source: 1,
            sink: 2,
            seq: 7,
            receive_time: Some(99),
        };
        let mut body = vec![];
        m.encode_frame(&mut body, None);
        a.encode_frame(&mut body);
        let got: Vec<_> = frames(&body).collect();
        assert_eq!(got, vec![Ok(Chunk::Media(m)), Ok(Chunk::Ack(a))]);
    }

    #[test]
    fn invalid_chunks_are_errors_and_the_next_frame_still_reads() {
        let good = {
            let mut b = vec![];
            MediaChunk::new(1, 2, PayloadType::PCMU, 1, 1, vec![0; 4]).encode_frame(&mut b, None);
            b
        };
        let mut bad = vec![];
        put_tlv(&mut bad, 1, &[1]);
        put_tlv(&mut bad, 63, &[]); // unknown tag below 64
        let mut body = vec![];
        put_varint(&mut body, bad.len() as u64);
        body.extend(&bad);
        body.extend(&good);
        let got: Vec<_> = frames(&body).collect();
        assert_eq!(got[0], Err(ChunkError::UnknownTag(63)));
        assert!(matches!(got[1], Ok(Chunk::Media(_))));
        // Repeated known tag.
        let mut rep = vec![];
        put_tlv(&mut rep, 6, &[1]);
        put_tlv(&mut rep, 6, &[1]);
        assert_eq!(decode_chunk(&rep), Err(ChunkError::RepeatedTag(6)));
        // Truncated framing ends iteration with one error.
        let got: Vec<_> = frames(&[0x10, 1, 2]).collect();
        assert_eq!(got, vec![Err(ChunkError::TruncatedFrame)]);
        // Ack with short seq is invalid.
        let mut ack = vec![];
        put_tlv(&mut ack, 5, &[1]);
        put_tlv(&mut ack, 12, &[0, 1]);
        put_tlv(&mut ack, 16, &[0]);
        put_tlv(&mut ack, 6, &[1]);
        put_tlv(&mut ack, 7, &[1]);
        put_tlv(&mut ack, 1, &[1, 2]);
        assert_eq!(decode_chunk(&ack), Err(ChunkError::BadLength(1)));
    }

    #[test]
    fn unknown_extension_tags_are_skipped_into_extensions() {
        let mut c = vec![];
        put_tlv(&mut c, 1, &[5]);
        put_tlv(&mut c, 3, &[0]);
        put_tlv(&mut c, 6, &[1]);
        put_tlv(&mut c, 7, &[1]);
        put_tlv(&mut c, 200, &[7, 7]);
        put_tlv(&mut c, 4, &[1, 2, 3]);
        put_tlv(&mut c, 64, &[]);
        match decode_chunk(&c).unwrap() {
            Chunk::Media(m) => {
                assert_eq!(m.extensions, vec![(200, vec![7, 7])]);
                assert_eq!(
                    m.package,
                    Package::Clear {
                        media: vec![1, 2, 3],
                        extensions: vec![(64, vec![])]
                    }
                );
                assert_eq!(m.seq, Truncated { value: 5, len: 1 });
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn extension_of_truncated_values_wraps_like_rtp() {
        let mut x = Extender::default();
        assert_eq!(x.extend(Truncated::short(5, 2)), None, "no history yet");
        assert_eq!(x.extend(Truncated::full(0x1_fffe)), Some(0x1_fffe));
        assert_eq!(x.extend(Truncated::short(0xffff, 2)), Some(0x1_ffff));
        assert_eq!(
            x.extend(Truncated::short(0x0001, 2)),
            Some(0x2_0001),
            "wrap forward"
        );
        assert_eq!(
            x.extend(Truncated::short(0xfffe, 2)),
            Some(0x1_fffe),
            "late packet before the wrap"
        );
        assert_eq!(x.extend(Truncated::short(0x0002, 2)), Some(0x2_0002));
        // Regression (tests/properties.rs): a length over 8 overflowed the shift.
        let over = Truncated { value: 9, len: 9 };
        assert_eq!(x.extend(over), Some(9));
        // A full value is authoritative even when lower (a new sender instance after a
        // migration starts anywhere): later short values extend from it.
        assert_eq!(x.extend(Truncated::short(10, 2)), Some(10));
        assert_eq!(x.extend(Truncated::full(0x5_0000)), Some(0x5_0000));
        assert_eq!(
            x.extend(Truncated::short(0xfff0, 2)),
            Some(0x4_fff0),
            "late short stays near"
        );
        assert_eq!(x.extend(Truncated::full(7)), Some(7));
        assert_eq!(x.extend(Truncated::short(8, 2)), Some(8));
        x.reset();
        assert_eq!(x.extend(Truncated::full(9)), Some(9));
        assert_eq!(x.extend(Truncated::short(10, 2)), Some(10));
    }

    #[test]
    fn peek_and_commit_agree_with_extend() {
        let mut a = Extender::default();
        let mut b = Extender::default();
        assert_eq!(b.peek(Truncated::short(5, 2)), None, "no history yet");
        let inputs = [
            Truncated::full(0x1_fffe),
            Truncated::short(0xffff, 2),
            Truncated::short(0x0001, 2),
            Truncated::short(0xfffe, 2),
            Truncated::short(0x0002, 2),
            Truncated::full(3),
            Truncated::short(0x05, 1),
            Truncated { value: 9, len: 9 },
        ];
        for t in inputs {
            let before = b;
            let peeked = b.peek(t);
            assert_eq!(b, before, "peek changes nothing");
            assert_eq!(b.peek(t), peeked, "peek is repeatable");
            if let Some(v) = peeked {
                b.commit(t, v);
            }
            assert_eq!(a.extend(t), peeked, "{t:?}");
            assert_eq!(a, b, "{t:?}");
        }
        // A peeked value that is never committed (the chunk failed to open) leaves no trace.
        let mut c = Extender::default();
        c.commit(Truncated::full(0x1_0000), 0x1_0000);
        assert_eq!(c.peek(Truncated::short(0xffff, 2)), Some(0xffff));
        assert_eq!(c.peek(Truncated::short(0x0001, 2)), Some(0x1_0001));
        c.commit(Truncated::short(0x0fff, 2), 0x0fff);
        assert_eq!(
            c.peek(Truncated::short(0x0001, 2)),
            Some(0x1_0001),
            "max kept"
        );
    }

    #[test]
    fn seq_state_goes_short_after_a_full_ack_and_back_after_a_new_path() {
        let mut s = SeqState::new(100);
        assert_eq!(s.next_seq(), (100, true));
        assert_eq!(s.next_seq(), (101, true));
        s.on_ack(99);
        assert_eq!(s.next_seq(), (102, true));
        s.on_ack(101);
        assert_eq!(s.next_seq(), (103, false));
        s.reset_path();
        assert_eq!(s.next_seq(), (104, true));
        let (seq, ts) = SeqState::wire(false, 0x1_2345, 0x1_0000_0002);
        assert_eq!((seq.value, seq.len, ts.value, ts.len), (0x2345, 2, 2, 4));
    }

    #[test]
    fn sealing_round_trips_and_binds_envelope_and_nonce() {
        let key = MediaKey::new(&[7; 16]).unwrap();
        let mut m = MediaChunk::new(42, 1000, PayloadType::PCMA, 3, 4, vec![0xd5; 160]);
        if let Package::Clear { extensions, .. } = &mut m.package {
            extensions.push((99, vec![1]));
        }
        let mut raw = vec![];
        m.encode_into(&mut raw, Some((&key, MediaDirection::C2s, 42)));
        let Ok(Chunk::Media(d)) = decode_chunk(&raw) else {
            panic!()
        };
        assert!(matches!(d.package, Package::Sealed(_)));
        let (media, ext) = open(&raw, &key, MediaDirection::C2s, 42).unwrap();
        assert_eq!(media, vec![0xd5; 160]);
        assert_eq!(ext, vec![(99, vec![1])]);
        assert_eq!(
            open(&raw, &key, MediaDirection::S2c, 42),
            Err(ChunkError::Unseal)
        );
        assert_eq!(
            open(&raw, &key, MediaDirection::C2s, 43),
            Err(ChunkError::Unseal)
        );
        let mut tampered = raw.clone();
        tampered[2] ^= 1; // inside the seq TLV value → AAD differs
        assert!(open(&tampered, &key, MediaDirection::C2s, 42).is_err());
        let other = MediaKey::new(&[8; 16]).unwrap();
        assert_eq!(
            open(&raw, &other, MediaDirection::C2s, 42),
            Err(ChunkError::Unseal)
        );
    }

    #[test]
    fn nonce_layout() {
        assert_eq!(
            nonce(MediaDirection::S2c, 2, 3, 0x0102_0304_0506_0708),
            [1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7, 8]
        );
    }
}
