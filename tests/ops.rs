//! keeper as operators and scripts meet it, with the real binary: output to
//! a pipe that closes early, log lines for terminals, files and log shippers,
//! discovery types by name, help a person can use, and items waiting to
//! retry in `keeper status`.

use crate::common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// Generous for a debug binary on a busy 2-core machine; only reached when
/// something hangs.
const BOUND: Duration = Duration::from_secs(120);

/// A stderr file for `child`, so nothing blocks on a full pipe.
fn stderr_file(env: &Env, name: &str) -> (std::fs::File, std::path::PathBuf) {
    let path = env.dir.path().join(name);
    (std::fs::File::create(&path).expect("stderr file"), path)
}

fn jsonl(n: usize) -> String {
    (0..n)
        .map(|i| {
            serde_json::json!({
                "discovery_type": "💎", "system_name": "Oculi", "location": "planet:Erren",
                "description": format!("pipe {i}"), "username": "Miner Joe",
            })
            .to_string()
                + "\n"
        })
        .collect()
}

#[tokio::test]
async fn a_closed_stdout_after_a_commit_still_exits_0() {
    let env = Env::new();
    let (err, err_path) = stderr_file(&env, "submit.err");
    let mut child = env
        .command(&["submit", "--json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .expect("spawn keeper submit");
    // The reader goes away before keeper writes anything: it is still
    // waiting for its input, which only comes next.
    drop(child.stdout.take());
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(jsonl(3).as_bytes()).expect("write reports");
    drop(stdin);
    let status = wait_exit(&mut child, BOUND, "keeper submit with a closed stdout");
    let log = std::fs::read_to_string(err_path).unwrap_or_default();
    assert!(status.success(), "{status}: {log}");
    assert!(!log.contains("panicked"), "{log}");
    // Committed: a script that retried on failure would have stored them twice.
    assert_eq!(scalar_i64(&env.keeper, "SELECT COUNT(*) FROM discoveries").await, 3);
    assert_eq!(scalar_i64(&env.keeper, "SELECT COUNT(*) FROM sync_queue").await, 3);
}

#[test]
fn read_only_commands_end_quietly_on_closed_pipes() {
    let env = Env::new();
    env.run_with_stdin(&["submit", "--json", "-"], jsonl(2).as_bytes());
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["failed", "--json"],
        &["openapi"],
    ] {
        // Both ends closed at once, with debug logging: `2>&1 | head -0`.
        let mut child = env
            .command(args)
            .env("KEEPER_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keeper");
        drop(child.stdout.take());
        drop(child.stderr.take());
        let status = wait_exit(
            &mut child,
            BOUND,
            &format!("keeper {args:?} with closed stdout and stderr"),
        );
        assert!(status.success(), "keeper {args:?}: {status}");
    }
}

#[tokio::test]
async fn a_full_disk_behind_stdout_is_an_error_for_a_read_only_command() {
    let full = Path::new("/dev/full");
    if !full.exists() {
        return; // not a Linux machine; the unit test covers the rule
    }
    let env = Env::new();
    env.run_with_stdin(&["submit", "--json", "-"], jsonl(1).as_bytes());
    let to_full = || std::fs::File::options().write(true).open(full).unwrap();
    let child = env
        .command(&["status"])
        .stdout(to_full())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keeper status");
    let out = collect_within(child, BOUND, "keeper status > /dev/full");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("error: cannot write to standard output:"),
        "{}",
        stderr(&out)
    );
    // A command that committed says so in the log and exits 0.
    let mut child = env
        .command(&["submit", "--json", "-"])
        .stdin(Stdio::piped())
        .stdout(to_full())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keeper submit");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(jsonl(1).as_bytes()).expect("write a report");
    drop(stdin);
    let out = collect_within(child, BOUND, "keeper submit > /dev/full");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the command succeeded but its output was not written"),
        "{}",
        stderr(&out)
    );
    assert_eq!(scalar_i64(&env.keeper, "SELECT COUNT(*) FROM discoveries").await, 2);
}

#[test]
fn json_logs_are_one_object_per_line() {
    let mut env = Env::new();
    env.run_with_stdin(&["submit", "--json", "-"], jsonl(2).as_bytes());
    env.var("KEEPER_LOG_FORMAT", "json");
    let out = env.run(&["sync", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")))
        .collect();
    assert!(!lines.is_empty());
    for line in &lines {
        for key in ["timestamp", "level", "message", "target"] {
            assert!(line[key].is_string(), "{key} missing: {line}");
        }
    }
    let batch = lines
        .iter()
        .find(|l| l["message"] == "sync batch done")
        .unwrap_or_else(|| panic!("no batch line in {log}"));
    // The event's fields at the top level, typed.
    assert_eq!(batch["synced"], 2, "{batch}");
    assert_eq!(batch["level"], "INFO");
}

#[test]
fn an_unknown_log_format_stops_before_anything_is_touched() {
    let mut env = Env::new();
    env.var("KEEPER_LOG_FORMAT", "xml");
    let out = env.run(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "error: KEEPER_LOG_FORMAT=\"xml\" is not a log format: use `text` (the default) or `json`"
    );
    assert!(!env.keeper.exists(), "keeper.db was created");
}

/// Runs `keeper ARGS` on a pseudo-terminal (util-linux `script`) and returns
/// what the terminal showed.
fn on_terminal(env: &Env, args: &str, no_color: Option<&str>) -> String {
    let bin = keeper_bin().display().to_string();
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &format!("{bin} {args}"), "/dev/null"])
        .current_dir(env.dir.path())
        .env_remove("NO_COLOR")
        .env_remove("KEEPER_LOG")
        .env_remove("KEEPER_LOG_FORMAT")
        .env("KEEPER_DB_PATH", &env.keeper)
        .env("HAVEN_DB_PATH", &env.haven)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    if let Some(value) = no_color {
        cmd.env("NO_COLOR", value);
    }
    let mut child = cmd.spawn().expect("util-linux `script` runs keeper on a terminal");
    let mut shown = String::new();
    child.stdout.take().unwrap().read_to_string(&mut shown).unwrap();
    let status = wait_exit(&mut child, BOUND, "keeper on a terminal");
    assert!(status.success(), "{status}: {shown}");
    shown
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let env = Env::new();
    env.run_with_stdin(&["submit", "--json", "-"], jsonl(1).as_bytes());
    // A pipe: plain text.
    let out = env.run(&["sync", "--once"]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("mapping plugin active"), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains('\x1b'),
        "escape codes in a pipe: {:?}",
        stderr(&out)
    );
    // A terminal: colour, unless NO_COLOR says otherwise.
    let coloured = on_terminal(&env, "sync --once", None);
    assert!(coloured.contains("\x1b["), "no colour on a terminal: {coloured:?}");
    let plain = on_terminal(&env, "sync --once", Some("1"));
    assert!(plain.contains("mapping plugin active"), "{plain:?}");
    assert!(!plain.contains('\x1b'), "NO_COLOR ignored: {plain:?}");
}

