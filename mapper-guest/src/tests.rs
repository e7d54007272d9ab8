//! Unit tests of the mapping, against a fake lookup that holds a slice of
//! the VH-Database sample (`fixtures/VH-Database.sample.db`).

use std::cell::RefCell;

use crate::{
    Body, Column, InputPositions, Lookup, Mapped, MappingError, OUTPUT_COLUMNS, TYPE_SPECIFIC_COLUMNS, Value, map_row,
    map_values,
};

const IXIEZH: &str = "SYS_EUCLID_D148E5FD";
const LUZHILAR: &str = "SYS_EUCLID_54058A20";

/// VH-Database's `discoveries` table, copied from
/// `fixtures/VH-Database.schema.sql`, so the tests check emitted names
/// against the real table rather than against the mapper's own list.
const VH_DISCOVERIES_SCHEMA: &str = "
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    discovery_type TEXT NOT NULL,
    discovery_name TEXT,
    system_id TEXT,
    planet_id INTEGER,
    moon_id INTEGER,
    location_type TEXT NOT NULL,
    location_name TEXT,
    description TEXT NOT NULL,
    coordinates TEXT,
    condition TEXT,
    time_period TEXT,
    significance TEXT,
    photo_url TEXT,
    evidence_urls TEXT,
    discovered_by TEXT,
    discord_user_id TEXT,
    discord_guild_id TEXT,
    submission_timestamp DATETIME DEFAULT CURRENT_TIMESTAMP,
    pattern_matches INTEGER DEFAULT 0,
    mystery_tier INTEGER DEFAULT 0,
    analysis_status TEXT DEFAULT 'pending',
    tags TEXT,
    metadata TEXT, species_type TEXT, size_scale TEXT, preservation_quality TEXT, estimated_age TEXT, language_status TEXT, completeness TEXT, author_origin TEXT, key_excerpt TEXT, structure_type TEXT, architectural_style TEXT, structural_integrity TEXT, purpose_function TEXT, tech_category TEXT, operational_status TEXT, power_source TEXT, reverse_engineering TEXT, species_name TEXT, behavioral_notes TEXT, habitat_biome TEXT, threat_level TEXT, resource_type TEXT, deposit_richness TEXT, extraction_method TEXT, economic_value TEXT, ship_class TEXT, hull_condition TEXT, salvageable_tech TEXT, pilot_status TEXT, hazard_type TEXT, severity_level TEXT, duration_frequency TEXT, protection_required TEXT, update_name TEXT, feature_category TEXT, gameplay_impact TEXT, first_impressions TEXT, story_type TEXT, lore_connections TEXT, creative_elements TEXT, collaborative_work TEXT";

fn vh_columns() -> Vec<&'static str> {
    VH_DISCOVERIES_SCHEMA
        .split(',')
        .filter_map(|definition| definition.split_whitespace().next())
        .collect()
}

/// Same matching rule as the host: exact first, then case-insensitive with
/// surrounding white space trimmed. Records the planet/moon queries so tests
/// can check that space does no lookup.
struct FakeLookup {
    systems: Vec<(&'static str, &'static str)>,
    planets: Vec<(&'static str, i64, &'static str)>,
    moons: Vec<(i64, i64, &'static str)>,
    body_queries: RefCell<Vec<String>>,
}

fn matches(stored: &str, wanted: &str) -> bool {
    stored == wanted || stored.trim().to_lowercase() == wanted.trim().to_lowercase()
}

fn find<T: Copy>(items: &[T], name_of: impl Fn(&T) -> &str, wanted: &str) -> Option<T> {
    items
        .iter()
        .find(|item| name_of(item) == wanted)
        .or_else(|| items.iter().find(|item| matches(name_of(item), wanted)))
        .copied()
}

impl FakeLookup {
    fn sample() -> Self {
        FakeLookup {
            systems: vec![(IXIEZH, "Ixiezh HV"), (LUZHILAR, "Luzhilar XVIII")],
            planets: vec![
                (IXIEZH, 31, "Mineh L13 VH"),
                (IXIEZH, 32, "Mezenu Maki"),
                (LUZHILAR, 24, "Disey"),
                // A planet named like a moon, to show that wording does not decide.
                (LUZHILAR, 25, "Dixie Moon"),
            ],
            moons: vec![(6, 31, "Getre Beta")],
            body_queries: RefCell::new(Vec::new()),
        }
    }
}

impl Lookup for FakeLookup {
    fn find_system(&self, name: &str) -> Option<String> {
        find(&self.systems, |(_, stored)| stored, name).map(|(id, _)| id.to_owned())
    }

    fn find_planet(&self, system_id: &str, name: &str) -> Option<Body> {
        self.body_queries
            .borrow_mut()
            .push(format!("planet {system_id} {name}"));
        let in_system: Vec<_> = self
            .planets
            .iter()
            .filter(|(system, _, _)| *system == system_id)
            .copied()
            .collect();
        find(&in_system, |(_, _, stored)| stored, name).map(|(_, id, stored)| Body {
            id,
            planet_id: id,
            name: stored.to_owned(),
        })
    }

