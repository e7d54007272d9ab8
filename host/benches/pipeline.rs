//! Throughput of the two batch paths, on real SQLite files in a temp folder:
//! `submit` (keeper.db, one transaction per chunk) and one `sync --once`
//! drain (claim, read, map in wasm, write VH-Database, mark synced).
//!
//! `cargo bench -p keeper --bench pipeline` (env `BENCH_REPORTS`, default
//! 20000, `BENCH_BATCH`, default 1000, the drain's `SYNC_BATCH_SIZE`, and
//! `BENCH_BATCH_MAX`, its `SYNC_BATCH_MAX`, keeper's default unless set).
//! Prints reports/s per stage; the figures go in README.md with the command
//! that produced them.
//!
//! Then the same reports are backfilled as the old bot left them (the
//! keeper.db without its queue, VH-Database with the rows but no ledger):
//! every one must be linked to its old row, none inserted again, and the
//! time is compared with the plain drain's.
//!
//! With `BENCH_BACKLOG=N` it also times claims of one batch from a queue of
//! N pending items against the same claims from a queue of 10,000 (the
//! baseline): a claim's cost should not grow with the backlog.
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

#[path = "common/reports.rs"]
mod reports;
use reports::report;

#[derive(Parser)]
struct BenchSettings {
    #[command(flatten)]
    settings: Settings,
}

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let reports_n = env_usize("BENCH_REPORTS", 20_000);
    let batch = env_usize("BENCH_BATCH", 1_000);
    let batch_max = std::env::var("BENCH_BATCH_MAX").ok();
    let dir = tempfile::tempdir().expect("temp dir");
    let keeper_db = dir.path().join("keeper.db");
    let haven_db = dir.path().join("VH-Database.db");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/VH-Database.sample.db"),
        &haven_db,
    )
    .expect("copy the sample VH-Database");

    let app = bench_app(&keeper_db, Some(&haven_db), batch, batch_max.as_deref()).await;

    let reports: Vec<Report> = (0..reports_n).map(report).collect();
    let started = Instant::now();
    let ids = app.store.submit(&reports, 10).await.expect("submit");
    let submit_secs = started.elapsed().as_secs_f64();
    assert_eq!(ids.len(), reports_n);

    let worker = start_worker(&app).await;
    let started = Instant::now();
    let drained = worker.drain().await.expect("drain");
    let sync_secs = started.elapsed().as_secs_f64();
    assert_eq!(drained.synced as usize, reports_n, "every report syncs");

    let baseline_secs = baseline(&haven_db, &dir.path().join("baseline.db"), batch).await;

    println!("reports            {reports_n}");
    println!(
        "batch size         {batch}, growing with the backlog up to {}",
        app.settings
            .sync_batch_max
            .max(u32::try_from(batch).unwrap_or(u32::MAX))
    );
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

    let backfill_secs = backfill_seconds(&keeper_db, &haven_db, dir.path(), batch, reports_n).await;
    println!(
        "backfill + drain   {:>8.3} s  {:>9.0} reports/s  (every one linked to the old bot's row)",
        backfill_secs,
        reports_n as f64 / backfill_secs
    );
    println!("backfill / drain   {:>8.1} x", backfill_secs / sync_secs);

    let backlog = env_usize("BENCH_BACKLOG", 0);
    if backlog > 0 {
        // Claims in a row, taking at most half of the smaller backlog.
        let rounds = (SMALL_BACKLOG.min(backlog) / 2 / batch.max(1)).clamp(1, 50);
        let small = claim_seconds(&dir.path().join("small-backlog.db"), SMALL_BACKLOG, batch, rounds).await;
        let big = claim_seconds(&dir.path().join("big-backlog.db"), backlog, batch, rounds).await;
        println!(
            "claim of {batch}, {SMALL_BACKLOG} pending  {:>8.3} ms  (baseline)",
            small * 1e3
        );
        println!("claim of {batch}, {backlog} pending  {:>8.3} ms", big * 1e3);
        println!("claim big / small  {:>8.2} x", big / small);
    }
}

