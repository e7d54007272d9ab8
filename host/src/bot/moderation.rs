//! `/sync-status`: the sync queue as moderators see it in Discord, with a
//! Retry button per item and per failure class.
//!
//! Who may: the command is registered with Manage Server as its default
//! permission, so Discord shows it to moderators only; but a button press
//! carries no such check (anyone who got hold of the message, or a crafted
//! interaction, could send one), so every interaction here is checked again
//! against the permissions Discord resolved for the member in the
//! interaction itself. Everything is ephemeral: the queue is the
//! moderators' business, not the channel's.
//!
//! Answers are deferred at once and edited when keeper.db has answered: a
//! retry is a write that may wait on a busy keeper.db past Discord's 3 s.
//! The retries are the queue's own ([`Queue::retry`], [`Queue::retry_class`]),
//! the same as `keeper retry` and `POST /sync/retry`.

use serenity::all::{
    ButtonStyle, CommandInteraction, ComponentInteraction, Context, CreateActionRow, CreateAllowedMentions,
    CreateButton, CreateCommand, CreateInteractionResponse, CreateInteractionResponseMessage, EditInteractionResponse,
    Member, Permissions,
};

use super::reply::{MESSAGE_MAX_CHARS, Reply};
use crate::app::App;
use crate::queue::{ErrorClass, Queue, QueueCounts, RetryRefused, TroubledItem, Troubles};

/// The command's name.
pub const STATUS_COMMAND: &str = "sync-status";

/// The prefix of the Retry buttons' `custom_id`s; `item:QUEUE_ID` or
/// `class:CLASS` follows.
const RETRY_PREFIX: &str = "keeper-sync-status:retry:";

/// Items listed (and given a button) of each kind, failed and waiting:
/// Discord allows 25 buttons in 5 rows, and the classes take up to 2 rows.
const LISTED: u32 = 7;

/// Buttons per row (Discord's limit).
const ROW_LEN: usize = 5;

/// How much of an item's last error is quoted.
const ERROR_EXCERPT_CHARS: usize = 100;

/// The permission `/sync-status` and its buttons need.
const NEEDED: Permissions = Permissions::MANAGE_GUILD;

/// The command as registered: for moderators, in guilds only.
pub fn definition() -> CreateCommand {
    CreateCommand::new(STATUS_COMMAND)
        .description("Moderators: the sync queue, failed reports, and retries")
        .default_member_permissions(NEEDED)
        .dm_permission(false)
}

/// What a Retry button retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// One queue item, by its queue id.
    Item(i64),
    /// Every failed or waiting item whose last failure has this class.
    Class(ErrorClass),
}

impl Target {
    fn custom_id(self) -> String {
        match self {
            Target::Item(queue_id) => format!("{RETRY_PREFIX}item:{queue_id}"),
            Target::Class(class) => format!("{RETRY_PREFIX}class:{}", class.as_str()),
        }
    }

    fn parse(custom_id: &str) -> Option<Target> {
        match custom_id.strip_prefix(RETRY_PREFIX)?.split_once(':')? {
            ("item", id) => id.parse().ok().map(Target::Item),
            ("class", class) => ErrorClass::parse(class).map(Target::Class),
            _ => None,
        }
    }
}

/// Whether `custom_id` is one of this module's buttons.
pub fn is_ours(custom_id: &str) -> bool {
    custom_id.starts_with(RETRY_PREFIX)
}

/// Whether the member may see the queue and retry: Manage Server (or
/// Administrator, which Discord treats as every permission). Outside a guild
/// there is no member, and no moderator.
fn may_moderate(member: Option<&Member>) -> bool {
    member
        .and_then(|m| m.permissions)
        .is_some_and(|p| p.contains(NEEDED) || p.administrator())
}

/// The private answer to someone who may not moderate.
fn refusal(what: &str) -> CreateInteractionResponse {
    Reply::private(format!(
        "🔒 {what} is for moderators (the Manage Server permission); nothing was done."
    ))
    .response()
}

