//! The torture suite: the real binary killed with SIGKILL at random moments
//! while it works, VH-Database faults injected between kills, hostile
//! requests mixed into the load, and at the end one question: is every
//! acknowledged report in VH-Database exactly once (0 lost, 0 doubled), with
//! nothing left `syncing`?
//!
//! Every run prints its seed; `KEEPER_TORTURE_SEED=N` replays the same kill
//! timings and fault choices. The bounded version runs in CI; the long one:
//!
//! ```text
//! cargo test --test torture -- --ignored --nocapture
//! ```
//!
//! and any size between: `KEEPER_TORTURE_REPORTS`, `KEEPER_TORTURE_SYNC_KILLS`,
//! `KEEPER_TORTURE_RUN_KILLS`, `KEEPER_TORTURE_PULL_KILLS`,
//! `KEEPER_TORTURE_HOST_KILLS`.
//!
//! The multi-host run (`torture_hosts_on_postgres`) starts a PostgreSQL
//! cluster of its own (`.ci/postgres`, as `.ci/run` does), since it crashes
//! the server mid-run.
//!
//! RELIABILITY.md records the figures and the commands that produced them.

use crate::common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::Connection;

/// How hard one run pushes.
#[derive(Debug, Clone, Copy)]
struct Plan {
    reports: usize,
    sync_kills: usize,
    run_kills: usize,
    pull_kills: usize,
    /// SIGKILLs of one of three `keeper run` hosts on one PostgreSQL
    /// database; the server itself is crashed and restarted twice among them.
    host_kills: usize,
}

impl Plan {
    /// The CI share: a few minutes on two busy cores.
    const BOUNDED: Plan = Plan {
        reports: 2000,
        sync_kills: 20,
        run_kills: 10,
        pull_kills: 5,
        host_kills: 10,
    };
    /// `--ignored`: the issue's long run.
    const LONG: Plan = Plan {
        reports: 5000,
        sync_kills: 200,
        run_kills: 50,
        pull_kills: 30,
        host_kills: 30,
    };
}

impl Plan {
    /// `self`, with any of `KEEPER_TORTURE_REPORTS`, `KEEPER_TORTURE_SYNC_KILLS`,
    /// `KEEPER_TORTURE_RUN_KILLS`, `KEEPER_TORTURE_PULL_KILLS` set instead.
    fn or_env(self) -> Plan {
        let var = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|n| *n > 0)
                .unwrap_or(default)
        };
        let plan = Plan {
            reports: var("KEEPER_TORTURE_REPORTS", self.reports),
            sync_kills: var("KEEPER_TORTURE_SYNC_KILLS", self.sync_kills),
            run_kills: var("KEEPER_TORTURE_RUN_KILLS", self.run_kills),
            pull_kills: var("KEEPER_TORTURE_PULL_KILLS", self.pull_kills),
            host_kills: var("KEEPER_TORTURE_HOST_KILLS", self.host_kills),
        };
        println!("{plan:?}");
        plan
    }
}

/// The seed of this run: `KEEPER_TORTURE_SEED`, else a fresh one; printed
/// either way so a failure can be replayed.
fn seeded(test: &str) -> StdRng {
    let seed = std::env::var("KEEPER_TORTURE_SEED")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(rand::random);
    println!("{test}: seed {seed} (replay with KEEPER_TORTURE_SEED={seed})");
    StdRng::seed_from_u64(seed)
}

/// A short lease (killed batches come back within seconds), small batches
/// (many batches, many moments to be killed in), no retry delay, and
/// attempts enough that injected faults never exhaust an item.
fn torture_env() -> Env {
    let mut env = Env::new();
    env.var("SYNC_LEASE", 2)
        .var("SYNC_BATCH_SIZE", 25)
        .var("SYNC_BATCH_MAX", 25)
        .var("SYNC_INTERVAL", 1)
        .var("SYNC_MAX_ATTEMPTS", 1000)
        .var("HAVEN_BUSY_TIMEOUT_MS", 200);
    env
}

