//! Shared `Store` methods, written once for both backends as generic
//! functions over `Backend` (`shared.rs` delegates the `Store` impl to
//! them): reads, listings, the audit.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use super::backend::{Arg, Backend, Conn, DbRow};
use super::codec::{channel as parse_channel, date, decimal, status};
use super::flow::load_borrowers;
use super::{
    from_millis, to_millis, AuditRow, LoanView, MessageQuery, MessageState, MessageView,
    PlanBorrower, StoreCounts, StoreError,
};

use crate::domain::{Currency, LoanId, Money};

pub(super) async fn last_import_hash<B: Backend>(
    store: &B,
    path: &str,
) -> Result<Option<String>, StoreError> {
    let row = store
        .reader()
        .await?
        .fetch_optional(
            "SELECT content_hash FROM imports WHERE path = ? ORDER BY id DESC LIMIT 1",
            &[Arg::from(path)],
        )
        .await?;
    Ok(row.map(|r| r.get::<String>(0)))
}

pub(super) async fn counts<B: Backend>(store: &B) -> Result<StoreCounts, StoreError> {
    let row = store
        .reader()
        .await?
        .fetch_one(
            "SELECT (SELECT COUNT(*) FROM borrowers),
                    (SELECT COUNT(*) FROM loans),
                    (SELECT COUNT(*) FROM loans WHERE status = 'active'),
                    (SELECT COUNT(*) FROM loans WHERE status = 'paid'),
                    (SELECT COUNT(*) FROM payments),
                    (SELECT COUNT(*) FROM contact_points WHERE active = 1),
                    (SELECT COUNT(*) FROM messages),
                    (SELECT COUNT(*) FROM imports)",
            &[],
        )
        .await?;
    let n = |i: usize| row.get::<i64>(i) as u64;
    Ok(StoreCounts {
        borrowers: n(0),
        loans: n(1),
        loans_active: n(2),
        loans_paid: n(3),
        payments: n(4),
        contact_points: n(5),
        messages: n(6),
        imports: n(7),
    })
}

