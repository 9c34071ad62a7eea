//! What the store's shared code needs from a connection: the `Conn` trait,
//! implemented once per backend (`sqlite_conn.rs`, `postgres_conn.rs`).
//! Shared queries are ordinary generic functions over `Conn`, written in
//! SQLite's dialect with `?` placeholders; each backend adapts the text
//! (PostgreSQL: `postgres_conn::sql`) and binds the values (`Arg`) with its
//! own driver, and rows decode through the driver's own row type (`DbRow`),
//! so the generic code costs one `match` per bound value over calling the
//! driver directly.

use std::future::Future;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool, Transaction};

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Postgres, Sqlite};

use super::flow::BatchRows;
use super::sqlite_direct::DirectRow;
use super::{
    BulkChange, ClaimRequest, ClaimView, Db, Fence, FinishItem, ImportTx, NewMessage, StoreError,
    Verdict, Wakeups,
};

/// A value bound to a statement.
#[derive(Debug, Clone)]
pub(super) enum Arg<'a> {
    Int(i64),
    OptInt(Option<i64>),
    Text(&'a str),
    OptText(Option<&'a str>),
    /// Text made for this statement (a formatted amount, a joined list).
    Owned(Option<String>),
    Bytes(&'a [u8]),
}

impl From<String> for Arg<'_> {
    fn from(v: String) -> Self {
        Arg::Owned(Some(v))
    }
}

impl From<Option<String>> for Arg<'_> {
    fn from(v: Option<String>) -> Self {
        Arg::Owned(v)
    }
}

impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(v: &'a [u8]) -> Self {
        Arg::Bytes(v)
    }
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::OptInt(v)
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(v)
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(v)
    }
}

impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Arg::OptText(v.as_deref())
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::OptText(v)
    }
}

/// A column of a row: by position or by name.
#[derive(Debug, Clone, Copy)]
pub(super) enum Col<'a> {
    At(usize),
    Named(&'a str),
}

impl From<usize> for Col<'_> {
    fn from(i: usize) -> Self {
        Col::At(i)
    }
}

impl<'a> From<&'a str> for Col<'a> {
    fn from(name: &'a str) -> Self {
        Col::Named(name)
    }
}

/// A Rust type a column decodes to in both backends.
pub(super) trait Value: Sized {
    fn from_sqlite(row: &SqliteRow, col: Col<'_>) -> Result<Self, sqlx::Error>;
    fn from_postgres(row: &PgRow, col: Col<'_>) -> Result<Self, sqlx::Error>;
    /// From SQLite's write connection (`sqlite_direct.rs`).
    fn from_direct(row: &DirectRow, col: Col<'_>) -> Result<Self, String>;
}

impl<T> Value for T
where
    T: for<'r> sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
    T: for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
    T: rusqlite::types::FromSql,
{
    fn from_direct(row: &DirectRow, col: Col<'_>) -> Result<Self, String> {
        T::column_result(row.cell(col)?).map_err(|e| format!("column {col:?}: {e}"))
    }

    fn from_sqlite(row: &SqliteRow, col: Col<'_>) -> Result<Self, sqlx::Error> {
        match col {
            Col::At(i) => sqlx::Row::try_get(row, i),
            Col::Named(n) => sqlx::Row::try_get(row, n),
        }
    }

    fn from_postgres(row: &PgRow, col: Col<'_>) -> Result<Self, sqlx::Error> {
        match col {
            Col::At(i) => sqlx::Row::try_get(row, i),
            Col::Named(n) => sqlx::Row::try_get(row, n),
        }
    }
}

/// A row read through `Conn`. Like `sqlx::Row::get`, a column that is
/// missing or of another type is a programming error and panics.
pub(super) trait DbRow: Send + Sync {
    /// The number of columns.
    fn len(&self) -> usize;

    /// The column as `T`, or the driver's error.
    fn try_get<'c, T: Value>(&self, col: impl Into<Col<'c>>) -> Result<T, StoreError>;

    fn get<'c, T: Value>(&self, col: impl Into<Col<'c>>) -> T {
        let col = col.into();
        match self.try_get(col) {
            Ok(v) => v,
            Err(e) => panic!("column {col:?}: {e}"),
        }
    }
}

impl DbRow for SqliteRow {
    fn len(&self) -> usize {
        sqlx::Row::len(self)
    }

    fn try_get<'c, T: Value>(&self, col: impl Into<Col<'c>>) -> Result<T, StoreError> {
        Ok(T::from_sqlite(self, col.into())?)
    }
}

impl DbRow for PgRow {
    fn len(&self) -> usize {
        sqlx::Row::len(self)
    }

    fn try_get<'c, T: Value>(&self, col: impl Into<Col<'c>>) -> Result<T, StoreError> {
        Ok(T::from_postgres(self, col.into())?)
    }
}

