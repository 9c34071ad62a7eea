//! The console in a real headless browser: Debian's chromium driven over
//! WebDriver (chromedriver) from Rust (`webdriver.rs`), against a daemon
//! running in-process from a config file. A member of staff logs in,
//! edits a template and watches the preview follow, cannot publish a
//! broken one, publishes, and the next message sent uses the new version;
//! previews what a later quiet-hours window would defer and saves it; finds
//! the borrower's timeline; switches the console to Chinese.
//!
//! `.ci/run` installs chromium and chromium-driver; a machine without
//! them fails here, saying what to install.

use std::time::Duration;

use crate::console_support::{ConsoleDaemon, PASSWORD};
use crate::webdriver::{Browser, Driver};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

pub async fn start_driver() -> Driver {
    assert!(
        std::path::Path::new(CHROMEDRIVER).exists(),
        "{CHROMEDRIVER} is missing: apt-get install chromium chromium-driver fonts-noto-cjk (.ci/run does)"
    );
    Driver::start(CHROMEDRIVER).await.unwrap()
}

/// A headless chromium session in `lang`.
pub async fn browser(driver: &Driver, lang: &str) -> Browser {
    let args: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1366,900",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .chain([format!("--lang={lang}"), format!("--accept-lang={lang}")])
    .collect();
    driver
        .session(&args)
        .await
        .expect("a chromium session through chromedriver")
}

