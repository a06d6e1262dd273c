"""Writes ONNX's node backend test cases to disk, as onnx's own
`backend-test-tools generate-data` writes the model cases: one folder per case
with `model.onnx` and `test_data_set_0/{input,output}_N.pb`.

Since onnx 1.19 the node cases are no longer shipped as files in the wheel or
the sdist: they are the Python code under `onnx/backend/test/case/node`, built
in memory by `onnx.backend.test.loader.load_node_model_tests()`. This runs that
code (in the venv that scripts/fetch/onnx_backend.sh makes) and serialises what
it builds. numpy's global generator is seeded first, so the random inputs of the
cases that draw them unseeded are the same on every run.

Usage: python onnx_node_cases.py OUTPUT_DIR
"""
import os
import shutil
import sys

import numpy as np

np.random.seed(0)

import onnx  # noqa: E402
from onnx import TensorProto, numpy_helper  # noqa: E402
from onnx.backend.test.loader import load_node_model_tests  # noqa: E402


def serialise(value, vi):
    """A value as its protobuf bytes, by the graph value's declared type."""
    t = vi.type
    if t.HasField("map_type"):
        return numpy_helper.from_dict(value, vi.name).SerializeToString()
    if t.HasField("sequence_type"):
        return numpy_helper.from_list(value, vi.name).SerializeToString()
    if t.HasField("optional_type"):
        return numpy_helper.from_optional(value, vi.name).SerializeToString()
    if isinstance(value, TensorProto):
        return value.SerializeToString()
    return numpy_helper.from_array(value, vi.name).SerializeToString()


def main():
    out = sys.argv[1]
    tmp = out + ".partial"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    cases = load_node_model_tests()
    written = 0
    for case in cases:
        d = os.path.join(tmp, case.name)
        os.makedirs(d)
        with open(os.path.join(d, "model.onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        g = case.model.graph
        for i, (inputs, outputs) in enumerate(case.data_sets):
            ds = os.path.join(d, f"test_data_set_{i}")
            os.makedirs(ds)
            for j, v in enumerate(inputs):
                with open(os.path.join(ds, f"input_{j}.pb"), "wb") as f:
                    f.write(serialise(v, g.input[j]))
            for j, v in enumerate(outputs):
                with open(os.path.join(ds, f"output_{j}.pb"), "wb") as f:
                    f.write(serialise(v, g.output[j]))
        written += 1
    if os.path.exists(out):
        shutil.rmtree(out)
    os.rename(tmp, out)
    print(f"onnx {onnx.__version__}: {written} node cases -> {out}")


if __name__ == "__main__":
    main()
