//! Intake under concurrency: a real `keeper run` (the binary, on a temp
//! keeper.db and a copy of the sample VH-Database, its worker draining as
//! in production) and N HTTP clients on 127.0.0.1, each posting reports to
//! `POST /discoveries` one after another on its own keep-alive connection.
//!
//! The clients share the machine with keeper, so what they cost is taken
//! from keeper. They are therefore what load generators such as `wrk` are:
//! every connection a task on one thread, each request written as prepared
//! bytes and its answer read by its `Content-Length` ([`lean`]). The same
//! phase is also run with a thread and a `ureq` agent per client, as the
//! bench did before: on 2 cores those clients took about 120 µs of CPU a
//! request, as much as keeper itself, and the gap between the two lines is
//! what the clients cost.
//!
//! `cargo bench -p keeper --bench intake`; env `BENCH_INTAKE_CLIENTS`
//! (default 32) and `BENCH_INTAKE_REPORTS` (default 20000, shared among the
//! clients). Prints reports/s and the p50/p99/max latency of an answer.
//!
//! A figure alone says little on a shared machine, so the same run also
//! measures two baselines: one client alone posting its share (the latency
//! of a request nobody competes with), and the same reports stored in bulk
//! by `Store::submit` in one transaction per 5,000 on a fresh keeper.db
//! (what intake costs without HTTP and without a transaction per request).
//! The concurrent rate is printed as a ratio to the bulk one.
//!
//! Then "the worker under sustained intake": `BENCH_INTAKE_RATE` reports/s
//! (default 2000) for `BENCH_INTAKE_SECS` seconds (default 10), paced over
//! the same number of clients, while the worker drains to VH-Database. Each
//! report's time from the request being sent to its queue item showing
//! `synced` (VH-Database written, keeper.db marked; polled every 20 ms) is
//! recorded; prints the p50/p95/max of that and the rates reached.
//!
//! No figure is asserted: the figures go in README.md "Performance" with
//! the command that produced them. Every wait has a deadline.
#![allow(dead_code)]

#[path = "../../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;
use common::{Env, connect, spawn_run, terminate};
use keeper::app::App;
use keeper::config::Settings;
use keeper::report::Report;
use serde_json::{Value, json};

#[derive(Parser)]
struct BenchSettings {
    #[command(flatten)]
    settings: Settings,
}

/// Longest the bench waits for the worker to sync what was sent.
const DRAIN_DEADLINE: Duration = Duration::from_secs(600);

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Report `i` as the API takes it.
fn record(i: usize) -> Value {
    json!({
        "discovery_type": "🦴",
        "system_name": "Oculi",
        "location": "planet:Erren",
        "description": format!("Intake benchmark report {i}: a long enough description to look like a real one."),
        "username": format!("Explorer#{:04}", i % 10_000),
        "user_id": format!("{}", 100_000_000_000 + i),
        "tags": ["bench", "intake"],
        "species_type": "Vertebrate",
    })
}

fn agent() -> ureq::Agent {
    common::http_agent(Duration::from_secs(60))
}

/// One `POST /discoveries`: the discovery id of a 201, else a panic naming the answer.
fn post(agent: &ureq::Agent, url: &str, body: &[u8]) -> i64 {
    let mut response = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body)
        .unwrap_or_else(|e| panic!("POST /discoveries: {e}"));
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    assert_eq!(status, 201, "POST /discoveries: {text}");
    discovery_id(text.as_bytes())
}

/// A minimal HTTP/1.1 client for loopback load: one keep-alive connection
/// a client, `POST /discoveries` only, answers read by `Content-Length`.
mod lean {
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::Sent;

