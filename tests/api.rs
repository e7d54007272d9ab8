//! The sync API through real HTTP on 127.0.0.1: the real `keeper run` on
//! temporary copies of real database files, with `SYNC_API_PORT=0` (the port
//! is read from the start-up line). Also: Swagger UI in headless Chromium,
//! and schemathesis checking the live server against its own document.

use crate::common;

use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// A running `keeper run`; stopped with SIGTERM when dropped.
struct Server {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
    key: Option<String>,
    agent: ureq::Agent,
}

impl Server {
    fn start(env: &Env) -> Server {
        let (child, port, log) = spawn_run(env);
        let agent = http_agent(Duration::from_secs(30));
        let key = env
            .vars
            .iter()
            .find(|(k, _)| k == "SYNC_API_KEY")
            .map(|(_, v)| v.clone());
        Server {
            child,
            port,
            log,
            key,
            agent,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends a request (with the API key, when the server has one).
    fn send(&self, method: &str, path: &str, body: Option<&[u8]>, key: Option<&str>) -> (u16, String, String) {
        let url = self.url(path);
        let key = key.or(self.key.as_deref());
        let with_key = |h: ureq::RequestBuilder<ureq::typestate::WithoutBody>| match key {
            Some(k) => h.header("X-API-Key", k),
            None => h,
        };
        let with_key_body = |h: ureq::RequestBuilder<ureq::typestate::WithBody>| match key {
            Some(k) => h.header("X-API-Key", k),
            None => h,
        };
        let response = match method {
            "GET" => with_key(self.agent.get(&url)).call(),
            "DELETE" => with_key(self.agent.delete(&url)).call(),
            "POST" | "PUT" => {
                let req = if method == "PUT" {
                    self.agent.put(&url)
                } else {
                    self.agent.post(&url)
                };
                let req = with_key_body(req).header("content-type", "application/json");
                match body {
                    Some(b) => req.send(b),
                    None => req.send_empty(),
                }
            }
            other => panic!("method {other}"),
        };
        let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = response
            .body_mut()
            .with_config()
            .limit(20 << 20)
            .read_to_string()
            .unwrap_or_else(|e| panic!("{method} {path}: {status}: cannot read the body: {e}"));
        (status, content_type, text)
    }

    /// A JSON answer with its status.
    fn json(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        let (status, content_type, text) = self.send(method, path, body.as_deref().map(str::as_bytes), None);
        assert!(
            content_type.starts_with("application/json"),
            "{method} {path}: {status} {content_type}: {text}"
        );
        let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"));
        (status, value)
    }

    fn get(&self, path: &str) -> Value {
        let (status, value) = self.json("GET", path, None);
        assert_eq!(status, 200, "GET {path}: {value}");
        value
    }

    /// `POST /discoveries` with header `Idempotency-Key`.
    fn post_keyed(&self, body: &Value, idempotency_key: &str) -> (u16, Value) {
        let mut response = self
            .agent
            .post(&self.url("/discoveries"))
            .header("content-type", "application/json")
            .header("Idempotency-Key", idempotency_key)
            .send(body.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("POST /discoveries: {e}\n{}", self.log()));
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (response.status().as_u16(), value)
    }

    /// `GET /health` with its HTTP status, whatever that is.
    fn health(&self) -> (u16, Value) {
        self.json("GET", "/health", None)
    }

    /// Waits until `/health` lists problem `kind` (or, with `present` false,
    /// no longer does); returns the last answer.
    fn wait_for_problem(&self, kind: &str, present: bool) -> (u16, Value) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, health) = self.health();
            let listed = health["problems"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["problem"] == kind));
            if listed == present {
                return (status, health);
            }
            assert!(
                Instant::now() < deadline,
                "/health never {} problem {kind}: {health}\n{}",
                if present { "listed" } else { "dropped" },
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `GET /metrics` as text.
    fn metrics(&self) -> String {
        let (status, _, text) = self.send("GET", "/metrics", None, None);
        assert_eq!(status, 200, "{text}");
        text
    }

    /// Waits until `GET /sync/items/{queue_id}` shows `state`.
    fn wait_for_state(&self, queue_id: i64, state: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let item = self.get(&format!("/sync/items/{queue_id}"));
            if item["item"]["sync_status"] == state {
                return item;
            }
            assert!(
                Instant::now() < deadline,
                "item {queue_id} never became {state}: {item}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

fn is_rfc3339_utc(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.ends_with('Z') && s.contains('T') && s.len() >= 20)
}

/// Every error is a JSON object with `status: error` and a message.
fn assert_error(status: u16, body: &Value, expected: u16, message_part: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["status"], "error", "{body}");
    let message = body["message"].as_str().unwrap_or_else(|| panic!("no message: {body}"));
    assert!(message.contains(message_part), "{message:?} lacks {message_part:?}");
}

#[tokio::test]
async fn guide_endpoints_answer_with_the_guide_shapes() {
    let mut env = Env::new();
    env.var("SYNC_INTERVAL", 1);
    let discovery_id = env.submit("🦗", "Oculi", "planet:Erren", "Glowing moth", &[]);
    let server = Server::start(&env);
    let synced = server.wait_for_state(1, "synced");
    assert_eq!(synced["item"]["discovery_id"], discovery_id);

    let health = server.get("/health");
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["bot_online"], false);
    assert_eq!(health["sync_worker_running"], true);
    assert!(is_rfc3339_utc(&health["timestamp"]), "{health}");
    assert_eq!(health["haven_db"]["source"], "haven_db_path", "{health}");
    assert_eq!(health["haven_db"]["path"], env.haven.display().to_string(), "{health}");

    let status = server.get("/sync/status");
    assert_eq!(status["status"], "ok");
    let worker = &status["sync_worker"];
    assert_eq!(worker["is_running"], true);
    assert_eq!(worker["sync_interval"], 1);
    assert!(worker["uptime_seconds"].is_u64());
    assert!(is_rfc3339_utc(&worker["last_sync_time"]), "{status}");
    assert_eq!(
        status["queue"],
        json!({"pending": 0, "syncing": 0, "synced": 1, "failed": 0})
    );
    assert_eq!(status["totals"], json!({"total_synced": 1, "total_failed": 0}));

    let failed = server.get("/sync/failed?limit=20");
    assert_eq!(failed, json!({"status": "ok", "failed_items": [], "count": 0}));

    let stats = server.get("/sync/statistics");
    assert_eq!(stats["status"], "ok");
    assert_eq!(stats["queue"]["synced"], 1);
    assert_eq!(stats["synced_ever"], 1);
    assert_eq!(stats["synced_last_hour"], 1);
    assert_eq!(stats["synced_last_day"], 1);
    assert_eq!(stats["latency_last_day"]["count"], 1);
    assert!(stats["latency_last_day"]["p95_seconds"].is_number(), "{stats}");
    assert_eq!(stats["oldest_pending"], Value::Null);

    // The item in detail: its discovery row and the plugin that synced it.
    let item = &synced["item"];
    assert_eq!(item["sync_attempts"], 1);
    assert!(item["haven_discovery_id"].is_i64());
    assert!(is_rfc3339_utc(&item["created_at"]) && is_rfc3339_utc(&item["synced_at"]));
    assert_eq!(item["provenance"]["name"], "keeper-default-mapper");
    assert_eq!(synced["discovery"]["description"], "Glowing moth");
    assert_eq!(synced["discovery"]["discovery_type"], "🦗");

    let plugins = server.get("/plugins");
    assert_eq!(plugins["active"]["name"], "keeper-default-mapper");
    assert_eq!(plugins["active"]["status"], "active");
    assert_eq!(plugins["active"]["hash"], item["provenance"]["hash"]);
    assert!(plugins["history"].is_array() && plugins["rejected"].is_array());

    let (code, content_type, metrics) = server.send("GET", "/metrics", None, None);
    assert_eq!(code, 200);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    for line in [
        "keeper_sync_queue_items{state=\"synced\"} 1",
        "keeper_sync_queue_items{state=\"pending\"} 0",
        "keeper_sync_synced_total 1",
        "keeper_sync_latency_seconds_bucket{le=\"+Inf\"} 1",
        "keeper_sync_latency_seconds_count 1",
        "# TYPE keeper_sync_latency_seconds histogram",
        "keeper_sync_worker_running 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "no {line:?} in\n{metrics}");
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("keeper_sync_plugin_info{name=\"keeper-default-mapper\",version=\"")),
        "{metrics}"
    );

