//! Where keeper finds its files and settings, as a new user meets it: which
//! files it will adopt as keeper.db (and which it leaves untouched), what
//! read-only commands do without one.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::*;
use sha2::{Digest, Sha256};

fn sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).expect("read file")))
}

/// Every command that opens keeper.db, with arguments that are valid
/// whatever the queue holds.
const COMMANDS: &[&[&str]] = &[
    &["status"],
    &["failed"],
    &["plugin", "list"],
    &["retry", "--all-failed"],
    &["cleanup"],
    &["backfill"],
    &["sync", "--once"],
    SUBMIT_BONES,
];

/// One report by its short type name, as a person would type it.
const SUBMIT_FOSSIL: &[&str] = &[
    "submit",
    "--type",
    "fossil",
    "--system",
    "Oculi",
    "--location",
    "planet:Erren",
    "--description",
    "bones",
    "--user",
    "u",
];

/// One report, as a person would submit it.
const SUBMIT_BONES: &[&str] = &[
    "submit",
    "--type",
    "🦴",
    "--system",
    "Oculi",
    "--location",
    "planet:Erren",
    "--description",
    "Bones",
    "--user",
    "Explorer",
];

/// Runs every command with KEEPER_DB_PATH at `target`; each must fail with
/// `expected` in its message and leave the file exactly as it was.
fn refused_untouched(env: &mut Env, target: &Path, expected: &[&str]) {
    env.var("KEEPER_DB_PATH", target.display());
    let before = sha256(target);
    for args in COMMANDS {
        let out = env.run(args);
        let err = stderr(&out);
        assert!(!out.status.success(), "keeper {args:?} accepted {}", target.display());
        for text in expected {
            assert!(err.contains(text), "keeper {args:?}: {text:?} not in:\n{err}");
        }
        assert!(
            err.contains(&target.display().to_string()),
            "keeper {args:?}: the path is not named:\n{err}"
        );
        assert_eq!(sha256(target), before, "keeper {args:?} changed {}", target.display());
    }
}

#[test]
fn a_vh_database_given_as_keeper_db_is_refused_and_left_byte_for_byte() {
    let mut env = Env::new();
    let target = env.dir.path().join("copy-of-VH-Database.db");
    std::fs::copy(VH_SAMPLE, &target).unwrap();
    set_writable(&target);
    refused_untouched(
        &mut env,
        &target,
        &["is not a keeper.db", "Control Room VH-Database", "HAVEN_DB_PATH"],
    );
    // (The Control Room keeps it in WAL mode, so SQLite's -wal/-shm files
    // beside it come and go as for any reader; the database itself is as it was.)
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_and_left_byte_for_byte() {
    let mut env = Env::new();
    let target = env.dir.path().join("notes.db");
    // Bytes of every value, more than a page's worth.
    let bytes: Vec<u8> = (0..10_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&target, &bytes).unwrap();
    refused_untouched(&mut env, &target, &["is not a keeper.db", "not a SQLite database"]);
    // Shorter than SQLite's header.
    std::fs::write(&target, b"hi").unwrap();
    refused_untouched(&mut env, &target, &["not a SQLite database"]);
}

#[tokio::test]
async fn another_programs_sqlite_database_is_refused_and_left_byte_for_byte() {
    let mut env = Env::new();
    let target = env.dir.path().join("other.db");
    std::fs::write(&target, b"").unwrap(); // SQLite's empty database
    exec(
        &target,
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT); INSERT INTO accounts (owner) VALUES ('x');",
    )
    .await;
    refused_untouched(&mut env, &target, &["no discoveries table", "accounts"]);
    // A discoveries table of yet another shape.
    exec(&target, "CREATE TABLE discoveries (id INTEGER PRIMARY KEY, what TEXT);").await;
    refused_untouched(&mut env, &target, &["lacks column(s) user_id, username"]);
}

#[test]
fn read_only_commands_never_create_keeper_db() {
    let mut env = Env::new();
    let target = env.dir.path().join("data/keeper.db");
    env.var("KEEPER_DB_PATH", target.display());
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["failed"],
        &["plugin", "list"],
        &["retry", "--all-failed"],
        &["cleanup"],
        &["backfill"],
    ] {
        let out = env.run(args);
        let err = stderr(&out);
        assert!(!out.status.success(), "keeper {args:?} succeeded without keeper.db");
        assert!(
            err.contains(&format!("there is no keeper.db at {}", target.display())),
            "keeper {args:?}:\n{err}"
        );
        assert!(!env.dir.path().join("data").exists(), "keeper {args:?} created data/");
    }
    // An empty file (`touch`) is not a keeper.db to read either, and stays empty.
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(&target, b"").unwrap();
    let out = env.run(&["status"]);
    assert!(stderr(&out).contains("(the file is empty)"), "{}", stderr(&out));
    assert_eq!(std::fs::metadata(&target).unwrap().len(), 0);
    // A command that stores reports makes it a keeper.db.
    env.submit("🦴", "Oculi", "planet:Erren", "Bones", &[]);
    assert!(env.ok(&["status"]).contains("pending 1"));
}

