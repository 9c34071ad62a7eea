//! Running under systemd: the notify protocol, SIGHUP reloads, the unit.

use std::io::BufRead;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::support::{duebell, repo_root};

/// The shipped config with state in `dir`, no sources, API on a free port.
fn service_config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let shipped = std::fs::read_to_string(repo_root().join("config/duebell.toml")).unwrap();
    let start = shipped.find("[[sources]]").unwrap();
    let end = shipped.find("# ---------------------------------------------------------------------------\n# Who the messages").unwrap();
    let text = format!("{}{}", &shipped[..start], &shipped[end..])
        .replace(
            "url = \"sqlite://var/duebell.db\"",
            &format!("url = \"sqlite://{}/s.db\"", dir.display()),
        )
        .replace(
            "dir = \"var/outbox\"",
            &format!("dir = \"{}/outbox\"", dir.display()),
        )
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"");
    let path = dir.join("duebell.toml");
    std::fs::write(&path, format!("{text}\n{extra}")).unwrap();
    path
}

fn recv_until(sock: &UnixDatagram, seen: &mut Vec<String>, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = msg.lines().any(|l| l.starts_with(want));
            seen.push(msg);
            if hit {
                return;
            }
        }
    }
    panic!("no {want} in {seen:#?}");
}

#[test]
fn the_daemon_speaks_the_systemd_notify_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = service_config(dir.path(), "");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut child = duebell(&["run", "--config", cfg.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    recv_until(&sock, &mut seen, "READY=1");
    recv_until(&sock, &mut seen, "STATUS=due ");
    // Pings at half of WatchdogSec: several within a couple of seconds.
    for _ in 0..3 {
        recv_until(&sock, &mut seen, "WATCHDOG=1");
    }
    std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    recv_until(&sock, &mut seen, "RELOADING=1");
    recv_until(&sock, &mut seen, "READY=1");
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    recv_until(&sock, &mut seen, "STOPPING=1");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

fn spawn_logged(
    cfg: &std::path::Path,
) -> (
    std::process::Child,
    std::sync::mpsc::Receiver<serde_json::Value>,
) {
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
    (child, rx)
}

fn wait_log(
    rx: &std::sync::mpsc::Receiver<serde_json::Value>,
    seen: &mut Vec<String>,
    pred: impl Fn(&str) -> bool,
) -> serde_json::Value {
    loop {
        let v = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("timed out:\n{}", seen.join("\n")));
        seen.push(v.to_string());
        if v["message"].as_str().is_some_and(&pred) {
            return v;
        }
    }
}

#[test]
fn sighup_applies_a_valid_config_and_rejects_an_invalid_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = service_config(dir.path(), "");
    let (mut child, rx) = spawn_logged(&cfg);
    let mut seen = Vec::new();
    wait_log(&rx, &mut seen, |m| m == "API listening");

    // Invalid: an unknown key and a bad zone. Rejected, with file and line.
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        good.replace(
            "timezone = \"Asia/Shanghai\"",
            "timezone = \"Asia/Atlantis\"\ncolour = \"red\"",
        ),
    )
    .unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    let rejected = wait_log(&rx, &mut seen, |m| m.starts_with("config reload rejected"));
    let text = rejected["message"].as_str().unwrap();
    assert!(text.contains(&format!("{}:", cfg.display())), "{text}");
    wait_log(&rx, &mut seen, |m| m == "keeping the running configuration");

    // A policy step naming a template that does not exist: `check` refuses
    // it, so the reload does too (it used to apply, then fail every send).
    std::fs::write(
        &cfg,
        good.replace(
            "template = \"late_help\"",
            "template = \"no_such_template\"",
        ),
    )
    .unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    let rejected = wait_log(&rx, &mut seen, |m| {
        m.starts_with("config reload rejected") && m.contains("no_such_template")
    });
    assert!(
        rejected["message"].as_str().unwrap().contains("is missing"),
        "{rejected}"
    );
    wait_log(&rx, &mut seen, |m| m == "keeping the running configuration");

    // Valid: applied, and the daemon keeps running.
    std::fs::write(
        &cfg,
        good.replace("name = \"Example Finance\"", "name = \"Renamed Finance\""),
    )
    .unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    wait_log(&rx, &mut seen, |m| m == "configuration reloaded");
    assert!(child.try_wait().unwrap().is_none(), "the daemon exited");
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn the_systemd_unit_verifies() {
    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("skipped: systemd-analyze is not installed on this machine");
        return;
    };
    // Verify against a root holding the binary where the unit expects it,
    // /bin/kill for ExecReload, and the system's own units.
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in ["usr/bin", "bin", "etc/systemd/system", "usr/lib/systemd"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::copy(crate::support::bin(), r.join("usr/bin/duebell")).unwrap();
    std::fs::copy(which("kill").unwrap(), r.join("bin/kill")).unwrap();
    let status = std::process::Command::new("cp")
        .args(["-a", "/usr/lib/systemd/system"])
        .arg(r.join("usr/lib/systemd/"))
        .status()
        .unwrap();
    assert!(status.success());
    let verify = |unit: &str| {
        std::fs::write(r.join("etc/systemd/system/duebell.service"), unit).unwrap();
        std::process::Command::new(&analyze)
            .arg("verify")
            // The Documentation= pages are checked where the package
            // installs them (scripts/test-deb), not in this scratch root.
            .arg("--man=no")
            .arg(format!("--root={}", r.display()))
            .arg("duebell.service")
            .output()
            .unwrap()
    };
    let shipped = std::fs::read_to_string(repo_root().join("debian/duebell.service")).unwrap();
    let out = verify(&shipped);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The check can fail: a unit naming a missing binary does not verify.
    let out = verify(&shipped.replace(
        "ExecStart=/usr/bin/duebell",
        "ExecStart=/usr/bin/nonexistent",
    ));
    assert!(!out.status.success());
}

