"""The portfolio (VerifierConfig.portfolio): the exact procedure in a forked process beside branch
and bound. Verdicts against enumeration (the soundness campaign's random cases), a process's
counterexample re-checked by the parent, no process left behind. The CP-SAT parts skip without
OR-Tools; the MILP backend always runs."""
from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from benchscripts import load_benchmark

from qa_lirpa.base.deadline import Deadline
from qa_lirpa.verify import Verifier, VerifierConfig
from qa_lirpa.verify import bab as _bab
from qa_lirpa.verify.portfolio import ExactChild, backend_for

sc = load_benchmark("soundness_campaign.py", "soundness_campaign")
HAVE_ORTOOLS = importlib.util.find_spec("ortools") is not None
HAVE_SCIP = importlib.util.find_spec("pyscipopt") is not None
BACKENDS = ["milp", pytest.param("cpsat", marks=pytest.mark.skipif(not HAVE_ORTOOLS, reason="OR-Tools not installed")),
            pytest.param("scip", marks=pytest.mark.skipif(not HAVE_SCIP, reason="PySCIPOpt not installed"))]
SEEDS = [700000 + i for i in range(12)]


def _children() -> list[tuple[int, str]]:
    """(pid, state) of this process's child processes (Linux /proc)."""
    me, out = os.getpid(), []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            out.append((int(d), fields[0]))
    return out


@pytest.fixture(scope="module")
def cases():
    return [sc.make_case(s) for s in SEEDS]


@pytest.mark.parametrize("backend", BACKENDS)
def test_process_alone_agrees_with_enumeration(cases, backend):
    for case in cases:
        child = ExactChild(backend, case.model, [case.spec], (1,) + sc._shape(case.meta), Deadline.after(20))
        ans = None
        while ans is None:
            ans = child.poll()
            time.sleep(0.002)
        name, i, x, msg = ans
        assert name.lower() == case.truth, (case.case_seed, ans)
        if name == "SAT":
            assert i == 0 and not sc.check_counterexample(case, x), case.case_seed
        assert child.proc is None                          # reaped once it answered


def test_milp_process_after_highs_ran_here(cases):
    """HiGHS's scheduler threads do not survive the fork: a MILP process started after this
    process has run a HiGHS MIP (with HiGHS's default threads) must still answer (it waited forever
    on its root node's task group before the scheduler was restarted in the child)."""
    from qa_lirpa.exact import solve_milp

    hard = [c for c in cases if solve_milp(c.model, c.spec, timeout=20, input_shape=(1,) + sc._shape(c.meta)).nodes]
    assert hard, "no case needed a MIP node"
    case = hard[0]
    child = ExactChild("milp", case.model, [case.spec], (1,) + sc._shape(case.meta), Deadline.after(20))
    t0 = time.monotonic()
    ans = child.wait(20)
    assert ans is not None and ans[0].lower() == case.truth, (time.monotonic() - t0, ans)


@pytest.mark.parametrize("backend", BACKENDS)
def test_verifier_with_portfolio_agrees(cases, backend):
    for case in cases[:6]:
        cfg = VerifierConfig(portfolio=backend, falsify=False, exact_fallback="none", device="cpu")
        r = Verifier(case.model, cfg, input_shape=sc._shape(case.meta)).verify(case.spec, timeout=20)
        assert r.verdict.value == case.truth, (case.case_seed, r.stats.portfolio)
        if case.truth == "sat":
            assert not sc.check_counterexample(case, r.counterexample)
    assert not [c for c in _children() if c[1] == "Z"], "zombie child processes"


def test_stop_kills_and_reaps(cases):
    case = cases[0]
    child = ExactChild("milp", case.model, [case.spec], (1,) + sc._shape(case.meta), Deadline.after(20))
    pid = child.proc.pid
    child.stop()
    child.stop()                                           # idempotent
    assert pid not in [p for p, _ in _children()]


def test_a_wrong_sat_of_the_process_is_rejected(cases):
    """A ``sat`` from the process whose point does not violate the property decides nothing."""
    case = next(c for c in cases if c.truth == "unsat")

    class Liar:
        elapsed = 0.0

        def poll(self):
            return ("SAT", 0, np.asarray(case.spec.lower, dtype=np.float64), "")

        def stop(self):
            pass

    v = Verifier(case.model, VerifierConfig(portfolio="milp", device="cpu"), input_shape=sc._shape(case.meta))
    problem = v.problem(sc._shape(case.meta))
    from qa_lirpa.verify.result import VerifyStats
    from qa_lirpa.verify.search import Search

    stats = VerifyStats()
    search = Search(problem, case.spec, v.config, stats, Deadline.after(5), torch.Generator().manual_seed(0))
    pf = _bab._Portfolio(v, problem, [search], stats, Deadline.after(5))
    pf.child, pf.fd, pf.t0 = Liar(), -1, time.monotonic()
    assert pf.check() is None
    assert "failed the exact check" in stats.portfolio


