//! The SQLite backend's write connection for the hot paths (the sending
//! loop's record-and-claim transactions, the planner's page writes), and a
//! read connection for the planner's page reads: connections of their own
//! on the same file, driven by rusqlite on the calling task's thread.
//!
//! sqlx runs each SQLite connection on a thread of its own, and every
//! statement (every row, even) is a hand-off to that thread and back: a
//! claim transaction of thirteen statements cost about thirty thread
//! wake-ups, most of the sending loop's CPU (BENCHMARKS.md, point 13).
//! Here a transaction's statements run where its code runs, and only the
//! commit (the fsync at `synchronous = FULL`) goes to the blocking pool; at
//! `NORMAL` and `OFF` nothing waits for the disk and it runs in place too.
//! The WAL is checkpointed by a third connection on the blocking pool after
//! commits (`Checkpoints`), not by the committing one. The write lock is
//! taken up front (`BEGIN IMMEDIATE`) without blocking the runtime: while
//! another connection holds it the task sleeps and tries again, up to the
//! store's busy timeout, then fails as contention, as sqlx's connections do.

use std::borrow::Cow;
use std::future::{ready, Future};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::backend::{Arg, Col, Conn, DbRow, Value};
use super::sqlite_conn::in_statements;
use super::{StoreConfig, StoreError};

mod checkpoints;

use checkpoints::Checkpoints;

/// Prepared statements kept, least recently used dropped first: the hot
/// paths' texts at their usual sizes (a full claim batch, a full page of
/// inserts). A multi-row insert's program is large, and a cache of 256
/// put the planning bench's peak at 1M loans over 100 MiB.
const STATEMENTS: usize = 64;

/// The longest pause between two tries for the write lock.
const BUSY_STEP: Duration = Duration::from_millis(20);

/// The write connection; one transaction at a time. With it, a second
/// connection that only reads (a planning pass's pages), so a page is read
/// and decided while the page before it is written (on another thread:
/// `planner::tick` runs each write as a task of its own); and a third that
/// checkpoints the log after the write connection's commits.
pub(super) struct Writer {
    conn: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    busy_timeout: Duration,
    /// Whether a commit waits for the disk: at `synchronous = FULL` it
    /// syncs the log. At `NORMAL` (in WAL mode) and `OFF` it never does, now
    /// that it never checkpoints, and runs in place.
    commit_waits: bool,
    checkpoints: Arc<Checkpoints>,
}

