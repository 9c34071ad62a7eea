//! `duebell store copy`: moves every row of one store into another, empty
//! one (SQLite → PostgreSQL when a deployment outgrows one server, or back).
//! Both schemas hold the same columns with the same meanings, so rows move
//! as they are, ids included. The source is read in one snapshot, the
//! target written in one transaction: a failed copy leaves the target
//! empty. The copy is verified by counting every table on both sides.

use sqlx::postgres::PgArguments;
use sqlx::sqlite::SqliteArguments;
use sqlx::{Arguments, Postgres, Row, Sqlite, Transaction};

use super::backend::Backend;
use super::{PgStore, SqliteStore, StoreError};
use crate::store::StoreConfig;

use super::copy_tables::{Col, Table, TABLES};
use Col::{Bytes, Int, Text};

/// Rows of a paged table read per query (by key range).
const BLOCK: i64 = 20_000;
/// Bound parameters per insert statement (under both databases' limits).
const MAX_PARAMS: usize = 30_000;

#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Int(Option<i64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

/// Rows per table on each side after a copy.
#[derive(Debug, Clone, Default)]
pub struct CopyReport {
    /// (table, rows in the source, rows in the target)
    pub tables: Vec<(&'static str, u64, u64)>,
}

impl CopyReport {
    pub fn verified(&self) -> bool {
        self.tables.iter().all(|(_, a, b)| a == b)
    }
}

enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Pg(Transaction<'static, Postgres>),
}

impl Tx {
    async fn count(&mut self, table: &str) -> Result<u64, StoreError> {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let n: i64 = match self {
            Tx::Sqlite(tx) => sqlx::query_scalar(&sql).fetch_one(&mut **tx).await?,
            Tx::Pg(tx) => sqlx::query_scalar(&sql).fetch_one(&mut **tx).await?,
        };
        Ok(n as u64)
    }

    /// The smallest and largest key of a paged table.
    async fn key_range(&mut self, t: &Table) -> Result<Option<(i64, i64)>, StoreError> {
        let sql = format!("SELECT MIN({0}), MAX({0}) FROM {1}", t.columns[0].0, t.name);
        let (lo, hi): (Option<i64>, Option<i64>) = match self {
            Tx::Sqlite(tx) => sqlx::query_as(&sql).fetch_one(&mut **tx).await?,
            Tx::Pg(tx) => sqlx::query_as(&sql).fetch_one(&mut **tx).await?,
        };
        Ok(lo.zip(hi))
    }

