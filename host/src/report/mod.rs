//! Discovery reports: the discovery types with their form fields (as data),
//! the validation of one report, and what a valid report becomes in keeper.db.
//!
//! The Discord modal, `POST /discoveries` and `keeper submit` must accept
//! exactly the same reports, and the mapping plugin relies on what was
//! accepted here; nothing here touches a database. By concern:
//!
//! - [`types`] — the ten types, their fields, labels and limits, read from
//!   the data file `host/discovery-types.toml`
//! - [`validate`] — [`Report::from_json`], the rules every report passes
//! - [`location`] — `planet:NAME`, `moon:NAME`, `space:NAME`
//! - [`error`] — [`ReportError`], messages that name the field
//! - this module — [`Report`] and its keeper.db columns

mod error;
mod location;
#[cfg(test)]
mod test_support;
mod types;
mod validate;

use std::collections::BTreeMap;

use serde_json::{Map, Value};

pub use error::ReportError;
pub use location::{Location, LocationKind};
pub use types::{
    Catalog, CatalogError, DISCORD_INPUT_MAX, DISCORD_LABEL_MAX, DISCORD_PLACEHOLDER_MAX, DISCORD_TITLE_MAX,
    DiscoveryType, FieldSpec, FieldStyle, Limits, TypeList, catalog, discovery_type, discovery_type_of_column,
    discovery_types, limits, type_specific_columns,
};
pub use validate::COMMON_KEYS;

/// A validated report, ready to be stored as one keeper.db `discoveries` row.
///
/// Only [`Report::from_json`] checks the rules; the fields are public so the
/// store can read them without accessors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The canonical emoji of its [`DiscoveryType`].
    pub discovery_type: String,
    /// The star system's name as typed (resolved against VH-Database later).
    pub system_name: String,
    /// The reporter's location choice.
    pub location: Location,
    /// The required description.
    pub description: String,
    /// The reporter's display name.
    pub username: String,
    /// The reporter's Discord id; `""` when not given (the column is NOT NULL).
    pub user_id: String,
    /// The Discord guild id, when reported from a guild.
    pub guild_id: Option<String>,
    /// Glyphs or lat/long text.
    pub coordinates: Option<String>,
    /// Free text.
    pub condition: Option<String>,
    /// Free text.
    pub time_period: Option<String>,
    /// Free text.
    pub significance: Option<String>,
    /// An `http://` or `https://` link to the evidence.
    pub evidence_url: Option<String>,
    /// The discovery's own name, kept in `metadata.discovery_name`.
    pub discovery_name: Option<String>,
    /// Tags, trimmed, empty ones dropped, order kept.
    pub tags: Vec<String>,
    /// The type-specific columns that were given (non-empty after trimming),
    /// all belonging to `discovery_type`.
    pub fields: BTreeMap<String, String>,
}

impl Report {
    /// The report as a JSON record that [`Report::from_json`] reads back to an
    /// equal report (absent values are left out), e.g. for the pull API.
    pub fn to_json(&self) -> Value {
        let mut obj = Map::new();
        let mut put = |key: &str, value: &str| {
            obj.insert(key.to_owned(), Value::String(value.to_owned()));
        };
        put("discovery_type", &self.discovery_type);
        put("system_name", &self.system_name);
        put("location", &self.location.to_string());
        put("description", &self.description);
        put("username", &self.username);
        if !self.user_id.is_empty() {
            put("user_id", &self.user_id);
        }
        let optional = [
            ("guild_id", &self.guild_id),
            ("coordinates", &self.coordinates),
            ("condition", &self.condition),
            ("time_period", &self.time_period),
            ("significance", &self.significance),
            ("evidence_url", &self.evidence_url),
            ("discovery_name", &self.discovery_name),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                put(key, value);
            }
        }
        for (key, value) in &self.fields {
            put(key, value);
        }
        if !self.tags.is_empty() {
            let tags = self.tags.iter().cloned().map(Value::String).collect();
            obj.insert("tags".to_owned(), Value::Array(tags));
        }
        Value::Object(obj)
    }

    /// The discovery type's table entry.
    pub fn discovery(&self) -> Option<&'static DiscoveryType> {
        discovery_type(&self.discovery_type)
    }

    /// The keeper.db `metadata` JSON object text: the type-specific fields plus
    /// `location_type` and `location_name` (and `discovery_name` if given).
    ///
    /// Keys are sorted, so the text is the same whatever serde_json features
    /// another crate enables (`preserve_order`), which keeps content hashes
    /// and fixtures stable.
    pub fn metadata_json(&self) -> String {
        let mut entries: BTreeMap<&str, &str> = self.fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        entries.insert("location_type", self.location.kind.as_str());
        entries.insert("location_name", &self.location.name);
        if let Some(name) = &self.discovery_name {
            entries.insert("discovery_name", name);
        }
        let object: Map<String, Value> = entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
            .collect();
        Value::Object(object).to_string()
    }

    /// The keeper.db `tags` column: a JSON array text, `None` (NULL) when
    /// there are no tags, as the old bot stored it.
    pub fn tags_json(&self) -> Option<String> {
        if self.tags.is_empty() {
            return None;
        }
        let tags = self.tags.iter().cloned().map(Value::String).collect();
        Some(Value::Array(tags).to_string())
    }

    /// The keeper.db `location` column (NOT NULL): the location's name.
    pub fn location_column(&self) -> &str {
        &self.location.name
    }

    /// The keeper.db `planet_name` column: the name for a planet or a moon
    /// (the old bot kept both there), `None` for space.
    pub fn planet_name(&self) -> Option<&str> {
        match self.location.kind {
            LocationKind::Planet | LocationKind::Moon => Some(&self.location.name),
            LocationKind::Space => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::test_support::*;
    use super::*;

    #[test]
    fn metadata_json_contents() {
        let value = json!({
            "discovery_type": "💎",
            "system_name": "Euclid",
            "location": "moon:Getre Beta",
            "description": "Shiny.",
            "username": "U",
            "resource_type": " Gold ",
            "economic_value": "High \"value\"",
            "discovery_name": "El Dorado",
            "coordinates": "not in metadata",
        });
        let report = ok(&value);
        assert_eq!(
            report.metadata_json(),
            r#"{"discovery_name":"El Dorado","economic_value":"High \"value\"","location_name":"Getre Beta","location_type":"moon","resource_type":"Gold"}"#
        );
        assert_eq!(report.location_column(), "Getre Beta");
        assert_eq!(report.planet_name(), Some("Getre Beta"));

        let report = ok(&with(record("🚀"), "location", json!("space:station:Alpha")));
        assert_eq!(
            report.metadata_json(),
            r#"{"location_name":"station:Alpha","location_type":"space"}"#
        );
        assert_eq!(report.location_column(), "station:Alpha");
        assert_eq!(report.planet_name(), None);

        // Paragraph text with line breaks and emoji survives the JSON round trip.
        let text = "Line 1\nLine 2\t🆕 字";
        let report = ok(&with(record("🆕"), "first_impressions", json!(text)));
        let metadata: Value = serde_json::from_str(&report.metadata_json()).expect("json");
        assert_eq!(metadata["first_impressions"], json!(text));
        assert_eq!(metadata["location_type"], json!("planet"));
        assert_eq!(metadata["location_name"], json!("Getre Beta"));
        assert!(metadata.get("discovery_name").is_none());
    }

    #[test]
    fn tags_json_text() {
        let report = ok(&with(record("🦴"), "tags", json!([" a ", "b \"c\"", "字"])));
        assert_eq!(report.tags_json().as_deref(), Some(r#"["a","b \"c\"","字"]"#));
    }
}
