//! One test suite for both store drivers: every scenario below runs on a
//! keeper.db in a temp folder and on a fresh PostgreSQL database
//! (`KEEPER_TEST_POSTGRES_URL`, see `db::test_postgres`), through the same
//! [`Queue`] and [`Store`] API. A behaviour that differs between the
//! drivers fails one of the two.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::report::Report;
use crate::store::{Access, IntakeError, IntakeKey, Store};

use crate::db::on_both_drivers;

on_both_drivers!(
    claims_are_leased_disjoint_and_complete_once,
    an_expired_lease_is_taken_over_and_the_stale_token_changes_nothing,
    failures_back_off_give_up_and_are_counted_by_class,
    the_consoles_failures_by_class_item_search_and_rate,
    manual_retries_and_their_refusals,
    remote_acknowledgements_and_failures,
    intake_keys_store_a_report_once,
    discovery_rows_reach_the_plugin_alike,
    cleanup_and_last_synced,
    the_store_is_migrated_once_and_reopened_read_only,
    moving_the_clock_lapses_leases_ends_backoffs_and_ages_synced_items,
    a_lapsed_lease_is_taken_over_alone_and_the_stale_holders_outcome_changes_nothing,
    a_batch_larger_than_a_write_turn_is_claimed_and_completed_whole,
);

/// Time moved by the queue's [`Clock`] instead of waited for: a lease
/// lapses, a backoff ends and synced items age exactly when the database's
/// clock says so, not a moment before.
async fn moving_the_clock_lapses_leases_ends_backoffs_and_ages_synced_items(store: Store) {
    let clock = crate::clock::Clock::default();
    let queue = Queue::new(store.db().clone(), policy(30), Duration::from_secs(60)).with_clock(clock.clone());
    submit(&store, 2).await;
    let first = queue.claim(10, None).await.expect("claim");
    assert_eq!(first.items.len(), 2);
    clock.advance(Duration::from_secs(59));
    assert!(
        queue.claim(10, None).await.expect("claim").items.is_empty(),
        "leased for 60 s"
    );
    clock.advance(Duration::from_secs(2));
    let second = queue.claim(10, None).await.expect("claim");
    assert_eq!(second.items.len(), 2, "the lease lapsed");
    let [a, b] = &second.items[..] else {
        panic!("two items: {second:?}")
    };
    queue
        .complete(
            &second.token,
            &[delivered(b.queue_id, 7)],
            &[failed(a, ErrorClass::Locked)],
        )
        .await
        .expect("complete");

    // The first failure backs off 30 s.
    clock.advance(Duration::from_secs(29));
    assert!(
        queue.claim(10, None).await.expect("claim").items.is_empty(),
        "backing off"
    );
    assert_eq!(queue.waiting().await.expect("waiting").count, 1);
    clock.advance(Duration::from_secs(2));
    assert_eq!(queue.waiting().await.expect("waiting").count, 0);
    let retried = queue.claim(10, None).await.expect("claim");
    assert_eq!(retried.items.len(), 1, "due after its backoff");
    assert_eq!((retried.items[0].queue_id, retried.items[0].attempts), (a.queue_id, 1));
    queue.release(&retried.token).await.expect("release");

    // Synced 31 s ago: within the hour; two hours on, within the day only.
    let statistics = queue.statistics().await.expect("statistics");
    assert_eq!((statistics.synced_last_hour, statistics.synced_last_day), (1, 1));
    clock.advance(Duration::from_secs(2 * 3600));
    let statistics = queue.statistics().await.expect("statistics");
    assert_eq!((statistics.synced_last_hour, statistics.synced_last_day), (0, 1));
    assert_eq!(queue.cleanup(1).await.expect("cleanup"), 0, "not a day old yet");
    clock.advance(Duration::from_secs(86_400));
    assert_eq!(queue.cleanup(1).await.expect("cleanup"), 1, "a day old");
    assert_eq!(queue.counts().await.expect("counts").pending, 1);
}

