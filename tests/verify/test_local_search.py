"""The root's greedy descent on the input grid (``attack.LocalSearch``, ``local_search_s``):
its points stay on the box's grid, a descent never ends worse than it started, it reaches the
minimum where the score is separable, and the verifier with it still agrees with enumeration."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from qa_lirpa.base.deadline import Deadline
from qa_lirpa.nn import integer_forward
from qa_lirpa.verify import InputSpec, Verdict, VerifierConfig, Verifier, verify
from qa_lirpa.verify import attack
from qa_lirpa.verify.spec import OutputSpec

from .test_bab import check, make_case
from .tiny_qnn import real_grid, tiny_mlp


def _problem_and_spec(model, spec: InputSpec):
    v = Verifier(model, VerifierConfig(device="cpu"), input_shape=(spec.n_inputs,), device="cpu")
    p = v.problem((spec.n_inputs,))
    box = p.root(np.asarray(spec.lower, np.float64), np.asarray(spec.upper, np.float64))
    ospec = OutputSpec.from_disjuncts(spec.disjuncts, spec.n_outputs, p.device)
    return p, box, ospec


def local_search(p, lo, hi, ospec, starts, deadline, gen, **kw) -> torch.Tensor:
    """The descents' end points of a LocalSearch run until ``deadline`` (``starts`` if none ended)."""
    ls = attack.LocalSearch(p, lo, hi, ospec, starts, gen, **kw)
    ls.advance(deadline)
    return torch.stack(ls.ends) if ls.ends else starts.to(torch.int64).reshape(starts.shape[0], -1)


