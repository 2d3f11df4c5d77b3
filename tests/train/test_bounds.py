"""Margin bounds for training: the spec matrix, auto_LiRPA IBP vs the hand-written torch IBP,
soundness against the exact semantics, batch sizes, gradients."""
from __future__ import annotations

import pytest
import torch

from qa_lirpa.models import build_model
from qa_lirpa.nn import integer_forward
from qa_lirpa.train.bounds import MarginBounds, input_box, spec_matrix, torch_ibp_margins


def _model(arch: str, seed: int, **kw):
    torch.manual_seed(seed)
    shape = (1, 8, 8) if arch == "mlp" else (1, 14, 14)
    return build_model(arch, in_shape=shape, n_classes=5, hidden=[24, 16], **kw), shape


def _data(shape, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *shape), generator=g).double(), torch.randint(0, 5, (n,), generator=g)


def test_spec_matrix_rows():
    y = torch.tensor([0, 3, 4])
    c = spec_matrix(y, 5)
    assert c.shape == (3, 4, 5)
    z = torch.randn(3, 5)
    margins = torch.einsum("bkn,bn->bk", c, z)
    for i, yi in enumerate(y.tolist()):
        others = [k for k in range(5) if k != yi]
        assert torch.allclose(margins[i], z[i, yi] - z[i, others])


@pytest.mark.parametrize("arch,kw", [("mlp", {}), ("small_conv", {}), ("mlp", {"out_bits": 8}),
                                     ("mlp", {"bits": 4}), ("small_conv", {"rounding": "half_even"})])
def test_torch_ibp_equals_auto_lirpa_ibp(arch, kw):
    model, shape = _model(arch, 1, **kw)
    model = model.double()
    x, y = _data(shape)
    mb = MarginBounds(model, x, 5, quant_slack=0.0)
    for eps in (0.0, 1.0, 3.6):
        a = mb.lower(x, y, eps, "IBP")
        b = torch_ibp_margins(model, x, y, eps, 5)
        assert torch.allclose(a, b, rtol=0, atol=1e-9), (eps, (a - b).abs().max())


@pytest.mark.parametrize("method", ["IBP", "CROWN-IBP"])
def test_margin_bounds_are_sound_on_grid_samples(method):
    model, shape = _model("small_conv", 2)
    model = model.double()
    x, y = _data(shape, n=3, seed=4)
    eps = 2.0
    mb = MarginBounds(model, x, 5, quant_slack=1e-6)
    res = mb.lower(x, y, eps, method)
    lb = res[0] if method == "CROWN-IBP" else res
    lo, hi = input_box(x, eps)
    g = torch.Generator().manual_seed(0)
    for i in range(x.shape[0]):
        pts = lo[i] + torch.randint(0, 2, (400, *shape), generator=g) * (hi[i] - lo[i])   # box corners
        pts = torch.cat([pts, torch.round(lo[i] + torch.rand(400, *shape, generator=g, dtype=torch.float64)
                                          * (hi[i] - lo[i]))])
        out = integer_forward(model, pts)
        margins = out[:, y[i]:y[i] + 1] - out[:, [k for k in range(5) if k != y[i]]]
        assert (margins.min(0).values >= lb[i] - 1e-9).all()
    if method == "CROWN-IBP":
        assert res[1].shape == lb.shape


def test_one_bounded_module_for_every_batch_size():
    model, shape = _model("mlp", 3)
    x, y = _data(shape, n=7)
    x, model = x.float(), model.float()
    mb = MarginBounds(model, x, 5)
    full = mb.lower(x, y, 2.0)
    parts = torch.cat([mb.lower(x[:4], y[:4], 2.0), mb.lower(x[4:], y[4:], 2.0)])
    assert full.shape == (7, 4) and torch.equal(full, parts)


def test_gradients_reach_all_parameters_and_widths_are_recorded():
    model, shape = _model("small_conv", 5)
    x, y = _data(shape)
    x = x.float()
    mb = MarginBounds(model, x, 5)
    lb = mb.lower(x, y, 3.0)
    widths = mb.hidden_widths()
    assert len(widths) == 3 and all(w.item() >= 0 for w in widths)     # 2 convs + 1 hidden FC
    (-lb.mean() + sum(widths)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_weight_updates_are_seen_by_the_bounded_module():
    model, shape = _model("mlp", 6)
    x, y = _data(shape)
    x = x.float()
    mb = MarginBounds(model, x, 5)
    before = mb.lower(x, y, 1.0).clone()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    assert not torch.equal(before, mb.lower(x, y, 1.0))
    assert torch.allclose(mb.lower(x, y, 1.0), torch_ibp_margins(model, x, y, 1.0, 5), atol=1e-4)
