//! The route table (one list builds both the router and `/openapi.json`),
//! the health, OpenAPI and unsubscribe routes. The handlers of each resource
//! live in `book.rs`, `operator.rs`, `webhooks.rs` and `metrics.rs`.

use std::sync::atomic::Ordering;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::{Json, Router};

use super::access::Need;
pub use super::operator::{summary, Status};
use super::{ApiError, ApiState};

/// One route: method, path, summary for `/openapi.json`, who may call it,
/// and its handler.
pub type Route<S> = (
    &'static str,
    &'static str,
    &'static str,
    Need,
    MethodRouter<S>,
);

/// Every route of the API itself, once: the router and `/openapi.json` are
/// both built from this table (and the console's, `extra`), so they cannot
/// drift apart.
fn table() -> Vec<Route<ApiState>> {
    vec![
        (
            "get",
            "/healthz",
            "Alive",
            Need::Open,
            get(|| async { "ok\n" }),
        ),
        (
            "get",
            "/readyz",
            "Store reachable and config loaded",
            Need::Open,
            get(readyz),
        ),
        (
            "get",
            "/metrics",
            "Prometheus metrics",
            Need::Open,
            get(super::metrics::metrics),
        ),
        (
            "get",
            "/openapi.json",
            "This document",
            Need::Open,
            get(openapi),
        ),
        (
            "get",
            "/u/{token}",
            "Unsubscribe page (does not unsubscribe)",
            Need::Open,
            get(unsubscribe_page),
        ),
        (
            "post",
            "/u/{token}",
            "RFC 8058 one-click unsubscribe",
            Need::Open,
            post(unsubscribe),
        ),
        (
            "put",
            "/v1/loans/{loan_id}",
            "Upsert a loan and its borrower",
            Need::Admin,
            put(super::book::upsert_loan),
        ),
        (
            "post",
            "/v1/payments",
            "Record a payment (idempotent by payment_id)",
            Need::Admin,
            post(super::book::payment),
        ),
        (
            "post",
            "/v1/holds",
            "Place a hold on a borrower or loan",
            Need::Compliance,
            post(super::book::add_hold),
        ),
        (
            "post",
            "/v1/bounces/lift",
            "Lift the hard-bounce suppression of an address",
            Need::Compliance,
            post(super::book::lift_bounce),
        ),
        (
            "delete",
            "/v1/holds/{hold_id}",
            "Clear a hold",
            Need::Compliance,
            delete(super::book::clear_hold),
        ),
        (
            "post",
            "/v1/opt-outs",
            "Opt a borrower's contact point out",
            Need::Compliance,
            post(super::book::opt_out),
        ),
        (
            "delete",
            "/v1/opt-outs",
            "Opt a borrower's contact point back in",
            Need::Compliance,
            delete(super::book::opt_in),
        ),
        (
            "get",
            "/v1/borrowers/{borrower_id}/timeline",
            "Every decision and message for a borrower, with reasons",
            Need::Compliance,
            get(super::book::timeline),
        ),
        (
            "get",
            "/v1/messages",
            "Query messages by state, borrower or time",
            Need::Compliance,
            get(super::operator::messages),
        ),
        (
            "post",
            "/v1/pause",
            "Pause sending, globally or for one provider",
            Need::Admin,
            post(super::operator::pause),
        ),
        (
            "post",
            "/v1/resume",
            "Resume sending, globally or for one provider",
            Need::Admin,
            post(super::operator::resume),
        ),
        (
            "get",
            "/v1/status",
            "One-line summary and counts",
            Need::Read,
            get(super::operator::status),
        ),
        (
            "post",
            "/webhooks/twilio/{provider}/status",
            "Twilio status callback (X-Twilio-Signature)",
            Need::Open,
            post(super::webhooks::twilio_status),
        ),
        (
            "post",
            "/webhooks/aliyun/{provider}/report/{token}",
            "Aliyun SmsReport delivery receipts (repeats are harmless)",
            Need::Open,
            post(super::webhooks::aliyun_report),
        ),
        (
            "post",
            "/webhooks/tencent/{provider}/report/{token}",
            "Tencent delivery callbacks (repeats are harmless)",
            Need::Open,
            post(super::webhooks::tencent_report),
        ),
        (
            "post",
            "/webhooks/twilio/{provider}/inbound",
            "Twilio inbound SMS: STOP and START (X-Twilio-Signature)",
            Need::Open,
            post(super::webhooks::twilio_inbound),
        ),
        (
            "post",
            "/v1/session",
            "Log in to the console: sets the session cookie, returns the CSRF token",
            Need::Open,
            post(super::session::login),
        ),
        (
            "get",
            "/v1/session",
            "Who the caller is, their role and CSRF token",
            Need::Read,
            get(super::session::whoami),
        ),
        (
            "delete",
            "/v1/session",
            "Log out",
            Need::Read,
            delete(super::session::logout),
        ),
        (
            "put",
            "/v1/session/locale",
            "The console's language for this account (en, zh-CN)",
            Need::Read,
            put(super::session::set_locale),
        ),
    ]
}

