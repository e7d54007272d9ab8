//! No silent loss, no silent stall: what an operator does to the files
//! (restores a backup of keeper.db, upgrades over an old ledger, damages a
//! page) and what the host must still get right. Real binaries, real files.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use common::*;
use sqlx::Row;

/// `n` valid reports as JSON lines, each with its own description
/// (`{round} report {i}`), so every report is distinct.
fn reports(round: &str, n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(
            &serde_json::json!({
                "discovery_type": "💎", "system_name": "Oculi", "location": "planet:New Oculs",
                "description": format!("{round} report {i}"), "username": "Miner", "user_id": "42",
                "resource_type": "Gold",
            })
            .to_string(),
        );
        s.push('\n');
    }
    s
}

fn submit_round(env: &Env, round: &str, n: usize) {
    let out = env.run_with_stdin(&["submit", "--json", "-"], reports(round, n).as_bytes());
    assert!(out.status.success(), "submit {round}: {}", stderr(&out));
}

/// A backup of a stopped keeper.db, beside it.
fn backup(keeper: &Path) -> PathBuf {
    let copy = keeper.with_extension("backup");
    copy_stopped_db(keeper, &copy);
    copy
}

/// Every description in VH-Database with how many rows carry it.
async fn vh_descriptions(haven: &Path) -> Vec<(String, i64)> {
    let mut conn = connect(haven).await;
    sqlx::query_as("SELECT description, COUNT(*) FROM discoveries GROUP BY description ORDER BY description")
        .fetch_all(&mut conn)
        .await
        .expect("VH descriptions")
}

/// Asserts VH-Database holds each of `rounds`' `n` reports exactly once and nothing else.
async fn assert_each_report_once(haven: &Path, rounds: &[&str], n: usize) {
    let found = vh_descriptions(haven).await;
    let mut expected: Vec<(String, i64)> = rounds
        .iter()
        .flat_map(|r| (0..n).map(move |i| (format!("{r} report {i}"), 1)))
        .collect();
    expected.sort();
    assert_eq!(found, expected, "VH-Database does not hold each report exactly once");
}

/// GET `path` from a `keeper run` on `port`; the body as text.
fn http_get(port: u16, path: &str, key: Option<&str>) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let request = agent.get(format!("http://127.0.0.1:{port}{path}"));
    let request = match key {
        Some(k) => request.header("X-API-Key", k),
        None => request,
    };
    let mut response = request.call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(response.status().as_u16(), 200, "GET {path}");
    response.body_mut().read_to_string().expect("body")
}

/// Asserts `/sync/statistics` and `/metrics` both count `n` reports as
/// "keeper.db restored or replaced".
fn assert_replaced_counted(port: u16, key: Option<&str>, n: i64) {
    let stats: serde_json::Value =
        serde_json::from_str(&http_get(port, "/sync/statistics", key)).expect("statistics JSON");
    assert_eq!(stats["keeper_db_restored_or_replaced"], n, "{stats}");
    let metrics = http_get(port, "/metrics", key);
    assert!(
        metrics.contains(&format!("\nkeeper_sync_keeper_db_replaced_total {n}\n")),
        "{metrics}"
    );
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        terminate(&mut self.0);
    }
}

