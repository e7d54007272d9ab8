//! The examples the OpenAPI document shows for each body: typed values of
//! the API's own types, so an example cannot drift from the shape it shows
//! (Swagger UI's "Try it out" starts from them; generated clients document
//! them).

use poem::http::StatusCode;
use poem_openapi::types::Example;
use serde_json::json;
use time::OffsetDateTime;
use time::macros::datetime;

use super::error::ErrorBody;
use super::model::*;
use crate::bot::GatewayState;
use crate::config::HavenSource;
use crate::plugins::canary::CanaryState;
use crate::queue::{ErrorClass, QueueCounts, SyncStatus};
use crate::registry::{Activation, PluginStatus};

const SUBMITTED: OffsetDateTime = datetime!(2026-11-26 14:00:00 UTC);
const SYNCED: OffsetDateTime = datetime!(2026-11-26 14:00:02 UTC);
const NOW: OffsetDateTime = datetime!(2026-11-26 15:00:00 UTC);
const HASH: &str = "458ea82945ee8228a37416ab95712f3fed7ee54383de48ac6fbdddc33ad4496b";

fn counts() -> QueueCounts {
    QueueCounts {
        pending: 3,
        syncing: 0,
        synced: 1204,
        failed: 1,
    }
}

fn provenance() -> Provenance {
    Provenance {
        name: "keeper-default-mapper".into(),
        version: "1.0.0".into(),
        hash: HASH.into(),
    }
}

/// A keeper.db discovery row, as export and item detail show it (some of its columns).
fn discovery_row() -> serde_json::Value {
    json!({
        "id": 42,
        "user_id": "123456789",
        "username": "Explorer#1234",
        "discovery_type": "🦴",
        "system_name": "Oculi",
        "location": "planet:Erren",
        "description": "Ribcage in a cave",
        "submission_timestamp": "2026-11-26 14:00:00"
    })
}

impl Example for ErrorBody {
    fn example() -> ErrorBody {
        ErrorBody::new(StatusCode::NOT_FOUND, "queue item 999 does not exist")
    }
}

impl Example for Health {
    fn example() -> Health {
        Health {
            status: HealthState::Healthy,
            bot_online: true,
            bot_gateway: GatewayState::Connected,
            sync_worker_running: true,
            timestamp: NOW,
            keeper_db_reachable: true,
            problems: Vec::new(),
            haven_db: Some(HavenDb {
                path: "/srv/Haven_mdev/data/VH-Database.db".into(),
                source: HavenSource::HavenDbPath,
            })
            .into(),
        }
    }
}

impl Example for SyncStatusReport {
    fn example() -> SyncStatusReport {
        SyncStatusReport::new(
            Some(WorkerReport {
                is_running: true,
                sync_interval: 30,
                uptime_seconds: 3600,
                last_sync_time: Some(SYNCED).into(),
            }),
            counts(),
        )
    }
}

impl Example for Statistics {
    fn example() -> Statistics {
        Statistics {
            status: OkStatus::Ok,
            generated_at: NOW,
            queue: counts(),
            totals: counts().into(),
            synced_ever: 1204,
            failed_attempts_by_class: [("locked".to_owned(), 2), ("schema".to_owned(), 1)].into(),
            keeper_db_restored_or_replaced: 0,
            errors: vec![ErrorClassCount {
                sync_status: SyncStatus::MaxRetriesExceeded,
                error_class: "schema".into(),
                count: 1,
            }],
            attempts: vec![
                AttemptsCount { attempts: 0, count: 3 },
                AttemptsCount { attempts: 10, count: 1 },
            ],
            oldest_pending: Some(OldestPending {
                queue_id: 1205,
                created_at: Some(SUBMITTED).into(),
                age_seconds: Some(3600).into(),
            })
            .into(),
            synced_last_hour: 12,
            synced_last_day: 80,
            latency_last_day: LatencyStats {
                count: 80,
                average_seconds: Some(1.8).into(),
                p50_seconds: Some(1.2).into(),
                p95_seconds: Some(4.0).into(),
                max_seconds: Some(31.0).into(),
            },
            synced_per_minute_last_hour: (0..60).map(|m| i64::from(m % 7 == 0)).collect(),
        }
    }
}

