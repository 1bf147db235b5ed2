//! `ript-gateway run`: today the RIPT server answering calls with an echo application and the
//! SIP service (call mapping comes with a later issue), configured by [`crate::config`].

use crate::config::Settings;
use anyhow::Context;
use ript_h3::OutgoingMedia;
use ript_h3::server::{IncomingCall, Server, ServerOptions};
use ript_h3::tls::Identity;
use ript_proto::events::EventKind;
use std::path::Path;
use std::sync::Arc;
use tracing::{Instrument, info, info_span, warn};

/// Feeds SIP message counts into the admin API's registry.
#[derive(Debug)]
struct SipMetrics(admin_api::Metrics, Option<String>);

impl sip_transport::Observer for SipMetrics {
    fn message(
        &self,
        direction: sip_transport::observe::Direction,
        info: sip_transport::observe::MessageInfo<'_>,
    ) {
        use sip_transport::observe::{Direction as D, MessageInfo as M};
        let flow = match direction {
            D::In => admin_api::Flow::In,
            D::Out => admin_api::Flow::Out,
        };
        if let Some(label) = &self.1 {
            let arrow = if flow == admin_api::Flow::In {
                "<-"
            } else {
                "->"
            };
            match info {
                M::Request { method } => ladder(label, &format!("SIP  {arrow} {method}")),
                M::Response { status, method } => {
                    ladder(label, &format!("SIP  {arrow} {status} ({method})"));
                }
            }
        }
        match info {
            M::Request { method } => self.0.sip_request(flow, method),
            M::Response { status, method } => self.0.sip_response(flow, method, status),
        }
    }
}

/// One line of `ript-gateway demo`'s ladder.
pub fn ladder(label: &str, what: &str) {
    say(&format!("  {label:>9} | {what}"));
}

/// Feeds RIPT request counts into the admin API's registry.
#[derive(Debug)]
struct RiptMetrics(admin_api::Metrics, Option<String>);

impl ript_h3::server::RequestObserver for RiptMetrics {
    fn request(&self, resource: &'static str, status: Option<u16>) {
        if let Some(label) = &self.1 {
            let status = status.map_or_else(|| "-".to_owned(), |s| s.to_string());
            ladder(label, &format!("RIPT <- {resource} {status}"));
        }
        self.0.ript_request(resource, status);
    }
}

/// Loads the dev identity from `dir`, generating it on first start.
fn identity(dir: &Path) -> anyhow::Result<Identity> {
    let (cert, key) = (dir.join("ript-cert.pem"), dir.join("ript-key.pem"));
    if cert.exists() && key.exists() {
        let c = std::fs::read(&cert).with_context(|| format!("reading {}", cert.display()))?;
        let k = std::fs::read(&key).with_context(|| format!("reading {}", key.display()))?;
        return Identity::from_pem(&c, &k)
            .with_context(|| format!("{} / {}", cert.display(), key.display()));
    }
    let id = Identity::self_signed(&["localhost", "127.0.0.1", "::1"])?;
    std::fs::write(&cert, id.cert_pem()).with_context(|| format!("writing {}", cert.display()))?;
    write_secret(&key, id.key_pem().as_bytes())?;
    info!(cert = %cert.display(), "generated a self-signed development certificate (clients must pin it)");
    Ok(id)
}

pub(crate) fn write_secret(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(content)?;
    Ok(())
}

/// The configured token, else the one stored under `file` in `dir`, else a new one stored
/// there (0600) and printed once: the operator must learn it.
fn token(dir: &Path, file: &str, what: &str, given: Option<String>) -> anyhow::Result<String> {
    if let Some(t) = given {
        return Ok(t);
    }
    let path = dir.join(file);
    if let Ok(t) = std::fs::read_to_string(&path) {
        return Ok(t.trim().to_owned());
    }
    let t = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    write_secret(&path, t.as_bytes())?;
    say(&format!(
        "generated {what} (stored in {}): {t}",
        path.display()
    ));
    Ok(t)
}

