//! The queue alone, on both store drivers: how many items a second the
//! claim + complete cycle moves (each batch claimed with its lease, then
//! marked synced with its VH id and counters, as the worker does), on
//! keeper.db and on PostgreSQL with 1, 2 and 3 hosts working one queue, and
//! the PostgreSQL connections each host held at most.
//!
//! ```text
//! eval "$(.ci/postgres start)"        # or KEEPER_BENCH_POSTGRES_URL=postgres://…
//! cargo bench -p keeper --bench queue
//! .ci/postgres stop
//! ```
//!
//! `BENCH_QUEUE_ITEMS` (default 20000) items, claimed `BENCH_QUEUE_BATCH`
//! (default 1000) at a time. A host here is a `Store` of its own (its own
//! pool, as a `keeper run` process has) driven by its own task; the hosts
//! share the machine, as they would not in production.
//!
//! The baseline, measured in the same run on the same database: the
//! fewest statements that move the same items through the same states
//! (one `UPDATE … RETURNING` to mark a batch `syncing`, one `UPDATE` to mark
//! it `synced`, per batch, on one connection). The ratio says what the
//! queue's leases, tokens, counters and checks cost on top.
//!
//! Without a PostgreSQL URL (`KEEPER_BENCH_POSTGRES_URL`, else
//! `KEEPER_TEST_POSTGRES_URL`) the PostgreSQL rows are left out, saying so.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use keeper::db::Db;
use keeper::queue::{Delivered, Queue, RetryPolicy};
use keeper::report::Report;
use keeper::store::{Access, Store};
use sqlx::{Connection, PgConnection};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

fn report(i: usize) -> Report {
    Report::from_json(&serde_json::json!({
        "discovery_type": "🦴",
        "system_name": "Ixiezh HV",
        "location": "planet:Getre Beta",
        "description": format!("Queue benchmark report {i}"),
        "username": "Explorer#0001",
        "user_id": "100000000000",
        "species_type": "Vertebrate",
    }))
    .expect("a valid report")
}

/// Where one measurement runs: a fresh keeper.db, or a fresh PostgreSQL
/// database (made in the cluster the admin URL points at).
#[derive(Clone)]
enum Target {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl Target {
    async fn open(&self) -> Store {
        match self {
            Target::Sqlite(path) => Store::open(path, Access::Create).await.expect("open keeper.db"),
            Target::Postgres(url) => Store::open_postgres(url, Access::Create)
                .await
                .expect("open the PostgreSQL store"),
        }
    }
}

/// A fresh database in the cluster of `admin` (a superuser URL); its URL.
async fn fresh_postgres(admin: &str, name: &str) -> String {
    let mut conn = PgConnection::connect(admin).await.expect("connect to PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}")))
        .execute(&mut conn)
        .await
        .expect("drop the old benchmark database");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create the benchmark database");
    let mut url = url::Url::parse(admin).expect("a PostgreSQL URL");
    url.set_path(name);
    url.to_string()
}

/// Fills the queue with `items` pending reports.
async fn seed(store: &Store, items: usize) {
    let reports: Vec<Report> = (0..items).map(report).collect();
    for chunk in reports.chunks(5_000) {
        store.submit(chunk, 10).await.expect("submit");
    }
}

