//! The console's borrower, operations and compliance routes: search a
//! borrower by id, phone or email; release or cancel `unknown` messages;
//! download the audit export; read the change log.

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use serde::Deserialize;

use super::ConsoleState;
use crate::api::access::{Need, Principal};
use crate::api::routes::Route;
use crate::api::ApiError;
use crate::domain::Channel;

pub(super) fn routes() -> Vec<Route<ConsoleState>> {
    vec![
        (
            "get",
            "/v1/borrowers",
            "Find borrowers by id, phone or email (`?q=`); addresses masked",
            Need::Compliance,
            get(search),
        ),
        (
            "get",
            "/v1/operations",
            "Per provider: kind, paused, circuit, results, mean latency and rate-limit wait; messages by state and reason; today's state changes by reason",
            Need::Read,
            get(operations),
        ),
        (
            "post",
            "/v1/messages/{message_id}/release",
            "Send an `unknown` or `failed` message again (the provider did not get it)",
            Need::Admin,
            post(release),
        ),
        (
            "post",
            "/v1/messages/{message_id}/cancel",
            "Close an `unknown` or `failed` message without sending",
            Need::Admin,
            post(cancel),
        ),
        (
            "get",
            "/v1/audit",
            "The audit export (`?from=YYYY-MM-DD&to=YYYY-MM-DD&format=csv|jsonl`) as a download",
            Need::Compliance,
            get(audit),
        ),
        (
            "get",
            "/v1/changes",
            "Every change made through the console or /v1 (`?from=&to=` dates, UTC)",
            Need::Compliance,
            get(changes),
        ),
    ]
}

async fn operations(State(s): State<ConsoleState>) -> Result<Json<serde_json::Value>, ApiError> {
    let m = &s.api.metrics;
    let mut providers = Vec::new();
    for (name, kind) in s.api.providers.iter() {
        let results: serde_json::Map<String, serde_json::Value> = m
            .series("duebell_provider_results_total", "provider", name)
            .into_iter()
            .map(|(l, v)| {
                let class = l
                    .split("class=\"")
                    .nth(1)
                    .and_then(|c| c.split('"').next())
                    .unwrap_or("")
                    .to_owned();
                (class, v.into())
            })
            .collect();
        let one = |metric: &str| {
            m.series(metric, "provider", name)
                .first()
                .map_or(0.0, |(_, v)| *v)
        };
        providers.push(serde_json::json!({
            "name": name,
            "kind": format!("{kind:?}").to_lowercase(),
            "paused": s.api.pauses.is_paused(Some(name)),
            "circuit_open": one("duebell_circuit_open") > 0.0,
            "results": results,
            "mean_latency_seconds": one("duebell_provider_latency_seconds"),
            "mean_rate_limit_wait_seconds": one("duebell_rate_limit_wait_seconds"),
        }));
    }
    let by_reason: Vec<serde_json::Value> = s
        .api
        .store
        .message_breakdown()
        .await?
        .into_iter()
        .map(|(state, channel, provider, reason, n)| {
            serde_json::json!({
                "state": state.as_str(), "channel": channel, "provider": provider,
                "reason": reason.map(|r| r.to_string()), "count": n,
            })
        })
        .collect();
    let status = crate::api::routes::summary(&s.api).await?;
    let tz = s.api.default_tz;
    let today = s.now().with_timezone(&tz).date_naive();
    let start = crate::compliance::caps::local_midnight(tz, today);
    let today: Vec<serde_json::Value> = s
        .api
        .store
        .db()
        .transitions_since(start)
        .await?
        .into_iter()
        .map(|(state, reason, n)| serde_json::json!({ "state": state, "reason": reason, "count": n }))
        .collect();
    Ok(Json(serde_json::json!({
        "status": status, "providers": providers, "messages": by_reason,
        "today": { "since": start, "timezone": tz.name(), "transitions": today },
    })))
}

#[derive(Deserialize)]
struct Search {
    q: String,
}

/// What a searcher typed, as the store keeps addresses.
fn normalised(q: &str) -> String {
    let q = q.trim();
    if q.contains('@') {
        return q.to_lowercase();
    }
    if q.starts_with('+') {
        if let Ok(p) = crate::domain::PhoneNumber::parse(q) {
            return p.as_str().to_owned();
        }
    }
    q.to_owned()
}

