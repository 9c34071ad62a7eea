//! `duebell plan` and `duebell simulate` on the shipped config and the
//! sample book.

use std::collections::{HashMap, HashSet};

use crate::support::{duebell, run};

fn env_for(dir: &std::path::Path) -> Vec<(String, String)> {
    vec![
        (
            "DUEBELL_STORE__URL".into(),
            format!("sqlite://{}", dir.join("state/duebell.db").display()),
        ),
        (
            "DUEBELL_PROVIDERS__0__DIR".into(),
            dir.join("outbox").display().to_string(),
        ),
    ]
}

#[test]
fn plan_shows_each_decision_with_its_reason_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_for(dir.path());
    let (code, _, stderr) =
        run(duebell(&["import", "examples/loans.csv", "examples/payments.csv"]).envs(env.clone()));
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = run(duebell(&[
        "plan",
        "--at",
        "2026-12-01T09:00:00+08:00",
        "--format",
        "json",
    ])
    .envs(env.clone()));
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let decisions: HashSet<&str> = lines
        .iter()
        .map(|l| l["decision"].as_str().unwrap())
        .collect();
    for d in ["due", "nothing_due", "suppressed"] {
        assert!(decisions.contains(d), "no {d} in {decisions:?}");
    }
    for l in &lines {
        for key in [
            "loan_id",
            "borrower_id",
            "step",
            "channel",
            "decision",
            "reason",
            "not_before",
        ] {
            assert!(l.get(key).is_some(), "{key} missing in {l}");
        }
    }
    // Read-only: a second plan at the same instant shows the same, and no message was recorded.
    let (_, again, _) = run(duebell(&[
        "plan",
        "--at",
        "2026-12-01T09:00:00+08:00",
        "--format",
        "json",
    ])
    .envs(env.clone()));
    assert_eq!(stdout, again);
    let (_, listed, _) = run(duebell(&["messages"]).envs(env.clone()));
    assert_eq!(listed.lines().count(), 1, "{listed}");
    // One borrower, as a table.
    let (code, table, _) = run(duebell(&[
        "plan",
        "--at",
        "2026-12-01T09:00:00+08:00",
        "--borrower",
        "B0016",
    ])
    .envs(env));
    assert_eq!(code, 0);
    assert!(
        table.lines().skip(1).all(|l| l.contains("B0016")),
        "{table}"
    );
}

