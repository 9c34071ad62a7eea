use super::*;
use crate::compliance::caps::{Contact, Subject};
use crate::compliance::zones::{ZoneSet, ZoneSource};
use crate::compliance::{GateDecision, WindowRuleConfig};
use chrono::{DateTime, Utc};
use chrono_tz::{Asia, Europe, Tz};

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn zones(tz: Tz) -> ZoneSet {
    ZoneSet {
        primary: tz,
        all: vec![tz],
        source: ZoneSource::Stated,
    }
}

fn active(name: &str) -> Vec<ActivePack> {
    ComplianceConfig {
        packs: vec![PackRef {
            name: name.into(),
            countries: vec![],
        }],
    }
    .active()
    .unwrap()
}

fn shipped_ladder() -> Vec<LadderStep> {
    [
        (-3, 1),
        (-1, 1),
        (0, 2),
        (1, 1),
        (3, 2),
        (7, 1),
        (15, 1),
        (30, 1),
    ]
    .into_iter()
    .map(|(offset_days, contacts)| LadderStep {
        offset_days,
        contacts,
    })
    .collect()
}

fn required() -> Vec<String> {
    vec!["lender_name".into(), "opt_out".into()]
}

fn looser(pack: &str, q: &QuietHoursConfig, c: &CapsConfig) -> Vec<(String, String)> {
    looser_settings(&active(pack), q, c, &shipped_ladder(), &required())
}

fn window(every_day: &[&str]) -> QuietHoursConfig {
    QuietHoursConfig {
        rules: vec![WindowRuleConfig {
            every_day: crate::compliance::parse_windows(every_day).unwrap(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn every_shipped_pack_parses_and_names_a_source_for_each_rule() {
    let packs = Pack::shipped();
    let names: Vec<&str> = packs.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["cn-2026", "us-reg-f", "uk-fca"]);
    for p in &packs {
        assert!(!p.window.source.is_empty() && !p.required.source.is_empty());
        assert!(p.caps.iter().all(|c| !c.source.is_empty() && c.max > 0));
        assert!(!p.countries.is_empty() && !p.channels.is_empty());
    }
}

#[test]
fn the_shipped_defaults_pass_every_pack() {
    for p in ["cn-2026", "us-reg-f", "uk-fca"] {
        let found = looser(p, &QuietHoursConfig::default(), &CapsConfig::default());
        assert!(found.is_empty(), "{p}: {found:?}");
    }
}

#[test]
fn cn_2026_rejects_a_window_past_22_00_and_names_its_source() {
    let found = looser("cn-2026", &window(&["08:00-22:30"]), &CapsConfig::default());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "quiet_hours.rules[0].every_day");
    assert!(found[0].1.contains("08:00-22:30"), "{}", found[0].1);
    assert!(
        found[0].1.contains("China Banking Association"),
        "{}",
        found[0].1
    );
    // 08:00-22:00 is the guideline itself: accepted.
    assert!(looser("cn-2026", &window(&["08:00-22:00"]), &CapsConfig::default()).is_empty());
}

#[test]
fn a_single_day_override_is_reported_at_its_own_key() {
    let mut q = window(&["08:00-21:00"]);
    q.rules[0].sat = Some(crate::compliance::parse_windows(&["07:00-12:00"]).unwrap());
    let found = looser("us-reg-f", &q, &CapsConfig::default());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "quiet_hours.rules[0].sat");
    assert!(found[0].1.contains("1006.6(b)(1)(i)"));
}

#[test]
fn a_rule_for_other_countries_does_not_count_against_the_pack() {
    // A late window for Germany only; the UK falls to the default rule.
    let mut q = window(&["08:00-21:00"]);
    q.rules.insert(
        0,
        WindowRuleConfig {
            name: "de".into(),
            countries: vec!["DE".into()],
            every_day: crate::compliance::parse_windows(&["07:00-22:00"]).unwrap(),
            ..Default::default()
        },
    );
    assert!(looser("uk-fca", &q, &CapsConfig::default()).is_empty());
    q.rules[0].countries = vec!["GB".into()];
    let found = looser("uk-fca", &q, &CapsConfig::default());
    assert_eq!(found[0].0, "quiet_hours.rules[0].every_day", "{found:?}");
}

fn caps(rules: &[(&str, CapScope, &[Channel], u32, &str)]) -> CapsConfig {
    CapsConfig {
        rules: rules
            .iter()
            .map(|(name, scope, channels, max, window)| CapRule {
                name: (*name).into(),
                scope: *scope,
                channels: channels.to_vec(),
                max: *max,
                window: CapWindow::parse(window).unwrap(),
            })
            .collect(),
    }
}

#[test]
fn cn_2026_needs_a_daily_cap_per_contact_method() {
    // Only a weekly cap: a day could take all ten.
    let loose = caps(&[("weekly", CapScope::Borrower, &[], 10, "week")]);
    let found = looser("cn-2026", &QuietHoursConfig::default(), &loose);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "caps.rules");
    assert!(found[0].1.contains("6 per local day"), "{}", found[0].1);
    // A per-channel daily cap above 6 is reported at its max.
    let high = caps(&[("sms", CapScope::BorrowerChannel, &[], 8, "day")]);
    let found = looser("cn-2026", &QuietHoursConfig::default(), &high);
    assert_eq!(found[0].0, "caps.rules[0].max", "{found:?}");
    // A borrower-wide rolling 24h cap of 6 bounds each channel too.
    let ok = caps(&[("all", CapScope::Borrower, &[], 6, "24h")]);
    assert!(looser("cn-2026", &QuietHoursConfig::default(), &ok).is_empty());
}

#[test]
fn us_reg_f_needs_seven_in_seven_across_channels_and_the_opt_out() {
    let per_channel_only = caps(&[
        ("daily", CapScope::BorrowerChannel, &[], 1, "day"),
        // A calendar week allows 7 on a Sunday and 7 on the Monday after.
        ("weekly", CapScope::Borrower, &[], 7, "week"),
    ]);
    let found = looser("us-reg-f", &QuietHoursConfig::default(), &per_channel_only);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].1.contains("7 per rolling 7d"), "{}", found[0].1);
    let found = looser_settings(
        &active("us-reg-f"),
        &QuietHoursConfig::default(),
        &CapsConfig::default(),
        &shipped_ladder(),
        &["lender_name".to_owned()],
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "templates.required");
    assert!(found[0].1.contains("1006.6(e)"));
}

