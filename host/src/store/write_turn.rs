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

use std::sync::Arc;

use tokio::sync::{Mutex, MutexGuard};

/// The line for keeper.db's write lock in this process; clones share it.
#[derive(Clone, Debug, Default)]
pub struct WriteTurn(Arc<Mutex<()>>);

impl WriteTurn {
    /// Waits for this writer's turn; the turn ends when the guard drops.
    pub async fn take(&self) -> MutexGuard<'_, ()> {
        self.0.lock().await
    }
}
