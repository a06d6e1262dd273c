#!/usr/bin/env python3
"""aihwkit (IBM Analog Hardware Acceleration Kit) throughput and top-1 on our models.

Run with the private venv made by scripts/peers/setup.sh (not run by CI):

    .cache/peers-venv/bin/python scripts/peers/aihwkit_bench.py \
        [--spec fixtures/sweeps/default.toml] [--model mnist_cnn] [--images 2000] \
        [--threads 2] [--batch 64] [--repeat 2] [--configs cpp,cpp_noise,torch,torch_noise]

The network is rebuilt in torch from the ONNX file the sweep spec names (weights
read with the `onnx` package; every node's op and attributes are checked, and an
op or attribute this script does not reproduce exactly is an error), then checked
against the ONNX model run by onnxruntime (as scripts/bench/ort_bench.py; on every
evaluated input: the top-1 must be equal, max |output difference| and argmax
mismatches are reported; onnx.reference is not used: it disagrees with both
onnxruntime and torch on MobileNetV2 by up to 0.18 in the softmax outputs). The
model's images and preprocessing come from the spec: for the MNIST CNN the evaluation digits
(start 200 of the IDX file) as x = (pixel / 255 - 0.1307) / 0.3081, the first
--images of them; photograph folders (MobileNetV2 in real-scale.toml) are sorted by
name like our loader, resized with PIL's bilinear filter (ours uses the `image`
crate's triangle filter: close, not byte-identical) and have no labels, so their
"top-1" is agreement with the float model's top-1.

Conversion: `aihwkit.nn.conversion.convert_to_analog` replaces every Conv2d and
Linear (every crossbar layer of our simulator; batch norm is folded into the
convolution before it, as our importer does) by AnalogConv2d / AnalogLinear; all
other ops stay digital torch. aihwkit 1.1.0's AnalogConv2d takes groups = 1 only,
so grouped (depthwise) convolutions stay digital: "analog_mac_share" says which
fraction of the network's MACs aihwkit simulates (1.0 for the MNIST CNN; our
simulator maps depthwise layers group by group onto crossbars).

Configurations (`--configs`):

  cpp          InferenceRPUConfig (the C++ RPUCuda tile, CPU build), noise-free
  cpp_noise    the same with forward.out_noise = --out-noise (aihwkit's default 0.06)
  torch        TorchInferenceRPUConfig (the pure-torch tile), noise-free
  torch_noise  the same with forward.out_noise = --out-noise

Every configuration: mapping.max_input_size = max_output_size = --tile (512: layers
with more rows or columns are split over several tiles, partial sums added in
digital); mapping.weight_scaling_omega = 1, columnwise (each output column's
largest |weight| maps to the largest conductance; the usual setting in aihwkit's
inference presets; aihwkit's bare default, 0, programs the raw weights);
digital_bias = True (bias added digitally, as ours); forward.inp_res =
1/(2^--dac-bits - 2) (aihwkit's convention: 2^b - 2 steps over [-inp_bound,
inp_bound] = [-1, 1], so an 8-bit DAC gives 127 levels to the non-negative
post-ReLU activations, where our 8-bit inputs have 255); forward.out_res =
1/(2^--adc-bits - 2) over [-out_bound, out_bound] (out_bound 12, aihwkit's
default); noise management ABS_MAX (each input vector is scaled digitally by its
own max |x| before the DAC, then the output scaled back: a per-vector dynamic
range, where ours quantises each layer's inputs with a scale fixed by
calibration); bound management --bound-management (aihwkit's default `iterative`:
when an output reaches +-out_bound the pass is repeated with the inputs halved,
up to max_bm_res; the torch tile repeats the whole batch if any output clipped;
`none` clips). Noise-free means forward.out_noise = inp_noise = w_noise = 0,
ir_drop = 0, no programming noise (program_analog_weights / drift_analog_weights
are never called, so the noise model's programming noise and drift are not
applied; drift_compensation = None). The weights are float (aihwkit programs no
weight quantisation here).

What aihwkit computes per layer: ONE analog matrix-vector pass per input vector
(AnalogMVType.ONE_PASS: signed inputs and signed weights in one pass; weights as
float conductances, no bit slicing of weights or inputs, no per-slice ADC; the
ADC converts each column's whole dot product once), plus repeated passes only
when bound management triggers. Our simulator instead slices 8-bit weights over
several ReRAM cells and inputs over several pulses, converts every (weight slice,
input slice) column sum with a 7-bit ADC (RAELLA: Center+Offset weights, adaptive
slicing, speculation and recovery) and models the digital shift-and-add: many
crossbar reads and ADC conversions per MAC, each simulated. So images/s here and
ours measure different amounts of simulated work for the same network: the
comparison says how fast each tool evaluates the network at its own level of
detail, not which is the faster implementation of the same model. Comparable:
the network, weights, inputs, preprocessing, batch size 64, thread count and
machine; top-1 on the same digits (different error models: aihwkit's is output
noise + 7-bit ADC over the whole dot product with per-vector input scaling;
ours is slice-level ADC + E read noise on calibrated 8-bit integers).

Threads: OMP_NUM_THREADS / MKL_NUM_THREADS are set to --threads before torch is
imported, then torch.set_num_threads(T), torch.set_num_interop_threads(1).
Timing: one warm-up batch, then --repeat passes over all images in batches of
--batch (the last may be smaller); the best pass is reported; top-1 per pass (the
noisy configurations draw new noise each pass). torch.manual_seed(--seed) before
each configuration: it makes the torch tile's noise repeatable, not the C++ tile's
(RPUCuda draws from its own generator; two runs differ).

stdout is exactly one JSON object:

    {"model", "onnx", "images", "batch", "threads", "repeat", "aihwkit", "torch",
     "reference": {"onnx_top1", "torch_top1", "max_abs_logit_diff", "argmax_mismatches"},
     "float": {"seconds", "images_per_s", "top1"}, "macs_per_image",
     "configs": [{"name", "tile", "rpu_config", "out_noise", "inp_res", "out_res",
                  "bound_management", "tile_size", "analog_layers", "tiles",
                  "digital_layers", "analog_mac_share",
                  "mvm_passes_per_product" (torch tile), "seconds",
                  "images_per_s", "top1", "top1_per_pass", "loadavg_before",
                  "loadavg_after"} | {"name", "error"}],
     "loadavg_before", "loadavg_after", "cpu"}

"float" is the unconverted torch rebuild (the same batches and threads).
"reference" is onnxruntime's top-1 ("onnx_top1") beside the float torch rebuild's;
top-1 values are in percent. Progress goes to stderr. Exit status 2 on usage
errors, 1 on anything else (including any configuration that failed: its entry
then has "error" and the JSON is still printed).
"""
import argparse
import gzip
import json
import os
import platform
import struct
import sys
import time
import tomllib
from pathlib import Path