pub(super) async fn loan<B: Backend>(
    store: &B,
    id: &LoanId,
) -> Result<Option<LoanView>, StoreError> {
    let Some(row) = store.reader().await?.fetch_optional("SELECT l.id, l.external_id, b.external_id, l.due_date, l.amount_due, l.currency, l.status
               FROM loans l JOIN borrowers b ON b.id = l.borrower_id
              WHERE l.external_id = ?", &[Arg::from(id.as_str())]).await?
        else {
            return Ok(None);
        };
    let loan_pk: i64 = row.get(0);
    let amounts: Vec<String> = store
        .reader()
        .await?
        .fetch(
            "SELECT amount FROM payments WHERE loan_id = ?",
            &[Arg::from(loan_pk)],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut paid_total = Decimal::ZERO;
    for a in &amounts {
        paid_total += decimal(a)?;
    }
    let currency = Currency::parse(&row.get::<String>(5)).map_err(|e| StoreError::Corrupt(e.0))?;
    Ok(Some(LoanView {
        id: LoanId::parse(&row.get::<String>(1)).map_err(|e| StoreError::Corrupt(e.0))?,
        borrower_id: row.get(2),
        due_date: date(&row.get::<String>(3))?,
        amount_due: Money {
            amount: decimal(&row.get::<String>(4))?,
            currency,
        },
        status: status(&row.get::<String>(6))?,
        paid_total,
    }))
}

pub(super) async fn planning_batch<B: Backend>(
    store: &B,
    after: i64,
    limit: u32,
    since: DateTime<Utc>,
) -> Result<Vec<PlanBorrower>, StoreError> {
    let mut conn = store.plan_reads().await?;
    let pks: Vec<i64> = conn.fetch("SELECT DISTINCT borrower_id FROM loans WHERE status = 'active' AND borrower_id > ? ORDER BY borrower_id LIMIT ?", &[Arg::from(after), Arg::from(i64::from(limit))]).await?.iter().map(|r| r.get(0)).collect();
    load_borrowers(&mut conn, &pks, since, true).await
}

pub(super) async fn planning_due<B: Backend>(
    store: &B,
    now: DateTime<Utc>,
    after: (i64, i64),
    limit: u32,
    since: DateTime<Utc>,
) -> Result<(Vec<PlanBorrower>, Option<(i64, i64)>), StoreError> {
    let mut conn = store.plan_reads().await?;
    let keys: Vec<(i64, i64)> = conn
        .fetch(
            "SELECT next_look, id FROM borrowers
              WHERE next_look <= ? AND (next_look, id) > (?, ?) ORDER BY next_look, id LIMIT ?",
            &[
                Arg::from(to_millis(now)),
                Arg::from(after.0),
                Arg::from(after.1),
                Arg::from(i64::from(limit)),
            ],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut pks: Vec<i64> = keys.iter().map(|k| k.1).collect();
    pks.sort_unstable();
    Ok((
        load_borrowers(&mut conn, &pks, since, true).await?,
        keys.last().copied(),
    ))
}

pub(super) async fn next_look_at<B: Backend>(
    store: &B,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let at: Option<i64> = store
        .plan_reads()
        .await?
        .fetch_one("SELECT MIN(next_look) FROM borrowers", &[])
        .await?
        .get(0);
    at.map(from_millis).transpose()
}

pub(super) async fn plan_borrower<B: Backend>(
    store: &B,
    external_id: &str,
    since: DateTime<Utc>,
) -> Result<Option<PlanBorrower>, StoreError> {
    let mut conn = store.plan_reads().await?;
    let pk: Option<i64> = conn
        .fetch_optional(
            "SELECT id FROM borrowers WHERE external_id = ?",
            &[Arg::from(external_id)],
        )
        .await?
        .map(|r| r.get(0));
    match pk {
        Some(pk) => Ok(load_borrowers(&mut conn, &[pk], since, true).await?.pop()),
        None => Ok(None),
    }
}

pub(super) async fn next_pending_at<B: Backend>(
    store: &B,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let at: Option<i64> = store
        .plan_reads()
        .await?
        .fetch_one(
            "SELECT MIN(not_before) FROM messages WHERE state IN ('planned', 'deferred')",
            &[],
        )
        .await?
        .get(0);
    at.map(from_millis).transpose()
}

pub(super) async fn in_flight<B: Backend>(
    store: &B,
    now: DateTime<Utc>,
) -> Result<Vec<super::InFlight>, StoreError> {
    let rows = store.reader().await?.fetch("SELECT m.id, COALESCE(m.attempt_id, ''), m.channel, m.provider, cp.address, m.updated_at
               FROM messages m LEFT JOIN contact_points cp ON cp.id = m.contact_point_id
              WHERE m.state = 'sending' AND (m.lease_until IS NULL OR m.lease_until < ?) ORDER BY m.id", &[Arg::from(to_millis(now))]).await?;
    rows.iter()
        .map(|r| {
            Ok(super::InFlight {
                id: r.get(0),
                attempt: r.get(1),
                channel: parse_channel(&r.get::<String>(2))?,
                provider: r.get(3),
                address: r.get(4),
                since: from_millis(r.get(5))?,
            })
        })
        .collect()
}

pub(super) async fn postpone_reconcile<B: Backend>(
    store: &B,
    id: i64,
    attempt: &str,
    until: DateTime<Utc>,
) -> Result<(), StoreError> {
    store.reader().await?.execute("UPDATE messages SET lease_until = ?, claimed_by = NULL WHERE id = ? AND state = 'sending' AND attempt_id = ?", &[Arg::from(to_millis(until)), Arg::from(id), Arg::from(attempt)]).await?;
    Ok(())
}

pub(super) async fn schema_version<B: Backend>(store: &B) -> Result<i64, StoreError> {
    Ok(store
        .reader()
        .await?
        .fetch_one(
            "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success",
            &[],
        )
        .await?
        .get(0))
}

pub(super) async fn message_events<B: Backend>(
    store: &B,
    message_id: i64,
) -> Result<Vec<super::MessageEvent>, StoreError> {
    let rows = store.reader().await?.fetch("SELECT at, from_state, to_state, reason FROM message_events WHERE message_id = ? ORDER BY id", &[Arg::from(message_id)]).await?;
    rows.iter()
        .map(|r| {
            Ok(super::MessageEvent {
                at: from_millis(r.get(0))?,
                from: r
                    .get::<Option<String>>(1)
                    .as_deref()
                    .map(super::codec::state)
                    .transpose()?,
                to: super::codec::state(&r.get::<String>(2))?,
                reason: r.get(3),
            })
        })
        .collect()
}

pub(super) async fn sent_since<B: Backend>(
    store: &B,
    since: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let n: i64 = store
        .reader()
        .await?
        .fetch_one(
            "SELECT COUNT(*) FROM contact_log WHERE at >= ?",
            &[Arg::from(to_millis(since))],
        )
        .await?
        .get(0);
    Ok(n as u64)
}

pub(super) async fn message_breakdown<B: Backend>(
    store: &B,
) -> Result<
    Vec<(
        MessageState,
        crate::domain::Channel,
        Option<String>,
        Option<crate::reason::Reason>,
        u64,
    )>,
    StoreError,
> {
    let rows = store.reader().await?.fetch("SELECT state, channel, provider, reason, COUNT(*) FROM messages GROUP BY state, channel, provider, reason", &[]).await?;
    rows.iter()
        .map(|r| {
            Ok((
                super::codec::state(&r.get::<String>(0))?,
                parse_channel(&r.get::<String>(1))?,
                r.get(2),
                r.get::<Option<String>>(3).map(crate::reason::Reason::parse),
                r.get::<i64>(4) as u64,
            ))
        })
        .collect()
}

pub(super) async fn messages<B: Backend>(
    store: &B,
    query: &MessageQuery,
) -> Result<Vec<MessageView>, StoreError> {
    let rows = store.reader().await?.fetch("SELECT m.id, b.external_id, m.channel, m.step, m.template, m.template_version, m.state, m.reason, m.not_before,
                    m.provider, cp.address, m.subject, m.body, m.updated_at,
                    (SELECT group_concat(l.external_id, ',') FROM message_loans ml CROSS JOIN loans l ON l.id = ml.loan_id WHERE ml.message_id = m.id)
               FROM messages m JOIN borrowers b ON b.id = m.borrower_id
               LEFT JOIN contact_points cp ON cp.id = m.contact_point_id
              WHERE (? IS NULL OR m.state = ?) AND (? IS NULL OR b.external_id = ?)
              ORDER BY m.id LIMIT ?", &[Arg::from(query.state.map(MessageState::as_str)), Arg::from(query.state.map(MessageState::as_str)), Arg::from(&query.borrower), Arg::from(&query.borrower), Arg::from(i64::from(query.limit.unwrap_or(u32::MAX >> 1)))]).await?;
    rows.iter()
        .map(|r| {
            Ok(MessageView {
                id: r.get(0),
                borrower_id: r.get(1),
                channel: parse_channel(&r.get::<String>(2))?,
                step: r.get(3),
                template: r.get(4),
                template_version: r.get(5),
                state: super::codec::state(&r.get::<String>(6))?,
                reason: r.get(7),
                not_before: from_millis(r.get(8))?,
                provider: r.get(9),
                address: r.get(10),
                subject: r.get(11),
                body: r.get(12),
                updated_at: from_millis(r.get(13))?,
                loan_ids: r
                    .get::<Option<String>>(14)
                    .map(|s| s.split(',').map(str::to_owned).collect())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

pub(super) async fn message_counts<B: Backend>(
    store: &B,
) -> Result<Vec<(MessageState, u64)>, StoreError> {
    let rows = store
        .reader()
        .await?
        .fetch("SELECT state, COUNT(*) FROM messages GROUP BY state", &[])
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                super::codec::state(&r.get::<String>(0))?,
                r.get::<i64>(1) as u64,
            ))
        })
        .collect()
}

pub(super) async fn due_handoffs<B: Backend>(
    store: &B,
    now: DateTime<Utc>,
) -> Result<Vec<(i64, String, String, NaiveDate, String, i64)>, StoreError> {
    let rows = store.reader().await?.fetch("SELECT h.id, l.external_id, b.external_id, h.due_date, h.step, h.attempts FROM handoffs h
               JOIN loans l ON l.id = h.loan_id JOIN borrowers b ON b.id = l.borrower_id
              WHERE h.state = 'pending' AND h.next_attempt_at <= ? ORDER BY h.next_attempt_at, h.id LIMIT 100", &[Arg::from(to_millis(now))]).await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.get(0),
                r.get(1),
                r.get(2),
                super::codec::date(&r.get::<String>(3))?,
                r.get(4),
                r.get(5),
            ))
        })
        .collect()
}

pub(super) async fn finish_handoff<B: Backend>(
    store: &B,
    now: DateTime<Utc>,
    id: i64,
    result: Result<(), (String, Option<DateTime<Utc>>)>,
) -> Result<(), StoreError> {
    let now_ms = to_millis(now);
    let (text, error, retry_at) = match result {
            Ok(()) => ("UPDATE handoffs SET state = 'delivered', attempts = attempts + 1, last_error = ?, next_attempt_at = COALESCE(?, next_attempt_at), updated_at = ? WHERE id = ?", None, None),
            Err((error, Some(retry_at))) => ("UPDATE handoffs SET attempts = attempts + 1, last_error = ?, next_attempt_at = COALESCE(?, next_attempt_at), updated_at = ? WHERE id = ?", Some(error), Some(to_millis(retry_at))),
            Err((error, None)) => ("UPDATE handoffs SET state = 'failed', attempts = attempts + 1, last_error = ?, next_attempt_at = COALESCE(?, next_attempt_at), updated_at = ? WHERE id = ?", Some(error), None),
        };
    let args = [
        Arg::from(error),
        Arg::from(retry_at),
        Arg::from(now_ms),
        Arg::from(id),
    ];
    store.reader().await?.execute(text, &args).await?;
    Ok(())
}

pub(super) async fn audit<B: Backend>(
    store: &B,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<AuditRow>, StoreError> {
    // Each `sending` event is one attempt; its outcome is the next event
    // of the same message.
    let rows = store.reader().await?.fetch("SELECT e.message_id, e.at, e.reason, m.channel, m.step, m.template, m.template_version, m.provider,
                    b.external_id, b.timezone, cp.address,
                    (SELECT COUNT(*) FROM message_events p WHERE p.message_id = e.message_id AND p.to_state = 'sending' AND p.id <= e.id),
                    (SELECT n.to_state FROM message_events n WHERE n.message_id = e.message_id AND n.id > e.id ORDER BY n.id LIMIT 1),
                    (SELECT n.reason FROM message_events n WHERE n.message_id = e.message_id AND n.id > e.id ORDER BY n.id LIMIT 1),
                    (SELECT group_concat(l.external_id, ',') FROM message_loans ml CROSS JOIN loans l ON l.id = ml.loan_id WHERE ml.message_id = m.id),
                    (SELECT c.address FROM contact_points c WHERE c.borrower_id = b.id AND c.channel = 'sms' AND c.active = 1 LIMIT 1)
               FROM message_events e JOIN messages m ON m.id = e.message_id
               JOIN borrowers b ON b.id = m.borrower_id
               LEFT JOIN contact_points cp ON cp.id = m.contact_point_id
              WHERE e.to_state = 'sending' AND e.at >= ? AND e.at < ?
              ORDER BY e.at, e.id", &[Arg::from(to_millis(from)), Arg::from(to_millis(to))]).await?;
    rows.iter()
        .map(|r| {
            let outcome: Option<String> = r.get(12);
            Ok(AuditRow {
                message_id: r.get(0),
                at: from_millis(r.get(1))?,
                allowed_by: r.get::<Option<String>>(2).unwrap_or_default(),
                channel: parse_channel(&r.get::<String>(3))?,
                step: r.get(4),
                template: r.get(5),
                template_version: r.get(6),
                provider: r.get(7),
                borrower_id: r.get(8),
                borrower_timezone: r.get(9),
                address: r.get(10),
                attempt: r.get(11),
                outcome: outcome
                    .as_deref()
                    .map(super::codec::state)
                    .transpose()?
                    .unwrap_or(MessageState::Sending),
                outcome_reason: r.get::<Option<String>>(13).unwrap_or_default(),
                loan_ids: r
                    .get::<Option<String>>(14)
                    .map(|s| s.split(',').map(str::to_owned).collect())
                    .unwrap_or_default(),
                borrower_phone: r.get(15),
            })
        })
        .collect()
}

pub(super) async fn ping<B: Backend>(store: &B) -> Result<(), StoreError> {
    store.reader().await?.execute("SELECT 1", &[]).await?;
    Ok(())
}
