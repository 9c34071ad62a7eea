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
/// no caps, claim and planner leases of one second (a daemon killed while
/// it held the planner role must not keep the next one from planning).
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
             [daemon]\nclaim_lease = \"1s\"\nplanner_lease = \"1s\"\nstop_deadline = \"1s\"\n\n\
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

/// Every message in the store under `dir`.
async fn every_message(dir: &std::path::Path) -> Vec<duebell::store::MessageView> {
    let store = open_store(dir).await;
    let messages = store
        .messages(&MessageQuery {
            limit: Some(10_000),
            ..Default::default()
        })
        .await
        .unwrap();
    store.close().await;
    messages
}

/// `rounds` daemons, each killed with SIGKILL at a moment drawn from `seed`.
async fn storm(cfg: &std::path::Path, rounds: usize, seed: u64) {
    let mut rng = Lcg(seed);
    for _ in 0..rounds {
        let mut child = duebell(&["run", "--config", cfg.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300 + rng.next(700))).await;
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

/// Two full cycles: reconcile what the kills interrupted, send the rest.
fn settle(cfg: &std::path::Path) {
    for _ in 0..2 {
        let (code, _, stderr) = run(duebell(&[
            "run",
            "--once",
            "--config",
            cfg.to_str().unwrap(),
        ]));
        assert_eq!(code, 0, "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_moments_while_sending_nothing_is_doubled_or_lost() {
    const ROUNDS: usize = 8;
    const LOANS: usize = 60;
    let server = gateway().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &server.uri(), LOANS);
    storm(&cfg, ROUNDS, 0x5eed).await;
    // Every claim's lease runs out; then one cycle reconciles what the kills
    // interrupted and sends what is left.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    settle(&cfg);

    let mut at_gateway: HashMap<String, usize> = HashMap::new();
    for r in server.received_requests().await.unwrap() {
        let key = r.headers.get("idempotency-key").unwrap().to_str().unwrap();
        *at_gateway.entry(key.to_owned()).or_default() += 1;
    }
    let messages = every_message(dir.path()).await;
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

/// What a Twilio stand-in has accepted: (sid, To, created at).
type Accepted =
    std::sync::Arc<std::sync::Mutex<Vec<(String, String, chrono::DateTime<chrono::Utc>)>>>;

/// A Twilio stand-in: a send is recorded the moment it arrives (as Twilio
/// creates the resource when it accepts the POST) and answered 40 ms later;
/// the message list answers look-ups from the same record. With `stall`
/// set, every send after the first `answered` is held for an hour instead.
struct TwilioStandIn(Accepted, Option<Stall>);

/// Holds sends unanswered: those after the first `answered`, until
/// `released`.
#[derive(Clone)]
struct Stall {
    answered: usize,
    released: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl wiremock::Respond for TwilioStandIn {
    fn respond(&self, req: &wiremock::Request) -> ResponseTemplate {
        let mut accepted = self.0.lock().unwrap();
        if req.method == wiremock::http::Method::POST {
            let to = url::form_urlencoded::parse(&req.body)
                .find(|(k, _)| k == "To")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            let sid = format!("SM{:06}", accepted.len());
            accepted.push((sid.clone(), to, chrono::Utc::now()));
            let stalled = self.1.as_ref().is_some_and(|s| {
                accepted.len() > s.answered && !s.released.load(std::sync::atomic::Ordering::SeqCst)
            });
            let delay = match stalled {
                true => Duration::from_secs(3600),
                false => Duration::from_millis(40),
            };
            return ResponseTemplate::new(201)
                .set_body_json(serde_json::json!({"sid": sid, "status": "queued"}))
                .set_delay(delay);
        }
        let to = req
            .url
            .query_pairs()
            .find(|(k, _)| k == "To")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let list: Vec<serde_json::Value> = accepted
            .iter()
            .filter(|(_, t, _)| *t == to)
            .map(|(sid, t, at)| {
                serde_json::json!({"sid": sid, "to": t, "from": "+15005550006",
                                   "date_created": at.to_rfc2822()})
            })
            .collect();
        ResponseTemplate::new(200).set_body_json(serde_json::json!({ "messages": list }))
    }
}

/// The same storm through a provider that can be asked: every message the
/// kills left in flight is looked up (found → sent; provably never
/// received, two minutes on → sent again through the normal claim), so
/// none is left `unknown` for a person: 0 duplicates, 0 lost, 0 unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_sending_through_a_provider_that_answers_look_ups_nothing_is_left_unknown() {
    const ROUNDS: usize = 8;
    const LOANS: usize = 40;
    let accepted: Accepted = Default::default();
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(TwilioStandIn(accepted.clone(), None))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &server.uri(), LOANS);
    as_twilio(&cfg);
    storm(&cfg, ROUNDS, 0xc0ffee).await;
    // Twilio's record is complete two minutes after an attempt: past that,
    // every look-up has an answer.
    tokio::time::sleep(Duration::from_secs(125)).await;
    settle(&cfg);
    let mut per_number: HashMap<String, usize> = HashMap::new();
    for (_, to, _) in accepted.lock().unwrap().iter() {
        *per_number.entry(to.clone()).or_default() += 1;
    }
    let messages = every_message(dir.path()).await;
    let duplicates: usize = per_number.values().map(|n| n - 1).sum();
    let unknown = messages
        .iter()
        .filter(|m| m.state == MessageState::Unknown)
        .count();
    let lost = LOANS.saturating_sub(messages.len())
        + messages
            .iter()
            .filter(|m| m.state != MessageState::Sent)
            .count()
        + LOANS.saturating_sub(per_number.len());
    println!(
        "chaos with look-ups ({:?}): {ROUNDS} kill -9s while sending {LOANS} messages: {duplicates} duplicates, {lost} lost, {unknown} unknown, {} delivered",
        crate::BACKEND,
        per_number.len()
    );
    assert_eq!(duplicates, 0, "{per_number:?}");
    assert_eq!(unknown, 0, "{messages:#?}");
    assert_eq!(lost, 0, "{messages:#?}");
}

/// Turns `config`'s webhook gateway into a Twilio account at the same URL.
fn as_twilio(cfg: &std::path::Path) {
    let text = std::fs::read_to_string(cfg).unwrap().replace(
        "kind = \"webhook\"\nurl = ",
        "kind = \"twilio\"\naccount_sid = \"AC0123456789abcdef0123456789abcdef\"\nauth_token = \"twilio-auth-token-123\"\nfrom = \"+15005550006\"\nconcurrency = 8\nurl = ",
    );
    let text = text.replace("secret = \"webhook-secret-0123456789\"\n", "");
    std::fs::write(cfg, text).unwrap();
}

/// The daemon claims eight messages in one transaction and sends them at
/// once; the provider answers three and holds the rest; the daemon is
/// killed with SIGKILL mid-batch. After restart each message of the batch
/// ends exactly once: found at the provider and recorded `sent`, none sent
/// again, none left `sending` or `unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_batch_each_message_of_the_batch_ends_exactly_once() {
    const LOANS: usize = 8;
    let accepted: Accepted = Default::default();
    let stall = Stall {
        answered: 3,
        released: Default::default(),
    };
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(TwilioStandIn(accepted.clone(), Some(stall.clone())))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &server.uri(), LOANS);
    as_twilio(&cfg);
    let mut child = duebell(&["run", "--config", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while accepted.lock().unwrap().len() < LOANS {
        assert!(
            std::time::Instant::now() < deadline,
            "the batch never went out"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the three answers be recorded, then kill with five in flight.
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    stall
        .released
        .store(true, std::sync::atomic::Ordering::SeqCst);

    let killed = every_message(dir.path()).await;
    assert_eq!(killed.len(), LOANS);
    let sending = killed
        .iter()
        .filter(|m| m.state == MessageState::Sending)
        .count();
    assert!(sending >= LOANS - 3, "{killed:#?}");
    // One claim transaction: every message went `sending` at one instant.
    let store = open_store(dir.path()).await;
    let mut claimed_at = std::collections::HashSet::new();
    for m in &killed {
        let events = store.message_events(m.id).await.unwrap();
        let claim = events
            .iter()
            .find(|e| e.to == MessageState::Sending)
            .unwrap_or_else(|| panic!("{events:#?}"));
        claimed_at.insert(claim.at);
    }
    store.close().await;
    assert_eq!(claimed_at.len(), 1, "not one batch: {claimed_at:?}");

    // The claim leases run out; a restart asks the provider about each.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    settle(&cfg);
    let messages = every_message(dir.path()).await;
    let store = open_store(dir.path()).await;
    for m in &messages {
        assert_eq!(m.state, MessageState::Sent, "{m:#?}");
        let events = store.message_events(m.id).await.unwrap();
        let ended = events.iter().filter(|e| e.to == MessageState::Sent).count();
        assert_eq!(ended, 1, "{events:#?}");
    }
    store.close().await;
    let accepted = accepted.lock().unwrap();
    let numbers: std::collections::HashSet<&String> = accepted.iter().map(|a| &a.1).collect();
    assert_eq!(accepted.len(), LOANS, "sent again: {accepted:?}");
    assert_eq!(numbers.len(), LOANS);
    println!(
        "killed mid-batch ({:?}): {sending} of {LOANS} in flight at the kill; all {LOANS} sent once",
        crate::BACKEND
    );
}
