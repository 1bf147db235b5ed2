//! The binary as an operator uses it: `run` on loopback, `probe` against it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

mod admin;
mod bench_smoke;
mod calls;
mod config;
mod demo;
mod interop;
mod metrics;
mod ript_config;
mod sip;
mod sipp;
mod torture;

const BIN: &str = env!("CARGO_BIN_EXE_ript-gateway");
/// The bearer token `start()` gives the gateway.
const TOKEN: &str = "integration-test-token-0123456789";

pub(crate) struct Running {
    child: Child,
    pub(crate) url: String,
    pub(crate) dir: std::path::PathBuf,
    pub(crate) sip_udp: std::net::SocketAddr,
    pub(crate) sip_tcp: std::net::SocketAddr,
    pub(crate) sip_tls: Option<std::net::SocketAddr>,
    pub(crate) admin: Option<std::net::SocketAddr>,
    /// Keep the data directory when dropped (to start again on it).
    pub(crate) keep_dir: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Starts `ript-gateway run` on ephemeral loopback ports and waits for its address lines.
fn start() -> Running {
    start_with(&[])
}

pub(crate) fn start_with(envs: &[(&str, &str)]) -> Running {
    let dir = std::env::temp_dir().join(format!(
        "ript-gw-it-{}",
        std::process::id() as u64 * 1000 + rand_suffix()
    ));
    start_in(dir, envs)
}

/// [`start_with`] on a given data directory (a restart keeps its database and tokens).
pub(crate) fn start_in(dir: std::path::PathBuf, envs: &[(&str, &str)]) -> Running {
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        // Each gateway keeps its own SQLite under its data dir unless a test says otherwise
        // (the torture test runs in a network namespace with no Postgres in it).
        .env_remove("DATABASE_URL")
        .env("RIPT_TOKEN", TOKEN)
        .env("RIPT_LOG", "warn")
        .env("RIPT_SIP_LISTEN", "udp:127.0.0.1:0,tcp:127.0.0.1:0")
        .env("RIPT_ADMIN_LISTEN", "127.0.0.1:0")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let (mut sip_udp, mut sip_tcp, mut sip_tls, mut admin) = (None, None, None, None);
    let url = loop {
        let line = lines
            .next()
            .expect("gateway exited before listening")
            .unwrap();
        if let Some(a) = line.strip_prefix("sip listening on udp:") {
            sip_udp = a.parse().ok();
        }
        if let Some(a) = line.strip_prefix("sip listening on tcp:") {
            sip_tcp = a.parse().ok();
        }
        if let Some(a) = line.strip_prefix("admin api listening on http://") {
            admin = a.parse().ok();
        }
        if let Some(a) = line.strip_prefix("sip listening on tls:") {
            sip_tls = a.parse().ok();
        }
        if let Some(rest) = line.strip_prefix("ript listening on ") {
            break rest.trim_end_matches(ript_proto::ROOT_PATH).to_owned();
        }
    };
    // Keep the pipe open and drained: the gateway prints more lines after this one, and
    // writing to a closed pipe makes its `println!` panic (EPIPE), killing the server.
    std::thread::spawn(move || lines.for_each(drop));
    Running {
        child,
        url,
        dir,
        sip_udp: sip_udp.expect("no sip udp listener line"),
        sip_tcp: sip_tcp.expect("no sip tcp listener line"),
        sip_tls,
        admin,
        keep_dir: false,
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        % 1000
}

fn probe(r: &Running, token: &str, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["probe", "--root", &r.url, "--token", token, "--ca"])
        .arg(r.dir.join("ript-cert.pem"))
        .args(extra)
        .env("RIPT_LOG", "error")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn stat(out: &str, name: &str) -> u64 {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {out}"))
        .parse()
        .unwrap()
}

#[test]
fn probe_places_a_tone_call_over_datagrams_and_byways() {
    let r = start();
    let token = "integration-test-token-0123456789";
    for mode in [&[][..], &["--byways"][..]] {
        let mut args = vec!["--call", "+14085551000", "--seconds", "1"];
        args.extend_from_slice(mode);
        let (code, out, err) = probe(&r, token, &args);
        assert_eq!(code, 0, "{out}\n{err}");
        assert!(
            out.contains("advertisement: 1 in: PCMU; PCMA; opus;"),
            "{out}"
        );
        assert!(out.contains("handler registered: https://"), "{out}");
        assert_eq!(stat(&out, "sent"), 50, "{out}");
        // The echo server acks and returns every chunk on loopback.
        assert_eq!(stat(&out, "acked"), 50, "{out}");
        assert_eq!(stat(&out, "lost"), 0, "{out}");
        assert!(stat(&out, "received") >= 45, "{out}");
        let path = if mode.is_empty() {
            "path: datagrams"
        } else {
            "path: byways"
        };
        assert!(out.contains(path), "{out}");
    }
}

#[test]
fn probe_exits_distinctly_on_auth_and_tls_errors() {
    let r = start();
    let (code, _, err) = probe(&r, "wrong-token-wrong-token", &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("401"), "{err}");
    // Trusting another certificate: a TLS failure, exit 2.
    let other = std::env::temp_dir().join(format!("ript-other-{}.pem", std::process::id()));
    let id = ript_h3::tls::Identity::self_signed(&["127.0.0.1"]).unwrap();
    std::fs::write(&other, id.cert_pem()).unwrap();
    let out = Command::new(BIN)
        .args(["probe", "--root", &r.url, "--token", "x", "--ca"])
        .arg(&other)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&other);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A missing trust file is a usage error.
    let out = Command::new(BIN)
        .args([
            "probe",
            "--root",
            &r.url,
            "--token",
            "x",
            "--ca",
            "/nonexistent.pem",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}
