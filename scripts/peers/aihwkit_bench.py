#!/usr/bin/env python3
"""aihwkit (IBM Analog Hardware Acceleration Kit) throughput and fidelity on our models:
top-1 for the CNNs, the Lee-50 correlation for the text encoders.

Run with the private venv made by scripts/peers/setup.sh (not run by CI):

    .cache/peers-venv/bin/python scripts/peers/aihwkit_bench.py \
        [--spec fixtures/sweeps/default.toml] [--model mnist_cnn] [--images 2000] \
        [--threads 2] [--batch 64] [--repeat 2] [--configs cpp,cpp_noise,torch,torch_noise]
    .cache/peers-venv/bin/python scripts/peers/aihwkit_bench.py \
        --spec fixtures/sweeps/real-scale.toml --model minilm --images 50 --batch 50

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

Text models (a [[model]] with `tokenizer`: "minilm", all-MiniLM-L6-v2, and
"paraphrase_minilm_l3" in real-scale.toml). Inputs as our simulator makes them
(crates/raella-data/src/lee50.rs and text.rs, crates/raella-sweep/src/run.rs
`load_text` / `text_inputs`) and as scripts/bench/ort_bench.py `text_feeds` feeds them to
onnxruntime:
  * documents: the lines of `<lee50>/lee.cor` (split at "\\n", one trailing "\\r"
    dropped, each line UTF-8 or else Latin-1; an empty one is an error), the spec's
    `evaluation` range of them, the first --images of those; ratings: the upper triangle
    (i < j) of `<lee50>/similarities0-1.txt`, the pairs of two evaluated documents (all
    50: 1,225 pairs).
  * tokens: the `tokenizers` package on the spec's tokenizer.json, padding off,
    truncation at the spec's `max_tokens` (default 256 as ours; longest-first, right, no
    stride), special tokens from the tokenizer's template ([CLS] ... [SEP]);
    input_ids = the ids, attention_mask = all ones, token_type_ids = the type ids (0),
    int64 [1, S]. Graph inputs are matched by name as run.rs does ("mask", then
    "type"/"segment", then "ids"/"input"; paraphrase-MiniLM-L3 has no token_type_ids).
  * batching: ours and ort_bench run each document alone, unpadded. Here --batch
    documents share one forward call, right-padded to the batch's longest (pad id and
    pad type id from tokenizer.json, attention_mask 0). The float result stays that of
    the unpadded documents up to float32 rounding: both graphs add float32-min to the
    attention scores of masked keys (softmax weight exactly 0) and mean-pool with the
    mask; the reference check measures this on every document. Padded tokens are still
    computed, on the analog tiles too: "tokens" (real) and "tokens_computed" (padded)
    say how much. On the tiles a pad token is one more input vector: ABS_MAX scales
    each vector by its own max, so it leaves the real tokens' quantisation alone, but
    the torch tile's bound management repeats the whole batch when any output clipped
    (a pad token's, or another document's), so there the batch's make-up can change a
    document's result. --batch 1 is the unpadded protocol itself.
  * score: the spec's `output` ("sentence_embedding"; "461" for paraphrase-MiniLM-L3),
    one row per document; each rated pair's cosine, then Pearson and Spearman (Pearson
    of average ranks, ties averaged) against the ratings, in lee50.rs's arithmetic
    (float64 from the float32 rows, every sum left to right, ranks by a stable sort in
    f64::total_cmp order), so the same embeddings give bit-identical correlations.
  * rebuild: GraphNet interprets the ONNX nodes in order (the CNNs keep OnnxNet). Nodes
    whose inputs are all constant are evaluated once at build time (as our importer
    folds constants). A MatMul whose second operand is a constant 2-D matrix (and first
    is not constant) is an nn.Linear (weight B^T, no bias) on the input flattened to
    [vectors, K]: exactly our simulator's crossbar layers (crates/raella-onnx import.rs
    `weight_layer`; a Gemm with constant B likewise, its C as bias). A MatMul of two
    activations (attention's Q K^T and P V) stays digital torch.matmul, as in ours. The
    bias Add after each MatMul is not folded into the nn.Linear: it stays the graph's own
    digital Add, the same arithmetic as aihwkit's digital_bias (analog product, then a
    digital addition) and as ours (which folds it into the layer's digital bias, added
    after the crossbar product). Every other op (the two files hold Constant, Add,
    Sub, Mul, Div, Erf, Softmax, LayerNormalization, Gather, Shape, Range, Unsqueeze,
    Reshape, Transpose, Concat, Slice, Cast, Where, Equal, Expand, ConstantOfShape,
    ReduceSum, ReduceL2, Clip, Identity; TEXT_OPS lists all handled) follows the ONNX
    spec at the file's opset; any other op, attribute or case is an error naming the
    node.
  * reference: onnxruntime runs each document alone, unpadded (ort_bench's session
    options and feeds); the float torch rebuild runs the timed batches. The run stops
    when max |embedding difference| exceeds TEXT_REL_TOL of the largest |embedding| or
    the Pearsons differ by more than PEARSON_TOL.
  * MACs, counted at each document's own token length: every nn.Linear S x K x N
    (analog), every activation-by-activation MatMul output elements x K (digital, as
    crates/raella-onnx exec.rs `digital_macs` counts them); analog_mac_share = analog /
    (analog + digital) is below 1.0 for a transformer.
  * signed inputs: a BERT linear layer's inputs are signed (LayerNorm, GELU and
    attention outputs), not post-ReLU. aihwkit's DAC is symmetric: ABS_MAX scales each
    input vector by its own max |x| into [-1, 1] and inp_res = 1/(2^8 - 2) rounds it to
    steps of 1/127, codes -127..127, both signs in the one analog pass, so a signed input
    gets all 255 levels (a post-ReLU one only 0..127). Ours reads signed inputs as int8
    (max |x| / 127, one scale per layer fixed by calibration) in two crossbar passes,
    positive parts then negative magnitudes. aihwkit needs no calibration texts.

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
range, per tile when a layer's rows span several tiles, where ours quantises each
layer's inputs with a scale fixed by calibration); bound management
--bound-management (aihwkit's default `iterative`: when an output reaches
+-out_bound the pass is repeated with the inputs halved, up to max_bm_res; the
torch tile repeats the whole batch if any output clipped; `none` clips).
Noise-free means forward.out_noise = inp_noise = w_noise = 0, ir_drop = 0, no
programming noise (program_analog_weights / drift_analog_weights are never called,
so the noise model's programming noise and drift are not applied;
drift_compensation = None). The weights are float (aihwkit programs no
weight quantisation here).

What aihwkit computes per layer: ONE analog matrix-vector pass per input vector
(AnalogMVType.ONE_PASS: signed inputs and signed weights in one pass; weights as
float conductances, no bit slicing of weights or inputs, no per-slice ADC; the
ADC converts each column's whole dot product once), plus repeated passes only
when bound management triggers. Our simulator instead slices 8-bit weights over
several ReRAM cells and inputs over several pulses, converts every (weight slice,
input slice) column sum with a 7-bit ADC (RAELLA: Center+Offset weights, adaptive
slicing, speculation and recovery) and models the digital shift-and-add: many
crossbar reads and ADC conversions per MAC, each simulated. So images/s (or
documents/s) here and ours measure different amounts of simulated work for the
same network: the comparison says how fast each tool evaluates the network at its
own level of detail, not which is the faster implementation of the same model.
Comparable: the network, weights, inputs, preprocessing, batch size 64 (text
models: see "batching" above), thread count and machine; top-1 on the same digits
(different error models: aihwkit's is output noise + 7-bit ADC over the whole dot
product with per-vector input scaling; ours is slice-level ADC + E read noise on
calibrated 8-bit integers); for the text models the Lee-50 correlation on the same
documents and token ids.

Threads: OMP_NUM_THREADS / MKL_NUM_THREADS are set to --threads before torch is
imported, then torch.set_num_threads(T), torch.set_num_interop_threads(1).
Timing: one warm-up batch, then --repeat passes over all images (documents) in
batches of --batch (the last may be smaller); the best pass is reported; top-1
(Pearson and Spearman) per pass (the noisy configurations draw new noise each pass).
torch.manual_seed(--seed) before each configuration: it makes the torch tile's
noise repeatable, not the C++ tile's (RPUCuda draws from its own generator; two
runs differ).

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

and for a text model, with documents in place of images and the Lee-50 correlations
in place of top-1:

    {"model", "onnx", "output", "documents", "pairs", "max_tokens", "tokens",
     "tokens_computed", "batch", "threads", "repeat", "aihwkit", "torch",
     "reference": {"onnx_pearson", "onnx_spearman", "torch_pearson", "torch_spearman",
                   "max_abs_embedding_diff", "max_abs_embedding", "pairs"},
     "float": {"seconds", "documents_per_s", "pearson", "spearman"},
     "macs_per_document" (analog: the nn.Linear layers, mean over the documents),
     "digital_macs_per_document" (the activation-by-activation MatMuls),
     "configs": [{... as above, "documents_per_s", "pearson", "spearman",
                  "pearson_per_pass", "spearman_per_pass" in place of the image
                  figures} | {"name", "error"}],
     "loadavg_before", "loadavg_after", "cpu"}

"float" is the unconverted torch rebuild (the same batches and threads).
"reference" is onnxruntime's top-1 ("onnx_top1") beside the float torch rebuild's,
or its Lee-50 correlations beside the rebuild's; top-1 values are in percent.
Progress goes to stderr. Exit status 2 on usage errors, 1 on anything else
(including any configuration that failed: its entry then has "error" and the JSON
is still printed).
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
    ap = argparse.ArgumentParser(
        description="aihwkit throughput and top-1 (Lee-50 correlation for text models) on a sweep spec's model")
    ap.add_argument("--spec", default=str(REPO / "fixtures/sweeps/default.toml"),
                    help="sweep spec naming the model, its inputs and preprocessing (default: default.toml)")
    ap.add_argument("--model", default="mnist_cnn", help="the spec's [[model]] name (default mnist_cnn)")
    ap.add_argument("--images", type=int, default=2000,
                    help="first N evaluation inputs, images or documents (default 2000; capped by the "
                         "spec's evaluation count)")
    ap.add_argument("--threads", type=int, default=2, help="torch / OpenMP threads (default 2)")
    ap.add_argument("--batch", type=int, default=64,
                    help="images (documents, padded to the batch's longest) per forward call (default 64)")
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
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
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
# Text inputs (Lee-50 documents through tokenizer.json), as our simulator's
# --------------------------------------------------------------------------
# crates/raella-sweep/src/spec.rs DEFAULT_MAX_TOKENS: the truncation of a text model
# whose [[model]] gives no `max_tokens` (sentence-transformers' max_seq_length for
# all-MiniLM-L6-v2).
DEFAULT_MAX_TOKENS = 256


def is_text_model(spec_model):
    return "tokenizer" in spec_model


def load_lee50(folder, start, count):
    """As crates/raella-data/src/lee50.rs `Lee50::load`, then the spec's evaluation range (run.rs
    `load_text`): (documents, [(i, j, rating)] for i < j, both inside the range, re-indexed)."""
    cor, sims = folder / "lee.cor", folder / "similarities0-1.txt"
    try:
        raw_docs, raw_sims = cor.read_bytes(), sims.read_bytes()
    except OSError as e:
        fail(f"cannot read the Lee-50 files: {e}")
    lines = raw_docs.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    docs = []
    for i, raw in enumerate(lines):
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")  # each byte one char, as the Rust `char::from(b)`
        if not text.strip():
            fail(f"{cor}: line {i + 1}: empty document")
        docs.append(text)
    n = len(docs)
    if n < 2:
        fail(f"{cor}: {n} documents; need at least 2")
    text = raw_sims.decode("utf-8", errors="replace")
    rows = text.split("\n")
    if rows and rows[-1] == "":
        rows.pop()
    rows = [(k, r[:-1] if r.endswith("\r") else r) for k, r in enumerate(rows)]
    rows = [(k, r) for k, r in rows if r.strip()]
    if len(rows) != n:
        fail(f"{sims}: {len(rows)} matrix rows for {n} documents")
    pairs = []
    for i, (lineno, line) in enumerate(rows):
        vals = line.split()
        if len(vals) != n:
            fail(f"{sims}: line {lineno + 1}: {len(vals)} values, expected {n}")
        for j in range(i + 1, n):
            try:
                x = float(vals[j])
            except ValueError:
                fail(f"{sims}: line {lineno + 1}: column {j + 1}: {vals[j]!r} is not a number")
            if not 0.0 <= x <= 1.0:
                fail(f"{sims}: line {lineno + 1}: column {j + 1}: {x} is outside [0, 1]")
            pairs.append((i, j, x))
    if start < 0 or count < 2 or start + count > n:
        fail(f"evaluation = {{ start = {start}, count = {count} }}: must lie within the {n} Lee-50 "
             f"documents of {folder} and hold at least 2")
    end = start + count
    pairs = [(i - start, j - start, s) for i, j, s in pairs if start <= i < end and start <= j < end]
    return docs[start:end], pairs


def input_role(model_path, name):
    """Which encoding a graph input gets, by name, as run.rs `text_inputs` matches them."""
    lower = name.lower()
    if "mask" in lower:
        return "mask"
    if "type" in lower or "segment" in lower:
        return "type_ids"
    if "ids" in lower or "input" in lower:
        return "ids"
    fail(f"{model_path}: input {name!r} is not one of input_ids, attention_mask or token_type_ids: "
         "cannot feed it text")


def load_texts(a, spec_path, spec_model, model, onnx_path):
    """The evaluated Lee-50 documents, encoded: (encodings [{ids, mask, type_ids}], pairs,
    input names -> (role, numpy dtype), pad values {role: value}, max_tokens)."""
    from tokenizers import Tokenizer

    base = spec_path.parent
    ev = spec_model.get("evaluation", {})
    start, count = int(ev.get("start", 0)), int(ev.get("count", 0))
    docs, pairs = load_lee50((base / spec_model["lee50"]).resolve(), start, count)
    n = min(a.images, len(docs))
    if n < len(docs):
        log(f"--images {a.images}: the first {n} of the spec's {len(docs)} documents")
    elif a.images > len(docs):
        log(f"--images {a.images} capped to the spec's evaluation count {len(docs)}")
    if n < 2:
        fail("a Lee-50 correlation needs at least 2 documents (--images >= 2)", 2)
    docs = docs[:n]
    pairs = [(i, j, s) for i, j, s in pairs if i < n and j < n]
    max_tokens = int(spec_model.get("max_tokens", DEFAULT_MAX_TOKENS))
    tok_path = (base / spec_model["tokenizer"]).resolve()
    try:
        tok = Tokenizer.from_file(str(tok_path))
    except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception
        fail(f"{tok_path}: not a tokenizer: {e}")
    # Pad values for batches (the tokenizer's own, read before padding is switched off).
    pad = tok.padding or {}
    pads = {"ids": int(pad.get("pad_id", 0)), "type_ids": int(pad.get("pad_type_id", 0)), "mask": 0}
    # As crates/raella-data/src/text.rs: padding off, truncation at max_tokens with the other
    # truncation parameters at their defaults (longest-first, right, stride 0), special tokens
    # added by the tokenizer's post-processor, attention mask all ones.
    tok.no_padding()
    tok.enable_truncation(max_length=max_tokens)
    enc = []
    for d in docs:
        e = tok.encode(d)
        enc.append({"ids": list(e.ids), "mask": [1] * len(e.ids), "type_ids": list(e.type_ids)})
    inits = {i.name for i in model.graph.initializer}
    inputs = {}
    for i in model.graph.input:
        if i.name in inits:
            continue
        code = i.type.tensor_type.elem_type
        inputs[i.name] = (input_role(onnx_path, i.name), helper.tensor_dtype_to_np_dtype(code))
    lengths = [len(e["ids"]) for e in enc]
    log(f"{len(docs)} Lee-50 documents ({len(pairs)} rated pairs), tokens min {min(lengths)} "
        f"mean {np.mean(lengths):.1f} max {max(lengths)} (truncation {max_tokens}); "
        f"inputs {', '.join(f'{k} <- {r}' for k, (r, _) in inputs.items())}")
    return enc, pairs, inputs, pads, max_tokens


def text_batches(enc, inputs, pads, batch):
    """Feeds of --batch documents each, right-padded to the batch's longest (pad id and pad type
    id from tokenizer.json, attention mask 0); one document per batch is the unpadded protocol."""
    out = []
    for lo in range(0, len(enc), batch):
        chunk = enc[lo:lo + batch]
        width = max(len(e["ids"]) for e in chunk)
        feed = {}
        for name, (role, dtype) in inputs.items():
            arr = np.full((len(chunk), width), pads[role], dtype=np.int64)
            for r, e in enumerate(chunk):
                arr[r, :len(e[role])] = e[role]
            feed[name] = torch.from_numpy(arr.astype(dtype))
        out.append(feed)
    return out


def single_feed(e, inputs):
    """One document unpadded, [1, S] per input, as numpy (onnxruntime) arrays."""
    return {name: np.array([e[role]], dtype=np.int64).astype(dtype) for name, (role, dtype) in inputs.items()}


# Lee-50 statistics, in crates/raella-data/src/lee50.rs's arithmetic: float64 throughout, every
# sum left to right (np.cumsum is a sequential accumulation; Rust's `Iterator::sum` is a fold),
# so the same embedding rows give bit-identical correlations.
def seq_sum(x, axis=-1):
    return np.take(np.cumsum(np.asarray(x, dtype=np.float64), axis=axis), -1, axis=axis)


def pearson(x, y):
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) != len(y) or len(x) < 2:
        return None
    n = float(len(x))
    mx, my = seq_sum(x) / n, seq_sum(y) / n
    dx, dy = x - mx, y - my
    sxy, sxx, syy = seq_sum(dx * dy), seq_sum(dx * dx), seq_sum(dy * dy)
    if not (sxx > 0.0 and syy > 0.0):
        return None
    return float(sxy / np.sqrt(sxx * syy))


def average_ranks(x):
    """1-based ranks, ties averaged; order by f64::total_cmp and a stable sort, as lee50.rs."""
    x = np.asarray(x, dtype=np.float64)
    bits = x.view(np.int64)
    key = np.where(bits < 0, bits ^ np.int64(0x7FFFFFFFFFFFFFFF), bits)
    order = np.argsort(key, kind="stable")
    ranks = np.zeros(len(x))
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def lee50_scores(emb, pairs):
    """{"pearson", "spearman"} of the pairs' embedding cosines against the ratings."""
    e = np.asarray(emb, dtype=np.float32).astype(np.float64)
    norms = np.sqrt(seq_sum(e * e, axis=1))
    ii = np.array([p[0] for p in pairs])
    jj = np.array([p[1] for p in pairs])
    dots = seq_sum(e[ii] * e[jj], axis=1)
    den = norms[ii] * norms[jj]
    zero = (norms[ii] == 0.0) | (norms[jj] == 0.0)
    cos = np.where(zero, 0.0, dots / np.where(zero, 1.0, den))
    gold = np.array([p[2] for p in pairs], dtype=np.float64)
    p, s = pearson(cos, gold), pearson(average_ranks(cos), average_ranks(gold))
    if p is None or s is None:
        raise ValueError("a Lee-50 correlation is undefined (constant cosines or ratings)")
    return {"pearson": p, "spearman": s}


