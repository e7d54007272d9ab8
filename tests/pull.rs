//! Remote mode end to end, real binaries over real HTTP on 127.0.0.1: a
//! "bot host" `keeper run` with `USE_HAVEN_DATABASE=false` and its own
//! keeper.db, and a "Control Room" `keeper pull` with its own keeper.db and
//! a copy of the sample VH-Database.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use sqlx::Row;

const KEY: &str = "bot-host-secret";

/// The bot host: `keeper run` in remote mode, with an API key.
struct BotHost {
    env: Env,
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
}

impl BotHost {
    fn start() -> BotHost {
        BotHost::start_with(&[])
    }

    /// A bot host with more settings (e.g. `SYNC_MAX_ATTEMPTS`).
    fn start_with(vars: &[(&str, &str)]) -> BotHost {
        let mut env = Env::new();
        env.var("USE_HAVEN_DATABASE", "false").var("SYNC_API_KEY", KEY);
        for (k, v) in vars {
            env.var(k, v);
        }
        let (child, port, log) = spawn_run(&env);
        BotHost { env, child, port, log }
    }

    /// One request to the bot host's API with its key: (status, JSON answer).
    fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
        call(&self.url(), method, path, body)
    }

    /// `GET path`, insisting on 200.
    fn get(&self, path: &str) -> serde_json::Value {
        let (status, value) = self.call("GET", path, None);
        assert_eq!(status, 200, "GET {path}: {value}");
        value
    }

    /// `GET /metrics` as text.
    fn metrics(&self) -> String {
        let agent = agent();
        let mut answer = agent
            .get(format!("{}/metrics", self.url()))
            .header("X-API-Key", KEY)
            .call()
            .expect("GET /metrics");
        answer.body_mut().read_to_string().expect("metrics text")
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `keeper submit` against the bot host's keeper.db; returns (discovery id, queue id).
    async fn submit(&self, system: &str, location: &str, description: &str) -> (i64, i64) {
        let id = self.env.submit("🦴", system, location, description, &[]);
        let mut conn = connect(&self.env.keeper).await;
        let queue_id = sqlx::query_scalar("SELECT id FROM sync_queue WHERE discovery_id = ?1")
            .bind(id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        (id, queue_id)
    }

    /// The queue rows as (queue id, status, VH id), in id order.
    async fn queue(&self) -> Vec<(i64, String, Option<i64>)> {
        let mut conn = connect(&self.env.keeper).await;
        sqlx::query_as("SELECT id, sync_status, haven_discovery_id FROM sync_queue ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap()
    }
}

impl Drop for BotHost {
    fn drop(&mut self) {
        terminate(&mut self.child);
        if std::thread::panicking() {
            eprintln!("bot host log:\n{}", self.log.lock().unwrap());
        }
    }
}

/// How long a puller may take to stop by itself (a round in hand finishes first).
const PULL_EXIT_TIMEOUT: Duration = Duration::from_secs(60);

fn agent() -> ureq::Agent {
    http_agent(Duration::from_secs(30))
}

/// One request with the bot host's key to any sync API: (status, JSON answer).
fn call(base: &str, method: &str, path: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
    let agent = agent();
    let url = format!("{base}{path}");
    let answer = match (method, body) {
        ("GET", _) => agent.get(&url).header("X-API-Key", KEY).call(),
        (_, body) => agent
            .post(&url)
            .header("X-API-Key", KEY)
            .header("content-type", "application/json")
            .send(body.unwrap_or(serde_json::Value::Null).to_string().as_bytes()),
    };
    let mut answer = answer.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = answer.status().as_u16();
    let text = answer.body_mut().read_to_string().expect("answer body");
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {url}: not JSON ({e}): {text}"));
    (status, value)
}

/// `keeper pull --once` from the Control Room's environment.
fn pull(control_room: &Env, from: &str, key: Option<&str>) -> Output {
    let mut args = vec![];
    if let Some(k) = key {
        args.extend(["--api-key", k]);
    }
    pull_with(control_room, from, &args)
}

/// `keeper pull --once --from FROM` with more arguments.
fn pull_with(control_room: &Env, from: &str, more: &[&str]) -> Output {
    let mut args = vec!["pull", "--from", from, "--once"];
    args.extend_from_slice(more);
    // Plain log lines, so that tests can look for `field=value`.
    let mut cmd = control_room.command(&args);
    cmd.env("NO_COLOR", "1");
    output_within(cmd, COMMAND_TIMEOUT, "keeper pull --once to finish")
}

fn pull_ok(control_room: &Env, from: &str) -> String {
    let out = pull(control_room, from, Some(KEY));
    assert!(out.status.success(), "keeper pull failed: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn vh_count(control_room: &Env) -> i64 {
    scalar_i64(&control_room.haven, "SELECT COUNT(*) FROM discoveries").await
}

#[tokio::test]
async fn pull_writes_mapped_rows_acknowledges_and_never_writes_twice() {
    let bot = BotHost::start();
    let (moon_discovery, moon_queue) = bot
        .submit("Ixiezh HV", "planet:Getre Beta", "Fossil under the ice")
        .await;
    let (_, planet_queue) = bot.submit("Oculi", "planet:Erren", "Bones in the dunes").await;
    let control_room = Env::new();
    let before = vh_count(&control_room).await;

    let out = pull_ok(&control_room, &bot.url());
    assert!(out.contains("pulled 2, failed 0"), "{out}");
    assert_eq!(vh_count(&control_room).await, before + 2);

    // The moon resolves to its moon id and its parent planet, as with a local sync.
    let vh = rows(
        &control_room.haven,
        "SELECT id, system_id, planet_id, moon_id, location_type, location_name, description, discovered_by
         FROM discoveries WHERE description = 'Fossil under the ice'",
    )
    .await;
    assert_eq!(vh.len(), 1);
    let moon = &vh[0];
    assert_eq!(moon.get::<String, _>("system_id"), "SYS_EUCLID_D148E5FD");
    assert_eq!(moon.get::<String, _>("location_type"), "moon");
    assert_eq!(moon.get::<Option<i64>, _>("moon_id"), Some(6));
    assert_eq!(moon.get::<Option<i64>, _>("planet_id"), Some(31));
    assert_eq!(moon.get::<String, _>("location_name"), "Getre Beta");
    assert_eq!(moon.get::<String, _>("discovered_by"), "Explorer#1234");
    let moon_vh_id: i64 = moon.get("id");

    // The bot host's queue shows both synced with their VH ids.
    let queue = bot.queue().await;
    assert_eq!(queue.len(), 2);
    assert!(queue.iter().all(|(_, s, h)| s == "synced" && h.is_some()), "{queue:?}");
    let moon_row = queue.iter().find(|(q, _, _)| *q == moon_queue).unwrap();
    assert_eq!(moon_row.2, Some(moon_vh_id));

    // The ledger is keyed by the bot host's keeper.db, not the puller's.
    let bot_source: String = {
        let mut conn = connect(&bot.env.keeper).await;
        sqlx::query_scalar("SELECT value FROM keeper_sync_meta WHERE key = 'source_id'")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };
    let ledger = rows(
        &control_room.haven,
        "SELECT source_id, keeper_discovery_id, haven_discovery_id FROM keeper_sync_ledger",
    )
    .await;
    assert_eq!(ledger.len(), 2);
    assert!(ledger.iter().all(|r| r.get::<String, _>("source_id") == bot_source));
    assert!(
        ledger
            .iter()
            .any(|r| r.get::<i64, _>("keeper_discovery_id") == moon_discovery
                && r.get::<i64, _>("haven_discovery_id") == moon_vh_id)
    );

    // A second pull finds nothing pending.
    let out = pull_ok(&control_room, &bot.url());
    assert!(out.contains("pulled 0, failed 0"), "{out}");
    assert_eq!(vh_count(&control_room).await, before + 2);

    // A crash between the VH write and the acknowledgement: the bot host
    // still sees the items pending. The next pull finds them in the ledger,
    // inserts nothing, and acknowledges the same VH ids.
    {
        let mut conn = connect(&bot.env.keeper).await;
        sqlx::query("UPDATE sync_queue SET sync_status = 'pending', haven_discovery_id = NULL, synced_at = NULL")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let out = pull_ok(&control_room, &bot.url());
    assert!(out.contains("pulled 2, failed 0"), "{out}");
    assert_eq!(vh_count(&control_room).await, before + 2);
    assert_eq!(
        scalar_i64(&control_room.haven, "SELECT COUNT(*) FROM keeper_sync_ledger").await,
        2
    );
    let queue = bot.queue().await;
    assert!(queue.iter().all(|(_, s, _)| s == "synced"), "{queue:?}");
    assert_eq!(
        queue.iter().find(|(q, _, _)| *q == moon_queue).unwrap().2,
        Some(moon_vh_id)
    );
    assert!(queue.iter().any(|(q, _, h)| *q == planet_queue && h.is_some()));
}

#[tokio::test]
async fn pull_without_or_with_a_wrong_api_key_fails_clearly_and_writes_nothing() {
    let bot = BotHost::start();
    bot.submit("Ixiezh HV", "moon:Getre Beta", "Needs a key").await;
    let control_room = Env::new();
    let before = vh_count(&control_room).await;

    let out = pull(&control_room, &bot.url(), None);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("401") && err.contains("requires an API key"), "{err}");

    let out = pull(&control_room, &bot.url(), Some("not-the-key"));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("401") && err.contains("API key given is wrong"), "{err}");

    assert_eq!(vh_count(&control_room).await, before);
    assert!(bot.queue().await.iter().all(|(_, s, _)| s == "pending"));

    // The machine's own SYNC_API_KEY serves when --api-key is not given.
    let mut control_room = control_room;
    control_room.var("SYNC_API_KEY", KEY);
    let out = pull(&control_room, &bot.url(), None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("pulled 1, failed 0"));
}

#[tokio::test]
async fn pull_without_vh_database_acknowledges_nothing() {
    let bot = BotHost::start();
    bot.submit("Ixiezh HV", "moon:Getre Beta", "Waits for the database")
        .await;
    let mut control_room = Env::new();
    let missing = control_room.dir.path().join("nowhere/VH-Database.db");
    control_room.var("HAVEN_DB_PATH", missing.display());

    let out = pull(&control_room, &bot.url(), Some(KEY));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("VH-Database not accessible") && err.contains("nothing was acknowledged"),
        "{err}"
    );
    assert!(!missing.exists());
    assert!(bot.queue().await.iter().all(|(_, s, h)| s == "pending" && h.is_none()));
}

/// The mapping refuses a row: a permanent failure (the same plugin refuses
/// it again), so the bot host gives up at once, as its own worker would.
#[tokio::test]
async fn items_that_fail_mapping_are_reported_to_the_bot_host() {
    let bot = BotHost::start();
    let (broken, broken_queue) = bot.submit("Ixiezh HV", "moon:Getre Beta", "Tags gone bad").await;
    let (_, good_queue) = bot.submit("Oculi", "planet:Erren", "Fine report").await;
    {
        let mut conn = connect(&bot.env.keeper).await;
        sqlx::query("UPDATE discoveries SET tags = '{not json' WHERE id = ?1")
            .bind(broken)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let control_room = Env::new();
    let before = vh_count(&control_room).await;

    let out = pull(&control_room, &bot.url(), Some(KEY));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("pulled 1, failed 1"));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("queue_id={broken_queue}")) && err.contains("tags is not valid JSON"),
        "{err}"
    );
    assert_eq!(vh_count(&control_room).await, before + 1);
    let queue = bot.queue().await;
    assert!(
        queue.contains(&(broken_queue, "max_retries_exceeded".into(), None)),
        "{queue:?}"
    );
    let item = bot.get(&format!("/sync/items/{broken_queue}"))["item"].clone();
    assert_eq!(
        (item["error_class"].as_str(), item["sync_attempts"].as_i64()),
        (Some("mapping"), Some(1)),
        "{item}"
    );
    assert!(
        item["sync_error"]
            .as_str()
            .unwrap_or_default()
            .contains("tags is not valid JSON"),
        "{item}"
    );
    assert_eq!(bot.get("/sync/failed")["failed_items"][0]["queue_id"], broken_queue);
    assert!(
        queue.iter().any(|(q, s, _)| *q == good_queue && s == "synced"),
        "{queue:?}"
    );
}

