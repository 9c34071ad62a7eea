//! The one `Store` implementation: every backend (`Backend`) is a store.
//! The backend's own methods (imports, planning writes, leases, snapshots,
//! what only PostgreSQL can do) go to its `Backend` impl; the rest are
//! written once, generic over the backend, in `common.rs`,
//! `common_book.rs` and `common_outcomes.rs`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use chrono::NaiveDate;

use super::backend::Backend;
use super::{
    AuditRow, BulkChange, ClaimView, Db, Fence, FinishItem, ImportTx, LoanView, MessageQuery,
    MessageState, MessageView, NewMessage, PlanBorrower, Store, StoreCounts, StoreError, Verdict,
    Wakeups,
};
use crate::domain::LoanId;

#[async_trait]
impl<B: Backend> Store for B {
    fn db(&self) -> Db {
        Backend::db(self)
    }

    async fn begin_import(&self, now: DateTime<Utc>) -> Result<Box<dyn ImportTx>, StoreError> {
        Backend::begin_import(self, now).await
    }

    async fn refresh_statistics(&self, change: BulkChange) -> Result<(), StoreError> {
        Backend::refresh_statistics(self, change).await
    }

    async fn record_plan(
        &self,
        now: DateTime<Utc>,
        messages: &[NewMessage],
        looks: &[(i64, Option<DateTime<Utc>>)],
        fence: Option<&Fence>,
    ) -> Result<u64, StoreError> {
        Backend::record_plan(self, now, messages, looks, fence).await
    }

    async fn acquire_lease(
        &self,
        role: &str,
        holder: &str,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<Option<Fence>, StoreError> {
        super::leases::acquire_lease(self, role, holder, now, ttl).await
    }

    fn backend(&self) -> &'static str {
        Backend::backend(self)
    }

    fn write_lanes(&self) -> usize {
        Backend::write_lanes(self)
    }

    fn wakeups(&self) -> Option<Wakeups> {
        Backend::wakeups(self)
    }

    async fn request_plan(&self) -> Result<(), StoreError> {
        Backend::request_plan(self).await
    }

    fn shared_rate(&self) -> Option<std::sync::Arc<dyn crate::shared_rate::SharedRate>> {
        Backend::shared_rate(self)
    }

    async fn snapshot_to(&self, path: &std::path::Path) -> Result<(), StoreError> {
        Backend::snapshot_to(self, path).await
    }

    async fn close(&self) {
        Backend::close(self).await
    }

    async fn last_import_hash(&self, path: &str) -> Result<Option<String>, StoreError> {
        super::common::last_import_hash(self, path).await
    }

    async fn counts(&self) -> Result<StoreCounts, StoreError> {
        super::common::counts(self).await
    }

    async fn loan(&self, id: &LoanId) -> Result<Option<LoanView>, StoreError> {
        super::common::loan(self, id).await
    }

    async fn planning_batch(
        &self,
        after: i64,
        limit: u32,
        since: DateTime<Utc>,
    ) -> Result<Vec<PlanBorrower>, StoreError> {
        super::common::planning_batch(self, after, limit, since).await
    }

    async fn planning_due(
        &self,
        now: DateTime<Utc>,
        after: (i64, i64),
        limit: u32,
        since: DateTime<Utc>,
    ) -> Result<(Vec<PlanBorrower>, Option<(i64, i64)>), StoreError> {
        super::common::planning_due(self, now, after, limit, since).await
    }

