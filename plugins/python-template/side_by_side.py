#!/usr/bin/env python3
"""Runs two mapping plugins side by side and shows every difference.

    side_by_side.py PYTHON.wasm RUST.wasm [--keeper-db PATH [--last N]]

1. The conformance corpus: `keeper plugin check --json` on each plugin,
   compared case by case (outcome, every column, warnings).
2. With --keeper-db: `keeper plugin preview PYTHON.wasm --last N` on that
   keeper.db, which maps its last N synced items with PYTHON.wasm and with
   the plugin active there (normally the built-in Rust one) and prints the
   columns that would change.

RUST.wasm is usually the default plugin, built with
`cargo build -p mapper-guest --target wasm32-wasip2 --release` (it lands in
target/wasm32-wasip2/release/mapper_guest.wasm). The keeper binary is
$KEEPER_BIN, else `keeper` on the PATH. Exits 1 when an outcome, a column or
a warning differs; refusals with the same field but other wording (Python's
and Rust's JSON parsers word errors differently) are shown, not counted.
"""

import argparse
import json
import os
import re
import subprocess
import sys


def keeper(*args, env=None):
    command = [os.environ.get("KEEPER_BIN", "keeper"), *args]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    except FileNotFoundError:
        sys.exit(f"side_by_side.py: cannot run {command[0]}: set KEEPER_BIN to the keeper binary")


def check(plugin, env):
    """The per-case results of `keeper plugin check --json`."""
    done = keeper("plugin", "check", "--json", plugin, env=env)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        sys.exit(f"side_by_side.py: keeper plugin check {plugin} failed:\n{done.stdout}{done.stderr}")
    return report


def field_of(reason):
    """`mapping failed: FIELD: message` -> FIELD."""
    match = re.match(r"mapping failed: ([\w.]+): ", reason or "")
    return match.group(1) if match else None


def compare_cases(left, right, names):
    """Lines describing how the cases differ; (differences, notes)."""
    differences, notes = [], []
    right_cases = {case["name"]: case for case in right["cases"]}
    for case in left["cases"]:
        other = right_cases.pop(case["name"], None)
        name = case["name"]
        if other is None:
            differences.append(f"{name}: only in {names[0]}")
            continue
        if case["outcome"] != other["outcome"]:
            differences.append(
                f"{name}: {names[0]} {case['outcome']} ({case['reason']}), "
                f"{names[1]} {other['outcome']} ({other['reason']})"
            )
            continue
        if case["reason"] != other["reason"]:
            line = f"{name}: {names[0]} says {case['reason']!r}, {names[1]} {other['reason']!r}"
            if case["outcome"] == "refused" and field_of(case["reason"]) == field_of(other["reason"]):
                notes.append(line)
            else:
                differences.append(line)
        left_row, right_row = case["row"] or {}, other["row"] or {}
        for column in sorted(set(left_row) | set(right_row)):
            a, b = left_row.get(column, "(not set)"), right_row.get(column, "(not set)")
            if a != b or type(a) is not type(b):
                differences.append(f"{name}: {column}: {names[0]} {a!r}, {names[1]} {b!r}")
        if case["warnings"] != other["warnings"]:
            differences.append(f"{name}: warnings: {names[0]} {case['warnings']}, {names[1]} {other['warnings']}")
    differences.extend(f"{name}: only in {names[1]}" for name in right_cases)
    return differences, notes


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("python", help="the Python plugin (.wasm)")
    parser.add_argument("rust", help="the Rust plugin to compare with (.wasm)")
    parser.add_argument("--keeper-db", help="also preview PYTHON.wasm on this keeper.db's last synced items")
    parser.add_argument("--last", type=int, default=50, help="how many synced items to preview (default 50)")
    args = parser.parse_args()

    # With a keeper.db the checks fill its compiled-plugin cache, which the
    # preview below then uses instead of compiling again.
    env = dict(os.environ, KEEPER_DB_PATH=args.keeper_db) if args.keeper_db else None
    left, right = check(args.python, env), check(args.rust, env)
    names = [
        f"{(report['plugin'] or {}).get('name', '?')} {(report['plugin'] or {}).get('version', '')}".strip()
        for report in (left, right)
    ]
    print(f"conformance corpus: {names[0]} ({args.python}) against {names[1]} ({args.rust})")
    for name, report in zip(names, (left, right)):
        verdict = "accepted" if report["accepted"] else f"REJECTED: {report['reason']}"
        print(f"  {name}: {verdict}")
    differences, notes = compare_cases(left, right, names)
    for line in notes:
        print(f"  same refusal, other words: {line}")
    for line in differences:
        print(f"  DIFFERS: {line}")
    print(f"  {len(left['cases'])} case(s): {len(differences)} difference(s), "
          f"{len(notes)} refusal(s) worded differently")

    changed = 0
    if args.keeper_db:
        done = keeper("plugin", "preview", args.python, "--last", str(args.last), env=env)
        print(f"\nkeeper.db {args.keeper_db}: the last {args.last} synced item(s), the active plugin against {names[0]}")
        print("  " + done.stdout.rstrip().replace("\n", "\n  "))
        if done.returncode != 0:
            sys.exit(f"side_by_side.py: keeper plugin preview failed:\n{done.stderr}")
        summary = re.search(r"(\d+) of \d+ item\(s\) would change", done.stdout)
        changed = int(summary.group(1)) if summary else 0

    sys.exit(1 if differences or changed else 0)


if __name__ == "__main__":
    main()