# --------------------------------------------------------------------------
# ONNX graph -> torch module (only the ops and attributes reproduced exactly)
# --------------------------------------------------------------------------
def attrs_of(node, allowed, path=None):
    got = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    extra = sorted(set(got) - set(allowed))
    if extra:
        where = f"{path}: " if path else ""
        fail(f"{where}node {node.name!r} ({node.op_type}): attribute(s) "
             f"{ {k: got[k] for k in extra} } not reproduced")
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
# Any ONNX graph -> torch, node by node (the text models)
# --------------------------------------------------------------------------
TORCH_DTYPES = {
    TensorProto.FLOAT: torch.float32, TensorProto.DOUBLE: torch.float64,
    TensorProto.FLOAT16: torch.float16, TensorProto.INT64: torch.int64,
    TensorProto.INT32: torch.int32, TensorProto.INT16: torch.int16, TensorProto.INT8: torch.int8,
    TensorProto.UINT8: torch.uint8, TensorProto.BOOL: torch.bool,
}


def _axis(ax, rank):
    ax = int(ax)
    if not -rank <= ax < max(rank, 1):
        raise ValueError(f"axis {ax} out of range for rank {rank}")
    return ax + rank if ax < 0 else ax


def _ints(t):
    return [int(v) for v in t.reshape(-1).tolist()]


