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
/// The shared methods come from three files (`common.rs`: reads, listings
/// and the audit; `common_book.rs`: opt-outs, holds, secrets;
/// `common_outcomes.rs`: finish, receipts, operator decisions, sweeps),
/// gathered into one token list before the impl is emitted, so
/// `#[async_trait]` sees every method.
macro_rules! impl_store {
    ($store:ty { $($own:tt)* }) => {
        super::common_book::with_book_methods!(
            [super::common_outcomes::with_outcome_methods]
            [super::common::impl_store_all]
            $store { $($own)* }
        );
    };
}

/// The last step of `impl_store!`: the impl itself.
macro_rules! impl_store_all {
    ($store:ty { $($own:tt)* } $($shared:tt)*) => {
        #[async_trait::async_trait]
        impl Store for $store {
    async fn last_import_hash(&self, path: &str) -> Result<Option<String>, StoreError> {
        let row =
            self.reader().await?.fetch_optional("SELECT content_hash FROM imports WHERE path = ? ORDER BY id DESC LIMIT 1", &[Arg::from(path)]).await?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    async fn counts(&self) -> Result<StoreCounts, StoreError> {
        let row = self.reader().await?.fetch_one("SELECT (SELECT COUNT(*) FROM borrowers),
                    (SELECT COUNT(*) FROM loans),
                    (SELECT COUNT(*) FROM loans WHERE status = 'active'),
                    (SELECT COUNT(*) FROM loans WHERE status = 'paid'),
                    (SELECT COUNT(*) FROM payments),
                    (SELECT COUNT(*) FROM contact_points WHERE active = 1),
                    (SELECT COUNT(*) FROM messages),
                    (SELECT COUNT(*) FROM imports)", &[]).await?;
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
        let Some(row) = self.reader().await?.fetch_optional("SELECT l.id, l.external_id, b.external_id, l.due_date, l.amount_due, l.currency, l.status
               FROM loans l JOIN borrowers b ON b.id = l.borrower_id
              WHERE l.external_id = ?", &[Arg::from(id.as_str())]).await?
        else {
            return Ok(None);
        };
        let loan_pk: i64 = row.get(0);
        let amounts: Vec<String> =
            self.reader().await?.fetch("SELECT amount FROM payments WHERE loan_id = ?", &[Arg::from(loan_pk)]).await?.iter().map(|r| r.get(0)).collect();
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
        let pks: Vec<i64> = (&mut *conn).fetch("SELECT DISTINCT borrower_id FROM loans WHERE status = 'active' AND borrower_id > ? ORDER BY borrower_id LIMIT ?", &[Arg::from(after), Arg::from(i64::from(limit))]).await?.iter().map(|r| r.get(0)).collect();
        load_borrowers(&mut *conn, &pks, since, true).await
    }

    async fn planning_due(
        &self,
        now: DateTime<Utc>,
        after: (i64, i64),
        limit: u32,
        since: DateTime<Utc>,
    ) -> Result<(Vec<PlanBorrower>, Option<(i64, i64)>), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let keys: Vec<(i64, i64)> = (&mut *conn).fetch("SELECT next_look, id FROM borrowers
              WHERE next_look <= ? AND (next_look, id) > (?, ?) ORDER BY next_look, id LIMIT ?", &[Arg::from(to_millis(now)), Arg::from(after.0), Arg::from(after.1), Arg::from(i64::from(limit))]).await?.iter().map(|r| (r.get(0), r.get(1))).collect();
        let mut pks: Vec<i64> = keys.iter().map(|k| k.1).collect();
        pks.sort_unstable();
        Ok((load_borrowers(&mut *conn, &pks, since, true).await?, keys.last().copied()))
    }

    async fn next_look_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let at: Option<i64> = self.reader().await?.fetch_one("SELECT MIN(next_look) FROM borrowers", &[]).await?.get(0);
        at.map(from_millis).transpose()
    }

    async fn plan_borrower(
        &self,
        external_id: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<PlanBorrower>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let pk: Option<i64> = (&mut *conn).fetch_optional("SELECT id FROM borrowers WHERE external_id = ?", &[Arg::from(external_id)]).await?.map(|r| r.get(0));
        match pk {
            Some(pk) => Ok(load_borrowers(&mut *conn, &[pk], since, true).await?.pop()),
            None => Ok(None),
        }
    }

    async fn next_pending_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let at: Option<i64> = self.reader().await?.fetch_one("SELECT MIN(not_before) FROM messages WHERE state IN ('planned', 'deferred')", &[]).await?.get(0);
        at.map(from_millis).transpose()
    }

    async fn in_flight(&self, now: DateTime<Utc>) -> Result<Vec<super::InFlight>, StoreError> {
        let rows = self.reader().await?.fetch("SELECT m.id, COALESCE(m.attempt_id, ''), m.channel, m.provider, cp.address, m.updated_at
               FROM messages m LEFT JOIN contact_points cp ON cp.id = m.contact_point_id
              WHERE m.state = 'sending' AND (m.lease_until IS NULL OR m.lease_until < ?) ORDER BY m.id", &[Arg::from(to_millis(now))]).await?;
        rows.iter()
            .map(|r| {
                Ok(super::InFlight {
                    id: r.get(0),
                    attempt: r.get(1),
                    channel: parse_channel(&r.get::<String, _>(2))?,
                    provider: r.get(3),
                    address: r.get(4),
                    since: from_millis(r.get(5))?,
                })
            })
            .collect()
    }

    async fn postpone_reconcile(
        &self,
        id: i64,
        attempt: &str,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.reader().await?.execute("UPDATE messages SET lease_until = ?, claimed_by = NULL WHERE id = ? AND state = 'sending' AND attempt_id = ?", &[Arg::from(to_millis(until)), Arg::from(id), Arg::from(attempt)]).await?;
        Ok(())
    }

    async fn renew_claims(&self, holder: &str, until: DateTime<Utc>) -> Result<u64, StoreError> {
        let r = self.reader().await?.execute("UPDATE messages SET lease_until = ? WHERE state = 'sending' AND claimed_by = ? AND lease_until IS NOT NULL", &[Arg::from(to_millis(until)), Arg::from(holder)]).await?;
        Ok(r)
    }

    async fn release_claims(&self, holder: &str) -> Result<u64, StoreError> {
        let r = self.reader().await?.execute("UPDATE messages SET lease_until = NULL WHERE state = 'sending' AND claimed_by = ?", &[Arg::from(holder)]).await?;
        Ok(r)
    }

    async fn release_lease(&self, fence: &Fence) -> Result<(), StoreError> {
        self.reader().await?.execute("UPDATE leases SET expires_at = 0 WHERE name = ? AND holder = ? AND token = ?", &[Arg::from(&fence.role), Arg::from(&fence.holder), Arg::from(fence.token)]).await?;
        Ok(())
    }

    async fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self.reader().await?.fetch_one("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success", &[]).await?.get(0))
    }

    async fn message_events(
        &self,
        message_id: i64,
    ) -> Result<Vec<super::MessageEvent>, StoreError> {
        let rows = self.reader().await?.fetch("SELECT at, from_state, to_state, reason FROM message_events WHERE message_id = ? ORDER BY id", &[Arg::from(message_id)]).await?;
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
        let n: i64 = self.reader().await?.fetch_one("SELECT COUNT(*) FROM contact_log WHERE at >= ?", &[Arg::from(to_millis(since))]).await?.get(0);
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
        let rows = self.reader().await?.fetch("SELECT state, channel, provider, reason, COUNT(*) FROM messages GROUP BY state, channel, provider, reason", &[]).await?;
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

    async fn messages(&self, query: &MessageQuery) -> Result<Vec<MessageView>, StoreError> {
        let rows = self.reader().await?.fetch("SELECT m.id, b.external_id, m.channel, m.step, m.template, m.template_version, m.state, m.reason, m.not_before,
                    m.provider, cp.address, m.subject, m.body, m.updated_at,
                    (SELECT group_concat(l.external_id, ',') FROM message_loans ml CROSS JOIN loans l ON l.id = ml.loan_id WHERE ml.message_id = m.id)
               FROM messages m JOIN borrowers b ON b.id = m.borrower_id
               LEFT JOIN contact_points cp ON cp.id = m.contact_point_id
              WHERE (? IS NULL OR m.state = ?) AND (? IS NULL OR b.external_id = ?)
              ORDER BY m.id LIMIT ?", &[Arg::from(query.state.map(MessageState::as_str)), Arg::from(query.state.map(MessageState::as_str)), Arg::from(&query.borrower), Arg::from(&query.borrower), Arg::from(i64::from(query.limit.unwrap_or(u32::MAX >> 1)))]).await?;
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
        let rows = self.reader().await?.fetch("SELECT state, COUNT(*) FROM messages GROUP BY state", &[]).await?;
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
        let rows = self.reader().await?.fetch("SELECT h.id, l.external_id, b.external_id, h.due_date, h.step, h.attempts FROM handoffs h
               JOIN loans l ON l.id = h.loan_id JOIN borrowers b ON b.id = l.borrower_id
              WHERE h.state = 'pending' AND h.next_attempt_at <= ? ORDER BY h.next_attempt_at, h.id LIMIT 100", &[Arg::from(to_millis(now))]).await?;
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
        let args = [Arg::from(error), Arg::from(retry_at), Arg::from(now_ms), Arg::from(id)];
        self.reader().await?.execute(text, &args).await?;
        Ok(())
    }

    async fn audit(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<AuditRow>, StoreError> {
        // Each `sending` event is one attempt; its outcome is the next event
        // of the same message.
        let rows = self.reader().await?.fetch("SELECT e.message_id, e.at, e.reason, m.channel, m.step, m.template, m.template_version, m.provider,
                    b.external_id, b.timezone, cp.address,
                    (SELECT COUNT(*) FROM message_events p WHERE p.message_id = e.message_id AND p.to_state = 'sending' AND p.id <= e.id),
                    (SELECT n.to_state FROM message_events n WHERE n.message_id = e.message_id AND n.id > e.id ORDER BY n.id LIMIT 1),
                    (SELECT n.reason FROM message_events n WHERE n.message_id = e.message_id AND n.id > e.id ORDER BY n.id LIMIT 1),
                    (SELECT group_concat(l.external_id, ',') FROM message_loans ml CROSS JOIN loans l ON l.id = ml.loan_id WHERE ml.message_id = m.id),
                    (SELECT c.address FROM contact_points c WHERE c.borrower_id = b.id AND c.channel = 'sms' AND c.active = 1 LIMIT 1)
               FROM message_events e JOIN messages m ON m.id = e.message_id
               JOIN borrowers b ON b.id = m.borrower_id
               LEFT JOIN contact_points cp ON cp.id = m.contact_point_id
              WHERE e.to_state = 'sending' AND e.at >= ? AND e.at < ?
              ORDER BY e.at, e.id", &[Arg::from(to_millis(from)), Arg::from(to_millis(to))]).await?;
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
                    borrower_phone: r.get(15),
                })
            })
            .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.reader().await?.execute("SELECT 1", &[]).await?;
        Ok(())
    }


            $($shared)*
            $($own)*
        }
    };
}

pub(super) use impl_store;
pub(super) use impl_store_all;
