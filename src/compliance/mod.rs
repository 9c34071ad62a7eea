//! The compliance gate: nothing reaches a provider without passing it, at
//! planning time (to set `not_before`) and again atomically when the
//! dispatcher claims a message. It answers with a `GateDecision` carrying
//! its reason, so `plan`, `simulate`, logs and the audit explain themselves
//! from one source.
//!
//! Facts and shipped defaults: ../shared/reference/contact-rules.md.

pub mod caps;
pub mod packs;
pub mod window;
pub mod zones;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use crate::domain::ConfigDuration;
use crate::domain::{Channel, Invalid};
use crate::reason::Reason;
use caps::{CapBlock, CapRule, Contact, Subject};
use window::{next_open_everywhere, weekday_index, DaySchedule, LocalWindow};
use zones::ZoneSet;

/// `[quiet_hours]`: when messages may go out, in the borrower's local time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuietHoursConfig {
    /// Folder of holiday calendars (`NAME.toml`).
    pub calendars_dir: PathBuf,
    /// Messages released when a window opens are spread over this long
    /// (never past the window's end), so a provider is not hit in one burst.
    pub spread: ConfigDuration,
    /// Window rules; for each channel and zone the first rule that matches
    /// applies. A channel or zone no rule matches may never be contacted.
    pub rules: Vec<WindowRuleConfig>,
}

impl Default for QuietHoursConfig {
    fn default() -> Self {
        QuietHoursConfig {
            calendars_dir: PathBuf::from("config/holidays"),
            spread: ConfigDuration(std::time::Duration::from_secs(20 * 60)),
            rules: vec![WindowRuleConfig::default()],
        }
    }
}

/// One window rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowRuleConfig {
    pub name: String,
    /// Channels it applies to; empty means all.
    pub channels: Vec<Channel>,
    /// ISO 3166 regions (of the borrower's zone) it applies to; empty means any.
    pub countries: Vec<String>,
    /// IANA zones it applies to; empty means any.
    pub zones: Vec<String>,
    /// Windows on every day not given its own list below.
    pub every_day: Vec<LocalWindow>,
    pub mon: Option<Vec<LocalWindow>>,
    pub tue: Option<Vec<LocalWindow>>,
    pub wed: Option<Vec<LocalWindow>>,
    pub thu: Option<Vec<LocalWindow>>,
    pub fri: Option<Vec<LocalWindow>>,
    pub sat: Option<Vec<LocalWindow>>,
    pub sun: Option<Vec<LocalWindow>>,
    /// Holiday calendars (file names in `calendars_dir` without `.toml`).
    pub holidays: Vec<String>,
    /// Windows on a holiday; empty means no contact on holidays.
    pub on_holidays: Vec<LocalWindow>,
}

impl QuietHoursConfig {
    /// Windows of one rule and day list that overlap: allowed, but almost
    /// always a typo (`08:00-12:00` and `11:00-21:00` for `…-13:00`), so
    /// `duebell check` warns. Each as (key, the two windows).
    pub fn overlapping_windows(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            let lists = [
                ("every_day", Some(&r.every_day)),
                ("mon", r.mon.as_ref()),
                ("tue", r.tue.as_ref()),
                ("wed", r.wed.as_ref()),
                ("thu", r.thu.as_ref()),
                ("fri", r.fri.as_ref()),
                ("sat", r.sat.as_ref()),
                ("sun", r.sun.as_ref()),
                ("on_holidays", Some(&r.on_holidays)),
            ];
            for (day, list) in lists {
                let Some(list) = list else { continue };
                for (a, wa) in list.iter().enumerate() {
                    for wb in &list[a + 1..] {
                        if wa.overlaps(wb) {
                            out.push((
                                format!("quiet_hours.rules[{i}].{day}"),
                                format!("windows {wa} and {wb} overlap; did you mean one window?"),
                            ));
                        }
                    }
                }
            }
        }
        out
    }
}

impl Default for WindowRuleConfig {
    fn default() -> Self {
        WindowRuleConfig {
            name: "default".to_owned(),
            channels: vec![],
            countries: vec![],
            zones: vec![],
            every_day: vec![LocalWindow::parse("08:00-21:00").expect("literal")],
            mon: None,
            tue: None,
            wed: None,
            thu: None,
            fri: None,
            sat: None,
            sun: None,
            holidays: vec![],
            on_holidays: vec![],
        }
    }
}

