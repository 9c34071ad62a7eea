//! Repayment offers after they are made (the dispatcher makes them, see
//! `dispatch/offer.rs`): settling each against the payments on its loan
//! (taken when payments inside its deadline reach its minimum, else expired
//! at the deadline, or void when no message carrying it was ever sent), and
//! posting each taken offer to the lender as a signed event, retried until
//! accepted, so its billing applies the waiver, discount or plan.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::OfferState;
use crate::handoff::HandoffConfig;
use crate::store::{Store, StoreError};

/// A payment made in time may reach duebell late (a nightly payments file):
/// offers are settled again this long after their deadline.
pub const LATE_PAYMENT_GRACE: i64 = 7;

/// Where taken-offer events go: `[offers]`'s url and secret, else the
/// hand-off channel's; `None` when neither is set (offers stay recorded).
pub fn target<'a>(
    offers: &'a HandoffConfig,
    handoff: &'a HandoffConfig,
) -> Option<(&'a str, &'a str)> {
    [offers, handoff]
        .into_iter()
        .find(|c| !c.url.is_empty())
        .map(|c| (c.url.as_str(), c.secret.expose()))
}

/// The JSON body of a taken offer's event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OfferEvent {
    /// `offer_taken`.
    pub event: String,
    pub offer_id: i64,
    pub loan_id: String,
    pub borrower_id: String,
    pub due_date: NaiveDate,
    pub step: String,
    pub kind: String,
    /// The fee waived or the discount (decimal text), if any.
    pub amount: Option<String>,
    pub percent: Option<String>,
    pub min_payment: String,
    pub currency: String,
    pub made_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub taken_at: Option<DateTime<Utc>>,
    pub payment_ids: Vec<String>,
    pub at: DateTime<Utc>,
}

/// What one settling pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub taken: u64,
    pub expired: u64,
    pub void: u64,
}

/// Settles every open offer (and recently closed ones, for late payment
/// files) at `now`.
pub async fn settle(
    store: &dyn Store,
    now: DateTime<Utc>,
    metrics: Option<&crate::metrics::Metrics>,
) -> Result<Settled, StoreError> {
    let mut done = Settled::default();
    for o in store
        .offers_to_settle(now - Duration::days(LATE_PAYMENT_GRACE))
        .await?
    {
        let row = &o.offer;
        let Some((state, at, ids)) =
            crate::domain::settle_offer(&row.terms, row.made_at, o.shown, &o.payments, now)
        else {
            continue;
        };
        if state == row.state {
            continue;
        }
        if store.settle_offer(now, row.id, state, at, &ids).await? {
            tracing::info!(
                offer = row.id,
                loan = %row.loan_id,
                state = state.as_str(),
                "offer settled"
            );
            match state {
                OfferState::Taken => done.taken += 1,
                OfferState::Expired => done.expired += 1,
                OfferState::Void => done.void += 1,
                OfferState::Open => {}
            }
            if let Some(m) = metrics {
                m.inc(
                    "duebell_offers_total",
                    &[("kind", row.terms.kind.as_str()), ("state", state.as_str())],
                    1.0,
                );
            }
        }
    }
    Ok(done)
}

/// Posts every due taken-offer event once. Returns (delivered, failed attempts).
pub async fn post_due(
    store: &dyn Store,
    cfg: &HandoffConfig,
    handoff: &HandoffConfig,
    client: &reqwest::Client,
    now: DateTime<Utc>,
) -> Result<(u64, u64), StoreError> {
    let Some((url, secret)) = target(cfg, handoff) else {
        return Ok((0, 0));
    };
    let (mut ok, mut failed) = (0, 0);
    for o in store.due_offer_events(now).await? {
        let event = OfferEvent {
            event: "offer_taken".into(),
            offer_id: o.id,
            loan_id: o.loan_id.clone(),
            borrower_id: o.borrower_id.clone(),
            due_date: o.due_date,
            step: o.step.clone(),
            kind: o.terms.kind.as_str().to_owned(),
            amount: o.terms.amount.map(|a| a.to_string()),
            percent: o.terms.percent.map(|p| p.to_string()),
            min_payment: o.terms.min_payment.to_string(),
            currency: o.terms.currency.clone(),
            made_at: o.made_at,
            expires_at: o.terms.expires_at,
            taken_at: o.settled_at,
            payment_ids: o.payment_ids.clone(),
            at: now,
        };
        let body = serde_json::to_vec(&event).unwrap_or_default();
        let error = crate::handoff::post_signed(
            client,
            url,
            secret,
            cfg.timeout.get(),
            &format!("offer-{}", o.id),
            now,
            body,
        )
        .await;
        match error {
            None => {
                ok += 1;
                store.finish_offer_event(now, o.id, Ok(())).await?;
            }
            Some(e) => {
                failed += 1;
                let next = crate::handoff::retry_at(now, o.event_attempts, cfg.max_attempts);
                tracing::warn!(offer = o.id, error = %e, retry = next.is_some(), "offer event not accepted");
                store.finish_offer_event(now, o.id, Err((e, next))).await?;
            }
        }
    }
    Ok((ok, failed))
}

/// One line per offer for `plan`, the audit and the timeline:
/// `fee_waiver 30.00 CNY off, pay 1200.00 by 2026-12-06T02:00:00Z: taken`.
pub fn describe(o: &crate::store::OfferRow) -> String {
    let t = &o.terms;
    let off = match (t.amount, t.percent) {
        (_, Some(p)) => format!(" {p}% off"),
        (Some(a), None) => format!(" {a} {} off", t.currency),
        (None, None) => String::new(),
    };
    format!(
        "{}{off}, pay {} {} by {}: {}",
        t.kind.as_str(),
        t.min_payment,
        t.currency,
        t.expires_at.format("%Y-%m-%dT%H:%M:%SZ"),
        o.state.as_str()
    )
}
