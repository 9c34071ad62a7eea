//! The store's contract for several instances, on this binary's backend
//! (`it`: SQLite, `it_pg`: PostgreSQL): the planner lease and its fencing
//! token, claim leases and their recovery, and `store copy` both ways.

use std::time::Duration;

use chrono::Duration as Days;
use duebell::planner::Pass;
use duebell::store::{ClaimLease, MessageState, StoreError, Verdict};

use crate::support::{book, Harness};

/// Three borrowers due today (US numbers: 20:00 UTC is inside every US
/// zone's window), imported.
async fn planned(at: &str) -> Harness {
    let h = Harness::new(at).await;
    h.import(
        "book.csv",
        &book(&[
            "L1,B1,Ann Lee,+12125550101,,en,UTC,2026-12-10,10.00,USD,active",
            "L2,B2,Bo Chan,+12125550102,,en,UTC,2026-12-10,20.00,USD,active",
            "L3,B3,Cy Diaz,+12125550103,,en,UTC,2026-12-10,30.00,USD,active",
        ]),
    )
    .await;
    h
}

fn send(_: &duebell::store::ClaimView) -> Verdict {
    Verdict::Send {
        attempt_id: "a1".into(),
        loans: vec![],
        window: "test".into(),
    }
}

#[tokio::test]
async fn the_planner_lease_passes_on_expiry_and_fences_off_the_stale_holder() {
    let h = planned("2026-12-10T20:00:00Z").await;
    let s = h.store.clone();
    let now = h.now();
    let ttl = Duration::from_secs(15);
    let a = s
        .acquire_lease("planner", "a", now, ttl)
        .await
        .unwrap()
        .unwrap();
    assert!(s
        .acquire_lease("planner", "b", now, ttl)
        .await
        .unwrap()
        .is_none());
    // Renewal by the holder keeps the token.
    let later = now + Days::seconds(10);
    let renewed = s
        .acquire_lease("planner", "a", later, ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renewed.token, a.token);
    assert!(s
        .acquire_lease("planner", "b", later + Days::seconds(14), ttl)
        .await
        .unwrap()
        .is_none());

    // `a` stalls past its lease; `b` takes over with a higher token.
    let takeover = later + Days::seconds(16);
    let b = s
        .acquire_lease("planner", "b", takeover, ttl)
        .await
        .unwrap()
        .unwrap();
    assert!(b.token > a.token, "{b:?} after {a:?}");

    // The stale holder wakes and plans: nothing it writes lands.
    let before = s.message_counts().await.unwrap();
    let err = h
        .engine
        .plan_pass(takeover, Pass::Full, Some(&a))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced(_)), "{err}");
    assert_eq!(s.message_counts().await.unwrap(), before);
    assert!(matches!(
        s.cancel_ineligible(takeover, None, Some(&a)).await,
        Err(StoreError::Fenced(_))
    ));
    // The current holder's plan is recorded.
    let tick = h
        .engine
        .plan_pass(takeover, Pass::Full, Some(&b))
        .await
        .unwrap();
    // Three texts, and three emails suppressed for want of an address.
    assert_eq!(tick.recorded, 6);

    // A clean stop hands the role over at once.
    s.release_lease(&b).await.unwrap();
    let again = s
        .acquire_lease("planner", "a", takeover, ttl)
        .await
        .unwrap()
        .unwrap();
    assert!(again.token > b.token);
}

