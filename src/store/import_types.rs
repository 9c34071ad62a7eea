//! The rows an import applies and what applying them did.

use crate::domain::{Borrower, Loan, Payment};

/// One loan-book row: a borrower as of this row and one of their loans.
#[derive(Debug, Clone)]
pub struct LoanBookRow {
    pub line: u64,
    pub borrower: Borrower,
    pub loan: Loan,
}

/// One payments-file row.
#[derive(Debug, Clone)]
pub struct PaymentRow {
    pub line: u64,
    pub payment: Payment,
}

/// What applying one row did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowOutcome {
    Inserted,
    Updated,
    Unchanged,
    /// The row contradicts the store (e.g. a payment for an unknown loan).
    Rejected {
        field: &'static str,
        reason: String,
    },
}

/// Which kind of file an import applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportKind {
    Loans,
    Payments,
}

impl ImportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ImportKind::Loans => "loans",
            ImportKind::Payments => "payments",
        }
    }
}

/// Totals of one applied import.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportCounts {
    pub imported: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub rejected: u64,
}

impl ImportCounts {
    pub fn add(&mut self, outcome: &RowOutcome) {
        match outcome {
            RowOutcome::Inserted => self.imported += 1,
            RowOutcome::Updated => self.updated += 1,
            RowOutcome::Unchanged => self.unchanged += 1,
            RowOutcome::Rejected { .. } => self.rejected += 1,
        }
    }
}

impl std::fmt::Display for ImportCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "imported {}, updated {}, unchanged {}, rejected {}",
            self.imported, self.updated, self.unchanged, self.rejected
        )
    }
}

/// The record of one applied import file.
#[derive(Debug, Clone)]
pub struct ImportRecord {
    pub path: String,
    pub kind: ImportKind,
    pub content_hash: String,
    pub counts: ImportCounts,
}
