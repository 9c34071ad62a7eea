//! The PostgreSQL backend, for several instances sharing the work. Same
//! schema and behaviour as the embedded store (instants as UTC milliseconds,
//! dates and money as text), plus what concurrency needs:
//!
//! - claims take the oldest due message with `FOR UPDATE SKIP LOCKED`, then
//!   lock the borrower's row before the eligibility and cap check, so two
//!   instances never both spend the same borrower's last allowed contact;
//! - imports serialise on a transaction-scoped advisory lock;
//! - state changes outside a claim lock the message row first;
//! - `NOTIFY duebell_work` on commit of new work wakes idle dispatchers
//!   (`LISTEN` on its own connection; polling covers a lost connection);
//! - provider rate limits live in `rate_limits`, shared by every instance.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};

use super::postgres_flow::{
    self, channel as parse_channel, claim_view, load_borrowers, transition,
};
use super::{
    effective_status, from_millis, to_millis, AuditRow, ClaimLease, ClaimView, Fence, Finish,
    ImportRecord, ImportTx, LoanBookRow, LoanView, MessageQuery, MessageState, MessageView,
    NewMessage, PaymentRow, PlanBorrower, RowOutcome, Store, StoreCounts, StoreError, Verdict,
    ACQUIRE_LEASE_SQL,
};
use crate::config::StoreConfig;
use crate::domain::{Channel, Currency, LoanId, LoanStatus, Money};

/// The channel dispatchers listen on.
const WORK_CHANNEL: &str = "duebell_work";
/// The channel the planner listens on.
const PLAN_CHANNEL: &str = "duebell_plan";

pub struct PgStore {
    pool: PgPool,
    wake: super::Wakeups,
    listener: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl PgStore {
    pub async fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        let options: PgConnectOptions = config.url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(
                config
                    .busy_timeout
                    .get()
                    .max(std::time::Duration::from_secs(5)),
            )
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        let wake = super::Wakeups {
            work: Arc::new(tokio::sync::Notify::new()),
            plan: Arc::new(tokio::sync::Notify::new()),
        };
        Ok(PgStore {
            pool,
            wake,
            listener: std::sync::Mutex::new(None),
        })
    }

    /// The pool (the copy tool reads and writes tables directly).
    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Wakes `wake` on every `NOTIFY duebell_work` or `duebell_plan`. A lost
/// connection is re-established; while it is down the dispatchers' polling
/// finds the work.
async fn listen(pool: PgPool, wake: super::Wakeups) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("cannot LISTEN for new work ({e}); polling until it can");
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen_all([WORK_CHANNEL, PLAN_CHANNEL]).await {
            tracing::warn!("cannot LISTEN for new work ({e}); polling until it can");
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            continue;
        }
        loop {
            match listener.recv().await {
                Ok(n) if n.channel() == PLAN_CHANNEL => wake.plan.notify_one(),
                Ok(_) => wake.work.notify_one(),
                Err(e) => {
                    tracing::warn!("LISTEN connection lost ({e}); reconnecting");
                    // Work may have arrived while it was down.
                    wake.work.notify_one();
                    break;
                }
            }
        }
    }
}

/// Queues a wake-up for every listening dispatcher, sent when `conn`'s
/// transaction commits (and dropped if it rolls back).
async fn notify_work(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(WORK_CHANNEL)
        .execute(conn)
        .await?;
    Ok(())
}

