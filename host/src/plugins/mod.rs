//! Mapping plugins: which one the worker runs, and how a new one gets there.
//!
//! At start-up the newest `.wasm` in the plugins folder that passes the
//! conformance check becomes active, else the built-in default mapper.
//! While `keeper run` serves, the folder is watched: a new or changed file
//! is compiled (off the async runtime), checked against the corpus
//! ([`conformance::verify`]) and only then swapped into the [`PluginSlot`];
//! a batch already running finishes on the version it started with. A plugin
//! that fails is recorded as rejected with its reason and the active one
//! stays. Removing the active plugin's file falls back to the built-in one.
//!
//! The sync API installs and activates plugins through the manager too
//! ([`control`]): an upload is checked as a dropped file is, then renamed
//! into the folder; there is no second way to become active. Every version
//! that became active is kept ([`versions`]) so it can be activated again.
//!
//! When a new version becomes active, items a plugin had refused (error
//! class `mapping`) are queued again and the worker is woken: that is how a
//! fixed plugin heals them without a manual retry.
//!
//! A version can also run as a canary first ([`canary`]): the manager
//! checks it and starts it, the worker maps a share of the items with it,
//! and a canary that reaches its count is promoted through the manager as
//! any activation is. The registry records how each version became active
//! ([`crate::registry::Activation`]).
//!
//! The store is shared (several hosts on one PostgreSQL database, several
//! processes on one keeper.db), and so is the active version: every
//! activation keeps the plugin's bytes in the store, and the other
//! processes switch to it ([`follow`]). Start-up therefore takes, in order:
//! the newest valid `.wasm` in the folder whose version was never active on
//! this store (a file dropped in while keeper was stopped: it becomes
//! active for all); else the store's active version (a restarted or new
//! host with an empty or stale folder joins the others instead of turning
//! them back); else, when the store has none it can load, the newest valid
//! file, else the built-in plugin. A host that cannot run the store's
//! active version starts on that fallback without recording it as active,
//! and says so in `/health`.

pub mod cache;
pub mod canary;
pub mod commands;
pub mod conformance;
pub mod control;
pub mod follow;
pub mod preview;
pub mod versions;
mod watch;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{mpsc, watch as signal};

use crate::app::App;
use crate::config::Settings;
use crate::db::Db;
use crate::mapper::{DEFAULT_PLUGIN, Limits, Plugin, PluginError, PluginInfo, PluginSlot, Runtime};
use crate::queue::Queue;
use crate::registry::{Activation, BUILT_IN, PluginRecord, Registry};
use crate::sink::{SinkError, TargetSchema};
use crate::worker::Wake;
use cache::Cache;
use canary::{Canaries, Canary, CanaryRecord, Judge};
use conformance::Rejection;
use control::{ControlError, PluginControl, PluginName, Request};
use follow::{FetchError, FollowStatus, NotFollowed, StoreWatch};
use versions::Versions;

/// A plugin file larger than this is refused unread: the most
/// `KEEPER_PLUGIN_SIZE_MIB` allows keeper to compile (a file up to it is
/// read, and one above that setting refused before it is compiled).
pub const MAX_PLUGIN_FILE: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PluginsError {
    #[error("the built-in mapping plugin cannot be loaded: {0}")]
    BuiltIn(#[from] PluginError),
    #[error("cannot build the reference VH-Database schema: {0}")]
    Schema(#[from] SinkError),
    #[error("keeper.db: {0}")]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("plugin rejected: {0}")]
    Rejected(Rejection),
    #[error("cannot read plugin {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
    #[error("plugin work stopped unexpectedly: {0}")]
    Join(String),
}

/// Where the active plugin came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    BuiltIn,
    File(PathBuf),
    /// The store's active version, activated by another process on the
    /// store; the registry's `source` for it (that process's file).
    Store(String),
}

impl fmt::Display for Source {
    /// As recorded in the registry's `source` column.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::BuiltIn => f.write_str(BUILT_IN),
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Store(recorded) => f.write_str(recorded),
        }
    }
}