def test_auto_falls_back_to_milp_without_ortools(monkeypatch):
    from qa_lirpa.exact import cpsat, scip

    monkeypatch.setattr(cpsat, "available", lambda: False)
    monkeypatch.setattr(scip, "available", lambda: False)
    assert backend_for("auto") == "milp"
    assert backend_for("auto", small=True) == "milp"
    assert backend_for("cpsat") == "cpsat"


def test_auto_takes_scip_on_small_models_only(monkeypatch):
    from qa_lirpa.exact import cpsat, scip

    monkeypatch.setattr(cpsat, "available", lambda: True)
    monkeypatch.setattr(scip, "available", lambda: True)
    assert backend_for("auto", small=True) == "scip"
    assert backend_for("auto", small=False) == "cpsat"
    monkeypatch.setattr(scip, "available", lambda: False)
    assert backend_for("auto", small=True) == "cpsat"
    assert backend_for("scip") == "scip"


@pytest.mark.skipif(not HAVE_SCIP, reason="PySCIPOpt not installed")
def test_verifier_resolves_the_portfolio_backend_per_model(cases):
    """"auto" picks SCIP for the campaign's small models and reports it in the stats."""
    case = next(c for c in cases if c.truth == "unsat")
    v = Verifier(case.model, VerifierConfig(portfolio="auto", device="cpu"), input_shape=sc._shape(case.meta))
    problem = v.problem(sc._shape(case.meta))
    assert v.portfolio_backend(problem) == "scip"
    assert Verifier(case.model, VerifierConfig(portfolio="none")).portfolio_backend(problem) == ""


def test_config_validation():
    with pytest.raises(ValueError):
        VerifierConfig(portfolio="gurobi")
    with pytest.raises(ValueError):
        VerifierConfig(portfolio_after=-1.0)
    assert VerifierConfig(method="paper", portfolio="auto").effective().portfolio == "none"


@pytest.mark.parametrize("backend", BACKENDS)
def test_process_without_lp_tightening_agrees_with_enumeration(cases, backend):
    """``exact_tighten: off``, ``cpsat_presolve: off`` and ``cpsat_lp: eager`` (the defaults above
    1024 hidden units): the exact process solves on interval domains alone, CP-SAT without its
    presolve and with its whole LP from the start; its verdicts still equal enumeration."""
    for case in cases:
        cfg = VerifierConfig(exact_tighten="off", cpsat_presolve="off", cpsat_lp="eager")
        child = ExactChild(backend, case.model, [case.spec], (1,) + sc._shape(case.meta), Deadline.after(20),
                           options=_bab.exact_options(cfg, None, backend))
        ans = None
        while ans is None:
            ans = child.poll()
            time.sleep(0.002)
        assert ans[0].lower() == case.truth, (case.case_seed, ans)
        if ans[0] == "SAT":
            assert not sc.check_counterexample(case, ans[2]), case.case_seed


def test_tighten_policy_follows_the_model_size(cases):
    """"auto" tightens small models (AAAI'21-sized) and not large ones; "on"/"off" are obeyed."""
    case = cases[0]
    v = Verifier(case.model, VerifierConfig(device="cpu"), input_shape=sc._shape(case.meta))
    problem = v.problem(sc._shape(case.meta))
    assert _bab.exact_tighten("auto", problem) is True
    assert _bab.exact_tighten("on", problem) is True and _bab.exact_tighten("off", problem) is False
    problem.crown.units = _bab.TIGHTEN_UNITS + 1
    assert _bab.exact_tighten("auto", problem) is False and _bab.exact_tighten("on", problem) is True
    with pytest.raises(ValueError):
        VerifierConfig(exact_tighten="sometimes")
    cfg = VerifierConfig(device="cpu")
    assert _bab.exact_options(cfg, problem, "milp") == {"tighten": False}
    assert _bab.exact_options(cfg, problem, "cpsat") == {"tighten": False, "presolve": False, "eager_lp": True}
    assert _bab.exact_options(replace(cfg, cpsat_lp="lazy"), problem, "cpsat")["eager_lp"] is False
    # with CROWN's domains "auto" presolves on large models too; "off" stays off
    assert _bab.exact_options(cfg, problem, "cpsat", domains=True)["presolve"] is True
    assert _bab.exact_options(replace(cfg, cpsat_presolve="off"), problem, "cpsat", domains=True)["presolve"] is False
    problem.crown.units = _bab.TIGHTEN_UNITS
    assert _bab.exact_options(cfg, problem, "cpsat") == {"tighten": True, "presolve": True, "eager_lp": False}
    assert _bab.exact_options(replace(cfg, cpsat_presolve="off"), problem, "cpsat")["presolve"] is False
    assert _bab.exact_options(replace(cfg, cpsat_lp="eager"), problem, "cpsat")["eager_lp"] is True
    problem.crown.units = _bab.TIGHTEN_UNITS + 1
    assert _bab.exact_options(replace(cfg, cpsat_presolve="on"), problem, "cpsat")["presolve"] is True
    with pytest.raises(ValueError):
        VerifierConfig(cpsat_presolve="maybe")
    with pytest.raises(ValueError):
        VerifierConfig(cpsat_lp="eagerly")