/// `/sync-status`: the queue's counts, the failed and waiting items with
/// their error classes, and the Retry buttons.
pub async fn show(ctx: &Context, command: &CommandInteraction, app: &App) {
    if !may_moderate(command.member.as_deref()) {
        tracing::warn!(user_id = %command.user.id, "/{STATUS_COMMAND} refused: not a moderator");
        if let Err(error) = command.create_response(&ctx.http, refusal("/sync-status")).await {
            tracing::warn!(interaction = %command.id, %error, "cannot answer /{STATUS_COMMAND}");
        }
        return;
    }
    let defer = CreateInteractionResponse::Defer(CreateInteractionResponseMessage::new().ephemeral(true));
    if let Err(error) = command.create_response(&ctx.http, defer).await {
        tracing::warn!(interaction = %command.id, %error, "cannot answer /{STATUS_COMMAND}");
        return;
    }
    let edit = status_message(&app.queue, None).await;
    if let Err(error) = command.edit_response(&ctx.http, edit).await {
        tracing::warn!(interaction = %command.id, %error, "cannot send the sync status");
    }
}

/// A Retry button: retries, then shows the status again with what was done.
pub async fn retry(ctx: &Context, component: &ComponentInteraction, app: &App) {
    let user_id = component.user.id;
    if !may_moderate(component.member.as_ref()) {
        tracing::warn!(
            %user_id,
            custom_id = %component.data.custom_id,
            "a sync retry button refused: not a moderator"
        );
        if let Err(error) = component.create_response(&ctx.http, refusal("Retrying")).await {
            tracing::warn!(interaction = %component.id, %error, "cannot answer a retry button");
        }
        return;
    }
    // Acknowledged at once; the message itself is edited below.
    if let Err(error) = component
        .create_response(&ctx.http, CreateInteractionResponse::Acknowledge)
        .await
    {
        tracing::warn!(interaction = %component.id, %error, "cannot answer a retry button");
        return;
    }
    let note = match Target::parse(&component.data.custom_id) {
        None => "❔ This button is from an older keeper; nothing was done. Run /sync-status again.".to_owned(),
        Some(target) => retry_target(app, target, user_id.get()).await,
    };
    let edit = status_message(&app.queue, Some(&note)).await;
    if let Err(error) = component.edit_response(&ctx.http, edit).await {
        tracing::warn!(interaction = %component.id, %error, "cannot update the sync status");
    }
}

/// Retries `target` and says what happened, in one line.
async fn retry_target(app: &App, target: Target, user_id: u64) -> String {
    match target {
        Target::Item(queue_id) => match app.queue.retry(queue_id).await {
            Ok(()) => {
                app.wake.items_due();
                tracing::info!(queue_id, user_id, "sync item marked for retry from Discord");
                format!("🔁 Queue item {queue_id} will be tried again now.")
            }
            Err(RetryRefused::Refused(why)) => {
                tracing::info!(queue_id, user_id, %why, "sync retry from Discord refused");
                format!("ℹ️ Nothing to retry: {why}.")
            }
            Err(RetryRefused::Sql(error)) => {
                tracing::error!(queue_id, user_id, %error, "cannot retry a sync item from Discord");
                "❌ keeper.db could not be written (the log says why); nothing changed. Try again later.".to_owned()
            }
        },
        Target::Class(class) => match app.queue.retry_class(class).await {
            Ok(n) => {
                app.wake.items_due();
                tracing::info!(
                    class = class.as_str(),
                    retried = n,
                    user_id,
                    "sync items retried by class from Discord"
                );
                format!(
                    "🔁 {n} item(s) whose last failure was `{}` will be tried again now.",
                    class.as_str()
                )
            }
            Err(error) => {
                tracing::error!(class = class.as_str(), user_id, %error, "cannot retry sync items from Discord");
                "❌ keeper.db could not be written (the log says why); nothing changed. Try again later.".to_owned()
            }
        },
    }
}

/// The status as an edit of the deferred answer: text and buttons, or what
/// went wrong reading keeper.db.
async fn status_message(queue: &Queue, note: Option<&str>) -> EditInteractionResponse {
    let read = async { Ok::<_, sqlx::Error>((queue.counts().await?, queue.troubles(LISTED).await?)) };
    let (text, rows) = match read.await {
        Ok((counts, troubles)) => render(&counts, &troubles, note),
        Err(error) => {
            tracing::error!(%error, "cannot read the sync queue for /{STATUS_COMMAND}");
            let text = format!(
                "{}❌ keeper.db could not be read (the log says why). Try again later.",
                note.map(|n| format!("{n}\n")).unwrap_or_default()
            );
            (text, Vec::new())
        }
    };
    EditInteractionResponse::new()
        .content(text)
        .components(rows)
        .allowed_mentions(CreateAllowedMentions::new())
}