/// Leases lapse one by one: only the items whose lease ran out are taken
/// over (not as a failed attempt), and the worker that lost them, waking
/// up, can neither complete, fail, renew nor release them.
async fn a_lapsed_lease_is_taken_over_alone_and_the_stale_holders_outcome_changes_nothing(store: Store) {
    let clock = crate::clock::Clock::default();
    let queue = Queue::new(store.db().clone(), policy(30), Duration::from_secs(3600)).with_clock(clock.clone());
    submit(&store, 3).await;
    let stale = queue.claim(2, None).await.expect("claim");
    clock.advance(Duration::from_secs(1800));
    let held = queue.claim(10, None).await.expect("claim");
    assert_eq!((stale.items.len(), held.items.len()), (2, 1));
    for _ in 0..3 {
        assert!(queue.claim(10, None).await.expect("claim").items.is_empty(), "all held");
    }
    clock.advance(Duration::from_secs(1801));
    let current = queue.claim(10, None).await.expect("claim");
    let ids = |items: &[ClaimedItem]| items.iter().map(|i| i.queue_id).collect::<Vec<_>>();
    assert_eq!(ids(&current.items), ids(&stale.items), "only the lapsed leases");
    assert!(
        current.items.iter().all(|i| i.attempts == 0),
        "a lost lease is not a failed attempt"
    );
    let [a, b] = &stale.items[..] else {
        panic!("two items: {stale:?}")
    };

    queue
        .complete(
            &stale.token,
            &[delivered(a.queue_id, 7)],
            &[failed(b, ErrorClass::Locked)],
        )
        .await
        .expect("stale complete");
    assert_eq!(queue.renew(&stale.token).await.expect("renew"), 0);
    assert_eq!(queue.release(&stale.token).await.expect("release"), 0);
    for item in [a, b] {
        let item = queue.item(item.queue_id).await.expect("item").expect("exists");
        assert_eq!(
            (
                item.sync_status,
                item.sync_attempts,
                item.error_class,
                item.haven_discovery_id
            ),
            (SyncStatus::Syncing, 0, None, None),
            "the stale token changed nothing"
        );
    }

    queue
        .complete(
            &current.token,
            &[delivered(a.queue_id, 8)],
            &[failed(b, ErrorClass::Locked)],
        )
        .await
        .expect("complete");
    let a = queue.item(a.queue_id).await.expect("item").expect("exists");
    assert_eq!((a.sync_status, a.haven_discovery_id), (SyncStatus::Synced, Some(8)));
    let b = queue.item(b.queue_id).await.expect("item").expect("exists");
    assert_eq!(
        (b.sync_status, b.sync_attempts, b.error_class),
        (SyncStatus::Pending, 1, Some(ErrorClass::Locked))
    );
    assert_eq!(
        queue.counts().await.expect("counts").syncing,
        1,
        "the third item is still held"
    );
}

