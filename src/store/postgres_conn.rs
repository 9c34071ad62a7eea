//! The PostgreSQL backend's `Conn`: SQLite's text rewritten (`sql`), values
//! bound in order, a key list bound as one array.

use std::borrow::Cow;

use sqlx::postgres::{PgArguments, PgConnection, PgRow};
use sqlx::query::Query;
use sqlx::Postgres;

use super::backend::{Arg, Conn};
use super::StoreError;

fn bind<'q>(
    mut q: Query<'q, Postgres, PgArguments>,
    args: &'q [Arg<'q>],
) -> Query<'q, Postgres, PgArguments> {
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

/// SQLite's text in PostgreSQL's dialect: `$n` placeholders, `string_agg`,
/// plain `JOIN` (SQLite's `CROSS JOIN` only fixes its join order), and the
/// row locks SQLite has no need of, written as `/*FOR UPDATE*/` or
/// `/*FOR SHARE*/` or `/*FOR KEY SHARE*/`.
pub(super) fn sql(text: &str) -> Cow<'_, str> {
    let text = text
        .replace("group_concat(", "string_agg(")
        .replace("CROSS JOIN", "JOIN")
        .replace("/*FOR UPDATE*/", "FOR UPDATE")
        .replace("/*FOR SHARE*/", "FOR SHARE")
        .replace("/*FOR KEY SHARE*/", "FOR KEY SHARE");
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
    Cow::Owned(out)
}

impl Conn for PgConnection {
    type Row = PgRow;

    async fn fetch(&mut self, text: &str, args: &[Arg<'_>]) -> Result<Vec<PgRow>, StoreError> {
        let text = sql(text);
        Ok(bind(sqlx::query(&text), args).fetch_all(self).await?)
    }

    async fn execute(&mut self, text: &str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        let text = sql(text);
        Ok(bind(sqlx::query(&text), args)
            .execute(self)
            .await?
            .rows_affected())
    }

    async fn select_in_i64_then(
        &mut self,
        text: &str,
        keys: &[i64],
        after: &[Arg<'_>],
    ) -> Result<Vec<PgRow>, StoreError> {
        let text = sql(&text.replace("IN ({})", "= ANY(?)")).into_owned();
        Ok(bind(sqlx::query(&text).bind(keys), after)
            .fetch_all(self)
            .await?)
    }

    async fn select_in_str(&mut self, text: &str, keys: &[&str]) -> Result<Vec<PgRow>, StoreError> {
        let text = sql(&text.replace("IN ({})", "= ANY(?)")).into_owned();
        Ok(sqlx::query(&text).bind(keys).fetch_all(self).await?)
    }
}

/// A pooled connection, as its connection.
impl Conn for sqlx::pool::PoolConnection<Postgres> {
    type Row = PgRow;

    async fn fetch(&mut self, text: &str, args: &[Arg<'_>]) -> Result<Vec<PgRow>, StoreError> {
        (**self).fetch(text, args).await
    }

    async fn execute(&mut self, text: &str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        (**self).execute(text, args).await
    }

    async fn select_in_i64_then(
        &mut self,
        text: &str,
        keys: &[i64],
        after: &[Arg<'_>],
    ) -> Result<Vec<PgRow>, StoreError> {
        (**self).select_in_i64_then(text, keys, after).await
    }

    async fn select_in_str(&mut self, text: &str, keys: &[&str]) -> Result<Vec<PgRow>, StoreError> {
        (**self).select_in_str(text, keys).await
    }
}
