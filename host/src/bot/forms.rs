//! Forms between `/discovery-report` and the modal's submission.
//!
//! The command's options (system, location, evidence, …) do not fit in the
//! modal's 100-character `custom_id`, so they wait under a nonce that the
//! `custom_id` carries. They are kept in keeper.db (table
//! `keeper_bot_forms`, migration 7) so a restart or a deploy between the
//! command and the submission loses nothing.
//!
//! Opening a form must answer within Discord's 3 s and a modal cannot be
//! deferred, so the row is written behind: the form is usable from memory at
//! once, and its write is awaited only when the form is taken. keeper.db
//! decides which submission takes a form: a form is taken once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serenity::all::UserId;
use time::OffsetDateTime;
use tokio::task::JoinHandle;

use super::commands::Options;
use super::tables::{self, FormRow};
use crate::db::Db;

/// The prefix of a discovery modal's `custom_id`; the nonce follows.
pub const MODAL_PREFIX: &str = "discovery-report:";

/// How long a form stays open after the command.
pub const FORM_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// Rows of forms that expired longer ago than this are deleted when a form is
/// opened: they can only ever answer "expired", and that is said for a day.
const KEEP_EXPIRED: Duration = Duration::from_secs(24 * 3600);

/// One open form: who opened it, with which options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenForm {
    pub user: UserId,
    pub options: Options,
    /// Unix seconds.
    expires_at: i64,
}

/// What [`Forms::take`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    Open(Box<OpenForm>),
    /// The form was there but its time is over (it is gone now).
    Expired,
    /// No such form: already submitted, never opened here, or another user's.
    Unknown,
}

/// A form whose row may still be on its way to keeper.db.
#[derive(Debug)]
struct Pending {
    form: OpenForm,
    /// Resolves to whether the row was written.
    written: JoinHandle<bool>,
}

/// The open forms: the store, plus those whose row is still being written.
#[derive(Debug)]
pub struct Forms {
    db: Db,
    pending: Mutex<HashMap<u64, Pending>>,
}

/// Options as stored in the row's JSON.
#[derive(Serialize, Deserialize)]
struct StoredOptions {
    discovery_type: String,
    system: String,
    location: String,
    coordinates: Option<String>,
    evidence_url: Option<String>,
    /// Absent in rows written before images were kept.
    #[serde(default)]
    evidence_attached: bool,
    condition: Option<String>,
    time_period: Option<String>,
    significance: Option<String>,
}

impl From<&Options> for StoredOptions {
    fn from(o: &Options) -> StoredOptions {
        StoredOptions {
            discovery_type: o.discovery_type.clone(),
            system: o.system.clone(),
            location: o.location.clone(),
            coordinates: o.coordinates.clone(),
            evidence_url: o.evidence_url.clone(),
            evidence_attached: o.evidence_attached,
            condition: o.condition.clone(),
            time_period: o.time_period.clone(),
            significance: o.significance.clone(),
        }
    }
}

