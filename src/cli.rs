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
    /// Create the store if needed and apply its migrations (the daemon also
    /// does this at start; run it first when instances start together).
    Migrate,
    /// Store tools.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Run the daemon until SIGINT or SIGTERM.
    Run {
        /// Run one full cycle, then exit.
        #[arg(long)]
        once: bool,
    },
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
    if let Command::Store {
        command: StoreCommand::Copy { from, to },
    } = &cli.command
    {
        return store_copy(from, to).await;
    }
    let loaded = match load_config(&cli) {
        Ok(l) => l,
        Err(status) => return status,
    };
    match &cli.command {
        Command::Check => {
            let problems = check_templates(&loaded.config);
            for p in &problems {
                eprintln!("{p}");
            }
            warn_stale_calendars(&loaded.config);
            if problems.is_empty() {
                println!("{}: ok", loaded.path.display());
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
            logging::init(cli.log_format, &loaded.config.log.filter);
            import(loaded, paths, *no_progress).await
        }
        Command::Plan {
            at,
            borrower,
            format,
        } => plan(&loaded.config, at.as_deref(), borrower.as_deref(), *format).await,
        Command::Simulate(args) => {
            logging::init(cli.log_format, "warn");
            crate::simulate::run(&loaded.config, args).await
        }
        Command::Status => status(&loaded.config).await,
        Command::Migrate => migrate(&loaded.config.store).await,
        Command::Store { .. } => unreachable!("handled before the config is read"),
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
            logging::init(cli.log_format, &loaded.config.log.filter);
            run(loaded, *once).await
        }
    }
}

/// Opens the store a command needs, or says why it cannot.
async fn migrate(config: &crate::config::StoreConfig) -> ExitStatus {
    let store = match open_store(config).await {
        Ok(s) => s,
        Err(status) => return status,
    };
    let version = store.schema_version().await;
    store.close().await;
    match version {
        Ok(v) => {
            out!(
                "{}: {} store at schema version {v}",
                config.url,
                store.backend()
            );
            ExitStatus::Ok
        }
        Err(e) => {
            eprintln!(
                "duebell: cannot read the schema version of {}: {e}",
                config.url
            );
            ExitStatus::Failed
        }
    }
}

async fn store_copy(from: &str, to: &str) -> ExitStatus {
    let side = |url: &str| crate::config::StoreConfig {
        url: url.to_owned(),
        ..Default::default()
    };
    for (flag, url) in [("--from", from), ("--to", to)] {
        let c = side(url);
        if c.sqlite_path().is_none() && !c.is_postgres() {
            eprintln!("duebell: {flag} `{url}` is not a store URL; use sqlite://PATH or postgres://USER@HOST:5432/DATABASE");
            return ExitStatus::BadConfig;
        }
    }
    match crate::store::copy(&side(from), &side(to)).await {
        Ok(report) => {
            out!("{:<16} {:>10} {:>10}", "table", "source", "copied");
            for (table, a, b) in &report.tables {
                out!("{table:<16} {a:>10} {b:>10}");
            }
            out!("copied {from} to {to}; every table's count matches");
            ExitStatus::Ok
        }
        Err(e) => {
            eprintln!("duebell: store copy failed, the target is unchanged: {e}");
            ExitStatus::Failed
        }
    }
}

async fn open_store(
    config: &crate::config::StoreConfig,
) -> Result<Arc<dyn crate::store::Store>, ExitStatus> {
    crate::store::open(config).await.map_err(|e| {
        eprintln!("duebell: cannot open the store {}: {e}", config.url);
        ExitStatus::Failed
    })
}

/// Loads the templates and renders every one against the samples.
pub fn check_templates(config: &crate::config::Config) -> Vec<TemplateProblem> {
    let set = match TemplateSet::load(&config.templates) {
        Ok(s) => s,
        Err(problems) => return problems,
    };
    let samples = match Samples::load(&config.templates.dir) {
        Ok(s) => s,
        Err(p) => return vec![p],
    };
    let used: Vec<(String, Channel, String)> = config
        .policy
        .steps
        .iter()
        .flat_map(|s| {
            s.channels
                .iter()
                .map(move |c| (s.template.clone(), *c, s.id.clone()))
        })
        .collect();
    let mut problems = crate::templates::context::check(
        &set,
        &samples,
        &config.templates,
        &crate::engine::context_source(config),
        &used,
    );
    problems.extend(crate::templates::context::lint_sources(&config.templates));
    problems
}

