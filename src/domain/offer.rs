//! Repayment offers a policy step may carry: a late fee waived, a discount
//! (an amount or a percentage of what is due) or a payment plan, each
//! valid for a while after the message that makes it. The terms are fixed
//! when the offer is made (`OfferTerms::for_loan`) and kept with it, so the
//! borrower is held to exactly what they read.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{ConfigDuration, Invalid};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferKind {
    /// A fee (`amount`) is waived when the rest is paid in time.
    FeeWaiver,
    /// `amount` or `percent` off what is due when the rest is paid in time.
    Discount,
    /// Paying at least `min_payment` in time starts a payment plan.
    PaymentPlan,
}

impl OfferKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OfferKind::FeeWaiver => "fee_waiver",
            OfferKind::Discount => "discount",
            OfferKind::PaymentPlan => "payment_plan",
        }
    }

    pub fn parse(s: &str) -> Result<OfferKind, Invalid> {
        match s {
            "fee_waiver" => Ok(OfferKind::FeeWaiver),
            "discount" => Ok(OfferKind::Discount),
            "payment_plan" => Ok(OfferKind::PaymentPlan),
            other => Err(Invalid::new(format!("`{other}` is not an offer kind"))),
        }
    }
}

/// `[policy.steps.offer]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferConfig {
    pub kind: OfferKind,
    /// Fee waived or discount, in the loan's currency (decimal text).
    #[serde(default)]
    pub amount: Option<String>,
    /// Discount as a percentage of the amount due (instead of `amount`).
    #[serde(default)]
    pub percent: Option<String>,
    /// Least payment that takes the offer; default: what is due less the
    /// fee or discount. Required for a payment plan (its first instalment).
    #[serde(default)]
    pub min_payment: Option<String>,
    /// How long after the message the offer stands, e.g. `48h`.
    pub valid_for: ConfigDuration,
}

/// An offer's terms for one loan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferTerms {
    pub kind: OfferKind,
    /// The fee waived or the discount, in `currency` (none for a plan).
    pub amount: Option<Decimal>,
    pub percent: Option<Decimal>,
    /// A payment of at least this much before `expires_at` takes it.
    pub min_payment: Decimal,
    pub currency: String,
    pub expires_at: DateTime<Utc>,
}

impl OfferConfig {
    /// Problems as (field, message).
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let dec = |v: &Option<String>| v.as_deref().map(super::money_amount);
        for (field, v) in [
            ("amount", dec(&self.amount)),
            ("percent", dec(&self.percent)),
            ("min_payment", dec(&self.min_payment)),
        ] {
            if let Some(Err(e)) = v {
                out.push((field, e.0));
            }
        }
        match self.kind {
            OfferKind::FeeWaiver if self.amount.is_none() => {
                out.push(("amount", "a fee waiver needs the fee's amount".into()))
            }
            OfferKind::Discount if self.amount.is_some() == self.percent.is_some() => out.push((
                "amount",
                "a discount needs exactly one of amount or percent".into(),
            )),
            OfferKind::PaymentPlan if self.min_payment.is_none() => out.push((
                "min_payment",
                "a payment plan needs min_payment (its first instalment)".into(),
            )),
            _ => {}
        }
        if let Some(Ok(p)) = dec(&self.percent) {
            if p <= Decimal::ZERO || p >= Decimal::from(100) {
                out.push(("percent", format!("`{p}` must be above 0 and below 100")));
            }
        }
        if self.valid_for.get() < std::time::Duration::from_secs(3600) {
            out.push((
                "valid_for",
                "must be at least 1h: a borrower needs time to pay".into(),
            ));
        }
        out
    }

    /// The offer in a few words, for `plan`: `fee_waiver 30.00 off within 48h`.
    pub fn summary(&self) -> String {
        let off = match (&self.amount, &self.percent) {
            (_, Some(p)) => format!(" {p}% off"),
            (Some(a), None) => format!(" {a} off"),
            (None, None) => String::new(),
        };
        let min = self
            .min_payment
            .as_ref()
            .map(|m| format!(", at least {m}"))
            .unwrap_or_default();
        format!(
            "{}{off}{min} within {}",
            self.kind.as_str(),
            humantime::format_duration(self.valid_for.get())
        )
    }

    /// The terms for a loan with `due` outstanding, made at `now`.
    pub fn for_loan(&self, due: Decimal, currency: &str, now: DateTime<Utc>) -> OfferTerms {
        let d = |v: &Option<String>| v.as_deref().and_then(|s| super::money_amount(s).ok());
        let (amount, percent) = (d(&self.amount), d(&self.percent));
        let off = match self.kind {
            OfferKind::FeeWaiver | OfferKind::Discount => match (amount, percent) {
                (Some(a), _) => a,
                (None, Some(p)) => (due * p / Decimal::from(100)).round_dp(2),
                (None, None) => Decimal::ZERO,
            },
            OfferKind::PaymentPlan => Decimal::ZERO,
        };
        let min_payment = d(&self.min_payment)
            .unwrap_or_else(|| (due - off).max(Decimal::ZERO))
            .min(due);
        let amount = match self.kind {
            OfferKind::PaymentPlan => None,
            _ => Some(off),
        };
        OfferTerms {
            kind: self.kind,
            amount,
            percent,
            min_payment,
            currency: currency.to_owned(),
            expires_at: now
                + chrono::Duration::from_std(self.valid_for.get())
                    .unwrap_or_else(|_| chrono::Duration::days(2)),
        }
    }
}

/// Where an offer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferState {
    /// Made; waiting for a payment or its deadline.
    Open,
    /// Paid in time: the lender is told to apply it.
    Taken,
    /// Its deadline passed without a qualifying payment.
    Expired,
    /// Its deadline passed and no message carrying it was ever sent.
    Void,
}