/// Waits until the element's text contains `want`; its text.
async fn wait_text(c: &Browser, css: &str, want: &str) -> String {
    let mut last = String::new();
    for _ in 0..200 {
        if let Ok(e) = c.find(css).await {
            last = e.text().await.unwrap_or_default();
            if last.contains(want) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = match c.find("main").await {
        Ok(m) => m.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    panic!("`{css}` never contained `{want}`; last: `{last}`; the page said: {page}");
}

async fn wait_enabled(c: &Browser, css: &str, enabled: bool) {
    for _ in 0..200 {
        if let Ok(e) = c.find(css).await {
            if e.is_enabled().await.unwrap_or(!enabled) == enabled {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("`{css}` never became enabled={enabled}");
}

async fn click(c: &Browser, id: &str) {
    c.find(&format!("#{id}"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Replaces a field's text by typing, as a person would.
async fn retype(c: &Browser, css: &str, text: &str) {
    let e = c.wait_for(css).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(text).await.unwrap();
}

pub async fn log_in(c: &Browser, base: &str, name: &str) {
    c.goto(&format!("{base}/console/")).await.unwrap();
    // No session: the console sends the browser to its login page.
    c.wait_for("#login-form").await.unwrap();
    assert!(c.current_url().await.unwrap().contains("/console/login?"));
    retype(c, "#login-name", name).await;
    retype(c, "#login-password", PASSWORD).await;
    click(c, "login-submit").await;
    wait_text(c, "header .who", name).await;
}

const NEW_TEXT: &str = "{{ lender.name }}: Hi {{ borrower.name }}, a friendly note: your payment is due today. {{ opt_out }}";
const AMY: &str =
    "A1,BA,Amy Chen,+8613812345678,amy@example.com,en,Asia/Shanghai,2026-12-01,100.00,CNY,active";
const BOB: &str =
    "B1,BB,Bob Li,+8613912345678,bob@example.com,en,Asia/Shanghai,2026-12-01,80.00,CNY,active";

#[tokio::test]
async fn staff_edit_and_publish_a_template_change_quiet_hours_and_read_a_timeline_in_a_browser() {
    let mut d = ConsoleDaemon::start("2026-12-01T02:00:00Z", &[]).await;
    let driver = start_driver().await;
    let c = browser(&driver, "en-US").await;
    log_in(&c, &d.base, "ada").await;

    // Templates: open the SMS due-today template in English.
    c.goto(&format!("{}/console/templates", d.base))
        .await
        .unwrap();
    c.wait_for("a[data-template=\"en/due_today/sms\"]")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let area = "textarea[data-file=\"en/due_today.sms.j2\"]";
    wait_text(&c, "#problems-title", "No problems").await;
    // The preview follows the typing.
    retype(&c, area, NEW_TEXT).await;
    let shown = wait_text(&c, "#preview-body", "a friendly note").await;
    assert!(!shown.contains("{{"), "rendered, not raw: {shown}");
    wait_text(&c, "#preview-count", "parts").await;
    // A broken template shows its problem inline and cannot be published.
    retype(&c, area, "{{ lender.name }}: {% if %}").await;
    wait_text(&c, "#problems", "en/due_today.sms.j2:1").await;
    wait_enabled(&c, "#publish", false).await;
    // Fixed: publish.
    retype(&c, area, NEW_TEXT).await;
    wait_text(&c, "#preview-body", "a friendly note").await;
    wait_enabled(&c, "#publish", true).await;
    retype(&c, "#note", "friendlier wording").await;
    click(&c, "publish").await;
    let status = wait_text(&c, "#publish-status", "Published version").await;
    wait_text(&c, "#versions", "friendlier wording").await;
    assert_eq!(d.template_file("en/due_today.sms.j2"), NEW_TEXT);
    let version = status
        .rsplit('(')
        .next()
        .unwrap()
        .trim_end_matches(')')
        .to_owned();

    // The next message sent uses the published version.
    let sent = d.first_sms_after_book(&[AMY]).await;
    assert!(
        sent["body"].as_str().unwrap().contains("a friendly note"),
        "{sent}"
    );
    assert_eq!(sent["template_version"], version.as_str());

    // Quiet hours: a window opening at 11:00 would defer Bob's reminder,
    // due now (10:00 in Shanghai); imported beside the daemon, not yet planned.
    d.import_beside("bob.csv", &[BOB]).await;
    c.goto(&format!("{}/console/settings", d.base))
        .await
        .unwrap();
    let window = "input[data-section=\"quiet_hours\"][data-index=\"0\"][data-field=\"every_day\"]";
    retype(&c, window, "11:00-21:00").await;
    click(&c, "impact").await;
    let defer = wait_text(&c, "[data-impact=\"defer\"]", "deferred").await;
    let n: u32 = defer.split_whitespace().next().unwrap().parse().unwrap();
    assert!(n >= 1, "{defer}");
    // An impossible window is refused with its key; a good one saves.
    retype(&c, window, "25:00-18:00").await;
    click(&c, "save").await;
    wait_text(&c, "#save-result", "quiet_hours.rules[0].every_day[0]").await;
    retype(&c, window, "11:00-21:00").await;
    click(&c, "save").await;
    wait_text(&c, "#save-result", "Saved").await;
    let file = std::fs::read_to_string(&d.config).unwrap();
    assert!(file.contains("every_day = [\"11:00-21:00\"]"), "{file}");

    // The borrower's timeline shows the message and its template version.
    c.goto(&format!("{}/console/borrowers", d.base))
        .await
        .unwrap();
    retype(&c, "#q", "+8613812345678").await;
    click(&c, "find").await;
    wait_text(&c, "#timeline", "Timeline: BA").await;
    wait_text(&c, "#timeline .template-version", &version).await;

    // The console in Chinese, by the user's choice.
    click(&c, "lang").await;
    c.find("#lang option[value=\"zh-CN\"]")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "header nav", "消息模板").await;
    c.close().await.unwrap();
    d.stop().await;
}

#[tokio::test]
async fn the_console_follows_the_browser_language_and_a_viewer_cannot_publish() {
    let d = ConsoleDaemon::start("2026-11-30T02:00:00Z", &[]).await;
    let driver = start_driver().await;
    let c = browser(&driver, "zh-CN").await;
    c.goto(&format!("{}/console/login", d.base)).await.unwrap();
    wait_text(&c, "#login-submit", "登录").await;
    log_in(&c, &d.base, "vic").await;
    wait_text(&c, "header nav", "免打扰").await;
    c.goto(&format!("{}/console/templates/en/due_today/sms", d.base))
        .await
        .unwrap();
    wait_text(&c, "#problems-title", "没有问题").await;
    // A viewer sees the preview but the publish button stays off.
    wait_enabled(&c, "#publish", false).await;
    // And a page their role cannot open says so.
    c.goto(&format!("{}/console/borrowers", d.base))
        .await
        .unwrap();
    wait_text(&c, "#main", "无权").await;
    c.close().await.unwrap();
    d.stop().await;
}
