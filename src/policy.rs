//! The reminder policy: an ordered ladder of steps by days from the due date,
//! and which step (if any) is relevant on a given local day. A step is
//! relevant from its own day until the next step's day; a pre-due step never
//! on or after the due date; the last step for `last_step_days`.

use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use crate::domain::Channel;

/// `[policy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// When the planner runs: a cron expression with seconds
    /// (`sec min hour day month weekday`), evaluated in UTC.
    pub tick: CronExpr,
    /// How many days the last step stays relevant.
    pub last_step_days: u32,
    pub steps: Vec<Step>,
}

/// One step of the ladder.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub id: String,
    /// Days from the due date: negative before, 0 on the day, positive after.
    pub offset_days: i32,
    pub channels: Vec<Channel>,
    /// Template name (`<name>.sms.j2` for SMS, `<name>/` for email).
    pub template: String,
    /// Tone stage, passed to the template (`friendly`, `firm`, `formal`…).
    pub stage: String,
    /// Preferred local send time, `HH:MM`; without it, as soon as allowed.
    #[serde(default)]
    pub send_at: Option<String>,
    /// Post a hand-off event to manual collection when the loan reaches it.
    #[serde(default)]
    pub handoff: bool,
    /// A repayment offer made with this step's messages (README: Offers).
    #[serde(default)]
    pub offer: Option<crate::domain::OfferConfig>,
}

impl Step {
    /// The preferred send time as minutes from midnight.
    pub fn send_at_minutes(&self) -> Option<u32> {
        let s = self.send_at.as_deref()?;
        let (h, m) = s.split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    }
}

fn step(
    id: &str,
    offset: i32,
    channels: &[Channel],
    template: &str,
    stage: &str,
    handoff: bool,
) -> Step {
    Step {
        id: id.to_owned(),
        offset_days: offset,
        channels: channels.to_vec(),
        template: template.to_owned(),
        stage: stage.to_owned(),
        send_at: Some("10:00".to_owned()),
        handoff,
        offer: None,
    }
}

/// The shipped ladder's one offer: the late fee waived when the rest is
/// paid within 48 hours of the late_3 message.
pub fn shipped_offer() -> crate::domain::OfferConfig {
    crate::domain::OfferConfig {
        kind: crate::domain::OfferKind::FeeWaiver,
        amount: Some("30.00".to_owned()),
        percent: None,
        min_payment: None,
        valid_for: crate::domain::ConfigDuration(std::time::Duration::from_secs(48 * 3600)),
    }
}

impl Default for PolicyConfig {
    /// The humane ladder: gentle before the due date, firmer but never
    /// aggressive after it, a hand-off to people at D+15 and one final
    /// notice at D+30.
    fn default() -> Self {
        use Channel::{Email, Sms};
        PolicyConfig {
            tick: CronExpr::from_str("0 */5 * * * *").expect("literal cron"),
            last_step_days: 7,
            steps: vec![
                step("pre_3", -3, &[Sms], "upcoming", "friendly", false),
                step("pre_1", -1, &[Sms], "tomorrow", "friendly", false),
                step("due", 0, &[Sms, Email], "due_today", "friendly", false),
                step("late_1", 1, &[Sms], "late_gentle", "gentle", false),
                Step {
                    offer: Some(shipped_offer()),
                    ..step("late_3", 3, &[Sms, Email], "late_firm", "firm", false)
                },
                step("late_7", 7, &[Sms], "late_help", "firm", false),
                step("late_15", 15, &[Email], "handoff_notice", "formal", true),
                step("late_30", 30, &[Email], "final_notice", "formal", false),
            ],
        }
    }
}

/// A validated cron expression.
#[derive(Debug, Clone)]
pub struct CronExpr {
    pub text: String,
    pub schedule: cron::Schedule,
}

impl FromStr for CronExpr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        cron::Schedule::from_str(s.trim())
            .map(|schedule| CronExpr { text: s.trim().to_owned(), schedule })
            .map_err(|e| format!("`{s}` is not a cron expression ({e}); write sec min hour day month weekday, e.g. \"0 */5 * * * *\""))
    }
}

impl<'de> Deserialize<'de> for CronExpr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a loan stands on the ladder on a local day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position<'a> {
    /// The step relevant today, with the first day it is no longer relevant
    /// (as days from the due date).
    pub current: Option<(&'a Step, i64)>,
    /// Earlier steps (by index) whose window has passed.
    pub passed: Vec<&'a Step>,
    /// The next step to come, if any.
    pub next: Option<&'a Step>,
}

impl PolicyConfig {
    /// Each step with its window, as days from the due date: from its own
    /// day until the next step's (a pre-due step never on or after the due
    /// date; the last step for `last_step_days`).
    fn windows(&self) -> impl Iterator<Item = (&Step, i64, i64)> {
        self.steps.iter().enumerate().map(|(i, s)| {
            let start = i64::from(s.offset_days);
            let mut end = self
                .steps
                .get(i + 1)
                .map_or(start + i64::from(self.last_step_days), |n| {
                    i64::from(n.offset_days)
                });
            if start < 0 {
                end = end.min(0);
            }
            (s, start, end)
        })
    }