/// The status text and its button rows. Pure, so its limits (2,000
/// characters, 25 buttons in 5 rows) are unit-tested.
fn render(counts: &QueueCounts, troubles: &Troubles, note: Option<&str>) -> (String, Vec<CreateActionRow>) {
    let waiting = troubles.items.iter().filter(|i| !i.failed).count();
    let mut lines = Vec::new();
    if let Some(note) = note {
        lines.push(note.to_owned());
    }
    lines.push(format!(
        "📊 **Sync queue**: {} pending, {} syncing, {} synced, {} failed.",
        counts.pending, counts.syncing, counts.synced, counts.failed
    ));
    if troubles.items.is_empty() {
        lines.push("✅ Nothing has failed or waits to be retried.".to_owned());
    }
    let failed: Vec<&TroubledItem> = troubles.items.iter().filter(|i| i.failed).collect();
    if !failed.is_empty() {
        lines.push("**Failed** (out of attempts):".to_owned());
        lines.extend(failed.iter().map(|i| item_line(i)));
    }
    if waiting > 0 {
        lines.push("**Waiting to retry** (failed, tried again later):".to_owned());
        lines.extend(troubles.items.iter().filter(|i| !i.failed).map(item_line));
    }
    let listed = i64::try_from(troubles.items.len()).unwrap_or(i64::MAX);
    if troubles.total > listed {
        lines.push(format!(
            "…and {} more (`keeper failed` and `keeper status` list them all).",
            troubles.total - listed
        ));
    }
    let mut text = String::new();
    for line in lines {
        // Whole lines only: a cut line could break a code span.
        if text.chars().count() + line.chars().count() + 1 > MESSAGE_MAX_CHARS {
            break;
        }
        text.push_str(&line);
        text.push('\n');
    }

    let class_buttons = troubles.classes.iter().map(|&(class, n)| {
        CreateButton::new(Target::Class(class).custom_id())
            .label(format!("Retry all {} ({n})", class.as_str()))
            .style(ButtonStyle::Primary)
    });
    let item_buttons = troubles.items.iter().map(|i| {
        CreateButton::new(Target::Item(i.queue_id).custom_id())
            .label(format!("Retry #{}", i.discovery_id))
            .style(ButtonStyle::Secondary)
    });
    let mut rows = rows_of(class_buttons.collect());
    rows.extend(rows_of(item_buttons.collect()));
    rows.truncate(ROW_LEN);
    (text.trim_end().to_owned(), rows)
}

/// Buttons in rows of at most five.
fn rows_of(buttons: Vec<CreateButton>) -> Vec<CreateActionRow> {
    buttons
        .chunks(ROW_LEN)
        .map(|chunk| CreateActionRow::Buttons(chunk.to_vec()))
        .collect()
}

