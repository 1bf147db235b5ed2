//! A media body or datagram: `frames`, `decode_chunk`, re-encoding, and `open` with a fixed key.
//! The body is shared with the corpus replay test: see `ript_proto::fuzzing::chunk_frames`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = ript_proto::fuzzing::chunk_frames(data) {
        panic!("invariant broken: {broken}");
    }
});
