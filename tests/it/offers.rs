//! Offers end to end: the late_3 step's fee waiver is made with its
//! messages (once per loan, shared by both channels), a payment inside the
//! deadline takes it (the loan is settled and a signed `offer_taken` event
//! reaches the lender), a late payment lets it expire, it is never made
//! again, and `simulate` counts offers made and taken.

use chrono::Duration;

use crate::support::{book, duebell, run, Harness};
use duebell::domain::OfferState;

const L1: &str =
    "L1,B1,Wang Fang,+8613800000001,w1@example.com,zh-CN,Asia/Shanghai,2026-12-01,1230.00,CNY,active";
const L2: &str =
    "L2,B2,Li Lei,+8613800000002,l2@example.com,zh-CN,Asia/Shanghai,2026-12-01,1230.00,CNY,active";

#[tokio::test]
async fn a_payment_in_time_takes_the_offer_and_the_lender_is_told_a_late_one_expires() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let lender = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/offers"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&lender)
        .await;
    let url = format!("{}/offers", lender.uri());
    // 09:00 in Shanghai on day 3 past due: late_3 goes at 10:00.
    let h = Harness::with("2026-12-04T01:00:00Z", |c| {
        c.offers.url = url.clone();
        c.offers.secret = "an-offers-signing-secret".into();
    })
    .await;
    h.import("book.csv", &book(&[L1, L2])).await;
    h.tick().await;
    h.set("2026-12-04T02:30:00Z");
    h.drain().await;
    let sent = h.recorder.take();
    assert_eq!(sent.len(), 4, "late_3 by SMS and email to both borrowers");
    for (_, m) in &sent {
        assert_eq!(m.step, "late_3");
        // The terms as the borrower reads them: the rest (1,200.00) within
        // 48 hours of the message, in Shanghai time.
        assert!(m.body.contains("¥1,200.00"), "{}", m.body);
        assert!(m.body.contains("可免除滞纳金¥30.00"), "{}", m.body);
        assert!(m.body.contains("12月6日"), "{}", m.body);
    }
    let offers = h.store.offers(None).await.unwrap();
    assert_eq!(
        offers.len(),
        2,
        "one offer per loan, shared by both channels"
    );
    let made = offers[0].made_at;
    for o in &offers {
        assert_eq!(o.state, OfferState::Open);
        assert_eq!(o.terms.min_payment.to_string(), "1200.00");
        assert_eq!(o.terms.expires_at, o.made_at + Duration::hours(48));
    }

    // L1 pays the rest inside the deadline; the nightly file arrives later.
    h.set("2026-12-05T18:00:00Z");
    h.import(
        "pay1.csv",
        "payment_id,loan_id,amount,paid_at\nP1,L1,1200.00,2026-12-05T08:00:00+08:00\n",
    )
    .await;
    let settle = || duebell::offers::settle(h.store.as_ref(), h.now(), None);
    let settled = settle().await.unwrap();
    assert_eq!((settled.taken, settled.expired), (1, 0));
    let loan = h
        .store
        .loan(&duebell::domain::LoanId::parse("L1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loan.status, duebell::domain::LoanStatus::Paid, "{loan:?}");
    let client = reqwest::Client::new();
    let post = || {
        duebell::offers::post_due(
            h.store.as_ref(),
            &h.config.offers,
            &h.config.handoff,
            &client,
            h.now(),
        )
    };
    assert_eq!(post().await.unwrap(), (1, 0));
    let requests = lender.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let event: duebell::offers::OfferEvent = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(event.event, "offer_taken");
    assert_eq!(
        (event.loan_id.as_str(), event.step.as_str()),
        ("L1", "late_3")
    );
    assert_eq!(event.kind, "fee_waiver");
    assert_eq!(event.amount.as_deref(), Some("30.00"));
    assert_eq!(event.payment_ids, ["P1"]);
    crate::support::assert_signed(&requests[0], "an-offers-signing-secret");
    // Posted once.
    h.clock.advance(Duration::hours(1));
    assert_eq!(post().await.unwrap(), (0, 0));

    // L2 pays the same after the deadline: expired, nothing posted.
    h.set("2026-12-07T00:00:00Z");
    h.import(
        "pay2.csv",
        "payment_id,loan_id,amount,paid_at\nP2,L2,1200.00,2026-12-06T12:00:00+08:00\n",
    )
    .await;
    let settled = settle().await.unwrap();
    assert_eq!((settled.taken, settled.expired), (0, 1));
    let offers = h.store.offers(None).await.unwrap();
    let l2 = offers.iter().find(|o| o.loan_id == "L2").unwrap();
    assert_eq!(l2.state, OfferState::Expired);
    assert_eq!(l2.event_state, "none");
    // The borrower timeline lists each borrower's own offers.
    let b1 = h.store.offers(Some("B1")).await.unwrap();
    assert_eq!(b1.len(), 1);
    assert_eq!(
        (b1[0].loan_id.as_str(), b1[0].state),
        ("L1", OfferState::Taken)
    );
    assert!(duebell::offers::describe(&b1[0]).ends_with(": taken"));
    // Never made again for that step: asking with new terms returns the
    // expired one as it was.
    let fresh = h.config.policy.steps[4].offer.as_ref().unwrap().for_loan(
        "1230".parse().unwrap(),
        "CNY",
        h.now(),
    );
    let again = h
        .store
        .offer_for(h.now(), l2.loan_pk, l2.due_date, "late_3", &fresh)
        .await
        .unwrap();
    assert_eq!(
        (again.id, again.state, again.made_at),
        (l2.id, OfferState::Expired, made)
    );

    // The audit names each message's offer and how it ended.
    let mut out = Vec::new();
    duebell::audit::export(
        h.store.as_ref(),
        None,
        None,
        duebell::audit::AuditFormat::Csv,
        chrono_tz::Asia::Shanghai,
        &mut out,
    )
    .await
    .unwrap();
    let csv = String::from_utf8(out).unwrap();
    assert!(
        csv.contains("fee_waiver 30.00 CNY off, pay 1200.00 CNY by"),
        "{csv}"
    );
    assert!(
        csv.contains(": taken") && csv.contains(": expired"),
        "{csv}"
    );
}

#[test]
fn simulate_counts_offers_made_and_taken_and_plan_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("book.csv");
    std::fs::write(&data, book(&[L1, L2])).unwrap();
    let events = dir.path().join("events.jsonl");
    // L1 pays the rest a day after its late_3 message; L2 never does.
    std::fs::write(
        &events,
        "{\"at\":\"2026-12-05T02:00:00Z\",\"type\":\"payment\",\"payment_id\":\"P1\",\"loan_id\":\"L1\",\"amount\":\"1200.00\"}\n",
    )
    .unwrap();
    let env = vec![
        (
            "DUEBELL_STORE__URL".to_owned(),
            format!("sqlite://{}", dir.path().join("state.db").display()),
        ),
        (
            "DUEBELL_PROVIDERS__0__DIR".to_owned(),
            dir.path().join("outbox").display().to_string(),
        ),
    ];
    let (code, stdout, stderr) = run(duebell(&[
        "simulate",
        "--data",
        data.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
        "--from",
        "2026-12-03T00:00:00Z",
        "--days",
        "6",
    ])
    .envs(env.clone()));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("offers: made 2, taken 1, expired 1, still open 0"),
        "{stderr}"
    );
    // Taken: L1 is settled, so late_7 goes to L2 only.
    let late_7: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("\"late_7\""))
        .collect();
    assert!(!late_7.is_empty(), "{stdout}");
    assert!(late_7.iter().all(|l| !l.contains("\"L1\"")), "{late_7:?}");

    // plan names the offer of a step that is due.
    let (code, _, stderr) = run(duebell(&["import", data.to_str().unwrap()]).envs(env.clone()));
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) =
        run(duebell(&["plan", "--at", "2026-12-04T01:00:00Z", "--format", "json"]).envs(env));
    assert_eq!(code, 0, "{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.contains("\"late_3\""))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.contains("\"offer\":\"fee_waiver 30.00 off within 2days\""),
        "{line}"
    );
}