CONFIGS = ("cpp", "cpp_noise", "torch", "torch_noise")
REPO = Path(__file__).resolve().parents[2]


def log(msg):
    print(f"aihwkit_bench: {msg}", file=sys.stderr, flush=True)


def fail(msg, code=1):
    log("error: " + msg)
    sys.exit(code)


def parse_args(argv):
    ap = argparse.ArgumentParser(description="aihwkit throughput and top-1 on a sweep spec's model")
    ap.add_argument("--spec", default=str(REPO / "fixtures/sweeps/default.toml"),
                    help="sweep spec naming the model, its inputs and preprocessing (default: default.toml)")
    ap.add_argument("--model", default="mnist_cnn", help="the spec's [[model]] name (default mnist_cnn)")
    ap.add_argument("--images", type=int, default=2000,
                    help="first N evaluation inputs (default 2000; capped by the spec's evaluation count)")
    ap.add_argument("--threads", type=int, default=2, help="torch / OpenMP threads (default 2)")
    ap.add_argument("--batch", type=int, default=64, help="images per forward call (default 64)")
    ap.add_argument("--repeat", type=int, default=2, help="timed passes; the best is reported (default 2)")
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help=f"comma-separated subset of {','.join(CONFIGS)}")
    ap.add_argument("--adc-bits", type=int, default=7, help="output ADC bits (default 7)")
    ap.add_argument("--dac-bits", type=int, default=8, help="input DAC bits (default 8)")
    ap.add_argument("--tile", type=int, default=512, help="max tile rows and columns (default 512)")
    ap.add_argument("--out-noise", type=float, default=None,
                    help="forward.out_noise of the *_noise configurations (default: aihwkit's, 0.06)")
    ap.add_argument("--bound-management", choices=("iterative", "none"), default="iterative",
                    help="forward.bound_management (default iterative, aihwkit's default)")
    ap.add_argument("--seed", type=int, default=1, help="torch.manual_seed per configuration (default 1)")
    ap.add_argument("--skip-reference", action="store_true",
                    help="skip the onnxruntime check of the torch rebuild (slow on large models)")
    a = ap.parse_args(argv)
    if a.threads < 1 or a.repeat < 1 or a.batch < 1 or a.images < 1 or a.tile < 1:
        ap.error("--threads, --repeat, --batch, --images and --tile must be >= 1")
    if not (2 <= a.adc_bits <= 16 and 2 <= a.dac_bits <= 16):
        ap.error("--adc-bits and --dac-bits must be in 2..16")
    a.configs = [c for c in a.configs.split(",") if c]
    bad = sorted(set(a.configs) - set(CONFIGS))
    if bad or not a.configs:
        ap.error(f"--configs: unknown {bad}; choose from {','.join(CONFIGS)}")
    return a


