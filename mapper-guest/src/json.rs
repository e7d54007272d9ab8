//! JSON texts read without building more than the mapping keeps: what
//! kind of value a text holds (`tags`, of which only the text is kept), and
//! the entries of the `metadata` object, their keys and texts borrowed from
//! the row where they have no escapes. Both fail on invalid JSON with
//! serde_json's own message, as parsing into a `serde_json::Value` would.

use std::borrow::Cow;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

pub const JSON_ARRAY: &str = "a JSON array";
pub const JSON_OBJECT: &str = "a JSON object";

/// Words for what kind of JSON value something is, in error messages.
mod kind {
    pub const NULL: &str = "null";
    pub const BOOLEAN: &str = "a boolean";
    pub const NUMBER: &str = "a number";
    pub const STRING: &str = "a string";
}

/// What kind of JSON value a text holds, found by reading it through.
pub struct JsonKind(pub &'static str);

impl<'de> Deserialize<'de> for JsonKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(KindVisitor)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = JsonKind;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<JsonKind, E> {
        Ok(JsonKind(kind::NULL))
    }

    fn visit_bool<E>(self, _: bool) -> Result<JsonKind, E> {
        Ok(JsonKind(kind::BOOLEAN))
    }

    fn visit_i64<E>(self, _: i64) -> Result<JsonKind, E> {
        Ok(JsonKind(kind::NUMBER))
    }

    fn visit_u64<E>(self, _: u64) -> Result<JsonKind, E> {
        Ok(JsonKind(kind::NUMBER))
    }

    fn visit_f64<E>(self, _: f64) -> Result<JsonKind, E> {
        Ok(JsonKind(kind::NUMBER))
    }

    fn visit_str<E>(self, _: &str) -> Result<JsonKind, E> {
        Ok(JsonKind(kind::STRING))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonKind, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(JsonKind(JSON_ARRAY))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonKind, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(JsonKind(JSON_OBJECT))
    }
}

/// A value in the `metadata` object.
#[derive(Debug)]
pub enum MetaValue<'t> {
    Null,
    Text(Cow<'t, str>),
    /// A number or a boolean, as its JSON text.
    Scalar(String),
    /// An array or an object, by its kind's words.
    Nested(&'static str),
}

impl<'de> Deserialize<'de> for MetaValue<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(MetaValueVisitor)
    }
}

struct MetaValueVisitor;

impl<'de> Visitor<'de> for MetaValueVisitor {
    type Value = MetaValue<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<MetaValue<'de>, E> {
        Ok(MetaValue::Null)
    }

    fn visit_bool<E>(self, flag: bool) -> Result<MetaValue<'de>, E> {
        Ok(MetaValue::Scalar(flag.to_string()))
    }

    fn visit_i64<E>(self, number: i64) -> Result<MetaValue<'de>, E> {
        Ok(MetaValue::Scalar(number.to_string()))
    }

    fn visit_u64<E>(self, number: u64) -> Result<MetaValue<'de>, E> {
        Ok(MetaValue::Scalar(number.to_string()))
    }

    /// Written as serde_json writes the number it parsed (`1.5e6` is
    /// `1500000.0`).
    fn visit_f64<E: de::Error>(self, number: f64) -> Result<MetaValue<'de>, E> {
        serde_json::Number::from_f64(number)
            .map(|number| MetaValue::Scalar(number.to_string()))
            .ok_or_else(|| E::custom("a number JSON cannot hold"))
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<MetaValue<'de>, E> {
        Ok(MetaValue::Text(Cow::Borrowed(text)))
    }

    fn visit_str<E>(self, text: &str) -> Result<MetaValue<'de>, E> {
        Ok(MetaValue::Text(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E>(self, text: String) -> Result<MetaValue<'de>, E> {
        Ok(MetaValue::Text(Cow::Owned(text)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<MetaValue<'de>, A::Error> {
        KindVisitor.visit_seq(seq).map(|JsonKind(kind)| MetaValue::Nested(kind))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MetaValue<'de>, A::Error> {
        KindVisitor.visit_map(map).map(|JsonKind(kind)| MetaValue::Nested(kind))
    }
}

/// A key of the `metadata` object, borrowed where it has no escapes.
struct Key<'t>(Cow<'t, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(text)))
    }

    fn visit_str<E>(self, text: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E>(self, text: String) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(text)))
    }
}

/// A JSON text expected to hold an object: its entries (a key given twice
/// keeps its last value, as `serde_json::Map` does), or what it holds instead.
pub enum TopLevel<'t> {
    Object(Vec<(Cow<'t, str>, MetaValue<'t>)>),
    Other(&'static str),
}

impl<'de> Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TopLevelVisitor)
    }
}

struct TopLevelVisitor;

impl<'de> Visitor<'de> for TopLevelVisitor {
    type Value = TopLevel<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<TopLevel<'de>, E> {
        Ok(TopLevel::Other(kind::NULL))
    }

    fn visit_bool<E>(self, _: bool) -> Result<TopLevel<'de>, E> {
        Ok(TopLevel::Other(kind::BOOLEAN))
    }

    fn visit_i64<E>(self, _: i64) -> Result<TopLevel<'de>, E> {
        Ok(TopLevel::Other(kind::NUMBER))
    }

    fn visit_u64<E>(self, _: u64) -> Result<TopLevel<'de>, E> {
        Ok(TopLevel::Other(kind::NUMBER))
    }

    fn visit_f64<E>(self, _: f64) -> Result<TopLevel<'de>, E> {
        Ok(TopLevel::Other(kind::NUMBER))
    }

    fn visit_str<E>(self, _: &str) -> Result<TopLevel<'de>, E> {
        Ok(TopLevel::Other(kind::STRING))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<TopLevel<'de>, A::Error> {
        KindVisitor.visit_seq(seq).map(|JsonKind(kind)| TopLevel::Other(kind))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel<'de>, A::Error> {
        let mut entries: Vec<(Cow<'de, str>, MetaValue<'de>)> = Vec::new();
        while let Some(Key(key)) = map.next_key()? {
            let value: MetaValue<'de> = map.next_value()?;
            match entries.iter_mut().find(|(known, _)| *known == key) {
                Some((_, earlier)) => *earlier = value,
                None => entries.push((key, value)),
            }
        }
        Ok(TopLevel::Object(entries))
    }
}
