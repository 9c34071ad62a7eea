//! Compliance packs and tone through the binary: the shipped config runs
//! under cn-2026 and passes `check`; each pack refuses a looser setting
//! with the rule's source (a warning with `--pack-advisory`; the daemon
//! still refuses); a firm template that renders a forbidden phrase fails
//! `templates check` at its line.

use crate::support::{duebell, run, write_config};
use crate::templates::config_with_templates;

#[test]
fn the_shipped_config_enables_cn_2026_and_explains_it() {
    let shipped = std::fs::read_to_string("config/duebell.toml").unwrap();
    assert!(shipped.contains("[[compliance.packs]]\nname = \"cn-2026\"\ncountries = [\"CN\"]"));
    let (code, stdout, stderr) = run(duebell(&["check", "--explain"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("CN (packs: cn-2026)"), "{stdout}");
    // The operator's 08:00-21:00 is inside the pack's 08:00-22:00.
    assert!(
        stdout.contains("sms in Asia/Shanghai: every day 08:00-21:00"),
        "{stdout}"
    );
    assert!(
        stdout.contains("cn-2026/attempts_per_method_per_day 6 per local day"),
        "{stdout}"
    );
}

/// Each pack with a setting looser than it allows, and what the finding says.
const LOOSER: &[(&str, &str, &str, &str)] = &[
    (
        "cn-2026",
        "[[quiet_hours.rules]]\nname = \"late\"\nevery_day = [\"08:00-23:00\"]\n",
        "quiet_hours.rules[0].every_day",
        "China Banking Association",
    ),
    (
        "us-reg-f",
        "[templates]\nrequired = [\"lender_name\"]\n",
        "templates.required",
        "1006.6(e)",
    ),
    (
        "uk-fca",
        "[[caps.rules]]\nname = \"daily\"\nscope = \"borrower\"\nmax = 5\nwindow = \"day\"\n\n[[caps.rules]]\nname = \"weekly\"\nscope = \"borrower\"\nmax = 7\nwindow = \"7d\"\n",
        "caps.rules[0].max",
        "CONC 7.9.4R",
    ),
];

#[test]
fn each_pack_refuses_a_looser_setting_naming_the_source() {
    for (pack, looser, key, source) in LOOSER {
        let dir = tempfile::tempdir().unwrap();
        let extra = format!("[[compliance.packs]]\nname = \"{pack}\"\n\n{looser}");
        let path = write_config(dir.path(), &extra);
        let cfg = path.to_str().unwrap();
        let (code, _, stderr) = run(duebell(&["check", "--config", cfg]));
        assert_eq!(code, 2, "{pack}: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.contains(&format!(": {key}: ")))
            .unwrap_or_else(|| panic!("{pack}: no finding at {key} in\n{stderr}"));
        assert!(line.starts_with(&format!("{cfg}:")), "{line}");
        assert!(line.contains(pack) && line.contains(source), "{line}");
        // Advisory: the same finding as a warning, and check passes.
        let (code, _, stderr) = run(duebell(&["check", "--pack-advisory", "--config", cfg]));
        assert_eq!(code, 0, "{pack}: {stderr}");
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("warning: ") && l.contains(source)),
            "{pack}: {stderr}"
        );
        // The daemon refuses it like any other config error.
        let (code, _, stderr) = run(duebell(&["run", "--once", "--config", cfg]));
        assert_eq!(code, 2, "{pack}: {stderr}");
        assert!(stderr.contains(source), "{pack}: {stderr}");
        // Without the pack the same settings are the operator's to choose.
        let path = write_config(dir.path(), looser);
        let (code, _, stderr) = run(duebell(&["check", "--config", path.to_str().unwrap()]));
        assert_eq!(code, 0, "{pack} without the pack: {stderr}");
    }
}

#[test]
fn an_unknown_pack_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "[[compliance.packs]]\nname = \"eu-gdpr\"\n");
    let (code, _, stderr) = run(duebell(&["check", "--config", path.to_str().unwrap()]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("compliance.packs[0].name: `eu-gdpr` is not a shipped pack"),
        "{stderr}"
    );
}

