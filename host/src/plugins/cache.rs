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
//! HMAC-SHA256 of the artifact under a random key that lives only in
//! keeper.db (`Store::plugin_cache_key`), never in the cache folder and never
//! sent anywhere. A file whose tag does not verify (tampered, truncated, or
//! signed by another keeper.db or by the old scheme, a plain SHA-256 over the
//! public source id) is refused with a warning, deleted, and the plugin
//! compiled afresh.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
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
    key: Arc<[u8]>,
}

impl Cache {
    /// `key`: the HMAC key, from keeper.db.
    pub fn new(dir: PathBuf, key: &[u8]) -> Cache {
        Cache { dir, key: key.into() }
    }

    /// Loads a plugin from its `.wasm` bytes, through the cache. Blocking.
    /// Returns the plugin and whether it came from the cache.
    pub fn load(&self, runtime: &Runtime, bytes: &[u8]) -> Result<(Plugin, bool), PluginError> {
        let hash = content_hash(bytes);
        let path = self.path_for(runtime.engine(), &hash);
        if let Some(component) = self.read(runtime.engine(), &path) {
            return Ok((runtime.link(&component, hash)?, true));
        }
        // Another keeper on this keeper.db (`keeper plugin check` beside
        // `keeper run`) may be compiling this very plugin: wait for it and
        // take what it wrote, rather than compile it twice at once.
        let _lock = self.compile_lock();
        if let Some(component) = self.read(runtime.engine(), &path) {
            return Ok((runtime.link(&component, hash)?, true));
        }
        let component = runtime.compile(bytes)?;
        self.write(&path, &component);
        Ok((runtime.link(&component, hash)?, false))
    }

    /// An exclusive lock on the cache folder's `compile.lock`, held while
    /// compiling, so keeper processes sharing this cache compile one at a
    /// time. Without it (a read-only folder) compiling goes on unlocked:
    /// the lock saves time and memory, correctness never depends on it.
    fn compile_lock(&self) -> Option<std::fs::File> {
        let locked = std::fs::create_dir_all(&self.dir)
            .and_then(|()| std::fs::File::create(self.dir.join("compile.lock")))
            .and_then(|file| file.lock().map(|()| file));
        match locked {
            Ok(file) => Some(file),
            Err(error) => {
                tracing::debug!(dir = %self.dir.display(), %error, "compiling without the cache's lock");
                None
            }
        }
    }

    fn path_for(&self, engine: &Engine, hash: &str) -> PathBuf {
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        self.dir.join(format!("{hash}-{:016x}.cwasm", hasher.finish()))
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
    }

    fn tag(&self, artifact: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.mac();
        mac.update(artifact);
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is this key's tag of `artifact` (compared in constant time).
    fn verifies(&self, tag: &[u8], artifact: &[u8]) -> bool {
        let mut mac = self.mac();
        mac.update(artifact);
        mac.verify_slice(tag).is_ok()
    }

    /// The cached component, if there is one this host wrote. A file that
    /// is there but does not verify is deleted (and rewritten by `write`).
    fn read(&self, engine: &Engine, path: &Path) -> Option<Component> {
        let file = std::fs::read(path).ok()?;
        let verified = file
            .split_at_checked(TAG_LEN)
            .filter(|(tag, artifact)| self.verifies(tag, artifact));
        let Some((_, artifact)) = verified else {
            tracing::warn!(
                path = %path.display(),
                "refusing a compiled plugin whose tag does not verify (tampered, or not written by this \
                 keeper.db); deleting it and compiling the plugin afresh"
            );
            discard(path);
            return None;
        };
        if Engine::detect_precompiled(artifact) != Some(Precompiled::Component) {
            discard(path);
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

/// Deletes a cached file that must not be used; a failure is only logged
/// (the file is overwritten by the next `write` anyway).
fn discard(path: &Path) {
    if let Err(error) = std::fs::remove_file(path) {
        tracing::warn!(path = %path.display(), %error, "cannot delete a refused compiled plugin");
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
        let cache = Cache::new(dir.path().join("plugin-cache"), b"key-a");
        let (first, cached) = cache.load(&runtime, DEFAULT_PLUGIN).expect("load");
        assert!(!cached);
        let (second, cached) = cache.load(&runtime, DEFAULT_PLUGIN).expect("load");
        assert!(cached);
        assert_eq!(first.info(), second.info());

        // Another keeper.db (another key) does not trust these files.
        let stranger = Cache::new(dir.path().join("plugin-cache"), b"key-b");
        let (_, cached) = stranger.load(&runtime, DEFAULT_PLUGIN).expect("load");
        assert!(!cached);
    }

    /// The one compiled plugin of `dir` (beside the compile lock).
    fn only_file(dir: &Path) -> PathBuf {
        let files: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("cache dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        files[0].clone()
    }

    #[test]
    fn forged_files_are_refused_deleted_and_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = dir.path().join("plugin-cache");
        let runtime = Runtime::new(Limits::default()).expect("runtime");
        let cache = Cache::new(folder.clone(), b"the key in keeper.db");
        cache.load(&runtime, DEFAULT_PLUGIN).expect("load");
        let path = only_file(&folder);
        let good = std::fs::read(&path).expect("read");
        assert!(good.len() > TAG_LEN);
        let artifact = &good[TAG_LEN..];

        // The old scheme: SHA-256 over the (public) source id and the artifact.
        use sha2::Digest;
        let mut old = Sha256::new();
        old.update(b"0123456789abcdef0123456789abcdef");
        old.update(artifact);
        let old_tag: [u8; TAG_LEN] = old.finalize().into();
        // A tampered artifact under the right tag; the tag alone; nothing.
        let mut tampered = good.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 0x01;
        let forgeries: [(&str, Vec<u8>); 4] = [
            ("old public scheme", [old_tag.as_slice(), artifact].concat()),
            ("tampered byte", tampered),
            ("truncated", good[..TAG_LEN].to_vec()),
            ("empty", Vec::new()),
        ];
        for (what, forged) in forgeries {
            std::fs::write(&path, &forged).expect("forge");
            assert!(cache.read(runtime.engine(), &path).is_none(), "{what}: loaded");
            assert!(!path.exists(), "{what}: not deleted");
            std::fs::write(&path, &forged).expect("forge");
            let (plugin, cached) = cache.load(&runtime, DEFAULT_PLUGIN).expect("load");
            assert!(!cached, "{what}: came from the cache");
            assert_eq!(plugin.info().name, "keeper-default-mapper", "{what}");
            assert!(
                cache.read(runtime.engine(), &path).is_some(),
                "{what}: not rewritten with a good tag"
            );
        }
        let (_, cached) = cache.load(&runtime, DEFAULT_PLUGIN).expect("load");
        assert!(cached, "the recompiled file is trusted again");
    }
}
