//! Simulation benchmark (P10): `duebell simulate`'s engine over a synthetic
//! book with payments, holds and opt-outs, at several book sizes, to show
//! whether the time follows the book (borrower-days) linearly. Not a test;
//! prints figures for BENCHMARKS.md.
//!
//!     cargo bench --bench simulate -- 1000 5000 16667
//!
//! Each borrower has one loan in Shanghai or New York time, due from 10
//! days before the start to 50 after; a fifth pay in full the day before
//! their due date, one in twenty is put on a hold for a week, one in twenty
//! opts out of texts. The simulation runs 60 days from the start, through
//! the same planner, gate and dispatcher as the daemon, into the recorder.

use std::io::Write;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use duebell::domain::{Channel, HoldKind, LoanId, PaymentId};
use duebell::simulate::{simulate, Event};

mod support;

const DAYS: u32 = 60;

fn book(
    dir: &std::path::Path,
    n: usize,
    from: DateTime<Utc>,
) -> (std::path::PathBuf, Vec<(DateTime<Utc>, Event)>) {
    let csv = dir.join(format!("book-{n}.csv"));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&csv).unwrap());
    writeln!(
        f,
        "loan_id,borrower_id,name,phone,email,locale,timezone,due_date,amount_due,currency"
    )
    .unwrap();
    let mut events = Vec::new();
    for i in 0..n {
        let due = from.date_naive() + Duration::days((i * 7919 % 60) as i64 - 10);
        let zone = ["Asia/Shanghai", "America/New_York"][i % 2];
        writeln!(
            f,
            "L{i},B{i},Name {i},+86138{i:08},u{i}@example.com,en,{zone},{due},1200.00,CNY"
        )
        .unwrap();
        let day_before = (due - Duration::days(1))
            .and_hms_opt(4, 0, 0)
            .unwrap()
            .and_utc();
        if i % 5 == 1 && day_before > from {
            events.push((
                day_before,
                Event::Payment {
                    payment_id: PaymentId::parse(&format!("P{i}")).unwrap(),
                    loan_id: LoanId::parse(&format!("L{i}")).unwrap(),
                    amount: "1200.00".parse().unwrap(),
                },
            ));
        }
        if i % 20 == 3 {
            events.push((
                from + Duration::days((i % 30) as i64),
                Event::Hold {
                    loan_id: None,
                    borrower_id: Some(format!("B{i}")),
                    kind: HoldKind::Dispute,
                    until: Some(from.date_naive() + Duration::days((i % 30) as i64 + 7)),
                },
            ));
        }
        if i % 20 == 7 {
            events.push((
                from + Duration::days((i % 40) as i64),
                Event::OptOut {
                    borrower_id: format!("B{i}"),
                    channel: Channel::Sms,
                },
            ));
        }
    }
    f.flush().unwrap();
    events.sort_by_key(|(at, _)| *at);
    (csv, events)
}

fn main() {
    let sizes = support::sizes(&[1000, 5000]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let from: DateTime<Utc> = "2026-12-01T00:00:00Z".parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = support::repo_config();
    println!(
        "| borrowers | days | borrower-days | events | sends | wall time | µs per borrower-day |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for n in sizes {
        let (csv, events) = book(dir.path(), n, from);
        let count = events.len();
        let started = Instant::now();
        let sends = rt
            .block_on(simulate(&config, &[csv], events, from, DAYS))
            .unwrap();
        let wall = started.elapsed().as_secs_f64();
        let borrower_days = n as f64 * f64::from(DAYS);
        println!(
            "| {n} | {DAYS} | {borrower_days} | {count} | {} | {wall:.2} s | {:.1} |",
            sends.len(),
            wall * 1e6 / borrower_days
        );
    }
}
