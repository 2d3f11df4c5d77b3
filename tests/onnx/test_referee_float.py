"""onnxruntime is the referee of FLOAT (non-quantized) ONNX models too: the verifier widens the
input box by the float32 cast, its bounds by :func:`float_chain_envelope` (onnxruntime's float32
error), and confirms counterexamples in onnxruntime. Properties that hold for the exact function of
the file's float32 weights but not for onnxruntime's float32 outputs must not be answered ``unsat``;
properties with a comfortable margin are still proved."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from onnx_helpers import FloatCNN, FloatMLP, _DIR, export_float, make_model, save

from qa_lirpa.onnx import load_onnx, run_onnxruntime
from qa_lirpa.onnx.referee import OnnxReferee, float_chain_envelope
from qa_lirpa.verify import Verdict, verify
from qa_lirpa.verify.continuous import ContinuousProblem
from qa_lirpa.verify.vnnlib import InputSpec


def _mlp_graph(weights, name: str) -> str:
    """``Gemm(transB) -> Relu -> ... -> Gemm`` with float32 initializers and batch dim ``N``."""
    nodes, inits, cur = [], [], "x"
    for k, (w, b) in enumerate(weights):
        out = "y" if k == len(weights) - 1 else f"h{k}"
        nodes.append(h.make_node("Gemm", [cur, f"W{k}", f"b{k}"], [out], transB=1, name=f"G{k}"))
        inits += [nh.from_array(np.asarray(w, np.float32), f"W{k}"), nh.from_array(np.asarray(b, np.float32), f"b{k}")]
        cur = out
        if k < len(weights) - 1:
            nodes.append(h.make_node("Relu", [out], [f"r{k}"], name=f"R{k}"))
            cur = f"r{k}"
    n_in, n_out = np.asarray(weights[0][0]).shape[1], np.asarray(weights[-1][0]).shape[0]
    ins = [h.make_tensor_value_info("x", T.FLOAT, ["N", n_in])]
    outs = [h.make_tensor_value_info("y", T.FLOAT, ["N", n_out])]
    return save(make_model(nodes, ins, outs, inits), name)


def _exact_output(weights, x: np.ndarray) -> list[Fraction]:
    """The exact real output of the float32 weights at a point (rationals)."""
    v = [Fraction(float(t)) for t in x]
    for k, (w, b) in enumerate(weights):
        w, b = np.asarray(w, np.float32), np.asarray(b, np.float32)
        v = [sum((Fraction(float(w[j, i])) * v[i] for i in range(len(v))), Fraction(float(b[j])))
             for j in range(w.shape[0])]
        if k < len(weights) - 1:
            v = [max(t, Fraction(0)) for t in v]
    return v


def _ibp_upper(weights, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Upper bounds of the exact outputs on the box (float64 interval propagation, widened)."""
    for k, (w, b) in enumerate(weights):
        w, b = np.asarray(w, np.float32).astype(np.float64), np.asarray(b, np.float32).astype(np.float64)
        c, r = (lo + hi) / 2, (hi - lo) / 2
        m, rad = w @ c + b, np.abs(w) @ r
        slack = 1e-12 * (np.abs(w) @ (np.abs(c) + r) + np.abs(b))
        lo, hi = m - rad - slack, m + rad + slack
        if k < len(weights) - 1:
            lo, hi = np.maximum(lo, 0), np.maximum(hi, 0)
    return hi


def _cancelling_mlp():
    """Random 16-32-1 ReLU MLPs whose output cancels to about 0 at a float32 point ``x0`` of hidden
    magnitude ~1e3, until onnxruntime's float32 output at ``x0`` exceeds a sound upper bound of the
    exact output on the box ``[x0, x0 + 2^-30]`` (which float32 casts to ``x0``) by a clear margin.
    Returns the weights, the box and onnxruntime's output at ``x0``."""
    for seed in range(400):
        rng = np.random.default_rng(seed)
        w1 = (rng.normal(size=(32, 16)) * 10).astype(np.float32)
        b1 = (rng.normal(size=32) * 10 + 60).astype(np.float32)
        w2 = rng.normal(size=(1, 32)).astype(np.float32)
        x0 = rng.random(16).astype(np.float32)
        lo = x0.astype(np.float64)
        hi = lo + 2.0 ** -30
        b2 = -np.asarray(_ibp_upper([(w1, b1), (w2, np.zeros(1))], lo, lo), np.float32)
        weights = [(w1, b1), (w2, b2)]
        path = _mlp_graph(weights, f"float_cancel_{seed}.onnx")
        y = float(np.asarray(run_onnxruntime(path, x0.reshape(1, -1)), np.float64).reshape(-1)[0])
        upper = float(_ibp_upper(weights, lo, hi)[0])
        if y - upper > 1e-6 + 1e-5 * abs(upper):
            return path, weights, lo, hi, x0, y, upper
    pytest.skip("no float32-sensitive MLP found on this machine's onnxruntime")


