//! The tokio runtimes the gateway's work runs on.

use std::time::Duration;
use tokio::runtime::Builder;

/// Makes `b`'s workers wait `coalesce` when they run out of work, before they sleep on the
/// sockets (`media.coalesce_us`). On a busy media box most wake-ups otherwise carry a single
/// RTP packet or chunk, and the context switch costs more than relaying it; packets that
/// arrive during the wait are handled together in the next turn of the event loop. The price
/// is at most `coalesce` of added delay per packet; zero leaves the runtime as it is.
pub fn coalescing(b: &mut Builder, coalesce: Duration) -> &mut Builder {
    if !coalesce.is_zero() {
        b.on_thread_park(move || std::thread::sleep(coalesce));
    }
    b
}
