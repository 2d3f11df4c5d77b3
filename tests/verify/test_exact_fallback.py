"""The combined strategy (VerifierConfig.exact_fallback = "milp"): branch and bound hands the boxes
it has not closed to the exact MILP procedure. Verdicts must equal exhaustive enumeration of the
input grid, a sat must carry a counterexample that violates the property under integer_forward,
a failing or lying MILP must not change a verdict, and the time limit must hold."""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from aaai21_instances import aaai21_instance
from benchscripts import load_benchmark

from qa_lirpa.base.deadline import Deadline
from qa_lirpa.config import load_config
from qa_lirpa.exact import milp as milp_mod
from qa_lirpa.exact.milp import MilpResult, SolverError
from qa_lirpa.nn import QuantAct
from qa_lirpa.verify import Verdict, VerifierConfig, Verifier, VerifyStats, verify
from qa_lirpa.verify.search import Search

sc = load_benchmark("soundness_campaign.py", "soundness_campaign")   # random QNNs, enumeration truth
SEEDS = range(6100, 6120)


def _config(**kw) -> VerifierConfig:
    base = dict(exact_fallback="milp", exact_after=0.0, falsify=False, device="cpu", exact_threads=1, portfolio="none",
                crown="never", exact_share=1.0)
    base.update(kw)
    return VerifierConfig(**base)


def _run(case, cfg, timeout=20.0):
    return verify(case.model, [case.spec], cfg, timeout=timeout, input_shape=(case.spec.n_inputs,))


def _check(case, res) -> None:
    assert res.verdict.value == case.truth, (case.case_seed, res.verdict, res.stats.exact)
    if res.verdict is Verdict.SAT:
        assert sc.check_counterexample(case, res.counterexample) == "", case.case_seed
        y = sc.integer_forward(case.model, torch.as_tensor(res.counterexample).reshape(1, -1))
        assert np.array_equal(np.asarray(res.outputs).reshape(-1), y.reshape(-1).numpy())


@pytest.fixture(scope="module")
def cases():
    return [sc.make_case(s) for s in SEEDS]


# ----- agreement with enumeration ------------------------------------------------------------------

@pytest.mark.parametrize("max_boxes", [0, 16])
def test_immediate_handover_agrees_with_enumeration(cases, max_boxes):
    """Hand over right after the root box (falsification off, so that the MILP decides whatever the
    root bound leaves open): on the root alone (max_boxes 16) and on the bounding box (0)."""
    by_milp = {"sat": 0, "unsat": 0}
    for case in cases:
        res = _run(case, _config(exact_max_boxes=max_boxes))
        _check(case, res)
        if res.stats.milp_calls:
            assert res.stats.exact.endswith(": " + case.truth), res.stats.exact
            by_milp[case.truth] += 1
    assert by_milp["sat"] >= 3 and by_milp["unsat"] >= 3, by_milp   # the MILP path really decided


def test_default_handover_agrees_with_enumeration(cases):
    """The strategy as configured by default (hand over after 10% of the budget, attacks on)."""
    for case in cases[:10]:
        _check(case, _run(case, replace(VerifierConfig(), exact_fallback="milp", device="cpu", exact_threads=1, portfolio="none")))


def _searches_after(case, cfg, batches: int):
    """A Verifier and a Search stopped after ``batches`` batches (None if it decided before)."""
    v = Verifier(case.model, cfg, input_shape=(case.spec.n_inputs,), device="cpu")
    problem = v.problem((case.spec.n_inputs,))
    stats = VerifyStats()
    deadline = Deadline.after(30.0)
    s = Search(problem, case.spec, v.config, stats, deadline, torch.Generator().manual_seed(0))
    verdict = s.start()
    for _ in range(batches):
        if verdict is not None:
            return None
        verdict = s.step()
    return (v, problem, s, stats, deadline) if verdict is None else None


