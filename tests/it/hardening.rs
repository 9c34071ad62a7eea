//! Defects found by trying duebell as a hostile new user (issue 15), each
//! with the test that failed before its fix: `check`, start-up and reloads
//! apply one set of rules; no template can run away; no routing that can
//! never send passes.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{duebell, run};
use crate::templates::config_with_templates;

fn write(dir: &Path, rel: &str, text: &str) {
    std::fs::write(dir.join("templates").join(rel), text).unwrap();
}

/// `check` and `run --once` on `cfg`: both must refuse with exit 2 and say
/// `needle`.
fn refused_by_check_and_run(cfg: &Path, needle: &str) {
    for cmd in [vec!["check"], vec!["run", "--once"]] {
        let mut args = cmd.clone();
        args.extend(["--config", cfg.to_str().unwrap()]);
        let (code, _, stderr) = run(duebell(&args));
        assert_eq!(code, 2, "{cmd:?} accepted it:\n{stderr}");
        assert!(
            stderr.contains(needle),
            "{cmd:?}: no {needle:?} in\n{stderr}"
        );
    }
}

#[test]
fn run_refuses_a_template_without_its_opt_out_line_as_check_does() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with_templates(dir.path(), "");
    write(
        dir.path(),
        "en/tomorrow.sms.j2",
        "{{ lender.name }}: Hi {{ borrower.name }}, {{ loan.amount_due | money(loan.currency) }} is due tomorrow.\n",
    );
    refused_by_check_and_run(&cfg, "does not include the required opt_out");
}

#[test]
fn a_misspelt_variable_in_a_branch_no_sample_reaches_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with_templates(dir.path(), "");
    let original =
        std::fs::read_to_string(dir.path().join("templates/en/tomorrow.sms.j2")).unwrap();
    write(
        dir.path(),
        "en/tomorrow.sms.j2",
        &format!(
            "{{% if loan.days_past_due > 100000 %}}{{{{ borrower.nmae }}}}{{% endif %}}{original}"
        ),
    );
    refused_by_check_and_run(&cfg, "uses `borrower.nmae`, which no message has");
}

#[test]
fn a_runaway_template_is_refused_within_a_moment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with_templates(dir.path(), "");
    let original =
        std::fs::read_to_string(dir.path().join("templates/en/tomorrow.sms.j2")).unwrap();
    write(
        dir.path(),
        "en/tomorrow.sms.j2",
        &format!(
            "{original}{{% for i in range(100000) %}}{{% for j in range(100000) %}}{{% endfor %}}{{% endfor %}}"
        ),
    );
    let started = Instant::now();
    refused_by_check_and_run(&cfg, "a loop runs too long");
    // Before the fix `templates check` ran for minutes; the bound is loose
    // on purpose (two commands, a debug build, a busy machine).
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn an_email_body_larger_than_a_message_may_be_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with_templates(dir.path(), "");
    // A standalone body (content outside the blocks of an extending
    // template is not rendered), 320 KB of it.
    write(
        dir.path(),
        "en/due_today/body.html.j2",
        &format!(
            "<p>{{{{ lender.name }}}}</p><p>{}</p><p>{{{{ opt_out }}}}</p>",
            "padding ".repeat(40_000)
        ),
    );
    refused_by_check_and_run(&cfg, "renders more than 256 KiB");
}

#[test]
fn a_policy_step_naming_a_missing_template_stops_run_as_it_stops_check() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with_templates(dir.path(), "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "template = \"late_help\"",
        "template = \"no_such_template\"",
    );
    std::fs::write(&cfg, text).unwrap();
    refused_by_check_and_run(&cfg, "sends template `no_such_template`");
}

#[test]
fn check_refuses_routing_sms_through_aliyun_without_a_template_code() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with_templates(
        dir.path(),
        "[[providers]]\nname = \"ali\"\nkind = \"aliyun\"\naccess_key_id = \"id\"\naccess_key_secret = \"secret\"\nsign_name = \"示例金融\"\n",
    );
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("sms = [\"outbox\"]", "sms = [\"ali\"]");
    std::fs::write(&cfg, text).unwrap();
    refused_by_check_and_run(
        &cfg,
        "declares no template code for any provider in routing.sms (ali (aliyun))",
    );
    // With another provider after it, the route can always send: accepted.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("sms = [\"ali\"]", "sms = [\"ali\", \"outbox\"]");
    std::fs::write(&cfg, text).unwrap();
    let (code, _, stderr) = run(duebell(&["check", "--config", cfg.to_str().unwrap()]));
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn callbacks_prints_stable_secret_receipt_urls_for_unsigned_providers() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = crate::support::write_config(
        dir.path(),
        "[api]\npublic_url = \"https://lender.example.com/duebell\"\n\n\
         [[providers]]\nname = \"ali\"\nkind = \"aliyun\"\naccess_key_id = \"id\"\naccess_key_secret = \"secret\"\nsign_name = \"s\"\n\n\
         [[providers]]\nname = \"outbox\"\nkind = \"file\"\ndir = \"var/outbox\"\n",
    );
    let once = || {
        let (code, stdout, stderr) =
            run(duebell(&["callbacks", "--config", cfg.to_str().unwrap()]));
        assert_eq!(code, 0, "{stderr}");
        stdout
    };
    let first = once();
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap_or_else(|| panic!("{first}"));
    let token = url
        .strip_prefix("https://lender.example.com/duebell/webhooks/aliyun/ali/report/")
        .unwrap_or_else(|| panic!("{url}"));
    assert_eq!(token.len(), 32);
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(once(), first, "the token is stable across runs");
    assert!(!first.contains("outbox"), "{first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_write_lock_while_a_send_is_answered_costs_the_daemon_nothing() {
    use sqlx::Connection;
    // What a long CLI import does to a running daemon on SQLite: it holds
    // the write lock longer than the busy timeout, right when the daemon
    // must record a provider's answer.
    let server = crate::chaos::slow_gateway(Duration::from_millis(1500)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = crate::chaos::config(dir.path(), &server.uri(), 1);
    let mut child = duebell(&["run", "--config", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..600 {
        if !server.received_requests().await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url = crate::support::store_url(dir.path());
    let mut lock = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut lock)
        .await
        .unwrap();
    // Longer than the 5 s busy timeout, and than the 1 s claim lease.
    tokio::time::sleep(Duration::from_secs(8)).await;
    sqlx::query("COMMIT").execute(&mut lock).await.unwrap();
    drop(lock);
    let store = crate::support::open_store(dir.path()).await;
    let mut state = None;
    for _ in 0..300 {
        let m = store.messages(&Default::default()).await.unwrap();
        state = m.first().map(|m| m.state);
        if state == Some(duebell::store::MessageState::Sent) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store.close().await;
    child.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        state,
        Some(duebell::store::MessageState::Sent),
        "the delivered message was not recorded sent:\n{log}"
    );
    assert!(!log.contains("reconciled sends"), "{log}");
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}
