//! `ript-gateway probe`: RIPT's `curl`. Lists TGs, shows one with its advertisement,
//! registers a handler and, on request, places a test call with a 1 kHz tone and prints
//! per-call media statistics from the acknowledgements.

use crate::tone::Tone;
use ript_h3::client::{Client, ClientOptions};
use ript_h3::tls::Trust;
use ript_h3::{CallEvent, Error, OutgoingMedia};
use ript_proto::chunk::PayloadType;
use ript_proto::events::EventKind;
use ript_proto::model::{CallCreate, Handler, Reason};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Distinct exit codes so scripts can tell failures apart.
pub mod exit {
    pub const TLS_OR_CONNECT: u8 = 2;
    pub const AUTH: u8 = 3;
    pub const PROTOCOL: u8 = 4;
    pub const CALL: u8 = 5;
    pub const USAGE: u8 = 64;
}

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// Server root, e.g. https://127.0.0.1:8443 (the well-known path is added).
    #[arg(long)]
    root: String,
    /// Bearer token.
    // Tokens issued by the admin API are URL-safe base64 and may start with '-'.
    #[arg(
        long,
        env = "RIPT_TOKEN",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    token: String,
    /// PEM bundle to trust (a CA, or a pinned dev certificate); default: the system roots.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// TG URI to use (default: the first one listed).
    #[arg(long)]
    tg: Option<String>,
    /// Place a test call to this destination (E.164 or number@domain).
    #[arg(long)]
    call: Option<String>,
    /// Seconds of 1 kHz tone to send on the test call.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Use media byways instead of datagrams.
    #[arg(long)]
    byways: bool,
}

fn fail(e: &Error, what: &str) -> ExitCode {
    let code = match e {
        Error::Status { status: 401, .. } => exit::AUTH,
        Error::Connect(_)
        | Error::Connection(_)
        | Error::Timeout(_)
        | Error::Io(_)
        | Error::H3(_)
        | Error::Tls(_) => exit::TLS_OR_CONNECT,
        _ => exit::PROTOCOL,
    };
    let hint = match code {
        exit::AUTH => " (check the token)",
        exit::TLS_OR_CONNECT => {
            " (check the address, and that --ca names the server's certificate or CA)"
        }
        _ => "",
    };
    eprintln!("probe: {what} failed: {e}{hint}");
    ExitCode::from(code)
}

pub async fn probe(a: ProbeArgs) -> ExitCode {
    let ca_path =
        a.ca.clone()
            .unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
    let trust = match std::fs::read(&ca_path)
        .map_err(|e| e.to_string())
        .and_then(|p| Trust::from_pem(&p).map_err(|e| e.to_string()))
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("probe: cannot load trust from {}: {e}", ca_path.display());
            return ExitCode::from(exit::USAGE);
        }
    };
    let mut opts = ClientOptions::new(trust, a.token.clone());
    opts.prefer_datagrams = !a.byways;
    opts.request_timeout = Duration::from_secs(5);
    let client = match Client::new(opts) {
        Ok(c) => c,
        Err(e) => return fail(&e, "client setup"),
    };
    let root = format!("{}{}", a.root.trim_end_matches('/'), ript_proto::ROOT_PATH);
    let tgs = match client.provider_tgs(&root).await {
        Ok(t) => t,
        Err(e) => return fail(&e, "GET providertgs"),
    };
    println!("trunk groups ({}):", tgs.providertgs.len());
    for t in &tgs.providertgs {
        println!("  {}  {}  {}", t.uri, t.name, t.description);
    }
    let Some(tg_uri) =
        a.tg.clone()
            .or_else(|| tgs.providertgs.first().map(|t| t.uri.clone()))
    else {
        eprintln!("probe: the token sees no trunk group");
        return ExitCode::from(exit::PROTOCOL);
    };
    let tg = match client.tg(&tg_uri).await {
        Ok(t) => t,
        Err(e) => return fail(&e, "GET tg"),
    };
    let timers = tg.timers();
    println!("tg {}:", tg.uri);
    println!("  name: {}", tg.name);
    println!("  destinations: {}", tg.outbound.destinations);
    println!("  advertisement: {}", tg.advertisement);
    println!(
        "  retry-backoff: {} ms, media-timeout: {} ms, ack-timeout: {} ms",
        timers.retry_backoff_ms, timers.media_timeout_ms, timers.ack_timeout_ms
    );
    let handler = Handler {
        handler_id: format!("probe-{}", uuid::Uuid::new_v4().simple()),
        advertisement: "1 out: PCMU; 1 in: PCMU; PCMA; opus;".into(),
        uri: None,
    };
    let handler = match client.register_handler(&tg.uri, &handler).await {
        Ok(h) => h,
        Err(e) => return fail(&e, "POST handlers"),
    };
    let handler_uri = handler.uri.clone().unwrap_or_default();
    println!("handler registered: {handler_uri}");
    let code = match &a.call {
        Some(dest) => test_call(&client, &tg.uri, &handler_uri, dest, a.seconds, timers).await,
        None => ExitCode::SUCCESS,
    };
    if let Err(e) = client.delete(&handler_uri).await {
        eprintln!("probe: could not remove the handler: {e}");
    }
    code
}