impl From<StoredOptions> for Options {
    fn from(o: StoredOptions) -> Options {
        Options {
            discovery_type: o.discovery_type,
            system: o.system,
            location: o.location,
            coordinates: o.coordinates,
            evidence_url: o.evidence_url,
            evidence_attached: o.evidence_attached,
            condition: o.condition,
            time_period: o.time_period,
            significance: o.significance,
        }
    }
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

impl Forms {
    pub fn new(db: Db) -> Forms {
        Forms {
            db,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Opens a form; returns the modal `custom_id` that finds it again. Never
    /// waits on keeper.db (see the module's notes).
    pub fn open(&self, nonce: u64, user: UserId, options: Options) -> String {
        let lifetime = i64::try_from(FORM_LIFETIME.as_secs()).unwrap_or(i64::MAX);
        let form = OpenForm {
            user,
            options,
            expires_at: now().saturating_add(lifetime),
        };
        let written = tokio::spawn(write(self.db.clone(), nonce, form.clone()));
        let mut pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Forms whose row is written are found in keeper.db from now on.
        pending.retain(|_, p| !p.written.is_finished());
        pending.insert(nonce, Pending { form, written });
        format!("{MODAL_PREFIX}{nonce}")
    }

    /// Takes the form `nonce` if `user` opened it. Once only: a second
    /// submission of the same modal finds [`Taken::Unknown`].
    pub async fn take(&self, nonce: u64, user: UserId) -> Result<Taken, sqlx::Error> {
        let pending = {
            let mut map = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            map.remove(&nonce)
        };
        if let Some(pending) = pending {
            // The row never reached keeper.db: memory is all there is.
            if !pending.written.await.unwrap_or(false) {
                return Ok(judge(Some(pending.form), user));
            }
        }
        let row = tables::take_form(&self.db, nonce_key(nonce), &user.to_string()).await?;
        let form = match row {
            None => None,
            Some(FormRow {
                user_id,
                options,
                expires_at,
            }) => {
                let options: StoredOptions = match serde_json::from_str(&options) {
                    Ok(options) => options,
                    Err(error) => {
                        tracing::warn!(nonce, %error, "an open form's options cannot be read; treated as unknown");
                        return Ok(Taken::Unknown);
                    }
                };
                Some(OpenForm {
                    user: user_id.parse().map(UserId::new).unwrap_or(user),
                    options: options.into(),
                    expires_at,
                })
            }
        };
        Ok(judge(form, user))
    }
}

/// The nonce as the tables' signed 64-bit key (the same bits).
fn nonce_key(nonce: u64) -> i64 {
    i64::from_ne_bytes(nonce.to_ne_bytes())
}

fn judge(form: Option<OpenForm>, user: UserId) -> Taken {
    match form {
        Some(form) if form.user != user => Taken::Unknown,
        Some(form) if form.expires_at <= now() => Taken::Expired,
        Some(form) => Taken::Open(Box::new(form)),
        None => Taken::Unknown,
    }
}

/// Writes one form's row (and drops rows long expired); whether it worked.
async fn write(db: Db, nonce: u64, form: OpenForm) -> bool {
    let options = match serde_json::to_string(&StoredOptions::from(&form.options)) {
        Ok(json) => json,
        Err(error) => {
            tracing::warn!(nonce, %error, "cannot serialise a form's options; it is kept in memory only");
            return false;
        }
    };
    let keep = i64::try_from(KEEP_EXPIRED.as_secs()).unwrap_or(i64::MAX);
    let row = FormRow {
        user_id: form.user.to_string(),
        options,
        expires_at: form.expires_at,
    };
    let result = tables::save_form(&db, nonce_key(nonce), &row, now().saturating_sub(keep)).await;
    match result {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(
                nonce,
                %error,
                "cannot keep a form in the store; it lasts until a restart only"
            );
            false
        }
    }
}

/// The nonce in a discovery modal's `custom_id`, or `None` for another modal.
pub fn nonce_of(custom_id: &str) -> Option<u64> {
    custom_id.strip_prefix(MODAL_PREFIX)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_form_is_taken_once_only_by_its_user_and_survives_a_restart() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = crate::store::Store::open(&dir.path().join("keeper.db"), crate::store::Access::Create)
            .await
            .expect("keeper.db");
        let forms = Forms::new(store.db().clone());
        let options = Options {
            system: "Oculi".into(),
            ..Options::default()
        };
        let id = forms.open(7, UserId::new(1), options.clone());
        assert_eq!(id, "discovery-report:7");
        assert_eq!(nonce_of(&id), Some(7));
        assert_eq!(nonce_of("other:7"), None);
        assert_eq!(forms.take(7, UserId::new(2)).await.expect("take"), Taken::Unknown);

        // A second `Forms` on the same file is the bot after a restart.
        let restarted = Forms::new(store.db().clone());
        match restarted.take(7, UserId::new(1)).await.expect("take") {
            Taken::Open(form) => assert_eq!(form.options, options),
            other => panic!("expected the open form, got {other:?}"),
        }
        assert_eq!(restarted.take(7, UserId::new(1)).await.expect("take"), Taken::Unknown);
        assert_eq!(forms.take(7, UserId::new(1)).await.expect("take"), Taken::Unknown);

        forms.open(8, UserId::new(1), options);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM keeper_bot_forms WHERE nonce = 8")
                .fetch_one(store.db().sqlite().expect("keeper.db"))
                .await
                .expect("count");
            if rows == 1 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "form 8 was never written to keeper.db"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sqlx::query("UPDATE keeper_bot_forms SET expires_at = ?1 WHERE nonce = 8")
            .bind(now() - 1)
            .execute(store.db().sqlite().expect("keeper.db"))
            .await
            .expect("expire");
        assert_eq!(restarted.take(8, UserId::new(1)).await.expect("take"), Taken::Expired);
    }
}