/// What loads and checks plugins: shared by start-up, hot reload and the
/// `keeper plugin` commands.
#[derive(Clone)]
pub struct Loader {
    pub runtime: Runtime,
    pub schema: TargetSchema,
    cache: Option<Cache>,
}

impl Loader {
    /// `cache`: whether compiled plugins are kept in (and taken from) the
    /// cache beside keeper.db. Start-up, hot reload, `check` and `preview`
    /// all share it, so a plugin is compiled once per keeper.db.
    pub async fn new(app: &App, cache: bool) -> Result<Loader, PluginsError> {
        let mut loader = Loader::uncached(&app.settings).await?;
        loader.cache = cache.then(|| Cache::new(app.settings.plugin_cache_dir(), app.store.plugin_cache_key()));
        Ok(loader)
    }

    /// The loader of `keeper plugin check`: with the cache of the keeper.db
    /// at `KEEPER_DB_PATH` when there is one (opened read-only), so a check
    /// leaves the compiled plugin for hot reload and the next check; without
    /// a cache (and without touching anything) on a maintainer's machine
    /// that has no bot.
    pub async fn for_check(settings: &Settings) -> Result<Loader, PluginsError> {
        if settings.keeper_db.is_file() {
            match App::open(settings.clone(), crate::store::Access::Read).await {
                Ok(app) => return Loader::new(&app, true).await,
                Err(error) => tracing::info!(%error, "compiled plugins are not cached for this check"),
            }
        }
        Loader::uncached(settings).await
    }

    /// A loader that compiles every time and needs no keeper.db.
    pub async fn uncached(settings: &Settings) -> Result<Loader, PluginsError> {
        let runtime = Runtime::new(settings.plugin_limits())?;
        let schema = TargetSchema::reference().await?;
        Ok(Loader {
            runtime,
            schema,
            cache: None,
        })
    }

    /// Compiles (or takes from the cache) and links. Blocking. The time it
    /// took is logged at debug level (`KEEPER_LOG=keeper::plugins=debug`):
    /// how long activating a plugin costs, cached or not, in wall-clock
    /// time and in this thread's CPU time (which a busy machine does not
    /// inflate; absent where the platform has no thread CPU clock).
    fn load(&self, bytes: &[u8]) -> Result<(Plugin, bool), PluginError> {
        let started = std::time::Instant::now();
        let cpu_started = crate::platform::thread_cpu_time();
        let loaded = match &self.cache {
            Some(cache) => cache.load(&self.runtime, bytes),
            None => self.runtime.load(bytes).map(|p| (p, false)),
        };
        if let Ok((plugin, cached)) = &loaded {
            tracing::debug!(
                name = %plugin.info().name,
                cached,
                elapsed_ms = started.elapsed().as_millis(),
                cpu_ms = cpu_started
                    .zip(crate::platform::thread_cpu_time())
                    .map(|(from, to)| to.saturating_sub(from).as_millis()),
                "plugin loaded"
            );
        }
        loaded
    }

    /// The built-in default mapper.
    pub async fn built_in(&self) -> Result<(Plugin, bool), PluginsError> {
        let loader = self.clone();
        Ok(tokio::task::spawn_blocking(move || loader.load(DEFAULT_PLUGIN))
            .await
            .map_err(|e| PluginsError::Join(e.to_string()))??)
    }

    /// Loads a plugin known to be good (active before), without the
    /// conformance check, on a blocking thread.
    pub async fn load_bytes(&self, bytes: Vec<u8>) -> Result<Plugin, PluginsError> {
        let loader = self.clone();
        let (plugin, _) = tokio::task::spawn_blocking(move || loader.load(&bytes))
            .await
            .map_err(|e| PluginsError::Join(e.to_string()))??;
        Ok(plugin)
    }

