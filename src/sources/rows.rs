//! Reading import files into validated rows. CSV (header row, columns in any
//! order, extra columns ignored) and JSONL (one object per line, same names)
//! both become `RawRecord`s; one validation turns those into domain rows or
//! a `RowError` naming the line, the field and what to do.

use std::collections::HashMap;
use std::fmt;

use super::stream::{Seen, Tee};
use crate::domain::{
    parse_date, parse_instant, Borrower, BorrowerId, Currency, EmailAddress, Invalid, Loan, LoanId,
    LoanStatus, Locale, Money, Payment, PaymentId, PersonName, PhoneNumber, TimeZone,
};
use crate::store::ImportKind;

pub const LOAN_COLUMNS: &[&str] = &[
    "loan_id",
    "borrower_id",
    "name",
    "phone",
    "email",
    "locale",
    "timezone",
    "due_date",
    "amount_due",
    "currency",
];
pub const PAYMENT_COLUMNS: &[&str] = &["payment_id", "loan_id", "amount", "paid_at"];

/// A row with the reason it was refused. Displays as `PATH:LINE: field: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub path: String,
    pub line: u64,
    pub field: String,
    pub reason: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.path, self.line, self.field, self.reason
        )
    }
}

/// One record of an import file: field name (lower case) to text.
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub line: u64,
    /// Byte offset just past this record, for progress.
    pub end: u64,
    pub fields: HashMap<String, String>,
}

impl RawRecord {
    fn get(&self, name: &str) -> &str {
        self.fields
            .get(name)
            .map(String::as_str)
            .unwrap_or("")
            .trim()
    }
}

/// An error that stops a whole file (nothing of it is applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub line: u64,
    pub field: String,
    pub reason: String,
}

/// Which kind a file is, from its columns: `payment_id` makes it a payments
/// file; otherwise it must have every loan-book column.
pub fn detect_kind(columns: &[String]) -> Result<ImportKind, FileError> {
    let has = |c: &str| columns.iter().any(|x| x == c);
    let (kind, required) = if has("payment_id") {
        (ImportKind::Payments, PAYMENT_COLUMNS)
    } else {
        (ImportKind::Loans, LOAN_COLUMNS)
    };
    let missing: Vec<&str> = required.iter().copied().filter(|c| !has(c)).collect();
    if missing.is_empty() {
        Ok(kind)
    } else {
        Err(FileError {
            line: 1,
            field: "header".to_owned(),
            reason: format!(
                "missing column{} {}; a {} file needs {}",
                if missing.len() > 1 { "s" } else { "" },
                missing.join(", "),
                if kind == ImportKind::Payments {
                    "payments"
                } else {
                    "loan-book"
                },
                required.join(", ")
            ),
        })
    }
}

/// Parses a CSV file's records from memory (see `csv_stream`).
pub fn csv_records(bytes: &[u8]) -> Result<(Vec<String>, CsvRecords), FileError> {
    let input = without_bom(std::io::Cursor::new(bytes.to_vec())).map_err(|e| FileError {
        line: 1,
        field: "header".to_owned(),
        reason: format!("cannot read: {e}"),
    })?;
    csv_stream(input, Seen::default())
}

/// A reader with a leading UTF-8 byte-order mark (as spreadsheets write)
/// skipped.
pub fn without_bom(
    mut input: impl std::io::Read + Send + 'static,
) -> std::io::Result<Box<dyn std::io::Read + Send>> {
    use std::io::Read;
    let mut head = Vec::with_capacity(3);
    (&mut input).take(3).read_to_end(&mut head)?;
    if head == b"\xEF\xBB\xBF" {
        head.clear();
    }
    Ok(Box::new(std::io::Cursor::new(head).chain(input)))
}

/// Parses CSV records as they are read from `input`, in bounded memory
/// (`seen` holds what the line counter still needs; a read error is kept
/// there). Yields row-level errors (bad UTF-8, a row with the wrong number
/// of fields) inline; a header problem is a `FileError`.
pub fn csv_stream(
    input: Box<dyn std::io::Read + Send>,
    seen: Seen,
) -> Result<(Vec<String>, CsvRecords), FileError> {
    let tee: Box<dyn std::io::Read + Send> = Box::new(Tee::new(input, seen.clone()));
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(tee);
    let header = reader.byte_headers().map_err(|e| FileError {
        line: 1,
        field: "header".to_owned(),
        reason: format!("cannot read the header row: {e}"),
    })?;
    let mut columns = Vec::with_capacity(header.len());
    for h in header {
        let name = std::str::from_utf8(h).map_err(|_| FileError {
            line: 1,
            field: "header".to_owned(),
            reason: "is not UTF-8; save the file as UTF-8".to_owned(),
        })?;
        columns.push(name.trim().to_ascii_lowercase());
    }
    let mut names = std::collections::HashSet::new();
    for c in &columns {
        if !c.is_empty() && !names.insert(c) {
            return Err(FileError {
                line: 1,
                field: "header".to_owned(),
                reason: format!("column `{c}` appears twice"),
            });
        }
    }
    Ok((
        columns.clone(),
        CsvRecords {
            reader,
            columns,
            record: csv::ByteRecord::new(),
            seen,
            counted_to: 0,
            line: 1,
            pending: Default::default(),
        },
    ))
}

