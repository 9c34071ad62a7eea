//! Log set-up: tracing to stderr, human-readable text (coloured on a
//! terminal) or one JSON object per line for journald and log shippers.
//! Personal data is masked by the domain types' `Display`, so log lines may
//! use `%phone` freely; message bodies are logged only at trace level.

use std::io::IsTerminal;

use serde::Deserialize;
use tracing_appender::non_blocking::WorkerGuard;
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
///
/// Lines go to stderr from a thread of their own, written in batches: a
/// daemon sending thousands of messages a second logs a line for each, and
/// a write to stderr for every line took 6% of the sending loop's CPU
/// (BENCHMARKS.md, point 18). Nothing is dropped (a full queue makes the
/// logging thread wait). Keep the guard until the command ends: dropping it
/// writes out what is queued.
pub fn init(format: LogFormat, filter: &str) -> Option<WorkerGuard> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("duebell-log")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
    };
    installed.ok().map(|()| guard)
}
