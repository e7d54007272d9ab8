//! Group commit of intake on keeper.db.
//!
//! Every single report submitted while keeper runs (the API's
//! `POST /discoveries`, the bot's forms) goes to one task, the committer,
//! through a channel. The committer takes whatever is waiting, up to
//! [`GROUP_MAX`], writes it all in one `BEGIN IMMEDIATE` … `COMMIT`, and
//! only then answers each request: nothing is acknowledged before its
//! commit. With a transaction (and an fsync) per request, 32 concurrent
//! clients reached 2,100–2,600 reports/s with a p99 of 250–520 ms, the
//! requests queueing in SQLite's busy handler; a group shares one fsync.
//!
//! A lone request is written at once: the committer never waits for a
//! group to fill. Groups form only from requests that arrived while the
//! previous group was being written, so grouping adds no latency when
//! there is no concurrency.
//!
//! Bad reports never reach a group: they are refused when validated
//! (`Report::from_json`), before grouping. What can still fail inside a
//! group is keeper.db itself, or a row SQLite refuses (a trigger, a
//! constraint an adopted file adds). Then the group is written again one
//! submission at a time, each in its own savepoint of one transaction, so
//! that only the one at fault gets an error and the others are stored.
//!
//! Idempotency keys keep their meaning inside a group: a key stored
//! earlier answers as before; a key seen twice in one group stores its
//! report once, the repeat getting the first's answer, or, with another
//! request hash, the refusal it would get a moment later.
//!
//! The group size is bounded and each group first takes its
//! [`WriteTurn`], the turn the worker's claims and completions also take, so
//! under sustained intake the worker waits for one group at most.
//!
//! `keeper submit` (bulk, another process) and PostgreSQL (whose MVCC runs
//! concurrent transactions side by side) keep their own paths.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;
use sqlx::{Connection as _, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::write_turn::WriteTurn;
use super::{INTAKE_KEY_TTL_HOURS, Intake, IntakeError, IntakeKey, SeenKey, StoreError, insert_reports, seen_again};
use crate::report::Report;

/// The most submissions one transaction writes: enough that a burst of a
/// few hundred clients shares one commit, few enough that a group holds
/// keeper.db's write lock for milliseconds, not longer.
pub const GROUP_MAX: usize = 256;

/// Submissions that may wait for the committer before a sender waits too.
const WAITING_MAX: usize = 4 * GROUP_MAX;

/// One report to store, with the idempotency key it came with, if any.
pub struct Submission {
    pub report: Report,
    pub key: Option<Keyed>,
    pub max_attempts: u32,
}

/// An idempotency key and the hash of the request that carried it.
pub struct Keyed {
    pub key: IntakeKey,
    pub request_hash: String,
}

/// What one submission gets: where its report went, or why not.
type Answer = Result<Intake, IntakeError>;

struct Waiting {
    submission: Submission,
    answer: oneshot::Sender<Answer>,
}

/// The sending end of the committer; clones share it. The committer task
/// ends when the last clone is dropped.
#[derive(Clone)]
pub struct Committer {
    waiting: mpsc::Sender<Waiting>,
}

impl Committer {
    /// Starts the committer task on the current tokio runtime.
    pub fn start(pool: SqlitePool, turn: WriteTurn, path: PathBuf) -> Committer {
        let (waiting, arriving) = mpsc::channel(WAITING_MAX);
        tokio::spawn(run(pool, turn, path, arriving));
        Committer { waiting }
    }

    /// Stores `submission` in the next group; answers once it is committed.
    pub async fn submit(&self, submission: Submission) -> Answer {
        let (answer, answered) = oneshot::channel();
        self.waiting
            .send(Waiting { submission, answer })
            .await
            .map_err(|_| StoreError::IntakeStopped)?;
        answered.await.map_err(|_| StoreError::IntakeStopped)?
    }
}

async fn run(pool: SqlitePool, turn: WriteTurn, path: PathBuf, mut arriving: mpsc::Receiver<Waiting>) {
    let mut group = Vec::with_capacity(GROUP_MAX);
    while arriving.recv_many(&mut group, GROUP_MAX).await > 0 {
        let (submissions, answers): (Vec<Submission>, Vec<oneshot::Sender<Answer>>) =
            group.drain(..).map(|w| (w.submission, w.answer)).unzip();
        let written = write(&pool, &turn, &path, &submissions).await;
        for (answer, written) in answers.into_iter().zip(written) {
            // A request whose client has gone still had its report stored.
            let _ = answer.send(written);
        }
    }
}

/// Writes one group; an answer per submission, in order.
async fn write(pool: &SqlitePool, turn: &WriteTurn, path: &std::path::Path, group: &[Submission]) -> Vec<Answer> {
    let _turn = turn.take().await;
    let mut conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(error) => return every_one_failed(group.len(), error),
    };
    let error = match write_together(&mut conn, group).await {
        Ok(answers) => return answers,
        Err(error) => error,
    };
    if group.len() == 1 {
        return every_one_failed(1, error);
    }
    tracing::warn!(
        path = %path.display(),
        %error,
        submissions = group.len(),
        "keeper.db refused a group of reports; writing them one by one"
    );
    write_one_by_one(&mut conn, group).await
}

