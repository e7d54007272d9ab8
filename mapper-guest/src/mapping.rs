//! MAPPING.md's column table: one keeper.db `discoveries` row to one
//! VH-Database `discoveries` row.

use crate::location::{self, SystemRef};
use crate::model::{Lookup, Mapped, MappingError, Value};
use crate::source::{InputPositions, Metadata, SourceRow};

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

/// The columns every discovery may have, in VH-Database's column order
/// (`id` aside, which the database assigns).
const COMMON_COLUMNS: [&str; 23] = [
    "discovery_type",
    "discovery_name",
    "system_id",
    "planet_id",
    "moon_id",
    "location_type",
    "location_name",
    "description",
    "coordinates",
    "condition",
    "time_period",
    "significance",
    "photo_url",
    "evidence_urls",
    "discovered_by",
    "discord_user_id",
    "discord_guild_id",
    "submission_timestamp",
    "pattern_matches",
    "mystery_tier",
    "analysis_status",
    "tags",
    "metadata",
];

/// Every VH-Database column this mapping can write, each once: the
/// plugin's `output-columns`, which a [`Column`] indexes.
pub const OUTPUT_COLUMNS: [&str; COMMON_COLUMNS.len() + TYPE_SPECIFIC_COLUMNS.len()] = {
    let mut all = [""; COMMON_COLUMNS.len() + TYPE_SPECIFIC_COLUMNS.len()];
    let mut i = 0;
    while i < all.len() {
        all[i] = if i < COMMON_COLUMNS.len() {
            COMMON_COLUMNS[i]
        } else {
            TYPE_SPECIFIC_COLUMNS[i - COMMON_COLUMNS.len()]
        };
        i += 1;
    }
    all
};

/// A VH-Database column of [`OUTPUT_COLUMNS`], by position: the mapping
/// names its output by index, so that a plugin called by position sends no
/// names at all.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Column(u32);

impl Column {
    /// The column `name`; evaluated at compile time by [`column!`], where a
    /// name not in [`OUTPUT_COLUMNS`] fails the build.
    pub const fn named(name: &str) -> Column {
        Column(crate::names::index_of(&OUTPUT_COLUMNS, name) as u32)
    }

    /// The `i`-th of [`TYPE_SPECIFIC_COLUMNS`].
    fn type_specific(i: usize) -> Column {
        Column((COMMON_COLUMNS.len() + i) as u32)
    }

    /// Its position in [`OUTPUT_COLUMNS`].
    pub fn index(self) -> u32 {
        self.0
    }

    /// Its VH-Database name.
    pub fn name(self) -> &'static str {
        OUTPUT_COLUMNS[self.0 as usize]
    }
}

impl std::fmt::Debug for Column {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The [`Column`] named by a literal, found at compile time.
macro_rules! column {
    ($name:literal) => {{
        const COLUMN: Column = Column::named($name);
        COLUMN
    }};
}

/// Maps one row. Columns without a value are left out so that the database
/// applies its own defaults (`analysis_status` 'pending', counters 0).
///
/// Checks run in a fixed order (required columns, then JSON, then the rest)
/// so the same input always fails with the same error.
pub fn map_row(columns: &[(String, Value)], lookup: &dyn Lookup) -> Result<Mapped, MappingError> {
    map_source(&mut SourceRow::new(columns), lookup)
}

/// [`map_row`] on a row given by position: `values` in the order of the
/// column names `positions` were found for ([`InputPositions::of`]).
pub fn map_values(positions: &InputPositions, values: Vec<Value>, lookup: &dyn Lookup) -> Result<Mapped, MappingError> {
    map_source(&mut SourceRow::by_position(positions, values), lookup)
}

fn map_source(row: &mut SourceRow<'_>, lookup: &dyn Lookup) -> Result<Mapped, MappingError> {
    let mut out = Output::default();
    let mut warnings = Vec::new();

    let discovery_type = row.required_text(input!("discovery_type"))?;
    let description = row.required_text(input!("description"))?;
    let metadata_text = row.json_text(input!("metadata"))?;
    let metadata = Metadata::parse(input!("metadata"), metadata_text.as_deref())?;
    let tags_json = row.optional_json_array(input!("tags"))?;

    let discovery_name = metadata.text("discovery_name")?;
    let stated_location = location::stated(row, &metadata)?;
    let type_specific = metadata.texts(&TYPE_SPECIFIC_COLUMNS)?;
    let pattern_matches = row.optional_integer(input!("pattern_matches"))?;
    let mystery_tier = row.optional_integer(input!("mystery_tier"))?;

    // Every check that can fail has passed: only lookups (which warn) remain.
    let system_name = row.optional_text(input!("system_name"));
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

    out.text(column!("discovery_type"), Some(discovery_type));
    out.text(column!("discovery_name"), discovery_name);
    out.text(column!("system_id"), system_id);
    out.integer(column!("planet_id"), location.planet_id);
    out.integer(column!("moon_id"), location.moon_id);
    out.text(column!("location_type"), Some(location.kind.as_str().to_owned()));
    out.text(column!("location_name"), location.name);
    out.text(column!("description"), Some(description));
    out.text(column!("coordinates"), row.optional_text(input!("coordinates")));
    out.text(column!("condition"), row.optional_text(input!("condition")));
    out.text(column!("time_period"), row.optional_text(input!("time_period")));
    out.text(column!("significance"), row.optional_text(input!("significance")));
    // Both: `photo_url` for older readers, `evidence_urls` is the one the
    // Control Room reads.
    let evidence_url = row.optional_text(input!("evidence_url"));
    out.text(column!("photo_url"), evidence_url.clone());
    out.text(column!("evidence_urls"), evidence_url);
    out.text(column!("discovered_by"), row.optional_text(input!("username")));
    out.text(column!("discord_user_id"), row.optional_text(input!("user_id")));
    out.text(column!("discord_guild_id"), row.optional_text(input!("guild_id")));
    // The time of the report, not of the sync.
    out.value(
        column!("submission_timestamp"),
        row.optional_as_stored(input!("submission_timestamp")),
    );
    out.integer(column!("pattern_matches"), pattern_matches);
    out.integer(column!("mystery_tier"), mystery_tier);
    out.text(column!("analysis_status"), row.optional_text(input!("analysis_status")));
    out.text(column!("tags"), tags_json);
    out.text(column!("metadata"), metadata_text);
    for (i, value) in type_specific {
        out.text(Column::type_specific(i), Some(value));
    }

    Ok(Mapped {
        row: out.columns,
        warnings,
    })
}

/// The VH row under construction; absent values are simply not pushed.
#[derive(Default)]
struct Output {
    columns: Vec<(Column, Value)>,
}

impl Output {
    fn value(&mut self, column: Column, value: Option<Value>) {
        if let Some(value) = value {
            self.columns.push((column, value));
        }
    }

    fn text(&mut self, column: Column, value: Option<String>) {
        self.value(column, value.map(Value::Text));
    }

    fn integer(&mut self, column: Column, value: Option<i64>) {
        self.value(column, value.map(Value::Integer));
    }
}
