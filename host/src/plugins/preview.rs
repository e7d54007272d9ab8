//! What a candidate plugin would change: the last N synced items mapped with
//! it and with the active plugin, column by column. `keeper plugin preview`
//! prints it; the sync API (`POST /plugins/preview`,
//! `GET /plugins/versions/{hash}/preview`) answers it as JSON for the
//! console's diff. Nothing is written: VH-Database is only read for its
//! lookup tables.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use super::{Loader, PluginsError};
use crate::app::App;
use crate::mapper::{DEFAULT_PLUGIN, Lookup, MapError, Mapped, Plugin, PluginInfo, content_hash};
use crate::registry::BUILT_IN;
use crate::row::{Row, Value};
use crate::sink::Sink;

/// The comparison of a candidate with the active plugin.
pub struct Preview {
    pub active: PluginInfo,
    pub candidate: PluginInfo,
    /// What the comparison could not do as asked (the active plugin's file
    /// changed or is gone, VH-Database missing), for the operator to read.
    pub notes: Vec<String>,
    /// The items, the most recently synced first.
    pub items: Vec<ItemPreview>,
}

impl Preview {
    /// How many items the candidate would map differently.
    pub fn changed(&self) -> usize {
        self.items
            .iter()
            .filter(|i| matches!(&i.outcome, Outcome::Mapped { changes, .. } if !changes.is_empty()))
            .count()
    }

    /// How many items both plugins mapped (or failed to).
    pub fn compared(&self) -> usize {
        self.items
            .iter()
            .filter(|i| matches!(i.outcome, Outcome::Mapped { .. }))
            .count()
    }
}

/// One synced item in a preview.
pub struct ItemPreview {
    pub queue_id: i64,
    pub discovery_id: i64,
    pub outcome: Outcome,
}

/// What became of one item in a preview.
pub enum Outcome {
    /// Its keeper.db report cannot be read (or is gone): nothing to map.
    Unreadable(String),
    /// Mapped by both: the row (or the error) of each, and what differs.
    Mapped {
        active: Result<Row, String>,
        candidate: Result<Row, String>,
        changes: Vec<Change>,
    },
}

/// One difference between what the active plugin and the candidate make of
/// an item.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A column set differently, or set by one only (`None`: not set).
    Column {
        column: String,
        active: Option<Value>,
        candidate: Option<Value>,
    },
    /// The active plugin maps it; the candidate fails.
    WouldFail(String),
    /// The active plugin fails on it; the candidate maps it.
    WouldNowMap(String),
    /// Both fail, differently.
    FailsDifferently { active: String, candidate: String },
}

impl fmt::Display for Change {
    /// One line of `keeper plugin preview`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Column {
                column,
                active,
                candidate,
            } => write!(f, "{column}: {} → {}", show(active.as_ref()), show(candidate.as_ref())),
            Change::WouldFail(e) => write!(f, "would FAIL: {e}"),
            Change::WouldNowMap(e) => write!(f, "would now map (the active plugin fails: {e})"),
            Change::FailsDifferently { active, candidate } => write!(f, "fails differently: {active} → {candidate}"),
        }
    }
}

/// Maps the last `last` synced items with `candidate` and with the plugin
/// the registry says is active.
pub async fn preview(app: &App, loader: &Loader, candidate: Plugin, last: u32) -> Result<Preview, PluginsError> {
    let (active, mut notes) = active_plugin(app, loader).await?;
    let items = app.queue.last_synced(last).await?;
    let mut preview = Preview {
        active: active.info().clone(),
        candidate: candidate.info().clone(),
        notes: Vec::new(),
        items: Vec::new(),
    };
    if items.is_empty() {
        preview.notes = notes;
        return Ok(preview);
    }
    let ids: Vec<i64> = items.iter().map(|(_, d)| *d).collect();
    let mut rows = app.store.discoveries(&ids).await?;
    let (lookup, note) = vh_lookup(app).await;
    notes.extend(note);
    preview.notes = notes;
    let lookup = Arc::new(lookup);
    let mut readable: Vec<(usize, Row)> = Vec::new();
    for (queue_id, discovery_id) in items {
        let outcome = match rows.remove(&discovery_id) {
            Some(Ok(row)) => {
                readable.push((preview.items.len(), row));
                // Filled in below, once both plugins have mapped.
                Outcome::Unreadable(String::new())
            }
            Some(Err(e)) => Outcome::Unreadable(format!("cannot be read: {e}")),
            None => Outcome::Unreadable("no longer in keeper.db".to_owned()),
        };
        preview.items.push(ItemPreview {
            queue_id,
            discovery_id,
            outcome,
        });
    }
    let input: Vec<Row> = readable.iter().map(|(_, r)| r.clone()).collect();
    let (before, after) = tokio::task::spawn_blocking(move || {
        (
            active.map_all(lookup.clone(), &input),
            candidate.map_all(lookup, &input),
        )
    })
    .await
    .map_err(|e| PluginsError::Join(e.to_string()))?;
    for (((index, _), old), new) in readable.into_iter().zip(before).zip(after) {
        let changes = compare(&old, &new);
        let row = |mapped: Result<Mapped, MapError>| mapped.map(|m| m.row).map_err(|e| e.to_string());
        preview.items[index].outcome = Outcome::Mapped {
            active: row(old),
            candidate: row(new),
            changes,
        };
    }
    Ok(preview)
}

