//! `ript-gateway run`: today the RIPT server on its embedded defaults, answering calls with
//! an echo application (the SIP side and call mapping come with later issues).

use anyhow::Context;
use ript_h3::OutgoingMedia;
use ript_h3::server::{HostedTg, IncomingCall, Server, ServerApp, ServerOptions};
use ript_h3::tls::Identity;
use ript_proto::events::EventKind;
use ript_proto::model::CallTimers;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::{Instrument, info, info_span, warn};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// RIPT (HTTP/3) listen address.
    #[arg(long, env = "RIPT_HTTP3_LISTEN", default_value = "127.0.0.1:8443")]
    listen: std::net::SocketAddr,
    /// Where the dev certificate and the token live.
    #[arg(long, env = "RIPT_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// `host:port` written into every URI (Location, call URIs, x5u); required when listening
    /// on an unspecified address such as 0.0.0.0.
    #[arg(long, env = "RIPT_AUTHORITY")]
    authority: Option<String>,
    /// SIP listeners, e.g. `udp:127.0.0.1:5060,tcp:127.0.0.1:5060`.
    #[arg(
        long,
        env = "RIPT_SIP_LISTEN",
        default_value = "udp:127.0.0.1:5060,tcp:127.0.0.1:5060"
    )]
    sip_listen: String,
    /// Certificate chain (PEM) of `tls:` SIP listeners; the RIPT dev certificate by default.
    #[arg(long, env = "RIPT_SIP_TLS_CERT", requires = "sip_tls_key")]
    sip_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of `tls:` SIP listeners.
    #[arg(long, env = "RIPT_SIP_TLS_KEY", requires = "sip_tls_cert")]
    sip_tls_key: Option<PathBuf>,
    /// CA bundle (PEM) trusted for outgoing SIP over TLS, besides the system bundle.
    #[arg(long, env = "RIPT_SIP_TLS_CA")]
    sip_tls_ca: Option<PathBuf>,
    /// SIP peers admitted by source address (comma-separated IPs or CIDRs).
    #[arg(long, env = "RIPT_SIP_ALLOW", default_value = "127.0.0.1/32,::1/128")]
    sip_allow: String,
    /// SIP peers admitted by digest: `user:password,...` (realm `ript-gateway`).
    #[arg(
        long,
        env = "RIPT_SIP_USERS",
        hide_env_values = true,
        default_value = ""
    )]
    sip_users: String,
    /// Digest algorithms offered, strongest first. Some UAs (SIPp, older PBXs) answer only
    /// the first challenge and only MD5: list `MD5` alone for them.
    #[arg(
        long,
        env = "RIPT_SIP_DIGEST_ALGORITHMS",
        default_value = "SHA-256,MD5"
    )]
    sip_digest_algorithms: String,
    /// Upstream registrations we keep: `user:password@host:port[/udp|/tcp|/tls]`, comma-separated
    /// (the AOR is `sip:user@host`; refreshes and back-off per RFC 3261 §10).
    #[arg(
        long,
        env = "RIPT_SIP_REGISTER",
        hide_env_values = true,
        default_value = ""
    )]
    sip_register: String,
    /// Bearer token customers present (generated and printed on first start when absent).
    #[arg(long, env = "RIPT_TOKEN")]
    token: Option<String>,
}

struct App {
    token: String,
}

