"""Pure bound math for rounding steps (no auto_LiRPA here).

Every rounding op of this project is ``out = c1 * clamp(R(a x + b), A, B) + c0`` with ``a, c1 > 0``
and integer ``A, B`` (possibly infinite). In the unit variable ``v = a x + b`` the step function is
bracketed by two monotone step functions, whatever the rounding mode:

    g_dn(v) = clamp(ceil(v - 1/2), A, B)  <=  R(v)  <=  g_up(v) = clamp(floor(v + 1/2), A, B)

(they differ only at ties). The interval image is exact (``R`` is monotone). A line is above ``g_up``
on ``[vl, vu]`` iff it is above four points (the jump corners between the first and last jump are
collinear):

    upper: (vl, y0), (j1 - 1/2, j1), (jL - 1/2, jL), (vu, jL)
    lower: (vl, y0), (j1 - 1/2, j1 - 1), (jL - 1/2, jL - 1), (vu, jL)     (for g_dn)

where ``j1..jL`` are the jumps inside the interval. Candidate lines (the hull edges: chords from the
end points, the slope-1 line through the corners, the constants) are each shifted until valid at
these points, and the one with the least value at the midpoint is taken: that is the supporting line
of the hull at the midpoint, the valid line of least area. Shifting after the fact also makes the
lines valid at the points in float arithmetic; float error elsewhere is absorbed by the caller's
slack (widening ``[vl, vu]``).
"""
from __future__ import annotations

import torch

from ..quant.functions import round_half_down, round_half_up


def _clamp(v: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    return torch.minimum(torch.maximum(v, A), B)


def _line_through(x0, y0, x1, y1):
    k = (y1 - y0) / torch.clamp(x1 - x0, min=1e-30)
    return k, y0 - k * x0


def _best_line(cands, points, m, upper: bool):
    """Among candidate lines, each shifted until it is valid at every point (above them for an
    upper line, below for a lower one), the one with the least value (upper) or the greatest
    value (lower) at ``m``. Validity at the points is validity on the whole step function."""
    best_k = best_b = best_val = None
    for k, b in cands:
        gaps = [py - (k * px + b) for px, py in points]
        gap = torch.stack(gaps).amax(0) if upper else torch.stack(gaps).amin(0)
        b = b + (torch.clamp(gap, min=0) if upper else torch.clamp(gap, max=0))
        val = k * m + b
        if best_k is None:
            best_k, best_b, best_val = k, b, val
            continue
        better = val < best_val if upper else val > best_val
        best_k = torch.where(better, k, best_k)
        best_b = torch.where(better, b, best_b)
        best_val = torch.where(better, val, best_val)
    return best_k, best_b


def upper_line(vl: torch.Tensor, vu: torch.Tensor, A: torch.Tensor, B: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Slope and intercept (in unit space) of a line above ``g_up`` on ``[vl, vu]``."""
    n0 = round_half_up(vl)
    y0 = _clamp(n0, A, B)
    j1 = torch.maximum(n0 + 1, A + 1)
    jL = torch.minimum(round_half_up(vu), B)
    jumps = j1 <= jL
    j1, jL = torch.where(jumps, j1, y0), torch.where(jumps, jL, y0)
    t1, tL = torch.where(jumps, j1 - 0.5, vl), torch.where(jumps, jL - 0.5, vl)
    one, zero = torch.ones_like(vl), torch.zeros_like(vl)
    points = [(vl, y0), (t1, j1), (tL, jL), (vu, jL)]
    cands = [_line_through(vl, y0, t1, j1), (one, 0.5 * one), (zero, jL), _line_through(vl, y0, tL, jL)]
    k, b = _best_line(cands, points, 0.5 * (vl + vu), upper=True)
    return torch.where(jumps, k, zero), torch.where(jumps, b, y0)


def lower_line(vl: torch.Tensor, vu: torch.Tensor, A: torch.Tensor, B: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Slope and intercept (in unit space) of a line below ``g_dn`` on ``[vl, vu]``."""
    m0 = round_half_down(vl)
    y0 = _clamp(m0, A, B)
    j1 = torch.maximum(m0 + 1, A + 1)
    jL = torch.minimum(round_half_down(vu), B)
    jumps = j1 <= jL
    j1, jL = torch.where(jumps, j1, y0 + 1), torch.where(jumps, jL, y0 + 1)
    t1, tL = torch.where(jumps, j1 - 0.5, vu), torch.where(jumps, jL - 0.5, vu)
    one, zero = torch.ones_like(vl), torch.zeros_like(vl)
    points = [(vl, y0), (t1, j1 - 1), (tL, jL - 1), (vu, jL)]
    cands = [(zero, y0), (one, -0.5 * one), _line_through(tL, jL - 1, vu, jL),
             _line_through(t1, j1 - 1, vu, jL)]
    k, b = _best_line(cands, points, 0.5 * (vl + vu), upper=False)
    return torch.where(jumps, k, zero), torch.where(jumps, b, y0)


def clip_lines(l: torch.Tensor, u: torch.Tensor, a: torch.Tensor, b: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lower and upper lines (lk, lb, uk, ub) of ``clamp(x, a, b)`` on ``[l, u]`` (``a <= b``).

    The upper line is the better (at the midpoint) of the constant ``clamp(u)`` and the chord of the
    convex part ``max(x, a)`` from ``l`` to ``min(u, b)``; the lower line mirrors it.
    """
    f = lambda x: torch.minimum(torch.maximum(x, a), b)  # noqa: E731
    m = 0.5 * (l + u)
    # upper: chord of the convex piece from (l, f(l)) to (c, f(c)), c = min(u, b), extended
    c = torch.minimum(u, b)
    span = c - l
    uk = torch.where(span > 0, (f(c) - f(l)) / torch.clamp(span, min=1e-30), torch.zeros_like(l))
    ub = f(l) - uk * l
    const_u = f(u)
    use_const = const_u <= uk * m + ub
    uk = torch.where(use_const, torch.zeros_like(uk), uk)
    ub = torch.where(use_const, const_u, ub)
    # lower: chord of the concave piece from (d, f(d)) to (u, f(u)), d = max(l, a)
    d = torch.maximum(l, a)
    span = u - d
    lk = torch.where(span > 0, (f(u) - f(d)) / torch.clamp(span, min=1e-30), torch.zeros_like(l))
    lb = f(u) - lk * u
    const_l = f(l)
    use_const = const_l >= lk * m + lb
    lk = torch.where(use_const, torch.zeros_like(lk), lk)
    lb = torch.where(use_const, const_l, lb)
    return lk, lb, uk, ub
