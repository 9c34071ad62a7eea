//! Reading stored text back into domain values, shared by both backends
//! (they store dates, money, states and channels as the same text).

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::{MessageState, StoreError};
use crate::domain::{Channel, LoanStatus};

pub(super) fn channel(s: &str) -> Result<Channel, StoreError> {
    Channel::parse(s).map_err(|e| StoreError::Corrupt(e.0))
}

pub(super) fn date(s: &str) -> Result<NaiveDate, StoreError> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| StoreError::Corrupt(format!("date `{s}`")))
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