/// `• #12 (queue 14): locked, 2 attempt(s), next try in 5 minutes — database is locked`
fn item_line(item: &TroubledItem) -> String {
    let class = item.class.map_or("unknown", ErrorClass::as_str);
    let mut line = format!(
        "• #{} (queue {}): `{class}`, {} attempt(s)",
        item.discovery_id, item.queue_id, item.attempts
    );
    if let Some(next) = crate::api::timestamp::parse_opt(item.next_retry_after.as_deref()) {
        line.push_str(&format!(", next try <t:{}:R>", next.unix_timestamp()));
    }
    if let Some(error) = item.error.as_deref().map(str::trim).filter(|e| !e.is_empty()) {
        let excerpt: String = error
            .chars()
            .take(ERROR_EXCERPT_CHARS)
            .map(|c| if c.is_control() || c == '`' { ' ' } else { c })
            .collect();
        let more = if error.chars().count() > ERROR_EXCERPT_CHARS {
            "…"
        } else {
            ""
        };
        line.push_str(&format!(" — `{}{more}`", excerpt.trim_end()));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(queue_id: i64, failed: bool, class: Option<ErrorClass>, error: &str) -> TroubledItem {
        TroubledItem {
            queue_id,
            discovery_id: queue_id + 100,
            failed,
            attempts: 3,
            class,
            error: Some(error.to_owned()),
            next_retry_after: (!failed).then(|| "2030-01-01 00:00:00.000".to_owned()),
        }
    }

    fn custom_ids(rows: &[CreateActionRow]) -> Vec<String> {
        let json = serde_json::to_value(rows).expect("rows serialise");
        json.as_array()
            .expect("rows")
            .iter()
            .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
            .map(|b| b["custom_id"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn buttons_name_their_target_and_round_trip() {
        for target in [Target::Item(42), Target::Class(ErrorClass::ReadOnly)] {
            let id = target.custom_id();
            assert!(is_ours(&id));
            assert!(id.chars().count() <= 100, "Discord's custom_id limit");
            assert_eq!(Target::parse(&id), Some(target));
        }
        assert_eq!(Target::parse("keeper-sync-status:retry:class:nonsense"), None);
        assert_eq!(Target::parse("keeper-sync-status:retry:item:x"), None);
        assert_eq!(Target::parse("discovery-report:1"), None);
        assert!(!is_ours("old-bot:approve:7"));
    }

    #[test]
    fn only_manage_server_or_administrator_may_moderate() {
        let member = |permissions: Option<Permissions>| {
            let mut m = Member::default();
            m.permissions = permissions;
            m
        };
        assert!(may_moderate(Some(&member(Some(Permissions::MANAGE_GUILD)))));
        assert!(may_moderate(Some(&member(Some(Permissions::ADMINISTRATOR)))));
        assert!(!may_moderate(Some(&member(Some(Permissions::MANAGE_MESSAGES)))));
        assert!(!may_moderate(Some(&member(None))));
        assert!(!may_moderate(None));
    }

    #[test]
    fn the_status_lists_items_with_their_class_and_fits_discord() {
        let troubles = Troubles {
            items: vec![
                item(1, true, Some(ErrorClass::Schema), "no column `x`\nin discoveries"),
                item(2, false, Some(ErrorClass::Locked), "database is locked"),
                item(3, true, None, &"e".repeat(500)),
            ],
            classes: vec![(ErrorClass::Locked, 1), (ErrorClass::Schema, 4)],
            total: 9,
        };
        let counts = QueueCounts {
            pending: 5,
            syncing: 0,
            synced: 12,
            failed: 4,
        };
        let (text, rows) = render(&counts, &troubles, Some("🔁 done"));
        assert!(
            text.starts_with("🔁 done\n📊 **Sync queue**: 5 pending, 0 syncing, 12 synced, 4 failed."),
            "{text}"
        );
        assert!(
            text.contains("• #101 (queue 1): `schema`, 3 attempt(s) — `no column  x  in discoveries`"),
            "{text}"
        );
        assert!(
            text.contains("• #102 (queue 2): `locked`, 3 attempt(s), next try <t:1893456000:R>"),
            "{text}"
        );
        assert!(text.contains("• #103 (queue 3): `unknown`"), "{text}");
        assert!(text.contains("…and 6 more"), "{text}");
        assert!(text.find("**Failed**") < text.find("**Waiting to retry**"), "{text}");
        assert_eq!(
            custom_ids(&rows),
            [
                "keeper-sync-status:retry:class:locked",
                "keeper-sync-status:retry:class:schema",
                "keeper-sync-status:retry:item:1",
                "keeper-sync-status:retry:item:2",
                "keeper-sync-status:retry:item:3",
            ]
        );

        // The most there can be: every class, LISTED items of each kind with
        // long errors; still one message and at most 25 buttons in 5 rows.
        let classes: Vec<(ErrorClass, i64)> = <ErrorClass as clap::ValueEnum>::value_variants()
            .iter()
            .map(|&c| (c, 1000))
            .collect();
        let most = Troubles {
            items: (0..i64::from(LISTED) * 2)
                .map(|i| {
                    item(
                        1_000_000_000_000 + i,
                        i % 2 == 0,
                        Some(ErrorClass::Full),
                        &"é".repeat(1000),
                    )
                })
                .collect(),
            classes,
            total: i64::MAX,
        };
        let (text, rows) = render(&counts, &most, Some(&"n".repeat(300)));
        assert!(text.chars().count() <= MESSAGE_MAX_CHARS, "{}", text.chars().count());
        assert!(rows.len() <= ROW_LEN);
        let ids = custom_ids(&rows);
        assert!(ids.len() <= 25);
        assert_eq!(
            ids.len(),
            8 + 2 * LISTED as usize,
            "every class and item has its button"
        );

        let (text, rows) = render(&QueueCounts::default(), &Troubles::default(), None);
        assert!(text.contains("✅ Nothing has failed"), "{text}");
        assert!(rows.is_empty());
    }
}
