//! What several benchmarks share: the release binary's CLI, a PostgreSQL
//! schema per run, and an HTTP sink that stamps each arrival.
#![expect(dead_code, reason = "each benchmark uses a part of it")]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const PG_BASE: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Arrival times at a sink.
pub type Stamps = Arc<Mutex<Vec<Instant>>>;

/// An axum sink on loopback answering every POST to `/` with `{}` and
/// stamping its arrival; returns its URL and the stamps.
pub async fn sink() -> (String, Stamps) {
    sink_after(Duration::ZERO).await
}

/// [`sink`], answering each request `delay` after it arrived (a provider's
/// latency).
pub async fn sink_after(delay: Duration) -> (String, Stamps) {
    let stamps: Stamps = Arc::default();
    let kept = stamps.clone();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move || {
            let kept = kept.clone();
            async move {
                kept.lock().unwrap().push(Instant::now());
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, stamps)
}

/// Drops schema `name` of the local `test` database, and creates it anew
/// when `create`.
pub async fn pg_schema(name: &str, create: bool) {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(PG_BASE)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432, database `test`");
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
        .execute(&mut c)
        .await
        .unwrap();
    if create {
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&mut c)
            .await
            .unwrap();
    }
}

/// Runs the release binary with `--config cfg` and `args`; its standard
/// output (panics with its standard error if it fails).
pub fn cli(cfg: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_duebell"))
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Imports `book` under `cfg`, then times `duebell run --once`; returns
/// (messages sent, wall time of the run).
pub fn timed_run_once(cfg: &Path, book: &Path) -> (usize, Duration) {
    cli(cfg, &["import", "--no-progress", book.to_str().unwrap()]);
    let started = Instant::now();
    cli(cfg, &["run", "--once"]);
    let took = started.elapsed();
    let sent = cli(cfg, &["messages", "--state", "sent", "--limit", "10000000"])
        .lines()
        .skip(1)
        .count();
    (sent, took)
}

/// The book sizes named on the command line, or `default`.
pub fn sizes(default: &[usize]) -> Vec<usize> {
    let named: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    match named.is_empty() {
        true => default.to_vec(),
        false => named,
    }
}

/// The default configuration with this checkout's templates and holiday
/// calendars.
pub fn repo_config() -> duebell::config::Config {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config = duebell::config::Config::default();
    config.templates.dir = repo.join("templates");
    config.quiet_hours.calendars_dir = repo.join("config/holidays");
    config
}

/// A JSON body of an SMS's size, as the baselines post it.
pub fn sms_body() -> String {
    serde_json::json!({
        "message_id": 1, "channel": "sms", "to": "+8613800000000",
        "body": "【某某贷】您好，您的借款本期应还 100.00 元，今天到期。如已还款请忽略。回复TD退订",
        "template": "due_today", "step": "due", "borrower_id": "B1", "loan_ids": ["L1"],
    })
    .to_string()
}

/// The baseline: reqwest alone posting `n` JSON bodies of an SMS's size to
/// `url`, `width` in flight; returns requests per second.
pub async fn raw_reqwest(url: &str, n: usize, width: usize) -> f64 {
    let client = reqwest::Client::new();
    let body = sms_body();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..width {
        let (client, url, body, next) =
            (client.clone(), url.to_owned(), body.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}