impl<'de> Deserialize<'de> for LocalWindow {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        LocalWindow::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `[caps]`: contact-frequency caps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapsConfig {
    pub rules: Vec<CapRule>,
}

impl Default for CapsConfig {
    fn default() -> Self {
        CapsConfig {
            rules: caps::default_rules(),
        }
    }
}

/// A holiday calendar file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarFile {
    name: String,
    valid_through: String,
    dates: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Calendar {
    pub name: String,
    pub valid_through: NaiveDate,
    dates: std::collections::HashSet<NaiveDate>,
}

impl Calendar {
    pub fn load(path: &Path) -> Result<Calendar, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let file: CalendarFile =
            toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
        let parse =
            |s: &str| crate::domain::parse_date(s).map_err(|e| format!("{}: {e}", path.display()));
        let mut dates = std::collections::HashSet::new();
        for d in &file.dates {
            dates.insert(parse(d)?);
        }
        Ok(Calendar {
            name: file.name,
            valid_through: parse(&file.valid_through)?,
            dates,
        })
    }

    pub fn contains(&self, date: NaiveDate) -> bool {
        self.dates.contains(&date)
    }
}

struct WindowRule {
    /// Its position in `quiet_hours.rules`, for config keys.
    index: usize,
    name: String,
    channels: Vec<Channel>,
    countries: Vec<String>,
    zones: Vec<Tz>,
    by_day: [Vec<LocalWindow>; 7],
    calendars: Vec<Calendar>,
    on_holidays: Vec<LocalWindow>,
}

impl DaySchedule for WindowRule {
    fn windows_on(&self, date: NaiveDate) -> &[LocalWindow] {
        if self.calendars.iter().any(|c| c.contains(date)) {
            &self.on_holidays
        } else {
            &self.by_day[weekday_index(date)]
        }
    }
}

impl WindowRule {
    fn matches(&self, channel: Channel, tz: Tz) -> bool {
        (self.channels.is_empty() || self.channels.contains(&channel))
            && (self.zones.is_empty() || self.zones.contains(&tz))
            && (self.countries.is_empty()
                || zone_country(tz).is_some_and(|c| self.countries.iter().any(|x| x == c)))
    }
}

/// The ISO region a zone belongs to, per `zones::country_zones`. Asked for
/// every rule of every decision, so the table is inverted once (the scan
/// of every region's zone names, with its string compares, was 2–4% of a
/// planning pass's samples in `perf`).
fn zone_country(tz: Tz) -> Option<&'static str> {
    const REGIONS: &[&str] = &[
        "CN", "HK", "MO", "TW", "SG", "MY", "PH", "TH", "VN", "JP", "KR", "IN", "PK", "BD", "AE",
        "SA", "GB", "IE", "FR", "DE", "IT", "NL", "ES", "PT", "NG", "KE", "ZA", "EG", "NZ", "US",
        "CA", "AU", "MX", "BR", "ID",
    ];
    static BY_ZONE: std::sync::LazyLock<std::collections::HashMap<&'static str, &'static str>> =
        std::sync::LazyLock::new(|| {
            let mut by_zone = std::collections::HashMap::new();
            for r in REGIONS {
                for z in zones::country_zones(r) {
                    by_zone.entry(*z).or_insert(*r);
                }
            }
            by_zone
        });
    BY_ZONE.get(tz.name()).copied()
}

/// The gate's answer for one contact at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateDecision {
    /// May go now; `window` says which window allowed it (for the audit).
    Allow {
        window: String,
        window_end: DateTime<Utc>,
        /// Each applicable cap as `name used/max per window`.
        caps: Vec<String>,
        /// Compliance packs that governed (and allowed) the contact.
        packs: Vec<String>,
    },
    /// Must wait until `until`.
    Defer {
        until: DateTime<Utc>,
        because: Reason,
    },
    /// No window ever opens (e.g. zones with no overlap): the message can
    /// only expire.
    Never { because: Reason },
}

/// The compiled gate.
pub struct Gate {
    rules: Vec<WindowRule>,
    caps: Vec<CapRule>,
    /// Packs in force: their windows and caps hold whatever `rules` and
    /// `caps` allow.
    packs: Vec<packs::ActivePack>,
    /// Every cap any contact may be held to (operator and packs), for how
    /// far back the contact log is read.
    all_caps: Vec<CapRule>,
    spread: Duration,
    pub calendars: Vec<Calendar>,
}

