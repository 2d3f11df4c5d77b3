"""The exact CP-SAT procedure against exhaustive enumeration of small input grids (skipped
without OR-Tools)."""
from __future__ import annotations

import functools
import itertools
from fractions import Fraction

import numpy as np
import pytest
import torch

pytest.importorskip("ortools.sat.python.cp_model")

from qnn_factory import mlp  # noqa: E402
from verify.tiny_qnn import exact_outputs, tiny_cnn, violates  # noqa: E402
from qa_lirpa import QuantSpec, integer_forward  # noqa: E402
from qa_lirpa.base.verdict import Verdict  # noqa: E402
from qa_lirpa.exact import cpsat  # noqa: E402
from qa_lirpa.exact.cpsat import CpsatEncodingError, solve_cpsat  # noqa: E402
from qa_lirpa.nn import QuantAct  # noqa: E402
from qa_lirpa.quant import quantize  # noqa: E402
from qa_lirpa.verify.vnnlib import InputSpec  # noqa: E402

from .test_milp import _thresholded_disjunct  # noqa: E402


def grid_points(model, lower, upper, shape, code_box=None) -> torch.Tensor:
    """Every real input of the integer grid inside the box (or inside ``code_box``)."""
    qi = model[0]
    lo = quantize(torch.tensor(lower, dtype=torch.float64).reshape(shape), qi.spec).reshape(-1).tolist()
    hi = quantize(torch.tensor(upper, dtype=torch.float64).reshape(shape), qi.spec).reshape(-1).tolist()
    if code_box is not None:
        lo, hi = [int(v) for v in code_box[0]], [int(v) for v in code_box[1]]
    codes = torch.tensor(list(itertools.product(*[range(a, b + 1) for a, b in zip(lo, hi)])), dtype=torch.int64)
    return qi.real_inputs(codes.reshape((-1,) + tuple(shape[1:])))


def row_value(row, y) -> Fraction:
    return sum((Fraction(float(a)) * v for a, v in zip(row, y) if a != 0), Fraction(0))


def check_counterexample(model, spec, res, shape) -> None:
    """In the box, violating the reported disjunct exactly, and integer_forward agrees."""
    x = res.counterexample
    assert x is not None and np.all(x >= spec.lower) and np.all(x <= spec.upper)
    xt = torch.from_numpy(np.asarray(x)).reshape(shape)
    y = exact_outputs(model, xt)[0]
    assert violates(y, [spec.disjuncts[res.disjunct]])
    fwd = integer_forward(model, xt).reshape(-1).tolist()
    assert fwd == [float(v) for v in y]


def _disjunct(rng, ys, n_out, sat: bool):
    """One or two rows with thresholds from the grid's outputs: sat keeps a point, unsat sits just
    below the smallest value left (a tight boundary); the MILP tests' generator."""
    n_rows = int(rng.integers(1, 3))
    return _thresholded_disjunct(rng, lambda row, i: row_value(row, ys[i]), n_out, list(range(len(ys))),
                                 n_rows, sat)


