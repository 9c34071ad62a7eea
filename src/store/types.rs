//! Values the planner and dispatcher exchange with the store.

use chrono::{DateTime, NaiveDate, Utc};

use crate::compliance::caps::Contact;
use crate::domain::{Channel, HoldKind, Money};
use crate::reason::Reason;

/// The lifecycle of a message. Every transition is stored with its reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    Planned,
    Deferred,
    Sending,
    Sent,
    Delivered,
    Undelivered,
    Failed,
    Suppressed,
    Cancelled,
    Expired,
    Unknown,
}

impl MessageState {
    pub const ALL: [MessageState; 11] = [
        MessageState::Planned,
        MessageState::Deferred,
        MessageState::Sending,
        MessageState::Sent,
        MessageState::Delivered,
        MessageState::Undelivered,
        MessageState::Failed,
        MessageState::Suppressed,
        MessageState::Cancelled,
        MessageState::Expired,
        MessageState::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Planned => "planned",
            MessageState::Deferred => "deferred",
            MessageState::Sending => "sending",
            MessageState::Sent => "sent",
            MessageState::Delivered => "delivered",
            MessageState::Undelivered => "undelivered",
            MessageState::Failed => "failed",
            MessageState::Suppressed => "suppressed",
            MessageState::Cancelled => "cancelled",
            MessageState::Expired => "expired",
            MessageState::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// Waiting to be claimed.
    pub fn is_pending(self) -> bool {
        matches!(self, MessageState::Planned | MessageState::Deferred)
    }
}

impl std::fmt::Display for MessageState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A contact point as the planner and dispatcher see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactView {
    pub id: i64,
    pub channel: Channel,
    pub address: String,
    pub opted_out: bool,
    pub invalid: bool,
    /// ISO region of a phone number (`CN`, `US`), when known.
    pub region: Option<String>,
}

/// An active hold on a borrower (loan `None`) or one loan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldView {
    pub kind: HoldKind,
    pub loan: Option<i64>,
    /// Last local date the hold covers; `None` until cleared.
    pub until: Option<NaiveDate>,
}

/// A loan as the planner and dispatcher see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoanRow {
    pub pk: i64,
    pub external_id: String,
    pub due_date: NaiveDate,
    pub amount_due: Money,
    pub status: crate::domain::LoanStatus,
    pub created_at: DateTime<Utc>,
    /// In a claimed message: the step this loan is in it for.
    pub step: Option<String>,
}

/// A borrower with everything planning needs, loaded in one batch.
#[derive(Debug, Clone)]
pub struct PlanBorrower {
    pub pk: i64,
    pub external_id: String,
    pub name: String,
    pub locale: Option<String>,
    pub timezone: Option<String>,
    /// When the planner last said it must look again (`None`: nothing
    /// ahead); a pass writes it only when its answer differs.
    pub next_look: Option<DateTime<Utc>>,
    pub contacts: Vec<ContactView>,
    pub holds: Vec<HoldView>,
    /// Active loans only.
    pub loans: Vec<LoanRow>,
    /// (loan pk, due date, step, channel) already planned, ever.
    pub planned: Vec<(i64, NaiveDate, String, Channel)>,
    /// Contacts made recently (as far back as the caps look).
    pub recent: Vec<Contact>,
}

impl PlanBorrower {
    pub fn contact(&self, channel: Channel) -> Option<&ContactView> {
        self.contacts.iter().find(|c| c.channel == channel)
    }
}

/// A message the planner decided on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub dedupe_key: String,
    pub borrower_pk: i64,
    pub contact_point: Option<i64>,
    pub channel: Channel,
    pub step: String,
    pub template: String,
    pub state: MessageState,
    pub reason: Reason,
    pub not_before: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// (loan pk, due date, step of that loan).
    pub loans: Vec<(i64, NaiveDate, String)>,
    /// Post a hand-off for these (loan pk, due date, step).
    pub handoffs: Vec<(i64, NaiveDate, String)>,
}

