//! The book through the API: loans, payments, holds, opt-outs and a
//! borrower's timeline.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;

use super::{ApiError, ApiState};
use crate::domain::{parse_date, parse_instant, Channel, HoldKind, LoanId, PaymentId};
use crate::store::{LoanBookRow, MessageQuery, PaymentRow, RowOutcome};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LoanBody {
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

pub(super) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let msg = e.to_string();
        let field = msg.split('`').nth(1).unwrap_or("body").to_owned();
        ApiError::bad(&field, format!("invalid JSON body: {msg}"))
    })
}

pub(super) async fn upsert_loan(
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
    let borrower_id = borrower.id.as_str().to_owned();
    let mut tx = s.store.begin_import(s.clock.now()).await?;
    let outcome = tx
        .upsert_loans(&[LoanBookRow {
            line: 0,
            borrower,
            loan,
        }])
        .await?;
    tx.commit().await?;
    s.touched(&borrower_id).await;
    outcome_response(&outcome[0])
}

pub(super) fn outcome_response(o: &RowOutcome) -> Result<Response, ApiError> {
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
pub(super) struct PaymentBody {
    payment_id: String,
    loan_id: String,
    amount: String,
    paid_at: String,
}

pub(super) async fn payment(
    State(s): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
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
    let loan = payment.loan.clone();
    let mut tx = s.store.begin_import(s.clock.now()).await?;
    let outcome = tx
        .upsert_payments(&[PaymentRow { line: 0, payment }])
        .await?;
    tx.commit().await?;
    // The payment's messages are cancelled before the answer goes back.
    match s.store.loan(&loan).await? {
        Some(l) => s.touched(&l.borrower_id).await,
        None => s.replan.notify_one(),
    }
    outcome_response(&outcome[0])
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HoldBody {
    #[serde(default)]
    borrower_id: Option<String>,
    #[serde(default)]
    loan_id: Option<String>,
    kind: String,
    #[serde(default)]
    until: Option<String>,
}

pub(super) async fn add_hold(
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
            let owner = match (&b.borrower_id, &b.loan_id) {
                (Some(borrower), _) => Some(borrower.clone()),
                (None, Some(loan)) => match LoanId::parse(loan) {
                    Ok(loan) => s.store.loan(&loan).await?.map(|l| l.borrower_id),
                    Err(_) => None,
                },
                (None, None) => None,
            };
            match owner {
                Some(borrower) => s.touched(&borrower).await,
                None => s.replan.notify_one(),
            }
            Ok((
                StatusCode::CREATED,
                Json(serde_json::json!({"hold_id": id})),
            )
                .into_response())
        }
        None => Err(ApiError::not_found("no such borrower or loan")),
    }
}

pub(super) async fn clear_hold(
    State(s): State<ApiState>,
    Path(hold_id): Path<String>,
) -> Result<Response, ApiError> {
    let hold_id: i64 = hold_id.parse().map_err(|_| {
        ApiError::bad(
            "hold_id",
            format!("`{hold_id}` is not a hold id; use the number POST /v1/holds answered"),
        )
    })?;
    if s.store.clear_hold(s.clock.now(), hold_id).await? {
        s.replan.notify_one();
        Ok(Json(serde_json::json!({"result": "cleared"})).into_response())
    } else {
        Err(ApiError::not_found(format!("no active hold {hold_id}")))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OptBody {
    borrower_id: String,
    channel: String,
}

pub(super) async fn opt(s: ApiState, body: &[u8], out: bool) -> Result<Response, ApiError> {
    let b: OptBody = json_body(body)?;
    let channel = Channel::parse(&b.channel).map_err(|e| ApiError::bad("channel", e.0))?;
    let source = if out { "api opt-out" } else { "api opt-in" };
    if s.store
        .set_opt_out(s.clock.now(), &b.borrower_id, channel, out, source)
        .await?
    {
        s.touched(&b.borrower_id).await;
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

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LiftBody {
    channel: String,
    address: String,
}

pub(super) async fn lift_bounce(
    State(s): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let b: LiftBody = json_body(&body)?;
    let channel = Channel::parse(&b.channel).map_err(|e| ApiError::bad("channel", e.0))?;
    let address = match channel {
        Channel::Email => crate::domain::EmailAddress::parse(&b.address)
            .map_err(|e| ApiError::bad("address", e.0))?
            .as_str()
            .to_owned(),
        Channel::Sms => crate::domain::PhoneNumber::parse(&b.address)
            .map_err(|e| ApiError::bad("address", e.0))?
            .as_str()
            .to_owned(),
    };
    let lifted = s
        .store
        .lift_bounce(s.clock.now(), channel, &address)
        .await?;
    if lifted == 0 {
        return Err(ApiError::not_found(format!(
            "no {channel} contact point with that address is suppressed by a bounce"
        )));
    }
    tracing::info!(channel = %channel, contact_points = lifted, "bounce suppression lifted");
    s.replan.notify_one();
    Ok(Json(serde_json::json!({"result": "lifted", "contact_points": lifted})).into_response())
}

pub(super) async fn opt_out(
    State(s): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    opt(s, &body, true).await
}

pub(super) async fn opt_in(
    State(s): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    opt(s, &body, false).await
}

pub(super) async fn timeline(
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
    let offers: Vec<serde_json::Value> = s
        .store
        .offers(Some(&borrower_id))
        .await?
        .iter()
        .map(|o| {
            let mut v = serde_json::to_value(o).unwrap_or_default();
            v["summary"] = crate::offers::describe(o).into();
            v
        })
        .collect();
    // Bounces and complaints read from bounce mailboxes, address masked.
    let bounces: Vec<serde_json::Value> = s
        .store
        .bounces(&borrower_id)
        .await?
        .iter()
        .map(|b| {
            let mut v = serde_json::to_value(b).unwrap_or_default();
            v["address"] = crate::domain::mask_email(&b.address).into();
            v
        })
        .collect();
    Ok(Json(serde_json::json!({
        "borrower_id": borrower_id,
        "messages": out,
        "offers": offers,
        "bounces": bounces,
    }))
    .into_response())
}

pub(super) fn masked(m: &crate::store::MessageView) -> serde_json::Value {
    let mut v = serde_json::to_value(m).unwrap_or_default();
    if let Some(a) = &m.address {
        v["address"] = serde_json::Value::String(match m.channel {
            Channel::Sms => crate::domain::mask_phone_text(a),
            Channel::Email => crate::domain::mask_email(a),
        });
    }
    v
}
