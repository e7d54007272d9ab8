//! Settings shared by every command: the environment variables of the old bot
//! (read from the process and from `.env`), each overridable by a flag.
//!
//! Resolution rules that are not plain defaults (where VH-Database is, the API
//! bind address) live here so that the worker, the API and the CLI agree.
//!
//! - [`dotenv`] — `.env` files and the old bot's variable names
//! - [`shards`] — which of the bot's gateway shards this process runs

mod dotenv;
mod haven_search;
mod shards;

pub use haven_search::{Search, SearchRoots};
pub use shards::{ShardSpan, Sharding};

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

pub use dotenv::{ALIASES, Environment, Source};

use crate::mapper::Limits;
use crate::queue::RetryPolicy;

/// A setting with a value keeper cannot use, named as the user wrote it:
/// the variable (and the `.env` file it came from) and the flag.
#[derive(Debug, thiserror::Error)]
#[error("{setting}{value}: {reason}; correct it there, or override it with --{flag}")]
pub struct ConfigError {
    setting: String,
    /// ` = "…"`, or nothing for a secret.
    value: String,
    flag: String,
    reason: String,
}

/// A `KEEPER_DATABASE_URL`: PostgreSQL is the one server keeper speaks.
pub fn parse_database_url(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        Ok(text.to_owned())
    } else {
        Err("expected a PostgreSQL URL, postgres://USER:PASSWORD@HOST:PORT/DATABASE (unset it to use keeper.db)".into())
    }
}

/// Booleans as the old bot's `.env` writes them (`True`, `1`, `yes`, …).
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false (or yes/no, on/off, 1/0)".into()),
    }
}

/// Turns clap's complaint about a value that came from a variable (not from
/// the command line) into a [`ConfigError`] naming the variable and its
/// `.env` file; `None` for anything else, which clap reports best itself.
pub fn explain(cmd: &clap::Command, error: &clap::Error, argv: &[OsString], env: &Environment) -> Option<ConfigError> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(error.kind(), ErrorKind::ValueValidation | ErrorKind::InvalidValue) {
        return None;
    }
    let Some(ContextValue::String(shown)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = shown.split_whitespace().next()?.strip_prefix("--")?;
    let arg = cmd.get_arguments().find(|a| a.get_long() == Some(long))?;
    let given = argv
        .iter()
        .filter_map(|a| a.to_str())
        .take_while(|a| *a != "--")
        .any(|a| a == format!("--{long}") || a.starts_with(&format!("--{long}=")));
    if given {
        return None;
    }
    let name = arg.get_env()?.to_str()?;
    let value = match error.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) if !arg.is_hide_env_values_set() => format!(" = {v:?}"),
        _ => String::new(),
    };
    let reason = std::error::Error::source(error).map_or_else(|| error.kind().to_string(), |source| source.to_string());
    Some(ConfigError {
        setting: env.describe(name),
        value,
        flag: long.to_owned(),
        reason,
    })
}

/// The longest `SYNC_API_PUBLIC_URL`: `URL/evidence/ID` must fit in a
/// report's `evidence_url`.
const PUBLIC_URL_MAX_CHARS: usize = 1000;

/// `SYNC_API_PUBLIC_URL`: an `http://` or `https://` URL with a host, without
/// its trailing `/`.
pub fn parse_public_url(text: &str) -> Result<String, String> {
    let url = text.trim().trim_end_matches('/');
    let rest = ["http://", "https://"]
        .iter()
        .find_map(|scheme| {
            url.get(..scheme.len())
                .filter(|p| p.eq_ignore_ascii_case(scheme))
                .map(|_| &url[scheme.len()..])
        })
        .ok_or("expected a URL starting with http:// or https://, e.g. https://bot.example.org:8080")?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err("the URL has no host".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the URL contains spaces or control characters".into());
    }
    if url.chars().count() > PUBLIC_URL_MAX_CHARS {
        return Err(format!("longer than {PUBLIC_URL_MAX_CHARS} characters"));
    }
    Ok(url.to_owned())
}

/// `~` at the start of a path is the home folder, as in a shell: a `.env`
/// file has no shell to expand it.
pub fn expand_home(path: &Path, home: Option<&Path>) -> PathBuf {
    let mut components = path.components();
    match (components.next(), home) {
        (Some(Component::Normal(first)), Some(home)) if first == "~" => home.join(components.as_path()),
        _ => path.to_owned(),
    }
}

