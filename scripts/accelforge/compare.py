#!/usr/bin/env python3
"""Cross-check of our cost model (crates/raella-cost) against AccelForge's RAELLA and
ISAAC models, layer by layer.

AccelForge (PyPI `accelforge`, the successor of CiMLoop/Timeloop/Accelergy) ships
`examples/arches/compute_in_memory/raella_isca_2023.yaml` and `isaac_isca_2016.yaml`.
This script runs a list of single layers through both (RAELLA with and without
speculation, ISAAC), and the same layers through our sweep binary (`cargo xtask sweep`
on a generated shape-only workload: `raella`, `raella_1b`, `isaac8b`), maps
AccelForge's components onto our seven energy categories and writes side-by-side
tables (fJ per MAC, ours vs AccelForge, ratio) and per-layer diagnostics (event counts
per MAC, energy per event, AccelForge's ADC leakage and latency).

Not run by CI. It needs the AccelForge venv made by `scripts/accelforge/setup.sh`
(Python 3.12; rebuilds CACTI/NeuroSim where the wheels' executables need a newer
glibc). Run it with any Python >= 3.11: the AccelForge runs go to that venv's
interpreter in subprocesses, one per layer and design, cached under --out.

    scripts/accelforge/setup.sh
    python3 scripts/accelforge/compare.py                    # all layers, ~20 min on one core
    python3 scripts/accelforge/compare.py --layers resnet18.layer3.1.conv1

Output (default results/accelforge/, gitignored): comparison.md (the tables, also
printed), comparison.json (every number), accelforge/*.json (one cached AccelForge run
each: delete one, or pass --force, to rerun it), ours/ (our sweep's inputs and output).
See scripts/accelforge/README.md and docs/COST.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_VENV = REPO / ".cache" / "accelforge-venv"

# --------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One crossbar layer (a conv, or a linear over `tokens` vectors)."""

    name: str
    kind: str  # "conv" or "linear"
    cin: int
    cout: int
    k: int  # square kernel
    stride: int
    in_hw: int  # square input (conv); tokens (linear)
    out_hw: int  # square output (conv); tokens (linear)
    signed: bool  # signed inputs: two passes in ours, +/- input halves in AccelForge
    what: str

    @property
    def vectors(self) -> int:
        return self.out_hw * self.out_hw if self.kind == "conv" else self.out_hw

    @property
    def rows(self) -> int:
        return self.cin * self.k * self.k

    @property
    def macs(self) -> int:
        return self.vectors * self.rows * self.cout


LAYERS = [
    Layer("resnet18.layer3.1.conv1", "conv", 256, 256, 3, 1, 14, 14, False,
          "ResNet18 conv 3x3 256->256 on 14x14, stride 1, pad 1"),
    Layer("resnet18.conv1", "conv", 3, 64, 7, 2, 224, 112, True,
          "ResNet18's first conv 7x7 3->64 at 224x224, stride 2, pad 3 (normalised image: signed inputs)"),
    Layer("resnet18.layer3.0.downsample", "conv", 128, 256, 1, 2, 28, 14, False,
          "ResNet18 1x1 shortcut conv 128->256, 28x28 -> 14x14, stride 2"),
    Layer("mobilenet_v2.features.12.conv.0", "conv", 96, 576, 1, 1, 14, 14, False,
          "MobileNetV2 1x1 pointwise (expansion) conv 96->576 on 14x14"),
    Layer("bert_base.layer.0.intermediate.dense", "linear", 768, 3072, 1, 1, 32, 32, True,
          "BERT-base FFN1 linear 768->3072 at 32 tokens (GELU/LayerNorm inputs: signed)"),
]

# Designs: (our preset, AccelForge example, speculation switch or None).
DESIGNS = {
    "raella": ("raella", "raella_isca_2023", 1),
    "raella_nospec": ("raella_1b", "raella_isca_2023", 0),
    "isaac": ("isaac8b", "isaac_isca_2016", None),
}

# AccelForge's examples take value histograms (7 bins over [-max, max]) instead of
# data. Unsigned layers use the examples' own inputs_hist; signed layers the same
# magnitude distribution made symmetric (25% non-zero, as the unsigned one).
UNSIGNED_INPUTS_HIST = [0, 0, 0, 3, 1, 0, 0]
SIGNED_INPUTS_HIST = [0, 0, 1, 6, 1, 0, 0]

