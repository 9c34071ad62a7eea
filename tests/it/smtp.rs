//! The SMTP provider against an SMTP server on loopback that speaks the
//! protocol (greeting, EHLO, MAIL, RCPT, DATA, QUIT), with or without
//! PIPELINING, and keeps what it receives; recipients containing "busy" get
//! 451, "reject" 550, "closing" 421 and the connection closed; at
//! "lost-envelope" and "lost-data" the connection breaks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use duebell::domain::Channel;
use duebell::providers::{ProviderKind, RoutingConfig};
use duebell::store::MessageState;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::support::{book, Harness};

type Inbox = Arc<Mutex<Vec<String>>>;

/// Each mail kept is `MAIL FROM:…`, `RCPT TO:…` and the data, one per line.
pub(crate) async fn smtp_server() -> (u16, Inbox) {
    let (port, inbox, ..) = smtp_server_with(false).await;
    (port, inbox)
}

/// For each MAIL command: whether RCPT and DATA had arrived with it (a
/// pipelined envelope).
type Groups = Arc<Mutex<Vec<bool>>>;

/// How many connections the server has accepted.
type Connections = Arc<AtomicUsize>;

/// The server, offering PIPELINING when `pipelining` (RFC 2920: replies in
/// order, DATA refused with 554 when no recipient was accepted, a message
/// kept only when its end, `.`, arrives).
pub(crate) async fn smtp_server_with(pipelining: bool) -> (u16, Inbox, Groups, Connections) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let inbox: Inbox = Arc::default();
    let groups: Groups = Arc::default();
    let connections: Connections = Arc::default();
    let (kept, grouped, counted) = (inbox.clone(), groups.clone(), connections.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            let (inbox, groups) = (kept.clone(), grouped.clone());
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut lines = BufReader::new(r).lines();
                w.write_all(b"220 test.local ESMTP\r\n").await.unwrap();
                let mut rcpt = String::new();
                let mut accepted = 0;
                let mut mail_from = String::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        if pipelining {
                            b"250-test.local\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 10000000\r\n"
                        } else {
                            b"250-test.local\r\n250-8BITMIME\r\n250 SIZE 10000000\r\n"
                        }
                    } else if upper.starts_with("MAIL FROM") {
                        let waiting = String::from_utf8_lossy(lines.get_ref().buffer());
                        groups.lock().unwrap().push(waiting.contains("DATA\r\n"));
                        mail_from = line.clone();
                        accepted = 0;
                        b"250 OK\r\n"
                    } else if upper.starts_with("RSET") {
                        // The transaction is dropped (RFC 5321 4.1.1.5).
                        (accepted, rcpt) = (0, String::new());
                        b"250 OK\r\n"
                    } else if upper.starts_with("NOOP") {
                        b"250 OK\r\n"
                    } else if upper.starts_with("RCPT TO") {
                        rcpt = line.clone();
                        if line.contains("lost-envelope") {
                            // The connection breaks before any message.
                            return;
                        }
                        if line.contains("closing") {
                            // The server shuts this connection down.
                            let _ = w.write_all(b"421 4.3.2 closing\r\n").await;
                            return;
                        }
                        if line.contains("busy") {
                            b"451 4.3.0 try again later\r\n"
                        } else if line.contains("reject") {
                            b"550 5.1.1 no such user\r\n"
                        } else if line.contains("policy") {
                            // A 5xx about the message, not the address.
                            b"554 5.6.0 message content refused\r\n"
                        } else {
                            accepted += 1;
                            b"250 OK\r\n"
                        }
                    } else if upper == "DATA" && accepted == 0 {
                        b"554 5.5.1 no valid recipients\r\n"
                    } else if upper == "DATA" {
                        w.write_all(b"354 go ahead\r\n").await.unwrap();
                        let mut data = String::new();
                        let mut ended = false;
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                ended = true;
                                break;
                            }
                            // Undo the dot-stuffing (RFC 5321 4.5.2).
                            data.push_str(l.strip_prefix('.').unwrap_or(&l));
                            data.push('\n');
                        }
                        if !ended || rcpt.contains("lost-data") {
                            // `lost-data`: the message arrived, the reply
                            // never leaves.
                            return;
                        }
                        if rcpt.contains("blocked") {
                            // Refused after DATA: delivery not authorized.
                            b"550 5.7.1 delivery not authorized, message refused\r\n"
                        } else {
                            inbox
                                .lock()
                                .unwrap()
                                .push(format!("{mail_from}\n{rcpt}\n{data}"));
                            b"250 2.0.0 queued\r\n"
                        }
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
    (port, inbox, groups, connections)
}