fn which(cmd: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| std::path::Path::new(d).join(cmd))
        .find(|p| p.is_file())
        .ok_or(())
}

/// A config sending SMS through a webhook at `url`, any hour, one step with
/// no preferred time, caps off, a book of `n` loans due today.
fn webhook_config(
    dir: &std::path::Path,
    url: &str,
    n: usize,
    deadline: &str,
) -> std::path::PathBuf {
    let today = chrono::Utc::now().date_naive();
    let mut book = format!("{}\n", crate::support::LOAN_HEADER);
    for i in 0..n {
        book.push_str(&format!(
            "L{i},B{i},Kim Park,+1212555{:04},,en,UTC,{today},10.00,USD\n",
            100 + i
        ));
    }
    std::fs::write(dir.join("book.csv"), book).unwrap();
    let cfg = service_config(dir, "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let steps_start = text.find("[[policy.steps]]").unwrap();
    let steps_end = text.find("# ---------------------------------------------------------------------------\n# Quiet hours").unwrap();
    let caps_start = text.find("[[caps.rules]]").unwrap();
    let caps_end = text.find("# ---------------------------------------------------------------------------\n[templates]").unwrap();
    let providers_start = text.find("[[providers]]").unwrap();
    let providers_end = text.find("# ---------------------------------------------------------------------------\n# Hand-off").unwrap();
    let text = format!(
        "{}[[policy.steps]]\nid = \"due\"\noffset_days = 0\nchannels = [\"sms\"]\ntemplate = \"due_today\"\nstage = \"friendly\"\n\n{}{}{}[[providers]]\nname = \"gateway\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"webhook-secret-0123456789\"\ntimeout = \"30s\"\n\n[[providers]]\nname = \"outbox\"\nkind = \"file\"\ndir = \"{}/outbox\"\n\n[routing]\nsms = [\"gateway\"]\nemail = [\"outbox\"]\n\n{}",
        &text[..steps_start],
        &text[steps_end..caps_start],
        &text[caps_end..providers_start],
        "",
        dir.display(),
        &text[providers_end..]
    )
    .replace("every_day = [\"08:00-21:00\"]", "every_day = [\"00:00-24:00\"]")
    .replace(
        "stop_deadline = \"20s\"",
        &format!("stop_deadline = \"{deadline}\""),
    )
    .replace("claim_lease = \"30s\"", "claim_lease = \"1s\"");
    std::fs::write(&cfg, format!("{text}\n[[sources]]\nkind = \"file\"\npath = \"{}/book.csv\"\npoll_interval = \"1s\"\n", dir.display())).unwrap();
    cfg
}

fn message_ids(requests: &[wiremock::Request]) -> Vec<String> {
    requests
        .iter()
        .filter_map(|r| {
            r.headers
                .get("idempotency-key")
                .map(|v| v.to_str().unwrap().to_owned())
        })
        .collect()
}

async fn wait_requests(server: &wiremock::MockServer, n: usize) {
    for _ in 0..600 {
        if server.received_requests().await.unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gateway never received {n} requests");
}

/// Runs the daemon until the gateway holds its first request, kills it
/// there (the message is `sending`, claimed under a lease that runs out a
/// second later), waits out the lease and runs one cycle.
async fn kill_mid_send_and_restart(
    cfg: &std::path::Path,
    server: &wiremock::MockServer,
) -> (i32, String, String) {
    let mut child = duebell(&["run", "--config", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_requests(server, 1).await;
    child.kill().unwrap();
    child.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    crate::support::run(duebell(&[
        "run",
        "--once",
        "--config",
        cfg.to_str().unwrap(),
    ]))
}

#[tokio::test]
async fn a_crash_between_sending_and_the_answer_never_sends_twice() {
    use wiremock::{matchers::method, Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(20)))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = webhook_config(dir.path(), &server.uri(), 1, "20s");
    let (code, _, stderr) = kill_mid_send_and_restart(&cfg, &server).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("reconciled messages interrupted by the last stop"),
        "{stderr}"
    );
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        1,
        "a second copy reached the gateway"
    );
    let (_, listed, _) = crate::support::run(duebell(&[
        "messages",
        "--state",
        "unknown",
        "--config",
        cfg.to_str().unwrap(),
    ]));
    let rows: Vec<&str> = listed.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{listed}");
    assert!(rows[0].contains("interrupted"), "{listed}");
    // The operator decides: cancel it (the gateway log shows it arrived).
    let id = rows[0].split_whitespace().next().unwrap();
    let (code, out, _) = crate::support::run(duebell(&[
        "messages",
        "cancel",
        id,
        "--config",
        cfg.to_str().unwrap(),
    ]));
    assert_eq!((code, out.trim()), (0, format!("{id}: cancelled").as_str()));
}

#[tokio::test]
async fn a_crashed_send_to_an_idempotent_gateway_is_replayed_under_the_same_key() {
    use wiremock::{matchers::method, Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    // The first request is held (and the daemon killed meanwhile); the
    // gateway answers the replay with 409: it already has that key.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(20)))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(409))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = webhook_config(dir.path(), &server.uri(), 1, "20s");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "secret = \"webhook-secret-0123456789\"\n",
        "secret = \"webhook-secret-0123456789\"\nidempotent = true\n",
    );
    std::fs::write(&cfg, text).unwrap();
    let (code, _, stderr) = kill_mid_send_and_restart(&cfg, &server).await;
    assert_eq!(code, 0, "{stderr}");
    // Both requests carry the same key: the gateway keeps one.
    let keys = message_ids(&server.received_requests().await.unwrap());
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys[0], keys[1]);
    let (_, listed, _) = crate::support::run(duebell(&[
        "messages",
        "--state",
        "sent",
        "--config",
        cfg.to_str().unwrap(),
    ]));
    let rows: Vec<&str> = listed.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{listed}");
    assert!(rows[0].starts_with(&keys[0]), "{listed}");
}

