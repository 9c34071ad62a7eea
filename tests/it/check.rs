//! `duebell check`: the shipped config passes; broken ones fail with
//! `FILE:LINE:COL: key: message` and exit 2.

use crate::support::{duebell, run};

#[test]
fn the_shipped_config_passes_check() {
    let (code, stdout, stderr) = run(duebell(&["check"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("config/duebell.toml: ok"), "{stdout}");
}

#[test]
fn check_names_file_line_and_key_of_each_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "# a broken config\n[store]\nurl = \"sqlite://x.db\"\nbusy_timeout = \"five seconds\"\n\n[defaults]\ntimezone = \"Europe/Atlantis\"\nlocal = \"en\"\n",
    )
    .unwrap();
    let (code, _, stderr) = run(duebell(&["check", "--config", path.to_str().unwrap()]));
    assert_eq!(code, 2, "{stderr}");
    let shown = path.display().to_string();
    for expected in [
        format!("{shown}:4:16: store.busy_timeout: `five seconds` is not a duration"),
        format!("{shown}:7:12: defaults.timezone: `Europe/Atlantis` is not an IANA time zone"),
        format!("{shown}:8:1: defaults.local: unknown key"),
    ] {
        assert!(
            stderr.lines().any(|l| l.starts_with(&expected)),
            "missing {expected:?} in\n{stderr}"
        );
    }
}

/// A webhook's `url` is parsed once, when the config is read, so one that
/// is not an http(s) URL is a problem `check` names, not a failure at
/// every send.
#[test]
fn a_webhook_url_that_is_not_an_http_url_is_named_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::support::write_config(
        dir.path(),
        "[[providers]]\nname = \"gw\"\nkind = \"webhook\"\nurl = \"gateway.example/send\"\nsecret = \"webhook-secret-0123456789\"\n\n\
         [routing]\nsms = [\"gw\"]\nemail = [\"gw\"]\n",
    );
    let (code, _, stderr) = run(duebell(&["check", "--config", config.to_str().unwrap()]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("providers[0].url: `gateway.example/send` is not an http(s) URL"),
        "{stderr}"
    );
}

#[test]
fn config_path_comes_from_duebell_config_when_no_flag_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("env.toml");
    std::fs::write(&path, "[log]\nfilter = \"warn\"\nnope = 1\n").unwrap();
    let (code, _, stderr) = run(duebell(&["check"]).env("DUEBELL_CONFIG", &path));
    assert_eq!(code, 2);
    assert!(
        stderr.contains(&format!("{}:3:1: log.nope: unknown key", path.display())),
        "{stderr}"
    );
}

#[test]
fn environment_overrides_and_secret_files_reach_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(duebell(&["check"]).env("DUEBELL_STORE__BUSY_TIMEOUT", "soon"));
    assert_eq!(code, 2);
    assert!(
        stderr.contains(
            "env DUEBELL_STORE__BUSY_TIMEOUT: store.busy_timeout: `soon` is not a duration"
        ),
        "{stderr}"
    );

    let secret = dir.path().join("store-url");
    std::fs::write(&secret, "mysql://nowhere/x\n").unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[store]\nurl_file = \"${CREDS}/store-url\"\n").unwrap();
    let (code, _, stderr) =
        run(duebell(&["check", "--config", cfg.to_str().unwrap()]).env("CREDS", dir.path()));
    // The file was read (its content is what is judged), and the problem
    // points at the `_file` key that supplied it.
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:2:1: store.url: `mysql://nowhere/x` is not a store URL",
            cfg.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_missing_config_file_is_a_clear_error() {
    let (code, _, stderr) = run(duebell(&["check", "--config", "/nonexistent/duebell.toml"]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("/nonexistent/duebell.toml: (file): cannot read the config file"),
        "{stderr}"
    );
}

#[test]
fn check_warns_about_overlapping_quiet_hour_windows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("overlap.toml");
    let shipped = std::fs::read_to_string(crate::support::repo_root().join("config/duebell.toml"))
        .unwrap()
        .replace(
            "every_day = [\"08:00-21:00\"]",
            "every_day = [\"08:00-12:00\", \"11:00-21:00\"]",
        );
    std::fs::write(&path, shipped).unwrap();
    let (code, _, stderr) = run(duebell(&["check", "--config", path.to_str().unwrap()]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(
            "warning: quiet_hours.rules[0].every_day: windows 08:00-12:00 and 11:00-21:00 overlap"
        ),
        "{stderr}"
    );
}
