//! Map, check, write: the one step that turns keeper.db discovery rows into
//! VH-Database rows. The local worker (rows read from its own keeper.db) and
//! the remote puller (rows fetched from a bot host's export) both call
//! [`deliver`], so both sources get the same plugin, the same schema check
//! and the same exactly-once ledger.

use std::sync::Arc;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::mapper::{Lookup, MapError, Mapped, Plugin};
use crate::queue::ErrorClass;
use crate::row::Row;
use crate::sink::{Delivery, Haven, Sink, SinkError, TargetSchema};

/// One discovery to deliver.
#[derive(Debug, Clone)]
pub struct Input {
    /// The keeper.db discovery id: with the source id, the ledger key.
    pub discovery_id: i64,
    /// Enqueued by `keeper backfill`: may already be in VH-Database from the old bot.
    pub backfill: bool,
    /// The discovery row, or why it could not be read at its source.
    pub row: Result<Row, String>,
}

/// What became of one [`Input`], in input order.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// In VH-Database (inserted now, or found there by the ledger).
    Delivered {
        haven_id: i64,
        /// Inserted as a new report although the ledger held another one
        /// under its discovery id: the source keeper.db was restored from a
        /// backup or replaced. Counted as such.
        keeper_db_replaced: bool,
        /// Provenance, warnings, `already_in_vh`: what the queue remembers.
        metadata: serde_json::Value,
    },
    /// Not written; the class decides whether a retry can help.
    Failed { class: ErrorClass, message: String },
}

/// Maps `items` with `plugin`, checks every row against the VH-Database
/// table, and writes the accepted ones in one transaction with their ledger
/// rows keyed by `source_id` (the keeper.db the discovery ids belong to):
/// [`prepare`], then [`write`], on the sink's connection.
///
/// Errors when VH-Database itself cannot be used (missing, locked, no
/// `discoveries` table, the write failed): nothing was written and every item
/// shares that fate. A row that cannot be read, mapped or checked is an
/// item outcome.
pub async fn deliver(
    sink: &Sink,
    plugin: &Arc<Plugin>,
    source_id: &str,
    items: Vec<Input>,
) -> Result<Vec<Outcome>, SinkError> {
    let mut haven = sink.open().await?;
    let lookup = haven.shared_lookup().await?;
    let prepared = prepare(plugin, lookup, haven.schema(), items).await;
    let outcomes = write(&mut haven, source_id, prepared).await?;
    // The batch went through: its connection serves the next one.
    sink.keep(haven);
    Ok(outcomes)
}

/// A batch mapped and checked, waiting for its [`write`]: the outcomes of
/// the items that failed already, and the rows of the others.
pub struct Prepared {
    plugin: Arc<Plugin>,
    /// Discovery id and backfill flag of every item, in input order.
    keys: Vec<(i64, bool)>,
    fingerprints: Vec<String>,
    outcomes: Vec<Option<Outcome>>,
    /// Items whose row the plugin mapped and the table accepts.
    accepted: Vec<(usize, Mapped)>,
}

/// Maps `items` with `plugin` against the `lookup` snapshot and checks each
/// mapped row against `schema` (VH-Database's `discoveries` table). Touches
/// no database: a worker maps its next batch while the last one is written.
pub async fn prepare(plugin: &Arc<Plugin>, lookup: Arc<Lookup>, schema: &TargetSchema, items: Vec<Input>) -> Prepared {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; items.len()];
    let failed = |class: ErrorClass, message: String| Some(Outcome::Failed { class, message });

    // Indexes of the items whose row could be read, and those rows (moved
    // to the mapper's thread, not copied).
    let mut mappable: Vec<usize> = Vec::with_capacity(items.len());
    let mut rows: Vec<Row> = Vec::with_capacity(items.len());
    let mut fingerprints: Vec<String> = vec![String::new(); items.len()];
    let mut keys: Vec<(i64, bool)> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        keys.push((item.discovery_id, item.backfill));
        match item.row {
            Ok(row) => {
                mappable.push(i);
                fingerprints[i] = fingerprint(&row);
                rows.push(row);
            }
            Err(message) => outcomes[i] = failed(ErrorClass::Source, message),
        }
    }

    let mapped = map_rows(plugin, lookup, rows).await;
    let mut accepted: Vec<(usize, Mapped)> = Vec::with_capacity(mapped.len());
    for (&i, result) in mappable.iter().zip(mapped) {
        match result {
            Ok(m) => match schema.check(&m.row) {
                Ok(()) => accepted.push((i, m)),
                Err(e) => outcomes[i] = failed(e.class(), e.to_string()),
            },
            Err(e) => {
                let class = if matches!(e, MapError::TimedOut(_)) {
                    ErrorClass::Timeout
                } else {
                    ErrorClass::Mapping
                };
                outcomes[i] = failed(class, e.to_string());
            }
        }
    }
    let info = plugin.info();
    tracing::debug!(rows = keys.len(), plugin = %info.name, version = %info.version, "batch mapped");
    Prepared {
        plugin: plugin.clone(),
        keys,
        fingerprints,
        outcomes,
        accepted,
    }
}

