//! SIPp (Debian `sip-tester`) as the PBX: OPTIONS, REGISTER with a digest challenge, INVITE
//! without a route, over UDP and TCP. `scripts/test` installs SIPp; without it this fails.

use super::*;
use std::time::Duration;

fn scenario(name: &str) -> String {
    format!("{}/../../tests/sipp/{name}.xml", env!("CARGO_MANIFEST_DIR"))
}

/// A local port free for both UDP and TCP right now (SIPp binds both for `-t t1`), whose
/// successor is free for TCP too (baresip puts SIP over TLS there).
fn free_port() -> u16 {
    loop {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = u.local_addr().unwrap().port();
        if p < u16::MAX
            && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
        {
            return p;
        }
    }
}

fn sipp(target: std::net::SocketAddr, name: &str, transport: &str) {
    let err = std::env::temp_dir().join(format!(
        "sipp-{name}-{transport}-{}.log",
        std::process::id()
    ));
    let out = Command::new("sipp")
        .arg(target.to_string())
        .args([
            "-sf",
            &scenario(name),
            "-m",
            "1",
            "-i",
            "127.0.0.1",
            "-t",
            transport,
        ])
        .args([
            "-p",
            &free_port().to_string(),
            "-timeout",
            "15s",
            "-nostdin",
            "-trace_err",
            "-error_file",
        ])
        .arg(&err)
        .output()
        .unwrap_or_else(|e| {
            panic!("sipp not runnable ({e}): run scripts/test, which installs sip-tester")
        });
    let errors = std::fs::read_to_string(&err).unwrap_or_default();
    let _ = std::fs::remove_file(&err);
    assert!(
        out.status.success(),
        "sipp {name} over {transport} failed ({:?}):\n{errors}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn sipp_uac_options_and_invite_without_route_over_udp_and_tcp() {
    let r = start();
    for (name, t) in [
        ("options", "u1"),
        ("invite_404", "u1"),
        ("options", "t1"),
        ("invite_404", "t1"),
    ] {
        let target = if t == "u1" { r.sip_udp } else { r.sip_tcp };
        sipp(target, name, t);
    }
}

#[test]
fn sipp_registers_with_digest_when_not_allow_listed() {
    // SIPp answers only the first challenge and only MD5: offer MD5 alone.
    let r = start_with(&[
        ("RIPT_SIP_ALLOW", ""),
        ("RIPT_SIP_USERS", "pbx:s3cret"),
        ("RIPT_SIP_DIGEST_ALGORITHMS", "MD5"),
    ]);
    sipp(r.sip_udp, "register_auth", "u1");
}

/// baresip (headless, Debian package) as a registering UA with digest.
#[test]
fn baresip_registers_with_digest() {
    let r = start_with(&[
        ("RIPT_SIP_ALLOW", ""),
        ("RIPT_SIP_USERS", "pbx:s3cret"),
        // libre answers only the first challenge and has no SHA-256.
        ("RIPT_SIP_DIGEST_ALGORITHMS", "MD5"),
    ]);
    let dir = std::env::temp_dir().join(format!("baresip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("accounts"),
        format!(
            "<sip:pbx@{};transport=udp>;auth_user=pbx;auth_pass=s3cret;regint=60\n",
            r.sip_udp
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("config"),
        format!(
            "sip_listen 127.0.0.1:{}\nmodule_path /usr/lib/baresip/modules\nmodule stdio.so\nmodule g711.so\nmodule aufile.so\nmodule_app account.so\nmodule_app menu.so\naudio_player aufile,/dev/null\naudio_source aufile,/dev/null\n",
            free_port()
        ),
    )
    .unwrap();
    let mut child = Command::new("baresip")
        .arg("-f")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("baresip not runnable ({e}): run scripts/test, which installs it")
        });
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let registered = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if line.contains("200 OK") && line.contains("1 binding") {
                    break true;
                }
                seen.push(line);
            }
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(registered, "baresip did not register:\n{}", seen.join("\n"));
}

/// The gateway keeps an upstream registration (`RIPT_SIP_REGISTER`) with SIPp as the
/// registrar: SIPp challenges, checks the digest answer with its own code and grants a binding.
#[test]
fn gateway_registers_upstream_with_sipp_as_registrar() {
    let port = free_port();
    let err = std::env::temp_dir().join(format!("sipp-registrar-{}.log", std::process::id()));
    let sipp = Command::new("sipp")
        .args([
            "-sf",
            &scenario("registrar_once"),
            "-m",
            "1",
            "-i",
            "127.0.0.1",
        ])
        .args([
            "-t",
            "u1",
            "-p",
            &port.to_string(),
            "-timeout",
            "20s",
            "-nostdin",
        ])
        .args(["-trace_err", "-error_file"])
        .arg(&err)
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("sipp not runnable ({e}): run scripts/test"));
    // The gateway's REGISTER is retransmitted over UDP until SIPp listens.
    let _gw = start_with(&[("RIPT_SIP_REGISTER", &format!("gw:secret@127.0.0.1:{port}"))]);
    let out = sipp.wait_with_output().unwrap();
    let errors = std::fs::read_to_string(&err).unwrap_or_default();
    let _ = std::fs::remove_file(&err);
    assert!(out.status.success(), "sipp registrar failed:\n{errors}");
}