    /// The plugin in `path` with whether it came from the cache, if it
    /// passes the conformance check; otherwise the rejection is logged and
    /// recorded in `registry`, and `None` returned.
    async fn admit(&self, path: &Path, registry: &Registry) -> Option<(Plugin, bool)> {
        let verdict = match self.check_file(path).await {
            Ok(v) => v,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "plugin file skipped");
                return None;
            }
        };
        let (info, cached) = (verdict.info(), verdict.cached);
        match verdict.accepted() {
            Ok(plugin) => Some((plugin, cached)),
            Err(rejection) => {
                record_rejection(registry, path, &info, &rejection).await;
                None
            }
        }
    }

    /// Reads a plugin file and runs the conformance check on it, on a
    /// blocking thread.
    pub async fn check_file(&self, path: &Path) -> Result<conformance::Verdict, PluginsError> {
        let unreadable = |reason: String| PluginsError::Unreadable {
            path: path.to_owned(),
            reason,
        };
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|e| unreadable(e.to_string()))?
            .len();
        if size > MAX_PLUGIN_FILE {
            return Err(unreadable(format!(
                "{size} bytes; the limit is {} MiB",
                MAX_PLUGIN_FILE >> 20
            )));
        }
        let bytes = tokio::fs::read(path).await.map_err(|e| unreadable(e.to_string()))?;
        self.check_bytes(bytes).await
    }

    /// Runs the conformance check on a plugin's bytes, on a blocking thread.
    pub async fn check_bytes(&self, bytes: Vec<u8>) -> Result<conformance::Verdict, PluginsError> {
        let loader = self.clone();
        tokio::task::spawn_blocking(move || {
            let hash = crate::mapper::content_hash(&bytes);
            let (loaded, cached) = match loader.load(&bytes) {
                Ok((plugin, cached)) => (Ok(plugin), cached),
                Err(e) => (Err(e), false),
            };
            let mut verdict = conformance::verify(hash, loaded, &loader.schema);
            verdict.cached = cached;
            verdict
        })
        .await
        .map_err(|e| PluginsError::Join(e.to_string()))
    }
}

/// Owns the plugin slot the worker reads, and changes it.
pub struct PluginManager {
    loader: Loader,
    registry: Registry,
    queue: Queue,
    wake: Arc<Wake>,
    dir: PathBuf,
    slot: PluginSlot,
    active: Source,
    /// Files this manager placed in the folder itself (uploads and
    /// activations renamed into place), with the version placed. The watch
    /// reports them as it reports a dropped file, sometimes only after
    /// another version became active; that echo must not make the file
    /// active again (see [`PluginManager::consider`]).
    placed: HashMap<PathBuf, String>,
    /// Events on the plugins folder, when hot reload is on.
    events: Option<watch::DirWatch>,
    versions: Versions,
    /// Installs and canaries asked for through [`PluginManager::control`].
    requests: mpsc::Receiver<Request>,
    control: PluginControl,
    canary: Canary,
    /// Canaries that reached their count, from the worker.
    promotions: mpsc::UnboundedReceiver<String>,
    /// The store, to hear of activations by other processes on it.
    db: Db,
    /// Listening already (with hot reload: from before start-up's choice,
    /// so an activation meanwhile is not missed).
    store: Option<StoreWatch>,
    /// How often to look for them ([`StoreWatch`]).
    follow_every: std::time::Duration,
    /// The store's active version this host could not take, for `/health`.
    follow_status: FollowStatus,
}

/// What start-up runs, and whether that is an activation to record.
enum StartUp {
    /// Recorded as the store's active version (it may already be).
    Active(Plugin, Source, bool),
    /// The store's active version cannot run here: this host runs another
    /// without recording it, so the other hosts keep theirs.
    Fallback(Plugin, Source, bool, NotFollowed),
}