#[tokio::test]
async fn pull_every_keeps_pulling_until_sigterm() {
    let bot = BotHost::start();
    let control_room = Env::new();
    let before = vh_count(&control_room).await;
    let mut puller = control_room
        .command(&["pull", "--from", &bot.url(), "--api-key", KEY, "--every", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn keeper pull");
    // Submitted while the puller runs: a later round picks it up.
    bot.submit("Oculi", "planet:Erren", "Arrives later").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while bot.queue().await.iter().any(|(_, s, _)| s != "synced") {
        assert!(Instant::now() < deadline, "the puller never acknowledged the item");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(vh_count(&control_room).await, before + 1);
    let status = stop(&mut puller);
    assert!(status.success(), "{status}");
}

/// Reads one HTTP request (head and body); returns its request line.
fn read_request(stream: &mut std::net::TcpStream) -> String {
    read_request_with_body(stream).0
}

/// Reads one HTTP request; returns its request line and its body.
fn read_request_with_body(stream: &mut std::net::TcpStream) -> (String, String) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&data).into_owned();
    let line = text.lines().next().unwrap_or_default().to_owned();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (line, body)
}

/// A proxy to the bot host that passes exports through and fails every
/// acknowledgement with 503: the puller writes, then loses the ack.
fn ack_failing_proxy(bot: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bot = bot.to_owned();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let line = read_request(&mut stream);
            let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
            let (status, body) = if line.starts_with("GET ") {
                let mut answer = ureq::get(format!("{bot}{path}"))
                    .header("X-API-Key", KEY)
                    .call()
                    .unwrap();
                ("200 OK", answer.body_mut().read_to_string().unwrap())
            } else {
                (
                    "503 Service Unavailable",
                    r#"{"status":"error","error":"unavailable","message":"gone for a moment"}"#.to_owned(),
                )
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn a_lost_acknowledgement_never_writes_twice() {
    let bot = BotHost::start();
    bot.submit("Ixiezh HV", "moon:Getre Beta", "Written, never acknowledged")
        .await;
    bot.submit("Oculi", "planet:Erren", "Also written").await;
    let control_room = Env::new();
    let before = vh_count(&control_room).await;

    let out = pull(&control_room, &ack_failing_proxy(&bot.url()), Some(KEY));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("HTTP 503") && err.contains("gone for a moment"), "{err}");
    // Written to VH-Database, but the bot host never heard of it.
    assert_eq!(vh_count(&control_room).await, before + 2);
    assert!(bot.queue().await.iter().all(|(_, s, h)| s == "pending" && h.is_none()));

    // The next round finds both in the ledger: acknowledged, not inserted again.
    let out = pull_ok(&control_room, &bot.url());
    assert!(out.contains("pulled 2, failed 0"), "{out}");
    assert_eq!(vh_count(&control_room).await, before + 2);
    let ledger = rows(
        &control_room.haven,
        "SELECT l.haven_discovery_id FROM keeper_sync_ledger l JOIN discoveries d ON d.id = l.haven_discovery_id",
    )
    .await;
    assert_eq!(ledger.len(), 2);
    let queue = bot.queue().await;
    for (_, status, haven_id) in &queue {
        assert_eq!(status, "synced");
        assert!(
            ledger.iter().any(|r| Some(r.get::<i64, _>(0)) == *haven_id),
            "{queue:?}"
        );
    }
}

/// A one-connection HTTP server that answers every request with `response`.
fn fake_server(response: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            read_request(&mut stream);
            let _ = stream.write_all(response.as_bytes());
        }
    });
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn pull_names_unreachable_servers_and_wrong_answers() {
    let control_room = Env::new();

    // Nothing listens on a port we bound and released.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = pull(&control_room, &format!("http://127.0.0.1:{port}"), None);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot reach the sync API"), "{}", stderr(&out));

    let html = fake_server(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 6\r\nConnection: close\r\n\r\n<html>",
    );
    let out = pull(&control_room, &html, None);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("did not answer JSON"), "{}", stderr(&out));

    let shape = fake_server(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\nConnection: close\r\n\r\n{\"status\":\"ok\"}",
    );
    let out = pull(&control_room, &shape, None);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unexpected shape"), "{}", stderr(&out));

    // https is spoken (see the TLS tests below); a name that does not resolve is unreachable.
    let out = pull(&control_room, "https://example.invalid", None);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot reach the sync API at https://example.invalid"),
        "{}",
        stderr(&out)
    );

    let out = pull(&control_room, "ftp://127.0.0.1:21", None);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("expected an https:// or http:// address"),
        "{}",
        stderr(&out)
    );
}

