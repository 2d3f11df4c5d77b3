"""Sanity of the exporter conformance corpus (tests/onnx/corpus/): every manifest entry names a small
ONNX file that loads, that onnxruntime runs (all but the raw QONNX files, which carry custom ops), and
every raw-QONNX reference .npz matches its model's input/output shapes.  Needs only onnx, onnxruntime
and numpy (not brevitas, qonnx or tensorflow)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

ort = pytest.importorskip("onnxruntime")

CORPUS = Path(__file__).resolve().parent / "corpus"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())
KEYS = {"file", "row", "dialect", "tool", "description", "expect", "reference"}
_NP = {"tensor(float)": np.float32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
       "tensor(int16)": np.int16, "tensor(uint16)": np.uint16}


def _shape(value_info) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else 1 for d in value_info.type.tensor_type.shape.dim]


def _is_raw_qonnx(model: onnx.ModelProto) -> bool:
    return any(n.domain.startswith("qonnx") or n.domain.startswith("finn") for n in model.graph.node)


def test_manifest_shape():
    assert 40 <= len(MANIFEST) <= 80
    files = [e["file"] for e in MANIFEST]
    assert len(files) == len(set(files))
    for e in MANIFEST:
        assert set(e) == KEYS, e
        assert 1 <= e["row"] <= 10
        on_purpose = "[refused by qa-lirpa:" in e["description"]
        assert e["expect"] == ("refuse" if e["row"] == 10 or on_purpose else "verify"), e["file"]
        assert e["file"].endswith(".onnx") and e["dialect"] and e["tool"] and e["description"]
    assert {e["row"] for e in MANIFEST} >= {1, 2, 3, 4, 5, 6, 7, 9, 10}


def test_no_unlisted_fixtures():
    listed = {e["file"] for e in MANIFEST} | {e["reference"] for e in MANIFEST if e["reference"]}
    present = {p.name for p in CORPUS.iterdir() if p.suffix in (".onnx", ".npz", ".data")}
    assert present <= listed, sorted(present - listed)


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["file"] for e in MANIFEST])
def test_fixture(entry):
    path = CORPUS / entry["file"]
    assert path.is_file()
    assert path.stat().st_size < 50_000
    model = onnx.load(str(path))
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    n_in = sum(int(np.prod(_shape(i))) for i in inputs)
    assert 2 <= n_in <= 6, n_in
    assert 2 <= sum(int(np.prod(_shape(o))) for o in model.graph.output) <= 4
    if _is_raw_qonnx(model):
        assert entry["reference"], "raw QONNX needs a reference"
        ref = np.load(CORPUS / entry["reference"])
        assert len(inputs) == 1 and len(model.graph.output) == 1
        in_shape, out_shape = _shape(inputs[0]), _shape(model.graph.output[0])
        x, y, lo, hi = ref["x"], ref["y"], ref["lo"], ref["hi"]
        assert x.dtype == np.float32 and 1 <= x.shape[0] <= 4096
        assert list(x.shape[1:]) == in_shape and list(lo.shape) == in_shape and list(hi.shape) == in_shape
        assert list(y.shape) == [x.shape[0], *out_shape]
        assert np.all(lo <= x) and np.all(x <= hi) and np.all(np.isfinite(y))
        return
    assert entry["reference"] is None
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        dt = _NP[i.type]
        if np.issubdtype(dt, np.integer):
            feed[i.name] = rng.integers(np.iinfo(dt).min, np.iinfo(dt).max + 1, size=shape).astype(dt)
        else:
            feed[i.name] = rng.uniform(-1, 1, size=shape).astype(dt)
    out1 = sess.run(None, feed)
    out2 = sess.run(None, feed)
    # also loadable without graph optimizations (the setting that follows the ONNX operator
    # definitions; the default one may not: see corpus/README.md)
    so0 = ort.SessionOptions()
    so0.log_severity_level = 3
    so0.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    out0 = ort.InferenceSession(str(path), so0, providers=["CPUExecutionProvider"]).run(None, feed)
    for a, b, c in zip(out1, out2, out0):
        assert np.array_equal(a, b) and a.shape == c.shape and a.dtype == c.dtype
        if np.issubdtype(a.dtype, np.floating):
            assert np.all(np.isfinite(a)) and np.all(np.isfinite(c))
