//! `GET /metrics`: the Prometheus text exposition format, rendered by hand
//! (a dozen series do not need a metrics library and its global registry).
//!
//! The queue figures come from the store (trigger-maintained counters, see
//! `queue::counter_schema`), so they are right after a restart and agree
//! between several processes sharing one store. When the store cannot be
//! read, a scrape still answers with the health series (status 2, the
//! `keeper_db_unreadable` problem): that is when an alert needs them most.

use std::fmt::Write as _;

use time::OffsetDateTime;

use super::health::Assessment;
use super::model::{HealthState, ProblemKind};
use crate::bot::GatewayState;
use crate::queue::{ErrorClass, QueueCounts, QueueTotals};

/// What one scrape shows.
pub struct Snapshot {
    /// What `/health` would answer now.
    pub health: Assessment,
    /// The figures read from the store; `None` when it cannot be read.
    pub store: Option<StoreFigures>,
    pub worker_running: bool,
    pub last_sync: Option<OffsetDateTime>,
    pub bot_gateway: GatewayState,
}

/// The part of a scrape read from the store.
pub struct StoreFigures {
    pub counts: QueueCounts,
    pub totals: QueueTotals,
    /// Name, version and hash of the active plugin.
    pub active_plugin: Option<(String, String, String)>,
}

/// A label value with `\`, `"` and line breaks escaped, as the format requires.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

pub fn render(s: &Snapshot) -> String {
    let mut out = String::with_capacity(2048);
    if let Some(store) = &s.store {
        render_store(&mut out, store);
    }
    header(
        &mut out,
        "keeper_sync_worker_running",
        "gauge",
        "1 when this process's sync worker runs.",
    );
    let _ = writeln!(out, "keeper_sync_worker_running {}", u8::from(s.worker_running));

    header(
        &mut out,
        "keeper_bot_online",
        "gauge",
        "1 when this process's Discord bot has a live gateway session.",
    );
    let _ = writeln!(
        out,
        "keeper_bot_online {}",
        u8::from(s.bot_gateway == GatewayState::Connected)
    );
    header(
        &mut out,
        "keeper_bot_gateway_state",
        "gauge",
        "The Discord gateway session's state: 1 for the current one.",
    );
    for state in GatewayState::ALL {
        let _ = writeln!(
            out,
            "keeper_bot_gateway_state{{state=\"{}\"}} {}",
            state.as_str(),
            u8::from(s.bot_gateway == state)
        );
    }
    if let Some(t) = s.last_sync {
        header(
            &mut out,
            "keeper_sync_last_batch_timestamp_seconds",
            "gauge",
            "When the worker last finished a batch (Unix time).",
        );
        let _ = writeln!(out, "keeper_sync_last_batch_timestamp_seconds {}", t.unix_timestamp());
    }
    render_health(&mut out, &s.health);
    out
}

