//! The compliance gate enforced at claim time, across concurrent workers.

use duebell::dispatch::Outcome;
use duebell::domain::Channel;
use duebell::store::{MessageState, NewMessage};

use crate::support::{book, Harness};

/// A `due` message for one loan, planned for `now` (as if by an earlier
/// tick).
fn due_now(
    b: &duebell::store::PlanBorrower,
    loan: &duebell::store::LoanRow,
    channel: Channel,
    contact_point: i64,
    now: chrono::DateTime<chrono::Utc>,
    key: &str,
) -> NewMessage {
    NewMessage {
        dedupe_key: format!("{key}-{}-{channel}", loan.pk),
        borrower_pk: b.pk,
        contact_point: Some(contact_point),
        channel,
        step: "due".into(),
        template: "due_today".into(),
        state: MessageState::Planned,
        reason: "test".into(),
        not_before: now,
        expires_at: None,
        loans: vec![(loan.pk, loan.due_date, "due".into())],
        handoffs: vec![],
    }
}

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
            msgs.push(due_now(&b, loan, ch, cp, h.now(), "race"));
        }
    }
    assert_eq!(
        h.store
            .record_plan(h.now(), &msgs, &[], None)
            .await
            .unwrap(),
        24
    );

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

#[tokio::test]
async fn sends_at_the_same_instant_to_one_address_each_count_towards_the_caps() {
    // Three emails for one borrower (three loans at different steps), all
    // claimed at the same instant: the shipped cap of two contacts per
    // local day must see the first two as two, not as one.
    let h = Harness::new("2026-12-10T03:00:00Z").await;
    let rows: Vec<String> = (0..3)
        .map(|i| {
            format!(
                "S{i},B1,Li Wei,,li@example.com,zh-CN,Asia/Shanghai,2026-12-{:02},10.00,CNY,active",
                10 + i
            )
        })
        .collect();
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    h.import("book.csv", &book(&rows)).await;
    let b = h.store.plan_borrower("B1", h.now()).await.unwrap().unwrap();
    let cp = b.contact(Channel::Email).unwrap().id;
    let msgs: Vec<NewMessage> = b
        .loans
        .iter()
        .map(|loan| due_now(&b, loan, Channel::Email, cp, h.now(), "same-instant"))
        .collect();
    assert_eq!(
        h.store
            .record_plan(h.now(), &msgs, &[], None)
            .await
            .unwrap(),
        3
    );
    h.drain().await;
    assert_eq!(h.recorder.take().len(), 2, "all channels ≤ 2 per local day");
    let states: Vec<MessageState> = h.messages().await.iter().map(|m| m.state).collect();
    assert_eq!(
        states
            .iter()
            .filter(|s| **s == MessageState::Deferred)
            .count(),
        1,
        "{states:?}"
    );
}
