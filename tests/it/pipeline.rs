//! The reminder pipeline (planner → gate → dispatcher) in virtual time:
//! the ladder, planned-once, expiry, consolidation, suppression,
//! cancellation and hand-off.

use std::collections::HashMap;

use chrono::{Duration, Timelike};
use duebell::dispatch::Outcome;
use duebell::domain::Channel;
use duebell::store::MessageState;

use crate::support::{book, utc, Harness};

/// Li Wei in Shanghai with a phone and an email; one loan due 2026-12-10.
const LI: &str =
    "L1,B1,Li Wei,+8613812345678,li@example.com,zh-CN,Asia/Shanghai,2026-12-10,1234.50,CNY,active";

#[tokio::test]
async fn the_ladder_sends_each_step_on_its_local_day_at_its_preferred_time() {
    let h = Harness::new("2026-12-01T00:00:00Z").await;
    let data = h.dir.path().join("book.csv");
    std::fs::write(&data, book(&[LI])).unwrap();
    let sends =
        duebell::simulate::simulate(&h.config, &[data], vec![], utc("2026-12-01T00:00:00Z"), 45)
            .await
            .unwrap();
    let tz = chrono_tz::Asia::Shanghai;
    let got: Vec<(String, Channel, String)> = sends
        .iter()
        .map(|s| {
            let local = s.at.with_timezone(&tz);
            // Preferred time 10:00, spread over 20 minutes.
            assert!(
                local.hour() == 10 && local.minute() < 20,
                "{} sent at {local}",
                s.step
            );
            (s.step.clone(), s.channel, local.date_naive().to_string())
        })
        .collect();
    let want: Vec<(String, Channel, String)> = [
        ("pre_3", Channel::Sms, "2026-12-07"),
        ("pre_1", Channel::Sms, "2026-12-09"),
        ("due", Channel::Sms, "2026-12-10"),
        ("due", Channel::Email, "2026-12-10"),
        ("late_1", Channel::Sms, "2026-12-11"),
        ("late_3", Channel::Sms, "2026-12-13"),
        ("late_3", Channel::Email, "2026-12-13"),
        ("late_7", Channel::Sms, "2026-12-17"),
        ("late_15", Channel::Email, "2026-12-25"),
        ("late_30", Channel::Email, "2027-01-09"),
    ]
    .iter()
    .map(|(s, c, d)| (s.to_string(), *c, d.to_string()))
    .collect();
    let mut got_sorted = got.clone();
    got_sorted.sort_by(|a, b| (&a.2, a.1, &a.0).cmp(&(&b.2, b.1, &b.0)));
    let mut want_sorted = want.clone();
    want_sorted.sort_by(|a, b| (&a.2, a.1, &a.0).cmp(&(&b.2, b.1, &b.0)));
    assert_eq!(got_sorted, want_sorted);
    // The rendered text is the borrower's: their locale, amount and date.
    let pre3 = sends.iter().find(|s| s.step == "pre_3").unwrap();
    assert!(
        pre3.body.contains("¥1,234.50") && pre3.body.contains("2026年12月10日"),
        "{}",
        pre3.body
    );
    assert!(pre3.body.contains("回复TD退订"), "{}", pre3.body);
}

#[tokio::test]
async fn each_loan_step_and_channel_is_planned_once_across_ticks_reimports_and_restarts() {
    let h = Harness::new("2026-12-07T01:00:00Z").await;
    h.import("book.csv", &book(&[LI])).await;
    h.tick().await;
    let first = h.messages().await;
    assert_eq!(first.len(), 1, "{first:#?}");
    assert_eq!(
        (first[0].step.as_str(), first[0].state),
        ("pre_3", MessageState::Planned)
    );
    // More ticks the same day, a re-import, then a "restart": a fresh engine on the same store.
    h.tick().await;
    h.clock.advance(Duration::hours(3));
    h.tick().await;
    h.import("book.csv", &book(&[LI])).await;
    h.tick().await;
    let store = duebell::store::open(&h.config.store).await.unwrap();
    let engine = duebell::engine::Engine::build(&h.config, store.clone(), None).unwrap();
    engine.plan(h.now()).await.unwrap();
    assert_eq!(h.messages().await.len(), 1);
}

