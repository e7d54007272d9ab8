//! Why a report was refused: one error type for the CLI, the API and the
//! bot, each message starting with the field it is about.

use std::fmt::{self, Write as _};

use super::types::TypeList;

/// Why a report was refused. Every message starts with the field it is
/// about, so a user or operator knows what to fix.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    /// The record is not a JSON object.
    #[error("a report must be a JSON object, got {got}")]
    NotAnObject {
        /// The JSON kind that was given.
        got: &'static str,
    },
    /// A required value is absent, null or empty after trimming.
    #[error("{field}: required")]
    Required {
        /// The field.
        field: &'static str,
    },
    /// A value of the wrong JSON type.
    #[error("{field}: expected {expected}, got {got}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
        /// What was given.
        got: &'static str,
    },
    /// A value longer than its limit, in characters after trimming.
    #[error("{field}: {chars} characters, the limit is {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length in characters.
        chars: usize,
        /// The limit.
        max: usize,
    },
    /// A control character where none is allowed.
    #[error(
        "{field}: control character U+{:04X} at character {position} is not allowed",
        u32::from(*.character)
    )]
    ControlCharacter {
        /// The field.
        field: &'static str,
        /// The character.
        character: char,
        /// Its 1-based position in the trimmed value, in characters.
        position: usize,
    },
    /// A key that is neither a common field nor a type-specific column.
    #[error("unknown field {}", Quoted(.key))]
    UnknownField {
        /// The key as given.
        key: String,
    },
    /// A type-specific column of another discovery type.
    #[error("{field}: not a field of {emoji} ({name})")]
    NotAFieldOfType {
        /// The column.
        field: &'static str,
        /// The record's discovery type.
        emoji: &'static str,
        /// Its name.
        name: &'static str,
    },
    /// `discovery_type` is not one of the ten emojis or their short names.
    #[error("discovery_type: {} is not one of {}", Quoted(.value), TypeList)]
    UnknownDiscoveryType {
        /// The value as given (trimmed).
        value: String,
    },
    /// `location` is not `KIND:NAME` with a known kind.
    #[error("location: expected planet:NAME, moon:NAME or space:NAME")]
    BadLocation,
    /// `location` has a kind but no name.
    #[error("location: no name after \"{kind}:\"")]
    EmptyLocationName {
        /// `planet`, `moon`, `space` or `space:station`.
        kind: &'static str,
    },
    /// A Discord id that is not all ASCII digits.
    #[error("{field}: must be ASCII digits (a Discord id)")]
    NotDigits {
        /// The field.
        field: &'static str,
    },
    /// A link that is not `http://` or `https://`.
    #[error("{field}: must start with http:// or https://")]
    BadUrl {
        /// The field.
        field: &'static str,
    },
    /// More tags than allowed.
    #[error("tags: {count} tags, the limit is {max}")]
    TooManyTags {
        /// Non-empty tags given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A tag that is not a string.
    #[error("tags[{index}]: expected a string, got {got}")]
    TagNotAString {
        /// 0-based index in the array.
        index: usize,
        /// What was given.
        got: &'static str,
    },
    /// A tag longer than its limit.
    #[error("tags[{index}]: {chars} characters, the limit is {max}")]
    TagTooLong {
        /// 0-based index in the array.
        index: usize,
        /// Its length in characters.
        chars: usize,
        /// The limit.
        max: usize,
    },
    /// A tag with a control character.
    #[error(
        "tags[{index}]: control character U+{:04X} at character {position} is not allowed",
        u32::from(*.character)
    )]
    TagControlCharacter {
        /// 0-based index in the array.
        index: usize,
        /// The character.
        character: char,
        /// Its 1-based position in the trimmed tag, in characters.
        position: usize,
    },
}

impl ReportError {
    /// The field (JSON key) the error is about; `None` when it is about the
    /// record as a whole. Lets the API return it separately and the bot point
    /// at the right input.
    pub fn field(&self) -> Option<&str> {
        match self {
            ReportError::NotAnObject { .. } => None,
            ReportError::Required { field }
            | ReportError::WrongType { field, .. }
            | ReportError::TooLong { field, .. }
            | ReportError::ControlCharacter { field, .. }
            | ReportError::NotAFieldOfType { field, .. }
            | ReportError::NotDigits { field }
            | ReportError::BadUrl { field } => Some(field),
            ReportError::UnknownField { key } => Some(key),
            ReportError::UnknownDiscoveryType { .. } => Some("discovery_type"),
            ReportError::BadLocation | ReportError::EmptyLocationName { .. } => Some("location"),
            ReportError::TooManyTags { .. }
            | ReportError::TagNotAString { .. }
            | ReportError::TagTooLong { .. }
            | ReportError::TagControlCharacter { .. } => Some("tags"),
        }
    }
}

/// How many characters of a user-supplied string an error message quotes: a
/// hostile 10 MB key must not become a 10 MB log line.
const QUOTE_MAX_CHARS: usize = 40;

/// A user-supplied string in an error message: quoted, control characters,
/// quotes and backslashes escaped (so a message cannot forge log lines), and
/// shortened to [`QUOTE_MAX_CHARS`].
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for c in self.0.chars().take(QUOTE_MAX_CHARS) {
            if c.is_control() || c == '"' || c == '\\' {
                write!(f, "{}", c.escape_debug())?;
            } else {
                f.write_char(c)?;
            }
        }
        f.write_char('"')?;
        let more = self.0.chars().count().saturating_sub(QUOTE_MAX_CHARS);
        if more > 0 {
            write!(f, " (and {more} more characters)")?;
        }
        Ok(())
    }
}
