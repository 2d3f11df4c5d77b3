"""Where float32 stops being exact (accumulators beyond 2^24) and where the exact float64 products of
the integer reference stop (bound 2^53)."""
from __future__ import annotations

from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qa_lirpa.nn import QuantInput, QuantLinear, integer_codes, integer_forward
from qa_lirpa.quant import QuantSpec, intmath, quantize

FAN_IN = 4096


def _big_fan_in_model(seed: int) -> tuple[nn.Sequential, torch.Tensor]:
    """8-bit pixels (scale 1), 8-bit weights (scale 2^-7) near their maximum, fan-in 4096, the last
    layer keeps its accumulator (no rounding after it)."""
    g = torch.Generator().manual_seed(seed)
    ins = QuantSpec(8, False, 1.0, rounding="half_up")
    ws = QuantSpec(8, True, 2.0 ** -7, rounding="half_up")
    lin = QuantLinear(FAN_IN, 8, ws, bias=False)
    codes = torch.randint(90, 128, (8, FAN_IN), generator=g).double()
    sign = torch.where(torch.rand(8, FAN_IN, generator=g) < 0.1, -1.0, 1.0).double()
    with torch.no_grad():
        lin.weight.copy_((codes * sign * 2.0 ** -7).float())
    model = nn.Sequential(QuantInput(ins), lin)
    x = torch.randint(200, 256, (4, FAN_IN), generator=g).double()
    return model, x


def test_float32_forward_inexact_float64_exact():
    model, x = _big_fan_in_model(seed=0)
    # the accumulator (in units of s_in * s_w = 2^-7) really goes beyond 2^24
    codes = integer_codes(model, x)
    assert codes.scale == [Fraction(1, 128)] * 8
    assert codes.values.abs().max().item() > 2 ** 24
    # ... and stays far below 2^53, so float64 is exact
    w_codes = quantize(model[1].weight.detach(), model[1].weight_spec)
    assert 255 * w_codes.abs().max().item() * FAN_IN < 2 ** 53

    exact = integer_forward(model, x)
    # independent exact value of the accumulator: Python integers
    xs = x.to(torch.int64).tolist()
    wl = w_codes.tolist()
    for n in range(2):
        for o in range(8):
            acc = sum(a * b for a, b in zip(xs[n], wl[o]))
            assert exact[n, o].item() == acc * 2.0 ** -7

    with torch.no_grad():
        y64 = model.double()(x)
        assert torch.equal(y64, exact)
        y32 = model.float()(x.float())
    # float32 loses the low bits of these sums: the outputs are not the exact ones
    assert not torch.equal(y32.double(), exact)
    diff = (y32.double() - exact).abs()
    assert diff.max().item() >= 2.0 ** -7
    # ... but they are close in relative terms (it is rounding, not a wrong formula)
    assert (diff / exact.abs()).max().item() < 1e-5


def test_float32_forward_exact_when_small():
    """The same layer with a small fan-in (accumulators < 2^24) is exact in float32."""
    model, x = _big_fan_in_model(seed=1)
    small = QuantLinear(64, 8, model[1].weight_spec, bias=False)
    with torch.no_grad():
        small.weight.copy_(model[1].weight[:, :64])
    m = nn.Sequential(model[0], small)
    xs = x[:, :64]
    assert integer_codes(m, xs).values.abs().max().item() < 2 ** 24
    with torch.no_grad():
        y32 = m.float()(xs.float())
    assert torch.equal(y32.double(), integer_forward(m, xs))


def test_exact_float_matmul_overflow_bound():
    a = torch.full((1, 8), 2 ** 25, dtype=torch.int64)
    b = torch.full((1, 8), 2 ** 25, dtype=torch.int64)
    with pytest.raises(OverflowError):
        intmath.exact_float_matmul(F.linear, a, b, 8)                # bound 2^53
    ok = intmath.exact_float_matmul(F.linear, a, b - 1, 8)           # bound 2^53 - 2^28
    assert ok.item() == 8 * 2 ** 25 * (2 ** 25 - 1)


def test_integer_forward_raises_when_accumulator_bound_exceeds_2_53():
    """16-bit inputs, 32-bit weights, fan-in 128: 65535 * (2^31 - 1) * 128 > 2^53."""
    ins = QuantSpec(16, False, 1.0)
    ws = QuantSpec(32, True, 1.0)
    lin = QuantLinear(128, 2, ws, bias=False).double()
    with torch.no_grad():
        lin.weight.fill_(2.0 ** 31 - 1)
    model = nn.Sequential(QuantInput(ins), lin).double()
    x = torch.full((1, 128), 65535.0, dtype=torch.float64)
    with pytest.raises(OverflowError):
        integer_forward(model, x)
    # with small inputs the same layer is fine (the bound uses the actual maxima) and exact
    x_small = torch.full((1, 128), 3.0, dtype=torch.float64)
    y = integer_forward(model, x_small)
    assert y.tolist() == [[float(3 * (2 ** 31 - 1) * 128)] * 2]
