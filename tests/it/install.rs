//! What a package installs and what a first run says: `--version`, the
//! generated man pages, completions and packaged config, and the "what to
//! set next" screen. (The package itself is built, installed, upgraded and
//! purged by `.ci/run`, which needs root and dpkg.)

use crate::support::{duebell, run};

#[test]
fn version_comes_from_the_crate() {
    let (code, stdout, _) = run(duebell(&["--version"]));
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        format!("duebell {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn duebell_alone_says_what_to_set_next_on_one_screen() {
    let (code, stdout, stderr) = run(duebell(&[]));
    assert_eq!(code, 0, "{stderr}");
    for needle in [
        "lender.name",
        "[[providers]]",
        "api.tokens_file",
        "duebell check",
    ] {
        assert!(stdout.contains(needle), "missing {needle} in\n{stdout}");
    }
    assert!(stdout.lines().count() < 25, "more than a screen:\n{stdout}");
}

#[test]
fn generate_writes_man_pages_completions_and_the_packaged_config() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run(duebell(&["generate", dir.path().to_str().unwrap()]));
    assert_eq!(code, 0, "{stderr}");
    for file in [
        "duebell.1",
        "duebell.toml.5",
        "duebell.bash",
        "_duebell",
        "duebell.fish",
        "duebell.toml",
    ] {
        let path = dir.path().join(file);
        assert!(stdout.contains(&path.display().to_string()), "{stdout}");
        assert!(
            std::fs::metadata(&path).unwrap().len() > 500,
            "{file} is short"
        );
    }
    let man = std::fs::read_to_string(dir.path().join("duebell.1")).unwrap();
    // Every command and its options are on the page.
    for needle in [
        "duebell import",
        "duebell messages release",
        "duebell store copy",
        "\\-\\-no\\-progress",
        "\\-\\-borrower",
    ] {
        assert!(man.contains(needle), "duebell.1 lacks {needle}");
    }
    let bash = std::fs::read_to_string(dir.path().join("duebell.bash")).unwrap();
    assert!(bash.contains("simulate") && bash.contains("--config"));
}

#[test]
fn check_on_the_packaged_config_passes_and_lists_the_next_steps() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(duebell(&["generate", dir.path().to_str().unwrap()]));
    assert_eq!(code, 0, "{stderr}");
    let config = dir.path().join("duebell.toml");
    // The packaged paths point into /etc and /var/lib; here they point at
    // the repository's copies and a temporary store.
    let store = format!("sqlite://{}", dir.path().join("d.db").display());
    let (code, stdout, stderr) = run(duebell(&["check", "--config", config.to_str().unwrap()])
        .env("DUEBELL_TEMPLATES__DIR", "templates")
        .env("DUEBELL_QUIET_HOURS__CALENDARS_DIR", "config/holidays")
        .env("DUEBELL_STORE__URL", &store));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(": ok"), "{stdout}");
    for needle in [
        "Next steps:",
        "lender.name",
        "api.tokens_file",
        "duebell migrate",
    ] {
        assert!(stdout.contains(needle), "missing {needle} in\n{stdout}");
    }
}

#[test]
fn a_configured_deployment_gets_no_next_steps() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "a-long-random-token-0123456789abcdef\n").unwrap();
    let config = crate::support::write_config(
        dir.path(),
        &format!(
            "[lender]\nname = \"Acme Lending\"\n\n[api]\ntokens_file = \"{}\"\n\n\
             [[providers]]\nname = \"gw\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/send\"\nsecret = \"webhook-secret-0123456789\"\n\n\
             [[sources]]\nkind = \"file\"\npath = \"examples/loans.csv\"\n\n\
             [routing]\nsms = [\"gw\"]\nemail = [\"gw\"]\n",
            tokens.display()
        ),
    );
    let (code, _, stderr) = run(duebell(&["migrate", "--config", config.to_str().unwrap()]));
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = run(duebell(&["check", "--config", config.to_str().unwrap()]));
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("Next steps"), "{stdout}");
}
