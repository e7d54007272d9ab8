//! A plugin activated on one host reaches the others on the same store
//! (host/src/plugins/follow.rs), against real `keeper run` processes with
//! their own plugins folders: on one PostgreSQL database, where the
//! activation wakes the other host at once (`LISTEN/NOTIFY`: its poll is
//! set to an hour here, so only the notification can be what wakes it), and
//! on one keeper.db, where the other process finds it by polling. A version
//! a host cannot run (asks more memory than its ceiling; bytes in the store
//! that do not hash to the recorded version) is refused there, named in its
//! `/health`, and the host keeps its plugin; a restarted host with an empty
//! folder takes the store's active version instead of turning the others
//! back to the built-in plugin.

use crate::common;

use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::guest_plugins::plugin;
use common::postgres::{fresh_database, psql};
use common::*;
use serde_json::{Value, json};

const KEY: &str = "plugin-follow-key";

/// Compiling and checking a plugin in a debug build on a busy 2-core
/// machine takes a while; so may a host's follow, which checks it too.
const CHECK_TIMEOUT: Duration = Duration::from_secs(180);

/// A `keeper run` with its own plugins folder and an HTTP client for its API.
struct Host {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
    agent: ureq::Agent,
}

impl Host {
    /// `keeper run` on `env` with the plugins folder `plugins` (created),
    /// naming its claims `name`, with `vars` on top of `env`'s.
    fn start(env: &Env, name: &str, plugins: &Path, vars: &[(&str, &str)]) -> Host {
        std::fs::create_dir_all(plugins).unwrap();
        let mut cmd: Command = env.command(&["run"]);
        cmd.env("KEEPER_HOST_NAME", name).env("KEEPER_PLUGINS_DIR", plugins);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let (child, port, log) = spawn_api(cmd);
        let agent = http_agent(CHECK_TIMEOUT);
        Host {
            child,
            port,
            log,
            agent,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Times `needle` occurs in the log.
    fn seen(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// Waits until `needle` occurs `times` times in the log.
    fn wait_for(&self, needle: &str, times: usize) {
        let deadline = Instant::now() + CHECK_TIMEOUT;
        while self.seen(needle) < times {
            assert!(
                Instant::now() < deadline,
                "{needle:?} not {times} time(s) in the log within {CHECK_TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `method path` with the API key and `body` (application/wasm); the
    /// status and the JSON answer.
    fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Value) {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let response = match method {
            "GET" => self.agent.get(&url).header("X-API-Key", KEY).call(),
            "PUT" | "POST" => {
                let request = if method == "PUT" {
                    self.agent.put(&url)
                } else {
                    self.agent.post(&url)
                };
                request
                    .header("X-API-Key", KEY)
                    .header("Content-Type", "application/wasm")
                    .send(body.unwrap_or_default())
            }
            other => panic!("method {other}"),
        };
        let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"));
        (status, json)
    }

    fn ok(&self, method: &str, path: &str, body: Option<&[u8]>) -> Value {
        let (status, json) = self.call(method, path, body);
        assert_eq!(status, 200, "{method} {path}: {json}\n{}", self.log());
        json
    }

    /// Posts one report; its discovery id.
    fn post(&self, description: &str) -> i64 {
        let body = json!({
            "discovery_type": "fossil",
            "system_name": "Oculi",
            "location": "planet:Getre Beta",
            "description": description,
            "username": "Explorer#1234",
        });
        let mut response = self
            .agent
            .post(format!("http://127.0.0.1:{}/discoveries", self.port))
            .header("X-API-Key", KEY)
            .header("content-type", "application/json")
            .send(body.to_string())
            .unwrap_or_else(|e| panic!("POST /discoveries: {e}\n{}", self.log()));
        let text = response.body_mut().read_to_string().unwrap_or_default();
        assert_eq!(response.status().as_u16(), 201, "{text}\n{}", self.log());
        let answer: Value = serde_json::from_str(&text).unwrap();
        answer["discovery_id"]
            .as_i64()
            .unwrap_or_else(|| panic!("no discovery_id in {answer}"))
    }

    /// `/health`'s problems, by name.
    fn problems(&self) -> Vec<(String, String)> {
        let health = self.ok("GET", "/health", None);
        health["problems"]
            .as_array()
            .unwrap_or_else(|| panic!("{health}"))
            .iter()
            .map(|p| {
                (
                    p["problem"].as_str().unwrap_or_default().to_owned(),
                    p["message"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// Waits until `/health` lists `problem` (or, with `present` false, no
    /// longer does); its message.
    fn wait_for_problem(&self, problem: &str, present: bool) -> String {
        let deadline = Instant::now() + CHECK_TIMEOUT;
        loop {
            let found = self.problems().into_iter().find(|(p, _)| p == problem);
            if found.is_some() == present {
                return found.map(|(_, m)| m).unwrap_or_default();
            }
            assert!(
                Instant::now() < deadline,
                "/health never {} {problem}: {:?}\n{}",
                if present { "listed" } else { "stopped listing" },
                self.problems(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// The plugin name and hash VH-Database's ledger records for `discovery_id`
/// of the store, once it is there.
async fn written_with(haven: &Path, discovery_id: i64) -> (String, String) {
    // The ledger table appears with the first row written.
    let ledger = "SELECT COUNT(*) FROM sqlite_master WHERE name = 'keeper_sync_ledger'";
    wait_for_value(haven, ledger, 1, CHECK_TIMEOUT).await;
    let sql = format!("SELECT COUNT(*) FROM keeper_sync_ledger WHERE keeper_discovery_id = {discovery_id}");
    wait_for_value(haven, &sql, 1, CHECK_TIMEOUT).await;
    let mut conn = connect(haven).await;
    sqlx::query_as("SELECT plugin_name, plugin_hash FROM keeper_sync_ledger WHERE keeper_discovery_id = ?1")
        .bind(discovery_id)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

const SWITCHED: &str = "switching to it";
const REFUSED: &str = "the store's active mapping plugin cannot run on this host";

#[tokio::test]
async fn a_plugin_activated_on_one_postgres_host_reaches_the_other_and_one_it_cannot_run_is_refused_there() {
    let url = fresh_database("plugin_follow");
    let mut env = Env::new();
    env.var("KEEPER_DATABASE_URL", &url)
        .var("SYNC_INTERVAL", 1)
        .var("SYNC_API_KEY", KEY)
        // Far above what a mapping takes, so a loaded machine never fails a good plugin.
        .var("KEEPER_PLUGIN_TIMEOUT_MS", 5_000);
    env.ok(&["sync", "--once"]); // the schema, once, before the hosts start
    let a_plugins = env.dir.path().join("a-plugins");
    let b_plugins = env.dir.path().join("b-plugins");
    // A may run plugins of up to 64 MiB, B only up to the default 32. B
    // looks by itself only once an hour: the notification must wake it.
    let mut a = Host::start(&env, "host-a", &a_plugins, &[("KEEPER_PLUGIN_MEMORY_MIB", "64")]);
    let b_vars = [("KEEPER_PLUGINS_FOLLOW_SECS", "3600")];
    let mut b = Host::start(&env, "host-b", &b_plugins, &b_vars);

    // Uploaded on A: B switches to it, by its hash, without a file of its own.
    let upper = read(&plugin("upper"));
    let answer = a.ok("PUT", "/plugins/shouting", Some(&upper));
    assert_eq!(answer["active"]["name"], "test-upper", "{answer}");
    let upper_hash = answer["active"]["hash"].as_str().unwrap().to_owned();
    b.wait_for(SWITCHED, 1);
    assert!(
        b.log().contains(&format!("hash={upper_hash}")),
        "B names the version it took:\n{}",
        b.log()
    );
    assert_eq!(
        std::fs::read_dir(&b_plugins).unwrap().count(),
        0,
        "B's folder untouched"
    );
    assert_eq!(
        psql(
            &url,
            &format!("SELECT octet_length(bytes) FROM keeper_plugin_artifacts WHERE hash = '{upper_hash}'")
        ),
        upper.len().to_string(),
        "the artifact is in the store"
    );

    // B restarts with its empty folder: it takes the store's active
    // version instead of making the built-in plugin active for all.
    let status = stop(&mut b.child);
    assert!(status.success(), "B did not stop cleanly: {status}");
    drop(b);
    let b = Host::start(&env, "host-b", &b_plugins, &b_vars);
    b.wait_for("mapping plugin active", 1);
    assert!(b.log().contains("name=test-upper"), "{}", b.log());
    assert_eq!(
        psql(&url, "SELECT name FROM keeper_plugins WHERE status = 'active'"),
        "test-upper"
    );

    // A plugin that asks more memory than B allows: active on A, refused
    // on B, which keeps the upper plugin and says so in /health.
    let big = read(&plugin("big-needs"));
    let answer = a.ok("PUT", "/plugins/big", Some(&big));
    assert_eq!(answer["active"]["name"], "test-big-needs", "{answer}");
    let message = b.wait_for_problem("plugin_not_followed", true);
    for part in [
        "test-big-needs",
        "64 MiB",
        "KEEPER_PLUGIN_MEMORY_MIB",
        "keeps running test-upper",
    ] {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
    assert!(b.log().contains(REFUSED), "{}", b.log());
    assert!(a.problems().is_empty(), "A runs it: {:?}", a.problems());
    let status = stop(&mut a.child);
    assert!(status.success(), "A did not stop cleanly: {status}");

    // B still syncs, with the upper plugin.
    let posted = b.post("Bones synced by host B after the upload on A");
    let (name, hash) = written_with(&env.haven, posted).await;
    assert_eq!((name.as_str(), hash.as_str()), ("test-upper", upper_hash.as_str()));
    assert_eq!(
        psql(
            &url,
            &format!("SELECT claimed_by FROM sync_queue WHERE discovery_id = {posted}")
        ),
        "host-b"
    );

    // A damaged copy in the store (its bytes do not hash to the version
    // recorded as active, as another host announces it): B refuses it,
    // names it in /health, and keeps syncing with the upper plugin.
    let damaged = "d".repeat(64);
    psql(
        &url,
        &format!(
            "BEGIN; \
             INSERT INTO keeper_plugin_artifacts (hash, bytes) VALUES ('{damaged}', '\\x0061736d00'); \
             UPDATE keeper_plugins SET status = 'retired', retired_at = now() WHERE status = 'active'; \
             INSERT INTO keeper_plugins (name, version, hash, source, status) \
             VALUES ('test-damaged', '9.9.9', '{damaged}', '/elsewhere/damaged.wasm', 'active'); \
             SELECT pg_notify('keeper_plugin_activated', '{damaged}'); \
             COMMIT;"
        ),
    );
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let message = loop {
        let message = b.wait_for_problem("plugin_not_followed", true);
        if message.contains("test-damaged") || Instant::now() > deadline {
            break message;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for part in ["test-damaged", "damaged", &damaged, "keeps running test-upper"] {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
    let health = b.ok("GET", "/health", None);
    assert_eq!(health["status"], "degraded", "{health}");
    let posted = b.post("Bones synced by host B beside a damaged plugin");
    let (name, hash) = written_with(&env.haven, posted).await;
    assert_eq!((name.as_str(), hash.as_str()), ("test-upper", upper_hash.as_str()));
    assert_eq!(b.seen(SWITCHED), 0, "{}", b.log());
}

#[tokio::test]
async fn a_plugin_dropped_into_one_folder_reaches_another_process_on_the_same_keeper_db() {
    let mut env = Env::new();
    env.var("SYNC_INTERVAL", 1)
        .var("SYNC_API_KEY", KEY)
        .var("KEEPER_PLUGIN_TIMEOUT_MS", 5_000)
        .var("KEEPER_PLUGINS_FOLLOW_SECS", 1);
    env.ok(&["sync", "--once"]); // keeper.db, once, before both start
    let a_plugins = env.dir.path().join("a-plugins");
    let b_plugins = env.dir.path().join("b-plugins");
    let mut a = Host::start(&env, "host-a", &a_plugins, &[]);
    let b = Host::start(&env, "host-b", &b_plugins, &[]);

    std::fs::copy(plugin("lenient"), a_plugins.join("lenient.wasm")).unwrap();
    b.wait_for(SWITCHED, 1);
    assert!(b.log().contains("name=test-lenient"), "{}", b.log());
    let status = stop(&mut a.child);
    assert!(status.success(), "A did not stop cleanly: {status}");

    let posted = b.post("Bones synced by the second process");
    let (name, _) = written_with(&env.haven, posted).await;
    assert_eq!(name, "test-lenient");
    assert!(b.problems().is_empty(), "{:?}", b.problems());
}

/// A canary's plugin lives in the host that started it: another host
/// starting on the same store leaves it running (that host renews its
/// lease), and once that host is killed, the other ends it when the lease
/// lapses.
#[tokio::test]
async fn a_canary_outlives_another_hosts_start_and_ends_when_its_own_host_is_killed() {
    let url = fresh_database("plugin_follow");
    let mut env = Env::new();
    env.var("KEEPER_DATABASE_URL", &url)
        .var("SYNC_INTERVAL", 1)
        .var("SYNC_LEASE", 3)
        .var("SYNC_API_KEY", KEY)
        .var("KEEPER_PLUGIN_TIMEOUT_MS", 5_000);
    env.ok(&["sync", "--once"]); // the schema, once, before the hosts start
    let mut a = Host::start(&env, "host-a", &env.dir.path().join("a-plugins"), &[]);
    let upper = read(&plugin("upper"));
    let started = a.ok("PUT", "/plugins/shouting/canary?percent=10", Some(&upper));
    assert_eq!(started["canary"]["started_by"], "host-a", "{started}");
    let canary_of = |host: &Host| host.ok("GET", "/plugins", None)["canary"].clone();

    // B starts and tends the store's canaries for longer than a lease.
    let b = Host::start(&env, "host-b", &env.dir.path().join("b-plugins"), &[]);
    std::thread::sleep(Duration::from_secs(5));
    let canary = canary_of(&b);
    assert_eq!(
        (canary["state"].as_str(), canary["started_by"].as_str()),
        (Some("running"), Some("host-a")),
        "{canary}\nA:\n{}\nB:\n{}",
        a.log(),
        b.log()
    );

    // A is killed: no graceful end, only its lease tells.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let ended = loop {
        let canary = canary_of(&b);
        if canary["state"] != "running" {
            break canary;
        }
        assert!(
            Instant::now() < deadline,
            "B never ended A's canary: {canary}\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(ended["state"], "ended", "{ended}");
    assert!(
        ended["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("the host that ran it stopped renewing its lease")),
        "{ended}"
    );
    assert_eq!(b.ok("GET", "/plugins", None)["active"]["name"], "keeper-default-mapper");
}
