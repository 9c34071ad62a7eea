//! Planning passes: a tick over the book (whole, or only what is due) in
//! pages, one borrower re-planned after an API change, and the preview of
//! `duebell plan`.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{PlanLine, Planner, PAGE};
use crate::compliance::caps;
use crate::inflight::{first_ended, InFlight};
use crate::store::{BulkChange, NewMessage, PlanBorrower, Store, StoreError};

/// What a tick did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TickReport {
    pub borrowers: u64,
    pub recorded: u64,
    pub cancelled: u64,
    /// The earliest instant a decision can change without new input: the
    /// earliest next look in the book (the ladder moves by local days).
    /// Imports and events trigger a re-plan of their own.
    pub next_change: Option<DateTime<Utc>>,
}

/// Which borrowers a planning pass reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Every borrower with an active loan: at start, after an import,
    /// a policy or config change, a requested pass, a new planner.
    Full,
    /// Only borrowers whose next look has come (a steady cron tick): the
    /// cost follows what is due, not what is stored. `previous` is the
    /// instant the previous pass began: the sweep that cancels what can no
    /// longer go reads only the changes stamped from then (less
    /// `SWEEP_OVERLAP`), not every pending message.
    Due { previous: DateTime<Utc> },
}

/// How far before the previous pass a steady tick's sweep still reads
/// changes: a change is stamped by the clock of the instance that made it,
/// and an import's rows with the instant it began, committed up to its
/// length later. A change this sweep misses is still refused when its
/// message is claimed (the gate runs again), and every full pass (after an
/// import by the daemon, an API change, a reload) sweeps the whole book.
pub const SWEEP_OVERLAP: chrono::Duration = chrono::Duration::hours(1);

impl Pass {
    /// The sweep's bound: none for a full pass (every pending message).
    fn changed_since(self) -> Option<DateTime<Utc>> {
        match self {
            Pass::Full => None,
            Pass::Due { previous } => Some(previous - SWEEP_OVERLAP),
        }
    }
}

/// One planning pass, in pages: the whole book or only what is due (see
/// `Pass`). With a `fence` (the planner lease of a daemon sharing the
/// store), every page is written only while the lease is still this
/// planner's. Each borrower read gets its next look written with its
/// page's decisions, when it changed.
pub async fn tick(
    shared: &Arc<dyn Store>,
    planner: &Planner<'_>,
    now: DateTime<Utc>,
    fence: Option<&crate::store::Fence>,
    pass: Pass,
) -> Result<TickReport, StoreError> {
    let store = shared.as_ref();
    let mut report = TickReport {
        cancelled: store
            .cancel_ineligible(now, pass.changed_since(), fence)
            .await?,
        ..Default::default()
    };
    let since = now - caps::lookback(planner.gate.all_caps());
    let (mut after, mut cursor) = (0, (i64::MIN, 0));
    let mut tally = Tally {
        recorded: 0,
        refresh_at: crate::store::BULK_ROWS,
    };
    // Pages are disjoint sets of borrowers, so each page's decisions are
    // written while the next page is read and decided: each write is a
    // task of its own (so it runs on another of the runtime's threads), as
    // many at once as the store has write lanes. On PostgreSQL each write
    // is a transaction on a connection (and server process) of its own, so
    // the server's inserts overlap each other and the planner's reading and
    // deciding; on SQLite there is one lane, the write connection, and
    // pages are read on the read connection meanwhile. Pages decided while
    // every lane is busy wait merged, up to `MERGED_PAGES`, and go as one
    // transaction when a lane frees: the slower the writes, the larger
    // (and fewer) they are, so a commit's fixed cost (the WAL frames of
    // each index's last pages, written again at every commit) is paid less.
    let lanes = store.write_lanes().max(1);
    let mut writes: Vec<PageWrite<'_>> = Vec::new();
    let mut waiting = Waiting::default();
    let mut reading = true;
    loop {
        if writes.len() < lanes {
            writes.extend(waiting.start(shared, now, fence));
        }
        if !reading && writes.is_empty() {
            break;
        }
        if !reading || waiting.pages >= MERGED_PAGES {
            let recorded = std::future::poll_fn(|cx| first_ended(&mut writes, cx)).await?;
            tally.add(store, recorded).await;
            continue;
        }
        let mut next = std::pin::pin!(async {
            loop {
                let page = match pass {
                    Pass::Full => store.planning_batch(after, PAGE, since).await?,
                    Pass::Due { .. } => {
                        let (page, last) = store.planning_due(now, cursor, PAGE, since).await?;
                        let Some(last) = last else {
                            return Ok(None);
                        };
                        cursor = last;
                        page
                    }
                };
                let Some(last) = page.last() else {
                    match pass {
                        Pass::Full => return Ok(None),
                        Pass::Due { .. } => continue,
                    }
                };
                after = last.pk;
                return Ok::<_, StoreError>(Some((page.len(), decide_page(planner, now, &page))));
            }
        });
        // The next page, while the writes in progress go on (and a lane
        // that frees takes what waits).
        let next = loop {
            tokio::select! {
                next = &mut next => break next?,
                recorded = std::future::poll_fn(|cx| first_ended(&mut writes, cx)), if !writes.is_empty() => {
                    tally.add(store, recorded?).await;
                    writes.extend(waiting.start(shared, now, fence));
                }
            }
        };
        match next {
            None => reading = false,
            Some((borrowers, decided)) => {
                report.borrowers += borrowers as u64;
                waiting.add(decided);
            }
        }
    }
    report.recorded = tally.recorded;
    report.next_change = store.next_look_at().await?;
    Ok(report)
}

