"""CROWN's domains for the exact CP-SAT process (``GridProblem.step_code_bounds``,
``solve_cpsat(unit_bounds=...)``, ``VerifierConfig.cpsat_crown_domains``): the bounds hold at every
grid point of small random boxes (chain and DAG networks, enumerated), CP-SAT honours them, agrees
with enumeration with them, and rejects bounds that contradict the exact interval boxes."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from benchscripts import load_benchmark

from qa_lirpa.graph import as_graph
from qa_lirpa.verify import VerifierConfig
from qa_lirpa.verify.grid import GridProblem

sc = load_benchmark("soundness_campaign.py", "soundness_campaign")
HAVE_ORTOOLS = importlib.util.find_spec("ortools") is not None
CHAIN = [910000 + i for i in range(10)]
DAG = [sc.DAG_OFFSET + 910000 + i for i in range(10)]


def _problem(case) -> GridProblem:
    return GridProblem(case.model, sc._shape(case.meta), torch.device("cpu"))


def _bounds(case):
    problem = _problem(case)
    root = problem.root(case.spec.lower, case.spec.upper)
    assert root is not None
    return problem, root, problem.step_code_bounds(*root)


def _codes_at_grid(problem: GridProblem, case) -> dict:
    """Every node's exact codes (by node index) at every grid point of the case's box."""
    shape = (-1,) + tuple(problem.shape)
    codes = problem.codes(case.grid.to(torch.float64).reshape(shape))
    boxes = problem.net.node_boxes(codes, codes)
    return {node.index: boxes[node.name] for node in as_graph(problem.ref).nodes}


@pytest.mark.parametrize("seed", CHAIN + DAG)
def test_bounds_hold_at_every_grid_point(seed):
    case = sc.make_case(seed)
    problem, _, bounds = _bounds(case)
    assert bounds, f"no bounds for case {seed}"
    at = _codes_at_grid(problem, case)
    for index, units in bounds.items():
        lo = torch.tensor([u[0] for u in units], dtype=torch.int64)
        hi = torch.tensor([u[1] for u in units], dtype=torch.int64)
        box = at[index]
        assert torch.equal(box.lo, box.hi)           # a point's box is its codes
        codes = box.lo.reshape(box.lo.shape[0], -1)
        assert codes.shape[1] == lo.numel(), (seed, index)
        assert bool(((lo <= codes) & (codes <= hi)).all()), (seed, index)


def test_bounds_are_tighter_than_intervals_somewhere():
    """On boxes wide enough for the intervals to be loose, CROWN's domains narrow some unit (else
    they would be useless, and a conversion that widened them to the code range would pass the
    test above)."""
    narrower = 0
    for seed in CHAIN:
        case = sc.make_case(seed)
        problem, (lo, hi), bounds = _bounds(case)
        shape = (1,) + tuple(problem.shape)
        boxes = problem.net.node_boxes(lo.reshape(shape), hi.reshape(shape))
        names = {node.index: node.name for node in as_graph(problem.ref).nodes}
        for index, units in bounds.items():
            box = boxes[names[index]]
            ibp = list(zip(box.lo.reshape(-1).tolist(), box.hi.reshape(-1).tolist()))
            narrower += sum(c[1] - c[0] < b[1] - b[0] for c, b in zip(units, ibp))
    assert narrower > 0


def test_no_bounds_without_crown_or_with_a_mismatch(monkeypatch):
    case = sc.make_case(CHAIN[0])
    problem = _problem(case)
    lo, hi = problem.root(case.spec.lower, case.spec.upper)
    problem.crown, saved = None, problem.crown
    assert problem.step_code_bounds(lo, hi) is None
    problem.crown = saved
    real = saved.step_intervals

    def shifted(xlo, xhi):       # the steps' values no longer match their graph nodes
        return [(v + 1.0, a, b) for v, a, b in real(xlo, xhi)]

    monkeypatch.setattr(saved, "step_intervals", shifted)
    assert problem.step_code_bounds(lo, hi) is None


@pytest.mark.skipif(not HAVE_ORTOOLS, reason="OR-Tools not installed")
@pytest.mark.parametrize("seed", CHAIN + DAG)
def test_cpsat_with_crown_domains_agrees_with_enumeration(seed):
    from qa_lirpa.exact.cpsat import solve_cpsat

    case = sc.make_case(seed)
    _, _, bounds = _bounds(case)
    r = solve_cpsat(case.model, case.spec, timeout=20, input_shape=(1,) + sc._shape(case.meta),
                    tighten=seed % 2 == 0, presolve=False, eager_lp=True, unit_bounds=bounds)
    assert r.verdict.value == case.truth, seed
    if case.truth == "sat":
        assert sc.check_counterexample(case, r.counterexample) == ""


@pytest.mark.skipif(not HAVE_ORTOOLS, reason="OR-Tools not installed")
def test_cpsat_honours_the_unit_bounds():
    """Domains pinned to the codes of a grid point that does not violate the property leave
    CP-SAT no violation (unsat), where the same sat property without them is sat: the bounds
    reach the model."""
    from qa_lirpa.exact.cpsat import solve_cpsat

    done = 0
    for seed in range(920000, 920200):
        case = sc.make_case(seed)
        violated = sc.violated_rows(case.outputs, case.spec.disjuncts)
        if case.truth != "sat" or violated.all():
            continue
        problem = _problem(case)
        at = _codes_at_grid(problem, case)
        q = int(np.flatnonzero(~violated)[0])
        steps = problem.step_code_bounds(*problem.root(case.spec.lower, case.spec.upper)) or {}
        pinned = {index: [(v, v) for v in at[index].lo[q].reshape(-1).tolist()] for index in steps}
        if not pinned:
            continue
        kw = dict(timeout=20, input_shape=(1,) + sc._shape(case.meta), tighten=False, presolve=False)
        assert solve_cpsat(case.model, case.spec, **kw).verdict.value == "sat"
        assert solve_cpsat(case.model, case.spec, unit_bounds=pinned, **kw).verdict.value == "unsat", seed
        done += 1
        if done == 3:
            break
    assert done == 3


@pytest.mark.skipif(not HAVE_ORTOOLS, reason="OR-Tools not installed")
def test_contradicting_bounds_are_an_error():
    from qa_lirpa.exact.cpsat import CpsatEncodingError, solve_cpsat

    case = sc.make_case(CHAIN[1])
    _, _, bounds = _bounds(case)
    index, units = next(iter(bounds.items()))
    bad = dict(bounds)
    bad[index] = [(units[0][1] + 1000, units[0][1] + 1000)] + units[1:]
    with pytest.raises(CpsatEncodingError, match="without a value"):
        solve_cpsat(case.model, case.spec, timeout=20, input_shape=(1,) + sc._shape(case.meta),
                    tighten=False, unit_bounds=bad)


@pytest.mark.skipif(not HAVE_ORTOOLS, reason="OR-Tools not installed")
@pytest.mark.parametrize("on", [True, False])
def test_the_portfolio_hands_the_domains_to_cpsat(monkeypatch, on):
    """``cpsat_crown_domains`` decides whether the CP-SAT process gets ``unit_bounds``; the
    verdict is enumeration's either way."""
    from qa_lirpa.verify import portfolio, verify

    seen = []

    class Spy(portfolio.ExactChild):
        def __init__(self, backend, model, specs, shape, deadline, threads=None, options=None):
            seen.append(dict(options or {}))
            super().__init__(backend, model, specs, shape, deadline, threads=threads, options=options)

    monkeypatch.setattr(portfolio, "ExactChild", Spy)
    cases = [sc.make_case(s) for s in CHAIN[:6]]
    cfg = VerifierConfig(portfolio="cpsat", exact_fallback="none", falsify=False, cpsat_crown_domains=on,
                         device="cpu")
    for case in cases:
        res = verify(case.model, [case.spec], cfg, timeout=20, input_shape=sc._shape(case.meta))
        assert res.verdict.value == case.truth, case.case_seed
    assert seen, "no case reached the portfolio's process"
    assert all(("unit_bounds" in o) is on for o in seen)
    assert all(o["presolve"] is True for o in seen)      # small models: presolve either way
