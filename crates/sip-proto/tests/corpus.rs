#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Replays the committed fuzz corpus of sip-proto's targets (`fuzz/corpus/<target>/`)
//! through the same bodies the fuzz targets run (`sip_proto::fuzzing`), so every seed and
//! every crash a fuzzing session adds stays a regression test on stable, without cargo-fuzz.
//!
//! The seeds are written by `cargo run -p sip-proto --example seed_corpus`.

use sip_proto::digest::{AuthError, Credentials, Secret};
use sip_proto::fuzzing;
use sip_proto::msg::{self, Message, StreamItem};
use sip_proto::sdp::{self, Sdp};
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

type Body = fn(&[u8]) -> fuzzing::Outcome;

/// Fuzz target name (`fuzz/fuzz_targets/<name>.rs`, `fuzz/corpus/<name>/`) and its body.
const TARGETS: &[(&str, Body)] = &[
    ("sip_message", fuzzing::sip_message),
    ("sdp", fuzzing::sdp),
    ("digest_header", fuzzing::digest_header),
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

fn read(target: &str, name: &str) -> Vec<u8> {
    fs::read(fuzz_dir().join("corpus").join(target).join(name)).unwrap()
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

/// The fuzz directory also holds other crates' targets: the ones calling into
/// `sip_proto::fuzzing` must be exactly [`TARGETS`].
#[test]
fn every_fuzz_target_has_a_body_and_a_corpus() {
    let mut on_disk: Vec<String> = fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .filter(|p| {
            fs::read_to_string(p)
                .unwrap()
                .contains("sip_proto::fuzzing::")
        })
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut known: Vec<String> = TARGETS.iter().map(|(n, _)| (*n).to_owned()).collect();
    known.sort();
    assert_eq!(on_disk, known, "fuzz/fuzz_targets and TARGETS disagree");
    let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains("sip-proto = { path = \"../crates/sip-proto\" }"),
        "fuzz/Cargo.toml lacks the sip-proto dependency"
    );
    for (target, _) in TARGETS {
        let target_source =
            fs::read_to_string(fuzz_dir().join(format!("fuzz_targets/{target}.rs"))).unwrap();
        assert!(
            target_source.contains(&format!("sip_proto::fuzzing::{target}(")),
            "fuzz target {target} must call sip_proto::fuzzing::{target}"
        );
        assert!(
            manifest.contains(&format!("path = \"fuzz_targets/{target}.rs\"")),
            "fuzz/Cargo.toml lacks the [[bin]] of {target}"
        );
        assert!(
            corpus_files(target).len() >= 8,
            "corpus of {target} is thin"
        );
    }
}

/// The issue asks for every torture message as a seed of `sip_message`.
#[test]
fn every_torture_message_is_a_seed() {
    let torture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/sip-torture");
    let torture = std::env::var_os("SIP_TORTURE_DIR").map_or(torture, PathBuf::from);
    let mut seen = 0;
    for (sub, prefix) in [("rfc4475", "rfc4475"), ("rfc5118-wire", "rfc5118")] {
        for e in fs::read_dir(torture.join(sub)).unwrap() {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.ends_with(".dat") {
                continue;
            }
            let seed = read("sip_message", &format!("{prefix}-{name}"));
            assert_eq!(seed, fs::read(&path).unwrap(), "{prefix}-{name}");
            seen += 1;
        }
    }
    assert_eq!(seen, 50 + 12);
}

/// The seeds reach what they are named after (not only error paths).
#[test]
fn seeds_reach_the_success_paths() {
    for name in [
        "valid-invite-with-sdp.sip",
        "valid-200-with-record-route.sip",
        "valid-register-with-authorization.sip",
        "valid-options-ipv6-tcp.sip",
    ] {
        let (m, _) = msg::parse(&read("sip_message", name)).unwrap();
        m.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let (invite, _) = msg::parse(&read("sip_message", "valid-invite-with-sdp.sip")).unwrap();
    Sdp::parse(invite.body()).unwrap();
    let mut stream = read("sip_message", "valid-stream-keepalives-options-bye.sip");
    let mut messages = 0;
    loop {
        match msg::parse_stream(&stream, fuzzing::STREAM_MAX_SIZE).unwrap() {
            StreamItem::KeepAlive(n) => drop(stream.drain(..n)),
            StreamItem::Message(Message::Request(_), n) => {
                messages += 1;
                stream.drain(..n);
            }
            StreamItem::Incomplete => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(messages, 2);

    // Every offer but the malformed ones is answered.
    for f in corpus_files("sdp") {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let parsed = Sdp::parse(&fs::read(&f).unwrap());
        match name.as_str() {
            "malformed-port.sdp" | "malformed-order.sdp" => assert!(parsed.is_err(), "{name}"),
            _ => {
                let offer = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
                let (_, plan) = sdp::answer(&offer, &fuzzing::sdp_local())
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                if name.starts_with("savp") {
                    // The seed's GCM line asks for UNENCRYPTED_SRTCP (and its SHA1_32 line
                    // has an MKI), which media-proto's SRTP cannot honour.
                    assert_eq!(plan.srtp.unwrap().0, "AES_CM_128_HMAC_SHA1_80");
                }
            }
        }
    }

    // The fixed credentials verify (or are stale) with the target's challenger.
    let challenger = fuzzing::digest_challenger().unwrap();
    for (name, expected) in [
        ("fixed-credentials-sha256.txt", Ok(())),
        ("fixed-credentials-md5-sess.txt", Ok(())),
        ("fixed-credentials-md5-no-qop.txt", Ok(())),
        ("fixed-credentials-stale.txt", Err(AuthError::Stale)),
    ] {
        let text = String::from_utf8(read("digest_header", name)).unwrap();
        let creds = Credentials::parse(&text).unwrap();
        let got = challenger.verify(
            &creds,
            "REGISTER",
            &creds.uri,
            fuzzing::DIGEST_NOW_MS,
            |_, _, _| Some(Secret::Password(fuzzing::DIGEST_PASSWORD.to_owned())),
        );
        assert_eq!(got, expected, "{name}");
    }
}