pub struct CsvRecords {
    reader: csv::Reader<Box<dyn std::io::Read + Send>>,
    columns: Vec<String>,
    record: csv::ByteRecord,
    /// Line numbers are counted here from byte offsets: the csv crate's own
    /// counter skips blank lines, and people look rows up by editor line.
    seen: Seen,
    counted_to: u64,
    line: u64,
    /// Errors for the further lines of a row that swallowed them.
    pending: std::collections::VecDeque<(u64, String, String)>,
}

impl CsvRecords {
    fn line_at(&mut self, byte: u64) -> u64 {
        let end = self.seen.end();
        let mut byte = byte.min(end);
        // The reader reports a record as starting where the previous one
        // ended, before any blank lines it skipped.
        while matches!(self.seen.byte(byte), Some(b'\n' | b'\r')) {
            byte += 1;
        }
        if byte > self.counted_to {
            self.line += self.seen.with(self.counted_to, byte, |b| {
                b.iter().filter(|c| **c == b'\n').count() as u64
            });
            self.counted_to = byte;
        }
        self.line
    }
}

impl Iterator for CsvRecords {
    type Item = Result<RawRecord, (u64, String, String)>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.pending.pop_front() {
            return Some(Err(e));
        }
        // What lies before the last counted line is never looked at again.
        self.seen.forget_before(self.counted_to);
        match self.reader.read_byte_record(&mut self.record) {
            Ok(false) => None,
            Err(e) => {
                let line = e.position().map_or(0, |p| self.line_at(p.byte()));
                // A CSV syntax error (bad quoting) is unrecoverable for the
                // rest of the file: report it and stop reading.
                let reason = format!("{e}; fix the quoting on this line");
                self.reader = csv::Reader::from_reader(Box::new(std::io::empty()));
                Some(Err((line, "row".to_owned(), reason)))
            }
            Ok(true) => {
                let start = self.record.position().map_or(0, |p| p.byte());
                let line = self.line_at(start);
                let end = self.reader.position().byte();
                // No field of a book holds a line break: one that does is a
                // quote left open, which swallowed the lines after it. Each
                // of those lines is reported, never silently lost.
                if self
                    .record
                    .iter()
                    .any(|f| f.iter().any(|b| matches!(b, b'\n' | b'\r')))
                {
                    let last = line
                        + self.seen.with(start, end, |body| {
                            body.trim_ascii_end()
                                .iter()
                                .filter(|b| **b == b'\n')
                                .count() as u64
                        });
                    for swallowed in line + 1..=last {
                        self.pending.push_back((
                            swallowed,
                            "row".to_owned(),
                            format!("was read as part of line {line}, whose quote is never closed; not imported"),
                        ));
                    }
                    return Some(Err((
                        line,
                        "row".to_owned(),
                        format!(
                            "a quote opened on this line is not closed on it, so lines {line}-{last} read as one row; close the quote (none of them was imported)"
                        ),
                    )));
                }
                if self
                    .record
                    .iter()
                    .all(|f| f.iter().all(u8::is_ascii_whitespace))
                {
                    return self.next();
                }
                if self.record.len() != self.columns.len() {
                    return Some(Err((
                        line,
                        "row".to_owned(),
                        format!(
                            "has {} fields but the header has {}; check for an unquoted comma",
                            self.record.len(),
                            self.columns.len()
                        ),
                    )));
                }
                let mut fields = HashMap::with_capacity(self.columns.len());
                for (name, value) in self.columns.iter().zip(self.record.iter()) {
                    match std::str::from_utf8(value) {
                        Ok(v) => {
                            fields.insert(name.clone(), v.to_owned());
                        }
                        Err(_) => {
                            return Some(Err((
                                line,
                                name.clone(),
                                "is not UTF-8; save the file as UTF-8".to_owned(),
                            )))
                        }
                    }
                }
                Some(Ok(RawRecord { line, end, fields }))
            }
        }
    }
}

