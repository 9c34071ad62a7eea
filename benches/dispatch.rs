//! Dispatch benchmarks: throughput to a loopback HTTP sink with no rate
//! limit, rate-limit fidelity at a configured rate, and the daemon's own
//! cycle (`duebell run --once`) against a provider that takes 200 ms per
//! call. Not a test; prints figures for BENCHMARKS.md.
//!
//!     cargo bench --bench dispatch

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use duebell::config::Config;
use duebell::dispatch::Outcome;
use duebell::engine::Engine;

mod support;

use support::{raw_reqwest, sink, sink_after, sms_body};

fn config(
    dir: &std::path::Path,
    url: &str,
    rate: Option<&str>,
    synchronous: duebell::config::Synchronous,
) -> Config {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut c = Config::default();
    c.store.url = format!("sqlite://{}/bench.db", dir.display());
    c.store.synchronous = synchronous;
    c.templates.dir = repo.join("templates");
    c.quiet_hours.calendars_dir = repo.join("config/holidays");
    c.quiet_hours.rules[0].every_day =
        vec![duebell::compliance::window::LocalWindow::parse("00:00-24:00").unwrap()];
    c.caps.rules.clear();
    c.policy.steps.retain(|s| s.id == "due");
    c.policy.steps[0].send_at = None;
    c.policy.steps[0].channels = vec![duebell::domain::Channel::Sms];
    let mut p = duebell::providers::default_providers().remove(0);
    p.name = "sink".into();
    p.kind = duebell::providers::ProviderKind::Webhook;
    p.dir = None;
    p.url = Some(url.into());
    p.secret = Some("bench-secret-0123456789".into());
    p.concurrency = 64;
    p.rate = rate.map(|r| duebell::providers::guard::Rate::parse(r).unwrap());
    c.providers = vec![p];
    c.routing.sms = vec!["sink".into()];
    c.routing.email = vec!["sink".into()];
    c
}

async fn seed(
    engine: &Engine,
    store: &Arc<dyn duebell::store::Store>,
    dir: &std::path::Path,
    n: usize,
    at: DateTime<Utc>,
) {
    let csv = dir.join("book.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&csv).unwrap());
    writeln!(
        f,
        "loan_id,borrower_id,name,phone,email,locale,timezone,due_date,amount_due,currency"
    )
    .unwrap();
    for i in 0..n {
        writeln!(
            f,
            "L{i},B{i},Borrower {i},+86138{i:08},,zh-CN,Asia/Shanghai,{},100.00,CNY",
            at.date_naive()
        )
        .unwrap();
    }
    f.flush().unwrap();
    duebell::sources::import_file(store.as_ref(), &csv, at, duebell::sources::Progress::Off)
        .await
        .unwrap();
    engine.plan(at).await.unwrap();
}

/// Drains with `workers` concurrent dispatch loops; returns (sent, elapsed).
async fn drain(engine: &Engine, at: DateTime<Utc>, workers: usize) -> (usize, Duration) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let d = engine.dispatcher.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent = 0;
            loop {
                match d.dispatch_next(at).await.unwrap() {
                    Outcome::Idle => return sent,
                    Outcome::Sent { .. } => sent += 1,
                    _ => {}
                }
            }
        }));
    }
    let mut sent = 0;
    for t in tasks {
        sent += t.await.unwrap();
    }
    (sent, started.elapsed())
}