@pytest.mark.skipif(not HAVE_ORTOOLS, reason="OR-Tools not installed")
@pytest.mark.parametrize("eager", [False, True])
def test_cpsat_lp_setting_reaches_the_solver(cases, monkeypatch, eager):
    """``eager_lp`` is what CP-SAT is told (``add_lp_constraints_lazily``), and the verdict is
    enumeration's either way."""
    from ortools.sat.python import cp_model

    from qa_lirpa.exact.cpsat import solve_cpsat

    seen = []
    solve = cp_model.CpSolver.solve

    def spy(self, *a, **kw):
        seen.append(self.parameters.add_lp_constraints_lazily)
        return solve(self, *a, **kw)

    monkeypatch.setattr(cp_model.CpSolver, "solve", spy)
    unsat = [c for c in cases if c.truth == "unsat"][:2]
    assert unsat
    for case in unsat:
        r = solve_cpsat(case.model, case.spec, timeout=20, input_shape=(1,) + sc._shape(case.meta),
                        tighten=False, presolve=False, eager_lp=eager)
        assert r.verdict.name == "UNSAT", case.case_seed
    assert seen and all(lazy is (not eager) for lazy in seen)


def test_eta_extrapolates_the_proved_share(cases):
    """Search.eta: the seconds the batches would need for the rest of the root box at their rate
    so far (infinite before they have proved anything)."""
    from qa_lirpa.verify.result import VerifyStats
    from qa_lirpa.verify.search import Search

    case = cases[0]
    v = Verifier(case.model, VerifierConfig(device="cpu"), input_shape=sc._shape(case.meta))
    s = Search(v.problem(sc._shape(case.meta)), case.spec, v.config, VerifyStats(), Deadline.after(5),
               torch.Generator().manual_seed(0))
    assert s.eta() == float("inf")
    s.proved_share, s.batch_seconds = 0.25, 2.0
    assert s.eta() == pytest.approx(6.0)
    s.proved_share = 1.0
    assert s.eta() == 0.0


def test_behind_needs_batches_and_a_finished_local_search(monkeypatch):
    from types import SimpleNamespace as NS

    monkeypatch.setattr(_bab, "cores_busy", lambda: True)
    v = Verifier.__new__(Verifier)
    v.config = VerifierConfig(portfolio_yield=0.9)
    far = Deadline.after(100.0)
    slow = NS(local_search_pending=False, batches=3, eta=lambda: 1e9)
    quick = NS(local_search_pending=False, batches=3, eta=lambda: 1.0)
    assert v._behind([slow], far) and not v._behind([quick], far)
    assert v._behind([quick, slow], far)                      # the searches run one after another
    assert not v._behind([NS(local_search_pending=True, batches=3, eta=lambda: 1e9)], far)
    assert not v._behind([NS(local_search_pending=False, batches=0, eta=lambda: 1e9)], far)
    slow.last_batch_seconds = 0.2
    assert v._yield_seconds([slow], far) == pytest.approx(1.8)
    v.config = VerifierConfig(portfolio_yield=1.0)
    assert v._yield_seconds([slow], far) == pytest.approx(far.remaining(), abs=0.5)
    v.config = VerifierConfig(portfolio_yield=0.0)
    assert not v._behind([slow], far)
    v.config = VerifierConfig(portfolio_yield=0.9)
    monkeypatch.setattr(_bab, "cores_busy", lambda: False)     # a core to spare: waiting gains nothing
    assert not v._behind([slow], far)
    with pytest.raises(ValueError):
        VerifierConfig(portfolio_yield=1.5)


