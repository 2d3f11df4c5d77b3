"""Models from onnxruntime.quantization.quantize_static (QDQ, per tensor and per channel): the
imported model equals onnxruntime exactly, and qa_lirpa.bounded_module bounds contain
onnxruntime's outputs."""
from __future__ import annotations

import platform
import warnings

import numpy as np
import pytest
import torch

import qa_lirpa
from qa_lirpa import integer_forward
from qa_lirpa.compat import import_auto_lirpa
from qa_lirpa.nn import QuantAct, QuantConv2d, QuantInput, QuantLinear
from qa_lirpa.onnx import OnnxExactnessWarning, load_onnx, required_quant_slack, run_onnxruntime
from qa_lirpa.onnx.ort_layers import Float32QuantInput, Float32Requant

from onnx_helpers import as64, quantize_static_model, scaled_ties

N = 10_000


def inputs(shape, n: int, spec, seed: int = 0) -> np.ndarray:
    """Uniform inputs a little beyond the calibration range [0, 1), with some elements replaced by
    exact and neighbouring ties of the input quantizer (where float32 division matters)."""
    rng = np.random.default_rng(seed)
    x = (rng.random((n, int(np.prod(shape)))) * 1.2 - 0.1).astype(np.float32)
    z = spec.zero_point[0]
    ties = scaled_ties(spec.scale[0], spec.qmin - z - 2, spec.qmax - z + 2)
    mask = rng.random(x.shape) < 0.2
    x[mask] = rng.choice(ties, size=int(mask.sum()))
    return x.reshape(n, *shape)


