//! The cycle's sending phase: claims in batches, sends concurrently up to
//! the dispatcher's width, records outcomes in groups. One transaction at a
//! time records the sends that ended and claims ahead, while the sends run.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::{App, CycleReport};
use crate::dispatch::{Claimed, Done, Outcome};
use crate::inflight::{first_ended, InFlight};
use crate::store::{ClaimView, StoreError, Verdict};

/// What one of the sending loop's transactions did: the sends it recorded,
/// how many it asked to claim, when, and what it claimed.
type TxOut = (
    Vec<Done>,
    usize,
    DateTime<Utc>,
    Result<Vec<(ClaimView, Verdict)>, StoreError>,
);

/// One of the sending loop's transactions in progress.
type Tx = InFlight<'static, TxOut>;

/// Messages claimed ahead, in claim order, waiting for a sender.
type Waiting = Arc<Mutex<VecDeque<(DateTime<Utc>, Claimed)>>>;

/// The next message waiting, if any (a poisoned lock is still a queue).
fn next_waiting(waiting: &Waiting) -> Option<(DateTime<Utc>, Claimed)> {
    waiting
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop_front()
}

/// How far the sending loop claims ahead of its sends: what the sends
/// complete in `AHEAD` at the pace measured while they run, and at least
/// `least` (the slots' worth per transaction). A message claimed ahead thus
/// waits about `AHEAD` (plus a transaction) before its send whatever the
/// provider's pace, and a fast provider's outcomes and claims go in batches
/// instead of one transaction per message.
struct Pace {
    least: usize,
    /// The window being measured: since when, and the sends ended in it.
    since: Instant,
    ended: usize,
    /// Sends ended per second, smoothed over the windows.
    per_sec: f64,
}

impl Pace {
    const AHEAD: f64 = 0.1;
    /// The longest an outcome waits for its batch before it is recorded.
    const WAIT: std::time::Duration = std::time::Duration::from_millis(50);
    const WINDOW: std::time::Duration = std::time::Duration::from_millis(50);
    /// A claim batch's most (its rows go in a few statements of 200).
    const MOST: usize = 1000;

    fn new(least: usize) -> Pace {
        Pace {
            least,
            since: Instant::now(),
            ended: 0,
            per_sec: 0.0,
        }
    }

    /// A send has ended.
    fn ended(&mut self) {
        self.ended += 1;
        let took = self.since.elapsed();
        if took >= Self::WINDOW {
            let now = self.ended as f64 / took.as_secs_f64();
            // A slowing provider is followed within a few windows.
            self.per_sec = match self.per_sec > 0.0 {
                true => (self.per_sec + now) / 2.0,
                false => now,
            };
            self.since = Instant::now();
            self.ended = 0;
        }
    }

    fn depth(&self) -> usize {
        let paced = (self.per_sec * Self::AHEAD) as usize;
        paced.min(Self::MOST).max(self.least)
    }

