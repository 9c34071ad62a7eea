//! The planner: on each tick, for every borrower with active loans, decides
//! which reminder step is due on each loan in the borrower's local calendar,
//! and records that decision (planned, deferred, suppressed or expired) with
//! its reason. Each (loan, due date, step, channel) is decided once, ever.
//! Loans of one borrower due on the same channel in the same tick go out as
//! one message. The book is read in pages, so memory does not grow with it.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::compliance::caps::{self, Subject};
use crate::compliance::zones::ZoneSet;
use crate::compliance::Gate;
use crate::domain::Channel;
use crate::eligibility;
use crate::policy::{PolicyConfig, Step};
use crate::reason::Reason;
use crate::store::{LoanRow, MessageState, NewMessage, PlanBorrower};

/// Borrowers per page.
pub const PAGE: u32 = 500;

/// One line of `duebell plan`: a decision with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanLine {
    pub loan_id: String,
    pub borrower_id: String,
    pub step: Option<String>,
    pub channel: Option<Channel>,
    pub decision: Decision,
    pub reason: Reason,
    pub not_before: Option<DateTime<Utc>>,
    /// The repayment offer the step's message will make, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offer: Option<String>,
}

/// What the planner decided for a (loan, step, channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Goes out at `not_before` (now, or the step's preferred time).
    Due,
    /// Waits for quiet hours or a cap.
    Deferred,
    /// Will not go (paid, hold, opted out, no address).
    Suppressed,
    /// Its window passed before it could go.
    Expired,
    /// Decided on an earlier tick.
    AlreadyPlanned,
    /// No step is due today.
    NothingDue,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Due => "due",
            Decision::Deferred => "deferred",
            Decision::Suppressed => "suppressed",
            Decision::Expired => "expired",
            Decision::AlreadyPlanned => "already_planned",
            Decision::NothingDue => "nothing_due",
        }
    }
}

/// The planner's rules: policy, gate, default zone.
pub struct Planner<'a> {
    pub policy: &'a PolicyConfig,
    pub gate: &'a Gate,
    pub default_tz: Tz,
}

/// A loan's step due on a channel, before consolidation.
struct Item<'a> {
    loan: &'a LoanRow,
    step: &'a Step,
    channel: Channel,
    expires_at: DateTime<Utc>,
}

/// First instant of local `date` + `minutes` in `tz` (gap-safe).
pub fn local_instant(tz: Tz, date: NaiveDate, minutes: u32) -> DateTime<Utc> {
    let day = caps::local_midnight(tz, date);
    if minutes == 0 {
        return day;
    }
    let w = crate::compliance::window::LocalWindow::parse(&format!(
        "{:02}:{:02}-24:00",
        minutes / 60,
        minutes % 60
    ));
    match w {
        Ok(w) => crate::compliance::window::day_intervals(tz, date, &[w])
            .first()
            .map_or(day, |(s, _)| *s),
        Err(_) => day,
    }
}

