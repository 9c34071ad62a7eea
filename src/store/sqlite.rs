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
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Sqlite, Transaction};

use super::backend::{insert_rows, statement_rows, Arg, Backend, Conn, DbRow};
use super::changes::check_fence;
use super::common_outcomes::finish_and_claim_in;
use super::flow::{claim_rows, unplanned, BatchRows, PlannedKeys};
use super::sqlite_direct::{Direct, Writer};
use super::{to_millis, ClaimView, Fence, FinishItem, ImportTx, NewMessage, StoreError, Verdict};
use crate::store::StoreConfig;

pub struct SqliteStore {
    pool: SqlitePool,
    /// The connection of the hot write paths (`sqlite_direct.rs`).
    writer: Writer,
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
            .pragma("synchronous", config.synchronous.pragma())
            .busy_timeout(config.busy_timeout.get())
            .foreign_keys(true)
            // 8 MiB of page cache per connection (SQLite's default is 2):
            // the file's pages stay in the kernel's page cache anyway, and
            // the pool's caches are most of the daemon's memory at a large
            // book (64 MiB each put the planner at 300+ MiB at 1M loans).
            .pragma("cache_size", "-8192");
        let pool = SqlitePoolOptions::new()
            .max_connections(config.max_connections)
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        let writer = Writer::open(&path, config)?;
        Ok(SqliteStore { pool, writer })
    }
}

#[async_trait]
impl Backend for SqliteStore {
    type Db = Sqlite;

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    type Reads = Direct;

