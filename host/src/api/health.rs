//! Whether Keeper sync can do its job, as `GET /health` and `/metrics` tell
//! it: not only "the process answers" but what stops reports from reaching
//! VH-Database, each problem named.
//!
//! - `unhealthy` (HTTP 503): keeper.db cannot be read at its path; nothing
//!   can be stored or synced.
//! - `degraded` (HTTP 200, so monitors that only read the status code keep
//!   working): something stops part of the job, listed in `problems`.
//! - `healthy`: no problem.

use std::sync::atomic::Ordering;

use super::ApiState;
use super::model::{HealthProblem, HealthState, ProblemKind};
use super::timestamp;
use crate::bot::GatewayState;
use crate::store::Probe;

/// What one look at the service found.
pub struct Assessment {
    pub status: HealthState,
    pub problems: Vec<HealthProblem>,
    pub keeper_db_readable: bool,
    /// Sync passes in a row that failed.
    pub failed_passes: u64,
    /// Since when VH-Database cannot be used, as the worker last saw it.
    pub vh_unreachable_since: Option<time::OffsetDateTime>,
}

impl Assessment {
    pub fn has(&self, kind: ProblemKind) -> bool {
        self.problems.iter().any(|p| p.problem == kind)
    }
}

fn problem(kind: ProblemKind, message: String, since: Option<time::OffsetDateTime>) -> HealthProblem {
    HealthProblem {
        problem: kind,
        message,
        since: since.map(timestamp::whole_seconds).into(),
    }
}

/// Looks at keeper.db (on a fresh connection), the worker and the bot.
pub async fn assess(state: &ApiState) -> Assessment {
    let mut problems = Vec::new();
    let probe = state.app.store.probe().await;
    let keeper_db_readable = !matches!(probe, Probe::Unreadable(_));
    match probe {
        Probe::Ok => {}
        Probe::Unreadable(why) => problems.push(problem(ProblemKind::KeeperDbUnreadable, why, None)),
        Probe::NotWritable(why) => problems.push(problem(
            ProblemKind::KeeperDbNotWritable,
            format!("{why}; new reports cannot be stored and synced items cannot be marked"),
            None,
        )),
    }
    let running = state.worker.running.load(Ordering::Relaxed);
    if state.worker_expected && !running {
        problems.push(problem(
            ProblemKind::SyncWorkerStopped,
            "the sync worker of this process is not running; nothing reaches VH-Database".into(),
            None,
        ));
    }
    let passes = state.worker.passes();
    let vh_unreachable_since = passes.vh_unreachable.as_ref().map(|(since, _)| *since);
    if let Some((since, why)) = &passes.vh_unreachable {
        problems.push(problem(
            ProblemKind::VhDatabaseUnreachable,
            format!(
                "VH-Database unreachable since {}: {why}",
                timestamp::whole_seconds(*since)
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            ),
            Some(*since),
        ));
    }
    if passes.failed_passes > 0 {
        problems.push(problem(
            ProblemKind::SyncPassesFailing,
            format!(
                "the last {} sync pass(es) failed; last error: {}",
                passes.failed_passes,
                passes.last_error.as_deref().unwrap_or("unknown")
            ),
            None,
        ));
    }
    let gateway = state.bot.state();
    if !matches!(gateway, GatewayState::Disabled | GatewayState::Connected) {
        problems.push(problem(
            ProblemKind::DiscordGatewayDown,
            format!(
                "DISCORD_TOKEN is set but the bot has no live Discord gateway session (it is {}); \
                 /discovery-report does not work (see the log)",
                gateway.as_str()
            ),
            None,
        ));
    }
    if let Some(not_followed) = state.plugins.as_ref().and_then(|plugins| plugins.not_followed()) {
        problems.push(problem(ProblemKind::PluginNotFollowed, not_followed.to_string(), None));
    }
    let status = if !keeper_db_readable {
        HealthState::Unhealthy
    } else if problems.is_empty() {
        HealthState::Healthy
    } else {
        HealthState::Degraded
    };
    Assessment {
        status,
        problems,
        keeper_db_readable,
        failed_passes: passes.failed_passes,
        vh_unreachable_since,
    }
}