/// Global options; every one has an environment variable of the same meaning.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// The bot's database; created if missing, adopted in place if it exists.
    #[arg(long, global = true, env = "KEEPER_DB_PATH", default_value = "data/keeper.db")]
    pub keeper_db: PathBuf,

    /// A PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE): keeper's
    /// store and queue live there instead of keeper.db, shared by every host
    /// given the same URL. Unset: keeper.db.
    #[arg(long, global = true, env = "KEEPER_DATABASE_URL", hide_env_values = true, value_parser = parse_database_url)]
    pub keeper_database_url: Option<String>,

    /// The Control Room database. When set and missing it is NOT created:
    /// items wait and retry. When unset: the first that exists of
    /// DESKTOP/Haven_mdev/data/VH-Database.db, DESKTOP/untitled folder/Haven_mdev/...
    /// (the platform's Desktop, then HOME/Desktop), ../../../Haven_mdev/...,
    /// ../../Haven_mdev/..., ../Haven_mdev/...; else data/VH-Database.db
    /// (created with the VH schema).
    #[arg(long, global = true, env = "HAVEN_DB_PATH")]
    pub haven_db: Option<PathBuf>,

    /// `false`: remote mode; this process never writes VH-Database
    /// (true/false, yes/no, on/off or 1/0, any letter case).
    #[arg(long, global = true, env = "USE_HAVEN_DATABASE", default_value_t = true, action = clap::ArgAction::Set, value_parser = parse_bool)]
    pub use_haven_database: bool,

    /// Seconds between polls of the queue (the worker also wakes on a submission).
    #[arg(long, global = true, env = "SYNC_INTERVAL", default_value_t = 30)]
    pub sync_interval: u64,

    /// Items claimed per batch when the queue is short.
    #[arg(long, global = true, env = "SYNC_BATCH_SIZE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub sync_batch_size: u32,

    /// How this host names itself in the queue items it claims
    /// (`sync_queue.claimed_by`); unset: the machine's name and process id.
    #[arg(long, global = true, env = "KEEPER_HOST_NAME")]
    pub keeper_host_name: Option<String>,

    /// How large batches may grow with a backlog: each claim that comes back
    /// full doubles the next, up to this (never below SYNC_BATCH_SIZE). The
    /// worker holds two batches at once (one written while the next is
    /// mapped), so this bounds its memory: 500 drains as fast as 1,000 did
    /// and keeps a drain's peak under 40 MiB.
    #[arg(long, global = true, env = "SYNC_BATCH_MAX", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub sync_batch_max: u32,

    /// While reports stream in (at least SYNC_BATCH_SIZE submitted here
    /// since the worker's last claim), milliseconds between two claims, each
    /// of up to SYNC_BATCH_MAX: the worker syncs a stream in few large
    /// batches and leaves the cores and keeper.db's write lock to intake
    /// during a burst (500 per 100 ms: up to 5,000 reports a second). A
    /// trickle, and a backlog with no stream, never wait. 0: never wait.
    #[arg(long, global = true, env = "SYNC_COOLDOWN_MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub sync_cooldown_ms: u64,

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

    /// Look in the store every SECS seconds for a plugin activated by
    /// another process on it (another host on the same PostgreSQL
    /// database, another process on the same keeper.db) and switch to it.
    /// On PostgreSQL an activation also wakes the other hosts at once
    /// (`LISTEN/NOTIFY`); this is the fallback when that connection is down.
    #[arg(long, global = true, env = "KEEPER_PLUGINS_FOLLOW_SECS", value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub plugins_follow_secs: u64,

    /// Deadline of one plugin call, in milliseconds (default: the contract's 100).
    #[arg(long, global = true, env = "KEEPER_PLUGIN_TIMEOUT_MS", value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub plugin_timeout_ms: Option<u64>,

    /// Memory cap of one plugin instance, in MiB (default: the contract's 32).
    #[arg(long, global = true, env = "KEEPER_PLUGIN_MEMORY_MIB", value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub plugin_memory_mib: Option<u64>,

    /// The largest plugin component keeper compiles, in MiB (default 32):
    /// compiling takes memory in proportion to its size, and one larger is
    /// refused. At least 8 (the built-in plugin is 3 MB), at most 64 (a
    /// larger file is never read).
    #[arg(long, global = true, env = "KEEPER_PLUGIN_SIZE_MIB", value_parser = clap::value_parser!(u64).range(8..=64))]
    pub plugin_size_mib: Option<u64>,

    /// A canary plugin is rolled back once its failure rate exceeds the
    /// active plugin's by more than this many percentage points.
    #[arg(long, global = true, env = "KEEPER_CANARY_MARGIN_PERCENT", default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub canary_margin_percent: u8,

    /// Items a canary maps before its failure rate is judged (a canary with
    /// a smaller count is judged when it reaches that count).
    #[arg(long, global = true, env = "KEEPER_CANARY_MIN_ITEMS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub canary_min_items: u32,

    /// Sync API port.
    #[arg(long, global = true, env = "SYNC_API_PORT", default_value_t = 8080)]
    pub sync_api_port: u16,

    /// Sync API bind address; 127.0.0.1 unless an API key is set (then 0.0.0.0).
    #[arg(long, global = true, env = "SYNC_API_HOST")]
    pub sync_api_host: Option<IpAddr>,

    /// When set, every endpoint but /health requires header X-API-Key.
    #[arg(long, global = true, env = "SYNC_API_KEY", hide_env_values = true)]
    pub sync_api_key: Option<String>,

    /// Serve the sync API over HTTPS with this certificate (PEM; the chain,
    /// server first). Needs SYNC_API_TLS_KEY; unset: plain HTTP (behind a
    /// platform's TLS edge, or on a private network).
    #[arg(long, global = true, env = "SYNC_API_TLS_CERT", value_name = "FILE")]
    pub sync_api_tls_cert: Option<PathBuf>,

    /// The private key of SYNC_API_TLS_CERT (PEM).
    #[arg(long, global = true, env = "SYNC_API_TLS_KEY", value_name = "FILE")]
    pub sync_api_tls_key: Option<PathBuf>,

    /// Discord bot token; without it everything runs but the bot.
    #[arg(long, global = true, env = "DISCORD_TOKEN", hide_env_values = true)]
    pub discord_token: Option<String>,

    /// Register slash commands in this guild only (instant) instead of globally.
    /// Checked when the bot starts (see [`Settings::discord_guild`]), so the old
    /// bot's placeholder does not stop commands that have no bot.
    #[arg(long, global = true, env = "DISCORD_GUILD_ID")]
    pub discord_guild_id: Option<String>,

    /// The bot's gateway shards this process runs: one (`1`) or a range
    /// (`0-1`) of DISCORD_SHARD_COUNT, so that several hosts with one token
    /// split Discord's events between them. Unset: one shard, or every
    /// shard of DISCORD_SHARD_COUNT.
    #[arg(long, global = true, env = "DISCORD_SHARDS", value_name = "N|FIRST-LAST", value_parser = shards::parse_shard_span)]
    pub discord_shards: Option<ShardSpan>,

    /// How many gateway shards the bot has, on all hosts together (give
    /// every host the same count).
    #[arg(long, global = true, env = "DISCORD_SHARD_COUNT", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub discord_shard_count: Option<u32>,

    /// Testing knob, not for production: send the bot's Discord HTTP calls to
    /// this base URL (e.g. `http://127.0.0.1:9000`, a fake Discord) instead of
    /// https://discord.com. The gateway URL is whatever that server answers.
    #[arg(long, global = true, env = "DISCORD_API_BASE", hide = true)]
    pub discord_api_base: Option<String>,

    /// Discord channel where moderators are told of reports that wait long
    /// on retries or fail for good.
    #[arg(long, global = true, env = "KEEPER_ALERT_CHANNEL_ID")]
    pub alert_channel_id: Option<u64>,

    /// Seconds after which a report from Discord that is not synced, having
    /// failed at least once, is reported as waiting (to its reporter and moderators).
    #[arg(long, global = true, env = "KEEPER_SLOW_SYNC_SECS", default_value_t = 1800)]
    pub slow_sync_secs: u64,

    /// Testing knob, not for production: for this many seconds after a
    /// report, news of it goes through its interaction (the ✅ edited, private
    /// follow-ups); later, as a channel message that mentions the reporter.
    /// Discord's interaction tokens last 15 minutes; the default leaves one
    /// minute's margin, and more is refused.
    #[arg(long, global = true, env = "DISCORD_INTERACTION_SECS", default_value_t = 840, hide = true, value_parser = clap::value_parser!(u64).range(0..=840))]
    pub discord_interaction_secs: u64,

    /// Where Control Room reaches this sync API (e.g.
    /// `https://bot.example.org:8080`): images attached in Discord are kept
    /// in keeper.db and reports link to `URL/evidence/ID`. Unset: reports keep
    /// Discord's links, which expire in about a day.
    #[arg(long, global = true, env = "SYNC_API_PUBLIC_URL", value_parser = parse_public_url)]
    pub sync_api_public_url: Option<String>,

    /// The largest attached image kept, in bytes (default 8 MiB); a larger
    /// one keeps its Discord link and the reporter is told.
    #[arg(long, global = true, env = "KEEPER_EVIDENCE_MAX_BYTES", default_value_t = crate::evidence::DEFAULT_MAX_BYTES, value_parser = clap::value_parser!(u64).range(1..=crate::evidence::LARGEST_MAX_BYTES))]
    pub evidence_max_bytes: u64,

    /// Where each variable came from, for messages about bad values.
    #[arg(skip)]
    pub environment: Arc<Environment>,
}

