//! The compliance gate enforced at claim time, across concurrent workers.

use duebell::dispatch::Outcome;
use duebell::domain::Channel;
use duebell::store::{MessageState, NewMessage};

use crate::support::{book, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_racing_for_one_borrowers_messages_never_exceed_the_cap() {
    let h = Harness::new("2026-12-10T03:00:00Z").await;
    let rows: Vec<String> = (0..12)
        .map(|i| format!("R{i},B1,Li Wei,+8613812345678,li@example.com,zh-CN,Asia/Shanghai,2026-12-{:02},10.00,CNY,active", 10 + i))
        .collect();
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    h.import("book.csv", &book(&rows)).await;
    // Twelve SMS and twelve emails for one borrower, all due now (as if
    // planned by an earlier tick): the caps must hold them back.
    let b = h.store.plan_borrower("B1", h.now()).await.unwrap().unwrap();
    let mut msgs = Vec::new();
    for loan in &b.loans {
        for (ch, cp) in [
            (Channel::Sms, b.contact(Channel::Sms).unwrap().id),
            (Channel::Email, b.contact(Channel::Email).unwrap().id),
        ] {
            msgs.push(NewMessage {
                dedupe_key: format!("race-{}-{ch}", loan.pk),
                borrower_pk: b.pk,
                contact_point: Some(cp),
                channel: ch,
                step: "due".into(),
                template: "due_today".into(),
                state: MessageState::Planned,
                reason: "test".into(),
                not_before: h.now(),
                expires_at: None,
                loans: vec![(loan.pk, loan.due_date, "due".into())],
                handoffs: vec![],
            });
        }
    }
    assert_eq!(h.store.record_plan(h.now(), &msgs, None).await.unwrap(), 24);

    let mut workers = Vec::new();
    for _ in 0..2 {
        let d = h.engine.dispatcher.clone();
        let now = h.now();
        workers.push(tokio::spawn(async move {
            let mut sent = 0;
            loop {
                match d.dispatch_next(now).await.unwrap() {
                    Outcome::Idle => return sent,
                    Outcome::Sent { .. } => sent += 1,
                    _ => {}
                }
            }
        }));
    }
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    // Shipped caps: SMS ≤ 1 per local day, all channels ≤ 2 per local day.
    let sent = h.recorder.take();
    assert_eq!(total, sent.len());
    assert_eq!(
        sent.iter()
            .filter(|(_, m)| m.channel == Channel::Sms)
            .count(),
        1
    );
    assert_eq!(sent.len(), 2);
    let deferred = h
        .messages()
        .await
        .into_iter()
        .filter(|m| m.state == MessageState::Deferred)
        .count();
    assert_eq!(deferred, 22);
    // Deferred to tomorrow's window, not dropped.
    let next = h.store.next_pending_at().await.unwrap().unwrap();
    assert_eq!(next, crate::support::utc("2026-12-11T00:00:00Z"));
}
