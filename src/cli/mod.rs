//! The command line: the argument definitions and `execute`, which loads the
//! config the same way for every command (`--config`, else `DUEBELL_CONFIG`,
//! else `config/duebell.toml`) and maps each command's result to an
//! `ExitStatus`. The commands live by family: `book.rs` (check, templates,
//! render, plan), `ops.rs` (status, messages, audit, migrate, store copy),
//! `daemon.rs` (import, run, signals).

use book::{check_templates, plan, print_warnings, render};
use daemon::{import, run};
use ops::{audit, bounces_poll, callbacks, decide_messages, messages, migrate, status, store_copy};

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::clock::{Clock, SystemClock};
use crate::config::{self, LoadedConfig};
use crate::domain::Channel;
use crate::error::ExitStatus;
use crate::logging::{self, LogFormat};
use crate::sources::{self, Progress};

use crate::templates::{Samples, TemplateProblem, TemplateSet};

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
    /// With none, `duebell` says what to set up next.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration; print each problem as FILE:LINE:COL: key: message.
    Check {
        /// Report settings looser than a compliance pack as warnings, not errors
        /// (the daemon still refuses them).
        #[arg(long)]
        pack_advisory: bool,
        /// Print, per market a compliance pack governs, the effective windows and
        /// caps after combining the operator's rules with the packs.
        #[arg(long)]
        explain: bool,
    },
    /// Import loan-book or payments files (CSV or JSONL), each in one transaction.
    Import {
        /// Files to import, in order.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Never draw a progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// Template tools.
    Templates {
        #[command(subcommand)]
        command: TemplatesCommand,
    },
    /// Print exactly what a borrower would receive from a template.
    Render {
        /// Template name, e.g. late_firm.
        template: String,
        /// Locale to render in [default: the borrower's, else templates.default_locale].
        #[arg(long)]
        locale: Option<String>,
        /// Channel.
        #[arg(long, value_enum, default_value = "sms")]
        channel: ChannelArg,
        /// Render for this borrower's active loans in the store.
        #[arg(long, conflicts_with = "sample")]
        borrower: Option<String>,
        /// Render with this sample from templates/samples.toml [default: the first].
        #[arg(long)]
        sample: Option<String>,
    },
    /// Show, without sending or changing anything, each active loan's decision at an instant.
    Plan {
        /// The instant to plan at (RFC 3339) [default: now].
        #[arg(long)]
        at: Option<String>,
        /// Only this borrower.
        #[arg(long)]
        borrower: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: PlanFormat,
    },
    /// Run the real planner, gate and dispatcher in virtual time over a copy of the data.
    Simulate(crate::simulate::SimulateArgs),
    /// Console accounts: add, list, disable, enable, passwd.
    Users {
        #[command(subcommand)]
        command: users::UsersCommand,
    },
    /// Export every contact attempt for compliance review.
    Audit {
        /// First UTC date to include (YYYY-MM-DD).
        #[arg(long)]
        from: Option<String>,
        /// Last UTC date to include (YYYY-MM-DD).
        #[arg(long)]
        to: Option<String>,
        #[arg(long, value_enum, default_value = "csv")]
        format: crate::audit::AuditFormat,
    },
    /// Print the running daemon's summary (through its API).
    Status,
    /// List messages, or decide on ones left `unknown`.
    Messages {
        #[command(subcommand)]
        action: Option<MessagesAction>,
        /// Only messages in this state (planned, deferred, sending, sent, unknown, …).
        #[arg(long)]
        state: Option<String>,
        /// Only this borrower's messages.
        #[arg(long)]
        borrower: Option<String>,
        #[arg(long, default_value = "100")]
        limit: u32,
    },
    /// Print the delivery-receipt URLs to configure at each provider (Aliyun
    /// and Tencent URLs carry a secret token; Twilio's are set per message).
    Callbacks,
    /// Bounce mailboxes (SMTP providers' `bounce_mailbox`).
    Bounces {
        #[command(subcommand)]
        command: BouncesCommand,
    },
    /// Create the store if needed and apply its migrations (the daemon also
    /// does this at start; run it first when instances start together).
    Migrate,
    /// Store tools.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Write the man pages (duebell.1, duebell.toml.5), shell completions
    /// (bash, zsh, fish) and the packaged duebell.toml into DIR, for packagers.
    Generate {
        /// Folder to write into (created if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Run the daemon until SIGINT or SIGTERM.
    Run {
        /// Run one full cycle, then exit.
        #[arg(long)]
        once: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BouncesCommand {
    /// Read every bounce mailbox once and apply what it reports (the daemon
    /// does this every `bounce_mailbox.every`); print what each held.
    Poll,
}

#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// Render every template in every locale against templates/samples.toml
    /// and report FILE:LINE: message for each problem.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy every row of one store into another, empty one (SQLite to
    /// PostgreSQL or back), in one transaction, verified by counting every
    /// table on both sides. Stop the daemons first.
    Copy {
        /// The store to read, e.g. sqlite://var/duebell.db.
        #[arg(long, value_name = "URL")]
        from: String,
        /// The empty store to fill, e.g. postgres://duebell@db:5432/duebell.
        #[arg(long, value_name = "URL")]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum MessagesAction {
    /// Send these `unknown` or `failed` messages again (the provider did not get them).
    Release {
        #[arg(required = true)]
        ids: Vec<i64>,
    },
    /// Close these `unknown` or `failed` messages without sending.
    Cancel {
        #[arg(required = true)]
        ids: Vec<i64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ChannelArg {
    Sms,
    Email,
}

impl From<ChannelArg> for Channel {
    fn from(c: ChannelArg) -> Channel {
        match c {
            ChannelArg::Sms => Channel::Sms,
            ChannelArg::Email => Channel::Email,
        }
    }
}

/// Prints a line to stdout; on a closed pipe (`duebell plan | head`) stops
/// the command quietly instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write;
        if writeln!(std::io::stdout().lock(), $($arg)*).is_err() {
            return ExitStatus::Ok;
        }
    }};
}

// After `out!`, which they use.
mod book;
mod daemon;
pub mod first_run;
pub mod generate;
mod ops;
mod users;

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

/// `duebell` alone: what this is, whether its config loads, and what to set
/// next, on one screen.
fn welcome(cli: &Cli) -> ExitStatus {
    println!(
        "duebell {}: humane, lawful payment reminders.\n",
        env!("CARGO_PKG_VERSION")
    );
    let status = match load_config(cli) {
        Ok(loaded) => {
            println!("config: {} (valid)", loaded.path.display());
            first_run::print(&loaded.config, &loaded.path);
            ExitStatus::Ok
        }
        Err(status) => {
            eprintln!("\nFix the config first: `duebell check` lists each problem with its line.");
            status
        }
    };
    println!(
        "\nThen: `duebell check`, `duebell plan` (what would go out now), `duebell run`.\n\
         `duebell --help` lists every command; `man duebell` and `man duebell.toml` document them."
    );
    status
}

fn load_config(cli: &Cli) -> Result<LoadedConfig, ExitStatus> {
    load_config_with(cli, config::PackMode::Enforce)
}

fn load_config_with(cli: &Cli, mode: config::PackMode) -> Result<LoadedConfig, ExitStatus> {
    let env_path = std::env::var("DUEBELL_CONFIG").ok();
    let path = config::resolve_path(cli.config.as_deref(), env_path.as_deref());
    config::load_with(&path, std::env::vars(), mode).map_err(|problems| {
        eprintln!("{problems}");
        eprintln!(
            "duebell: {} problem(s) in the configuration; nothing was done",
            problems.0.len()
        );
        ExitStatus::BadConfig
    })
}

pub async fn execute(cli: Cli) -> ExitStatus {
    let Some(command) = &cli.command else {
        return welcome(&cli);
    };
    match command {
        Command::Store {
            command: StoreCommand::Copy { from, to },
        } => return store_copy(from, to).await,
        Command::Generate { dir } => return generate::generate(dir),
        _ => {}
    }
    let mode = match command {
        Command::Check {
            pack_advisory: true,
            ..
        } => config::PackMode::Advisory,
        _ => config::PackMode::Enforce,
    };
    let loaded = match load_config_with(&cli, mode) {
        Ok(l) => l,
        Err(status) => return status,
    };
    match command {
        Command::Check { explain, .. } => {
            let problems = check_templates(&loaded.config);
            for p in &problems {
                eprintln!("{p}");
            }
            for w in &loaded.pack_warnings {
                eprintln!("warning: {w}");
            }
            print_warnings(&loaded.config);
            if *explain {
                if let Ok(packs) = loaded.config.compliance.active() {
                    print!(
                        "{}",
                        crate::compliance::packs::explain(
                            &packs,
                            &loaded.config.quiet_hours,
                            &loaded.config.caps
                        )
                    );
                }
            }
            if problems.is_empty() {
                println!("{}: ok", loaded.path.display());
                first_run::print(&loaded.config, &loaded.path);
                ExitStatus::Ok
            } else {
                eprintln!("duebell: {} problem(s) in the templates", problems.len());
                ExitStatus::BadConfig
            }
        }
        Command::Templates {
            command: TemplatesCommand::Check,
        } => {
            let problems = check_templates(&loaded.config);
            for p in &problems {
                eprintln!("{p}");
            }
            if problems.is_empty() {
                println!("{}: ok", loaded.config.templates.dir.display());
                ExitStatus::Ok
            } else {
                eprintln!("duebell: {} problem(s) in the templates", problems.len());
                ExitStatus::BadConfig
            }
        }
        Command::Render {
            template,
            locale,
            channel,
            borrower,
            sample,
        } => {
            render(
                &loaded.config,
                template,
                locale.as_deref(),
                (*channel).into(),
                borrower.as_deref(),
                sample.as_deref(),
            )
            .await
        }
        Command::Import { paths, no_progress } => {
            let _log = logging::init(cli.log_format, &loaded.config.log.filter);
            import(loaded, paths, *no_progress).await
        }
        Command::Plan {
            at,
            borrower,
            format,
        } => plan(&loaded.config, at.as_deref(), borrower.as_deref(), *format).await,
        Command::Simulate(args) => {
            let _log = logging::init(cli.log_format, "warn");
            crate::simulate::run(&loaded.config, args).await
        }
        Command::Status => status(&loaded.config).await,
        Command::Callbacks => callbacks(&loaded.config).await,
        Command::Bounces {
            command: BouncesCommand::Poll,
        } => bounces_poll(&loaded.config).await,
        Command::Migrate => migrate(&loaded.config.store).await,
        Command::Store { .. } | Command::Generate { .. } => {
            unreachable!("handled before the config is read")
        }
        Command::Users { command } => users::users(&loaded.config, command).await,
        Command::Audit { from, to, format } => {
            audit(&loaded.config, from.as_deref(), to.as_deref(), *format).await
        }
        Command::Messages {
            action: Some(action),
            ..
        } => decide_messages(&loaded.config, action).await,
        Command::Messages {
            action: None,
            state,
            borrower,
            limit,
        } => {
            messages(
                &loaded.config,
                state.as_deref(),
                borrower.as_deref(),
                *limit,
            )
            .await
        }
        Command::Run { once } => {
            let _log = logging::init(cli.log_format, &loaded.config.log.filter);
            run(loaded, *once).await
        }
    }
}

pub(crate) async fn open_store(
    config: &crate::config::StoreConfig,
) -> Result<Arc<dyn crate::store::Store>, ExitStatus> {
    crate::store::open(config).await.map_err(|e| {
        eprintln!("duebell: cannot open the store {}: {e}", config.url);
        ExitStatus::Failed
    })
}
