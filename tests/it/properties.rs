//! Property tests over random books, event streams and policies, simulated
//! through the real planner, gate and dispatcher:
//! - no message, and no (loan, step, channel), is sent twice;
//! - nothing is sent about a loan after its payment event;
//! - nothing is sent outside the allowed window in any of the borrower's
//!   candidate zones;
//! - no contact cap is ever exceeded.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use duebell::compliance::caps::{CapRule, CapScope, CapWindow};
use duebell::compliance::window::LocalWindow;
use duebell::compliance::zones::ZoneSet;
use duebell::domain::{Channel, PhoneNumber};
use duebell::simulate::{simulate, Event, SimSend};
use proptest::prelude::*;

use crate::support::{shipped_config, utc};

const ZONES: &[&str] = &[
    "",
    "Asia/Shanghai",
    "America/New_York",
    "America/Los_Angeles",
    "Europe/London",
    "Australia/Sydney",
];

#[derive(Debug, Clone)]
struct BorrowerSpec {
    zone: usize,
    phone: usize,
    email: bool,
    loans: Vec<(i64, u32)>,
}

#[derive(Debug, Clone)]
enum EventSpec {
    Pay {
        borrower: usize,
        loan: usize,
        minutes: i64,
    },
    OptOut {
        borrower: usize,
        minutes: i64,
    },
}

fn phone(kind: usize, i: usize) -> String {
    match kind {
        0 => format!("+86138{:08}", 10_000 + i),
        1 => format!("+1212555{:04}", 100 + i),
        2 => format!("+447400{:06}", 100_000 + i),
        _ => String::new(),
    }
}

fn borrower() -> impl Strategy<Value = BorrowerSpec> {
    (
        0..ZONES.len(),
        0..4usize,
        any::<bool>(),
        prop::collection::vec((-40i64..25, 100u32..5000), 1..4),
    )
        .prop_map(|(zone, phone, email, loans)| BorrowerSpec {
            zone,
            phone,
            email: email || phone == 3,
            loans,
        })
}

fn events(n: usize) -> impl Strategy<Value = Vec<EventSpec>> {
    prop::collection::vec(
        prop_oneof![
            (0..n, 0..3usize, 0i64..(40 * 24 * 60)).prop_map(|(borrower, loan, minutes)| {
                EventSpec::Pay {
                    borrower,
                    loan,
                    minutes,
                }
            }),
            (0..n, 0i64..(40 * 24 * 60))
                .prop_map(|(borrower, minutes)| EventSpec::OptOut { borrower, minutes }),
        ],
        0..6,
    )
}

struct World {
    csv: String,
    events: Vec<(DateTime<Utc>, Event)>,
    /// Loan id → instant of its full payment.
    paid_at: HashMap<String, DateTime<Utc>>,
    zones: HashMap<String, ZoneSet>,
}

fn world(start: DateTime<Utc>, borrowers: &[BorrowerSpec], events: &[EventSpec]) -> World {
    let mut csv = format!("{},status\n", crate::support::LOAN_HEADER);
    let mut zones = HashMap::new();
    let mut amounts = HashMap::new();
    for (i, b) in borrowers.iter().enumerate() {
        let p = phone(b.phone, i);
        let email = if b.email {
            format!("b{i}@example.com")
        } else {
            String::new()
        };
        let tz = ZONES[b.zone];
        for (j, (offset, amount)) in b.loans.iter().enumerate() {
            let due = (start + Duration::days(*offset)).date_naive();
            csv.push_str(&format!(
                "L{i}-{j},B{i},Borrower {i},{p},{email},en,{tz},{due},{amount}.00,CNY,active\n"
            ));
            amounts.insert(format!("L{i}-{j}"), *amount);
        }
        let stated = (!tz.is_empty()).then(|| tz.parse::<Tz>().unwrap());
        let ph = PhoneNumber::parse(&p).ok();
        zones.insert(
            format!("B{i}"),
            ZoneSet::resolve(stated, ph.as_ref(), chrono_tz::Asia::Shanghai),
        );
    }
    let mut out = Vec::new();
    let mut paid_at = HashMap::new();
    for (k, e) in events.iter().enumerate() {
        match e {
            EventSpec::Pay {
                borrower,
                loan,
                minutes,
            } => {
                let Some(b) = borrowers.get(*borrower) else {
                    continue;
                };
                if *loan >= b.loans.len() {
                    continue;
                }
                let id = format!("L{borrower}-{loan}");
                let at = start + Duration::minutes(*minutes);
                if paid_at.contains_key(&id) {
                    continue;
                }
                paid_at.insert(id.clone(), at);
                out.push((
                    at,
                    Event::Payment {
                        payment_id: duebell::domain::PaymentId::parse(&format!("EP{k}")).unwrap(),
                        loan_id: duebell::domain::LoanId::parse(&id).unwrap(),
                        amount: amounts[&id].into(),
                    },
                ));
            }
            EventSpec::OptOut { borrower, minutes } => {
                out.push((
                    start + Duration::minutes(*minutes),
                    Event::OptOut {
                        borrower_id: format!("B{borrower}"),
                        channel: Channel::Sms,
                    },
                ));
            }
        }
    }
    out.sort_by_key(|(at, _)| *at);
    World {
        csv,
        events: out,
        paid_at,
        zones,
    }
}

