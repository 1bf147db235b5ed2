//! Admin API over real HTTP on 127.0.0.1, each test on a fresh Postgres database
//! (DATABASE_URL) and a fresh SQLite file.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
mod fuzz;
mod hostile;
mod peers;
mod resources;
mod service;
