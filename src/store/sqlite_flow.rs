//! The SQLite backend's planning and dispatch loads (`flow.rs`, shared).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::sqlite::SqliteConnection;
use sqlx::Row;

use super::sqlite::{select_in_i64, sql};
use super::{
    from_millis, to_millis, ClaimLease, ClaimView, ContactView, Fence, HoldView, LoanRow,
    MessageState, PlanBorrower, StoreError, Verdict,
};
use crate::compliance::caps::Contact;
use crate::domain::{Currency, HoldKind, LoanStatus, Money};

pub(super) use super::codec::{channel, date, state};

super::flow::flow_fns!(SqliteConnection, sqlx::sqlite::SqliteRow);