/// A backend's connection (or a transaction on one, through `&mut *tx`).
/// Every statement text is SQLite's dialect, which the backend adapts.
pub(super) trait Conn: Send {
    type Row: DbRow;

    /// Every row of one statement.
    fn fetch(
        &mut self,
        text: &str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<Vec<Self::Row>, StoreError>> + Send;

    /// Runs one statement; the number of rows it changed.
    fn execute(
        &mut self,
        text: &str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The rows of `text` (one `IN ({})`) for every key of `keys`: SQLite
    /// binds chunks of the list, PostgreSQL one array.
    fn select_in_i64(
        &mut self,
        text: &str,
        keys: &[i64],
    ) -> impl Future<Output = Result<Vec<Self::Row>, StoreError>> + Send {
        self.select_in_i64_then(text, keys, &[])
    }

    /// `select_in_i64` for a text whose other `?`s all follow the list:
    /// `after` binds them, so the text stays the same from call to call
    /// (one prepared statement, not one a value).
    fn select_in_i64_then(
        &mut self,
        text: &str,
        keys: &[i64],
        after: &[Arg<'_>],
    ) -> impl Future<Output = Result<Vec<Self::Row>, StoreError>> + Send;

    /// `select_in_i64` for text keys.
    fn select_in_str(
        &mut self,
        text: &str,
        keys: &[&str],
    ) -> impl Future<Output = Result<Vec<Self::Row>, StoreError>> + Send;

    /// The one row a statement returns (an error if none).
    fn fetch_one(
        &mut self,
        text: &str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<Self::Row, StoreError>> + Send {
        async move {
            self.fetch(text, args)
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| sqlx::Error::RowNotFound.into())
        }
    }

    /// The first row of one statement, if any.
    fn fetch_optional(
        &mut self,
        text: &str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<Option<Self::Row>, StoreError>> + Send {
        async move { Ok(self.fetch(text, args).await?.into_iter().next()) }
    }
}

/// Rows to one multi-row `INSERT`: at most 12 values a row in this code,
/// so far below either backend's limit on bound values.
const ROWS_PER_INSERT: usize = 200;

/// Inserts rows with multi-row statements: `head` up to `VALUES`, `row`
/// the markup of one row (its `?` count is the row's width), `tail` what
/// follows the list (`ON CONFLICT …`, `RETURNING …`), `args` every row's
/// values in order. Returns what the statements return.
///
/// A statement holds `ROWS_PER_INSERT` rows, or the rest in statements of
/// a power of two rows each (113 rows: 64, 32, 16, 1), so a table's
/// inserts use at most nine texts, each prepared once and kept by the
/// connection's statement cache; a text of the exact remainder was a new
/// statement to parse and plan at almost every page of a planning pass.
pub(super) async fn insert_rows<C: Conn>(
    conn: &mut C,
    head: &str,
    row: &str,
    tail: &str,
    args: &[Arg<'_>],
) -> Result<Vec<C::Row>, StoreError> {
    let text = format!("{head} VALUES {{}} {tail}");
    values_rows(conn, &text, row, args, &[], false).await
}

/// Runs `text` over rows of values in the statement sizes `insert_rows`
/// uses: its `{}` becomes the list of `row`s, `args` are every row's values
/// in order and `trailing` are bound after each statement's rows (a
/// `WITH v(…) AS (VALUES {}) UPDATE …` with the values the rows share).
/// Returns what the statements return.
///
/// With `pad`, the last statement is filled up to the next of the fixed
/// sizes by rows of NULLs, so a batch of 27 rows is one statement of 32,
/// not four (on PostgreSQL each is a round trip). Each NULL is typed as
/// the first row's value in its place (PostgreSQL needs one type a
/// column). Only for texts where a row of NULLs does nothing: an update
/// joined on the row's first value (`= NULL` matches no row), or
/// `padded_insert`'s filter. A row with a blob is not padded.
pub(super) async fn values_rows<C: Conn>(
    conn: &mut C,
    text: &str,
    row: &str,
    args: &[Arg<'_>],
    trailing: &[Arg<'_>],
    pad: bool,
) -> Result<Vec<C::Row>, StoreError> {
    let width = row.matches('?').count().max(1);
    let nulls: Option<Vec<Arg>> = args.get(..width).filter(|_| pad).and_then(|first| {
        first
            .iter()
            .map(|a| match a {
                Arg::Int(_) | Arg::OptInt(_) => Some(Arg::OptInt(None)),
                Arg::Text(_) | Arg::OptText(_) | Arg::Owned(_) => Some(Arg::OptText(None)),
                Arg::Bytes(_) => None,
            })
            .collect()
    });
    let mut out = Vec::new();
    let mut rest = args;
    while !rest.is_empty() {
        let left = rest.len() / width;
        let rows = match nulls {
            Some(_) => left.next_power_of_two().min(ROWS_PER_INSERT),
            None => statement_rows(left, ROWS_PER_INSERT),
        };
        let (chunk, after) = rest.split_at((rows * width).min(rest.len()));
        let mut bound: Vec<Arg> = Vec::with_capacity(rows * width + trailing.len());
        bound.extend_from_slice(chunk);
        for _ in chunk.len() / width..rows {
            bound.extend_from_slice(nulls.as_deref().unwrap_or_default());
        }
        bound.extend_from_slice(trailing);
        let list = vec![row; rows].join(", ");
        out.extend(conn.fetch(&text.replacen("{}", &list, 1), &bound).await?);
        rest = after;
    }
    Ok(out)
}

/// `insert_rows` in `values_rows`'s padded statements, the rows of NULLs
/// left out by a filter on the first column, which must not be NULL in a
/// real row.
pub(super) async fn padded_insert<C: Conn>(
    conn: &mut C,
    head: &str,
    row: &str,
    args: &[Arg<'_>],
) -> Result<(), StoreError> {
    let text = format!("{head} SELECT * FROM (VALUES {{}}) AS v WHERE column1 IS NOT NULL");
    values_rows(conn, &text, row, args, &[], true).await?;
    Ok(())
}

/// The rows of the next multi-row statement with `left` rows to go:
/// `most`, or the largest power of two not over `left`.
pub(super) fn statement_rows(left: usize, most: usize) -> usize {
    match left {
        0 => 1,
        n if n >= most => most,
        n => 1 << n.ilog2(),
    }
}

/// A backend: its pool, the steps whose SQL differs in substance, and the
/// `Store` methods it implements itself. Every `Backend` is a `Store`
/// (`shared.rs`); the shared methods are generic over it.
#[async_trait]
pub(super) trait Backend: Send + Sync + Sized + 'static {
    type Db: Database<Connection: Conn>;

    fn pool(&self) -> &Pool<Self::Db>;

    /// A connection from the pool, for statements run one at a time.
    async fn reader(&self) -> Result<PoolConnection<Self::Db>, StoreError> {
        Ok(self.pool().acquire().await?)
    }

    /// The connection a planning pass reads its pages on.
    type Reads: Conn;

    /// `Self::Reads`, ready.
    async fn plan_reads(&self) -> Result<Self::Reads, StoreError>;

    /// A transaction for changes (SQLite takes its write lock up front).
    async fn begin_write(&self) -> Result<Transaction<'static, Self::Db>, StoreError>;

    /// Called before a commit that made work due (PostgreSQL wakes the
    /// other instances' dispatchers).
    async fn work_committed<C: Conn>(&self, _conn: &mut C) -> Result<(), StoreError> {
        Ok(())
    }

    /// Claims due messages inside the caller's transaction.
    async fn claim_due<C: Conn>(
        &self,
        conn: &mut C,
        now_ms: i64,
        c: &ClaimRequest<'_>,
        writes: &mut BatchRows,
    ) -> Result<Vec<(ClaimView, Verdict)>, StoreError>;

    /// `Store::finish_and_claim`: in a transaction of `begin_write`, unless
    /// the backend has a faster way.
    async fn finish_and_claim(
        &self,
        now: DateTime<Utc>,
        items: &[FinishItem],
        claim: Option<ClaimRequest<'_>>,
    ) -> Result<(Vec<bool>, Vec<(ClaimView, Verdict)>), StoreError> {
        super::common_outcomes::finish_and_claim(self, now, items, claim).await
    }

    /// `Store::db`.
    fn db(&self) -> Db;

    /// `Store::begin_import`.
    async fn begin_import(&self, now: DateTime<Utc>) -> Result<Box<dyn ImportTx>, StoreError>;

    /// `Store::refresh_statistics`.
    async fn refresh_statistics(&self, _change: BulkChange) -> Result<(), StoreError> {
        Ok(())
    }

    /// `Store::record_plan`.
    async fn record_plan(
        &self,
        now: DateTime<Utc>,
        messages: &[NewMessage],
        looks: &[(i64, Option<DateTime<Utc>>)],
        fence: Option<&Fence>,
    ) -> Result<u64, StoreError>;

    /// `Store::backend`.
    fn backend(&self) -> &'static str;

    /// `Store::write_lanes`.
    fn write_lanes(&self) -> usize {
        1
    }

    /// `Store::wakeups`.
    fn wakeups(&self) -> Option<Wakeups> {
        None
    }

    /// `Store::request_plan`.
    async fn request_plan(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// `Store::shared_rate`.
    fn shared_rate(&self) -> Option<std::sync::Arc<dyn crate::shared_rate::SharedRate>> {
        None
    }

    /// `Store::snapshot_to`.
    async fn snapshot_to(&self, path: &std::path::Path) -> Result<(), StoreError>;

    /// `Store::close`.
    async fn close(&self);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_insert_is_cut_into_statements_of_a_few_fixed_sizes() {
        let mut sizes = std::collections::BTreeSet::new();
        for n in 1..=1000 {
            let (mut left, mut cuts) = (n, Vec::new());
            while left > 0 {
                let rows = statement_rows(left, ROWS_PER_INSERT);
                cuts.push(rows);
                left -= rows;
            }
            assert_eq!(cuts.iter().sum::<usize>(), n);
            if n == 113 {
                assert_eq!(cuts, [64, 32, 16, 1]);
            }
            sizes.extend(cuts);
        }
        assert_eq!(
            sizes.into_iter().collect::<Vec<_>>(),
            [1, 2, 4, 8, 16, 32, 64, 128, 200]
        );
    }

    /// An in-memory SQLite database with the table `create` makes.
    async fn memory_table(create: &str) -> sqlx::SqliteConnection {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        conn.execute(create, &[]).await.unwrap();
        conn
    }

    #[tokio::test]
    async fn padded_statements_change_only_the_real_rows() {
        let mut conn =
            memory_table("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, n INTEGER)").await;
        // 227 rows: 200, then 27 in a statement of 32 with five rows of NULLs.
        let names: Vec<String> = (1..=227).map(|i| format!("r{i}")).collect();
        let rows: Vec<Arg> = names
            .iter()
            .enumerate()
            .flat_map(|(i, n)| [Arg::Int(2 * i as i64 + 1), Arg::Text(n), Arg::OptInt(None)])
            .collect();
        padded_insert(&mut conn, "INSERT INTO t (id, v, n)", "(?, ?, ?)", &rows)
            .await
            .unwrap();
        let count = conn
            .fetch("SELECT COUNT(*), MAX(id) FROM t", &[])
            .await
            .unwrap();
        assert_eq!((count[0].get::<i64>(0), count[0].get::<i64>(1)), (227, 453));
        // Three rows updated, padded to four; the shared value after them.
        let args: Vec<Arg> = [1, 5, 9]
            .iter()
            .flat_map(|&id| [Arg::Int(id), Arg::Int(10 * id)])
            .collect();
        let updated = values_rows(
            &mut conn,
            "WITH v(id, n) AS (VALUES {}) UPDATE t SET n = v.n + ? FROM v WHERE t.id = v.id RETURNING t.id",
            "(?, ?)",
            &args,
            &[Arg::Int(1)],
            true,
        )
        .await
        .unwrap();
        let mut updated: Vec<i64> = updated.iter().map(|r| r.get::<i64>(0)).collect();
        updated.sort_unstable();
        assert_eq!(updated, [1, 5, 9]);
        let changed = conn
            .fetch("SELECT id, n FROM t WHERE n IS NOT NULL ORDER BY id", &[])
            .await
            .unwrap();
        let changed: Vec<(i64, i64)> = changed.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(changed, [(1, 11), (5, 51), (9, 91)]);
    }

    #[tokio::test]
    async fn rows_of_values_bind_their_shared_values_after_each_statement() {
        let mut conn = memory_table("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)").await;
        let ids: Vec<i64> = (1..=300).collect();
        let rows: Vec<Arg> = ids.iter().map(|&i| Arg::Int(i)).collect();
        insert_rows(&mut conn, "INSERT INTO t (id)", "(?)", "", &rows)
            .await
            .unwrap();
        // 137 rows go as 128, 8 and 1, each statement with the shared
        // value bound after its own rows.
        let names: Vec<String> = (1..=137).map(|i| format!("n{i}")).collect();
        let args: Vec<Arg> = names
            .iter()
            .enumerate()
            .flat_map(|(i, n)| [Arg::Int(2 * i as i64 + 1), Arg::Text(n)])
            .collect();
        let updated = values_rows(
            &mut conn,
            "WITH v(id, name) AS (VALUES {}) UPDATE t SET v = v.name || ? FROM v WHERE t.id = v.id RETURNING t.id",
            "(?, ?)",
            &args,
            &[Arg::Text("!")],
            false,
        )
        .await
        .unwrap();
        let mut updated: Vec<i64> = updated.iter().map(|r| r.get::<i64>(0)).collect();
        updated.sort_unstable();
        assert_eq!(updated, (0..137).map(|i| 2 * i + 1).collect::<Vec<i64>>());
        let all = conn
            .fetch("SELECT id, v FROM t WHERE v IS NOT NULL ORDER BY id", &[])
            .await
            .unwrap();
        assert_eq!(all.len(), 137);
        for (i, row) in all.iter().enumerate() {
            assert_eq!(row.get::<i64>(0), 2 * i as i64 + 1);
            assert_eq!(row.get::<String>(1), format!("n{}!", i + 1));
        }
    }
}