/// The plugin `keeper run` has active according to the registry, loaded
/// from where it came from; the note says when that is not possible.
async fn active_plugin(app: &App, loader: &Loader) -> Result<(Plugin, Vec<String>), PluginsError> {
    let active = app.registry.list().await?.active;
    let (bytes, note) = match active.as_ref().filter(|a| a.source != BUILT_IN) {
        None => (DEFAULT_PLUGIN.to_vec(), None),
        Some(record) => match tokio::fs::read(&record.source).await {
            Ok(bytes) if content_hash(&bytes) == record.hash => (bytes, None),
            Ok(bytes) => (
                bytes,
                Some(format!(
                    "{} changed since it became active; comparing with its current content",
                    record.source
                )),
            ),
            Err(e) => (
                DEFAULT_PLUGIN.to_vec(),
                Some(format!(
                    "the active plugin {} cannot be read ({e}); comparing with the built-in plugin",
                    record.source
                )),
            ),
        },
    };
    Ok((loader.load_bytes(bytes).await?, note.into_iter().collect()))
}

/// VH-Database's lookup tables, if the database is there; an empty lookup
/// otherwise, with a note (preview never creates VH-Database).
async fn vh_lookup(app: &App) -> (Lookup, Option<String>) {
    let location = app.settings.haven_location();
    if !location.path.is_file() {
        let note = format!(
            "VH-Database {} not found; locations are not resolved in this preview",
            location.path.display()
        );
        return (Lookup::default(), Some(note));
    }
    let sink = Sink::new(location, app.settings.haven_busy_timeout());
    let lookup = match sink.open().await {
        Ok(mut haven) => haven.lookup().await,
        Err(e) => Err(e),
    };
    match lookup {
        Ok(lookup) => (lookup, None),
        Err(e) => (
            Lookup::default(),
            Some(format!("{e}; locations are not resolved in this preview")),
        ),
    }
}

/// The differences between the active plugin's result and the candidate's:
/// changed columns, or a changed outcome.
fn compare(old: &Result<Mapped, MapError>, new: &Result<Mapped, MapError>) -> Vec<Change> {
    match (old, new) {
        (Ok(old), Ok(new)) => column_changes(&old.row, &new.row),
        (Ok(_), Err(e)) => vec![Change::WouldFail(e.to_string())],
        (Err(e), Ok(_)) => vec![Change::WouldNowMap(e.to_string())],
        (Err(a), Err(b)) if a == b => Vec::new(),
        (Err(a), Err(b)) => vec![Change::FailsDifferently {
            active: a.to_string(),
            candidate: b.to_string(),
        }],
    }
}

fn column_changes(old: &Row, new: &Row) -> Vec<Change> {
    let new_values: HashMap<&str, &Value> = new.0.iter().map(|(c, v)| (&**c, v)).collect();
    let change = |column: &str, active: Option<&Value>, candidate: Option<&Value>| Change::Column {
        column: column.to_owned(),
        active: active.cloned(),
        candidate: candidate.cloned(),
    };
    let mut changes = Vec::new();
    for (column, value) in &old.0 {
        match new_values.get(&**column) {
            Some(v) if *v == value => {}
            other => changes.push(change(column, Some(value), other.copied())),
        }
    }
    for (column, value) in &new.0 {
        if old.get(column).is_none() {
            changes.push(change(column, None, Some(value)));
        }
    }
    changes
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
        Row(cols.iter().map(|(c, v)| ((*c).into(), v.clone())).collect())
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
        let lines: Vec<String> = column_changes(&old, &new).iter().map(Change::to_string).collect();
        assert_eq!(
            lines,
            [
                "discovered_by: \"Explorer\" → \"EXPLORER\"",
                "tags: \"[]\" → (not set)",
                "moon_id: (not set) → 6"
            ]
        );
        assert!(column_changes(&old, &old).is_empty());
    }
}
