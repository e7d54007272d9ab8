//! Evidence that lasts: images attached to Discord reports, kept in
//! keeper.db and served by the sync API at `GET /evidence/{id}`.
//!
//! Discord's attachment links are signed and expire after about a day, so
//! a `photo_url` that points at Discord stops working in Control Room. At
//! submit time the bot fetches the attachment ([`fetch`]: images only, by
//! the served type and by the file's own first bytes, and at most
//! `KEEPER_EVIDENCE_MAX_BYTES`) and stores it here; the report then links
//! to `SYNC_API_PUBLIC_URL/evidence/{id}`.
//!
//! Why a keeper.db table (`keeper_evidence`, migration 11) and not a folder
//! beside it: keeper.db is the one file operators already back up, restore
//! and move with the bot, and a row is written whole or not at all, where a
//! folder needs its own atomic writes, clean-up and permissions. Images are
//! a few MiB at most, which SQLite keeps as BLOBs without trouble. The id
//! is the SHA-256 of the bytes: the same image sent twice is stored once,
//! and ids cannot be guessed from one another.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::db::Db;

/// The default of `KEEPER_EVIDENCE_MAX_BYTES`: Discord's own limit for
/// uploads without Nitro.
pub const DEFAULT_MAX_BYTES: u64 = 8 * 1024 * 1024;

/// The largest `KEEPER_EVIDENCE_MAX_BYTES` accepted: an image is held in
/// memory while it is fetched and served.
pub const LARGEST_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// How long one download may take, connection included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// The image formats kept: what Discord shows inline and browsers display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageType {
    Png,
    Jpeg,
    Gif,
    Webp,
}

impl ImageType {
    const ALL: [ImageType; 4] = [ImageType::Png, ImageType::Jpeg, ImageType::Gif, ImageType::Webp];

    /// The media type served in `Content-Type` and stored.
    pub fn mime(self) -> &'static str {
        match self {
            ImageType::Png => "image/png",
            ImageType::Jpeg => "image/jpeg",
            ImageType::Gif => "image/gif",
            ImageType::Webp => "image/webp",
        }
    }

    /// The type stored as `mime`.
    pub fn from_mime(mime: &str) -> Option<ImageType> {
        ImageType::ALL.into_iter().find(|t| t.mime() == mime)
    }

    /// The format by the file's first bytes (its magic number): a served
    /// `Content-Type` or a file name can say anything.
    pub fn sniff(bytes: &[u8]) -> Option<ImageType> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(ImageType::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(ImageType::Jpeg)
        } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
            Some(ImageType::Gif)
        } else if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
            Some(ImageType::Webp)
        } else {
            None
        }
    }
}

/// An image, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub kind: ImageType,
    pub bytes: Vec<u8>,
}

impl Image {
    /// The bytes as an image, if their first bytes say they are one.
    pub fn new(bytes: Vec<u8>) -> Option<Image> {
        ImageType::sniff(&bytes).map(|kind| Image { kind, bytes })
    }

    /// Its id in the store: the SHA-256 of the bytes, in lowercase hex.
    pub fn id(&self) -> String {
        hex::encode(Sha256::digest(&self.bytes))
    }
}

/// Why an attachment was not kept. Said to the reporter, so each message
/// tells what was wrong with the file rather than with keeper.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("the file is larger than {max} bytes, the most the archive keeps")]
    TooBig { max: u64 },
    #[error("the file is not an image (it is served as {served:?})")]
    NotAnImageType { served: String },
    #[error("the file's content is not a PNG, JPEG, GIF or WebP image")]
    NotAnImage,
    #[error("Discord's copy could not be fetched ({0})")]
    Unreachable(String),
    #[error("Discord's copy could not be fetched (HTTP {0})")]
    Status(u16),
    #[error("keeper.db could not store it ({0})")]
    Store(#[from] sqlx::Error),
}

/// An HTTP client for [`fetch`], with its time limit.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(FETCH_TIMEOUT)
        .build()
}

