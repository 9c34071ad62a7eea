//! The cycle's sending phase: claims in batches, sends concurrently up to
//! the dispatcher's width, records outcomes in groups.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{App, CycleReport};
use crate::dispatch::Outcome;
use crate::store::Verdict;

impl App {
    /// Sends what is due until nothing is (or a stop is asked for), keeping
    /// the planner lease and reconciliation going meanwhile.
    pub(super) async fn send_due(
        &mut self,
        shutdown: &CancellationToken,
        report: &mut CycleReport,
    ) -> anyhow::Result<()> {
        // Renewing (or taking over) the planner lease and reconciling a dead
        // instance's sends must not wait for the dispatcher to go idle.
        let upkeep_every = self.config.daemon.planner_lease.get() / 3;
        // Up to `width` sends in flight. Free slots are filled by claiming
        // that many due messages in one transaction (each durably `sending`
        // before its call); finished sends are recorded in groups, one
        // transaction for all that ended meanwhile. A stop claims nothing
        // new and lets those in flight finish. A failure (a send's or the
        // upkeep's) stops new claims and is returned once the rest have
        // been recorded.
        let width = self.engine.dispatcher.width;
        // One copy per cycle, shared by its send tasks.
        let dispatcher = Arc::new(self.engine.dispatcher.clone());
        let mut inflight = tokio::task::JoinSet::new();
        let (mut idle, mut failure) = (false, None);
        loop {
            if failure.is_none()
                && !shutdown.is_cancelled()
                && self.last_upkeep.elapsed() >= upkeep_every
            {
                // An error here must not drop the sends in flight.
                let upkeep: anyhow::Result<()> = async {
                    self.hold_planner().await;
                    self.plan_if_due(false, report).await?;
                    self.reconcile().await
                }
                .await;
                if let Err(e) = upkeep {
                    failure = Some(e);
                }
            }
            if !idle && failure.is_none() && !shutdown.is_cancelled() && inflight.len() < width {
                let (want, now) = (width - inflight.len(), self.clock.now());
                match dispatcher.claim(now, want).await {
                    Ok(claims) => {
                        idle = claims.len() < want;
                        for (view, verdict) in claims {
                            let Verdict::Send {
                                attempt_id, loans, ..
                            } = verdict
                            else {
                                report.decided += 1;
                                continue;
                            };
                            let d = dispatcher.clone();
                            inflight.spawn(async move {
                                d.send_claimed(now, view, attempt_id, loans).await
                            });
                        }
                        // Claim again while slots are free (a batch of
                        // deferrals sends nothing).
                        continue;
                    }
                    Err(e) => {
                        failure.get_or_insert(anyhow::Error::from(e).context("while dispatching"));
                    }
                }
            }
            let Some(first) = inflight.join_next().await else {
                break;
            };
            let mut group = vec![first];
            while let Some(more) = inflight.try_join_next() {
                group.push(more);
            }
            let mut done = Vec::with_capacity(group.len());
            for joined in group {
                match joined {
                    Ok(d) => done.push(d),
                    Err(e) => {
                        failure.get_or_insert(anyhow::Error::from(e).context("while dispatching"));
                    }
                }
            }
            if let Err(e) = dispatcher.record_all(self.clock.now(), &done).await {
                failure.get_or_insert(anyhow::Error::from(e).context("while dispatching"));
                continue;
            }
            for d in &done {
                match d.outcome {
                    Outcome::Idle => {}
                    Outcome::Sent { .. } => report.sent += 1,
                    Outcome::Decided(_) | Outcome::Retrying { .. } => report.decided += 1,
                    Outcome::Failed { .. } => report.failed += 1,
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
