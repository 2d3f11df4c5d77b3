"""onnxruntime's default optimisations compute something other than the graph's op-by-op meaning
in three measured ways (onnxruntime 1.32, x86 AVX2 without VNNI); the importer's float32 envelope
must contain each one, so that the verifier never answers ``unsat`` where onnxruntime violates
the property:

- the u8*s8 integer kernels add adjacent pairs of products in int16 with saturation;
- ``DequantizeLinear`` weights into a MatMul/Gemm without an output quantizer run as
  ``MatMulNBits`` with ``accuracy_level`` 4, which re-quantizes the activations to int8 per block;
- float weights inside a ``DequantizeLinear -> Gemm -> QuantizeLinear`` group are quantized by
  onnxruntime itself (int8, per tensor) and fused into ``QGemm``.

Each test builds a tiny model where the effect decides a threshold property and checks the
verifier's answer against onnxruntime's own output (whichever way this CPU computes it): the
truth is what onnxruntime returns, ``unknown`` is allowed, a wrong word is not.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from qa_lirpa.onnx import load_onnx, run_onnxruntime
from qa_lirpa.verify.vnnlib import write_vnnlib
from qa_lirpa.vnncomp import run_instance


def _c(name, v, dt=np.float32):
    return nh.from_array(np.asarray(v, dt), name)


def _model(nodes, n_in, n_out, inits, path, opset=17):
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["N", n_in])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["N", n_out])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8 if opset < 21 else 10
    onnx.save(m, path)
    return str(path)


def _grid(lo, hi, step):
    """Every grid point (multiples of ``step``) of the box, as float32-exact float64 rows."""
    axes = [np.arange(np.ceil(a / step), np.floor(b / step) + 1) * step for a, b in zip(lo, hi)]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1)


def _check(tmp_path, path, boxes, step, exact_fn):
    """A threshold property on the first of ``boxes`` where onnxruntime's extreme lies beyond the
    exact semantics' one, placed between the two; the verifier must agree with onnxruntime."""
    for lo, hi in boxes:
        pts = _grid(lo, hi, step)
        ort = run_onnxruntime(path, pts.astype(np.float32))[:, 0].astype(np.float64)
        ex = exact_fn(pts)
        if ort.min() < ex.min():
            t, below = (ort.min() + ex.min()) / 2, True          # violated iff Y_0 < t: onnxruntime only
            break
        if ort.max() > ex.max():
            t, below = (ort.max() + ex.max()) / 2, False
            break
    else:
        pytest.skip("onnxruntime computes the exact semantics on these boxes on this CPU")
    violated = bool((ort < t).any() if below else (ort > t).any())
    assert violated                                   # the exact semantics alone would say unsat
    n_out = run_onnxruntime(path, pts[:1].astype(np.float32)).size
    a = np.zeros((1, n_out))
    a[0, 0] = 1.0 if below else -1.0
    b = np.array([t if below else -t])
    prop = tmp_path / "p.vnnlib"
    write_vnnlib(prop, np.asarray(lo, np.float64), np.asarray(hi, np.float64), [(a, b)])
    word = run_instance("default", path, str(prop), str(tmp_path / "r.txt"), 60)
    assert word in ("sat", "unknown", "timeout"), word       # never unsat: onnxruntime violates it


def test_pair_saturation_of_the_int8_kernel(tmp_path):
    # codes [200, 255]^2, w = [127, 127]: every exact sum >= 50800, a saturating kernel gives 32767
    nodes = [h.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             h.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             h.make_node("DequantizeLinear", ["W", "sw", "zw"], ["wd"]),
             h.make_node("MatMul", ["xd", "wd"], ["a"]),
             h.make_node("QuantizeLinear", ["a", "sy", "zy"], ["aq"]),
             h.make_node("DequantizeLinear", ["aq", "sy", "zy"], ["y"])]
    path = _model(nodes, 2, 1, [_c("sx", 1.0), _c("zx", 0, np.uint8), nh.from_array(np.full((2, 1), 127, np.int8), "W"),
                                _c("sw", 1.0), _c("zw", 0, np.int8), _c("sy", 1024.0), _c("zy", 0, np.int8)],
                  tmp_path / "sat.onnx")
    assert np.all(np.asarray(load_onnx(path)[1].bias_residual) > 0)      # the envelope knows

    def exact(p):
        return np.clip(np.round(p @ np.array([127.0, 127.0]) / 1024), -128, 127) * 1024

    _check(tmp_path, path, [([200.0, 200.0], [255.0, 255.0])], 1.0, exact)


