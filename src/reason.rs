//! Why a message is in its state: one typed value from the planner, the gate
//! and the dispatcher through the store to metrics and the audit. A `Reason`
//! is a class (`ReasonCode`, the bounded label metrics and summaries group
//! by) and the sentence a person reads. The sentence is what the store
//! keeps, exactly as before this type existed, so stores and audit exports
//! written by earlier versions read the same; `Reason::parse` recovers the
//! class from a stored sentence, and every constructor here is checked to
//! round-trip through it.

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};

use crate::domain::{Channel, HoldKind};

/// The class of a reason: a short, bounded label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReasonCode {
    QuietHours,
    Cap,
    OptedOut,
    Hold,
    LoanInactive,
    NoAddress,
    WindowPassed,
    Due,
    Retry,
    Other,
}

impl ReasonCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::QuietHours => "quiet_hours",
            ReasonCode::Cap => "cap",
            ReasonCode::OptedOut => "opted_out",
            ReasonCode::Hold => "hold",
            ReasonCode::LoanInactive => "loan_inactive",
            ReasonCode::NoAddress => "no_address",
            ReasonCode::WindowPassed => "window_passed",
            ReasonCode::Due => "due",
            ReasonCode::Retry => "retry",
            ReasonCode::Other => "other",
        }
    }

    /// The class of a stored sentence. Sentences come from the constructors
    /// below, so this reads them back rather than guessing.
    fn of(text: &str) -> ReasonCode {
        let r = text.to_ascii_lowercase();
        // A step's window passing wins over what held the message back
        // (earlier versions labelled these by the hold, or as a closed loan).
        if r.starts_with("missed")
            || r.contains("window closed")
            || r.contains("after the step's window")
            || r.contains("past the step's window")
        {
            ReasonCode::WindowPassed
        } else if r.starts_with("quiet hours") {
            ReasonCode::QuietHours
        } else if r.starts_with("contact cap") {
            ReasonCode::Cap
        } else if r.contains("opted out") {
            ReasonCode::OptedOut
        } else if r.contains("hold") {
            ReasonCode::Hold
        } else if r.contains("no longer active") || r.contains(" paid") || r.contains(" closed") {
            ReasonCode::LoanInactive
        } else if r.starts_with("no ") && r.contains("address") {
            ReasonCode::NoAddress
        } else if r.starts_with("due") {
            ReasonCode::Due
        } else if r.contains("retry") || r.contains("transient") {
            ReasonCode::Retry
        } else {
            ReasonCode::Other
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reason: its class and its sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    code: ReasonCode,
    text: String,
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl Reason {
    fn new(code: ReasonCode, text: String) -> Reason {
        Reason { code, text }
    }

    /// A sentence read back from the store (or from a provider).
    pub fn parse(text: impl Into<String>) -> Reason {
        let text = text.into();
        Reason {
            code: ReasonCode::of(&text),
            text,
        }
    }

    pub fn code(&self) -> ReasonCode {
        self.code
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The same class with more said after it.
    pub fn then(&self, more: impl fmt::Display) -> Reason {
        Reason {
            code: self.code,
            text: format!("{}{more}", self.text),
        }
    }

    // Eligibility.
    pub fn no_address(channel: Channel) -> Reason {
        Reason::new(
            ReasonCode::NoAddress,
            format!("no {channel} address on file"),
        )
    }

    pub fn opted_out(channel: Channel, source: Option<&str>) -> Reason {
        let text = match source {
            Some(s) => format!("{channel} address opted out ({s})"),
            None => format!("{channel} address opted out"),
        };
        Reason::new(ReasonCode::OptedOut, text)
    }

    pub fn address_invalid(channel: Channel) -> Reason {
        Reason::new(
            ReasonCode::Other,
            format!("{channel} address marked invalid"),
        )
    }

    /// A hold on the borrower (`loan_scoped` false) or one loan.
    pub fn hold(loan_scoped: bool, kind: HoldKind, until: Option<NaiveDate>) -> Reason {
        let scope = if loan_scoped { "loan" } else { "borrower" };
        let text = match (kind, until) {
            (HoldKind::PromiseToPay, Some(u)) => format!("{scope} hold: promise to pay until {u}"),
            (k, Some(u)) => format!("{scope} hold: {} until {u}", k.as_str()),
            (k, None) => format!("{scope} hold: {}", k.as_str()),
        };
        Reason::new(ReasonCode::Hold, text)
    }

    /// A borrower-wide open-ended hold found by the store's sweep.
    pub fn borrower_on_hold(kind: &str) -> Reason {
        Reason::new(ReasonCode::Hold, format!("borrower on hold ({kind})"))
    }

    /// Loans of the message that may no longer be contacted about, each
    /// already a reason of its own (`loan L paid`, a hold).
    pub fn loans_dropped(reasons: &[Reason]) -> Reason {
        let text = reasons
            .iter()
            .map(Reason::as_str)
            .collect::<Vec<_>>()
            .join("; ");
        Reason::parse(text)
    }

    pub fn loan_status(external_id: &str, status: impl fmt::Display) -> Reason {
        Reason::parse(format!("loan {external_id} {status}"))
    }

    pub fn loans_inactive(statuses: &str) -> Reason {
        Reason::new(
            ReasonCode::LoanInactive,
            format!("loan no longer active ({statuses})"),
        )
    }

    // The gate.
    pub fn quiet_hours(zones: &str) -> Reason {
        Reason::new(ReasonCode::QuietHours, format!("quiet hours in {zones}"))
    }

    pub fn cap_full(rule: &str) -> Reason {
        Reason::new(ReasonCode::Cap, format!("contact cap {rule} is full"))
    }

    pub fn cap_full_until(rule: &str, until: DateTime<Utc>) -> Reason {
        Reason::new(
            ReasonCode::Cap,
            format!("contact cap {rule} is full until {}", stamp(until)),
        )
    }

    pub fn no_window(channel: Channel, zones: &str) -> Reason {
        Reason::parse(format!(
            "no allowed {channel} window in {zones} within a year"
        ))
    }

    // The ladder.
    pub fn due(step: &str, send_at: Option<&str>) -> Reason {
        let text = match send_at {
            Some(at) => format!("due: step {step}; preferred send time {at}"),
            None => format!("due: step {step}"),
        };
        Reason::new(ReasonCode::Due, text)
    }

    pub fn missed(today: NaiveDate, days: i64) -> Reason {
        Reason::new(
            ReasonCode::WindowPassed,
            format!("missed: its window closed before it went out (local day {today} is {days} from the due date)"),
        )
    }

    pub fn window_closed_at_claim() -> Reason {
        Reason::new(
            ReasonCode::WindowPassed,
            "the step's window closed before it could be sent".into(),
        )
    }

    /// `self` would release the message only after its step's window.
    pub fn past_window(&self, closes: DateTime<Utc>) -> Reason {
        Reason::new(
            ReasonCode::WindowPassed,
            format!(
                "{}, which is after the step's window closes at {}",
                self.text,
                stamp(closes)
            ),
        )
    }

    /// A gate deferral that would outlast the step's window (claim time).
    pub fn until_past_window(&self) -> Reason {
        Reason::new(
            ReasonCode::WindowPassed,
            format!("{} until past the step's window", self.text),
        )
    }

    pub fn already_planned() -> Reason {
        Reason::parse("decided on an earlier tick")
    }

    pub fn next_step(step: &str, on: NaiveDate) -> Reason {
        Reason::parse(format!("next: {step} on {on}"))
    }

    pub fn past_last_step() -> Reason {
        Reason::parse("past the last step")
    }

    // Operators.
    pub fn operator(release: bool) -> Reason {
        Reason::parse(if release {
            "released by an operator for sending"
        } else {
            "cancelled by an operator"
        })
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<&str> for Reason {
    fn from(text: &str) -> Reason {
        Reason::parse(text)
    }
}

impl From<String> for Reason {
    fn from(text: String) -> Reason {
        Reason::parse(text)
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_constructed_reason_reads_back_as_its_own_class() {
        let t = DateTime::parse_from_rfc3339("2026-12-10T01:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let d = NaiveDate::from_ymd_opt(2026, 12, 10).unwrap();
        let all = [
            (Reason::no_address(Channel::Sms), ReasonCode::NoAddress),
            (
                Reason::opted_out(Channel::Email, Some("api")),
                ReasonCode::OptedOut,
            ),
            (Reason::opted_out(Channel::Sms, None), ReasonCode::OptedOut),
            (
                Reason::hold(true, HoldKind::PromiseToPay, Some(d)),
                ReasonCode::Hold,
            ),
            (
                Reason::hold(false, HoldKind::Dispute, None),
                ReasonCode::Hold,
            ),
            (Reason::borrower_on_hold("dispute"), ReasonCode::Hold),
            (Reason::loans_inactive("paid"), ReasonCode::LoanInactive),
            (Reason::quiet_hours("Asia/Shanghai"), ReasonCode::QuietHours),
            (Reason::cap_full("daily"), ReasonCode::Cap),
            (Reason::cap_full_until("daily", t), ReasonCode::Cap),
            (Reason::due("late_3", Some("10:00")), ReasonCode::Due),
            (Reason::missed(d, 4), ReasonCode::WindowPassed),
            (Reason::window_closed_at_claim(), ReasonCode::WindowPassed),
            (
                Reason::cap_full("daily").past_window(t),
                ReasonCode::WindowPassed,
            ),
            (
                Reason::quiet_hours("UTC").until_past_window(),
                ReasonCode::WindowPassed,
            ),
        ];
        for (r, code) in all {
            assert_eq!(r.code(), code, "{r}");
            assert_eq!(Reason::parse(r.to_string()), r);
        }
    }

    #[test]
    fn stored_sentences_of_earlier_versions_keep_their_class() {
        for (text, code) in [
            ("contact point opted out (sms STOP)", ReasonCode::OptedOut),
            ("no sms address", ReasonCode::NoAddress),
            ("loan L1 paid", ReasonCode::LoanInactive),
            ("twilio: transient error 503; retry", ReasonCode::Retry),
            ("permanent error 21211", ReasonCode::Other),
        ] {
            assert_eq!(Reason::parse(text).code(), code, "{text}");
        }
    }
}
