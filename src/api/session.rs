//! Logging in and out of the console: `POST /v1/session` checks a password
//! (within the login limits) and sets the session cookie; `GET` says who
//! the caller is and gives the CSRF token; `DELETE` logs out.

use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;

use super::access::{self, Principal, COOKIE};
use super::{ApiError, ApiState};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    name: String,
    password: String,
}

/// `POST /v1/session`.
pub async fn login(State(s): State<ApiState>, req: Request) -> Result<Response, ApiError> {
    let addr = access::client_addr(&req);
    let body = to_bytes(req.into_body(), 64 * 1024)
        .await
        .map_err(|_| ApiError::bad("body", "the body is too large"))?;
    let login: Login = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad(
            "body",
            format!("expected {{\"name\": ..., \"password\": ...}}: {e}"),
        )
    })?;
    let now = s.clock.now();
    let name = login.name.trim();
    if let Some(by) = s.access.logins.refused(&s.access.console, now, name, addr) {
        tracing::warn!(account = %name, by, "console login refused: too many failures");
        s.metrics.inc(
            "duebell_console_logins_total",
            &[("outcome", "locked")],
            1.0,
        );
        let retry = s.access.console.login_window.get().as_secs().to_string();
        return Ok((
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry)],
            Json(serde_json::json!({
                "error": format!("too many failed logins for this {by}; wait and try again, or ask an admin (`duebell users passwd`)")
            })),
        )
            .into_response());
    }
    let db = s.store.db();
    let user = db.user(name).await?;
    // Hash even for an unknown name, so timing does not tell names apart.
    let hash = match &user {
        Some(u) => u.password_hash.as_str(),
        None => dummy_hash(),
    };
    let password = login.password;
    let hash_owned = hash.to_owned();
    let ok = tokio::task::spawn_blocking(move || access::verify_password(&password, &hash_owned))
        .await
        .unwrap_or(false);
    let user = match user {
        Some(u) if ok && !u.disabled => u,
        other => {
            s.access.logins.failed(now, name, addr);
            let reason = match other {
                Some(u) if u.disabled => "disabled",
                Some(_) => "password",
                None => "unknown_account",
            };
            tracing::warn!(account = %name, reason, "console login failed");
            s.metrics
                .inc("duebell_console_logins_total", &[("outcome", reason)], 1.0);
            return Ok((
                StatusCode::UNAUTHORIZED,
                Json(serde_json::json!({ "error": "wrong name or password, or the account is disabled" })),
            )
                .into_response());
        }
    };
    s.access.logins.succeeded(name);
    let token = access::fresh_token().map_err(ApiError::internal)?;
    let csrf = access::fresh_token().map_err(ApiError::internal)?;
    let idle = chrono::Duration::from_std(s.access.console.session_idle.get()).unwrap_or_default();
    db.end_idle_sessions(now - idle).await?;
    db.add_session(now, &access::token_hash(&token), &user.name, &csrf)
        .await?;
    s.metrics
        .inc("duebell_console_logins_total", &[("outcome", "ok")], 1.0);
    tracing::info!(account = %user.name, role = %user.role, "console login");
    let secure = if s.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}");
    Ok((
        StatusCode::OK,
        [(header::SET_COOKIE, cookie)],
        Json(serde_json::json!({
            "name": user.name, "role": user.role, "csrf": csrf, "locale": user.locale,
        })),
    )
        .into_response())
}

/// An argon2id hash of a password nobody has, checked when the account
/// does not exist.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| access::hash_password("no account has this password").unwrap_or_default())
}

/// `GET /v1/session`.
pub async fn whoami(Extension(p): Extension<Principal>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "name": p.name, "role": p.role.as_str(), "csrf": p.csrf, "locale": p.locale,
    }))
}

/// `DELETE /v1/session`.
pub async fn logout(State(s): State<ApiState>, req: Request) -> Result<Response, ApiError> {
    if let Some(cookie) = access::session_cookie(req.headers()) {
        s.store
            .db()
            .end_session(&access::token_hash(&cookie))
            .await?;
    }
    Ok((
        StatusCode::OK,
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
        )],
        Json(serde_json::json!({ "ok": true })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocaleBody {
    locale: String,
}

/// `PUT /v1/session/locale`: the console's language for this account.
pub async fn set_locale(
    State(s): State<ApiState>,
    Extension(p): Extension<Principal>,
    Json(b): Json<LocaleBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !matches!(b.locale.as_str(), "en" | "zh-CN") {
        return Err(ApiError::bad(
            "locale",
            "the console speaks `en` and `zh-CN`",
        ));
    }
    if p.csrf.is_none() {
        return Err(ApiError::bad(
            "locale",
            "only a console session has a language",
        ));
    }
    s.store.db().set_locale(&p.name, &b.locale).await?;
    Ok(Json(serde_json::json!({ "locale": b.locale })))
}
