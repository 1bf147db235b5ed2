//! Test support for crates over the store (feature `testing`): runs one async test body
//! against a fresh Postgres database (created from `DATABASE_URL`'s server, dropped after)
//! and a fresh SQLite file. Test code: it panics on any setup failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::{SecretKey, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// One database prepared for a test body.
#[derive(Debug)]
pub struct Db {
    pub backend: Backend,
    pub store: Store,
    /// The URL, to connect a second `Store` (another instance) to the same database.
    pub url: String,
    pub key: SecretKey,
}

fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // RandomState is seeded randomly per instance: good enough to keep names apart.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    format!("{nanos:x}{:x}{:x}", std::process::id(), h.finish())
}

fn pg_admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The admin URL with its database replaced by `db`.
fn pg_url_for(db: &str) -> String {
    let admin = pg_admin_url();
    let base = admin.split('?').next().unwrap_or(&admin);
    let cut = base.rfind('/').unwrap_or(base.len());
    format!("{}/{db}", &base[..cut])
}

async fn pg_exec(sql: String) {
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&pg_admin_url())
        .await
        .expect("connect to the Postgres `test` database (DATABASE_URL)");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .expect("admin statement");
    let _ = sqlx::Connection::close(conn).await;
}

/// Runs `body` once on Postgres and once on SQLite (database names start with `prefix`), each in its own new database, and
/// removes the database afterwards even when the body panics.
pub async fn both<F, Fut>(prefix: &str, body: F)
where
    F: Fn(Db) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let name = format!("{prefix}_{}", random_suffix());
        let (url, file) = match backend {
            Backend::Postgres => {
                pg_exec(format!("CREATE DATABASE \"{name}\"")).await;
                (pg_url_for(&name), None)
            }
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("{name}.db"));
                (format!("sqlite://{}?mode=rwc", path.display()), Some(path))
            }
        };
        let key = SecretKey::generate().expect("key");
        let store = Store::connect(&url, key.clone()).await.expect("connect");
        store.migrate().await.expect("migrate");
        let run = tokio::spawn(body(Db {
            backend,
            store: store.clone(),
            url: url.clone(),
            key,
        }))
        .await;
        store.close().await;
        match file {
            None => pg_exec(format!("DROP DATABASE \"{name}\" WITH (FORCE)")).await,
            Some(path) => {
                for ext in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
                }
            }
        }
        if let Err(e) = run {
            eprintln!("failed on {backend:?}");
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
            panic!("test task failed on {backend:?}: {e}");
        }
    }
}
