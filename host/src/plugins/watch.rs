//! Filesystem events on the plugins folder, reduced to "this `.wasm` path is
//! worth a look now".
//!
//! The folder is watched, not the files: a watch on a file goes silent after
//! the first rename. Each operating system tells a different story about the
//! same copy: Linux's inotify ends a `cp` with `Close(Write)`, macOS's
//! FSEvents sends coalesced `Create(File)`/`Modify(Data)`/`Modify(Name(Any))`,
//! Windows' ReadDirectoryChangesW sends `Create(Any)`, a run of `Modify(Any)`
//! and `Name(From)`/`Name(To)` pairs, and a bind mount or network share may
//! send nothing at all. So no event kind is trusted to mean "the writer is
//! done". The rule, the same everywhere ([`Settle`]):
//!
//! 1. any create, modify, rename or remove event on a `.wasm` path (re)starts
//!    that path's quiet period of [`SETTLE`]; reads do not (our own check
//!    reads the file);
//! 2. a path quiet for that long is looked at: if it is gone, it is passed on
//!    (the manager falls back if it was the active plugin); if it does not
//!    yet parse as a complete WebAssembly binary ([`completeness`]) it waits
//!    for more events instead of being rejected half-copied;
//! 3. with `KEEPER_PLUGINS_POLL=SECS` the events come from a scan of the
//!    folder every SECS seconds (notify's `PollWatcher`, comparing contents,
//!    not only modification times, which some file systems keep to the
//!    second), for folders that send no events.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, PollWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a path must be quiet before it is looked at.
pub const SETTLE: Duration = Duration::from_millis(400);

/// Whether `path` names a plugin file: `*.wasm`, not hidden (editors and
/// copy tools keep their work files under dot names).
pub fn is_plugin_file(path: &Path) -> bool {
    let visible = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| !n.starts_with('.'));
    visible && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("wasm"))
}

/// Whether an event of this kind may mean the file's content changed.
fn counts(kind: &EventKind) -> bool {
    match kind {
        // Opening and reading (our own check reads the file) change nothing;
        // a closed-after-write file did change.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
        // Unknown to the backend: better a look too many than a change missed.
        EventKind::Any | EventKind::Other => true,
    }
}

/// The settle rule as a state machine fed with events and the time, so the
/// event sequences of every OS can be tested without that OS.
#[derive(Debug)]
pub struct Settle {
    quiet: Duration,
    waiting: HashMap<PathBuf, Instant>,
}

/// What an event asks of the watcher besides the paths it touched.
#[derive(Debug, PartialEq, Eq)]
pub enum Fed {
    Ok,
    /// The backend lost events (FSEvents' `MustScanSubDirs`, Windows'
    /// overflowing buffer): every plugin file in the folder must be touched.
    Rescan,
}

impl Settle {
    pub fn new(quiet: Duration) -> Settle {
        Settle {
            quiet,
            waiting: HashMap::new(),
        }
    }

    /// Feeds one event received at `now`.
    pub fn event(&mut self, event: &Event, now: Instant) -> Fed {
        if event.need_rescan() {
            return Fed::Rescan;
        }
        if counts(&event.kind) {
            for path in event.paths.iter().filter(|p| is_plugin_file(p)) {
                self.touch(path.clone(), now);
            }
        }
        Fed::Ok
    }

    /// `path` changed at `now`: it is due once quiet until `now` + the quiet
    /// period.
    pub fn touch(&mut self, path: PathBuf, now: Instant) {
        self.waiting.insert(path, now + self.quiet);
    }

    /// When the next path falls due, if any waits.
    pub fn deadline(&self) -> Option<Instant> {
        self.waiting.values().min().copied()
    }

    /// The paths quiet since their deadline, sorted; they wait no more.
    pub fn due(&mut self, now: Instant) -> Vec<PathBuf> {
        let mut due: Vec<PathBuf> = self.waiting.extract_if(|_, at| *at <= now).map(|(p, _)| p).collect();
        due.sort();
        due
    }
}

/// How much of a WebAssembly binary (module or component) a file holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Completeness {
    /// The header and every section are there, up to the last byte.
    Complete,
    /// It starts like WebAssembly but ends inside the header or a section:
    /// still being written.
    Truncated,
    /// Not WebAssembly at all: the check will say so.
    NotWasm,
}

