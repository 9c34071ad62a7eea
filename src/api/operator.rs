//! Operator routes: message listings, pause and resume, the status summary.

use std::sync::atomic::Ordering;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::book::{json_body, masked};
use super::{ApiError, ApiState};
use crate::domain::parse_instant;
use crate::store::{MessageQuery, MessageState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MessagesQuery {
    state: Option<String>,
    borrower: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<u32>,
}

pub(super) async fn messages(
    State(s): State<ApiState>,
    q: Result<Query<MessagesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad("query", e.body_text()))?;
    let state = q
        .state
        .as_deref()
        .map(|st| {
            MessageState::parse(st)
                .ok_or_else(|| ApiError::bad("state", format!("`{st}` is not a message state")))
        })
        .transpose()?;
    let since = q
        .since
        .as_deref()
        .map(parse_instant)
        .transpose()
        .map_err(|e| ApiError::bad("since", e.0))?;
    let until = q
        .until
        .as_deref()
        .map(parse_instant)
        .transpose()
        .map_err(|e| ApiError::bad("until", e.0))?;
    let list = s
        .store
        .messages(&MessageQuery {
            state,
            borrower: q.borrower,
            limit: q.limit.or(Some(1000)),
        })
        .await?;
    let list: Vec<serde_json::Value> = list
        .iter()
        .filter(|m| {
            since.is_none_or(|t| m.updated_at >= t) && until.is_none_or(|t| m.updated_at < t)
        })
        .map(masked)
        .collect();
    Ok(Json(serde_json::json!({ "messages": list })).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PauseBody {
    #[serde(default)]
    provider: Option<String>,
}

/// The provider a pause or resume names (`None`: all sending), refused
/// when no provider of that name is configured.
fn named_provider(s: &ApiState, body: &[u8]) -> Result<Option<String>, ApiError> {
    let b: PauseBody = if body.is_empty() {
        PauseBody::default()
    } else {
        json_body(body)?
    };
    match b.provider {
        Some(p) if !s.providers.contains_key(&p) => Err(ApiError::not_found(format!(
            "no provider `{p}`; configured: {}",
            s.providers.keys().cloned().collect::<Vec<_>>().join(", ")
        ))),
        p => Ok(p),
    }
}

pub(super) async fn pause(
    State(s): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    match named_provider(&s, &body)? {
        Some(p) => {
            s.pauses
                .providers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(p.clone());
            tracing::warn!(provider = %p, "sending paused for provider");
        }
        None => {
            s.pauses.all.store(true, Ordering::SeqCst);
            tracing::warn!("sending paused");
        }
    }
    Ok(Json(serde_json::json!({"result": "paused"})).into_response())
}

pub(super) async fn resume(
    State(s): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    match named_provider(&s, &body)? {
        Some(p) => {
            s.pauses
                .providers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&p);
        }
        None => s.pauses.all.store(false, Ordering::SeqCst),
    }
    tracing::info!("sending resumed");
    s.replan.notify_one();
    Ok(Json(serde_json::json!({"result": "resumed"})).into_response())
}

/// The daemon's summary, for `duebell status` and systemd's STATUS=.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub summary: String,
    pub counts: std::collections::BTreeMap<String, u64>,
    pub sent_today: u64,
    pub paused: bool,
}

pub async fn summary(s: &ApiState) -> Result<Status, crate::store::StoreError> {
    let counts: std::collections::BTreeMap<String, u64> = s
        .store
        .message_counts()
        .await?
        .into_iter()
        .map(|(k, v)| (k.as_str().to_owned(), v))
        .collect();
    let now = s.clock.now();
    let today = now.with_timezone(&s.default_tz).date_naive();
    let start = crate::compliance::caps::local_midnight(s.default_tz, today);
    let sent_today = s.store.sent_since(start).await?;
    let paused = s.pauses.all.load(Ordering::SeqCst);
    let due = counts.get("planned").copied().unwrap_or(0);
    let deferred = counts.get("deferred").copied().unwrap_or(0);
    let failing = s.metrics.failing_providers();
    let rejected = s.metrics.counter_total("duebell_reload_rejected_total");
    let summary = format!(
        "due {due}, deferred {deferred}, sent today {sent_today}{}{}{}",
        if failing.is_empty() {
            String::new()
        } else {
            format!(", failing providers: {}", failing.join(" "))
        },
        if rejected > 0.0 {
            format!(", {rejected} reload(s) rejected (running on the last good set; see the log)")
        } else {
            String::new()
        },
        if paused { ", PAUSED" } else { "" }
    );
    Ok(Status {
        summary,
        counts,
        sent_today,
        paused,
    })
}

pub(super) async fn status(State(s): State<ApiState>) -> Result<Response, ApiError> {
    Ok(Json(summary(&s).await?).into_response())
}
