//! Shared `Store` methods (see `shared.rs`): how a send ends (`finish`),
//! delivery receipts, operator decisions, and the sweep that cancels what
//! may no longer be sent.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::backend::{values_rows, Arg, Backend, Conn, DbRow};
use super::changes::{cancel_ineligible_in, check_fence, transition, unlog, Sweep};
use super::flow::BatchRows;
use super::{to_millis, ClaimView, Fence, Finish, FinishItem, MessageState, StoreError, Verdict};

pub(super) async fn finish_and_claim<B: Backend>(
    store: &B,
    now: DateTime<Utc>,
    items: &[FinishItem],
    claim: Option<super::ClaimRequest<'_>>,
) -> Result<(Vec<bool>, Vec<(ClaimView, Verdict)>), StoreError> {
    let mut tx = store.begin_write().await?;
    let done = finish_and_claim_in(store, &mut *tx, now, items, claim).await?;
    if items.is_empty() && done.1.is_empty() {
        // Release the write lock now, not whenever the pooled
        // connection is next used.
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    Ok(done)
}

/// `finish_and_claim`'s statements, in the caller's write transaction
/// (which commits it, or rolls it back when nothing was recorded or
/// claimed).
pub(super) async fn finish_and_claim_in<B: Backend, C: Conn>(
    store: &B,
    tx: &mut C,
    now: DateTime<Utc>,
    items: &[FinishItem],
    claim: Option<super::ClaimRequest<'_>>,
) -> Result<(Vec<bool>, Vec<(ClaimView, Verdict)>), StoreError> {
    let now_ms = to_millis(now);
    let mut applied = vec![false; items.len()];
    // One transaction for the group, rows locked in id order.
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| items[i].message_id);
    let ids: Vec<i64> = order.iter().map(|&i| items[i].message_id).collect();
    let mut current: HashMap<i64, (String, Option<String>, Option<i64>)> = HashMap::new();
    if !ids.is_empty() {
        for row in tx.select_in_i64( "SELECT id, state, attempt_id, contact_point_id FROM messages WHERE id IN ({}) ORDER BY id /*FOR UPDATE*/", &ids).await? {
                current.insert(row.get(0), (row.get(1), row.get(2), row.get(3)));
            }
    }
    let mut writes = BatchRows::default();
    let mut sent = Vec::new();
    for i in order {
        let FinishItem {
            message_id,
            attempt_id,
            finish,
        } = &items[i];
        let message_id = *message_id;
        let Some((st, attempt, cp)) = current.remove(&message_id) else {
            continue;
        };
        if st != "sending" || attempt.as_deref() != Some(attempt_id.as_str()) {
            continue;
        }
        applied[i] = true;
        let from = Some(MessageState::Sending);
        if let Finish::Sent {
            provider,
            provider_ref,
            template_version,
            subject,
            body,
        } = finish
        {
            // The common case: one statement for the group's successes,
            // their events with the group's.
            let reason = format!("accepted by {provider}");
            writes
                .events
                .push((message_id, now_ms, Some("sending"), "sent", reason.clone()));
            sent.push((
                message_id,
                provider,
                provider_ref,
                template_version,
                subject,
                body,
                reason,
            ));
            continue;
        }
        tx.execute(
            "UPDATE messages SET lease_until = NULL WHERE id = ?",
            &[Arg::from(message_id)],
        )
        .await?;
        match finish {
            Finish::Sent { .. } => {}
            Finish::Retry {
                at,
                provider,
                reason,
            } => {
                unlog(&mut *tx, message_id).await?;
                tx.execute(
                    "UPDATE messages SET not_before = ?, provider = ? WHERE id = ?",
                    &[
                        Arg::from(to_millis(*at)),
                        Arg::from(provider),
                        Arg::from(message_id),
                    ],
                )
                .await?;
                transition(
                    &mut *tx,
                    now_ms,
                    message_id,
                    from,
                    MessageState::Deferred,
                    &format!("{provider}: {reason}; retry"),
                )
                .await?;
                store.work_committed(&mut *tx).await?;
            }
            Finish::Failed { provider, reason } => {
                unlog(&mut *tx, message_id).await?;
                tx.execute(
                    "UPDATE messages SET provider = ? WHERE id = ?",
                    &[Arg::from(provider), Arg::from(message_id)],
                )
                .await?;
                transition(
                    &mut *tx,
                    now_ms,
                    message_id,
                    from,
                    MessageState::Failed,
                    &format!("{provider}: {reason}"),
                )
                .await?;
            }
            Finish::Bounced { provider, reason } | Finish::OptedOut { provider, reason } => {
                let bounced = matches!(finish, Finish::Bounced { .. });
                unlog(&mut *tx, message_id).await?;
                // The audit names the provider that reported the refusal.
                tx.execute(
                    "UPDATE messages SET provider = ? WHERE id = ?",
                    &[Arg::from(provider), Arg::from(message_id)],
                )
                .await?;
                // A bounce marks the address invalid on every contact point
                // that has it (it bounces whoever it belongs to); an opt-out
                // at the provider opts this contact point out.
                let (text, source, state, why) = if bounced {
                    (
                        "UPDATE contact_points SET invalid_at = COALESCE(invalid_at, ?), invalid_reason = COALESCE(invalid_reason, ?), updated_at = ?
                          WHERE (channel, address) IN (SELECT channel, address FROM contact_points WHERE id = ?)",
                        format!("hard bounce from {provider}: {reason}"),
                        MessageState::Failed,
                        format!("{provider}: hard bounce: {reason}; the address is suppressed"),
                    )
                } else {
                    (
                        "UPDATE contact_points SET opted_out_at = COALESCE(opted_out_at, ?), opt_out_source = COALESCE(opt_out_source, ?), updated_at = ? WHERE id = ?",
                        format!("provider {provider}"),
                        MessageState::Suppressed,
                        format!("{provider}: {reason}"),
                    )
                };
                if let Some(cp) = cp {
                    tx.execute(
                        text,
                        &[
                            Arg::from(now_ms),
                            Arg::from(source),
                            Arg::from(now_ms),
                            Arg::from(cp),
                        ],
                    )
                    .await?;
                }
                transition(&mut *tx, now_ms, message_id, from, state, &why).await?;
            }
            Finish::NotRendered { reason } => {
                unlog(&mut *tx, message_id).await?;
                transition(
                    &mut *tx,
                    now_ms,
                    message_id,
                    from,
                    MessageState::Failed,
                    &format!("not rendered: {reason}"),
                )
                .await?;
            }
            Finish::Ambiguous { provider, reason } => {
                // Still `sending`, unclaimed and past its lease: the next
                // reconciliation (any instance) asks the provider.
                tx.execute(
                    "UPDATE messages SET provider = ?, claimed_by = NULL WHERE id = ?",
                    &[Arg::from(provider), Arg::from(message_id)],
                )
                .await?;
                tx.execute("INSERT INTO message_events (message_id, at, from_state, to_state, reason) VALUES (?, ?, 'sending', 'sending', ?)", &[Arg::from(message_id), Arg::from(now_ms), Arg::from(format!("{provider}: {reason}; asking {provider} what became of it"))]).await?;
            }
            Finish::Unknown { reason } => {
                transition(
                    &mut *tx,
                    now_ms,
                    message_id,
                    from,
                    MessageState::Unknown,
                    reason.as_str(),
                )
                .await?;
            }
            Finish::Replay { reason } | Finish::Release { reason } => {
                unlog(&mut *tx, message_id).await?;
                let text = match finish {
                    Finish::Release { .. } => {
                        "UPDATE messages SET not_before = ?, attempts = attempts - 1 WHERE id = ?"
                    }
                    _ => "UPDATE messages SET not_before = ? WHERE id = ?",
                };
                tx.execute(text, &[Arg::from(now_ms), Arg::from(message_id)])
                    .await?;
                transition(
                    &mut *tx,
                    now_ms,
                    message_id,
                    from,
                    MessageState::Planned,
                    reason.as_str(),
                )
                .await?;
                store.work_committed(&mut *tx).await?;
            }
        }
    }
    // In `values_rows`'s padded statements (one for up to 200 rows),
    // each text prepared once: a text for each group's exact size was
    // parsed and planned at almost every transaction.
    let mut args: Vec<Arg> = Vec::with_capacity(7 * sent.len());
    for (id, provider, provider_ref, version, subject, body, reason) in &sent {
        args.extend([
            Arg::Int(*id),
            Arg::Text(provider),
            Arg::Text(provider_ref),
            Arg::Text(version),
            Arg::OptText(subject.as_deref()),
            Arg::Text(body),
            Arg::Text(reason),
        ]);
    }
    values_rows(
        &mut *tx,
        "WITH v(id, provider, provider_ref, template_version, subject, body, reason) AS (VALUES {})
         UPDATE messages SET lease_until = NULL, provider = v.provider, provider_ref = v.provider_ref,
                template_version = v.template_version, subject = v.subject, body = v.body,
                state = 'sent', reason = v.reason, updated_at = ?
           FROM v WHERE messages.id = v.id",
        "(?, ?, ?, ?, ?, ?, ?)",
        &args,
        &[Arg::Int(now_ms)],
        true,
    )
    .await?;
    // Then the next batch, after the outcomes (a failed send un-logs
    // its contact, which the claims' caps must see). The outcomes'
    // events wait for the claims' own: claims do not read events, and
    // both go in one insert.
    let claimed = match &claim {
        Some(c) => store.claim_due(&mut *tx, now_ms, c, &mut writes).await?,
        None => Vec::new(),
    };
    writes.write(&mut *tx).await?;
    Ok((applied, claimed))
}