/// Decided pages (one, or several merged) being written: how many
/// messages they recorded.
type PageWrite<'a> = InFlight<'a, Result<u64, StoreError>>;

/// The most pages of decisions merged into one write while every write
/// lane is busy; reading waits beyond it (a page of 500 borrowers is a few
/// hundred messages, so a merged write stays a few thousand rows).
const MERGED_PAGES: usize = 8;

/// Decided pages waiting for a write lane, merged.
#[derive(Default)]
struct Waiting {
    pages: usize,
    decided: PageDecisions,
}

impl Waiting {
    fn add(&mut self, (messages, looks): PageDecisions) {
        self.pages += 1;
        self.decided.0.extend(messages);
        self.decided.1.extend(looks);
    }

    /// What waits, as a write started on a task of its own (none if
    /// nothing waits).
    fn start<'a>(
        &mut self,
        shared: &Arc<dyn Store>,
        now: DateTime<Utc>,
        fence: Option<&crate::store::Fence>,
    ) -> Option<PageWrite<'a>> {
        if self.pages == 0 {
            return None;
        }
        let (messages, looks) = std::mem::take(&mut self.decided);
        self.pages = 0;
        let (store, fence) = (Arc::clone(shared), fence.cloned());
        let write = tokio::spawn(async move {
            store
                .record_plan(now, &messages, &looks, fence.as_ref())
                .await
        });
        Some(Box::pin(async move { joined(write.await) }))
    }
}

/// A page write's task, ended: its result, or its panic carried on (as if
/// it had run in place); cancelled only when the runtime shuts down.
fn joined(
    ended: Result<Result<u64, StoreError>, tokio::task::JoinError>,
) -> Result<u64, StoreError> {
    match ended {
        Ok(recorded) => recorded,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(StoreError::Unsupported(format!(
            "a page of decisions was not written: {e}"
        ))),
    }
}

/// What a pass's page writes recorded. A pass writing far more than the
/// store held (the first after a large import) would read later pages by
/// plans made for nearly empty tables (PostgreSQL keeps a generic plan: a
/// full scan once the table grew), so the statistics the store's reads are
/// planned by are refreshed, and reads re-planned, as the writes double.
struct Tally {
    recorded: u64,
    refresh_at: u64,
}

impl Tally {
    /// Counts a page write's messages; refreshes the statistics when the
    /// pass has written as much again (a failure is logged: the pass goes
    /// on with the old plans).
    async fn add(&mut self, store: &dyn Store, recorded: u64) {
        self.recorded += recorded;
        if self.recorded < self.refresh_at {
            return;
        }
        self.refresh_at = 2 * self.recorded;
        if let Err(e) = store.refresh_statistics(BulkChange::Plan).await {
            tracing::warn!(error = %e, "could not refresh the store's statistics while planning");
        }
    }
}

/// A page's decisions, and the next looks that changed.
type PageDecisions = (Vec<NewMessage>, Vec<(i64, Option<DateTime<Utc>>)>);

fn decide_page(planner: &Planner<'_>, now: DateTime<Utc>, page: &[PlanBorrower]) -> PageDecisions {
    let mut messages = Vec::new();
    let mut looks = Vec::new();
    for b in page {
        messages.extend(planner.messages(now, b));
        let look = planner.next_look(now, b);
        if look != b.next_look {
            looks.push((b.pk, look));
        }
    }
    (messages, looks)
}

/// Re-plans one borrower (external id) right after a change through the
/// API touched only them: what can no longer go is cancelled, what is now
/// due is recorded, and nothing else in the book is read. Recorded without
/// the planner lease: "planned at most once" is the store's unique key, so
/// a planner deciding the same step at the same moment inserts nothing
/// twice (on PostgreSQL one of the two writers fails and the planner's
/// next tick has it).
pub async fn replan_borrower(
    store: &dyn Store,
    planner: &Planner<'_>,
    now: DateTime<Utc>,
    borrower: &str,
) -> Result<TickReport, StoreError> {
    let mut report = TickReport {
        cancelled: store.cancel_ineligible_of(now, borrower).await?,
        ..Default::default()
    };
    let since = now - caps::lookback(planner.gate.all_caps());
    if let Some(b) = store.plan_borrower(borrower, since).await? {
        let (messages, looks) = decide_page(planner, now, std::slice::from_ref(&b));
        report.borrowers = 1;
        report.recorded = store.record_plan(now, &messages, &looks, None).await?;
    }
    Ok(report)
}

/// Every decision at `now` without recording anything (`duebell plan`).
pub async fn preview(
    store: &dyn Store,
    planner: &Planner<'_>,
    now: DateTime<Utc>,
    borrower: Option<&str>,
) -> Result<Vec<PlanLine>, StoreError> {
    let since = now - caps::lookback(planner.gate.all_caps());
    let mut lines = Vec::new();
    if let Some(id) = borrower {
        if let Some(b) = store.plan_borrower(id, since).await? {
            lines.extend(planner.decide(now, &b).1);
        }
        return Ok(lines);
    }
    let mut after = 0;
    loop {
        let page = store.planning_batch(after, PAGE, since).await?;
        let Some(last) = page.last() else { break };
        after = last.pk;
        for b in &page {
            lines.extend(planner.decide(now, b).1);
        }
    }
    Ok(lines)
}