/// A route as `/openapi.json` documents it.
#[derive(Debug, Clone)]
pub struct RouteDoc {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub need: Need,
}

/// (method, path) of every route of the API itself, for tests.
pub fn documented() -> Vec<(&'static str, &'static str)> {
    table().into_iter().map(|(m, p, ..)| (m, p)).collect()
}

/// Builds a router from a route table: routes of one path merged, each
/// behind the role check it names. Also returns the table's documentation.
pub fn build<S: Clone + Send + Sync + 'static>(
    routes: Vec<Route<S>>,
    state: S,
) -> (Router, Vec<RouteDoc>) {
    let mut docs = Vec::new();
    let mut by_path: std::collections::BTreeMap<&str, MethodRouter<S>> =
        std::collections::BTreeMap::new();
    for (method, path, summary, need, handler) in routes {
        docs.push(RouteDoc {
            method,
            path,
            summary,
            need,
        });
        let handler = handler.route_layer(axum::middleware::from_fn(move |r, n| {
            super::access::require(need, r, n)
        }));
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
    (router.with_state(state), docs)
}

/// The API's own routes, plus `extra` (the console's) with their docs;
/// `/openapi.json` documents both.
pub fn router(state: ApiState, extra: Router, extra_docs: Vec<RouteDoc>) -> Router {
    let (router, mut docs) = build(table(), state);
    docs.extend(extra_docs);
    let doc = std::sync::Arc::new(openapi_doc(&docs));
    router.merge(extra).layer(axum::Extension(doc))
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

async fn openapi(
    axum::Extension(doc): axum::Extension<std::sync::Arc<serde_json::Value>>,
) -> Json<serde_json::Value> {
    Json((*doc).clone())
}

fn openapi_doc(docs: &[RouteDoc]) -> serde_json::Value {
    let mut paths = serde_json::Map::new();
    for RouteDoc {
        method,
        path,
        summary,
        need,
    } in docs.iter().cloned()
    {
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
        if need != Need::Open {
            op["security"] = serde_json::json!([{ "bearer": [] }, { "session": [] }]);
            op["x-roles"] = serde_json::json!(need.roles());
            op["responses"]["401"] =
                serde_json::json!({ "description": "No bearer token or session" });
            op["responses"]["403"] = serde_json::json!({ "description": "Token not accepted, role not allowed, or (with a session) no CSRF token on a change" });
            op["responses"]["422"] =
                serde_json::json!({ "description": "Invalid field; the body names it" });
        }
        entry[method] = op;
    }
    serde_json::json!({
        "openapi": "3.0.3",
        "info": { "title": "duebell", "version": env!("CARGO_PKG_VERSION") },
        "components": { "securitySchemes": {
            "bearer": { "type": "http", "scheme": "bearer" },
            "session": { "type": "apiKey", "in": "cookie", "name": super::access::COOKIE },
        } },
        "paths": paths,
    })
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
