//! The body of `POST /discoveries`, documented from the report rules
//! themselves (`report::discovery_types()` and `report::limits()`, from the
//! discovery types' data file), so the
//! document cannot drift from what is accepted.
//!
//! The body is taken as raw JSON and validated by `Report::from_json`, exactly
//! like `keeper submit --json`: poem-openapi's own parsing would give other
//! messages than the CLI and the bot. The schema states the shape (keys,
//! types, the emoji list, which keys are required, no other keys); limits that
//! depend on trimming or on the discovery type are in the descriptions, so
//! that nothing the schema allows is refused for a reason it does not mention
//! except those rules.

use std::borrow::Cow;
use std::sync::LazyLock;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ParseFromJSON, ParseResult, ToJSON, Type};
use serde_json::Value;

use crate::report::{COMMON_KEYS, discovery_types, limits};

const NAME: &str = "DiscoveryReport";

/// One report as sent; validated by the handler.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportBody(pub Value);

fn text(description: String, nullable: bool) -> MetaSchemaRef {
    MetaSchemaRef::Inline(Box::new(MetaSchema {
        description: Some(Box::leak(description.into_boxed_str())),
        nullable,
        ..MetaSchema::new("string")
    }))
}

fn common_description(key: &str) -> String {
    let limits = limits();
    let longest_description = discovery_types()
        .iter()
        .map(|t| t.description().max_chars)
        .max()
        .unwrap_or_default();
    match key {
        "system_name" => format!("The star system; at most {} characters.", limits.system_name),
        "location" => {
            format!(
                "`planet:NAME`, `moon:NAME` or `space:NAME`; NAME at most {} characters.",
                limits.location_name
            )
        }
        "description" => format!("What was found; at most {longest_description} characters (less for some types)."),
        "username" => format!("The reporter's name; at most {} characters.", limits.username),
        "user_id" | "guild_id" => format!("A Discord id: ASCII digits, at most {}.", limits.discord_id),
        "evidence_url" => format!(
            "An http:// or https:// link; at most {} characters.",
            limits.evidence_url
        ),
        "discovery_name" => format!(
            "The discovery's own name; at most {} characters.",
            limits.discovery_name
        ),
        _ => format!("At most {} characters.", limits.text),
    }
}

fn schema() -> MetaSchema {
    let mut properties = Vec::new();
    for key in COMMON_KEYS {
        let schema = match key {
            "discovery_type" => MetaSchemaRef::Inline(Box::new(MetaSchema {
                description: Some("One of the ten discovery types, by its emoji."),
                enum_items: discovery_types().iter().map(|t| Value::from(t.emoji)).collect(),
                ..MetaSchema::new("string")
            })),
            "tags" => MetaSchemaRef::Inline(Box::new(MetaSchema {
                description: Some(Box::leak(
                    format!(
                        "At most {} tags of at most {} characters.",
                        limits().tags,
                        limits().tag_chars
                    )
                    .into_boxed_str(),
                )),
                items: Some(Box::new(MetaSchemaRef::Inline(Box::new(MetaSchema::new("string"))))),
                nullable: true,
                ..MetaSchema::new("array")
            })),
            other => text(common_description(other), !REQUIRED.contains(&other)),
        };
        properties.push((key, schema));
    }
    for kind in discovery_types() {
        for field in kind.type_specific_fields() {
            let description = format!(
                "Only for {kind}: {}; at most {} characters.",
                field.label, field.max_chars
            );
            properties.push((field.column, text(description, true)));
        }
    }
    MetaSchema {
        description: Some(
            "A discovery report: the record of `keeper submit --json`. `null` is the same as absent. \
             The type-specific fields of the report's discovery type may be given; those of another \
             type, and keys not listed here, are refused.",
        ),
        required: REQUIRED.to_vec(),
        properties,
        // The smallest report that is accepted: what Swagger UI's "Try it
        // out" starts from (the generated-client test in tests/api.rs posts it).
        example: Some(serde_json::json!({
            "discovery_type": "🦴",
            "system_name": "Oculi",
            "location": "planet:Erren",
            "description": "Ribcage in a cave",
            "username": "Explorer#1234"
        })),
        ..MetaSchema::new("object")
    }
}

/// Built once: descriptions are formatted, and the registry wants `'static` text.
static SCHEMA: LazyLock<MetaSchema> = LazyLock::new(schema);

/// The keys every report needs.
const REQUIRED: [&str; 5] = ["discovery_type", "system_name", "location", "description", "username"];

impl Type for ReportBody {
    const IS_REQUIRED: bool = true;

    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        NAME.into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Reference(NAME.to_owned())
    }

    fn register(registry: &mut Registry) {
        registry.create_schema::<Self, _>(NAME.to_owned(), |_| SCHEMA.clone());
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ParseFromJSON for ReportBody {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        Ok(ReportBody(value.unwrap_or_default()))
    }
}

impl ToJSON for ReportBody {
    fn to_json(&self) -> Option<Value> {
        Some(self.0.clone())
    }
}
