"""raella_sim: the RAELLA ReRAM processing-in-memory simulator from Python.

The engine is the Rust workspace's own (the one ``cargo xtask run-onnx`` and
``cargo xtask sweep`` run), compiled into this package: the same design and
seed give bit-identical outputs and statistics here and on the command line.

>>> import numpy as np, raella_sim
>>> design = raella_sim.Design.preset("raella", adc_bits=6, noise_e=0.04)
>>> sim = raella_sim.Simulator("model.onnx", design, calibration=x_cal, seed=1)
>>> y = sim.run(x)                   # NumPy in, NumPy out (dicts for several)
>>> sim.stats(as_frame=True)         # per-layer statistics (pandas optional)
>>> sim.cost()["energy_mj"]          # energy per inference from measured activity
>>> raella_sim.reference("model.onnx", x, kind="int8", calibration=x_cal)
>>> raella_sim.sweep("spec.toml", out="results/mine")
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Optional, Sequence, Union

from . import _native
from ._native import Design, reference, sweep

__all__ = ["Design", "Simulator", "reference", "sweep", "__version__"]
__version__: str = _native.__version__


class Simulator(_native._Simulator):
    """An ONNX model on a simulated design.

    ``Simulator(model, design, calibration=None, seed=1)`` imports ``model``
    (an ONNX file), quantises it (int8 weights per channel, 8-bit activation
    scales and adaptive weight slicing calibrated on ``calibration``: an
    array, or a dict of arrays keyed by input name) and programs ``design``'s
    crossbars (a :class:`Design` or a preset name) with ``seed``. Without
    ``calibration`` the first ``run``'s inputs calibrate the model, as
    ``run-onnx`` does without ``--calibration`` (a ``UserWarning`` says so).

    ``run(x)`` simulates one batch with the GIL released and returns an
    array (a dict keyed by output name for a model with several outputs);
    ``stats()`` gives the last run's per-layer statistics, ``cost()`` its
    energy, area and throughput.
    """

    @classmethod
    def from_torch(
        cls,
        module: Any,
        example_input: Any,
        design: Union[Design, str],
        *,
        calibration: Any = None,
        seed: int = 1,
        input_names: Optional[Sequence[str]] = None,
        output_names: Optional[Sequence[str]] = None,
        dynamic_batch: bool = True,
        **export_kwargs: Any,
    ) -> "Simulator":
        """Exports a PyTorch ``module`` to ONNX with ``torch.onnx.export`` (on
        ``example_input``: a tensor or a tuple of tensors) into a temporary
        file and simulates it. Inputs are named ``input`` (``input_0``,
        ``input_1``, ... for several) unless ``input_names`` says otherwise,
        and their first dimension is the batch (``dynamic_batch``). The
        TorchScript exporter is used where torch has it (``dynamo=False``,
        no extra dependency); ``export_kwargs`` go to ``torch.onnx.export``.
        ``calibration`` and ``run``'s inputs are NumPy arrays.
        """
        try:
            import torch  # type: ignore[import-not-found,unused-ignore]
        except ImportError as e:
            raise ImportError(
                "Simulator.from_torch needs PyTorch, which is not installed: "
                "pip install torch onnx (or export the model to ONNX yourself and "
                "use Simulator(path, ...))"
            ) from e
        args = example_input if isinstance(example_input, tuple) else (example_input,)
        if input_names is None:
            input_names = ["input"] if len(args) == 1 else [f"input_{i}" for i in range(len(args))]
        input_names = list(input_names)
        kwargs: dict[str, Any] = {"input_names": input_names}
        if output_names is not None:
            kwargs["output_names"] = list(output_names)
        if dynamic_batch:
            axes = {n: {0: "batch"} for n in input_names + list(output_names or [])}
            kwargs["dynamic_axes"] = axes
        kwargs.update(export_kwargs)
        was_training = bool(getattr(module, "training", False))
        if hasattr(module, "eval"):
            module.eval()
        try:
            with tempfile.TemporaryDirectory(prefix="raella_sim_") as d:
                path = os.path.join(d, "model.onnx")
                with torch.no_grad():
                    try:
                        torch.onnx.export(module, args, path, dynamo=False, **kwargs)
                    except TypeError as e:
                        # A torch without the `dynamo` switch has only the TorchScript exporter.
                        if "dynamo" not in str(e) or "dynamo" in export_kwargs:
                            raise
                        torch.onnx.export(module, args, path, **kwargs)
                return cls(path, design, calibration=calibration, seed=seed)
        finally:
            if was_training and hasattr(module, "train"):
                module.train()

