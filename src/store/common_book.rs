//! Shared `Store` methods (see `common.rs`): opt-outs and opt-ins, holds,
//! deployment secrets. Passed on as tokens to the next macro in the chain.

macro_rules! with_book_methods {
    ([$($next:tt)*] [$($last:tt)*] $store:ty { $($own:tt)* } $($shared:tt)*) => {
        $($next)*!(
            [$($last)*]
            $store { $($own)* }
            $($shared)*
    async fn set_opt_out(
        &self,
        now: DateTime<Utc>,
        borrower: &str,
        channel: crate::domain::Channel,
        out: bool,
        source: &str,
    ) -> Result<bool, StoreError> {
        let now_ms = to_millis(now);
        let text = if out {
            "UPDATE contact_points SET opted_out_at = COALESCE(opted_out_at, ?), opt_out_source = ?, updated_at = ?
              WHERE active = 1 AND channel = ? AND borrower_id = (SELECT id FROM borrowers WHERE external_id = ?)"
        } else {
            "UPDATE contact_points SET opted_out_at = NULL, opt_out_source = ?, updated_at = ?
              WHERE active = 1 AND channel = ? AND borrower_id = (SELECT id FROM borrowers WHERE external_id = ?) AND ? IS NOT NULL"
        };
        let text = sql(text);
        let q = if out {
            sqlx::query(&text)
                .bind(now_ms)
                .bind(source)
                .bind(now_ms)
                .bind(channel.as_str())
                .bind(borrower)
        } else {
            sqlx::query(&text)
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
        let r = sqlx::query(&sql("UPDATE contact_points SET opted_out_at = COALESCE(opted_out_at, ?), opt_out_source = COALESCE(opt_out_source, ?), updated_at = ?
              WHERE channel = ? AND address = ?"),
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
                sqlx::query_scalar(&sql("SELECT id FROM loans WHERE external_id = ?"))
                    .bind(loan)
                    .fetch_optional(&self.pool)
                    .await?,
            ),
            (Some(b), None) => (
                sqlx::query_scalar(&sql("SELECT id FROM borrowers WHERE external_id = ?"))
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
        let id: i64 = sqlx::query_scalar(&sql("INSERT INTO holds (borrower_id, loan_id, kind, until_date, created_at) VALUES (?, ?, ?, ?, ?) RETURNING id"))
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
        let r = sqlx::query(&sql("UPDATE holds SET cleared_at = ? WHERE id = ? AND cleared_at IS NULL"))
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
        let r = sqlx::query(&sql("UPDATE contact_points SET opted_out_at = ?, opt_out_source = ?, updated_at = ?
              WHERE id = (SELECT contact_point_id FROM messages WHERE id = ?) AND opted_out_at IS NULL"),
        )
        .bind(now_ms)
        .bind(source)
        .bind(now_ms)
        .bind(message_id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn opt_in_address(
        &self,
        now: DateTime<Utc>,
        channel: crate::domain::Channel,
        address: &str,
        source: &str,
    ) -> Result<u64, StoreError> {
        let now_ms = to_millis(now);
        let r = sqlx::query(&sql("UPDATE contact_points SET opted_out_at = NULL, opt_out_source = ?, updated_at = ? WHERE channel = ? AND address = ? AND opted_out_at IS NOT NULL"),
        )
        .bind(source)
        .bind(now_ms)
        .bind(channel.as_str())
        .bind(address)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    async fn secret(
        &self,
        name: &str,
        fresh: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Vec<u8>, StoreError> {
        // Insert-if-absent, then read: concurrent first starts agree.
        sqlx::query(&sql("INSERT INTO settings (name, value, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING"))
            .bind(name)
            .bind(fresh)
            .bind(to_millis(now))
            .execute(&self.pool)
            .await?;
        Ok(
            sqlx::query_scalar(&sql("SELECT value FROM settings WHERE name = ?"))
                .bind(name)
                .fetch_one(&self.pool)
                .await?,
        )
    }

        );
    };
}

pub(super) use with_book_methods;
