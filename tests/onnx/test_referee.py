"""onnxruntime is the referee of an ONNX file: the float32 envelope contains what onnxruntime
computes (checked by enumerating grids in onnxruntime), and the failure styles that produced wrong
``unsat`` answers (input cast at a box bound, output rescale, hidden requantization flips) are
answered correctly."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from onnx import TensorProto as T
from onnx import helper as h
from onnx_graphs import _t, qcdq_mlp, requant_flip
from onnx_helpers import make_model, quantize_static_model, save

from qa_lirpa.onnx import load_onnx, run_onnxruntime
from qa_lirpa.onnx.referee import OnnxReferee, float32_envelope
from qa_lirpa.verify import Verdict, Verifier
from qa_lirpa.verify.grid import GridProblem
from qa_lirpa.verify.intervals import IntBox, enveloped_requant
from qa_lirpa.verify.vnnlib import InputSpec
from qa_lirpa.quant.spec import QuantSpec
from fractions import Fraction


def _grid_problem(path: str, shape, crown: bool = False) -> GridProblem:
    model = load_onnx(path)
    return GridProblem(model, tuple(shape), torch.device("cpu"), use_crown=crown, referee=OnnxReferee(path))


def _enumerate_box(p: GridProblem, lo_codes: torch.Tensor, hi_codes: torch.Tensor) -> torch.Tensor:
    axes = [range(int(a), int(b) + 1) for a, b in zip(lo_codes.reshape(-1), hi_codes.reshape(-1))]
    return torch.tensor(list(itertools.product(*axes)), dtype=torch.int64)


@pytest.mark.parametrize("which", ["qs_mlp_pc", "qs_mlp_pt", "qcdq", "flip"])
def test_envelope_contains_onnxruntime(which):
    """Every grid point's onnxruntime output lies in the enveloped interval of a box holding it."""
    if which.startswith("qs"):
        path, shape = quantize_static_model("mlp", per_channel=which.endswith("pc"))
    elif which == "qcdq":
        path, shape = save(qcdq_mlp(pow2=False, seed=3), "ref_qcdq.onnx"), (6,)
    else:
        path, shape = save(requant_flip(), "ref_flip.onnx"), (1,)
    p = _grid_problem(path, shape, crown=True)
    assert not p.envelope.exact and p.crown is not None
    rng = np.random.default_rng(0)
    dim = int(np.prod(shape))
    qmin, qmax = p.qin.spec.qmin, p.qin.spec.qmax
    for trial in range(6):
        centre = torch.tensor(rng.integers(qmin, qmax + 1, dim))
        lo, hi = centre.clone(), centre.clone()
        free = rng.choice(dim, size=min(2, dim), replace=False)
        lo[free] = torch.clamp(centre[free] - 3, qmin, qmax)
        hi[free] = torch.clamp(centre[free] + 3, qmin, qmax)
        ylo, yhi = p.output_intervals(lo[None], hi[None])
        pts = _enumerate_box(p, lo, hi)
        xs = np.stack([p.representative(q, np.full(dim, -1e9), np.full(dim, 1e9)).reshape(-1).numpy()
                       for q in pts])
        y = np.asarray(run_onnxruntime(path, xs.astype(np.float32)), np.float64).reshape(len(pts), -1)
        assert np.all(y >= ylo.numpy()) and np.all(y <= yhi.numpy()), (which, trial)
        # and each point's own interval holds its onnxruntime output
        plo, phi = p.output_intervals(pts, pts)
        assert np.all(y >= plo.numpy()) and np.all(y <= phi.numpy())
        # CROWN with the envelope (tolerant quantizers, output error) bounds C @ y from below
        C = torch.tensor(rng.normal(size=(1, 3, y.shape[1])))
        lb = p.crown_lower(lo[None], hi[None], C).numpy().reshape(-1)
        assert np.all(y @ C[0].numpy().T >= lb[None, :]), (which, trial)


