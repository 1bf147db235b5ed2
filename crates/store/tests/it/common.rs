//! Runs one async test body against a fresh Postgres database and a fresh SQLite file.

pub use store::testing::Db;

pub async fn both<F, Fut>(body: F)
where
    F: Fn(Db) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    store::testing::both("store_t", body).await
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
