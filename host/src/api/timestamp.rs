//! Times as the API shows them: RFC 3339 in UTC.
//!
//! keeper.db stores SQLite's UTC text (`YYYY-MM-DD HH:MM:SS`, some columns
//! with milliseconds); a keeper.db adopted from the old bot may hold ISO 8601
//! text with a `T` or an offset. Everything readable becomes an
//! [`OffsetDateTime`] in UTC; anything else is shown as absent rather than
//! as a string that breaks the documented `date-time` format.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// Now, to the second: clients of the old API parse its times with
/// second precision (Python's `fromisoformat` refuses nanoseconds).
pub fn now() -> OffsetDateTime {
    whole_seconds(OffsetDateTime::now_utc())
}

/// `t` without its fraction of a second.
pub fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

/// Parses a stored time; text without an offset is UTC (SQLite's clock).
pub fn parse(text: &str) -> Option<OffsetDateTime> {
    let text = text.trim();
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(t.to_offset(time::UtcOffset::UTC));
    }
    let spaced = text.replacen('T', " ", 1);
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second][optional [.[subsecond]]]");
    PrimitiveDateTime::parse(&spaced, format)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

/// [`parse`] for a nullable column.
pub fn parse_opt(text: Option<&str>) -> Option<OffsetDateTime> {
    text.and_then(parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sqlite_and_iso_text() {
        let t = parse("2025-11-13 20:30:00").unwrap();
        assert_eq!(t.format(&Rfc3339).unwrap(), "2025-11-13T20:30:00Z");
        let t = parse("2025-11-13 20:30:00.250").unwrap();
        assert_eq!(t.format(&Rfc3339).unwrap(), "2025-11-13T20:30:00.25Z");
        let t = parse("2025-11-13T21:30:00+01:00").unwrap();
        assert_eq!(t.format(&Rfc3339).unwrap(), "2025-11-13T20:30:00Z");
        assert_eq!(
            parse("2025-11-13T20:30:00").unwrap(),
            parse("2025-11-13 20:30:00").unwrap()
        );
        assert!(parse("yesterday").is_none());
    }
}
