//! The domain: borrowers, loans, payments, contact points and holds, as
//! validated newtypes. Everything from outside (files, the API, config) is
//! parsed into these types once, at the edge; code inside never re-validates
//! strings. Personal data types mask themselves in `Display` and `Debug`, so a
//! stray `{}` or `?` in a log line cannot leak a phone number or an address.

mod money;
mod offer;
mod phone;
mod settings;

use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;

pub use money::{parse_amount as money_amount, Currency, Money};
pub use offer::{settle as settle_offer, OfferConfig, OfferKind, OfferState, OfferTerms};
pub use phone::{mask_phone as mask_phone_text, PhoneNumber};
pub use settings::{ConfigDuration, Secret};

/// Why a value from outside was refused: a sentence a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    pub fn new(msg: impl Into<String>) -> Self {
        Invalid(msg.into())
    }
}

/// Longest external id we accept; lenders' ids are short keys, and a longer
/// value is almost always a shifted CSV column.
const MAX_ID_LEN: usize = 128;

macro_rules! external_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, Invalid> {
                parse_external_id(raw).map($name)
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

fn parse_external_id(raw: &str) -> Result<String, Invalid> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(Invalid::new("is empty; every row needs an id"));
    }
    if s.len() > MAX_ID_LEN {
        return Err(Invalid::new(format!(
            "is {} bytes long; ids are at most {MAX_ID_LEN}",
            s.len()
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(Invalid::new("contains control characters"));
    }
    Ok(s.to_owned())
}

external_id!(
    /// The lender's own id for a borrower.
    BorrowerId
);
external_id!(
    /// The lender's own id for a loan.
    LoanId
);
external_id!(
    /// The lender's own id for a payment; payments are idempotent by it.
    PaymentId
);

/// A borrower's name. Personal data: masked when displayed.
#[derive(Clone, PartialEq, Eq)]
pub struct PersonName(String);

impl PersonName {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(Invalid::new(
                "is empty; templates greet the borrower by name",
            ));
        }
        if s.chars().count() > 200 {
            return Err(Invalid::new("is longer than 200 characters"));
        }
        if s.chars().any(char::is_control) {
            return Err(Invalid::new("contains control characters"));
        }
        Ok(PersonName(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PersonName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first: String = self.0.chars().take(1).collect();
        write!(f, "{first}***")
    }
}

impl fmt::Debug for PersonName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PersonName({self})")
    }
}

/// An email address, syntax-checked and with its domain lower-cased. We check
/// the shape a mail server will accept, not deliverability: bounces tell that.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let s = raw.trim();
        let bad = |why: &str| {
            Err(Invalid::new(format!(
                "`{}` is not an email address: {why}",
                mask_email(s)
            )))
        };
        if s.len() > 254 {
            return bad("longer than 254 characters");
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return bad("no `@`");
        };
        if local.is_empty() || local.len() > 64 {
            return bad("the part before `@` must be 1 to 64 characters");
        }
        if local.contains('@')
            || s.chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>' || c == ',')
        {
            return bad("contains a space, comma, angle bracket or second `@`");
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2
            || labels.iter().any(|l| {
                l.is_empty()
                    || l.len() > 63
                    || l.starts_with('-')
                    || l.ends_with('-')
                    || !l.chars().all(|c| c.is_alphanumeric() || c == '-')
            })
        {
            return bad("the domain must be like example.com");
        }
        Ok(EmailAddress(format!("{local}@{}", domain.to_lowercase())))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `l***@e***.com`: enough to tell two addresses apart in a log, not to read one.
pub fn mask_email(s: &str) -> String {
    match s.rsplit_once('@') {
        Some((local, domain)) => {
            let l: String = local.chars().take(1).collect();
            let (host, tld) = domain.rsplit_once('.').unwrap_or((domain, ""));
            let h: String = host.chars().take(1).collect();
            if tld.is_empty() {
                format!("{l}***@{h}***")
            } else {
                format!("{l}***@{h}***.{tld}")
            }
        }
        None => "***".to_owned(),
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_email(&self.0))
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmailAddress({self})")
    }
}

