"""The exact procedure in a second process beside branch and bound (``VerifierConfig.portfolio``).

:class:`ExactChild` forks the verifying process once a search has not been decided by the
bounds of its root box (before the root attacks and alpha-CROWN): the child runs the exact
procedure (:func:`qa_lirpa.exact.cpsat.solve_cpsat` or :func:`qa_lirpa.exact.milp.solve_milp`, by
HiGHS or SCIP: :func:`exact_solver`) on
the whole property, every box of it, from the start; the parent goes on with the root attacks and
branch and bound and looks at the child's answer between batches; while branch and bound is behind
it waits for the child part of the time (``VerifierConfig.portfolio_yield``,
:meth:`ExactChild.wait`). The first definitive answer wins; the other side is stopped (the child
by SIGKILL, then reaped: no zombie). The child also dies with its parent (``PR_SET_PDEATHSIG``).

Trust is that of the in-process fallback: the child's ``sat`` comes with input codes that the
exact procedure has already run through ``integer_forward``; the parent re-runs them through its
own exact check (:meth:`qa_lirpa.verify.search.Search._check`, the referee if any) before it
reports ``sat``. An ``unsat`` of the child covers every box of the property (all its disjuncts,
widened by the problem's output error bound as in the fallback). Errors, early stops and a dead
child decide nothing: branch and bound goes on alone.

Fork, not spawn: the child needs the model, and a fresh interpreter would spend seconds importing
torch. The child sets torch to one thread before it touches a tensor (no OpenMP pool after fork).
"""
from __future__ import annotations

import functools
import multiprocessing as mp
import os
import signal
import time
from typing import Optional, Sequence

import numpy as np

from ..base.deadline import Deadline
from ..base.vnnlib import InputSpec


def backend_for(choice: str, small: bool = False) -> str:
    """The exact backend a ``portfolio`` setting names: ``"auto"`` is the MILP solved by SCIP on
    a ``small`` model (at most ``TIGHTEN_UNITS`` hidden units) where PySCIPOpt is importable,
    else CP-SAT where OR-Tools is importable, else the MILP solved by HiGHS."""
    if choice != "auto":
        return choice
    from ..exact import cpsat, scip

    if small and scip.available():
        return "scip"
    return "cpsat" if cpsat.available() else "milp"


def exact_solver(backend: str):
    """The solve function of an exact ``backend``: ``"cpsat"``
    (:func:`qa_lirpa.exact.cpsat.solve_cpsat`), ``"milp"`` (:func:`qa_lirpa.exact.milp.solve_milp`,
    HiGHS) or ``"scip"`` (the same MILP, SCIP); all take the same arguments."""
    if backend == "cpsat":
        from ..exact.cpsat import solve_cpsat

        return solve_cpsat
    from ..exact.milp import solve_milp

    if backend == "scip":
        return functools.partial(solve_milp, solver="scip")
    return solve_milp


def _child_main(conn, backend: str, model, specs: Sequence[InputSpec], shape: tuple, deadline_at: float,
                threads: Optional[int], options: Optional[dict] = None) -> None:
    from ..exact.highs_worker import _die_with_parent

    _die_with_parent()
    try:
        import torch

        torch.set_num_threads(1)
        from ..exact import milp as _milp

        # the parent's HiGHS worker process belongs to the parent: never write to its pipes
        _milp._WORKER = _milp.Worker()
        solve = exact_solver(backend)
        deadline = Deadline(deadline_at)
        for i, spec in enumerate(specs):
            r = solve(model, spec, timeout=deadline, input_shape=shape, threads=threads, **(options or {}))
            name = r.verdict.name
            if name == "SAT":
                conn.send(("SAT", i, np.asarray(r.counterexample, dtype=np.float64), ""))
                return
            if name != "UNSAT":
                conn.send((name, i, None, f"{backend}: {r.verdict.value}"))
                return
        conn.send(("UNSAT", -1, None, ""))
    except BaseException as e:  # noqa: BLE001 - reported; the parent goes on without the child
        try:
            conn.send(("ERROR", -1, None, f"{backend} failed ({type(e).__name__}: {e})"))
        except Exception:  # noqa: BLE001
            pass
    finally:
        conn.close()


#: the longest single wait of :meth:`ExactChild.wait` (``Connection.poll`` fails on infinity)
MAX_WAIT_S = 86400.0


class ExactChild:
    """One exact solve of ``specs`` (all must be unsat for ``unsat``) in a forked process;
    ``options``: keyword arguments of the backend's solve (e.g. ``tighten``, the rigorous LP bound
    tightening of the hidden units first, and for CP-SAT ``presolve``; see
    :func:`qa_lirpa.exact.cpsat.solve_cpsat` and :func:`qa_lirpa.verify.bab.exact_options`)."""

    def __init__(self, backend: str, model, specs: Sequence[InputSpec], shape: tuple, deadline: Deadline,
                 threads: Optional[int] = None, options: Optional[dict] = None) -> None:
        self.backend = backend
        if backend == "cpsat":          # import here, once: every child then starts with it loaded
            from ..exact import cpsat  # noqa: F401
            from ortools.sat.python import cp_model  # noqa: F401
        else:
            from ..exact import milp  # noqa: F401
            if backend == "scip":
                import pyscipopt  # noqa: F401
        ctx = mp.get_context("fork")
        self._conn, child_conn = ctx.Pipe(duplex=False)
        self.t0 = time.monotonic()
        self.proc = ctx.Process(target=_child_main, daemon=True,
                                args=(child_conn, backend, model, list(specs), tuple(shape), deadline.at, threads,
                                      dict(options or {})))
        try:
            self.proc.start()
        except BaseException:                  # e.g. fork's OSError (EAGAIN, ENOMEM): no pipe left open
            self._conn.close()
            raise
        finally:
            child_conn.close()
        self.answer: Optional[tuple] = None
        self.elapsed = 0.0

    def poll(self) -> Optional[tuple]:
        """The child's answer ``(verdict name, spec index, counterexample or None, message)`` once it
        has one (then again on every call), else None. A child that died without answering
        answers ``("ERROR", -1, None, why)``."""
        if self.answer is not None:
            return self.answer
        try:
            if self._conn.poll():
                self.answer = self._conn.recv()
        except (EOFError, OSError):
            self.answer = ("ERROR", -1, None, f"{self.backend} process died (exit code {self.proc.exitcode})")
        if self.answer is not None:
            self.elapsed = time.monotonic() - self.t0
            self.stop()
        return self.answer

    def wait(self, seconds: float) -> Optional[tuple]:
        """Block up to ``seconds`` for the child's answer (this process then leaves its core to
        the child); the answer as :meth:`poll`, or None."""
        if self.answer is None and self.proc is not None and seconds > 0:
            try:
                self._conn.poll(min(seconds, MAX_WAIT_S))
            except (EOFError, OSError):
                pass
        return self.poll()

    def stop(self) -> None:
        """Kill the child if it still runs and reap it (idempotent)."""
        if self.proc is None:
            return
        if self.proc.is_alive():
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.join()
        self.proc.close()
        self.proc = None
        self._conn.close()

    def __del__(self) -> None:  # a parent that forgets stop() still reaps its child
        try:
            self.stop()
        except Exception:  # noqa: BLE001
            pass


__all__ = ["ExactChild", "backend_for", "exact_solver"]
