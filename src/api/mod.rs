//! The HTTP API (axum), JSON in and out. Open: `/healthz`, `/readyz`,
//! `/metrics`, `/openapi.json` and the one-click unsubscribe links (which
//! carry their own signature). Everything under `/v1` needs a caller with
//! a role: a bearer token (`api.tokens`, `api.clients`) or the console's
//! session (`access.rs`); each route names the role it needs (`routes.rs`).
//! Client errors are 4xx with a message naming the field; server errors
//! are an opaque 500 with the full chain in the log.

pub mod access;
mod book;
mod metrics;
mod operator;
pub mod routes;
mod session;
mod webhooks;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Deserializer};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::store::Store;

/// `[api]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address to listen on; empty disables the API.
    pub listen: String,
    /// The URL borrowers and providers reach this API at (unsubscribe links,
    /// webhook signatures).
    pub public_url: String,
    /// Bearer tokens allowed to call `/v1`. A list, or (through
    /// `tokens_file`) one token per line.
    #[serde(deserialize_with = "tokens")]
    pub tokens: Vec<crate::domain::Secret>,
    /// API clients with a role other than admin (`[[api.clients]]`).
    pub clients: Vec<access::ClientConfig>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:8080".into(),
            public_url: "http://127.0.0.1:8080".into(),
            tokens: vec![],
            clients: vec![],
        }
    }
}

fn tokens<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<crate::domain::Secret>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Tokens {
        List(Vec<String>),
        Lines(String),
    }
    let list = match Tokens::deserialize(d)? {
        Tokens::List(v) => v,
        Tokens::Lines(s) => s
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect(),
    };
    Ok(list.into_iter().map(crate::domain::Secret::from).collect())
}

impl ApiConfig {
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        if !self.listen.is_empty() && self.listen.parse::<SocketAddr>().is_err() {
            p.push((
                "api.listen".into(),
                format!(
                    "`{}` is not an address; write e.g. 127.0.0.1:8080",
                    self.listen
                ),
            ));
        }
        if !(self.public_url.starts_with("http://") || self.public_url.starts_with("https://")) {
            p.push((
                "api.public_url".into(),
                format!("`{}` is not an http(s) URL", self.public_url),
            ));
        }
        for (i, c) in self.clients.iter().enumerate() {
            if c.token.len() < 16 {
                p.push((
                    format!("api.clients[{i}].token"),
                    "is shorter than 16 characters; use a long random token".into(),
                ));
            }
        }
        for (i, t) in self.tokens.iter().enumerate() {
            if t.len() < 16 {
                p.push((
                    format!("api.tokens[{i}]"),
                    "is shorter than 16 characters; use a long random token".into(),
                ));
            }
        }
        p
    }
}

/// Re-plans one borrower at once (the daemon supplies it): a change through
/// the API takes effect before the response, without planning the book.
#[async_trait::async_trait]
pub trait Replan: Send + Sync {
    async fn borrower(
        &self,
        external_id: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<crate::planner::TickReport, crate::store::StoreError>;
}

impl ApiState {
    /// After a change through the API that touched only `borrower`: cancel
    /// what can no longer go and plan what is now due, for them alone, then
    /// wake the dispatcher. Without a re-planner, or if it fails, the daemon
    /// is asked to plan the book instead.
    pub(crate) async fn touched(&self, borrower: &str) {
        let Some(r) = &self.replanner else {
            self.replan.notify_one();
            return;
        };
        match r.borrower(borrower, self.clock.now()).await {
            Ok(report) => {
                tracing::debug!(
                    cancelled = report.cancelled,
                    recorded = report.recorded,
                    "re-planned one borrower after an API change"
                );
                if report.recorded > 0 {
                    self.work.notify_one();
                }
            }
            Err(e) => {
                tracing::warn!(
                    "cannot re-plan the borrower at once ({e}); planning the book instead"
                );
                self.replan.notify_one();
            }
        }
    }
}

/// What handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// Re-plans one borrower after a change (`touched`); `None` outside
    /// the daemon.
    pub replanner: Option<Arc<dyn Replan>>,
    /// Wakes the daemon's dispatcher: new work is due.
    pub work: Arc<tokio::sync::Notify>,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    /// Tokens, sessions and login limits.
    pub access: Arc<access::Access>,
    pub unsubscribe: Arc<crate::signing::Signer>,
    pub pauses: Arc<crate::dispatch::Pauses>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Wakes the daemon to re-plan after a change through the API.
    pub replan: Arc<tokio::sync::Notify>,
    pub default_tz: chrono_tz::Tz,
    pub ready: Arc<AtomicBool>,
    /// The configured providers by name (pause and resume name one; a
    /// callback route answers only for a provider of its kind).
    pub providers: Arc<std::collections::BTreeMap<String, crate::providers::ProviderKind>>,
    /// Twilio providers by name: their auth tokens, to check callbacks.
    pub twilio_tokens: Arc<std::collections::HashMap<String, crate::domain::Secret>>,
    /// `api.public_url`: callbacks are signed over the URL as Twilio saw it.
    pub public_url: String,
    pub stop_words: Arc<crate::compliance::StopWords>,
}

/// A JSON error `{"error": "...", "field": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<String>,
    /// More detail in the body (`problems` of a refused template).
    detail: Option<(&'static str, serde_json::Value)>,
}

impl ApiError {
    pub fn bad(field: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: message.into(),
            field: Some(field.to_owned()),
            detail: None,
        }
    }
    /// 409: the thing changed under the caller.
    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::CONFLICT,
            message: message.into(),
            field: None,
            detail: None,
        }
    }
    /// 422 with a list of problems under `key`.
    pub fn refused(message: impl Into<String>, key: &'static str, v: serde_json::Value) -> Self {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: message.into(),
            field: None,
            detail: Some((key, v)),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            field: None,
            detail: None,
        }
    }
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!("API request failed: {e}");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "internal error; see the daemon's log".into(),
            field: None,
            detail: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = match self.field {
            Some(f) => serde_json::json!({ "error": self.message, "field": f }),
            None => serde_json::json!({ "error": self.message }),
        };
        if let Some((k, v)) = self.detail {
            body[k] = v;
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::internal(e)
    }
}

/// The router: the API's routes and `extra` (the console's), every
/// request's caller resolved first (`access::authenticate`), each route
/// behind its own role check.
pub fn router(state: ApiState) -> axum::Router {
    router_with(state, axum::Router::new(), Vec::new())
}

/// `router` with more routes (the console's) and their documentation.
pub fn router_with(
    state: ApiState,
    extra: axum::Router,
    extra_docs: Vec<routes::RouteDoc>,
) -> axum::Router {
    routes::router(state.clone(), extra, extra_docs)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::audit_changes,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state,
            access::authenticate,
        ))
}

/// Serves until `shutdown`; returns the bound address through `bound`.
pub async fn serve(
    listen: &str,
    app: axum::Router,
    shutdown: CancellationToken,
    bound: tokio::sync::oneshot::Sender<SocketAddr>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let _ = bound.send(addr);
    tracing::info!(%addr, "API listening");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await?;
    Ok(())
}
