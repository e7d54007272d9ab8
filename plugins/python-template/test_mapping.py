"""Native unit tests of mapping.py and app.py's crash report, with a fake
lookup: `python3 -m unittest discover plugins/python-template` (no
WebAssembly, no keeper needed; .ci/run runs them)."""

import sys
import types as modules
import unittest
from collections import namedtuple
from dataclasses import dataclass
from unittest import mock

import mapping
from mapping import Refused, map_row

IXIEZH = "SYS_EUCLID_D148E5FD"
LUZHILAR = "SYS_EUCLID_54058A20"

Body = namedtuple("Body", "id planet_id name")


def same_name(stored, wanted):
    return stored == wanted or stored.strip().lower() == wanted.strip().lower()


def find(items, name_of, wanted):
    exact = [item for item in items if name_of(item) == wanted]
    folded = [item for item in items if same_name(name_of(item), wanted)]
    return (exact or folded or [None])[0]


class FakeLookup:
    """A slice of the sample VH-Database, matched as the host matches
    (exact, then case-insensitive and trimmed); records body queries."""

    systems = [(IXIEZH, "Ixiezh HV"), (LUZHILAR, "Luzhilar XVIII")]
    planets = [(IXIEZH, 31, "Mineh L13 VH"), (IXIEZH, 32, "Mezenu Maki"),
               (LUZHILAR, 24, "Disey"), (LUZHILAR, 25, "Dixie Moon")]
    moons = [(6, 31, "Getre Beta")]

    def __init__(self):
        self.body_queries = []

    def find_system(self, name):
        found = find(self.systems, lambda s: s[1], name)
        return found[0] if found else None

    def find_planet(self, system_id, name):
        self.body_queries.append(f"planet {system_id} {name}")
        found = find([p for p in self.planets if p[0] == system_id], lambda p: p[2], name)
        return Body(found[1], found[1], found[2]) if found else None

    def find_moon(self, system_id, name):
        self.body_queries.append(f"moon {system_id} {name}")
        ids = {p[1] for p in self.planets if p[0] == system_id}
        found = find([m for m in self.moons if m[1] in ids], lambda m: m[2], name)
        return Body(found[0], found[1], found[2]) if found else None


def base(**changes):
    row = {"discovery_type": "🦴", "description": "Ancient alien fossil"}
    row.update(changes)
    return list(row.items())


def map_ok(columns, lookup=None):
    row, warnings = map_row(columns, lookup or FakeLookup())
    return dict(row), warnings


def refused(columns):
    try:
        map_row(columns, FakeLookup())
    except Refused as refusal:
        return refusal
    raise AssertionError(f"expected a refusal of {columns}")


