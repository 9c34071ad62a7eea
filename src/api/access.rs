//! Who is calling, and may they. A request to `/v1` or `/console` carries
//! either a bearer token (`api.tokens`: admin; `api.clients`: the role
//! given) or the console's session cookie; either becomes a `Principal`
//! with a role, and each route names the role it needs, so scripts and
//! staff meet the same checks. A cookie-borne request that changes
//! anything must also carry the session's CSRF token (`X-CSRF-Token`).
//! Passwords are argon2id hashes; logins are limited per account and per
//! address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiState;

/// The session cookie's name.
pub const COOKIE: &str = "duebell_session";

/// A console role. Editors change templates and contact settings;
/// compliance staff see borrowers, bodies and the audit, and place holds
/// and opt-outs; admins do everything, including operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Editor,
    Compliance,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Compliance => "compliance",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::Viewer, Role::Editor, Role::Compliance, Role::Admin]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nobody needs to be known (health, metrics, unsubscribe links,
    /// provider callbacks that carry their own signature).
    Open,
    /// Any role.
    Read,
    /// Editor or admin.
    Edit,
    /// Compliance or admin.
    Compliance,
    /// Admin only.
    Admin,
}

impl Need {
    pub fn allows(self, role: Role) -> bool {
        match self {
            Need::Open | Need::Read => true,
            Need::Edit => matches!(role, Role::Editor | Role::Admin),
            Need::Compliance => matches!(role, Role::Compliance | Role::Admin),
            Need::Admin => role == Role::Admin,
        }
    }

    /// For `/openapi.json`: the roles allowed.
    pub fn roles(self) -> &'static str {
        match self {
            Need::Open => "open",
            Need::Read => "any role",
            Need::Edit => "editor, admin",
            Need::Compliance => "compliance, admin",
            Need::Admin => "admin",
        }
    }
}

/// The caller of a request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The account name, or `token:NAME` for an API client.
    pub name: String,
    pub role: Role,
    /// The session's CSRF token (None for a bearer token).
    pub csrf: Option<String>,
    /// The account's chosen console language.
    pub locale: Option<String>,
}

/// `[api.clients]`: a bearer token with a role.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub name: String,
    pub role: Role,
    pub token: crate::domain::Secret,
}

/// `[console]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the console at `/console/` on `api.listen`.
    pub enabled: bool,
    /// A session unused this long ends.
    pub session_idle: crate::domain::ConfigDuration,
    /// Failed logins allowed per account, and per client address, within
    /// `login_window`, before logins are refused (429) until it passes.
    pub login_failures_per_account: u32,
    pub login_failures_per_address: u32,
    pub login_window: crate::domain::ConfigDuration,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: true,
            session_idle: crate::domain::ConfigDuration(Duration::from_secs(30 * 60)),
            login_failures_per_account: 5,
            login_failures_per_address: 20,
            login_window: crate::domain::ConfigDuration(Duration::from_secs(15 * 60)),
        }
    }
}

