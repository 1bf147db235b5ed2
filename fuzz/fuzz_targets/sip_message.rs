//! A SIP datagram and stream: `parse`, re-serialising, typed accessors, answers, `parse_stream`
//! split in two, and `salvage_request`.
//! The body is shared with the corpus replay test: see `sip_proto::fuzzing::sip_message`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = sip_proto::fuzzing::sip_message(data) {
        panic!("invariant broken: {broken}");
    }
});