impl PluginManager {
    /// Chooses the start-up plugin (see the module doc), records it and
    /// heals if it is new. With `hot_reload` the folder is watched from
    /// before that choice, so a file dropped in meanwhile is not missed
    /// ([`PluginManager::watch`] then acts on it).
    pub async fn start(app: &App, hot_reload: bool) -> Result<PluginManager, PluginsError> {
        let loader = Loader::new(app, true).await?;
        let dir = std::path::absolute(&app.settings.plugins_dir).unwrap_or_else(|_| app.settings.plugins_dir.clone());
        let poll = app.settings.plugins_poll.map(std::time::Duration::from_secs);
        let events = if hot_reload { watch_folder(&dir, poll) } else { None };
        let follow_every = std::time::Duration::from_secs(app.settings.plugins_follow_secs.max(1));
        let store = if hot_reload {
            Some(StoreWatch::new(app.store.db(), follow_every).await)
        } else {
            None
        };
        let store_active = app.registry.active().await?;
        let previous = store_active.as_ref().map(|a| a.hash.clone());
        let versions = Versions::new(app.settings.plugin_versions_dir());

        let start_up = choose(&loader, &app.registry, &versions, &dir, store_active).await?;
        let follow_status = FollowStatus::default();
        let (plugin, active, cached, record) = match start_up {
            StartUp::Active(plugin, source, cached) => (plugin, source, cached, true),
            StartUp::Fallback(plugin, source, cached, not_followed) => {
                follow_status.set(Some(not_followed));
                (plugin, source, cached, false)
            }
        };
        let (info, limits) = (plugin.info().clone(), plugin.limits());
        let (requests_tx, requests) = mpsc::channel(4);
        let canaries = Canaries::new(app.store.db().clone());
        let control = PluginControl::new(
            requests_tx,
            loader.clone(),
            dir.clone(),
            versions.clone(),
            app.registry.clone(),
            canaries.clone(),
            follow_status.clone(),
        );
        let (promote, promotions) = mpsc::unbounded_channel();
        let judge = Judge {
            margin_percent: app.settings.canary_margin_percent,
            min_items: app.settings.canary_min_items,
        };
        let canary = Canary::new(canaries, judge, app.queue.clone(), app.wake.clone(), promote);
        let manager = PluginManager {
            loader,
            registry: app.registry.clone(),
            queue: app.queue.clone(),
            wake: app.wake.clone(),
            dir,
            slot: PluginSlot::new(plugin),
            active,
            placed: HashMap::new(),
            events,
            versions,
            requests,
            control,
            canary,
            promotions,
            db: app.store.db().clone(),
            store,
            follow_every,
            follow_status,
        };
        if record {
            manager
                .record_active(
                    &info,
                    limits,
                    previous.as_deref() != Some(info.hash.as_str()),
                    cached,
                    Activation::StartUp,
                )
                .await?;
        } else {
            log_active(&info, limits, &manager.active, cached, Some(Activation::StartUp));
        }
        Ok(manager)
    }

    /// The slot the worker takes its plugin from.
    pub fn slot(&self) -> PluginSlot {
        self.slot.clone()
    }

    /// The handle through which the sync API installs and activates
    /// plugins; served while [`PluginManager::watch`] runs.
    pub fn control(&self) -> PluginControl {
        self.control.clone()
    }

    /// The canary the worker splits batches with (see [`canary`]).
    pub fn canary(&self) -> Canary {
        self.canary.clone()
    }

    /// Acts on changes in the plugins folder (when hot reload is on), on
    /// installs asked for through [`PluginManager::control`] and on plugins
    /// activated by other processes on the store ([`follow`]), until
    /// `shutdown` turns true.
    pub async fn watch(mut self, mut shutdown: signal::Receiver<bool>) {
        let mut events = self.events.take();
        let mut store = match self.store.take() {
            Some(store) => store,
            None => StoreWatch::new(&self.db, self.follow_every).await,
        };
        while !*shutdown.borrow() {
            tokio::select! {
                changed = shutdown.changed() => if changed.is_err() { break },
                settled = settled(&mut events) => match settled {
                    Some(paths) => {
                        for path in paths {
                            self.consider(path).await;
                        }
                    }
                    None => {
                        tracing::warn!(dir = %self.dir.display(), "the plugins folder watch ended; hot reload is off");
                        events = None;
                    }
                },
                Some(request) = self.requests.recv() => match request {
                    Request::Install { staged, target, how, reply } => {
                        let outcome = self.install(staged, &target, how).await;
                        // The client may have gone; the outcome is logged either way.
                        let _ = reply.send(outcome);
                    }
                    Request::Canary { staged, name, share, reply } => {
                        let outcome = self.start_canary(staged, &name, share).await;
                        let _ = reply.send(outcome);
                    }
                },
                Some(hash) = self.promotions.recv() => {
                    // Through the request queue, as an activation from the
                    // API is: this loop serves it next.
                    let control = self.control.clone();
                    tokio::spawn(async move {
                        if let Err(error) = control.promote(&hash).await {
                            tracing::error!(%hash, %error, "the canary reached its count but cannot be made active");
                        }
                    });
                }
                () = store.next() => self.follow().await,
            }
        }
    }

