//! What keeper asks of the operating system beyond std: the machine's name,
//! a thread's CPU time, a file's identity, and fewer malloc arenas.
//!
//! Where keeper links libc (`cfg(keeper_libc)`: Linux, Android, macOS, iOS,
//! FreeBSD; the list lives in host/build.rs) these are system calls;
//! elsewhere (Windows) the name comes from the environment and there is no
//! per-thread CPU clock.

use std::time::Duration;

/// The machine's network name: `gethostname` where keeper links libc;
/// Windows keeps it in `COMPUTERNAME`.
pub fn machine_name() -> Option<String> {
    #[cfg(keeper_libc)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its whole length, which is passed.
        let done = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if done == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            return String::from_utf8(buf[..end].to_vec()).ok().filter(|n| !n.is_empty());
        }
    }
    ["COMPUTERNAME", "HOSTNAME"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|n| !n.is_empty()))
}

/// CPU time the calling thread has used so far, where the platform has a
/// per-thread CPU clock (`CLOCK_THREAD_CPUTIME_ID`); `None` elsewhere.
pub fn thread_cpu_time() -> Option<Duration> {
    #[cfg(keeper_libc)]
    {
        let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime only writes the timespec it is given.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
        if rc != 0 {
            return None;
        }
        Some(Duration::new(
            u64::try_from(now.tv_sec).ok()?,
            u32::try_from(now.tv_nsec).ok()?,
        ))
    }
    #[cfg(not(keeper_libc))]
    None
}

/// Which file is at `path` now, as the file system tells files apart
/// (device and inode), where it can say so (Unix); `None` elsewhere or when
/// the path cannot be read. Two equal identities are the same file, even
/// under another name.
pub fn file_identity(path: &std::path::Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// With glibc's malloc (Linux), at most two arenas, unless the operator
/// set `MALLOC_ARENA_MAX`. glibc gives each thread that allocates an arena
/// of its own, up to eight per core; keeper's threads (tokio's workers,
/// one per SQLite connection, the blocking pool that compiles plugins)
/// then keep freed memory in many arenas. Measured on `keeper sync --once`
/// draining 100,000 reports (release build, 2 cores): 46 MiB peak RSS
/// with the default, 42–44 MiB with two arenas, the same drain time; 60
/// against 44 MiB when it also compiled the plugin. Call before any thread
/// starts.
pub fn fewer_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a malloc parameter; no other thread
        // exists yet to allocate meanwhile.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_has_a_name() {
        assert!(machine_name().is_some_and(|n| !n.trim().is_empty()));
    }

    /// Only where keeper links libc: elsewhere there is no thread clock and
    /// `thread_cpu_time` is `None` by design.
    #[cfg(keeper_libc)]
    #[test]
    fn the_thread_clock_moves_as_the_thread_works() {
        let before = thread_cpu_time().expect("Linux has a per-thread CPU clock");
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = std::hint::black_box(x.wrapping_add(i));
        }
        let after = thread_cpu_time().expect("Linux has a per-thread CPU clock");
        assert!(after > before, "{before:?} → {after:?}");
    }
}
