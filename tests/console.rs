//! The operator console (`/console`) in headless Chromium against a live
//! `keeper run` with a seeded queue, and the API operations it reads
//! (`/sync/failures`, `/sync/items`), and a canary of a failing plugin
//! rolling back on the Plugins page. Screenshots of each page are kept
//! under cargo's target temp folder (`CARGO_TARGET_TMPDIR/console-screenshots`),
//! their paths printed.

use crate::common;

use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::browser::Browser;
use common::*;
use serde_json::{Value, json};

const KEY: &str = "console-test-key";

/// A running `keeper run` and a client of its API with the key.
struct Keeper {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
    key: Option<String>,
    agent: ureq::Agent,
}

impl Keeper {
    fn start(env: &Env) -> Keeper {
        let (child, port, log) = spawn_run(env);
        let key = env
            .vars
            .iter()
            .find(|(k, _)| k == "SYNC_API_KEY")
            .map(|(_, v)| v.clone());
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Keeper {
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

    /// Status, headers we look at, and body of a request with the key.
    fn request(&self, method: &str, path: &str, key: Option<&str>) -> (u16, ureq::http::HeaderMap, String) {
        let url = self.url(path);
        let key = key.or(self.key.as_deref());
        let response = match method {
            "GET" => {
                let r = self.agent.get(&url);
                match key {
                    Some(k) => r.header("X-API-Key", k).call(),
                    None => r.call(),
                }
            }
            "POST" => {
                let r = self.agent.post(&url);
                match key {
                    Some(k) => r.header("X-API-Key", k).send_empty(),
                    None => r.send_empty(),
                }
            }
            other => panic!("method {other}"),
        };
        let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        (status, headers, body)
    }

    fn get(&self, path: &str) -> Value {
        let (status, _, body) = self.request("GET", path, None);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until `GET path` satisfies `done`; returns that answer.
    fn wait_until(&self, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let value = self.get(path);
            if done(&value) {
                return value;
            }
            assert!(Instant::now() < deadline, "never {what}: {value}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// A queue with every state the console shows: items 1–6 synced (by a
/// real `keeper sync --once`), 7 and 8 failed with class `schema`, 9 failed
/// and 10 waiting with class `locked`. The failures are written as the worker
/// records them: the console must show what keeper.db holds.
async fn seeded(env: &mut Env) {
    let reports = [
        ("🦴", "Oculi", "planet:Erren", "Ribcage in a cave"),
        ("💎", "Oculi", "planet:Erren", "Blue crystals"),
        ("🚀", "Eisvåld", "space:Eisvåld", "A crashed freighter"),
        ("📜", "Oculi", "moon:Ash", "A torn log"),
        ("🦗", "Eisvåld", "space:Eisvåld", "Drifting flora"),
        ("⚡", "Oculi", "planet:Erren", "Acid rain"),
    ];
    for (kind, system, location, text) in reports {
        env.submit(kind, system, location, text, &[]);
    }
    env.ok(&["sync", "--once"]);
    for text in ["Bones one", "Bones two", "Bones three", "Bones four"] {
        let args = [
            "submit",
            "--type",
            "🦴",
            "--system",
            "Oculi",
            "--location",
            "planet:Erren",
        ];
        env.ok(&[&args[..], &["--description", text, "--user", "Zed"]].concat());
    }
    exec(
        &env.keeper,
        "UPDATE sync_queue SET sync_status = 'max_retries_exceeded', sync_attempts = 10, error_class = 'schema',
             sync_error = 'schema: VH-Database''s discoveries has no column fossil_type',
             last_sync_attempt = strftime('%Y-%m-%d %H:%M:%f', 'now') WHERE id IN (7, 8)",
    )
    .await;
    exec(
        &env.keeper,
        "UPDATE sync_queue SET sync_status = 'max_retries_exceeded', sync_attempts = 10, error_class = 'locked',
             sync_error = 'VH-Database is locked by another program (database is locked)',
             last_sync_attempt = strftime('%Y-%m-%d %H:%M:%f', 'now') WHERE id = 9",
    )
    .await;
    exec(
        &env.keeper,
        "UPDATE sync_queue SET sync_attempts = 2, error_class = 'locked',
             sync_error = 'VH-Database is locked by another program (database is locked)',
             last_sync_attempt = strftime('%Y-%m-%d %H:%M:%f', 'now'),
             next_retry_after = strftime('%Y-%m-%d %H:%M:%f', 'now', '+1 day') WHERE id = 10",
    )
    .await;
}

/// Where this test's screenshots go (kept after the run).
fn screenshot_folder(test: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("console-screenshots")
        .join(test)
}

fn open_browser(env: &Env, test: &str) -> Browser {
    Browser::start(
        &chromium(),
        &env.dir.path().join("chromium-profile"),
        screenshot_folder(test),
    )
}

/// The text of the element `selector` on the page, or null.
fn text_of(selector: &str) -> String {
    format!("document.querySelector({selector:?})?.textContent ?? null")
}

#[tokio::test]
async fn failures_are_grouped_by_class_and_items_can_be_searched() {
    let mut env = Env::new();
    seeded(&mut env).await;
    let keeper = Keeper::start(&env);

    let failures = keeper.get("/sync/failures");
    assert_eq!(failures["total"], 4, "{failures}");
    let classes = failures["classes"].as_array().unwrap();
    assert_eq!(classes.len(), 2, "{failures}");
    // The class with the most failed items first.
    assert_eq!(classes[0]["error_class"], "schema");
    assert_eq!(
        (classes[0]["failed"].as_i64(), classes[0]["waiting"].as_i64()),
        (Some(2), Some(0))
    );
    assert_eq!(classes[0]["oldest_queue_id"], 7);
    assert!(classes[0]["latest_error"].as_str().unwrap().contains("fossil_type"));
    assert!(classes[0]["remedy"].as_str().unwrap().contains("schema"));
    assert_eq!(classes[1]["error_class"], "locked");
    assert_eq!(
        (classes[1]["failed"].as_i64(), classes[1]["waiting"].as_i64()),
        (Some(1), Some(1))
    );
    assert!(classes[1]["remedy"].as_str().unwrap().contains("HAVEN_BUSY_TIMEOUT_MS"));

    // Newest first; each filter narrows; a cursor pages.
    let all = keeper.get("/sync/items");
    let ids: Vec<i64> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["queue_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (1..=10).rev().collect::<Vec<_>>());
    let ids_of = |path: &str| -> Vec<i64> {
        keeper.get(path)["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["queue_id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(ids_of("/sync/items?user=zed"), vec![10, 9, 8, 7]);
    assert_eq!(
        ids_of("/sync/items?system=eisv"),
        vec![5, 3],
        "part of the name, any case"
    );
    assert_eq!(ids_of("/sync/items?type=fossil"), vec![10, 9, 8, 7, 1]);
    assert_eq!(
        ids_of("/sync/items?type=%F0%9F%A6%B4&state=synced"),
        vec![1],
        "the emoji too"
    );
    assert_eq!(ids_of("/sync/items?state=max_retries_exceeded"), vec![9, 8, 7]);
    assert_eq!(ids_of("/sync/items?class=locked"), vec![10, 9]);
    assert_eq!(
        ids_of("/sync/items?system=%25"),
        Vec::<i64>::new(),
        "% is a letter, not a wildcard"
    );
    let page = keeper.get("/sync/items?limit=4");
    assert_eq!(page["count"], 4);
    assert_eq!(page["next_before"], 7);
    assert_eq!(ids_of("/sync/items?limit=4&before=7"), vec![6, 5, 4, 3]);
    assert_eq!(keeper.get("/sync/items?before=1")["next_before"], Value::Null);
    let item = &keeper.get("/sync/items?user=zed&limit=1")["items"][0];
    assert_eq!(item["system_name"], "Oculi");
    assert_eq!(item["username"], "Zed");
    assert_eq!(item["discovery_type"], "🦴");
    assert_eq!(item["error_class"], "locked");

    // Bad filters: 400 naming the parameter; the key is needed like everywhere.
    for (path, part) in [
        ("/sync/items?type=dragon", "no discovery type"),
        ("/sync/items?state=lost", "state"),
        ("/sync/items?class=gremlins", "class"),
        ("/sync/items?limit=0", "limit"),
        ("/sync/items?before=0", "before"),
    ] {
        let (status, _, body) = keeper.request("GET", path, None);
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(part), "{path}: {body}");
    }
    let mut keyed = Env::new();
    keyed.var("SYNC_API_KEY", KEY);
    let protected = Keeper::start(&keyed);
    for path in ["/sync/items", "/sync/failures"] {
        let (status, _, body) = protected.request("GET", path, Some("wrong"));
        assert_eq!(status, 401, "{path}: {body}");
        let (status, _, body) = protected.request("GET", path, None);
        assert_eq!(status, 200, "{path}: {body}");
    }
    // Reading changed nothing.
    assert_eq!(keeper.get("/sync/failures")["total"], 4);
}

#[tokio::test]
async fn the_console_is_served_from_the_binary_without_the_key() {
    let mut env = Env::new();
    env.var("SYNC_API_KEY", KEY);
    let keeper = Keeper::start(&env);
    let (status, headers, _) = keeper.request("GET", "/", Some(""));
    assert_eq!(status, 302);
    assert_eq!(headers.get("location").unwrap(), "/console");
    for (path, content_type) in [
        ("/console", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/console.css", "text/css"),
    ] {
        let (status, headers, body) = keeper.request("GET", path, Some(""));
        assert_eq!(status, 200, "{path}: {body}");
        let got = headers.get("content-type").unwrap().to_str().unwrap();
        assert!(got.starts_with(content_type), "{path}: {got}");
        let policy = headers.get("content-security-policy").unwrap().to_str().unwrap();
        assert!(
            policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"),
            "{policy}"
        );
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path} loads nothing from elsewhere"
        );
    }
    let (status, _, body) = keeper.request("GET", "/console/secrets.txt", Some(""));
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no such console file"), "{body}");
    let (status, headers, _) = keeper.request("POST", "/console", None);
    assert_eq!(status, 405);
    assert_eq!(headers.get("allow").unwrap(), "GET");
    // The data still needs the key.
    let (status, _, _) = keeper.request("GET", "/sync/status", Some(""));
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_console_in_a_browser_shows_the_queue_and_retries_a_class() {
    let mut env = Env::new();
    env.var("SYNC_API_KEY", KEY).var("SYNC_INTERVAL", 1);
    seeded(&mut env).await;
    let keeper = Keeper::start(&env);
    let mut browser = open_browser(&env, "queue");

    // `/` leads to the console, which asks for the key and keeps it in the tab.
    browser.open(&keeper.url("/"));
    browser.wait_for(
        "!document.getElementById('key-prompt').hidden && document.activeElement.id === 'key-input'",
        "the key prompt, focused",
    );
    assert_eq!(browser.eval("location.pathname"), "/console");
    browser.screenshot("0-key-prompt");
    browser.type_text("not the key");
    browser.press("Enter");
    browser.wait_for(
        "document.getElementById('key-error').textContent.includes('refused')",
        "the wrong key refused",
    );
    browser.type_text(KEY);
    browser.press("Enter");
    browser.wait_for(
        "document.querySelector('#view[data-page=overview] [data-count=synced]')",
        "the overview",
    );
    assert_eq!(browser.eval("sessionStorage.getItem('keeper-api-key')"), KEY);
    assert_eq!(browser.eval("document.cookie"), "", "no cookies");

    // The overview's numbers are the API's.
    let status = keeper.get("/sync/status");
    let stats = keeper.get("/sync/statistics");
    let health = keeper.get("/health");
    let plugins = keeper.get("/plugins");
    for (field, want) in [
        ("pending", &status["queue"]["pending"]),
        ("syncing", &status["queue"]["syncing"]),
        ("synced", &status["queue"]["synced"]),
        ("failed", &status["queue"]["failed"]),
    ] {
        let shown = browser.eval(&text_of(&format!("[data-count={field}]")));
        assert_eq!(shown, want.to_string(), "{field}");
    }
    assert_eq!(status["queue"]["synced"], 6);
    assert_eq!(status["queue"]["failed"], 3);
    assert_eq!(
        browser.eval(&text_of("[data-field=synced-last-hour]")),
        stats["synced_last_hour"].to_string()
    );
    assert_eq!(stats["synced_per_minute_last_hour"].as_array().unwrap().len(), 60);
    assert_eq!(
        stats["synced_per_minute_last_hour"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .sum::<i64>(),
        6
    );
    assert!(
        browser
            .eval("document.querySelectorAll('svg.chart rect').length")
            .as_i64()
            .unwrap()
            >= 1
    );
    assert_eq!(
        browser.eval("document.querySelector('[data-health]').dataset.health"),
        health["status"]
    );
    assert_eq!(
        browser.eval(&text_of("[data-field=plugin-name]")),
        plugins["active"]["name"]
    );
    assert!(
        browser
            .eval(&text_of("[data-field=bot]"))
            .as_str()
            .unwrap()
            .contains("not running")
    );
    assert_eq!(
        browser.eval(&text_of("[data-field=haven-path]")),
        health["haven_db"]["path"]
    );
    assert!(
        browser
            .eval(&text_of("[data-field=p50]"))
            .as_str()
            .unwrap()
            .ends_with('s')
    );
    browser.screenshot("1-overview");
    // Phone width: nothing sticks out sideways.
    browser.viewport(390, 844, true);
    browser.wait_for(
        "document.documentElement.scrollWidth <= window.innerWidth",
        "the overview fitting a phone",
    );
    browser.screenshot("1-overview-phone");
    browser.viewport(1280, 800, false);

    // Failures by class, as the API groups them, with what fixes them.
    browser.open(&keeper.url("/console#/failures"));
    browser.wait_for(
        "document.querySelector('#failure-classes tr[data-class=schema]')",
        "the failures table",
    );
    let failures = keeper.get("/sync/failures");
    for class in failures["classes"].as_array().unwrap() {
        let name = class["error_class"].as_str().unwrap();
        for field in ["failed", "waiting"] {
            let shown = browser.eval(&text_of(&format!("tr[data-class={name}] [data-field={field}]")));
            assert_eq!(shown, class[field].to_string(), "{name} {field}");
        }
        let row = browser.eval(&text_of(&format!("tr[data-class={name}]")));
        assert!(
            row.as_str().unwrap().contains(class["remedy"].as_str().unwrap()),
            "{row}"
        );
    }
    browser.screenshot("2-failures");
    browser.viewport(390, 844, true);
    browser.screenshot("2-failures-phone");
    browser.viewport(1280, 800, false);

    // By keyboard alone: Tab to the schema class's Retry button, Enter.
    browser.eval("document.activeElement.blur()");
    browser.tab_to("el.dataset.retryClass === 'schema'", 40);
    browser.press("Enter");
    browser.wait_for(
        "document.getElementById('notice').textContent.includes('2 item(s) that failed with class schema')",
        "the retry's answer",
    );
    browser.wait_for(
        "!document.querySelector('tr[data-class=schema]') && document.querySelector('tr[data-class=locked]')",
        "the schema class gone from the page",
    );
    let failures = keeper.get("/sync/failures");
    assert!(
        failures["classes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["error_class"] != "schema"),
        "{failures}"
    );
    keeper.wait_until("/sync/items?user=zed&state=synced", "items 7 and 8 synced", |v| {
        v["count"] == 2
    });
    browser.screenshot("3-failures-after-retry");

    // The item list: searched through its form by keyboard.
    browser.open(&keeper.url("/console#/items"));
    browser.wait_for(
        "document.querySelector('form.filters input[name=system]')",
        "the search form",
    );
    browser.eval("document.querySelector('form.filters input[name=system]').focus()");
    browser.type_text("eisv");
    browser.press("Enter");
    browser.wait_for(
        "location.hash.includes('system=eisv') && document.getElementById('view').dataset.route === location.hash",
        "the search's results",
    );
    let shown =
        browser.eval("[...document.querySelectorAll('#item-list tbody tr')].map(r => Number(r.dataset.queueId))");
    let api: Vec<Value> = keeper.get("/sync/items?system=eisv")["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["queue_id"].clone())
        .collect();
    assert_eq!(shown, json!(api));
    assert_eq!(shown, json!([5, 3]));
    browser.screenshot("4-items");

    // An item: its report, why it is not in VH-Database, retry; then the row it became.
    browser.open(&keeper.url("/console#/item/9"));
    browser.wait_for(
        "document.querySelector('[data-retry-item=\"9\"]')",
        "item 9 with its Retry button",
    );
    let page = browser
        .eval("document.getElementById('view').innerText")
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        page.contains("out of attempts") && page.contains("database is locked"),
        "{page}"
    );
    assert!(
        page.contains("Bones three") && page.contains("Zed"),
        "the keeper.db report: {page}"
    );
    browser.screenshot("5-item-failed");
    browser.eval("document.querySelector('[data-retry-item=\"9\"]').click()");
    let synced = keeper.wait_until("/sync/items/9", "item 9 synced", |v| {
        v["item"]["sync_status"] == "synced"
    });
    let haven_id = synced["item"]["haven_discovery_id"].as_i64().unwrap();
    browser.wait_for(
        &format!("document.querySelector('[data-field=haven-id]')?.textContent === 'discoveries row #{haven_id}'"),
        "the VH-Database row the item became",
    );
    assert_eq!(
        synced["haven_row"]["id"], haven_id,
        "the VH-Database row itself: {synced}"
    );
    browser.wait_for(
        &format!("document.getElementById('vh-title')?.textContent === 'VH-Database row #{haven_id}'"),
        "the VH-Database row's columns",
    );
    assert_eq!(
        browser
            .eval(&text_of("[data-field=provenance]"))
            .as_str()
            .unwrap()
            .split(' ')
            .next(),
        synced["item"]["provenance"]["name"].as_str()
    );
    browser.screenshot("5-item-synced");

    // Live: a change shows without a reload.
    let loaded_at = browser.eval("document.getElementById('view').dataset.loadedAt");
    browser.open(&keeper.url("/console#/overview"));
    browser.wait_for(
        "document.querySelector('#view[data-page=overview] [data-count=synced]')",
        "the overview",
    );
    let before = browser.eval("document.getElementById('view').dataset.loadedAt");
    assert_ne!(before, loaded_at);
    browser.eval("window.stillThisPage = true");
    let (status, _, body) = keeper.request("POST", "/sync/retry/10", None);
    assert_eq!(status, 200, "{body}");
    keeper.wait_until("/sync/items/10", "item 10 synced", |v| {
        v["item"]["sync_status"] == "synced"
    });
    browser.wait_for(
        "document.querySelector('[data-count=synced]').textContent === '10'",
        "the new count, live",
    );
    assert_eq!(browser.eval("window.stillThisPage === true"), true, "no reload");
    browser.screenshot("6-overview-after");
    assert!(!keeper.log().contains("panicked"), "{}", keeper.log());
}

/// Types `name` into the Plugins page's name field and presses its Upload
/// button by keyboard.
fn upload_as(browser: &mut Browser, name: &str) {
    browser.eval("document.getElementById('plugin-name').value = ''");
    browser.eval("document.getElementById('plugin-name').focus()");
    browser.type_text(name);
    browser.tab_to("el.id === 'upload-plugin'", 5);
    browser.press("Enter");
}

/// Waits until the Plugins page shows `name` as the active plugin.
fn wait_for_active(browser: &mut Browser, name: &str) {
    browser.wait_for(
        &format!("document.querySelector('[data-field=plugin-name]')?.textContent === {name:?}"),
        &format!("{name} active"),
    );
}

#[tokio::test]
async fn plugins_are_uploaded_previewed_and_rolled_back_in_the_browser() {
    let mut env = Env::new();
    let plugins_dir = env.dir.path().join("plugins");
    std::fs::create_dir_all(&plugins_dir).unwrap();
    env.var("SYNC_API_KEY", KEY)
        .var("SYNC_INTERVAL", 1)
        .var("KEEPER_PLUGINS_DIR", plugins_dir.display())
        .var("KEEPER_PLUGIN_TIMEOUT_MS", 5_000);
    for text in ["Ribcage in a cave", "A jawbone"] {
        env.submit("🦴", "Oculi", "planet:Erren", text, &[]);
    }
    env.ok(&["sync", "--once"]);
    let keeper = Keeper::start(&env);
    let mut browser = open_browser(&env, "plugins");
    browser.open(&keeper.url("/console#/plugins"));
    browser.wait_for("document.activeElement.id === 'key-input'", "the key prompt");
    browser.type_text(KEY);
    browser.press("Enter");
    browser.wait_for("document.getElementById('upload-plugin')", "the upload form");

    // A plugin that fails the conformance check: refused, listed with its reason.
    let bad = common::guest_plugins::plugin("unknown-column");
    browser.choose_file("#plugin-file", &bad);
    browser.wait_for("document.querySelector('[data-field=chosen-file]')", "the chosen file");
    upload_as(&mut browser, "bad_columns");
    let reason = "schema mismatch: column no_such_column missing in VH-Database table discoveries";
    browser.wait_for(
        &format!("document.getElementById('notice').textContent.includes({reason:?})"),
        "the refusal's reason",
    );
    browser.wait_for(
        "document.querySelector('#plugin-rejected [data-field=reason]')",
        "the rejected plugin listed",
    );
    let listed = browser.eval(&text_of("#plugin-rejected tbody tr"));
    assert!(
        listed.as_str().unwrap().contains(reason) && listed.as_str().unwrap().contains("bad_columns.wasm"),
        "{listed}"
    );
    let api = keeper.get("/plugins");
    assert_eq!(api["active"]["name"], "keeper-default-mapper", "{api}");
    assert!(api["rejected"][0]["reason"].as_str().unwrap().contains(reason), "{api}");
    assert_eq!(std::fs::read_dir(&plugins_dir).unwrap().count(), 0, "no file left");
    browser.eval("document.getElementById('plugin-rejected').scrollIntoView()");
    browser.screenshot("1-rejected-upload");

    // A good one: its preview is a diff with the changed column marked.
    let good = common::guest_plugins::plugin("upper");
    browser.choose_file("#plugin-file", &good);
    browser.wait_for(
        &format!(
            "document.querySelector('[data-field=chosen-file]')?.textContent.startsWith({:?})",
            good.file_name().unwrap().to_string_lossy()
        ),
        "the good file chosen",
    );
    browser.eval("document.getElementById('preview-upload').click()");
    browser.wait_for(
        "document.querySelector('[data-field=preview-summary]')?.textContent === '2 of 2 item(s) would change.'",
        "the preview",
    );
    let marked = browser.eval(
        "[...document.querySelectorAll('#plugin-preview tr.changed')].map(r => r.dataset.column + ': ' + \
         [...r.querySelectorAll('td')].map(td => td.textContent).join(' → '))",
    );
    assert_eq!(
        marked,
        json!([
            "discovered_by: Explorer#1234 → EXPLORER#1234",
            "discovered_by: Explorer#1234 → EXPLORER#1234"
        ])
    );
    browser.eval("document.getElementById('plugin-preview').scrollIntoView()");
    browser.screenshot("2-preview-diff");

    // Upload it: active; then roll back by keyboard.
    upload_as(&mut browser, "shouting");
    wait_for_active(&mut browser, "test-upper");
    assert_eq!(keeper.get("/plugins")["active"]["name"], "test-upper");
    assert!(plugins_dir.join("shouting.wasm").is_file());
    browser.screenshot("3-uploaded");
    browser.eval("document.activeElement.blur()");
    browser.tab_to("el.id === 'rollback'", 40);
    browser.press("Enter");
    wait_for_active(&mut browser, "keeper-default-mapper");
    assert_eq!(keeper.get("/plugins")["active"]["name"], "keeper-default-mapper");
    browser.screenshot("4-rolled-back");
    browser.viewport(390, 844, true);
    browser.wait_for(
        "document.documentElement.scrollWidth <= window.innerWidth",
        "the plugins page fitting a phone",
    );
    browser.screenshot("4-rolled-back-phone");
    assert!(!keeper.log().contains("panicked"), "{}", keeper.log());
}

#[tokio::test]
async fn a_failing_canary_rolls_back_in_the_browser() {
    let mut env = Env::new();
    let plugins_dir = env.dir.path().join("plugins");
    std::fs::create_dir_all(&plugins_dir).unwrap();
    env.var("SYNC_API_KEY", KEY)
        .var("SYNC_INTERVAL", 1)
        .var("KEEPER_PLUGINS_DIR", plugins_dir.display())
        .var("KEEPER_PLUGIN_TIMEOUT_MS", 5_000)
        .var("KEEPER_CANARY_MIN_ITEMS", 3);
    let keeper = Keeper::start(&env);
    let mut browser = open_browser(&env, "canary");
    browser.open(&keeper.url("/console#/plugins"));
    browser.wait_for("document.activeElement.id === 'key-input'", "the key prompt");
    browser.type_text(KEY);
    browser.press("Enter");
    browser.wait_for("document.getElementById('upload-canary')", "the upload form");

    // The trapdoor plugin panics on every row marked `[panic]`: a canary of
    // half the items, started from the page.
    let trapdoor = common::guest_plugins::plugin("trapdoor");
    browser.choose_file("#plugin-file", &trapdoor);
    browser.wait_for("document.querySelector('[data-field=chosen-file]')", "the chosen file");
    browser.eval("document.getElementById('plugin-name').value = ''");
    browser.eval("document.getElementById('plugin-name').focus()");
    browser.type_text("trapdoor");
    browser.eval("document.getElementById('canary-percent').value = ''");
    browser.eval("document.getElementById('canary-percent').focus()");
    browser.type_text("50");
    browser.tab_to("el.id === 'upload-canary'", 5);
    browser.press("Enter");
    browser.wait_for(
        "document.querySelector('#canary [data-state=running]') && \
         document.querySelector('[data-field=canary-share]')?.textContent === '50% of the items'",
        "the canary running",
    );
    assert_eq!(keeper.get("/plugins")["canary"]["name"], "test-trapdoor");
    browser.screenshot("1-canary-running");

    for n in 0..8 {
        env.submit("🦴", "Oculi", "planet:Erren", &format!("Bones {n} [panic]"), &[]);
    }
    browser.wait_for(
        "document.querySelector('#canary [data-state=rolled_back]') && \
         document.querySelector('[data-field=canary-reason]')?.textContent.startsWith('the canary failed')",
        "the rollback on the page",
    );
    let api = keeper.get("/plugins");
    let reason = browser.eval(&text_of("[data-field=canary-reason]"));
    assert_eq!(reason.as_str(), api["canary"]["reason"].as_str(), "{api}");
    let counts = browser.eval(&text_of("[data-field=canary-counts]"));
    assert_eq!(
        counts.as_str().unwrap(),
        format!(
            "{} of {} item(s) failed (100%)",
            api["canary"]["canary_failed"], api["canary"]["canary_items"]
        ),
        "{api}"
    );
    assert_eq!(api["active"]["name"], "keeper-default-mapper", "{api}");
    browser.eval("document.getElementById('canary').scrollIntoView()");
    browser.screenshot("2-canary-rolled-back");
    // The items it failed are synced by the active plugin.
    keeper.wait_until("/sync/status", "every item synced", |s| s["queue"]["synced"] == 8);
    browser.viewport(390, 844, true);
    browser.wait_for(
        "document.documentElement.scrollWidth <= window.innerWidth",
        "the canary fitting a phone",
    );
    browser.screenshot("2-canary-rolled-back-phone");
}