    async fn next_look_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        super::common::next_look_at(self).await
    }

    async fn plan_borrower(
        &self,
        external_id: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<PlanBorrower>, StoreError> {
        super::common::plan_borrower(self, external_id, since).await
    }

    async fn next_pending_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        super::common::next_pending_at(self).await
    }

    async fn in_flight(&self, now: DateTime<Utc>) -> Result<Vec<super::InFlight>, StoreError> {
        super::common::in_flight(self, now).await
    }

    async fn postpone_reconcile(
        &self,
        id: i64,
        attempt: &str,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        super::common::postpone_reconcile(self, id, attempt, until).await
    }

    async fn renew_claims(&self, holder: &str, until: DateTime<Utc>) -> Result<u64, StoreError> {
        super::leases::renew_claims(self, holder, until).await
    }

    async fn release_claims(&self, holder: &str) -> Result<u64, StoreError> {
        super::leases::release_claims(self, holder).await
    }

    async fn release_lease(&self, fence: &Fence) -> Result<(), StoreError> {
        super::leases::release_lease(self, fence).await
    }

    async fn schema_version(&self) -> Result<i64, StoreError> {
        super::common::schema_version(self).await
    }

    async fn message_events(
        &self,
        message_id: i64,
    ) -> Result<Vec<super::MessageEvent>, StoreError> {
        super::common::message_events(self, message_id).await
    }

    async fn sent_since(&self, since: DateTime<Utc>) -> Result<u64, StoreError> {
        super::common::sent_since(self, since).await
    }

    async fn message_breakdown(
        &self,
    ) -> Result<
        Vec<(
            MessageState,
            crate::domain::Channel,
            Option<String>,
            Option<crate::reason::Reason>,
            u64,
        )>,
        StoreError,
    > {
        super::common::message_breakdown(self).await
    }

    async fn messages(&self, query: &MessageQuery) -> Result<Vec<MessageView>, StoreError> {
        super::common::messages(self, query).await
    }

    async fn message_counts(&self) -> Result<Vec<(MessageState, u64)>, StoreError> {
        super::common::message_counts(self).await
    }

    async fn due_handoffs(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(i64, String, String, NaiveDate, String, i64)>, StoreError> {
        super::common::due_handoffs(self, now).await
    }

    async fn finish_handoff(
        &self,
        now: DateTime<Utc>,
        id: i64,
        result: Result<(), (String, Option<DateTime<Utc>>)>,
    ) -> Result<(), StoreError> {
        super::common::finish_handoff(self, now, id, result).await
    }

    async fn audit(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<AuditRow>, StoreError> {
        super::common::audit(self, from, to).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        super::common::ping(self).await
    }

    async fn set_opt_out(
        &self,
        now: DateTime<Utc>,
        borrower: &str,
        channel: crate::domain::Channel,
        out: bool,
        source: &str,
    ) -> Result<bool, StoreError> {
        super::common_book::set_opt_out(self, now, borrower, channel, out, source).await
    }

    async fn opt_out_address(
        &self,
        now: DateTime<Utc>,
        channel: crate::domain::Channel,
        address: &str,
        source: &str,
    ) -> Result<u64, StoreError> {
        super::common_book::opt_out_address(self, now, channel, address, source).await
    }

    async fn add_hold(
        &self,
        now: DateTime<Utc>,
        borrower: Option<&str>,
        loan: Option<&str>,
        kind: crate::domain::HoldKind,
        until: Option<NaiveDate>,
    ) -> Result<Option<i64>, StoreError> {
        super::common_book::add_hold(self, now, borrower, loan, kind, until).await
    }

    async fn clear_hold(&self, now: DateTime<Utc>, id: i64) -> Result<bool, StoreError> {
        super::common_book::clear_hold(self, now, id).await
    }

    async fn opt_out_message_contact(
        &self,
        now: DateTime<Utc>,
        message_id: i64,
        source: &str,
    ) -> Result<bool, StoreError> {
        super::common_book::opt_out_message_contact(self, now, message_id, source).await
    }

    async fn opt_in_address(
        &self,
        now: DateTime<Utc>,
        channel: crate::domain::Channel,
        address: &str,
        source: &str,
    ) -> Result<u64, StoreError> {
        super::common_book::opt_in_address(self, now, channel, address, source).await
    }

    async fn secret(
        &self,
        name: &str,
        fresh: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Vec<u8>, StoreError> {
        super::common_book::secret(self, name, fresh, now).await
    }

    async fn lift_bounce(
        &self,
        now: DateTime<Utc>,
        channel: crate::domain::Channel,
        address: &str,
    ) -> Result<u64, StoreError> {
        super::common_book::lift_bounce(self, now, channel, address).await
    }

    async fn offer_for(
        &self,
        now: DateTime<Utc>,
        loan: i64,
        due_date: NaiveDate,
        step: &str,
        terms: &crate::domain::OfferTerms,
    ) -> Result<super::OfferRow, StoreError> {
        super::common_book::offer_for(self, now, loan, due_date, step, terms).await
    }

    async fn offers_to_settle(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<super::OfferToSettle>, StoreError> {
        super::common_book::offers_to_settle(self, since).await
    }

    async fn settle_offer(
        &self,
        now: DateTime<Utc>,
        id: i64,
        state: crate::domain::OfferState,
        at: DateTime<Utc>,
        payment_ids: &[String],
    ) -> Result<bool, StoreError> {
        super::common_book::settle_offer(self, now, id, state, at, payment_ids).await
    }

    async fn due_offer_events(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<super::OfferRow>, StoreError> {
        super::common_book::due_offer_events(self, now).await
    }

    async fn finish_offer_event(
        &self,
        now: DateTime<Utc>,
        id: i64,
        result: Result<(), (String, Option<DateTime<Utc>>)>,
    ) -> Result<(), StoreError> {
        super::common_book::finish_offer_event(self, now, id, result).await
    }

    async fn offers(&self, borrower: Option<&str>) -> Result<Vec<super::OfferRow>, StoreError> {
        super::common_book::offers(self, borrower).await
    }

    async fn finish_and_claim(
        &self,
        now: DateTime<Utc>,
        items: &[FinishItem],
        claim: Option<super::ClaimRequest<'_>>,
    ) -> Result<(Vec<bool>, Vec<(ClaimView, Verdict)>), StoreError> {
        Backend::finish_and_claim(self, now, items, claim).await
    }

    async fn receipt(
        &self,
        now: DateTime<Utc>,
        provider: &str,
        ours: Option<i64>,
        provider_ref: &str,
        delivered: bool,
        detail: &str,
    ) -> Result<bool, StoreError> {
        super::common_outcomes::receipt(self, now, provider, ours, provider_ref, delivered, detail)
            .await
    }

    async fn operator_decide(
        &self,
        now: DateTime<Utc>,
        message_id: i64,
        release: bool,
    ) -> Result<Option<MessageState>, StoreError> {
        super::common_outcomes::operator_decide(self, now, message_id, release).await
    }

    async fn cancel_ineligible(
        &self,
        now: DateTime<Utc>,
        changed_since: Option<DateTime<Utc>>,
        fence: Option<&Fence>,
    ) -> Result<u64, StoreError> {
        super::common_outcomes::cancel_ineligible(self, now, changed_since, fence).await
    }

    async fn cancel_ineligible_of(
        &self,
        now: DateTime<Utc>,
        borrower: &str,
    ) -> Result<u64, StoreError> {
        super::common_outcomes::cancel_ineligible_of(self, now, borrower).await
    }

    async fn record_bounce(
        &self,
        now: DateTime<Utc>,
        b: &super::BounceRecord<'_>,
    ) -> Result<super::BounceOutcome, StoreError> {
        super::common_outcomes::record_bounce(self, now, b).await
    }

    async fn bounces(&self, borrower: &str) -> Result<Vec<super::BounceRow>, StoreError> {
        super::common_outcomes::bounces(self, borrower).await
    }
}