    /// Rows whose key is in `[lo, lo + BLOCK)`, or every row when `lo` is `None`.
    async fn read(&mut self, t: &Table, lo: Option<i64>) -> Result<Vec<Vec<Cell>>, StoreError> {
        let cols: Vec<&str> = t.columns.iter().map(|c| c.0).collect();
        let key = t.columns[0].0;
        let (range_sqlite, range_pg) = match lo {
            Some(_) => (
                format!(" WHERE {key} >= ? AND {key} < ?"),
                format!(" WHERE {key} >= $1 AND {key} < $2"),
            ),
            None => (String::new(), String::new()),
        };
        let order: Vec<&str> = cols.iter().take(2).copied().collect();
        let base = format!("SELECT {} FROM {}", cols.join(", "), t.name);
        let order = format!(" ORDER BY {}", order.join(", "));
        macro_rules! read_rows {
            ($tx:expr, $range:expr) => {{
                let sql = format!("{base}{}{order}", $range);
                let mut q = sqlx::query(&sql);
                if let Some(lo) = lo {
                    q = q.bind(lo).bind(lo + BLOCK);
                }
                let rows = q.fetch_all(&mut **$tx).await?;
                rows.iter()
                    .map(|r| {
                        t.columns
                            .iter()
                            .enumerate()
                            .map(|(i, (_, c))| -> Result<Cell, sqlx::Error> {
                                Ok(match c {
                                    Int => Cell::Int(r.try_get(i)?),
                                    Text => Cell::Text(r.try_get(i)?),
                                    Bytes => Cell::Bytes(r.try_get(i)?),
                                })
                            })
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }};
        }
        Ok(match self {
            Tx::Sqlite(tx) => read_rows!(tx, range_sqlite),
            Tx::Pg(tx) => read_rows!(tx, range_pg),
        })
    }

    async fn insert(&mut self, t: &Table, rows: &[Vec<Cell>]) -> Result<(), StoreError> {
        let cols: Vec<&str> = t.columns.iter().map(|c| c.0).collect();
        let per = (MAX_PARAMS / cols.len()).max(1);
        for chunk in rows.chunks(per) {
            let mut n = 0;
            let values: Vec<String> = chunk
                .iter()
                .map(|_| {
                    let marks: Vec<String> = cols
                        .iter()
                        .map(|_| {
                            n += 1;
                            match self {
                                Tx::Sqlite(_) => "?".to_owned(),
                                Tx::Pg(_) => format!("${n}"),
                            }
                        })
                        .collect();
                    format!("({})", marks.join(", "))
                })
                .collect();
            let sql = format!(
                "INSERT INTO {} ({}) VALUES {}",
                t.name,
                cols.join(", "),
                values.join(", ")
            );
            match self {
                Tx::Sqlite(tx) => {
                    let mut args = SqliteArguments::default();
                    for cell in chunk.iter().flatten() {
                        let added = match cell {
                            Cell::Int(v) => args.add(*v),
                            Cell::Text(v) => args.add(v.clone()),
                            Cell::Bytes(v) => args.add(v.clone()),
                        };
                        added.map_err(sqlx::Error::Encode)?;
                    }
                    sqlx::query_with(&sql, args).execute(&mut **tx).await?;
                }
                Tx::Pg(tx) => {
                    let mut args = PgArguments::default();
                    for cell in chunk.iter().flatten() {
                        let added = match cell {
                            Cell::Int(v) => args.add(*v),
                            Cell::Text(v) => args.add(v.clone()),
                            Cell::Bytes(v) => args.add(v.clone()),
                        };
                        added.map_err(sqlx::Error::Encode)?;
                    }
                    sqlx::query_with(&sql, args).execute(&mut **tx).await?;
                }
            }
        }
        Ok(())
    }

    /// Moves PostgreSQL identity sequences past the copied ids.
    async fn follow_ids(&mut self, t: &Table) -> Result<(), StoreError> {
        if let Tx::Pg(tx) = self {
            if t.identity {
                let sql = format!(
                    "SELECT setval(pg_get_serial_sequence('{0}', 'id'), COALESCE((SELECT MAX(id) FROM {0}), 0) + 1, false)",
                    t.name
                );
                sqlx::query(&sql).execute(&mut **tx).await?;
            }
        }
        Ok(())
    }

    async fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await?,
            Tx::Pg(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

/// A store opened for copying.
enum Side {
    Sqlite(SqliteStore),
    Pg(PgStore),
}

impl Side {
    async fn open(config: &StoreConfig) -> Result<Side, StoreError> {
        if config.sqlite_path().is_some() {
            Ok(Side::Sqlite(SqliteStore::open(config).await?))
        } else if config.is_postgres() {
            Ok(Side::Pg(PgStore::open(config).await?))
        } else {
            Err(StoreError::Unsupported(format!(
                "`{}` is not a store URL; use sqlite://PATH or postgres://USER@HOST:5432/DATABASE",
                config.url
            )))
        }
    }

    fn as_source(&self) -> Source<'_> {
        match self {
            Side::Sqlite(s) => Source::Sqlite(s),
            Side::Pg(s) => Source::Pg(s),
        }
    }

    async fn close(&self) {
        use super::Store;
        match self {
            Side::Sqlite(s) => Store::close(s).await,
            Side::Pg(s) => Store::close(s).await,
        }
    }
}

pub(super) enum Source<'a> {
    Sqlite(&'a SqliteStore),
    Pg(&'a PgStore),
}

impl<'a> From<&'a PgStore> for Source<'a> {
    fn from(s: &'a PgStore) -> Self {
        Source::Pg(s)
    }
}

impl<'a> From<&'a SqliteStore> for Source<'a> {
    fn from(s: &'a SqliteStore) -> Self {
        Source::Sqlite(s)
    }
}

impl Source<'_> {
    /// A read transaction over one snapshot of the store.
    async fn read(&self) -> Result<Tx, StoreError> {
        Ok(match self {
            Source::Sqlite(s) => Tx::Sqlite(s.pool().begin().await?),
            Source::Pg(s) => {
                let mut tx = s.pool().begin().await?;
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .execute(&mut *tx)
                    .await?;
                Tx::Pg(tx)
            }
        })
    }

    async fn write(&self) -> Result<Tx, StoreError> {
        Ok(match self {
            Source::Sqlite(s) => Tx::Sqlite(s.pool().begin_with("BEGIN IMMEDIATE").await?),
            Source::Pg(s) => Tx::Pg(s.pool().begin().await?),
        })
    }
}

/// Copies every row of `from` into `to` (both URLs; each store is created
/// and migrated if needed). The target must hold no data.
pub async fn copy(from: &StoreConfig, to: &StoreConfig) -> Result<CopyReport, StoreError> {
    if from.url == to.url {
        return Err(StoreError::Unsupported(
            "--from and --to name the same store".into(),
        ));
    }
    let source = Side::open(from).await?;
    let target = Side::open(to).await?;
    let result = copy_between(source.as_source(), target.as_source()).await;
    source.close().await;
    target.close().await;
    result
}

/// Copies `from` into the empty `to`, in one target transaction.
pub(super) async fn copy_between<'a, 'b>(
    from: impl Into<Source<'a>>,
    to: impl Into<Source<'b>>,
) -> Result<CopyReport, StoreError> {
    let (from, to) = (from.into(), to.into());
    let mut read = from.read().await?;
    let mut write = to.write().await?;
    for t in TABLES {
        let n = write.count(t.name).await?;
        // Leases are runtime state, not data: an empty store has none
        // unless a daemon already ran on it.
        if n > 0 && t.name != "leases" {
            return Err(StoreError::Unsupported(format!(
                "the target store already holds {n} {} rows; copy only into an empty store",
                t.name
            )));
        }
    }
    sqlx_clear_leases(&mut write).await?;
    let mut report = CopyReport::default();
    for t in TABLES {
        if t.paged {
            if let Some((mut lo, max)) = read.key_range(t).await? {
                while lo <= max {
                    let rows = read.read(t, Some(lo)).await?;
                    write.insert(t, &rows).await?;
                    lo += BLOCK;
                }
            }
        } else {
            let rows = read.read(t, None).await?;
            write.insert(t, &rows).await?;
        }
        write.follow_ids(t).await?;
        let source_rows = read.count(t.name).await?;
        let target_rows = write.count(t.name).await?;
        report.tables.push((t.name, source_rows, target_rows));
    }
    if !report.verified() {
        let diff: Vec<String> = report
            .tables
            .iter()
            .filter(|(_, a, b)| a != b)
            .map(|(t, a, b)| format!("{t}: {a} in the source, {b} copied"))
            .collect();
        return Err(StoreError::Corrupt(format!(
            "copy not verified, nothing written ({})",
            diff.join("; ")
        )));
    }
    write.commit().await?;
    Ok(report)
}

async fn sqlx_clear_leases(tx: &mut Tx) -> Result<(), StoreError> {
    match tx {
        Tx::Sqlite(tx) => {
            sqlx::query("DELETE FROM leases").execute(&mut **tx).await?;
        }
        Tx::Pg(tx) => {
            sqlx::query("DELETE FROM leases").execute(&mut **tx).await?;
        }
    }
    Ok(())
}
