"""Complete verification of quantized networks: branch and bound on the integer input grid.

:class:`Verifier` holds what depends only on the model (interval plans, the CROWN bounded module,
a CPU float64 reference copy) and answers :meth:`Verifier.verify` for any number of properties;
:func:`verify` is the one-shot form.

Contract: ``sat`` only with a counterexample inside the input box whose exact integer outputs
(``qa_lirpa.nn.integer_codes``, re-run at the real point) violate the property; ``unsat`` only when
every grid point is proved safe. For a model with a QuantInput the search always ends (given time);
``timeout`` means the time ran out first. Models without a QuantInput have continuous inputs: the
same search runs on real boxes, may prove the property or find a counterexample (confirmed by the
model's float64 forward), and answers ``unknown`` otherwise.

With ``config.exact_fallback == "milp"`` the exact MILP procedure (:mod:`qa_lirpa.exact.milp`; with
``"cpsat"`` the CP-SAT procedure, :mod:`qa_lirpa.exact.cpsat`) takes over the boxes that branch and bound has not closed after ``config.exact_after`` of the time
budget (see :meth:`Verifier._exact`); the contract above is unchanged.
"""
from __future__ import annotations

import math
import multiprocessing
import os
import time
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..base.deadline import Deadline, as_deadline
from ..base.device import resolve_device
from ..base.vnnlib import InputSpec
from ..graph import UnsupportedOp, as_graph, input_quantizer, op_for
from ..onnx.referee import OnnxReferee
from .config import VerifierConfig
from .continuous import ContinuousProblem
from .grid import GridProblem
from .result import Verdict, VerifyResult, VerifyStats
from .search import Search


def declared_input_shape(model: nn.Module) -> tuple[int, ...] | None:
    """The input shape a model declares: ``model.input_shape`` (ONNX imports; None if symbolic) or
    ``model.arch["in_shape"]`` (qa_lirpa.models checkpoints)."""
    shape = getattr(model, "input_shape", None)
    arch = getattr(model, "arch", None)
    if shape is None and isinstance(arch, dict):
        shape = arch.get("in_shape")
    if shape is None or any(d is None for d in shape):
        return None
    return tuple(int(d) for d in shape)


def infer_input_shape(model: nn.Module, n_inputs: int) -> tuple[int, ...]:
    """The model's input shape (without batch) for ``n_inputs`` flat inputs: the declared one (see
    :func:`declared_input_shape`), else ``(n,)`` for a first Linear layer or ``(C, H, H)`` for a
    first Conv2d."""
    given = declared_input_shape(model)
    if given is not None:
        if math.prod(given) != n_inputs:
            raise ValueError(f"the model takes inputs of shape {given}, the property has {n_inputs} inputs")
        return given
    for _, layer in as_graph(model).items():
        try:
            shape = op_for(layer).input_shape(layer, n_inputs)
        except UnsupportedOp:
            continue
        if shape is not None:
            return shape
    raise ValueError("cannot infer the model's input shape")


def _check_shape(model: nn.Module, shape: tuple[int, ...]) -> None:
    first = input_quantizer(as_graph(model))
    if first is not None and first.spec.per_channel:
        axis = first.spec.axis % (len(shape) + 1)
        if axis == 0 or shape[axis - 1] != first.spec.channels:
            raise ValueError(f"input shape {shape} does not match the per-channel input quantizer "
                             f"({first.spec.channels} channels on axis {first.spec.axis})")


