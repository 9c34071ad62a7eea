//! The embedded SQLite backend: one file in WAL mode, `synchronous=FULL` so a
//! committed state change survives a power cut (a message marked `sending`
//! must stay marked), migrations embedded in the binary.
//!
//! Imports run in one `BEGIN IMMEDIATE` transaction per file: the write lock
//! is taken up front, so two writers never deadlock upgrading a read lock,
//! and a killed import leaves only an uncommitted WAL tail that SQLite
//! discards on the next open.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use super::sqlite_flow::{self, channel as parse_channel, claim_view, load_borrowers, transition};
use super::{
    effective_status, from_millis, to_millis, AuditRow, ClaimLease, ClaimView, Fence, Finish,
    ImportRecord, ImportTx, LoanBookRow, LoanView, MessageQuery, MessageState, MessageView,
    NewMessage, PaymentRow, PlanBorrower, RowOutcome, Store, StoreCounts, StoreError, Verdict,
    ACQUIRE_LEASE_SQL,
};
use crate::config::StoreConfig;
use crate::domain::{Channel, Currency, LoanId, LoanStatus, Money};

/// Bound parameters per `IN (…)` list; well under SQLite's limit.
const IN_CHUNK: usize = 500;

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub async fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        let path = config.sqlite_path().ok_or_else(|| {
            StoreError::Unsupported(format!("`{}` is not a sqlite URL", config.url))
        })?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                path: parent.display().to_string(),
                source,
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match config.synchronous {
                crate::config::Synchronous::Full => SqliteSynchronous::Full,
                crate::config::Synchronous::Normal => SqliteSynchronous::Normal,
                crate::config::Synchronous::Off => SqliteSynchronous::Off,
            })
            .busy_timeout(config.busy_timeout.get())
            .foreign_keys(true)
            // 64 MiB of page cache per connection: a large import is one
            // transaction, and a small cache spills it to the WAL page by page.
            .pragma("cache_size", "-65536");
        let pool = SqlitePoolOptions::new()
            .max_connections(config.max_connections)
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool })
    }

    /// The pool (the copy tool reads and writes tables directly).
    pub(super) fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn begin_import(&self, now: DateTime<Utc>) -> Result<Box<dyn ImportTx>, StoreError> {
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(Box::new(SqliteImport {
            tx,
            now: to_millis(now),
        }))
    }

    async fn last_import_hash(&self, path: &str) -> Result<Option<String>, StoreError> {
        let row =
            sqlx::query("SELECT content_hash FROM imports WHERE path = ? ORDER BY id DESC LIMIT 1")
                .bind(path)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    async fn counts(&self) -> Result<StoreCounts, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM borrowers),
                    (SELECT COUNT(*) FROM loans),
                    (SELECT COUNT(*) FROM loans WHERE status = 'active'),
                    (SELECT COUNT(*) FROM loans WHERE status = 'paid'),
                    (SELECT COUNT(*) FROM payments),
                    (SELECT COUNT(*) FROM contact_points WHERE active = 1),
                    (SELECT COUNT(*) FROM messages),
                    (SELECT COUNT(*) FROM imports)",
        )
        .fetch_one(&self.pool)
        .await?;
        let n = |i: usize| row.get::<i64, _>(i) as u64;
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

    async fn loan(&self, id: &LoanId) -> Result<Option<LoanView>, StoreError> {
        let Some(row) = sqlx::query(
            "SELECT l.id, l.external_id, b.external_id, l.due_date, l.amount_due, l.currency, l.status
               FROM loans l JOIN borrowers b ON b.id = l.borrower_id
              WHERE l.external_id = ?",
        )
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let loan_pk: i64 = row.get(0);
        let amounts: Vec<String> =
            sqlx::query_scalar("SELECT amount FROM payments WHERE loan_id = ?")
                .bind(loan_pk)
                .fetch_all(&self.pool)
                .await?;
        let mut paid_total = Decimal::ZERO;
        for a in &amounts {
            paid_total += decimal(a)?;
        }
        let currency =
            Currency::parse(&row.get::<String, _>(5)).map_err(|e| StoreError::Corrupt(e.0))?;
        Ok(Some(LoanView {
            id: LoanId::parse(&row.get::<String, _>(1)).map_err(|e| StoreError::Corrupt(e.0))?,
            borrower_id: row.get(2),
            due_date: date(&row.get::<String, _>(3))?,
            amount_due: Money {
                amount: decimal(&row.get::<String, _>(4))?,
                currency,
            },
            status: status(&row.get::<String, _>(6))?,
            paid_total,
        }))
    }

    async fn planning_batch(
        &self,
        after: i64,
        limit: u32,
        since: DateTime<Utc>,
    ) -> Result<Vec<PlanBorrower>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let pks: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT borrower_id FROM loans WHERE status = 'active' AND borrower_id > ? ORDER BY borrower_id LIMIT ?",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
        load_borrowers(&mut conn, &pks, since).await
    }

    async fn plan_borrower(
        &self,
        external_id: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<PlanBorrower>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let pk: Option<i64> = sqlx::query_scalar("SELECT id FROM borrowers WHERE external_id = ?")
            .bind(external_id)
            .fetch_optional(&mut *conn)
            .await?;
        match pk {
            Some(pk) => Ok(load_borrowers(&mut conn, &[pk], since).await?.pop()),
            None => Ok(None),
        }
    }

    async fn record_plan(
        &self,
        now: DateTime<Utc>,
        messages: &[NewMessage],
        fence: Option<&Fence>,
    ) -> Result<u64, StoreError> {
        if messages.is_empty() {
            return Ok(0);
        }
        let now_ms = to_millis(now);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        check_fence(&mut tx, fence).await?;
        let mut recorded = 0;
        for m in messages {
            // Planned at most once, ever: skip if any of its keys exists.
            let mut taken = false;
            for (loan, due, step) in &m.loans {
                let exists: Option<i64> = sqlx::query_scalar(
                    "SELECT 1 FROM message_loans WHERE loan_id = ? AND due_date = ? AND step = ? AND channel = ?",
                )
                .bind(loan)
                .bind(due.format("%Y-%m-%d").to_string())
                .bind(step)
                .bind(m.channel.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                taken |= exists.is_some();
            }
            if taken {
                continue;
            }
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO messages (dedupe_key, borrower_id, contact_point_id, channel, step, template, state, reason,
                                       not_before, expires_at, created_at, updated_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
            )
            .bind(&m.dedupe_key)
            .bind(m.borrower_pk)
            .bind(m.contact_point)
            .bind(m.channel.as_str())
            .bind(&m.step)
            .bind(&m.template)
            .bind(m.state.as_str())
            .bind(&m.reason)
            .bind(to_millis(m.not_before))
            .bind(m.expires_at.map(to_millis))
            .bind(now_ms)
            .bind(now_ms)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(id) = id else { continue };
            for (loan, due, step) in &m.loans {
                sqlx::query("INSERT INTO message_loans (message_id, loan_id, due_date, step, channel) VALUES (?, ?, ?, ?, ?)")
                    .bind(id)
                    .bind(loan)
                    .bind(due.format("%Y-%m-%d").to_string())
                    .bind(step)
                    .bind(m.channel.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("INSERT INTO message_events (message_id, at, from_state, to_state, reason) VALUES (?, ?, NULL, ?, ?)")
                .bind(id)
                .bind(now_ms)
                .bind(m.state.as_str())
                .bind(&m.reason)
                .execute(&mut *tx)
                .await?;
            for (loan, due, step) in &m.handoffs {
                sqlx::query(
                    "INSERT INTO handoffs (loan_id, due_date, step, state, next_attempt_at, created_at, updated_at)
                     VALUES (?, ?, ?, 'pending', ?, ?, ?) ON CONFLICT DO NOTHING",
                )
                .bind(loan)
                .bind(due.format("%Y-%m-%d").to_string())
                .bind(step)
                .bind(now_ms)
                .bind(now_ms)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            }
            recorded += 1;
        }
        tx.commit().await?;
        Ok(recorded)
    }

    async fn cancel_ineligible(
        &self,
        now: DateTime<Utc>,
        fence: Option<&Fence>,
    ) -> Result<u64, StoreError> {
        let now_ms = to_millis(now);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        check_fence(&mut tx, fence).await?;
        let mut doomed: Vec<(i64, String, String)> = Vec::new();
        for row in sqlx::query(
            // CROSS JOIN fixes the join order: from the message's few loans,
            // never from all active loans (which SQLite otherwise picks).
            "SELECT m.id, m.state, (SELECT group_concat(DISTINCT l.status) FROM message_loans ml CROSS JOIN loans l ON l.id = ml.loan_id
                                     WHERE ml.message_id = m.id)
               FROM messages m
              WHERE m.state IN ('planned', 'deferred')
                AND NOT EXISTS (SELECT 1 FROM message_loans ml CROSS JOIN loans l ON l.id = ml.loan_id
                                 WHERE ml.message_id = m.id AND l.status = 'active')",
        )
        .fetch_all(&mut *tx)
        .await?
        {
            let statuses: Option<String> = row.get(2);
            doomed.push((row.get(0), row.get(1), format!("loan no longer active ({})", statuses.unwrap_or_default())));
        }
        for row in sqlx::query(
            "SELECT m.id, m.state, cp.opt_out_source FROM messages m JOIN contact_points cp ON cp.id = m.contact_point_id
              WHERE m.state IN ('planned', 'deferred') AND cp.opted_out_at IS NOT NULL",
        )
        .fetch_all(&mut *tx)
        .await?
        {
            let source: Option<String> = row.get(2);
            doomed.push((row.get(0), row.get(1), format!("contact point opted out ({})", source.unwrap_or_default())));
        }
        for row in sqlx::query(
            "SELECT m.id, m.state, h.kind FROM messages m JOIN holds h ON h.borrower_id = m.borrower_id
              WHERE m.state IN ('planned', 'deferred') AND h.cleared_at IS NULL AND h.until_date IS NULL",
        )
        .fetch_all(&mut *tx)
        .await?
        {
            doomed.push((row.get(0), row.get(1), format!("borrower on hold ({})", row.get::<String, _>(2))));
        }
        if doomed.is_empty() {
            tx.rollback().await?;
            return Ok(0);
        }
        let mut done = std::collections::HashSet::new();
        for (id, from, reason) in doomed {
            if done.insert(id) {
                let from = sqlite_flow::state(&from)?;
                transition(
                    &mut tx,
                    now_ms,
                    id,
                    Some(from),
                    MessageState::Cancelled,
                    &reason,
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(done.len() as u64)
    }

    async fn claim_next(
        &self,
        now: DateTime<Utc>,
        since: DateTime<Utc>,
        lease: &ClaimLease,
        decide: &(dyn for<'v> Fn(&'v ClaimView) -> Verdict + Send + Sync),
    ) -> Result<Option<(ClaimView, Verdict)>, StoreError> {
        let now_ms = to_millis(now);
        // The write lock is taken before reading, so the eligibility and cap
        // check below and the `sending` mark are one atomic step: no other
        // worker (in this process or another on the same file) can claim a
        // message of the same borrower in between.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let Some(row) = sqlx::query(
            "SELECT * FROM messages WHERE state IN ('planned', 'deferred') AND not_before <= ? ORDER BY not_before, id LIMIT 1",
        )
        .bind(now_ms)
        .fetch_optional(&mut *tx)
        .await?
        else {
            // Release the write lock now, not whenever the pooled
            // connection is next used.
            tx.rollback().await?;
            return Ok(None);
        };
        let view = claim_view(&mut tx, &row, since).await?;
        let verdict = decide(&view);
        let from = Some(view.state);
        match &verdict {
            Verdict::Send {
                attempt_id, window, ..
            } => {
                sqlx::query(
                    "UPDATE messages SET attempt_id = ?, attempts = attempts + 1, claimed_by = ?, lease_until = ? WHERE id = ?",
                )
                .bind(attempt_id)
                .bind(&lease.holder)
                .bind(to_millis(lease.until))
                .bind(view.message_id)
                .execute(&mut *tx)
                .await?;
                transition(
                    &mut tx,
                    now_ms,
                    view.message_id,
                    from,
                    MessageState::Sending,
                    &format!("claimed; allowed by {window}"),
                )
                .await?;
                sqlx::query("INSERT INTO contact_log (message_id, borrower_id, contact_point_id, channel, at) VALUES (?, ?, ?, ?, ?)")
                    .bind(view.message_id)
                    .bind(view.borrower.pk)
                    .bind(view.contact.as_ref().map(|c| c.id))
                    .bind(view.channel.as_str())
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
            }
            Verdict::Defer { until, reason } => {
                sqlx::query("UPDATE messages SET not_before = ? WHERE id = ?")
                    .bind(to_millis(*until))
                    .bind(view.message_id)
                    .execute(&mut *tx)
                    .await?;
                transition(
                    &mut tx,
                    now_ms,
                    view.message_id,
                    from,
                    MessageState::Deferred,
                    reason,
                )
                .await?;
            }
            Verdict::Cancel { reason } => {
                transition(
                    &mut tx,
                    now_ms,
                    view.message_id,
                    from,
                    MessageState::Cancelled,
                    reason,
                )
                .await?
            }
            Verdict::Expire { reason } => {
                transition(
                    &mut tx,
                    now_ms,
                    view.message_id,
                    from,
                    MessageState::Expired,
                    reason,
                )
                .await?
            }
        }
        tx.commit().await?;
        Ok(Some((view, verdict)))
    }

    async fn finish(
        &self,
        now: DateTime<Utc>,
        message_id: i64,
        attempt_id: &str,
        finish: &Finish,
    ) -> Result<bool, StoreError> {
        let now_ms = to_millis(now);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let current: Option<(String, Option<String>, Option<i64>)> =
            sqlx::query_as("SELECT state, attempt_id, contact_point_id FROM messages WHERE id = ?")
                .bind(message_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((st, attempt, cp)) = current else {
            tx.rollback().await?;
            return Ok(false);
        };
        if st != "sending" || attempt.as_deref() != Some(attempt_id) {
            tx.rollback().await?;
            return Ok(false);
        }
        let from = Some(MessageState::Sending);
        sqlx::query("UPDATE messages SET lease_until = NULL WHERE id = ?")
            .bind(message_id)
            .execute(&mut *tx)
            .await?;
        match finish {
            Finish::Sent {
                provider,
                provider_ref,
                template_version,
                subject,
                body,
            } => {
                sqlx::query("UPDATE messages SET provider = ?, provider_ref = ?, template_version = ?, subject = ?, body = ? WHERE id = ?")
                    .bind(provider)
                    .bind(provider_ref)
                    .bind(template_version)
                    .bind(subject)
                    .bind(body)
                    .bind(message_id)
                    .execute(&mut *tx)
                    .await?;
                transition(
                    &mut tx,
                    now_ms,
                    message_id,
                    from,
                    MessageState::Sent,
                    &format!("accepted by {provider}"),
                )
                .await?;
            }
            Finish::Retry {
                at,
                provider,
                reason,
            } => {
                unlog(&mut tx, message_id).await?;
                sqlx::query("UPDATE messages SET not_before = ?, provider = ? WHERE id = ?")
                    .bind(to_millis(*at))
                    .bind(provider)
                    .bind(message_id)
                    .execute(&mut *tx)
                    .await?;
                transition(
                    &mut tx,
                    now_ms,
                    message_id,
                    from,
                    MessageState::Deferred,
                    &format!("{provider}: {reason}; retry"),
                )
                .await?;
            }
            Finish::Failed { provider, reason } => {
                unlog(&mut tx, message_id).await?;
                sqlx::query("UPDATE messages SET provider = ? WHERE id = ?")
                    .bind(provider)
                    .bind(message_id)
                    .execute(&mut *tx)
                    .await?;
                transition(
                    &mut tx,
                    now_ms,
                    message_id,
                    from,
                    MessageState::Failed,
                    &format!("{provider}: {reason}"),
                )
                .await?;
            }
            Finish::OptedOut { provider, reason } => {
                unlog(&mut tx, message_id).await?;
                if let Some(cp) = cp {
                    sqlx::query("UPDATE contact_points SET opted_out_at = COALESCE(opted_out_at, ?), opt_out_source = COALESCE(opt_out_source, ?), updated_at = ? WHERE id = ?")
                        .bind(now_ms)
                        .bind(format!("provider {provider}"))
                        .bind(now_ms)
                        .bind(cp)
                        .execute(&mut *tx)
                        .await?;
                }
                transition(
                    &mut tx,
                    now_ms,
                    message_id,
                    from,
                    MessageState::Suppressed,
                    &format!("{provider}: {reason}"),
                )
                .await?;
            }
            Finish::NotRendered { reason } => {
                unlog(&mut tx, message_id).await?;
                transition(
                    &mut tx,
                    now_ms,
                    message_id,
                    from,
                    MessageState::Failed,
                    &format!("not rendered: {reason}"),
                )
                .await?;
            }
            Finish::Unknown { reason } => {
                transition(
                    &mut tx,
                    now_ms,
                    message_id,
                    from,
                    MessageState::Unknown,
                    reason,
                )
                .await?;
            }
            Finish::Replay { reason } => {
                unlog(&mut tx, message_id).await?;
                sqlx::query("UPDATE messages SET not_before = ? WHERE id = ?")
                    .bind(now_ms)
                    .bind(message_id)
                    .execute(&mut *tx)
                    .await?;
                transition(
                    &mut tx,
                    now_ms,
                    message_id,
                    from,
                    MessageState::Planned,
                    reason,
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn next_pending_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let at: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(not_before) FROM messages WHERE state IN ('planned', 'deferred')",
        )
        .fetch_one(&self.pool)
        .await?;
        at.map(from_millis).transpose()
    }

    async fn in_flight(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(i64, String, crate::domain::Channel)>, StoreError> {
        let rows = sqlx::query("SELECT id, COALESCE(attempt_id, ''), channel FROM messages
                                 WHERE state = 'sending' AND (lease_until IS NULL OR lease_until < ?) ORDER BY id")
            .bind(to_millis(now))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.get(0), r.get(1), parse_channel(&r.get::<String, _>(2))?)))
            .collect()
    }

    async fn renew_claims(&self, holder: &str, until: DateTime<Utc>) -> Result<u64, StoreError> {
        let r = sqlx::query("UPDATE messages SET lease_until = ? WHERE state = 'sending' AND claimed_by = ? AND lease_until IS NOT NULL")
            .bind(to_millis(until))
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    async fn release_claims(&self, holder: &str) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE messages SET lease_until = NULL WHERE state = 'sending' AND claimed_by = ?",
        )
        .bind(holder)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    async fn acquire_lease(
        &self,
        role: &str,
        holder: &str,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<Option<Fence>, StoreError> {
        let until = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let token: Option<i64> = sqlx::query_scalar(&ACQUIRE_LEASE_SQL.replace('$', "?"))
            .bind(role)
            .bind(holder)
            .bind(to_millis(until))
            .bind(to_millis(now))
            .fetch_optional(&self.pool)
            .await?;
        Ok(token.map(|token| Fence {
            role: role.to_owned(),
            holder: holder.to_owned(),
            token,
        }))
    }

    async fn release_lease(&self, fence: &Fence) -> Result<(), StoreError> {
        sqlx::query("UPDATE leases SET expires_at = 0 WHERE name = ? AND holder = ? AND token = ?")
            .bind(&fence.role)
            .bind(&fence.holder)
            .bind(fence.token)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn set_opt_out(
        &self,
        now: DateTime<Utc>,
        borrower: &str,
        channel: crate::domain::Channel,
        out: bool,
        source: &str,
    ) -> Result<bool, StoreError> {
        let now_ms = to_millis(now);
        let sql = if out {
            "UPDATE contact_points SET opted_out_at = COALESCE(opted_out_at, ?), opt_out_source = ?, updated_at = ?
              WHERE active = 1 AND channel = ? AND borrower_id = (SELECT id FROM borrowers WHERE external_id = ?)"
        } else {
            "UPDATE contact_points SET opted_out_at = NULL, opt_out_source = ?, updated_at = ?
              WHERE active = 1 AND channel = ? AND borrower_id = (SELECT id FROM borrowers WHERE external_id = ?) AND ? IS NOT NULL"
        };
        let q = if out {
            sqlx::query(sql)
                .bind(now_ms)
                .bind(source)
                .bind(now_ms)
                .bind(channel.as_str())
                .bind(borrower)
        } else {
            sqlx::query(sql)
                .bind(source)
                .bind(now_ms)
                .bind(channel.as_str())
                .bind(borrower)
                .bind(now_ms)
        };
        Ok(q.execute(&self.pool).await?.rows_affected() > 0)
    }

    async fn opt_out_address(
        &self,
        now: DateTime<Utc>,
        channel: crate::domain::Channel,
        address: &str,
        source: &str,
    ) -> Result<u64, StoreError> {
        let now_ms = to_millis(now);
        let r = sqlx::query(
            "UPDATE contact_points SET opted_out_at = COALESCE(opted_out_at, ?), opt_out_source = COALESCE(opt_out_source, ?), updated_at = ?
              WHERE channel = ? AND address = ?",
        )
        .bind(now_ms)
        .bind(source)
        .bind(now_ms)
        .bind(channel.as_str())
        .bind(address)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    async fn add_hold(
        &self,
        now: DateTime<Utc>,
        borrower: Option<&str>,
        loan: Option<&str>,
        kind: crate::domain::HoldKind,
        until: Option<NaiveDate>,
    ) -> Result<Option<i64>, StoreError> {
        let (b, l): (Option<i64>, Option<i64>) = match (borrower, loan) {
            (_, Some(loan)) => (
                None,
                sqlx::query_scalar("SELECT id FROM loans WHERE external_id = ?")
                    .bind(loan)
                    .fetch_optional(&self.pool)
                    .await?,
            ),
            (Some(b), None) => (
                sqlx::query_scalar("SELECT id FROM borrowers WHERE external_id = ?")
                    .bind(b)
                    .fetch_optional(&self.pool)
                    .await?,
                None,
            ),
            (None, None) => (None, None),
        };
        if b.is_none() && l.is_none() {
            return Ok(None);
        }
        let id: i64 = sqlx::query_scalar("INSERT INTO holds (borrower_id, loan_id, kind, until_date, created_at) VALUES (?, ?, ?, ?, ?) RETURNING id")
            .bind(b)
            .bind(l)
            .bind(kind.as_str())
            .bind(until.map(|d| d.format("%Y-%m-%d").to_string()))
            .bind(to_millis(now))
            .fetch_one(&self.pool)
            .await?;
        Ok(Some(id))
    }

    async fn clear_hold(&self, now: DateTime<Utc>, id: i64) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE holds SET cleared_at = ? WHERE id = ? AND cleared_at IS NULL")
            .bind(to_millis(now))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn opt_out_message_contact(
        &self,
        now: DateTime<Utc>,
        message_id: i64,
        source: &str,
    ) -> Result<bool, StoreError> {
        let now_ms = to_millis(now);
        let r = sqlx::query(
            "UPDATE contact_points SET opted_out_at = ?, opt_out_source = ?, updated_at = ?
              WHERE id = (SELECT contact_point_id FROM messages WHERE id = ?) AND opted_out_at IS NULL",
        )
        .bind(now_ms)
        .bind(source)
        .bind(now_ms)
        .bind(message_id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn message_events(
        &self,
        message_id: i64,
    ) -> Result<Vec<super::MessageEvent>, StoreError> {
        let rows = sqlx::query("SELECT at, from_state, to_state, reason FROM message_events WHERE message_id = ? ORDER BY id")
            .bind(message_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(super::MessageEvent {
                    at: from_millis(r.get(0))?,
                    from: r
                        .get::<Option<String>, _>(1)
                        .as_deref()
                        .map(sqlite_flow::state)
                        .transpose()?,
                    to: sqlite_flow::state(&r.get::<String, _>(2))?,
                    reason: r.get(3),
                })
            })
            .collect()
    }

    async fn sent_since(&self, since: DateTime<Utc>) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM contact_log WHERE at >= ?")
            .bind(to_millis(since))
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    async fn message_breakdown(
        &self,
    ) -> Result<
        Vec<(
            MessageState,
            crate::domain::Channel,
            Option<String>,
            Option<String>,
            u64,
        )>,
        StoreError,
    > {
        let rows = sqlx::query("SELECT state, channel, provider, reason, COUNT(*) FROM messages GROUP BY state, channel, provider, reason")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    sqlite_flow::state(&r.get::<String, _>(0))?,
                    parse_channel(&r.get::<String, _>(1))?,
                    r.get(2),
                    r.get(3),
                    r.get::<i64, _>(4) as u64,
                ))
            })
            .collect()
    }

    async fn receipt(
        &self,
        now: DateTime<Utc>,
        provider: &str,
        provider_ref: &str,
        delivered: bool,
        detail: &str,
    ) -> Result<bool, StoreError> {
        let now_ms = to_millis(now);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        // Our own message id (`m:<id>`, echoed by providers that carry it)
        // also matches a message whose send was interrupted before the
        // provider's id was recorded: the receipt reconciles it.
        let row: Option<(i64, String)> = match provider_ref
            .strip_prefix("m:")
            .and_then(|id| id.parse::<i64>().ok())
        {
            Some(id) => {
                sqlx::query_as("SELECT id, state FROM messages WHERE id = ?")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
            }
            None => {
                sqlx::query_as(
                    "SELECT id, state FROM messages WHERE provider = ? AND provider_ref = ?",
                )
                .bind(provider)
                .bind(provider_ref)
                .fetch_optional(&mut *tx)
                .await?
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
        let from = sqlite_flow::state(&st)?;
        // Only a sent (or unknown) message takes a receipt; a final state
        // is never moved back by a late or repeated callback.
        if !matches!(
            from,
            MessageState::Sent | MessageState::Unknown | MessageState::Sending
        ) {
            tx.rollback().await?;
            return Ok(false);
        }
        transition(&mut tx, now_ms, id, Some(from), to, detail).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn opt_in_address(
        &self,
        now: DateTime<Utc>,
        channel: crate::domain::Channel,
        address: &str,
        source: &str,
    ) -> Result<u64, StoreError> {
        let now_ms = to_millis(now);
        let r = sqlx::query(
            "UPDATE contact_points SET opted_out_at = NULL, opt_out_source = ?, updated_at = ? WHERE channel = ? AND address = ? AND opted_out_at IS NOT NULL",
        )
        .bind(source)
        .bind(now_ms)
        .bind(channel.as_str())
        .bind(address)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    async fn operator_decide(
        &self,
        now: DateTime<Utc>,
        message_id: i64,
        release: bool,
    ) -> Result<Option<MessageState>, StoreError> {
        let now_ms = to_millis(now);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let st: Option<String> = sqlx::query_scalar("SELECT state FROM messages WHERE id = ?")
            .bind(message_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(st) = st else {
            tx.rollback().await?;
            return Ok(None);
        };
        let from = sqlite_flow::state(&st)?;
        if !matches!(from, MessageState::Unknown | MessageState::Failed) {
            tx.rollback().await?;
            return Ok(Some(from));
        }
        let to = if release {
            sqlx::query("UPDATE messages SET not_before = ?, expires_at = NULL WHERE id = ?")
                .bind(now_ms)
                .bind(message_id)
                .execute(&mut *tx)
                .await?;
            // The earlier attempt's contact no longer counts: it is resent.
            unlog(&mut tx, message_id).await?;
            MessageState::Planned
        } else {
            MessageState::Cancelled
        };
        let reason = if release {
            "released by an operator for sending"
        } else {
            "cancelled by an operator"
        };
        transition(&mut tx, now_ms, message_id, Some(from), to, reason).await?;
        tx.commit().await?;
        Ok(Some(to))
    }

    async fn secret(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let mut fresh = [0u8; 32];
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut fresh))
            .map_err(|source| StoreError::Io {
                path: "/dev/urandom".into(),
                source,
            })?;
        // Insert-if-absent, then read: concurrent first starts agree.
        sqlx::query("INSERT INTO settings (name, value, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(&fresh[..])
            .bind(to_millis(Utc::now()))
            .execute(&self.pool)
            .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE name = ?")
                .bind(name)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn messages(&self, query: &MessageQuery) -> Result<Vec<MessageView>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.id, b.external_id, m.channel, m.step, m.template, m.template_version, m.state, m.reason, m.not_before,
                    m.provider, cp.address, m.subject, m.body, m.updated_at,
                    (SELECT group_concat(l.external_id, ',') FROM message_loans ml CROSS JOIN loans l ON l.id = ml.loan_id WHERE ml.message_id = m.id)
               FROM messages m JOIN borrowers b ON b.id = m.borrower_id
               LEFT JOIN contact_points cp ON cp.id = m.contact_point_id
              WHERE (? IS NULL OR m.state = ?) AND (? IS NULL OR b.external_id = ?)
              ORDER BY m.id LIMIT ?",
        )
        .bind(query.state.map(MessageState::as_str))
        .bind(query.state.map(MessageState::as_str))
        .bind(&query.borrower)
        .bind(&query.borrower)
        .bind(i64::from(query.limit.unwrap_or(u32::MAX >> 1)))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MessageView {
                    id: r.get(0),
                    borrower_id: r.get(1),
                    channel: parse_channel(&r.get::<String, _>(2))?,
                    step: r.get(3),
                    template: r.get(4),
                    template_version: r.get(5),
                    state: sqlite_flow::state(&r.get::<String, _>(6))?,
                    reason: r.get(7),
                    not_before: from_millis(r.get(8))?,
                    provider: r.get(9),
                    address: r.get(10),
                    subject: r.get(11),
                    body: r.get(12),
                    updated_at: from_millis(r.get(13))?,
                    loan_ids: r
                        .get::<Option<String>, _>(14)
                        .map(|s| s.split(',').map(str::to_owned).collect())
                        .unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn message_counts(&self) -> Result<Vec<(MessageState, u64)>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) FROM messages GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    sqlite_flow::state(&r.get::<String, _>(0))?,
                    r.get::<i64, _>(1) as u64,
                ))
            })
            .collect()
    }

    async fn due_handoffs(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(i64, String, String, NaiveDate, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT h.id, l.external_id, b.external_id, h.due_date, h.step, h.attempts FROM handoffs h
               JOIN loans l ON l.id = h.loan_id JOIN borrowers b ON b.id = l.borrower_id
              WHERE h.state = 'pending' AND h.next_attempt_at <= ? ORDER BY h.next_attempt_at, h.id LIMIT 100",
        )
        .bind(to_millis(now))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.get(0),
                    r.get(1),
                    r.get(2),
                    sqlite_flow::date(&r.get::<String, _>(3))?,
                    r.get(4),
                    r.get(5),
                ))
            })
            .collect()
    }

    async fn finish_handoff(
        &self,
        now: DateTime<Utc>,
        id: i64,
        result: Result<(), (String, Option<DateTime<Utc>>)>,
    ) -> Result<(), StoreError> {
        let now_ms = to_millis(now);
        let q = match result {
            Ok(()) => sqlx::query("UPDATE handoffs SET state = 'delivered', attempts = attempts + 1, last_error = NULL, updated_at = ? WHERE id = ?")
                .bind(now_ms)
                .bind(id),
            Err((error, Some(retry_at))) => sqlx::query(
                "UPDATE handoffs SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?, updated_at = ? WHERE id = ?",
            )
            .bind(error)
            .bind(to_millis(retry_at))
            .bind(now_ms)
            .bind(id),
            Err((error, None)) => sqlx::query("UPDATE handoffs SET state = 'failed', attempts = attempts + 1, last_error = ?, updated_at = ? WHERE id = ?")
                .bind(error)
                .bind(now_ms)
                .bind(id),
        };
        q.execute(&self.pool).await?;
        Ok(())
    }

    async fn audit(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<AuditRow>, StoreError> {
        // Each `sending` event is one attempt; its outcome is the next event
        // of the same message.
        let rows = sqlx::query(
            "SELECT e.message_id, e.at, e.reason, m.channel, m.step, m.template, m.template_version, m.provider,
                    b.external_id, b.timezone, cp.address,
                    (SELECT COUNT(*) FROM message_events p WHERE p.message_id = e.message_id AND p.to_state = 'sending' AND p.id <= e.id),
                    (SELECT n.to_state FROM message_events n WHERE n.message_id = e.message_id AND n.id > e.id ORDER BY n.id LIMIT 1),
                    (SELECT n.reason FROM message_events n WHERE n.message_id = e.message_id AND n.id > e.id ORDER BY n.id LIMIT 1),
                    (SELECT group_concat(l.external_id, ',') FROM message_loans ml CROSS JOIN loans l ON l.id = ml.loan_id WHERE ml.message_id = m.id)
               FROM message_events e JOIN messages m ON m.id = e.message_id
               JOIN borrowers b ON b.id = m.borrower_id
               LEFT JOIN contact_points cp ON cp.id = m.contact_point_id
              WHERE e.to_state = 'sending' AND e.at >= ? AND e.at < ?
              ORDER BY e.at, e.id",
        )
        .bind(to_millis(from))
        .bind(to_millis(to))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let outcome: Option<String> = r.get(12);
                Ok(AuditRow {
                    message_id: r.get(0),
                    at: from_millis(r.get(1))?,
                    allowed_by: r.get::<Option<String>, _>(2).unwrap_or_default(),
                    channel: parse_channel(&r.get::<String, _>(3))?,
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
                        .map(sqlite_flow::state)
                        .transpose()?
                        .unwrap_or(MessageState::Sending),
                    outcome_reason: r.get::<Option<String>, _>(13).unwrap_or_default(),
                    loan_ids: r
                        .get::<Option<String>, _>(14)
                        .map(|s| s.split(',').map(str::to_owned).collect())
                        .unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn snapshot_to(&self, path: &std::path::Path) -> Result<(), StoreError> {
        sqlx::query("VACUUM INTO ?")
            .bind(path.display().to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

use super::codec::{date, decimal, status};
use super::import::{BorrowerRec, LoanRec};

/// Runs `SELECT … WHERE col IN (…)` over `keys` in chunks. `sql` holds one
/// `{}` where the placeholder list goes.
async fn select_in_str(
    conn: &mut SqliteConnection,
    sql: &str,
    keys: &[&str],
) -> Result<Vec<SqliteRow>, StoreError> {
    let mut out = Vec::new();
    for chunk in keys.chunks(IN_CHUNK) {
        let marks = vec!["?"; chunk.len()].join(",");
        let q = sql.replace("{}", &marks);
        let mut query = sqlx::query(&q);
        for k in chunk {
            query = query.bind(*k);
        }
        out.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(out)
}

pub(super) async fn select_in_i64(
    conn: &mut SqliteConnection,
    sql: &str,
    keys: &[i64],
) -> Result<Vec<SqliteRow>, StoreError> {
    let mut out = Vec::new();
    for chunk in keys.chunks(IN_CHUNK) {
        let marks = vec!["?"; chunk.len()].join(",");
        let q = sql.replace("{}", &marks);
        let mut query = sqlx::query(&q);
        for k in chunk {
            query = query.bind(*k);
        }
        out.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(out)
}

/// SQLite takes the `?` placeholders as written.
fn sql(text: &str) -> std::borrow::Cow<'_, str> {
    std::borrow::Cow::Borrowed(text)
}

super::import::import_tx!(
    SqliteImport,
    Sqlite,
    SqliteConnection,
    sql,
    select_in_str,
    select_in_i64
);

/// Checks, inside the writer's transaction (which holds SQLite's write
/// lock), that `fence` still holds its role.
async fn check_fence(conn: &mut SqliteConnection, fence: Option<&Fence>) -> Result<(), StoreError> {
    let Some(f) = fence else { return Ok(()) };
    let token: Option<i64> =
        sqlx::query_scalar("SELECT token FROM leases WHERE name = ? AND holder = ?")
            .bind(&f.role)
            .bind(&f.holder)
            .fetch_optional(conn)
            .await?;
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
async fn unlog(conn: &mut SqliteConnection, message_id: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM contact_log WHERE message_id = ?")
        .bind(message_id)
        .execute(conn)
        .await?;
    Ok(())
}
