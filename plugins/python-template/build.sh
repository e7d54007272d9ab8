#!/usr/bin/env bash
# Builds the Python mapping plugin into one .wasm component:
#
#   plugins/python-template/build.sh [OUTPUT.wasm [APP_DIR]]
#
# OUTPUT.wasm defaults to target/python-plugin/keeper_python_mapper.wasm
# (under CARGO_TARGET_DIR when that is set); APP_DIR, the folder holding
# app.py and mapping.py, defaults to this one (give yours when you keep a
# copy of the template elsewhere). The first run makes a venv with the
# pinned componentize-py (target/tools/, ignored by git) and needs network
# access to PyPI; later runs reuse it.
#
# The world is `mapper-with-limits`: app.py declares the memory and time
# the plugin needs (requested_limits). `--stub-wasi` replaces every WASI
# import with a stub that traps, so the component imports only the
# keeper:mapper interfaces: keeper refuses a plugin that imports files,
# sockets, the environment, clocks or randomness.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
out=${1:-$target/python-plugin/keeper_python_mapper.wasm}
app_dir=${2:-$here}
venv=$target/tools/componentize-py-$COMPONENTIZE_PY_VERSION

# Two builds at once (the plugin tests build variants in parallel) must not
# both make the venv: the second waits for the first under a lock (flock,
# where the system has it: Linux; macOS ships none, and runs one build at a
# time there), then finds it made.
mkdir -p "$(dirname "$venv")"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$venv.lock"
    flock 9
fi
if [ ! -x "$venv/bin/componentize-py" ]; then
    echo "build.sh: installing componentize-py $COMPONENTIZE_PY_VERSION into $venv" >&2
    rm -rf "$venv"
    if ! python3 -m venv "$venv"; then
        echo "build.sh: python3 cannot make a venv; on Debian or Ubuntu: apt-get install python3-venv" >&2
        exit 1
    fi
    "$venv/bin/pip" install -q --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
fi
# The venv is made: other builds may go on at once.
exec 9>&-

mkdir -p "$(dirname "$out")"
# Written aside and renamed: a watched plugins folder never sees half a file.
partial="$out.partial"
"$venv/bin/componentize-py" \
    --wit-path "$root/mapper-guest/wit" --world mapper-with-limits \
    componentize app --python-path "$app_dir" --stub-wasi --output "$partial"
mv "$partial" "$out"
echo "$out"
