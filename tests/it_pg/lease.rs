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

use duebell::store::{ClaimLease, Verdict};

use crate::support::{Harness, LOAN_HEADER};

/// Waits (up to ten seconds) until some transaction waits for the one
/// whose id is `xid`.
async fn wait_for_a_waiter(url: &str, xid: &str) {
    let mut watch = sqlx::PgConnection::connect(url).await.unwrap();
    let waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid'
                    AND transactionid::text = $1 AND NOT granted";
    for _ in 0..500 {
        let n: i64 = sqlx::query_scalar(waiting)
            .bind(xid)
            .fetch_one(&mut watch)
            .await
            .unwrap();
        if n > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

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
    wait_for_a_waiter(&url, &xid).await;
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

/// An instance renews the claim leases of all its sends in flight in one
/// statement, while its transactions that record outcomes lock some of the
/// same rows, in id order. The renewal must take its locks in that order
/// too: in the order the table happens to hold its rows, it deadlocked
/// with them (PostgreSQL ends one after a second, and the outcomes are
/// recorded again).
#[tokio::test]
async fn renewing_the_claim_leases_takes_its_locks_in_id_order() {
    let h = Harness::new("2026-12-10T20:00:00Z").await;
    let book = format!(
        "{LOAN_HEADER}\nL1,B1,Ann Lee,+12125550101,,en,UTC,2026-12-10,10.00,USD\nL2,B2,Bo Chan,+12125550102,,en,UTC,2026-12-10,20.00,USD\n"
    );
    assert_eq!(h.import("book.csv", &book).await.counts.imported, 2);
    h.tick().await;
    let s = h.store.clone();
    let now = h.now() + chrono::Duration::minutes(10);
    let lease = ClaimLease {
        holder: "x".into(),
        until: now + chrono::Duration::seconds(30),
    };
    let send = |_: &duebell::store::ClaimView| Verdict::Send {
        attempt_id: "a1".into(),
        loans: vec![],
        window: "test".into(),
    };
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (view, _) = s
            .claim_next(now, now - chrono::Duration::days(7), &lease, &send)
            .await
            .unwrap()
            .expect("a message due");
        ids.push(view.message_id);
    }
    ids.sort();
    let (lo, hi) = (ids[0], ids[1]);
    // The lower id is rewritten, so its row now comes after the higher one
    // in the table, and it is due later.
    let url = h.config.store.url.clone();
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(
        "UPDATE messages SET not_before = (SELECT not_before FROM messages WHERE id = $2) + 1
          WHERE id = $1",
    )
    .bind(lo)
    .bind(hi)
    .execute(&mut c)
    .await
    .unwrap();

    // Recording outcomes: the lower id locked, then the higher.
    let mut tx = c.begin().await.unwrap();
    let xid: String = sqlx::query_scalar("SELECT txid_current()::text")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let lock = "SELECT id FROM messages WHERE id = $1 FOR UPDATE";
    sqlx::query(lock).bind(lo).execute(&mut *tx).await.unwrap();
    let renewal = tokio::spawn({
        let s = s.clone();
        async move {
            s.renew_claims("x", now + chrono::Duration::seconds(60))
                .await
        }
    });
    wait_for_a_waiter(&url, &xid).await;
    let second = sqlx::query(lock).bind(hi).execute(&mut *tx).await;
    assert!(second.is_ok(), "recording the outcomes: {second:?}");
    tx.commit().await.unwrap();
    assert_eq!(renewal.await.unwrap().unwrap(), 2, "both claims renewed");
}
