//! Mapping plugins end to end, with the real binary and plugins built from
//! source (tests/guest-plugins): hostile ones are rejected by `keeper plugin
//! check` and by hot reload with the right reason while the active plugin
//! keeps syncing; a hot swap loses and duplicates nothing and every row
//! carries the provenance of the version that wrote it; a fixed plugin heals
//! items the active one refused; the sandbox fails single items.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::guest_plugins::{plugin, store_by_hash};
use common::*;
use sqlx::Row;

/// The hostile plugins and the reason each must be rejected with.
const HOSTILE: [(&str, &str); 10] = [
    ("loop", "mapper timed out after 100 ms"),
    ("alloc", "mapper exceeded memory limit 32 MiB"),
    ("panic", "mapper trapped: "),
    (
        "unknown-column",
        "schema mismatch: column no_such_column missing in VH-Database table discoveries",
    ),
    (
        "wrong-type",
        "schema mismatch: column description holds Text values, the mapped value is integer",
    ),
    ("oversized", "mapper output too large"),
    ("wrong-world", "not a keeper:mapper/mapper@1.3.0 component"),
    ("not-wasm", "not a WebAssembly component"),
    (
        "big-needs",
        "the plugin asks for 64 MiB of memory per instance (requested-limits), above this keeper's ceiling of \
         32 MiB: raise KEEPER_PLUGIN_MEMORY_MIB to at least 64",
    ),
    (
        "by-position-disagrees",
        "map and map-values disagree on the warnings: map-values gives [",
    ),
];

/// The call deadline for tests of well-behaved plugins: far above what a
/// mapping takes, so a stalled thread on a loaded machine never fails one.
/// (The hostile `loop` plugin is checked against the contract's 100 ms.)
const BENIGN_DEADLINE_MS: u64 = 5_000;

/// Generous: hot reload compiles a component, which a busy 2-core machine
/// running a debug build may take a while to do.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// The Python plugins: the template of plugins/python-template as it is,
/// and copies of it with one change each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Python {
    /// The template: the default mapping, in Python.
    Template,
    /// Raises KeyError on rows whose description holds `[raise]`; passes the
    /// conformance check.
    Raises,
    /// Raises ZeroDivisionError on every row: fails the check.
    Broken,
}

impl Python {
    /// (the name its `info` gives, code appended to mapping.py).
    fn change(self) -> (&'static str, &'static str) {
        match self {
            Python::Template => ("keeper-python-mapper", ""),
            Python::Raises => (
                "test-python-raises",
                "\n_map_row = map_row\n\n\ndef map_row(columns, lookup):\n    \
                 if any(name == \"description\" and \"[raise]\" in str(value) for name, value in columns):\n        \
                 return {}[\"[raise] on purpose\"]\n    return _map_row(columns, lookup)\n",
            ),
            Python::Broken => (
                "test-python-broken",
                "\n\ndef map_row(columns, lookup):\n    return len(columns) / 0\n",
            ),
        }
    }
}

/// A built Python plugin and the mapping.py it was built from.
struct PythonPlugin {
    wasm: PathBuf,
    mapping_py: PathBuf,
}

impl PythonPlugin {
    /// The 1-based line of mapping.py holding `code`.
    fn line_of(&self, code: &str) -> usize {
        let source = std::fs::read_to_string(&self.mapping_py).expect("read mapping.py");
        1 + source
            .lines()
            .position(|l| l.contains(code))
            .unwrap_or_else(|| panic!("{code:?} not in {}", self.mapping_py.display()))
    }
}

/// Builds (once: the result is kept under a name made from its sources'
/// hash, so every test process and later runs share it) the Python plugin
/// `variant` with plugins/python-template/build.sh, under a file lock.
/// `.ci/run` builds the template before the tests and names it in
/// `KEEPER_PYTHON_PLUGIN`; when that is set it is used, and must exist.
/// Building needs python3 with venv and, the first time, PyPI (for the
/// pinned componentize-py): without them the test fails saying so.
fn python_plugin(variant: Python) -> PythonPlugin {
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/python-template");
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-plugins");
    let src = work.join(format!("{variant:?}-src").to_lowercase());
    let (name, appended) = variant.change();
    if variant == Python::Template
        && let Some(given) = std::env::var_os("KEEPER_PYTHON_PLUGIN")
    {
        let wasm = PathBuf::from(given);
        assert!(
            wasm.is_file(),
            "KEEPER_PYTHON_PLUGIN names {}, which does not exist: build it with plugins/python-template/build.sh \
             (.ci/run does), or unset it to have the test build it",
            wasm.display()
        );
        return PythonPlugin {
            wasm,
            mapping_py: template.join("mapping.py"),
        };
    }
    std::fs::create_dir_all(&work).expect("create the Python plugins' folder");
    let lock = std::fs::File::create(work.join("build.lock")).expect("create build lock");
    lock.lock().expect("take the Python plugins' build lock");

    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    let read = |path: PathBuf| std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    for file in ["app.py", "mapping.py", "build.sh"] {
        hash.update(read(template.join(file)));
    }
    hash.update(read(template.join("../../mapper-guest/wit/mapper.wit")));
    hash.update(appended.as_bytes());
    let wasm = work.join(format!("{variant:?}-{}.wasm", hex::encode(&hash.finalize()[..8])).to_lowercase());
    let mapping_py = src.join("mapping.py");
    if wasm.is_file() && mapping_py.is_file() {
        return PythonPlugin { wasm, mapping_py };
    }
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src).expect("create the variant's source folder");
    let app = read(template.join("app.py"));
    let app = String::from_utf8(app).expect("app.py is UTF-8");
    assert!(
        app.contains("NAME = \"keeper-python-mapper\""),
        "app.py no longer sets NAME"
    );
    std::fs::write(
        src.join("app.py"),
        app.replace("NAME = \"keeper-python-mapper\"", &format!("NAME = {name:?}")),
    )
    .expect("write app.py");
    let mut mapping = read(template.join("mapping.py"));
    mapping.extend_from_slice(appended.as_bytes());
    std::fs::write(&mapping_py, mapping).expect("write mapping.py");

    let mut build = Command::new("bash");
    build.arg(template.join("build.sh")).arg(&wasm).arg(&src);
    let out = output_within(build, Duration::from_secs(420), "plugins/python-template/build.sh");
    assert!(
        out.status.success() && wasm.is_file(),
        "building the Python plugin {variant:?} failed (it needs python3 with venv, and PyPI the first time):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    PythonPlugin { wasm, mapping_py }
}

/// An environment whose plugins folder is `<tmp>/plugins`.
fn plugin_env() -> (Env, PathBuf) {
    let mut env = Env::new();
    let dir = env.dir.path().join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    env.var("KEEPER_PLUGINS_DIR", dir.display())
        .var("SYNC_INTERVAL", 1)
        // Plain log lines, so the tests can read fields like `cached=true`.
        .var("NO_COLOR", 1);
    (env, dir)
}

