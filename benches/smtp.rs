//! Email end to end into Postfix's `smtp-sink`: `duebell run --once` (the
//! release binary: plan, claim, gate, render, send, record) with N emails
//! due now, on SQLite and on PostgreSQL, on one SMTP connection and on
//! several; next to raw lettre (our own connections with `TCP_NODELAY`)
//! sending the same rendered message to the same sink in the same run. Each
//! run prints two rates: end to end (P5: over the run's wall time, start-up
//! and planning included) and sending (P4: over the sending span, from the
//! first claim to the last `sent` record in the store), and the ratio of
//! the sending rate to raw lettre's. Not a test; prints figures for
//! BENCHMARKS.md.
//!
//!     cargo bench --bench smtp [-- MESSAGES]
//!
//! `smtp-sink` comes from Debian's `postfix` package, unpacked, not
//! installed: set `SMTP_SINK` to the binary, or the bench runs
//! `apt-get download postfix` and `dpkg-deb -x` into `target/postfix`.
//! PostgreSQL: 127.0.0.1:5432, database `test`, a schema per run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;

mod support;

use support::{pg_schema, PG_BASE};

/// The `smtp-sink` binary and the folder of its shared libraries.
fn smtp_sink() -> (PathBuf, PathBuf) {
    if let Ok(bin) = std::env::var("SMTP_SINK") {
        let bin = PathBuf::from(bin);
        let libs = bin
            .parent()
            .and_then(Path::parent)
            .map(|usr| usr.join("lib/postfix"))
            .unwrap_or_default();
        return (bin, libs);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/postfix");
    let bin = root.join("usr/sbin/smtp-sink");
    if !bin.exists() {
        std::fs::create_dir_all(&root).unwrap();
        let ok = std::process::Command::new("apt-get")
            .args(["download", "postfix"])
            .current_dir(&root)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "apt-get download postfix failed; set SMTP_SINK to an smtp-sink binary"
        );
        let deb = std::fs::read_dir(&root)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .unwrap();
        let ok = std::process::Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&root)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "dpkg-deb -x {} failed", deb.display());
    }
    (bin, root.join("usr/lib/postfix"))
}

/// A running `smtp-sink` on a free loopback port; killed on drop.
struct Sink {
    child: std::process::Child,
    port: u16,
}

impl Sink {
    fn start() -> Sink {
        let (bin, libs) = smtp_sink();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = std::process::Command::new(&bin);
        cmd.env("LD_LIBRARY_PATH", &libs);
        // As root it must drop privileges.
        if std::env::var("USER").as_deref() == Ok("root") || unsafe_is_root() {
            cmd.args(["-u", "nobody"]);
        }
        let child = cmd
            .arg(format!("127.0.0.1:{port}"))
            .arg("1024")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "smtp-sink did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Sink { child, port }
    }
}

fn unsafe_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The email duebell sends to this bench's borrowers: the shipped
/// `due_today` template rendered for one of them and written as the `smtp`
/// provider writes it (text and HTML parts in base64, unsubscribe headers),
/// so that the raw client sends the same bytes duebell does. Rendering is
/// duebell's work, so the raw client gets the message made.
fn message() -> String {
    use duebell::domain::Channel;
    use duebell::templates::{context::ContextSource, BorrowerContext, Content, LoanContext};
    let config = support::repo_config();
    let set = duebell::templates::TemplateSet::load(&config.templates).unwrap();
    let source = ContextSource {
        lender: config.lender.clone(),
        opt_out: config.opt_out.clone(),
    };
    let loan = LoanContext {
        id: "C1".to_owned(),
        due_date: chrono::Utc::now().date_naive().to_string(),
        amount_due: "10.00".to_owned(),
        currency: "USD".to_owned(),
        days_past_due: 0,
    };
    let borrower = BorrowerContext {
        name: "Kim Park".to_owned(),
        phone_masked: String::new(),
    };
    let unsubscribe = "https://example.com/u/m2.59bbe84a4e95dcb55f269a61c820f313".to_owned();
    let ctx = source.build(
        "en",
        Channel::Email,
        borrower,
        vec![loan],
        "due",
        "friendly",
        unsubscribe.clone(),
    );
    let rendered = set.render("due_today", &ctx, "").unwrap();
    let Content::Email {
        subject,
        text,
        html,
    } = rendered.content
    else {
        unreachable!("due_today by email renders an email")
    };
    let out = duebell::providers::Outbound {
        message_id: 2,
        attempt_id: "a1".to_owned(),
        channel: Channel::Email,
        to: "b1@example.com".to_owned(),
        subject: Some(subject),
        body: text,
        html: Some(html),
        segments: None,
        template: rendered.template,
        template_version: rendered.version,
        step: "due".to_owned(),
        borrower_id: "CB1".to_owned(),
        loan_ids: vec!["C1".to_owned()],
        loan_steps: vec!["due".to_owned()],
        unsubscribe_url: Some(unsubscribe),
        provider_params: Default::default(),
        bounce_token: None,
    };
    duebell::providers::file::eml(&out, "Example Finance <reminders@example.com>")
}