    fn find_moon(&self, system_id: &str, name: &str) -> Option<Body> {
        self.body_queries.borrow_mut().push(format!("moon {system_id} {name}"));
        let in_system: Vec<_> = self
            .moons
            .iter()
            .filter(|(_, planet, _)| {
                self.planets
                    .iter()
                    .any(|(system, id, _)| *system == system_id && id == planet)
            })
            .copied()
            .collect();
        find(&in_system, |(_, _, stored)| stored, name).map(|(id, planet_id, stored)| Body {
            id,
            planet_id,
            name: stored.to_owned(),
        })
    }
}

fn text(value: &str) -> Value {
    Value::Text(value.to_owned())
}

/// The smallest valid row: a type and a description.
fn base() -> Vec<(String, Value)> {
    vec![
        ("discovery_type".to_owned(), text("🦴")),
        ("description".to_owned(), text("Ancient alien fossil")),
    ]
}

/// `base()` with some columns added or replaced.
fn row_with(changes: &[(&str, Value)]) -> Vec<(String, Value)> {
    let mut row = base();
    for (name, value) in changes {
        row.retain(|(column, _)| column != name);
        row.push(((*name).to_owned(), value.clone()));
    }
    row
}

/// Maps `row` both ways, named (`map`) and by position (`map-values`),
/// which must agree: every test of the mapping checks both.
fn map_both(row: &[(String, Value)]) -> Result<Mapped, MappingError> {
    let lookup = FakeLookup::sample();
    let named = map_row(row, &lookup);
    let (names, values): (Vec<String>, Vec<Value>) = row.iter().cloned().unzip();
    let positions = InputPositions::of(names.iter().map(String::as_str));
    let by_position = map_values(&positions, values, &FakeLookup::sample());
    assert_eq!(named, by_position, "map_row and map_values disagree on {row:?}");
    named
}

fn map_ok(row: &[(String, Value)]) -> Mapped {
    match map_both(row) {
        Ok(mapped) => mapped,
        Err(error) => panic!("unexpected mapping error: {error:?}"),
    }
}

fn map_err(row: &[(String, Value)]) -> MappingError {
    match map_both(row) {
        Ok(mapped) => panic!("expected a mapping error, got {mapped:?}"),
        Err(error) => error,
    }
}

#[test]
fn output_columns_are_vh_columns_each_once_in_the_tables_order() {
    let vh = vh_columns();
    let positions: Vec<usize> = OUTPUT_COLUMNS
        .iter()
        .map(|name| {
            vh.iter()
                .position(|column| column == name)
                .unwrap_or_else(|| panic!("{name} is not a VH column"))
        })
        .collect();
    assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "{OUTPUT_COLUMNS:?}");
    assert_eq!(OUTPUT_COLUMNS.len(), vh.len() - 1, "every VH column but id");
    for (i, name) in OUTPUT_COLUMNS.iter().enumerate() {
        assert_eq!(Column::named(name).index() as usize, i);
        assert_eq!(Column::named(name).name(), *name);
    }
}

#[test]
fn by_position_a_name_without_a_value_reads_as_null() {
    let names = ["discovery_type", "description", "coordinates"];
    let values = vec![text("🦴"), text("Ancient alien fossil")];
    let positions = InputPositions::of(names.into_iter());
    let mapped = map_values(&positions, values, &FakeLookup::sample()).expect("maps");
    assert_eq!(get(&mapped, "coordinates"), None);
    assert_eq!(get_text(&mapped, "description"), Some("Ancient alien fossil"));
}

fn get<'a>(mapped: &'a Mapped, column: &str) -> Option<&'a Value> {
    mapped
        .row
        .iter()
        .find(|(name, _)| name.name() == column)
        .map(|(_, value)| value)
}

fn get_text<'a>(mapped: &'a Mapped, column: &str) -> Option<&'a str> {
    match get(mapped, column) {
        Some(Value::Text(text)) => Some(text),
        None => None,
        Some(other) => panic!("{column} is not text: {other:?}"),
    }
}

fn get_int(mapped: &Mapped, column: &str) -> Option<i64> {
    match get(mapped, column) {
        Some(Value::Integer(number)) => Some(*number),
        None => None,
        Some(other) => panic!("{column} is not an integer: {other:?}"),
    }
}

fn assert_field(error: &MappingError, field: &str) {
    assert_eq!(error.field.as_deref(), Some(field), "{error:?}");
}

// ---- the column table ------------------------------------------------------

