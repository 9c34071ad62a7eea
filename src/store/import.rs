//! One import transaction, written once for both backends. Each backend
//! invokes `import_tx!` with its database type, its connection type, how it
//! writes placeholders (`sql`: SQLite keeps `?`, PostgreSQL numbers them) and
//! how it reads rows by a list of keys (`select_in_*`: `IN (…)` chunks, or
//! one array). The SQL is SQLite's text; `sql` adapts it.

use rust_decimal::Decimal;

use crate::domain::LoanStatus;

pub(super) struct BorrowerRec {
    pub(super) id: i64,
    pub(super) name: String,
    pub(super) locale: Option<String>,
    pub(super) timezone: Option<String>,
}

pub(super) struct LoanRec {
    pub(super) id: i64,
    pub(super) borrower_id: i64,
    pub(super) due_date: String,
    pub(super) amount_due: Decimal,
    pub(super) currency: String,
    pub(super) status: LoanStatus,
}

/// The `ImportTx` implementation for one backend.
macro_rules! import_tx {
    ($import:ident, $db:ty, $conn:ty, $sql:path, $select_in_str:path, $select_in_i64:path) => {
struct $import {
    tx: Transaction<'static, $db>,
    now: i64,
    /// First contact points waiting for `flush_contacts`: (borrower,
    /// channel, address, region).
    new_contacts: Vec<(i64, &'static str, String, Option<String>)>,
    /// Whether `import_seen` is ready (made and emptied) for this import.
    seen_ready: bool,
}



/// Sums recorded payments per loan primary key.
async fn paid_totals(
    conn: &mut $conn,
    loan_ids: &[i64],
) -> Result<HashMap<i64, Decimal>, StoreError> {
    let mut totals: HashMap<i64, Decimal> = HashMap::new();
    for row in $select_in_i64(
        conn,
        "SELECT loan_id, amount FROM payments WHERE loan_id IN ({})",
        loan_ids,
    )
    .await?
    {
        *totals.entry(row.get(0)).or_default() += decimal(&row.get::<String, _>(1))?;
    }
    Ok(totals)
}

impl $import {
    /// Inserts the queued first contact points, in multi-row statements.
    async fn flush_contacts(&mut self) -> Result<(), StoreError> {
        let queued = std::mem::take(&mut self.new_contacts);
        for chunk in queued.chunks(200) {
            let text = format!(
                "INSERT INTO contact_points (borrower_id, channel, address, active, created_at, updated_at, region) VALUES {}
                 ON CONFLICT (borrower_id, channel, address) DO UPDATE SET active = 1, updated_at = excluded.updated_at, region = excluded.region",
                vec!["(?, ?, ?, 1, ?, ?, ?)"; chunk.len()].join(", ")
            );
            let text = $sql(&text);
            let mut q = sqlx::query(&text);
            for (borrower, channel, address, region) in chunk {
                q = q
                    .bind(*borrower)
                    .bind(*channel)
                    .bind(address.as_str())
                    .bind(self.now)
                    .bind(self.now)
                    .bind(region.as_deref());
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Makes `address` the borrower's one active contact point on `channel`
    /// (or none). Returns whether anything changed. Old addresses are kept,
    /// inactive, with their opt-out state.
    async fn sync_contact(
        &mut self,
        borrower: i64,
        channel: Channel,
        address: Option<(&str, Option<&str>)>,
        active: &mut HashMap<(i64, Channel), Vec<String>>,
    ) -> Result<bool, StoreError> {
        let current = active.entry((borrower, channel)).or_default();
        let (address, region) = match address {
            Some((a, r)) => (Some(a), r),
            None => (None, None),
        };
        match address {
            Some(addr) if current.len() == 1 && current[0] == addr => Ok(false),
            None if current.is_empty() => Ok(false),
            Some(addr) if current.is_empty() => {
                // A first address (a new borrower's): inserted with the
                // others in `flush_contacts`.
                self.new_contacts.push((borrower, channel.as_str(), addr.to_owned(), region.map(str::to_owned)));
                *current = vec![addr.to_owned()];
                Ok(true)
            }
            Some(addr) => {
                // Queued first addresses go in before anything changes.
                self.flush_contacts().await?;
                if !current.is_empty() {
                    sqlx::query(&$sql("UPDATE contact_points SET active = 0, updated_at = ? WHERE borrower_id = ? AND channel = ? AND address <> ? AND active = 1"))
                    .bind(self.now)
                    .bind(borrower)
                    .bind(channel.as_str())
                    .bind(addr)
                    .execute(&mut *self.tx)
                    .await?;
                }
                sqlx::query(&$sql("INSERT INTO contact_points (borrower_id, channel, address, active, created_at, updated_at, region)
                     VALUES (?, ?, ?, 1, ?, ?, ?)
                     ON CONFLICT (borrower_id, channel, address) DO UPDATE SET active = 1, updated_at = excluded.updated_at, region = excluded.region"),
                )
                .bind(borrower)
                .bind(channel.as_str())
                .bind(addr)
                .bind(self.now)
                .bind(self.now)
                .bind(region)
                .execute(&mut *self.tx)
                .await?;
                *current = vec![addr.to_owned()];
                Ok(true)
            }
            None => {
                self.flush_contacts().await?;
                sqlx::query(&$sql("UPDATE contact_points SET active = 0, updated_at = ? WHERE borrower_id = ? AND channel = ? AND active = 1"))
                    .bind(self.now)
                    .bind(borrower)
                    .bind(channel.as_str())
                    .execute(&mut *self.tx)
                    .await?;
                current.clear();
                Ok(true)
            }
        }
    }
}

#[async_trait]
impl ImportTx for $import {
    async fn upsert_loans(&mut self, rows: &[LoanBookRow]) -> Result<Vec<RowOutcome>, StoreError> {
        let now = self.now;
        let borrower_keys: Vec<&str> = {
            let mut seen = HashSet::new();
            rows.iter()
                .map(|r| r.borrower.id.as_str())
                .filter(|k| seen.insert(*k))
                .collect()
        };
        let loan_keys: Vec<&str> = rows.iter().map(|r| r.loan.id.as_str()).collect();

        let mut borrowers: HashMap<String, BorrowerRec> = HashMap::new();
        for row in $select_in_str(
            &mut self.tx,
            "SELECT id, external_id, name, locale, timezone FROM borrowers WHERE external_id IN ({})",
            &borrower_keys,
        )
        .await?
        {
            borrowers.insert(
                row.get(1),
                BorrowerRec {
                    id: row.get(0),
                    name: row.get(2),
                    locale: row.get(3),
                    timezone: row.get(4),
                },
            );
        }
        let borrower_pks: Vec<i64> = borrowers.values().map(|b| b.id).collect();
        let mut contacts: HashMap<(i64, Channel), Vec<String>> = HashMap::new();
        for row in $select_in_i64(
            &mut self.tx,
            "SELECT borrower_id, channel, address FROM contact_points WHERE active = 1 AND borrower_id IN ({})",
            &borrower_pks,
        )
        .await?
        {
            let channel = Channel::parse(&row.get::<String, _>(1)).map_err(|e| StoreError::Corrupt(e.0))?;
            contacts.entry((row.get(0), channel)).or_default().push(row.get(2));
        }
        let mut loans: HashMap<String, LoanRec> = HashMap::new();
        for row in $select_in_str(
            &mut self.tx,
            "SELECT id, external_id, borrower_id, due_date, amount_due, currency, status FROM loans WHERE external_id IN ({})",
            &loan_keys,
        )
        .await?
        {
            loans.insert(
                row.get(1),
                LoanRec {
                    id: row.get(0),
                    borrower_id: row.get(2),
                    due_date: row.get(3),
                    amount_due: decimal(&row.get::<String, _>(4))?,
                    currency: row.get(5),
                    status: status(&row.get::<String, _>(6))?,
                },
            );
        }
        let loan_pks: Vec<i64> = loans.values().map(|l| l.id).collect();
        let totals = paid_totals(&mut self.tx, &loan_pks).await?;

        // A loan never moves between borrowers: that is a data error in the
        // book, and applying it would send one person's debt to another.
        // Decided against the store as it was (a file names each loan once).
        let moved: Vec<bool> = rows
            .iter()
            .map(|row| {
                loans.get(row.loan.id.as_str()).is_some_and(|existing| {
                    borrowers
                        .get(row.borrower.id.as_str())
                        .is_none_or(|owner| owner.id != existing.borrower_id)
                })
            })
            .collect();
        // New borrowers (of rows that are not refused) in multi-row inserts.
        let mut fresh: Vec<&LoanBookRow> = Vec::new();
        {
            let mut seen: HashSet<&str> = HashSet::new();
            for (row, moved) in rows.iter().zip(&moved) {
                let key = row.borrower.id.as_str();
                if !moved && !borrowers.contains_key(key) && seen.insert(key) {
                    fresh.push(row);
                }
            }
        }
        for chunk in fresh.chunks(200) {
            let text = format!(
                "INSERT INTO borrowers (external_id, name, locale, timezone, created_at, updated_at) VALUES {} RETURNING id, external_id",
                vec!["(?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ")
            );
            let text = $sql(&text);
            let mut q = sqlx::query(&text);
            for row in chunk {
                let b = &row.borrower;
                q = q
                    .bind(b.id.as_str())
                    .bind(b.name.as_str())
                    .bind(b.locale.as_ref().map(|x| x.as_str().to_owned()))
                    .bind(b.timezone.map(|z| z.name().to_owned()))
                    .bind(now)
                    .bind(now);
            }
            let ids: HashMap<String, i64> = q
                .fetch_all(&mut *self.tx)
                .await?
                .iter()
                .map(|r| (r.get(1), r.get(0)))
                .collect();
            for row in chunk {
                let b = &row.borrower;
                let id = ids.get(b.id.as_str()).copied().ok_or_else(|| {
                    StoreError::Corrupt(format!("borrower `{}` was not inserted", b.id))
                })?;
                borrowers.insert(
                    b.id.as_str().to_owned(),
                    BorrowerRec {
                        id,
                        name: b.name.as_str().to_owned(),
                        locale: b.locale.as_ref().map(|x| x.as_str().to_owned()),
                        timezone: b.timezone.map(|z| z.name().to_owned()),
                    },
                );
            }
        }

        let mut outcomes = Vec::with_capacity(rows.len());
        let mut new_loans: Vec<(usize, &LoanBookRow, i64, String, LoanStatus)> = Vec::new();
        for (row, moved) in rows.iter().zip(moved) {
            let b = &row.borrower;
            let l = &row.loan;
            let locale = b.locale.as_ref().map(|x| x.as_str().to_owned());
            let timezone = b.timezone.map(|z| z.name().to_owned());
            if moved {
                outcomes.push(RowOutcome::Rejected {
                    field: "borrower_id",
                    reason: format!(
                        "loan `{}` belongs to another borrower in the store; a loan cannot change borrower",
                        l.id
                    ),
                });
                continue;
            }

            let mut borrower_changed = false;
            let Some(rec) = borrowers.get_mut(b.id.as_str()) else {
                return Err(StoreError::Corrupt(format!("borrower `{}` has no row", b.id)));
            };
            if rec.name != b.name.as_str() || rec.locale != locale || rec.timezone != timezone {
                sqlx::query(&$sql("UPDATE borrowers SET name = ?, locale = ?, timezone = ?, updated_at = ? WHERE id = ?"))
                    .bind(b.name.as_str())
                    .bind(&locale)
                    .bind(&timezone)
                    .bind(now)
                    .bind(rec.id)
                    .execute(&mut *self.tx)
                    .await?;
                rec.name = b.name.as_str().to_owned();
                rec.locale = locale.clone();
                rec.timezone = timezone.clone();
                borrower_changed = true;
            }
            let borrower_pk = rec.id;
            let phone = b.phone.as_ref().map(|p| (p.as_str(), p.region()));
            let email = b.email.as_ref().map(|e| (e.as_str(), None));
            borrower_changed |= self
                .sync_contact(borrower_pk, Channel::Sms, phone, &mut contacts)
                .await?;
            borrower_changed |= self
                .sync_contact(borrower_pk, Channel::Email, email, &mut contacts)
                .await?;

            let due = l.due_date.format("%Y-%m-%d").to_string();
            let currency = l.amount_due.currency.code();
            match loans.get_mut(l.id.as_str()) {
                None => {
                    let st = effective_status(
                        l.status.unwrap_or(LoanStatus::Active),
                        l.amount_due.amount,
                        Decimal::ZERO,
                    );
                    // Inserted with the others below.
                    new_loans.push((outcomes.len(), row, borrower_pk, due, st));
                    outcomes.push(RowOutcome::Inserted);
                }
                Some(rec) => {
                    let paid = totals.get(&rec.id).copied().unwrap_or_default();
                    let st =
                        effective_status(l.status.unwrap_or(rec.status), l.amount_due.amount, paid);
                    let loan_changed = rec.due_date != due
                        || rec.amount_due != l.amount_due.amount
                        || rec.currency != currency
                        || rec.status != st;
                    if loan_changed {
                        sqlx::query(&$sql("UPDATE loans SET due_date = ?, amount_due = ?, currency = ?, status = ?, updated_at = ? WHERE id = ?"),
                        )
                        .bind(&due)
                        .bind(l.amount_due.amount.to_string())
                        .bind(currency)
                        .bind(st.as_str())
                        .bind(now)
                        .bind(rec.id)
                        .execute(&mut *self.tx)
                        .await?;
                        rec.due_date = due;
                        rec.amount_due = l.amount_due.amount;
                        rec.currency = currency.to_owned();
                        rec.status = st;
                    }
                    outcomes.push(if loan_changed || borrower_changed {
                        RowOutcome::Updated
                    } else {
                        RowOutcome::Unchanged
                    });
                }
            }
        }
        self.flush_contacts().await?;
        for chunk in new_loans.chunks(200) {
            let text = format!(
                "INSERT INTO loans (external_id, borrower_id, due_date, amount_due, currency, status, created_at, updated_at) VALUES {}",
                vec!["(?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ")
            );
            let text = $sql(&text);
            let mut q = sqlx::query(&text);
            for (_, row, borrower_pk, due, st) in chunk {
                let l = &row.loan;
                q = q
                    .bind(l.id.as_str())
                    .bind(*borrower_pk)
                    .bind(due.as_str())
                    .bind(l.amount_due.amount.to_string())
                    .bind(l.amount_due.currency.code())
                    .bind(st.as_str())
                    .bind(now)
                    .bind(now);
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(outcomes)
    }

    async fn upsert_payments(
        &mut self,
        rows: &[PaymentRow],
    ) -> Result<Vec<RowOutcome>, StoreError> {
        let now = self.now;
        let loan_keys: Vec<&str> = rows.iter().map(|r| r.payment.loan.as_str()).collect();
        let payment_keys: Vec<&str> = rows.iter().map(|r| r.payment.id.as_str()).collect();
        let mut loans: HashMap<String, (i64, Decimal, LoanStatus)> = HashMap::new();
        for row in $select_in_str(
            &mut self.tx,
            "SELECT id, external_id, amount_due, status FROM loans WHERE external_id IN ({})",
            &loan_keys,
        )
        .await?
        {
            loans.insert(
                row.get(1),
                (
                    row.get(0),
                    decimal(&row.get::<String, _>(2))?,
                    status(&row.get::<String, _>(3))?,
                ),
            );
        }
        let mut payments: HashMap<String, (i64, i64, Decimal, i64)> = HashMap::new();
        for row in $select_in_str(
            &mut self.tx,
            "SELECT id, external_id, loan_id, amount, paid_at FROM payments WHERE external_id IN ({})",
            &payment_keys,
        )
        .await?
        {
            payments.insert(row.get(1), (row.get(0), row.get(2), decimal(&row.get::<String, _>(3))?, row.get(4)));
        }

        let mut touched: HashSet<i64> = HashSet::new();
        let mut outcomes = Vec::with_capacity(rows.len());
        for row in rows {
            let p = &row.payment;
            let Some(&(loan_pk, _, _)) = loans.get(p.loan.as_str()) else {
                outcomes.push(RowOutcome::Rejected {
                    field: "loan_id",
                    reason: format!(
                        "no loan `{}` in the store; import the loan book first",
                        p.loan
                    ),
                });
                continue;
            };
            let paid_at = to_millis(p.paid_at);
            match payments.get_mut(p.id.as_str()) {
                Some(existing) if existing.1 != loan_pk => outcomes.push(RowOutcome::Rejected {
                    field: "payment_id",
                    reason: format!("payment `{}` is already recorded against another loan; payment ids must be unique", p.id),
                }),
                Some(existing) if existing.2 == p.amount && existing.3 == paid_at => {
                    outcomes.push(RowOutcome::Unchanged)
                }
                // Money already applied to the loan never changes silently:
                // a different amount under the same id is a different
                // payment, or a mistake.
                Some(existing) if existing.2 != p.amount => outcomes.push(RowOutcome::Rejected {
                    field: "amount",
                    reason: format!(
                        "payment `{}` is already recorded as {}; a payment id names one payment and its amount cannot change: record a correction under a new payment id",
                        p.id, existing.2
                    ),
                }),
                Some(existing) => {
                    sqlx::query(&$sql("UPDATE payments SET amount = ?, paid_at = ?, updated_at = ? WHERE id = ?"))
                        .bind(p.amount.to_string())
                        .bind(paid_at)
                        .bind(now)
                        .bind(existing.0)
                        .execute(&mut *self.tx)
                        .await?;
                    existing.2 = p.amount;
                    existing.3 = paid_at;
                    touched.insert(loan_pk);
                    outcomes.push(RowOutcome::Updated);
                }
                None => {
                    let id: i64 = sqlx::query_scalar(&$sql("INSERT INTO payments (external_id, loan_id, amount, paid_at, created_at, updated_at)
                         VALUES (?, ?, ?, ?, ?, ?) RETURNING id"),
                    )
                    .bind(p.id.as_str())
                    .bind(loan_pk)
                    .bind(p.amount.to_string())
                    .bind(paid_at)
                    .bind(now)
                    .bind(now)
                    .fetch_one(&mut *self.tx)
                    .await?;
                    payments.insert(p.id.as_str().to_owned(), (id, loan_pk, p.amount, paid_at));
                    touched.insert(loan_pk);
                    outcomes.push(RowOutcome::Inserted);
                }
            }
        }

        let touched: Vec<i64> = touched.into_iter().collect();
        let totals = paid_totals(&mut self.tx, &touched).await?;
        for (loan_pk, amount_due, st) in loans.values() {
            let Some(paid) = totals.get(loan_pk) else {
                continue;
            };
            let new = effective_status(*st, *amount_due, *paid);
            if new != *st {
                sqlx::query(&$sql("UPDATE loans SET status = ?, updated_at = ? WHERE id = ?"))
                    .bind(new.as_str())
                    .bind(now)
                    .bind(loan_pk)
                    .execute(&mut *self.tx)
                    .await?;
            }
        }
        Ok(outcomes)
    }

    async fn seen_before(
        &mut self,
        keys: &[String],
    ) -> Result<HashMap<String, (u64, Option<String>)>, StoreError> {
        if !self.seen_ready {
            // A temporary table lives with the connection: made once, and
            // emptied at the start of each import that uses it.
            sqlx::query("CREATE TEMP TABLE IF NOT EXISTS import_seen (k TEXT PRIMARY KEY, line BIGINT NOT NULL, fields TEXT)")
                .execute(&mut *self.tx)
                .await?;
            sqlx::query("DELETE FROM import_seen").execute(&mut *self.tx).await?;
            self.seen_ready = true;
        }
        let mut out = HashMap::new();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        for row in $select_in_str(&mut *self.tx, "SELECT k, line, fields FROM import_seen WHERE k IN ({})", &keys).await? {
            out.insert(row.get::<String, _>(0), (row.get::<i64, _>(1) as u64, row.get::<Option<String>, _>(2)));
        }
        Ok(out)
    }

    async fn mark_seen(&mut self, marks: &[(String, u64, Option<String>)]) -> Result<(), StoreError> {
        for chunk in marks.chunks(300) {
            let text = format!(
                "INSERT INTO import_seen (k, line, fields) VALUES {} ON CONFLICT (k) DO NOTHING",
                vec!["(?, ?, ?)"; chunk.len()].join(", ")
            );
            let text = $sql(&text);
            let mut q = sqlx::query(&text);
            for (k, line, fields) in chunk {
                q = q.bind(k.as_str()).bind(*line as i64).bind(fields.as_deref());
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    async fn record(&mut self, record: &ImportRecord) -> Result<(), StoreError> {
        let c = record.counts;
        sqlx::query(&$sql("INSERT INTO imports (path, kind, content_hash, imported, updated, unchanged, rejected, at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
        )
        .bind(&record.path)
        .bind(record.kind.as_str())
        .bind(&record.content_hash)
        .bind(c.imported as i64)
        .bind(c.updated as i64)
        .bind(c.unchanged as i64)
        .bind(c.rejected as i64)
        .bind(self.now)
        .execute(&mut *self.tx)
        .await?;
        // What this file changed is looked at by the next tick, even a
        // steady one (new borrowers start at 0 by default).
        if c.imported + c.updated > 0 {
            sqlx::query(&$sql("UPDATE borrowers SET next_look = 0
                  WHERE updated_at = ? OR id IN (SELECT borrower_id FROM loans WHERE updated_at = ?)
                     OR id IN (SELECT borrower_id FROM contact_points WHERE updated_at = ?)"))
            .bind(self.now)
            .bind(self.now)
            .bind(self.now)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }
}


    };
}

pub(super) use import_tx;