def _div(a, b):
    if a.dtype.is_floating_point:
        return a / b
    return torch.div(a, b, rounding_mode="trunc")  # integer Div truncates toward zero (as onnxruntime)


def _binary(fn):
    def run(_net, _p, v):
        if v[0].dtype != v[1].dtype:
            raise TypeError(f"operand types {v[0].dtype} and {v[1].dtype} differ")
        return fn(v[0], v[1])
    return run


def _unary(fn):
    return lambda _net, _p, v: fn(v[0])


def _op_linear(net, p, v):
    x = v[0]
    k = x.shape[-1]
    y = net.layers[p["key"]](x.reshape(-1, k)).reshape(*x.shape[:-1], p["n"])
    if net.mac_counter is not None:
        c = net.mac_counter["analog"]
        c[p["key"]] = c.get(p["key"], 0) + x.numel() * p["n"]
    return y


def _op_matmul(net, _p, v):
    y = torch.matmul(v[0], v[1])
    if net.mac_counter is not None:  # as crates/raella-onnx/src/exec.rs `digital_macs`
        net.mac_counter["digital"] += y.numel() * v[0].shape[-1]
    return y


def _op_gather(_net, p, v):
    data, idx = v
    ax = _axis(p["axis"], data.dim())
    idx = torch.where(idx < 0, idx + data.shape[ax], idx).to(torch.int64)
    out = torch.index_select(data, ax, idx.reshape(-1))
    return out.reshape(tuple(data.shape[:ax]) + tuple(idx.shape) + tuple(data.shape[ax + 1:]))


