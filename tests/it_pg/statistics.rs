//! What PostgreSQL's bulk writes cost. It plans by its statistics, and
//! autovacuum refreshes them a minute or more after a bulk change: an
//! import of thousands of loans, then a planning pass that records
//! thousands of messages, must refresh them at once, or the next claims'
//! joins read every loan. And the rows written for each message fire no
//! foreign-key triggers (migration 0009).

use sqlx::Connection;

use crate::support::{Harness, LOAN_HEADER};

/// `reltuples` of `table` in the harness's schema: -1 until analysed.
async fn estimated_rows(h: &Harness, table: &str) -> f32 {
    let mut c = sqlx::PgConnection::connect(&h.config.store.url)
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT c.reltuples FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = current_schema() AND c.relname = $1",
    )
    .bind(table)
    .fetch_one(&mut c)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_bulk_import_and_a_bulk_plan_refresh_the_planners_statistics() {
    let h = Harness::new("2026-12-10T01:00:00Z").await;
    assert_eq!(estimated_rows(&h, "loans").await, -1.0, "a new table");
    let mut book = format!("{LOAN_HEADER}\n");
    for i in 0..1200 {
        book.push_str(&format!(
            "L{i},B{i},Kim Park,+1212555{i:04},,en,America/New_York,2026-12-10,10.00,USD\n"
        ));
    }
    let report = h.import("book.csv", &book).await;
    assert_eq!(report.counts.imported, 1200, "{:?}", report.errors);
    assert_eq!(estimated_rows(&h, "loans").await, 1200.0);
    assert_eq!(estimated_rows(&h, "borrowers").await, 1200.0);
    assert_eq!(
        estimated_rows(&h, "messages").await,
        -1.0,
        "nothing planned yet"
    );
    let tick = h.tick().await;
    assert!(tick.recorded >= 1200, "{tick:?}");
    assert_eq!(estimated_rows(&h, "messages").await, tick.recorded as f32);
    assert_eq!(
        estimated_rows(&h, "message_loans").await,
        tick.recorded as f32
    );
}

#[tokio::test]
async fn the_rows_written_for_each_message_fire_no_foreign_key_checks() {
    let h = Harness::new("2026-12-10T01:00:00Z").await;
    let mut c = sqlx::PgConnection::connect(&h.config.store.url)
        .await
        .unwrap();
    // The foreign keys declared on each table of the harness's schema.
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::TEXT, f.relname::TEXT FROM pg_constraint k
           JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class f ON f.oid = k.confrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE k.contype = 'f' AND n.nspname = current_schema()",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    let per_message = ["messages", "message_loans", "message_events", "contact_log"];
    let checked: Vec<_> = rows
        .iter()
        .filter(|(table, _)| per_message.contains(&table.as_str()))
        .collect();
    assert!(checked.is_empty(), "{checked:?}");
    // The book's own references stay checked.
    for (table, parent) in [("loans", "borrowers"), ("contact_points", "borrowers")] {
        assert!(
            rows.iter().any(|(t, p)| t == table && p == parent),
            "{table} -> {parent}: {rows:?}"
        );
    }
}
