//! Telling reporters what became of their report after the ✅: on the map
//! (with its VH-Database id), waiting on retries for long, or given up
//! (`max_retries_exceeded`); the last two also in the moderators' channel
//! (`KEEPER_ALERT_CHANNEL_ID`).
//!
//! Each report from Discord leaves a row in `keeper_bot_notices` (migration
//! 8) with what is needed to reach its reporter: the interaction token (good
//! for 15 minutes: the confirmation itself is edited, or a private follow-up
//! sent) and the channel (after that, a message that mentions them). A
//! follower reads the rows beside their queue rows every few seconds, so
//! nothing is lost over a restart and the worker never waits on Discord.
//!
//! A row lives until its report is on the map. Told that it failed, the
//! reporter keeps the row (marked `told_failed`, migration 13): a moderator
//! may retry the item, and when it then syncs the confirmation is edited
//! as for any other report. A retry clears the mark (a trigger on
//! `sync_queue`, so every way of retrying counts), so each failure is told
//! once, however many rounds pass.
//!
//! The rows are in the store, keeper.db or PostgreSQL (bot/tables.rs). Each
//! piece of news is claimed (the row marked or deleted) before it is said,
//! so with several bot hosts on one database a reporter hears it once; a
//! host that dies between the claim and the message leaves it unsaid,
//! which is the lesser harm: news is worth one try.

use std::sync::Arc;
use std::time::Duration;

use serenity::all::{
    ChannelId, CreateAllowedMentions, CreateInteractionResponseFollowup, CreateMessage, EditInteractionResponse, UserId,
};
use serenity::builder::Builder as _;
use serenity::http::Http;
use time::OffsetDateTime;

use super::tables::{self, NewsRow};
use crate::db::Db;
use crate::queue::SyncStatus;

/// How often the queue is looked at for news.
const POLL: Duration = Duration::from_secs(2);

/// What the follower needs besides keeper.db and Discord.
#[derive(Debug, Clone, Copy)]
pub struct NoticeRules {
    /// Where moderators are told of reports that wait long or fail.
    pub alert_channel: Option<ChannelId>,
    /// A report not synced this long after its submission, having failed
    /// at least once, is said to be waiting.
    pub slow_after: Duration,
    /// How long after a report its interaction token is used (it lasts 15
    /// minutes); past this, the channel is (`DISCORD_INTERACTION_SECS`).
    pub token_lifetime: Duration,
}

