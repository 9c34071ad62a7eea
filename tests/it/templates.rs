//! Templates: strict rendering, locale fallback, `render`, `templates check`
//! and hot reload under a running daemon.

use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use crate::support::{copy_dir, duebell, repo_root, run};

/// A config like the shipped one but with its templates, store and outbox in `dir`.
pub fn config_with_templates(dir: &Path, extra: &str) -> std::path::PathBuf {
    copy_dir(&repo_root().join("templates"), &dir.join("templates"));
    let shipped = std::fs::read_to_string(repo_root().join("config/duebell.toml")).unwrap();
    let text = shipped
        .replace(
            "url = \"sqlite://var/duebell.db\"",
            &format!("url = \"sqlite://{}/state.db\"", dir.display()),
        )
        .replace(
            "dir = \"templates\"",
            &format!("dir = \"{}/templates\"", dir.display()),
        )
        .replace(
            "dir = \"var/outbox\"",
            &format!("dir = \"{}/outbox\"", dir.display()),
        )
        .replace(
            "calendars_dir = \"config/holidays\"",
            &format!(
                "calendars_dir = \"{}/config/holidays\"",
                repo_root().display()
            ),
        )
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"");
    // Without the shipped sample-book sources.
    let start = text.find("[[sources]]").unwrap();
    let end = text.find("# ---------------------------------------------------------------------------\n# Who the messages").unwrap();
    let text = format!("{}{}", &text[..start], &text[end..]);
    let path = dir.join("duebell.toml");
    std::fs::write(&path, format!("{text}\n{extra}")).unwrap();
    path
}

#[test]
fn an_undefined_variable_is_reported_by_check_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with_templates(dir.path(), "");
    let file = dir.path().join("templates/en/tomorrow.sms.j2");
    std::fs::write(&file, "{{ lender.name }}: Hi {{ borrower.name }},\nyour {{ loan.amount_due | money(loan.currency) }} is due {{ loan.due_dte | date }}. {{ opt_out }}\n").unwrap();
    for cmd in [vec!["templates", "check"], vec!["check"]] {
        let mut args = cmd.clone();
        args.extend(["--config", cfg.to_str().unwrap()]);
        let (code, _, stderr) = run(duebell(&args));
        assert_eq!(code, 2, "{cmd:?}: {stderr}");
        assert!(
            stderr.contains(&format!("{}:2: undefined value", file.display())),
            "{cmd:?}: {stderr}"
        );
    }
}

#[test]
fn a_template_missing_the_opt_out_line_or_too_long_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with_templates(dir.path(), "");
    let file = dir.path().join("templates/zh-CN/tomorrow.sms.j2");
    std::fs::write(
        &file,
        format!(
            "{{{{ lender.name }}}}：{{{{ borrower.name }}}}您好，明天到期。{}\n",
            "请按时还款。".repeat(40)
        ),
    )
    .unwrap();
    let (code, _, stderr) = run(duebell(&[
        "templates",
        "check",
        "--config",
        cfg.to_str().unwrap(),
    ]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("does not include the required opt_out (`回复TD退订`)"),
        "{stderr}"
    );
    assert!(stderr.contains("SMS parts"), "{stderr}");
}

#[test]
fn locales_fall_back_from_exact_to_language_to_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with_templates(dir.path(), "");
    let t = dir.path().join("templates");
    std::fs::create_dir_all(t.join("zh")).unwrap();
    std::fs::write(
        t.join("zh/upcoming.sms.j2"),
        "{{ lender.name }}（通用中文）{{ opt_out }}\n",
    )
    .unwrap();
    let render = |locale: &str| {
        let (code, stdout, stderr) = run(duebell(&[
            "render",
            "upcoming",
            "--locale",
            locale,
            "--config",
            cfg.to_str().unwrap(),
        ]));
        assert_eq!(code, 0, "{stderr}");
        stdout
    };
    assert!(render("zh-CN").contains("template: upcoming (zh-CN,"));
    assert!(render("zh-TW").contains("template: upcoming (zh,"));
    assert!(render("fr-FR").contains("template: upcoming (en,"));
}

