//! A WWW-Authenticate / Authorization value: parsing and printing, `respond`, and
//! `Challenger::verify` with a fixed challenger.
//! The body is shared with the corpus replay test: see `sip_proto::fuzzing::digest_header`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = sip_proto::fuzzing::digest_header(data) {
        panic!("invariant broken: {broken}");
    }
});