/// What the console reads: failures by class, the item search with its
/// filters and cursor, synced per minute.
async fn the_consoles_failures_by_class_item_search_and_rate(store: Store) {
    let queue = Queue::new(store.db().clone(), policy(30), Duration::from_secs(60));
    submit(&store, 3).await;
    let claim = queue.claim(10, None).await.expect("claim");
    let [a, b, c] = &claim.items[..] else {
        panic!("three items: {claim:?}")
    };
    queue
        .complete(
            &claim.token,
            &[delivered(c.queue_id, 7)],
            &[failed(a, ErrorClass::Locked), failed(b, ErrorClass::Mapping)],
        )
        .await
        .expect("complete");

    let classes = queue.failure_classes().await.expect("failure classes");
    let summary: Vec<(Option<ErrorClass>, i64, i64, i64)> = classes
        .iter()
        .map(|c| (c.class, c.failed, c.waiting, c.oldest_queue_id))
        .collect();
    assert_eq!(
        summary,
        vec![
            (Some(ErrorClass::Mapping), 1, 0, b.queue_id),
            (Some(ErrorClass::Locked), 0, 1, a.queue_id)
        ],
        "most failed first"
    );
    assert_eq!(classes[1].latest_queue_id, a.queue_id);
    assert_eq!(classes[1].latest_error.as_deref(), Some("locked went wrong"));
    assert!(classes[1].oldest_created_at.is_some());

    let ids = |items: Vec<ListedItem>| items.iter().map(|i| i.queue_id).collect::<Vec<_>>();
    let search = |filter: ItemFilter| {
        let queue = queue.clone();
        async move { ids(queue.list_items(&filter, 10).await.expect("list items")) }
    };
    let all = vec![c.queue_id, b.queue_id, a.queue_id];
    assert_eq!(search(ItemFilter::default()).await, all, "newest first");
    let listed = queue.list_items(&ItemFilter::default(), 1).await.expect("list");
    assert_eq!(listed[0].sync_status, SyncStatus::Synced);
    assert_eq!(listed[0].system_name.as_deref(), Some("System 2"));
    assert_eq!(listed[0].discovery_type.as_deref(), Some("🦴"));
    let filter = |f: fn(&mut ItemFilter)| {
        let mut filter = ItemFilter::default();
        f(&mut filter);
        filter
    };
    assert_eq!(
        search(filter(|f| f.system = Some("sYsTeM 1".into()))).await,
        vec![b.queue_id]
    );
    assert_eq!(search(filter(|f| f.user = Some("plorer#".into()))).await, all);
    assert_eq!(
        search(filter(|f| f.user = Some("%".into()))).await,
        Vec::<i64>::new(),
        "% is literal"
    );
    assert_eq!(
        search(filter(|f| f.state = Some(SyncStatus::Pending))).await,
        vec![a.queue_id]
    );
    assert_eq!(
        search(filter(|f| f.class = Some(ErrorClass::Mapping))).await,
        vec![b.queue_id]
    );
    assert_eq!(
        search(filter(|f| f.discovery_type = Some("💎".into()))).await,
        Vec::<i64>::new()
    );
    let before = c.queue_id;
    let paged = ItemFilter {
        before: Some(before),
        ..ItemFilter::default()
    };
    assert_eq!(search(paged).await, vec![b.queue_id, a.queue_id]);

    let per_minute = queue.synced_per_minute().await.expect("synced per minute");
    assert_eq!(per_minute.len(), 60);
    assert_eq!(per_minute[59], 1, "synced this minute: {per_minute:?}");
    assert_eq!(per_minute.iter().sum::<i64>(), 1);
}

fn policy(base_secs: u64) -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_secs(base_secs),
        max_delay: Duration::from_secs(86_400),
        max_attempts: 3,
    }
}

fn report(n: usize) -> Report {
    Report::from_json(&json!({
        "discovery_type": "🦴",
        "system_name": format!("System {n}"),
        "location": "planet:Getre Beta",
        "description": format!("Report number {n}"),
        "username": "Explorer#1234",
        "tags": ["a", "b"],
    }))
    .expect("a valid report")
}

async fn submit(store: &Store, n: usize) -> Vec<i64> {
    let reports: Vec<Report> = (0..n).map(report).collect();
    store.submit(&reports, 3).await.expect("submit")
}

pub(super) fn delivered(queue_id: i64, haven_id: i64) -> Delivered {
    Delivered {
        queue_id,
        haven_id,
        metadata: json!({"plugin": {"name": "mapper", "version": "1.0.0", "hash": "ab"}}),
        keeper_db_replaced: false,
    }
}

fn failed(item: &ClaimedItem, class: ErrorClass) -> Failed {
    Failed {
        queue_id: item.queue_id,
        attempts: item.attempts,
        class,
        message: format!("{class} went wrong"),
    }
}

/// keeper.db claims and completes 100 items to a write turn: a batch of
/// 250 is still one claim of every due item, in order, each once, and its
/// completion reaches every item and every counter (as on PostgreSQL,
/// which does each in one statement).
async fn a_batch_larger_than_a_write_turn_is_claimed_and_completed_whole(store: Store) {
    let queue = Queue::new(store.db().clone(), policy(30), Duration::from_secs(60));
    submit(&store, 250).await;
    let batch = queue.claim(300, None).await.expect("claim");
    let ids: Vec<i64> = batch.items.iter().map(|i| i.queue_id).collect();
    assert_eq!(ids.len(), 250, "every due item, none twice");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in queue order: {ids:?}");
    assert!(queue.claim(300, None).await.expect("claim").items.is_empty());

    // Exactly two turns' worth: the claim stops at its limit.
    submit(&store, 200).await;
    let exact = queue.claim(200, None).await.expect("claim");
    assert_eq!(exact.items.len(), 200);
    queue.release(&exact.token).await.expect("release");

    let (to_fail, to_sync) = batch.items.split_at(130);
    let done: Vec<Delivered> = to_sync.iter().map(|i| delivered(i.queue_id, i.queue_id)).collect();
    let failures: Vec<Failed> = to_fail.iter().map(|i| failed(i, ErrorClass::Locked)).collect();
    queue.complete(&batch.token, &done, &failures).await.expect("complete");
    let counts = queue.counts().await.expect("counts");
    assert_eq!(
        (counts.synced, counts.pending, counts.syncing),
        (120, 130 + 200, 0),
        "every item of the batch completed"
    );
    let totals = queue.totals().await.expect("totals");
    assert_eq!(totals.synced, 120);
    let last = queue.item(ids[249]).await.expect("item").expect("exists");
    assert_eq!(last.sync_status, SyncStatus::Synced);
    let first = queue.item(ids[0]).await.expect("item").expect("exists");
    assert_eq!(
        (first.sync_status, first.error_class),
        (SyncStatus::Pending, Some(ErrorClass::Locked))
    );
}

