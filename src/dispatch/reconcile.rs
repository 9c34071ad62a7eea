//! Messages left `sending`: by a crash or a dead instance (their claim lease
//! ran out), or by a send whose answer never came after the request went
//! out. Each is resolved by asking the provider that handled it (or, when
//! none is recorded, every provider of its channel): found → `sent`;
//! provably not there → planned again through the normal claim; no answer
//! yet → asked again with backoff within `LOOKUP_WINDOW`, then `unknown`
//! for a person, saying what was tried. Never resent blindly.

use chrono::{DateTime, Duration, Utc};

use super::Dispatcher;
use crate::providers::{Lookup, LookupQuery};
use crate::store::{Finish, InFlight, StoreError};

/// How long after an attempt its provider is asked before a person decides.
pub const LOOKUP_WINDOW: i64 = 30 * 60;

/// When to ask again: half the attempt's age, between 30 s and 10 minutes.
fn next_look(now: DateTime<Utc>, age: Duration) -> DateTime<Utc> {
    now + (age / 2).clamp(Duration::seconds(30), Duration::minutes(10))
}

impl Dispatcher {
    /// Resolves every message left `sending` whose lease ran out. Returns
    /// (confirmed sent, replayed, postponed or unknown).
    pub async fn reconcile(&self, now: DateTime<Utc>) -> Result<(u64, u64), StoreError> {
        self.reconcile_where(now, |_| true).await
    }

    /// As `reconcile`, but leaves this process's own sends in flight alone
    /// (`in_hand`): a store too busy to renew their leases may have let them
    /// run out, and each task records its own outcome.
    pub async fn reconcile_others(&self, now: DateTime<Utc>) -> Result<(u64, u64), StoreError> {
        let in_hand = self.in_hand.clone();
        self.reconcile_where(now, move |m| {
            !in_hand
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&m.id)
        })
        .await
    }

    async fn reconcile_where(
        &self,
        now: DateTime<Utc>,
        take: impl Fn(&InFlight) -> bool,
    ) -> Result<(u64, u64), StoreError> {
        let (mut sent, mut other) = (0, 0);
        for m in self.store.in_flight(now).await?.iter().filter(|m| take(m)) {
            match self.resolve(now, m).await? {
                true => sent += 1,
                false => other += 1,
            }
        }
        Ok((sent, other))
    }

    /// One in-flight message; true when it was confirmed sent.
    async fn resolve(&self, now: DateTime<Utc>, m: &InFlight) -> Result<bool, StoreError> {
        let all = self.router.for_channel(m.channel);
        // The provider that handled it, if recorded; else every provider
        // the attempt may have reached.
        let providers: Vec<_> = match &m.provider {
            Some(name) => all.iter().filter(|p| p.name() == name).cloned().collect(),
            None => all.to_vec(),
        };
        let replay = !providers.is_empty() && providers.iter().all(|p| p.replay_safe());
        let q = LookupQuery {
            message_id: m.id,
            attempt_id: m.attempt.clone(),
            to: m.address.clone().unwrap_or_default(),
            since: m.since,
            now,
        };
        let mut found = None;
        let mut all_absent = !providers.is_empty();
        for p in &providers {
            let answer = p.lookup(&q).await;
            let outcome = match &answer {
                Lookup::Found(_) => "found",
                Lookup::NotSent => "not_sent",
                Lookup::Unanswered => "unanswered",
            };
            self.metrics.inc(
                "duebell_lookups_total",
                &[("provider", p.name()), ("outcome", outcome)],
                1.0,
            );
            match answer {
                Lookup::Found(r) => {
                    found = Some((p.name().to_owned(), r));
                    break;
                }
                Lookup::NotSent => {}
                Lookup::Unanswered => all_absent = false,
            }
        }
        let names = providers
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(", ");
        let finish = match found {
            Some((provider, r)) => {
                tracing::info!(message_id = m.id, provider = %provider, "in-flight send found at the provider");
                Finish::Sent {
                    provider,
                    provider_ref: r.provider_ref,
                    template_version: String::new(),
                    subject: None,
                    body: String::new(),
                }
            }
            None if all_absent => Finish::Replay {
                reason: format!("interrupted before {names} received it (their records show no such send); planned again").into(),
            },
            None if replay => Finish::Replay {
                reason: "interrupted between claim and the provider's answer; replayed under the same idempotency key".into(),
            },
            None if q.age() < Duration::seconds(LOOKUP_WINDOW)
                && providers.iter().any(|p| p.can_look_up()) =>
            {
                let at = next_look(now, q.age());
                tracing::info!(message_id = m.id, providers = %names, next = %at, "provider cannot account for the send yet; asking again");
                self.store.postpone_reconcile(m.id, &m.attempt, at).await?;
                return Ok(false);
            }
            None if providers.is_empty() => Finish::Unknown {
                reason: "interrupted between claim and the provider's answer; no configured provider can be asked".into(),
            },
            None => Finish::Unknown {
                reason: format!(
                    "interrupted between claim and the provider's answer; {names} could not account for it when asked over {} minutes from {}",
                    q.age().num_minutes(),
                    m.since.format("%Y-%m-%dT%H:%M:%SZ")
                )
                .into(),
            },
        };
        let sent = matches!(finish, Finish::Sent { .. });
        self.store.finish(now, m.id, &m.attempt, &finish).await?;
        Ok(sent)
    }
}

/// Holds a message in `Dispatcher::in_hand` until dropped (recorded, or the
/// task cut off).
/// What `Dispatcher::in_hand` holds.
pub type InHandSet = std::sync::Arc<std::sync::Mutex<std::collections::HashSet<i64>>>;

pub(super) struct InHand(InHandSet, i64);

impl InHand {
    pub(super) fn new(set: &InHandSet, id: i64) -> InHand {
        set.lock().unwrap_or_else(|e| e.into_inner()).insert(id);
        InHand(set.clone(), id)
    }
}

impl Drop for InHand {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}
