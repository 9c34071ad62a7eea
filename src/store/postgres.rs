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
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};

use super::backend::{Backend, Conn};
use super::changes::check_fence;
use super::flow::{claim_rows, unplanned, BatchRows, PlannedKeys};
use super::{to_millis, ClaimView, Fence, ImportTx, NewMessage, Store, StoreError, Verdict};
use crate::store::StoreConfig;

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
async fn notify_work<C: Conn>(conn: &mut C) -> Result<(), StoreError> {
    conn.execute("SELECT pg_notify(?, '')", &[WORK_CHANNEL.into()])
        .await?;
    Ok(())
}

#[async_trait]
impl Backend for PgStore {
    type Db = Postgres;

    fn pool(&self) -> &PgPool {
        &self.pool
    }

    type Reads = sqlx::pool::PoolConnection<Postgres>;

    async fn plan_reads(&self) -> Result<Self::Reads, StoreError> {
        Ok(self.pool.acquire().await?)
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        begin_write(&self.pool).await
    }

    async fn work_committed<C: Conn>(&self, conn: &mut C) -> Result<(), StoreError> {
        notify_work(conn).await
    }

    async fn claim_due<C: Conn>(
        &self,
        conn: &mut C,
        now_ms: i64,
        c: &super::ClaimRequest<'_>,
        writes: &mut BatchRows,
    ) -> Result<Vec<(ClaimView, Verdict)>, StoreError> {
        claim_due(conn, now_ms, c, writes).await
    }

    fn db(&self) -> super::Db {
        super::Db::Postgres(self.pool.clone())
    }

    async fn refresh_statistics(&self, change: super::BulkChange) -> Result<(), StoreError> {
        let tables = match change {
            super::BulkChange::Book => "borrowers, loans, contact_points, holds, payments",
            super::BulkChange::Plan => "messages, message_loans",
        };
        sqlx::query(&format!("ANALYZE {tables}"))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

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
        Ok(Box::new(super::import::SqlImport::new(tx, to_millis(now))))
    }