/// One valid report, told apart by its description.
fn report_json(description: &str) -> String {
    serde_json::json!({
        "discovery_type": "💎", "system_name": "Oculi", "location": "planet:Erren",
        "description": description, "username": "Miner", "user_id": "42",
    })
    .to_string()
}

/// `n` distinct reports as JSON lines; their descriptions.
fn reports(prefix: &str, n: usize) -> (String, Vec<String>) {
    let mut lines = String::new();
    let mut descriptions = Vec::with_capacity(n);
    for i in 0..n {
        let description = format!("{prefix} report {i}");
        lines.push_str(&report_json(&description));
        lines.push('\n');
        descriptions.push(description);
    }
    (lines, descriptions)
}

fn submit_all(env: &Env, prefix: &str, n: usize) -> Vec<String> {
    let (lines, descriptions) = reports(prefix, n);
    let out = env.run_with_stdin(&["submit", "--json", "-"], lines.as_bytes());
    assert!(out.status.success(), "submit: {}", stderr(&out));
    descriptions
}

fn sigkill(child: &mut Child) {
    let _ = child.kill();
    wait_exit(child, EXIT_TIMEOUT, "a SIGKILLed keeper to be reaped");
}

/// Waits up to `limit` for `check`; panics naming `what` when it never held.
async fn wait_until<F, Fut>(what: &str, limit: Duration, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    assert!(completes_within(limit, check).await, "waited {limit:?} for {what}");
}

/// Polls `check` every 50 ms for up to `limit`; whether it came to hold.
async fn completes_within<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// Sum of every item's finished attempts: grows with each batch completed,
/// synced or failed: the sign that a worker is at work.
async fn attempts(keeper: &Path) -> i64 {
    let mut conn = connect(keeper).await;
    let sum = sqlx::query_scalar("SELECT COALESCE(SUM(sync_attempts), 0) FROM sync_queue")
        .fetch_one(&mut conn)
        .await
        .unwrap_or(0);
    close(conn).await;
    sum
}

/// Queue rows by state.
async fn states(keeper: &Path) -> HashMap<String, i64> {
    let mut conn = connect(keeper).await;
    let states =
        sqlx::query_as::<_, (String, i64)>("SELECT sync_status, COUNT(*) FROM sync_queue GROUP BY sync_status")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default()
            .into_iter()
            .collect();
    close(conn).await;
    states
}

/// Nothing pending or syncing.
fn drained(states: &HashMap<String, i64>) -> bool {
    !states.contains_key("pending") && !states.contains_key("syncing")
}

/// Every acknowledged report among VH-Database's descriptions (with their
/// counts), and none there twice.
fn assert_none_lost_or_doubled(in_vh: &HashMap<String, i64>, acknowledged: &[String]) {
    let lost: Vec<&String> = acknowledged.iter().filter(|d| !in_vh.contains_key(*d)).collect();
    let doubled: Vec<(&String, &i64)> = in_vh.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged report(s) lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(
        doubled.is_empty(),
        "{} report(s) doubled, e.g. {:?}",
        doubled.len(),
        &doubled[..doubled.len().min(5)]
    );
}

/// Asserts the verdict: every acknowledged report in VH-Database exactly
/// once, nothing there that keeper.db does not hold, nothing `syncing`.
/// Returns (acknowledged, in VH).
async fn assert_exactly_once(haven: &Path, keeper: &Path, acknowledged: &[String]) -> (usize, usize) {
    let mut conn = connect(haven).await;
    let in_vh: HashMap<String, i64> =
        sqlx::query_as::<_, (String, i64)>("SELECT description, COUNT(*) FROM discoveries GROUP BY description")
            .fetch_all(&mut conn)
            .await
            .expect("VH descriptions")
            .into_iter()
            .collect();
    assert_none_lost_or_doubled(&in_vh, acknowledged);
    let stored = scalar_i64(keeper, "SELECT COUNT(*) FROM discoveries").await;
    assert_eq!(
        in_vh.len() as i64,
        stored,
        "VH-Database and keeper.db hold different reports"
    );
    let states = states(keeper).await;
    assert_eq!(states.get("syncing"), None, "items left syncing: {states:?}");
    (acknowledged.len(), in_vh.len())
}

