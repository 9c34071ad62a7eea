//! The route table (one list builds both the router and `/openapi.json`),
//! the health, OpenAPI and unsubscribe routes. The handlers of each resource
//! live in `book.rs`, `operator.rs`, `webhooks.rs` and `metrics.rs`.

use std::sync::atomic::Ordering;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::{Json, Router};

pub use super::operator::{summary, Status};
use super::{ApiError, ApiState};

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
            put(super::book::upsert_loan),
        ),
        (
            "post",
            "/v1/payments",
            "Record a payment (idempotent by payment_id)",
            post(super::book::payment),
        ),
        (
            "post",
            "/v1/holds",
            "Place a hold on a borrower or loan",
            post(super::book::add_hold),
        ),
        (
            "post",
            "/v1/bounces/lift",
            "Lift the hard-bounce suppression of an address",
            post(super::book::lift_bounce),
        ),
        (
            "delete",
            "/v1/holds/{hold_id}",
            "Clear a hold",
            delete(super::book::clear_hold),
        ),
        (
            "post",
            "/v1/opt-outs",
            "Opt a borrower's contact point out",
            post(super::book::opt_out),
        ),
        (
            "delete",
            "/v1/opt-outs",
            "Opt a borrower's contact point back in",
            delete(super::book::opt_in),
        ),
        (
            "get",
            "/v1/borrowers/{borrower_id}/timeline",
            "Every decision and message for a borrower, with reasons",
            get(super::book::timeline),
        ),
        (
            "get",
            "/v1/messages",
            "Query messages by state, borrower or time",
            get(super::operator::messages),
        ),
        (
            "post",
            "/v1/pause",
            "Pause sending, globally or for one provider",
            post(super::operator::pause),
        ),
        (
            "post",
            "/v1/resume",
            "Resume sending, globally or for one provider",
            post(super::operator::resume),
        ),
        (
            "get",
            "/v1/status",
            "One-line summary and counts",
            get(super::operator::status),
        ),
        (
            "post",
            "/webhooks/twilio/{provider}/status",
            "Twilio status callback (X-Twilio-Signature)",
            post(super::webhooks::twilio_status),
        ),
        (
            "post",
            "/webhooks/aliyun/{provider}/report/{token}",
            "Aliyun SmsReport delivery receipts (repeats are harmless)",
            post(super::webhooks::aliyun_report),
        ),
        (
            "post",
            "/webhooks/tencent/{provider}/report/{token}",
            "Tencent delivery callbacks (repeats are harmless)",
            post(super::webhooks::tencent_report),
        ),
        (
            "post",
            "/webhooks/twilio/{provider}/inbound",
            "Twilio inbound SMS: STOP and START (X-Twilio-Signature)",
            post(super::webhooks::twilio_inbound),
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
        // Every `{name}` in the path is a required string parameter.
        let params: Vec<serde_json::Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                serde_json::json!({
                    "name": name, "in": "path", "required": true, "schema": { "type": "string" }
                })
            })
            .collect();
        if !params.is_empty() {
            op["parameters"] = serde_json::Value::Array(params);
        }
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
