//! The Discord bot of `keeper run`: `/discovery-report` opens the chosen
//! type's form, and a submitted form is validated, stored with its queue row
//! and confirmed, exactly as `POST /discoveries` and `keeper submit` do.
//!
//! - [`commands`] — the slash command, the modal built from
//!   [`crate::report::discovery_types`], and what a submission becomes
//! - [`forms`] — the options of forms that are open, between command and
//!   submit, kept in keeper.db
//! - [`reply`] — answers within Discord's 3 s, refusals that give the text back
//! - [`attachments`] — an attached image kept at submit time, so its link lasts
//! - [`autocomplete`] — suggestions of systems, planets and moons from VH-Database
//! - [`names`] — case- and accent-insensitive matching, "did you mean"
//! - [`placement`] — whether a report will land on the map, said in the confirmation
//! - [`gateway`] — the gateway session's state, for `/health` and `/metrics`
//! - [`notices`] — telling reporters and moderators what became of a report
//! - [`moderation`] — `/sync-status`: the queue, failed items and Retry buttons for moderators
//!
//! The bot is one task beside the worker and the API: it never blocks them,
//! a Discord outage only makes it reconnect, and it stops on the same
//! shutdown signal.

mod attachments;
mod autocomplete;
mod commands;
mod forms;
mod gateway;
mod moderation;
mod names;
mod notices;
mod placement;
mod reply;
mod tables;

use std::sync::Arc;
use std::time::Duration;

use serenity::all::{
    ChannelId, CommandInteraction, ComponentInteraction, Context, CreateInteractionResponse, EventHandler,
    GatewayIntents, GuildId, Interaction, ModalInteraction, Ready, ResumedEvent,
};
use serenity::http::HttpBuilder;
use tokio::sync::watch;

use crate::app::App;
use crate::config::Sharding;

pub use commands::{COMMAND_NAME, record};
pub use gateway::{Gateway, GatewayState};

/// How long to wait before starting the client again after it gave up
/// (Discord unreachable at start-up, a rejected token).
const RESTART_DELAY: Duration = Duration::from_secs(30);

/// What the bot needs besides the databases. Its `Debug` leaves the token out,
/// so the secret cannot reach a log by accident.
#[derive(Clone)]
pub struct BotConfig {
    /// The bot token (`DISCORD_TOKEN`).
    pub token: String,
    /// Register the command in this guild only (`DISCORD_GUILD_ID`), else globally.
    pub guild: Option<GuildId>,
    /// Where Discord's HTTP API is, when not https://discord.com (tests).
    pub api_base: Option<String>,
    /// Who is told what, and when (`KEEPER_ALERT_CHANNEL_ID`, `KEEPER_SLOW_SYNC_SECS`).
    pub notices: notices::NoticeRules,
    /// The gateway shards this process runs (`DISCORD_SHARDS` of `DISCORD_SHARD_COUNT`).
    pub sharding: Sharding,
}

impl std::fmt::Debug for BotConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotConfig")
            .field("token", &"<hidden>")
            .field("guild", &self.guild)
            .field("api_base", &self.api_base)
            .field("notices", &self.notices)
            .field("sharding", &self.sharding)
            .finish()
    }
}

impl BotConfig {
    /// The bot's settings, or `None` when `DISCORD_TOKEN` is unset or empty.
    pub fn from_settings(settings: &crate::config::Settings) -> Result<Option<BotConfig>, crate::config::ConfigError> {
        let sharding = settings.discord_sharding()?;
        let Some(token) = settings
            .discord_token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            return Ok(None);
        };
        let guild = match settings.discord_guild()? {
            Some(0) => {
                tracing::warn!("DISCORD_GUILD_ID=0 is not a guild id; registering the command globally");
                None
            }
            other => other.map(GuildId::new),
        };
        Ok(Some(BotConfig {
            token: token.to_owned(),
            guild,
            api_base: settings.discord_api_base.clone().filter(|b| !b.trim().is_empty()),
            notices: notices::NoticeRules {
                alert_channel: settings.alert_channel_id.filter(|&c| c != 0).map(ChannelId::new),
                slow_after: Duration::from_secs(settings.slow_sync_secs),
                token_lifetime: Duration::from_secs(settings.discord_interaction_secs),
            },
            sharding,
        }))
    }
}

/// Runs the bot until `stopped` turns true. Never returns an error: a bot
/// that cannot connect is logged and tried again, while the worker and the
/// API go on. `gateway` follows the session's state (`/health`, `/metrics`).
pub async fn run(app: App, config: BotConfig, gateway: Arc<Gateway>, mut stopped: watch::Receiver<bool>) {
    let forms = Arc::new(forms::Forms::new(app.store.db().clone()));
    let attachments = attachments::Attachments::new(&app);
    loop {
        gateway.set(GatewayState::Connecting);
        let mut http = HttpBuilder::new(&config.token);
        if let Some(base) = &config.api_base {
            tracing::warn!(api_base = %base, "Discord API base overridden (testing knob DISCORD_API_BASE)");
            // serenity puts this in place of https://discord.com; a fake has no rate limits.
            http = http.proxy(base.trim_end_matches('/')).ratelimiter_disabled(true);
        }
        let handler = Handler {
            app: app.clone(),
            guild: config.guild,
            forms: forms.clone(),
            attachments: attachments.clone(),
        };
        let client = serenity::all::ClientBuilder::new_with_http(http.build(), GatewayIntents::GUILDS)
            .event_handler(handler)
            .await;
        let outcome = match client {
            Err(error) => Err(error),
            Ok(mut client) => {
                let shards = client.shard_manager.clone();
                let news = notices::follow(app.store.db().clone(), client.http.clone(), config.notices);
                tokio::select! {
                    result = start(&mut client, config.sharding) => result,
                    () = gateway::follow(shards.clone(), gateway.clone()) => Ok(()),
                    () = news => Ok(()),
                    _ = stop_requested(&mut stopped) => {
                        shards.shutdown_all().await;
                        gateway.set(GatewayState::Disconnected);
                        tracing::info!("Discord bot disconnected");
                        return;
                    }
                }
            }
        };
        gateway.set(GatewayState::Disconnected);
        match outcome {
            Ok(()) => tracing::warn!(
                retry_in_s = RESTART_DELAY.as_secs(),
                "Discord bot stopped; starting it again"
            ),
            Err(error) => tracing::error!(
                %error,
                retry_in_s = RESTART_DELAY.as_secs(),
                "Discord bot cannot run (check DISCORD_TOKEN and the network); trying again"
            ),
        }
        tokio::select! {
            _ = tokio::time::sleep(RESTART_DELAY) => {}
            _ = stop_requested(&mut stopped) => return,
        }
    }
}

