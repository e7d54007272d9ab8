//! Reading typed values out of a keeper.db row and its `metadata` object.
//!
//! Every accessor applies MAPPING.md's text rules (trim surrounding white
//! space; an optional value that is empty after trimming is absent) so the
//! column table in `mapping.rs` never has to repeat them.

use std::borrow::Cow;

use crate::json::{JSON_ARRAY, JSON_OBJECT, JsonKind, MetaValue, TopLevel};
use crate::model::{MappingError, Value};

/// The keeper.db columns the mapping reads; an [`Input`] indexes it.
pub const INPUT_COLUMNS: [&str; 19] = [
    "discovery_type",
    "description",
    "metadata",
    "tags",
    "location",
    "planet_name",
    "system_name",
    "coordinates",
    "condition",
    "time_period",
    "significance",
    "evidence_url",
    "username",
    "user_id",
    "guild_id",
    "submission_timestamp",
    "pattern_matches",
    "mystery_tier",
    "analysis_status",
];

/// A keeper.db column the mapping reads, by its place in [`INPUT_COLUMNS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Input(usize);

impl Input {
    /// The column `name`; evaluated at compile time by [`input!`], where a
    /// name not in [`INPUT_COLUMNS`] fails the build.
    pub const fn named(name: &str) -> Input {
        Input(crate::names::index_of(&INPUT_COLUMNS, name))
    }

    /// Its keeper.db name, for error messages.
    pub fn name(self) -> &'static str {
        INPUT_COLUMNS[self.0]
    }
}

/// The [`Input`] named by a literal, found at compile time.
macro_rules! input {
    ($name:literal) => {{
        const INPUT: $crate::source::Input = $crate::source::Input::named($name);
        INPUT
    }};
}

/// Where each of [`INPUT_COLUMNS`] is in rows with given column names
/// (`None`: the row has no such column, and it reads as NULL). Found once
/// per set of names: by position, once for all the rows of an instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InputPositions([Option<usize>; INPUT_COLUMNS.len()]);

impl InputPositions {
    /// Should a name appear twice (the contract forbids it), the first
    /// wins, so the result is still deterministic.
    pub fn of<'n>(names: impl Iterator<Item = &'n str> + Clone) -> InputPositions {
        let mut positions = [None; INPUT_COLUMNS.len()];
        for (position, wanted) in positions.iter_mut().zip(INPUT_COLUMNS) {
            *position = names.clone().position(|name| name == wanted);
        }
        InputPositions(positions)
    }

    fn position(&self, input: Input) -> Option<usize> {
        self.0[input.0]
    }
}

/// A keeper.db `discoveries` row as the host passed it.
pub struct SourceRow<'a> {
    positions: Cow<'a, InputPositions>,
    values: Values<'a>,
}

/// How the host passed the row: named (`map`, borrowed) or by position
/// (`map-values`, the values owned, so that a text copied to the output
/// as it is moves there instead of being copied).
enum Values<'a> {
    Named(&'a [(String, Value)]),
    ByPosition(Vec<Value>),
}

impl<'a> SourceRow<'a> {
    pub fn new(columns: &'a [(String, Value)]) -> Self {
        SourceRow {
            positions: Cow::Owned(InputPositions::of(columns.iter().map(|(name, _)| name.as_str()))),
            values: Values::Named(columns),
        }
    }

    /// A row of `values` in the order `positions` were found for; a
    /// column past the values reads as NULL.
    pub fn by_position(positions: &'a InputPositions, values: Vec<Value>) -> Self {
        SourceRow {
            positions: Cow::Borrowed(positions),
            values: Values::ByPosition(values),
        }
    }

    /// Reads column `input` in place. A missing column reads as NULL,
    /// because the host passes the columns of whatever keeper.db version it
    /// reads, and older rows may lack some.
    fn read<R>(&self, input: Input, read: impl FnOnce(&Value) -> R) -> R {
        const NULL: &Value = &Value::Null;
        let position = self.positions.position(input);
        match &self.values {
            Values::Named(columns) => read(position.and_then(|i| columns.get(i)).map_or(NULL, |(_, value)| value)),
            Values::ByPosition(values) => read(position.and_then(|i| values.get(i)).unwrap_or(NULL)),
        }
    }