/// A BCP 47 language tag of the shapes templates are filed under: `en`,
/// `zh-CN`, `zh-Hans-CN`. Normalised to `ll[-Ssss][-RR]` casing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Locale(String);

impl Locale {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let s = raw.trim().replace('_', "-");
        let parts: Vec<&str> = s.split('-').collect();
        let err = || {
            Invalid::new(format!(
                "`{raw}` is not a locale; use a tag like en, en-US or zh-CN"
            ))
        };
        let lang = parts.first().ok_or_else(err)?;
        if !(2..=3).contains(&lang.len()) || !lang.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(err());
        }
        let mut out = lang.to_ascii_lowercase();
        for part in &parts[1..] {
            match part.len() {
                4 if part.chars().all(|c| c.is_ascii_alphabetic()) => {
                    let mut p = part.to_ascii_lowercase();
                    p[..1].make_ascii_uppercase();
                    out.push('-');
                    out.push_str(&p);
                }
                2 if part.chars().all(|c| c.is_ascii_alphabetic()) => {
                    out.push('-');
                    out.push_str(&part.to_ascii_uppercase());
                }
                3 if part.chars().all(|c| c.is_ascii_digit()) => {
                    out.push('-');
                    out.push_str(part);
                }
                _ => return Err(err()),
            }
        }
        Ok(Locale(out))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The primary language subtag: `zh` for `zh-CN`.
    pub fn language(&self) -> &str {
        self.0.split('-').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An IANA time zone from the bundled tz database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeZone(pub chrono_tz::Tz);

impl TimeZone {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let s = raw.trim();
        chrono_tz::Tz::from_str(s).map(TimeZone).map_err(|_| {
            Invalid::new(format!(
                "`{s}` is not an IANA time zone; use a name like Asia/Shanghai or America/New_York"
            ))
        })
    }
    pub fn name(&self) -> &'static str {
        self.0.name()
    }
}

impl fmt::Display for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

/// Parse a calendar date in ISO form, `2026-12-01`.
pub fn parse_date(raw: &str) -> Result<NaiveDate, Invalid> {
    let s = raw.trim();
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
        Invalid::new(format!(
            "`{s}` is not a date; use YYYY-MM-DD, e.g. 2026-12-01"
        ))
    })
}

/// Parse an instant in RFC 3339 with an explicit offset; stored as UTC.
pub fn parse_instant(raw: &str) -> Result<chrono::DateTime<chrono::Utc>, Invalid> {
    let s = raw.trim();
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| {
            Invalid::new(format!(
                "`{s}` is not an RFC 3339 instant; use e.g. 2026-12-01T09:30:00+08:00"
            ))
        })
}

/// Where a loan stands with the lender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoanStatus {
    Active,
    Paid,
    Closed,
    WrittenOff,
}

impl LoanStatus {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "active" => Ok(LoanStatus::Active),
            "paid" => Ok(LoanStatus::Paid),
            "closed" => Ok(LoanStatus::Closed),
            "written_off" => Ok(LoanStatus::WrittenOff),
            other => Err(Invalid::new(format!(
                "`{other}` is not a loan status; use active, paid, closed or written_off"
            ))),
        }
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            LoanStatus::Active => "active",
            LoanStatus::Paid => "paid",
            LoanStatus::Closed => "closed",
            LoanStatus::WrittenOff => "written_off",
        }
    }
}

impl fmt::Display for LoanStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The channels duebell sends on.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Sms,
    Email,
}

