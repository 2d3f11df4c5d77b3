"""Float32QuantInput's rounding patterns Floor(v), Ceil(v) and Ceil(v - 0.5) against onnxruntime on
dense float32 sweeps around every code threshold (non-power-of-two scales, so float32 error
matters): the codes are onnxruntime's bit for bit, they lie within ``float32_tolerance`` of the
nominal mode's codes, ``real_inputs`` inverts them, and the traced nominal quantizer's IBP and
CROWN bounds contain onnxruntime's values."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import qa_lirpa
from qa_lirpa import QuantSpec
from qa_lirpa.compat import import_auto_lirpa
from qa_lirpa.onnx import run_onnxruntime
from qa_lirpa.onnx.ort_layers import IMPL_ROUNDING, ROUNDING_IMPLS, Float32QuantInput
from qa_lirpa.quant.functions import round_mode
from qa_lirpa.quant.spec import ROUNDING_SHIFT

from onnx_helpers import as64

auto_lirpa = import_auto_lirpa()
NEW_IMPLS = ["floor", "ceil", "ceil_half"]
MEAN, STD = 0.1307, 0.3081


def _graph(path, impl: str, scale: float, zp: int, qmin: int, qmax: int) -> None:
    """``x -> Sub(mean) -> Div(std) -> Div(scale) -> rounding -> Add(zp) -> Clip`` (float32)."""
    c = lambda name, v: numpy_helper.from_array(np.asarray(v, dtype=np.float32), name)  # noqa: E731
    inits = [c("mean", MEAN), c("std", STD), c("s", scale), c("half", 0.5), c("z", float(zp)),
             c("lo", float(qmin)), c("hi", float(qmax))]
    nodes = [helper.make_node("Sub", ["x", "mean"], ["a"]), helper.make_node("Div", ["a", "std"], ["b"]),
             helper.make_node("Div", ["b", "s"], ["v"])]
    if impl == "floor":
        nodes.append(helper.make_node("Floor", ["v"], ["r"]))
    elif impl == "ceil":
        nodes.append(helper.make_node("Ceil", ["v"], ["r"]))
    else:
        nodes += [helper.make_node("Sub", ["v", "half"], ["vh"]), helper.make_node("Ceil", ["vh"], ["r"])]
    nodes += [helper.make_node("Add", ["r", "z"], ["q"]), helper.make_node("Clip", ["q", "lo", "hi"], ["y"])]
    g = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _sweep(spec: QuantSpec, impl: str, n_ulp: int = 24) -> np.ndarray:
    """float32 inputs within ``n_ulp`` ulps of every code threshold of the nominal quantizer (and
    of the other thresholds half a step away), plus uniform ones."""
    s = spec.scale[0]
    z = spec.zero_point[0]
    k = np.arange(spec.qmin - z - 2, spec.qmax - z + 3, dtype=np.float64)
    t = np.concatenate([k, k + 0.5])                         # integers and ties of v
    base = (t * s * STD + MEAN).astype(np.float32)
    out = [base]
    up, dn = base.copy(), base.copy()
    for _ in range(n_ulp):
        up = np.nextafter(up, np.float32(np.inf))
        dn = np.nextafter(dn, np.float32(-np.inf))
        out += [up, dn]
    rng = np.random.default_rng(0)
    out.append((rng.random(4000) * 1.6 - 0.4).astype(np.float32))
    return np.concatenate(out).reshape(-1, 1)


SPECS = [(8, False, 0.0123, 7), (6, True, 0.0517, -3)]


@pytest.mark.parametrize("impl", NEW_IMPLS)
@pytest.mark.parametrize("bits,signed,scale,zp", SPECS)
def test_codes_equal_onnxruntime_around_thresholds(tmp_path, impl, bits, signed, scale, zp):
    spec = QuantSpec(bits, signed, float(np.float32(scale)), zp, rounding=IMPL_ROUNDING[impl])
    q_in = Float32QuantInput(spec, program=[("sub", (MEAN,)), ("div", (STD,)), ("div", (spec.scale[0],))],
                             rounding_impl=impl)
    path = tmp_path / f"{impl}.onnx"
    _graph(path, impl, spec.scale[0], zp, spec.qmin, spec.qmax)
    x = _sweep(spec, impl)
    ort = run_onnxruntime(path, x).astype(np.float64).reshape(-1)
    codes = q_in.codes(as64(x)).reshape(-1).numpy()
    np.testing.assert_array_equal(codes.astype(np.float64), ort)
    # the float forward gives the dequantized onnxruntime codes
    with torch.no_grad():
        y = q_in(as64(x)).reshape(-1)
    assert torch.equal(y, (torch.from_numpy(ort) - zp) * spec.scale[0])
    # within float32_tolerance of the nominal mode: R(v - tol) <= code - z <= R(v + tol)
    a, b = q_in.affine()
    v = as64(x).reshape(-1) * a[0] + b[0]
    tol = q_in.float32_tolerance
    lo = torch.clamp(round_mode(v - tol, spec.rounding) + zp, spec.qmin, spec.qmax)
    hi = torch.clamp(round_mode(v + tol, spec.rounding) + zp, spec.qmin, spec.qmax)
    c = torch.from_numpy(codes)
    assert ((c >= lo) & (c <= hi)).all()
    # the sweep does hit float32 effects: the exact nominal codes differ somewhere
    exact = torch.clamp(round_mode(v, spec.rounding) + zp, spec.qmin, spec.qmax)
    assert (c != exact).any()
    # every code is reachable and real_inputs finds float32 inputs with exactly that code
    q = torch.arange(spec.qmin, spec.qmax + 1, dtype=torch.int64)
    assert torch.equal(q_in.codes(q_in.real_inputs(q)), q)


@pytest.mark.parametrize("impl", NEW_IMPLS)
def test_impl_differs_from_the_other_patterns(tmp_path, impl):
    """The emulation is specific: the other patterns' codes differ from onnxruntime's graph."""
    spec = QuantSpec(8, False, float(np.float32(0.0123)), 7, rounding=IMPL_ROUNDING[impl])
    path = tmp_path / "m.onnx"
    _graph(path, impl, spec.scale[0], 7, 0, 255)
    x = _sweep(spec, impl, n_ulp=2)
    ort = run_onnxruntime(path, x).astype(np.float64).reshape(-1)
    for other in ROUNDING_IMPLS:
        if other == impl:
            continue
        s2 = spec.replace(rounding=IMPL_ROUNDING[other])
        q2 = Float32QuantInput(s2, program=[("sub", (MEAN,)), ("div", (STD,)), ("div", (s2.scale[0],))],
                               rounding_impl=other)
        assert not np.array_equal(q2.codes(as64(x)).reshape(-1).numpy().astype(np.float64), ort), other


def test_impl_must_match_the_spec_rounding():
    spec = QuantSpec(8, False, 0.5, rounding="half_up")
    with pytest.raises(ValueError, match="rounds as 'down'"):
        Float32QuantInput(spec, program=[("div", (0.5,))], rounding_impl="floor")
    for impl, mode in IMPL_ROUNDING.items():
        Float32QuantInput(spec.replace(rounding=mode), program=[("div", (0.5,))], rounding_impl=impl)


@pytest.mark.parametrize("impl", NEW_IMPLS)
def test_bounds_contain_onnxruntime_near_thresholds(tmp_path, impl):
    """IBP and CROWN of the traced (nominal, tolerance-widened) quantizer contain onnxruntime's
    values on boxes whose end points sit a few ulps from a code threshold."""
    spec = QuantSpec(8, False, float(np.float32(0.0123)), 7, rounding=IMPL_ROUNDING[impl])
    q_in = Float32QuantInput(spec, program=[("sub", (MEAN,)), ("div", (STD,)), ("div", (spec.scale[0],))],
                             rounding_impl=impl)
    lin = torch.nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        lin.weight.fill_(1.0)
    model = torch.nn.Sequential(q_in, lin).eval()
    path = tmp_path / "m.onnx"
    _graph(path, impl, spec.scale[0], 7, 0, 255)
    shift = ROUNDING_SHIFT[spec.rounding]
    for k in (3, 40, 100):
        t = np.float32((k - 0.5 + shift) * spec.scale[0] * STD + MEAN)     # a threshold of code k + z
        lo_pt, hi_pt = t, t
        for _ in range(3):
            lo_pt = np.nextafter(lo_pt, np.float32(-np.inf))
            hi_pt = np.nextafter(hi_pt, np.float32(np.inf))
        xs = [lo_pt]
        while xs[-1] < hi_pt:
            xs.append(np.nextafter(xs[-1], np.float32(np.inf)))
        x = np.asarray(xs, dtype=np.float32).reshape(-1, 1)
        y = (run_onnxruntime(path, x).astype(np.float64).reshape(-1) - 7) * spec.scale[0]
        centre = as64(x[len(x) // 2:len(x) // 2 + 1])
        bm = qa_lirpa.bounded_module(model, centre)
        ptb = auto_lirpa.PerturbationLpNorm(norm=float("inf"), x_L=as64(x[:1]), x_U=as64(x[-1:]))
        for method in ("IBP", "CROWN"):
            lb, ub = bm.compute_bounds(x=(auto_lirpa.BoundedTensor(centre, ptb),), method=method)
            assert float(lb) <= y.min() + 1e-12 and float(ub) >= y.max() - 1e-12, (impl, k, method)


def test_ceil_half_float32_subtraction(tmp_path):
    """``Ceil(Sub(v, 0.5))`` is not exact half-down rounding in float32: ``fl32(-0.5 + 2^-25 - 0.5)
    = -1`` (a tie, to even), so that input gets code -1 instead of 0. The emulation reproduces
    onnxruntime there, and the declared tolerance covers the difference."""
    spec = QuantSpec(8, True, 1.0, 0, rounding="half_down")
    q_in = Float32QuantInput(spec, program=[], rounding_impl="ceil_half")
    c = lambda name, v: numpy_helper.from_array(np.asarray(v, dtype=np.float32), name)  # noqa: E731
    g = helper.make_graph([helper.make_node("Sub", ["x", "half"], ["vh"]), helper.make_node("Ceil", ["vh"], ["y"])],
                          "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])], [c("half", 0.5)])
    path = tmp_path / "ceil_half.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    bad = np.float32(-0.5) + np.float32(2.0 ** -25)
    ties = np.arange(-20, 21, dtype=np.float32) + np.float32(0.5)
    x = np.concatenate([[bad], ties, np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf)),
                        np.float32(2.0 ** -25) * np.arange(-64, 65, dtype=np.float32) - np.float32(0.5)])
    x = x.astype(np.float32).reshape(-1, 1)
    ort = run_onnxruntime(path, x).astype(np.float64).reshape(-1)
    codes = q_in.codes(as64(x)).reshape(-1).numpy().astype(np.float64)
    np.testing.assert_array_equal(codes, ort)
    assert ort[0] == -1.0 and round_mode(as64([float(bad)]), "half_down").item() == 0.0
    tol = q_in.float32_tolerance
    assert round_mode(as64([float(bad) - tol]), "half_down").item() == -1.0
