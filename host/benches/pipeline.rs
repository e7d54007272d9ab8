//! Throughput of the two batch paths, on real SQLite files in a temp folder:
//! `submit` (keeper.db, one transaction per chunk) and one `sync --once`
//! drain (claim, read, map in wasm, write VH-Database, mark synced).
//!
//! `cargo bench -p keeper --bench pipeline` (env `BENCH_REPORTS`, default
//! 20000, and `BENCH_BATCH`, default 1000). Prints reports/s per stage; the
//! figures go in README.md with the command that produced them.
//!
//! A figure alone says little about a shared machine, so the same run also
//! measures a baseline: the very rows the drain wrote, inserted into a fresh
//! copy of VH-Database with plain SQLite (one prepared INSERT per row, one
//! transaction per batch), and prints how many times slower the drain is.

use std::path::Path;
use std::time::Instant;

use clap::Parser;
use keeper::app::App;
use keeper::config::Settings;
use keeper::report::Report;
use sqlx::{Connection, SqliteConnection};

#[derive(Parser)]
struct BenchSettings {
    #[command(flatten)]
    settings: Settings,
}

const TYPES: [(&str, &str); 4] = [
    ("🦴", "species_type"),
    ("💎", "resource_type"),
    ("🚀", "ship_class"),
    ("📖", "story_type"),
];

fn report(i: usize) -> Report {
    let (emoji, field) = TYPES[i % TYPES.len()];
    let location = match i % 3 {
        0 => "moon:Getre Beta",
        1 => "planet:Unknown World",
        _ => "space:station:Anchor",
    };
    let record = serde_json::json!({
        "discovery_type": emoji,
        "system_name": "Ixiezh HV",
        "location": location,
        "description": format!("Benchmark report {i}: a long enough description to look like a real one."),
        "username": format!("Explorer#{:04}", i % 10_000),
        "user_id": format!("{}", 100_000_000_000 + i),
        "tags": ["bench", "sync"],
        field: "Vertebrate",
    });
    Report::from_json(&record).unwrap_or_else(|e| panic!("bench record {i} is invalid: {e}"))
}

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let reports_n = env_usize("BENCH_REPORTS", 20_000);
    let batch = env_usize("BENCH_BATCH", 1_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let keeper_db = dir.path().join("keeper.db");
    let haven_db = dir.path().join("VH-Database.db");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/VH-Database.sample.db"),
        &haven_db,
    )
    .expect("copy the sample VH-Database");

    let batch_arg = batch.to_string();
    let args = [
        "bench",
        "--keeper-db",
        keeper_db.to_str().expect("utf-8 temp path"),
        "--haven-db",
        haven_db.to_str().expect("utf-8 temp path"),
        "--sync-batch-size",
        batch_arg.as_str(),
    ];
    let settings = BenchSettings::parse_from(args).settings;
    let app = App::open(settings, keeper::store::Access::Create)
        .await
        .expect("open keeper.db");

    let reports: Vec<Report> = (0..reports_n).map(report).collect();
    let started = Instant::now();
    let ids = app.store.submit(&reports, 10).await.expect("submit");
    let submit_secs = started.elapsed().as_secs_f64();
    assert_eq!(ids.len(), reports_n);

    let worker = app.worker().await.expect("worker");
    let started = Instant::now();
    let drained = worker.drain().await.expect("drain");
    let sync_secs = started.elapsed().as_secs_f64();
    assert_eq!(drained.synced as usize, reports_n, "every report syncs");

    let baseline_secs = baseline(&haven_db, &dir.path().join("baseline.db"), batch).await;

    println!("reports            {reports_n}");
    println!("batch size         {batch}");
    println!(
        "submit             {:>8.3} s  {:>9.0} reports/s",
        submit_secs,
        reports_n as f64 / submit_secs
    );
    println!(
        "sync --once drain  {:>8.3} s  {:>9.0} reports/s",
        sync_secs,
        reports_n as f64 / sync_secs
    );
    println!(
        "baseline insert    {:>8.3} s  {:>9.0} rows/s  (plain SQLite, same rows, same batches)",
        baseline_secs,
        reports_n as f64 / baseline_secs
    );
    println!("drain / baseline   {:>8.1} x", sync_secs / baseline_secs);
}

async fn open(path: &Path) -> SqliteConnection {
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
    SqliteConnection::connect_with(&options)
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// Seconds to insert the rows the drain wrote to `written` into a fresh copy
/// of the sample VH-Database at `fresh`, with plain SQLite: each row's
/// values read back as a JSON array and bound to one prepared INSERT, one
/// transaction per `batch` rows. Only the insert is timed.
async fn baseline(written: &Path, fresh: &Path, batch: usize) -> f64 {
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/VH-Database.sample.db"),
        fresh,
    )
    .expect("copy the sample VH-Database");
    let mut source = open(written).await;
    let columns: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pragma_table_info('discoveries') WHERE name <> 'id' ORDER BY cid")
            .fetch_all(&mut source)
            .await
            .expect("VH-Database columns");
    let quoted: Vec<String> = columns.iter().map(|c| format!("\"{c}\"")).collect();
    let select = format!(
        "SELECT json_array({}) FROM discoveries
         WHERE id IN (SELECT haven_discovery_id FROM keeper_sync_ledger) ORDER BY id",
        quoted.join(", ")
    );
    let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(select))
        .fetch_all(&mut source)
        .await
        .expect("read the written rows");
    let values: Vec<String> = (0..columns.len()).map(|i| format!("?1 ->> {i}")).collect();
    let insert = format!(
        "INSERT INTO discoveries ({}) VALUES ({})",
        quoted.join(", "),
        values.join(", ")
    );

    let mut target = open(fresh).await;
    let started = Instant::now();
    for chunk in rows.chunks(batch.max(1)) {
        let mut tx = target.begin().await.expect("begin");
        for row in chunk {
            sqlx::query(sqlx::AssertSqlSafe(insert.as_str()))
                .bind(row)
                .execute(&mut *tx)
                .await
                .expect("baseline insert");
        }
        tx.commit().await.expect("commit");
    }
    started.elapsed().as_secs_f64()
}
