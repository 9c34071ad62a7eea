//! `[store]`: which database holds the book and the outbox, and how it is
//! opened. Owned here so the store needs nothing from `config`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::domain::ConfigDuration;

/// The store: an embedded SQLite file by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://PATH` (relative paths are from the working directory), or
    /// `postgres://USER@HOST:PORT/DATABASE` when several instances share
    /// the work.
    pub url: String,
    /// How long a writer waits for a lock held by another connection.
    pub busy_timeout: ConfigDuration,
    /// Connections in the pool.
    pub max_connections: u32,
    /// SQLite durability: `full` (every commit survives a power cut; the
    /// default), `normal` or `off` (throwaway stores only).
    pub synchronous: Synchronous,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    Full,
    Normal,
    Off,
}

impl Synchronous {
    /// SQLite's value for `PRAGMA synchronous`, for every connection the
    /// store opens on the file.
    pub fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
            Synchronous::Off => "OFF",
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "sqlite://var/duebell.db".to_owned(),
            busy_timeout: ConfigDuration(Duration::from_secs(5)),
            max_connections: 4,
            synchronous: Synchronous::Full,
        }
    }
}

impl StoreConfig {
    /// The SQLite file this config names, or `None` for another backend.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        let rest = self
            .url
            .strip_prefix("sqlite://")
            .or_else(|| self.url.strip_prefix("sqlite:"))?;
        let rest = rest.split('?').next().unwrap_or(rest);
        Some(PathBuf::from(rest))
    }

    /// Whether this names a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")
    }
}

impl StoreConfig {
    /// The problems with this section, each with its key.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.is_postgres() {
            if let Err(e) = self.url.parse::<sqlx::postgres::PgConnectOptions>() {
                problems.push((
                    "store.url".to_owned(),
                    format!("not a PostgreSQL URL ({e}); write postgres://USER@HOST:5432/DATABASE"),
                ));
            }
        } else if self.sqlite_path().is_none() {
            problems.push((
                "store.url".to_owned(),
                format!(
                    "`{}` is not a store URL; use sqlite://var/duebell.db or postgres://USER@HOST:5432/DATABASE",
                    self.url
                ),
            ));
        } else if self.sqlite_path().is_some_and(|p| p.as_os_str().is_empty()) {
            problems.push((
                "store.url".to_owned(),
                "names no file; use sqlite://var/duebell.db".to_owned(),
            ));
        }
        if self.max_connections == 0 {
            problems.push((
                "store.max_connections".to_owned(),
                "must be at least 1".to_owned(),
            ));
        }
        problems
    }
}
