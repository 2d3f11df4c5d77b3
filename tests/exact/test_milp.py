"""The exact MILP decision procedure against exhaustive enumeration of the input grid."""
from __future__ import annotations

import functools
import importlib.util
import itertools
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from qnn_factory import cnn, mlp
from qa_lirpa import QuantSpec
from qa_lirpa.base.verdict import Verdict
from qa_lirpa.exact import MilpEncodingError, SolverError, decide_milp, solve_milp
from qa_lirpa.exact import milp as milp_mod
from qa_lirpa.nn import QuantAct, QuantInput, QuantLinear, accumulator_bias_spec, integer_codes
from qa_lirpa.quant import quantize
from qa_lirpa.verify.vnnlib import InputSpec

H5 = Path(os.environ.get("QA_LIRPA_AAAI21_H5",
                         Path(__file__).resolve().parents[3] / "shared" / "data" / "aaai21" / "mnist_mlp.h5"))


# ----- exact helpers -------------------------------------------------------------------------------

def exact_outputs(model, x: torch.Tensor) -> list[list[Fraction]]:
    """Exact real outputs (Fractions) of integer_forward, one list per row of x."""
    out = integer_codes(model, x)
    vals = out.values.reshape(out.values.shape[0], -1).tolist()
    n = len(vals[0])
    sc = out.scale * n if len(out.scale) == 1 else out.scale
    zp = out.zero_point * n if len(out.zero_point) == 1 else out.zero_point
    return [[(v - z) * s for v, z, s in zip(row, zp, sc)] for row in vals]


def row_value(mat_row, y) -> Fraction:
    return sum((Fraction(float(a)) * yk for a, yk in zip(mat_row, y) if a != 0), Fraction(0))


def disjunct_holds(mat, rhs, y) -> bool:
    return all(row_value(mat[r], y) <= Fraction(float(rhs[r])) for r in range(mat.shape[0]))


def grid(model, lower, upper, shape):
    """All input points (as exact real inputs) of the integer grid inside the real box."""
    qi = model[0]
    lo = quantize(torch.tensor(lower, dtype=torch.float64).reshape(shape), qi.spec).reshape(-1).tolist()
    hi = quantize(torch.tensor(upper, dtype=torch.float64).reshape(shape), qi.spec).reshape(-1).tolist()
    codes = torch.tensor(list(itertools.product(*[range(a, b + 1) for a, b in zip(lo, hi)])), dtype=torch.int64)
    real = qi.real_inputs(codes.reshape((-1,) + tuple(shape[1:])))
    return real


def enumerate_truth(model, spec, shape):
    pts = grid(model, spec.lower, spec.upper, shape)
    ys = exact_outputs(model, pts)
    return any(disjunct_holds(m, r, y) for y in ys for m, r in spec.disjuncts), ys


def assert_counterexample(model, spec, x, shape):
    assert x is not None
    assert np.all(x >= spec.lower) and np.all(x <= spec.upper)
    y = exact_outputs(model, torch.from_numpy(np.asarray(x)).reshape(shape))[0]
    assert any(disjunct_holds(m, r, y) for m, r in spec.disjuncts)


# ----- random cases ----------------------------------------------------------------------------------

def _thresholded_disjunct(rng, values_of, n_out, pts_idx, n_rows, sat: bool):
    """Rows with thresholds drawn from the grid: all but the last keep some grid points; the last
    either keeps one (sat) or sits just below the smallest value left (unsat, at the boundary)."""
    mat = rng.choice([-1.0, -0.5, 0.0, 0.25, 0.5, 1.0, 2.0], size=(n_rows, n_out))
    mat[np.all(mat == 0, axis=1), 0] = 1.0
    rhs = np.zeros(n_rows)
    alive = pts_idx
    for r in range(n_rows):
        v = {i: values_of(mat[r], i) for i in alive}
        if r < n_rows - 1 or sat:
            pick = alive[int(rng.integers(len(alive)))]
            rhs[r] = float(v[pick])
            alive = [i for i in alive if v[i] <= v[pick]]
        else:
            rhs[r] = float(min(v.values())) - float(rng.choice([2.0 ** -12, 2.0 ** -6, 0.5]))
    return mat, rhs


