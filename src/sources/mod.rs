//! Sources: how loans and payments get into the store. `import_file` applies
//! one loan-book or payments file in one store transaction (all good rows or
//! nothing); `FileWatch` is the daemon's `[[sources]]` of kind `file`, which
//! re-imports a file whenever its content changes.

mod config;
pub mod rows;
mod stream;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

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
/// transaction; invalid rows reported and skipped. The file is read as a
/// stream (once for its content hash, once for its rows), so memory does
/// not follow its size.
pub async fn import_file(
    store: &dyn Store,
    path: &Path,
    now: DateTime<Utc>,
    progress: Progress,
) -> Result<ImportReport, ImportError> {
    let shown = path.display().to_string();
    let read_err = |source| ImportError::Read {
        path: shown.clone(),
        source,
    };
    let owned = path.to_owned();
    let hash = tokio::task::spawn_blocking(move || stream::hash_file(&owned))
        .await
        .map_err(|e| read_err(std::io::Error::other(e.to_string())))?
        .map_err(read_err)?;
    import_hashed(store, path, hash, now, progress).await
}

/// `import_file` once the content hash is known.
async fn import_hashed(
    store: &dyn Store,
    path: &Path,
    content_hash: String,
    now: DateTime<Utc>,
    progress: Progress,
) -> Result<ImportReport, ImportError> {
    let shown = path.display().to_string();
    let read_err = |source| ImportError::Read {
        path: shown.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    let input = rows::without_bom(file).map_err(read_err)?;
    let seen = stream::Seen::default();
    let format = FileFormat::of(path).ok_or_else(|| ImportError::Format {
        path: shown.clone(),
    })?;
    let file_err = |e: rows::FileError| ImportError::File {
        path: shown.clone(),
        line: e.line,
        field: e.field,
        reason: e.reason,
    };
    let (kind, records): (ImportKind, Box<dyn Iterator<Item = _> + Send>) = match format {
        FileFormat::Csv => {
            let (columns, recs) = rows::csv_stream(input, seen.clone()).map_err(file_err)?;
            (
                rows::detect_kind(&columns).map_err(file_err)?,
                Box::new(recs),
            )
        }
        FileFormat::Jsonl => {
            let tee = stream::Tee::new(input, seen.clone());
            let mut recs = rows::jsonl_lines(std::io::BufReader::new(tee));
            // The kind comes from the first object; what came before it
            // (lines that are not objects) is reported in its place.
            let mut early = Vec::new();
            let columns = loop {
                match recs.next() {
                    Some(Ok(r)) => {
                        let columns: Vec<String> = r.fields.keys().cloned().collect();
                        early.push(Ok(r));
                        break columns;
                    }
                    Some(Err(e)) => early.push(Err(e)),
                    None => break Vec::new(),
                }
            };
            if columns.is_empty() {
                return Err(file_err(rows::FileError {
                    line: 1,
                    field: "row".to_owned(),
                    reason: "no JSON object found; a JSONL file has one object per line".to_owned(),
                }));
            }
            (
                rows::detect_kind(&columns).map_err(file_err)?,
                Box::new(early.into_iter().chain(recs)),
            )
        }
    };
    import_records(
        store,
        &shown,
        kind,
        records,
        seen,
        size,
        content_hash,
        now,
        progress,
    )
    .await
}

/// The key of a record (`loan_id` or `payment_id`), trimmed.
fn row_key(kind: ImportKind, rec: &RawRecord) -> String {
    rec.fields
        .get(key_field(kind))
        .map(|k| k.trim().to_owned())
        .unwrap_or_default()
}

/// The column that keys a record of `kind`.
fn key_field(kind: ImportKind) -> &'static str {
    match kind {
        ImportKind::Loans => "loan_id",
        ImportKind::Payments => "payment_id",
    }
}

