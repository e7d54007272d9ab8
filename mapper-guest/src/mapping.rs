//! MAPPING.md's column table: one keeper.db `discoveries` row to one
//! VH-Database `discoveries` row.

use crate::location::{self, SystemRef};
use crate::model::{Lookup, Mapped, MappingError, Value};
use crate::source::{JsonShape, Metadata, SourceRow};

/// The 40 type-specific columns (DISCOVERY_TYPES.md), in VH-Database's column
/// order. keeper.db keeps them in `metadata` under the same names.
pub const TYPE_SPECIFIC_COLUMNS: [&str; 40] = [
    "species_type",
    "size_scale",
    "preservation_quality",
    "estimated_age",
    "language_status",
    "completeness",
    "author_origin",
    "key_excerpt",
    "structure_type",
    "architectural_style",
    "structural_integrity",
    "purpose_function",
    "tech_category",
    "operational_status",
    "power_source",
    "reverse_engineering",
    "species_name",
    "behavioral_notes",
    "habitat_biome",
    "threat_level",
    "resource_type",
    "deposit_richness",
    "extraction_method",
    "economic_value",
    "ship_class",
    "hull_condition",
    "salvageable_tech",
    "pilot_status",
    "hazard_type",
    "severity_level",
    "duration_frequency",
    "protection_required",
    "update_name",
    "feature_category",
    "gameplay_impact",
    "first_impressions",
    "story_type",
    "lore_connections",
    "creative_elements",
    "collaborative_work",
];

/// Maps one row. Columns without a value are left out so that the database
/// applies its own defaults (`analysis_status` 'pending', counters 0).
///
/// Checks run in a fixed order (required columns, then JSON, then the rest)
/// so the same input always fails with the same error.
pub fn map_row(columns: &[(String, Value)], lookup: &dyn Lookup) -> Result<Mapped, MappingError> {
    let row = SourceRow::new(columns);
    let mut out = Output::default();
    let mut warnings = Vec::new();

    let discovery_type = row.required_text("discovery_type")?;
    let description = row.required_text("description")?;
    let metadata_json = row.optional_json("metadata", JsonShape::Object)?;
    let tags_json = row.optional_json("tags", JsonShape::Array)?;
    let metadata = Metadata::new(metadata_json.as_ref().map(|(_, parsed)| parsed));

    let discovery_name = metadata.text("discovery_name")?;
    let stated_location = location::stated(&row, &metadata)?;
    let mut type_specific = Vec::with_capacity(TYPE_SPECIFIC_COLUMNS.len());
    for column in TYPE_SPECIFIC_COLUMNS {
        type_specific.push((column, metadata.text(column)?));
    }
    let pattern_matches = row.optional_integer("pattern_matches")?;
    let mystery_tier = row.optional_integer("mystery_tier")?;

    // Every check that can fail has passed: only lookups (which warn) remain.
    let system_name = row.optional_text("system_name");
    let system_id = system_name.as_deref().and_then(|name| lookup.find_system(name));
    let system = match (&system_name, &system_id) {
        (Some(name), Some(id)) => SystemRef::Found { id, name },
        (Some(name), None) => {
            warnings.push(format!("system '{name}' not found in VH-Database"));
            SystemRef::NotFound { name }
        }
        (None, _) => {
            warnings.push("no system_name given; system_id left NULL".to_owned());
            SystemRef::Missing
        }
    };
    let location = location::resolve(stated_location, &system, lookup, &mut warnings);

    out.text("discovery_type", Some(discovery_type));
    out.text("discovery_name", discovery_name);
    out.text("system_id", system_id);
    out.integer("planet_id", location.planet_id);
    out.integer("moon_id", location.moon_id);
    out.text("location_type", Some(location.kind.as_str().to_owned()));
    out.text("location_name", location.name);
    out.text("description", Some(description));
    out.text("coordinates", row.optional_text("coordinates"));
    out.text("condition", row.optional_text("condition"));
    out.text("time_period", row.optional_text("time_period"));
    out.text("significance", row.optional_text("significance"));
    // Both: `photo_url` for older readers, `evidence_urls` is the one the
    // Control Room reads.
    let evidence_url = row.optional_text("evidence_url");
    out.text("photo_url", evidence_url.clone());
    out.text("evidence_urls", evidence_url);
    out.text("discovered_by", row.optional_text("username"));
    out.text("discord_user_id", row.optional_text("user_id"));
    out.text("discord_guild_id", row.optional_text("guild_id"));
    // The time of the report, not of the sync.
    out.value("submission_timestamp", row.optional_as_stored("submission_timestamp"));
    out.integer("pattern_matches", pattern_matches);
    out.integer("mystery_tier", mystery_tier);
    out.text("analysis_status", row.optional_text("analysis_status"));
    out.text("tags", tags_json.map(|(text, _)| text));
    out.text("metadata", metadata_json.map(|(text, _)| text));
    for (column, value) in type_specific {
        out.text(column, value);
    }

    Ok(Mapped {
        row: out.columns,
        warnings,
    })
}

/// The VH row under construction; absent values are simply not pushed.
#[derive(Default)]
struct Output {
    columns: Vec<(&'static str, Value)>,
}

impl Output {
    fn value(&mut self, column: &'static str, value: Option<Value>) {
        if let Some(value) = value {
            self.columns.push((column, value));
        }
    }

    fn text(&mut self, column: &'static str, value: Option<String>) {
        self.value(column, value.map(Value::Text));
    }

    fn integer(&mut self, column: &'static str, value: Option<i64>) {
        self.value(column, value.map(Value::Integer));
    }
}