    /// Takes the store's active version when another process activated
    /// one this host does not run; says why in `/health` (and the log, once
    /// per version) when it cannot.
    async fn follow(&mut self) {
        let active = match self.registry.active().await {
            Ok(Some(active)) => active,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "cannot read the store's active plugin version; looking again later");
                return;
            }
        };
        let running = self.slot.current().info().clone();
        if active.hash == running.hash {
            self.follow_status.set(None);
            return;
        }
        if self
            .follow_status
            .not_followed()
            .is_some_and(|refused| refused.hash == active.hash)
        {
            return;
        }
        match follow::fetch(&self.loader, &self.registry, &self.versions, &active.hash).await {
            Ok((plugin, cached)) => {
                tracing::info!(
                    name = %active.name,
                    version = %active.version,
                    hash = %active.hash,
                    source = %active.source,
                    "a plugin activated on another host (or process) on this store; switching to it"
                );
                let (info, limits) = (plugin.info().clone(), plugin.limits());
                self.slot.replace(plugin);
                self.active = Source::Store(active.source);
                self.follow_status.set(None);
                log_active(&info, limits, &self.active, cached, None);
                self.wake.items_due();
            }
            Err(FetchError::Refused(reason)) => {
                self.follow_status.set(Some(refusal(&active, reason, &running)));
            }
            Err(FetchError::Failed(error)) => {
                tracing::warn!(hash = %active.hash, %error, "cannot load the store's active plugin version; trying again later");
            }
        }
    }

    /// Checks a staged plugin as a dropped file is checked; moves it to
    /// `target` and makes it active if it passes, records the rejection
    /// under `target` (the staged file is removed) if not.
    async fn install(
        &mut self,
        staged: control::Staged,
        target: &Path,
        how: Activation,
    ) -> Result<PluginInfo, ControlError> {
        let verdict = self.loader.check_file(staged.path()).await?;
        let (info, cached) = (verdict.info(), verdict.cached);
        match verdict.accepted() {
            Ok(plugin) => {
                staged.into_place(target).map_err(|e| ControlError::Folder {
                    dir: self.dir.clone(),
                    reason: e.to_string(),
                })?;
                self.placed.insert(target.to_owned(), info.hash.clone());
                tracing::info!(path = %target.display(), name = %info.name, version = %info.version, "plugin installed through the sync API");
                self.switch(plugin, Source::File(target.to_owned()), cached, how).await;
                Ok(info)
            }
            Err(rejection) => {
                record_rejection(&self.registry, target, &info, &rejection).await;
                Err(ControlError::Rejected(rejection.to_string()))
            }
        }
    }

    /// Checks a staged plugin as an upload is and, if it passes and is not
    /// the active one, starts it as the canary (the staged file is removed
    /// either way; the version is kept for its promotion).
    async fn start_canary(
        &mut self,
        staged: control::Staged,
        name: &PluginName,
        share: canary::Share,
    ) -> Result<CanaryRecord, ControlError> {
        let verdict = self.loader.check_file(staged.path()).await?;
        let info = verdict.info();
        let plugin = match verdict.accepted() {
            Ok(plugin) => plugin,
            Err(rejection) => {
                let target = self.dir.join(format!("{}.wasm", name.as_str()));
                record_rejection(&self.registry, &target, &info, &rejection).await;
                return Err(ControlError::Rejected(rejection.to_string()));
            }
        };
        let active = self.slot.current().info().hash.clone();
        if info.hash == active {
            return Err(ControlError::CanaryOfActive(info.hash));
        }
        self.versions.keep(&info.hash, staged.path()).await;
        drop(staged);
        match self.canary.begin(plugin, name.as_str(), share, &active).await? {
            Some(record) => Ok(record),
            None => {
                let running = self.canary.running_record().await?;
                Err(ControlError::CanaryRunning {
                    name: running.as_ref().map(|r| r.name.clone()).unwrap_or_default(),
                    version: running.as_ref().map(|r| r.version.clone()).unwrap_or_default(),
                    hash: running.map(|r| r.hash).unwrap_or_default(),
                })
            }
        }
    }

    /// A plugin file that changed or disappeared.
    async fn consider(&mut self, path: PathBuf) {
        if !path.exists() {
            if self.active == Source::File(path.clone()) {
                tracing::info!(path = %path.display(), "the active plugin's file is gone; falling back to the built-in plugin");
                match self.loader.built_in().await {
                    Ok((plugin, cached)) => self.switch(plugin, Source::BuiltIn, cached, Activation::Folder).await,
                    Err(error) => {
                        tracing::error!(%error, "the built-in plugin cannot be loaded; the removed one stays active")
                    }
                }
            }
            return;
        }
        if let Some(placed) = self.placed.remove(&path)
            && file_hash(&path).await.as_deref() == Some(placed.as_str())
        {
            // The watch's echo of a file installed here (an upload or an
            // activation renamed into place), whatever is active by now.
            tracing::debug!(path = %path.display(), "a plugin file keeper placed itself; nothing to do");
            return;
        }
        if self.active == Source::File(path.clone()) && self.holds_active(&path).await {
            tracing::debug!(path = %path.display(), "the active plugin's file is unchanged");
            return;
        }
        if let Some((plugin, cached)) = self.loader.admit(&path, &self.registry).await {
            self.switch(plugin, Source::File(path), cached, Activation::Folder)
                .await;
        }
    }

    /// Whether the file at `path` holds the active plugin, byte for byte.
    async fn holds_active(&self, path: &Path) -> bool {
        let active = self.slot.current().info().hash.clone();
        file_hash(path).await.is_some_and(|hash| hash == active)
    }

    /// Makes `plugin` the one new batches use (`how`), on every process of
    /// the store; ends a running canary (as promoted, when it is the
    /// canary's version).
    async fn switch(&mut self, plugin: Plugin, source: Source, cached: bool, how: Activation) {
        let (info, limits) = (plugin.info().clone(), plugin.limits());
        let current = self.slot.current();
        if current.info().hash == info.hash && self.active == source {
            tracing::debug!(source = %source, "plugin unchanged");
            return;
        }
        let hash_changed = current.info().hash != info.hash;
        drop(current);
        self.slot.replace(plugin);
        self.active = source;
        // Activated here: it is the store's active version now.
        self.follow_status.set(None);
        if let Err(error) = self.record_active(&info, limits, hash_changed, cached, how).await {
            tracing::error!(%error, "the new plugin is active but keeper.db could not record it");
        }
        if let Err(error) = self.canary.activation(&info, how).await {
            tracing::error!(%error, "a new plugin is active but the canary it ends could not be recorded as ended");
        }
    }

    /// Keeps the active plugin's bytes in the store and records it with the
    /// limits it was granted (the other processes on the store follow it);
    /// for a new version, re-queues the items plugins had refused and wakes
    /// the worker.
    async fn record_active(
        &self,
        info: &PluginInfo,
        limits: Limits,
        new_version: bool,
        cached: bool,
        how: Activation,
    ) -> Result<(), sqlx::Error> {
        let source = self.active.to_string();
        // The bytes first: a host woken by the activation finds them.
        self.keep_artifact(&info.hash).await?;
        self.registry.activated(info, &source, limits, how).await?;
        if let Source::File(path) = &self.active {
            self.versions.keep(&info.hash, path).await;
        }
        log_active(info, limits, &self.active, cached, Some(how));
        if new_version {
            let healed = self.queue.requeue_mapping_failures().await?;
            if healed > 0 {
                tracing::info!(healed, version = %info.version, "items refused by a mapping plugin are queued again for the new version");
            }
            self.wake.items_due();
        }
        Ok(())
    }

    /// Keeps the bytes of the active plugin (version `hash`) in the store.
    /// A file that changed since it was checked is not kept (logged): the
    /// other processes then say they cannot take this version.
    async fn keep_artifact(&self, hash: &str) -> Result<(), sqlx::Error> {
        if self.registry.has_artifact(hash).await? {
            return Ok(());
        }
        let bytes = match &self.active {
            Source::BuiltIn => DEFAULT_PLUGIN.to_vec(),
            // Taken from the store: it is there.
            Source::Store(_) => return Ok(()),
            Source::File(path) => match tokio::fs::read(path).await {
                Ok(bytes) if crate::mapper::content_hash(&bytes) == hash => bytes,
                Ok(_) => {
                    tracing::warn!(hash, path = %path.display(), "the plugin file changed since it was checked; its bytes are not kept in the store, so other hosts cannot take this version");
                    return Ok(());
                }
                Err(error) => {
                    tracing::warn!(hash, path = %path.display(), %error, "cannot read the active plugin's file; its bytes are not kept in the store, so other hosts cannot take this version");
                    return Ok(());
                }
            },
        };
        self.registry.keep_artifact(hash, &bytes).await
    }
}

