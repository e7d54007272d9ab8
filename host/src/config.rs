//! Settings shared by every command: the environment variables of the old bot
//! (read from the process and from `.env`), each overridable by a flag.
//!
//! Resolution rules that are not plain defaults (where VH-Database is, the API
//! bind address) live here so that the worker, the API and the CLI agree.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::mapper::Limits;
use crate::queue::RetryPolicy;

/// Global options; every one has an environment variable of the same meaning.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// The bot's database; created if missing, adopted in place if it exists.
    #[arg(long, global = true, env = "KEEPER_DB_PATH", default_value = "data/keeper.db")]
    pub keeper_db: PathBuf,

    /// The Control Room database. When set and missing it is NOT created:
    /// items wait and retry. When unset: ~/Desktop/Haven_mdev/data/VH-Database.db
    /// if it exists, else data/VH-Database.db (created with the VH schema).
    #[arg(long, global = true, env = "HAVEN_DB_PATH")]
    pub haven_db: Option<PathBuf>,

    /// `false`: remote mode; this process never writes VH-Database.
    #[arg(long, global = true, env = "USE_HAVEN_DATABASE", default_value_t = true, action = clap::ArgAction::Set)]
    pub use_haven_database: bool,

    /// Seconds between polls of the queue (the worker also wakes on a submission).
    #[arg(long, global = true, env = "SYNC_INTERVAL", default_value_t = 30)]
    pub sync_interval: u64,

    /// Items claimed per batch.
    #[arg(long, global = true, env = "SYNC_BATCH_SIZE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub sync_batch_size: u32,

    /// Failed attempts before an item becomes `max_retries_exceeded`.
    #[arg(long, global = true, env = "SYNC_MAX_ATTEMPTS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub sync_max_attempts: u32,

    /// Seconds before the first retry; each later one waits twice as long.
    #[arg(long, global = true, env = "SYNC_RETRY_BASE", default_value_t = 30)]
    pub sync_retry_base: u64,

    /// Longest wait between two retries, in seconds.
    #[arg(long, global = true, env = "SYNC_RETRY_MAX", default_value_t = 86_400)]
    pub sync_retry_max: u64,

    /// Seconds a claimed batch stays owned by its worker without renewal;
    /// a killed worker's items are claimable again after this.
    #[arg(long, global = true, env = "SYNC_LEASE", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub sync_lease: u64,

    /// How long a write waits for a lock on VH-Database before the batch
    /// fails with "database is locked" (milliseconds).
    #[arg(long, global = true, env = "HAVEN_BUSY_TIMEOUT_MS", default_value_t = 5_000)]
    pub haven_busy_timeout_ms: u64,

    /// Watched for `.wasm` mapping plugins.
    #[arg(long, global = true, env = "KEEPER_PLUGINS_DIR", default_value = "plugins")]
    pub plugins_dir: PathBuf,

    /// Look for new or changed plugins by scanning the plugins folder every
    /// SECS seconds instead of waiting for the system's file events: for
    /// folders that send none (Docker bind mounts, network shares).
    #[arg(long, global = true, env = "KEEPER_PLUGINS_POLL", value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub plugins_poll: Option<u64>,

    /// Deadline of one plugin call, in milliseconds (default: the contract's 100).
    #[arg(long, global = true, env = "KEEPER_PLUGIN_TIMEOUT_MS", value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub plugin_timeout_ms: Option<u64>,

    /// Memory cap of one plugin instance, in MiB (default: the contract's 32).
    #[arg(long, global = true, env = "KEEPER_PLUGIN_MEMORY_MIB", value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub plugin_memory_mib: Option<u64>,

    /// Sync API port.
    #[arg(long, global = true, env = "SYNC_API_PORT", default_value_t = 8080)]
    pub sync_api_port: u16,

    /// Sync API bind address; 127.0.0.1 unless an API key is set (then 0.0.0.0).
    #[arg(long, global = true, env = "SYNC_API_HOST")]
    pub sync_api_host: Option<IpAddr>,

    /// When set, every endpoint but /health requires header X-API-Key.
    #[arg(long, global = true, env = "SYNC_API_KEY", hide_env_values = true)]
    pub sync_api_key: Option<String>,

    /// Discord bot token; without it everything runs but the bot.
    #[arg(long, global = true, env = "DISCORD_TOKEN", hide_env_values = true)]
    pub discord_token: Option<String>,

    /// Register slash commands in this guild only (instant) instead of globally.
    #[arg(long, global = true, env = "DISCORD_GUILD_ID")]
    pub discord_guild_id: Option<u64>,

    /// Testing knob, not for production: send the bot's Discord HTTP calls to
    /// this base URL (e.g. `http://127.0.0.1:9000`, a fake Discord) instead of
    /// https://discord.com. The gateway URL is whatever that server answers.
    #[arg(long, global = true, env = "DISCORD_API_BASE", hide = true)]
    pub discord_api_base: Option<String>,
}

