"""intmath: round_div, rescale (int64 and Python-int paths), common_scale, exact_float_matmul."""
from __future__ import annotations

import math
from fractions import Fraction
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from qa_lirpa.quant import intmath

from .exact import round_frac

MODES = ["half_even", "half_up", "half_down", "down", "up"]
TIE = {"half_up": lambda k: k + 1, "half_down": lambda k: k, "down": lambda k: k, "up": lambda k: k + 1,
       "half_even": lambda k: k if k % 2 == 0 else k + 1}   # the value of k + 1/2
I64 = st.integers(-(2 ** 62), 2 ** 62)


# ----- round_div ------------------------------------------------------------------------------

@settings(max_examples=120, deadline=None)
@given(st.lists(st.integers(-(2 ** 50), 2 ** 50), min_size=1, max_size=30), st.integers(1, 2 ** 12),
       st.sampled_from(MODES))
def test_round_div_tensor(nums, den, mode):
    out = intmath.round_div(torch.tensor(nums, dtype=torch.int64), den, mode)
    assert out.dtype == torch.int64
    assert out.tolist() == [round_frac(Fraction(n, den), mode) for n in nums]


@settings(max_examples=120, deadline=None)
@given(st.lists(st.tuples(st.integers(-(2 ** 40), 2 ** 40), st.integers(1, 2 ** 20)), min_size=1, max_size=30),
       st.sampled_from(MODES))
def test_round_div_tensor_per_element_den(pairs, mode):
    nums = torch.tensor([p[0] for p in pairs], dtype=torch.int64)
    dens = torch.tensor([p[1] for p in pairs], dtype=torch.int64)
    out = intmath.round_div(nums, dens, mode)
    assert out.tolist() == [round_frac(Fraction(n, d), mode) for n, d in pairs]


@settings(max_examples=120, deadline=None)
@given(st.lists(st.tuples(st.integers(-(2 ** 30), 2 ** 30), st.integers(1, 2 ** 15)), min_size=1, max_size=30),
       st.sampled_from(MODES))
def test_round_div_ties(pairs, mode):
    # num = k * (2h) + h: exactly k + 1/2
    nums, dens = [], []
    for k, h in pairs:
        nums.append(k * 2 * h + h)
        dens.append(2 * h)
    out = intmath.round_div(torch.tensor(nums), torch.tensor(dens), mode)
    for (k, _), got in zip(pairs, out.tolist()):
        assert got == TIE[mode](k)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(-(2 ** 200), 2 ** 200), min_size=1, max_size=20), st.integers(1, 2 ** 120),
       st.sampled_from(MODES))
def test_round_div_object_array_and_python_ints(nums, den, mode):
    arr = np.empty(len(nums), dtype=object)
    arr[:] = nums
    out = intmath.round_div(arr, den, mode)
    want = [round_frac(Fraction(n, den), mode) for n in nums]
    assert [int(v) for v in out] == want
    # plain Python integers
    assert [int(intmath.round_div(n, den, mode)) for n in nums] == want


@pytest.mark.parametrize("mode", MODES)
def test_round_div_small_table(mode):
    nums = list(range(-13, 14))
    for den in (1, 2, 3, 4, 5, 6):
        out = intmath.round_div(torch.tensor(nums), den, mode).tolist()
        assert out == [round_frac(Fraction(n, den), mode) for n in nums], den


def test_round_div_negative_ties_hand_checked():
    n = torch.tensor([-5, -3, -1, 1, 3, 5])
    assert intmath.round_div(n, 2, "half_up").tolist() == [-2, -1, 0, 1, 2, 3]
    assert intmath.round_div(n, 2, "half_even").tolist() == [-2, -2, 0, 0, 2, 2]


# ----- rescale --------------------------------------------------------------------------------

def _rescale_reference(values: torch.Tensor, mults, axis: int, mode: str) -> list:
    out = []
    if len(mults) == 1:
        return [round_frac(v * mults[0], mode) for v in values.reshape(-1).tolist()]
    ax = axis % values.dim()
    grid = torch.arange(values.shape[ax]).reshape([-1 if d == ax else 1 for d in range(values.dim())])
    idx = grid.expand_as(values).reshape(-1).tolist()
    for v, c in zip(values.reshape(-1).tolist(), idx):
        out.append(round_frac(v * mults[c], mode))
    return out


small_fraction = st.builds(Fraction, st.integers(1, 2 ** 12), st.integers(1, 2 ** 12))


@settings(max_examples=120, deadline=None)
@given(st.integers(1, 4), st.integers(1, 5), st.data(), st.sampled_from(MODES), st.sampled_from([0, 1, -1]))
def test_rescale_int64_path(rows, cols, data, mode, axis):
    vals = data.draw(st.lists(st.integers(-(2 ** 40), 2 ** 40), min_size=rows * cols, max_size=rows * cols))
    values = torch.tensor(vals, dtype=torch.int64).reshape(rows, cols)
    channels = values.shape[axis % 2]
    per_channel = data.draw(st.booleans())
    n = channels if per_channel else 1
    mults = data.draw(st.lists(small_fraction, min_size=n, max_size=n))
    with mock.patch.object(intmath, "_rescale_pyint", wraps=intmath._rescale_pyint) as spy:
        out = intmath.rescale(values, mults, axis, mode)
    assert not spy.called
    assert out.dtype == torch.int64 and out.shape == values.shape
    assert out.reshape(-1).tolist() == _rescale_reference(values, mults, axis, mode)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-(2 ** 20), 2 ** 20), min_size=1, max_size=40), st.integers(0, 8),
       st.sampled_from(MODES))
