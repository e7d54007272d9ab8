//! Intake under concurrency, end to end: many `POST /discoveries` at once
//! against the real `keeper run`, whose single submissions share
//! transactions (group commit, host/src/store/intake.rs). Each answer must
//! still name its own report, every report must be stored and queued once,
//! a bad report must fail alone, and nothing answered 201 may be lost when
//! keeper is killed in the middle of a burst.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn agent() -> ureq::Agent {
    http_agent(Duration::from_secs(60))
}

/// `POST /discoveries` (with `Idempotency-Key` when given): the status and
/// the JSON answer, or the transport error's text.
fn post(agent: &ureq::Agent, port: u16, body: &Value, key: Option<&str>) -> Result<(u16, Value), String> {
    let mut request = agent
        .post(format!("http://127.0.0.1:{port}/discoveries"))
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let mut response = request.send(body.to_string().as_bytes()).map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().map_err(|e| e.to_string())?;
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    Ok((status, value))
}

/// Every stored discovery: id → (description, queue ids of it).
async fn stored(env: &Env) -> HashMap<i64, (String, Vec<i64>)> {
    let mut conn = connect(&env.keeper).await;
    let rows: Vec<(i64, String, Option<i64>)> = sqlx::query_as(
        "SELECT d.id, d.description, q.id FROM discoveries d LEFT JOIN sync_queue q ON q.discovery_id = d.id",
    )
    .fetch_all(&mut conn)
    .await
    .expect("read keeper.db");
    let mut out: HashMap<i64, (String, Vec<i64>)> = HashMap::new();
    for (id, description, queue_id) in rows {
        let entry = out.entry(id).or_insert_with(|| (description, Vec::new()));
        entry.1.extend(queue_id);
    }
    out
}

/// The answer of a 201 as (discovery id, queue id).
fn ids(answer: &Value) -> (i64, i64) {
    let id = |k: &str| answer[k].as_i64().unwrap_or_else(|| panic!("no {k} in {answer}"));
    (id("discovery_id"), id("queue_id"))
}

#[tokio::test]
async fn concurrent_posts_are_each_stored_once_and_answered_with_their_own_ids() {
    const CLIENTS: usize = 64;
    const EACH: usize = 20;
    let env = Env::new();
    let (mut child, port, log) = spawn_run(&env);
    let barrier = std::sync::Barrier::new(CLIENTS);
    let answers: Vec<(String, u16, Value)> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let agent = agent();
                    barrier.wait();
                    (0..EACH)
                        .map(|i| {
                            let description = format!("client {c} report {i}");
                            let (status, answer) = post(&agent, port, &fossil_report(&description), None)
                                .unwrap_or_else(|e| panic!("{description}: {e}"));
                            (description, status, answer)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        clients.into_iter().flat_map(|c| c.join().unwrap()).collect()
    });
    let stored = stored(&env).await;
    terminate(&mut child);

    assert_eq!(answers.len(), CLIENTS * EACH);
    let mut discovery_ids = HashSet::new();
    let mut queue_ids = HashSet::new();
    for (description, status, answer) in &answers {
        assert_eq!(*status, 201, "{description}: {answer}\n{}", log.lock().unwrap());
        let (discovery_id, queue_id) = ids(answer);
        assert!(
            discovery_ids.insert(discovery_id),
            "two answers name discovery {discovery_id}"
        );
        assert!(queue_ids.insert(queue_id), "two answers name queue item {queue_id}");
        assert_eq!(
            stored.get(&discovery_id),
            Some(&(description.clone(), vec![queue_id])),
            "the answer to {description:?} points at another report or queue item"
        );
    }
    assert_eq!(stored.len(), CLIENTS * EACH, "every report stored once, nothing else");
}

#[tokio::test]
async fn a_bad_report_among_concurrent_good_ones_is_refused_alone() {
    const CLIENTS: usize = 16;
    const EACH: usize = 10;
    let env = Env::new();
    let (mut child, port, _log) = spawn_run(&env);
    // Keys a first request stores, reused below with another body.
    let first = agent();
    for c in 0..CLIENTS {
        let (status, answer) = post(
            &first,
            port,
            &fossil_report(&format!("keyed {c}")),
            Some(&format!("key-{c}")),
        )
        .unwrap();
        assert_eq!(status, 201, "{answer}");
    }
    let before = stored(&env).await;
    let barrier = std::sync::Barrier::new(CLIENTS);
    // Every third request is bad: no description (400) or a reused key (422).
    let answers: Vec<(usize, usize, u16, Value)> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let agent = agent();
                    barrier.wait();
                    (0..EACH)
                        .map(|i| {
                            let description = format!("client {c} report {i}");
                            let (status, answer) = match i % 3 {
                                1 if c % 2 == 0 => {
                                    let mut bad = fossil_report(&description);
                                    bad.as_object_mut().unwrap().remove("description");
                                    post(&agent, port, &bad, None)
                                }
                                1 => post(&agent, port, &fossil_report(&description), Some(&format!("key-{c}"))),
                                _ => post(&agent, port, &fossil_report(&description), None),
                            }
                            .unwrap_or_else(|e| panic!("{description}: {e}"));
                            (c, i, status, answer)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        clients.into_iter().flat_map(|c| c.join().unwrap()).collect()
    });
    let after = stored(&env).await;
    terminate(&mut child);

    let mut good = 0;
    for (c, i, status, answer) in &answers {
        let description = format!("client {c} report {i}");
        match (i % 3, c % 2) {
            (1, 0) => {
                assert_eq!(*status, 400, "{description}: {answer}");
                assert!(
                    answer["message"].as_str().unwrap_or("").contains("description"),
                    "{answer}"
                );
            }
            (1, _) => {
                assert_eq!(*status, 422, "{description}: {answer}");
                assert!(
                    answer["message"].as_str().unwrap_or("").contains("already used"),
                    "{answer}"
                );
            }
            _ => {
                assert_eq!(*status, 201, "{description}: {answer}");
                let (discovery_id, queue_id) = ids(answer);
                assert_eq!(after.get(&discovery_id), Some(&(description, vec![queue_id])));
                good += 1;
            }
        }
    }
    assert_eq!(after.len(), before.len() + good, "only the good reports were stored");
    let refused: Vec<&String> = after
        .values()
        .map(|(d, _)| d)
        .filter(|d| {
            d.strip_prefix("client ")
                .and_then(|rest| rest.split(" report ").nth(1))
                .and_then(|i| i.parse::<usize>().ok())
                .is_some_and(|i| i % 3 == 1)
        })
        .collect();
    assert!(refused.is_empty(), "refused reports were stored: {refused:?}");
}

