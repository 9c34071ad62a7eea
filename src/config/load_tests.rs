use super::*;
use std::path::PathBuf;

fn load_text(text: &str, env: &[(&str, &str)]) -> Result<LoadedConfig, ConfigProblems> {
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    load_from_str(text, &PathBuf::from("t.toml"), env)
}

#[test]
fn an_empty_file_gives_the_defaults() {
    let c = load_text("", &[]).unwrap().config;
    assert_eq!(c.store.url, "sqlite://var/duebell.db");
    assert_eq!(c.defaults.timezone.name(), "Asia/Shanghai");
}

#[test]
fn every_bad_key_is_reported_with_line_and_column() {
    let text = "[store]\nurl = \"sqlite://x.db\"\nbusy_timeout = \"soon\"\nbogus = 1\n\n[defaults]\ntimezone = \"Mars/Base\"\n";
    let errs = load_text(text, &[]).unwrap_err().0;
    let lines: Vec<String> = errs.iter().map(|p| p.to_string()).collect();
    assert_eq!(errs.len(), 3, "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("t.toml:3:16: store.busy_timeout: `soon` is not a duration")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("t.toml:4:1: store.bogus: unknown key")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l
            .starts_with("t.toml:7:12: defaults.timezone: `Mars/Base` is not an IANA time zone")),
        "{lines:#?}"
    );
}

#[test]
fn syntax_errors_point_at_the_line() {
    let errs = load_text("[store]\nurl = \n", &[]).unwrap_err().0;
    assert!(errs[0].origin.starts_with("t.toml:2:"), "{errs:?}");
}

#[test]
fn environment_overrides_file_values_with_the_key_type() {
    let text = "[store]\nurl = \"sqlite://a.db\"\nmax_connections = 2\n";
    let c = load_text(
        text,
        &[
            ("DUEBELL_STORE__URL", "sqlite://b.db"),
            ("DUEBELL_STORE__MAX_CONNECTIONS", "9"),
            ("DUEBELL_CONFIG", "x"),
        ],
    )
    .unwrap()
    .config;
    assert_eq!(c.store.url, "sqlite://b.db");
    assert_eq!(c.store.max_connections, 9);
}

#[test]
fn a_bad_environment_override_names_the_variable() {
    let errs = load_text("", &[("DUEBELL_DEFAULTS__TIMEZONE", "Nowhere")])
        .unwrap_err()
        .0;
    assert_eq!(errs[0].origin, "env DUEBELL_DEFAULTS__TIMEZONE");
    assert_eq!(errs[0].key, "defaults.timezone");
    let errs = load_text("", &[("DUEBELL_STORE__NOPE", "1")])
        .unwrap_err()
        .0;
    assert_eq!(errs[0].origin, "env DUEBELL_STORE__NOPE");
}

#[test]
fn file_keys_read_their_value_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("url");
    std::fs::write(&f, "sqlite://from-file.db\n").unwrap();
    let text = format!("[store]\nurl_file = \"{}\"\n", f.display());
    let c = load_text(&text, &[]).unwrap().config;
    assert_eq!(c.store.url, "sqlite://from-file.db");

    let errs = load_text("[store]\nurl_file = \"/nonexistent/x\"\n", &[])
        .unwrap_err()
        .0;
    assert_eq!(errs[0].key, "store.url_file");
    assert!(errs[0].origin.starts_with("t.toml:2:1"), "{errs:?}");
}

#[test]
fn sources_are_validated_by_index() {
    let text = "[[sources]]\nkind = \"file\"\npath = \"a.csv\"\n\n[[sources]]\nkind = \"file\"\npath = \"b.txt\"\npoll_interval = \"1x\"\n";
    let errs = load_text(text, &[]).unwrap_err().0;
    let lines: Vec<String> = errs.iter().map(|p| p.to_string()).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("t.toml:8:17: sources[1].poll_interval:")),
        "{lines:#?}"
    );
}

#[test]
fn expand_env_reads_variables() {
    std::env::set_var("DUEBELL_TEST_CRED_DIR", "/run/creds");
    assert_eq!(
        expand_env("${DUEBELL_TEST_CRED_DIR}/tok").unwrap(),
        "/run/creds/tok"
    );
    assert_eq!(
        expand_env("$DUEBELL_TEST_CRED_DIR/tok").unwrap(),
        "/run/creds/tok"
    );
    assert!(expand_env("${NOT_SET_ANYWHERE_XYZ}/x").is_err());
}

#[test]
fn an_unreadable_secret_file_is_one_problem_not_three() {
    let text = "[handoff]\nurl = \"http://127.0.0.1:9/h\"\nsecret_file = \"/nonexistent/secret\"\n";
    let errs = load_text(text, &[]).unwrap_err().0;
    let lines: Vec<String> = errs.iter().map(|p| p.to_string()).collect();
    assert_eq!(errs.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("handoff.secret_file: cannot read"),
        "{lines:#?}"
    );
}

#[test]
fn a_bad_required_value_is_not_also_reported_missing() {
    let text = "[[caps.rules]]\nname = \"x\"\nscope = \"borrower\"\nchannels = []\nmax = -1\nwindow = \"day\"\n";
    let errs = load_text(text, &[]).unwrap_err().0;
    let lines: Vec<String> = errs.iter().map(|p| p.to_string()).collect();
    assert_eq!(errs.len(), 1, "{lines:#?}");
    assert!(
        lines[0].starts_with("t.toml:5:7: caps.rules[0].max: invalid value"),
        "{lines:#?}"
    );
}
