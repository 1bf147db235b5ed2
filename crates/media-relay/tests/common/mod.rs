//! What the baresip interop tests share: a headless baresip 1.0 (Debian package) with its own
//! configuration directory, its log, and a SIP port with room for its TLS listener.
// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use sip_proto::msg::{Message, Method, Request, Response};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tokio::net::UdpSocket;

pub const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A baresip process with its own config directory; killed and cleaned up on drop.
pub struct Baresip {
    child: Child,
    pub dir: PathBuf,
    pub sip: SocketAddr,
    log: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Baresip {
    /// Starts baresip on `dir` (created; files the caller put there stay) listening on
    /// 127.0.0.1:`sip_port`, with `accounts` as its accounts file and `modules` (module and
    /// audio lines) after the common settings, and waits until it is ready.
    pub fn launch(dir: PathBuf, sip_port: u16, accounts: &str, modules: &str) -> Baresip {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("accounts"), accounts).unwrap();
        // net_interface keeps baresip's SDP on loopback.
        std::fs::write(
            dir.join("config"),
            format!(
                "sip_listen 127.0.0.1:{sip_port}\nnet_interface 127.0.0.1\n\
                 module_path /usr/lib/baresip/modules\n{modules}"
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
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut b = Baresip {
            child,
            dir,
            sip: SocketAddr::new(LO, sip_port),
            log,
            seen: Vec::new(),
        };
        b.wait_for("baresip is ready", Duration::from_secs(10));
        b
    }

    /// Blocks until baresip logs a line containing `what`; panics with the log otherwise.
    pub fn wait_for(&mut self, what: &str, limit: Duration) -> String {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(what) {
                        return line;
                    }
                }
                Err(_) => panic!("baresip never logged {what:?}:\n{}", self.seen.join("\n")),
            }
        }
    }

    pub fn log_so_far(&mut self) -> String {
        self.seen.extend(self.log.try_iter());
        self.seen.join("\n")
    }
}

/// A port free for UDP and TCP whose successor is free for TCP too: baresip binds UDP and
/// TCP on `sip_listen` and SIP over TLS on the next port.
pub fn free_port() -> u16 {
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

/// Share of the signal's energy at `hz` for a `rate` Hz signal (Goertzel over the whole
/// buffer; a pure tone's power is energy · N / 2).
pub fn tone_share(samples: &[i16], hz: f64, rate: f64) -> f64 {
    let coeff = 2.0 * (2.0 * std::f64::consts::PI * hz / rate).cos();
    let (mut s1, mut s2, mut energy) = (0.0f64, 0.0f64, 0.0f64);
    for &x in samples {
        let x = f64::from(x);
        energy += x * x;
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    power * 2.0 / (energy * samples.len() as f64).max(1.0)
}

/// A hand-driven SIP UAC on a UDP socket: enough to INVITE baresip and hang up.
pub struct Sip {
    pub sock: UdpSocket,
    pub baresip: SocketAddr,
    pub call_id: String,
}

impl Sip {
    pub fn request(&self, method: Method, uri: &str, cseq: u32, to: &str) -> Request {
        let local = self.sock.local_addr().unwrap();
        Request::new(method.clone(), uri)
            .unwrap()
            .with_header(
                "Via",
                &format!(
                    "SIP/2.0/UDP {local};branch=z9hG4bK{}{cseq}{method}",
                    self.call_id
                ),
            )
            .unwrap()
            .with_header("Max-Forwards", "70")
            .unwrap()
            .with_header("From", "<sip:alice@127.0.0.1>;tag=relay-test")
            .unwrap()
            .with_header("To", to)
            .unwrap()
            .with_header("Call-ID", &self.call_id)
            .unwrap()
            .with_header("CSeq", &format!("{cseq} {method}"))
            .unwrap()
            .with_header("Contact", &format!("<sip:alice@{local}>"))
            .unwrap()
    }

    pub async fn send(&self, r: &Request) {
        self.sock
            .send_to(&r.to_bytes(), self.baresip)
            .await
            .unwrap();
    }

    /// The next final response to `method` (provisional ones and retransmissions of
    /// other transactions are skipped).
    pub async fn final_response(&self, method: Method) -> Response {
        let mut buf = vec![0u8; 65536];
        within(Duration::from_secs(10), async {
            loop {
                let (n, _) = self.sock.recv_from(&mut buf).await.unwrap();
                let Ok((Message::Response(r), _)) = sip_proto::msg::parse(&buf[..n]) else {
                    continue;
                };
                if r.status() >= 200 && r.headers().cseq().unwrap().1 == method {
                    return r;
                }
            }
        })
        .await
    }
}

pub async fn within<F: std::future::Future>(limit: Duration, f: F) -> F::Output {
    tokio::time::timeout(limit, f).await.expect("timed out")
}
