//! Bodies of the fuzz targets in `fuzz/` (cargo-fuzz), shared with the corpus replay test
//! (`tests/corpus.rs`) so both run exactly the same code.
//!
//! Each body feeds arbitrary bytes to the decoders and parsers. A panic is what fuzzing hunts
//! for; besides that, each body checks invariants that must hold for any input and returns
//! `Err` with a description when one is broken (the callers turn that into a failure).

use crate::adv::{self, Advertisement, Directive, Negotiated, StreamDir};
use crate::chunk::{self, Chunk, Extender, MediaDirection, MediaKey, Package};
use crate::events::{EventDecoder, EventEncoder};
use crate::passport::{self, TnAuthList};
use crate::pattern::NumberPattern;

/// The fixed media key of the `chunk_frames` target: seeds that reach [`chunk::open`]'s
/// success path are sealed with it.
pub const CHUNK_KEY: [u8; 16] = *b"ript-fuzz-key-16";

/// The `now` (Unix seconds) the `passport` target verifies at.
pub const PASSPORT_NOW: u64 = 1_795_460_220;

/// `Err` names the broken invariant.
pub type Outcome = Result<(), String>;

fn check(ok: bool, what: impl FnOnce() -> String) -> Outcome {
    if ok { Ok(()) } else { Err(what()) }
}

/// `chunk_frames`: a media body or datagram through [`chunk::frames`], [`chunk::decode_chunk`]
/// and [`chunk::open`] with [`CHUNK_KEY`].
///
/// Invariants: every complete frame decodes alone as it does inside the body, and broken
/// framing adds exactly one error at the end; a decoded chunk re-encodes to bytes that decode
/// to the same chunk; an opened package sealed again opens to the same package.
pub fn chunk_frames(data: &[u8]) -> Outcome {
    let key = MediaKey::new(&CHUNK_KEY).map_err(|e| format!("fixed key rejected: {e}"))?;
    let decoded: Vec<_> = chunk::frames(data).collect();
    let raws: Vec<&[u8]> = chunk::raw_frames(data).collect();
    let framing_error =
        decoded.len() == raws.len() + 1 && decoded.last().is_some_and(Result::is_err);
    check(decoded.len() == raws.len() || framing_error, || {
        format!(
            "frames() yielded {} items for {} raw frames",
            decoded.len(),
            raws.len()
        )
    })?;
    let mut seqs = Extender::default();
    for (raw, got) in raws.iter().zip(&decoded) {
        let alone = chunk::decode_chunk(raw);
        check(&alone == got, || {
            format!("frame decodes as {alone:?} alone but {got:?} in the body")
        })?;
        let Ok(c) = got else { continue };
        let mut body = Vec::new();
        c.encode_frame(&mut body);
        let back: Vec<_> = chunk::frames(&body).collect();
        check(back == [Ok(c.clone())], || {
            format!("{c:?} re-encoded decodes as {back:?}")
        })?;
        let Chunk::Media(m) = c else { continue };
        let Some(full_seq) = seqs.extend(m.seq) else {
            continue;
        };
        if !matches!(m.package, Package::Sealed(_)) {
            continue;
        }
        for dir in [MediaDirection::C2s, MediaDirection::S2c] {
            let Ok((media, extensions)) = chunk::open(raw, &key, dir, full_seq) else {
                continue;
            };
            let mut clear = m.clone();
            clear.package = Package::Clear {
                media: media.clone(),
                extensions: extensions.clone(),
            };
            let mut resealed = Vec::new();
            clear.encode_into(&mut resealed, Some((&key, dir, full_seq)));
            let reopened = chunk::open(&resealed, &key, dir, full_seq);
            check(reopened == Ok((media, extensions)), || {
                format!("a resealed package opens as {reopened:?}")
            })?;
        }
    }
    Ok(())
}

/// `event_stream`: the first byte is a split point, the rest an event byway body fed to an
/// [`EventDecoder`] in two pieces.
///
/// Invariants: the events delivered (before any error) and the end state (`finish`, the
/// remembered error, `is_closed`) do not depend on where the body is split; a decoder that
/// failed reports it from `finish`; decoded events re-encoded with an [`EventEncoder`] decode
/// to the same events.
pub fn event_stream(data: &[u8]) -> Outcome {
    let Some((&first, body)) = data.split_first() else {
        return Ok(());
    };
    let (a, b) = body
        .split_at_checked(usize::from(first).min(body.len()))
        .unwrap_or((body, &[]));
    // Feeds pieces until one answers `Err` (a failed decoder answers nothing else).
    let run = |pieces: &[&[u8]]| {
        let mut dec = EventDecoder::new();
        let mut events = Vec::new();
        for piece in pieces {
            match dec.feed(piece) {
                Ok(evs) => events.extend(evs),
                Err(_) => break,
            }
        }
        (events, dec)
    };
    let (events, whole) = run(&[body]);
    let (split_events, parts) = run(&[a, b]);
    check(events == split_events, || {
        format!(
            "split at {}: {split_events:?}, in one piece: {events:?}",
            a.len()
        )
    })?;
    check(
        whole.finish() == parts.finish()
            && whole.error() == parts.error()
            && whole.is_closed() == parts.is_closed(),
        || format!("split at {} changes the end state", a.len()),
    )?;
    check(
        whole
            .error()
            .is_none_or(|e| whole.finish().as_ref() == Err(e)),
        || format!("{:?} is not reported by finish", whole.error()),
    )?;
    let mut enc = EventEncoder::default();
    let mut wire = enc.open().to_vec();
    for e in &events {
        wire.extend(enc.encode(e));
    }
    wire.extend_from_slice(enc.close());
    let mut dec = EventDecoder::with_limit(2 * crate::limits::EVENT_OBJECT);
    let again = dec.feed(&wire);
    check(again.as_ref() == Ok(&events) && dec.is_closed(), || {
        format!("{events:?} re-encoded decodes as {again:?}")
    })
}