    /// The bytes of one `POST /discoveries` carrying `body`.
    pub fn request(port: u16, body: &[u8]) -> Vec<u8> {
        let mut request = format!(
            "POST /discoveries HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        request
    }

    /// One client: sends `requests` (the n-th report of the phase, its
    /// bytes) in turn on one connection, the n-th at `start + n / rate`
    /// when a rate is given, else as soon as the last is answered; records
    /// what came back.
    pub async fn client(port: u16, requests: Vec<(usize, Vec<u8>)>, start: Instant, rate: Option<f64>) -> Vec<Sent> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let mut buffer = Vec::with_capacity(4096);
        let mut sent = Vec::with_capacity(requests.len());
        for (n, request) in requests {
            if let Some(rate) = rate {
                let due = start + Duration::from_secs_f64(n as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
            }
            let at = Instant::now();
            stream.write_all(&request).await.expect("send a request");
            let (status, body) = answer(&mut stream, &mut buffer).await;
            assert_eq!(status, 201, "POST /discoveries: {}", String::from_utf8_lossy(&body));
            sent.push(Sent {
                discovery_id: super::discovery_id(&body),
                sent_at: at,
                latency: at.elapsed(),
            });
        }
        sent
    }

    /// Reads one answer: its status and body. `buffer` keeps what was read
    /// past it (nothing, as the client waits for each answer).
    async fn answer(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> (u16, Vec<u8>) {
        let head_end = loop {
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            read_more(stream, buffer).await;
        };
        let head = std::str::from_utf8(&buffer[..head_end]).expect("an answer's head is text");
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("no content-length in {head:?}"));
        while buffer.len() < head_end + length {
            read_more(stream, buffer).await;
        }
        let body = buffer[head_end..head_end + length].to_vec();
        buffer.drain(..head_end + length);
        (status, body)
    }

    async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) {
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await.expect("read an answer");
        assert!(read > 0, "keeper closed the connection mid-answer");
        buffer.extend_from_slice(&chunk[..read]);
    }
}

/// The discovery id of a 201's body, else a panic naming it.
fn discovery_id(body: &[u8]) -> i64 {
    let text = String::from_utf8_lossy(body);
    let answer: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    answer["discovery_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no discovery_id in {text}"))
}

/// What one client saw: per request, the discovery id, when it was sent
/// and how long the answer took.
struct Sent {
    discovery_id: i64,
    sent_at: Instant,
    latency: Duration,
}

/// `clients` lean clients on one thread post reports `first..first +
/// count` (client k takes every k-th), each as fast as its answers come, or
/// at `rate` reports/s in all when given. Returns every request and the
/// phase's wall time.
fn post_all(port: u16, clients: usize, first: usize, count: usize, rate: Option<f64>) -> (Vec<Sent>, Duration) {
    let mut shares: Vec<Vec<(usize, Vec<u8>)>> = (0..clients).map(|_| Vec::new()).collect();
    for (n, i) in (first..first + count).enumerate() {
        shares[n % clients].push((n, lean::request(port, record(i).to_string().as_bytes())));
    }
    let sent: Vec<Sent> = std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the clients' runtime");
                runtime.block_on(async move {
                    let start = Instant::now();
                    let clients: Vec<_> = shares
                        .into_iter()
                        .map(|share| tokio::spawn(lean::client(port, share, start, rate)))
                        .collect();
                    let mut sent = Vec::with_capacity(count);
                    for client in clients {
                        sent.extend(client.await.expect("client task"));
                    }
                    sent
                })
            })
            .join()
            .expect("clients' thread")
    });
    let wall = wall_time(&sent);
    (sent, wall)
}

/// From the first request sent to the last answer received.
fn wall_time(sent: &[Sent]) -> Duration {
    let began = sent.iter().map(|s| s.sent_at).min();
    let ended = sent.iter().map(|s| s.sent_at + s.latency).max();
    began.zip(ended).map(|(b, e)| e - b).unwrap_or_default()
}