def _op_shape(_net, p, v):
    dims = list(v[0].shape)
    end = p["end"] if p["end"] is not None else len(dims)
    return torch.tensor(dims[p["start"]:end], dtype=torch.int64)  # Python clamps as ONNX does


def _op_unsqueeze(_net, p, v):
    x = v[0]
    axes = p["axes"] if p["axes"] is not None else _ints(v[1])
    rank = x.dim() + len(axes)
    axes = sorted(_axis(a, rank) for a in axes)
    if len(set(axes)) != len(axes):
        raise ValueError(f"repeated axes {axes}")
    for a in axes:
        x = x.unsqueeze(a)
    return x


def _op_squeeze(_net, p, v):
    x = v[0]
    axes = p["axes"] if p["axes"] is not None else (_ints(v[1]) if len(v) > 1 and v[1] is not None else None)
    if axes is None:
        return x.reshape([d for d in x.shape if d != 1])
    axes = sorted({_axis(a, x.dim()) for a in axes}, reverse=True)
    for a in axes:
        if x.shape[a] != 1:
            raise ValueError(f"cannot squeeze axis {a} of size {x.shape[a]}")
        x = x.squeeze(a)
    return x


def _op_reshape(_net, p, v):
    x, shape = v[0], _ints(v[1])
    if p["allowzero"]:
        if 0 in shape and -1 in shape:
            raise ValueError(f"allowzero with 0 and -1 in shape {shape}")
    else:
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(shape)


def _op_transpose(_net, p, v):
    perm = p["perm"] if p["perm"] is not None else list(range(v[0].dim()))[::-1]
    return v[0].permute(*perm)


def _op_concat(_net, p, v):
    return torch.cat(v, dim=_axis(p["axis"], v[0].dim()))


def _op_slice(_net, p, v):
    x = v[0]
    if p["starts"] is not None:  # opset < 10: attributes
        starts, ends, axes, steps = p["starts"], p["ends"], p["axes"], None
    else:
        starts, ends = _ints(v[1]), _ints(v[2])
        axes = _ints(v[3]) if len(v) > 3 and v[3] is not None else None
        steps = _ints(v[4]) if len(v) > 4 and v[4] is not None else None
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ValueError("starts, ends, axes and steps differ in length")
    for s, e, a, st in zip(starts, ends, axes, steps):
        a, dim = _axis(a, x.dim()), x.shape[_axis(a, x.dim())]
        if st == 0:
            raise ValueError("step 0")
        s, e = s + dim if s < 0 else s, e + dim if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), dim), min(max(e, 0), dim)
        else:
            s, e = min(max(s, 0), dim - 1), min(max(e, -1), dim - 1)
        if st == 1:
            x = x.narrow(a, s, max(e - s, 0))
        else:
            x = torch.index_select(x, a, torch.arange(s, e, st, dtype=torch.int64))
    return x


def _op_cast(_net, p, v):
    return v[0].to(p["dtype"])


def _op_expand(_net, _p, v):
    shape = torch.broadcast_shapes(tuple(v[0].shape), tuple(_ints(v[1])))  # bidirectional, as ONNX
    return v[0].expand(shape)


def _op_constant_of_shape(_net, p, v):
    return torch.full(_ints(v[0]), p["value"].item(), dtype=p["value"].dtype)


def _op_range(_net, _p, v):
    start, limit, delta = v
    if start.dtype.is_floating_point:
        raise TypeError("float Range (its rounding) not reproduced")
    if int(delta) == 0:
        raise ValueError("delta 0")
    return torch.arange(int(start), int(limit), int(delta), dtype=start.dtype)


def _op_layer_norm(_net, p, v):
    x, scale = v[0], v[1]
    bias = v[2] if len(v) > 2 else None
    ax = _axis(p["axis"], x.dim())
    shape = tuple(x.shape[ax:])
    if tuple(scale.shape) != shape or (bias is not None and tuple(bias.shape) != shape):
        raise ValueError(f"Scale/B of shape {tuple(scale.shape)} for normalised shape {shape} not reproduced")
    return F.layer_norm(x, shape, scale, bias, eps=p["eps"])


def _reduce(fn):
    def run(_net, p, v):
        x = v[0]
        axes = p["axes"]
        if axes is None and len(v) > 1 and v[1] is not None:
            axes = _ints(v[1])
        if not axes:
            if p["noop"]:
                return x
            axes = list(range(x.dim()))
        dims = tuple(sorted({_axis(a, x.dim()) for a in axes}))
        return fn(x, dims, bool(p["keepdims"]))
    return run