impl Example for FailureClasses {
    fn example() -> FailureClasses {
        let class = ErrorClass::Schema;
        FailureClasses {
            status: OkStatus::Ok,
            classes: vec![FailureClassView {
                error_class: class.as_str().into(),
                failed: 1,
                waiting: 2,
                permanent: class.is_permanent(),
                remedy: class.remedy().into(),
                oldest_queue_id: 7,
                oldest_created_at: Some(SUBMITTED).into(),
                latest_queue_id: 9,
                latest_error: Some("schema: VH-Database's discoveries has no column fossil_type".to_owned()).into(),
            }],
            total: 3,
        }
    }
}

impl Example for ItemPage {
    fn example() -> ItemPage {
        ItemPage {
            status: OkStatus::Ok,
            items: vec![ItemSummary {
                queue_id: 7,
                discovery_id: 42,
                sync_status: SyncStatus::Synced,
                sync_attempts: 1,
                error_class: None.into(),
                sync_error: None.into(),
                created_at: Some(SUBMITTED).into(),
                synced_at: Some(SYNCED).into(),
                haven_discovery_id: Some(5012).into(),
                claimed_by: Some("host-a".to_owned()).into(),
                system_name: Some("Oculi".to_owned()).into(),
                location: Some("planet:Erren".to_owned()).into(),
                discovery_type: Some("🦴".to_owned()).into(),
                username: Some("Explorer#1234".to_owned()).into(),
            }],
            count: 1,
            next_before: Some(7).into(),
        }
    }
}

impl Example for FailedList {
    fn example() -> FailedList {
        FailedList {
            status: OkStatus::Ok,
            failed_items: vec![FailedItemView {
                queue_id: 7,
                discovery_id: 42,
                sync_attempts: 10,
                sync_error: Some("schema: VH-Database's discoveries has no column fossil_type".to_owned()).into(),
                system_name: Some("Oculi".to_owned()).into(),
                location: Some("planet:Erren".to_owned()).into(),
                discovery_type: Some("🦴".to_owned()).into(),
                username: Some("Explorer#1234".to_owned()).into(),
            }],
            count: 1,
        }
    }
}

impl Example for Message {
    fn example() -> Message {
        Message {
            status: OkStatus::Ok,
            message: "Queue item 7 marked for retry".into(),
        }
    }
}

impl Example for RetriedAll {
    fn example() -> RetriedAll {
        RetriedAll {
            status: OkStatus::Ok,
            message: "1 item(s) that failed with class schema marked for retry".into(),
            retried: 1,
        }
    }
}

impl Example for ItemDetail {
    fn example() -> ItemDetail {
        ItemDetail {
            status: OkStatus::Ok,
            item: QueueItemView {
                queue_id: 7,
                discovery_id: 42,
                sync_status: SyncStatus::Synced,
                sync_attempts: 1,
                max_attempts: Some(10).into(),
                last_sync_attempt: Some(SYNCED).into(),
                next_retry_after: None.into(),
                sync_error: None.into(),
                error_class: None.into(),
                haven_discovery_id: Some(5012).into(),
                claimed_by: Some("host-a".to_owned()).into(),
                created_at: Some(SUBMITTED).into(),
                synced_at: Some(SYNCED).into(),
                provenance: Some(provenance()).into(),
                metadata: Some(json!({"plugin": {"name": "keeper-default-mapper", "version": "1.0.0", "hash": HASH}}))
                    .into(),
            },
            discovery: Some(discovery_row()).into(),
            discovery_error: None,
            haven_row: Some(json!({"id": 5012, "discovery_type": "🦴", "discovered_by": "Explorer#1234"})),
            haven_row_error: None,
        }
    }
}

impl Example for Created {
    fn example() -> Created {
        Created {
            status: OkStatus::Ok,
            discovery_id: 42,
            queue_id: 7,
            message: "Discovery 42 archived and queued".into(),
        }
    }
}

impl Example for Plugins {
    fn example() -> Plugins {
        Plugins {
            status: OkStatus::Ok,
            active: Some(default_plugin_entry()).into(),
            history: Vec::new(),
            rejected: Vec::new(),
            canary: None.into(),
        }
    }
}