/// Where VH-Database is and whether we may create it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HavenLocation {
    pub path: PathBuf,
    /// Only the built-in default location is ever created; a path the
    /// operator named must already exist, or items wait for it.
    pub create_if_missing: bool,
    /// The candidates tried when `HAVEN_DB_PATH` was unset (empty when set).
    pub search: Search,
}

/// How keeper chose the VH-Database it writes: what an operator needs to
/// know when Control Room shows nothing new.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "snake_case")]
pub enum HavenSource {
    /// `HAVEN_DB_PATH` named it.
    HavenDbPath,
    /// Found where the old bot looked (the Desktop folders, then `../`).
    FoundWhereOldBotLooked,
    /// Nothing found: keeper's own `data/VH-Database.db`, which Control Room
    /// does not read.
    LocalDefault,
}

impl HavenLocation {
    pub fn source(&self) -> HavenSource {
        if self.search.tried.is_empty() {
            HavenSource::HavenDbPath
        } else if self.create_if_missing {
            HavenSource::LocalDefault
        } else {
            HavenSource::FoundWhereOldBotLooked
        }
    }
}

impl Settings {
    /// Completes the parsed settings: `~` expanded in the two database paths,
    /// the environment's sources kept for later messages.
    pub fn finish(&mut self, environment: Environment) {
        let home = dirs::home_dir();
        self.keeper_db = expand_home(&self.keeper_db, home.as_deref());
        self.haven_db = self.haven_db.as_deref().map(|p| expand_home(p, home.as_deref()));
        self.environment = Arc::new(environment);
    }

