#!/usr/bin/env python3
"""Regenerates the conformance corpus (cases.json, lookup.json) in this folder.

The rows are made by the real `keeper submit` (so they are exactly what the
store writes) plus a few rows written the way the old Python bot wrote them.
Run from the workspace root after `cargo build`:

    python3 host/conformance/generate.py target/debug/keeper

The discovery types and every limit are read from host/discovery-types.toml,
the data file keeper itself is built from, so the "maximum lengths" cases
follow the forms if they change. Needs Python 3.11 or later (tomllib).
"""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(ROOT, "host", "conformance")
SAMPLE_VH = os.path.join(ROOT, "tests", "fixtures", "VH-Database.sample.db")

DATA = os.path.join(ROOT, "host", "discovery-types.toml")

def load_data():
    with open(DATA, "rb") as f:
        return tomllib.load(f)

# (emoji, [(column, max chars, paragraph?)]), in the data file's order.
def discovery_types():
    types = [(t["emoji"], [(f["column"], f["max_chars"], f["style"] == "paragraph") for f in t["fields"]])
             for t in load_data()["types"]]
    assert len(types) == 10 and all(len(f) == 5 for _, f in types), types
    return types

# The limits of the fields every report has (the data file's [common] table).
COMMON = load_data()["common"]

# Multi-byte text of exactly n characters: limits count characters, not bytes.
def filled(n, paragraph=False):
    unit = "Ünï ✨ 化石 " if not paragraph else "Ünï ✨\n化石 "
    text = (unit * (n // len(unit) + 1))[:n]
    return "X" + text[1:-1] + "Z" if n > 2 else "X" * n

def main():
    keeper = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "debug", "keeper"))
    work = tempfile.mkdtemp()
    db = os.path.join(work, "keeper.db")
    cases = []  # (name, expect, record or None)
    types = discovery_types()
    for emoji, fields in types:
        specific = fields[1:]
        cases.append((f"{emoji} every field", "map", {
            "discovery_type": emoji, "system_name": "Oculi", "location": "planet:Erren",
            "description": f"A {emoji} report with every field filled in", "username": "Explorer#1234",
            "user_id": "123456789012345678", "guild_id": "987654321098765432",
            "coordinates": "0123:0045:0F67:89AB", "condition": "Pristine", "time_period": "Atlas era",
            "significance": "High", "evidence_url": "https://example.org/evidence.png",
            "tags": ["first", "verified"], "discovery_name": f"Exhibit {emoji}",
            **{c: f"{c} value" for c, _, _ in specific},
        }))
        cases.append((f"{emoji} required fields only", "map", {
            "discovery_type": emoji, "system_name": "Oculi", "location": "planet:Erren",
            "description": "Only what the form requires", "username": "Quiet",
        }))
        cases.append((f"{emoji} maximum lengths", "map", {
            "discovery_type": emoji,
            "system_name": filled(COMMON["system_name"]),
            "location": "moon:" + filled(COMMON["location_name"]),
            "description": filled(fields[0][1], fields[0][2]),
            "username": filled(COMMON["username"]),
            "user_id": "9" * COMMON["discord_id"],
            "guild_id": "8" * COMMON["discord_id"],
            "coordinates": filled(COMMON["text"]),
            "condition": filled(COMMON["text"]),
            "time_period": filled(COMMON["text"]),
            "significance": filled(COMMON["text"]),
            "evidence_url": "https://example.org/" + "a" * (COMMON["evidence_url"] - len("https://example.org/")),
            "tags": [f"{i:02}" + filled(COMMON["tag_chars"] - 2) for i in range(COMMON["tags"])],
            "discovery_name": filled(COMMON["discovery_name"]),
            **{c: filled(m, p) for c, m, p in specific},
        }))
    cases += [
        ("moon resolved through the lookup", "map", {
            "discovery_type": "🦴", "system_name": "Ixiezh HV", "location": "planet:Getre Beta",
            "description": "Reported on a planet that is really a moon", "username": "Explorer"}),
        ("space station", "map", {
            "discovery_type": "📜", "system_name": "Oculi", "location": "space:station:Oculi Hub",
            "description": "A log in the station", "username": "Explorer"}),
        ("deep space", "map", {
            "discovery_type": "⚡", "system_name": "Tenex[VH]", "location": "space:The void",
            "description": "Storm between stars", "username": "Explorer"}),
        ("unresolvable system", "map", {
            "discovery_type": "💎", "system_name": "Nowhere Known", "location": "planet:Atlantis",
            "description": "Gold in an unknown system", "username": "Explorer"}),
        ("unresolvable planet in a known system", "map", {
            "discovery_type": "🚀", "system_name": "Oculi", "location": "planet:Not On The Map",
            "description": "A wreck on an unmapped planet", "username": "Explorer"}),
        ("unresolvable moon in a known system", "map", {
            "discovery_type": "🦗", "system_name": "ixiezh hv", "location": "moon:Phantom Moon",
            "description": "Creature on an unmapped moon", "username": "Explorer"}),
        ("unicode everywhere", "map", {
            "discovery_type": "🆕", "system_name": "Σύστημα 星系 🌌",
            "location": "planet:Ünïcödé Wörld",
            "description": "RTL: مرحبا بالعالم; combining: e\u0301; ZWJ: 👩\u200d🚀; CJK: 化石; astral: 𝔘𝔫𝔦",
            "username": "Ëxplører 🚀", "tags": ["日本語", "emoji 🦴", "עברית"],
            "feature_category": "Ünïcödé ✨"}),
        ("text that looks like SQL", "map", {
            "discovery_type": "🏛️", "system_name": "Oculi'; DROP TABLE discoveries; --",
            "location": "planet:Erren", "description": "Robert'); DROP TABLE discoveries;-- \"quoted\"",
            "username": "x' OR '1'='1"}),
    ]
    env = dict(os.environ, KEEPER_DB_PATH=db, HAVEN_DB_PATH=os.path.join(work, "none.db"))
    for name, expect, record in cases:
        out = subprocess.run([keeper, "submit", "--json", "-"], input=json.dumps(record).encode(),
                             env=env, capture_output=True, cwd=work)
        if out.returncode != 0:
            sys.exit(f"{name}: {out.stderr.decode()}")

    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    legacy = [
        ("legacy row without metadata, tags or system", "map",
         "INSERT INTO discoveries (user_id, username, guild_id, discovery_type, location, description, planet_name,"
         " submission_timestamp) VALUES ('111', 'OldTimer', NULL, '🦴', 'Getre Beta', 'Bones under the ice',"
         " 'Getre Beta', '2024-03-01 10:00:00')"),
        ("legacy row with numbers where text is usual", "map",
         "INSERT INTO discoveries (user_id, username, guild_id, discovery_type, location, description,"
         " submission_timestamp, pattern_matches, mystery_tier, system_name, metadata)"
         " VALUES (123456789, 'Numbers', 987, '💎', 'Erren', 'Copper', '2024-03-02 11:00:00', '3', 2, 'Oculi',"
         " '{\"location_type\": \"Planet\", \"resource_type\": \"Copper\"}')"),
        ("legacy row with empty optional strings", "map",
         "INSERT INTO discoveries (user_id, username, guild_id, discovery_type, location, description,"
         " coordinates, condition, time_period, significance, evidence_url, tags, metadata, system_name)"
         " VALUES ('', 'Blank', '', '🦗', '', 'Only blanks besides this', '', ' ', '', '', '', '[]', '{}', '')"),
        ("legacy row with a blank description", "any",
         "INSERT INTO discoveries (user_id, username, discovery_type, location, description)"
         " VALUES ('1', 'u', '🦴', 'Erren', '   ')"),
        ("legacy row with metadata that is not JSON", "any",
         "INSERT INTO discoveries (user_id, username, discovery_type, location, description, metadata)"
         " VALUES ('1', 'u', '📖', 'Erren', 'A story', '{not json')"),
        ("legacy row with an unknown discovery type", "any",
         "INSERT INTO discoveries (user_id, username, discovery_type, location, description)"
         " VALUES ('1', 'u', 'fossil', 'Erren', 'Typed by hand')"),
    ]
    for _, _, sql in legacy:
        conn.execute(sql)
    # Fixed times for rows stamped now, so regenerating changes only what changed.
    conn.execute("UPDATE discoveries SET submission_timestamp = datetime('2025-06-01 12:00:00', '+' || id || ' minutes')"
                 " WHERE submission_timestamp >= date('now', '-1 day')")
    conn.commit()
    rows = [dict(r) for r in conn.execute("SELECT * FROM discoveries ORDER BY id")]
    names = [(n, e) for n, e, _ in cases] + [(n, e) for n, e, _ in legacy]
    assert len(rows) == len(names)
    corpus = [{"name": n, "expect": e, "row": r} for (n, e), r in zip(names, rows)]
    with open(os.path.join(HERE, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(corpus, f, ensure_ascii=False, indent=1)
        f.write("\n")

    vh = sqlite3.connect(SAMPLE_VH)
    lookup = {
        "systems": [list(r) for r in vh.execute("SELECT id, name FROM systems ORDER BY id")],
        "planets": [list(r) for r in vh.execute("SELECT id, system_id, name FROM planets ORDER BY id")],
        "moons": [list(r) for r in vh.execute("SELECT id, planet_id, name FROM moons ORDER BY id")],
    }
    with open(os.path.join(HERE, "lookup.json"), "w", encoding="utf-8") as f:
        json.dump(lookup, f, ensure_ascii=False, indent=1)
        f.write("\n")
    shutil.rmtree(work)
    print(f"{len(corpus)} cases")

main()