/// Applies a file's records in chunks, in one transaction.
#[allow(clippy::too_many_arguments)]
async fn import_records(
    store: &dyn Store,
    shown: &str,
    kind: ImportKind,
    records: Box<dyn Iterator<Item = Result<RawRecord, (u64, String, String)>> + Send + '_>,
    seen: stream::Seen,
    size: u64,
    content_hash: String,
    now: DateTime<Utc>,
    progress: Progress,
) -> Result<ImportReport, ImportError> {
    let bar = progress_bar(progress, size);
    let store_err = |source| ImportError::Store {
        path: shown.to_owned(),
        source,
    };
    let mut tx = store.begin_import(now).await.map_err(store_err)?;
    let mut counts = ImportCounts::default();
    let mut errors = Vec::new();
    let mut records = records.peekable();
    while records.peek().is_some() {
        let chunk: Vec<_> = records.by_ref().take(CHUNK).collect();
        // A key repeated within one file is refused rather than silently
        // overwriting the earlier row, and a borrower's later row must agree
        // with their first: what earlier chunks had is kept in the import's
        // transaction (`ImportTx::seen_before`), not in memory.
        let mut wanted: Vec<String> = Vec::new();
        for rec in chunk.iter().flatten() {
            let key = row_key(kind, rec);
            if !key.is_empty() {
                wanted.push(format!("k:{key}"));
            }
            let borrower = rec.fields.get("borrower_id").map_or("", |b| b.trim());
            if kind == ImportKind::Loans && !borrower.is_empty() {
                wanted.push(format!("b:{borrower}"));
            }
        }
        wanted.sort_unstable();
        wanted.dedup();
        let earlier = tx.seen_before(&wanted).await.map_err(store_err)?;
        let mut here: HashMap<String, (u64, Option<String>)> = HashMap::new();
        let mut loans = Vec::new();
        let mut payments = Vec::new();
        let mut lines = Vec::new();
        let mut last_end = 0;
        for item in chunk {
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
            let key = row_key(kind, &rec);
            let key_mark = format!("k:{key}");
            if let Some((first, _)) = here.get(&key_mark).or_else(|| earlier.get(&key_mark)) {
                errors.push(RowError {
                    path: shown.to_owned(),
                    line: rec.line,
                    field: key_field(kind).to_owned(),
                    reason: format!(
                        "`{key}` appears again (first on line {first}); list each once per file"
                    ),
                });
                continue;
            }
            let validated = match kind {
                ImportKind::Loans => rows::loan_row(&rec).and_then(|(borrower, loan)| {
                    // A borrower's details repeat on each of their loans; if
                    // two rows disagree, applying both would flip the store
                    // on every import, so the later row is refused.
                    let mark = format!("b:{}", borrower.id.as_str());
                    match here.get(&mark).or_else(|| earlier.get(&mark)) {
                        Some((first_line, first)) => {
                            let first = first.as_deref().unwrap_or_default();
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
                            here.insert(mark, (rec.line, Some(rows::borrower_fields(&borrower))));
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
                    if !key.is_empty() {
                        here.insert(key_mark, (rec.line, None));
                    }
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
        let marks: Vec<(String, u64, Option<String>)> = here
            .into_iter()
            .map(|(k, (line, fields))| (k, line, fields))
            .collect();
        tx.mark_seen(&marks).await.map_err(store_err)?;
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
    // A read that failed part-way must not apply the part it read.
    if let Some(why) = seen.failure() {
        return Err(ImportError::Read {
            path: shown.to_owned(),
            source: std::io::Error::other(format!("{why} (nothing of the file was applied)")),
        });
    }
    errors.sort_by_key(|e| e.line);
    counts.rejected = errors.len() as u64;
    tx.record(&ImportRecord {
        path: shown.to_owned(),
        kind,
        content_hash: content_hash.clone(),
        counts,
    })
    .await
    .map_err(store_err)?;
    tx.commit().await.map_err(store_err)?;
    if counts.imported + counts.updated >= crate::store::BULK_ROWS {
        // The import is committed: a failed refresh only leaves the
        // statistics to autovacuum, so it is reported, not returned.
        if let Err(e) = store
            .refresh_statistics(crate::store::BulkChange::Book)
            .await
        {
            tracing::warn!(error = %e, "could not refresh the store's statistics after the import");
        }
    }
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
        let owned = self.path.clone();
        let hash = match tokio::task::spawn_blocking(move || stream::hash_file(&owned)).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(PollOutcome::Missing)
            }
            Ok(Err(source)) => {
                return Err(ImportError::Read {
                    path: shown,
                    source,
                })
            }
            Err(e) => {
                return Err(ImportError::Read {
                    path: shown,
                    source: std::io::Error::other(e.to_string()),
                })
            }
        };
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
        let report = import_hashed(store, &self.path, hash.clone(), now, Progress::Off).await;
        if let Err(ImportError::Read { source, .. }) = &report {
            if source.kind() == std::io::ErrorKind::NotFound {
                return Ok(PollOutcome::Missing);
            }
        }
        // A file that cannot be applied (bad header, unknown format) is
        // remembered too, so a broken export is reported once, not on every
        // poll; a store failure or a failed read is retried on the next poll.
        if !matches!(
            report,
            Err(ImportError::Store { .. } | ImportError::Read { .. })
        ) {
            self.last_hash = Some(hash);
        }
        Ok(PollOutcome::Imported(report?))
    }
}