#[tokio::test]
async fn a_restored_keeper_db_never_hides_new_reports() {
    let env = Env::new();
    submit_round(&env, "first", 10);
    assert!(env.ok(&["sync", "--once"]).contains("synced 10, failed 0"));
    let copy = backup(&env.keeper);
    submit_round(&env, "second", 10);
    assert!(env.ok(&["sync", "--once"]).contains("synced 10, failed 0"));
    copy_stopped_db(&copy, &env.keeper);
    // The restored file hands out ids 11..20 again, to other reports.
    submit_round(&env, "third", 10);
    let out = env.run(&["sync", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("synced 10, failed 0"));
    assert!(
        stderr(&out).contains("keeper.db restored or replaced"),
        "no warning logged: {}",
        stderr(&out)
    );

    assert_each_report_once(&env.haven, &["first", "second", "third"], 10).await;
    // The third round was written, not taken for the second.
    let third = rows(
        &env.keeper,
        "SELECT metadata FROM sync_queue WHERE discovery_id > 10 ORDER BY discovery_id",
    )
    .await;
    assert_eq!(third.len(), 10);
    for row in &third {
        let metadata: serde_json::Value = serde_json::from_str(&row.get::<String, _>("metadata")).unwrap();
        assert!(metadata.get("already_in_vh").is_none(), "{metadata}");
        assert!(
            metadata["keeper_db_replaced"]["other_report_haven_id"].is_i64(),
            "{metadata}"
        );
    }
    // A second pass finds all 30 in the ledger and writes nothing.
    assert!(env.ok(&["sync", "--once"]).contains("synced 0, failed 0"));
    assert_eq!(scalar_i64(&env.haven, "SELECT COUNT(*) FROM discoveries").await, 30);

    let (child, port, _log) = spawn_run(&env);
    let _run = Running(child);
    assert_replaced_counted(port, None, 10);
}

/// The version-1 ledger (keyed by source id and discovery id only), as the
/// first releases created it.
const LEDGER_V1: &str = "DROP TABLE keeper_sync_ledger; DROP TABLE keeper_sync_ledger_version;
    CREATE TABLE keeper_sync_ledger (
        source_id TEXT NOT NULL,
        keeper_discovery_id INTEGER NOT NULL,
        haven_discovery_id INTEGER NOT NULL,
        plugin_name TEXT,
        plugin_version TEXT,
        plugin_hash TEXT,
        linked INTEGER NOT NULL DEFAULT 0,
        written_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
        PRIMARY KEY (source_id, keeper_discovery_id))";

#[tokio::test]
async fn an_old_ledger_is_upgraded_in_place_and_still_tells_reports_apart() {
    let env = Env::new();
    submit_round(&env, "old", 2);
    env.ok(&["sync", "--once"]);
    // Back to the ledger an earlier keeper wrote: same rows, no fingerprints.
    let source_id: String = rows(
        &env.keeper,
        "SELECT value FROM keeper_sync_meta WHERE key = 'source_id'",
    )
    .await[0]
        .get("value");
    let ledger: Vec<(i64, i64)> = {
        let mut conn = connect(&env.haven).await;
        let ledger = sqlx::query_as("SELECT keeper_discovery_id, haven_discovery_id FROM keeper_sync_ledger")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        sqlx::raw_sql(LEDGER_V1).execute(&mut conn).await.unwrap();
        for (keeper_id, haven_id) in &ledger {
            sqlx::query(
                "INSERT INTO keeper_sync_ledger (source_id, keeper_discovery_id, haven_discovery_id) VALUES (?1, ?2, ?3)",
            )
            .bind(&source_id)
            .bind(keeper_id)
            .bind(haven_id)
            .execute(&mut conn)
            .await
            .unwrap();
        }
        ledger
    };
    assert_eq!(ledger.len(), 2);
    // Discovery 1 was written but its queue row not updated (a crash);
    // discovery 2's id now belongs to another report (a restored keeper.db).
    exec(
        &env.keeper,
        "UPDATE sync_queue SET sync_status = 'pending', haven_discovery_id = NULL, synced_at = NULL;
         UPDATE discoveries SET description = 'another report' WHERE id = 2",
    )
    .await;

    let out = env.ok(&["sync", "--once"]);
    assert!(out.contains("synced 2, failed 0"), "{out}");
    assert_eq!(
        scalar_i64(&env.haven, "SELECT MAX(version) FROM keeper_sync_ledger_version").await,
        2
    );
    // The old rows were carried over, and discovery 1 was recognised.
    assert_eq!(
        scalar_i64(
            &env.haven,
            "SELECT COUNT(*) FROM keeper_sync_ledger WHERE report_fingerprint IS NULL"
        )
        .await,
        2
    );
    let found = vh_descriptions(&env.haven).await;
    assert_eq!(
        found,
        [
            ("another report".to_owned(), 1),
            ("old report 0".to_owned(), 1),
            ("old report 1".to_owned(), 1)
        ]
    );
    let first: String =
        rows(&env.keeper, "SELECT metadata FROM sync_queue WHERE discovery_id = 1").await[0].get("metadata");
    assert!(first.contains("already_in_vh"), "{first}");
    assert_eq!(
        scalar_i64(
            &env.keeper,
            "SELECT value FROM keeper_sync_counters WHERE counter = 'keeper_db_replaced_total'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_ledger_from_a_newer_keeper_is_refused_and_nothing_is_written() {
    let env = Env::new();
    submit_round(&env, "first", 1);
    env.ok(&["sync", "--once"]);
    exec(&env.haven, "UPDATE keeper_sync_ledger_version SET version = 3").await;
    submit_round(&env, "second", 1);
    env.ok(&["sync", "--once"]);
    let (status, _, error) = queue_state(&env.keeper, 2).await;
    assert_eq!(status, "pending");
    let error = error.unwrap_or_default();
    assert!(error.contains("keeper_sync_ledger table is at version 3"), "{error}");
    assert_eq!(scalar_i64(&env.haven, "SELECT COUNT(*) FROM discoveries").await, 1);
}

/// Two legacy reports that look alike (same reporter, same second, same
/// text) and one old VH row: backfill links one and inserts the other.
#[tokio::test]
async fn backfill_never_links_two_reports_to_one_old_row() {
    let env = Env::new();
    std::fs::copy(KEEPER_LEGACY, &env.keeper).unwrap();
    set_writable(&env.keeper);
    exec(
        &env.keeper,
        "INSERT INTO discoveries (user_id, username, discovery_type, location, description, submission_timestamp, system_name)
         VALUES ('111', 'OldTimer', '💎', 'Erren', 'Copper vein', '2025-11-12 10:00:00', 'Oculi'),
                ('111', 'OldTimer', '💎', 'Erren', 'Copper vein', '2025-11-12 10:00:00', 'Oculi')",
    )
    .await;
    exec(
        &env.haven,
        "INSERT INTO discoveries (discovery_type, location_type, location_name, description, discord_user_id, submission_timestamp)
         VALUES ('💎', 'planet', 'Erren', 'Copper vein', '111', '2025-11-12 10:00:00')",
    )
    .await;
    env.ok(&["backfill"]);
    assert!(env.ok(&["sync", "--once"]).contains("synced 2, failed 0"));
    assert_eq!(scalar_i64(&env.haven, "SELECT COUNT(*) FROM discoveries").await, 2);
    assert_eq!(
        scalar_i64(
            &env.haven,
            "SELECT COUNT(DISTINCT haven_discovery_id) FROM keeper_sync_ledger"
        )
        .await,
        2
    );
    assert_eq!(
        scalar_i64(&env.haven, "SELECT COUNT(*) FROM keeper_sync_ledger WHERE linked = 1").await,
        1
    );
    assert_eq!(
        scalar_i64(&env.keeper, "SELECT COUNT(DISTINCT haven_discovery_id) FROM sync_queue").await,
        2
    );
}

/// `keeper pull --once` from `control_room` against a bot host on `port`.
fn pull_once(control_room: &Env, port: u16, key: &str) -> String {
    let url = format!("http://127.0.0.1:{port}");
    let cmd = control_room.command(&["pull", "--from", &url, "--once", "--api-key", key]);
    let out = output_within(cmd, COMMAND_TIMEOUT, "keeper pull --once");
    assert!(out.status.success(), "keeper pull failed: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The same repro in remote mode: the bot host's keeper.db is restored
/// between two pulls; the puller's ledger must tell the reports apart.
#[tokio::test]
async fn a_restored_bot_host_keeper_db_never_hides_new_reports_from_pull() {
    const KEY: &str = "restore-test-key";
    let mut bot = Env::new();
    bot.var("USE_HAVEN_DATABASE", "false").var("SYNC_API_KEY", KEY);
    let control_room = Env::new();
    let start = |bot: &Env| {
        let (child, port, _log) = spawn_run(bot);
        (Running(child), port)
    };

    let (run, port) = start(&bot);
    submit_round(&bot, "first", 10);
    assert!(pull_once(&control_room, port, KEY).contains("pulled 10, failed 0"));
    drop(run);
    let copy = backup(&bot.keeper);

    let (run, port) = start(&bot);
    submit_round(&bot, "second", 10);
    assert!(pull_once(&control_room, port, KEY).contains("pulled 10, failed 0"));
    drop(run);
    copy_stopped_db(&copy, &bot.keeper);

    let (_run, port) = start(&bot);
    submit_round(&bot, "third", 10);
    assert!(pull_once(&control_room, port, KEY).contains("pulled 10, failed 0"));
    assert!(pull_once(&control_room, port, KEY).contains("pulled 0, failed 0"));

    assert_each_report_once(&control_room.haven, &["first", "second", "third"], 10).await;
    assert_eq!(
        scalar_i64(
            &bot.keeper,
            "SELECT COUNT(*) FROM sync_queue WHERE sync_status = 'synced'"
        )
        .await,
        20
    );
    assert_replaced_counted(port, Some(KEY), 10);
}

/// Reads a SQLite varint at `at`; returns (value, bytes used).
fn varint(bytes: &[u8], at: usize) -> (u64, usize) {
    let mut value = 0u64;
    for i in 0..9 {
        let b = bytes[at + i];
        if i == 8 {
            return ((value << 8) | u64::from(b), 9);
        }
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    unreachable!()
}

/// Damages one leaf page of keeper.db's `discoveries` table (found with the
/// `dbstat` table) and returns the discovery ids stored on it, read from its
/// cells before the damage.
async fn damage_a_discoveries_leaf(keeper: &Path) -> Vec<i64> {
    let (page, page_size): (i64, i64) = {
        let mut conn = connect(keeper).await;
        // Everything in the main file, so the damage is not masked by the WAL.
        sqlx::raw_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await
            .unwrap();
        let leaves: Vec<i64> = sqlx::query_scalar(
            "SELECT pageno FROM dbstat WHERE name = 'discoveries' AND pagetype = 'leaf' ORDER BY pageno",
        )
        .fetch_all(&mut conn)
        .await
        .expect("dbstat (SQLite built with SQLITE_ENABLE_DBSTAT_VTAB)");
        assert!(
            leaves.len() >= 3,
            "too few leaf pages to damage one in the middle: {leaves:?}"
        );
        let size = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        (leaves[leaves.len() / 2], size)
    };
    let mut file = std::fs::read(keeper).unwrap();
    let start = usize::try_from((page - 1) * page_size).unwrap();
    let leaf = &file[start..start + usize::try_from(page_size).unwrap()];
    assert_eq!(leaf[0], 0x0d, "page {page} is not a table leaf");
    let cells = usize::from(u16::from_be_bytes([leaf[3], leaf[4]]));
    let ids: Vec<i64> = (0..cells)
        .map(|c| {
            let pointer = usize::from(u16::from_be_bytes([leaf[8 + 2 * c], leaf[9 + 2 * c]]));
            let (_, used) = varint(leaf, pointer);
            i64::try_from(varint(leaf, pointer + used).0).unwrap()
        })
        .collect();
    // An impossible page type: SQLite answers SQLITE_CORRUPT for any read of it.
    file[start] = 0x00;
    file[start + 1..start + 8].fill(0xff);
    std::fs::write(keeper, file).unwrap();
    ids
}

/// The queue as (discovery id, status, attempts, error class, error).
async fn queue_rows(keeper: &Path) -> Vec<(i64, String, i64, Option<String>, Option<String>)> {
    let mut conn = connect(keeper).await;
    sqlx::query_as(
        "SELECT discovery_id, sync_status, sync_attempts, error_class, sync_error FROM sync_queue ORDER BY discovery_id",
    )
    .fetch_all(&mut conn)
    .await
    .expect("queue rows")
}

#[tokio::test]
async fn a_damaged_page_fails_its_rows_alone_and_the_rest_syncs() {
    const N: usize = 400;
    let mut env = Env::new();
    env.var("SYNC_BATCH_SIZE", 50).var("SYNC_BATCH_MAX", 50);
    let mut input = String::new();
    for i in 0..N {
        input.push_str(
            &serde_json::json!({
                "discovery_type": "💎", "system_name": "Oculi", "location": "planet:New Oculs",
                "description": format!("poison test report {i} {}", "a long description ".repeat(12)),
                "username": "Miner", "user_id": "42",
            })
            .to_string(),
        );
        input.push('\n');
    }
    let out = env.run_with_stdin(&["submit", "--json", "-"], input.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    let poisoned = damage_a_discoveries_leaf(&env.keeper).await;
    assert!(!poisoned.is_empty());
    let k = poisoned.len();

    let out = env.ok(&["sync", "--once"]);
    assert!(out.contains(&format!("synced {}, failed {k}", N - k)), "{out}");
    for (id, status, attempts, class, error) in queue_rows(&env.keeper).await {
        if poisoned.contains(&id) {
            // Failed as an item, on the normal schedule (attempts left).
            assert_eq!((status.as_str(), attempts), ("pending", 1), "discovery {id}");
            assert_eq!(class.as_deref(), Some("source"), "discovery {id}");
            let error = error.unwrap_or_default();
            assert!(
                error.contains("malformed") && error.contains(&env.keeper.display().to_string()),
                "{error}"
            );
        } else {
            assert_eq!(status, "synced", "discovery {id}");
        }
    }
    assert_eq!(
        scalar_i64(&env.haven, "SELECT COUNT(*) FROM discoveries").await,
        i64::try_from(N - k).unwrap()
    );
    assert_eq!(
        scalar_i64(&env.haven, "SELECT COUNT(DISTINCT description) FROM discoveries").await,
        i64::try_from(N - k).unwrap()
    );

    // Out of attempts: listed by `keeper failed`, counted in statistics and metrics.
    env.var("SYNC_MAX_ATTEMPTS", 2);
    let out = env.ok(&["sync", "--once"]);
    assert!(out.contains(&format!("synced 0, failed {k}")), "{out}");
    let failed: serde_json::Value = serde_json::from_str(&env.ok(&["failed", "--json", "--limit", "1000"])).unwrap();
    let listed: Vec<i64> = failed["failed_items"]
        .as_array()
        .expect("failed_items")
        .iter()
        .map(|i| i["discovery_id"].as_i64().unwrap())
        .collect();
    let mut expected = poisoned.clone();
    expected.sort_unstable();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort_unstable();
    assert_eq!(listed_sorted, expected, "{failed}");

    let (child, port, _log) = spawn_run(&env);
    let _run = Running(child);
    let stats: serde_json::Value = serde_json::from_str(&http_get(port, "/sync/statistics", None)).unwrap();
    let errors = stats["errors"].as_array().expect("errors");
    assert!(
        errors
            .iter()
            .any(|e| e["error_class"] == "source" && e["sync_status"] == "max_retries_exceeded" && e["count"] == k),
        "{stats}"
    );
    let metrics = http_get(port, "/metrics", None);
    assert!(
        metrics.contains(&format!("keeper_sync_failed_items{{error_class=\"source\"}} {k}\n")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "keeper_sync_failed_attempts_total{{error_class=\"source\"}} {}\n",
            2 * k
        )),
        "{metrics}"
    );
}

/// Makes `path` unwritable for this user: read-only permissions, or the
/// immutable attribute for root (whom permissions do not stop). Returns
/// what undoes it.
fn make_read_only(path: &Path) -> impl FnOnce() {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let path = path.to_owned();
    if root {
        let status = std::process::Command::new("chattr").arg("+i").arg(&path).status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "chattr +i {} (root needs the immutable attribute to make a file read-only)",
            path.display()
        );
    } else {
        let mut perms = std::fs::metadata(&path).expect("metadata").permissions();
        perms.set_readonly(true);
        std::fs::set_permissions(&path, perms).expect("chmod");
    }
    move || {
        if root {
            let _ = std::process::Command::new("chattr").arg("-i").arg(&path).status();
        } else {
            set_writable(&path);
        }
    }
}

#[tokio::test]
async fn a_read_only_vh_database_is_named_read_only_and_waits() {
    let mut env = Env::new();
    // Beside the build, not in the temp folder: a tmpfs /tmp has no
    // immutable attribute, the disk the target folder is on has.
    let beside_target = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir beside the target");
    let haven = beside_target.path().join("VH-Database.db");
    std::fs::copy(&env.haven, &haven).expect("copy VH-Database");
    env.haven = haven;
    submit_round(&env, "first", 1);
    let undo = make_read_only(&env.haven);
    let out = env.run(&["sync", "--once"]);
    undo();
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, attempts, error) = queue_state(&env.keeper, 1).await;
    assert_eq!((status.as_str(), attempts), ("pending", 1));
    let error = error.unwrap_or_default();
    assert!(
        error.starts_with(&format!("VH-Database {} is read-only", env.haven.display())),
        "{error}"
    );
    assert!(!error.contains("not accessible"), "{error}");
    let class: String = rows(&env.keeper, "SELECT error_class FROM sync_queue").await[0].get("error_class");
    assert_eq!(class, "read_only");

    assert!(env.ok(&["sync", "--once"]).contains("synced 1, failed 0"));
}

#[tokio::test]
async fn keeper_db_errors_after_start_up_name_the_file() {
    let env = Env::new();
    submit_round(&env, "first", 1);
    // keeper.db opens fine, then a table the command needs is gone.
    exec(&env.keeper, "DROP TABLE keeper_sync_counters").await;
    let out = env.run(&["status"]);
    assert!(!out.status.success());
    let error = stderr(&out);
    assert!(
        error.contains(&format!("keeper.db at {}", env.keeper.display())),
        "{error}"
    );
}