def test_rescale_int64_path_power_of_two_ties(ks, j, mode):
    # values (2k + 1) 2^j times 2^-(j+1) = k + 1/2: all ties
    values = torch.tensor([(2 * k + 1) * 2 ** j for k in ks], dtype=torch.int64)
    out = intmath.rescale(values, [Fraction(1, 2 ** (j + 1))], 0, mode)
    want = [TIE[mode](k) for k in ks]
    assert out.tolist() == want


# multipliers in (0, 1) with numerator and denominator far beyond 2^60
huge_fraction = st.builds(lambda a, c: Fraction(a, a + c), st.integers(2 ** 60, 2 ** 70), st.integers(2 ** 62, 2 ** 72))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.data(), st.sampled_from(MODES), st.sampled_from([0, 1]))
def test_rescale_python_int_path(rows, cols, data, mode, axis):
    vals = data.draw(st.lists(I64, min_size=rows * cols, max_size=rows * cols))
    vals[0] = data.draw(st.sampled_from([1, -1])) * (2 ** 61 + data.draw(st.integers(0, 2 ** 20)))
    values = torch.tensor(vals, dtype=torch.int64).reshape(rows, cols)
    channels = values.shape[axis]
    per_channel = data.draw(st.booleans())
    n = channels if per_channel else 1
    mults = data.draw(st.lists(huge_fraction, min_size=n, max_size=n))
    # a value near 2^61 times a numerator near 2^60 forces the Python-int path; every m < 1 keeps the
    # results inside int64
    assert all(0 < m < 1 for m in mults)
    with mock.patch.object(intmath, "_rescale_pyint", wraps=intmath._rescale_pyint) as spy:
        out = intmath.rescale(values, mults, axis, mode)
    assert spy.called
    assert out.dtype == torch.int64 and out.shape == values.shape
    assert out.reshape(-1).tolist() == _rescale_reference(values, mults, axis, mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shift", [60, 61])
def test_rescale_python_int_path_ties(mode, shift):
    # v = m 2^(shift-1), multiplier n / 2^shift with n odd and ~2^60: v n / 2^shift = m n / 2, a tie
    n = 2 ** 60 + 1 if shift == 60 else 2 ** 59 + 3
    mult = Fraction(n, 2 ** shift)
    assert mult.numerator == n
    ms = [1, 3, 5, 7, -1, -3, -7, 15, -15] if shift == 60 else [1, 3, 5, -1, -5, 7, -7]
    values = torch.tensor([m * 2 ** (shift - 1) for m in ms], dtype=torch.int64)
    with mock.patch.object(intmath, "_rescale_pyint", wraps=intmath._rescale_pyint) as spy:
        out = intmath.rescale(values, [mult], 0, mode)
    assert spy.called
    want = [round_frac(Fraction(m * n, 2), mode) for m in ms]
    assert out.tolist() == want
    # they are ties: the two modes must disagree on the odd ones (m n odd, (m n - 1)/2 odd or even)
    other = {"half_even": "half_up", "half_up": "half_even", "half_down": "half_even", "down": "up",
             "up": "down"}[mode]
    assert want != [round_frac(Fraction(m * n, 2), other) for m in ms]


def test_rescale_python_int_path_overflow():
    values = torch.tensor([2 ** 62, 3], dtype=torch.int64)
    with pytest.raises(OverflowError):
        intmath.rescale(values, [Fraction(4, 1)], 0, "half_up")
    with pytest.raises(OverflowError):
        intmath.rescale(values, [Fraction(2 ** 70 + 1, 2 ** 68)], 0, "half_even")


def test_rescale_python_int_path_scalar_tensor():
    """A 0-d tensor goes through the int64 path fine; the Python-int path must handle it too."""
    v = torch.tensor(7, dtype=torch.int64)
    small = intmath.rescale(v, [Fraction(1, 2)], 0, "half_up")
    assert small.shape == () and small.item() == 4
    m = Fraction(2 ** 70 + 1, 2 ** 71)
    big = intmath.rescale(v, [m], 0, "half_up")
    assert big.shape == () and big.item() == round_frac(7 * m, "half_up")


def test_rescale_python_int_path_agrees_with_int64_path():
    """A multiplier m and m + 2^-100: the second one has a huge numerator and denominator (Python-int
    path); away from ties of v m both give the same results, at ties the epsilon decides."""
    g = torch.Generator().manual_seed(0)
    values = torch.randint(-(2 ** 30), 2 ** 30, (6, 5), generator=g)
    values[0, :] = torch.tensor([-12, -4, 4, 12, 20])          # ties for m = 3/8: v m = k + 1/2
    eps = Fraction(1, 2 ** 100)
    flat = values.reshape(-1).tolist()
    for mode in MODES:
        for m in (Fraction(3, 8), Fraction(5, 6), Fraction(7, 2)):
            a = intmath.rescale(values, [m], 1, mode)
            assert a.reshape(-1).tolist() == [round_frac(v * m, mode) for v in flat]
            with mock.patch.object(intmath, "_rescale_pyint", wraps=intmath._rescale_pyint) as spy:
                b = intmath.rescale(values, [m + eps], 1, mode)
            assert spy.called
            assert b.reshape(-1).tolist() == [round_frac(v * (m + eps), mode) for v in flat]
            jump_den = 2 if mode.startswith("half") else 1      # where the mode's steps are
            for v, x, y in zip(flat, a.reshape(-1).tolist(), b.reshape(-1).tolist()):
                if (v * m).denominator != jump_den:
                    assert x == y
                elif jump_den == 2:
                    # v eps pushes the tie towards the sign of v
                    assert y == round_frac(v * m, "half_up" if v > 0 else "half_down")
                else:
                    # at an integer v m, floor/ceil of v m +- tiny
                    assert y == round_frac(v * m + (eps if v > 0 else -eps), mode)


# ----- common_scale ---------------------------------------------------------------------------

@settings(max_examples=120, deadline=None)
@given(st.lists(st.builds(Fraction, st.integers(1, 10 ** 6), st.integers(1, 10 ** 6)), min_size=1, max_size=5))
def test_common_scale(scales):
    c = intmath.common_scale(scales)
    assert c > 0
    for s in scales:
        assert (s / c).denominator == 1
    # largest: the multiples s / c have no common factor
    g = 0
    for s in scales:
        g = math.gcd(g, (s / c).numerator)
    assert g == 1


def test_common_scale_floats():
    a, b = Fraction(0.25), Fraction(0.375)
    assert intmath.common_scale([a, b]) == Fraction(1, 8)
    assert intmath.common_scale([Fraction(2.0 ** -7), Fraction(2.0 ** -3)]) == Fraction(1, 128)


# ----- exact_float_matmul -----------------------------------------------------------------------

def test_exact_float_matmul_linear_exact():
    g = torch.Generator().manual_seed(1)
    a = torch.randint(-(2 ** 20), 2 ** 20, (3, 50), generator=g)
    b = torch.randint(-(2 ** 20), 2 ** 20, (4, 50), generator=g)
    out = intmath.exact_float_matmul(F.linear, a, b, 50)
    assert out.dtype == torch.int64
    al, bl = a.tolist(), b.tolist()
    want = [[sum(x * y for x, y in zip(r, w)) for w in bl] for r in al]
    assert out.tolist() == want
    # the products here exceed 2^24 but not 2^53
    assert max(abs(v) for row in want for v in row) > 2 ** 40


def test_exact_float_matmul_conv_exact():
    g = torch.Generator().manual_seed(2)
    x = torch.randint(-1000, 1000, (1, 2, 5, 5), generator=g)
    w = torch.randint(-1000, 1000, (3, 2, 3, 3), generator=g)
    out = intmath.exact_float_matmul(F.conv2d, x, w, 2 * 9, stride=2, padding=1)
    xp = F.pad(x, (1, 1, 1, 1)).tolist()
    wl = w.tolist()
    for o in range(3):
        for i in range(3):
            for j in range(3):
                acc = 0
                for c in range(2):
                    for di in range(3):
                        for dj in range(3):
                            acc += xp[0][c][2 * i + di][2 * j + dj] * wl[o][c][di][dj]
                assert out[0, o, i, j].item() == acc


def test_exact_float_matmul_bound():
    a = torch.tensor([[2 ** 26, 2 ** 26]])
    b_ok = torch.tensor([[2 ** 26 - 1, 2 ** 26 - 1]])
    out = intmath.exact_float_matmul(F.linear, a, b_ok, 2)
    assert out.item() == 2 * 2 ** 26 * (2 ** 26 - 1)           # just below 2^53: still exact
    b_bad = torch.tensor([[2 ** 26, 2 ** 26]])
    with pytest.raises(OverflowError):
        intmath.exact_float_matmul(F.linear, a, b_bad, 2)        # bound exactly 2^53
    with pytest.raises(OverflowError):
        intmath.exact_float_matmul(F.linear, torch.tensor([[2 ** 40]]), torch.tensor([[2 ** 20]]), 1)
    # the fan-in enters the bound even if the actual sum is small
    with pytest.raises(OverflowError):
        intmath.exact_float_matmul(F.linear, torch.tensor([[2 ** 30, -(2 ** 30)]]),
                                   torch.tensor([[2 ** 22, 2 ** 22]]), 2)


def test_max_abs():
    assert intmath.max_abs(torch.tensor([3, -7, 5])) == 7
    assert intmath.max_abs(torch.zeros(0, dtype=torch.int64)) == 0
