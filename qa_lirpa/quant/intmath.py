"""Exact integer arithmetic for the reference semantics.

Values are ``torch.int64`` tensors. Rescaling by a rational multiplier ``n/d`` uses integer floor
division, so it is exact; when an intermediate product could leave the int64 range the computation
moves to Python integers (numpy object arrays), which is slow but still exact.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

import numpy as np
import torch

from .spec import rounding_name

_INT64_SAFE = 1 << 62
_F64_EXACT = 1 << 53


def _channel_view(values: Sequence[int], ndim: int, axis: int, device) -> torch.Tensor:
    t = torch.tensor(list(values), dtype=torch.int64, device=device)
    if len(values) == 1:
        return t.reshape(())
    shape = [1] * ndim
    shape[axis] = len(values)
    return t.reshape(shape)


def max_abs(t: torch.Tensor) -> int:
    """Largest absolute value of an integer tensor (0 for empty tensors)."""
    return int(t.abs().max().item()) if t.numel() else 0


def floor_form(rounding: str, den: int) -> tuple[int, int, int] | None:
    """``(a, c, D)`` with ``R(n / den) = floor((a n + c) / D)`` for every integer ``n`` (``den > 0``),
    or None for ``half_even`` with an even ``den`` (its ties need a parity). With an odd ``den``
    ``n / den`` is never a tie, so the three round-to-nearest modes coincide.

    ``down``: ``floor(n/d)``; ``up``: ``ceil(n/d) = floor((n + d - 1)/d)``; ``half_up``:
    ``floor((2n + d)/(2d))``; ``half_down``: ``ceil((2n - d)/(2d)) = floor((2n + d - 1)/(2d))``
    (for even ``d`` divided through by 2)."""
    mode = rounding_name(rounding)
    d = int(den)
    if d <= 0:
        raise ValueError("floor_form: the denominator must be positive")
    if d == 1:
        return 1, 0, 1
    if mode == "down":
        return 1, 0, d
    if mode == "up":
        return 1, d - 1, d
    if d % 2 == 1:
        return 2, d, 2 * d
    if mode == "half_up":
        return 1, d // 2, d
    if mode == "half_down":
        return 1, d // 2 - 1, d
    return None


def round_div(num, den, rounding: str):
    """Exact ``R(num / den)`` for integer ``num`` and positive integer ``den`` (int64 tensors,
    Python ints, or numpy object arrays of Python ints), in every mode."""
    def fdiv(a, b):
        return torch.div(a, b, rounding_mode="floor") if isinstance(a, torch.Tensor) else a // b

    mode = rounding_name(rounding)
    if mode != "half_even":
        q = fdiv(num, den)
        r = num - q * den                 # remainder, in [0, den)
        if mode == "down":
            return q
        if mode == "up":
            return q + (r > 0)
        if mode == "half_up":
            return q + (2 * r >= den)
        return q + (2 * r > den)          # half_down: a tie stays down
    q = fdiv(num, den)
    r2 = 2 * (num - q * den)          # 2 * remainder, in [0, 2 den)
    odd = (q % 2) == 1
    return q + ((r2 > den) | ((r2 == den) & odd))


def rescale(values: torch.Tensor, multipliers: Sequence[Fraction], axis: int, rounding: str) -> torch.Tensor:
    """Exact ``R(values * m_c)`` with one rational multiplier per channel along ``axis``, ``R`` any of
    the five rounding modes (:func:`round_div`).

    ``values`` is an int64 tensor or a numpy array of Python ints; the result is int64. Uses int64 when no intermediate can overflow and
    Python integers otherwise.
    """
    nums = [m.numerator for m in multipliers]
    dens = [m.denominator for m in multipliers]
    if not isinstance(values, torch.Tensor):       # Python-int (object) values stay exact
        return _rescale_pyint(values, nums, dens, axis, rounding)
    bound = 2 * max_abs(values) * max(abs(n) for n in nums) + 2 * max(dens)
    if bound < _INT64_SAFE:
        n = _channel_view(nums, values.dim(), axis, values.device)
        d = _channel_view(dens, values.dim(), axis, values.device)
        return round_div(values * n, d, rounding)
    return _rescale_pyint(values, nums, dens, axis, rounding)


def _object_view(values: Sequence[int], ndim: int, axis: int) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = [int(v) for v in values]
    if len(values) == 1:
        return arr.reshape(())[()]
    shape = [1] * ndim
    shape[axis] = len(values)
    return arr.reshape(shape)


def to_object(values) -> np.ndarray:
    """An exact numpy array of Python ints (from an int64 tensor or an object array)."""
    if isinstance(values, torch.Tensor):
        return values.cpu().numpy().astype(object)
    return np.asarray(values, dtype=object)


def _rescale_pyint(values, nums, dens, axis: int, rounding: str) -> torch.Tensor:
    v = to_object(values)
    n = _object_view(nums, v.ndim, axis)
    d = _object_view(dens, v.ndim, axis)
    out = np.asarray(round_div(v * n, d, rounding), dtype=object)
    big = max((abs(int(x)) for x in out.reshape(-1)), default=0)
    if big >= (1 << 63):
        raise OverflowError("integer reference: rescaled value does not fit in int64")
    device = values.device if isinstance(values, torch.Tensor) else "cpu"
    return torch.tensor(out.astype(np.int64), device=device)


def common_scale(scales: Sequence[Fraction]) -> Fraction:
    """The largest rational ``S`` such that every scale is an integer multiple of ``S``."""
    num = 0
    den = 1
    for s in scales:
        den = den * s.denominator // math.gcd(den, s.denominator)
    for s in scales:
        num = math.gcd(num, s.numerator * (den // s.denominator))
    return Fraction(num, den)


def exact_float_matmul(fn, a: torch.Tensor, b: torch.Tensor, fan_in: int, **kw) -> torch.Tensor:
    """Apply a bilinear torch op (``F.linear``, ``F.conv2d``) to int64 tensors exactly.

    The op runs in float64, where integer products and sums are exact as long as every partial sum
    stays below 2^53; that bound (``max|a| * max|b| * fan_in``) is checked, not assumed.
    """
    if not isinstance(a, torch.Tensor):
        raise OverflowError("integer reference: layer input beyond int64 (requantize it first)")
    bound = max_abs(a) * max_abs(b) * max(fan_in, 1)
    if bound >= _F64_EXACT:
        raise OverflowError(
            f"integer reference: accumulator bound {bound} >= 2^53; float64 products would be inexact")
    return torch.round(fn(a.double(), b.double(), **kw)).to(torch.int64)