/// The configured instance id, else the one stored in `<dir>/instance-id`, else a new one
/// (`gw-` and 12 hex digits) stored there: it must survive restarts so the instance finds its
/// own stale call snapshots.
fn instance_id(dir: &Path, given: Option<String>) -> anyhow::Result<String> {
    if let Some(i) = given {
        return Ok(i);
    }
    let path = dir.join("instance-id");
    match std::fs::read_to_string(&path) {
        Ok(i) => {
            let i = i.trim().to_owned();
            crate::config::instance_id_ok(&i)
                .map_err(|r| anyhow::anyhow!("instance_id: {} holds {r}", path.display()))?;
            Ok(i)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut hex = uuid::Uuid::new_v4().simple().to_string();
            hex.truncate(12);
            let i = format!("gw-{hex}");
            std::fs::write(&path, format!("{i}\n"))
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(i)
        }
        Err(e) => Err(anyhow::anyhow!("instance_id: {}: {e}", path.display())),
    }
}

/// The 32-byte key for secrets at rest: read from `path`, or drawn from the OS generator and
/// stored there (0600) on first start. Losing it makes stored secrets unreadable, so a file of
/// the wrong size is refused rather than replaced.
fn secret_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    match std::fs::read(path) {
        Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
            anyhow::anyhow!(
                "secret_key_file: {} holds {} bytes, expected 32",
                path.display(),
                bytes.len()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use rand::TryRngCore;
            let mut key = [0u8; 32];
            rand::rngs::OsRng
                .try_fill_bytes(&mut key)
                .map_err(|e| anyhow::anyhow!("secret_key_file: no randomness: {e}"))?;
            // create_new: two instances starting at once on one shared key file must not
            // overwrite each other's key; the loser reads the winner's.
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
            {
                Ok(mut f) => {
                    f.write_all(&key).context("secret_key_file")?;
                    info!(path = %path.display(), "generated the key for secrets at rest (back it up)");
                    Ok(key)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => secret_key(path),
                Err(e) => Err(anyhow::anyhow!("secret_key_file: {}: {e}", path.display())),
            }
        }
        Err(e) => Err(anyhow::anyhow!("secret_key_file: {}: {e}", path.display())),
    }
}

/// `/readyz` says "not ready" until the SIP and RIPT listeners are bound: the admin API
/// comes up first so its port is known, but a load balancer must not send calls yet.
#[derive(Debug, Default)]
struct Listeners {
    up: std::sync::atomic::AtomicBool,
}

impl admin_api::ReadinessProbe for Listeners {
    fn not_ready(&self) -> Vec<&'static str> {
        if self.up.load(std::sync::atomic::Ordering::Acquire) {
            Vec::new()
        } else {
            vec!["listeners"]
        }
    }
}

/// Connects to the configured database and applies the migrations (idempotent; sqlx records
/// what ran, so several instances starting on one Postgres do not apply a migration twice).
async fn open_store(url: &str, key: [u8; 32]) -> anyhow::Result<store::Store> {
    let st = store::Store::connect(url, store::SecretKey::from_bytes(key))
        .await
        .with_context(|| {
            format!(
                "database_url: cannot connect to {}",
                crate::config::redact_url(url)
            )
        })?;
    st.migrate().await.context("database_url: migrations")?;
    Ok(st)
}

/// `ript-gateway migrate`.
pub async fn migrate(s: Settings) -> anyhow::Result<()> {
    std::fs::create_dir_all(&s.data_dir)
        .with_context(|| format!("data_dir: creating {}", s.data_dir.display()))?;
    let key = secret_key(&s.secret_key_file)?;
    let st = open_store(&s.database_url, key).await?;
    let v = st
        .config_version()
        .await
        .context("reading the configuration version")?;
    say(&format!(
        "migrations applied to {} (configuration version {v})",
        crate::config::redact_url(&s.database_url)
    ));
    st.close().await;
    Ok(())
}

/// Runs until SIGTERM or Ctrl-C. `s` is already validated: everything here that can still
/// fail (files in the data directory, certificates) happens before any socket is bound.
pub async fn run(s: Settings) -> anyhow::Result<()> {
    run_until(s, shutdown_signal(), None).await
}

