//! The roles an instance holds in a cluster: the planner lease (taken,
//! renewed, released), its claims, and reconciling sends whose claim ran out.
//! Also when the loop wakes next.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::*;

impl App {
    /// Reconciles sends whose claim lease ran out.
    pub(super) async fn reconcile(&mut self) -> anyhow::Result<()> {
        // Sends left by an instance that died (or by this one's last life):
        // their claim leases have run out. This process's own sends in
        // flight record their own outcomes.
        let (confirmed, unsure) = self
            .engine
            .dispatcher
            .reconcile_others(self.clock.now())
            .await
            .context("while reconciling interrupted sends")?;
        if confirmed + unsure > 0 {
            tracing::warn!(
                confirmed_sent = confirmed,
                replayed_or_unknown = unsure,
                "reconciled sends whose instance stopped mid-send"
            );
        }
        Ok(())
    }

    /// Gives up what this instance holds when it stops: a send cut off by
    /// the deadline is left for reconciliation at once (by another
    /// instance, or this one's next start), and planning passes to another
    /// instance without waiting out the lease.
    pub async fn release_roles(&mut self) {
        match self.store.release_claims(&self.parts.instance).await {
            Ok(n) if n > 0 => {
                tracing::warn!(messages = n, "left sends in flight for reconciliation")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot release claim leases: {e}"),
        }
        if let Some(fence) = self.planner.take() {
            if let Err(e) = self.store.release_lease(&fence).await {
                tracing::warn!("cannot release the planner lease: {e}");
            }
        }
    }

    /// Takes or renews the planner lease; whether this instance plans.
    pub(super) async fn hold_planner(&mut self) -> bool {
        let ttl = self.config.daemon.planner_lease.get();
        let instance = self.parts.instance.clone();
        match self
            .store
            .acquire_lease(PLANNER_ROLE, &instance, self.clock.now(), ttl)
            .await
        {
            Ok(Some(fence)) => {
                if self.planner.as_ref().map(|f| f.token) != Some(fence.token) {
                    tracing::info!(instance = %instance, token = fence.token, "this instance holds the planner lease and plans");
                    // A new holder plans at once: the last one may have
                    // died before its tick.
                    self.next_tick = None;
                }
                self.planner = Some(fence);
                self.last_upkeep = Instant::now();
                true
            }
            Ok(None) => {
                if self.planner.take().is_some() {
                    tracing::warn!(instance = %instance, "the planner lease passed to another instance");
                }
                self.last_upkeep = Instant::now();
                false
            }
            // Busy (an import holds SQLite's write lock): nobody else can
            // take the lease either, and the fencing token still guards
            // every planning write, so a holder stays the holder.
            Err(e) if e.is_contention() => {
                tracing::warn!("store busy; the planner lease will be renewed when it frees: {e}");
                self.last_upkeep = Instant::now();
                self.planner.is_some()
            }
            Err(e) => {
                tracing::error!("cannot take or renew the planner lease: {e}");
                self.planner = None;
                self.last_upkeep = Instant::now();
                false
            }
        }
    }

    /// When the loop should wake next (wall clock).
    pub(super) async fn next_wake(&self, watchdog: Option<Duration>) -> Instant {
        let wall = Instant::now();
        let now = self.clock.now();
        let until = |t: DateTime<Utc>| wall + (t - now).to_std().unwrap_or(Duration::ZERO);
        // Poll for work other instances planned or left behind, and renew
        // (or try to take) the planner lease well before it runs out.
        let mut wake = wall + self.config.daemon.poll_interval.get();
        wake = wake.min(self.last_upkeep + self.config.daemon.planner_lease.get() / 3);
        for (_, n) in &self.watches {
            wake = wake.min(*n);
        }
        wake = wake.min(self.templates_checked);
        if let Some(w) = watchdog {
            wake = wake.min(wall + w);
        }
        if let Some(t) = self.next_tick {
            wake = wake.min(until(t));
        }
        if let Ok(Some(t)) = self.store.next_pending_at().await {
            wake = wake.min(until(t));
        }
        wake.max(wall + Duration::from_millis(20))
    }
}