async fn claims_are_leased_disjoint_and_complete_once(store: Store) {
    let queue = Queue::new(store.db().clone(), policy(30), Duration::from_secs(60)).named("host-a");
    let other_host = queue.clone().named("host-b");
    let ids = submit(&store, 5).await;
    assert_eq!(ids.len(), 5);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids in input order: {ids:?}");
    assert_eq!(queue.counts().await.expect("counts").pending, 5);

    // Two claims at once, from two hosts, share nothing.
    let (a, b) = tokio::join!(queue.claim(3, None), other_host.claim(3, None));
    let (a, b) = (a.expect("claim a"), b.expect("claim b"));
    let mut taken: Vec<i64> = a.items.iter().chain(&b.items).map(|i| i.queue_id).collect();
    taken.sort_unstable();
    taken.dedup();
    assert_eq!(taken.len(), 5, "every item claimed exactly once: {a:?} {b:?}");
    assert!(queue.claim(10, None).await.expect("claim").items.is_empty());
    let counts = queue.counts().await.expect("counts");
    assert_eq!((counts.pending, counts.syncing), (0, 5));

    let discovery_ids: Vec<i64> = a.items.iter().map(|i| i.discovery_id).collect();
    assert!(discovery_ids.iter().all(|d| ids.contains(d)));
    assert!(a.items.iter().all(|i| i.attempts == 0 && !i.backfill));

    let done: Vec<Delivered> = a
        .items
        .iter()
        .map(|i| delivered(i.queue_id, 1000 + i.queue_id))
        .collect();
    queue.complete(&a.token, &done, &[]).await.expect("complete");
    // Completing twice changes nothing: the token no longer holds them.
    queue.complete(&a.token, &done, &[]).await.expect("complete again");
    let counts = queue.counts().await.expect("counts");
    assert_eq!(
        (counts.synced, counts.syncing),
        (a.items.len() as i64, b.items.len() as i64)
    );

    let item = queue
        .item(a.items[0].queue_id)
        .await
        .expect("item")
        .expect("the item exists");
    assert_eq!(item.sync_status, SyncStatus::Synced);
    assert_eq!(item.sync_attempts, 1);
    assert_eq!(item.haven_discovery_id, Some(1000 + a.items[0].queue_id));
    assert_eq!(item.error_class, None);
    assert_eq!(
        item.claimed_by.as_deref(),
        Some("host-a"),
        "who claimed it stays recorded"
    );
    let by_b = queue.item(b.items[0].queue_id).await.expect("item").expect("exists");
    assert_eq!(by_b.claimed_by.as_deref(), Some("host-b"));
    let metadata: serde_json::Value = serde_json::from_str(item.metadata.as_deref().expect("metadata")).expect("json");
    assert_eq!(metadata["plugin"]["version"], "1.0.0");
    // Times as keeper.db gives them: UTC text, seconds here, milliseconds
    // where the queue compares.
    let created = item.created_at.expect("created_at");
    assert_eq!(created.len(), "2026-01-01 00:00:00".len(), "{created}");
    assert!(crate::api::timestamp::parse(&created).is_some(), "{created}");
    let attempted = item.last_sync_attempt.expect("last_sync_attempt");
    assert!(crate::api::timestamp::parse(&attempted).is_some(), "{attempted}");
    assert!(attempted.contains('.'), "milliseconds: {attempted}");

    let totals = queue.totals().await.expect("totals");
    assert_eq!(totals.synced, a.items.len() as i64);
    let observed: i64 = totals.latency_buckets.iter().map(|(_, n)| n).sum();
    assert_eq!(observed, a.items.len() as i64, "{:?}", totals.latency_buckets);
    assert_eq!(
        queue.queue_id_of(a.items[0].discovery_id).await.expect("queue id"),
        Some(a.items[0].queue_id)
    );
    assert!(queue.item(999_999).await.expect("item").is_none());
}

