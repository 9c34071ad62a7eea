//! Template filters: `money`, `date`, `days`. They read the template's
//! `locale` from the context, so one template text serves every loan.

use chrono::{Datelike, NaiveDate};
use minijinja::{Error, ErrorKind, State, Value};
use rust_decimal::Decimal;

use crate::domain::Currency;

fn locale(state: &State) -> String {
    state
        .lookup("locale")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "en".to_owned())
}

fn is_chinese(locale: &str) -> bool {
    locale.split('-').next() == Some("zh")
}

fn invalid(msg: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg)
}

/// Strict mode does not stop an undefined value being passed to a filter;
/// the filters refuse it themselves, so a typo'd variable is an error, never
/// a blank or a zero.
fn defined(value: &Value) -> Result<(), Error> {
    if value.is_undefined() {
        Err(Error::from(ErrorKind::UndefinedError))
    } else {
        Ok(())
    }
}

/// `{{ loan.amount_due | money(loan.currency) }}` → `¥1,234.50`.
pub fn money(value: Value, currency: Value) -> Result<String, Error> {
    defined(&value)?;
    defined(&currency)?;
    let currency = currency.to_string();
    let currency = currency.as_str();
    let text = value.to_string();
    let amount: Decimal = text
        .parse()
        .map_err(|_| invalid(format!("money: `{text}` is not an amount")))?;
    let cur = Currency::parse(currency).map_err(|e| invalid(format!("money: {e}")))?;
    Ok(format_money(amount, cur))
}

pub fn format_money(amount: Decimal, currency: Currency) -> String {
    let symbol = match currency.code() {
        "CNY" | "JPY" => "¥",
        "USD" => "$",
        "EUR" => "€",
        "GBP" => "£",
        "HKD" => "HK$",
        "AUD" => "A$",
        "CAD" => "CA$",
        "SGD" => "S$",
        "NZD" => "NZ$",
        "TWD" => "NT$",
        "KRW" => "₩",
        "INR" => "₹",
        "PHP" => "₱",
        _ => "",
    };
    let rounded = amount.round_dp(currency.minor_units());
    let negative = rounded.is_sign_negative() && !rounded.is_zero();
    let plain = format!("{:.*}", currency.minor_units() as usize, rounded.abs());
    let (int, frac) = plain.split_once('.').unwrap_or((&plain, ""));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let number = if frac.is_empty() {
        grouped
    } else {
        format!("{grouped}.{frac}")
    };
    let sign = if negative { "-" } else { "" };
    if symbol.is_empty() {
        format!("{sign}{number} {}", currency.code())
    } else {
        format!("{sign}{symbol}{number}")
    }
}

/// `{{ loan.due_date | date }}` → `2026年12月1日` or `Dec 1, 2026`;
/// `| date("short")` → `12月1日` or `Dec 1`.
pub fn date(state: &State, value: Value, form: Option<&str>) -> Result<String, Error> {
    defined(&value)?;
    let text = value.to_string();
    let d = NaiveDate::parse_from_str(&text, "%Y-%m-%d")
        .map_err(|_| invalid(format!("date: `{text}` is not a date")))?;
    match form {
        None | Some("long") => Ok(format_date(d, &locale(state))),
        Some("short") => Ok(format_short_date(d, &locale(state))),
        Some(other) => Err(invalid(format!(
            "date: `{other}` is not a form; use \"short\" or \"long\""
        ))),
    }
}

pub fn format_short_date(d: NaiveDate, locale: &str) -> String {
    if is_chinese(locale) {
        format!("{}月{}日", d.month(), d.day())
    } else {
        let long = format_date(d, locale);
        long.rsplit_once(", ")
            .map_or(long.clone(), |(md, _)| md.to_owned())
    }
}

pub fn format_date(d: NaiveDate, locale: &str) -> String {
    if is_chinese(locale) {
        format!("{}年{}月{}日", d.year(), d.month(), d.day())
    } else {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        format!("{} {}, {}", MONTHS[d.month0() as usize], d.day(), d.year())
    }
}

/// `{{ loan.days_past_due | days }}` → `3天` or `3 days`. Negative counts
/// are shown as their magnitude (the template says "in" or "ago").
pub fn days(state: &State, value: Value) -> Result<String, Error> {
    defined(&value)?;
    let n = i64::try_from(value.clone())
        .map_err(|_| invalid(format!("days: `{value}` is not a whole number")))?;
    Ok(format_days(n.abs(), &locale(state)))
}

pub fn format_days(n: i64, locale: &str) -> String {
    if is_chinese(locale) {
        format!("{n}天")
    } else if n == 1 {
        "1 day".to_owned()
    } else {
        format!("{n} days")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_by_currency() {
        let cny = Currency::parse("CNY").unwrap();
        assert_eq!(format_money("1234.5".parse().unwrap(), cny), "¥1,234.50");
        assert_eq!(
            format_money(
                "1234567.891".parse().unwrap(),
                Currency::parse("USD").unwrap()
            ),
            "$1,234,567.89"
        );
        assert_eq!(
            format_money("999".parse().unwrap(), Currency::parse("GBP").unwrap()),
            "£999.00"
        );
        assert_eq!(
            format_money("1500".parse().unwrap(), Currency::parse("JPY").unwrap()),
            "¥1,500"
        );
        assert_eq!(
            format_money("12.5".parse().unwrap(), Currency::parse("CHF").unwrap()),
            "12.50 CHF"
        );
        assert_eq!(format_money("0".parse().unwrap(), cny), "¥0.00");
    }

    #[test]
    fn dates_and_days_by_locale() {
        let d = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        assert_eq!(format_date(d, "zh-CN"), "2026年12月1日");
        assert_eq!(format_date(d, "en-US"), "Dec 1, 2026");
        assert_eq!(format_short_date(d, "en-US"), "Dec 1");
        assert_eq!(format_short_date(d, "zh-CN"), "12月1日");
        assert_eq!(format_days(3, "zh-CN"), "3天");
        assert_eq!(format_days(3, "en"), "3 days");
        assert_eq!(format_days(1, "en"), "1 day");
    }
}
