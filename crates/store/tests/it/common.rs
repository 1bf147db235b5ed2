//! Runs one async test body against a fresh Postgres database and a fresh SQLite file.

use store::{SecretKey, Store};

/// One database prepared for a test body.
#[derive(Debug)]
pub struct Db {
    pub store: Store,
    /// The URL, to connect a second `Store` (another instance) to the same database.
    pub url: String,
    pub key: SecretKey,
}

fn random_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", nanos, std::process::id()) + &format!("{:x}", rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded randomly per process and per instance: good enough for names.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish()
}

fn pg_admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// `postgres://user@host:port/<db>` with the database replaced.
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

/// Runs `body` once on Postgres and once on SQLite, each in its own new database, and
/// removes the database afterwards even when the body panics.
pub async fn both<F, Fut>(body: F)
where
    F: Fn(Db) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    for backend in ["postgres", "sqlite"] {
        let name = format!("store_t_{}", random_suffix());
        let (url, file) = match backend {
            "postgres" => {
                pg_exec(format!("CREATE DATABASE \"{name}\"")).await;
                (pg_url_for(&name), None)
            }
            _ => {
                let path = std::env::temp_dir().join(format!("{name}.db"));
                (format!("sqlite://{}?mode=rwc", path.display()), Some(path))
            }
        };
        let key = SecretKey::generate().expect("key");
        let store = Store::connect(&url, key.clone()).await.expect("connect");
        store.migrate().await.expect("migrate");
        let run = tokio::spawn(body(Db {
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
            eprintln!("failed on {backend}");
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
            panic!("test task failed on {backend}: {e}");
        }
    }
}

/// `both_dbs!(name, |db| { ... })` declares a test running the body on both databases.
#[macro_export]
macro_rules! both_dbs {
    ($name:ident, |$db:ident| $body:block) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            $crate::common::both(|$db: $crate::common::Db| async move $body).await
        }
    };
}
