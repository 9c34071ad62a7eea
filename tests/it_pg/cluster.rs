//! Three `duebell run` processes on one PostgreSQL database share 10,000
//! due messages; one is killed midway. A loopback gateway (an idempotent
//! webhook) must accept each message exactly once, no borrower over the
//! cap, and never more than the configured rate in any one-second window.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duebell::store::MessageState;

use crate::support::{bin, pg_schema, repo_root, LOAN_HEADER};

/// Borrowers with a phone only (one message each) and with a phone and an
/// email (two messages, of which the daily cap lets one go).
const SMS_ONLY: usize = 8_000;
const BOTH: usize = 1_000;
const RATE: usize = 100;

#[derive(Default)]
struct Sink {
    /// Idempotency key → (borrower, when accepted).
    accepted: HashMap<String, (String, Instant)>,
    /// Posts repeating an accepted key (answered 409, not delivered again).
    repeats: Vec<String>,
}

async fn gateway(
    axum::extract::State(sink): axum::extract::State<Arc<Mutex<Sink>>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let borrower = json["borrower_id"].as_str().unwrap_or_default().to_owned();
    // A gateway takes a moment to answer: sends are in flight when the
    // instance is killed.
    tokio::time::sleep(Duration::from_millis(3)).await;
    let mut s = sink.lock().unwrap();
    if s.accepted.contains_key(&key) {
        s.repeats.push(key);
        return axum::http::StatusCode::CONFLICT;
    }
    s.accepted.insert(key, (borrower, Instant::now()));
    axum::http::StatusCode::OK
}

fn config(dir: &std::path::Path, url: &str, gateway: &str) -> std::path::PathBuf {
    let shipped = std::fs::read_to_string(repo_root().join("config/duebell.toml")).unwrap();
    let cut = |text: &str, from: &str, to: &str, with: &str| {
        let a = text.find(from).unwrap();
        let b = text.find(to).unwrap();
        format!("{}{with}{}", &text[..a], &text[b..])
    };
    let rule = "# ---------------------------------------------------------------------------\n";
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
        "[[policy.steps]]\nid = \"due\"\noffset_days = 0\nchannels = [\"sms\", \"email\"]\ntemplate = \"due_today\"\nstage = \"friendly\"\n\n",
    );
    let text = cut(
        &text,
        "[[caps.rules]]",
        &format!("{rule}[templates]"),
        "[[caps.rules]]\nname = \"one_a_day\"\nscope = \"borrower\"\nchannels = []\nmax = 1\nwindow = \"day\"\n\n",
    );
    let text = cut(
        &text,
        "[[providers]]",
        &format!("{rule}# Hand-off"),
        &format!("[[providers]]\nname = \"gateway\"\nkind = \"webhook\"\nurl = \"{gateway}\"\nsecret = \"webhook-secret-0123456789\"\nidempotent = true\nrate = \"{RATE}/s\"\n\n[routing]\nsms = [\"gateway\"]\nemail = [\"gateway\"]\n\n"),
    )
    .replace("url = \"sqlite://var/duebell.db\"", &format!("url = \"{url}\""))
    .replace("every_day = [\"08:00-21:00\"]", "every_day = [\"00:00-24:00\"]")
    .replace("listen = \"127.0.0.1:8080\"", "listen = \"\"")
    .replace(
        "stop_deadline = \"20s\"",
        "stop_deadline = \"5s\"\nplanner_lease = \"3s\"\nclaim_lease = \"2s\"\npoll_interval = \"1s\"",
    )
    .replace("planner_lease = \"15s\"\n", "")
    .replace("claim_lease = \"30s\"\n", "")
    .replace("poll_interval = \"5s\"\n", "");
    let path = dir.join("duebell.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn book(dir: &std::path::Path) -> std::path::PathBuf {
    let today = chrono::Utc::now().date_naive();
    let mut text = format!("{LOAN_HEADER}\n");
    for i in 0..SMS_ONLY + BOTH {
        let email = if i >= SMS_ONLY {
            format!("b{i}@example.com")
        } else {
            String::new()
        };
        text.push_str(&format!(
            "L{i},B{i},Kim Park,+1212555{:04},{email},en,UTC,{today},10.00,USD\n",
            i
        ));
    }
    let path = dir.join("book.csv");
    std::fs::write(&path, text).unwrap();
    path
}