def test_enveloped_requant_covers_every_value_within_tol():
    spec = QuantSpec(8, True, 0.0371, zero_point=3)
    rng = np.random.default_rng(1)
    s_in = Fraction(0.0013)
    vals = torch.tensor(rng.integers(-4000, 4000, (1, 500)))
    tol = 0.01
    box = IntBox(vals, vals, [s_in], [0], 1)
    out = enveloped_requant(box, spec, tol)
    t = vals.double() * float(s_in) / 0.0371
    for e in (-tol, 0.0, tol):
        for rnd in (torch.round, lambda v: torch.floor(v + 0.5)):
            q = torch.clamp(rnd(t + e) + 3, spec.qmin, spec.qmax).to(torch.int64)
            assert bool((out.lo <= q).all() and (q <= out.hi).all())
    assert int((out.hi - out.lo).max()) <= 1
    exact = enveloped_requant(box, spec, 0.0)
    assert int((exact.hi - exact.lo).max()) <= 1


def _io(n_in, n_out):
    return ([h.make_tensor_value_info("x", T.FLOAT, ["N", n_in])],
            [h.make_tensor_value_info("out", T.FLOAT, ["N", n_out])])


def test_output_rescale_decided_by_onnxruntime():
    """Final DequantizeLinear with scale 0.1767425: code 71 is 12.548717081... exactly but
    12.548717498... in onnxruntime, so ``Y_0 >= 12.5487174`` is violated (sat)."""
    s = np.float32(0.1767425)
    nodes = [h.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="Q"),
             h.make_node("DequantizeLinear", ["q", "s", "z"], ["out"], name="DQ")]
    path = save(make_model(nodes, *_io(1, 1), [_t("s", s), _t("z", np.uint8(0))]), "ref_rescale.onnx")
    y71 = float(run_onnxruntime(path, np.array([[71 * float(s)]], np.float32)).reshape(-1)[0])
    assert y71 >= 12.5487174 > 71 * float(s)
    spec = InputSpec(np.array([12.0]), np.array([12.6]), [(np.array([[-1.0]]), np.array([-12.5487174]))])
    r = Verifier(load_onnx(path)).verify(spec, timeout=20)
    assert r.verdict is Verdict.SAT
    assert float(r.outputs[0]) == y71
    # just above onnxruntime's value: unsat, and the log names the envelope
    spec2 = InputSpec(np.array([12.0]), np.array([12.6]),
                      [(np.array([[-1.0]]), np.array([-float(np.nextafter(np.float32(y71), np.float32(1e9)))]))])
    r2 = Verifier(load_onnx(path)).verify(spec2, timeout=20)
    assert r2.verdict is Verdict.UNSAT
    assert "float32 envelope" in r2.stats.float32


def _scale1_linear_model(tmp_path):
    """Our own exporter's model: raw 8-bit pixels (scale 1) times 1.0."""
    from qa_lirpa.nn import QuantInput, QuantLinear
    from qa_lirpa.onnx import export_onnx

    pix = QuantSpec(8, signed=False, scale=1.0, rounding="half_even")
    w = QuantSpec(8, signed=True, scale=2.0 ** -6, rounding="half_even")
    model = torch.nn.Sequential(QuantInput(pix), QuantLinear(1, 1, w, bias=False)).double()
    with torch.no_grad():
        model[1].weight.fill_(1.0)
    path = str(tmp_path / "scale1.onnx")
    export_onnx(model, path, (1,))
    return path


def test_input_cast_reaches_the_code_of_the_float32_bound(tmp_path):
    """``X <= 185.49999999999997`` is 185.5 in float32: code 186 is reachable (half even)."""
    path = _scale1_linear_model(tmp_path)
    hi = float(np.nextafter(185.5, 0.0))
    assert float(np.float32(hi)) == 185.5
    spec = InputSpec(np.array([180.0]), np.array([hi]), [(np.array([[-1.0]]), np.array([-186.0]))])
    r = Verifier(load_onnx(path)).verify(spec, timeout=20)
    assert r.verdict is Verdict.SAT
    x = float(r.counterexample.reshape(-1)[0])
    assert 180.0 <= x <= hi
    assert float(run_onnxruntime(path, np.array([[x]], np.float32)).reshape(-1)[0]) >= 186.0
    # one code below the bound's float32 neighbourhood: nothing reaches 187
    spec2 = InputSpec(np.array([180.0]), np.array([hi]), [(np.array([[-1.0]]), np.array([-187.0]))])
    assert Verifier(load_onnx(path)).verify(spec2, timeout=20).verdict is Verdict.UNSAT