/// Drains what is left with `keeper sync --once` (a killed batch's lease
/// must lapse first), bounded.
async fn drain(env: &Env) {
    wait_until(
        "the queue to drain after the last kill",
        Duration::from_secs(180),
        || async {
            let out = env.run(&["sync", "--once"]);
            assert!(out.status.success(), "sync --once: {}", stderr(&out));
            let s = states(&env.keeper).await;
            drained(&s)
        },
    )
    .await;
}

/// A fault put on VH-Database for one round, undone after the kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Fault {
    None,
    /// Another program holds VH-Database's write lock.
    Locked,
    /// VH-Database moved away.
    Missing,
    /// VH-Database not writable: read-only permissions, or for root (whom
    /// permissions do not stop) the immutable attribute.
    ReadOnly,
}

fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `chattr {flag} path`; false when the file system has no such attribute.
fn chattr(flag: &str, path: &Path) -> bool {
    std::process::Command::new("chattr")
        .arg(flag)
        .arg(path)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Puts `fault` on; returns what undoes it.
async fn inject(fault: Fault, haven: &Path) -> Option<Undo> {
    match fault {
        Fault::None => None,
        Fault::Locked => {
            let mut holder = connect(haven).await;
            sqlx::raw_sql("BEGIN EXCLUSIVE")
                .execute(&mut holder)
                .await
                .expect("lock VH");
            Some(Undo::Unlock(holder))
        }
        Fault::Missing => {
            let aside = haven.with_extension("moved");
            std::fs::rename(haven, &aside).expect("move VH away");
            Some(Undo::MoveBack(aside))
        }
        Fault::ReadOnly if running_as_root() => chattr("+i", haven).then_some(Undo::Mutable),
        Fault::ReadOnly => {
            let mut perms = std::fs::metadata(haven).expect("VH metadata").permissions();
            perms.set_readonly(true);
            std::fs::set_permissions(haven, perms).expect("chmod VH");
            Some(Undo::Writable)
        }
    }
}

enum Undo {
    Unlock(sqlx::SqliteConnection),
    MoveBack(PathBuf),
    Writable,
    Mutable,
}

impl Undo {
    async fn undo(self, haven: &Path) {
        match self {
            Undo::Unlock(mut holder) => {
                sqlx::raw_sql("ROLLBACK").execute(&mut holder).await.expect("unlock VH");
                let _ = holder.close().await;
            }
            Undo::MoveBack(aside) => std::fs::rename(aside, haven).expect("move VH back"),
            Undo::Writable => set_writable(haven),
            Undo::Mutable => assert!(chattr("-i", haven), "chattr -i {}", haven.display()),
        }
    }
}

/// The verdict after an operator restored a backup of keeper.db midway:
/// the reports acknowledged after the backup and before the restore are
/// gone from keeper.db (the operator's doing), but every report keeper.db
/// holds now is in VH-Database exactly once, nothing is there twice, and
/// nothing there was never acknowledged; the reports that reused a
/// delivered discovery id were counted. Returns (kept, in VH, replaced).
async fn assert_exactly_once_after_restore(env: &Env, acknowledged: &[String]) -> (usize, usize, i64) {
    let in_vh: HashMap<String, i64> = {
        let mut conn = connect(&env.haven).await;
        sqlx::query_as::<_, (String, i64)>("SELECT description, COUNT(*) FROM discoveries GROUP BY description")
            .fetch_all(&mut conn)
            .await
            .expect("VH descriptions")
            .into_iter()
            .collect()
    };
    let kept: Vec<String> = {
        let mut conn = connect(&env.keeper).await;
        sqlx::query_scalar("SELECT description FROM discoveries")
            .fetch_all(&mut conn)
            .await
            .expect("keeper.db descriptions")
    };
    let lost: Vec<&String> = kept.iter().filter(|d| !in_vh.contains_key(*d)).collect();
    assert!(
        lost.is_empty(),
        "{} report(s) of keeper.db never reached VH-Database, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let doubled: Vec<(&String, &i64)> = in_vh.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubled.is_empty(),
        "{} report(s) doubled, e.g. {:?}",
        doubled.len(),
        &doubled[..doubled.len().min(5)]
    );
    let unknown: Vec<&String> = in_vh.keys().filter(|d| !acknowledged.contains(d)).collect();
    assert!(
        unknown.is_empty(),
        "VH-Database holds reports never acknowledged: {unknown:?}"
    );
    assert!(!states(&env.keeper).await.contains_key("syncing"), "items left syncing");
    let replaced = scalar_i64(
        &env.keeper,
        "SELECT COALESCE(SUM(value), 0) FROM keeper_sync_counters WHERE counter = 'keeper_db_replaced_total'",
    )
    .await;
    (kept.len(), in_vh.len(), replaced)
}

async fn sync_kills(plan: Plan, mut rng: StdRng) {
    sync_kills_with(plan, &mut rng, None).await;
}

/// `restore`: (round to back keeper.db up at, round to put it back at).
async fn sync_kills_with(plan: Plan, rng: &mut StdRng, restore: Option<(usize, usize)>) {
    let env = torture_env();
    let backup = env.dir.path().join("keeper.backup.db");
    let mut acknowledged = Vec::with_capacity(plan.reports);
    let faults = [Fault::None, Fault::None, Fault::Locked, Fault::Missing, Fault::ReadOnly];
    let mut tried: HashMap<Fault, usize> = HashMap::new();
    for round in 0..plan.sync_kills {
        if restore.is_some_and(|(at, _)| at == round) {
            copy_stopped_db(&env.keeper, &backup);
        }
        if restore.is_some_and(|(_, at)| at == round) {
            // Everything since the backup delivered first, so that the
            // restored file hands their ids out again to new reports.
            drain(&env).await;
            copy_stopped_db(&backup, &env.keeper);
        }
        // Fresh work every round, so that every kill finds a worker at work.
        acknowledged.extend(submit_all(
            &env,
            &format!("sync-torture round {round}"),
            plan.reports / plan.sync_kills,
        ));
        let fault = faults[rng.random_range(0..faults.len())];
        let undo = inject(fault, &env.haven).await;
        // A read-only fault the file system cannot make counts as none.
        let fault = if undo.is_none() { Fault::None } else { fault };
        *tried.entry(fault).or_default() += 1;
        let before = attempts(&env.keeper).await;
        // The worker's log, kept to say what it was doing if it stalls.
        let log_path = env.dir.path().join(format!("sync-round-{round}.log"));
        let log = std::fs::File::create(&log_path).expect("create the worker's log");
        let mut worker = env
            .command(&["sync"])
            .env("KEEPER_LOG", "info,keeper=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn keeper sync");
        // Killed while at work: after it finished at least one batch, at a
        // random moment of the batches that follow.
        let what = format!("round {round} ({fault:?} on VH-Database): keeper sync to complete a batch");
        if !completes_within(Duration::from_secs(120), || async {
            attempts(&env.keeper).await > before
        })
        .await
        {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            panic!(
                "waited 120s for {what}; queue states {:?}; the worker's last log lines:\n{}",
                states(&env.keeper).await,
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..150))).await;
        sigkill(&mut worker);
        if let Some(undo) = undo {
            undo.undo(&env.haven).await;
        }
    }
    drain(&env).await;
    if restore.is_some() {
        let (kept, in_vh, replaced) = assert_exactly_once_after_restore(&env, &acknowledged).await;
        assert!(
            replaced > 0,
            "no report was counted as 'keeper.db restored or replaced'"
        );
        println!(
            "sync torture across a restored keeper.db: {} acknowledged, {kept} still in keeper.db, {in_vh} in VH-Database, \
             {replaced} counted as 'keeper.db restored or replaced', {} SIGKILLs, faults {tried:?}: lost 0, doubled 0",
            acknowledged.len(),
            plan.sync_kills
        );
        return;
    }
    let (acked, in_vh) = assert_exactly_once(&env.haven, &env.keeper, &acknowledged).await;
    println!(
        "sync torture: {acked} acknowledged, {in_vh} in VH-Database, {} SIGKILLs of `keeper sync`, faults {tried:?}: lost 0, doubled 0",
        plan.sync_kills
    );
}

