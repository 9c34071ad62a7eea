//! Asynchronous bounces end to end: emails go out through an SMTP server on
//! loopback with a signed per-message Return-Path; a real Dovecot
//! (Debian's dovecot-imapd and dovecot-pop3d, started here on free ports
//! with its own TLS certificate) holds the bounces that come back, put in
//! its mailbox by Dovecot's own delivery agent; `duebell bounces poll` and
//! the daemon read it over IMAP and POP3, plain, TLS and STARTTLS.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use duebell::domain::Channel;
use duebell::providers::mailbox::{MailProtocol, MailSecurity, MailboxConfig};
use duebell::store::MessageState;

use crate::smtp::{smtp_harness, smtp_server};
use crate::support::{book, duebell, run, store_url};

const PASSWORD: &str = "s3cret \"quoted\" pass";

/// A Dovecot of our own: IMAP, IMAPS, POP3 and POP3S on free loopback
/// ports, one user `bounces`, mail in a Maildir under `dir`.
pub struct Dovecot {
    dir: tempfile::TempDir,
    child: Child,
    pub imap: u16,
    pub imaps: u16,
    pub pop3: u16,
    pub pop3s: u16,
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sh(script: &str, dir: &Path) {
    let out = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Dovecot {
    pub fn start() -> Dovecot {
        assert!(
            Path::new("/usr/sbin/dovecot").exists(),
            "these tests need Debian's dovecot-imapd and dovecot-pop3d (`apt-get install dovecot-imapd dovecot-pop3d`; .ci/run installs them)"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A CA of our own and a certificate for `localhost` it signed.
        sh(
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=duebell-test-ca 2>/dev/null
             openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout key.pem -out leaf.csr -subj /CN=localhost 2>/dev/null
             printf 'subjectAltName=DNS:localhost\\nbasicConstraints=CA:FALSE\\n' > leaf.ext
             openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 -extfile leaf.ext 2>/dev/null
             mkdir -p run state mail
             chmod 755 .
             chown dovecot:dovecot mail
             chmod 644 key.pem",
            d,
        );
        std::fs::write(
            d.join("passwd"),
            format!("bounces:{{PLAIN}}{}::::::\n", PASSWORD.replace(':', "")),
        )
        .unwrap();
        let (imap, imaps, pop3, pop3s) = (free_port(), free_port(), free_port(), free_port());
        let p = d.display();
        let instance = d.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::write(
            d.join("dovecot.conf"),
            format!(
                r#"protocols = imap pop3
listen = 127.0.0.1
base_dir = {p}/run
state_dir = {p}/state
instance_name = dv{instance}
log_path = {p}/dovecot.log
ssl = yes
ssl_cert = <{p}/cert.pem
ssl_key = <{p}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
first_valid_uid = 1
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {p}/passwd
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={p}/mail/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = {pop3s}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
"#
            ),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/dovecot")
            .args(["-F", "-c"])
            .arg(d.join("dovecot.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let dovecot = Dovecot {
            dir,
            child,
            imap,
            imaps,
            pop3,
            pop3s,
        };
        for _ in 0..100 {
            if [imap, imaps, pop3, pop3s]
                .iter()
                .all(|port| std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok())
            {
                return dovecot;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "dovecot did not listen: {}",
            std::fs::read_to_string(dovecot.dir.path().join("dovecot.log")).unwrap_or_default()
        );
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn password_file(&self) -> PathBuf {
        let path = self.dir.path().join("password");
        std::fs::write(&path, format!("{}\n", PASSWORD.replace(':', ""))).unwrap();
        path
    }

    /// Puts a mail into the `bounces` mailbox through Dovecot's LDA, as
    /// the mail server receiving a bounce would.
    pub fn deliver(&self, mail: &str) {
        let mut lda = Command::new("/usr/lib/dovecot/dovecot-lda")
            .args(["-d", "bounces", "-f", "MAILER-DAEMON@mx.example.net", "-c"])
            .arg(self.dir.path().join("dovecot.conf"))
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        lda.stdin
            .take()
            .unwrap()
            .write_all(mail.as_bytes())
            .unwrap();
        let out = lda.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "dovecot-lda: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Mail in a folder (`""`: INBOX), as Dovecot keeps it on disk.
    pub fn count(&self, folder: &str) -> usize {
        let base = self.dir.path().join("mail/bounces/Maildir");
        let base = if folder.is_empty() {
            base
        } else {
            base.join(format!(".{folder}"))
        };
        ["cur", "new"]
            .iter()
            .map(|sub| std::fs::read_dir(base.join(sub)).map_or(0, |d| d.count()))
            .sum()
    }

    pub fn mailbox(&self, protocol: MailProtocol, security: MailSecurity) -> MailboxConfig {
        let port = match (protocol, security) {
            (MailProtocol::Imap, MailSecurity::Tls) => self.imaps,
            (MailProtocol::Imap, _) => self.imap,
            (MailProtocol::Pop3, MailSecurity::Tls) => self.pop3s,
            (MailProtocol::Pop3, _) => self.pop3,
        };
        MailboxConfig {
            protocol,
            host: "localhost".into(),
            port: Some(port),
            security,
            username: "bounces".into(),
            password: PASSWORD.replace(':', "").as_str().into(),
            folder: "INBOX".into(),
            move_to: None,
            every: duebell::domain::ConfigDuration(std::time::Duration::from_secs(1)),
            ca: Some(std::fs::read_to_string(self.ca()).unwrap()),
        }
    }
}

/// A fixture from tests/fixtures/bounces with its placeholders filled.
fn fixture(name: &str, token: &str, address: &str, id: i64) -> String {
    std::fs::read_to_string(
        crate::support::repo_root()
            .join("tests/fixtures/bounces")
            .join(name),
    )
    .unwrap()
    .replace("{TOKEN}", token)
    .replace("{ADDRESS}", address)
    .replace("{ID}", &id.to_string())
    .replace("{NONCE}", &format!("{id}.{token}"))
}

/// The config file `duebell bounces poll` reads: the harness's store, the
/// SMTP provider with its bounce mailbox.
fn poll_config(dir: &Path, smtp_port: u16, mailbox: &str) -> PathBuf {
    let path = dir.join("poll.toml");
    std::fs::write(
        &path,
        format!(
            r#"[store]
url = "{}"

[[providers]]
name = "mail"
kind = "smtp"
host = "127.0.0.1"
port = {smtp_port}
security = "plain"
from = "Example Finance <reminders@example.com>"
return_path = "bounces@mail.example.com"
bounce_mailbox = {mailbox}

[[providers]]
name = "outbox"
kind = "file"
dir = "{}"

[routing]
sms = ["outbox"]
email = ["mail"]

[bounces]
soft_limit = 2
soft_window = "7d"
"#,
            store_url(dir),
            dir.join("outbox").display()
        ),
    )
    .unwrap();
    path
}

/// Sends the day's email to each borrower through the SMTP server and
/// returns, per address, the envelope sender's token and our message id.
async fn send_due(
    smtp_port: u16,
    inbox: &std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    names: &[&str],
) -> (crate::support::Harness, HashMap<String, (String, i64)>) {
    let h = smtp_harness(smtp_port, |c| {
        c.providers[0].return_path = Some("bounces@mail.example.com".into());
        c.bounces.soft_limit = 2;
    })
    .await;
    // Signed with the deployment key, as the daemon and `bounces poll` are.
    let signer = duebell::app::deployment_signer(h.store.as_ref(), h.now())
        .await
        .unwrap();
    let parts = duebell::engine::Parts {
        unsubscribe: std::sync::Arc::new(signer),
        ..Default::default()
    };
    let engine =
        duebell::engine::Engine::build_with(&h.config, h.store.clone(), None, parts).unwrap();
    let rows: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!("E{i},B{n},{n},,{n}@example.net,en,Asia/Shanghai,2026-12-10,120.00,USD,active")
        })
        .collect();
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    h.import("book.csv", &book(&rows)).await;
    h.set("2026-12-10T03:00:00Z");
    h.tick().await;
    engine.dispatcher.drain(h.now()).await.unwrap();
    let ids: HashMap<String, i64> = h
        .messages()
        .await
        .into_iter()
        .filter(|m| m.channel == Channel::Email)
        .map(|m| {
            assert_eq!(m.state, MessageState::Sent, "{m:?}");
            (m.address.clone().unwrap(), m.id)
        })
        .collect();
    let mut tokens = HashMap::new();
    for mail in inbox.lock().unwrap().iter() {
        let mut lines = mail.lines();
        let from = lines.next().unwrap();
        let rcpt = lines.next().unwrap();
        let address = rcpt
            .split(['<', '>'])
            .nth(1)
            .expect("RCPT TO:<address>")
            .to_owned();
        let sender = from.split(['<', '>']).nth(1).expect("MAIL FROM:<address>");
        let token = sender
            .strip_prefix("bounces+")
            .and_then(|t| t.strip_suffix("@mail.example.com"))
            .unwrap_or_else(|| panic!("envelope sender is not a VERP address: {from}"))
            .to_owned();
        let id = ids[&address];
        assert!(
            token.starts_with(&format!("m{id}-")),
            "{token} for message {id}"
        );
        tokens.insert(address, (token, id));
    }
    assert_eq!(tokens.len(), names.len(), "one email each: {tokens:?}");
    (h, tokens)
}

fn inline(mb: &MailboxConfig, password_file: &Path, ca: &Path, move_to: Option<&str>) -> String {
    let protocol = match mb.protocol {
        MailProtocol::Imap => "imap",
        MailProtocol::Pop3 => "pop3",
    };
    let security = match mb.security {
        MailSecurity::Plain => "plain",
        MailSecurity::Starttls => "starttls",
        MailSecurity::Tls => "tls",
    };
    let move_to = move_to.map_or(String::new(), |f| format!(", move_to = \"{f}\""));
    format!(
        "{{ protocol = \"{protocol}\", host = \"localhost\", port = {}, security = \"{security}\", username = \"bounces\", password_file = \"{}\", ca_file = \"{}\"{move_to} }}",
        mb.port.unwrap(),
        password_file.display(),
        ca.display()
    )
}

#[tokio::test]
async fn bounces_and_complaints_read_over_imaps_suppress_and_forgeries_do_not() {
    let dovecot = Dovecot::start();
    let (smtp_port, inbox) = smtp_server().await;
    let (h, tokens) = send_due(smtp_port, &inbox, &["ann", "bob", "cat", "dan"]).await;
    let t = |who: &str| tokens[&format!("{who}@example.net")].clone();
    let mail = |name: &str, who: &str| {
        let (token, id) = t(who);
        fixture(name, &token, &format!("{who}@example.net"), id)
    };
    let ann_dsn = mail("dsn-user-unknown.eml", "ann");
    dovecot.deliver(&ann_dsn);
    dovecot.deliver(&mail("arf-complaint.eml", "bob"));
    dovecot.deliver(&mail("dsn-delayed.eml", "cat"));
    dovecot.deliver(&mail("exim-quota.eml", "cat"));
    // A forged hard bounce for dan: his message id, a signature not ours.
    let (_, dan_id) = t("dan");
    dovecot.deliver(&fixture(
        "dsn-user-unknown.eml",
        &format!("m{dan_id}-0123456789abcdef"),
        "dan@example.net",
        dan_id,
    ));
    dovecot.deliver(&mail("out-of-office.eml", "dan"));
    assert_eq!(dovecot.count(""), 6);

    let mb = dovecot.mailbox(MailProtocol::Imap, MailSecurity::Tls);
    let config = poll_config(
        h.dir.path(),
        smtp_port,
        &inline(
            &mb,
            &dovecot.password_file(),
            &dovecot.ca(),
            Some("Processed"),
        ),
    );
    let poll = || {
        run(duebell(&[
            "--config",
            config.to_str().unwrap(),
            "bounces",
            "poll",
        ]))
    };
    let (code, stdout, stderr) = poll();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("mail         read 6: hard 1, soft 2, complaint 1, addresses suppressed 3, forged 1, unmatched 0, not a report 1, already applied 0"),
        "{stdout}"
    );
    // Handled mail moved; the auto-reply left, flagged, for a person.
    assert_eq!((dovecot.count(""), dovecot.count("Processed")), (1, 5));
    let (_, stdout, _) = poll();
    assert!(
        stdout.contains("read 0:"),
        "nothing is read twice: {stdout}"
    );
    // The same report again (a server resending it) is applied once.
    dovecot.deliver(&ann_dsn);
    let (_, stdout, _) = poll();
    assert!(
        stdout.contains("read 1: hard 0") && stdout.contains("already applied 1"),
        "{stdout}"
    );

    // The hard-bounced message is undelivered, with the server's words.
    let ann = h
        .messages()
        .await
        .into_iter()
        .find(|m| m.borrower_id == "Bann" && m.channel == Channel::Email)
        .unwrap();
    assert_eq!(ann.state, MessageState::Undelivered);
    let reason = ann.reason.unwrap_or_default();
    assert!(
        reason.contains("dsn 5.1.1") && reason.contains("User unknown"),
        "{reason}"
    );
    let bounces = h.store.bounces("Bann").await.unwrap();
    assert_eq!(bounces.len(), 1, "{bounces:?}");
    assert_eq!(
        (bounces[0].class.as_str(), bounces[0].format.as_str()),
        ("hard", "dsn")
    );
    assert_eq!(h.store.bounces("Bcat").await.unwrap().len(), 2);
    assert!(
        h.store.bounces("Bdan").await.unwrap().is_empty(),
        "forged: not applied"
    );

    // Three days on, the next email step: only dan is emailed.
    let sent_before = inbox.lock().unwrap().len();
    let engine = duebell::engine::Engine::build(&h.config, h.store.clone(), None).unwrap();
    h.set("2026-12-13T03:00:00Z");
    h.tick().await;
    engine.dispatcher.drain(h.now()).await.unwrap();
    let late: HashMap<String, (MessageState, String)> = h
        .messages()
        .await
        .into_iter()
        .filter(|m| m.channel == Channel::Email && m.step != "due")
        .map(|m| {
            (
                m.borrower_id.clone(),
                (m.state, m.reason.unwrap_or_default()),
            )
        })
        .collect();
    assert_eq!(late["Bdan"].0, MessageState::Sent, "{late:?}");
    for b in ["Bann", "Bcat"] {
        assert_eq!(late[b].0, MessageState::Suppressed, "{b}: {late:?}");
        assert!(late[b].1.contains("marked invalid"), "{b}: {late:?}");
    }
    assert_eq!(late["Bbob"].0, MessageState::Suppressed, "{late:?}");
    assert!(late["Bbob"].1.contains("opted out"), "{late:?}");
    let new: Vec<String> = inbox.lock().unwrap()[sent_before..].to_vec();
    assert_eq!(new.len(), 1, "{new:?}");
    assert!(new[0].contains("dan@example.net"));

    // An operator lifts cat's soft-bounce suppression; her earlier soft
    // bounces no longer count, so one more does not suppress again.
    let lifted = h
        .store
        .lift_bounce(h.now(), Channel::Email, "cat@example.net")
        .await
        .unwrap();
    assert_eq!(lifted, 1);
    let (token, id) = t("cat");
    let again = fixture("dsn-delayed.eml", &token, "cat@example.net", id)
        .replace("Message-Id: <delayed.", "Message-Id: <delayed-again.");
    dovecot.deliver(&again);
    let (_, stdout, _) = poll();
    assert!(
        stdout.contains("read 1: hard 0, soft 1, complaint 0, addresses suppressed 0"),
        "{stdout}"
    );
}

/// Waits up to 30 s for `check` to hold.
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    for _ in 0..300 {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within 30 s");
}

#[tokio::test]
async fn the_daemon_reads_a_pop3_mailbox_over_stls_and_counts_what_it_applied() {
    let dovecot = Dovecot::start();
    let (smtp_port, inbox) = smtp_server().await;
    let dir = tempfile::tempdir().unwrap();
    let bookfile = dir.path().join("book.csv");
    std::fs::write(
        &bookfile,
        book(&["E1,Bann,Ann Lee,,ann@example.net,en,Asia/Shanghai,2026-12-10,120.00,USD,active"]),
    )
    .unwrap();
    let mut config = crate::support::shipped_config(dir.path(), &[]);
    let mut p = duebell::providers::default_providers().remove(0);
    p.name = "mail".into();
    p.kind = duebell::providers::ProviderKind::Smtp;
    p.dir = None;
    p.host = Some("127.0.0.1".into());
    p.port = Some(smtp_port);
    p.security = Some(duebell::providers::smtp::Security::Plain);
    p.from = Some("Example Finance <reminders@example.com>".into());
    p.return_path = Some("bounces@mail.example.com".into());
    p.bounce_mailbox = Some(dovecot.mailbox(MailProtocol::Pop3, MailSecurity::Starttls));
    config.providers.push(p);
    config.routing.email = vec!["mail".into()];
    config.caps.rules.clear();
    config.api.listen = "127.0.0.1:0".into();
    config.api.tokens = vec!["t0ken".into()];
    config.sources = vec![duebell::config::SourceConfig {
        kind: duebell::config::SourceKind::File,
        path: bookfile,
        poll_interval: duebell::config::ConfigDuration(std::time::Duration::from_secs(3600)),
    }];
    let clock = duebell::clock::TestClock::at(crate::support::utc("2026-12-10T03:00:00Z"));
    let app = duebell::app::App::build(config, std::sync::Arc::new(clock))
        .await
        .unwrap();
    let mut addr = app.api_addr();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(app.run(shutdown.clone()));
    let addr = addr.wait_for(Option::is_some).await.unwrap().unwrap();
    let base = format!("http://{addr}");

    eventually("the due-today email", || async {
        !inbox.lock().unwrap().is_empty()
    })
    .await;
    let sent = inbox.lock().unwrap()[0].clone();
    let token = sent
        .lines()
        .next()
        .and_then(|l| l.split(['<', '>']).nth(1))
        .and_then(|a| a.strip_prefix("bounces+"))
        .and_then(|a| a.strip_suffix("@mail.example.com"))
        .unwrap_or_else(|| panic!("no VERP sender: {sent}"))
        .to_owned();
    let id: i64 = token[1..token.find('-').unwrap()].parse().unwrap();
    dovecot.deliver(&fixture("qmail.eml", &token, "ann@example.net", id));

    let client = reqwest::Client::new();
    let metrics = || async {
        client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    eventually("the bounce to be applied", || async {
        metrics()
            .await
            .contains("duebell_bounces_total{class=\"hard\"} 1")
    })
    .await;
    let m = metrics().await;
    assert!(
        m.contains("duebell_addresses_suppressed_total{reason=\"hard_bounce\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("duebell_bounce_mailbox_errors_total{provider=\"mail\"} 0"),
        "{m}"
    );
    // POP3 deletes what it read.
    eventually("the mailbox to be emptied", || async {
        dovecot.count("") == 0
    })
    .await;
    let timeline: serde_json::Value = client
        .get(format!("{base}/v1/borrowers/Bann/timeline"))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bounces = timeline["bounces"].as_array().unwrap();
    assert_eq!(bounces.len(), 1, "{timeline}");
    assert_eq!(bounces[0]["class"], "hard");
    assert_eq!(bounces[0]["format"], "text");
    assert_eq!(bounces[0]["status"], "5.1.1");
    assert_ne!(bounces[0]["address"], "ann@example.net", "masked");
    let email = timeline["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["message"]["channel"] == "email")
        .unwrap();
    assert_eq!(email["message"]["state"], "undelivered", "{timeline}");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn mailbox_settings_are_checked_and_a_refused_login_is_reported_without_the_password() {
    let dovecot = Dovecot::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mb = dovecot.mailbox(MailProtocol::Imap, MailSecurity::Plain);
    let good = poll_config(
        d,
        2525,
        &inline(&mb, &dovecot.password_file(), &dovecot.ca(), None),
    );
    let text = std::fs::read_to_string(&good).unwrap();
    let check = |text: &str| {
        std::fs::write(&good, text).unwrap();
        run(duebell(&["--config", good.to_str().unwrap(), "check"]))
    };
    let (code, _, stderr) =
        check(&text.replace("return_path = \"bounces@mail.example.com\"\n", ""));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("providers[0].bounce_mailbox: needs `return_path`"),
        "{stderr}"
    );
    let (code, _, stderr) = check(
        &text
            .replace("protocol = \"imap\"", "protocol = \"pop3\"")
            .replace(" }\n", ", move_to = \"Done\" }\n"),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("providers[0].bounce_mailbox.move_to: POP3 has no folders"),
        "{stderr}"
    );
    let (code, _, stderr) = check(&text.replace("bounces@mail", "bounces+x@mail"));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("providers[0].return_path"), "{stderr}");
    let (code, stdout, stderr) = check(&text);
    assert_eq!(code, 0, "{stdout}{stderr}");

    // The right settings, the wrong password: exit 1, the server's answer,
    // never the password.
    std::fs::write(dovecot.dir.path().join("password"), "not-it\n").unwrap();
    let (code, stdout, stderr) = run(duebell(&[
        "--config",
        good.to_str().unwrap(),
        "bounces",
        "poll",
    ]));
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "mail: imap://bounces@localhost:{}/INBOX: LOGIN: NO",
            dovecot.imap
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("not-it"), "{stderr}");
}
