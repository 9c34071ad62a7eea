//! Integration tests: one binary (link time), modules by area. Tests run the
//! real `duebell` binary or the whole daemon in-process, each on its own
//! temporary state folder. `it_pg` runs the store-backed modules again on
//! PostgreSQL.

pub const BACKEND: support::Backend = support::Backend::Sqlite;

mod api;
mod bounces;
mod browser;
pub mod chaos;
mod check;
mod cli_pipeline;
mod compliance;
mod console;
pub mod console_support;
mod daemon;
mod defaults;
mod fuzz;
mod hardening;
mod import;
mod install;
mod layers;
mod next_look;
mod offers;
mod packs;
mod pipeline;
mod properties;
mod providers;
mod service;
mod smtp;
mod store;
mod support;
mod templates;
pub mod webdriver;
