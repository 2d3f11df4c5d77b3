"""Pure bound math for rounding steps (no auto_LiRPA here).

Every rounding op of this project is ``out = c1 * clamp(R(a x + b), A, B) + c0`` with ``a, c1 > 0``
and integer ``A, B`` (possibly infinite). ``R`` jumps from ``k - 1`` to ``k`` at
``t_k = k - 1/2 + shift`` (``shift`` = :data:`qa_lirpa.quant.spec.ROUNDING_SHIFT`: 0 for the three
round-to-nearest modes, +1/2 for ``down`` = floor, -1/2 for ``up`` = ceil). In the unit variable
``v = a x + b`` it is bracketed by two monotone step functions that differ only at the jumps:

    g_dn(v) = clamp(ceil(v - shift - 1/2), A, B)  <=  R(v)  <=  g_up(v) = clamp(floor(v - shift + 1/2), A, B)

(``half_even``/``half_up``/``half_down``: ``g_dn = round_half_down``, ``g_up = round_half_up``;
``down``: ``g_up = floor``, ``g_dn = ceil - 1``; ``up``: ``g_dn = ceil``, ``g_up = floor + 1``). These
are computed exactly in the tensors' dtype (floor/ceil, +-1 and the exact ``round_half_*``), and
so are the jump corners ``t_k = k + (shift - 1/2)``. The interval image is exact (``R`` is
monotone). A line is above ``g_up`` on ``[vl, vu]`` iff it is above four points (the jump corners
between the first and last jump are collinear):

    upper: (vl, y0), (t_j1, j1), (t_jL, jL), (vu, jL)
    lower: (vl, y0), (t_j1, j1 - 1), (t_jL, jL - 1), (vu, jL)     (for g_dn)

where ``j1..jL`` are the jumps inside the interval. Candidate lines (the hull edges: chords from the
end points, the slope-1 line through the corners, the constants) are each shifted until valid at
these points, and the one with the least value at the midpoint is taken: that is the supporting line
of the hull at the midpoint, the valid line of least area. Shifting after the fact also makes the
lines valid at the points in float arithmetic; float error elsewhere is absorbed by the caller's
slack (widening ``[vl, vu]``). The lines are sound for every mode, ties included, because they
bound ``g_up``/``g_dn``, which bound ``R`` at every ``v`` (a tie included).
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


def step_up(v: torch.Tensor, shift: float = 0.0) -> torch.Tensor:
    """``floor(v - shift + 1/2)`` exactly: the upper bracket ``g_up`` (unclamped)."""
    if shift == 0.0:
        return round_half_up(v)
    if shift == 0.5:
        return torch.floor(v)
    if shift == -0.5:
        return torch.floor(v) + 1
    raise ValueError(f"step_up: unsupported shift {shift}")


def step_dn(v: torch.Tensor, shift: float = 0.0) -> torch.Tensor:
    """``ceil(v - shift - 1/2)`` exactly: the lower bracket ``g_dn`` (unclamped)."""
    if shift == 0.0:
        return round_half_down(v)
    if shift == 0.5:
        return torch.ceil(v) - 1
    if shift == -0.5:
        return torch.ceil(v)
    raise ValueError(f"step_dn: unsupported shift {shift}")


def staircase_points(vl: torch.Tensor, vu: torch.Tensor, A: torch.Tensor, B: torch.Tensor, shift: float,
                     upper: bool) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """The four critical points of ``g_up`` (``upper``) or ``g_dn`` on ``[vl, vu]`` (jumps at
    ``k - 1/2 + shift``, clamped to ``[A, B]``): a line of slope ``k >= 0`` is above ``g_up`` (below
    ``g_dn``) on the whole interval iff it is above (below) these points, because the jump corners
    between the first and the last are collinear (slope 1) and the staircase is non-decreasing.

    upper: ``(vl, y0), (t_j1, j1), (t_jL, jL), (vu, jL)``; lower: ``(vl, y0), (t_j1, j1 - 1),
    (t_jL, jL - 1), (vu, jL)``; without a jump inside, points of the constant ``y0``. Returns the
    points and whether the interval holds a jump (``j1 <= jL``)."""
    off = shift - 0.5                          # corner of jump k: k + off (exact)
    if upper:
        n0 = step_up(vl, shift)
        y0 = _clamp(n0, A, B)
        j1 = torch.maximum(n0 + 1, A + 1)
        jL = torch.minimum(step_up(vu, shift), B)
        jumps = j1 <= jL
        j1, jL = torch.where(jumps, j1, y0), torch.where(jumps, jL, y0)
        t1, tL = torch.where(jumps, j1 + off, vl), torch.where(jumps, jL + off, vl)
        return [(vl, y0), (t1, j1), (tL, jL), (vu, jL)], jumps
    m0 = step_dn(vl, shift)
    y0 = _clamp(m0, A, B)
    j1 = torch.maximum(m0 + 1, A + 1)
    jL = torch.minimum(step_dn(vu, shift), B)
    jumps = j1 <= jL
    j1, jL = torch.where(jumps, j1, y0 + 1), torch.where(jumps, jL, y0 + 1)
    t1, tL = torch.where(jumps, j1 + off, vu), torch.where(jumps, jL + off, vu)
    return [(vl, y0), (t1, j1 - 1), (tL, jL - 1), (vu, jL)], jumps


def intercept(points: list, k: torch.Tensor, upper: bool) -> torch.Tensor:
    """The intercept that makes the line of slope ``k`` (``>= 0``, broadcastable against the
    points) valid at every point (above them for ``upper``, below otherwise), checked again in
    the float arithmetic that evaluates the line at the points (see :func:`_best_line`)."""
    gaps = torch.stack(torch.broadcast_tensors(*[py - k * px for px, py in points]))
    b = gaps.amax(0) if upper else gaps.amin(0)
    again = torch.stack(torch.broadcast_tensors(*[py - (k * px + b) for px, py in points]))
    return b + (torch.clamp(again.amax(0), min=0) if upper else torch.clamp(again.amin(0), max=0))


def upper_line(vl: torch.Tensor, vu: torch.Tensor, A: torch.Tensor, B: torch.Tensor, shift: float = 0.0
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Slope and intercept (in unit space) of a line above ``g_up`` on ``[vl, vu]`` (jumps at
    ``k - 1/2 + shift``)."""
    off = shift - 0.5
    points, jumps = staircase_points(vl, vu, A, B, shift, upper=True)
    (_, y0), (t1, j1), (tL, jL), _ = points
    one, zero = torch.ones_like(vl), torch.zeros_like(vl)
    cands = [_line_through(vl, y0, t1, j1), (one, -off * one), (zero, jL), _line_through(vl, y0, tL, jL)]
    k, b = _best_line(cands, points, 0.5 * (vl + vu), upper=True)
    return torch.where(jumps, k, zero), torch.where(jumps, b, y0)


def lower_line(vl: torch.Tensor, vu: torch.Tensor, A: torch.Tensor, B: torch.Tensor, shift: float = 0.0
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Slope and intercept (in unit space) of a line below ``g_dn`` on ``[vl, vu]`` (jumps at
    ``k - 1/2 + shift``)."""
    off = shift - 0.5
    points, jumps = staircase_points(vl, vu, A, B, shift, upper=False)
    (_, y0), (t1, j1m), (tL, jLm), (_, jL) = points
    one, zero = torch.ones_like(vl), torch.zeros_like(vl)
    cands = [(zero, y0), (one, (-1.0 - off) * one), _line_through(tL, jLm, vu, jL),
             _line_through(t1, j1m, vu, jL)]
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
