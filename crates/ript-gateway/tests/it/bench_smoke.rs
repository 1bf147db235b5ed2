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

/// A line's figure after `key ` (`loss % 0.000 (…)` → 0.0 with key "loss %").
fn after(line: &str, key: &str) -> f64 {
    line.split_once(&format!("{key} "))
        .and_then(|(_, r)| r.split_whitespace().next())
        .and_then(|v| v.trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("no {key:?} figure in {line:?}"))
}

#[test]
fn bench_chain_sets_up_calls_through_both_gateways_and_prints_its_figures() {
    let out = Command::new(BIN)
        .args(["bench", "chain", "--calls", "3", "--seconds", "1"])
        .env("RIPT_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (baseline, chain) = stdout
        .split_once("== setup:")
        .unwrap_or_else(|| panic!("no setup section in:\n{stdout}"));
    assert!(baseline.contains("== baseline:"), "{stdout}");
    assert_eq!(figure(chain, "calls set up"), 3.0, "{stdout}");
    assert_eq!(figure(chain, "calls failed"), 0.0, "{stdout}");
    for section in [baseline, chain] {
        for dir in ["pbx -> core", "core -> pbx"] {
            let line = section
                .lines()
                .find(|l| l.starts_with(&format!("{dir}: sent packets")))
                .unwrap_or_else(|| panic!("no {dir} counts in:\n{stdout}"));
            assert!(after(line, "received") > 0.0, "{stdout}");
            after(line, "loss %");
            let line = section
                .lines()
                .find(|l| l.starts_with(&format!("{dir}: latency us")))
                .unwrap_or_else(|| panic!("no {dir} latency in:\n{stdout}"));
            for q in ["p50", "p99", "p99.9", "max"] {
                after(line, q);
            }
        }
    }
    for label in [
        "setup ms (INVITE -> 200 at the UAC)",
        "achieved setup rate calls/s",
        "gateways cpu s per call-second",
        "gateways cpu us per relayed packet",
        "cpu us per relayed packet per gateway: customer",
        "rss KiB per call ((at load - before) / calls, incl. the generator's sockets)",
    ] {
        assert!(stdout.contains(label), "no {label:?} in:\n{stdout}");
    }
    assert!(stdout.contains("ratio chain/baseline"), "{stdout}");
    assert!(stdout.contains("rss KiB: at start"), "{stdout}");
}