/// `keeper run` SIGKILLed while 16 clients post: every report that was
/// answered 201 is in keeper.db, queued, after a restart.
#[tokio::test]
async fn every_acknowledged_report_survives_a_sigkill_during_a_burst() {
    const CLIENTS: usize = 16;
    const KILL_AFTER: usize = 300;
    let env = Env::new();
    let (mut child, port, log) = spawn_run(&env);
    let acknowledged = AtomicUsize::new(0);
    let answers: Vec<(String, Value)> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let acknowledged = &acknowledged;
                scope.spawn(move || {
                    let agent = agent();
                    let mut mine = Vec::new();
                    // Bounded: the kill comes long before, or the test fails below.
                    for i in 0..10_000 {
                        let description = format!("client {c} report {i}");
                        match post(&agent, port, &fossil_report(&description), None) {
                            Ok((201, answer)) => {
                                acknowledged.fetch_add(1, Ordering::Relaxed);
                                mine.push((description, answer));
                            }
                            Ok((status, answer)) => panic!("{description}: {status} {answer}"),
                            // Killed: the connection is gone.
                            Err(_) => break,
                        }
                    }
                    mine
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(120);
        while acknowledged.load(Ordering::Relaxed) < KILL_AFTER {
            assert!(
                Instant::now() < deadline,
                "only {} reports acknowledged in 120 s\n{}",
                acknowledged.load(Ordering::Relaxed),
                log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().expect("SIGKILL keeper");
        child.wait().expect("reap keeper");
        clients.into_iter().flat_map(|c| c.join().unwrap()).collect()
    });
    assert!(answers.len() >= KILL_AFTER);

    // A restart recovers keeper.db (its WAL) as an operator's would.
    let (mut again, _, _) = spawn_run(&env);
    stop(&mut again);
    let stored = stored(&env).await;
    for (description, answer) in &answers {
        let (discovery_id, queue_id) = ids(answer);
        assert_eq!(
            stored.get(&discovery_id),
            Some(&(description.clone(), vec![queue_id])),
            "{description:?} was acknowledged but is not in keeper.db as answered"
        );
    }
}

/// The worker's pacing seen from outside: a burst of posts through the API
/// (16 clients at once) is a stream, so after a batch or two the worker
/// waits its cooldown (5 s here) before its next claim, and the reports
/// that came meanwhile are still pending a second after the last answer;
/// all of them sync once the cooldown is over. Were the API's reports not
/// counted as arrivals (or the cooldown not kept), they would all sync
/// within milliseconds. Only a lower bound is asserted: a slow machine
/// syncs later, not sooner. (Posts a few milliseconds apart are a trickle
/// and sync at once: the worker keeps pace with them in passes of one.)
#[tokio::test]
async fn a_burst_of_posts_waits_for_the_workers_cooldown_then_all_sync() {
    const CLIENTS: usize = 16;
    const EACH: usize = 10;
    let posts = (CLIENTS * EACH) as i64;
    let mut env = Env::new();
    env.var("SYNC_BATCH_SIZE", 2).var("SYNC_COOLDOWN_MS", 5_000);
    let (mut child, port, log) = spawn_run(&env);
    let barrier = std::sync::Barrier::new(CLIENTS);
    std::thread::scope(|scope| {
        for c in 0..CLIENTS {
            let barrier = &barrier;
            scope.spawn(move || {
                let agent = agent();
                barrier.wait();
                for i in 0..EACH {
                    let description = format!("burst {c}.{i}");
                    let (status, answer) = post(&agent, port, &fossil_report(&description), None)
                        .unwrap_or_else(|e| panic!("{description}: {e}"));
                    assert_eq!(status, 201, "{description}: {answer}");
                }
            });
        }
    });
    let answered = Instant::now();
    let synced = "SELECT COUNT(*) FROM sync_queue WHERE sync_status = 'synced'";
    tokio::time::sleep(Duration::from_secs(1)).await;
    let early = query_i64(&env.keeper, synced).await;
    let waited = answered.elapsed();
    if early == posts && waited < Duration::from_millis(4_500) {
        let log = log.lock().map(|log| log.clone()).unwrap_or_default();
        panic!("all {posts} synced within {waited:?} of the last answer: no cooldown\n{log}");
    }
    wait_for_value(&env.keeper, synced, posts, Duration::from_secs(60)).await;
    terminate(&mut child);
}