#[tokio::test]
async fn steps_missed_while_down_expire_with_a_reason_and_the_current_step_goes() {
    let h = Harness::new("2026-12-05T02:00:00Z").await;
    h.import("book.csv", &book(&[LI])).await;
    h.tick().await; // D-5: nothing due yet
    assert!(h.messages().await.is_empty());
    // The daemon is down from D-5 to D+1 (local 2026-12-11 09:00).
    h.set("2026-12-11T01:00:00Z");
    h.tick().await;
    let by_step: HashMap<(String, Channel), (MessageState, String)> = h
        .messages()
        .await
        .into_iter()
        .map(|m| {
            (
                (m.step.clone(), m.channel),
                (m.state, m.reason.unwrap_or_default()),
            )
        })
        .collect();
    for (step, ch) in [
        ("pre_3", Channel::Sms),
        ("pre_1", Channel::Sms),
        ("due", Channel::Sms),
        ("due", Channel::Email),
    ] {
        let (state, reason) = &by_step[&(step.to_string(), ch)];
        assert_eq!(*state, MessageState::Expired, "{step} {ch}");
        assert!(reason.starts_with("missed"), "{reason}");
    }
    assert_eq!(
        by_step[&("late_1".to_string(), Channel::Sms)].0,
        MessageState::Planned
    );
}

#[tokio::test]
async fn a_pre_due_step_that_cannot_go_before_the_due_date_expires() {
    // Imported at 21:30 local on D-1: quiet hours until 08:00 on the due
    // date, when pre_1 is no longer relevant.
    let h = Harness::new("2026-12-09T13:30:00Z").await;
    h.import("book.csv", &book(&[LI])).await;
    h.tick().await;
    let m = h.messages().await;
    assert_eq!(m.len(), 1);
    assert_eq!(
        (m[0].step.as_str(), m[0].state),
        ("pre_1", MessageState::Expired)
    );
    assert!(
        m[0].reason
            .as_deref()
            .unwrap()
            .contains("after the step's window closes"),
        "{:?}",
        m[0].reason
    );
}

#[tokio::test]
async fn loans_of_one_borrower_due_together_go_as_one_message() {
    let h = Harness::new("2026-12-10T02:30:00Z").await;
    h.import(
        "book.csv",
        &book(&[LI, "L2,B1,Li Wei,+8613812345678,li@example.com,zh-CN,Asia/Shanghai,2026-12-10,99.00,CNY,active"]),
    )
    .await;
    h.tick().await;
    h.set("2026-12-10T03:00:00Z");
    h.drain().await;
    let sent = h.recorder.take();
    let sms: Vec<_> = sent
        .iter()
        .filter(|(_, m)| m.channel == Channel::Sms)
        .collect();
    assert_eq!(sms.len(), 1);
    assert_eq!(sms[0].1.loan_ids, vec!["L1", "L2"]);
    assert!(sms[0].1.body.contains("您有2笔借款"), "{}", sms[0].1.body);
    // The message records what was really sent: body and template version.
    let stored = h
        .messages()
        .await
        .into_iter()
        .find(|m| m.channel == Channel::Sms)
        .unwrap();
    assert_eq!(stored.state, MessageState::Sent);
    assert_eq!(stored.body.as_deref(), Some(sms[0].1.body.as_str()));
    assert_eq!(
        stored.template_version.as_deref(),
        Some(sms[0].1.template_version.as_str())
    );
}

#[tokio::test]
async fn suppression_names_its_reason_and_sends_nothing() {
    let h = Harness::new("2026-12-10T02:30:00Z").await;
    h.import(
        "book.csv",
        &book(&[
            "P1,BP,Paid Person,+8613900000001,,zh-CN,Asia/Shanghai,2026-12-10,10.00,CNY,paid",
            "H1,BH,Held Person,+8613900000002,,zh-CN,Asia/Shanghai,2026-12-10,10.00,CNY,active",
            "O1,BO,Opted Person,+8613900000003,,zh-CN,Asia/Shanghai,2026-12-10,10.00,CNY,active",
        ]),
    )
    .await;
    let now = h.now();
    h.store
        .add_hold(
            now,
            None,
            Some("H1"),
            duebell::domain::HoldKind::Dispute,
            None,
        )
        .await
        .unwrap();
    h.store
        .set_opt_out(now, "BO", Channel::Sms, true, "api")
        .await
        .unwrap();
    h.tick().await;
    h.set("2026-12-10T05:00:00Z");
    h.drain().await;
    assert!(h.recorder.take().is_empty());
    let reasons: HashMap<(String, Channel), (MessageState, String)> = h
        .messages()
        .await
        .into_iter()
        .map(|m| {
            (
                (m.loan_ids[0].clone(), m.channel),
                (m.state, m.reason.unwrap_or_default()),
            )
        })
        .collect();
    assert!(
        !reasons.keys().any(|(l, _)| l == "P1"),
        "a paid loan is not planned"
    );
    assert_eq!(
        reasons[&("H1".into(), Channel::Sms)],
        (MessageState::Suppressed, "loan hold: dispute".into())
    );
    assert_eq!(
        reasons[&("O1".into(), Channel::Sms)],
        (MessageState::Suppressed, "sms address opted out".into())
    );
    assert_eq!(
        reasons[&("O1".into(), Channel::Email)],
        (MessageState::Suppressed, "no email address on file".into())
    );
}