/// `hosts` stores on `target`, each claiming and completing batches until
/// the queue is empty; items per second and the batches each host did.
async fn drain(target: &Target, hosts: usize, batch: u32) -> (f64, Vec<usize>) {
    let mut stores = Vec::with_capacity(hosts);
    for _ in 0..hosts {
        stores.push(target.open().await);
    }
    let moved = Arc::new(AtomicI64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(hosts);
    for store in stores {
        let moved = moved.clone();
        tasks.push(tokio::spawn(async move {
            let policy = RetryPolicy {
                base: Duration::from_secs(30),
                max_delay: Duration::from_secs(3_600),
                max_attempts: 10,
            };
            let queue = Queue::new(store.db().clone(), policy, Duration::from_secs(300));
            let mut batches = 0;
            loop {
                let claim = queue.claim(batch, None).await.expect("claim");
                if claim.items.is_empty() {
                    return batches;
                }
                let delivered: Vec<Delivered> = claim
                    .items
                    .iter()
                    .map(|item| Delivered {
                        queue_id: item.queue_id,
                        haven_id: item.discovery_id,
                        metadata: serde_json::json!({"plugin": {"name": "bench", "version": "1", "hash": "00"}}),
                        keeper_db_replaced: false,
                    })
                    .collect();
                queue.complete(&claim.token, &delivered, &[]).await.expect("complete");
                moved.fetch_add(delivered.len() as i64, Ordering::Relaxed);
                batches += 1;
            }
        }));
    }
    let mut per_host = Vec::with_capacity(hosts);
    for task in tasks {
        per_host.push(task.await.expect("a host's task"));
    }
    let seconds = started.elapsed().as_secs_f64();
    (moved.load(Ordering::Relaxed) as f64 / seconds, per_host)
}

/// The baseline: the same state changes in the fewest statements, one
/// connection, on the same kind of database; items per second.
async fn baseline(target: &Target, batch: u32) -> f64 {
    let store = target.open().await;
    let started = Instant::now();
    let mut moved = 0u64;
    match store.db() {
        Db::Sqlite(pool) => loop {
            let mut tx = pool.begin().await.expect("begin");
            let ids: Vec<i64> = sqlx::query_scalar(
                "UPDATE sync_queue SET sync_status = 'syncing'
                 WHERE id IN (SELECT id FROM sync_queue WHERE sync_status = 'pending' ORDER BY id LIMIT ?1)
                 RETURNING id",
            )
            .bind(batch)
            .fetch_all(&mut *tx)
            .await
            .expect("baseline claim");
            tx.commit().await.expect("commit");
            if ids.is_empty() {
                break;
            }
            sqlx::query(
                "UPDATE sync_queue SET sync_status = 'synced', haven_discovery_id = discovery_id
                 WHERE id IN (SELECT value FROM json_each(?1))",
            )
            .bind(serde_json::to_string(&ids).expect("ids as JSON"))
            .execute(pool)
            .await
            .expect("baseline complete");
            moved += ids.len() as u64;
        },
        Db::Postgres(pool) => loop {
            let ids: Vec<i64> = sqlx::query_scalar(
                "UPDATE sync_queue SET sync_status = 'syncing'
                 WHERE id IN (SELECT id FROM sync_queue WHERE sync_status = 'pending' ORDER BY id LIMIT $1
                              FOR UPDATE SKIP LOCKED)
                 RETURNING id",
            )
            .bind(i64::from(batch))
            .fetch_all(pool)
            .await
            .expect("baseline claim");
            if ids.is_empty() {
                break;
            }
            sqlx::query(
                "UPDATE sync_queue SET sync_status = 'synced', haven_discovery_id = discovery_id WHERE id = ANY($1)",
            )
            .bind(&ids)
            .execute(pool)
            .await
            .expect("baseline complete");
            moved += ids.len() as u64;
        },
    }
    moved as f64 / started.elapsed().as_secs_f64()
}

/// The most connections to `database` seen while `running` is true, sampled
/// every 10 ms from a connection of its own (not counted).
async fn watch_connections(admin: String, database: String, running: Arc<AtomicBool>) -> i64 {
    let Ok(mut conn) = PgConnection::connect(&admin).await else {
        return -1;
    };
    let mut peak = 0;
    while running.load(Ordering::Relaxed) {
        let now: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1")
            .bind(&database)
            .fetch_one(&mut conn)
            .await
            .unwrap_or(0);
        peak = peak.max(now);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    peak
}

#[tokio::main]
async fn main() {
    let items = env_usize("BENCH_QUEUE_ITEMS", 20_000);
    let batch = u32::try_from(env_usize("BENCH_QUEUE_BATCH", 1_000)).unwrap_or(1_000);
    println!("queue benchmark: {items} items, batches of {batch}; items/s of claim + complete");
    println!(
        "| store | hosts | queue items/s | baseline items/s | queue ÷ baseline | batches per host | peak connections per host |"
    );
    println!("|---|---|---|---|---|---|---|");
    let dir = tempfile::tempdir().expect("temp dir");

    let sqlite = |name: &str| Target::Sqlite(dir.path().join(format!("{name}.db")));
    let queue_target = sqlite("queue");
    seed(&queue_target.open().await, items).await;
    let (rate, per_host) = drain(&queue_target, 1, batch).await;
    let base_target = sqlite("baseline");
    seed(&base_target.open().await, items).await;
    let base = baseline(&base_target, batch).await;
    println!(
        "| SQLite (keeper.db) | 1 | {rate:.0} | {base:.0} | {:.2} | {per_host:?} | (one file) |",
        rate / base
    );

    let admin = std::env::var("KEEPER_BENCH_POSTGRES_URL")
        .or_else(|_| std::env::var("KEEPER_TEST_POSTGRES_URL"))
        .ok()
        .filter(|url| !url.trim().is_empty());
    let Some(admin) = admin else {
        println!(
            "PostgreSQL: left out (set KEEPER_BENCH_POSTGRES_URL, or start a cluster with \
             `eval \"$(.ci/postgres start)\"`)"
        );
        return;
    };
    let base_url = fresh_postgres(&admin, "keeper_bench_baseline").await;
    let base_target = Target::Postgres(base_url);
    seed(&base_target.open().await, items).await;
    let base = baseline(&base_target, batch).await;
    for hosts in 1..=3 {
        let database = format!("keeper_bench_hosts_{hosts}");
        let target = Target::Postgres(fresh_postgres(&admin, &database).await);
        seed(&target.open().await, items).await;
        let running = Arc::new(AtomicBool::new(true));
        let watcher = tokio::spawn(watch_connections(admin.clone(), database, running.clone()));
        let (rate, per_host) = drain(&target, hosts, batch).await;
        running.store(false, Ordering::Relaxed);
        let peak = watcher.await.unwrap_or(-1);
        println!(
            "| PostgreSQL | {hosts} | {rate:.0} | {base:.0} | {:.2} | {per_host:?} | {:.1} |",
            rate / base,
            peak as f64 / hosts as f64
        );
    }
}
