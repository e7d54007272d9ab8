//! What the end-to-end tests share: a temporary work folder with real
//! database files, the real `keeper` binary, and SQL helpers to look inside.
#![allow(dead_code)]

pub mod browser;
pub mod guest_plugins;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::sqlite::{SqliteConnectOptions, SqliteRow};
use sqlx::{Connection, SqliteConnection};

pub mod postgres;

/// The sample VH-Database from the Control Room (5 systems, 20 planets, 5 moons).
pub const VH_SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/VH-Database.sample.db");
/// A keeper.db made by the Python bot (no sync_queue yet).
pub const KEEPER_LEGACY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/keeper.legacy.db");

/// The `sync_queue` table as the Python bot creates it (its fixture has
/// none): states and attempts may be NULL, no column of keeper's own.
pub const OLD_BOT_SYNC_QUEUE: &str = "CREATE TABLE sync_queue (
    id INTEGER PRIMARY KEY, discovery_id INTEGER NOT NULL, sync_status TEXT DEFAULT 'pending',
    sync_attempts INTEGER DEFAULT 0, max_attempts INTEGER DEFAULT 10, last_sync_attempt DATETIME,
    next_retry_after DATETIME, sync_error TEXT, haven_discovery_id INTEGER,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP, synced_at DATETIME, metadata TEXT)";

/// Every variable the binary reads, cleared so the caller's shell cannot leak in.
const KEEPER_VARS: &[&str] = &[
    "KEEPER_DB_PATH",
    "KEEPER_DATABASE_URL",
    "HAVEN_DB_PATH",
    "USE_HAVEN_DATABASE",
    "SYNC_INTERVAL",
    "SYNC_BATCH_SIZE",
    "SYNC_BATCH_MAX",
    "SYNC_COOLDOWN_MS",
    "KEEPER_HOST_NAME",
    "SYNC_MAX_ATTEMPTS",
    "SYNC_RETRY_BASE",
    "SYNC_RETRY_MAX",
    "SYNC_LEASE",
    "HAVEN_BUSY_TIMEOUT_MS",
    "KEEPER_PLUGINS_DIR",
    "KEEPER_PLUGIN_TIMEOUT_MS",
    "KEEPER_PLUGIN_MEMORY_MIB",
    "SYNC_API_PORT",
    "SYNC_API_HOST",
    "SYNC_API_KEY",
    "SYNC_API_TLS_CERT",
    "SYNC_API_TLS_KEY",
    "SYNC_CA_CERT",
    "DISCORD_TOKEN",
    "DISCORD_GUILD_ID",
    "DISCORD_SHARDS",
    "DISCORD_SHARD_COUNT",
    "DISCORD_API_BASE",
    "KEEPER_ALERT_CHANNEL_ID",
    "KEEPER_SLOW_SYNC_SECS",
    "DISCORD_INTERACTION_SECS",
    "SYNC_API_PUBLIC_URL",
    "KEEPER_EVIDENCE_MAX_BYTES",
    "KEEPER_LOG",
    "KEEPER_LOG_FORMAT",
    "KEEPER_PLUGINS_POLL",
    "KEEPER_CANARY_MARGIN_PERCENT",
    "KEEPER_CANARY_MIN_ITEMS",
    "KEEPER_PLUGINS_FOLLOW_SECS",
    "NO_COLOR",
    // The old bot's names, read as DISCORD_TOKEN, DISCORD_GUILD_ID, KEEPER_DB_PATH.
    "BOT_TOKEN",
    "DISCORD_BOT_TOKEN",
    "GUILD_ID",
    "DATABASE_PATH",
    // Where the Desktop is looked up on Linux (with HOME, which is set).
    "XDG_CONFIG_HOME",
];

/// The binary under test: cargo's, or `KEEPER_TEST_BIN` when set (several
/// worktrees sharing one target folder overwrite each other's
/// `target/debug/keeper`; a copy taken right after the build stays put).
pub fn keeper_bin() -> PathBuf {
    std::env::var_os("KEEPER_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_keeper")))
}

