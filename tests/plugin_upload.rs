//! Plugins from the sync API (`PUT /plugins/{name}`, preview, activation,
//! rollback) against the real `keeper run`, with test plugins built from
//! tests/guest-plugins: an upload gets the conformance check a dropped file
//! gets, a good one is active for the next item (its name and hash in the
//! ledger), a bad one is answered 422 with the reason and listed as
//! rejected while nothing else changes, and an earlier version can be
//! previewed and made active again. A canary (`PUT /plugins/{name}/canary`,
//! `POST /plugins/versions/{hash}/canary`) maps a share of the items: one
//! that fails them is rolled back and its items synced by the active plugin,
//! a good one becomes active at its count, and bad requests change nothing.

use crate::common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::guest_plugins::plugin;
use common::*;
use serde_json::Value;

const KEY: &str = "plugin-upload-key";

/// Compiling and checking a plugin in a debug build on a busy 2-core
/// machine takes a while.
const CHECK_TIMEOUT: Duration = Duration::from_secs(180);

/// A running `keeper run` with an API key and a plugins folder.
struct Keeper {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
    agent: ureq::Agent,
    plugins: PathBuf,
}

impl Keeper {
    fn start(env: &mut Env) -> Keeper {
        let plugins = env.dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        env.var("KEEPER_PLUGINS_DIR", plugins.display())
            .var("SYNC_INTERVAL", 1)
            .var("SYNC_API_KEY", KEY)
            // Far above what a mapping takes, so a loaded machine never fails a good plugin.
            .var("KEEPER_PLUGIN_TIMEOUT_MS", 5_000);
        let (child, port, log) = spawn_run(env);
        let agent = http_agent(CHECK_TIMEOUT);
        Keeper {
            child,
            port,
            log,
            agent,
            plugins,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// `method path` with `body` (sent as application/wasm) and `key`;
    /// the status and the JSON answer.
    fn call(&self, method: &str, path: &str, body: Option<&[u8]>, key: Option<&str>) -> (u16, Value) {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let with_key = |r: ureq::RequestBuilder<ureq::typestate::WithBody>| match key {
            Some(k) => r.header("X-API-Key", k),
            None => r,
        };
        let response = match method {
            "GET" => match key {
                Some(k) => self.agent.get(&url).header("X-API-Key", k).call(),
                None => self.agent.get(&url).call(),
            },
            "PUT" => with_key(self.agent.put(&url))
                .header("Content-Type", "application/wasm")
                .send(body.unwrap_or_default()),
            "POST" => with_key(self.agent.post(&url))
                .header("Content-Type", "application/wasm")
                .send(body.unwrap_or_default()),
            other => panic!("method {other}"),
        };
        let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"));
        (status, json)
    }

    fn ok(&self, method: &str, path: &str, body: Option<&[u8]>) -> Value {
        let (status, json) = self.call(method, path, body, Some(KEY));
        assert_eq!(status, 200, "{method} {path}: {json}\n{}", self.log());
        json
    }

    /// `POST /plugins/versions/{hash}/canary` with `body` as JSON.
    fn canary_version(&self, hash: &str, body: &str) -> (u16, Value) {
        let url = format!("http://127.0.0.1:{}/plugins/versions/{hash}/canary", self.port);
        let mut response = self
            .agent
            .post(&url)
            .header("X-API-Key", KEY)
            .header("Content-Type", "application/json")
            .send(body)
            .unwrap_or_else(|e| panic!("canary {hash}: {e}\n{}", self.log()));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("canary {hash}: {e}: {text}"));
        (status, json)
    }

    /// `GET /plugins`' canary once `done` holds for it.
    fn wait_for_canary(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + CHECK_TIMEOUT;
        loop {
            let canary = self.ok("GET", "/plugins", None)["canary"].clone();
            if done(&canary) {
                return canary;
            }
            assert!(
                Instant::now() < deadline,
                "canary never {what}: {canary}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn upload(&self, name: &str, bytes: &[u8]) -> (u16, Value) {
        self.call("PUT", &format!("/plugins/{name}"), Some(bytes), Some(KEY))
    }

    /// The active plugin's name, version and hash, as `GET /plugins` says.
    fn active(&self) -> (String, String, String) {
        let active = &self.ok("GET", "/plugins", None)["active"];
        let text = |k: &str| active[k].as_str().unwrap_or_default().to_owned();
        (text("name"), text("version"), text("hash"))
    }

    /// Every file in the plugins folder, hidden ones too, sorted.
    fn folder(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.plugins)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Waits until queue item `queue_id` is synced; the plugin name that wrote it.
    fn synced_by(&self, queue_id: i64) -> String {
        let deadline = Instant::now() + CHECK_TIMEOUT;
        loop {
            let item = self.ok("GET", &format!("/sync/items/{queue_id}"), None);
            if item["item"]["sync_status"] == "synced" {
                return item["item"]["provenance"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "item {queue_id} never synced: {item}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// Submits one report; its queue id.
async fn submit(env: &Env, text: &str) -> i64 {
    let discovery_id = env.submit("🦴", "Oculi", "planet:Erren", text, &[]);
    query_i64(
        &env.keeper,
        &format!("SELECT id FROM sync_queue WHERE discovery_id = {discovery_id}"),
    )
    .await
}

/// Who wrote each VH-Database row, from its sync ledger.
async fn ledger(haven: &Path) -> Vec<(String, String)> {
    rows(
        haven,
        "SELECT plugin_name, plugin_hash FROM keeper_sync_ledger ORDER BY keeper_discovery_id",
    )
    .await
    .iter()
    .map(|r| {
        use sqlx::Row;
        (r.get(0), r.get(1))
    })
    .collect()
}

/// The folder watch also reports the file an upload renamed into place,
/// after its quiet period: here only once another version was activated.
/// keeper knows it placed that file, so the late report does not make the
/// upload active again (the active version used to flip back).
#[tokio::test]
async fn a_late_folder_report_of_an_upload_does_not_undo_a_later_activation() {
    let mut env = Env::new();
    env.var("KEEPER_LOG", "info,keeper::plugins=debug");
    let keeper = Keeper::start(&mut env);
    let (_, _, builtin_hash) = keeper.active();
    let answer = keeper.ok("PUT", "/plugins/shouting", Some(&read(&plugin("upper"))));
    assert_eq!(answer["active"]["name"], "test-upper", "{answer}");
    // At once, well inside the watch's quiet period after the upload's rename.
    let answer = keeper.ok("POST", &format!("/plugins/versions/{builtin_hash}/activate"), None);
    assert_eq!(answer["active"]["hash"], builtin_hash.as_str(), "{answer}");

    let echo = format!(
        "a plugin file keeper placed itself; nothing to do path={}",
        keeper.plugins.join("shouting.wasm").display()
    );
    // Either keeper recognises the report as its own, or the upload is
    // made active again from the folder (the defect this test catches).
    let flipped_back = "activated_by=\"folder\"";
    let deadline = Instant::now() + CHECK_TIMEOUT;
    while !keeper.log().contains(&echo) && !keeper.log().contains(flipped_back) {
        assert!(
            Instant::now() < deadline,
            "no report of shouting.wasm:\n{}",
            keeper.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!keeper.log().contains(flipped_back), "{}", keeper.log());
    assert_eq!(keeper.active().2, builtin_hash, "{}", keeper.log());
    let item = submit(&env, "Bones after the late folder report").await;
    assert_eq!(keeper.synced_by(item), "keeper-default-mapper");
}

#[tokio::test]
async fn an_uploaded_plugin_is_active_for_the_next_item_and_an_earlier_one_can_come_back() {
    let mut env = Env::new();
    let keeper = Keeper::start(&mut env);
    let first = submit(&env, "Bones before any upload").await;
    assert_eq!(keeper.synced_by(first), "keeper-default-mapper");
    let (_, _, builtin_hash) = keeper.active();

    // Preview first: nothing is installed, the diff names the column.
    let upper = read(&plugin("upper"));
    let preview = keeper.ok("POST", "/plugins/preview?last=5", Some(&upper));
    assert_eq!(preview["candidate"]["name"], "test-upper", "{preview}");
    assert_eq!(preview["active"]["name"], "keeper-default-mapper", "{preview}");
    assert_eq!(
        (preview["compared"].as_u64(), preview["changed"].as_u64()),
        (Some(1), Some(1))
    );
    let item = &preview["items"][0];
    assert_eq!(item["queue_id"], first);
    assert_eq!(item["active_row"]["discovered_by"], "Explorer#1234", "{item}");
    assert_eq!(item["candidate_row"]["discovered_by"], "EXPLORER#1234", "{item}");
    let columns: Vec<&str> = item["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["column"].as_str())
        .collect();
    assert_eq!(columns, ["discovered_by"], "{item}");
    assert_eq!(keeper.active().0, "keeper-default-mapper");
    assert_eq!(keeper.folder(), Vec::<String>::new(), "a preview leaves no file");

    // Upload: active at once, saved under its name, the next item is its.
    let answer = keeper.ok("PUT", "/plugins/shouting", Some(&upper));
    assert_eq!(answer["active"]["name"], "test-upper", "{answer}");
    assert_eq!(answer["message"], "test-upper 1.1.0 is active", "{answer}");
    let upper_hash = answer["active"]["hash"].as_str().unwrap().to_owned();
    assert!(
        answer["active"]["source"].as_str().unwrap().ends_with("shouting.wasm"),
        "{answer}"
    );
    assert_eq!(keeper.folder(), ["shouting.wasm"]);
    assert_eq!(read(&keeper.plugins.join("shouting.wasm")), upper);
    let second = submit(&env, "Bones after the upload").await;
    assert_eq!(keeper.synced_by(second), "test-upper");

    // A second version under the same name replaces the file.
    let lenient = read(&plugin("lenient"));
    let answer = keeper.ok("PUT", "/plugins/shouting", Some(&lenient));
    assert_eq!(answer["active"]["name"], "test-lenient", "{answer}");
    assert_eq!(keeper.folder(), ["shouting.wasm"]);
    let third = submit(&env, "Bones under the lenient plugin").await;
    assert_eq!(keeper.synced_by(third), "test-lenient");

    // The earlier version, though its file was overwritten: previewed, then active again.
    let preview = keeper.ok("GET", &format!("/plugins/versions/{upper_hash}/preview?last=2"), None);
    assert_eq!(preview["candidate"]["hash"], upper_hash.as_str(), "{preview}");
    assert_eq!(preview["active"]["name"], "test-lenient", "{preview}");
    assert_eq!(preview["items"].as_array().unwrap().len(), 2, "{preview}");
    let answer = keeper.ok("POST", &format!("/plugins/versions/{upper_hash}/activate"), None);
    assert_eq!(answer["active"]["hash"], upper_hash.as_str(), "{answer}");
    assert_eq!(read(&keeper.plugins.join("shouting.wasm")), upper);
    let fourth = submit(&env, "Bones after activating the earlier version").await;
    assert_eq!(keeper.synced_by(fourth), "test-upper");

    // Rollback: the one active before (the lenient plugin).
    let answer = keeper.ok("POST", "/plugins/rollback", None);
    assert_eq!(answer["active"]["name"], "test-lenient", "{answer}");
    let fifth = submit(&env, "Bones after the rollback").await;
    assert_eq!(keeper.synced_by(fifth), "test-lenient");

    // The built-in plugin can come back too: installed as a file of its own name.
    let answer = keeper.ok("POST", &format!("/plugins/versions/{builtin_hash}/activate"), None);
    assert_eq!(answer["active"]["name"], "keeper-default-mapper", "{answer}");
    assert_eq!(keeper.folder(), ["keeper-default-mapper.wasm", "shouting.wasm"]);
    let sixth = submit(&env, "Bones back on the built-in plugin").await;
    assert_eq!(keeper.synced_by(sixth), "keeper-default-mapper");

    let written: Vec<String> = ledger(&env.haven).await.into_iter().map(|(name, _)| name).collect();
    assert_eq!(
        written,
        [
            "keeper-default-mapper",
            "test-upper",
            "test-lenient",
            "test-upper",
            "test-lenient",
            "keeper-default-mapper"
        ]
    );
    let hashes: Vec<String> = ledger(&env.haven).await.into_iter().map(|(_, hash)| hash).collect();
    assert_eq!(hashes[1], upper_hash);
    assert_eq!(hashes[5], builtin_hash);
    drop(keeper);

    // A restart keeps what the API activated: the newest file in the folder.
    let keeper = Keeper::start(&mut env);
    assert_eq!(keeper.active().0, "keeper-default-mapper", "{}", keeper.log());
}

/// Sends `PUT /plugins/{name}` declaring `length` bytes and sends none: the
/// answer must come from the declared length alone.
fn declare_upload(port: u16, name: &str, length: u64) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        stream,
        "PUT /plugins/{name} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {KEY}\r\n\
         Content-Type: application/wasm\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[tokio::test]
async fn a_bad_upload_is_refused_with_its_reason_and_changes_nothing() {
    let mut env = Env::new();
    let keeper = Keeper::start(&mut env);
    let before = keeper.active();
    assert_eq!(before.0, "keeper-default-mapper");
    let upper = read(&plugin("upper"));

    // No key, a wrong key: 401, before the body is looked at.
    let (status, body) = keeper.call("PUT", "/plugins/upper", Some(&upper), None);
    assert_eq!(status, 401, "{body}");
    let (status, body) = keeper.call("PUT", "/plugins/upper", Some(&upper), Some("wrong"));
    assert_eq!(status, 401, "{body}");
    let (status, _) = keeper.call("POST", "/plugins/rollback", None, None);
    assert_eq!(status, 401);

    // Names that are not a plain file stem: 400, naming the rule.
    let long = "x".repeat(65);
    for name in [
        "a.b",
        "..",
        "%2E%2E",
        "a%2Fb",
        "a%5Cb",
        ".hidden",
        "white%20space",
        long.as_str(),
    ] {
        let (status, body) = keeper.upload(name, &upper);
        assert_eq!(status, 400, "{name}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("letters, digits, `-` or `_`"),
            "{name}: {body}"
        );
    }

    // Over 64 MiB: 413 from the declared length, with the limit in words.
    let answer = declare_upload(keeper.port, "huge", (64 << 20) + 1);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("the plugin is larger than 64 MiB"), "{answer}");
    // 64 MiB itself is allowed through the limit (then refused by the check).
    let (status, body) = keeper.upload("big", &vec![b'x'; 2 << 20]);
    assert_eq!(status, 422, "a plugin body over the API's 1 MiB limit is taken: {body}");

    // Plugins the check refuses: 422 with the reason, listed as rejected.
    let cases = [
        ("text", read(&plugin("not-wasm")), "not a WebAssembly component"),
        (
            "wrong-world",
            read(&plugin("wrong-world")),
            "not a keeper:mapper/mapper@1.3.0 component",
        ),
        (
            "unknown_column",
            read(&plugin("unknown-column")),
            "schema mismatch: column no_such_column missing in VH-Database table discoveries",
        ),
    ];
    for (name, bytes, reason) in &cases {
        let (status, body) = keeper.upload(name, bytes);
        assert_eq!(status, 422, "{name}: {body}");
        assert!(body["message"].as_str().unwrap().contains(reason), "{name}: {body}");
        let listed = keeper.ok("GET", "/plugins", None);
        let rejected = listed["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["source"].as_str().unwrap().ends_with(&format!("/{name}.wasm")))
            .unwrap_or_else(|| panic!("{name} is not listed as rejected: {listed}"));
        assert!(rejected["reason"].as_str().unwrap().contains(reason), "{rejected}");
        assert_eq!(keeper.active(), before, "{name} changed the active plugin");
        assert_eq!(keeper.folder(), Vec::<String>::new(), "{name} left a file behind");
    }
    // A refused preview installs and records nothing either.
    let (status, body) = keeper.call("POST", "/plugins/preview", Some(&cases[2].1), Some(KEY));
    assert_eq!(status, 422, "{body}");
    assert!(body["message"].as_str().unwrap().contains(cases[2].2), "{body}");
    assert_eq!(keeper.folder(), Vec::<String>::new());

    // Versions this host never ran, and nothing to roll back to.
    let unknown = "0".repeat(64);
    let (status, body) = keeper.call(
        "POST",
        &format!("/plugins/versions/{unknown}/activate"),
        None,
        Some(KEY),
    );
    assert_eq!(status, 404, "{body}");
    let (status, body) = keeper.call("GET", &format!("/plugins/versions/{unknown}/preview"), None, Some(KEY));
    assert_eq!(status, 404, "{body}");
    let (status, body) = keeper.call("POST", "/plugins/versions/not-a-hash/activate", None, Some(KEY));
    assert_eq!(status, 400, "{body}");
    let (status, body) = keeper.call("POST", "/plugins/rollback", None, Some(KEY));
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("no earlier plugin version"),
        "{body}"
    );

    assert_eq!(keeper.active(), before);
    assert_eq!(keeper.folder(), Vec::<String>::new());
    // The worker still syncs on the plugin it had.
    let id = submit(&env, "Bones after the refusals").await;
    assert_eq!(keeper.synced_by(id), "keeper-default-mapper");
}

#[tokio::test]
async fn a_canary_that_fails_its_items_is_rolled_back_and_the_active_plugin_syncs_them() {
    let mut env = Env::new();
    env.var("KEEPER_CANARY_MIN_ITEMS", 4);
    let keeper = Keeper::start(&mut env);
    let (_, _, builtin_hash) = keeper.active();

    // The trapdoor plugin passes the check, then panics on every row whose
    // description holds `[panic]`: here, every item.
    let trapdoor = read(&plugin("trapdoor"));
    let answer = keeper.ok("PUT", "/plugins/trapdoor/canary?percent=50", Some(&trapdoor));
    assert_eq!(answer["canary"]["state"], "running", "{answer}");
    assert_eq!(answer["canary"]["percent"], 50, "{answer}");
    assert_eq!(answer["canary"]["active_hash"], builtin_hash.as_str(), "{answer}");
    assert_eq!(
        answer["message"], "test-trapdoor 0.0.1 runs as a canary on 50% of the items",
        "{answer}"
    );
    assert_eq!(
        keeper.folder(),
        Vec::<String>::new(),
        "a canary is not placed in the folder"
    );
    assert_eq!(keeper.active().0, "keeper-default-mapper");

    let mut ids = Vec::new();
    for n in 0..12 {
        ids.push(submit(&env, &format!("Bones number {n} [panic]")).await);
    }
    let canary = keeper.wait_for_canary("rolled back", |c| c["state"] == "rolled_back");
    let (items, failed) = (
        canary["canary_items"].as_i64().unwrap(),
        canary["canary_failed"].as_i64().unwrap(),
    );
    assert!(items >= 4 && failed == items, "{canary}");
    assert_eq!(canary["active_failed"], 0, "{canary}");
    let reason = canary["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!("the canary failed {failed} of {items} items (100%)"))
            && reason.contains("margin of 10 points (KEEPER_CANARY_MARGIN_PERCENT)"),
        "{canary}"
    );
    assert!(canary["ended_at"].is_string(), "{canary}");

    // Every item ends synced by the plugin that stayed active, the ones the
    // canary failed too; VH-Database holds nothing the canary wrote.
    for id in &ids {
        assert_eq!(keeper.synced_by(*id), "keeper-default-mapper");
    }
    let written = ledger(&env.haven).await;
    assert_eq!(written.len(), ids.len());
    assert!(
        written
            .iter()
            .all(|(name, hash)| name == "keeper-default-mapper" && *hash == builtin_hash)
    );
    wait_for_log(&keeper.log, "canary rolled back", CHECK_TIMEOUT);
    let log = keeper.log();
    assert!(log.contains(&format!("canary_failed={failed}")), "{log}");
    let listed = keeper.ok("GET", "/plugins", None);
    assert_eq!(listed["active"]["hash"], builtin_hash.as_str(), "{listed}");
    assert_eq!(listed["active"]["activated_by"], "start_up", "{listed}");
    assert_eq!(keeper.folder(), Vec::<String>::new());
    let after = submit(&env, "Bones after the rollback [panic]").await;
    assert_eq!(keeper.synced_by(after), "keeper-default-mapper");
}

#[tokio::test]
async fn a_good_canary_becomes_active_at_its_count_and_says_how() {
    let mut env = Env::new();
    let keeper = Keeper::start(&mut env);
    let first = submit(&env, "Bones before the canary").await;
    assert_eq!(keeper.synced_by(first), "keeper-default-mapper");

    let upper = read(&plugin("upper"));
    let answer = keeper.ok("PUT", "/plugins/shouting/canary?items=3", Some(&upper));
    assert_eq!(
        answer["message"], "test-upper 1.1.0 runs as a canary on the next 3 items",
        "{answer}"
    );
    let upper_hash = answer["canary"]["hash"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(submit(&env, &format!("Bones for the canary {n}")).await);
    }
    for id in &ids {
        assert_eq!(keeper.synced_by(*id), "test-upper");
    }
    let canary = keeper.wait_for_canary("promoted", |c| c["state"] == "promoted");
    assert_eq!(
        (canary["canary_items"].as_i64(), canary["canary_failed"].as_i64()),
        (Some(3), Some(0)),
        "{canary}"
    );
    assert_eq!(canary["reason"], "reached its count of 3 items", "{canary}");
    let deadline = Instant::now() + CHECK_TIMEOUT;
    while keeper.active().2 != upper_hash {
        assert!(
            Instant::now() < deadline,
            "the canary never became active\n{}",
            keeper.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let listed = keeper.ok("GET", "/plugins", None);
    assert_eq!(listed["active"]["activated_by"], "canary_promotion", "{listed}");
    assert_eq!(listed["history"][0]["activated_by"], "start_up", "{listed}");
    assert_eq!(keeper.folder(), ["shouting.wasm"]);
    let after = submit(&env, "Bones after the promotion").await;
    assert_eq!(keeper.synced_by(after), "test-upper");
    let list = env.ok(&["plugin", "list"]);
    assert!(list.contains("(canary promoted at its count)"), "{list}");
    assert!(list.contains("promoted  on the next 3 items"), "{list}");
    drop(keeper);

    // A restart keeps the promoted plugin and how it became active.
    let keeper = Keeper::start(&mut env);
    let listed = keeper.ok("GET", "/plugins", None);
    assert_eq!(listed["active"]["hash"], upper_hash.as_str(), "{listed}");
    assert_eq!(listed["active"]["activated_by"], "canary_promotion", "{listed}");
}

#[tokio::test]
async fn bad_canary_requests_are_refused_and_change_nothing() {
    let mut env = Env::new();
    let keeper = Keeper::start(&mut env);
    let (_, _, builtin_hash) = keeper.active();
    let upper = read(&plugin("upper"));

    // The share: a percent from 1 to 100 and/or a count of at least 1.
    for query in ["percent=0", "percent=101", "percent=-3", "items=0", ""] {
        let (status, body) = keeper.call(
            "PUT",
            &format!("/plugins/shouting/canary?{query}"),
            Some(&upper),
            Some(KEY),
        );
        assert_eq!(status, 400, "{query}: {body}");
    }
    let (status, body) = keeper.call("PUT", "/plugins/shouting/canary?percent=ten", Some(&upper), Some(KEY));
    assert_eq!(status, 400, "{body}");
    for body in [
        r#"{"percent": 0}"#,
        r#"{"percent": 150}"#,
        r#"{"percent": "ten"}"#,
        r#"{"items": 0}"#,
        "{}",
    ] {
        let (status, answer) = keeper.canary_version(&builtin_hash, body);
        assert_eq!(status, 400, "{body}: {answer}");
    }
    let (status, body) = keeper.canary_version(&builtin_hash, r#"{"percent": 0}"#);
    assert!(
        body["message"].as_str().unwrap().contains("from 1 to 100"),
        "{status} {body}"
    );
    // The active version, an unknown one, no key, a plugin the check refuses.
    let (status, body) = keeper.canary_version(&builtin_hash, r#"{"percent": 10}"#);
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("is the active one"),
        "{body}"
    );
    let (status, body) = keeper.canary_version(&"0".repeat(64), r#"{"percent": 10}"#);
    assert_eq!(status, 404, "{body}");
    let (status, body) = keeper.call("PUT", "/plugins/shouting/canary?percent=10", Some(&upper), None);
    assert_eq!(status, 401, "{body}");
    let bad = read(&plugin("unknown-column"));
    let (status, body) = keeper.call("PUT", "/plugins/bad/canary?percent=10", Some(&bad), Some(KEY));
    assert_eq!(status, 422, "{body}");
    let listed = keeper.ok("GET", "/plugins", None);
    assert!(listed["canary"].is_null(), "no canary was started: {listed}");
    assert_eq!(listed["active"]["hash"], builtin_hash.as_str());
    assert_eq!(keeper.folder(), Vec::<String>::new());

    // One canary at a time.
    let started = keeper.ok("PUT", "/plugins/shouting/canary?percent=10&items=500", Some(&upper));
    let upper_hash = started["canary"]["hash"].as_str().unwrap().to_owned();
    let lenient = read(&plugin("lenient"));
    let (status, body) = keeper.call("PUT", "/plugins/lenient/canary?percent=10", Some(&lenient), Some(KEY));
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("a canary runs already"),
        "{body}"
    );
    let (status, body) = keeper.canary_version(&upper_hash, r#"{"items": 5}"#);
    assert_eq!(status, 409, "{body}");
    let canary = keeper.ok("GET", "/plugins", None)["canary"].clone();
    assert_eq!(
        (
            canary["hash"].as_str(),
            canary["state"].as_str(),
            canary["percent"].as_i64(),
            canary["items"].as_i64()
        ),
        (Some(upper_hash.as_str()), Some("running"), Some(10), Some(500)),
        "{canary}"
    );
    assert_eq!(keeper.active().0, "keeper-default-mapper");
    assert_eq!(keeper.folder(), Vec::<String>::new());

    // Promoted by hand: activating the canary's version.
    let answer = keeper.ok("POST", &format!("/plugins/versions/{upper_hash}/activate"), None);
    assert_eq!(answer["active"]["hash"], upper_hash.as_str(), "{answer}");
    assert_eq!(answer["active"]["activated_by"], "api_activation", "{answer}");
    let canary = keeper.ok("GET", "/plugins", None)["canary"].clone();
    assert_eq!(canary["state"], "promoted", "{canary}");
    assert_eq!(keeper.folder(), ["shouting.wasm"]);
    // The built-in plugin, no longer active, can be a canary now.
    let (status, body) = keeper.canary_version(&builtin_hash, r#"{"percent": 100}"#);
    assert_eq!(status, 200, "{body}");
    drop(keeper);

    // Stopping keeper ends a running canary, saying so; the active plugin stays.
    let keeper = Keeper::start(&mut env);
    let listed = keeper.ok("GET", "/plugins", None);
    assert_eq!(listed["canary"]["hash"], builtin_hash.as_str(), "{listed}");
    assert_eq!(listed["canary"]["state"], "ended", "{listed}");
    assert!(
        listed["canary"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("keeper stopped while it ran"),
        "{listed}"
    );
    assert_eq!(listed["active"]["hash"], upper_hash.as_str(), "{listed}");
}
