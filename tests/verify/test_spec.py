"""Output specifications: sound row bounds, exact point checks (close calls in rationals), the
exact tie semantics of robustness specs."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from qa_lirpa.nn import IntTensor, argmax_smallest
from qa_lirpa.verify.robustness import robustness_spec, strict_rhs
from qa_lirpa.verify.spec import OutputSpec

from .tiny_qnn import violates


def test_row_margins_are_sound_on_sampled_outputs():
    rng = np.random.default_rng(0)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        m = 4
        dis = []
        for _ in range(3):
            k = int(rng.integers(1, 3))
            dis.append((rng.normal(size=(k, m)), rng.normal(size=k)))
        spec = OutputSpec.from_disjuncts(dis, m)
        ylo = torch.randn(5, m, generator=g, dtype=torch.float64) * 3
        yhi = ylo + torch.rand(5, m, generator=g, dtype=torch.float64) * 2
        margin, _ = spec.row_margins(ylo, yhi)
        y = ylo.unsqueeze(1) + torch.rand(5, 200, m, generator=g, dtype=torch.float64) * (yhi - ylo).unsqueeze(1)
        vals = y @ spec.mat.T - spec.rhs                   # [5, 200, R]
        refuted = margin > 0
        assert (vals.min(dim=1).values[refuted] > 0).all()
        assert (margin <= vals.min(dim=1).values + 1e-9).all()


def test_disjunct_refutation_and_score():
    mat1, mat2 = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, -1.0]])
    spec = OutputSpec.from_disjuncts([(mat1, np.zeros(2)), (mat2, np.zeros(1)), (np.zeros((0, 2)), np.zeros(0))], 2)
    rows = torch.tensor([[True, False, True], [False, False, False]])
    d = spec.disjuncts_refuted(rows)
    assert d.tolist() == [[True, True, False], [False, False, False]]   # no rows: never refuted
    margin = torch.tensor([[1.0, -2.0, 3.0], [-1.0, -2.0, -0.5]], dtype=torch.float64)
    alive = torch.tensor([[True, True, False], [True, True, False]])
    assert spec.box_score(margin, alive).tolist() == [1.0, -1.0]
    assert spec.box_score(margin, torch.zeros_like(alive)).tolist() == [float("inf")] * 2


def test_point_checks_are_exact_at_close_calls():
    """The float 0.1 times 10 exceeds 1 in rationals but rounds to 1.0 in float64: the row
    ``0.1 y_0 <= 1`` fails exactly at ``y_0 = 10`` although float64 says it holds."""
    spec = OutputSpec.from_disjuncts([(np.array([[0.1, 0.0]]), np.array([1.0]))], 2)
    y = torch.tensor([[10.0, 0.0]], dtype=torch.float64)
    exact = lambda n: [Fraction(10), Fraction(0)]  # noqa: E731
    assert (Fraction(0.1) * 10 > 1) and (0.1 * 10.0 <= 1.0)
    assert spec.violated_points(y, exact).tolist() == [False]
    with pytest.raises(ValueError):
        spec.violated_points(y, None)
    tie = OutputSpec.from_disjuncts([(np.array([[1.0, -1.0]]), np.array([0.0]))], 2)
    assert tie.violated_points(torch.tensor([[2.5, 2.5]], dtype=torch.float64), lambda n: [Fraction(5, 2)] * 2).tolist() == [True]


def test_rowless_disjunct_is_violated_everywhere():
    spec = OutputSpec.from_disjuncts([(np.zeros((0, 3)), np.zeros(0))], 3)
    assert spec.violated_points(torch.zeros(4, 3, dtype=torch.float64)).tolist() == [True] * 4


def test_strict_rhs_is_in_the_open_interval():
    for g in [Fraction(1, 64), Fraction(1, 3), Fraction(3, 2 ** 60), Fraction(1, 10)]:
        r = strict_rhs(g)
        assert -g <= Fraction(r) < 0


@pytest.mark.parametrize("scales", [[Fraction(1, 16)], [Fraction(1, 16), Fraction(1, 64), Fraction(1, 32)]])
def test_robustness_spec_matches_argmax_with_ties(scales):
    """Violated iff the exact argmax (ties to the smallest index) differs from the label, on many
    outputs with ties, per-tensor and per-channel scales."""
    m = 3
    rng = np.random.default_rng(1)
    full = scales * m if len(scales) == 1 else scales
    for label in range(m):
        out = IntTensor(torch.zeros(1, m, dtype=torch.int64), list(scales), [0], 1)
        spec = robustness_spec(out, label, np.zeros(2), np.ones(2))
        ospec = OutputSpec.from_disjuncts(spec.disjuncts, m)
        codes = rng.integers(-4, 5, (400, m)) * np.array([int(full[0] / s) for s in full])
        exact = [[int(q) * s for q, s in zip(row, full)] for row in codes]
        y = torch.tensor([[float(v) for v in row] for row in exact], dtype=torch.float64)
        got = ospec.violated_points(y, lambda n: exact[n])
        want = argmax_smallest(y) != label
        assert torch.equal(got, want)
        assert all(bool(got[n]) == violates(exact[n], spec.disjuncts) for n in range(0, 400, 17))