async fn an_expired_lease_is_taken_over_and_the_stale_token_changes_nothing(store: Store) {
    let expired = Queue::new(store.db().clone(), policy(30), Duration::ZERO);
    submit(&store, 2).await;
    let first = expired.claim(10, None).await.expect("first claim");
    assert_eq!(first.items.len(), 2);
    // A lease of zero has lapsed at once: the next claim takes the items over.
    let second = expired.claim(10, None).await.expect("second claim");
    assert_eq!(second.items.len(), 2, "expired leases are taken over");
    assert_ne!(first.token, second.token);
    let stale: Vec<Delivered> = first.items.iter().map(|i| delivered(i.queue_id, 1)).collect();
    expired
        .complete(&first.token, &stale, &[])
        .await
        .expect("stale complete");
    assert_eq!(expired.renew(&first.token).await.expect("renew"), 0);
    assert_eq!(expired.release(&first.token).await.expect("release"), 0);
    assert_eq!(
        expired.counts().await.expect("counts").synced,
        0,
        "the stale token changed nothing"
    );
    // The holder may give them back.
    assert_eq!(expired.release(&second.token).await.expect("release"), 2);
    assert_eq!(expired.counts().await.expect("counts").pending, 2);

    // A pass tries each item at most once: an item attempted since the
    // pass began waits for the next pass, even with no retry delay.
    let queue = Queue::new(store.db().clone(), policy(0), Duration::from_secs(60));
    let mut last_attempt = String::new();
    for item in &second.items {
        let item = queue.item(item.queue_id).await.expect("item").expect("exists");
        last_attempt = last_attempt.max(item.last_sync_attempt.expect("attempted"));
    }
    // keeper.db's clock has milliseconds: a pass begins after the last attempt.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let pass_started = loop {
        let now = queue.now().await.expect("now");
        if now > last_attempt {
            break now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the database clock stands still at {now}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let claim = queue.claim(1, None).await.expect("claim");
    let tried = claim.items[0].queue_id;
    queue
        .complete(&claim.token, &[], &[failed(&claim.items[0], ErrorClass::Locked)])
        .await
        .expect("fail with no delay");
    let same_pass = queue
        .claim(10, Some(&pass_started))
        .await
        .expect("claim in the same pass");
    let ids: Vec<i64> = same_pass.items.iter().map(|i| i.queue_id).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_ne!(ids[0], tried, "the item tried in this pass is left for the next");
    queue.release(&same_pass.token).await.expect("release");
    let next_pass = queue.claim(10, None).await.expect("next pass");
    assert_eq!(next_pass.items.len(), 2);
}

async fn failures_back_off_give_up_and_are_counted_by_class(store: Store) {
    let queue = Queue::new(store.db().clone(), policy(30), Duration::from_secs(60));
    submit(&store, 3).await;
    let claim = queue.claim(10, None).await.expect("claim");
    let [a, b, c] = &claim.items[..] else {
        panic!("three items: {claim:?}")
    };
    queue
        .complete(
            &claim.token,
            &[delivered(c.queue_id, 7)],
            &[failed(a, ErrorClass::Locked), failed(b, ErrorClass::Mapping)],
        )
        .await
        .expect("complete");
    let waiting_item = queue.item(a.queue_id).await.expect("item").expect("exists");
    assert_eq!(waiting_item.sync_status, SyncStatus::Pending);
    assert_eq!(waiting_item.error_class, Some(ErrorClass::Locked));
    assert_eq!(waiting_item.sync_error.as_deref(), Some("locked went wrong"));
    assert!(waiting_item.next_retry_after.is_some());
    let gave_up = queue.item(b.queue_id).await.expect("item").expect("exists");
    assert_eq!(
        gave_up.sync_status,
        SyncStatus::MaxRetriesExceeded,
        "mapping is permanent"
    );

    // In backoff: not claimed, shown as waiting.
    assert!(queue.claim(10, None).await.expect("claim").items.is_empty());
    let waiting = queue.waiting().await.expect("waiting");
    assert_eq!(waiting.count, 1);
    assert_eq!(waiting.last_error_classes, vec![(Some(ErrorClass::Locked), 1)]);
    assert!(waiting.next_retry_after.is_some());

    let totals = queue.totals().await.expect("totals");
    assert_eq!(
        totals.failures_by_class,
        vec![(ErrorClass::Locked, 1), (ErrorClass::Mapping, 1)]
    );
    assert_eq!(totals.failed_by_class, vec![(Some(ErrorClass::Mapping), 1)]);
    let statistics = queue.statistics().await.expect("statistics");
    assert_eq!(
        statistics.errors,
        vec![
            ClassCount {
                sync_status: SyncStatus::MaxRetriesExceeded,
                error_class: Some(ErrorClass::Mapping),
                count: 1
            },
            ClassCount {
                sync_status: SyncStatus::Pending,
                error_class: Some(ErrorClass::Locked),
                count: 1
            },
        ]
    );
    assert_eq!(statistics.attempts, vec![(1, 2)]);
    assert_eq!(statistics.synced_last_day, 1);
    assert_eq!(statistics.latency_last_day.count, 1);

    let troubles = queue.troubles(10).await.expect("troubles");
    assert_eq!(troubles.total, 2);
    let listed: Vec<(i64, bool)> = troubles.items.iter().map(|t| (t.queue_id, t.failed)).collect();
    assert_eq!(
        listed,
        vec![(b.queue_id, true), (a.queue_id, false)],
        "failed first, then waiting"
    );
    assert_eq!(
        troubles.classes,
        vec![(ErrorClass::Locked, 1), (ErrorClass::Mapping, 1)]
    );

    let failed_items = queue.failed(10).await.expect("failed");
    assert_eq!(failed_items.len(), 1);
    assert_eq!(failed_items[0].queue_id, b.queue_id);
    assert!(
        failed_items[0]
            .system_name
            .as_deref()
            .is_some_and(|s| s.starts_with("System"))
    );

    // Fixing the cause: retry by class makes just those due.
    assert_eq!(queue.retry_class(ErrorClass::Locked).await.expect("retry class"), 1);
    let again = queue.claim(10, None).await.expect("claim");
    assert_eq!(
        again.items.iter().map(|i| i.queue_id).collect::<Vec<_>>(),
        vec![a.queue_id]
    );
    assert_eq!(again.items[0].attempts, 0, "a manual retry starts the count afresh");
    // The attempts run out (no delay between them here).
    let zero = Queue::new(store.db().clone(), policy(0), Duration::from_secs(60));
    let mut claim = again;
    for attempt in 1..=3 {
        let item = claim
            .items
            .first()
            .unwrap_or_else(|| panic!("claimable before failure {attempt}"))
            .clone();
        zero.complete(&claim.token, &[], &[failed(&item, ErrorClass::Unavailable)])
            .await
            .expect("fail");
        claim = zero.claim(10, None).await.expect("claim");
    }
    assert!(claim.items.is_empty(), "no attempts left after 3 failures: {claim:?}");
    let out = queue.item(a.queue_id).await.expect("item").expect("exists");
    assert_eq!(out.sync_status, SyncStatus::MaxRetriesExceeded, "{out:?}");
    assert_eq!(out.sync_attempts, 3);
    assert_eq!(queue.retry_all_failed().await.expect("retry all"), 2);
    assert_eq!(queue.counts().await.expect("counts").pending, 2);
}

async fn manual_retries_and_their_refusals(store: Store) {
    let queue = Queue::new(store.db().clone(), policy(30), Duration::from_secs(60));
    submit(&store, 2).await;
    let claim = queue.claim(10, None).await.expect("claim");
    let (a, b) = (&claim.items[0], &claim.items[1]);
    assert!(matches!(
        queue.retry(a.queue_id).await,
        Err(RetryRefused::Refused(RetryError::InProgress(id))) if id == a.queue_id
    ));
    queue
        .complete(
            &claim.token,
            &[delivered(a.queue_id, 1)],
            &[failed(b, ErrorClass::Mapping)],
        )
        .await
        .expect("complete");
    assert!(matches!(
        queue.retry(a.queue_id).await,
        Err(RetryRefused::Refused(RetryError::AlreadySynced(_)))
    ));
    assert!(matches!(
        queue.retry(424_242).await,
        Err(RetryRefused::Refused(RetryError::NotFound(424_242)))
    ));
    queue.retry(b.queue_id).await.expect("retry the failed item");
    let item = queue.item(b.queue_id).await.expect("item").expect("exists");
    assert_eq!(
        (item.sync_status, item.sync_attempts, item.error_class),
        (SyncStatus::Pending, 0, None)
    );
    // A new plugin heals mapping failures.
    let claim = queue.claim(10, None).await.expect("claim");
    queue
        .complete(&claim.token, &[], &[failed(&claim.items[0], ErrorClass::Mapping)])
        .await
        .expect("fail");
    assert_eq!(queue.requeue_mapping_failures().await.expect("heal"), 1);
}

async fn remote_acknowledgements_and_failures(store: Store) {
    let queue = Queue::new(store.db().clone(), policy(30), Duration::from_secs(60));
    submit(&store, 4).await;
    let page = queue.pending_after(0, 3).await.expect("page");
    assert_eq!(page.len(), 3);
    let rest = queue.pending_after(page[2].queue_id, 3).await.expect("next page");
    assert_eq!(rest.len(), 1);
    let (a, b, c, d) = (page[0].queue_id, page[1].queue_id, page[2].queue_id, rest[0].queue_id);

    let acks = [
        Ack {
            queue_id: a,
            haven_discovery_id: 50,
            keeper_db_replaced: false,
        },
        Ack {
            queue_id: b,
            haven_discovery_id: 51,
            keeper_db_replaced: true,
        },
        Ack {
            queue_id: 9_999,
            haven_discovery_id: 52,
            keeper_db_replaced: false,
        },
    ];
    let outcome = queue.acknowledge(&acks, None).await.expect("acknowledge");
    assert_eq!(outcome.acknowledged, vec![a, b]);
    assert_eq!(outcome.unknown, vec![9_999]);
    let again = queue.acknowledge(&acks[..1], None).await.expect("acknowledge again");
    assert_eq!(again.already_synced, vec![a]);
    assert_eq!(queue.totals().await.expect("totals").keeper_db_replaced, 1);
    let item = queue.item(b).await.expect("item").expect("exists");
    let metadata: serde_json::Value = serde_json::from_str(item.metadata.as_deref().expect("metadata")).expect("json");
    assert_eq!(metadata["pulled"], true);
    assert_eq!(metadata["keeper_db_replaced"], true);

    let failures = [
        RemoteFailure {
            queue_id: c,
            class: ErrorClass::Schema,
            message: "no such column".into(),
        },
        RemoteFailure {
            queue_id: d,
            class: ErrorClass::Mapping,
            message: "refused".into(),
        },
        RemoteFailure {
            queue_id: a,
            class: ErrorClass::Schema,
            message: "late".into(),
        },
        RemoteFailure {
            queue_id: 8_888,
            class: ErrorClass::Schema,
            message: "who".into(),
        },
    ];
    let outcome = queue.fail_remote(&failures).await.expect("fail remote");
    assert_eq!(outcome.retrying, vec![c]);
    assert_eq!(outcome.gave_up, vec![d]);
    assert_eq!(outcome.not_pending, vec![a]);
    assert_eq!(outcome.unknown, vec![8_888]);
    let item = queue.item(c).await.expect("item").expect("exists");
    assert_eq!((item.sync_attempts, item.error_class), (1, Some(ErrorClass::Schema)));
    assert!(item.last_sync_attempt.is_some());
    assert!(
        queue.pending_after(0, 10).await.expect("page").is_empty(),
        "c waits out its backoff"
    );
}

async fn intake_keys_store_a_report_once(store: Store) {
    let queue = Queue::new(store.db().clone(), policy(30), Duration::from_secs(60));
    let key = IntakeKey::http("abc-123");
    let first = store.submit_once(&key, "hash-1", &report(1), 3).await.expect("first");
    assert!(!first.repeated);
    let again = store.submit_once(&key, "hash-1", &report(1), 3).await.expect("again");
    assert_eq!(
        (again.discovery_id, again.queue_id, again.repeated),
        (first.discovery_id, first.queue_id, true)
    );
    match store.submit_once(&key, "hash-2", &report(2), 3).await {
        Err(IntakeError::KeyReused { key, first_used }) => {
            assert_eq!(key, "abc-123");
            assert!(crate::api::timestamp::parse(&first_used).is_some(), "{first_used}");
        }
        other => panic!("a reused key with another report must be refused: {other:?}"),
    }
    assert_eq!(queue.counts().await.expect("counts").pending, 1, "stored once");
    let answer = store.intake_answer(&key).await.expect("answer").expect("known key");
    assert_eq!(answer.queue_id, first.queue_id);
    assert_eq!(
        store.intake_answer(&IntakeKey::http("other")).await.expect("answer"),
        None
    );
}

async fn discovery_rows_reach_the_plugin_alike(store: Store) {
    let ids = submit(&store, 1).await;
    let mut rows = store.discoveries(&ids).await.expect("rows");
    let row = rows.remove(&ids[0]).expect("the row").expect("readable");
    let names: Vec<&str> = row.0.iter().map(|(n, _)| &**n).collect();
    assert_eq!(
        names,
        [
            "id",
            "user_id",
            "username",
            "guild_id",
            "discovery_type",
            "location",
            "time_period",
            "condition",
            "description",
            "significance",
            "evidence_url",
            "related_discoveries",
            "coordinates",
            "planet_name",
            "galaxy_name",
            "submission_timestamp",
            "analysis_status",
            "pattern_matches",
            "mystery_tier",
            "tags",
            "metadata",
            "system_name",
        ],
        "keeper.db's columns, in its order"
    );
    assert_eq!(row.integer("id"), Some(ids[0]));
    assert_eq!(row.text("discovery_type"), Some("🦴"));
    assert_eq!(row.text("system_name"), Some("System 0"));
    let tags: serde_json::Value = serde_json::from_str(row.text("tags").expect("tags")).expect("tags are JSON");
    assert_eq!(tags, json!(["a", "b"]));
    assert_eq!(row.integer("pattern_matches"), Some(0));
    assert_eq!(row.get("guild_id"), Some(&crate::row::Value::Null));
    let stamp = row.text("submission_timestamp").expect("submission_timestamp");
    assert!(crate::api::timestamp::parse(stamp).is_some(), "{stamp}");
}

async fn cleanup_and_last_synced(store: Store) {
    let queue = Queue::new(store.db().clone(), policy(30), Duration::from_secs(60));
    submit(&store, 2).await;
    let claim = queue.claim(10, None).await.expect("claim");
    let done: Vec<Delivered> = claim.items.iter().map(|i| delivered(i.queue_id, 1)).collect();
    queue.complete(&claim.token, &done, &[]).await.expect("complete");
    let last = queue.last_synced(1).await.expect("last synced");
    assert_eq!(last.len(), 1);
    assert_eq!(queue.cleanup(1).await.expect("cleanup"), 0, "synced today: kept");
    assert_eq!(queue.counts().await.expect("counts").synced, 2);
    assert_eq!(
        queue.backfill().await.expect("backfill"),
        0,
        "every discovery has its row"
    );
}

async fn the_store_is_migrated_once_and_reopened_read_only(store: Store) {
    let source_id = store.source_id().to_owned();
    assert_eq!(source_id.len(), 32, "{source_id}");
    assert_eq!(store.plugin_cache_key().len(), 32);
    assert_eq!(store.probe().await, crate::store::Probe::Ok);
    let reopened = match store.db() {
        crate::db::Db::Sqlite(_) => Store::open(store.path(), Access::Read).await,
        // The test server's URL has no password: the shown URL opens it.
        crate::db::Db::Postgres(_) => Store::open_postgres(&store.path().to_string_lossy(), Access::Read).await,
    }
    .expect("reopen read-only");
    assert_eq!(reopened.source_id(), source_id, "the same store");
    assert_eq!(reopened.plugin_cache_key(), store.plugin_cache_key());
}
