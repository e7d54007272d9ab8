//! The gateway session's real state, for `/health` and `/metrics`.
//!
//! serenity's `shard_stage_update` event misses transitions (a failed resume
//! or a restarted shard fires none), so the state is read from the shard
//! manager itself, which every runner updates, and a shard the manager no
//! longer lists is a disconnected one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use serenity::all::{ConnectionStage, ShardManager};

/// How often the shard manager is looked at: an outage shows in `/health`
/// within this.
const POLL: Duration = Duration::from_millis(250);

/// Where the bot's gateway session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "snake_case")]
pub enum GatewayState {
    /// No `DISCORD_TOKEN`: this process runs no bot.
    Disabled,
    /// Not connected, and not yet trying again.
    Disconnected,
    /// Opening a new session (connecting, handshake, identifying).
    Connecting,
    /// Taking an interrupted session up again (RESUME sent).
    Resuming,
    /// A live session: interactions are received and answered.
    Connected,
}

impl GatewayState {
    pub const ALL: [GatewayState; 5] = [
        GatewayState::Disabled,
        GatewayState::Disconnected,
        GatewayState::Connecting,
        GatewayState::Resuming,
        GatewayState::Connected,
    ];

    /// The name used in `/health` and as the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            GatewayState::Disabled => "disabled",
            GatewayState::Disconnected => "disconnected",
            GatewayState::Connecting => "connecting",
            GatewayState::Resuming => "resuming",
            GatewayState::Connected => "connected",
        }
    }

    fn from_stage(stage: ConnectionStage) -> GatewayState {
        match stage {
            ConnectionStage::Connected => GatewayState::Connected,
            ConnectionStage::Resuming => GatewayState::Resuming,
            ConnectionStage::Disconnected => GatewayState::Disconnected,
            _ => GatewayState::Connecting,
        }
    }
}

/// The state, shared between the bot (writer) and the API (reader).
#[derive(Debug)]
pub struct Gateway(AtomicU8);

impl Default for Gateway {
    fn default() -> Gateway {
        Gateway(AtomicU8::new(GatewayState::Disabled as u8))
    }
}

impl Gateway {
    pub fn state(&self) -> GatewayState {
        let raw = self.0.load(Ordering::Relaxed);
        GatewayState::ALL
            .into_iter()
            .find(|s| *s as u8 == raw)
            .unwrap_or(GatewayState::Disconnected)
    }

    /// True only with a live session.
    pub fn online(&self) -> bool {
        self.state() == GatewayState::Connected
    }

    pub fn set(&self, state: GatewayState) {
        let old = self.0.swap(state as u8, Ordering::Relaxed);
        if old != state as u8 {
            tracing::info!(gateway = state.as_str(), "Discord gateway {}", state.as_str());
        }
    }
}

/// Follows the shard manager's view of this process's shards until
/// cancelled: connected when every one is, else the state of the first that
/// is not (a host running shards 0-1 with shard 1 down cannot answer half
/// its guilds).
pub async fn follow(shards: Arc<ShardManager>, gateway: Arc<Gateway>) {
    loop {
        let state = {
            let runners = shards.runners.lock().await;
            let mut states = runners.values().map(|runner| GatewayState::from_stage(runner.stage));
            match states.find(|s| *s != GatewayState::Connected) {
                Some(state) => state,
                None if runners.is_empty() => GatewayState::Disconnected,
                None => GatewayState::Connected,
            }
        };
        gateway.set(state);
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_only_connected_is_online() {
        let gateway = Gateway::default();
        assert_eq!(gateway.state(), GatewayState::Disabled);
        for state in GatewayState::ALL {
            gateway.set(state);
            assert_eq!(gateway.state(), state);
            assert_eq!(gateway.online(), state == GatewayState::Connected);
        }
    }
}
