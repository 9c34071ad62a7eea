//! The cycle's sending phase: claims in batches, sends concurrently up to
//! the dispatcher's width, records outcomes in groups. One transaction at a
//! time records the sends that ended and claims ahead, while the sends run.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::{App, CycleReport};
use crate::dispatch::{Claimed, Done, Outcome};
use crate::store::{ClaimView, StoreError, Verdict};

/// The sending loop's transaction in progress: the sends it records, how
/// many it asked to claim, when, and what it claimed.
type Tx = Pin<
    Box<
        dyn Future<
                Output = (
                    Vec<Done>,
                    usize,
                    DateTime<Utc>,
                    Result<Vec<(ClaimView, Verdict)>, StoreError>,
                ),
            > + Send,
    >,
>;

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
        // Claimed ahead: the slots' worth again, so the sends that end while
        // a transaction runs are followed at once by the next, and claiming
        // overlaps sending instead of alternating with it.
        let depth = 2 * width;
        // One copy per cycle, shared by its send tasks.
        let dispatcher = Arc::new(self.engine.dispatcher.clone());
        let mut inflight = tokio::task::JoinSet::new();
        let mut queue: VecDeque<(DateTime<Utc>, Claimed)> = VecDeque::new();
        // The transaction recording what ended and claiming what is free,
        // one at a time, running while the sends do.
        let mut tx: Option<Tx> = None;
        let (mut idle, mut failure) = (false, None);
        // Sends that ended, recorded with the next claims.
        let mut ended = Vec::new();
        loop {
            let claiming = |idle: bool, failure: &Option<anyhow::Error>| {
                !idle && failure.is_none() && !shutdown.is_cancelled()
            };
            if tx.is_none()
                && failure.is_none()
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
            // A stop or a failure sends nothing more: what was claimed ahead
            // goes back, recorded with the sends that end.
            if failure.is_some() || shutdown.is_cancelled() {
                ended.extend(queue.drain(..).map(|(_, c)| dispatcher.release(c)));
            }
            // Free slots take the messages claimed ahead, in claim order.
            while inflight.len() < width {
                let Some((now, claimed)) = queue.pop_front() else {
                    break;
                };
                let d = dispatcher.clone();
                inflight.spawn(async move { d.send_held(now, claimed).await });
            }
            // Record what ended and claim up to the depth, one transaction.
            if tx.is_none() {
                let want = match claiming(idle, &failure) {
                    true => depth.saturating_sub(inflight.len() + queue.len()),
                    false => 0,
                };
                if want > 0 || !ended.is_empty() {
                    let (d, now) = (dispatcher.clone(), self.clock.now());
                    let recorded = std::mem::take(&mut ended);
                    tx = Some(Box::pin(async move {
                        let claims = d.record_and_claim(now, &recorded, want).await;
                        (recorded, want, now, claims)
                    }));
                }
            }
            if tx.is_none() && inflight.is_empty() {
                break;
            }
            tokio::select! {
                (recorded, want, now, claims) = async { tx.as_mut().expect("guarded").await }, if tx.is_some() => {
                    tx = None;
                    match claims {
                        Ok(claims) => {
                            for d in &recorded {
                                match d.outcome {
                                    Outcome::Idle | Outcome::Released { .. } => {}
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
                                queue.push_back((now, dispatcher.hold(view, attempt_id, loans)));
                            }
                        }
                        Err(e) => {
                            failure.get_or_insert(anyhow::Error::from(e).context("while dispatching"));
                        }
                    }
                }
                Some(joined) = inflight.join_next(), if !inflight.is_empty() => match joined {
                    Ok(d) => ended.push(d),
                    Err(e) => {
                        failure.get_or_insert(anyhow::Error::from(e).context("while dispatching"));
                    }
                },
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
