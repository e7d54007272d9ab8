//! The cost of mapping one item in the WebAssembly sandbox, beside the same
//! mapping compiled natively, in the same run.
//!
//! `cargo bench -p keeper --bench mapping` (env `BENCH_MAPPING_ITEMS`,
//! default 50,000, and `BENCH_MAPPING_BATCH`, default 1,000). The sandboxed
//! figure is the built-in plugin run as the worker runs it: one instance per
//! batch (`Plugin::map_owned`: the batch's rows moved into the sandbox's
//! input), every limit armed (deadline, memory, output size), the lookup an
//! import answered by the host. The same rows mapped with
//! `Plugin::map_all`, which copies each row first (previews, conformance
//! checks), are timed too. The baseline is
//! `mapper_guest::map_row`, the very code the plugin is built from, called
//! directly with the same rows and a lookup over the same tables. The
//! difference is what the sandbox costs: instance set-up per batch, copying
//! each row in and its mapping out, the lookup calls crossing the boundary.

use std::sync::Arc;
use std::time::Instant;

use keeper::mapper::{DEFAULT_PLUGIN, Limits, Lookup, Runtime};
use keeper::report::Report;
use keeper::row::{ColumnNames, Row, Value, read_row_sharing};
use keeper::store::{Access, Store};
use sqlx::{Connection, SqliteConnection};

#[path = "common/reports.rs"]
mod reports;
use reports::report;

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `items` keeper.db discoveries as the worker hands them to a plugin:
/// the pipeline bench's reports, submitted to a fresh keeper.db and read
/// back whole (every column of the table, NULL where a report has no
/// value, the type-specific fields in `metadata`).
fn rows(items: usize) -> Vec<Row> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("start a tokio runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keeper.db");
        let store = Store::open(&path, Access::Create).await.expect("create keeper.db");
        let reports: Vec<Report> = (0..items).map(report).collect();
        store.submit(&reports, 10).await.expect("submit the bench reports");
        let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("open keeper.db");
        // Read as the worker reads a batch: the rows share their names.
        let mut names = ColumnNames::default();
        sqlx::query("SELECT * FROM discoveries ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .expect("read the bench reports")
            .iter()
            .map(|row| read_row_sharing(row, &mut names).expect("a readable row"))
            .collect()
    })
}

/// VH-Database's lookup tables for the bench's rows: the system and a moon
/// of it (the planet of the `planet:` reports is not there: they warn).
fn lookup() -> Lookup {
    Lookup::new(
        vec![("sys-1".to_owned(), "Ixiezh HV".to_owned())],
        vec![(11, "sys-1".to_owned(), "Erren".to_owned())],
        vec![(21, 11, "Getre Beta".to_owned())],
    )
}

/// The host's lookup as the native mapping code asks it.
struct Native<'a>(&'a Lookup);

impl mapper_guest::Lookup for Native<'_> {
    fn find_system(&self, name: &str) -> Option<String> {
        self.0.find_system(name)
    }
    fn find_planet(&self, system_id: &str, name: &str) -> Option<mapper_guest::Body> {
        self.0
            .find_planet(system_id, name)
            .map(|(id, name)| mapper_guest::Body {
                id,
                planet_id: id,
                name,
            })
    }
    fn find_moon(&self, system_id: &str, name: &str) -> Option<mapper_guest::Body> {
        self.0
            .find_moon(system_id, name)
            .map(|(id, planet_id, name)| mapper_guest::Body { id, planet_id, name })
    }
}

fn native_columns(row: &Row) -> Vec<(String, mapper_guest::Value)> {
    row.0
        .iter()
        .map(|(name, value)| {
            let value = match value {
                Value::Null => mapper_guest::Value::Null,
                Value::Integer(i) => mapper_guest::Value::Integer(*i),
                Value::Real(r) => mapper_guest::Value::Real(*r),
                Value::Text(t) => mapper_guest::Value::Text(t.clone()),
            };
            (name.to_string(), value)
        })
        .collect()
}

fn main() {
    let items = env_usize("BENCH_MAPPING_ITEMS", 50_000).max(1);
    let batch = env_usize("BENCH_MAPPING_BATCH", 1_000).max(1);
    let rows = rows(items);
    let lookup = Arc::new(lookup());

    let runtime = Runtime::new(Limits::default()).expect("start the wasm runtime");
    let plugin = runtime.load(DEFAULT_PLUGIN).expect("load the built-in plugin");
    // Warm-up: the first instance pays for lazy set-up that no batch repeats.
    plugin.map_all(lookup.clone(), &rows[..batch.min(items)]);

    // The worker's batches are its own: copied before the clock starts.
    let batches: Vec<Vec<Row>> = rows.chunks(batch).map(<[Row]>::to_vec).collect();
    let started = Instant::now();
    let mut mapped = 0;
    for owned in batches {
        mapped += plugin
            .map_owned(lookup.clone(), owned)
            .iter()
            .filter(|r| r.is_ok())
            .count();
    }
    let sandboxed = started.elapsed().as_secs_f64();
    assert_eq!(mapped, items, "every bench row maps");

    let started = Instant::now();
    let mut copied = 0;
    for chunk in rows.chunks(batch) {
        copied += plugin
            .map_all(lookup.clone(), chunk)
            .iter()
            .filter(|r| r.is_ok())
            .count();
    }
    let sandboxed_copying = started.elapsed().as_secs_f64();
    assert_eq!(copied, items, "every bench row maps");

    let native_lookup = Native(&lookup);
    let started = Instant::now();
    let mut native_mapped = 0;
    for row in &rows {
        // The columns are converted inside the timing: the plugin's figure
        // includes copying each row into the sandbox.
        let columns = native_columns(row);
        if std::hint::black_box(mapper_guest::map_row(&columns, &native_lookup)).is_ok() {
            native_mapped += 1;
        }
    }
    let native = started.elapsed().as_secs_f64();
    assert_eq!(native_mapped, items, "every bench row maps natively");

    let per_item = |secs: f64| secs * 1e6 / items as f64;
    println!("items              {items} (batches of {batch})");
    println!("sandboxed          {:>8.2} µs/item", per_item(sandboxed));
    println!(
        "  rows copied in   {:>8.2} µs/item (map_all)",
        per_item(sandboxed_copying)
    );
    println!("native (baseline)  {:>8.2} µs/item", per_item(native));
    println!("sandbox / native   {:>8.1} x", sandboxed / native);
}
