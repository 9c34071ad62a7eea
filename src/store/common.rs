//! The `Store` methods whose SQL is the same in both dialects once
//! placeholders and two spellings are adapted: each backend expands
//! `impl_store!` with its own methods, with its own `sql`
//! (SQLite: as written; PostgreSQL: `$n` placeholders, `string_agg`, plain
//! `JOIN`, `/*FOR UPDATE*/` as a row lock), `self.pool`, `load_borrowers`,
//! `begin_write` (SQLite takes its write lock up front) and
//! `work_committed` (PostgreSQL announces new due work). What differs in
//! substance (claims, planning writes, imports, leases, snapshots) stays in
//! each backend.

/// `impl Store for $store` with the shared methods and the backend's own.
macro_rules! impl_store {
    ($store:ty { $($own:tt)* }) => {
        #[async_trait::async_trait]
        impl Store for $store {
    async fn last_import_hash(&self, path: &str) -> Result<Option<String>, StoreError> {
        let row =
            sqlx::query(&sql("SELECT content_hash FROM imports WHERE path = ? ORDER BY id DESC LIMIT 1"))
                .bind(path)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    async fn counts(&self) -> Result<StoreCounts, StoreError> {
        let row = sqlx::query(&sql("SELECT (SELECT COUNT(*) FROM borrowers),
                    (SELECT COUNT(*) FROM loans),
                    (SELECT COUNT(*) FROM loans WHERE status = 'active'),
                    (SELECT COUNT(*) FROM loans WHERE status = 'paid'),
                    (SELECT COUNT(*) FROM payments),
                    (SELECT COUNT(*) FROM contact_points WHERE active = 1),
                    (SELECT COUNT(*) FROM messages),
                    (SELECT COUNT(*) FROM imports)"),
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
        let Some(row) = sqlx::query(&sql("SELECT l.id, l.external_id, b.external_id, l.due_date, l.amount_due, l.currency, l.status
               FROM loans l JOIN borrowers b ON b.id = l.borrower_id
              WHERE l.external_id = ?"),
        )
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let loan_pk: i64 = row.get(0);
        let amounts: Vec<String> =
            sqlx::query_scalar(&sql("SELECT amount FROM payments WHERE loan_id = ?"))
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
        let pks: Vec<i64> = sqlx::query_scalar(&sql("SELECT DISTINCT borrower_id FROM loans WHERE status = 'active' AND borrower_id > ? ORDER BY borrower_id LIMIT ?"),
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
        let pk: Option<i64> = sqlx::query_scalar(&sql("SELECT id FROM borrowers WHERE external_id = ?"))
            .bind(external_id)
            .fetch_optional(&mut *conn)
            .await?;
        match pk {
            Some(pk) => Ok(load_borrowers(&mut conn, &[pk], since).await?.pop()),
            None => Ok(None),
        }
    }

    async fn next_pending_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let at: Option<i64> = sqlx::query_scalar(&sql("SELECT MIN(not_before) FROM messages WHERE state IN ('planned', 'deferred')"),
        )
        .fetch_one(&self.pool)
        .await?;
        at.map(from_millis).transpose()
    }

    async fn in_flight(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(i64, String, crate::domain::Channel)>, StoreError> {
        let rows = sqlx::query(&sql("SELECT id, COALESCE(attempt_id, ''), channel FROM messages
                                 WHERE state = 'sending' AND (lease_until IS NULL OR lease_until < ?) ORDER BY id"))
            .bind(to_millis(now))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.get(0), r.get(1), parse_channel(&r.get::<String, _>(2))?)))
            .collect()
    }

    async fn renew_claims(&self, holder: &str, until: DateTime<Utc>) -> Result<u64, StoreError> {
        let r = sqlx::query(&sql("UPDATE messages SET lease_until = ? WHERE state = 'sending' AND claimed_by = ? AND lease_until IS NOT NULL"))
            .bind(to_millis(until))
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    async fn release_claims(&self, holder: &str) -> Result<u64, StoreError> {
        let r = sqlx::query(&sql("UPDATE messages SET lease_until = NULL WHERE state = 'sending' AND claimed_by = ?"),
        )
        .bind(holder)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    async fn release_lease(&self, fence: &Fence) -> Result<(), StoreError> {
        sqlx::query(&sql("UPDATE leases SET expires_at = 0 WHERE name = ? AND holder = ? AND token = ?"))
            .bind(&fence.role)
            .bind(&fence.holder)
            .bind(fence.token)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(&sql("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success"),
        )
        .fetch_one(&self.pool)
        .await?)
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

    async fn message_events(
        &self,
        message_id: i64,
    ) -> Result<Vec<super::MessageEvent>, StoreError> {
        let rows = sqlx::query(&sql("SELECT at, from_state, to_state, reason FROM message_events WHERE message_id = ? ORDER BY id"))
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
                        .map(super::codec::state)
                        .transpose()?,
                    to: super::codec::state(&r.get::<String, _>(2))?,
                    reason: r.get(3),
                })
            })
            .collect()
    }

    async fn sent_since(&self, since: DateTime<Utc>) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(&sql("SELECT COUNT(*) FROM contact_log WHERE at >= ?"))
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
            Option<crate::reason::Reason>,
            u64,
        )>,
        StoreError,
    > {
        let rows = sqlx::query(&sql("SELECT state, channel, provider, reason, COUNT(*) FROM messages GROUP BY state, channel, provider, reason"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    super::codec::state(&r.get::<String, _>(0))?,
                    parse_channel(&r.get::<String, _>(1))?,
                    r.get(2),
                    r.get::<Option<String>, _>(3).map(crate::reason::Reason::parse),
                    r.get::<i64, _>(4) as u64,
                ))
            })
            .collect()
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

    async fn messages(&self, query: &MessageQuery) -> Result<Vec<MessageView>, StoreError> {
        let rows = sqlx::query(&sql("SELECT m.id, b.external_id, m.channel, m.step, m.template, m.template_version, m.state, m.reason, m.not_before,
                    m.provider, cp.address, m.subject, m.body, m.updated_at,
                    (SELECT group_concat(l.external_id, ',') FROM message_loans ml CROSS JOIN loans l ON l.id = ml.loan_id WHERE ml.message_id = m.id)
               FROM messages m JOIN borrowers b ON b.id = m.borrower_id
               LEFT JOIN contact_points cp ON cp.id = m.contact_point_id
              WHERE (? IS NULL OR m.state = ?) AND (? IS NULL OR b.external_id = ?)
              ORDER BY m.id LIMIT ?"),
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
                    state: super::codec::state(&r.get::<String, _>(6))?,
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
        let rows = sqlx::query(&sql("SELECT state, COUNT(*) FROM messages GROUP BY state"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    super::codec::state(&r.get::<String, _>(0))?,
                    r.get::<i64, _>(1) as u64,
                ))
            })
            .collect()
    }

    async fn due_handoffs(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(i64, String, String, NaiveDate, String, i64)>, StoreError> {
        let rows = sqlx::query(&sql("SELECT h.id, l.external_id, b.external_id, h.due_date, h.step, h.attempts FROM handoffs h
               JOIN loans l ON l.id = h.loan_id JOIN borrowers b ON b.id = l.borrower_id
              WHERE h.state = 'pending' AND h.next_attempt_at <= ? ORDER BY h.next_attempt_at, h.id LIMIT 100"),
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
                    super::codec::date(&r.get::<String, _>(3))?,
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
        let (text, error, retry_at) = match result {
            Ok(()) => ("UPDATE handoffs SET state = 'delivered', attempts = attempts + 1, last_error = ?, next_attempt_at = COALESCE(?, next_attempt_at), updated_at = ? WHERE id = ?", None, None),
            Err((error, Some(retry_at))) => ("UPDATE handoffs SET attempts = attempts + 1, last_error = ?, next_attempt_at = COALESCE(?, next_attempt_at), updated_at = ? WHERE id = ?", Some(error), Some(to_millis(retry_at))),
            Err((error, None)) => ("UPDATE handoffs SET state = 'failed', attempts = attempts + 1, last_error = ?, next_attempt_at = COALESCE(?, next_attempt_at), updated_at = ? WHERE id = ?", Some(error), None),
        };
        let text = sql(text);
        let q = sqlx::query(&text)
            .bind(error)
            .bind(retry_at)
            .bind(now_ms)
            .bind(id);
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
        let rows = sqlx::query(&sql("SELECT e.message_id, e.at, e.reason, m.channel, m.step, m.template, m.template_version, m.provider,
                    b.external_id, b.timezone, cp.address,
                    (SELECT COUNT(*) FROM message_events p WHERE p.message_id = e.message_id AND p.to_state = 'sending' AND p.id <= e.id),
                    (SELECT n.to_state FROM message_events n WHERE n.message_id = e.message_id AND n.id > e.id ORDER BY n.id LIMIT 1),
                    (SELECT n.reason FROM message_events n WHERE n.message_id = e.message_id AND n.id > e.id ORDER BY n.id LIMIT 1),
                    (SELECT group_concat(l.external_id, ',') FROM message_loans ml CROSS JOIN loans l ON l.id = ml.loan_id WHERE ml.message_id = m.id)
               FROM message_events e JOIN messages m ON m.id = e.message_id
               JOIN borrowers b ON b.id = m.borrower_id
               LEFT JOIN contact_points cp ON cp.id = m.contact_point_id
              WHERE e.to_state = 'sending' AND e.at >= ? AND e.at < ?
              ORDER BY e.at, e.id"),
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
                        .map(super::codec::state)
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

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query(&sql("SELECT 1")).execute(&self.pool).await?;
        Ok(())
    }

    async fn finish(
        &self,
        now: DateTime<Utc>,
        message_id: i64,
        attempt_id: &str,
        finish: &Finish,
    ) -> Result<bool, StoreError> {
        let now_ms = to_millis(now);
        let mut tx = begin_write(&self.pool).await?;
        let current: Option<(String, Option<String>, Option<i64>)> =
            sqlx::query_as(&sql("SELECT state, attempt_id, contact_point_id FROM messages WHERE id = ? /*FOR UPDATE*/"))
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
        sqlx::query(&sql("UPDATE messages SET lease_until = NULL WHERE id = ?"))
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
                sqlx::query(&sql("UPDATE messages SET provider = ?, provider_ref = ?, template_version = ?, subject = ?, body = ? WHERE id = ?"))
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
                sqlx::query(&sql("UPDATE messages SET not_before = ?, provider = ? WHERE id = ?"))
                    .bind(to_millis(*at))
                    .bind(provider)
                    .bind(message_id)
                    .execute(&mut *tx)
                    .await?;
                transition(
                    &mut tx,
                    now_ms,
                    message_id,
                    from,
                    MessageState::Deferred,
                    &format!("{provider}: {reason}; retry"),
                )
                .await?;
                work_committed(&mut tx).await?;
            }
            Finish::Failed { provider, reason } => {
                unlog(&mut tx, message_id).await?;
                sqlx::query(&sql("UPDATE messages SET provider = ? WHERE id = ?"))
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
                    sqlx::query(&sql("UPDATE contact_points SET opted_out_at = COALESCE(opted_out_at, ?), opt_out_source = COALESCE(opt_out_source, ?), updated_at = ? WHERE id = ?"))
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
                    reason.as_str(),
                )
                .await?;
            }
            Finish::Replay { reason } => {
                unlog(&mut tx, message_id).await?;
                sqlx::query(&sql("UPDATE messages SET not_before = ? WHERE id = ?"))
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
                    reason.as_str(),
                )
                .await?;
                work_committed(&mut tx).await?;
            }
        }
        tx.commit().await?;
        Ok(true)
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
        let mut tx = begin_write(&self.pool).await?;
        // Our own message id (`m:<id>`, echoed by providers that carry it)
        // also matches a message whose send was interrupted before the
        // provider's id was recorded: the receipt reconciles it.
        let row: Option<(i64, String)> = match provider_ref
            .strip_prefix("m:")
            .and_then(|id| id.parse::<i64>().ok())
        {
            Some(id) => {
                sqlx::query_as(&sql("SELECT id, state FROM messages WHERE id = ? /*FOR UPDATE*/"))
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
            }
            None => {
                sqlx::query_as(&sql("SELECT id, state FROM messages WHERE provider = ? AND provider_ref = ? /*FOR UPDATE*/"),
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
        let from = super::codec::state(&st)?;
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

    async fn operator_decide(
        &self,
        now: DateTime<Utc>,
        message_id: i64,
        release: bool,
    ) -> Result<Option<MessageState>, StoreError> {
        let now_ms = to_millis(now);
        let mut tx = begin_write(&self.pool).await?;
        let st: Option<String> = sqlx::query_scalar(&sql("SELECT state FROM messages WHERE id = ? /*FOR UPDATE*/"))
            .bind(message_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(st) = st else {
            tx.rollback().await?;
            return Ok(None);
        };
        let from = super::codec::state(&st)?;
        if !matches!(from, MessageState::Unknown | MessageState::Failed) {
            tx.rollback().await?;
            return Ok(Some(from));
        }
        let to = if release {
            sqlx::query(&sql("UPDATE messages SET not_before = ?, expires_at = NULL WHERE id = ?"))
                .bind(now_ms)
                .bind(message_id)
                .execute(&mut *tx)
                .await?;
            // The earlier attempt's contact no longer counts: it is resent.
            unlog(&mut tx, message_id).await?;
            work_committed(&mut tx).await?;
            MessageState::Planned
        } else {
            MessageState::Cancelled
        };
        let reason = crate::reason::Reason::operator(release);
        transition(&mut tx, now_ms, message_id, Some(from), to, reason.as_str()).await?;
        tx.commit().await?;
        Ok(Some(to))
    }

    async fn cancel_ineligible(
        &self,
        now: DateTime<Utc>,
        fence: Option<&Fence>,
    ) -> Result<u64, StoreError> {
        let now_ms = to_millis(now);
        let mut tx = begin_write(&self.pool).await?;
        check_fence(&mut tx, fence).await?;
        let mut doomed: Vec<(i64, String, crate::reason::Reason)> = Vec::new();
        for row in sqlx::query(
            // CROSS JOIN fixes SQLite's join order: from the message's few
            // loans, never from all active loans.
            &sql("SELECT m.id, m.state,
                    (SELECT group_concat(d.status, ',') FROM (SELECT DISTINCT l.status AS status
                       FROM message_loans ml CROSS JOIN loans l ON l.id = ml.loan_id WHERE ml.message_id = m.id) d)
               FROM messages m
              WHERE m.state IN ('planned', 'deferred')
                AND NOT EXISTS (SELECT 1 FROM message_loans ml CROSS JOIN loans l ON l.id = ml.loan_id
                                 WHERE ml.message_id = m.id AND l.status = 'active')"),
        )
        .fetch_all(&mut *tx)
        .await?
        {
            let statuses: Option<String> = row.get(2);
            doomed.push((row.get(0), row.get(1), crate::reason::Reason::loans_inactive(&statuses.unwrap_or_default())));
        }
        for row in sqlx::query(
            &sql("SELECT m.id, m.state, cp.opt_out_source, m.channel FROM messages m JOIN contact_points cp ON cp.id = m.contact_point_id
              WHERE m.state IN ('planned', 'deferred') AND cp.opted_out_at IS NOT NULL"),
        )
        .fetch_all(&mut *tx)
        .await?
        {
            let source: Option<String> = row.get(2);
            let channel = parse_channel(&row.get::<String, _>(3))?;
            doomed.push((row.get(0), row.get(1), crate::reason::Reason::opted_out(channel, Some(source.as_deref().unwrap_or_default()))));
        }
        for row in sqlx::query(
            &sql("SELECT m.id, m.state, h.kind FROM messages m JOIN holds h ON h.borrower_id = m.borrower_id
              WHERE m.state IN ('planned', 'deferred') AND h.cleared_at IS NULL AND h.until_date IS NULL"),
        )
        .fetch_all(&mut *tx)
        .await?
        {
            doomed.push((row.get(0), row.get(1), crate::reason::Reason::borrower_on_hold(&row.get::<String, _>(2))));
        }
        if doomed.is_empty() {
            tx.rollback().await?;
            return Ok(0);
        }
        // On PostgreSQL the rows were read unlocked: each change applies only
        // if the message is still in the state read (a dispatcher may have
        // claimed it since; the claim re-checks eligibility itself).
        let mut seen = std::collections::HashSet::new();
        let mut done = 0;
        for (id, from, reason) in doomed {
            if seen.insert(id) {
                let from = super::codec::state(&from)?;
                if transition(
                    &mut tx,
                    now_ms,
                    id,
                    Some(from),
                    MessageState::Cancelled,
                    reason.as_str(),
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

            $($own)*
        }
    };
}

pub(super) use impl_store;
