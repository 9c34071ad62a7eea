//! Chaos: the daemon killed with SIGKILL at random moments while it sends,
//! round after round, then left to finish. Every message must end exactly
//! once at the gateway or be held `unknown` for a person, never both, never
//! neither: 0 duplicates, 0 lost. Prints the counts (README: Reliability).
//! Runs on SQLite (`it`) and PostgreSQL (`it_pg`).

use std::collections::HashMap;
use std::time::Duration;

use duebell::store::{MessageQuery, MessageState};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{duebell, open_store, run, write_config, LOAN_HEADER};

/// A gateway that takes 40 ms per send, so kills land mid-send.
async fn gateway() -> MockServer {
    slow_gateway(Duration::from_millis(40)).await
}

/// A gateway that answers every send after `delay`.
pub async fn slow_gateway(delay: Duration) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"id": "gw"}))
                .set_delay(delay),
        )
        .mount(&server)
        .await;
    server
}

/// A daemon config sending `n` SMS due today through `gateway`, any hour,
/// no caps, claim leases of one second.
pub fn config(dir: &std::path::Path, gateway: &str, n: usize) -> std::path::PathBuf {
    let today = chrono::Utc::now().date_naive();
    let mut book = format!("{LOAN_HEADER}\n");
    for i in 0..n {
        book.push_str(&format!(
            "C{i},CB{i},Kim Park,+1212555{:04},,en,UTC,{today},10.00,USD\n",
            1000 + i
        ));
    }
    let book_path = dir.join("book.csv");
    std::fs::write(&book_path, book).unwrap();
    write_config(
        dir,
        &format!(
            "[[policy.steps]]\nid = \"due\"\noffset_days = 0\nchannels = [\"sms\"]\ntemplate = \"due_today\"\nstage = \"friendly\"\n\n\
             [quiet_hours]\n[[quiet_hours.rules]]\nname = \"any\"\nevery_day = [\"00:00-24:00\"]\n\n\
             [caps]\nrules = []\n\n\
             [[providers]]\nname = \"gateway\"\nkind = \"webhook\"\nurl = \"{gateway}\"\nsecret = \"webhook-secret-0123456789\"\ntimeout = \"30s\"\n\n\
             [routing]\nsms = [\"gateway\"]\nemail = [\"gateway\"]\n\n\
             [api]\nlisten = \"\"\n\n\
             [daemon]\nclaim_lease = \"1s\"\nstop_deadline = \"1s\"\n\n\
             [[sources]]\nkind = \"file\"\npath = \"{}\"\npoll_interval = \"1s\"\n",
            book_path.display()
        ),
    )
}

/// A small deterministic generator: the same kill moments every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_moments_while_sending_nothing_is_doubled_or_lost() {
    const ROUNDS: usize = 8;
    const LOANS: usize = 60;
    let server = gateway().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &server.uri(), LOANS);
    let mut rng = Lcg(0x5eed);
    for _ in 0..ROUNDS {
        let mut child = duebell(&["run", "--config", cfg.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300 + rng.next(700))).await;
        child.kill().unwrap();
        child.wait().unwrap();
    }
    // Every claim's lease runs out; then one cycle reconciles what the kills
    // interrupted and sends what is left.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..2 {
        let (code, _, stderr) = run(duebell(&[
            "run",
            "--once",
            "--config",
            cfg.to_str().unwrap(),
        ]));
        assert_eq!(code, 0, "{stderr}");
    }

    let mut at_gateway: HashMap<String, usize> = HashMap::new();
    for r in server.received_requests().await.unwrap() {
        let key = r.headers.get("idempotency-key").unwrap().to_str().unwrap();
        *at_gateway.entry(key.to_owned()).or_default() += 1;
    }
    let store = open_store(dir.path()).await;
    let messages = store
        .messages(&MessageQuery {
            limit: Some(10_000),
            ..Default::default()
        })
        .await
        .unwrap();
    store.close().await;
    let duplicates: usize = at_gateway.values().map(|n| n - 1).sum();
    let unknown = messages
        .iter()
        .filter(|m| m.state == MessageState::Unknown)
        .count();
    // Lost: a loan with no message, a message left in flight or undecided,
    // or one marked sent that never reached the gateway.
    let lost = LOANS.saturating_sub(messages.len())
        + messages
            .iter()
            .filter(|m| match m.state {
                MessageState::Sent => !at_gateway.contains_key(&m.id.to_string()),
                MessageState::Unknown => false,
                _ => true,
            })
            .count();
    println!(
        "chaos ({:?}): {ROUNDS} kill -9s while sending {LOANS} messages: {duplicates} duplicates, {lost} lost, {unknown} unknown (held for a person), {} delivered",
        crate::BACKEND,
        at_gateway.len()
    );
    assert_eq!(duplicates, 0, "{at_gateway:?}");
    assert_eq!(lost, 0, "{messages:#?}");
    assert_eq!(messages.len(), LOANS);
}