impl Gate {
    /// Compiles the config; returns problems keyed by config path.
    pub fn build(q: &QuietHoursConfig, c: &CapsConfig) -> Result<Gate, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut loaded: HashMap<String, Calendar> = HashMap::new();
        let mut rules = Vec::new();
        for (i, r) in q.rules.iter().enumerate() {
            let mut zones = Vec::new();
            for (j, z) in r.zones.iter().enumerate() {
                match crate::domain::TimeZone::parse(z) {
                    Ok(tz) => zones.push(tz.0),
                    Err(e) => problems.push((format!("quiet_hours.rules[{i}].zones[{j}]"), e.0)),
                }
            }
            for (j, c) in r.countries.iter().enumerate() {
                if zones::country_zones(c).is_empty() {
                    problems.push((
                        format!("quiet_hours.rules[{i}].countries[{j}]"),
                        format!("`{c}` is not a region duebell knows the zones of; list its IANA zones under `zones` instead"),
                    ));
                }
            }
            let mut calendars = Vec::new();
            for name in &r.holidays {
                if !loaded.contains_key(name) {
                    let path = q.calendars_dir.join(format!("{name}.toml"));
                    match Calendar::load(&path) {
                        Ok(c) => {
                            loaded.insert(name.clone(), c);
                        }
                        Err(e) => {
                            problems.push((format!("quiet_hours.rules[{i}].holidays"), e));
                            continue;
                        }
                    }
                }
                calendars.push(loaded[name].clone());
            }
            let day =
                |d: &Option<Vec<LocalWindow>>| d.clone().unwrap_or_else(|| r.every_day.clone());
            rules.push(WindowRule {
                index: i,
                name: r.name.clone(),
                channels: r.channels.clone(),
                countries: r.countries.clone(),
                zones,
                by_day: [
                    day(&r.mon),
                    day(&r.tue),
                    day(&r.wed),
                    day(&r.thu),
                    day(&r.fri),
                    day(&r.sat),
                    day(&r.sun),
                ],
                calendars,
                on_holidays: r.on_holidays.clone(),
            });
        }
        for (i, rule) in c.rules.iter().enumerate() {
            if rule.max == 0 {
                problems.push((
                    format!("caps.rules[{i}].max"),
                    "must be at least 1 (use a hold to stop contact)".to_owned(),
                ));
            }
        }
        let spread = Duration::from_std(q.spread.get()).unwrap_or_else(|_| Duration::zero());
        if problems.is_empty() {
            Ok(Gate {
                rules,
                caps: c.rules.clone(),
                packs: Vec::new(),
                all_caps: c.rules.clone(),
                spread,
                calendars: loaded.into_values().collect(),
            })
        } else {
            Err(problems)
        }
    }

    /// The gate with compliance packs in force (defense in depth: their
    /// hard limits hold even where the operator's rules are looser).
    pub fn with_packs(mut self, packs: Vec<packs::ActivePack>) -> Gate {
        self.all_caps = self.caps.clone();
        for p in &packs {
            self.all_caps.extend(p.caps.iter().cloned());
        }
        self.packs = packs;
        self
    }

    /// Every cap some contact may be held to (for the contact-log lookback).
    pub fn all_caps(&self) -> &[CapRule] {
        &self.all_caps
    }

    /// The caps a contact on `channel` to someone in `zones` is held to:
    /// the operator's and those of every pack governing it.
    /// Borrowed when no pack governs (the common case costs nothing).
    pub fn caps_for(&self, channel: Channel, zones: &ZoneSet) -> std::borrow::Cow<'_, [CapRule]> {
        let governing = packs::governing(&self.packs, channel, &zones.all);
        if governing.is_empty() {
            return std::borrow::Cow::Borrowed(&self.caps);
        }
        let mut out = self.caps.clone();
        for p in governing {
            out.extend(p.caps.iter().cloned());
        }
        std::borrow::Cow::Owned(out)
    }

    /// Names of the packs governing a contact on `channel` in `zones`.
    pub fn packs_for(&self, channel: Channel, zones: &ZoneSet) -> Vec<String> {
        packs::governing(&self.packs, channel, &zones.all)
            .into_iter()
            .map(|p| p.pack.name.clone())
            .collect()
    }

    /// Calendars whose `valid_through` has passed at `today`.
    pub fn stale_calendars(&self, today: NaiveDate) -> Vec<&Calendar> {
        self.calendars
            .iter()
            .filter(|c| c.valid_through < today)
            .collect()
    }

    /// The next instant `>= t` a message on `channel` may go to someone in
    /// `zones`, and when that window closes. `None`: never.
    pub fn next_window(
        &self,
        channel: Channel,
        zones: &ZoneSet,
        t: DateTime<Utc>,
    ) -> Option<(DateTime<Utc>, DateTime<Utc>, String)> {
        let mut schedules: Vec<(&dyn DaySchedule, Tz)> = Vec::new();
        let mut names = Vec::new();
        for tz in &zones.all {
            let rule = self.rules.iter().find(|r| r.matches(channel, *tz))?;
            schedules.push((rule as &dyn DaySchedule, *tz));
            names.push(format!("{}@{}", rule.name, tz.name()));
            if let Some(country) = zone_country(*tz) {
                for p in self.packs.iter().filter(|p| p.governs(channel, country)) {
                    schedules.push((p as &dyn DaySchedule, *tz));
                    names.push(format!("{}@{}", p.pack.name, tz.name()));
                }
            }
        }
        next_open_everywhere(&schedules, t).map(|(open, end)| (open, end, names.join("+")))
    }

    /// Window and caps at `now`.
    pub fn evaluate(
        &self,
        now: DateTime<Utc>,
        zones: &ZoneSet,
        subject: &Subject<'_>,
        log: &[Contact],
    ) -> GateDecision {
        let zone_names = || {
            zones
                .all
                .iter()
                .map(|z| z.name())
                .collect::<Vec<_>>()
                .join("+")
        };
        let Some((open, end, window)) = self.next_window(subject.channel, zones, now) else {
            return GateDecision::Never {
                because: Reason::no_window(subject.channel, &zone_names()),
            };
        };
        if open > now {
            return GateDecision::Defer {
                until: open,
                because: Reason::quiet_hours(&zone_names()),
            };
        }
        let caps = self.caps_for(subject.channel, zones);
        if let Some(CapBlock { rule, until }) =
            caps::check_all(&caps, now, zones.primary, subject, log)
        {
            // Waiting for the cap may land in quiet hours: go at the first
            // window opening after the cap frees.
            let until = self
                .next_window(subject.channel, zones, until)
                .map_or(until, |(o, _, _)| o);
            return GateDecision::Defer {
                until,
                because: Reason::cap_full(&rule),
            };
        }
        let usage = caps::usage(&caps, now, zones.primary, subject, log);
        GateDecision::Allow {
            window,
            window_end: end,
            caps: usage,
            packs: self.packs_for(subject.channel, zones),
        }
    }

    /// Where in `[open, end)` a message released at a window opening goes:
    /// a deterministic offset by its key, so releases are spread evenly and
    /// a re-plan lands on the same instant.
    pub fn spread_from(&self, open: DateTime<Utc>, end: DateTime<Utc>, key: &str) -> DateTime<Utc> {
        let span = self.spread.min(end - open);
        let secs = span.num_seconds();
        if secs <= 0 {
            return open;
        }
        // FNV-1a: stable across runs and platforms, unlike std's hasher.
        let mut h: u64 = 0xcbf29ce484222325;
        for b in key.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
        // splitmix64 finaliser: FNV's low bits cluster for similar keys.
        h ^= h >> 30;
        h = h.wrapping_mul(0xbf58476d1ce4e5b9);
        h ^= h >> 27;
        h = h.wrapping_mul(0x94d049bb133111eb);
        h ^= h >> 31;
        open + Duration::seconds((h % secs as u64) as i64)
    }
}