/// What an in-process gateway reports once it serves (`ript-gateway demo`).
#[derive(Debug)]
pub struct Started {
    pub admin: std::net::SocketAddr,
    pub admin_token: String,
    pub sip_udp: Option<std::net::SocketAddr>,
    pub ript_root: String,
    pub cert_pem: String,
}

/// [`run`] until `shutdown` resolves, reporting the bound addresses on `started`.
pub async fn run_until(
    s: Settings,
    shutdown: impl std::future::Future<Output = ()>,
    started: Option<tokio::sync::oneshot::Sender<Started>>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&s.data_dir)
        .with_context(|| format!("data_dir: creating {}", s.data_dir.display()))?;
    let id = identity(&s.data_dir)?;
    // The dev certificate also serves `tls:` SIP listeners unless one is configured.
    let dev_pem = (id.cert_pem(), id.key_pem());
    let dev_cert_pem = dev_pem.0.clone();
    // Created now so the operator learns them on first start; the admin API and the store
    // (issue 4, part 2) take them over.
    let admin_token = token(&s.data_dir, "admin-token", "admin API token", s.admin.token)?;
    let token = token(&s.data_dir, "ript-token", "RIPT bearer token", s.ript.token)?;
    let key = secret_key(&s.secret_key_file)?;
    let store = open_store(&s.database_url, key).await?;
    let auth = admin_api::AdminAuth::none()
        .with_static_token(&admin_token)
        .map_err(|e| anyhow::anyhow!("admin.token: {e}"))?
        .with_store_tokens();
    // One registry: the admin router renders it, the SIP and RIPT observers feed it.
    let metrics = admin_api::Metrics::new();
    let listeners = Arc::new(Listeners::default());
    let instance_id = instance_id(&s.data_dir, s.instance_id)?;
    let live = crate::live::LiveCalls::new(instance_id.clone(), store.clone(), metrics.clone());
    live.clear_stale().await;
    let admin = admin_api::router(
        admin_api::AdminState::new(store.clone(), auth, metrics.clone())
            .with_readiness(listeners.clone())
            .with_instance_id(instance_id.clone())
            .with_call_control(live.clone()),
    );
    let admin_listener = tokio::net::TcpListener::bind(s.admin.listen)
        .await
        .with_context(|| format!("admin.listen: binding {}", s.admin.listen))?;
    let admin_addr = admin_listener.local_addr()?;
    let admin_token_copy = admin_token.clone();
    say(&format!("instance id: {instance_id}"));
    say(&format!(
        "admin api listening on http://{}",
        admin_listener.local_addr()?
    ));
    tokio::spawn(async move {
        if let Err(e) = admin_api::serve(admin_listener, admin).await {
            warn!(error = %e, "admin api stopped");
        }
    });
    let ript_app = crate::ript_app::StoreApp::new(store.clone(), token);
    let mut opts = ServerOptions::new(s.ript.listen, id, vec![crate::ript_app::echo_tg()?]);
    opts.customer_tgs = crate::ript_app::load_registrations(&store).await;
    opts.authority = s.ript.authority.clone();
    opts.enable_datagrams = s.ript.datagrams;
    opts.observer = Some(Arc::new(RiptMetrics(metrics.clone(), s.ladder.clone())));
    let admission = crate::sip::Admission {
        allow: s.sip.allow,
        users: s.sip.users,
        algorithms: s.sip.digest_algorithms,
    };
    let listen = s.sip.listen;
    let tls_server = if listen
        .iter()
        .any(|l| l.transport == sip_transport::Transport::Tls)
    {
        Some(match &s.sip.tls_cert_key {
            Some((c, k)) => sip_transport::tls::server_config_from_files(c, k)
                .context("sip.tls.cert / sip.tls.key")?,
            None => sip_transport::tls::server_config_from_pem(
                dev_pem.0.as_bytes(),
                dev_pem.1.as_bytes(),
            )
            .context("the dev certificate for SIP over TLS")?,
        })
    } else {
        None
    };
    let system_roots = std::path::Path::new(sip_transport::tls::SYSTEM_CA_BUNDLE).exists();
    let tls_client = match (&s.sip.tls_ca, system_roots) {
        (None, false) => None,
        (ca, system) => Some(
            sip_transport::tls::client_config_from_file(ca.as_deref(), system)
                .context("sip.tls.ca")?,
        ),
    };
    let cfg = sip_transport::EndpointConfig {
        listen,
        tls_server,
        tls_client,
        observer: Some(Arc::new(SipMetrics(metrics.clone(), s.ladder.clone()))),
        rate_per_sec: s.sip.rate_per_sec,
        ..Default::default()
    };
    let endpoint = sip_transport::Endpoint::bind(cfg)
        .await
        .context("starting the SIP listeners")?;
    let sip_udp = endpoint
        .local()
        .iter()
        .find(|l| l.transport == sip_transport::Transport::Udp)
        .map(|l| l.addr);
    for l in endpoint.local() {
        say(&format!(
            "sip listening on {}:{}",
            l.transport.as_str().to_ascii_lowercase(),
            l.addr
        ));
    }
    let registrations = crate::sip::start_registrations(&endpoint, &s.sip.register)
        .await
        .context("sip.register")?;
    let (peers_tx, peers_rx) = tokio::sync::watch::channel(crate::sip::Admission::default());
    tokio::spawn(crate::sip::follow_peers(store.clone(), peers_tx));
    let (routing_tx, routing_rx) =
        tokio::sync::watch::channel(Arc::new(crate::routing::Snapshot::default()));
    tokio::spawn(crate::routing::follow(
        store.clone(),
        routing_tx,
        metrics.clone(),
    ));
    // RTP toward SIP peers from the configured address, else the first SIP listener's.
    let first_sip = endpoint.local().first().map(|l| l.addr.ip());
    let media_ip = s
        .media
        .address
        .or(first_sip.filter(|ip| !ip.is_unspecified()))
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    let sip_domain = endpoint
        .local()
        .first()
        .map_or_else(|| "localhost".to_owned(), |l| l.addr.to_string());
    let ua = sip_ua::UserAgent::new(endpoint, sip_ua::UaConfig::default());
    let gw = Arc::new(crate::calls::Gw {
        caller: ua.caller(),
        routing: routing_rx,
        limits: Arc::new(crate::routing::Limits::default()),
        live: live.clone(),
        ports: media_relay::PortAllocator::new(media_ip, s.media.rtp_ports),
        media_ip: media_ip.to_string(),
        sip_domain,
        clients: crate::calls::RiptClients::default(),
        instance_id: instance_id.clone(),
        ladder: s.ladder.clone(),
    });
    tokio::spawn(crate::sip::serve(ua, admission, peers_rx, Some(gw.clone())));
    ript_app.set_routing(gw.routing.clone(), gw.limits.clone());
    let mut server = Server::bind(opts, ript_app.clone())
        .await
        .context("starting the RIPT server")?;
    // Our customer TGs, registered with the upstreams that may call us (ript-inbound).
    tokio::spawn(crate::customer_tg::follow(
        store.clone(),
        gw.routing.clone(),
        server.root_url(),
    ));
    let ca_dir = s.data_dir.join("tg-ca");
    crate::ript_app::follow_hosted_tgs(store.clone(), server.handle(), ript_app, ca_dir).await?;
    let addr = server.local_addr()?;
    say(&format!(
        "dev certificate: {}",
        s.data_dir.join("ript-cert.pem").display()
    ));
    listeners
        .up
        .store(true, std::sync::atomic::Ordering::Release);
    say(&format!(
        "ript listening on https://{addr}{}",
        ript_proto::ROOT_PATH
    ));
    if let Some(tx) = started {
        let _ = tx.send(Started {
            admin: admin_addr,
            admin_token: admin_token_copy,
            sip_udp,
            ript_root: format!("https://{addr}"),
            cert_pem: dev_cert_pem.clone(),
        });
    }
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            call = server.next_call() => match call {
                Some(c) if c.tg == crate::ript_app::ECHO_TG => {
                    tokio::spawn(echo(c, live.clone()));
                }
                Some(c) => {
                    tokio::spawn(crate::calls::ript_to_sip(gw.clone(), c));
                }
                None => break,
            },
            () = &mut shutdown => {
                info!("shutting down");
                server.close();
                crate::sip::unregister_all(registrations).await;
                break;
            }
        }
    }
    Ok(())
}

