"""The seed restarts after the neighbourhood search (``attack.Restarts``, ``restart_s``): each run
gets the next seed and at most ``restart_round_s`` seconds, a run that answers without a point
ends them, their points pass the exact check before they count, they run only where the
portfolio's ``auto`` runs SCIP, and the verifier with them still agrees with enumeration (a run
that finds nothing never proves anything)."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from qa_lirpa.base.deadline import Deadline
from qa_lirpa.exact.scip import available as scip_available
from qa_lirpa.base.verdict import Verdict
from qa_lirpa.verify import VerifierConfig, Verifier, verify
from qa_lirpa.verify import attack, bab
from qa_lirpa.verify.result import VerifyStats
from qa_lirpa.verify.search import Search

from .test_bab import make_case
from .test_local_search import against_enumeration

needs_scip = pytest.mark.skipif(not scip_available(), reason="PySCIPOpt is not installed")


def test_each_run_gets_the_next_seed_and_at_most_its_round():
    calls, answers = [], iter([(None, False), (None, False), (None, True)])

    def solve(seconds, seed):
        calls.append((seconds, seed))
        return next(answers)

    r = attack.Restarts(solve, first_seed=5, round_s=0.5)
    assert r.round(3.0, 9.0) is None and not r.exhausted          # timed out: try another seed
    assert r.round(0.2, 9.0) is None and not r.exhausted          # the CPU budget left is smaller
    assert r.round(3.0, 0.1) is None and r.exhausted              # answered without a point: nothing to find
    assert calls == [(0.5, 5), (0.2, 6), (0.1, 7)]
    assert r.rounds == 3


def test_a_run_gets_its_cpu_seconds_at_the_share_of_a_core_measured():
    """Half a core (a sleeping solver): the next run's wall-clock limit doubles, within the
    wall-clock time left."""
    calls = []

    def solve(seconds, seed):
        calls.append(seconds)
        t0 = time.process_time()
        while time.process_time() - t0 < 0.05:          # 0.05 s of CPU ...
            pass
        time.sleep(0.05 if len(calls) == 1 else 0.0)    # ... in 0.1 s of wall time
        return None, False

    r = attack.Restarts(solve, round_s=0.4, share=1.0)
    r.round(1.0, 9.0)
    assert calls[0] == 0.4
    assert 0.3 < r.share < 0.75, r.share
    share = r.share
    r.round(1.0, 9.0)
    assert calls[1] == pytest.approx(0.4 / share)
    r.round(1.0, 0.3)
    assert calls[2] == 0.3
    assert attack.Restarts(solve, share=0.0).share == 0.1      # never an unbounded limit


def _open_searches(cfg, solve):
    """Searches of the cases 200-259 whose root box the bounds and root attacks leave open, each
    with ``solve`` as its restart solver (the caller resets what ``solve`` records)."""
    for case in range(200, 260):
        model, spec = make_case(case)
        v = Verifier(model, cfg, input_shape=(spec.n_inputs,), device="cpu")
        p = v.problem((spec.n_inputs,))
        s = Search(p, spec, cfg, VerifyStats(), Deadline.after(60), torch.Generator().manual_seed(0), restart=solve)
        if s.bound_root() is None and s.open_root() is None:
            yield s


def test_they_follow_the_local_search_and_a_wrong_point_counts_for_nothing():
    """No neighbourhood solver here: the restarts start once the local search ends; a point that
    violates nothing fails the exact check, the runs go on with new seeds until an answer ends
    them."""
    cfg = VerifierConfig(device="cpu", crown="never", alpha_root=False, random_points=0, attack_steps=0,
                         local_search_s=0.001, local_search_starts=1, restart_s=30.0, restart_round_s=0.1)
    seeds, current = [], []

    def solve(seconds, seed):
        seeds.append(seed)
        if len(seeds) < 3:                        # the root box's lower corner (no violation, below)
            return current[0]._root_box[0][0].clone(), False
        return None, True

    for s in _open_searches(cfg, solve):
        seeds.clear()
        current[:] = [s]
        if s.p.find_violation(s._root_box[0], s.lower, s.upper, s.ospec) is not None:
            continue
        for _ in range(200):
            if s._ls is None:
                break
            assert not s._local_search_slice()
        if s.found is not None:
            continue
        assert seeds == [] and s._restarts is not None and s.local_search_pending
        for _ in range(10):
            if s._restarts is None:
                break
            assert not s._restart_slice()
        assert s.found is None
        assert seeds == [1, 2, 3] and s.stats.restart_rounds == 3
        assert not s.local_search_pending
        return
    pytest.fail("no case left open by the root and its local search")


def test_a_violating_point_of_a_run_is_the_search_s_counterexample():
    """A run that returns a violating grid point (one the verifier found on the same case): the
    search records it (SAT) at the restarts' first run, before any batch."""
    cfg = VerifierConfig(device="cpu", crown="never", alpha_root=False, random_points=0, attack_steps=0,
                         local_search_s=0.0, restart_s=30.0)
    for seed in range(400, 460):
        model, spec = make_case(seed)
        r = verify(model, spec, VerifierConfig(device="cpu", portfolio="none"), timeout=30)
        if r.verdict is not Verdict.SAT:
            continue
        v = Verifier(model, cfg, input_shape=(spec.n_inputs,), device="cpu")
        p = v.problem((spec.n_inputs,))
        bad = p.codes(torch.as_tensor(r.counterexample, dtype=torch.float64).reshape(1, -1)).reshape(-1)
        s = Search(p, spec, cfg, VerifyStats(), Deadline.after(60), torch.Generator().manual_seed(0),
                   restart=lambda seconds, seed: (bad.clone(), True))
        if s.bound_root() is not None or s.open_root() is not None:
            continue                                  # decided before the restarts: another case
        assert s._restarts is not None and s.batches == 0
        assert s.step() is Verdict.SAT and s.stats.restart_rounds == 1 and s.batches == 0
        x, _ = s.found
        assert np.all(x.reshape(-1) >= spec.lower) and np.all(x.reshape(-1) <= spec.upper)
        return
    pytest.fail("no sat case left open by the root")


