"""Simulator.from_torch: a PyTorch module exported to ONNX and simulated.
Runs only where torch is installed; elsewhere it is skipped, saying so."""

from __future__ import annotations

import numpy as np
import pytest

import raella_sim

torch = pytest.importorskip(
    "torch", reason="torch is not installed here: the from_torch round trip is skipped"
)


def test_from_torch_round_trip():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 8 * 8, 10),
    )
    rng = np.random.default_rng(0)
    cal = rng.standard_normal((32, 1, 8, 8)).astype(np.float32)
    x = rng.standard_normal((16, 1, 8, 8)).astype(np.float32)
    sim = raella_sim.Simulator.from_torch(
        net, torch.from_numpy(cal[:2]), "isaac8b", calibration=cal, output_names=["logits"]
    )
    assert sim.inputs == ["input"] and sim.outputs == ["logits"]
    y = sim.run(x)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    assert y.shape == want.shape == (16, 10)
    # 8-bit weights and activations: close to float32, not equal.
    err = np.linalg.norm(y - want) / np.linalg.norm(want)
    assert err < 0.05, err
    assert len(sim.stats()) == 2