/// Checks, inside the writer's transaction, that `fence` still holds its
/// role; the row lock keeps a takeover from committing until this
/// transaction ends.
async fn check_fence(conn: &mut PgConnection, fence: Option<&Fence>) -> Result<(), StoreError> {
    let Some(f) = fence else { return Ok(()) };
    let token: Option<i64> =
        sqlx::query_scalar("SELECT token FROM leases WHERE name = $1 AND holder = $2 FOR SHARE")
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

#[async_trait]
impl Store for PgStore {
    async fn begin_import(&self, now: DateTime<Utc>) -> Result<Box<dyn ImportTx>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // One import at a time across instances: two applying the same
        // file would otherwise race on the same new borrowers. The key is
        // the schema's, so deployments in other schemas do not wait.
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.duebell import'))",
        )
        .execute(&mut *tx)
        .await?;
        Ok(Box::new(PgImport {
            tx,
            now: to_millis(now),
        }))
    }

    async fn last_import_hash(&self, path: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT content_hash FROM imports WHERE path = $1 ORDER BY id DESC LIMIT 1",
        )
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
              WHERE l.external_id = $1",
        )
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let loan_pk: i64 = row.get(0);
        let amounts: Vec<String> =
            sqlx::query_scalar("SELECT amount FROM payments WHERE loan_id = $1")
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
            "SELECT DISTINCT borrower_id FROM loans WHERE status = 'active' AND borrower_id > $1 ORDER BY borrower_id LIMIT $2",
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
        let pk: Option<i64> = sqlx::query_scalar("SELECT id FROM borrowers WHERE external_id = $1")
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
        let mut tx = self.pool.begin().await?;
        check_fence(&mut tx, fence).await?;
        // A page of decisions in a handful of statements (arrays bound with
        // UNNEST), not a few round trips per message.
        let day = |d: &NaiveDate| d.format("%Y-%m-%d").to_string();
        let loan_pks: Vec<i64> = messages
            .iter()
            .flat_map(|m| m.loans.iter().map(|l| l.0))
            .collect();
        // Planned at most once, ever: skip a message if any of its keys
        // exists (or comes earlier in this page).
        let mut taken: HashSet<(i64, String, String, String)> = HashSet::new();
        for row in sqlx::query(
            "SELECT loan_id, due_date, step, channel FROM message_loans WHERE loan_id = ANY($1)",
        )
        .bind(&loan_pks)
        .fetch_all(&mut *tx)
        .await?
        {
            taken.insert((row.get(0), row.get(1), row.get(2), row.get(3)));
        }
        let mut fresh: Vec<&NewMessage> = Vec::new();
        for m in messages {
            let keys: Vec<_> = m
                .loans
                .iter()
                .map(|(l, d, st)| (*l, day(d), st.clone(), m.channel.as_str().to_owned()))
                .collect();
            if keys.iter().any(|k| taken.contains(k)) {
                continue;
            }
            taken.extend(keys);
            fresh.push(m);
        }
        if fresh.is_empty() {
            tx.rollback().await?;
            return Ok(0);
        }
        let col = |f: &dyn Fn(&NewMessage) -> Option<String>| -> Vec<Option<String>> {
            fresh.iter().map(|m| f(m)).collect()
        };
        let rows = sqlx::query(
            "INSERT INTO messages (dedupe_key, borrower_id, contact_point_id, channel, step, template, state, reason,
                                   not_before, expires_at, created_at, updated_at)
             SELECT k, b, cp, ch, st, t, s, r, nb, ex, $11, $11
               FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::TEXT[], $5::TEXT[], $6::TEXT[],
                           $7::TEXT[], $8::TEXT[], $9::BIGINT[], $10::BIGINT[])
                    AS u(k, b, cp, ch, st, t, s, r, nb, ex)
             ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, dedupe_key",
        )
        .bind(col(&|m| Some(m.dedupe_key.clone())))
        .bind(fresh.iter().map(|m| m.borrower_pk).collect::<Vec<i64>>())
        .bind(fresh.iter().map(|m| m.contact_point).collect::<Vec<Option<i64>>>())
        .bind(col(&|m| Some(m.channel.as_str().to_owned())))
        .bind(col(&|m| Some(m.step.clone())))
        .bind(col(&|m| Some(m.template.clone())))
        .bind(col(&|m| Some(m.state.as_str().to_owned())))
        .bind(col(&|m| Some(m.reason.clone())))
        .bind(fresh.iter().map(|m| to_millis(m.not_before)).collect::<Vec<i64>>())
        .bind(fresh.iter().map(|m| m.expires_at.map(to_millis)).collect::<Vec<Option<i64>>>())
        .bind(now_ms)
        .fetch_all(&mut *tx)
        .await?;
        let ids: HashMap<String, i64> = rows.iter().map(|r| (r.get(1), r.get(0))).collect();
        let inserted: Vec<(&NewMessage, i64)> = fresh
            .iter()
            .filter_map(|m| ids.get(&m.dedupe_key).map(|id| (*m, *id)))
            .collect();
        let (mut ml_msg, mut ml_loan, mut ml_due, mut ml_step, mut ml_ch) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut h_loan, mut h_due, mut h_step) = (Vec::new(), Vec::new(), Vec::new());
        for (m, id) in &inserted {
            for (loan, due, step) in &m.loans {
                ml_msg.push(*id);
                ml_loan.push(*loan);
                ml_due.push(day(due));
                ml_step.push(step.clone());
                ml_ch.push(m.channel.as_str().to_owned());
            }
            for (loan, due, step) in &m.handoffs {
                h_loan.push(*loan);
                h_due.push(day(due));
                h_step.push(step.clone());
            }
        }
        sqlx::query(
            "INSERT INTO message_loans (message_id, loan_id, due_date, step, channel)
             SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[])",
        )
        .bind(&ml_msg)
        .bind(&ml_loan)
        .bind(&ml_due)
        .bind(&ml_step)
        .bind(&ml_ch)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO message_events (message_id, at, from_state, to_state, reason)
             SELECT id, $2, NULL, s, r FROM UNNEST($1::BIGINT[], $3::TEXT[], $4::TEXT[]) AS u(id, s, r)",
        )
        .bind(inserted.iter().map(|(_, id)| *id).collect::<Vec<i64>>())
        .bind(now_ms)
        .bind(inserted.iter().map(|(m, _)| m.state.as_str().to_owned()).collect::<Vec<String>>())
        .bind(inserted.iter().map(|(m, _)| m.reason.clone()).collect::<Vec<String>>())
        .execute(&mut *tx)
        .await?;
        if !h_loan.is_empty() {
            sqlx::query(
                "INSERT INTO handoffs (loan_id, due_date, step, state, next_attempt_at, created_at, updated_at)
                 SELECT l, d, s, 'pending', $4, $4, $4 FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[]) AS u(l, d, s)
                 ON CONFLICT DO NOTHING",
            )
            .bind(&h_loan)
            .bind(&h_due)
            .bind(&h_step)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        let recorded = inserted.len() as u64;
        if recorded > 0 {
            notify_work(&mut tx).await?;
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
        let mut tx = self.pool.begin().await?;
        check_fence(&mut tx, fence).await?;
        let mut doomed: Vec<(i64, String, String)> = Vec::new();
        for row in sqlx::query(
            "SELECT m.id, m.state, (SELECT string_agg(DISTINCT l.status, ',') FROM message_loans ml JOIN loans l ON l.id = ml.loan_id
                                     WHERE ml.message_id = m.id)
               FROM messages m
              WHERE m.state IN ('planned', 'deferred')
                AND NOT EXISTS (SELECT 1 FROM message_loans ml JOIN loans l ON l.id = ml.loan_id
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
        // The rows were read unlocked: each change applies only if the
        // message is still in the state read (a dispatcher may have claimed
        // it since; the claim re-checks eligibility itself).
        let mut seen = std::collections::HashSet::new();
        let mut done = 0;
        for (id, from, reason) in doomed {
            if seen.insert(id) {
                let from = postgres_flow::state(&from)?;
                if transition(
                    &mut tx,
                    now_ms,
                    id,
                    Some(from),
                    MessageState::Cancelled,
                    &reason,
                )
                .await?
                {
                    done += 1;
                }
            }
        }
        tx.commit().await?;
        Ok(done)
    }

    async fn claim_next(
        &self,
        now: DateTime<Utc>,
        since: DateTime<Utc>,
        lease: &ClaimLease,
        decide: &(dyn for<'v> Fn(&'v ClaimView) -> Verdict + Send + Sync),
    ) -> Result<Option<(ClaimView, Verdict)>, StoreError> {
        let now_ms = to_millis(now);
        // Lock the oldest due message no other instance holds, then its
        // borrower's row: the eligibility and cap check below and the
        // `sending` mark (with its contact-log row) are one atomic step per
        // borrower across every instance. NO KEY UPDATE leaves the
        // planner's inserts (which only key-share the borrower) unblocked.
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query(
            "SELECT * FROM messages WHERE state IN ('planned', 'deferred') AND not_before <= $1
              ORDER BY not_before, id LIMIT 1 FOR UPDATE SKIP LOCKED",
        )
        .bind(now_ms)
        .fetch_optional(&mut *tx)
        .await?
        else {
            tx.rollback().await?;
            return Ok(None);
        };
        sqlx::query("SELECT id FROM borrowers WHERE id = $1 FOR NO KEY UPDATE")
            .bind(row.get::<i64, _>("borrower_id"))
            .execute(&mut *tx)
            .await?;
        let view = claim_view(&mut tx, &row, since).await?;
        let verdict = decide(&view);
        let from = Some(view.state);
        match &verdict {
            Verdict::Send {
                attempt_id, window, ..
            } => {
                sqlx::query(
                    "UPDATE messages SET attempt_id = $1, attempts = attempts + 1, claimed_by = $2, lease_until = $3 WHERE id = $4",
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
                sqlx::query("INSERT INTO contact_log (message_id, borrower_id, contact_point_id, channel, at) VALUES ($1, $2, $3, $4, $5)")
                    .bind(view.message_id)
                    .bind(view.borrower.pk)
                    .bind(view.contact.as_ref().map(|c| c.id))
                    .bind(view.channel.as_str())
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
            }
            Verdict::Defer { until, reason } => {
                sqlx::query("UPDATE messages SET not_before = $1 WHERE id = $2")
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
                .await?;
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
                .await?;
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
        let mut tx = self.pool.begin().await?;
        let current: Option<(String, Option<String>, Option<i64>)> = sqlx::query_as(
            "SELECT state, attempt_id, contact_point_id FROM messages WHERE id = $1 FOR UPDATE",
        )
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
        sqlx::query("UPDATE messages SET lease_until = NULL WHERE id = $1")
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
                sqlx::query("UPDATE messages SET provider = $1, provider_ref = $2, template_version = $3, subject = $4, body = $5 WHERE id = $6")
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
                sqlx::query("UPDATE messages SET not_before = $1, provider = $2 WHERE id = $3")
                    .bind(to_millis(*at))
                    .bind(provider)
                    .bind(message_id)
                    .execute(&mut *tx)
                    .await?;
                notify_work(&mut tx).await?;
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
                sqlx::query("UPDATE messages SET provider = $1 WHERE id = $2")
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
                    sqlx::query("UPDATE contact_points SET opted_out_at = COALESCE(opted_out_at, $1), opt_out_source = COALESCE(opt_out_source, $2), updated_at = $3 WHERE id = $4")
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
                sqlx::query("UPDATE messages SET not_before = $1 WHERE id = $2")
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
                notify_work(&mut tx).await?;
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
                                 WHERE state = 'sending' AND (lease_until IS NULL OR lease_until < $1) ORDER BY id")
            .bind(to_millis(now))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.get(0), r.get(1), parse_channel(&r.get::<String, _>(2))?)))
            .collect()
    }

    async fn renew_claims(&self, holder: &str, until: DateTime<Utc>) -> Result<u64, StoreError> {
        let r = sqlx::query("UPDATE messages SET lease_until = $1 WHERE state = 'sending' AND claimed_by = $2 AND lease_until IS NOT NULL")
            .bind(to_millis(until))
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    async fn release_claims(&self, holder: &str) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE messages SET lease_until = NULL WHERE state = 'sending' AND claimed_by = $1",
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
        let token: Option<i64> = sqlx::query_scalar(ACQUIRE_LEASE_SQL)
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
        sqlx::query(
            "UPDATE leases SET expires_at = 0 WHERE name = $1 AND holder = $2 AND token = $3",
        )
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
        "postgres"
    }

    fn wakeups(&self) -> Option<super::Wakeups> {
        // Only a daemon listens (tools never ask): start on first use.
        let mut task = self.listener.lock().unwrap_or_else(|e| e.into_inner());
        if task.is_none() {
            *task = Some(tokio::spawn(listen(self.pool.clone(), self.wake.clone())));
        }
        Some(self.wake.clone())
    }

    async fn request_plan(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(PLAN_CHANNEL)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    fn shared_rate(&self) -> Option<Arc<dyn crate::providers::guard::SharedRate>> {
        Some(Arc::new(PgRate {
            pool: self.pool.clone(),
        }))
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
            "UPDATE contact_points SET opted_out_at = COALESCE(opted_out_at, $1), opt_out_source = $2, updated_at = $3
              WHERE active = 1 AND channel = $4 AND borrower_id = (SELECT id FROM borrowers WHERE external_id = $5)"
        } else {
            "UPDATE contact_points SET opted_out_at = NULL, opt_out_source = $1, updated_at = $2
              WHERE active = 1 AND channel = $3 AND borrower_id = (SELECT id FROM borrowers WHERE external_id = $4) AND $5 IS NOT NULL"
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
            "UPDATE contact_points SET opted_out_at = COALESCE(opted_out_at, $1), opt_out_source = COALESCE(opt_out_source, $2), updated_at = $3
              WHERE channel = $4 AND address = $5",
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
                sqlx::query_scalar("SELECT id FROM loans WHERE external_id = $1")
                    .bind(loan)
                    .fetch_optional(&self.pool)
                    .await?,
            ),
            (Some(b), None) => (
                sqlx::query_scalar("SELECT id FROM borrowers WHERE external_id = $1")
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
        let id: i64 = sqlx::query_scalar("INSERT INTO holds (borrower_id, loan_id, kind, until_date, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id")
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
        let r =
            sqlx::query("UPDATE holds SET cleared_at = $1 WHERE id = $2 AND cleared_at IS NULL")
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
            "UPDATE contact_points SET opted_out_at = $1, opt_out_source = $2, updated_at = $3
              WHERE id = (SELECT contact_point_id FROM messages WHERE id = $4) AND opted_out_at IS NULL",
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
        let rows = sqlx::query("SELECT at, from_state, to_state, reason FROM message_events WHERE message_id = $1 ORDER BY id")
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
                        .map(postgres_flow::state)
                        .transpose()?,
                    to: postgres_flow::state(&r.get::<String, _>(2))?,
                    reason: r.get(3),
                })
            })
            .collect()
    }

    async fn sent_since(&self, since: DateTime<Utc>) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM contact_log WHERE at >= $1")
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
                    postgres_flow::state(&r.get::<String, _>(0))?,
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
        let mut tx = self.pool.begin().await?;
        // Our own message id (`m:<id>`, echoed by providers that carry it)
        // also matches a message whose send was interrupted before the
        // provider's id was recorded: the receipt reconciles it.
        let row: Option<(i64, String)> = match provider_ref
            .strip_prefix("m:")
            .and_then(|id| id.parse::<i64>().ok())
        {
            Some(id) => {
                sqlx::query_as("SELECT id, state FROM messages WHERE id = $1 FOR UPDATE")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
            }
            None => {
                sqlx::query_as(
                    "SELECT id, state FROM messages WHERE provider = $1 AND provider_ref = $2 FOR UPDATE",
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
        let from = postgres_flow::state(&st)?;
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
            "UPDATE contact_points SET opted_out_at = NULL, opt_out_source = $1, updated_at = $2 WHERE channel = $3 AND address = $4 AND opted_out_at IS NOT NULL",
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
        let mut tx = self.pool.begin().await?;
        let st: Option<String> =
            sqlx::query_scalar("SELECT state FROM messages WHERE id = $1 FOR UPDATE")
                .bind(message_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(st) = st else {
            tx.rollback().await?;
            return Ok(None);
        };
        let from = postgres_flow::state(&st)?;
        if !matches!(from, MessageState::Unknown | MessageState::Failed) {
            tx.rollback().await?;
            return Ok(Some(from));
        }
        let to = if release {
            sqlx::query("UPDATE messages SET not_before = $1, expires_at = NULL WHERE id = $2")
                .bind(now_ms)
                .bind(message_id)
                .execute(&mut *tx)
                .await?;
            // The earlier attempt's contact no longer counts: it is resent.
            unlog(&mut tx, message_id).await?;
            notify_work(&mut tx).await?;
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
        sqlx::query("INSERT INTO settings (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(&fresh[..])
            .bind(to_millis(Utc::now()))
            .execute(&self.pool)
            .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
                .bind(name)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn messages(&self, query: &MessageQuery) -> Result<Vec<MessageView>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.id, b.external_id, m.channel, m.step, m.template, m.template_version, m.state, m.reason, m.not_before,
                    m.provider, cp.address, m.subject, m.body, m.updated_at,
                    (SELECT string_agg(l.external_id, ',') FROM message_loans ml JOIN loans l ON l.id = ml.loan_id WHERE ml.message_id = m.id)
               FROM messages m JOIN borrowers b ON b.id = m.borrower_id
               LEFT JOIN contact_points cp ON cp.id = m.contact_point_id
              WHERE ($1 IS NULL OR m.state = $2) AND ($3 IS NULL OR b.external_id = $4)
              ORDER BY m.id LIMIT $5",
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
                    state: postgres_flow::state(&r.get::<String, _>(6))?,
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
                    postgres_flow::state(&r.get::<String, _>(0))?,
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
              WHERE h.state = 'pending' AND h.next_attempt_at <= $1 ORDER BY h.next_attempt_at, h.id LIMIT 100",
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
                    postgres_flow::date(&r.get::<String, _>(3))?,
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
            Ok(()) => sqlx::query("UPDATE handoffs SET state = 'delivered', attempts = attempts + 1, last_error = NULL, updated_at = $1 WHERE id = $2")
                .bind(now_ms)
                .bind(id),
            Err((error, Some(retry_at))) => sqlx::query(
                "UPDATE handoffs SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2, updated_at = $3 WHERE id = $4",
            )
            .bind(error)
            .bind(to_millis(retry_at))
            .bind(now_ms)
            .bind(id),
            Err((error, None)) => sqlx::query("UPDATE handoffs SET state = 'failed', attempts = attempts + 1, last_error = $1, updated_at = $2 WHERE id = $3")
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
                    (SELECT string_agg(l.external_id, ',') FROM message_loans ml JOIN loans l ON l.id = ml.loan_id WHERE ml.message_id = m.id)
               FROM message_events e JOIN messages m ON m.id = e.message_id
               JOIN borrowers b ON b.id = m.borrower_id
               LEFT JOIN contact_points cp ON cp.id = m.contact_point_id
              WHERE e.to_state = 'sending' AND e.at >= $1 AND e.at < $2
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
                        .map(postgres_flow::state)
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
        // A consistent copy into a new embedded store (simulate's scratch).
        let to = super::SqliteStore::open(&StoreConfig {
            url: format!("sqlite://{}", path.display()),
            synchronous: crate::config::Synchronous::Off,
            ..StoreConfig::default()
        })
        .await?;
        super::copy::copy_between(self, &to).await?;
        to.close().await;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        if let Some(task) = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
        self.pool.close().await;
    }
}

use super::codec::{date, decimal, status};
use super::import::{BorrowerRec, LoanRec};

/// Runs `SELECT … WHERE col IN ({})` with `keys` bound as one array
/// (`= ANY($1)`).
async fn select_in_str(
    conn: &mut PgConnection,
    sql: &str,
    keys: &[&str],
) -> Result<Vec<PgRow>, StoreError> {
    let sql = sql.replace("IN ({})", "= ANY($1)");
    Ok(sqlx::query(&sql).bind(keys).fetch_all(conn).await?)
}

pub(super) async fn select_in_i64(
    conn: &mut PgConnection,
    sql: &str,
    keys: &[i64],
) -> Result<Vec<PgRow>, StoreError> {
    let sql = sql.replace("IN ({})", "= ANY($1)");
    Ok(sqlx::query(&sql).bind(keys).fetch_all(conn).await?)
}

/// Numbers SQLite-style `?` placeholders as PostgreSQL's `$1, $2, …` (the
/// shared import SQL has no `?` inside string literals).
fn sql(text: &str) -> std::borrow::Cow<'_, str> {
    let mut out = String::with_capacity(text.len() + 16);
    let mut n = 0;
    for c in text.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

super::import::import_tx!(
    PgImport,
    Postgres,
    PgConnection,
    sql,
    select_in_str,
    select_in_i64
);

/// Removes a message's contact-log row: the contact was not made after all.
async fn unlog(conn: &mut PgConnection, message_id: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM contact_log WHERE message_id = $1")
        .bind(message_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The cluster-wide rate limiter: GCRA on one row per provider, in the
/// database's clock so instances with skewed clocks still agree. Each send
/// reserves its parts in one statement and learns how long to wait.
struct PgRate {
    pool: PgPool,
}

#[async_trait]
impl crate::providers::guard::SharedRate for PgRate {
    async fn reserve(
        &self,
        key: &str,
        cost: u32,
        interval: std::time::Duration,
        burst: u32,
    ) -> Result<std::time::Duration, String> {
        let step = i64::try_from(interval.as_micros()).unwrap_or(i64::MAX / 4);
        let cost_us = step.saturating_mul(i64::from(cost));
        let tolerance = step.saturating_mul(i64::from(burst.max(cost)));
        let run = async {
            sqlx::query(
                "INSERT INTO rate_limits (key, tat) VALUES ($1, 0) ON CONFLICT (key) DO NOTHING",
            )
            .bind(key)
            .execute(&self.pool)
            .await?;
            // New TAT = max(TAT, now) + cost; the cells may be used once
            // the new TAT is within the burst tolerance of now.
            sqlx::query_scalar::<_, i64>(
                "WITH c AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT AS now)
                 UPDATE rate_limits r SET tat = GREATEST(r.tat, c.now) + $2 FROM c WHERE r.key = $1
                 RETURNING GREATEST(r.tat - c.now - $3, 0)",
            )
            .bind(key)
            .bind(cost_us)
            .bind(tolerance)
            .fetch_one(&self.pool)
            .await
        };
        match run.await {
            Ok(wait_us) => Ok(std::time::Duration::from_micros(wait_us.max(0) as u64)),
            Err(e) => Err(format!("shared rate limiter unavailable: {e}")),
        }
    }
}
