"""Which input dimension to split. Any choice keeps the search sound and complete (every split
dimension has at least two grid points); the heuristics only change how fast it ends.

- ``widest``: the widest dimension (the first on ties), as the QA-IBP paper does;
- ``sensitivity``: the dimension with the largest share in the interval width of the box's
  worst specification row (a backward pass through ``|W|`` and chord slopes, see
  :meth:`GridProblem.sensitivity`): halving it shrinks that bound the most, to first order;
- ``lookahead``: the best of the top ``k`` sensitivity candidates, judged by bounding both
  children with exact IBP (the split whose worse child is closest to safe).
"""
from __future__ import annotations

from typing import Callable

import torch

from .problem import Problem

#: (lo, hi, alive) -> value per box, larger is closer to proved
ValueFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def focus_coef(margin: torch.Tensor, alive: torch.Tensor, owner: torch.Tensor, mat: torch.Tensor) -> torch.Tensor:
    """Per box, the coefficients ``[B, m]`` of the row worth improving: in the alive disjunct
    whose best row margin is lowest, that best row (zeros if no alive disjunct has rows)."""
    B, n = alive.shape
    if mat.shape[0] == 0:
        return torch.zeros(B, mat.shape[1], dtype=torch.float64, device=mat.device)
    idx = owner.unsqueeze(0).expand_as(margin)
    per_d = torch.full((B, n), -torch.inf, dtype=margin.dtype, device=margin.device)
    per_d = per_d.scatter_reduce(1, idx, margin, reduce="amax", include_self=True)
    worst = torch.where(alive & torch.isfinite(per_d), per_d, torch.full_like(per_d, torch.inf)).argmin(dim=1)
    in_worst = owner.unsqueeze(0) == worst.unsqueeze(1)
    row = torch.where(in_worst, margin, torch.full_like(margin, -torch.inf)).argmax(dim=1)
    return mat[row]


def choose_dims(problem: Problem, method: str, lo: torch.Tensor, hi: torch.Tensor, trace, coef: torch.Tensor,
                alive: torch.Tensor, value: ValueFn | None = None, k: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Split dimensions ``[B]`` (int64) and whether each box can be split at all (``[B]`` bool)."""
    widths = problem.widths(lo, hi)
    splittable = (widths > 0).any(dim=1)
    if method == "widest":
        return widths.argmax(dim=1), splittable
    sens = problem.sensitivity(trace, lo, hi, coef)
    # prefer sensitive dims, then wider ones; never a dim with a single grid point
    score = torch.where(widths > 0, sens + 1e-12 * widths, torch.full_like(sens, -1.0))
    if method != "lookahead" or value is None or k <= 1:
        return score.argmax(dim=1), splittable
    return _lookahead(problem, lo, hi, score, alive, value, k), splittable


def _lookahead(problem: Problem, lo: torch.Tensor, hi: torch.Tensor, score: torch.Tensor, alive: torch.Tensor,
               value: ValueFn, k: int) -> torch.Tensor:
    k = min(k, score.shape[1])
    top = score.topk(k, dim=1)
    cand = top.indices
    los, his, alives = [], [], []
    for j in range(k):
        (l1, h1), (l2, h2) = problem.split(lo, hi, cand[:, j])
        los += [l1, l2]
        his += [h1, h2]
        alives += [alive, alive]
    vals = value(torch.cat(los), torch.cat(his), torch.cat(alives)).reshape(k, 2, -1)
    worse = vals.min(dim=1).values.T                       # [B, k]
    worse = torch.where(top.values > -1.0, worse, torch.full_like(worse, -torch.inf))
    best = worse.argmax(dim=1)                             # first (most sensitive) on ties
    return cand.gather(1, best.unsqueeze(1)).squeeze(1)


__all__ = ["focus_coef", "choose_dims"]
