//! duebell: decides which borrowers are due a payment reminder, and sends it
//! humanely and lawfully. See ARCHITECTURE.md for the module map.
#![forbid(unsafe_code)]

pub mod app;
pub mod cli;
pub mod clock;
pub mod compliance;
pub mod config;
pub mod domain;
pub mod error;
pub mod logging;
pub mod sources;
pub mod store;
pub mod templates;
pub mod policy;