/// The group in one transaction; an error fails all of it.
async fn write_together(conn: &mut SqliteConnection, group: &[Submission]) -> Result<Vec<Answer>, sqlx::Error> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let answers = write_group(&mut tx, group).await?;
    tx.commit().await?;
    Ok(answers)
}

/// The group in one transaction, each submission in a savepoint of its
/// own: one that fails is rolled back alone and gets its error.
async fn write_one_by_one(conn: &mut SqliteConnection, group: &[Submission]) -> Vec<Answer> {
    let mut tx = match conn.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(error) => return every_one_failed(group.len(), error),
    };
    let mut answers = Vec::with_capacity(group.len());
    for submission in group {
        let answer = match sqlx::Connection::begin(&mut *tx).await {
            Err(error) => Err(IntakeError::Store(error.into())),
            Ok(mut savepoint) => match write_group(&mut savepoint, std::slice::from_ref(submission)).await {
                Ok(mut one) => match savepoint.commit().await {
                    Ok(()) => one
                        .pop()
                        .unwrap_or_else(|| Err(StoreError::Sql(sqlx::Error::RowNotFound).into())),
                    Err(error) => Err(IntakeError::Store(error.into())),
                },
                Err(error) => {
                    let _ = savepoint.rollback().await;
                    Err(IntakeError::Store(error.into()))
                }
            },
        };
        answers.push(answer);
    }
    if let Err(error) = tx.commit().await {
        // Nothing of the group was stored: the answers stored become errors.
        let error = Arc::new(error);
        for answer in &mut answers {
            if answer.is_ok() {
                *answer = Err(StoreError::Shared(error.clone()).into());
            }
        }
    }
    answers
}

fn every_one_failed(count: usize, error: sqlx::Error) -> Vec<Answer> {
    let error = Arc::new(error);
    (0..count)
        .map(|_| Err(StoreError::Shared(error.clone()).into()))
        .collect()
}

/// What becomes of one submission of a group.
enum Plan {
    /// Its report is the n-th the group inserts.
    Insert(usize),
    /// A repeat, in the same group, of the n-th report inserted.
    RepeatOf(usize),
    /// Answered without storing anything (a key seen before).
    Answered(Answer),
}

