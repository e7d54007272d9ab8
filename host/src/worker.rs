//! The sync worker: claims due items, maps them with the active plugin and
//! delivers them to VH-Database, batch after batch.
//!
//! Every stage works on the whole batch: one claim, one read of keeper.db,
//! one VH-Database transaction, one queue update. While one batch is
//! written to VH-Database and completed, the next is claimed, read and
//! mapped: two databases and the mapper, on threads of their own, so a
//! backlog drains at the pace of the slower side. One batch ahead at most,
//! and none while a canary runs (its verdict after each batch decides which
//! plugin maps the next).
//!
//! A batch runs wholly on the plugin that was active when it was mapped;
//! while a canary runs, the batch's canary share is split off and delivered
//! on the canary in its own VH-Database transaction (plugins/canary.rs). On
//! shutdown the batch being written is finished and the one mapped ahead
//! given back; leases cover a worker killed outright.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{Notify, watch};

use crate::delivery::{self, Input, Outcome, Prepared};
use crate::mapper::{Lookup, Plugin, PluginSlot};
use crate::plugins::canary::{Canary, Run, Tally};
use crate::queue::{Claim, ClaimedItem, Delivered, ErrorClass, Failed, Queue};
use crate::sink::{Haven, Sink, SinkError, TargetSchema};
use crate::sqlite_error::{self, Fault};
use crate::store::{Store, StoreError};

/// How big each claim of a pass is, and how soon it comes.
///
/// A short queue is claimed `SYNC_BATCH_SIZE` at a time: small VH-Database
/// transactions, so Control Room waits little for its write lock. With a
/// backlog, every claim that comes back full doubles the next, up to
/// `SYNC_BATCH_MAX`: each batch has a fixed cost (claim, keeper.db read, VH
/// transaction, queue update), and at 10 items a batch it is most of the
/// work, so a backlog after an outage drains near the rate of large batches
/// with the defaults. Each pass starts small again.
///
/// While reports stream in, the worker claims at most once a cooldown
/// (`SYNC_COOLDOWN_MS`), up to `SYNC_BATCH_MAX` at a time, like River's
/// fetch cooldown: a stream is at least `SYNC_BATCH_SIZE` reports submitted
/// in this process since the last claim ([`Wake`]). Chasing a stream in
/// small batches one right after the other (220 batches a second of 20–30
/// items under 32 posting clients) took more than half of the machine and
/// a quarter of keeper.db's write lock, and held intake to half its rate; draining
/// flat out behind a burst did the same. So under a burst intake comes
/// first, the worker syncs up to 5,000 reports a second by default, and
/// the backlog left drains at full speed once the burst ends. A trickle
/// never waits, so a lone report still syncs at once, and neither does a
/// backlog with no stream (after an outage, `keeper sync --once`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimPacing {
    first: u32,
    ceiling: u32,
    cooldown: Duration,
}

/// The claim that follows another: how many items, after how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextClaim {
    pub size: u32,
    pub after: Duration,
}

impl ClaimPacing {
    /// `first` is the size a pass starts with; `max` the most it grows to
    /// (a `max` below `first` means every batch is `first`); `cooldown` the
    /// wait that lets a stream gather (zero: never wait).
    pub fn new(first: u32, max: u32, cooldown: Duration) -> ClaimPacing {
        let first = first.max(1);
        ClaimPacing {
            first,
            ceiling: max.max(first),
            cooldown,
        }
    }

    /// The same pacing without the cooldown: a one-off drain (`keeper sync
    /// --once`) stops when it has caught up instead of waiting for more.
    pub fn without_cooldown(self) -> ClaimPacing {
        ClaimPacing {
            cooldown: Duration::ZERO,
            ..self
        }
    }

    /// The first claim of a pass.
    pub fn first(&self) -> NextClaim {
        NextClaim {
            size: self.first,
            after: Duration::ZERO,
        }
    }

    /// The claim after one of `size` that brought `claimed` items, when
    /// `arrived` reports were submitted here since the one before.
    pub fn next(&self, size: u32, claimed: usize, arrived: u64) -> NextClaim {
        let claimed = u32::try_from(claimed).unwrap_or(u32::MAX);
        if arrived >= u64::from(self.first) && !self.cooldown.is_zero() {
            NextClaim {
                size: self.ceiling,
                after: self.cooldown,
            }
        } else if claimed >= size {
            NextClaim {
                size: size.saturating_mul(2).min(self.ceiling),
                after: Duration::ZERO,
            }
        } else {
            self.first()
        }
    }
}

