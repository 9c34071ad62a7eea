//! The planner lease while its holder writes. Each fenced write (a planning
//! page, a re-plan) reads the lease row `FOR SHARE` and keeps that lock
//! until it commits, so a takeover cannot commit under it. Another
//! instance that only renews its bid for the role while the lease is live
//! must not queue behind those locks: its bid runs in its sending loop's
//! upkeep, and the loop claims nothing new until the bid returns.

use std::time::Duration;

use sqlx::Connection;

use crate::support::Harness;

#[tokio::test]
async fn a_bid_for_a_live_lease_does_not_wait_for_the_holders_writes() {
    let h = Harness::new("2026-12-10T01:00:00Z").await;
    let s = h.store.clone();
    let (now, ttl) = (h.now(), Duration::from_secs(15));
    let a = s
        .acquire_lease("planner", "a", now, ttl)
        .await
        .unwrap()
        .unwrap();
    // The holder's fenced write, open: the lease row locked FOR SHARE, as
    // `check_fence` locks it.
    let mut c = sqlx::PgConnection::connect(&h.config.store.url)
        .await
        .unwrap();
    let mut page = c.begin().await.unwrap();
    let token: i64 = sqlx::query_scalar(
        "SELECT token FROM leases WHERE name = 'planner' AND holder = 'a' FOR SHARE",
    )
    .fetch_one(&mut *page)
    .await
    .unwrap();
    assert_eq!(token, a.token);

    // Another instance bids while the lease is live: answered while the
    // write is still open (the time-out only ends a wait that would
    // otherwise last as long as the write).
    let later = now + chrono::Duration::seconds(5);
    let bid = tokio::time::timeout(
        Duration::from_secs(10),
        s.acquire_lease("planner", "b", later, ttl),
    )
    .await;
    assert!(
        matches!(bid, Ok(Ok(None))),
        "the bid waited for the holder's write or took the role: {bid:?}"
    );

    // Once the lease has run out, a bid takes the role, and that one waits
    // for the write in progress: the old holder's write commits first, and
    // its next one is fenced off.
    let expired = now + chrono::Duration::seconds(16);
    let takeover = tokio::spawn({
        let s = s.clone();
        async move { s.acquire_lease("planner", "b", expired, ttl).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !takeover.is_finished(),
        "the takeover did not wait for the write"
    );
    page.commit().await.unwrap();
    let b = takeover.await.unwrap().unwrap().expect("b takes the role");
    assert!(b.token > a.token, "{b:?} after {a:?}");
}
