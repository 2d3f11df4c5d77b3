"""Every rounding mode of QuantSpec (half_even, half_up, half_down, down, up) in every backend, on
small grids with exact ties (k + 1/2) and integers (the jumps of floor/ceil):

- the hull lines of the bound operators bound each mode's staircase (float32 and float64), with
  the node tolerance ``tol`` and the ``slack`` widening;
- ``integer_forward`` of small QNNs (chains and factory DAGs) on every grid point lies inside
  IBP, CROWN and alpha-CROWN bounds;
- the MILP and CP-SAT agree with enumeration (holding and failing properties);
- the ONNX export equals ``integer_forward`` bit for bit in onnxruntime on every grid point.

The Float32QuantInput patterns (Floor, Ceil, Ceil(v - 0.5)) against onnxruntime are in
``tests/onnx/test_onnx_rounding_impls.py``.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import qa_lirpa
import qnn_factory as qf
from qa_lirpa import QuantSpec
from qa_lirpa.base.verdict import Verdict
from qa_lirpa.compat import import_auto_lirpa
from qa_lirpa.exact import cpsat, solve_milp
from qa_lirpa.nn import QuantAct, QuantInput, QuantLinear, accumulator_bias_spec, integer_codes, integer_forward
from qa_lirpa.operators import relax
from qa_lirpa.quant.functions import fake_quant_raw, round_mode
from qa_lirpa.quant.spec import ROUNDING_CODE, ROUNDING_MODES, ROUNDING_SHIFT
from qa_lirpa.verify.vnnlib import InputSpec

auto_lirpa = import_auto_lirpa()
MODES = list(ROUNDING_MODES)
assert MODES == ["half_even", "half_up", "half_down", "down", "up"]


# ----- the hull lines ----------------------------------------------------------------------------

def _intervals(n: int, dtype, seed: int):
    """Random intervals, a third of the end points snapped to ties, a third to integers."""
    g = torch.Generator().manual_seed(seed)
    c = (torch.rand(n, generator=g, dtype=torch.float64) - 0.4) * 30
    w = torch.rand(n, generator=g, dtype=torch.float64) ** 2 * 10
    lo, hi = c - w, c + w
    r = torch.rand(n, generator=g)
    lo = torch.where(r < 0.33, torch.floor(lo) + 0.5, torch.where(r < 0.66, torch.floor(lo), lo))
    hi = torch.where(r < 0.33, torch.ceil(hi) - 0.5, torch.where(r < 0.66, torch.ceil(hi), hi))
    hi = torch.maximum(hi, lo)
    return lo.to(dtype), hi.to(dtype)


def _points(lo, hi, k: int = 201):
    """Uniform points, and every tie and integer of each interval (where it lies inside)."""
    t = torch.linspace(0, 1, k, dtype=lo.dtype).unsqueeze(1)
    pts = lo + t * (hi - lo)
    out = [pts]
    for off in (0.0, 0.5):
        p = torch.floor(pts) + off
        out.append(torch.where((p >= lo) & (p <= hi), p, pts))
    return torch.cat(out)


def _lines_hold(mode, lo, hi, A, B, shift, tol: float):
    At, Bt = torch.full_like(lo, A), torch.full_like(lo, B)
    uk, ub = relax.upper_line(lo, hi, At, Bt, shift)
    lk, lb = relax.lower_line(lo, hi, At, Bt, shift)
    v = _points(lo, hi)
    r = torch.clamp(round_mode(v, mode), A, B)
    return bool((uk * v + ub >= r - tol).all()), bool((lk * v + lb <= r + tol).all())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("A,B", [(0.0, 15.0), (-8.0, 7.0), (-float("inf"), float("inf"))])
def test_hull_lines_bound_every_mode(mode, dtype, A, B):
    lo, hi = _intervals(3000, dtype, seed=MODES.index(mode) + (7 if B == float("inf") else int(B)))
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    assert _lines_hold(mode, lo, hi, A, B, ROUNDING_SHIFT[mode], tol) == (True, True)


@pytest.mark.parametrize("mode", ["down", "up"])
def test_round_to_nearest_lines_miss_floor_and_ceil(mode):
    """The test above can fail: the round-to-nearest staircase (shift 0) does not bound floor/ceil."""
    lo, hi = _intervals(3000, torch.float64, seed=1)
    up_ok, dn_ok = _lines_hold(mode, lo, hi, -float("inf"), float("inf"), 0.0, 1e-9)
    assert not (up_ok and dn_ok)


def _fq_op(scale, zp, qmin, qmax, code, slack=0.0, tol=0.0):
    from qa_lirpa.operators.step import BoundFakeQuant

    attr = {"scale": torch.tensor(scale, dtype=torch.float64), "zero_point": torch.tensor(zp),
            "qmin": qmin, "qmax": qmax, "axis": 1, "rounding": code}
    if tol:
        attr["tol"] = tol
    op = BoundFakeQuant(attr, [], 0, {"qa_lirpa": {"slack": slack}})
    op.batch_dim = 0
    return op


class _Node:
    def __init__(self, lo, hi):
        self.lower, self.upper = lo, hi


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tol", [0.0, 0.3])
def test_fake_quant_operator_every_mode(mode, tol):
    """IBP and the backward (CROWN) relaxation of one FakeQuant node contain ``s R(x/s + e)`` for
    every ``|e| <= tol`` and every x of the box (ties and integers of x/s included)."""
    code = ROUNDING_CODE[mode]
    n, batch, spec = 5, 3, 4
    scale, zp = [0.25], [3]
    op = _fq_op(scale, zp, 0, 15, code, slack=1e-9, tol=tol)
    g = torch.Generator().manual_seed(code * 2 + int(tol > 0))
    lo = torch.round((torch.rand(batch, n, generator=g, dtype=torch.float64) - 0.6) * 16) / 8
    hi = lo + torch.round(torch.rand(batch, n, generator=g, dtype=torch.float64) * 16) / 8
    lA = torch.randn(spec, batch, n, generator=g, dtype=torch.float64)
    uA = torch.randn(spec, batch, n, generator=g, dtype=torch.float64)
    (pair,), lbias, ubias = op.bound_backward(lA, uA, _Node(lo, hi))
    nlA, nuA = pair
    il, iu = op.interval_propagate((lo, hi))
    t = torch.rand(3000, batch, n, generator=g, dtype=torch.float64)
    xs = lo + t * (hi - lo)
    s = scale[0]
    xs = torch.cat([xs, torch.clamp((torch.floor(xs / s) + 0.5) * s, lo, hi),
                    torch.clamp(torch.floor(xs / s) * s, lo, hi)])
    for e in (-tol, -tol / 2, 0.0, tol / 2, tol):
        q = fake_quant_raw(xs + e * s, tuple(scale), tuple(zp), 0, 15, 1, code)
        assert (q >= il - 1e-12).all() and (q <= iu + 1e-12).all()
        f_l = torch.einsum("sbn,kbn->ksb", lA, q)
        f_u = torch.einsum("sbn,kbn->ksb", uA, q)
        assert (torch.einsum("sbn,kbn->ksb", nlA, xs) + lbias <= f_l + 1e-9).all()
        assert (torch.einsum("sbn,kbn->ksb", nuA, xs) + ubias >= f_u - 1e-9).all()


def test_onnx_floor_and_ceil_operators():
    """onnx::Floor and onnx::Ceil (traced from torch.floor / torch.ceil) are bounded exactly."""
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 3, bias=False).double()    # auto_LiRPA wants a parameter
            with torch.no_grad():
                self.lin.weight.copy_(torch.eye(3))

        def forward(self, x):
            x = self.lin(x)
            return torch.floor(x * 0.5) + 2 * torch.ceil(x * 0.25)

    x = torch.tensor([[3.0, -2.0, 0.5]], dtype=torch.float64)
    lo, hi = x - 2.0, x + 2.0
    m = M()
    bm = qa_lirpa.bounded_module(m, x, quant_slack=0.0)     # no widening: IBP is the exact image
    ptb = auto_lirpa.PerturbationLpNorm(norm=float("inf"), x_L=lo, x_U=hi)
    grid = torch.tensor(list(itertools.product(*[np.arange(a, b + 1e-9, 0.125) for a, b in
                                                 zip(lo[0].tolist(), hi[0].tolist())])), dtype=torch.float64)
    y = m(grid).detach()
    for method in ("IBP", "CROWN"):
        lb, ub = bm.compute_bounds(x=(auto_lirpa.BoundedTensor(x, ptb),), method=method)
        assert (lb <= y.min(0).values + 1e-9).all() and (ub >= y.max(0).values - 1e-9).all()
        if method == "IBP":
            assert torch.allclose(lb[0], y.min(0).values, atol=1e-5)
            assert torch.allclose(ub[0], y.max(0).values, atol=1e-5)


# ----- small networks, enumerated ----------------------------------------------------------------

def _chain(mode: str, seed: int):
    """QuantInput (scale 1/2: input ties at x = k/2 + 1/4), QuantLinear, QuantAct (scale 1/2),
    QuantLinear, signed QuantAct: every quantizer in ``mode``."""
    g = torch.Generator().manual_seed(seed)
    ins = QuantSpec(8, False, 0.5, rounding=mode)
    ws = QuantSpec(5, True, 2.0 ** -4, rounding=mode)
    act = QuantSpec(5, False, 0.5, rounding=mode)
    out = QuantSpec(6, True, 0.25, rounding=mode)
    l1 = QuantLinear(2, 5, ws, accumulator_bias_spec(ins, ws))
    l2 = QuantLinear(5, 3, ws, accumulator_bias_spec(act, ws))
    for m in (l1, l2):
        with torch.no_grad():
            m.weight.uniform_(-1, 1, generator=g)
            m.bias.uniform_(-3, 3, generator=g)
    return torch.nn.Sequential(QuantInput(ins), l1, QuantAct(act), l2, QuantAct(out)).double().eval()


def _models(mode: str):
    """(name, model, centre, half-width): the chain, the factory MLP and two factory DAGs."""
    i = MODES.index(mode)
    return [("chain", _chain(mode, seed=11 + i), torch.tensor([[20.25, 31.0]]), 1.5),
            ("mlp", qf.mlp([2, 5, 4, 2], rounding=mode, seed=i, out_act=True), torch.tensor([[60.0, 130.0]]), 3.0),
            ("residual_mlp", qf.dag_qnn("residual_mlp", seed=i, rounding=mode), torch.tensor([[40.0, 90.0, 150.0]]),
             1.5),
            ("avgpool", qf.dag_qnn("avgpool", seed=i, rounding=mode),
             torch.arange(16, dtype=torch.float64).reshape(1, 1, 4, 4) * 13 + 7, 0.75)]


def _grid(centre: torch.Tensor, half: float, free: int = 3):
    """The box ``centre +- half`` on the first ``free`` inputs (the others fixed), and every point
    of it on the quarter grid: for the quantizers here (input scales 1 and 1/2) that holds every
    code's ties and integers, so its image is the box's exact image."""
    flat = centre.reshape(-1).double()
    lo, hi = flat.clone(), flat.clone()
    lo[:free] -= half
    hi[:free] += half
    axes = [np.arange(float(a), float(b) + 1e-9, 0.25) for a, b in zip(lo.tolist(), hi.tolist())]
    pts = torch.tensor(list(itertools.product(*axes)), dtype=torch.float64)
    shape = tuple(centre.shape)
    return lo.reshape(shape), hi.reshape(shape), pts.reshape((-1,) + shape[1:])


def _bounds(model, x, lo, hi, method):
    bm = qa_lirpa.bounded_module(model, x, optimize_bound_args={"iteration": 5})
    ptb = auto_lirpa.PerturbationLpNorm(norm=float("inf"), x_L=lo, x_U=hi)
    lb, ub = bm.compute_bounds(x=(auto_lirpa.BoundedTensor(x, ptb),), method=method)
    return lb.detach().double(), ub.detach().double()


@pytest.fixture(scope="module", params=MODES)
def enumerated(request):
    mode = request.param
    out = []
    for name, model, centre, half in _models(mode):
        lo, hi, pts = _grid(centre.double(), half)
        y = integer_forward(model, pts).reshape(len(pts), -1)
        out.append((name, model, centre.double(), lo, hi, pts, y))
    return mode, out


def test_every_mode_is_exercised_at_ties(enumerated):
    """The grids do hit ties: switching the mode changes some outputs of every model."""
    mode, cases = enumerated
    other = {"half_even": "half_up", "half_up": "half_down", "half_down": "half_even", "down": "up",
             "up": "down"}[mode]
    for (name, model, centre, lo, hi, pts, y), (_, m2, _, _) in zip(cases, _models(other)):
        assert not torch.equal(y, integer_forward(m2, pts).reshape(len(pts), -1)), (mode, name)


@pytest.mark.parametrize("method", ["IBP", "CROWN", "CROWN-Optimized"])
def test_bounds_contain_enumeration(enumerated, method):
    mode, cases = enumerated
    for name, model, centre, lo, hi, pts, y in cases:
        lb, ub = _bounds(model, centre, lo, hi, method)
        lb, ub = lb.reshape(1, -1), ub.reshape(1, -1)
        assert (lb <= y.min(0, keepdim=True).values + 1e-9).all(), (mode, name, method)
        assert (ub >= y.max(0, keepdim=True).values - 1e-9).all(), (mode, name, method)


def _exact_specs(lo, hi, y, step):
    """``[(spec, sat)]``: ``y_k <= min`` (sat) / ``< min`` (unsat), ``-y_k <= -max`` (sat) /
    ``-y_k < -max`` (unsat), for two outputs."""
    lower, upper = lo.reshape(-1).numpy(), hi.reshape(-1).numpy()
    y = y.numpy()
    out = []
    for k in range(min(2, y.shape[1])):
        row = np.zeros((1, y.shape[1]))
        row[0, k] = 1.0
        for t, sat in ((y[:, k].min(), True), (y[:, k].min() - step / 2, False)):
            out.append((InputSpec(lower, upper, [(row, np.array([t]))]), sat))
        for t, sat in ((-y[:, k].max(), True), (-y[:, k].max() - step / 2, False)):
            out.append((InputSpec(lower, upper, [(-row, np.array([t]))]), sat))
    return out


def _check_cex(model, spec, shape, res):
    x = torch.as_tensor(res.counterexample).reshape(shape)
    assert np.all(res.counterexample >= spec.lower) and np.all(res.counterexample <= spec.upper)
    yv = integer_codes(model, x).dequantize().reshape(-1).numpy()
    mat, rhs = spec.disjuncts[res.disjunct]
    assert np.all(mat @ yv <= rhs)


def _solve_all(enumerated, solve):
    mode, cases = enumerated
    for name, model, centre, lo, hi, pts, y in cases:
        step = float(min(integer_codes(model, pts[:1]).scale))
        for j, (spec, sat) in enumerate(_exact_specs(lo, hi, y, step)):
            res = solve(model, spec, tuple(centre.shape), j)
            assert res.verdict is (Verdict.SAT if sat else Verdict.UNSAT), (mode, name, j)
            if sat:
                _check_cex(model, spec, tuple(centre.shape), res)


def test_milp_agrees_with_enumeration(enumerated):
    _solve_all(enumerated, lambda m, spec, shape, j: solve_milp(
        m, spec, timeout=60, input_shape=shape, mode=("split", "combined")[j % 2], tighten=bool(j % 3)))


@pytest.mark.skipif(not cpsat.available(), reason="OR-Tools is not installed")
def test_cpsat_agrees_with_enumeration(enumerated):
    _solve_all(enumerated, lambda m, spec, shape, j: cpsat.solve_cpsat(
        m, spec, timeout=60, input_shape=shape, mode=("split", "combined")[j % 2], tighten=bool(j % 2)))


# ----- ONNX export ----------------------------------------------------------------------------------

def test_onnx_export_matches_onnxruntime_bit_for_bit(enumerated, tmp_path):
    from qa_lirpa.onnx import export_onnx, run_onnxruntime

    mode, cases = enumerated
    for name, model, centre, lo, hi, pts, y in cases:
        path = tmp_path / f"{name}_{mode}.onnx"
        export_onnx(model, path, tuple(centre.shape[1:]))
        # the grid, ties of the input quantizer (x/s = k + 1/2) and their float32 neighbours
        x = pts.numpy().astype(np.float32)
        nb = np.concatenate([np.nextafter(x, np.float32(np.inf)), np.nextafter(x, np.float32(-np.inf))])
        xs = np.concatenate([x, nb, np.full((4,) + x.shape[1:], -3.0, np.float32),
                             np.full((4,) + x.shape[1:], 300.0, np.float32)])
        ref = integer_forward(model, torch.tensor(xs, dtype=torch.float64)).numpy()
        got = run_onnxruntime(path, xs)
        np.testing.assert_array_equal(got.astype(np.float64).reshape(ref.shape), ref, err_msg=f"{mode} {name}")
        got0 = run_onnxruntime(path, xs[:500], optimize=False)
        np.testing.assert_array_equal(got0.astype(np.float64).reshape(ref[:500].shape), ref[:500])


@pytest.mark.parametrize("mode", ["half_down", "down", "up"])
def test_onnx_export_rounding_nodes(mode, tmp_path):
    """The new modes export to Floor/Ceil patterns (no QuantizeLinear, no Round)."""
    import onnx

    from qa_lirpa.onnx import export_onnx

    model = _chain(mode, seed=3)
    export_onnx(model, tmp_path / "m.onnx", (2,))
    ops = [n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node]
    assert "Round" not in ops and "QuantizeLinear" not in ops
    assert ("Ceil" in ops) == (mode in ("half_down", "up")) and ("Floor" in ops) == (mode == "down")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_onnx_export_signed_input_quantizer_near_ties(mode, scale, tmp_path):
    """A signed input quantizer on float32 inputs one ulp around every tie and integer of ``x/s``,
    and at ``+-(1/2 - 2^-25) s`` (where ``Add(0.5) -> Floor`` or ``Ceil(v - 0.5)`` in float32 would
    be wrong): onnxruntime's codes equal the exact ones."""
    from qa_lirpa.onnx import export_onnx, run_onnxruntime

    model = torch.nn.Sequential(QuantInput(QuantSpec(6, True, scale, zero_point=-3, rounding=mode))).double()
    path = tmp_path / "q.onnx"
    export_onnx(model, path, (1,))
    k = np.arange(-40, 41, dtype=np.float64)
    base = (np.concatenate([k, k + 0.5]) * scale).astype(np.float32)
    bad = np.float32(0.5) - np.float32(2.0 ** -25)
    x = np.concatenate([base, np.nextafter(base, np.float32(np.inf)), np.nextafter(base, np.float32(-np.inf)),
                        np.float32(scale) * np.array([bad, -bad, bad - 1, 1 - bad], dtype=np.float32)])
    x = x.astype(np.float32).reshape(-1, 1)
    ref = integer_forward(model, torch.tensor(x, dtype=torch.float64)).numpy()
    got = run_onnxruntime(path, x).astype(np.float64).reshape(ref.shape)
    np.testing.assert_array_equal(got, ref)
