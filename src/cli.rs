//! The command line: `check`, `import`, `run`. Each command loads the config
//! the same way (`--config`, else `DUEBELL_CONFIG`, else
//! `config/duebell.toml`) and maps its result to an `ExitStatus`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::clock::{Clock, SystemClock};
use crate::config::{self, LoadedConfig};
use crate::error::ExitStatus;
use crate::logging::{self, LogFormat};
use crate::sources::{self, Progress};

#[derive(Debug, Parser)]
#[command(
    name = "duebell",
    version,
    about = "Humane, lawful payment reminders for consumer lenders"
)]
pub struct Cli {
    /// Config file [default: $DUEBELL_CONFIG, else config/duebell.toml]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration; print each problem as FILE:LINE:COL: key: message.
    Check,
    /// Import loan-book or payments files (CSV or JSONL), each in one transaction.
    Import {
        /// Files to import, in order.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Never draw a progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// Run the daemon until SIGINT or SIGTERM.
    Run {
        /// Run one full cycle, then exit.
        #[arg(long)]
        once: bool,
    },
}

pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("duebell: cannot start the async runtime: {e}");
            return ExitStatus::Failed.into();
        }
    };
    runtime.block_on(execute(cli)).into()
}

fn load_config(cli: &Cli) -> Result<LoadedConfig, ExitStatus> {
    let env_path = std::env::var("DUEBELL_CONFIG").ok();
    let path = config::resolve_path(cli.config.as_deref(), env_path.as_deref());
    config::load(&path, std::env::vars()).map_err(|problems| {
        eprintln!("{problems}");
        eprintln!(
            "duebell: {} problem(s) in the configuration; nothing was done",
            problems.0.len()
        );
        ExitStatus::BadConfig
    })
}

pub async fn execute(cli: Cli) -> ExitStatus {
    let loaded = match load_config(&cli) {
        Ok(l) => l,
        Err(status) => return status,
    };
    match &cli.command {
        Command::Check => {
            println!("{}: ok", loaded.path.display());
            ExitStatus::Ok
        }
        Command::Import { paths, no_progress } => {
            logging::init(cli.log_format, &loaded.config.log.filter);
            import(loaded, paths, *no_progress).await
        }
        Command::Run { once } => {
            logging::init(cli.log_format, &loaded.config.log.filter);
            run(loaded, *once).await
        }
    }
}

async fn import(loaded: LoadedConfig, paths: &[PathBuf], no_progress: bool) -> ExitStatus {
    let store = match crate::store::open(&loaded.config.store).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "duebell: cannot open the store {}: {e}",
                loaded.config.store.url
            );
            return ExitStatus::Failed;
        }
    };
    let progress = if no_progress {
        Progress::Off
    } else {
        Progress::Auto
    };
    let mut status = ExitStatus::Ok;
    for path in paths {
        match sources::import_file(store.as_ref(), path, SystemClock.now(), progress).await {
            Ok(report) => {
                for e in &report.errors {
                    eprintln!("{e}");
                }
                println!(
                    "{}: {} ({})",
                    report.path,
                    report.counts,
                    report.kind.as_str()
                );
                if report.counts.rejected > 0 {
                    status = ExitStatus::Failed;
                }
            }
            Err(e) => {
                eprintln!("{e}");
                println!("{}: not imported", path.display());
                status = ExitStatus::Failed;
            }
        }
    }
    store.close().await;
    status
}

async fn run(loaded: LoadedConfig, once: bool) -> ExitStatus {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut app = match App::build(loaded.config, clock).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitStatus::Failed;
        }
    };
    if once {
        let report = app.run_once().await;
        app.store().close().await;
        return if report.failures.is_empty() {
            ExitStatus::Ok
        } else {
            ExitStatus::Failed
        };
    }
    let shutdown = CancellationToken::new();
    let signals = match shutdown_on_signal(shutdown.clone()) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("cannot install signal handlers: {e}");
            return ExitStatus::Failed;
        }
    };
    let result = app.run(shutdown).await;
    signals.abort();
    match result {
        Ok(()) => ExitStatus::Ok,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitStatus::Failed
        }
    }
}

/// Cancels `token` on SIGTERM or SIGINT.
fn shutdown_on_signal(token: CancellationToken) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "stop requested");
        token.cancel();
    }))
}
