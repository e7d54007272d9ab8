//! The rules a report must pass, whoever sends it: the Discord form,
//! `POST /discoveries` and `keeper submit` all go through
//! [`Report::from_json`], so they accept exactly the same reports, and the
//! mapping plugin relies on what was accepted here.
//!
//! Rules that shape the code:
//! - Input is hostile until checked: every value is type-checked, trimmed,
//!   length-checked in characters (what Discord counts and users see, never
//!   bytes) and screened for control characters.
//! - Content is never truncated or altered beyond trimming surrounding white
//!   space: a value that does not fit is an error, not silent loss.
//! - Errors name the field and are deterministic: the same input always gives
//!   the same first error (see [`Report::from_json`] for the order).
//! - The limits come from the data file (`host/discovery-types.toml`, see
//!   [`super::types`]), nothing here hard-codes one.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::FieldStyle::{self, Short};
use super::Report;
use super::error::ReportError;
use super::location::Location;
use super::types::{discovery_type, discovery_type_of_column, discovery_types, limits};

/// The keys a JSON record may have besides the 40 type-specific columns, in
/// the order they are checked (required ones first).
pub const COMMON_KEYS: [&str; 14] = [
    "discovery_type",
    "system_name",
    "location",
    "description",
    "username",
    "user_id",
    "guild_id",
    "coordinates",
    "condition",
    "time_period",
    "significance",
    "evidence_url",
    "tags",
    "discovery_name",
];

impl Report {
    /// Validates a JSON record and builds the report.
    ///
    /// Keys: `discovery_type`, `system_name`, `location`, `description`,
    /// `username` (required); `user_id`, `guild_id`, `coordinates`,
    /// `condition`, `time_period`, `significance`, `evidence_url`, `tags`,
    /// `discovery_name` (optional); and the record's type-specific columns.
    /// `null` is the same as absent; an optional value empty after trimming is
    /// absent.
    ///
    /// When several problems exist, the first one in this order is reported,
    /// so the same input always gives the same error whatever the key order of
    /// the JSON text: the required keys in the order above; then the optional
    /// keys in the order above; then the 40 type-specific columns in table
    /// order (a column of another type is rejected unless its value is absent
    /// or empty); then unknown keys, the smallest first.
    pub fn from_json(value: &Value) -> Result<Report, ReportError> {
        let obj = value
            .as_object()
            .ok_or(ReportError::NotAnObject { got: json_kind(value) })?;
        let input = Input { obj };
        let limits = limits();

        let raw_type = input.string("discovery_type")?.ok_or(ReportError::Required {
            field: "discovery_type",
        })?;
        let kind = discovery_type(raw_type).ok_or_else(|| ReportError::UnknownDiscoveryType {
            value: raw_type.to_owned(),
        })?;
        let system_name = input.required("system_name", limits.system_name, Short)?;
        let raw_location = input
            .string("location")?
            .ok_or(ReportError::Required { field: "location" })?;
        let location = Location::parse(raw_location)?;
        let description_spec = kind.description();
        let description = input.required(
            description_spec.column,
            description_spec.max_chars,
            description_spec.style,
        )?;
        let username = input.required("username", limits.username, Short)?;

        let user_id = input.discord_id("user_id")?.unwrap_or_default();
        let guild_id = input.discord_id("guild_id")?;
        let coordinates = input.optional("coordinates", limits.text, Short)?;
        let condition = input.optional("condition", limits.text, Short)?;
        let time_period = input.optional("time_period", limits.text, Short)?;
        let significance = input.optional("significance", limits.text, Short)?;
        let evidence_url = input.optional("evidence_url", limits.evidence_url, Short)?;
        if let Some(url) = &evidence_url
            && !is_http_url(url)
        {
            return Err(ReportError::BadUrl { field: "evidence_url" });
        }
        let tags = input.tags()?;
        let discovery_name = input.optional("discovery_name", limits.discovery_name, Short)?;

        let mut fields = BTreeMap::new();
        for owner in discovery_types() {
            for spec in owner.type_specific_fields() {
                if std::ptr::eq(owner, kind) {
                    if let Some(v) = input.optional(spec.column, spec.max_chars, spec.style)? {
                        fields.insert(spec.column.to_owned(), v);
                    }
                } else if input.is_given(spec.column) {
                    return Err(ReportError::NotAFieldOfType {
                        field: spec.column,
                        emoji: kind.emoji,
                        name: kind.name,
                    });
                }
            }
        }

        if let Some(key) = obj.keys().filter(|k| !is_known_key(k)).min() {
            return Err(ReportError::UnknownField { key: key.clone() });
        }

        Ok(Report {
            discovery_type: kind.emoji.to_owned(),
            system_name,
            location,
            description,
            username,
            user_id,
            guild_id,
            coordinates,
            condition,
            time_period,
            significance,
            evidence_url,
            discovery_name,
            tags,
            fields,
        })
    }
}