/// [`plugin_env`] for tests of well-behaved plugins only (see
/// [`BENIGN_DEADLINE_MS`]).
fn benign_plugin_env() -> (Env, PathBuf) {
    let (mut env, dir) = plugin_env();
    env.var("KEEPER_PLUGIN_TIMEOUT_MS", BENIGN_DEADLINE_MS);
    (env, dir)
}

/// Drops a plugin into the folder the way an operator would (`cp`).
fn install(name: &str, dir: &Path) -> PathBuf {
    let dest = dir.join(format!("{name}.wasm"));
    std::fs::copy(plugin(name), &dest).unwrap();
    dest
}

/// `keeper run`, stopped with SIGTERM when dropped. Its log goes to a file
/// (a pipe nobody reads would fill up and stall it).
struct Running {
    child: Option<Child>,
    log: PathBuf,
}

impl Running {
    fn start(env: &Env) -> Running {
        Running::command(env, &["run"])
    }

    /// Any long-running keeper command (`run`, `pull --every`).
    fn command(env: &Env, args: &[&str]) -> Running {
        let log = env.dir.path().join("run.log");
        let child = env
            .command(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start keeper run");
        Running {
            child: Some(child),
            log,
        }
    }

    /// Stops it (failing the test if it does not exit within EXIT_TIMEOUT
    /// of SIGTERM) and returns its log.
    fn stop(mut self) -> String {
        let mut child = self.child.take().expect("running");
        let status = stop(&mut child);
        let log = self.log();
        assert!(status.success(), "keeper run failed: {log}");
        log
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log.display()))
    }

    /// Waits until the log holds a line containing every one of `parts`.
    fn wait_for_line(&self, parts: &[&str], timeout: Duration) {
        self.wait_for_lines(parts, 1, timeout);
    }

    /// Waits until `count` log lines hold every one of `parts`.
    fn wait_for_lines(&self, parts: &[&str], count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.lines().filter(|l| parts.iter().all(|p| l.contains(p))).count() >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {count} log lines with {parts:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }
}

async fn wait_for(path: &Path, sql: &str, want: i64, timeout: Duration) {
    wait_for_value(path, sql, want, timeout).await;
}

/// Waits until `want` items are synced.
async fn wait_for_synced(keeper: &Path, want: i64) {
    wait_for(
        keeper,
        "SELECT COUNT(*) FROM sync_queue WHERE sync_status = 'synced'",
        want,
        RELOAD_TIMEOUT,
    )
    .await;
}

