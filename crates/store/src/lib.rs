//! Persistence for the gateway: configuration resources, live-call snapshots and CDRs over
//! Postgres or SQLite through sqlx's `Any` driver, from one migration set (`/migrations`).
//!
//! # Portability
//! One schema serves both databases because it uses only portable types: ids, enums and JSON
//! as TEXT, times as BIGINT epoch-ms, flags as INTEGER 0/1, encrypted secrets and hashes as
//! BYTEA (SQLite keeps the blob as given). Queries use `$n` placeholders and are checked at
//! run time (there is no `query!` for `AnyPool`); their SQL text is built only from constants,
//! never from caller data.
//!
//! # Configuration changes reach every instance
//! Every configuration write (peers, upstreams, hosted TGs, customer credentials, numbers,
//! routes, admin tokens) bumps the single-row `config_version` counter in the same
//! transaction. An instance keeps the version its routing snapshot was built from and polls
//! [`Store::config_version`] (a primary-key read) every second or so; when it moved, it
//! rebuilds the snapshot and uses it for new calls. Because the bump commits atomically with
//! the change, an instance that sees version `n` also sees every change up to `n`. Calls and
//! CDRs are not configuration and do not bump it.
//!
//! # Secrets
//! See [`crypto`]: presented secrets are AES-256-GCM encrypted under a [`SecretKey`]; verified
//! ones (tokens) are SHA-256 hashed.

pub mod admin_token;
pub mod calls;
pub mod cdr;
pub mod crypto;
mod error;
pub mod hosted;
pub mod model;
pub mod number;
pub mod peer;
mod repo;
pub mod route;
#[doc(hidden)]
pub mod row;
#[cfg(feature = "testing")]
pub mod testing;
pub mod upstream;
mod validate;

pub use crypto::{IssuedSecret, Secret, SecretKey};
pub use error::{Error, Result};
pub use repo::{Repo, Resource};

use ring::rand::SecureRandom as _;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Row as _, SqlSafeStr as _};
use std::sync::Arc;

/// The migrations, embedded so a deployed binary needs no files beside it.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../../migrations/0001_initial.sql"),
    ),
    (
        2,
        "hosted tg require passport",
        include_str!("../../../migrations/0002_hosted_tg_require_passport.sql"),
    ),
    (
        3,
        "customer tg registration",
        include_str!("../../../migrations/0003_customer_tg_registration.sql"),
    ),
];

/// Which rows a caller may see. Hosted-TG-owned resources (hosted TGs, customer credentials,
/// numbers with an owner tenant) are filtered by tenant; global resources (SIP peers, RIPT
/// upstreams, routes, admin tokens) are invisible to a tenant scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The operator: everything.
    Admin,
    /// One customer: only its own rows; anything else is `NotFound`.
    Tenant(String),
}

impl Scope {
    pub(crate) fn tenant(&self) -> Option<&str> {
        match self {
            Scope::Admin => None,
            Scope::Tenant(t) => Some(t),
        }
    }
}

/// Offset paging. `limit` is clamped to 1..=[`Page::MAX_LIMIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Page {
    pub limit: u32,
    pub offset: u64,
}

impl Page {
    pub const MAX_LIMIT: u32 = 1000;

    pub fn first(limit: u32) -> Self {
        Page { limit, offset: 0 }
    }

    pub(crate) fn sql_limit(&self) -> i64 {
        i64::from(self.limit.clamp(1, Self::MAX_LIMIT))
    }

    pub(crate) fn sql_offset(&self) -> Result<i64> {
        i64::try_from(self.offset).map_err(|_| Error::invalid("offset", "too large"))
    }
}

impl Default for Page {
    fn default() -> Self {
        Page::first(100)
    }
}

/// A connection pool plus the key for secrets. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    key: Arc<SecretKey>,
}

impl Store {
    /// Connects to `postgres://…` or `sqlite://path?mode=rwc`.
    ///
    /// SQLite `:memory:` gives every pooled connection its own empty database, so such a URL
    /// gets a pool of exactly one connection that is never recycled.
    pub async fn connect(url: &str, key: SecretKey) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let in_memory =
            url.starts_with("sqlite:") && url.contains(":memory:") || url.contains("mode=memory");
        let options = if in_memory {
            AnyPoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            AnyPoolOptions::new().max_connections(8)
        };
        let pool = options.connect(url).await?;
        if url.starts_with("sqlite:") && !in_memory {
            // Write-ahead logging: readers (the followers polling the configuration version,
            // the admin API) never block the writers of call snapshots and CDRs, which in
            // the default rollback journal could run out of busy timeout under load. The mode
            // is a property of the file; setting it again is a no-op.
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await?;
        }
        Ok(Store {
            pool,
            key: Arc::new(key),
        })
    }

    /// Applies pending migrations (idempotent; safe to run from several instances at once on
    /// Postgres, where sqlx takes an advisory lock).
    pub async fn migrate(&self) -> Result<()> {
        let migrations = MIGRATIONS
            .iter()
            .map(|(v, d, sql)| {
                Migration::new(
                    *v,
                    (*d).into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect();
        Migrator::with_migrations(migrations)
            .run(&self.pool)
            .await?;
        Ok(())
    }

    /// The configuration version; see the crate doc for the reload protocol.
    pub async fn config_version(&self) -> Result<i64> {
        let row = sqlx::query("SELECT version FROM config_version WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        row.try_get("version").map_err(|_| Error::Corrupt {
            column: "config_version.version",
        })
    }

    /// The underlying pool (for health checks and tests reading raw columns).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) fn key(&self) -> &SecretKey {
        &self.key
    }
}

/// Increments `config_version` inside the caller's transaction.
pub(crate) async fn bump_config_version(tx: &mut sqlx::AnyConnection) -> Result<()> {
    sqlx::query("UPDATE config_version SET version = version + 1 WHERE id = 1")
        .execute(tx)
        .await?;
    Ok(())
}

/// A random (version 4) UUID as text; from ring's system RNG so no extra RNG dependency.
pub(crate) fn new_id() -> Result<String> {
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| Error::Key("system random source failed"))?;
    Ok(uuid::Builder::from_random_bytes(b)
        .into_uuid()
        .hyphenated()
        .to_string())
}

/// Wall-clock epoch milliseconds for created/updated stamps (this is a shell crate; CDR and
/// call times come from the caller).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