/// What wakes the worker: reports stored by this process (counted, so the
/// worker can tell a stream from a trickle, see [`ClaimPacing`]) and items
/// made due again (retries, a plugin replaced). Shared by the API, the bot
/// and the plugin manager with the worker.
#[derive(Debug, Default)]
pub struct Wake {
    notify: Notify,
    reports: AtomicU64,
}

impl Wake {
    /// `count` reports were stored and queued: sync them now.
    pub fn reports_stored(&self, count: u64) {
        self.reports.fetch_add(count, Ordering::Relaxed);
        self.notify.notify_one();
    }

    /// Queue items became due without new reports (a retry).
    pub fn items_due(&self) {
        self.notify.notify_one();
    }

    /// Reports stored so far by this process.
    fn reports(&self) -> u64 {
        self.reports.load(Ordering::Relaxed)
    }

    async fn notified(&self) {
        self.notify.notified().await;
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
    pub pacing: ClaimPacing,
    pub interval: Duration,
    /// Told of in-process submissions (so they sync at once, and so a
    /// stream is recognised) and of items due again.
    pub wake: Arc<Wake>,
    pub status: Arc<WorkerStatus>,
    /// The canary to split batches with, under `keeper run`.
    pub canary: Option<Canary>,
}

/// A claimed batch, read from keeper.db and mapped, waiting for its write.
/// The worker maps the next batch while the last one is written: keeper.db
/// and the mapper on one side, VH-Database on the other, on threads of
/// their own, so a backlog drains at the pace of the slower side instead of
/// both in turn.
struct MappedBatch {
    claim: Claim,
    /// Renews the claim's lease until the batch is completed.
    renewer: tokio::task::JoinHandle<()>,
    /// Each part is written in its own VH-Database transaction: the
    /// canary's share first while a canary runs, then the rest.
    parts: Vec<Part>,
    canary: Option<Arc<Run>>,
}

/// Some of a batch's items, mapped by one plugin.
struct Part {
    /// Which of the claim's items.
    items: Range<usize>,
    on_canary: bool,
    prepared: Result<Prepared, VhUnusable>,
}

/// Why VH-Database could not take a batch: every item of it fails alike,
/// and the next pass tries again.
#[derive(Debug, Clone)]
struct VhUnusable {
    class: ErrorClass,
    message: String,
}

impl From<&SinkError> for VhUnusable {
    fn from(error: &SinkError) -> VhUnusable {
        VhUnusable {
            class: error.class(),
            message: error.to_string(),
        }
    }
}

/// What a batch is mapped against: VH-Database's lookup tables and columns.
type MappingView = Result<(Arc<Lookup>, Arc<TargetSchema>), VhUnusable>;

/// What writing one batch came to.
struct Delivery {
    delivered: Vec<Delivered>,
    failed: Vec<Failed>,
    /// A part of the batch could not be delivered at all.
    undelivered: bool,
}

impl Worker {
    /// Processes everything due now, batch after batch, each item at most
    /// once, and returns.
    pub async fn drain(&self) -> Result<Drained, WorkerError> {
        self.drain_until(self.pacing.without_cooldown(), None).await
    }

    /// Drains paced by `pacing`, stopping between two batches once `stop`
    /// turns true: a shutdown waits for the batch being written, not for
    /// the whole queue.
    async fn drain_until(
        &self,
        pacing: ClaimPacing,
        stop: Option<&watch::Receiver<bool>>,
    ) -> Result<Drained, WorkerError> {
        let drained = self.drain_batches(pacing, stop).await;
        // Between passes VH-Database is Control Room's alone (sink.rs).
        self.sink.release();
        drained
    }