/// Writes a group inside the caller's transaction: the keys it carries
/// looked up at once, every new report inserted in one statement with its
/// queue row, the new keys recorded. Errors are keeper.db's; a refused key
/// is an answer.
async fn write_group(conn: &mut SqliteConnection, group: &[Submission]) -> Result<Vec<Answer>, sqlx::Error> {
    let keys: Vec<&IntakeKey> = group.iter().filter_map(|s| s.key.as_ref().map(|k| &k.key)).collect();
    let mut stored = HashMap::new();
    if !keys.is_empty() {
        sqlx::query("DELETE FROM keeper_intake_keys WHERE created_at < datetime('now', ?1)")
            .bind(format!("-{INTAKE_KEY_TTL_HOURS} hours"))
            .execute(&mut *conn)
            .await?;
        stored = stored_keys(conn, &keys).await?;
    }
    let mut plans = Vec::with_capacity(group.len());
    let mut inserted: Vec<&Submission> = Vec::with_capacity(group.len());
    // Keys first met in this group: the report they insert and its hash.
    let mut in_group: HashMap<&str, (usize, &str)> = HashMap::new();
    let mut now: Option<String> = None;
    for submission in group {
        let Some(keyed) = &submission.key else {
            plans.push(Plan::Insert(inserted.len()));
            inserted.push(submission);
            continue;
        };
        if let Some(seen) = stored.get(&keyed.key.0) {
            plans.push(Plan::Answered(seen_again(
                &keyed.key,
                &keyed.request_hash,
                seen.clone(),
            )));
        } else if let Some(&(first, hash)) = in_group.get(keyed.key.0.as_str()) {
            if hash == keyed.request_hash {
                plans.push(Plan::RepeatOf(first));
            } else {
                if now.is_none() {
                    now = Some(
                        sqlx::query_scalar("SELECT datetime('now')")
                            .fetch_one(&mut *conn)
                            .await?,
                    );
                }
                let first_used: String = now.clone().unwrap_or_default();
                plans.push(Plan::Answered(Err(IntakeError::KeyReused {
                    key: keyed.key.shown().to_owned(),
                    first_used,
                })));
            }
        } else {
            in_group.insert(&keyed.key.0, (inserted.len(), &keyed.request_hash));
            plans.push(Plan::Insert(inserted.len()));
            inserted.push(submission);
        }
    }

    let mut intakes = Vec::with_capacity(inserted.len());
    // One insert per run of equal `max_attempts` (in practice one: every
    // submission of a keeper has its SYNC_MAX_ATTEMPTS).
    for run in inserted.chunk_by(|a, b| a.max_attempts == b.max_attempts) {
        let max_attempts = run.first().map_or(0, |s| s.max_attempts);
        intakes.extend(insert_reports(conn, run.iter().map(|s| &s.report), max_attempts).await?);
    }

    let new_keys: Vec<serde_json::Value> = inserted
        .iter()
        .zip(&intakes)
        .filter_map(|(s, intake)| {
            let keyed = s.key.as_ref()?;
            Some(json!([
                keyed.key.0,
                keyed.request_hash,
                intake.discovery_id,
                intake.queue_id
            ]))
        })
        .collect();
    if !new_keys.is_empty() {
        sqlx::query(
            "INSERT INTO keeper_intake_keys (key, request_hash, discovery_id, queue_id)
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?1)",
        )
        .bind(serde_json::Value::Array(new_keys).to_string())
        .execute(&mut *conn)
        .await?;
    }

    Ok(plans
        .into_iter()
        .map(|plan| match plan {
            Plan::Insert(n) => intakes
                .get(n)
                .copied()
                .ok_or(StoreError::Sql(sqlx::Error::RowNotFound).into()),
            Plan::RepeatOf(n) => intakes
                .get(n)
                .map(|first| Intake {
                    repeated: true,
                    ..*first
                })
                .ok_or(StoreError::Sql(sqlx::Error::RowNotFound).into()),
            Plan::Answered(answer) => answer,
        })
        .collect())
}

