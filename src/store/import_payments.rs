//! The payments half of an import (`SqlImport`, `import.rs`): payments
//! upserted by external id, and the loans they settle marked paid.

use std::collections::{HashMap, HashSet};

use rust_decimal::Decimal;
use sqlx::Database;

use super::backend::{Conn, DbRow};
use super::codec::{decimal, status};
use super::import::{paid_totals, SqlImport};
use super::{effective_status, to_millis, PaymentRow, RowOutcome, StoreError};
use crate::domain::LoanStatus;

impl<DB: Database> SqlImport<DB>
where
    DB::Connection: Conn,
{
    /// `ImportTx::upsert_payments`.
    pub(super) async fn payments(
        &mut self,
        rows: &[PaymentRow],
    ) -> Result<Vec<RowOutcome>, StoreError> {
        let now = self.now;
        let loan_keys: Vec<&str> = rows.iter().map(|r| r.payment.loan.as_str()).collect();
        let payment_keys: Vec<&str> = rows.iter().map(|r| r.payment.id.as_str()).collect();
        let mut loans: HashMap<String, (i64, Decimal, LoanStatus)> = HashMap::new();
        for row in self
            .conn()
            .select_in_str(
                "SELECT id, external_id, amount_due, status FROM loans WHERE external_id IN ({})",
                &loan_keys,
            )
            .await?
        {
            loans.insert(
                row.get(1),
                (
                    row.get(0),
                    decimal(&row.get::<String>(2))?,
                    status(&row.get::<String>(3))?,
                ),
            );
        }
        let mut payments: HashMap<String, (i64, i64, Decimal, i64)> = HashMap::new();
        for row in self.conn().select_in_str(
            "SELECT id, external_id, loan_id, amount, paid_at FROM payments WHERE external_id IN ({})",
            &payment_keys,
        )
        .await?
        {
            payments.insert(row.get(1), (row.get(0), row.get(2), decimal(&row.get::<String>(3))?, row.get(4)));
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
                    let amount = p.amount.to_string();
                    let args = [amount.as_str().into(), paid_at.into(), now.into(), existing.0.into()];
                    self.conn()
                        .execute("UPDATE payments SET amount = ?, paid_at = ?, updated_at = ? WHERE id = ?", &args)
                        .await?;
                    existing.2 = p.amount;
                    existing.3 = paid_at;
                    touched.insert(loan_pk);
                    outcomes.push(RowOutcome::Updated);
                }
                None => {
                    let amount = p.amount.to_string();
                    let args = [p.id.as_str().into(), loan_pk.into(), amount.as_str().into(), paid_at.into(), now.into(), now.into()];
                    let id: i64 = self
                        .conn()
                        .fetch_optional(
                            "INSERT INTO payments (external_id, loan_id, amount, paid_at, created_at, updated_at)
                             VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                            &args,
                        )
                        .await?
                        .map(|r| r.get(0))
                        .ok_or_else(|| StoreError::Corrupt(format!("payment `{}` was not inserted", p.id)))?;
                    payments.insert(p.id.as_str().to_owned(), (id, loan_pk, p.amount, paid_at));
                    touched.insert(loan_pk);
                    outcomes.push(RowOutcome::Inserted);
                }
            }
        }

        let touched: Vec<i64> = touched.into_iter().collect();
        let totals = paid_totals(self.conn(), &touched).await?;
        for (loan_pk, amount_due, st) in loans.values() {
            let Some(paid) = totals.get(loan_pk) else {
                continue;
            };
            let new = effective_status(*st, *amount_due, *paid);
            if new != *st {
                self.conn()
                    .execute(
                        "UPDATE loans SET status = ?, updated_at = ? WHERE id = ?",
                        &[new.as_str().into(), now.into(), (*loan_pk).into()],
                    )
                    .await?;
            }
        }
        Ok(outcomes)
    }
}
