//! Contact-frequency caps: "at most N contacts per window" for a scope.
//! Counted against the persisted contact log, so restarts, retries and
//! concurrent workers all see the same count. Calendar windows (`day`,
//! `week`) are the borrower's local days; rolling windows (`7d`) are exact
//! durations.

use std::fmt;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use crate::domain::{Channel, Invalid};

/// What a cap counts contacts of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapScope {
    /// The borrower, across the rule's channels.
    Borrower,
    /// The borrower, each channel counted separately.
    BorrowerChannel,
    /// One phone number or email address.
    ContactPoint,
    /// One loan.
    Loan,
}

/// The window a cap counts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapWindow {
    /// The last `d` before now.
    Rolling(Duration),
    /// The borrower's current local calendar day.
    Day,
    /// The borrower's current local week, Monday to Sunday.
    Week,
}

impl CapWindow {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw.trim() {
            "day" => Ok(CapWindow::Day),
            "week" => Ok(CapWindow::Week),
            other => humantime::parse_duration(other)
                .ok()
                .and_then(|d| Duration::from_std(d).ok())
                .filter(|d| *d > Duration::zero())
                .map(CapWindow::Rolling)
                .ok_or_else(|| {
                    Invalid::new(format!(
                        "`{other}` is not a cap window; use day, week (local calendar) or a rolling duration like 7d or 24h"
                    ))
                }),
        }
    }
}

impl fmt::Display for CapWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CapWindow::Day => f.write_str("local day"),
            CapWindow::Week => f.write_str("local week"),
            CapWindow::Rolling(d) => {
                let secs = d.num_seconds();
                match secs {
                    s if s % 86_400 == 0 => write!(f, "rolling {}d", s / 86_400),
                    s if s % 3_600 == 0 => write!(f, "rolling {}h", s / 3_600),
                    s if s % 60 == 0 => write!(f, "rolling {}m", s / 60),
                    s => write!(f, "rolling {s}s"),
                }
            }
        }
    }
}

impl<'de> Deserialize<'de> for CapWindow {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CapWindow::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One cap rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapRule {
    /// A short name, shown when the cap defers a message.
    pub name: String,
    pub scope: CapScope,
    /// Channels counted (and capped); empty means all.
    #[serde(default)]
    pub channels: Vec<Channel>,
    pub max: u32,
    pub window: CapWindow,
}

/// A contact already made (a row of the contact log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub at: DateTime<Utc>,
    pub channel: Channel,
    pub contact_point: Option<i64>,
    pub loans: Vec<i64>,
}

/// The contact about to be made.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    pub channel: Channel,
    pub contact_point: Option<i64>,
    pub loans: &'a [i64],
}

/// A cap that is full now, and when it next allows a contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapBlock {
    pub rule: String,
    pub until: DateTime<Utc>,
}

impl CapRule {
    fn applies_to(&self, channel: Channel) -> bool {
        self.channels.is_empty() || self.channels.contains(&channel)
    }

    fn counts(&self, c: &Contact, s: &Subject<'_>) -> bool {
        if !self.applies_to(c.channel) {
            return false;
        }
        match self.scope {
            CapScope::Borrower => true,
            CapScope::BorrowerChannel => c.channel == s.channel,
            CapScope::ContactPoint => {
                c.contact_point.is_some() && c.contact_point == s.contact_point
            }
            CapScope::Loan => c.loans.iter().any(|l| s.loans.contains(l)),
        }
    }

    /// `None` when the subject may be contacted at `now`, else the block.
    pub fn check(
        &self,
        now: DateTime<Utc>,
        tz: Tz,
        subject: &Subject<'_>,
        log: &[Contact],
    ) -> Option<CapBlock> {
        if !self.applies_to(subject.channel) {
            return None;
        }
        let mut in_window: Vec<DateTime<Utc>> = match self.window {
            CapWindow::Rolling(d) => log
                .iter()
                .filter(|c| c.at > now - d && c.at <= now && self.counts(c, subject))
                .map(|c| c.at)
                .collect(),
            CapWindow::Day | CapWindow::Week => {
                let (start, end) = calendar_bounds(self.window, tz, now);
                log.iter()
                    .filter(|c| c.at >= start && c.at < end && self.counts(c, subject))
                    .map(|c| c.at)
                    .collect()
            }
        };
        if (in_window.len() as u64) < u64::from(self.max) {
            return None;
        }
        let until = match self.window {
            CapWindow::Rolling(d) => {
                // The cap frees up when enough of the counted contacts have
                // aged out that one more fits.
                in_window.sort();
                let k = in_window.len() + 1 - self.max as usize;
                in_window[k - 1] + d
            }
            CapWindow::Day | CapWindow::Week => calendar_bounds(self.window, tz, now).1,
        };
        Some(CapBlock {
            rule: self.name.clone(),
            until,
        })
    }
}