class ColumnTable(unittest.TestCase):
    def test_full_row_maps_column_by_column_in_the_table_order(self):
        metadata = ('{"discovery_name":"The Old Ones","species_type":"Vertebrate",'
                    '"preservation_quality":"Excellent","estimated_age":"200 million years"}')
        row, warnings = map_row(base(
            id=123, user_id="123456789012345678", username="Explorer#1234",
            guild_id="987654321098765432", location="planet:Mineh L13 VH",
            time_period="Ancient", condition="Weathered", significance="High",
            evidence_url="https://example.org/a.png", related_discoveries="[1,2]",
            coordinates="0123:4567:89AB:CDEF", planet_name=None, galaxy_name="Euclid",
            submission_timestamp="2024-05-01 12:34:56", analysis_status="pending",
            pattern_matches=2, mystery_tier=3, tags='["fossil","ancient"]',
            metadata=metadata, system_name="Ixiezh HV",
        ), FakeLookup())
        self.assertEqual(row, [
            ("discovery_type", "🦴"), ("discovery_name", "The Old Ones"),
            ("system_id", IXIEZH), ("planet_id", 31), ("location_type", "planet"),
            ("location_name", "Mineh L13 VH"), ("description", "Ancient alien fossil"),
            ("coordinates", "0123:4567:89AB:CDEF"), ("condition", "Weathered"),
            ("time_period", "Ancient"), ("significance", "High"),
            ("photo_url", "https://example.org/a.png"),
            ("evidence_urls", "https://example.org/a.png"),
            ("discovered_by", "Explorer#1234"), ("discord_user_id", "123456789012345678"),
            ("discord_guild_id", "987654321098765432"),
            ("submission_timestamp", "2024-05-01 12:34:56"), ("pattern_matches", 2),
            ("mystery_tier", 3), ("analysis_status", "pending"),
            ("tags", '["fossil","ancient"]'), ("metadata", metadata),
            ("species_type", "Vertebrate"), ("preservation_quality", "Excellent"),
            ("estimated_age", "200 million years"),
        ])
        self.assertEqual(warnings, [])

    def test_there_are_40_type_specific_columns_each_once(self):
        self.assertEqual(len(mapping.TYPE_SPECIFIC_COLUMNS), 40)
        self.assertEqual(len(set(mapping.TYPE_SPECIFIC_COLUMNS)), 40)

    def test_text_is_trimmed_as_rust_trims_and_blank_is_absent(self):
        row, _ = map_ok(base(coordinates="\u3000 x \n", condition="  ", significance="\x1fy"))
        self.assertEqual(row["coordinates"], "x")
        self.assertNotIn("condition", row)
        # \x1f is not White_Space: Rust keeps it, so must we.
        self.assertEqual(row["significance"], "\x1fy")

    def test_numbers_in_text_columns_are_written_as_rust_writes_them(self):
        row, _ = map_ok(base(user_id=123456789012345678, guild_id=1.5, coordinates=1e20,
                             condition=1e-5, significance=2.0))
        self.assertEqual(row["discord_user_id"], "123456789012345678")
        self.assertEqual(row["discord_guild_id"], "1.5")
        self.assertEqual(row["coordinates"], "1e20")
        self.assertEqual(row["condition"], "1e-5")
        self.assertEqual(row["significance"], "2.0")

    def test_integer_columns_convert_whole_numbers_and_digits(self):
        row, _ = map_ok(base(pattern_matches=3.0, mystery_tier=" -1 "))
        self.assertEqual((row["pattern_matches"], row["mystery_tier"]), (3, -1))
        row, _ = map_ok(base(pattern_matches="  "))
        self.assertNotIn("pattern_matches", row)
        for bad, shown in [(1.5, "1.5"), (1e20, "100000000000000000000")]:
            refusal = refused(base(pattern_matches=bad))
            self.assertEqual(refusal.field, "pattern_matches")
            self.assertEqual(refusal.message, f"pattern_matches must be an integer, found {shown}")
        for text in ["1_000", "٣", "9223372036854775808", "0x10"]:
            refusal = refused(base(mystery_tier=text))
            self.assertEqual(refusal.message, f"mystery_tier must be an integer, found the text '{text}'")

    def test_timestamp_is_kept_as_stored(self):
        row, _ = map_ok(base(submission_timestamp=1700000000))
        self.assertEqual(row["submission_timestamp"], 1700000000)
        row, _ = map_ok(base())
        self.assertNotIn("submission_timestamp", row)

    def test_metadata_numbers_and_booleans_are_their_json_text(self):
        row, _ = map_ok(base(metadata='{"species_type": 3, "size_scale": 2.50, '
                                      '"estimated_age": 1e2, "completeness": true}'))
        self.assertEqual(row["species_type"], "3")
        self.assertEqual(row["size_scale"], "2.5")
        self.assertEqual(row["estimated_age"], "100.0")
        self.assertEqual(row["completeness"], "true")


