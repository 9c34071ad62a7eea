//! The planning and dispatch loads and the state-change helpers, written
//! once for both backends as generic functions over `Conn` (`backend.rs`).
//! Loading is batched by borrower so a planning page costs a handful of
//! queries, whatever its size.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::backend::{padded_insert, values_rows, Arg, Conn, DbRow};
use super::codec::{channel, date, state};
use super::{
    from_millis, to_millis, ClaimLease, ClaimView, ContactView, HoldView, LoanRow, MessageState,
    NewMessage, PlanBorrower, StoreError, Verdict,
};
use crate::compliance::caps::Contact;
use crate::domain::{Currency, HoldKind, LoanStatus, Money};

/// Loads `pks` as planning borrowers: contact points, holds, contacts
/// since `since` and, `for_plan`, their active loans and the (loan, due
/// date, step, channel) keys already planned (the planner needs them; a
/// claim carries its own message's loans).
pub(super) async fn load_borrowers<C: Conn>(
    conn: &mut C,
    pks: &[i64],
    since: DateTime<Utc>,
    for_plan: bool,
) -> Result<Vec<PlanBorrower>, StoreError> {
    let mut out: Vec<PlanBorrower> = Vec::with_capacity(pks.len());
    // `status || ''` keeps SQLite from reading loans by the status index
    // (every active loan of the book, seconds at 1M) instead of by borrower.
    // A planning page (sorted keys, many) is read by key range: two bound
    // values, each index used as a range; a few claims' borrowers by list.
    // Sparse keys (a steady tick's due borrowers) are read by list.
    let dense = |k: &[i64]| {
        k.last()
            .zip(k.first())
            .is_some_and(|(h, l)| h - l < 4 * k.len() as i64)
    };
    let ranged = pks.len() > 64 && pks.is_sorted() && dense(pks);
    let wanted: std::collections::HashSet<i64> = match ranged {
        true => pks.iter().copied().collect(),
        false => Default::default(),
    };
    for chunk in pks.chunks(if ranged { pks.len() } else { 400 }) {
        let mut by_pk: HashMap<i64, usize> = HashMap::new();
        for row in by_borrowers(conn, "SELECT id, external_id, name, locale, timezone, next_look FROM borrowers WHERE id IN ({}) ORDER BY id", chunk, ranged).await?
        {
            if ranged && !wanted.contains(&row.get::<i64>(0)) {
                continue;
            }
            by_pk.insert(row.get(0), out.len());
            out.push(PlanBorrower {
                pk: row.get(0),
                external_id: row.get(1),
                name: row.get(2),
                locale: row.get(3),
                timezone: row.get(4),
                next_look: row.get::<Option<i64>>(5).map(from_millis).transpose()?,
                contacts: vec![],
                holds: vec![],
                loans: vec![],
                planned: vec![],
                recent: vec![],
            });
        }
        for row in by_borrowers(conn, "SELECT borrower_id, id, channel, address, opted_out_at IS NOT NULL, invalid_at IS NOT NULL, region
                        FROM contact_points WHERE active = 1 AND borrower_id IN ({})", chunk, ranged).await?
        {
            let Some(&idx) = by_pk.get(&row.get::<i64>(0)) else { continue };
            let b = &mut out[idx];
            b.contacts.push(ContactView {
                id: row.get(1),
                channel: channel(&row.get::<String>(2))?,
                address: row.get(3),
                opted_out: row.get(4),
                invalid: row.get(5),
                region: row.get(6),
            });
        }
        // A hold is on a borrower or on one of their loans.
        for row in by_borrowers(
            conn,
            "SELECT h.borrower_id, l.borrower_id, h.loan_id, h.kind, h.until_date FROM holds h
               LEFT JOIN loans l ON l.id = h.loan_id
              WHERE h.cleared_at IS NULL AND COALESCE(h.borrower_id, l.borrower_id) IN ({})",
            chunk,
            ranged,
        )
        .await?
        {
            let owner: i64 = row
                .get::<Option<i64>>(0)
                .or(row.get::<Option<i64>>(1))
                .unwrap_or_default();
            let Some(&idx) = by_pk.get(&owner) else {
                continue;
            };
            let kind =
                HoldKind::parse(&row.get::<String>(3)).map_err(|e| StoreError::Corrupt(e.0))?;
            let until = row.get::<Option<String>>(4).map(|d| date(&d)).transpose()?;
            out[idx].holds.push(HoldView {
                kind,
                loan: row.get(2),
                until,
            });
        }
        // A claim carries its message's loans (`ClaimView::loans`), not
        // every active loan of the borrower.
        for row in if !for_plan {
            Vec::new()
        } else {
            by_borrowers(conn, "SELECT borrower_id, id, external_id, due_date, amount_due, currency, status, created_at
                        FROM loans WHERE status || '' = 'active' AND borrower_id IN ({}) ORDER BY borrower_id, due_date, id", chunk, ranged).await?
        } {
            let Some(&idx) = by_pk.get(&row.get::<i64>(0)) else {
                continue;
            };
            out[idx].loans.push(loan_row(&row, 1)?);
        }
        // What was planned matters to the planner only, not to a claim.
        for row in if !for_plan {
            Vec::new()
        } else {
            by_borrowers(
                conn,
                "SELECT l.borrower_id, ml.loan_id, ml.due_date, ml.step, ml.channel
                 FROM loans l CROSS JOIN message_loans ml ON ml.loan_id = l.id
                WHERE l.status || '' = 'active' AND l.borrower_id IN ({})",
                chunk,
                ranged,
            )
            .await?
        } {
            let Some(&idx) = by_pk.get(&row.get::<i64>(0)) else {
                continue;
            };
            out[idx].planned.push((
                row.get(1),
                date(&row.get::<String>(2))?,
                row.get(3),
                channel(&row.get::<String>(4))?,
            ));
        }
        // `since` is bound after the keys, so the text (and the prepared
        // statement) is the same at every claim and page.
        let recent = "SELECT c.borrower_id, c.at, c.channel, c.contact_point_id, ml.loan_id, c.id FROM contact_log c
              LEFT JOIN message_loans ml ON ml.message_id = c.message_id
              WHERE c.borrower_id IN ({}) AND c.at >= ? ORDER BY c.id";
        // One contact per contact-log row (one per message sent), with the
        // loans it carried: two messages at the same instant on the same
        // contact point are two contacts.
        type Row = (i64, i64, String, Option<i64>);
        let mut contacts: HashMap<i64, (Row, Vec<i64>)> = HashMap::new();
        let mut order = Vec::new();
        for row in
            by_borrowers_then(conn, recent, chunk, ranged, &[to_millis(since).into()]).await?
        {
            let id: i64 = row.get(5);
            let (_, loans) = contacts.entry(id).or_insert_with(|| {
                order.push(id);
                ((row.get(0), row.get(1), row.get(2), row.get(3)), Vec::new())
            });
            if let Some(l) = row.get::<Option<i64>>(4) {
                loans.push(l);
            }
        }
        for id in order {
            let Some(((b, at, ch, cp), loans)) = contacts.remove(&id) else {
                continue;
            };
            let Some(&idx) = by_pk.get(&b) else { continue };
            out[idx].recent.push(Contact {
                at: from_millis(at)?,
                channel: channel(&ch)?,
                contact_point: cp,
                loans,
            });
        }
    }
    Ok(out)
}

/// (loan, due date, step, channel) keys already planned, as stored text.
pub(super) type PlannedKeys = HashSet<(i64, String, String, String)>;

/// The messages of a page to insert: planned at most once, ever, so a
/// message is skipped if any of its keys is in `taken` (stored already, or
/// taken by a message earlier in the page).
pub(super) fn unplanned(messages: &[NewMessage], mut taken: PlannedKeys) -> Vec<&NewMessage> {
    let mut fresh = Vec::new();
    for m in messages {
        let keys: Vec<_> = m
            .loans
            .iter()
            .map(|(l, d, st)| {
                (
                    *l,
                    super::codec::day(d),
                    st.clone(),
                    m.channel.as_str().to_owned(),
                )
            })
            .collect();
        if keys.iter().any(|k| taken.contains(k)) {
            continue;
        }
        taken.extend(keys);
        fresh.push(m);
    }
    fresh
}

/// Rows of `text` (one `IN ({})` on a borrower key) for the borrowers
/// `keys`: by the key range when `ranged` (the caller skips rows of
/// borrowers between the keys that it did not ask for), else by the list.
async fn by_borrowers<C: Conn>(
    conn: &mut C,
    text: &str,
    keys: &[i64],
    ranged: bool,
) -> Result<Vec<C::Row>, StoreError> {
    by_borrowers_then(conn, text, keys, ranged, &[]).await
}

/// `by_borrowers` for a text whose other `?`s follow the key list.
async fn by_borrowers_then<C: Conn>(
    conn: &mut C,
    text: &str,
    keys: &[i64],
    ranged: bool,
    after: &[Arg<'_>],
) -> Result<Vec<C::Row>, StoreError> {
    match (ranged, keys.first(), keys.last()) {
        (true, Some(lo), Some(hi)) => {
            let text = text.replace("IN ({})", "BETWEEN ? AND ?");
            let args: Vec<Arg> = [(*lo).into(), (*hi).into()]
                .into_iter()
                .chain(after.iter().cloned())
                .collect();
            conn.fetch(&text, &args).await
        }
        _ => conn.select_in_i64_then(text, keys, after).await,
    }
}

/// Reads a loan from columns `id, external_id, due_date, amount_due, currency, status, created_at` starting at `at`.
pub(super) fn loan_row(row: &impl DbRow, at: usize) -> Result<LoanRow, StoreError> {
    let currency =
        Currency::parse(&row.get::<String>(at + 4)).map_err(|e| StoreError::Corrupt(e.0))?;
    let amount: Decimal = row
        .get::<String>(at + 3)
        .parse()
        .map_err(|_| StoreError::Corrupt("amount".into()))?;
    Ok(LoanRow {
        pk: row.get(at),
        external_id: row.get(at + 1),
        due_date: date(&row.get::<String>(at + 2))?,
        amount_due: Money { amount, currency },
        status: LoanStatus::parse(&row.get::<String>(at + 5))
            .map_err(|e| StoreError::Corrupt(e.0))?,
        created_at: from_millis(row.get(at + 6))?,
        step: None,
    })
}

/// Loads the claim views of `rows` (messages, oldest first) with a fixed
/// number of queries for the whole batch, then decides and applies each in
/// order. A message decided `Send` logs a contact; the later messages of
/// the same borrower in the batch see it, exactly as if each had been
/// claimed in its own transaction. The batch's events and contact-log rows
/// go into `writes`, which the caller writes before it commits.
pub(super) async fn claim_rows<C: Conn>(
    conn: &mut C,
    rows: &[C::Row],
    now_ms: i64,
    since: DateTime<Utc>,
    lease: &ClaimLease,
    decide: &(dyn for<'v> Fn(&'v ClaimView) -> Verdict + Send + Sync),
    writes: &mut BatchRows,
) -> Result<Vec<(ClaimView, Verdict)>, StoreError> {
    let ids: Vec<i64> = rows.iter().map(|r| r.get::<i64>("id")).collect();
    let mut pks: Vec<i64> = rows.iter().map(|r| r.get::<i64>("borrower_id")).collect();
    pks.sort_unstable();
    pks.dedup();
    let mut borrowers: HashMap<i64, PlanBorrower> = load_borrowers(conn, &pks, since, false)
        .await?
        .into_iter()
        .map(|b| (b.pk, b))
        .collect();
    // The borrowers' active contact points are loaded already; only a
    // message addressed to one since replaced needs its own read.
    let mut contacts: HashMap<i64, ContactView> = borrowers
        .values()
        .flat_map(|b| b.contacts.iter().map(|c| (c.id, c.clone())))
        .collect();
    let cps: Vec<i64> = rows
        .iter()
        .filter_map(|r| r.get::<Option<i64>>("contact_point_id"))
        .filter(|cp| !contacts.contains_key(cp))
        .collect();
    if !cps.is_empty() {
        for r in conn.select_in_i64("SELECT id, channel, address, opted_out_at IS NOT NULL, invalid_at IS NOT NULL, region FROM contact_points WHERE id IN ({})", &cps).await? {
            contacts.insert(r.get(0), ContactView { id: r.get(0), channel: channel(&r.get::<String>(1))?, address: r.get(2), opted_out: r.get(3), invalid: r.get(4), region: r.get(5) });
        }
    }
    let mut loans: HashMap<i64, Vec<LoanRow>> = HashMap::new();
    for r in conn.select_in_i64("SELECT ml.message_id, l.id, l.external_id, l.due_date, l.amount_due, l.currency, l.status, l.created_at, ml.step
           FROM message_loans ml CROSS JOIN loans l ON l.id = ml.loan_id WHERE ml.message_id IN ({}) ORDER BY ml.message_id, l.due_date, l.id", &ids).await?
    {
        let mut loan = loan_row(&r, 1)?;
        loan.step = Some(r.get(8));
        loans.entry(r.get(0)).or_default().push(loan);
    }
    let mut out = Vec::with_capacity(rows.len());
    let mut sends: Vec<Sending> = Vec::new();
    for row in rows {
        let message_id: i64 = row.get("id");
        let borrower_pk: i64 = row.get("borrower_id");
        let borrower = borrowers
            .get(&borrower_pk)
            .cloned()
            .ok_or_else(|| StoreError::Corrupt(format!("message {message_id} has no borrower")))?;
        let view = ClaimView {
            message_id,
            state: state(&row.get::<String>("state"))?,
            channel: channel(&row.get::<String>("channel"))?,
            step: row.get("step"),
            template: row.get("template"),
            not_before: from_millis(row.get("not_before"))?,
            expires_at: row
                .get::<Option<i64>>("expires_at")
                .map(from_millis)
                .transpose()?,
            attempts: row.get("attempts"),
            borrower,
            contact: row
                .get::<Option<i64>>("contact_point_id")
                .and_then(|cp| contacts.get(&cp).cloned()),
            loans: loans.remove(&message_id).unwrap_or_default(),
        };
        let verdict = decide(&view);
        if let Verdict::Send {
            attempt_id, window, ..
        } = &verdict
        {
            sends.push(Sending {
                at: out.len(),
                id: message_id,
                attempt: attempt_id.clone(),
                reason: format!("claimed; allowed by {window}"),
                from: view.state.as_str(),
                contact: (
                    message_id,
                    borrower_pk,
                    view.contact.as_ref().map(|c| c.id),
                    view.channel.as_str(),
                    now_ms,
                ),
            });
            // What `load_borrowers` would read back from the contact log.
            if let Some(b) = borrowers.get_mut(&borrower_pk) {
                b.recent.push(Contact {
                    at: from_millis(now_ms)?,
                    channel: view.channel,
                    contact_point: view.contact.as_ref().map(|c| c.id),
                    loans: view.loans.iter().map(|l| l.pk).collect(),
                });
            }
        } else {
            apply_verdict(&mut *conn, now_ms, &view, &verdict, writes).await?;
        }
        out.push((view, verdict));
    }
    // The sends in statements of up to 200 (`values_rows`, padded):
    // `sending` under the lease.
    let args: Vec<Arg> = sends
        .iter()
        .flat_map(|send| {
            [
                Arg::Int(send.id),
                Arg::Text(&send.attempt),
                Arg::Text(&send.reason),
                Arg::Text(send.from),
            ]
        })
        .collect();
    let applied: HashSet<i64> = values_rows(
        conn,
        "WITH v(id, attempt, reason, from_state) AS (VALUES {})
         UPDATE messages SET attempt_id = v.attempt, attempts = attempts + 1, claimed_by = ?, lease_until = ?,
                state = 'sending', reason = v.reason, updated_at = ?
           FROM v WHERE messages.id = v.id AND messages.state = v.from_state RETURNING messages.id",
        "(?, ?, ?, ?)",
        &args,
        &[
            Arg::Text(&lease.holder),
            Arg::Int(to_millis(lease.until)),
            Arg::Int(now_ms),
        ],
        true,
    )
    .await?
    .iter()
    .map(|r| r.get::<i64>(0))
    .collect();
    drop(args);
    let mut dropped = HashSet::new();
    for send in sends {
        if applied.contains(&send.id) {
            writes
                .events
                .push((send.id, now_ms, Some(send.from), "sending", send.reason));
            writes.contacts.push(send.contact);
        } else {
            // Moved on since it was read (it cannot while locked): not ours.
            dropped.insert(send.at);
        }
    }
    Ok(out
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !dropped.contains(i))
        .map(|(_, claim)| claim)
        .collect())
}

/// A send decided in a claim batch, marked `sending` with the others.
struct Sending {
    /// Its place in the batch.
    at: usize,
    id: i64,
    attempt: String,
    reason: String,
    from: &'static str,
    contact: ContactLogRow,
}

/// `contact_log`: (message, borrower, contact point, channel, at).
type ContactLogRow = (i64, i64, Option<i64>, &'static str, i64);

/// A state change for `message_events`: (message, at, from, to, reason).
pub(super) type EventRow = (i64, i64, Option<&'static str>, &'static str, String);

/// The rows a batch appends, written at its end with multi-row inserts.
#[derive(Default)]
pub(super) struct BatchRows {
    pub(super) events: Vec<EventRow>,
    contacts: Vec<ContactLogRow>,
}

impl BatchRows {
    pub(super) async fn write<C: Conn>(&self, conn: &mut C) -> Result<(), StoreError> {
        let events: Vec<Arg> = self
            .events
            .iter()
            .flat_map(|(id, at, from, to, reason)| {
                [
                    (*id).into(),
                    (*at).into(),
                    (*from).into(),
                    (*to).into(),
                    reason.into(),
                ]
            })
            .collect();
        let head = "INSERT INTO message_events (message_id, at, from_state, to_state, reason)";
        padded_insert(conn, head, "(?, ?, ?, ?, ?)", &events).await?;
        let contacts: Vec<Arg> = self
            .contacts
            .iter()
            .flat_map(|(id, borrower, cp, channel, at)| {
                [
                    (*id).into(),
                    (*borrower).into(),
                    (*cp).into(),
                    (*channel).into(),
                    (*at).into(),
                ]
            })
            .collect();
        let head =
            "INSERT INTO contact_log (message_id, borrower_id, contact_point_id, channel, at)";
        padded_insert(conn, head, "(?, ?, ?, ?, ?)", &contacts).await?;
        Ok(())
    }
}

/// Applies a claim's verdict other than `Send` inside the claim
/// transaction, one statement on the message: deferred, cancelled or
/// expired with the reason (its event queued in `writes`). Applies only if
/// the message is still in the state it was read in; returns whether it
/// did.
pub(super) async fn apply_verdict<C: Conn>(
    conn: &mut C,
    now_ms: i64,
    view: &ClaimView,
    verdict: &Verdict,
    writes: &mut BatchRows,
) -> Result<bool, StoreError> {
    let from = view.state.as_str();
    let id = view.message_id;
    let (to, reason, applied) = match &verdict {
        Verdict::Send { .. } => return Ok(false),
        Verdict::Defer { until, reason } => {
            let applied = conn
                .execute(
                    "UPDATE messages SET not_before = ?, state = 'deferred', reason = ?, updated_at = ? WHERE id = ? AND state = ?",
                    &[to_millis(*until).into(), reason.as_str().into(), now_ms.into(), id.into(), from.into()],
                )
                .await?;
            (MessageState::Deferred, reason.as_str().to_owned(), applied)
        }
        Verdict::Cancel { reason } | Verdict::Expire { reason } => {
            let to = match verdict {
                Verdict::Cancel { .. } => MessageState::Cancelled,
                _ => MessageState::Expired,
            };
            let applied = conn
                .execute(
                    "UPDATE messages SET state = ?, reason = ?, updated_at = ? WHERE id = ? AND state = ?",
                    &[to.as_str().into(), reason.as_str().into(), now_ms.into(), id.into(), from.into()],
                )
                .await?;
            (to, reason.as_str().to_owned(), applied)
        }
    };
    if applied == 0 {
        return Ok(false);
    }
    writes
        .events
        .push((id, now_ms, Some(from), to.as_str(), reason));
    Ok(true)
}