fn warn_stale_calendars(config: &crate::config::Config) {
    if let Ok(gate) = crate::compliance::Gate::build(&config.quiet_hours, &config.caps) {
        for c in gate.stale_calendars(SystemClock.now().date_naive()) {
            eprintln!(
                "warning: holiday calendar `{}` is valid through {}; add the new year's dates to {}",
                c.name,
                c.valid_through,
                config.quiet_hours.calendars_dir.join(format!("{}.toml", c.name)).display()
            );
        }
    }
}

async fn render(
    config: &crate::config::Config,
    template: &str,
    locale: Option<&str>,
    channel: Channel,
    borrower: Option<&str>,
    sample: Option<&str>,
) -> ExitStatus {
    let set = match TemplateSet::load(&config.templates) {
        Ok(s) => s,
        Err(problems) => {
            for p in problems {
                eprintln!("{p}");
            }
            return ExitStatus::BadConfig;
        }
    };
    if !set.has(template, channel) {
        eprintln!(
            "duebell: no {channel} template `{template}` in {}",
            config.templates.dir.display()
        );
        return ExitStatus::Failed;
    }
    let source = crate::engine::context_source(config);
    let ctx = match borrower {
        Some(id) => match crate::engine::borrower_context(config, id, channel, locale).await {
            Ok(ctx) => ctx,
            Err(e) => {
                eprintln!("duebell: {e}");
                return ExitStatus::Failed;
            }
        },
        None => {
            let samples = match Samples::load(&config.templates.dir) {
                Ok(s) => s,
                Err(p) => {
                    eprintln!("{p}");
                    return ExitStatus::BadConfig;
                }
            };
            let chosen = match sample {
                Some(name) => samples.get(name),
                None => samples.sample.first(),
            };
            let Some(chosen) = chosen else {
                let names: Vec<&str> = samples.sample.iter().map(|s| s.name.as_str()).collect();
                eprintln!(
                    "duebell: no sample `{}`; samples are: {}",
                    sample.unwrap_or(""),
                    names.join(", ")
                );
                return ExitStatus::Failed;
            };
            let locale = locale.unwrap_or(&config.templates.default_locale);
            source.from_sample(chosen, locale, channel)
        }
    };
    match set.render(template, &ctx, &config.templates.sms_signature) {
        Ok(r) => {
            print!("{}", crate::templates::preview(&r));
            ExitStatus::Ok
        }
        Err(p) => {
            eprintln!("{p}");
            ExitStatus::Failed
        }
    }
}

async fn plan(
    config: &crate::config::Config,
    at: Option<&str>,
    borrower: Option<&str>,
    format: PlanFormat,
) -> ExitStatus {
    let now = match at.map(crate::domain::parse_instant).transpose() {
        Ok(t) => t.unwrap_or_else(|| SystemClock.now()),
        Err(e) => {
            eprintln!("duebell: --at: {e}");
            return ExitStatus::BadConfig;
        }
    };
    let store = match open_store(&config.store).await {
        Ok(s) => s,
        Err(status) => return status,
    };
    let engine = match crate::engine::Engine::build(config, store.clone(), None) {
        Ok(e) => e,
        Err(problems) => {
            for p in problems {
                eprintln!("{p}");
            }
            return ExitStatus::BadConfig;
        }
    };
    let lines =
        match crate::planner::preview(store.as_ref(), &engine.planner(), now, borrower).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("duebell: {e}");
                return ExitStatus::Failed;
            }
        };
    store.close().await;
    if borrower.is_some() && lines.is_empty() {
        eprintln!(
            "duebell: no borrower `{}` with active loans",
            borrower.unwrap_or_default()
        );
        return ExitStatus::Failed;
    }
    match format {
        PlanFormat::Json => {
            for l in &lines {
                out!("{}", serde_json::to_string(l).unwrap_or_default());
            }
        }
        PlanFormat::Table => {
            out!(
                "{:<12} {:<10} {:<9} {:<6} {:<16} {:<21} reason",
                "loan",
                "borrower",
                "step",
                "chan",
                "decision",
                "not_before"
            );
            for l in &lines {
                out!(
                    "{:<12} {:<10} {:<9} {:<6} {:<16} {:<21} {}",
                    l.loan_id,
                    l.borrower_id,
                    l.step.as_deref().unwrap_or("-"),
                    l.channel.map_or("-", |c| c.as_str()),
                    l.decision.as_str(),
                    l.not_before.map_or("-".to_owned(), |t| t
                        .format("%Y-%m-%dT%H:%M:%SZ")
                        .to_string()),
                    l.reason
                );
            }
        }
    }
    ExitStatus::Ok
}

