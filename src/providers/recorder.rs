//! A provider that records what it is given: `simulate` replaces every real
//! provider with one, so a simulation exercises the real dispatcher.

use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Lookup, Outbound, Provider, ProviderError, Receipt};
use crate::clock::Clock;

pub struct Recorder {
    clock: std::sync::Arc<dyn Clock>,
    sent: Mutex<Vec<(DateTime<Utc>, Outbound)>>,
}

impl Recorder {
    pub fn new(clock: std::sync::Arc<dyn Clock>) -> Self {
        Recorder {
            clock,
            sent: Mutex::new(Vec::new()),
        }
    }

    /// Everything recorded so far, with the (virtual) time it was sent.
    pub fn take(&self) -> Vec<(DateTime<Utc>, Outbound)> {
        std::mem::take(&mut *self.sent.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[async_trait]
impl Provider for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    async fn send(&self, m: &Outbound) -> Result<Receipt, ProviderError> {
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((self.clock.now(), m.clone()));
        Ok(Receipt {
            provider_ref: format!("rec-{}-{}", m.message_id, m.attempt_id),
        })
    }

    fn can_look_up(&self) -> bool {
        true
    }

    async fn lookup(&self, q: &super::LookupQuery) -> Lookup {
        let (message_id, attempt_id) = (q.message_id, q.attempt_id.as_str());
        let sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        if sent
            .iter()
            .any(|(_, m)| m.message_id == message_id && m.attempt_id == attempt_id)
        {
            Lookup::Found(Receipt {
                provider_ref: format!("rec-{message_id}-{attempt_id}"),
            })
        } else {
            Lookup::Unanswered
        }
    }
}
