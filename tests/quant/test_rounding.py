"""Rounding functions against an exact Fraction reference, at ties and one ulp around them."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qa_lirpa.quant import round_half_down, round_half_even, round_half_up, round_mode

from .exact import round_frac

FUNCS = {"half_even": round_half_even, "half_up": round_half_up, "half_down": round_half_down}
DTYPES = [torch.float32, torch.float64]


def _check(values, dtype, mode):
    """Run the library rounding on ``values`` (Python floats exactly representable in ``dtype``)
    and compare every element with the exact reference."""
    t = torch.tensor(values, dtype=dtype)
    # the tensor must hold the values exactly, otherwise the reference is about other numbers
    assert [Fraction(v) for v in t.tolist()] == [Fraction(v) for v in values]
    out = FUNCS[mode](t)
    assert out.dtype == dtype
    got = out.tolist()
    want = [round_frac(Fraction(v), mode) for v in values]
    bad = [(v, g, w) for v, g, w in zip(values, got, want) if g != w]
    assert not bad, f"{mode} {dtype}: (input, got, expected) {bad[:10]}"


def test_reference_sanity():
    # hand-checked values for the reference itself
    half = Fraction(1, 2)
    table = {
        Fraction(5, 2): (2, 3, 2), Fraction(-5, 2): (-2, -2, -3), Fraction(1, 2): (0, 1, 0),
        -half: (0, 0, -1), Fraction(3, 2): (2, 2, 1), Fraction(-3, 2): (-2, -1, -2),
        Fraction(7, 3): (2, 2, 2), Fraction(-7, 3): (-2, -2, -2), Fraction(8, 3): (3, 3, 3),
        Fraction(0): (0, 0, 0), Fraction(-1, 4): (0, 0, 0), Fraction(-3, 4): (-1, -1, -1),
    }
    for v, (even, up, down) in table.items():
        assert (round_frac(v, "half_even"), round_frac(v, "half_up"), round_frac(v, "half_down")) == \
            (even, up, down), v


TIES = [k + 0.5 for k in range(-9, 9)] + [-1000.5, 1000.5, 2 ** 20 + 0.5, -(2 ** 20) - 0.5]


@pytest.mark.parametrize("dtype", DTYPES)
def test_ties_half_even(dtype):
    t = torch.tensor(TIES, dtype=dtype)
    got = round_half_even(t).tolist()
    for v, g in zip(TIES, got):
        lo = math.floor(v)
        assert g == (lo if lo % 2 == 0 else lo + 1), v
    # explicit spot checks
    assert round_half_even(torch.tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5], dtype=dtype)).tolist() == \
        [-2.0, -2.0, -0.0, 0.0, 2.0, 2.0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_ties_half_up(dtype):
    t = torch.tensor(TIES, dtype=dtype)
    got = round_half_up(t).tolist()
    for v, g in zip(TIES, got):
        assert g == v + 0.5, v          # ties go towards +inf, also for negatives
    assert round_half_up(torch.tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5], dtype=dtype)).tolist() == \
        [-2.0, -1.0, 0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_ties_half_down(dtype):
    t = torch.tensor(TIES, dtype=dtype)
    got = round_half_down(t).tolist()
    for v, g in zip(TIES, got):
        assert g == v - 0.5, v          # ties go towards -inf
    assert round_half_down(torch.tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5], dtype=dtype)).tolist() == \
        [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0]


def _nextafter(v: float, toward: float, dtype) -> float:
    if dtype == torch.float64:
        return math.nextafter(v, toward)
    return float(np.nextafter(np.float32(v), np.float32(toward)))


def _around_ties(dtype, k_range=range(-6, 6), ulps=3):
    vals = []
    for k in k_range:
        for tie in (k + 0.5, float(k)):
            vals.append(tie)
            lo = hi = tie
            for _ in range(ulps):
                lo = _nextafter(lo, -math.inf, dtype)
                hi = _nextafter(hi, math.inf, dtype)
                vals += [lo, hi]
    return vals


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", list(FUNCS))
def test_one_ulp_around_ties(dtype, mode):
    _check(_around_ties(dtype), dtype, mode)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", list(FUNCS))
def test_one_ulp_around_large_ties(dtype, mode):
    # ties close to the end of the exactly representable half-integers
    top = 2.0 ** 52 if dtype == torch.float64 else 2.0 ** 23
    vals = []
    for base in (top / 2 - 0.5, top - 1.5, top - 0.5, -(top - 0.5), -(top / 2 - 0.5), top, 2 * top, -top):
        vals += [base, _nextafter(base, math.inf, dtype), _nextafter(base, -math.inf, dtype)]
    _check(vals, dtype, mode)


@pytest.mark.parametrize("mode", list(FUNCS))
def test_largest_double_below_half_positive(mode):
    v = 0.49999999999999994
    assert v == math.nextafter(0.5, 0.0)
    # floor(v + 0.5) in float would give 1; exact rounding gives 0 in every mode
    assert v + 0.5 == 1.0
    _check([v], torch.float64, mode)


@pytest.mark.parametrize("mode", list(FUNCS))
def test_largest_double_below_half_negative(mode):
    # -0.49999999999999994: exactly -1/2 + 2^-54, so every mode must give 0
    # (half_down: ceil(-1 + 2^-54) = 0).
    _check([-0.49999999999999994], torch.float64, mode)


@pytest.mark.parametrize("mode", list(FUNCS))
def test_largest_float32_below_half(mode):
    v = float(np.nextafter(np.float32(0.5), np.float32(0.0)))
    assert Fraction(v) == Fraction(1, 2) - Fraction(1, 2 ** 25)
    _check([v, -v], torch.float32, mode)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1, max_size=40),
       st.sampled_from(list(FUNCS)))
def test_random_float64(values, mode):
    _check(values, torch.float64, mode)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=-1e5, max_value=1e5, allow_nan=False, width=32), min_size=1, max_size=40),
       st.sampled_from(list(FUNCS)))
def test_random_float32(values, mode):
    _check(values, torch.float32, mode)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(-(2 ** 20), 2 ** 20), st.sampled_from([0.5, 0.0]),
                          st.integers(-4, 4)), min_size=1, max_size=30),
       st.sampled_from(list(FUNCS)), st.sampled_from(DTYPES))
def test_random_near_ties(items, mode, dtype):
    # k + 1/2 (or k) moved by a few ulps
    vals = []
    for k, frac, steps in items:
        v = k + frac
        toward = math.inf if steps > 0 else -math.inf
        for _ in range(abs(steps)):
            v = _nextafter(v, toward, dtype)
        vals.append(v)
    _check(vals, dtype, mode)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=-1.0, max_value=1.0, allow_nan=False), min_size=1, max_size=40),
       st.sampled_from(list(FUNCS)))
def test_random_small_magnitude(values, mode):
    # values in (-1, 1) are where floor(v) and v have different exponents
    _check(values, torch.float64, mode)


def test_round_mode_dispatch():
    t = torch.tensor([-2.5, -0.5, 0.5, 1.5, 2.5, 0.49999999999999994], dtype=torch.float64)
    up = [-2.0, 0.0, 1.0, 2.0, 3.0, 0.0]
    even = [-2.0, 0.0, 0.0, 2.0, 2.0, 0.0]
    assert round_mode(t, "half_up").tolist() == up
    assert round_mode(t, 1).tolist() == up
    assert round_mode(t, "half_even").tolist() == even
    assert round_mode(t, 0).tolist() == even
    assert round_mode(t, "half_down").tolist() == round_mode(t, 2).tolist() == [-3.0, -1.0, 0.0, 1.0, 2.0, 0.0]
    assert round_mode(t, "down").tolist() == round_mode(t, 3).tolist() == [-3.0, -1.0, 0.0, 1.0, 2.0, 0.0]
    assert round_mode(t, "up").tolist() == round_mode(t, 4).tolist() == [-2.0, 0.0, 1.0, 2.0, 3.0, 1.0]
    with pytest.raises(ValueError):
        round_mode(t, "nearest")
    with pytest.raises(ValueError):
        round_mode(t, 5)