/// A Control Room whose VH-Database lacks a column the mapped row sets: a
/// schema failure on the puller, which the bot host must see as its own.
#[tokio::test]
async fn remote_failures_back_off_count_and_give_up_on_the_bot_host() {
    let bot = BotHost::start_with(&[("SYNC_MAX_ATTEMPTS", "2"), ("SYNC_RETRY_BASE", "3600")]);
    let broken = bot.env.submit(
        "🦴",
        "Oculi",
        "planet:Erren",
        "Bones with a species",
        &["--field", "species_type=Raptor"],
    );
    let (_, good_queue) = bot.submit("Ixiezh HV", "moon:Getre Beta", "Plain fossil").await;
    let broken_queue: i64 = scalar_i64(&bot.env.keeper, "SELECT MIN(id) FROM sync_queue").await;
    let control_room = Env::new();
    exec(&control_room.haven, "ALTER TABLE discoveries DROP COLUMN species_type").await;

    let out = pull_ok(&control_room, &bot.url());
    assert!(out.contains("pulled 1, failed 1"), "{out}");
    let (status, attempts, error) = queue_state(&bot.env.keeper, broken).await;
    assert_eq!((status.as_str(), attempts), ("pending", 1));
    let error = error.unwrap_or_default();
    assert!(error.contains("species_type missing in VH-Database"), "{error}");
    let item = bot.get(&format!("/sync/items/{broken_queue}"))["item"].clone();
    assert_eq!(item["error_class"], "schema", "{item}");
    assert_eq!(item["sync_attempts"], 1, "{item}");
    assert!(item["next_retry_after"].is_string(), "a backoff is set: {item}");
    assert!(item["last_sync_attempt"].is_string(), "{item}");

    // Not offered again before its backoff has passed.
    assert_eq!(bot.get("/sync/export")["count"], 0);
    let out = pull_ok(&control_room, &bot.url());
    assert!(out.contains("pulled 0, failed 0"), "{out}");
    assert_eq!(queue_state(&bot.env.keeper, broken).await.1, 1);

    // Once due, the second failure uses up SYNC_MAX_ATTEMPTS=2.
    exec(
        &bot.env.keeper,
        "UPDATE sync_queue SET next_retry_after = '2000-01-01 00:00:00.000' WHERE next_retry_after IS NOT NULL",
    )
    .await;
    let out = pull_ok(&control_room, &bot.url());
    assert!(out.contains("pulled 0, failed 1"), "{out}");
    assert_eq!(queue_state(&bot.env.keeper, broken).await.0, "max_retries_exceeded");

    // Everywhere the bot host's operator looks.
    let failed = bot.get("/sync/failed");
    assert_eq!(failed["count"], 1, "{failed}");
    assert_eq!(failed["failed_items"][0]["queue_id"], broken_queue);
    assert_eq!(failed["failed_items"][0]["sync_attempts"], 2);
    let listed = bot.env.ok(&["failed"]);
    assert!(
        listed.contains(&format!("#{broken_queue} discovery {broken} after 2 attempt(s)"))
            && listed.contains("species_type missing"),
        "{listed}"
    );
    let stats = bot.get("/sync/statistics");
    assert_eq!(stats["failed_attempts_by_class"]["schema"], 2, "{stats}");
    assert!(
        stats["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["sync_status"] == "max_retries_exceeded" && e["error_class"] == "schema" && e["count"] == 1),
        "{stats}"
    );
    let metrics = bot.metrics();
    assert!(
        metrics.contains("keeper_sync_failed_attempts_total{error_class=\"schema\"} 2\n")
            && metrics.contains("keeper_sync_failed_items{error_class=\"schema\"} 1\n"),
        "{metrics}"
    );

    // The acknowledged item carries the puller's plugin provenance.
    let good = bot.get(&format!("/sync/items/{good_queue}"))["item"].clone();
    assert_eq!(good["sync_status"], "synced", "{good}");
    let provenance = &good["provenance"];
    assert_eq!(provenance["name"], "keeper-default-mapper", "{good}");
    assert_eq!(provenance["hash"].as_str().map(str::len), Some(64), "{good}");
    assert_eq!(good["metadata"]["pulled"], true, "{good}");

    // The schema fixed: retry just the schema failures, by class.
    exec(
        &control_room.haven,
        "ALTER TABLE discoveries ADD COLUMN species_type TEXT",
    )
    .await;
    let none = bot.env.ok(&["retry", "--all-failed", "--class", "mapping"]);
    assert!(none.contains("0 item(s) that failed with class mapping"), "{none}");
    let out = bot.env.run(&["retry", "--class", "schema"]);
    assert!(!out.status.success(), "--class without --all-failed is refused");
    let out = bot.env.run(&["retry", "--all-failed", "--class", "scheme"]);
    assert!(
        !out.status.success() && stderr(&out).contains("possible values"),
        "{}",
        stderr(&out)
    );
    let (status, body) = bot.call("POST", "/sync/retry?class=bogus", None);
    assert_eq!(status, 400, "{body}");
    let (status, body) = bot.call("POST", "/sync/retry?class=schema", None);
    assert_eq!((status, body["retried"].as_i64()), (200, Some(1)), "{body}");
    let out = pull_ok(&control_room, &bot.url());
    assert!(out.contains("pulled 1, failed 0"), "{out}");
    assert_eq!(queue_state(&bot.env.keeper, broken).await.0, "synced");
}

/// `POST /sync/fail` by hand: only pending items change; the rest are listed.
#[tokio::test]
async fn failure_reports_change_only_pending_items() {
    let bot = BotHost::start();
    let (_, queue_id) = bot.submit("Oculi", "planet:Erren", "Reported by hand").await;
    let report = |id: i64, class: &str| serde_json::json!({"items": [{"queue_id": id, "class": class, "message": "could not write"}]});
    let (status, body) = bot.call("POST", "/sync/fail", Some(report(queue_id, "nonsense")));
    assert_eq!(status, 400, "{body}");
    let (status, body) = bot.call("POST", "/sync/fail", Some(serde_json::json!({"items": []})));
    assert_eq!(status, 400, "{body}");
    assert_eq!(queue_state(&bot.env.keeper, 1).await, ("pending".into(), 0, None));

    let (status, body) = bot.call("POST", "/sync/fail", Some(report(9999, "locked")));
    assert_eq!(
        (status, body["unknown"].clone()),
        (200, serde_json::json!([9999])),
        "{body}"
    );
    // A permanent class gives up at once, as with the local worker.
    let (status, body) = bot.call("POST", "/sync/fail", Some(report(queue_id, "mapping")));
    assert_eq!(
        (status, body["gave_up"].clone()),
        (200, serde_json::json!([queue_id])),
        "{body}"
    );
    let (status, body) = bot.call("POST", "/sync/fail", Some(report(queue_id, "locked")));
    assert_eq!(
        (status, body["not_pending"].clone()),
        (200, serde_json::json!([queue_id])),
        "{body}"
    );
    let (_, attempts, error) = queue_state(&bot.env.keeper, 1).await;
    assert_eq!((attempts, error.as_deref()), (1, Some("could not write")));
}

/// A host that writes VH-Database itself: export, ack and fail answer 409,
/// and a puller stops at once, writing nothing, `--every` included.
#[tokio::test]
async fn a_host_that_writes_vh_database_itself_refuses_to_export() {
    let mut env = Env::new();
    env.var("SYNC_API_KEY", KEY).var("SYNC_INTERVAL", 3600);
    // Its own worker cannot sync either (no VH-Database): whatever marks an
    // item synced here would be the acknowledgement.
    let missing = env.dir.path().join("nowhere/VH-Database.db");
    env.var("HAVEN_DB_PATH", missing.display());
    let (child, port, log) = spawn_run(&env);
    let host = BotHost { env, child, port, log };
    let id = host
        .env
        .submit("🦴", "Oculi", "planet:Erren", "Local worker's item", &[]);
    let control_room = Env::new();
    let before = vh_count(&control_room).await;

    for (method, path, body) in [
        ("GET", "/sync/export", None),
        (
            "POST",
            "/sync/ack",
            Some(serde_json::json!({"items": [{"queue_id": 1, "haven_discovery_id": 777}]})),
        ),
        (
            "POST",
            "/sync/fail",
            Some(serde_json::json!({"items": [{"queue_id": 1, "class": "locked", "message": "x"}]})),
        ),
    ] {
        let (status, body) = host.call(method, path, body);
        assert_eq!(status, 409, "{method} {path}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("USE_HAVEN_DATABASE=true"),
            "{body}"
        );
    }
    let synced = scalar_i64(
        &host.env.keeper,
        "SELECT COUNT(*) FROM sync_queue WHERE sync_status = 'synced' OR haven_discovery_id IS NOT NULL",
    )
    .await;
    assert_eq!(synced, 0, "a made-up acknowledgement changed nothing");
    assert_eq!(queue_state(&host.env.keeper, id).await.0, "pending");

    let out = pull(&control_room, &host.url(), Some(KEY));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("409") && err.contains("USE_HAVEN_DATABASE=true"), "{err}");

    let err = pull_every_fails(
        &control_room,
        &host.url(),
        KEY,
        "against a host that writes VH-Database",
    );
    assert!(err.contains("409") && err.contains("does not fix itself"), "{err}");
    assert_eq!(vh_count(&control_room).await, before);
}

