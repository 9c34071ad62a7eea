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

impl HandoffConfig {
    /// Problems as (key under `section`, message).
    pub fn validate(&self, section: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.url.is_empty() {
            return out;
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            out.push((
                format!("{section}.url"),
                format!("`{}` is not an http(s) URL", self.url),
            ));
        }
        if self.secret.len() < 16 {
            out.push((
                format!("{section}.secret"),
                "must be at least 16 characters: receivers verify the signature with it".to_owned(),
            ));
        }
        out
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
        let error = post_signed(
            client,
            &cfg.url,
            cfg.secret.expose(),
            cfg.timeout.get(),
            &format!("handoff-{id}"),
            now,
            body,
        )
        .await;
        match error {
            None => {
                ok += 1;
                store.finish_handoff(now, id, Ok(())).await?;
            }
            Some(e) => {
                failed += 1;
                let next = retry_at(now, attempts, cfg.max_attempts);
                tracing::warn!(handoff = id, error = %e, retry = next.is_some(), "hand-off not accepted");
                store.finish_handoff(now, id, Err((e, next))).await?;
            }
        }
    }
    Ok((ok, failed))
}

/// When to try a failed post again (30 s doubling, at most ~2 h), or `None`
/// once `max_attempts` are used.
pub fn retry_at(now: DateTime<Utc>, attempts: i64, max_attempts: u32) -> Option<DateTime<Utc>> {
    (attempts + 1 < i64::from(max_attempts))
        .then(|| now + Duration::seconds(30 * (1i64 << attempts.clamp(0, 8))))
}

/// POSTs a JSON event signed with `X-Duebell-Signature: t=…,v1=…` and an
/// `Idempotency-Key`; `None` when the receiver accepted it (2xx), else why not.
pub async fn post_signed(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    timeout: std::time::Duration,
    idempotency_key: &str,
    now: DateTime<Utc>,
    body: Vec<u8>,
) -> Option<String> {
    let result = client
        .post(url)
        .timeout(timeout)
        .header("content-type", "application/json")
        .header(
            "x-duebell-signature",
            crate::signing::webhook_signature(secret, now.timestamp(), &body),
        )
        .header("idempotency-key", idempotency_key)
        .body(body)
        .send()
        .await;
    match result {
        Ok(r) if r.status().is_success() => None,
        Ok(r) => Some(format!("HTTP {}", r.status().as_u16())),
        Err(e) => Some(format!("{e}")),
    }
}