/// The live (unexpired) entries of `keys`, by key.
pub(super) async fn stored_keys(
    conn: &mut SqliteConnection,
    keys: &[&IntakeKey],
) -> Result<HashMap<String, SeenKey>, sqlx::Error> {
    let rows: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT key, request_hash, created_at, discovery_id, queue_id FROM keeper_intake_keys
         WHERE key IN (SELECT value FROM json_each(?1)) AND created_at >= datetime('now', ?2)",
    )
    .bind(json!(keys.iter().map(|k| &k.0).collect::<Vec<_>>()).to_string())
    .bind(format!("-{INTAKE_KEY_TTL_HOURS} hours"))
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(key, request_hash, created_at, discovery_id, queue_id)| {
            (
                key,
                SeenKey::from_row((request_hash, created_at, discovery_id, queue_id)),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Access, Store};

    fn report(description: &str) -> Report {
        Report::from_json(&json!({
            "discovery_type": "🦴",
            "system_name": "Oculi",
            "location": "planet:Erren",
            "description": description,
            "username": "Explorer#1234",
        }))
        .expect("a valid report")
    }

    fn plain(description: &str) -> Submission {
        Submission {
            report: report(description),
            key: None,
            max_attempts: 3,
        }
    }

    fn keyed(description: &str, key: &str, request_hash: &str) -> Submission {
        Submission {
            key: Some(Keyed {
                key: IntakeKey::http(key),
                request_hash: request_hash.to_owned(),
            }),
            ..plain(description)
        }
    }

    async fn open() -> (tempfile::TempDir, Store, SqlitePool) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("keeper.db"), Access::Create)
            .await
            .expect("open keeper.db");
        let pool = store.db().sqlite().expect("keeper.db").clone();
        (dir, store, pool)
    }

    async fn descriptions(pool: &SqlitePool) -> Vec<(i64, String, i64)> {
        sqlx::query_as(
            "SELECT d.id, d.description, q.id FROM discoveries d JOIN sync_queue q ON q.discovery_id = d.id
             ORDER BY d.id",
        )
        .fetch_all(pool)
        .await
        .expect("read keeper.db")
    }

    /// One group: each answer names its own report and queue item, a key
    /// repeated in the group stores once and the repeat gets the first
    /// answer, the same key with another request is refused.
    #[tokio::test]
    async fn a_group_keeps_each_answer_and_each_key_apart() {
        let (_dir, _store, pool) = open().await;
        let group = vec![
            plain("first"),
            keyed("keyed", "k-1", "hash-a"),
            keyed("keyed", "k-1", "hash-a"),
            keyed("another body", "k-1", "hash-b"),
            plain("last"),
        ];
        let answers = write(&pool, &WriteTurn::default(), std::path::Path::new("keeper.db"), &group).await;
        let stored = descriptions(&pool).await;
        assert_eq!(
            stored.iter().map(|(_, d, _)| d.as_str()).collect::<Vec<_>>(),
            ["first", "keyed", "last"]
        );
        let intake = |n: usize| match &answers[n] {
            Ok(intake) => *intake,
            Err(e) => panic!("answer {n}: {e}"),
        };
        for (n, row) in [(0, 0), (1, 1), (4, 2)] {
            let (discovery_id, _, queue_id) = stored[row];
            assert_eq!(intake(n).discovery_id, discovery_id, "answer {n}");
            assert_eq!(intake(n).queue_id, queue_id, "answer {n}");
            assert!(!intake(n).repeated);
        }
        assert_eq!(
            intake(2),
            Intake {
                repeated: true,
                ..intake(1)
            }
        );
        assert!(
            matches!(&answers[3], Err(IntakeError::KeyReused { key, .. }) if key == "k-1"),
            "{:?}",
            answers[3].as_ref().err().map(ToString::to_string)
        );

        // A later group sees the key stored by this one.
        let again = write(
            &pool,
            &WriteTurn::default(),
            std::path::Path::new("keeper.db"),
            &[keyed("keyed", "k-1", "hash-a"), keyed("other", "k-1", "hash-c")],
        )
        .await;
        assert_eq!(again[0].as_ref().ok().copied(), Some(intake(2)));
        assert!(matches!(&again[1], Err(IntakeError::KeyReused { .. })));
        assert_eq!(descriptions(&pool).await.len(), 3, "nothing more stored");
    }

    /// A report keeper.db refuses (here a trigger, as an adopted file may
    /// have) fails alone: the rest of its group is stored, it is not.
    #[tokio::test]
    async fn a_report_keeper_db_refuses_fails_alone_in_its_group() {
        let (_dir, _store, pool) = open().await;
        sqlx::query(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON discoveries WHEN NEW.description = 'poison'
             BEGIN SELECT RAISE(ABORT, 'poison refused'); END",
        )
        .execute(&pool)
        .await
        .expect("create trigger");
        let group = vec![
            plain("good 1"),
            keyed("poison", "k-poison", "h"),
            keyed("good 2", "k-good", "h"),
        ];
        let answers = write(&pool, &WriteTurn::default(), std::path::Path::new("keeper.db"), &group).await;
        let stored = descriptions(&pool).await;
        assert_eq!(
            stored.iter().map(|(_, d, _)| d.as_str()).collect::<Vec<_>>(),
            ["good 1", "good 2"]
        );
        assert_eq!(answers[0].as_ref().ok().map(|i| i.discovery_id), Some(stored[0].0));
        assert_eq!(answers[2].as_ref().ok().map(|i| i.discovery_id), Some(stored[1].0));
        match &answers[1] {
            Err(IntakeError::Store(e)) => assert!(e.to_string().contains("poison refused"), "{e}"),
            other => panic!("the poison report was not refused: {:?}", other.as_ref().ok()),
        }
        let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM keeper_intake_keys ORDER BY key")
            .fetch_all(&pool)
            .await
            .expect("read keys");
        assert_eq!(keys, ["http:k-good"], "the refused report's key is not kept");
    }

    /// Many submissions at once through the committer: each answered with
    /// its own report, every one stored and queued once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_submissions_are_each_answered_with_their_own_report() {
        let (_dir, _store, pool) = open().await;
        let committer = Committer::start(pool.clone(), WriteTurn::default(), "keeper.db".into());
        let tasks: Vec<_> = (0..300)
            .map(|n| {
                let committer = committer.clone();
                tokio::spawn(async move { (n, committer.submit(plain(&format!("report {n}"))).await) })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.expect("task"));
        }
        let stored: HashMap<i64, (String, i64)> = descriptions(&pool)
            .await
            .into_iter()
            .map(|(id, d, q)| (id, (d, q)))
            .collect();
        let mut answered = std::collections::HashSet::new();
        for (n, answer) in answers {
            let intake = answer.unwrap_or_else(|e| panic!("report {n}: {e}"));
            assert_eq!(
                stored.get(&intake.discovery_id),
                Some(&(format!("report {n}"), intake.queue_id)),
                "report {n}'s answer points at another report"
            );
            assert!(answered.insert(intake.discovery_id), "two answers name one report");
        }
        assert_eq!(descriptions(&pool).await.len(), 300, "each stored once");
    }
}