#[tokio::test]
async fn a_claim_stays_with_its_live_instance_and_is_recovered_once_its_lease_runs_out() {
    let h = planned("2026-12-10T20:00:00Z").await;
    h.tick().await;
    let s = h.store.clone();
    // Past any spreading of the release.
    let now = h.now() + Days::minutes(10);
    let since = now - Days::days(7);
    let lease = |holder: &str, secs: i64| ClaimLease {
        holder: holder.into(),
        until: now + Days::seconds(secs),
    };
    let (first, _) = s
        .claim_next(now, since, &lease("a", 30), &send)
        .await
        .unwrap()
        .unwrap();
    let (second, _) = s
        .claim_next(now, since, &lease("b", 30), &send)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(first.message_id, second.message_id);

    // While the leases hold, nobody may reconcile them.
    assert!(s
        .in_flight(now + Days::seconds(29))
        .await
        .unwrap()
        .is_empty());
    // `a` lives and renews; `b` died.
    assert_eq!(
        s.renew_claims("a", now + Days::seconds(60)).await.unwrap(),
        1
    );
    let stale = s.in_flight(now + Days::seconds(31)).await.unwrap();
    assert_eq!(
        stale.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![second.message_id]
    );

    // Recovery ends it once; the dead instance's late answer changes nothing.
    let unknown = duebell::store::Finish::Unknown {
        reason: "instance b died mid-send".into(),
    };
    assert!(s
        .finish(now, second.message_id, "a1", &unknown)
        .await
        .unwrap());
    let sent = duebell::store::Finish::Sent {
        provider: "p".into(),
        provider_ref: "r".into(),
        template_version: "v".into(),
        subject: None,
        body: "b".into(),
    };
    assert!(!s.finish(now, second.message_id, "a1", &sent).await.unwrap());

    // A clean stop releases the claims left in flight at once.
    assert_eq!(s.release_claims("a").await.unwrap(), 1);
    let left = s.in_flight(now).await.unwrap();
    assert_eq!(
        left.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![first.message_id]
    );

    // A replay goes back to `planned` with its contact un-logged, so caps
    // count it once when it is claimed again.
    let replay = duebell::store::Finish::Replay {
        reason: "replayed".into(),
    };
    assert_eq!(s.sent_since(since).await.unwrap(), 2);
    assert!(s
        .finish(now, first.message_id, "a1", &replay)
        .await
        .unwrap());
    assert_eq!(
        s.sent_since(since).await.unwrap(),
        1,
        "the replayed contact still counts"
    );
    let mut claimed = Vec::new();
    while let Some((v, _)) = s
        .claim_next(now, since, &lease("c", 30), &send)
        .await
        .unwrap()
    {
        claimed.push(v.message_id);
    }
    assert!(claimed.contains(&first.message_id), "{claimed:?}");
    let events = s.message_events(first.message_id).await.unwrap();
    let states: Vec<MessageState> = events.iter().map(|e| e.to).collect();
    assert_eq!(
        states,
        vec![
            MessageState::Planned,
            MessageState::Sending,
            MessageState::Planned,
            MessageState::Sending,
        ]
    );
}

/// A store of the other backend than this binary's.
fn other_url(dir: &std::path::Path) -> String {
    match crate::BACKEND {
        crate::support::Backend::Sqlite => crate::support::pg_schema(),
        crate::support::Backend::Postgres => format!("sqlite://{}", dir.join("copy.db").display()),
    }
}

#[tokio::test]
async fn store_copy_moves_every_row_both_ways_verified_by_counts() {
    let h = planned("2026-12-10T20:00:00Z").await;
    h.import(
        "pay.csv",
        "payment_id,loan_id,amount,paid_at\nP1,L3,30.00,2026-12-10T09:00:00Z\n",
    )
    .await;
    h.tick().await;
    h.set("2026-12-10T20:10:00Z");
    h.drain().await;
    let original = h.messages().await;
    let key = h
        .store
        .secret("unsubscribe_key", &[7; 32], chrono::Utc::now())
        .await
        .unwrap();
    assert!(original.iter().any(|m| m.state == MessageState::Sent));
    let from = h.config.store.url.clone();
    let there = other_url(h.dir.path());
    let back = crate::support::store_url(&h.dir.path().join("back"));

    let (code, stdout, stderr) = crate::support::run(crate::support::duebell(&[
        "store", "copy", "--from", &from, "--to", &there,
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("every table's count matches"), "{stdout}");
    assert!(stdout.contains("messages"), "{stdout}");
    let (code, _, stderr) = crate::support::run(crate::support::duebell(&[
        "store", "copy", "--from", &there, "--to", &back,
    ]));
    assert_eq!(code, 0, "{stderr}");

    let cfg = |url: &str| duebell::config::StoreConfig {
        url: url.into(),
        ..Default::default()
    };
    let round = duebell::store::open(&cfg(&back)).await.unwrap();
    let copied = round.messages(&Default::default()).await.unwrap();
    let view = |m: &duebell::store::MessageView| {
        (
            m.id,
            m.state,
            m.reason.clone(),
            m.body.clone(),
            m.loan_ids.clone(),
            m.not_before,
        )
    };
    assert_eq!(
        copied.iter().map(view).collect::<Vec<_>>(),
        original.iter().map(view).collect::<Vec<_>>()
    );
    assert_eq!(
        round.counts().await.unwrap(),
        h.store.counts().await.unwrap()
    );
    // The copied store keeps working: new rows take fresh ids.
    let hold = round
        .add_hold(
            h.now(),
            Some("B1"),
            None,
            duebell::domain::HoldKind::Dispute,
            None,
        )
        .await
        .unwrap();
    assert!(hold.is_some());
    // The deployment's signing key moves too: old unsubscribe links work.
    assert_eq!(
        round
            .secret("unsubscribe_key", &[9; 32], chrono::Utc::now())
            .await
            .unwrap(),
        key
    );

    // Into a store that holds data: refused, and the target is unchanged.
    let (code, _, stderr) = crate::support::run(crate::support::duebell(&[
        "store", "copy", "--from", &from, "--to", &back,
    ]));
    assert_eq!(code, 1);
    assert!(stderr.contains("copy only into an empty store"), "{stderr}");
    assert_eq!(
        round.counts().await.unwrap(),
        h.store.counts().await.unwrap()
    );
    round.close().await;
}

#[tokio::test]
async fn committed_work_wakes_other_instances_and_a_plan_request_reaches_the_planner() {
    let h = planned("2026-12-10T20:00:00Z").await;
    let other = duebell::store::open(&h.config.store).await.unwrap();
    let Some(wake) = other.wakeups() else {
        // The embedded store has no other instances to wake: they poll.
        assert_eq!(crate::BACKEND, crate::support::Backend::Sqlite);
        return;
    };
    // The listener connects in the background: ask for plans until one
    // request arrives, which shows it listens.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        h.store.request_plan().await.unwrap();
        let heard = tokio::time::timeout(Duration::from_millis(300), wake.plan.notified()).await;
        if heard.is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the plan request never arrived"
        );
    }
    // Planning commits new work: the other instance is woken.
    assert!(h.tick().await.recorded > 0);
    tokio::time::timeout(Duration::from_secs(5), wake.work.notified())
        .await
        .expect("no wake-up for committed work");
    other.close().await;
}