def _op_softmax(_net, p, v):
    ax = _axis(p["axis"], v[0].dim())
    if p["coerced"] and ax != v[0].dim() - 1:  # before opset 13: softmax over the flattened tail
        raise ValueError(f"opset < 13 Softmax on axis {ax} of rank {v[0].dim()} not reproduced")
    return F.softmax(v[0], dim=ax)


def _op_clip(_net, p, v):
    lo = v[1] if len(v) > 1 and v[1] is not None else p["min"]
    hi = v[2] if len(v) > 2 and v[2] is not None else p["max"]
    if lo is None and hi is None:
        return v[0]
    return torch.clamp(v[0], min=lo, max=hi)


def _op_flatten(_net, p, v):
    x = v[0]
    ax = p["axis"] + x.dim() if p["axis"] < 0 else p["axis"]
    if not 0 <= ax <= x.dim():
        raise ValueError(f"axis {p['axis']} out of range for rank {x.dim()}")
    return x.reshape(int(np.prod(x.shape[:ax], dtype=np.int64)), -1)


def _op_dropout(_net, _p, v):
    if len(v) > 2 and v[2] is not None and bool(v[2]):
        raise ValueError("training_mode Dropout")
    return v[0]


# op -> (run, allowed attributes with their defaults); ops that take opset-dependent
# attributes are completed in GraphNet._compile.
TEXT_OPS = {
    "Add": (_binary(torch.add), {}), "Sub": (_binary(torch.sub), {}),
    "Mul": (_binary(torch.mul), {}), "Div": (_binary(_div), {}),
    "Pow": (lambda _n, _p, v: torch.pow(v[0], v[1]), {}),
    "Equal": (_binary(torch.eq), {}), "Less": (_binary(torch.lt), {}),
    "Greater": (_binary(torch.gt), {}), "LessOrEqual": (_binary(torch.le), {}),
    "GreaterOrEqual": (_binary(torch.ge), {}), "And": (_binary(torch.logical_and), {}),
    "Or": (_binary(torch.logical_or), {}), "Not": (_unary(torch.logical_not), {}),
    "Where": (lambda _n, _p, v: torch.where(v[0], v[1], v[2]), {}),
    "Sqrt": (_unary(torch.sqrt), {}), "Exp": (_unary(torch.exp), {}), "Log": (_unary(torch.log), {}),
    "Erf": (_unary(torch.erf), {}), "Tanh": (_unary(torch.tanh), {}), "Neg": (_unary(torch.neg), {}),
    "Abs": (_unary(torch.abs), {}), "Reciprocal": (_unary(torch.reciprocal), {}),
    "Relu": (_unary(F.relu), {}), "Sigmoid": (_unary(torch.sigmoid), {}),
    "Identity": (_unary(lambda x: x), {}),
    "MatMul": (_op_matmul, {}), "Linear": (_op_linear, {}),
    "Gather": (_op_gather, dict(axis=0)),
    "Shape": (_op_shape, dict(start=0, end=None)),
    "Unsqueeze": (_op_unsqueeze, dict(axes=None)), "Squeeze": (_op_squeeze, dict(axes=None)),
    "Reshape": (_op_reshape, dict(allowzero=0)), "Transpose": (_op_transpose, dict(perm=None)),
    "Concat": (_op_concat, dict(axis=None)),
    "Slice": (_op_slice, dict(starts=None, ends=None, axes=None)),
    "Cast": (_op_cast, dict(to=None, saturate=1)), "Expand": (_op_expand, {}),
    "ConstantOfShape": (_op_constant_of_shape, dict(value=None)), "Range": (_op_range, {}),
    "LayerNormalization": (_op_layer_norm, dict(axis=-1, epsilon=1e-5, stash_type=1)),
    "ReduceSum": (_reduce(lambda x, d, k: torch.sum(x, d, keepdim=k)),
                  dict(axes=None, keepdims=1, noop_with_empty_axes=0)),
    "ReduceMean": (_reduce(lambda x, d, k: torch.mean(x, d, keepdim=k)),
                   dict(axes=None, keepdims=1, noop_with_empty_axes=0)),
    "ReduceMax": (_reduce(lambda x, d, k: torch.amax(x, d, keepdim=k)),
                  dict(axes=None, keepdims=1, noop_with_empty_axes=0)),
    "ReduceMin": (_reduce(lambda x, d, k: torch.amin(x, d, keepdim=k)),
                  dict(axes=None, keepdims=1, noop_with_empty_axes=0)),
    "ReduceL2": (_reduce(lambda x, d, k: torch.sqrt(torch.sum(x * x, d, keepdim=k))),
                 dict(axes=None, keepdims=1, noop_with_empty_axes=0)),
    "ReduceSumSquare": (_reduce(lambda x, d, k: torch.sum(x * x, d, keepdim=k)),
                        dict(axes=None, keepdims=1, noop_with_empty_axes=0)),
    "Softmax": (_op_softmax, dict(axis=None)),
    "Clip": (_op_clip, dict(min=None, max=None)),
    "Flatten": (_op_flatten, dict(axis=1)),
    "Dropout": (_op_dropout, dict(seed=None)),
}
# Ops with an optional second output that inference does not produce (it must be unused).
FIRST_OUTPUT_ONLY = {"LayerNormalization", "Dropout"}


def constant_value(node, path):
    """A Constant node's tensor."""
    got = {a.name: a for a in node.attribute}
    if len(got) != 1:
        fail(f"{path}: node {node.name!r} (Constant): attributes {sorted(got)}, expected exactly one")
    (name, attr), = got.items()
    value = helper.get_attribute_value(attr)
    if name == "value":
        arr = numpy_helper.to_array(value)
    elif name in ("value_float", "value_floats"):
        arr = np.array(value, dtype=np.float32)
    elif name in ("value_int", "value_ints"):
        arr = np.array(value, dtype=np.int64)
    else:
        fail(f"{path}: node {node.name!r} (Constant): attribute {name!r} not reproduced")
    return torch.from_numpy(np.array(arr, copy=True))


