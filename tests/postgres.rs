//! keeper's store on PostgreSQL (`KEEPER_DATABASE_URL`): the commands on
//! it, what it refuses, and several `keeper run` hosts on one queue. Each
//! test has a database of its own in the cluster `.ci/postgres` runs
//! (`tests/common/postgres.rs`); without one it fails saying how to start it.

mod common;

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
    let out = env.run(&["sync", "--once"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("cannot connect to the PostgreSQL store at postgres://keeper@127.0.0.1:1/keeper"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "the password leaked: {err}");

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
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
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