/// The JSON kind of a value, as error messages say it.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn is_known_key(key: &str) -> bool {
    COMMON_KEYS.contains(&key) || discovery_type_of_column(key).is_some()
}

/// `http://` or `https://` (scheme in any case, as URLs allow) followed by
/// something: other schemes (`javascript:`, `file:`) have no business in a
/// link that Control Room opens.
fn is_http_url(url: &str) -> bool {
    ["http://", "https://"].iter().any(|scheme| {
        url.get(..scheme.len()).is_some_and(|p| p.eq_ignore_ascii_case(scheme)) && url.len() > scheme.len()
    })
}

/// Checks a trimmed, non-empty value: length in characters, then control
/// characters (only `\n` and `\t`, and only in a paragraph).
pub(super) fn check_text(field: &'static str, value: &str, max: usize, style: FieldStyle) -> Result<(), ReportError> {
    let chars = value.chars().count();
    if chars > max {
        return Err(ReportError::TooLong { field, chars, max });
    }
    match forbidden_control(value, style) {
        Some((position, character)) => Err(ReportError::ControlCharacter {
            field,
            character,
            position,
        }),
        None => Ok(()),
    }
}

/// The first control character `style` does not allow, with its 1-based
/// position in characters.
fn forbidden_control(value: &str, style: FieldStyle) -> Option<(usize, char)> {
    value
        .chars()
        .enumerate()
        .find(|&(_, c)| c.is_control() && !(style.allows_line_breaks() && matches!(c, '\n' | '\t')))
        .map(|(i, c)| (i + 1, c))
}

/// Typed access to the record's keys.
struct Input<'a> {
    obj: &'a Map<String, Value>,
}

