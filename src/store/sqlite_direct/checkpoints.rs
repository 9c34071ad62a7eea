//! The WAL's checkpoints for the SQLite backend's write connection
//! (`super`), on a connection of their own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// The WAL's checkpoints, on a connection of their own. By SQLite's default
/// the commit that takes the log past 1,000 pages copies them all into the
/// database file, and syncs both files but at `OFF`, before it returns: on
/// the write connection, so the next transaction waited for it.
/// That was 10% of the write connection's time in the planner's first pass
/// over a large book (BENCHMARKS.md, point 21). The write connection now
/// never checkpoints (`wal_autocheckpoint = 0`); after its commits a
/// passive checkpoint runs here, on the blocking pool. A passive checkpoint
/// never waits for a lock and never makes a writer or reader wait: it
/// copies what no reader still needs, and the next write transaction after
/// a complete one starts the log from its beginning.
/// (Commits on the pool's connections still checkpoint as SQLite does.)
///
/// A checkpoint starts at most once each `GAP`: after a commit one is due,
/// and further commits before it starts are copied by it; a commit while
/// one runs makes another due after it. So every commit is copied by a
/// checkpoint that starts after it, within `GAP` (and the running one's
/// time).
pub(super) struct Checkpoints {
    conn: std::sync::Mutex<Connection>,
    state: std::sync::Mutex<Phase>,
    /// How many have started.
    started: AtomicUsize,
}

/// Where the checkpoints are, and when the last one started.
struct Phase {
    now: Step,
    last: Instant,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    Idle,
    /// One will start (at `last` + `GAP` at the earliest): it copies every
    /// commit before it.
    Due,
    /// One is running; `again`: a commit came after it started, so
    /// another is due when it ends.
    Running {
        again: bool,
    },
}

impl Checkpoints {
    /// The least time from one checkpoint's start to the next's. Small
    /// transactions in quick succession (the simulation's, a step of
    /// virtual time each) then share one, instead of each commit's pages
    /// being copied into the database by a checkpoint of its own; the log
    /// holds at most what is written in `GAP` (and a checkpoint's time).
    pub(super) const GAP: Duration = Duration::from_millis(10);

    pub(super) fn new(conn: Connection) -> Checkpoints {
        let last = Instant::now()
            .checked_sub(Self::GAP)
            .unwrap_or_else(Instant::now);
        Checkpoints {
            conn: std::sync::Mutex::new(conn),
            state: std::sync::Mutex::new(Phase {
                now: Step::Idle,
                last,
            }),
            started: AtomicUsize::new(0),
        }
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After a commit: a passive checkpoint that starts after it, on the
    /// blocking pool, `GAP` after the last one started at the earliest;
    /// none more if one is due already (it copies this commit too).
    pub(super) fn start(self: &Arc<Self>) {
        let mut phase = self.phase();
        match phase.now {
            Step::Due | Step::Running { again: true } => {}
            Step::Running { again: false } => phase.now = Step::Running { again: true },
            Step::Idle => self.schedule(phase),
        }
    }

    /// Makes one due and starts it, `GAP` after the last one started at the
    /// earliest.
    fn schedule(self: &Arc<Self>, mut phase: std::sync::MutexGuard<'_, Phase>) {
        phase.now = Step::Due;
        let wait = Self::GAP.saturating_sub(phase.last.elapsed());
        drop(phase);
        let this = Arc::clone(self);
        let run = move || this.run();
        match wait.is_zero() {
            true => drop(tokio::task::spawn_blocking(run)),
            false => drop(tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                drop(tokio::task::spawn_blocking(run));
            })),
        }
    }

    /// The checkpoint, on the blocking pool; then the next is due if a
    /// commit came meanwhile.
    fn run(self: &Arc<Self>) {
        {
            let mut phase = self.phase();
            phase.now = Step::Running { again: false };
            phase.last = Instant::now();
        }
        self.started.fetch_add(1, Ordering::Relaxed);
        let done = match self.conn.lock() {
            Ok(conn) => conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                .map_err(|e| e.to_string()),
            Err(_) => Err("a checkpoint panicked".to_owned()),
        };
        // Not an error for the write that started it: that is committed,
        // and the next commit tries again.
        if let Err(e) = done {
            tracing::warn!(error = %e, "could not checkpoint the SQLite log");
        }
        let mut phase = self.phase();
        match phase.now {
            Step::Running { again: true } => self.schedule(phase),
            _ => phase.now = Step::Idle,
        }
    }

    /// How many have started.
    #[cfg(test)]
    pub(super) fn started(&self) -> usize {
        self.started.load(Ordering::Relaxed)
    }

    /// When the last one started.
    #[cfg(test)]
    pub(super) fn last_started(&self) -> Instant {
        self.phase().last
    }

    /// Waits until none is running or due.
    #[cfg(test)]
    pub(super) async fn settled(&self) {
        while self.phase().now != Step::Idle {
            tokio::task::yield_now().await;
        }
    }
}
