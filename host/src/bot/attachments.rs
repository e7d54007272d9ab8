//! A report's attached image, kept at submit time so its link lasts
//! (see [`crate::evidence`] for where and why).
//!
//! Only an attachment is fetched (a link typed as `evidence_url` is the
//! reporter's own), only when `SYNC_API_PUBLIC_URL` says where the sync API
//! can be reached (without it a kept image could not be linked to), and a
//! failure never costs the report: it keeps Discord's link and the reporter
//! is told why the image was not kept.

use crate::app::App;
use crate::evidence::{self, EvidenceError, EvidenceStore};

/// What became of an attachment.
#[derive(Debug)]
pub enum Kept {
    /// Stored; the report links here instead of to Discord.
    Link(String),
    /// Not fetched: no `SYNC_API_PUBLIC_URL` (logged).
    DiscordLink,
    /// Not kept, for this reason; the report keeps Discord's link.
    Failed(EvidenceError),
}

/// Fetches and stores attachments.
#[derive(Debug, Clone)]
pub struct Attachments {
    store: EvidenceStore,
    /// `None` when no HTTP client could be made (then every fetch fails).
    client: Option<reqwest::Client>,
    public_url: Option<String>,
    max_bytes: u64,
}

impl Attachments {
    pub fn new(app: &App) -> Attachments {
        let client = match evidence::client() {
            Ok(client) => Some(client),
            Err(error) => {
                tracing::error!(%error, "cannot make an HTTP client; attached images will keep their Discord links");
                None
            }
        };
        Attachments {
            store: EvidenceStore::new(app.store.db().clone()),
            client,
            public_url: app.settings.sync_api_public_url.clone(),
            max_bytes: app.settings.evidence_max_bytes,
        }
    }

    /// Keeps the image at `discord_url`, attached by `user_id`.
    pub async fn keep(&self, discord_url: &str, user_id: &str) -> Kept {
        let Some(base) = &self.public_url else {
            tracing::warn!(
                user_id,
                "SYNC_API_PUBLIC_URL is not set: the report keeps Discord's link to its image, which expires \
                 in about a day; set it to where Control Room reaches this sync API to keep images"
            );
            return Kept::DiscordLink;
        };
        let Some(client) = &self.client else {
            return Kept::Failed(EvidenceError::Unreachable("keeper has no HTTP client".to_owned()));
        };
        let image = match evidence::fetch(client, discord_url, self.max_bytes).await {
            Ok(image) => image,
            Err(error) => {
                tracing::warn!(user_id, %error, "an attached image was not kept; the report keeps its Discord link");
                return Kept::Failed(error);
            }
        };
        match self.store.put(&image).await {
            Ok(id) => {
                tracing::info!(user_id, evidence_id = %id, bytes = image.bytes.len(), kind = image.kind.mime(), "attached image kept");
                Kept::Link(evidence::public_url(base, &id))
            }
            Err(error) => {
                tracing::error!(user_id, %error, "cannot store an attached image in keeper.db");
                Kept::Failed(EvidenceError::Store(error))
            }
        }
    }
}