#[tokio::test]
async fn pull_every_stops_on_a_wrong_key() {
    let bot = BotHost::start();
    let control_room = Env::new();
    let err = pull_every_fails(&control_room, &bot.url(), "wrong", "with a wrong key");
    assert!(err.contains("401") && err.contains("API key given is wrong"), "{err}");
}

/// Runs `keeper pull --every 1` and waits for it to stop by itself, which it
/// must, with a non-zero exit; returns its log. `case` says what is wrong.
fn pull_every_fails(control_room: &Env, from: &str, key: &str, case: &str) -> String {
    let mut puller = control_room
        .command(&["pull", "--from", from, "--api-key", key, "--every", "1"])
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn keeper pull");
    let status = wait_exit(
        &mut puller,
        PULL_EXIT_TIMEOUT,
        &format!("keeper pull --every {case} to stop"),
    );
    let mut err = String::new();
    puller.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!status.success(), "keeper pull --every {case} exited 0:\n{err}");
    err
}

/// A proxy that answers 503 to the first `failures` requests, then forwards
/// everything (method, path, body, key) to the bot host.
fn flaky_proxy(bot: &str, failures: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bot = bot.to_owned();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let (line, body) = read_request_with_body(&mut stream);
            let (status, text) = if n < failures {
                (
                    503,
                    r#"{"status":"error","error":"unavailable","message":"deploying"}"#.to_owned(),
                )
            } else {
                let mut parts = line.split(' ');
                let (method, path) = (parts.next().unwrap_or("GET"), parts.next().unwrap_or("/"));
                let body = serde_json::from_str(&body).ok();
                let (status, value) = call(&bot, method, path, body);
                (status, value.to_string())
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn pull_every_backs_off_on_5xx_and_carries_on() {
    let bot = BotHost::start();
    bot.submit("Oculi", "planet:Erren", "Waits out a deploy").await;
    let control_room = Env::new();
    let log_path = control_room.dir.path().join("pull.log");
    let mut puller = control_room
        .command(&[
            "pull",
            "--from",
            &flaky_proxy(&bot.url(), 2),
            "--api-key",
            KEY,
            "--every",
            "1",
        ])
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("spawn keeper pull");
    let deadline = Instant::now() + Duration::from_secs(60);
    while bot.queue().await.iter().any(|(_, s, _)| s != "synced") {
        assert!(
            Instant::now() < deadline,
            "the puller never got past the 503s:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        assert!(puller.try_wait().unwrap().is_none(), "a 503 must not end the puller");
        std::thread::sleep(Duration::from_millis(100));
    }
    terminate(&mut puller);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("HTTP 503") && log.contains("retry_in_seconds=1") && log.contains("retry_in_seconds=2"),
        "{log}"
    );
    assert!(wait_exit(&mut puller, PULL_EXIT_TIMEOUT, "keeper pull --every to stop").success());
}

/// A proxy to the bot host that passes every request through (with its
/// body) and records its request line, to see how a round is paged.
fn recording_proxy(bot: &str) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let bot = bot.to_owned();
    let agent = agent();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (line, body) = read_request_with_body(&mut stream);
            record.lock().unwrap().push(line.clone());
            let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
            let url = format!("{bot}{path}");
            let answer = if line.starts_with("GET ") {
                agent.get(&url).header("X-API-Key", KEY).call()
            } else {
                agent
                    .post(&url)
                    .header("X-API-Key", KEY)
                    .header("content-type", "application/json")
                    .send(body.as_bytes())
            };
            let (status, text) = match answer {
                Ok(mut a) => (a.status().as_u16(), a.body_mut().read_to_string().unwrap_or_default()),
                Err(e) => (502, format!(r#"{{"status":"error","error":"proxy","message":"{e}"}}"#)),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    (format!("http://127.0.0.1:{port}"), seen)
}

#[tokio::test]
async fn a_round_pulls_every_page() {
    const N: i64 = 10;
    let bot = BotHost::start();
    let mut input = String::new();
    for i in 0..N {
        input.push_str(
            &serde_json::json!({
                "discovery_type": "💎", "system_name": "Oculi", "location": "planet:Erren",
                "description": format!("Paged report {i}"), "username": "Pager", "resource_type": "Gold",
            })
            .to_string(),
        );
        input.push('\n');
    }
    let out = bot.env.run_with_stdin(&["submit", "--json", "-"], input.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    let control_room = Env::new();
    let before = vh_count(&control_room).await;

    let (proxy, seen) = recording_proxy(&bot.url());
    let out = control_room.run(&["pull", "--from", &proxy, "--api-key", KEY, "--once", "--page-size", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("pulled {N}, failed 0")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(vh_count(&control_room).await, before + N);
    assert_eq!(
        scalar_i64(
            &control_room.haven,
            "SELECT COUNT(DISTINCT description) FROM discoveries WHERE description LIKE 'Paged report %'"
        )
        .await,
        N
    );
    let queue = bot.queue().await;
    assert_eq!(queue.len() as i64, N);
    assert!(queue.iter().all(|(_, s, h)| s == "synced" && h.is_some()), "{queue:?}");

    // Pages of 3 (3 + 3 + 3 + 1), each from the cursor the last one ended
    // on, each acknowledged: not one big page.
    let seen = seen.lock().unwrap().clone();
    let exports: Vec<&String> = seen.iter().filter(|l| l.starts_with("GET /sync/export")).collect();
    let acks = seen.iter().filter(|l| l.starts_with("POST /sync/ack")).count();
    assert!(exports.len() >= 4, "{seen:#?}");
    assert!(exports.iter().all(|l| l.contains("limit=3")), "{seen:#?}");
    let cursors: Vec<i64> = exports
        .iter()
        .filter_map(|l| l.split("after=").nth(1))
        .filter_map(|rest| rest.split(['&', ' ']).next()?.parse().ok())
        .collect();
    assert_eq!(cursors.len(), exports.len(), "{seen:#?}");
    assert!(
        cursors.windows(2).all(|w| w[0] < w[1]),
        "cursors go forward: {cursors:?}"
    );
    assert_eq!(acks, 4, "one acknowledgement per non-empty page: {seen:#?}");
}

/// A VH-Database held by Control Room fails the puller's rounds, which
/// `--every` carries on from: nothing is written or acknowledged while it is
/// held, and everything once it is let go.
#[tokio::test]
async fn pull_every_recovers_when_a_locked_vh_database_is_released() {
    let bot = BotHost::start();
    bot.submit("Oculi", "planet:Erren", "Waits for Control Room").await;
    let mut control_room = Env::new();
    control_room.var("HAVEN_BUSY_TIMEOUT_MS", 200).var("NO_COLOR", 1);
    let before = vh_count(&control_room).await;
    let mut holder = connect(&control_room.haven).await;
    sqlx::raw_sql("BEGIN EXCLUSIVE").execute(&mut holder).await.unwrap();

    let cmd = control_room.command(&["pull", "--from", &bot.url(), "--api-key", KEY, "--every", "1"]);
    let (mut puller, log) = spawn_logged(cmd);
    // Twice, so a failed round is known to have been followed by another.
    let deadline = Instant::now() + Duration::from_secs(60);
    while log.lock().unwrap().matches("database is locked").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "no two rounds failed on the locked VH-Database within 60 s:\n{}",
            log.lock().unwrap()
        );
        assert!(
            puller.try_wait().unwrap().is_none(),
            "a locked VH-Database must not end the puller"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let queue = bot.queue().await;
    assert!(queue.iter().all(|(_, s, _)| s == "pending"), "{queue:?}");

    sqlx::raw_sql("ROLLBACK").execute(&mut holder).await.unwrap();
    drop(holder);
    let deadline = Instant::now() + Duration::from_secs(60);
    while bot.queue().await.iter().any(|(_, s, _)| s != "synced") {
        assert!(
            Instant::now() < deadline,
            "the puller never recovered after VH-Database was released:\n{}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(vh_count(&control_room).await, before + 1);
    assert!(
        puller.try_wait().unwrap().is_none(),
        "the puller stopped: {}",
        log.lock().unwrap()
    );
    assert!(stop(&mut puller).success(), "{}", log.lock().unwrap());
}

// ---------------------------------------------------------------------------
// HTTPS: a CA and a certificate for 127.0.0.1 made in the test, served by
// `keeper run` itself or by a TLS-terminating proxy in front of a plain one.

/// PEM files in a temp folder: a private CA, a server certificate for
/// 127.0.0.1 it signed, and that certificate's key.
struct Certs {
    dir: tempfile::TempDir,
    ca: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

impl Certs {
    fn new() -> Certs {
        Certs::signed_by("Keeper test CA")
    }

    /// Certificates from a CA of this name.
    fn signed_by(ca_name: &str) -> Certs {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
        let dir = tempfile::tempdir().expect("temp dir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, ca_name);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        // An IP address SAN: the puller connects to https://127.0.0.1:PORT.
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("server params");
        params.distinguished_name.push(DnType::CommonName, "keeper bot host");
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &issuer).expect("server certificate");
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write PEM");
            path
        };
        Certs {
            ca: write("ca.pem", ca_cert.pem()),
            cert: write("cert.pem", cert.pem()),
            key: write("key.pem", key.serialize_pem()),
            dir,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// rustls' configuration of a server with this certificate.
    fn server_config(&self) -> rustls::ServerConfig {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_file_iter(&self.cert)
            .expect("cert.pem")
            .collect::<Result<Vec<_>, _>>()
            .expect("certificates");
        let key = PrivateKeyDer::from_pem_file(&self.key).expect("key.pem");
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config")
    }
}

/// A bot host that serves its API over HTTPS itself.
fn tls_bot_host(certs: &Certs) -> BotHost {
    let (cert, key) = (certs.cert.display().to_string(), certs.key.display().to_string());
    let bot = BotHost::start_with(&[("SYNC_API_TLS_CERT", &cert), ("SYNC_API_TLS_KEY", &key)]);
    wait_for_log(&bot.log, "scheme=\"https\"", Duration::from_secs(10));
    bot
}

fn https_url(port: u16) -> String {
    format!("https://127.0.0.1:{port}")
}

#[tokio::test]
async fn pull_over_https_from_keepers_own_tls_listener() {
    let certs = Certs::new();
    let bot = tls_bot_host(&certs);
    bot.submit("Ixiezh HV", "moon:Getre Beta", "Over TLS").await;
    bot.submit("Oculi", "planet:Erren", "Also over TLS").await;
    let control_room = Env::new();
    let before = vh_count(&control_room).await;

    let ca = certs.ca.display().to_string();
    let out = pull_with(
        &control_room,
        &https_url(bot.port),
        &["--api-key", KEY, "--ca-cert", &ca],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("pulled 2, failed 0"));
    assert_eq!(vh_count(&control_room).await, before + 2);
    assert!(bot.queue().await.iter().all(|(_, s, h)| s == "synced" && h.is_some()));

    // The CA from the environment works as well as the flag.
    bot.submit("Oculi", "planet:Erren", "Third, CA from SYNC_CA_CERT").await;
    let mut control_room = control_room;
    control_room.var("SYNC_CA_CERT", &ca);
    let out = pull_with(&control_room, &https_url(bot.port), &["--api-key", KEY]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("pulled 1, failed 0"));
    assert_eq!(vh_count(&control_room).await, before + 3);

    // The TLS listener speaks only TLS: plain http to it gets nothing through.
    let out = pull(&control_room, &format!("http://127.0.0.1:{}", bot.port), Some(KEY));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot reach the sync API"), "{}", stderr(&out));
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_and_nothing_is_written_or_acknowledged() {
    let certs = Certs::new();
    let bot = tls_bot_host(&certs);
    let (discovery, _) = bot.submit("Oculi", "planet:Erren", "Must not cross").await;
    let control_room = Env::new();
    let before = vh_count(&control_room).await;
    let refusal = "the certificate of 127.0.0.1 is not trusted (UnknownIssuer): if it is self-signed or from a \
                   private CA, pass its CA with --ca-cert FILE";

    // No --ca-cert: only the system's roots, which do not know this CA.
    let out = pull(&control_room, &https_url(bot.port), Some(KEY));
    assert!(!out.status.success());
    assert!(stderr(&out).contains(refusal), "{}", stderr(&out));

    // Another CA than the one that signed the certificate: the same.
    let other = Certs::signed_by("Another private CA");
    let other_ca = other.ca.display().to_string();
    let out = pull_with(
        &control_room,
        &https_url(bot.port),
        &["--api-key", KEY, "--ca-cert", &other_ca],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains(refusal), "{}", stderr(&out));

    // With --every it stops too: a certificate does not become trusted by waiting.
    let err = pull_every_fails(
        &control_room,
        &https_url(bot.port),
        KEY,
        "against an untrusted certificate",
    );
    assert!(err.contains(refusal), "{err}");

    // A CA file that is not one is named, with the flag, before anything
    // is opened: a puller that never ran gets no keeper.db.
    let fresh = Env::new();
    let bogus = fresh.dir.path().join("bogus.pem");
    std::fs::write(&bogus, "not a certificate\n").unwrap();
    let out = pull_with(
        &fresh,
        &https_url(bot.port),
        &["--api-key", KEY, "--ca-cert", &bogus.display().to_string()],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("--ca-cert (SYNC_CA_CERT)") && err.contains("no certificate in it"),
        "{err}"
    );
    assert!(!fresh.keeper.exists(), "keeper.db was created:\n{err}");

    // Nothing written, nothing acknowledged, not even a failed attempt counted.
    assert_eq!(vh_count(&control_room).await, before);
    assert_eq!(
        queue_state(&bot.env.keeper, discovery).await,
        ("pending".into(), 0, None)
    );
    wait_for_log(&bot.log, "TLS handshake failed", Duration::from_secs(10));
}

/// A TLS-terminating proxy in front of a plain-HTTP API, as a hosting
/// platform's edge (Railway, Fly, Render) is: TLS in, plain TCP out to
/// `target`. Runs on its own thread and runtime; returns its port.
fn tls_terminating_proxy(certs: &Certs, target: u16) -> u16 {
    let config = std::sync::Arc::new(certs.server_config());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut client) = acceptor.accept(client).await else {
                        return;
                    };
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
        });
    });
    port
}

#[tokio::test]
async fn pull_over_https_through_a_tls_terminating_proxy() {
    let certs = Certs::new();
    // The bot host serves plain HTTP behind the platform's TLS edge.
    let bot = BotHost::start();
    wait_for_log(&bot.log, "scheme=\"http\"", Duration::from_secs(10));
    bot.submit("Ixiezh HV", "moon:Getre Beta", "Through the edge").await;
    let control_room = Env::new();
    let before = vh_count(&control_room).await;
    let edge = tls_terminating_proxy(&certs, bot.port);

    let ca = certs.ca.display().to_string();
    let out = pull_with(&control_room, &https_url(edge), &["--api-key", KEY, "--ca-cert", &ca]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("pulled 1, failed 0"));
    assert_eq!(vh_count(&control_room).await, before + 1);
    assert!(bot.queue().await.iter().all(|(_, s, h)| s == "synced" && h.is_some()));

    // https:// to a port that speaks plain HTTP is named for what it is.
    let out = pull_with(
        &control_room,
        &https_url(bot.port),
        &["--api-key", KEY, "--ca-cert", &ca],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("did not answer in TLS") && err.contains("use http://"),
        "{err}"
    );
}

#[test]
fn bad_tls_settings_stop_keeper_run_at_start_up_changing_nothing() {
    let certs = Certs::new();
    let other = Certs::new();
    let env = Env::new();
    let garbage = env.dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let missing = env.dir.path().join("missing.pem");
    let (cert, key) = (certs.path("cert.pem"), certs.path("key.pem"));
    // (the variables set, what the error must say)
    type Case<'a> = (Vec<(&'a str, String)>, Vec<String>);
    let cases: Vec<Case> = vec![
        (
            vec![("SYNC_API_TLS_CERT", cert.clone())],
            vec!["SYNC_API_TLS_CERT (in the environment) is set but SYNC_API_TLS_KEY is not".into()],
        ),
        (
            vec![("SYNC_API_TLS_KEY", key.clone())],
            vec!["SYNC_API_TLS_KEY (in the environment) is set but SYNC_API_TLS_CERT is not".into()],
        ),
        (
            vec![
                ("SYNC_API_TLS_CERT", missing.display().to_string()),
                ("SYNC_API_TLS_KEY", key.clone()),
            ],
            vec![format!(
                "SYNC_API_TLS_CERT (in the environment) = {:?}: cannot read the file",
                missing
            )],
        ),
        (
            vec![
                ("SYNC_API_TLS_CERT", garbage.display().to_string()),
                ("SYNC_API_TLS_KEY", key.clone()),
            ],
            vec![format!(
                "SYNC_API_TLS_CERT (in the environment) = {:?}: not a valid PEM file",
                garbage
            )],
        ),
        (
            // A certificate where the key should be.
            vec![("SYNC_API_TLS_CERT", cert.clone()), ("SYNC_API_TLS_KEY", cert.clone())],
            vec![
                "SYNC_API_TLS_KEY (in the environment)".into(),
                "no private key in it".into(),
            ],
        ),
        (
            // Another certificate's key.
            vec![
                ("SYNC_API_TLS_CERT", cert.clone()),
                ("SYNC_API_TLS_KEY", other.path("key.pem")),
            ],
            vec!["do not go together".into(), "the private key it was issued for".into()],
        ),
    ];
    for (vars, expected) in cases {
        let mut cmd = env.command(&["run"]);
        cmd.envs(vars.iter().map(|(k, v)| (*k, v.as_str())));
        let out = output_within(cmd, Duration::from_secs(60), "keeper run with bad TLS settings to exit");
        let err = stderr(&out);
        assert!(!out.status.success(), "{vars:?}: keeper run started:\n{err}");
        for text in &expected {
            assert!(err.contains(text.as_str()), "{vars:?}: expected {text:?} in:\n{err}");
        }
        assert!(!err.contains("Sync API available"), "{vars:?}: {err}");
        assert!(!env.keeper.exists(), "{vars:?}: keeper.db was created");
    }

    // From the old bot's .env, the file is named.
    std::fs::write(env.dir.path().join(".env"), format!("SYNC_API_TLS_CERT={cert}\n")).unwrap();
    let out = output_within(env.command(&["run"]), Duration::from_secs(60), "keeper run to exit");
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    let dotenv = env.dir.path().join(".env");
    assert!(
        err.contains(&format!(
            "SYNC_API_TLS_CERT (in {}) is set but SYNC_API_TLS_KEY is not",
            dotenv.display()
        )),
        "{err}"
    );
    assert!(!env.keeper.exists());
}
