"""Counterexample search: PGD through the straight-through (fake-quant, float64) model, snapped to
the input grid, plus box corners, centres and random grid points.

Nothing here decides a verdict: every candidate is checked by the caller with the exact semantics
(and confirmed by the reference before ``sat``). The candidates are merely likely violators.
"""
from __future__ import annotations

import torch

from ..base.deadline import Deadline
from .problem import Problem
from .spec import OutputSpec


def violation(y: torch.Tensor, ospec: OutputSpec) -> torch.Tensor:
    """Float violation score ``[N]``: min over disjuncts of max over rows of ``mat_i @ y - rhs_i``
    (``<= 0`` means violated in float arithmetic). Disjuncts without rows score ``-1e30``."""
    if ospec.n_rows == 0:
        return torch.full((y.shape[0],), -1e30, dtype=y.dtype, device=y.device)
    rows = y @ ospec.mat.T - ospec.rhs
    init = torch.full((y.shape[0], ospec.n_disjuncts), -1e30, dtype=y.dtype, device=y.device)
    has_rows = ospec.row_counts > 0
    init = torch.where(has_rows, torch.full_like(init, -torch.inf), init)
    idx = ospec.owner.unsqueeze(0).expand_as(rows)
    per_d = init.scatter_reduce(1, idx, rows, reduce="amax", include_self=True)
    return per_d.min(dim=1).values


def box_points(problem: Problem, lo: torch.Tensor, hi: torch.Tensor, n_random: int, gen: torch.Generator) -> torch.Tensor:
    """Lower and upper corners, centres and ``n_random`` random points of each box (snapped)."""
    centre = lo.to(torch.float64) + (hi - lo).to(torch.float64) / 2
    pts = [lo, hi, problem.snap(centre, lo, hi)]
    if n_random:
        rep_lo, rep_hi = lo.repeat(n_random, 1), hi.repeat(n_random, 1)
        u = torch.rand(rep_lo.shape, generator=gen, dtype=torch.float64).to(lo.device)
        t = rep_lo.to(torch.float64) + u * ((rep_hi - rep_lo).to(torch.float64) + (1 if problem.integral else 0))
        pts.append(problem.snap(t - (0.5 if problem.integral else 0), rep_lo, rep_hi))
    return torch.cat(pts)


def pgd(problem: Problem, lo: torch.Tensor, hi: torch.Tensor, ospec: OutputSpec, steps: int, restarts: int,
        gen: torch.Generator, deadline: Deadline) -> torch.Tensor:
    """PGD in each box ``[lo[b], hi[b]]`` (``restarts`` random starts each), minimising
    :func:`violation` of the float model; returns the best grid-snapped point of every run
    (judged by the float model at the snapped point). Every second run follows the unclipped
    straight-through gradient, which also moves where quantizers saturate."""
    a = lo.to(torch.float64).repeat(restarts, 1)
    b = hi.to(torch.float64).repeat(restarts, 1)
    ilo, ihi = lo.repeat(restarts, 1), hi.repeat(restarts, 1)
    t = a + torch.rand(a.shape, generator=gen, dtype=torch.float64).to(a.device) * (b - a)
    best = problem.snap(t, ilo, ihi)
    best_val = torch.full((a.shape[0],), torch.inf, dtype=torch.float64, device=a.device)
    loose = (torch.arange(a.shape[0], device=a.device) // lo.shape[0]) % 2 == 1
    for k in range(steps):
        if deadline.expired():
            break
        g = _gradient(problem, t, ospec, loose)
        alpha = 0.3 * (1 - k / max(steps, 1)) + 0.02
        t = torch.minimum(torch.maximum(t.detach() - alpha * (b - a) * torch.sign(g), a), b)
        q = problem.snap(t, ilo, ihi)
        with torch.no_grad():
            vq = violation(problem.attack_forward(q.to(torch.float64)), ospec)
        better = vq < best_val
        best = torch.where(better.unsqueeze(1), q, best)
        best_val = torch.where(better, vq, best_val)
    return best


def _gradient(problem: Problem, t: torch.Tensor, ospec: OutputSpec, loose: torch.Tensor) -> torch.Tensor:
    """Gradient of the summed violation: clipped STE for the runs with ``loose`` False, unclipped
    for the others."""
    g = torch.zeros_like(t)
    for flag in (False, True):
        idx = (loose == flag).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        x = t[idx].detach().requires_grad_(True)
        with torch.enable_grad():
            v = violation(problem.attack_forward(x, loose=flag), ospec)
            (gx,) = torch.autograd.grad(v.sum(), x)
        g[idx] = gx
    return g


__all__ = ["violation", "box_points", "pgd"]
