#!/usr/bin/env bash
# CI builds the release workspace once: `scripts/slurm-test.sh` and
# `scripts/python-test.sh` build `-p xtask -p raella-sweep -p raella-py`, and
# maturin's wheel build (`raella-py` alone, with `extension-module`) reuses
# those artifacts only where each crate is compiled with the same features.
# `crates/raella-py/Cargo.toml` and `raella-onnx`'s build dependencies pin the
# features that `xtask`'s dependencies turn on in shared crates; a dependency
# update can break that match silently (CI would compile the workspace twice,
# about 3 more minutes). This check fails, naming the crates, when any crate of
# the wheel's build other than pyo3's and `raella-py` itself is compiled with
# features the shared build does not give it. No compilation: `cargo tree`.
set -euo pipefail
cd "$(dirname "$0")/../.."

tree() {
    cargo tree --locked -e normal,build -f '{p} [{f}]' --prefix none "$@" |
        sed -e 's/ (\*)$//' -e 's/ (proc-macro)//' | sort -u
}

alone=$(tree -p raella-py --features raella-py/extension-module)
shared=$(tree -p xtask -p raella-sweep -p raella-py)
extra=$(comm -23 <(echo "$alone") <(echo "$shared") | grep -vE '^(pyo3(-[a-z-]+)? |raella-py )' || true)
if [ -n "$extra" ]; then
    echo "feature_pins: the wheel's build compiles these crates with features the shared release" >&2
    echo "build (-p xtask -p raella-sweep -p raella-py) does not give them; pin the missing" >&2
    echo "features in crates/raella-py/Cargo.toml (or raella-onnx's build dependencies):" >&2
    echo "$extra" >&2
    exit 1
fi
echo "feature_pins: the wheel's build reuses the shared release build (only pyo3 and raella-py differ)"