/// The queue, totals and plugin series.
fn render_store(out: &mut String, s: &StoreFigures) {
    header(
        out,
        "keeper_sync_queue_items",
        "gauge",
        "Items in the sync queue by state.",
    );
    for (state, n) in [
        ("pending", s.counts.pending),
        ("syncing", s.counts.syncing),
        ("synced", s.counts.synced),
        ("max_retries_exceeded", s.counts.failed),
    ] {
        let _ = writeln!(out, "keeper_sync_queue_items{{state=\"{state}\"}} {n}");
    }

    header(
        out,
        "keeper_sync_synced_total",
        "counter",
        "Items synced to VH-Database (not reduced by cleanup).",
    );
    let _ = writeln!(out, "keeper_sync_synced_total {}", s.totals.synced);

    header(
        out,
        "keeper_sync_keeper_db_replaced_total",
        "counter",
        "Reports delivered as new although VH-Database's ledger held another report under the same discovery id: keeper.db restored or replaced.",
    );
    let _ = writeln!(
        out,
        "keeper_sync_keeper_db_replaced_total {}",
        s.totals.keeper_db_replaced
    );

    header(
        out,
        "keeper_sync_failed_attempts_total",
        "counter",
        "Failed sync attempts by error class.",
    );
    for (class, n) in &s.totals.failures_by_class {
        let _ = writeln!(
            out,
            "keeper_sync_failed_attempts_total{{error_class=\"{}\"}} {n}",
            class.as_str()
        );
    }

    header(
        out,
        "keeper_sync_failed_items",
        "gauge",
        "Items that exhausted their attempts (max_retries_exceeded), by error class.",
    );
    for (class, n) in &s.totals.failed_by_class {
        let _ = writeln!(
            out,
            "keeper_sync_failed_items{{error_class=\"{}\"}} {n}",
            ErrorClass::label(*class)
        );
    }

    header(
        out,
        "keeper_sync_latency_seconds",
        "histogram",
        "Time from submission to synced.",
    );
    let mut cumulative = 0;
    for (le, n) in &s.totals.latency_buckets {
        cumulative += n;
        let le = le.map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
        let _ = writeln!(out, "keeper_sync_latency_seconds_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "keeper_sync_latency_seconds_sum {}", s.totals.latency_sum_seconds);
    let _ = writeln!(out, "keeper_sync_latency_seconds_count {cumulative}");

    header(
        out,
        "keeper_sync_plugin_info",
        "gauge",
        "The active mapping plugin (value always 1).",
    );
    if let Some((name, version, hash)) = &s.active_plugin {
        let _ = writeln!(
            out,
            "keeper_sync_plugin_info{{name=\"{}\",version=\"{}\",hash=\"{}\"}} 1",
            label(name),
            label(version),
            label(hash)
        );
    }
}

/// The health series: what `/health` says, as gauges to alert on.
fn render_health(out: &mut String, health: &Assessment) {
    header(
        out,
        "keeper_health_status",
        "gauge",
        "What /health says: 0 healthy, 1 degraded, 2 unhealthy.",
    );
    let status = match health.status {
        HealthState::Healthy => 0,
        HealthState::Degraded => 1,
        HealthState::Unhealthy => 2,
    };
    let _ = writeln!(out, "keeper_health_status {status}");
    header(
        out,
        "keeper_health_problem",
        "gauge",
        "1 for each problem /health lists now, by kind.",
    );
    for kind in ProblemKind::ALL {
        let _ = writeln!(
            out,
            "keeper_health_problem{{problem=\"{}\"}} {}",
            kind.as_str(),
            u8::from(health.has(kind))
        );
    }
    header(
        out,
        "keeper_sync_failed_passes",
        "gauge",
        "Sync passes in a row that failed (0 once one gets through).",
    );
    let _ = writeln!(out, "keeper_sync_failed_passes {}", health.failed_passes);
    if let Some(since) = health.vh_unreachable_since {
        header(
            out,
            "keeper_vh_database_unreachable_since_timestamp_seconds",
            "gauge",
            "Since when the worker cannot use VH-Database (Unix time); absent while it can.",
        );
        let _ = writeln!(
            out,
            "keeper_vh_database_unreachable_since_timestamp_seconds {}",
            since.unix_timestamp()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_labels_are_escaped() {
        let text = render(&Snapshot {
            store: Some(StoreFigures {
                counts: QueueCounts {
                    pending: 2,
                    syncing: 0,
                    synced: 5,
                    failed: 1,
                },
                totals: QueueTotals {
                    synced: 5,
                    failures_by_class: vec![(ErrorClass::Unavailable, 3)],
                    failed_by_class: vec![(Some(ErrorClass::Mapping), 1)],
                    latency_buckets: vec![(Some(1), 2), (Some(5), 3), (None, 0)],
                    latency_sum_seconds: 11,
                    keeper_db_replaced: 2,
                },
                active_plugin: Some(("default \"mapper\"".into(), "1.0.0".into(), "ab".into())),
            }),
            worker_running: true,
            last_sync: None,
            bot_gateway: GatewayState::Resuming,
            health: Assessment {
                status: HealthState::Degraded,
                problems: vec![super::super::model::HealthProblem {
                    problem: ProblemKind::VhDatabaseUnreachable,
                    message: "gone".into(),
                    since: None.into(),
                }],
                keeper_db_readable: true,
                failed_passes: 3,
                vh_unreachable_since: None,
            },
        });
        assert!(text.contains("keeper_health_status 1\n"));
        assert!(text.contains("keeper_health_problem{problem=\"vh_database_unreachable\"} 1\n"));
        assert!(text.contains("keeper_health_problem{problem=\"keeper_db_not_writable\"} 0\n"));
        assert!(text.contains("keeper_sync_failed_passes 3\n"));
        assert!(text.contains("keeper_sync_queue_items{state=\"max_retries_exceeded\"} 1\n"));
        assert!(text.contains("keeper_sync_latency_seconds_bucket{le=\"5\"} 5\n"));
        assert!(text.contains("keeper_sync_latency_seconds_bucket{le=\"+Inf\"} 5\n"));
        assert!(text.contains("keeper_sync_latency_seconds_count 5\n"));
        assert!(text.contains("name=\"default \\\"mapper\\\"\""));
        assert!(text.contains("keeper_sync_failed_attempts_total{error_class=\"unavailable\"} 3\n"));
        assert!(text.contains("keeper_bot_online 0\n"));
        assert!(text.contains("keeper_bot_gateway_state{state=\"resuming\"} 1\n"));
        assert!(text.contains("keeper_bot_gateway_state{state=\"connected\"} 0\n"));
        assert!(text.contains("keeper_sync_keeper_db_replaced_total 2\n"));
    }

    #[test]
    fn without_the_store_a_scrape_still_has_the_health_series() {
        let text = render(&Snapshot {
            store: None,
            worker_running: true,
            last_sync: None,
            bot_gateway: GatewayState::Connected,
            health: Assessment {
                status: HealthState::Unhealthy,
                problems: vec![super::super::model::HealthProblem {
                    problem: ProblemKind::KeeperDbUnreadable,
                    message: "gone".into(),
                    since: None.into(),
                }],
                keeper_db_readable: false,
                failed_passes: 0,
                vh_unreachable_since: None,
            },
        });
        assert!(text.contains("keeper_health_status 2\n"), "{text}");
        assert!(
            text.contains("keeper_health_problem{problem=\"keeper_db_unreadable\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("keeper_sync_worker_running 1\n"), "{text}");
        assert!(!text.contains("keeper_sync_queue_items"), "{text}");
    }
}