@needs_scip
@pytest.mark.parametrize("block", range(2))
def test_verifier_with_the_restarts_equals_enumeration(block):
    """The restarts as (almost) the only attack: a 1 ms local search, no random points, no PGD,
    no CROWN, no neighbourhood search, no portfolio, no hand-over; verdicts equal enumeration on
    sat and unsat cases alike, and the restarts decide some sat cases at the root."""
    cfg = VerifierConfig(crown="never", alpha_root=False, random_points=0, attack_steps=0, local_search_s=0.001,
                         local_search_starts=1, lns_s=0.0, restart_s=2.0, restart_round_s=0.5, portfolio="none",
                         exact_fallback="none", device="cpu")

    def used(stats) -> bool:
        assert not stats.restart_error
        return stats.restart_rounds > 0

    ran, sat = against_enumeration(cfg, range(400 + 24 * block, 424 + 24 * block), used)
    assert ran >= 4 and sat >= 2, (ran, sat)


@needs_scip
def test_settings_are_validated_and_off_where_scip_would_not_run(monkeypatch):
    with pytest.raises(ValueError, match="restart"):
        VerifierConfig(restart_s=-1.0)
    with pytest.raises(ValueError, match="restart"):
        VerifierConfig(restart_round_s=0.0)
    assert VerifierConfig(method="paper").effective().restart_s == 0.0
    model, spec = make_case(201)
    shape = (spec.n_inputs,)
    v = Verifier(model, VerifierConfig(device="cpu"), input_shape=shape, device="cpu")
    assert v.restart_solver(v.problem(shape), spec) is not None
    v = Verifier(model, VerifierConfig(device="cpu", restart_s=0.0), input_shape=shape, device="cpu")
    assert v.restart_solver(v.problem(shape), spec) is None
    v = Verifier(model, VerifierConfig(device="cpu"), input_shape=shape, device="cpu")
    v._exact_reasons["scip"] = "not encodable (test)"
    assert v.restart_solver(v.problem(shape), spec) is None
    monkeypatch.setattr(bab, "TIGHTEN_UNITS", 0)          # a "large" model: auto runs CP-SAT there
    v = Verifier(model, VerifierConfig(device="cpu"), input_shape=shape, device="cpu")
    assert v.restart_solver(v.problem(shape), spec) is None


@needs_scip
def test_a_run_that_cannot_build_its_milp_ends_them(monkeypatch):
    """Where building the MILP takes a whole run, every run would: the solver raises
    SolverError, which the search records and which ends the restarts (no verdict from it)."""
    from qa_lirpa.exact import milp

    model, spec = make_case(201)
    shape = (spec.n_inputs,)
    v = Verifier(model, VerifierConfig(device="cpu"), input_shape=shape, device="cpu")
    solve = v.restart_solver(v.problem(shape), spec)
    codes, answered = solve(30.0, 1)                       # the real MILP: built, and answered
    assert answered
    monkeypatch.setattr(milp, "solve_milp", lambda *a, **k: milp.MilpResult(Verdict.TIMEOUT))
    solve = v.restart_solver(v.problem(shape), spec)
    with pytest.raises(milp.SolverError, match="not built"):
        solve(0.5, 2)


def test_a_run_waits_while_branch_and_bound_is_on_track():
    """A restart run goes before a step's batch only while branch and bound is behind (its
    rate so far would not prove the rest by the deadline, or it has proved nothing yet)."""
    cfg = VerifierConfig(device="cpu", crown="never", alpha_root=False, random_points=0, attack_steps=0,
                         local_search_s=0.0, restart_s=30.0, restart_round_s=0.1)
    seeds = []

    def solve(seconds, seed):
        seeds.append(seed)
        return None, False

    for s in _open_searches(cfg, solve):
        seeds.clear()
        if s._restarts is None:
            continue
        s.proved_share, s.batch_seconds = 0.5, 0.01           # on track: half proved in 10 ms
        assert not s._restarts_due()
        if s.step() is not None:
            continue                                          # decided in that batch: another case
        assert seeds == []                                    # the batch ran, the run waited
        s.proved_share, s.batch_seconds = 0.0, 1.0            # nothing proved yet: behind
        assert s._restarts_due()
        s.step()
        assert seeds == [1]
        return
    pytest.fail("no case left open by the root and a batch")
