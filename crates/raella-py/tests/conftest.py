"""Shared fixtures of the raella_sim tests: the committed MNIST CNN and its
digits (read from the IDX files with gzip and NumPy, preprocessed as the sweep
specs say), and the command-line programs the tests compare with.

`scripts/python-test.sh` builds the wheel, installs it into a fresh venv and
runs these tests with RAELLA_XTASK and RAELLA_SWEEP_BIN naming the release
builds of `xtask` and `raella-sweep`.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(os.environ.get("RAELLA_ROOT", Path(__file__).resolve().parents[3]))
FIXTURE = ROOT / "fixtures" / "mnist_cnn"
MODEL = FIXTURE / "mnist_cnn.onnx"
# The preprocessing of fixtures/sweeps/*.toml: x = (pixel * scale - mean) / std.
SCALE, MEAN, STD = 0.00392156862745098, 0.1307, 0.3081


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped), as the array it declares."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, kind, ndim = struct.unpack(">HBB", data[:4])
    assert zero == 0 and kind == 0x08, f"{path}: not an unsigned-byte IDX file"
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """(images N x 1 x 28 x 28 float32, preprocessed in float32 as the sweep
    does; labels N int64)."""
    images = read_idx(FIXTURE / "mnist-digits-images-idx3-ubyte.gz")
    labels = read_idx(FIXTURE / "mnist-digits-labels-idx1-ubyte.gz")
    x = (images.astype(np.float32) * np.float32(SCALE) - np.float32(MEAN)) / np.float32(STD)
    return x[:, None, :, :].astype(np.float32), labels.astype(np.int64)


@pytest.fixture(scope="session")
def cal(digits) -> np.ndarray:
    """Calibration digits (the default sweep's calibration range, shortened)."""
    return np.ascontiguousarray(digits[0][0:64])


@pytest.fixture(scope="session")
def x(digits) -> np.ndarray:
    """Evaluation digits, disjoint from the calibration digits."""
    return np.ascontiguousarray(digits[0][200:264])


def _tool(env: str, name: str) -> Path:
    p = Path(os.environ.get(env, ROOT / "target" / "release" / name))
    if not p.is_file():
        pytest.skip(
            f"{name} is not built ({p}): run scripts/python-test.sh, or "
            f"`cargo build --release -p {name}` and set {env}"
        )
    return p


@pytest.fixture(scope="session")
def xtask() -> Path:
    return _tool("RAELLA_XTASK", "xtask")


@pytest.fixture(scope="session")
def sweep_bin() -> Path:
    return _tool("RAELLA_SWEEP_BIN", "raella-sweep")


@pytest.fixture(scope="session")
def run_onnx(xtask, tmp_path_factory):
    """`cargo xtask run-onnx MODEL --input input=X --calibration input=CAL
    --design D [--set k=v ...] --seed S --out DIR`; returns (outputs,
    stats.json or None, completed process)."""

    def run(x: np.ndarray, design: str, *, cal=None, sets=(), seed=1, check=True):
        d = tmp_path_factory.mktemp("run_onnx")
        np.save(d / "x.npy", x)
        args = [str(xtask), "run-onnx", str(MODEL), "--input", f"input={d / 'x.npy'}"]
        if cal is not None:
            np.save(d / "cal.npy", cal)
            args += ["--calibration", f"input={d / 'cal.npy'}"]
        args += ["--design", design, "--seed", str(seed), "--out", str(d / "out")]
        for s in sets:
            args += ["--set", s]
        p = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
        if check:
            assert p.returncode == 0, p.stderr
        if p.returncode != 0:
            return None, None, p
        outputs = [np.load(d / "out" / f"output_{i}.npy") for i in range(1)]
        stats_path = d / "out" / "stats.json"
        stats = json.loads(stats_path.read_text()) if stats_path.exists() else None
        return outputs, stats, p

    return run
