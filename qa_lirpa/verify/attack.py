"""Counterexample search: PGD through the straight-through (fake-quant, float64) model, snapped to
the input grid, plus box corners, centres and random grid points, and a greedy descent on the grid
itself (:class:`LocalSearch`: PGD's snapped points are often a few pixel moves short of a violation
that the rounding hides from the straight-through gradient), and an exact procedure on small
neighbourhoods of the descent's best point (:class:`NeighbourhoodSearch`: where the descent stops
one output step short, a violation often needs many coordinated pixel moves).

Nothing here decides a verdict: every candidate is checked by the caller with the exact semantics
(and confirmed by the reference before ``sat``). The candidates are merely likely violators.
"""
from __future__ import annotations

import math
import time
from typing import Callable

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


#: moves scored per forward pass in a step of :class:`LocalSearch` (the deadline is looked at
#: between chunks)
LS_CHUNK = 256

#: candidate values per input dimension in one step of :class:`LocalSearch` (a dimension with at
#: most this many other grid values tries them all)
LS_VALUES = 8


def _move_values(cur: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate new values ``[D, K]`` (int64) of each dimension and which are moves ``[D, K]``:
    every other grid value of a narrow dimension; of a wide one the ends, the neighbours, and
    moves by a quarter and a sixteenth of the width."""
    k = torch.arange(LS_VALUES + 1, device=cur.device)
    width = hi - lo
    narrow = lo.unsqueeze(1) + k.unsqueeze(0)
    step4, step16 = (width // 4).clamp(min=1), (width // 16).clamp(min=1)
    wide = torch.stack([lo, hi, cur - 1, cur + 1, cur - step4, cur + step4, cur - step16, cur + step16,
                        (lo + hi) // 2], dim=1)
    vals = torch.where((width <= LS_VALUES).unsqueeze(1), narrow, wide)
    vals = torch.minimum(torch.maximum(vals, lo.unsqueeze(1)), hi.unsqueeze(1))
    ok = vals != cur.unsqueeze(1)
    # one candidate per distinct value (a clipped wide pattern repeats the ends)
    dup = torch.zeros_like(ok)
    for j in range(1, vals.shape[1]):
        dup[:, j] = (vals[:, :j] == vals[:, j:j + 1]).any(dim=1)
    return vals, ok & ~dup


def _moved(cur: torch.Tensor, dims: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """``[K, D]``: ``cur`` with coordinate ``dims[k]`` set to ``new[k]``, one move per row."""
    pts = cur.unsqueeze(0).repeat(dims.numel(), 1)
    pts[torch.arange(dims.numel(), device=cur.device), dims] = new
    return pts


class LocalSearch:
    """Iterated greedy descent of :func:`violation` (the fake-quant float64 model) on the integer
    grid of the box ``[lo, hi]`` (``[D]`` int64), run in slices (:meth:`advance`) so that a caller
    can interleave it with other work.

    The descents start from ``starts`` (``[S, D]`` grid points) in order, then from the best end
    so far with a random ``max(4, D / 40)`` of its coordinates (at most ``D``) moved to random
    grid values. One step of a descent scores single-coordinate moves (:func:`_move_values`: all
    of them where there are at most ``all_moves``, else the ``candidates`` that the
    straight-through gradient ranks best), then also the point with the best move of each of the
    ``combine`` most improving coordinates at once, and of half of them, and takes the best of
    these if it improves; a descent ends at a local minimum. The search is :attr:`done` once a
    descent ends at a float violation (``violation <= 0``) that ``confirm`` (the caller's exact
    check of points ``[1, D]``; None: any) accepts -- the float model can be off by a rounding
    at such a point. Grid problems only (``problem.integral``); nothing here decides a verdict."""

    def __init__(self, problem: Problem, lo: torch.Tensor, hi: torch.Tensor, ospec: OutputSpec, starts: torch.Tensor,
                 gen: torch.Generator, candidates: int = 64, all_moves: int = 2048, combine: int = 16,
                 confirm: Callable[[torch.Tensor], bool] | None = None) -> None:
        self.p, self.ospec, self.gen, self.confirm = problem, ospec, gen, confirm
        self.lo, self.hi = lo.reshape(-1).to(torch.int64), hi.reshape(-1).to(torch.int64)
        self.candidates, self.all_moves, self.combine = candidates, all_moves, combine
        self.queue = list(starts.to(torch.int64).reshape(starts.shape[0], -1))
        self.ends: list[torch.Tensor] = []
        self.best: torch.Tensor | None = None
        self.best_v = math.inf
        self.done = False
        self._cur: torch.Tensor | None = None    # the descent in progress, and its score
        self._cv = math.inf
        self.n_kick = min(self.lo.numel(), max(4, self.lo.numel() // 40))
        self.chunk = LS_CHUNK

    def _score(self, pts: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return violation(self.p.attack_forward(pts.to(torch.float64)), self.ospec)

    def _step(self, cur: torch.Tensor, cv: float, deadline: Deadline) -> tuple[torch.Tensor, float] | None | bool:
        """One descent step from ``cur``: the better point, None at a local minimum, False when
        ``deadline`` came first (the moves are scored in chunks, :data:`LS_CHUNK` at first; the
        first chunk always is. After a cut the chunks and the moves per step halve, down to one
        move of one forward pass, so that on a large model a step comes to fit a slice and a cut
        costs at most one chunk past the deadline)."""
        vals, ok = _move_values(cur, self.lo, self.hi)
        dims, slot = ok.nonzero(as_tuple=True)
        if dims.numel() == 0 or cv <= -1e30:
            return None
        new = vals[dims, slot]
        if dims.numel() > max(self.candidates, self.all_moves):
            g = _gradient(self.p, cur.unsqueeze(0).to(torch.float64), self.ospec,
                          torch.zeros(1, dtype=torch.bool, device=cur.device))[0]
            keep = torch.argsort(g[dims] * (new - cur[dims]).to(torch.float64))[: self.candidates]
            dims, new = dims[keep], new[keep]
        parts = []
        for i in range(0, dims.numel(), self.chunk):   # the moved points a chunk at a time (memory)
            if parts and deadline.expired():
                self.chunk = max(1, self.chunk // 2)
                self.candidates = max(self.chunk, self.candidates // 2)
                self.all_moves = max(self.chunk, min(self.all_moves, dims.numel()) // 2)
                return False
            parts.append(self._score(_moved(cur, dims[i:i + self.chunk], new[i:i + self.chunk])))
        sc = torch.cat(parts)
        first, seen = [], set()                  # the best move of each coordinate, best first
        for o in torch.argsort(sc).tolist():
            d = int(dims[o])
            if d not in seen:
                seen.add(d)
                first.append(o)
                if len(first) == self.combine:
                    break
        best = torch.tensor(first, dtype=torch.int64, device=cur.device)
        best = best[sc[best] < cv]
        if best.numel() == 0:
            return None
        tries = [_moved(cur, dims[best[:1]], new[best[:1]])[0]]
        for n in (best.numel(), best.numel() // 2):
            if n > 1:
                q = cur.clone()
                q[dims[best[:n]]] = new[best[:n]]
                tries.append(q)
        ts = self._score(torch.stack(tries))
        k = int(ts.argmin())
        return (tries[k].clone(), float(ts[k])) if float(ts[k]) < cv else None

    def _next_start(self) -> torch.Tensor:
        if self.queue:
            return self.queue.pop(0).clone()
        lo, hi = self.lo, self.hi
        start = self.best.clone()
        dims = torch.randperm(lo.numel(), generator=self.gen)[: self.n_kick].to(lo.device)
        u = torch.rand(dims.numel(), generator=self.gen, dtype=torch.float64).to(lo.device)
        width = hi[dims] - lo[dims]
        start[dims] = lo[dims] + (u * (width + 1).to(torch.float64)).to(torch.int64).clamp(max=width)
        return start

    def centre(self) -> torch.Tensor | None:
        """The best descent end so far, else the descent in progress, else the next start (None
        when there is none): where a search after this one best begins."""
        if self.best is not None:
            return self.best
        if self._cur is not None:
            return self._cur
        return self.queue[0] if self.queue else None

    def advance(self, deadline: Deadline, hard: Deadline | None = None) -> list[torch.Tensor]:
        """Go on until ``deadline`` (or :attr:`done`); the descents' end points of this slice. A
        step that has begun is finished unless ``hard`` (default ``deadline``) comes first."""
        hard = deadline if hard is None else hard
        new_ends = []
        while not self.done and not deadline.expired():
            if self._cur is None:
                if not self.queue and self.best is None:
                    self.done = True
                    break
                self._cur = self._next_start()
                self._cv = float(self._score(self._cur.unsqueeze(0))[0])
            moved = self._step(self._cur, self._cv, hard)
            if moved is False:                   # out of time within the step: resume from _cur
                break
            if moved is not None:
                self._cur, self._cv = moved
                continue
            end, v = self._cur, self._cv
            self._cur = None
            self.ends.append(end)
            new_ends.append(end)
            if v < self.best_v:
                self.best, self.best_v = end, v
            if v <= 0 and (self.confirm is None or self.confirm(end.unsqueeze(0))):
                self.done = True
        return new_ends


#: a neighbourhood solver: ``(lo, hi, seconds)`` (int64 ``[D]`` sub-box of the grid) ->
#: ``(codes, answered)``: grid codes ``[D]`` of a violation in it or None, and whether the
#: procedure answered within the time (a violation, or none in the sub-box)
NeighbourhoodSolver = Callable[[torch.Tensor, torch.Tensor, float], "tuple[torch.Tensor | None, bool]"]


class NeighbourhoodSearch:
    """Large-neighbourhood search around a grid point ``centre`` of the box ``[lo, hi]`` (``[D]``
    int64): each round frees ``size`` coordinates (half of them those the straight-through
    gradient at the centre ranks most promising, ``|g_d| * (hi_d - lo_d)``, half at random), fixes
    the others at the centre's values and gives that sub-box to ``solve`` (an exact procedure,
    e.g. CP-SAT minimising the violated row) for at most ``round_s`` seconds. The size doubles
    after a round the procedure answered in time (no violation there: look wider, up to every
    coordinate) and halves after one it left open (down to ``min_size``, or ``size`` if smaller). Grid problems only;
    nothing here decides a verdict: a point it returns goes to the caller's exact check, and a
    neighbourhood without a violation proves nothing about the box."""

    def __init__(self, problem: Problem, lo: torch.Tensor, hi: torch.Tensor, ospec: OutputSpec,
                 centre: torch.Tensor, solve: NeighbourhoodSolver, gen: torch.Generator, size: int = 128,
                 min_size: int = 16, round_s: float = 1.0) -> None:
        self.lo, self.hi = lo.reshape(-1).to(torch.int64).cpu(), hi.reshape(-1).to(torch.int64).cpu()
        self.centre = centre.reshape(-1).to(torch.int64).cpu()
        self.solve, self.gen, self.round_s = solve, gen, float(round_s)
        self.free = (self.hi > self.lo).nonzero().squeeze(1)
        self.size = max(1, int(size))
        self.min_size = max(1, min(int(min_size), self.size))
        self.rounds = 0
        #: a round freed every coordinate and found no violation (the search has nothing left)
        self.exhausted = False
        g = _gradient(problem, centre.reshape(1, -1).to(torch.float64), ospec,
                      torch.zeros(1, dtype=torch.bool, device=centre.device))[0].cpu()
        rank = (g.abs() * (self.hi - self.lo).to(torch.float64))[self.free]
        self.ranked = self.free[torch.argsort(rank, descending=True)]

    def neighbourhood(self) -> torch.Tensor:
        """The coordinates freed in the next round (int64, sorted)."""
        n = min(self.size, self.free.numel())
        top = self.ranked[: n // 2]
        rest = self.ranked[n // 2:]
        pick = rest[torch.randperm(rest.numel(), generator=self.gen)[: n - top.numel()]]
        return torch.sort(torch.cat([top, pick])).values

    def round(self, seconds: float) -> torch.Tensor | None:
        """One round of at most ``min(seconds, round_s)`` seconds: grid codes ``[D]`` of a
        candidate violation, or None."""
        nb = self.neighbourhood()
        sub_lo, sub_hi = self.centre.clone(), self.centre.clone()
        sub_lo[nb], sub_hi[nb] = self.lo[nb], self.hi[nb]
        point, answered = self.solve(sub_lo, sub_hi, max(0.0, min(float(seconds), self.round_s)))
        self.rounds += 1
        if point is None and answered and nb.numel() == self.free.numel():
            self.exhausted = True                  # the whole box answered: no other neighbourhood left
        if point is None:
            self.size = min(self.free.numel(), self.size * 2) if answered else max(self.min_size, self.size // 2)
        return point


#: ``(seconds, seed) -> (codes, answered)``: one run of an exact procedure on the whole box with
#: random seed ``seed``: grid codes ``[D]`` of a violation or None, and whether it answered in time
RestartSolver = Callable[[float, int], "tuple[torch.Tensor | None, bool]"]


class Restarts:
    """Short runs of an exact procedure on the whole box, each with another random seed
    (``first_seed``, ``first_seed + 1``, ...) and about ``round_s`` seconds of this process's CPU
    time. A solver's time to its first feasible point depends on its random choices and is
    heavy-tailed: runs with other seeds find points that one long run misses (on the
    AAAI'21-family networks SCIP with seeds 1 to 5 finds counterexamples its seed-0 run misses in
    30 s). The procedure's limit is in wall-clock seconds, so each run gets ``round_s`` divided by
    the share of a core this process had (``share`` at first, then as measured over the runs):
    the same work whether or not other processes share the cores. Nothing here decides a
    verdict: a point goes to the caller's exact check, and a run that answers without a point
    (the procedure found none on the box) only ends the restarts."""

    def __init__(self, solve: RestartSolver, first_seed: int = 1, round_s: float = 2.0, share: float = 1.0) -> None:
        self.solve, self.seed, self.round_s = solve, int(first_seed), float(round_s)
        self.share = _clamp_share(share)
        self.rounds = 0
        #: a run answered without a violation (another seed would find none either)
        self.exhausted = False

    def round(self, cpu_seconds: float, wall_seconds: float) -> torch.Tensor | None:
        """One run with the next seed, of at most ``min(cpu_seconds, round_s)`` CPU seconds at
        the measured share and at most ``wall_seconds``: grid codes ``[D]`` of a candidate
        violation, or None."""
        limit = min(float(wall_seconds), min(float(cpu_seconds), self.round_s) / self.share)
        w0, c0 = time.perf_counter(), time.process_time()
        point, answered = self.solve(max(0.0, limit), self.seed)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        if wall > 0.05:
            self.share = _clamp_share(cpu / wall)
        self.seed += 1
        self.rounds += 1
        if point is None and answered:
            self.exhausted = True
        return point


def _clamp_share(share: float) -> float:
    """A measured share of a core, kept within [0.1, 1] (a run that waited on nothing else)."""
    return min(1.0, max(0.1, float(share)))


__all__ = ["violation", "box_points", "pgd", "LocalSearch", "NeighbourhoodSearch", "NeighbourhoodSolver",
           "Restarts", "RestartSolver"]