/// [`post_all`] with a thread and a `ureq` agent per client, as this bench
/// measured before: the clients' own cost included.
fn post_all_threads(port: u16, clients: usize, first: usize, count: usize) -> (Vec<Sent>, Duration) {
    let url = format!("http://127.0.0.1:{port}/discoveries");
    let bodies: Vec<Vec<u8>> = (first..first + count)
        .map(|i| record(i).to_string().into_bytes())
        .collect();
    let barrier = std::sync::Barrier::new(clients);
    let sent: Vec<Sent> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|k| {
                let (url, bodies, barrier) = (&url, &bodies, &barrier);
                scope.spawn(move || {
                    let agent = agent();
                    barrier.wait();
                    let mut mine = Vec::new();
                    for body in bodies.iter().skip(k).step_by(clients) {
                        let at = Instant::now();
                        let discovery_id = post(&agent, url, body);
                        mine.push(Sent {
                            discovery_id,
                            sent_at: at,
                            latency: at.elapsed(),
                        });
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("client thread"))
            .collect()
    });
    let wall = wall_time(&sent);
    (sent, wall)
}

/// The `q` quantile (0..=1) of `values`, sorted here.
fn quantile(values: &mut [Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort_unstable();
    let at = ((values.len() - 1) as f64 * q).round() as usize;
    values[at]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn latency_line(label: &str, sent: &[Sent], wall: Duration) {
    let mut latencies: Vec<Duration> = sent.iter().map(|s| s.latency).collect();
    let p50 = quantile(&mut latencies, 0.5);
    let p99 = quantile(&mut latencies, 0.99);
    let max = quantile(&mut latencies, 1.0);
    println!(
        "{label:<28} {:>9.0} reports/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        sent.len() as f64 / wall.as_secs_f64(),
        ms(p50),
        ms(p99),
        ms(max)
    );
}

#[tokio::main]
async fn main() {
    let clients = env_usize("BENCH_INTAKE_CLIENTS", 32).max(1);
    let reports = env_usize("BENCH_INTAKE_REPORTS", 20_000).max(clients);
    let rate = env_usize("BENCH_INTAKE_RATE", 2_000).max(1) as f64;
    let secs = env_usize("BENCH_INTAKE_SECS", 10).max(1);

    println!("clients                      {clients}");
    println!("reports                      {reports}");

    // Baseline: the same reports in bulk, in-process, on a fresh keeper.db.
    let bulk = bulk_seconds(reports).await;
    println!(
        "{:<28} {:>9.0} reports/s  (Store::submit, one transaction per 5,000)",
        "baseline: bulk submit",
        reports as f64 / bulk
    );

    let env = Env::new();
    let (mut child, port, _log) = spawn_run(&env);

    // Baseline: one client alone, its share of the reports.
    let alone = (reports / clients).max(1);
    let (sent, wall) = post_all(port, 1, 0, alone, None);
    latency_line("baseline: one client alone", &sent, wall);

    let (sent, wall) = post_all(port, clients, alone, reports, None);
    latency_line(&format!("{clients} clients"), &sent, wall);
    let concurrent_rate = sent.len() as f64 / wall.as_secs_f64();
    println!(
        "{:<28} {:>9.2} x  (concurrent rate / bulk rate)",
        "ratio to bulk",
        concurrent_rate * bulk / reports as f64
    );
    let ids: std::collections::HashSet<i64> = sent.iter().map(|s| s.discovery_id).collect();
    assert_eq!(ids.len(), sent.len(), "every answer names its own discovery");

    // The same with a thread and a ureq agent per client.
    let (sent, wall) = post_all_threads(port, clients, alone + reports, reports);
    latency_line(&format!("{clients} clients, thread each"), &sent, wall);

    // The worker under sustained intake: wait for the backlog of the phases
    // above to drain first, so it measures the sustained rate alone.
    let stored = (alone + 2 * reports) as i64;
    wait_all_synced(&env.keeper, stored).await;
    let sustained = (rate * secs as f64) as usize;
    let first = alone + 2 * reports;
    let started = Instant::now();
    let watcher = {
        let keeper_db = env.keeper.clone();
        tokio::spawn(async move { watch_synced(&keeper_db, started, sustained).await })
    };
    let (sent, wall) = tokio::task::spawn_blocking(move || post_all(port, clients, first, sustained, Some(rate)))
        .await
        .expect("sustained clients");
    let synced_at = watcher.await.expect("synced watcher");
    let synced_wall = synced_at.values().max().map_or(Duration::ZERO, |last| *last - started);
    let mut to_vh: Vec<Duration> = sent
        .iter()
        .filter_map(|s| {
            synced_at
                .get(&s.discovery_id)
                .map(|t| t.saturating_duration_since(s.sent_at))
        })
        .collect();
    assert_eq!(to_vh.len(), sent.len(), "every sustained report synced");
    println!(
        "sustained intake             {:>9.0} reports/s offered, {:>9.0} answered, synced {:>9.0}/s",
        rate,
        sent.len() as f64 / wall.as_secs_f64(),
        sent.len() as f64 / synced_wall.as_secs_f64()
    );
    println!(
        "submit → synced              p50 {:>8.1} ms  p95 {:>8.1} ms  max {:>8.1} ms",
        ms(quantile(&mut to_vh, 0.5)),
        ms(quantile(&mut to_vh, 0.95)),
        ms(quantile(&mut to_vh, 1.0))
    );
    terminate(&mut child);
}

/// Seconds for `Store::submit` to store `reports` reports on a fresh keeper.db.
async fn bulk_seconds(reports: usize) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let keeper_db = dir.path().join("keeper.db");
    let args = ["bench", "--keeper-db", keeper_db.to_str().expect("utf-8 temp path")];
    let app = App::open(BenchSettings::parse_from(args).settings, keeper::store::Access::Create)
        .await
        .expect("open keeper.db");
    let batch: Vec<Report> = (0..reports)
        .map(|i| Report::from_json(&record(i)).unwrap_or_else(|e| panic!("bench record {i} is invalid: {e}")))
        .collect();
    let started = Instant::now();
    let ids = app.store.submit(&batch, 10).await.expect("bulk submit");
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(ids.len(), reports);
    secs
}

/// Waits until `want` queue items are synced (at most [`DRAIN_DEADLINE`]).
async fn wait_all_synced(keeper_db: &Path, want: i64) {
    let deadline = Instant::now() + DRAIN_DEADLINE;
    loop {
        let synced = common::query_i64(
            keeper_db,
            "SELECT COUNT(*) FROM sync_queue WHERE sync_status = 'synced'",
        )
        .await;
        if synced >= want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {synced} of {want} reports synced after {DRAIN_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls keeper.db every 20 ms from `started` until `want` more items
/// are synced (at most [`DRAIN_DEADLINE`]): when each discovery was first
/// seen synced.
async fn watch_synced(keeper_db: &Path, started: Instant, want: usize) -> HashMap<i64, Instant> {
    let already: Vec<i64> = sqlx::query_scalar("SELECT discovery_id FROM sync_queue WHERE sync_status = 'synced'")
        .fetch_all(&mut connect(keeper_db).await)
        .await
        .expect("read synced items");
    let already: std::collections::HashSet<i64> = already.into_iter().collect();
    let mut seen = HashMap::new();
    let mut conn = connect(keeper_db).await;
    while seen.len() < want {
        assert!(
            started.elapsed() < DRAIN_DEADLINE,
            "only {} of {want} sustained reports synced after {DRAIN_DEADLINE:?}",
            seen.len()
        );
        let done: Vec<i64> = sqlx::query_scalar(
            "SELECT discovery_id FROM sync_queue INDEXED BY idx_sync_queue_synced_at
             WHERE sync_status = 'synced' AND synced_at >= datetime('now', '-10 seconds')",
        )
        .fetch_all(&mut conn)
        .await
        .expect("poll synced items");
        let now = Instant::now();
        for id in done.into_iter().filter(|id| !already.contains(id)) {
            seen.entry(id).or_insert(now);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen
}
