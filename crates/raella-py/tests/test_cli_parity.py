"""raella_sim gives what the command line gives: the MNIST CNN through
`Simulator` against `cargo xtask run-onnx` for the same design and seed,
outputs bit for bit and every per-layer statistic; the digital references
against `--design fp32|int8`; self-calibration as without `--calibration`."""

from __future__ import annotations

import concurrent.futures
import warnings

import numpy as np
import pytest

import raella_sim
from conftest import MODEL

# Every field of stats.json's `layers` entries.
STATS_FIELDS = {
    "conversions",
    "converts_per_mac",
    "exact_fraction",
    "groups",
    "in_range_fraction",
    "input_scale",
    "kind",
    "layer",
    "layer_rel_err",
    "macs",
    "matrix",
    "recovery_rate",
    "signed_input",
    "vectors",
    "weight_slicing",
}


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def assert_same_stats(py: list, cli: list) -> None:
    assert len(py) == len(cli) == 4
    for p, c in zip(py, cli):
        assert set(p) == set(c) == STATS_FIELDS
        for k in STATS_FIELDS:
            if k == "input_scale":
                # An f32: stats.json writes its shortest decimal, Python gets its exact value.
                assert np.float32(p[k]) == np.float32(c[k]), (p["layer"], k)
            else:
                assert p[k] == c[k], (p["layer"], k, p[k], c[k])


@pytest.mark.parametrize(
    "preset,knobs,sets,seed",
    [
        ("raella", {}, [], 1),
        ("isaac8b", {}, [], 1),
        # Read noise: the noise streams are keyed by the seed.
        ("raella", {"noise_e": 0.08}, ["noise_e=0.08"], 3),
        ("raella", {"adc_bits": 6, "weight_slicing": "4-4"}, ["adc_bits=6", "weight_slicing=4-4"], 1),
        # Device non-idealities (docs/DEVICES.md): programming-time and per-ADC draws.
        (
            "isaac8b",
            {"on_off_ratio": 15.0, "programming_sigma": 0.02, "adc_offset_lsb_sigma": 0.3},
            ["on_off_ratio=15.0", "programming_sigma=0.02", "adc_offset_lsb_sigma=0.3"],
            2,
        ),
    ],
)
def test_simulator_matches_run_onnx(run_onnx, cal, x, preset, knobs, sets, seed):
    design = raella_sim.Design.preset(preset, **knobs)
    sim = raella_sim.Simulator(MODEL, design, calibration=cal, seed=seed)
    y = sim.run(x)
    (y_cli,), stats_cli, _ = run_onnx(x, preset, cal=cal, sets=sets, seed=seed)
    assert y.shape == (64, 10)
    assert same_bits(y, y_cli)
    assert stats_cli["design"] == design.name == sim.design.name
    assert stats_cli["seed"] == seed
    assert_same_stats(sim.stats(), stats_cli["layers"])
    # The same design and seed again: the same bits.
    again = raella_sim.Simulator(str(MODEL), design, calibration=cal, seed=seed).run(x)
    assert same_bits(again, y)


def test_a_preset_name_is_a_design(cal, x):
    by_name = raella_sim.Simulator(MODEL, "raella", calibration=cal).run(x)
    by_design = raella_sim.Simulator(MODEL, raella_sim.Design.preset("raella"), calibration=cal).run(x)
    assert same_bits(by_name, by_design)


def test_inputs_as_dict_float64_and_fortran_order_give_the_same_bits(cal, x):
    sim = raella_sim.Simulator(MODEL, "raella", calibration={"input": cal})
    y = sim.run(x)
    assert same_bits(sim.run({"input": x}), y)
    assert same_bits(sim.run(np.asfortranarray(x)), y)
    # float64 is rounded to float32, as run-onnx reads a float64 .npy.
    assert same_bits(sim.run(x.astype(np.float64)), y)
    # A strided view is read as its values.
    wide = np.repeat(x, 2, axis=0)[::2]
    assert not wide.flags["C_CONTIGUOUS"]
    assert same_bits(sim.run(wide), y)


def test_runs_in_threads_give_the_serial_results(cal, x):
    sim = raella_sim.Simulator(MODEL, raella_sim.Design.preset("raella", noise_e=0.04), calibration=cal)
    serial = [sim.run(x[i : i + 16]) for i in range(0, 64, 16)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda i: sim.run(x[i : i + 16]), range(0, 64, 16)))
    for a, b in zip(serial, threaded):
        assert same_bits(a, b)


@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_references_match_run_onnx(run_onnx, cal, x, kind):
    y = raella_sim.reference(MODEL, x, kind=kind, calibration=cal)
    (y_cli,), stats, _ = run_onnx(x, kind, cal=cal)
    assert stats is None
    assert same_bits(y, y_cli)


def test_self_calibration_matches_run_onnx_without_calibration(run_onnx, x):
    sim = raella_sim.Simulator(MODEL, "raella")
    with pytest.warns(UserWarning, match="the inputs calibrate themselves"):
        y = sim.run(x)
    (y_cli,), stats_cli, p = run_onnx(x, "raella")
    assert "no --calibration given" in p.stdout
    assert same_bits(y, y_cli)
    assert_same_stats(sim.stats(), stats_cli["layers"])
    # Built once: the next run neither warns nor recalibrates.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert same_bits(sim.run(x), y)


def test_int8_reference_without_calibration_matches_run_onnx(run_onnx, x):
    with pytest.warns(UserWarning, match="calibrate"):
        y = raella_sim.reference(MODEL, x, kind="int8")
    (y_cli,), _, _ = run_onnx(x, "int8")
    assert same_bits(y, y_cli)


def test_a_noise_free_wide_adc_raella_equals_the_int8_reference(cal, x):
    # docs/DECISIONS: with an ADC wide enough never to clip and no noise, the
    # crossbars compute the exact 8-bit MACs.
    wide = raella_sim.Design.preset("raella", adc_bits=16, adaptive=False)
    y = raella_sim.Simulator(MODEL, wide, calibration=cal).run(x)
    assert same_bits(y, raella_sim.reference(MODEL, x, kind="int8", calibration=cal))


def test_run_releases_the_gil(digits, cal):
    # While one thread simulates, another keeps running Python. With the GIL
    # held through the run, the spinning thread would get only the moments
    # before the run takes the GIL and after it returns (short: a 10 us switch
    # interval), not the run's whole length. Measured here: ~4M spins during a
    # 0.8 s run of 100 digits; ~5,000 while a GIL-holding builtin
    # (`sum(range(3e7))`, 0.5 s) ran in the other thread.
    import sys
    import threading

    sim = raella_sim.Simulator(MODEL, "raella", calibration=cal)
    big = np.ascontiguousarray(digits[0][1000:1100])
    done = threading.Event()

    def work():
        sim.run(big)
        done.set()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        t = threading.Thread(target=work)
        t.start()
        spins = 0
        while not done.is_set():
            spins += 1
        t.join()
    finally:
        sys.setswitchinterval(interval)
    assert spins > 200_000, spins
