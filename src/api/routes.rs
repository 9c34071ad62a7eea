//! Route handlers and the OpenAPI document that lists them.

use std::sync::atomic::Ordering;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::{Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiState};
use crate::domain::{parse_date, parse_instant, Channel, HoldKind, LoanId, PaymentId};
use crate::store::{LoanBookRow, MessageQuery, MessageState, PaymentRow, RowOutcome};

/// Every route, once: the router and `/openapi.json` are both built from
/// this table, so they cannot drift apart.
fn table() -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    MethodRouter<ApiState>,
)> {
    vec![
        ("get", "/healthz", "Alive", get(|| async { "ok\n" })),
        (
            "get",
            "/readyz",
            "Store reachable and config loaded",
            get(readyz),
        ),
        (
            "get",
            "/metrics",
            "Prometheus metrics",
            get(super::metrics::metrics),
        ),
        ("get", "/openapi.json", "This document", get(openapi)),
        (
            "get",
            "/u/{token}",
            "Unsubscribe page (does not unsubscribe)",
            get(unsubscribe_page),
        ),
        (
            "post",
            "/u/{token}",
            "RFC 8058 one-click unsubscribe",
            post(unsubscribe),
        ),
        (
            "put",
            "/v1/loans/{loan_id}",
            "Upsert a loan and its borrower",
            put(upsert_loan),
        ),
        (
            "post",
            "/v1/payments",
            "Record a payment (idempotent by payment_id)",
            post(payment),
        ),
        (
            "post",
            "/v1/holds",
            "Place a hold on a borrower or loan",
            post(add_hold),
        ),
        (
            "delete",
            "/v1/holds/{hold_id}",
            "Clear a hold",
            delete(clear_hold),
        ),
        (
            "post",
            "/v1/opt-outs",
            "Opt a borrower's contact point out",
            post(opt_out),
        ),
        (
            "delete",
            "/v1/opt-outs",
            "Opt a borrower's contact point back in",
            delete(opt_in),
        ),
        (
            "get",
            "/v1/borrowers/{borrower_id}/timeline",
            "Every decision and message for a borrower, with reasons",
            get(timeline),
        ),
        (
            "get",
            "/v1/messages",
            "Query messages by state, borrower or time",
            get(messages),
        ),
        (
            "post",
            "/v1/pause",
            "Pause sending, globally or for one provider",
            post(pause),
        ),
        (
            "post",
            "/v1/resume",
            "Resume sending, globally or for one provider",
            post(resume),
        ),
        (
            "get",
            "/v1/status",
            "One-line summary and counts",
            get(status),
        ),
        (
            "post",
            "/webhooks/twilio/{provider}/status",
            "Twilio status callback (X-Twilio-Signature)",
            post(twilio_status),
        ),
        (
            "post",
            "/webhooks/aliyun/{provider}/report",
            "Aliyun SmsReport delivery receipts (repeats are harmless)",
            post(aliyun_report),
        ),
        (
            "post",
            "/webhooks/tencent/{provider}/report",
            "Tencent delivery callbacks (repeats are harmless)",
            post(tencent_report),
        ),
        (
            "post",
            "/webhooks/twilio/{provider}/inbound",
            "Twilio inbound SMS: STOP and START (X-Twilio-Signature)",
            post(twilio_inbound),
        ),
    ]
}

/// (method, path) of every route, for tests.
pub fn documented() -> Vec<(&'static str, &'static str)> {
    table().into_iter().map(|(m, p, _, _)| (m, p)).collect()
}

pub fn router(state: ApiState) -> Router {
    let mut by_path: std::collections::BTreeMap<&str, MethodRouter<ApiState>> =
        std::collections::BTreeMap::new();
    for (_, path, _, handler) in table() {
        let merged = match by_path.remove(path) {
            Some(existing) => existing.merge(handler),
            None => handler,
        };
        by_path.insert(path, merged);
    }
    let mut router = Router::new();
    for (path, handler) in by_path {
        router = router.route(path, handler);
    }
    router.with_state(state)
}