/// The reporter's side of one report from Discord.
#[derive(Debug, Clone)]
pub struct Notice {
    pub discovery_id: i64,
    pub token: String,
    pub channel_id: Option<u64>,
    pub user_id: u64,
    /// The confirmation as first sent, to append to.
    pub confirmation: String,
    /// Whether the confirmation already said it will not be on the map.
    pub placed: bool,
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Remembers how to reach the reporter of `notice.discovery_id`.
pub async fn remember(db: &Db, notice: &Notice) -> Result<(), sqlx::Error> {
    tables::remember_notice(db, notice, now()).await
}

/// A report's news, as read beside its queue row.
#[derive(Debug)]
struct News {
    notice: Notice,
    created_at: i64,
    told_waiting: bool,
    /// The present failure (`max_retries_exceeded`) was told already.
    told_failed: bool,
    status: SyncStatus,
    haven_id: Option<i64>,
    attempts: i64,
    error_class: Option<String>,
    error: Option<String>,
}

/// What to say about one report, if anything.
#[derive(Debug, PartialEq, Eq)]
pub enum Tell {
    OnTheMap,
    Waiting,
    Failed,
}

impl News {
    fn tell(&self, rules: &NoticeRules, now: i64) -> Option<Tell> {
        let slow = i64::try_from(rules.slow_after.as_secs()).unwrap_or(i64::MAX);
        match self.status {
            SyncStatus::Synced => Some(Tell::OnTheMap),
            SyncStatus::MaxRetriesExceeded if self.told_failed => None,
            SyncStatus::MaxRetriesExceeded => Some(Tell::Failed),
            _ if !self.told_waiting && self.attempts > 0 && now.saturating_sub(self.created_at) >= slow => {
                Some(Tell::Waiting)
            }
            _ => None,
        }
    }
}

/// Tells reporters (and moderators) until cancelled.
pub async fn follow(db: Db, http: Arc<Http>, rules: NoticeRules) {
    loop {
        if let Err(error) = round(&db, &http, &rules).await {
            tracing::warn!(%error, "cannot read reports' news from the store; trying again");
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn round(db: &Db, http: &Http, rules: &NoticeRules) -> Result<(), sqlx::Error> {
    let rows = tables::news(db).await?;
    let now = now();
    for news in rows.into_iter().map(News::from) {
        let Some(tell) = news.tell(rules, now) else { continue };
        // Claimed first: with several hosts on one database, one says it.
        if tables::claim_news(db, news.notice.discovery_id, &tell).await? {
            say(http, rules, &news, &tell, now).await;
        }
    }
    Ok(())
}

impl From<NewsRow> for News {
    fn from(r: NewsRow) -> News {
        News {
            notice: Notice {
                discovery_id: r.discovery_id,
                token: r.token,
                channel_id: r.channel_id.and_then(|c| c.parse().ok()),
                user_id: r.user_id.parse().unwrap_or(0),
                confirmation: r.confirmation,
                placed: r.placed,
            },
            created_at: r.created_at,
            told_waiting: r.told_waiting,
            told_failed: r.told_failed,
            status: r.sync_status,
            haven_id: r.haven_discovery_id,
            attempts: r.sync_attempts,
            error_class: r.error_class,
            error: r.sync_error,
        }
    }
}

/// Says `tell` to the reporter, and to moderators when it is bad news. A
/// failure to say it is logged: news is worth one try, never a retry storm.
async fn say(http: &Http, rules: &NoticeRules, news: &News, tell: &Tell, now: i64) {
    let id = news.notice.discovery_id;
    let class = news.error_class.as_deref().unwrap_or("unknown");
    let error = news.error.as_deref().unwrap_or("no error recorded");
    let line = match tell {
        Tell::OnTheMap if news.notice.placed => format!(
            "🗺️ #{id} is on the map (VH-Database #{}).",
            news.haven_id.unwrap_or_default()
        ),
        Tell::OnTheMap => format!(
            "🗄️ #{id} is in the Control Room's archive (VH-Database #{}), without a map position.",
            news.haven_id.unwrap_or_default()
        ),
        Tell::Waiting => format!(
            "⏳ #{id} is not in the Control Room yet: it failed {} time(s) ({class}) and will be tried again.",
            news.attempts
        ),
        Tell::Failed => format!(
            "❌ #{id} could not be sent to the Control Room after {} attempts ({class}). It is kept, and \
             the moderators can retry it.",
            news.attempts
        ),
    };
    let token_lifetime = i64::try_from(rules.token_lifetime.as_secs()).unwrap_or(i64::MAX);
    let young = now.saturating_sub(news.created_at) < token_lifetime;
    let reporter = UserId::new(news.notice.user_id.max(1));
    let sent = match (tell, young) {
        (Tell::OnTheMap, true) => EditInteractionResponse::new()
            .content(format!("{}\n{line}", news.notice.confirmation))
            .allowed_mentions(CreateAllowedMentions::new())
            .execute(http, &news.notice.token)
            .await
            .map(|_| ()),
        (_, true) => CreateInteractionResponseFollowup::new()
            .content(&line)
            .ephemeral(true)
            .allowed_mentions(CreateAllowedMentions::new())
            .execute(http, (None, &news.notice.token))
            .await
            .map(|_| ()),
        (_, false) => match news.notice.channel_id {
            Some(channel) => ChannelId::new(channel.max(1))
                .send_message(
                    http,
                    CreateMessage::new()
                        .content(format!("<@{reporter}> {line}"))
                        .allowed_mentions(CreateAllowedMentions::new().users([reporter])),
                )
                .await
                .map(|_| ()),
            None => Ok(()),
        },
    };
    match sent {
        Ok(()) => tracing::info!(discovery_id = id, news = ?tell, "reporter told"),
        Err(error) => tracing::warn!(discovery_id = id, news = ?tell, %error, "cannot tell the reporter"),
    }
    if *tell == Tell::OnTheMap {
        return;
    }
    let Some(alerts) = rules.alert_channel else { return };
    let alert = format!("{line} Reported by <@{reporter}>. Last error: {error}");
    let alert: String = alert.chars().take(super::reply::MESSAGE_MAX_CHARS).collect();
    let posted = alerts
        .send_message(
            http,
            CreateMessage::new()
                .content(alert)
                .allowed_mentions(CreateAllowedMentions::new()),
        )
        .await;
    if let Err(error) = posted {
        tracing::warn!(discovery_id = id, %error, channel = %alerts, "cannot post in the moderators' channel");
    }
}
