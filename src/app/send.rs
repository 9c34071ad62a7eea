//! The cycle's sending phase: claims in batches, sends concurrently up to
//! the dispatcher's width, records outcomes in groups.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{App, CycleReport};

/// How long the sending loop waits, after one send ends, for the others in
/// flight before recording them and claiming again.
const GATHER: std::time::Duration = std::time::Duration::from_millis(2);
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
        // Up to `width` sends in flight. The sends that ended meanwhile are
        // recorded and the free slots filled by claiming that many due
        // messages in one transaction (each durably `sending` before its
        // call). A stop claims nothing new and lets those in flight finish.
        // A failure (a send's or the upkeep's) stops new claims and is
        // returned once the rest have been recorded.
        let width = self.engine.dispatcher.width;
        // One copy per cycle, shared by its send tasks.
        let dispatcher = Arc::new(self.engine.dispatcher.clone());
        let mut inflight = tokio::task::JoinSet::new();
        let (mut idle, mut failure) = (false, None);
        // Sends that ended, recorded with the next claims.
        let mut ended = Vec::new();
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
            // Record what ended and claim the free slots, one transaction.
            let want = match !idle && failure.is_none() && !shutdown.is_cancelled() {
                true => width.saturating_sub(inflight.len()),
                false => 0,
            };
            if want > 0 || !ended.is_empty() {
                let now = self.clock.now();
                let recorded = std::mem::take(&mut ended);
                match dispatcher.record_and_claim(now, &recorded, want).await {
                    Ok(claims) => {
                        for d in &recorded {
                            match d.outcome {
                                Outcome::Idle => {}
                                Outcome::Sent { .. } => report.sent += 1,
                                Outcome::Decided(_) | Outcome::Retrying { .. } => {
                                    report.decided += 1
                                }
                                Outcome::Failed { .. } => report.failed += 1,
                            }
                        }
                        if want > 0 {
                            idle = claims.len() < want;
                        }
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
                        if !idle && want > 0 && inflight.len() < width {
                            continue;
                        }
                    }
                    Err(e) => {
                        failure.get_or_insert(anyhow::Error::from(e).context("while dispatching"));
                    }
                }
            }
            let Some(first) = inflight.join_next().await else {
                break;
            };
            let mut joined: Vec<_> = std::iter::once(first)
                .chain(std::iter::from_fn(|| inflight.try_join_next()))
                .collect();
            // Sends that end close together are recorded together: with
            // some still in flight, wait a moment for them, so one
            // transaction records and refills many slots instead of the
            // slots splitting into small batches that each pay a
            // transaction. A slow provider's sends rarely end within it.
            let deadline = tokio::time::Instant::now() + GATHER;
            while !inflight.is_empty() {
                match tokio::time::timeout_at(deadline, inflight.join_next()).await {
                    Ok(Some(j)) => joined.push(j),
                    _ => break,
                }
            }
            for joined in joined {
                match joined {
                    Ok(d) => ended.push(d),
                    Err(e) => {
                        failure.get_or_insert(anyhow::Error::from(e).context("while dispatching"));
                    }
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
