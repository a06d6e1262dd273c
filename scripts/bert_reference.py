#!/usr/bin/env python3
"""Independent float32 check of `raella_network::bert` (all-MiniLM-L6-v2 on Lee-50).

A from-scratch numpy re-implementation of the BERT encoder (no torch, no
TensorFlow, no code shared with the Rust crate): the `tokenizers` PyPI package
reads tokenizer.json, the `safetensors` package reads the weights, numpy does
the rest in float32. It prints the Lee-50 Pearson/Spearman for each truncation
length and, with --out, writes the embeddings (.npy) for comparison with the
Rust ones (`cargo run --release -p raella-network --example lee50 -- --dump F`).

Set-up (nothing is downloaded at run time; the model comes from
`cargo xtask fetch-models`):

    python3 -m venv /tmp/bertvenv
    /tmp/bertvenv/bin/pip install numpy tokenizers safetensors
    /tmp/bertvenv/bin/python scripts/bert_reference.py --models .cache/models

With --compare F.tsv it reports the max abs difference to the Rust embeddings
(one document per line, tab-separated floats). With --fixture it prints the
embeddings of the fixture sentences (fixtures/minilm/).
"""

import argparse
import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

FIXTURE_SENTENCES = [
    "The cat sat on the mat.",
    "A crossbar computes a matrix-vector product in one step.",
    "Bushfires burned near Sydney on Christmas Day.",
]


def layer_norm(x, g, b, eps):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return ((x - mu) / np.sqrt(var + eps)) * g + b


def gelu(x):
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return (0.5 * x * (1.0 + erf(x.astype(np.float64) / math.sqrt(2.0)))).astype(np.float32)


class Bert:
    def __init__(self, model_dir, max_length):
        self.cfg = json.load(open(os.path.join(model_dir, "config.json")))
        self.w = load_file(os.path.join(model_dir, "model.safetensors"))
        self.tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        self.tok.no_padding()
        self.tok.enable_truncation(max_length=max_length)

    def lin(self, x, name):
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def embed(self, text):
        c, w = self.cfg, self.w
        enc = self.tok.encode(text)
        ids = np.array(enc.ids)
        types = np.array(enc.type_ids)
        n = len(ids)
        eps = c["layer_norm_eps"]
        h = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:n]
             + w["embeddings.token_type_embeddings.weight"][types])
        h = layer_norm(h, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        nh = c["num_attention_heads"]
        d = c["hidden_size"] // nh
        for l in range(c["num_hidden_layers"]):
            p = f"encoder.layer.{l}."
            q = self.lin(h, p + "attention.self.query").reshape(n, nh, d).transpose(1, 0, 2)
            k = self.lin(h, p + "attention.self.key").reshape(n, nh, d).transpose(1, 0, 2)
            v = self.lin(h, p + "attention.self.value").reshape(n, nh, d).transpose(1, 0, 2)
            s = q @ k.transpose(0, 2, 1) / np.float32(math.sqrt(d))
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s = s / s.sum(axis=-1, keepdims=True)
            ctx = (s @ v).transpose(1, 0, 2).reshape(n, nh * d)
            a = self.lin(ctx, p + "attention.output.dense") + h
            h = layer_norm(a, w[p + "attention.output.LayerNorm.weight"],
                           w[p + "attention.output.LayerNorm.bias"], eps)
            f = gelu(self.lin(h, p + "intermediate.dense"))
            o = self.lin(f, p + "output.dense") + h
            h = layer_norm(o, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
        m = h.mean(axis=0)
        return (m / np.linalg.norm(m)).astype(np.float32), n


def ranks(x):
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x))
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        r[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return r


def lee50(models):
    # lee.cor is not UTF-8: one byte 0xA3 (a Latin-1 pound sign). Lines are
    # decoded as UTF-8, else Latin-1, as the Rust loader does.
    docs = []
    for raw in open(os.path.join(models, "lee50", "lee.cor"), "rb"):
        raw = raw.rstrip(b"\n")
        try:
            docs.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            docs.append(raw.decode(os.environ.get("LEE_FALLBACK", "latin-1"), errors="replace"))
    sims = np.loadtxt(os.path.join(models, "lee50", "similarities0-1.txt"))
    pairs = [(i, j) for i in range(len(docs)) for j in range(i + 1, len(docs))]
    gold = np.array([sims[i, j] for i, j in pairs])
    return docs, pairs, gold


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=os.environ.get("RAELLA_MODELS", ".cache/models"))
    ap.add_argument("--lengths", default="128,256,512")
    ap.add_argument("--out", help="write float32 embeddings (truncation 256) as .tsv")
    ap.add_argument("--compare", help="Rust embeddings (.tsv) to compare with (truncation 256)")
    ap.add_argument("--fixture", action="store_true")
    a = ap.parse_args()
    mdir = os.path.join(a.models, "minilm")
    if a.fixture:
        bert = Bert(mdir, 256)
        for s in FIXTURE_SENTENCES:
            e, _ = bert.embed(s)
            print(s + "\t" + "\t".join("%.8g" % v for v in e))
        return
    docs, pairs, gold = lee50(a.models)
    for length in [int(x) for x in a.lengths.split(",")]:
        bert = Bert(mdir, length)
        out = [bert.embed(d) for d in docs]
        emb = np.stack([e for e, _ in out])
        ntok = [n for _, n in out]
        cos = np.array([float(emb[i] @ emb[j]) for i, j in pairs])
        pear = np.corrcoef(cos, gold)[0, 1]
        spear = np.corrcoef(ranks(cos), ranks(gold))[0, 1]
        print(f"truncation {length}: tokens max {max(ntok)} mean {np.mean(ntok):.1f}, "
              f"docs truncated {sum(n >= length for n in ntok)}; "
              f"Pearson {pear:.4f} Spearman {spear:.4f}")
        if length == 256 and a.out:
            np.savetxt(a.out, emb, delimiter="\t", fmt="%.9g")
        if length == 256 and a.compare:
            rust = np.loadtxt(a.compare, delimiter="\t")
            print(f"max |rust - numpy| = {np.abs(rust - emb).max():.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
