//! The store-backed integration tests again, on PostgreSQL (127.0.0.1:5432,
//! database `test`), each test in a schema of its own; plus what only a
//! shared store has: several daemon processes on one database.

pub const BACKEND: support::Backend = support::Backend::Postgres;

#[path = "../it/api.rs"]
mod api;
#[path = "../it/bounces.rs"]
mod bounces;
#[path = "../it/chaos.rs"]
mod chaos;
mod cluster;
#[path = "../it/compliance.rs"]
mod compliance;
#[path = "../it/console.rs"]
mod console;
#[path = "../it/console_support.rs"]
mod console_support;
#[path = "../it/import.rs"]
mod import;
mod lease;
#[path = "../it/next_look.rs"]
mod next_look;
#[path = "../it/offers.rs"]
mod offers;
#[path = "../it/pipeline.rs"]
mod pipeline;
#[path = "../it/smtp.rs"]
mod smtp;
mod statistics;
#[path = "../it/store.rs"]
mod store;
#[path = "../it/support.rs"]
mod support;
