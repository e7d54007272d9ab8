//! Compiled plugins kept on disk, so a restart does not recompile them.
//!
//! Compiling a component takes a tenth of a second (seconds in a debug
//! build); deserializing a precompiled one takes well under a millisecond.
//! A precompiled artifact is only valid for an engine of the same
//! configuration, so the file name carries both the plugin's content hash
//! and the engine's compatibility hash.
//!
//! Deserializing is `unsafe` in wasmtime: a crafted file is native code. So
//! the cache only loads files this host wrote: each file starts with a tag,
//! SHA-256 over a secret (this keeper.db's source id, which lives in
//! keeper.db, not in the cache folder) and the artifact. A file without the
//! right tag is ignored and the plugin compiled afresh.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, Precompiled};

use crate::mapper::{Plugin, PluginError, Runtime, content_hash};

const TAG_LEN: usize = 32;

/// Compiled plugins kept; the least recently written go first. Every plugin
/// ever dropped into the folder is compiled once (rejected ones too), so
/// without a bound the folder would only grow.
const KEEP: usize = 16;

#[derive(Clone)]
pub struct Cache {
    dir: PathBuf,
    secret: String,
}

impl Cache {
    pub fn new(dir: PathBuf, secret: &str) -> Cache {
        Cache {
            dir,
            secret: secret.to_owned(),
        }
    }

    /// Loads a plugin from its `.wasm` bytes, through the cache. Blocking.
    /// Returns the plugin and whether it came from the cache.
    pub fn load(&self, runtime: &Runtime, bytes: &[u8]) -> Result<(Plugin, bool), PluginError> {
        let hash = content_hash(bytes);
        let path = self.path_for(runtime.engine(), &hash);
        if let Some(component) = self.read(runtime.engine(), &path) {
            return Ok((runtime.link(&component, hash)?, true));
        }
        let component = runtime.compile(bytes)?;
        self.write(&path, &component);
        Ok((runtime.link(&component, hash)?, false))
    }

    fn path_for(&self, engine: &Engine, hash: &str) -> PathBuf {
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        self.dir.join(format!("{hash}-{:016x}.cwasm", hasher.finish()))
    }

    fn tag(&self, artifact: &[u8]) -> [u8; TAG_LEN] {
        let mut digest = Sha256::new();
        digest.update(self.secret.as_bytes());
        digest.update(artifact);
        digest.finalize().into()
    }

    /// The cached component, if there is one this host wrote.
    fn read(&self, engine: &Engine, path: &Path) -> Option<Component> {
        let file = std::fs::read(path).ok()?;
        let (tag, artifact) = file.split_at_checked(TAG_LEN)?;
        if tag != self.tag(artifact) {
            tracing::warn!(path = %path.display(), "ignoring a cached plugin this host did not write");
            return None;
        }
        if Engine::detect_precompiled(artifact) != Some(Precompiled::Component) {
            return None;
        }
        // SAFETY: the tag proves this host serialized these bytes with an
        // engine of the same configuration (the file name); wasmtime checks
        // the version and configuration again and fails cleanly on mismatch.
        match unsafe { Component::deserialize(engine, artifact) } {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::warn!(path = %path.display(), error = %format!("{error:#}"), "cached plugin unusable; recompiling");
                None
            }
        }
    }

    /// Stores a compiled component; a failure only costs a recompilation
    /// next time, so it is logged, not returned.
    fn write(&self, path: &Path, component: &Component) {
        let result = (|| -> Result<(), String> {
            let artifact = component.serialize().map_err(|e| format!("{e:#}"))?;
            std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
            let mut file = Vec::with_capacity(TAG_LEN + artifact.len());
            file.extend_from_slice(&self.tag(&artifact));
            file.extend_from_slice(&artifact);
            // Written aside and renamed, so a reader never sees half a file.
            let temp = path.with_extension(format!("tmp-{}-{:08x}", std::process::id(), rand::random::<u32>()));
            std::fs::write(&temp, &file).map_err(|e| e.to_string())?;
            std::fs::rename(&temp, path).map_err(|e| {
                let _ = std::fs::remove_file(&temp);
                e.to_string()
            })
        })();
        if let Err(error) = result {
            tracing::warn!(dir = %self.dir.display(), %error, "cannot cache the compiled plugin; it will be compiled again next start");
        }
        self.prune();
    }

    /// Deletes all but the [`KEEP`] newest compiled plugins.
    fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
            .filter_map(|p| Some((std::fs::metadata(&p).and_then(|m| m.modified()).ok()?, p)))
            .collect();
        files.sort_by_key(|f| std::cmp::Reverse(f.0));
        for (_, old) in files.into_iter().skip(KEEP) {
            if let Err(error) = std::fs::remove_file(&old) {
                tracing::debug!(path = %old.display(), %error, "cannot prune a cached plugin");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapper::{DEFAULT_PLUGIN, Limits};

    #[test]
    fn second_load_comes_from_the_cache_and_foreign_files_are_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runtime = Runtime::new(Limits::default()).expect("runtime");
        let cache = Cache::new(dir.path().join("plugin-cache"), "secret-a");
        let (first, cached) = cache.load(&runtime, DEFAULT_PLUGIN).expect("load");
        assert!(!cached);
        let (second, cached) = cache.load(&runtime, DEFAULT_PLUGIN).expect("load");
        assert!(cached);
        assert_eq!(first.info(), second.info());

        // Another keeper.db (another secret) does not trust these files.
        let stranger = Cache::new(dir.path().join("plugin-cache"), "secret-b");
        let (_, cached) = stranger.load(&runtime, DEFAULT_PLUGIN).expect("load");
        assert!(!cached);
    }
}
