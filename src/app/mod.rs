//! The daemon: `App::build` opens and migrates the store and assembles the
//! engine; `App::run` loops until its shutdown token is cancelled. A cycle
//! imports changed sources, plans on the cron tick (and at once after an
//! import), dispatches everything due, posts hand-offs and picks up template
//! edits. Tests start the whole daemon in-process with their own clock and
//! stop it through the token.

use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Config;
use crate::engine::Engine;
use crate::sources::{FileWatch, ImportReport, PollOutcome};
use crate::store::{self, Fence, Store, StoreError};

/// The lease name of the planner role.
pub const PLANNER_ROLE: &str = "planner";

mod metrics;
mod replan;
mod roles;
mod run;
mod send;

/// What one cycle did.
#[derive(Debug, Default)]
pub struct CycleReport {
    pub imports: Vec<ImportReport>,
    /// Files that could not be applied, as full messages.
    pub failures: Vec<String>,
    pub planned: u64,
    pub sent: u64,
    pub decided: u64,
    pub failed: u64,
}

pub struct App {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    engine: Engine,
    watches: Vec<(FileWatch, Instant)>,
    cycles: watch::Sender<u64>,
    next_tick: Option<DateTime<Utc>>,
    /// When the last planning pass began (a steady tick's sweep reads the
    /// changes since).
    last_pass: Option<DateTime<Utc>>,
    templates_version: Option<String>,
    templates_checked: Instant,
    http: reqwest::Client,
    reload: Arc<tokio::sync::Notify>,
    api: crate::api::ApiState,
    api_addr: watch::Sender<Option<std::net::SocketAddr>>,
    loader: Option<ConfigLoader>,
    parts: crate::engine::Parts,
    /// The planner lease while this instance holds it.
    planner: Option<Fence>,
    /// When the planner lease was last taken, renewed or tried for (wall
    /// clock); upkeep (that, and reconciling dead instances' sends) repeats
    /// every third of the lease.
    last_upkeep: Instant,
    /// Another instance asked the planner to plan.
    plan_requested: bool,
    /// The engine the API's re-planner uses: kept equal to `engine`.
    replanning: Arc<std::sync::Mutex<Engine>>,
    /// The configuration the console reads: kept equal to `config`.
    live: Arc<std::sync::RwLock<Arc<Config>>>,
    /// The config file, when the daemon was started from one: the console
    /// edits settings in it.
    config_file: Option<std::path::PathBuf>,
}

/// Re-reads the configuration (SIGHUP): the file, the environment, the
/// credential files. Errors are full problem lines.
pub type ConfigLoader = Arc<dyn Fn() -> Result<Config, Vec<String>> + Send + Sync>;