def _load(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", OnnxExactnessWarning)      # reduce_range: nothing to warn about
        return load_onnx(path)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_imported_equals_onnxruntime(arch, per_channel):
    path, shape = quantize_static_model(arch, per_channel)
    model = _load(path)
    kinds = [type(m) for m in model]
    assert kinds[0] is Float32QuantInput and model.quantized
    assert Float32Requant in kinds and (QuantConv2d in kinds or QuantLinear in kinds)
    if per_channel:
        assert any(m.weight_spec.per_channel for m in model if isinstance(m, (QuantLinear, QuantConv2d)))
    x = inputs(shape, N, model[0].spec)
    y = run_onnxruntime(path, x)                                  # default session: fused int8 kernels
    r = integer_forward(model, as64(x)).numpy()
    np.testing.assert_array_equal(r.astype(np.float32), y)
    with torch.no_grad():
        np.testing.assert_array_equal(model(as64(x[:2000])).numpy(), r[:2000])


@pytest.mark.parametrize("scale,zero_point,dtype", [(0.003921408, -128, np.int8), (0.1, 3, np.uint8),
                                                     (1 / 3, 0, np.int8), (0.0072519993, 17, np.uint8)])
def test_input_quantizer_equals_quantize_linear_at_ties(scale, zero_point, dtype):
    """QuantizeLinear divides in float32: the imported input quantizer does too and agrees with
    onnxruntime on every tie and its neighbours, where the float64 division of a plain QuantInput
    with the same spec gets some wrong (why the import uses Float32QuantInput for these scales)."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    from onnx_helpers import make_model, save

    s = np.float32(scale)
    z = np.asarray(zero_point, dtype=dtype)
    graph = make_model([h.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="Q"),
                        h.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="DQ")],
                       [h.make_tensor_value_info("x", T.FLOAT, ["N", 20])],
                       [h.make_tensor_value_info("y", T.FLOAT, ["N", 20])],
                       [nh.from_array(s, "s"), nh.from_array(z, "z")])
    path = save(graph, f"qdq_{zero_point}_{dtype.__name__}.onnx")
    model = load_onnx(path)
    q_in = model[0]
    assert isinstance(q_in, Float32QuantInput) and len(model) == 1
    spec = q_in.spec
    ties = scaled_ties(scale, spec.qmin - zero_point - 3, spec.qmax - zero_point + 3)
    rng = np.random.default_rng(0)
    x = np.concatenate([ties, (rng.random(20 * 500) * 300 - 20).astype(np.float32) * s])
    x = np.resize(x, (len(x) // 20 * 20,)).reshape(-1, 20)
    y = run_onnxruntime(path, x)
    np.testing.assert_array_equal(integer_forward(model, as64(x)).numpy().astype(np.float32), y)
    ort_codes = torch.tensor(np.rint(y.astype(np.float64) / np.float64(s)).astype(np.int64)) + zero_point
    assert torch.equal(q_in.codes(as64(x)), ort_codes)
    assert (QuantInput(spec).codes(as64(x)) != ort_codes).any()
    # codes are monotone, and real_inputs gives float32 inputs with exactly the requested codes
    xs = torch.sort(as64(x).reshape(-1)).values
    assert (q_in.codes(xs).diff() >= 0).all()
    q = torch.arange(spec.qmin, spec.qmax + 1)
    xr = q_in.real_inputs(q.reshape(1, -1))
    assert torch.equal(xr.float().double(), xr) and torch.equal(q_in.codes(xr), q.reshape(1, -1))


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_bounds_contain_onnxruntime_samples(arch):
    path, shape = quantize_static_model(arch, True)
    model = _load(path)
    slack = required_quant_slack(model)
    assert 0 < slack < 1e-3
    auto_lirpa = import_auto_lirpa()
    x0 = as64(np.random.default_rng(3).random((1, *shape)))
    lo, hi = x0 - 0.03, x0 + 0.03
    bm = qa_lirpa.bounded_module(model, x0, quant_slack=slack)
    rng = np.random.default_rng(4)
    pts = (lo + torch.tensor(rng.random((N, *shape))) * (hi - lo)).float().numpy()
    ties = scaled_ties(model[0].spec.scale[0], -128, 128)
    ties_in = ties[(ties.astype(np.float64) >= lo.numpy().min()) & (ties.astype(np.float64) <= hi.numpy().max())]
    flat = pts.reshape(N, -1)
    lo_f, hi_f = lo.numpy().reshape(-1), hi.numpy().reshape(-1)
    for i in range(0, N, 4):                     # put ties of the input grid into a quarter of the samples
        j = rng.integers(0, flat.shape[1])
        cand = ties_in[(ties_in >= lo_f[j]) & (ties_in <= hi_f[j])]
        if len(cand):
            flat[i, j] = rng.choice(cand)
    y = torch.tensor(run_onnxruntime(path, pts), dtype=torch.float64)
    np.testing.assert_array_equal(integer_forward(model, as64(pts)).numpy().astype(np.float32), y.numpy())
    ptb = auto_lirpa.PerturbationLpNorm(norm=float("inf"), x_L=lo, x_U=hi)
    for method in ["IBP", "CROWN"]:
        lb, ub = bm.compute_bounds(x=(auto_lirpa.BoundedTensor(x0, ptb),), method=method)
        assert (lb.double() <= y.min(0).values).all(), method
        assert (ub.double() >= y.max(0).values).all(), method


def test_exact_semantics_mode():
    """requant="exact": plain QuantAct (exact rational rescaling, the bias at its declared scale).
    It is the real-number semantics of the QDQ graph; onnxruntime's float32 kernels agree with it
    except next to rounding ties."""
    path, shape = quantize_static_model("mlp", True)
    model = load_onnx(path, requant="exact")
    assert not any(isinstance(m, Float32Requant) for m in model)
    assert sum(isinstance(m, QuantAct) for m in model) >= 3
    x = inputs(shape, N, model[0].spec, seed=1)
    r = integer_forward(model, as64(x)).numpy().astype(np.float32)
    for optimize in (True, False):
        y = run_onnxruntime(path, x, optimize=optimize)
        assert (r != y).any(axis=1).sum() <= N // 1000


def _has_vnni() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return any(f in flags for f in (" avx512_vnni", " avx_vnni", " amx_int8"))


def test_full_range_weights_warn_about_int8_saturation():
    """Without reduce_range, 8-bit weights reach |code| > 64: onnxruntime's u8s8 kernels on AVX2
    CPUs (no VNNI) saturate int16 pair sums, so it no longer computes the ONNX semantics. The import
    says so; on CPUs with VNNI the outputs agree exactly."""
    path, shape = quantize_static_model("mlp", False, reduce_range=False)
    with pytest.warns(OnnxExactnessWarning, match="VNNI"):
        model = load_onnx(path)
    if platform.machine() not in ("x86_64", "AMD64") or not _has_vnni():
        pytest.skip("this CPU's int8 kernels may saturate: no exact comparison with onnxruntime")
    x = inputs(shape, N, model[0].spec)
    np.testing.assert_array_equal(integer_forward(model, as64(x)).numpy().astype(np.float32),
                                  run_onnxruntime(path, x))


def test_bounds_cover_a_float32_requantization_flip():
    """At accumulator 60559 onnxruntime's float32 requantization gives code 82 where exact
    arithmetic gives 81. IBP with required_quant_slack covers it; CROWN needs the tolerance inside
    its relaxation (fake_quant's ``tol``), and is checked when that is available."""
    import onnx_graphs as graphs
    from onnx_helpers import save
    from qa_lirpa.onnx import ort_layers

    path = save(graphs.requant_flip(), "requant_flip.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("error", OnnxExactnessWarning)   # one weight: no int16 pair to saturate
        model = load_onnx(path)
    assert [type(m) for m in model] == [Float32QuantInput, QuantLinear, Float32Requant]
    s_x = model[0].spec.scale[0]
    x_top = np.array([[300 * s_x]], np.float32)                 # code 255, accumulator 60559
    y_top = run_onnxruntime(path, x_top)
    exact = load_onnx(path, requant="exact")
    assert integer_forward(model, as64(x_top)).numpy().astype(np.float32) == y_top
    assert integer_forward(exact, as64(x_top)).numpy().astype(np.float32) < y_top     # one code less
    al = import_auto_lirpa()
    lo, hi = as64([[250 * s_x]]), as64([[300 * s_x]])
    x0 = (lo + hi) / 2
    pts = np.linspace(250 * s_x, 300 * s_x, 2001, dtype=np.float32).reshape(-1, 1)
    y = torch.tensor(run_onnxruntime(path, pts), dtype=torch.float64)
    assert float(y.max()) == float(y_top.max())
    methods = ["IBP", "CROWN"] if ort_layers._FQ_TOL else ["IBP"]
    for quant_slack in ([1e-6] if ort_layers._FQ_TOL else []) + [required_quant_slack(model)]:
        bm = qa_lirpa.bounded_module(model, x0, quant_slack=quant_slack)
        ptb = al.PerturbationLpNorm(norm=float("inf"), x_L=lo, x_U=hi)
        for method in methods:
            lb, ub = bm.compute_bounds(x=(al.BoundedTensor(x0, ptb),), method=method)
            assert (lb.double() <= y.min(0).values).all() and (ub.double() >= y.max(0).values).all(), \
                (method, quant_slack)