# AccelForge component -> our category. ColumnDrivers (ISAAC's bitline precharge,
# NeuroSim) sits with the column readout path, as our column buffer does; FlagRegister
# (speculation flags) with the output register; OutputCenterOffsetCorrect (center x
# input-sum correction) with the output buffer, where ours charges its center
# multiply-add; output_quantize (an eDRAM access per output in the example) is the
# requantisation; the eDRAM and the inter-macro bus are the data movement.
CATEGORY = {
    "ADC": "adc",
    "ShiftAdd": "adc",
    "TimelyPsubbuf": "adc",
    "ColumnDrivers": "adc",
    "CimUnit": "cells",
    "RowDrivers": "dac",
    "DummyRowDriverMemory": "dac",
    "InputBuffer": "input_buffer",
    "OutputRegister": "output_buffer",
    "OutputBuffer": "output_buffer",
    "FlagRegister": "output_buffer",
    "OutputCenterOffsetCorrect": "output_buffer",
    "output_quantize": "requantisation",
    "eDRAM_buf": "data_movement",
    "inter_macro_network": "data_movement",
    "MainMemory": "data_movement",
    "FreeCompute": None,  # a dummy compute: the examples charge MACs in the array
}
CATEGORIES = ["adc", "cells", "dac", "input_buffer", "output_buffer", "requantisation",
              "data_movement"]

# Array geometry of the examples, for the number of top-level units a layer needs.
AF_GEOMETRY = {
    # rows, cols, columns per weight, arrays per unit of the example's hierarchy
    "raella_isca_2023": (512, 512, 3, 32),  # a tile: 8 macros x 4 arrays
    "isaac_isca_2016": (128, 128, 4, 8),  # an IMA: 8 arrays
}

# --------------------------------------------------------------------------------------
# AccelForge side (runs inside the AccelForge venv, in a subprocess per run)
# --------------------------------------------------------------------------------------


def af_units_needed(arch: str, layer: Layer) -> int:
    """Copies of the example's hierarchy (`n_macros`) that hold the layer's weights once."""
    rows, cols, per_weight, per_unit = AF_GEOMETRY[arch]
    arrays = math.ceil(layer.rows / rows) * math.ceil(layer.cout * per_weight / cols)
    return max(1, math.ceil(arrays / per_unit))


def af_workload_yaml(layer: Layer) -> str:
    renames = (
        "renames:\n  einsums:\n  - name: default\n    tensor_accesses:\n"
        "    - {name: input, source: Inputs & Intermediates, expected_count: 1}\n"
        "    - {name: output, source: Outputs, expected_count: 1}\n"
        "    - {name: weight, source: ~(input | output), expected_count: 1}\n"
    )
    if layer.kind == "linear":
        einsum = "T0[p0, n, m0] = I0[n, c0, p0] * W0[c0, m0]"
        space = [f"0 <= p0 < {layer.vectors}", f"0 <= c0 < {layer.cin}",
                 f"0 <= m0 < {layer.cout}"]
    elif layer.k == 1:
        s = layer.stride
        einsum = f"T0[p0, q0, n, m0] = I0[n, c0, H: p0 * {s}, W: q0 * {s}] * W0[c0, m0]"
        space = [f"0 <= p0 < {layer.out_hw}", f"0 <= q0 < {layer.out_hw}",
                 f"0 <= c0 < {layer.cin}", f"0 <= m0 < {layer.cout}"]
    else:
        s = layer.stride
        einsum = (f"T0[p0, q0, n, m0] = I0[n, c0, H: p0 * {s} + r0, W: q0 * {s} + s0]"
                  " * W0[r0, s0, c0, m0]")
        space = [f"0 <= p0 < {layer.out_hw}", f"0 <= q0 < {layer.out_hw}",
                 f"0 <= c0 < {layer.cin}", f"0 <= m0 < {layer.cout}",
                 f"0 <= r0 < {layer.k}", f"0 <= s0 < {layer.k}"]
    lines = [renames, "workload:", "  bits_per_value: {All: 8}", "  rank_sizes: {N: 1}",
             "  einsums:", f'  - einsum: "{einsum}"', "    iteration_space_shape:"]
    lines += [f"    - {x}" for x in space]
    lines.append("    renames: {output: T0, input: I0, weight: W0}")
    return "\n".join(lines) + "\n"


