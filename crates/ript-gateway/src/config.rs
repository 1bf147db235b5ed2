//! The configuration of `ript-gateway run`: one typed [`Settings`] built from layers, each
//! overriding the one before: built-in defaults < the TOML file (`--config FILE` or
//! `RIPT_CONFIG`) < environment variables < command-line flags. Every value is checked here,
//! before anything binds; a bad one stops start-up with an [`Error`] naming its key, and so
//! does a key the file has but we do not know (a typo must not be silently ignored).
//! `config/gateway.toml` documents every key with its default.

use crate::sip::{Cidr, Upstream};
use serde::{Deserialize, Serialize};
use sip_proto::digest::Algorithm;
use sip_transport::{Listen, Transport};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The tracing filter when `log` is not configured.
pub const DEFAULT_LOG: &str = "info,quinn=warn,h3=warn";

/// Names the configuration file when `--config` is absent.
pub const CONFIG_ENV: &str = "RIPT_CONFIG";

/// Every environment variable `run` reads, with the key it sets. An empty value is a value, as
/// when clap read them: it empties a list and unsets an optional key (an empty optional value
/// anywhere counts as absent).
pub const ENV: &[(&str, &str)] = &[
    ("RIPT_DATA_DIR", "data_dir"),
    ("DATABASE_URL", "database_url"),
    ("RIPT_SECRET_KEY_FILE", "secret_key_file"),
    ("RIPT_INSTANCE_ID", "instance_id"),
    ("RIPT_LOG", "log"),
    ("RIPT_HTTP3_LISTEN", "ript.listen"),
    ("RIPT_AUTHORITY", "ript.authority"),
    ("RIPT_TOKEN", "ript.token"),
    ("RIPT_HTTP3_DATAGRAMS", "ript.datagrams"),
    ("RIPT_SIP_LISTEN", "sip.listen"),
    ("RIPT_SIP_ALLOW", "sip.allow"),
    ("RIPT_SIP_USERS", "sip.users"),
    ("RIPT_SIP_DIGEST_ALGORITHMS", "sip.digest_algorithms"),
    ("RIPT_SIP_RATE", "sip.rate_per_sec"),
    ("RIPT_SIP_REGISTER", "sip.register"),
    ("RIPT_SIP_TLS_CERT", "sip.tls.cert"),
    ("RIPT_SIP_TLS_KEY", "sip.tls.key"),
    ("RIPT_SIP_TLS_CA", "sip.tls.ca"),
    ("RIPT_MEDIA_ADDRESS", "media.address"),
    ("RIPT_RTP_PORTS", "media.rtp_ports"),
    ("RIPT_MEDIA_COALESCE_US", "media.coalesce_us"),
    ("RIPT_ADMIN_LISTEN", "admin.listen"),
    ("RIPT_ADMIN_TOKEN", "admin.token"),
];

/// `ript-gateway run` flags. Each overrides its environment variable and the file.
#[derive(Debug, Default, clap::Args)]
pub struct RunArgs {
    /// TOML configuration file (env RIPT_CONFIG); every key is in config/gateway.toml.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// ript.listen: RIPT (HTTP/3) listen address (env RIPT_HTTP3_LISTEN) [default: 127.0.0.1:8443]
    #[arg(long)]
    pub listen: Option<String>,
    /// data_dir: where the dev certificate, tokens and keys live (env RIPT_DATA_DIR) [default: ./data]
    #[arg(long)]
    pub data_dir: Option<String>,
    /// ript.authority: `host:port` written into every URI; required when listening on an
    /// unspecified address such as 0.0.0.0 (env RIPT_AUTHORITY)
    #[arg(long)]
    pub authority: Option<String>,
    /// sip.listen: SIP listeners, e.g. `udp:127.0.0.1:5060,tcp:127.0.0.1:5060` (env RIPT_SIP_LISTEN)
    #[arg(long)]
    pub sip_listen: Option<String>,
    /// sip.tls.cert: certificate chain (PEM) of `tls:` SIP listeners; the RIPT dev certificate
    /// by default (env RIPT_SIP_TLS_CERT)
    #[arg(long)]
    pub sip_tls_cert: Option<String>,
    /// sip.tls.key: private key (PEM) of `tls:` SIP listeners (env RIPT_SIP_TLS_KEY)
    #[arg(long)]
    pub sip_tls_key: Option<String>,
    /// sip.tls.ca: CA bundle (PEM) trusted for outgoing SIP over TLS, besides the system
    /// bundle (env RIPT_SIP_TLS_CA)
    #[arg(long)]
    pub sip_tls_ca: Option<String>,
    /// sip.allow: SIP peers admitted by source address, comma-separated IPs or CIDRs
    /// (env RIPT_SIP_ALLOW) [default: 127.0.0.1/32,::1/128]
    #[arg(long)]
    pub sip_allow: Option<String>,
    /// sip.users: SIP peers admitted by digest, `user:password,...` (realm `ript-gateway`)
    /// (env RIPT_SIP_USERS)
    #[arg(long)]
    pub sip_users: Option<String>,
    /// sip.digest_algorithms: offered strongest first; some UAs (SIPp, older PBXs) answer only
    /// the first challenge and only MD5: list `MD5` alone for them (env
    /// RIPT_SIP_DIGEST_ALGORITHMS) [default: SHA-256,MD5]
    #[arg(long)]
    pub sip_digest_algorithms: Option<String>,
    /// sip.register: upstream registrations, `user:password@host:port[/udp|/tcp|/tls]`,
    /// comma-separated (env RIPT_SIP_REGISTER)
    #[arg(long)]
    pub sip_register: Option<String>,
    /// ript.token: bearer token customers present; generated and printed on first start when
    /// absent (env RIPT_TOKEN)
    #[arg(long)]
    pub token: Option<String>,
}