/// A temporary work folder: keeper.db and a copy of the sample VH-Database.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub keeper: PathBuf,
    pub haven: PathBuf,
    pub vars: Vec<(String, String)>,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let keeper = dir.path().join("keeper.db");
        let haven = dir.path().join("VH-Database.db");
        std::fs::copy(VH_SAMPLE, &haven).expect("copy VH sample");
        set_writable(&haven);
        Env {
            dir,
            keeper,
            haven,
            vars: Vec::new(),
        }
    }

    /// Sets an environment variable for every later run of the binary.
    pub fn var(&mut self, key: &str, value: impl ToString) -> &mut Env {
        self.vars.retain(|(k, _)| k != key);
        self.vars.push((key.to_owned(), value.to_string()));
        self
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(keeper_bin());
        for var in KEEPER_VARS {
            cmd.env_remove(var);
        }
        cmd.current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .env("KEEPER_DB_PATH", &self.keeper)
            .env("HAVEN_DB_PATH", &self.haven)
            .env("SYNC_RETRY_BASE", "0")
            // `keeper run` serves the API: any free port, so parallel tests never collide.
            .env("SYNC_API_PORT", "0")
            .envs(self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs the binary to completion (killed, and the test failed, after
    /// [`COMMAND_TIMEOUT`]).
    pub fn run(&self, args: &[&str]) -> Output {
        output_within(
            self.command(args),
            COMMAND_TIMEOUT,
            &format!("keeper {args:?} to finish"),
        )
    }

    /// Runs the binary and insists it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "keeper {args:?} failed: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the binary with `input` on standard input (bounded like [`Env::run`]).
    pub fn run_with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keeper");
        let mut stdin = child.stdin.take().expect("stdin");
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = collect_within(child, COMMAND_TIMEOUT, &format!("keeper {args:?} to finish"));
        let _ = writer.join();
        out
    }

    /// Submits one report with flags; returns its discovery id.
    pub fn submit(&self, kind: &str, system: &str, location: &str, description: &str, extra: &[&str]) -> i64 {
        let mut args = vec![
            "submit",
            "--type",
            kind,
            "--system",
            system,
            "--location",
            location,
            "--description",
            description,
            "--user",
            "Explorer#1234",
            "--user-id",
            "123456789",
        ];
        args.extend_from_slice(extra);
        self.ok(&args).trim().parse().expect("submit prints the id")
    }
}

pub fn set_writable(path: &Path) {
    let mut perms = std::fs::metadata(path).expect("metadata").permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(path, perms).expect("chmod");
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A plain connection to a database file, for looking inside in tests.
pub async fn connect(path: &Path) -> SqliteConnection {
    let options = SqliteConnectOptions::from_str("sqlite:")
        .expect("options")
        .filename(path)
        .foreign_keys(false);
    SqliteConnection::connect_with(&options).await.expect("connect")
}

/// Closes a connection and waits until SQLite has let go of the file.
/// A dropped sqlx connection is closed later, on its own thread; the last
/// connection to close checkpoints the WAL into the main file and deletes
/// it, so a late close can write over a keeper.db a test has just replaced.
pub async fn close(conn: SqliteConnection) {
    conn.close().await.expect("close the connection");
}

/// One integer from `sql`, a statement written in the test.
pub async fn scalar_i64(path: &Path, sql: &'static str) -> i64 {
    query_i64(path, sql).await
}

pub async fn rows(path: &Path, sql: &'static str) -> Vec<SqliteRow> {
    let mut conn = connect(path).await;
    let rows = sqlx::query(sql).fetch_all(&mut conn).await.expect(sql);
    close(conn).await;
    rows
}

pub async fn exec(path: &Path, sql: &'static str) {
    let mut conn = connect(path).await;
    sqlx::raw_sql(sql).execute(&mut conn).await.expect(sql);
    close(conn).await;
}

/// The queue row of a discovery as (status, attempts, error).
pub async fn queue_state(keeper: &Path, discovery_id: i64) -> (String, i64, Option<String>) {
    let mut conn = connect(keeper).await;
    let state = sqlx::query_as("SELECT sync_status, sync_attempts, sync_error FROM sync_queue WHERE discovery_id = ?1")
        .bind(discovery_id)
        .fetch_one(&mut conn)
        .await
        .expect("queue row");
    close(conn).await;
    state
}

/// The WAL and shared-memory files beside a SQLite database file.
fn wal_files(db: &Path) -> [PathBuf; 2] {
    ["-wal", "-shm"].map(|suffix| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    })
}

/// Copies the database file of a stopped process, and its WAL if any (a
/// process that did not close its connections leaves its last commits
/// there), over `to`, as an operator backs keeper.db up or puts a backup
/// back. `to`'s own WAL and shared memory go first: they belong to the file
/// replaced. Every test connection to `to` must have been [`close`]d.
pub fn copy_stopped_db(from: &Path, to: &Path) {
    for file in wal_files(to) {
        let _ = std::fs::remove_file(file);
    }
    std::fs::copy(from, to).expect("copy the database file");
    let [wal, _] = wal_files(from);
    if wal.exists() {
        std::fs::copy(&wal, &wal_files(to)[0]).expect("copy the database's WAL");
    }
}

/// Starts `keeper run` (API on a free port); returns the process, the port
/// read from its `🌐 Sync API available on port N` line, and its log so far
/// (kept up to date by a thread).
pub fn spawn_run(env: &Env) -> (Child, u16, Arc<Mutex<String>>) {
    spawn_api(env.command(&["run"]))
}

/// Starts `cmd` (a `keeper run`) and waits for the port its API took.
pub fn spawn_api(mut cmd: Command) -> (Child, u16, Arc<Mutex<String>>) {
    // `info` (the port line is read from the log) unless the test asked for more.
    if !cmd
        .get_envs()
        .any(|(key, value)| key == "KEEPER_LOG" && value.is_some())
    {
        cmd.env("KEEPER_LOG", "info");
    }
    let (mut child, log) = spawn_logged(cmd);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let port = log.lock().unwrap().lines().find_map(|line| {
            let rest = line.split("Sync API available on port ").nth(1)?;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u16>().ok()
        });
        if let Some(port) = port {
            return (child, port, log);
        }
        if Instant::now() >= deadline || matches!(child.try_wait(), Ok(Some(_))) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "no `🌐 Sync API available on port N` line within 60 s:\n{}",
                log.lock().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `cmd` with stdout discarded and stderr (the log) read line by line
/// into a shared string by a thread, so a test can wait for a line while
/// the process runs (see [`wait_for_log`]).
pub fn spawn_logged(mut cmd: Command) -> (Child, Arc<Mutex<String>>) {
    let mut child = cmd
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keeper");
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    (child, log)
}

/// Longest one keeper command (`submit`, `sync --once`, `pull --once`, …)
/// may run in a test before it is killed and the test fails saying so.
/// Generous: a debug build on a loaded 2-core machine is slow, and only a
/// hang comes near it.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// Longest a keeper process may take to exit after SIGTERM. The promise is
/// "stops after the batch in hand"; a batch in a test takes well under a
/// second, so this only catches a process that ignores the signal.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits for `child` to exit, at most `timeout`; past it the child is killed
/// and the test fails naming what it waited for.
pub fn wait_exit(child: &mut Child, timeout: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) => {}
            Err(e) => panic!("waiting for {what}: {e}"),
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("timed out after {timeout:?} waiting for {what}; the process was killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cmd` to completion with its output captured, at most `timeout`
/// (see [`wait_exit`]).
pub fn output_within(mut cmd: Command, timeout: Duration, what: &str) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
    collect_within(child, timeout, what)
}

/// Reads a spawned child's piped stdout and stderr while waiting for it (a
/// full pipe would stall it), at most `timeout`.
pub fn collect_within(mut child: Child, timeout: Duration, what: &str) -> Output {
    fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_exit(&mut child, timeout, what);
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Asks a child to shut down as an operator would (SIGTERM); fails the test
/// when the signal cannot be sent (the process is already gone).
pub fn sigterm(child: &Child) {
    let pid = child.id();
    match send_sigterm(pid) {
        Ok(()) => {}
        Err(e) => panic!("cannot send SIGTERM to keeper (pid {pid}): {e}"),
    }
}

fn send_sigterm(pid: u32) -> Result<(), String> {
    let out = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .output()
        .map_err(|e| format!("cannot run kill: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "kill {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// SIGTERM, then waits for the exit at most [`EXIT_TIMEOUT`]: a process
/// that ignores the signal fails the test instead of hanging it.
pub fn stop(child: &mut Child) -> ExitStatus {
    sigterm(child);
    wait_exit(child, EXIT_TIMEOUT, "keeper to exit after SIGTERM")
}

/// [`stop`] for a child whose stdout/stderr are piped: returns its output.
pub fn stop_with_output(child: Child) -> Output {
    sigterm(&child);
    collect_within(child, EXIT_TIMEOUT, "keeper to exit after SIGTERM")
}

/// Clean-up for `Drop`: SIGTERM, SIGKILL after [`EXIT_TIMEOUT`], never
/// panics (it may run while a test is already failing). A test that checks
/// the shutdown itself uses [`stop`].
pub fn terminate(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = send_sigterm(child.id());
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Polls `sql` (one integer) on `path` until it returns `want`; fails after
/// `timeout` with the query and the last value.
pub async fn wait_for_value(path: &Path, sql: &str, want: i64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let got = query_i64(path, sql).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for `{sql}` = {want} on {}; last {got}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One integer from `sql` (built at run time; tests only).
pub async fn query_i64(path: &Path, sql: &str) -> i64 {
    let mut conn = connect(path).await;
    let value = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    close(conn).await;
    value
}

/// An HTTP client for keeper's API: every status is an answer to read (not
/// an error), and a request gives up after `timeout`.
pub fn http_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// A valid fossil report (`POST /discoveries`, `keeper submit --json`)
/// with `description`.
pub fn fossil_report(description: &str) -> serde_json::Value {
    serde_json::json!({
        "discovery_type": "🦴",
        "system_name": "Oculi",
        "location": "planet:Erren",
        "description": description,
        "username": "Explorer#1234",
        "user_id": "123456789",
        "species_type": "Vertebrate",
    })
}

/// The bytes of the file at `path` (a test plugin, a copied file); fails
/// the test naming the file when it cannot be read.
pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Waits until the shared log of a running keeper (see [`spawn_run`])
/// contains `needle`; fails after `timeout` with the log.
pub fn wait_for_log(log: &Arc<Mutex<String>>, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !log.lock().unwrap().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {needle:?} in the log:\n{}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A tool the test needs: `var` names an override, else PATH, else `fallback`.
pub fn tool(var: &str, name: &str, fallback: &[PathBuf]) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        return PathBuf::from(path);
    }
    if let Some(found) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
    {
        return found;
    }
    fallback.iter().find(|p| p.is_file()).cloned().unwrap_or_else(|| {
        panic!(
            "{name} is not installed (looked at ${var}, PATH and {fallback:?}); \
             .ci/run installs it, or set {var} to its path"
        )
    })
}

/// Chromium, for the tests that render pages (`KEEPER_CHROMIUM` overrides).
pub fn chromium() -> PathBuf {
    tool(
        "KEEPER_CHROMIUM",
        "chromium",
        &[
            PathBuf::from("/usr/bin/chromium"),
            PathBuf::from("/usr/bin/chromium-browser"),
        ],
    )
}
