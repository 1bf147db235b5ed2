//! Two endpoints on loopback talking over real sockets.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod connections;
mod invite;
mod requests;

use sip_proto::msg::{Method, Request, Response};
use sip_transport::{Endpoint, EndpointConfig, Event, Incoming, Listen, Target, Transport};
use std::future::Future;
use std::time::Duration;

/// Failure guard only: every awaited event is expected well before this.
const GUARD: Duration = Duration::from_secs(10);

async fn guard<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(GUARD, f)
        .await
        .expect("timed out waiting for an event")
}

fn listen(specs: &str) -> Vec<Listen> {
    Listen::parse_list(specs).unwrap()
}

async fn endpoint(specs: &str) -> Endpoint {
    Endpoint::bind(EndpointConfig {
        listen: listen(specs),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// A self-signed certificate for localhost, 127.0.0.1 and ::1: (cert PEM, key PEM).
fn self_signed() -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])
    .unwrap();
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

/// A TLS server endpoint with `cert`, also trusting `trust` as a client.
async fn tls_endpoint(specs: &str, cert: &(String, String), trust: &str) -> Endpoint {
    Endpoint::bind(EndpointConfig {
        listen: listen(specs),
        tls_server: Some(
            sip_transport::tls::server_config_from_pem(cert.0.as_bytes(), cert.1.as_bytes())
                .unwrap(),
        ),
        tls_client: Some(sip_transport::tls::client_config(Some(trust.as_bytes()), false).unwrap()),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn request(method: Method, call_id: &str, cseq: u32) -> Request {
    Request::new(method.clone(), "sip:peer@example.com")
        .unwrap()
        .with_header("From", "<sip:alice@example.com>;tag=a1")
        .unwrap()
        .with_header("To", "<sip:peer@example.com>")
        .unwrap()
        .with_header("Call-ID", call_id)
        .unwrap()
        .with_header("CSeq", &format!("{cseq} {method}"))
        .unwrap()
}

fn target(ep: &Endpoint, transport: Transport) -> Target {
    Target::new(transport, ep.local_addr(transport).unwrap())
}

/// Answers every request on `ep` with 200 and reports each one it saw.
fn serve_200(mut ep: Endpoint) -> tokio::sync::mpsc::UnboundedReceiver<Incoming> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let h = ep.handle();
    tokio::spawn(async move {
        while let Some(ev) = ep.next_event().await {
            if let Event::Request(inc) = ev {
                let resp = Response::for_request(&inc.request, 200, "OK", "srv").unwrap();
                h.respond(inc.txn, resp).await.unwrap();
                let _ = tx.send(inc);
            }
        }
    });
    rx
}