@functools.lru_cache(maxsize=None)
def random_case(seed: int):
    rng = np.random.default_rng(1000 + seed)
    rounding = "half_up" if seed % 2 == 0 else "half_even"
    n_in = 2 + seed % 2
    hidden = [int(rng.integers(3, 9)) for _ in range(1 + (seed % 3 == 0))]
    n_out = int(rng.integers(2, 5))
    model = mlp([n_in] + hidden + [n_out], rounding=rounding, seed=seed, per_channel=bool(seed % 4 >= 2),
                out_act=bool(seed % 5 < 3))
    width = 24 if n_in == 2 else 7
    lo = rng.integers(0, 256 - width, n_in).astype(np.float64)
    hi = lo + rng.integers(0, width + 1, n_in)
    if seed % 7 == 0:            # real (non-grid) box ends
        lo, hi = lo + 0.3, hi + 0.6
    shape = (1, n_in)
    pts = grid(model, lo, hi, shape)
    ys = exact_outputs(model, pts)
    values_of = lambda row, i: row_value(row, ys[i])  # noqa: E731
    want_sat = seed % 3 != 1
    n_disj = int(rng.integers(1, 4))
    disjuncts = []
    sat_at = int(rng.integers(n_disj))
    for d in range(n_disj):
        disjuncts.append(_thresholded_disjunct(rng, values_of, n_out, list(range(len(ys))),
                                               int(rng.integers(1, 3)), want_sat and d == sat_at))
    spec = InputSpec(lo, hi, disjuncts)
    truth = any(disjunct_holds(m, r, y) for y in ys for m, r in spec.disjuncts)
    return model, spec, shape, truth


N_CASES = 40


def test_random_cases_cover_sat_and_unsat():
    truths = [random_case(s)[3] for s in range(N_CASES)]
    assert sum(truths) >= 10 and len(truths) - sum(truths) >= 10
    for rounding in ("half_up", "half_even"):
        sub = [random_case(s)[3] for s in range(N_CASES) if random_case(s)[0][0].spec.rounding == rounding]
        assert any(sub) and not all(sub)


HAVE_SCIP = importlib.util.find_spec("pyscipopt") is not None
SOLVERS = ["highs", pytest.param("scip", marks=pytest.mark.skipif(not HAVE_SCIP, reason="PySCIPOpt not installed"))]


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("seed", range(N_CASES))
def test_matches_enumeration(seed, solver):
    model, spec, shape, truth = random_case(seed)
    mode = "combined" if seed % 4 == 1 else "split"
    objective = seed % 5 != 4
    tighten = seed % 3 != 2
    res = solve_milp(model, spec, timeout=30, mode=mode, objective=objective, tighten=tighten, solver=solver)
    assert res.verdict == (Verdict.SAT if truth else Verdict.UNSAT), (res, truth)
    if truth:
        assert_counterexample(model, spec, res.counterexample, shape)
        mat, rhs = spec.disjuncts[res.disjunct]
        y = exact_outputs(model, torch.from_numpy(res.counterexample).reshape(shape))[0]
        assert disjunct_holds(mat, rhs, y)
    else:
        assert res.counterexample is None