impl<'a> Input<'a> {
    /// The trimmed string under `key`: `None` when absent, null or empty after
    /// trimming; an error when it is not a string.
    fn string(&self, key: &'static str) -> Result<Option<&'a str>, ReportError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                let s = s.trim();
                Ok((!s.is_empty()).then_some(s))
            }
            Some(other) => Err(ReportError::WrongType {
                field: key,
                expected: "a string",
                got: json_kind(other),
            }),
        }
    }

    /// Whether `key` holds anything but null or white space (of any type).
    fn is_given(&self, key: &str) -> bool {
        match self.obj.get(key) {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) => !s.trim().is_empty(),
            Some(_) => true,
        }
    }

    fn required(&self, key: &'static str, max: usize, style: FieldStyle) -> Result<String, ReportError> {
        self.optional(key, max, style)?
            .ok_or(ReportError::Required { field: key })
    }

    fn optional(&self, key: &'static str, max: usize, style: FieldStyle) -> Result<Option<String>, ReportError> {
        match self.string(key)? {
            Some(value) => {
                check_text(key, value, max, style)?;
                Ok(Some(value.to_owned()))
            }
            None => Ok(None),
        }
    }

    /// A Discord id: digits only, because the store and the sync compare
    /// them as text and a stray letter would never match.
    fn discord_id(&self, key: &'static str) -> Result<Option<String>, ReportError> {
        let id = self.optional(key, limits().discord_id, Short)?;
        if let Some(id) = &id
            && !id.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(ReportError::NotDigits { field: key });
        }
        Ok(id)
    }

    /// `tags`: an array of strings; each trimmed, empty ones dropped, each
    /// checked, then the count.
    fn tags(&self) -> Result<Vec<String>, ReportError> {
        let items = match self.obj.get("tags") {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(ReportError::WrongType {
                    field: "tags",
                    expected: "an array of strings",
                    got: json_kind(other),
                });
            }
        };
        let mut tags = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let Value::String(tag) = item else {
                return Err(ReportError::TagNotAString {
                    index,
                    got: json_kind(item),
                });
            };
            let tag = tag.trim();
            if tag.is_empty() {
                continue;
            }
            let chars = tag.chars().count();
            if chars > limits().tag_chars {
                return Err(ReportError::TagTooLong {
                    index,
                    chars,
                    max: limits().tag_chars,
                });
            }
            if let Some((position, character)) = forbidden_control(tag, Short) {
                return Err(ReportError::TagControlCharacter {
                    index,
                    character,
                    position,
                });
            }
            tags.push(tag.to_owned());
        }
        if tags.len() > limits().tags {
            return Err(ReportError::TooManyTags {
                count: tags.len(),
                max: limits().tags,
            });
        }
        Ok(tags)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::LocationKind;
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn valid_record_round_trip_for_each_type() {
        for t in discovery_types() {
            let mut value = json!({
                "discovery_type": t.emoji.replace('\u{FE0F}', ""),
                "system_name": "  Hilbert Dimension ",
                "location": "Moon: Getre Beta ",
                "description": "\n Line one\n\tLine two  ",
                "username": "Explorer",
                "user_id": "123456789012345678",
                "guild_id": "876543210987654321",
                "coordinates": "0123:4567:89AB:CDEF",
                "condition": "Pristine",
                "time_period": "Ancient",
                "significance": "High",
                "evidence_url": "https://cdn.example.com/a.png",
                "tags": ["fossil", "  ", " rare "],
                "discovery_name": "The Big One",
            });
            for (i, f) in t.type_specific_fields().iter().enumerate() {
                value = with(value, f.column, json!(format!(" value {i} of {} ", f.column)));
            }
            let report = ok(&value);
            assert_eq!(report.discovery_type, t.emoji, "canonical emoji");
            assert_eq!(report.system_name, "Hilbert Dimension");
            assert_eq!(
                report.location,
                Location {
                    kind: LocationKind::Moon,
                    name: "Getre Beta".into()
                }
            );
            assert_eq!(report.description, "Line one\n\tLine two");
            assert_eq!(report.user_id, "123456789012345678");
            assert_eq!(report.guild_id.as_deref(), Some("876543210987654321"));
            assert_eq!(report.tags, ["fossil", "rare"]);
            assert_eq!(report.discovery_name.as_deref(), Some("The Big One"));
            assert_eq!(report.fields.len(), 4);
            for (i, f) in t.type_specific_fields().iter().enumerate() {
                assert_eq!(
                    report.fields.get(f.column).map(String::as_str),
                    Some(format!("value {i} of {}", f.column).as_str())
                );
            }
            assert_eq!(report.discovery().map(|d| d.emoji), Some(t.emoji));
            assert_eq!(report.location_column(), "Getre Beta");
            assert_eq!(report.planet_name(), Some("Getre Beta"));
            assert_eq!(report.tags_json().as_deref(), Some(r#"["fossil","rare"]"#));

            let again = ok(&report.to_json());
            assert_eq!(again, report);

            let metadata: Value = serde_json::from_str(&report.metadata_json()).expect("json");
            let obj = metadata.as_object().expect("object");
            assert_eq!(obj.len(), 4 + 3);
            for f in t.type_specific_fields() {
                assert!(obj.contains_key(f.column));
            }
        }
    }

    #[test]
    fn minimal_record() {
        let report = ok(&record("🦴"));
        assert_eq!(report.user_id, "");
        assert_eq!(report.guild_id, None);
        assert_eq!(report.coordinates, None);
        assert!(report.tags.is_empty());
        assert_eq!(report.tags_json(), None);
        assert!(report.fields.is_empty());
        assert_eq!(ok(&report.to_json()), report);
    }

    #[test]
    fn null_and_blank_optionals_are_absent() {
        let mut value = record("💎");
        for key in [
            "user_id",
            "guild_id",
            "coordinates",
            "evidence_url",
            "tags",
            "discovery_name",
            "resource_type",
        ] {
            value = with(value, key, Value::Null);
        }
        value = with(value, "condition", json!(" \t\n "));
        value = with(value, "deposit_richness", json!("   "));
        value = with(value, "tags", json!(["", " "]));
        let report = ok(&value);
        assert_eq!(report, ok(&record("💎")));
    }

    #[test]
    fn columns_of_another_type_are_fine_when_absent_or_blank() {
        let value = with(record("💎"), "species_type", Value::Null);
        let value = with(value, "ship_class", json!("  "));
        assert!(ok(&value).fields.is_empty());
    }

    #[test]
    fn inner_content_is_kept_as_is() {
        let text = "a  b\t\tc\n\n\nd 'x' \"y\" \\ <script> ; DROP TABLE discoveries; --\u{2028}";
        let value = with(record("📜"), "description", json!(text));
        let value = with(value, "key_excerpt", json!(text));
        let report = ok(&value);
        assert_eq!(report.description, text.trim());
        assert_eq!(report.fields["key_excerpt"], text.trim());
    }

    #[test]
    fn not_an_object() {
        assert_eq!(err(&json!([])), ReportError::NotAnObject { got: "an array" });
        assert_eq!(err(&json!("x")).field(), None);
        assert_eq!(msg(&Value::Null), "a report must be a JSON object, got null");
    }

    #[test]
    fn required_fields() {
        for key in ["discovery_type", "system_name", "location", "description", "username"] {
            for value in [
                without(record("🦴"), key),
                with(record("🦴"), key, Value::Null),
                with(record("🦴"), key, json!(" \n\t ")),
            ] {
                assert_eq!(err(&value), ReportError::Required { field: key });
                assert_eq!(msg(&value), format!("{key}: required"));
                assert_eq!(err(&value).field(), Some(key));
            }
        }
    }

    #[test]
    fn values_must_be_strings() {
        let e = err(&with(record("🦴"), "system_name", json!(5)));
        assert_eq!(e.to_string(), "system_name: expected a string, got a number");
        assert_eq!(e.field(), Some("system_name"));
        assert_eq!(
            msg(&with(record("🦴"), "description", json!(["a"]))),
            "description: expected a string, got an array"
        );
        assert_eq!(
            msg(&with(record("🦴"), "discovery_type", json!({"emoji": "🦴"}))),
            "discovery_type: expected a string, got an object"
        );
        assert_eq!(
            msg(&with(record("🦴"), "coordinates", json!(true))),
            "coordinates: expected a string, got a boolean"
        );
        assert_eq!(
            msg(&with(record("🦴"), "user_id", json!(123456))),
            "user_id: expected a string, got a number"
        );
        assert_eq!(
            msg(&with(record("🦴"), "species_type", json!(1.5))),
            "species_type: expected a string, got a number"
        );
        assert_eq!(
            msg(&with(record("🦴"), "tags", json!("a,b"))),
            "tags: expected an array of strings, got a string"
        );
        let e = err(&with(record("🦴"), "tags", json!(["a", 2])));
        assert_eq!(
            e,
            ReportError::TagNotAString {
                index: 1,
                got: "a number"
            }
        );
        assert_eq!(e.to_string(), "tags[1]: expected a string, got a number");
        assert_eq!(e.field(), Some("tags"));
        assert_eq!(
            msg(&with(record("🦴"), "tags", json!([null]))),
            "tags[0]: expected a string, got null"
        );
    }

    #[test]
    fn unknown_field() {
        let e = err(&with(record("🦴"), "foo", json!("bar")));
        assert_eq!(e.to_string(), "unknown field \"foo\"");
        assert_eq!(e.field(), Some("foo"));
        // Even null: the key itself is wrong (probably a typo).
        assert_eq!(
            msg(&with(record("🦴"), "descripton", Value::Null)),
            "unknown field \"descripton\""
        );
        for key in [
            "id",
            "metadata",
            "location_type",
            "planet_name",
            "submission_timestamp",
            "Description",
        ] {
            assert_eq!(err(&with(record("🦴"), key, json!("x"))).field(), Some(key));
        }
    }

    #[test]
    fn unknown_field_is_quoted_safely() {
        let e = err(&with(record("🦴"), "a\"b\nc", json!("x")));
        assert_eq!(e.to_string(), r#"unknown field "a\"b\nc""#);
        let long = "k".repeat(100);
        let e = err(&with(record("🦴"), &long, json!("x")));
        assert_eq!(
            e.to_string(),
            format!("unknown field \"{}\" (and 60 more characters)", "k".repeat(40))
        );
        assert_eq!(e.field(), Some(long.as_str()));
    }

    #[test]
    fn column_of_another_type() {
        let e = err(&with(record("💎"), "species_type", json!("Big")));
        assert_eq!(e.to_string(), "species_type: not a field of 💎 (Minerals & Resources)");
        assert_eq!(e.field(), Some("species_type"));
        // Whatever its type: the key is wrong for this record.
        assert_eq!(
            msg(&with(record("🦴"), "resource_type", json!(3))),
            "resource_type: not a field of 🦴 (Ancient Bones & Fossils)"
        );
    }

    #[test]
    fn unknown_discovery_type() {
        let e = err(&with(record("🦴"), "discovery_type", json!("X")));
        assert_eq!(
            e.to_string(),
            "discovery_type: \"X\" is not one of 🦴 fossil, 📜 log, 🏛️ ruins, ⚙️ tech, 🦗 species, 💎 mineral, 🚀 ship, ⚡ hazard, 🆕 update, 📖 lore"
        );
        assert_eq!(e.field(), Some("discovery_type"));
        assert_eq!(e, ReportError::UnknownDiscoveryType { value: "X".into() });
        // Long names are not accepted; short names are, and stored as the emoji.
        assert!(Report::from_json(&with(record("🦴"), "discovery_type", json!("Minerals & Resources"))).is_err());
        let by_name = Report::from_json(&with(record("🦴"), "discovery_type", json!("fossil"))).unwrap();
        assert_eq!(by_name.discovery_type, "🦴");
    }

    #[test]
    fn bad_location() {
        for bad in ["Getre Beta", "star:Sol", ":x", "planetGetre"] {
            let e = err(&with(record("🦴"), "location", json!(bad)));
            assert_eq!(e.to_string(), "location: expected planet:NAME, moon:NAME or space:NAME");
            assert_eq!(e.field(), Some("location"));
        }
        assert_eq!(
            msg(&with(record("🦴"), "location", json!("planet:  "))),
            "location: no name after \"planet:\""
        );
        assert_eq!(
            msg(&with(record("🦴"), "location", json!("space:station: "))),
            "location: no name after \"space:station:\""
        );
        assert_eq!(
            err(&with(record("🦴"), "location", json!("moon:a\u{1b}b"))),
            ReportError::ControlCharacter {
                field: "location",
                character: '\u{1b}',
                position: 2
            }
        );
    }

    #[test]
    fn type_specific_too_long() {
        let e = err(&with(record("🦴"), "species_type", json!("x".repeat(205))));
        assert_eq!(e.to_string(), "species_type: 205 characters, the limit is 200");
        assert_eq!(e.field(), Some("species_type"));
    }

    #[test]
    fn common_field_limits() {
        let cases: [(&str, usize); 9] = [
            ("system_name", 100),
            ("username", 100),
            ("coordinates", 200),
            ("condition", 200),
            ("time_period", 200),
            ("significance", 200),
            ("discovery_name", 200),
            ("description", 1000),
            ("user_id", 32),
        ];
        for (key, max) in cases {
            let fill = if key == "user_id" { "7" } else { "漢" };
            assert!(
                Report::from_json(&with(record("🦴"), key, json!(fill.repeat(max)))).is_ok(),
                "{key}"
            );
            assert_eq!(
                err(&with(record("🦴"), key, json!(fill.repeat(max + 1)))),
                ReportError::TooLong {
                    field: key,
                    chars: max + 1,
                    max
                },
                "{key}"
            );
        }
        let url = format!("https://e.com/{}", "a".repeat(2000 - 14));
        assert_eq!(url.chars().count(), 2000);
        assert!(Report::from_json(&with(record("🦴"), "evidence_url", json!(url))).is_ok());
        assert_eq!(
            msg(&with(record("🦴"), "evidence_url", json!(format!("{url}a")))),
            "evidence_url: 2001 characters, the limit is 2000"
        );
    }

    #[test]
    fn unicode_counted_as_chars_at_the_boundary() {
        // 4-byte emoji: 1000 of them are 4000 bytes, still 1000 characters.
        let at = "💎".repeat(1000);
        let report = ok(&with(record("💎"), "description", json!(format!("  {at}\n"))));
        assert_eq!(report.description, at);
        assert_eq!(
            err(&with(record("💎"), "description", json!(format!("{at}💎")))),
            ReportError::TooLong {
                field: "description",
                chars: 1001,
                max: 1000
            }
        );
        // CJK, 3 bytes each.
        let at = "漢".repeat(200);
        assert!(Report::from_json(&with(record("💎"), "resource_type", json!(at.clone()))).is_ok());
        assert_eq!(
            msg(&with(record("💎"), "resource_type", json!(format!("{at}字")))),
            "resource_type: 201 characters, the limit is 200"
        );
        let at = "字".repeat(500);
        assert!(Report::from_json(&with(record("📜"), "key_excerpt", json!(at.clone()))).is_ok());
        assert_eq!(
            msg(&with(record("📜"), "key_excerpt", json!(format!("{at}字")))),
            "key_excerpt: 501 characters, the limit is 500"
        );
        // A variation selector is a character of its own.
        let at = "⚙️".repeat(100);
        assert_eq!(at.chars().count(), 200);
        assert!(Report::from_json(&with(record("⚙️"), "tech_category", json!(at.clone()))).is_ok());
        assert!(Report::from_json(&with(record("⚙️"), "tech_category", json!(format!("{at}x")))).is_err());
        // Tags.
        let at = "日".repeat(50);
        assert_eq!(
            ok(&with(record("🦴"), "tags", json!([&at]))).tags,
            std::slice::from_ref(&at)
        );
        let e = err(&with(record("🦴"), "tags", json!(["ok", format!("{at}日")])));
        assert_eq!(
            e,
            ReportError::TagTooLong {
                index: 1,
                chars: 51,
                max: 50
            }
        );
        assert_eq!(e.to_string(), "tags[1]: 51 characters, the limit is 50");
    }

    #[test]
    fn discord_ids_are_digits() {
        for key in ["user_id", "guild_id"] {
            for bad in ["12a4", "-1", "1 2", "１２３", "0x10"] {
                let e = err(&with(record("🦴"), key, json!(bad)));
                assert_eq!(e, ReportError::NotDigits { field: key }, "{bad}");
                assert_eq!(e.to_string(), format!("{key}: must be ASCII digits (a Discord id)"));
            }
        }
        assert_eq!(ok(&with(record("🦴"), "user_id", json!(" 42 "))).user_id, "42");
    }

    #[test]
    fn evidence_url_scheme() {
        for bad in [
            "ftp://x.org/a",
            "javascript:alert(1)",
            "www.example.com",
            "https://",
            "http:/x",
            "file:///etc/passwd",
        ] {
            let e = err(&with(record("🦴"), "evidence_url", json!(bad)));
            assert_eq!(
                e.to_string(),
                "evidence_url: must start with http:// or https://",
                "{bad}"
            );
            assert_eq!(e.field(), Some("evidence_url"));
        }
        for good in ["http://x.org", "https://x.org/a?b=c", "HTTPS://X.ORG"] {
            assert_eq!(
                ok(&with(record("🦴"), "evidence_url", json!(good)))
                    .evidence_url
                    .as_deref(),
                Some(good)
            );
        }
    }

    #[test]
    fn tags_rules() {
        let tags: Vec<String> = (0..limits().tags).map(|i| format!("t{i}")).collect();
        assert_eq!(ok(&with(record("🦴"), "tags", json!(tags))).tags.len(), 20);
        let mut too_many = tags.clone();
        too_many.push("one more".into());
        let e = err(&with(record("🦴"), "tags", json!(too_many)));
        assert_eq!(e.to_string(), "tags: 21 tags, the limit is 20");
        assert_eq!(e.field(), Some("tags"));
        // Blank entries do not count.
        let mut padded = tags;
        padded.extend(["".to_owned(), "  ".to_owned()]);
        assert!(Report::from_json(&with(record("🦴"), "tags", json!(padded))).is_ok());
        let e = err(&with(record("🦴"), "tags", json!(["a\u{0}b"])));
        assert_eq!(
            e,
            ReportError::TagControlCharacter {
                index: 0,
                character: '\0',
                position: 2
            }
        );
        assert_eq!(
            e.to_string(),
            "tags[0]: control character U+0000 at character 2 is not allowed"
        );
        assert!(Report::from_json(&with(record("🦴"), "tags", json!(["a\nb"]))).is_err());
        assert_eq!(ok(&with(record("🦴"), "tags", json!([]))).tags_json(), None);
    }

    #[test]
    fn control_characters() {
        // Allowed: \n and \t in the description and in paragraph fields.
        let report = ok(&with(record("📜"), "description", json!("a\nb\tc")));
        assert_eq!(report.description, "a\nb\tc");
        assert!(Report::from_json(&with(record("📜"), "key_excerpt", json!("a\n\tb"))).is_ok());
        assert!(Report::from_json(&with(record("🆕"), "first_impressions", json!("a\n\tb"))).is_ok());

        let e = err(&with(record("📜"), "username", json!("bad\u{7}name")));
        assert_eq!(
            e.to_string(),
            "username: control character U+0007 at character 4 is not allowed"
        );
        assert_eq!(e.field(), Some("username"));

        let rejected: [(&str, &str, &str); 10] = [
            ("📜", "description", "a\rb"),
            ("📜", "description", "a\u{0}b"),
            ("📜", "description", "a\u{85}b"),
            ("📜", "key_excerpt", "a\u{1b}[31mb"),
            ("📜", "language_status", "a\nb"),
            ("📜", "completeness", "a\tb"),
            ("📜", "system_name", "a\nb"),
            ("📜", "coordinates", "a\u{7f}b"),
            ("📜", "discovery_name", "a\u{9f}b"),
            ("📜", "significance", "a\u{8}b"),
        ];
        for (emoji, key, value) in rejected {
            let e = err(&with(record(emoji), key, json!(value)));
            assert!(
                matches!(e, ReportError::ControlCharacter { field, position: 2, .. } if field == key),
                "{key} {value:?}: {e}"
            );
        }
        // Leading and trailing white space (including line breaks) is trimmed, not refused.
        assert_eq!(
            ok(&with(record("📜"), "system_name", json!("\n Euclid \r\n"))).system_name,
            "Euclid"
        );
    }

    #[test]
    fn first_error_is_deterministic() {
        // Required fields come first, in their fixed order.
        assert_eq!(msg(&json!({})), "discovery_type: required");
        assert_eq!(msg(&json!({"zzz": 1, "username": 5})), "discovery_type: required");
        let value = with(without(record("🦴"), "description"), "foo", json!(1));
        let value = with(value, "username", json!("x".repeat(500)));
        assert_eq!(msg(&value), "description: required");
        let value = with(without(record("🦴"), "system_name"), "location", json!("nowhere"));
        assert_eq!(msg(&value), "system_name: required");
        // Then the optional keys, before the type-specific ones.
        let value = with(record("🦴"), "species_type", json!("x".repeat(201)));
        let value = with(value, "evidence_url", json!("ftp://a"));
        assert_eq!(err(&value).field(), Some("evidence_url"));
        let value = with(value, "coordinates", json!(1));
        assert_eq!(err(&value).field(), Some("coordinates"));
        // Then the type-specific columns in table order, before unknown keys.
        let value = with(record("🦴"), "estimated_age", json!("x".repeat(201)));
        let value = with(value, "size_scale", json!("x".repeat(201)));
        let value = with(value, "aaa", json!("x"));
        assert_eq!(err(&value).field(), Some("size_scale"));
        // Unknown keys: the smallest, whatever the order in the text.
        for text in [
            r#"{"discovery_type":"🦴","system_name":"S","location":"space:X","description":"D","username":"U","zeta":1,"alpha":2}"#,
            r#"{"alpha":2,"zeta":1,"discovery_type":"🦴","system_name":"S","location":"space:X","description":"D","username":"U"}"#,
        ] {
            let value: Value = serde_json::from_str(text).expect("json");
            assert_eq!(msg(&value), "unknown field \"alpha\"");
        }
    }
}
