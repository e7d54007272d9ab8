//! `keeper plugin check | list | preview`: the operator's view of plugins.
//!
//! None of them changes what `keeper run` runs; they read keeper.db and the
//! plugin files, and `check` applies exactly the test hot reload applies.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::preview::Outcome;
use super::{Loader, PluginsError};
use crate::app::App;
use crate::config::Settings;
use crate::registry::PluginRecord;

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Run the conformance corpus against a plugin file; exit non-zero if hot reload would reject it.
    #[command(after_help = "Example:\n  keeper plugin check target/wasm32-wasip2/release/my_mapper.wasm")]
    Check {
        /// The `.wasm` mapping plugin to check.
        file: PathBuf,
        /// Print JSON instead of text: the verdict and, per case, the row and warnings the plugin returned
        /// (to compare two plugins, see plugins/python-template/side_by_side.py).
        #[arg(long)]
        json: bool,
    },
    /// The active plugin, earlier ones, and rejected ones with their reasons.
    #[command(after_help = "Example:\n  keeper plugin list --json")]
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Map the last N synced items with FILE and with the active plugin; print the columns that would change.
    #[command(after_help = "Example:\n  keeper plugin preview my_mapper.wasm --last 50")]
    Preview {
        /// The `.wasm` mapping plugin to compare with the active one.
        file: PathBuf,
        /// How many of the most recently synced items to map.
        #[arg(long, value_name = "N", default_value_t = 10)]
        last: u32,
    },
}

/// `println!` through [`crate::output`]: a closed pipe ends the output
/// quietly instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {
        crate::output::println(&format!($($arg)*))?
    };
}

pub async fn run(app: &App, command: PluginCommand) -> Result<(), PluginsError> {
    match command {
        PluginCommand::Check { file, json } => check(&app.settings, &file, json).await,
        PluginCommand::List { json } => list(app, json).await,
        PluginCommand::Preview { file, last } => preview(app, &file, last).await,
    }
}

/// Runs the conformance corpus on `file`. Needs no keeper.db: nothing is
/// recorded, so a maintainer can check a plugin anywhere.
pub async fn check(settings: &Settings, file: &Path, json: bool) -> Result<(), PluginsError> {
    let loader = Loader::for_check(settings).await?;
    let verdict = loader.check_file(file).await?;
    if json {
        say!("{}", verdict.json());
    } else {
        crate::output::print(&verdict.report())?;
    }
    match verdict.rejection {
        None => Ok(()),
        Some(rejection) => Err(PluginsError::Rejected(rejection)),
    }
}

async fn list(app: &App, json: bool) -> Result<(), PluginsError> {
    let plugins = app.registry.list().await?;
    let canary = super::canary::Canaries::new(app.store.db().clone()).latest().await?;
    if json {
        let mut listed = serde_json::json!(plugins);
        listed["canary"] = serde_json::json!(canary);
        say!("{listed}");
        return Ok(());
    }
    let describe = |r: &PluginRecord| {
        let granted = match (r.memory_mib, r.timeout_ms) {
            (Some(mib), Some(ms)) => format!("  granted {mib} MiB, {ms} ms per call"),
            _ => String::new(),
        };
        let how = r
            .activated_by
            .map(|a| format!("  ({})", a.describe()))
            .unwrap_or_default();
        format!(
            "{} {}  sha256:{}  {}{granted}{how}",
            r.name,
            r.version,
            r.hash.get(..12).unwrap_or(&r.hash),
            r.source
        )
    };
    match &plugins.active {
        Some(a) => say!("active:\n  {}  since {}", describe(a), a.recorded_at),
        None => say!("active:\n  (none recorded yet; the built-in plugin is used)"),
    }
    say!("history:");
    if plugins.history.is_empty() {
        say!("  (none)");
    }
    for r in &plugins.history {
        say!(
            "  {}  {} .. {}",
            describe(r),
            r.recorded_at,
            r.retired_at.as_deref().unwrap_or("?")
        );
    }
    say!("rejected:");
    if plugins.rejected.is_empty() {
        say!("  (none)");
    }
    for r in &plugins.rejected {
        let who = if r.name.is_empty() {
            format!(
                "(no plugin info)  sha256:{}  {}",
                r.hash.get(..12).unwrap_or(&r.hash),
                r.source
            )
        } else {
            describe(r)
        };
        say!(
            "  {}  at {}\n      reason: {}",
            who,
            r.recorded_at,
            r.reason.as_deref().unwrap_or("-")
        );
    }
    if let Some(c) = canary {
        let share = match (c.percent, c.items) {
            (Some(p), Some(n)) => format!("{p}% until {n} items"),
            (Some(p), None) => format!("{p}%"),
            (None, Some(n)) => format!("the next {n} items"),
            (None, None) => "every item".to_owned(),
        };
        say!(
            "canary:\n  {} {}  sha256:{}  {}  on {share}  since {}\n      canary failed {} of {} items, the active plugin {} of {}",
            c.name,
            c.version,
            c.hash.get(..12).unwrap_or(&c.hash),
            c.state.as_str(),
            c.started_at,
            c.canary_failed,
            c.canary_items,
            c.active_failed,
            c.active_items
        );
        if let Some(reason) = &c.reason {
            say!("      ended: {reason}");
        }
    }
    Ok(())
}

async fn preview(app: &App, file: &Path, last: u32) -> Result<(), PluginsError> {
    let loader = Loader::new(app, true).await?;
    let verdict = loader.check_file(file).await?;
    let verdict_line = match &verdict.rejection {
        None => "passes the conformance check".to_owned(),
        Some(why) => format!("would be REJECTED by hot reload: {why}"),
    };
    let candidate = match (verdict.plugin, verdict.rejection) {
        (Some(plugin), _) => plugin,
        (None, Some(why)) => return Err(PluginsError::Rejected(why)),
        (None, None) => return Err(PluginsError::Join("the plugin was neither loaded nor rejected".into())),
    };
    let preview = super::preview::preview(app, &loader, candidate, last).await?;
    say!(
        "active    {} {}\ncandidate {} {} ({verdict_line})",
        preview.active.name,
        preview.active.version,
        preview.candidate.name,
        preview.candidate.version
    );
    for note in &preview.notes {
        say!("note: {note}");
    }
    if preview.items.is_empty() {
        say!("no synced items to compare");
        return Ok(());
    }
    for item in &preview.items {
        let (queue_id, discovery_id) = (item.queue_id, item.discovery_id);
        match &item.outcome {
            Outcome::Unreadable(why) => say!("#{queue_id} (discovery {discovery_id}): {why}"),
            Outcome::Mapped { changes, .. } if changes.is_empty() => {
                say!("#{queue_id} (discovery {discovery_id}): no change")
            }
            Outcome::Mapped { changes, .. } => {
                say!(
                    "#{queue_id} (discovery {discovery_id}): {} difference(s)",
                    changes.len()
                );
                for change in changes {
                    say!("    {change}");
                }
            }
        }
    }
    say!("{} of {} item(s) would change", preview.changed(), preview.compared());
    Ok(())
}