# Threads must be fixed before torch (and its OpenMP runtime) is imported.
ARGS = parse_args(sys.argv[1:]) if __name__ == "__main__" else None
if ARGS is not None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402
from torch import nn  # noqa: E402


# --------------------------------------------------------------------------
# Inputs, from the sweep spec
# --------------------------------------------------------------------------
def read_idx_gz(path):
    with gzip.open(path, "rb") as gz:
        raw = gz.read()
    magic = struct.unpack(">i", raw[:4])[0]
    ndim = magic & 0xFF
    if magic >> 8 != 0x08:
        fail(f"{path}: not an unsigned-byte IDX file (magic {magic:#x})")
    dims = struct.unpack(f">{ndim}i", raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_inputs(a, model_shape):
    """Returns (onnx path, name, float32 inputs [N, C, H, W], labels or None)."""
    spec_path = Path(a.spec)
    try:
        spec = tomllib.loads(spec_path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        fail(f"cannot read {spec_path}: {e}", 2)
    models = {m["name"]: m for m in spec.get("model", [])}
    if a.model not in models:
        fail(f"{spec_path}: no [[model]] {a.model!r}; it has {sorted(models)}", 2)
    m = models[a.model]
    base = spec_path.parent
    onnx_path = (base / m["onnx"]).resolve()
    ev = m.get("evaluation", {})
    start, count = int(ev.get("start", 0)), int(ev.get("count", a.images))
    n = min(a.images, count)
    if n < a.images:
        log(f"--images {a.images} capped to the spec's evaluation count {count}")
    scale = float(m.get("scale", 1.0))
    mean = np.array(m.get("mean", [0.0]), dtype=np.float32)
    std = np.array(m.get("std", [1.0]), dtype=np.float32)
    images_path = (base / m["images"]).resolve()
    if images_path.is_dir():
        pixels, labels = load_photos(images_path, model_shape, start, n)
    else:
        pixels = read_idx_gz(images_path)[start:start + n]
        labels = read_idx_gz((base / m["labels"]).resolve())[start:start + n].astype(np.int64)
        pixels = pixels[:, None] if pixels.ndim == 3 else pixels
    if len(pixels) < n:
        fail(f"{images_path}: only {len(pixels)} inputs from {start}, wanted {n}")
    # Same arithmetic as our loader: x = (pixel * scale - mean) / std, per channel, in f32.
    mean, std = mean[None, :, None, None], std[None, :, None, None]
    x = (pixels.astype(np.float32) * np.float32(scale) - mean) / std
    return onnx_path, np.ascontiguousarray(x, dtype=np.float32), labels


def load_photos(folder, shape, start, n):
    from PIL import Image
    _, c, h, w = shape
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    files = files[start:start + n]
    out = []
    for p in files:
        img = Image.open(p).convert("RGB" if c == 3 else "L")
        if img.size != (w, h):
            img = img.resize((w, h), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
        out.append(arr.transpose(2, 0, 1) if arr.ndim == 3 else arr[None])
    return np.stack(out), None


# --------------------------------------------------------------------------
# ONNX graph -> torch module (only the ops and attributes reproduced exactly)
# --------------------------------------------------------------------------
def attrs_of(node, allowed):
    got = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    extra = sorted(set(got) - set(allowed))
    if extra:
        fail(f"node {node.name!r} ({node.op_type}): attribute(s) {extra} not reproduced")
    return {k: got.get(k, v) for k, v in allowed.items()}


def pads_2d(node, pads):
    """ONNX [top, left, bottom, right] -> (symmetric (pt, pl) or None, F.pad tuple or None)."""
    pads = list(pads) if pads else [0, 0, 0, 0]
    if len(pads) != 4:
        fail(f"node {node.name!r}: pads {pads}, expected 4 values (2-D)")
    pt, pl, pb, pr = pads
    if (pt, pl) == (pb, pr):
        return (pt, pl), None
    return (0, 0), (pl, pr, pt, pb)


class OnnxNet(nn.Module):
    """The ONNX graph's nodes in order; Conv and Gemm as nn.Conv2d / nn.Linear."""

    def __init__(self, model):
        super().__init__()
        g = model.graph
        inits = {i.name: numpy_helper.to_array(i).copy() for i in g.initializer}
        for n in g.node:
            if n.op_type == "Constant":
                value = helper.get_attribute_value(n.attribute[0])
                inits[n.output[0]] = numpy_helper.to_array(value).copy()
        consumers = {}
        for n in g.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        outputs = {o.name for o in g.output}
        self.input_name = g.input[0].name if g.input[0].name not in inits else None
        self.output_name = g.output[0].name
        self.layers = nn.ModuleDict()
        self.steps = []  # (op, input names, output name, params)
        skip = set()
        for idx, n in enumerate(g.node):
            if n.op_type == "Constant" or id(n) in skip:
                continue
            op, ins, out = n.op_type, list(n.input), n.output[0]
            if len(n.output) != 1:
                fail(f"node {n.name!r} ({op}): {len(n.output)} outputs (only the first is used by inference)"
                     if op != "BatchNormalization" else f"node {n.name!r}: training-mode BatchNormalization")
            key = f"l{idx}"
            if op == "Conv":
                at = attrs_of(n, dict(kernel_shape=None, strides=[1, 1], pads=[0, 0, 0, 0],
                                      dilations=[1, 1], group=1, auto_pad=b"NOTSET"))
                if at["auto_pad"] not in (b"NOTSET", "NOTSET"):
                    fail(f"node {n.name!r}: auto_pad {at['auto_pad']!r} not reproduced")
                w = inits[ins[1]].astype(np.float32)
                b = inits[ins[2]].astype(np.float32) if len(ins) > 2 and ins[2] else None
                if w.ndim != 4 or (at["kernel_shape"] and list(at["kernel_shape"]) != list(w.shape[2:])):
                    fail(f"node {n.name!r}: weight {w.shape}, kernel_shape {at['kernel_shape']}")
                # Fold a BatchNormalization that is this Conv's only consumer (as our importer does).
                cons = consumers.get(out, [])
                if (out not in outputs and len(cons) == 1 and cons[0].op_type == "BatchNormalization"
                        and all(i in inits for i in cons[0].input[1:5])):
                    bn = cons[0]
                    bat = attrs_of(bn, dict(epsilon=1e-5, momentum=0.9, training_mode=0, spatial=1))
                    if bat["training_mode"] or bat["spatial"] != 1:
                        fail(f"node {bn.name!r}: training_mode/spatial not reproduced")
                    s, beta, mu, var = (inits[i].astype(np.float64) for i in bn.input[1:5])
                    k = s / np.sqrt(var + np.float64(np.float32(bat["epsilon"])))
                    b0 = b.astype(np.float64) if b is not None else np.zeros(w.shape[0])
                    w = (w.astype(np.float64) * k[:, None, None, None]).astype(np.float32)
                    b = ((b0 - mu) * k + beta).astype(np.float32)
                    skip.add(id(bn))
                    out = bn.output[0]
                sym, asym = pads_2d(n, at["pads"])
                conv = nn.Conv2d(w.shape[1] * at["group"], w.shape[0], tuple(w.shape[2:]),
                                 stride=tuple(at["strides"]), padding=sym,
                                 dilation=tuple(at["dilations"]), groups=at["group"], bias=b is not None)
                with torch.no_grad():
                    conv.weight.copy_(torch.from_numpy(w))
                    if b is not None:
                        conv.bias.copy_(torch.from_numpy(b))
                self.layers[key] = conv
                self.steps.append(("Conv", ins[:1], out, dict(key=key, pad=asym)))
            elif op == "Gemm":
                at = attrs_of(n, dict(alpha=1.0, beta=1.0, transA=0, transB=0))
                if at["transA"] or ins[1] not in inits:
                    fail(f"node {n.name!r}: Gemm with transA or a non-constant B not reproduced")
                bmat = inits[ins[1]].astype(np.float32)
                w = (bmat if at["transB"] else bmat.T) * np.float32(at["alpha"])
                c = None
                if len(ins) > 2 and ins[2]:
                    c = inits[ins[2]].astype(np.float32) * np.float32(at["beta"])
                if c is not None and c.size != w.shape[0]:
                    fail(f"node {n.name!r}: Gemm C of shape {c.shape} (only a per-column bias is reproduced)")
                lin = nn.Linear(w.shape[1], w.shape[0], bias=c is not None)
                with torch.no_grad():
                    lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
                    if c is not None:
                        lin.bias.copy_(torch.from_numpy(c.reshape(-1)))
                self.layers[key] = lin
                self.steps.append(("Gemm", ins[:1], out, dict(key=key)))
            elif op == "BatchNormalization":
                at = attrs_of(n, dict(epsilon=1e-5, momentum=0.9, training_mode=0, spatial=1))
                if at["training_mode"]:
                    fail(f"node {n.name!r}: training-mode BatchNormalization")
                prm = [torch.from_numpy(inits[i].astype(np.float32)) for i in ins[1:5]]
                self.steps.append((op, ins[:1], out, dict(prm=prm, eps=float(np.float32(at["epsilon"])))))
            elif op == "Relu":
                attrs_of(n, {})
                self.steps.append((op, ins, out, {}))
            elif op == "Clip":
                at = attrs_of(n, dict(min=None, max=None))  # attributes before opset 11
                lo = float(inits[ins[1]].reshape(())) if len(ins) > 1 and ins[1] else at["min"]
                hi = float(inits[ins[2]].reshape(())) if len(ins) > 2 and ins[2] else at["max"]
                self.steps.append((op, ins[:1], out, dict(lo=lo, hi=hi)))
            elif op in ("MaxPool", "AveragePool"):
                at = attrs_of(n, dict(kernel_shape=None, strides=None, pads=[0, 0, 0, 0], ceil_mode=0,
                                      dilations=[1, 1], storage_order=0, count_include_pad=0,
                                      auto_pad=b"NOTSET"))
                if (at["auto_pad"] not in (b"NOTSET", "NOTSET") or list(at["dilations"]) != [1, 1]
                        or at["storage_order"]):
                    fail(f"node {n.name!r}: {op} auto_pad/dilations/storage_order not reproduced")
                sym, asym = pads_2d(n, at["pads"])
                if asym is not None:
                    fail(f"node {n.name!r}: asymmetric pool pads not reproduced")
                self.steps.append((op, ins, out, dict(k=tuple(at["kernel_shape"]),
                                                      s=tuple(at["strides"] or at["kernel_shape"]),
                                                      p=sym, ceil=bool(at["ceil_mode"]),
                                                      cip=bool(at["count_include_pad"]))))
            elif op == "GlobalAveragePool":
                attrs_of(n, {})
                self.steps.append((op, ins, out, {}))
            elif op == "Flatten":
                at = attrs_of(n, dict(axis=1))
                self.steps.append((op, ins, out, dict(axis=at["axis"])))
            elif op == "Add":
                attrs_of(n, {})
                consts = {i: torch.from_numpy(inits[i].astype(np.float32)) for i in ins if i in inits}
                self.steps.append((op, ins, out, dict(consts=consts)))
            elif op == "Concat":
                at = attrs_of(n, dict(axis=None))
                if at["axis"] is None or any(i in inits for i in ins):
                    fail(f"node {n.name!r}: Concat without an axis or of constants not reproduced")
                self.steps.append((op, ins, out, dict(axis=at["axis"])))
            elif op == "Softmax":
                at = attrs_of(n, dict(axis=-1 if model_opset(model) >= 13 else 1))
                if model_opset(model) < 13:
                    fail(f"node {n.name!r}: Softmax before opset 13 (flattening semantics) not reproduced")
                self.steps.append((op, ins, out, dict(axis=at["axis"])))
            else:
                fail(f"node {n.name!r}: op {op} not reproduced by this script")

    def forward(self, x):
        env = {self.input_name: x}
        for op, ins, out, p in self.steps:
            v = env[ins[0]]
            if op == "Conv":
                if p["pad"] is not None:
                    v = F.pad(v, p["pad"])
                v = self.layers[p["key"]](v)
            elif op == "Gemm":
                v = self.layers[p["key"]](v)
            elif op == "BatchNormalization":
                s, b, mu, var = p["prm"]
                v = F.batch_norm(v, mu, var, s, b, training=False, eps=p["eps"])
            elif op == "Relu":
                v = F.relu(v)
            elif op == "Clip":
                v = torch.clamp(v, min=p["lo"], max=p["hi"])
            elif op == "MaxPool":
                v = F.max_pool2d(v, p["k"], p["s"], p["p"], ceil_mode=p["ceil"])
            elif op == "AveragePool":
                v = F.avg_pool2d(v, p["k"], p["s"], p["p"], ceil_mode=p["ceil"], count_include_pad=p["cip"])
            elif op == "GlobalAveragePool":
                v = v.mean(dim=(2, 3), keepdim=True)
            elif op == "Flatten":
                v = v.reshape(int(np.prod(v.shape[:p["axis"]])), -1)
            elif op == "Add":
                a0 = p["consts"].get(ins[0], None)
                a1 = p["consts"].get(ins[1], None)
                v = (env[ins[0]] if a0 is None else a0) + (env[ins[1]] if a1 is None else a1)
            elif op == "Concat":
                v = torch.cat([env[i] for i in ins], dim=p["axis"])
            elif op == "Softmax":
                v = F.softmax(v, dim=p["axis"])
            env[out] = v
        return env[self.output_name]


def model_opset(model):
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


# --------------------------------------------------------------------------
# Running and timing
# --------------------------------------------------------------------------
def predict(net, x, batch):
    outs = []
    with torch.inference_mode():
        for lo in range(0, len(x), batch):
            outs.append(net(x[lo:lo + batch]))
    return torch.cat(outs).numpy()


def timed(net, x, batch, repeat, tag):
    with torch.inference_mode():
        net(x[:batch])  # warm-up
    best, preds = None, []
    for r in range(repeat):
        t0 = time.perf_counter()
        y = predict(net, x, batch)
        dt = time.perf_counter() - t0
        log(f"{tag}: pass {r + 1}/{repeat}: {dt:.3f} s ({len(x) / dt:.1f} images/s)")
        best = dt if best is None else min(best, dt)
        preds.append(y.argmax(axis=1))
    return best, preds


def top1(pred, labels, ref_pred):
    truth = labels if labels is not None else ref_pred
    return round(100.0 * float((pred == truth).mean()), 4)


def rpu_config(a, name):
    from aihwkit.simulator.configs import InferenceRPUConfig, TorchInferenceRPUConfig
    from aihwkit.simulator.parameters.enums import (
        BoundManagementType, NoiseManagementType, WeightNoiseType)

    cls = TorchInferenceRPUConfig if name.startswith("torch") else InferenceRPUConfig
    rpu = cls()
    rpu.mapping.max_input_size = a.tile
    rpu.mapping.max_output_size = a.tile
    rpu.mapping.weight_scaling_omega = 1.0
    rpu.mapping.weight_scaling_columnwise = True
    rpu.mapping.digital_bias = True
    f = rpu.forward
    f.inp_res = 1.0 / (2 ** a.dac_bits - 2)
    f.out_res = 1.0 / (2 ** a.adc_bits - 2)
    f.inp_noise = 0.0
    f.w_noise = 0.0
    f.w_noise_type = WeightNoiseType.NONE
    f.ir_drop = 0.0
    f.noise_management = NoiseManagementType.ABS_MAX
    f.bound_management = (BoundManagementType.ITERATIVE if a.bound_management == "iterative"
                          else BoundManagementType.NONE)
    if name.endswith("_noise"):
        if a.out_noise is not None:
            f.out_noise = a.out_noise
    else:
        f.out_noise = 0.0
    rpu.drift_compensation = None
    return cls.__name__, rpu


def count_passes(net, xb):
    """Torch tile only: analog passes per tile product on one batch (1.0 = bound management never
    repeated a pass; the C++ tile's passes are not visible from Python)."""
    from aihwkit.simulator.tiles.analog_mvm import AnalogMVM

    calls = {"matmul": 0, "pass": 0}
    orig_mm, orig_mv = AnalogMVM.matmul.__func__, AnalogMVM._compute_analog_mv.__func__

    def mm(cls, *args, **kw):
        calls["matmul"] += 1
        return orig_mm(cls, *args, **kw)

    def mv(cls, *args, **kw):
        calls["pass"] += 1
        return orig_mv(cls, *args, **kw)

    AnalogMVM.matmul, AnalogMVM._compute_analog_mv = classmethod(mm), classmethod(mv)
    try:
        with torch.inference_mode():
            net(xb)
    finally:
        AnalogMVM.matmul, AnalogMVM._compute_analog_mv = classmethod(orig_mm), classmethod(orig_mv)
    return round(calls["pass"] / max(calls["matmul"], 1), 4)


def weight_layers(float_net, x1):
    """(name, MACs per input, groups) of every Conv2d / Linear, from one forward pass."""
    rows, hooks = [], []
    for name, m in float_net.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            def hook(mod, _inp, out, name=name):
                per_out = (mod.in_channels // mod.groups * int(np.prod(mod.kernel_size))
                           if isinstance(mod, nn.Conv2d) else mod.in_features)
                rows.append((name, out[0].numel() * per_out, getattr(mod, "groups", 1)))
            hooks.append(m.register_forward_hook(hook))
    with torch.inference_mode():
        float_net(x1)
    for h in hooks:
        h.remove()
    return rows


def run_config(a, name, float_net, x, labels, ref_pred, layers):
    from aihwkit.nn import AnalogConv2d, AnalogLinear
    from aihwkit.nn.conversion import convert_to_analog

    entry = {"name": name, "tile": "torch" if name.startswith("torch") else "cpp",
             "loadavg_before": list(os.getloadavg())}
    try:
        torch.manual_seed(a.seed)
        cls_name, rpu = rpu_config(a, name)
        # aihwkit 1.1.0's AnalogConv2d takes groups = 1 only ("Only one group is supported"):
        # grouped (depthwise) convolutions stay digital torch layers.
        grouped = [n for n, _, g in layers if g > 1]
        net = convert_to_analog(float_net, rpu, exclude_modules=grouped)
        net.eval()
        analog = [m for m in net.modules() if isinstance(m, (AnalogConv2d, AnalogLinear))]
        digital = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
                   and not isinstance(m, (AnalogConv2d, AnalogLinear))]
        if len(digital) != len(grouped):
            raise RuntimeError(f"{len(digital)} Conv2d/Linear layer(s) left digital after conversion, "
                               f"{len(grouped)} grouped")
        total = sum(m for _, m, _ in layers)
        entry["digital_layers"] = len(grouped)
        entry["analog_mac_share"] = round(sum(m for _, m, g in layers if g == 1) / total, 6)
        tiles = sum(len(list(m.analog_tiles())) for m in analog)
        log(f"{name}: {cls_name}, {len(analog)} analog layers on {tiles} tiles, "
            f"out_noise {rpu.forward.out_noise}, inp_res 1/{round(1 / rpu.forward.inp_res)}, "
            f"out_res 1/{round(1 / rpu.forward.out_res)}")
        if entry["tile"] == "torch":
            entry["mvm_passes_per_product"] = count_passes(net, x[:a.batch])
        seconds, preds = timed(net, x, a.batch, a.repeat, name)
        per_pass = [top1(p, labels, ref_pred) for p in preds]
        entry.update({
            "rpu_config": cls_name,
            "out_noise": rpu.forward.out_noise,
            "inp_res": rpu.forward.inp_res,
            "out_res": rpu.forward.out_res,
            "out_bound": rpu.forward.out_bound,
            "bound_management": a.bound_management,
            "tile_size": a.tile,
            "analog_layers": len(analog),
            "tiles": tiles,
            "seconds": seconds,
            "images_per_s": len(x) / seconds,
            "top1": per_pass[0],
            "top1_per_pass": per_pass,
        })
    except Exception as e:  # noqa: BLE001 - report and go on with the other configurations
        log(f"{name}: failed: {type(e).__name__}: {e}")
        entry["error"] = f"{type(e).__name__}: {e}"
    entry["loadavg_after"] = list(os.getloadavg())
    return entry


def reference_check(onnx_path, model, float_net, x, labels, batch, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), sess_options=so, providers=["CPUExecutionProvider"])
    in_name = model.graph.input[0].name
    ref = []
    for lo in range(0, len(x), batch):
        (r,) = sess.run(None, {in_name: x[lo:lo + batch]})
        ref.append(r)
    ref = np.concatenate(ref)
    ours = predict(float_net, torch.from_numpy(x), batch)
    diff = float(np.abs(ref - ours).max())
    ref_pred, our_pred = ref.argmax(axis=1), ours.argmax(axis=1)
    res = {
        "onnx_top1": top1(ref_pred, labels, ref_pred),
        "torch_top1": top1(our_pred, labels, ref_pred),
        "max_abs_logit_diff": diff,
        "argmax_mismatches": int((ref_pred != our_pred).sum()),
    }
    return res, ref_pred


def main(a):
    import aihwkit

    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    load0 = list(os.getloadavg())
    spec_model = None
    try:
        spec = tomllib.loads(Path(a.spec).read_text())
        spec_model = next((m for m in spec.get("model", []) if m.get("name") == a.model), None)
    except (OSError, tomllib.TOMLDecodeError) as e:
        fail(f"cannot read {a.spec}: {e}", 2)
    if spec_model is None:
        fail(f"{a.spec}: no [[model]] {a.model!r}", 2)
    model = onnx.load(str((Path(a.spec).parent / spec_model["onnx"]).resolve()))
    dims = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    onnx_path, x_np, labels = load_inputs(a, dims)
    log(f"{onnx_path.name}: {len(model.graph.node)} nodes; inputs {list(x_np.shape)}, "
        f"{'labelled' if labels is not None else 'unlabelled (top-1 = agreement with float)'}")
    float_net = OnnxNet(model).eval()
    log(f"torch rebuild: {len(float_net.layers)} weight layers, {len(float_net.steps)} steps")
    if a.skip_reference:
        ref_res = None
        ref_pred = predict(float_net, torch.from_numpy(x_np), a.batch).argmax(axis=1)
    else:
        t0 = time.perf_counter()
        ref_res, ref_pred = reference_check(onnx_path, model, float_net, x_np, labels, a.batch, a.threads)
        log(f"reference check ({time.perf_counter() - t0:.1f} s): {ref_res}")
        if ref_res["onnx_top1"] != ref_res["torch_top1"]:
            fail("the torch rebuild's top-1 differs from the ONNX model's")
    x = torch.from_numpy(x_np)
    layers = weight_layers(float_net, x[:1])
    torch.manual_seed(a.seed)
    fsec, fpred = timed(float_net, x, a.batch, a.repeat, "float")
    result = {
        "model": a.model,
        "onnx": str(onnx_path.relative_to(REPO) if onnx_path.is_relative_to(REPO) else onnx_path),
        "images": len(x),
        "batch": a.batch,
        "threads": a.threads,
        "torch_threads": torch.get_num_threads(),
        "repeat": a.repeat,
        "aihwkit": aihwkit.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "reference": ref_res,
        "float": {"seconds": fsec, "images_per_s": len(x) / fsec, "top1": top1(fpred[0], labels, ref_pred)},
        "macs_per_image": sum(m for _, m, _ in layers),
        "configs": [run_config(a, name, float_net, x, labels, ref_pred, layers) for name in a.configs],
        "loadavg_before": load0,
        "loadavg_after": list(os.getloadavg()),
        "cpu": cpu_name(),
    }
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 1 if any("error" in c for c in result["configs"]) else 0


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" x{os.cpu_count()}"
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main(ARGS))