    async fn plan_reads(&self) -> Result<Direct, StoreError> {
        Ok(self.writer.reads().await)
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        begin_write(&self.pool).await
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

    async fn finish_and_claim(
        &self,
        now: DateTime<Utc>,
        items: &[FinishItem],
        claim: Option<super::ClaimRequest<'_>>,
    ) -> Result<(Vec<bool>, Vec<(ClaimView, Verdict)>), StoreError> {
        let mut tx = self.writer.begin().await?;
        let done = finish_and_claim_in(self, &mut tx, now, items, claim).await?;
        if !items.is_empty() || !done.1.is_empty() {
            tx.commit().await?;
        }
        Ok(done)
    }

    fn db(&self) -> super::Db {
        super::Db::Sqlite(self.pool.clone())
    }

    async fn begin_import(&self, now: DateTime<Utc>) -> Result<Box<dyn ImportTx>, StoreError> {
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
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
        let mut tx = self.writer.begin().await?;
        check_fence(&mut tx, fence).await?;
        // A page of decisions in a handful of multi-row statements on the
        // write connection, not a few statements per message.
        let day = super::codec::day;
        let mut loan_pks: Vec<i64> = messages
            .iter()
            .flat_map(|m| m.loans.iter().map(|l| l.0))
            .collect();
        loan_pks.sort_unstable();
        loan_pks.dedup();
        // Planned at most once, ever: skip a message if any of its keys
        // exists (or comes earlier in this page).
        let mut taken: PlannedKeys = HashSet::new();
        for row in tx
            .select_in_i64(
                "SELECT loan_id, due_date, step, channel FROM message_loans WHERE loan_id IN ({})",
                &loan_pks,
            )
            .await?
        {
            taken.insert((row.get(0), row.get(1), row.get(2), row.get(3)));
        }
        let fresh = unplanned(messages, taken);
        let args: Vec<Arg> = fresh
            .iter()
            .flat_map(|m| {
                [
                    (&m.dedupe_key).into(),
                    m.borrower_pk.into(),
                    m.contact_point.into(),
                    m.channel.as_str().into(),
                    (&m.step).into(),
                    (&m.template).into(),
                    m.state.as_str().into(),
                    m.reason.as_str().into(),
                    to_millis(m.not_before).into(),
                    m.expires_at.map(to_millis).into(),
                    now_ms.into(),
                    now_ms.into(),
                ]
            })
            .collect();
        let head = "INSERT INTO messages (dedupe_key, borrower_id, contact_point_id, channel, step, template, state, reason,
                                          not_before, expires_at, created_at, updated_at)";
        let row = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
        let tail = "ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, dedupe_key";
        let mut ids: HashMap<String, i64> = insert_rows(&mut tx, head, row, tail, &args)
            .await?
            .iter()
            .map(|r| (r.get(1), r.get(0)))
            .collect();
        // A key inserted once goes to the first message that has it.
        let inserted: Vec<(&NewMessage, i64)> = fresh
            .iter()
            .filter_map(|m| ids.remove(&m.dedupe_key).map(|id| (*m, id)))
            .collect();
        let mut links: Vec<Arg> = Vec::new();
        let mut handoffs: Vec<Arg> = Vec::new();
        let days: Vec<Vec<String>> = inserted
            .iter()
            .map(|(m, _)| {
                m.loans
                    .iter()
                    .chain(&m.handoffs)
                    .map(|(_, d, _)| day(d))
                    .collect()
            })
            .collect();
        for ((m, id), days) in inserted.iter().zip(&days) {
            let (loan_days, handoff_days) = days.split_at(m.loans.len());
            for ((loan, _, step), due) in m.loans.iter().zip(loan_days) {
                links.extend([
                    Arg::Int(*id),
                    Arg::Int(*loan),
                    Arg::Text(due),
                    Arg::Text(step),
                    Arg::Text(m.channel.as_str()),
                ]);
            }
            for ((loan, _, step), due) in m.handoffs.iter().zip(handoff_days) {
                handoffs.extend([
                    Arg::Int(*loan),
                    Arg::Text(due),
                    Arg::Text(step),
                    Arg::Int(now_ms),
                    Arg::Int(now_ms),
                    Arg::Int(now_ms),
                ]);
            }
        }
        let head = "INSERT INTO message_loans (message_id, loan_id, due_date, step, channel)";
        insert_rows(&mut tx, head, "(?, ?, ?, ?, ?)", "", &links).await?;
        let events: Vec<Arg> = inserted
            .iter()
            .flat_map(|(m, id)| {
                [
                    (*id).into(),
                    now_ms.into(),
                    m.state.as_str().into(),
                    m.reason.as_str().into(),
                ]
            })
            .collect();
        let head = "INSERT INTO message_events (message_id, at, from_state, to_state, reason)";
        insert_rows(&mut tx, head, "(?, ?, NULL, ?, ?)", "", &events).await?;
        let head = "INSERT INTO handoffs (loan_id, due_date, step, state, next_attempt_at, created_at, updated_at)";
        insert_rows(
            &mut tx,
            head,
            "(?, ?, ?, 'pending', ?, ?, ?)",
            "ON CONFLICT DO NOTHING",
            &handoffs,
        )
        .await?;
        write_looks(&mut tx, looks).await?;
        let recorded = inserted.len() as u64;
        if recorded == 0 && looks.is_empty() {
            return Ok(0);
        }
        tx.commit().await?;
        Ok(recorded)
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn snapshot_to(&self, path: &std::path::Path) -> Result<(), StoreError> {
        sqlx::query("VACUUM INTO ?")
            .bind(path.display().to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// Claims up to `c.limit` due messages inside the caller's write
/// transaction (SQLite's write lock is held from its start, so the
/// eligibility and cap checks and the `sending` marks are one atomic step:
/// no other worker, in this process or another on the same file, can claim
/// a message of the same borrowers in between).
async fn claim_due<C: Conn>(
    conn: &mut C,
    now_ms: i64,
    c: &super::ClaimRequest<'_>,
    writes: &mut BatchRows,
) -> Result<Vec<(ClaimView, Verdict)>, StoreError> {
    let limit = i64::try_from(c.limit.max(1)).unwrap_or(i64::MAX);
    let rows = conn
        .fetch(
            "SELECT * FROM messages WHERE state IN ('planned', 'deferred') AND not_before <= ? ORDER BY not_before, id LIMIT ?",
            &[now_ms.into(), limit.into()],
        )
        .await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    claim_rows(conn, &rows, now_ms, c.since, c.lease, c.decide, writes).await
}

/// A write transaction: SQLite's write lock taken up front, so a read
/// inside it can never be invalidated by another writer.
async fn begin_write(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>, StoreError> {
    Ok(pool.begin_with("BEGIN IMMEDIATE").await?)
}

/// Sets borrowers' next looks (`record_plan`), up to 400 to a statement,
/// in the few statement sizes of `insert_rows`.
async fn write_looks<C: Conn>(
    conn: &mut C,
    mut looks: &[(i64, Option<DateTime<Utc>>)],
) -> Result<(), StoreError> {
    while !looks.is_empty() {
        let (chunk, rest) = looks.split_at(statement_rows(looks.len(), 400));
        looks = rest;
        let text = format!(
            "UPDATE borrowers SET next_look = v.column2 FROM (VALUES {}) AS v WHERE borrowers.id = v.column1",
            vec!["(?, ?)"; chunk.len()].join(", ")
        );
        let args: Vec<Arg> = chunk
            .iter()
            .flat_map(|(pk, at)| [Arg::Int(*pk), Arg::OptInt(at.map(to_millis))])
            .collect();
        conn.execute(&text, &args).await?;
    }
    Ok(())
}