impl App {
    /// Opens the store (creating and migrating it), assembles the engine and
    /// reconciles any message a previous run left `sending`.
    pub async fn build(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<App> {
        let store = store::open(&config.store)
            .await
            .with_context(|| format!("while opening the store {}", config.store.url))?;
        let parts = crate::engine::Parts {
            unsubscribe: Arc::new(deployment_signer(store.as_ref(), clock.now()).await?),
            pauses: Arc::default(),
            metrics: Arc::default(),
            instance: Arc::from(config.daemon.instance_name()),
        };
        let engine = Engine::build_with(&config, store.clone(), None, parts.clone())
            .map_err(|p| anyhow::anyhow!("{}", p.join("\n")))?;
        metrics::declare(&parts.metrics, &config);
        let replanning = Arc::new(std::sync::Mutex::new(engine.clone()));
        let api = crate::api::ApiState {
            replanner: Some(Arc::new(replan::EngineReplan {
                engine: replanning.clone(),
            })),
            work: Arc::new(tokio::sync::Notify::new()),
            store: store.clone(),
            clock: clock.clone(),
            access: Arc::new(crate::api::access::Access::new(
                &config.api.tokens,
                &config.api.clients,
                config.console.clone(),
            )),
            unsubscribe: parts.unsubscribe.clone(),
            pauses: parts.pauses.clone(),
            metrics: parts.metrics.clone(),
            replan: Arc::new(tokio::sync::Notify::new()),
            default_tz: config.defaults.timezone.0,
            ready: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            providers: Arc::new(
                config
                    .providers
                    .iter()
                    .map(|p| (p.name.clone(), p.kind))
                    .collect(),
            ),
            twilio_tokens: Arc::new(
                config
                    .providers
                    .iter()
                    .filter(|p| p.kind == crate::providers::ProviderKind::Twilio)
                    .filter_map(|p| Some((p.name.clone(), p.auth_token.clone()?)))
                    .collect(),
            ),
            public_url: config.api.public_url.clone(),
            stop_words: Arc::new(crate::compliance::StopWords::new(
                &config.opt_out.stop_words,
                &config.opt_out.start_words,
            )),
        };
        let (sent, unknown) = engine
            .dispatcher
            .reconcile(clock.now())
            .await
            .context("while reconciling interrupted sends")?;
        if sent + unknown > 0 {
            tracing::warn!(confirmed_sent = sent, unknown, "reconciled messages interrupted by the last stop; `duebell messages --state unknown` lists the unknown ones");
        }
        let now = Instant::now();
        let watches = config
            .sources
            .iter()
            .map(|s| (FileWatch::new(s.path.clone(), s.poll_interval.get()), now))
            .collect();
        let templates_version = crate::templates::folder_version(&config.templates.dir);
        let config = Arc::new(config);
        Ok(App {
            live: Arc::new(std::sync::RwLock::new(config.clone())),
            config_file: None,
            config,
            store,
            clock,
            engine,
            watches,
            cycles: watch::channel(0).0,
            next_tick: None,
            last_pass: None,
            templates_version,
            templates_checked: now,
            http: reqwest::Client::new(),
            reload: Arc::new(tokio::sync::Notify::new()),
            api,
            api_addr: watch::channel(None).0,
            loader: None,
            parts,
            planner: None,
            last_upkeep: now,
            plan_requested: false,
            replanning,
        })
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The template set in use (its `version` changes on reload).
    pub fn templates_version(&self) -> String {
        self.engine.dispatcher.templates.version.clone()
    }

    /// Notify this to reload templates now (SIGHUP).
    pub fn reload_handle(&self) -> Arc<tokio::sync::Notify> {
        self.reload.clone()
    }

    /// Reload (SIGHUP, or a change from the console) re-reads `path` with
    /// the process environment; the console edits settings in it.
    pub fn with_config_file(self, path: std::path::PathBuf) -> Self {
        let file = path.clone();
        let loader: ConfigLoader = Arc::new(move || {
            crate::config::load(&file, std::env::vars())
                .map(|l| l.config)
                .map_err(|p| p.0.iter().map(ToString::to_string).collect())
        });
        let mut app = self.with_config_loader(loader);
        app.config_file = Some(path);
        app
    }

    /// The console's state, sharing this daemon's store, clock, reload
    /// handle and live configuration.
    pub fn console_state(&self) -> crate::console::ConsoleState {
        crate::console::ConsoleState {
            api: self.api.clone(),
            live: self.live.clone(),
            config_file: self.config_file.clone(),
            reload: self.reload.clone(),
            writing: Arc::default(),
        }
    }

    /// How SIGHUP re-reads the configuration; without one, SIGHUP reloads
    /// templates only.
    pub fn with_config_loader(mut self, loader: ConfigLoader) -> Self {
        self.loader = Some(loader);
        self
    }

    /// Applies a new configuration if it is valid as a whole; otherwise logs
    /// every problem and keeps the running one. The store and the API
    /// address are fixed for the life of the process.
    pub fn reload_config(&mut self) -> bool {
        let Some(loader) = self.loader.clone() else {
            let version = crate::templates::folder_version(&self.config.templates.dir);
            return self.force_reload_templates(version);
        };
        let mut new = match loader() {
            Ok(c) => c,
            Err(problems) => {
                return self.reject_config(&problems);
            }
        };
        if new.store.url != self.config.store.url || new.api.listen != self.config.api.listen {
            tracing::warn!("store.url and api.listen take effect at the next restart; keeping the running values");
            new.store = self.config.store.clone();
            new.api.listen = self.config.api.listen.clone();
        }
        match Engine::build_with(&new, self.store.clone(), None, self.parts.clone()) {
            Ok(engine) => {
                let now = Instant::now();
                self.watches = new
                    .sources
                    .iter()
                    .map(|s| (FileWatch::new(s.path.clone(), s.poll_interval.get()), now))
                    .collect();
                self.templates_version = crate::templates::folder_version(&new.templates.dir);
                self.set_engine(engine);
                self.config = Arc::new(new);
                *self.live.write().unwrap_or_else(|e| e.into_inner()) = self.config.clone();
                // Plan again under the new rules.
                self.next_tick = None;
                tracing::info!(templates = %self.engine.dispatcher.templates.version, "configuration reloaded");
                true
            }
            Err(problems) => self.reject_config(&problems),
        }
    }

    /// A config reload refused: each problem logged, counted, the running
    /// configuration kept.
    fn reject_config(&self, problems: &[String]) -> bool {
        for p in problems {
            tracing::error!("config reload rejected: {p}");
        }
        tracing::error!("keeping the running configuration");
        self.parts
            .metrics
            .inc("duebell_reload_rejected_total", &[("what", "config")], 1.0);
        false
    }

    /// The API's bound address once it listens (port 0 picks a free one).
    pub fn api_addr(&self) -> watch::Receiver<Option<std::net::SocketAddr>> {
        self.api_addr.subscribe()
    }

    /// Replaces the engine (a reload), for the API's re-planner too.
    fn set_engine(&mut self, engine: Engine) {
        *self.replanning.lock().unwrap_or_else(|e| e.into_inner()) = engine.clone();
        self.engine = engine;
    }

    /// What API handlers share (tests call handlers' logic through it).
    pub fn api_state(&self) -> crate::api::ApiState {
        self.api.clone()
    }

    /// Counts completed cycles; tests await a change instead of sleeping.
    pub fn cycles(&self) -> watch::Receiver<u64> {
        self.cycles.subscribe()
    }

    /// One full cycle now: every source polled, a planning pass, everything
    /// due dispatched (`duebell run --once`).
    pub async fn run_once(&mut self) -> anyhow::Result<CycleReport> {
        let now = Instant::now();
        for (_, next) in &mut self.watches {
            *next = now;
        }
        self.next_tick = None;
        self.cycle(&CancellationToken::new()).await
    }

    /// Reloads templates if the folder changed. A set that does not load is
    /// rejected with each problem logged (file and line); the last good set
    /// keeps serving.
    pub fn reload_templates(&mut self) -> bool {
        let version = crate::templates::folder_version(&self.config.templates.dir);
        if version == self.templates_version {
            return false;
        }
        self.force_reload_templates(version)
    }

    fn force_reload_templates(&mut self, version: Option<String>) -> bool {
        self.templates_version = version;
        match crate::engine::load_templates(&self.config) {
            Ok(set) => {
                tracing::info!(version = %set.version, "templates reloaded");
                self.set_engine(self.engine.with_templates(set));
                true
            }
            Err(problems) => {
                for p in &problems {
                    tracing::error!(file = %p.file, line = p.line, "template edit rejected: {}", p.message);
                }
                tracing::error!(version = %self.engine.dispatcher.templates.version, "keeping the last good templates");
                self.parts.metrics.inc(
                    "duebell_reload_rejected_total",
                    &[("what", "templates")],
                    1.0,
                );
                false
            }
        }
    }

    async fn cycle(&mut self, shutdown: &CancellationToken) -> anyhow::Result<CycleReport> {
        let mut report = CycleReport::default();
        let wall = Instant::now();
        if wall >= self.templates_checked {
            self.templates_checked = wall + self.config.templates.reload_interval.get();
            self.reload_templates();
        }
        for (watch, next) in &mut self.watches {
            if *next > wall {
                continue;
            }
            *next = wall + watch.poll_interval;
            match watch.poll(self.store.as_ref(), self.clock.now()).await {
                Ok(PollOutcome::Unchanged) => {}
                Ok(PollOutcome::Missing) => {
                    tracing::warn!(path = %watch.path.display(), "source file is missing; will look again")
                }
                Ok(PollOutcome::Imported(r)) => {
                    for e in &r.errors {
                        tracing::warn!(path = %r.path, line = e.line, field = %e.field, "row rejected: {}", e.reason);
                    }
                    tracing::info!(
                        path = %r.path,
                        kind = r.kind.as_str(),
                        imported = r.counts.imported,
                        updated = r.counts.updated,
                        unchanged = r.counts.unchanged,
                        rejected = r.counts.rejected,
                        "source imported"
                    );
                    report.imports.push(r);
                }
                Err(e) => {
                    tracing::error!(path = %watch.path.display(), "source not imported: {e}");
                    report.failures.push(e.to_string());
                }
            }
        }
        // Plan on the cron tick, and at once when an import changed the
        // book; only the holder of the planner lease plans.
        let changed = report
            .imports
            .iter()
            .any(|r| r.counts.imported + r.counts.updated > 0);
        self.hold_planner().await;
        self.plan_if_due(changed, &mut report).await?;
        self.reconcile().await?;
        self.send_due(shutdown, &mut report).await?;
        crate::handoff::post_due(
            self.store.as_ref(),
            &self.config.handoff,
            &self.http,
            self.clock.now(),
        )
        .await
        .context("while posting hand-offs")?;
        crate::offers::settle(
            self.store.as_ref(),
            self.clock.now(),
            Some(&self.parts.metrics),
        )
        .await
        .context("while settling offers")?;
        crate::offers::post_due(
            self.store.as_ref(),
            &self.config.offers,
            &self.config.handoff,
            &self.http,
            self.clock.now(),
        )
        .await
        .context("while posting taken offers")?;
        self.cycles.send_modify(|n| *n += 1);
        Ok(report)
    }

    /// Plans if this instance holds the planner lease and a plan is due
    /// (the cron tick, a changed book, a request, or the lease just taken
    /// over); an instance that does not plan passes a change on to the one
    /// that does.
    async fn plan_if_due(&mut self, changed: bool, report: &mut CycleReport) -> anyhow::Result<()> {
        let now = self.clock.now();
        if self.planner.is_none() && (changed || self.plan_requested) {
            self.plan_requested = false;
            if let Err(e) = self.store.request_plan().await {
                tracing::warn!("cannot ask the planner to plan: {e}");
            }
        }
        // A cron tick reads only the borrowers whose next look has come;
        // the first pass, and one after a change of book, rules or planner,
        // reads the whole book.
        let full = changed || self.plan_requested || self.next_tick.is_none();
        if let (Some(fence), true) = (
            self.planner.clone(),
            full || self.next_tick.is_some_and(|t| now >= t),
        ) {
            self.plan_requested = false;
            let pass = match (full, self.last_pass) {
                (false, Some(previous)) => crate::planner::Pass::Due { previous },
                _ => crate::planner::Pass::Full,
            };
            let started = std::time::Instant::now();
            // A long pass keeps the lease renewed while it runs; if the
            // lease is lost anyway, the fence stops the next page.
            let keep = {
                let (store, clock) = (self.store.clone(), self.clock.clone());
                let ttl = self.config.daemon.planner_lease.get();
                let fence = fence.clone();
                async move {
                    loop {
                        tokio::time::sleep(ttl / 3).await;
                        match store
                            .acquire_lease(PLANNER_ROLE, &fence.holder, clock.now(), ttl)
                            .await
                        {
                            Ok(Some(f)) if f.token == fence.token => {}
                            Ok(_) => {
                                tracing::warn!("the planner lease was lost while planning");
                                std::future::pending::<()>().await;
                            }
                            Err(e) => tracing::warn!("cannot renew the planner lease: {e}"),
                        }
                    }
                }
            };
            let planned = tokio::select! {
                r = self.engine.plan_pass(now, pass, Some(&fence)) => r,
                _ = keep => unreachable!("renewal never ends on its own"),
            };
            self.last_upkeep = Instant::now();
            let tick = match planned {
                Ok(t) => t,
                Err(StoreError::Fenced(why)) => {
                    tracing::warn!("planning stopped: {why}");
                    self.planner = None;
                    return Ok(());
                }
                Err(e) => return Err(anyhow::Error::new(e).context("while planning")),
            };
            self.api.metrics.observe(
                "duebell_planner_tick_seconds",
                &[],
                started.elapsed().as_secs_f64(),
            );
            report.planned += tick.recorded;
            self.last_pass = Some(now);
            tracing::info!(
                pass = if pass == crate::planner::Pass::Full {
                    "full"
                } else {
                    "due"
                },
                borrowers = tick.borrowers,
                recorded = tick.recorded,
                cancelled = tick.cancelled,
                ms = started.elapsed().as_millis() as u64,
                "planned"
            );
            self.next_tick = self.config.policy.tick.schedule.after(&now).next();
        }
        Ok(())
    }
}

/// The deployment's signer (unsubscribe links, provider callback tokens,
/// Return-Path tokens): its key is kept in the store, made at first use,
/// so every instance and every command signs alike.
pub async fn deployment_signer(
    store: &dyn Store,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<crate::signing::Signer> {
    let fresh = crate::signing::random_key().context("while reading /dev/urandom")?;
    let key = store
        .secret("unsubscribe_key", &fresh, now)
        .await
        .context("while reading the signing key")?;
    Ok(crate::signing::Signer::new(key))
}