impl ServerApp for App {
    fn authenticate(&self, token: &str) -> Option<String> {
        // Constant-time compare: the token is a secret.
        let (a, b) = (token.as_bytes(), self.token.as_bytes());
        let same =
            a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
        same.then(|| "default".to_owned())
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
    write_secret(&key, &id.key_pem())?;
    info!(cert = %cert.display(), "generated a self-signed development certificate (clients must pin it)");
    Ok(id)
}

fn write_secret(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(content.as_bytes())?;
    Ok(())
}

fn token(dir: &Path, given: Option<String>) -> anyhow::Result<String> {
    if let Some(t) = given {
        anyhow::ensure!(t.len() >= 16, "RIPT_TOKEN: must be at least 16 characters");
        return Ok(t);
    }
    let path = dir.join("ript-token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        return Ok(t.trim().to_owned());
    }
    let t = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    write_secret(&path, &t)?;
    say(&format!(
        "generated RIPT bearer token (stored in {}): {t}",
        path.display()
    ));
    Ok(t)
}

pub async fn run(a: RunArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.data_dir)
        .with_context(|| format!("creating {}", a.data_dir.display()))?;
    let id = identity(&a.data_dir)?;
    // The dev certificate also serves `tls:` SIP listeners unless one is configured.
    let dev_pem = (id.cert_pem(), id.key_pem());
    let token = token(&a.data_dir, a.token)?;
    let tg = HostedTg {
        id: "default".into(),
        name: "default".into(),
        description: "echo trunk group (calls are answered and media echoed)".into(),
        tenants: vec!["default".into()],
        destinations: ript_proto::pattern::NumberPattern::any(),
        vouch: "+*".parse()?,
        advertisement: "1 in: PCMU; PCMA; opus; 1 out: PCMU; PCMA; opus;".parse()?,
        timers: CallTimers::default(),
        require_passport: false,
        trust_anchors: vec![],
    };
    if a.listen.ip().is_unspecified() && a.authority.is_none() {
        anyhow::bail!(
            "RIPT_AUTHORITY: required when listening on {} (URIs must name a reachable host)",
            a.listen
        );
    }
    let mut opts = ServerOptions::new(a.listen, id, vec![tg]);
    opts.authority = a.authority.clone();
    let mut admission = sip_admission(&a.sip_allow, &a.sip_users)?;
    for alg in a
        .sip_digest_algorithms
        .split(',')
        .filter(|s| !s.trim().is_empty())
    {
        let alg = sip_proto::digest::Algorithm::from_token(alg.trim());
        anyhow::ensure!(
            alg.is_supported(),
            "RIPT_SIP_DIGEST_ALGORITHMS: {alg} is not supported"
        );
        admission.algorithms.push(alg);
    }
    let listen = sip_transport::Listen::parse_list(&a.sip_listen).context("RIPT_SIP_LISTEN")?;
    let tls_server = if listen
        .iter()
        .any(|l| l.transport == sip_transport::Transport::Tls)
    {
        Some(match (&a.sip_tls_cert, &a.sip_tls_key) {
            (Some(c), Some(k)) => sip_transport::tls::server_config_from_files(c, k)
                .context("RIPT_SIP_TLS_CERT / RIPT_SIP_TLS_KEY")?,
            _ => sip_transport::tls::server_config_from_pem(
                dev_pem.0.as_bytes(),
                dev_pem.1.as_bytes(),
            )
            .context("the dev certificate for SIP over TLS")?,
        })
    } else {
        None
    };
    let system_roots = std::path::Path::new(sip_transport::tls::SYSTEM_CA_BUNDLE).exists();
    let tls_client = match (&a.sip_tls_ca, system_roots) {
        (None, false) => None,
        (ca, system) => Some(
            sip_transport::tls::client_config_from_file(ca.as_deref(), system)
                .context("RIPT_SIP_TLS_CA")?,
        ),
    };
    let cfg = sip_transport::EndpointConfig {
        listen,
        tls_server,
        tls_client,
        ..Default::default()
    };
    let endpoint = sip_transport::Endpoint::bind(cfg)
        .await
        .context("starting the SIP listeners")?;
    for l in endpoint.local() {
        say(&format!(
            "sip listening on {}:{}",
            l.transport.as_str().to_ascii_lowercase(),
            l.addr
        ));
    }
    let registrations = crate::sip::start_registrations(&endpoint, &a.sip_register)
        .await
        .context("RIPT_SIP_REGISTER")?;
    tokio::spawn(crate::sip::serve(endpoint, admission));
    let mut server = Server::bind(opts, Arc::new(App { token }))
        .await
        .context("starting the RIPT server")?;
    let addr = server.local_addr()?;
    say(&format!(
        "dev certificate: {}",
        a.data_dir.join("ript-cert.pem").display()
    ));
    say(&format!(
        "ript listening on https://{addr}{}",
        ript_proto::ROOT_PATH
    ));
    loop {
        tokio::select! {
            call = server.next_call() => match call {
                Some(c) => {
                    let span = info_span!("call", call = %c.description.uri);
                    tokio::spawn(echo(c).instrument(span));
                }
                None => break,
            },
            _ = shutdown_signal() => {
                info!("shutting down");
                server.close();
                crate::sip::unregister_all(registrations).await;
                break;
            }
        }
    }
    Ok(())
}

fn sip_admission(allow: &str, users: &str) -> anyhow::Result<crate::sip::Admission> {
    let mut a = crate::sip::Admission::default();
    for c in allow.split(',').filter(|c| !c.trim().is_empty()) {
        a.allow.push(
            c.parse()
                .map_err(|e: String| anyhow::anyhow!("RIPT_SIP_ALLOW: {e}"))?,
        );
    }
    for u in users.split(',').filter(|u| !u.trim().is_empty()) {
        let (user, pass) = u
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("RIPT_SIP_USERS: expected user:password entries"))?;
        anyhow::ensure!(
            !user.is_empty() && !pass.is_empty(),
            "RIPT_SIP_USERS: empty user or password"
        );
        a.users.insert(user.to_owned(), pass.to_owned());
    }
    Ok(a)
}

/// Operator output on stdout; a closed stdout (EPIPE) must not stop the gateway.
fn say(line: &str) {
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

/// Answers and echoes every media chunk back on the server's first stream.
async fn echo(mut c: IncomingCall) {
    // Numbers stay out of info-level logs.
    tracing::debug!(to = %c.description.to, "call");
    if let Err(e) = c.control.state(EventKind::Answered, None).await {
        warn!(error = %e, "cannot answer");
        return;
    }
    while let Some(ev) = c.events.recv().await {
        match ev {
            ript_h3::CallEvent::Media(m) => {
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
                    Ok(()) | Err(ript_h3::Error::Backpressure) => {}
                    Err(_) => break,
                }
            }
            ript_h3::CallEvent::Ended(state, reason) => {
                info!(%state, ?reason, "call ended");
                break;
            }
            _ => {}
        }
    }
}
