//! The SMTP provider against an SMTP server on loopback that speaks the
//! protocol (greeting, EHLO, MAIL, RCPT, DATA, QUIT) and keeps what it
//! receives; recipients containing "busy" get 451, "reject" 550.

use std::sync::{Arc, Mutex};

use duebell::domain::Channel;
use duebell::providers::{ProviderKind, RoutingConfig};
use duebell::store::MessageState;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::support::{book, Harness};

type Inbox = Arc<Mutex<Vec<String>>>;

async fn smtp_server() -> (u16, Inbox) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let inbox: Inbox = Arc::default();
    let kept = inbox.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let inbox = kept.clone();
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut lines = BufReader::new(r).lines();
                w.write_all(b"220 test.local ESMTP\r\n").await.unwrap();
                let mut rcpt = String::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        b"250-test.local\r\n250-8BITMIME\r\n250 SIZE 10000000\r\n"
                    } else if upper.starts_with("MAIL FROM")
                        || upper.starts_with("RSET")
                        || upper.starts_with("NOOP")
                    {
                        b"250 OK\r\n"
                    } else if upper.starts_with("RCPT TO") {
                        rcpt = line.clone();
                        if line.contains("busy") {
                            b"451 4.3.0 try again later\r\n"
                        } else if line.contains("reject") {
                            b"550 5.1.1 no such user\r\n"
                        } else {
                            b"250 OK\r\n"
                        }
                    } else if upper == "DATA" {
                        w.write_all(b"354 go ahead\r\n").await.unwrap();
                        let mut data = String::new();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            data.push_str(&l);
                            data.push('\n');
                        }
                        inbox.lock().unwrap().push(format!("{rcpt}\n{data}"));
                        b"250 2.0.0 queued\r\n"
                    } else if upper.starts_with("QUIT") {
                        let _ = w.write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        b"502 unknown\r\n"
                    };
                    if w.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, inbox)
}

#[tokio::test]
async fn email_goes_through_smtp_with_both_parts_and_the_unsubscribe_headers() {
    let (port, inbox) = smtp_server().await;
    let mut p = duebell::providers::default_providers().remove(0);
    p.name = "mail".into();
    p.kind = ProviderKind::Smtp;
    p.dir = None;
    p.host = Some("127.0.0.1".into());
    p.port = Some(port);
    p.security = Some(duebell::providers::smtp::Security::Plain);
    p.from = Some("Example Finance <reminders@example.com>".into());
    let h = Harness::with("2026-12-10T02:30:00Z", |c| {
        let mut outbox = duebell::providers::default_providers().remove(0);
        outbox.dir = Some(std::env::temp_dir().join("duebell-smtp-test-outbox"));
        c.providers = vec![p.clone(), outbox];
        c.routing = RoutingConfig {
            sms: vec!["outbox".into()],
            email: vec!["mail".into()],
        };
        c.caps.rules.clear();
        c.api.public_url = "https://lender.example.com".into();
    })
    .await;
    let engine = duebell::engine::Engine::build(&h.config, h.store.clone(), None).unwrap();
    h.import(
        "book.csv",
        &book(&[
            "E1,BE1,Ann Lee,,ann@example.com,en,Asia/Shanghai,2026-12-10,120.00,USD,active",
            "E2,BE2,Bo Li,,busy@example.com,en,Asia/Shanghai,2026-12-10,120.00,USD,active",
            "E3,BE3,Cy Wu,,reject@example.com,en,Asia/Shanghai,2026-12-10,120.00,USD,active",
        ]),
    )
    .await;
    h.set("2026-12-10T03:00:00Z");
    h.tick().await;
    engine.dispatcher.drain(h.now()).await.unwrap();
    let states: std::collections::HashMap<String, (MessageState, String)> = h
        .messages()
        .await
        .into_iter()
        .filter(|m| m.channel == Channel::Email)
        .map(|m| {
            (
                m.borrower_id.clone(),
                (m.state, m.reason.unwrap_or_default()),
            )
        })
        .collect();
    assert_eq!(states["BE1"].0, MessageState::Sent, "{states:?}");
    assert_eq!(
        states["BE2"].0,
        MessageState::Deferred,
        "451 is transient: {states:?}"
    );
    assert_eq!(
        states["BE3"].0,
        MessageState::Failed,
        "550 is permanent: {states:?}"
    );
    let mail = inbox
        .lock()
        .unwrap()
        .iter()
        .find(|m| m.contains("ann@example.com"))
        .cloned()
        .unwrap();
    for header in [
        "Message-ID: <",
        "From: Example Finance <reminders@example.com>",
        "List-Unsubscribe: <https://lender.example.com/u/m",
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        "Content-Type: multipart/alternative",
    ] {
        assert!(mail.contains(header), "no {header} in\n{mail}");
    }
    assert!(
        mail.contains("Content-Type: text/plain; charset=utf-8")
            && mail.contains("Content-Type: text/html; charset=utf-8"),
        "{mail}"
    );
}