/// A harness sending email through the SMTP server on `port` (SMS to a
/// file outbox named `outbox`), with no caps.
pub(crate) async fn smtp_harness(
    port: u16,
    tweak: impl FnOnce(&mut duebell::config::Config),
) -> Harness {
    let mut p = duebell::providers::default_providers().remove(0);
    p.name = "mail".into();
    p.kind = ProviderKind::Smtp;
    p.dir = None;
    p.host = Some("127.0.0.1".into());
    p.port = Some(port);
    p.security = Some(duebell::providers::smtp::Security::Plain);
    p.from = Some("Example Finance <reminders@example.com>".into());
    let outbox_dir = tempfile::tempdir().unwrap().keep();
    Harness::with("2026-12-10T02:30:00Z", |c| {
        let mut outbox = duebell::providers::default_providers().remove(0);
        outbox.dir = Some(outbox_dir);
        c.providers = vec![p, outbox];
        c.routing = RoutingConfig {
            sms: vec!["outbox".into()],
            email: vec!["mail".into()],
        };
        c.caps.rules.clear();
        tweak(c);
    })
    .await
}

/// Imports `rows` (loans due 2026-12-10), plans and sends what is due that
/// morning; each borrower's email state and reason.
async fn send_due_today(
    h: &Harness,
    rows: &[&str],
) -> std::collections::HashMap<String, (MessageState, String)> {
    let engine = duebell::engine::Engine::build(&h.config, h.store.clone(), None).unwrap();
    h.import("book.csv", &book(rows)).await;
    h.set("2026-12-10T03:00:00Z");
    h.tick().await;
    engine.dispatcher.drain(h.now()).await.unwrap();
    h.messages()
        .await
        .into_iter()
        .filter(|m| m.channel == Channel::Email)
        .map(|m| {
            (
                m.borrower_id.clone(),
                (m.state, m.reason.unwrap_or_default()),
            )
        })
        .collect()
}

#[tokio::test]
async fn email_goes_through_smtp_with_both_parts_and_the_unsubscribe_headers() {
    email_through_smtp(false).await;
}

/// The same through a server that offers PIPELINING: each envelope (MAIL,
/// RCPT, DATA) arrives in one write, and every outcome is as above.
#[tokio::test]
async fn email_goes_through_a_pipelining_server_alike() {
    email_through_smtp(true).await;
}

async fn email_through_smtp(pipelining: bool) {
    let (port, inbox, groups, _) = smtp_server_with(pipelining).await;
    let h = smtp_harness(port, |c| {
        c.api.public_url = "https://lender.example.com".into();
    })
    .await;
    let states = send_due_today(
        &h,
        &[
            "E1,BE1,Ann Lee,,ann@example.com,en,Asia/Shanghai,2026-12-10,120.00,USD,active",
            "E2,BE2,Bo Li,,busy@example.com,en,Asia/Shanghai,2026-12-10,120.00,USD,active",
            "E3,BE3,Cy Wu,,reject@example.com,en,Asia/Shanghai,2026-12-10,120.00,USD,active",
        ],
    )
    .await;
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
    // Pipelined exactly when the server offers it.
    let groups = groups.lock().unwrap().clone();
    assert_eq!(groups.len(), 3, "one MAIL a message: {groups:?}");
    assert!(groups.iter().all(|&g| g == pipelining), "{groups:?}");
}

/// A hard bounce at RCPT (550 5.1.1) or after DATA (550 5.7.1) fails the
/// message and suppresses the address for every later step, with the
/// server's reply as the reason; a 5xx about the message only fails it.
/// Lifting the suppression (the API's `/v1/bounces/lift`, here its store
/// call) lets the next step through.
#[tokio::test]
async fn a_hard_bounce_suppresses_the_address_until_lifted() {
    hard_bounce_until_lifted(false).await;
}

/// The same through a server that offers PIPELINING, where a refused
/// recipient's reply arrives with the refused DATA after it.
#[tokio::test]
async fn a_hard_bounce_through_a_pipelining_server_alike() {
    hard_bounce_until_lifted(true).await;
}