async fn status(config: &crate::config::Config) -> ExitStatus {
    if config.api.listen.is_empty() {
        eprintln!("duebell: the API is disabled (api.listen is empty); status needs it");
        return ExitStatus::BadConfig;
    }
    let Some(token) = config.api.tokens.first() else {
        eprintln!("duebell: status needs a token in api.tokens (or api.tokens_file)");
        return ExitStatus::BadConfig;
    };
    // A daemon listening on every interface is reached on loopback.
    let addr = config
        .api
        .listen
        .replace("0.0.0.0", "127.0.0.1")
        .replace("[::]", "[::1]");
    let url = format!("http://{addr}/v1/status");
    let resp = reqwest::Client::new()
        .get(&url)
        .bearer_auth(token)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await;
    match resp {
        Ok(r) if r.status().is_success() => match r.json::<crate::api::routes::Status>().await {
            Ok(s) => {
                out!("{}", s.summary);
                for (state, n) in &s.counts {
                    out!("  {state:<12} {n}");
                }
                ExitStatus::Ok
            }
            Err(e) => {
                eprintln!("duebell: unexpected answer from {url}: {e}");
                ExitStatus::Failed
            }
        },
        Ok(r) => {
            eprintln!("duebell: {url} answered {}", r.status());
            ExitStatus::Failed
        }
        Err(e) => {
            eprintln!("duebell: cannot reach the daemon at {url}: {e}; is it running?");
            ExitStatus::Failed
        }
    }
}

async fn decide_messages(config: &crate::config::Config, action: &MessagesAction) -> ExitStatus {
    let (ids, release) = match action {
        MessagesAction::Release { ids } => (ids, true),
        MessagesAction::Cancel { ids } => (ids, false),
    };
    let store = match open_store(&config.store).await {
        Ok(s) => s,
        Err(status) => return status,
    };
    let mut status = ExitStatus::Ok;
    for id in ids {
        match store.operator_decide(SystemClock.now(), *id, release).await {
            Ok(Some(crate::store::MessageState::Planned)) => out!("{id}: released"),
            Ok(Some(crate::store::MessageState::Cancelled)) if !release => out!("{id}: cancelled"),
            Ok(Some(other)) => {
                eprintln!("duebell: message {id} is {other}; only unknown or failed messages can be released or cancelled");
                status = ExitStatus::Failed;
            }
            Ok(None) => {
                eprintln!("duebell: no message {id}");
                status = ExitStatus::Failed;
            }
            Err(e) => {
                eprintln!("duebell: {e}");
                status = ExitStatus::Failed;
            }
        }
    }
    store.close().await;
    status
}

