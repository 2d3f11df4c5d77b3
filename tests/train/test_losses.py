"""The three certified training losses: formulas, and each one decreases on a small problem."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from qa_lirpa.models import build_model
from qa_lirpa.train.bounds import MarginBounds
from qa_lirpa.train.datasets import make_synthetic
from qa_lirpa.train.losses import crown_ibp_loss, gowal_loss, plain_loss, qaibp_loss, worst_case_ce


def test_worst_case_ce_is_ce_of_worst_logits():
    lb = torch.tensor([[1.0, -2.0, 0.5]])
    worst = torch.tensor([[0.0, -1.0, 2.0, -0.5]])          # z_y = 0, z_k = -lb_k
    assert worst_case_ce(lb).item() == pytest.approx(F.cross_entropy(worst, torch.tensor([0])).item())


def test_loss_formulas():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    y = torch.tensor([0, 1])
    lb = torch.tensor([[0.5, -0.3], [0.1, 0.4]])
    ce = F.cross_entropy(logits, y).item()
    g, parts = gowal_loss(logits, y, lb, kappa=0.25)
    assert g.item() == pytest.approx(0.25 * ce + 0.75 * worst_case_ce(lb).item())
    assert parts["ce"] == pytest.approx(ce)
    widths = [torch.tensor(2.0), torch.tensor(3.0)]
    q, parts = qaibp_loss(logits, y, lb, widths, lambda_rob=0.5, lambda_reg=0.01, margin=0.2)
    hinge = (0.0 + 0.5 + 0.1 + 0.0) / 4
    assert parts["robust"] == pytest.approx(hinge) and parts["width"] == pytest.approx(5.0)
    assert q.item() == pytest.approx(ce + 0.5 * hinge + 0.01 * 5.0)
    c, _ = crown_ibp_loss(logits, y, lb + 1, lb, kappa=0.5, beta=0.25)
    assert c.item() == pytest.approx(gowal_loss(logits, y, lb + 0.25, 0.5)[0].item())
    c0, _ = crown_ibp_loss(logits, y, None, lb, kappa=0.5, beta=0.0)
    assert c0.item() == pytest.approx(gowal_loss(logits, y, lb, 0.5)[0].item())
    assert plain_loss(logits, y)[0].item() == pytest.approx(ce)


def _run(kind: str, steps: int = 25) -> list[float]:
    """Full-batch training on a small synthetic problem at a fixed eps; the loss per step."""
    torch.manual_seed(0)
    ds = make_synthetic(128, shape=(1, 6, 6), n_classes=3, seed=1)
    x, y = ds.images.float(), ds.labels
    model = build_model("mlp", in_shape=(1, 6, 6), n_classes=3, hidden=[16])
    mb = MarginBounds(model, x, 3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    eps, losses = 8.0, []
    for _ in range(steps):
        logits = model(x)
        if kind == "gowal":
            loss, _ = gowal_loss(logits, y, mb.lower(x, y, eps), kappa=0.5)
        elif kind == "qaibp":
            lb = mb.lower(x, y, eps)
            loss, _ = qaibp_loss(logits, y, lb, mb.hidden_widths(), 0.5, 0.001, 0.2)
        else:
            clb, ilb = mb.lower(x, y, eps, "CROWN-IBP")
            loss, _ = crown_ibp_loss(logits, y, clb, ilb, kappa=0.5, beta=0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("kind", ["gowal", "qaibp", "crown_ibp"])
def test_each_loss_decreases(kind):
    losses = _run(kind)
    assert all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.7 * first, (kind, losses)