/// Raw lettre: `n` messages over `conns` connections with `TCP_NODELAY`;
/// returns messages per second.
async fn raw_lettre(port: u16, n: usize, conns: usize) -> f64 {
    let message = std::sync::Arc::new(message());
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (next, message) = (next.clone(), message.clone());
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            stream.set_nodelay(true).unwrap();
            let mut conn =
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), &ClientId::default())
                    .await
                    .unwrap();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let envelope = Envelope::new(
                    Some("reminders@example.com".parse().unwrap()),
                    vec![format!("b{i}@example.com").parse().unwrap()],
                )
                .unwrap();
                conn.send(&envelope, message.as_bytes()).await.unwrap();
            }
            let _ = conn.quit().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// The sending span of a run, from its store: the first claim (`sending`)
/// to the last `sent` record. It starts before the first mail reaches the
/// sink and ends after the last one does (a send is recorded with its
/// batch), so it is never shorter than the sending at the sink.
async fn sending_span(store: &str) -> Duration {
    use sqlx::{Connection, Row};
    const SPAN: &str = "SELECT (SELECT MIN(at) FROM message_events WHERE to_state = 'sending'),
                               (SELECT MAX(at) FROM message_events WHERE to_state = 'sent')";
    let row = match store.starts_with("sqlite:") {
        true => {
            let mut c = sqlx::SqliteConnection::connect(store).await.unwrap();
            let r = sqlx::query(SPAN).fetch_one(&mut c).await.unwrap();
            (r.get::<i64, _>(0), r.get::<i64, _>(1))
        }
        false => {
            let mut c = sqlx::PgConnection::connect(store).await.unwrap();
            let r = sqlx::query(SPAN).fetch_one(&mut c).await.unwrap();
            (r.get::<i64, _>(0), r.get::<i64, _>(1))
        }
    };
    Duration::from_millis((row.1 - row.0) as u64)
}

/// `duebell run --once` sending `n` emails due today to the sink through
/// one `smtp` provider with `concurrency`; returns (sent, wall time of the
/// run, planning and start-up included, and its sending span).
fn run_once(
    store: &str,
    port: u16,
    n: usize,
    concurrency: u32,
    rt: tokio::runtime::Handle,
) -> (usize, Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let today = chrono::Utc::now().date_naive();
    let mut book = String::from(
        "loan_id,borrower_id,name,phone,email,locale,timezone,due_date,amount_due,currency\n",
    );
    for i in 0..n {
        book.push_str(&format!(
            "C{i},CB{i},Kim Park,,b{i}@example.com,en,UTC,{today},10.00,USD\n"
        ));
    }
    std::fs::write(d.join("book.csv"), book).unwrap();
    let repo = env!("CARGO_MANIFEST_DIR");
    let store = store.replace("{dir}", &d.display().to_string());
    std::fs::write(
        d.join("duebell.toml"),
        format!(
            "[store]\nurl = \"{store}\"\n\n\
             [[policy.steps]]\nid = \"due\"\noffset_days = 0\nchannels = [\"email\"]\ntemplate = \"due_today\"\nstage = \"friendly\"\n\n\
             [quiet_hours]\ncalendars_dir = \"{repo}/config/holidays\"\n[[quiet_hours.rules]]\nname = \"any\"\nevery_day = [\"00:00-24:00\"]\n\n\
             [caps]\nrules = []\n\n[templates]\ndir = \"{repo}/templates\"\n\n\
             [[providers]]\nname = \"mail\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\nsecurity = \"plain\"\nfrom = \"Example Finance <reminders@example.com>\"\nconcurrency = {concurrency}\n\n\
             [routing]\nsms = [\"mail\"]\nemail = [\"mail\"]\n\n[api]\nlisten = \"\"\npublic_url = \"https://example.com\"\n"
        ),
    )
    .unwrap();
    let (sent, took) = support::timed_run_once(&d.join("duebell.toml"), &d.join("book.csv"));
    (sent, took, rt.block_on(sending_span(&store)))
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let sink = Sink::start();
    let port = sink.port;
    rt.block_on(async {
        println!("## Email end to end into Postfix smtp-sink\n");
        // End to end (P5): the messages over the run's wall time, start-up
        // and planning included. Sending (P4): over the sending span, first
        // claim to last `sent` record, as the dispatch bench's rate is over
        // the span at its sink.
        println!("| store | SMTP connections | messages | sent | `run --once` wall | end to end msg/s | sending span | sending msg/s | raw lettre+NODELAY msg/s | ratio end to end | ratio sending |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let schema = format!("duebell_smtp_bench_{}", std::process::id());
        let stores = [
            ("sqlite", "sqlite://{dir}/state/duebell.db".to_owned()),
            (
                "postgres",
                format!("{PG_BASE}?options=-c%20search_path%3D{schema}"),
            ),
        ];
        for (kind, url) in &stores {
            for conns in [1u32, 16] {
                let raw = raw_lettre(port, n.min(20_000), conns as usize).await;
                if *kind == "postgres" {
                    pg_schema(&schema, true).await;
                }
                let u = url.clone();
                let rt = tokio::runtime::Handle::current();
                let (sent, took, span) =
                    tokio::task::spawn_blocking(move || run_once(&u, port, n, conns, rt))
                        .await
                        .unwrap();
                if *kind == "postgres" {
                    pg_schema(&schema, false).await;
                }
                let rate = sent as f64 / took.as_secs_f64();
                let sending = sent as f64 / span.as_secs_f64();
                println!(
                    "| {kind} | {conns} | {n} | {sent} | {:.2} s | {rate:.0} | {:.2} s | {sending:.0} | {raw:.0} | {:.2} | {:.2} |",
                    took.as_secs_f64(),
                    span.as_secs_f64(),
                    rate / raw,
                    sending / raw
                );
            }
        }
    });
    drop(sink);
}
