//! Leases, written once for both backends as generic functions over
//! `Backend`: the claim leases of an instance's sends in flight (renewed,
//! released) and the exclusive roles (the planner's) with their fencing
//! tokens.

use chrono::{DateTime, Utc};

use super::backend::{Arg, Backend, Conn, DbRow};
use super::{to_millis, Fence, StoreError};

pub(super) async fn renew_claims<B: Backend>(
    store: &B,
    holder: &str,
    until: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let r = store
        .reader()
        .await?
        .execute(
            &format!(
                "UPDATE messages SET lease_until = ? WHERE id IN ({})",
                own_claims("AND lease_until IS NOT NULL")
            ),
            &[Arg::from(to_millis(until)), Arg::from(holder)],
        )
        .await?;
    Ok(r)
}

/// The ids of `holder`'s sends in flight (the one placeholder) that meet
/// `more`, locked in id order: the transactions that record outcomes lock
/// the same rows in that order, and a statement that locked them in the
/// table's order deadlocked with them on PostgreSQL.
fn own_claims(more: &str) -> String {
    format!(
        "SELECT id FROM messages WHERE state = 'sending' AND claimed_by = ? {more}
          ORDER BY id /*FOR UPDATE*/"
    )
}

pub(super) async fn release_claims<B: Backend>(store: &B, holder: &str) -> Result<u64, StoreError> {
    let r = store
        .reader()
        .await?
        .execute(
            &format!(
                "UPDATE messages SET lease_until = NULL WHERE id IN ({})",
                own_claims("")
            ),
            &[Arg::from(holder)],
        )
        .await?;
    Ok(r)
}

/// Takes the role if it is free, expired or already `holder`'s; the token
/// rises when it changes hands (or when the holder's own lease had lapsed).
const ACQUIRE_LEASE_SQL: &str =
    "INSERT INTO leases (name, holder, token, expires_at) VALUES (?, ?, 1, ?)
     ON CONFLICT (name) DO UPDATE SET
        token = CASE WHEN leases.holder = excluded.holder AND leases.expires_at >= ?
                     THEN leases.token ELSE leases.token + 1 END,
        holder = excluded.holder,
        expires_at = excluded.expires_at
      WHERE leases.holder = excluded.holder OR leases.expires_at < ?
     RETURNING token";

/// `Store::acquire_lease`, in three ways, none of which waits for the
/// holder's fenced writes unless the role changes hands:
///
/// - a live lease held by another instance is read, not bid for (the
///   bidder's sending loop, whose upkeep bids, claims nothing until the
///   answer comes);
/// - the holder's own live lease is renewed by a plain update of its
///   expiry, which the fenced writes' `FOR KEY SHARE` does not block (a
///   long pass renews while its pages are written);
/// - a free or expired lease (the holder's own too, whose token then rises)
///   is taken in a transaction that first locks the row `FOR UPDATE`, so it
///   waits for every write fenced by the old token to commit, and every
///   later one reads the new token.
///
/// A lease that runs out or changes hands between the read and the write is
/// dealt with by the write's own condition.
pub(super) async fn acquire_lease<B: Backend>(
    store: &B,
    role: &str,
    holder: &str,
    now: DateTime<Utc>,
    ttl: std::time::Duration,
) -> Result<Option<Fence>, StoreError> {
    let until = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    let (now, until) = (to_millis(now), to_millis(until));
    let fence = |token| Fence {
        role: role.to_owned(),
        holder: holder.to_owned(),
        token,
    };
    let mut conn = store.reader().await?;
    let live = conn
        .fetch_optional(
            "SELECT holder, token FROM leases WHERE name = ? AND expires_at >= ?",
            &[Arg::from(role), Arg::from(now)],
        )
        .await?
        .map(|r| (r.get::<String>(0), r.get::<i64>(1)));
    match live {
        Some((other, _)) if other != holder => return Ok(None),
        Some((_, token)) => {
            let renewed = conn
                .fetch_optional(
                    "UPDATE leases SET expires_at = ?
                      WHERE name = ? AND holder = ? AND token = ? AND expires_at >= ?
                     RETURNING token",
                    &[
                        Arg::from(until),
                        Arg::from(role),
                        Arg::from(holder),
                        Arg::from(token),
                        Arg::from(now),
                    ],
                )
                .await?;
            if renewed.is_some() {
                return Ok(Some(fence(token)));
            }
        }
        None => {}
    }
    drop(conn);
    let mut tx = store.begin_write().await?;
    tx.fetch_optional(
        "SELECT token FROM leases WHERE name = ? /*FOR UPDATE*/",
        &[Arg::from(role)],
    )
    .await?;
    let token = tx
        .fetch_optional(
            ACQUIRE_LEASE_SQL,
            &[
                Arg::from(role),
                Arg::from(holder),
                Arg::from(until),
                Arg::from(now),
                Arg::from(now),
            ],
        )
        .await?
        .map(|r| r.get::<i64>(0));
    tx.commit().await?;
    Ok(token.map(fence))
}

pub(super) async fn release_lease<B: Backend>(store: &B, fence: &Fence) -> Result<(), StoreError> {
    store
        .reader()
        .await?
        .execute(
            "UPDATE leases SET expires_at = 0 WHERE name = ? AND holder = ? AND token = ?",
            &[
                Arg::from(&fence.role),
                Arg::from(&fence.holder),
                Arg::from(fence.token),
            ],
        )
        .await?;
    Ok(())
}