@functools.lru_cache(maxsize=None)
def random_case(seed: int):
    """A random MLP (both roundings, per-tensor / per-channel weights, with or without a signed
    output quantizer, some hidden scales with a factor 3 so the rescale has an odd denominator),
    a random box (some with real ends) and 1-3 disjuncts; the truth by enumeration."""
    rng = np.random.default_rng(5000 + seed)
    rounding = ("half_up", "half_even")[seed % 2]
    n_in = 2 + seed % 2
    hidden = [int(rng.integers(2, 8)) for _ in range(1 + (seed % 3 == 0))]
    n_out = int(rng.integers(2, 5))
    model = mlp([n_in] + hidden + [n_out], rounding=rounding, seed=seed, per_channel=bool(seed % 4 >= 2),
                out_act=bool(seed % 5 < 3))
    if seed % 6 == 5:                             # scales 3/4, 3/8: odd rescale denominators
        for m in model:
            if isinstance(m, QuantAct) and not m.spec.signed:
                m.spec = QuantSpec(6, False, 0.75, rounding=rounding)
            elif isinstance(m, QuantAct):
                m.spec = QuantSpec(6, True, 0.375, rounding=rounding)
        for m in model:                           # bias formats follow the new input scales
            if hasattr(m, "bias_spec") and m.bias_spec is not None:
                m.bias_spec = QuantSpec(32, True, 2.0 ** -12, rounding=rounding)
    width = 20 if n_in == 2 else 6
    lo = rng.integers(0, 256 - width, n_in).astype(np.float64)
    hi = lo + rng.integers(0, width + 1, n_in)
    if seed % 7 == 0:
        lo, hi = lo + 0.3, hi + 0.6
    shape = (1, n_in)
    ys = exact_outputs(model, grid_points(model, lo, hi, shape))
    want_sat = seed % 3 != 1
    n_disj = int(rng.integers(1, 4))
    sat_at = int(rng.integers(n_disj))
    spec = InputSpec(lo, hi, [_disjunct(rng, ys, n_out, want_sat and d == sat_at) for d in range(n_disj)])
    truth = any(violates(y, spec.disjuncts) for y in ys)
    return model, spec, shape, truth


N_CASES = 120


def test_random_cases_cover_sat_and_unsat():
    truths = [random_case(s)[3] for s in range(N_CASES)]
    assert sum(truths) >= 30 and len(truths) - sum(truths) >= 30


