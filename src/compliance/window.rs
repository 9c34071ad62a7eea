//! Allowed sending windows in local wall-clock time, and the next instant a
//! message may go out. All edges are half-open: `[08:00, 21:00)`.
//!
//! DST: a window edge that falls in a spring-forward gap moves to the first
//! valid instant after the gap; in a fall-back repeat, a window *start* takes
//! the later of the two instants and an *end* the earlier, so a window never
//! grows on a transition day (fail closed). Both choices are deterministic.

use std::fmt;

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc,
};
use chrono_tz::Tz;

use crate::domain::Invalid;

/// A daily window `[start, end)` in local time; `end` may be `24:00`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalWindow {
    start: u32, // minutes from local midnight
    end: u32,   // minutes, up to 1440
}

impl LocalWindow {
    /// Whether two windows share any minute.
    pub fn overlaps(&self, other: &LocalWindow) -> bool {
        self.start < other.end && other.start < self.end
    }

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let bad = || {
            Invalid::new(format!(
                "`{raw}` is not a window; write HH:MM-HH:MM, e.g. 08:00-21:00"
            ))
        };
        let (a, b) = raw.trim().split_once('-').ok_or_else(bad)?;
        let start = parse_hhmm(a.trim()).ok_or_else(bad)?;
        let end = parse_hhmm(b.trim()).ok_or_else(bad)?;
        if start >= end {
            return Err(Invalid::new(format!(
                "`{raw}` ends before it starts; a window is one stretch within a day (split 22:00-06:00 into 22:00-24:00 and 00:00-06:00)"
            )));
        }
        Ok(LocalWindow { start, end })
    }

    /// Whether every minute of `self` is inside `other`.
    pub fn within(&self, other: &LocalWindow) -> bool {
        other.start <= self.start && self.end <= other.end
    }

    /// The minutes both windows allow, if any.
    pub fn intersect(&self, other: &LocalWindow) -> Option<LocalWindow> {
        let (start, end) = (self.start.max(other.start), self.end.min(other.end));
        (start < end).then_some(LocalWindow { start, end })
    }

    pub fn contains(&self, t: NaiveTime) -> bool {
        let m = t.hour_minute();
        m >= self.start && m < self.end
    }
}

trait HourMinute {
    fn hour_minute(&self) -> u32;
}

impl HourMinute for NaiveTime {
    fn hour_minute(&self) -> u32 {
        use chrono::Timelike;
        self.hour() * 60 + self.minute()
    }
}

fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    if h == 24 && m == 0 {
        return Some(1440);
    }
    (h < 24 && m < 60 && s.len() == 5).then_some(h * 60 + m)
}

impl fmt::Display for LocalWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

/// Which edge of a window a local time is, for resolving DST ambiguity.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Edge {
    Start,
    End,
}

/// The UTC instant of local `date` + `minutes` in `tz`, resolved per the
/// module's DST rules.
fn resolve(tz: Tz, date: NaiveDate, minutes: u32, edge: Edge) -> DateTime<Utc> {
    let (date, minutes) = if minutes >= 1440 {
        (date.succ_opt().unwrap_or(date), minutes - 1440)
    } else {
        (date, minutes)
    };
    let mut ndt = NaiveDateTime::new(
        date,
        NaiveTime::from_hms_opt(minutes / 60, minutes % 60, 0).unwrap_or(NaiveTime::MIN),
    );
    // Gaps are at most a few hours; step by minutes to the first valid time.
    for _ in 0..(24 * 60) {
        match tz.from_local_datetime(&ndt) {
            LocalResult::Single(t) => return t.with_timezone(&Utc),
            LocalResult::Ambiguous(a, b) => {
                let (early, late) = if a < b { (a, b) } else { (b, a) };
                return match edge {
                    Edge::Start => late.with_timezone(&Utc),
                    Edge::End => early.with_timezone(&Utc),
                };
            }
            LocalResult::None => ndt += Duration::minutes(1),
        }
    }
    Utc.from_utc_datetime(&ndt)
}

