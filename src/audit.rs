//! `duebell audit`: every contact attempt for compliance review: who, by
//! which channel and (masked) address, which template and version, when in
//! UTC and in the borrower's local time, the window and caps that allowed
//! it, and how it ended.

use std::io::Write;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::domain::{mask_email, Channel};
use crate::store::{AuditRow, Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuditFormat {
    Csv,
    Jsonl,
}

/// One exported line.
#[derive(Debug, Clone, Serialize)]
pub struct AuditLine {
    pub message_id: i64,
    pub attempt: i64,
    pub borrower_id: String,
    pub channel: Channel,
    pub address: String,
    pub step: String,
    pub template: String,
    pub template_version: String,
    pub loan_ids: String,
    pub sent_at_utc: String,
    pub sent_at_local: String,
    pub timezone: String,
    pub allowed_by: String,
    pub provider: String,
    pub outcome: String,
    pub outcome_reason: String,
}

fn mask(channel: Channel, address: &str) -> String {
    match channel {
        Channel::Sms => crate::domain::mask_phone_text(address),
        Channel::Email => mask_email(address),
    }
}

pub fn line(row: &AuditRow, default_tz: chrono_tz::Tz) -> AuditLine {
    // The same zone resolution the gate used: stated zone, else the phone
    // country's, else the default.
    let stated = row
        .borrower_timezone
        .as_deref()
        .and_then(|z| z.parse().ok());
    let phone = (row.channel == Channel::Sms)
        .then(|| {
            row.address
                .as_deref()
                .and_then(|a| crate::domain::PhoneNumber::parse(a).ok())
        })
        .flatten();
    let tz = crate::compliance::zones::ZoneSet::resolve(stated, phone.as_ref(), default_tz).primary;
    AuditLine {
        message_id: row.message_id,
        attempt: row.attempt,
        borrower_id: row.borrower_id.clone(),
        channel: row.channel,
        address: row
            .address
            .as_deref()
            .map(|a| mask(row.channel, a))
            .unwrap_or_default(),
        step: row.step.clone(),
        template: row.template.clone(),
        template_version: row.template_version.clone().unwrap_or_default(),
        loan_ids: row.loan_ids.join(" "),
        sent_at_utc: row.at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        sent_at_local: row
            .at
            .with_timezone(&tz)
            .format("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
        timezone: tz.name().to_owned(),
        allowed_by: row.allowed_by.clone(),
        provider: row.provider.clone().unwrap_or_default(),
        outcome: row.outcome.as_str().to_owned(),
        outcome_reason: row.outcome_reason.clone(),
    }
}

/// Writes the attempts in `[from, to)` (local dates in UTC) to `out`.
pub async fn export(
    store: &dyn Store,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    format: AuditFormat,
    default_tz: chrono_tz::Tz,
    out: &mut dyn Write,
) -> Result<u64, StoreError> {
    let start = from.map_or(DateTime::<Utc>::MIN_UTC, |d| {
        d.and_hms_opt(0, 0, 0).expect("midnight").and_utc()
    });
    let end = to.map_or(DateTime::<Utc>::MAX_UTC, |d| {
        (d + chrono::Duration::days(1))
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
    });
    let rows = store.audit(start, end).await?;
    // A closed pipe (`duebell audit | head`) ends the export quietly.
    let written = match format {
        AuditFormat::Jsonl => rows.iter().try_for_each(|r| {
            writeln!(
                out,
                "{}",
                serde_json::to_string(&line(r, default_tz)).unwrap_or_default()
            )
        }),
        AuditFormat::Csv => {
            let mut w = csv::Writer::from_writer(out);
            rows.iter()
                .try_for_each(|r| {
                    w.serialize(line(r, default_tz))
                        .map_err(std::io::Error::other)
                })
                .and_then(|()| w.flush())
        }
    };
    match written {
        Ok(()) => Ok(rows.len() as u64),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(rows.len() as u64),
        Err(e) if e.get_ref().and_then(|i| i.downcast_ref::<csv::Error>()).is_some_and(|c| matches!(c.kind(), csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe)) => Ok(rows.len() as u64),
        Err(e) => Err(StoreError::Corrupt(format!("cannot write the audit: {e}"))),
    }
}