impl Writer {
    /// Opens the file the pool has opened (and migrated) already.
    pub(super) fn open(path: &Path, config: &StoreConfig) -> Result<Writer, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        let synchronous = config.synchronous.pragma();
        // As the pool's connections (`SqliteStore::open`), but: the busy
        // wait is this module's own, so SQLite's is off; and foreign keys
        // are not checked. This connection writes only a planning pass's
        // decisions and the sending loop's claims and outcomes: rows of
        // `messages`, `message_loans`, `message_events` and `contact_log`
        // whose parents were read (by the planner) or written (by the same
        // transaction), and nothing deletes a borrower, loan, contact point
        // or message. PostgreSQL declares no foreign keys on those tables
        // (its migration 0009); here the checks were five parent look-ups
        // a planned message.
        //
        // Its checkpoints run on a connection of their own (`Checkpoints`).
        // Statement journals (a multi-row statement's copy of the pages it
        // changes that its transaction had changed already, to undo it
        // alone) are kept in memory, not spilled to a temporary file past
        // 64 KiB: the statements of a merged page write spilled, and their
        // `pwrite`s were 7% of the writing thread's time (BENCHMARKS.md,
        // point 21).
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = OFF;
             PRAGMA cache_size = -8192; PRAGMA busy_timeout = 0; PRAGMA wal_autocheckpoint = 0;
             PRAGMA temp_store = MEMORY;"
        ))?;
        let checkpointer = Connection::open_with_flags(path, flags)?;
        checkpointer.execute_batch(&format!(
            "PRAGMA synchronous = {synchronous}; PRAGMA busy_timeout = 0; PRAGMA cache_size = -512;"
        ))?;
        conn.set_prepared_statement_cache_capacity(STATEMENTS);
        // WAL: its statements read the last commit and never wait for the
        // writer (a busy answer comes only while the file is recovered).
        let reader = Connection::open_with_flags(path, flags)?;
        reader.execute_batch(&format!(
            "PRAGMA query_only = ON; PRAGMA cache_size = -8192; PRAGMA busy_timeout = {};",
            config.busy_timeout.get().as_millis()
        ))?;
        reader.set_prepared_statement_cache_capacity(STATEMENTS);
        Ok(Writer {
            conn: Arc::new(Mutex::new(conn)),
            reader: Arc::new(Mutex::new(reader)),
            busy_timeout: config.busy_timeout.get(),
            commit_waits: config.synchronous == crate::store::Synchronous::Full,
            checkpoints: Arc::new(Checkpoints::new(checkpointer)),
        })
    }

    /// The read connection, for a planning pass's reads (each statement
    /// its own snapshot, as on a pooled connection).
    pub(super) async fn reads(&self) -> Direct {
        Direct {
            conn: Some(self.reader.clone().lock_owned().await),
            commit_waits: self.commit_waits,
            checkpoints: None,
        }
    }

    /// A write transaction with the write lock held.
    pub(super) async fn begin(&self) -> Result<Direct, StoreError> {
        let conn = self.conn.clone().lock_owned().await;
        // A transaction a dropped future left open is rolled back by
        // `Direct::drop`; this is only a second line.
        if !conn.is_autocommit() {
            conn.execute_batch("ROLLBACK")?;
        }
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match conn.execute_batch("BEGIN IMMEDIATE") {
                Ok(()) => {
                    return Ok(Direct {
                        conn: Some(conn),
                        commit_waits: self.commit_waits,
                        checkpoints: Some(self.checkpoints.clone()),
                    })
                }
                Err(e) if is_busy(&e) && started.elapsed() < self.busy_timeout => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(BUSY_STEP);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

/// A connection, held: the write connection in a transaction
/// (`Writer::begin`, rolled back when dropped uncommitted), or the read
/// connection (`Writer::reads`).
pub(super) struct Direct {
    conn: Option<OwnedMutexGuard<Connection>>,
    commit_waits: bool,
    /// The write connection's: started after each commit.
    checkpoints: Option<Arc<Checkpoints>>,
}

impl Direct {
    fn conn(&self) -> &Connection {
        self.conn.as_deref().expect("held until dropped")
    }

    /// Commits: on the blocking pool when the commit waits for the disk
    /// (the fsync), else in place; then starts a checkpoint.
    pub(super) async fn commit(mut self) -> Result<(), StoreError> {
        let checkpoints = self.checkpoints.take();
        self.commit_only().await?;
        if let Some(checkpoints) = checkpoints {
            checkpoints.start();
        }
        Ok(())
    }

    /// The commit alone (`commit`).
    async fn commit_only(&mut self) -> Result<(), StoreError> {
        let conn = self.conn.take().expect("a transaction in progress");
        let commit = move || {
            let done = conn.execute_batch("COMMIT");
            if done.is_err() && !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            done
        };
        if !self.commit_waits {
            return Ok(commit()?);
        }
        let done = tokio::task::spawn_blocking(commit);
        match done.await {
            Ok(done) => Ok(done?),
            Err(e) => Err(StoreError::Unsupported(format!(
                "the commit did not finish: {e}"
            ))),
        }
    }

    /// Every row of `text` with `args` bound, and the rows it changed.
    fn run(&self, text: &str, args: &[Arg<'_>]) -> Result<(Vec<DirectRow>, u64), StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(text)?;
        for (i, a) in args.iter().enumerate() {
            let at = i + 1;
            match a {
                Arg::Int(v) => stmt.raw_bind_parameter(at, v)?,
                Arg::OptInt(v) => stmt.raw_bind_parameter(at, v)?,
                Arg::Text(v) => stmt.raw_bind_parameter(at, v)?,
                Arg::OptText(v) => stmt.raw_bind_parameter(at, v)?,
                Arg::Owned(v) => stmt.raw_bind_parameter(at, v)?,
                Arg::Bytes(v) => stmt.raw_bind_parameter(at, v)?,
            }
        }
        let names: Box<[String]> = stmt.column_names().into_iter().map(String::from).collect();
        let width = names.len();
        let (mut cells, mut bytes, mut count) = (Vec::new(), Vec::new(), 0);
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next()? {
            for i in 0..width {
                cells.push(match row.get_ref(i)? {
                    ValueRef::Null => Slot::Null,
                    ValueRef::Integer(v) => Slot::Int(v),
                    ValueRef::Real(v) => Slot::Real(v),
                    ValueRef::Text(t) => Slot::Text(kept(&mut bytes, t)),
                    ValueRef::Blob(b) => Slot::Blob(kept(&mut bytes, b)),
                });
            }
            count += 1;
        }
        let set = Arc::new(ResultSet {
            names,
            width,
            cells,
            bytes,
        });
        let out = (0..count)
            .map(|at| DirectRow {
                set: set.clone(),
                at,
            })
            .collect();
        Ok((out, conn.changes()))
    }

    fn select_in(
        &self,
        text: &str,
        keys: &[Arg<'_>],
        after: &[Arg<'_>],
    ) -> Result<Vec<DirectRow>, StoreError> {
        let mut out = Vec::new();
        for (text, args) in in_statements(text, keys, after) {
            out.extend(self.run(&text, &args)?.0);
        }
        Ok(out)
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
    }
}

/// Statements run as they are called: each future is ready when made.
impl Conn for Direct {
    type Row = DirectRow;

    fn fetch(
        &mut self,
        text: &str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<Vec<DirectRow>, StoreError>> + Send {
        ready(self.run(text, args).map(|(rows, _)| rows))
    }

    fn execute(
        &mut self,
        text: &str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        ready(self.run(text, args).map(|(_, changed)| changed))
    }

    fn select_in_i64_then(
        &mut self,
        text: &str,
        keys: &[i64],
        after: &[Arg<'_>],
    ) -> impl Future<Output = Result<Vec<DirectRow>, StoreError>> + Send {
        let keys: Vec<Arg> = keys.iter().map(|k| Arg::Int(*k)).collect();
        ready(self.select_in(text, &keys, after))
    }

    fn select_in_str(
        &mut self,
        text: &str,
        keys: &[&str],
    ) -> impl Future<Output = Result<Vec<DirectRow>, StoreError>> + Send {
        let keys: Vec<Arg> = keys.iter().map(|k| Arg::Text(k)).collect();
        ready(self.select_in(text, &keys, &[]))
    }
}

/// The rows of one statement, read: every cell in one vector and every
/// text and blob in one buffer, so a page of rows costs a few allocations,
/// not one per row and one per text cell.
struct ResultSet {
    names: Box<[String]>,
    width: usize,
    cells: Vec<Slot>,
    bytes: Vec<u8>,
}

/// A cell of a `ResultSet`; text and blobs as ranges of its buffer.
enum Slot {
    Null,
    Int(i64),
    Real(f64),
    Text(std::ops::Range<usize>),
    Blob(std::ops::Range<usize>),
}

/// Appends `b` to `bytes`: where it is.
fn kept(bytes: &mut Vec<u8>, b: &[u8]) -> std::ops::Range<usize> {
    let start = bytes.len();
    bytes.extend_from_slice(b);
    start..bytes.len()
}

/// A row read on a direct connection: a row of its statement's rows.
pub(super) struct DirectRow {
    set: Arc<ResultSet>,
    at: usize,
}

impl DirectRow {
    /// The cell of `col`, as rusqlite reads it.
    pub(super) fn cell(&self, col: Col<'_>) -> Result<ValueRef<'_>, String> {
        let set = &*self.set;
        let i = match col {
            Col::At(i) => i,
            Col::Named(n) => set
                .names
                .iter()
                .position(|c| c == n)
                .ok_or_else(|| format!("no column {n}"))?,
        };
        if i >= set.width {
            return Err(format!("no column {i}"));
        }
        Ok(match &set.cells[self.at * set.width + i] {
            Slot::Null => ValueRef::Null,
            Slot::Int(v) => ValueRef::Integer(*v),
            Slot::Real(v) => ValueRef::Real(*v),
            Slot::Text(r) => ValueRef::Text(&set.bytes[r.clone()]),
            Slot::Blob(r) => ValueRef::Blob(&set.bytes[r.clone()]),
        })
    }
}

impl DbRow for DirectRow {
    fn len(&self) -> usize {
        self.set.width
    }

    fn try_get<'c, T: Value>(&self, col: impl Into<Col<'c>>) -> Result<T, StoreError> {
        T::from_direct(self, col.into()).map_err(StoreError::Corrupt)
    }
}

/// A rusqlite error as the driver error the rest of the store reads
/// (`StoreError::is_contention` by SQLite's code, constraint kinds).
#[derive(Debug)]
struct DirectError {
    code: Option<i32>,
    message: String,
}

impl std::fmt::Display for DirectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DirectError {}

impl sqlx::error::DatabaseError for DirectError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        self.code.map(|c| Cow::Owned(c.to_string()))
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        use sqlx::error::ErrorKind;
        match self.code {
            Some(1555 | 2067) => ErrorKind::UniqueViolation,
            Some(787) => ErrorKind::ForeignKeyViolation,
            Some(1299) => ErrorKind::NotNullViolation,
            Some(275) => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        let code = match &e {
            rusqlite::Error::SqliteFailure(f, _) => Some(f.extended_code),
            _ => None,
        };
        StoreError::Db(sqlx::Error::Database(Box::new(DirectError {
            code,
            message: e.to_string(),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database in `dir` in WAL mode with a table `t (id, b)`: its path,
    /// a connection of its own, and the write connection over it.
    fn wal_table(dir: &Path) -> (std::path::PathBuf, Connection, Writer) {
        let path = dir.join("book.db");
        let setup = Connection::open(&path).unwrap();
        setup
            .execute_batch(
                "PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB);",
            )
            .unwrap();
        let writer = Writer::open(&path, &StoreConfig::default()).unwrap();
        (path, setup, writer)
    }

    /// The write connection's commits leave the log to `Checkpoints`, which
    /// copies it into the database after each: the log is reused from its
    /// start and stays about one transaction long. Before, the write
    /// connection checkpointed only past 1,000 pages (4 MiB), itself.
    #[tokio::test]
    async fn the_log_is_checkpointed_after_each_commit_off_the_write_connection() {
        let dir = tempfile::tempdir().unwrap();
        let (path, setup, writer) = wal_table(dir.path());
        let row = Arg::Bytes(&[7u8; 1000]);
        for _ in 0..100 {
            let mut tx = writer.begin().await.unwrap();
            for _ in 0..50 {
                tx.execute("INSERT INTO t (b) VALUES (?)", std::slice::from_ref(&row))
                    .await
                    .unwrap();
            }
            tx.commit().await.unwrap();
            writer.checkpoints.settled().await;
        }
        let log = std::fs::metadata(path.with_extension("db-wal"))
            .unwrap()
            .len();
        // A transaction here is about 14 pages of 4 KiB; 100 of them
        // unchecked would be 5.7 MB.
        assert!(log < 512 * 1024, "the log grew to {log} bytes");
        let count: i64 = setup
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 5000);
    }

    /// Commits in quick succession share a checkpoint: at most one starts
    /// each `Checkpoints::GAP`, and the one due after the last commit still
    /// copies everything into the database.
    #[tokio::test]
    async fn quick_commits_share_a_checkpoint_and_the_last_is_copied() {
        let dir = tempfile::tempdir().unwrap();
        let (_, _setup, writer) = wal_table(dir.path());
        let started = Instant::now();
        for i in 0..200i64 {
            let mut tx = writer.begin().await.unwrap();
            tx.execute("INSERT INTO t (id) VALUES (?)", &[Arg::Int(i)])
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        let committed = Instant::now();
        writer.checkpoints.settled().await;
        // Every one started between `started` and now, at least `GAP` apart.
        let took = started.elapsed();
        let ran = writer.checkpoints.started();
        let most = (took.as_micros() / Checkpoints::GAP.as_micros()) as usize + 1;
        assert!(ran <= most, "{ran} checkpoints for 200 commits in {took:?}");
        // The last one started after the last commit, so it copied it.
        assert!(writer.checkpoints.last_started() >= committed);
    }
}