async fn hard_bounce_until_lifted(pipelining: bool) {
    let (port, inbox, ..) = smtp_server_with(pipelining).await;
    let h = smtp_harness(port, |_| {}).await;
    let engine = duebell::engine::Engine::build(&h.config, h.store.clone(), None).unwrap();
    h.import(
        "book.csv",
        &book(&[
            "H1,BH1,Ann Lee,,reject@example.com,en,Asia/Shanghai,2026-12-10,120.00,USD,active",
            "H2,BH2,Bo Li,,blocked@example.com,en,Asia/Shanghai,2026-12-10,120.00,USD,active",
            "H3,BH3,Cy Wu,,policy@example.com,en,Asia/Shanghai,2026-12-10,120.00,USD,active",
            // Another borrower sharing the bouncing address.
            "H4,BH4,Di Ma,,reject@example.com,en,Asia/Shanghai,2026-12-13,120.00,USD,active",
        ]),
    )
    .await;
    h.set("2026-12-10T03:00:00Z");
    h.tick().await;
    engine.dispatcher.drain(h.now()).await.unwrap();
    let latest = |step: &'static str| {
        let store = h.store.clone();
        async move {
            store
                .messages(&Default::default())
                .await
                .unwrap()
                .into_iter()
                .filter(|m| m.channel == Channel::Email && m.step == step)
                .map(|m| {
                    (
                        m.borrower_id.clone(),
                        (m.state, m.reason.unwrap_or_default()),
                    )
                })
                .collect::<std::collections::HashMap<_, _>>()
        }
    };
    let due = latest("due").await;
    for (b, code) in [("BH1", "5.1.1"), ("BH2", "5.7.1")] {
        let (state, reason) = &due[b];
        assert_eq!(*state, MessageState::Failed, "{b}: {due:?}");
        assert!(
            reason.contains("hard bounce") && reason.contains(code),
            "{b}: {reason}"
        );
    }
    let (state, reason) = &due["BH3"];
    assert_eq!(*state, MessageState::Failed);
    assert!(!reason.contains("hard bounce"), "{reason}");

    // D+3: the bounced addresses are not emailed again (the other borrower
    // at the same address is due on 12-13: also suppressed); the address
    // whose message was refused for its content is.
    h.set("2026-12-13T03:00:00Z");
    h.tick().await;
    engine.dispatcher.drain(h.now()).await.unwrap();
    let late = latest("late_3").await;
    for b in ["BH1", "BH2"] {
        let (state, reason) = &late[b];
        assert_eq!(*state, MessageState::Suppressed, "{b}: {late:?}");
        assert!(reason.contains("marked invalid"), "{b}: {reason}");
    }
    assert_eq!(late["BH3"].0, MessageState::Failed, "{late:?}");
    let due_h4 = latest("due").await;
    assert_eq!(due_h4["BH4"].0, MessageState::Suppressed, "{due_h4:?}");
    let delivered_to = |who: &str| {
        inbox
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.contains(who))
            .count()
    };
    assert_eq!(delivered_to("reject@"), 0);
    assert_eq!(delivered_to("blocked@"), 0);

    // An operator lifts it; the next step emails the address again.
    let lifted = h
        .store
        .lift_bounce(h.now(), Channel::Email, "blocked@example.com")
        .await
        .unwrap();
    assert_eq!(lifted, 1);
    // The D+15 email: BH2's address is tried again (and this test server
    // still refuses it after DATA); BH1's stays suppressed.
    h.set("2026-12-25T03:00:00Z");
    h.tick().await;
    engine.dispatcher.drain(h.now()).await.unwrap();
    let late_15 = latest("late_15").await;
    assert_eq!(late_15["BH1"].0, MessageState::Suppressed, "{late_15:?}");
    let (state, reason) = &late_15["BH2"];
    assert_eq!(*state, MessageState::Failed, "{late_15:?}");
    assert!(reason.contains("hard bounce"), "{reason}");
}

/// A connection that breaks before the message was written cannot have
/// delivered it: the message is retried, not held as a maybe-delivery for
/// reconciliation. One that breaks after the message, before its reply,
/// may have delivered it. (Before the SMTP provider's own transaction,
/// lettre's whole `send` counted as after the message.)
#[tokio::test]
async fn a_connection_lost_before_the_message_is_retried_not_held_as_maybe_delivered() {
    for pipelining in [false, true] {
        let (port, inbox, ..) = smtp_server_with(pipelining).await;
        let h = smtp_harness(port, |_| {}).await;
        let states = send_due_today(
            &h,
            &[
                "L1,BL1,Ann Lee,,lost-envelope@example.com,en,Asia/Shanghai,2026-12-10,120.00,USD,active",
                "L2,BL2,Bo Li,,lost-data@example.com,en,Asia/Shanghai,2026-12-10,120.00,USD,active",
                "L3,BL3,Cy Wu,,cy@example.com,en,Asia/Shanghai,2026-12-10,120.00,USD,active",
            ],
        )
        .await;
        let (state, reason) = &states["BL1"];
        assert_eq!(
            *state,
            MessageState::Deferred,
            "pipelining {pipelining}: {states:?}"
        );
        assert!(
            !reason.contains("may have been delivered"),
            "pipelining {pipelining}: {reason}"
        );
        // Held in `sending` for reconciliation to ask about.
        assert_eq!(
            states["BL2"].0,
            MessageState::Sending,
            "pipelining {pipelining}: {states:?}"
        );
        assert_eq!(
            states["BL3"].0,
            MessageState::Sent,
            "pipelining {pipelining}: {states:?}"
        );
        assert_eq!(inbox.lock().unwrap().len(), 1);
    }
}