#[test]
fn a_ladder_that_plans_too_much_in_a_week_is_reported() {
    let mut ladder = shipped_ladder();
    ladder.push(LadderStep {
        offset_days: 2,
        contacts: 2,
    });
    let found = looser_settings(
        &active("uk-fca"),
        &QuietHoursConfig::default(),
        &CapsConfig::default(),
        &ladder,
        &required(),
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "policy.steps");
    assert!(found[0].1.contains("plans 9 contacts"), "{}", found[0].1);
}

#[test]
fn unknown_packs_and_regions_are_config_errors() {
    let bad = ComplianceConfig {
        packs: vec![PackRef {
            name: "eu-gdpr".into(),
            countries: vec![],
        }],
    };
    let e = bad.active().unwrap_err();
    assert_eq!(e[0].0, "compliance.packs[0].name");
    assert!(e[0].1.contains("cn-2026, us-reg-f, uk-fca"));
    let bad = ComplianceConfig {
        packs: vec![PackRef {
            name: "cn-2026".into(),
            countries: vec!["XX".into()],
        }],
    };
    assert_eq!(
        bad.active().unwrap_err()[0].0,
        "compliance.packs[0].countries[0]"
    );
}

#[test]
fn the_gate_holds_a_pack_window_the_operator_left_open() {
    // The operator allows 06:00-23:00; cn-2026 closes at 22:00.
    let gate = Gate::build(&window(&["06:00-23:00"]), &CapsConfig::default())
        .unwrap()
        .with_packs(active("cn-2026"));
    let sms = Subject {
        channel: Channel::Sms,
        contact_point: Some(1),
        loans: &[1],
    };
    // 22:30 Shanghai = 14:30Z: deferred to 08:00 next day = 00:00Z.
    match gate.evaluate(
        utc("2026-03-02T14:30:00Z"),
        &zones(Asia::Shanghai),
        &sms,
        &[],
    ) {
        GateDecision::Defer { until, .. } => assert_eq!(until, utc("2026-03-03T00:00:00Z")),
        other => panic!("{other:?}"),
    }
    // 07:00 Shanghai: the pack is open from 08:00 only... the operator's
    // 06:00 does not count.
    assert!(matches!(
        gate.evaluate(
            utc("2026-03-02T23:00:00Z"),
            &zones(Asia::Shanghai),
            &sms,
            &[]
        ),
        GateDecision::Defer { .. }
    ));
    // Inside both: allowed, naming the pack.
    match gate.evaluate(
        utc("2026-03-02T02:00:00Z"),
        &zones(Asia::Shanghai),
        &sms,
        &[],
    ) {
        GateDecision::Allow { packs, window, .. } => {
            assert_eq!(packs, ["cn-2026"]);
            assert!(window.contains("cn-2026@Asia/Shanghai"), "{window}");
        }
        other => panic!("{other:?}"),
    }
    // London is not governed by cn-2026: 06:30 local is allowed.
    match gate.evaluate(
        utc("2026-03-02T06:30:00Z"),
        &zones(Europe::London),
        &sms,
        &[],
    ) {
        GateDecision::Allow { packs, .. } => assert!(packs.is_empty()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_gate_holds_a_pack_cap_the_operator_left_loose() {
    // The operator caps nothing per day; uk-fca allows 3 contacts a day.
    let loose = caps(&[("yearly", CapScope::Borrower, &[], 1000, "365d")]);
    let gate = Gate::build(&QuietHoursConfig::default(), &loose)
        .unwrap()
        .with_packs(active("uk-fca"));
    let email = Subject {
        channel: Channel::Email,
        contact_point: Some(2),
        loans: &[1],
    };
    let log: Vec<Contact> = [
        "2026-03-02T08:10:00Z",
        "2026-03-02T09:10:00Z",
        "2026-03-02T10:10:00Z",
    ]
    .iter()
    .map(|t| Contact {
        at: utc(t),
        channel: Channel::Email,
        contact_point: Some(2),
        loans: vec![1],
    })
    .collect();
    match gate.evaluate(
        utc("2026-03-02T12:00:00Z"),
        &zones(Europe::London),
        &email,
        &log,
    ) {
        GateDecision::Defer { because, until } => {
            assert!(
                because.to_string().contains("uk-fca/contacts_per_day"),
                "{because}"
            );
            // The next local day's window: 08:00 GMT.
            assert_eq!(until, utc("2026-03-03T08:00:00Z"));
        }
        other => panic!("{other:?}"),
    }
    // Shanghai is not governed by uk-fca: the fourth goes.
    assert!(matches!(
        gate.evaluate(
            utc("2026-03-02T04:00:00Z"),
            &zones(Asia::Shanghai),
            &email,
            &log
        ),
        GateDecision::Allow { .. }
    ));
    assert!(gate
        .all_caps()
        .iter()
        .any(|r| r.name == "uk-fca/contacts_per_7d"));
}

#[test]
fn explain_combines_the_operator_window_with_the_pack() {
    let text = explain(
        &active("cn-2026"),
        &window(&["06:00-23:00"]),
        &CapsConfig::default(),
    );
    assert!(text.contains("CN (packs: cn-2026)"), "{text}");
    assert!(
        text.contains("sms in Asia/Shanghai: every day 08:00-22:00"),
        "{text}"
    );
    assert!(
        text.contains("cn-2026/attempts_per_method_per_day 6 per local day"),
        "{text}"
    );
}