class GraphNet(nn.Module):
    """Every node of an ONNX graph in order, per the ONNX spec at the file's opset.

    MatMul with a constant 2-D second operand (and a non-constant first) and Gemm with a
    constant B are nn.Linear modules (our simulator's crossbar layers); everything else is
    digital torch. Nodes whose inputs are all constant are evaluated once here (as our
    importer folds constants)."""

    def __init__(self, model, output_name, path):
        super().__init__()
        g = model.graph
        self.path = str(path)
        opset = model_opset(model)
        consts = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in g.initializer}
        self.input_names = [i.name for i in g.input if i.name not in consts]
        graph_outputs = [o.name for o in g.output]
        if output_name not in graph_outputs:
            fail(f"{path}: no graph output {output_name!r}; it has {graph_outputs}")
        self.output_name = output_name
        readers = {}
        for n in g.node:
            for i in n.input:
                readers[i] = readers.get(i, 0) + 1
        for o in graph_outputs:
            readers[o] = readers.get(o, 0) + 1
        self.layers = nn.ModuleDict()
        self.steps = []  # (op, input names, output names, params, node name)
        self.mac_counter = None  # {"analog": {layer key: MACs}, "digital": MACs} while counting
        with torch.no_grad():
            for idx, n in enumerate(g.node):
                if n.domain not in ("", "ai.onnx"):
                    fail(f"{path}: node {n.name!r}: op {n.domain}.{n.op_type} not reproduced")
                if n.op_type == "Constant":
                    consts[n.output[0]] = constant_value(n, path)
                    continue
                step = self._compile(n, idx, opset, consts, readers)
                op, ins, outs, p, name = step
                if op != "Linear" and all(i == "" or i in consts for i in ins):
                    try:
                        res = TEXT_OPS[op][0](self, p, [consts[i] if i else None for i in ins])
                    except Exception as e:  # noqa: BLE001 - name the node
                        fail(f"{path}: node {name!r} ({op}) on constants: {type(e).__name__}: {e}")
                    consts[outs[0]] = res
                else:
                    self.steps.append(step)
        if self.output_name in consts:
            fail(f"{path}: graph output {self.output_name!r} is a constant")
        used = {i for s in self.steps for i in s[1] if i}
        self.consts = {k: v for k, v in consts.items() if k in used}

    def _compile(self, n, idx, opset, consts, readers):
        op, ins, name = n.op_type, list(n.input), n.name
        outs = list(n.output)
        extra = [o for o in outs[1:] if o and readers.get(o, 0)]
        if extra:
            fail(f"{self.path}: node {name!r} ({op}): output(s) {extra} used; only the first is reproduced")
        if len(outs) > 1 and op not in FIRST_OUTPUT_ONLY:
            fail(f"{self.path}: node {name!r} ({op}): {len(outs)} outputs not reproduced")
        outs = outs[:1]
        if op in ("MatMul", "Gemm"):
            return self._compile_matmul(n, idx, consts)
        if op not in TEXT_OPS or op == "Linear":
            fail(f"{self.path}: node {name!r}: op {op} not reproduced by this script")
        at = attrs_of(n, TEXT_OPS[op][1], self.path)
        p = dict(at)
        if op in ("Unsqueeze", "Squeeze"):
            if opset >= 13 and at["axes"] is not None:
                fail(f"{self.path}: node {name!r}: {op} axes attribute at opset {opset}")
            if opset < 13 and op == "Unsqueeze" and at["axes"] is None:
                fail(f"{self.path}: node {name!r}: Unsqueeze without axes")
        elif op.startswith("Reduce"):
            takes_input = opset >= (13 if op == "ReduceSum" else 18)
            if takes_input and at["axes"] is not None:
                fail(f"{self.path}: node {name!r}: {op} axes attribute at opset {opset}")
            p["noop"] = at["noop_with_empty_axes"]
        elif op == "Softmax":
            p["coerced"] = opset < 13
            p["axis"] = at["axis"] if at["axis"] is not None else (-1 if opset >= 13 else 1)
        elif op == "Slice":
            if opset >= 10 and any(at[k] is not None for k in ("starts", "ends", "axes")):
                fail(f"{self.path}: node {name!r}: Slice attributes at opset {opset}")
            if opset < 10 and (at["starts"] is None or at["ends"] is None):
                fail(f"{self.path}: node {name!r}: Slice without starts/ends")
        elif op == "Clip":
            if opset >= 11 and (at["min"] is not None or at["max"] is not None):
                fail(f"{self.path}: node {name!r}: Clip attributes at opset {opset}")
        elif op == "Cast":
            if at["to"] not in TORCH_DTYPES:
                fail(f"{self.path}: node {name!r}: Cast to ONNX type {at['to']} not reproduced")
            p["dtype"] = TORCH_DTYPES[at["to"]]
        elif op == "ConstantOfShape":
            val = (numpy_helper.to_array(at["value"]) if at["value"] is not None
                   else np.zeros(1, dtype=np.float32))
            if val.size != 1:
                fail(f"{self.path}: node {name!r}: ConstantOfShape value of {val.size} elements")
            p["value"] = torch.from_numpy(np.array(val.reshape(()), copy=True))
        elif op == "Concat" and at["axis"] is None:
            fail(f"{self.path}: node {name!r}: Concat without an axis")
        elif op == "LayerNormalization":
            if at["stash_type"] != 1:
                fail(f"{self.path}: node {name!r}: LayerNormalization stash_type {at['stash_type']} "
                     "not reproduced")
            p["eps"] = float(np.float32(at["epsilon"]))
        return (op, ins, outs, p, name)

    def _compile_matmul(self, n, idx, consts):
        op, ins, name = n.op_type, list(n.input), n.name
        a_const, b = ins[0] in consts, consts.get(ins[1])
        key = f"l{idx}"
        if op == "MatMul":
            attrs_of(n, {}, self.path)
            if a_const or b is None or b.dim() != 2:
                # Two activations (attention), a batched constant, or all constant (folded):
                # digital, as in our importer. A constant first operand with an activation
                # second is a crossbar layer there (LayerKind::Left): not reproduced here.
                if a_const and b is None and consts[ins[0]].dim() == 2:
                    fail(f"{self.path}: node {name!r}: MatMul of a constant matrix by an activation "
                         "(a crossbar layer in our simulator) not reproduced")
                return ("MatMul", ins, [n.output[0]], {}, name)
            w, bias = b.numpy().T, None
        else:
            at = attrs_of(n, dict(alpha=1.0, beta=1.0, transA=0, transB=0), self.path)
            if at["transA"] or a_const or b is None or b.dim() != 2:
                fail(f"{self.path}: node {name!r}: Gemm with transA or a non-constant B not reproduced")
            w = (b.numpy() if at["transB"] else b.numpy().T) * np.float32(at["alpha"])
            bias = None
            if len(ins) > 2 and ins[2]:
                if ins[2] not in consts:
                    fail(f"{self.path}: node {name!r}: Gemm with a non-constant C not reproduced")
                bias = consts[ins[2]].numpy() * np.float32(at["beta"])
                if bias.size != w.shape[0]:
                    fail(f"{self.path}: node {name!r}: Gemm C of shape {bias.shape} "
                         "(only a per-column bias is reproduced)")
        if w.dtype != np.float32:
            fail(f"{self.path}: node {name!r}: {op} weight of type {w.dtype} not reproduced")
        lin = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
        lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
        if bias is not None:
            lin.bias.copy_(torch.from_numpy(bias.reshape(-1).astype(np.float32)))
        self.layers[key] = lin
        return ("Linear", ins[:1], [n.output[0]], dict(key=key, n=w.shape[0]), name)

    def forward(self, feeds):
        env = dict(self.consts)
        if isinstance(feeds, dict):
            env.update(feeds)
        else:
            env[self.input_names[0]] = feeds
        for op, ins, outs, p, name in self.steps:
            try:
                env[outs[0]] = TEXT_OPS[op][0](self, p, [env[i] if i else None for i in ins])
            except Exception as e:
                raise RuntimeError(f"{self.path}: node {name!r} ({op}): {type(e).__name__}: {e}") from e
        return env[self.output_name]