async fn search(
    State(s): State<ConsoleState>,
    q: Result<Query<Search>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = q.map_err(|_| ApiError::bad("q", "send ?q= with an id, phone or email"))?;
    if q.q.trim().is_empty() {
        return Err(ApiError::bad(
            "q",
            "is empty; type a borrower id, phone or email",
        ));
    }
    let hits = s.api.store.db().find_borrowers(&normalised(&q.q)).await?;
    let hits: Vec<serde_json::Value> = hits
        .into_iter()
        .map(|h| {
            let contacts: Vec<serde_json::Value> = h
                .contacts
                .iter()
                .map(|(c, a)| {
                    let masked = if c == Channel::Sms.as_str() {
                        crate::domain::mask_phone_text(a)
                    } else {
                        crate::domain::mask_email(a)
                    };
                    serde_json::json!({ "channel": c, "address": masked })
                })
                .collect();
            serde_json::json!({
                "borrower_id": h.external_id, "name": h.name,
                "active_loans": h.active_loans, "contacts": contacts,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "borrowers": hits })))
}

async fn decide(
    s: &ConsoleState,
    who: &Principal,
    id: &str,
    release: bool,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad("message_id", "is a number"))?;
    let state = s.api.store.operator_decide(s.now(), id, release).await?;
    let verb = if release { "released" } else { "cancelled" };
    match state {
        None => Err(ApiError::not_found(format!("no message {id}"))),
        Some(st)
            if (release && st == crate::store::MessageState::Planned)
                || (!release && st == crate::store::MessageState::Cancelled) =>
        {
            s.record(
                who,
                "message",
                &id.to_string(),
                None,
                Some(verb.to_owned()),
                format!("message {id} {verb}"),
            )
            .await?;
            if release {
                s.api.work.notify_one();
            }
            Ok(Json(
                serde_json::json!({ "message_id": id, "state": st.as_str() }),
            ))
        }
        Some(st) => Err(ApiError::conflict(format!(
            "message {id} is {st}; only unknown or failed messages can be released or cancelled"
        ))),
    }
}

async fn release(
    State(s): State<ConsoleState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    decide(&s, &who, &id, true).await
}

async fn cancel(
    State(s): State<ConsoleState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    decide(&s, &who, &id, false).await
}

#[derive(Deserialize)]
struct Range {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    format: Option<String>,
}

fn dates(r: &Range) -> Result<(Option<chrono::NaiveDate>, Option<chrono::NaiveDate>), ApiError> {
    let parse = |field: &str, v: &Option<String>| {
        v.as_deref()
            .filter(|v| !v.is_empty())
            .map(|v| crate::domain::parse_date(v).map_err(|e| ApiError::bad(field, e.to_string())))
            .transpose()
    };
    Ok((parse("from", &r.from)?, parse("to", &r.to)?))
}

async fn audit(
    State(s): State<ConsoleState>,
    Extension(who): Extension<Principal>,
    q: Result<Query<Range>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(r) = q.map_err(|e| ApiError::bad("query", e.body_text()))?;
    let (from, to) = dates(&r)?;
    let (format, ext, mime) = match r.format.as_deref().unwrap_or("csv") {
        "csv" => (
            crate::audit::AuditFormat::Csv,
            "csv",
            "text/csv; charset=utf-8",
        ),
        "jsonl" => (
            crate::audit::AuditFormat::Jsonl,
            "jsonl",
            "application/x-ndjson",
        ),
        other => {
            return Err(ApiError::bad(
                "format",
                format!("`{other}` is not csv or jsonl"),
            ))
        }
    };
    let mut out = Vec::new();
    let rows = crate::audit::export(
        s.api.store.as_ref(),
        from,
        to,
        format,
        s.api.default_tz,
        &mut out,
    )
    .await?;
    tracing::info!(by = %who.name, rows, "audit export downloaded from the console");
    let name = format!(
        "duebell-audit-{}-{}.{ext}",
        from.map_or("start".to_owned(), |d| d.to_string()),
        to.map_or("now".to_owned(), |d| d.to_string())
    );
    Ok((
        [
            (header::CONTENT_TYPE, mime.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        out,
    )
        .into_response())
}

async fn changes(
    State(s): State<ConsoleState>,
    q: Result<Query<Range>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(r) = q.map_err(|e| ApiError::bad("query", e.body_text()))?;
    let (from, to) = dates(&r)?;
    let start = from.map_or(chrono::DateTime::<chrono::Utc>::MIN_UTC, |d| {
        d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
    });
    let end = to.map_or(chrono::DateTime::<chrono::Utc>::MAX_UTC, |d| {
        (d + chrono::Duration::days(1))
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default()
            .and_utc()
    });
    let list = s.api.store.db().changes(start, end).await?;
    Ok(Json(serde_json::json!({ "changes": list })))
}
