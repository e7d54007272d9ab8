//! Filesystem events on the plugins folder, reduced to "this `.wasm` path
//! may have changed", debounced.
//!
//! The folder is watched, not the files: a watch on a file goes silent after
//! the first rename. A path is considered once it is quiet: `cp` and editors
//! write in pieces, and only a closed-after-write file (`Close(Write)`) or a
//! rename into place (`Name(To|Both)`) says the writer is done; a removal or
//! a rename away says the plugin is gone. Other events on a path already
//! waiting (more data written) push its deadline back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a path must be quiet before it is looked at.
pub const DEBOUNCE: Duration = Duration::from_millis(400);

/// One event on a `.wasm` path.
#[derive(Debug)]
struct Touched {
    path: PathBuf,
    /// The writer is done (or the file is gone): the path is worth a look.
    settles: bool,
}

/// Whether `path` names a plugin file.
pub fn is_plugin_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("wasm"))
}

fn settles(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(_))
            | EventKind::Remove(_)
    )
}

/// Watches one folder and hands out the `.wasm` paths that settled.
pub struct DirWatch {
    // Kept alive for as long as events are wanted.
    _watcher: RecommendedWatcher,
    events: mpsc::UnboundedReceiver<Touched>,
    waiting: HashMap<PathBuf, Instant>,
}

impl DirWatch {
    pub fn new(dir: &Path) -> notify::Result<DirWatch> {
        let (tx, events) = mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| match event {
            Ok(event) => {
                let settles = settles(&event.kind);
                for path in event.paths.into_iter().filter(|p| is_plugin_file(p)) {
                    let _ = tx.send(Touched { path, settles });
                }
            }
            Err(error) => tracing::warn!(%error, "plugin folder watch error"),
        })?;
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
        Ok(DirWatch {
            _watcher: watcher,
            events,
            waiting: HashMap::new(),
        })
    }

    /// The next batch of paths that have been quiet for [`DEBOUNCE`]. `None`
    /// when the watcher is gone.
    pub async fn settled(&mut self) -> Option<Vec<PathBuf>> {
        loop {
            let next = self.waiting.values().min().copied();
            tokio::select! {
                touched = self.events.recv() => {
                    let touched = touched?;
                    if touched.settles || self.waiting.contains_key(&touched.path) {
                        self.waiting.insert(touched.path, Instant::now() + DEBOUNCE);
                    }
                }
                _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                    let now = Instant::now();
                    let mut due: Vec<PathBuf> = self.waiting.extract_if(|_, at| *at <= now).map(|(p, _)| p).collect();
                    if !due.is_empty() {
                        due.sort();
                        return Some(due);
                    }
                }
            }
        }
    }
}
