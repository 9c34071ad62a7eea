//! Reading stored text back into domain values, shared by both backends
//! (they store dates, money, states and channels as the same text).

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::{MessageState, StoreError};
use crate::domain::{Channel, LoanStatus};

pub(super) fn channel(s: &str) -> Result<Channel, StoreError> {
    Channel::parse(s).map_err(|e| StoreError::Corrupt(e.0))
}

/// A stored day (`YYYY-MM-DD`). Read for every loan and planned key of a
/// planning pass, so the usual form is read by hand; chrono's parser
/// (format items interpreted per call) is the fallback and the judge of
/// anything else.
pub(super) fn date(s: &str) -> Result<NaiveDate, StoreError> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b[r].iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    if b.len() == 10 && b[4] == b'-' && b[7] == b'-' {
        if let (Some(y), Some(m), Some(d)) = (digits(0..4), digits(5..7), digits(8..10)) {
            if let Some(day) = NaiveDate::from_ymd_opt(y as i32, m, d) {
                return Ok(day);
            }
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| StoreError::Corrupt(format!("date `{s}`")))
}

/// A day as stored (`YYYY-MM-DD`), as `date` reads it back.
pub(super) fn day(d: &NaiveDate) -> String {
    use chrono::Datelike;
    let (y, m, dd) = (d.year(), d.month(), d.day());
    if !(0..=9999).contains(&y) {
        return d.format("%Y-%m-%d").to_string();
    }
    let mut out = String::with_capacity(10);
    for (n, width) in [(y as u32, 4), (m, 2), (dd, 2)] {
        if width == 2 {
            out.push('-');
        }
        for place in (0..width).rev() {
            out.push(char::from(b'0' + (n / 10u32.pow(place) % 10) as u8));
        }
    }
    out
}

pub(super) fn state(s: &str) -> Result<MessageState, StoreError> {
    MessageState::parse(s).ok_or_else(|| StoreError::Corrupt(format!("message state `{s}`")))
}

pub(super) fn decimal(s: &str) -> Result<Decimal, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("amount `{s}`")))
}

pub(super) fn status(s: &str) -> Result<LoanStatus, StoreError> {
    LoanStatus::parse(s).map_err(|e| StoreError::Corrupt(e.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_is_written_and_read_back_as_chrono_does() {
        let mut d = NaiveDate::from_ymd_opt(1999, 12, 25).unwrap();
        for _ in 0..800 {
            let text = day(&d);
            assert_eq!(text, d.format("%Y-%m-%d").to_string());
            assert_eq!(date(&text).unwrap(), d);
            d += chrono::Duration::days(37);
        }
        let odd = NaiveDate::from_ymd_opt(10_001, 1, 2).unwrap();
        assert_eq!(date(&day(&odd)).unwrap(), odd);
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "2026-1-011",
            "20a6-01-01",
            "",
            "2026/01/01",
        ] {
            assert!(date(bad).is_err(), "{bad}");
        }
    }
}