impl OfferState {
    pub fn as_str(self) -> &'static str {
        match self {
            OfferState::Open => "open",
            OfferState::Taken => "taken",
            OfferState::Expired => "expired",
            OfferState::Void => "void",
        }
    }

    pub fn parse(s: &str) -> Result<OfferState, Invalid> {
        match s {
            "open" => Ok(OfferState::Open),
            "taken" => Ok(OfferState::Taken),
            "expired" => Ok(OfferState::Expired),
            "void" => Ok(OfferState::Void),
            other => Err(Invalid::new(format!("`{other}` is not an offer state"))),
        }
    }
}

/// What becomes of an offer at `now`, given whether a message carrying it
/// was sent and the payments on its loan from its making to its deadline
/// (as (id, amount, paid_at), in any order): taken at the payment that
/// brought the total to `min_payment`, expired or void once the deadline has
/// passed, else unchanged (`None`).
pub fn settle(
    terms: &OfferTerms,
    made_at: DateTime<Utc>,
    shown: bool,
    payments: &[(String, Decimal, DateTime<Utc>)],
    now: DateTime<Utc>,
) -> Option<(OfferState, DateTime<Utc>, Vec<String>)> {
    if shown {
        let mut inside: Vec<&(String, Decimal, DateTime<Utc>)> = payments
            .iter()
            .filter(|(_, _, at)| *at >= made_at && *at <= terms.expires_at)
            .collect();
        inside.sort_by_key(|(id, _, at)| (*at, id.clone()));
        let mut total = Decimal::ZERO;
        let mut ids = Vec::new();
        for (id, amount, at) in inside {
            total += *amount;
            ids.push(id.clone());
            if total >= terms.min_payment {
                return Some((OfferState::Taken, *at, ids));
            }
        }
    }
    (now >= terms.expires_at).then(|| {
        let state = if shown {
            OfferState::Expired
        } else {
            OfferState::Void
        };
        (state, terms.expires_at, Vec::new())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }
    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }
    fn waiver() -> OfferConfig {
        OfferConfig {
            kind: OfferKind::FeeWaiver,
            amount: Some("30.00".into()),
            percent: None,
            min_payment: None,
            valid_for: ConfigDuration(std::time::Duration::from_secs(48 * 3600)),
        }
    }

    #[test]
    fn a_fee_waiver_asks_for_what_is_due_less_the_fee_within_its_deadline() {
        let terms = waiver().for_loan(dec("1230.00"), "CNY", t("2026-12-04T02:00:00Z"));
        assert_eq!(terms.min_payment, dec("1200.00"));
        assert_eq!(terms.amount, Some(dec("30.00")));
        assert_eq!(terms.expires_at, t("2026-12-06T02:00:00Z"));
        let made = t("2026-12-04T02:00:00Z");
        // Two payments inside the deadline add up; the second takes it.
        let pays = vec![
            ("p2".to_owned(), dec("700"), t("2026-12-05T10:00:00Z")),
            ("p1".to_owned(), dec("500"), t("2026-12-04T10:00:00Z")),
        ];
        let (state, at, ids) =
            settle(&terms, made, true, &pays, t("2026-12-05T11:00:00Z")).unwrap();
        assert_eq!((state, at), (OfferState::Taken, t("2026-12-05T10:00:00Z")));
        assert_eq!(ids, ["p1", "p2"]);
        // Too little, or too late: open until the deadline, then expired.
        let short = &pays[1..];
        assert_eq!(
            settle(&terms, made, true, short, t("2026-12-05T00:00:00Z")),
            None
        );
        let late = vec![("p3".to_owned(), dec("1200"), t("2026-12-06T02:00:01Z"))];
        let (state, _, _) = settle(&terms, made, true, &late, t("2026-12-06T03:00:00Z")).unwrap();
        assert_eq!(state, OfferState::Expired);
        // Never shown: void, whatever was paid.
        let (state, _, _) = settle(&terms, made, false, &pays, t("2026-12-07T00:00:00Z")).unwrap();
        assert_eq!(state, OfferState::Void);
    }

    #[test]
    fn discounts_and_plans_compute_their_terms_exactly() {
        let mut pct = waiver();
        pct.kind = OfferKind::Discount;
        pct.amount = None;
        pct.percent = Some("10".into());
        let terms = pct.for_loan(dec("999.99"), "CNY", t("2026-12-04T02:00:00Z"));
        assert_eq!(terms.amount, Some(dec("100.00")));
        assert_eq!(terms.min_payment, dec("899.99"));
        let plan = OfferConfig {
            kind: OfferKind::PaymentPlan,
            amount: None,
            percent: None,
            min_payment: Some("200".into()),
            valid_for: ConfigDuration(std::time::Duration::from_secs(7 * 86400)),
        };
        let terms = plan.for_loan(dec("150"), "USD", t("2026-12-04T02:00:00Z"));
        // Never more than what is due.
        assert_eq!(terms.min_payment, dec("150"));
        assert_eq!(terms.amount, None);
    }

    #[test]
    fn incomplete_offers_are_refused() {
        let mut bad = waiver();
        bad.amount = None;
        bad.valid_for = ConfigDuration(std::time::Duration::from_secs(60));
        let found: Vec<&str> = bad.validate().iter().map(|(f, _)| *f).collect();
        assert_eq!(found, ["amount", "valid_for"]);
        let mut both = waiver();
        both.kind = OfferKind::Discount;
        both.percent = Some("150".into());
        let found: Vec<&str> = both.validate().iter().map(|(f, _)| *f).collect();
        assert_eq!(found, ["amount", "percent"]);
    }
}
