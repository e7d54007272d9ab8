//! The reports the pipeline and mapping benches submit: the four kinds of
//! report of DISCOVERY_TYPES.md in turn, and three kinds of place (a moon
//! the sample VH-Database has, a planet it lacks, which warns, and a space
//! station).

use keeper::report::Report;

const TYPES: [(&str, &str); 4] = [
    ("🦴", "species_type"),
    ("💎", "resource_type"),
    ("🚀", "ship_class"),
    ("📖", "story_type"),
];

/// Report `i`.
pub fn report(i: usize) -> Report {
    let (emoji, field) = TYPES[i % TYPES.len()];
    let location = match i % 3 {
        0 => "moon:Getre Beta",
        1 => "planet:Unknown World",
        _ => "space:station:Anchor",
    };
    let record = serde_json::json!({
        "discovery_type": emoji,
        "system_name": "Ixiezh HV",
        "location": location,
        "description": format!("Benchmark report {i}: a long enough description to look like a real one."),
        "username": format!("Explorer#{:04}", i % 10_000),
        "user_id": format!("{}", 100_000_000_000 + i),
        "tags": ["bench", "sync"],
        field: "Vertebrate",
    });
    Report::from_json(&record).unwrap_or_else(|e| panic!("bench record {i} is invalid: {e}"))
}
