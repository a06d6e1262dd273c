"""Regenerates the seeds of the idx, photo and tokenizer fuzz targets.

Needs Pillow (JPEG seeds). Run from the repository root:
python3 fuzz/seeds/make_seeds.py
"""
import gzip
import io
import pathlib
import struct

from PIL import Image

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def idx(dims, data):
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + bytes(data)


def main():
    d = HERE / "idx"
    img = idx([2, 3, 4], range(24))
    (d / "images.idx").write_bytes(img)
    (d / "labels.idx").write_bytes(idx([2], [7, 1]))
    (d / "images.idx.gz").write_bytes(gzip.compress(img, mtime=0))
    (d / "two_members.idx.gz").write_bytes(gzip.compress(img[:9], mtime=0) + gzip.compress(img[9:], mtime=0))
    for f in ["idx_truncated.idx", "idx_wrong_magic.idx", "idx_corrupt_gzip.idx.gz", "idx_two_labels.idx",
              "idx_gzip_bomb.idx.gz", "idx_wrong_geometry.idx"]:
        (d / f).write_bytes((ROOT / "fixtures/bad" / f).read_bytes())

    d = HERE / "photo"
    # The first three bytes pick channels, height and width (see the target).
    prefix = bytes([1, 7, 9])
    rgb = Image.new("RGB", (5, 3))
    rgb.putdata([(x * 50, y * 80, 128) for y in range(3) for x in range(5)])
    for name, im, fmt, kw in [
        ("rgb.png", rgb, "PNG", {}),
        ("grey.png", rgb.convert("L"), "PNG", {}),
        ("palette.png", rgb.convert("P"), "PNG", {}),
        ("rgba.png", rgb.convert("RGBA"), "PNG", {}),
        ("grey16.png", rgb.convert("L").convert("I;16"), "PNG", {}),
        ("rgb.jpg", rgb, "JPEG", {"quality": 90}),
        ("grey_progressive.jpg", rgb.convert("L"), "JPEG", {"progressive": True}),
    ]:
        buf = io.BytesIO()
        im.save(buf, fmt, **kw)
        (d / name).write_bytes(prefix + buf.getvalue())

    d = HERE / "tokenizer"
    (d / "tiny.json").write_bytes((ROOT / "fixtures/tiny_bert/model/tokenizer.json").read_bytes())
    (d / "bad.json").write_bytes((ROOT / "fixtures/bad/text_bad_tokenizer/tokenizer.json").read_bytes())
    (HERE / "onnx_import" / "tiny_bert.onnx").write_bytes((ROOT / "fixtures/tiny_bert/model.onnx").read_bytes())


if __name__ == "__main__":
    main()