    // Not exposed without a key, and it says so.
    let log = server.log();
    assert!(
        log.contains(&format!("🌐 Sync API available on port {}", server.port)),
        "{log}"
    );
    assert!(!log.contains("without an API key"), "{log}");
}

#[tokio::test]
async fn a_failed_item_is_retried_through_the_api_and_then_syncs() {
    let mut env = Env::new();
    env.var("SYNC_INTERVAL", 1).var("SYNC_MAX_ATTEMPTS", 1);
    let aside = env.dir.path().join("aside.db");
    std::fs::rename(&env.haven, &aside).unwrap();
    env.submit("🆕", "Oculi", "planet:Erren", "New biome", &[]);
    env.submit("🆕", "Oculi", "planet:Erren", "Second biome", &[]);
    let server = Server::start(&env);
    server.wait_for_state(1, "max_retries_exceeded");
    server.wait_for_state(2, "max_retries_exceeded");

    let failed = server.get("/sync/failed?limit=20");
    assert_eq!(failed["count"], 2);
    let first = failed["failed_items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["queue_id"] == 1)
        .unwrap()
        .clone();
    let keys: Vec<&str> = first.as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected = vec![
        "queue_id",
        "discovery_id",
        "sync_attempts",
        "sync_error",
        "system_name",
        "location",
        "discovery_type",
        "username",
    ];
    expected.sort_unstable();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(keys, expected, "the guide's failed_items fields");
    assert_eq!(first["sync_attempts"], 1);
    assert_eq!(first["discovery_type"], "🆕");
    assert!(
        first["sync_error"]
            .as_str()
            .unwrap()
            .starts_with("VH-Database not accessible")
    );
    assert_eq!(server.get("/sync/failed?limit=1")["count"], 1);
    let status = server.get("/sync/status");
    assert_eq!(status["queue"]["failed"], 2);
    assert_eq!(status["totals"]["total_failed"], 2);
    let stats = server.get("/sync/statistics");
    assert_eq!(
        stats["errors"],
        json!([{"sync_status": "max_retries_exceeded", "error_class": "unavailable", "count": 2}])
    );
    assert_eq!(stats["failed_attempts_by_class"]["unavailable"], 2);
    let (_, _, metrics) = server.send("GET", "/metrics", None, None);
    assert!(
        metrics.contains("keeper_sync_failed_items{error_class=\"unavailable\"} 2\n"),
        "{metrics}"
    );

    std::fs::rename(&aside, &env.haven).unwrap();
    let (code, body) = server.json("POST", "/sync/retry/1", None);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "ok", "message": "Queue item 1 marked for retry"})
    );
    let synced = server.wait_for_state(1, "synced");
    assert_eq!(synced["item"]["sync_error"], Value::Null);
    assert_eq!(
        server.get("/sync/items/2")["item"]["sync_status"],
        "max_retries_exceeded"
    );

    let (code, body) = server.json("POST", "/sync/retry", None);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["retried"], 1);
    server.wait_for_state(2, "synced");
    assert_eq!(server.get("/sync/status")["queue"]["synced"], 2);

    // A synced item cannot be retried; an unknown one does not exist.
    let (code, body) = server.json("POST", "/sync/retry/1", None);
    assert_error(code, &body, 409, "already synced");
    let (code, body) = server.json("POST", "/sync/retry/999", None);
    assert_error(code, &body, 404, "queue item 999 does not exist");
}