@pytest.mark.parametrize("seed", range(N_CASES))
def test_matches_enumeration(seed):
    model, spec, shape, truth = random_case(seed)
    kw = {"mode": ("split", "combined")[seed % 4 == 1], "objective": seed % 5 != 4,
          "tighten": seed % 3 != 2, "threads": 2 if seed % 8 == 3 else 1,
          "presolve": (seed // 2) % 2 == 0, "eager_lp": seed % 7 in (1, 4)}
    res = solve_cpsat(model, spec, timeout=30, **kw)
    assert res.verdict == (Verdict.SAT if truth else Verdict.UNSAT), (res, truth, kw)
    if truth:
        check_counterexample(model, spec, res, shape)
    else:
        assert res.counterexample is None


@pytest.mark.parametrize("seed", range(6))
def test_code_sub_box(seed):
    """``code_box``: only the grid points of the sub-box count; the counterexample lies in it."""
    model, spec, shape, _ = random_case(seed * 7 + 3)
    lo = np.ceil(spec.lower).astype(np.int64)
    hi = np.floor(spec.upper).astype(np.int64)
    rng = np.random.default_rng(seed)
    a = lo + rng.integers(0, hi - lo + 1)
    b = np.minimum(hi, a + rng.integers(0, 4, lo.size))
    ys = exact_outputs(model, grid_points(model, spec.lower, spec.upper, shape, (a, b)))
    truth = any(violates(y, spec.disjuncts) for y in ys)
    res = solve_cpsat(model, spec, timeout=30, code_box=(a, b))
    assert res.verdict == (Verdict.SAT if truth else Verdict.UNSAT)
    if truth:
        check_counterexample(model, spec, res, shape)
        assert np.all(res.counterexample >= a) and np.all(res.counterexample <= b)


@pytest.mark.parametrize("seed", range(4))
def test_conv_net(seed):
    centre = torch.randint(60, 200, (16,), generator=torch.Generator().manual_seed(seed)).double()
    model = tiny_cnn(centre, rounding=("half_up", "half_even")[seed % 2], seed=seed)
    shape = (1, 1, 4, 4)
    lo = centre.numpy().copy()
    hi = lo.copy()
    idx = np.random.default_rng(seed).choice(16, 3, replace=False)
    hi[idx] += 2
    ys = exact_outputs(model, grid_points(model, lo, hi, shape))
    rng = np.random.default_rng(seed)
    spec = InputSpec(lo, hi, [_disjunct(rng, ys, 3, seed % 2 == 0), _disjunct(rng, ys, 3, False)])
    truth = any(violates(y, spec.disjuncts) for y in ys)
    res = solve_cpsat(model, spec, timeout=30, input_shape=shape)
    assert res.verdict == (Verdict.SAT if truth else Verdict.UNSAT)
    if truth:
        check_counterexample(model, spec, res, shape)


def test_unsupported_and_empty():
    model, spec, shape, _ = random_case(0)
    assert cpsat.unsupported_reason(model) == ""
    bad = torch.nn.Sequential(*list(model)[1:])
    assert "QuantInput" in cpsat.unsupported_reason(bad)
    with pytest.raises(CpsatEncodingError):
        solve_cpsat(bad, spec)
    empty = InputSpec(spec.upper + 1, spec.upper, spec.disjuncts)
    assert solve_cpsat(model, empty).verdict == Verdict.UNSAT


# ----- the verifier's exact fallback ------------------------------------------------------------------

@pytest.mark.parametrize("max_boxes", [0, 16])
def test_verifier_cpsat_fallback_agrees_with_enumeration(max_boxes):
    """exact_fallback="cpsat", handed over right after the root box (falsification off, so CP-SAT
    decides what the root bound leaves open): verdicts equal enumeration, counterexamples hold."""
    from verify.test_exact_fallback import _check, _config, _run, sc

    decided = {"sat": 0, "unsat": 0}                 # the campaign's words for its enumeration truth
    for seed in range(6100, 6120):
        case = sc.make_case(seed)
        res = _run(case, _config(exact_fallback="cpsat", exact_max_boxes=max_boxes))
        _check(case, res)
        if res.stats.milp_calls:
            assert res.stats.exact.startswith("cpsat on") and res.stats.exact.endswith(": " + case.truth)
            decided[case.truth] += 1
    assert decided["sat"] >= 3 and decided["unsat"] >= 3, decided


def test_verifier_without_ortools_runs_plain_bab(monkeypatch):
    """exact_fallback="cpsat" where OR-Tools cannot be imported: branch and bound alone, and the
    stats say why."""
    monkeypatch.setattr(cpsat, "available", lambda: False)
    from verify.test_exact_fallback import _check, _config, _run, sc

    case = sc.make_case(6100)
    res = _run(case, _config(exact_fallback="cpsat"))
    _check(case, res)
    assert res.stats.milp_calls == 0 and "OR-Tools" in res.stats.exact


@pytest.mark.parametrize("hull_lines", [True, False])
@pytest.mark.parametrize("eager_lp", [False, True])
@pytest.mark.parametrize("side", ["top", "bottom"])
def test_counterexample_only_at_a_clamp(side, hull_lines, eager_lp):
    """Counterexamples only where a hidden unit with both clamps live on the box sits at its upper
    clamp (``top``) or strictly below its lower one (``bottom``): each clamp line must keep its
    literal, else those points leave the model (a wrong unsat)."""
    model = mlp([1, 3, 2], seed=0)
    lin1, lin2 = model[1], model[3]
    with torch.no_grad():       # h1 = clamp(x/2 - 5, 0, 31.5), h2 = relu(x/2 - 35), h3 = relu(2 - x/2)
        lin1.weight.copy_(torch.tensor([[0.5], [0.5], [-0.5]]))
        lin1.bias.copy_(torch.tensor([-5.0, -35.0, 2.0]))
        lin2.weight.copy_(torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 0.5]]))   # (h1 + h2) / 2, h3 / 2
        lin2.bias.zero_()
    shape = (1, 1)
    lo, hi = np.array([0.0]), np.array([100.0])
    row = (np.array([[-1.0, 0.0]]), np.array([-20.0])) if side == "top" else (np.array([[0.0, -1.0]]), np.array([-0.5]))
    spec = InputSpec(lo, hi, [row])
    xs = grid_points(model, lo, hi, shape)
    bad = [float(x) for x, y in zip(xs.reshape(-1), exact_outputs(model, xs)) if violates(y, spec.disjuncts)]
    assert bad and (min(bad) >= 87 if side == "top" else max(bad) <= 2), bad
    res = solve_cpsat(model, spec, timeout=30, tighten=False, presolve=False, eager_lp=eager_lp,
                      hull_lines=hull_lines)
    assert res.verdict == Verdict.SAT
    check_counterexample(model, spec, res, shape)
