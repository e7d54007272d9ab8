//! `keeper plugin check | list | preview`: the operator's view of plugins.
//!
//! None of them changes what `keeper run` runs; they read keeper.db and the
//! plugin files, and `check` applies exactly the test hot reload applies.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Subcommand;

use super::{Loader, PluginsError};
use crate::app::App;
use crate::config::Settings;
use crate::mapper::{DEFAULT_PLUGIN, Lookup, MapError, Mapped, Plugin, content_hash};
use crate::registry::{BUILT_IN, PluginRecord};
use crate::row::{Row, Value};
use crate::sink::Sink;

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
    if json {
        say!("{}", serde_json::json!(plugins));
        return Ok(());
    }
    let describe = |r: &PluginRecord| {
        let granted = match (r.memory_mib, r.timeout_ms) {
            (Some(mib), Some(ms)) => format!("  granted {mib} MiB, {ms} ms per call"),
            _ => String::new(),
        };
        format!(
            "{} {}  sha256:{}  {}{granted}",
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
    Ok(())
}

/// The plugin `keeper run` has active according to the registry, loaded
/// from where it came from; the note says when that is not possible.
async fn active_plugin(app: &App, loader: &Loader) -> Result<(Plugin, Option<String>), PluginsError> {
    let active = app.registry.list().await?.active;
    let (bytes, note) = match active.as_ref().filter(|a| a.source != BUILT_IN) {
        None => (DEFAULT_PLUGIN.to_vec(), None),
        Some(record) => match tokio::fs::read(&record.source).await {
            Ok(bytes) if content_hash(&bytes) == record.hash => (bytes, None),
            Ok(bytes) => (
                bytes,
                Some(format!(
                    "note: {} changed since it became active; comparing with its current content",
                    record.source
                )),
            ),
            Err(e) => (
                DEFAULT_PLUGIN.to_vec(),
                Some(format!(
                    "note: the active plugin {} cannot be read ({e}); comparing with the built-in plugin",
                    record.source
                )),
            ),
        },
    };
    let loader = loader.clone();
    let (plugin, _) = tokio::task::spawn_blocking(move || loader.load(&bytes))
        .await
        .map_err(|e| PluginsError::Join(e.to_string()))??;
    Ok((plugin, note))
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
    let (active, note) = active_plugin(app, &loader).await?;
    say!(
        "active    {} {}\ncandidate {} {} ({verdict_line})",
        active.info().name,
        active.info().version,
        candidate.info().name,
        candidate.info().version
    );
    if let Some(note) = note {
        say!("{note}");
    }

    let items = app.queue.last_synced(last).await?;
    if items.is_empty() {
        say!("no synced items to compare");
        return Ok(());
    }
    let ids: Vec<i64> = items.iter().map(|(_, d)| *d).collect();
    let mut rows = app.store.discoveries(&ids).await?;
    let lookup = Arc::new(vh_lookup(app).await?);
    let mut readable: Vec<(i64, i64, Row)> = Vec::new();
    for (queue_id, discovery_id) in items {
        match rows.remove(&discovery_id) {
            Some(Ok(row)) => readable.push((queue_id, discovery_id, row)),
            Some(Err(e)) => say!("#{queue_id} (discovery {discovery_id}): cannot be read: {e}"),
            None => say!("#{queue_id} (discovery {discovery_id}): no longer in keeper.db"),
        }
    }
    let input: Vec<Row> = readable.iter().map(|(_, _, r)| r.clone()).collect();
    let (before, after) = tokio::task::spawn_blocking(move || {
        (
            active.map_all(lookup.clone(), &input),
            candidate.map_all(lookup, &input),
        )
    })
    .await
    .map_err(|e| PluginsError::Join(e.to_string()))?;

    let mut changed = 0;
    for (((queue_id, discovery_id, _), old), new) in readable.iter().zip(before).zip(after) {
        let lines = compare(&old, &new);
        if lines.is_empty() {
            say!("#{queue_id} (discovery {discovery_id}): no change");
        } else {
            changed += 1;
            say!("#{queue_id} (discovery {discovery_id}): {} difference(s)", lines.len());
            for line in lines {
                say!("    {line}");
            }
        }
    }
    say!("{changed} of {} item(s) would change", readable.len());
    Ok(())
}

/// VH-Database's lookup tables, if the database is there; an empty lookup
/// otherwise (preview never creates VH-Database).
async fn vh_lookup(app: &App) -> Result<Lookup, PluginsError> {
    let location = app.settings.haven_location();
    if !location.path.is_file() {
        say!(
            "note: VH-Database {} not found; locations are not resolved in this preview",
            location.path.display()
        );
        return Ok(Lookup::default());
    }
    let sink = Sink::new(location, app.settings.haven_busy_timeout());
    let lookup = match sink.open().await {
        Ok(mut haven) => haven.lookup().await,
        Err(e) => Err(e),
    };
    Ok(match lookup {
        Ok(lookup) => lookup,
        Err(e) => {
            say!("note: {e}; locations are not resolved in this preview");
            Lookup::default()
        }
    })
}

/// The differences between the active plugin's result and the candidate's,
/// one line each: changed columns, or a changed outcome.
fn compare(old: &Result<Mapped, MapError>, new: &Result<Mapped, MapError>) -> Vec<String> {
    match (old, new) {
        (Ok(old), Ok(new)) => column_changes(&old.row, &new.row),
        (Ok(_), Err(e)) => vec![format!("would FAIL: {e}")],
        (Err(e), Ok(_)) => vec![format!("would now map (the active plugin fails: {e})")],
        (Err(a), Err(b)) if a == b => Vec::new(),
        (Err(a), Err(b)) => vec![format!("fails differently: {a} → {b}")],
    }
}

fn column_changes(old: &Row, new: &Row) -> Vec<String> {
    let new_values: HashMap<&str, &Value> = new.0.iter().map(|(c, v)| (c.as_str(), v)).collect();
    let mut lines = Vec::new();
    for (column, value) in &old.0 {
        match new_values.get(column.as_str()) {
            Some(v) if *v == value => {}
            Some(v) => lines.push(format!("{column}: {} → {}", show(Some(value)), show(Some(v)))),
            None => lines.push(format!("{column}: {} → {}", show(Some(value)), show(None))),
        }
    }
    for (column, value) in &new.0 {
        if old.get(column).is_none() {
            lines.push(format!("{column}: {} → {}", show(None), show(Some(value))));
        }
    }
    lines
}

/// A value for a one-line diff: text quoted and cut at 80 characters.
fn show(value: Option<&Value>) -> String {
    const MAX: usize = 80;
    match value {
        None => "(not set)".into(),
        Some(Value::Null) => "NULL".into(),
        Some(Value::Integer(i)) => i.to_string(),
        Some(Value::Real(r)) => r.to_string(),
        Some(Value::Text(s)) if s.chars().count() > MAX => {
            format!("{:?}…", s.chars().take(MAX).collect::<String>())
        }
        Some(Value::Text(s)) => format!("{s:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cols: &[(&str, Value)]) -> Row {
        Row(cols.iter().map(|(c, v)| (c.to_string(), v.clone())).collect())
    }

    #[test]
    fn column_changes_lists_changed_added_and_removed_columns() {
        let old = row(&[
            ("discovered_by", Value::Text("Explorer".into())),
            ("planet_id", Value::Integer(3)),
            ("tags", Value::Text("[]".into())),
        ]);
        let new = row(&[
            ("discovered_by", Value::Text("EXPLORER".into())),
            ("planet_id", Value::Integer(3)),
            ("moon_id", Value::Integer(6)),
        ]);
        assert_eq!(
            column_changes(&old, &new),
            [
                "discovered_by: \"Explorer\" → \"EXPLORER\"",
                "tags: \"[]\" → (not set)",
                "moon_id: (not set) → 6"
            ]
        );
        assert!(column_changes(&old, &old).is_empty());
    }
}