/// Parses a JSONL file in memory (see `jsonl_lines`).
pub fn jsonl_records(
    bytes: &[u8],
) -> impl Iterator<Item = Result<RawRecord, (u64, String, String)>> + '_ {
    jsonl_lines(bytes)
}

/// Parses JSONL as it is read: each non-blank line one JSON object. String,
/// number and boolean values are taken as text; `null` is empty. A read
/// error ends the records (the reader's `Seen` keeps it).
pub fn jsonl_lines<'r>(
    input: impl std::io::BufRead + 'r,
) -> impl Iterator<Item = Result<RawRecord, (u64, String, String)>> + 'r {
    let mut offset = 0u64;
    input
        .split(b'\n')
        .map_while(Result::ok)
        .enumerate()
        .filter_map(move |(i, line)| {
            offset += line.len() as u64 + 1;
            let line_no = i as u64 + 1;
            let text = match std::str::from_utf8(&line) {
                Ok(t) => t.trim(),
                Err(_) => return Some(Err((line_no, "row".to_owned(), "is not UTF-8".to_owned()))),
            };
            if text.is_empty() {
                return None;
            }
            let obj: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(text) {
                Ok(o) => o,
                Err(e) => {
                    return Some(Err((
                        line_no,
                        "row".to_owned(),
                        format!("is not a JSON object: {e}"),
                    )))
                }
            };
            let mut fields = HashMap::with_capacity(obj.len());
            for (k, v) in obj {
                let s = match v {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Number(n) => n.to_string(),
                    serde_json::Value::Bool(b) => b.to_string(),
                    serde_json::Value::Null => String::new(),
                    other => {
                        return Some(Err((
                            line_no,
                            k,
                            format!("must be a string, number or null, not {other}"),
                        )))
                    }
                };
                fields.insert(k.to_ascii_lowercase(), s);
            }
            Some(Ok(RawRecord {
                line: line_no,
                end: offset,
                fields,
            }))
        })
}

/// The keys of the first object in a JSONL file, to detect its kind.
pub fn jsonl_columns(bytes: &[u8]) -> Vec<String> {
    jsonl_records(bytes)
        .find_map(Result::ok)
        .map(|r| r.fields.into_keys().collect())
        .unwrap_or_default()
}

type FieldResult<T> = Result<T, (String, String)>;

fn field<T>(
    rec: &RawRecord,
    name: &str,
    parse: impl FnOnce(&str) -> Result<T, Invalid>,
) -> FieldResult<T> {
    parse(rec.get(name)).map_err(|e| (name.to_owned(), e.0))
}

fn optional<T>(
    rec: &RawRecord,
    name: &str,
    parse: impl FnOnce(&str) -> Result<T, Invalid>,
) -> FieldResult<Option<T>> {
    let v = rec.get(name);
    if v.is_empty() {
        Ok(None)
    } else {
        parse(v).map(Some).map_err(|e| (name.to_owned(), e.0))
    }
}

/// Validates a loan-book record into a borrower and a loan.
pub fn loan_row(rec: &RawRecord) -> FieldResult<(Borrower, Loan)> {
    let loan_id = field(rec, "loan_id", LoanId::parse)?;
    let borrower_id = field(rec, "borrower_id", BorrowerId::parse)?;
    let name = field(rec, "name", PersonName::parse)?;
    let phone = optional(rec, "phone", PhoneNumber::parse)?;
    let email = optional(rec, "email", EmailAddress::parse)?;
    if phone.is_none() && email.is_none() {
        return Err((
            "phone".to_owned(),
            "and email are both empty; a borrower needs at least one to be reminded".to_owned(),
        ));
    }
    let locale = optional(rec, "locale", Locale::parse)?;
    let timezone = optional(rec, "timezone", TimeZone::parse)?;
    let due_date = field(rec, "due_date", parse_date)?;
    let currency = field(rec, "currency", Currency::parse)?;
    let amount_due = field(rec, "amount_due", |s| Money::parse(s, currency))?;
    let status = optional(rec, "status", LoanStatus::parse)?;
    Ok((
        Borrower {
            id: borrower_id.clone(),
            name,
            phone,
            email,
            locale,
            timezone,
        },
        Loan {
            id: loan_id,
            borrower: borrower_id,
            due_date,
            amount_due,
            status,
        },
    ))
}