@pytest.mark.parametrize("max_boxes", [0, 1000])
def test_handover_of_many_open_boxes(max_boxes):
    """After a few batches: one MILP per open box (several boxes, only their alive disjuncts) or one
    on their bounding box; the outcome must equal enumeration."""
    cfg = _config(exact_max_boxes=max_boxes, batch_size=4)
    several = 0
    for seed in range(6200, 6240):
        case = sc.make_case(seed)
        got = _searches_after(case, cfg, batches=2)
        if got is None:
            continue
        v, problem, s, stats, deadline = got
        n_open = len(s.stack)
        several += n_open > 1
        out = v._exact(problem, [s], stats, deadline, 0.0)
        if case.truth == "unsat":
            assert out is True, (seed, out, stats.exact)
        else:
            assert out is not True, (seed, stats.exact)
            if out is not False:                       # the MILP found it (else bab goes on)
                assert out.verdict is Verdict.SAT
                assert sc.check_counterexample(case, out.counterexample) == ""
        if case.truth == "unsat":
            assert stats.milp_calls == (n_open if max_boxes >= n_open else 1)
    assert several >= 3


def test_closed_boxes_leave_the_stack(monkeypatch):
    """Per-box MILPs that prove boxes safe before one stops early: those boxes are dropped, the rest
    stay for branch and bound, and the final verdict is still right."""
    cfg = _config(exact_max_boxes=1000, batch_size=4)
    for seed in range(6200, 6260):
        case = sc.make_case(seed)
        if case.truth != "unsat":
            continue
        got = _searches_after(case, cfg, batches=2)
        if got is None or len(got[2].stack) < 3:
            continue
        v, problem, s, stats, deadline = got
        real = milp_mod.solve_milp
        calls = []

        def flaky(*a, **kw):
            calls.append(1)
            return real(*a, **kw) if len(calls) < 3 else MilpResult(Verdict.TIMEOUT)

        monkeypatch.setattr(milp_mod, "solve_milp", flaky)
        before = len(s.stack)
        assert v._exact(problem, [s], stats, deadline, 0.0) is False
        assert len(s.stack) == before - 2
        monkeypatch.setattr(milp_mod, "solve_milp", real)
        v2 = s
        verdict = None
        while verdict is None:
            verdict = v2.step()
        assert verdict is Verdict.UNSAT
        return
    pytest.skip("no case with enough open boxes")


# ----- a MILP that fails or lies decides nothing -------------------------------------------------

def _wrong_point(case):
    """A grid point of the box that does not violate the property (None if all do)."""
    hit = sc.violated_rows(case.outputs, case.spec.disjuncts)
    return None if hit.all() else case.grid[int(np.argmin(hit))].numpy()


@pytest.mark.parametrize("failure", ["bogus_sat", "error", "early_stop"])
def test_failing_milp_leaves_the_verdict_to_bab(cases, monkeypatch, failure):
    def fake(model, spec, timeout=60.0, **kw):
        if failure == "error":
            raise SolverError("HiGHS ended with status Not Set")
        if failure == "early_stop":
            return MilpResult(Verdict.TIMEOUT)
        return MilpResult(Verdict.SAT, counterexample=fake.point, disjunct=0)

    monkeypatch.setattr(milp_mod, "solve_milp", fake)
    used = 0
    for case in cases[:12]:
        fake.point = _wrong_point(case)
        if failure == "bogus_sat" and fake.point is None:
            continue
        res = _run(case, _config())
        _check(case, res)                   # bab decides alone, and right
        if res.stats.milp_calls:
            used += 1
            assert "branch and bound goes on" in res.stats.exact
            if failure == "bogus_sat":
                assert "failed the exact check" in res.stats.exact
    assert used >= 4


def test_milp_gets_only_its_share_of_the_time(cases, monkeypatch):
    """exact_share: the MILP's time limit is at most that share of the time left at the hand-over;
    when it runs out, branch and bound decides with the rest (and decides right)."""
    limits = []

    def slow(model, spec, timeout=60.0, **kw):
        assert isinstance(timeout, Deadline)          # the sub-deadline itself, not loose seconds
        limits.append(timeout.remaining())
        return MilpResult(Verdict.TIMEOUT)

    monkeypatch.setattr(milp_mod, "solve_milp", slow)
    for case in cases[:6]:
        res = _run(case, _config(exact_share=0.25), timeout=8.0)
        _check(case, res)
    assert limits and max(limits) <= 0.25 * 8.0 + 1e-6


