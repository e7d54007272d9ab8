//! Remote mode end to end, real binaries over real HTTP on 127.0.0.1: a
//! "bot host" `keeper run` with `USE_HAVEN_DATABASE=false` and its own
//! keeper.db, and a "Control Room" `keeper pull` with its own keeper.db and
//! a copy of the sample VH-Database.

mod common;

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
        let mut env = Env::new();
        env.var("USE_HAVEN_DATABASE", "false").var("SYNC_API_KEY", KEY);
        let (child, port, log) = spawn_run(&env);
        BotHost { env, child, port, log }
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

/// `keeper pull --once` from the Control Room's environment.
fn pull(control_room: &Env, from: &str, key: Option<&str>) -> Output {
    let mut args = vec!["pull", "--from", from, "--once"];
    if let Some(k) = key {
        args.extend(["--api-key", k]);
    }
    // Plain log lines, so that tests can look for `field=value`.
    control_room
        .command(&args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run keeper pull")
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

#[tokio::test]
async fn items_that_fail_mapping_are_reported_and_stay_pending() {
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
    assert!(queue.contains(&(broken_queue, "pending".into(), None)), "{queue:?}");
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
    terminate(&mut puller);
    let status = puller.wait().expect("wait keeper pull");
    assert!(status.success(), "{status}");
}

/// Reads one HTTP request (head and body); returns its request line.
fn read_request(stream: &mut std::net::TcpStream) -> String {
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
    String::from_utf8_lossy(&data)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
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

    let out = pull(&control_room, "https://example.invalid", None);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("https is not supported"), "{}", stderr(&out));
}