/// Silences the start-up lines (`ript-gateway demo` runs two gateways and prints its own).
pub static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Operator output on stdout; a closed stdout (EPIPE) must not stop the gateway.
fn say(line: &str) {
    if QUIET.load(std::sync::atomic::Ordering::Relaxed) && !line.starts_with("  ") {
        return;
    }
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Answers and echoes every media chunk back on the server's first stream. The call is a live
/// call like any other: listed by the admin API, hung up by it, counted, and given a CDR.
async fn echo(c: IncomingCall, live: Arc<crate::live::LiveCalls>) {
    let call = live
        .start(crate::live::NewCall {
            direction: admin_api::Direction::RiptToSip,
            sip_call_id: None,
            ript_call_id: Some(c.description.uri.clone()),
        })
        .await;
    let span = info_span!("call", id = %call.id(), ript = %c.description.uri);
    echo_call(c, call).instrument(span).await;
}

async fn echo_call(mut c: IncomingCall, mut call: crate::live::LiveCall) {
    // Numbers stay out of info-level logs.
    tracing::debug!(to = %c.description.to, "call");
    let mut end = crate::live::Ending {
        bucket: "answered",
        caller: c.description.from.clone(),
        callee: c.description.to.clone(),
        source: store::model::Endpoint {
            kind: store::model::EndpointKind::HostedTg,
            id: c.tg.clone(),
        },
        target: None,
        route_id: None,
        sip_codec: None,
        ript_codec: None,
        sip_status: None,
        ript_reason: None,
        media: store::cdr::MediaCounters::default(),
    };
    if let Err(e) = c.control.state(EventKind::Answered, None).await {
        warn!(error = %e, "cannot answer");
        end.bucket = "failed";
        end.ript_reason = Some("failed".to_owned());
        call.finish(end).await;
        return;
    }
    call.set_state("answered").await;
    let (mut received, mut sent) = (0u64, 0u64);
    let mut stats = None;
    loop {
        tokio::select! {
            ev = c.events.recv() => match ev {
                Some(ript_h3::CallEvent::Media(m)) => {
                    received += 1;
                    if end.ript_codec.is_none() {
                        end.ript_codec = Some(m.payload_type.codec_name().map_or_else(
                            || format!("pt{}", m.payload_type.0),
                            str::to_owned,
                        ));
                    }
                    let back = OutgoingMedia {
                        source: 1,
                        sink: m.source,
                        payload_type: m.payload_type,
                        timestamp_ms: m.timestamp_ms.unwrap_or_else(ript_h3::wall_ms),
                        media: m.media,
                        marker: m.marker,
                        audio_level: m.audio_level,
                    };
                    match c.control.send_media(back) {
                        Ok(()) => sent += 1,
                        Err(ript_h3::Error::Backpressure) => {}
                        Err(_) => break,
                    }
                }
                Some(ript_h3::CallEvent::Ended(state, reason)) => {
                    info!(%state, ?reason, "call ended");
                    end.ript_reason = Some(state.to_string());
                    break;
                }
                Some(_) => {}
                None => break,
            },
            () = call.hang_up_requested() => {
                info!("hung up through the admin API");
                stats = c.control.stats().await.ok();
                let reason = ript_proto::model::Reason {
                    sip: None,
                    text: Some("ended by the operator".to_owned()),
                };
                if let Err(e) = c.control.state(EventKind::End, Some(reason)).await {
                    warn!(error = %e, "cannot end the call");
                }
                end.ript_reason = Some("end".to_owned());
                break;
            }
        }
    }
    if stats.is_none() {
        stats = c.control.stats().await.ok();
    }
    end.media = store::cdr::MediaCounters {
        rtp_packets_in: 0,
        rtp_packets_out: 0,
        ript_chunks_in: received,
        ript_chunks_out: sent,
        packets_lost: stats.map_or(0, |s| s.sent.saturating_sub(s.acked)),
    };
    call.finish(end).await;
}
