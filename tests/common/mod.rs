//! What the end-to-end tests share: a temporary work folder with real
//! database files, the real `keeper` binary, and SQL helpers to look inside.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::sqlite::{SqliteConnectOptions, SqliteRow};
use sqlx::{Connection, SqliteConnection};

/// The sample VH-Database from the Control Room (5 systems, 20 planets, 5 moons).
pub const VH_SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/VH-Database.sample.db");
/// A keeper.db made by the Python bot (no sync_queue yet).
pub const KEEPER_LEGACY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/keeper.legacy.db");

/// Every variable the binary reads, cleared so the caller's shell cannot leak in.
const KEEPER_VARS: &[&str] = &[
    "KEEPER_DB_PATH",
    "HAVEN_DB_PATH",
    "USE_HAVEN_DATABASE",
    "SYNC_INTERVAL",
    "SYNC_BATCH_SIZE",
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
    "DISCORD_TOKEN",
    "DISCORD_GUILD_ID",
    "DISCORD_API_BASE",
    "KEEPER_LOG",
];

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
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keeper"));
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

    /// Runs the binary to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run keeper")
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

    /// Runs the binary with `input` on standard input.
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
        let out = child.wait_with_output().expect("wait keeper");
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

pub async fn scalar_i64(path: &Path, sql: &'static str) -> i64 {
    let mut conn = connect(path).await;
    sqlx::query_scalar(sql).fetch_one(&mut conn).await.expect(sql)
}

pub async fn rows(path: &Path, sql: &'static str) -> Vec<SqliteRow> {
    let mut conn = connect(path).await;
    sqlx::query(sql).fetch_all(&mut conn).await.expect(sql)
}

pub async fn exec(path: &Path, sql: &'static str) {
    let mut conn = connect(path).await;
    sqlx::raw_sql(sql).execute(&mut conn).await.expect(sql);
}

/// The queue row of a discovery as (status, attempts, error).
pub async fn queue_state(keeper: &Path, discovery_id: i64) -> (String, i64, Option<String>) {
    let mut conn = connect(keeper).await;
    sqlx::query_as("SELECT sync_status, sync_attempts, sync_error FROM sync_queue WHERE discovery_id = ?1")
        .bind(discovery_id)
        .fetch_one(&mut conn)
        .await
        .expect("queue row")
}

/// Starts `keeper run` (API on a free port); returns the process, the port
/// read from its `🌐 Sync API available on port N` line, and its log so far
/// (kept up to date by a thread).
pub fn spawn_run(env: &Env) -> (Child, u16, Arc<Mutex<String>>) {
    let mut child = env
        .command(&["run"])
        .env("KEEPER_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keeper run");
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("Sync API available on port ").nth(1) {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                let _ = tx.send(digits.parse::<u16>().expect("port number"));
            }
            sink.lock().unwrap().push_str(&line);
            sink.lock().unwrap().push('\n');
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(port) => (child, port, log),
        Err(_) => {
            let _ = child.kill();
            panic!("no `🌐 Sync API available on port N` line:\n{}", log.lock().unwrap());
        }
    }
}

/// Stops a keeper process with SIGTERM (SIGKILL after 20 s) and reaps it.
/// Asks a child to shut down as an operator would (SIGTERM).
pub fn sigterm(child: &Child) {
    // Never panics: it also runs from Drop, and the caller checks the exit.
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
}

pub fn terminate(child: &mut Child) {
    sigterm(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
