//! MAPPING.md's "Location" rules: where in the system a discovery was made.
//!
//! The reporter's wording is only a hint. The old bot guessed "moon" from the
//! word "moon" in a name and filed real moons (Getre Beta) as planets that
//! never appeared on the map; here the lookup tables decide.

use crate::model::{Lookup, MappingError};
use crate::source::{Metadata, SourceRow};

/// The three values VH-Database's `location_type` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocationKind {
    Planet,
    Moon,
    Space,
}

impl LocationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LocationKind::Planet => "planet",
            LocationKind::Moon => "moon",
            LocationKind::Space => "space",
        }
    }

    /// Case-insensitive, because reporters and old bots wrote "Planet" too.
    fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        [LocationKind::Planet, LocationKind::Moon, LocationKind::Space]
            .into_iter()
            .find(|kind| kind.as_str().eq_ignore_ascii_case(text))
    }
}

/// What the reporter said: a kind (maybe) and a name (maybe).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatedLocation {
    pub hint: Option<LocationKind>,
    pub name: Option<String>,
}

/// The VH columns the location decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedLocation {
    pub kind: LocationKind,
    pub name: Option<String>,
    pub planet_id: Option<i64>,
    pub moon_id: Option<i64>,
}

/// The system a discovery was reported in, as far as it is known.
pub enum SystemRef<'a> {
    /// No `system_name` in the row.
    Missing,
    /// A name VH-Database does not know.
    NotFound {
        name: &'a str,
    },
    Found {
        id: &'a str,
        name: &'a str,
    },
}

/// Reads the reporter's choice: `metadata.location_type` and
/// `metadata.location_name` first, because the current bot stores the parsed
/// choice there; otherwise `planet_name`, else `location`, where the old
/// convention `planet:NAME`, `moon:NAME`, `space:NAME` (`space:station:NAME`)
/// may carry the kind as a prefix.
pub fn stated(row: &mut SourceRow<'_>, metadata: &Metadata<'_>) -> Result<StatedLocation, MappingError> {
    let meta_kind = match metadata.text("location_type")? {
        None => None,
        Some(text) => Some(LocationKind::parse(&text).ok_or_else(|| {
            // An unknown kind is an error, not a guess: guessing is what
            // misfiled moons before, and a new plugin version that knows
            // the kind retries these items automatically.
            MappingError::field(
                "metadata.location_type",
                format!("metadata.location_type must be planet, moon or space, found '{text}'"),
            )
        })?),
    };
    let meta_name = metadata.text("location_name")?;
    let planet_name = row.optional_text(input!("planet_name"));
    let (location_kind, location_name) = match row.optional_text(input!("location")) {
        Some(location) => split_kind_prefix(&location),
        None => (None, None),
    };
    Ok(StatedLocation {
        hint: meta_kind.or(location_kind),
        name: meta_name.or(planet_name).or(location_name),
    })
}

/// `"space:station:Alpha"` gives `(Space, "station:Alpha")`: only the kind
/// prefix is removed, so a station keeps its `station:` marker and no
/// character of the name is dropped. Text without a known kind prefix is a
/// plain name (names may contain colons).
fn split_kind_prefix(location: &str) -> (Option<LocationKind>, Option<String>) {
    if let Some((head, rest)) = location.split_once(':')
        && let Some(kind) = LocationKind::parse(head)
    {
        let rest = rest.trim();
        let name = (!rest.is_empty()).then(|| rest.to_owned());
        return (Some(kind), name);
    }
    (None, Some(location.to_owned()))
}

/// Resolves the stated location against the lookup tables, pushing a warning
/// (never an error) when a planet or moon cannot be found: the item still
/// syncs with its stated kind and name and NULL ids, and a later correction
/// of VH-Database's tables is not blocked by a failed item.
pub fn resolve(
    stated: StatedLocation,
    system: &SystemRef<'_>,
    lookup: &dyn Lookup,
    warnings: &mut Vec<String>,
) -> ResolvedLocation {
    let StatedLocation { hint, name } = stated;
    let unresolved = |name: Option<String>| ResolvedLocation {
        kind: hint.unwrap_or(LocationKind::Planet),
        name,
        planet_id: None,
        moon_id: None,
    };

    // Space is not in the planet or moon tables: nothing to look up.
    if hint == Some(LocationKind::Space) {
        return unresolved(name);
    }
    let stated_kind = hint.unwrap_or(LocationKind::Planet).as_str();
    let Some(name) = name else {
        warnings.push(format!(
            "no location name given; {stated_kind} not resolved, planet_id and moon_id left NULL"
        ));
        return unresolved(None);
    };
    let (system_id, system_name) = match system {
        SystemRef::Found { id, name } => (*id, *name),
        SystemRef::NotFound { name: system_name } => {
            warnings.push(format!(
                "{stated_kind} '{name}' not looked up: system '{system_name}' not found in VH-Database"
            ));
            return unresolved(Some(name));
        }
        SystemRef::Missing => {
            warnings.push(format!("{stated_kind} '{name}' not looked up: no system_name given"));
            return unresolved(Some(name));
        }
    };

    // The hinted kind first (only matters if a system has a planet and a
    // moon of the same name), then the other: the tables decide.
    let order = if hint == Some(LocationKind::Moon) {
        [LocationKind::Moon, LocationKind::Planet]
    } else {
        [LocationKind::Planet, LocationKind::Moon]
    };
    for kind in order {
        let ids = match kind {
            LocationKind::Moon => lookup
                .find_moon(system_id, &name)
                .map(|moon| (moon.planet_id, Some(moon.id))),
            LocationKind::Planet | LocationKind::Space => {
                lookup.find_planet(system_id, &name).map(|planet| (planet.id, None))
            }
        };
        if let Some((planet_id, moon_id)) = ids {
            // The reporter's spelling is kept (the lookup may have matched it
            // case-insensitively): the mapping copies, it does not rewrite.
            return ResolvedLocation {
                kind,
                name: Some(name),
                planet_id: Some(planet_id),
                moon_id,
            };
        }
    }
    warnings.push(format!(
        "{stated_kind} '{name}' not found in system '{system_name}' of VH-Database (neither a planet nor a moon of it)"
    ));
    unresolved(Some(name))
}
