//! Plugins installed and activated from outside the folder: the sync API's
//! upload, activation of an earlier version, and rollback (the console's
//! Plugins page uses them).
//!
//! There is still one way for a plugin to become active: the
//! [`PluginManager`](super::PluginManager). An upload is written as a hidden
//! file in the plugins folder (the watch ignores hidden files), and the
//! manager checks that file exactly as it checks a dropped one; a plugin
//! that passes is renamed into place as `NAME.wasm` and made active, so the
//! folder keeps saying what runs (a restart picks the same plugin), and
//! one that fails is recorded as rejected with its reason, its file
//! removed. Activating an earlier version installs its kept copy
//! ([`Versions`], else the store's copy, kept by whichever host activated
//! it) the same way.
//!
//! A canary ([`super::canary`]) is checked the same way, but is not placed
//! in the folder: it is kept as a version and runs beside the active plugin
//! until it is promoted (then installed as above) or rolled back.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::canary::{Canaries, CanaryRecord, Share, ShareError};
use super::follow::{FollowStatus, NotFollowed};
use super::preview::Preview;
use super::versions::Versions;
use super::{Loader, PluginsError};
use crate::app::App;
use crate::mapper::PluginInfo;
use crate::registry::{Activation, PluginRecord, Registry};

/// The longest plugin name an upload may give.
pub const MAX_NAME_CHARS: usize = 64;