/// Writes a [`prepare`]d batch's accepted rows to VH-Database in one
/// transaction with their ledger rows keyed by `source_id`; returns every
/// item's outcome, in input order. Errors, writing nothing, when
/// VH-Database cannot be used.
pub async fn write(haven: &mut Haven, source_id: &str, prepared: Prepared) -> Result<Vec<Outcome>, SinkError> {
    let Prepared {
        plugin,
        keys,
        fingerprints,
        mut outcomes,
        accepted,
    } = prepared;
    if !accepted.is_empty() {
        let deliveries: Vec<Delivery> = accepted
            .iter()
            .map(|(i, m)| Delivery {
                keeper_discovery_id: keys[*i].0,
                fingerprint: &fingerprints[*i],
                row: &m.row,
                backfill: keys[*i].1,
            })
            .collect();
        let info = plugin.info();
        // Observable point for tests: the write of a batch mapped by this
        // version, which may wait on VH-Database's lock, starts now.
        tracing::debug!(rows = deliveries.len(), plugin = %info.name, version = %info.version, "writing a mapped batch to VH-Database");
        let written = haven.write(source_id, info, &deliveries).await?;
        let plugin_metadata = json!(info);
        for ((i, m), w) in accepted.iter().zip(written) {
            let mut metadata = json!({"plugin": plugin_metadata.clone()});
            if !m.warnings.is_empty() {
                metadata["warnings"] = json!(m.warnings);
            }
            if w.already_there {
                metadata["already_in_vh"] = json!(true);
            }
            if let Some(other) = w.replaced {
                metadata["keeper_db_replaced"] = json!({"other_report_haven_id": other});
            }
            outcomes[*i] = Some(Outcome::Delivered {
                haven_id: w.haven_id,
                keeper_db_replaced: w.replaced.is_some(),
                metadata,
            });
        }
    }
    // Every index got an outcome above; the fallback only guards the invariant.
    Ok(outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|| Outcome::Failed {
                class: ErrorClass::Source,
                message: "internal error: the item got no outcome".into(),
            })
        })
        .collect())
}

/// The columns that identify a keeper.db report: who reported what, where
/// and when. Columns the old bot's other features update later (analysis
/// status, pattern matches, tier, tags, metadata) are left out, so a report
/// keeps its fingerprint for life.
pub(crate) const IDENTITY_COLUMNS: &[&str] = &[
    "user_id",
    "username",
    "guild_id",
    "discovery_type",
    "location",
    "description",
    "submission_timestamp",
    "system_name",
];

/// A report's identity in VH-Database's ledger, beside its discovery id:
/// SHA-256 (hex) over its identity columns with their SQLite types. A
/// restored keeper.db reuses discovery ids for other reports; their
/// fingerprints differ, so the ledger never takes one for the other. The
/// puller computes it from the exported row, the worker from keeper.db:
/// both see the same values, so both get the same fingerprint.
///
/// The hashed text is the JSON array `[[column, type, value], …]` in
/// [`IDENTITY_COLUMNS`] order, written straight into the hash: no JSON
/// values built, no string (it ran for every item of every batch).
pub fn fingerprint(row: &Row) -> String {
    let mut hash = HashWriter(Sha256::new());
    // Writing to a hash cannot fail, and these types always serialize.
    let _ = serde_json::to_writer(&mut hash, &Identity(row));
    hex::encode(hash.0.finalize())
}

/// A row's identity columns, serialized as [`fingerprint`] hashes them.
struct Identity<'r>(&'r Row);

impl serde::Serialize for Identity<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq as _;
        let mut seq = serializer.serialize_seq(Some(IDENTITY_COLUMNS.len()))?;
        for column in IDENTITY_COLUMNS {
            let value = self.0.get(column).unwrap_or(&crate::row::Value::Null);
            seq.serialize_element(&(column, value.type_name(), value.as_json()))?;
        }
        seq.end()
    }
}

/// An `io::Write` that feeds a hash.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs the plugin on a blocking thread: wasm calls are synchronous and WASI
/// must not run on an async worker thread.
async fn map_rows(plugin: &Arc<Plugin>, lookup: Arc<Lookup>, rows: Vec<Row>) -> Vec<Result<Mapped, MapError>> {
    let plugin = plugin.clone();
    let count = rows.len();
    match tokio::task::spawn_blocking(move || plugin.map_owned(lookup, rows)).await {
        Ok(results) => results,
        Err(join) => {
            let message = format!("mapper thread failed: {join}");
            (0..count).map(|_| Err(MapError::Trapped(message.clone()))).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::Value;

    /// A row with every kind of value the identity columns can hold, and
    /// text JSON must escape.
    fn row() -> Row {
        Row(vec![
            ("user_id".into(), Value::Text("123456789012345678".into())),
            ("username".into(), Value::Text("Explorer \"Ø\" \\ #1\n\u{1}".into())),
            ("guild_id".into(), Value::Integer(-42)),
            ("discovery_type".into(), Value::Text("🦴".into())),
            ("location".into(), Value::Real(0.1)),
            ("description".into(), Value::Real(f64::NAN)),
            ("system_name".into(), Value::Real(-0.0)),
            ("tags".into(), Value::Text("not part of the identity".into())),
        ])
    }

    /// The document the fingerprint hashes, built as JSON values.
    fn document(row: &Row) -> String {
        let identity: Vec<serde_json::Value> = IDENTITY_COLUMNS
            .iter()
            .map(|c| {
                let value = row.get(c).unwrap_or(&Value::Null);
                json!([c, value.type_name(), value.to_json()])
            })
            .collect();
        serde_json::Value::Array(identity).to_string()
    }

    #[test]
    fn a_fingerprint_never_changes() {
        // Ledgers in VH-Database hold fingerprints: the same row must give
        // the same one in every version of keeper.
        let row = row();
        assert_eq!(fingerprint(&row), hex::encode(Sha256::digest(document(&row))));
        assert_eq!(
            fingerprint(&row),
            "4c9b03927408098b81010e8bd0fcde3f5ae6cf541306aab0f2627f2d296ecd08"
        );
        assert_eq!(
            fingerprint(&Row::default()),
            hex::encode(Sha256::digest(document(&Row::default())))
        );
    }
}