/// Downloads `url` as an image of at most `max_bytes`: served as `image/…`,
/// and its first bytes those of a PNG, JPEG, GIF or WebP. Reading stops as
/// soon as the limit is passed, whatever `Content-Length` claimed.
pub async fn fetch(client: &reqwest::Client, url: &str, max_bytes: u64) -> Result<Image, EvidenceError> {
    // The error's text would carry the URL, whose signature is a secret.
    let unreachable = |e: reqwest::Error| EvidenceError::Unreachable(e.without_url().to_string());
    let mut response = client.get(url).send().await.map_err(unreachable)?;
    let status = response.status();
    if !status.is_success() {
        return Err(EvidenceError::Status(status.as_u16()));
    }
    let served = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let essence = served.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if !essence.starts_with("image/") {
        return Err(EvidenceError::NotAnImageType { served });
    }
    if response.content_length().is_some_and(|n| n > max_bytes) {
        return Err(EvidenceError::TooBig { max: max_bytes });
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        let total = u64::try_from(bytes.len() + chunk.len()).unwrap_or(u64::MAX);
        if total > max_bytes {
            return Err(EvidenceError::TooBig { max: max_bytes });
        }
        bytes.extend_from_slice(&chunk);
    }
    Image::new(bytes).ok_or(EvidenceError::NotAnImage)
}

/// The evidence table in keeper's store (keeper.db or PostgreSQL).
#[derive(Debug, Clone)]
pub struct EvidenceStore {
    db: Db,
}

impl EvidenceStore {
    pub fn new(db: Db) -> EvidenceStore {
        EvidenceStore { db }
    }

    /// Stores `image` (once: the same bytes have the same id); returns its id.
    pub async fn put(&self, image: &Image) -> Result<String, sqlx::Error> {
        let id = image.id();
        match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query("INSERT OR IGNORE INTO keeper_evidence (id, content_type, bytes) VALUES (?1, ?2, ?3)")
                    .bind(&id)
                    .bind(image.kind.mime())
                    .bind(&image.bytes)
                    .execute(pool)
                    .await?;
            }
            Db::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO keeper_evidence (id, content_type, bytes) VALUES ($1, $2, $3)
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(&id)
                .bind(image.kind.mime())
                .bind(&image.bytes)
                .execute(pool)
                .await?;
            }
        }
        Ok(id)
    }

    /// The image stored under `id`, if any. A row whose type keeper does not
    /// know (written by a newer keeper) is not served.
    pub async fn get(&self, id: &str) -> Result<Option<Image>, sqlx::Error> {
        let row: Option<(String, Vec<u8>)> = match &self.db {
            Db::Sqlite(pool) => {
                sqlx::query_as("SELECT content_type, bytes FROM keeper_evidence WHERE id = ?1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await?
            }
            Db::Postgres(pool) => {
                sqlx::query_as("SELECT content_type, bytes FROM keeper_evidence WHERE id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await?
            }
        };
        Ok(row.and_then(|(mime, bytes)| {
            Some(Image {
                kind: ImageType::from_mime(&mime)?,
                bytes,
            })
        }))
    }
}

/// `BASE/evidence/ID`: where the sync API serves an image, for `photo_url`.
pub fn public_url(base: &str, id: &str) -> String {
    format!("{}/evidence/{id}", base.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_told_by_their_first_bytes() {
        assert_eq!(ImageType::sniff(b"\x89PNG\r\n\x1a\n...."), Some(ImageType::Png));
        assert_eq!(ImageType::sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(ImageType::Jpeg));
        assert_eq!(ImageType::sniff(b"GIF89a..."), Some(ImageType::Gif));
        assert_eq!(ImageType::sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(ImageType::Webp));
        assert_eq!(ImageType::sniff(b"RIFF\0\0\0\0WAVEfmt "), None);
        assert_eq!(ImageType::sniff(b"<html>"), None);
        assert_eq!(ImageType::sniff(b""), None);
        for t in ImageType::ALL {
            assert_eq!(ImageType::from_mime(t.mime()), Some(t));
        }
        assert_eq!(ImageType::from_mime("image/svg+xml"), None);
    }

    #[tokio::test]
    async fn the_store_keeps_each_image_once_under_its_hash() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = crate::store::Store::open(&dir.path().join("keeper.db"), crate::store::Access::Create)
            .await
            .expect("keeper.db");
        let evidence = EvidenceStore::new(store.db().clone());
        let image = Image::new(b"GIF89a pixels".to_vec()).expect("a GIF");
        let id = evidence.put(&image).await.expect("put");
        assert_eq!(id.len(), 64);
        assert_eq!(evidence.put(&image).await.expect("put again"), id);
        assert_eq!(evidence.get(&id).await.expect("get"), Some(image));
        assert_eq!(evidence.get("0000").await.expect("get"), None);
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM keeper_evidence")
            .fetch_one(store.db().sqlite().expect("keeper.db"))
            .await
            .expect("count");
        assert_eq!(rows, 1);
        assert_eq!(
            public_url("https://keeper.example/", &id),
            format!("https://keeper.example/evidence/{id}")
        );
    }
}