@pytest.mark.parametrize("mode", ["split", "combined"])
def test_modes_agree_on_robustness_specs(mode):
    """Classifier robustness (ties to the smaller index) on random nets, both modes."""
    rng = np.random.default_rng(7)
    verdicts = []
    for seed in range(12):
        model = mlp([2, 6, 4], rounding=("half_up", "half_even")[seed % 2], seed=seed, out_act=True)
        lo = rng.integers(0, 220, 2).astype(np.float64)
        hi = lo + rng.integers(0, 30, 2)
        center = torch.from_numpy(((lo + hi) // 2).reshape(1, 2))
        label = int(np.argmax(np.array(exact_outputs(model, center)[0], dtype=object)))
        rows = []
        for k in range(4):
            if k != label:
                mat = np.zeros((1, 4))
                mat[0, label], mat[0, k] = 1.0, -1.0
                rows.append((mat, np.array([0.0 if k < label else -0.5])))   # output step 0.5
        spec = InputSpec(lo, hi, rows)
        truth, _ = enumerate_truth(model, spec, (1, 2))
        verdict, x = decide_milp(model, spec, timeout=30, mode=mode)
        assert verdict == (Verdict.SAT if truth else Verdict.UNSAT)
        if truth:
            assert_counterexample(model, spec, x, (1, 2))
        verdicts.append(verdict)
    assert Verdict.SAT in verdicts and Verdict.UNSAT in verdicts


# ----- rounding ties, hand-made -----------------------------------------------------------------------

def tie_net(rounding: str, signed_out: bool) -> nn.Sequential:
    """x -> R(x/2), R(-x/2), R(3x/4) (codes): ties at every odd x (and at x = 2 mod 4 for 3x/4)."""
    ins = QuantSpec(8, False, 1.0, rounding=rounding)
    ws = QuantSpec(6, True, 2.0 ** -5, rounding=rounding)
    lin = QuantLinear(1, 3, ws, accumulator_bias_spec(ins, ws))
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[8.0], [-8.0], [12.0]]) / 32)
        lin.bias.copy_(torch.tensor([0.0, 3.0, -1.0]) / 32)
    act = QuantSpec(8, signed_out, 0.5, rounding=rounding)
    return nn.Sequential(QuantInput(ins), lin, QuantAct(act)).double()


@pytest.mark.parametrize("rounding", ["half_up", "half_even"])
@pytest.mark.parametrize("signed_out", [False, True])
def test_rounding_ties_exact(rounding, signed_out):
    model = tie_net(rounding, signed_out)
    rng = np.random.default_rng(3)
    for _ in range(12):
        a = int(rng.integers(0, 60))
        lo, hi = np.array([float(a)]), np.array([float(a + rng.integers(0, 9))])
        pts = grid(model, lo, hi, (1, 1))
        ys = exact_outputs(model, pts)
        k = int(rng.integers(3))
        values = sorted({y[k] for y in ys})
        for v in values[:2] + values[-2:]:
            for sign in (1.0, -1.0):           # y_k <= v  and  -y_k <= -v
                for shift in (0.0, -0.25):
                    mat = np.zeros((1, 3))
                    mat[0, k] = sign
                    spec = InputSpec(lo, hi, [(mat, np.array([sign * float(v) + shift]))])
                    truth = any(disjunct_holds(mat, spec.disjuncts[0][1], y) for y in ys)
                    verdict, x = decide_milp(model, spec, timeout=10)
                    assert verdict == (Verdict.SAT if truth else Verdict.UNSAT), (rounding, a, k, v, sign, shift)
                    if truth:
                        assert_counterexample(model, spec, x, (1, 1))


def test_half_even_differs_from_half_up():
    """Sanity check of the tie net: the two modes give different codes at a tie."""
    x = torch.tensor([[1.0], [3.0]], dtype=torch.float64)
    up = integer_codes(tie_net("half_up", True), x).values
    even = integer_codes(tie_net("half_even", True), x).values
    assert not torch.equal(up, even)


# ----- pinned inputs: the encoding determines every output ----------------------------------------------

