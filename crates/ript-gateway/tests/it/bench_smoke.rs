//! `bench relay` runs end to end on a tiny load (no timing assertions: figures are for
//! BENCHMARKS.md, not for tests).

use super::BIN;
use std::process::Command;

fn figure(out: &str, label: &str) -> f64 {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{label}: ")))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{out}"))
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("{label}: {e} in:\n{out}"))
}

#[test]
fn bench_relay_runs_both_forwarders_and_prints_its_figures() {
    let out = Command::new(BIN)
        .args(["bench", "relay", "--streams", "2", "--seconds", "1"])
        .env("RIPT_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (relay, plain) = stdout
        .split_once("== plain:")
        .unwrap_or_else(|| panic!("no plain section in:\n{stdout}"));
    assert!(relay.contains("== relay:"), "{stdout}");
    for section in [relay, plain] {
        assert!(figure(section, "relayed packets") > 0.0, "{stdout}");
        assert!(figure(section, "received packets") > 0.0, "{stdout}");
        for label in [
            "sent packets",
            "relayed pkt/s",
            "loss %",
            "latency p50 us",
            "latency p99 us",
            "latency max us",
            "cpu us/packet",
            "cpu % of one core",
        ] {
            figure(section, label);
        }
    }
    figure(&stdout, "ratio relay/plain cpu us/packet");
}
