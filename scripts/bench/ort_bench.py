#!/usr/bin/env python3
"""onnxruntime float32 reference timing, called by the Rust benchmark as a subprocess.

Image models (the input tensor is written by the caller as a float32 .npy [N, ...]):

    ort_bench.py --model M.onnx --threads T --images N --repeat 2 --input NAME=FILE.npy [--batch B]

  `--batch 1` (the default) runs one image per session.run call, as the simulator is
  timed on the same images; `--batch N` (or `--batch 0`) runs the whole batch of N
  images in one call; any other B runs chunks of B (the last one may be smaller).
  `--input` may be repeated for a model with several inputs; each is cut along axis 0.
  `--images` defaults to the .npy's first dimension; fewer rows than N is an error.

Text (MiniLM; one document per line, each run alone, no padding):

    ort_bench.py --model minilm.onnx --threads T --texts FILE.txt --tokenizer tokenizer.json --max-length 256

  Each line is tokenised with the `tokenizers` package (truncation at --max-length,
  no padding) into int64 [1, S] input_ids / attention_mask / token_type_ids (only
  those the model declares are fed). Tokenisation happens before timing. Lines are
  decoded as UTF-8, else Latin-1 (as the Rust Lee-50 loader does); empty lines are
  skipped.

Session: CPUExecutionProvider, intra_op_num_threads = T, inter_op_num_threads = 1,
sequential execution, graph optimisation ORT_ENABLE_ALL. One warm-up call (the first
batch / document) precedes timing; each of --repeat passes runs every item once, more
passes follow until they took --min-seconds in all (at most 50), and the best pass is
reported. stdout is exactly one JSON object:

    {"model", "threads", "items", "seconds", "items_per_s", "onnxruntime", "providers"}

everything else (progress, per-pass times) goes to stderr. Exit status 2 on usage
errors, 1 on anything else.
"""
import argparse
import json
import sys
import time

import numpy as np


def log(msg):
    print(f"ort_bench: {msg}", file=sys.stderr, flush=True)


def fail(msg, code=1):
    log("error: " + msg)
    sys.exit(code)


def parse_args(argv):
    ap = argparse.ArgumentParser(description="onnxruntime float32 reference timing")
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    ap.add_argument("--repeat", type=int, default=2, help="timed passes; the best is reported (default 2)")
    ap.add_argument("--min-seconds", type=float, default=0.0,
                    help="after --repeat passes, more until the passes took this long in all "
                         "(at most 50 passes; default 0)")
    g = ap.add_argument_group("image models")
    g.add_argument("--images", type=int, help="number of images (default: all rows of the .npy)")
    g.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                   help="float32 input tensor [N, ...]; repeat for several inputs")
    g.add_argument("--batch", type=int, default=1,
                   help="images per session.run call (default 1; 0 = all N in one call)")
    t = ap.add_argument_group("text models")
    t.add_argument("--texts", help="one document per line")
    t.add_argument("--tokenizer", help="tokenizer.json (Hugging Face tokenizers format)")
    t.add_argument("--max-length", type=int, default=256, help="truncation length (default 256)")
    a = ap.parse_args(argv)
    if a.threads < 1 or a.repeat < 1 or a.batch < 0 or not a.min_seconds >= 0:
        ap.error("--threads and --repeat must be >= 1, --batch and --min-seconds >= 0")
    if a.texts is not None:
        if a.input or a.images is not None:
            ap.error("--texts cannot be combined with --input/--images")
        if a.tokenizer is None:
            ap.error("--texts needs --tokenizer")
    elif not a.input:
        ap.error("give --input NAME=FILE.npy (image models) or --texts FILE --tokenizer T (text models)")
    return a


