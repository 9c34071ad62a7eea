//! A change through the API on a large book (issue: performance at book
//! scale, P9): the release binary's daemon on a SQLite store of N loans
//! (default 1,000,000; two loans per borrower, due dates over ±45 days, as
//! in the planning bench), sending paused so planned messages stay planned;
//! then 1,000 payments at 100 a second, each paying the one loan of a
//! planned message, through `POST /v1/payments`. Prints the time from
//! request to response (the message is cancelled before the response) as
//! p50/p99/max, and how many of the messages were cancelled when their
//! answer came. Not a test; prints figures for BENCHMARKS.md.
//!
//!     cargo bench --bench replan [-- LOANS]

use std::time::{Duration, Instant};

mod support;

const TOKEN: &str = "bench-token-0123456789abcdef";

fn book(path: &std::path::Path, n: usize) {
    use std::io::Write;
    let today = chrono::Utc::now().date_naive();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(
        f,
        "loan_id,borrower_id,name,phone,email,locale,timezone,due_date,amount_due,currency"
    )
    .unwrap();
    for i in 0..n {
        let b = i / 2;
        let due = today + chrono::Duration::days((i % 91) as i64 - 45);
        writeln!(
            f,
            "L{i},B{b},Borrower {b},+86138{:08},,zh-CN,Asia/Shanghai,{due},{}.50,CNY",
            b % 100_000_000,
            500 + i % 5000
        )
        .unwrap();
    }
    f.flush().unwrap();
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let repo = env!("CARGO_MANIFEST_DIR");
    let cfg = d.join("duebell.toml");
    std::fs::write(
        &cfg,
        format!(
            "[store]\nurl = \"sqlite://{dir}/state/duebell.db\"\n\n\
             [quiet_hours]\ncalendars_dir = \"{repo}/config/holidays\"\n\n[templates]\ndir = \"{repo}/templates\"\n\n\
             [[providers]]\nname = \"outbox\"\nkind = \"file\"\ndir = \"{dir}/outbox\"\n\n\
             [routing]\nsms = [\"outbox\"]\nemail = [\"outbox\"]\n\n\
             [api]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\ntokens = [\"{TOKEN}\"]\n",
            dir = d.display()
        ),
    )
    .unwrap();
    let csv = d.join("book.csv");
    book(&csv, n);
    let started = Instant::now();
    support::cli(&cfg, &["import", "--no-progress", csv.to_str().unwrap()]);
    eprintln!(
        "imported {n} loans in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut daemon = std::process::Command::new(env!("CARGO_BIN_EXE_duebell"))
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .stdout(std::process::Stdio::null())
        .stderr(
            std::fs::File::create(std::env::temp_dir().join("duebell-replan-bench.log")).unwrap(),
        )
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let result = rt.block_on(async {
        let c = reqwest::Client::new();
        // Ready, sending paused, the first planning pass done.
        let deadline = Instant::now() + Duration::from_secs(900);
        while c.get(format!("{base}/readyz")).send().await.is_err() {
            assert!(Instant::now() < deadline, "the daemon did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let paused = c
            .post(format!("{base}/v1/pause"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        assert!(paused.status().is_success());
        loop {
            let metrics = c.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
            // `duebell_planner_tick_seconds_count{} N`
            let ticks = metrics
                .lines()
                .find(|l| l.starts_with("duebell_planner_tick_seconds_count"))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
            if ticks >= 1.0 {
                break;
            }
            assert!(Instant::now() < deadline, "the first plan did not finish");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprintln!("planned after {:.1} s", started.elapsed().as_secs_f64());
        // Planned messages that carry exactly one loan: paying it cancels them.
        let db = d.join("state/duebell.db");
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display()))
            .await
            .unwrap();
        let targets: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT m.id, l.external_id, l.amount_due FROM messages m
               JOIN message_loans ml ON ml.message_id = m.id JOIN loans l ON l.id = ml.loan_id
              WHERE m.state IN ('planned', 'deferred')
                AND (SELECT count(*) FROM message_loans x WHERE x.message_id = m.id) = 1
              ORDER BY m.id LIMIT 1000",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert!(!targets.is_empty(), "nothing planned to pay");
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut tasks = Vec::new();
        for (i, (id, loan, amount)) in targets.iter().cloned().enumerate() {
            tick.tick().await;
            let (c, base, pool) = (c.clone(), base.clone(), pool.clone());
            tasks.push(tokio::spawn(async move {
                let sent = Instant::now();
                let r = c
                    .post(format!("{base}/v1/payments"))
                    .bearer_auth(TOKEN)
                    .json(&serde_json::json!({"payment_id": format!("P{i}"), "loan_id": loan, "amount": amount, "paid_at": chrono::Utc::now().to_rfc3339()}))
                    .send()
                    .await
                    .unwrap();
                let took = sent.elapsed();
                assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
                let state: String = sqlx::query_scalar("SELECT state FROM messages WHERE id = ?")
                    .bind(id)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                (took, state == "cancelled")
            }));
        }
        let mut times = Vec::new();
        let mut cancelled = 0;
        for t in tasks {
            let (took, done) = t.await.unwrap();
            times.push(took);
            cancelled += usize::from(done);
        }
        pool.close().await;
        times.sort();
        let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
        (times.len(), cancelled, at(0.5), at(0.99), *times.last().unwrap())
    });
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
    let (count, cancelled, p50, p99, max) = result;
    println!("| loans | payments (100/s) | cancelled when answered | p50 | p99 | max |");
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {n} | {count} | {cancelled} | {:.1} ms | {:.1} ms | {:.1} ms |",
        p50.as_secs_f64() * 1000.0,
        p99.as_secs_f64() * 1000.0,
        max.as_secs_f64() * 1000.0
    );
}