impl RunArgs {
    /// (key, flag, value) of every flag given.
    fn overrides(&self) -> [(&'static str, &'static str, Option<&String>); 12] {
        [
            ("ript.listen", "--listen", self.listen.as_ref()),
            ("data_dir", "--data-dir", self.data_dir.as_ref()),
            ("ript.authority", "--authority", self.authority.as_ref()),
            ("sip.listen", "--sip-listen", self.sip_listen.as_ref()),
            ("sip.tls.cert", "--sip-tls-cert", self.sip_tls_cert.as_ref()),
            ("sip.tls.key", "--sip-tls-key", self.sip_tls_key.as_ref()),
            ("sip.tls.ca", "--sip-tls-ca", self.sip_tls_ca.as_ref()),
            ("sip.allow", "--sip-allow", self.sip_allow.as_ref()),
            ("sip.users", "--sip-users", self.sip_users.as_ref()),
            (
                "sip.digest_algorithms",
                "--sip-digest-algorithms",
                self.sip_digest_algorithms.as_ref(),
            ),
            ("sip.register", "--sip-register", self.sip_register.as_ref()),
            ("ript.token", "--token", self.token.as_ref()),
        ]
    }
}

/// A configuration that cannot be used: the key, why, and which layer set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub key: String,
    pub reason: String,
    /// Where the value came from (`in FILE`, `from VARIABLE`, `from --flag`); `None` for a
    /// default.
    pub origin: Option<String>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)?;
        if let Some(o) = &self.origin {
            write!(f, " ({o})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// The validated configuration.
pub struct Settings {
    pub data_dir: PathBuf,
    pub database_url: String,
    /// 32 bytes for secrets at rest; generated on first start.
    pub secret_key_file: PathBuf,
    /// Names this instance in call snapshots; `None`: read from (or generated into)
    /// `<data_dir>/instance-id`.
    pub instance_id: Option<String>,
    /// A tracing filter that parses.
    pub log: String,
    pub ript: Ript,
    pub sip: Sip,
    pub admin: Admin,
    pub media: Media,
    /// Print a ladder of SIP messages and RIPT requests under this label (`demo` only; no
    /// configuration key).
    pub ladder: Option<String>,
}

pub struct Ript {
    pub listen: SocketAddr,
    pub authority: Option<String>,
    /// At least 16 characters; generated on first start when absent.
    pub token: Option<String>,
    /// Offer HTTP/3 datagrams (RFC 9297) to clients; off: they carry media on byways.
    pub datagrams: bool,
}

/// RTP toward SIP peers.
pub struct Media {
    /// The address our SDP names and RTP binds to; default: the first SIP listener's address
    /// (127.0.0.1 when that is a wildcard).
    pub address: Option<std::net::IpAddr>,
    pub rtp_ports: media_relay::PortRange,
    /// How long a runtime worker that ran out of work waits before it sleeps on the sockets
    /// (0: not at all). Packets arriving meanwhile are then handled in one wake-up: less CPU
    /// per packet on a busy box, at most this much more delay per packet.
    pub coalesce: std::time::Duration,
}

/// The longest `media.coalesce_us` taken: beyond it the delay starts to show in jitter.
pub const MAX_COALESCE_US: u32 = 5000;

pub struct Sip {
    pub listen: Vec<Listen>,
    pub allow: Vec<Cidr>,
    /// Digest users: username → password.
    pub users: HashMap<String, String>,
    /// Supported algorithms in offer order; empty = the SIP service's default.
    pub digest_algorithms: Vec<Algorithm>,
    /// Each with a listener of its transport.
    pub register: Vec<Upstream>,
    /// Existing certificate and key files for `tls:` listeners (both or neither).
    pub tls_cert_key: Option<(PathBuf, PathBuf)>,
    /// An existing CA bundle file.
    pub tls_ca: Option<PathBuf>,
    /// SIP messages accepted per second from one source address (2 s of burst), ≥ 1.
    pub rate_per_sec: u32,
}

pub struct Admin {
    pub listen: SocketAddr,
    /// At least 16 characters; generated on first start when absent.
    pub token: Option<String>,
}

/// Loads the layers for `flags` with the process environment read through `env`.
pub fn load(flags: &RunArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, Error> {
    let file = match (&flags.config, env(CONFIG_ENV).filter(|p| !p.is_empty())) {
        (Some(p), _) => Some((p.clone(), "--config")),
        (None, Some(p)) => Some((PathBuf::from(p), CONFIG_ENV)),
        (None, None) => None,
    };
    let file = match file {
        Some((path, via)) => {
            let text = std::fs::read_to_string(&path).map_err(|e| Error {
                key: via.to_owned(),
                reason: format!("cannot read {}: {e}", path.display()),
                origin: None,
            })?;
            Some((path.display().to_string(), text))
        }
        None => None,
    };
    let file = file.as_ref().map(|(p, t)| (p.as_str(), t.as_str()));
    layered(file, flags, env)
}

/// The layering proper: `file` is (name, TOML text).
fn layered(
    file: Option<(&str, &str)>,
    flags: &RunArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, Error> {
    let mut origins: HashMap<String, String> = HashMap::new();
    let mut builder = config::Config::builder();
    if let Some((name, text)) = file {
        let source = config::File::from_str(text, config::FileFormat::Toml);
        let tree: serde_json::Value = config::Config::builder()
            .add_source(source.clone())
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|e| Error {
                key: name.to_owned(),
                reason: e.to_string(),
                origin: None,
            })?;
        let known = serde_json::to_value(Layer::default()).unwrap_or_default();
        check_keys(&tree, &known, "", name, &mut origins)?;
        builder = builder.add_source(source);
    }
    for (var, key) in ENV {
        if let Some(v) = env(var) {
            origins.insert((*key).to_owned(), format!("from {var}"));
            builder = set(builder, key, v, &origins)?;
        }
    }
    for (key, flag, v) in flags.overrides() {
        if let Some(v) = v {
            origins.insert(key.to_owned(), format!("from {flag}"));
            builder = set(builder, key, v.clone(), &origins)?;
        }
    }
    let layer: Layer = builder
        .build()
        .and_then(config::Config::try_deserialize)
        .map_err(|e| from_config(e, &origins))?;
    settle(layer, &origins)
}

fn set(
    b: config::ConfigBuilder<config::builder::DefaultState>,
    key: &str,
    value: String,
    origins: &HashMap<String, String>,
) -> Result<config::ConfigBuilder<config::builder::DefaultState>, Error> {
    b.set_override(key, value)
        .map_err(|e| from_config(e, origins))
}

/// Every key of `tree` (the file) must exist in `known` (the defaults serialized), so typos are
/// refused instead of silently ignored; records the file as the origin of each key it sets.
fn check_keys(
    tree: &serde_json::Value,
    known: &serde_json::Value,
    prefix: &str,
    file: &str,
    origins: &mut HashMap<String, String>,
) -> Result<(), Error> {
    let serde_json::Value::Object(entries) = tree else {
        return Ok(());
    };
    for (k, v) in entries {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let Some(expected) = known.get(k) else {
            return Err(Error {
                key,
                reason: "unknown key".into(),
                origin: Some(format!("in {file}")),
            });
        };
        origins.insert(key.clone(), format!("in {file}"));
        if expected.is_object() {
            check_keys(v, expected, &key, file, origins)?;
        }
    }
    Ok(())
}

/// Turns a `config` error into ours, keeping the key it names.
fn from_config(e: config::ConfigError, origins: &HashMap<String, String>) -> Error {
    let (key, reason) = match e {
        config::ConfigError::At {
            error,
            key: Some(key),
            ..
        } => (key, error.to_string()),
        config::ConfigError::Type {
            unexpected,
            expected,
            key: Some(key),
            ..
        } => (
            key,
            format!("invalid type: {unexpected}, expected {expected}"),
        ),
        other => ("configuration".to_owned(), other.to_string()),
    };
    let origin = origins.get(&key).cloned();
    Error {
        key,
        reason,
        origin,
    }
}

/// An instance id names the instance in call snapshots and in `GET /calls?instance_id=`:
/// 1 to 64 characters of `[A-Za-z0-9._-]`.
pub fn instance_id_ok(i: &str) -> Result<(), String> {
    if i.is_empty() || i.len() > 64 {
        return Err(format!("{i:?} must be 1 to 64 characters"));
    }
    if !i
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(format!(
            "{i:?} may hold only letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// A list in the file: a TOML array, or one string of comma-separated entries (the form
/// environment variables and flags use).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "ListRepr", into = "Vec<String>")]
struct List(Vec<String>);

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "expected a list of strings or one comma-separated string"
)]
enum ListRepr {
    Many(Vec<String>),
    One(String),
}

impl From<ListRepr> for List {
    fn from(r: ListRepr) -> List {
        let items: Vec<String> = match r {
            ListRepr::Many(v) => v,
            ListRepr::One(s) => s.split(',').map(str::to_owned).collect(),
        };
        List(
            items
                .iter()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }
}

impl From<List> for Vec<String> {
    fn from(l: List) -> Vec<String> {
        l.0
    }
}

fn list(items: &[&str]) -> List {
    List(items.iter().map(|s| (*s).to_owned()).collect())
}

/// What the layers merge into, before validation; its `Default` is the built-in layer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
struct Layer {
    data_dir: String,
    database_url: Option<String>,
    secret_key_file: Option<String>,
    instance_id: Option<String>,
    log: String,
    ript: RiptLayer,
    sip: SipLayer,
    admin: AdminLayer,
    media: MediaLayer,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
struct MediaLayer {
    address: Option<String>,
    rtp_ports: String,
    coalesce_us: u32,
}

impl Default for MediaLayer {
    fn default() -> Self {
        MediaLayer {
            address: None,
            rtp_ports: "20000-29999".into(),
            coalesce_us: 0,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
struct RiptLayer {
    listen: String,
    authority: Option<String>,
    token: Option<String>,
    datagrams: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
struct SipLayer {
    listen: List,
    allow: List,
    users: List,
    digest_algorithms: List,
    register: List,
    rate_per_sec: u32,
    tls: TlsLayer,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
struct TlsLayer {
    cert: Option<String>,
    key: Option<String>,
    ca: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
struct AdminLayer {
    listen: String,
    token: Option<String>,
}

impl Default for Layer {
    fn default() -> Self {
        Layer {
            data_dir: "./data".into(),
            database_url: None,
            secret_key_file: None,
            instance_id: None,
            log: DEFAULT_LOG.into(),
            ript: RiptLayer::default(),
            sip: SipLayer::default(),
            admin: AdminLayer::default(),
            media: MediaLayer::default(),
        }
    }
}

impl Default for RiptLayer {
    fn default() -> Self {
        RiptLayer {
            listen: "127.0.0.1:8443".into(),
            authority: None,
            token: None,
            datagrams: true,
        }
    }
}

impl Default for SipLayer {
    fn default() -> Self {
        SipLayer {
            listen: list(&["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]),
            allow: list(&["127.0.0.1/32", "::1/128"]),
            users: List::default(),
            digest_algorithms: list(&["SHA-256", "MD5"]),
            register: List::default(),
            rate_per_sec: 200,
            tls: TlsLayer::default(),
        }
    }
}

impl Default for AdminLayer {
    fn default() -> Self {
        AdminLayer {
            listen: "127.0.0.1:8080".into(),
            token: None,
        }
    }
}

/// Validates every value of the merged layers.
fn settle(mut l: Layer, origins: &HashMap<String, String>) -> Result<Settings, Error> {
    for o in [
        &mut l.database_url,
        &mut l.secret_key_file,
        &mut l.ript.authority,
        &mut l.ript.token,
        &mut l.sip.tls.cert,
        &mut l.sip.tls.key,
        &mut l.sip.tls.ca,
        &mut l.admin.token,
    ] {
        if o.as_deref().is_some_and(str::is_empty) {
            *o = None;
        }
    }
    let err = |key: &str, reason: String| Error {
        key: key.to_owned(),
        reason,
        origin: origins.get(key).cloned(),
    };
    if l.data_dir.trim().is_empty() {
        return Err(err("data_dir", "is empty".into()));
    }
    let data_dir = PathBuf::from(&l.data_dir);
    if data_dir.exists() && !data_dir.is_dir() {
        return Err(err(
            "data_dir",
            format!("{} is not a directory", data_dir.display()),
        ));
    }
    let database_url = match l.database_url {
        Some(u) => u,
        None => format!("sqlite://{}/gateway.db?mode=rwc", l.data_dir),
    };
    check_database_url(&database_url).map_err(|r| err("database_url", r))?;
    let secret_key_file = match l.secret_key_file {
        Some(p) => PathBuf::from(p),
        None => data_dir.join("secret.key"),
    };
    if secret_key_file.is_dir() {
        return Err(err(
            "secret_key_file",
            format!("{} is a directory", secret_key_file.display()),
        ));
    }
    let instance_id = l.instance_id.filter(|i| !i.is_empty());
    if let Some(i) = &instance_id {
        instance_id_ok(i).map_err(|r| err("instance_id", r))?;
    }
    tracing_subscriber::EnvFilter::try_new(&l.log)
        .map_err(|e| err("log", format!("{:?} is not a tracing filter: {e}", l.log)))?;

    let ript_listen = address(&l.ript.listen).map_err(|r| err("ript.listen", r))?;
    if let Some(a) = &l.ript.authority {
        a.parse::<http::uri::Authority>()
            .map_err(|_| err("ript.authority", format!("{a:?} is not host:port")))?;
    } else if ript_listen.ip().is_unspecified() {
        return Err(err(
            "ript.authority",
            format!("required when ript.listen is {ript_listen} (URIs must name a reachable host)"),
        ));
    }
    check_token(l.ript.token.as_deref()).map_err(|r| err("ript.token", r))?;

    let mut sip_listen = Vec::new();
    for entry in &l.sip.listen.0 {
        sip_listen.push(listener(entry).map_err(|r| err("sip.listen", r))?);
    }
    let mut allow = Vec::new();
    for entry in &l.sip.allow.0 {
        allow.push(entry.parse::<Cidr>().map_err(|r| err("sip.allow", r))?);
    }
    let mut users = HashMap::new();
    for (i, entry) in l.sip.users.0.iter().enumerate() {
        // The entry holds a password: name its position, never its text.
        let n = i + 1;
        let (user, pass) = entry
            .split_once(':')
            .ok_or_else(|| err("sip.users", format!("entry {n} is not user:password")))?;
        if user.is_empty() || pass.is_empty() {
            return Err(err(
                "sip.users",
                format!("entry {n} has an empty user or password"),
            ));
        }
        if users.insert(user.to_owned(), pass.to_owned()).is_some() {
            return Err(err("sip.users", format!("user {user:?} appears twice")));
        }
    }
    let mut digest_algorithms = Vec::new();
    for entry in &l.sip.digest_algorithms.0 {
        let alg = Algorithm::from_token(entry);
        if !alg.is_supported() {
            return Err(err(
                "sip.digest_algorithms",
                format!(
                    "{entry:?} is not supported (SHA-256, SHA-512-256, MD5 and their -sess forms are)"
                ),
            ));
        }
        digest_algorithms.push(alg);
    }
    let mut register = Vec::new();
    for (i, entry) in l.sip.register.0.iter().enumerate() {
        let n = i + 1;
        let up: Upstream = entry
            .parse()
            .map_err(|e: String| err("sip.register", format!("entry {n}: {e}")))?;
        // RFC 3261 §10.2: the Contact we register must be reachable over that transport.
        if !sip_listen.iter().any(|l| l.transport == up.transport) {
            let t = up.transport.as_str().to_ascii_lowercase();
            return Err(err(
                "sip.register",
                format!("entry {n} registers over {t} but sip.listen has no {t} listener"),
            ));
        }
        register.push(up);
    }
    let file = |key: &str, p: &Option<String>| -> Result<Option<PathBuf>, Error> {
        let Some(p) = p else { return Ok(None) };
        let path = PathBuf::from(p);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(path)),
            Ok(_) => Err(err(key, format!("{p} is not a file"))),
            Err(e) => Err(err(key, format!("{p}: {e}"))),
        }
    };
    let cert = file("sip.tls.cert", &l.sip.tls.cert)?;
    let key = file("sip.tls.key", &l.sip.tls.key)?;
    let tls_cert_key = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        (Some(_), None) => return Err(err("sip.tls.key", "required with sip.tls.cert".into())),
        (None, Some(_)) => return Err(err("sip.tls.cert", "required with sip.tls.key".into())),
    };
    let tls_ca = file("sip.tls.ca", &l.sip.tls.ca)?;

    if l.sip.rate_per_sec == 0 {
        return Err(err(
            "sip.rate_per_sec",
            "must be at least 1 message per second".into(),
        ));
    }
    let admin_listen = address(&l.admin.listen).map_err(|r| err("admin.listen", r))?;
    let media = Media {
        address: match l.media.address.filter(|a| !a.is_empty()) {
            Some(a) => Some(
                a.parse()
                    .map_err(|_| err("media.address", format!("{a:?} is not an IP address")))?,
            ),
            None => None,
        },
        rtp_ports: port_range(&l.media.rtp_ports).map_err(|r| err("media.rtp_ports", r))?,
        coalesce: if l.media.coalesce_us <= MAX_COALESCE_US {
            std::time::Duration::from_micros(u64::from(l.media.coalesce_us))
        } else {
            return Err(err(
                "media.coalesce_us",
                format!("must be at most {MAX_COALESCE_US} µs"),
            ));
        },
    };
    check_token(l.admin.token.as_deref()).map_err(|r| err("admin.token", r))?;
    // The admin API guards the whole configuration: it wants ≥ 22 characters (≈128 bits).
    if let Some(t) = l.admin.token.as_deref()
        && t.chars().count() < admin_api::MIN_STATIC_TOKEN_LEN
    {
        return Err(err(
            "admin.token",
            format!(
                "must be at least {} characters",
                admin_api::MIN_STATIC_TOKEN_LEN
            ),
        ));
    }

    Ok(Settings {
        data_dir,
        database_url,
        secret_key_file,
        instance_id,
        log: l.log,
        ript: Ript {
            listen: ript_listen,
            authority: l.ript.authority,
            token: l.ript.token,
            datagrams: l.ript.datagrams,
        },
        sip: Sip {
            listen: sip_listen,
            allow,
            users,
            digest_algorithms,
            register,
            tls_cert_key,
            tls_ca,
            rate_per_sec: l.sip.rate_per_sec,
        },
        admin: Admin {
            listen: admin_listen,
            token: l.admin.token,
        },
        media,
        ladder: None,
    })
}

/// `first-last`, an even first port and at least one RTP/RTCP pair.
fn port_range(s: &str) -> Result<media_relay::PortRange, String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?} is not first-last"))?;
    let (a, b): (u16, u16) = match (a.trim().parse(), b.trim().parse()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return Err(format!("{s:?} is not first-last")),
    };
    media_relay::PortRange::new(a, b).map_err(|e| e.to_string())
}

fn address(s: &str) -> Result<SocketAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an address (ip:port, [v6]:port)"))
}

/// One SIP listener, `transport:ip:port`.
fn listener(s: &str) -> Result<Listen, String> {
    let (t, addr) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not transport:address (e.g. udp:127.0.0.1:5060)"))?;
    let transport = match t.to_ascii_lowercase().as_str() {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        "tls" => Transport::Tls,
        _ => return Err(format!("{s:?} names no transport (udp, tcp or tls)")),
    };
    let addr = addr
        .parse()
        .map_err(|_| format!("{s:?} is not an address"))?;
    Ok(Listen { transport, addr })
}

/// Secrets are not echoed: only the length is judged.
fn check_token(t: Option<&str>) -> Result<(), String> {
    match t {
        Some(t) if t.chars().count() < 16 => Err("must be at least 16 characters".into()),
        Some(t) if t.chars().any(char::is_whitespace) => Err("must not contain spaces".into()),
        _ => Ok(()),
    }
}

/// The store speaks SQLite and Postgres only.
fn check_database_url(u: &str) -> Result<(), String> {
    let rest = ["sqlite://", "sqlite:", "postgres://", "postgresql://"]
        .iter()
        .find_map(|scheme| u.strip_prefix(scheme));
    match rest {
        Some(r) if !r.is_empty() => Ok(()),
        Some(_) => Err(format!("{:?} names no database", redact_url(u))),
        None => Err(format!(
            "{:?} is not a sqlite:// or postgres:// URL",
            redact_url(u)
        )),
    }
}

/// `scheme://user:***@host/...`: error messages must not print a database password.
pub(crate) fn redact_url(u: &str) -> String {
    let Some((scheme, rest)) = u.split_once("://") else {
        return u.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest.get(..authority_end).and_then(|a| a.rsplit_once('@')) {
        Some((userinfo, _)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let after = rest.get(userinfo.len()..).unwrap_or_default();
            format!("{scheme}://{user}:***{after}")
        }
        None => u.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../../config/gateway.toml");

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| vars.get(k).cloned()
    }

    fn load_str(text: &str, vars: &[(&str, &str)]) -> Result<Settings, Error> {
        layered(
            Some(("test.toml", text)),
            &RunArgs::default(),
            &env_of(vars),
        )
    }

    fn refused(text: &str, vars: &[(&str, &str)]) -> Error {
        match load_str(text, vars) {
            Ok(_) => panic!("accepted:\n{text}\n{vars:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn defaults_are_todays_behaviour() {
        let s = layered(None, &RunArgs::default(), &env_of(&[])).unwrap();
        assert_eq!(s.ript.listen, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(s.data_dir, PathBuf::from("./data"));
        assert_eq!(s.database_url, "sqlite://./data/gateway.db?mode=rwc");
        assert_eq!(s.secret_key_file, PathBuf::from("./data/secret.key"));
        assert_eq!(s.admin.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.sip.listen.len(), 2);
        assert_eq!(s.sip.allow.len(), 2);
        assert_eq!(
            s.sip.digest_algorithms,
            vec![Algorithm::Sha256, Algorithm::Md5]
        );
        assert!(s.sip.users.is_empty() && s.sip.register.is_empty());
        assert!(s.ript.token.is_none() && s.admin.token.is_none());
        assert_eq!(s.log, DEFAULT_LOG);
    }

    #[test]
    fn the_sample_states_exactly_the_defaults() {
        let tree: serde_json::Value = config::Config::builder()
            .add_source(config::File::from_str(SAMPLE, config::FileFormat::Toml))
            .build()
            .and_then(config::Config::try_deserialize)
            .unwrap();
        let layer: Layer = serde_json::from_value(tree).unwrap();
        assert_eq!(
            serde_json::to_value(layer).unwrap(),
            serde_json::to_value(Layer::default()).unwrap()
        );
        assert!(load_str(SAMPLE, &[]).is_ok());
    }

    #[test]
    fn env_overrides_the_file_and_flags_override_env() {
        let file = "data_dir = \"/tmp/from-file\"\n[sip]\nlisten = [\"udp:127.0.0.1:5070\"]\n";
        let s = load_str(file, &[("RIPT_SIP_LISTEN", "tcp:127.0.0.1:5080")]).unwrap();
        assert_eq!(s.sip.listen.len(), 1);
        assert_eq!(s.sip.listen[0].transport, Transport::Tcp);
        assert_eq!(s.data_dir, PathBuf::from("/tmp/from-file"));
        // The derived defaults follow the data directory.
        assert_eq!(
            s.database_url,
            "sqlite:///tmp/from-file/gateway.db?mode=rwc"
        );
        let flags = RunArgs {
            sip_listen: Some("udp:127.0.0.1:5090".into()),
            ..RunArgs::default()
        };
        let s = layered(
            Some(("f", file)),
            &flags,
            &env_of(&[("RIPT_SIP_LISTEN", "tcp:127.0.0.1:5080")]),
        )
        .unwrap();
        assert_eq!(s.sip.listen[0].addr.port(), 5090);
        let s = load_str(
            "[admin]\nlisten = \"127.0.0.1:1\"\n",
            &[
                ("RIPT_ADMIN_LISTEN", "127.0.0.1:8081"),
                ("DATABASE_URL", "postgres://u:p@db/gw"),
                ("RIPT_ADMIN_TOKEN", "0123456789abcdef0123456789"),
            ],
        )
        .unwrap();
        assert_eq!(s.admin.listen.port(), 8081);
        assert_eq!(s.database_url, "postgres://u:p@db/gw");
        assert_eq!(s.admin.token.as_deref(), Some("0123456789abcdef0123456789"));
    }

    #[test]
    fn an_empty_variable_empties_a_list_and_unsets_an_optional_value() {
        let file = "[ript]\nauthority = \"gw.example.net\"\n[sip]\nusers = [\"a:1\"]\n";
        let s = load_str(
            file,
            &[
                ("RIPT_SIP_ALLOW", ""),
                ("RIPT_SIP_USERS", ""),
                ("RIPT_AUTHORITY", ""),
            ],
        )
        .unwrap();
        assert!(s.sip.allow.is_empty() && s.sip.users.is_empty());
        assert!(s.ript.authority.is_none());
        let e = refused("", &[("RIPT_HTTP3_LISTEN", "")]);
        assert_eq!(e.key, "ript.listen");
    }

    #[test]
    fn lists_are_arrays_or_comma_strings() {
        let s = load_str(
            "[sip]\nusers = \"a:1, b:2\"\nregister = [\"gw:p,w@10.0.0.1:5060\"]\n",
            &[],
        )
        .unwrap();
        assert_eq!(s.sip.users.len(), 2);
        // Array entries are never split: the password keeps its comma.
        assert_eq!(s.sip.register[0].password, "p,w");
    }

    #[test]
    fn every_bad_value_names_its_key() {
        // (file, environment, key named, words of the reason)
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case] = &[
            ("[sip]\nlissen = []\n", &[], "sip.lissen", "unknown key"),
            ("colour = 1\n", &[], "colour", "unknown key"),
            (
                "",
                &[("RIPT_SIP_RATE", "0")],
                "sip.rate_per_sec",
                "at least 1",
            ),
            (
                "[media]\ncoalesce_us = 5001\n",
                &[],
                "media.coalesce_us",
                "at most 5000",
            ),
            (
                "",
                &[("RIPT_INSTANCE_ID", "gw 1/../x")],
                "instance_id",
                "may hold only letters",
            ),
            (
                "[ript]\nlisten = \"x\"\n",
                &[],
                "ript.listen",
                "not an address",
            ),
            (
                "",
                &[("RIPT_SIP_LISTEN", "udp:nowhere")],
                "sip.listen",
                "\"udp:nowhere\" is not an address",
            ),
            (
                "[sip]\nlisten = \"sctp:127.0.0.1:1\"\n",
                &[],
                "sip.listen",
                "transport",
            ),
            (
                "[sip]\nallow = \"10.0.0.0/33\"\n",
                &[],
                "sip.allow",
                "prefix",
            ),
            ("[sip]\nusers = \"nocolon\"\n", &[], "sip.users", "entry 1"),
            ("[sip]\nusers = \"a:1,a:2\"\n", &[], "sip.users", "twice"),
            (
                "[sip]\ndigest_algorithms = \"SHA-1\"\n",
                &[],
                "sip.digest_algorithms",
                "SHA-1",
            ),
            (
                "[sip]\nregister = \"gw:x@h:5060/tls\"\n",
                &[],
                "sip.register",
                "no tls listener",
            ),
            (
                "[sip]\nregister = \"gw@h\"\n",
                &[],
                "sip.register",
                "entry 1",
            ),
            (
                "[sip.tls]\ncert = \"/nonexistent.pem\"\n",
                &[],
                "sip.tls.cert",
                "/nonexistent.pem",
            ),
            ("[sip.tls]\nca = \"/\"\n", &[], "sip.tls.ca", "not a file"),
            (
                "",
                &[("DATABASE_URL", "mysql://u:secret@h/db")],
                "database_url",
                "sqlite://",
            ),
            (
                "[admin]\nlisten = \"localhost\"\n",
                &[],
                "admin.listen",
                "not an address",
            ),
            ("[admin]\ntoken = \"short\"\n", &[], "admin.token", "16"),
            ("[ript]\ntoken = \"short\"\n", &[], "ript.token", "16"),
            (
                "[ript]\nlisten = \"0.0.0.0:8443\"\n",
                &[],
                "ript.authority",
                "required",
            ),
            (
                "[ript]\nauthority = \"a b\"\n",
                &[],
                "ript.authority",
                "host:port",
            ),
            ("log = \"=x\"\n", &[], "log", "filter"),
            ("[ript]\nlisten = [1]\n", &[], "ript.listen", "invalid type"),
            ("ript = 5\n", &[], "ript", "expected a table"),
            (
                "[sip]\nlisten = { a = 1 }\n",
                &[],
                "sip.listen",
                "comma-separated string",
            ),
        ];
        for (file, vars, key, reason) in cases {
            let e = refused(file, vars);
            assert_eq!(e.key, *key, "{file} {vars:?}: {e}");
            assert!(e.to_string().contains(reason), "{file} {vars:?}: {e}");
        }
        // The layer that set a value is named; a password never is.
        let e = refused("", &[("DATABASE_URL", "mysql://u:secret@h/db")]);
        assert_eq!(e.origin.as_deref(), Some("from DATABASE_URL"));
        assert!(!e.to_string().contains("secret"), "{e}");
        let e = refused("[sip]\nlisten = \"udp:x\"\n", &[]);
        assert_eq!(e.origin.as_deref(), Some("in test.toml"));
        let e = refused("[sip]\nusers = \"pbx-hunter2\"\n", &[]);
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn a_toml_syntax_error_is_refused() {
        let e = refused("[sip\n", &[]);
        assert_eq!(e.key, "test.toml");
        assert!(e.reason.contains("line 1"), "{e}");
    }

    #[test]
    fn database_urls() {
        for ok in [
            "sqlite://./data/gateway.db?mode=rwc",
            "sqlite::memory:",
            "postgres://gw:pw@db.example.net/gw",
            "postgresql://localhost/gw",
        ] {
            assert!(check_database_url(ok).is_ok(), "{ok}");
        }
        for bad in ["", "sqlite:", "postgres://", "mysql://h/db", "gateway.db"] {
            assert!(check_database_url(bad).is_err(), "{bad}");
        }
        assert_eq!(
            redact_url("postgres://gw:pw@db/gw"),
            "postgres://gw:***@db/gw"
        );
        assert_eq!(redact_url("sqlite://./a.db"), "sqlite://./a.db");
    }
}