def test_float32_error_beyond_the_exact_max_is_not_unsat():
    """(i) The exact output stays below ``t`` on the whole box, onnxruntime's float32 output at the
    box's float32 point reaches it: nominally unsat, for onnxruntime sat."""
    path, weights, lo, hi, x0, y, upper = _cancelling_mlp()
    t = (upper + y) / 2
    assert float(_exact_output(weights, x0)[0]) <= upper < t <= y
    spec = InputSpec(lo, hi, [(np.array([[-1.0]]), np.array([-t]))])      # violated iff Y_0 >= t
    # the exact semantics of the same weights proves it (the wrong answer for the ONNX file)
    nominal = verify(load_onnx(path), spec, timeout=20, device="cpu", referee=None)
    assert nominal.verdict is Verdict.UNSAT
    r = verify(load_onnx(path), spec, timeout=20, device="cpu")
    assert r.verdict is not Verdict.UNSAT
    if r.verdict is Verdict.SAT:
        x = np.asarray(r.counterexample, np.float64).reshape(-1)
        assert np.all(lo <= x) and np.all(x <= hi)
        y_ort = np.asarray(run_onnxruntime(path, x.reshape(1, -1).astype(np.float32)), np.float64).reshape(-1)
        assert float(y_ort[0]) >= t
        assert float(r.outputs[0]) == float(y_ort[0])
    assert "float32 envelope" in r.stats.float32


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_comfortable_margin_is_still_proved(arch):
    """(ii) Box width 0.01, threshold 1% (of the output's magnitude) above a sound upper bound of
    the maximum: unsat, and the envelope is far below the margin."""
    torch.manual_seed(7)
    net, shape = (FloatMLP(), (20,)) if arch == "mlp" else (FloatCNN(), (1, 14, 14))
    path = export_float(net, shape, f"{_DIR}/float_margin_{arch}.onnx")
    model = load_onnx(path)
    d = int(np.prod(shape))
    lo = np.random.default_rng(3).random(d) * 0.9
    hi = lo + 0.01
    env = float_chain_envelope(model, lo, hi, shape)
    assert 0 < env.output_error < 1e-3
    with torch.no_grad():
        xs = torch.tensor(np.random.default_rng(4).uniform(lo, hi, (256, d)), dtype=torch.float64)
        ymax = float(model.double()(xs.reshape((-1,) + shape))[:, 0].max())
    p = ContinuousProblem(load_onnx(path), shape, torch.device("cpu"), use_crown=False)
    _, yhi = p.output_intervals(*p.root(lo, hi))
    t = max(float(yhi[0, 0]), ymax) + 0.01 * max(abs(ymax), 1.0)
    n_out = int(yhi.shape[1])
    mat = np.zeros((1, n_out))
    mat[0, 0] = -1.0
    r = verify(load_onnx(path), InputSpec(lo, hi, [(mat, np.array([-t]))]), timeout=60, device="cpu")
    assert r.verdict is Verdict.UNSAT, r.message
    assert "float32 envelope: outputs within" in r.stats.float32


