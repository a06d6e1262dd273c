#!/usr/bin/env python3
"""Float32 forward of real ONNX models: ours (`xtask run-onnx --design fp32`) against onnxruntime.

    .cache/bench-venv/bin/python scripts/check/ort_compare.py [--cache .cache/models] [--xtask BIN]
        [--only NAME,...] [--tol 1e-4]

The bench venv (`cargo xtask bench` makes it; scripts/bench/requirements.txt) has onnxruntime,
numpy, tokenizers and pillow. For every model below whose file exists, the same inputs go to both
engines: images are seeded uniform values in the model's preprocessed range (the float
arithmetic is what is compared, not a task); text models get real sentences tokenised with
tokenizer.json. Every graph output is compared: float outputs by
`max |ours - ort| / max |ort|` (must be <= --tol), integer outputs exactly. Prints one line per
model and exits 1 if any model fails. onnxruntime runs with graph optimisations off
(ORT_DISABLE_ALL), so it computes the graph as written, as we do.
"""
import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent

SENTENCES = [
    "A man is playing a guitar on stage.",
    "The central bank raised interest rates by a quarter of a point on Tuesday.",
    "Rescue teams searched the collapsed building through the night.",
]

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

# name: (file relative to the cache, or to the repository for fixtures; inputs)
# inputs: ("image", shape, lo, hi): seeded uniform values; ("photo", files in the cache's photos/,
# [H, W], mean, std): RGB resized bilinearly, x / 255 normalised per channel, one batch;
# ("text", tokenizer relative to the cache)
MODELS = {
    "mnist_cnn": ("@fixtures/mnist_cnn/mnist_cnn.onnx", ("image", [4, 1, 28, 28], -0.43, 2.83)),
    "mobilenet_v2": ("onnx/mobilenet_v2.onnx", ("image", [2, 3, 224, 224], 0.0, 1.0)),
    "inception_v3": ("onnx/inception_v3.onnx", ("image", [1, 3, 299, 299], 0.0, 1.0)),
    "minilm": ("onnx/minilm.onnx", ("text", "minilm/tokenizer.json")),
    "paraphrase_minilm_l3": ("onnx/paraphrase_minilm_l3.onnx", ("text", "minilm/tokenizer.json")),
    # The OCR models on photographs of text (scikit-image's page.png and text.png, in the
    # fetched photos): on uniform noise DBNet's probability map is ~0 everywhere, and a relative
    # error of a map that is all tail says nothing.
    "ppocr_cls": ("onnx/ppocr_cls.onnx", ("photo", ["text.png", "page.png"], [48, 192], [0.5] * 3, [0.5] * 3)),
    "ppocr_det": ("onnx/ppocr_det.onnx", ("photo", ["page.png"], [320, 320], IMAGENET_MEAN, IMAGENET_STD)),
    "ppocr_rec": ("onnx/ppocr_rec.onnx", ("photo", ["text.png"], [48, 320], [0.5] * 3, [0.5] * 3)),
}


def inputs_for(sess, spec, cache, rng):
    names = [i.name for i in sess.get_inputs()]
    if spec[0] == "image":
        _, shape, lo, hi = spec
        declared = sess.get_inputs()[0].shape
        if len(declared) != len(shape) or any(isinstance(d, int) and d != s for d, s in zip(declared[1:], shape[1:])):
            raise SystemExit(f"input shape {shape} does not fit the model's {declared}")
        return [{names[0]: rng.uniform(lo, hi, size=shape).astype(np.float32)}]
    if spec[0] == "photo":
        from PIL import Image

        _, files, (h, w), mean, std = spec
        xs = []
        for f in files:
            img = Image.open(cache / "photos" / f).convert("RGB").resize((w, h), Image.BILINEAR)
            x = np.asarray(img, dtype=np.float32) / 255.0
            x = (x - np.array(mean, np.float32)) / np.array(std, np.float32)
            xs.append(x.transpose(2, 0, 1))
        return [{names[0]: np.stack(xs).astype(np.float32)}]
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(cache / spec[1]))
    tok.no_padding()
    runs = []
    for s in SENTENCES:
        e = tok.encode(s)
        feed = {
            "input_ids": np.array([e.ids], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids], dtype=np.int64),
        }
        runs.append({k: v for k, v in feed.items() if k in names})
    return runs


def compare(name, path, spec, cache, xtask, tol, rng):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    worst = 0.0
    for feed in inputs_for(sess, spec, cache, rng):
        want = sess.run(None, feed)
        with tempfile.TemporaryDirectory() as d:
            d = pathlib.Path(d)
            args = [str(xtask), "run-onnx", str(path), "--design", "fp32", "--out", str(d / "out")]
            for k, v in feed.items():
                np.save(d / f"{k}.npy", v)
                args += ["--input", f"{k}={d / (k + '.npy')}"]
            r = subprocess.run(args, capture_output=True, text=True)
            if r.returncode != 0:
                return False, f"run-onnx failed: {r.stderr.strip()[-400:]}"
            for i, w in enumerate(want):
                got = np.load(d / "out" / f"output_{i}.npy")
                if got.shape != w.shape:
                    return False, f"output {i}: shape {got.shape}, onnxruntime {w.shape}"
                if np.issubdtype(w.dtype, np.floating):
                    scale = float(np.max(np.abs(w))) or 1.0
                    rel = float(np.max(np.abs(got.astype(np.float64) - w.astype(np.float64)))) / scale
                    worst = max(worst, rel)
                elif not np.array_equal(got.astype(np.int64), w.astype(np.int64)):
                    return False, f"output {i}: integer values differ"
    return worst <= tol, f"max |ours - ort| / max |ort| = {worst:.2e} over {len(want)} outputs"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default=str(ROOT / ".cache" / "models"))
    ap.add_argument("--xtask", default=str(ROOT / "target" / "release" / "xtask"))
    ap.add_argument("--only", default="")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    cache = pathlib.Path(a.cache)
    only = [n for n in a.only.split(",") if n]
    rng = np.random.default_rng(20261130)
    failed = False
    results = {}
    for name, (rel, spec) in MODELS.items():
        if only and name not in only:
            continue
        path = ROOT / rel[1:] if rel.startswith("@") else cache / rel
        if not path.exists():
            print(f"{name}: skipped ({path} not there; run `cargo xtask fetch-models`)")
            continue
        ok, msg = compare(name, path, spec, cache, a.xtask, a.tol, rng)
        failed |= not ok
        results[name] = {"ok": ok, "detail": msg}
        print(f"{name}: {'ok' if ok else 'FAILED'}: {msg}", flush=True)
    print(json.dumps({"onnxruntime": ort.__version__, "tolerance": a.tol, "models": results}))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
