//! The HTTP API (axum), JSON in and out. Open: `/healthz`, `/readyz`,
//! `/metrics`, `/openapi.json` and the one-click unsubscribe links (which
//! carry their own signature). Everything under `/v1` needs a bearer token
//! from `api.tokens`, compared in constant time. Client errors are 4xx with
//! a message naming the field; server errors are an opaque 500 with the
//! full chain in the log.

mod book;
mod metrics;
mod operator;
pub mod routes;
mod webhooks;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Deserializer};
use subtle::ConstantTimeEq;
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
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:8080".into(),
            public_url: "http://127.0.0.1:8080".into(),
            tokens: vec![],
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
    pub tokens: Arc<Vec<crate::domain::Secret>>,
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
}

impl ApiError {
    pub fn bad(field: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: message.into(),
            field: Some(field.to_owned()),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            field: None,
        }
    }
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!("API request failed: {e}");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "internal error; see the daemon's log".into(),
            field: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.field {
            Some(f) => serde_json::json!({ "error": self.message, "field": f }),
            None => serde_json::json!({ "error": self.message }),
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::internal(e)
    }
}

/// Bearer-token check for `/v1`.
async fn require_token(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // RFC 7235: the scheme name is case-insensitive.
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        })
        .map(str::trim);
    let Some(presented) = presented else {
        return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], Json(serde_json::json!({"error": "missing bearer token; send Authorization: Bearer <token>"}))).into_response();
    };
    // Compare against every token in constant time, whatever matches.
    let mut ok = subtle::Choice::from(0u8);
    for t in state.tokens.iter() {
        ok |= presented.as_bytes().ct_eq(t.expose().as_bytes());
    }
    if !bool::from(ok) {
        return (
            StatusCode::FORBIDDEN,
            Json(serde_json::json!({"error": "token not accepted"})),
        )
            .into_response();
    }
    next.run(req).await
}

/// The router: open routes plus `/v1` behind the token check.
pub fn router(state: ApiState) -> axum::Router {
    routes::router(state.clone()).layer(axum::middleware::from_fn_with_state(
        state,
        |s, r, n| async move {
            // Only /v1 needs a token; the rest is open by design.
            if r_path_is_v1(&r) {
                require_token(s, r, n).await
            } else {
                n.run(r).await
            }
        },
    ))
}

fn r_path_is_v1(r: &Request) -> bool {
    r.uri().path().starts_with("/v1/") || r.uri().path() == "/v1"
}

/// Serves until `shutdown`; returns the bound address through `bound`.
pub async fn serve(
    listen: &str,
    state: ApiState,
    shutdown: CancellationToken,
    bound: tokio::sync::oneshot::Sender<SocketAddr>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let _ = bound.send(addr);
    tracing::info!(%addr, "API listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}