/// Logs the plugin new batches run on.
fn log_active(info: &PluginInfo, limits: Limits, source: &Source, cached: bool, how: Option<Activation>) {
    tracing::info!(
        name = %info.name,
        version = %info.version,
        hash = %info.hash,
        source = %source,
        activated_by = how.map_or("another process on the store", Activation::as_str),
        cached,
        memory_mib = limits.memory_bytes >> 20,
        timeout_ms = limits.deadline.as_millis(),
        "mapping plugin active"
    );
}

/// The start-up plugin (see the module doc): `store_active` is the store's
/// active version.
async fn choose(
    loader: &Loader,
    registry: &Registry,
    versions: &Versions,
    dir: &Path,
    store_active: Option<PluginRecord>,
) -> Result<StartUp, PluginsError> {
    let mut newest_valid = None;
    for path in candidates(dir) {
        // Being copied right now: the watch takes it once complete.
        if !watch::complete_or_gone(&path).await {
            continue;
        }
        let Some((plugin, cached)) = loader.admit(&path, registry).await else {
            continue;
        };
        let hash = plugin.info().hash.clone();
        if let Some(active) = store_active.as_ref().filter(|a| a.hash == hash) {
            // The store's active version, in this folder: from this very
            // file (a restart), or a copy of another host's.
            let source = if active.source == path.display().to_string() {
                Source::File(path)
            } else {
                Source::Store(active.source.clone())
            };
            return Ok(StartUp::Active(plugin, source, cached));
        }
        if !registry.was_active(&hash).await? {
            tracing::info!(path = %path.display(), hash = %hash, "a plugin file new to this store; it becomes the active version");
            return Ok(StartUp::Active(plugin, Source::File(path), cached));
        }
        if newest_valid.is_none() {
            newest_valid = Some((plugin, Source::File(path), cached));
        }
    }
    let not_followed = match &store_active {
        None => None,
        Some(active) => match follow::fetch(loader, registry, versions, &active.hash).await {
            Ok((plugin, cached)) => {
                let source = if active.hash == crate::mapper::content_hash(DEFAULT_PLUGIN) {
                    Source::BuiltIn
                } else {
                    Source::Store(active.source.clone())
                };
                return Ok(StartUp::Active(plugin, source, cached));
            }
            // A store recorded by an older keeper holds no bytes yet: this
            // host's choice is recorded (and its bytes kept) as before.
            Err(FetchError::Refused(follow::FollowRefusal::Missing)) => None,
            Err(FetchError::Refused(reason)) => Some((active, reason)),
            Err(FetchError::Failed(error)) => return Err(error),
        },
    };
    let (plugin, source, cached) = match newest_valid {
        Some(chosen) => chosen,
        None => {
            let (plugin, cached) = loader.built_in().await?;
            (plugin, Source::BuiltIn, cached)
        }
    };
    Ok(match not_followed {
        None => StartUp::Active(plugin, source, cached),
        Some((active, reason)) => {
            let not_followed = refusal(active, reason, plugin.info());
            StartUp::Fallback(plugin, source, cached, not_followed)
        }
    })
}