async fn readyz(State(s): State<ApiState>) -> Response {
    match s.store.ping().await {
        Ok(()) if s.ready.load(Ordering::SeqCst) => (StatusCode::OK, "ready\n").into_response(),
        Ok(()) => (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unreachable: {e}\n"),
        )
            .into_response(),
    }
}

async fn openapi() -> Json<serde_json::Value> {
    let mut paths = serde_json::Map::new();
    for (method, path, summary, _) in table() {
        let entry = paths
            .entry(path.to_string())
            .or_insert_with(|| serde_json::json!({}));
        let mut op = serde_json::json!({ "summary": summary, "responses": { "200": { "description": "OK" } } });
        if path.starts_with("/v1") {
            op["security"] = serde_json::json!([{ "bearer": [] }]);
            op["responses"]["401"] = serde_json::json!({ "description": "No bearer token" });
            op["responses"]["403"] = serde_json::json!({ "description": "Token not accepted" });
            op["responses"]["422"] =
                serde_json::json!({ "description": "Invalid field; the body names it" });
        }
        entry[method] = op;
    }
    Json(serde_json::json!({
        "openapi": "3.0.3",
        "info": { "title": "duebell", "version": env!("CARGO_PKG_VERSION") },
        "components": { "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } } },
        "paths": paths,
    }))
}

async fn unsubscribe_page(State(s): State<ApiState>, Path(token): Path<String>) -> Response {
    // GET never unsubscribes: mail scanners prefetch links.
    if s.unsubscribe.verify(&token).is_none() {
        return (
            StatusCode::NOT_FOUND,
            Html("<p>This link is not valid.</p>"),
        )
            .into_response();
    }
    Html(format!(
        "<!DOCTYPE html><html><body><form method=\"post\" action=\"/u/{token}\"><p>Stop these emails?</p><button type=\"submit\">Unsubscribe</button></form></body></html>"
    ))
    .into_response()
}

async fn unsubscribe(
    State(s): State<ApiState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let Some(message_id) = s.unsubscribe.verify(&token) else {
        return Err(ApiError::not_found("this unsubscribe link is not valid"));
    };
    let changed = s
        .store
        .opt_out_message_contact(s.clock.now(), message_id, "one-click unsubscribe")
        .await?;
    if changed {
        tracing::info!(message_id, "unsubscribed by one-click link");
        s.replan.notify_one();
    }
    // Repeats are harmless: same answer.
    Ok((StatusCode::OK, "unsubscribed\n").into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoanBody {
    borrower_id: String,
    name: String,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    locale: Option<String>,
    #[serde(default)]
    timezone: Option<String>,
    due_date: String,
    amount_due: String,
    currency: String,
    #[serde(default)]
    status: Option<String>,
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let msg = e.to_string();
        let field = msg.split('`').nth(1).unwrap_or("body").to_owned();
        ApiError::bad(&field, format!("invalid JSON body: {msg}"))
    })
}

async fn upsert_loan(
    State(s): State<ApiState>,
    Path(loan_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let b: LoanBody = json_body(&body)?;
    let mut fields = std::collections::HashMap::new();
    let mut put = |k: &str, v: Option<String>| {
        fields.insert(k.to_owned(), v.unwrap_or_default());
    };
    put("loan_id", Some(loan_id));
    put("borrower_id", Some(b.borrower_id));
    put("name", Some(b.name));
    put("phone", b.phone);
    put("email", b.email);
    put("locale", b.locale);
    put("timezone", b.timezone);
    put("due_date", Some(b.due_date));
    put("amount_due", Some(b.amount_due));
    put("currency", Some(b.currency));
    put("status", b.status);
    let rec = crate::sources::RawRecord {
        line: 0,
        end: 0,
        fields,
    };
    let (borrower, loan) = crate::sources::loan_row(&rec).map_err(|(f, m)| ApiError::bad(&f, m))?;
    let mut tx = s.store.begin_import(s.clock.now()).await?;
    let outcome = tx
        .upsert_loans(&[LoanBookRow {
            line: 0,
            borrower,
            loan,
        }])
        .await?;
    tx.commit().await?;
    s.replan.notify_one();
    outcome_response(&outcome[0])
}

fn outcome_response(o: &RowOutcome) -> Result<Response, ApiError> {
    match o {
        RowOutcome::Inserted => Ok((
            StatusCode::CREATED,
            Json(serde_json::json!({"result": "imported"})),
        )
            .into_response()),
        RowOutcome::Updated => Ok(Json(serde_json::json!({"result": "updated"})).into_response()),
        RowOutcome::Unchanged => {
            Ok(Json(serde_json::json!({"result": "unchanged"})).into_response())
        }
        RowOutcome::Rejected { field, reason } => Err(ApiError::bad(field, reason.clone())),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentBody {
    payment_id: String,
    loan_id: String,
    amount: String,
    paid_at: String,
}

async fn payment(State(s): State<ApiState>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let b: PaymentBody = json_body(&body)?;
    let payment = crate::domain::Payment {
        id: PaymentId::parse(&b.payment_id).map_err(|e| ApiError::bad("payment_id", e.0))?,
        loan: LoanId::parse(&b.loan_id).map_err(|e| ApiError::bad("loan_id", e.0))?,
        amount: crate::domain::money_amount(&b.amount).map_err(|e| ApiError::bad("amount", e.0))?,
        paid_at: parse_instant(&b.paid_at).map_err(|e| ApiError::bad("paid_at", e.0))?,
    };
    if payment.amount.is_zero() {
        return Err(ApiError::bad(
            "amount",
            "is zero; a payment must be positive",
        ));
    }
    let mut tx = s.store.begin_import(s.clock.now()).await?;
    let outcome = tx
        .upsert_payments(&[PaymentRow { line: 0, payment }])
        .await?;
    tx.commit().await?;
    s.replan.notify_one();
    outcome_response(&outcome[0])
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HoldBody {
    #[serde(default)]
    borrower_id: Option<String>,
    #[serde(default)]
    loan_id: Option<String>,
    kind: String,
    #[serde(default)]
    until: Option<String>,
}

async fn add_hold(
    State(s): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let b: HoldBody = json_body(&body)?;
    if b.borrower_id.is_none() && b.loan_id.is_none() {
        return Err(ApiError::bad("borrower_id", "give borrower_id or loan_id"));
    }
    let kind = HoldKind::parse(&b.kind).map_err(|e| ApiError::bad("kind", e.0))?;
    let until = b
        .until
        .as_deref()
        .map(parse_date)
        .transpose()
        .map_err(|e| ApiError::bad("until", e.0))?;
    if kind == HoldKind::PromiseToPay && until.is_none() {
        return Err(ApiError::bad(
            "until",
            "a promise to pay needs the date it runs until",
        ));
    }
    match s
        .store
        .add_hold(
            s.clock.now(),
            b.borrower_id.as_deref(),
            b.loan_id.as_deref(),
            kind,
            until,
        )
        .await?
    {
        Some(id) => {
            s.replan.notify_one();
            Ok((
                StatusCode::CREATED,
                Json(serde_json::json!({"hold_id": id})),
            )
                .into_response())
        }
        None => Err(ApiError::not_found("no such borrower or loan")),
    }
}

async fn clear_hold(
    State(s): State<ApiState>,
    Path(hold_id): Path<i64>,
) -> Result<Response, ApiError> {
    if s.store.clear_hold(s.clock.now(), hold_id).await? {
        s.replan.notify_one();
        Ok(Json(serde_json::json!({"result": "cleared"})).into_response())
    } else {
        Err(ApiError::not_found(format!("no active hold {hold_id}")))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OptBody {
    borrower_id: String,
    channel: String,
}

async fn opt(s: ApiState, body: &[u8], out: bool) -> Result<Response, ApiError> {
    let b: OptBody = json_body(body)?;
    let channel = Channel::parse(&b.channel).map_err(|e| ApiError::bad("channel", e.0))?;
    let source = if out { "api opt-out" } else { "api opt-in" };
    if s.store
        .set_opt_out(s.clock.now(), &b.borrower_id, channel, out, source)
        .await?
    {
        s.replan.notify_one();
        Ok(
            Json(serde_json::json!({"result": if out { "opted out" } else { "opted in" }}))
                .into_response(),
        )
    } else {
        Err(ApiError::not_found(format!(
            "borrower `{}` has no {channel} address",
            b.borrower_id
        )))
    }
}

async fn opt_out(State(s): State<ApiState>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    opt(s, &body, true).await
}

async fn opt_in(State(s): State<ApiState>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    opt(s, &body, false).await
}

async fn timeline(
    State(s): State<ApiState>,
    Path(borrower_id): Path<String>,
) -> Result<Response, ApiError> {
    let messages = s
        .store
        .messages(&MessageQuery {
            borrower: Some(borrower_id.clone()),
            ..Default::default()
        })
        .await?;
    if messages.is_empty()
        && s.store
            .plan_borrower(&borrower_id, Utc::now())
            .await?
            .is_none()
    {
        return Err(ApiError::not_found(format!("no borrower `{borrower_id}`")));
    }
    let mut out = Vec::new();
    for m in messages {
        let events = s.store.message_events(m.id).await?;
        out.push(serde_json::json!({ "message": masked(&m), "events": events }));
    }
    Ok(Json(serde_json::json!({ "borrower_id": borrower_id, "messages": out })).into_response())
}

fn masked(m: &crate::store::MessageView) -> serde_json::Value {
    let mut v = serde_json::to_value(m).unwrap_or_default();
    if let Some(a) = &m.address {
        v["address"] = serde_json::Value::String(match m.channel {
            Channel::Sms => crate::domain::mask_phone_text(a),
            Channel::Email => crate::domain::mask_email(a),
        });
    }
    v
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessagesQuery {
    state: Option<String>,
    borrower: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<u32>,
}

async fn messages(
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
struct PauseBody {
    #[serde(default)]
    provider: Option<String>,
}

async fn pause(State(s): State<ApiState>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let b: PauseBody = if body.is_empty() {
        PauseBody::default()
    } else {
        json_body(&body)?
    };
    match b.provider {
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

async fn resume(State(s): State<ApiState>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let b: PauseBody = if body.is_empty() {
        PauseBody::default()
    } else {
        json_body(&body)?
    };
    match b.provider {
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
    let summary = format!(
        "due {due}, deferred {deferred}, sent today {sent_today}{}{}",
        if failing.is_empty() {
            String::new()
        } else {
            format!(", failing providers: {}", failing.join(" "))
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

async fn status(State(s): State<ApiState>) -> Result<Response, ApiError> {
    Ok(Json(summary(&s).await?).into_response())
}

/// Checks a Twilio callback's signature; returns its form parameters.
fn twilio_form(
    s: &ApiState,
    provider: &str,
    path: &str,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<Vec<(String, String)>, Box<Response>> {
    let Some(token) = s.twilio_tokens.get(provider) else {
        return Err(Box::new(
            (StatusCode::NOT_FOUND, "no such twilio provider\n").into_response(),
        ));
    };
    let params: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    let presented = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let url = format!("{}{path}", s.public_url.trim_end_matches('/'));
    if !crate::providers::twilio::verify(token, &url, &params, presented) {
        tracing::warn!(provider, "Twilio callback with a bad signature refused");
        return Err(Box::new(
            (StatusCode::FORBIDDEN, "bad signature\n").into_response(),
        ));
    }
    Ok(params)
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn twilio_status(
    State(s): State<ApiState>,
    Path(provider): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    // Twilio signs the full URL it called, query included.
    let path = match query.get("m") {
        Some(m) => format!("/webhooks/twilio/{provider}/status?m={m}"),
        None => format!("/webhooks/twilio/{provider}/status"),
    };
    let params = match twilio_form(&s, &provider, &path, &headers, &body) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let (Some(sid), Some(status)) = (
        param(&params, "MessageSid"),
        param(&params, "MessageStatus"),
    ) else {
        return ApiError::bad("MessageSid", "MessageSid and MessageStatus are required")
            .into_response();
    };
    let delivered = match status {
        "delivered" => true,
        "undelivered" | "failed" => false,
        // queued, sent, …: not final; acknowledge.
        _ => return (StatusCode::OK, "").into_response(),
    };
    let detail = format!(
        "{provider} receipt: {status}{}",
        param(&params, "ErrorCode")
            .map(|c| format!(" (error {c})"))
            .unwrap_or_default()
    );
    // The StatusCallback URL carries our message id (`?m=<id>`), so a
    // receipt reconciles a send interrupted before Twilio's SID was stored.
    let ours = query
        .get("m")
        .and_then(|m| m.parse::<i64>().ok())
        .map(|m| format!("m:{m}"));
    match s
        .store
        .receipt(
            s.clock.now(),
            &provider,
            ours.as_deref().unwrap_or(sid),
            delivered,
            &detail,
        )
        .await
    {
        Ok(_) => (StatusCode::OK, "").into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

async fn twilio_inbound(
    State(s): State<ApiState>,
    Path(provider): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let path = format!("/webhooks/twilio/{provider}/inbound");
    let params = match twilio_form(&s, &provider, &path, &headers, &body) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let (Some(from), Some(text)) = (param(&params, "From"), param(&params, "Body")) else {
        return ApiError::bad("From", "From and Body are required").into_response();
    };
    let Ok(phone) = crate::domain::PhoneNumber::parse(from) else {
        return (StatusCode::OK, "").into_response();
    };
    let now = s.clock.now();
    let result = match s.stop_words.classify(text) {
        Some(true) => s
            .store
            .opt_out_address(now, Channel::Sms, phone.as_str(), "inbound STOP")
            .await
            .map(|n| (n, "opted out")),
        Some(false) => s
            .store
            .opt_in_address(now, Channel::Sms, phone.as_str(), "inbound START")
            .await
            .map(|n| (n, "opted in")),
        None => Ok((0, "no keyword")),
    };
    match result {
        Ok((n, what)) => {
            if n > 0 {
                tracing::info!(phone = %phone, what, "inbound SMS keyword applied");
                s.replan.notify_one();
            }
            // An empty TwiML answer: no automatic reply.
            ([(header::CONTENT_TYPE, "text/xml")], "<Response/>").into_response()
        }
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// Applies a provider's batch of delivery reports (a JSON array); `read`
/// gives each report's provider id, whether it was delivered, and a detail.
/// Providers resend reports, so a repeat changes nothing.
async fn apply_reports(
    s: &ApiState,
    provider: &str,
    body: &[u8],
    read: impl Fn(&serde_json::Value) -> Option<(String, bool, String)>,
) -> Result<(), Response> {
    let reports: Vec<serde_json::Value> = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad("body", format!("expected a JSON array of reports: {e}")).into_response()
    })?;
    for r in &reports {
        let Some((id, delivered, detail)) = read(r) else {
            continue;
        };
        let detail = format!("{provider} receipt: {detail}");
        s.store
            .receipt(s.clock.now(), provider, &id, delivered, &detail)
            .await
            .map_err(|e| ApiError::internal(e).into_response())?;
    }
    Ok(())
}

/// Aliyun SmsReport: `[{biz_id, success, err_code, …}]`; answered as Aliyun expects.
async fn aliyun_report(
    State(s): State<ApiState>,
    Path(provider): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let read = |r: &serde_json::Value| {
        Some((
            // `out_id` is our message id (sent as OutId).
            r["out_id"]
                .as_str()
                .filter(|o| !o.is_empty())
                .map(|o| format!("m:{o}"))
                .or_else(|| r["biz_id"].as_str().map(str::to_owned))?,
            r["success"].as_bool().unwrap_or(false),
            r["err_code"].as_str().unwrap_or("").to_owned(),
        ))
    };
    match apply_reports(&s, &provider, &body, read).await {
        Ok(()) => Json(serde_json::json!({"code": 0, "msg": "接收成功"})).into_response(),
        Err(r) => r,
    }
}

/// Tencent delivery callback: `[{sid, report_status, description, …}]`.
async fn tencent_report(
    State(s): State<ApiState>,
    Path(provider): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let read = |r: &serde_json::Value| {
        let status = r["report_status"].as_str().unwrap_or("");
        Some((
            r["sid"].as_str()?.to_owned(),
            status == "SUCCESS",
            format!("{status} {}", r["description"].as_str().unwrap_or("")),
        ))
    };
    match apply_reports(&s, &provider, &body, read).await {
        Ok(()) => Json(serde_json::json!({"result": 0, "errmsg": "OK"})).into_response(),
        Err(r) => r,
    }
}