#[tokio::test]
async fn bad_requests_get_json_errors_with_the_right_codes() {
    let env = Env::new();
    let server = Server::start(&env);

    for (method, path, code, part) in [
        ("GET", "/sync/items/424242", 404, "queue item 424242 does not exist"),
        ("POST", "/sync/retry/424242", 404, "queue item 424242 does not exist"),
        ("GET", "/sync/items/abc", 400, "queue_id"),
        ("POST", "/sync/retry/12x", 400, "queue_id"),
        ("GET", "/sync/items/0", 400, "queue_id"),
        ("GET", "/sync/items/99999999999999999999999", 400, "queue_id"),
        ("GET", "/sync/failed?limit=abc", 400, "limit"),
        ("GET", "/sync/failed?limit=0", 400, "limit"),
        ("GET", "/sync/failed?limit=-5", 400, "limit"),
        ("GET", "/sync/export?after=x", 400, "after"),
        ("GET", "/no/such/endpoint", 404, "no endpoint GET /no/such/endpoint"),
        ("DELETE", "/sync/status", 405, "does not accept DELETE"),
    ] {
        let (status, body) = server.json(method, path, None);
        assert_error(status, &body, code, part);
    }

    // Bodies: malformed JSON, a valid JSON that is no report, a bad field.
    for (body, part) in [
        (&b"{not json"[..], "parse request payload"),
        (&b"[1, 2]"[..], "a report must be a JSON object"),
        (&b""[..], "JSON object"),
    ] {
        let (status, _, text) = server.send("POST", "/discoveries", Some(body), None);
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_error(status, &value, 400, part);
    }
    let mut bad = fossil_report("Fossil");
    bad["location"] = json!("nowhere");
    let (status, body) = server.json("POST", "/discoveries", Some(bad));
    assert_error(status, &body, 400, "location");
    let mut bad = fossil_report("Fossil");
    bad["hull_condition"] = json!("Scratched");
    let (status, body) = server.json("POST", "/discoveries", Some(bad));
    assert_error(status, &body, 400, "hull_condition");
    let (status, body) = server.json("POST", "/sync/ack", Some(json!({"items": [{"queue_id": "x"}]})));
    // The field's type and the value that broke it.
    assert_error(status, &body, 400, r#"Expected input type "integer_int64", found "x""#);
    let (status, body) = server.json("POST", "/sync/ack", Some(json!({"items": []})));
    assert_error(status, &body, 400, "field `items` verification failed. minItems(1)");
    assert_eq!(
        scalar_i64(&env.keeper, "SELECT COUNT(*) FROM discoveries").await,
        0,
        "nothing was written"
    );

    // Over 1 MiB: refused on its declared length, before it is read. (Raw
    // TCP: the server answers without reading the body, and an HTTP client
    // still sending it would see a broken pipe instead of the answer.)
    {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        write!(
            tcp,
            "POST /discoveries HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            (1 << 20) + 1
        )
        .unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap();
        assert_error(413, &body, 413, "larger than 1048576 bytes");
    }

    // The server is still fine.
    assert_eq!(server.get("/health")["status"], "healthy");
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[tokio::test]
async fn with_an_api_key_every_endpoint_but_health_needs_it() {
    let mut env = Env::new();
    // Loopback only in tests (a key alone would bind 0.0.0.0).
    env.var("SYNC_API_KEY", "s3cret-key").var("SYNC_API_HOST", "127.0.0.1");
    let server = Server::start(&env);
    let document: Value = serde_json::from_str(&server.send("GET", "/openapi.json", None, Some("")).2).unwrap();
    assert_eq!(
        document["components"]["securitySchemes"]["ApiKey"],
        json!({"type": "apiKey", "name": "X-API-Key", "in": "header",
               "description": "Required on every operation but /health when the server has SYNC_API_KEY set."})
    );
    let mut checked = 0;
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let method = method.to_uppercase();
            let concrete = path
                .replace("{queue_id}", "1")
                .replace("{id}", "0123abcd")
                .replace("{hash}", &"0".repeat(64))
                .replace("{name}", "probe");
            let body = (method == "POST" || method == "PUT").then_some(&b"{}"[..]);
            if path == "/health" {
                assert!(operation.get("security").is_none(), "/health is open");
                let (status, _, _) = server.send(&method, &concrete, body, Some(""));
                assert_eq!(status, 200);
                continue;
            }
            assert_eq!(operation["security"], json!([{"ApiKey": []}]), "{method} {path}");
            for wrong in [None, Some("wrong"), Some("s3cret-ke"), Some("S3CRET-KEY")] {
                let (status, _, text) = match wrong {
                    None => {
                        let url = server.url(&concrete);
                        let mut r = match method.as_str() {
                            "GET" => server.agent.get(&url).call().unwrap(),
                            "PUT" => server.agent.put(&url).send_empty().unwrap(),
                            _ => server.agent.post(&url).send_empty().unwrap(),
                        };
                        (
                            r.status().as_u16(),
                            String::new(),
                            r.body_mut().read_to_string().unwrap(),
                        )
                    }
                    Some(k) => server.send(&method, &concrete, body, Some(k)),
                };
                let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
                assert_error(status, &value, 401, "X-API-Key");
            }
            // With the key: what the operation itself answers (queue item 1
            // does not exist; `{}` is not a valid report or acknowledgement;
            // this host writes VH-Database, so it exports nothing; there is
            // no evidence image 0123abcd; `{}` is not a plugin; no plugin
            // version 00…0 is kept; nothing was active before to roll back to; a
            // canary needs its share).
            let expected = match (method.as_str(), path.as_str()) {
                ("POST", "/sync/retry/{queue_id}")
                | ("GET", "/sync/items/{queue_id}")
                | ("GET", "/evidence/{id}")
                | ("POST", "/plugins/versions/{hash}/activate")
                | ("GET", "/plugins/versions/{hash}/preview") => 404,
                ("POST", "/discoveries") | ("POST", "/sync/ack") | ("POST", "/sync/fail") => 400,
                ("PUT", "/plugins/{name}") | ("POST", "/plugins/preview") => 422,
                // No share given (`{}`): refused before anything is read.
                ("PUT", "/plugins/{name}/canary") | ("POST", "/plugins/versions/{hash}/canary") => 400,
                ("GET", "/sync/export") | ("POST", "/plugins/rollback") => 409,
                ("GET", _) | ("POST", "/sync/retry") => 200,
                _ => panic!("{method} {path}: no expected status; add the new operation here"),
            };
            let (status, _, text) = server.send(&method, &concrete, body, Some("s3cret-key"));
            assert_eq!(status, expected, "{method} {path} with the key: {text}");
            checked += 1;
        }
    }
    assert!(checked >= 11, "only {checked} operations checked");
    assert_eq!(server.get("/sync/status")["status"], "ok");
    // Swagger UI and the document are public (the document is in the repository).
    assert_eq!(server.send("GET", "/docs", None, Some("")).0, 200);
}

