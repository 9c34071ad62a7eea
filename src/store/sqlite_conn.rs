//! The SQLite backend's `Conn`: text as written, values bound in order,
//! key lists in chunks of `IN_CHUNK`.

use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteConnection, SqliteRow};
use sqlx::Sqlite;

use super::backend::{Arg, Conn};
use super::StoreError;

/// Bound parameters per `IN (…)` list; well under SQLite's limit.
pub(super) const IN_CHUNK: usize = 500;

/// The statements of a key-list read on SQLite: `text` (one `{}` where the
/// placeholder list goes) for each chunk of `IN_CHUNK` keys, with its
/// values, `after` bound after the keys. A chunk is padded with its last
/// key to a power of two (at most `IN_CHUNK`): a duplicate changes nothing
/// in a list, and the texts are then a few, each prepared once and kept by
/// the statement cache, where a list of the exact length was a new
/// statement to parse and plan at almost every call. Both SQLite
/// connections (the pool's, `sqlite_direct`'s) read lists through it.
pub(super) fn in_statements<'a>(
    text: &'a str,
    keys: &'a [Arg<'a>],
    after: &'a [Arg<'a>],
) -> impl Iterator<Item = (String, Vec<Arg<'a>>)> + 'a {
    keys.chunks(IN_CHUNK).map(move |chunk| {
        let mut args = chunk.to_vec();
        if let Some(last) = chunk.last() {
            args.resize(chunk.len().next_power_of_two().min(IN_CHUNK), last.clone());
        }
        let text = text.replace("{}", &vec!["?"; args.len()].join(","));
        args.extend(after.iter().cloned());
        (text, args)
    })
}

fn bind<'q>(
    mut q: Query<'q, Sqlite, SqliteArguments<'q>>,
    args: &'q [Arg<'q>],
) -> Query<'q, Sqlite, SqliteArguments<'q>> {
    for a in args {
        q = match a {
            Arg::Int(v) => q.bind(*v),
            Arg::OptInt(v) => q.bind(*v),
            Arg::Text(v) => q.bind(*v),
            Arg::OptText(v) => q.bind(*v),
            Arg::Owned(v) => q.bind(v.as_deref()),
            Arg::Bytes(v) => q.bind(*v),
        };
    }
    q
}

impl Conn for SqliteConnection {
    type Row = SqliteRow;

    async fn fetch(&mut self, text: &str, args: &[Arg<'_>]) -> Result<Vec<SqliteRow>, StoreError> {
        Ok(bind(sqlx::query(text), args).fetch_all(self).await?)
    }

    async fn execute(&mut self, text: &str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        Ok(bind(sqlx::query(text), args)
            .execute(self)
            .await?
            .rows_affected())
    }

    async fn select_in_i64_then(
        &mut self,
        text: &str,
        keys: &[i64],
        after: &[Arg<'_>],
    ) -> Result<Vec<SqliteRow>, StoreError> {
        let keys: Vec<Arg> = keys.iter().map(|k| Arg::Int(*k)).collect();
        select_in(self, text, &keys, after).await
    }

    async fn select_in_str(
        &mut self,
        text: &str,
        keys: &[&str],
    ) -> Result<Vec<SqliteRow>, StoreError> {
        let keys: Vec<Arg> = keys.iter().map(|k| Arg::Text(k)).collect();
        select_in(self, text, &keys, &[]).await
    }
}

/// The rows of `text` for every key (`in_statements`).
async fn select_in(
    conn: &mut SqliteConnection,
    text: &str,
    keys: &[Arg<'_>],
    after: &[Arg<'_>],
) -> Result<Vec<SqliteRow>, StoreError> {
    let mut out = Vec::new();
    for (q, args) in in_statements(text, keys, after) {
        out.extend(bind(sqlx::query(&q), &args).fetch_all(&mut *conn).await?);
    }
    Ok(out)
}
