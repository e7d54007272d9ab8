//! Will a report land on the map? Said in the confirmation, so a reporter
//! whose system or place VH-Database does not know hears it at once (with
//! the closest names) instead of never.
//!
//! The report is archived either way: an unknown system is often a new one,
//! and the mapping keeps it without a map position.

use super::names;
use crate::report::{LocationKind, Report};
use crate::sink::Sink;

/// A warning for the confirmation, or `None` when the report will be placed
/// on the map (or VH-Database cannot be read here: nothing useful to say).
pub async fn check(sink: &Sink, report: &Report) -> Option<String> {
    let systems = match sink.system_names().await {
        Ok(systems) => systems,
        Err(error) => {
            tracing::debug!(%error, "no map check: VH-Database cannot be read");
            return None;
        }
    };
    let Some(system) = systems.iter().find(|s| names::maps_to(&report.system_name, s)) else {
        return Some(format!(
            "⚠️ The system \"{}\" is not on the map: your report will be archived without a map position.{}",
            report.system_name,
            did_you_mean(&names::closest(&systems, &report.system_name))
        ));
    };
    if report.location.kind == LocationKind::Space {
        return None;
    }
    let places = match sink.places_of(system).await {
        Ok(places) => places,
        Err(error) => {
            tracing::debug!(%error, "no map check of the place: VH-Database cannot be read");
            return None;
        }
    };
    // The mapping decides planet or moon from VH-Database, whatever the reporter said.
    let bare = |place: &str| place.split_once(':').map_or(place, |(_, name)| name).to_owned();
    let names_only: Vec<String> = places.iter().map(|p| bare(p)).collect();
    if names_only.iter().any(|n| names::maps_to(&report.location.name, n)) {
        return None;
    }
    let closest: Vec<&str> = names::closest(&names_only, &report.location.name)
        .into_iter()
        .filter_map(|name| places.iter().find(|p| bare(p) == name).map(String::as_str))
        .collect();
    Some(format!(
        "⚠️ {} has no planet or moon \"{}\" on the map: your report will be archived without a map position.{}",
        system,
        report.location.name,
        did_you_mean(&closest)
    ))
}

fn did_you_mean(names: &[&str]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(" Did you mean {}?", names.join(", "))
    }
}