/// `advertisement`: the input as text through the [`Advertisement`], [`Directive`] and
/// [`NumberPattern`] parsers; split at the first `|` into two advertisements (the whole text
/// twice without one) that are negotiated both ways.
///
/// Invariants: whatever parses prints canonically and parses back equal; negotiation pairs a
/// source of one side with an unused sink of the other sharing the chosen codec, never
/// `CN`/`telephone-event`, and its directives round trip too.
pub fn advertisement(data: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(data);
    let (a, b) = text.split_once('|').unwrap_or((&text, &text));
    for s in [&*text, a, b] {
        if let Ok(ad) = s.parse::<Advertisement>() {
            let back = ad.to_string().parse::<Advertisement>();
            check(back.as_ref().ok() == Some(&ad), || {
                format!("advertisement {s:?} prints as {ad} which parses as {back:?}")
            })?;
        }
        if let Ok(d) = s.parse::<Directive>() {
            directive_round_trip(&d)?;
        }
        if let Ok(p) = s.parse::<NumberPattern>() {
            let back = p.to_string().parse::<NumberPattern>();
            check(back.as_ref().ok() == Some(&p), || {
                format!("pattern {s:?} prints as {p} which parses as {back:?}")
            })?;
            let _ = p.matches(s);
        }
    }
    if let (Ok(x), Ok(y)) = (a.parse::<Advertisement>(), b.parse::<Advertisement>()) {
        negotiation(&x, &y, &adv::negotiate(&x, &y))?;
        negotiation(&y, &x, &adv::negotiate(&y, &x))?;
    }
    Ok(())
}

fn directive_round_trip(d: &Directive) -> Outcome {
    let back = d.to_string().parse::<Directive>();
    check(back.as_ref().ok() == Some(d), || {
        format!("directive {d:?} prints as {d} which parses as {back:?}")
    })
}

fn negotiation(client: &Advertisement, server: &Advertisement, n: &Negotiated) -> Outcome {
    for (senders, receivers, d) in [(client, server, &n.client), (server, client, &n.server)] {
        directive_round_trip(d)?;
        for (i, e) in d.entries.iter().enumerate() {
            let find = |ad: &'_ Advertisement, id: u8, dir: StreamDir| {
                ad.streams
                    .iter()
                    .find(|s| s.id == id && s.dir == dir)
                    .is_some_and(|s| {
                        s.codecs
                            .iter()
                            .any(|c| c.name.eq_ignore_ascii_case(&e.codec.name))
                    })
            };
            let reused = d
                .entries
                .iter()
                .take(i)
                .any(|o| o.source == e.source || o.sink == e.sink);
            let aux = ["CN", "telephone-event"]
                .iter()
                .any(|n| n.eq_ignore_ascii_case(&e.codec.name));
            check(
                find(senders, e.source, StreamDir::Out)
                    && find(receivers, e.sink, StreamDir::In)
                    && !reused
                    && !aux,
                || format!("negotiation of {client} with {server} gave {e:?}"),
            )?;
        }
    }
    Ok(())
}

/// `passport`: the input as a compact PASSporT verified with no chain (and with the input as
/// a one-certificate chain), and as a DER TNAuthList.
///
/// Invariants: nothing verifies without a trust anchor; a parsed TNAuthList re-encodes to DER
/// that parses back equal.
pub fn passport(data: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(data);
    let _ = passport::x5u(&text);
    let no_chain = passport::verify(&text, &[], &[], PASSPORT_NOW);
    check(no_chain.is_err(), || {
        format!("{text:?} verified without a chain: {no_chain:?}")
    })?;
    let chain = [data.to_vec()];
    let no_anchor = passport::verify(&text, &chain, &[], PASSPORT_NOW);
    check(no_anchor.is_err(), || {
        format!("{text:?} verified without an anchor: {no_anchor:?}")
    })?;
    let _ = passport::verify_chain(&chain, &chain, PASSPORT_NOW);
    if let Some(list) = TnAuthList::from_der(data) {
        let der = list.to_der();
        let back = TnAuthList::from_der(&der);
        check(back.as_ref() == Some(&list), || {
            format!("{list:?} encodes as {der:02x?} which parses as {back:?}")
        })?;
        let _ = list.covers(&text);
    }
    Ok(())
}