#[tokio::test]
async fn a_read_only_command_refuses_a_keeper_db_that_needs_upgrading_and_leaves_it() {
    let mut env = Env::new();
    std::fs::copy(KEEPER_LEGACY, &env.keeper).unwrap();
    set_writable(&env.keeper);
    let before = sha256(&env.keeper);
    for args in [&["status"][..], &["failed"], &["plugin", "list"]] {
        let out = env.run(args);
        let err = stderr(&out);
        assert!(!out.status.success(), "keeper {args:?}:\n{err}");
        assert!(
            err.contains("needs upgrading (schema version 0")
                && err.contains("run `keeper run` or `keeper sync --once`"),
            "keeper {args:?}:\n{err}"
        );
        assert_eq!(sha256(&env.keeper), before, "keeper {args:?} changed the file");
    }
    // The upgrade it names works, and then reading does.
    env.var("SYNC_INTERVAL", 3600);
    env.ok(&["sync", "--once"]);
    assert!(scalar_i64(&env.keeper, "SELECT COUNT(*) FROM keeper_sync_migrations").await >= 6);
    assert!(env.ok(&["status"]).contains("pending 0"));
}

/// The old bot's `.env.example`, exactly as it ships.
const OLD_BOT_ENV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/old-bot.env.example");

/// Runs keeper in `dir` with only what `.env` files say about the databases.
fn run_in(env: &Env, dir: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = env.command(args);
    cmd.current_dir(dir)
        .env_remove("KEEPER_DB_PATH")
        .env_remove("HAVEN_DB_PATH");
    output_within(cmd, COMMAND_TIMEOUT, &format!("keeper {args:?}"))
}