def test_hidden_requant_flip_is_sat():
    """The fused requantization flips code 81 -> 82 in onnxruntime; a property violated only at
    code 82 is sat."""
    path = save(requant_flip(), "ref_flip2.onnx")
    y = float(run_onnxruntime(path, np.array([[1.0]], np.float32)).reshape(-1)[0])
    spec = InputSpec(np.array([0.99]), np.array([1.0]), [(np.array([[-1.0]]), np.array([-y]))])
    r = Verifier(load_onnx(path)).verify(spec, timeout=20)
    assert r.verdict is Verdict.SAT
    assert float(r.outputs[0]) == y


def test_exact_models_need_no_envelope(tmp_path):
    path = _scale1_linear_model(tmp_path)
    env = float32_envelope(load_onnx(path))
    assert env.exact and env.describe().startswith("onnxruntime's float32 arithmetic is exact")


def test_run_instance_logs_the_float32_margin(tmp_path, capsys):
    """An unsat on a model whose arithmetic is not exact names, in the log, the margin it used."""
    from qa_lirpa.verify.vnnlib import write_vnnlib
    from qa_lirpa.vnncomp import run_instance

    s = np.float32(0.1767425)
    nodes = [h.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="Q"),
             h.make_node("DequantizeLinear", ["q", "s", "z"], ["out"], name="DQ")]
    path = save(make_model(nodes, *_io(1, 1), [_t("s", s), _t("z", np.uint8(0))]), "ref_log.onnx")
    write_vnnlib(tmp_path / "p.vnnlib", np.array([12.0]), np.array([12.6]),
                 [(np.array([[-1.0]]), np.array([-13.0]))])
    word = run_instance("default", path, str(tmp_path / "p.vnnlib"), str(tmp_path / "r.txt"), 30)
    assert word == "unsat"
    err = capsys.readouterr().err
    assert "onnxruntime referee: float32 envelope" in err and "outputs within" in err


