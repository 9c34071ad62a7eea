//! Sources: how loans and payments get into the store. `import_file` applies
//! one loan-book or payments file in one store transaction (all good rows or
//! nothing); `FileWatch` is the daemon's `[[sources]]` of kind `file`, which
//! re-imports a file whenever its content changes.

mod config;
pub mod rows;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::store::{
    ImportCounts, ImportKind, ImportRecord, LoanBookRow, PaymentRow, RowOutcome, Store, StoreError,
};

pub use config::{validate_sources, SourceConfig, SourceKind};
pub use rows::{loan_row, RawRecord, RowError, LOAN_COLUMNS, PAYMENT_COLUMNS};

/// Rows handed to the store at once.
const CHUNK: usize = 1000;

/// The formats `import` reads, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Csv,
    Jsonl,
}

impl FileFormat {
    pub fn of(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(FileFormat::Csv),
            "jsonl" | "ndjson" => Some(FileFormat::Jsonl),
            _ => None,
        }
    }
}

/// Whether `import` can read this file (by its extension).
pub fn is_importable(path: &Path) -> bool {
    FileFormat::of(path).is_some()
}

/// Why a whole file was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: unknown format; name the file .csv or .jsonl")]
    Format { path: String },
    #[error("{path}:{line}: {field}: {reason}")]
    File {
        path: String,
        line: u64,
        field: String,
        reason: String,
    },
    #[error("{path}: not applied: {source}")]
    Store { path: String, source: StoreError },
}

/// What importing one file did.
#[derive(Debug, Clone)]
pub struct ImportReport {
    pub path: String,
    pub kind: ImportKind,
    pub counts: ImportCounts,
    /// Refused rows, in file order.
    pub errors: Vec<RowError>,
    pub content_hash: String,
}

/// Whether to draw a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// On a terminal (stderr), for files large enough to wait on.
    Auto,
    Off,
}

/// Imports one file: every valid row upserted by external id, in one
/// transaction; invalid rows reported and skipped.
pub async fn import_file(
    store: &dyn Store,
    path: &Path,
    now: DateTime<Utc>,
    progress: Progress,
) -> Result<ImportReport, ImportError> {
    let shown = path.display().to_string();
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|source| ImportError::Read {
            path: shown.clone(),
            source,
        })?;
    import_bytes(store, &shown, &bytes, now, progress).await
}

/// Hex SHA-256 of a file's content.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn import_bytes(
    store: &dyn Store,
    shown: &str,
    bytes: &[u8],
    now: DateTime<Utc>,
    progress: Progress,
) -> Result<ImportReport, ImportError> {
    let format = FileFormat::of(Path::new(shown)).ok_or_else(|| ImportError::Format {
        path: shown.to_owned(),
    })?;
    let file_err = |e: rows::FileError| ImportError::File {
        path: shown.to_owned(),
        line: e.line,
        field: e.field,
        reason: e.reason,
    };
    let (kind, records): (ImportKind, Box<dyn Iterator<Item = _> + Send + '_>) = match format {
        FileFormat::Csv => {
            let (columns, recs) = rows::csv_records(bytes).map_err(file_err)?;
            (
                rows::detect_kind(&columns).map_err(file_err)?,
                Box::new(recs),
            )
        }
        FileFormat::Jsonl => {
            let columns = rows::jsonl_columns(bytes);
            if columns.is_empty() {
                return Err(file_err(rows::FileError {
                    line: 1,
                    field: "row".to_owned(),
                    reason: "no JSON object found; a JSONL file has one object per line".to_owned(),
                }));
            }
            (
                rows::detect_kind(&columns).map_err(file_err)?,
                Box::new(rows::jsonl_records(bytes)),
            )
        }
    };

    let bar = progress_bar(progress, bytes.len() as u64);
    let store_err = |source| ImportError::Store {
        path: shown.to_owned(),
        source,
    };
    let mut tx = store.begin_import(now).await.map_err(store_err)?;
    let mut counts = ImportCounts::default();
    let mut errors = Vec::new();
    // First line of each key, so a key repeated within one file is refused
    // rather than silently overwriting the earlier row.
    let mut first_seen: HashMap<String, u64> = HashMap::new();
    let mut borrowers_seen: HashMap<String, (u64, crate::domain::Borrower)> = HashMap::new();
    let mut records = records.peekable();
    while records.peek().is_some() {
        let mut loans = Vec::new();
        let mut payments = Vec::new();
        let mut lines = Vec::new();
        let mut last_end = 0;
        for item in records.by_ref().take(CHUNK) {
            let rec = match item {
                Ok(r) => r,
                Err((line, field, reason)) => {
                    errors.push(RowError {
                        path: shown.to_owned(),
                        line,
                        field,
                        reason,
                    });
                    continue;
                }
            };
            last_end = rec.end;
            let (key_field, key) = match kind {
                ImportKind::Loans => ("loan_id", rec.fields.get("loan_id")),
                ImportKind::Payments => ("payment_id", rec.fields.get("payment_id")),
            };
            let key = key.map(|k| k.trim().to_owned()).unwrap_or_default();
            if !key.is_empty() {
                if let Some(first) = first_seen.get(&key) {
                    errors.push(RowError {
                        path: shown.to_owned(),
                        line: rec.line,
                        field: key_field.to_owned(),
                        reason: format!("`{key}` appears again (first on line {first}); list each once per file"),
                    });
                    continue;
                }
            }
            let validated = match kind {
                ImportKind::Loans => rows::loan_row(&rec).and_then(|(borrower, loan)| {
                    // A borrower's details repeat on each of their loans; if
                    // two rows disagree, applying both would flip the store
                    // on every import, so the later row is refused.
                    match borrowers_seen.get(borrower.id.as_str()) {
                        Some((first_line, first)) => {
                            if let Some(field) = rows::first_difference(first, &borrower) {
                                return Err((
                                    field.to_owned(),
                                    format!(
                                        "differs from borrower `{}` on line {first_line}; a borrower's details must agree across their loans",
                                        borrower.id
                                    ),
                                ));
                            }
                        }
                        None => {
                            borrowers_seen.insert(borrower.id.as_str().to_owned(), (rec.line, borrower.clone()));
                        }
                    }
                    loans.push(LoanBookRow { line: rec.line, borrower, loan });
                    Ok(())
                }),
                ImportKind::Payments => rows::payment_row(&rec).map(|payment| {
                    payments.push(PaymentRow { line: rec.line, payment });
                }),
            };
            match validated {
                Ok(()) => {
                    first_seen.insert(key, rec.line);
                    lines.push(rec.line);
                }
                Err((field, reason)) => errors.push(RowError {
                    path: shown.to_owned(),
                    line: rec.line,
                    field,
                    reason,
                }),
            }
        }
        let outcomes = match kind {
            ImportKind::Loans => tx.upsert_loans(&loans).await,
            ImportKind::Payments => tx.upsert_payments(&payments).await,
        }
        .map_err(store_err)?;
        for (outcome, line) in outcomes.iter().zip(&lines) {
            if let RowOutcome::Rejected { field, reason } = outcome {
                errors.push(RowError {
                    path: shown.to_owned(),
                    line: *line,
                    field: (*field).to_owned(),
                    reason: reason.clone(),
                });
            }
            counts.add(outcome);
        }
        if let Some(bar) = &bar {
            bar.set_position(last_end);
        }
    }
    errors.sort_by_key(|e| e.line);
    counts.rejected = errors.len() as u64;
    let content_hash = content_hash(bytes);
    tx.record(&ImportRecord {
        path: shown.to_owned(),
        kind,
        content_hash: content_hash.clone(),
        counts,
    })
    .await
    .map_err(store_err)?;
    tx.commit().await.map_err(store_err)?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(ImportReport {
        path: shown.to_owned(),
        kind,
        counts,
        errors,
        content_hash,
    })
}

