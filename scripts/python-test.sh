#!/usr/bin/env bash
# The Python package end to end (run by .ci/run): builds the raella_sim wheel
# with maturin (release, in the workspace's target dir, so rebuilds are
# incremental), installs it into a fresh venv and runs crates/raella-py/tests
# with pytest against the command line it must agree with (release builds of
# xtask's run-onnx and raella-sweep).
#
# Private tools live in .cache/python/: a venv with the pinned maturin, and a
# wheelhouse of the pinned test requirements, each made again when its pins
# change (scripts/python/requirements-*.txt). The test venv is made anew from
# the wheelhouse on every run, without the network. PYTHON picks the
# interpreter (default python3, 3.9 or newer).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
CACHE="$ROOT/.cache/python"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
PINS="$ROOT/scripts/python"
START=$SECONDS
mkdir -p "$CACHE"

stamp() { sha256sum "$1" | cut -c1-16; }
pip_quiet=(--quiet --disable-pip-version-check)

TOOLS="$CACHE/tools-venv"
if [ "$(cat "$TOOLS/.stamp" 2>/dev/null)" != "$(stamp "$PINS/requirements-build.txt")" ]; then
    rm -rf "$TOOLS"
    "$PYTHON" -m venv "$TOOLS"
    "$TOOLS/bin/pip" install "${pip_quiet[@]}" -r "$PINS/requirements-build.txt"
    stamp "$PINS/requirements-build.txt" >"$TOOLS/.stamp"
fi

WHEELS="$CACHE/wheelhouse"
if [ "$(cat "$WHEELS/.stamp" 2>/dev/null)" != "$(stamp "$PINS/requirements-test.txt")" ]; then
    rm -rf "$WHEELS"
    "$TOOLS/bin/pip" download "${pip_quiet[@]}" --only-binary=:all: -d "$WHEELS" \
        -r "$PINS/requirements-test.txt"
    stamp "$PINS/requirements-test.txt" >"$WHEELS/.stamp"
fi

# The command line the tests compare with. raella-py joins the set so the
# shared crates get the features maturin's build of it sees, and that build
# reuses these (crates/raella-py/Cargo.toml; scripts/slurm-test.sh builds the
# same set).
cargo build --quiet --release -p xtask -p raella-sweep -p raella-py

# The wheel (abi3, CPython 3.9+), as `pip install .` would build it.
DIST="$CACHE/dist"
rm -rf "$DIST"
"$TOOLS/bin/maturin" build --release --interpreter "$PYTHON" --out "$DIST"

VENV="$CACHE/test-venv"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install "${pip_quiet[@]}" --no-index --find-links "$WHEELS" \
    -r "$PINS/requirements-test.txt"
"$VENV/bin/pip" install "${pip_quiet[@]}" --no-index --no-deps "$DIST"/raella_sim-*.whl

# From outside the source tree: `import raella_sim` is the installed wheel.
cd "$CACHE"
RAELLA_ROOT="$ROOT" \
    RAELLA_XTASK="$TARGET/release/xtask" \
    RAELLA_SWEEP_BIN="$TARGET/release/raella-sweep" \
    "$VENV/bin/python" -m pytest -p no:cacheprovider -q -rs "$ROOT/crates/raella-py/tests"
echo "python-test: $((SECONDS - START)) s"
