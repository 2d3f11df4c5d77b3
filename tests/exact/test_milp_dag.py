"""The MILP (and CP-SAT, when OR-Tools is importable) on small random DAG QNNs (residual adds,
average and max pooling, concatenation, folded BatchNorm) agrees with exhaustive enumeration of
``integer_codes`` over every grid point of a small input box, on specs that hold and specs that
do not."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from qnn_factory import DAG_KINDS, dag_qnn, rounding_for
from qa_lirpa.base.verdict import Verdict
from qa_lirpa.exact import cpsat, scip, solve_milp
from qa_lirpa.exact.milp import unsupported_reason
from qa_lirpa.nn import integer_codes
from qa_lirpa.verify.vnnlib import InputSpec

N_MODELS = 54                  # 9 seeds of each of the 6 kinds


def _case(i: int):
    """Model, flat input box (2 or 3 free inputs, 2-4 codes wide each; the rest fixed), the box's
    grid and the exact output values on it."""
    kind = DAG_KINDS[i % len(DAG_KINDS)]
    model = dag_qnn(kind, seed=i, rounding=rounding_for(i))     # cycles through all five modes
    shape = (1,) + tuple(model.input_shape)
    n = int(np.prod(shape))
    rng = np.random.default_rng(100 + i)
    lower = rng.integers(0, 200, n).astype(np.float64)
    upper = lower.copy()
    free = rng.choice(n, size=2 + i % 2, replace=False)
    upper[free] += rng.integers(1, 4, len(free))
    pts = torch.tensor(list(itertools.product(*[range(int(a), int(b) + 1) for a, b in zip(lower, upper)])),
                       dtype=torch.float64).reshape((-1,) + shape[1:])
    out = integer_codes(model, pts)
    y = out.dequantize().reshape(len(pts), -1).numpy()
    step = float(min(out.scale))
    return model, shape, lower, upper, y, step


def _specs(lower, upper, y, step, i):
    """``[(spec, truth)]``: one-row disjuncts ``y_k <= t`` at the minimum (holds) and just below it
    (does not), and a two-disjunct margin spec ``y_a - y_b <= c`` or ``y_b - y_a <= c``."""
    n_out = y.shape[1]
    k = i % n_out
    out = []
    for t, truth in ((y[:, k].min(), True), (y[:, k].min() - step / 2, False)):
        row = np.zeros((1, n_out))
        row[0, k] = 1.0
        out.append((InputSpec(lower, upper, [(row, np.array([t]))]), truth))
    a, b = k, (k + 1) % n_out
    c = float(min((y[:, a] - y[:, b]).min(), (y[:, b] - y[:, a]).min()))
    shift = (0.0, -step / 2)[i % 2]
    rows = [np.eye(n_out)[[a]] - np.eye(n_out)[[b]], np.eye(n_out)[[b]] - np.eye(n_out)[[a]]]
    out.append((InputSpec(lower, upper, [(r, np.array([c + shift])) for r in rows]), shift == 0.0))
    return out


@pytest.fixture(scope="module")
def cases():
    return [_case(i) for i in range(N_MODELS)]


def _check_sat(model, spec, shape, res) -> None:
    x = torch.as_tensor(res.counterexample).reshape(shape)
    assert np.all(res.counterexample >= spec.lower) and np.all(res.counterexample <= spec.upper)
    y = integer_codes(model, x).dequantize().reshape(-1).numpy()
    mat, rhs = spec.disjuncts[res.disjunct]
    assert np.all(mat @ y <= rhs)


def test_milp_matches_enumeration_on_random_dags(cases):
    kinds, n_sat, n_unsat = set(), 0, 0
    for i, (model, shape, lower, upper, y, step) in enumerate(cases):
        assert unsupported_reason(model) == ""
        kinds.add(DAG_KINDS[i % len(DAG_KINDS)])
        for j, (spec, truth) in enumerate(_specs(lower, upper, y, step, i)):
            res = solve_milp(model, spec, timeout=30, input_shape=shape, mode=("split", "combined")[j % 2],
                             tighten=bool(i % 3))
            assert res.verdict is (Verdict.SAT if truth else Verdict.UNSAT), (i, j, DAG_KINDS[i % len(DAG_KINDS)])
            if truth:
                _check_sat(model, spec, shape, res)
                n_sat += 1
            else:
                n_unsat += 1
    assert kinds == set(DAG_KINDS) and n_sat >= 50 and n_unsat >= 50


@pytest.mark.skipif(not scip.available(), reason="PySCIPOpt is not installed")
def test_scip_matches_enumeration_on_random_dags(cases):
    n_sat = n_unsat = 0
    for i, (model, shape, lower, upper, y, step) in enumerate(cases[:24]):
        for j, (spec, truth) in enumerate(_specs(lower, upper, y, step, i)):
            res = solve_milp(model, spec, timeout=30, input_shape=shape, mode=("split", "combined")[j % 2],
                             tighten=bool(i % 2), solver="scip")
            assert res.verdict is (Verdict.SAT if truth else Verdict.UNSAT), (i, j)
            if truth:
                _check_sat(model, spec, shape, res)
                n_sat += 1
            else:
                n_unsat += 1
    assert n_sat >= 10 and n_unsat >= 10


@pytest.mark.skipif(not cpsat.available(), reason="OR-Tools is not installed")
def test_cpsat_matches_enumeration_on_random_dags(cases):
    for i, (model, shape, lower, upper, y, step) in enumerate(cases[:24]):
        assert cpsat.unsupported_reason(model) == ""
        for j, (spec, truth) in enumerate(_specs(lower, upper, y, step, i)):
            res = cpsat.solve_cpsat(model, spec, timeout=30, input_shape=shape, mode=("split", "combined")[j % 2],
                                    tighten=bool(i % 2))
            assert res.verdict is (Verdict.SAT if truth else Verdict.UNSAT), (i, j)
            if truth:
                _check_sat(model, spec, shape, res)