    async fn drain_batches(
        &self,
        pacing: ClaimPacing,
        stop: Option<&watch::Receiver<bool>>,
    ) -> Result<Drained, WorkerError> {
        let stopping = || stop.is_some_and(|s| *s.borrow());
        let mut total = Drained::default();
        let started = self.queue.now().await.map_err(|e| self.keeper_error(&e))?;
        let mut next = pacing.first();
        let mut arrived_before = self.wake.reports();
        let mut in_hand: Option<MappedBatch> = None;
        loop {
            if stopping() {
                // The batch mapped ahead, if any, goes back untouched; only
                // the one being written was finished.
                if let Some(batch) = in_hand.take() {
                    self.give_back(batch).await;
                }
                return Ok(total);
            }
            // VH-Database for this round: it takes the batch in hand, and
            // its lookup tables and columns map the next one.
            let (mut haven, view) = self.open_vh().await;
            let batch = match in_hand.take() {
                Some(batch) => batch,
                None => match self.claim_and_map(next, stop, &started, &view).await? {
                    Some(batch) => batch,
                    None => return Ok(total),
                },
            };
            let arrived_now = self.wake.reports();
            next = pacing.next(
                next.size,
                batch.claim.items.len(),
                arrived_now.saturating_sub(arrived_before),
            );
            arrived_before = arrived_now;
            // Not ahead of a canary's verdict, which comes after each batch
            // and decides which plugin maps the next.
            let ahead = !stopping() && self.canary.as_ref().and_then(Canary::current).is_none();
            let (written, claimed_ahead) = tokio::join!(self.write_and_complete(&mut haven, batch), async {
                if ahead {
                    self.claim_and_map(next, stop, &started, &view).await
                } else {
                    Ok(None)
                }
            });
            let claimed_ahead = match written {
                Ok(done) => {
                    total.synced += done.synced;
                    total.failed += done.failed;
                    total.undelivered_batches += done.undelivered_batches;
                    if done.undelivered_batches == 0
                        && let Ok(haven) = haven
                    {
                        // The batch went through: its connection serves the next one.
                        self.sink.keep(haven);
                    }
                    claimed_ahead?
                }
                Err(error) => {
                    if let Ok(Some(batch)) = claimed_ahead {
                        self.give_back(batch).await;
                    }
                    return Err(error);
                }
            };
            match claimed_ahead {
                Some(batch) => in_hand = Some(batch),
                // Mapped ahead and found nothing due: the pass is over.
                None if ahead => return Ok(total),
                None => {}
            }
        }
    }

    /// VH-Database for one round, and what a batch is mapped against; the
    /// reason when it cannot be used.
    async fn open_vh(&self) -> (Result<Haven, VhUnusable>, MappingView) {
        let mut haven = match self.sink.open().await {
            Ok(haven) => haven,
            Err(e) => {
                let unusable = VhUnusable::from(&e);
                return (Err(unusable.clone()), Err(unusable));
            }
        };
        match haven.shared_lookup().await {
            Ok(lookup) => {
                let schema = haven.shared_schema();
                (Ok(haven), Ok((lookup, schema)))
            }
            Err(e) => {
                let unusable = VhUnusable::from(&e);
                (Err(unusable.clone()), Err(unusable))
            }
        }
    }

