"""raella_sim.sweep writes what `raella-sweep` writes (the smoke spec, every
file but the wall-clock timings), and Simulator.cost() is the sweep's cost
of the same simulated activity; stats(as_frame=True) is a DataFrame."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import numpy as np
import pytest

import raella_sim
from conftest import MODEL, ROOT

SMOKE = ROOT / "fixtures" / "sweeps" / "smoke.toml"
# Wall clock: the one result file that differs between runs.
NOT_COMPARED = {"timings.csv"}


def result_files(d: Path) -> dict:
    return {
        p.relative_to(d).as_posix(): p.read_bytes()
        for p in sorted(d.rglob("*"))
        if p.is_file() and ".cache" not in p.relative_to(d).parts
    }


def test_sweep_writes_the_command_lines_files(sweep_bin, tmp_path):
    cli, py = tmp_path / "cli", tmp_path / "py"
    p = subprocess.run(
        [str(sweep_bin), str(SMOKE), "--out", str(cli), "--presets", str(ROOT / "fixtures/presets.toml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert p.returncode == 0, p.stderr
    assert raella_sim.sweep(SMOKE, out=py, progress=False) == py
    a, b = result_files(cli), result_files(py)
    assert set(a) == set(b)
    assert {"results.csv", "results.json", "report.md", "energy.csv"} <= set(a)
    assert any(k.startswith("stats/") for k in a) and any(k.startswith("plots/") for k in a)
    for name in sorted(set(a) - NOT_COMPARED):
        assert a[name] == b[name], f"{name} differs"
    golden = ROOT / "crates/raella-sweep/tests/golden/smoke_results.csv"
    assert b["results.csv"] == golden.read_bytes()
    # Rerun into the same folder: the points come from its cache, same files.
    raella_sim.sweep(SMOKE, out=py, progress=False)
    assert result_files(py)["results.csv"] == a["results.csv"]


def test_sweep_refuses_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"spec .*missing.toml"):
        raella_sim.sweep(tmp_path / "missing.toml")
    occupied = tmp_path / "file"
    occupied.write_text("x")
    with pytest.raises(ValueError, match=r"^out: "):
        raella_sim.sweep(SMOKE, out=occupied, progress=False)
    with pytest.raises(ValueError, match=r"shard \(3, 2\)"):
        raella_sim.sweep(SMOKE, out=tmp_path / "s", shard=(3, 2))
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\narchs = ["raela"]\n')
    with pytest.raises(ValueError, match=r'bad.toml: arch #1 \(raela\): `preset` = "raela": unknown preset'):
        raella_sim.sweep(bad, out=tmp_path / "b", progress=False)


def test_cost_is_the_sweeps_cost_of_the_same_activity(digits, tmp_path):
    # A sweep whose calibration is the 32 digits adaptive slicing reads, so
    # that a Simulator calibrated on the same digits maps the same design.
    fx = ROOT / "fixtures"
    spec = tmp_path / "cost.toml"
    spec.write_text(
        f"""name = "cost"
seeds = [1]
archs = ["isaac8b", "raella"]
[cost]
components = "{fx}/cost/components.toml"
calibration = "{fx}/cost/calibration.toml"
typical = "{fx}/cost/typical_stats.toml"
[[model]]
name = "mnist_cnn"
onnx = "{MODEL}"
images = "{fx}/mnist_cnn/mnist-digits-images-idx3-ubyte.gz"
labels = "{fx}/mnist_cnn/mnist-digits-labels-idx1-ubyte.gz"
scale = 0.00392156862745098
mean = [0.1307]
std = [0.3081]
calibration = {{ start = 0, count = 32 }}
evaluation = {{ start = 5000, count = 40 }}
"""
    )
    out = raella_sim.sweep(spec, out=tmp_path / "out", progress=False)
    with open(out / "energy.csv", newline="") as f:
        rows = {(r["dnn"], r["arch"]): r for r in csv.DictReader(f)}
    images, _ = digits
    for arch in ["isaac8b", "raella"]:
        sim = raella_sim.Simulator(MODEL, arch, calibration=images[0:32], seed=1)
        sim.run(images[5000:5040])
        c = sim.cost()
        row = rows[("mnist_cnn", arch)]
        assert c["dnn"] == "mnist_cnn" and c["arch"] == arch and c["batch"] == 1
        assert c["stats_source"] == row["stats_source"] == "simulation"
        # energy.csv's own formatting of the same numbers.
        for key, fmt in [
            ("energy_mj", ".6f"),
            ("area_mm2", ".3f"),
            ("fj_per_mac", ".2f"),
            ("tops_per_w", ".3f"),
            ("inferences_per_s", ".2f"),
            ("conversions_per_inference", ".1f"),
            ("adc_pj_per_conversion", ".4f"),
            ("digital_energy_mj", ".6f"),
        ]:
            assert format(c[key], fmt) == row[key], (arch, key)
        assert str(c["tiles"]) == row["tiles"] and str(c["crossbars"]) == row["crossbars"]
        assert c["energy_mj"] > 0 and len(c["layers"]) == 4
        assert set(c["breakdown"]) >= {"adc_pj"}


def test_stats_as_frame_is_a_dataframe(cal, x):
    pd = pytest.importorskip("pandas", reason="pandas is not installed")
    sim = raella_sim.Simulator(MODEL, "raella", calibration=cal)
    sim.run(x)
    df = sim.stats(as_frame=True)
    assert isinstance(df, pd.DataFrame)
    assert list(df["layer"]) == [s["layer"] for s in sim.stats()]
    assert df.shape == (4, 15)
    assert np.all(df["conversions"] > 0)