/// Seconds for `keeper backfill` and the drain that follows, on copies of
/// the drained databases made to look as the old bot left them.
async fn backfill_seconds(keeper_db: &Path, haven_db: &Path, dir: &Path, batch: usize, reports_n: usize) -> f64 {
    let old_keeper = dir.join("old-keeper.db");
    let old_haven = dir.join("old-VH-Database.db");
    // `VACUUM INTO`: a plain file copy would miss what is still in the WAL.
    for (from, to) in [(keeper_db, &old_keeper), (haven_db, &old_haven)] {
        sqlx::query("VACUUM INTO ?1")
            .bind(to.to_str().expect("utf-8 temp path"))
            .execute(&mut open(from).await)
            .await
            .unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
    let mut keeper = open(&old_keeper).await;
    sqlx::raw_sql("DELETE FROM sync_queue")
        .execute(&mut keeper)
        .await
        .expect("drop the queue");
    drop(keeper);
    let mut haven = open(&old_haven).await;
    sqlx::raw_sql("DROP TABLE keeper_sync_ledger; DROP TABLE keeper_sync_ledger_version")
        .execute(&mut haven)
        .await
        .expect("drop the ledger");
    drop(haven);

    let app = bench_app(&old_keeper, Some(&old_haven), batch, None).await;
    let started = Instant::now();
    let queued = app.queue.backfill().await.expect("backfill");
    let drained = start_worker(&app).await.drain().await.expect("drain");
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(queued as usize, reports_n, "every report queued");
    assert_eq!(drained.synced as usize, reports_n, "every report synced");
    let mut haven = open(&old_haven).await;
    let linked: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM keeper_sync_ledger WHERE linked = 1")
        .fetch_one(&mut haven)
        .await
        .expect("count linked");
    assert_eq!(linked as usize, reports_n, "every report linked to its old row");
    secs
}

/// The backlog that claims at any other backlog are compared with.
const SMALL_BACKLOG: usize = 10_000;

/// Mean seconds of one of `rounds` claims of `batch` from a keeper.db at `path` holding
/// `backlog` pending items (submitted in chunks, so memory stays small).
async fn claim_seconds(path: &Path, backlog: usize, batch: usize, rounds: usize) -> f64 {
    let app = bench_app(path, None, batch, None).await;
    let mut next = 0;
    while next < backlog {
        let end = (next + 50_000).min(backlog);
        let reports: Vec<Report> = (next..end).map(report).collect();
        app.store.submit(&reports, 10).await.expect("submit backlog");
        next = end;
    }
    let limit = u32::try_from(batch).expect("batch fits u32");
    let started = Instant::now();
    for _ in 0..rounds {
        let claim = app.queue.claim(limit, None).await.expect("claim");
        assert!(!claim.items.is_empty(), "the backlog ran out");
    }
    started.elapsed().as_secs_f64() / rounds as f64
}

/// keeper on the given files, as `keeper --keeper-db … --haven-db …
/// --sync-batch-size … [--sync-batch-max …]` would be.
async fn bench_app(keeper_db: &Path, haven_db: Option<&Path>, batch: usize, batch_max: Option<&str>) -> App {
    let batch_arg = batch.to_string();
    let mut args = vec![
        "bench",
        "--keeper-db",
        keeper_db.to_str().expect("utf-8 temp path"),
        "--sync-batch-size",
        batch_arg.as_str(),
    ];
    if let Some(max) = batch_max {
        args.extend(["--sync-batch-max", max]);
    }
    if let Some(haven_db) = haven_db {
        args.extend(["--haven-db", haven_db.to_str().expect("utf-8 temp path")]);
    }
    App::open(BenchSettings::parse_from(args).settings, keeper::store::Access::Create)
        .await
        .expect("open keeper.db")
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

/// The worker `keeper sync` runs: on the start-up plugin, no hot reload.
async fn start_worker(app: &App) -> keeper::worker::Worker {
    let plugins = keeper::plugins::PluginManager::start(app, false)
        .await
        .expect("start the plugin manager");
    app.worker_on(plugins.slot())
}