impl Example for CanaryStarted {
    fn example() -> CanaryStarted {
        CanaryStarted {
            status: OkStatus::Ok,
            message: "my-mapper 1.1.0 runs as a canary on 10% of the items".into(),
            canary: CanaryEntry {
                name: "my-mapper".into(),
                version: "1.1.0".into(),
                hash: HASH.into(),
                percent: Some(10).into(),
                items: None.into(),
                state: CanaryState::Running,
                reason: None.into(),
                active_hash: HASH.into(),
                canary_items: 0,
                canary_failed: 0,
                active_items: 0,
                active_failed: 0,
                started_at: Some(SUBMITTED).into(),
                ended_at: None.into(),
                started_by: Some("bot-host-1".to_owned()).into(),
            },
        }
    }
}

fn default_plugin_entry() -> PluginEntry {
    PluginEntry {
        name: "keeper-default-mapper".into(),
        version: "1.0.0".into(),
        hash: HASH.into(),
        source: "built-in".into(),
        status: PluginStatus::Active,
        reason: None.into(),
        recorded_at: Some(SUBMITTED).into(),
        retired_at: None.into(),
        memory_mib: Some(32).into(),
        timeout_ms: Some(100).into(),
        activated_by: Some(Activation::StartUp).into(),
    }
}

impl Example for PluginActivated {
    fn example() -> PluginActivated {
        PluginActivated {
            status: OkStatus::Ok,
            message: "my-mapper 1.1.0 is active".into(),
            active: PluginEntry {
                name: "my-mapper".into(),
                version: "1.1.0".into(),
                source: "/srv/keeper/plugins/my-mapper.wasm".into(),
                ..default_plugin_entry()
            },
        }
    }
}

impl Example for PluginPreview {
    fn example() -> PluginPreview {
        let row = |by: &str| json!({ "discovered_by": by, "planet_id": 3, "discovery_type": "🦴" });
        PluginPreview {
            status: OkStatus::Ok,
            active: provenance(),
            candidate: Provenance {
                name: "my-mapper".into(),
                version: "1.1.0".into(),
                hash: "9f2c1e7a5b3d4c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6".into(),
            },
            notes: Vec::new(),
            compared: 1,
            changed: 1,
            items: vec![PreviewItem {
                queue_id: 7,
                discovery_id: 42,
                unreadable: None.into(),
                active_row: Some(row("Explorer#1234")).into(),
                active_error: None.into(),
                candidate_row: Some(row("EXPLORER#1234")).into(),
                candidate_error: None.into(),
                changes: vec![PreviewChange {
                    column: Some("discovered_by".to_owned()).into(),
                    description: "discovered_by: \"Explorer#1234\" → \"EXPLORER#1234\"".into(),
                }],
            }],
        }
    }
}

impl Example for ExportPage {
    fn example() -> ExportPage {
        ExportPage {
            status: OkStatus::Ok,
            source_id: "5d0c6f0e-8a1e-4c55-9a43-1f7b2a9d6c11".into(),
            items: vec![ExportedItem {
                queue_id: 7,
                discovery_id: 42,
                sync_attempts: 0,
                created_at: Some(SUBMITTED).into(),
                backfill: false,
                discovery: Some(discovery_row()).into(),
                discovery_error: None,
            }],
            count: 1,
            next_after: 7,
            has_more: false,
        }
    }
}

impl Example for AckRequest {
    fn example() -> AckRequest {
        AckRequest {
            items: vec![AckEntry {
                queue_id: 7,
                haven_discovery_id: 5012,
                keeper_db_replaced: None,
            }],
            plugin: Some(provenance()),
        }
    }
}

impl Example for AckResult {
    fn example() -> AckResult {
        AckResult {
            status: OkStatus::Ok,
            acknowledged: vec![7],
            already_synced: Vec::new(),
            in_progress: Vec::new(),
            unknown: Vec::new(),
        }
    }
}

impl Example for FailRequest {
    fn example() -> FailRequest {
        FailRequest {
            items: vec![FailEntry {
                queue_id: 8,
                class: ErrorClass::Schema,
                message: "VH-Database's discoveries has no column fossil_type".into(),
            }],
        }
    }
}

impl Example for FailResult {
    fn example() -> FailResult {
        FailResult {
            status: OkStatus::Ok,
            retrying: vec![8],
            gave_up: Vec::new(),
            not_pending: Vec::new(),
            unknown: Vec::new(),
        }
    }
}