/// How full each applicable rule is for `subject` at `now`:
/// `name used/max (window)`, for the audit trail of an allowed contact.
pub fn usage(
    rules: &[CapRule],
    now: DateTime<Utc>,
    tz: Tz,
    subject: &Subject<'_>,
    log: &[Contact],
) -> Vec<String> {
    rules
        .iter()
        .filter(|r| r.applies_to(subject.channel))
        .map(|r| {
            let used = match r.window {
                CapWindow::Rolling(d) => log
                    .iter()
                    .filter(|c| c.at > now - d && c.at <= now && r.counts(c, subject))
                    .count(),
                CapWindow::Day | CapWindow::Week => {
                    let (start, end) = calendar_bounds(r.window, tz, now);
                    log.iter()
                        .filter(|c| c.at >= start && c.at < end && r.counts(c, subject))
                        .count()
                }
            };
            format!("{} {}/{} per {}", r.name, used, r.max, r.window)
        })
        .collect()
}

/// Checks every rule; when several are full, the latest `until` is when the
/// contact may go.
pub fn check_all(
    rules: &[CapRule],
    now: DateTime<Utc>,
    tz: Tz,
    subject: &Subject<'_>,
    log: &[Contact],
) -> Option<CapBlock> {
    rules
        .iter()
        .filter_map(|r| r.check(now, tz, subject, log))
        .max_by_key(|b| b.until)
}

/// The longest span any rule looks back, so the store loads only that much
/// of the contact log.
pub fn lookback(rules: &[CapRule]) -> Duration {
    rules
        .iter()
        .map(|r| match r.window {
            CapWindow::Rolling(d) => d,
            CapWindow::Day => Duration::days(2),
            CapWindow::Week => Duration::days(8),
        })
        .max()
        .unwrap_or_else(Duration::zero)
}

/// The UTC bounds of the local calendar day or week containing `now`.
pub fn calendar_bounds(
    window: CapWindow,
    tz: Tz,
    now: DateTime<Utc>,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let today = now.with_timezone(&tz).date_naive();
    let (first, next) = match window {
        CapWindow::Week => {
            let monday = today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
            (monday, monday + Duration::days(7))
        }
        _ => (today, today + Duration::days(1)),
    };
    (local_midnight(tz, first), local_midnight(tz, next))
}