impl Planner<'_> {
    /// Decides for one borrower at `now`: the messages to record and the
    /// lines `plan` prints.
    pub fn decide(&self, now: DateTime<Utc>, b: &PlanBorrower) -> (Vec<NewMessage>, Vec<PlanLine>) {
        self.decide_as(now, b, true)
    }

    /// The messages `decide` records, without its lines: a tick decides
    /// for every borrower of the book and prints nothing, and the lines
    /// (a reason text and several names for each loan) were most of its
    /// allocations.
    pub fn messages(&self, now: DateTime<Utc>, b: &PlanBorrower) -> Vec<NewMessage> {
        self.decide_as(now, b, false).0
    }

    /// `decide`, with its lines only when `explain`.
    fn decide_as(
        &self,
        now: DateTime<Utc>,
        b: &PlanBorrower,
        explain: bool,
    ) -> (Vec<NewMessage>, Vec<PlanLine>) {
        let zones = eligibility::borrower_zones(b, self.default_tz);
        let tz = zones.primary;
        let today = now.with_timezone(&tz).date_naive();
        let mut messages = Vec::new();
        let mut lines = Vec::new();
        let mut items: Vec<Item<'_>> = Vec::new();
        let planned = |loan: &LoanRow, step: &str, ch: Channel| {
            b.planned
                .iter()
                .any(|(l, d, s, c)| *l == loan.pk && *d == loan.due_date && s == step && *c == ch)
        };
        let line = |loan: &LoanRow,
                    step: Option<&Step>,
                    ch: Option<Channel>,
                    decision,
                    reason: Reason,
                    nb| PlanLine {
            loan_id: loan.external_id.clone(),
            borrower_id: b.external_id.clone(),
            step: step.map(|s| s.id.clone()),
            channel: ch,
            decision,
            offer: step
                .and_then(|s| s.offer.as_ref())
                .filter(|_| matches!(decision, Decision::Due | Decision::Deferred))
                .map(|o| o.summary()),
            reason,
            not_before: nb,
        };

        for loan in &b.loans {
            let days = (today - loan.due_date).num_days();
            let pos = self.policy.position(days);
            // Steps whose window passed unsent while the loan was known
            // (the daemon was down): recorded as expired, with why.
            // A step started after the loan was known iff its local day is
            // after the day the loan arrived (local midnight ≥ created_at):
            // compared as dates, without a tz lookup per step.
            let created_day = loan.created_at.with_timezone(&tz).date_naive();
            for step in &pos.passed {
                if loan.due_date + Duration::days(i64::from(step.offset_days)) <= created_day {
                    continue;
                }
                for &ch in &step.channels {
                    if planned(loan, &step.id, ch) {
                        continue;
                    }
                    let reason = Reason::missed(today, days);
                    if explain {
                        lines.push(line(
                            loan,
                            Some(step),
                            Some(ch),
                            Decision::Expired,
                            reason.clone(),
                            None,
                        ));
                    }
                    messages.push(self.message(
                        b,
                        &[(loan, step)],
                        ch,
                        MessageState::Expired,
                        reason,
                        now,
                        None,
                        None,
                    ));
                }
            }
            match pos.current {
                Some((step, end_day)) => {
                    let expires_at = local_instant(tz, loan.due_date + Duration::days(end_day), 0);
                    for &ch in &step.channels {
                        if planned(loan, &step.id, ch) {
                            if explain {
                                lines.push(line(
                                    loan,
                                    Some(step),
                                    Some(ch),
                                    Decision::AlreadyPlanned,
                                    Reason::already_planned(),
                                    None,
                                ));
                            }
                        } else {
                            items.push(Item {
                                loan,
                                step,
                                channel: ch,
                                expires_at,
                            });
                        }
                    }
                }
                None if explain => {
                    let reason = match pos.next {
                        Some(s) => Reason::next_step(
                            &s.id,
                            loan.due_date + Duration::days(i64::from(s.offset_days)),
                        ),
                        None => Reason::past_last_step(),
                    };
                    lines.push(line(loan, None, None, Decision::NothingDue, reason, None));
                }
                None => {}
            }
        }

        // Consolidate per channel; suppressed items stay separate so each
        // keeps its own reason.
        let mut by_channel: BTreeMap<Channel, Vec<&Item<'_>>> = BTreeMap::new();
        for item in &items {
            by_channel.entry(item.channel).or_default().push(item);
        }
        for (ch, group) in by_channel {
            let contact = b.contact(ch);
            let contact_problem = eligibility::contact(contact, ch).err();
            let mut sendable = Vec::new();
            for item in group {
                let why = contact_problem
                    .clone()
                    .or_else(|| eligibility::held(&b.holds, item.loan, today).err());
                match why {
                    Some(reason) => {
                        if explain {
                            lines.push(line(
                                item.loan,
                                Some(item.step),
                                Some(ch),
                                Decision::Suppressed,
                                reason.clone(),
                                None,
                            ));
                        }
                        messages.push(self.message(
                            b,
                            &[(item.loan, item.step)],
                            ch,
                            MessageState::Suppressed,
                            reason,
                            now,
                            None,
                            contact.map(|c| c.id),
                        ));
                    }
                    None => sendable.push(item),
                }
            }
            if sendable.is_empty() {
                continue;
            }
            let lead = sendable
                .iter()
                .max_by_key(|i| i.step.offset_days)
                .map(|i| i.step)
                .expect("non-empty");
            let pairs: Vec<(&LoanRow, &Step)> = sendable.iter().map(|i| (i.loan, i.step)).collect();
            let expires_at = sendable.iter().map(|i| i.expires_at).min();
            let key = dedupe_key(b.pk, ch, &pairs);
            let (state, reason, not_before) = self.schedule(
                now,
                &zones,
                lead,
                ch,
                &key,
                expires_at,
                contact.map(|c| c.id),
                &sendable,
                &b.recent,
            );
            let decision = match state {
                MessageState::Planned => Decision::Due,
                MessageState::Deferred => Decision::Deferred,
                _ => Decision::Expired,
            };
            for i in &sendable {
                if explain {
                    lines.push(line(
                        i.loan,
                        Some(i.step),
                        Some(ch),
                        decision,
                        reason.clone(),
                        Some(not_before),
                    ));
                }
            }
            let mut m = self.message(
                b,
                &pairs,
                ch,
                state,
                reason,
                not_before,
                expires_at,
                contact.map(|c| c.id),
            );
            m.step = lead.id.clone();
            m.template = lead.template.clone();
            m.dedupe_key = key;
            messages.push(m);
        }
        // Hand-offs go with the first recorded message of their loan and
        // step, whatever its channel or state: a loan reaching the step is
        // handed to people even if no message can be sent.
        for m in &mut messages {
            for (loan, due, step) in &m.loans {
                if self.policy.steps.iter().any(|s| s.id == *step && s.handoff) {
                    m.handoffs.push((*loan, *due, step.clone()));
                }
            }
        }
        (messages, lines)
    }

    /// When the planner must next look at a borrower, without new input:
    /// the local midnight (in the zone `decide` dates by) of the first day
    /// on which one of their loans reaches or leaves a step. Until then a
    /// look decides nothing new: each step in its window is recorded the
    /// day it starts (due, deferred, suppressed or expired, all at once),
    /// and what a hold, a payment or a new address changes comes with
    /// input that looks again (an import, the API, a requested pass).
    pub fn next_look(&self, now: DateTime<Utc>, b: &PlanBorrower) -> Option<DateTime<Utc>> {
        let tz = eligibility::borrower_zones(b, self.default_tz).primary;
        let today = now.with_timezone(&tz).date_naive();
        let day = b
            .loans
            .iter()
            .filter_map(|l| {
                let next = self.policy.next_change((today - l.due_date).num_days())?;
                Some(l.due_date + Duration::days(next))
            })
            .min()?;
        // Later than now by construction (a later local day); kept strictly
        // so, whatever the zone data, a pass never finds it due again.
        Some(caps::local_midnight(tz, day).max(now + Duration::milliseconds(1)))
    }

    /// When a due message may go: preferred time, quiet hours, caps, spread.
    #[allow(clippy::too_many_arguments)]
    fn schedule(
        &self,
        now: DateTime<Utc>,
        zones: &ZoneSet,
        step: &Step,
        ch: Channel,
        key: &str,
        expires_at: Option<DateTime<Utc>>,
        contact_point: Option<i64>,
        items: &[&Item<'_>],
        recent: &[caps::Contact],
    ) -> (MessageState, Reason, DateTime<Utc>) {
        let today = now.with_timezone(&zones.primary).date_naive();
        let preferred = step
            .send_at_minutes()
            .map(|m| local_instant(zones.primary, today, m))
            .filter(|t| *t > now);
        let base = preferred.unwrap_or(now);
        let Some((open, end, window)) = self.gate.next_window(ch, zones, base) else {
            return (
                MessageState::Expired,
                Reason::no_window(ch, &zone_names(zones)),
                now,
            );
        };
        let (mut state, mut reason, mut at) = if open > base {
            (
                MessageState::Deferred,
                Reason::quiet_hours(&zone_names(zones))
                    .then(format_args!("; released when {window} opens")),
                self.gate.spread_from(open, end, key),
            )
        } else if preferred.is_some() {
            (
                MessageState::Planned,
                Reason::due(&step.id, Some(step.send_at.as_deref().unwrap_or(""))),
                self.gate.spread_from(base, end, key),
            )
        } else {
            (MessageState::Planned, Reason::due(&step.id, None), now)
        };
        let loans: Vec<i64> = items.iter().map(|i| i.loan.pk).collect();
        let subject = Subject {
            channel: ch,
            contact_point,
            loans: &loans,
        };
        let held_to = self.gate.caps_for(ch, zones);
        if let Some(block) = caps::check_all(&held_to, at, zones.primary, &subject, recent) {
            let next = self
                .gate
                .next_window(ch, zones, block.until)
                .map_or(block.until, |(o, _, _)| o);
            state = MessageState::Deferred;
            reason = Reason::cap_full_until(&block.rule, block.until);
            at = next;
        }
        if let Some(exp) = expires_at {
            if at >= exp {
                return (MessageState::Expired, reason.past_window(exp), now);
            }
        }
        (state, reason, at)
    }

    #[allow(clippy::too_many_arguments)]
    fn message(
        &self,
        b: &PlanBorrower,
        pairs: &[(&LoanRow, &Step)],
        ch: Channel,
        state: MessageState,
        reason: Reason,
        not_before: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
        contact_point: Option<i64>,
    ) -> NewMessage {
        let (_, lead) = pairs[0];
        NewMessage {
            dedupe_key: dedupe_key(b.pk, ch, pairs),
            borrower_pk: b.pk,
            contact_point,
            channel: ch,
            step: lead.id.clone(),
            template: lead.template.clone(),
            state,
            reason,
            not_before,
            expires_at,
            loans: pairs
                .iter()
                .map(|(l, s)| (l.pk, l.due_date, s.id.clone()))
                .collect(),
            handoffs: vec![],
        }
    }
}

fn zone_names(z: &ZoneSet) -> String {
    z.all.iter().map(|t| t.name()).collect::<Vec<_>>().join("+")
}

fn dedupe_key(borrower: i64, ch: Channel, pairs: &[(&LoanRow, &Step)]) -> String {
    let mut parts: Vec<String> = pairs
        .iter()
        .map(|(l, s)| format!("{}@{}/{}", l.pk, l.due_date, s.id))
        .collect();
    parts.sort();
    format!("{borrower}:{ch}:{}", parts.join(","))
}

mod pass;

pub use pass::{preview, replan_borrower, tick, Pass, TickReport};
