"""A tensor-backed stack of boxes for branch and bound.

Boxes are popped from the top in batches and their children pushed back on top, so the search is
depth-first over batches (memory grows with depth times batch size, not with the width of the
tree); within each push the boxes are ordered so that the least safe ones are popped first.
"""
from __future__ import annotations

import torch


class BoxStack:
    """Boxes ``[lo, hi]`` (``[D]`` each, stored as ``dtype``), their depth, alive-disjunct mask
    and score (lower = less safe)."""

    def __init__(self, dim: int, n_disjuncts: int, dtype: torch.dtype, device: torch.device,
                 capacity: int = 256) -> None:
        self.dtype, self.device = dtype, device
        self.lo = torch.empty(capacity, dim, dtype=dtype, device=device)
        self.hi = torch.empty(capacity, dim, dtype=dtype, device=device)
        self.depth = torch.empty(capacity, dtype=torch.int32, device=device)
        self.alive = torch.empty(capacity, n_disjuncts, dtype=torch.bool, device=device)
        self.score = torch.empty(capacity, dtype=torch.float64, device=device)
        self.size = 0

    def __len__(self) -> int:
        return self.size

    @property
    def bytes_per_box(self) -> int:
        return 2 * self.lo.shape[1] * self.lo.element_size() + self.alive.shape[1] + 12

    @property
    def nbytes(self) -> int:
        return self.size * self.bytes_per_box

    def _grow(self, need: int) -> None:
        cap = self.lo.shape[0]
        if need <= cap:
            return
        new = max(need, 2 * cap)
        for name in ("lo", "hi", "depth", "alive", "score"):
            old = getattr(self, name)
            t = torch.empty((new,) + tuple(old.shape[1:]), dtype=old.dtype, device=old.device)
            t[: self.size] = old[: self.size]
            setattr(self, name, t)

    def push(self, lo: torch.Tensor, hi: torch.Tensor, depth: torch.Tensor, alive: torch.Tensor,
             score: torch.Tensor) -> None:
        """Push boxes; the lowest score ends on top."""
        n = lo.shape[0]
        if n == 0:
            return
        order = torch.argsort(score, descending=True, stable=True)
        self._grow(self.size + n)
        sl = slice(self.size, self.size + n)
        self.lo[sl], self.hi[sl] = lo[order].to(self.dtype), hi[order].to(self.dtype)
        self.depth[sl], self.alive[sl], self.score[sl] = depth[order].to(torch.int32), alive[order], score[order]
        self.size += n

    def push_split(self, lo: torch.Tensor, hi: torch.Tensor, dims: torch.Tensor, left_hi: torch.Tensor,
                   right_lo: torch.Tensor, depth: torch.Tensor, alive: torch.Tensor, score: torch.Tensor) -> None:
        """Push the two children of each box ``b``: ``hi[dims[b]] = left_hi[b]`` and
        ``lo[dims[b]] = right_lo[b]``; written straight into the storage (no int64 copies). The
        children of the lowest-score parents end on top."""
        n = lo.shape[0]
        if n == 0:
            return
        order = torch.argsort(score, descending=True, stable=True)
        self._grow(self.size + 2 * n)
        rows = torch.arange(self.size, self.size + 2 * n, device=self.device)
        src = order.repeat_interleave(2)
        self.lo[rows] = lo[src].to(self.dtype)
        self.hi[rows] = hi[src].to(self.dtype)
        d = dims[order]
        self.hi[rows[0::2], d] = left_hi[order].to(self.dtype)
        self.lo[rows[1::2], d] = right_lo[order].to(self.dtype)
        self.depth[rows] = depth[src].to(torch.int32)
        self.alive[rows] = alive[src]
        self.score[rows] = score[src]
        self.size += 2 * n

    def peek(self, work_dtype: torch.dtype):
        """All boxes, top of the stack first, without removing them: ``(lo, hi, alive)``."""
        top_first = torch.arange(self.size - 1, -1, -1, device=self.device)
        return (self.lo[top_first].to(work_dtype), self.hi[top_first].to(work_dtype),
                self.alive[top_first].clone())

    def drop_top(self, n: int) -> None:
        """Remove the top ``n`` boxes (e.g. decided elsewhere)."""
        self.size -= min(n, self.size)

    def pop(self, n: int, work_dtype: torch.dtype):
        """Remove up to ``n`` boxes from the top: ``(lo, hi, depth, alive, score)``."""
        n = min(n, self.size)
        sl = slice(self.size - n, self.size)
        out = (self.lo[sl].to(work_dtype), self.hi[sl].to(work_dtype), self.depth[sl].clone(),
               self.alive[sl].clone(), self.score[sl].clone())
        self.size -= n
        return out


__all__ = ["BoxStack"]