fn run(
    config: &duebell::config::Config,
    w: &World,
    start: DateTime<Utc>,
    days: u32,
) -> Vec<SimSend> {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("book.csv");
    std::fs::write(&data, &w.csv).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(simulate(config, &[data], w.events.clone(), start, days))
        .unwrap()
}

fn assert_no_duplicates_and_nothing_after_payment(sends: &[SimSend], w: &World) {
    let mut ids = HashSet::new();
    let mut keys = HashSet::new();
    for s in sends {
        assert!(
            ids.insert(s.message_id),
            "message {} sent twice",
            s.message_id
        );
        for (loan, step) in s.loan_ids.iter().zip(&s.loan_steps) {
            assert!(
                keys.insert((loan.clone(), step.clone(), s.channel)),
                "{loan} {step} {} sent twice",
                s.channel
            );
            if let Some(paid) = w.paid_at.get(loan) {
                assert!(
                    s.at < *paid,
                    "{loan} was paid at {paid} but a {} went at {}",
                    s.channel,
                    s.at
                );
            }
        }
    }
}

fn local_ok(t: DateTime<Utc>, tz: Tz, window: &LocalWindow) -> bool {
    window.contains(t.with_timezone(&tz).time())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn nothing_is_sent_twice_or_after_payment(
        borrowers in prop::collection::vec(borrower(), 1..7),
        evs in events(7),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let config = shipped_config(dir.path(), &[]);
        let start = utc("2026-12-01T00:00:00Z");
        let w = world(start, &borrowers, &evs);
        let sends = run(&config, &w, start, 30);
        assert_no_duplicates_and_nothing_after_payment(&sends, &w);
        // Not vacuous: a reachable borrower with a loan coming due is reminded.
        if w.events.is_empty() && borrowers.iter().any(|b| b.phone < 3 && b.loans.iter().any(|(o, _)| (-2..20).contains(o))) {
            prop_assert!(!sends.is_empty());
        }
    }

    #[test]
    fn random_policies_never_send_outside_windows_or_over_caps(
        borrowers in prop::collection::vec(borrower(), 1..6),
        evs in events(6),
        open_hour in 7u32..11,
        close_hour in 17u32..23,
        sms_per_day in 1u32..3,
        all_per_day in 1u32..4,
        per_week in 2u32..9,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = shipped_config(dir.path(), &[]);
        let window = LocalWindow::parse(&format!("{open_hour:02}:00-{close_hour:02}:00")).unwrap();
        config.quiet_hours.rules[0].every_day = vec![window];
        config.caps.rules = vec![
            CapRule { name: "sms_day".into(), scope: CapScope::BorrowerChannel, channels: vec![Channel::Sms], max: sms_per_day, window: CapWindow::Day },
            CapRule { name: "all_day".into(), scope: CapScope::Borrower, channels: vec![], max: all_per_day, window: CapWindow::Day },
            CapRule { name: "week".into(), scope: CapScope::Borrower, channels: vec![], max: per_week, window: CapWindow::Rolling(Duration::days(7)) },
        ];
        let start = utc("2026-11-20T00:00:00Z");
        let w = world(start, &borrowers, &evs);
        let sends = run(&config, &w, start, 60);
        assert_no_duplicates_and_nothing_after_payment(&sends, &w);
        let mut per_day: HashMap<(String, NaiveDate, Option<Channel>), u32> = HashMap::new();
        let mut by_borrower: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
        for s in &sends {
            let zones = &w.zones[&s.borrower_id];
            for tz in &zones.all {
                prop_assert!(local_ok(s.at, *tz, &window), "{} at {} is {} in {}", s.step, s.at, s.at.with_timezone(tz).time(), tz.name());
            }
            let day = s.at.with_timezone(&zones.primary).date_naive();
            *per_day.entry((s.borrower_id.clone(), day, Some(s.channel))).or_default() += 1;
            *per_day.entry((s.borrower_id.clone(), day, None)).or_default() += 1;
            by_borrower.entry(s.borrower_id.clone()).or_default().push(s.at);
        }
        for ((b, day, ch), n) in &per_day {
            match ch {
                Some(Channel::Sms) => prop_assert!(*n <= sms_per_day, "{b} got {n} SMS on {day}"),
                None => prop_assert!(*n <= all_per_day, "{b} got {n} messages on {day}"),
                _ => {}
            }
        }
        for (b, times) in &by_borrower {
            for t in times {
                let n = times.iter().filter(|u| **u > *t - Duration::days(7) && **u <= *t).count() as u32;
                prop_assert!(n <= per_week, "{b} got {n} messages in the 7 days to {t}");
            }
        }
    }
}