/// A message the dispatcher is looking at, inside the claim transaction.
#[derive(Debug, Clone)]
pub struct ClaimView {
    pub message_id: i64,
    pub state: MessageState,
    pub channel: Channel,
    pub step: String,
    pub template: String,
    pub not_before: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub attempts: i64,
    pub borrower: PlanBorrower,
    /// This message's contact point (also when no longer active).
    pub contact: Option<ContactView>,
    /// This message's loans, whatever their status now.
    pub loans: Vec<LoanRow>,
}

/// What the dispatcher decided inside the claim transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Mark `sending` with this attempt id and log the contact.
    Send {
        attempt_id: String,
        loans: Vec<i64>,
        window: String,
    },
    Defer {
        until: DateTime<Utc>,
        reason: Reason,
    },
    Cancel {
        reason: Reason,
    },
    Expire {
        reason: Reason,
    },
}

/// A message left `sending` (a crash, a dead instance, or a send that timed
/// out after the request went out), for reconciliation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    pub id: i64,
    pub attempt: String,
    pub channel: Channel,
    /// The provider that handled the attempt, when known (a timeout).
    pub provider: Option<String>,
    /// The contact point's address.
    pub address: Option<String>,
    /// When the attempt was claimed.
    pub since: DateTime<Utc>,
}

/// What `Store::finish_and_claim` is to claim: up to `limit` due messages,
/// each decided by `decide` against the contacts since `since`, sent ones
/// held under `lease`.
pub struct ClaimRequest<'a> {
    pub since: DateTime<Utc>,
    pub lease: &'a super::ClaimLease,
    pub limit: usize,
    pub decide: &'a (dyn for<'v> Fn(&'v ClaimView) -> Verdict + Send + Sync),
}

/// One claimed send's outcome, for `Store::finish_many`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishItem {
    pub message_id: i64,
    /// The attempt id the claim gave it.
    pub attempt_id: String,
    pub finish: Finish,
}

/// How a send ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    Sent {
        provider: String,
        provider_ref: String,
        template_version: String,
        subject: Option<String>,
        body: String,
    },
    /// Try again at `at` (transient failure); the contact is un-logged.
    Retry {
        at: DateTime<Utc>,
        provider: String,
        reason: Reason,
    },
    Failed {
        provider: String,
        reason: Reason,
    },
    /// The recipient refused at the provider: suppressed, and the contact
    /// point opted out.
    OptedOut {
        provider: String,
        reason: Reason,
    },
    /// The address does not exist or refuses all our mail (a hard bounce
    /// at send time): failed, and the address marked invalid on every
    /// contact point that has it, until an operator lifts it.
    Bounced {
        provider: String,
        reason: Reason,
    },
    /// The provider's answer never came after the request went out: the
    /// message stays `sending`, released at once for reconciliation, which
    /// asks `provider` what became of it.
    Ambiguous {
        provider: String,
        reason: Reason,
    },
    /// Rendering failed: nothing was sent.
    NotRendered {
        reason: Reason,
    },
    Unknown {
        reason: Reason,
    },
    /// An interrupted send goes back to `planned` to be sent again under
    /// the same idempotency key: every provider of its channel drops a
    /// repeat, so the borrower still gets it once. The contact is un-logged
    /// (the new claim logs it again).
    Replay {
        reason: Reason,
    },
    /// Claimed ahead and never handed to a provider (the sending loop
    /// stopped first): back to `planned` as if never claimed, the contact
    /// un-logged and the attempt not counted.
    Release {
        reason: Reason,
    },
}

/// A message for listings and the audit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MessageView {
    pub id: i64,
    pub borrower_id: String,
    pub loan_ids: Vec<String>,
    pub channel: Channel,
    pub step: String,
    pub template: String,
    pub template_version: Option<String>,
    pub state: MessageState,
    pub reason: Option<String>,
    pub not_before: DateTime<Utc>,
    pub provider: Option<String>,
    pub address: Option<String>,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// Filters for listing messages.
#[derive(Debug, Clone, Default)]
pub struct MessageQuery {
    pub state: Option<MessageState>,
    pub borrower: Option<String>,
    pub limit: Option<u32>,
}

