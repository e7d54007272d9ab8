//! Where keeper finds its files and settings, as a new user meets it: which
//! files it will adopt as keeper.db (and which it leaves untouched), what
//! read-only commands do without one.

mod common;

use std::path::Path;

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
    &[
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
    ],
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
