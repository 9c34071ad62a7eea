//! Several `duebell run` processes (the release binary) on one PostgreSQL
//! database: throughput to a loopback HTTP sink with no rate limit, for one,
//! two and three instances, next to reqwest alone (16 in flight) posting to
//! a sink of the same kind in the same run. Then the same for one and two
//! instances against a sink that answers each request 10 ms after it
//! arrives, `concurrency` 16 each: there the instances are bound by their
//! sends in flight rather than by the machine's cores, and the figures show
//! what a second instance adds where the cores allow it, next to the bound
//! of Little's law. Not a test; prints figures for BENCHMARKS.md.
//!
//!     cargo bench --bench cluster [-- MESSAGES]
//!
//! Needs PostgreSQL on 127.0.0.1:5432 (database `test`, trust auth); each
//! run uses a schema of its own and drops it afterwards.

use std::time::{Duration, Instant};

mod support;

use support::{pg_schema, raw_reqwest, sink, sink_after, PG_BASE};

/// The provider latency of the second table.
const LATENCY: Duration = Duration::from_millis(10);

/// The shipped config, on `url`, one step (`due`, SMS), open all day, no
/// caps, one webhook provider with no rate limit and `concurrency` sends in
/// flight.
fn config(dir: &std::path::Path, url: &str, sink: &str, concurrency: u32) -> std::path::PathBuf {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(repo.join("config/duebell.toml")).unwrap();
    let rule = "# ---------------------------------------------------------------------------\n";
    let cut = |text: &str, from: &str, to: &str, with: &str| {
        let a = text.find(from).unwrap();
        let b = text.find(to).unwrap();
        format!("{}{with}{}", &text[..a], &text[b..])
    };
    let text = cut(
        &shipped,
        "[[sources]]",
        &format!("{rule}# Who the messages"),
        "",
    );
    let text = cut(
        &text,
        "[[policy.steps]]",
        &format!("{rule}# Quiet hours"),
        "[[policy.steps]]\nid = \"due\"\noffset_days = 0\nchannels = [\"sms\"]\ntemplate = \"due_today\"\nstage = \"friendly\"\n\n",
    );
    let text = cut(&text, "[[caps.rules]]", &format!("{rule}[templates]"), "");
    let text = cut(
        &text,
        "[[providers]]",
        &format!("{rule}# Hand-off"),
        &format!("[[providers]]\nname = \"sink\"\nkind = \"webhook\"\nurl = \"{sink}\"\nconcurrency = {concurrency}\nsecret = \"bench-secret-0123456789\"\nidempotent = true\n\n[routing]\nsms = [\"sink\"]\nemail = [\"sink\"]\n\n"),
    )
    .replace("url = \"sqlite://var/duebell.db\"", &format!("url = \"{url}\""))
    .replace("every_day = [\"08:00-21:00\"]", "every_day = [\"00:00-24:00\"]")
    .replace("listen = \"127.0.0.1:8080\"", "listen = \"\"")
    .replace("filter = \"info,sqlx=warn\"", "filter = \"warn\"");
    let path = dir.join("duebell.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn book(dir: &std::path::Path, n: usize) -> std::path::PathBuf {
    let today = chrono::Utc::now().date_naive();
    let mut text =
        "loan_id,borrower_id,name,phone,email,locale,timezone,due_date,amount_due,currency\n"
            .to_owned();
    for i in 0..n {
        text.push_str(&format!(
            "L{i},B{i},Kim Park,+1212{:07},,en,UTC,{today},10.00,USD\n",
            5_550_000 + i
        ));
    }
    let path = dir.join("book.csv");
    std::fs::write(&path, text).unwrap();
    path
}

/// Imports `messages` loans due today, runs `instances` daemons until the
/// sink (answering after `delay`) has them all, and returns the rate after
/// the planning pass: a second instance sends what the first has planned
/// while it plans the rest, so the span from the first arrival would
/// compare one instance's sending alone with two instances' sending and
/// planning together.
async fn run(instances: usize, messages: usize, delay: Duration, concurrency: u32) -> f64 {
    let (sink_url, stamps) = sink_after(delay).await;
    let dir = tempfile::tempdir().unwrap();
    let name = format!("duebell_bench_{}", std::process::id());
    pg_schema(&name, true).await;
    let url = format!("{PG_BASE}?options=-c%20search_path%3D{name}");
    let cfg = config(dir.path(), &url, &sink_url, concurrency);
    let bin = env!("CARGO_BIN_EXE_duebell");
    let repo = env!("CARGO_MANIFEST_DIR");
    let status = std::process::Command::new(bin)
        .current_dir(repo)
        .args(["import", "--no-progress", "--config", cfg.to_str().unwrap()])
        .arg(book(dir.path(), messages))
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let mut children: Vec<_> = (0..instances)
        .map(|_| {
            std::process::Command::new(bin)
                .current_dir(repo)
                .args(["run", "--config", cfg.to_str().unwrap()])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let deadline = started + Duration::from_secs(600);
    // When the planning pass has committed every message (to 20 ms).
    let mut planned = None;
    let mut db = {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&url).await.unwrap()
    };
    while stamps.lock().unwrap().len() < messages {
        assert!(Instant::now() < deadline, "the sink stalled");
        if planned.is_none() {
            let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM messages")
                .fetch_one(&mut db)
                .await
                .unwrap_or((0,));
            planned = (n as usize >= messages).then(Instant::now);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(db);
    let planned = planned.unwrap_or_else(Instant::now);
    let wall = started.elapsed();
    for c in &children {
        std::process::Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
    }
    for c in &mut children {
        c.wait().unwrap();
    }
    let stamps = stamps.lock().unwrap().clone();
    let first = *stamps.iter().min().unwrap();
    let last = *stamps.iter().max().unwrap();
    let after = stamps.iter().filter(|t| **t > planned).count();
    let rate = after as f64 / last.duration_since(planned).as_secs_f64();
    print!(
        "{instances} instance(s): {messages} messages in {:.1} s from start ({:.0} msgs/s), planned by {:.1} s, first sent at {:.1} s; after planning {after} in {:.1} s: {rate:.0} msgs/s",
        wall.as_secs_f64(),
        messages as f64 / wall.as_secs_f64(),
        planned.duration_since(started).as_secs_f64(),
        first.duration_since(started).as_secs_f64(),
        last.duration_since(planned).as_secs_f64(),
    );
    pg_schema(&name, false).await;
    rate
}

fn main() {
    let messages: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (url, _) = sink().await;
        let raw = raw_reqwest(&url, messages, 16).await;
        println!("raw reqwest, 16 in flight: {raw:.0} requests/s");
        let mut one = 0.0;
        for instances in 1..=3 {
            let rate = run(instances, messages, Duration::ZERO, 8).await;
            one = if instances == 1 { rate } else { one };
            println!(" ({:.2} of raw reqwest, {:.2}× one)", rate / raw, rate / one);
        }
        let width: u32 = 16;
        let bound = f64::from(width) / LATENCY.as_secs_f64();
        println!(
            "sink answering in {} ms, concurrency {width} per instance (Little's law: {bound:.0} msg/s an instance)",
            LATENCY.as_millis()
        );
        for instances in 1..=2 {
            let rate = run(instances, messages, LATENCY, width).await;
            one = if instances == 1 { rate } else { one };
            println!(
                " ({:.2} of {instances} × the bound, {:.2}× one)",
                rate / bound / instances as f64,
                rate / one
            );
        }
    });
}
