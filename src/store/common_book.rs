//! Shared `Store` methods (see `shared.rs`): opt-outs and opt-ins, holds,
//! deployment secrets.

use chrono::{DateTime, NaiveDate, Utc};

use super::backend::{Arg, Backend, Conn, DbRow};
use super::{from_millis, to_millis, StoreError};

pub(super) async fn set_opt_out<B: Backend>(
    store: &B,
    now: DateTime<Utc>,
    borrower: &str,
    channel: crate::domain::Channel,
    out: bool,
    source: &str,
) -> Result<bool, StoreError> {
    let now_ms = to_millis(now);
    let text = if out {
        "UPDATE contact_points SET opted_out_at = COALESCE(opted_out_at, ?), opt_out_source = ?, updated_at = ?
              WHERE active = 1 AND channel = ? AND borrower_id = (SELECT id FROM borrowers WHERE external_id = ?)"
    } else {
        "UPDATE contact_points SET opted_out_at = NULL, opt_out_source = ?, updated_at = ?
              WHERE active = 1 AND channel = ? AND borrower_id = (SELECT id FROM borrowers WHERE external_id = ?) AND ? IS NOT NULL"
    };
    let args = if out {
        [
            Arg::from(now_ms),
            Arg::from(source),
            Arg::from(now_ms),
            Arg::from(channel.as_str()),
            Arg::from(borrower),
        ]
    } else {
        [
            Arg::from(source),
            Arg::from(now_ms),
            Arg::from(channel.as_str()),
            Arg::from(borrower),
            Arg::from(now_ms),
        ]
    };
    Ok(store.reader().await?.execute(text, &args).await? > 0)
}