/// The windows of one local day, as UTC intervals, in order.
pub fn day_intervals(
    tz: Tz,
    date: NaiveDate,
    windows: &[LocalWindow],
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut out: Vec<_> = windows
        .iter()
        .map(|w| {
            (
                resolve(tz, date, w.start, Edge::Start),
                resolve(tz, date, w.end, Edge::End),
            )
        })
        .filter(|(s, e)| s < e)
        .collect();
    out.sort();
    out
}

/// What a zone allows on a given local date.
pub trait DaySchedule {
    /// The windows on local `date` (empty: nothing that day).
    fn windows_on(&self, date: NaiveDate) -> &[LocalWindow];
}

/// How far ahead to look for an open window before giving up.
const HORIZON_DAYS: i64 = 400;

/// The first instant `>= t` that is inside an allowed window in `tz`, with
/// the end of that window; `None` if nothing opens within the horizon.
pub fn next_open_in_zone(
    schedule: &dyn DaySchedule,
    tz: Tz,
    t: DateTime<Utc>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let local_date = t.with_timezone(&tz).date_naive();
    // Start a day early: a window of yesterday's local date may still be
    // open (it cannot, for same-day windows, but an `end` of 24:00 resolved
    // across a transition can reach past midnight).
    for d in -1..HORIZON_DAYS {
        let date = local_date + Duration::days(d);
        for (s, e) in day_intervals(tz, date, schedule.windows_on(date)) {
            if e > t {
                return Some((s.max(t), e));
            }
        }
    }
    None
}

/// The first instant `>= t` open in *every* zone (the overlap, failing
/// closed when the borrower's zone is uncertain), with the earliest end.
pub fn next_open_everywhere(
    schedules: &[(&dyn DaySchedule, Tz)],
    t: DateTime<Utc>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let mut at = t;
    // Each round moves `at` to the latest opening among zones; it converges
    // in a few rounds whenever an overlap exists.
    for _ in 0..64 {
        let mut latest = at;
        let mut earliest_end: Option<DateTime<Utc>> = None;
        for (schedule, tz) in schedules {
            let (open, end) = next_open_in_zone(*schedule, *tz, at)?;
            latest = latest.max(open);
            earliest_end = Some(earliest_end.map_or(end, |x: DateTime<Utc>| x.min(end)));
        }
        if latest == at {
            return Some((at, earliest_end.unwrap_or(at)));
        }
        at = latest;
    }
    None
}

