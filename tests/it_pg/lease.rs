//! The planner lease while its holder writes. Each fenced write (a planning
//! page, a re-plan) locks the lease row from its fence check until it
//! commits, so a takeover cannot commit under it. Neither another
//! instance's bid for a live lease nor the holder's own renewal may queue
//! behind that lock: a bid runs in its sending loop's upkeep, which claims
//! nothing new until it returns, and a long pass renews every third of the
//! lease while its pages are written (PostgreSQL lets new lockers pass a
//! waiting update, so with page writes overlapping, a renewal that waited
//! could wait out the whole pass and let the lease lapse).

use std::time::Duration;

use sqlx::{Connection, Row};

use crate::support::{Harness, LOAN_HEADER};

#[tokio::test]
async fn neither_a_bid_nor_the_holders_renewal_waits_for_a_fenced_write() {
    let h = Harness::new("2026-12-10T01:00:00Z").await;
    let book = format!("{LOAN_HEADER}\nL1,B1,Kim Park,+12125550100,,en,UTC,2026-12-20,10.00,USD\n");
    assert_eq!(h.import("book.csv", &book).await.counts.imported, 1);
    let s = h.store.clone();
    let (now, ttl) = (h.now(), Duration::from_secs(15));
    let a = s
        .acquire_lease("planner", "a", now, ttl)
        .await
        .unwrap()
        .unwrap();

    // A fenced write held open by the store itself: a planning write whose
    // next-look update waits for a borrower row this test has locked. It
    // has checked its fence, so it holds the lease row's lock.
    let url = h.config.store.url.clone();
    let mut blocker = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut held = blocker.begin().await.unwrap();
    let row = sqlx::query("SELECT id, txid_current()::text FROM borrowers FOR UPDATE")
        .fetch_one(&mut *held)
        .await
        .unwrap();
    let (borrower, xid): (i64, String) = (row.get(0), row.get(1));
    let write = tokio::spawn({
        let (s, a) = (s.clone(), a.clone());
        let look = now + chrono::Duration::days(1);
        async move {
            s.record_plan(now, &[], &[(borrower, Some(look))], Some(&a))
                .await
        }
    });
    let mut watch = sqlx::PgConnection::connect(&url).await.unwrap();
    let waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid'
                    AND transactionid::text = $1 AND NOT granted";
    for _ in 0..500 {
        let n: i64 = sqlx::query_scalar(waiting)
            .bind(&xid)
            .fetch_one(&mut watch)
            .await
            .unwrap();
        if n > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!write.is_finished(), "the planning write did not wait");

    // Another instance bids while the lease is live: answered while the
    // write is open (the time-out only ends a wait that would otherwise
    // last as long as the write).
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
    // The holder renews: at once, with the same token.
    let renewed = tokio::time::timeout(
        Duration::from_secs(10),
        s.acquire_lease("planner", "a", later, ttl),
    )
    .await;
    assert!(
        matches!(&renewed, Ok(Ok(Some(f))) if f.token == a.token),
        "the renewal waited for the holder's own write or changed the token: {renewed:?}"
    );

    // Once the renewed lease has run out, a bid takes the role, and that one
    // waits for the write in progress: the old holder's write commits
    // first, and its next one is fenced off.
    let expired = later + chrono::Duration::seconds(16);
    let takeover = tokio::spawn({
        let s = s.clone();
        async move { s.acquire_lease("planner", "b", expired, ttl).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !takeover.is_finished(),
        "the takeover did not wait for the write"
    );
    held.commit().await.unwrap();
    write
        .await
        .unwrap()
        .expect("the write fenced by a live token lands");
    let b = takeover.await.unwrap().unwrap().expect("b takes the role");
    assert!(b.token > a.token, "{b:?} after {a:?}");
    let stale = s
        .record_plan(expired, &[], &[(borrower, None)], Some(&a))
        .await;
    assert!(
        matches!(stale, Err(duebell::store::StoreError::Fenced(_))),
        "{stale:?}"
    );
}
