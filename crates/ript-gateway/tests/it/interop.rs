//! Interop with an independent QUIC/HTTP/3 stack: `tests/interop/ript_aioquic_client.py`
//! (Python, aioquic) drives `ript-gateway run` through ript-profile §2–§9 over loopback.

use crate::{TOKEN, start};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CLIENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/interop/ript_aioquic_client.py"
);

/// Every `OK <step>` line the client prints when the server passes, in order.
const STEPS: &[&str] = &[
    "providertgs",
    "tg",
    "unauthorized",
    "handler",
    "call",
    "events",
    "answered",
    "pong",
    "connect",
    "datagram-media",
    "connect-close",
    "media-put",
    "media-put-invalid",
    "end",
    "final-state",
    "events-gone",
    "delete-405",
    "all",
];

/// The client has its own 20 s timeout; this only guards against a wedged interpreter.
const WATCHDOG: Duration = Duration::from_secs(60);

/// aioquic missing is a failure with instructions, never a silent skip.
fn require_aioquic() {
    let hint = "run scripts/test (it installs aioquic), or: python3 -m pip install -r tests/interop/requirements.txt";
    match Command::new("python3")
        .args(["-c", "import aioquic"])
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "python3 cannot import aioquic ({}); {hint}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("no error output")
        ),
        Err(e) => panic!("cannot run python3 ({e}); {hint}"),
    }
}

#[test]
fn aioquic_client_interoperates_with_the_server() {
    require_aioquic();
    let r = start();
    let (out_path, err_path) = (r.dir.join("aioquic.out"), r.dir.join("aioquic.err"));
    let started = Instant::now();
    let mut child = Command::new("python3")
        .arg(CLIENT)
        .args(["--root", &r.url, "--token", TOKEN, "--ca"])
        .arg(r.dir.join("ript-cert.pem"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > WATCHDOG {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    let status = status.unwrap_or_else(|| {
        panic!("aioquic client still running after {WATCHDOG:?}\nstdout:\n{out}\nstderr:\n{err}")
    });
    assert!(
        status.success(),
        "aioquic client failed ({status}) after {elapsed:?}\nstdout:\n{out}\nstderr:\n{err}"
    );
    for step in STEPS {
        let ok = format!("OK {step}");
        assert!(
            out.lines()
                .any(|l| l == ok || l.starts_with(&format!("{ok} ("))),
            "no `{ok}` line\nstdout:\n{out}\nstderr:\n{err}"
        );
    }
    eprintln!("aioquic interop client passed in {elapsed:?}");
}
