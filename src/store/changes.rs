//! State changes shared by both backends, generic over `Conn`: a message's
//! transition with its audit event, the sweep that cancels what can no
//! longer go, the writer's fence check and a contact-log undo.

use super::backend::{Conn, DbRow};
use super::codec::channel;
use super::{Fence, MessageState, StoreError};

/// Which pending messages a sweep (`cancel_ineligible_in`) looks at.
#[derive(Debug, Clone, Copy)]
pub(super) enum Sweep<'a> {
    /// Every pending message in the book.
    Book,
    /// One borrower's (external id), after a change that touched only them.
    Borrower(&'a str),
    /// Those a change stamped at or after this instant (ms) can have made
    /// ineligible: a loan no longer active, a contact point opted out, a
    /// standing hold added. Read from those changes, by partial indexes, so
    /// a steady tick's sweep costs what changed, not what is pending.
    ChangedSince(i64),
}

/// The three reads of a sweep (loans no longer active, opted-out contact
/// points, standing holds), each selecting a message's id, its state and
/// what its reason is made of, with their one parameter.
fn sweep_reads(sweep: Sweep<'_>) -> ([String; 3], super::backend::Arg<'_>) {
    const PENDING: &str = "m.state IN ('planned', 'deferred')";
    // CROSS JOIN fixes SQLite's join order: from the message's few loans,
    // never from all active loans.
    let loans = "SELECT m.id, m.state,
                    (SELECT group_concat(d.status, ',') FROM (SELECT DISTINCT l.status AS status
                       FROM message_loans ml CROSS JOIN loans l ON l.id = ml.loan_id WHERE ml.message_id = m.id) d)";
    let none_active =
        "NOT EXISTS (SELECT 1 FROM message_loans ml CROSS JOIN loans l ON l.id = ml.loan_id
                                 WHERE ml.message_id = m.id AND l.status = 'active')";
    let opted = "SELECT m.id, m.state, cp.opt_out_source, m.channel";
    let held = "SELECT m.id, m.state, h.kind";
    let standing = "h.cleared_at IS NULL AND h.until_date IS NULL";
    let (scope, arg) = match sweep {
        Sweep::ChangedSince(since) => {
            // From the changes to their borrowers' pending messages; the
            // partial indexes (`loans_inactive_changed`,
            // `contact_points_opted_out`, `holds_created`) hold only them.
            return ([
                format!("{loans} FROM loans c CROSS JOIN message_loans mc ON mc.loan_id = c.id CROSS JOIN messages m ON m.id = mc.message_id
                          WHERE c.status <> 'active' AND c.updated_at >= ? AND {PENDING} AND {none_active}"),
                format!("{opted} FROM contact_points cp CROSS JOIN messages m ON m.borrower_id = cp.borrower_id AND m.contact_point_id = cp.id
                          WHERE cp.opted_out_at IS NOT NULL AND cp.opted_out_at >= ? AND {PENDING}"),
                format!("{held} FROM holds h CROSS JOIN messages m ON m.borrower_id = h.borrower_id
                          WHERE h.created_at >= ? AND {standing} AND {PENDING}"),
            ], since.into());
        }
        // `? IS NULL` keeps one parameter either way; with a borrower the
        // index on `messages.borrower_id` leads.
        Sweep::Borrower(b) => (
            "m.borrower_id = (SELECT id FROM borrowers WHERE external_id = ?)",
            b.into(),
        ),
        Sweep::Book => ("? IS NULL", Option::<&str>::None.into()),
    };
    (
        [
            format!("{loans} FROM messages m WHERE {scope} AND {PENDING} AND {none_active}"),
            format!(
                "{opted} FROM messages m JOIN contact_points cp ON cp.id = m.contact_point_id
                  WHERE {scope} AND {PENDING} AND cp.opted_out_at IS NOT NULL"
            ),
            format!(
                "{held} FROM messages m JOIN holds h ON h.borrower_id = m.borrower_id
                  WHERE {scope} AND {PENDING} AND {standing}"
            ),
        ],
        arg,
    )
}

/// A steady tick's sweep reads (`Sweep::ChangedSince`), with `?` for the
/// instant: for the test that asks each database how it plans them.
#[doc(hidden)]
pub fn changed_sweep_reads() -> [String; 3] {
    sweep_reads(Sweep::ChangedSince(0)).0
}

/// Cancels pending messages that can no longer go (every loan paid or
/// closed, the contact point opted out, a standing hold), of the `sweep`'s
/// scope. Returns how many.
pub(super) async fn cancel_ineligible_in<C: Conn>(
    conn: &mut C,
    now_ms: i64,
    sweep: Sweep<'_>,
) -> Result<u64, StoreError> {
    let ([loans, opted, held], arg) = sweep_reads(sweep);
    let args = std::slice::from_ref(&arg);
    let mut doomed: Vec<(i64, String, crate::reason::Reason)> = Vec::new();
    for row in conn.fetch(&loans, args).await? {
        let statuses: Option<String> = row.get(2);
        doomed.push((
            row.get(0),
            row.get(1),
            crate::reason::Reason::loans_inactive(&statuses.unwrap_or_default()),
        ));
    }
    for row in conn.fetch(&opted, args).await? {
        let source: Option<String> = row.get(2);
        let channel = channel(&row.get::<String>(3))?;
        doomed.push((
            row.get(0),
            row.get(1),
            crate::reason::Reason::opted_out(channel, Some(source.as_deref().unwrap_or_default())),
        ));
    }
    for row in conn.fetch(&held, args).await? {
        doomed.push((
            row.get(0),
            row.get(1),
            crate::reason::Reason::borrower_on_hold(&row.get::<String>(2)),
        ));
    }
    // On PostgreSQL the rows were read unlocked: each change applies only
    // if the message is still in the state read (a dispatcher may have
    // claimed it since; the claim re-checks eligibility itself).
    let mut seen = std::collections::HashSet::new();
    let mut done = 0;
    for (id, from, reason) in doomed {
        if seen.insert(id) {
            let from = super::codec::state(&from)?;
            if transition(
                &mut *conn,
                now_ms,
                id,
                Some(from),
                MessageState::Cancelled,
                reason.as_str(),
            )
            .await?
            {
                done += 1;
            }
        }
    }
    Ok(done)
}

/// Checks, inside the writer's transaction, that `fence` still holds its
/// role. On PostgreSQL the row lock (`FOR KEY SHARE`) keeps a takeover,
/// which locks the row `FOR UPDATE` first, from committing until this
/// transaction ends, and lets the holder renew its lease meanwhile (a plain
/// update of a non-key column); SQLite's write lock is already held.
pub(super) async fn check_fence<C: Conn>(
    conn: &mut C,
    fence: Option<&Fence>,
) -> Result<(), StoreError> {
    let Some(f) = fence else { return Ok(()) };
    let token: Option<i64> = conn
        .fetch_optional(
            "SELECT token FROM leases WHERE name = ? AND holder = ? /*FOR KEY SHARE*/",
            &[(&f.role).into(), (&f.holder).into()],
        )
        .await?
        .map(|r| r.get(0));
    if token == Some(f.token) {
        Ok(())
    } else {
        Err(StoreError::Fenced(format!(
            "{} lease token {} is no longer current; another instance holds the role",
            f.role, f.token
        )))
    }
}

/// Removes a message's contact-log row: the contact was not made after all.
pub(super) async fn unlog<C: Conn>(conn: &mut C, message_id: i64) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM contact_log WHERE message_id = ?",
        &[message_id.into()],
    )
    .await?;
    Ok(())
}

/// Appends a state change to the audit trail and sets the message's state,
/// if it is still `from` (on PostgreSQL another instance may have moved it
/// since it was read). Returns whether it applied.
pub(super) async fn transition<C: Conn>(
    conn: &mut C,
    now: i64,
    message_id: i64,
    from: Option<MessageState>,
    to: MessageState,
    reason: &str,
) -> Result<bool, StoreError> {
    let from = from.map(MessageState::as_str);
    let applied = conn
        .execute(
            "UPDATE messages SET state = ?, reason = ?, updated_at = ? WHERE id = ? AND (? IS NULL OR state = ?)",
            &[to.as_str().into(), reason.into(), now.into(), message_id.into(), from.into(), from.into()],
        )
        .await?;
    if applied == 0 {
        return Ok(false);
    }
    conn.execute(
        "INSERT INTO message_events (message_id, at, from_state, to_state, reason) VALUES (?, ?, ?, ?, ?)",
        &[message_id.into(), now.into(), from.into(), to.as_str().into(), reason.into()],
    )
    .await?;
    Ok(true)
}
