"""The neighbourhood search after the root's local search (``attack.NeighbourhoodSearch``,
``lns_s``): its sub-boxes fix every input but the neighbourhood at the centre, the neighbourhood
grows while rounds answer and shrinks while they time out, it completes a counterexample the
centre misses, and the verifier with it still agrees with enumeration (a neighbourhood without a
violation never proves anything)."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from qa_lirpa.base.deadline import Deadline
from qa_lirpa.exact.cpsat import available as cpsat_available
from qa_lirpa.nn import integer_forward
from qa_lirpa.verify import InputSpec, VerifierConfig, Verifier
from qa_lirpa.verify import attack
from qa_lirpa.verify.result import VerifyStats
from qa_lirpa.verify.search import Search

from .test_bab import make_case
from .test_local_search import _problem_and_spec, against_enumeration
from .tiny_qnn import real_grid, tiny_mlp

needs_cpsat = pytest.mark.skipif(not cpsat_available(), reason="OR-Tools is not installed")


def test_rounds_fix_all_but_the_neighbourhood_and_adapt_its_size():
    model, spec = make_case(201)
    p, (lo, hi), ospec = _problem_and_spec(model, spec)
    lo, hi = lo[0], hi[0]
    free = int((hi > lo).sum())
    assert free >= 2
    centre = (lo + hi) // 2
    calls, answers = [], iter([(None, True), (None, True), (None, False), (None, False), (None, False)])

    def solve(a, b, seconds):
        calls.append((a.clone(), b.clone(), seconds))
        return next(answers)

    ns = attack.NeighbourhoodSearch(p, lo, hi, ospec, centre, solve, torch.Generator().manual_seed(0),
                                    size=1, min_size=1, round_s=0.5)
    sizes = []
    for _ in range(5):
        sizes.append(ns.size)
        assert ns.round(3.0) is None
    assert sizes == [1, 2, min(4, free), min(4, free) // 2, max(1, min(4, free) // 4)]
    for (a, b, seconds), n in zip(calls, sizes):
        assert seconds == 0.5                                  # at most round_s per round
        moved = (a != b)
        assert int(moved.sum()) == min(n, free)                # exactly the neighbourhood is free ...
        assert torch.equal(a[moved], lo[moved]) and torch.equal(b[moved], hi[moved])
        assert torch.equal(a[~moved], centre[~moved]) and torch.equal(b[~moved], centre[~moved])  # ... the rest fixed
    assert ns.rounds == 5


@needs_cpsat
def test_it_completes_a_counterexample_far_from_its_centre():
    """One linear layer, one output; the property asks for the grid's minimum output, which only
    the corner of the box reaches. From the opposite corner the search grows its neighbourhood
    until CP-SAT finds the minimum; the exact check accepts it."""
    centre = torch.tensor([100.0, 120.0, 90.0, 140.0, 80.0])
    model = tiny_mlp(5, [], 1, centre, seed=3)
    lower, upper = centre.numpy() - 3, centre.numpy() + 3
    grid = real_grid(lower, upper, 1.0)
    y = integer_forward(model, grid).reshape(-1).numpy()
    assert int((y == y.min()).sum()) == 1
    spec = InputSpec(lower, upper, [(np.array([[1.0]]), np.array([y.min()]))])
    cfg = VerifierConfig(device="cpu", lns_s=30.0, lns_size=1)
    v = Verifier(model, cfg, input_shape=(5,), device="cpu")
    p = v.problem((5,))
    s = Search(p, spec, cfg, VerifyStats(), Deadline.after(60), torch.Generator().manual_seed(0),
               lns=v.neighbourhood_solver(p, spec))
    assert s.bound_root() is None
    lo, hi, _, _ = s._root
    s._root_box = (lo, hi)
    far = p.codes(grid[int(y.argmax())].reshape(1, -1)).reshape(-1)       # the grid's worst point
    assert p.find_violation(far.reshape(1, -1), spec.lower, spec.upper, s.ospec) is None
    s._start_lns(far)
    assert s.local_search_pending
    while s._lns is not None:
        if s._lns_slice():
            break
    assert s.found is not None and s.stats.lns_rounds >= 2
    x, out = s.found
    assert np.all(x.reshape(-1) >= lower) and np.all(x.reshape(-1) <= upper)
    assert float(integer_forward(model, torch.as_tensor(x).reshape(1, -1)).reshape(-1)[0]) <= y.min()


@needs_cpsat
@pytest.mark.parametrize("block", range(2))
def test_verifier_with_the_neighbourhood_search_equals_enumeration(block):
    """The neighbourhood search as (almost) the only attack: a 1 ms local search leaves it a
    centre, no random points, no PGD, no CROWN, so that roots stay open; verdicts equal
    enumeration on sat and unsat cases alike, and it decides some sat cases at the root."""
    cfg = VerifierConfig(crown="never", alpha_root=False, random_points=0, attack_steps=0, local_search_s=0.001,
                         local_search_starts=1, lns_s=2.0, lns_size=1, restart_s=0.0, portfolio="none",
                         exact_fallback="none",
                         device="cpu")
    def used(stats) -> bool:
        assert not stats.lns_error
        return stats.lns_rounds > 0

    ran, sat = against_enumeration(cfg, range(400 + 24 * block, 424 + 24 * block), used)
    assert ran >= 4 and sat >= 2, (ran, sat)


def test_settings_are_validated_and_off_where_cpsat_cannot_encode():
    with pytest.raises(ValueError, match="lns"):
        VerifierConfig(lns_s=-1.0)
    with pytest.raises(ValueError, match="lns"):
        VerifierConfig(lns_size=0)
    assert VerifierConfig(method="paper").effective().lns_s == 0.0
    model, spec = make_case(201)
    v = Verifier(model, VerifierConfig(device="cpu", lns_s=0.0), input_shape=(spec.n_inputs,), device="cpu")
    assert v.neighbourhood_solver(v.problem((spec.n_inputs,)), spec) is None
    v = Verifier(model, VerifierConfig(device="cpu"), input_shape=(spec.n_inputs,), device="cpu")
    v._exact_reasons["cpsat"] = "not encodable (test)"
    assert v.neighbourhood_solver(v.problem((spec.n_inputs,)), spec) is None


def test_a_round_over_the_whole_box_ends_the_search():
    """Once a round freed every input and its procedure found no violation, no other
    neighbourhood is left: the search stops (and stays silent: it proves nothing)."""
    model, spec = make_case(201)
    cfg = VerifierConfig(device="cpu", lns_s=30.0, lns_size=1)
    v = Verifier(model, cfg, input_shape=(spec.n_inputs,), device="cpu")
    p = v.problem((spec.n_inputs,))
    rounds = []

    def solve(a, b, seconds):
        rounds.append(int((a != b).sum()))
        return None, True

    s = Search(p, spec, cfg, VerifyStats(), Deadline.after(60), torch.Generator().manual_seed(0), lns=solve)
    assert s.bound_root() is None
    lo, hi, _, _ = s._root
    s._root_box = (lo, hi)
    free = int((hi > lo).sum())
    s._start_lns((lo[0] + hi[0]) // 2)
    for _ in range(50):
        if s._lns is None:
            break
        assert not s._lns_slice()
    assert s._lns is None and s.found is None
    assert rounds[-1] == free and rounds.count(free) == 1, rounds