# --------------------------------------------------------------------------
# Running and timing
# --------------------------------------------------------------------------
# The text reference check stops the run when the float torch rebuild (batched, padded) and
# onnxruntime (one document per call, unpadded) differ by more than float32 rounding explains:
# max |embedding difference| above TEXT_REL_TOL x max |embedding|, or Pearsons further apart
# than PEARSON_TOL (what such a difference can move a 1,225-pair correlation by, with room).
TEXT_REL_TOL = 1e-4
PEARSON_TOL = 1e-5


class Task:
    """What is evaluated: `unit` ("images" / "documents") per second, and `metrics` of each
    pass's outputs (rows = items) from `score`."""

    def __init__(self, unit, metrics, score):
        self.unit, self.metrics, self.score = unit, metrics, score


def image_batches(x, batch):
    return [x[lo:lo + batch] for lo in range(0, len(x), batch)]


def predict(net, batches):
    """The network's output over every batch, one row per item (flattened per item, as our
    `item_rows`)."""
    outs = []
    with torch.inference_mode():
        for b in batches:
            y = net(b)
            outs.append(y.reshape(y.shape[0], -1))
    return torch.cat(outs).numpy()


def timed(net, batches, items, repeat, tag, unit):
    with torch.inference_mode():
        net(batches[0])  # warm-up
    best, outs = None, []
    for r in range(repeat):
        t0 = time.perf_counter()
        y = predict(net, batches)
        dt = time.perf_counter() - t0
        log(f"{tag}: pass {r + 1}/{repeat}: {dt:.3f} s ({items / dt:.1f} {unit}/s)")
        best = dt if best is None else min(best, dt)
        outs.append(y)
    return best, outs


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


def run_config(a, name, float_net, batches, items, task, layers, digital_macs=0):
    """`layers`: (module name, MACs, groups) of every Conv2d / Linear; `digital_macs`: the MACs of
    the products that are no layer (a text model's attention MatMuls), for analog_mac_share."""
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
        total = sum(m for _, m, _ in layers) + digital_macs
        entry["digital_layers"] = len(grouped)
        entry["analog_mac_share"] = round(sum(m for _, m, g in layers if g == 1) / total, 6)
        tiles = sum(len(list(m.analog_tiles())) for m in analog)
        log(f"{name}: {cls_name}, {len(analog)} analog layers on {tiles} tiles, "
            f"out_noise {rpu.forward.out_noise}, inp_res 1/{round(1 / rpu.forward.inp_res)}, "
            f"out_res 1/{round(1 / rpu.forward.out_res)}")
        if entry["tile"] == "torch":
            entry["mvm_passes_per_product"] = count_passes(net, batches[0])
        seconds, outs = timed(net, batches, items, a.repeat, name, task.unit)
        scores = [task.score(y) for y in outs]
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
            f"{task.unit}_per_s": items / seconds,
        })
        for k in task.metrics:
            entry[k] = scores[0][k]
            entry[f"{k}_per_pass"] = [s[k] for s in scores]
    except Exception as e:  # noqa: BLE001 - report and go on with the other configurations
        log(f"{name}: failed: {type(e).__name__}: {e}")
        entry["error"] = f"{type(e).__name__}: {e}"
    entry["loadavg_after"] = list(os.getloadavg())
    return entry


def ort_session(onnx_path, threads):
    """onnxruntime's session with scripts/bench/ort_bench.py's settings (its `make_session`:
    CPU provider, `threads` intra-op, sequential, every graph optimisation)."""
    sys.path.insert(0, str(REPO / "scripts" / "bench"))
    try:
        from ort_bench import make_session
    finally:
        sys.path.pop(0)
    return make_session(str(onnx_path), threads)[1]


def reference_check(onnx_path, model, float_net, x, labels, batch, threads):
    sess = ort_session(onnx_path, threads)
    in_name = model.graph.input[0].name
    ref = []
    for lo in range(0, len(x), batch):
        (r,) = sess.run(None, {in_name: x[lo:lo + batch]})
        ref.append(r)
    ref = np.concatenate(ref)
    ours = predict(float_net, image_batches(torch.from_numpy(x), batch))
    diff = float(np.abs(ref.reshape(len(ref), -1) - ours).max())
    ref_pred, our_pred = ref.argmax(axis=1), ours.argmax(axis=1)
    res = {
        "onnx_top1": top1(ref_pred, labels, ref_pred),
        "torch_top1": top1(our_pred, labels, ref_pred),
        "max_abs_logit_diff": diff,
        "argmax_mismatches": int((ref_pred != our_pred).sum()),
    }
    return res, ref_pred


def text_reference_check(onnx_path, float_net, enc, inputs, batches, pairs, threads):
    """onnxruntime on each document alone, unpadded (the session and feeds of
    scripts/bench/ort_bench.py), against the float torch rebuild on the timed batches."""
    sess = ort_session(onnx_path, threads)
    out = float_net.output_name
    ref = np.concatenate([sess.run([out], single_feed(e, inputs))[0].reshape(1, -1) for e in enc])
    ours = predict(float_net, batches)
    if ref.shape != ours.shape:
        fail(f"{onnx_path}: output {out!r}: onnxruntime rows {ref.shape}, torch rebuild {ours.shape}")
    onnx_scores, torch_scores = lee50_scores(ref, pairs), lee50_scores(ours, pairs)
    res = {
        "onnx_pearson": onnx_scores["pearson"],
        "onnx_spearman": onnx_scores["spearman"],
        "torch_pearson": torch_scores["pearson"],
        "torch_spearman": torch_scores["spearman"],
        "max_abs_embedding_diff": float(np.abs(ref - ours).max()),
        "max_abs_embedding": float(np.abs(ref).max()),
        "pairs": len(pairs),
    }
    return res


