"""Unit tests of the linear relaxations on random intervals (no network)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from qa_lirpa.operators import relax
from qa_lirpa.quant.functions import fake_quant_raw, round_half_down, round_half_up

torch.manual_seed(0)


def random_intervals(n: int, span: float = 12.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    c = (torch.rand(n, generator=g, dtype=torch.float64) - 0.3) * 3 * span
    w = torch.rand(n, generator=g, dtype=torch.float64) ** 2 * span
    # a quarter of the end points sit exactly on ties or integers
    snap = torch.rand(n, generator=g) < 0.25
    lo, hi = c - w, c + w
    lo = torch.where(snap, torch.floor(lo) + 0.5, lo)
    hi = torch.where(snap, torch.maximum(torch.ceil(hi) - 0.5, lo), hi)
    return lo, hi


def points_in(lo, hi, k: int = 301):
    t = torch.linspace(0, 1, k, dtype=torch.float64).unsqueeze(1)
    pts = lo + t * (hi - lo)
    ties = torch.floor(pts) + 0.5            # every tie inside the interval, where it is
    ties = torch.where((ties >= lo) & (ties <= hi), ties, pts)
    return torch.cat([pts, ties])


@pytest.mark.parametrize("A,B", [(0.0, 15.0), (-8.0, 7.0), (-float("inf"), float("inf")), (0.0, 3.0)])
def test_hull_lines_are_valid(A, B):
    lo, hi = random_intervals(4000, seed=3 if A == -float("inf") else int(abs(A) + B))
    At, Bt = torch.full_like(lo, A), torch.full_like(lo, B)
    uk, ub = relax.upper_line(lo, hi, At, Bt)
    lk, lb = relax.lower_line(lo, hi, At, Bt)
    v = points_in(lo, hi)
    g_up = torch.clamp(round_half_up(v), A, B)
    g_dn = torch.clamp(round_half_down(v), A, B)
    assert (uk * v + ub >= g_up - 1e-9).all()
    assert (lk * v + lb <= g_dn + 1e-9).all()


def test_hull_lines_tighter_than_constants_on_wide_intervals():
    """On intervals spanning many steps the lines enclose far less area than the IBP box."""
    lo, hi = random_intervals(2000, span=30.0, seed=5)
    wide = (hi - lo) > 8
    lo, hi = lo[wide], hi[wide]
    A, B = torch.full_like(lo, -1e9), torch.full_like(lo, 1e9)
    uk, ub = relax.upper_line(lo, hi, A, B)
    lk, lb = relax.lower_line(lo, hi, A, B)
    m = 0.5 * (lo + hi)
    line_gap = ((uk - lk) * m + (ub - lb)).mean()        # mean vertical gap = area / width
    box_gap = (round_half_up(hi) - round_half_down(lo)).mean()
    assert line_gap < 0.5 * box_gap


def test_point_intervals_give_constants():
    v = torch.tensor([-2.5, -0.5, 0.0, 0.5, 1.49, 3.5], dtype=torch.float64)
    A, B = torch.full_like(v, -10.0), torch.full_like(v, 10.0)
    uk, ub = relax.upper_line(v, v, A, B)
    lk, lb = relax.lower_line(v, v, A, B)
    assert torch.equal(uk, torch.zeros_like(v)) and torch.equal(lk, torch.zeros_like(v))
    assert torch.equal(ub, round_half_up(v)) and torch.equal(lb, round_half_down(v))


@pytest.mark.parametrize("seed", range(5))
def test_clip_lines_are_valid(seed):
    lo, hi = random_intervals(3000, seed=seed)
    a = torch.full_like(lo, -3.0 + seed)
    b = a + 2.0 + seed
    lk, lb, uk, ub = relax.clip_lines(lo, hi, a, b)
    v = points_in(lo, hi)
    f = torch.minimum(torch.maximum(v, a), b)
    assert (uk * v + ub >= f - 1e-9).all()
    assert (lk * v + lb <= f + 1e-9).all()


def _node(lo, hi):
    return SimpleNamespace(lower=lo, upper=hi)


def _fake_quant_op(scale, zp, qmin, qmax, rounding, axis=1, slack=0.0):
    from qa_lirpa.operators.step import BoundFakeQuant

    attr = {"scale": torch.tensor(scale, dtype=torch.float64), "zero_point": torch.tensor(zp),
            "qmin": qmin, "qmax": qmax, "axis": axis, "rounding": rounding}
    op = BoundFakeQuant(attr, [], 0, {"qa_lirpa": {"slack": slack}})
    op.batch_dim = 0
    return op


@pytest.mark.parametrize("rounding", [0, 1])
@pytest.mark.parametrize("per_channel", [False, True])
def test_fake_quant_backward_with_different_lower_and_upper_A(rounding, per_channel):
    """For random lA != uA the backward relaxation bounds lA.Q(x) from below and uA.Q(x) from above
    for every x in the box (checked on samples and ties)."""
    n, batch, spec = 6, 3, 4
    scale = [0.25, 0.5, 0.125, 0.25, 1.0, 0.5] if per_channel else [0.25]
    zp = [0, 3, 0, 1, 2, 0] if per_channel else [2]
    op = _fake_quant_op(scale, zp, 0, 15, rounding)
    g = torch.Generator().manual_seed(rounding * 2 + per_channel)
    lo = (torch.rand(batch, n, generator=g, dtype=torch.float64) - 0.5) * 6
    hi = lo + torch.rand(batch, n, generator=g, dtype=torch.float64) * 5
    lA = torch.randn(spec, batch, n, generator=g, dtype=torch.float64)
    uA = torch.randn(spec, batch, n, generator=g, dtype=torch.float64)
    (A_pair,), lbias, ubias = op.bound_backward(lA, uA, _node(lo, hi))
    nlA, nuA = A_pair
    t = torch.rand(4000, batch, n, generator=g, dtype=torch.float64)
    xs = lo + t * (hi - lo)
    s = torch.tensor(scale, dtype=torch.float64)
    xs = torch.cat([xs, torch.clamp((torch.floor(xs / s) + 0.5) * s, lo, hi)])   # ties
    q = fake_quant_raw(xs, tuple(scale), tuple(zp), 0, 15, 2, rounding)
    f_l = torch.einsum("sbn,kbn->ksb", lA, q)
    f_u = torch.einsum("sbn,kbn->ksb", uA, q)
    lin_l = torch.einsum("sbn,kbn->ksb", nlA, xs) + lbias
    lin_u = torch.einsum("sbn,kbn->ksb", nuA, xs) + ubias
    assert (lin_l <= f_l + 1e-9).all()
    assert (lin_u >= f_u - 1e-9).all()


def test_fake_quant_ibp_is_the_exact_image_and_slack_widens():
    op = _fake_quant_op([0.5], [0], -8, 7, 1)
    lo = torch.tensor([[0.25, -10.0, 1.0, 0.74]], dtype=torch.float64)
    hi = torch.tensor([[0.25, -1.1, 1.0, 1.26]], dtype=torch.float64)
    l, u = op.interval_propagate((lo, hi))
    assert l.tolist() == [[0.5, -4.0, 1.0, 0.5]]
    assert u.tolist() == [[0.5, -1.0, 1.0, 1.5]]
    wide = _fake_quant_op([0.5], [0], -8, 7, 1, slack=1e-3)
    l2, u2 = wide.interval_propagate((lo, hi))
    assert l2.tolist() == [[0.0, -4.0, 1.0, 0.5]]     # 0.25 is a tie: slack rounds it down too
    assert u2.tolist() == [[0.5, -1.0, 1.0, 1.5]]


@pytest.mark.parametrize("shift", [0.0, 0.5, -0.5])
@pytest.mark.parametrize("A,B", [(0.0, 15.0), (-float("inf"), float("inf")), (-3.0, 4.0)])
def test_lines_of_any_slope_through_the_staircase_points_are_valid(shift, A, B):
    """alpha-CROWN's lines: for every slope k >= 0 (0, tiny, the hull's, steep), the intercept from
    the four critical points gives a line above g_up and below g_dn on the whole interval, ties and
    jump corners included, for the three jump offsets (nearest modes, floor, ceil)."""
    lo, hi = random_intervals(3000, seed=11 + int(4 * shift))
    At, Bt = torch.full_like(lo, A), torch.full_like(lo, B)
    g = torch.Generator().manual_seed(7)
    v = points_in(lo, hi)
    corners = torch.floor(v) + 0.5 + shift                 # jump corners k - 1/2 + shift
    corners = torch.where((corners >= lo) & (corners <= hi), corners, v)
    v = torch.cat([v, corners])
    g_up = torch.clamp(relax.step_up(v, shift), A, B)
    g_dn = torch.clamp(relax.step_dn(v, shift), A, B)
    up_pts, _ = relax.staircase_points(lo, hi, At, Bt, shift, upper=True)
    dn_pts, _ = relax.staircase_points(lo, hi, At, Bt, shift, upper=False)
    for k in (torch.zeros_like(lo), torch.full_like(lo, 1e-3), torch.ones_like(lo),
              torch.rand(lo.shape, generator=g, dtype=torch.float64) * 3, torch.full_like(lo, 40.0)):
        ub = relax.intercept(up_pts, k, upper=True)
        lb = relax.intercept(dn_pts, k, upper=False)
        assert (k * v + ub >= g_up - 1e-9).all()
        assert (k * v + lb <= g_dn + 1e-9).all()
    # the hull lines' own slopes give back the hull lines' intercepts (one definition of validity)
    uk, ub0 = relax.upper_line(lo, hi, At, Bt, shift)
    lk, lb0 = relax.lower_line(lo, hi, At, Bt, shift)
    mid = 0.5 * (lo + hi)
    assert (uk * mid + relax.intercept(up_pts, uk, upper=True) <= uk * mid + ub0 + 1e-9).all()
    assert (lk * mid + relax.intercept(dn_pts, lk, upper=False) >= lk * mid + lb0 - 1e-9).all()