    /// Column `input`'s value to keep: moved out of an owned row (each
    /// column that reaches the output is read once), copied from a
    /// borrowed one.
    fn take(&mut self, input: Input) -> Value {
        let position = self.positions.position(input);
        match &mut self.values {
            Values::Named(columns) => position
                .and_then(|i| columns.get(i))
                .map_or(Value::Null, |(_, value)| value.clone()),
            Values::ByPosition(values) => position
                .and_then(|i| values.get_mut(i))
                .map_or(Value::Null, |value| std::mem::replace(value, Value::Null)),
        }
    }

    /// A NOT NULL text column of the target: absent, blank or non-text is a
    /// permanent error, because the database would reject the row anyway and
    /// a number in a description is a sign of a corrupt source row.
    pub fn required_text(&mut self, input: Input) -> Result<String, MappingError> {
        let name = input.name();
        match self.take(input) {
            Value::Text(text) => {
                non_blank_owned(text).ok_or_else(|| MappingError::field(name, format!("{name} is required")))
            }
            Value::Null => Err(MappingError::field(name, format!("{name} is required"))),
            other => Err(MappingError::field(
                name,
                format!("{name} must be text, found {}", other.describe()),
            )),
        }
    }

    /// An optional text column. A number is written as its decimal text, as
    /// SQLite itself does when it stores a number in a TEXT column: nothing
    /// is lost, and IDs (Discord snowflakes) are often numbers.
    pub fn optional_text(&mut self, input: Input) -> Option<String> {
        match self.take(input) {
            Value::Null => None,
            Value::Integer(number) => Some(number.to_string()),
            Value::Real(number) => Some(format!("{number:?}")),
            Value::Text(text) => non_blank_owned(text),
        }
    }

    /// An INTEGER column. Legacy rows may hold the digits as text; those are
    /// converted. Anything that is not a whole number is an error rather than
    /// a silent 0, because the target column could not hold it faithfully.
    pub fn optional_integer(&self, input: Input) -> Result<Option<i64>, MappingError> {
        let name = input.name();
        self.read(input, |value| match value {
            Value::Null => Ok(None),
            Value::Integer(number) => Ok(Some(*number)),
            Value::Real(number) => real_to_integer(*number)
                .map(Some)
                .ok_or_else(|| MappingError::field(name, format!("{name} must be an integer, found {number}"))),
            Value::Text(text) => match text.trim() {
                "" => Ok(None),
                trimmed => trimmed.parse::<i64>().map(Some).map_err(|_| {
                    MappingError::field(name, format!("{name} must be an integer, found the text '{trimmed}'"))
                }),
            },
        })
    }

    /// A column copied with its SQL type unchanged (a DATETIME may be text,
    /// a Unix time or a Julian day); only text gets the text rules.
    pub fn optional_as_stored(&mut self, input: Input) -> Option<Value> {
        match self.take(input) {
            Value::Null => None,
            Value::Text(text) => non_blank_owned(text).map(Value::Text),
            other => Some(other),
        }
    }

    /// A column holding a JSON array: its text as stored (trimmed). The
    /// elements are read through without being built. Invalid JSON is a
    /// permanent mapping error carrying the parser's message, never a panic.
    pub fn optional_json_array(&mut self, input: Input) -> Result<Option<String>, MappingError> {
        let Some(text) = self.json_text(input)? else {
            return Ok(None);
        };
        let JsonKind(kind) = parse_json(input, &text)?;
        if kind != JSON_ARRAY {
            return Err(not_shaped(input, JSON_ARRAY, kind));
        }
        Ok(Some(text))
    }

    /// The non-blank text of a column holding JSON (for `metadata`, read
    /// by [`Metadata::parse`]).
    pub fn json_text(&mut self, input: Input) -> Result<Option<String>, MappingError> {
        let name = input.name();
        match self.take(input) {
            Value::Null => Ok(None),
            Value::Text(text) => Ok(non_blank_owned(text)),
            other => Err(MappingError::field(
                name,
                format!("{name} must be JSON text, found {}", other.describe()),
            )),
        }
    }
}