#[tokio::test]
async fn a_send_the_file_outbox_never_wrote_is_planned_again_not_held_unknown() {
    let h = planned("2026-12-10T20:00:00Z").await;
    h.tick().await;
    // The configured router: SMS and email through the file outbox.
    let engine = duebell::engine::Engine::build(&h.config, h.store.clone(), None).unwrap();
    let now = h.now() + Days::minutes(10);
    let lease = ClaimLease {
        holder: "dead".into(),
        until: now + Days::seconds(1),
    };
    // A claim whose instance died before the outbox wrote anything.
    let (claimed, _) = h
        .store
        .claim_next(now, now - Days::days(7), &lease, &send)
        .await
        .unwrap()
        .unwrap();
    let later = now + Days::seconds(5);
    let (sent, replayed) = engine.dispatcher.reconcile(later).await.unwrap();
    assert_eq!((sent, replayed), (0, 1));
    let m = h
        .messages()
        .await
        .into_iter()
        .find(|m| m.id == claimed.message_id)
        .unwrap();
    assert_eq!(m.state, MessageState::Planned, "{m:?}");
    assert!(m.reason.unwrap().contains("planned again"));
    // It goes out once, through the normal claim.
    engine.dispatcher.drain(later).await.unwrap();
    let outbox = h.config.providers[0].dir.clone().unwrap();
    let lines = std::fs::read_to_string(outbox.join("sms.jsonl")).unwrap();
    let copies = lines
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["message_id"]
                == claimed.message_id
        })
        .count();
    assert_eq!(copies, 1, "{lines}");
}

/// A harness at 20:00 UTC on 2026-12-10 whose only cap is one contact a
/// day.
async fn one_contact_a_day() -> Harness {
    Harness::with("2026-12-10T20:00:00Z", |c| {
        c.caps.rules.retain(|r| r.name == "all_per_day");
        c.caps.rules[0].max = 1;
    })
    .await
}

/// Ann's loan imported and her reminder planned; ten minutes later, when
/// it is due.
async fn one_planned(h: &Harness) -> chrono::DateTime<chrono::Utc> {
    h.import(
        "book.csv",
        &book(&["L1,B1,Ann Lee,+12125550101,,en,UTC,2026-12-10,10.00,USD,active"]),
    )
    .await;
    h.tick().await;
    h.now() + Days::minutes(10)
}

