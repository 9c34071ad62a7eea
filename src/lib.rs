//! duebell: decides which borrowers are due a payment reminder, and sends it
//! humanely and lawfully. See ARCHITECTURE.md for the module map.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod audit;
pub mod bounces;
pub mod cli;
pub mod clock;
pub mod compliance;
pub mod config;
pub mod console;
pub mod dispatch;
pub mod domain;
pub mod eligibility;
pub mod engine;
pub mod error;
pub mod handoff;
pub mod inflight;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod offers;
pub mod planner;
pub mod policy;
pub mod providers;
pub mod reason;
pub mod shared_rate;
pub mod signing;
pub mod simulate;
pub mod sources;
pub mod store;
pub mod templates;
