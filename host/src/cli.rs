//! The `keeper` command line: parses arguments and runs one command.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use poem_openapi::types::ToJSON as _;

use crate::api::model::{FailedList, SyncStatusReport};
use crate::app::App;
use crate::config::{HavenSource, Settings};
use crate::output;
use crate::queue::ErrorClass;
use crate::records::{Layout, Records, RecordsError};
use crate::report::Report;
use crate::store::Access;
use crate::tls::ServerTls;

#[derive(Debug, Parser)]
#[command(
    name = "keeper",
    version,
    about = "Keeper sync: moves discovery reports from keeper.db to VH-Database"
)]
pub struct Cli {
    // Under their own heading, after a sub-command's own options: they are
    // twenty, and mostly set once in `.env`.
    #[command(
        flatten,
        next_help_heading = "Global options (each also read from its environment variable)"
    )]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The main job: sync worker (and the bot when DISCORD_TOKEN is set) until SIGINT/SIGTERM.
    #[command(after_help = "Example:\n  keeper run\n  KEEPER_LOG_FORMAT=json keeper run 2>> keeper.log")]
    Run,
    /// Store discovery reports in keeper.db and queue them; prints each new id once committed.
    #[command(
        after_help = "Examples:\n  keeper submit --type fossil --system Oculi --location planet:Erren \\\n      --description \"Ribcage in a cave\" --user \"Miner Joe\" --field species_type=Vertebrate\n  keeper submit --json reports.jsonl"
    )]
    Submit(Box<SubmitArgs>),
    /// Run the sync worker alone.
    #[command(after_help = "Example:\n  keeper sync --once")]
    Sync {
        /// Process everything due now, then exit.
        #[arg(long)]
        once: bool,
    },
    /// Queue counts by state, and the pending items waiting to retry.
    #[command(after_help = "Example:\n  keeper status --json")]
    Status {
        /// Print JSON (GET /sync/status's shape, plus `waiting`) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Items that exhausted their attempts.
    #[command(after_help = "Example:\n  keeper failed --limit 5")]
    Failed {
        /// Show at most N items, the most recent first.
        #[arg(long, value_name = "N", default_value_t = 20)]
        limit: u32,
        /// Print JSON (GET /sync/failed's shape) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Make a failed item (or all of them) due again with a fresh attempt count.
    #[command(after_help = "Examples:\n  keeper retry 42\n  keeper retry --all-failed")]
    Retry {
        /// The queue id (see `keeper failed`).
        #[arg(required_unless_present = "all_failed", conflicts_with = "all_failed")]
        queue_id: Option<i64>,
        /// Every `max_retries_exceeded` item instead of one.
        #[arg(long)]
        all_failed: bool,
        /// With --all-failed: only items whose last failure has this class,
        /// failed or waiting out a backoff (e.g. `schema` after fixing the table).
        #[arg(long, value_enum, requires = "all_failed")]
        class: Option<crate::queue::ErrorClass>,
    },
    /// Delete synced queue items older than N days.
    #[command(after_help = "Example:\n  keeper cleanup --days 90")]
    Cleanup {
        /// Keep synced items younger than this many days.
        #[arg(long, value_name = "N", default_value_t = 30)]
        days: u32,
    },
    /// Queue discoveries that have no queue row (a keeper.db adopted from the old bot).
    #[command(after_help = "Example:\n  KEEPER_DB_PATH=../old-bot/data/keeper.db keeper backfill")]
    Backfill,
    /// Mapping plugins: check a file, list active/earlier/rejected ones, preview a change.
    Plugin {
        #[command(subcommand)]
        command: crate::plugins::commands::PluginCommand,
    },
    /// Remote mode, beside Control Room: fetch a bot host's pending items, write them to VH-Database, acknowledge.
    #[command(
        after_help = "Examples:\n  keeper pull --from https://keeper-bot.example.com --every 60\n  keeper pull --from https://10.0.0.5:8080 --ca-cert bot-ca.pem --once"
    )]
    Pull(PullArgs),
    /// Print the sync API's OpenAPI document (as served at /openapi.json).
    #[command(after_help = "Example:\n  keeper openapi > openapi.json")]
    Openapi,
    /// Copy keeper.db (KEEPER_DB_PATH, only read) into a PostgreSQL store, ids and queue states kept;
    /// verifies the counts per table; running it again copies only what is missing.
    #[command(
        after_help = "Example:\n  KEEPER_DB_PATH=data/keeper.db keeper migrate-store --to postgres://keeper:secret@db.example.org/keeper"
    )]
    MigrateStore {
        /// The PostgreSQL database to copy into: postgres://USER:PASSWORD@HOST:PORT/DATABASE
        /// (later KEEPER_DATABASE_URL of every host); keeper's tables are created there if missing.
        #[arg(long, value_name = "URL", value_parser = crate::config::parse_database_url)]
        to: String,
    },
}