/// A second baseline: reqwest posting `n` bodies to `url` with `width` in
/// flight, each message with the least durable record a send can have, in
/// SQLite through rusqlite (WAL, `synchronous` as given): marked `sending`
/// with an event before its request, and `sent` with an event after. One
/// transaction records the sends that have ended and claims the next ones
/// when fewer than a width are left waiting (up to four widths in hand), as
/// duebell's loop claims ahead; the requests go on meanwhile. None of the rest of a send: no borrower, gate, caps, contact
/// log, rendering or log line. Returns messages per second.
async fn raw_durable(url: &str, n: usize, width: usize, sync: &str) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let db = rusqlite::Connection::open(dir.path().join("raw.db")).unwrap();
    db.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync};
         CREATE TABLE messages (id INTEGER PRIMARY KEY, state TEXT NOT NULL, body TEXT NOT NULL, updated_at INTEGER);
         CREATE INDEX messages_state ON messages (state, id);
         CREATE TABLE events (id INTEGER PRIMARY KEY, message_id INTEGER NOT NULL, at INTEGER NOT NULL, to_state TEXT NOT NULL);
         CREATE INDEX events_message ON events (message_id);"
    ))
    .unwrap();
    let body = sms_body();
    let tx = db.unchecked_transaction().unwrap();
    for _ in 0..n {
        tx.execute(
            "INSERT INTO messages (state, body) VALUES ('planned', ?1)",
            [&body],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    let client = reqwest::Client::new();
    let url = reqwest::Url::parse(url).unwrap();
    let (mut claimed, mut ended) = (std::collections::VecDeque::new(), Vec::new());
    let mut sends = tokio::task::JoinSet::new();
    let mut exhausted = false;
    let started = Instant::now();
    loop {
        let want = match exhausted {
            true => 0,
            false => (4 * width).saturating_sub(claimed.len() + sends.len()),
        };
        if ended.len() >= width
            || (claimed.len() < width && want > 0)
            || (exhausted && sends.is_empty() && !ended.is_empty())
        {
            // On this thread, with its other tasks moved off it meanwhile
            // (the commit waits for its fsync).
            let ids = tokio::task::block_in_place(|| {
                let at = Utc::now().timestamp_millis();
                let tx = db.unchecked_transaction().unwrap();
                // A state change and its event, by statements prepared once.
                let mark = |id: i64, state: &str| {
                    tx.prepare_cached(
                        "UPDATE messages SET state = ?1, updated_at = ?2 WHERE id = ?3",
                    )
                    .unwrap()
                    .execute((state, at, id))
                    .unwrap();
                    tx.prepare_cached(
                        "INSERT INTO events (message_id, at, to_state) VALUES (?1, ?2, ?3)",
                    )
                    .unwrap()
                    .execute((id, at, state))
                    .unwrap();
                };
                for id in ended.drain(..) {
                    mark(id, "sent");
                }
                let ids: Vec<(i64, String)> = tx
                    .prepare_cached(
                        "SELECT id, body FROM messages WHERE state = 'planned' ORDER BY id LIMIT ?1",
                    )
                    .unwrap()
                    .query_map([want as i64], |r| Ok((r.get(0)?, r.get(1)?)))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                exhausted = ids.len() < want;
                for (id, _) in &ids {
                    mark(*id, "sending");
                }
                tx.commit().unwrap();
                ids
            });
            claimed.extend(ids);
        }
        while sends.len() < width {
            let Some((id, body)) = claimed.pop_front() else {
                break;
            };
            let (client, url) = (client.clone(), url.clone());
            sends.spawn(async move {
                let r = client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                r.bytes().await.unwrap();
                id
            });
        }
        match sends.join_next().await {
            Some(id) => ended.push(id.unwrap()),
            None if ended.is_empty() => break,
            None => continue,
        }
        while let Some(id) = sends.try_join_next() {
            ended.push(id.unwrap());
        }
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// `duebell run --once` (the release binary, real clock) sending `n` SMS
/// due today through `url` with `concurrency`; returns (sent, elapsed of
/// the run, planning included).
fn run_once(url: &str, n: usize, concurrency: u32) -> (usize, Duration) {
    run_once_with(url, n, concurrency, "normal")
}

/// `run_once` with the store's `synchronous` setting.
fn run_once_with(url: &str, n: usize, concurrency: u32, sync: &str) -> (usize, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let today = Utc::now().date_naive();
    let mut book = String::from(
        "loan_id,borrower_id,name,phone,email,locale,timezone,due_date,amount_due,currency\n",
    );
    for i in 0..n {
        book.push_str(&format!(
            "C{i},CB{i},Kim Park,+1212{}{:04},,en,UTC,{today},10.00,USD\n",
            555 - i / 10_000,
            i % 10_000
        ));
    }
    std::fs::write(d.join("book.csv"), book).unwrap();
    let repo = env!("CARGO_MANIFEST_DIR");
    std::fs::write(
        d.join("duebell.toml"),
        format!(
            "[store]\nurl = \"sqlite://{}/state/duebell.db\"\nsynchronous = \"{sync}\"\n\n\
             [[policy.steps]]\nid = \"due\"\noffset_days = 0\nchannels = [\"sms\"]\ntemplate = \"due_today\"\nstage = \"friendly\"\n\n\
             [quiet_hours]\ncalendars_dir = \"{repo}/config/holidays\"\n[[quiet_hours.rules]]\nname = \"any\"\nevery_day = [\"00:00-24:00\"]\n\n\
             [caps]\nrules = []\n\n[templates]\ndir = \"{repo}/templates\"\n\n\
             [[providers]]\nname = \"gateway\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"bench-secret-0123456789\"\ntimeout = \"30s\"\nconcurrency = {concurrency}\n\n\
             [routing]\nsms = [\"gateway\"]\nemail = [\"gateway\"]\n\n[api]\nlisten = \"\"\n",
            d.display()
        ),
    )
    .unwrap();
    support::timed_run_once(&d.join("duebell.toml"), &d.join("book.csv"))
}

fn max_in_window(stamps: &[Instant], window: Duration) -> usize {
    let mut s = stamps.to_vec();
    s.sort();
    let mut best = 0;
    let mut j = 0;
    for i in 0..s.len() {
        while s[i] - s[j] >= window {
            j += 1;
        }
        best = best.max(i - j + 1);
    }
    best
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let at: DateTime<Utc> = "2026-12-10T03:00:00Z".parse().unwrap();
    // `cargo bench --bench dispatch -- fidelity` runs only the rate table,
    // `-- throughput` only the first (with `-- throughput 16` only its rows
    // at that concurrency).
    let only_fidelity = std::env::args().any(|a| a == "fidelity");
    let only_throughput = std::env::args().any(|a| a == "throughput");
    let width: Option<u32> = std::env::args().filter_map(|a| a.parse().ok()).next();
    rt.block_on(async {
        if !only_fidelity {
        println!("## Throughput to a loopback HTTP sink, no rate limit\n");
        println!("| messages | concurrency | store sync | sent | `run --once` wall | sending (first to last at the sink) | duebell msg/s | raw reqwest msg/s (16 in flight) | ratio | raw reqwest + durable record msg/s | ratio to it |");
        println!("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (n, c, sync) in [(20000, 16, "full"), (20000, 16, "normal"), (20000, 64, "normal")] {
            if width.is_some_and(|w| w != c) {
                continue;
            }
            let (url, stamps) = sink().await;
            let raw = raw_reqwest(&url, n, 16).await;
            let durable = raw_durable(&url, n, 16, sync).await;
            stamps.lock().unwrap().clear();
            let u = url.clone();
            let (sent, took) =
                tokio::task::spawn_blocking(move || run_once_with(&u, n, c, sync))
                    .await
                    .unwrap();
            let s = stamps.lock().unwrap().clone();
            let span = *s.iter().max().unwrap() - *s.iter().min().unwrap();
            let rate = sent as f64 / span.as_secs_f64();
            println!(
                "| {n} | {c} | {sync} | {sent} | {:.2} s | {:.2} s | {rate:.0} | {raw:.0} | {:.2} | {durable:.0} | {:.2} |",
                took.as_secs_f64(),
                span.as_secs_f64(),
                rate / raw,
                rate / durable
            );
        }
        if only_throughput {
            return;
        }
        }
        println!("\n## Rate-limit fidelity\n");
        println!(
            "| configured | messages | workers | achieved (average) | most in any 1 s window |"
        );
        println!("|---|---:|---:|---:|---:|");
        for (rate, n) in [("50/s", 500), ("200/s", 2000)] {
            let dir = tempfile::tempdir().unwrap();
            let (url, stamps) = sink().await;
            let c = config(
                dir.path(),
                &url,
                Some(rate),
                duebell::config::Synchronous::Normal,
            );
            let store = duebell::store::open(&c.store).await.unwrap();
            let engine = Engine::build(&c, store.clone(), None).unwrap();
            seed(&engine, &store, dir.path(), n, at).await;
            let (sent, _) = drain(&engine, at, 8).await;
            let s = stamps.lock().unwrap().clone();
            let first = *s.iter().min().unwrap();
            let last = *s.iter().max().unwrap();
            let avg = (sent as f64 - 1.0) / (last - first).as_secs_f64();
            println!(
                "| {rate} | {sent} | 8 | {avg:.1}/s | {} |",
                max_in_window(&s, Duration::from_secs(1))
            );
            store.close().await;
        }
        if only_fidelity {
            return;
        }
        println!("\n## A provider answering in 200 ms, through the daemon's cycle\n");
        println!("| concurrency | messages | sent | wall time (`run --once`) | messages/s | Little's law (C / 0.2 s) | ratio |");
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        let (url, _) = sink_after(Duration::from_millis(200)).await;
        for c in [1u32, 8, 32] {
            let n = (c as usize * 40).max(100);
            let u = url.clone();
            let (sent, took) = tokio::task::spawn_blocking(move || run_once(&u, n, c))
                .await
                .unwrap();
            let rate = sent as f64 / took.as_secs_f64();
            let bound = f64::from(c) / 0.2;
            println!(
                "| {c} | {n} | {sent} | {:.2} s | {rate:.1} | {bound:.0} | {:.2} |",
                took.as_secs_f64(),
                rate / bound
            );
        }
    });
}
