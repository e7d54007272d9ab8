//! The sync worker: claims due items, maps them with the active plugin and
//! delivers them to VH-Database, one batch at a time.
//!
//! Every stage works on the whole batch: one claim, one read of keeper.db,
//! one VH-Database transaction, one queue update. A batch runs wholly on the
//! plugin that was active when it started; while a canary runs, the batch's
//! canary share is split off and delivered on the canary in its own
//! VH-Database transaction (plugins/canary.rs). On shutdown the batch in
//! hand is finished; its lease covers a worker killed outright.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{Notify, watch};

use crate::delivery::{self, Input, Outcome};
use crate::mapper::{Plugin, PluginSlot};
use crate::plugins::canary::{Canary, Run, Tally};
use crate::queue::{Claim, ClaimedItem, Delivered, ErrorClass, Failed, Queue};
use crate::sink::Sink;
use crate::sqlite_error::{self, Fault};
use crate::store::{Store, StoreError};

/// The size of each claim in a pass. A short queue is claimed
/// `SYNC_BATCH_SIZE` at a time: small VH-Database transactions, so Control
/// Room waits little for its write lock. With a backlog, every claim that
/// comes back full doubles the next, up to `SYNC_BATCH_MAX`: each batch has
/// a fixed cost (claim, keeper.db read, VH transaction, queue update), and
/// at 10 items a batch it is most of the work, so a backlog after an outage
/// drains near the rate of large batches with the defaults. Each pass
/// starts small again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSizes {
    first: u32,
    ceiling: u32,
}

impl BatchSizes {
    /// `first` is the size a pass starts with; `max` the most it grows to
    /// (a `max` below `first` means every batch is `first`).
    pub fn new(first: u32, max: u32) -> BatchSizes {
        let first = first.max(1);
        BatchSizes {
            first,
            ceiling: max.max(first),
        }
    }

    pub fn first(&self) -> u32 {
        self.first
    }

    /// The claim after one of `size` that brought `claimed` items.
    pub fn next(&self, size: u32, claimed: usize) -> u32 {
        if u32::try_from(claimed).is_ok_and(|claimed| claimed >= size) {
            size.saturating_mul(2).min(self.ceiling)
        } else {
            self.first
        }
    }
}

/// What the API reports about the worker; shared with it.
#[derive(Debug)]
pub struct WorkerStatus {
    pub started_at: OffsetDateTime,
    pub running: AtomicBool,
    pub last_sync_time: Mutex<Option<OffsetDateTime>>,
    /// How the last passes went, for `/health` and `/metrics`: a worker that
    /// runs but gets nothing through must not look healthy.
    passes: Mutex<PassRecord>,
}

/// What the worker met on its last passes (one pass: everything due, batch
/// after batch). A pass with nothing to do changes nothing here.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassRecord {
    /// Passes in a row that failed: keeper.db failed, or a batch could not
    /// be delivered at all. 0 once a pass gets its batches through.
    pub failed_passes: u64,
    /// Why the last failed pass failed.
    pub last_error: Option<String>,
    /// Since when VH-Database cannot be used (missing, locked, unreadable),
    /// with the latest reason; cleared by the next batch it takes.
    pub vh_unreachable: Option<(OffsetDateTime, String)>,
}

impl Default for WorkerStatus {
    fn default() -> Self {
        WorkerStatus {
            started_at: OffsetDateTime::now_utc(),
            running: AtomicBool::new(false),
            last_sync_time: Mutex::new(None),
            passes: Mutex::new(PassRecord::default()),
        }
    }
}

impl WorkerStatus {
    /// A copy of the pass record.
    pub fn passes(&self) -> PassRecord {
        match self.passes.lock() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn update(&self, change: impl FnOnce(&mut PassRecord)) {
        match self.passes.lock() {
            Ok(mut p) => change(&mut p),
            Err(poisoned) => change(&mut poisoned.into_inner()),
        }
    }

    fn pass_failed(&self, error: String) {
        self.update(|p| {
            p.failed_passes += 1;
            p.last_error = Some(error);
        });
    }

    fn pass_done(&self, drained: &Drained) {
        if drained.undelivered_batches > 0 {
            self.update(|p| {
                p.failed_passes += 1;
                p.last_error = p.vh_unreachable.as_ref().map(|(_, why)| why.clone());
            });
        } else if drained.synced + drained.failed > 0 {
            self.update(|p| {
                p.failed_passes = 0;
                p.last_error = None;
            });
        }
    }

    fn vh_unreachable(&self, error: String) {
        let now = OffsetDateTime::now_utc();
        self.update(|p| {
            let since = p.vh_unreachable.take().map_or(now, |(since, _)| since);
            p.vh_unreachable = Some((since, error));
        });
    }

    fn vh_reachable(&self) {
        self.update(|p| p.vh_unreachable = None);
    }
}

/// Totals of one drain, for `keeper sync --once`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    pub synced: u64,
    pub failed: u64,
    /// Batches that could not be delivered at all (VH-Database unusable).
    pub undelivered_batches: u64,
}