def pinned_outputs(model, lower, upper, point_codes, shape, forbid=None):
    """Encode the model on the box, pin the input codes with equality rows (not bounds, so the
    rows are exercised), and solve; returns the output codes or None if infeasible. ``forbid``
    = (k, value): additionally require output code k != value via one row (``<= v-1`` or ``>= v+1``)."""
    enc = milp_mod._Encoder(model, shape)
    qi = model[0]
    lo = quantize(torch.tensor(lower).reshape(shape), qi.spec).reshape(-1).numpy()
    hi = quantize(torch.tensor(upper).reshape(shape), qi.spec).reshape(-1).numpy()
    state = enc.encode_layers(enc.encode_input(lo, hi))
    rows = list(enc.b.rows)
    for v, c in zip(enc.input_vars, point_codes):
        if v is not None:
            rows.append(({v: 1}, int(c), int(c)))
    if forbid is not None:
        k, value, above = forbid
        e = state.exprs[k]
        if e.is_const():
            return None if e.const == value else [e.const]
        if above:
            rows.append((dict(e.coefs), value + 1 - e.const, None))
        else:
            rows.append((dict(e.coefs), None, value - 1 - e.const))
    status, sol, _ = milp_mod._mip_solve(enc.b.lb, enc.b.ub, rows, 30.0, None)
    if status == Verdict.UNSAT:
        return None
    assert status == Verdict.SAT
    out = []
    for e in state.exprs:
        val = e.const + sum(c * sol[v] for v, c in e.coefs.items())
        assert abs(val - round(val)) < 1e-6
        out.append(int(round(val)))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_pinned_inputs_random_nets(seed):
    rng = np.random.default_rng(seed)
    model = mlp([3, 8, 6, 4], rounding=("half_up", "half_even")[seed % 2], seed=seed,
                per_channel=seed % 3 == 0, out_act=seed % 2 == 0)
    lo = rng.integers(0, 200, 3).astype(np.float64)
    hi = lo + 50
    for _ in range(5):
        codes = rng.integers(lo, hi + 1)
        ref = integer_codes(model, torch.from_numpy(codes.reshape(1, -1)).double()).values[0].tolist()
        assert pinned_outputs(model, lo, hi, codes, (1, 3)) == ref
        k = int(rng.integers(4))
        assert pinned_outputs(model, lo, hi, codes, (1, 3), forbid=(k, ref[k], True)) is None
        assert pinned_outputs(model, lo, hi, codes, (1, 3), forbid=(k, ref[k], False)) is None


@pytest.fixture(scope="module")
def aaai():
    if not H5.is_file():
        pytest.skip(f"AAAI'21 weights not found at {H5}")
    from qa_lirpa.aaai21 import load_aaai21
    from qa_lirpa.train.datasets import DatasetNotFoundError, load_dataset
    try:
        data = load_dataset("mnist", "test")
    except DatasetNotFoundError as err:
        pytest.skip(f"MNIST not available: {err}")
    return load_aaai21(H5, dtype=torch.float64), data


def test_pinned_inputs_aaai21(aaai):
    model, data = aaai
    rng = np.random.default_rng(0)
    for i in (3, 115, 320):
        x = data.images[i].reshape(-1).numpy().astype(np.int64)
        lo, hi = np.maximum(x - 4, 0).astype(np.float64), np.minimum(x + 4, 255).astype(np.float64)
        codes = rng.integers(lo, hi + 1)
        xt = torch.tensor(codes, dtype=torch.float64).reshape(1, 1, 28, 28)
        ref = integer_codes(model, xt).values[0].tolist()
        assert pinned_outputs(model, lo, hi, codes, (1, 784)) == ref
        k = int(np.argmax(ref))
        assert pinned_outputs(model, lo, hi, codes, (1, 784), forbid=(k, ref[k], True)) is None
        assert pinned_outputs(model, lo, hi, codes, (1, 784), forbid=(k, ref[k], False)) is None


# ----- rigorous LP bounds ----------------------------------------------------------------------------

