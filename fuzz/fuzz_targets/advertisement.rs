//! Advertisement / directive / number-pattern parsing, and negotiation of two advertisements split at `|`.
//! The body is shared with the corpus replay test: see `ript_proto::fuzzing::advertisement`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = ript_proto::fuzzing::advertisement(data) {
        panic!("invariant broken: {broken}");
    }
});
