#!/usr/bin/env bash
# Fetches ONNX's backend test data into .cache/onnx-backend/ (or $1) for the
# conformance test (crates/raella-onnx/tests/conformance.rs):
#
#   simple/ pytorch-converted/ pytorch-operator/ light/
#       extracted from the onnx 1.23.2 wheel (pip download, sha256 pinned);
#   node/
#       the ~1900 single-operator cases. onnx no longer ships them as files (the
#       wheel and sdist hold only the Python that builds them), so they are
#       written by scripts/fetch/onnx_node_cases.py run in a private venv
#       (venv/, removed afterwards) with onnx 1.23.2 and numpy installed by pip.
#
# Needs python3 (3.9+, with venv) and PyPI. Safe to re-run: finished steps are
# skipped (a stamp file per step). Takes ~20 s the first time, ~0 s after.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DEST="${1:-$ROOT/.cache/onnx-backend}"
ONNX_VERSION=1.23.2
# The wheel for one fixed platform, whatever the host: the test data in every
# wheel is the same, and a fixed file has one checksum to pin.
WHEEL="onnx-1.23.2-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"
WHEEL_SHA256="c03ecf6b835d136108eeaeeafbd0026fc7b3cf98661409fbc6b63d5a29361348"
# The node-case generator's environment (the versions scripts/fetch/requirements.txt pins).
VENV_REQS=(numpy==2.2.6 protobuf==7.36.2 ml_dtypes==0.6.0)
PY="${PYTHON:-python3}"

mkdir -p "$DEST/wheel"
cd "$DEST"

if [[ ! -f .stamp-data ]] || [[ "$(cat .stamp-data)" != "$WHEEL_SHA256" ]]; then
    if [[ ! -f "wheel/$WHEEL" ]]; then
        "$PY" -m pip download --quiet --no-deps --only-binary=:all: \
            --platform manylinux_2_28_x86_64 --python-version 3.11 \
            --implementation cp --abi cp311 \
            -d wheel "onnx==$ONNX_VERSION"
    fi
    got="$(sha256sum "wheel/$WHEEL" | cut -d' ' -f1)"
    if [[ "$got" != "$WHEEL_SHA256" ]]; then
        echo "onnx_backend: wheel/$WHEEL has sha256 $got, expected $WHEEL_SHA256" >&2
        exit 1
    fi
    "$PY" - "wheel/$WHEEL" <<'PYEOF'
import os, shutil, sys, zipfile
prefix = "onnx/backend/test/data/"
suites = ("simple", "pytorch-converted", "pytorch-operator", "light")
for s in suites:
    shutil.rmtree(s, ignore_errors=True)
with zipfile.ZipFile(sys.argv[1]) as z:
    for info in z.infolist():
        rel = info.filename[len(prefix):] if info.filename.startswith(prefix) else None
        if rel is None or rel.split("/")[0] not in suites or info.is_dir():
            continue
        # Wheel paths are relative and plain; refuse anything else.
        if rel.startswith("/") or ".." in rel.split("/"):
            sys.exit(f"onnx_backend: unsafe path {info.filename}")
        os.makedirs(os.path.dirname(rel), exist_ok=True)
        with z.open(info) as src, open(rel, "wb") as dst:
            shutil.copyfileobj(src, dst)
PYEOF
    echo "$WHEEL_SHA256" > .stamp-data
    echo "onnx_backend: extracted simple, pytorch-converted, pytorch-operator, light into $DEST"
fi

if [[ ! -f .stamp-node ]] || [[ "$(cat .stamp-node)" != "$ONNX_VERSION" ]]; then
    if [[ ! -x venv/bin/python ]]; then
        "$PY" -m venv venv
    fi
    # The verified wheel where this Python can install it, else the same release by name.
    venv/bin/python -m pip install --quiet --only-binary=:all: "${VENV_REQS[@]}" "wheel/$WHEEL" 2>/dev/null ||
        venv/bin/python -m pip install --quiet --only-binary=:all: "${VENV_REQS[@]}" "onnx==$ONNX_VERSION"
    venv/bin/python -W ignore "$ROOT/scripts/fetch/onnx_node_cases.py" "$DEST/node"
    echo "$ONNX_VERSION" > .stamp-node
    # The environment is needed only to write the cases (~140 MB): not kept.
    rm -rf venv
fi
