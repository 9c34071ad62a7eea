//! The store: borrowers, loans, payments, contact points, holds, messages and
//! the contact log. `Store` is the seam every other module goes through, so a
//! PostgreSQL backend can sit beside `sqlite.rs` without the importer,
//! planner or dispatcher changing. Backends keep instants in UTC and money as
//! exact decimal text.

mod backend;
mod changes;
mod codec;
mod common;
mod common_book;
mod common_outcomes;
mod config;
mod console;
mod copy;
mod copy_tables;
mod flow;
mod import;
mod import_payments;
mod import_types;
mod leases;
mod postgres;
mod postgres_conn;
mod shared;
mod sqlite;
mod sqlite_conn;
mod sqlite_direct;
mod types;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use crate::domain::{Channel, LoanId, LoanStatus};

pub use changes::changed_sweep_reads;
pub use config::{StoreConfig, Synchronous};
pub use console::{Arg, BorrowerHit, Cell, ChangeRecord, Db, SessionRecord, UserRecord};
pub use copy::{copy, CopyReport};
pub use import_types::*;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use types::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the store holds a value duebell cannot read ({0}); was it edited by hand?")]
    Corrupt(String),
    #[error("cannot prepare the store at {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
    /// A write made in a role (planning) whose lease passed to another
    /// instance; nothing was written.
    #[error("fenced off: {0}")]
    Fenced(String),
}

impl StoreError {
    /// Whether the store was only busy (another writer held the lock past
    /// the busy timeout, a pool was exhausted, a connection dropped): the
    /// same write may succeed if tried again.
    pub fn is_contention(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) => true,
            StoreError::Db(sqlx::Error::Database(e)) => {
                // SQLite: SQLITE_BUSY (5) and SQLITE_LOCKED (6), extended
                // codes included; PostgreSQL: serialization failure,
                // deadlock, lock timeout.
                let code = e.code().unwrap_or_default();
                let sqlite_busy = code.parse::<u32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6));
                sqlite_busy
                    || matches!(code.as_ref(), "40001" | "40P01" | "55P03")
                    || e.message().contains("database is locked")
            }
            _ => false,
        }
    }
}

/// A held role: its name, the holder and the fencing token the role had
/// when this holder took it. Writes made in the role carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub role: String,
    pub holder: String,
    pub token: i64,
}

/// What wakes an idle daemon that shares its store.
#[derive(Clone)]
pub struct Wakeups {
    /// New due work was committed.
    pub work: std::sync::Arc<tokio::sync::Notify>,
    /// Another instance asked the planner to plan.
    pub plan: std::sync::Arc<tokio::sync::Notify>,
}

/// Who claims a message and until when the claim holds unless renewed.
#[derive(Debug, Clone)]
pub struct ClaimLease {
    pub holder: String,
    pub until: DateTime<Utc>,
}

/// How many of each thing the store holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreCounts {
    pub borrowers: u64,
    pub loans: u64,
    pub loans_active: u64,
    pub loans_paid: u64,
    pub payments: u64,
    pub contact_points: u64,
    pub messages: u64,
    pub imports: u64,
}

/// What a bulk change wrote (`Store::refresh_statistics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkChange {
    /// An import: borrowers, loans, contact points, holds, payments.
    Book,
    /// A planning pass: messages and the loans they carry.
    Plan,
}

/// Rows a change must write before the planner's statistics are refreshed.
pub const BULK_ROWS: u64 = 1000;