/// An argon2id hash of `password` (PHC string), with a fresh salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt_bytes =
        crate::signing::random_key().map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    let salt = SaltString::encode_b64(&salt_bytes[..16]).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches the PHC `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Hex SHA-256: how a session token is stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh random token (URL-safe base64 of 32 bytes).
pub fn fresh_token() -> std::io::Result<String> {
    use base64::Engine;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(crate::signing::random_key()?))
}

/// The session cookie's value in a request, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// Failed logins, by account and by address, within a sliding window.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, Vec<DateTime<Utc>>>>,
}

impl LoginLimiter {
    fn recent(&self, key: &str, now: DateTime<Utc>, window: Duration) -> usize {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let since = now - chrono::Duration::from_std(window).unwrap_or_default();
        let Some(v) = map.get_mut(key) else { return 0 };
        v.retain(|t| *t >= since);
        let n = v.len();
        if n == 0 {
            map.remove(key);
        }
        n
    }

    /// Which limit, if any, refuses a login now.
    pub fn refused(
        &self,
        cfg: &ConsoleConfig,
        now: DateTime<Utc>,
        account: &str,
        addr: Option<IpAddr>,
    ) -> Option<&'static str> {
        let w = cfg.login_window.get();
        if self.recent(&format!("u:{account}"), now, w) >= cfg.login_failures_per_account as usize {
            return Some("account");
        }
        let addr = addr?;
        (self.recent(&format!("a:{addr}"), now, w) >= cfg.login_failures_per_address as usize)
            .then_some("address")
    }

    pub fn failed(&self, now: DateTime<Utc>, account: &str, addr: Option<IpAddr>) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        // Guessed names are keys too: past a bound, forget the oldest day.
        if map.len() > 10_000 {
            let since = now - chrono::Duration::days(1);
            map.retain(|_, v| v.last().is_some_and(|t| *t >= since));
        }
        map.entry(format!("u:{account}")).or_default().push(now);
        if let Some(a) = addr {
            map.entry(format!("a:{a}")).or_default().push(now);
        }
    }

    pub fn succeeded(&self, account: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&format!("u:{account}"));
    }
}

/// The client's address, when the server recorded it.
pub fn client_addr(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

fn refuse(status: StatusCode, message: &str) -> Response {
    let mut r = (status, Json(serde_json::json!({ "error": message }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    r
}

/// A bearer token was presented and matched no client.
#[derive(Debug, Clone, Copy)]
struct BadToken;

/// Resolves the caller of every request into a `Principal` extension (when
/// there is one), and refuses a cookie-borne change without the CSRF token.
/// Whether a route needs a caller at all is `require`'s decision.
pub async fn authenticate(
    axum::extract::State(state): axum::extract::State<ApiState>,
    mut req: Request,
    next: Next,
) -> Response {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // RFC 7235: the scheme name is case-insensitive.
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim().to_owned())
        });
    if let Some(presented) = bearer {
        match state.access.principal_of_token(&presented) {
            Some(p) => {
                req.extensions_mut().insert(p);
            }
            // Refused by `require` on a route that needs a caller; open
            // routes (metrics, callbacks) do not care.
            None => {
                req.extensions_mut().insert(BadToken);
            }
        }
    } else if let Some(cookie) = session_cookie(req.headers()) {
        let now = state.clock.now();
        let idle =
            chrono::Duration::from_std(state.access.console.session_idle.get()).unwrap_or_default();
        match state
            .store
            .db()
            .session(now, &token_hash(&cookie), now - idle)
            .await
        {
            Ok(Some(s)) => {
                // Logging in again (as someone else) needs no token: the
                // login page has none, and a login changes no data.
                let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
                    || (*req.method() == Method::POST && req.uri().path() == "/v1/session");
                if !safe {
                    let sent = req
                        .headers()
                        .get("x-csrf-token")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    if !bool::from(sent.as_bytes().ct_eq(s.csrf.as_bytes())) {
                        state
                            .metrics
                            .inc("duebell_console_csrf_refused_total", &[], 1.0);
                        return refuse(
                            StatusCode::FORBIDDEN,
                            "missing or wrong CSRF token; reload the page and try again",
                        );
                    }
                }
                let role = Role::parse(&s.user.role).unwrap_or(Role::Viewer);
                req.extensions_mut().insert(Principal {
                    name: s.user.name,
                    role,
                    csrf: Some(s.csrf),
                    locale: s.user.locale,
                });
            }
            // An expired or unknown cookie is no caller at all.
            Ok(None) => {}
            Err(e) => return super::ApiError::internal(e).into_response(),
        }
    }
    next.run(req).await
}

/// The route layer that refuses a caller without the role `need` names:
/// 401 without a caller, 403 with one whose role is not enough.
pub async fn require(need: Need, req: Request, next: Next) -> Response {
    if need == Need::Open {
        return next.run(req).await;
    }
    if req.extensions().get::<BadToken>().is_some() {
        return refuse(StatusCode::FORBIDDEN, "token not accepted");
    }
    let Some(p) = req.extensions().get::<Principal>() else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "missing bearer token or session; send Authorization: Bearer <token>, or log in at /console/",
        );
    };
    if !need.allows(p.role) {
        return refuse(
            StatusCode::FORBIDDEN,
            &format!(
                "`{}` has the role {}; this needs {}",
                p.name,
                p.role.as_str(),
                need.roles()
            ),
        );
    }
    next.run(req).await
}

/// Tokens, sessions and the login limiter, shared by the handlers.
#[derive(Debug, Default)]
pub struct Access {
    /// (name, role, token).
    pub tokens: Vec<(String, Role, crate::domain::Secret)>,
    pub console: ConsoleConfig,
    pub logins: LoginLimiter,
}

impl Access {
    pub fn new(
        admin_tokens: &[crate::domain::Secret],
        clients: &[ClientConfig],
        console: ConsoleConfig,
    ) -> Access {
        let mut tokens: Vec<_> = admin_tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("token:{}", i + 1), Role::Admin, t.clone()))
            .collect();
        tokens.extend(
            clients
                .iter()
                .map(|c| (format!("token:{}", c.name), c.role, c.token.clone())),
        );
        Access {
            tokens,
            console,
            logins: LoginLimiter::default(),
        }
    }

    /// The client a bearer token belongs to, compared in constant time
    /// against every token whatever matches.
    fn principal_of_token(&self, presented: &str) -> Option<Principal> {
        let mut found = None;
        for (name, role, t) in &self.tokens {
            if bool::from(presented.as_bytes().ct_eq(t.expose().as_bytes())) && found.is_none() {
                found = Some(Principal {
                    name: name.clone(),
                    role: *role,
                    csrf: None,
                    locale: None,
                });
            }
        }
        found
    }
}

/// The change log for the API's own changes made by a known caller (holds,
/// opt-outs, pauses, bounce lifts): who, when, the route and the request
/// body, recorded after the change succeeded. Loan and payment feeds are
/// not recorded here (they are the book, not edits); the console's own
/// routes record richer entries themselves.
pub async fn audit_changes(
    axum::extract::State(state): axum::extract::State<ApiState>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_owned();
    let recorded = [
        "/v1/holds",
        "/v1/opt-outs",
        "/v1/pause",
        "/v1/resume",
        "/v1/bounces/lift",
    ];
    let Some(who) = req.extensions().get::<Principal>().cloned() else {
        return next.run(req).await;
    };
    if req.method() == Method::GET || !recorded.iter().any(|p| path.starts_with(p)) {
        return next.run(req).await;
    }
    let method = req.method().clone();
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1024 * 1024).await else {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "the body is too large");
    };
    let response = next
        .run(Request::from_parts(
            parts,
            axum::body::Body::from(bytes.clone()),
        ))
        .await;
    if response.status().is_success() {
        let change = crate::store::ChangeRecord {
            id: 0,
            at: state.clock.now(),
            actor: who.name,
            kind: path
                .trim_start_matches("/v1/")
                .split('/')
                .next()
                .unwrap_or("")
                .to_owned(),
            subject: path.clone(),
            before: None,
            after: Some(String::from_utf8_lossy(&bytes).into_owned()),
            summary: format!("{method} {path}"),
        };
        if let Err(e) = state.store.db().record_change(&change).await {
            tracing::error!("cannot record a change in the change log: {e}");
        }
    }
    response
}