/// One POST /discoveries; the HTTP status, or None when the server was gone.
fn post(agent: &ureq::Agent, port: u16, body: &[u8]) -> Option<u16> {
    let response = agent
        .post(format!("http://127.0.0.1:{port}/discoveries"))
        .header("content-type", "application/json")
        .send(body)
        .ok()?;
    Some(response.status().as_u16())
}

/// Requests no server may store: each gets a 4xx.
fn hostile_bodies() -> Vec<Vec<u8>> {
    let report = |description: &str, location: &str| {
        serde_json::json!({
            "discovery_type": "💎", "system_name": "Oculi", "location": location,
            "description": description, "username": "Miner", "user_id": "42",
        })
        .to_string()
        .into_bytes()
    };
    vec![
        b"{not json".to_vec(),
        b"[1, 2, 3]".to_vec(),
        vec![0xff, 0xfe, b'{', b'}'],
        report("hostile: bad location", "nowhere"),
        report(&"hostile: too long ".repeat(200), "planet:Erren"),
        serde_json::json!({
            "discovery_type": "🦄", "system_name": "Oculi", "location": "planet:Erren",
            "description": "hostile: '); DROP TABLE discoveries; --", "username": "Miner",
        })
        .to_string()
        .into_bytes(),
        format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
    ]
}