/// keeper.db failed under the worker: the batch in hand is given back (or
/// its lease lapses) and the next pass tries again.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("keeper.db at {path}: {} ({message})", fault.describe())]
    Keeper {
        path: PathBuf,
        fault: Fault,
        message: String,
    },
}

impl WorkerError {
    fn keeper(path: &Path, error: &sqlx::Error) -> WorkerError {
        WorkerError::Keeper {
            path: path.to_owned(),
            fault: Fault::of(error),
            message: sqlite_error::message(error),
        }
    }
}

#[derive(Clone)]
pub struct Worker {
    pub store: Store,
    pub queue: Queue,
    pub sink: Sink,
    pub plugins: PluginSlot,
    pub batches: BatchSizes,
    pub interval: Duration,
    /// Notified by in-process submissions so they sync at once.
    pub wake: Arc<Notify>,
    pub status: Arc<WorkerStatus>,
    /// The canary to split batches with, under `keeper run`.
    pub canary: Option<Canary>,
}

/// What delivering one batch came to.
struct Delivery {
    delivered: Vec<Delivered>,
    failed: Vec<Failed>,
    /// The batch (or its canary share) could not be delivered at all.
    undelivered: bool,
    /// The canary the batch was split with, and what each version did.
    canary: Option<(Arc<Run>, Tally)>,
}

impl Worker {
    /// Processes everything due now, batch after batch, each item at most
    /// once, and returns.
    pub async fn drain(&self) -> Result<Drained, WorkerError> {
        self.drain_until(None).await
    }

    /// [`Worker::drain`], stopping between two batches once `stop` turns
    /// true: a shutdown waits for the batch in hand, not for the whole queue.
    async fn drain_until(&self, stop: Option<&watch::Receiver<bool>>) -> Result<Drained, WorkerError> {
        let drained = self.drain_batches(stop).await;
        // Between passes VH-Database is Control Room's alone (sink.rs).
        self.sink.release();
        drained
    }

    async fn drain_batches(&self, stop: Option<&watch::Receiver<bool>>) -> Result<Drained, WorkerError> {
        let mut total = Drained::default();
        let started = self.queue.now().await.map_err(|e| self.keeper_error(&e))?;
        let mut size = self.batches.first();
        loop {
            if stop.is_some_and(|s| *s.borrow()) {
                return Ok(total);
            }
            let claim = self
                .queue
                .claim(size, Some(&started))
                .await
                .map_err(|e| self.keeper_error(&e))?;
            if claim.items.is_empty() {
                return Ok(total);
            }
            size = self.batches.next(size, claim.items.len());
            let done = self.process(claim).await?;
            total.synced += done.synced;
            total.failed += done.failed;
            total.undelivered_batches += done.undelivered_batches;
        }
    }

