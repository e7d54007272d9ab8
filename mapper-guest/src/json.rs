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
        match deserializer.deserialize_any(ObjectOrKind(SkipEntries))? {
            Read::Object(()) => Ok(JsonKind(JSON_OBJECT)),
            Read::Other(kind) => Ok(JsonKind(kind)),
        }
    }
}

/// A JSON value read as an object (through `R`) or, being anything else,
/// as its kind.
enum Read<T> {
    Object(T),
    Other(&'static str),
}

/// How [`ObjectOrKind`] reads an object's entries.
trait ReadEntries<'de> {
    type Output;
    fn read<A: MapAccess<'de>>(self, map: A) -> Result<Self::Output, A::Error>;
}

/// Reads an object's entries through without keeping them.
struct SkipEntries;

impl<'de> ReadEntries<'de> for SkipEntries {
    type Output = ();

    fn read<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

/// The visitor behind [`Read`]: every value but an object is only named.
struct ObjectOrKind<R>(R);

impl<'de, R: ReadEntries<'de>> Visitor<'de> for ObjectOrKind<R> {
    type Value = Read<R::Output>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Read::Other(kind::NULL))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Read::Other(kind::BOOLEAN))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Read::Other(kind::NUMBER))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Read::Other(kind::NUMBER))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Read::Other(kind::NUMBER))
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Read::Other(kind::STRING))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Read::Other(JSON_ARRAY))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.read(map).map(Read::Object)
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

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MetaValue<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(MetaValue::Nested(JSON_ARRAY))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MetaValue<'de>, A::Error> {
        SkipEntries.read(map).map(|()| MetaValue::Nested(JSON_OBJECT))
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
        match deserializer.deserialize_any(ObjectOrKind(KeepEntries))? {
            Read::Object(entries) => Ok(TopLevel::Object(entries)),
            Read::Other(kind) => Ok(TopLevel::Other(kind)),
        }
    }
}

/// Keeps an object's entries, a key given twice with its last value.
struct KeepEntries;

impl<'de> ReadEntries<'de> for KeepEntries {
    type Output = Vec<(Cow<'de, str>, MetaValue<'de>)>;

    fn read<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Output, A::Error> {
        let mut entries: Self::Output = Vec::new();
        while let Some(Key(key)) = map.next_key()? {
            let value: MetaValue<'de> = map.next_value()?;
            match entries.iter_mut().find(|(known, _)| *known == key) {
                Some((_, earlier)) => *earlier = value,
                None => entries.push((key, value)),
            }
        }
        Ok(entries)
    }
}