/// A client thread posting reports to one keeper host until stopped, the
/// load both the `keeper run` and the multi-host tortures put on their hosts.
struct PostLoad {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

/// Requests no server may store, mixed into a load (every tenth request),
/// and where to list any that was not refused with a 4xx.
struct Hostile {
    bodies: Vec<Vec<u8>>,
    stored: Arc<Mutex<Vec<String>>>,
}

impl PostLoad {
    /// Posts reports described `"{label} report {i}"` to the port `port`
    /// holds (0 while the host is down: the thread waits), listing in
    /// `acknowledged` each one answered 201.
    fn start(
        agent: &ureq::Agent,
        port: Arc<AtomicU16>,
        label: String,
        acknowledged: Arc<Mutex<Vec<String>>>,
        hostile: Option<Hostile>,
    ) -> PostLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let (agent, stopped) = (agent.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut i = 0usize;
            while !stopped.load(Ordering::Relaxed) {
                let port = port.load(Ordering::Relaxed);
                if port == 0 {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                i += 1;
                if let Some(hostile) = hostile.as_ref().filter(|_| i.is_multiple_of(10)) {
                    let body = &hostile.bodies[i / 10 % hostile.bodies.len()];
                    if let Some(status) = post(&agent, port, body)
                        && !(400..500).contains(&status)
                    {
                        hostile.stored.lock().unwrap().push(format!(
                            "{status}: {}",
                            String::from_utf8_lossy(&body[..body.len().min(60)])
                        ));
                    }
                    continue;
                }
                let description = format!("{label} report {i}");
                if post(&agent, port, report_json(&description).as_bytes()) == Some(201) {
                    acknowledged.lock().unwrap().push(description);
                }
            }
            i
        });
        PostLoad { stop, thread }
    }

    /// Stops the thread; the requests it sent.
    fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("load thread")
    }
}

