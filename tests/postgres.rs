//! keeper's store on PostgreSQL (`KEEPER_DATABASE_URL`): the commands on
//! it, what it refuses, and several `keeper run` hosts on one queue. Each
//! test has a database of its own in the cluster `.ci/postgres` runs
//! (`tests/common/postgres.rs`); without one it fails saying how to start it.

use crate::common;

use std::time::{Duration, Instant};

use common::postgres::{fresh_database, psql};
use common::*;
use serde_json::{Value, json};

/// A work folder (VH-Database sample, no keeper.db) whose commands use the
/// PostgreSQL database at `url`.
fn on_postgres(url: &str) -> Env {
    let mut env = Env::new();
    env.var("KEEPER_DATABASE_URL", url);
    env
}

/// Tables in the database's public schema.
fn tables(url: &str) -> i64 {
    psql(
        url,
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .parse()
    .expect("a count")
}

fn count(url: &str, sql: &str) -> i64 {
    psql(url, sql).parse().unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[tokio::test]
async fn submit_sync_status_and_retry_run_on_postgres() {
    let url = fresh_database("commands");
    let env = on_postgres(&url);

    // A read-only command on a database with no keeper tables refuses and creates none.
    let out = env.run(&["status"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("has no keeper tables yet"), "{}", stderr(&out));
    assert_eq!(tables(&url), 0, "a read-only command created tables");

    let ids: Vec<i64> = (0..3)
        .map(|i| {
            env.submit(
                "fossil",
                "Oculi",
                "planet:Getre Beta",
                &format!("postgres report {i}"),
                &[],
            )
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let status: Value = serde_json::from_str(&env.ok(&["status", "--json"])).expect("status JSON");
    assert_eq!(
        status["queue"],
        json!({"pending": 3, "syncing": 0, "synced": 0, "failed": 0})
    );

    let out = env.ok(&["sync", "--once"]);
    assert!(out.contains("synced 3, failed 0"), "{out}");
    assert_eq!(
        scalar_i64(
            &env.haven,
            "SELECT COUNT(DISTINCT description) FROM discoveries WHERE description LIKE 'postgres report %'"
        )
        .await,
        3
    );
    assert_eq!(
        scalar_i64(
            &env.haven,
            "SELECT COUNT(*) FROM discoveries WHERE description LIKE 'postgres report %'"
        )
        .await,
        3
    );
    assert_eq!(
        count(&url, "SELECT COUNT(*) FROM sync_queue WHERE sync_status = 'synced'"),
        3
    );
    assert!(
        !env.keeper.exists(),
        "keeper.db was made although KEEPER_DATABASE_URL is set"
    );
    let status: Value = serde_json::from_str(&env.ok(&["status", "--json"])).expect("status JSON");
    assert_eq!(status["queue"]["synced"], 3, "{status}");

    // The ledger in VH-Database knows this store's source id: a second drain writes nothing.
    let out = env.ok(&["sync", "--once"]);
    assert!(out.contains("synced 0"), "{out}");
    let out = env.run(&["retry", "424242"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("queue item 424242 does not exist"),
        "{}",
        stderr(&out)
    );
    let plugins = env.ok(&["plugin", "list"]);
    assert!(
        !plugins.contains("none recorded yet"),
        "the worker's plugin is recorded in the registry on PostgreSQL:\n{plugins}"
    );
}

#[test]
fn bad_database_settings_are_refused_clearly_and_change_nothing() {
    let url = fresh_database("refusals");
    // Not a PostgreSQL URL: a configuration error naming the variable.
    let mut env = on_postgres("mysql://keeper@127.0.0.1/keeper");
    let out = env.run(&["submit", "--json", "-"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("KEEPER_DATABASE_URL"), "{}", stderr(&out));
    assert!(stderr(&out).contains("expected a PostgreSQL URL"), "{}", stderr(&out));
    assert!(!env.keeper.exists());

    // A server that is not there: the URL is named, its password is not.
    env.var("KEEPER_DATABASE_URL", "postgres://keeper:s3cret@127.0.0.1:1/keeper");
    refused_naming_the_server_without_its_password(&env.run(&["sync", "--once"]));

    env.var("KEEPER_DATABASE_URL", &url);
    assert_eq!(tables(&url), 0, "a refused command created tables");

    // A database of another program (a discoveries table keeper did not make) is left alone.
    psql(&url, "CREATE TABLE discoveries (id int, location_type text)");
    let env = on_postgres(&url);
    let out = env.run(&["sync", "--once"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is not a keeper store"), "{}", stderr(&out));
    assert_eq!(tables(&url), 1);
}

/// A command given `postgres://keeper:s3cret@127.0.0.1:1/keeper`, where no
/// server listens: it fails naming the URL, never its password.
fn refused_naming_the_server_without_its_password(out: &std::process::Output) {
    assert!(!out.status.success());
    let err = stderr(out);
    assert!(
        err.contains("cannot connect to the PostgreSQL store at postgres://keeper@127.0.0.1:1/keeper"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "the password leaked: {err}");
}

/// A `keeper run` host on the shared database, with an HTTP client for its API.
struct Host {
    child: std::process::Child,
    port: u16,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Host {
    /// `keeper run` on `env`, naming its claims `name` (`KEEPER_HOST_NAME`).
    fn start(env: &Env, name: &str) -> Host {
        let mut cmd = env.command(&["run"]);
        cmd.env("KEEPER_HOST_NAME", name);
        let (child, port, log) = spawn_api(cmd);
        Host { child, port, log }
    }

    fn post(&self, description: &str) {
        let agent = http_agent(Duration::from_secs(30));
        let body = json!({
            "discovery_type": "fossil",
            "system_name": "Oculi",
            "location": "planet:Getre Beta",
            "description": description,
            "username": "Explorer#1234",
        });
        let response = agent
            .post(format!("http://127.0.0.1:{}/discoveries", self.port))
            .header("content-type", "application/json")
            .send(body.to_string())
            .unwrap_or_else(|e| panic!("POST /discoveries: {e}\n{}", self.log()));
        assert_eq!(response.status().as_u16(), 201, "{}", self.log());
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

/// Two hosts that write VH-Database and one that does not
/// (`USE_HAVEN_DATABASE=false`), on one database: reports posted to all
/// three are each written to VH-Database once, and the third never claims.
#[tokio::test]
async fn several_hosts_share_one_queue_and_deliver_each_report_once() {
    const PER_HOST: usize = 30;
    let url = fresh_database("hosts");
    let mut writer = on_postgres(&url);
    writer
        .var("SYNC_INTERVAL", 1)
        .var("SYNC_BATCH_SIZE", 5)
        .var("SYNC_BATCH_MAX", 5);
    // Create the schema once before the hosts start together (they would
    // also take turns on the migration lock; this keeps the logs simple).
    writer.ok(&["sync", "--once"]);
    let mut a = Host::start(&writer, "host-a");
    let mut b = Host::start(&writer, "host-b");
    let mut remote = on_postgres(&url);
    remote.var("USE_HAVEN_DATABASE", "false");
    let mut c = Host::start(&remote, "host-c");

    for i in 0..PER_HOST {
        for (name, host) in [("a", &a), ("b", &b), ("c", &c)] {
            host.post(&format!("multi-host report {name}{i}"));
        }
    }
    let want = (3 * PER_HOST) as i64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&url, "SELECT COUNT(*) FROM sync_queue WHERE sync_status = 'synced'") < want {
        assert!(
            Instant::now() < deadline,
            "not all {want} reports synced within 120 s\nA: {}\nB: {}",
            a.log(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for host in [&mut a, &mut b, &mut c] {
        let status = stop(&mut host.child);
        assert!(status.success(), "a host did not stop cleanly: {status}");
    }

    assert_eq!(
        scalar_i64(
            &writer.haven,
            "SELECT COUNT(*) FROM discoveries WHERE description LIKE 'multi-host report %'"
        )
        .await,
        want,
        "every report once in VH-Database"
    );
    assert_eq!(
        scalar_i64(
            &writer.haven,
            "SELECT COUNT(DISTINCT description) FROM discoveries WHERE description LIKE 'multi-host report %'"
        )
        .await,
        want
    );
    assert_eq!(
        count(&url, "SELECT COUNT(*) FROM sync_queue WHERE sync_attempts <> 1"),
        0
    );
    // Each item records the host that delivered it: A or B, never C.
    for host in ["host-a", "host-b"] {
        assert!(
            count(
                &url,
                &format!("SELECT COUNT(*) FROM sync_queue WHERE claimed_by = '{host}'")
            ) > 0,
            "{host} delivered nothing"
        );
    }
    assert_eq!(
        count(
            &url,
            "SELECT COUNT(*) FROM sync_queue WHERE claimed_by IS DISTINCT FROM 'host-a' \
             AND claimed_by IS DISTINCT FROM 'host-b'"
        ),
        0,
        "an item claimed by the host with USE_HAVEN_DATABASE=false, or by none"
    );
    assert!(
        a.log().contains("sync batch done"),
        "host A synced nothing:\n{}",
        a.log()
    );
    assert!(
        b.log().contains("sync batch done"),
        "host B synced nothing:\n{}",
        b.log()
    );
    let c_log = c.log();
    assert!(
        c_log.contains("remote mode, this process does not write VH-Database"),
        "{c_log}"
    );
    assert!(
        !c_log.contains("sync batch done"),
        "the host with USE_HAVEN_DATABASE=false claimed:\n{c_log}"
    );
}

/// keeper.db's bytes, and its `-wal` file's (committed pages not yet copied
/// into the file, part of the database): what `keeper migrate-store` must
/// leave exactly as they were. A missing `-wal` counts as an empty one:
/// SQLite's read-only connection may create the empty file, which holds
/// nothing. (The `-shm` index is shared memory, rewritten by any reader.)
fn keeper_db_bytes(env: &Env) -> (Vec<u8>, Vec<u8>) {
    let wal = env.keeper.with_extension("db-wal");
    (
        std::fs::read(&env.keeper).expect("read keeper.db"),
        std::fs::read(wal).unwrap_or_default(),
    )
}

/// `keeper migrate-store`'s line for `table`: (in keeper.db, in PostgreSQL, copied now).
fn copied(out: &str, table: &str) -> (i64, i64, i64) {
    let line = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(table))
        .unwrap_or_else(|| panic!("no line for {table} in:\n{out}"));
    let n: Vec<i64> = line
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().expect("a count"))
        .collect();
    (n[0], n[1], n[2])
}

/// The move of an existing keeper.db: everything copied with its ids and
/// states, keeper.db unchanged, a second run copies nothing, and a `keeper
/// run` on PostgreSQL afterwards delivers the pending reports once and none
/// of the delivered ones again, not even one written to VH-Database just
/// before the move and never marked synced (a crash between the two).
#[tokio::test]
async fn migrate_store_moves_keeper_db_and_nothing_is_delivered_twice() {
    let url = fresh_database("migrate");
    let mut env = Env::new();
    for i in 0..5 {
        env.submit(
            "fossil",
            "Oculi",
            "planet:Getre Beta",
            &format!("moved report {i}"),
            &[],
        );
    }
    let out = env.ok(&["sync", "--once"]);
    assert!(out.contains("synced 5, failed 0"), "{out}");
    for i in 5..8 {
        env.submit(
            "fossil",
            "Oculi",
            "planet:Getre Beta",
            &format!("moved report {i}"),
            &[],
        );
    }
    // Report 5 (discovery 5) written to VH-Database, the worker killed
    // before it marked it synced: its lease ran out, it is pending again.
    // An intake key and an evidence image, as the API and the bot keep them.
    // On one connection, closed (and so checkpointed) before keeper.db's
    // bytes are taken.
    let keeper_source: String = {
        use sqlx::Connection as _;
        let mut conn = connect(&env.keeper).await;
        sqlx::raw_sql(
            "UPDATE sync_queue SET sync_status = 'pending', synced_at = NULL, haven_discovery_id = NULL
             WHERE discovery_id = 5;
             INSERT INTO keeper_intake_keys (key, request_hash, discovery_id, queue_id) VALUES ('http:k1', 'h1', 1, 1);
             INSERT INTO keeper_evidence (id, content_type, bytes) VALUES ('e1', 'image/png', X'89504E470D0A1A0A');
             INSERT INTO keeper_bot_forms (nonce, user_id, options, expires_at) VALUES (77, '42', '{}', 4102444800);
             INSERT INTO keeper_bot_notices (discovery_id, token, channel_id, user_id, confirmation, placed, created_at)
                 VALUES (6, 'tok', '77', '42', 'archived #6', 1, 1700000000);
             INSERT INTO keeper_plugin_canaries (name, version, hash, file_name, percent, items, active_hash, state,
                     reason, canary_items, canary_failed, active_items, active_failed, started_at, ended_at, started_by)
                 VALUES ('shouting', '1.0.0', 'c1', 'shouting', 10, NULL, 'a1', 'rolled_back', 'failed 4 of 4',
                     4, 4, 36, 0, '2026-12-01 10:00:00', '2026-12-01 10:05:00', 'bot-host');",
        )
        .execute(&mut conn)
        .await
        .expect("keeper.db prepared");
        let source = sqlx::query_scalar("SELECT value FROM keeper_sync_meta WHERE key = 'source_id'")
            .fetch_one(&mut conn)
            .await
            .expect("source id");
        conn.close().await.expect("close keeper.db");
        source
    };
    let haven_id_of_5 = scalar_i64(
        &env.haven,
        "SELECT id FROM discoveries WHERE description = 'moved report 4'",
    )
    .await;
    let before = keeper_db_bytes(&env);

    let out = env.ok(&["migrate-store", "--to", &url]);
    assert_eq!(copied(&out, "discoveries"), (8, 8, 8), "{out}");
    assert_eq!(copied(&out, "sync_queue"), (8, 8, 8), "{out}");
    let (plugins, plugins_there, _) = copied(&out, "keeper_plugins");
    assert!(plugins >= 1 && plugins == plugins_there, "{out}");
    assert_eq!(copied(&out, "keeper_intake_keys"), (1, 1, 1), "{out}");
    assert_eq!(copied(&out, "keeper_evidence"), (1, 1, 1), "{out}");
    assert_eq!(copied(&out, "keeper_bot_forms"), (1, 1, 1), "{out}");
    assert_eq!(copied(&out, "keeper_bot_notices"), (1, 1, 1), "{out}");
    assert_eq!(copied(&out, "keeper_plugin_canaries"), (1, 1, 1), "{out}");
    assert!(out.contains("every row verified"), "{out}");
    assert!(before == keeper_db_bytes(&env), "keeper.db changed");
    assert_eq!(
        psql(
            &url,
            "SELECT token || ' ' || placed || ' ' || told_failed FROM keeper_bot_notices WHERE discovery_id = 6"
        ),
        "tok true false"
    );
    assert_eq!(
        count(&url, "SELECT COUNT(*) FROM sync_queue WHERE sync_status = 'synced'"),
        4
    );
    assert_eq!(
        count(&url, "SELECT COUNT(*) FROM sync_queue WHERE sync_status = 'pending'"),
        4
    );
    assert_eq!(
        count(&url, "SELECT COUNT(*) FROM sync_queue WHERE claimed_by IS NOT NULL"),
        5,
        "who claimed each item is kept"
    );
    assert_eq!(
        psql(&url, "SELECT encode(bytes, 'hex') FROM keeper_evidence WHERE id = 'e1'"),
        "89504e470d0a1a0a"
    );
    assert_eq!(
        psql(
            &url,
            "SELECT state || ' ' || canary_failed || '/' || canary_items || ' ' || started_by || ' '
                    || keeper_s(ended_at) FROM keeper_plugin_canaries"
        ),
        "rolled_back 4/4 bot-host 2026-12-01 10:05:00",
        "the canary's history moves with it"
    );
    assert_eq!(
        psql(&url, "SELECT value FROM keeper_sync_meta WHERE key = 'source_id'"),
        keeper_source,
        "the store goes on under keeper.db's source id"
    );

    // Again: nothing new, nothing doubled.
    let out = env.ok(&["migrate-store", "--to", &url]);
    assert_eq!(copied(&out, "discoveries"), (8, 8, 0), "{out}");
    assert_eq!(copied(&out, "sync_queue"), (8, 8, 0), "{out}");
    assert_eq!(copied(&out, "keeper_plugin_canaries"), (1, 1, 0), "{out}");
    assert_eq!(count(&url, "SELECT COUNT(*) FROM discoveries"), 8);
    assert!(before == keeper_db_bytes(&env), "keeper.db changed");

    // On PostgreSQL from now on: a new report takes an id after the copied ones.
    env.var("KEEPER_DATABASE_URL", &url).var("SYNC_INTERVAL", 1);
    let new_id = env.submit("fossil", "Oculi", "planet:Getre Beta", "moved report 8", &[]);
    assert_eq!(new_id, 9, "the id sequence was advanced past the copied ids");
    let (mut host, _, log) = spawn_run(&env);
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&url, "SELECT COUNT(*) FROM sync_queue WHERE sync_status = 'synced'") < 9 {
        assert!(
            Instant::now() < deadline,
            "the moved queue did not drain within 120 s:\n{}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(stop(&mut host).success());
    assert_eq!(
        scalar_i64(
            &env.haven,
            "SELECT COUNT(*) FROM discoveries WHERE description LIKE 'moved report %'"
        )
        .await,
        9,
        "each of the 9 reports in VH-Database once"
    );
    assert_eq!(
        scalar_i64(
            &env.haven,
            "SELECT COUNT(DISTINCT description) FROM discoveries WHERE description LIKE 'moved report %'"
        )
        .await,
        9
    );
    assert_eq!(
        count(&url, "SELECT haven_discovery_id FROM sync_queue WHERE discovery_id = 5"),
        haven_id_of_5,
        "the report written before the move was recognised by the ledger, not written again"
    );
    assert!(before == keeper_db_bytes(&env), "keeper.db changed");
}

/// Each refusal says what is wrong and changes neither keeper.db nor the
/// PostgreSQL database.
#[tokio::test]
async fn migrate_store_refuses_clearly_and_changes_nothing() {
    let url = fresh_database("migrate_refusals");
    let env = Env::new();
    env.submit("fossil", "Oculi", "planet:Getre Beta", "refusal report 0", &[]);
    let before = keeper_db_bytes(&env);

    // Not a PostgreSQL URL.
    let out = env.run(&["migrate-store", "--to", "mysql://keeper@127.0.0.1/keeper"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("expected a PostgreSQL URL"), "{}", stderr(&out));

    // No server there: named, without its password.
    refused_naming_the_server_without_its_password(&env.run(&[
        "migrate-store",
        "--to",
        "postgres://keeper:s3cret@127.0.0.1:1/keeper",
    ]));
    assert!(before == keeper_db_bytes(&env), "keeper.db changed");

    // keeper.db missing, not a keeper.db, or not migrated yet: refused
    // before the server is touched.
    let mut other = Env::new();
    let out = other.run(&["migrate-store", "--to", &url]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("there is no keeper.db at"), "{}", stderr(&out));
    assert!(!other.keeper.exists(), "a keeper.db was created");
    let haven = std::fs::read(&other.haven).expect("VH-Database");
    let haven_path = other.haven.display().to_string();
    other.var("KEEPER_DB_PATH", haven_path);
    let out = other.run(&["migrate-store", "--to", &url]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is not a keeper.db"), "{}", stderr(&out));
    assert!(
        haven == std::fs::read(&other.haven).expect("VH-Database"),
        "VH-Database changed"
    );
    let legacy = Env::new();
    std::fs::copy(KEEPER_LEGACY, &legacy.keeper).expect("copy the old bot's keeper.db");
    let legacy_bytes = keeper_db_bytes(&legacy);
    let out = legacy.run(&["migrate-store", "--to", &url]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("needs upgrading") && stderr(&out).contains("keeper sync --once"),
        "{}",
        stderr(&out)
    );
    assert!(
        legacy_bytes == keeper_db_bytes(&legacy),
        "the old bot's keeper.db changed"
    );
    assert_eq!(tables(&url), 0, "a refused move touched the database");

    // A store that holds another keeper's reports.
    let mut elsewhere = on_postgres(&url);
    elsewhere.submit("fossil", "Oculi", "planet:Getre Beta", "another keeper's report", &[]);
    let out = env.run(&["migrate-store", "--to", &url]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("holds another keeper's reports"),
        "{}",
        stderr(&out)
    );
    assert_eq!(count(&url, "SELECT COUNT(*) FROM discoveries"), 1);
    assert!(before == keeper_db_bytes(&env), "keeper.db changed");

    // The same keeper.db, moved, then used on both sides: discovery 2 is
    // another report in each. The second move names it and copies nothing.
    let url = fresh_database("migrate_conflict");
    env.ok(&["migrate-store", "--to", &url]);
    elsewhere.var("KEEPER_DATABASE_URL", &url);
    assert_eq!(
        elsewhere.submit("fossil", "Oculi", "planet:Getre Beta", "taken on PostgreSQL", &[]),
        2
    );
    assert_eq!(
        env.submit(
            "fossil",
            "Oculi",
            "planet:Getre Beta",
            "taken in keeper.db after the move",
            &[]
        ),
        2
    );
    let queue_before = psql(
        &url,
        "SELECT string_agg(id || ':' || discovery_id, ',' ORDER BY id) FROM sync_queue",
    );
    let out = env.run(&["migrate-store", "--to", &url]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("already has discoveries id = 2 with other content"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        psql(
            &url,
            "SELECT string_agg(id || ':' || discovery_id, ',' ORDER BY id) FROM sync_queue"
        ),
        queue_before
    );
    assert_eq!(count(&url, "SELECT COUNT(*) FROM discoveries"), 2);
}
