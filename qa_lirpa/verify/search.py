"""The branch-and-bound search over one input box (one :class:`InputSpec`).

Per batch of boxes popped from the stack: exact IBP (CROWN on the boxes IBP leaves open, while it
pays off); boxes whose every disjunct is refuted are dropped; single-point boxes are decided by the
exact semantics; the others have their centres checked exactly, the least safe are attacked now and
then, and the rest are split in two and pushed back.

Soundness: a box is dropped only when each disjunct has a row whose lower bound is proved positive
(exact IBP with a rigorous float error bound, CROWN above a tolerance) or, for a single grid point,
when the exact semantics shows no disjunct holds. ``sat`` needs a point confirmed by the reference
semantics inside the input box. On the grid every split halves a dimension with at least two grid
points, so the search ends.
"""
from __future__ import annotations

import itertools
import math
import time

import numpy as np
import torch

from . import attack
from .branching import choose_dims, focus_coef
from .config import VerifierConfig
from .intervals import Trace
from .problem import Problem
from .queue import BoxStack
from .result import Verdict, VerifyStats
from .spec import OutputSpec
from ..base.deadline import Deadline
from ..base.vnnlib import InputSpec


#: largest batch while the queue is over its memory budget
OVER_BUDGET_BATCH = 16


class CrownPolicy:
    """When to run CROWN on the boxes that IBP leaves open.

    ``always``/``never`` are fixed. ``auto`` compares what matters for a proof, the grid volume
    proved safe per second: in each round it runs ``probe`` batches with CROWN and ``probe``
    without, then the better of the two for ``exploit`` batches (CROWN when neither proves
    anything), and starts again. Volumes are kept as log2 sums (deep boxes underflow floats).
    """

    def __init__(self, mode: str, available: bool, probe: int = 4, exploit: int = 24) -> None:
        self.mode = mode if available else "never"
        self.probe, self.exploit = probe, exploit
        self.round_start = 0
        self.volume = {True: -math.inf, False: -math.inf}    # log2 of the proved volume per phase
        self.seconds = {True: 0.0, False: 0.0}
        self.choice = True

    def use(self, batch: int) -> bool:
        if self.mode != "auto":
            return self.mode == "always"
        k = batch - self.round_start
        if k < 2 * self.probe:
            return k < self.probe
        if k == 2 * self.probe:
            self.choice = self._better()
        if k >= 2 * self.probe + self.exploit:
            self.round_start = batch
            self.volume, self.seconds = {True: -math.inf, False: -math.inf}, {True: 0.0, False: 0.0}
            return True
        return self.choice

    def report(self, used: bool, log_volume: float, seconds: float) -> None:
        """A batch's proved volume (log2, relative to the root) and its duration."""
        self.volume[used] = _log2_add(self.volume[used], log_volume)
        self.seconds[used] += seconds

    def _better(self) -> bool:
        rate = {m: self.volume[m] - math.log2(max(self.seconds[m], 1e-9)) for m in (True, False)}
        if rate[True] == -math.inf and rate[False] == -math.inf:
            return True
        return rate[True] >= rate[False]


