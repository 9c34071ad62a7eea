//! One import transaction, written once for both backends as a generic
//! `SqlImport` over the backend's `Conn` (`backend.rs`): SQLite's text,
//! adapted by each backend, and rows read by key lists (`IN (…)` chunks on
//! SQLite, one array on PostgreSQL).

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use rust_decimal::Decimal;
use sqlx::{Database, Transaction};

use super::backend::{insert_rows, Arg, Conn, DbRow};
use super::codec::{decimal, status};
use super::{
    effective_status, ImportRecord, ImportTx, LoanBookRow, PaymentRow, RowOutcome, StoreError,
};
use crate::domain::{Channel, LoanStatus};

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

/// One import's transaction on either backend.
pub(super) struct SqlImport<DB: Database> {
    tx: Transaction<'static, DB>,
    pub(super) now: i64,
    /// First contact points waiting for `flush_contacts`: (borrower,
    /// channel, address, region).
    new_contacts: Vec<(i64, &'static str, String, Option<String>)>,
    /// Whether `import_seen` is ready (made and emptied) for this import.
    seen_ready: bool,
}

impl<DB: Database> SqlImport<DB> {
    /// An import in `tx` (the backend has taken its import lock), stamping
    /// what it writes with `now` (UTC milliseconds).
    pub(super) fn new(tx: Transaction<'static, DB>, now: i64) -> Self {
        SqlImport {
            tx,
            now,
            new_contacts: Vec::new(),
            seen_ready: false,
        }
    }
}

/// Sums recorded payments per loan primary key.
pub(super) async fn paid_totals<C: Conn>(
    conn: &mut C,
    loan_ids: &[i64],
) -> Result<HashMap<i64, Decimal>, StoreError> {
    let mut totals: HashMap<i64, Decimal> = HashMap::new();
    for row in conn
        .select_in_i64(
            "SELECT loan_id, amount FROM payments WHERE loan_id IN ({})",
            loan_ids,
        )
        .await?
    {
        *totals.entry(row.get(0)).or_default() += decimal(&row.get::<String>(1))?;
    }
    Ok(totals)
}

impl<DB: Database> SqlImport<DB>
where
    DB::Connection: Conn,
{
    /// The transaction's connection.
    pub(super) fn conn(&mut self) -> &mut DB::Connection {
        &mut self.tx
    }

    /// Inserts the queued first contact points, in multi-row statements.
    async fn flush_contacts(&mut self) -> Result<(), StoreError> {
        let queued = std::mem::take(&mut self.new_contacts);
        let now = self.now;
        let args: Vec<Arg> = queued
            .iter()
            .flat_map(|(borrower, channel, address, region)| {
                [
                    (*borrower).into(),
                    (*channel).into(),
                    address.into(),
                    now.into(),
                    now.into(),
                    region.as_deref().into(),
                ]
            })
            .collect();
        insert_rows(
            self.conn(),
            "INSERT INTO contact_points (borrower_id, channel, address, active, created_at, updated_at, region)",
            "(?, ?, ?, 1, ?, ?, ?)",
            "ON CONFLICT (borrower_id, channel, address) DO UPDATE SET active = 1, updated_at = excluded.updated_at, region = excluded.region",
            &args,
        )
        .await?;
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
                self.new_contacts.push((
                    borrower,
                    channel.as_str(),
                    addr.to_owned(),
                    region.map(str::to_owned),
                ));
                *current = vec![addr.to_owned()];
                Ok(true)
            }
            Some(addr) => {
                // Queued first addresses go in before anything changes.
                self.flush_contacts().await?;
                if !current.is_empty() {
                    let now = self.now;
                    self.conn()
                        .execute(
                            "UPDATE contact_points SET active = 0, updated_at = ? WHERE borrower_id = ? AND channel = ? AND address <> ? AND active = 1",
                            &[now.into(), borrower.into(), channel.as_str().into(), addr.into()],
                        )
                        .await?;
                }
                let now = self.now;
                self.conn()
                    .execute(
                        "INSERT INTO contact_points (borrower_id, channel, address, active, created_at, updated_at, region)
                         VALUES (?, ?, ?, 1, ?, ?, ?)
                         ON CONFLICT (borrower_id, channel, address) DO UPDATE SET active = 1, updated_at = excluded.updated_at, region = excluded.region",
                        &[borrower.into(), channel.as_str().into(), addr.into(), now.into(), now.into(), region.into()],
                    )
                    .await?;
                *current = vec![addr.to_owned()];
                Ok(true)
            }
            None => {
                self.flush_contacts().await?;
                let now = self.now;
                self.conn()
                    .execute(
                        "UPDATE contact_points SET active = 0, updated_at = ? WHERE borrower_id = ? AND channel = ? AND active = 1",
                        &[now.into(), borrower.into(), channel.as_str().into()],
                    )
                    .await?;
                current.clear();
                Ok(true)
            }
        }
    }
}