/// Reads the binary's framing only: the 8-byte header (`\0asm`, version and
/// layer), then sections of one id byte, a LEB128 size and that many bytes.
/// Both core modules and components are framed like this, so a file cut
/// anywhere but at a section boundary is told apart from a finished one
/// without compiling it.
pub fn completeness(bytes: &[u8]) -> Completeness {
    const MAGIC: &[u8] = b"\0asm";
    const HEADER: usize = 8;
    let head = &bytes[..bytes.len().min(MAGIC.len())];
    if !MAGIC.starts_with(head) {
        return Completeness::NotWasm;
    }
    let Some(mut rest) = bytes.get(HEADER..) else {
        return Completeness::Truncated;
    };
    while let Some((_id, after_id)) = rest.split_first() {
        let mut size: u64 = 0;
        let mut used = 0;
        loop {
            let Some(byte) = after_id.get(used) else {
                return Completeness::Truncated;
            };
            size |= u64::from(byte & 0x7f) << (7 * used);
            used += 1;
            if byte & 0x80 == 0 {
                break;
            }
            if used == 5 {
                // A u32 takes at most five LEB128 bytes.
                return Completeness::NotWasm;
            }
        }
        let body = &after_id[used..];
        let Some(next) = usize::try_from(size).ok().and_then(|s| body.get(s..)) else {
            return Completeness::Truncated;
        };
        rest = next;
    }
    Completeness::Complete
}

/// Watches one folder and hands out the `.wasm` paths that settled.
pub struct DirWatch {
    // Kept alive for as long as events are wanted, never used otherwise
    // (the Mutex only makes it `Sync`, as the manager's future must be).
    _watcher: std::sync::Mutex<Box<dyn Watcher + Send>>,
    dir: PathBuf,
    events: mpsc::UnboundedReceiver<Event>,
    settle: Settle,
    /// Paths that fell due and are being looked at, then those that passed:
    /// kept here, not in [`DirWatch::settled`]'s future, because the plugin
    /// manager waits on that future in a `select!` and drops it whenever an
    /// API request comes first. A path taken out of `settle` and held only
    /// by the dropped future would be lost: a dropped file never checked.
    due: VecDeque<PathBuf>,
    ready: Vec<PathBuf>,
}

impl DirWatch {
    /// Watches `dir` with the OS's own events, or by scanning it every
    /// `poll` when given.
    pub fn new(dir: &Path, poll: Option<Duration>) -> notify::Result<DirWatch> {
        let (tx, events) = mpsc::unbounded_channel();
        let handler = move |event: notify::Result<Event>| match event {
            Ok(event) => {
                let _ = tx.send(event);
            }
            Err(error) => tracing::warn!(%error, "plugin folder watch error"),
        };
        let mut watcher: Box<dyn Watcher + Send> = match poll {
            Some(every) => Box::new(PollWatcher::new(
                handler,
                notify::Config::default()
                    .with_poll_interval(every)
                    .with_compare_contents(true),
            )?),
            None => Box::new(notify::recommended_watcher(handler)?),
        };
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
        Ok(DirWatch {
            _watcher: std::sync::Mutex::new(watcher),
            dir: dir.to_owned(),
            events,
            settle: Settle::new(SETTLE),
            due: VecDeque::new(),
            ready: Vec::new(),
        })
    }

    /// The next batch of paths that have been quiet for [`SETTLE`] and hold
    /// a complete binary or are gone. `None` when the watcher is gone.
    ///
    /// Cancel-safe: a caller may drop the future at any await and call again
    /// without losing a path (see the `due` and `ready` fields).
    pub async fn settled(&mut self) -> Option<Vec<PathBuf>> {
        loop {
            while let Some(path) = self.due.front() {
                // The only await between taking paths out of `settle` and
                // returning them; nothing has moved yet if it is dropped here.
                let complete = complete_or_gone(path).await;
                if let Some(path) = self.due.pop_front()
                    && complete
                {
                    self.ready.push(path);
                }
            }
            if !self.ready.is_empty() {
                return Some(std::mem::take(&mut self.ready));
            }
            let next = self.settle.deadline();
            tokio::select! {
                event = self.events.recv() => {
                    let event = self.in_folder(event?);
                    if self.settle.event(&event, Instant::now()) == Fed::Rescan {
                        tracing::info!(dir = %self.dir.display(), "plugin folder events were lost; looking at every plugin file");
                        for path in super::candidates(&self.dir) {
                            self.settle.touch(path, Instant::now());
                        }
                    }
                }
                _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                    self.due.extend(self.settle.due(Instant::now()));
                }
            }
        }
    }

    /// The event with its paths spelled as `dir/NAME`: FSEvents reports
    /// resolved paths (`/private/var/...` for `/var/...`), and the manager
    /// compares them with the paths it listed itself.
    fn in_folder(&self, mut event: Event) -> Event {
        for path in &mut event.paths {
            if let Some(name) = path.file_name() {
                *path = self.dir.join(name);
            }
        }
        event
    }
}