#[tokio::test]
async fn posted_discovery_is_stored_queued_and_synced_at_once() {
    let mut env = Env::new();
    // Only the wake-up can make it sync within the test's time.
    env.var("SYNC_INTERVAL", 3600).var("KEEPER_HOST_NAME", "bot-host-1");
    // The worker's first pass (at start) syncs this one; the next pass is
    // an hour away, unless a submission wakes the worker.
    env.submit("🦴", "Oculi", "planet:Erren", "Before the start", &[]);
    let server = Server::start(&env);
    server.wait_for_state(1, "synced");
    let (status, body) = server.json("POST", "/discoveries", Some(fossil_report("Ancient spine")));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "ok");
    let queue_id = body["queue_id"].as_i64().unwrap();
    let discovery_id = body["discovery_id"].as_i64().unwrap();
    let item = server.wait_for_state(queue_id, "synced");
    assert_eq!(item["item"]["discovery_id"], discovery_id);
    assert_eq!(item["discovery"]["description"], "Ancient spine");
    assert_eq!(item["discovery"]["user_id"], "123456789");
    // Which host claimed and delivered it, in the item and in the list.
    assert_eq!(item["item"]["claimed_by"], "bot-host-1", "{item}");
    let listed = server.get("/sync/items?state=synced");
    let claimers: Vec<&Value> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["claimed_by"])
        .collect();
    assert_eq!(claimers, [&json!("bot-host-1"), &json!("bot-host-1")], "{listed}");
    let mut conn = connect(&env.haven).await;
    let (species, by): (String, String) =
        sqlx::query_as("SELECT species_type, discovered_by FROM discoveries WHERE description = 'Ancient spine'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!((species.as_str(), by.as_str()), ("Vertebrate", "Explorer#1234"));
}

#[tokio::test]
async fn remote_mode_exports_pending_items_and_takes_acknowledgements() {
    let mut env = Env::new();
    env.var("USE_HAVEN_DATABASE", "false");
    for n in 0..3 {
        env.submit("💎", "Oculi", "planet:Erren", &format!("Deposit {n}"), &[]);
    }
    let server = Server::start(&env);
    let health = server.get("/health");
    assert_eq!(health["status"], "healthy", "no worker is expected in remote mode");
    assert_eq!(health["sync_worker_running"], false);
    assert!(
        health["haven_db"].is_null(),
        "remote mode writes no VH-Database: {health}"
    );

    let page = server.get("/sync/export?after=0&limit=2");
    assert_eq!(page["count"], 2);
    assert_eq!(page["has_more"], true);
    assert_eq!(page["next_after"], 2);
    let first = &page["items"][0];
    assert_eq!(first["queue_id"], 1);
    assert_eq!(first["discovery"]["description"], "Deposit 0");
    assert_eq!(first["discovery"]["id"], first["discovery_id"]);
    assert!(is_rfc3339_utc(&first["created_at"]));
    let page2 = server.get("/sync/export?after=2&limit=2");
    assert_eq!(page2["count"], 1);
    assert_eq!(page2["has_more"], false);
    assert_eq!(page2["next_after"], 3);
    assert_eq!(server.get("/sync/export?after=3")["next_after"], 3);

    let acks = json!({"items": [
        {"queue_id": 1, "haven_discovery_id": 501},
        {"queue_id": 2, "haven_discovery_id": 502},
        {"queue_id": 77, "haven_discovery_id": 503},
    ]});
    let (status, body) = server.json("POST", "/sync/ack", Some(acks.clone()));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["acknowledged"], json!([1, 2]));
    assert_eq!(body["unknown"], json!([77]));
    let item = server.get("/sync/items/1");
    assert_eq!(item["item"]["sync_status"], "synced");
    assert_eq!(item["item"]["haven_discovery_id"], 501);
    // Delivered by a puller: no host of this store ever claimed it.
    assert!(item["item"]["claimed_by"].is_null(), "{item}");
    assert_eq!(
        server.get("/sync/status")["queue"],
        json!({"pending": 1, "syncing": 0, "synced": 2, "failed": 0})
    );
    // Acknowledged items are no longer exported; repeating changes nothing.
    assert_eq!(server.get("/sync/export")["items"][0]["queue_id"], 3);
    let (_, again) = server.json("POST", "/sync/ack", Some(acks));
    assert_eq!(again["acknowledged"], json!([]));
    assert_eq!(again["already_synced"], json!([1, 2]));
    assert_eq!(server.get("/sync/items/2")["item"]["haven_discovery_id"], 502);
}

/// An old bot's keeper.db with a queue in every state: the counters that
/// /sync/status reads start from the rows that are there.
#[tokio::test]
async fn counts_of_an_adopted_keeper_db_come_from_its_rows() {
    let env = Env::new();
    std::fs::copy(KEEPER_LEGACY, &env.keeper).unwrap();
    set_writable(&env.keeper);
    exec(&env.keeper, OLD_BOT_SYNC_QUEUE).await;
    exec(
        &env.keeper,
        "INSERT INTO sync_queue (discovery_id, sync_status, sync_error, synced_at) VALUES
            (1, 'synced', NULL, '2025-11-13 20:30:00'), (2, 'synced', NULL, '2025-11-13 20:31:00'),
            (3, 'max_retries_exceeded', 'VH-Database not accessible: [Errno 2]', NULL),
            (4, NULL, NULL, NULL), (5, 'failed', 'a state keeper never had', NULL);
         UPDATE sync_queue SET sync_attempts = NULL WHERE discovery_id IN (4, 5);",
    )
    .await;
    let mut env = env;
    // No worker (remote mode): it would claim the pending item while the
    // counts are read, and they would be read mid-pass.
    env.var("USE_HAVEN_DATABASE", "false");
    let server = Server::start(&env);
    let status = server.get("/sync/status");
    // keeper.db migration 19: the old bot's NULL state is pending, its NULL
    // attempts none, a state keeper does not know is failed and says so.
    assert_eq!(
        status["queue"],
        json!({"pending": 1, "syncing": 0, "synced": 2, "failed": 2}),
        "{status}"
    );
    assert_eq!(
        scalar_i64(
            &env.keeper,
            "SELECT COUNT(*) FROM sync_queue WHERE sync_status = 'pending'"
        )
        .await,
        1
    );
    let unknown = server.get("/sync/items/5")["item"].clone();
    assert_eq!(unknown["sync_status"], "max_retries_exceeded", "{unknown}");
    assert_eq!(unknown["sync_attempts"], 0, "{unknown}");
    assert_eq!(
        unknown["sync_error"], "the old bot left it in state 'failed': a state keeper never had",
        "{unknown}"
    );
    // From now on, keeper.db refuses what the old bot allowed.
    let mut conn = connect(&env.keeper).await;
    for bad in [
        "INSERT INTO sync_queue (discovery_id, sync_status) VALUES (6, NULL)",
        "INSERT INTO sync_queue (discovery_id, sync_status) VALUES (6, 'failed')",
        "UPDATE sync_queue SET sync_attempts = NULL WHERE id = 1",
    ] {
        let refused = sqlx::query(bad).execute(&mut conn).await.expect_err(bad).to_string();
        assert!(refused.contains("constraint failed"), "{bad}: {refused}");
    }
    assert_eq!(server.get("/sync/status")["queue"], status["queue"], "nothing changed");
    // The legacy row's item view copes with the old bot's values.
    let item = server.get("/sync/items/3");
    assert_eq!(item["item"]["error_class"], Value::Null);
    assert_eq!(server.get("/sync/statistics")["errors"][0]["error_class"], "unknown");
}