async fn run_kills(plan: Plan, mut rng: StdRng) {
    let env = torture_env();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let hostile_stored: Arc<Mutex<Vec<String>>> = Arc::default();
    let hostile = hostile_bodies();
    let mut sent = 0usize;
    for round in 0..plan.run_kills {
        let (mut child, port, _log) = spawn_run(&env);
        let load = PostLoad::start(
            &agent,
            Arc::new(AtomicU16::new(port)),
            format!("run-torture round {round}"),
            acknowledged.clone(),
            Some(Hostile {
                bodies: hostile.clone(),
                stored: hostile_stored.clone(),
            }),
        );
        // Killed under load: once this round has acknowledged some reports
        // and the worker synced some, at a random moment after.
        let acked_before = acknowledged.lock().unwrap().len();
        let target = plan.reports / plan.run_kills / 2;
        let keeper = env.keeper.clone();
        let acked = acknowledged.clone();
        wait_until(
            &format!("round {round}: {target} acknowledged submissions and a synced batch"),
            Duration::from_secs(120),
            || {
                let (acked, keeper) = (acked.clone(), keeper.clone());
                async move {
                    acked.lock().unwrap().len() >= acked_before + target
                        && states(&keeper).await.get("synced").copied().unwrap_or(0) > 0
                }
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..500))).await;
        sigkill(&mut child);
        sent += load.stop();
    }
    // A last, clean run drains the queue.
    let (mut child, _port, _log) = spawn_run(&env);
    wait_until("keeper run to sync everything", Duration::from_secs(180), || async {
        let s = states(&env.keeper).await;
        drained(&s)
    })
    .await;
    terminate(&mut child);
    let hostile_stored = hostile_stored.lock().unwrap().clone();
    assert!(
        hostile_stored.is_empty(),
        "hostile requests accepted: {hostile_stored:?}"
    );
    assert_eq!(
        scalar_i64(
            &env.keeper,
            "SELECT COUNT(*) FROM discoveries WHERE description LIKE 'hostile%'"
        )
        .await,
        0,
        "a hostile request was stored"
    );
    let acknowledged = acknowledged.lock().unwrap().clone();
    let (acked, in_vh) = assert_exactly_once(&env.haven, &env.keeper, &acknowledged).await;
    println!(
        "run torture: {sent} requests ({} hostile, all refused), {acked} acknowledged, {in_vh} in VH-Database \
         (acknowledged + stored before a kill cut the answer), {} SIGKILLs of `keeper run`: lost 0, doubled 0",
        sent / 10,
        plan.run_kills
    );
}

async fn pull_kills(plan: Plan, mut rng: StdRng) {
    let mut bot = torture_env();
    bot.var("USE_HAVEN_DATABASE", "false");
    let (mut bot_child, port, _log) = spawn_run(&bot);
    let mut acknowledged = Vec::with_capacity(plan.reports / 2);
    let control_room = torture_env();
    let url = format!("http://127.0.0.1:{port}");
    for round in 0..plan.pull_kills {
        acknowledged.extend(submit_all(
            &bot,
            &format!("pull-torture round {round}"),
            plan.reports / 2 / plan.pull_kills,
        ));
        let before = states(&bot.keeper).await.get("synced").copied().unwrap_or(0);
        let vh_before = scalar_i64(&control_room.haven, "SELECT COUNT(*) FROM discoveries").await;
        let mut puller = control_room
            .command(&["pull", "--from", &url, "--every", "1", "--page-size", "25"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn keeper pull");
        wait_until(
            &format!("round {round}: keeper pull to write or acknowledge a page"),
            Duration::from_secs(120),
            || async {
                states(&bot.keeper).await.get("synced").copied().unwrap_or(0) > before
                    || scalar_i64(&control_room.haven, "SELECT COUNT(*) FROM discoveries").await > vh_before
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..150))).await;
        sigkill(&mut puller);
    }
    wait_until(
        "keeper pull to acknowledge everything",
        Duration::from_secs(180),
        || async {
            let out = control_room.run(&["pull", "--from", &url, "--once"]);
            assert!(out.status.success(), "pull --once: {}", stderr(&out));
            let s = states(&bot.keeper).await;
            drained(&s)
        },
    )
    .await;
    terminate(&mut bot_child);
    let (acked, in_vh) = assert_exactly_once(&control_room.haven, &bot.keeper, &acknowledged).await;
    println!(
        "pull torture: {acked} acknowledged, {in_vh} in VH-Database, {} SIGKILLs of `keeper pull`: lost 0, doubled 0",
        plan.pull_kills
    );
}

/// One of the hosts of the multi-host run: a `keeper run` and the port its
/// API took (the load thread posting to it follows the port across restarts;
/// 0 while it is down).
struct HostSlot {
    child: Child,
    log: Arc<Mutex<String>>,
    port: Arc<AtomicU16>,
}

impl HostSlot {
    fn start(env: &Env) -> HostSlot {
        let (child, port, log) = spawn_run(env);
        HostSlot {
            child,
            log,
            port: Arc::new(AtomicU16::new(port)),
        }
    }

    fn restart(&mut self, env: &Env) {
        let (child, port, log) = spawn_run(env);
        self.child = child;
        self.log = log;
        self.port.store(port, Ordering::Relaxed);
    }

    /// Fails the run when the host exited without being killed: keeper must
    /// ride out a PostgreSQL restart, not die of it.
    fn assert_alive(&mut self, which: usize) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "host {which} exited by itself ({status}):\n{}",
                self.log.lock().unwrap()
            );
        }
    }
}

