//! Shared helpers: paths, running the binary, writing synthetic loan books,
//! and the store each test runs on: the binary's `BACKEND` (SQLite in `it`,
//! PostgreSQL in `it_pg`, which runs the store-backed modules again).
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_duebell"))
}

/// A `duebell` command run from the repository root with a clean
/// environment (no stray `DUEBELL_*` from the developer's shell).
pub fn duebell(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.current_dir(repo_root()).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("DUEBELL_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd
}

pub fn run(mut cmd: impl std::borrow::BorrowMut<Command>) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.borrow_mut().output().expect("duebell runs");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Writes a config using a store in `dir` and returns its path.
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("duebell.toml");
    let text = format!("[store]\nurl = \"{}\"\n\n{extra}", store_url(dir));
    std::fs::write(&path, text).unwrap();
    path
}

pub const LOAN_HEADER: &str =
    "loan_id,borrower_id,name,phone,email,locale,timezone,due_date,amount_due,currency";

/// One valid loan-book line for row `i` (two loans per borrower).
pub fn loan_line(i: usize) -> String {
    let b = i / 2;
    format!(
        "L{i},B{b},Name {b},+86138{b:08},u{b}@example.com,zh-CN,Asia/Shanghai,2026-12-{:02},{}.50,CNY",
        1 + i % 28,
        1000 + i % 500
    )
}

/// Writes a loan book of `rows` data rows; rows listed in `bad` get a bad
/// field of the given kind instead. Returns the file line of each data row.
pub fn write_book(path: &Path, rows: usize, bad: &[(usize, &str)]) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "{LOAN_HEADER}").unwrap();
    for i in 0..rows {
        let line = match bad.iter().find(|(r, _)| *r == i) {
            Some((_, "phone")) => loan_line(i).replace(&format!("+86138{:08}", i / 2), "+86 12345"),
            Some((_, "timezone")) => loan_line(i).replace("Asia/Shanghai", "Asia/Atlantis"),
            Some((_, "amount_due")) => loan_line(i).replace(".50,CNY", ".50.1,CNY"),
            Some((_, other)) => panic!("no bad kind {other}"),
            None => loan_line(i),
        };
        writeln!(f, "{line}").unwrap();
    }
    f.flush().unwrap();
}

/// Which store the tests of this binary run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL database the tests use (trust auth on loopback).
pub const PG_BASE: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fresh, empty schema in the test database; returns a store URL whose
/// connections use it. Schemas left by earlier runs (of processes no longer
/// alive) are dropped the first time.
pub fn pg_schema() -> String {
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    static SWEPT: std::sync::Once = std::sync::Once::new();
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let name = format!("duebell_t_{}_{n}", std::process::id());
    let create = name.clone();
    // Own thread and runtime: callers may be inside a runtime already.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(PG_BASE)
                .await
                .expect("PostgreSQL on 127.0.0.1:5432 (database `test`)");
            let mut first = false;
            SWEPT.call_once(|| first = true);
            let stale: Vec<String> = sqlx::query_scalar(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'duebell\\_t\\_%' AND nspname NOT LIKE $1",
            )
            .bind(format!("duebell\\_t\\_{}\\_%", std::process::id()))
            .fetch_all(&mut c)
            .await
            .unwrap();
            for s in stale.into_iter().filter(|_| first) {
                let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
                    .execute(&mut c)
                    .await;
            }
            sqlx::query(&format!("CREATE SCHEMA {create}"))
                .execute(&mut c)
                .await
                .unwrap();
        })
    })
    .join()
    .unwrap();
    format!("{PG_BASE}?options=-c%20search_path%3D{name}")
}

/// The store URL for a test state folder, on this binary's backend (the
/// same URL every time for one folder).
pub fn store_url(dir: &Path) -> String {
    match crate::BACKEND {
        Backend::Sqlite => format!("sqlite://{}", dir.join("state/duebell.db").display()),
        Backend::Postgres => {
            let kept = dir.join("store-url");
            if let Ok(url) = std::fs::read_to_string(&kept) {
                return url;
            }
            let url = pg_schema();
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(&kept, &url).unwrap();
            url
        }
    }
}

/// Opens the store a test config points at, read-only in spirit.
pub async fn open_store(dir: &Path) -> std::sync::Arc<dyn duebell::store::Store> {
    let cfg = duebell::config::StoreConfig {
        url: store_url(dir),
        ..Default::default()
    };
    duebell::store::open(&cfg).await.unwrap()
}

