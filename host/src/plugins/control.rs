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
//! ([`Versions`]) the same way.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::preview::Preview;
use super::versions::Versions;
use super::{Loader, PluginsError};
use crate::app::App;
use crate::mapper::PluginInfo;
use crate::registry::{PluginRecord, Registry};

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
        "no plugin version {0} is kept on this host: only versions that were active here can be activated again; \
         upload it instead"
    )]
    UnknownVersion(String),
    #[error("there is no earlier plugin version to roll back to")]
    NothingEarlier,
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

/// What the manager is asked to do: check `staged` and, if it passes, move
/// it to `target` and make it active.
pub struct Install {
    pub staged: Staged,
    pub target: PathBuf,
    pub reply: oneshot::Sender<Result<PluginInfo, ControlError>>,
}

/// The handle the sync API holds on the plugin manager of its process.
#[derive(Clone)]
pub struct PluginControl {
    requests: mpsc::Sender<Install>,
    loader: Loader,
    dir: PathBuf,
    versions: Versions,
    registry: Registry,
}

impl PluginControl {
    pub(super) fn new(
        requests: mpsc::Sender<Install>,
        loader: Loader,
        dir: PathBuf,
        versions: Versions,
        registry: Registry,
    ) -> PluginControl {
        PluginControl {
            requests,
            loader,
            dir,
            versions,
            registry,
        }
    }

    /// Installs `bytes` as `NAME.wasm` if it passes the conformance check
    /// (see the module doc); returns the plugin now active.
    pub async fn upload(&self, name: &PluginName, bytes: &[u8]) -> Result<PluginInfo, ControlError> {
        let staged = Staged::write(&self.dir, name, bytes).await?;
        self.install(staged, self.dir.join(name.file_name())).await
    }

    /// Makes the earlier version with `hash` active again, from its kept
    /// copy, under the file name it had (the built-in plugin under its own
    /// name).
    pub async fn activate(&self, hash: &str) -> Result<PluginInfo, ControlError> {
        let bytes = self
            .versions
            .bytes(hash)
            .await
            .ok_or_else(|| ControlError::UnknownVersion(hash.to_owned()))?;
        let known = self.registry.list().await?;
        let record = known
            .active
            .iter()
            .chain(&known.history)
            .find(|r| r.hash == hash)
            .ok_or_else(|| ControlError::UnknownVersion(hash.to_owned()))?;
        let name = self.file_name_of(record);
        let staged = Staged::write(&self.dir, &name, &bytes).await?;
        self.install(staged, self.dir.join(name.file_name())).await
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
        self.activate(&previous.hash.clone()).await
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
        let bytes = self
            .versions
            .bytes(hash)
            .await
            .ok_or_else(|| ControlError::UnknownVersion(hash.to_owned()))?;
        let candidate = self.loader.load_bytes(bytes).await?;
        Ok(super::preview::preview(app, &self.loader, candidate, last).await?)
    }

    /// Hands the staged plugin to the manager and waits for its verdict.
    async fn install(&self, staged: Staged, target: PathBuf) -> Result<PluginInfo, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Install { staged, target, reply })
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