/// A count from the PostgreSQL database, or None while the server is down
/// or restarting.
fn pg_count(url: &str, sql: &str) -> Option<i64> {
    let mut cmd = std::process::Command::new("psql");
    cmd.args(["-X", "-q", "-A", "-t", "-d", url, "-c", sql]);
    let out = output_within(cmd, Duration::from_secs(30), "psql");
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Three `keeper run` hosts on one PostgreSQL database and one VH-Database,
/// every one taking reports and delivering, a load thread posting to each;
/// random hosts SIGKILLed `plan.host_kills` times (each restarted at once),
/// and the PostgreSQL server itself crashed and restarted twice mid-run.
/// At the end: every acknowledged report in VH-Database exactly once,
/// nothing there that the database does not hold, nothing `syncing`, and no
/// host died of the server's restarts.
async fn host_kills(plan: Plan, mut rng: StdRng) {
    const HOSTS: usize = 3;
    let cluster = common::postgres::PrivateCluster::start();
    let mut env = torture_env();
    env.var("KEEPER_DATABASE_URL", &cluster.url);
    // The schema once, before the hosts start together.
    let out = env.run(&["sync", "--once"]);
    assert!(out.status.success(), "sync --once: {}", stderr(&out));

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut hosts: Vec<HostSlot> = (0..HOSTS).map(|_| HostSlot::start(&env)).collect();
    let loads: Vec<PostLoad> = hosts
        .iter()
        .enumerate()
        .map(|(which, host)| {
            PostLoad::start(
                &agent,
                host.port.clone(),
                format!("host-torture host {which}"),
                acknowledged.clone(),
                None,
            )
        })
        .collect();

    // The server's two crashes fall among the kills, a third and two
    // thirds of the way through.
    let crashes = [plan.host_kills / 3, 2 * plan.host_kills / 3];
    let mut crashed = 0;
    for kill in 0..plan.host_kills {
        // Killed at work: after some reports came in and some synced since
        // the last kill, at a random moment after that.
        let synced_before = pg_count(
            &cluster.url,
            "SELECT COUNT(*) FROM sync_queue WHERE sync_status = 'synced'",
        )
        .unwrap_or(0);
        let acked_before = acknowledged.lock().unwrap().len();
        let (url, acked) = (cluster.url.clone(), acknowledged.clone());
        wait_until(
            &format!("kill {kill}: new reports acknowledged and synced"),
            Duration::from_secs(120),
            || {
                let (url, acked) = (url.clone(), acked.clone());
                async move {
                    acked.lock().unwrap().len() > acked_before + 20
                        && pg_count(&url, "SELECT COUNT(*) FROM sync_queue WHERE sync_status = 'synced'")
                            .is_some_and(|n| n > synced_before)
                }
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..700))).await;
        for (which, host) in hosts.iter_mut().enumerate() {
            host.assert_alive(which);
        }
        if crashes.contains(&kill) {
            cluster.crash_restart();
            crashed += 1;
        }
        let which = rng.random_range(0..HOSTS);
        let host = &mut hosts[which];
        host.port.store(0, Ordering::Relaxed);
        sigkill(&mut host.child);
        host.restart(&env);
    }
    let sent: usize = loads.into_iter().map(PostLoad::stop).sum();

    // The hosts drain what is left (killed batches once their leases lapse).
    let url = cluster.url.clone();
    wait_until("the hosts to sync everything", Duration::from_secs(180), || {
        let url = url.clone();
        async move {
            pg_count(
                &url,
                "SELECT COUNT(*) FROM sync_queue WHERE sync_status IN ('pending', 'syncing')",
            ) == Some(0)
        }
    })
    .await;
    for (which, host) in hosts.iter_mut().enumerate() {
        host.assert_alive(which);
        terminate(&mut host.child);
    }

    let acknowledged = acknowledged.lock().unwrap().clone();
    let mut conn = connect(&env.haven).await;
    let in_vh: HashMap<String, i64> =
        sqlx::query_as::<_, (String, i64)>("SELECT description, COUNT(*) FROM discoveries GROUP BY description")
            .fetch_all(&mut conn)
            .await
            .expect("VH descriptions")
            .into_iter()
            .filter(|(description, _)| description.starts_with("host-torture "))
            .collect();
    assert_none_lost_or_doubled(&in_vh, &acknowledged);
    let stored = pg_count(&cluster.url, "SELECT COUNT(*) FROM discoveries").expect("the server is up");
    assert_eq!(
        in_vh.len() as i64,
        stored,
        "VH-Database and the PostgreSQL store hold different reports"
    );
    assert_eq!(
        pg_count(
            &cluster.url,
            "SELECT COUNT(*) FROM sync_queue WHERE sync_status <> 'synced'"
        ),
        Some(0),
        "items not synced at the end"
    );
    println!(
        "host torture: {sent} requests to {HOSTS} hosts, {} acknowledged, {} in VH-Database, {} SIGKILLs of a host, \
         {crashed} PostgreSQL crash-restarts: lost 0, doubled 0",
        acknowledged.len(),
        in_vh.len(),
        plan.host_kills
    );
}