def test_lp_bounds_are_rigorous_and_tight():
    """The weak-duality bound of every output code lies below its true minimum over the input grid
    (and the negated one above the maximum), and is within 1e-4 of HiGHS's LP optimum (tight
    enough: the bound is rounded up to an integer)."""
    checked = 0
    for seed in range(8):
        model = mlp([2, 7, 7, 4], rounding=("half_up", "half_even")[seed % 2], seed=seed,
                    out_act=seed % 4 < 2)
        rng = np.random.default_rng(seed)
        lo = rng.integers(0, 200, 2).astype(np.float64)
        hi = lo + 40
        enc = milp_mod._Encoder(model, (1, 2))
        state = enc.encode_layers(enc.encode_input(lo.astype(np.int64), hi.astype(np.int64)))
        if not enc.b.rows:
            continue
        codes = integer_codes(model, grid(model, lo, hi, (1, 2))).values
        lp = milp_mod._LpBounder(enc.b)
        for k, e in enumerate(state.exprs):
            if e.is_const():
                continue
            low = lp.lower(e.coefs, 10.0)
            assert low + e.const <= int(codes[:, k].min())
            assert abs(low - lp.h.getInfo().objective_function_value) < 1e-4
            high = lp.lower({v: -a for v, a in e.coefs.items()}, 10.0)
            assert -high + e.const >= int(codes[:, k].max())
            checked += 1
    assert checked >= 8


# ----- convolutional chain ----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(3))
def test_conv_matches_enumeration(seed):
    model = cnn(rounding=("half_up", "half_even")[seed % 2], seed=seed, hw=3, channels=2)
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 250, 9).astype(np.float64)
    lo, hi = base.copy(), base.copy()
    free = rng.choice(9, 4, replace=False)
    hi[free] += 3
    shape = (1, 1, 3, 3)
    pts = grid(model, lo, hi, shape)
    ys = exact_outputs(model, pts.reshape(-1, 1, 3, 3))
    for k in range(3):
        vals = sorted({y[k] for y in ys})
        for v, shift in ((vals[0], 0.0), (vals[0], -2.0 ** -9), (vals[-1], 0.0)):
            mat = np.zeros((1, 3))
            mat[0, k] = 1.0 if v == vals[0] else -1.0
            spec = InputSpec(lo, hi, [(mat, np.array([float(mat[0, k] * v) + shift]))])
            truth = any(disjunct_holds(mat, spec.disjuncts[0][1], y) for y in ys)
            verdict, x = decide_milp(model, spec, timeout=10, input_shape=shape)
            assert verdict == (Verdict.SAT if truth else Verdict.UNSAT)
            if truth:
                assert_counterexample(model, spec, x, shape)


# ----- AAAI'21 instances ------------------------------------------------------------------------------

def _aaai_spec(data, i, eps):
    from qa_lirpa.aaai21 import aaai21_robustness_spec
    return aaai21_robustness_spec(data.images[i], int(data.labels[i]), eps)


@pytest.mark.parametrize("index,eps,expected", [(0, 1, Verdict.UNSAT), (18, 1, Verdict.SAT), (115, 2, Verdict.SAT)])
def test_aaai21_published(aaai, index, eps, expected):
    model, data = aaai
    spec = _aaai_spec(data, index, eps)
    res = solve_milp(model, spec, timeout=60)
    assert res.verdict == expected
    if expected == Verdict.SAT:
        assert_counterexample(model, spec, res.counterexample, (1, 784))
        x = torch.from_numpy(res.counterexample).reshape(1, 1, 28, 28)
        from qa_lirpa.nn import argmax_smallest
        assert int(argmax_smallest(integer_codes(model, x).values)[0]) != int(data.labels[index])


@pytest.mark.slow
@pytest.mark.parametrize("index,eps,expected", [(104, 2, Verdict.SAT), (221, 3, Verdict.UNSAT), (300, 4, Verdict.SAT),
                                                (307, 4, Verdict.UNSAT)])
def test_aaai21_published_timeouts_decided(aaai, index, eps, expected):
    """Samples the published SMT run left undecided (measured here: about 1-2 s each)."""
    model, data = aaai
    spec = _aaai_spec(data, index, eps)
    res = solve_milp(model, spec, timeout=60)
    assert res.verdict == expected
    if expected == Verdict.SAT:
        assert_counterexample(model, spec, res.counterexample, (1, 784))