/// The CLI prints the API's shapes.
#[tokio::test]
async fn cli_json_has_the_api_shapes() {
    let mut env = Env::new();
    // VH-Database named but missing: one item fails for good, one synced
    // item is impossible, one stays pending.
    env.var("SYNC_MAX_ATTEMPTS", 1);
    std::fs::remove_file(&env.haven).unwrap();
    env.submit("🦴", "Oculi", "planet:Erren", "Fossil", &[]);
    assert!(env.ok(&["sync", "--once"]).contains("synced 0, failed 1"));
    env.submit("🦴", "Oculi", "planet:Erren", "Second fossil", &[]);
    // Remote mode: the server runs no worker, so the figures hold still
    // and the CLI and the API must agree on every value, not just the shape.
    env.var("USE_HAVEN_DATABASE", "false");
    let mut status: Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    let failed: Value = serde_json::from_str(&env.ok(&["failed", "--json"])).unwrap();
    assert_eq!(
        status["queue"],
        json!({"pending": 1, "syncing": 0, "synced": 0, "failed": 1})
    );
    assert_eq!(failed["count"], 1, "{failed}");
    let server = Server::start(&env);
    let mut api_status = server.get("/sync/status");
    status.as_object_mut().unwrap().remove("sync_worker");
    api_status.as_object_mut().unwrap().remove("sync_worker");
    // `keeper status` adds the items waiting out a backoff (none here: the
    // failed one gave up at once); /sync/status keeps the guide's shape.
    let waiting = status.as_object_mut().unwrap().remove("waiting");
    assert_eq!(
        waiting,
        Some(json!({"count": 0, "next_retry_at": null, "last_error_classes": {}}))
    );
    assert_eq!(status, api_status);
    assert_eq!(failed, server.get("/sync/failed"));
}

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[tokio::test]
async fn committed_openapi_document_is_what_the_code_generates() {
    let env = Env::new();
    let generated = env.ok(&["openapi"]);
    let committed = std::fs::read_to_string(repo_file("openapi/openapi.json")).unwrap_or_default();
    assert!(
        generated.trim_end() == committed.trim_end(),
        "openapi/openapi.json is not what the code generates; regenerate it with\n    \
         cargo run -q -- openapi > openapi/openapi.json\nand commit it"
    );
    assert!(!env.keeper.exists(), "`keeper openapi` opens no database");
    let server = Server::start(&env);
    let served = server.send("GET", "/openapi.json", None, None).2;
    let served: Value = serde_json::from_str(&served).unwrap();
    let generated: Value = serde_json::from_str(&generated).unwrap();
    assert_eq!(served, generated);
    for path in [
        "/health",
        "/sync/status",
        "/sync/statistics",
        "/sync/failed",
        "/sync/retry/{queue_id}",
        "/sync/retry",
        "/sync/items/{queue_id}",
        "/sync/items",
        "/sync/failures",
        "/discoveries",
        "/plugins",
        "/sync/export",
        "/sync/ack",
        "/metrics",
    ] {
        assert!(served["paths"].get(path).is_some(), "{path} is not documented");
    }
}