    /// The guild to register slash commands in, if one is set.
    pub fn discord_guild(&self) -> Result<Option<u64>, ConfigError> {
        let Some(text) = self.discord_guild_id.as_deref() else {
            return Ok(None);
        };
        text.trim().parse().map(Some).map_err(|_| ConfigError {
            setting: self.environment.describe("DISCORD_GUILD_ID"),
            value: format!(" = {text:?}"),
            flag: "discord-guild-id".into(),
            reason: "not a Discord guild id (a number; in Discord: right-click the server, Copy Server ID)".into(),
        })
    }

    /// The gateway shards `keeper run` starts: checked at start-up, before
    /// anything is opened, so that a range past the count never runs.
    pub fn discord_sharding(&self) -> Result<Sharding, ConfigError> {
        shards::sharding(self.discord_shards, self.discord_shard_count).map_err(|error| ConfigError {
            setting: self.environment.describe("DISCORD_SHARDS"),
            value: self.discord_shards.map_or_else(String::new, |s| format!(" = \"{s}\"")),
            flag: "discord-shards".into(),
            reason: error.to_string(),
        })
    }

    /// `HAVEN_DB_PATH` when set; otherwise where the old bot would have
    /// found it ([`SearchRoots`]); otherwise `data/VH-Database.db`, the only
    /// place keeper creates one.
    pub fn haven_location(&self) -> HavenLocation {
        self.haven_location_searching(&SearchRoots::of_this_machine())
    }

