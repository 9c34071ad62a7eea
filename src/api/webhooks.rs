//! Provider callbacks: Twilio status and inbound SMS (signed; checked with
//! the provider's auth token), Aliyun and Tencent delivery reports. What
//! each provider's body means is read by its adapter (`providers::*`); this
//! file only checks, applies and answers.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{ApiError, ApiState};
use crate::domain::Channel;
use crate::providers::http::Report;
use crate::providers::{aliyun, tencent, twilio, ProviderKind};

/// A refused callback: counted by kind and why, logged, answered 404 (a
/// route that does not exist for a stranger) or 403 (a bad signature).
fn refused(s: &ApiState, kind: &str, why: &'static str, status: StatusCode) -> Response {
    s.metrics.inc(
        "duebell_callbacks_refused_total",
        &[("kind", kind), ("why", why)],
        1.0,
    );
    tracing::warn!(kind, why, "provider callback refused");
    (
        status,
        Json(serde_json::json!({ "error": "no such callback" })),
    )
        .into_response()
}

/// Whether `provider` is configured with this kind.
fn configured(s: &ApiState, provider: &str, kind: ProviderKind) -> bool {
    s.providers.get(provider) == Some(&kind)
}

fn twilio_form(
    s: &ApiState,
    provider: &str,
    path: &str,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<Vec<(String, String)>, Box<Response>> {
    let token = match s.twilio_tokens.get(provider) {
        Some(t) if configured(s, provider, ProviderKind::Twilio) => t,
        _ => {
            return Err(Box::new(refused(
                s,
                "twilio",
                "unknown provider",
                StatusCode::NOT_FOUND,
            )))
        }
    };
    let params = twilio::form(body);
    let presented = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let url = format!("{}{path}", s.public_url.trim_end_matches('/'));
    if !twilio::verify(token.expose(), &url, &params, presented) {
        return Err(Box::new(refused(
            s,
            "twilio",
            "bad signature",
            StatusCode::FORBIDDEN,
        )));
    }
    Ok(params)
}

pub(super) async fn twilio_status(
    State(s): State<ApiState>,
    Path(provider): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let ours = query.get("m").map(String::as_str);
    let path = twilio::status_path(&provider, ours);
    let params = match twilio_form(&s, &provider, &path, &headers, &body) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let report = match twilio::read_status(&provider, &params, ours) {
        Ok(Some(report)) => report,
        Ok(None) => return (StatusCode::OK, "").into_response(),
        Err(field) => {
            return ApiError::bad(field, "MessageSid and MessageStatus are required")
                .into_response()
        }
    };
    match s
        .store
        .receipt(
            s.clock.now(),
            &provider,
            report.ours,
            &report.reference,
            report.delivered,
            &report.detail,
        )
        .await
    {
        Ok(_) => (StatusCode::OK, "").into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

pub(super) async fn twilio_inbound(
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
    let Some((from, text)) = twilio::read_inbound(&params) else {
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

/// Applies a provider's batch of delivery reports (a JSON array), each read
/// by the provider's adapter, after checking that `provider` is configured
/// with this kind and that the path carries its callback token (these
/// providers sign nothing). A report that matches no message the provider
/// sent is ignored and counted. Providers resend reports, so a repeat
/// changes nothing.
async fn apply_reports(
    s: &ApiState,
    kind: ProviderKind,
    provider: &str,
    token: &str,
    body: &[u8],
    read: fn(&serde_json::Value) -> Option<Report>,
) -> Result<(), Response> {
    let kind_name = format!("{kind:?}").to_lowercase();
    if !configured(s, provider, kind) {
        return Err(refused(
            s,
            &kind_name,
            "unknown provider",
            StatusCode::NOT_FOUND,
        ));
    }
    if !s.unsubscribe.verify_callback(provider, token) {
        return Err(refused(s, &kind_name, "bad token", StatusCode::NOT_FOUND));
    }
    let reports: Vec<serde_json::Value> = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad("body", format!("expected a JSON array of reports: {e}")).into_response()
    })?;
    for report in reports.iter().filter_map(read) {
        let detail = format!("{provider} receipt: {}", report.detail);
        let applied = s
            .store
            .receipt(
                s.clock.now(),
                provider,
                report.ours,
                &report.reference,
                report.delivered,
                &detail,
            )
            .await
            .map_err(|e| ApiError::internal(e).into_response())?;
        if !applied {
            s.metrics.inc(
                "duebell_receipts_unmatched_total",
                &[("provider", provider)],
                1.0,
            );
        }
    }
    Ok(())
}

/// Aliyun SmsReport, answered as Aliyun expects.
pub(super) async fn aliyun_report(
    State(s): State<ApiState>,
    Path((provider, token)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let (read, ack) = (aliyun::read_report, aliyun::report_ack);
    reports(
        &s,
        ProviderKind::Aliyun,
        &provider,
        &token,
        &body,
        read,
        ack,
    )
    .await
}

/// Tencent delivery callback, answered as Tencent expects.
pub(super) async fn tencent_report(
    State(s): State<ApiState>,
    Path((provider, token)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let (read, ack) = (tencent::read_report, tencent::report_ack);
    reports(
        &s,
        ProviderKind::Tencent,
        &provider,
        &token,
        &body,
        read,
        ack,
    )
    .await
}

/// A report batch applied, answered with the provider's own acknowledgement.
async fn reports(
    s: &ApiState,
    kind: ProviderKind,
    provider: &str,
    token: &str,
    body: &[u8],
    read: fn(&serde_json::Value) -> Option<Report>,
    ack: fn() -> serde_json::Value,
) -> Response {
    match apply_reports(s, kind, provider, token, body, read).await {
        Ok(()) => Json(ack()).into_response(),
        Err(r) => r,
    }
}
