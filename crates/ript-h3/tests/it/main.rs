//! RIPT client and server of this crate talking over real quinn on loopback.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod calls;
mod config;
mod hostile;
mod resources;

use ript_h3::client::{Client, ClientOptions, OutboundCall};
use ript_h3::server::{AuthFuture, HostedTg, IncomingCall, Server, ServerApp, ServerOptions};
use ript_h3::tls::{Identity, Trust};
use ript_h3::{CallEvent, OutgoingMedia};
use ript_proto::adv::Advertisement;
use ript_proto::chunk::PayloadType;
use ript_proto::model::{CallCreate, CallDescription, CallTimers, Handler};
use std::sync::Arc;
use std::time::Duration;

pub const TOKEN_A: &str = "token-of-tenant-a";
pub const TOKEN_B: &str = "token-of-tenant-b";

struct App;

impl ServerApp for App {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        let tenant = match token {
            TOKEN_A => Some("tenant-a".into()),
            TOKEN_B => Some("tenant-b".into()),
            _ => None,
        };
        Box::pin(std::future::ready(tenant))
    }

    fn admit_call(
        &self,
        _t: &str,
        _tg: &HostedTg,
        call: &CallCreate,
    ) -> Result<(), ript_proto::Error> {
        // +1999… numbers have no route behind this TG.
        if call.destination.starts_with("+1999") {
            return Err(ript_proto::Error::DestinationUnreachable);
        }
        Ok(())
    }
}

pub fn tg(id: &str, tenant: &str) -> HostedTg {
    HostedTg {
        id: id.into(),
        name: format!("{id} trunk"),
        description: "test trunk group".into(),
        tenants: vec![tenant.into()],
        destinations: "*,!+1900*".parse().unwrap(),
        vouch: "+1408*".parse().unwrap(),
        advertisement: "1 in: opus; PCMU; 1 out: PCMU; opus;".parse().unwrap(),
        timers: CallTimers::default(),
        require_passport: false,
        trust_anchors: vec![],
        ca: None,
    }
}

#[derive(Debug)]
pub struct Harness {
    pub server: Server,
    pub identity: Identity,
    pub root: String,
    pub tg: String,
}

pub async fn harness_with(f: impl FnOnce(&mut ServerOptions)) -> Harness {
    let identity = Identity::self_signed(&["localhost", "127.0.0.1"]).unwrap();
    let mut opts = ServerOptions::new(
        "127.0.0.1:0".parse().unwrap(),
        identity.clone(),
        vec![tg("main", "tenant-a"), tg("other", "tenant-b")],
    );
    f(&mut opts);
    let server = Server::bind(opts, Arc::new(App)).await.unwrap();
    let root = server.root_url();
    let tg = server.tg_url("main");
    Harness {
        server,
        identity,
        root,
        tg,
    }
}

pub async fn harness() -> Harness {
    harness_with(|_| {}).await
}

impl Harness {
    pub fn client_with(&self, token: &str, datagrams: bool) -> Client {
        let trust = Trust::from_pem(self.identity.cert_pem().as_bytes()).unwrap();
        let mut o = ClientOptions::new(trust, token);
        o.prefer_datagrams = datagrams;
        o.request_timeout = Duration::from_secs(5);
        Client::new(o).unwrap()
    }

    pub fn client(&self) -> Client {
        self.client_with(TOKEN_A, true)
    }

    pub async fn handler(&self, c: &Client) -> Handler {
        let h = Handler {
            handler_id: "h1".into(),
            advertisement: "1 out: PCMU; 1 in: PCMU; opus;".into(),
            uri: None,
        };
        c.register_handler(&self.tg, &h).await.unwrap()
    }

    /// Creates a call and returns both ends.
    pub async fn call(&mut self, c: &Client) -> (CallDescription, OutboundCall, IncomingCall) {
        let h = self.handler(c).await;
        let d = c
            .create_call(
                &self.tg,
                &CallCreate {
                    handler: h.uri.unwrap(),
                    destination: "+14089529999".into(),
                    passport: None,
                },
            )
            .await
            .unwrap();
        let out = c.start_call(&d, CallTimers::default());
        let inc = within(self.server.next_call()).await.unwrap();
        (d, out, inc)
    }
}

/// Every await in these tests is bounded: a hang is a failure, not a stuck CI.
pub async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("timed out")
}

/// The next event matching `pred`, skipping others.
pub async fn next_matching(
    rx: &mut tokio::sync::mpsc::Receiver<CallEvent>,
    pred: impl Fn(&CallEvent) -> bool,
) -> CallEvent {
    within(async {
        loop {
            let e = rx.recv().await.expect("event channel closed");
            if pred(&e) {
                return e;
            }
        }
    })
    .await
}

pub fn pcmu(source: u8, sink: u8, n: u8) -> OutgoingMedia {
    OutgoingMedia {
        source,
        sink,
        payload_type: PayloadType::PCMU,
        timestamp_ms: ript_h3::wall_ms(),
        media: vec![n; 160],
        marker: n == 0,
        audio_level: Some(30),
    }
}

#[test]
fn advertisement_of_the_test_tg_parses() {
    let a: Advertisement = "1 in: opus; PCMU; 1 out: PCMU; opus;".parse().unwrap();
    assert_eq!(a.streams.len(), 2);
}