#[test]
fn the_old_bots_env_file_works_unchanged() {
    let env = Env::new();
    let dir = env.dir.path();
    std::fs::copy(OLD_BOT_ENV, dir.join(".env")).unwrap();
    let out = run_in(&env, dir, SUBMIT_BONES);
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    // DATABASE_PATH=./data/keeper.db is where the report went.
    assert!(dir.join("data/keeper.db").is_file(), "{log}");
    // Each old name is named with its new one at start-up.
    for (old, new) in [
        ("BOT_TOKEN", "DISCORD_TOKEN"),
        ("GUILD_ID", "DISCORD_GUILD_ID"),
        ("DATABASE_PATH", "KEEPER_DB_PATH"),
    ] {
        assert!(
            log.contains(&format!("{old} is the old bot's name for {new}: read as {new}")),
            "{old}:\n{log}"
        );
    }
    // `USE_HAVEN_DATABASE=true`, `DEBUG_MODE=True`, the empty channel ids and
    // the Windows path are all accepted; reading works as well.
    let out = run_in(&env, dir, &["status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("pending 1"),
        "{}",
        stderr(&out)
    );

    // The placeholder guild id stops only what needs it, naming the line to fix.
    let out = run_in(&env, dir, &["run"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let env_file = dir.join(".env");
    let expected = format!(
        "error: DISCORD_GUILD_ID (written GUILD_ID in {}) = \"your_guild_id_here\": not a Discord guild id",
        env_file.display()
    );
    assert!(err.contains(&expected), "{expected}\nnot in:\n{err}");
    assert!(err.contains("override it with --discord-guild-id"), "{err}");
    assert!(!err.contains("Sync API available"), "the API started anyway:\n{err}");
}

#[test]
fn in_the_old_bots_src_folder_the_env_file_above_is_read_and_bad_values_name_it() {
    let env = Env::new();
    let bot = env.dir.path().join("bot");
    let src = bot.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(bot.join(".env"), "DATABASE_PATH=../keeper.db\nSYNC_BATCH_SIZE=lots\n").unwrap();
    let out = run_in(&env, &src, &["status"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let expected = format!(
        "error: SYNC_BATCH_SIZE (in {}) = \"lots\": invalid digit found in string; \
         correct it there, or override it with --sync-batch-size",
        bot.join(".env").display()
    );
    assert!(err.contains(&expected), "{expected}\nnot in:\n{err}");
    // The working folder's .env comes first; the one above still counts.
    std::fs::write(src.join(".env"), "SYNC_BATCH_SIZE=5\n").unwrap();
    let out = run_in(&env, &src, &["status"]);
    let err = stderr(&out);
    assert!(
        err.contains("there is no keeper.db at ../keeper.db"),
        "DATABASE_PATH from the .env above src/ was not used:\n{err}"
    );
    // A flag overrides the bad variable, as for any other.
    std::fs::write(src.join(".env"), "").unwrap();
    let out = run_in(&env, &src, &["--sync-batch-size", "3", "sync", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(bot.join("keeper.db").is_file());
}

#[test]
fn booleans_and_empty_values_are_read_as_the_old_bot_wrote_them() {
    let mut env = Env::new();
    env.var("SYNC_INTERVAL", 3600);
    std::fs::write(env.dir.path().join(".env"), "USE_HAVEN_DATABASE=False\n").unwrap();
    let out = env.run(&["sync", "--once"]);
    assert!(
        stderr(&out).contains("USE_HAVEN_DATABASE=false: this machine does not write VH-Database"),
        "{}",
        stderr(&out)
    );
    for yes in ["True", "1", "yes", "ON"] {
        env.var("USE_HAVEN_DATABASE", yes);
        env.ok(&["sync", "--once"]);
    }
    env.var("USE_HAVEN_DATABASE", "maybe");
    let out = env.run(&["status"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("error: USE_HAVEN_DATABASE (in the environment) = \"maybe\": expected true or false")
            && err.contains("--use-haven-database"),
        "{err}"
    );
    // Empty means unset: the defaults apply, nothing is refused.
    for var in [
        "USE_HAVEN_DATABASE",
        "SYNC_BATCH_SIZE",
        "DISCORD_GUILD_ID",
        "SYNC_API_PORT",
        "GUILD_ID",
    ] {
        env.var(var, "");
    }
    std::fs::write(env.dir.path().join(".env"), "SYNC_INTERVAL=\nSYNC_LEASE=\n").unwrap();
    env.ok(&["sync", "--once"]);
}

#[test]
fn tilde_in_database_paths_is_the_home_folder() {
    let mut env = Env::new();
    // Env sets HOME to its folder.
    env.var("KEEPER_DB_PATH", "~/bot-data/keeper.db");
    env.submit("🦴", "Oculi", "planet:Erren", "Bones", &[]);
    assert!(env.dir.path().join("bot-data/keeper.db").is_file());
    assert!(!env.dir.path().join("~").exists());
}

/// One report, submitted and synced with `HAVEN_DB_PATH` unset, from `cwd`.
fn submit_and_sync_searching(env: &Env, cwd: &Path) {
    for args in [
        &[
            "submit",
            "--type",
            "🦴",
            "--system",
            "Oculi",
            "--location",
            "planet:Erren",
            "--description",
            "Found by the search",
            "--user",
            "Miner Joe",
        ][..],
        &["sync", "--once"][..],
    ] {
        let mut cmd = env.command(args);
        cmd.env_remove("HAVEN_DB_PATH").current_dir(cwd);
        let out = output_within(cmd, COMMAND_TIMEOUT, &format!("keeper {args:?}"));
        assert!(out.status.success(), "keeper {args:?}: {}", stderr(&out));
    }
}

/// A copy of the sample VH-Database at `path` (its folders made).
fn place_vh(path: &Path) {
    std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
    std::fs::copy(VH_SAMPLE, path).expect("copy VH sample");
    set_writable(path);
}

async fn found_by_the_search(vh: &Path) -> i64 {
    scalar_i64(
        vh,
        "SELECT COUNT(*) FROM discoveries WHERE description = 'Found by the search'",
    )
    .await
}

#[tokio::test]
async fn vh_database_on_a_redirected_desktop_is_found_before_home_desktop() {
    let env = Env::new();
    let home = env.dir.path();
    // A Desktop redirected elsewhere (OneDrive on Windows; XDG_DESKTOP_DIR here),
    // and the old bot's ~/Desktop: the platform's Desktop wins.
    let redirected = home.join("OneDrive/Desktop");
    std::fs::create_dir_all(home.join(".config")).expect("mkdir");
    std::fs::write(
        home.join(".config/user-dirs.dirs"),
        format!("XDG_DESKTOP_DIR=\"{}\"\n", redirected.display()),
    )
    .expect("write user-dirs.dirs");
    let on_redirected = redirected.join("untitled folder/Haven_mdev/data/VH-Database.db");
    let on_home_desktop = home.join("Desktop/Haven_mdev/data/VH-Database.db");
    place_vh(&on_redirected);
    place_vh(&on_home_desktop);
    submit_and_sync_searching(&env, home);
    assert_eq!(found_by_the_search(&on_redirected).await, 1);
    assert_eq!(found_by_the_search(&on_home_desktop).await, 0);
    assert!(
        !home.join("data/VH-Database.db").exists(),
        "a local VH-Database was made"
    );
}

#[tokio::test]
async fn vh_database_beside_the_bots_folder_is_found_as_the_old_bot_did() {
    let env = Env::new();
    let home = env.dir.path();
    // The old bot ran in Keeper/src with Control Room two folders up.
    let bot_folder = home.join("Keeper/src");
    std::fs::create_dir_all(&bot_folder).expect("mkdir");
    let vh = home.join("Haven_mdev/data/VH-Database.db");
    place_vh(&vh);
    submit_and_sync_searching(&env, &bot_folder);
    assert_eq!(found_by_the_search(&vh).await, 1);
    assert!(
        !bot_folder.join("data/VH-Database.db").exists(),
        "a local VH-Database was made"
    );
}

#[test]
fn without_a_vh_database_run_warns_and_creates_the_local_one_at_start_up() {
    let env = Env::new();
    let mut cmd = env.command(&["run"]);
    cmd.env_remove("HAVEN_DB_PATH");
    let (mut child, port, log) = spawn_api(cmd);
    wait_for_log(&log, "Sync worker started", Duration::from_secs(120));
    // `/health` names the file in use and how it was chosen.
    let health: serde_json::Value = ureq::get(format!("http://127.0.0.1:{port}/health"))
        .call()
        .expect("GET /health")
        .body_mut()
        .read_json()
        .expect("health JSON");
    assert_eq!(health["haven_db"]["path"], "data/VH-Database.db", "{health}");
    assert_eq!(health["haven_db"]["source"], "local_default", "{health}");
    let text = log.lock().expect("log").clone();
    assert!(
        text.contains("WARN") && text.contains("no VH-Database where the old bot looked"),
        "{text}"
    );
    assert!(
        text.contains("Haven_mdev/data/VH-Database.db"),
        "candidates not logged: {text}"
    );
    // Created at start-up, before anything was submitted or synced.
    assert!(env.dir.path().join("data/VH-Database.db").is_file(), "{text}");
    stop(&mut child);
}

/// Each `(variable, value, reason)` set alone stops a submission with exit
/// code 2 and `error: VAR (in the environment) = "value": reason`, and no
/// keeper.db is created.
fn refused_one_by_one(env: &mut Env, cases: &[(&str, &str, &str)]) {
    for &(var, value, reason) in cases {
        env.var(var, value);
        let out = env.run(SUBMIT_FOSSIL);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {err}");
        let expected = format!("error: {var} (in the environment) = \"{value}\": {reason}");
        assert!(err.contains(&expected), "{expected}\nnot in:\n{err}");
        assert!(!env.keeper.exists(), "{var}={value}: keeper.db was created");
        env.vars.retain(|(k, _)| k != var);
    }
}

#[test]
fn bad_evidence_settings_stop_the_command_naming_the_variable_and_touch_nothing() {
    let mut env = Env::new();
    refused_one_by_one(
        &mut env,
        &[
            (
                "SYNC_API_PUBLIC_URL",
                "bot.example.org:8080",
                "expected a URL starting with http:// or https://",
            ),
            ("KEEPER_EVIDENCE_MAX_BYTES", "0", "0 is not in 1..=67108864"),
            ("KEEPER_EVIDENCE_MAX_BYTES", "lots", "invalid digit found in string"),
        ],
    );
    // Empty means unset, as for every variable.
    env.var("SYNC_API_PUBLIC_URL", "").var("KEEPER_EVIDENCE_MAX_BYTES", "");
    env.ok(SUBMIT_FOSSIL);
}

#[test]
fn bad_worker_pacing_settings_stop_the_command_naming_the_variable_and_touch_nothing() {
    let mut env = Env::new();
    refused_one_by_one(
        &mut env,
        &[
            ("SYNC_COOLDOWN_MS", "10001", "10001 is not in 0..=10000"),
            ("SYNC_COOLDOWN_MS", "soon", "invalid digit found in string"),
            ("SYNC_COOLDOWN_MS", "-1", "invalid digit found in string"),
            ("SYNC_BATCH_MAX", "0", "0 is not in 1..=100000"),
        ],
    );
    // 0 is a setting (never wait), and empty means unset.
    env.var("SYNC_COOLDOWN_MS", "0");
    env.ok(SUBMIT_FOSSIL);
    env.var("SYNC_COOLDOWN_MS", "");
    env.ok(SUBMIT_FOSSIL);
}