/// The shipped config with its store and outbox moved into `dir`, plus
/// `extra` TOML appended (later keys of a table must not repeat earlier ones).
pub fn shipped_config(dir: &Path, env: &[(&str, &str)]) -> duebell::config::Config {
    let mut vars: Vec<(String, String)> = vec![
        ("DUEBELL_STORE__URL".into(), store_url(dir)),
        ("DUEBELL_STORE__SYNCHRONOUS".into(), "off".into()),
        (
            "DUEBELL_PROVIDERS__0__DIR".into(),
            dir.join("outbox").display().to_string(),
        ),
    ];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut cfg = duebell::config::load(&repo_root().join("config/duebell.toml"), vars)
        .unwrap()
        .config;
    cfg.sources.clear();
    cfg
}

/// A store, an engine whose providers are one recorder, and a test clock.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub config: duebell::config::Config,
    pub store: std::sync::Arc<dyn duebell::store::Store>,
    pub engine: duebell::engine::Engine,
    pub recorder: std::sync::Arc<duebell::providers::recorder::Recorder>,
    pub clock: duebell::clock::TestClock,
}

pub fn utc(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .with_timezone(&chrono::Utc)
}

impl Harness {
    pub async fn new(start: &str) -> Harness {
        Harness::with(start, |_| {}).await
    }

    pub async fn with(start: &str, tweak: impl FnOnce(&mut duebell::config::Config)) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let mut config = shipped_config(dir.path(), &[]);
        tweak(&mut config);
        let store = duebell::store::open(&config.store).await.unwrap();
        let clock = duebell::clock::TestClock::at(utc(start));
        let recorder = std::sync::Arc::new(duebell::providers::recorder::Recorder::new(
            std::sync::Arc::new(clock.clone()),
        ));
        let engine = duebell::engine::Engine::build(
            &config,
            store.clone(),
            Some(duebell::providers::Router::single(recorder.clone())),
        )
        .unwrap();
        Harness {
            dir,
            config,
            store,
            engine,
            recorder,
            clock,
        }
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        use duebell::clock::Clock;
        self.clock.now()
    }

    /// Imports CSV text (a loan book or payments) at the clock's time.
    pub async fn import(&self, name: &str, csv: &str) -> duebell::sources::ImportReport {
        let path = self.dir.path().join(name);
        std::fs::write(&path, csv).unwrap();
        duebell::sources::import_file(
            self.store.as_ref(),
            &path,
            self.now(),
            duebell::sources::Progress::Off,
        )
        .await
        .unwrap()
    }

    pub async fn tick(&self) -> duebell::planner::TickReport {
        self.engine.plan(self.now()).await.unwrap()
    }

    pub async fn drain(&self) -> Vec<duebell::dispatch::Outcome> {
        self.engine.dispatch(self.now()).await.unwrap()
    }

    pub async fn messages(&self) -> Vec<duebell::store::MessageView> {
        self.store.messages(&Default::default()).await.unwrap()
    }

    pub fn set(&self, t: &str) {
        self.clock.set(utc(t));
    }
}

/// A loan-book CSV with a status column.
pub fn book(rows: &[&str]) -> String {
    let mut s = format!("{LOAN_HEADER},status\n");
    for r in rows {
        s.push_str(r);
        s.push('\n');
    }
    s
}

/// Checks a received webhook carries `X-Duebell-Signature: t=…,v1=…` over
/// its body with `secret`.
pub fn assert_signed(request: &wiremock::Request, secret: &str) {
    assert_signed_over(request, secret, &request.body);
}

/// As `assert_signed`, for a signature over `signed` (a look-up signs its
/// query string).
pub fn assert_signed_over(request: &wiremock::Request, secret: &str, signed: &[u8]) {
    let sig = request
        .headers
        .get("x-duebell-signature")
        .expect("a signature header")
        .to_str()
        .unwrap();
    let t: i64 = sig
        .trim_start_matches("t=")
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(sig, duebell::signing::webhook_signature(secret, t, signed));
}

/// A daemon running in-process: its API's address, its cycle counter, and
/// what stops it.
pub struct Running {
    pub addr: std::net::SocketAddr,
    pub cycles: tokio::sync::watch::Receiver<u64>,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Runs `app` until its API listens and its first cycle is done.
pub async fn spawn_daemon(app: duebell::app::App) -> Running {
    use std::time::Duration;
    let mut addr = app.api_addr();
    let mut cycles = app.cycles();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(app.run(shutdown.clone()));
    let addr = tokio::time::timeout(Duration::from_secs(30), addr.wait_for(Option::is_some))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), cycles.changed())
        .await
        .unwrap()
        .unwrap();
    Running {
        addr,
        cycles,
        shutdown,
        task,
    }
}

/// Copies a folder tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}