def test_timeout_reported(aaai):
    model, data = aaai
    assert decide_milp(model, _aaai_spec(data, 300, 4), timeout=0.0) == (Verdict.TIMEOUT, None)


# ----- API edges and errors -------------------------------------------------------------------------

def _small():
    return mlp([2, 4, 3], seed=1, out_act=True)


def test_empty_box_and_trivial_disjuncts():
    model = _small()
    empty = InputSpec(np.array([5.0, 3.0]), np.array([4.0, 9.0]), [(np.zeros((0, 3)), np.zeros(0))])
    assert decide_milp(model, empty) == (Verdict.UNSAT, None)
    anything = InputSpec(np.array([5.0, 3.0]), np.array([9.0, 9.0]), [(np.zeros((0, 3)), np.zeros(0))])
    verdict, x = decide_milp(model, anything)
    assert verdict == Verdict.SAT and np.all(x >= anything.lower) and np.all(x <= anything.upper)
    point = InputSpec(np.array([7.0, 7.0]), np.array([7.0, 7.0]), [(np.eye(3)[:1], np.array([100.0]))])
    assert decide_milp(model, point)[0] == Verdict.SAT


def test_rejections():
    model = _small()
    spec = InputSpec(np.zeros(2), np.ones(2) * 5, [(np.eye(3)[:1], np.zeros(1))])
    with pytest.raises(MilpEncodingError, match="QuantInput"):
        decide_milp(nn.Sequential(*list(model)[1:]), spec)
    with pytest.raises(MilpEncodingError, match="Sigmoid"):
        decide_milp(nn.Sequential(*model, nn.Sigmoid()), spec)
    floaty = mlp([2, 4, 3], seed=1)
    floaty[1].bias_spec = None
    with pytest.raises(MilpEncodingError, match="float bias"):
        decide_milp(floaty, spec)
    with pytest.raises(ValueError, match="outputs"):
        decide_milp(model, InputSpec(np.zeros(2), np.ones(2), [(np.eye(4)[:1], np.zeros(1))]))
    # a coefficient of 1e-30 next to 1 needs integers far beyond what a float MILP holds exactly
    ties = tie_net("half_up", True)
    tiny = InputSpec(np.zeros(1), np.ones(1) * 60, [(np.array([[1e-30, 1.0, 0.0]]), np.array([-5.0]))])
    with pytest.raises(MilpEncodingError, match="2\\^31"):
        decide_milp(ties, tiny)