def main(a):
    import aihwkit

    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    load0 = list(os.getloadavg())
    spec_path = Path(a.spec)
    spec_model = None
    try:
        spec = tomllib.loads(spec_path.read_text())
        spec_model = next((m for m in spec.get("model", []) if m.get("name") == a.model), None)
    except (OSError, tomllib.TOMLDecodeError) as e:
        fail(f"cannot read {a.spec}: {e}", 2)
    if spec_model is None:
        names = sorted(m.get("name", "?") for m in spec.get("model", []))
        fail(f"{a.spec}: no [[model]] {a.model!r}; it has {names}", 2)
    onnx_path = (spec_path.parent / spec_model["onnx"]).resolve()
    try:
        model = onnx.load(str(onnx_path))
    except Exception as e:  # noqa: BLE001 - onnx raises several unrelated types
        fail(f"cannot load {onnx_path}: {e}")
    if is_text_model(spec_model):
        result = run_text(a, spec_path, spec_model, model, onnx_path)
    else:
        result = run_images(a, model)
    versions = {"aihwkit": aihwkit.__version__, "torch": torch.__version__,
                "python": platform.python_version()}
    out = {}
    for k, v in result.items():  # the versions after "repeat", as before text models were added
        out[k] = v
        if k == "repeat":
            out.update(versions)
    out.update({"loadavg_before": load0, "loadavg_after": list(os.getloadavg()), "cpu": cpu_name()})
    result = out
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 1 if any("error" in c for c in result["configs"]) else 0


def run_images(a, model):
    dims = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    onnx_path, x_np, labels = load_inputs(a, dims)
    log(f"{onnx_path.name}: {len(model.graph.node)} nodes; inputs {list(x_np.shape)}, "
        f"{'labelled' if labels is not None else 'unlabelled (top-1 = agreement with float)'}")
    float_net = OnnxNet(model).eval()
    log(f"torch rebuild: {len(float_net.layers)} weight layers, {len(float_net.steps)} steps")
    x = torch.from_numpy(x_np)
    batches = image_batches(x, a.batch)
    if a.skip_reference:
        ref_res = None
        ref_pred = predict(float_net, batches).argmax(axis=1)
    else:
        t0 = time.perf_counter()
        ref_res, ref_pred = reference_check(onnx_path, model, float_net, x_np, labels, a.batch, a.threads)
        log(f"reference check ({time.perf_counter() - t0:.1f} s): {ref_res}")
        if ref_res["onnx_top1"] != ref_res["torch_top1"]:
            fail("the torch rebuild's top-1 differs from the ONNX model's")
    layers = weight_layers(float_net, x[:1])
    task = Task("images", ("top1",), lambda y: {"top1": top1(y.argmax(axis=1), labels, ref_pred)})
    torch.manual_seed(a.seed)
    fsec, fouts = timed(float_net, batches, len(x), a.repeat, "float", "images")
    return {
        "model": a.model,
        "onnx": rel(onnx_path),
        "images": len(x),
        "batch": a.batch,
        "threads": a.threads,
        "torch_threads": torch.get_num_threads(),
        "repeat": a.repeat,
        "reference": ref_res,
        "float": {"seconds": fsec, "images_per_s": len(x) / fsec, "top1": task.score(fouts[0])["top1"]},
        "macs_per_image": sum(m for _, m, _ in layers),
        "configs": [run_config(a, name, float_net, batches, len(x), task, layers) for name in a.configs],
    }


def run_text(a, spec_path, spec_model, model, onnx_path):
    enc, pairs, inputs, pads, max_tokens = load_texts(a, spec_path, spec_model, model, onnx_path)
    output = spec_model.get("output") or model.graph.output[0].name
    float_net = GraphNet(model, output, onnx_path).eval()
    log(f"{onnx_path.name}: {len(model.graph.node)} nodes -> {len(float_net.steps)} steps "
        f"(constants folded), {len(float_net.layers)} nn.Linear; output {output!r}")
    n = len(enc)
    batches = text_batches(enc, inputs, pads, a.batch)
    computed = sum(next(iter(b.values())).numel() for b in batches)
    tokens = sum(len(e["ids"]) for e in enc)
    # MACs at each document's own length (unpadded): every nn.Linear (analog) and every
    # product of two activations (digital, in aihwkit as in ours).
    float_net.mac_counter = {"analog": {}, "digital": 0}
    with torch.inference_mode():
        for e in enc:
            float_net({k: torch.from_numpy(v) for k, v in single_feed(e, inputs).items()})
    counter, float_net.mac_counter = float_net.mac_counter, None
    layers = [(k, counter["analog"].get(k, 0), 1) for k in float_net.layers]
    digital_macs = counter["digital"]
    if a.skip_reference:
        ref_res = None
    else:
        t0 = time.perf_counter()
        ref_res = text_reference_check(onnx_path, float_net, enc, inputs, batches, pairs, a.threads)
        log(f"reference check ({time.perf_counter() - t0:.1f} s): {ref_res}")
        rel_diff = ref_res["max_abs_embedding_diff"] / max(ref_res["max_abs_embedding"], 1e-30)
        dp = abs(ref_res["onnx_pearson"] - ref_res["torch_pearson"])
        if rel_diff > TEXT_REL_TOL or dp > PEARSON_TOL:
            fail(f"{onnx_path}: the torch rebuild (batches of {a.batch}) differs from onnxruntime "
                 f"(one document per call): max |embedding difference| {rel_diff:.3g} of the largest "
                 f"|embedding| (limit {TEXT_REL_TOL}), Pearson {ref_res['torch_pearson']:.8f} against "
                 f"{ref_res['onnx_pearson']:.8f} (limit {PEARSON_TOL})")
    task = Task("documents", ("pearson", "spearman"), lambda y: lee50_scores(y, pairs))
    torch.manual_seed(a.seed)
    fsec, fouts = timed(float_net, batches, n, a.repeat, "float", "documents")
    fscore = task.score(fouts[0])
    return {
        "model": a.model,
        "onnx": rel(onnx_path),
        "output": output,
        "documents": n,
        "pairs": len(pairs),
        "max_tokens": max_tokens,
        "tokens": tokens,
        "tokens_computed": computed,
        "batch": a.batch,
        "threads": a.threads,
        "torch_threads": torch.get_num_threads(),
        "repeat": a.repeat,
        "reference": ref_res,
        "float": {"seconds": fsec, "documents_per_s": n / fsec, **fscore},
        "macs_per_document": round(sum(m for _, m, _ in layers) / n),
        "digital_macs_per_document": round(digital_macs / n),
        "configs": [run_config(a, name, float_net, batches, n, task, layers, digital_macs)
                    for name in a.configs],
    }


def rel(path):
    return str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)


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
