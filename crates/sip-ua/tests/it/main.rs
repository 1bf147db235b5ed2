//! The user agent against real SIP peers on loopback: SIPp in both roles, and a SIP ⇄ SIP
//! back-to-back call through the media relay. `scripts/test` installs SIPp.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use sip_transport::{Endpoint, EndpointConfig, Transport};
use sip_ua::{UaConfig, UserAgent};
use std::net::SocketAddr;
use std::time::Duration;

mod b2bua;
mod sipp;

pub(crate) const WAIT: Duration = Duration::from_secs(30);

pub(crate) fn scenario(name: &str) -> String {
    format!("{}/../../tests/sipp/{name}.xml", env!("CARGO_MANIFEST_DIR"))
}

/// A local port free for both UDP and TCP right now (SIPp binds both).
pub(crate) fn free_port() -> u16 {
    loop {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// An even port with the next three free (SIPp's audio and video RTP/RTCP).
pub(crate) fn free_media_port() -> u16 {
    loop {
        let p = free_port() & !1;
        if p > 1024
            && p < 65530
            && (p..p + 4).all(|q| std::net::UdpSocket::bind(("127.0.0.1", q)).is_ok())
        {
            return p;
        }
    }
}

/// Runs SIPp to the end of one call; `Err` with its error log when the call failed.
pub(crate) async fn sipp(name: &str, args: Vec<String>) -> Result<(), String> {
    let err = std::env::temp_dir().join(format!(
        "sipp-ua-{name}-{}-{}.log",
        std::process::id(),
        free_port()
    ));
    let mut full = vec![
        "-sf".to_owned(),
        scenario(name),
        "-m".into(),
        "1".into(),
        "-i".into(),
        "127.0.0.1".into(),
        "-mi".into(),
        "127.0.0.1".into(),
        "-mp".into(),
        free_media_port().to_string(),
        "-timeout".into(),
        "40s".into(),
        "-nostdin".into(),
        "-trace_err".into(),
        "-error_file".into(),
        err.display().to_string(),
    ];
    full.extend(args);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sipp").args(&full).output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("sipp not runnable ({e}): run scripts/test, which installs it"));
    let errors = std::fs::read_to_string(&err).unwrap_or_default();
    let _ = std::fs::remove_file(&err);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "sipp {name} failed ({:?}):\n{errors}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

/// Runs `serve` while SIPp runs; SIPp ending first (a failed scenario) fails the test with
/// SIPp's log instead of leaving `serve` waiting.
pub(crate) async fn against_sipp<T>(
    run: impl std::future::Future<Output = Result<(), String>> + Send + 'static,
    serve: impl std::future::Future<Output = T>,
) -> T {
    let mut sipp = tokio::spawn(run);
    tokio::pin!(serve);
    let out = tokio::select! {
        t = &mut serve => t,
        r = &mut sipp => panic!("sipp ended before us: {:?}", r.unwrap()),
    };
    sipp.await.unwrap().unwrap();
    out
}

pub(crate) async fn agent(cfg: UaConfig) -> (UserAgent, SocketAddr, SocketAddr) {
    let ep = Endpoint::bind(EndpointConfig {
        listen: vec![
            "udp:127.0.0.1:0".parse().unwrap(),
            "tcp:127.0.0.1:0".parse().unwrap(),
        ],
        ..EndpointConfig::default()
    })
    .await
    .unwrap();
    let udp = ep.local_addr(Transport::Udp).unwrap();
    let tcp = ep.local_addr(Transport::Tcp).unwrap();
    (UserAgent::new(ep, cfg), udp, tcp)
}