/// The first instant of a local date (midnight, or the end of a DST gap
/// that swallows midnight).
pub fn local_midnight(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    super::window::day_intervals(
        tz,
        date,
        &[super::window::LocalWindow::parse("00:00-24:00").expect("literal")],
    )
    .first()
    .map(|(s, _)| *s)
    .unwrap_or_else(|| date.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
}

/// The defaults in the contact rules: SMS ≤ 1 per local day; all channels
/// ≤ 2 per local day; all channels ≤ 7 per rolling 7 days.
pub fn default_rules() -> Vec<CapRule> {
    vec![
        CapRule {
            name: "sms_per_day".into(),
            scope: CapScope::BorrowerChannel,
            channels: vec![Channel::Sms],
            max: 1,
            window: CapWindow::Day,
        },
        CapRule {
            name: "all_per_day".into(),
            scope: CapScope::Borrower,
            channels: vec![],
            max: 2,
            window: CapWindow::Day,
        },
        CapRule {
            name: "all_per_7d".into(),
            scope: CapScope::Borrower,
            channels: vec![],
            max: 7,
            window: CapWindow::Rolling(Duration::days(7)),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America, Asia};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn contact(at: &str, channel: Channel, cp: i64, loan: i64) -> Contact {
        Contact {
            at: utc(at),
            channel,
            contact_point: Some(cp),
            loans: vec![loan],
        }
    }

    fn rule(scope: CapScope, channels: Vec<Channel>, max: u32, window: &str) -> CapRule {
        CapRule {
            name: "r".into(),
            scope,
            channels,
            max,
            window: CapWindow::parse(window).unwrap(),
        }
    }

    const SMS: Subject<'static> = Subject {
        channel: Channel::Sms,
        contact_point: Some(1),
        loans: &[10],
    };

    #[test]
    fn a_calendar_day_cap_resets_at_local_midnight() {
        let r = rule(CapScope::BorrowerChannel, vec![Channel::Sms], 1, "day");
        // Shanghai: 09:00 local = 01:00Z. One SMS today blocks until 16:00Z (00:00 local).
        let log = [contact("2026-12-01T01:00:00Z", Channel::Sms, 1, 10)];
        let block = r
            .check(utc("2026-12-01T05:00:00Z"), Asia::Shanghai, &SMS, &log)
            .unwrap();
        assert_eq!(block.until, utc("2026-12-01T16:00:00Z"));
        assert!(r
            .check(utc("2026-12-01T16:00:00Z"), Asia::Shanghai, &SMS, &log)
            .is_none());
        // An email does not count toward an SMS-only cap.
        let email = [contact("2026-12-01T01:00:00Z", Channel::Email, 2, 10)];
        assert!(r
            .check(utc("2026-12-01T05:00:00Z"), Asia::Shanghai, &SMS, &email)
            .is_none());
    }

    #[test]
    fn a_local_day_is_23_hours_when_dst_starts() {
        let (s, e) = calendar_bounds(
            CapWindow::Day,
            America::New_York,
            utc("2025-03-09T15:00:00Z"),
        );
        assert_eq!(
            (s, e),
            (utc("2025-03-09T05:00:00Z"), utc("2025-03-10T04:00:00Z"))
        );
    }

    #[test]
    fn a_rolling_cap_frees_when_the_oldest_contact_ages_out() {
        let r = rule(CapScope::Borrower, vec![], 2, "7d");
        let log = [
            contact("2026-12-01T02:00:00Z", Channel::Sms, 1, 10),
            contact("2026-12-03T02:00:00Z", Channel::Email, 2, 11),
        ];
        let block = r
            .check(utc("2026-12-05T00:00:00Z"), Asia::Shanghai, &SMS, &log)
            .unwrap();
        assert_eq!(block.until, utc("2026-12-08T02:00:00Z"));
        assert!(r
            .check(utc("2026-12-08T02:00:00Z"), Asia::Shanghai, &SMS, &log)
            .is_none());
    }

    #[test]
    fn a_week_cap_counts_monday_to_sunday_local() {
        let r = rule(CapScope::Borrower, vec![], 1, "week");
        // 2026-12-06 is a Sunday; Monday 2026-12-07 00:00 Shanghai = 12-06T16:00Z.
        let log = [contact("2026-12-02T02:00:00Z", Channel::Sms, 1, 10)];
        let block = r
            .check(utc("2026-12-06T10:00:00Z"), Asia::Shanghai, &SMS, &log)
            .unwrap();
        assert_eq!(block.until, utc("2026-12-06T16:00:00Z"));
    }

    #[test]
    fn contact_point_and_loan_scopes_count_only_their_own() {
        let cp = rule(CapScope::ContactPoint, vec![], 1, "day");
        let other_number = [contact("2026-12-01T01:00:00Z", Channel::Sms, 99, 10)];
        assert!(cp
            .check(
                utc("2026-12-01T05:00:00Z"),
                Asia::Shanghai,
                &SMS,
                &other_number
            )
            .is_none());
        let same_number = [contact("2026-12-01T01:00:00Z", Channel::Sms, 1, 77)];
        assert!(cp
            .check(
                utc("2026-12-01T05:00:00Z"),
                Asia::Shanghai,
                &SMS,
                &same_number
            )
            .is_some());

        let loan = rule(CapScope::Loan, vec![], 1, "day");
        assert!(loan
            .check(
                utc("2026-12-01T05:00:00Z"),
                Asia::Shanghai,
                &SMS,
                &same_number
            )
            .is_none());
        assert!(loan
            .check(
                utc("2026-12-01T05:00:00Z"),
                Asia::Shanghai,
                &SMS,
                &other_number
            )
            .is_some());
    }

    #[test]
    fn the_latest_block_wins_when_several_caps_are_full() {
        let rules = default_rules();
        let log = [
            contact("2026-12-01T01:00:00Z", Channel::Sms, 1, 10),
            contact("2026-12-01T02:00:00Z", Channel::Email, 2, 10),
        ];
        let email = Subject {
            channel: Channel::Email,
            contact_point: Some(2),
            loans: &[10],
        };
        let block = check_all(
            &rules,
            utc("2026-12-01T05:00:00Z"),
            Asia::Shanghai,
            &email,
            &log,
        )
        .unwrap();
        assert_eq!(block.rule, "all_per_day");
    }
}
