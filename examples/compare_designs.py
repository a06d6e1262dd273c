"""Compare ISAAC-8b and RAELLA under read noise, from Python.

The first script to run after `pip install .` (see README.md): it loads a
model (the committed MNIST CNN by default), simulates it on both designs at
read noise E = 0, 4, 8 and 12%, prints a table of accuracy, agreement with the
8-bit digital reference, output error, ADC conversions per MAC and energy per
inference, and saves a plot of accuracy, output error and energy against E.

    python examples/compare_designs.py                     # MNIST CNN, 500 digits
    python examples/compare_designs.py --images 2000 --seeds 1 2 3 --plot noise.png

Needs numpy and matplotlib (`pip install matplotlib`). Another model: pass
--model, --data (an .npz with `x`, optional `labels` and `calibration`) and
the model's inputs are read from it.
"""

from __future__ import annotations

import argparse
import gzip
import struct
import time
from pathlib import Path

import numpy as np

import raella_sim

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "fixtures" / "mnist_cnn"


def read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file (MNIST's format) as a uint8 array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def mnist(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calibration digits, evaluation digits and their labels, preprocessed
    as the model expects: x = (pixel / 255 - 0.1307) / 0.3081."""
    images = read_idx(FIXTURE / "mnist-digits-images-idx3-ubyte.gz")
    labels = read_idx(FIXTURE / "mnist-digits-labels-idx1-ubyte.gz").astype(np.int64)
    x = ((images.astype(np.float32) / 255 - 0.1307) / 0.3081)[:, None]
    return x[:200], x[200 : 200 + n], labels[200 : 200 + n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=FIXTURE / "mnist_cnn.onnx")
    ap.add_argument("--data", type=Path, help=".npz with x, labels (optional), calibration (optional)")
    ap.add_argument("--images", type=int, default=500, help="MNIST digits to evaluate")
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.04, 0.08, 0.12])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--plot", type=Path, default=Path("results/compare_designs.png"))
    a = ap.parse_args()

    if a.data:
        d = np.load(a.data)
        x = d["x"]
        labels = d["labels"] if "labels" in d else None
        cal = d["calibration"] if "calibration" in d else x[: min(len(x), 200)]
    else:
        cal, x, labels = mnist(a.images)

    int8 = raella_sim.reference(a.model, x, kind="int8", calibration=cal)
    fp32 = raella_sim.reference(a.model, x, kind="fp32")
    top1 = lambda y: float(np.mean(y.argmax(1) == labels)) if labels is not None else float("nan")
    print(f"{a.model.name}: {len(x)} inputs; float32 top-1 {top1(fp32):.2%}, 8-bit top-1 {top1(int8):.2%}")

    rows = []
    for preset in ["isaac8b", "raella"]:
        for e in a.noise:
            design = raella_sim.Design.preset(preset, noise_e=e) if e else raella_sim.Design.preset(preset)
            for seed in a.seeds:
                t = time.perf_counter()
                sim = raella_sim.Simulator(a.model, design, calibration=cal, seed=seed)
                y = sim.run(x)
                secs = time.perf_counter() - t
                stats, cost = sim.stats(), sim.cost()
                macs = sum(s["macs"] for s in stats)
                rows.append(
                    dict(
                        preset=preset,
                        noise_e=e,
                        seed=seed,
                        design=design.name,
                        top1=top1(y),
                        agree_int8=float(np.mean(y.argmax(1) == int8.argmax(1))),
                        rel_err=float(np.linalg.norm(y - int8) / np.linalg.norm(int8)),
                        converts_per_mac=sum(s["conversions"] for s in stats) / macs,
                        energy_uj=cost["energy_mj"] * 1e3,
                        tops_per_w=cost["tops_per_w"],
                        seconds=secs,
                    )
                )

    head = f"{'design':<28}{'seed':>5}{'top-1':>8}{'agree int8':>12}{'rel err':>9}{'conv/MAC':>10}{'uJ/inf':>9}{'TOPS/W':>8}{'s':>6}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['design']:<28}{r['seed']:>5}{r['top1']:>8.2%}{r['agree_int8']:>12.2%}{r['rel_err']:>9.4f}"
            f"{r['converts_per_mac']:>10.4f}{r['energy_uj']:>9.3f}{r['tops_per_w']:>8.2f}{r['seconds']:>6.1f}"
        )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc, err, energy) = plt.subplots(1, 3, figsize=(14, 4))
    metric = "top1" if labels is not None else "agree_int8"
    for preset, marker in [("isaac8b", "s"), ("raella", "o")]:
        mine = [r for r in rows if r["preset"] == preset]
        es = sorted({r["noise_e"] for r in mine})
        mean = lambda k: [np.mean([r[k] for r in mine if r["noise_e"] == e]) for e in es]
        acc.plot([100 * e for e in es], [100 * v for v in mean(metric)], marker=marker, label=preset)
        err.plot([100 * e for e in es], mean("rel_err"), marker=marker, label=preset)
        energy.plot([100 * e for e in es], mean("energy_uj"), marker=marker, label=preset)
    acc.set(xlabel="read noise E (%)", ylabel="top-1 (%)" if labels is not None else "agreement with int8 (%)")
    err.set(xlabel="read noise E (%)", ylabel="output error vs 8-bit reference (rel.)")
    energy.set(xlabel="read noise E (%)", ylabel="energy per inference (uJ)")
    for ax in (acc, err, energy):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{a.model.name}: ISAAC-8b vs RAELLA under read noise ({len(x)} inputs)")
    fig.tight_layout()
    a.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.plot, dpi=120)
    print(f"wrote {a.plot}")


if __name__ == "__main__":
    main()