#[test]
fn a_30_day_simulation_of_the_sample_book_follows_the_ladder_and_honours_events() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sends.jsonl");
    let (code, _, stderr) = run(duebell(&[
        "simulate",
        "--data",
        "examples/loans.csv",
        "--data",
        "examples/payments.csv",
        "--events",
        "examples/events.jsonl",
        "--from",
        "2026-12-01T00:00:00Z",
        "--days",
        "30",
        "--output",
        out.to_str().unwrap(),
    ])
    .envs(env_for(dir.path())));
    assert_eq!(code, 0, "{stderr}");
    let sends: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(sends.len() > 500, "{}", sends.len());
    // Decisions other than sends are reported with their reasons.
    assert!(
        stderr.contains("decisions at the end of the simulation"),
        "{stderr}"
    );
    // L0101-2 is paid at 09:30 local on the day its reminders were planned for 10:00.
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("cancelled") && l.contains("loan_inactive")),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("suppressed") && l.contains("opted_out")),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("suppressed") && l.contains("no_address")),
        "{stderr}"
    );
    let steps: HashSet<&str> = sends.iter().map(|s| s["step"].as_str().unwrap()).collect();
    for step in [
        "pre_3", "pre_1", "due", "late_1", "late_3", "late_7", "late_15", "late_30",
    ] {
        assert!(steps.contains(step), "no {step} sent");
    }
    for s in &sends {
        for key in [
            "at",
            "borrower_id",
            "loan_ids",
            "channel",
            "step",
            "template",
            "provider",
            "body",
        ] {
            assert!(s.get(key).is_some(), "{key} missing");
        }
        assert_eq!(s["provider"], "outbox");
        if s["channel"] == "sms" {
            assert!(s["segments"].as_u64().unwrap() >= 1);
        } else {
            assert!(s["subject"].as_str().is_some_and(|x| !x.is_empty()));
        }
    }
    assert!(
        sends
            .iter()
            .any(|s| s["loan_ids"].as_array().unwrap().len() > 1),
        "no consolidated message"
    );
    // Paid loans of the events file get nothing after their payment.
    let events: Vec<serde_json::Value> = std::fs::read_to_string("examples/events.jsonl")
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let paid: HashMap<String, String> = events
        .iter()
        .filter(|e| e["type"] == "payment")
        .map(|e| {
            (
                e["loan_id"].as_str().unwrap().to_owned(),
                e["at"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(!paid.is_empty());
    let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap();
    let mut reminded_before_paying = 0;
    for s in &sends {
        for loan in s["loan_ids"].as_array().unwrap() {
            if let Some(p) = paid.get(loan.as_str().unwrap()) {
                assert!(
                    at(s["at"].as_str().unwrap()) < at(p),
                    "{loan} reminded after paying"
                );
                reminded_before_paying += 1;
            }
        }
    }
    assert!(
        reminded_before_paying > 0,
        "the paid loans were never reminded at all; the test shows nothing"
    );
    // The opted-out borrower gets no SMS after opting out.
    let opt = events.iter().find(|e| e["type"] == "opt_out").unwrap();
    assert!(!sends.iter().any(|s| s["borrower_id"] == opt["borrower_id"]
        && s["channel"] == "sms"
        && at(s["at"].as_str().unwrap()) > at(opt["at"].as_str().unwrap())));

    for format in ["table", "svg"] {
        let (code, stdout, stderr) = run(duebell(&[
            "simulate",
            "--data",
            "examples/loans.csv",
            "--from",
            "2026-12-01T00:00:00Z",
            "--days",
            "3",
            "--format",
            format,
        ])
        .envs(env_for(dir.path())));
        assert_eq!(code, 0, "{stderr}");
        match format {
            "table" => assert!(stdout.contains("total:"), "{stdout}"),
            _ => assert!(
                stdout.starts_with("<svg") && stdout.contains("<rect"),
                "{stdout}"
            ),
        }
    }
}

#[test]
fn a_bad_events_file_is_refused_with_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let ev = dir.path().join("ev.jsonl");
    std::fs::write(&ev, "{\"at\":\"2026-12-01T00:00:00Z\",\"type\":\"payment\",\"loan_id\":\"L1\",\"payment_id\":\"P\",\"amount\":\"1\"}\n{\"at\":\"soon\",\"type\":\"opt_out\",\"borrower_id\":\"B\",\"channel\":\"sms\"}\n{\"at\":\"2026-12-01T00:00:00Z\",\"type\":\"hold\",\"loan_id\":\"L1\",\"kind\":\"vacation\"}\n").unwrap();
    let (code, _, stderr) = run(duebell(&[
        "simulate",
        "--events",
        ev.to_str().unwrap(),
        "--from",
        "2026-12-01T00:00:00Z",
        "--days",
        "1",
    ])
    .envs(env_for(dir.path())));
    assert_eq!(code, 2);
    assert!(
        stderr.contains(&format!(
            "{}:2: at: `soon` is not an RFC 3339 instant",
            ev.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{}:3: kind: `vacation` is not a hold kind",
            ev.display()
        )),
        "{stderr}"
    );
}

/// Log lines are written from a thread of their own, in batches; every
/// line queued is written before the command exits: one `sent` line per
/// message sent, then the cycle's summary, last.
#[test]
fn run_once_writes_every_log_line_before_it_exits() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_for(dir.path());
    let (code, _, stderr) =
        run(duebell(&["run", "--once", "--log-format", "json"]).envs(env.clone()));
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let last = lines.last().expect("no log line");
    assert_eq!(last["message"], "cycle done", "{stderr}");
    let sent = lines.iter().filter(|l| l["message"] == "sent").count();
    assert!(sent > 0, "{stderr}");
    assert_eq!(last["sent"], sent, "{stderr}");
    let (code, listed, stderr) =
        run(duebell(&["messages", "--state", "sent", "--limit", "100000"]).envs(env));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(listed.lines().skip(1).count(), sent, "{listed}");
}

#[test]
fn audit_exports_each_attempt_with_masked_address_local_time_window_caps_and_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_for(dir.path());
    let (code, _, stderr) = run(duebell(&["run", "--once"]).envs(env.clone()));
    assert_eq!(code, 0, "{stderr}");
    let (code, csv_text, stderr) = run(duebell(&["audit", "--format", "csv"]).envs(env.clone()));
    assert_eq!(code, 0, "{stderr}");
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let headers = reader.headers().unwrap().clone();
    for h in [
        "borrower_id",
        "channel",
        "address",
        "template",
        "template_version",
        "sent_at_utc",
        "sent_at_local",
        "allowed_by",
        "packs",
        "outcome",
    ] {
        assert!(headers.iter().any(|x| x == h), "no {h} column");
    }
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert!(!rows.is_empty(), "the run sent nothing to audit");
    let col = |r: &csv::StringRecord, name: &str| {
        r[headers.iter().position(|h| h == name).unwrap()].to_owned()
    };
    let book = std::fs::read_to_string("examples/loans.csv").unwrap();
    for r in &rows {
        let address = col(r, "address");
        assert!(
            address.contains("****") || address.contains("***@"),
            "unmasked: {address}"
        );
        assert!(
            !book.contains(&address),
            "an address from the book appears in full: {address}"
        );
        assert!(col(r, "allowed_by").contains("window default@"), "{r:?}");
        assert!(col(r, "allowed_by").contains("all_per_day"), "{r:?}");
        // The shipped config puts mainland-China borrowers under cn-2026.
        let governed = col(r, "timezone").contains("Asia/Shanghai");
        assert_eq!(col(r, "packs") == "cn-2026", governed, "{r:?}");
        if governed {
            assert!(
                col(r, "allowed_by").contains("cn-2026@Asia/Shanghai"),
                "{r:?}"
            );
        }
        assert_eq!(col(r, "outcome"), "sent");
        assert_eq!(col(r, "template_version").len(), 16);
        let utc = chrono::DateTime::parse_from_rfc3339(&col(r, "sent_at_utc")).unwrap();
        // One local time per zone the gate considered, in `timezone`'s order.
        let zones = col(r, "timezone");
        let locals = col(r, "sent_at_local");
        assert_eq!(zones.split(' ').count(), locals.split(' ').count(), "{r:?}");
        for local in locals.split(' ') {
            assert_eq!(chrono::DateTime::parse_from_rfc3339(local).unwrap(), utc);
        }
    }
    let (code, jsonl, _) = run(duebell(&[
        "audit",
        "--format",
        "jsonl",
        "--from",
        "2000-01-01",
        "--to",
        "2000-01-02",
    ])
    .envs(env.clone()));
    assert_eq!((code, jsonl.as_str()), (0, ""));
    let (code, jsonl, _) = run(duebell(&["audit", "--format", "jsonl"]).envs(env));
    assert_eq!(code, 0);
    assert_eq!(jsonl.lines().count(), rows.len());
}
