//! What the store's shared code needs from a connection: the `Conn` trait,
//! implemented once per backend (`sqlite_conn.rs`, `postgres_conn.rs`).
//! Shared queries are ordinary generic functions over `Conn`, written in
//! SQLite's dialect with `?` placeholders; each backend adapts the text
//! (PostgreSQL: `postgres_conn::sql`) and binds the values (`Arg`) with its
//! own driver, and rows decode through the driver's own row type (`DbRow`),
//! so the generic code costs one `match` per bound value over calling the
//! driver directly.

use std::future::Future;

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Postgres, Sqlite};

use super::StoreError;

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
    fn from_sqlite(row: &SqliteRow, col: Col<'_>) -> Self;
    fn from_postgres(row: &PgRow, col: Col<'_>) -> Self;
}

impl<T> Value for T
where
    T: for<'r> sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
    T: for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    fn from_sqlite(row: &SqliteRow, col: Col<'_>) -> Self {
        match col {
            Col::At(i) => sqlx::Row::get(row, i),
            Col::Named(n) => sqlx::Row::get(row, n),
        }
    }

    fn from_postgres(row: &PgRow, col: Col<'_>) -> Self {
        match col {
            Col::At(i) => sqlx::Row::get(row, i),
            Col::Named(n) => sqlx::Row::get(row, n),
        }
    }
}

/// A row read through `Conn`. Like `sqlx::Row::get`, a column that is
/// missing or of another type is a programming error and panics.
pub(super) trait DbRow: Send + Sync {
    fn get<'c, T: Value>(&self, col: impl Into<Col<'c>>) -> T;
}

impl DbRow for SqliteRow {
    fn get<'c, T: Value>(&self, col: impl Into<Col<'c>>) -> T {
        T::from_sqlite(self, col.into())
    }
}

impl DbRow for PgRow {
    fn get<'c, T: Value>(&self, col: impl Into<Col<'c>>) -> T {
        T::from_postgres(self, col.into())
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

/// Rows to one multi-row `INSERT`: at most 8 values a row in this code, so
/// far below either backend's limit on bound values.
const ROWS_PER_INSERT: usize = 200;

/// Inserts rows with multi-row statements: `head` up to `VALUES`, `row`
/// the markup of one row (its `?` count is the row's width), `tail` what
/// follows the list (`ON CONFLICT …`, `RETURNING …`), `args` every row's
/// values in order. Returns what the statements return.
pub(super) async fn insert_rows<C: Conn>(
    conn: &mut C,
    head: &str,
    row: &str,
    tail: &str,
    args: &[Arg<'_>],
) -> Result<Vec<C::Row>, StoreError> {
    let width = row.matches('?').count().max(1);
    let mut out = Vec::new();
    for chunk in args.chunks(width * ROWS_PER_INSERT) {
        let rows = vec![row; chunk.len() / width].join(", ");
        out.extend(
            conn.fetch(&format!("{head} VALUES {rows} {tail}"), chunk)
                .await?,
        );
    }
    Ok(out)
}