    /// Runs until `shutdown` turns true: drains, then sleeps until the
    /// interval passes or a submission wakes it.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        self.status.running.store(true, Ordering::Relaxed);
        while !*shutdown.borrow() {
            match self.drain_until(Some(&shutdown)).await {
                Ok(drained) => self.status.pass_done(&drained),
                Err(error) => {
                    tracing::error!(%error, "sync pass failed; trying again next interval");
                    self.status.pass_failed(error.to_string());
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
        self.status.running.store(false, Ordering::Relaxed);
        tracing::info!("sync worker stopped");
    }

    /// One claimed batch, from keeper.db to VH-Database and back.
    async fn process(&self, claim: Claim) -> Result<Drained, WorkerError> {
        let renewer = self.spawn_lease_renewal(claim.token.clone());
        let outcome = self.deliver(&claim.items).await;
        renewer.abort();
        let Delivery {
            delivered,
            failed,
            undelivered,
            canary,
        } = match outcome {
            Ok(result) => result,
            Err(error) => {
                // keeper.db itself failed mid-batch: give the items back.
                self.queue
                    .release(&claim.token)
                    .await
                    .map_err(|e| self.keeper_error(&e))?;
                return Err(error);
            }
        };
        self.queue
            .complete(&claim.token, &delivered, &failed)
            .await
            .map_err(|e| self.keeper_error(&e))?;
        if let Ok(mut last) = self.status.last_sync_time.lock() {
            *last = Some(OffsetDateTime::now_utc());
        }
        tracing::info!(
            claimed = claim.items.len(),
            synced = delivered.len(),
            failed = failed.len(),
            "sync batch done"
        );
        for f in &failed {
            tracing::warn!(queue_id = f.queue_id, class = f.class.as_str(), error = %f.message, "sync item failed");
        }
        if let (Some((run, tally)), Some(handle)) = (canary, &self.canary)
            && let Err(error) = handle.counted(&run, tally).await
        {
            tracing::error!(%error, canary = %run.record.hash, "cannot count the canary's outcomes");
        }
        Ok(Drained {
            synced: delivered.len() as u64,
            failed: failed.len() as u64,
            undelivered_batches: u64::from(undelivered),
        })
    }

    fn keeper_error(&self, error: &sqlx::Error) -> WorkerError {
        WorkerError::keeper(self.store.path(), error)
    }

    fn spawn_lease_renewal(&self, token: String) -> tokio::task::JoinHandle<()> {
        let queue = self.queue.clone();
        let every = (queue.lease() / 3).max(Duration::from_millis(300));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(error) = queue.renew(&token).await {
                    tracing::warn!(%error, "cannot renew the batch lease");
                }
            }
        })
    }

    /// Maps and writes a batch; returns each item's outcome, and whether the
    /// batch could not be delivered at all. Errors only when keeper.db cannot
    /// be read: a VH-Database problem is an item outcome (and is published in
    /// [`WorkerStatus`]). While a canary runs, its share of the batch (the
    /// first items) is delivered on it, the rest on the active plugin.
    async fn deliver(&self, items: &[ClaimedItem]) -> Result<Delivery, WorkerError> {
        let ids: Vec<i64> = items.iter().map(|i| i.discovery_id).collect();
        let mut rows = self.store.discoveries(&ids).await.map_err(|e| match e {
            StoreError::Sql(e) => self.keeper_error(&e),
            other => WorkerError::Keeper {
                path: self.store.path().to_owned(),
                fault: Fault::Other,
                message: other.to_string(),
            },
        })?;
        let mut inputs: Vec<Input> = items
            .iter()
            .map(|item| Input {
                discovery_id: item.discovery_id,
                backfill: item.backfill,
                row: match rows.remove(&item.discovery_id) {
                    Some(Ok(row)) => Ok(row),
                    Some(Err(e)) => Err(format!("keeper.db discovery {}: {e}", item.discovery_id)),
                    None => Err(format!("discovery {} no longer exists in keeper.db", item.discovery_id)),
                },
            })
            .collect();
        let run = self.canary.as_ref().and_then(Canary::current);
        let on_canary = run.as_ref().map_or(0, |run| run.take(items.len()));
        let mut done = Delivery {
            delivered: Vec::new(),
            failed: Vec::new(),
            undelivered: false,
            canary: None,
        };
        let mut tally = Tally::default();
        let on_active = inputs.split_off(on_canary);
        if let Some(run) = &run
            && on_canary > 0
        {
            self.deliver_on(&run.plugin, &items[..on_canary], inputs, &mut done, |class| {
                tally.count(true, class)
            })
            .await;
        }
        if on_canary < items.len() {
            let active = self.plugins.current();
            self.deliver_on(&active, &items[on_canary..], on_active, &mut done, |class| {
                tally.count(false, class)
            })
            .await;
        }
        done.canary = run.map(|run| (run, tally));
        Ok(done)
    }

    /// Delivers `items` (with their `inputs`) on `plugin` in one
    /// VH-Database transaction, adding the outcomes to `done`; `outcome` is
    /// told of each item's (its error class when it failed).
    async fn deliver_on(
        &self,
        plugin: &Arc<Plugin>,
        items: &[ClaimedItem],
        inputs: Vec<Input>,
        done: &mut Delivery,
        mut outcome: impl FnMut(Option<ErrorClass>),
    ) {
        let fail = |item: &ClaimedItem, class: ErrorClass, message: String| Failed {
            queue_id: item.queue_id,
            attempts: item.attempts,
            class,
            message,
        };
        let outcomes = match delivery::deliver(&self.sink, plugin, self.store.source_id(), inputs).await {
            Ok(outcomes) => {
                self.status.vh_reachable();
                outcomes
            }
            Err(e) => {
                self.status.vh_unreachable(e.to_string());
                for item in items {
                    outcome(Some(e.class()));
                    done.failed.push(fail(item, e.class(), e.to_string()));
                }
                done.undelivered = true;
                return;
            }
        };
        for (item, result) in items.iter().zip(outcomes) {
            match result {
                Outcome::Delivered {
                    haven_id,
                    keeper_db_replaced,
                    metadata,
                } => {
                    outcome(None);
                    done.delivered.push(Delivered {
                        queue_id: item.queue_id,
                        haven_id,
                        metadata,
                        keeper_db_replaced,
                    });
                }
                Outcome::Failed { class, message } => {
                    outcome(Some(class));
                    done.failed.push(fail(item, class, message));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BatchSizes;

    #[test]
    fn batches_double_while_claims_come_back_full_and_start_small_again() {
        let sizes = BatchSizes::new(10, 1000);
        assert_eq!(sizes.first(), 10);
        let mut size = sizes.first();
        let mut grown = vec![size];
        for _ in 0..8 {
            size = sizes.next(size, size as usize);
            grown.push(size);
        }
        assert_eq!(grown, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        // A claim that was not full: the backlog is gone, back to the start.
        assert_eq!(sizes.next(1000, 999), 10);
        assert_eq!(sizes.next(40, 3), 10);
    }

    #[test]
    fn a_ceiling_at_or_below_the_first_size_keeps_every_batch_that_size() {
        for sizes in [BatchSizes::new(25, 25), BatchSizes::new(2000, 1000)] {
            let first = sizes.first();
            assert_eq!(sizes.next(first, first as usize), first);
        }
        assert_eq!(BatchSizes::new(0, 0).first(), 1, "a claim takes at least one item");
    }
}