/// Whether a settled path is worth the check: gone (the manager handles
/// that), or a complete binary, or not WebAssembly at all (the check says
/// why). A truncated file is still being written: it waits (logged).
pub async fn complete_or_gone(path: &Path) -> bool {
    let bytes = match tokio::fs::metadata(path).await {
        // Oversized or unreadable: the check refuses it with the reason.
        Ok(meta) if meta.len() > super::MAX_PLUGIN_FILE => return true,
        Ok(_) => match tokio::fs::read(path).await {
            Ok(bytes) => bytes,
            Err(_) => return true,
        },
        Err(_) => return true,
    };
    match completeness(&bytes) {
        Completeness::Complete | Completeness::NotWasm => true,
        Completeness::Truncated => {
            tracing::info!(
                path = %path.display(),
                bytes = bytes.len(),
                "plugin file is not complete yet; waiting for the rest of it"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, DataChange, MetadataKind, ModifyKind, RemoveKind, RenameMode};

    use super::*;

    const DIR: &str = "/plugins";

    fn path(name: &str) -> PathBuf {
        Path::new(DIR).join(name)
    }

    fn ev(kind: EventKind, name: &str) -> Event {
        Event::new(kind).add_path(path(name))
    }

    /// Feeds `(milliseconds, event)` pairs and returns, for each of
    /// `checks` (milliseconds), the paths due then.
    fn run(events: &[(u64, Event)], checks: &[u64]) -> Vec<Vec<PathBuf>> {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut settle = Settle::new(SETTLE);
        let mut timeline: Vec<(u64, Option<&Event>)> = events.iter().map(|(t, e)| (*t, Some(e))).collect();
        timeline.extend(checks.iter().map(|t| (*t, None)));
        // Events before checks at the same instant.
        timeline.sort_by_key(|(t, e)| (*t, e.is_none()));
        let mut seen = Vec::new();
        for (t, event) in timeline {
            match event {
                Some(event) => assert_eq!(settle.event(event, at(t)), Fed::Ok),
                None => seen.push(settle.due(at(t))),
            }
        }
        seen
    }

    fn paths(names: &[&str]) -> Vec<PathBuf> {
        names.iter().map(|n| path(n)).collect()
    }

    #[test]
    fn fsevents_cp_settles_after_the_last_write() {
        // FSEvents coalesces flags per callback; notify turns one with
        // ItemCreated|ItemModified|IsFile into these two, and a large copy
        // gets more callbacks with ItemModified.
        let events = [
            (0, ev(EventKind::Create(CreateKind::File), "p.wasm")),
            (
                0,
                ev(EventKind::Modify(ModifyKind::Data(DataChange::Content)), "p.wasm"),
            ),
            (
                0,
                ev(
                    EventKind::Modify(ModifyKind::Metadata(MetadataKind::Extended)),
                    "p.wasm",
                ),
            ),
            (
                300,
                ev(EventKind::Modify(ModifyKind::Data(DataChange::Content)), "p.wasm"),
            ),
        ];
        let got = run(&events, &[450, 699, 700, 2000]);
        assert_eq!(got, vec![vec![], vec![], paths(&["p.wasm"]), vec![]]);
    }

    #[test]
    fn fsevents_editor_save_and_rename_settle_both_names() {
        // Write aside then rename over: FSEvents cannot tell the two sides of
        // a rename apart and reports ItemRenamed (Name(Any)) on each path;
        // the temporary file is not a plugin name and is ignored.
        let save = [
            (0, ev(EventKind::Create(CreateKind::File), "p.wasm.tmp")),
            (
                0,
                ev(EventKind::Modify(ModifyKind::Data(DataChange::Content)), "p.wasm.tmp"),
            ),
            (
                50,
                ev(EventKind::Modify(ModifyKind::Name(RenameMode::Any)), "p.wasm.tmp"),
            ),
            (50, ev(EventKind::Modify(ModifyKind::Name(RenameMode::Any)), "p.wasm")),
        ];
        assert_eq!(run(&save, &[449, 450]), vec![vec![], paths(&["p.wasm"])]);
        // A rename in the folder: both names are looked at (the old one is
        // gone, the new one is a plugin).
        let rename = [
            (0, ev(EventKind::Modify(ModifyKind::Name(RenameMode::Any)), "old.wasm")),
            (0, ev(EventKind::Modify(ModifyKind::Name(RenameMode::Any)), "new.wasm")),
        ];
        assert_eq!(run(&rename, &[400]), vec![paths(&["new.wasm", "old.wasm"])]);
        // Removed and created again within one coalesced callback: one look,
        // which finds the file there.
        let both = [
            (0, ev(EventKind::Create(CreateKind::File), "p.wasm")),
            (0, ev(EventKind::Remove(RemoveKind::File), "p.wasm")),
        ];
        assert_eq!(run(&both, &[400]), vec![paths(&["p.wasm"])]);
    }

    #[test]
    fn windows_copy_save_and_rename_settle_without_close_write() {
        // ReadDirectoryChangesW: FILE_ACTION_ADDED then FILE_ACTION_MODIFIED
        // per flushed write; never a close event.
        let copy = [
            (0, ev(EventKind::Create(CreateKind::Any), "p.wasm")),
            (10, ev(EventKind::Modify(ModifyKind::Any), "p.wasm")),
            (200, ev(EventKind::Modify(ModifyKind::Any), "p.wasm")),
            (390, ev(EventKind::Modify(ModifyKind::Any), "p.wasm")),
        ];
        assert_eq!(run(&copy, &[600, 790]), vec![vec![], paths(&["p.wasm"])]);
        // An editor's save: temp written, target removed, temp renamed over
        // it (FILE_ACTION_RENAMED_OLD_NAME / _NEW_NAME).
        let save = [
            (0, ev(EventKind::Create(CreateKind::Any), "p.wasm~")),
            (5, ev(EventKind::Modify(ModifyKind::Any), "p.wasm~")),
            (20, ev(EventKind::Remove(RemoveKind::Any), "p.wasm")),
            (20, ev(EventKind::Modify(ModifyKind::Name(RenameMode::From)), "p.wasm~")),
            (20, ev(EventKind::Modify(ModifyKind::Name(RenameMode::To)), "p.wasm")),
            (25, ev(EventKind::Modify(ModifyKind::Any), "p.wasm")),
        ];
        assert_eq!(run(&save, &[424, 425]), vec![vec![], paths(&["p.wasm"])]);
        let rename = [
            (0, ev(EventKind::Modify(ModifyKind::Name(RenameMode::From)), "a.wasm")),
            (0, ev(EventKind::Modify(ModifyKind::Name(RenameMode::To)), "b.wasm")),
        ];
        assert_eq!(run(&rename, &[400]), vec![paths(&["a.wasm", "b.wasm"])]);
    }

    #[test]
    fn reads_and_foreign_files_start_nothing() {
        let events = [
            (0, ev(EventKind::Access(AccessKind::Open(AccessMode::Read)), "p.wasm")),
            (0, ev(EventKind::Access(AccessKind::Close(AccessMode::Read)), "p.wasm")),
            (0, ev(EventKind::Create(CreateKind::File), "notes.txt")),
            (0, ev(EventKind::Create(CreateKind::File), ".p.wasm")),
        ];
        assert_eq!(run(&events, &[1000]), vec![Vec::<PathBuf>::new()]);
        // inotify's cp still settles, by the same rule.
        let cp = [
            (0, ev(EventKind::Create(CreateKind::File), "p.wasm")),
            (0, ev(EventKind::Modify(ModifyKind::Data(DataChange::Any)), "p.wasm")),
            (1, ev(EventKind::Access(AccessKind::Close(AccessMode::Write)), "p.wasm")),
        ];
        assert_eq!(run(&cp, &[400, 401]), vec![vec![], paths(&["p.wasm"])]);
    }

    #[test]
    fn lost_events_ask_for_a_rescan() {
        let mut settle = Settle::new(SETTLE);
        let lost = Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert_eq!(settle.event(&lost, Instant::now()), Fed::Rescan);
        assert_eq!(settle.deadline(), None);
    }

    /// A minimal component: header, then one custom section.
    fn tiny_binary() -> Vec<u8> {
        let mut bytes = b"\0asm\x0d\x00\x01\x00".to_vec();
        bytes.extend_from_slice(&[0, 4, 1, b'x', 0xAA, 0xBB]);
        bytes
    }

    #[test]
    fn a_binary_cut_anywhere_inside_is_truncated() {
        let full = tiny_binary();
        assert_eq!(completeness(&full), Completeness::Complete);
        for cut in 0..full.len() {
            let want = if cut == 8 {
                // Exactly at a section boundary: nothing can tell.
                Completeness::Complete
            } else {
                Completeness::Truncated
            };
            assert_eq!(completeness(&full[..cut]), want, "cut at {cut}");
        }
        // A size with its continuation bit set and nothing after it.
        assert_eq!(completeness(b"\0asm\x01\x00\x00\x00\x01\x80"), Completeness::Truncated);
    }

    #[test]
    fn text_and_malformed_sizes_are_not_wasm() {
        assert_eq!(completeness(b"this is a text file"), Completeness::NotWasm);
        assert_eq!(completeness(b"\0asX"), Completeness::NotWasm);
        assert_eq!(
            completeness(b"\0asm\x01\x00\x00\x00\x01\x80\x80\x80\x80\x80\x01"),
            Completeness::NotWasm
        );
    }
}
