//! Every plugin version that became active, kept by its content hash in
//! `plugin-versions/` beside keeper.db, so that an earlier version can be
//! previewed and activated again after its file in the plugins folder was
//! replaced (an upload under the same name overwrites it). The built-in
//! plugin is in the binary and needs no copy.

use std::path::{Path, PathBuf};

use crate::mapper::{DEFAULT_PLUGIN, content_hash};

#[derive(Clone)]
pub struct Versions {
    dir: PathBuf,
}

impl Versions {
    pub fn new(dir: PathBuf) -> Versions {
        Versions { dir }
    }

    /// Keeps a copy of the plugin in `file`, unless one is kept already.
    /// The copy is taken only when the file still holds `hash` (it may have
    /// been replaced since it was checked). A failure is logged: the plugin
    /// stays active, it can only not be brought back later.
    pub async fn keep(&self, hash: &str, file: &Path) {
        let path = self.path(hash);
        if path.is_file() || hash == builtin_hash() {
            return;
        }
        let kept = async {
            let bytes = tokio::fs::read(file).await?;
            if content_hash(&bytes) != hash {
                return Ok(false);
            }
            tokio::fs::create_dir_all(&self.dir).await?;
            let partial = self.dir.join(format!(".{hash}.partial"));
            tokio::fs::write(&partial, &bytes).await?;
            tokio::fs::rename(&partial, &path).await?;
            Ok::<bool, std::io::Error>(true)
        };
        match kept.await {
            Ok(true) => tracing::debug!(hash, path = %path.display(), "plugin version kept"),
            Ok(false) => tracing::info!(
                hash,
                file = %file.display(),
                "the plugin file changed since it was checked; this version is not kept"
            ),
            Err(error) => tracing::warn!(
                hash,
                dir = %self.dir.display(),
                %error,
                "cannot keep a copy of the active plugin; it cannot be activated again once its file is replaced"
            ),
        }
    }

    /// The bytes of the version with `hash`, if it was kept (and is intact).
    pub async fn bytes(&self, hash: &str) -> Option<Vec<u8>> {
        if hash == builtin_hash() {
            return Some(DEFAULT_PLUGIN.to_vec());
        }
        if !is_hash(hash) {
            return None;
        }
        let bytes = tokio::fs::read(self.path(hash)).await.ok()?;
        (content_hash(&bytes) == hash).then_some(bytes)
    }

    fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(format!("{hash}.wasm"))
    }
}

/// Whether `text` is a SHA-256 in hex, as content hashes are: nothing else
/// may become a file name here.
pub fn is_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The content hash of the built-in plugin.
fn builtin_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| content_hash(DEFAULT_PLUGIN))
}