/// Local weekday index, Monday = 0.
pub fn weekday_index(date: NaiveDate) -> usize {
    date.weekday().num_days_from_monday() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Every(Vec<LocalWindow>);
    impl DaySchedule for Every {
        fn windows_on(&self, _: NaiveDate) -> &[LocalWindow] {
            &self.0
        }
    }

    fn day() -> Every {
        Every(vec![LocalWindow::parse("08:00-21:00").unwrap()])
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn open_at(zones: &[Tz], t: &str) -> bool {
        let s = day();
        let scheds: Vec<(&dyn DaySchedule, Tz)> =
            zones.iter().map(|z| (&s as &dyn DaySchedule, *z)).collect();
        next_open_everywhere(&scheds, utc(t)).map(|(o, _)| o) == Some(utc(t))
    }

    #[test]
    fn windows_parse_half_open_and_refuse_nonsense() {
        let w = LocalWindow::parse("08:00-21:00").unwrap();
        assert!(w.contains(NaiveTime::from_hms_opt(8, 0, 0).unwrap()));
        assert!(w.contains(NaiveTime::from_hms_opt(20, 59, 59).unwrap()));
        assert!(!w.contains(NaiveTime::from_hms_opt(21, 0, 0).unwrap()));
        assert!(LocalWindow::parse("22:00-06:00").is_err());
        assert!(LocalWindow::parse("8-21").is_err());
        assert!(LocalWindow::parse("00:00-24:00").is_ok());
    }

    #[test]
    fn the_worked_cases_from_the_contact_rules() {
        use chrono_tz::{America, Asia};
        assert!(!open_at(&[America::New_York], "2025-03-07T12:00:00Z"));
        assert!(open_at(&[America::New_York], "2025-03-10T12:00:00Z"));
        assert!(!open_at(
            &[America::New_York, America::Los_Angeles],
            "2024-03-05T15:30:00Z"
        ));
        assert!(open_at(
            &[America::New_York, America::Los_Angeles],
            "2024-03-05T16:00:00Z"
        ));
        assert!(open_at(&[Asia::Shanghai], "2026-02-01T00:00:00Z"));
        assert!(!open_at(&[Asia::Shanghai], "2026-02-01T13:00:00Z"));
    }

    #[test]
    fn deferral_lands_on_the_next_local_opening_across_dst() {
        use chrono_tz::{America, Australia, Europe};
        let s = day();
        let next = |tz: Tz, t: &str| next_open_in_zone(&s, tz, utc(t)).unwrap().0;
        // New York, spring forward 2025-03-09: 08:00 EDT is 12:00Z (was 13:00Z the day before).
        assert_eq!(
            next(America::New_York, "2025-03-09T02:30:00Z"),
            utc("2025-03-09T12:00:00Z")
        );
        assert_eq!(
            next(America::New_York, "2025-03-08T22:00:00Z"),
            utc("2025-03-08T22:00:00Z")
        );
        assert_eq!(
            next(America::New_York, "2025-03-08T02:00:00Z"),
            utc("2025-03-08T13:00:00Z")
        );
        // New York, fall back 2025-11-02: 08:00 EST is 13:00Z.
        assert_eq!(
            next(America::New_York, "2025-11-02T02:00:00Z"),
            utc("2025-11-02T13:00:00Z")
        );
        // London, spring forward 2025-03-30: 08:00 BST is 07:00Z.
        assert_eq!(
            next(Europe::London, "2025-03-29T21:30:00Z"),
            utc("2025-03-30T07:00:00Z")
        );
        // London, fall back 2025-10-26: 08:00 GMT is 08:00Z.
        assert_eq!(
            next(Europe::London, "2025-10-25T20:30:00Z"),
            utc("2025-10-26T08:00:00Z")
        );
        // Sydney, DST ends 2025-04-06 (AEDT→AEST): 08:00 AEST is 22:00Z the day before.
        assert_eq!(
            next(Australia::Sydney, "2025-04-05T11:00:00Z"),
            utc("2025-04-05T22:00:00Z")
        );
        // Sydney, DST starts 2025-10-05: 08:00 AEDT is 21:00Z the day before.
        assert_eq!(
            next(Australia::Sydney, "2025-10-04T11:00:00Z"),
            utc("2025-10-04T21:00:00Z")
        );
    }

    #[test]
    fn an_edge_in_a_dst_gap_moves_to_the_first_valid_instant() {
        use chrono_tz::America;
        // A window opening at 02:30 on 2025-03-09 in New York (a time that
        // does not exist) opens at 03:00 EDT = 07:00Z.
        let s = Every(vec![LocalWindow::parse("02:30-05:00").unwrap()]);
        let (open, _) =
            next_open_in_zone(&s, America::New_York, utc("2025-03-09T05:00:00Z")).unwrap();
        assert_eq!(open, utc("2025-03-09T07:00:00Z"));
    }

    #[test]
    fn a_repeated_hour_never_widens_the_window() {
        use chrono_tz::America;
        // 01:00-01:30 on 2025-11-02 happens twice in New York; the window
        // starts at the later 01:00 (06:00Z) and ends at the earlier 01:30
        // (05:30Z): empty, so the next opening is the following day.
        let s = Every(vec![LocalWindow::parse("01:00-01:30").unwrap()]);
        let (open, _) =
            next_open_in_zone(&s, America::New_York, utc("2025-11-02T04:00:00Z")).unwrap();
        assert_eq!(open, utc("2025-11-03T06:00:00Z"));
    }

    #[test]
    fn zones_with_no_overlap_never_open() {
        use chrono_tz::{America, Asia};
        let s = Every(vec![LocalWindow::parse("09:00-10:00").unwrap()]);
        let scheds: Vec<(&dyn DaySchedule, Tz)> =
            vec![(&s, Asia::Shanghai), (&s, America::New_York)];
        assert_eq!(
            next_open_everywhere(&scheds, utc("2026-01-01T00:00:00Z")),
            None
        );
    }
}
