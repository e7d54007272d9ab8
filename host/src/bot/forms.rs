//! Forms between `/discovery-report` and the modal's submission.
//!
//! The command's options (system, location, evidence, …) do not fit in the
//! modal's 100-character `custom_id`, so they wait here under a nonce that
//! the `custom_id` carries. Kept in memory only: a form outlives neither a
//! restart nor Discord's 15-minute interaction lifetime, and after either the
//! user is asked to run the command again (nothing was stored yet).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serenity::all::UserId;

use super::commands::Options;

/// The prefix of a discovery modal's `custom_id`; the nonce follows.
pub const MODAL_PREFIX: &str = "discovery-report:";

/// Discord accepts a modal submission for 15 minutes after the command.
const FORM_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// At most this many forms are open at once; past it the oldest is dropped,
/// so a flood of commands cannot grow memory without bound.
const MAX_OPEN_FORMS: usize = 10_000;

/// One open form: who opened it, with which options.
#[derive(Debug, Clone)]
pub struct OpenForm {
    pub user: UserId,
    pub options: Options,
    opened: Instant,
}

/// The open forms, keyed by nonce (the command interaction's id).
#[derive(Debug, Default)]
pub struct Forms {
    open: Mutex<HashMap<u64, OpenForm>>,
}

impl Forms {
    /// Remembers a form; returns the modal `custom_id` that finds it again.
    pub fn open(&self, nonce: u64, user: UserId, options: Options) -> String {
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        open.retain(|_, form| now.duration_since(form.opened) < FORM_LIFETIME);
        if open.len() >= MAX_OPEN_FORMS
            && let Some(oldest) = open.iter().min_by_key(|(_, f)| f.opened).map(|(&k, _)| k)
        {
            open.remove(&oldest);
        }
        open.insert(
            nonce,
            OpenForm {
                user,
                options,
                opened: now,
            },
        );
        format!("{MODAL_PREFIX}{nonce}")
    }

    /// Takes the form `nonce` if `user` opened it and it has not expired.
    /// A form is taken once: a second submission of the same modal finds nothing.
    pub fn take(&self, nonce: u64, user: UserId) -> Option<OpenForm> {
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let form = open.get(&nonce)?;
        if form.user != user || form.opened.elapsed() >= FORM_LIFETIME {
            return None;
        }
        open.remove(&nonce)
    }
}

/// The nonce in a discovery modal's `custom_id`, or `None` for another modal.
pub fn nonce_of(custom_id: &str) -> Option<u64> {
    custom_id.strip_prefix(MODAL_PREFIX)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_is_taken_once_and_only_by_its_user() {
        let forms = Forms::default();
        let id = forms.open(7, UserId::new(1), Options::default());
        assert_eq!(id, "discovery-report:7");
        assert_eq!(nonce_of(&id), Some(7));
        assert_eq!(nonce_of("other:7"), None);
        assert!(forms.take(7, UserId::new(2)).is_none());
        assert!(forms.take(7, UserId::new(1)).is_some());
        assert!(forms.take(7, UserId::new(1)).is_none());
    }
}
