//! A daemon for the console's tests, run in-process from a config file in a
//! temporary folder (with its own copy of the templates), as an operator
//! runs it, with accounts made by `duebell users`; and a logged-in session.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use duebell::app::App;
use duebell::clock::TestClock;
use tokio_util::sync::CancellationToken;

use crate::support::{book, duebell, repo_root, store_url, utc};

pub const ADMIN_TOKEN: &str = "console-admin-token-0123456789";
pub const VIEWER_TOKEN: &str = "console-viewer-token-0123456789";
pub const PASSWORD: &str = "correct horse battery staple";

pub struct ConsoleDaemon {
    pub base: String,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub clock: TestClock,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub cycles: tokio::sync::watch::Receiver<u64>,
}

/// The shipped config as a file in `dir`, its paths moved into `dir`.
pub fn write_shipped_config(dir: &Path) -> PathBuf {
    crate::support::copy_dir(&repo_root().join("templates"), &dir.join("templates"));
    let text = std::fs::read_to_string(repo_root().join("config/duebell.toml")).unwrap();
    let replace = |text: String, from: &str, to: &str| {
        assert!(
            text.contains(from),
            "the shipped config no longer has `{from}`"
        );
        text.replacen(from, to, 1)
    };
    let mut text = replace(
        text,
        "url = \"sqlite://var/duebell.db\"",
        &format!("url = \"{}\"", store_url(dir)),
    );
    text = replace(text, "synchronous = \"full\"", "synchronous = \"off\"");
    text = replace(
        text,
        "path = \"examples/loans.csv\"",
        &format!("path = \"{}\"", dir.join("book.csv").display()),
    );
    text = replace(
        text,
        "path = \"examples/payments.csv\"",
        &format!("path = \"{}\"", dir.join("payments.csv").display()),
    );
    text = text.replace("poll_interval = \"30s\"", "poll_interval = \"100ms\"");
    text = replace(
        text,
        "dir = \"templates\"",
        &format!("dir = \"{}\"", dir.join("templates").display()),
    );
    text = replace(
        text,
        "dir = \"var/outbox\"",
        &format!("dir = \"{}\"", dir.join("outbox").display()),
    );
    text = replace(text, "reload_interval = \"5s\"", "reload_interval = \"1h\"");
    text = replace(
        text,
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:0\"",
    );
    text = replace(
        text,
        "tokens = []",
        &format!("tokens = [\"{ADMIN_TOKEN}\"]"),
    );
    text = replace(
        text,
        "calendars_dir = \"config/holidays\"",
        &format!(
            "calendars_dir = \"{}\"",
            repo_root().join("config/holidays").display()
        ),
    );
    text.push_str(&format!(
        "\n[[api.clients]]\nname = \"dashboard\"\nrole = \"viewer\"\ntoken = \"{VIEWER_TOKEN}\"\n"
    ));
    let path = dir.join("duebell.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `duebell --config CONFIG users ARGS...` with `stdin` on its standard input.
pub fn users(config: &Path, args: &[&str], stdin: &str) -> std::process::Output {
    let mut all = vec!["--config", config.to_str().unwrap(), "users"];
    all.extend_from_slice(args);
    duebell(&all)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(stdin.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap()
}

/// Adds a console account through the binary, the password on stdin.
pub fn add_user(config: &Path, name: &str, role: &str) {
    let out = users(
        config,
        &["add", name, "--role", role],
        &format!("{PASSWORD}\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl ConsoleDaemon {
    /// A daemon at `at` over `rows`, with accounts ada (admin), eve
    /// (editor), cora (compliance) and vic (viewer).
    pub async fn start(at: &str, rows: &[&str]) -> ConsoleDaemon {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("book.csv"), book(rows)).unwrap();
        let config = write_shipped_config(dir.path());
        for (name, role) in [
            ("ada", "admin"),
            ("eve", "editor"),
            ("cora", "compliance"),
            ("vic", "viewer"),
        ] {
            add_user(&config, name, role);
        }
        let loaded = duebell::config::load(&config, Vec::<(String, String)>::new()).unwrap();
        let clock = TestClock::at(utc(at));
        let app = App::build(loaded.config, Arc::new(clock.clone()))
            .await
            .unwrap()
            .with_config_file(config.clone());
        let crate::support::Running {
            addr,
            cycles,
            shutdown,
            task,
        } = crate::support::spawn_daemon(app).await;
        ConsoleDaemon {
            base: format!("http://{addr}"),
            dir,
            config,
            clock,
            shutdown,
            task,
            cycles,
        }
    }

    pub async fn next_cycle(&mut self) {
        tokio::time::timeout(Duration::from_secs(30), self.cycles.changed())
            .await
            .unwrap()
            .unwrap();
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    /// A logged-in session: a cookie-keeping client and its CSRF token.
    pub async fn login(&self, name: &str) -> Session {
        let client = reqwest::Client::new();
        let r = client
            .post(format!("{}/v1/session", self.base))
            .json(&serde_json::json!({ "name": name, "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "login as {name}");
        let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        let body: serde_json::Value = r.json().await.unwrap();
        Session {
            client,
            cookie: cookie.split(';').next().unwrap().to_owned(),
            csrf: body["csrf"].as_str().unwrap().to_owned(),
            base: self.base.clone(),
        }
    }

    /// Imports `rows` with `duebell import` beside the running daemon,
    /// which does not plan them before its next tick (the test clock
    /// stands still). The command runs off the runtime's thread, where the
    /// daemon runs: a transaction it has open goes on to its commit.
    pub async fn import_beside(&self, name: &str, rows: &[&str]) {
        let file = self.dir.path().join(name);
        std::fs::write(&file, book(rows)).unwrap();
        let mut cmd = duebell(&[
            "--config",
            self.config.to_str().unwrap(),
            "import",
            "--no-progress",
            file.to_str().unwrap(),
        ]);
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Puts `rows` in the watched loan book and waits for the first SMS
    /// the file outbox receives.
    pub async fn first_sms_after_book(&mut self, rows: &[&str]) -> serde_json::Value {
        std::fs::write(self.dir.path().join("book.csv"), book(rows)).unwrap();
        let outbox = self.dir.path().join("outbox/sms.jsonl");
        for _ in 0..200 {
            if outbox.exists() {
                break;
            }
            self.next_cycle().await;
        }
        let text = std::fs::read_to_string(&outbox).unwrap();
        serde_json::from_str(text.lines().next().unwrap()).unwrap()
    }

    pub fn template_file(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("templates").join(rel)).unwrap()
    }
}

pub struct Session {
    pub client: reqwest::Client,
    /// `duebell_session=...`, sent back as a browser would.
    pub cookie: String,
    pub csrf: String,
    base: String,
}

impl Session {
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or_default())
    }

    /// A change with the CSRF token.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let r = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .header("x-csrf-token", &self.csrf)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or_default())
    }
}