def af_worker(layer_name: str, design: str, out_json: str, jobs: int,
              n_macros_override: int = 0) -> None:
    """Runs one layer on one AccelForge design and writes the numbers as JSON."""
    import importlib.metadata as md
    import sysconfig

    layer = next(l for l in LAYERS if l.name == layer_name)
    _, arch, speculation = DESIGNS[design]
    sp = Path(sysconfig.get_paths()["purelib"])
    sys.path.insert(0, str(sp / "examples" / "arches" / "compute_in_memory"))
    import accelforge as af
    import accelforge.mapper.FFM.mappings as af_mappings
    from _load_spec import get_spec  # the examples' own loader (as their notebooks)

    # The mapper renders each chosen mapping to mapping.svg in the working directory,
    # which needs Graphviz's `dot`; nothing here uses the picture.
    af_mappings.Mappings.render = lambda self, *a, **k: ""
    af.util.set_n_parallel_jobs(jobs)

    n_macros = n_macros_override or af_units_needed(arch, layer)
    spec = get_spec(arch, add_dummy_main_memory=True, n_macros=n_macros)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "layer.yaml"
        p.write_text(af_workload_yaml(layer))
        spec.workload = af.Workload.from_yaml(str(p), top_key="workload")
        spec.renames = af.Renames.from_yaml(str(p), top_key="renames")
    if speculation is not None:
        spec.arch.variables["speculation_enabled"] = speculation
    hist = SIGNED_INPUTS_HIST if layer.signed else UNSIGNED_INPUTS_HIST
    spec.variables.inputs_hist = hist

    # Fixes the shipped examples need to run with this AccelForge version (both fail
    # as shipped; recorded in the output):
    patches = []
    for node in spec.arch.nodes:
        if node.name != "ADC":
            continue
        extra = node.extra_attributes_for_component_model
        try:
            keys = set(dict(extra).keys())
        except (TypeError, ValueError):
            keys = set()
        # RAELLA passes `adc_resolution`, but the ADC model's __init__ needs `n_bits`.
        if "n_bits" not in keys:
            extra["n_bits"] = "adc_resolution"
            patches.append("ADC: n_bits = adc_resolution (the example passes only "
                           "adc_resolution; hwcomponents-adc requires n_bits)")
        # ISAAC's ADC throughput names `throughput_scale`, which is not defined in the
        # expression's scope; the node's throughput_scale is 1, so drop it (RAELLA's
        # expression, 1.28 GS/s for ISAAC's one ADC per 128 columns).
        thr = str(extra["throughput"]) if "throughput" in keys else ""
        if "throughput_scale" in thr:
            extra["throughput"] = "1 / cycle_period * cols_active_at_once / 100"
            patches.append("ADC: throughput = 1 / cycle_period * cols_active_at_once "
                           "/ 100 (the example's expression names an undefined "
                           "throughput_scale)")

    # Evaluated variables and per-action component energies (no mapping needed).
    ev = spec.calculate_component_costs(einsum_name=spec.workload.einsums[0].name)
    var_keys = ["average_input_value", "average_weight_value", "n_input_slices",
                "n_weight_slices", "encoded_input_bits", "encoded_weight_bits",
                "adc_resolution", "bits_per_cell", "cim_unit_width_cells",
                "array_wordlines", "array_bitlines", "read_pulse_width",
                "speculation_adc_scale", "speculation_cell_energy_scale",
                "speculation_adc_throughput_scale", "cycle_period"]
    av = dict(ev.arch.variables)
    variables = {k: _jsonable(av[k]) for k in var_keys if k in av}
    components = {}
    for node in ev.arch.get_nodes_of_type(af.arch.Component):
        components[node.name] = {
            "class": str(node.component_class),
            "energy_scale": _jsonable(node.energy_scale),
            "leak_power_w": _jsonable(node.leak_power),
            "total_leak_power_w": _jsonable(node.total_leak_power),
            "area_m2": _jsonable(node.area),
            "action_energy_j": {a.name: _jsonable(a.energy) for a in node.actions},
        }

    t0 = time.time()
    result = spec.map_workload_to_arch(print_progress=False)
    seconds = time.time() - t0
    macs = float(result.n_computes())
    energy = {f"{c}|{a}": float(v)
              for (c, a), v in result.energy(per_component=True, per_action=True).items()}
    actions = {f"{c}|{t}|{a}": float(v)
               for (c, t, a), v in result.actions(per_component=True,
                                                  per_tensor=True).items()}
    latency = {k: float(v) for k, v in result.latency(per_component=True).items()}
    out = {
        "layer": layer.name,
        "design": design,
        "arch": arch,
        "speculation_enabled": speculation,
        "accelforge_version": md.version("accelforge"),
        "hwcomponents_versions": {p: md.version(p) for p in [
            "hwcomponents", "hwcomponents-adc", "hwcomponents-neurosim",
            "hwcomponents-cacti", "hwcomponents-library"]},
        "n_macros": n_macros,
        "inputs_hist": hist,
        "weights_hist": list(spec.variables.weights_hist),
        "mapper_metric": str(spec.mapper.metrics),
        "patches": patches,
        "macs": macs,
        "expected_macs": layer.macs,
        "total_energy_j": float(result.energy()),
        "latency_s": float(result.latency()),
        "energy_j": energy,
        "actions": actions,
        "component_latency_s": latency,
        "variables": variables,
        "components": components,
        "mapper_seconds": seconds,
    }
    Path(out_json).write_text(json.dumps(out, indent=1))