/// One contact attempt, for `duebell audit`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditRow {
    pub message_id: i64,
    pub attempt: i64,
    pub borrower_id: String,
    pub borrower_timezone: Option<String>,
    pub channel: Channel,
    /// The full address; masked by the audit command before output.
    pub address: Option<String>,
    /// The borrower's current phone, whatever the channel: with the stated
    /// zone, what the gate resolves the borrower's zones from.
    pub borrower_phone: Option<String>,
    pub step: String,
    pub template: String,
    pub template_version: Option<String>,
    pub loan_ids: Vec<String>,
    pub at: DateTime<Utc>,
    /// Which window and caps allowed the attempt.
    pub allowed_by: String,
    /// The state the attempt ended in (`sending` if still in flight).
    pub outcome: MessageState,
    pub outcome_reason: String,
    pub provider: Option<String>,
}

/// One state change of a message.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MessageEvent {
    pub at: DateTime<Utc>,
    pub from: Option<MessageState>,
    pub to: MessageState,
    pub reason: Option<String>,
}

/// A repayment offer as stored (README: Offers).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OfferRow {
    pub id: i64,
    pub loan_pk: i64,
    pub loan_id: String,
    pub borrower_id: String,
    pub due_date: NaiveDate,
    pub step: String,
    pub terms: crate::domain::OfferTerms,
    pub made_at: DateTime<Utc>,
    pub state: crate::domain::OfferState,
    pub settled_at: Option<DateTime<Utc>>,
    /// The payments that took it.
    pub payment_ids: Vec<String>,
    /// The lender's event: none, pending, delivered or failed.
    pub event_state: String,
    pub event_attempts: i64,
}

/// An offer to settle, with what settling needs.
#[derive(Debug, Clone)]
pub struct OfferToSettle {
    pub offer: OfferRow,
    /// A message carrying it was sent (or delivered).
    pub shown: bool,
    /// Payments on its loan from its making to its deadline: (id, amount, paid at).
    pub payments: Vec<(String, rust_decimal::Decimal, DateTime<Utc>)>,
}

/// A bounce or complaint read from a bounce mailbox, to be applied once
/// (README: Bounces).
#[derive(Debug, Clone)]
pub struct BounceRecord<'a> {
    /// SHA-256 of the raw mail: a report read twice is applied once.
    pub digest: &'a str,
    /// The SMTP provider whose mailbox it came from.
    pub mailbox: &'a str,
    /// Our message, from the verified Return-Path token.
    pub message_id: i64,
    /// `hard`, `soft` or `complaint`.
    pub class: &'a str,
    pub status: &'a str,
    /// `dsn`, `arf` or `text`.
    pub format: &'a str,
    pub reason: &'a str,
    /// Soft bounces (not lifted) within `soft_window` that suppress.
    pub soft_limit: u32,
    pub soft_window: chrono::Duration,
}

/// What recording a bounce did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BounceOutcome {
    /// This report was applied before (read again after a crash, or by
    /// another instance).
    Seen,
    /// The token names no message with a contact point.
    NoMessage,
    Recorded {
        address: String,
        /// `hard_bounce`, `soft_bounces` or `complaint` when this report
        /// newly suppressed or opted out the address.
        suppressed: Option<&'static str>,
        /// Soft bounces counted within the window, this one included.
        soft_count: i64,
    },
}

/// A recorded bounce or complaint (the borrower timeline).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BounceRow {
    pub message_id: Option<i64>,
    pub mailbox: String,
    pub channel: String,
    pub address: String,
    pub class: String,
    pub status: String,
    pub format: String,
    pub reason: String,
    pub at: DateTime<Utc>,
    pub lifted_at: Option<DateTime<Utc>>,
}

/// A loan as stored, with its borrower's external id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoanView {
    pub id: crate::domain::LoanId,
    pub borrower_id: String,
    pub due_date: NaiveDate,
    pub amount_due: Money,
    pub status: crate::domain::LoanStatus,
    pub paid_total: rust_decimal::Decimal,
}