class Refusals(unittest.TestCase):
    def test_required_columns(self):
        for column in ["discovery_type", "description"]:
            for value in [None, "   "]:
                refusal = refused(base(**{column: value}))
                self.assertEqual((refusal.field, refusal.message), (column, f"{column} is required"))
        refusal = refused(base(description=7))
        self.assertEqual(refusal.message, "description must be text, found an integer")

    def test_json_columns(self):
        refusal = refused(base(metadata="{not json"))
        self.assertEqual(refusal.field, "metadata")
        self.assertTrue(refusal.message.startswith("metadata is not valid JSON: "), refusal.message)
        self.assertEqual(refused(base(metadata="[1]")).message,
                         "metadata must be a JSON object, found a JSON array")
        self.assertEqual(refused(base(tags='{"a": 1}')).message,
                         "tags must be a JSON array, found a JSON object")
        self.assertEqual(refused(base(tags=3)).message, "tags must be JSON text, found an integer")
        # Python's json reads NaN; JSON does not.
        self.assertEqual(refused(base(tags="[NaN]")).field, "tags")

    def test_metadata_objects_are_not_text(self):
        refusal = refused(base(metadata='{"species_type": {"a": 1}}'))
        self.assertEqual(refusal.field, "metadata.species_type")
        self.assertEqual(refusal.message, "metadata.species_type must be text, found a JSON object")

    def test_unknown_location_type(self):
        refusal = refused(base(metadata='{"location_type": "asteroid"}'))
        self.assertEqual(refusal.field, "metadata.location_type")
        self.assertEqual(refusal.message,
                         "metadata.location_type must be planet, moon or space, found 'asteroid'")


class Location(unittest.TestCase):
    def test_the_tables_decide_planet_or_moon(self):
        row, warnings = map_ok(base(system_name="Ixiezh HV", location="planet:getre beta"))
        self.assertEqual((row["location_type"], row["planet_id"], row["moon_id"]), ("moon", 31, 6))
        self.assertEqual(row["location_name"], "getre beta")
        self.assertEqual(warnings, [])
        row, _ = map_ok(base(system_name="Luzhilar XVIII", location="moon:Dixie Moon"))
        self.assertEqual((row["location_type"], row["planet_id"]), ("planet", 25))
        self.assertNotIn("moon_id", row)

    def test_metadata_then_planet_name_then_location(self):
        row, _ = map_ok(base(system_name="Ixiezh HV", location="planet:Nowhere",
                             planet_name="Mezenu Maki"))
        self.assertEqual(row["planet_id"], 32)
        row, _ = map_ok(base(system_name="Ixiezh HV", planet_name="Mezenu Maki",
                             metadata='{"location_type": "Planet", "location_name": "Mineh L13 VH"}'))
        self.assertEqual(row["planet_id"], 31)

    def test_space_is_not_looked_up_and_keeps_a_station_marker(self):
        lookup = FakeLookup()
        row, warnings = map_ok(base(system_name="Ixiezh HV", location="space:station:Alpha"), lookup)
        self.assertEqual((row["location_type"], row["location_name"]), ("space", "station:Alpha"))
        self.assertEqual(lookup.body_queries, [])
        self.assertEqual(warnings, [])

    def test_unresolved_places_warn_and_still_map(self):
        _, warnings = map_ok(base(location="planet:Erren"))
        self.assertEqual(warnings, ["no system_name given; system_id left NULL",
                                    "planet 'Erren' not looked up: no system_name given"])
        row, warnings = map_ok(base(system_name="Nowhere", location="moon:Erren"))
        self.assertEqual(row["location_type"], "moon")
        self.assertEqual(warnings, [
            "system 'Nowhere' not found in VH-Database",
            "moon 'Erren' not looked up: system 'Nowhere' not found in VH-Database",
        ])
        _, warnings = map_ok(base(system_name="Ixiezh HV", location="Nowhere"))
        self.assertEqual(warnings, [
            "planet 'Nowhere' not found in system 'Ixiezh HV' of VH-Database "
            "(neither a planet nor a moon of it)",
        ])
        _, warnings = map_ok(base(system_name="Ixiezh HV"))
        self.assertEqual(warnings, [
            "no location name given; planet not resolved, planet_id and moon_id left NULL",
        ])

    def test_a_name_with_a_colon_but_no_kind_is_a_name(self):
        row, _ = map_ok(base(location="Outpost: North"))
        self.assertEqual((row["location_type"], row["location_name"]), ("planet", "Outpost: North"))


class Determinism(unittest.TestCase):
    def test_the_same_row_maps_the_same_way(self):
        columns = base(system_name="Ixiezh HV", location="moon:Getre Beta", tags='["a"]')
        self.assertEqual(map_row(columns, FakeLookup()), map_row(columns, FakeLookup()))