#[tokio::test]
async fn a_payment_or_opt_out_after_planning_cancels_the_unsent_message() {
    // 08:00 local on the due date: planned for the 10:00 preferred time.
    let h = Harness::new("2026-12-10T00:00:00Z").await;
    h.import(
        "book.csv",
        &book(&[
            LI,
            "L3,B3,Wang Fang,+8613900000033,,zh-CN,Asia/Shanghai,2026-12-10,50.00,CNY,active",
        ]),
    )
    .await;
    h.tick().await;
    // B3 has no email: that one is suppressed from the start.
    let pending: Vec<_> = h
        .messages()
        .await
        .into_iter()
        .filter(|m| m.state != MessageState::Suppressed)
        .collect();
    assert_eq!(pending.len(), 3);
    assert!(pending.iter().all(|m| m.state == MessageState::Planned));
    h.import(
        "payments.csv",
        "payment_id,loan_id,amount,paid_at\nP1,L1,1234.50,2026-12-10T00:30:00Z\n",
    )
    .await;
    h.store
        .set_opt_out(h.now(), "B3", Channel::Sms, true, "inbound STOP")
        .await
        .unwrap();
    h.set("2026-12-10T03:00:00Z");
    let outcomes = h.drain().await;
    assert!(
        outcomes.iter().all(|o| matches!(o, Outcome::Decided(_))),
        "{outcomes:?}"
    );
    assert!(h.recorder.take().is_empty());
    for m in h
        .messages()
        .await
        .into_iter()
        .filter(|m| m.state != MessageState::Suppressed)
    {
        assert_eq!(m.state, MessageState::Cancelled, "{m:?}");
        let reason = m.reason.unwrap_or_default();
        if m.borrower_id == "B1" {
            assert!(reason.contains("paid"), "{reason}");
        } else {
            assert!(reason.contains("opted out"), "{reason}");
        }
    }
}

#[tokio::test]
async fn a_loan_reaching_the_handoff_step_is_posted_signed_and_retried() {
    use wiremock::matchers::{header_exists, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/handoff"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/handoff"))
        .and(header_exists("x-duebell-signature"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let url = format!("{}/handoff", server.uri());
    let h = Harness::with("2026-12-25T02:30:00Z", |c| {
        c.handoff.url = url.clone();
        c.handoff.secret = "a-long-shared-secret".into();
    })
    .await;
    h.import("book.csv", &book(&[LI])).await;
    h.tick().await;
    let client = reqwest::Client::new();
    let first = duebell::handoff::post_due(h.store.as_ref(), &h.config.handoff, &client, h.now())
        .await
        .unwrap();
    assert_eq!(first, (0, 1));
    // Not retried before its backoff; then accepted.
    assert_eq!(
        duebell::handoff::post_due(h.store.as_ref(), &h.config.handoff, &client, h.now())
            .await
            .unwrap(),
        (0, 0)
    );
    h.clock.advance(Duration::minutes(5));
    assert_eq!(
        duebell::handoff::post_due(h.store.as_ref(), &h.config.handoff, &client, h.now())
            .await
            .unwrap(),
        (1, 0)
    );
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    let last = &requests[1];
    let event: duebell::handoff::HandoffEvent = serde_json::from_slice(&last.body).unwrap();
    assert_eq!(
        (event.loan_id.as_str(), event.step.as_str()),
        ("L1", "late_15")
    );
    crate::support::assert_signed(last, "a-long-shared-secret");
    // Delivered once: nothing more to post.
    h.clock.advance(Duration::hours(1));
    assert_eq!(
        duebell::handoff::post_due(h.store.as_ref(), &h.config.handoff, &client, h.now())
            .await
            .unwrap(),
        (0, 0)
    );
}