impl Channel {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "sms" => Ok(Channel::Sms),
            "email" => Ok(Channel::Email),
            other => Err(Invalid::new(format!(
                "`{other}` is not a channel; use sms or email"
            ))),
        }
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Email => "email",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a borrower or loan must not be contacted for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HoldKind {
    /// The borrower promised to pay by a date: no reminders until then.
    PromiseToPay,
    /// The debt is disputed: nothing goes out until it is resolved.
    Dispute,
    /// The borrower is in a hardship plan.
    Hardship,
    /// Contact is forbidden (a request, a regulator, a court).
    DoNotContact,
}

impl HoldKind {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "promise_to_pay" => Ok(HoldKind::PromiseToPay),
            "dispute" => Ok(HoldKind::Dispute),
            "hardship" => Ok(HoldKind::Hardship),
            "do_not_contact" => Ok(HoldKind::DoNotContact),
            other => Err(Invalid::new(format!(
                "`{other}` is not a hold kind; use promise_to_pay, dispute, hardship or do_not_contact"
            ))),
        }
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            HoldKind::PromiseToPay => "promise_to_pay",
            HoldKind::Dispute => "dispute",
            HoldKind::Hardship => "hardship",
            HoldKind::DoNotContact => "do_not_contact",
        }
    }
}

/// A borrower as the loan book describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Borrower {
    pub id: BorrowerId,
    pub name: PersonName,
    pub phone: Option<PhoneNumber>,
    pub email: Option<EmailAddress>,
    pub locale: Option<Locale>,
    pub timezone: Option<TimeZone>,
}

/// A loan as the loan book describes it. `status` is `None` when the book
/// has no status column: the store then keeps what it knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loan {
    pub id: LoanId,
    pub borrower: BorrowerId,
    pub due_date: NaiveDate,
    pub amount_due: Money,
    pub status: Option<LoanStatus>,
}

/// A payment against a loan, in the loan's currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub id: PaymentId,
    pub loan: LoanId,
    pub amount: rust_decimal::Decimal,
    pub paid_at: chrono::DateTime<chrono::Utc>,
}

/// Provider template parameters evaluated for one message (Aliyun
/// TemplateCode and named params, Tencent TemplateId and positional params):
/// what the templates produce and the providers send.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProviderParams {
    pub aliyun: Option<(String, std::collections::BTreeMap<String, String>)>,
    pub tencent: Option<(String, Vec<String>)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_checked_and_masked() {
        let e = EmailAddress::parse(" Li.Wei@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "Li.Wei@example.com");
        assert_eq!(e.to_string(), "L***@e***.com");
        assert!(format!("{e:?}").contains("L***@e***.com"));
        for bad in [
            "",
            "a",
            "a@b",
            "a b@c.com",
            "@c.com",
            "a@-c.com",
            "a@c..com",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn locale_is_normalised() {
        assert_eq!(Locale::parse("zh_cn").unwrap().as_str(), "zh-CN");
        assert_eq!(Locale::parse("zh-hans-cn").unwrap().as_str(), "zh-Hans-CN");
        assert_eq!(Locale::parse("en").unwrap().language(), "en");
        assert!(Locale::parse("english").is_err());
        assert!(Locale::parse("").is_err());
    }

    #[test]
    fn time_zone_must_be_iana() {
        assert_eq!(
            TimeZone::parse("Asia/Shanghai").unwrap().name(),
            "Asia/Shanghai"
        );
        assert!(TimeZone::parse("Mars/Olympus").is_err());
        assert!(TimeZone::parse("CST8").is_err() || TimeZone::parse("CST8").is_ok());
    }

    #[test]
    fn names_are_masked_in_logs() {
        let n = PersonName::parse("王小明").unwrap();
        assert_eq!(n.to_string(), "王***");
        assert!(!format!("{n:?}").contains("小明"));
    }

    #[test]
    fn ids_reject_empty_and_overlong() {
        assert!(LoanId::parse("  ").is_err());
        assert!(LoanId::parse(&"x".repeat(129)).is_err());
        assert_eq!(LoanId::parse(" L-1 ").unwrap().as_str(), "L-1");
    }
}
