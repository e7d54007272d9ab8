"""The default keeper.db -> VH-Database mapping, in plain Python.

The same mapping as the built-in Rust plugin (mapper-guest/src/mapping.rs,
location.rs, source.rs): change it here, build with ./build.sh, check with
`keeper plugin check`, drop the .wasm into plugins/.

Nothing in this module knows about WebAssembly: `map_row` takes the row as
(column, value) pairs of plain Python values (None, int, float, str) and a
`lookup` object with `find_system`, `find_planet` and `find_moon`, so it is
unit tested natively with a fake lookup (test_mapping.py). app.py connects
it to the host.

Rules a mapping must keep (plugins/README.md):
- the same row always gives the same answer (no clock, no randomness, no
  dict-order surprises);
- a row that cannot be mapped raises `Refused(field, message)`: the item
  fails with that message and a new plugin version retries it; any other
  exception is a crash, reported with its traceback line.
"""

import json
import math
import re

# Rust's `str::trim` removes Unicode White_Space; Python's `str.strip()`
# also removes the separators \x1c-\x1f. Strip exactly the same set, so
# both plugins agree on every value.
WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

# The 40 type-specific columns, in VH-Database's column order. keeper.db
# keeps them in `metadata` under the same names.
TYPE_SPECIFIC_COLUMNS = (
    "species_type", "size_scale", "preservation_quality", "estimated_age",
    "language_status", "completeness", "author_origin", "key_excerpt",
    "structure_type", "architectural_style", "structural_integrity", "purpose_function",
    "tech_category", "operational_status", "power_source", "reverse_engineering",
    "species_name", "behavioral_notes", "habitat_biome", "threat_level",
    "resource_type", "deposit_richness", "extraction_method", "economic_value",
    "ship_class", "hull_condition", "salvageable_tech", "pilot_status",
    "hazard_type", "severity_level", "duration_frequency", "protection_required",
    "update_name", "feature_category", "gameplay_impact", "first_impressions",
    "story_type", "lore_connections", "creative_elements", "collaborative_work",
)

PLANET, MOON, SPACE = "planet", "moon", "space"

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
INTEGER_TEXT = re.compile(r"[+-]?[0-9]+\Z", re.ASCII)


class Refused(Exception):
    """A row this mapping cannot map: the item fails with this message.

    `field` names the keeper.db column (or `metadata.<key>`) at fault.
    """

    def __init__(self, field, message):
        super().__init__(message)
        self.field = field
        self.message = message


def map_row(columns, lookup):
    """Maps one keeper.db `discoveries` row.

    `columns`: (name, value) pairs, values None, int, float or str.
    Returns (row, warnings): the VH-Database columns that have a value, in
    the table's column order, as (name, value) pairs, and the warnings that
    do not stop the item. Raises `Refused` for a row that cannot be mapped.
    Checks run in a fixed order, so the same input always fails the same way.
    """
    row = SourceRow(columns)
    warnings = []

    discovery_type = row.required_text("discovery_type")
    description = row.required_text("description")
    metadata_json = row.optional_json("metadata", dict)
    tags_json = row.optional_json("tags", list)
    metadata = Metadata(metadata_json[1] if metadata_json else None)

    discovery_name = metadata.text("discovery_name")
    stated = stated_location(row, metadata)
    type_specific = [(column, metadata.text(column)) for column in TYPE_SPECIFIC_COLUMNS]
    pattern_matches = row.optional_integer("pattern_matches")
    mystery_tier = row.optional_integer("mystery_tier")

    # Every check that can fail has passed: only lookups (which warn) remain.
    system_name = row.optional_text("system_name")
    system_id = lookup.find_system(system_name) if system_name is not None else None
    if system_name is None:
        warnings.append("no system_name given; system_id left NULL")
    elif system_id is None:
        warnings.append(f"system '{system_name}' not found in VH-Database")
    kind, location_name, planet_id, moon_id = resolve_location(
        stated, system_name, system_id, lookup, warnings
    )

    evidence_url = row.optional_text("evidence_url")
    out = [
        ("discovery_type", discovery_type),
        ("discovery_name", discovery_name),
        ("system_id", system_id),
        ("planet_id", planet_id),
        ("moon_id", moon_id),
        ("location_type", kind),
        ("location_name", location_name),
        ("description", description),
        ("coordinates", row.optional_text("coordinates")),
        ("condition", row.optional_text("condition")),
        ("time_period", row.optional_text("time_period")),
        ("significance", row.optional_text("significance")),
        # Both: photo_url for older readers; the Control Room reads evidence_urls.
        ("photo_url", evidence_url),
        ("evidence_urls", evidence_url),
        ("discovered_by", row.optional_text("username")),
        ("discord_user_id", row.optional_text("user_id")),
        ("discord_guild_id", row.optional_text("guild_id")),
        # The time of the report, not of the sync.
        ("submission_timestamp", row.optional_as_stored("submission_timestamp")),
        ("pattern_matches", pattern_matches),
        ("mystery_tier", mystery_tier),
        ("analysis_status", row.optional_text("analysis_status")),
        ("tags", tags_json[0] if tags_json else None),
        ("metadata", metadata_json[0] if metadata_json else None),
    ]
    out.extend(type_specific)
    # Columns without a value are left out, so the database applies its
    # own defaults (analysis_status 'pending', counters 0).
    return [(name, value) for name, value in out if value is not None], warnings


