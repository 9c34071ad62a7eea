//! Planning benchmark: wall time and peak memory of one planner tick over a
//! synthetic book. Not a test; prints figures for BENCHMARKS.md.
//!
//!     cargo bench --bench planning -- 100000 1000000
//!
//! Each size is seeded once (through the real importer) into
//! `target/bench-planning/<n>.db` as if imported at the tick's instant (a
//! first deployment); four ticks are then timed: a full pass that records
//! every due decision; a full pass again (the steady state, everything
//! decided); a steady cron tick five minutes later, which reads only the
//! borrowers whose next look has come (none); and the tick a day later,
//! which reads the borrowers whose loans reached a step overnight. Peak
//! RSS is the kernel's high-water mark, reset before each tick through
//! /proc/self/clear_refs.
//!
//! Raw baselines in the same run, on the same data: the book inserted into
//! a fresh schema with plain multi-row inserts (10,000 rows a transaction),
//! and a plain scan of the active loans joined to their borrowers with a
//! per-borrower contact-count subquery, one statement read as a stream
//! through rusqlite, and the days-to-due decision in Rust.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use duebell::config::{Config, StoreConfig, Synchronous};
use duebell::engine::Engine;
use duebell::planner::Pass;

mod support;

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn seed(path: &std::path::Path, n: usize, at: DateTime<Utc>) -> std::path::PathBuf {
    let csv = path.with_extension("csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&csv).unwrap());
    writeln!(
        f,
        "loan_id,borrower_id,name,phone,email,locale,timezone,due_date,amount_due,currency"
    )
    .unwrap();
    let zones = [
        "Asia/Shanghai",
        "Asia/Shanghai",
        "Asia/Shanghai",
        "America/New_York",
        "Europe/London",
        "",
    ];
    for i in 0..n {
        let b = i / 2;
        let due = (at + Duration::days((i % 91) as i64 - 45)).date_naive();
        let email = if b % 3 == 0 {
            String::new()
        } else {
            format!("u{b}@example.com")
        };
        writeln!(
            f,
            "L{i},B{b},Borrower {b},+86138{:08},{email},zh-CN,{},{due},{}.50,CNY",
            b % 100_000_000,
            zones[b % zones.len()],
            500 + i % 5000
        )
        .unwrap();
    }
    f.flush().unwrap();
    csv
}

/// The raw import baseline: `csv` into a fresh schema at `db` with plain
/// multi-row inserts (borrowers, contact points, loans; 10,000 rows a
/// transaction, 100 rows a statement); seconds.
async fn raw_import(csv: &std::path::Path, db: &std::path::Path) -> f64 {
    let _ = std::fs::remove_file(db);
    let config = StoreConfig {
        url: format!("sqlite://{}", db.display()),
        synchronous: Synchronous::Normal,
        ..Default::default()
    };
    duebell::store::open(&config).await.unwrap().close().await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("PRAGMA synchronous = NORMAL")
        .execute(&pool)
        .await
        .unwrap();
    let text = std::fs::read_to_string(csv).unwrap();
    let started = Instant::now();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let mut last_borrower = "";
    let mut borrowers: Vec<(i64, &str, &str, &str, &str)> = Vec::new();
    let mut loans: Vec<(&str, i64, &str, &str)> = Vec::new();
    for r in &rows {
        if r[1] != last_borrower {
            last_borrower = r[1];
            borrowers.push((borrowers.len() as i64 + 1, r[1], r[2], r[3], r[4]));
        }
        loans.push((r[0], borrowers.len() as i64, r[7], r[8]));
    }
    for chunk in borrowers.chunks(10_000) {
        let mut tx = pool.begin().await.unwrap();
        for part in chunk.chunks(100) {
            let q = format!(
                "INSERT INTO borrowers (id, external_id, name, locale, timezone, created_at, updated_at) VALUES {}",
                vec!["(?, ?, ?, 'zh-CN', NULL, 0, 0)"; part.len()].join(", ")
            );
            let mut q = sqlx::query(&q);
            for (id, ext, name, _, _) in part {
                q = q.bind(*id).bind(*ext).bind(*name);
            }
            q.execute(&mut *tx).await.unwrap();
            let q = format!(
                "INSERT INTO contact_points (borrower_id, channel, address, active, created_at, updated_at) VALUES {}",
                vec!["(?, 'sms', ?, 1, 0, 0)"; part.len()].join(", ")
            );
            let mut q = sqlx::query(&q);
            for (id, _, _, phone, _) in part {
                q = q.bind(*id).bind(*phone);
            }
            q.execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    for chunk in loans.chunks(10_000) {
        let mut tx = pool.begin().await.unwrap();
        for part in chunk.chunks(100) {
            let q = format!(
                "INSERT INTO loans (external_id, borrower_id, due_date, amount_due, currency, status, created_at, updated_at) VALUES {}",
                vec!["(?, ?, ?, ?, 'CNY', 'active', 0, 0)"; part.len()].join(", ")
            );
            let mut q = sqlx::query(&q);
            for (ext, b, due, amount) in part {
                q = q.bind(*ext).bind(*b).bind(*due).bind(*amount);
            }
            q.execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    let took = started.elapsed().as_secs_f64();
    pool.close().await;
    took
}

/// The raw scan baseline over the store at `db`: every active loan with its
/// borrower's time zone (a join) and contact count since `since` (a
/// subquery), in one statement read as a stream through rusqlite (SQLite's
/// own client, no pool, no thread hand-off), and the decision (days to due
/// within the ladder) in Rust; seconds and how many loans are in the
/// ladder's range.
///
/// Until 2026-12-07 this read 10,000 loans a page by `l.id > ?` through
/// sqlx; SQLite served each page from the (status, borrower) index and
/// sorted all active loans for it (`USE TEMP B-TREE FOR ORDER BY`), so the
/// baseline was quadratic: 5.8 to 13.7 s at 1M instead of about 1 s, and
/// every ratio against it looked several times better than it was.
async fn raw_scan(db: &std::path::Path, at: DateTime<Utc>) -> (f64, u64) {
    let today = at.date_naive();
    let since = (at - Duration::days(7)).timestamp_millis();
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let started = Instant::now();
    let mut in_range = 0u64;
    let mut statement = conn
        .prepare(
            "SELECT l.id, l.borrower_id, l.due_date, b.timezone,
                    (SELECT count(*) FROM contact_log c WHERE c.borrower_id = l.borrower_id AND c.at >= ?1)
               FROM loans l JOIN borrowers b ON b.id = l.borrower_id WHERE l.status = 'active'",
        )
        .unwrap();
    let mut rows = statement.query([since]).unwrap();
    while let Some(row) = rows.next().unwrap() {
        let due: String = row.get(2).unwrap();
        let _zone: Option<String> = row.get(3).unwrap();
        let contacts: i64 = row.get(4).unwrap();
        let due: chrono::NaiveDate = due.parse().unwrap();
        let days = (today - due).num_days();
        if (-3..=30).contains(&days) && contacts < 7 {
            in_range += 1;
        }
    }
    (started.elapsed().as_secs_f64(), in_range)
}

fn main() {
    let sizes = support::sizes(&[100_000]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let at: DateTime<Utc> = "2026-12-01T02:00:00Z".parse().unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-planning");
    std::fs::create_dir_all(&dir).unwrap();
    println!("| loans | borrowers | tick | decisions recorded | wall time | peak RSS | raw scan | ratio |");
    println!("|---:|---:|---|---:|---:|---:|---:|---:|");
    let mut imports = Vec::new();
    for n in sizes {
        let db = dir.join(format!("{n}.db"));
        let _ = std::fs::remove_file(&db);
        let _ = std::fs::remove_file(db.with_extension("db-wal"));
        let config = Config {
            store: StoreConfig {
                url: format!("sqlite://{}", db.display()),
                synchronous: Synchronous::Normal,
                ..Default::default()
            },
            ..support::repo_config()
        };
        rt.block_on(async {
            let store = duebell::store::open(&config.store).await.unwrap();
            let csv = seed(&db, n, at);
            let started = Instant::now();
            let report = duebell::sources::import_file(
                store.as_ref(),
                &csv,
                at,
                duebell::sources::Progress::Off,
            )
            .await
            .unwrap();
            let import = started.elapsed().as_secs_f64();
            eprintln!("seeded {n} loans in {import:.1}s ({})", report.counts);
            let engine = Engine::build(&config, Arc::clone(&store), None).unwrap();
            // The ticks first: the baselines' allocations stay in the
            // process and would count in the ticks' peak RSS.
            let mut ticks = Vec::new();
            let later = |minutes| at + Duration::minutes(minutes);
            for (label, pass, now) in [
                ("first (full pass, records due decisions)", Pass::Full, at),
                ("steady, full pass", Pass::Full, at),
                (
                    "steady, next looks (cron tick 5 min later)",
                    Pass::Due { previous: at },
                    later(5),
                ),
                (
                    "next day, next looks (a day's new steps)",
                    Pass::Due { previous: later(5) },
                    later(24 * 60),
                ),
            ] {
                reset_peak();
                let started = Instant::now();
                let tick = engine.plan_pass(now, pass, None).await.unwrap();
                let wall = started.elapsed().as_secs_f64();
                let peak = peak_rss_kib().map_or(0, |k| k / 1024);
                ticks.push((label, tick, wall, peak));
            }
            let (raw, _) = raw_scan(&db, at).await;
            for (label, tick, wall, peak) in ticks {
                println!(
                    "| {n} | {} | {label} | {} | {wall:.2} s | {peak} MiB | {raw:.2} s | {:.1} |",
                    tick.borrowers,
                    tick.recorded,
                    wall / raw
                );
            }
            let raw = raw_import(&csv, &db.with_extension("raw.db")).await;
            imports.push(format!(
                "| {n} | {import:.2} s | {raw:.2} s | {:.1} |",
                import / raw
            ));
            store.close().await;
        });
    }
    println!("\n| loans | duebell import | raw multi-row insert | ratio |");
    println!("|---:|---:|---:|---:|");
    for line in imports {
        println!("{line}");
    }
}