    /// [`Settings::haven_location`] from the given search roots.
    pub fn haven_location_searching(&self, roots: &SearchRoots) -> HavenLocation {
        if let Some(path) = &self.haven_db {
            return HavenLocation {
                path: path.clone(),
                create_if_missing: false,
                search: Search::default(),
            };
        }
        let search = roots.search();
        match search.found.clone() {
            Some(path) => HavenLocation {
                path,
                create_if_missing: false,
                search,
            },
            None => HavenLocation {
                path: PathBuf::from("data/VH-Database.db"),
                create_if_missing: true,
                search,
            },
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
        if let Some(mib) = self.plugin_size_mib.and_then(|m| usize::try_from(m).ok()) {
            limits.component_bytes = mib << 20;
        }
        limits
    }

    /// Where every plugin version that became active is kept (see
    /// `plugins::versions`): beside keeper.db, like the compiled plugins.
    pub fn plugin_versions_dir(&self) -> PathBuf {
        self.plugin_cache_dir().with_file_name("plugin-versions")
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
    fn booleans_are_read_as_the_old_bot_wrote_them() {
        for (text, expected) in [
            ("True", true),
            ("true", true),
            ("1", true),
            ("YES", true),
            ("on", true),
            ("False", false),
            ("0", false),
            ("no", false),
            ("Off", false),
        ] {
            let parsed = settings(&["--use-haven-database", text]);
            assert_eq!(parsed.use_haven_database, expected, "{text}");
        }
        assert!(parse_bool("maybe").unwrap_err().contains("expected true or false"));
    }

    #[test]
    fn a_bad_value_from_a_variable_names_the_variable_its_file_and_the_flag() {
        use clap::CommandFactory;
        let cmd = Cli::command().mut_arg("sync_batch_size", |a| a.env("KEEPER_TEST_UNSET_VAR"));
        let argv: Vec<OsString> = vec!["keeper".into()];
        // clap's own error for the value, as if it had come from the variable.
        let error = cmd
            .clone()
            .try_get_matches_from(["keeper", "--sync-batch-size", "lots"])
            .unwrap_err();
        let explained = explain(&cmd, &error, &argv, &Environment::default()).expect("explained");
        let text = explained.to_string();
        assert!(text.starts_with("KEEPER_TEST_UNSET_VAR = \"lots\": "), "{text}");
        assert!(text.ends_with("override it with --sync-batch-size"), "{text}");
        // Typed on the command line: clap's message is the right one.
        let typed: Vec<OsString> = vec!["keeper".into(), "--sync-batch-size".into(), "lots".into()];
        assert!(explain(&cmd, &error, &typed, &Environment::default()).is_none());
    }

    #[test]
    fn tilde_is_the_home_folder() {
        let home = Path::new("/home/me");
        assert_eq!(
            expand_home(Path::new("~/bot/keeper.db"), Some(home)),
            PathBuf::from("/home/me/bot/keeper.db")
        );
        assert_eq!(expand_home(Path::new("~"), Some(home)), PathBuf::from("/home/me"));
        assert_eq!(expand_home(Path::new("a/~/b"), Some(home)), PathBuf::from("a/~/b"));
        assert_eq!(
            expand_home(Path::new("~other/x"), Some(home)),
            PathBuf::from("~other/x")
        );
        assert_eq!(expand_home(Path::new("~/x"), None), PathBuf::from("~/x"));
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

    #[test]
    fn the_public_url_is_an_http_url_with_a_host() {
        assert_eq!(
            parse_public_url(" https://bot.example.org:8080/ ").as_deref(),
            Ok("https://bot.example.org:8080")
        );
        assert_eq!(
            parse_public_url("HTTP://10.0.0.2/keeper").as_deref(),
            Ok("HTTP://10.0.0.2/keeper")
        );
        for bad in ["bot.example.org", "ftp://x", "https://", "https:///x", "http://a b"] {
            assert!(parse_public_url(bad).is_err(), "{bad} accepted");
        }
        let long = format!("https://{}", "x".repeat(1000));
        assert!(parse_public_url(&long).unwrap_err().contains("longer than 1000"));
        let parsed = settings(&["--sync-api-public-url", "https://bot.example.org/"]);
        assert_eq!(parsed.sync_api_public_url.as_deref(), Some("https://bot.example.org"));
        assert_eq!(parsed.evidence_max_bytes, 8 * 1024 * 1024);
    }
}
