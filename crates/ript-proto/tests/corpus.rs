#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the same bodies the
//! fuzz targets run (`ript_proto::fuzzing`), so every seed and every crash a fuzzing session
//! adds stays a regression test on stable, without cargo-fuzz.
//!
//! The seeds are written by `cargo run -p ript-proto --example seed_corpus`.

use ript_proto::chunk::{self, Chunk, MediaDirection};
use ript_proto::events::EventDecoder;
use ript_proto::passport::{self, TnAuthList};
use ript_proto::{adv, fuzzing};
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

type Body = fn(&[u8]) -> fuzzing::Outcome;

/// Fuzz target name (`fuzz/fuzz_targets/<name>.rs`, `fuzz/corpus/<name>/`) and its body.
const TARGETS: &[(&str, Body)] = &[
    ("chunk_frames", fuzzing::chunk_frames),
    ("event_stream", fuzzing::event_stream),
    ("advertisement", fuzzing::advertisement),
    ("passport", fuzzing::passport),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join("corpus").join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus directory {} is missing: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn corpus_replays_without_failures() {
    for (target, body) in TARGETS {
        let files = corpus_files(target);
        assert!(!files.is_empty(), "corpus of {target} is empty");
        for f in files {
            let data = fs::read(&f).unwrap();
            match catch_unwind(AssertUnwindSafe(|| body(&data))) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("{target}: {}: {e}", f.display()),
                Err(_) => panic!("{target}: {} panics", f.display()),
            }
        }
    }
}

#[test]
fn every_fuzz_target_has_a_body_and_a_corpus() {
    let mut on_disk: Vec<String> = fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        // Targets of other crates (sip-proto) share fuzz/; only ours are checked here.
        .filter(|p| fs::read_to_string(p).is_ok_and(|src| src.contains("ript_proto::fuzzing::")))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut known: Vec<String> = TARGETS.iter().map(|(n, _)| (*n).to_owned()).collect();
    known.sort();
    assert_eq!(
        on_disk, known,
        "ript-proto's fuzz targets and TARGETS disagree"
    );
    let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for (target, _) in TARGETS {
        let target_source =
            fs::read_to_string(fuzz_dir().join(format!("fuzz_targets/{target}.rs"))).unwrap();
        assert!(
            target_source.contains(&format!("ript_proto::fuzzing::{target}(")),
            "fuzz target {target} must call ript_proto::fuzzing::{target}"
        );
        assert!(
            manifest.contains(&format!("path = \"fuzz_targets/{target}.rs\"")),
            "fuzz/Cargo.toml lacks the [[bin]] of {target}"
        );
        assert!(
            corpus_files(target).len() >= 5,
            "corpus of {target} is thin"
        );
    }
}

/// The seeds reach what they are named after (not only error paths).
#[test]
fn seeds_reach_the_success_paths() {
    let read = |target: &str, name: &str| {
        fs::read(fuzz_dir().join("corpus").join(target).join(name)).unwrap()
    };
    for (name, frames, dir) in [
        ("sealed-c2s.bin", 1, MediaDirection::C2s),
        ("sealed-s2c.bin", 1, MediaDirection::S2c),
        ("flush-sealed-short-seq.bin", 5, MediaDirection::S2c),
    ] {
        let body = read("chunk_frames", name);
        let mut seqs = chunk::Extender::default();
        let mut opened = 0;
        for raw in chunk::raw_frames(&body) {
            let Ok(Chunk::Media(m)) = chunk::decode_chunk(raw) else {
                panic!("{name}: {:?}", chunk::decode_chunk(raw));
            };
            let full = seqs.extend(m.seq).unwrap();
            chunk::open(raw, &key(), dir, full).unwrap();
            opened += 1;
        }
        assert_eq!(opened, frames, "{name}");
    }
    for name in [
        "media-clear.bin",
        "media-and-acks.bin",
        "video-extensions.bin",
    ] {
        assert!(
            chunk::frames(&read("chunk_frames", name)).all(|c| c.is_ok()),
            "{name}"
        );
    }
    for (name, events) in [
        ("call-lifecycle.bin", 4),
        ("ping-pong.bin", 2),
        ("migrate-and-handler-changed.bin", 3),
        ("whitespace-and-unknown-fields.bin", 2),
        ("escaped-quotes-in-strings.bin", 1),
    ] {
        let data = read("event_stream", name);
        let got = EventDecoder::new().feed(&data[1..]).unwrap();
        assert_eq!(got.len(), events, "{name}");
    }
    let pair = String::from_utf8(read("advertisement", "negotiation-profile.txt")).unwrap();
    let (a, b) = pair.split_once('|').unwrap();
    let n = adv::negotiate(&a.parse().unwrap(), &b.parse().unwrap());
    assert_eq!(n.client.to_string(), "1 to 4: opus,sr=24000,ptime=20;");
    // The passport seed verifies against the certificate seed used as its own anchor.
    let jws = String::from_utf8(read("passport", "passport.txt")).unwrap();
    let cert = read("passport", "certificate.der");
    let chain = [cert];
    let claims = passport::verify(&jws, &chain, &chain, fuzzing::PASSPORT_NOW).unwrap();
    assert_eq!(claims.from_e164(), "+14085550001");
    assert!(TnAuthList::from_der(&read("passport", "tn-auth-list.der")).is_some());
}

fn key() -> chunk::MediaKey {
    chunk::MediaKey::new(&fuzzing::CHUNK_KEY).unwrap()
}