    /// Runs until `shutdown` turns true: drains, then sleeps until the
    /// interval passes or a submission wakes it.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        self.status.running.store(true, Ordering::Relaxed);
        while !*shutdown.borrow() {
            match self.drain_until(self.pacing, Some(&shutdown)).await {
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

    /// Claims up to `next.size` due items, once `next.after` has passed,
    /// and maps them; `None` when nothing is due, or when `stop` turned
    /// true during the wait. When keeper.db cannot be read, the claim is
    /// given back.
    async fn claim_and_map(
        &self,
        next: NextClaim,
        stop: Option<&watch::Receiver<bool>>,
        started: &str,
        view: &MappingView,
    ) -> Result<Option<MappedBatch>, WorkerError> {
        if !next.after.is_zero() && !cool_down(next.after, stop).await {
            return Ok(None);
        }
        let claim = self
            .queue
            .claim(next.size, Some(started))
            .await
            .map_err(|e| self.keeper_error(&e))?;
        if claim.items.is_empty() {
            return Ok(None);
        }
        let renewer = self.spawn_lease_renewal(claim.token.clone());
        match self.map_batch(&claim.items, view).await {
            Ok((parts, canary)) => Ok(Some(MappedBatch {
                claim,
                renewer,
                parts,
                canary,
            })),
            Err(error) => {
                renewer.abort();
                // keeper.db itself failed mid-batch: give the items back.
                self.queue
                    .release(&claim.token)
                    .await
                    .map_err(|e| self.keeper_error(&e))?;
                Err(error)
            }
        }
    }

    /// Gives a mapped batch back unwritten (the batch before it failed, or
    /// a shutdown).
    async fn give_back(&self, batch: MappedBatch) {
        batch.renewer.abort();
        if let Err(error) = self.queue.release(&batch.claim.token).await {
            // Its lease lapses instead.
            tracing::warn!(%error, "cannot give back a mapped batch");
        }
    }

    /// Reads a batch's reports and maps them. While a canary runs, its share
    /// of the batch (the first items) is mapped on it, the rest on the
    /// active plugin. Errors only when keeper.db cannot be read.
    async fn map_batch(
        &self,
        items: &[ClaimedItem],
        view: &MappingView,
    ) -> Result<(Vec<Part>, Option<Arc<Run>>), WorkerError> {
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
        let on_active = inputs.split_off(on_canary);
        let mut parts = Vec::with_capacity(2);
        if let Some(run) = &run
            && on_canary > 0
        {
            parts.push(Part {
                items: 0..on_canary,
                on_canary: true,
                prepared: Self::prepare(&run.plugin, view, inputs).await,
            });
        }
        if on_canary < items.len() {
            parts.push(Part {
                items: on_canary..items.len(),
                on_canary: false,
                prepared: Self::prepare(&self.plugins.current(), view, on_active).await,
            });
        }
        Ok((parts, run))
    }

    async fn prepare(plugin: &Arc<Plugin>, view: &MappingView, inputs: Vec<Input>) -> Result<Prepared, VhUnusable> {
        let (lookup, schema) = view.as_ref().map_err(Clone::clone)?;
        Ok(delivery::prepare(plugin, lookup.clone(), schema, inputs).await)
    }

    /// Writes a mapped batch to VH-Database and records every item's
    /// outcome in the queue. Errors only when keeper.db cannot be written:
    /// a VH-Database problem is an item outcome (and is published in
    /// [`WorkerStatus`]).
    async fn write_and_complete(
        &self,
        haven: &mut Result<Haven, VhUnusable>,
        batch: MappedBatch,
    ) -> Result<Drained, WorkerError> {
        let MappedBatch {
            claim,
            renewer,
            parts,
            canary,
        } = batch;
        let mut done = Delivery {
            delivered: Vec::new(),
            failed: Vec::new(),
            undelivered: false,
        };
        let mut tally = Tally::default();
        for part in parts {
            let items = &claim.items[part.items];
            let written = match (part.prepared, haven.as_mut()) {
                (Ok(prepared), Ok(haven)) => delivery::write(haven, self.store.source_id(), prepared)
                    .await
                    .map_err(|e| VhUnusable::from(&e)),
                (Ok(_), Err(unusable)) => Err(unusable.clone()),
                (Err(unusable), _) => Err(unusable),
            };
            let on_canary = part.on_canary;
            self.record(items, written, &mut done, |class| tally.count(on_canary, class));
        }
        let outcome = self.queue.complete(&claim.token, &done.delivered, &done.failed).await;
        renewer.abort();
        outcome.map_err(|e| self.keeper_error(&e))?;
        if let Ok(mut last) = self.status.last_sync_time.lock() {
            *last = Some(OffsetDateTime::now_utc());
        }
        tracing::info!(
            claimed = claim.items.len(),
            synced = done.delivered.len(),
            failed = done.failed.len(),
            "sync batch done"
        );
        for f in &done.failed {
            tracing::warn!(queue_id = f.queue_id, class = f.class.as_str(), error = %f.message, "sync item failed");
        }
        if let (Some(run), Some(handle)) = (canary, &self.canary)
            && let Err(error) = handle.counted(&run, tally).await
        {
            tracing::error!(%error, canary = %run.record.hash, "cannot count the canary's outcomes");
        }
        Ok(Drained {
            synced: done.delivered.len() as u64,
            failed: done.failed.len() as u64,
            undelivered_batches: u64::from(done.undelivered),
        })
    }

    /// Adds the outcomes of `items` to `done`; `outcome` is told of each
    /// item's (its error class when it failed).
    fn record(
        &self,
        items: &[ClaimedItem],
        written: Result<Vec<Outcome>, VhUnusable>,
        done: &mut Delivery,
        mut outcome: impl FnMut(Option<ErrorClass>),
    ) {
        let fail = |item: &ClaimedItem, class: ErrorClass, message: String| Failed {
            queue_id: item.queue_id,
            attempts: item.attempts,
            class,
            message,
        };
        let outcomes = match written {
            Ok(outcomes) => {
                self.status.vh_reachable();
                outcomes
            }
            Err(unusable) => {
                self.status.vh_unreachable(unusable.message.clone());
                for item in items {
                    outcome(Some(unusable.class));
                    done.failed.push(fail(item, unusable.class, unusable.message.clone()));
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
}

/// Waits `wait`, or less if `stop` turns true meanwhile; whether the
/// worker is still to go on.
async fn cool_down(wait: Duration, stop: Option<&watch::Receiver<bool>>) -> bool {
    let Some(stop) = stop else {
        tokio::time::sleep(wait).await;
        return true;
    };
    let mut stop = stop.clone();
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        // A dropped sender cannot say stop any more: finish the wait.
        sender_gone = async { stop.wait_for(|stop| *stop).await.is_err() } => {
            if sender_gone {
                tokio::time::sleep(wait).await;
            }
            sender_gone
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::watch;

    use super::{ClaimPacing, NextClaim, Wake, cool_down};

    const NO_COOLDOWN: Duration = Duration::ZERO;
    const COOLDOWN: Duration = Duration::from_millis(100);

    fn now(size: u32) -> NextClaim {
        NextClaim {
            size,
            after: Duration::ZERO,
        }
    }

    #[test]
    fn batches_double_while_claims_come_back_full_and_start_small_again() {
        for cooldown in [NO_COOLDOWN, COOLDOWN] {
            let pacing = ClaimPacing::new(10, 1000, cooldown);
            assert_eq!(pacing.first(), now(10));
            let mut next = pacing.first();
            let mut grown = vec![next.size];
            for _ in 0..8 {
                // A backlog, with nothing (or a trickle) submitted meanwhile.
                next = pacing.next(next.size, next.size as usize, 9);
                assert_eq!(next.after, Duration::ZERO, "a backlog is claimed without a pause");
                grown.push(next.size);
            }
            assert_eq!(grown, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
            // The backlog is gone: back to the start, at once.
            assert_eq!(pacing.next(40, 3, 0), now(10));
            assert_eq!(pacing.next(1000, 999, 1), now(10));
        }
    }

    #[test]
    fn while_reports_stream_in_each_claim_waits_the_cooldown_and_takes_up_to_the_ceiling() {
        let pacing = ClaimPacing::new(10, 500, COOLDOWN);
        let gathered = NextClaim {
            size: 500,
            after: COOLDOWN,
        };
        // At least SYNC_BATCH_SIZE reports since the last claim: a stream,
        // whether the worker keeps pace with it or is behind.
        assert_eq!(pacing.next(20, 10, 10), gathered);
        assert_eq!(pacing.next(40, 31, 400), gathered);
        assert_eq!(pacing.next(500, 500, 2000), gathered, "behind a burst: intake first");
        // The burst over, what it left drains without a pause.
        assert_eq!(pacing.next(500, 500, 0), now(500));
        // Without a cooldown (a one-off drain, or SYNC_COOLDOWN_MS=0) a
        // stream is chased as before.
        let once = pacing.without_cooldown();
        assert_eq!(once.next(40, 31, 400), now(10));
        assert_eq!(once.next(500, 500, 2000), now(500));
        assert_eq!(ClaimPacing::new(10, 500, NO_COOLDOWN).next(40, 31, 400), now(10));
    }

    #[test]
    fn a_ceiling_at_or_below_the_first_size_keeps_every_batch_that_size() {
        for pacing in [
            ClaimPacing::new(25, 25, NO_COOLDOWN),
            ClaimPacing::new(2000, 1000, NO_COOLDOWN),
        ] {
            let first = pacing.first();
            assert_eq!(pacing.next(first.size, first.size as usize, 0), first);
            assert_eq!(pacing.next(first.size, first.size as usize - 1, 0), first);
        }
        let streaming = ClaimPacing::new(25, 25, COOLDOWN).next(25, 25, 100);
        assert_eq!(
            streaming,
            NextClaim {
                size: 25,
                after: COOLDOWN
            }
        );
        assert_eq!(
            ClaimPacing::new(0, 0, COOLDOWN).first().size,
            1,
            "a claim takes at least one item"
        );
    }

    #[test]
    fn only_stored_reports_count_as_arrivals() {
        let wake = Wake::default();
        wake.reports_stored(3);
        wake.items_due();
        wake.reports_stored(0);
        wake.reports_stored(2);
        assert_eq!(wake.reports(), 5);
    }

    #[tokio::test]
    async fn a_cooldown_ends_early_when_the_worker_is_told_to_stop() {
        let (tell, stop) = watch::channel(false);
        let started = std::time::Instant::now();
        assert!(
            cool_down(Duration::from_millis(20), Some(&stop)).await,
            "no stop: the wait is whole"
        );
        assert!(started.elapsed() >= Duration::from_millis(20));

        let stopping = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            tell.send(true).expect("the worker listens");
            tell
        });
        // A wait of an hour, cut short by the stop (or the test fails at
        // the bound instead of hanging).
        let stopped = tokio::time::timeout(
            Duration::from_secs(60),
            cool_down(Duration::from_secs(3600), Some(&stop)),
        )
        .await;
        assert_eq!(stopped, Ok(false), "the stop ends the wait");
        drop(stopping.await);
    }
}
