//! An event byway body fed to `EventDecoder` in two pieces, split at the first byte's value.
//! The body is shared with the corpus replay test: see `ript_proto::fuzzing::event_stream`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = ript_proto::fuzzing::event_stream(data) {
        panic!("invariant broken: {broken}");
    }
});