def test_matmulnbits_requantizes_activations(tmp_path):
    rng = np.random.default_rng(3)
    w = rng.integers(-120, 120, size=(8, 1)).astype(np.int8)
    nodes = [h.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             h.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             h.make_node("DequantizeLinear", ["W", "sw", "zw"], ["wd"]),
             h.make_node("MatMul", ["xd", "wd"], ["y"])]
    # 16-bit activation codes: no integer kernel, MatMulNBits instead
    path = _model(nodes, 8, 1, [_c("sx", 1.0 / 256), _c("zx", 0, np.uint16), nh.from_array(w, "W"),
                                _c("sw", 1.0 / 64), _c("zw", 0, np.int8)], tmp_path / "nbits.onnx", opset=21)
    assert getattr(load_onnx(path)[1], "input_requant_error", 0) > 0
    boxes = []
    for _ in range(40):                               # four inputs vary over 8 codes each
        base = rng.integers(0, 248, size=8)
        lo, hi = base / 256.0, base / 256.0
        hi[:4] = (base[:4] + 7) / 256.0
        boxes.append((lo, hi))

    def exact(p):
        return p @ (w[:, 0].astype(np.float64) / 64.0)

    _check(tmp_path, path, boxes, 1.0 / 256, exact)


def test_integer_matmul_to_float_saturates_too(tmp_path):
    """8-bit codes and weights without an output quantizer: MatMulIntegerToFloat, same kernel."""
    rng = np.random.default_rng(3)
    w = rng.integers(-20, 20, size=(8, 1)).astype(np.int8)
    w[:2] = 120                                       # a pair that saturates near the top codes
    nodes = [h.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             h.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             h.make_node("DequantizeLinear", ["W", "sw", "zw"], ["wd"]),
             h.make_node("MatMul", ["xd", "wd"], ["y"])]
    path = _model(nodes, 8, 1, [_c("sx", 1.0 / 256), _c("zx", 0, np.uint8), nh.from_array(w, "W"),
                                _c("sw", 1.0 / 64), _c("zw", 0, np.int8)], tmp_path / "mmi2f.onnx")
    base = rng.integers(0, 250, size=8)
    base[:2] = 248
    lo, hi = base / 256.0, base / 256.0
    hi[:3] = (base[:3] + 7) / 256.0
    boxes = [(lo, hi)]

    def exact(p):
        return p @ (w[:, 0].astype(np.float64) / 64.0)

    _check(tmp_path, path, boxes, 1.0 / 256, exact)


def test_float_weights_in_a_qdq_group_are_quantized_by_onnxruntime(tmp_path):
    rng = np.random.default_rng(5)
    w = rng.normal(size=(4, 2)).astype(np.float32)
    nodes = [h.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             h.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             h.make_node("Gemm", ["xd", "W"], ["a"]),
             h.make_node("QuantizeLinear", ["a", "sy", "zy"], ["aq"]),
             h.make_node("DequantizeLinear", ["aq", "sy", "zy"], ["y"])]
    path = _model(nodes, 4, 2, [_c("sx", 1.0 / 256), _c("zx", 0, np.uint8), _c("W", w),
                                _c("sy", 0.00390625), _c("zy", 128, np.uint8)], tmp_path / "fw.onnx")
    assert load_onnx(path)[1].weight_residual > 0

    def exact(p):
        return (np.clip(np.round(p @ w.astype(np.float64)[:, 0] / 0.00390625) + 128, 0, 255) - 128) * 0.00390625

    boxes = []
    for _ in range(40):
        base = rng.integers(0, 240, size=4)
        boxes.append((base / 256.0, (base + np.array([15, 15, 0, 0])) / 256.0))
    _check(tmp_path, path, boxes, 1.0 / 256, exact)


@pytest.mark.parametrize("seed", [0, 1])
def test_saturation_bound_contains_every_pairing(seed):
    """``_saturation_bound``: brute force over every pairing of a short row."""
    from itertools import permutations

    from qa_lirpa.onnx.load import _saturation_bound

    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 128, size=(3, 6))
    bound = _saturation_bound(w)
    for r in range(3):
        worst = 0
        for perm in permutations(range(6)):
            loss = 0
            for i in range(0, 6, 2):
                a, b = w[r, perm[i]], w[r, perm[i + 1]]
                if a * b > 0:
                    loss += max(0, 255 * (abs(a) + abs(b)) - 32767)
            worst = max(worst, loss)
        assert bound[r] >= worst
    consecutive = _saturation_bound(w, consecutive=True)
    for r in range(3):
        loss = sum(max(0, 255 * (abs(w[r, i]) + abs(w[r, i + 1])) - 32767) for i in range(0, 6, 2)
                   if w[r, i] * w[r, i + 1] > 0)
        assert consecutive[r] == loss
