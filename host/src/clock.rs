//! The queue's clock. Times that hosts compare (leases, backoffs, when an
//! item was synced) come from the database's clock, `'now'` in SQLite and
//! `now()` in PostgreSQL, so every host of one store agrees whatever its
//! own clock says. A [`Clock`] is that clock moved forward by a skew: zero
//! in `keeper`, advanced by tests so that a backoff ends or a lease lapses
//! at once instead of after a wait (`Queue::with_clock`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The database's clock, plus a skew that only tests set.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    skew_ms: Arc<AtomicU64>,
}

impl Clock {
    /// Moves this clock (and every queue holding a clone of it) forward.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.skew_ms.fetch_add(ms, Ordering::Relaxed);
    }

    fn skew_ms(&self) -> u64 {
        self.skew_ms.load(Ordering::Relaxed)
    }

    /// The skew as an SQLite date modifier: `'now', ?n` in a query.
    pub fn sqlite_modifier(&self) -> String {
        let ms = self.skew_ms();
        format!("+{}.{:03} seconds", ms / 1000, ms % 1000)
    }

    /// The skew in seconds: `now() + make_interval(secs => $n)`.
    pub fn seconds(&self) -> f64 {
        self.skew_ms() as f64 / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_moves_for_every_clone_and_never_back() {
        let clock = Clock::default();
        assert_eq!(
            (clock.sqlite_modifier().as_str(), clock.seconds()),
            ("+0.000 seconds", 0.0)
        );
        let held = clock.clone();
        clock.advance(Duration::from_millis(30_250));
        held.advance(Duration::from_secs(60));
        assert_eq!(held.sqlite_modifier(), "+90.250 seconds");
        assert_eq!(clock.seconds(), 90.25);
    }
}