#[tokio::test]
async fn swagger_ui_in_a_browser_lists_the_endpoints() {
    let chromium = chromium();
    let env = Env::new();
    let server = Server::start(&env);
    let profile = env.dir.path().join("chromium-profile");
    let mut chromium_cmd = std::process::Command::new(&chromium);
    chromium_cmd
        .args(common::browser::HEADLESS)
        .args(["--virtual-time-budget=15000", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(server.url("/docs"));
    let out = output_within(
        chromium_cmd,
        Duration::from_secs(120),
        "headless chromium to render /docs",
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Rendered by Swagger UI's script, not present in the served HTML.
    assert!(
        dom.contains("opblock-summary-path"),
        "Swagger UI did not render:\n{dom:.2000}"
    );
    for path in [
        "/health",
        "/sync/status",
        "/sync/statistics",
        "/sync/failed",
        "/sync/retry/{queue_id}",
        "/sync/items/{queue_id}",
        "/discoveries",
        "/plugins",
        "/sync/export",
        "/sync/ack",
        "/metrics",
    ] {
        let shown = format!("data-path=\"{path}\"");
        assert!(dom.contains(&shown), "the page does not list {path}");
    }
    assert!(dom.contains("Keeper sync API"));
}

#[tokio::test]
async fn live_server_conforms_to_its_openapi_document() {
    let schemathesis = tool(
        "KEEPER_SCHEMATHESIS",
        "schemathesis",
        &[repo_file("target/tools/schemathesis/bin/schemathesis")],
    );
    let mut env = Env::new();
    env.var("SYNC_API_KEY", "fuzz-key").var("SYNC_API_HOST", "127.0.0.1");
    env.var("SYNC_INTERVAL", 1).var("SYNC_MAX_ATTEMPTS", 1);
    env.submit("🦴", "Oculi", "planet:Erren", "Fossil", &[]);
    let server = Server::start(&env);
    let mut fuzz = std::process::Command::new(&schemathesis);
    fuzz.current_dir(env.dir.path())
        .args(["--no-color", "run", &server.url("/openapi.json")])
        .args(["--checks", "all"])
        // Valid-by-schema reports may still break a rule the schema cannot
        // state (e.g. a field that belongs to another discovery type): 400
        // is right there, so "positive data must be accepted" does not hold.
        .args(["--exclude-checks", "positive_data_acceptance"])
        .args(["--header", "X-API-Key: fuzz-key"])
        // One worker: with two, Debian 12's Python 3.11 fails at random
        // inside Hypothesis ("SystemError: AST constructor recursion depth
        // mismatch", a CPython thread-safety bug of ast.parse).
        .args(["--max-examples", "30", "--workers", "1", "--seed", "1"])
        .args(["--request-timeout", "10", "--max-time", "90"])
        .args(["--suppress-health-check", "all"]);
    // --max-time bounds the fuzzing; this bounds a schemathesis that hangs.
    let out = output_within(fuzz, Duration::from_secs(300), "schemathesis to finish");
    // Its report repeats whole request bodies (up to megabytes): keep the
    // failure titles and the summary.
    let report: String = String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .filter(|l| l.len() < 400)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(out.status.success(), "schemathesis found problems:\n{report}");
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

/// A client generated from the committed document by openapi-python-client
/// (as a Control Room developer would) drives remote mode against a live
/// server: submit, page through the export, acknowledge, read back, and a
/// 404 parsed as the typed error model. The generator must not warn: a
/// warning means part of the API is missing from the generated client.
#[tokio::test]
async fn a_generated_python_client_drives_remote_mode() {
    let generator = tool(
        "KEEPER_OPENAPI_PYTHON_CLIENT",
        "openapi-python-client",
        &[repo_file("target/tools/schemathesis/bin/openapi-python-client")],
    );
    // The generator's own venv has the client's dependencies (httpx, attrs)
    // and ruff, which it runs on what it generates.
    let bin = generator.parent().expect("the generator's folder").to_owned();
    let python = bin.join("python");
    let path = std::env::join_paths(
        std::iter::once(bin.clone()).chain(std::env::var_os("PATH").iter().flat_map(std::env::split_paths)),
    )
    .expect("PATH");
    let work = tempfile::tempdir().expect("temp dir");
    let mut generate = std::process::Command::new(&generator);
    generate
        .current_dir(work.path())
        .env("PATH", &path)
        .args(["generate", "--meta", "none", "--output-path", "keeper_client", "--path"])
        .arg(repo_file("openapi/openapi.json"))
        .arg("--config")
        .arg(repo_file("tests/clients/openapi-python-client.yaml"));
    let out = output_within(generate, Duration::from_secs(120), "openapi-python-client generate");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(out.status.success(), "openapi-python-client failed:\n{said}");
    assert!(
        !said.contains("Warning") && !said.contains("WARNING") && !said.contains("Unable to process"),
        "openapi-python-client warned about the document:\n{said}"
    );

    let mut env = Env::new();
    env.var("USE_HAVEN_DATABASE", "false").var("SYNC_API_KEY", "client-key");
    env.var("SYNC_API_HOST", "127.0.0.1");
    let server = Server::start(&env);
    let mut script = std::process::Command::new(&python);
    script
        .current_dir(work.path())
        .env("PYTHONPATH", work.path())
        .arg(repo_file("tests/clients/generated_client.py"))
        .args([&server.url(""), "client-key"]);
    let out = output_within(script, Duration::from_secs(120), "the generated client's script");
    assert!(
        out.status.success(),
        "the generated client failed:\n{}\nserver log:\n{}",
        stderr(&out),
        server.log()
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("the script prints JSON");
    let created: Vec<i64> = serde_json::from_value(seen["created"].clone()).unwrap();
    assert_eq!(created.len(), 2, "{seen}");
    assert_eq!(seen["pages"], 3, "two pages of one item, then the end: {seen}");
    assert_eq!(seen["acknowledged"], seen["exported"], "{seen}");
    assert_eq!(seen["item"]["sync_status"], "synced", "{seen}");
    assert_eq!(seen["item"]["provenance"], "generated-client", "{seen}");
    assert_eq!(seen["not_found"]["status"], "error", "{seen}");
    assert_eq!(seen["not_found"]["error"], "not_found", "{seen}");
    // What the client did is what keeper.db holds.
    let synced = query_i64(
        &env.keeper,
        "SELECT COUNT(*) FROM sync_queue WHERE sync_status = 'synced' AND haven_discovery_id IN (9001, 9002)",
    )
    .await;
    assert_eq!(synced, 2);
}

/// Benchmark, not a check: `/sync/status` on a queue of 1,000,000 items
/// against the full scan it replaced. Run with
/// `cargo test --test api -- --ignored --nocapture status_on_a_million_items`.
#[tokio::test]
#[ignore = "benchmark: run by hand"]
async fn status_on_a_million_items() {
    let mut env = Env::new();
    env.ok(&["sync", "--once"]); // creates keeper.db (`status` only reads one)
    env.var("USE_HAVEN_DATABASE", "false");
    let started = Instant::now();
    exec(
        &env.keeper,
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000)
         INSERT INTO sync_queue (discovery_id, sync_status)
         SELECT i, CASE i % 10 WHEN 0 THEN 'max_retries_exceeded' WHEN 1 THEN 'pending' ELSE 'synced' END FROM n",
    )
    .await;
    println!(
        "1,000,000 queue rows inserted (counters kept by trigger) in {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let rows = rows(
        &env.keeper,
        "SELECT sync_status, COUNT(*) FROM sync_queue GROUP BY sync_status",
    )
    .await;
    println!(
        "full scan GROUP BY sync_status: {:?} ({} states)",
        started.elapsed(),
        rows.len()
    );
    let server = Server::start(&env);
    let started = Instant::now();
    const N: u32 = 200;
    let mut status = Value::Null;
    for _ in 0..N {
        status = server.get("/sync/status");
    }
    println!("GET /sync/status: {:?} per request over {N}", started.elapsed() / N);
    for path in ["/metrics", "/sync/statistics", "/sync/failed?limit=20"] {
        let started = Instant::now();
        let (code, _, _) = server.send("GET", path, None, None);
        assert_eq!(code, 200);
        println!("GET {path}: {:?}", started.elapsed());
    }
    assert_eq!(
        status["queue"],
        json!({"pending": 100000, "syncing": 0, "synced": 800000, "failed": 100000})
    );
}

/// The problem of kind `kind` in a `/health` answer.
fn problem<'a>(health: &'a Value, kind: &str) -> &'a Value {
    health["problems"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["problem"] == kind))
        .unwrap_or_else(|| panic!("no problem {kind}: {health}"))
}

#[tokio::test]
async fn health_names_a_missing_vh_database_and_failing_passes_and_recovers() {
    let mut env = Env::new();
    // Named but missing: not created, items wait.
    let missing = env.dir.path().join("later").join("VH-Database.db");
    env.var("HAVEN_DB_PATH", missing.display()).var("SYNC_INTERVAL", 1);
    let server = Server::start(&env);
    let (status, health) = server.health();
    assert_eq!((status, health["status"].as_str()), (200, Some("healthy")), "{health}");
    assert_eq!(health["problems"], json!([]));
    assert!(server.metrics().contains("keeper_health_status 0\n"));

    let (status, created) = server.json("POST", "/discoveries", Some(fossil_report("Spine in the dark")));
    assert_eq!(status, 201, "{created}");
    let (status, health) = server.wait_for_problem("sync_passes_failing", true);
    assert_eq!(status, 200, "degraded keeps 200 for old monitors: {health}");
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["sync_worker_running"], true);
    assert_eq!(health["bot_online"], false);
    assert!(is_rfc3339_utc(&health["timestamp"]), "{health}");
    let vh = problem(&health, "vh_database_unreachable");
    assert!(is_rfc3339_utc(&vh["since"]), "{vh}");
    let message = vh["message"].as_str().unwrap();
    assert!(message.starts_with("VH-Database unreachable since "), "{message}");
    assert!(message.contains("VH-Database"), "{message}");
    let passes = problem(&health, "sync_passes_failing")["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(passes.starts_with("the last "), "{passes}");

    let metrics = server.metrics();
    for line in [
        "keeper_health_status 1\n",
        "keeper_health_problem{problem=\"vh_database_unreachable\"} 1\n",
        "keeper_health_problem{problem=\"sync_passes_failing\"} 1\n",
        "keeper_health_problem{problem=\"keeper_db_not_writable\"} 0\n",
        "keeper_vh_database_unreachable_since_timestamp_seconds ",
    ] {
        assert!(metrics.contains(line), "{line:?} missing:\n{metrics}");
    }
    assert!(!metrics.contains("keeper_sync_failed_passes 0\n"), "{metrics}");

    // VH-Database appears: the item syncs and every problem goes away.
    std::fs::create_dir_all(missing.parent().unwrap()).unwrap();
    std::fs::copy(VH_SAMPLE, &missing).unwrap();
    set_writable(&missing);
    server.wait_for_state(created["queue_id"].as_i64().unwrap(), "synced");
    let (status, health) = server.wait_for_problem("sync_passes_failing", false);
    assert_eq!((status, health["status"].as_str()), (200, Some("healthy")), "{health}");
    assert!(server.metrics().contains("keeper_sync_failed_passes 0\n"));
}

#[tokio::test]
async fn health_says_when_keeper_db_cannot_be_written_or_read() {
    use sqlx::Connection;
    let env = Env::new();
    let server = Server::start(&env);
    assert_eq!(server.health().1["status"], "healthy");

    // Another program holds keeper.db's write lock: nothing can be stored.
    let mut other = connect(&env.keeper).await;
    sqlx::raw_sql("BEGIN EXCLUSIVE").execute(&mut other).await.unwrap();
    let (status, health) = server.wait_for_problem("keeper_db_not_writable", true);
    assert_eq!((status, health["status"].as_str()), (200, Some("degraded")), "{health}");
    let message = problem(&health, "keeper_db_not_writable")["message"].as_str().unwrap();
    assert!(message.contains(&env.keeper.display().to_string()), "{message}");
    assert!(message.contains("locked"), "{message}");
    assert!(
        server
            .metrics()
            .contains("keeper_health_problem{problem=\"keeper_db_not_writable\"} 1\n")
    );
    sqlx::raw_sql("ROLLBACK").execute(&mut other).await.unwrap();
    other.close().await.unwrap();
    let (_, health) = server.wait_for_problem("keeper_db_not_writable", false);
    assert_eq!(health["status"], "healthy", "{health}");

    // keeper.db is moved away: the process would go on writing a file that
    // is no longer there. Unhealthy, 503, until it is back.
    let aside = env.dir.path().join("keeper.db.aside");
    std::fs::rename(&env.keeper, &aside).unwrap();
    let (status, health) = server.wait_for_problem("keeper_db_unreadable", true);
    assert_eq!(
        (status, health["status"].as_str()),
        (503, Some("unhealthy")),
        "{health}"
    );
    assert_eq!(health["keeper_db_reachable"], false);
    let message = problem(&health, "keeper_db_unreadable")["message"].as_str().unwrap();
    assert!(message.contains("cannot be read"), "{message}");
    assert!(server.metrics().contains("keeper_health_status 2\n"));
    std::fs::rename(&aside, &env.keeper).unwrap();
    let (status, health) = server.wait_for_problem("keeper_db_unreadable", false);
    assert_eq!((status, health["status"].as_str()), (200, Some("healthy")), "{health}");

    // Another file put in its place while keeper runs (a backup restored by
    // a move): keeper.db reads fine at its path, but the process still holds
    // the file it opened, so what it stored from then on would be lost.
    // Unhealthy, saying so, though the file there is a keeper.db.
    let restored = env.dir.path().join("keeper.db.restored");
    std::fs::copy(&env.keeper, &restored).unwrap();
    std::fs::rename(&restored, &env.keeper).unwrap();
    let (status, health) = server.wait_for_problem("keeper_db_unreadable", true);
    assert_eq!(
        (status, health["status"].as_str()),
        (503, Some("unhealthy")),
        "{health}"
    );
    let message = problem(&health, "keeper_db_unreadable")["message"].as_str().unwrap();
    assert!(
        message.contains("was replaced by another file while keeper ran"),
        "{message}"
    );
    assert!(message.contains(&env.keeper.display().to_string()), "{message}");
}

#[tokio::test]
async fn health_says_when_the_discord_gateway_is_down() {
    let mut env = Env::new();
    // A bot that cannot reach Discord: nothing listens on port 9 of loopback.
    env.var("DISCORD_TOKEN", "not-a-real-token")
        .var("DISCORD_API_BASE", "http://127.0.0.1:9");
    let server = Server::start(&env);
    let (status, health) = server.wait_for_problem("discord_gateway_down", true);
    assert_eq!((status, health["status"].as_str()), (200, Some("degraded")), "{health}");
    assert_eq!(health["bot_online"], false);
    assert!(
        server
            .metrics()
            .contains("keeper_health_problem{problem=\"discord_gateway_down\"} 1\n")
    );
}

/// Rows in keeper.db's `discoveries`.
async fn stored(env: &Env) -> i64 {
    scalar_i64(&env.keeper, "SELECT COUNT(*) FROM discoveries").await
}

#[tokio::test]
async fn a_repeated_post_with_the_same_idempotency_key_stores_once() {
    let env = Env::new();
    let server = Server::start(&env);
    let body = fossil_report("Spine, sent twice");
    let (status, first) = server.post_keyed(&body, "retry-1");
    assert_eq!(status, 201, "{first}");
    let (status, again) = server.post_keyed(&body, "retry-1");
    assert_eq!(status, 201, "{again}");
    assert_eq!(again, first, "a repeat gets the first answer");
    assert_eq!(stored(&env).await, 1);

    // The same key for another report: refused, nothing stored.
    let (status, refused) = server.post_keyed(&fossil_report("Another spine"), "retry-1");
    assert_error(status, &refused, 422, "Idempotency-Key \"retry-1\" was already used");
    assert_eq!(refused["error"], "unprocessable");
    assert_eq!(stored(&env).await, 1);

    // Another key is another report, even with the same body.
    let (status, other) = server.post_keyed(&body, "retry-2");
    assert_eq!(status, 201, "{other}");
    assert_ne!(other["discovery_id"], first["discovery_id"]);
    // A bad report is refused before its key is remembered.
    let (status, bad) = server.post_keyed(&json!({"discovery_type": "🦴"}), "retry-3");
    assert_error(status, &bad, 400, "");
    let (status, _) = server.post_keyed(&fossil_report("Third spine"), "retry-3");
    assert_eq!(status, 201);
    assert_eq!(stored(&env).await, 3);

    // Keys that are not 1 to 255 visible ASCII characters are refused.
    for key in ["x".repeat(256), "with space".to_owned()] {
        let (status, bad) = server.post_keyed(&body, &key);
        assert_error(status, &bad, 400, "Idempotency-Key");
    }
    assert_eq!(stored(&env).await, 3);
    assert_eq!(
        scalar_i64(&env.keeper, "SELECT COUNT(*) FROM keeper_intake_keys").await,
        3,
        "one key per stored report"
    );
}

#[tokio::test]
async fn concurrent_repeats_of_one_request_store_it_once() {
    let env = Env::new();
    let server = Server::start(&env);
    for round in 0..5 {
        let body = fossil_report(&format!("Raced spine {round}"));
        let key = format!("race-{round}");
        let barrier = std::sync::Barrier::new(3);
        let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..3)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        server.post_keyed(&body, &key)
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        for (status, answer) in &answers {
            assert_eq!(*status, 201, "{answer}");
            assert_eq!(answer, &answers[0].1, "every repeat gets the first answer");
        }
    }
    assert_eq!(stored(&env).await, 5);
}

