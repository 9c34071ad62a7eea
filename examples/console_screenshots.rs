//! Screenshots of the console's main pages for the docs, taken in the same
//! headless chromium the browser tests drive (through chromedriver), over
//! the shipped config, templates and example loan book at a fixed instant.
//!
//!     scripts/console-screenshots            # writes docs/console/*.png
//!
//! Needs Debian's chromium, chromium-driver and fonts-noto-cjk.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use duebell::clock::TestClock;

#[path = "../tests/it/webdriver.rs"]
mod webdriver;
use webdriver::{Browser, Driver};

const PASSWORD: &str = "screenshots-only-password";

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()))?;
        } else {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// The shipped config with its state moved into `dir`.
fn config_in(root: &Path, dir: &Path, port: u16) -> anyhow::Result<PathBuf> {
    copy_dir(&root.join("templates"), &dir.join("templates"))?;
    let abs = |p: &str| root.join(p).display().to_string();
    let text = std::fs::read_to_string(root.join("config/duebell.toml"))?
        .replacen(
            "url = \"sqlite://var/duebell.db\"",
            &format!("url = \"sqlite://{}\"", dir.join("duebell.db").display()),
            1,
        )
        .replacen(
            "\"examples/loans.csv\"",
            &format!("\"{}\"", abs("examples/loans.csv")),
            1,
        )
        .replacen(
            "\"examples/payments.csv\"",
            &format!("\"{}\"", abs("examples/payments.csv")),
            1,
        )
        .replacen(
            "dir = \"templates\"",
            &format!("dir = \"{}\"", dir.join("templates").display()),
            1,
        )
        .replacen(
            "dir = \"var/outbox\"",
            &format!("dir = \"{}\"", dir.join("outbox").display()),
            1,
        )
        .replacen(
            "\"config/holidays\"",
            &format!("\"{}\"", abs("config/holidays")),
            1,
        )
        .replacen(
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"127.0.0.1:{port}\""),
            1,
        );
    let path = dir.join("duebell.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

async fn wait_for(c: &Browser, css: &str) -> anyhow::Result<()> {
    for _ in 0..150 {
        if let Ok(e) = c.find(css).await {
            let tag = e.tag_name().await.map_err(anyhow::Error::msg)?;
            if matches!(tag.as_str(), "input" | "textarea" | "table")
                || !e.text().await.unwrap_or_default().is_empty()
            {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("`{css}` never appeared")
}

async fn shot(c: &Browser, out: &Path, name: &str) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = c.screenshot().await.map_err(anyhow::Error::msg)?;
    std::fs::write(out.join(format!("{name}.png")), png)?;
    println!("{}", out.join(format!("{name}.png")).display());
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::args()
        .nth(1)
        .map_or_else(|| root.join("docs/console"), PathBuf::from);
    std::fs::create_dir_all(&out)?;
    let scratch = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let path = config_in(&root, scratch.path(), port)?;
    let loaded = duebell::config::load(&path, Vec::<(String, String)>::new())
        .map_err(|p| anyhow::anyhow!("{p}"))?;

    // The daemon, in-process, at a fixed instant over the example book.
    let clock = TestClock::at("2026-12-01T02:00:00Z".parse()?);
    let app = duebell::app::App::build(loaded.config, Arc::new(clock))
        .await?
        .with_config_file(path);
    let now = chrono::Utc::now();
    let admin = duebell::store::UserRecord {
        name: "ada".into(),
        role: "admin".into(),
        password_hash: duebell::api::access::hash_password(PASSWORD).map_err(anyhow::Error::msg)?,
        locale: None,
        disabled: false,
        created_at: now,
    };
    app.store().db().add_user(now, &admin).await?;
    let mut cycles = app.cycles();
    let stop = tokio_util::sync::CancellationToken::new();
    let daemon = tokio::spawn(app.run(stop.clone()));
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(60), cycles.changed()).await??;
    }
    let base = format!("http://127.0.0.1:{port}");

    // The browser.
    let driver = Driver::start("/usr/bin/chromedriver")
        .await
        .map_err(anyhow::Error::msg)?;
    let result = shoot(&driver, &base, &out).await;
    drop(driver);
    stop.cancel();
    let _ = daemon.await;
    result
}

/// Every page, in order.
async fn shoot(driver: &Driver, base: &str, out: &Path) -> anyhow::Result<()> {
    let e = anyhow::Error::msg;
    let args: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1366,860",
        "--lang=en-US",
        "--hide-scrollbars",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    let c = driver.session(&args).await.map_err(e)?;
    c.goto(&format!("{base}/console/login")).await.map_err(e)?;
    wait_for(&c, "#login-submit").await?;
    shot(&c, out, "login").await?;
    c.find("#login-name")
        .await
        .map_err(e)?
        .send_keys("ada")
        .await
        .map_err(e)?;
    c.find("#login-password")
        .await
        .map_err(e)?
        .send_keys(PASSWORD)
        .await
        .map_err(e)?;
    c.find("#login-submit")
        .await
        .map_err(e)?
        .click()
        .await
        .map_err(e)?;
    wait_for(&c, "header .who").await?;

    c.goto(&format!("{base}/console/templates"))
        .await
        .map_err(e)?;
    wait_for(&c, "a[data-template]").await?;
    shot(&c, out, "templates").await?;

    c.goto(&format!("{base}/console/templates/en/due_today/email"))
        .await
        .map_err(e)?;
    wait_for(&c, "#preview-subject").await?;
    shot(&c, out, "editor-email").await?;

    c.goto(&format!("{base}/console/templates/en/late_gentle/sms"))
        .await
        .map_err(e)?;
    wait_for(&c, "#preview-body").await?;
    c.find("textarea[data-file]")
        .await
        .map_err(e)?
        .send_keys(" {{ nope }}")
        .await
        .map_err(e)?;
    wait_for(&c, "#problems li").await?;
    shot(&c, out, "editor-problem").await?;

    c.goto(&format!("{base}/console/settings"))
        .await
        .map_err(e)?;
    let window = "input[data-section=\"quiet_hours\"][data-index=\"0\"][data-field=\"every_day\"]";
    wait_for(&c, window).await?;
    let w = c.find(window).await.map_err(e)?;
    w.clear().await.map_err(e)?;
    w.send_keys("11:00-20:00").await.map_err(e)?;
    c.find("#impact")
        .await
        .map_err(e)?
        .click()
        .await
        .map_err(e)?;
    wait_for(&c, "[data-impact=\"defer\"]").await?;
    c.execute("document.getElementById('impact').scrollIntoView({block: 'center'})")
        .await
        .map_err(e)?;
    shot(&c, out, "settings-impact").await?;

    c.goto(&format!("{base}/console/borrowers#B0002"))
        .await
        .map_err(e)?;
    wait_for(&c, "#timeline h2").await?;
    shot(&c, out, "borrower").await?;

    c.goto(&format!("{base}/console/operations"))
        .await
        .map_err(e)?;
    wait_for(&c, "#providers").await?;
    shot(&c, out, "operations").await?;

    c.find("#lang").await.map_err(e)?.click().await.map_err(e)?;
    c.find("#lang option[value=\"zh-CN\"]")
        .await
        .map_err(e)?
        .click()
        .await
        .map_err(e)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.goto(&format!("{base}/console/templates/zh-CN/due_today/sms"))
        .await
        .map_err(e)?;
    wait_for(&c, "#preview-body").await?;
    shot(&c, out, "editor-zh").await?;
    c.close().await.map_err(e)?;
    Ok(())
}