pub(super) async fn receipt<B: Backend>(
    store: &B,
    now: DateTime<Utc>,
    provider: &str,
    ours: Option<i64>,
    provider_ref: &str,
    delivered: bool,
    detail: &str,
) -> Result<bool, StoreError> {
    let now_ms = to_millis(now);
    let mut tx = store.begin_write().await?;
    let row: Option<(i64, String)> = match ours {
            // Our id and the provider's reference must name the same
            // message; a message with no reference yet (a send cut off
            // before it was stored) is reconciled only while in doubt.
            Some(id) => {
                tx.fetch_optional("SELECT id, state FROM messages
                      WHERE id = ? AND ((provider = ? AND provider_ref = ?)
                        OR (provider_ref IS NULL AND (provider IS NULL OR provider = ?)
                            AND state IN ('sending', 'unknown'))) /*FOR UPDATE*/", &[Arg::from(id), Arg::from(provider), Arg::from(provider_ref), Arg::from(provider)]).await?.map(|r| (r.get(0), r.get(1)))
            }
            None => {
                tx.fetch_optional("SELECT id, state FROM messages WHERE provider = ? AND provider_ref = ? /*FOR UPDATE*/", &[Arg::from(provider), Arg::from(provider_ref)]).await?.map(|r| (r.get(0), r.get(1)))
            }
        };
    let to = if delivered {
        MessageState::Delivered
    } else {
        MessageState::Undelivered
    };
    let Some((id, st)) = row else {
        tx.rollback().await?;
        return Ok(false);
    };
    let from = super::codec::state(&st)?;
    // Only a sent (or unknown) message takes a receipt; a final state
    // is never moved back by a late or repeated callback.
    if !matches!(
        from,
        MessageState::Sent | MessageState::Unknown | MessageState::Sending
    ) {
        tx.rollback().await?;
        return Ok(false);
    }
    transition(&mut *tx, now_ms, id, Some(from), to, detail).await?;
    // A send reconciled by its receipt learns who took it.
    tx.execute("UPDATE messages SET provider = COALESCE(provider, ?), provider_ref = COALESCE(provider_ref, ?) WHERE id = ?", &[Arg::from(provider), Arg::from(provider_ref), Arg::from(id)]).await?;
    tx.commit().await?;
    Ok(true)
}

pub(super) async fn operator_decide<B: Backend>(
    store: &B,
    now: DateTime<Utc>,
    message_id: i64,
    release: bool,
) -> Result<Option<MessageState>, StoreError> {
    let now_ms = to_millis(now);
    let mut tx = store.begin_write().await?;
    let st: Option<String> = tx
        .fetch_optional(
            "SELECT state FROM messages WHERE id = ? /*FOR UPDATE*/",
            &[Arg::from(message_id)],
        )
        .await?
        .map(|r| r.get(0));
    let Some(st) = st else {
        tx.rollback().await?;
        return Ok(None);
    };
    let from = super::codec::state(&st)?;
    if !matches!(from, MessageState::Unknown | MessageState::Failed) {
        tx.rollback().await?;
        return Ok(Some(from));
    }
    let to = if release {
        tx.execute(
            "UPDATE messages SET not_before = ?, expires_at = NULL WHERE id = ?",
            &[Arg::from(now_ms), Arg::from(message_id)],
        )
        .await?;
        // The earlier attempt's contact no longer counts: it is resent.
        unlog(&mut *tx, message_id).await?;
        store.work_committed(&mut *tx).await?;
        MessageState::Planned
    } else {
        MessageState::Cancelled
    };
    let reason = crate::reason::Reason::operator(release);
    transition(
        &mut *tx,
        now_ms,
        message_id,
        Some(from),
        to,
        reason.as_str(),
    )
    .await?;
    tx.commit().await?;
    Ok(Some(to))
}

pub(super) async fn cancel_ineligible<B: Backend>(
    store: &B,
    now: DateTime<Utc>,
    changed_since: Option<DateTime<Utc>>,
    fence: Option<&Fence>,
) -> Result<u64, StoreError> {
    let sweep = match changed_since {
        Some(t) => Sweep::ChangedSince(to_millis(t)),
        None => Sweep::Book,
    };
    let mut tx = store.begin_write().await?;
    check_fence(&mut *tx, fence).await?;
    let done = cancel_ineligible_in(&mut *tx, to_millis(now), sweep).await?;
    tx.commit().await?;
    Ok(done)
}

pub(super) async fn cancel_ineligible_of<B: Backend>(
    store: &B,
    now: DateTime<Utc>,
    borrower: &str,
) -> Result<u64, StoreError> {
    let mut tx = store.begin_write().await?;
    let done = cancel_ineligible_in(&mut *tx, to_millis(now), Sweep::Borrower(borrower)).await?;
    tx.commit().await?;
    Ok(done)
}

pub(super) async fn record_bounce<B: Backend>(
    store: &B,
    now: DateTime<Utc>,
    b: &super::BounceRecord<'_>,
) -> Result<super::BounceOutcome, StoreError> {
    use super::BounceOutcome;
    let now_ms = to_millis(now);
    let mut tx = store.begin_write().await?;
    let seen: Option<i64> = tx
        .fetch_optional(
            "SELECT id FROM bounces WHERE digest = ?",
            &[Arg::from(b.digest)],
        )
        .await?
        .map(|r| r.get(0));
    if seen.is_some() {
        tx.rollback().await?;
        return Ok(BounceOutcome::Seen);
    }
    let target: Option<(String, String, String)> = tx.fetch_optional("SELECT cp.channel, cp.address, m.state FROM messages m JOIN contact_points cp ON cp.id = m.contact_point_id WHERE m.id = ? /*FOR UPDATE*/", &[Arg::from(b.message_id)]).await?.map(|r| (r.get(0), r.get(1), r.get(2)));
    let Some((channel, address, state)) = target else {
        tx.rollback().await?;
        return Ok(BounceOutcome::NoMessage);
    };
    // Another instance reading the same mailbox may have got here first.
    let inserted = tx.execute("INSERT INTO bounces (digest, mailbox, message_id, channel, address, class, status, format, reason, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING", &[Arg::from(b.digest), Arg::from(b.mailbox), Arg::from(b.message_id), Arg::from(&channel), Arg::from(&address), Arg::from(b.class), Arg::from(b.status), Arg::from(b.format), Arg::from(b.reason), Arg::from(now_ms)]).await?;
    if inserted == 0 {
        tx.rollback().await?;
        return Ok(BounceOutcome::Seen);
    }
    // What the report does to the address: (statement, reason, label).
    let invalidate = "UPDATE contact_points SET invalid_at = ?, invalid_reason = ?, updated_at = ? WHERE channel = ? AND address = ? AND invalid_at IS NULL";
    let mut soft_count = 0;
    let action = match b.class {
            "hard" => {
                let why = format!("bounced ({} {}, mailbox of {}): {}", b.format, b.status, b.mailbox, b.reason);
                let from = super::codec::state(&state)?;
                if matches!(from, MessageState::Sent | MessageState::Delivered) {
                    transition(&mut *tx, now_ms, b.message_id, Some(from), MessageState::Undelivered, &format!("{why}; the address is suppressed")).await?;
                }
                Some((invalidate, why, "hard_bounce"))
            }
            "soft" => {
                let since = to_millis(now - b.soft_window);
                soft_count = tx.fetch_one("SELECT COUNT(*) FROM bounces WHERE channel = ? AND address = ? AND class = 'soft' AND lifted_at IS NULL AND at >= ?", &[Arg::from(&channel), Arg::from(&address), Arg::from(since)]).await?.get(0);
                (b.soft_limit > 0 && soft_count >= i64::from(b.soft_limit)).then(|| {
                    let why = format!(
                        "{soft_count} soft bounces within {}, the last ({} {}): {}",
                        humantime::format_duration(b.soft_window.to_std().unwrap_or_default()),
                        b.format,
                        b.status,
                        b.reason
                    );
                    (invalidate, why, "soft_bounces")
                })
            }
            _ => Some((
                "UPDATE contact_points SET opted_out_at = ?, opt_out_source = ?, updated_at = ? WHERE channel = ? AND address = ? AND opted_out_at IS NULL",
                format!("complaint ({} {}, mailbox of {})", b.format, b.status, b.mailbox),
                "complaint",
            )),
        };
    let mut suppressed = None;
    if let Some((text, why, label)) = action {
        let n = tx
            .execute(
                text,
                &[
                    Arg::from(now_ms),
                    Arg::from(&why),
                    Arg::from(now_ms),
                    Arg::from(&channel),
                    Arg::from(&address),
                ],
            )
            .await?;
        if n > 0 {
            suppressed = Some(label);
        }
    }
    tx.commit().await?;
    Ok(BounceOutcome::Recorded {
        address,
        suppressed,
        soft_count,
    })
}

pub(super) async fn bounces<B: Backend>(
    store: &B,
    borrower: &str,
) -> Result<Vec<super::BounceRow>, StoreError> {
    type Row = (
        Option<i64>,
        String,
        String,
        String,
        String,
        String,
        String,
        String,
        i64,
        Option<i64>,
    );
    let rows: Vec<Row> = store.reader().await?.fetch("SELECT x.message_id, x.mailbox, x.channel, x.address, x.class, x.status, x.format, x.reason, x.at, x.lifted_at
              FROM bounces x JOIN messages m ON m.id = x.message_id JOIN borrowers b ON b.id = m.borrower_id
             WHERE b.external_id = ? ORDER BY x.at, x.id", &[Arg::from(borrower)]).await?.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6), r.get(7), r.get(8), r.get(9))).collect();
    rows.into_iter()
        .map(
            |(message_id, mailbox, channel, address, class, status, format, reason, at, lifted)| {
                Ok(super::BounceRow {
                    message_id,
                    mailbox,
                    channel,
                    address,
                    class,
                    status,
                    format,
                    reason,
                    at: super::from_millis(at)?,
                    lifted_at: lifted.map(super::from_millis).transpose()?,
                })
            },
        )
        .collect()
}