/// The registry's reason for rejecting the file `name`.wasm, once recorded.
async fn rejection_reason(keeper: &Path, name: &str) -> String {
    let sql = format!("SELECT COUNT(*) FROM keeper_plugins WHERE status = 'rejected' AND source LIKE '%/{name}.wasm'");
    wait_for(keeper, &sql, 1, RELOAD_TIMEOUT).await;
    let mut conn = connect(keeper).await;
    sqlx::query_scalar("SELECT reason FROM keeper_plugins WHERE status = 'rejected' AND source LIKE ?1")
        .bind(format!("%/{name}.wasm"))
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// (name, version, hash) of the active plugin in the registry.
async fn active_plugin(keeper: &Path) -> (String, String, String) {
    let mut conn = connect(keeper).await;
    sqlx::query_as("SELECT name, version, hash FROM keeper_plugins WHERE status = 'active'")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

async fn wait_for_active(keeper: &Path, name: &str) {
    let sql = format!("SELECT COUNT(*) FROM keeper_plugins WHERE status = 'active' AND name = '{name}'");
    wait_for(keeper, &sql, 1, RELOAD_TIMEOUT).await;
}

/// Plugins the registry recorded as rejected.
async fn rejected_count(keeper: &Path) -> i64 {
    query_i64(keeper, "SELECT COUNT(*) FROM keeper_plugins WHERE status = 'rejected'").await
}

/// VH rows the ledger says plugin `name` wrote.
async fn written_by(haven: &Path, name: &str) -> i64 {
    let mut conn = connect(haven).await;
    sqlx::query_scalar("SELECT COUNT(*) FROM keeper_sync_ledger WHERE plugin_name = ?1")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// Dates a file into the future, so it is the newest in its folder.
fn make_newest(path: &Path) {
    let file = std::fs::File::options().append(true).open(path).unwrap();
    file.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
}

fn jsonl(n: usize, prefix: &str) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(
            &serde_json::json!({
                "discovery_type": "💎", "system_name": "Oculi", "location": "planet:Erren",
                "description": format!("{prefix} {i}"), "username": "Miner Joe", "resource_type": "Gold",
            })
            .to_string(),
        );
        s.push('\n');
    }
    s
}

fn submit_many(env: &Env, n: usize, prefix: &str) {
    let out = env.run_with_stdin(&["submit", "--json", "-"], jsonl(n, prefix).as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test]
async fn check_rejects_each_hostile_plugin_with_its_reason() {
    let env = Env::new();
    for (name, reason) in HOSTILE {
        let file = plugin(name);
        let out = env.run(&["plugin", "check", file.to_str().unwrap()]);
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{name} passed the check:\n{report}");
        assert!(report.contains("verdict  rejected: "), "{name}:\n{report}");
        assert!(report.contains(reason), "{name}: expected {reason:?} in\n{report}");
        assert!(stderr(&out).contains(reason), "{name}: {}", stderr(&out));
    }
    // The panic's own message is reported, not just "unreachable".
    let out = env.run(&["plugin", "check", plugin("panic").to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("panics on purpose"));

    // Well-behaved plugins pass, with a per-case report; ones built against
    // the earlier contracts (keeper:mapper@1.0.0, @1.1.0) too.
    let mut benign = Env::new();
    benign.var("KEEPER_PLUGIN_TIMEOUT_MS", BENIGN_DEADLINE_MS);
    for name in [
        "upper",
        "lenient",
        "trapdoor",
        "contract-1-0",
        "contract-1-1",
        "by-position",
    ] {
        let report = benign.ok(&["plugin", "check", plugin(name).to_str().unwrap()]);
        assert!(report.contains("verdict  accepted"), "{name}:\n{report}");
        assert!(report.contains("0 failed"), "{name}:\n{report}");
        assert!(report.contains("🦴 maximum lengths"), "{report}");
        let calls = if name == "by-position" {
            "calls    map-values"
        } else {
            "calls    map,"
        };
        assert!(report.contains(calls), "{name}:\n{report}");
    }
    // A check needs no keeper.db and leaves none behind: nothing is recorded.
    assert!(
        !env.keeper.exists() && !benign.keeper.exists(),
        "plugin check created a keeper.db"
    );
}

#[tokio::test]
async fn hot_reload_rejects_hostile_plugins_while_the_active_one_keeps_syncing() {
    let (env, dir) = plugin_env();
    submit_many(&env, 5, "Before");
    let run = Running::start(&env);
    wait_for_synced(&env.keeper, 5).await;

    for (name, _) in HOSTILE {
        install(name, &dir);
    }
    for (name, reason) in HOSTILE {
        let recorded = rejection_reason(&env.keeper, name).await;
        assert!(
            recorded.contains(reason),
            "{name}: expected {reason:?}, recorded {recorded:?}"
        );
    }
    // Still the built-in plugin, and it still syncs.
    assert_eq!(active_plugin(&env.keeper).await.0, "keeper-default-mapper");
    submit_many(&env, 5, "After");
    wait_for_synced(&env.keeper, 10).await;
    assert_eq!(written_by(&env.haven, "keeper-default-mapper").await, 10);

    // `keeper plugin list` shows the active one and every rejection with its reason.
    let list: serde_json::Value = serde_json::from_str(&env.ok(&["plugin", "list", "--json"])).unwrap();
    assert_eq!(list["active"]["name"], "keeper-default-mapper");
    assert_eq!(list["rejected"].as_array().unwrap().len(), HOSTILE.len());
    let text = env.ok(&["plugin", "list"]);
    assert!(
        text.lines()
            .any(|l| l.contains("reason: ") && l.contains("mapper timed out after 100 ms")),
        "{text}"
    );

    let log = run.stop();
    assert!(
        log.contains("mapping plugin rejected; the active plugin stays"),
        "{log}"
    );
}

/// The test plugin `name` grown past `size` bytes by a custom section at
/// its end, which the component model ignores: the same valid plugin, as
/// large as a test needs. Kept in `dir`.
fn padded(name: &str, size: usize, dir: &Path) -> PathBuf {
    const LABEL: &[u8] = b"padding";
    let mut bytes = std::fs::read(plugin(name)).expect("read test plugin");
    let payload = size.saturating_sub(bytes.len());
    let mut body_len = 1 + LABEL.len() + payload;
    bytes.push(0); // a custom section
    loop {
        let low = u8::try_from(body_len & 0x7f).expect("seven bits");
        body_len >>= 7;
        bytes.push(if body_len == 0 { low } else { low | 0x80 });
        if body_len == 0 {
            break;
        }
    }
    bytes.push(u8::try_from(LABEL.len()).expect("a short label"));
    bytes.extend_from_slice(LABEL);
    bytes.resize(bytes.len() + payload, 0);
    store_by_hash(dir, &format!("{name}-padded"), &bytes)
}

/// Compiling takes memory in proportion to a component's size, so one over
/// `KEEPER_PLUGIN_SIZE_MIB` is refused before it is compiled, by `keeper
/// plugin check` and by hot reload, with a message naming the setting; the
/// active plugin stays and goes on syncing. The same file under a larger
/// setting passes: the padding is valid and the size alone refused it.
#[tokio::test]
async fn a_component_over_the_size_limit_is_refused_by_check_and_hot_reload() {
    let (mut env, dir) = benign_plugin_env();
    let outside = env.dir.path().join("padded");
    std::fs::create_dir_all(&outside).unwrap();
    let big = padded("upper", 9 << 20, &outside);
    let big_arg = big.to_str().unwrap();

    let mut roomy = Env::new();
    roomy
        .var("KEEPER_PLUGIN_TIMEOUT_MS", BENIGN_DEADLINE_MS)
        .var("KEEPER_PLUGIN_SIZE_MIB", 16);
    let report = roomy.ok(&["plugin", "check", big_arg]);
    assert!(report.contains("verdict  accepted"), "{report}");

    env.var("KEEPER_PLUGIN_SIZE_MIB", 8);
    let refusal = "above this keeper's limit of 8 MiB for a plugin it compiles";
    let raise = "raise KEEPER_PLUGIN_SIZE_MIB to at least 10";
    let out = env.run(&["plugin", "check", big_arg]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "passed the check:\n{report}");
    assert!(report.contains("verdict  rejected: "), "{report}");
    assert!(report.contains(refusal) && report.contains(raise), "{report}");

    submit_many(&env, 3, "Before");
    let run = Running::start(&env);
    wait_for_synced(&env.keeper, 3).await;
    std::fs::copy(&big, dir.join("big.wasm")).unwrap();
    let recorded = rejection_reason(&env.keeper, "big").await;
    assert!(recorded.contains(refusal) && recorded.contains(raise), "{recorded}");
    assert_eq!(active_plugin(&env.keeper).await.0, "keeper-default-mapper");
    submit_many(&env, 3, "After");
    wait_for_synced(&env.keeper, 6).await;
    assert_eq!(written_by(&env.haven, "keeper-default-mapper").await, 6);
    assert_eq!(written_by(&env.haven, "test-upper").await, 0);
    run.stop();
}

#[tokio::test]
async fn hot_swap_during_sync_loses_nothing_and_records_who_wrote_each_row() {
    const FIRST: usize = 500;
    const SECOND: usize = 100;
    const BATCH: usize = 10;
    let (mut env, dir) = plugin_env();
    env.var("SYNC_BATCH_SIZE", BATCH)
        .var("SYNC_BATCH_MAX", BATCH)
        .var("HAVEN_BUSY_TIMEOUT_MS", 300_000)
        .var("KEEPER_PLUGIN_TIMEOUT_MS", BENIGN_DEADLINE_MS)
        // The worker's "batch mapped" lines say when the batches in flight
        // have been mapped.
        .var("KEEPER_LOG", "info,keeper::delivery=debug");
    submit_many(&env, FIRST, "Early");

    // Another program holds VH-Database's write lock: the first batch is
    // claimed and mapped by the default plugin, then waits to be written,
    // and the worker maps the second behind it (and no more: it maps one
    // batch ahead). The swap happens while both are in flight, with a
    // backlog behind them.
    let mut holder = connect(&env.haven).await;
    sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut holder).await.unwrap();
    let run = Running::start(&env);
    run.wait_for_line(
        &["writing a mapped batch to VH-Database", "plugin=keeper-default-mapper"],
        RELOAD_TIMEOUT,
    );
    run.wait_for_lines(&["batch mapped", "plugin=keeper-default-mapper"], 2, RELOAD_TIMEOUT);
    install("upper", &dir);
    wait_for_active(&env.keeper, "test-upper").await;
    let (_, version, upper_hash) = active_plugin(&env.keeper).await;
    assert_eq!(version, "1.1.0");
    sqlx::raw_sql("COMMIT").execute(&mut holder).await.unwrap();
    drop(holder);

    // Submitted after the swap: must be written by the new version.
    submit_many(&env, SECOND, "Late");
    let total = (FIRST + SECOND) as i64;
    wait_for(
        &env.keeper,
        "SELECT COUNT(*) FROM sync_queue WHERE sync_status = 'synced'",
        total,
        Duration::from_secs(300),
    )
    .await;
    run.stop();

    // Nothing lost, nothing twice.
    assert_eq!(query_i64(&env.haven, "SELECT COUNT(*) FROM discoveries").await, total);
    assert_eq!(
        query_i64(&env.haven, "SELECT COUNT(DISTINCT description) FROM discoveries").await,
        total
    );
    assert_eq!(
        query_i64(&env.haven, "SELECT COUNT(*) FROM keeper_sync_ledger").await,
        total
    );
    assert_eq!(
        query_i64(&env.keeper, "SELECT COUNT(DISTINCT haven_discovery_id) FROM sync_queue").await,
        total
    );

    // Each row shows the mapping of the version its provenance names.
    let ledger: std::collections::HashMap<i64, (String, String, String)> = rows(
        &env.haven,
        "SELECT haven_discovery_id, plugin_name, plugin_version, plugin_hash FROM keeper_sync_ledger",
    )
    .await
    .iter()
    .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
    .collect();
    let vh = rows(&env.haven, "SELECT id, discovered_by, description FROM discoveries").await;
    let (mut by_default, mut by_upper) = (0, 0);
    for row in &vh {
        let (name, _, hash) = &ledger[&row.get::<i64, _>("id")];
        let discovered_by: String = row.get("discovered_by");
        let description: String = row.get("description");
        match name.as_str() {
            "keeper-default-mapper" => {
                assert_eq!(discovered_by, "Miner Joe", "{description}");
                assert!(
                    description.starts_with("Early"),
                    "{description} written by the old version"
                );
                by_default += 1;
            }
            "test-upper" => {
                assert_eq!(discovered_by, "MINER JOE", "{description}");
                assert_eq!(hash, &upper_hash);
                by_upper += 1;
            }
            other => panic!("row {description} written by {other}"),
        }
    }
    // The batches in flight finished on the version they started with;
    // every later batch ran on the new one.
    assert_eq!((by_default, by_upper), (2 * BATCH, FIRST + SECOND - 2 * BATCH));

    // The queue's provenance agrees with the ledger's, item by item.
    let queue = rows(&env.keeper, "SELECT haven_discovery_id, metadata FROM sync_queue").await;
    for item in &queue {
        let meta: serde_json::Value = serde_json::from_str(&item.get::<String, _>("metadata")).unwrap();
        let (name, version, hash) = &ledger[&item.get::<i64, _>("haven_discovery_id")];
        assert_eq!(meta["plugin"]["name"], name.as_str());
        assert_eq!(meta["plugin"]["version"], version.as_str());
        assert_eq!(meta["plugin"]["hash"], hash.as_str());
    }
    // The old version is history now.
    let list: serde_json::Value = serde_json::from_str(&env.ok(&["plugin", "list", "--json"])).unwrap();
    assert_eq!(list["active"]["name"], "test-upper");
    assert_eq!(list["history"][0]["name"], "keeper-default-mapper");
}

#[tokio::test]
async fn a_fixed_plugin_heals_items_the_active_one_refused() {
    let (env, dir) = benign_plugin_env();
    let broken = env.submit("📖", "Oculi", "planet:Erren", "A story with broken metadata", &[]);
    let fine = env.submit("📖", "Oculi", "planet:Erren", "A story", &[]);
    let mut conn = connect(&env.keeper).await;
    sqlx::query("UPDATE discoveries SET metadata = '{not json' WHERE id = ?1")
        .bind(broken)
        .execute(&mut conn)
        .await
        .unwrap();

    let run = Running::start(&env);
    let refused = format!(
        "SELECT COUNT(*) FROM sync_queue WHERE discovery_id = {broken} AND sync_status = 'max_retries_exceeded'"
    );
    wait_for(&env.keeper, &refused, 1, RELOAD_TIMEOUT).await;
    let (_, _, error) = queue_state(&env.keeper, broken).await;
    assert!(error.unwrap().starts_with("mapping failed: metadata"));
    assert_eq!(queue_state(&env.keeper, fine).await.0, "synced");

    // The fix is dropped in; no retry is asked for.
    let file = install("lenient", &dir);
    let synced = format!("SELECT COUNT(*) FROM sync_queue WHERE discovery_id = {broken} AND sync_status = 'synced'");
    wait_for(&env.keeper, &synced, 1, RELOAD_TIMEOUT).await;
    let meta: String = sqlx::query_scalar("SELECT metadata FROM sync_queue WHERE discovery_id = ?1")
        .bind(broken)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    assert_eq!(meta["plugin"]["name"], "test-lenient");
    assert!(meta["warnings"].to_string().contains("metadata ignored"), "{meta}");
    assert_eq!(written_by(&env.haven, "test-lenient").await, 1);

    // Removing the active plugin's file falls back to the built-in one.
    std::fs::remove_file(&file).unwrap();
    wait_for_active(&env.keeper, "keeper-default-mapper").await;
    let log = run.stop();
    assert!(log.contains("queued again for the new version"), "{log}");
}

#[tokio::test]
async fn start_up_takes_the_newest_valid_plugin_and_reuses_its_compiled_form() {
    let (env, dir) = benign_plugin_env();
    install("upper", &dir);
    // Newer, but rejected: start-up skips it.
    let hostile = install("unknown-column", &dir);
    make_newest(&hostile);

    let id = env.submit("🦗", "Oculi", "planet:Erren", "Moth", &[]);
    let first = env.run(&["sync", "--once"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(queue_state(&env.keeper, id).await.0, "synced");
    assert_eq!(
        rows(&env.haven, "SELECT discovered_by FROM discoveries").await[0].get::<String, _>(0),
        "EXPLORER#1234"
    );
    assert_eq!(active_plugin(&env.keeper).await.0, "test-upper");
    assert!(
        rejection_reason(&env.keeper, "unknown-column")
            .await
            .contains("no_such_column")
    );
    assert!(stderr(&first).contains("cached=false"), "{}", stderr(&first));

    // The compiled plugin was kept beside keeper.db; the next start uses it.
    let cache = env.dir.path().join("plugin-cache");
    let cached = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"));
    assert!(cached.count() >= 1);
    let second = env.run(&["sync", "--once"]);
    assert!(second.status.success());
    assert!(stderr(&second).contains("cached=true"), "{}", stderr(&second));
    // The same rejection is not recorded twice.
    assert_eq!(rejected_count(&env.keeper).await, 1);
}

/// A report per case (its description, and `None` when it must sync, or
/// the state and the error its item must end in), then one `sync --once`
/// that must print `summary`; returns the reports' ids.
async fn sync_cases(env: &Env, cases: &[(&str, Option<(&str, &str)>)], summary: &str) -> Vec<i64> {
    let ids: Vec<i64> = cases
        .iter()
        .map(|(d, _)| env.submit("⚙️", "Oculi", "planet:Erren", d, &[]))
        .collect();
    let out = env.ok(&["sync", "--once"]);
    assert!(out.contains(summary), "{out}");
    for (id, (description, expected)) in ids.iter().zip(cases) {
        let (status, _, error) = queue_state(&env.keeper, *id).await;
        match expected {
            None => assert_eq!(status, "synced", "{description}"),
            Some((want_status, reason)) => {
                assert_eq!(&status, want_status, "{description}");
                let error = error.unwrap_or_default();
                assert!(error.starts_with(reason), "{description}: {error}");
            }
        }
    }
    ids
}

/// A trapdoor plugin's reports, under a deadline of 1000 ms: a plain one,
/// then one per misbehaviour (the panic's is the fourth), with the state
/// and the error each must end in.
const TRAPDOOR_CASES: [(&str, Option<(&str, &str)>); 5] = [
    ("plain one", None),
    ("[loop] spins", Some(("pending", "mapper timed out after 1000 ms"))),
    (
        "[alloc] hoards",
        Some(("max_retries_exceeded", "mapper exceeded memory limit 32 MiB")),
    ),
    ("[panic] panics", Some(("max_retries_exceeded", "mapper trapped: "))),
    (
        "[oversized] is huge",
        Some(("max_retries_exceeded", "mapper output too large")),
    ),
];

#[tokio::test]
async fn sandbox_limits_fail_single_items_and_the_worker_goes_on() {
    let (mut env, dir) = plugin_env();
    // A deadline no scheduling hiccup reaches, so only [loop] times out.
    env.var("KEEPER_PLUGIN_TIMEOUT_MS", 1000);
    install("trapdoor", &dir);
    let mut cases = TRAPDOOR_CASES.to_vec();
    cases.push(("plain two", None));
    let ids = sync_cases(&env, &cases, "synced 2, failed 4").await;
    let (_, _, panic) = queue_state(&env.keeper, ids[3]).await;
    assert!(panic.unwrap().contains("panics on purpose"));
    assert_eq!(written_by(&env.haven, "test-trapdoor").await, 2);

    // A newer version started with is a new version too: everything the
    // trapdoor refused or timed out on is healed by it.
    let newer = install("upper", &dir);
    make_newest(&newer);
    let out = env.ok(&["sync", "--once"]);
    assert!(out.contains("synced 4, failed 0"), "{out}");
    assert_eq!(written_by(&env.haven, "test-upper").await, 4);
}

/// The same limits where the host maps by position (world
/// mapper-by-position), plus the one failure only that world has: a cell
/// naming a column the plugin's output-columns does not.
#[tokio::test]
async fn a_plugin_mapping_by_position_is_held_to_the_same_limits_and_its_cells_checked() {
    let (mut env, dir) = plugin_env();
    env.var("KEEPER_PLUGIN_TIMEOUT_MS", 1000);
    install("by-position", &dir);
    let mut cases = TRAPDOOR_CASES.to_vec();
    cases.push((
        "[bad-cell] points nowhere",
        Some((
            "max_retries_exceeded",
            "mapper broke the contract: a cell of column 9999, but output-columns names 63 (0 to 62)",
        )),
    ));
    cases.push(("plain two", None));
    let ids = sync_cases(&env, &cases, "synced 2, failed 5").await;
    let (_, _, panic) = queue_state(&env.keeper, ids[3]).await;
    assert!(panic.unwrap().contains("panics on purpose"));
    assert_eq!(written_by(&env.haven, "test-by-position").await, 2);
    // Mapped by position, the rows are the default mapping's, column for
    // column: the by-position plugin maps through the default mapping.
    let mut conn = connect(&env.haven).await;
    let (by, kind, planet): (String, String, Option<i64>) = sqlx::query_as(
        "SELECT discovered_by, location_type, planet_id FROM discoveries WHERE description = 'plain one'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!((by.as_str(), kind.as_str()), ("Explorer#1234", "planet"));
    assert!(planet.is_some(), "Erren of Oculi is in the sample VH-Database");
}

#[tokio::test]
async fn a_plugin_is_held_to_the_limits_it_declares_and_refused_above_a_ceiling() {
    let (mut env, dir) = plugin_env();
    // Ceilings far above what `small-needs` asks for (4 MiB, 50 ms), so
    // every failure below is its own limit's, not the operator's.
    env.var("KEEPER_PLUGIN_TIMEOUT_MS", 1000)
        .var("KEEPER_PLUGIN_MEMORY_MIB", 48);
    let small = plugin("small-needs");
    let report = env.ok(&["plugin", "check", small.to_str().unwrap()]);
    assert!(report.contains("verdict  accepted"), "{report}");
    assert!(
        report.contains("limits   memory 4 MiB (requested), 50 ms per call (requested)"),
        "{report}"
    );
    let checked: serde_json::Value =
        serde_json::from_str(&env.ok(&["plugin", "check", "--json", small.to_str().unwrap()])).unwrap();
    assert_eq!(
        checked["limits"],
        serde_json::json!({
            "requested": {"memory_mib": 4, "timeout_ms": 50},
            "granted": {"memory_mib": 4, "timeout_ms": 50},
        })
    );
    // A plugin that declares nothing gets the ceilings.
    let report = env.ok(&["plugin", "check", plugin("upper").to_str().unwrap()]);
    assert!(
        report.contains(
            "limits   memory 48 MiB (the ceiling, KEEPER_PLUGIN_MEMORY_MIB), 1000 ms per call (the ceiling, \
             KEEPER_PLUGIN_TIMEOUT_MS)"
        ),
        "{report}"
    );

    // Above the ceiling: refused, naming the need, the ceiling and the
    // setting; not one case run. Raised to the need, it passes.
    let big = plugin("big-needs");
    let out = env.run(&["plugin", "check", big.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{report}");
    assert!(
        report.contains(
            "verdict  rejected: the plugin asks for 64 MiB of memory per instance (requested-limits), above this \
             keeper's ceiling of 48 MiB: raise KEEPER_PLUGIN_MEMORY_MIB to at least 64"
        ),
        "{report}"
    );
    assert!(!report.contains("corpus"), "{report}");
    let mut raised = Env::new();
    raised
        .var("KEEPER_PLUGIN_MEMORY_MIB", 64)
        .var("KEEPER_PLUGIN_TIMEOUT_MS", 1000);
    let report = raised.ok(&["plugin", "check", big.to_str().unwrap()]);
    assert!(report.contains("verdict  accepted"), "{report}");
    assert!(report.contains("limits   memory 64 MiB (requested)"), "{report}");

    // At run time: the plugin's own 4 MiB and 50 ms stop it, not 48 MiB
    // and 1000 ms; the rows it maps are written.
    install("small-needs", &dir);
    let cases = [
        ("plain one", None),
        ("[loop] spins", Some(("pending", "mapper timed out after 50 ms"))),
        (
            "[alloc] hoards",
            Some(("max_retries_exceeded", "mapper exceeded memory limit 4 MiB")),
        ),
        ("plain two", None),
    ];
    sync_cases(&env, &cases, "synced 2, failed 2").await;
    assert_eq!(written_by(&env.haven, "test-small-needs").await, 2);

    // What it was granted, in `keeper plugin list` and `GET /plugins`.
    let list: serde_json::Value = serde_json::from_str(&env.ok(&["plugin", "list", "--json"])).unwrap();
    assert_eq!(list["active"]["name"], "test-small-needs", "{list}");
    assert_eq!(list["active"]["memory_mib"], 4, "{list}");
    assert_eq!(list["active"]["timeout_ms"], 50, "{list}");
    let text = env.ok(&["plugin", "list"]);
    assert!(
        text.lines()
            .any(|l| l.contains("test-small-needs") && l.contains("granted 4 MiB, 50 ms per call")),
        "{text}"
    );
    // Its file removed while keeper runs, the built-in plugin takes over
    // with the ceilings; the history keeps what `small-needs` was granted.
    // (Removed while keeper is stopped, start-up would take the store's
    // active version: a new host with an empty folder joins the others.)
    let (mut child, port, log) = spawn_run(&env);
    std::fs::remove_file(dir.join("small-needs.wasm")).unwrap();
    wait_for_active(&env.keeper, "keeper-default-mapper").await;
    let url = format!("http://127.0.0.1:{port}/plugins");
    let plugins: serde_json::Value = tokio::task::spawn_blocking(move || {
        let mut response = ureq::get(&url).call().expect("GET /plugins");
        serde_json::from_slice(&response.body_mut().read_to_vec().expect("body")).expect("JSON")
    })
    .await
    .expect("API thread");
    assert_eq!(plugins["active"]["name"], "keeper-default-mapper", "{plugins}");
    assert_eq!(plugins["active"]["memory_mib"], 48, "{plugins}");
    assert_eq!(plugins["active"]["timeout_ms"], 1000, "{plugins}");
    let earlier = plugins["history"]
        .as_array()
        .and_then(|h| h.iter().find(|p| p["name"] == "test-small-needs"))
        .unwrap_or_else(|| panic!("test-small-needs in the history: {plugins}\n{}", log.lock().unwrap()));
    assert_eq!(earlier["memory_mib"], 4, "{plugins}");
    assert_eq!(earlier["timeout_ms"], 50, "{plugins}");
    let status = stop(&mut child);
    assert!(status.success(), "{status}\n{}", log.lock().unwrap());
}

#[tokio::test]
async fn the_deadline_can_be_configured() {
    let mut env = Env::new();
    env.var("KEEPER_PLUGIN_TIMEOUT_MS", 30);
    // `keeper plugin` only reads keeper.db: there must be one.
    env.submit("🦗", "Oculi", "planet:Erren", "Moth", &[]);
    let out = env.run(&["plugin", "check", plugin("loop").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("mapper timed out after 30 ms"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn plugins_written_in_pieces_or_renamed_into_place_are_taken_once_complete() {
    use std::io::Write;
    let (env, dir) = benign_plugin_env();
    env.ok(&["sync", "--once"]); // creates keeper.db, so it can be watched from here
    let run = Running::start(&env);
    wait_for_active(&env.keeper, "keeper-default-mapper").await;

    // Written in two pieces with a pause, like a slow copy: the half-written
    // file is never judged (it would be rejected as not wasm).
    let bytes = std::fs::read(plugin("lenient")).unwrap();
    let (head, tail) = bytes.split_at(bytes.len() / 2);
    let mut file = std::fs::File::create(dir.join("lenient.wasm")).unwrap();
    file.write_all(head).unwrap();
    file.flush().unwrap();
    std::thread::sleep(Duration::from_millis(600));
    file.write_all(tail).unwrap();
    drop(file);
    wait_for_active(&env.keeper, "test-lenient").await;

    // Written aside under another name and renamed into place, like an editor.
    let aside = dir.join("upper.partial");
    std::fs::copy(plugin("upper"), &aside).unwrap();
    std::fs::rename(&aside, dir.join("upper.wasm")).unwrap();
    wait_for_active(&env.keeper, "test-upper").await;

    run.stop();
    assert_eq!(rejected_count(&env.keeper).await, 0);
}

#[tokio::test]
async fn polling_mode_takes_a_plugin_from_a_folder_that_sends_no_events() {
    let (mut env, dir) = plugin_env();
    env.var("KEEPER_PLUGINS_POLL", 1);
    env.ok(&["sync", "--once"]); // creates keeper.db, so it can be watched from here
    let run = Running::start(&env);
    // This run's own start-up (the registry already names the default from
    // `sync --once`): after it, only the folder scan can find a new file.
    run.wait_for_line(&["mapping plugin active", "source=built-in"], RELOAD_TIMEOUT);

    // Half a plugin first, as a slow copy onto a share would leave it for a
    // scan or two: it is never judged (it would be rejected as not wasm).
    let bytes = std::fs::read(plugin("lenient")).unwrap();
    let target = dir.join("lenient.wasm");
    std::fs::write(&target, &bytes[..bytes.len() / 2]).unwrap();
    run.wait_for_line(&["plugin file is not complete yet", "lenient.wasm"], RELOAD_TIMEOUT);
    std::fs::write(&target, &bytes).unwrap();
    wait_for_active(&env.keeper, "test-lenient").await;

    let log = run.stop();
    assert!(
        log.contains("Watching for mapping plugins (scanning the folder every 1s)"),
        "{log}"
    );
    assert_eq!(rejected_count(&env.keeper).await, 0);
}

#[tokio::test]
async fn preview_prints_the_columns_a_plugin_would_change() {
    let env = Env::new();
    for n in 0..3 {
        env.submit("🦴", "Ixiezh HV", "planet:Getre Beta", &format!("Bones {n}"), &[]);
    }
    env.ok(&["sync", "--once"]);
    let out = env.ok(&["plugin", "preview", plugin("upper").to_str().unwrap(), "--last", "2"]);
    assert!(out.contains("active    keeper-default-mapper 1.0.0"), "{out}");
    assert!(
        out.contains("candidate test-upper 1.1.0 (passes the conformance check)"),
        "{out}"
    );
    assert_eq!(
        out.matches("discovered_by: \"Explorer#1234\" → \"EXPLORER#1234\"")
            .count(),
        2,
        "{out}"
    );
    assert!(out.contains("2 of 2 item(s) would change"), "{out}");
    // Locations resolved through VH-Database: the moon is the same in both.
    assert!(!out.contains("moon_id"), "{out}");

    let out = env.ok(&["plugin", "preview", plugin("lenient").to_str().unwrap()]);
    assert!(out.contains("0 of 3 item(s) would change"), "{out}");
    let out = env.run(&["plugin", "preview", plugin("not-wasm").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not a WebAssembly component"), "{}", stderr(&out));
}

/// What the host does with a plugin that tries a capability the contract
/// withholds (README: "no WASI capability").
enum Sandboxed {
    /// Accepted and run; the attempt gets nothing. The probe reports what it
    /// got as a warning, compared word for word.
    Denied(&'static str),
    /// Refused at load time with this reason: it imports an interface the
    /// contract does not grant.
    Rejected(&'static str),
}

#[tokio::test]
async fn sandboxed_plugins_get_no_files_environment_sockets_clock_or_randomness() {
    // A real file and a real listener on this machine, named to the plugin.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("secret.txt");
    std::fs::write(&secret, "the host's secret").unwrap();

    // The contract grants no files, sockets, clocks or randomness: a plugin
    // importing them is refused before it runs. The environment is linked
    // (a Rust std guest imports it) and given empty.
    let cases = [
        (
            "probe-file",
            format!("read {}", secret.display()),
            Sandboxed::Rejected("wasi:filesystem/types@0.2."),
        ),
        (
            "probe-env",
            "env".to_owned(),
            Sandboxed::Denied("probe env: 0 variables, 0 arguments, KEEPER_PROBE_SECRET NotPresent"),
        ),
        (
            "probe-socket",
            format!("connect {}", listener.local_addr().unwrap()),
            Sandboxed::Rejected("wasi:sockets/"),
        ),
        ("probe-clock", "clock".to_owned(), Sandboxed::Rejected("wasi:clocks/")),
        ("probe-random", "random".to_owned(), Sandboxed::Rejected("wasi:random/")),
    ];
    let mut mismatches = Vec::new();
    for (probe, description, expected) in cases {
        let (mut env, dir) = benign_plugin_env();
        env.var("KEEPER_PROBE_SECRET", "leaked");
        install(probe, &dir);
        let id = env.submit("⚙️", "Oculi", "planet:Erren", &description, &[]);
        let out = env.run(&["sync", "--once"]);
        assert!(out.status.success(), "{probe}: {}", stderr(&out));
        match expected {
            Sandboxed::Denied(want) => {
                assert_eq!(active_plugin(&env.keeper).await.0, format!("test-{probe}"));
                assert_eq!(queue_state(&env.keeper, id).await.0, "synced", "{probe}");
                let mut conn = connect(&env.keeper).await;
                let meta: String = sqlx::query_scalar("SELECT metadata FROM sync_queue WHERE discovery_id = ?1")
                    .bind(id)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
                let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
                let probes: Vec<&str> = meta["warnings"]
                    .as_array()
                    .map(|w| {
                        w.iter()
                            .filter_map(|w| w.as_str())
                            .filter(|w| w.starts_with("probe "))
                            .collect()
                    })
                    .unwrap_or_default();
                if probes != [want] {
                    mismatches.push(format!("{probe}: expected {want:?}, got {probes:?}"));
                }
            }
            Sandboxed::Rejected(reason) => {
                let recorded = rejection_reason(&env.keeper, probe).await;
                assert!(
                    recorded.contains(reason),
                    "{probe}: expected {reason:?}, recorded {recorded:?}"
                );
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    // Nothing reached the listener.
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("a plugin reached the host's listener: {other:?}"),
    }
}

/// A plugin is judged by the CPU time it uses, not by the wall-clock time a
/// busy machine takes to give it that much: `keeper plugin check` beside
/// busy threads (twice as many as cores, at the same priority) accepts the
/// default plugin, and still rejects one that loops.
#[tokio::test]
async fn a_busy_machine_does_not_get_a_valid_plugin_rejected() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let mut env = Env::new();
    // Far above what one call of the default plugin costs, below the time
    // a thread can wait for a core when every core is busy.
    env.var("KEEPER_PLUGIN_TIMEOUT_MS", 20);
    // `keeper plugin` only reads keeper.db: there must be one.
    env.submit("🦗", "Oculi", "planet:Erren", "Moth", &[]);
    let default = Path::new(env!("OUT_DIR")).join("default_mapper.wasm");
    let looping = plugin("loop");
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let stop = Arc::new(AtomicBool::new(false));
    let hogs: Vec<_> = (0..2 * cores)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect();
    let good = env.run(&["plugin", "check", default.to_str().unwrap()]);
    let bad = env.run(&["plugin", "check", looping.to_str().unwrap()]);
    stop.store(true, Ordering::Relaxed);
    for hog in hogs {
        hog.join().unwrap();
    }
    let good_out = String::from_utf8_lossy(&good.stdout);
    assert!(good.status.success(), "{good_out}\n{}", stderr(&good));
    assert!(good_out.contains("keeper-default-mapper"), "{good_out}");
    assert!(good_out.contains("verdict  accepted"), "{good_out}");
    let bad_out = String::from_utf8_lossy(&bad.stdout);
    assert!(!bad.status.success(), "{bad_out}");
    assert!(bad_out.contains("mapper timed out after 20 ms"), "{bad_out}");
}

/// `keeper pull --every` watches its plugins folder as `keeper run` does: a
/// plugin dropped in between two rounds writes the rows of the next round,
/// and the bot host records it as their writer.
#[tokio::test]
async fn pull_every_takes_a_new_plugin_between_rounds() {
    let mut bot = Env::new();
    bot.var("USE_HAVEN_DATABASE", "false");
    let (mut bot_run, port, bot_log) = spawn_run(&bot);
    let synced = "SELECT COUNT(*) FROM sync_queue WHERE sync_status = 'synced'";
    let before = bot.submit("🦴", "Oculi", "planet:Erren", "Pulled before the new plugin", &[]);

    let (control_room, dir) = benign_plugin_env();
    let from = format!("http://127.0.0.1:{port}");
    let puller = Running::command(&control_room, &["pull", "--from", &from, "--every", "1"]);
    wait_for(&bot.keeper, synced, 1, RELOAD_TIMEOUT).await;

    install("upper", &dir);
    wait_for_active(&control_room.keeper, "test-upper").await;
    let after = bot.submit("🦴", "Oculi", "planet:Erren", "Pulled after the new plugin", &[]);
    wait_for(&bot.keeper, synced, 2, RELOAD_TIMEOUT).await;
    let log = puller.stop();

    assert_eq!(
        written_by(&control_room.haven, "keeper-default-mapper").await,
        1,
        "{log}"
    );
    assert_eq!(written_by(&control_room.haven, "test-upper").await, 1, "{log}");
    let mut conn = connect(&bot.keeper).await;
    for (discovery_id, writer) in [(before, "keeper-default-mapper"), (after, "test-upper")] {
        let recorded: String = sqlx::query_scalar(
            "SELECT json_extract(metadata, '$.plugin.name') FROM sync_queue WHERE discovery_id = ?1",
        )
        .bind(discovery_id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(recorded, writer, "bot host log:\n{}", bot_log.lock().unwrap());
    }
    stop(&mut bot_run);
}

/// The Python template passes the check as it is, is taken by hot reload
/// into a running `keeper run` from the compiled form the check left in the
/// cache, and the items it syncs carry its provenance.
#[tokio::test]
async fn the_python_template_passes_the_check_and_hot_reloads_into_keeper_run() {
    let python = python_plugin(Python::Template);
    let (env, dir) = benign_plugin_env();
    submit_many(&env, 3, "Before");
    let report = env.ok(&["plugin", "check", python.wasm.to_str().unwrap()]);
    assert!(report.contains("plugin   keeper-python-mapper "), "{report}");
    assert!(report.contains("0 failed"), "{report}");
    assert!(report.contains("verdict  accepted"), "{report}");
    assert!(!report.contains("compiled earlier"), "{report}");

    let run = Running::start(&env);
    wait_for_synced(&env.keeper, 3).await;
    std::fs::copy(&python.wasm, dir.join("python_mapper.wasm")).unwrap();
    wait_for_active(&env.keeper, "keeper-python-mapper").await;
    // Not compiled again: the check's compiled form was taken.
    run.wait_for_line(
        &["mapping plugin active", "name=keeper-python-mapper", "cached=true"],
        RELOAD_TIMEOUT,
    );
    let (_, version, hash) = active_plugin(&env.keeper).await;
    use sha2::Digest;
    assert_eq!(
        hash,
        hex::encode(sha2::Sha256::digest(std::fs::read(&python.wasm).unwrap()))
    );
    submit_many(&env, 4, "After");
    wait_for_synced(&env.keeper, 7).await;
    run.stop();
    let report = env.ok(&["plugin", "check", python.wasm.to_str().unwrap()]);
    assert!(
        report.contains("compiled earlier: taken from the compiled-plugin cache"),
        "{report}"
    );

    assert_eq!(written_by(&env.haven, "keeper-default-mapper").await, 3);
    assert_eq!(written_by(&env.haven, "keeper-python-mapper").await, 4);
    let ledger = rows(
        &env.haven,
        "SELECT l.plugin_version, l.plugin_hash, d.discovered_by, d.system_id, d.planet_id, d.resource_type
         FROM keeper_sync_ledger l JOIN discoveries d ON d.id = l.haven_discovery_id
         WHERE l.plugin_name = 'keeper-python-mapper'",
    )
    .await;
    let default_row = rows(
        &env.haven,
        "SELECT d.discovered_by, d.system_id, d.planet_id, d.resource_type
         FROM keeper_sync_ledger l JOIN discoveries d ON d.id = l.haven_discovery_id
         WHERE l.plugin_name = 'keeper-default-mapper' LIMIT 1",
    )
    .await;
    for row in &ledger {
        assert_eq!(row.get::<String, _>(0), version);
        assert_eq!(row.get::<String, _>(1), hash);
        // The same mapping as the Rust plugin: the same columns.
        assert_eq!(row.get::<String, _>(2), default_row[0].get::<String, _>(0));
        assert_eq!(
            row.get::<Option<String>, _>(3),
            default_row[0].get::<Option<String>, _>(1)
        );
        assert_eq!(row.get::<Option<i64>, _>(4), default_row[0].get::<Option<i64>, _>(2));
        assert_eq!(row.get::<String, _>(5), "Gold");
    }
    let queue = rows(
        &env.keeper,
        "SELECT q.metadata FROM sync_queue q JOIN discoveries d ON d.id = q.discovery_id
         WHERE d.description LIKE 'After%'",
    )
    .await;
    assert_eq!(queue.len(), 4);
    for item in &queue {
        let meta: serde_json::Value = serde_json::from_str(&item.get::<String, _>(0)).unwrap();
        assert_eq!(meta["plugin"]["name"], "keeper-python-mapper");
        assert_eq!(meta["plugin"]["hash"], hash.as_str());
    }
}

/// An uncaught Python exception is reported with its type, its message and
/// the last line of its traceback: in `keeper plugin check`'s output and
/// the registry (a plugin that raises on every row) and in the error of the
/// one item it raised on (a plugin that raises on some rows), while the
/// other items sync.
#[tokio::test]
async fn a_python_exception_reports_its_type_message_and_traceback_line() {
    let broken = python_plugin(Python::Broken);
    let env = Env::new();
    let out = env.run(&["plugin", "check", broken.wasm.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{report}");
    let line = broken.line_of("return len(columns) / 0");
    let expected =
        format!("mapper trapped: ZeroDivisionError: division by zero (at mapping.py, line {line}, in map_row)");
    assert!(
        report.contains(&format!("  FAIL  🦴 every field: {expected}")),
        "expected {expected:?} in\n{report}"
    );
    assert!(report.contains("44 failed"), "{report}");

    let raises = python_plugin(Python::Raises);
    let (env, dir) = benign_plugin_env();
    std::fs::copy(&raises.wasm, dir.join("raises.wasm")).unwrap();
    let fine = env.submit("💎", "Oculi", "planet:Erren", "Plain gold", &[]);
    let crash = env.submit("💎", "Oculi", "planet:Erren", "Gold [raise] please", &[]);
    let out = env.ok(&["sync", "--once"]);
    assert!(out.contains("synced 1, failed 1"), "{out}");
    assert_eq!(queue_state(&env.keeper, fine).await.0, "synced");
    let (status, _, error) = queue_state(&env.keeper, crash).await;
    assert_eq!(status, "max_retries_exceeded");
    let line = raises.line_of("return {}[\"[raise] on purpose\"]");
    assert_eq!(
        error.as_deref(),
        Some(
            format!("mapper trapped: KeyError: '[raise] on purpose' (at mapping.py, line {line}, in map_row)").as_str()
        )
    );
    assert_eq!(written_by(&env.haven, "test-python-raises").await, 1);
}

/// A plugin importing WASI's filesystem is refused before it is linked,
/// by `check` and by the watcher, with every such import named and how to
/// build without them.
#[tokio::test]
async fn a_plugin_importing_wasi_filesystem_is_refused_naming_the_imports() {
    let env = Env::new();
    let out = env.run(&["plugin", "check", plugin("probe-file").to_str().unwrap()]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{report}");
    for needle in [
        "verdict  rejected: imports what a mapping plugin may not use: ",
        "wasi:filesystem/types@0.2.",
        "wasi:filesystem/preopens@0.2.",
        "componentize-py ... componentize --stub-wasi",
        "no files (std::fs)",
    ] {
        assert!(report.contains(needle), "expected {needle:?} in\n{report}");
    }
    // The WASI a Rust std guest links anyway is allowed (it is given empty):
    // not named.
    assert!(!report.contains("wasi:cli/"), "{report}");
    assert!(!report.contains("wasi:io/"), "{report}");
}

/// plugins/python-template/side_by_side.py on the Python template and the
/// built-in Rust plugin: the same outcome, columns and warnings on every
/// conformance case (a refusal worded differently is shown, not counted),
/// and nothing would change on a keeper.db's synced items.
#[tokio::test]
async fn side_by_side_finds_the_python_template_maps_as_the_rust_plugin_does() {
    let python = python_plugin(Python::Template);
    let mut env = Env::new();
    env.var("KEEPER_PLUGIN_TIMEOUT_MS", BENIGN_DEADLINE_MS);
    env.submit("🦴", "Ixiezh HV", "planet:Getre Beta", "Bones on a moon", &[]);
    env.submit(
        "💎",
        "Oculi",
        "planet:Erren",
        "Gold",
        &["--field", "resource_type=Gold"],
    );
    env.submit("📜", "Nowhere Known", "space:station:Alpha", "A log", &[]);
    env.ok(&["sync", "--once"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/python-template/side_by_side.py");
    let rust = Path::new(env!("OUT_DIR")).join("default_mapper.wasm");
    let mut compare = Command::new("python3");
    compare
        .arg(&script)
        .arg(&python.wasm)
        .arg(&rust)
        .arg("--keeper-db")
        .arg(&env.keeper)
        .current_dir(env.dir.path())
        .env("KEEPER_BIN", keeper_bin())
        .env("HAVEN_DB_PATH", &env.haven)
        .env("KEEPER_PLUGIN_TIMEOUT_MS", BENIGN_DEADLINE_MS.to_string());
    let out = output_within(compare, Duration::from_secs(420), "side_by_side.py");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}\n{}", stderr(&out));
    assert!(shown.contains("keeper-python-mapper 1.0.0: accepted"), "{shown}");
    assert!(shown.contains("keeper-default-mapper 1.0.0: accepted"), "{shown}");
    assert!(shown.contains("44 case(s): 0 difference(s)"), "{shown}");
    assert!(shown.contains("0 of 3 item(s) would change"), "{shown}");
}
