//! The dispatcher in batches: claim many due messages in one transaction,
//! send them concurrently, record their outcomes in one transaction per
//! group (a group commit). Each message is durably `sending` before its
//! provider call, exactly as when claimed alone.

use chrono::{DateTime, Duration, Utc};

use super::reconcile::InHand;
use super::{decide, Dispatcher, Outcome, RECORD_PATIENCE};
use crate::compliance::caps;
use crate::reason::Reason;
use crate::store::{ClaimRequest, ClaimView, Finish, FinishItem, StoreError, Verdict};

/// A claimed message whose send has ended, waiting to be recorded with its
/// group. While it exists the message counts as this process's own send in
/// flight, so reconciliation leaves it alone.
pub struct Done {
    pub item: FinishItem,
    pub outcome: Outcome,
    _in_hand: InHand,
}

/// A message claimed with a `Send` verdict and held in this process's hand
/// (`Dispatcher::hold`), waiting for its send.
pub struct Claimed {
    view: ClaimView,
    attempt_id: String,
    loans: Vec<i64>,
    in_hand: InHand,
}

impl Dispatcher {
    /// Claims up to `limit` due messages in one store transaction; each
    /// comes with its verdict (eligibility, then the gate), already applied.
    pub async fn claim(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(ClaimView, Verdict)>, StoreError> {
        self.record_and_claim(now, &[], limit).await
    }

    /// Records how a group of sends ended and claims up to `limit` due
    /// messages, in one store transaction (the group's outcomes and the
    /// next batch in one commit). Recording waits out a busy store: the
    /// providers have answered, and giving up would leave delivered
    /// messages `sending`, to be reconciled later as `unknown`; contention
    /// (a long import holding SQLite's write lock) is retried for up to two
    /// minutes. If claiming fails otherwise, the outcomes are still
    /// recorded on their own before the error is returned.
    pub async fn record_and_claim(
        &self,
        now: DateTime<Utc>,
        done: &[Done],
        limit: usize,
    ) -> Result<Vec<(ClaimView, Verdict)>, StoreError> {
        let limit = match self.pauses.is_paused(None) {
            true => 0,
            false => limit,
        };
        if done.is_empty() && limit == 0 {
            return Ok(Vec::new());
        }
        let since = now - caps::lookback(self.gate.all_caps());
        let gate = self.gate.clone();
        let tz = self.default_tz;
        let decide = move |v: &ClaimView| decide(v, now, &gate, tz);
        let lease = crate::store::ClaimLease {
            holder: self.instance.to_string(),
            until: now + Duration::from_std(self.claim_lease).unwrap_or(Duration::MAX),
        };
        let items: Vec<FinishItem> = done.iter().map(|d| d.item.clone()).collect();
        let started = std::time::Instant::now();
        let mut wait = std::time::Duration::from_millis(100);
        let claimed = loop {
            let claim = (limit > 0).then_some(ClaimRequest {
                since,
                lease: &lease,
                limit,
                decide: &decide,
            });
            match self.store.finish_and_claim(now, &items, claim).await {
                Ok((_, claimed)) => break claimed,
                Err(e)
                    if !items.is_empty()
                        && e.is_contention()
                        && started.elapsed() < RECORD_PATIENCE =>
                {
                    tracing::warn!(messages = items.len(), error = %e, "store busy; recording the outcomes again shortly");
                    self.metrics
                        .inc("duebell_store_busy_retries_total", &[], 1.0);
                    // The claims stay ours meanwhile: the daemon's claim
                    // renewal task keeps their lease, and this process does
                    // not reconcile what it holds in hand.
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(2));
                }
                Err(e) if !items.is_empty() && limit > 0 => {
                    // The claim failed: the outcomes go in on their own.
                    Box::pin(self.record_and_claim(now, done, 0)).await?;
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        };
        for (view, verdict) in &claimed {
            if !matches!(verdict, Verdict::Send { .. }) {
                tracing::debug!(
                    message = view.message_id,
                    ?verdict,
                    "claim decided without sending"
                );
            }
        }
        Ok(claimed)
    }

    /// Takes a message claimed with a `Send` verdict into this process's
    /// hand: from now until its outcome is recorded, reconciliation leaves
    /// it alone even if its lease runs out (it may wait behind the sends in
    /// flight before its own starts).
    pub fn hold(&self, view: ClaimView, attempt_id: String, loans: Vec<i64>) -> Claimed {
        Claimed {
            in_hand: InHand::new(&self.in_hand, view.message_id),
            view,
            attempt_id,
            loans,
        }
    }

    /// Renders and sends one message claimed with a `Send` verdict; the
    /// outcome is for `record_all`.
    pub async fn send_claimed(
        &self,
        now: DateTime<Utc>,
        view: ClaimView,
        attempt_id: String,
        loans: Vec<i64>,
    ) -> Done {
        self.send_held(now, self.hold(view, attempt_id, loans))
            .await
    }

    /// Gives a held message back unsent (the sending loop stopped before
    /// its turn): recorded like a send that ended, as planned again.
    pub fn release(&self, claimed: Claimed) -> Done {
        let id = claimed.view.message_id;
        Done {
            item: FinishItem {
                message_id: id,
                attempt_id: claimed.attempt_id,
                finish: Finish::Release {
                    reason: Reason::parse(
                        "claimed ahead; the sending loop stopped before its send began; planned again",
                    ),
                },
            },
            outcome: Outcome::Released { message_id: id },
            _in_hand: claimed.in_hand,
        }
    }

    /// Renders and sends a held message (`hold`); the outcome is for
    /// `record_all`.
    pub async fn send_held(&self, now: DateTime<Utc>, claimed: Claimed) -> Done {
        let Claimed {
            view,
            attempt_id,
            loans,
            in_hand,
        } = claimed;
        let id = view.message_id;
        let (finish, outcome) = match self.send(now, &view, &attempt_id, &loans).await {
            Ok(done) => done,
            Err(reason) => {
                let reason = Reason::parse(reason);
                (
                    Finish::NotRendered {
                        reason: reason.clone(),
                    },
                    Outcome::Failed {
                        message_id: id,
                        reason,
                    },
                )
            }
        };
        Done {
            item: FinishItem {
                message_id: id,
                attempt_id,
                finish,
            },
            outcome,
            _in_hand: in_hand,
        }
    }

    /// Records how a group of sends ended, in one transaction, waiting out
    /// a busy store (`record_and_claim` claiming nothing).
    pub async fn record_all(&self, now: DateTime<Utc>, done: &[Done]) -> Result<(), StoreError> {
        self.record_and_claim(now, done, 0).await.map(|_| ())
    }

    /// Sends everything due at `now`, one after another, claiming up to
    /// `DRAIN_BATCH` at a time and recording each batch's outcomes with the
    /// next batch's claims (`simulate`, tests); the outcomes in claim order.
    pub async fn drain(&self, now: DateTime<Utc>) -> Result<Vec<Outcome>, StoreError> {
        const DRAIN_BATCH: usize = 64;
        let mut outcomes = Vec::new();
        let mut done: Vec<Done> = Vec::new();
        // Each claimed message in order: its send (an index into `done`)
        // or the verdict that decided it without one.
        let mut order: Vec<Result<usize, Outcome>> = Vec::new();
        loop {
            let batch = self.record_and_claim(now, &done, DRAIN_BATCH).await?;
            let mut sent: Vec<Option<Outcome>> =
                done.drain(..).map(|d| Some(d.outcome.clone())).collect();
            outcomes.extend(order.drain(..).filter_map(|o| match o {
                Ok(i) => sent[i].take(),
                Err(decided) => Some(decided),
            }));
            if batch.is_empty() {
                return Ok(outcomes);
            }
            for (view, verdict) in batch {
                match verdict {
                    Verdict::Send {
                        attempt_id, loans, ..
                    } => {
                        order.push(Ok(done.len()));
                        done.push(self.send_claimed(now, view, attempt_id, loans).await);
                    }
                    decided => order.push(Err(Outcome::Decided(decided))),
                }
            }
        }
    }
}