impl Command {
    /// What the command may do to keeper.db: commands that only read never
    /// create or migrate it, so running one in the wrong folder or on a
    /// mistyped path leaves no file behind.
    fn access(&self) -> Access {
        match self {
            Command::Run | Command::Submit(_) | Command::Sync { .. } | Command::Pull(_) | Command::Openapi => {
                Access::Create
            }
            Command::Retry { .. } | Command::Cleanup { .. } | Command::Backfill => Access::Update,
            Command::Status { .. } | Command::Failed { .. } | Command::Plugin { .. } | Command::MigrateStore { .. } => {
                Access::Read
            }
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// The bot host's sync API, e.g. https://keeper-bot.example.com or http://bot-host:8080.
    #[arg(long, value_name = "URL")]
    from: String,
    /// Also trust the CA certificate(s) in FILE (PEM) for an https:// bot host whose
    /// certificate is self-signed or from a private CA; the system's roots are always trusted.
    #[arg(long, env = "SYNC_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// The bot host's SYNC_API_KEY (default: this machine's SYNC_API_KEY).
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
    /// Pull every SECS seconds until SIGINT/SIGTERM; without it, pull once and exit.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    every: Option<u64>,
    /// Pull once and exit (the default when --every is not given).
    #[arg(long, conflicts_with = "every")]
    once: bool,
    /// Items per export page, each page one VH-Database transaction.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    page_size: u32,
}

#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// Read reports as JSON from FILE, or `-` for standard input: one object, or one per line.
    #[arg(long, value_name = "FILE|-", conflicts_with_all = ["discovery_type", "system", "location", "description", "user"])]
    json: Option<PathBuf>,
    /// The kind of discovery, by name or emoji (names are easier to type).
    #[arg(long = "type", value_name = "TYPE", required_unless_present = "json", long_help = type_help())]
    discovery_type: Option<String>,
    /// The star system's name.
    #[arg(long, value_name = "NAME", required_unless_present = "json")]
    system: Option<String>,
    /// Where in the system: planet:NAME, moon:NAME or space:NAME.
    #[arg(long, value_name = "KIND:NAME", required_unless_present = "json")]
    location: Option<String>,
    /// What was found (at most 1000 characters).
    #[arg(long, value_name = "TEXT", required_unless_present = "json")]
    description: Option<String>,
    /// The reporter's name.
    #[arg(long, value_name = "NAME", required_unless_present = "json")]
    user: Option<String>,
    /// The reporter's Discord user id (digits).
    #[arg(long, value_name = "ID")]
    user_id: Option<String>,
    /// The Discord server (guild) id the report belongs to (digits).
    #[arg(long, value_name = "ID")]
    guild_id: Option<String>,
    /// In-game coordinates (galactic address or glyphs).
    #[arg(long, value_name = "TEXT")]
    coordinates: Option<String>,
    /// The find's condition, e.g. "Pristine" or "Damaged".
    #[arg(long, value_name = "TEXT")]
    condition: Option<String>,
    /// The era it dates from, if known.
    #[arg(long, value_name = "TEXT")]
    time_period: Option<String>,
    /// Why it matters.
    #[arg(long, value_name = "TEXT")]
    significance: Option<String>,
    /// A link to a screenshot or video (http:// or https://).
    #[arg(long, value_name = "URL")]
    evidence_url: Option<String>,
    /// A tag; repeat for several (--tag first --tag verified).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// A type-specific field, e.g. --field species_type=Vertebrate
    #[arg(long = "field", value_name = "COLUMN=VALUE")]
    fields: Vec<String>,
}

/// A command that did not do what was asked; printed as the process's last word.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    App(#[from] crate::app::AppError),
    #[error(transparent)]
    Worker(#[from] crate::worker::WorkerError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("keeper.db: {0}")]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Retry(#[from] crate::queue::RetryRefused),
    #[error(transparent)]
    Plugins(#[from] crate::plugins::PluginsError),
    #[error(transparent)]
    Api(#[from] crate::api::ServeError),
    #[error(transparent)]
    Pull(#[from] crate::pull::PullError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Output(#[from] output::OutputError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Records(#[from] RecordsError),
    #[error(transparent)]
    MigrateStore(#[from] crate::store::migrate::MigrateError),
    #[error("{count} report(s) rejected, nothing was written:\n{details}")]
    Rejected { count: usize, details: String },
    #[error("keeper.db at {path}: {} ({message})", fault.describe())]
    KeeperDb {
        path: std::path::PathBuf,
        fault: crate::sqlite_error::Fault,
        message: String,
    },
}

impl CliError {
    /// A keeper.db failure after start-up, with the file it happened to:
    /// classified by SQLite's result code ("disk full", "read-only"...).
    fn naming_keeper_db(self, path: &std::path::Path) -> CliError {
        let sql = match self {
            CliError::Sql(e)
            | CliError::Store(crate::store::StoreError::Sql(e))
            | CliError::Retry(crate::queue::RetryRefused::Sql(e)) => e,
            other => return other,
        };
        CliError::KeeperDb {
            path: path.to_owned(),
            fault: crate::sqlite_error::Fault::of(&sql),
            message: crate::sqlite_error::message(&sql),
        }
    }
}

/// Every environment variable a flag falls back to, with its flag: the
/// global ones and those of a single command (`keeper pull`'s `SYNC_CA_CERT`).
pub fn env_vars() -> Vec<(String, String)> {
    use clap::CommandFactory;
    let cli = Cli::command();
    let commands = std::iter::once(&cli).chain(cli.get_subcommands());
    let mut vars: Vec<(String, String)> = commands
        .flat_map(|c| c.get_arguments())
        .filter_map(|a| Some((a.get_env()?.to_str()?.to_owned(), format!("--{}", a.get_long()?))))
        .collect();
    vars.sort();
    vars.dedup();
    vars
}

/// Parses the command line in the environment [`Environment::load`] left.
/// A bad value from a variable is a [`ConfigError`] naming it and its
/// `.env` file; anything else clap reports (and exits) itself.
///
/// [`Environment::load`]: crate::config::Environment::load
pub fn parse(environment: crate::config::Environment) -> Result<Cli, crate::config::ConfigError> {
    use clap::CommandFactory;
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(error) => match crate::config::explain(&Cli::command(), &error, &argv, &environment) {
            Some(config) => return Err(config),
            None => error.exit(),
        },
    };
    cli.settings.finish(environment);
    Ok(cli)
}

pub async fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Openapi = cli.command {
        // Needs no database: the document is generated from the code alone.
        output::println(&crate::api::document())?;
        return Ok(());
    }
    if let Command::Plugin {
        command: crate::plugins::commands::PluginCommand::Check { file, json },
    } = &cli.command
    {
        // Needs no keeper.db: a plugin is checked where it is written.
        return Ok(crate::plugins::commands::check(&cli.settings, file, *json).await?);
    }
    if let Command::MigrateStore { to } = &cli.command {
        // keeper.db is its source, whatever KEEPER_DATABASE_URL says.
        let moved = crate::store::migrate::migrate_store(&cli.settings.keeper_db, to).await?;
        let shown = crate::store::postgres::redact(to);
        output::print_after_commit(&crate::store::migrate::summary(&moved, &cli.settings.keeper_db, &shown));
        return Ok(());
    }
    // What can be checked before keeper.db is opened is: a bad certificate,
    // key, CA file or address stops the command having changed nothing.
    let prepared = match &cli.command {
        Command::Run => {
            // Shards past the count stop the start-up before the store is touched.
            cli.settings.discord_sharding()?;
            Prepared::Run(crate::tls::server_config(&cli.settings)?)
        }
        Command::Pull(args) => Prepared::Pull(remote(&cli.settings, args)?),
        _ => Prepared::Nothing,
    };
    let app = App::open(cli.settings, cli.command.access()).await?;
    let path = app.store.path().to_owned();
    command(app, cli.command, prepared)
        .await
        .map_err(|e| e.naming_keeper_db(&path))
}

/// What a command took from its settings before keeper.db was opened.
enum Prepared {
    Nothing,
    /// `keeper run`'s TLS configuration (`None`: plain HTTP).
    Run(Option<ServerTls>),
    /// `keeper pull`'s bot host.
    Pull(crate::pull::Remote),
}

/// One command on an open keeper.db.
async fn command(app: App, command: Command, prepared: Prepared) -> Result<(), CliError> {
    match command {
        Command::Run => {
            let tls = match prepared {
                Prepared::Run(tls) => tls,
                _ => crate::tls::server_config(&app.settings)?,
            };
            run_main(&app, tls).await
        }
        Command::Submit(args) => submit(&app, *args).await,
        Command::Sync { once } => sync(&app, once).await,
        Command::Status { json } => status(&app, json).await,
        Command::Failed { limit, json } => {
            let items = app.queue.failed(limit).await?;
            if json {
                output::println(&FailedList::new(items).to_json_string())?;
            } else if items.is_empty() {
                output::println("no failed items")?;
            } else {
                let mut text = String::new();
                for i in &items {
                    text.push_str(&format!(
                        "#{} discovery {} after {} attempt(s): {}\n    {} {} / {} by {}\n",
                        i.queue_id,
                        i.discovery_id,
                        i.sync_attempts,
                        i.sync_error.as_deref().unwrap_or("-"),
                        i.discovery_type.as_deref().unwrap_or("?"),
                        i.system_name.as_deref().unwrap_or("?"),
                        i.location.as_deref().unwrap_or("?"),
                        i.username.as_deref().unwrap_or("?"),
                    ));
                }
                output::print(&text)?;
            }
            Ok(())
        }
        Command::Retry {
            queue_id,
            all_failed,
            class,
        } => {
            if let Some(class) = class {
                let n = app.queue.retry_class(class).await?;
                println!("{n} item(s) that failed with class {} marked for retry", class.as_str());
            } else if all_failed {
                let n = app.queue.retry_all_failed().await?;
                output::print_after_commit(&format!("{n} failed item(s) marked for retry\n"));
            } else if let Some(id) = queue_id {
                app.queue.retry(id).await?;
                output::print_after_commit(&format!("Queue item {id} marked for retry\n"));
            }
            Ok(())
        }
        Command::Cleanup { days } => {
            let n = app.queue.cleanup(days).await?;
            output::print_after_commit(&format!("deleted {n} synced item(s) older than {days} day(s)\n"));
            Ok(())
        }
        Command::Plugin { command } => Ok(crate::plugins::commands::run(&app, command).await?),
        Command::Backfill => {
            let n = app.queue.backfill().await?;
            output::print_after_commit(&format!("queued {n} discovery(ies) that had no queue row\n"));
            Ok(())
        }
        Command::Pull(args) => {
            let remote = match prepared {
                Prepared::Pull(remote) => remote,
                _ => remote(&app.settings, &args)?,
            };
            pull(&app, args, remote).await
        }
        Command::Openapi | Command::MigrateStore { .. } => Ok(()),
    }
}

/// `--type`'s long help: every type with its name, from the one table.
fn type_help() -> String {
    let mut help = String::from("The kind of discovery: a name or its emoji (the emoji is what is stored).\n");
    for t in crate::report::discovery_types() {
        help.push_str(&format!("\n  {:<8} {}  {}", t.short, t.emoji, t.name));
    }
    help
}

/// `keeper status`: the four states, then the pending items that wait out
/// a retry's backoff (they would otherwise look like fresh ones).
async fn status(app: &App, json: bool) -> Result<(), CliError> {
    let counts = app.queue.counts().await?;
    let waiting = app.queue.waiting().await?;
    let next_retry = waiting
        .next_retry_after
        .as_deref()
        .and_then(crate::api::timestamp::parse)
        .map(crate::api::timestamp::whole_seconds)
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
    if json {
        // The shape of GET /sync/status, without the worker this process
        // does not run, plus what only this command reads.
        let mut report = SyncStatusReport::new(None, counts).to_json().unwrap_or_default();
        if let Value::Object(fields) = &mut report {
            let classes: Map<String, Value> = waiting
                .last_error_classes
                .iter()
                .map(|(class, n)| (ErrorClass::label(*class).to_owned(), json!(n)))
                .collect();
            fields.insert(
                "waiting".into(),
                json!({"count": waiting.count, "next_retry_at": next_retry, "last_error_classes": classes}),
            );
        }
        return Ok(output::println(&report.to_string())?);
    }
    let mut text = format!(
        "pending {}\nsyncing {}\nsynced  {}\nfailed  {}\n",
        counts.pending, counts.syncing, counts.synced, counts.failed
    );
    if waiting.count > 0 {
        let classes: Vec<String> = waiting
            .last_error_classes
            .iter()
            .map(|(class, n)| format!("{} {n}", ErrorClass::label(*class)))
            .collect();
        text.push_str(&format!(
            "waiting {} of the pending to retry, the next at {}; last errors: {}\n",
            waiting.count,
            next_retry.as_deref().unwrap_or("?"),
            classes.join(", ")
        ));
    }
    Ok(output::print(&text)?)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops keeper");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run_main(app: &App, tls: Option<ServerTls>) -> Result<(), CliError> {
    // Settings first: a bad one stops the start-up before anything runs.
    let bot_config = crate::bot::BotConfig::from_settings(&app.settings)?;
    let (stop, stopped) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    // Bound before anything starts, so a taken port fails the start-up.
    let api = crate::api::Listening::bind(app.settings.api_addr(), tls).await?;
    let api_stopped = stopped.clone();
    let mut worker_status = Default::default();
    let mut plugin_control = None;
    if app.settings.use_haven_database {
        prepare_haven(app).await;
        let plugins = crate::plugins::PluginManager::start(app, true).await?;
        plugin_control = Some(plugins.control());
        let canary = plugins.canary();
        // A canary this host ran before a restart, or whose host is gone.
        canary
            .end_orphaned()
            .await
            .map_err(crate::plugins::PluginsError::from)?;
        tasks.spawn(canary.clone().tend(stopped.clone()));
        let mut worker = app.worker_on(plugins.slot());
        worker.canary = Some(canary);
        tasks.spawn(plugins.watch(stopped.clone()));
        worker_status = worker.status.clone();
        tracing::info!(
            haven_db = %worker.sink.path().display(),
            keeper_db = %app.store.path().display(),
            store = %app.store.db().driver(),
            "🔄 Sync worker started ({}s intervals)",
            app.settings.sync_interval
        );
        tasks.spawn(async move { worker.run(stopped).await });
    } else {
        tracing::info!("USE_HAVEN_DATABASE=false: remote mode, this process does not write VH-Database");
    }
    let mut api_state = crate::api::ApiState::new(app.clone(), worker_status);
    api_state.plugins = plugin_control;
    match bot_config {
        Some(config) => {
            tracing::info!(guild = ?config.guild, "🤖 Discord bot starting");
            tasks.spawn(crate::bot::run(
                app.clone(),
                config,
                api_state.bot.clone(),
                api_stopped.clone(),
            ));
        }
        None => tracing::info!("DISCORD_TOKEN is not set: running without the Discord bot"),
    }
    tasks.spawn(api.serve(api_state, api_stopped));
    shutdown_signal().await;
    tracing::info!("shutting down: finishing the batch in hand");
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Says at start-up where VH-Database is and how it was chosen and, when
/// keeper has to make its own, warns and creates it now rather than at the
/// first sync: an operator whose Control Room reads another file sees it in
/// the first lines of the log.
async fn prepare_haven(app: &App) {
    let location = app.settings.haven_location();
    let path = location.path.display();
    let tried: Vec<String> = location.search.tried.iter().map(|p| p.display().to_string()).collect();
    match location.source() {
        HavenSource::HavenDbPath => tracing::info!(haven_db = %path, "VH-Database from HAVEN_DB_PATH"),
        HavenSource::FoundWhereOldBotLooked => {
            tracing::info!(haven_db = %path, tried = ?tried, "VH-Database found where the old bot looked")
        }
        HavenSource::LocalDefault => {
            tracing::warn!(
                haven_db = %path,
                tried = ?tried,
                "no VH-Database where the old bot looked: using a local one, which Control Room does not read \
                 (set HAVEN_DB_PATH to the Control Room's data/VH-Database.db)"
            );
            if let Err(error) = app.sink().open().await {
                tracing::warn!(haven_db = %path, %error, "cannot open the local VH-Database yet; the worker retries");
            }
        }
    }
}

/// Refuses commands that write VH-Database on a machine configured not to.
fn require_haven(app: &App) -> Result<(), CliError> {
    if app.settings.use_haven_database {
        Ok(())
    } else {
        Err(CliError::Input(
            "USE_HAVEN_DATABASE=false: this machine does not write VH-Database (remote mode)".into(),
        ))
    }
}

async fn sync(app: &App, once: bool) -> Result<(), CliError> {
    require_haven(app)?;
    // The start-up plugin, as `keeper run` chooses and records it; no hot reload.
    let plugins = crate::plugins::PluginManager::start(app, false).await?;
    let worker = app.worker_on(plugins.slot());
    if once {
        let done = worker.drain().await?;
        output::print_after_commit(&format!("synced {}, failed {}\n", done.synced, done.failed));
        return Ok(());
    }
    tracing::info!("🔄 Sync worker started ({}s intervals)", app.settings.sync_interval);
    let (stop, stopped) = watch::channel(false);
    let handle = tokio::spawn({
        let worker = worker.clone();
        async move { worker.run(stopped).await }
    });
    shutdown_signal().await;
    tracing::info!("shutting down: finishing the batch in hand");
    let _ = stop.send(true);
    let _ = handle.await;
    Ok(())
}

async fn submit(app: &App, args: SubmitArgs) -> Result<(), CliError> {
    let reports = match &args.json {
        Some(path) => read_reports(path)?,
        None => {
            let record = flags_record(&args)?;
            vec![Report::from_json(&record).map_err(|e| CliError::Rejected {
                count: 1,
                details: format!("  {e}"),
            })?]
        }
    };
    let ids = app.store.submit(&reports, app.settings.sync_max_attempts).await?;
    app.wake.reports_stored(ids.len() as u64);
    let mut out = String::with_capacity(ids.len() * 8);
    for id in &ids {
        out.push_str(&id.to_string());
        out.push('\n');
    }
    output::print_after_commit(&out);
    tracing::info!(count = ids.len(), "discoveries archived and queued");
    Ok(())
}

/// The JSON record the flags describe, validated like any other.
fn flags_record(args: &SubmitArgs) -> Result<Value, CliError> {
    let mut record = Map::new();
    let mut put = |key: &str, value: &Option<String>| {
        if let Some(v) = value {
            record.insert(key.to_owned(), Value::String(v.clone()));
        }
    };
    put("discovery_type", &args.discovery_type);
    put("system_name", &args.system);
    put("location", &args.location);
    put("description", &args.description);
    put("username", &args.user);
    put("user_id", &args.user_id);
    put("guild_id", &args.guild_id);
    put("coordinates", &args.coordinates);
    put("condition", &args.condition);
    put("time_period", &args.time_period);
    put("significance", &args.significance);
    put("evidence_url", &args.evidence_url);
    if !args.tags.is_empty() {
        record.insert("tags".into(), json!(args.tags));
    }
    for field in &args.fields {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| CliError::Input(format!("--field {field:?}: expected COLUMN=VALUE")))?;
        if record.contains_key(key) {
            return Err(CliError::Input(format!("--field {key}: given twice")));
        }
        record.insert(key.to_owned(), Value::String(value.to_owned()));
    }
    Ok(Value::Object(record))
}

/// At most this many problems are listed; the count says how many there were.
const MAX_LISTED_ERRORS: usize = 50;

/// Reads one JSON object, a JSON array of objects, or one object per line,
/// streamed with a limit per record (see [`records`](crate::records)).
/// Every record is validated before anything is written; all problems are
/// reported with their line numbers (record numbers in an array).
fn read_reports(path: &PathBuf) -> Result<Vec<Report>, CliError> {
    if path.as_os_str() == "-" {
        let stdin = std::io::stdin();
        return parse_reports(Records::new(
            BufReader::with_capacity(READ_BUFFER, stdin.lock()),
            "standard input",
        ));
    }
    let file =
        std::fs::File::open(path).map_err(|e| CliError::Input(format!("cannot read {}: {e}", path.display())))?;
    parse_reports(Records::new(
        BufReader::with_capacity(READ_BUFFER, file),
        path.display().to_string(),
    ))
}

/// Large enough that reading is not the slow part of a bulk submission.
const READ_BUFFER: usize = 64 << 10;

fn parse_reports(mut records: Records<impl BufRead>) -> Result<Vec<Report>, CliError> {
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    while let Some(record) = records.next_record()? {
        let place = match records.layout() {
            Some(Layout::Array) => format!("record {}", record.index),
            _ => format!("line {}", record.line),
        };
        let Ok(text) = std::str::from_utf8(&record.bytes) else {
            errors.push(format!("{place}: not valid UTF-8"));
            continue;
        };
        match serde_json::from_str::<Value>(text) {
            Ok(value) => match Report::from_json(&value) {
                Ok(r) => reports.push(r),
                Err(e) => errors.push(format!("{place}: {e}")),
            },
            Err(e) => errors.push(format!("{place}: not JSON: {e}")),
        }
    }
    if !errors.is_empty() {
        let count = errors.len();
        let mut details: Vec<String> = errors
            .into_iter()
            .take(MAX_LISTED_ERRORS)
            .map(|e| format!("  {e}"))
            .collect();
        if count > MAX_LISTED_ERRORS {
            details.push(format!("  … and {} more", count - MAX_LISTED_ERRORS));
        }
        return Err(CliError::Rejected {
            count,
            details: details.join("\n"),
        });
    }
    if reports.is_empty() {
        return Err(CliError::Input("no reports in the input".into()));
    }
    Ok(reports)
}

/// The bot host `keeper pull` talks to; `--api-key` defaults to this
/// machine's `SYNC_API_KEY`.
fn remote(settings: &Settings, args: &PullArgs) -> Result<crate::pull::Remote, CliError> {
    let api_key = args.api_key.clone().or_else(|| settings.api_key().map(str::to_owned));
    Ok(crate::pull::Remote::new(&args.from, api_key, args.ca_cert.as_deref())?)
}

async fn pull(app: &App, args: PullArgs, remote: crate::pull::Remote) -> Result<(), CliError> {
    require_haven(app)?;
    let every = args.every.filter(|_| !args.once);
    // Hot reload only for a long-running puller, as for `keeper run`.
    let plugins = crate::plugins::PluginManager::start(app, every.is_some()).await?;
    let puller = crate::pull::Puller {
        remote,
        sink: app.sink(),
        plugins: plugins.slot(),
        page_size: args.page_size,
    };
    let Some(every) = every else {
        let done = puller.round().await?;
        output::print_after_commit(&format!("pulled {}, failed {}\n", done.pulled, done.failed));
        return Ok(());
    };
    tracing::info!(
        from = %args.from,
        haven_db = %puller.sink.path().display(),
        "⬇️ Puller started ({every}s intervals)"
    );
    let (stop, stopped) = watch::channel(false);
    let watcher = tokio::spawn(plugins.watch(stopped.clone()));
    let mut handle = tokio::spawn(async move { puller.run(std::time::Duration::from_secs(every), stopped).await });
    // The puller ends by itself only on an error waiting cannot fix (401, 409).
    let ended = tokio::select! {
        _ = shutdown_signal() => {
            tracing::info!("shutting down: finishing the page in hand");
            let _ = stop.send(true);
            (&mut handle).await
        }
        ended = &mut handle => {
            let _ = stop.send(true);
            ended
        }
    };
    let _ = watcher.await;
    match ended {
        Ok(result) => Ok(result?),
        Err(join) => Err(crate::pull::PullError::Thread(join.to_string()).into()),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every option of every command, global ones included, says what it
    /// is for, and every command that does something shows an example.
    #[test]
    fn every_option_is_described_and_every_command_has_an_example() {
        fn walk(cmd: &clap::Command, path: &str, problems: &mut Vec<String>) {
            for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    problems.push(format!("{path}: --{} has no description", arg.get_id()));
                }
            }
            let leaf = !cmd.has_subcommands();
            let example = cmd.get_after_help().is_some_and(|h| h.to_string().contains("keeper "));
            if leaf && path != "keeper" && !example {
                problems.push(format!("{path}: no example"));
            }
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                walk(sub, &format!("{path} {}", sub.get_name()), problems);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut problems = Vec::new();
        walk(&cmd, "keeper", &mut problems);
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