class Verifier:
    """A complete verifier for one model.

    Args:
        model: a quantized ``nn.Sequential`` (qa_lirpa layers). Not modified; copied to CPU float64
            for the exact reference and to ``device`` in float64 for bounds and attacks.
        config: a :class:`VerifierConfig` (defaults if None).
        input_shape: the model input shape without batch (inferred from the first property if None).
        device: overrides ``config.device`` ("auto", "cpu", "cuda", ...).
        referee: what decides concrete points. ``"auto"`` (default): for a model imported from an
            ONNX file (``model.source``, see :func:`qa_lirpa.onnx.load_onnx`) an
            :class:`~qa_lirpa.onnx.referee.OnnxReferee` on that file, so that the verdicts are about
            what onnxruntime computes (float32 input cast, float32 rescaling and layers) and bounds
            carry the :func:`~qa_lirpa.onnx.referee.float32_envelope` (for plain float models
            without a QuantInput the :func:`~qa_lirpa.onnx.referee.float_chain_envelope` on the
            float32-cast input box, infinite for layers it does not model); otherwise None (the exact
            integer semantics). Pass None to verify an imported model's nominal semantics, or a
            referee of your own.
    """

    def __init__(self, model: nn.Module, config: VerifierConfig | None = None,
                 input_shape: Sequence[int] | None = None, device: str | torch.device | None = None,
                 referee="auto") -> None:
        self.config = (config or VerifierConfig()).effective()
        self.device = resolve_device(device if device is not None else self.config.device)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        self.model = model
        self.quantized_input = input_quantizer(as_graph(model)) is not None
        if isinstance(referee, str) and referee == "auto":
            referee = OnnxReferee.for_model(model)
        self.referee = referee
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        self._problem = None
        self._milp_reason: str | None = None
        self._exact_reasons: dict[str, str] = {}
        if self.input_shape is not None:
            self.problem(self.input_shape)

    def problem(self, shape: tuple[int, ...]):
        """The search problem for inputs of ``shape`` (built once, then cached)."""
        if self._problem is None or self._problem.shape != tuple(shape):
            _check_shape(self.model, tuple(shape))
            cfg = self.config
            kw = dict(use_crown=cfg.crown != "never", quant_slack=cfg.quant_slack,
                      alpha_iterations=cfg.alpha_iterations, crown_method=cfg.crown_method,
                      crown_auto_units=cfg.crown_auto_units)
            if self.quantized_input:
                self._problem = GridProblem(self.model, tuple(shape), self.device, referee=self.referee, **kw)
            else:
                self._problem = ContinuousProblem(self.model, tuple(shape), self.device, referee=self.referee, **kw)
        return self._problem

    def verify(self, spec: InputSpec | Sequence[InputSpec], timeout: float | Deadline = 60.0) -> VerifyResult:
        """Decide whether some input of some box in ``spec`` violates its output disjuncts.

        The timeout covers the search, checked between batches (whose size adapts to
        ``config.batch_time``), and the MILP fallback if any. Seconds count from the moment the
        search starts (building the bound machinery for a new model is not counted); a
        :class:`~qa_lirpa.base.deadline.Deadline` is a fixed point in time, whatever comes before.
        """
        specs = [spec] if isinstance(spec, InputSpec) else list(spec)
        stats = VerifyStats()
        if not specs:
            return VerifyResult(Verdict.UNSAT, stats=stats, message="no input box")
        problem = self.problem(self.input_shape or infer_input_shape(self.model, specs[0].n_inputs))
        start = time.monotonic()
        deadline = as_deadline(timeout)
        handover = deadline.fraction(self.config.exact_after)    # the exact fallback's turn, if any
        gen = torch.Generator().manual_seed(self.config.seed)
        if self.config.exact_fallback in ("milp", "cpsat"):
            reason = self.milp_reason(problem)
            if reason:
                stats.exact = f"{self.config.exact_fallback} not used: {reason}"
                handover = None
        else:
            handover = None
        if hasattr(problem, "begin"):                 # a continuous problem: envelopes per run
            problem.begin()
        points0 = self.referee.points if self.referee is not None else 0
        with torch.no_grad():
            result = self._run(problem, specs, stats, deadline, gen, handover, start)
        stats.time_total = time.monotonic() - start
        env = getattr(problem, "envelope", None)
        if env is not None:
            stats.referee_points = self.referee.points - points0
            stats.float32 = env.describe() + f"; {stats.referee_points} points run in onnxruntime"
        if problem.crown_error and not result.message:
            result.message = problem.crown_error
        return result

    def portfolio_backend(self, problem) -> str:
        """The exact backend of the portfolio's process on ``problem`` ("" for ``portfolio:
        none``): :func:`~qa_lirpa.verify.portfolio.backend_for`, "auto" by the model's size."""
        if self.config.portfolio == "none":
            return ""
        from .portfolio import backend_for

        return backend_for(self.config.portfolio, _small_model("auto", problem))

    def milp_reason(self, problem) -> str:
        """Why the exact fallback (MILP or CP-SAT) cannot take over on this model ("" if it can);
        computed once."""
        if self._milp_reason is None:
            self._milp_reason = self.exact_reason(problem, self.config.exact_fallback)
        return self._milp_reason

    def exact_reason(self, problem, backend: str) -> str:
        """Why the exact ``backend`` ("milp", "scip" or "cpsat") cannot decide properties of this model
        ("" if it can); computed once per backend."""
        if backend not in self._exact_reasons:
            # lazy: the exact backends load only when a verify() call may use them (prepare_instance
            # and exact_fallback="none" never do), and exact.cpsat imports verify.intervals at its
            # top, so importing it at module level here would close the cycle verify -> exact -> verify
            if backend == "cpsat":
                from ..exact.cpsat import unsupported_reason
            else:
                from ..exact.milp import unsupported_reason
            if backend == "scip":
                from ..exact import scip

                if not scip.available():
                    self._exact_reasons[backend] = "PySCIPOpt (SCIP) is not installed"
                    return self._exact_reasons[backend]

            env = getattr(problem, "envelope", None)
            if not problem.integral:
                reason = "continuous inputs (no QuantInput)"
            elif env is not None and env.tolerance:
                reason = "hidden quantizers that onnxruntime computes in float32 (not encoded)"
            else:
                reason = unsupported_reason(problem.ref)
            self._exact_reasons[backend] = reason
        return self._exact_reasons[backend]

    def neighbourhood_solver(self, problem, spec: InputSpec):
        """The exact procedure of the neighbourhood search (``config.lns_s``) on ``spec``: CP-SAT
        on a sub-box of the grid (one worker, objective on the violated row, stops at the first
        violation; ``qa_lirpa.exact.cpsat.solve_cpsat``), returning the violation's grid codes
        and whether it answered in time; None where CP-SAT does not encode this model exactly
        (:meth:`exact_reason`). Its ``sat`` is a candidate for :meth:`Search._check` only: the
        search never takes a verdict from it, and its ``unsat`` on a sub-box is dropped."""
        if self.config.lns_s <= 0 or not problem.integral or self.exact_reason(problem, "cpsat"):
            return None
        from ..exact.cpsat import solve_cpsat

        shape = (1,) + tuple(problem.shape)

        def solve(lo: torch.Tensor, hi: torch.Tensor, seconds: float):
            if seconds <= 0:
                return None, False
            r = solve_cpsat(problem.ref, spec, timeout=seconds, input_shape=shape,
                            code_box=(lo.numpy(), hi.numpy()), tighten=False, presolve=False)
            if r.verdict is Verdict.SAT and r.counterexample is not None:
                x = torch.as_tensor(r.counterexample, dtype=torch.float64).reshape(shape)
                return problem.codes(x).reshape(-1), True
            return None, r.verdict is Verdict.UNSAT

        return solve

    def restart_solver(self, problem, spec: InputSpec):
        """The exact procedure of the seed restarts (``config.restart_s``) on ``spec``: SCIP's MILP
        on the whole property (:func:`~qa_lirpa.exact.milp.solve_milp` with ``solver="scip"``, the
        portfolio process's options, the given random seed), returning a violation's grid codes
        and whether it answered in time; None unless ``portfolio: auto`` would run SCIP on this
        model (at most ``TIGHTEN_UNITS`` hidden units, PySCIPOpt importable, the MILP exact:
        :meth:`exact_reason`). Its ``sat`` is a candidate for :meth:`Search._check` only; its
        ``unsat`` only ends the restarts (the proofs stay the portfolio's and the hand-over's). A
        run whose MILP was not even built in time raises ``SolverError`` (which ends them)."""
        if self.config.restart_s <= 0 or not problem.integral:
            return None
        from .portfolio import backend_for

        if backend_for("auto", _small_model("auto", problem)) != "scip" or self.exact_reason(problem, "scip"):
            return None
        from ..exact.milp import SolverError, solve_milp

        shape = (1,) + tuple(problem.shape)
        opts = exact_options(self.config, problem, "scip")

        def solve(seconds: float, seed: int):
            if seconds <= 0:
                return None, False
            r = solve_milp(problem.ref, spec, timeout=seconds, input_shape=shape, solver="scip", seed=seed, **opts)
            if r.verdict is Verdict.TIMEOUT and r.disjuncts_solved == 0:
                # the encoding (and its LP tightening) took the whole run: so would every other one
                raise SolverError(f"the MILP was not built within a run of {seconds:.2f} s")
            if r.verdict is Verdict.SAT and r.counterexample is not None:
                x = torch.as_tensor(r.counterexample, dtype=torch.float64).reshape(shape)
                return problem.codes(x).reshape(-1), True
            return None, r.verdict is Verdict.UNSAT

        return solve

    def _run(self, problem, specs: list[InputSpec], stats: VerifyStats, deadline: Deadline,
             gen: torch.Generator, handover: Deadline | None = None, start: float = 0.0) -> VerifyResult:
        searches, verdicts = [], []
        for s in specs:
            search = Search(problem, s, self.config, stats, deadline, gen, lns=self.neighbourhood_solver(problem, s),
                            restart=self.restart_solver(problem, s))
            v = search.bound_root()
            if v is None:
                searches.append(search)
            else:
                verdicts.append(v)
        portfolio = _Portfolio(self, problem, searches, stats, deadline) if searches else None
        try:
            # the exact process starts now, beside the root attacks and alpha-CROWN
            out = portfolio.check() if portfolio is not None else None
            if out is None:
                out = self._each(searches, verdicts, stats, Search.open_root)
            if out is not None:
                return out
            return self._loop(problem, searches, verdicts, stats, deadline, handover, start, portfolio)
        finally:
            if portfolio is not None:
                portfolio.close()

    def _loop(self, problem, searches: list[Search], verdicts: list, stats: VerifyStats, deadline: Deadline,
              handover: Deadline | None, start: float, portfolio: "_Portfolio | None") -> VerifyResult:
        waited = False
        while searches:
            if portfolio is not None:
                out = portfolio.check()
                if out is not None:
                    return out
            if deadline.expired():
                return VerifyResult(Verdict.TIMEOUT if problem.integral else Verdict.UNKNOWN, stats=stats,
                                    message="time limit reached")
            if not waited and portfolio is not None and portfolio.running and self._behind(searches, deadline):
                portfolio.wait(self._yield_seconds(searches, deadline))
                waited = True                             # then one round of batches
                continue
            waited = False
            if handover is not None and self._handover_due(handover, searches, portfolio, problem):
                handover = None
                exact_deadline = deadline.fraction(self.config.exact_share)
                out = self._exact(problem, searches, stats, deadline, time.monotonic() - start, exact_deadline)
                if isinstance(out, VerifyResult):
                    return out
                if out:                                   # every open box proved safe
                    verdicts.extend(Verdict.UNSAT for _ in searches)
                    searches = []
                    break
                continue                                  # undecided: branch and bound goes on
            out = self._each(searches, verdicts, stats, Search.step)
            if out is not None:
                return out
        if all(v is Verdict.UNSAT for v in verdicts):
            return VerifyResult(Verdict.UNSAT, stats=stats)
        out = portfolio.check() if portfolio is not None else None     # an answer may be waiting
        return out or VerifyResult(Verdict.UNKNOWN, stats=stats, message="boxes too small to split in float64")

    def _each(self, searches: list[Search], verdicts: list, stats: VerifyStats, step) -> VerifyResult | None:
        """``step`` (``Search.open_root`` or ``Search.step``) on every open search: a ``SAT`` ends
        the run (its result); another verdict takes the search off the list."""
        for search in list(searches):
            v = step(search)
            if v is Verdict.SAT:
                return self._sat(search, stats)
            if v is not None:
                verdicts.append(v)
                searches.remove(search)
        return None

    def _handover_due(self, handover: Deadline, searches: list[Search], portfolio: "_Portfolio | None",
                      problem) -> bool:
        """Whether the exact_fallback hand-over runs now: its time has come, the root's local
        searches are done, and the portfolio's process is not running, unless the hand-over runs
        beside it on this model (``exact_beside_portfolio``)."""
        if not handover.expired() or any(s.local_search_pending for s in searches):
            return False
        beside = _small_model(self.config.exact_beside_portfolio, problem)
        return portfolio is None or not portfolio.running or beside

    def _behind(self, searches: list[Search], deadline: Deadline) -> bool:
        """Whether branch and bound should leave its core to the portfolio's process: yielding
        is on (``portfolio_yield``), the root's local searches are done, every search has run a
        batch, at their rates so far the searches would not prove the rest by the deadline, and
        the cores are all busy (:func:`cores_busy`: with a core to spare, waiting would gain the
        process nothing). Scheduling only: both sides stay sound whatever this says."""
        if self.config.portfolio_yield <= 0.0:
            return False
        if any(s.local_search_pending or s.batches == 0 for s in searches):
            return False
        return sum(s.eta() for s in searches) > deadline.remaining() and cores_busy()

    def _yield_seconds(self, searches: list[Search], deadline: Deadline) -> float:
        """How long to wait for the portfolio's process before the next batches: ``y / (1 - y)``
        times the last batches' seconds (so that waiting takes the share ``y`` of the time), the
        rest of the time at ``y = 1``."""
        y = self.config.portfolio_yield
        left = max(0.0, deadline.remaining())
        if y >= 1.0:
            return left
        return min(left, y / (1.0 - y) * sum(max(s.last_batch_seconds, 1e-3) for s in searches))

    def _exact(self, problem, searches: list[Search], stats: VerifyStats, deadline: Deadline,
               elapsed: float, exact_deadline: Deadline | None = None) -> VerifyResult | bool:
        """The MILP on the boxes the searches have left open: a result (``SAT`` with a
        counterexample confirmed by the exact semantics, or ``TIMEOUT`` when the time is up),
        True when every open box is proved safe, False when undecided (the searches go on).

        Soundness: every grid point of the property that the searches have not proved safe lies
        in an open box (dropped boxes were refuted, checked single points too), and in an open
        box only its alive disjuncts can hold (the others were refuted on the box). So "unsat" of
        the MILP on every open box, or on their bounding box (which lies inside the property's
        box), with those disjuncts, proves the property. Each MILP is exact on its integer
        sub-box; "sat" needs the counterexample to pass :meth:`Search._check` (the same exact
        check as branch and bound's own counterexamples). Errors and early stops decide nothing.
        The MILPs stop at ``exact_deadline`` (default ``deadline``; never later than it) and receive
        it as their ``timeout``; branch and bound gets the rest.
        """
        cfg = self.config
        from .portfolio import exact_solver      # lazy: see milp_reason

        solve_exact = exact_solver(cfg.exact_fallback)
        t0 = time.monotonic()
        stop = deadline if exact_deadline is None else exact_deadline.earlier(deadline)
        n_open = sum(len(s.stack) for s in searches)
        per_box = n_open <= cfg.exact_max_boxes
        jobs = []                                   # (search, code lo, code hi, alive, boxes)
        for s in searches:
            lo, hi, alive = s.stack.peek(torch.int64)
            lo, hi, alive = lo.cpu(), hi.cpu(), alive.cpu()
            if per_box:
                jobs.extend((s, lo[i], hi[i], alive[i], 1) for i in range(lo.shape[0]))
            elif lo.shape[0]:
                jobs.append((s, lo.min(dim=0).values, hi.max(dim=0).values, alive.any(dim=0), lo.shape[0]))
        where = "each of the" if per_box else "the bounding box of the"
        note = f"{cfg.exact_fallback} on {where} {n_open} open boxes after {elapsed:.2f} s"
        threads = cfg.exact_threads or None
        shape = (1,) + tuple(problem.shape)
        closed: dict[int, int] = {}                 # per search: boxes proved safe (from the top)
        outcome: VerifyResult | bool = True
        try:
            for s, lo, hi, alive, boxes in jobs:
                if stop.expired():
                    outcome, note = False, note + ": out of time"
                    break
                live = alive.nonzero().reshape(-1).tolist()
                sub = InputSpec(s.lower, s.upper, [_widened(s.spec.disjuncts[d], problem) for d in live])
                stats.milp_calls += 1
                stats.milp_boxes += boxes
                r = solve_exact(problem.ref, sub, timeout=stop, input_shape=shape, threads=threads,
                               code_box=(lo.numpy(), hi.numpy()), hard_timeout=True,
                               **exact_options(cfg, problem, cfg.exact_fallback))
                if r.verdict is Verdict.SAT:
                    x = torch.as_tensor(r.counterexample, dtype=torch.float64).reshape(shape)
                    code = problem.codes(x).reshape(1, -1).to(problem.device)
                    if s._check(code):
                        stats.exact = note + ": sat"
                        return self._sat(s, stats)
                    outcome, note = False, note + ": its counterexample failed the exact check"
                    break
                if r.verdict is not Verdict.UNSAT:
                    outcome, note = False, note + f": {r.verdict.value} after {time.monotonic() - t0:.2f} s"
                    break
                if per_box:
                    closed[id(s)] = closed.get(id(s), 0) + 1
        except Exception as e:  # noqa: BLE001 - a MILP failure only costs the fallback
            outcome, note = False, note + f": failed ({type(e).__name__}: {e})"
        finally:
            stats.time_milp += time.monotonic() - t0
        if outcome is True:
            stats.exact = note + ": unsat"
            return True
        for s in searches:                          # boxes the MILP closed leave the stacks
            s.stack.drop_top(closed.get(id(s), 0))
        if deadline.expired():
            stats.exact = note
            return VerifyResult(Verdict.TIMEOUT, stats=stats, message="time limit reached")
        stats.exact = note + "; branch and bound goes on"
        return False

    @staticmethod
    def _sat(search: Search, stats: VerifyStats) -> VerifyResult:
        x, y = search.found
        return VerifyResult(Verdict.SAT, counterexample=x, outputs=y, stats=stats)


