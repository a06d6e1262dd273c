#!/usr/bin/env bash
# Sets up the peer simulator aihwkit for scripts/peers/aihwkit_bench.py: a private
# Python 3.11 venv (default .cache/peers-venv, gitignored) with the pinned
# scripts/peers/requirements.txt. Idempotent: an existing venv is reused and pip
# installs only what is missing or at another version. Not run by CI.
#
# Usage: scripts/peers/setup.sh          (PYTHON311=/path/to/python3.11 to choose,
#                                         PEERS_VENV=DIR for another venv folder)
#
# What it downloads from PyPI (first run; 2026-12 sizes): about 4.3 GB of wheels,
# of which 3.2 GB are the CUDA 12.8 libraries PyPI's Linux torch wheel depends on
# (nvidia-cudnn 707 MB, nvidia-cublas 594 MB, nccl, cusparse, cusolver, ... and
# triton; installed, never loaded without a GPU), torch 2.10.0 itself 916 MB,
# aihwkit 1.1.0 14 MB, the rest (scipy, scikit-learn, torchvision, onnx, cmake,
# mypy, ...) about 150 MB. The venv takes about 7.5 GB on disk.
#
# Why these versions: aihwkit 1.2.0 has no cp311 wheel; 1.1.0's cp311 wheel
# (manylinux_2_28) asks torch>=2.9.1 and imports and runs with torch 2.10.0.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="${PEERS_VENV:-$REPO/.cache/peers-venv}"
NEED_GB=9

if [ -z "${PYTHON311:-}" ]; then
  if python3.11 -V >/dev/null 2>&1; then PYTHON311=python3.11
  elif python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then PYTHON311=python3
  else echo "setup.sh: no Python 3.11 found (set PYTHON311);" \
         "requirements.txt was resolved and checked on 3.11" >&2; exit 1; fi
fi

if [ -x "$VENV/bin/python" ] && "$VENV/bin/pip" install --dry-run --no-deps --quiet --report - \
     -r "$HERE/requirements.txt" 2>/dev/null | "$VENV/bin/python" -c \
     'import json, sys; sys.exit(1 if json.load(sys.stdin)["install"] else 0)'; then
  echo "setup.sh: $VENV already has every pinned package"
else
  mkdir -p "$(dirname "$VENV")"
  AVAIL_GB="$(df -Pk "$(dirname "$VENV")" | awk 'NR == 2 { print int($4 / 1048576) }')"
  if [ ! -x "$VENV/bin/python" ] && [ "$AVAIL_GB" -lt "$NEED_GB" ]; then
    echo "setup.sh: ${AVAIL_GB} GB free under $(dirname "$VENV");" \
         "the venv needs about ${NEED_GB} GB while installing" >&2
    exit 1
  fi
  echo "setup.sh: installing scripts/peers/requirements.txt into $VENV"
  echo "setup.sh: first run downloads about 4.3 GB from PyPI (3.2 GB CUDA libraries torch depends on,"
  echo "setup.sh: torch 0.9 GB, aihwkit 14 MB, the rest ~0.15 GB); the venv takes about 7.5 GB"
  [ -x "$VENV/bin/python" ] || "$PYTHON311" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip==25.3
  "$VENV/bin/pip" install --progress-bar off -r "$HERE/requirements.txt"
fi

# aihwkit's C++ extension must load against this torch (an ABI mismatch fails here).
"$VENV/bin/python" - <<'EOF'
import torch, aihwkit
from aihwkit.simulator import rpu_base  # noqa: F401 - the C++ (RPUCuda) extension
from aihwkit.simulator.configs import InferenceRPUConfig, TorchInferenceRPUConfig  # noqa: F401
print(f"setup.sh: aihwkit {aihwkit.__version__} with torch {torch.__version__} imports, C++ tile loaded")
EOF
echo "peers venv ready: $VENV"