/// Inbound SMS keywords: a body that is, as a whole (trimmed, case- and
/// width-insensitive), a stop word opts the number out; a start word opts it
/// back in where that is allowed.
#[derive(Debug, Clone)]
pub struct StopWords {
    stop: Vec<String>,
    start: Vec<String>,
}

impl Default for StopWords {
    fn default() -> Self {
        StopWords::new(&default_stop_words(), &default_start_words())
    }
}

pub fn default_stop_words() -> Vec<String> {
    [
        "STOP",
        "STOPALL",
        "UNSUBSCRIBE",
        "CANCEL",
        "END",
        "QUIT",
        "退订",
        "TD",
        "T",
        "N",
        "R",
    ]
    .map(String::from)
    .to_vec()
}

pub fn default_start_words() -> Vec<String> {
    ["START", "UNSTOP"].map(String::from).to_vec()
}

/// Folds full-width forms to ASCII and upper-cases, so `ＳＴＯＰ`, `stop` and
/// ` Stop ` compare equal.
pub fn normalise_keyword(s: &str) -> String {
    s.trim_matches(|c: char| c.is_whitespace() || c == '\u{3000}')
        .chars()
        .map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            '\u{3000}' => ' ',
            _ => c,
        })
        .flat_map(char::to_uppercase)
        .collect()
}

impl StopWords {
    pub fn new(stop: &[String], start: &[String]) -> Self {
        StopWords {
            stop: stop.iter().map(|w| normalise_keyword(w)).collect(),
            start: start.iter().map(|w| normalise_keyword(w)).collect(),
        }
    }

    /// `Some(true)` stop, `Some(false)` start, `None` neither.
    pub fn classify(&self, body: &str) -> Option<bool> {
        let b = normalise_keyword(body);
        if self.stop.contains(&b) {
            Some(true)
        } else if self.start.contains(&b) {
            Some(false)
        } else {
            None
        }
    }
}

/// A window list from text, for tests and `plan` output.
pub fn parse_windows(list: &[&str]) -> Result<Vec<LocalWindow>, Invalid> {
    list.iter().map(|s| LocalWindow::parse(s)).collect()
}

#[cfg(test)]
#[path = "gate_tests.rs"]
mod tests;