#[tokio::test]
async fn types_by_short_name_on_the_command_line_and_in_json() {
    let env = Env::new();
    let id = env.submit("ruins", "Oculi", "planet:Erren", "Old walls", &[]);
    let id2 = env.submit("Fossil", "Oculi", "planet:Erren", "Bones", &[]);
    let out = env.run_with_stdin(
        &["submit", "--json", "-"],
        br#"{"discovery_type": "mineral", "system_name": "Oculi", "location": "planet:Erren", "description": "Gold", "username": "Joe", "resource_type": "Gold"}"#,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let id3: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let mut conn = connect(&env.keeper).await;
    let stored: Vec<(i64, String)> = sqlx::query_as("SELECT id, discovery_type FROM discoveries ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        stored,
        vec![(id, "🏛️".to_owned()), (id2, "🦴".to_owned()), (id3, "💎".to_owned())]
    );

    let before = std::fs::read(&env.keeper).unwrap();
    let out = env.run(&[
        "submit",
        "--type",
        "bones",
        "--system",
        "Oculi",
        "--location",
        "planet:Erren",
        "--description",
        "x",
        "--user",
        "Joe",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "discovery_type: \"bones\" is not one of 🦴 fossil, 📜 log, 🏛️ ruins, ⚙️ tech, 🦗 species, \
             💎 mineral, 🚀 ship, ⚡ hazard, 🆕 update, 📖 lore"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(&env.keeper).unwrap(),
        before,
        "a rejected report changed keeper.db"
    );
}

#[test]
fn submit_help_lists_the_type_names_its_own_options_first_and_an_example() {
    let env = Env::new();
    let help = env.ok(&["submit", "--help"]);
    for name in [
        "fossil", "log", "ruins", "tech", "species", "mineral", "ship", "hazard", "update", "lore",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(&format!("{name} "))),
            "{name} missing from:\n{help}"
        );
    }
    let own = help.find("--description <TEXT>").expect("submit's own option");
    let global = help.find("Global options").expect("a heading for the global options");
    let global_option = help.find("--keeper-db").expect("a global option");
    assert!(own < global && global < global_option, "{help}");
    assert!(help.contains("Examples:\n  keeper submit --type fossil"), "{help}");
    let short = env.ok(&["status", "--help"]);
    assert!(short.contains("--json  Print JSON"), "{short}");
    assert!(short.contains("Example:\n  keeper status --json"), "{short}");
}

#[test]
fn status_shows_the_items_waiting_to_retry() {
    let mut env = Env::new();
    env.var("HAVEN_DB_PATH", env.dir.path().join("missing/VH-Database.db").display())
        .var("SYNC_RETRY_BASE", 3600);
    env.run_with_stdin(&["submit", "--json", "-"], jsonl(2).as_bytes());
    let text = env.ok(&["status"]);
    assert!(text.starts_with("pending 2\n"), "{text}");
    assert!(!text.contains("waiting"), "nothing has failed yet: {text}");

    let out = env.ok(&["sync", "--once"]);
    assert_eq!(out.trim(), "synced 0, failed 2");
    let text = env.ok(&["status"]);
    assert!(
        text.starts_with("pending 2\nsyncing 0\nsynced  0\nfailed  0\n"),
        "{text}"
    );
    let waiting = text.lines().nth(4).unwrap_or_else(|| panic!("no waiting line: {text}"));
    assert!(
        waiting.starts_with("waiting 2 of the pending to retry, the next at ")
            && waiting.ends_with("; last errors: unavailable 2"),
        "{waiting}"
    );

    let json: Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    assert_eq!(json["queue"]["pending"], 2, "{json}");
    assert_eq!(json["waiting"]["count"], 2, "{json}");
    assert_eq!(
        json["waiting"]["last_error_classes"],
        serde_json::json!({"unavailable": 2})
    );
    let next = json["waiting"]["next_retry_at"].as_str().expect("next_retry_at");
    let next = time::OffsetDateTime::parse(next, &time::format_description::well_known::Rfc3339).unwrap();
    let ahead = next - time::OffsetDateTime::now_utc();
    assert!(
        ahead > time::Duration::minutes(50) && ahead <= time::Duration::hours(1),
        "next retry {next}, {ahead} ahead"
    );
    assert!(waiting.contains(&json["waiting"]["next_retry_at"].as_str().unwrap().to_string()));
}
