"""What the verifier's MILP fallback needs from qa_lirpa.exact: MILPs over integer sub-boxes of
the input grid (``code_box``), a hard deadline (worker process), a time limit that also covers
building the MILP, HiGHS thread settings that can change between solves, and refusal of layers
whose integer semantics the encoding does not know."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from qa_lirpa import QuantSpec
from qa_lirpa.base.verdict import Verdict
from qa_lirpa.exact import MilpEncodingError, SolverError, solve_milp
from qa_lirpa.exact import milp as milp_mod
from qa_lirpa.exact.highs_worker import Worker, solve_mip
from qa_lirpa.exact.milp import unsupported_reason
from qa_lirpa.nn import QuantAct
from qa_lirpa.quant import quantize

from aaai21_instances import aaai21_instance

from .test_milp import N_CASES, assert_counterexample, disjunct_holds, exact_outputs, random_case


def _codes(model, x: np.ndarray, shape) -> np.ndarray:
    return quantize(torch.tensor(x, dtype=torch.float64).reshape(shape), model[0].spec).reshape(-1).numpy()


def _sub_truth(model, spec, shape, lo_c, hi_c) -> bool:
    """Enumeration over the integer sub-box (codes lo_c..hi_c), as real inputs inside the box."""
    import itertools

    qi = model[0]
    codes = torch.tensor(list(itertools.product(*[range(a, b + 1) for a, b in zip(lo_c, hi_c)])), dtype=torch.int64)
    real = qi.real_inputs(codes.reshape((-1,) + tuple(shape[1:])))
    real = torch.minimum(torch.maximum(real, torch.as_tensor(spec.lower)), torch.as_tensor(spec.upper))
    ys = exact_outputs(model, real)
    return any(disjunct_holds(m, r, y) for y in ys for m, r in spec.disjuncts)


@pytest.mark.parametrize("seed", range(0, N_CASES, 3))
def test_code_box_matches_enumeration_of_the_sub_box(seed):
    model, spec, shape, _ = random_case(seed)
    lo, hi = _codes(model, spec.lower, shape), _codes(model, spec.upper, shape)
    rng = np.random.default_rng(seed)
    for _ in range(3):
        a = np.array([rng.integers(l, h + 1) for l, h in zip(lo, hi)])
        b = np.array([rng.integers(x, h + 1) for x, h in zip(a, hi)])
        truth = _sub_truth(model, spec, shape, a, b)
        res = solve_milp(model, spec, timeout=30, code_box=(a, b), threads=1, hard_timeout=seed % 2 == 0)
        assert res.verdict == (Verdict.SAT if truth else Verdict.UNSAT), (seed, a, b)
        if truth:
            assert_counterexample(model, spec, res.counterexample, shape)
            got = _codes(model, res.counterexample, shape)
            assert np.all(got >= a) and np.all(got <= b)


def test_code_box_checks():
    model, spec, shape, _ = random_case(0)
    lo, hi = _codes(model, spec.lower, shape), _codes(model, spec.upper, shape)
    with pytest.raises(ValueError, match="inside"):
        solve_milp(model, spec, code_box=(lo - 1, hi))
    with pytest.raises(ValueError, match="codes per end"):
        solve_milp(model, spec, code_box=(lo[:1], hi[:1]))
    with pytest.raises(ValueError, match="integer"):
        solve_milp(model, spec, code_box=(lo + 0.5, hi))
    empty = (hi, hi.copy())
    empty[1][0] = hi[0] - 1
    if empty[1][0] >= lo[0]:
        assert solve_milp(model, spec, code_box=empty).verdict == Verdict.UNSAT


def test_threads_can_change_between_solves():
    """HiGHS answered 'Not Set' when its threads option differed from its running scheduler's (an
    LP with the default threads, then a MILP with threads=1): every solve must decide."""
    model, spec, shape, truth = random_case(3)
    for threads in (None, 1, 1, None, 2, 1):
        res = solve_milp(model, spec, timeout=30, threads=threads)
        assert res.verdict == (Verdict.SAT if truth else Verdict.UNSAT), threads


def test_worker_answers_like_the_local_solver():
    # x0 + x1 <= 7, x0 - x1 >= 4, 0 <= x <= 10: feasible; with x0 <= 3 infeasible
    rows = [({0: 1, 1: 1}, None, 7), ({0: 1, 1: -1}, 4, None)]
    w = Worker()
    try:
        for ub, want in (([10, 10], Verdict.SAT), ([3, 10], Verdict.UNSAT)):
            a = solve_mip([0, 0], ub, rows, 5.0, 1)
            b = w.solve([0, 0], ub, rows, 5.0, 1)
            assert a[0] == b[0] == want
        assert w.starts == 1 and w.kills == 0
        with pytest.raises(Exception, match="HiGHS|rejected|index"):
            w.solve([0, 0], [1, 1], [({5: 1}, None, 1)], 5.0, 1)      # a column that does not exist
    finally:
        w.close()


def test_worker_is_killed_at_the_deadline(monkeypatch):
    """A solver that does not stop (here: the worker is stopped with SIGSTOP) is killed shortly
    after the time limit and the answer is timeout; the next solve starts a new worker."""
    import os
    import signal

    w = Worker(grace=0.1)
    try:
        rows = [({0: 1, 1: 1}, None, 7)]
        assert w.solve([0, 0], [10, 10], rows, 5.0, 1)[0] == Verdict.SAT
        os.kill(w.proc.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        assert w.solve([0, 0], [10, 10], rows, 0.3, 1) == (Verdict.TIMEOUT, None, 0)
        assert time.monotonic() - t0 < 1.0
        assert w.kills == 1 and w.proc is None
        assert w.solve([0, 0], [10, 10], rows, 5.0, 1)[0] == Verdict.SAT and w.starts == 2
    finally:
        w.close()


class _OwnSemantics(QuantAct):
    def int_forward(self, x):
        return super().int_forward(x)


def test_layers_with_their_own_integer_semantics_are_refused():
    model, spec, shape, _ = random_case(0)
    assert unsupported_reason(model) == ""
    i = next(k for k, m in enumerate(model) if type(m) is QuantAct)
    model = torch.nn.Sequential(*[(_OwnSemantics(m.spec) if k == i else m) for k, m in enumerate(model)])
    assert "int_forward" in unsupported_reason(model)
    with pytest.raises(MilpEncodingError, match="int_forward"):
        solve_milp(model, spec, timeout=5)
    from qa_lirpa.onnx.ort_layers import Float32Requant

    f32 = Float32Requant(QuantSpec(8, True, 0.5), [2.0 ** -6])
    assert "int_forward" in unsupported_reason(torch.nn.Sequential(model[0], f32))


def _aaai21():
    return aaai21_instance(264)                 # undecided by the MILP in 20 s


def test_time_limit_covers_the_encoding_and_holds_with_hard_timeout():
    model, spec = _aaai21()
    t0 = time.monotonic()
    assert solve_milp(model, spec, timeout=1e-3, input_shape=(1, 784)).verdict == Verdict.TIMEOUT
    assert time.monotonic() - t0 < 0.5
    t0 = time.monotonic()
    res = solve_milp(model, spec, timeout=1.5, input_shape=(1, 784), threads=1, hard_timeout=True)
    assert res.verdict == Verdict.TIMEOUT
    assert time.monotonic() - t0 < 1.5 + 0.4


def test_solver_error_from_the_worker_is_a_solver_error(monkeypatch):
    def broken(*a, **k):
        from qa_lirpa.exact.highs_worker import HighsStatusError

        raise HighsStatusError("HiGHS ended with status Not Set")

    seed = next(s for s in range(N_CASES) if solve_milp(*random_case(s)[:2], timeout=30).disjuncts_solved)
    monkeypatch.setattr(milp_mod._WORKER, "solve", broken)
    model, spec, _, _ = random_case(seed)
    assert solve_milp(model, spec, timeout=30).disjuncts_solved       # in-process: unaffected
    with pytest.raises(SolverError, match="Not Set"):
        solve_milp(model, spec, timeout=30, hard_timeout=True)
