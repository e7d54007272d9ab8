//! The guide's own test scenarios, automated against the real binary and real
//! SQLite files: submit → synced; VH-Database missing, locked, mismatched;
//! the backoff schedule; manual retry; cleanup; a worker killed mid-batch;
//! adoption of a legacy keeper.db; bulk submission.

use crate::common;

use std::time::Duration;

use common::*;
use sqlx::Row;

#[tokio::test]
async fn submitted_moon_report_syncs_with_resolved_ids() {
    let env = Env::new();
    let id = env.submit(
        "🦴",
        "Ixiezh HV",
        "planet:Getre Beta",
        "  Ancient alien fossil  ",
        &[
            "--field",
            "species_type=Vertebrate",
            "--field",
            "estimated_age=200 million years",
            "--tag",
            "bones",
        ],
    );
    assert_eq!(queue_state(&env.keeper, id).await.0, "pending");

    let out = env.ok(&["sync", "--once"]);
    assert!(out.contains("synced 1, failed 0"), "{out}");
    assert_eq!(queue_state(&env.keeper, id).await, ("synced".into(), 1, None));

    let vh = rows(
        &env.haven,
        "SELECT discovery_type, system_id, planet_id, moon_id, location_type, location_name, description,
                species_type, estimated_age, discovered_by, discord_user_id, submission_timestamp, tags
         FROM discoveries",
    )
    .await;
    assert_eq!(vh.len(), 1);
    let row = &vh[0];
    assert_eq!(row.get::<String, _>("discovery_type"), "🦴");
    assert_eq!(row.get::<String, _>("system_id"), "SYS_EUCLID_D148E5FD");
    // Getre Beta is a moon (id 6) of planet 31, whatever the reporter said.
    assert_eq!(row.get::<String, _>("location_type"), "moon");
    assert_eq!(row.get::<Option<i64>, _>("moon_id"), Some(6));
    assert_eq!(row.get::<Option<i64>, _>("planet_id"), Some(31));
    assert_eq!(row.get::<String, _>("location_name"), "Getre Beta");
    assert_eq!(row.get::<String, _>("description"), "Ancient alien fossil");
    assert_eq!(row.get::<String, _>("species_type"), "Vertebrate");
    assert_eq!(row.get::<String, _>("estimated_age"), "200 million years");
    assert_eq!(row.get::<String, _>("discovered_by"), "Explorer#1234");
    assert_eq!(row.get::<String, _>("discord_user_id"), "123456789");
    let tags: String = row.get("tags");
    assert_eq!(serde_json::from_str::<Vec<String>>(&tags).unwrap(), ["bones"]);

    // The time of the report, not of the sync.
    let mut keeper = connect(&env.keeper).await;
    let reported: String = sqlx::query_scalar("SELECT submission_timestamp FROM discoveries WHERE id = ?1")
        .bind(id)
        .fetch_one(&mut keeper)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("submission_timestamp"), reported);

    // The queue remembers where it went and which plugin wrote it.
    let (haven_id, metadata): (i64, String) =
        sqlx::query_as("SELECT haven_discovery_id, metadata FROM sync_queue WHERE discovery_id = ?1")
            .bind(id)
            .fetch_one(&mut keeper)
            .await
            .unwrap();
    assert_eq!(haven_id, scalar_i64(&env.haven, "SELECT id FROM discoveries").await);
    let metadata: serde_json::Value = serde_json::from_str(&metadata).unwrap();
    assert_eq!(metadata["plugin"]["name"], "keeper-default-mapper");
    assert_eq!(metadata["plugin"]["hash"].as_str().map(str::len), Some(64));
    assert_eq!(
        scalar_i64(
            &env.haven,
            "SELECT COUNT(*) FROM keeper_sync_ledger WHERE plugin_name = 'keeper-default-mapper'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn unresolved_location_syncs_with_a_warning() {
    let env = Env::new();
    let id = env.submit("💎", "Nowhere Known", "planet:Atlantis", "Gold everywhere", &[]);
    env.ok(&["sync", "--once"]);
    assert_eq!(queue_state(&env.keeper, id).await.0, "synced");
    let vh = rows(
        &env.haven,
        "SELECT system_id, planet_id, location_type, location_name FROM discoveries",
    )
    .await;
    assert_eq!(vh[0].get::<Option<String>, _>("system_id"), None);
    assert_eq!(vh[0].get::<Option<i64>, _>("planet_id"), None);
    assert_eq!(vh[0].get::<String, _>("location_type"), "planet");
    assert_eq!(vh[0].get::<String, _>("location_name"), "Atlantis");
    let meta: String = rows(&env.keeper, "SELECT metadata FROM sync_queue").await[0].get("metadata");
    assert!(meta.contains("warnings"), "{meta}");
}

#[tokio::test]
async fn missing_vh_database_waits_then_syncs_when_restored() {
    let env = Env::new();
    let aside = env.dir.path().join("VH-Database.moved");
    std::fs::rename(&env.haven, &aside).unwrap();
    let id = env.submit("🚀", "Oculi", "planet:Erren", "A wreck", &[]);

    let out = env.ok(&["sync", "--once"]);
    assert!(out.contains("synced 0, failed 1"), "{out}");
    let (status, attempts, error) = queue_state(&env.keeper, id).await;
    assert_eq!((status.as_str(), attempts), ("pending", 1));
    let error = error.unwrap();
    assert!(error.starts_with("VH-Database not accessible:"), "{error}");
    assert!(!env.haven.exists(), "an explicitly named VH-Database is never created");

    std::fs::rename(&aside, &env.haven).unwrap();
    env.ok(&["sync", "--once"]);
    assert_eq!(queue_state(&env.keeper, id).await, ("synced".into(), 2, None));
    assert_eq!(scalar_i64(&env.haven, "SELECT COUNT(*) FROM discoveries").await, 1);
}

#[tokio::test]
async fn locked_vh_database_fails_fast_then_syncs_when_released() {
    let mut env = Env::new();
    env.var("HAVEN_BUSY_TIMEOUT_MS", 200);
    let id = env.submit("⚡", "Tenex[VH]", "planet:Quarda", "Sandstorms", &[]);

    let mut holder = connect(&env.haven).await;
    sqlx::raw_sql("BEGIN EXCLUSIVE").execute(&mut holder).await.unwrap();
    // Bounded by the busy timeout, not a hang: `env.ok` fails the test if
    // the command does not finish within COMMAND_TIMEOUT.
    let out = env.ok(&["sync", "--once"]);
    assert!(out.contains("synced 0, failed 1"), "{out}");
    let (status, attempts, error) = queue_state(&env.keeper, id).await;
    assert_eq!((status.as_str(), attempts), ("pending", 1));
    assert_eq!(
        error.as_deref(),
        Some(
            format!(
                "database is locked (VH-Database {} is held by another program)",
                env.haven.display()
            )
            .as_str()
        )
    );

    sqlx::raw_sql("ROLLBACK").execute(&mut holder).await.unwrap();
    drop(holder);
    env.ok(&["sync", "--once"]);
    assert_eq!(queue_state(&env.keeper, id).await.0, "synced");
}

#[tokio::test]
async fn vh_table_missing_a_column_is_a_schema_mismatch() {
    let env = Env::new();
    exec(&env.haven, "ALTER TABLE discoveries DROP COLUMN species_type").await;
    let id = env.submit(
        "🦴",
        "Oculi",
        "planet:Erren",
        "Bones",
        &["--field", "species_type=Raptor"],
    );
    env.ok(&["sync", "--once"]);
    let (status, _, error) = queue_state(&env.keeper, id).await;
    assert_eq!(status, "pending");
    assert_eq!(
        error.as_deref(),
        Some("schema mismatch: column species_type missing in VH-Database table discoveries")
    );
    assert_eq!(scalar_i64(&env.haven, "SELECT COUNT(*) FROM discoveries").await, 0);
}

#[tokio::test]
async fn backoff_doubles_and_the_tenth_failure_gives_up() {
    let mut env = Env::new();
    env.var("SYNC_RETRY_BASE", 30);
    std::fs::remove_file(&env.haven).unwrap();
    let id = env.submit("📜", "Oculi", "space:station:Oculi Hub", "A log", &[]);

    let mut delays = Vec::new();
    for attempt in 1..=10 {
        env.ok(&["sync", "--once"]);
        let mut conn = connect(&env.keeper).await;
        let (status, attempts, delay): (String, i64, Option<i64>) = sqlx::query_as(
            "SELECT sync_status, sync_attempts,
                    CAST(round((julianday(next_retry_after) - julianday(last_sync_attempt)) * 86400) AS INTEGER)
             FROM sync_queue WHERE discovery_id = ?1",
        )
        .bind(id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(attempts, attempt);
        if attempt < 10 {
            assert_eq!(status, "pending");
            delays.push(delay.unwrap());
            // Not due yet: another pass leaves it alone.
            env.ok(&["sync", "--once"]);
            assert_eq!(queue_state(&env.keeper, id).await.1, attempt);
            // Pretend the wait is over.
            sqlx::query("UPDATE sync_queue SET next_retry_after = datetime('now', '-1 second')")
                .execute(&mut conn)
                .await
                .unwrap();
        } else {
            assert_eq!(status, "max_retries_exceeded");
            assert_eq!(delay, None);
        }
    }
    // Measured from the attempt's claim (`last_sync_attempt`) to the retry
    // time set when its failure is recorded, a moment later: on a loaded
    // machine that moment can round up to a second or two more.
    let expected = [30, 60, 120, 240, 480, 960, 1920, 3840, 7680];
    assert_eq!(delays.len(), expected.len());
    for (delay, expected) in delays.iter().zip(expected) {
        assert!((expected..=expected + 2).contains(delay), "{delays:?} vs {expected}");
    }

    let failed: serde_json::Value = serde_json::from_str(&env.ok(&["failed", "--json"])).unwrap();
    assert_eq!(failed["count"], 1);
    let item = &failed["failed_items"][0];
    assert_eq!(item["discovery_id"], id);
    assert_eq!(item["sync_attempts"], 10);
    assert_eq!(item["discovery_type"], "📜");
    assert_eq!(item["username"], "Explorer#1234");
    assert!(
        item["sync_error"]
            .as_str()
            .unwrap()
            .starts_with("VH-Database not accessible")
    );
}

#[tokio::test]
async fn manual_retry_resets_a_failed_item_and_it_syncs() {
    let mut env = Env::new();
    env.var("SYNC_MAX_ATTEMPTS", 1);
    let aside = env.dir.path().join("aside.db");
    std::fs::rename(&env.haven, &aside).unwrap();
    let id = env.submit("🆕", "Oculi", "planet:Erren", "New biome", &[]);
    env.ok(&["sync", "--once"]);
    assert_eq!(queue_state(&env.keeper, id).await.0, "max_retries_exceeded");
    let queue_id = scalar_i64(&env.keeper, "SELECT id FROM sync_queue").await;

    // A failed item is not retried by the worker on its own.
    std::fs::rename(&aside, &env.haven).unwrap();
    env.ok(&["sync", "--once"]);
    assert_eq!(queue_state(&env.keeper, id).await.0, "max_retries_exceeded");

    let out = env.ok(&["retry", &queue_id.to_string()]);
    assert_eq!(out.trim(), format!("Queue item {queue_id} marked for retry"));
    assert_eq!(queue_state(&env.keeper, id).await, ("pending".into(), 0, None));
    env.ok(&["sync", "--once"]);
    assert_eq!(queue_state(&env.keeper, id).await.0, "synced");

    // Unknown and already-synced items are refused with a reason.
    let out = env.run(&["retry", "9999"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("queue item 9999 does not exist"),
        "{}",
        stderr(&out)
    );
    let out = env.run(&["retry", &queue_id.to_string()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already synced"), "{}", stderr(&out));
}

#[tokio::test]
async fn retry_all_failed_requeues_every_failed_item() {
    let mut env = Env::new();
    env.var("SYNC_MAX_ATTEMPTS", 1);
    std::fs::remove_file(&env.haven).unwrap();
    for n in 0..3 {
        env.submit("🦗", "Oculi", "planet:Erren", &format!("Creature {n}"), &[]);
    }
    env.ok(&["sync", "--once"]);
    assert_eq!(
        scalar_i64(
            &env.keeper,
            "SELECT COUNT(*) FROM sync_queue WHERE sync_status = 'max_retries_exceeded'"
        )
        .await,
        3
    );
    let out = env.ok(&["retry", "--all-failed"]);
    assert_eq!(out.trim(), "3 failed item(s) marked for retry");
    assert_eq!(
        scalar_i64(
            &env.keeper,
            "SELECT COUNT(*) FROM sync_queue WHERE sync_status = 'pending' AND sync_attempts = 0"
        )
        .await,
        3
    );
}

#[tokio::test]
async fn cleanup_deletes_only_old_synced_items() {
    let env = Env::new();
    let old = env.submit("🏛️", "Oculi", "planet:Erren", "Old temple", &[]);
    let recent = env.submit("🏛️", "Oculi", "planet:Erren", "New temple", &[]);
    env.ok(&["sync", "--once"]);
    let pending = env.submit("🏛️", "Oculi", "planet:Erren", "Unsynced temple", &[]);
    let mut conn = connect(&env.keeper).await;
    sqlx::query("UPDATE sync_queue SET synced_at = datetime('now', '-40 days') WHERE discovery_id = ?1")
        .bind(old)
        .execute(&mut conn)
        .await
        .unwrap();
    let out = env.ok(&["cleanup", "--days", "30"]);
    assert_eq!(out.trim(), "deleted 1 synced item(s) older than 30 day(s)");
    let left: Vec<i64> = sqlx::query_scalar("SELECT discovery_id FROM sync_queue ORDER BY discovery_id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, [recent, pending]);
    // The discovery itself stays in keeper.db.
    assert_eq!(scalar_i64(&env.keeper, "SELECT COUNT(*) FROM discoveries").await, 3);
}

#[tokio::test]
async fn status_counts_by_state() {
    let env = Env::new();
    env.submit("⚙️", "Oculi", "planet:Erren", "Device", &[]);
    env.submit("⚙️", "Oculi", "planet:Erren", "Device 2", &[]);
    env.ok(&["sync", "--once"]);
    env.submit("⚙️", "Oculi", "planet:Erren", "Device 3", &[]);
    let status: serde_json::Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    assert_eq!(
        status["queue"],
        serde_json::json!({"pending": 1, "syncing": 0, "synced": 2, "failed": 0})
    );
    assert_eq!(status["totals"]["total_synced"], 2);
}

/// Reports as JSON lines, valid, `n` of them.
fn jsonl(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(
            &serde_json::json!({
                "discovery_type": "💎", "system_name": "Oculi", "location": "planet:New Oculs",
                "description": format!("Deposit number {i}"), "username": "Miner", "user_id": "42",
                "resource_type": "Gold",
            })
            .to_string(),
        );
        s.push('\n');
    }
    s
}

const SYNCING: &str = "SELECT COUNT(*) FROM sync_queue WHERE sync_status = 'syncing'";
const SYNCED: &str = "SELECT COUNT(*) FROM sync_queue WHERE sync_status = 'synced'";
const PENDING: &str = "SELECT COUNT(*) FROM sync_queue WHERE sync_status = 'pending'";

/// Takes VH-Database's write lock, as another program would: a worker then
/// claims a batch, maps it and waits to write it, its items `syncing`.
async fn hold_vh_lock(env: &Env) -> sqlx::SqliteConnection {
    let mut holder = connect(&env.haven).await;
    sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut holder).await.unwrap();
    holder
}

/// Gives VH-Database's write lock back.
async fn release_vh_lock(mut holder: sqlx::SqliteConnection) {
    sqlx::raw_sql("ROLLBACK").execute(&mut holder).await.unwrap();
}

#[tokio::test]
async fn killed_worker_loses_nothing_and_duplicates_nothing() {
    const BATCH: i64 = 50;
    const FIRST: usize = 50;
    const LATER: usize = 250;
    const N: i64 = (FIRST + LATER) as i64;
    let mut env = Env::new();
    // The worker renews its lease every second while it waits on the lock.
    env.var("SYNC_BATCH_SIZE", BATCH)
        .var("SYNC_BATCH_MAX", BATCH)
        .var("SYNC_LEASE", 3)
        .var("HAVEN_BUSY_TIMEOUT_MS", 300_000);
    let out = env.run_with_stdin(&["submit", "--json", "-"], jsonl(FIRST).as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(env.ok(&["sync", "--once"]).contains("synced 50, failed 0"));
    let file = env.dir.path().join("bulk.jsonl");
    std::fs::write(&file, jsonl(LATER).replace("Deposit number", "Later deposit")).unwrap();
    env.ok(&["submit", "--json", file.to_str().unwrap()]);

    // Killed (SIGKILL) with two whole batches `syncing`: one mapped and
    // waiting on the lock to be written, the next mapped behind it (the
    // worker maps one batch ahead, and no more while the first waits).
    let holder = hold_vh_lock(&env).await;
    let mut child = env
        .command(&["sync"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_value(&env.keeper, SYNCING, 2 * BATCH, Duration::from_secs(120)).await;
    child.kill().unwrap();
    wait_exit(&mut child, EXIT_TIMEOUT, "the killed worker to be reaped");
    release_vh_lock(holder).await;
    assert_eq!(query_i64(&env.keeper, SYNCED).await, FIRST as i64);
    assert_eq!(
        query_i64(&env.keeper, SYNCING).await,
        2 * BATCH,
        "the dead worker's batches are held"
    );
    assert_eq!(query_i64(&env.keeper, PENDING).await, N - FIRST as i64 - 2 * BATCH);
    let dead_tokens: Vec<String> = rows(
        &env.keeper,
        "SELECT DISTINCT claim_token FROM sync_queue WHERE sync_status = 'syncing'",
    )
    .await
    .iter()
    .map(|row| row.get(0))
    .collect();
    assert_eq!(dead_tokens.len(), 2, "one claim a batch");

    // Its lease runs out (the queue compares it to SQLite's clock); a new
    // worker takes the batch back with everything else.
    wait_for_value(
        &env.keeper,
        "SELECT COUNT(*) FROM sync_queue
         WHERE sync_status = 'syncing' AND lease_expires_at > strftime('%Y-%m-%d %H:%M:%f', 'now')",
        0,
        Duration::from_secs(60),
    )
    .await;
    let out = env.ok(&["sync", "--once"]);
    assert!(out.contains(&format!("synced {}, failed 0", N - FIRST as i64)), "{out}");
    assert_eq!(query_i64(&env.keeper, SYNCED).await, N);
    for dead_token in &dead_tokens {
        assert_eq!(
            query_i64(
                &env.keeper,
                &format!("SELECT COUNT(*) FROM sync_queue WHERE claim_token = '{dead_token}'")
            )
            .await,
            0
        );
    }
    assert_eq!(scalar_i64(&env.haven, "SELECT COUNT(*) FROM discoveries").await, N);
    assert_eq!(
        scalar_i64(&env.haven, "SELECT COUNT(DISTINCT description) FROM discoveries").await,
        N
    );
    // Every queue item points at its own VH row, and the ledger agrees.
    assert_eq!(
        scalar_i64(&env.keeper, "SELECT COUNT(DISTINCT haven_discovery_id) FROM sync_queue").await,
        N
    );
    assert_eq!(
        scalar_i64(&env.haven, "SELECT COUNT(*) FROM keeper_sync_ledger").await,
        N
    );
}

#[tokio::test]
async fn crash_between_vh_commit_and_queue_update_does_not_insert_twice() {
    let env = Env::new();
    let id = env.submit("🦴", "Oculi", "planet:Erren", "Fossil", &[]);
    env.ok(&["sync", "--once"]);
    // Put the item back as if the worker died after writing VH-Database but
    // before marking the queue: the ledger must recognise it.
    exec(
        &env.keeper,
        "UPDATE sync_queue SET sync_status = 'syncing', lease_expires_at = datetime('now', '-1 second'),
             haven_discovery_id = NULL, synced_at = NULL",
    )
    .await;
    env.ok(&["sync", "--once"]);
    assert_eq!(queue_state(&env.keeper, id).await.0, "synced");
    assert_eq!(scalar_i64(&env.haven, "SELECT COUNT(*) FROM discoveries").await, 1);
    assert_eq!(
        scalar_i64(&env.keeper, "SELECT haven_discovery_id FROM sync_queue").await,
        scalar_i64(&env.haven, "SELECT id FROM discoveries").await
    );
}

/// Every row of every table, as text, to compare a database before and after.
async fn dump(path: &std::path::Path, tables: &[&str]) -> Vec<String> {
    let mut conn = connect(path).await;
    let mut out = Vec::new();
    for table in tables {
        let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?1)")
            .bind(table)
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let quoted: Vec<String> = columns.iter().map(|c| format!("quote(\"{c}\")")).collect();
        let sql = format!("SELECT {} FROM {table} ORDER BY rowid", quoted.join(" || '|' || "));
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        out.extend(rows.into_iter().map(|r| format!("{table}: {r}")));
    }
    out
}

/// Writes rows the way the Python bot did, into a copy of its keeper.db.
async fn legacy_keeper_with_reports(env: &Env) {
    std::fs::copy(KEEPER_LEGACY, &env.keeper).unwrap();
    set_writable(&env.keeper);
    exec(
        &env.keeper,
        r#"INSERT INTO discoveries (user_id, username, guild_id, discovery_type, location, description,
               planet_name, submission_timestamp, metadata, tags, system_name)
           VALUES ('111', 'OldTimer', '999', '🦴', 'Getre Beta', 'Bones under the ice', 'Getre Beta',
               '2025-11-12 10:00:00', '{"location_type":"planet","location_name":"Getre Beta","species_type":"Raptor"}',
               '["ice"]', 'Ixiezh HV'),
                  ('222', 'Newcomer', '999', '💎', 'Erren', 'Copper vein', 'Erren',
               '2025-11-13 11:00:00', '{"resource_type":"Copper"}', NULL, 'Oculi'),
                  ('333', 'Quiet', NULL, '📖', 'Space', 'A story ✨ with ünïcödé', NULL,
               '2025-11-14 12:00:00', NULL, NULL, 'Tenex[VH]');"#,
    )
    .await;
}

#[tokio::test]
async fn adopting_a_legacy_keeper_db_leaves_its_rows_untouched() {
    let env = Env::new();
    legacy_keeper_with_reports(&env).await;
    let tables = [
        "discoveries",
        "patterns",
        "user_stats",
        "server_config",
        "archive_entries",
    ];
    let before = dump(&env.keeper, &tables).await;
    assert_eq!(before.iter().filter(|r| r.starts_with("discoveries")).count(), 3);

    // A command that may migrate (a read-only one refuses a file that needs it).
    env.ok(&["cleanup"]);
    let migrations = "SELECT COUNT(*) FROM keeper_sync_migrations";
    let applied = scalar_i64(&env.keeper, migrations).await;
    assert!(applied >= 5, "{applied} migrations applied");
    env.ok(&["cleanup"]); // migrations run once; the second open is a no-op
    env.ok(&["status"]);
    assert_eq!(dump(&env.keeper, &tables).await, before);
    assert_eq!(scalar_i64(&env.keeper, migrations).await, applied);
    assert_eq!(scalar_i64(&env.keeper, "SELECT COUNT(*) FROM sync_queue").await, 0);
}

/// keeper.db migration 19 rebuilds an adopted `sync_queue` with its states
/// and attempts NOT NULL: what the old bot's file had beyond keeper's own
/// (a column, an index, a trigger) is still there, every row is copied, and
/// the trigger-kept counts agree with the rows.
#[tokio::test]
async fn the_rebuilt_queue_keeps_the_old_files_columns_indexes_triggers_and_rows() {
    let env = Env::new();
    legacy_keeper_with_reports(&env).await;
    exec(&env.keeper, OLD_BOT_SYNC_QUEUE).await;
    exec(
        &env.keeper,
        "ALTER TABLE sync_queue ADD COLUMN \"operator's note\" TEXT;
         CREATE INDEX idx_sync_queue_note ON sync_queue (\"operator's note\");
         CREATE TABLE queue_audit (queue_id INTEGER, status TEXT);
         CREATE TRIGGER sync_queue_audit AFTER UPDATE OF sync_status ON sync_queue
             BEGIN INSERT INTO queue_audit VALUES (NEW.id, NEW.sync_status); END;
         INSERT INTO sync_queue (discovery_id, sync_status, sync_attempts, sync_error, \"operator's note\") VALUES
            (1, NULL, NULL, NULL, 'keep me'), (2, 'synced', 1, NULL, NULL), (3, 'pending', 2, 'locked', NULL);",
    )
    .await;
    env.ok(&["cleanup"]); // a command that migrates

    let queue = "SELECT group_concat(id || ':' || discovery_id || ':' || sync_status || ':' || sync_attempts
                     || ':' || IFNULL(sync_error, '-') || ':' || IFNULL(\"operator's note\", '-'), ' ')
                 FROM (SELECT * FROM sync_queue ORDER BY id)";
    let mut conn = connect(&env.keeper).await;
    let rows: String = sqlx::query_scalar(queue).fetch_one(&mut conn).await.unwrap();
    assert_eq!(rows, "1:1:pending:0:-:keep me 2:2:synced:1:-:- 3:3:pending:2:locked:-");
    let kept: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master
         WHERE name IN ('idx_sync_queue_note', 'sync_queue_audit', 'idx_sync_queue_pending_fifo',
                        'keeper_sync_count_status', 'keeper_bot_notices_failure_retried')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(kept, 5, "the old file's index and trigger, and keeper's own");
    sqlx::query("UPDATE sync_queue SET sync_status = 'syncing' WHERE id = 1")
        .execute(&mut conn)
        .await
        .unwrap();
    let audited: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM queue_audit WHERE queue_id = 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(audited, 1, "the old file's trigger still fires");
    let counted: String = sqlx::query_scalar(
        "SELECT group_concat(label || '=' || value, ' ') FROM
             (SELECT label, value FROM keeper_sync_counters WHERE counter = 'depth' AND value <> 0 ORDER BY label)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(counted, "pending=1 synced=1 syncing=1");
    let refused = sqlx::query("UPDATE sync_queue SET sync_status = NULL WHERE id = 2")
        .execute(&mut conn)
        .await
        .expect_err("a NULL state is refused now");
    assert!(refused.to_string().contains("NOT NULL constraint failed"), "{refused}");
}

#[tokio::test]
async fn backfill_queues_legacy_reports_and_links_ones_already_in_vh() {
    let env = Env::new();
    legacy_keeper_with_reports(&env).await;
    // The old bot had already copied the first report into VH-Database.
    exec(
        &env.haven,
        "INSERT INTO discoveries (discovery_type, location_type, location_name, description, discord_user_id, submission_timestamp)
         VALUES ('🦴', 'planet', 'Getre Beta', 'Bones under the ice', '111', '2025-11-12 10:00:00')",
    )
    .await;
    let out = env.ok(&["backfill"]);
    assert_eq!(out.trim(), "queued 3 discovery(ies) that had no queue row");
    assert_eq!(
        env.ok(&["backfill"]).trim(),
        "queued 0 discovery(ies) that had no queue row"
    );
    env.ok(&["sync", "--once"]);
    assert_eq!(
        scalar_i64(
            &env.keeper,
            "SELECT COUNT(*) FROM sync_queue WHERE sync_status = 'synced'"
        )
        .await,
        3
    );
    // One linked, two inserted: three rows, not four.
    assert_eq!(scalar_i64(&env.haven, "SELECT COUNT(*) FROM discoveries").await, 3);
    assert_eq!(
        scalar_i64(&env.haven, "SELECT COUNT(*) FROM keeper_sync_ledger WHERE linked = 1").await,
        1
    );
    let story = rows(
        &env.haven,
        "SELECT description, location_type FROM discoveries WHERE discord_user_id = '333'",
    )
    .await;
    assert_eq!(story[0].get::<String, _>("description"), "A story ✨ with ünïcödé");
}

#[tokio::test]
async fn backfill_links_only_a_row_with_the_same_user_time_and_text() {
    let env = Env::new();
    legacy_keeper_with_reports(&env).await;
    // Near misses of the three legacy reports, each off by one condition:
    // the same text and time from another user; the same user and text at
    // another time; the same user and time with other text.
    exec(
        &env.haven,
        "INSERT INTO discoveries (discovery_type, location_type, location_name, description, discord_user_id, submission_timestamp)
         VALUES ('🦴', 'planet', 'Getre Beta', 'Bones under the ice', '999', '2025-11-12 10:00:00'),
                ('💎', 'planet', 'Erren', 'Copper vein', '222', '2025-11-13 11:00:01'),
                ('📖', 'space', 'Space', 'Another story', '333', '2025-11-14 12:00:00')",
    )
    .await;
    let decoys = scalar_i64(&env.haven, "SELECT COUNT(*) FROM discoveries").await;
    assert_eq!(
        env.ok(&["backfill"]).trim(),
        "queued 3 discovery(ies) that had no queue row"
    );
    assert!(env.ok(&["sync", "--once"]).contains("synced 3, failed 0"));

    // Nothing linked: three new rows beside the untouched near misses.
    assert_eq!(
        scalar_i64(&env.haven, "SELECT COUNT(*) FROM keeper_sync_ledger WHERE linked = 1").await,
        0
    );
    assert_eq!(
        scalar_i64(&env.haven, "SELECT COUNT(*) FROM discoveries").await,
        decoys + 3
    );
    let mut conn = connect(&env.keeper).await;
    let haven_ids: Vec<i64> = sqlx::query_scalar("SELECT haven_discovery_id FROM sync_queue ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(haven_ids.len(), 3);
    assert!(
        haven_ids.iter().all(|id| *id > decoys),
        "{haven_ids:?} points at a near miss"
    );
}

#[tokio::test]
async fn bulk_submit_with_malformed_lines_writes_nothing() {
    let env = Env::new();
    let mut input = jsonl(3);
    input.push_str("{not json\n");
    input.push_str(r#"{"discovery_type":"💎","system_name":"Oculi","location":"planet:X","username":"u"}"#);
    input.push('\n');
    input.push_str(
        r#"{"discovery_type":"🦄","system_name":"Oculi","location":"planet:X","description":"d","username":"u"}"#,
    );
    input.push('\n');
    input.push_str(&format!(
        r#"{{"discovery_type":"🦴","system_name":"Oculi","location":"planet:X","description":"{}","username":"u"}}"#,
        "x".repeat(1001)
    ));
    input.push('\n');
    let mut bytes = input.into_bytes();
    bytes.extend_from_slice(b"\xff\xfe not utf-8\n");
    let out = env.run_with_stdin(&["submit", "--json", "-"], &bytes);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("5 report(s) rejected, nothing was written"), "{err}");
    assert!(err.contains("line 4: not JSON"), "{err}");
    assert!(err.contains("line 5: description"), "{err}");
    assert!(err.contains("line 6: discovery_type"), "{err}");
    assert!(err.contains("line 7: description"), "{err}");
    assert!(err.contains("line 8: not valid UTF-8"), "{err}");
    assert!(out.stdout.is_empty());
    assert_eq!(scalar_i64(&env.keeper, "SELECT COUNT(*) FROM discoveries").await, 0);
    assert_eq!(scalar_i64(&env.keeper, "SELECT COUNT(*) FROM sync_queue").await, 0);
}

#[tokio::test]
async fn bad_flags_are_rejected_naming_the_field() {
    let env = Env::new();
    for (args, expected) in [
        (vec!["--type", "🦴", "--field", "resource_type=Gold"], "resource_type"),
        (vec!["--type", "🦴", "--field", "nonsense=1"], "nonsense"),
        (vec!["--type", "🦴", "--field", "no-equals-sign"], "COLUMN=VALUE"),
        (vec!["--type", "🦴", "--location", "house:Home"], "location"),
        (vec!["--type", "🦴", "--user-id", "DROP TABLE discoveries;"], "user_id"),
        (
            vec!["--type", "🦴", "--description", "bell \u{7} in text"],
            "description",
        ),
    ] {
        let mut full = vec!["submit", "--system", "Oculi", "--user", "u"];
        if !args.contains(&"--location") {
            full.extend(["--location", "planet:Erren"]);
        }
        if !args.contains(&"--description") {
            full.extend(["--description", "Something"]);
        }
        full.extend(args.iter().copied());
        let out = env.run(&full);
        assert!(!out.status.success(), "{full:?} was accepted");
        assert!(stderr(&out).contains(expected), "{full:?}: {}", stderr(&out));
    }
    assert_eq!(scalar_i64(&env.keeper, "SELECT COUNT(*) FROM discoveries").await, 0);
}

#[tokio::test]
async fn bulk_submit_of_100k_lines_works() {
    const N: usize = 100_000;
    let env = Env::new();
    let out = env.run_with_stdin(&["submit", "--json", "-"], jsonl(N).as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    let ids: Vec<i64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(ids.len(), N);
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "ids in input order");
    assert_eq!(
        scalar_i64(
            &env.keeper,
            "SELECT COUNT(*) FROM sync_queue WHERE sync_status = 'pending'"
        )
        .await,
        N as i64
    );
    let mut conn = connect(&env.keeper).await;
    let last: String = sqlx::query_scalar("SELECT description FROM discoveries WHERE id = ?1")
        .bind(ids[N - 1])
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(last, format!("Deposit number {}", N - 1));
}

#[tokio::test]
async fn default_vh_database_is_created_when_none_is_configured() {
    let env = Env::new();
    let id = env.submit("🦴", "Oculi", "planet:Erren", "Fossil", &[]);
    let mut sync = env.command(&["sync", "--once"]);
    sync.env_remove("HAVEN_DB_PATH");
    let out = output_within(sync, COMMAND_TIMEOUT, "keeper sync --once");
    assert!(out.status.success(), "{}", stderr(&out));
    let created = env.dir.path().join("data/VH-Database.db");
    assert!(created.is_file());
    assert_eq!(queue_state(&env.keeper, id).await.0, "synced");
    assert_eq!(scalar_i64(&created, "SELECT COUNT(*) FROM discoveries").await, 1);
    assert_eq!(
        scalar_i64(&created, "SELECT COUNT(*) FROM pragma_table_info('discoveries')").await,
        64
    );
}

#[tokio::test]
async fn keeper_db_that_is_not_a_database_is_refused_clearly() {
    let env = Env::new();
    std::fs::write(
        &env.keeper,
        b"this is not sqlite, just text that is long enough to look like a header",
    )
    .unwrap();
    let before = std::fs::read(&env.keeper).unwrap();
    let out = env.run(&["status"]);
    assert!(!out.status.success());
    let expected = format!(
        "{} is not a keeper.db, so keeper left it untouched: the file is not a SQLite database",
        env.keeper.display()
    );
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
    // Refused, not "repaired": the file is as it was.
    assert_eq!(std::fs::read(&env.keeper).unwrap(), before);
}

#[tokio::test]
async fn run_logs_start_up_syncs_and_stops_cleanly_on_sigterm() {
    let mut env = Env::new();
    env.var("SYNC_INTERVAL", 1);
    let id = env.submit("🦗", "Oculi", "planet:Erren", "Glowing moth", &[]);
    let child = env
        .command(&["run"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let synced = format!("SELECT COUNT(*) FROM sync_queue WHERE discovery_id = {id} AND sync_status = 'synced'");
    wait_for_value(&env.keeper, &synced, 1, Duration::from_secs(60)).await;
    let out = stop_with_output(child);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(log.contains("🔄 Sync worker started (1s intervals)"), "{log}");
    assert!(log.contains("🌐 Sync API available on port "), "{log}");
    assert!(log.contains("DISCORD_TOKEN is not set"), "{log}");
    assert_eq!(
        scalar_i64(
            &env.keeper,
            "SELECT COUNT(*) FROM sync_queue WHERE sync_status = 'syncing'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn sigterm_mid_drain_stops_after_the_batch_in_hand() {
    const N: i64 = 200;
    const BATCH: i64 = 20;
    let mut env = Env::new();
    env.var("SYNC_BATCH_SIZE", BATCH)
        .var("SYNC_BATCH_MAX", BATCH)
        .var("HAVEN_BUSY_TIMEOUT_MS", 300_000);
    let file = env.dir.path().join("bulk.jsonl");
    std::fs::write(&file, jsonl(N as usize)).unwrap();
    env.ok(&["submit", "--json", file.to_str().unwrap()]);

    // The first batch is in hand (claimed, waiting to be written) and the
    // second mapped behind it (claimed too; the worker maps one batch ahead,
    // and no more while the first waits) when the signal comes; the lock is
    // released only once the worker has logged it.
    let holder = hold_vh_lock(&env).await;
    let mut cmd = env.command(&["sync"]);
    cmd.env("KEEPER_LOG", "info");
    let (mut child, log) = spawn_logged(cmd);
    wait_for_value(&env.keeper, SYNCING, 2 * BATCH, Duration::from_secs(120)).await;
    sigterm(&child);
    wait_for_log(&log, "shutting down: finishing the batch in hand", EXIT_TIMEOUT);
    release_vh_lock(holder).await;
    let status = wait_exit(&mut child, EXIT_TIMEOUT, "keeper sync to exit after SIGTERM");
    assert!(status.success(), "{status}\n{}", log.lock().unwrap());

    // Exactly the batch in hand was finished; the one mapped ahead was given
    // back untouched and waits with the rest, none held.
    assert_eq!(query_i64(&env.keeper, SYNCING).await, 0, "nothing is left syncing");
    assert_eq!(query_i64(&env.keeper, SYNCED).await, BATCH);
    assert_eq!(query_i64(&env.keeper, PENDING).await, N - BATCH);
    assert_eq!(scalar_i64(&env.haven, "SELECT COUNT(*) FROM discoveries").await, BATCH);
}

/// The bound every shutdown test relies on: a process that ignores SIGTERM
/// fails the test that stops it, within EXIT_TIMEOUT, and is killed; the
/// test does not hang. (A shell stands in for a broken keeper.)
#[test]
#[should_panic(expected = "timed out after 30s waiting for keeper to exit after SIGTERM; the process was killed")]
fn a_process_that_ignores_sigterm_fails_the_test_instead_of_hanging_it() {
    use std::io::BufRead;
    let mut child = std::process::Command::new("sh")
        .args(["-c", "trap '' TERM; echo trapped; while :; do sleep 1; done"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start sh");
    // Signalled only once the trap is set (a SIGTERM before it would kill sh).
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read sh");
    assert_eq!(line, "trapped\n");
    stop(&mut child);
}

#[tokio::test]
async fn every_item_of_a_batch_points_at_its_own_vh_row() {
    let mut env = Env::new();
    env.var("SYNC_BATCH_SIZE", 100).var("SYNC_BATCH_MAX", 100);
    let kinds = [
        ("🦴", "species_type"),
        ("💎", "resource_type"),
        ("🚀", "ship_class"),
        ("📖", "story_type"),
    ];
    let mut input = String::new();
    for i in 0..40 {
        let (kind, field) = kinds[i % kinds.len()];
        let mut record = serde_json::json!({
            "discovery_type": kind, "system_name": "Ixiezh HV", "location": "moon:Getre Beta",
            "description": format!("Report number {i}"), "username": format!("user{i}"),
        });
        if i % 3 != 0 {
            record[field] = serde_json::json!(format!("value {i}"));
        }
        input.push_str(&record.to_string());
        input.push('\n');
    }
    let out = env.run_with_stdin(&["submit", "--json", "-"], input.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    let synced = env.ok(&["sync", "--once"]);
    assert!(synced.contains("synced 40, failed 0"), "{synced}");

    let mut conn = connect(&env.keeper).await;
    sqlx::query("ATTACH DATABASE ?1 AS vh")
        .bind(env.haven.to_str().unwrap())
        .execute(&mut conn)
        .await
        .unwrap();
    let mismatched: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sync_queue q JOIN discoveries d ON d.id = q.discovery_id
         LEFT JOIN vh.discoveries v ON v.id = q.haven_discovery_id
         WHERE v.id IS NULL OR v.description IS NOT d.description OR v.discovered_by IS NOT d.username
            OR v.discovery_type IS NOT d.discovery_type",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(mismatched, 0, "items whose VH row is another report's");
    let distinct: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT haven_discovery_id) FROM sync_queue")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(distinct, 40);
}

/// `keeper submit --json -` on a line that never ends: it stops reading at
/// the record limit with a clear error and writes nothing. What bounds it
/// is the bytes it took (the limit, a pipe buffer and its read buffer), not
/// how long it ran.
#[tokio::test]
async fn endless_stdin_is_refused_at_the_record_limit_and_nothing_is_written() {
    use std::io::Write;
    use std::process::Stdio;
    /// Far beyond what keeper may take: reaching it means it kept reading.
    const GIVE_UP: usize = 64 << 20;
    let env = Env::new();
    let mut child = env
        .command(&["submit", "--json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keeper submit");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let mut written = 0usize;
        let head =
            r#"{"discovery_type":"🦴","system_name":"Oculi","location":"planet:Erren","description":""#.as_bytes();
        if stdin.write_all(head).is_err() {
            return written;
        }
        written += head.len();
        let chunk = vec![b'x'; 64 << 10];
        while written < GIVE_UP {
            match stdin.write(&chunk) {
                Ok(n) => written += n,
                // keeper closed its end: it stopped reading.
                Err(_) => break,
            }
        }
        written
    });
    let out = collect_within(
        child,
        COMMAND_TIMEOUT,
        "keeper submit --json to refuse the oversized record",
    );
    let written = writer.join().expect("writer thread");
    assert!(
        written < GIVE_UP,
        "keeper read {written} bytes of one endless line without stopping"
    );
    assert!(written < 4 << 20, "keeper read {written} bytes; the limit is 1 MiB");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("the report at line 1 is larger than 1048576 bytes"),
        "{err}"
    );
    assert!(err.contains("nothing was written"), "{err}");
    assert!(out.stdout.is_empty());
    assert_eq!(scalar_i64(&env.keeper, "SELECT COUNT(*) FROM discoveries").await, 0);
}

#[tokio::test]
async fn submit_json_takes_a_bom_and_pretty_objects_and_refuses_oversized_records() {
    let env = Env::new();
    let record = |description: &str| {
        serde_json::to_string_pretty(&serde_json::json!({
            "discovery_type": "💎", "system_name": "Oculi", "location": "planet:New Oculs",
            "description": description, "username": "Miner", "resource_type": "Gold",
        }))
        .unwrap()
    };
    // Two pretty-printed objects after a UTF-8 byte order mark.
    let file = env.dir.path().join("reports.json");
    let text = format!("\u{feff}{}\n{}\n", record("First"), record("Second"));
    std::fs::write(&file, text).unwrap();
    let out = env.ok(&["submit", "--json", file.to_str().unwrap()]);
    assert_eq!(out.lines().count(), 2, "{out}");

    // An array with a BOM too; a bad element is named by its place.
    std::fs::write(
        &file,
        format!("\u{feff}[{}, {{\"discovery_type\": \"🦄\"}}]", record("Third")),
    )
    .unwrap();
    let bad = env.run(&["submit", "--json", file.to_str().unwrap()]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("record 2: "), "{}", stderr(&bad));

    // One record over 1 MiB among good ones: refused, nothing written.
    let huge = record(&"x".repeat(1 << 20));
    std::fs::write(&file, format!("{}{huge}\n", jsonl(2))).unwrap();
    let refused = env.run(&["submit", "--json", file.to_str().unwrap()]);
    assert!(!refused.status.success());
    let err = stderr(&refused);
    assert!(
        err.contains("the report at line 3 is larger than 1048576 bytes"),
        "{err}"
    );
    assert_eq!(scalar_i64(&env.keeper, "SELECT COUNT(*) FROM discoveries").await, 2);
}