/// A borrower's details as one text (each field's canonical form, in the
/// order `first_difference` compares them), to remember a borrower's first
/// row of a file without holding the row.
pub fn borrower_fields(b: &Borrower) -> String {
    [
        b.name.as_str(),
        b.phone.as_ref().map_or("", |p| p.as_str()),
        b.email.as_ref().map_or("", |e| e.as_str()),
        b.locale.as_ref().map_or("", |l| l.as_str()),
        b.timezone.as_ref().map_or("", |t| t.name()),
    ]
    .join("\u{1f}")
}

/// The first field in which a borrower's row differs from the details
/// (`borrower_fields`) of an earlier row of the same borrower.
pub fn first_difference(first: &str, b: &Borrower) -> Option<&'static str> {
    let now = borrower_fields(b);
    ["name", "phone", "email", "locale", "timezone"]
        .into_iter()
        .zip(first.split('\u{1f}').zip(now.split('\u{1f}')))
        .find(|(_, (a, b))| a != b)
        .map(|(field, _)| field)
}

/// Validates a payments record.
pub fn payment_row(rec: &RawRecord) -> FieldResult<Payment> {
    let id = field(rec, "payment_id", PaymentId::parse)?;
    let loan = field(rec, "loan_id", LoanId::parse)?;
    let amount = field(rec, "amount", crate::domain::money_amount)?;
    if amount.is_zero() {
        return Err((
            "amount".to_owned(),
            "is zero; a payment must be positive".to_owned(),
        ));
    }
    let paid_at = field(rec, "paid_at", parse_instant)?;
    Ok(Payment {
        id,
        loan,
        amount,
        paid_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(pairs: &[(&str, &str)]) -> RawRecord {
        RawRecord {
            line: 7,
            end: 0,
            fields: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn good_loan() -> Vec<(&'static str, &'static str)> {
        vec![
            ("loan_id", "L1"),
            ("borrower_id", "B1"),
            ("name", "Li Wei"),
            ("phone", "+8613812345678"),
            ("email", "li@example.com"),
            ("locale", "zh-CN"),
            ("timezone", "Asia/Shanghai"),
            ("due_date", "2026-12-01"),
            ("amount_due", "1234.50"),
            ("currency", "CNY"),
        ]
    }

    #[test]
    fn a_good_loan_row_validates() {
        let (b, l) = loan_row(&rec(&good_loan())).unwrap();
        assert_eq!(b.phone.unwrap().as_str(), "+8613812345678");
        assert_eq!(l.amount_due.to_string(), "1234.50 CNY");
        assert_eq!(l.status, None);
    }

    #[test]
    fn each_bad_field_is_named() {
        for (field, value) in [
            ("phone", "+86 12345"),
            ("timezone", "Asia/Nowhere"),
            ("due_date", "2026-13-01"),
            ("amount_due", "12,00"),
            ("currency", "RMB"),
            ("status", "late"),
            ("email", "x@"),
            ("loan_id", ""),
            ("locale", "chinese"),
        ] {
            let mut r = good_loan();
            r.retain(|(k, _)| *k != field);
            r.push((field, value));
            let err = loan_row(&rec(&r)).unwrap_err();
            assert_eq!(err.0, field, "{value}: {err:?}");
        }
    }

    #[test]
    fn header_detection_names_missing_columns() {
        let cols: Vec<String> = ["loan_id", "borrower_id"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let err = detect_kind(&cols).unwrap_err();
        assert!(
            err.reason.contains("missing columns name, phone"),
            "{}",
            err.reason
        );
        let cols: Vec<String> = PAYMENT_COLUMNS.iter().map(|s| s.to_string()).collect();
        assert_eq!(detect_kind(&cols).unwrap(), ImportKind::Payments);
    }

    #[test]
    fn csv_lines_are_counted_from_the_header() {
        let data = b"loan_id,x\nA,1\n\nB,2\n";
        let (_, recs) = csv_records(data).unwrap();
        let lines: Vec<u64> = recs.map(|r| r.unwrap().line).collect();
        assert_eq!(lines, vec![2, 4]);
    }

    #[test]
    fn jsonl_accepts_numbers_and_nulls() {
        let data = b"{\"amount\": 12.5, \"email\": null}\n\nnot json\n";
        let recs: Vec<_> = jsonl_records(data).collect();
        let first = recs[0].as_ref().unwrap();
        assert_eq!(first.get("amount"), "12.5");
        assert_eq!(first.get("email"), "");
        assert_eq!(recs[1].as_ref().unwrap_err().0, 3);
    }
}
