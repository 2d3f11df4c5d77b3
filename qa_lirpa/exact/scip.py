"""SCIP (PySCIPOpt, optional) as the second solver of the MILP procedure.

:func:`qa_lirpa.exact.milp.solve_milp` with ``solver="scip"`` hands the same model (the same
encoding, integer data, every column integer) to SCIP instead of HiGHS. :func:`solve_mip` has the
contract of :func:`qa_lirpa.exact.highs_worker.solve_mip`: ``(verdict, column values or None,
node count)`` with ``SAT`` (a feasible point: a violation, which the caller re-runs through the
exact semantics before reporting it), ``UNSAT`` (SCIP proved the model infeasible) or ``TIMEOUT``.

Settings (measured, ``benchmarks/results/verifier_reach.md``, session "seventh"): **cut
separation off**. On the first-layer rows of the AAAI'21-family MLPs (hundreds of integer
inputs with wide domains per row) SCIP's separators took most of the time and proved little;
without them its branch and bound (reliability pseudo-cost branching on the hidden units' integer
columns) proves the Fashion-MNIST proxy's hard disjuncts in 0.3-2.3 s that took it 14 s to
over 40 s with them, and that HiGHS decides in 9-60 s or not at all. Heuristics and presolve stay on
(they find the counterexamples of the instances that are not robust), and **ALNS gets the budget of
SCIP's aggressive heuristics setting** (called every 10 depths instead of 20, sub-MIPs of 2000 + 20%
of the nodes instead of 500 + 10%; session "eighth"): it finds the proxy's sample 229 in 0.7-1.2 s
under three random seeds, which SCIP's defaults leave open at 30 s, and the SCIP process falsifies
AAAI'21 MNIST samples 300 and 303 in 2-3 s (before: 7 s, by the HiGHS hand-over). It costs the
hard properties 1-2.6 s each (the same nodes: only the heuristic's own time), and on a second
network of the family it decided nothing more. It stops at the first
feasible point (``limits/solutions = 1``): every feasible point is a violation (the violated row
is a constraint; with ``cost`` it is also the objective, which only guides the search).

Soundness is that of the HiGHS path: SCIP's ``infeasible`` rests on floating-point LPs with its
default tolerances, on a model whose data are integers (a violated integer row misses by at least
1, far above them); its points are checked exactly by the caller. One thread, a fixed random
seed, no output.
"""
from __future__ import annotations

from typing import Optional

from ..base.errors import QaLirpaError
from ..base.verdict import Verdict


class ScipStatusError(QaLirpaError, RuntimeError):
    """SCIP ended with a status that is none of feasible, infeasible or out of resources."""


def available() -> bool:
    """Whether PySCIPOpt (SCIP) can be imported."""
    try:
        import pyscipopt  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return False
    return True


#: the adaptive large-neighbourhood search's budget (the values of SCIP's aggressive heuristics
#: setting for ALNS alone; the module docstring says what they gain and cost)
ALNS = {"heuristics/alns/freq": 10, "heuristics/alns/nodesofs": 2000, "heuristics/alns/nodesquot": 0.2}

#: SCIP statuses that mean "stopped undecided within the resources"
_UNDECIDED = {"timelimit", "memlimit", "nodelimit", "totalnodelimit", "stallnodelimit", "gaplimit",
              "sollimit", "bestsollimit", "restartlimit", "userinterrupt", "unknown"}


def solve_mip(lb: list, ub: list, rows: list, time_limit: float, threads: Optional[int] = None,
              cost: Optional[dict] = None, target: Optional[float] = None, seed: int = 0):
    """Solve the MILP of integer columns with bounds ``lb``/``ub`` and rows ``(coefs, lo, hi)``
    (feasibility, or minimise ``cost`` and stop at the first feasible point: with ``target`` the
    minimised row is one of the rows, so every feasible point has objective at most ``target``).
    ``threads`` is accepted for the common signature; SCIP's LP runs on one thread. ``seed``:
    SCIP's random seed shift (its heuristics', branching's and LP's random choices; another seed
    searches elsewhere, decides the same)."""
    from pyscipopt import Model, SCIP_PARAMSETTING, quicksum

    n = len(lb)
    if n == 0:                                    # nothing to choose (rows always have columns)
        return Verdict.SAT, [], 0
    m = Model()
    m.hideOutput(True)
    xs = [m.addVar(vtype="I", lb=float(lo), ub=float(hi)) for lo, hi in zip(lb, ub)]
    for coefs, lo, hi in rows:
        expr = quicksum(float(a) * xs[j] for j, a in coefs.items())
        if lo is not None and hi is not None:
            m.addCons(float(lo) <= (expr <= float(hi)))
        elif lo is not None:
            m.addCons(expr >= float(lo))
        elif hi is not None:
            m.addCons(expr <= float(hi))
    if cost:
        m.setObjective(quicksum(float(a) * xs[j] for j, a in cost.items()), "minimize")
    m.setParam("limits/time", max(float(time_limit), 1e-3))
    m.setParam("limits/solutions", 1)
    m.setParam("lp/threads", 1)
    m.setParam("randomization/randomseedshift", int(seed))
    m.setParam("display/verblevel", 0)
    m.setSeparating(SCIP_PARAMSETTING.OFF)
    for key, value in ALNS.items():
        m.setParam(key, value)
    m.optimize()
    status = m.getStatus()
    nodes = int(m.getNNodes())
    if m.getNSols() > 0:
        sol = m.getBestSol()
        return Verdict.SAT, [m.getSolVal(sol, v) for v in xs], nodes
    if status in ("infeasible", "inforunbd"):     # every column is bounded: not unbounded
        return Verdict.UNSAT, None, nodes
    if status in _UNDECIDED:
        return Verdict.TIMEOUT, None, nodes
    raise ScipStatusError(f"SCIP ended with status {status!r}")


__all__ = ["ScipStatusError", "available", "solve_mip"]
