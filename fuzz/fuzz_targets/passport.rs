//! `passport::verify` with an empty chain, and `TnAuthList::from_der`.
//! The body is shared with the corpus replay test: see `ript_proto::fuzzing::passport`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = ript_proto::fuzzing::passport(data) {
        panic!("invariant broken: {broken}");
    }
});
