//! The HTTP API against a daemon running in-process on port 0.

use std::sync::Arc;
use std::time::Duration;

use duebell::app::App;
use duebell::clock::TestClock;
use duebell::domain::Channel;
use duebell::store::MessageState;
use tokio_util::sync::CancellationToken;

use crate::support::{book, shipped_config, utc};

pub const TOKEN: &str = "test-token-0123456789abcdef";

struct Daemon {
    base: String,
    store: Arc<dyn duebell::store::Store>,
    clock: TestClock,
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    cycles: tokio::sync::watch::Receiver<u64>,
}

impl Daemon {
    async fn start(at: &str, rows: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let bookfile = dir.path().join("book.csv");
        std::fs::write(&bookfile, book(rows)).unwrap();
        let mut config = shipped_config(dir.path(), &[]);
        config.api.listen = "127.0.0.1:0".into();
        config.api.public_url = "https://lender.example.com/duebell".into();
        config.api.tokens = vec![TOKEN.into()];
        config.sources = vec![duebell::config::SourceConfig {
            kind: duebell::config::SourceKind::File,
            path: bookfile,
            poll_interval: duebell::config::ConfigDuration(Duration::from_millis(100)),
        }];
        let clock = TestClock::at(utc(at));
        let app = App::build(config, Arc::new(clock.clone())).await.unwrap();
        let store = app.store();
        let crate::support::Running {
            addr,
            cycles,
            shutdown,
            task,
        } = crate::support::spawn_daemon(app).await;
        Daemon {
            base: format!("http://{addr}"),
            store,
            clock,
            dir,
            shutdown,
            task,
            cycles,
        }
    }