/// The store interface. Methods take `now` from the caller's clock: the
/// store never reads the wall clock itself.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Opens a transaction that applies one import file. Dropping it without
    /// `commit` rolls everything back, so a failed or killed import leaves
    /// the store as it was before that file.
    async fn begin_import(&self, now: DateTime<Utc>) -> Result<Box<dyn ImportTx>, StoreError>;
    /// Refreshes the query planner's statistics after a bulk change.
    /// PostgreSQL plans by them, and autovacuum refreshes them only a
    /// minute or more later: until then a claim's join could read every
    /// loan (measured: 4 ms a claim after importing 20,000 loans, half of
    /// the sending time). SQLite's plans for duebell's queries need none.
    async fn refresh_statistics(&self, _change: BulkChange) -> Result<(), StoreError> {
        Ok(())
    }
    /// Content hash of the last import of `path`, to skip unchanged files.
    async fn last_import_hash(&self, path: &str) -> Result<Option<String>, StoreError>;
    async fn counts(&self) -> Result<StoreCounts, StoreError>;
    async fn loan(&self, id: &LoanId) -> Result<Option<LoanView>, StoreError>;
    /// Borrowers with active loans after `after` (by primary key), with
    /// everything planning needs; contacts since `since`. Planning pages
    /// through the book with this, so memory stays bounded.
    async fn planning_batch(
        &self,
        after: i64,
        limit: u32,
        since: DateTime<Utc>,
    ) -> Result<Vec<PlanBorrower>, StoreError>;
    /// Borrowers whose next look (see `record_plan`) is at or before
    /// `now`, after the cursor `after` = (next look, key) in that order,
    /// loaded as `planning_batch` does; with the cursor of the page's last
    /// key. A steady tick reads only these.
    async fn planning_due(
        &self,
        now: DateTime<Utc>,
        after: (i64, i64),
        limit: u32,
        since: DateTime<Utc>,
    ) -> Result<(Vec<PlanBorrower>, Option<(i64, i64)>), StoreError>;
    /// The earliest next look of any borrower.
    async fn next_look_at(&self) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// One borrower by external id, as `planning_batch` loads it.
    async fn plan_borrower(
        &self,
        external_id: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<PlanBorrower>, StoreError>;
    /// Records planner decisions. Idempotent: a message whose dedupe key or
    /// any (loan, due date, step, channel) is already recorded is skipped.
    /// Returns how many were recorded.
    /// With a `fence`, nothing is written unless it is still current.
    /// `looks` sets, in the same transaction, when the planner must next
    /// look at each borrower (by key; `None`: nothing ahead).
    async fn record_plan(
        &self,
        now: DateTime<Utc>,
        messages: &[NewMessage],
        looks: &[(i64, Option<DateTime<Utc>>)],
        fence: Option<&Fence>,
    ) -> Result<u64, StoreError>;
    /// Cancels pending messages that can no longer go (every loan paid or
    /// closed, the contact point opted out, a standing hold); with
    /// `changed_since`, only those reached by such a change stamped since.
    async fn cancel_ineligible(
        &self,
        now: DateTime<Utc>,
        changed_since: Option<DateTime<Utc>>,
        fence: Option<&Fence>,
    ) -> Result<u64, StoreError>;
    /// `cancel_ineligible` for one borrower (external id) an API change touched.
    async fn cancel_ineligible_of(
        &self,
        now: DateTime<Utc>,
        borrower: &str,
    ) -> Result<u64, StoreError>;
    /// Records how claimed sends ended and claims up to `claim.limit` due
    /// messages (oldest first), all in one transaction: a group commit of
    /// the outcomes and the next batch's claims at once.
    ///
    /// Each outcome is ignored unless the message is still `sending` with
    /// that attempt id (a stale worker cannot overwrite); the first answer
    /// says, per item, whether it applied.
    ///
    /// The claims load their messages with their borrowers (one query per
    /// kind of row for the whole batch), ask `decide` for each in order and
    /// apply each verdict (logging the contact on `Send`). A later message
    /// of the same borrower is decided with the contacts the earlier ones
    /// just made, so caps hold within a batch exactly as across batches. A
    /// message sent is held under the lease until it expires or its holder
    /// finishes it; several instances claim without waiting on each other.
    async fn finish_and_claim(
        &self,
        now: DateTime<Utc>,
        items: &[FinishItem],
        claim: Option<ClaimRequest<'_>>,
    ) -> Result<(Vec<bool>, Vec<(ClaimView, Verdict)>), StoreError>;
    /// Claims up to `limit` due messages in one transaction
    /// (`finish_and_claim` with nothing to record). Empty when nothing is
    /// due at `now`.
    async fn claim_batch(
        &self,
        now: DateTime<Utc>,
        since: DateTime<Utc>,
        lease: &ClaimLease,
        limit: usize,
        decide: &(dyn for<'v> Fn(&'v ClaimView) -> Verdict + Send + Sync),
    ) -> Result<Vec<(ClaimView, Verdict)>, StoreError> {
        let claim = ClaimRequest {
            since,
            lease,
            limit,
            decide,
        };
        Ok(self.finish_and_claim(now, &[], Some(claim)).await?.1)
    }
    /// Claims the next due message: `claim_batch` of one.
    async fn claim_next(
        &self,
        now: DateTime<Utc>,
        since: DateTime<Utc>,
        lease: &ClaimLease,
        decide: &(dyn for<'v> Fn(&'v ClaimView) -> Verdict + Send + Sync),
    ) -> Result<Option<(ClaimView, Verdict)>, StoreError> {
        Ok(self
            .claim_batch(now, since, lease, 1, decide)
            .await?
            .into_iter()
            .next())
    }
    /// Records how claimed sends ended, in one transaction
    /// (`finish_and_claim` claiming nothing).
    async fn finish_many(
        &self,
        now: DateTime<Utc>,
        items: &[FinishItem],
    ) -> Result<Vec<bool>, StoreError> {
        Ok(self.finish_and_claim(now, items, None).await?.0)
    }
    /// Records how one claimed send ended: `finish_many` of one.
    async fn finish(
        &self,
        now: DateTime<Utc>,
        message_id: i64,
        attempt_id: &str,
        finish: &Finish,
    ) -> Result<bool, StoreError> {
        let item = FinishItem {
            message_id,
            attempt_id: attempt_id.to_owned(),
            finish: finish.clone(),
        };
        Ok(self.finish_many(now, &[item]).await?.pop().unwrap_or(false))
    }
    /// The earliest `not_before` of a pending message.
    async fn next_pending_at(&self) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// Messages left `sending` whose claim lease ran out by `now` (their
    /// instance died or stopped mid-send), with their attempt ids, for
    /// reconciliation.
    async fn in_flight(&self, now: DateTime<Utc>) -> Result<Vec<InFlight>, StoreError>;
    /// Leaves an unclaimed in-flight message alone until `until` (its
    /// provider could not tell yet; asked again then).
    async fn postpone_reconcile(
        &self,
        id: i64,
        attempt: &str,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Extends the claim leases `holder` has on messages it is sending.
    async fn renew_claims(&self, holder: &str, until: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Ends `holder`'s claim leases at once (a stop cut a send off): the
    /// next reconciliation, by any instance, takes them.
    async fn release_claims(&self, holder: &str) -> Result<u64, StoreError>;
    /// Takes or renews the exclusive `role` for `holder` until `now + ttl`.
    /// `None` while another holder's lease is unexpired, answered without
    /// waiting for that holder's fenced writes.
    async fn acquire_lease(
        &self,
        role: &str,
        holder: &str,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<Option<Fence>, StoreError>;
    /// Gives a role up (a clean stop), so another instance takes it at once.
    async fn release_lease(&self, fence: &Fence) -> Result<(), StoreError>;
    /// The last migration applied.
    async fn schema_version(&self) -> Result<i64, StoreError>;
    /// Which backend this is (`sqlite`, `postgres`).
    fn backend(&self) -> &'static str;
    /// Write transactions one process runs at once to good effect (1: a
    /// single writer; PostgreSQL: half its pool, kept apart by row locks).
    fn write_lanes(&self) -> usize;
    /// Notified when another instance commits new work, or asks the
    /// planner to plan (PostgreSQL `LISTEN`); `None` when the backend cannot
    /// tell (poll instead).
    fn wakeups(&self) -> Option<Wakeups> {
        None
    }
    /// Asks whichever instance holds the planner role to plan now (an
    /// import or API change reached an instance that does not plan).
    async fn request_plan(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// A rate limiter every instance on this store shares; `None`: limits
    /// are per process.
    fn shared_rate(&self) -> Option<std::sync::Arc<dyn crate::shared_rate::SharedRate>> {
        None
    }
    /// Opts a borrower's current contact point on `channel` out (or back in).
    async fn set_opt_out(
        &self,
        now: DateTime<Utc>,
        borrower: &str,
        channel: Channel,
        out: bool,
        source: &str,
    ) -> Result<bool, StoreError>;
    /// Opts out every contact point with this address (inbound STOP).
    async fn opt_out_address(
        &self,
        now: DateTime<Utc>,
        channel: Channel,
        address: &str,
        source: &str,
    ) -> Result<u64, StoreError>;
    /// Places a hold on a borrower or a loan (by external id).
    async fn add_hold(
        &self,
        now: DateTime<Utc>,
        borrower: Option<&str>,
        loan: Option<&str>,
        kind: crate::domain::HoldKind,
        until: Option<NaiveDate>,
    ) -> Result<Option<i64>, StoreError>;
    /// Clears an active hold.
    async fn clear_hold(&self, now: DateTime<Utc>, id: i64) -> Result<bool, StoreError>;
    /// Opts out the contact point a message was addressed to (one-click
    /// unsubscribe). Returns whether anything changed.
    async fn opt_out_message_contact(
        &self,
        now: DateTime<Utc>,
        message_id: i64,
        source: &str,
    ) -> Result<bool, StoreError>;
    /// A message's state history.
    async fn message_events(&self, message_id: i64) -> Result<Vec<MessageEvent>, StoreError>;
    /// Contacts made since `since`.
    async fn sent_since(&self, since: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Message counts by (state, channel, provider, reason).
    #[allow(clippy::type_complexity)]
    async fn message_breakdown(
        &self,
    ) -> Result<
        Vec<(
            MessageState,
            Channel,
            Option<String>,
            Option<crate::reason::Reason>,
            u64,
        )>,
        StoreError,
    >;
    /// Applies a delivery receipt: `sent` → `delivered` or `undelivered`.
    /// It applies to the message `provider` recorded as `provider_ref`; when
    /// the provider also echoes our id (`ours`), to that message only if it
    /// agrees: its recorded reference is `provider_ref`, or (a send cut off
    /// before the reference was stored) it has none yet, is `sending` or
    /// `unknown`, and no other provider took it. Receipts repeat; a repeat
    /// changes nothing. Returns whether a message changed.
    async fn receipt(
        &self,
        now: DateTime<Utc>,
        provider: &str,
        ours: Option<i64>,
        provider_ref: &str,
        delivered: bool,
        detail: &str,
    ) -> Result<bool, StoreError>;
    /// Opts every contact point with this address back in (inbound START).
    async fn opt_in_address(
        &self,
        now: DateTime<Utc>,
        channel: Channel,
        address: &str,
        source: &str,
    ) -> Result<u64, StoreError>;
    /// Lifts a hard-bounce suppression: the address is valid again on every
    /// contact point that has it. Returns how many were suppressed.
    async fn lift_bounce(
        &self,
        now: DateTime<Utc>,
        channel: Channel,
        address: &str,
    ) -> Result<u64, StoreError>;
    /// Applies a bounce or complaint read from a bounce mailbox, once per
    /// report: a hard bounce marks the address invalid on every contact
    /// point that has it (and the message `undelivered`); soft bounces
    /// suppress it when `soft_limit` fall within `soft_window`; a complaint
    /// opts it out.
    async fn record_bounce(
        &self,
        now: DateTime<Utc>,
        bounce: &BounceRecord<'_>,
    ) -> Result<BounceOutcome, StoreError>;
    /// Bounces and complaints recorded against a borrower's messages.
    async fn bounces(&self, borrower: &str) -> Result<Vec<BounceRow>, StoreError>;
    /// An operator's decision on an `unknown` (or `failed`) message:
    /// `release` plans it again for now, otherwise it is cancelled.
    async fn operator_decide(
        &self,
        now: DateTime<Utc>,
        message_id: i64,
        release: bool,
    ) -> Result<Option<MessageState>, StoreError>;
    /// A deployment-wide secret: `fresh` is kept if none was stored yet
    /// (concurrent first starts agree on one), and the kept value returned.
    async fn secret(
        &self,
        name: &str,
        fresh: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Vec<u8>, StoreError>;
    async fn messages(&self, query: &MessageQuery) -> Result<Vec<MessageView>, StoreError>;
    /// Message counts by state.
    async fn message_counts(&self) -> Result<Vec<(MessageState, u64)>, StoreError>;
    /// Pending hand-offs due at `now`: (id, loan external id, borrower external id, due date, step, attempts).
    async fn due_handoffs(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(i64, String, String, NaiveDate, String, i64)>, StoreError>;
    async fn finish_handoff(
        &self,
        now: DateTime<Utc>,
        id: i64,
        result: Result<(), (String, Option<DateTime<Utc>>)>,
    ) -> Result<(), StoreError>;
    /// The offer of (loan, due date, step): the one made first, or one made
    /// now with `terms`.
    async fn offer_for(
        &self,
        now: DateTime<Utc>,
        loan: i64,
        due_date: NaiveDate,
        step: &str,
        terms: &crate::domain::OfferTerms,
    ) -> Result<OfferRow, StoreError>;
    /// Offers to settle: open ones, and expired or void ones whose deadline
    /// is after `since` (a payment made in time may be imported late).
    async fn offers_to_settle(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<OfferToSettle>, StoreError>;
    /// Moves an offer to `state` (never out of `taken`); a taken offer's
    /// event becomes due, and its loan is settled (waiver, discount) or put
    /// on a hardship hold (plan), in one transaction. False if unchanged.
    async fn settle_offer(
        &self,
        now: DateTime<Utc>,
        id: i64,
        state: crate::domain::OfferState,
        at: DateTime<Utc>,
        payment_ids: &[String],
    ) -> Result<bool, StoreError>;
    /// Taken offers whose event is due to be posted.
    async fn due_offer_events(&self, now: DateTime<Utc>) -> Result<Vec<OfferRow>, StoreError>;
    async fn finish_offer_event(
        &self,
        now: DateTime<Utc>,
        id: i64,
        result: Result<(), (String, Option<DateTime<Utc>>)>,
    ) -> Result<(), StoreError>;
    /// Every offer, or one borrower's, oldest first.
    async fn offers(&self, borrower: Option<&str>) -> Result<Vec<OfferRow>, StoreError>;
    /// Every contact attempt (a claim to `sending`) in `[from, to)`, in order.
    async fn audit(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<AuditRow>, StoreError>;
    /// Writes a consistent copy of the store to `path` (simulate's scratch copy).
    async fn snapshot_to(&self, path: &std::path::Path) -> Result<(), StoreError>;
    /// Checks the store answers (for readiness).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Flushes and closes connections.
    async fn close(&self);
    /// The pool, for the console's rows (`store/console.rs`).
    fn db(&self) -> Db;
}

/// One import's transaction.
#[async_trait]
pub trait ImportTx: Send {
    /// Upserts borrowers, their contact points and loans, by external id.
    /// Returns one outcome per row, in order.
    async fn upsert_loans(&mut self, rows: &[LoanBookRow]) -> Result<Vec<RowOutcome>, StoreError>;
    /// Upserts payments by external id; a loan whose payments cover its
    /// amount due becomes `paid`.
    async fn upsert_payments(&mut self, rows: &[PaymentRow])
        -> Result<Vec<RowOutcome>, StoreError>;
    /// Of `keys`, those `mark_seen` marked earlier in this import, with the
    /// line and the text they were marked with. The import keeps what a
    /// file has shown so far (its row keys, each borrower's first row) here,
    /// in its own transaction, rather than in memory.
    async fn seen_before(
        &mut self,
        keys: &[String],
    ) -> Result<std::collections::HashMap<String, (u64, Option<String>)>, StoreError>;
    /// Marks keys as seen in this import (a key marked already keeps its
    /// first mark).
    async fn mark_seen(
        &mut self,
        marks: &[(String, u64, Option<String>)],
    ) -> Result<(), StoreError>;
    async fn record(&mut self, record: &ImportRecord) -> Result<(), StoreError>;
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

/// Opens (creating and migrating if needed) the store the config names.
pub async fn open(config: &StoreConfig) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if config.sqlite_path().is_some() {
        Ok(std::sync::Arc::new(SqliteStore::open(config).await?))
    } else if config.is_postgres() {
        Ok(std::sync::Arc::new(PgStore::open(config).await?))
    } else {
        Err(StoreError::Unsupported(format!(
            "store.url `{}` names a backend this build does not have; use sqlite://PATH or postgres://…",
            config.url
        )))
    }
}

/// Milliseconds since the epoch: how instants are stored.
pub(crate) fn to_millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_millis(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| StoreError::Corrupt(format!("instant {ms}")))
}

/// The status a loan should have: the book's (or the stored) status, except
/// that an active loan whose payments cover the amount due is paid.
pub(crate) fn effective_status(
    base: LoanStatus,
    amount_due: rust_decimal::Decimal,
    paid_total: rust_decimal::Decimal,
) -> LoanStatus {
    if base == LoanStatus::Active && paid_total >= amount_due {
        LoanStatus::Paid
    } else {
        base
    }
}
