"""Output specifications: the disjuncts of an :class:`~qa_lirpa.base.vnnlib.InputSpec` stacked
into one row matrix, evaluated soundly on output intervals and exactly on points.

A disjunct ``(mat, rhs)`` is *violated* (the property fails) iff ``mat @ y <= rhs`` holds row by
row; it is *refuted* on a box iff some row has ``min over the box of mat_i @ y - rhs_i > 0``.

Interval evaluation runs in float64 with a rigorous bound on its rounding error (a sum of ``n``
products, inputs themselves rounded once, is off by at most ``(n+3) u`` times the sum of absolute
terms, ``u = 2^-53``, plus underflow); a row counts as refuted only when its computed lower bound
exceeds that error bound. Point checks decide in float64 when the margin is clear and fall back to
exact rational arithmetic (``fractions.Fraction``) otherwise, so they are exact.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Sequence

import numpy as np
import torch

_U = 2.0 ** -53
_TINY = 2.0 ** -1074


@dataclass
class OutputSpec:
    """All disjuncts' rows: ``mat`` float64 ``[R, m]``, ``rhs`` float64 ``[R]``, ``owner`` int64
    ``[R]`` (the disjunct of each row) and ``row_counts`` int64 ``[n_disjuncts]`` (rows per
    disjunct). Per-disjunct reductions are segment reductions over ``owner`` (memory linear in the
    number of rows and disjuncts; no dense ``[R, n_disjuncts]`` matrix)."""

    mat: torch.Tensor
    rhs: torch.Tensor
    owner: torch.Tensor
    row_counts: torch.Tensor
    n_disjuncts: int
    fractions: list[tuple[list[list[Fraction]], list[Fraction]]]

    @classmethod
    def from_disjuncts(cls, disjuncts: Sequence[tuple[np.ndarray, np.ndarray]], n_outputs: int,
                       device: torch.device | str = "cpu") -> "OutputSpec":
        mats, rhss, owner, fr = [], [], [], []
        for d, (m, r) in enumerate(disjuncts):
            m, r = np.asarray(m, dtype=np.float64).reshape(-1, n_outputs), np.asarray(r, dtype=np.float64).reshape(-1)
            if m.shape[0] != r.shape[0]:
                raise ValueError(f"disjunct {d}: {m.shape[0]} rows but {r.shape[0]} right-hand sides")
            if not (np.isfinite(m).all() and np.isfinite(r).all()):
                raise ValueError(f"disjunct {d}: non-finite coefficients")
            mats.append(m), rhss.append(r), owner.extend([d] * m.shape[0])
            fr.append(([[Fraction(float(v)) for v in row] for row in m], [Fraction(float(v)) for v in r]))
        mat = torch.tensor(np.concatenate(mats) if mats else np.zeros((0, n_outputs)), device=device)
        own = torch.tensor(owner, dtype=torch.int64, device=device)
        counts = torch.bincount(own, minlength=len(disjuncts)) if len(owner) else \
            torch.zeros(len(disjuncts), dtype=torch.int64, device=device)
        rhs = torch.tensor(np.concatenate(rhss) if rhss else np.zeros(0), device=device)
        return cls(mat, rhs, own, counts, len(disjuncts), fr)

    @property
    def n_rows(self) -> int:
        return int(self.mat.shape[0])

    def row_bounds(self, ylo: torch.Tensor, yhi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Over ``ylo <= y <= yhi`` (``[B, m]`` float64): the computed lower bounds of
        ``mat_i @ y - rhs_i``, their rigorous float error bounds, and the magnitudes
        ``sum_j |mat_ij| max|y_j| + |rhs_i|`` (a scale for tolerances), all ``[B, R]``."""
        pos, neg = self.mat.clamp(min=0), self.mat.clamp(max=0)
        lb = ylo @ pos.T + yhi @ neg.T - self.rhs
        mag = torch.maximum(ylo.abs(), yhi.abs()) @ self.mat.abs().T + self.rhs.abs()
        n = self.mat.shape[1]
        err = (n + 3) * _U * (1 + (n + 3) * _U) * 1.01 * mag + (n + 1) * _TINY
        return lb, err, mag

    def row_margins(self, ylo: torch.Tensor, yhi: torch.Tensor, tol: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """``(margin, magnitude)``, both ``[B, R]``: the row lower bound minus its float error bound
        and minus ``tol * (1 + magnitude)``; a row is refuted on the box iff its margin is > 0."""
        lb, err, mag = self.row_bounds(ylo, yhi)
        return lb - err - tol * (1 + mag), mag

    def rows_per_disjunct(self, rows: torch.Tensor) -> torch.Tensor:
        """``[B, n_disjuncts]`` int64: how many of each disjunct's rows are True in ``rows`` ``[B, R]``."""
        out = torch.zeros(rows.shape[0], self.n_disjuncts, dtype=torch.int64, device=rows.device)
        return out.index_add_(1, self.owner, rows.to(torch.int64))

    def disjuncts_refuted(self, rows: torch.Tensor) -> torch.Tensor:
        """``[B, n_disjuncts]`` bool: a disjunct is refuted if any of its rows is (none: never)."""
        return self.rows_per_disjunct(rows) > 0

    def box_score(self, margin: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
        """How close a box is to being proved safe: min over alive disjuncts of the best row margin
        (``+inf`` when none is alive, ``-inf`` for an alive disjunct without rows)."""
        big = torch.full_like(margin[:, :1].expand(-1, self.n_disjuncts), -torch.inf).clone()
        if self.n_rows:
            idx = self.owner.unsqueeze(0).expand_as(margin)
            big = big.scatter_reduce(1, idx, margin, reduce="amax", include_self=True)
        big = torch.where(alive, big, torch.full_like(big, torch.inf))
        return big.min(dim=1).values

    def violated_points(self, y: torch.Tensor, exact: Callable[[int], Sequence[Fraction]] | None = None
                        ) -> torch.Tensor:
        """``[N]`` bool: points whose outputs violate some disjunct. ``y``: float64 ``[N, m]``;
        ``exact(n)``: point ``n``'s outputs as rationals, used to decide close calls (None: close
        calls raise)."""
        lb, err, _ = self.row_bounds(y, y)
        holds, fails = lb < -err, lb > err
        unclear = ~(holds | fails)
        if unclear.any():
            if exact is None:
                raise ValueError("violated_points: exact outputs needed to decide a close call")
            holds = holds.clone()
            for n, r in unclear.nonzero().tolist():
                holds[n, r] = self._row_holds(exact(n), r)
        d_hold = self.rows_per_disjunct(holds) == self.row_counts
        return d_hold.any(dim=1)

    def _row_holds(self, y: Sequence[Fraction], r: int) -> bool:
        d = int(self.owner[r])
        first = int((self.owner == d).nonzero()[0])
        coefs, rhs = self.fractions[d]
        row, b = coefs[r - first], rhs[r - first]
        return sum((c * v for c, v in zip(row, y) if c), Fraction(0)) <= b


__all__ = ["OutputSpec"]