fn progress_bar(progress: Progress, len: u64) -> Option<indicatif::ProgressBar> {
    // Small files import in well under a second: a bar would only flicker.
    if progress == Progress::Off || !std::io::stderr().is_terminal() || len < 1_000_000 {
        return None;
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message("importing");
    Some(bar)
}

/// A `[[sources]]` file that the daemon re-imports when its content changes.
/// Polling by content hash (not mtime or inotify) catches a file replaced by
/// rename, copied with its old mtime preserved, or on a network mount.
#[derive(Debug, Clone)]
pub struct FileWatch {
    pub path: PathBuf,
    pub poll_interval: std::time::Duration,
    last_hash: Option<String>,
}

/// What one poll of a watched file did.
#[derive(Debug)]
pub enum PollOutcome {
    Unchanged,
    Missing,
    Imported(ImportReport),
}

impl FileWatch {
    pub fn new(path: PathBuf, poll_interval: std::time::Duration) -> Self {
        FileWatch {
            path,
            poll_interval,
            last_hash: None,
        }
    }

    /// Imports the file if its content differs from the last import of it
    /// (as recorded in the store, so a restart does not re-import).
    pub async fn poll(
        &mut self,
        store: &dyn Store,
        now: DateTime<Utc>,
    ) -> Result<PollOutcome, ImportError> {
        let shown = self.path.display().to_string();
        let bytes = match tokio::fs::read(&self.path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(PollOutcome::Missing),
            Err(source) => {
                return Err(ImportError::Read {
                    path: shown,
                    source,
                })
            }
        };
        let hash = content_hash(&bytes);
        if self.last_hash.is_none() {
            self.last_hash =
                store
                    .last_import_hash(&shown)
                    .await
                    .map_err(|source| ImportError::Store {
                        path: shown.clone(),
                        source,
                    })?;
        }
        if self.last_hash.as_deref() == Some(hash.as_str()) {
            return Ok(PollOutcome::Unchanged);
        }
        let report = import_bytes(store, &shown, &bytes, now, Progress::Off).await;
        // A file that cannot be applied (bad header, unknown format) is
        // remembered too, so a broken export is reported once, not on every
        // poll; a store failure is retried on the next poll.
        if !matches!(report, Err(ImportError::Store { .. })) {
            self.last_hash = Some(hash);
        }
        Ok(PollOutcome::Imported(report?))
    }
}
