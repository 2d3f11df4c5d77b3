"""The onnxruntime-emulating quantizers: where they differ from exact arithmetic, and that the
difference stays inside their declared float32 tolerance (what makes IBP with that slack sound)."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from qa_lirpa import QuantSpec
from qa_lirpa.nn import IntTensor, QuantAct
from qa_lirpa.onnx.ort_layers import Float32QuantInput, Float32Requant, required_quant_slack
from qa_lirpa.quant.functions import round_half_down, round_half_up

from onnx_helpers import as64


def _acc(values: torch.Tensor, scale: float) -> IntTensor:
    return IntTensor(values.reshape(-1, 1), [Fraction(scale)], [0], axis=1)


@pytest.mark.parametrize("s_x,s_w,s_y,zp", [(0.0039214, 0.00731, 0.0213, -128), (0.0151, 0.00412, 0.0477, 0),
                                            (0.5, 0.0078125, 0.03125, 3)])
def test_float32_requant_against_exact(s_x, s_w, s_y, zp):
    s_x, s_w, s_y = (float(np.float32(v)) for v in (s_x, s_w, s_y))
    spec = QuantSpec(8, True, s_y, zp)
    acc_scale = s_x * s_w                                       # exact in float64
    f32 = Float32Requant(spec, [acc_scale])
    exact = QuantAct(spec)
    m = float(Fraction(acc_scale) / Fraction(s_y))
    lim = int((spec.qmax - spec.qmin + 4) / m)
    acc = torch.arange(-lim, lim + 1, dtype=torch.int64)
    q32 = f32.int_forward(_acc(acc, acc_scale)).values.reshape(-1)
    qex = exact.int_forward(_acc(acc, acc_scale)).values.reshape(-1)
    diff = (q32 != qex).sum().item()
    pow2 = all(float(np.frexp(v)[0]) == 0.5 for v in (s_x, s_w, s_y))
    if pow2:
        assert diff == 0
    # inside the tolerance: nominal value widened by float32_tolerance steps brackets the code
    v = acc.double() * (acc_scale / s_y)
    tol = f32.float32_tolerance
    lo = torch.clamp(round_half_down(v - tol) + zp, spec.qmin, spec.qmax)
    hi = torch.clamp(round_half_up(v + tol) + zp, spec.qmin, spec.qmax)
    assert ((q32 >= lo) & (q32 <= hi)).all()
    assert (q32 - qex).abs().max() <= 1
    # the float forward reproduces the integer step
    y = acc.double().reshape(-1, 1) * acc_scale
    with torch.no_grad():
        out = f32(y).reshape(-1)
    assert torch.equal(out, (q32.double() - zp) * s_y)


def test_float32_requant_differs_from_exact_somewhere():
    """Exhaustively over int32 accumulators of a typical layer: onnxruntime's float32 multiplier
    flips codes next to ties, so the exact rational rescaling alone would not reproduce it."""
    s_x, s_w, s_y = (float(np.float32(v)) for v in (0.0039214, 0.00731, 0.0213))
    spec = QuantSpec(8, True, s_y, -128)
    acc = torch.arange(-(1 << 20), 1 << 20, dtype=torch.int64)
    a = Float32Requant(spec, [s_x * s_w]).int_forward(_acc(acc, s_x * s_w)).values
    b = QuantAct(spec).int_forward(_acc(acc, s_x * s_w)).values
    assert 0 < (a != b).sum().item() < 100


def test_float32_input_tolerance_and_gradients():
    spec = QuantSpec(8, False, float(np.float32(0.0123)), 7)
    q_in = Float32QuantInput(spec, program=[("sub", (0.1307,)), ("div", (0.3081,)), ("div", (spec.scale[0],))])
    a, b = q_in.affine()
    rng = np.random.default_rng(0)
    ties = ((np.arange(-10, 260) - 7 + 0.5) * spec.scale[0] * 0.3081 + 0.1307).astype(np.float32)
    x = np.concatenate([ties, np.nextafter(ties, np.float32(1)), np.nextafter(ties, np.float32(-1)),
                        rng.random(3000).astype(np.float32) * 2 - 0.5])
    xt = as64(x)
    codes = q_in.codes(xt)
    v = xt * a[0] + b[0]
    tol = q_in.float32_tolerance
    lo = torch.clamp(round_half_down(v - tol) + 7, 0, 255)
    hi = torch.clamp(round_half_up(v + tol) + 7, 0, 255)
    assert ((codes >= lo) & (codes <= hi)).all()
    assert (codes != torch.clamp(torch.round(v) + 7, 0, 255)).any()     # float32 matters here
    # straight-through gradients (1 inside the range), values of the emulation
    xg = xt.clone().requires_grad_(True)
    y = q_in(xg)
    assert torch.equal(y.detach(), (codes.double() - 7) * spec.scale[0])
    y.sum().backward()
    assert xg.grad.abs().sum() > 0
    assert required_quant_slack(torch.nn.Sequential(q_in)) == tol


def test_float32_requant_rejects_mismatched_accumulator():
    spec = QuantSpec(8, True, float(np.float32(0.02)))
    layer = Float32Requant(spec, [0.001])
    with pytest.raises(ValueError, match="acc_scale"):
        layer.int_forward(_acc(torch.arange(5), 0.002))