    async fn record_plan(
        &self,
        now: DateTime<Utc>,
        messages: &[NewMessage],
        looks: &[(i64, Option<DateTime<Utc>>)],
        fence: Option<&Fence>,
    ) -> Result<u64, StoreError> {
        if messages.is_empty() && looks.is_empty() {
            return Ok(0);
        }
        let now_ms = to_millis(now);
        let mut tx = self.pool.begin().await?;
        check_fence(&mut *tx, fence).await?;
        // A page of decisions in a handful of statements (arrays bound with
        // UNNEST), not a few round trips per message.
        let day = super::codec::day;
        let loan_pks: Vec<i64> = messages
            .iter()
            .flat_map(|m| m.loans.iter().map(|l| l.0))
            .collect();
        // Planned at most once, ever: skip a message if any of its keys
        // exists (or comes earlier in this page).
        let mut taken: PlannedKeys = HashSet::new();
        for row in sqlx::query(
            "SELECT loan_id, due_date, step, channel FROM message_loans WHERE loan_id = ANY($1)",
        )
        .bind(&loan_pks)
        .fetch_all(&mut *tx)
        .await?
        {
            taken.insert((row.get(0), row.get(1), row.get(2), row.get(3)));
        }
        let fresh = unplanned(messages, taken);
        if !looks.is_empty() {
            sqlx::query(
                "UPDATE borrowers SET next_look = u.t
                   FROM UNNEST($1::BIGINT[], $2::BIGINT[]) AS u(id, t) WHERE borrowers.id = u.id",
            )
            .bind(looks.iter().map(|l| l.0).collect::<Vec<i64>>())
            .bind(
                looks
                    .iter()
                    .map(|l| l.1.map(to_millis))
                    .collect::<Vec<Option<i64>>>(),
            )
            .execute(&mut *tx)
            .await?;
        }
        if fresh.is_empty() {
            match looks.is_empty() {
                true => tx.rollback().await?,
                false => tx.commit().await?,
            }
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
        .bind(col(&|m| Some(m.reason.to_string())))
        .bind(fresh.iter().map(|m| to_millis(m.not_before)).collect::<Vec<i64>>())
        .bind(fresh.iter().map(|m| m.expires_at.map(to_millis)).collect::<Vec<Option<i64>>>())
        .bind(now_ms)
        .fetch_all(&mut *tx)
        .await?;
        let mut ids: HashMap<String, i64> = rows.iter().map(|r| (r.get(1), r.get(0))).collect();
        // A key inserted once goes to the first message that has it.
        let inserted: Vec<(&NewMessage, i64)> = fresh
            .iter()
            .filter_map(|m| ids.remove(&m.dedupe_key).map(|id| (*m, id)))
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
        .bind(inserted.iter().map(|(m, _)| m.reason.to_string()).collect::<Vec<String>>())
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
            notify_work(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(recorded)
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn write_lanes(&self) -> usize {
        (self.pool.options().get_max_connections() as usize / 2).max(1)
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

    fn shared_rate(&self) -> Option<Arc<dyn crate::shared_rate::SharedRate>> {
        Some(Arc::new(PgRate {
            pool: self.pool.clone(),
        }))
    }

    async fn snapshot_to(&self, path: &std::path::Path) -> Result<(), StoreError> {
        // A consistent copy into a new embedded store (simulate's scratch).
        let to = super::SqliteStore::open(&StoreConfig {
            url: format!("sqlite://{}", path.display()),
            synchronous: crate::store::Synchronous::Off,
            ..StoreConfig::default()
        })
        .await?;
        super::copy::copy_between(self, &to).await?;
        Store::close(&to).await;
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

/// Claims up to `c.limit` due messages inside the caller's transaction:
/// the oldest due messages no other instance holds, then their borrowers'
/// rows (in id order, so two instances never wait on each other in a
/// cycle). The eligibility and cap checks and the `sending` marks (with
/// their contact-log rows) are one atomic step per borrower across every
/// instance. NO KEY UPDATE leaves the planner's inserts (which only
/// key-share the borrower) unblocked.
async fn claim_due<C: Conn>(
    conn: &mut C,
    now_ms: i64,
    c: &super::ClaimRequest<'_>,
    writes: &mut BatchRows,
) -> Result<Vec<(ClaimView, Verdict)>, StoreError> {
    // One round trip: the messages, then (the scalar sub-query runs once,
    // after `m` is read in full) their borrowers locked in id order.
    let limit = i64::try_from(c.limit.max(1)).unwrap_or(i64::MAX);
    let rows = conn
        .fetch(
            "WITH m AS (SELECT * FROM messages WHERE state IN ('planned', 'deferred') AND not_before <= ?
                         ORDER BY not_before, id LIMIT ? FOR UPDATE SKIP LOCKED),
                  b AS (SELECT id FROM borrowers WHERE id IN (SELECT borrower_id FROM m)
                         ORDER BY id FOR NO KEY UPDATE)
             SELECT m.* FROM m WHERE (SELECT count(*) FROM b) >= 0 ORDER BY m.not_before, m.id",
            &[now_ms.into(), limit.into()],
        )
        .await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    claim_rows(conn, &rows, now_ms, c.since, c.lease, c.decide, writes).await
}

/// A write transaction (rows are locked as they are read, `FOR UPDATE`).
async fn begin_write(pool: &PgPool) -> Result<Transaction<'static, Postgres>, StoreError> {
    Ok(pool.begin().await?)
}

/// The cluster-wide rate limiter: GCRA on one row per provider, in the
/// database's clock so instances with skewed clocks still agree. Each send
/// reserves its parts in one statement and learns how long to wait.
struct PgRate {
    pool: PgPool,
}

#[async_trait]
impl crate::shared_rate::SharedRate for PgRate {
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
        // One statement per send: new TAT = max(TAT, now) + cost (the row is
        // created on a provider's first send); the cells may be used once
        // the new TAT is within the burst tolerance of now.
        let run = sqlx::query_scalar::<_, i64>(
            "WITH c AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT AS now)
             INSERT INTO rate_limits AS r (key, tat) SELECT $1, c.now + $2 FROM c
             ON CONFLICT (key) DO UPDATE SET tat = GREATEST(r.tat, (SELECT now FROM c)) + $2
             RETURNING GREATEST(r.tat - (SELECT now FROM c) - $3, 0)",
        )
        .bind(key)
        .bind(cost_us)
        .bind(tolerance)
        .fetch_one(&self.pool);
        match run.await {
            Ok(wait_us) => Ok(std::time::Duration::from_micros(wait_us.max(0) as u64)),
            Err(e) => Err(format!("shared rate limiter unavailable: {e}")),
        }
    }
}
