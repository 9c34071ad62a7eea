//! Hand-off to manual collection: when a loan reaches a policy step with
//! `handoff = true`, the planner records a hand-off; this worker POSTs it to
//! the lender's webhook as JSON signed with HMAC-SHA256, retrying with
//! backoff until it is accepted (2xx) or the attempts run out. Every attempt
//! is recorded in the store.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{ConfigDuration, Secret};
use crate::store::{Store, StoreError};

/// `[handoff]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HandoffConfig {
    /// Where hand-off events are POSTed; empty disables posting (hand-offs
    /// stay recorded as pending).
    pub url: String,
    /// HMAC-SHA256 key (use `secret_file` for a systemd credential).
    pub secret: Secret,
    pub timeout: ConfigDuration,
    pub max_attempts: u32,
}

impl Default for HandoffConfig {
    fn default() -> Self {
        HandoffConfig {
            url: String::new(),
            secret: Secret::default(),
            timeout: ConfigDuration(std::time::Duration::from_secs(10)),
            max_attempts: 10,
        }
    }
}

/// The JSON body of a hand-off event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HandoffEvent {
    pub event: String,
    pub handoff_id: i64,
    pub loan_id: String,
    pub borrower_id: String,
    pub due_date: NaiveDate,
    pub step: String,
    pub at: DateTime<Utc>,
}

/// Posts every due hand-off once. Returns (delivered, failed attempts).
pub async fn post_due(
    store: &dyn Store,
    cfg: &HandoffConfig,
    client: &reqwest::Client,
    now: DateTime<Utc>,
) -> Result<(u64, u64), StoreError> {
    if cfg.url.is_empty() {
        return Ok((0, 0));
    }
    let (mut ok, mut failed) = (0, 0);
    for (id, loan_id, borrower_id, due_date, step, attempts) in store.due_handoffs(now).await? {
        let event = HandoffEvent {
            event: "handoff".into(),
            handoff_id: id,
            loan_id,
            borrower_id,
            due_date,
            step,
            at: now,
        };
        let body = serde_json::to_vec(&event).unwrap_or_default();
        let result = client
            .post(&cfg.url)
            .timeout(cfg.timeout.get())
            .header("content-type", "application/json")
            .header(
                "x-duebell-signature",
                crate::signing::webhook_signature(cfg.secret.expose(), now.timestamp(), &body),
            )
            .header("idempotency-key", format!("handoff-{id}"))
            .body(body)
            .send()
            .await;
        let error = match result {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("HTTP {}", r.status().as_u16())),
            Err(e) => Some(format!("{e}")),
        };
        match error {
            None => {
                ok += 1;
                store.finish_handoff(now, id, Ok(())).await?;
            }
            Some(e) => {
                failed += 1;
                let next = (attempts + 1 < i64::from(cfg.max_attempts))
                    .then(|| now + Duration::seconds(30 * (1i64 << attempts.clamp(0, 8))));
                tracing::warn!(handoff = id, error = %e, retry = next.is_some(), "hand-off not accepted");
                store.finish_handoff(now, id, Err((e, next))).await?;
            }
        }
    }
    Ok((ok, failed))
}