/// Sends `request` as raw bytes; the answer's status and JSON body.
fn raw(port: u16, request: &[u8]) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // The server may answer and close before it has read everything.
    let _ = tcp.write_all(request);
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {answer:?}"));
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    assert!(
        head.to_ascii_lowercase().contains("content-type: application/json"),
        "{answer}"
    );
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
    (status, body)
}

#[tokio::test]
async fn errors_hyper_answers_itself_are_json_too() {
    let env = Env::new();
    let server = Server::start(&env);
    let long_uri = format!(
        "GET /sync/items/{} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "9".repeat(70_000)
    );
    let (status, body) = raw(server.port, long_uri.as_bytes());
    assert_error(status, &body, 414, "URI is longer than 65534 bytes");
    assert_eq!(body["error"], "uri_too_long");

    let many: String = (0..120).map(|i| format!("X-Header-{i}: {i}\r\n")).collect();
    let many = format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n{many}\r\n");
    let (status, body) = raw(server.port, many.as_bytes());
    assert_error(status, &body, 431, "headers are too many");
    assert_eq!(body["error"], "request_header_fields_too_large");
    let huge = format!(
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n",
        "b".repeat(500_000)
    );
    assert_eq!(raw(server.port, huge.as_bytes()).0, 431);

    for malformed in [
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nno colon here\r\n\r\n",
        "GET /he alth HTTP/1.1\r\n\r\n",
        "GET /health HTTP/9.9\r\n\r\n",
    ] {
        let (status, body) = raw(server.port, malformed.as_bytes());
        assert_error(status, &body, 400, "malformed HTTP request");
    }
    // Answers the API gives itself are untouched, and the server is fine.
    let (status, body) = raw(
        server.port,
        b"GET /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_error(status, &body, 404, "no endpoint GET /nowhere");
    assert_eq!(server.get("/health")["status"], "healthy");
}

#[tokio::test]
async fn the_open_api_answers_only_to_local_host_names() {
    let env = Env::new();
    let server = Server::start(&env);
    let ask = |host: &str| {
        raw(
            server.port,
            format!("GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
    };
    for host in [
        "evil.example",
        "evil.example:8080",
        "127.0.0.1.evil.example",
        "localhost.evil.example",
        "192.168.1.10",
        "[2001:db8::1]:80",
    ] {
        let (status, body) = ask(host);
        assert_error(status, &body, 421, "answers only to localhost");
        assert_eq!(body["error"], "misdirected_request", "{host}");
    }
    let (status, body) = raw(
        server.port,
        b"POST /discoveries HTTP/1.1\r\nHost: rebind.example\r\nContent-Type: application/json\r\n\
          Content-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    assert_error(status, &body, 421, "rebind.example");
    for host in [
        "localhost",
        "LOCALHOST:1234",
        "127.0.0.1",
        "127.0.0.1:80",
        "127.8.9.10",
        "[::1]:8080",
    ] {
        let (status, body) = ask(host);
        assert_eq!(status, 200, "{host}: {body}");
    }
    assert_eq!(stored(&env).await, 0, "the refused POST stored nothing");

    // With an API key the key protects the API, whatever the name.
    let mut keyed = Env::new();
    keyed.var("SYNC_API_KEY", "k3y").var("SYNC_API_HOST", "127.0.0.1");
    let server = Server::start(&keyed);
    let (status, body) = raw(
        server.port,
        b"GET /health HTTP/1.1\r\nHost: bot-host.lan:8080\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{body}");
}