def test_input_cast_crossing_the_bound_is_sat():
    """(iii) ``y = 1024 x - 1024`` on ``x <= nextafter(1 + 2^-24, 2)``: the bound is just above
    the tie between float32's 1 and 1 + 2^-23, so onnxruntime sees ``x = 1 + 2^-23`` and outputs
    ``2^-13`` exactly, while the exact maximum is about ``2^-14``."""
    path = _mlp_graph([(np.array([[1024.0]]), np.array([-1024.0]))], "float_cast_bound.onnx")
    hi = float(np.nextafter(1.0 + 2.0 ** -24, 2.0))
    assert float(np.float32(hi)) == 1.0 + 2.0 ** -23 > hi
    t = 2.0 ** -13
    assert 1024 * (Fraction(hi) - 1) < t
    spec = InputSpec(np.array([1.0]), np.array([hi]), [(np.array([[-1.0]]), np.array([-t]))])
    assert verify(load_onnx(path), spec, timeout=20, device="cpu", referee=None).verdict is Verdict.UNSAT
    r = verify(load_onnx(path), spec, timeout=20, device="cpu")
    assert r.verdict is Verdict.SAT
    x = float(np.asarray(r.counterexample).reshape(-1)[0])
    assert 1.0 <= x <= hi
    assert float(np.asarray(run_onnxruntime(path, np.array([[x]], np.float32))).reshape(-1)[0]) >= t
    assert float(r.outputs[0]) >= t
    # the tie itself rounds to even (1.0): onnxruntime never exceeds 0, so never sat
    spec2 = InputSpec(np.array([1.0]), np.array([1.0 + 2.0 ** -24]), [(np.array([[-1.0]]), np.array([-t]))])
    assert verify(load_onnx(path), spec2, timeout=5, device="cpu").verdict is not Verdict.SAT


def test_envelope_contains_onnxruntime():
    """onnxruntime's outputs on random float32 points of a box lie within the envelope of the
    exact outputs (float64 forward, whose own error is far below the envelope)."""
    torch.manual_seed(11)
    for i, (net, shape) in enumerate([(FloatMLP(), (20,)), (FloatCNN(), (1, 14, 14))]):
        path = export_float(net, shape, f"{_DIR}/float_env_{i}.onnx")
        model = load_onnx(path).double()
        d = int(np.prod(shape))
        lo = np.random.default_rng(i).random(d) - 0.5
        hi = lo + 0.5
        env = float_chain_envelope(model, lo, hi, shape)
        x = np.random.default_rng(10 + i).uniform(lo, hi, (400, d)).astype(np.float32)
        y_ort = np.asarray(run_onnxruntime(path, x.reshape((-1,) + shape)), np.float64)
        with torch.no_grad():
            y = model(torch.tensor(x, dtype=torch.float64).reshape((-1,) + shape)).numpy()
        assert np.abs(y_ort - y).max() <= env.output_error
        assert env.output_error < 1e-3


def test_unknown_layers_prove_nothing():
    """An onnx2pytorch model (not a chain): infinite envelope, so never unsat; a trivially true
    property ends unknown (or timeout)."""
    from test_onnx_float_models import Residual

    torch.manual_seed(2)
    path = export_float(Residual(), (2, 4), f"{_DIR}/float_residual_ref.onnx")
    model = load_onnx(path)
    lo, hi = np.zeros(8), np.full(8, 0.1)
    assert math.isinf(float_chain_envelope(model, lo, hi, (2, 4)).output_error)
    spec = InputSpec(lo, hi, [(np.array([[-1.0, 0.0, 0.0]]), np.array([-1e6]))])   # Y_0 >= 1e6
    assert verify(load_onnx(path), spec, timeout=3, device="cpu", referee=None).verdict is Verdict.UNSAT
    r = verify(load_onnx(path), spec, timeout=3, device="cpu")
    assert r.verdict in (Verdict.UNKNOWN, Verdict.TIMEOUT)


def test_referee_is_used_for_float_models():
    path = _mlp_graph([(np.eye(2), np.zeros(2))], "float_eye.onnx")
    p = ContinuousProblem(load_onnx(path), (2,), torch.device("cpu"), referee=OnnxReferee(path))
    lo, hi = p.root(np.array([0.1, 0.2]), np.array([0.3, 0.4]))
    # widened to the float32 casts of the bounds
    assert float(lo[0, 0]) == min(0.1, float(np.float32(0.1))) and float(hi[0, 1]) == max(0.4, float(np.float32(0.4)))
    assert 0 < p.output_error < 1e-6