    /// Steps in ladder order (validated to be strictly increasing).
    pub fn position(&self, days_from_due: i64) -> Position<'_> {
        let mut current = None;
        let mut passed = Vec::new();
        let mut next = None;
        for (s, start, end) in self.windows() {
            if days_from_due < start {
                if next.is_none() {
                    next = Some(s);
                }
            } else if days_from_due < end {
                current = Some((s, end));
            } else {
                passed.push(s);
            }
        }
        Position {
            current,
            passed,
            next,
        }
    }

    /// The first day after `days_from_due` on which `position` differs:
    /// a step's first day or the first day after its window. `None` once
    /// past the last step.
    pub fn next_change(&self, days_from_due: i64) -> Option<i64> {
        self.windows()
            .flat_map(|(_, start, end)| [start, end])
            .filter(|d| *d > days_from_due)
            .min()
    }

    /// Cross-field rules, as (key, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut ids = std::collections::HashSet::new();
        for (i, s) in self.steps.iter().enumerate() {
            let key = |f: &str| format!("policy.steps[{i}].{f}");
            if s.id.trim().is_empty()
                || !s
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                problems.push((
                    key("id"),
                    format!("`{}` must be letters, digits, `_` or `-`", s.id),
                ));
            }
            if !ids.insert(s.id.clone()) {
                problems.push((key("id"), format!("`{}` is used by two steps", s.id)));
            }
            if let Some(offer) = &s.offer {
                for (field, message) in offer.validate() {
                    problems.push((key(&format!("offer.{field}")), message));
                }
            }
            if s.channels.is_empty() {
                problems.push((
                    key("channels"),
                    "lists no channel; use [\"sms\"], [\"email\"] or both".to_owned(),
                ));
            }
            if i > 0 && s.offset_days <= self.steps[i - 1].offset_days {
                problems.push((
                    key("offset_days"),
                    format!(
                        "is {} but the step before is at {}; list steps in increasing order",
                        s.offset_days,
                        self.steps[i - 1].offset_days
                    ),
                ));
            }
            if s.send_at.is_some() && s.send_at_minutes().is_none() {
                problems.push((
                    key("send_at"),
                    format!(
                        "`{}` is not a time; write HH:MM",
                        s.send_at.as_deref().unwrap_or("")
                    ),
                ));
            }
            if s.template.trim().is_empty() {
                problems.push((key("template"), "is empty".to_owned()));
            }
        }
        if self.last_step_days == 0 {
            problems.push((
                "policy.last_step_days".to_owned(),
                "must be at least 1".to_owned(),
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_change_is_the_first_day_the_position_differs() {
        let p = PolicyConfig::default();
        for days in -60..60 {
            let next = p.next_change(days);
            // Nothing moves before it, and it moves on it.
            let end = next.unwrap_or(60);
            for d in days + 1..end {
                assert_eq!(p.position(d), p.position(days), "{days}..{d}");
            }
            if let Some(n) = next {
                assert_ne!(p.position(n), p.position(days), "{days} -> {n}");
            }
        }
        assert_eq!(p.next_change(-10), Some(-3));
        assert_eq!(p.next_change(30), Some(37));
        assert_eq!(p.next_change(37), None);
    }

    #[test]
    fn each_day_has_at_most_one_relevant_step() {
        let p = PolicyConfig::default();
        let at = |d: i64| p.position(d).current.map(|(s, _)| s.id.as_str());
        assert_eq!(at(-5), None);
        assert_eq!(at(-3), Some("pre_3"));
        assert_eq!(at(-2), Some("pre_3"));
        assert_eq!(at(-1), Some("pre_1"));
        assert_eq!(at(0), Some("due"));
        assert_eq!(at(2), Some("late_1"));
        assert_eq!(at(14), Some("late_7"));
        assert_eq!(at(30), Some("late_30"));
        assert_eq!(at(36), Some("late_30"));
        assert_eq!(at(37), None);
        assert_eq!(p.position(-5).next.map(|s| s.id.as_str()), Some("pre_3"));
        let pos = p.position(4);
        assert_eq!(
            pos.passed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["pre_3", "pre_1", "due", "late_1"]
        );
    }

    #[test]
    fn a_pre_due_step_is_never_relevant_on_the_due_day() {
        let p = PolicyConfig {
            steps: vec![
                step("pre", -2, &[Channel::Sms], "t", "s", false),
                step("late", 3, &[Channel::Sms], "t", "s", false),
            ],
            ..Default::default()
        };
        assert_eq!(
            p.position(-1).current.map(|(s, end)| (s.id.as_str(), end)),
            Some(("pre", 0))
        );
        assert_eq!(p.position(0).current, None);
    }

    #[test]
    fn the_default_policy_is_valid_and_misordered_steps_are_not() {
        assert!(PolicyConfig::default().validate().is_empty());
        let mut p = PolicyConfig::default();
        p.steps.swap(0, 1);
        assert!(p
            .validate()
            .iter()
            .any(|(k, _)| k == "policy.steps[1].offset_days"));
        assert!("* * *".parse::<CronExpr>().is_err());
    }
}
