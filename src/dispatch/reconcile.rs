//! After a crash or a dead instance: messages left `sending` past their
//! claim lease, resolved by asking the provider, replayed where every
//! provider drops a repeat, or held `unknown` for a person.

use chrono::{DateTime, Utc};

use super::Dispatcher;
use crate::providers::Lookup;
use crate::store::{Finish, StoreError};

impl Dispatcher {
    /// Resolves messages left `sending` by a crash or a dead instance (their
    /// claim lease ran out): if a provider shows the attempt arrived, it is
    /// `sent`; if every provider of the channel shows it never arrived, or
    /// every one drops a repeated idempotency key, it goes back to
    /// `planned` (the normal claim re-checks caps and quiet hours);
    /// otherwise `unknown`, never resent blindly. Returns (confirmed sent,
    /// replayed or unknown).
    pub async fn reconcile(&self, now: DateTime<Utc>) -> Result<(u64, u64), StoreError> {
        let (mut sent, mut unknown) = (0, 0);
        for (id, attempt, channel) in self.store.in_flight(now).await? {
            let mut found = None;
            let providers = self.router.for_channel(channel);
            let replay = !providers.is_empty() && providers.iter().all(|p| p.replay_safe());
            let mut all_absent = !providers.is_empty();
            for p in providers {
                match p.lookup(id, &attempt).await {
                    Lookup::Found(r) => {
                        found = Some((p.name().to_owned(), r));
                        break;
                    }
                    Lookup::NotSent => {}
                    Lookup::Unanswered => all_absent = false,
                }
            }
            let finish = match found {
                Some((provider, r)) => {
                    sent += 1;
                    Finish::Sent {
                        provider,
                        provider_ref: r.provider_ref,
                        template_version: String::new(),
                        subject: None,
                        body: String::new(),
                    }
                }
                None if all_absent => {
                    unknown += 1;
                    Finish::Replay { reason: "interrupted before any provider of its channel received it (their records show no such send); planned again".into() }
                }
                None if replay => {
                    unknown += 1;
                    Finish::Replay { reason: "interrupted between claim and the provider's answer; replayed under the same idempotency key".into() }
                }
                None => {
                    unknown += 1;
                    Finish::Unknown { reason: "interrupted between claim and the provider's answer; the provider cannot confirm it".into() }
                }
            };
            self.store.finish(now, id, &attempt, &finish).await?;
        }
        Ok((sent, unknown))
    }
}
