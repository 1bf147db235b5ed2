//! Repository tests; every one runs against Postgres (DATABASE_URL) and a SQLite file.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
mod others;
mod peers;
