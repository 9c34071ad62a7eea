//! Next looks: a steady tick reads only the borrowers whose time has come
//! (a step's first day, or the day after its window, at the borrower's
//! local midnight) and records exactly what a pass over the whole book
//! would, across DST changes and imports made between ticks; and its sweep,
//! which reads only the changes since the previous pass, cancels what a
//! sweep of every pending message would.

use chrono::{Duration, NaiveDate};
use duebell::domain::{Channel, HoldKind};
use duebell::planner::Pass;
use duebell::store::MessageView;

use crate::support::{book, Harness};

const ZONES: [&str; 4] = [
    "Asia/Shanghai",
    "America/New_York",
    "Europe/London",
    "Pacific/Auckland",
];

/// 24 borrowers, two loans each, in four zones, due from 12 days before
/// the start to 40 days after; every fifth without an email address.
fn rows(start: NaiveDate) -> Vec<String> {
    (0..48)
        .map(|i| {
            let b = i / 2;
            let due = start + Duration::days((i as i64 * 7) % 53 - 12);
            let email = if b % 5 == 0 {
                String::new()
            } else {
                format!("u{b}@example.com")
            };
            format!(
                "L{i},B{b},Name {b},+86138{b:08},{email},en,{},{due},{}.00,CNY,active",
                ZONES[b % 4],
                100 + i
            )
        })
        .collect()
}

/// What was recorded, comparable between two stores.
fn decisions(ms: &[MessageView]) -> Vec<String> {
    let mut out: Vec<String> = ms
        .iter()
        .map(|m| {
            format!(
                "{} {:?} {} {} {:?} {:?} {}",
                m.borrower_id, m.loan_ids, m.channel, m.step, m.state, m.reason, m.not_before
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_steady_tick_records_what_a_full_pass_would_reading_only_what_is_due() {
    let start = "2027-02-20T00:00:00Z";
    let full = Harness::new(start).await;
    let due = Harness::new(start).await;
    let first_day = NaiveDate::from_ymd_opt(2027, 2, 20).unwrap();
    let lines = rows(first_day);
    let csv = book(&lines.iter().map(String::as_str).collect::<Vec<_>>());
    for h in [&full, &due] {
        h.import("book.csv", &csv).await;
        h.engine.plan_pass(h.now(), Pass::Full, None).await.unwrap();
    }
    assert_eq!(
        decisions(&full.messages().await),
        decisions(&due.messages().await)
    );
    assert!(!full.messages().await.is_empty());

    let (mut read_full, mut read_due, mut looks_due) = (0, 0, 0);
    let (mut cancelled, mut previous) = (0, full.now());
    // Every three hours for 50 days: across New York's (14 March) and
    // London's (28 March) clock changes and Auckland's (4 April).
    for step in 1..=400 {
        let now = full.now() + Duration::hours(3);
        for h in [&full, &due] {
            h.clock.set(now);
        }
        // Between ticks: a loan moved to another due date, a new loan for a
        // known borrower, a paid loan (an import, as the daemon's watched
        // file or `duebell import` would bring it).
        if step == 120 {
            let mut changed = lines.clone();
            let moved = format!(",{},", now.date_naive() + Duration::days(3));
            changed[5] = changed[5].replace(&format!(",{},", due_of(&lines[5])), &moved);
            changed[8] = changed[8].replace(",active", ",paid");
            changed.push(format!(
                "L99,B3,Name 3,+8613800000003,u3@example.com,en,{},{},50.00,CNY,active",
                ZONES[3],
                now.date_naive() + Duration::days(1)
            ));
            let csv = book(&changed.iter().map(String::as_str).collect::<Vec<_>>());
            for h in [&full, &due] {
                let r = h.import("book2.csv", &csv).await;
                assert_eq!(r.counts.rejected, 0, "{:?}", r.errors);
            }
        }
        // Changes made straight in the store, with no re-plan of their own
        // (as a bounce or a provider's report makes them): only the tick's
        // sweep cancels what they stop.
        if step == 150 {
            for h in [&full, &due] {
                let phone = "+8613800000001";
                let n = h
                    .store
                    .opt_out_address(now, Channel::Sms, phone, "test")
                    .await;
                assert_eq!(n.unwrap(), 1);
                let hold = h
                    .store
                    .add_hold(now, Some("B9"), None, HoldKind::Dispute, None);
                assert!(hold.await.unwrap().is_some());
            }
        }
        let f = full.engine.plan_pass(now, Pass::Full, None).await.unwrap();
        let d = due
            .engine
            .plan_pass(now, Pass::Due { previous }, None)
            .await
            .unwrap();
        previous = now;
        assert_eq!(f.cancelled, d.cancelled, "at {now}");
        if step == 150 {
            // B1's pending texts and B9's pending messages.
            assert!(d.cancelled >= 2, "{} cancelled at {now}", d.cancelled);
        }
        cancelled += d.cancelled;
        read_full += f.borrowers;
        read_due += d.borrowers;
        looks_due += u64::from(d.borrowers > 0);
        assert_eq!(f.recorded, d.recorded, "at {now}");
        assert_eq!(
            decisions(&full.messages().await),
            decisions(&due.messages().await),
            "at {now}"
        );
        // The next change is a later instant, the same in both stores.
        assert!(d.next_change.is_none_or(|t| t > now), "at {now}");
        assert_eq!(f.next_change, d.next_change, "at {now}");
    }
    assert!(cancelled >= 2, "{cancelled} cancelled by the sweeps");
    let recorded = full.messages().await.len();
    assert!(recorded > 150, "{recorded} decisions over 50 days");
    // A steady tick read a borrower only on a day one of its loans moved:
    // a small share of what passes over the whole book read.
    assert!(read_due * 10 < read_full, "{read_due} vs {read_full}");
    assert!(looks_due < 400 / 2, "{looks_due} of 400 ticks read anyone");
}

fn due_of(line: &str) -> &str {
    line.split(',').nth(7).unwrap()
}
