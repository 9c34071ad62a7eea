//! Compliance packs: named rule sets for a market, shipped inside the binary
//! (`packs/*.toml`), each a window, caps, required message elements and a
//! ladder limit with the source of every rule. `[compliance] packs` turns
//! them on per country. They act twice: `duebell check` reports every way
//! the operator's settings are looser than a pack (`looser_settings`), and
//! the gate enforces a pack's window and caps at claim time whatever the
//! operator configured (`Gate::with_packs`), naming the pack in the audit.

use serde::Deserialize;

use super::caps::{CapRule, CapScope, CapWindow};
use super::window::{DaySchedule, LocalWindow};
use super::{zone_country, zones, CapsConfig, Gate, QuietHoursConfig};
use crate::domain::Channel;

const SHIPPED: &[(&str, &str)] = &[
    ("cn-2026", include_str!("packs/cn-2026.toml")),
    ("us-reg-f", include_str!("packs/us-reg-f.toml")),
    ("uk-fca", include_str!("packs/uk-fca.toml")),
];

/// A pack as shipped.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pack {
    pub name: String,
    pub title: String,
    /// ISO regions it governs unless the config scopes it otherwise.
    pub countries: Vec<String>,
    /// Channels it covers.
    pub channels: Vec<Channel>,
    #[serde(default)]
    pub notes: Vec<String>,
    pub window: PackWindow,
    #[serde(default)]
    pub caps: Vec<PackCap>,
    pub required: PackRequired,
    pub ladder: PackLadder,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackWindow {
    /// Windows every day, in the borrower's local time.
    pub every_day: Vec<LocalWindow>,
    pub source: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackCap {
    pub name: String,
    pub scope: CapScope,
    #[serde(default)]
    pub channels: Vec<Channel>,
    pub max: u32,
    pub window: CapWindow,
    pub source: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackRequired {
    /// Markers every rendered message must carry (`templates.required`).
    pub elements: Vec<String>,
    pub source: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackLadder {
    /// Most contacts (steps × channels) the ladder may plan in any 7 days.
    pub max_contacts_per_7d: u32,
    pub source: String,
}

impl Pack {
    /// Every shipped pack.
    pub fn shipped() -> Vec<Pack> {
        SHIPPED
            .iter()
            .map(|(name, text)| {
                toml::from_str(text).unwrap_or_else(|e| panic!("shipped pack {name}: {e}"))
            })
            .collect()
    }

    pub fn find(name: &str) -> Option<Pack> {
        Pack::shipped().into_iter().find(|p| p.name == name)
    }

    /// The pack's caps as gate rules, named `pack/cap`.
    pub fn cap_rules(&self) -> Vec<CapRule> {
        self.caps
            .iter()
            .map(|c| CapRule {
                name: format!("{}/{}", self.name, c.name),
                scope: c.scope,
                channels: if c.channels.is_empty() {
                    self.channels.clone()
                } else {
                    c.channels.clone()
                },
                max: c.max,
                window: c.window,
            })
            .collect()
    }
}

/// `[compliance]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ComplianceConfig {
    /// Packs in force, each scoped to countries.
    pub packs: Vec<PackRef>,
}

/// `[[compliance.packs]]`: a shipped pack and the countries it governs here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackRef {
    pub name: String,
    /// ISO regions (of the borrower's zones) it governs; empty: the pack's own.
    #[serde(default)]
    pub countries: Vec<String>,
}

/// A pack in force: the pack, the countries it governs, and its caps as
/// gate rules (compiled once, not per contact).
#[derive(Debug, Clone)]
pub struct ActivePack {
    pub pack: Pack,
    pub countries: Vec<String>,
    pub caps: Vec<CapRule>,
}

impl ActivePack {
    pub fn governs(&self, channel: Channel, country: &str) -> bool {
        self.pack.channels.contains(&channel) && self.countries.iter().any(|c| c == country)
    }
}

impl DaySchedule for ActivePack {
    fn windows_on(&self, _date: chrono::NaiveDate) -> &[LocalWindow] {
        &self.pack.window.every_day
    }
}

impl ComplianceConfig {
    /// The packs in force, or problems keyed by config path.
    pub fn active(&self) -> Result<Vec<ActivePack>, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut out = Vec::new();
        let known: Vec<String> = Pack::shipped().into_iter().map(|p| p.name).collect();
        for (i, r) in self.packs.iter().enumerate() {
            let Some(pack) = Pack::find(&r.name) else {
                problems.push((
                    format!("compliance.packs[{i}].name"),
                    format!(
                        "`{}` is not a shipped pack; use one of {}",
                        r.name,
                        known.join(", ")
                    ),
                ));
                continue;
            };
            if out.iter().any(|a: &ActivePack| a.pack.name == pack.name) {
                problems.push((
                    format!("compliance.packs[{i}].name"),
                    format!("`{}` is listed twice; list its countries once", r.name),
                ));
                continue;
            }
            for (j, c) in r.countries.iter().enumerate() {
                if zones::country_zones(c).is_empty() {
                    problems.push((
                        format!("compliance.packs[{i}].countries[{j}]"),
                        format!("`{c}` is not a region duebell knows the zones of (ISO 3166 codes such as CN, US, GB)"),
                    ));
                }
            }
            let countries = if r.countries.is_empty() {
                pack.countries.clone()
            } else {
                r.countries.clone()
            };
            let caps = pack.cap_rules();
            out.push(ActivePack {
                pack,
                countries,
                caps,
            });
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(problems)
        }
    }
}