    /// What a transaction waits for while other work is in hand: the sends
    /// that end in a quarter of `AHEAD`, so a fast provider's outcomes and
    /// claims go a batch to a transaction, while a slow provider's are each
    /// recorded as they end (at least one; at most a quarter of `MOST`).
    fn batch(&self) -> usize {
        ((self.per_sec * Self::AHEAD / 4.0) as usize).clamp(1, Self::MOST / 4)
    }
}

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
        // Up to `width` sends in flight, and as many again per transaction
        // claimed ahead, waiting for a slot. Each transaction records the
        // sends that ended and claims up to that depth (each message
        // durably `sending` before its call), while the sends run. A stop
        // claims nothing new, lets those in flight finish and gives back
        // what waits unsent (planned again). A failure (a send's or the
        // upkeep's) does the same and is returned once the rest have been
        // recorded.
        let width = self.engine.dispatcher.width;
        // Transactions at once: one on SQLite (one writer); on PostgreSQL
        // several, kept apart by row locks as separate instances are.
        let lanes = self.store.write_lanes();
        // Claimed ahead: at least the slots' worth again for each
        // transaction, so the sends that end while one runs are followed at
        // once by the next, and claiming overlaps sending instead of
        // alternating with it; more when the sends are fast (`Pace`), so
        // each transaction records and claims a batch, not one message.
        let mut pace = Pace::new((lanes + 1) * width);
        // One copy per cycle, shared by its send tasks.
        let dispatcher = Arc::new(self.engine.dispatcher.clone());
        // Up to `width` senders, each sending the messages waiting, one at
        // a time in claim order, until none is left, and handing back each
        // outcome as it ends. They run on the runtime's threads while this
        // loop runs its transactions: SQLite's run on the thread that polls
        // them, and a slot freed meanwhile takes the next message at once
        // instead of waiting for the transaction to end.
        let mut senders = tokio::task::JoinSet::new();
        let waiting: Waiting = Arc::default();
        // Cancelled on a stop or a failure: a sender then starts no new send.
        let stop = shutdown.child_token();
        let (outcomes, mut ends) = tokio::sync::mpsc::unbounded_channel::<Done>();
        // The transactions recording what ended and claiming what is free,
        // running while the sends do, and how many they are claiming.
        // Polled by this loop, not spawned: on SQLite a spawned transaction
        // ran on the send tasks' threads and measured slower.
        let mut txs: Vec<Tx> = Vec::new();
        let mut asked = 0;
        let (mut idle, mut failure) = (false, None);
        // Sends that ended, recorded with the next claims, and since when
        // the oldest of them has waited.
        let mut ended = Vec::new();
        let mut oldest: Option<Instant> = None;
        loop {
            // Upkeep waits for the transactions in progress (they are
            // polled only by this loop) and holds back new ones meanwhile.
            let upkeep_due = failure.is_none()
                && !shutdown.is_cancelled()
                && self.last_upkeep.elapsed() >= upkeep_every;
            let upkeep_waits = upkeep_due && !txs.is_empty();
            if upkeep_due && txs.is_empty() {
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
            let stopping = failure.is_some() || shutdown.is_cancelled();
            if stopping {
                stop.cancel();
                while let Some((_, c)) = next_waiting(&waiting) {
                    ended.push(dispatcher.release(c));
                }
            }
            while let Ok(d) = ends.try_recv() {
                pace.ended();
                ended.push(d);
            }
            if !ended.is_empty() {
                oldest.get_or_insert_with(Instant::now);
            }
            // An outcome waits for a batch at most `Pace::WAIT`.
            let overdue = oldest.is_some_and(|t| t.elapsed() >= Pace::WAIT);
            let claiming = !idle && !stopping;
            let queued = waiting.lock().unwrap_or_else(|e| e.into_inner()).len();
            // Messages in hand: in a send (at most one a sender) or waiting.
            let in_hand = senders.len() + queued;
            // Free slots get a sender for the messages claimed ahead.
            for _ in senders.len()..width.min(senders.len() + queued) {
                let (d, waiting, outcomes, stop) = (
                    dispatcher.clone(),
                    waiting.clone(),
                    outcomes.clone(),
                    stop.clone(),
                );
                senders.spawn(async move {
                    while !stop.is_cancelled() {
                        let Some((now, claimed)) = next_waiting(&waiting) else {
                            break;
                        };
                        // The loop outlives its senders: a send cannot fail.
                        let _ = outcomes.send(d.send_held(now, claimed).await);
                    }
                });
            }
            // Record what ended and claim up to the depth.
            let depth = pace.depth();
            while txs.len() < lanes && !upkeep_waits {
                let want = match claiming {
                    true => depth.saturating_sub(in_hand + asked),
                    false => 0,
                };
                // A transaction waits for a batch worth its cost (`batch`:
                // the sends go on with what is claimed ahead), unless nothing
                // else is in hand, the loop is stopping or an outcome has
                // waited `Pace::WAIT`; another lane opens only for half a
                // lane's share of the depth.
                let least = match txs.is_empty() {
                    true if in_hand == 0 || stopping || overdue => 1,
                    true => pace.batch(),
                    false => (depth / (2 * (lanes + 1))).max(1),
                };
                if want.max(ended.len()) < least {
                    break;
                }
                let (d, now) = (dispatcher.clone(), self.clock.now());
                let recorded = std::mem::take(&mut ended);
                oldest = None;
                asked += want;
                txs.push(Box::pin(async move {
                    let claims = d.record_and_claim(now, &recorded, want).await;
                    (recorded, want, now, claims)
                }));
            }
            // Done only when every claim has been sent or given back and
            // every outcome recorded (or its transaction has failed).
            // (A sender hands back its last outcome before it ends.)
            if txs.is_empty() && senders.is_empty() && ended.is_empty() && queued == 0 {
                if let Ok(d) = ends.try_recv() {
                    pace.ended();
                    ended.push(d);
                    continue;
                }
                break;
            }
            // With no transaction running, the loop wakes when the oldest
            // outcome waiting for a batch has waited `Pace::WAIT`.
            let due = oldest.filter(|_| txs.is_empty()).map(|t| t + Pace::WAIT);
            tokio::select! {
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now).into()), if due.is_some() => {}
                (recorded, want, now, claims) = std::future::poll_fn(|cx| first_ended(&mut txs, cx)), if !txs.is_empty() => {
                    asked -= want;
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
                            if want > 0 && claims.len() < want {
                                idle = true;
                            }
                            for (view, verdict) in claims {
                                let Verdict::Send {
                                    attempt_id, loans, ..
                                } = verdict
                                else {
                                    report.decided += 1;
                                    continue;
                                };
                                let held = dispatcher.hold(view, attempt_id, loans);
                                waiting.lock().unwrap_or_else(|e| e.into_inner()).push_back((now, held));
                            }
                        }
                        Err(e) => {
                            failure.get_or_insert(anyhow::Error::from(e).context("while dispatching"));
                        }
                    }
                }
                Some(d) = ends.recv() => {
                    pace.ended();
                    ended.push(d);
                }
                Some(joined) = senders.join_next(), if !senders.is_empty() => {
                    if let Err(e) = joined {
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

#[cfg(test)]
mod tests {
    use super::Pace;

    #[test]
    fn the_depth_follows_the_pace_between_its_bounds() {
        let mut pace = Pace::new(3);
        // Nothing measured yet: the slots' worth.
        assert_eq!(pace.depth(), 3);
        // 5,000 sends a second: what they complete in 100 ms, and a
        // transaction waits for what they complete in 25 ms.
        pace.per_sec = 5_000.0;
        assert_eq!(pace.depth(), 500);
        assert_eq!(pace.batch(), 125);
        // Slow sends never claim fewer than the slots' worth, and each is
        // recorded as it ends ...
        pace.per_sec = 4.0;
        assert_eq!(pace.depth(), 3);
        assert_eq!(pace.batch(), 1);
        // ... and fast ones never more than a batch's most.
        pace.per_sec = 1e9;
        assert_eq!(pace.depth(), Pace::MOST);
        assert_eq!(pace.batch(), Pace::MOST / 4);
        // More slots than the most: the slots' worth still.
        assert_eq!(
            Pace {
                per_sec: 1e9,
                ..Pace::new(1_500)
            }
            .depth(),
            1_500
        );
    }

    #[test]
    fn a_slowing_provider_is_followed_within_a_few_windows() {
        let mut pace = Pace::new(1);
        pace.per_sec = 10_000.0;
        // Windows of one send each, each ending after WINDOW: a pace of at
        // most 20 a second.
        for _ in 0..10 {
            pace.since -= Pace::WINDOW;
            pace.ended();
        }
        assert!(pace.depth() < 5, "depth {}", pace.depth());
    }
}
