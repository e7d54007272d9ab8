//! Where in the system a discovery was made: `planet:NAME`, `moon:NAME`,
//! `space:NAME` (and the old bot's `space:station:NAME`).

use std::fmt;
use std::str::FromStr;

use super::error::ReportError;
use super::types::{FieldStyle, limits};
use super::validate::check_text;

/// Where in the system a discovery was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LocationKind {
    /// On a planet.
    Planet,
    /// On a moon.
    Moon,
    /// In space (including space stations).
    Space,
}

impl LocationKind {
    /// The value of `location_type` in `metadata` and in VH-Database.
    pub const fn as_str(self) -> &'static str {
        match self {
            LocationKind::Planet => "planet",
            LocationKind::Moon => "moon",
            LocationKind::Space => "space",
        }
    }

    /// `planet`, `moon` or `space`, in any letter case (users type these).
    pub fn parse(s: &str) -> Option<LocationKind> {
        [LocationKind::Planet, LocationKind::Moon, LocationKind::Space]
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for LocationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reporter's choice of location, written `planet:NAME`, `moon:NAME`,
/// `space:NAME` or `space:station:NAME` (the old bot's convention).
///
/// The kind is only what the reporter said: the mapping decides planet or
/// moon from VH-Database's tables (the mapping plugin's `Location` rules).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// What the reporter said it is.
    pub kind: LocationKind,
    /// The name, trimmed. For `space:station:NAME` it is `station:NAME`, so the
    /// station marker survives into `location_name` without a field of its own.
    pub name: String,
}

impl Location {
    /// Parses `KIND:NAME`. The kind is case-insensitive and may be surrounded
    /// by spaces; the name is trimmed, must not be empty, must hold at most
    /// `[common] location_name` characters (the data file) and no control character. A name may
    /// itself contain `:`; only the first one separates the kind.
    pub fn parse(s: &str) -> Result<Location, ReportError> {
        const FIELD: &str = "location";
        let (kind, rest) = s.trim().split_once(':').ok_or(ReportError::BadLocation)?;
        let kind = LocationKind::parse(kind.trim()).ok_or(ReportError::BadLocation)?;
        let name = rest.trim();
        if kind == LocationKind::Space
            && name
                .get(..STATION_PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(STATION_PREFIX))
            && name[STATION_PREFIX.len()..].trim().is_empty()
        {
            return Err(ReportError::EmptyLocationName { kind: "space:station" });
        }
        if name.is_empty() {
            return Err(ReportError::EmptyLocationName { kind: kind.as_str() });
        }
        check_text(FIELD, name, limits().location_name, FieldStyle::Short)?;
        Ok(Location {
            kind,
            name: name.to_owned(),
        })
    }
}

/// The old bot's marker for a space station: `space:station:NAME`.
const STATION_PREFIX: &str = "station:";

impl FromStr for Location {
    type Err = ReportError;

    fn from_str(s: &str) -> Result<Location, ReportError> {
        Location::parse(s)
    }
}

impl fmt::Display for Location {
    /// `kind:name`, which [`Location::parse`] reads back unchanged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_parse() {
        let cases = [
            ("planet:Getre Beta", LocationKind::Planet, "Getre Beta"),
            ("PLANET:Getre", LocationKind::Planet, "Getre"),
            ("  Moon :  Luna Prime  ", LocationKind::Moon, "Luna Prime"),
            ("space:Anomaly", LocationKind::Space, "Anomaly"),
            ("space:station:Alpha", LocationKind::Space, "station:Alpha"),
            ("Space:Station:Alpha", LocationKind::Space, "Station:Alpha"),
            ("planet:Kepler:186f", LocationKind::Planet, "Kepler:186f"),
            ("planet:station:X", LocationKind::Planet, "station:X"),
            ("moon:月の裏側", LocationKind::Moon, "月の裏側"),
        ];
        for (input, kind, name) in cases {
            let loc = Location::parse(input).expect(input);
            assert_eq!((loc.kind, loc.name.as_str()), (kind, name), "{input}");
            assert_eq!(loc.to_string().parse::<Location>(), Ok(loc.clone()));
        }
        assert_eq!(LocationKind::Planet.as_str(), "planet");
        assert_eq!(LocationKind::Moon.as_str(), "moon");
        assert_eq!(LocationKind::Space.as_str(), "space");
        assert_eq!(
            Location::parse("space:"),
            Err(ReportError::EmptyLocationName { kind: "space" })
        );
        assert_eq!(Location::parse(""), Err(ReportError::BadLocation));
    }

    #[test]
    fn location_name_limit_in_chars() {
        let name = "ñ".repeat(limits().location_name);
        assert_eq!(
            Location::parse(&format!("planet:{name}")).map(|l| l.name),
            Ok(name.clone())
        );
        assert_eq!(
            Location::parse(&format!("planet: {name}ñ ")),
            Err(ReportError::TooLong {
                field: "location",
                chars: 201,
                max: 200
            })
        );
    }
}
