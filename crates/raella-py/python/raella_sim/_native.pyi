"""Type stubs of the compiled part of raella_sim (crates/raella-py/src)."""

import os
import pathlib
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union, final

import numpy.typing as npt
from typing_extensions import Self, disjoint_base

_Path = Union[str, "os.PathLike[str]"]
_Array = npt.NDArray[Any]
# One array for a model with one input, else arrays keyed by graph input name.
_Inputs = Union[_Array, Mapping[str, _Array]]
# One array for a model with one output, else arrays keyed by graph output name.
_Outputs = Union[_Array, Dict[str, _Array]]
_Knob = Union[bool, int, float, str, List[Any]]

__all__ = ["Design", "_Simulator", "reference", "sweep", "__version__"]
__version__: str

@final
class Design:
    """A simulated design: a preset of fixtures/presets.toml, knobs overridden."""

    @staticmethod
    def preset(name: str, /, **knobs: _Knob) -> "Design":
        """Preset ``name`` with knobs overridden (``adc_bits=6``, ``noise_e=0.04``,
        ``weight_slicing="4-2-2"``, ...; docs/PRESETS.md lists them). Raises
        ValueError naming an unknown preset or knob or an impossible value,
        TypeError for a value of no TOML type."""
    @staticmethod
    def presets() -> List[str]:
        """The preset names."""
    @property
    def name(self) -> str:
        """Name in results: the preset, then the knobs changed (``raella[adc_bits=6]``)."""
    @property
    def preset_name(self) -> Optional[str]:
        """The preset it starts from."""
    @property
    def description(self) -> Optional[str]:
        """The preset's one-line description."""
    @property
    def knobs(self) -> Dict[str, Any]:
        """Every knob, resolved."""
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@disjoint_base
class _Simulator:
    def __new__(
        cls,
        model: _Path,
        design: Union[Design, str],
        calibration: Optional[_Inputs] = None,
        seed: int = 1,
    ) -> Self: ...
    def run(self, x: _Inputs) -> _Outputs:
        """Simulates ``x`` as one batch (GIL released). Float inputs take float32
        or float64 arrays, integer inputs int64 or int32 (TypeError otherwise);
        a shape the model does not declare is a ValueError. Outputs are float32
        (int64 or bool for integer or bool outputs)."""
    def stats(self, as_frame: bool = False) -> Any:
        """The last run's per-layer statistics, the fields of run-onnx's
        stats.json: ``conversions, converts_per_mac, exact_fraction, groups,
        in_range_fraction, input_scale, kind, layer, layer_rel_err, macs, matrix,
        recovery_rate, signed_input, vectors, weight_slicing``. A list of dicts,
        or a pandas DataFrame with ``as_frame=True`` (ImportError without pandas).
        RuntimeError before the first run."""
    def cost(self) -> Dict[str, Any]:
        """Energy, area and throughput per inference from the last run's measured
        activity, by the sweep's cost model and shipped tables: energy.csv's
        fields (``energy_mj``, ``fj_per_mac``, ``tops_per_w``,
        ``inferences_per_s``, ``area_mm2``, ...), ``breakdown`` by category (pJ)
        and ``layers``. RuntimeError before the first run."""
    @property
    def design(self) -> Design: ...
    @property
    def seed(self) -> int: ...
    @property
    def model(self) -> pathlib.Path: ...
    @property
    def inputs(self) -> List[str]:
        """Graph input names, in order."""
    @property
    def outputs(self) -> List[str]:
        """Graph output names, in order."""

def reference(
    model: _Path,
    x: _Inputs,
    kind: str = "fp32",
    calibration: Optional[_Inputs] = None,
) -> _Outputs:
    """Digital reference: ``kind="fp32"`` (float32) or ``"int8"`` (int8 weights,
    8-bit activations calibrated on ``calibration`` or on ``x``, exact MACs)."""

def sweep(
    spec: _Path,
    out: Optional[_Path] = None,
    *,
    presets: Optional[_Path] = None,
    shard: Optional[Tuple[int, int]] = None,
    cache: bool = True,
    progress: bool = True,
) -> pathlib.Path:
    """Runs a sweep spec as ``cargo xtask sweep SPEC --out OUT`` does and writes
    the same result files to ``out`` (default ``results/<spec name>``)."""

