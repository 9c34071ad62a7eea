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
    /// Compliance packs that governed and allowed the contact (space-separated).
    pub packs: String,
    /// The repayment offer the step made on these loans and how it ended.
    pub offer: String,
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

/// The packs named in a claim's `allowed_by` (`…; packs a, b`).
fn packs_of(allowed_by: &str) -> String {
    allowed_by
        .split("; ")
        .find_map(|part| part.strip_prefix("packs "))
        .map(|p| p.split(", ").collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn line(row: &AuditRow, default_tz: chrono_tz::Tz) -> AuditLine {
    // The zones the gate resolved: the stated zone, else the candidates of
    // the borrower's phone number (whatever this attempt's channel), else
    // the default. Where several are possible the gate allowed only their
    // overlap, so the local time is shown in each.
    let zones = crate::eligibility::zones_of(
        row.borrower_timezone.as_deref(),
        row.borrower_phone.as_deref(),
        default_tz,
    );
    let local = |tz: &chrono_tz::Tz| {
        row.at
            .with_timezone(tz)
            .format("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
    };
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
        sent_at_local: zones.all.iter().map(local).collect::<Vec<_>>().join(" "),
        timezone: zones
            .all
            .iter()
            .map(|z| z.name())
            .collect::<Vec<_>>()
            .join(" "),
        allowed_by: row.allowed_by.clone(),
        packs: packs_of(&row.allowed_by),
        offer: String::new(),
        provider: row.provider.clone().unwrap_or_default(),
        outcome: row.outcome.as_str().to_owned(),
        outcome_reason: row.outcome_reason.clone(),
    }
}

/// Writes the attempts in `[from, to)` (local dates in UTC) to `out`.
pub async fn export<W: Write>(
    store: &dyn Store,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    format: AuditFormat,
    default_tz: chrono_tz::Tz,
    out: &mut W,
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
    let offers: std::collections::HashMap<(String, String), String> = store
        .offers(None)
        .await?
        .iter()
        .map(|o| {
            (
                (o.loan_id.clone(), o.step.clone()),
                crate::offers::describe(o),
            )
        })
        .collect();
    let line = |r: &AuditRow, tz| {
        let mut l = line(r, tz);
        l.offer = r
            .loan_ids
            .iter()
            .filter_map(|id| offers.get(&(id.clone(), r.step.clone())))
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        l
    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MessageState;

    fn row(channel: Channel, address: &str, phone: Option<&str>) -> AuditRow {
        AuditRow {
            message_id: 1,
            attempt: 1,
            borrower_id: "B1".into(),
            borrower_timezone: None,
            channel,
            address: Some(address.into()),
            borrower_phone: phone.map(str::to_owned),
            step: "due".into(),
            template: "due_today".into(),
            template_version: None,
            loan_ids: vec!["L1".into()],
            at: "2026-12-10T19:30:00Z".parse().unwrap(),
            allowed_by: "window default@overlap".into(),
            outcome: MessageState::Sent,
            outcome_reason: String::new(),
            provider: Some("smtp".into()),
        }
    }

    #[test]
    fn an_email_to_a_us_borrower_with_no_zone_shows_every_us_zone_the_gate_weighed() {
        let line = line(
            &row(Channel::Email, "kim@example.com", Some("+12125550100")),
            chrono_tz::Asia::Shanghai,
        );
        assert!(!line.timezone.contains("Asia/Shanghai"), "{line:?}");
        assert!(line.timezone.contains("America/New_York"), "{line:?}");
        let zones: Vec<&str> = line.timezone.split(' ').collect();
        let locals: Vec<&str> = line.sent_at_local.split(' ').collect();
        assert_eq!(zones.len(), locals.len());
        // 19:30 UTC is 14:30 in New York: inside 08:00-21:00, as the gate saw.
        let ny = zones.iter().position(|z| *z == "America/New_York").unwrap();
        assert_eq!(locals[ny], "2026-12-10T14:30:00-05:00");
    }

    #[test]
    fn a_borrower_with_no_phone_and_no_zone_is_shown_in_the_default_zone() {
        let line = line(
            &row(Channel::Email, "kim@example.com", None),
            chrono_tz::Asia::Shanghai,
        );
        assert_eq!(line.timezone, "Asia/Shanghai");
        assert_eq!(line.sent_at_local, "2026-12-11T03:30:00+08:00");
    }
}
