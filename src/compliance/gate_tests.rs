use super::*;
use crate::reason::ReasonCode;
use chrono_tz::{America, Asia};

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn zones(tz: &[Tz]) -> ZoneSet {
    ZoneSet {
        primary: tz[0],
        all: tz.to_vec(),
        source: zones::ZoneSource::Stated,
    }
}

const SMS: Subject<'static> = Subject {
    channel: Channel::Sms,
    contact_point: Some(1),
    loans: &[1],
};

#[test]
fn holidays_defer_to_the_next_working_window() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cn.toml"),
        "name = \"cn\"\nvalid_through = \"2026-12-31\"\ndates = [\"2026-10-01\", \"2026-10-02\"]\n",
    )
    .unwrap();
    let q = QuietHoursConfig {
        calendars_dir: dir.path().to_owned(),
        rules: vec![WindowRuleConfig {
            holidays: vec!["cn".into()],
            ..Default::default()
        }],
        ..Default::default()
    };
    let gate = Gate::build(&q, &CapsConfig::default()).unwrap();
    // 2026-10-01 10:00 Shanghai is a holiday: next is 10-03 08:00 = 10-03T00:00Z.
    match gate.evaluate(
        utc("2026-10-01T02:00:00Z"),
        &zones(&[Asia::Shanghai]),
        &SMS,
        &[],
    ) {
        GateDecision::Defer { until, because } => {
            assert_eq!(because.code(), ReasonCode::QuietHours);
            assert_eq!(until, utc("2026-10-03T00:00:00Z"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        gate.stale_calendars(NaiveDate::from_ymd_opt(2027, 1, 1).unwrap())
            .len(),
        1
    );
}

#[test]
fn weekday_and_country_rules_pick_the_first_match() {
    let q = QuietHoursConfig {
        rules: vec![
            WindowRuleConfig {
                name: "us-weekend".into(),
                countries: vec!["US".into()],
                sat: Some(parse_windows(&["10:00-18:00"]).unwrap()),
                sun: Some(vec![]),
                ..Default::default()
            },
            WindowRuleConfig::default(),
        ],
        ..Default::default()
    };
    let gate = Gate::build(&q, &CapsConfig::default()).unwrap();
    let ny = zones(&[America::New_York]);
    // Saturday 2026-12-05 09:00 EST = 14:00Z: closed until 10:00 (15:00Z).
    let d = gate.evaluate(utc("2026-12-05T14:00:00Z"), &ny, &SMS, &[]);
    assert!(
        matches!(d, GateDecision::Defer { until, .. } if until == utc("2026-12-05T15:00:00Z")),
        "{d:?}"
    );
    // Sunday: nothing; Monday 08:00 EST = 13:00Z.
    let d = gate.evaluate(utc("2026-12-06T16:00:00Z"), &ny, &SMS, &[]);
    assert!(
        matches!(d, GateDecision::Defer { until, .. } if until == utc("2026-12-07T13:00:00Z")),
        "{d:?}"
    );
    // Shanghai falls through to the default rule.
    let d = gate.evaluate(
        utc("2026-12-06T02:00:00Z"),
        &zones(&[Asia::Shanghai]),
        &SMS,
        &[],
    );
    assert!(matches!(d, GateDecision::Allow { .. }), "{d:?}");
}

#[test]
fn a_full_cap_defers_to_the_first_window_after_it_frees() {
    let gate = Gate::build(&QuietHoursConfig::default(), &CapsConfig::default()).unwrap();
    let log = [Contact {
        at: utc("2026-12-01T01:00:00Z"),
        channel: Channel::Sms,
        contact_point: Some(1),
        loans: vec![1],
    }];
    // SMS cap frees at local midnight (16:00Z) but the window opens at 08:00 (00:00Z next day).
    match gate.evaluate(
        utc("2026-12-01T03:00:00Z"),
        &zones(&[Asia::Shanghai]),
        &SMS,
        &log,
    ) {
        GateDecision::Defer { until, because } => {
            assert_eq!(until, utc("2026-12-02T00:00:00Z"));
            assert_eq!(because, Reason::cap_full("sms_per_day"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn stop_words_match_the_whole_body_case_and_width_insensitively() {
    let w = StopWords::default();
    for stop in [
        "STOP",
        " stop ",
        "Ｓｔｏｐ",
        "退订",
        "td",
        "T",
        "\u{3000}STOP\u{3000}",
    ] {
        assert_eq!(w.classify(stop), Some(true), "{stop:?}");
    }
    assert_eq!(w.classify("start"), Some(false));
    for other in ["please stop texting me at night", "STOP IT", "", "Thanks"] {
        assert_eq!(w.classify(other), None, "{other:?}");
    }
}

#[test]
fn spread_is_deterministic_and_stays_in_the_window() {
    let gate = Gate::build(&QuietHoursConfig::default(), &CapsConfig::default()).unwrap();
    let open = utc("2026-12-01T00:00:00Z");
    let end = utc("2026-12-01T13:00:00Z");
    let a = gate.spread_from(open, end, "msg-a");
    assert_eq!(a, gate.spread_from(open, end, "msg-a"));
    let spread: std::collections::HashSet<_> = (0..200)
        .map(|i| gate.spread_from(open, end, &format!("k{i}")))
        .collect();
    assert!(spread.len() > 150);
    assert!(spread
        .iter()
        .all(|t| *t >= open && *t < open + Duration::minutes(20)));
    let short_end = open + Duration::minutes(5);
    assert!((0..50).all(|i| gate.spread_from(open, short_end, &format!("k{i}")) < short_end));
}

#[test]
fn each_listed_zone_belongs_to_its_region_and_others_to_none() {
    for r in ["CN", "ES", "US", "CA", "AU", "BR", "ID", "NZ", "GB"] {
        for z in zones::country_zones(r) {
            let tz: Tz = z.parse().unwrap();
            assert_eq!(zone_country(tz), Some(r), "{z}");
        }
    }
    assert_eq!(zone_country(chrono_tz::Atlantic::Canary), Some("ES"));
    assert_eq!(zone_country(chrono_tz::Europe::Zurich), None);
    assert_eq!(zone_country(chrono_tz::UTC), None);
}
