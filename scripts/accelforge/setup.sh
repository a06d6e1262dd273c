#!/usr/bin/env bash
# Sets up AccelForge for scripts/accelforge/compare.py: a private Python 3.12 venv
# (default .cache/accelforge-venv, gitignored) with the pinned requirements, and, where
# the executables shipped in the hwcomponents wheels do not run on this machine (they
# are built against glibc 2.38 / GLIBCXX_3.4.32; Debian 12 has glibc 2.36), rebuilds
# CACTI and NeuroSim from the C++ sources the same wheels ship, the way their own build
# does it. The wheels' binaries are kept beside the rebuilt ones as *.wheel.
#
# Usage: scripts/accelforge/setup.sh            (PYTHON312=/path/to/python3.12 to choose)
# Needs: python3.12 with venv, g++ and make (Debian: build-essential).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="${ACCELFORGE_VENV:-$REPO/.cache/accelforge-venv}"
BUILD="${ACCELFORGE_BUILD:-$REPO/.cache/accelforge-build}"
JOBS="${JOBS:-2}"

if [ -z "${PYTHON312:-}" ]; then
  if python3.12 -V >/dev/null 2>&1; then PYTHON312=python3.12
  elif [ -x /root/.pyenv/versions/3.12.1/bin/python3.12 ]; then PYTHON312=/root/.pyenv/versions/3.12.1/bin/python3.12
  else echo "setup.sh: no python3.12 found (set PYTHON312)" >&2; exit 1; fi
fi
[ -x "$VENV/bin/python" ] || "$PYTHON312" -m venv "$VENV"
"$VENV/bin/pip" install -q -r "$HERE/requirements.txt"
SP="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

# Does an executable load here? (A glibc mismatch fails at load time with
# "version `GLIBC_2.38' not found"; a binary that loads prints its own usage/banner.)
loads() {
  local out
  out="$(cd /tmp && timeout 20 "$1" </dev/null 2>&1 || true)"
  case "$out" in *"not found (required by"*) return 1 ;; *) return 0 ;; esac
}

CACTI="$SP/hwcomponents_cacti/cacti/cacti"
if loads "$CACTI"; then
  echo "CACTI: the wheel's executable runs here"
else
  echo "CACTI: the wheel's executable does not load here; rebuilding from its sources"
  rm -rf "$BUILD/cacti"; mkdir -p "$BUILD"
  cp -r "$SP/hwcomponents_cacti/cacti" "$BUILD/cacti"
  rm -rf "$BUILD/cacti/obj_dbg" "$BUILD/cacti/obj_opt" "$BUILD/cacti/cacti"
  # The makefile's default target (`dbg`, -O0), as the wheel's own binary was built.
  make -C "$BUILD/cacti" -j"$JOBS" >"$BUILD/cacti.log" 2>&1 || { tail -20 "$BUILD/cacti.log"; exit 1; }
  [ -e "$CACTI.wheel" ] || mv "$CACTI" "$CACTI.wheel"
  cp "$BUILD/cacti/cacti" "$CACTI"
  loads "$CACTI" && echo "CACTI: rebuilt"
fi

NEUROSIM="$SP/hwcomponents_neurosim/NeuroSim/main"
if loads "$NEUROSIM"; then
  echo "NeuroSim: the wheel's executable runs here"
else
  echo "NeuroSim: the wheel's executable does not load here; rebuilding from its sources"
  # hwcomponents-neurosim's own build: DNN_NeuroSim_V1.3's NeuroSIM sources with the
  # package's drop_in/ files copied over them, then `make` (-O3 -fopenmp).
  rm -rf "$BUILD/neurosim"; mkdir -p "$BUILD/neurosim"
  cp -r "$SP/hwcomponents_neurosim/DNN_NeuroSim_V1.3/Inference_pytorch/NeuroSIM/." "$BUILD/neurosim/"
  cp -f "$SP/hwcomponents_neurosim/drop_in/"* "$BUILD/neurosim/"
  make -C "$BUILD/neurosim" -j"$JOBS" >"$BUILD/neurosim.log" 2>&1 || { tail -20 "$BUILD/neurosim.log"; exit 1; }
  [ -e "$NEUROSIM.wheel" ] || mv "$NEUROSIM" "$NEUROSIM.wheel"
  cp "$BUILD/neurosim/main" "$NEUROSIM"
  loads "$NEUROSIM" && echo "NeuroSim: rebuilt"
fi
echo "AccelForge venv ready: $VENV"