/// What `looser_settings` needs of the ladder: each step's offset and how
/// many channels it sends on.
#[derive(Debug, Clone, Copy)]
pub struct LadderStep {
    pub offset_days: i32,
    pub contacts: u32,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Every way the operator's settings are looser than a pack in force, as
/// (config key, message naming the pack and the rule's source).
pub fn looser_settings(
    packs: &[ActivePack],
    quiet: &QuietHoursConfig,
    caps: &CapsConfig,
    ladder: &[LadderStep],
    required: &[String],
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut push = |key: String, msg: String| {
        if !out.iter().any(|(k, m)| *k == key && *m == msg) {
            out.push((key, msg));
        }
    };
    let gate = Gate::build(quiet, caps).ok();
    for active in packs {
        let p = &active.pack;
        // Quiet hours: the operator's rule for each zone of each governed
        // country and channel must open only inside the pack's window. One
        // finding per key and window, naming every channel and zone.
        let mut found: Vec<(String, LocalWindow, Vec<Channel>, Vec<String>)> = Vec::new();
        if let Some(gate) = &gate {
            for country in &active.countries {
                for ch in &p.channels {
                    for zone in zones::country_zones(country) {
                        let Ok(tz) = zone.parse::<chrono_tz::Tz>() else {
                            continue;
                        };
                        let Some(rule) = gate.rules.iter().find(|r| r.matches(*ch, tz)) else {
                            continue; // no rule: never contacted, stricter
                        };
                        let cfg = &quiet.rules[rule.index];
                        let mut lists: Vec<(String, &[LocalWindow])> = Vec::new();
                        for (d, day) in DAYS.iter().enumerate() {
                            let own = [
                                &cfg.mon, &cfg.tue, &cfg.wed, &cfg.thu, &cfg.fri, &cfg.sat,
                                &cfg.sun,
                            ][d]
                                .is_some();
                            let key = if own { *day } else { "every_day" };
                            lists.push((key.to_owned(), &rule.by_day[d]));
                        }
                        if !rule.calendars.is_empty() {
                            lists.push(("on_holidays".to_owned(), &rule.on_holidays));
                        }
                        for (key, windows) in lists {
                            let key = format!("quiet_hours.rules[{}].{key}", rule.index);
                            for w in windows {
                                if p.window.every_day.iter().any(|pw| w.within(pw)) {
                                    continue;
                                }
                                let place = format!("{country} {}", tz.name());
                                match found.iter_mut().find(|f| f.0 == key && f.1 == *w) {
                                    Some(f) => {
                                        if !f.2.contains(ch) {
                                            f.2.push(*ch);
                                        }
                                        if !f.3.contains(&place) {
                                            f.3.push(place);
                                        }
                                    }
                                    None => found.push((key.clone(), *w, vec![*ch], vec![place])),
                                }
                            }
                        }
                    }
                }
            }
        }
        for (key, w, channels, places) in found {
            push(
                key,
                format!(
                    "allows {w} for {} in {}, outside {}'s {} (source: {})",
                    list(&channels),
                    places.join(", "),
                    p.name,
                    list(&p.window.every_day),
                    p.window.source
                ),
            );
        }
        // Caps: some operator cap at least as strict as each pack cap.
        for pc in &p.caps {
            let channels = if pc.channels.is_empty() {
                &p.channels
            } else {
                &pc.channels
            };
            let covered = |r: &CapRule| {
                r.max <= pc.max
                    && at_least_as_long(r.window, pc.window)
                    && counts_at_least(r, pc.scope, channels)
            };
            if caps.rules.iter().any(covered) {
                continue;
            }
            let nearest = caps.rules.iter().position(|r| {
                at_least_as_long(r.window, pc.window) && counts_at_least(r, pc.scope, channels)
            });
            let key = match nearest {
                Some(i) => format!("caps.rules[{i}].max"),
                None => "caps.rules".to_owned(),
            };
            push(
                key,
                format!(
                    "no cap limits {} to {} per {} ({}) as {} requires (source: {}); the gate enforces it anyway as `{}/{}`",
                    list(channels),
                    pc.max,
                    pc.window,
                    scope_words(pc.scope),
                    p.name,
                    pc.source,
                    p.name,
                    pc.name
                ),
            );
        }
        // Required elements.
        for e in &p.required.elements {
            if !required.contains(e) {
                push(
                    "templates.required".to_owned(),
                    format!(
                        "lacks `{e}`, which {} requires in every message (source: {})",
                        p.name, p.required.source
                    ),
                );
            }
        }
        // The ladder: contacts planned in any 7 consecutive days.
        if let Some((from, n)) = busiest_week(ladder) {
            if n > p.ladder.max_contacts_per_7d {
                push(
                    "policy.steps".to_owned(),
                    format!(
                        "plans {n} contacts in the 7 days from day {from:+} of the due date; {} allows {} (source: {})",
                        p.name, p.ladder.max_contacts_per_7d, p.ladder.source
                    ),
                );
            }
        }
    }
    out
}

/// The 7-day span of the ladder with the most contacts: (first day, count).
pub fn busiest_week(ladder: &[LadderStep]) -> Option<(i32, u32)> {
    ladder
        .iter()
        .map(|s| {
            let n = ladder
                .iter()
                .filter(|t| t.offset_days >= s.offset_days && t.offset_days < s.offset_days + 7)
                .map(|t| t.contacts)
                .sum();
            (s.offset_days, n)
        })
        .max_by_key(|(from, n)| (*n, -*from))
}

/// Whether a window of `w` bounds at least as much as one of `pack`: any
/// span of the pack's window is inside some span of `w`.
fn at_least_as_long(w: CapWindow, pack: CapWindow) -> bool {
    use chrono::Duration;
    match (w, pack) {
        (CapWindow::Day, CapWindow::Day) | (CapWindow::Week, CapWindow::Week) => true,
        (CapWindow::Rolling(d), CapWindow::Day) => d >= Duration::hours(24),
        (CapWindow::Rolling(d), CapWindow::Week) => d >= Duration::days(7),
        (CapWindow::Rolling(d), CapWindow::Rolling(p)) => d >= p,
        (CapWindow::Week, CapWindow::Day) => false,
        _ => false,
    }
}

/// Whether `r` counts at least the contacts a pack cap of `scope` over
/// `channels` counts, for every one of those channels.
fn counts_at_least(r: &CapRule, scope: CapScope, channels: &[Channel]) -> bool {
    let covers = |ch: &Channel| r.channels.is_empty() || r.channels.contains(ch);
    match scope {
        // Per channel: a per-channel or any borrower-wide rule over it.
        CapScope::BorrowerChannel | CapScope::ContactPoint => {
            channels.iter().all(covers)
                && matches!(
                    r.scope,
                    CapScope::Borrower | CapScope::BorrowerChannel | CapScope::ContactPoint
                )
                && (scope == CapScope::ContactPoint || r.scope != CapScope::ContactPoint)
        }
        // Across channels: a borrower-wide rule over all of them.
        CapScope::Borrower => r.scope == CapScope::Borrower && channels.iter().all(covers),
        CapScope::Loan => {
            channels.iter().all(covers) && matches!(r.scope, CapScope::Borrower | CapScope::Loan)
        }
    }
}

fn scope_words(s: CapScope) -> &'static str {
    match s {
        CapScope::Borrower => "per borrower across channels",
        CapScope::BorrowerChannel => "per borrower and channel",
        CapScope::ContactPoint => "per phone number or address",
        CapScope::Loan => "per loan",
    }
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `duebell check --explain`: per market a pack governs, the effective
/// windows (operator rule ∩ pack) and every cap that applies.
pub fn explain(packs: &[ActivePack], quiet: &QuietHoursConfig, caps: &CapsConfig) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let Ok(gate) = Gate::build(quiet, caps) else {
        return "the quiet hours or caps do not build; run `duebell check`\n".to_owned();
    };
    let mut countries: Vec<&str> = packs
        .iter()
        .flat_map(|a| a.countries.iter().map(String::as_str))
        .collect();
    countries.sort();
    countries.dedup();
    for country in countries {
        let governing: Vec<&ActivePack> = packs
            .iter()
            .filter(|a| a.countries.iter().any(|c| c == country))
            .collect();
        let names: Vec<&str> = governing.iter().map(|a| a.pack.name.as_str()).collect();
        let _ = writeln!(s, "{country} (packs: {})", names.join(", "));
        for ch in [Channel::Sms, Channel::Email] {
            for zone in zones::country_zones(country) {
                let Ok(tz) = zone.parse::<chrono_tz::Tz>() else {
                    continue;
                };
                let rule = gate.rules.iter().find(|r| r.matches(ch, tz));
                let mut by_day: Vec<String> = Vec::new();
                for d in 0..7 {
                    let mut windows: Vec<LocalWindow> =
                        rule.map(|r| r.by_day[d].clone()).unwrap_or_default();
                    for a in governing.iter().filter(|a| a.governs(ch, country)) {
                        windows = windows
                            .iter()
                            .flat_map(|w| {
                                a.pack
                                    .window
                                    .every_day
                                    .iter()
                                    .filter_map(|p| w.intersect(p))
                            })
                            .collect();
                    }
                    by_day.push(if windows.is_empty() {
                        "none".to_owned()
                    } else {
                        list(&windows)
                    });
                }
                let days = if by_day.iter().all(|d| *d == by_day[0]) {
                    format!("every day {}", by_day[0])
                } else {
                    DAYS.iter()
                        .zip(&by_day)
                        .map(|(d, w)| format!("{d} {w}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                let packs_here: Vec<&str> = governing
                    .iter()
                    .filter(|a| a.governs(ch, country))
                    .map(|a| a.pack.name.as_str())
                    .collect();
                let from = match rule {
                    Some(r) if packs_here.is_empty() => format!("rule `{}`", r.name),
                    Some(r) => format!("rule `{}` within {}", r.name, packs_here.join(", ")),
                    None => "no rule: never".to_owned(),
                };
                let holidays = match rule {
                    Some(r) if !r.calendars.is_empty() => format!(
                        "; on holidays ({}) {}",
                        r.calendars
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        if r.on_holidays.is_empty() {
                            "none".to_owned()
                        } else {
                            list(&r.on_holidays)
                        }
                    ),
                    _ => String::new(),
                };
                let _ = writeln!(s, "  {ch} in {zone}: {days}{holidays} ({from}, local time)");
            }
            let mut caps_here: Vec<String> = gate
                .caps
                .iter()
                .filter(|r| r.channels.is_empty() || r.channels.contains(&ch))
                .map(|r| format!("{} {} per {}", r.name, r.max, r.window))
                .collect();
            for a in governing.iter().filter(|a| a.governs(ch, country)) {
                caps_here.extend(
                    a.caps
                        .iter()
                        .filter(|r| r.channels.contains(&ch))
                        .map(|r| format!("{} {} per {}", r.name, r.max, r.window)),
                );
            }
            let _ = writeln!(s, "  {ch} caps: {}", caps_here.join("; "));
        }
        for a in &governing {
            for n in &a.pack.notes {
                let _ = writeln!(s, "  note ({}): {n}", a.pack.name);
            }
        }
    }
    if packs.is_empty() {
        s.push_str("no compliance packs are in force ([compliance] packs); the operator's rules apply as configured\n");
    } else {
        s.push_str("other markets: the operator's rules only\n");
    }
    s
}

/// Which packs govern a contact on `channel` to someone in these zones.
pub fn governing<'a>(
    packs: &'a [ActivePack],
    channel: Channel,
    zones: &[chrono_tz::Tz],
) -> Vec<&'a ActivePack> {
    packs
        .iter()
        .filter(|a| {
            zones
                .iter()
                .any(|tz| zone_country(*tz).is_some_and(|c| a.governs(channel, c)))
        })
        .collect()
}

#[cfg(test)]
#[path = "packs_tests.rs"]
mod tests;
