//! Where VH-Database is when `HAVEN_DB_PATH` is unset: the old bot's search,
//! done on every OS.
//!
//! The old bot tried `~/Desktop/Haven_mdev/...`, `~/Desktop/untitled
//! folder/Haven_mdev/...`, then `../../../`, `../../` and `../Haven_mdev/...`
//! relative to its working folder. `~/Desktop` is not where a Desktop is on
//! every machine: Windows has no `HOME`, and its Desktop is often redirected
//! into OneDrive. So the platform's own Desktop folder (the Known Folder on
//! Windows, `XDG_DESKTOP_DIR` on Linux) comes first, then `HOME/Desktop`
//! when that is another folder, then the relative candidates.

use std::path::{Path, PathBuf};

/// The Control Room's database below a `Haven_mdev` folder.
const IN_HAVEN_MDEV: &str = "Haven_mdev/data/VH-Database.db";

/// The folders a search starts from; taken from the machine by
/// [`SearchRoots::of_this_machine`], or given by a test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRoots {
    /// Desktop folders, most specific first, without repeats.
    pub desktops: Vec<PathBuf>,
}

impl SearchRoots {
    /// The platform's Desktop (which follows a OneDrive redirection on
    /// Windows) and `HOME/Desktop` (the old bot's `~/Desktop`).
    pub fn of_this_machine() -> SearchRoots {
        let mut desktops = Vec::new();
        let home_desktop = dirs::home_dir().map(|home| home.join("Desktop"));
        for desktop in [dirs::desktop_dir(), home_desktop].into_iter().flatten() {
            if !desktops.contains(&desktop) {
                desktops.push(desktop);
            }
        }
        SearchRoots { desktops }
    }

    /// Every place the old bot would have looked, in its order. Relative
    /// candidates are relative to the working folder, as the old bot's were.
    pub fn candidates(&self) -> Vec<PathBuf> {
        let mut candidates = Vec::new();
        for desktop in &self.desktops {
            candidates.push(desktop.join(IN_HAVEN_MDEV));
            candidates.push(desktop.join("untitled folder").join(IN_HAVEN_MDEV));
        }
        for up in ["../../..", "../..", ".."] {
            candidates.push(Path::new(up).join(IN_HAVEN_MDEV));
        }
        candidates
    }

    /// The first candidate that is a file, with every candidate tried.
    pub fn search(&self) -> Search {
        let tried = self.candidates();
        let found = tried.iter().find(|path| path.is_file()).cloned();
        Search { tried, found }
    }
}

/// What a search tried and what it found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Search {
    pub tried: Vec<PathBuf>,
    pub found: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_follow_the_old_bots_order_desktops_first() {
        let roots = SearchRoots {
            desktops: vec![PathBuf::from("/od/Desktop"), PathBuf::from("/home/me/Desktop")],
        };
        let expected: Vec<PathBuf> = [
            "/od/Desktop/Haven_mdev/data/VH-Database.db",
            "/od/Desktop/untitled folder/Haven_mdev/data/VH-Database.db",
            "/home/me/Desktop/Haven_mdev/data/VH-Database.db",
            "/home/me/Desktop/untitled folder/Haven_mdev/data/VH-Database.db",
            "../../../Haven_mdev/data/VH-Database.db",
            "../../Haven_mdev/data/VH-Database.db",
            "../Haven_mdev/data/VH-Database.db",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(roots.candidates(), expected);
    }

    #[test]
    fn the_first_existing_candidate_is_found() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = dir.path().join("one");
        let second = dir.path().join("two");
        let in_second = second.join("untitled folder").join(IN_HAVEN_MDEV);
        std::fs::create_dir_all(in_second.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(&in_second, b"").expect("write");
        let search = SearchRoots {
            desktops: vec![first, second],
        }
        .search();
        assert_eq!(search.found, Some(in_second));
        assert_eq!(search.tried.len(), 7);
    }
}