#[test]
fn full_row_maps_column_by_column() {
    let row = vec![
        ("id".to_owned(), Value::Integer(123)),
        ("user_id".to_owned(), text("123456789012345678")),
        ("username".to_owned(), text("Explorer#1234")),
        ("guild_id".to_owned(), text("987654321098765432")),
        ("discovery_type".to_owned(), text("🦴")),
        ("location".to_owned(), text("planet:Mineh L13 VH")),
        ("time_period".to_owned(), text("Ancient")),
        ("condition".to_owned(), text("Weathered")),
        ("description".to_owned(), text("Ancient alien fossil")),
        ("significance".to_owned(), text("High")),
        ("evidence_url".to_owned(), text("https://example.org/a.png")),
        ("related_discoveries".to_owned(), text("[1,2]")),
        ("coordinates".to_owned(), text("0123:4567:89AB:CDEF")),
        ("planet_name".to_owned(), Value::Null),
        ("galaxy_name".to_owned(), text("Euclid")),
        ("submission_timestamp".to_owned(), text("2024-05-01 12:34:56")),
        ("analysis_status".to_owned(), text("pending")),
        ("pattern_matches".to_owned(), Value::Integer(2)),
        ("mystery_tier".to_owned(), Value::Integer(3)),
        ("tags".to_owned(), text(r#"["fossil","ancient"]"#)),
        (
            "metadata".to_owned(),
            text(
                r#"{"discovery_name":"The Old Ones","species_type":"Vertebrate","preservation_quality":"Excellent","estimated_age":"200 million years"}"#,
            ),
        ),
        ("system_name".to_owned(), text("Ixiezh HV")),
    ];
    let mapped = map_ok(&row);
    let expected: Vec<(&str, Value)> = vec![
        ("discovery_type", text("🦴")),
        ("discovery_name", text("The Old Ones")),
        ("system_id", text(IXIEZH)),
        ("planet_id", Value::Integer(31)),
        ("location_type", text("planet")),
        ("location_name", text("Mineh L13 VH")),
        ("description", text("Ancient alien fossil")),
        ("coordinates", text("0123:4567:89AB:CDEF")),
        ("condition", text("Weathered")),
        ("time_period", text("Ancient")),
        ("significance", text("High")),
        ("photo_url", text("https://example.org/a.png")),
        ("evidence_urls", text("https://example.org/a.png")),
        ("discovered_by", text("Explorer#1234")),
        ("discord_user_id", text("123456789012345678")),
        ("discord_guild_id", text("987654321098765432")),
        ("submission_timestamp", text("2024-05-01 12:34:56")),
        ("pattern_matches", Value::Integer(2)),
        ("mystery_tier", Value::Integer(3)),
        ("analysis_status", text("pending")),
        ("tags", text(r#"["fossil","ancient"]"#)),
        (
            "metadata",
            text(
                r#"{"discovery_name":"The Old Ones","species_type":"Vertebrate","preservation_quality":"Excellent","estimated_age":"200 million years"}"#,
            ),
        ),
        ("species_type", text("Vertebrate")),
        ("preservation_quality", text("Excellent")),
        ("estimated_age", text("200 million years")),
    ];
    assert_eq!(mapped.named_row(), expected);
    assert!(mapped.warnings.is_empty(), "{:?}", mapped.warnings);
}

#[test]
fn emits_only_vh_columns_never_id_and_each_once() {
    let vh = vh_columns();
    assert_eq!(vh.len(), 64, "the real table has 64 columns");
    let mut metadata = serde_json::Map::new();
    metadata.insert("discovery_name".into(), "n".into());
    for column in TYPE_SPECIFIC_COLUMNS {
        metadata.insert(column.into(), format!("value of {column}").into());
    }
    let row = vec![
        ("id".to_owned(), Value::Integer(7)),
        ("user_id".to_owned(), text("1")),
        ("username".to_owned(), text("u")),
        ("guild_id".to_owned(), text("2")),
        ("discovery_type".to_owned(), text("⚙️")),
        ("location".to_owned(), text("moon:Getre Beta")),
        ("time_period".to_owned(), text("t")),
        ("condition".to_owned(), text("c")),
        ("description".to_owned(), text("d")),
        ("significance".to_owned(), text("s")),
        ("evidence_url".to_owned(), text("e")),
        ("related_discoveries".to_owned(), text("[]")),
        ("coordinates".to_owned(), text("x")),
        ("galaxy_name".to_owned(), text("Euclid")),
        ("submission_timestamp".to_owned(), text("2024-01-01")),
        ("analysis_status".to_owned(), text("done")),
        ("pattern_matches".to_owned(), Value::Integer(1)),
        ("mystery_tier".to_owned(), Value::Integer(1)),
        ("tags".to_owned(), text("[]")),
        (
            "metadata".to_owned(),
            text(&serde_json::Value::Object(metadata).to_string()),
        ),
        ("system_name".to_owned(), text("Ixiezh HV")),
        ("some_future_column".to_owned(), text("ignored")),
    ];
    let mapped = map_ok(&row);
    let names: Vec<&str> = mapped.row.iter().map(|(name, _)| name.name()).collect();
    for name in &names {
        assert!(vh.contains(name), "{name} is not a VH column");
    }
    assert!(!names.contains(&"id"));
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "a column emitted twice: {names:?}");
    // Every VH column but `id` has a value in this row.
    assert_eq!(names.len(), 63, "{names:?}");
}

#[test]
fn type_specific_columns_are_the_40_of_the_vh_table() {
    let vh = vh_columns();
    assert_eq!(TYPE_SPECIFIC_COLUMNS.len(), 40);
    assert_eq!(&vh[24..], &TYPE_SPECIFIC_COLUMNS[..]);
}

#[test]
fn unknown_columns_are_ignored_and_missing_ones_read_as_null() {
    let mapped = map_ok(&row_with(&[
        ("brand_new_column", text("whatever")),
        ("coordinates", Value::Null),
    ]));
    assert_eq!(get(&mapped, "brand_new_column"), None);
    assert_eq!(get(&mapped, "coordinates"), None);
    assert_eq!(get(&mapped, "discovered_by"), None);
    assert_eq!(get_text(&mapped, "location_type"), Some("planet"));
}

#[test]
fn evidence_url_fills_photo_url_and_evidence_urls() {
    let mapped = map_ok(&row_with(&[(
        "evidence_url",
        text(" https://cdn.discordapp.com/x.png "),
    )]));
    assert_eq!(get_text(&mapped, "photo_url"), Some("https://cdn.discordapp.com/x.png"));
    assert_eq!(
        get_text(&mapped, "evidence_urls"),
        Some("https://cdn.discordapp.com/x.png")
    );
}

#[test]
fn reporter_identity_columns() {
    let mapped = map_ok(&row_with(&[
        ("username", text("Explorer#1234")),
        ("user_id", text("111")),
        ("guild_id", text("222")),
    ]));
    assert_eq!(get_text(&mapped, "discovered_by"), Some("Explorer#1234"));
    assert_eq!(get_text(&mapped, "discord_user_id"), Some("111"));
    assert_eq!(get_text(&mapped, "discord_guild_id"), Some("222"));
}

#[test]
fn numeric_ids_in_text_columns_become_their_decimal_text() {
    let mapped = map_ok(&row_with(&[
        ("user_id", Value::Integer(123_456_789_012_345_678)),
        ("guild_id", Value::Real(1.5)),
    ]));
    assert_eq!(get_text(&mapped, "discord_user_id"), Some("123456789012345678"));
    assert_eq!(get_text(&mapped, "discord_guild_id"), Some("1.5"));
}

#[test]
fn submission_timestamp_is_kept_as_stored() {
    let mapped = map_ok(&row_with(&[("submission_timestamp", text("2023-11-02 08:15:00"))]));
    assert_eq!(get_text(&mapped, "submission_timestamp"), Some("2023-11-02 08:15:00"));
    let mapped = map_ok(&row_with(&[("submission_timestamp", Value::Integer(1_700_000_000))]));
    assert_eq!(get_int(&mapped, "submission_timestamp"), Some(1_700_000_000));
    // Absent: left to the database rather than invented here.
    let mapped = map_ok(&base());
    assert_eq!(get(&mapped, "submission_timestamp"), None);
}

#[test]
fn analysis_status_is_text() {
    let mapped = map_ok(&row_with(&[("analysis_status", text(" analyzed "))]));
    assert_eq!(get_text(&mapped, "analysis_status"), Some("analyzed"));
}

#[test]
fn integer_columns_pass_integers_and_convert_text_digits() {
    let mapped = map_ok(&row_with(&[
        ("pattern_matches", Value::Integer(4)),
        ("mystery_tier", text(" 2 ")),
    ]));
    assert_eq!(get_int(&mapped, "pattern_matches"), Some(4));
    assert_eq!(get_int(&mapped, "mystery_tier"), Some(2));

    let mapped = map_ok(&row_with(&[
        ("pattern_matches", Value::Real(3.0)),
        ("mystery_tier", text("-1")),
    ]));
    assert_eq!(get_int(&mapped, "pattern_matches"), Some(3));
    assert_eq!(get_int(&mapped, "mystery_tier"), Some(-1));

    let mapped = map_ok(&row_with(&[
        ("pattern_matches", text("  ")),
        ("mystery_tier", Value::Null),
    ]));
    assert_eq!(get(&mapped, "pattern_matches"), None);
    assert_eq!(get(&mapped, "mystery_tier"), None);
}

#[test]
fn non_numeric_integer_columns_are_errors_naming_the_field() {
    let error = map_err(&row_with(&[("pattern_matches", text("many"))]));
    assert_field(&error, "pattern_matches");
    assert!(error.message.contains("many"), "{}", error.message);

    let error = map_err(&row_with(&[("mystery_tier", text("2.5"))]));
    assert_field(&error, "mystery_tier");

    let error = map_err(&row_with(&[("mystery_tier", Value::Real(2.5))]));
    assert_field(&error, "mystery_tier");

    let error = map_err(&row_with(&[("pattern_matches", text("99999999999999999999"))]));
    assert_field(&error, "pattern_matches");
}

// ---- required columns --------------------------------------------------------

#[test]
fn missing_description_is_an_error() {
    let mut row = base();
    row.retain(|(name, _)| name != "description");
    let error = map_err(&row);
    assert_field(&error, "description");
    assert_eq!(error.message, "description is required");
}

#[test]
fn null_or_blank_required_values_are_errors() {
    for value in [Value::Null, text(""), text(" \n\t ")] {
        let error = map_err(&row_with(&[("description", value.clone())]));
        assert_field(&error, "description");
        let error = map_err(&row_with(&[("discovery_type", value)]));
        assert_field(&error, "discovery_type");
        assert_eq!(error.message, "discovery_type is required");
    }
    let mut row = base();
    row.retain(|(name, _)| name != "discovery_type");
    assert_field(&map_err(&row), "discovery_type");
}

#[test]
fn required_value_of_wrong_type_is_an_error() {
    let error = map_err(&row_with(&[("description", Value::Integer(42))]));
    assert_field(&error, "description");
    assert!(error.message.contains("integer"), "{}", error.message);

    let error = map_err(&row_with(&[("discovery_type", Value::Real(1.0))]));
    assert_field(&error, "discovery_type");
}

// ---- text rules --------------------------------------------------------------

#[test]
fn text_is_trimmed() {
    let mapped = map_ok(&row_with(&[
        ("description", text("  Ancient fossil \n")),
        ("coordinates", text("\t0123:4567 ")),
    ]));
    assert_eq!(get_text(&mapped, "description"), Some("Ancient fossil"));
    assert_eq!(get_text(&mapped, "coordinates"), Some("0123:4567"));
}

#[test]
fn empty_optionals_are_omitted() {
    let mapped = map_ok(&row_with(&[
        ("coordinates", text("   ")),
        ("condition", text("")),
        ("evidence_url", text(" ")),
        ("username", text("\n")),
        ("tags", text("  ")),
        (
            "metadata",
            text(r#"{"species_type":"  ","discovery_name":"","size_scale":null}"#),
        ),
    ]));
    for column in [
        "coordinates",
        "condition",
        "photo_url",
        "evidence_urls",
        "discovered_by",
        "tags",
        "species_type",
        "discovery_name",
        "size_scale",
    ] {
        assert_eq!(get(&mapped, column), None, "{column} should be omitted");
    }
    // No NULLs are emitted at all: absent columns are simply left out.
    assert!(mapped.row.iter().all(|(_, value)| *value != Value::Null));
}

#[test]
fn unicode_text_is_preserved() {
    let description = "Ruines de l’ancienne cité 🏛️ — 古代の遺跡, Ωμέγα, family 👨‍👩‍👧‍👦";
    let mapped = map_ok(&row_with(&[
        ("discovery_type", text("🏛️")),
        ("description", text(description)),
        ("username", text("Zoë ✨")),
        (
            "metadata",
            text(r#"{"structure_type":"Tempel — Gek 神殿 🛕","architectural_style":"Vy'keen"}"#),
        ),
    ]));
    // The variation selector of 🏛️ (U+FE0F) is not white space: kept.
    assert_eq!(get_text(&mapped, "discovery_type"), Some("🏛️"));
    assert_eq!(get_text(&mapped, "description"), Some(description));
    assert_eq!(get_text(&mapped, "discovered_by"), Some("Zoë ✨"));
    assert_eq!(get_text(&mapped, "structure_type"), Some("Tempel — Gek 神殿 🛕"));
    assert_eq!(get_text(&mapped, "architectural_style"), Some("Vy'keen"));
}

#[test]
fn long_text_is_never_truncated() {
    let description = "Ꙭ".repeat(20_000);
    let excerpt = "x".repeat(100_000);
    let metadata = serde_json::json!({ "key_excerpt": excerpt }).to_string();
    let mapped = map_ok(&row_with(&[
        ("description", text(&description)),
        ("metadata", text(&metadata)),
    ]));
    assert_eq!(get_text(&mapped, "description"), Some(description.as_str()));
    assert_eq!(get_text(&mapped, "key_excerpt"), Some(excerpt.as_str()));
    assert_eq!(get_text(&mapped, "metadata"), Some(metadata.as_str()));
}

// ---- metadata and tags ---------------------------------------------------------

#[test]
fn metadata_and_tags_are_copied_as_stored() {
    let metadata = r#"{ "species_type" : "Vertebrate",  "extra": {"nested": [1, 2]} }"#;
    let tags = r#"[ "a",  "b" ]"#;
    let mapped = map_ok(&row_with(&[("metadata", text(metadata)), ("tags", text(tags))]));
    assert_eq!(get_text(&mapped, "metadata"), Some(metadata));
    assert_eq!(get_text(&mapped, "tags"), Some(tags));
    assert_eq!(get_text(&mapped, "species_type"), Some("Vertebrate"));
}

#[test]
fn bad_metadata_json_is_an_error_naming_the_field() {
    let error = map_err(&row_with(&[("metadata", text(r#"{"species_type": "#))]));
    assert_field(&error, "metadata");
    assert!(
        error.message.starts_with("metadata is not valid JSON: "),
        "{}",
        error.message
    );
    // The parser's own message, with its position.
    assert!(error.message.contains("line 1 column"), "{}", error.message);
}

#[test]
fn metadata_must_be_an_object() {
    for not_object in ["[1,2]", "\"text\"", "42", "null"] {
        let error = map_err(&row_with(&[("metadata", text(not_object))]));
        assert_field(&error, "metadata");
        assert!(
            error.message.starts_with("metadata must be a JSON object"),
            "{}",
            error.message
        );
    }
    let error = map_err(&row_with(&[("metadata", Value::Integer(1))]));
    assert_field(&error, "metadata");
}

#[test]
fn bad_tags_are_an_error_naming_the_field() {
    let error = map_err(&row_with(&[("tags", text("fossil, ancient"))]));
    assert_field(&error, "tags");
    assert!(
        error.message.starts_with("tags is not valid JSON: "),
        "{}",
        error.message
    );

    let error = map_err(&row_with(&[("tags", text(r#"{"a":1}"#))]));
    assert_field(&error, "tags");
    assert_eq!(error.message, "tags must be a JSON array, found a JSON object");
}

#[test]
fn type_specific_non_string_values() {
    let mapped = map_ok(&row_with(&[(
        "metadata",
        text(r#"{"size_scale": 3, "estimated_age": 1.5e6, "completeness": true}"#),
    )]));
    assert_eq!(get_text(&mapped, "size_scale"), Some("3"));
    assert_eq!(get_text(&mapped, "estimated_age"), Some("1500000.0"));
    assert_eq!(get_text(&mapped, "completeness"), Some("true"));

    let error = map_err(&row_with(&[("metadata", text(r#"{"hazard_type": {"kind": "heat"}}"#))]));
    assert_field(&error, "metadata.hazard_type");
    assert_eq!(error.message, "metadata.hazard_type must be text, found a JSON object");

    let error = map_err(&row_with(&[("metadata", text(r#"{"ship_class": ["a"]}"#))]));
    assert_field(&error, "metadata.ship_class");
}

/// A key given twice keeps its last value, and escapes in keys and values
/// are read as JSON reads them (serde_json's own `Map` did the same).
#[test]
fn metadata_keys_given_twice_keep_the_last_and_escapes_are_read() {
    let metadata = r#"{"species_type": "first", "species_type": "last", "size_\u0073cale": "caf\u00e9 \"big\""}"#;
    let mapped = map_ok(&row_with(&[("metadata", text(metadata))]));
    assert_eq!(get_text(&mapped, "species_type"), Some("last"));
    assert_eq!(get_text(&mapped, "size_scale"), Some("café \"big\""));
}

/// Of two bad type-specific values, the one whose column comes first in
/// VH-Database is reported, whatever the order of the keys in the object.
#[test]
fn the_first_bad_type_specific_value_in_column_order_is_reported() {
    let metadata = r#"{"hazard_type": {"kind": "heat"}, "species_type": ["a"]}"#;
    let error = map_err(&row_with(&[("metadata", text(metadata))]));
    assert_field(&error, "metadata.species_type");
}

#[test]
fn every_type_specific_column_comes_from_metadata() {
    let mut metadata = serde_json::Map::new();
    for column in TYPE_SPECIFIC_COLUMNS {
        metadata.insert(column.into(), format!(" {column} value ").into());
    }
    let mapped = map_ok(&row_with(&[(
        "metadata",
        text(&serde_json::Value::Object(metadata).to_string()),
    )]));
    for column in TYPE_SPECIFIC_COLUMNS {
        assert_eq!(get_text(&mapped, column), Some(format!("{column} value").as_str()));
    }
}

#[test]
fn discovery_name_comes_from_metadata() {
    let mapped = map_ok(&row_with(&[(
        "metadata",
        text(r#"{"discovery_name":" The Whispering Obelisk "}"#),
    )]));
    assert_eq!(get_text(&mapped, "discovery_name"), Some("The Whispering Obelisk"));
    assert_eq!(get(&map_ok(&base()), "discovery_name"), None);
}

#[test]
fn metadata_keys_that_are_not_vh_columns_are_not_emitted() {
    let mapped = map_ok(&row_with(&[(
        "metadata",
        text(r#"{"location_info":"near the pole","id":99,"system_id":"SYS_X","description":"other"}"#),
    )]));
    assert_eq!(get(&mapped, "location_info"), None);
    assert_eq!(get(&mapped, "id"), None);
    assert_eq!(get(&mapped, "system_id"), None);
    assert_eq!(get_text(&mapped, "description"), Some("Ancient alien fossil"));
}

// ---- system ------------------------------------------------------------------------

#[test]
fn system_found_exactly_or_case_insensitively() {
    let mapped = map_ok(&row_with(&[("system_name", text("Ixiezh HV"))]));
    assert_eq!(get_text(&mapped, "system_id"), Some(IXIEZH));
    let mapped = map_ok(&row_with(&[("system_name", text("  ixiezh hv "))]));
    assert_eq!(get_text(&mapped, "system_id"), Some(IXIEZH));
}

#[test]
fn system_not_found_is_a_warning_not_an_error() {
    let mapped = map_ok(&row_with(&[
        ("system_name", text("Kepler-186")),
        ("location", text("planet:Kepler-186f")),
    ]));
    assert_eq!(get(&mapped, "system_id"), None);
    assert_eq!(get(&mapped, "planet_id"), None);
    assert_eq!(get_text(&mapped, "location_type"), Some("planet"));
    assert_eq!(get_text(&mapped, "location_name"), Some("Kepler-186f"));
    assert_eq!(
        mapped.warnings,
        vec![
            "system 'Kepler-186' not found in VH-Database".to_owned(),
            "planet 'Kepler-186f' not looked up: system 'Kepler-186' not found in VH-Database".to_owned(),
        ]
    );
}

#[test]
fn missing_system_name_is_a_warning() {
    let mapped = map_ok(&row_with(&[("location", text("moon:Getre Beta"))]));
    assert_eq!(get(&mapped, "system_id"), None);
    assert_eq!(get_text(&mapped, "location_type"), Some("moon"));
    assert_eq!(get_text(&mapped, "location_name"), Some("Getre Beta"));
    assert_eq!(
        mapped.warnings,
        vec![
            "no system_name given; system_id left NULL".to_owned(),
            "moon 'Getre Beta' not looked up: no system_name given".to_owned(),
        ]
    );
}

// ---- location ----------------------------------------------------------------------

#[test]
fn getre_beta_reported_as_planet_is_filed_as_moon() {
    let mapped = map_ok(&row_with(&[
        ("system_name", text("Ixiezh HV")),
        ("location", text("planet:Getre Beta")),
        (
            "metadata",
            text(r#"{"location_type":"planet","location_name":"Getre Beta"}"#),
        ),
    ]));
    assert_eq!(get_text(&mapped, "location_type"), Some("moon"));
    assert_eq!(get_text(&mapped, "location_name"), Some("Getre Beta"));
    assert_eq!(get_int(&mapped, "moon_id"), Some(6));
    assert_eq!(get_int(&mapped, "planet_id"), Some(31));
    assert_eq!(get_text(&mapped, "system_id"), Some(IXIEZH));
    assert!(mapped.warnings.is_empty(), "{:?}", mapped.warnings);
}

#[test]
fn getre_beta_as_plain_planet_name_is_filed_as_moon() {
    let mapped = map_ok(&row_with(&[
        ("system_name", text("Ixiezh HV")),
        ("planet_name", text("getre beta")),
        ("location", text("Getre Beta")),
    ]));
    assert_eq!(get_text(&mapped, "location_type"), Some("moon"));
    assert_eq!(get_int(&mapped, "moon_id"), Some(6));
    assert_eq!(get_int(&mapped, "planet_id"), Some(31));
    // The reporter's spelling is kept.
    assert_eq!(get_text(&mapped, "location_name"), Some("getre beta"));
}

#[test]
fn a_planet_reported_as_moon_is_filed_as_planet() {
    let lookup = FakeLookup::sample();
    let row = row_with(&[
        ("system_name", text("Luzhilar XVIII")),
        ("location", text("moon:Dixie Moon")),
    ]);
    let Ok(mapped) = map_row(&row, &lookup) else {
        panic!("mapping failed")
    };
    assert_eq!(get_text(&mapped, "location_type"), Some("planet"));
    assert_eq!(get_int(&mapped, "planet_id"), Some(25));
    assert_eq!(get(&mapped, "moon_id"), None);
    // The hinted kind was tried first.
    assert_eq!(
        lookup.body_queries.borrow().as_slice(),
        [
            format!("moon {LUZHILAR} Dixie Moon"),
            format!("planet {LUZHILAR} Dixie Moon"),
        ]
    );
}

#[test]
fn unhinted_name_tries_planets_first() {
    let lookup = FakeLookup::sample();
    let row = row_with(&[
        ("system_name", text("Ixiezh HV")),
        ("planet_name", text("Mineh L13 VH")),
    ]);
    let Ok(mapped) = map_row(&row, &lookup) else {
        panic!("mapping failed")
    };
    assert_eq!(get_text(&mapped, "location_type"), Some("planet"));
    assert_eq!(get_int(&mapped, "planet_id"), Some(31));
    assert_eq!(get(&mapped, "moon_id"), None);
    assert_eq!(
        lookup.body_queries.borrow().as_slice(),
        [format!("planet {IXIEZH} Mineh L13 VH")]
    );
}

#[test]
fn space_station_sets_no_ids_and_does_no_lookup() {
    let lookup = FakeLookup::sample();
    let row = row_with(&[
        ("system_name", text("Ixiezh HV")),
        ("location", text("space:station:Getre Beta")),
    ]);
    let Ok(mapped) = map_row(&row, &lookup) else {
        panic!("mapping failed")
    };
    assert_eq!(get_text(&mapped, "location_type"), Some("space"));
    assert_eq!(get_text(&mapped, "location_name"), Some("station:Getre Beta"));
    assert_eq!(get(&mapped, "planet_id"), None);
    assert_eq!(get(&mapped, "moon_id"), None);
    assert_eq!(get_text(&mapped, "system_id"), Some(IXIEZH));
    assert!(lookup.body_queries.borrow().is_empty());
    assert!(mapped.warnings.is_empty(), "{:?}", mapped.warnings);
}

#[test]
fn space_from_metadata_sets_no_ids_and_does_no_lookup() {
    let lookup = FakeLookup::sample();
    let row = row_with(&[
        ("system_name", text("Ixiezh HV")),
        ("location", text("space:station:Alpha")),
        (
            "metadata",
            text(r#"{"location_type":"Space","location_name":"station:Alpha"}"#),
        ),
    ]);
    let Ok(mapped) = map_row(&row, &lookup) else {
        panic!("mapping failed")
    };
    assert_eq!(get_text(&mapped, "location_type"), Some("space"));
    assert_eq!(get_text(&mapped, "location_name"), Some("station:Alpha"));
    assert_eq!(get(&mapped, "planet_id"), None);
    assert_eq!(get(&mapped, "moon_id"), None);
    assert!(lookup.body_queries.borrow().is_empty());

    // Plain space, and space in an unknown system: still no lookup, no
    // location warning.
    let mapped = map_ok(&row_with(&[
        ("system_name", text("Nowhere")),
        ("location", text("space:Deep Void")),
    ]));
    assert_eq!(get_text(&mapped, "location_type"), Some("space"));
    assert_eq!(get_text(&mapped, "location_name"), Some("Deep Void"));
    assert_eq!(
        mapped.warnings,
        vec!["system 'Nowhere' not found in VH-Database".to_owned()]
    );
}

#[test]
fn location_name_sources_in_order() {
    // metadata.location_name wins over planet_name and location.
    let mapped = map_ok(&row_with(&[
        ("system_name", text("Ixiezh HV")),
        ("planet_name", text("Mezenu Maki")),
        ("location", text("planet:Disey")),
        ("metadata", text(r#"{"location_name":"Mineh L13 VH"}"#)),
    ]));
    assert_eq!(get_text(&mapped, "location_name"), Some("Mineh L13 VH"));
    assert_eq!(get_int(&mapped, "planet_id"), Some(31));

    // Then planet_name.
    let mapped = map_ok(&row_with(&[
        ("system_name", text("Ixiezh HV")),
        ("planet_name", text("Mezenu Maki")),
        ("location", text("planet:Disey")),
        ("metadata", text(r#"{"location_name":"  "}"#)),
    ]));
    assert_eq!(get_text(&mapped, "location_name"), Some("Mezenu Maki"));
    assert_eq!(get_int(&mapped, "planet_id"), Some(32));

    // Then location, with its kind prefix removed.
    let mapped = map_ok(&row_with(&[
        ("system_name", text("Ixiezh HV")),
        ("location", text("Planet: Mezenu Maki ")),
    ]));
    assert_eq!(get_text(&mapped, "location_name"), Some("Mezenu Maki"));
    assert_eq!(get_int(&mapped, "planet_id"), Some(32));
}

#[test]
fn not_found_keeps_stated_kind_and_name_with_a_warning() {
    let mapped = map_ok(&row_with(&[
        ("system_name", text("Ixiezh HV")),
        ("location", text("moon:Phantom")),
    ]));
    assert_eq!(get_text(&mapped, "location_type"), Some("moon"));
    assert_eq!(get_text(&mapped, "location_name"), Some("Phantom"));
    assert_eq!(get(&mapped, "planet_id"), None);
    assert_eq!(get(&mapped, "moon_id"), None);
    assert_eq!(get_text(&mapped, "system_id"), Some(IXIEZH));
    assert_eq!(
        mapped.warnings,
        vec![
            "moon 'Phantom' not found in system 'Ixiezh HV' of VH-Database (neither a planet nor a moon of it)"
                .to_owned()
        ]
    );

    // No hint: planet.
    let mapped = map_ok(&row_with(&[
        ("system_name", text("Ixiezh HV")),
        ("location", text("Planet Kepler-186f")),
    ]));
    assert_eq!(get_text(&mapped, "location_type"), Some("planet"));
    assert_eq!(get_text(&mapped, "location_name"), Some("Planet Kepler-186f"));
    assert_eq!(mapped.warnings.len(), 1);
}

#[test]
fn no_location_at_all_is_a_planet_without_ids() {
    let mapped = map_ok(&row_with(&[("system_name", text("Ixiezh HV"))]));
    assert_eq!(get_text(&mapped, "location_type"), Some("planet"));
    assert_eq!(get(&mapped, "location_name"), None);
    assert_eq!(
        mapped.warnings,
        vec!["no location name given; planet not resolved, planet_id and moon_id left NULL".to_owned()]
    );
}

#[test]
fn unknown_location_type_is_an_error() {
    let error = map_err(&row_with(&[(
        "metadata",
        text(r#"{"location_type":"asteroid","location_name":"Rock"}"#),
    )]));
    assert_field(&error, "metadata.location_type");
    assert!(error.message.contains("'asteroid'"), "{}", error.message);

    let error = map_err(&row_with(&[("metadata", text(r#"{"location_name":["a"]}"#))]));
    assert_field(&error, "metadata.location_name");
}

#[test]
fn location_type_is_always_planet_moon_or_space() {
    let locations = [
        "planet:Getre Beta",
        "moon:Mineh L13 VH",
        "space:x",
        "space:station:y",
        "station:z",
        "",
        "weird:thing",
        "moon:",
    ];
    for location in locations {
        for system in ["Ixiezh HV", "Nowhere"] {
            let mapped = map_ok(&row_with(&[
                ("system_name", text(system)),
                ("location", text(location)),
            ]));
            let kind = get_text(&mapped, "location_type");
            assert!(
                matches!(kind, Some("planet" | "moon" | "space")),
                "{location:?} in {system}: {kind:?}"
            );
        }
    }
}