def make_session(path, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only (ORT logs to stderr)
    try:
        sess = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises several unrelated types
        fail(f"cannot load {path}: {e}")
    return ort, sess


def image_feeds(a, sess):
    names = {i.name: i for i in sess.get_inputs()}
    arrays = {}
    for spec in a.input:
        if "=" not in spec:
            fail(f"--input {spec!r}: expected NAME=FILE.npy", 2)
        name, path = spec.split("=", 1)
        if name not in names:
            fail(f"--input {name}: the model's inputs are {sorted(names)}", 2)
        if name in arrays:
            fail(f"--input {name} given twice", 2)
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as e:  # noqa: BLE001
            fail(f"cannot read {path}: {e}")
        if arr.dtype != np.float32:
            fail(f"{path}: dtype {arr.dtype}, expected float32")
        if arr.ndim < 1:
            fail(f"{path}: a scalar, expected [N, ...]")
        arrays[name] = np.ascontiguousarray(arr)
    missing = sorted(set(names) - set(arrays))
    if missing:
        fail(f"no --input for the model input(s) {missing}", 2)
    rows = {arr.shape[0] for arr in arrays.values()}
    if len(rows) != 1:
        fail(f"the inputs have different first dimensions {sorted(rows)}")
    have = rows.pop()
    n = have if a.images is None else a.images
    if n < 1 or n > have:
        fail(f"--images {n}, but the .npy has {have} rows")
    batch = n if a.batch == 0 else min(a.batch, n)
    feeds = []
    for lo in range(0, n, batch):
        feeds.append({k: v[lo:lo + batch] for k, v in arrays.items()})
    for k, v in arrays.items():
        log(f"input {k}: {list(v[:n].shape)} float32, {len(feeds)} call(s) of batch {batch}")
    return n, feeds


def read_lines(path):
    docs = []
    with open(path, "rb") as f:
        for raw in f:
            raw = raw.rstrip(b"\r\n")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                line = raw.decode("latin-1")
            if line.strip():
                docs.append(line)
    return docs


def text_feeds(a, sess):
    from tokenizers import Tokenizer
    names = [i.name for i in sess.get_inputs()]
    known = {"input_ids", "attention_mask", "token_type_ids"}
    if not set(names) <= known or "input_ids" not in names:
        fail(f"text model inputs {names}: expected input_ids [+ attention_mask, token_type_ids]")
    tok = Tokenizer.from_file(a.tokenizer)
    tok.no_padding()
    tok.enable_truncation(max_length=a.max_length)
    docs = read_lines(a.texts)
    if not docs:
        fail(f"{a.texts}: no documents")
    feeds = []
    lengths = []
    for d in docs:
        enc = tok.encode(d)
        ids = np.array([enc.ids], dtype=np.int64)
        all_inputs = {
            "input_ids": ids,
            "attention_mask": np.array([enc.attention_mask], dtype=np.int64),
            "token_type_ids": np.array([enc.type_ids], dtype=np.int64),
        }
        feeds.append({k: all_inputs[k] for k in names})
        lengths.append(ids.shape[1])
    log(f"{len(docs)} documents, tokens min {min(lengths)} mean {np.mean(lengths):.1f} max {max(lengths)} "
        f"(truncation {a.max_length}), one per call")
    return len(docs), feeds


def main(argv=None):
    a = parse_args(argv)
    ort, sess = make_session(a.model, a.threads)
    if a.texts is not None:
        items, feeds = text_feeds(a, sess)
    else:
        items, feeds = image_feeds(a, sess)
    out_names = [o.name for o in sess.get_outputs()]

    outs = sess.run(out_names, feeds[0])  # warm-up
    for name, o in zip(out_names, outs):
        if not np.all(np.isfinite(o)):
            fail(f"output {name} has non-finite values")
    log("warm-up outputs: " + ", ".join(f"{n} {list(o.shape)}" for n, o in zip(out_names, outs)))

    best, spent, r = None, 0.0, 0
    while r < a.repeat or (spent < a.min_seconds and r < 50):
        t0 = time.perf_counter()
        for f in feeds:
            sess.run(out_names, f)
        dt = time.perf_counter() - t0
        r += 1
        spent += dt
        log(f"pass {r}: {dt:.4f} s ({items / dt:.2f} items/s)")
        best = dt if best is None else min(best, dt)

    result = {
        "model": a.model,
        "threads": a.threads,
        "items": items,
        "seconds": best,
        "items_per_s": items / best,
        "onnxruntime": ort.__version__,
        "providers": sess.get_providers(),
    }
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