/// One claim transaction takes many messages; a later message of a borrower
/// is decided with the contact an earlier one in the same batch just made,
/// so a cap of one contact a day holds inside a batch as it does across
/// batches and instances.
#[tokio::test]
async fn a_batched_claim_counts_the_contacts_made_earlier_in_the_same_batch() {
    let h = one_contact_a_day().await;
    h.import(
        "book.csv",
        &book(&[
            "L1,B1,Ann Lee,+12125550101,ann@example.com,en,UTC,2026-12-10,10.00,USD,active",
            "L2,B2,Bo Chan,+12125550102,bo@example.com,en,UTC,2026-12-10,20.00,USD,active",
            "L3,B3,Cy Diaz,+12125550103,,en,UTC,2026-12-10,30.00,USD,active",
        ]),
    )
    .await;
    h.tick().await;
    let now = h.now() + Days::minutes(10);
    let claims = h.engine.dispatcher.claim(now, 100).await.unwrap();
    // Two channels each for B1 and B2, a text for B3 (its email was
    // suppressed when planned, so it is not due).
    assert_eq!(claims.len(), 5, "{claims:#?}");
    let mut per_borrower: std::collections::BTreeMap<String, Vec<&Verdict>> = Default::default();
    for (view, verdict) in &claims {
        per_borrower
            .entry(view.borrower.external_id.clone())
            .or_default()
            .push(verdict);
    }
    for (borrower, verdicts) in &per_borrower {
        let sends = verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Send { .. }))
            .count();
        assert_eq!(sends, 1, "{borrower}: {verdicts:#?}");
        for v in verdicts {
            if let Verdict::Defer { reason, .. } = v {
                assert!(reason.as_str().contains("all_per_day"), "{reason:?}");
            }
        }
    }
    assert_eq!(per_borrower["B1"].len(), 2);
    // Nothing else is due: the deferred wait for tomorrow.
    assert!(h
        .engine
        .dispatcher
        .claim(now, 100)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(h.store.sent_since(now - Days::days(1)).await.unwrap(), 3);
}

/// A message claimed ahead and released unsent (the sending loop stopped
/// before its turn) is planned again as if never claimed: its contact is
/// un-logged, so the cap of one a day still lets it go, and its next claim
/// is the same first attempt.
#[tokio::test]
async fn a_claim_released_unsent_is_planned_again_with_its_contact_and_attempt_undone() {
    let h = one_contact_a_day().await;
    let now = one_planned(&h).await;
    let d = &h.engine.dispatcher;
    let mut claims = d.claim(now, 10).await.unwrap();
    assert_eq!(claims.len(), 1, "{claims:#?}");
    let (view, verdict) = claims.pop().unwrap();
    let Verdict::Send {
        attempt_id, loans, ..
    } = verdict
    else {
        panic!("{verdict:?}");
    };
    assert_eq!(attempt_id, "a1");
    let released = d.release(d.hold(view, attempt_id, loans));
    d.record_all(now, std::slice::from_ref(&released))
        .await
        .unwrap();
    let listed = h
        .store
        .messages(&duebell::store::MessageQuery {
            state: Some(MessageState::Planned),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert!(
        listed[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("stopped before its send began")),
        "{listed:#?}"
    );
    // Claimed again: not capped by the contact it never made, same attempt.
    let again = d.claim(now, 10).await.unwrap();
    assert_eq!(again.len(), 1, "{again:#?}");
    assert!(
        matches!(&again[0].1, Verdict::Send { attempt_id, .. } if attempt_id == "a1"),
        "{again:#?}"
    );
}

/// SQLite: the sending loop's transactions run on a write connection of
/// their own, off sqlx's thread. While another connection (a CLI import)
/// holds the write lock, a claim waits for it without holding up the
/// runtime it runs on, then claims; past the busy timeout it fails as
/// contention (the caller's cue to try again) and leaves no transaction
/// open behind it.
#[tokio::test(flavor = "current_thread")]
async fn a_claim_waits_for_another_writer_without_blocking_the_runtime() {
    use sqlx::Connection;
    if crate::BACKEND != crate::support::Backend::Sqlite {
        return;
    }
    let h = Harness::with("2026-12-10T20:00:00Z", |c| {
        c.store.busy_timeout = duebell::config::ConfigDuration(Duration::from_millis(600));
    })
    .await;
    let now = one_planned(&h).await;
    let url = crate::support::store_url(h.dir.path());
    let mut lock = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut lock)
        .await
        .unwrap();
    // Past the busy timeout: contention, nothing claimed.
    let err = h.engine.dispatcher.claim(now, 10).await.unwrap_err();
    assert!(err.is_contention(), "{err}");
    // Released while the claim waits: a timer on the same one-thread
    // runtime keeps ticking meanwhile, and the claim then goes through.
    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ticking = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let claim = h.engine.dispatcher.claim(now, 10);
    let release = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let during = ticks.load(std::sync::atomic::Ordering::Relaxed);
        sqlx::query("COMMIT").execute(&mut lock).await.unwrap();
        during
    };
    let (claimed, during) = tokio::join!(claim, release);
    ticking.abort();
    assert!(
        during >= 10,
        "the runtime stood still: {during} ticks in 300 ms"
    );
    let claimed = claimed.unwrap();
    assert_eq!(claimed.len(), 1, "{claimed:#?}");
    assert!(matches!(claimed[0].1, Verdict::Send { .. }), "{claimed:#?}");
    // The failed try left no transaction behind: others write freely.
    drop(lock);
    let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE; COMMIT")
        .execute(&mut other)
        .await
        .unwrap();
}

