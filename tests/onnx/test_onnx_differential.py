"""Differential soundness of ``run_instance`` on quantized ONNX models: onnxruntime is the referee.

Each instance's truth is computed by enumerating every float32 input code its box reaches in
onnxruntime (``diffgen``). An answer is wrong when it is ``unsat`` on a violated property or ``sat``
with a counterexample that does not violate the property exactly in onnxruntime (``unknown`` and
``timeout`` are allowed, ``error`` is not).
"""
from __future__ import annotations

import numpy as np
import pytest

import diffgen as dg

TIMEOUT = 5.0


def _judge(inst: dg.Instance, tmp_path, name: str = "inst") -> str:
    """Run the instance through the VNN-COMP entry point; assert no error and no wrong answer."""
    from qa_lirpa.vnncomp import run_instance

    onnx_path, vnn_path, res_path = tmp_path / f"{name}.onnx", tmp_path / f"{name}.vnnlib", tmp_path / f"{name}.txt"
    inst.write(onnx_path, vnn_path)
    word = run_instance("diff", str(onnx_path), str(vnn_path), str(res_path), TIMEOUT)
    what = f"{inst.case.describe()} kind={inst.kind} truth={inst.expected} ({inst.note})"
    assert word != "error", f"error on {what}"
    if word == "unsat":
        assert not inst.truth, f"unsat but onnxruntime violates the property at {inst.witness!r}: {what}"
    if word == "sat":
        x = dg.read_counterexample(res_path.read_text(), inst.case.n_in)
        ok, why = dg.check_counterexample(inst, x)
        assert ok, f"sat with a bad counterexample ({why}): {what}"
        assert inst.truth, f"generator bug: valid counterexample on a property the enumeration says holds: {what}"
    return word


# -- the random sweep: every style x property kind -------------------------------------------------

_SWEEP = [(style, kind, 1000 + 10 * i + j) for i, style in enumerate(dg.STYLES + dg.EXTRA_STYLES)
          for j, kind in enumerate(dg.KINDS * 3) if style not in ("torch_qat", "matmul_qadd") or j < 3]


@pytest.mark.parametrize("style,kind,seed", [
    pytest.param(s, k, sd, marks=[pytest.mark.slow] if s == "torch_qat" else [], id=f"{s}-{k}-{sd}")
    for s, k, sd in _SWEEP])
def test_random_instance(style, kind, seed, tmp_path):
    if style == "torch_qat" and not dg.torch_qat_available():
        pytest.skip("torch QAT export unavailable")
    _judge(dg.make_instance(seed, style=style, kind=kind), tmp_path)


def test_sweep_has_both_truths():
    """The generator's property kinds give both violated and holding properties."""
    truths = {dg.make_instance(s, style=st, kind=k).truth for st, k, s in _SWEEP[:24] if st != "torch_qat"}
    assert truths == {True, False}


# -- the generator itself ----------------------------------------------------------------------

