//! An SDP body: `Sdp::parse`, `to_text` and back, and `answer` with a fixed `Local`.
//! The body is shared with the corpus replay test: see `sip_proto::fuzzing::sdp`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = sip_proto::fuzzing::sdp(data) {
        panic!("invariant broken: {broken}");
    }
});