/// Where VH-Database is and whether we may create it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HavenLocation {
    pub path: PathBuf,
    /// Only the built-in default location is ever created; a path the
    /// operator named must already exist, or items wait for it.
    pub create_if_missing: bool,
}

impl Settings {
    pub fn haven_location(&self) -> HavenLocation {
        if let Some(path) = &self.haven_db {
            return HavenLocation {
                path: path.clone(),
                create_if_missing: false,
            };
        }
        if let Some(home) = std::env::var_os("HOME") {
            let legacy = PathBuf::from(home).join("Desktop/Haven_mdev/data/VH-Database.db");
            if legacy.is_file() {
                return HavenLocation {
                    path: legacy,
                    create_if_missing: false,
                };
            }
        }
        HavenLocation {
            path: PathBuf::from("data/VH-Database.db"),
            create_if_missing: true,
        }
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(self.sync_retry_base),
            max_delay: Duration::from_secs(self.sync_retry_max),
            max_attempts: self.sync_max_attempts,
        }
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.sync_lease)
    }

    /// The plugin sandbox's limits: the contract's defaults unless overridden.
    pub fn plugin_limits(&self) -> Limits {
        let mut limits = Limits::default();
        if let Some(ms) = self.plugin_timeout_ms {
            limits.deadline = Duration::from_millis(ms);
        }
        if let Some(mib) = self.plugin_memory_mib.and_then(|m| usize::try_from(m).ok()) {
            limits.memory_bytes = mib << 20;
        }
        limits
    }

    /// Where compiled plugins are kept between runs: beside keeper.db, since
    /// that is the one folder the operator has already given us to write in.
    pub fn plugin_cache_dir(&self) -> PathBuf {
        let dir = self.keeper_db.parent().filter(|d| !d.as_os_str().is_empty());
        dir.unwrap_or(std::path::Path::new(".")).join("plugin-cache")
    }

    /// The API key, if one is set (an empty `SYNC_API_KEY=` counts as unset).
    pub fn api_key(&self) -> Option<&str> {
        self.sync_api_key.as_deref().filter(|k| !k.is_empty())
    }

    /// Where the API listens: `SYNC_API_HOST`, else all interfaces when an
    /// API key protects it, else loopback only.
    pub fn api_addr(&self) -> SocketAddr {
        let host = self.sync_api_host.unwrap_or(if self.api_key().is_some() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        });
        SocketAddr::new(host, self.sync_api_port)
    }

    pub fn haven_busy_timeout(&self) -> Duration {
        Duration::from_millis(self.haven_busy_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: Settings,
    }

    /// Settings from `args` alone: every argument's environment variable is
    /// switched off, so the shell running the tests (say, one with
    /// `SYNC_API_HOST` set) cannot change the outcome.
    fn settings(args: &[&str]) -> Settings {
        use clap::{CommandFactory, FromArgMatches};
        let mut argv = vec!["keeper"];
        argv.extend_from_slice(args);
        let command = Cli::command().mut_args(|arg| arg.env(None::<&str>));
        let matches = command.try_get_matches_from(argv).unwrap();
        Cli::from_arg_matches(&matches).unwrap().settings
    }

    #[test]
    fn api_binds_loopback_unless_a_key_protects_it() {
        // Flags only: `settings` ignores the environment.
        let open = settings(&["--sync-api-port", "8080", "--sync-api-key", ""]);
        assert_eq!(open.api_key(), None);
        assert_eq!(open.api_addr(), "127.0.0.1:8080".parse().unwrap());
        let keyed = settings(&["--sync-api-port", "8080", "--sync-api-key", "k"]);
        assert_eq!(keyed.api_addr(), "0.0.0.0:8080".parse().unwrap());
        let pinned = settings(&[
            "--sync-api-port",
            "9",
            "--sync-api-key",
            "k",
            "--sync-api-host",
            "127.0.0.1",
        ]);
        assert_eq!(pinned.api_addr(), "127.0.0.1:9".parse().unwrap());
    }
}