def _log2_add(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    hi, lo = max(a, b), min(a, b)
    return hi + math.log2(1.0 + 2.0 ** (lo - hi))


_SEARCH_KEYS = itertools.count()


class Search:
    """Branch and bound for one input box; :meth:`start` then :meth:`step` until it returns a
    verdict (``SAT``, ``UNSAT``, or ``UNKNOWN`` when continuous boxes cannot be halved)."""

    def __init__(self, problem: Problem, spec: InputSpec, config: VerifierConfig, stats: VerifyStats,
                 deadline: Deadline, gen: torch.Generator, lns: attack.NeighbourhoodSolver | None = None,
                 restart: attack.RestartSolver | None = None) -> None:
        self.p, self.cfg, self.stats, self.deadline, self.gen = problem, config, stats, deadline, gen
        #: the exact procedure on the whole box for the seed restarts after the local search
        #: (None: none on this model)
        self.restart_solver = restart
        #: the exact procedure on sub-boxes for the neighbourhood search after them (None: no
        #: such search on this model)
        self.lns_solver = lns
        self.spec = spec
        self.lower, self.upper = np.asarray(spec.lower, np.float64), np.asarray(spec.upper, np.float64)
        if self.lower.size != problem.dim:
            raise ValueError(f"the property has {self.lower.size} inputs, the model {problem.dim}")
        if spec.n_outputs != problem.n_outputs:
            raise ValueError(f"the property has {spec.n_outputs} outputs, the model {problem.n_outputs}")
        self.ospec = OutputSpec.from_disjuncts(spec.disjuncts, spec.n_outputs, problem.device)
        self.work_dtype = torch.int64 if problem.integral else torch.float64
        self.stack = BoxStack(problem.dim, self.ospec.n_disjuncts, problem.storage_dtype(), problem.device)
        self.crown = CrownPolicy(config.crown, problem.crown is not None and self.ospec.n_rows > 0)
        self.box_cost = 0.0      # seconds per box without CROWN (EMA)
        self.crown_cost = 0.0    # seconds per box of CROWN (EMA)
        self.batches = 0
        self.incomplete = False
        self.found: tuple[np.ndarray, np.ndarray] | None = None
        self.crown_time = 0.0
        self.root_log_volume = 0.0
        self._proved = -math.inf
        #: the key of the root's alpha-CROWN slopes (CrownBounder.lower), once they exist
        self._slopes_key = None
        #: the root attack's points (corners, centre, random points, PGD's; grid codes): the
        #: root's local search starts from the best of them
        self._root_points: torch.Tensor | None = None
        #: the root's local search while it has budget left (slices before the batches)
        self._ls: attack.LocalSearch | None = None
        self._ls_left = 0.0
        self._root_box: tuple[torch.Tensor, torch.Tensor] | None = None
        #: then the neighbourhood search around its best point while it has budget left
        self._lns: attack.NeighbourhoodSearch | None = None
        self._lns_left = 0.0
        #: the local search's best point (the neighbourhood search's centre)
        self._centre: torch.Tensor | None = None
        #: then the seed restarts while they have budget left
        self._restarts: attack.Restarts | None = None
        self._restart_left = 0.0
        #: wall and CPU clocks when the search was set up, just before its root bounds (the
        #: restarts' first share of a core)
        self._clock0 = (time.perf_counter(), time.process_time())
        #: the share of the root box's volume that the batches have proved safe so far, and the
        #: seconds they took (the progress that :meth:`eta` extrapolates)
        self.proved_share = 0.0
        self.batch_seconds = 0.0
        self.last_batch_seconds = 0.0
        #: the root box, its alive disjuncts and margins between bound_root and open_root
        self._root: tuple | None = None
        #: the root bound's lower bound of the violation score (``OutputSpec.box_score``; set by
        #: open_root)
        self._root_margin = -math.inf
        #: CPU seconds the local search may still get for a near miss (local_search_solo)
        self._ls_extra = 0.0

    # ----- phases ---------------------------------------------------------------------------
    def start(self) -> Verdict | None:
        """Bound, attack and push the root box: :meth:`bound_root`, then :meth:`open_root`."""
        v = self.bound_root()
        return v if v is not None else self.open_root()

    def bound_root(self) -> Verdict | None:
        """Bound the root box (exact IBP, CROWN): ``UNSAT`` when that refutes every disjunct, else
        None and the box waits for :meth:`open_root`."""
        root = self.p.root(self.lower, self.upper)
        if root is None:
            return Verdict.UNSAT
        lo, hi = root
        self.root_log_volume = float(self.p.log_volume(lo, hi)[0])
        alive = torch.ones(1, self.ospec.n_disjuncts, dtype=torch.bool, device=lo.device)
        self.crown_time = 0.0
        alive, margin = self.bound(lo, hi, alive, None, crown=True)
        self.crown_cost = self.crown_time
        if not alive.any():
            return Verdict.UNSAT
        self._root = (lo, hi, alive, margin)
        return None

    def open_root(self) -> Verdict | None:
        """The root box that :meth:`bound_root` left open: the root attack (``SAT``), alpha-CROWN
        (``UNSAT``), then the local search is set up and the box pushed (None)."""
        lo, hi, alive, margin = self._root
        self._root = None
        if self._attack_root(lo, hi):
            return Verdict.SAT
        if self._alpha_root_ready():
            alive, margin = self._alpha_root(lo, hi, alive, margin)
            if not alive.any():
                return Verdict.UNSAT
        score = self.ospec.box_score(margin, alive)
        self._root_margin = float(score[0])
        self._start_local_search(lo, hi)
        depth = torch.zeros(1, dtype=torch.int32, device=lo.device)
        self.stack.push(lo, hi, depth, alive, score)
        return None

    @property
    def local_search_pending(self) -> bool:
        """Whether the root's local search, the seed restarts or the neighbourhood search after it
        still have budget (each step runs a slice of them first)."""
        return self._ls is not None or self._lns is not None or self._restarts is not None

    def step(self) -> Verdict | None:
        """Process one batch (after a slice of the root's local search, of the seed restarts or
        of the neighbourhood search after it, while they run); a verdict when the search is over."""
        if self._ls is not None and self._local_search_slice():
            return Verdict.SAT
        if self._restarts is not None and self._restarts_due() and self._restart_slice():
            return Verdict.SAT
        if self._lns is not None and self._lns_slice():
            return Verdict.SAT
        if not len(self.stack):
            return Verdict.UNKNOWN if self.incomplete else Verdict.UNSAT
        t0 = time.perf_counter()
        use_crown = self.crown.use(self.batches)
        lo, hi, depth, alive, score = self.stack.pop(self._batch_limit(use_crown), self.work_dtype)
        self._proved = -math.inf
        crown_time = self._process(lo, hi, depth, alive, score, use_crown)
        self.batches += 1
        spent = time.perf_counter() - t0
        if self._proved > -math.inf:
            self.proved_share += 2.0 ** self._proved
        self.batch_seconds += spent
        self.last_batch_seconds = spent
        self.crown.report(use_crown, self._proved, spent)
        self._update_cost(spent, crown_time, lo.shape[0])
        self.stats.queue_peak = max(self.stats.queue_peak, len(self.stack))
        return Verdict.SAT if self.found is not None else None

    def eta(self) -> float:
        """Seconds the batches would need to prove the rest of the root box at their rate so far
        (proved volume share per second); ``inf`` before they have proved anything. A heuristic
        for scheduling only: it decides no verdict."""
        if self.proved_share <= 0.0 or self.batch_seconds <= 0.0:
            return math.inf
        return max(0.0, 1.0 - self.proved_share) * self.batch_seconds / self.proved_share

    # ----- bounding -------------------------------------------------------------------------
    def bound(self, lo, hi, alive, trace: Trace | None, crown: bool, alpha: bool = False):
        """Refute disjuncts on the boxes; returns the new alive mask and row margins ``[B, R]``."""
        t0 = time.perf_counter()
        ylo, yhi = self.p.output_intervals(lo, hi, trace)
        tol = 0.0 if self.p.integral else self.cfg.crown_tol
        margin, mag = self.ospec.row_margins(ylo, yhi, tol)
        alive = alive & ~self.ospec.disjuncts_refuted(margin > 0)
        self.stats.ibp_calls += 1
        if crown and self.crown.mode != "never" and alive.any():
            margin, alive = self._crown(lo, hi, alive, margin, mag, alpha)
        self.stats.bound_calls += 1
        self.stats.boxes_bounded += lo.shape[0]
        self.stats.time_bounding += time.perf_counter() - t0
        return alive, margin

    def _crown(self, lo, hi, alive, margin, mag, alpha: bool):
        """CROWN on the open boxes, for the rows of disjuncts still alive in some of them."""
        t0 = time.perf_counter()
        idx = alive.any(dim=1).nonzero().squeeze(1)
        rows = alive[idx].any(dim=0)[self.ospec.owner].nonzero().squeeze(1)
        C = self.ospec.mat[rows].unsqueeze(0).expand(idx.numel(), -1, -1)
        lb = self.p.crown_lower(lo[idx], hi[idx], C, alpha=alpha, key=self._slopes_key) - self.ospec.rhs[rows]
        cm = lb - self.cfg.crown_tol * (1 + mag[idx][:, rows])
        margin = margin.clone()
        sub = margin[idx]
        sub[:, rows] = torch.maximum(sub[:, rows], cm)
        margin[idx] = sub
        self.stats.crown_calls += 1
        self.crown_time = time.perf_counter() - t0
        return margin, alive & ~self.ospec.disjuncts_refuted(margin > 0)

    def _alpha_root_ready(self) -> bool:
        crown = self.p.crown
        return (self.cfg.alpha_root and self.crown.mode != "never" and crown is not None
                and getattr(crown, "alpha_ok", False) and getattr(crown, "method", "") == "CROWN"
                and not self.deadline.expired())

    def _alpha_root(self, lo, hi, alive, margin):
        """alpha-CROWN on the root box for the rows still open after CROWN and the root attack
        (cheap properties never get here); the margins only improve. The optimised slopes are
        kept, and CROWN on this search's boxes uses them from then on."""
        t0 = time.perf_counter()
        ylo, yhi = self.p.output_intervals(lo, hi)
        _, mag = self.ospec.row_margins(ylo, yhi, 0.0 if self.p.integral else self.cfg.crown_tol)
        if self.cfg.alpha_reuse:
            self._slopes_key = ("search", next(_SEARCH_KEYS))   # this search's boxes reuse the slopes
        margin, alive = self._crown(lo, hi, alive, margin, mag, alpha=True)
        self.stats.alpha_calls += 1
        self.stats.time_alpha += time.perf_counter() - t0
        return alive, margin

    # ----- one batch ------------------------------------------------------------------------
    def _process(self, lo, hi, depth, alive, score, use_crown: bool) -> float:
        """Bound, decide or split one batch; returns the seconds spent in CROWN."""
        trace = Trace() if self.p.integral and self.cfg.branching != "widest" else None
        self.crown_time = 0.0
        alive0 = alive
        alive, margin = self.bound(lo, hi, alive, trace, crown=use_crown)
        crown_time = self.crown_time
        if self.deadline.expired():  # out of time: leave the batch as it was
            self.stack.push(lo, hi, depth, alive0, score)
            return crown_time
        open_ = alive.any(dim=1)
        points = open_ & self.p.is_point(lo, hi)
        if self.p.integral and self.cfg.leaf_points > 1:   # small boxes: every point, in one batch
            points = open_ & (self.p.log_volume(lo, hi) <= math.log2(self.cfg.leaf_points))
        done = ~open_ | points                 # dropped now (points after their exact check)
        self._proved = self._log_volume(lo[done], hi[done])
        if points.any():
            pts = grid_points(lo[points], hi[points]) if self.p.integral else lo[points]
            if self._check(pts):
                return crown_time
        keep = (open_ & ~points).nonzero().squeeze(1)
        if keep.numel() == 0:
            return crown_time
        lo, hi, depth, alive, margin = lo[keep], hi[keep], depth[keep], alive[keep], margin[keep]
        score = self.ospec.box_score(margin, alive)
        if self._falsify(lo, hi, score):
            return crown_time
        self._split(lo, hi, depth, alive, margin, score, None if trace is None else trace.select(keep))
        return crown_time

    def _split(self, lo, hi, depth, alive, margin, score, trace) -> None:
        coef = focus_coef(margin, alive, self.ospec.owner, self.ospec.mat)
        dims, ok = choose_dims(self.p, self.cfg.branching, lo, hi, trace, coef, alive,
                               self._value, self.cfg.lookahead_k)
        if not ok.all():
            self.incomplete = True
            lo, hi, depth, alive, score, dims = lo[ok], hi[ok], depth[ok], alive[ok], score[ok], dims[ok]
        left_hi, right_lo = self.p.split_points(lo, hi, dims)
        d = depth + 1
        if d.numel():
            self.stats.max_depth = max(self.stats.max_depth, int(d.max()))
        self.stack.push_split(lo, hi, dims, left_hi, right_lo, d, alive, score)

    def _value(self, lo, hi, alive) -> torch.Tensor:
        """Lookahead value of boxes: the sum over alive disjuncts of their best row margin
        clipped at 0 (0: proved); exact IBP only."""
        ylo, yhi = self.p.output_intervals(lo, hi)
        margin, _ = self.ospec.row_margins(ylo, yhi, 0.0 if self.p.integral else self.cfg.crown_tol)
        self.stats.boxes_bounded += lo.shape[0]
        per_d = torch.full(alive.shape, -1e30, dtype=torch.float64, device=lo.device)
        if self.ospec.n_rows:
            idx = self.ospec.owner.unsqueeze(0).expand_as(margin)
            per_d = per_d.scatter_reduce(1, idx, margin, reduce="amax", include_self=True)
        return torch.where(alive, per_d.clamp(max=0), torch.zeros_like(per_d)).sum(dim=1)

    # ----- counterexamples ------------------------------------------------------------------
    def _falsify(self, lo, hi, score) -> bool:
        """Exact checks of box centres (bab) and attacks on the least safe boxes."""
        if not self.cfg.falsify:
            return False
        if self.cfg.method != "paper":
            sel = torch.argsort(score)[: self.cfg.centre_checks]
            l, h = lo[sel], hi[sel]
            centre = self.p.snap(l.to(torch.float64) + (h - l).to(torch.float64) / 2, l, h)
            if self._check(centre):
                return True
        every = self.cfg.attack_every
        if every and self.batches % every == 0 and self.cfg.attack_steps and not self.deadline.expired():
            sel = torch.argsort(score)[: self.cfg.attack_boxes]
            t0 = time.perf_counter()
            pts = attack.pgd(self.p, lo[sel], hi[sel], self.ospec, self.cfg.attack_steps, 1, self.gen, self.deadline)
            self.stats.attack_calls += 1
            self.stats.time_attack += time.perf_counter() - t0
            return self._check(pts)
        return False

    def _attack_root(self, lo, hi) -> bool:
        if not self.cfg.falsify:
            return False
        t0 = time.perf_counter()
        pts = attack.box_points(self.p, lo, hi, self.cfg.random_points, self.gen)
        self._root_points = pts
        self.stats.time_attack += time.perf_counter() - t0
        if self._check(pts):
            return True
        if not (self.cfg.attack_steps and self.cfg.attack_restarts):
            return False
        t0 = time.perf_counter()
        pts = attack.pgd(self.p, lo, hi, self.ospec, self.cfg.attack_steps, self.cfg.attack_restarts,
                         self.gen, self.deadline)
        self.stats.attack_calls += 1
        self.stats.time_attack += time.perf_counter() - t0
        self._root_points = torch.cat([self._root_points, pts])
        return self._check(pts)

    def _start_local_search(self, lo, hi) -> None:
        """Set up :class:`attack.LocalSearch` on the root box from the best root attack points
        (``config.local_search_starts``), for ``config.local_search_s`` seconds of this process's
        CPU time in all (so that it does the same work when other processes share the cores; the
        search is deterministic given the seed and that work); ``config.local_search_solo`` times
        that where no seed restarts follow and its best end is then a :func:`near_miss`. Its slices
        (:data:`LOCAL_SEARCH_SLICE` s) come before the batches of the steps, the first one after
        the portfolio's exact process has started; easy properties end after a slice or two."""
        pts = self._root_points
        self._root_box = (lo, hi)
        if not self.cfg.falsify or self.cfg.local_search_s <= 0 or not self.p.integral or pts is None:
            self._start_restarts()
            return
        with torch.no_grad():
            v = attack.violation(self.p.attack_forward(pts.to(torch.float64)), self.ospec)
        starts = pts[torch.argsort(v)[: max(1, self.cfg.local_search_starts)]]
        # its own random stream: the search's other random draws (the box attacks) stay what they
        # are without it
        own = torch.Generator().manual_seed(int(self.cfg.seed) + 1)
        self._ls = attack.LocalSearch(self.p, lo[0], hi[0], self.ospec, starts, own, confirm=self._check,
                                      candidates=self.cfg.local_search_moves)
        self._ls_left = self.cfg.local_search_s
        extra = max(0.0, self.cfg.local_search_solo - 1.0) * self.cfg.local_search_s
        self._ls_extra = 0.0 if self._restarts_follow else extra
        self.stats.local_search_calls += 1

    def _local_search_slice(self) -> bool:
        """One slice of the root's local search; True when it found a counterexample (exactly
        checked, recorded in ``found``)."""
        t0, c0 = time.perf_counter(), time.process_time()
        stop = Deadline.after(min(LOCAL_SEARCH_SLICE, self._ls_left)).earlier(self.deadline)
        ends = self._ls.advance(stop, hard=Deadline.after(LOCAL_SEARCH_SLICE + LOCAL_SEARCH_GRACE).earlier(self.deadline))
        self._ls_left -= time.process_time() - c0      # CPU time: the same work on a busy machine
        self.stats.time_attack += time.perf_counter() - t0
        if self.found is None and ends:     # the float score can also miss by a rounding the other way
            self._check(torch.stack(ends))
        if self._ls_left <= 0 and self._ls_extra > 0 and near_miss(self._ls.best_v, self._root_margin):
            self._ls_left += self._ls_extra
            self._ls_extra = 0.0
            self.stats.local_search_extended += 1
        if self.found is not None or self._ls.done or self._ls_left <= 0:
            if self.found is None:
                self._centre = self._ls.centre()
                self._start_restarts()
            self._ls = None
        return self.found is not None

    def _start_lns(self, centre: torch.Tensor | None) -> None:
        """After the seed restarts (or the local search where there are none): set up
        :class:`attack.NeighbourhoodSearch` around the local search's best point, for
        ``config.lns_s`` seconds of this process's CPU time (the exact procedure's threads
        included), where the model has a neighbourhood solver."""
        if self.lns_solver is None or self.cfg.lns_s <= 0 or centre is None or self._root_box is None:
            return
        lo, hi = self._root_box
        own = torch.Generator().manual_seed(int(self.cfg.seed) + 2)
        self._lns = attack.NeighbourhoodSearch(self.p, lo[0], hi[0], self.ospec, centre, self.lns_solver, own,
                                               size=self.cfg.lns_size)
        self._lns_left = self.cfg.lns_s

    def _lns_slice(self) -> bool:
        """One round of the neighbourhood search; True when it found a counterexample (exactly
        checked, recorded in ``found``). A solver error ends the search (it only ever finds)."""
        seconds = min(self._lns_left, self.deadline.remaining())
        ok, cpu = self._falsifier_round(lambda: self._lns.round(seconds) if seconds > 0 else None, "lns_error")
        self.stats.lns_rounds += 1
        self._lns_left = self._lns_left - cpu if ok else 0.0
        if self.found is not None or self._lns_left <= 0 or self.deadline.expired() or self._lns.exhausted:
            self._lns = None
        return self.found is not None

    def _falsifier_round(self, run, error_field: str) -> tuple[bool, float]:
        """One round of an exact falsifier (``run()``: grid codes ``[D]`` of a candidate, or
        None), its candidate through :meth:`_check`. Returns whether it ran without an error (an
        error is recorded in ``stats.<error_field>``: a falsifier's failure decides nothing) and
        the CPU seconds the round took."""
        t0, c0 = time.perf_counter(), time.process_time()
        ok = True
        try:
            point = run()
        except Exception as e:  # noqa: BLE001 - a falsifier's failure decides nothing
            setattr(self.stats, error_field, f"{type(e).__name__}: {e}")
            point, ok = None, False
        cpu = time.process_time() - c0
        self.stats.time_attack += time.perf_counter() - t0
        if point is not None:
            self._check(point.reshape(1, -1).to(self._root_box[0].device))
        return ok, cpu

    @property
    def _restarts_follow(self) -> bool:
        """Whether the seed restarts run after the local search (a restart solver on this model,
        falsification on, a budget)."""
        return self.restart_solver is not None and self.cfg.falsify and self.cfg.restart_s > 0

    def _start_restarts(self) -> None:
        """After the local search: set up :class:`attack.Restarts` (``config.restart_s`` seconds
        of this process's CPU time, runs of about ``config.restart_round_s``) where the model has a
        restart solver and falsification is on, else go on to the neighbourhood search. Their
        first share of a core is this search's since it was set up."""
        if not self._restarts_follow:
            self._start_lns(self._centre)
            return
        wall, cpu = time.perf_counter() - self._clock0[0], time.process_time() - self._clock0[1]
        self._restarts = attack.Restarts(self.restart_solver, first_seed=int(self.cfg.seed) + 1,
                                         round_s=self.cfg.restart_round_s, share=cpu / wall if wall > 0 else 1.0)
        self._restart_left = self.cfg.restart_s

    def _restarts_due(self) -> bool:
        """Whether the next restart run goes before this step's batch: only while branch and
        bound is behind (:meth:`eta`: at its rate so far it would not prove the rest of the root
        box by the deadline; always before it has proved anything). Where its batches are on
        track they keep the process's time; the restarts wait (scheduling only: no verdict
        depends on it)."""
        return self.eta() > self.deadline.remaining()

    def _restart_slice(self) -> bool:
        """One run of the seed restarts; True when it found a counterexample (exactly checked,
        recorded in ``found``). A solver error ends them (they only ever find); the
        neighbourhood search follows them."""
        left = self.deadline.remaining()
        ok, cpu = self._falsifier_round(
            lambda: self._restarts.round(self._restart_left, left) if left > 0 and self._restart_left > 0 else None,
            "restart_error")
        self.stats.restart_rounds += 1
        self._restart_left = self._restart_left - cpu if ok else 0.0
        if (self.found is not None or self._restart_left <= 0 or self.deadline.expired()
                or self._restarts.exhausted):
            self._restarts = None
            if self.found is None:
                self._start_lns(self._centre)
        return self.found is not None

    def _check(self, points: torch.Tensor) -> bool:
        """Exact check of points ``[N, D]``; a confirmed violation is recorded (True). A violating
        grid point that no real input of the box reaches is not a counterexample (and is safe to
        drop: it is not in the input set). No points (``centre_checks: 0``): nothing to check."""
        if points.shape[0] == 0:
            return False
        t0 = time.perf_counter()
        try:
            self.stats.points_checked += points.shape[0]
            found = self.p.find_violation(points, self.lower, self.upper, self.ospec)
            if found is not None:
                self.found = found
                return True
            return False
        finally:
            self.stats.time_exact += time.perf_counter() - t0

    # ----- bookkeeping ----------------------------------------------------------------------
    def _log_volume(self, lo: torch.Tensor, hi: torch.Tensor) -> float:
        """log2 of the summed volume of boxes relative to the root's (grid points, or measure)."""
        if lo.shape[0] == 0:
            return -math.inf
        lv = self.p.log_volume(lo, hi) - self.root_log_volume
        top = float(lv.max())
        return top + math.log2(float(torch.exp2(lv - top).sum()))

    def _batch_limit(self, use_crown: bool) -> int:
        """Boxes per batch: as many as fit in ``batch_time`` at the measured per-box costs. Over
        the queue's memory budget at most :data:`OVER_BUDGET_BATCH`: children go on top of the
        stack, so popping ``k`` boxes at a time adds at most ``k`` boxes per tree level, and the
        queue stays below the budget plus ``k`` times the depth."""
        cost = self.box_cost + (self.crown_cost if use_crown else 0.0)
        n = self.cfg.batch_size if cost <= 0 else int(self.cfg.batch_time / cost)
        n = max(1, min(self.cfg.batch_size, n, 16 if self.batches == 0 else n))
        if self.stack.nbytes > self.cfg.queue_mem_mb * 2 ** 20:
            n = min(n, OVER_BUDGET_BATCH)
        return n

    def _update_cost(self, spent: float, crown_time: float, n: int) -> None:
        n = max(n, 1)
        self.box_cost = _ema(self.box_cost, max(spent - crown_time, 1e-9) / n)
        if crown_time > 0:
            self.crown_cost = _ema(self.crown_cost, crown_time / n)


#: seconds of the root's local search before each batch while it has budget; a descent step that
#: has begun may run this much longer before it is cut (and the next steps made smaller)
LOCAL_SEARCH_SLICE = 0.25
LOCAL_SEARCH_GRACE = 0.5


#: a descent's best end is a near miss when its violation is at most this share of the root
#: bound's depth below zero (issue 14: on the eps=4 MNIST conv net the two hard
#: counterexamples' descents stood at 0.1-5% of it after 3 s, the robust timeouts' at 40-100%)
LOCAL_SEARCH_NEAR_MISS = 0.1


def near_miss(best: float, root_margin: float, share: float = LOCAL_SEARCH_NEAR_MISS) -> bool:
    """Whether a local search's best violation score ``best`` (> 0: no violation yet) is within
    ``share`` of the root bound's depth ``-root_margin`` (``root_margin`` < 0: the root box's lower
    bound of the same score, from IBP, CROWN or alpha-CROWN). Where the bound lies that much
    deeper than the best point, the gap is more likely the bound's than a missed violation.
    Scheduling only: no verdict depends on it."""
    return root_margin < 0 and math.isfinite(root_margin) and best <= share * -root_margin


def grid_points(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Every integer point of the boxes ``[lo, hi]`` (``[B, D]``), stacked ``[N, D]`` (int64)."""
    out = []
    for l, h in zip(lo.to(torch.int64), hi.to(torch.int64)):
        dims = (h > l).nonzero().squeeze(1)
        if dims.numel() == 0:
            out.append(l.unsqueeze(0))
            continue
        axes = [torch.arange(int(l[d]), int(h[d]) + 1, device=l.device) for d in dims.tolist()]
        combo = torch.cartesian_prod(*axes).reshape(-1, dims.numel())
        pts = l.unsqueeze(0).repeat(combo.shape[0], 1)
        pts[:, dims] = combo
        out.append(pts)
    return torch.cat(out) if out else lo.to(torch.int64)


def _ema(old: float, new: float) -> float:
    return new if old == 0 else 0.7 * old + 0.3 * new


__all__ = ["Search", "CrownPolicy"]