fn start(cfg: &std::path::Path, log: &std::path::Path) -> std::process::Child {
    std::process::Command::new(bin())
        .current_dir(repo_root())
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// The daemons, killed if the test fails midway (they would outlive it).
struct Reap(Vec<Option<std::process::Child>>);

impl Drop for Reap {
    fn drop(&mut self) {
        for c in self.0.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_send_each_message_once_within_caps_and_the_rate_when_one_dies() {
    let sink = Arc::new(Mutex::new(Sink::default()));
    let app = axum::Router::new()
        .route("/", axum::routing::post(gateway))
        .with_state(sink.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let url = pg_schema();
    let cfg = config(dir.path(), &url, &format!("http://{addr}/"));
    let book = book(dir.path());
    let (code, _, stderr) = crate::support::run(
        crate::support::duebell(&["import", "--config", cfg.to_str().unwrap(), "--no-progress"])
            .arg(&book),
    );
    assert_eq!(code, 0, "{stderr}");

    let logs: Vec<_> = (0..3)
        .map(|i| dir.path().join(format!("i{i}.log")))
        .collect();
    let mut children = Reap(logs.iter().map(|l| Some(start(&cfg, l))).collect());

    // Kill one instance a third of the way through.
    let expected = SMS_ONLY + BOTH;
    let deadline = Instant::now() + Duration::from_secs(300);
    while sink.lock().unwrap().accepted.len() < expected / 3 {
        assert!(Instant::now() < deadline, "stalled:\n{}", tail(&logs[0]));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The victim is the planner (its instance name carries its pid), so
    // planning must pass to another instance as well as its claims.
    let planner = || async {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        let row: (String, i64) =
            sqlx::query_as("SELECT holder, token FROM leases WHERE name = 'planner'")
                .fetch_one(&mut c)
                .await
                .unwrap();
        row
    };
    let (holder, token) = planner().await;
    let pid = |c: &std::process::Child| format!("-{}-", c.id());
    let victim_index = children
        .0
        .iter()
        .position(|c| c.as_ref().is_some_and(|c| holder.contains(&pid(c))))
        .unwrap_or_else(|| panic!("no instance holds the planner lease ({holder})"));
    let mut victim = children.0[victim_index].take().unwrap();
    victim.kill().unwrap();
    victim.wait().unwrap();
    let killed_at = sink.lock().unwrap().accepted.len();
    let killed_when = Instant::now();

    // Wait until the store has nothing left to do now: every message sent
    // or deferred by the cap, none claimed or planned.
    let store = duebell::store::open(&duebell::config::StoreConfig {
        url: url.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    loop {
        let counts: HashMap<MessageState, u64> =
            store.message_counts().await.unwrap().into_iter().collect();
        let busy = counts.get(&MessageState::Planned).copied().unwrap_or(0)
            + counts.get(&MessageState::Sending).copied().unwrap_or(0);
        let total: u64 = counts.values().sum();
        // Borrowers with no email also have an email message, suppressed.
        if total == 2 * (SMS_ONLY + BOTH) as u64 && busy == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not done: {counts:?}\n{}\n{}",
            tail(&logs[0]),
            tail(&logs[2])
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (new_holder, new_token) = planner().await;
    assert!(
        new_holder != holder && new_token > token,
        "{new_holder} {new_token}"
    );
    for child in children.0.iter_mut().flatten() {
        let pid = child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
    }
    for child in children.0.iter_mut().flatten() {
        assert!(child.wait().unwrap().success());
    }

    let all = store.messages(&Default::default()).await.unwrap();
    let counts = store.message_counts().await.unwrap();
    let sink = std::mem::take(&mut *sink.lock().unwrap());
    // How each repeated message's sends were reconciled.
    let mut reconciled = HashMap::new();
    for key in &sink.repeats {
        let events = store.message_events(key.parse().unwrap()).await.unwrap();
        reconciled.insert(
            key.clone(),
            events
                .iter()
                .filter_map(|e| e.reason.clone())
                .filter(|r| r.starts_with("interrupted"))
                .collect::<Vec<_>>(),
        );
    }
    store.close().await;
    let sent: Vec<_> = all
        .iter()
        .filter(|m| m.state == MessageState::Sent)
        .collect();
    let deferred: Vec<_> = all
        .iter()
        .filter(|m| m.state == MessageState::Deferred)
        .collect();
    // Exactly once: every sent message reached the gateway, nothing else did.
    assert_eq!(sent.len(), expected, "{counts:?}");
    assert!(
        !counts.iter().any(|(s, n)| *n > 0
            && matches!(
                s,
                MessageState::Sending | MessageState::Unknown | MessageState::Failed
            )),
        "{counts:?}"
    );
    let sent_keys: HashSet<String> = sent.iter().map(|m| m.id.to_string()).collect();
    let accepted: HashSet<String> = sink.accepted.keys().cloned().collect();
    assert_eq!(accepted, sent_keys);
    // A repeat can only be the replay of a send the killed instance had in
    // flight (it never reaches the borrower: the gateway drops it), no more
    // than the instance's sends in flight (the gateway's `concurrency`, 8 by
    // default) at once. Its store history says so: reconciled as
    // interrupted, which happens only to a claim whose lease ran out (the
    // live instances renew theirs). Its first arrival can come after the
    // kill: the gateway may read a request the instance wrote just before
    // it died.
    assert!(sink.repeats.len() <= 8, "repeats: {:?}", sink.repeats);
    for key in &sink.repeats {
        assert!(
            !reconciled[key].is_empty(),
            "{key} repeated but never reconciled as interrupted (first at {:?} after the kill)",
            sink.accepted[key].1.checked_duration_since(killed_when)
        );
    }
    // The cap held across instances: one contact per borrower today; each
    // borrower with two channels has the other deferred by the cap.
    let mut per_borrower: HashMap<&str, usize> = HashMap::new();
    for (borrower, _) in sink.accepted.values() {
        *per_borrower.entry(borrower.as_str()).or_default() += 1;
    }
    assert_eq!(per_borrower.len(), expected);
    assert!(per_borrower.values().all(|&n| n == 1));
    assert_eq!(deferred.len(), BOTH);
    assert!(deferred
        .iter()
        .all(|m| m.reason.as_deref().unwrap_or("").contains("one_a_day")));
    // The aggregate rate: no one-second window at the gateway holds more
    // than the configured rate.
    let mut times: Vec<Instant> = sink.accepted.values().map(|v| v.1).collect();
    times.sort();
    let mut busiest = 0;
    let mut lo = 0;
    for hi in 0..times.len() {
        while times[hi].duration_since(times[lo]) >= Duration::from_secs(1) {
            lo += 1;
        }
        busiest = busiest.max(hi - lo + 1);
    }
    assert!(busiest <= RATE, "{busiest} in one second at {RATE}/s");
    // All three shared the work, and the killed one's claims were recovered.
    let logs_text: Vec<String> = logs
        .iter()
        .map(|l| std::fs::read_to_string(l).unwrap())
        .collect();
    for (i, text) in logs_text.iter().enumerate() {
        assert!(
            text.contains("sent"),
            "instance {i} sent nothing:\n{}",
            tail(&logs[i])
        );
    }
    eprintln!(
        "cluster: {} sent, {} deferred by the cap, {} repeats dropped, killed after {killed_at}, busiest second {busiest}/{RATE}",
        sent.len(),
        deferred.len(),
        sink.repeats.len()
    );
}