def non_blank(text):
    text = text.strip(WHITE_SPACE)
    return text if text else None


def describe(value):
    """What was stored, for error messages."""
    if value is None:
        return "NULL"
    if isinstance(value, bool) or isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a real"
    return "text"


def shortest_digits(number):
    """(digits, kk) of a finite, non-zero float: the shortest digits that
    read back as it (Python and Rust agree on them) and the decimal point's
    place, so that 10^(kk-1) <= |number| < 10^kk."""
    mantissa, _, exponent = repr(abs(number)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    raw = whole + fraction
    digits = raw.lstrip("0")
    point = len(whole) - (len(raw) - len(digits)) + int(exponent or 0)
    return digits.rstrip("0") or "0", point


def real_text(number):
    """A real as Rust's `{:?}` writes it (1.0, 0.5, 1e20, 1e-7), so both
    plugins write the same text for a number stored in a text column."""
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    mantissa, _, exponent = repr(number).partition("e")
    return f"{mantissa}e{int(exponent)}" if exponent else mantissa


def real_display(number):
    """A real as Rust's `{}` writes it (1.5, 100000000000000000000, 3)."""
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    sign = "-" if math.copysign(1.0, number) < 0 else ""
    if number == 0:
        return sign + "0"
    digits, point = shortest_digits(number)
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def json_number_text(number):
    """A JSON number as the Rust plugin's serde_json writes it back: an
    integer as is (beyond 64 bits it was read as a float), a float in
    ryu's form (3.0, 0.001, 1e20)."""
    if isinstance(number, int):
        if -(2**63) <= number < 2**64:
            return str(number)
        number = float(number)
    if number == 0:
        return "-0.0" if math.copysign(1.0, number) < 0 else "0.0"
    sign = "-" if number < 0 else ""
    digits, kk = shortest_digits(number)
    k = kk - len(digits)
    if 0 <= k and kk <= 16:
        body = digits + "0" * k + ".0"
    elif 0 < kk <= 16:
        body = f"{digits[:kk]}.{digits[kk:]}"
    elif -5 < kk <= 0:
        body = f"0.{'0' * -kk}{digits}"
    else:
        rest = f".{digits[1:]}" if len(digits) > 1 else ""
        body = f"{digits[0]}{rest}e{kk - 1}"
    return sign + body


def json_kind(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a JSON array"
    return "a JSON object"


def refuse_constant(name):
    # Python's json accepts NaN and Infinity; JSON (and the Rust plugin) do not.
    raise ValueError(f"{name} is not valid JSON")


class SourceRow:
    """A keeper.db row as the host passed it. A missing column reads as
    NULL (older keeper.db versions lack some); should a name appear twice,
    the first wins."""

    def __init__(self, columns):
        self.values = {}
        for name, value in columns:
            self.values.setdefault(name, value)

    def get(self, name):
        return self.values.get(name)

    def required_text(self, name):
        """A NOT NULL text column: absent, blank or not text is refused."""
        value = self.get(name)
        if isinstance(value, str):
            text = non_blank(value)
            if text is None:
                raise Refused(name, f"{name} is required")
            return text
        if value is None:
            raise Refused(name, f"{name} is required")
        raise Refused(name, f"{name} must be text, found {describe(value)}")

    def optional_text(self, name):
        """Optional text; a number is written as its decimal text, as SQLite
        does when it stores a number in a TEXT column."""
        value = self.get(name)
        if value is None:
            return None
        if isinstance(value, float):
            return real_text(value)
        if isinstance(value, int):
            return str(value)
        return non_blank(value)

    def optional_integer(self, name):
        """An INTEGER column; legacy digits stored as text are converted.
        Anything that is not a whole number in range is refused, never a
        silent 0."""
        value = self.get(name)
        if value is None:
            return None
        if isinstance(value, float):
            if math.isfinite(value) and value == int(value) and -(2.0**63) <= value < 2.0**63:
                return int(value)
            raise Refused(name, f"{name} must be an integer, found {real_display(value)}")
        if isinstance(value, int):
            return value
        text = value.strip(WHITE_SPACE)
        if not text:
            return None
        if INTEGER_TEXT.match(text) and I64_MIN <= int(text) <= I64_MAX:
            return int(text)
        raise Refused(name, f"{name} must be an integer, found the text '{text}'")

    def optional_as_stored(self, name):
        """Copied with its SQL type (a DATETIME may be text or a number)."""
        value = self.get(name)
        if isinstance(value, str):
            return non_blank(value)
        return value

    def optional_json(self, name, shape):
        """(text as stored, parsed value) of a JSON-text column, or None.
        Invalid JSON, or the wrong shape, is refused with the reason."""
        value = self.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise Refused(name, f"{name} must be JSON text, found {describe(value)}")
        text = non_blank(value)
        if text is None:
            return None
        try:
            parsed = json.loads(text, parse_constant=refuse_constant)
        except ValueError as error:
            raise Refused(name, f"{name} is not valid JSON: {error}") from None
        if not isinstance(parsed, shape):
            expected = "a JSON object" if shape is dict else "a JSON array"
            raise Refused(name, f"{name} must be {expected}, found {json_kind(parsed)}")
        return text, parsed


class Metadata:
    """The `metadata` object of a row: type-specific fields and the
    reporter's location choice. No metadata reads as an empty object."""

    def __init__(self, parsed):
        self.object = parsed if isinstance(parsed, dict) else {}

    def text(self, key):
        """`metadata.<key>` as text; numbers and booleans as their JSON
        text; an object or array is refused (no faithful text form)."""
        value = self.object.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            return non_blank(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return json_number_text(value)
        field = f"metadata.{key}"
        raise Refused(field, f"{field} must be text, found {json_kind(value)}")


def parse_kind(text):
    """planet, moon or space, in any ASCII letter case; None otherwise."""
    text = text.strip(WHITE_SPACE)
    for kind in (PLANET, MOON, SPACE):
        if len(text) == len(kind) and all(
            a == b or (a.isascii() and a.lower() == b) for a, b in zip(text, kind)
        ):
            return kind
    return None


def split_kind_prefix(location):
    """"space:station:Alpha" gives (space, "station:Alpha"); text without a
    known kind prefix is a plain name (names may contain colons)."""
    head, colon, rest = location.partition(":")
    if colon:
        kind = parse_kind(head)
        if kind is not None:
            return kind, non_blank(rest)
    return None, location


def stated_location(row, metadata):
    """(kind hint, name) the reporter gave: metadata first, then
    planet_name, then `location` with its optional kind prefix."""
    meta_kind = None
    text = metadata.text("location_type")
    if text is not None:
        meta_kind = parse_kind(text)
        if meta_kind is None:
            raise Refused(
                "metadata.location_type",
                f"metadata.location_type must be planet, moon or space, found '{text}'",
            )
    meta_name = metadata.text("location_name")
    planet_name = row.optional_text("planet_name")
    location = row.optional_text("location")
    location_kind, location_name = split_kind_prefix(location) if location is not None else (None, None)
    hint = meta_kind if meta_kind is not None else location_kind
    for name in (meta_name, planet_name, location_name):
        if name is not None:
            return hint, name
    return hint, None


def resolve_location(stated, system_name, system_id, lookup, warnings):
    """(location_type, location_name, planet_id, moon_id): the lookup
    tables decide planet or moon, not the wording. A place that cannot be
    found keeps its stated kind and name, with a warning."""
    hint, name = stated
    stated_kind = hint or PLANET
    unresolved = (stated_kind, name, None, None)
    if hint == SPACE:
        return unresolved
    if name is None:
        warnings.append(
            f"no location name given; {stated_kind} not resolved, planet_id and moon_id left NULL"
        )
        return unresolved
    if system_name is None:
        warnings.append(f"{stated_kind} '{name}' not looked up: no system_name given")
        return unresolved
    if system_id is None:
        warnings.append(
            f"{stated_kind} '{name}' not looked up: system '{system_name}' not found in VH-Database"
        )
        return unresolved
    for kind in (MOON, PLANET) if hint == MOON else (PLANET, MOON):
        if kind == MOON:
            moon = lookup.find_moon(system_id, name)
            if moon is not None:
                return MOON, name, moon.planet_id, moon.id
        else:
            planet = lookup.find_planet(system_id, name)
            if planet is not None:
                return PLANET, name, planet.id, None
    warnings.append(
        f"{stated_kind} '{name}' not found in system '{system_name}' of VH-Database "
        "(neither a planet nor a moon of it)"
    )
    return unresolved