def _score(p, ospec, pts: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return attack.violation(p.attack_forward(pts.to(torch.float64)), ospec)


@pytest.mark.parametrize("seed", range(6))
def test_descent_stays_on_the_grid_and_never_ends_worse(seed):
    model, spec = make_case(200 + seed)
    p, box, ospec = _problem_and_spec(model, spec)
    assert box is not None
    lo, hi = box
    g = torch.Generator().manual_seed(seed)
    starts = attack.box_points(p, lo, hi, 4, g)
    ends = local_search(p, lo[0], hi[0], ospec, starts, Deadline.after(5.0), g, candidates=3, all_moves=0)
    assert ends.dtype == torch.int64 and ends.shape[1] == lo.shape[1]
    assert bool(((ends >= lo) & (ends <= hi)).all())
    # the first descents start from the starts, in order
    n = min(starts.shape[0], ends.shape[0])
    assert bool((_score(p, ospec, ends[:n]) <= _score(p, ospec, starts[:n]) + 1e-12).all())


def test_descent_reaches_the_minimum_of_a_separable_score():
    """One linear layer, one output: the score is a sum of per-input terms, so coordinate descent from a corner reaches the grid's minimum; the property asks
    for an output at most that minimum, so the descent ends at a violation that the exact check
    accepts."""
    centre = torch.tensor([100.0, 120.0, 90.0, 140.0])
    model = tiny_mlp(4, [], 1, centre, seed=3)
    lower, upper = centre.numpy() - 3, centre.numpy() + 3
    pts = real_grid(lower, upper, 1.0)
    y = integer_forward(model, pts).reshape(-1).numpy()
    spec = InputSpec(lower, upper, [(np.array([[1.0]]), np.array([y.min()]))])
    p, (lo, hi), ospec = _problem_and_spec(model, spec)
    g = torch.Generator().manual_seed(0)
    for corner in (lo, hi):
        calls = []
        end = local_search(p, lo[0], hi[0], ospec, corner, Deadline.after(10.0), g, combine=1,
                                  confirm=lambda pt: calls.append(pt) is None)
        assert float(_score(p, ospec, end[-1:])[0]) <= 0.0
        assert calls, "a float violation must be handed to the exact check"
        assert p.find_violation(end[-1:], spec.lower, spec.upper, ospec) is not None


def test_a_refused_float_violation_does_not_end_the_search():
    """Where the exact check refuses a point the float model calls a violation, the search goes on
    (kicks from the best point) until its deadline."""
    centre = torch.tensor([100.0, 120.0, 90.0])
    model = tiny_mlp(3, [], 1, centre, seed=5)
    lower, upper = centre.numpy() - 2, centre.numpy() + 2
    pts = real_grid(lower, upper, 1.0)
    y = integer_forward(model, pts).reshape(-1).numpy()
    spec = InputSpec(lower, upper, [(np.array([[1.0]]), np.array([y.max()]))])   # every point violates
    p, (lo, hi), ospec = _problem_and_spec(model, spec)
    refused = []
    ends = local_search(p, lo[0], hi[0], ospec, lo, Deadline.after(0.5), torch.Generator().manual_seed(0),
                               confirm=lambda pt: refused.append(pt) and False)
    assert len(refused) >= 2 and ends.shape[0] == len(refused)


@pytest.mark.parametrize("block", range(2))
def test_verifier_with_only_local_search_equals_enumeration(block):
    """The root's local search as the only attack (no random points, no PGD, no CROWN, so that
    roots stay open): verdicts equal enumeration, it runs, and it decides some sat cases at the
    root."""
    cfg = VerifierConfig(crown="never", alpha_root=False, random_points=0, attack_steps=0, local_search_s=1.0,
                         portfolio="none", exact_fallback="none", device="cpu")
    ran, sat_at_root = against_enumeration(cfg, range(300 + 12 * block, 312 + 12 * block),
                                           lambda st: st.local_search_calls > 0)
    assert ran >= 3 and sat_at_root >= 1, (ran, sat_at_root)


def against_enumeration(cfg: VerifierConfig, seeds, used) -> tuple[int, int]:
    """Verify ``make_case(seed)`` for each seed with ``cfg`` and compare with enumeration; returns
    how many runs ``used(stats)`` says used the procedure under test, and how many of those were
    sat at the root box."""
    ran = sat_at_root = 0
    for seed in seeds:
        model, spec = make_case(seed)
        r = verify(model, spec, cfg, timeout=30)
        check(r, model, spec)
        ran += bool(used(r.stats))
        sat_at_root += bool(used(r.stats)) and r.verdict is Verdict.SAT and r.stats.max_depth == 0
    return ran, sat_at_root


def test_local_search_is_validated():
    with pytest.raises(ValueError, match="local_search"):
        VerifierConfig(local_search_s=-1.0)
    assert VerifierConfig(method="paper").effective().local_search_s == 0.0


def test_a_step_cut_by_its_slice_resumes_with_fewer_moves(monkeypatch):
    """Slices shorter than one step (a large model): the step stops between chunks, the next
    steps score fewer moves, and the descents still end (no slice is wasted forever)."""
    model, spec = make_case(201)
    p, (lo, hi), ospec = _problem_and_spec(model, spec)
    monkeypatch.setattr(attack, "LS_CHUNK", 1)
    g = torch.Generator().manual_seed(0)
    ls = attack.LocalSearch(p, lo[0], hi[0], ospec, attack.box_points(p, lo, hi, 2, g), g, all_moves=64)
    for _ in range(400):
        ls.advance(Deadline.after(0.0005))
        if ls.ends or ls.done:
            break
    assert ls.all_moves < 64, "no step was cut by its slice"
    assert ls.ends or ls.done
    assert all(bool(((e >= lo[0]) & (e <= hi[0])).all()) for e in ls.ends)


def test_local_search_leaves_the_search_random_stream_alone():
    """The local search draws its kicks from its own generator: the search's generator (the box
    attacks' random starts) is in the same state with and without it, so turning it on cannot
    change which counterexamples the later attacks find (on the AAAI'21 MLP at eps 7, sample 24
    went from falsified in 0.4 s to a timeout when it shared the stream)."""
    from qa_lirpa.verify.result import VerifyStats
    from qa_lirpa.verify.search import Search

    cfg = VerifierConfig(crown="never", alpha_root=False, random_points=4, attack_steps=2, attack_restarts=1,
                         portfolio="none", exact_fallback="none", device="cpu")
    kicked = 0
    for seed in range(300, 312):
        model, spec = make_case(seed)
        p, _, _ = _problem_and_spec(model, spec)
        states = []
        for budget in (0.0, 5.0):
            gen = torch.Generator().manual_seed(7)
            s = Search(p, spec, replace(cfg, local_search_s=budget), VerifyStats(), Deadline.after(30), gen)
            if s.start() is not None or (budget and s._ls is None):
                break
            if budget:
                while s._ls is not None and len(s._ls.ends) <= cfg.local_search_starts:
                    s._local_search_slice()
                kicked += s._ls is not None         # it went on to kick its best point
            states.append(gen.get_state())
        if len(states) == 2:
            assert torch.equal(states[0], states[1]), seed
    assert kicked >= 2, kicked


def test_a_step_scores_at_most_the_configured_moves():
    """``local_search_moves`` (LocalSearch's ``candidates``): where there are more moves than
    ``all_moves``, a step scores only that many single-pixel moves (then at most three combined
    points), and the verifier hands the setting to the search."""
    from qa_lirpa.verify.result import VerifyStats
    from qa_lirpa.verify.search import Search

    model, spec = make_case(201)
    p, (lo, hi), ospec = _problem_and_spec(model, spec)
    g = torch.Generator().manual_seed(0)
    for k in (1, 3):
        ls = attack.LocalSearch(p, lo[0], hi[0], ospec, attack.box_points(p, lo, hi, 2, g), g,
                                candidates=k, all_moves=0)
        sizes = []
        score = ls._score
        ls._score = lambda pts: (sizes.append(pts.shape[0]), score(pts))[1]
        ls.advance(Deadline.after(0.5))
        assert ls.ends, "no descent ended"
        assert sizes and max(sizes) <= max(k, 3), (k, sizes)
        assert any(s == k for s in sizes)
    cfg = VerifierConfig(crown="never", alpha_root=False, random_points=4, attack_steps=0, local_search_moves=7,
                         portfolio="none", exact_fallback="none", device="cpu")
    for seed in range(300, 320):
        model, spec = make_case(seed)
        p, _, _ = _problem_and_spec(model, spec)
        s = Search(p, spec, cfg, VerifyStats(), Deadline.after(30), torch.Generator().manual_seed(0))
        if s.start() is None and s._ls is not None:
            assert s._ls.candidates == 7
            break
    else:
        pytest.fail("no case left its root open for the local search")


def test_the_descent_budget_is_longer_for_a_near_miss_where_no_restarts_follow():
    """``local_search_solo``: the descent's CPU budget is ``local_search_s``; where SCIP's seed
    restarts do not follow it (no restart solver, or ``restart_s: 0``) it gets ``local_search_solo
    - 1`` times that again once the budget is spent, if its best end is then a near miss."""
    from qa_lirpa.verify.result import VerifyStats
    from qa_lirpa.verify.search import Search

    cfg = VerifierConfig(crown="never", alpha_root=False, random_points=4, attack_steps=0, local_search_s=1.5,
                         local_search_solo=3.0, portfolio="none", exact_fallback="none", device="cpu")
    never = lambda seconds, seed: (None, False)      # noqa: E731 - a restart solver that finds nothing
    for seed in range(300, 320):
        model, spec = make_case(seed)
        p, _, _ = _problem_and_spec(model, spec)
        searches = []
        for c, restart in ((cfg, never), (cfg, None), (replace(cfg, restart_s=0.0), never)):
            s = Search(p, spec, c, VerifyStats(), Deadline.after(30), torch.Generator().manual_seed(0),
                       restart=restart)
            if s.start() is not None or s._ls is None:
                break
            searches.append(s)
        if len(searches) < 3:
            continue
        assert [s._ls_left for s in searches] == [1.5, 1.5, 1.5]
        assert [s._ls_extra for s in searches] == [0.0, 3.0, 3.0]
        # spend the budget with the best end a near miss (a tenth of the root bound's depth)
        for s in searches:
            s._ls_left, s._ls.best_v, s._root_margin = 0.0, 0.05, -1.0
            ls = s._ls
            s._local_search_slice()
            assert (s._ls is ls) == (s._ls_extra == 0.0 and s is not searches[0])
        assert searches[0]._ls is None and searches[1]._ls is not None and searches[1]._ls_left > 2.5
        assert searches[1].stats.local_search_extended == 1 and searches[0].stats.local_search_extended == 0
        # no near miss: the budget ends
        s = Search(p, spec, cfg, VerifyStats(), Deadline.after(30), torch.Generator().manual_seed(0))
        assert s.start() is None and s._ls is not None
        s._ls_left, s._ls.best_v, s._root_margin = 0.0, 0.2, -1.0
        s._local_search_slice()
        assert s._ls is None and s.stats.local_search_extended == 0
        break
    else:
        pytest.fail("no case left its root open for the local search")
    with pytest.raises(ValueError, match="local_search"):
        VerifierConfig(local_search_moves=0)
    with pytest.raises(ValueError, match="local_search"):
        VerifierConfig(local_search_solo=-1.0)


def test_near_miss():
    from qa_lirpa.verify.search import near_miss

    assert near_miss(0.05, -1.0) and near_miss(0.1, -1.0) and not near_miss(0.11, -1.0)
    assert near_miss(-0.5, -1.0)                      # a float violation the exact check refused
    assert not near_miss(0.0, 0.0) and not near_miss(0.0, 0.5) and not near_miss(0.0, -math.inf)
    assert near_miss(0.3, -1.0, share=0.5) and not near_miss(0.3, -1.0, share=0.2)
