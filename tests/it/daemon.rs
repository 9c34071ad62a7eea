//! The daemon: in-process with a shutdown handle, and as the real binary on
//! the shipped config, stopped by SIGTERM.

use std::io::BufRead;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use duebell::app::App;
use duebell::clock::TestClock;
use duebell::domain::{LoanId, LoanStatus};
use tokio_util::sync::CancellationToken;

use crate::support::{duebell, open_store, write_book, LOAN_HEADER};

const WAIT: Duration = Duration::from_secs(60);

fn config_for(dir: &std::path::Path, book: &std::path::Path) -> duebell::config::Config {
    let text = format!(
        "[store]\nurl = \"sqlite://{}\"\n\n[[sources]]\nkind = \"file\"\npath = \"{}\"\npoll_interval = \"100ms\"\n\n[[providers]]\nname = \"outbox\"\nkind = \"file\"\ndir = \"{}\"\n",
        dir.join("state/duebell.db").display(),
        book.display(),
        dir.join("outbox").display()
    );
    duebell::config::load_from_str(&text, std::path::Path::new("test.toml"), std::iter::empty())
        .unwrap()
        .config
}

/// Waits until the app has completed more cycles than `seen`.
async fn next_cycle(cycles: &mut tokio::sync::watch::Receiver<u64>) {
    tokio::time::timeout(WAIT, cycles.changed())
        .await
        .expect("a cycle completes")
        .unwrap();
}

#[tokio::test]
async fn the_daemon_imports_its_sources_and_stops_through_its_shutdown_handle() {
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("book.csv");
    write_book(&book, 10, &[]);
    let clock = TestClock::at(Utc.with_ymd_and_hms(2026, 12, 1, 1, 0, 0).unwrap());
    let app = App::build(config_for(dir.path(), &book), Arc::new(clock))
        .await
        .unwrap();
    let store = app.store();
    let mut cycles = app.cycles();
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(app.run(shutdown.clone()));

    next_cycle(&mut cycles).await;
    assert_eq!(store.counts().await.unwrap().loans, 10);

    shutdown.cancel();
    tokio::time::timeout(WAIT, daemon)
        .await
        .expect("the daemon stops")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_watched_file_is_reimported_when_its_content_changes() {
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("book.csv");
    write_book(&book, 2, &[]);
    let clock = TestClock::at(Utc.with_ymd_and_hms(2026, 12, 1, 1, 0, 0).unwrap());
    let app = App::build(config_for(dir.path(), &book), Arc::new(clock))
        .await
        .unwrap();
    let store = app.store();
    let mut cycles = app.cycles();
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(app.run(shutdown.clone()));
    next_cycle(&mut cycles).await;
    assert_eq!(store.counts().await.unwrap().imports, 1);

    // The lender's nightly export replaces the file: a new loan and L0 closed.
    let tmp = dir.path().join("book.csv.new");
    std::fs::write(
        &tmp,
        format!(
            "{LOAN_HEADER},status\n{},closed\n{},active\nL9,B9,New Borrower,+8613900000009,,en,Europe/London,2026-12-20,99.00,CNY,active\n",
            crate::support::loan_line(0),
            crate::support::loan_line(1)
        ),
    )
    .unwrap();
    std::fs::rename(&tmp, &book).unwrap();
    while store.counts().await.unwrap().imports < 2 {
        next_cycle(&mut cycles).await;
    }
    // Unchanged content is not imported again.
    next_cycle(&mut cycles).await;
    next_cycle(&mut cycles).await;
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.imports, counts.loans), (2, 3));
    let l0 = store
        .loan(&LoanId::parse("L0").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(l0.status, LoanStatus::Closed);

    shutdown.cancel();
    tokio::time::timeout(WAIT, daemon)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn run_on_the_shipped_config_imports_the_sample_book_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("state/duebell.db").display());
    let mut child = duebell(&["run", "--log-format", "json"])
        .env("DUEBELL_STORE__URL", &url)
        .env("DUEBELL_PROVIDERS__0__DIR", dir.path().join("outbox"))
        .env("DUEBELL_API__LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut imported = Vec::new();
    let mut log = Vec::new();
    while imported.len() < 2 {
        let line = rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no import logged:\n{}", log.join("\n")));
        let event: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if event["message"] == "source imported" {
            imported.push(event);
        }
        log.push(line);
    }
    assert_eq!(imported[0]["path"], "examples/loans.csv");
    assert_eq!(imported[0]["rejected"], 0);
    assert_eq!(imported[1]["path"], "examples/payments.csv");

    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "{exit}");
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(
        rest.iter()
            .any(|l| l.contains("stop requested") && l.contains("SIGTERM")),
        "{rest:#?}"
    );

    let counts = open_store(dir.path()).await.counts().await.unwrap();
    let book_rows = std::fs::read_to_string(crate::support::repo_root().join("examples/loans.csv"))
        .unwrap()
        .lines()
        .count() as u64
        - 1;
    assert_eq!(counts.loans, book_rows);
    assert!(counts.loans_paid > 0);
}

#[tokio::test]
async fn run_once_imports_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("state/duebell.db").display());
    let (code, _, stderr) = crate::support::run(
        duebell(&["run", "--once"])
            .env("DUEBELL_STORE__URL", &url)
            .env("DUEBELL_PROVIDERS__0__DIR", dir.path().join("outbox")),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !stderr.contains("+86138"),
        "a phone number leaked into the log:\n{stderr}"
    );
    assert!(
        open_store(dir.path())
            .await
            .counts()
            .await
            .unwrap()
            .payments
            > 0
    );
}

/// A gateway on loopback that answers every POST after `delay` and
/// records the most requests it ever held at once.
async fn counting_gateway(
    delay: Duration,
) -> (
    String,
    Arc<std::sync::atomic::AtomicUsize>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/send", listener.local_addr().unwrap());
    let (now, most, total) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let (most_out, total_out) = (most.clone(), total.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (now, most, total) = (now.clone(), most.clone(), total.clone());
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut r = BufReader::new(r);
                loop {
                    let mut length = 0;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    r.read_exact(&mut body).await.unwrap();
                    let held = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(held, Ordering::SeqCst);
                    total.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    let reply = "{\"id\":\"gw\"}";
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
                        reply.len()
                    );
                    if w.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, most_out, total_out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_keeps_as_many_sends_in_flight_as_the_provider_allows_and_no_more() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let (url, most, total) = counting_gateway(Duration::from_millis(200)).await;
    let config = crate::chaos::config(dir.path(), &url, 12);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "timeout = \"30s\"\n",
        "timeout = \"30s\"\nconcurrency = 4\n",
    );
    std::fs::write(&config, text).unwrap();
    let (code, _, stderr) = crate::support::run(duebell(&[
        "--config",
        config.to_str().unwrap(),
        "run",
        "--once",
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        total.load(Ordering::SeqCst),
        12,
        "each message sent once: {stderr}"
    );
    // Sent side by side (one at a time before), never beyond the limit.
    assert_eq!(most.load(Ordering::SeqCst), 4);
    let store = open_store(dir.path()).await;
    let sent = store
        .messages(&duebell::store::MessageQuery::default())
        .await
        .unwrap()
        .iter()
        .filter(|m| m.state == duebell::store::MessageState::Sent)
        .count();
    assert_eq!(sent, 12);
}
