//! The Discord bot of `keeper run`: `/discovery-report` opens the chosen
//! type's form, and a submitted form is validated, stored with its queue row
//! and confirmed, exactly as `POST /discoveries` and `keeper submit` do.
//!
//! - [`commands`] — the slash command, the modal built from
//!   [`crate::report::DISCOVERY_TYPES`], and what a submission becomes
//! - [`forms`] — the options of forms that are open, between command and submit
//! - [`autocomplete`] — suggestions of systems, planets and moons from VH-Database
//!
//! The bot is one task beside the worker and the API: it never blocks them,
//! a Discord outage only makes it reconnect, and it stops on the same
//! shutdown signal.

mod autocomplete;
mod commands;
mod forms;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serenity::all::{
    ConnectionStage, Context, EventHandler, GatewayIntents, GuildId, Interaction, Ready, ResumedEvent,
    ShardStageUpdateEvent,
};
use serenity::http::HttpBuilder;
use tokio::sync::watch;

use crate::app::App;

pub use commands::{COMMAND_NAME, record};

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
}

impl std::fmt::Debug for BotConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotConfig")
            .field("token", &"<hidden>")
            .field("guild", &self.guild)
            .field("api_base", &self.api_base)
            .finish()
    }
}

impl BotConfig {
    /// The bot's settings, or `None` when `DISCORD_TOKEN` is unset or empty.
    pub fn from_settings(settings: &crate::config::Settings) -> Option<BotConfig> {
        let token = settings
            .discord_token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())?;
        let guild = match settings.discord_guild_id {
            Some(0) => {
                tracing::warn!("DISCORD_GUILD_ID=0 is not a guild id; registering the command globally");
                None
            }
            other => other.map(GuildId::new),
        };
        Some(BotConfig {
            token: token.to_owned(),
            guild,
            api_base: settings.discord_api_base.clone().filter(|b| !b.trim().is_empty()),
        })
    }
}

/// Runs the bot until `stopped` turns true. Never returns an error: a bot
/// that cannot connect is logged and tried again, while the worker and the
/// API go on. `online` says whether the gateway session is up (`/health`).
pub async fn run(app: App, config: BotConfig, online: Arc<AtomicBool>, mut stopped: watch::Receiver<bool>) {
    let forms = Arc::new(forms::Forms::default());
    loop {
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
            online: online.clone(),
        };
        let client = serenity::all::ClientBuilder::new_with_http(http.build(), GatewayIntents::GUILDS)
            .event_handler(handler)
            .await;
        let outcome = match client {
            Err(error) => Err(error),
            Ok(mut client) => {
                let shards = client.shard_manager.clone();
                tokio::select! {
                    result = client.start() => result,
                    _ = stop_requested(&mut stopped) => {
                        shards.shutdown_all().await;
                        online.store(false, Ordering::Relaxed);
                        tracing::info!("Discord bot disconnected");
                        return;
                    }
                }
            }
        };
        online.store(false, Ordering::Relaxed);
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

/// Resolves once `stopped` is true (or its sender is gone).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|&stop| stop).await;
}

/// serenity's callbacks: one per gateway event we care about.
struct Handler {
    app: App,
    guild: Option<GuildId>,
    forms: Arc<forms::Forms>,
    online: Arc<AtomicBool>,
}

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn ready(&self, ctx: Context, ready: Ready) {
        self.online.store(true, Ordering::Relaxed);
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
        self.online.store(true, Ordering::Relaxed);
        tracing::info!("Discord gateway session resumed");
    }

    async fn shard_stage_update(&self, _ctx: Context, event: ShardStageUpdateEvent) {
        self.online
            .store(event.new == ConnectionStage::Connected, Ordering::Relaxed);
    }

    async fn interaction_create(&self, ctx: Context, interaction: Interaction) {
        match interaction {
            Interaction::Command(command) if command.data.name == COMMAND_NAME => {
                commands::open_form(&ctx, &command, &self.forms).await;
            }
            Interaction::Autocomplete(command) if command.data.name == COMMAND_NAME => {
                autocomplete::answer(&ctx, &command, &self.app.sink()).await;
            }
            Interaction::Modal(modal) => {
                if let Some(nonce) = forms::nonce_of(&modal.data.custom_id) {
                    commands::submit(&ctx, &modal, nonce, &self.forms, &self.app).await;
                }
            }
            _ => {}
        }
    }
}
