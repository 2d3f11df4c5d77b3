"""Evaluation: certified <= PGD <= clean per sample; PGD counterexamples are real."""
from __future__ import annotations

import pytest
import torch

from qa_lirpa.models import build_model
from qa_lirpa.nn import argmax_smallest, integer_forward
from qa_lirpa.train.attack import margin_loss, pgd_attack
from qa_lirpa.train.datasets import make_synthetic
from qa_lirpa.train.evaluate import Evaluator


@pytest.fixture(scope="module")
def trained():
    """A small MLP trained (plain QAT, a few hundred steps) on synthetic data."""
    torch.manual_seed(0)
    ds = make_synthetic(400, shape=(1, 6, 6), n_classes=3, seed=2, noise=60.0)
    model = build_model("mlp", in_shape=(1, 6, 6), n_classes=3, hidden=[16], bits=6)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = ds.images.float(), ds.labels
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    test = make_synthetic(300, shape=(1, 6, 6), n_classes=3, seed=2, stream=1, noise=60.0)
    return model, test


def test_margin_loss():
    z = torch.tensor([[1.0, 3.0, 2.0], [5.0, 1.0, 0.0]])
    assert margin_loss(z, torch.tensor([1, 0])).tolist() == [-1.0, -4.0]


@pytest.mark.parametrize("eps", [0.0, 4.0, 20.0, 60.0])
def test_certified_implies_pgd_robust_implies_correct(trained, eps):
    model, test = trained
    ev = Evaluator(model, test.images[:1].float(), 3)
    res = ev.evaluate(model, test.images, test.labels, eps, batch_size=128, pgd_steps=8, pgd_restarts=2)
    assert res.n == 300
    assert (res.certified <= res.pgd_robust).all() and (res.pgd_robust <= res.correct).all()
    assert res.cert_acc <= res.pgd_acc <= res.clean_acc
    if eps == 0:
        assert torch.equal(res.certified, res.correct) and torch.equal(res.pgd_robust, res.correct)
    if eps == 20.0:    # the interesting regime: all three differ
        assert res.cert_acc < res.pgd_acc < res.clean_acc, res.as_dict()
    # clean accuracy is the exact integer semantics
    pred = argmax_smallest(integer_forward(model, test.images.double()))
    assert torch.equal(res.correct, pred == test.labels)


def test_pgd_counterexamples_are_real(trained):
    """Whatever PGD reports broken has a grid point in the box that is misclassified exactly."""
    model, test = trained
    x, y = test.images[:100].float(), test.labels[:100]
    eps = 20.0
    broken = pgd_attack(model, model, x, y, eps, steps=8, restarts=1, generator=torch.Generator().manual_seed(1))
    assert broken.any() and not broken.all()
    # re-run with a hook that records the evaluated candidates
    seen = []
    import qa_lirpa.train.attack as A

    orig = A.exact_predict

    def spy(m, xs):
        seen.append(xs.clone())
        return orig(m, xs)

    A.exact_predict = spy
    try:
        again = pgd_attack(model, model, x, y, eps, steps=8, restarts=1, generator=torch.Generator().manual_seed(1))
    finally:
        A.exact_predict = orig
    assert torch.equal(again, broken)
    cand = seen[0]
    assert torch.equal(cand, torch.round(cand)), "candidates are not on the integer grid"
    assert ((cand - x.double()).abs() <= eps).all() and cand.min() >= 0 and cand.max() <= 255
    pred = argmax_smallest(integer_forward(model, cand[broken]))
    assert (pred != y[broken]).all()


def test_evaluator_follows_weight_updates(trained):
    model, test = trained
    ev = Evaluator(model, test.images[:1].float(), 3)
    a = ev.evaluate(model, test.images, test.labels, 4.0, pgd=False)
    assert a.pgd_robust is None and a.pgd_acc is None
    with torch.no_grad():
        for p in model.parameters():
            p.neg_()
    try:
        b = ev.evaluate(model, test.images, test.labels, 4.0, pgd=False)
        assert b.clean_acc < a.clean_acc
    finally:
        with torch.no_grad():
            for p in model.parameters():
                p.neg_()
