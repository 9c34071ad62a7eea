//! Log set-up: tracing to stderr, human-readable text (coloured on a
//! terminal) or one JSON object per line for journald and log shippers.
//! Personal data is masked by the domain types' `Display`, so log lines may
//! use `%phone` freely; message bodies are logged only at trace level.

use std::io::IsTerminal;

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// Log verbosity. The output format is a property of the run (`--log-format`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `duebell=debug,sqlx=warn`, …
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: "info,sqlx=warn".to_owned(),
        }
    }
}

impl LogConfig {
    /// The problems with `[log]`, each with its key.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.filter) {
            problems.push((
                "log.filter".to_owned(),
                format!("is not a log filter ({e}); write e.g. info or duebell=debug,sqlx=warn"),
            ));
        }
        problems
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins over the
/// configured filter (handy for a one-off debug run). Safe to call twice:
/// the second call is ignored (tests build several apps in one process).
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}