def test_bad_solver_point_is_an_error(monkeypatch):
    """A 'feasible' point from the solver that is no counterexample raises instead of being
    reported: the verdict sat always comes with an integer_forward confirmation."""
    model = _small()
    lo, hi = np.array([10.0, 10.0]), np.array([40.0, 40.0])
    pts = grid(model, lo, hi, (1, 2))
    ys = exact_outputs(model, pts)
    best = min(y[0] for y in ys)
    spec = InputSpec(lo, hi, [(np.eye(3)[:1], np.array([float(best)]))])
    assert decide_milp(model, spec)[0] == Verdict.SAT
    real = milp_mod._mip_solve

    def lying(lb, ub, rows, *a, **k):
        status, sol, nodes = real(lb, ub, rows, *a, **k)
        return Verdict.SAT, list(ub), nodes     # every variable at its upper bound

    monkeypatch.setattr(milp_mod, "_mip_solve", lying)
    # y0 <= v and y0 >= v + 1/2: each row alone is satisfiable (no interval pre-filtering), together not
    values = sorted({y[0] for y in ys})
    assert len(values) >= 3
    v = float(values[len(values) // 2])
    rows = np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    spec_unsat = InputSpec(lo, hi, [(rows, np.array([v, -(v + 0.5)]))])
    with pytest.raises(SolverError, match="counterexample"):
        decide_milp(model, spec_unsat)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("target", [3, -7])
def test_objective_at_the_target_is_still_a_violation(solver, target):
    """The only feasible points have objective exactly ``target`` (the minimised row is tight):
    HiGHS's objective cutoff (``highs_worker.objective_cutoff``) and SCIP's first-solution stop
    must still answer sat. Fails with a cutoff at or below the target."""
    from qa_lirpa.exact.highs_worker import objective_cutoff, solve_mip as highs_solve_mip
    from qa_lirpa.exact.scip import solve_mip as scip_solve_mip

    assert objective_cutoff({0: 1}, target) > target and objective_cutoff(None, None) > 0
    solve = highs_solve_mip if solver == "highs" else scip_solve_mip
    row = {0: 2, 1: -3, 2: 1}
    lb, ub = [-20, -20, 0], [20, 20, 5]
    rows = [(dict(row), target, None), (dict(row), None, target), ({0: 1, 1: 1}, 1, 9)]
    verdict, sol, _ = solve(lb, ub, rows, 10.0, 1, dict(row), target)
    assert verdict is Verdict.SAT
    assert sum(a * round(sol[j]) for j, a in row.items()) == target
    # one more than the row can reach: infeasible, also with the cutoff
    rows = [(dict(row), None, target), ({0: 1}, 20, None), ({1: 1}, None, -20), ({2: 1}, 5, None)]
    assert 2 * 20 + 3 * 20 + 5 > target
    verdict, sol, _ = solve(lb, ub, rows, 10.0, 1, dict(row), target)
    assert verdict is Verdict.UNSAT and sol is None


@pytest.mark.skipif(not HAVE_SCIP, reason="PySCIPOpt not installed")
def test_scip_runs_with_the_alns_budget(monkeypatch):
    """SCIP's model gets the ALNS budget of ``scip.ALNS`` (what finds the Fashion proxy's sample
    229 in about a second), its cut separation stays off, and the answer is still right. Fails
    if the settings are dropped or not applied before the solve."""
    import pyscipopt

    from qa_lirpa.exact import scip

    seen = {}

    class Recording(pyscipopt.Model):
        def optimize(self):
            for key in (*scip.ALNS, "separating/gomory/freq"):
                seen[key] = self.getParam(key)
            return super().optimize()

    monkeypatch.setattr(pyscipopt, "Model", Recording)
    verdict, sol, _ = scip.solve_mip([0, 0], [4, 4], [({0: 1, 1: 1}, 7, None)], 10.0)
    assert verdict is Verdict.SAT and round(sol[0]) + round(sol[1]) >= 7
    for key, value in scip.ALNS.items():
        assert seen[key] == value, key
    assert seen["separating/gomory/freq"] == -1                       # the cut separators are off
    default = pyscipopt.Model()
    assert any(default.getParam(k) != v for k, v in scip.ALNS.items())   # the settings change something


@pytest.mark.skipif(not HAVE_SCIP, reason="PySCIPOpt not installed")
def test_the_seed_reaches_scip_and_decides_nothing(monkeypatch):
    """``solve_milp(..., solver="scip", seed=k)`` runs SCIP with random seed shift ``k`` (the
    seed restarts' other searches); the verdicts under other seeds equal enumeration's."""
    import pyscipopt

    seen = []

    class Recording(pyscipopt.Model):
        def optimize(self):
            seen.append(self.getParam("randomization/randomseedshift"))
            return super().optimize()

    monkeypatch.setattr(pyscipopt, "Model", Recording)
    solved = 0
    for case in range(12):
        model, spec, shape, truth = random_case(case)
        for seed in (0, 3, 17):
            seen.clear()
            res = solve_milp(model, spec, timeout=30, solver="scip", seed=seed, tighten=False)
            assert res.verdict == (Verdict.SAT if truth else Verdict.UNSAT), (case, seed, res)
            if truth:
                assert_counterexample(model, spec, res.counterexample, shape)
            assert set(seen) <= {seed}
            solved += len(seen)
    assert solved >= 15, solved          # SCIP ran (rows the interval bounds refute never reach it)