fn parse_json<'t, T: serde::Deserialize<'t>>(input: Input, text: &'t str) -> Result<T, MappingError> {
    let name = input.name();
    serde_json::from_str(text).map_err(|error| MappingError::field(name, format!("{name} is not valid JSON: {error}")))
}

fn not_shaped(input: Input, expected: &str, found: &str) -> MappingError {
    let name = input.name();
    MappingError::field(name, format!("{name} must be {expected}, found {found}"))
}

/// The `metadata` object of a row, where the bot keeps the type-specific
/// fields and the reporter's location choice; borrowed from its text.
pub struct Metadata<'t> {
    entries: Vec<(Cow<'t, str>, MetaValue<'t>)>,
}

impl<'t> Metadata<'t> {
    /// The object in `text` (no text: an empty object, every key absent).
    /// Invalid JSON, or JSON that is not an object, fails the row.
    pub fn parse(input: Input, text: Option<&'t str>) -> Result<Metadata<'t>, MappingError> {
        let Some(text) = text else {
            return Ok(Metadata { entries: Vec::new() });
        };
        match parse_json(input, text)? {
            TopLevel::Object(entries) => Ok(Metadata { entries }),
            TopLevel::Other(kind) => Err(not_shaped(input, JSON_OBJECT, kind)),
        }
    }

    /// A text value of `metadata.<key>`. JSON numbers and booleans are
    /// written as their JSON text, because a form field typed "3" may reach
    /// us as the number 3 and is still the reporter's answer. An object or
    /// array has no faithful text form in a TEXT column: that is an error.
    pub fn text(&self, key: &str) -> Result<Option<String>, MappingError> {
        match self.entries.iter().find(|(known, _)| known == key) {
            Some((_, value)) => text_of(key, value),
            None => Ok(None),
        }
    }

    /// [`Metadata::text`] of each of `keys` that has a text: `(i, text)`
    /// for `keys[i]`, in the keys' order, failing as the first key that
    /// fails would. The object is walked once rather than searched once per
    /// key: a report's metadata holds a handful of the 40 type-specific keys.
    pub fn texts(&self, keys: &[&str]) -> Result<Vec<(usize, String)>, MappingError> {
        let mut texts = Vec::new();
        let mut first_error: Option<(usize, MappingError)> = None;
        for (key, value) in &self.entries {
            let Some(i) = keys.iter().position(|wanted| wanted == key) else {
                continue;
            };
            match text_of(key, value) {
                Ok(Some(text)) => texts.push((i, text)),
                Ok(None) => {}
                Err(error) if first_error.as_ref().is_none_or(|(earlier, _)| i < *earlier) => {
                    first_error = Some((i, error));
                }
                Err(_) => {}
            }
        }
        match first_error {
            Some((_, error)) => Err(error),
            None => {
                texts.sort_unstable_by_key(|(i, _)| *i);
                Ok(texts)
            }
        }
    }
}

/// The text of `metadata.<key>`, as [`Metadata::text`] describes.
fn text_of(key: &str, value: &MetaValue<'_>) -> Result<Option<String>, MappingError> {
    match value {
        MetaValue::Null => Ok(None),
        MetaValue::Text(text) => Ok(non_blank(text)),
        MetaValue::Scalar(text) => Ok(Some(text.clone())),
        MetaValue::Nested(kind) => {
            let field = format!("metadata.{key}");
            let message = format!("{field} must be text, found {kind}");
            Err(MappingError::field(field, message))
        }
    }
}

/// [`non_blank`] of a text the caller owns: kept as it is unless it has
/// white space to trim.
fn non_blank_owned(text: String) -> Option<String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        None
    } else if trimmed.len() == text.len() {
        Some(text)
    } else {
        Some(trimmed.to_owned())
    }
}

fn non_blank(text: &str) -> Option<String> {
    match text.trim() {
        "" => None,
        trimmed => Some(trimmed.to_owned()),
    }
}

/// Only whole numbers inside i64's range convert, so that no digit is lost.
fn real_to_integer(number: f64) -> Option<i64> {
    // 2^63 is exactly representable; anything at or above it overflows i64.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if number.fract() == 0.0 && (-LIMIT..LIMIT).contains(&number) {
        // In range and whole (NaN and infinities fail both tests above), so
        // the cast is exact.
        Some(number as i64)
    } else {
        None
    }
}