/// How the store's database plans `text` (written in SQLite's dialect), one
/// line per step. PostgreSQL is told not to scan whole tables, since tiny
/// ones are cheapest to scan: the question is whether an index serves.
async fn query_plan(url: &str, text: &str) -> String {
    use sqlx::Connection;
    match crate::BACKEND {
        crate::support::Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            let rows: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(&format!("EXPLAIN QUERY PLAN {text}"))
                    .fetch_all(&mut c)
                    .await
                    .unwrap();
            rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("\n")
        }
        crate::support::Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query("SET enable_seqscan = off")
                .execute(&mut c)
                .await
                .unwrap();
            let text = text
                .replace("CROSS JOIN", "JOIN")
                .replace("group_concat(", "string_agg(");
            let rows: Vec<(String,)> = sqlx::query_as(&format!("EXPLAIN {text}"))
                .fetch_all(&mut c)
                .await
                .unwrap();
            rows.into_iter().map(|r| r.0).collect::<Vec<_>>().join("\n")
        }
    }
}

/// A send that did not happen (a retry, a failure, a bounce, a message
/// given back) takes its contact back out of the contact log, by message.
/// The log keeps every contact ever made, so that delete must find the row
/// by an index: a scan of the whole log for each retry made a provider
/// outage cost the size of the log per message.
#[tokio::test]
async fn a_contact_is_taken_back_by_an_index_on_its_message_not_a_scan_of_the_log() {
    let h = planned("2026-12-10T20:00:00Z").await;
    let url = crate::support::store_url(h.dir.path());
    let plan = query_plan(&url, "DELETE FROM contact_log WHERE message_id = 1").await;
    assert!(
        plan.contains("contact_log_message") && !plan.contains("Seq Scan"),
        "{plan}"
    );
}

/// A steady tick's sweep reads the changes since the previous pass through
/// their own indexes (closed loans, opted-out contact points, holds), so it
/// costs what changed: before, it read every pending message of the book at
/// every tick (1.2 s of a 1.4 s tick over 1M loans with nothing due).
#[tokio::test]
async fn a_steady_sweep_reads_the_changes_by_their_indexes_not_every_pending_message() {
    use sqlx::Connection;
    let h = planned("2026-12-10T20:00:00Z").await;
    let url = crate::support::store_url(h.dir.path());
    // Holds are few: PostgreSQL may read the open ones by their partial
    // index instead; either way not every pending message.
    let wanted: [&[&str]; 3] = [
        &["loans_inactive_changed"],
        &["contact_points_opted_out"],
        &["holds_created", "holds_borrower"],
    ];
    if crate::BACKEND == crate::support::Backend::Postgres {
        // PostgreSQL plans by its statistics: many pending messages and
        // no change, as a steady tick finds the book.
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query(
            "INSERT INTO messages (dedupe_key, borrower_id, contact_point_id, channel, step, template, state,
                                   not_before, created_at, updated_at)
             SELECT 'bulk:' || g || ':' || m.id, m.borrower_id, m.contact_point_id, m.channel, m.step, m.template,
                    'planned', m.not_before, m.created_at, m.updated_at
               FROM messages m, generate_series(1, 20000) g",
        )
        .execute(&mut c)
        .await
        .unwrap();
        sqlx::query("ANALYZE").execute(&mut c).await.unwrap();
    }
    for (read, index) in duebell::store::changed_sweep_reads().iter().zip(wanted) {
        let plan = query_plan(&url, &read.replace('?', "0")).await;
        assert!(
            index.iter().any(|i| plan.contains(i)),
            "{index:?} not used:\n{plan}"
        );
        assert!(
            !plan.contains("SCAN m") && !plan.contains("Seq Scan"),
            "{plan}"
        );
    }
}