/// A refusal, at RCPT (451, 550, 554) or after the message (550 5.7.1),
/// leaves the connection for the next message, after an RSET where the
/// transaction was open: a hard bounce does not cost a new connection (with
/// TLS, a handshake and AUTH). A 421, the server closing, does not; the
/// next message gets a new connection. (Before, every refusal closed the
/// connection.)
#[tokio::test]
async fn a_refused_message_keeps_the_connection_for_the_next() {
    for pipelining in [false, true] {
        let (states, kept, connections) = through_one_server(
            pipelining,
            &[
                "K1,BK1,Ann Lee,,reject@example.com,en,Asia/Shanghai,2026-12-10,120.00,USD,active",
                "K2,BK2,Bo Li,,busy@example.com,en,Asia/Shanghai,2026-12-10,120.00,USD,active",
                "K3,BK3,Cy Wu,,blocked@example.com,en,Asia/Shanghai,2026-12-10,120.00,USD,active",
                "K4,BK4,Di Ma,,policy@example.com,en,Asia/Shanghai,2026-12-10,120.00,USD,active",
                "K5,BK5,Ed Xu,,ed@example.com,en,Asia/Shanghai,2026-12-10,120.00,USD,active",
            ],
        )
        .await;
        let expected = [
            ("BK1", MessageState::Failed),
            ("BK2", MessageState::Deferred),
            ("BK3", MessageState::Failed),
            ("BK4", MessageState::Failed),
            ("BK5", MessageState::Sent),
        ];
        for (b, state) in expected {
            assert_eq!(states[b].0, state, "pipelining {pipelining}: {states:?}");
        }
        assert_eq!(kept.len(), 1, "pipelining {pipelining}: {kept:?}");
        assert!(kept[0].contains("RCPT TO:<ed@example.com>"), "{}", kept[0]);
        assert_eq!(
            connections, 1,
            "pipelining {pipelining}: one connection for all five"
        );

        let (states, kept, connections) = through_one_server(
            pipelining,
            &[
                "C1,BC1,Ann Lee,,closing@example.com,en,Asia/Shanghai,2026-12-10,120.00,USD,active",
                "C2,BC2,Bo Li,,bo@example.com,en,Asia/Shanghai,2026-12-10,120.00,USD,active",
            ],
        )
        .await;
        assert_eq!(states["BC1"].0, MessageState::Deferred, "{states:?}");
        assert_eq!(states["BC2"].0, MessageState::Sent, "{states:?}");
        assert_eq!(kept.len(), 1);
        assert_eq!(
            connections, 2,
            "pipelining {pipelining}: the 421 closed the first connection"
        );
    }
}

/// `rows` due today sent through a fresh server (offering PIPELINING when
/// `pipelining`): each borrower's message state and reason, the mails the
/// server kept, and how many connections it accepted.
async fn through_one_server(
    pipelining: bool,
    rows: &[&str],
) -> (
    std::collections::HashMap<String, (MessageState, String)>,
    Vec<String>,
    usize,
) {
    let (port, inbox, _, connections) = smtp_server_with(pipelining).await;
    let h = smtp_harness(port, |_| {}).await;
    let states = send_due_today(&h, rows).await;
    let kept = inbox.lock().unwrap().clone();
    (states, kept, connections.load(Ordering::SeqCst))
}

#[test]
fn only_address_statuses_count_as_hard_bounces() {
    use duebell::providers::smtp::hard_bounce;
    for reply in [
        "permanent error (550): 5.1.1 <ann@example.com>: user unknown",
        "permanent error (552): 5.2.2 mailbox full",
        "permanent error (550): 5.7.1 delivery not authorized",
        "permanent error (550): 5.1.10 recipient address rejected",
    ] {
        assert!(hard_bounce(reply), "{reply}");
    }
    for reply in [
        "permanent error (554): 5.6.0 message content refused",
        "permanent error (550): 5.7.26 unauthenticated mail is prohibited",
        "permanent error (550): relay 10.1.1.1 refused",
        "permanent error (500): syntax error",
    ] {
        assert!(!hard_bounce(reply), "{reply}");
    }
}