def _jsonable(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def af_cache_name(layer: Layer, design: str, n_macros: int) -> str:
    return f"{layer.name}__{design}" + (f"__nm{n_macros}" if n_macros else "") + ".json"


def run_accelforge(layers, designs, out_dir: Path, python: Path, jobs: int,
                   force: bool, timeout: int, n_macros: int = 0) -> dict:
    res = {}
    cache = out_dir / "accelforge"
    cache.mkdir(parents=True, exist_ok=True)
    for layer in layers:
        for design in designs:
            f = cache / af_cache_name(layer, design, n_macros)
            if f.exists() and not force:
                res[(layer.name, design)] = json.loads(f.read_text())
                continue
            print(f"AccelForge: {layer.name} on {design} ...", file=sys.stderr, flush=True)
            t0 = time.time()
            with tempfile.TemporaryDirectory() as cwd:
                p = subprocess.run(
                    [str(python), str(Path(__file__).resolve()), "--_af-worker",
                     layer.name, design, str(f), str(jobs), str(n_macros)],
                    cwd=cwd, capture_output=True, text=True, timeout=timeout)
            if p.returncode != 0 or not f.exists():
                err = f.with_suffix(".err")
                err.write_text(p.stdout + p.stderr)
                print(f"  failed (exit {p.returncode}); log: {err}", file=sys.stderr)
                continue
            print(f"  done in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
            res[(layer.name, design)] = json.loads(f.read_text())
    return res


# --------------------------------------------------------------------------------------
# Our side: a shape-only workload through `cargo xtask sweep`
# --------------------------------------------------------------------------------------

# Fillers, so that the compared layers sit where our shape-only model treats them as
# the paper does: a CNN's layer 0 reads the signed normalised image (two passes) and a
# workload's last layer is forced to 1x8 weight slices on RAELLA; a filler takes those
# places unless a compared layer belongs there. They are not reported.
FILLER_FIRST = Layer("filler.first", "conv", 16, 16, 1, 1, 8, 8, True, "")
FILLER_LAST_CONV = Layer("filler.last", "linear", 512, 1000, 1, 1, 1, 1, False, "")
FILLER_LAST_LINEAR = Layer("filler.last", "linear", 768, 768, 1, 1, 32, 32, True, "")


def toml_layer(l: Layer) -> str:
    hw_in = [l.in_hw, l.in_hw] if l.kind == "conv" else [l.in_hw, 1]
    hw_out = [l.out_hw, l.out_hw] if l.kind == "conv" else [l.out_hw, 1]
    return (
        f'[[layer]]\nname = "{l.name}"\nkind = "{l.kind}"\nin_channels = {l.cin}\n'
        f"out_channels = {l.cout}\nkernel = [{l.k}, {l.k}]\nstride = [{l.stride}, {l.stride}]\n"
        f"groups = 1\nin_hw = {hw_in}\nout_hw = {hw_out}\nvectors = {l.vectors}\n"
        f"rows = {l.rows}\ncols = {l.cout}\nmacs = {l.macs}\n"
    )


def our_workloads(layers) -> list[tuple[str, list[Layer]]]:
    """Groups the layers into shape-only workloads (see the fillers above)."""
    groups = []
    transformer = [l for l in layers if l.kind == "linear"]
    cnn_signed = [l for l in layers if l.kind == "conv" and l.signed]
    cnn_unsigned = [l for l in layers if l.kind == "conv" and not l.signed]
    for i, l in enumerate(cnn_signed):  # each first in its own CNN
        groups.append((f"af_cnn_first{i}", [l, FILLER_LAST_CONV]))
    if cnn_unsigned:
        groups.append(("af_cnn", [FILLER_FIRST, *cnn_unsigned, FILLER_LAST_CONV]))
    if transformer:
        if not all(l.signed for l in transformer):
            sys.exit("our model treats every linear of an all-linear workload as signed")
        groups.append(("af_transformer", [*transformer, FILLER_LAST_LINEAR]))
    return groups


def run_ours(layers, out_dir: Path, cargo: str) -> dict:
    d = out_dir / "ours"
    d.mkdir(parents=True, exist_ok=True)
    spec = [
        'name = "accelforge_check"',
        'description = "Shape-only layers for the AccelForge cross-check '
        '(scripts/accelforge/compare.py)."',
        'archs = ["isaac8b", "raella", "raella_1b"]',
        "",
        "[cost]",
        f'components = "{REPO / "fixtures/cost/components.toml"}"',
        f'calibration = "{REPO / "fixtures/cost/calibration.toml"}"',
        f'typical = "{REPO / "fixtures/cost/typical_stats.toml"}"',
        "",
    ]
    for name, group in our_workloads(layers):
        (d / f"{name}.toml").write_text(
            f'name = "{name}"\nsource = "scripts/accelforge/compare.py"\n'
            f'input = "layers"\nbatch_default = 1\n'
            f'note = "Single layers for the AccelForge cross-check; filler.* keep the '
            f'first/last-layer rules off the compared layers and are not reported."\n\n'
            + "\n".join(toml_layer(l) for l in group))
        spec += ["[[workload]]", f'name = "{name}"', f'file = "{d / (name + ".toml")}"',
                 "batch = 1", ""]
    spec_path = d / "spec.toml"
    spec_path.write_text("\n".join(spec))
    sweep_out = d / "out"
    cmd = cargo.split() + ["xtask", "sweep", str(spec_path), "--out", str(sweep_out)]
    print("ours: " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=REPO, check=True, stdout=sys.stderr)
    res = {}
    with open(sweep_out / "energy_layers.csv") as f:
        for row in csv.DictReader(f):
            res[(row["layer"], row["arch"])] = row
    return res


def our_event_energies() -> dict:
    import tomllib

    comp = tomllib.loads((REPO / "fixtures/cost/components.toml").read_text())
    cal = tomllib.loads((REPO / "fixtures/cost/calibration.toml").read_text())
    periph = comp["shift_add"]["energy_pj_per_op"] + comp["column_buffer"]["energy_pj_per_read"]
    return {
        "adc7": comp["adc"]["energy_pj"]["7"],
        "adc8": comp["adc"]["energy_pj"]["8"],
        "periph": periph,
        "dac_1b": comp["dac_1b"]["energy_pj_per_drive"],
        "pulse_dac": cal["pulse_dac_pj"],
    }


# --------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------


def af_categories(r: dict) -> tuple[dict, dict]:
    """AccelForge's energy in fJ/MAC by our category; unmapped components listed."""
    per_mac = 1e15 / r["macs"]
    cats = {c: 0.0 for c in CATEGORIES}
    unknown = {}
    for key, e in r["energy_j"].items():
        comp, _ = key.split("|")
        cat = CATEGORY.get(comp, "?")
        if cat is None:
            continue
        if cat == "?":
            unknown[key] = e * per_mac
            continue
        cats[cat] += e * per_mac
    return cats, unknown


def af_sum(r: dict, comp: str, action: str | None = None, what: str = "energy_j") -> float:
    tot = 0.0
    for key, v in r[what].items():
        parts = key.split("|")
        if parts[0] == comp and (action is None or parts[-1] == action):
            tot += v
    return tot


def diagnostics(layer: Layer, design: str, ours: dict, af: dict, ev: dict) -> list:
    """(quantity, ours, AccelForge) rows with the numbers behind the differences."""
    rows = []
    macs = layer.macs
    isaac = design == "isaac"
    adc_e = ev["adc8"] if isaac else ev["adc7"]
    o_conv = float(ours["adc_pj"]) / (adc_e + ev["periph"]) if ours else float("nan")
    o_pulses = (float(ours["dac_pj"]) / (ev["dac_1b"] if isaac else ev["pulse_dac"])
                if ours else float("nan"))
    if af:
        n = af["macs"]
        a_conv = af_sum(af, "ADC", "read", "actions")
        scale = af["components"].get("ADC", {}).get("energy_scale", 1.0)
        scale = scale if isinstance(scale, float) else 1.0
        adc_read = af_sum(af, "ADC", "read")
        adc_leak = af_sum(af, "ADC", "leak")
        leak_w = af["components"].get("ADC", {}).get("total_leak_power_w", float("nan"))
        lat = af["latency_s"]
        cell_reads = af_sum(af, "CimUnit", "read", "actions")
        row_drives = af_sum(af, "RowDrivers", "read", "actions")
        v = af["variables"]
    else:
        n = a_conv = scale = adc_read = adc_leak = leak_w = lat = float("nan")
        cell_reads = row_drives = float("nan")
        v = {}
    nan = float("nan")
    rows.append(("ADC conversions per 1k MACs (AccelForge: counted; x energy_scale)",
                 f"{o_conv / macs * 1e3:.2f}",
                 f"{a_conv / n * 1e3:.2f} (x {scale:.2f} = {a_conv * scale / n * 1e3:.2f})"))
    rows.append(("ADC energy per counted conversion, pJ (ours: ADC + shift-add + column "
                 "buffer; AccelForge: conversion action, x energy_scale)",
                 f"{adc_e:.3f} + {ev['periph']:.4f}",
                 f"{adc_read / a_conv * 1e12:.3f}" if a_conv == a_conv and a_conv else "-"))
    # Leakage: AccelForge charges total leak power x the layer's latency x the share of
    # instances it counts as powered (with n_macros > 1 it counts one copy's worth).
    charged_w = adc_leak / lat if lat == lat and lat else nan
    n_units = af.get("n_macros", 1) if af else 1
    rows.append(("AccelForge ADC leakage: leak power charged (instantiated) x latency",
                 "-", f"{charged_w * 1e3:.2f} mW ({leak_w * 1e3:.2f} mW) x {lat * 1e6:.2f} us "
                      f"= {adc_leak / n * 1e15:.2f} fJ/MAC"
                      f" ({adc_leak / (adc_leak + adc_read) * 100 if adc_read == adc_read else nan:.0f}% "
                      "of the ADC's energy)"))
    if n_units > 1:
        rows.append(("AccelForge ADC leakage if every instantiated ADC leaked", "-",
                     f"{leak_w * lat / n * 1e15:.2f} fJ/MAC"))
    # At full utilisation an ADC leaks 20% of its per-conversion energy E (the ADC
    # model's convention: a conversion action is 0.8 E) per conversion slot; speculation
    # slows the ADCs by throughput_scale (8/11).
    thr_scale = v.get("speculation_adc_throughput_scale", 1.0) if design != "isaac" else 1.0
    thr_scale = thr_scale if isinstance(thr_scale, float) else 1.0
    if a_conv == a_conv and a_conv:
        e_full = adc_read / a_conv / scale / 0.8
        full = 0.2 * e_full / thr_scale
        got = adc_leak / a_conv
        rows.append(("AccelForge ADC leakage per counted conversion, pJ: charged / at 100% ADC "
                     "utilisation (0.2 E / throughput scale)", "-",
                     f"{got * 1e12:.3f} / {full * 1e12:.3f}"))
    # Our row drives, from the layer's shape (docs/COST.md).
    rows_x, cols_x, slices = (128, 128, 4) if isaac else (512, 512, 3)
    cycles = 11 if design == "raella" else 8
    passes = 2 if layer.signed else 1
    cb = math.ceil(layer.cout * slices / cols_x)
    o_drives = layer.vectors * passes * cycles * cb * layer.rows
    rows.append(("row drives per MAC (ours: rows x cycles x column blocks; AccelForge: "
                 "RowDrivers actions)", f"{o_drives / macs:.4f}", f"{row_drives / n:.4f}"))
    rows.append(("DAC events per MAC (ours: input pulses; AccelForge: row drives)",
                 f"{o_pulses / macs:.4f}", f"{row_drives / n:.4f}"))
    rows.append(("DAC energy per event, fJ (ours: per pulse; AccelForge: per row drive)",
                 f"{(ev['dac_1b'] if isaac else ev['pulse_dac']) * 1e3:.0f}",
                 f"{af_sum(af, 'RowDrivers', 'read') / row_drives * 1e15:.1f}"
                 if af and row_drives else "-"))
    rows.append(("AccelForge cell reads (weight slice x input slice) per MAC; energy per read, fJ",
                 "-", f"{cell_reads / n:.1f}; {af_sum(af, 'CimUnit', 'read') / cell_reads * 1e15:.3f}"
                 if af and cell_reads else "-"))
    rows.append(("AccelForge average input / weight (cell) value; input x weight slices",
                 "-", f"{v.get('average_input_value', nan):.4f} / "
                      f"{v.get('average_weight_value', nan):.4f}; "
                      f"{v.get('n_input_slices', nan):.0f} x {v.get('n_weight_slices', nan):.0f}"))
    rows.append(("AccelForge top-level units (n_macros) / mapper metric", "-",
                 f"{af.get('n_macros', '-')} / {af.get('mapper_metric', '-')}" if af else "-"))
    return rows


def fmt(x: float) -> str:
    if x != x:
        return "-"
    return f"{x:.3f}" if abs(x) < 1 else f"{x:.2f}" if abs(x) < 100 else f"{x:.1f}"


def ratio(a: float, b: float) -> str:
    if a != a or b != b or b == 0:
        return "-" if not (b == 0 and a == 0) else "-"
    return f"{a / b:.2f}"


def build_report(layers, designs, ours_res, af_res) -> tuple[str, dict]:
    ev = our_event_energies()
    md = []
    data = {"layers": [], "event_energies_pj": ev}
    any_af = next(iter(af_res.values()), None)
    md.append("# Our cost model vs AccelForge, layer by layer\n")
    if any_af:
        md.append(f"AccelForge {any_af['accelforge_version']} "
                  f"({', '.join(f'{k} {v}' for k, v in any_af['hwcomponents_versions'].items())}), "
                  "examples `raella_isca_2023.yaml` / `isaac_isca_2016.yaml` as shipped "
                  "(mapper: the examples' get_spec settings), with the fixes listed below. "
                  "Ours: `cargo xtask sweep` on shape-only layers with the typical statistics "
                  "(`fixtures/cost/typical_stats.toml`). fJ per 8b x 8b MAC; ratio = AccelForge / ours.\n")
        patches = sorted({p for r in af_res.values() for p in r.get("patches", [])})
        if patches:
            md.append("Fixes applied to the shipped examples (both fail as shipped):\n")
            md += [f"- {p}" for p in patches]
            md.append("")
    # Summary
    md.append("## Summary (fJ/MAC)\n")
    md.append("| layer | MACs | design (ours / AccelForge) | ours | AccelForge | ratio | "
              "AccelForge without leakage | ratio | AccelForge ADC leakage |")
    md.append("|---|---|---|---|---|---|---|---|---|")
    for layer in layers:
        for design in designs:
            preset = DESIGNS[design][0]
            o = ours_res.get((layer.name, preset))
            a = af_res.get((layer.name, design))
            o_tot = float(o["energy_pj_per_inference"]) * 1e3 / layer.macs if o else float("nan")
            if a:
                a_tot = a["total_energy_j"] * 1e15 / a["macs"]
                leak = sum(v for k, v in a["energy_j"].items() if k.endswith("|leak"))
                a_noleak = a_tot - leak * 1e15 / a["macs"]
                adc_leak = af_sum(a, "ADC", "leak") * 1e15 / a["macs"]
            else:
                a_tot = a_noleak = adc_leak = float("nan")
            af_name = f"{DESIGNS[design][1]}" + (
                "" if DESIGNS[design][2] is None else
                (" spec." if DESIGNS[design][2] else " no spec."))
            md.append(f"| {layer.name} | {layer.macs / 1e6:.1f} M | {preset} / {af_name} | "
                      f"{fmt(o_tot)} | {fmt(a_tot)} | {ratio(a_tot, o_tot)} | {fmt(a_noleak)} | "
                      f"{ratio(a_noleak, o_tot)} | {fmt(adc_leak)} |")
    md.append("")
    # Per layer
    for layer in layers:
        md.append(f"## {layer.name}: {layer.what}\n")
        md.append(f"{layer.vectors} vectors x {layer.rows} rows x {layer.cout} columns = "
                  f"{layer.macs:,} MACs; inputs {'signed' if layer.signed else 'unsigned'}.\n")
        ldata = {"layer": asdict(layer), "designs": {}}
        for design in designs:
            preset, arch, specu = DESIGNS[design]
            o = ours_res.get((layer.name, preset))
            a = af_res.get((layer.name, design))
            md.append(f"### ours `{preset}` vs AccelForge `{arch}`"
                      + ("" if specu is None else f" (speculation_enabled = {specu})") + "\n")
            o_cat = {c: float(o[f"{c}_pj"]) * 1e3 / layer.macs for c in CATEGORIES} if o else {}
            a_cat, unknown = af_categories(a) if a else ({}, {})
            md.append("| category | ours | AccelForge | ratio |")
            md.append("|---|---|---|---|")
            for c in CATEGORIES:
                ov, av = o_cat.get(c, float("nan")), a_cat.get(c, float("nan"))
                md.append(f"| {c} | {fmt(ov)} | {fmt(av)} | {ratio(av, ov)} |")
            for k, v in unknown.items():
                md.append(f"| (unmapped AccelForge {k}) | - | {fmt(v)} | - |")
            o_tot = sum(o_cat.values()) if o else float("nan")
            a_tot = a["total_energy_j"] * 1e15 / a["macs"] if a else float("nan")
            md.append(f"| **total** | **{fmt(o_tot)}** | **{fmt(a_tot)}** | **{ratio(a_tot, o_tot)}** |")
            if a:
                leak = sum(v for k, v in a["energy_j"].items() if k.endswith("|leak"))
                adc_leak = af_sum(a, "ADC", "leak")
                md.append(f"| AccelForge: of which leakage (ADC) | - | "
                          f"{fmt(leak * 1e15 / a['macs'])} ({fmt(adc_leak * 1e15 / a['macs'])}) | - |")
                a_adc_noleak = a_cat["adc"] - adc_leak * 1e15 / a["macs"]
                md.append(f"| adc without AccelForge's ADC leakage | {fmt(o_cat.get('adc', float('nan')))} | "
                          f"{fmt(a_adc_noleak)} | {ratio(a_adc_noleak, o_cat.get('adc', float('nan')))} |")
            md.append("")
            diag = diagnostics(layer, design, o, a, ev)
            md.append("| quantity | ours | AccelForge |")
            md.append("|---|---|---|")
            md += [f"| {q} | {x} | {y} |" for q, x, y in diag]
            md.append("")
            if a:
                md.append("<details><summary>AccelForge by component and action "
                          "(fJ/MAC; actions per MAC)</summary>\n")
                md.append("| component | action | category | fJ/MAC | actions per MAC |")
                md.append("|---|---|---|---|---|")
                for key, e in sorted(a["energy_j"].items(), key=lambda kv: -kv[1]):
                    if e == 0:
                        continue
                    comp, act = key.split("|")
                    n_act = af_sum(a, comp, act, "actions")
                    md.append(f"| {comp} | {act} | {CATEGORY.get(comp, '?')} | "
                              f"{fmt(e * 1e15 / a['macs'])} | "
                              f"{fmt(n_act / a['macs']) if act != 'leak' else '-'} |")
                md.append("\n</details>\n")
            ldata["designs"][design] = {
                "ours_preset": preset,
                "ours_fj_per_mac": o_cat,
                "ours_total_fj_per_mac": o_tot,
                "accelforge_fj_per_mac": a_cat,
                "accelforge_total_fj_per_mac": a_tot,
                "accelforge_unmapped_fj_per_mac": unknown,
                "diagnostics": diag,
                "accelforge_raw": a,
                "ours_raw": o,
            }
        data["layers"].append(ldata)
    return "\n".join(md) + "\n", data


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_af-worker":
        af_worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]),
                  int(sys.argv[6]) if len(sys.argv) > 6 else 0)
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "results" / "accelforge",
                    help="output directory (default results/accelforge)")
    ap.add_argument("--layers", default="",
                    help="comma-separated layer names (default: all): "
                         + ", ".join(l.name for l in LAYERS))
    ap.add_argument("--designs", default=",".join(DESIGNS),
                    help="comma-separated: " + ", ".join(DESIGNS))
    ap.add_argument("--venv", type=Path, default=Path(os.environ.get("ACCELFORGE_VENV", DEFAULT_VENV)),
                    help="the AccelForge venv (scripts/accelforge/setup.sh)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="AccelForge mapper processes per run (default 1)")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per AccelForge run")
    ap.add_argument("--force", action="store_true", help="rerun cached AccelForge runs")
    ap.add_argument("--n-macros", type=int, default=0,
                    help="AccelForge: copies of the example's hierarchy for every run "
                         "(default: the fewest that hold each layer; a sensitivity knob: "
                         "the examples charge leakage for one copy only)")
    ap.add_argument("--no-accelforge", action="store_true",
                    help="only the cached AccelForge runs")
    ap.add_argument("--no-ours", action="store_true", help="skip our sweep")
    ap.add_argument("--cargo", default="cargo", help="cargo command (default: cargo)")
    args = ap.parse_args()

    names = [x for x in args.layers.split(",") if x]
    layers = [l for l in LAYERS if not names or l.name in names]
    if names and len(layers) != len(names):
        sys.exit(f"unknown layer in {names}; known: {[l.name for l in LAYERS]}")
    designs = [d for d in args.designs.split(",") if d]
    for d in designs:
        if d not in DESIGNS:
            sys.exit(f"unknown design {d}; known: {list(DESIGNS)}")
    args.out.mkdir(parents=True, exist_ok=True)

    python = args.venv / "bin" / "python"
    if args.no_accelforge:
        af_res = {}
        for l in layers:
            for d in designs:
                f = args.out / "accelforge" / af_cache_name(l, d, args.n_macros)
                if f.exists():
                    af_res[(l.name, d)] = json.loads(f.read_text())
    else:
        if not python.exists():
            sys.exit(f"no AccelForge venv at {args.venv}: run scripts/accelforge/setup.sh")
        af_res = run_accelforge(layers, designs, args.out, python, args.jobs, args.force,
                                args.timeout, args.n_macros)
    ours_res = {} if args.no_ours else run_ours(layers, args.out, args.cargo)

    md, data = build_report(layers, designs, ours_res, af_res)
    (args.out / "comparison.md").write_text(md)
    (args.out / "comparison.json").write_text(json.dumps(data, indent=1, default=str))
    print(md)
    print(f"wrote {args.out / 'comparison.md'} and comparison.json", file=sys.stderr)


if __name__ == "__main__":
    main()