pub(super) async fn opt_out_address<B: Backend>(
    store: &B,
    now: DateTime<Utc>,
    channel: crate::domain::Channel,
    address: &str,
    source: &str,
) -> Result<u64, StoreError> {
    let now_ms = to_millis(now);
    let r = store.reader().await?.execute("UPDATE contact_points SET opted_out_at = COALESCE(opted_out_at, ?), opt_out_source = COALESCE(opt_out_source, ?), updated_at = ?
              WHERE channel = ? AND address = ?", &[Arg::from(now_ms), Arg::from(source), Arg::from(now_ms), Arg::from(channel.as_str()), Arg::from(address)]).await?;
    Ok(r)
}

pub(super) async fn add_hold<B: Backend>(
    store: &B,
    now: DateTime<Utc>,
    borrower: Option<&str>,
    loan: Option<&str>,
    kind: crate::domain::HoldKind,
    until: Option<NaiveDate>,
) -> Result<Option<i64>, StoreError> {
    let (b, l): (Option<i64>, Option<i64>) = match (borrower, loan) {
        (_, Some(loan)) => (None, id_by_external(store, "loans", loan).await?),
        (Some(b), None) => (id_by_external(store, "borrowers", b).await?, None),
        (None, None) => (None, None),
    };
    if b.is_none() && l.is_none() {
        return Ok(None);
    }
    let id: i64 = store.reader().await?.fetch_one("INSERT INTO holds (borrower_id, loan_id, kind, until_date, created_at) VALUES (?, ?, ?, ?, ?) RETURNING id", &[Arg::from(b), Arg::from(l), Arg::from(kind.as_str()), Arg::from(until.as_ref().map(super::codec::day)), Arg::from(to_millis(now))]).await?.get(0);
    Ok(Some(id))
}

pub(super) async fn clear_hold<B: Backend>(
    store: &B,
    now: DateTime<Utc>,
    id: i64,
) -> Result<bool, StoreError> {
    let r = store
        .reader()
        .await?
        .execute(
            "UPDATE holds SET cleared_at = ? WHERE id = ? AND cleared_at IS NULL",
            &[Arg::from(to_millis(now)), Arg::from(id)],
        )
        .await?;
    Ok(r > 0)
}

pub(super) async fn opt_out_message_contact<B: Backend>(
    store: &B,
    now: DateTime<Utc>,
    message_id: i64,
    source: &str,
) -> Result<bool, StoreError> {
    let now_ms = to_millis(now);
    let r = store.reader().await?.execute("UPDATE contact_points SET opted_out_at = ?, opt_out_source = ?, updated_at = ?
              WHERE id = (SELECT contact_point_id FROM messages WHERE id = ?) AND opted_out_at IS NULL", &[Arg::from(now_ms), Arg::from(source), Arg::from(now_ms), Arg::from(message_id)]).await?;
    Ok(r > 0)
}

pub(super) async fn opt_in_address<B: Backend>(
    store: &B,
    now: DateTime<Utc>,
    channel: crate::domain::Channel,
    address: &str,
    source: &str,
) -> Result<u64, StoreError> {
    let now_ms = to_millis(now);
    let r = store.reader().await?.execute("UPDATE contact_points SET opted_out_at = NULL, opt_out_source = ?, updated_at = ? WHERE channel = ? AND address = ? AND opted_out_at IS NOT NULL", &[Arg::from(source), Arg::from(now_ms), Arg::from(channel.as_str()), Arg::from(address)]).await?;
    Ok(r)
}

pub(super) async fn secret<B: Backend>(
    store: &B,
    name: &str,
    fresh: &[u8],
    now: DateTime<Utc>,
) -> Result<Vec<u8>, StoreError> {
    // Insert-if-absent, then read: concurrent first starts agree.
    store.reader().await?.execute("INSERT INTO settings (name, value, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING", &[Arg::from(name), Arg::from(fresh), Arg::from(to_millis(now))]).await?;
    Ok(store
        .reader()
        .await?
        .fetch_one(
            "SELECT value FROM settings WHERE name = ?",
            &[Arg::from(name)],
        )
        .await?
        .get(0))
}

pub(super) async fn lift_bounce<B: Backend>(
    store: &B,
    now: DateTime<Utc>,
    channel: crate::domain::Channel,
    address: &str,
) -> Result<u64, StoreError> {
    let mut tx = store.begin_write().await?;
    let r = tx
        .execute(
            "UPDATE contact_points SET invalid_at = NULL, invalid_reason = NULL, updated_at = ?
              WHERE channel = ? AND address = ? AND invalid_at IS NOT NULL",
            &[
                Arg::from(to_millis(now)),
                Arg::from(channel.as_str()),
                Arg::from(address),
            ],
        )
        .await?;
    // Soft bounces before the lift no longer count towards the limit.
    tx.execute(
        "UPDATE bounces SET lifted_at = ? WHERE channel = ? AND address = ? AND lifted_at IS NULL",
        &[
            Arg::from(to_millis(now)),
            Arg::from(channel.as_str()),
            Arg::from(address),
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(r)
}

pub(super) async fn offer_for<B: Backend>(
    store: &B,
    now: DateTime<Utc>,
    loan: i64,
    due_date: NaiveDate,
    step: &str,
    terms: &crate::domain::OfferTerms,
) -> Result<super::OfferRow, StoreError> {
    let now_ms = to_millis(now);
    let due = super::codec::day(&due_date);
    // Insert-if-absent, then read: the step's other channel, a retry or
    // another instance all get the terms made first.
    store.reader().await?.execute("INSERT INTO offers (loan_id, due_date, step, kind, amount, percent, min_payment, currency, made_at, expires_at, state, created_at, updated_at)
              VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'open', ?, ?) ON CONFLICT (loan_id, due_date, step) DO NOTHING", &[Arg::from(loan), Arg::from(&due), Arg::from(step), Arg::from(terms.kind.as_str()), Arg::from(terms.amount.map(|a| a.to_string())), Arg::from(terms.percent.map(|p| p.to_string())), Arg::from(terms.min_payment.to_string()), Arg::from(&terms.currency), Arg::from(now_ms), Arg::from(to_millis(terms.expires_at)), Arg::from(now_ms), Arg::from(now_ms)]).await?;
    let row = store
        .reader()
        .await?
        .fetch_one(
            &format!(
                "{} {} WHERE o.loan_id = ? AND o.due_date = ? AND o.step = ?",
                super::common_book::OFFER_COLUMNS,
                super::common_book::OFFER_FROM
            ),
            &[Arg::from(loan), Arg::from(&due), Arg::from(step)],
        )
        .await?;
    super::common_book::offer_row(&row)
}

pub(super) async fn offers_to_settle<B: Backend>(
    store: &B,
    since: DateTime<Utc>,
) -> Result<Vec<super::OfferToSettle>, StoreError> {
    // Two queries whatever the number of offers: the offers with whether
    // a message carrying each was sent, then every payment inside any of
    // their windows.
    let which = "(o.state = 'open' OR (o.state IN ('expired', 'void') AND o.expires_at >= ?))";
    let rows = store.reader().await?.fetch(&format!(
            "{}, EXISTS (SELECT 1 FROM message_loans ml JOIN messages m ON m.id = ml.message_id
                  WHERE ml.loan_id = o.loan_id AND ml.due_date = o.due_date AND ml.step = o.step AND m.state IN ('sent', 'delivered'))
              {} WHERE {which} ORDER BY o.id",
            super::common_book::OFFER_COLUMNS,
            super::common_book::OFFER_FROM
        ), &[Arg::from(to_millis(since))]).await?;
    let mut out = Vec::with_capacity(rows.len());
    let mut by_loan: std::collections::HashMap<i64, Vec<usize>> = Default::default();
    for row in &rows {
        let offer = super::common_book::offer_row(row)?;
        by_loan.entry(offer.loan_pk).or_default().push(out.len());
        out.push(super::OfferToSettle {
            offer,
            shown: row.try_get::<bool>(18)?,
            payments: Vec::new(),
        });
    }
    if out.is_empty() {
        return Ok(out);
    }
    let payments = store.reader().await?.fetch(&format!(
            "SELECT DISTINCT p.loan_id, p.external_id, p.amount, p.paid_at FROM payments p JOIN offers o ON o.loan_id = p.loan_id
              WHERE {which} AND p.paid_at >= o.made_at AND p.paid_at <= o.expires_at"
        ), &[Arg::from(to_millis(since))]).await?;
    for r in &payments {
        let loan: i64 = r.get(0);
        let paid = (
            r.get::<String>(1),
            super::codec::decimal(&r.get::<String>(2))?,
            from_millis(r.get(3))?,
        );
        // `settle` keeps only the payments inside each offer's own window.
        for &k in by_loan.get(&loan).into_iter().flatten() {
            out[k].payments.push(paid.clone());
        }
    }
    Ok(out)
}

pub(super) async fn settle_offer<B: Backend>(
    store: &B,
    now: DateTime<Utc>,
    id: i64,
    state: crate::domain::OfferState,
    at: DateTime<Utc>,
    payment_ids: &[String],
) -> Result<bool, StoreError> {
    use crate::domain::{OfferKind, OfferState};
    let now_ms = to_millis(now);
    let mut tx = store.begin_write().await?;
    let changed = tx.execute("UPDATE offers SET state = ?, settled_at = ?, payment_ids = ?,
                   event_state = CASE WHEN ? = 'taken' THEN 'pending' ELSE event_state END,
                   event_next_at = CASE WHEN ? = 'taken' THEN ? ELSE event_next_at END, updated_at = ?
             WHERE id = ? AND state <> 'taken' AND state <> ?", &[Arg::from(state.as_str()), Arg::from(to_millis(at)), Arg::from((!payment_ids.is_empty()).then(|| payment_ids.join(" "))), Arg::from(state.as_str()), Arg::from(state.as_str()), Arg::from(now_ms), Arg::from(now_ms), Arg::from(id), Arg::from(state.as_str())]).await?
            > 0;
    if changed && state == OfferState::Taken {
        let row = tx
            .fetch_one(
                "SELECT loan_id, kind FROM offers WHERE id = ?",
                &[Arg::from(id)],
            )
            .await?;
        let loan: i64 = row.get(0);
        // A waiver or discount paid in time settles the loan; a plan's
        // first instalment puts it on hold for the lender to set up.
        match OfferKind::parse(&row.get::<String>(1)).map_err(|e| StoreError::Corrupt(e.0))? {
            OfferKind::FeeWaiver | OfferKind::Discount => {
                tx.execute("UPDATE loans SET status = 'paid', updated_at = ? WHERE id = ? AND status = 'active'", &[Arg::from(now_ms), Arg::from(loan)]).await?;
            }
            OfferKind::PaymentPlan => {
                tx.execute("INSERT INTO holds (loan_id, kind, note, created_at) VALUES (?, 'hardship', ?, ?)", &[Arg::from(loan), Arg::from(format!("payment plan offer {id} taken")), Arg::from(now_ms)]).await?;
            }
        }
    }
    tx.commit().await?;
    Ok(changed)
}

pub(super) async fn due_offer_events<B: Backend>(
    store: &B,
    now: DateTime<Utc>,
) -> Result<Vec<super::OfferRow>, StoreError> {
    let rows = store.reader().await?.fetch(&format!("{} {} WHERE o.event_state = 'pending' AND o.event_next_at <= ? ORDER BY o.event_next_at, o.id LIMIT 100", super::common_book::OFFER_COLUMNS, super::common_book::OFFER_FROM), &[Arg::from(to_millis(now))]).await?;
    rows.iter().map(super::common_book::offer_row).collect()
}

pub(super) async fn finish_offer_event<B: Backend>(
    store: &B,
    now: DateTime<Utc>,
    id: i64,
    result: Result<(), (String, Option<DateTime<Utc>>)>,
) -> Result<(), StoreError> {
    let (state, error, retry_at) = match result {
        Ok(()) => ("delivered", None, None),
        Err((error, Some(retry_at))) => ("pending", Some(error), Some(to_millis(retry_at))),
        Err((error, None)) => ("failed", Some(error), None),
    };
    store.reader().await?.execute("UPDATE offers SET event_state = ?, event_attempts = event_attempts + 1, event_error = ?, event_next_at = COALESCE(?, event_next_at), updated_at = ? WHERE id = ?", &[Arg::from(state), Arg::from(error), Arg::from(retry_at), Arg::from(to_millis(now)), Arg::from(id)]).await?;
    Ok(())
}

pub(super) async fn offers<B: Backend>(
    store: &B,
    borrower: Option<&str>,
) -> Result<Vec<super::OfferRow>, StoreError> {
    let rows = store
        .reader()
        .await?
        .fetch(
            &format!(
                "{} {} WHERE ? IS NULL OR b.external_id = ? ORDER BY o.id",
                super::common_book::OFFER_COLUMNS,
                super::common_book::OFFER_FROM
            ),
            &[Arg::from(borrower), Arg::from(borrower)],
        )
        .await?;
    rows.iter().map(super::common_book::offer_row).collect()
}

/// The columns `offer_row` reads, and the join to the loan and borrower
/// they come from.
pub(super) const OFFER_COLUMNS: &str = "SELECT o.id, o.loan_id, l.external_id, b.external_id, o.due_date, o.step, o.kind, o.amount, o.percent, o.min_payment, o.currency, o.made_at, o.expires_at, o.state, o.settled_at, o.payment_ids, o.event_state, o.event_attempts";
pub(super) const OFFER_FROM: &str =
    "FROM offers o JOIN loans l ON l.id = o.loan_id JOIN borrowers b ON b.id = l.borrower_id";

/// A row of `OFFER_COLUMNS`.
pub(super) fn offer_row(r: &impl DbRow) -> Result<super::OfferRow, super::StoreError> {
    use super::codec::{date, decimal};
    use super::{from_millis, StoreError};
    let corrupt = |e: crate::domain::Invalid| StoreError::Corrupt(e.0);
    let opt_dec = |v: Option<String>| v.as_deref().map(decimal).transpose();
    Ok(super::OfferRow {
        id: r.try_get(0)?,
        loan_pk: r.try_get(1)?,
        loan_id: r.try_get(2)?,
        borrower_id: r.try_get(3)?,
        due_date: date(&r.try_get::<String>(4)?)?,
        step: r.try_get(5)?,
        terms: crate::domain::OfferTerms {
            kind: crate::domain::OfferKind::parse(&r.try_get::<String>(6)?).map_err(corrupt)?,
            amount: opt_dec(r.try_get(7)?)?,
            percent: opt_dec(r.try_get(8)?)?,
            min_payment: decimal(&r.try_get::<String>(9)?)?,
            currency: r.try_get(10)?,
            expires_at: from_millis(r.try_get(12)?)?,
        },
        made_at: from_millis(r.try_get(11)?)?,
        state: crate::domain::OfferState::parse(&r.try_get::<String>(13)?).map_err(corrupt)?,
        settled_at: r.try_get::<Option<i64>>(14)?.map(from_millis).transpose()?,
        payment_ids: r
            .try_get::<Option<String>>(15)?
            .map(|s| s.split(' ').map(str::to_owned).collect())
            .unwrap_or_default(),
        event_state: r.try_get(16)?,
        event_attempts: r.try_get(17)?,
    })
}

/// The key of the row of `table` (`loans` or `borrowers`) with this
/// external id, if any.
async fn id_by_external<B: Backend>(
    store: &B,
    table: &'static str,
    external_id: &str,
) -> Result<Option<i64>, StoreError> {
    let text = format!("SELECT id FROM {table} WHERE external_id = ?");
    Ok(store
        .reader()
        .await?
        .fetch_optional(&text, &[Arg::from(external_id)])
        .await?
        .map(|r| r.get(0)))
}