/// The store's `active` version that this host does not take for `reason`,
/// running `running` instead; logged. (Without making `running` active:
/// the other hosts keep the store's version.)
fn refusal(active: &PluginRecord, reason: follow::FollowRefusal, running: &PluginInfo) -> NotFollowed {
    let not_followed = NotFollowed {
        name: active.name.clone(),
        version: active.version.clone(),
        hash: active.hash.clone(),
        reason,
        running: format!("{} {} ({})", running.name, running.version, running.hash),
    };
    tracing::warn!(
        name = %not_followed.name,
        version = %not_followed.version,
        hash = %not_followed.hash,
        reason = %not_followed.reason,
        running = %not_followed.running,
        "the store's active mapping plugin cannot run on this host; this host keeps running its own"
    );
    not_followed
}

/// The next settled paths of the folder watch; never, without one.
async fn settled(events: &mut Option<watch::DirWatch>) -> Option<Vec<PathBuf>> {
    match events {
        Some(events) => events.settled().await,
        None => std::future::pending().await,
    }
}

/// Starts watching the plugins folder (creating it if needed), by its OS
/// events or by scanning it every `poll`; `None`, with a warning, when that
/// is impossible: the worker runs on without hot reload.
fn watch_folder(dir: &Path, poll: Option<std::time::Duration>) -> Option<watch::DirWatch> {
    if let Err(error) = std::fs::create_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), %error, "cannot create the plugins folder; hot reload is off");
        return None;
    }
    match watch::DirWatch::new(dir, poll) {
        Ok(events) => {
            match poll {
                Some(every) => tracing::info!(
                    dir = %dir.display(),
                    poll_secs = every.as_secs(),
                    "🔌 Watching for mapping plugins (scanning the folder every {}s)",
                    every.as_secs()
                ),
                None => tracing::info!(dir = %dir.display(), "🔌 Watching for mapping plugins"),
            }
            Some(events)
        }
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "cannot watch the plugins folder; hot reload is off");
            None
        }
    }
}

/// Logs and records a plugin that may not become active.
async fn record_rejection(registry: &Registry, path: &Path, info: &PluginInfo, rejection: &Rejection) {
    let reason = rejection.to_string();
    tracing::warn!(
        path = %path.display(),
        name = %info.name,
        version = %info.version,
        hash = %info.hash,
        reason = %reason,
        "mapping plugin rejected; the active plugin stays"
    );
    let source = path.display().to_string();
    if let Err(error) = registry
        .rejected(&info.name, &info.version, &info.hash, &source, &reason)
        .await
    {
        tracing::error!(%error, "cannot record the plugin rejection in keeper.db");
    }
}

/// The `.wasm` files of the folder, newest first (then by name, so the
/// order is stable). A missing folder has none.
fn candidates(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| watch::is_plugin_file(p) && p.is_file())
        .map(|p| {
            let modified = std::fs::metadata(&p)
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (modified, p)
        })
        .collect();
    files.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    files.into_iter().map(|(_, p)| p).collect()
}

/// The content hash of the file at `path`, if it can be read.
async fn file_hash(path: &Path) -> Option<String> {
    tokio::fs::read(path)
        .await
        .ok()
        .map(|bytes| crate::mapper::content_hash(&bytes))
}