#[test]
fn render_prints_what_the_borrower_receives_with_the_segment_count() {
    let (code, stdout, stderr) = run(duebell(&[
        "render",
        "late_firm",
        "--locale",
        "zh-CN",
        "--sample",
        "one_loan_before_due",
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("sms: 2 parts"), "{stdout}");
    assert!(stdout.contains("示例金融：王小明您好"), "{stdout}");
    assert!(
        stdout.contains("¥1,234.50") && stdout.contains("2026年12月1日"),
        "{stdout}"
    );
    let (code, stdout, _) = run(duebell(&[
        "render",
        "due_today",
        "--channel",
        "email",
        "--locale",
        "en",
        "--sample",
        "one_loan_overdue",
    ]));
    assert_eq!(code, 0);
    assert!(
        stdout.contains("subject: Example Finance: your payment is due today"),
        "{stdout}"
    );
    assert!(
        stdout.contains("--- text/plain ---") && stdout.contains("--- text/html ---"),
        "{stdout}"
    );
    assert!(
        stdout.contains("$450.00") && stdout.contains("Nov 28, 2026"),
        "{stdout}"
    );
    let (code, _, stderr) = run(duebell(&["render", "nope"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("no sms template `nope`"), "{stderr}");
}

/// Reads the daemon's JSON log lines until one matches.
fn wait_for(
    rx: &std::sync::mpsc::Receiver<serde_json::Value>,
    seen: &mut Vec<String>,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    loop {
        let v = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("timed out; log so far:\n{}", seen.join("\n")));
        seen.push(v.to_string());
        if pred(&v) {
            return v;
        }
    }
}

#[test]
fn templates_reload_under_a_running_daemon_and_a_broken_edit_keeps_the_last_good_set() {
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("book.csv");
    let today = chrono::Utc::now().date_naive();
    let row = |id: &str, b: &str| {
        format!(
            "{id},{b},Pat Doe,+12125550{},,en,UTC,{today},10.00,USD\n",
            &b[1..]
        )
    };
    std::fs::write(
        &book,
        format!("{}\n{}", crate::support::LOAN_HEADER, row("A1", "B101")),
    )
    .unwrap();
    // Any hour is allowed and the step has no preferred time, so a due
    // loan goes out on the first cycle after it is imported.
    let extra = format!(
        "[[sources]]\nkind = \"file\"\npath = \"{}\"\npoll_interval = \"100ms\"\n",
        book.display()
    );
    let cfg = config_with_templates(dir.path(), &extra);
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text
        .replace(
            "every_day = [\"08:00-21:00\"]",
            "every_day = [\"00:00-24:00\"]",
        )
        .replace("reload_interval = \"5s\"", "reload_interval = \"100ms\"")
        // Round the clock is looser than cn-2026 allows: this test is about
        // templates, so the pack is not in force.
        .replace(
            "[[compliance.packs]]\nname = \"cn-2026\"\ncountries = [\"CN\"]\n",
            "",
        );
    let steps_start = text.find("[[policy.steps]]").unwrap();
    let steps_end = text.find("# ---------------------------------------------------------------------------\n# Quiet hours").unwrap();
    let text = format!(
        "{}[[policy.steps]]\nid = \"due\"\noffset_days = 0\nchannels = [\"sms\"]\ntemplate = \"due_today\"\nstage = \"friendly\"\n\n{}",
        &text[..steps_start],
        &text[steps_end..]
    );
    std::fs::write(&cfg, text).unwrap();

    let mut child = duebell(&[
        "run",
        "--log-format",
        "json",
        "--config",
        cfg.to_str().unwrap(),
    ])
    .stderr(std::process::Stdio::piped())
    .stdout(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let mut seen = Vec::new();
    wait_for(&rx, &mut seen, |v| v["message"] == "sent");

    let template = dir.path().join("templates/en/due_today.sms.j2");
    let original = std::fs::read_to_string(&template).unwrap();
    std::fs::write(
        &template,
        original.replace("Paid already?", "EDITED-V2 Paid already?"),
    )
    .unwrap();
    let reloaded = wait_for(&rx, &mut seen, |v| v["message"] == "templates reloaded");
    let good_version = reloaded["version"].as_str().unwrap().to_owned();

    std::fs::write(&template, "{{ lender.name }}: {% if %}\n").unwrap();
    let rejected = wait_for(&rx, &mut seen, |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("template edit rejected"))
    });
    assert!(
        rejected["file"]
            .as_str()
            .unwrap()
            .ends_with("en/due_today.sms.j2"),
        "{rejected}"
    );
    assert_eq!(rejected["line"], 1);
    let kept = wait_for(&rx, &mut seen, |v| {
        v["message"] == "keeping the last good templates"
    });
    assert_eq!(kept["version"], good_version.as_str());

    // A reload applies every rule `check` does: a template without its
    // opt-out line, or with a loop that never ends, is refused too, and
    // the daemon keeps sending with the last good set.
    let runaway = format!(
        "{}{{% for i in range(100000) %}}{{% for j in range(100000) %}}{{% endfor %}}{{% endfor %}}",
        original.replace("Paid already?", "EDITED-V2 Paid already?")
    );
    for (broken, why) in [
        (
            "{{ lender.name }}: {{ borrower.name }}, your payment is due today.\n".to_owned(),
            "does not include the required opt_out",
        ),
        (runaway, "a loop runs too long"),
    ] {
        std::fs::write(&template, broken).unwrap();
        wait_for(&rx, &mut seen, |v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("template edit rejected") && m.contains(why))
        });
        let kept = wait_for(&rx, &mut seen, |v| {
            v["message"] == "keeping the last good templates"
        });
        assert_eq!(kept["version"], good_version.as_str());
    }

    // A loan imported now is sent with the last good (edited) template.
    std::fs::write(
        &book,
        format!(
            "{}\n{}{}",
            crate::support::LOAN_HEADER,
            row("A1", "B101"),
            row("A2", "B102")
        ),
    )
    .unwrap();
    wait_for(&rx, &mut seen, |v| v["message"] == "sent");
    let outbox = std::fs::read_to_string(dir.path().join("outbox/sms.jsonl")).unwrap();
    let sent: Vec<serde_json::Value> = outbox
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(sent.len(), 2);
    assert!(!sent[0]["body"].as_str().unwrap().contains("EDITED-V2"));
    assert!(
        sent[1]["body"].as_str().unwrap().contains("EDITED-V2"),
        "{}",
        sent[1]
    );
    assert_eq!(sent[1]["template_version"].as_str().unwrap().len(), 16);

    // SIGHUP reloads at once, e.g. after the edit is fixed.
    std::fs::write(&template, original).unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    wait_for(&rx, &mut seen, |v| v["message"] == "reload requested");
    wait_for(&rx, &mut seen, |v| v["message"] == "configuration reloaded");
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn provider_template_parameters_are_evaluated_from_the_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with_templates(dir.path(), "");
    std::fs::write(
        dir.path().join("templates/zh-CN/upcoming.sms.toml"),
        "[aliyun]\ntemplate_code = \"SMS_123456\"\nparams = { name = \"borrower.name\", amount = \"loan.amount_due | money(loan.currency)\" }\n\n[tencent]\ntemplate_id = \"1234567\"\nparams = [\"borrower.name\", \"loan.due_date | date\"]\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run(duebell(&[
        "render",
        "upcoming",
        "--locale",
        "zh-CN",
        "--sample",
        "one_loan_before_due",
        "--config",
        cfg.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(r#"aliyun: TemplateCode SMS_123456 TemplateParam {"amount":"¥1,234.50","name":"王小明"}"#), "{stdout}");
    assert!(
        stdout
            .contains(r#"tencent: TemplateId 1234567 TemplateParamSet ["王小明","2026年12月1日"]"#),
        "{stdout}"
    );
    // A sidecar naming an undefined variable fails the check.
    std::fs::write(
        dir.path().join("templates/zh-CN/upcoming.sms.toml"),
        "[tencent]\ntemplate_id = \"1\"\nparams = [\"borrower.nmae\"]\n",
    )
    .unwrap();
    let (code, _, stderr) = run(duebell(&[
        "templates",
        "check",
        "--config",
        cfg.to_str().unwrap(),
    ]));
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn render_for_a_borrower_uses_their_loans_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with_templates(dir.path(), "");
    let (code, _, stderr) = run(duebell(&[
        "import",
        "examples/loans.csv",
        "--config",
        cfg.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = run(duebell(&[
        "render",
        "late_firm",
        "--borrower",
        "B0003",
        "--config",
        cfg.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{stderr}");
    let book = std::fs::read_to_string("examples/loans.csv").unwrap();
    let row: Vec<&str> = book
        .lines()
        .find(|l| l.contains(",B0003,"))
        .unwrap()
        .split(',')
        .collect();
    assert!(stdout.contains(row[2]), "{stdout}");
    let (code, _, stderr) = run(duebell(&[
        "render",
        "late_firm",
        "--borrower",
        "NOBODY",
        "--config",
        cfg.to_str().unwrap(),
    ]));
    assert_eq!(code, 1);
    assert!(stderr.contains("no borrower `NOBODY`"), "{stderr}");
}