@pytest.mark.parametrize("share", [0.5, 1.0])
def test_exact_fallback_gets_a_sub_deadline_of_the_parent(cases, monkeypatch, share):
    """A Deadline given to verify reaches the exact fallback as a sub-deadline: never later than the
    parent, and at most ``exact_share`` of what was left at the hand-over."""
    got = []

    def record(model, spec, timeout=60.0, **kw):
        got.append((parent, timeout, timeout.remaining(), parent.remaining()))
        return MilpResult(Verdict.TIMEOUT)

    monkeypatch.setattr(milp_mod, "solve_milp", record)
    for case in cases[:3]:
        parent = Deadline.after(6.0)
        res = verify(case.model, [case.spec], _config(exact_share=share), timeout=parent,
                     input_shape=(case.spec.n_inputs,))
        _check(case, res)
    assert got
    for parent_, sub, left, parent_left in got:
        assert isinstance(sub, Deadline) and sub.at <= parent_.at
        assert left <= share * parent_left + 1e-3, (left, parent_left)


# ----- models the MILP cannot encode -------------------------------------------------------------

class _OwnSemantics(QuantAct):
    """A requantizer with its own int_forward (like the ONNX import's float32 one)."""

    def int_forward(self, x):
        return super().int_forward(x)


def test_unencodable_model_runs_plain_bab(cases):
    case = next(c for c in cases if any(isinstance(m, QuantAct) for m in c.model))
    layers = [(_OwnSemantics(m.spec) if type(m) is QuantAct else m) for m in case.model]
    case.model = nn.Sequential(*layers).double()
    res = _run(case, _config())
    _check(case, res)
    assert res.stats.milp_calls == 0
    assert res.stats.exact.startswith("milp not used:") and "int_forward" in res.stats.exact


def test_continuous_model_runs_plain_bab():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    from qa_lirpa.verify import InputSpec

    spec = InputSpec(np.zeros(2), np.ones(2), [(np.array([[1.0, -1.0]]), np.array([-100.0]))])
    res = verify(model, spec, _config(), timeout=5.0)
    assert res.verdict is Verdict.UNSAT
    assert res.stats.exact == "milp not used: continuous inputs (no QuantInput)"


# ----- time limit ------------------------------------------------------------------------------------

def _aaai21_instance(i: int):
    return aaai21_instance(i)


@pytest.mark.parametrize("timeout,after", [(2.0, 0.3), (0.4, 0.0)])
def test_timeout_holds(timeout, after):
    """Sample 264 (eps 3): neither bab nor the MILP decides it in 20 s. The verdict is timeout and
    the time limit holds, also when it runs out while the MILP is being built."""
    model, spec = _aaai21_instance(264)
    v = Verifier(model, _config(exact_after=after, falsify=True), input_shape=(784,), device="cpu")
    t0 = time.monotonic()
    res = v.verify(spec, timeout=timeout)
    wall = time.monotonic() - t0
    assert res.verdict is Verdict.TIMEOUT, res.stats.exact
    assert res.stats.milp_calls <= 1
    assert wall <= timeout + 0.5, (wall, res.stats.exact)


def test_milp_decides_what_bab_cannot():
    """Sample 303 (eps 4): bab alone times out at 20 s; with the hand-over after 0.5 s the MILP
    finds the counterexample (checked exactly) well within 20 s. (The seed restarts, which find
    it too, are off: this is the hand-over's test.)"""
    model, spec = _aaai21_instance(303)
    v = Verifier(model, _config(exact_after=0.025, falsify=True, restart_s=0.0), input_shape=(784,), device="cpu")
    res = v.verify(spec, timeout=20.0)
    assert res.verdict is Verdict.SAT and res.stats.milp_calls == 1, res.stats.exact
    x = np.asarray(res.counterexample).reshape(-1)
    assert np.all(x >= spec.lower) and np.all(x <= spec.upper)
    from qa_lirpa.nn import argmax_smallest, integer_codes

    out = integer_codes(model, torch.as_tensor(x).reshape(1, -1))
    assert int(argmax_smallest(out.dequantize().reshape(1, -1))[0]) != 2   # label of sample 303


# ----- configuration ---------------------------------------------------------------------------------

def test_config_checks_and_paper():
    with pytest.raises(ValueError):
        VerifierConfig(exact_after=1.5)
    with pytest.raises(ValueError):
        VerifierConfig(exact_fallback="smt")
    assert VerifierConfig(method="paper", exact_fallback="milp").effective().exact_fallback == "none"
    assert load_config(VerifierConfig, "verify_default") == VerifierConfig()