/// Why an upload, activation or preview did not happen. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "plugin name {0:?} cannot be used: give 1 to {MAX_NAME_CHARS} letters, digits, `-` or `_` (it becomes \
         the file NAME.wasm in the plugins folder; no dots, no path separators)"
    )]
    BadName(String),
    /// The conformance check refused it; the reason, as recorded.
    #[error("plugin rejected: {0}")]
    Rejected(String),
    #[error(
        "no plugin version {0} is kept on this host or in the store: only versions that were active can be \
         activated again; upload it instead"
    )]
    UnknownVersion(String),
    #[error("there is no earlier plugin version to roll back to")]
    NothingEarlier,
    #[error(transparent)]
    BadShare(#[from] ShareError),
    #[error(
        "a canary runs already ({name} {version}, {hash}): promote it with POST /plugins/versions/{hash}/activate, \
         or wait until it ends, before starting another"
    )]
    CanaryRunning {
        name: String,
        version: String,
        hash: String,
    },
    #[error("plugin version {0} is the active one: a canary is for a version that is not active yet")]
    CanaryOfActive(String),
    #[error("cannot write the plugins folder {dir}: {reason}")]
    Folder { dir: PathBuf, reason: String },
    #[error("the plugin manager has stopped (keeper is shutting down); try again once it runs")]
    Stopped,
    #[error(transparent)]
    Plugins(#[from] PluginsError),
    #[error("keeper.db: {0}")]
    Sql(#[from] sqlx::Error),
}

/// A plugin file name given by a client: letters, digits, `-` and `_`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginName(String);

impl PluginName {
    pub fn parse(name: &str) -> Result<PluginName, ControlError> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || !name.chars().all(allowed) {
            return Err(ControlError::BadName(name.to_owned()));
        }
        Ok(PluginName(name.to_owned()))
    }

    /// A file name for a plugin that has none of its own (the built-in
    /// one): its reported name with anything else replaced by `-`.
    fn from_plugin_name(name: &str) -> PluginName {
        let mut cleaned: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' })
            .take(MAX_NAME_CHARS)
            .collect();
        if cleaned.is_empty() {
            cleaned.push_str("plugin");
        }
        PluginName(cleaned)
    }

    fn file_name(&self) -> String {
        format!("{}.wasm", self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A plugin written as a hidden file in the plugins folder until it is
/// checked. Dropped without [`Staged::into_place`], the file is removed:
/// a refused upload leaves nothing behind.
pub struct Staged {
    path: PathBuf,
    placed: bool,
}

impl Staged {
    async fn write(dir: &Path, name: &PluginName, bytes: &[u8]) -> Result<Staged, ControlError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let staged = Staged {
            path: dir.join(format!(".{}.{unique}.upload", name.0)),
            placed: false,
        };
        let folder_error = |e: std::io::Error| ControlError::Folder {
            dir: dir.to_owned(),
            reason: e.to_string(),
        };
        tokio::fs::create_dir_all(dir).await.map_err(folder_error)?;
        tokio::fs::write(&staged.path, bytes).await.map_err(folder_error)?;
        Ok(staged)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the file to `target`, in the same folder (atomic: the watch
    /// never sees half a plugin).
    pub fn into_place(mut self, target: &Path) -> std::io::Result<()> {
        std::fs::rename(&self.path, target)?;
        self.placed = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.placed
            && let Err(error) = std::fs::remove_file(&self.path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), %error, "cannot remove a refused plugin upload");
        }
    }
}

/// What the manager is asked to do.
pub enum Request {
    /// Check `staged` and, if it passes, move it to `target` and make it
    /// active (`how`).
    Install {
        staged: Staged,
        target: PathBuf,
        how: Activation,
        reply: oneshot::Sender<Result<PluginInfo, ControlError>>,
    },
    /// Check `staged` and, if it passes, start it as a canary with `share`;
    /// `name` is the file it is installed as once promoted.
    Canary {
        staged: Staged,
        name: PluginName,
        share: Share,
        reply: oneshot::Sender<Result<CanaryRecord, ControlError>>,
    },
}

/// The handle the sync API holds on the plugin manager of its process.
#[derive(Clone)]
pub struct PluginControl {
    requests: mpsc::Sender<Request>,
    loader: Loader,
    dir: PathBuf,
    versions: Versions,
    registry: Registry,
    canaries: Canaries,
    follow_status: FollowStatus,
}

impl PluginControl {
    pub(super) fn new(
        requests: mpsc::Sender<Request>,
        loader: Loader,
        dir: PathBuf,
        versions: Versions,
        registry: Registry,
        canaries: Canaries,
        follow_status: FollowStatus,
    ) -> PluginControl {
        PluginControl {
            requests,
            loader,
            dir,
            versions,
            registry,
            canaries,
            follow_status,
        }
    }

    /// The store's active version this host does not run, and why
    /// (`/health`'s `plugin_not_followed`).
    pub fn not_followed(&self) -> Option<NotFollowed> {
        self.follow_status.not_followed()
    }

    /// The bytes of version `hash`: this host's kept copy, else the store's
    /// (any version that was active on any host of the store), if they
    /// hash to it.
    async fn kept_bytes(&self, hash: &str) -> Result<Vec<u8>, ControlError> {
        if let Some(bytes) = self.versions.bytes(hash).await {
            return Ok(bytes);
        }
        match self.registry.artifact(hash).await? {
            Some(bytes) if crate::mapper::content_hash(&bytes) == hash => Ok(bytes),
            _ => Err(ControlError::UnknownVersion(hash.to_owned())),
        }
    }

    /// Installs `bytes` as `NAME.wasm` if it passes the conformance check
    /// (see the module doc); returns the plugin now active.
    pub async fn upload(&self, name: &PluginName, bytes: &[u8]) -> Result<PluginInfo, ControlError> {
        let staged = Staged::write(&self.dir, name, bytes).await?;
        self.install(staged, self.dir.join(name.file_name()), Activation::Upload)
            .await
    }

    /// Makes the earlier version with `hash` active again, from its kept
    /// copy, under the file name it had (the built-in plugin under its own
    /// name). A canary's version (running or ended) is installed under the
    /// name it was given: this is how a canary is promoted by hand.
    pub async fn activate(&self, hash: &str) -> Result<PluginInfo, ControlError> {
        self.activate_as(hash, Activation::ApiActivation).await
    }

    async fn activate_as(&self, hash: &str, how: Activation) -> Result<PluginInfo, ControlError> {
        let (name, bytes) = self.kept_version(hash).await?;
        let staged = Staged::write(&self.dir, &name, &bytes).await?;
        self.install(staged, self.dir.join(name.file_name()), how).await
    }

    /// Starts the uploaded `bytes` as a canary with `share`, if it passes
    /// the conformance check; once promoted it is installed as `NAME.wasm`.
    pub async fn canary_upload(
        &self,
        name: &PluginName,
        bytes: &[u8],
        share: Share,
    ) -> Result<CanaryRecord, ControlError> {
        self.no_canary_running().await?;
        let staged = Staged::write(&self.dir, name, bytes).await?;
        self.canary(staged, name.clone(), share).await
    }

    /// Starts the kept version `hash` as a canary with `share`.
    pub async fn canary_version(&self, hash: &str, share: Share) -> Result<CanaryRecord, ControlError> {
        let (name, bytes) = self.kept_version(hash).await?;
        if self.registry.list().await?.active.is_some_and(|a| a.hash == hash) {
            return Err(ControlError::CanaryOfActive(hash.to_owned()));
        }
        self.no_canary_running().await?;
        let staged = Staged::write(&self.dir, &name, &bytes).await?;
        self.canary(staged, name, share).await
    }

    /// Refuses early when a canary runs (the manager checks again).
    async fn no_canary_running(&self) -> Result<(), ControlError> {
        match self.canaries.running().await? {
            Some(running) => Err(ControlError::CanaryRunning {
                name: running.name,
                version: running.version,
                hash: running.hash,
            }),
            None => Ok(()),
        }
    }

    /// The file name and bytes of the kept version `hash`: one that was
    /// active on a host of this store, or a canary.
    async fn kept_version(&self, hash: &str) -> Result<(PluginName, Vec<u8>), ControlError> {
        let unknown = || ControlError::UnknownVersion(hash.to_owned());
        let bytes = self.kept_bytes(hash).await?;
        let known = self.registry.list().await?;
        if let Some(record) = known.active.iter().chain(&known.history).find(|r| r.hash == hash) {
            return Ok((self.file_name_of(record), bytes));
        }
        let canary = self.canaries.of_version(hash).await?.ok_or_else(unknown)?;
        let name = PluginName::parse(&canary.file_name).unwrap_or_else(|_| PluginName::from_plugin_name(&canary.name));
        Ok((name, bytes))
    }

    /// Activates the version that was active before the current one.
    pub async fn rollback(&self) -> Result<PluginInfo, ControlError> {
        let known = self.registry.list().await?;
        let current = known.active.as_ref().map(|a| a.hash.as_str());
        let previous = known
            .history
            .iter()
            .find(|r| Some(r.hash.as_str()) != current)
            .ok_or(ControlError::NothingEarlier)?;
        self.activate_as(&previous.hash.clone(), Activation::Rollback).await
    }

    /// Makes the canary `hash` active: it reached its count.
    pub(super) async fn promote(&self, hash: &str) -> Result<PluginInfo, ControlError> {
        self.activate_as(hash, Activation::CanaryPromotion).await
    }

    /// What an uploaded plugin would change on the last `last` synced items.
    /// It is checked like an upload, but nothing is installed or recorded.
    pub async fn preview_upload(&self, app: &App, bytes: &[u8], last: u32) -> Result<Preview, ControlError> {
        let name = PluginName("preview".to_owned());
        let staged = Staged::write(&self.dir, &name, bytes).await?;
        let verdict = self.loader.check_file(staged.path()).await?;
        drop(staged);
        let candidate = verdict
            .accepted()
            .map_err(|rejection| ControlError::Rejected(rejection.to_string()))?;
        Ok(super::preview::preview(app, &self.loader, candidate, last).await?)
    }

    /// What the kept version `hash` would change on the last `last` synced
    /// items.
    pub async fn preview_version(&self, app: &App, hash: &str, last: u32) -> Result<Preview, ControlError> {
        let bytes = self.kept_bytes(hash).await?;
        let candidate = self.loader.load_bytes(bytes).await?;
        Ok(super::preview::preview(app, &self.loader, candidate, last).await?)
    }

    /// Hands the staged plugin to the manager and waits for its verdict.
    async fn install(&self, staged: Staged, target: PathBuf, how: Activation) -> Result<PluginInfo, ControlError> {
        self.ask(|reply| Request::Install {
            staged,
            target,
            how,
            reply,
        })
        .await
    }

    /// Hands the staged canary to the manager and waits for its verdict.
    async fn canary(&self, staged: Staged, name: PluginName, share: Share) -> Result<CanaryRecord, ControlError> {
        self.ask(|reply| Request::Canary {
            staged,
            name,
            share,
            reply,
        })
        .await
    }

    /// Sends the manager the request `make` builds around a reply channel
    /// and waits for its answer; `Stopped` when the manager is gone.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ControlError>>) -> Request,
    ) -> Result<T, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(make(reply))
            .await
            .map_err(|_| ControlError::Stopped)?;
        answer.await.map_err(|_| ControlError::Stopped)?
    }

    /// The file an earlier version goes back to: the one it came from, when
    /// that was in the plugins folder, else one named after the plugin.
    fn file_name_of(&self, record: &PluginRecord) -> PluginName {
        let source = Path::new(&record.source);
        let stem = source
            .parent()
            .filter(|parent| *parent == self.dir)
            .and(source.file_stem())
            .and_then(|s| s.to_str());
        match stem.map(PluginName::parse) {
            Some(Ok(name)) => name,
            _ => PluginName::from_plugin_name(&record.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_file_stems() {
        for good in ["mapper", "my_mapper-2", "A", &"x".repeat(MAX_NAME_CHARS)] {
            assert!(PluginName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a/b",
            "a\\b",
            "..",
            ".hidden",
            "mapper.wasm",
            "a b",
            "é",
            &"x".repeat(MAX_NAME_CHARS + 1),
        ] {
            assert!(matches!(PluginName::parse(bad), Err(ControlError::BadName(_))), "{bad}");
        }
        assert_eq!(
            PluginName::from_plugin_name("keeper default.mapper").file_name(),
            "keeper-default-mapper.wasm"
        );
    }
}