def test_input_grid_thresholds_match_onnxruntime():
    """Thresholds found by bisection are exact: the code changes between a threshold's float32
    predecessor and the threshold itself (checked through the full model's input quantizer)."""
    case = dg.make_case("preproc", 3)
    g = case.grid()
    for i in range(g.n):
        for k in (g.cmin + 1, (g.cmin + g.cmax) // 2, g.cmax):
            t = g.threshold(i, k)
            assert g.code(np.full(g.n, t, np.float32))[i] == k
            assert g.code(np.full(g.n, dg.next32(t, -np.inf), np.float32))[i] == k - 1


def test_float32_cast_reaches_next_code():
    """A float64 bound just below a float32 threshold rounds up to it and reaches the next code."""
    case = dg.input_cast_case()
    g = case.grid()
    assert g.threshold(0, 186) == 185.5  # half-even: 185.5 -> 186
    codes, _ = g.reachable(np.array([180.0]), np.array([185.49999999999997]))[0]
    assert codes.tolist() == list(range(180, 187))


# -- named regressions ---------------------------------------------------------------------------

def test_output_rescale_non_pow2(tmp_path):
    """Final DequantizeLinear with scale 0.1767425: onnxruntime gives fl32(71 * s) = 12.5487174988
    while 71 * s = 12.5487170815 exactly, so `Y_0 >= 12.5487174` is violated (sat)."""
    case = dg.output_rescale_case(0.1767425)
    y = case.run(np.array([[71.0]], np.float32))[0, 0]
    assert float(y) == 12.548717498779297
    sat = dg.instance_from(case, "thr_max", [70.0], [71.0], [dg.threshold_disjunct(1, 0, 12.5487174)], "rescale sat")
    assert sat.truth
    _judge(sat, tmp_path, "sat")
    # the mirror: Y_0 <= 12.5487174 at code 71 only holds in exact arithmetic (unsat for onnxruntime)
    unsat = dg.instance_from(case, "thr_min", [70.6], [71.0], [dg.threshold_disjunct(1, 0, 12.5487174, ge=False)],
                             "rescale unsat")
    assert not unsat.truth
    _judge(unsat, tmp_path, "unsat")
    # threshold exactly at onnxruntime's value: sat; one float64 step above: unsat
    for t, truth in ((float(y), True), (dg.next64(float(y), np.inf), False)):
        inst = dg.instance_from(case, "thr_max", [70.6], [71.4], [dg.threshold_disjunct(1, 0, t)], f"t={t!r}")
        assert inst.truth is truth
        _judge(inst, tmp_path, f"t{int(truth)}")


def test_float_output_layer_tie(tmp_path):
    """onnxruntime's float32 Gemm ties Y_0 and Y_1 where the exact values have Y_0 > Y_1: the
    robustness property for label 0 (violated iff Y_1 >= Y_0) is sat."""
    case, x = dg.float_tie_case()
    lo, hi = x.astype(np.float64) - 0.25, x.astype(np.float64) + 0.25
    inst = dg.instance_from(case, "robust", lo, hi, dg.robustness_disjuncts(2, 0), "float tie")
    assert inst.truth
    _judge(inst, tmp_path)


@pytest.mark.parametrize("label,truth", [(0, False), (1, True)])
def test_near_tie_robustness(label, truth, tmp_path):
    """Y_1 is one float32 ulp below Y_0 in onnxruntime at a single input point."""
    case, x = dg.near_tie_case()
    inst = dg.instance_from(case, "robust", x.astype(np.float64), x.astype(np.float64),
                            dg.robustness_disjuncts(2, label), "near tie")
    assert inst.truth is truth
    _judge(inst, tmp_path)


@pytest.mark.parametrize("hi,truth", [(185.49999999999997, True), (dg.next64((185.5 + 185.49998474121094) / 2, -np.inf),
                                                                   False)])
def test_input_float32_cast_at_box_bound(hi, truth, tmp_path):
    """`X_0 <= 185.49999999999997` is 185.5 in float32, which a scale-1 uint8 quantizer rounds to
    186 (half-even): `Y_0 >= 186` is violated. Just below the float32 midpoint it is not."""
    case = dg.input_cast_case()
    inst = dg.instance_from(case, "thr_max", [180.0], [hi], [dg.threshold_disjunct(1, 0, 186.0)], f"hi={hi!r}")
    assert inst.truth is truth
    _judge(inst, tmp_path)


@pytest.mark.parametrize("style", ["gemm", "conv_pt", "conv_pc"])
@pytest.mark.parametrize("variant", ["eq", "next64"])
def test_float_bias(style, variant, tmp_path):
    """Quantized Conv and Gemm with a float bias initializer load and verify correctly, sat (t at
    the true maximum) and unsat (t one float64 step above)."""
    inst = dg.make_instance(7, style=style, kind="thr_max", variant=variant, bias="float")
    assert inst.case.options["bias"] == "float"
    assert inst.truth is (variant == "eq")
    _judge(inst, tmp_path)
