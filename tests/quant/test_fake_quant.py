"""fake_quant / quantize / dequantize against an exact Fraction reference, and the STE gradient."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qa_lirpa.quant import QuantSpec, dequantize, fake_quant, quantize

from .exact import fake_quant_frac, round_frac

BITS = [2, 4, 6, 8, 16]
MODES = ["half_even", "half_up", "half_down", "down", "up"]


def _channel_params(spec: QuantSpec, channels: int):
    scales = list(spec.scale) * channels if len(spec.scale) == 1 else list(spec.scale)
    zps = list(spec.zero_point) * channels if len(spec.zero_point) == 1 else list(spec.zero_point)
    return scales, zps


def _reference(x: torch.Tensor, spec: QuantSpec, axis: int | None) -> list[Fraction]:
    """Elementwise exact reference, channel of each element read from its index along ``axis``."""
    flat = x.reshape(-1).tolist()
    if axis is None:
        idx = [0] * len(flat)
        channels = 1
    else:
        ax = axis % x.dim()
        channels = x.shape[ax]
        grid = torch.arange(channels).reshape([-1 if d == ax else 1 for d in range(x.dim())]).expand_as(x)
        idx = grid.reshape(-1).tolist()
    scales, zps = _channel_params(spec, channels)
    return [fake_quant_frac(v, scales[c], zps[c], spec.qmin, spec.qmax, spec.rounding) for v, c in zip(flat, idx)]


def _codes_reference(x: torch.Tensor, spec: QuantSpec) -> list[int]:
    s = Fraction(spec.scale[0])
    z = spec.zero_point[0]
    return [min(max(round_frac(Fraction(v) / s, spec.rounding) + z, spec.qmin), spec.qmax)
            for v in x.reshape(-1).tolist()]


def _assert_exact(out: torch.Tensor, want: list[Fraction]):
    got = [Fraction(v) for v in out.reshape(-1).tolist()]
    bad = [(i, float(g), float(w)) for i, (g, w) in enumerate(zip(got, want)) if g != w]
    assert not bad, f"(index, got, expected): {bad[:10]}"


@st.composite
def per_tensor_case(draw, dtype=torch.float64):
    bits = draw(st.sampled_from(BITS))
    signed = draw(st.booleans())
    rounding = draw(st.sampled_from(MODES))
    e = draw(st.integers(-10, 3))
    s = 2.0 ** e
    probe = QuantSpec(bits, signed=signed)
    lo_z, hi_z = max(probe.qmin, -40), min(probe.qmax, 40)
    z = draw(st.integers(lo_z, hi_z))
    spec = QuantSpec(bits, signed=signed, scale=s, zero_point=z, rounding=rounding)
    # integer steps k around (and beyond) the code range, as ties (k + 1/2) s, exact grid points k s,
    # and random offsets
    k_lo, k_hi = spec.qmin - z - 3, spec.qmax - z + 3
    ks = draw(st.lists(st.integers(k_lo, k_hi), min_size=1, max_size=24))
    offs = draw(st.lists(st.sampled_from([0.5, 0.0, 0.25, 0.75, -0.5, 0.5]), min_size=len(ks), max_size=len(ks)))
    extra = draw(st.lists(st.floats(min_value=(k_lo - 2) * s, max_value=(k_hi + 2) * s, allow_nan=False,
                                    width=32 if dtype == torch.float32 else 64), max_size=12))
    vals = [(k + o) * s for k, o in zip(ks, offs)] + extra
    return spec, vals


@settings(max_examples=150, deadline=None)
@given(per_tensor_case())
def test_per_tensor_float64(case):
    spec, vals = case
    x = torch.tensor(vals, dtype=torch.float64)
    assert [Fraction(v) for v in x.tolist()] == [Fraction(v) for v in vals]
    out = fake_quant(x, spec)
    assert out.dtype == torch.float64
    _assert_exact(out, _reference(x, spec, None))
    # quantize gives the integer codes, dequantize maps them back to the fake-quant values
    codes = quantize(x, spec)
    assert codes.dtype == torch.int64
    assert codes.tolist() == _codes_reference(x, spec)
    assert torch.equal(dequantize(codes, spec), out)


@settings(max_examples=150, deadline=None)
@given(per_tensor_case(torch.float32))
def test_per_tensor_float32(case):
    spec, vals = case
    x = torch.tensor(vals, dtype=torch.float32)
    # the drawn values (at most 18 significant bits) are exactly representable in float32
    assert [Fraction(v) for v in x.tolist()] == [Fraction(v) for v in vals]
    out = fake_quant(x, spec)
    assert out.dtype == torch.float32
    _assert_exact(out, _reference(x, spec, None))


@pytest.mark.parametrize("rounding", MODES)
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("signed", [False, True])
def test_exact_ties_every_code(rounding, bits, signed):
    """x = (k + 1/2) s for every k in (and just outside) the code range, with a zero point."""
    s = 2.0 ** -3
    probe = QuantSpec(bits, signed=signed)
    z = probe.qmin + 1 if not signed else -1
    spec = QuantSpec(bits, signed=signed, scale=s, zero_point=z, rounding=rounding)
    ks = range(spec.qmin - z - 2, spec.qmax - z + 2)
    if bits == 16:
        ks = [k for k in ks if k % 97 == 0 or abs(k) < 40 or k > spec.qmax - z - 40 or k < spec.qmin - z + 40]
    x = torch.tensor([(k + 0.5) * s for k in ks], dtype=torch.float64)
    out = fake_quant(x, spec)
    _assert_exact(out, _reference(x, spec, None))
    # direct check of the tie direction inside the range
    for k, v in zip(ks, out.tolist()):
        if spec.qmin <= k + z and k + 1 + z <= spec.qmax:
            want = {"half_up": k + 1, "half_down": k, "down": k, "up": k + 1,
                    "half_even": k if k % 2 == 0 else k + 1}[rounding]
            assert v == want * s


@st.composite
def per_channel_case(draw):
    bits = draw(st.sampled_from(BITS))
    signed = draw(st.booleans())
    rounding = draw(st.sampled_from(MODES))
    channels = draw(st.integers(2, 5))
    exps = draw(st.lists(st.integers(-8, 2), min_size=channels, max_size=channels))
    probe = QuantSpec(bits, signed=signed)
    zps = draw(st.lists(st.integers(max(probe.qmin, -20), min(probe.qmax, 20)), min_size=channels,
                        max_size=channels))
    axis = draw(st.sampled_from([0, 1]))
    n = draw(st.integers(1, 8))
    spec = QuantSpec(bits, signed=signed, scale=[2.0 ** e for e in exps], zero_point=zps, axis=axis,
                     rounding=rounding)
    shape = (channels, n) if axis == 0 else (n, channels)
    # integer offsets k (ties (k + 1/2) s_c and grid points) with the channel's own scale
    span = spec.qmax - spec.qmin + 6
    ks = draw(st.lists(st.integers(-span, span), min_size=channels * n, max_size=channels * n))
    halves = draw(st.lists(st.sampled_from([0.5, 0.0, 0.5, 0.25]), min_size=channels * n,
                           max_size=channels * n))
    k = torch.tensor(ks, dtype=torch.float64).reshape(shape) + torch.tensor(halves, dtype=torch.float64).reshape(shape)
    s = torch.tensor([2.0 ** e for e in exps], dtype=torch.float64)
    s = s.reshape(-1, 1) if axis == 0 else s.reshape(1, -1)
    return spec, k * s


@settings(max_examples=120, deadline=None)
@given(per_channel_case())
def test_per_channel(case):
    spec, x = case
    out = fake_quant(x, spec)
    _assert_exact(out, _reference(x, spec, spec.axis))
    codes = quantize(x, spec)
    assert torch.equal(dequantize(codes, spec), out)


@pytest.mark.parametrize("rounding", MODES)
def test_per_channel_3d_axis1_and_negative_axis(rounding):
    g = torch.Generator().manual_seed(3)
    scales = [0.5, 0.125, 2.0]
    zps = [3, 0, 250]
    x = (torch.randint(-400, 800, (2, 3, 5), generator=g).double() / 2) * torch.tensor(scales).reshape(1, 3, 1)
    for axis in (1, -2):
        spec = QuantSpec(8, signed=False, scale=scales, zero_point=zps, axis=axis, rounding=rounding)
        _assert_exact(fake_quant(x, spec), _reference(x, spec, axis))


@pytest.mark.parametrize("rounding", MODES)
@pytest.mark.parametrize("scale", [0.1, 0.0123, 0.3, 1.7])
def test_non_power_of_two_away_from_ties(rounding, scale):
    """With a non-power-of-two scale the float division is inexact, but away from ties the codes
    are the exact ones and the dequantized value is the correctly rounded exact product."""
    g = torch.Generator().manual_seed(11)
    spec = QuantSpec(8, signed=True, scale=scale, zero_point=-5, rounding=rounding)
    x = (torch.rand(400, generator=g, dtype=torch.float64) - 0.5) * 300 * scale
    vals = x.tolist()
    far = []
    for v in vals:
        q = Fraction(v) / Fraction(scale)
        d = abs((q - math.floor(q)) - Fraction(1, 2))
        far.append(d > Fraction(1, 10 ** 9))
    assert sum(far) > 390
    out = fake_quant(x, spec)
    want = _reference(x, spec, None)
    for v, o, w, ok in zip(vals, out.tolist(), want, far):
        if ok:
            assert o == float(w), v


# --------------------------------------------------------------------------------------------
# straight-through estimator


def _ste_inputs(lo: float, hi: float, dtype) -> list[float]:
    def nxt(v, toward):
        if dtype == torch.float64:
            return math.nextafter(v, toward)
        return float(np.nextafter(np.float32(v), np.float32(toward)))

    mid = (lo + hi) / 2
    return [lo, hi, nxt(lo, -math.inf), nxt(lo, math.inf), nxt(hi, -math.inf), nxt(hi, math.inf),
            mid, lo - 1000.0, hi + 1000.0, lo - abs(hi - lo), hi + abs(hi - lo), 0.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bits,signed,zp,e", [(8, False, 0, -4), (8, False, 7, -4), (8, True, 0, -7),
                                               (4, True, -3, 0), (2, True, 1, 2), (16, False, 100, -8),
                                               (6, True, 5, -5)])
@pytest.mark.parametrize("rounding", MODES)
def test_ste_per_tensor(dtype, bits, signed, zp, e, rounding):
    s = 2.0 ** e
    spec = QuantSpec(bits, signed=signed, scale=s, zero_point=zp, rounding=rounding)
    lo_f = (spec.qmin - zp) * Fraction(s)
    hi_f = (spec.qmax - zp) * Fraction(s)
    vals = _ste_inputs(float(lo_f), float(hi_f), dtype)
    x = torch.tensor(vals, dtype=dtype, requires_grad=True)
    xs = [Fraction(v) for v in x.detach().tolist()]
    up = torch.linspace(-3.0, 5.0, len(vals), dtype=dtype)   # non-trivial upstream gradient
    (fake_quant(x, spec) * up).sum().backward()
    want = [u if lo_f <= v <= hi_f else 0.0 for v, u in zip(xs, up.tolist())]
    assert x.grad.tolist() == want
    # both ends are inclusive, one ulp outside is not
    assert x.grad[0] == up[0] and x.grad[1] == up[1]
    assert x.grad[2] == 0 and x.grad[5] == 0
    assert x.grad[3] == up[3] and x.grad[4] == up[4]


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ste_per_channel(axis, dtype):
    scales = [2.0 ** -2, 2.0 ** -5, 1.0]
    zps = [-4, 0, 9]
    spec = QuantSpec(6, signed=True, scale=scales, zero_point=zps, axis=axis, rounding="half_up")
    cols = []
    for s, z in zip(scales, zps):
        lo = (spec.qmin - z) * Fraction(s)
        hi = (spec.qmax - z) * Fraction(s)
        cols.append(_ste_inputs(float(lo), float(hi), dtype))
    base = torch.tensor(cols, dtype=dtype)          # [channel, n]
    data = base if axis == 0 else base.t().contiguous()
    x = data.clone().requires_grad_(True)
    g = torch.Generator().manual_seed(5)
    up = torch.randn(x.shape, generator=g, dtype=dtype)
    (fake_quant(x, spec) * up).sum().backward()
    grad = x.grad if axis == 0 else x.grad.t()
    upc = up if axis == 0 else up.t()
    for c, (s, z) in enumerate(zip(scales, zps)):
        lo = (spec.qmin - z) * Fraction(s)
        hi = (spec.qmax - z) * Fraction(s)
        for j, v in enumerate(base[c].tolist()):
            inside = lo <= Fraction(v) <= hi
            assert grad[c, j].item() == (upc[c, j].item() if inside else 0.0), (c, j, v)
    # the per-channel range matters: channel 2's upper end lies outside channel 1's range
    hi2 = float((spec.qmax - zps[2]) * Fraction(scales[2]))
    hi1 = float((spec.qmax - zps[1]) * Fraction(scales[1]))
    assert hi2 > hi1


def test_ste_gradient_matches_dequant_range_non_power_of_two():
    """With a non-power-of-two scale the range ends are the float products (qmin - z) s, (qmax - z) s;
    inputs exactly at those floats get gradient 1."""
    spec = QuantSpec(8, signed=True, scale=0.1, zero_point=3)
    lo, hi = spec.dequant_range(torch.zeros((), dtype=torch.float64))
    x = torch.tensor([lo.item(), hi.item(), math.nextafter(lo.item(), -math.inf),
                      math.nextafter(hi.item(), math.inf)], dtype=torch.float64, requires_grad=True)
    fake_quant(x, spec).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0, 0.0]


def test_fake_quant_value_is_saturated_outside():
    spec = QuantSpec(4, signed=True, scale=0.5, zero_point=0, rounding="half_up")
    x = torch.tensor([-100.0, -4.25, -4.0, 3.5, 3.75, 100.0], dtype=torch.float64)
    # codes [-8, 7] -> reals [-4, 3.5]; -4.25/0.5 = -8.5 -> half up -8 (in range)
    assert fake_quant(x, spec).tolist() == [-4.0, -4.0, -4.0, 3.5, 3.5, 3.5]