#[test]
fn a_firm_template_rendering_a_forbidden_phrase_fails_templates_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = config_with_templates(dir.path(), "");
    let file = dir.path().join("templates/en/late_firm.sms.j2");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace(
            "for a plan.",
            "for a plan.\nOtherwise we will contact your employer.",
        ),
    )
    .unwrap();
    let cfg = path.to_str().unwrap();
    let (code, _, stderr) = run(duebell(&["templates", "check", "--config", cfg]));
    assert_eq!(code, 2, "{stderr}");
    let expected = format!(
        "{}:2: renders the forbidden phrase `your employer`",
        file.display()
    );
    assert!(stderr.contains(&expected), "{expected}\n{stderr}");
    // The same words in a friendly step's template are not checked.
    std::fs::write(&file, text).unwrap();
    let friendly = dir.path().join("templates/zh-CN/upcoming.sms.j2");
    let t = std::fs::read_to_string(&friendly).unwrap();
    std::fs::write(&friendly, format!("{t}（请勿告知家人）")).unwrap();
    let (code, _, stderr) = run(duebell(&["templates", "check", "--config", cfg]));
    assert_eq!(code, 0, "{stderr}");
    // In a firm zh-CN template it fails.
    let firm = dir.path().join("templates/zh-CN/late_firm.sms.j2");
    let t = std::fs::read_to_string(&firm).unwrap();
    std::fs::write(&firm, t.replace("还款。", "还款，否则将通知您的家人。")).unwrap();
    let (code, _, stderr) = run(duebell(&["templates", "check", "--config", cfg]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("forbidden phrase `家人`"), "{stderr}");
}

/// A forbidden phrase in a branch no sample reaches (three loans in one
/// message) passes `check`; the dispatcher catches it on the real message
/// and records it failed instead of sending it. The borrower's own name is
/// not held against the tone.
#[tokio::test]
async fn the_dispatcher_refuses_a_firm_message_that_renders_a_forbidden_phrase() {
    use duebell::store::MessageState;
    let templates = tempfile::tempdir().unwrap();
    crate::support::copy_dir(
        &crate::support::repo_root().join("templates"),
        templates.path(),
    );
    let sms = templates.path().join("en/late_firm.sms.j2");
    let text = std::fs::read_to_string(&sms).unwrap();
    std::fs::write(
        &sms,
        format!("{{% if loans|length > 2 %}}We will tell your employer. {{% endif %}}{text}"),
    )
    .unwrap();
    let dir = templates.path().to_owned();
    let h = crate::support::Harness::with("2026-12-04T01:00:00Z", |c| {
        c.templates.dir = dir.clone();
    })
    .await;
    let rows = [
        "M1,B7,Ann Shames,+8613800000007,,en,Asia/Shanghai,2026-12-01,100.00,CNY,active",
        "M2,B7,Ann Shames,+8613800000007,,en,Asia/Shanghai,2026-12-01,200.00,CNY,active",
        "M3,B7,Ann Shames,+8613800000007,,en,Asia/Shanghai,2026-12-01,300.00,CNY,active",
        "M4,B8,Bo Shames,+8613800000008,,en,Asia/Shanghai,2026-12-01,300.00,CNY,active",
    ];
    h.import("book.csv", &crate::support::book(&rows)).await;
    h.tick().await;
    h.set("2026-12-04T02:30:00Z");
    h.drain().await;
    let messages = h.messages().await;
    let of = |b: &str| {
        messages
            .iter()
            .find(|m| m.borrower_id == b && m.step == "late_3")
            .unwrap_or_else(|| panic!("{messages:?}"))
    };
    let three = of("B7");
    assert_eq!(three.state, MessageState::Failed, "{three:?}");
    let reason = three.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("forbidden phrase `your employer`"),
        "{reason}"
    );
    // One loan: the branch is not taken; "Shames" is the borrower's name.
    let one = of("B8");
    assert_eq!(one.state, MessageState::Sent, "{one:?}");
    let sent = h.recorder.take();
    assert_eq!(sent.len(), 1);
    assert!(!sent[0].1.body.contains("employer"));
}
