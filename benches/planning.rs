//! Planning benchmark: wall time and peak memory of one planner tick over a
//! synthetic book. Not a test; prints figures for BENCHMARKS.md.
//!
//!     cargo bench --bench planning -- 100000 1000000
//!
//! Each size is seeded once (through the real importer) into
//! `target/bench-planning/<n>.db` as if imported at the tick's instant (a
//! first deployment); the tick is then timed twice: the first
//! records every due decision, the second is the steady state (everything
//! already decided). Peak RSS is the kernel's high-water mark, reset before
//! each tick through /proc/self/clear_refs.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use duebell::config::{Config, StoreConfig, Synchronous};
use duebell::engine::Engine;

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

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100_000]
    } else {
        sizes
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let at: DateTime<Utc> = "2026-12-01T02:00:00Z".parse().unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-planning");
    std::fs::create_dir_all(&dir).unwrap();
    println!("| loans | borrowers | tick | decisions recorded | wall time | peak RSS |");
    println!("|---:|---:|---|---:|---:|---:|");
    for n in sizes {
        let db = dir.join(format!("{n}.db"));
        let _ = std::fs::remove_file(&db);
        let _ = std::fs::remove_file(db.with_extension("db-wal"));
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut config = Config {
            store: StoreConfig {
                url: format!("sqlite://{}", db.display()),
                synchronous: Synchronous::Normal,
                ..Default::default()
            },
            ..Default::default()
        };
        config.templates.dir = repo.join("templates");
        config.quiet_hours.calendars_dir = repo.join("config/holidays");
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
            eprintln!(
                "seeded {n} loans in {:.1}s ({})",
                started.elapsed().as_secs_f64(),
                report.counts
            );
            let engine = Engine::build(&config, Arc::clone(&store), None).unwrap();
            for label in ["first (records due decisions)", "steady state"] {
                reset_peak();
                let started = Instant::now();
                let tick = engine.plan(at).await.unwrap();
                let wall = started.elapsed();
                println!(
                    "| {n} | {} | {label} | {} | {:.2} s | {} MiB |",
                    tick.borrowers,
                    tick.recorded,
                    wall.as_secs_f64(),
                    peak_rss_kib().map_or(0, |k| k / 1024)
                );
            }
            store.close().await;
        });
    }
}