async fn test_call(
    client: &Client,
    tg: &str,
    handler: &str,
    dest: &str,
    seconds: u64,
    timers: ript_proto::model::CallTimers,
) -> ExitCode {
    let create = CallCreate {
        handler: handler.to_owned(),
        destination: dest.to_owned(),
        passport: None,
    };
    let d = match client.create_call(tg, &create).await {
        Ok(d) => d,
        Err(e) => return fail(&e, "POST calls"),
    };
    println!(
        "call {} (client directives: {:?}, server directives: {:?})",
        d.uri, d.client_directives, d.server_directives
    );
    let mut call = client.start_call(&d, timers);
    let answered = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(ev) = call.events.recv().await {
            match ev {
                CallEvent::State(k, _) => {
                    println!("  event: {k}");
                    if k == EventKind::Answered {
                        return Ok(());
                    }
                }
                CallEvent::MediaPath(p) => println!("  media path: {p:?}"),
                CallEvent::Ended(k, r) => return Err(format!("{k} {r:?}")),
                _ => {}
            }
        }
        Err("call task ended".to_owned())
    })
    .await;
    match answered {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("probe: call not answered: {e}");
            return ExitCode::from(exit::CALL);
        }
        Err(_) => {
            eprintln!("probe: no answer within 15 s");
            let _ = call.control.end(None).await;
            return ExitCode::from(exit::CALL);
        }
    }
    let mut tone = Tone::default();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let packets = seconds * 50;
    let mut received = 0u64;
    for i in 0..packets {
        tick.tick().await;
        let m = OutgoingMedia {
            source: 1,
            sink: 1,
            payload_type: PayloadType::PCMU,
            timestamp_ms: ript_h3::wall_ms(),
            media: tone.next_packet(),
            marker: i == 0,
            audio_level: Some(20),
        };
        if call.control.send_media(m).is_err() {
            eprintln!("probe: the call ended while sending");
            return ExitCode::from(exit::CALL);
        }
        while let Ok(ev) = call.events.try_recv() {
            if matches!(ev, CallEvent::Media(_)) {
                received += 1;
            }
        }
    }
    // Let the last acks and echoes arrive: until everything sent is acknowledged, bounded
    // by twice the ack-timeout (what is still missing then is reported as lost).
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(2 * timers.ack_timeout_ms.max(500));
    let mut stats = call.control.stats().await.unwrap_or_default();
    while stats.acked < stats.sent && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(20), call.events.recv()).await {
            Ok(Some(CallEvent::Media(_))) => received += 1,
            Ok(None) => break,
            _ => {}
        }
        stats = call.control.stats().await.unwrap_or_default();
    }
    // Echoes of the last chunks trail their acks slightly.
    while let Ok(Some(ev)) =
        tokio::time::timeout(Duration::from_millis(100), call.events.recv()).await
    {
        if matches!(ev, CallEvent::Media(_)) {
            received += 1;
        }
    }
    let _ = call.control.end(Some(Reason::sip(200, "probe done"))).await;
    println!("media stats:");
    println!(
        "  path: {}",
        if stats.datagrams {
            "datagrams"
        } else {
            "byways"
        }
    );
    println!("  sent: {}", stats.sent);
    println!("  acked: {}", stats.acked);
    println!("  lost: {}", stats.sent.saturating_sub(stats.acked));
    println!("  received: {received}");
    println!("  rtt p50: {:.2} ms", stats.rtt_p50_ms);
    println!("  rtt p99: {:.2} ms", stats.rtt_p99_ms);
    ExitCode::SUCCESS
}