/// Starts the gateway shards this process runs.
async fn start(client: &mut serenity::Client, sharding: Sharding) -> serenity::Result<()> {
    match sharding {
        Sharding::Single => client.start().await,
        Sharding::Range { first, last, count } => {
            tracing::info!(
                first,
                last,
                count,
                "Discord gateway: shards {first} to {last} of {count}"
            );
            // serenity 0.12 takes the range's end as the last shard to run
            // (inclusive), unlike Rust's ranges: `first..last` runs both.
            client.start_shard_range(first..last, count).await
        }
    }
}

/// Resolves once `stopped` is true (or its sender is gone).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|&stop| stop).await;
}

/// serenity's callbacks: one per gateway event we care about.
struct Handler {
    app: App,
    guild: Option<GuildId>,
    forms: Arc<forms::Forms>,
    attachments: attachments::Attachments,
}

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn ready(&self, ctx: Context, ready: Ready) {
        tracing::info!(
            bot = %ready.user.name,
            bot_id = %ready.user.id,
            guilds = ready.guilds.len(),
            "🤖 Discord bot connected as {}",
            ready.user.name
        );
        commands::register(&ctx, self.guild).await;
    }

    async fn resume(&self, _ctx: Context, _event: ResumedEvent) {
        tracing::info!("Discord gateway session resumed");
    }

    async fn interaction_create(&self, ctx: Context, interaction: Interaction) {
        match interaction {
            Interaction::Command(command) if command.data.name == COMMAND_NAME => {
                commands::open_form(&ctx, &command, &self.forms).await;
            }
            Interaction::Command(command) if command.data.name == moderation::STATUS_COMMAND => {
                moderation::show(&ctx, &command, &self.app).await;
            }
            Interaction::Component(component) if moderation::is_ours(&component.data.custom_id) => {
                moderation::retry(&ctx, &component, &self.app).await;
            }
            Interaction::Autocomplete(command) if command.data.name == COMMAND_NAME => {
                autocomplete::answer(&ctx, &command, &self.app.sink()).await;
            }
            Interaction::Modal(modal) => match forms::nonce_of(&modal.data.custom_id) {
                Some(nonce) => commands::submit(&ctx, &modal, nonce, &self.forms, &self.app, &self.attachments).await,
                None => not_ours(&ctx, Unknown::Modal(&modal)).await,
            },
            Interaction::Command(command) => not_ours(&ctx, Unknown::Command(&command)).await,
            Interaction::Component(component) => not_ours(&ctx, Unknown::Component(&component)).await,
            // An autocomplete of a command we do not own: nothing to suggest,
            // and Discord shows no error for an unanswered one.
            _ => {}
        }
    }
}

/// An interaction keeper does not handle: a command, button or form of the
/// old bot that shares the application, or of an older registration.
#[derive(Clone, Copy)]
enum Unknown<'a> {
    Command(&'a CommandInteraction),
    Component(&'a ComponentInteraction),
    Modal(&'a ModalInteraction),
}

/// Answers an interaction keeper does not handle with a short private note,
/// instead of Discord's "The application did not respond".
async fn not_ours(ctx: &Context, interaction: Unknown<'_>) {
    let (id, what, text) = match interaction {
        Unknown::Command(c) => (
            c.id,
            format!("/{}", c.data.name),
            format!(
                "❔ /{} is not available any more: this bot now runs Keeper, which answers \
                 /{COMMAND_NAME}.",
                c.data.name
            ),
        ),
        Unknown::Component(c) => (
            c.id,
            format!("component {}", c.data.custom_id),
            "❔ This button or menu belongs to a bot that no longer runs; nothing was done.".to_owned(),
        ),
        Unknown::Modal(m) => (
            m.id,
            format!("form {}", m.data.custom_id),
            "❔ This form belongs to a bot that no longer runs; nothing was saved. Please use \
             /discovery-report."
                .to_owned(),
        ),
    };
    tracing::info!(interaction = %id, what = %what, "an interaction keeper does not handle");
    let response: CreateInteractionResponse = reply::Reply::private(text).response();
    let sent = match interaction {
        Unknown::Command(c) => c.create_response(&ctx.http, response).await,
        Unknown::Component(c) => c.create_response(&ctx.http, response).await,
        Unknown::Modal(m) => m.create_response(&ctx.http, response).await,
    };
    if let Err(error) = sent {
        tracing::warn!(interaction = %id, %error, "cannot answer an interaction keeper does not handle");
    }
}