    async fn next_cycle(&mut self) {
        tokio::time::timeout(Duration::from_secs(30), self.cycles.changed())
            .await
            .unwrap()
            .unwrap();
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

/// A daemon for one fuzz case: its base URL and what stops it.
#[allow(
    dead_code,
    reason = "used by `it`'s fuzz module; `it_pg` includes this file without it"
)]
pub async fn daemon_for_fuzz() -> (String, impl std::future::Future<Output = ()>) {
    let d = Daemon::start("2026-12-01T02:00:00Z", &[AMY]).await;
    (d.base.clone(), d.stop())
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// What `/metrics` answers now.
async fn metrics_text(c: &reqwest::Client, base: &str) -> String {
    c.get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

const AMY: &str =
    "A1,BA,Amy Chen,+8613812345678,amy@example.com,en,Asia/Shanghai,2026-12-10,100.00,CNY,active";

#[tokio::test]
async fn only_v1_needs_a_token_and_it_must_be_the_right_one() {
    let d = Daemon::start("2026-12-01T02:00:00Z", &[AMY]).await;
    let c = client();
    for open in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert_eq!(
            c.get(format!("{}{open}", d.base))
                .send()
                .await
                .unwrap()
                .status(),
            200,
            "{open}"
        );
    }
    let url = format!("{}/v1/status", d.base);
    assert_eq!(c.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(
        c.get(&url)
            .bearer_auth("wrong-token-0123456789")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let ok = c.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let status: serde_json::Value = ok.json().await.unwrap();
    assert!(
        status["summary"].as_str().unwrap().starts_with("due "),
        "{status}"
    );
    d.stop().await;
}

#[tokio::test]
async fn every_route_in_openapi_exists_and_every_route_is_in_it() {
    let d = Daemon::start("2026-12-01T02:00:00Z", &[AMY]).await;
    let c = client();
    let doc: serde_json::Value = c
        .get(format!("{}/openapi.json", d.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut listed: Vec<(String, String)> = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            listed.push((method.clone(), path.clone()));
        }
    }
    listed.sort();
    let mut routes: Vec<(String, String)> = duebell::api::routes::documented()
        .into_iter()
        .chain(duebell::console::documented())
        .map(|(m, p)| (m.to_owned(), p.to_owned()))
        .collect();
    routes.sort();
    assert_eq!(listed, routes);
    for (method, path) in &listed {
        let concrete = path
            .replace("{token}", "m1.00")
            .replace("{loan_id}", "A1")
            .replace("{hold_id}", "999")
            .replace("{borrower_id}", "BA")
            .replace("{locale}", "en")
            .replace("{name}", "due_today")
            .replace("{channel}", "sms")
            .replace("{message_id}", "999");
        let req = c
            .request(
                method.to_uppercase().parse().unwrap(),
                format!("{}{concrete}", d.base),
            )
            .bearer_auth(TOKEN);
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap();
        // An unrouted request is a 404 with an empty body or a 405; the
        // handlers' own 404s and 4xxs carry a JSON or HTML body.
        assert!(
            status != 405 && !(status == 404 && body.is_empty()),
            "{method} {path}: {status}"
        );
    }
    d.stop().await;
}

#[tokio::test]
async fn one_click_unsubscribe_opts_out_on_post_only_and_repeats_are_harmless() {
    // Due day at 10:30 local: the email goes out on the first cycle.
    let mut d = Daemon::start("2026-12-10T02:30:00Z", &[AMY]).await;
    let eml = loop {
        let found = std::fs::read_dir(d.dir.path().join("outbox"))
            .ok()
            .and_then(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .find(|p| p.extension().is_some_and(|x| x == "eml"))
            });
        if let Some(p) = found {
            break std::fs::read_to_string(p).unwrap();
        }
        d.next_cycle().await;
    };
    assert!(
        eml.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
        "{eml}"
    );
    let link = eml
        .lines()
        .find_map(|l| l.strip_prefix("List-Unsubscribe: <"))
        .unwrap()
        .trim_end_matches('>')
        .to_owned();
    assert!(
        link.starts_with("https://lender.example.com/duebell/u/m"),
        "{link}"
    );
    let local = format!("{}/u/{}", d.base, link.rsplit('/').next().unwrap());
    let opted_out = |s: Arc<dyn duebell::store::Store>| async move {
        s.plan_borrower("BA", utc("2026-12-10T00:00:00Z"))
            .await
            .unwrap()
            .unwrap()
            .contact(Channel::Email)
            .unwrap()
            .opted_out
    };
    let c = client();
    // GET (a link scanner) shows a page and changes nothing.
    let page = c.get(&local).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("method=\"post\""));
    assert!(!opted_out(d.store.clone()).await);
    // POST with no cookies or auth unsubscribes; a repeat is harmless.
    for _ in 0..2 {
        let r = c
            .post(&local)
            .form(&[("List-Unsubscribe", "One-Click")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert!(opted_out(d.store.clone()).await);
    // A forged token is refused.
    let forged = format!("{}/u/m1.{}", d.base, "0".repeat(32));
    assert_eq!(c.post(&forged).send().await.unwrap().status(), 404);
    d.stop().await;
}

#[tokio::test]
async fn an_opt_out_through_the_api_cancels_the_planned_message() {
    // 08:00 local on the due day: planned for the 10:00 preferred time.
    let d = Daemon::start("2026-12-10T00:00:00Z", &[AMY]).await;
    let planned = d.store.messages(&Default::default()).await.unwrap();
    assert!(
        planned
            .iter()
            .any(|m| m.channel == Channel::Sms && m.state == MessageState::Planned),
        "{planned:#?}"
    );
    let c = client();
    let r = c
        .post(format!("{}/v1/opt-outs", d.base))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"borrower_id": "BA", "channel": "sms"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    d.clock.set(utc("2026-12-10T03:00:00Z"));
    let store = d.store.clone();
    let mut d = d;
    for _ in 0..50 {
        let sms = store
            .messages(&Default::default())
            .await
            .unwrap()
            .into_iter()
            .find(|m| m.channel == Channel::Sms)
            .unwrap();
        if sms.state == MessageState::Cancelled {
            assert!(sms.reason.unwrap().contains("opted out"));
            d.stop().await;
            return;
        }
        d.next_cycle().await;
    }
    panic!("the SMS was not cancelled");
}

#[tokio::test]
async fn bad_requests_name_the_field_and_payments_are_idempotent() {
    let d = Daemon::start("2026-12-01T02:00:00Z", &[AMY]).await;
    let c = client();
    let post = |body: serde_json::Value| {
        c.post(format!("{}/v1/payments", d.base))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };
    let r = post(serde_json::json!({"payment_id": "P1", "loan_id": "A1", "amount": "1,000", "paid_at": "2026-12-01T00:00:00Z"})).await.unwrap();
    assert_eq!(r.status(), 422);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["field"], "amount", "{e}");
    let r = post(serde_json::json!({"payment_id": "P1", "loan_id": "A1", "amount": "10", "paid_at": "2026-12-01T00:00:00Z", "note": "x"})).await.unwrap();
    assert_eq!(r.status(), 422);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["field"], "note", "{e}");
    let good = serde_json::json!({"payment_id": "P1", "loan_id": "A1", "amount": "100.00", "paid_at": "2026-12-01T00:00:00Z"});
    assert_eq!(post(good.clone()).await.unwrap().status(), 201);
    let again: serde_json::Value = post(good).await.unwrap().json().await.unwrap();
    assert_eq!(again["result"], "unchanged");
    // The same payment id with another amount is refused, not applied over
    // the first.
    let r = post(serde_json::json!({"payment_id": "P1", "loan_id": "A1", "amount": "5.00", "paid_at": "2026-12-01T00:00:00Z"})).await.unwrap();
    assert_eq!(r.status(), 422);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["field"], "amount", "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("already recorded as 100.00"),
        "{e}"
    );
    let loan = d
        .store
        .loan(&duebell::domain::LoanId::parse("A1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loan.status, duebell::domain::LoanStatus::Paid);
    let r = c
        .post(format!("{}/v1/holds", d.base))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"loan_id": "A1", "kind": "promise_to_pay"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["field"],
        "until"
    );
    d.stop().await;
}

#[tokio::test]
async fn pause_stops_sending_and_metrics_show_the_outbox() {
    let d = Daemon::start("2026-12-10T00:00:00Z", &[AMY]).await;
    let c = client();
    assert_eq!(
        c.post(format!("{}/v1/pause", d.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    d.clock.set(utc("2026-12-10T03:00:00Z"));
    let mut d = d;
    d.next_cycle().await;
    d.next_cycle().await;
    let pending = d
        .store
        .messages(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.state.is_pending())
        .count();
    assert!(pending > 0, "paused, yet sent");
    let metrics = metrics_text(&c, &d.base).await;
    assert!(metrics.contains("duebell_paused 1"), "{metrics}");
    assert!(
        metrics.contains(&format!("duebell_outbox_depth {pending}")),
        "{metrics}"
    );
    assert!(
        metrics.contains("duebell_messages{state=\"planned\",channel=\"sms\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("duebell_planner_tick_seconds_count"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "duebell_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{metrics}"
    );
    assert_eq!(
        c.post(format!("{}/v1/resume", d.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    for _ in 0..50 {
        if d.store
            .messages(&Default::default())
            .await
            .unwrap()
            .iter()
            .all(|m| !m.state.is_pending())
        {
            let timeline: serde_json::Value = c
                .get(format!("{}/v1/borrowers/BA/timeline", d.base))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let first = &timeline["messages"][0];
            assert!(
                first["message"]["address"]
                    .as_str()
                    .unwrap()
                    .contains("****")
                    || first["message"]["address"]
                        .as_str()
                        .unwrap()
                        .contains("***@")
            );
            assert!(first["events"].as_array().unwrap().len() >= 2, "{timeline}");
            // Offers the borrower was made (none at this step).
            assert!(timeline["offers"].is_array(), "{timeline}");
            // Lifting a bounce that is not there says so; a bad address is a 422.
            for (body, status) in [
                (r#"{"channel":"email","address":"nobody@example.com"}"#, 404),
                (r#"{"channel":"email","address":"not an address"}"#, 422),
            ] {
                let r = c
                    .post(format!("{}/v1/bounces/lift", d.base))
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), status, "{body}");
            }
            d.stop().await;
            return;
        }
        d.next_cycle().await;
    }
    panic!("nothing was sent after resume");
}

#[tokio::test]
async fn hostile_requests_get_json_errors_and_unknown_providers_are_refused() {
    let d = Daemon::start("2026-12-01T02:00:00Z", &[AMY]).await;
    let c = client();
    // RFC 7235: the scheme name is case-insensitive.
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let r = c
            .get(format!("{}/v1/status", d.base))
            .header("authorization", format!("{scheme} {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{scheme}");
    }
    // A hold id that is not a number: a JSON error naming it, not text.
    let r = c
        .delete(format!("{}/v1/holds/abc", d.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["field"], "hold_id", "{body}");
    // Pausing or resuming a provider that does not exist is refused; the
    // configured one works.
    for action in ["pause", "resume"] {
        let r = c
            .post(format!("{}/v1/{action}", d.base))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"provider": "nope"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{action}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("outbox"), "{body}");
        let r = c
            .post(format!("{}/v1/{action}", d.base))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"provider": "outbox"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{action}");
    }
    d.stop().await;
}

#[tokio::test]
async fn the_openapi_document_passes_a_standard_validator() {
    let d = Daemon::start("2026-12-01T02:00:00Z", &[AMY]).await;
    let doc = client()
        .get(format!("{}/openapi.json", d.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    d.stop().await;
    let file = tempfile::NamedTempFile::with_suffix(".json").unwrap();
    std::fs::write(file.path(), doc).unwrap();
    // openapi-spec-validator (PyPI; .ci/run installs it): what client
    // generators run before they trust a document.
    let out = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(file.path())
        .output()
        .expect("python3 runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !said.contains("No module named"),
        "install the validator: pip install openapi-spec-validator"
    );
    assert!(out.status.success(), "{said}");
}

#[tokio::test]
async fn every_series_the_readme_documents_is_in_metrics_from_the_first_scrape() {
    let readme = std::fs::read_to_string(crate::support::repo_root().join("README.md")).unwrap();
    let row = readme
        .lines()
        .find(|l| l.starts_with("| `GET /metrics`"))
        .expect("the README documents /metrics");
    let documented: std::collections::BTreeSet<String> = row
        .split('`')
        .filter(|w| w.starts_with("duebell_"))
        .map(|w| w.split('{').next().unwrap().to_owned())
        .collect();
    assert!(documented.len() >= 10, "{documented:?}");
    let d = Daemon::start("2026-12-01T02:00:00Z", &[AMY]).await;
    let text = client()
        .get(format!("{}/metrics", d.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    d.stop().await;
    let missing: Vec<&String> = documented
        .iter()
        .filter(|name| {
            !text
                .lines()
                .any(|l| !l.starts_with('#') && l.starts_with(name.as_str()))
        })
        .collect();
    assert!(missing.is_empty(), "not in /metrics: {missing:?}\n{text}");
}

/// A payment through the API cancels that borrower's planned messages
/// before the response goes back, and re-plans no one else (issue:
/// performance at book scale, P9).
#[tokio::test]
async fn a_payment_through_the_api_cancels_that_borrowers_messages_before_it_answers() {
    const BEN: &str =
        "B1,BB,Ben Li,+8613812345679,ben@example.com,en,Asia/Shanghai,2026-12-10,50.00,CNY,active";
    // 08:00 local on the due day: both planned for the 10:00 preferred time.
    let d = Daemon::start("2026-12-10T00:00:00Z", &[AMY, BEN]).await;
    let before = d.store.messages(&Default::default()).await.unwrap();
    let planned = |b: &str| {
        before
            .iter()
            .filter(|m| m.borrower_id == b && m.state == MessageState::Planned)
            .count()
    };
    assert!(planned("BA") > 0 && planned("BB") > 0, "{before:#?}");
    let c = client();
    let ticks = || async {
        // `duebell_planner_tick_seconds_count{} N`
        let text = metrics_text(&c, &d.base).await;
        let line = text
            .lines()
            .find(|l| l.starts_with("duebell_planner_tick_seconds_count"))
            .unwrap_or_else(|| panic!("no planner tick count in {text}"))
            .to_owned();
        line.split_whitespace()
            .last()
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    let ticks_before = ticks().await;
    assert!(ticks_before >= 1.0, "the daemon planned at start");
    let r = c
        .post(format!("{}/v1/payments", d.base))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"payment_id": "P1", "loan_id": "A1", "amount": "100.00", "paid_at": "2026-12-10T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Already cancelled when the answer arrives; Ben's messages untouched.
    let after = d.store.messages(&Default::default()).await.unwrap();
    for m in &after {
        let was = before.iter().find(|b| b.id == m.id).unwrap();
        if m.borrower_id == "BA" && was.state == MessageState::Planned {
            assert_eq!(m.state, MessageState::Cancelled, "{m:#?}");
            assert!(m.reason.as_deref().unwrap_or("").contains("paid"), "{m:#?}");
        } else {
            assert_eq!(m.state, was.state, "{m:#?}");
        }
    }
    // No planning pass ran for it (the daemon used to plan the whole book
    // after every API change, and wake at once to do so).
    assert_eq!(ticks().await, ticks_before, "the book was planned again");
    d.stop().await;
}