#[tokio::test]
async fn sigterm_while_a_send_is_in_flight_finishes_it_and_loses_nothing() {
    use wiremock::{matchers::method, Mock, MockServer, ResponseTemplate};
    let slow = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(1500)))
        .mount(&slow)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = webhook_config(dir.path(), &slow.uri(), 4, "20s");
    // The daemon keeps the routed providers' concurrency, summed, in
    // flight: 2 for the gateway + 1 for the email outbox = 3 sends at once,
    // two of them at the gateway, one waiting for its slot; it claims as
    // many again ahead, so the fourth message waits claimed, unsent.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(
            "timeout = \"30s\"\n",
            "timeout = \"30s\"\nconcurrency = 2\n",
        )
        .replace(
            "name = \"outbox\"\nkind = \"file\"\n",
            "name = \"outbox\"\nkind = \"file\"\nconcurrency = 1\n",
        );
    std::fs::write(&cfg, text).unwrap();
    let mut child = duebell(&["run", "--config", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_requests(&slow, 2).await;
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    // The sends claimed before the stop finished (the one waiting for a
    // slot too); nothing new was claimed after it.
    let first = message_ids(&slow.received_requests().await.unwrap());
    assert_eq!(first.len(), 3, "{first:?}");
    let (_, sent, _) = crate::support::run(duebell(&[
        "messages",
        "--state",
        "sent",
        "--config",
        cfg.to_str().unwrap(),
    ]));
    assert_eq!(sent.lines().count(), 4, "{sent}");
    // The one claimed ahead of a free slot was never handed to the gateway:
    // it went back to planned, with why, its attempt not counted.
    let (_, planned, _) = crate::support::run(duebell(&[
        "messages",
        "--state",
        "planned",
        "--config",
        cfg.to_str().unwrap(),
    ]));
    assert_eq!(planned.lines().count(), 2, "{planned}");
    assert!(
        planned.contains("the sending loop stopped before its send began"),
        "{planned}"
    );
    // A restart sends the rest, each exactly once.
    let (code, _, stderr) = crate::support::run(duebell(&[
        "run",
        "--once",
        "--config",
        cfg.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{stderr}");
    let mut all = message_ids(&slow.received_requests().await.unwrap());
    assert_eq!(all.len(), 4, "{all:?}");
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 4, "a message reached the gateway twice");
}

#[test]
fn status_prints_the_running_daemons_summary() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = service_config(dir.path(), "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        )
        .replace("tokens = []", "tokens = [\"status-token-0123456789\"]");
    std::fs::write(&cfg, text).unwrap();
    let (code, _, stderr) =
        crate::support::run(duebell(&["status", "--config", cfg.to_str().unwrap()]));
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot reach the daemon"), "{stderr}");
    let (mut child, rx) = spawn_logged(&cfg);
    let mut seen = Vec::new();
    wait_log(&rx, &mut seen, |m| m == "API listening");
    let (code, stdout, stderr) =
        crate::support::run(duebell(&["status", "--config", cfg.to_str().unwrap()]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("due 0, deferred 0, sent today 0"),
        "{stdout}"
    );
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