#[tokio::test]
async fn torture_sync_kills_and_vh_faults() {
    sync_kills(Plan::BOUNDED.or_env(), seeded("torture_sync_kills_and_vh_faults")).await;
}

/// The operator restores a backup of keeper.db between two kills: reports
/// submitted after the restore reuse delivered discovery ids.
#[tokio::test]
async fn torture_sync_kills_across_a_restored_keeper_db() {
    let plan = Plan {
        reports: 1000,
        sync_kills: 10,
        ..Plan::BOUNDED
    }
    .or_env();
    let mut rng = seeded("torture_sync_kills_across_a_restored_keeper_db");
    sync_kills_with(plan, &mut rng, Some((3, 6))).await;
}

#[tokio::test]
async fn torture_run_kills_under_post_load_with_hostile_requests() {
    run_kills(
        Plan::BOUNDED.or_env(),
        seeded("torture_run_kills_under_post_load_with_hostile_requests"),
    )
    .await;
}

#[tokio::test]
async fn torture_pull_kills() {
    pull_kills(Plan::BOUNDED.or_env(), seeded("torture_pull_kills")).await;
}

#[tokio::test]
#[ignore = "the long run: see RELIABILITY.md"]
async fn torture_long_sync_kills() {
    sync_kills(Plan::LONG.or_env(), seeded("torture_long_sync_kills")).await;
}

#[tokio::test]
#[ignore = "the long run: see RELIABILITY.md"]
async fn torture_long_run_kills() {
    run_kills(Plan::LONG.or_env(), seeded("torture_long_run_kills")).await;
}

#[tokio::test]
#[ignore = "the long run: see RELIABILITY.md"]
async fn torture_long_pull_kills() {
    pull_kills(Plan::LONG.or_env(), seeded("torture_long_pull_kills")).await;
}

#[tokio::test]
async fn torture_hosts_on_postgres() {
    host_kills(Plan::BOUNDED.or_env(), seeded("torture_hosts_on_postgres")).await;
}

#[tokio::test]
#[ignore = "the long run: see RELIABILITY.md"]
async fn torture_long_hosts_on_postgres() {
    host_kills(Plan::LONG.or_env(), seeded("torture_long_hosts_on_postgres")).await;
}
