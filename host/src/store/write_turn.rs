//! Turns at keeper.db's write lock among the writers of one process.
//!
//! SQLite has no queue for its write lock: a writer that finds it taken
//! sleeps and tries again (its busy handler: 1, 2, 5 … 100 ms apart). A
//! writer that takes the lock again microseconds after releasing it, as the
//! intake committer does under sustained load (`store/intake.rs`), can keep
//! another out for most of its busy timeout. So each group of reports and
//! each of the worker's claims and completions first takes a turn here: a
//! FIFO lock, under which every writer waits at most for the writes queued
//! before it. Other processes (a second keeper, the old bot) still meet
//! SQLite's busy timeout as before.
//!
//! A long write can ask whether anyone is waiting ([`WriteTurn::wanted`])
//! and then write in steps, a turn each: the worker's claims and
//! completions of hundreds of items do (100 items a step, see
//! `queue/sqlite.rs`), so that intake waits for one step of theirs, not
//! for all of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Mutex, MutexGuard};

/// The line for keeper.db's write lock in this process; clones share it.
#[derive(Clone, Debug, Default)]
pub struct WriteTurn {
    line: Arc<Mutex<()>>,
    /// Writers waiting in the line now.
    waiting: Arc<AtomicUsize>,
}

impl WriteTurn {
    /// Waits for this writer's turn; the turn ends when the guard drops.
    pub async fn take(&self) -> MutexGuard<'_, ()> {
        let _counted = InLine::join(&self.waiting);
        self.line.lock().await
    }

    /// Whether another writer is waiting for its turn.
    pub fn wanted(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > 0
    }
}

/// Counts a writer as waiting until it has its turn or gives up waiting
/// (its future dropped).
struct InLine<'a>(&'a AtomicUsize);

impl<'a> InLine<'a> {
    fn join(waiting: &'a AtomicUsize) -> InLine<'a> {
        waiting.fetch_add(1, Ordering::AcqRel);
        InLine(waiting)
    }
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::WriteTurn;

    #[tokio::test]
    async fn a_turn_is_wanted_while_another_writer_waits_and_not_after() {
        let turn = WriteTurn::default();
        let held = turn.take().await;
        assert!(!turn.wanted(), "the holder itself does not count");
        let waiter = {
            let turn = turn.clone();
            tokio::spawn(async move {
                let _mine = turn.take().await;
            })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !turn.wanted() {
            assert!(tokio::time::Instant::now() < deadline, "the waiter never showed");
            tokio::task::yield_now().await;
        }
        drop(held);
        tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .expect("the waiter got its turn")
            .expect("waiter task");
        assert!(!turn.wanted());

        // A writer that gives up waiting leaves the line.
        let held = turn.take().await;
        let gave_up = tokio::time::timeout(Duration::from_millis(10), turn.take()).await;
        assert!(gave_up.is_err(), "the turn was held");
        assert!(!turn.wanted(), "nobody waits any more");
        drop(held);
    }
}