def _float_output_gemm(seed: int, name: str):
    """An ONNX file with an exact input quantizer and a float32 Gemm output layer (random weights
    of ``seed``), an input box, and onnxruntime's maximum of output 0 on that box's grid."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1, (2, 3)).astype(np.float32)
    b = rng.normal(0, 1, 2).astype(np.float32)
    nodes = [h.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="Q"),
             h.make_node("DequantizeLinear", ["q", "s", "z"], ["d"], name="DQ"),
             h.make_node("Gemm", ["d", "w", "b"], ["out"], transB=1, name="fc")]
    inits = [_t("s", np.float32(1.0)), _t("z", np.uint8(0)), _t("w", w), _t("b", b)]
    path = save(make_model(nodes, *_io(3, 2), inits), name)
    lo, hi = np.array([10.0, 20.0, 30.0]), np.array([17.0, 26.0, 35.0])
    pts = np.array(list(itertools.product(*[range(10, 18), range(20, 27), range(30, 36)])), np.float32)
    return path, lo, hi, float(np.asarray(run_onnxruntime(path, pts), np.float64)[:, 0].max())


@pytest.mark.parametrize("route", ["handover", "portfolio"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_milp_handover_with_output_error_matches_onnxruntime(seed, route, monkeypatch):
    """Exact hidden arithmetic, a float output layer (output error only): the MILP takes over at
    once (``handover``), or the exact process started right after the root box's bounds answers
    (``portfolio``, branch and bound waiting for it), each right-hand side widened by the output
    error; at thresholds on and next to onnxruntime's maximum the verdicts match enumeration in
    onnxruntime (next to it, the process's widened point fails the exact check and the search
    decides with onnxruntime's help)."""
    from qa_lirpa.verify import VerifierConfig, bab
    from qa_lirpa.verify.search import Search

    path, lo, hi, top = _float_output_gemm(seed, f"ref_milp_{seed}.onnx")
    if route == "handover":
        cfg = VerifierConfig(exact_after=0.0, falsify=False, portfolio="none")
    else:
        cfg = VerifierConfig(exact_fallback="none", falsify=False, alpha_root=False, portfolio="milp",
                             portfolio_yield=1.0)
        monkeypatch.setattr(bab, "cores_busy", lambda: True)
        monkeypatch.setattr(Search, "eta", lambda self: float("inf"))
    for t, want in ((top, Verdict.SAT), (float(np.nextafter(np.float32(top), np.float32(np.inf))), Verdict.UNSAT)):
        spec = InputSpec(lo, hi, [(np.array([[-1.0, 0.0]]), np.array([-t]))])
        v = Verifier(load_onnx(path), cfg)
        assert v.problem((3,)).envelope.tolerance == {} and v.problem((3,)).output_error > 0
        r = v.verify(spec, timeout=30)
        assert r.verdict is want, (seed, t, r.stats.portfolio)
        if route == "handover":
            assert r.stats.milp_calls > 0 or want is Verdict.SAT
        else:       # the process answered: "sat" (at the edge a widened point that onnxruntime refutes) or "unsat"
            assert any(w in r.stats.portfolio for w in ("unsat after", "; sat after", "failed the exact check")), \
                r.stats.portfolio


@pytest.mark.parametrize("falsifier", ["lns", "restarts"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_neighbourhood_search_at_the_float32_edge(seed, falsifier):
    """The neighbourhood search (CP-SAT on sub-boxes) or the seed restarts (SCIP on the whole box),
    exact rational arithmetic both, beside the root's corner checks on an ONNX file with a float
    output layer: at onnxruntime's maximum the answer is sat with a point onnxruntime confirms, and
    at the next float32 above it the falsifier runs (no corner violates) and a point the solver
    may call a violation fails onnxruntime's check, so the answer stays unsat."""
    from qa_lirpa.verify import VerifierConfig

    path, lo, hi, top = _float_output_gemm(10 + seed, f"ref_{falsifier}_{seed}.onnx")
    which = {"lns_s": 5.0, "restart_s": 0.0} if falsifier == "lns" else {"lns_s": 0.0, "restart_s": 1.0,
                                                                         "restart_round_s": 0.2}
    cfg = VerifierConfig(crown="never", alpha_root=False, random_points=0, attack_steps=0, centre_checks=0,
                         local_search_s=0.001, local_search_starts=1, lns_size=1, portfolio="none",
                         exact_fallback="none", device="cpu", **which)
    for t, want in ((top, Verdict.SAT), (float(np.nextafter(np.float32(top), np.float32(np.inf))), Verdict.UNSAT)):
        spec = InputSpec(lo, hi, [(np.array([[-1.0, 0.0]]), np.array([-t]))])
        r = Verifier(load_onnx(path), cfg).verify(spec, timeout=30)
        assert r.verdict is want, (seed, t, r.summary())
        assert not r.stats.lns_error
        # the MILP's 32-bit rows cannot hold every scale (seed 2): the restarts then end, unheard
        assert not r.stats.restart_error or r.stats.restart_error.startswith("MilpEncodingError"), r.stats.restart_error
        if want is Verdict.UNSAT:
            assert (r.stats.lns_rounds if falsifier == "lns" else r.stats.restart_rounds) > 0
        else:
            y = np.asarray(run_onnxruntime(path, np.asarray(r.counterexample, np.float32).reshape(1, 3)))[0, 0]
            assert float(y) >= t


@pytest.mark.parametrize("per_channel", [False, True])
def test_no_crown_domains_under_the_referee(per_channel):
    """CROWN's domains for CP-SAT (``GridProblem.step_code_bounds``) bound the exact integer
    semantics, not onnxruntime's float32 arithmetic: a problem with the referee gets none (the
    same ONNX model without it does, so the test sees the difference)."""
    path, shape = quantize_static_model("mlp", per_channel=per_channel)
    model = load_onnx(path)
    plain = GridProblem(model, tuple(shape), torch.device("cpu"), use_crown=True)
    judged = _grid_problem(path, shape, crown=True)
    lo = judged.codes(torch.zeros((1,) + tuple(shape))).reshape(1, -1)
    hi = torch.clamp(lo + 3, max=judged.code_range[1])
    assert plain.step_code_bounds(lo, hi)
    assert judged.step_code_bounds(lo, hi) is None
