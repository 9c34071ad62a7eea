//! Planning passes: a tick over the book (whole, or only what is due) in
//! pages, one borrower re-planned after an API change, and the preview of
//! `duebell plan`.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{PlanLine, Planner, PAGE};
use crate::compliance::caps;
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
    // Pages are disjoint sets of borrowers, so each page's decisions are
    // written while the next page is read and decided: by writer tasks (on
    // the runtime's other threads), as many as the store has write lanes,
    // fed through a channel. On PostgreSQL each writer's transaction is on
    // a connection (and server process) of its own, so the server's inserts
    // overlap each other and the planner's reading and deciding; on SQLite
    // there is one lane, the write connection, and pages are read on the
    // read connection meanwhile. A writer takes every page waiting (up to
    // `MERGED_PAGES`) as one transaction: the slower the writes, the larger
    // and fewer they are, so a commit's fixed cost (the WAL frames of each
    // index's last pages, written again at every commit) is paid less. A
    // writer starts its next write as soon as one ends, not when the
    // reading loop next looks.
    let (pages, waiting) = tokio::sync::mpsc::channel(MERGED_PAGES);
    let writers = Writers {
        waiting: Arc::new(tokio::sync::Mutex::new(waiting)),
        tally: Arc::new(tokio::sync::Mutex::new(Tally {
            recorded: 0,
            refresh_at: crate::store::BULK_ROWS,
        })),
    };
    let tasks: Vec<_> = (0..store.write_lanes().max(1))
        .map(|_| tokio::spawn(writers.clone().run(Arc::clone(shared), now, fence.cloned())))
        .collect();
    let read = async {
        loop {
            let page = match pass {
                Pass::Full => store.planning_batch(after, PAGE, since).await?,
                Pass::Due { .. } => {
                    let (page, last) = store.planning_due(now, cursor, PAGE, since).await?;
                    let Some(last) = last else { break };
                    cursor = last;
                    page
                }
            };
            let Some(last) = page.last() else {
                match pass {
                    Pass::Full => break,
                    Pass::Due { .. } => continue,
                }
            };
            after = last.pk;
            report.borrowers += page.len() as u64;
            // A closed channel: a writer failed, and says why below.
            if pages.send(decide_page(planner, now, &page)).await.is_err() {
                break;
            }
        }
        Ok::<_, StoreError>(())
    };
    let read = read.await;
    drop(pages);
    let mut failed = None;
    for task in tasks {
        if let Err(e) = joined(task.await) {
            failed.get_or_insert(e);
        }
    }
    read?;
    if let Some(e) = failed {
        return Err(e);
    }
    report.recorded = writers.tally.lock().await.recorded;
    report.next_change = store.next_look_at().await?;
    Ok(report)
}

/// The most pages of decisions a writer takes as one transaction (a page
/// of 500 borrowers is a few hundred messages, so a write stays a few
/// thousand rows), and the most that wait for a writer before reading
/// waits.
const MERGED_PAGES: usize = 8;

/// What a pass's writer tasks share: the decided pages waiting, and the
/// tally of what they recorded.
#[derive(Clone)]
struct Writers {
    waiting: Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<PageDecisions>>>,
    tally: Arc<tokio::sync::Mutex<Tally>>,
}

impl Writers {
    /// Writes what waits, merged, until the reading ends; on a failure,
    /// closes the channel (the reading stops) and returns it.
    async fn run(
        self,
        store: Arc<dyn Store>,
        now: DateTime<Utc>,
        fence: Option<crate::store::Fence>,
    ) -> Result<(), StoreError> {
        loop {
            let (messages, looks) = {
                let mut waiting = self.waiting.lock().await;
                let Some(mut merged) = waiting.recv().await else {
                    return Ok(());
                };
                for _ in 1..MERGED_PAGES {
                    let Ok((messages, looks)) = waiting.try_recv() else {
                        break;
                    };
                    merged.0.extend(messages);
                    merged.1.extend(looks);
                }
                merged
            };
            match store
                .record_plan(now, &messages, &looks, fence.as_ref())
                .await
            {
                Ok(recorded) => self.tally.lock().await.add(store.as_ref(), recorded).await,
                Err(e) => {
                    self.waiting.lock().await.close();
                    return Err(e);
                }
            }
        }
    }
}

/// A writer task, ended: its result, or its panic carried on (as if it
/// had run in place); cancelled only when the runtime shuts down.
fn joined(ended: Result<Result<(), StoreError>, tokio::task::JoinError>) -> Result<(), StoreError> {
    match ended {
        Ok(done) => done,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(StoreError::Unsupported(format!(
            "decisions were not written: {e}"
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
