"""Exact rational references (Python Fractions) shared by the quant tests."""
from __future__ import annotations

import math
from fractions import Fraction


def round_frac(v: Fraction, mode: str) -> int:
    """Round a rational exactly.

    half_even: nearest integer, ties to the even one;
    half_up:   floor(v + 1/2) (ties towards +infinity, also for negative v);
    half_down: ceil(v - 1/2)  (ties towards -infinity);
    down:      floor(v);
    up:        ceil(v).
    """
    v = Fraction(v)
    if mode == "down":
        return math.floor(v)
    if mode == "up":
        return math.ceil(v)
    if mode == "half_up":
        return math.floor(v + Fraction(1, 2))
    if mode == "half_down":
        return math.ceil(v - Fraction(1, 2))
    if mode == "half_even":
        lo = math.floor(v)
        rest = v - lo
        if rest > Fraction(1, 2):
            return lo + 1
        if rest < Fraction(1, 2):
            return lo
        return lo if lo % 2 == 0 else lo + 1
    raise ValueError(mode)


def fake_quant_frac(x: float, scale: float, zero_point: int, qmin: int, qmax: int, mode: str) -> Fraction:
    """(clamp(R(x / s) + z, qmin, qmax) - z) * s in exact rational arithmetic."""
    s = Fraction(scale)
    q = round_frac(Fraction(x) / s, mode) + zero_point
    q = min(max(q, qmin), qmax)
    return (q - zero_point) * s
