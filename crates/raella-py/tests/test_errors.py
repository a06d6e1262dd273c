"""Bad input is an exception naming the thing at fault: ValueError for bad
values (unknown preset or knob, impossible knob value, wrong shape), TypeError
for a wrong type or dtype, FileNotFoundError for a missing file, with the
command line's messages."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import raella_sim
from conftest import MODEL


@pytest.fixture(scope="module")
def sim(cal):
    return raella_sim.Simulator(MODEL, "raella", calibration=cal)


def test_wrong_dtype_is_a_type_error_naming_input_and_dtypes(sim, x):
    with pytest.raises(TypeError, match=r"input `input`.*float32 or float64.*got int32"):
        sim.run(x.astype(np.int32))
    with pytest.raises(TypeError, match=r"input `input`.*got uint8"):
        sim.run((x * 10).astype(np.uint8))


def test_not_an_array_is_a_type_error(sim, x):
    with pytest.raises(TypeError, match=r"input `input`: expected a numpy.ndarray, got list"):
        sim.run(x.tolist())
    with pytest.raises(TypeError, match=r"dict keys are input names"):
        sim.run({1: x})


def test_wrong_rank_is_a_value_error_naming_input_and_shape(sim, x):
    with pytest.raises(ValueError, match=r"input `input`: the model declares rank 4, got shape \[64, 28, 28\]"):
        sim.run(x[:, 0])


def test_wrong_dimension_is_a_value_error_naming_it(sim):
    with pytest.raises(ValueError, match=r"input `input`: dimension 2 is 28 in the model, 27 given"):
        sim.run(np.zeros((2, 1, 27, 28), np.float32))


def test_unknown_and_missing_inputs_are_value_errors(sim, x):
    with pytest.raises(ValueError, match=r"input `image`: the model has no such input \(inputs: input\)"):
        sim.run({"image": x})
    with pytest.raises(ValueError, match=r"no array for the model's input `input`"):
        sim.run({})


def test_wrong_calibration_is_named_as_calibration(cal):
    with pytest.raises(TypeError, match=r"calibration `input`"):
        raella_sim.Simulator(MODEL, "raella", calibration=cal.astype(np.int64))
    with pytest.raises(ValueError, match=r"input `input`: dimension 1 is 1 in the model, 3 given"):
        raella_sim.Simulator(MODEL, "raella", calibration=np.zeros((2, 3, 28, 28), np.float32))


def test_unknown_preset_is_a_value_error_listing_the_presets():
    with pytest.raises(ValueError, match=r'`preset` = "raela": unknown preset \(known: .*raella.*\)'):
        raella_sim.Design.preset("raela")
    with pytest.raises(ValueError, match=r"unknown preset"):
        raella_sim.Simulator(MODEL, "raela")


def test_unknown_knob_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match=r"unknown field `adcbits`"):
        raella_sim.Design.preset("raella", adcbits=6)


def test_impossible_knob_value_is_a_value_error_naming_knob_and_value():
    with pytest.raises(ValueError, match=r"`adc_bits` = 30"):
        raella_sim.Design.preset("raella", adc_bits=30)
    with pytest.raises(ValueError, match=r"adc_bits"):
        raella_sim.Design.preset("raella", adc_bits="six")


def test_knob_of_no_toml_type_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match=r"knob `noise_e`: expected a bool, int, float, str or list, got dict"):
        raella_sim.Design.preset("raella", noise_e={"e": 1})


def test_design_of_wrong_type_is_a_type_error():
    with pytest.raises(TypeError, match=r"design: expected a raella_sim.Design or a preset name, got int"):
        raella_sim.Simulator(MODEL, 3)


def test_messages_are_the_command_lines(run_onnx, x):
    # Everything after where the design came from (`run-onnx --design/--set`
    # there, `Design.preset` here) is the same text.
    for design, sets, kwargs in [
        ("raela", [], {}),
        ("raella", ["adcbits=6"], {"adcbits": 6}),
        ("raella", ["adc_bits=30"], {"adc_bits": 30}),
    ]:
        _, _, p = run_onnx(x, design, sets=sets, check=False)
        assert p.returncode != 0
        cli = p.stderr.strip().removeprefix("error: run-onnx --design/--set: ")
        with pytest.raises(ValueError) as e:
            raella_sim.Design.preset(design, **kwargs)
        assert str(e.value).removeprefix("Design.preset: ") == cli


def test_missing_model_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model .*nope.onnx"):
        raella_sim.Simulator(tmp_path / "nope.onnx", "raella")
    with pytest.raises(FileNotFoundError):
        raella_sim.reference(tmp_path / "nope.onnx", np.zeros(1, np.float32))


def test_a_file_that_is_not_onnx_is_a_value_error_naming_it(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"bad.onnx"):
        raella_sim.Simulator(bad, "raella")


def test_unknown_reference_kind_is_a_value_error(x):
    with pytest.raises(ValueError, match=r'kind `fp16`: expected "fp32" or "int8"'):
        raella_sim.reference(MODEL, x, kind="fp16")


def test_stats_and_cost_before_a_run_are_runtime_errors(cal):
    sim = raella_sim.Simulator(MODEL, "raella", calibration=cal)
    with pytest.raises(RuntimeError, match=r"no run yet"):
        sim.stats()
    with pytest.raises(RuntimeError, match=r"no run yet"):
        sim.cost()


def test_stats_as_frame_without_pandas_names_pandas(sim, x, monkeypatch):
    sim.run(x)
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"needs pandas.*pip install pandas"):
        sim.stats(as_frame=True)
    assert isinstance(sim.stats(), list)


def test_from_torch_without_torch_names_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"from_torch needs PyTorch.*pip install torch"):
        raella_sim.Simulator.from_torch(object(), None, "raella")