#[async_trait]
impl<DB: Database> ImportTx for SqlImport<DB>
where
    DB::Connection: Conn,
{
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
        for row in self.conn().select_in_str(
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
        for row in self.conn().select_in_i64(
            "SELECT borrower_id, channel, address FROM contact_points WHERE active = 1 AND borrower_id IN ({})",
            &borrower_pks,
        )
        .await?
        {
            let channel = Channel::parse(&row.get::<String>(1)).map_err(|e| StoreError::Corrupt(e.0))?;
            contacts.entry((row.get(0), channel)).or_default().push(row.get(2));
        }
        let mut loans: HashMap<String, LoanRec> = HashMap::new();
        for row in self.conn().select_in_str(
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
                    amount_due: decimal(&row.get::<String>(4))?,
                    currency: row.get(5),
                    status: status(&row.get::<String>(6))?,
                },
            );
        }
        let loan_pks: Vec<i64> = loans.values().map(|l| l.id).collect();
        let totals = paid_totals(self.conn(), &loan_pks).await?;

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
        let args: Vec<Arg> = fresh
            .iter()
            .flat_map(|row| {
                let b = &row.borrower;
                [
                    b.id.as_str().into(),
                    b.name.as_str().into(),
                    b.locale.as_ref().map(|x| x.as_str()).into(),
                    b.timezone.map(|z| z.name()).into(),
                    now.into(),
                    now.into(),
                ]
            })
            .collect();
        let head =
            "INSERT INTO borrowers (external_id, name, locale, timezone, created_at, updated_at)";
        let ids: HashMap<String, i64> = insert_rows(
            self.conn(),
            head,
            "(?, ?, ?, ?, ?, ?)",
            "RETURNING id, external_id",
            &args,
        )
        .await?
        .iter()
        .map(|r| (r.get(1), r.get(0)))
        .collect();
        for row in &fresh {
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
                return Err(StoreError::Corrupt(format!(
                    "borrower `{}` has no row",
                    b.id
                )));
            };
            if rec.name != b.name.as_str() || rec.locale != locale || rec.timezone != timezone {
                let args = [
                    b.name.as_str().into(),
                    locale.as_deref().into(),
                    timezone.as_deref().into(),
                    now.into(),
                    rec.id.into(),
                ];
                self.conn()
                    .execute("UPDATE borrowers SET name = ?, locale = ?, timezone = ?, updated_at = ? WHERE id = ?", &args)
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

            let due = super::codec::day(&l.due_date);
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
                        let amount = l.amount_due.amount.to_string();
                        let args = [
                            due.as_str().into(),
                            amount.as_str().into(),
                            currency.into(),
                            st.as_str().into(),
                            now.into(),
                            rec.id.into(),
                        ];
                        self.conn()
                            .execute("UPDATE loans SET due_date = ?, amount_due = ?, currency = ?, status = ?, updated_at = ? WHERE id = ?", &args)
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
        let amounts: Vec<String> = new_loans
            .iter()
            .map(|(_, row, ..)| row.loan.amount_due.amount.to_string())
            .collect();
        let args: Vec<Arg> = new_loans
            .iter()
            .zip(&amounts)
            .flat_map(|((_, row, borrower_pk, due, st), amount)| {
                let l = &row.loan;
                [
                    l.id.as_str().into(),
                    (*borrower_pk).into(),
                    due.as_str().into(),
                    amount.into(),
                    l.amount_due.currency.code().into(),
                    st.as_str().into(),
                    now.into(),
                    now.into(),
                ]
            })
            .collect();
        let head = "INSERT INTO loans (external_id, borrower_id, due_date, amount_due, currency, status, created_at, updated_at)";
        insert_rows(self.conn(), head, "(?, ?, ?, ?, ?, ?, ?, ?)", "", &args).await?;
        Ok(outcomes)
    }

    async fn upsert_payments(
        &mut self,
        rows: &[PaymentRow],
    ) -> Result<Vec<RowOutcome>, StoreError> {
        self.payments(rows).await
    }

    async fn seen_before(
        &mut self,
        keys: &[String],
    ) -> Result<HashMap<String, (u64, Option<String>)>, StoreError> {
        if !self.seen_ready {
            // A temporary table lives with the connection: made once, and
            // emptied at the start of each import that uses it.
            self.conn()
                .execute("CREATE TEMP TABLE IF NOT EXISTS import_seen (k TEXT PRIMARY KEY, line BIGINT NOT NULL, fields TEXT)", &[])
                .await?;
            self.conn().execute("DELETE FROM import_seen", &[]).await?;
            self.seen_ready = true;
        }
        let mut out = HashMap::new();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        for row in self
            .conn()
            .select_in_str(
                "SELECT k, line, fields FROM import_seen WHERE k IN ({})",
                &keys,
            )
            .await?
        {
            out.insert(
                row.get::<String>(0),
                (row.get::<i64>(1) as u64, row.get::<Option<String>>(2)),
            );
        }
        Ok(out)
    }

    async fn mark_seen(
        &mut self,
        marks: &[(String, u64, Option<String>)],
    ) -> Result<(), StoreError> {
        let args: Vec<Arg> = marks
            .iter()
            .flat_map(|(k, line, fields)| {
                [k.into(), (*line as i64).into(), fields.as_deref().into()]
            })
            .collect();
        let head = "INSERT INTO import_seen (k, line, fields)";
        insert_rows(
            self.conn(),
            head,
            "(?, ?, ?)",
            "ON CONFLICT (k) DO NOTHING",
            &args,
        )
        .await?;
        Ok(())
    }

    async fn record(&mut self, record: &ImportRecord) -> Result<(), StoreError> {
        let c = record.counts;
        let now = self.now;
        let args = [
            (&record.path).into(),
            record.kind.as_str().into(),
            (&record.content_hash).into(),
            (c.imported as i64).into(),
            (c.updated as i64).into(),
            (c.unchanged as i64).into(),
            (c.rejected as i64).into(),
            now.into(),
        ];
        self.conn()
            .execute(
                "INSERT INTO imports (path, kind, content_hash, imported, updated, unchanged, rejected, at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                &args,
            )
            .await?;
        // What this file changed is looked at by the next tick, even a
        // steady one (new borrowers start at 0 by default).
        if c.imported + c.updated > 0 {
            self.conn()
                .execute(
                    "UPDATE borrowers SET next_look = 0
                      WHERE updated_at = ? OR id IN (SELECT borrower_id FROM loans WHERE updated_at = ?)
                         OR id IN (SELECT borrower_id FROM contact_points WHERE updated_at = ?)",
                    &[now.into(), now.into(), now.into()],
                )
                .await?;
        }
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }
}