def test_cores_busy_reads_the_runnable_count_and_the_load(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    f = tmp_path / "loadavg"
    for text, busy in [("0.50 0.40 0.30 2/120 999", False), ("0.50 0.40 0.30 3/120 999", True),
                       ("2.50 2.10 1.90 1/120 999", True), ("2.40 2.10 1.90 2/120 999", False)]:
        f.write_text(text + "\n")
        assert _bab.cores_busy(str(f)) is busy, text
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 3.0, 3.0))
    assert _bab.cores_busy(str(tmp_path / "missing")) is True        # falls back to the load average


@pytest.mark.parametrize("backend", BACKENDS)
def test_waiting_for_the_process_agrees_with_enumeration(cases, backend, monkeypatch):
    """Branch and bound told it is always behind (and the cores busy): it waits for the exact process between its
    batches (the MILP hand-over waits too, ``exact_beside_portfolio: off``) and the verdicts
    still equal enumeration. No attacks, no alpha-CROWN: else the process answers before a
    batch has run."""
    from qa_lirpa.verify.search import Search

    monkeypatch.setattr(Search, "eta", lambda self: float("inf"))
    monkeypatch.setattr(_bab, "cores_busy", lambda: True)
    waited = 0
    for case in cases[:8]:
        cfg = VerifierConfig(portfolio=backend, exact_fallback="milp", exact_after=0.0, falsify=False,
                             alpha_root=False, exact_beside_portfolio="off", device="cpu")
        r = Verifier(case.model, cfg, input_shape=sc._shape(case.meta)).verify(case.spec, timeout=20)
        assert r.verdict.value == case.truth, (case.case_seed, r.stats.portfolio)
        if case.truth == "sat":
            assert not sc.check_counterexample(case, r.counterexample)
        if r.stats.time_yield > 0:
            waited += 1
            assert r.stats.milp_calls == 0, r.stats.exact      # no hand-over beside the process
    assert waited, "no case waited for the exact process"
    assert not [c for c in _children() if c[1] == "Z"], "zombie child processes"


def test_handover_beside_the_process_follows_the_model_size(cases, monkeypatch):
    """``exact_beside_portfolio: auto``: the MILP hand-over runs while the process runs on small
    models, and waits for the process to stop on large ones."""
    case = next(c for c in cases if c.truth == "unsat")
    cfg = VerifierConfig(portfolio="milp", exact_fallback="milp", exact_after=0.0, falsify=False,
                         alpha_root=False, portfolio_yield=0.0, device="cpu")
    v = Verifier(case.model, cfg, input_shape=sc._shape(case.meta))
    problem = v.problem(sc._shape(case.meta))
    calls = []
    monkeypatch.setattr(Verifier, "_exact", lambda self, *a, **k: calls.append(1) or False)
    v.verify(case.spec, timeout=20)
    assert calls, "the hand-over did not run beside the process on a small model"
    calls.clear()
    problem.crown.units = _bab.TIGHTEN_UNITS + 1
    r = v.verify(case.spec, timeout=20)
    assert r.verdict.value == "unsat" and not calls, r.stats.portfolio
    with pytest.raises(ValueError):
        VerifierConfig(exact_beside_portfolio="sometimes")


def test_a_failed_fork_leaves_branch_and_bound_alone(cases, monkeypatch):
    """The fork of the exact process fails (EAGAIN): the verdicts still equal enumeration, the
    stats say why, and no pipe is left open."""
    import multiprocessing.context as mpc

    def no_fork(self):
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(mpc.ForkProcess, "start", no_fork)
    fds, tried = len(os.listdir("/proc/self/fd")), 0
    for case in cases[:6]:
        cfg = VerifierConfig(portfolio="milp", falsify=False, exact_fallback="none", device="cpu")
        r = Verifier(case.model, cfg, input_shape=sc._shape(case.meta)).verify(case.spec, timeout=20)
        assert r.verdict.value == case.truth, (case.case_seed, r.stats.portfolio)
        if r.stats.portfolio:                      # the root box's bounds left the property open
            assert r.stats.portfolio.startswith("milp process not started (BlockingIOError"), r.stats.portfolio
            tried += 1
    assert tried, "no case tried to start the process"
    assert len(os.listdir("/proc/self/fd")) <= fds, "pipes left open"


def test_waiting_without_a_limit(cases):
    """``ExactChild.wait`` with no finite limit (an unlimited deadline) waits for the answer."""
    case = cases[0]
    child = ExactChild("milp", case.model, [case.spec], (1,) + sc._shape(case.meta), Deadline.after(20))
    ans = child.wait(float("inf"))
    assert ans is not None and ans[0].lower() == case.truth, ans
    child.stop()