#: "auto" of exact_tighten and cpsat_presolve: on up to this many hidden units, off above (and of
#: cpsat_lp: lazy up to it, eager above)
TIGHTEN_UNITS = 1024


def cores_busy(loadavg: str = "/proc/loadavg") -> bool:
    """Whether the cores this process may use are all busy: more threads runnable right now than
    cores (Linux: the runnable count of ``/proc/loadavg``, this process included), or a one-minute
    load average half a core above their number (the count alone flickers when other processes
    wait for a moment). True when it cannot tell. The counts are the host's, the cores this
    process's affinity: pinned to a few cores of a large host it reads busy more often, under a
    container's CPU quota less often. Only the scheduling depends on it."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        with open(loadavg) as f:
            fields = f.read().split()
        load, runnable = float(fields[0]), int(fields[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0] >= cores + 0.5
        except (AttributeError, OSError):
            return True
    return runnable > cores or load >= cores + 0.5


def _small_model(setting: str, problem) -> bool:
    """``"on"``/``"off"`` as given; ``"auto"``: on for models with at most :data:`TIGHTEN_UNITS`
    hidden units (or an unknown count), off above."""
    if setting != "auto":
        return setting == "on"
    units = getattr(getattr(problem, "crown", None), "units", None)
    return units is None or units <= TIGHTEN_UNITS


def exact_tighten(setting: str, problem) -> bool:
    """Whether the exact procedures tighten every hidden unit's bounds by LPs first
    (``VerifierConfig.exact_tighten``): "auto" does on models with at most ``TIGHTEN_UNITS``
    hidden units (cheap there, and it helps the solvers), not above (on the MNIST conv net the
    LPs alone ate the budget). Either way the procedures stay exact."""
    return _small_model(setting, problem)


def exact_options(config: VerifierConfig, problem, backend: str, domains: bool = False) -> dict:
    """Keyword arguments of one exact solve (:func:`~qa_lirpa.exact.milp.solve_milp` or, for
    ``backend == "cpsat"``, :func:`~qa_lirpa.exact.cpsat.solve_cpsat`) under ``config``: the LP
    tightening (``exact_tighten``) and CP-SAT's presolve (``cpsat_presolve``; "auto" as for the
    tightening: on up to ``TIGHTEN_UNITS`` hidden units, off above, where on the eps=4 MNIST conv
    net CP-SAT decided most hard images faster without it) and CP-SAT's LP (``cpsat_lp``; "auto":
    lazy up to ``TIGHTEN_UNITS`` hidden units, eager above). ``domains``: CP-SAT also gets CROWN's
    domains of the hidden units (``cpsat_crown_domains``); then "auto" presolves on every model
    (with them, on the eps=4 conv net's slow images, presolve took CP-SAT from 17.1 / 30+ / 2.4 /
    4.0 s to 13.0 / 8.2 / 1.2 / 1.6 s). None changes what the solve decides, only how fast."""
    opts = {"tighten": exact_tighten(config.exact_tighten, problem)}
    if backend == "cpsat":
        auto_on = domains and config.cpsat_presolve == "auto"
        opts["presolve"] = _small_model(config.cpsat_presolve, problem) or auto_on
        lp = config.cpsat_lp
        opts["eager_lp"] = lp == "eager" or (lp == "auto" and not _small_model("auto", problem))
    return opts


class _Portfolio:
    """The verifier's side of ``config.portfolio``: starts the exact process
    (:class:`~qa_lirpa.verify.portfolio.ExactChild`) on the open searches' properties once
    ``config.portfolio_after`` seconds have passed, and turns its answer into a result
    (:meth:`check`, between batches). While the process runs, a HiGHS solve of the in-process
    fallback is interrupted as soon as the process answers (``Worker.abort_fd``)."""

    def __init__(self, verifier: Verifier, problem, searches: list[Search], stats: VerifyStats,
                 deadline: Deadline) -> None:
        self.v, self.problem, self.stats, self.deadline = verifier, problem, stats, deadline
        self.searches = list(searches)           # the child's spec i is searches[i]'s property
        self.child = None
        self.done = True
        self.start_at = Deadline.never()
        backend = verifier.portfolio_backend(problem)
        if not backend:
            return
        reason = verifier.exact_reason(problem, backend)
        if not reason and multiprocessing.current_process().daemon:
            # a daemonic process (a worker of a multiprocessing pool) may not start children
            reason = "this process is a daemonic worker, which may not start a process"
        if reason:
            stats.portfolio = f"{backend} not used: {reason}"
            return
        self.backend = backend
        self.done = False
        self.start_at = Deadline.after(verifier.config.portfolio_after)

    def _start(self) -> None:
        from ..exact import milp as _milp
        from .portfolio import ExactChild

        specs = [InputSpec(s.lower, s.upper, [_widened(d, self.problem) for d in s.spec.disjuncts])
                 for s in self.searches]
        shape = (1,) + tuple(self.problem.shape)
        bounds = self._crown_domains() if self.backend == "cpsat" and self.v.config.cpsat_crown_domains else None
        options = exact_options(self.v.config, self.problem, self.backend, domains=bool(bounds))
        if bounds:
            options["unit_bounds"] = bounds
        self.t0 = time.monotonic()
        try:
            self.child = ExactChild(self.backend, self.problem.ref, specs, shape, self.deadline,
                                    threads=self.v.config.exact_threads or None, options=options)
        except OSError as e:                  # the fork failed: branch and bound goes on alone
            self.done = True
            self.stats.portfolio = f"{self.backend} process not started ({type(e).__name__}: {e})"
            return
        self.fd = self.child._conn.fileno()
        _milp._WORKER.abort_fd = self.fd
        self.stats.portfolio = f"{self.backend} process started ({self.v.config.portfolio_after:.2f} s after the root box's bounds)"

    def _crown_domains(self) -> dict | None:
        """CROWN's bounds of the hidden units' codes on the box that holds every open search's
        root box (:meth:`GridProblem.step_code_bounds`; each root box lies in it, so they hold on
        each property's box), or None (no CROWN, a float32 referee, not a grid problem)."""
        bounder = getattr(self.problem, "step_code_bounds", None)
        if bounder is None:
            return None
        boxes = [self.problem.root(s.lower, s.upper) for s in self.searches]
        if any(b is None for b in boxes):
            return None
        lo = torch.stack([b[0] for b in boxes]).amin(dim=0)
        hi = torch.stack([b[1] for b in boxes]).amax(dim=0)
        t0 = time.perf_counter()
        try:
            return bounder(lo, hi)
        except Exception:  # noqa: BLE001 - the domains only speed the solve up
            return None
        finally:
            self.stats.time_bounding += time.perf_counter() - t0

    def check(self) -> VerifyResult | None:
        """A result once the exact process has decided, else None (also when it has stopped
        undecided or failed: branch and bound goes on alone)."""
        if self.done:
            return None
        if self.child is None:
            if self.start_at.expired() and not self.deadline.expired():
                self._start()
            return None
        ans = self.child.poll()
        if ans is None:
            return None
        self._detach()
        self.done = True
        name, i, x, message = ans
        took = f"{self.child.elapsed:.2f} s"
        if name == "UNSAT":
            self.stats.portfolio += f"; unsat after {took}"
            return VerifyResult(Verdict.UNSAT, stats=self.stats)
        if name == "SAT":
            search = self.searches[i]
            shape = (1,) + tuple(self.problem.shape)
            xt = torch.as_tensor(x, dtype=torch.float64).reshape(shape)
            code = self.problem.codes(xt).reshape(1, -1).to(self.problem.device)
            if search._check(code):
                self.stats.portfolio += f"; sat after {took}"
                return Verifier._sat(search, self.stats)
            self.stats.portfolio += f"; its counterexample failed the exact check after {took}"
            return None
        self.stats.portfolio += f"; {message or name.lower()} after {took}"
        return None

    @property
    def running(self) -> bool:
        """Whether the exact process has started and not yet answered."""
        return self.child is not None and not self.done

    def wait(self, seconds: float) -> None:
        """Leave the core to the exact process for up to ``seconds`` (until it answers; the
        answer is then read by :meth:`check`)."""
        if self.running:
            t0 = time.monotonic()
            self.child.wait(min(seconds, max(0.0, self.deadline.remaining())))
            self.stats.time_yield += time.monotonic() - t0

    def _detach(self) -> None:
        from ..exact import milp as _milp

        if self.child is not None and _milp._WORKER.abort_fd == self.fd:
            _milp._WORKER.abort_fd = None

    def close(self) -> None:
        if self.child is not None:
            if not self.done:
                self._detach()
                self.stats.portfolio += f"; stopped after {time.monotonic() - self.t0:.2f} s"
            self.child.stop()


def _widened(disjunct, problem) -> tuple:
    """A disjunct ``mat @ y <= rhs`` widened by the problem's output error bound (onnxruntime's
    float32 outputs): ``mat @ y <= rhs + |mat| @ err``. Proving the widened one unreachable for
    the nominal outputs proves the original one unreachable for onnxruntime's; float64 rounding of
    the widening is covered by the 2^-40 relative slack."""
    err = float(getattr(problem, "output_error", 0.0) or 0.0)
    if not err:
        return disjunct
    mat, rhs = disjunct
    mat = np.asarray(mat, np.float64)
    widen = err * np.abs(mat).sum(axis=1) * (1 + 2.0 ** -40)
    return mat, np.asarray(rhs, np.float64) + widen + 2.0 ** -50 * np.abs(np.asarray(rhs, np.float64))


def verify(model: nn.Module, spec: InputSpec | Sequence[InputSpec], config: VerifierConfig | None = None,
           timeout: float | Deadline = 60.0, device: str | torch.device | None = None,
           input_shape: Sequence[int] | None = None, referee="auto") -> VerifyResult:
    """One-shot :meth:`Verifier.verify` (see :class:`Verifier` for the arguments)."""
    return Verifier(model, config, input_shape=input_shape, device=device, referee=referee).verify(spec, timeout)


__all__ = ["Verifier", "verify", "exact_tighten", "exact_options", "resolve_device", "infer_input_shape", "declared_input_shape"]