async fn audit(
    config: &crate::config::Config,
    from: Option<&str>,
    to: Option<&str>,
    format: crate::audit::AuditFormat,
) -> ExitStatus {
    let parse = |flag: &str, v: Option<&str>| -> Result<Option<chrono::NaiveDate>, ExitStatus> {
        v.map(crate::domain::parse_date).transpose().map_err(|e| {
            eprintln!("duebell: {flag}: {e}");
            ExitStatus::BadConfig
        })
    };
    let (from, to) = match (parse("--from", from), parse("--to", to)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(s), _) | (_, Err(s)) => return s,
    };
    let store = match open_store(&config.store).await {
        Ok(s) => s,
        Err(status) => return status,
    };
    let mut out = std::io::stdout().lock();
    let result = crate::audit::export(
        store.as_ref(),
        from,
        to,
        format,
        config.defaults.timezone.0,
        &mut out,
    )
    .await;
    store.close().await;
    match result {
        Ok(_) => ExitStatus::Ok,
        Err(e) => {
            eprintln!("duebell: {e}");
            ExitStatus::Failed
        }
    }
}

async fn messages(
    config: &crate::config::Config,
    state: Option<&str>,
    borrower: Option<&str>,
    limit: u32,
) -> ExitStatus {
    let state = match state
        .map(|s| crate::store::MessageState::parse(s).ok_or(s))
        .transpose()
    {
        Ok(s) => s,
        Err(bad) => {
            let all: Vec<&str> = crate::store::MessageState::ALL
                .iter()
                .map(|s| s.as_str())
                .collect();
            eprintln!(
                "duebell: --state `{bad}` is not a state; use one of {}",
                all.join(", ")
            );
            return ExitStatus::BadConfig;
        }
    };
    let store = match open_store(&config.store).await {
        Ok(s) => s,
        Err(status) => return status,
    };
    let query = crate::store::MessageQuery {
        state,
        borrower: borrower.map(str::to_owned),
        limit: Some(limit),
    };
    match store.messages(&query).await {
        Ok(list) => {
            out!(
                "{:<7} {:<10} {:<6} {:<9} {:<10} {:<21} {:<22} reason",
                "id",
                "borrower",
                "chan",
                "step",
                "state",
                "not_before",
                "loans"
            );
            for m in list {
                out!(
                    "{:<7} {:<10} {:<6} {:<9} {:<10} {:<21} {:<22} {}",
                    m.id,
                    m.borrower_id,
                    m.channel.as_str(),
                    m.step,
                    m.state.as_str(),
                    m.not_before.format("%Y-%m-%dT%H:%M:%SZ"),
                    m.loan_ids.join(","),
                    m.reason.unwrap_or_default()
                );
            }
            store.close().await;
            ExitStatus::Ok
        }
        Err(e) => {
            eprintln!("duebell: {e}");
            ExitStatus::Failed
        }
    }
}

async fn import(loaded: LoadedConfig, paths: &[PathBuf], no_progress: bool) -> ExitStatus {
    let store = match open_store(&loaded.config.store).await {
        Ok(s) => s,
        Err(status) => return status,
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
    let path = loaded.path.clone();
    let loader: crate::app::ConfigLoader = Arc::new(move || {
        config::load(&path, std::env::vars())
            .map(|l| l.config)
            .map_err(|p| p.0.iter().map(ToString::to_string).collect())
    });
    let mut app = match App::build(loaded.config, clock).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitStatus::Failed;
        }
    };
    if once {
        let report = app.run_once().await;
        app.release_roles().await;
        app.store().close().await;
        return match report {
            Ok(r) => {
                tracing::info!(
                    planned = r.planned,
                    sent = r.sent,
                    decided = r.decided,
                    failed = r.failed,
                    "cycle done"
                );
                if r.failures.is_empty() {
                    ExitStatus::Ok
                } else {
                    ExitStatus::Failed
                }
            }
            Err(e) => {
                tracing::error!("{e:#}");
                ExitStatus::Failed
            }
        };
    }
    let app = app.with_config_loader(loader);
    let shutdown = CancellationToken::new();
    let signals = match shutdown_on_signal(shutdown.clone(), app.reload_handle()) {
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

/// Cancels `token` on SIGTERM or SIGINT; notifies `reload` on SIGHUP.
fn shutdown_on_signal(
    token: CancellationToken,
    reload: Arc<tokio::sync::Notify>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = hup.recv() => {
                    reload.notify_one();
                    continue;
                }
            };
            tracing::info!(signal = name, "stop requested");
            token.cancel();
            return;
        }
    }))
}
