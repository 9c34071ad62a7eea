//! The daemon: `App::build` opens and migrates the store and prepares the
//! sources; `App::run` loops until its shutdown token is cancelled. One cycle
//! imports every source whose poll is due. (The planner, compliance gate and
//! dispatcher plug into the cycle as they are built.) Tests start the whole
//! daemon in-process with their own clock and cancel it through the token.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Config;
use crate::sources::{FileWatch, ImportReport, PollOutcome};
use crate::store::{self, Store};

/// What one cycle did.
#[derive(Debug, Default)]
pub struct CycleReport {
    pub imports: Vec<ImportReport>,
    /// Files that could not be applied, as full messages.
    pub failures: Vec<String>,
}

pub struct App {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    watches: Vec<(FileWatch, Instant)>,
    cycles: watch::Sender<u64>,
}

impl App {
    /// Opens the store (creating and migrating it) and sets up sources.
    pub async fn build(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<App> {
        let store = store::open(&config.store)
            .await
            .with_context(|| format!("while opening the store {}", config.store.url))?;
        let now = Instant::now();
        let watches = config
            .sources
            .iter()
            .map(|s| (FileWatch::new(s.path.clone(), s.poll_interval.get()), now))
            .collect();
        Ok(App {
            config: Arc::new(config),
            store,
            clock,
            watches,
            cycles: watch::channel(0).0,
        })
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counts completed cycles; tests await a change instead of sleeping.
    pub fn cycles(&self) -> watch::Receiver<u64> {
        self.cycles.subscribe()
    }

    /// One full cycle now: every source polled, whatever its schedule.
    pub async fn run_once(&mut self) -> CycleReport {
        let now = Instant::now();
        for (_, next) in &mut self.watches {
            *next = now;
        }
        self.cycle().await
    }

    async fn cycle(&mut self) -> CycleReport {
        let mut report = CycleReport::default();
        let now = Instant::now();
        for (watch, next) in &mut self.watches {
            if *next > now {
                continue;
            }
            *next = now + watch.poll_interval;
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
        self.cycles.send_modify(|n| *n += 1);
        report
    }

    /// Runs until `shutdown` is cancelled, then closes the store. Work in a
    /// cycle is not interrupted half-way: an import is one transaction, and
    /// cancelling between cycles keeps it whole.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(store = %self.config.store.url, sources = self.watches.len(), "duebell started");
        loop {
            self.cycle().await;
            let next = self
                .watches
                .iter()
                .map(|(_, n)| *n)
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(next) => {}
            }
        }
        tracing::info!("shutting down");
        self.store.close().await;
        Ok(())
    }
}