def fake_bindings(lookup, crashes):
    """Stand-ins for the modules componentize-py generates (wit_world,
    componentize_py_types), so app.py can be imported natively."""

    class Err(Exception):
        def __init__(self, value):
            super().__init__(value)
            self.value = value

    def record(name, *fields):
        return dataclass(type(name, (), {"__annotations__": dict.fromkeys(fields, object)}))

    wit = modules.SimpleNamespace(
        Value_Null=dataclass(type("Value_Null", (), {})),
        Value_Integer=record("Value_Integer", "value"),
        Value_Real=record("Value_Real", "value"),
        Value_Text=record("Value_Text", "value"),
        Column=record("Column", "name", "value"),
        Mapped=record("Mapped", "row", "warnings"),
        MappingError=record("MappingError", "field", "message"),
        PluginInfo=record("PluginInfo", "name", "version"),
        PluginLimits=record("PluginLimits", "memory_mib", "timeout_ms"),
    )
    imports = modules.SimpleNamespace(
        types=wit,
        lookup=lookup,
        diagnostics=modules.SimpleNamespace(report_crash=crashes.append),
    )
    return {
        "componentize_py_types": modules.SimpleNamespace(Err=Err),
        "wit_world": modules.SimpleNamespace(imports=imports),
        "wit_world.imports": imports,
    }


class App(unittest.TestCase):
    """app.py: the conversions, refusals as the contract's mapping error,
    crashes reported with their traceback line."""

    def setUp(self):
        self.crashes = []
        bindings = fake_bindings(FakeLookup(), self.crashes)
        patcher = mock.patch.dict(sys.modules, bindings)
        patcher.start()
        self.addCleanup(patcher.stop)
        sys.modules.pop("app", None)
        import app
        self.app, self.wit, self.Err = app, bindings["wit_world.imports"].types, bindings["componentize_py_types"].Err

    def row(self, **columns):
        def wit(value):
            if value is None:
                return self.wit.Value_Null()
            kind = {int: self.wit.Value_Integer, float: self.wit.Value_Real, str: self.wit.Value_Text}
            return kind[type(value)](value)
        return [self.wit.Column(name, wit(value)) for name, value in base(**columns)]

    def test_maps_through_the_host_lookup(self):
        mapped = self.app.WitWorld().map(self.row(system_name="Ixiezh HV", location="moon:Getre Beta",
                                                  mystery_tier=2.0))
        values = {column.name: column.value for column in mapped.row}
        self.assertEqual(values["moon_id"], self.wit.Value_Integer(6))
        self.assertEqual(values["mystery_tier"], self.wit.Value_Integer(2))
        self.assertEqual(values["location_type"], self.wit.Value_Text("moon"))
        self.assertEqual(mapped.warnings, [])
        info = self.app.WitWorld().info()
        self.assertTrue(info.name and info.version)

    def test_it_declares_what_it_needs(self):
        limits = self.app.WitWorld().requested_limits()
        self.assertEqual(limits, self.wit.PluginLimits(memory_mib=20, timeout_ms=None))

    def test_a_refusal_is_the_contracts_mapping_error(self):
        with self.assertRaises(self.Err) as raised:
            self.app.WitWorld().map(self.row(description=" "))
        self.assertEqual(raised.exception.value, self.wit.MappingError("description", "description is required"))
        self.assertEqual(self.crashes, [])

    def test_a_crash_is_reported_with_its_last_traceback_line_then_raised(self):
        def broken(columns, lookup):
            return {}["no such key"]
        with mock.patch.object(self.app.mapping, "map_row", broken):
            with self.assertRaises(KeyError):
                self.app.WitWorld().map(self.row())
        self.assertEqual(len(self.crashes), 1)
        line = broken.__code__.co_firstlineno + 1
        self.assertEqual(self.crashes[0], f"KeyError: 'no such key' (at test_mapping.py, line {line}, in broken)")


if __name__ == "__main__":
    unittest.main()
