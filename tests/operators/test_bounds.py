"""Soundness of the bound operators inside auto_LiRPA: sampled and exhaustive containment."""
from __future__ import annotations

import itertools

import pytest
import torch

import qa_lirpa
import qnn_factory as qf
from qa_lirpa.compat import import_auto_lirpa
from qa_lirpa.nn import integer_forward

auto_lirpa = import_auto_lirpa()
METHODS = ["IBP", "CROWN", "CROWN-IBP", "CROWN-Optimized"]
TOL = 1e-9


def compute(model, x, lo, hi, method, **opts):
    bm = qa_lirpa.bounded_module(model, x, optimize_bound_args={"iteration": 5}, **opts)
    ptb = auto_lirpa.PerturbationLpNorm(norm=float("inf"), x_L=lo, x_U=hi)
    lb, ub = bm.compute_bounds(x=(auto_lirpa.BoundedTensor(x, ptb),), method=method)
    return lb.detach().double(), ub.detach().double()


def box_samples(lo: torch.Tensor, hi: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` points of the box [lo, hi] (shape [1, ...]): corners first (all, or random ones),
    then points on the half-integer grid (rounding ties of a unit-scale input quantizer), then
    uniform points."""
    g = torch.Generator().manual_seed(seed)
    d = lo[0].numel()
    if d <= 12:
        signs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)), dtype=lo.dtype)
    else:
        signs = torch.randint(0, 2, (2048, d), generator=g).to(lo.dtype)
    flat_lo, flat_hi = lo.reshape(1, -1), hi.reshape(1, -1)
    corners = flat_lo + signs * (flat_hi - flat_lo)
    n_half = (n - len(corners)) // 2
    t = torch.rand(n_half, d, generator=g, dtype=lo.dtype)
    ties = torch.clamp(torch.floor(flat_lo + t * (flat_hi - flat_lo)) + 0.5, flat_lo, flat_hi)
    u = torch.rand(n - len(corners) - n_half, d, generator=g, dtype=lo.dtype)
    uniform = flat_lo + u * (flat_hi - flat_lo)
    return torch.cat([corners, ties, uniform]).reshape(-1, *lo.shape[1:])


def assert_contains(lb, ub, y):
    ymin, ymax = y.min(0, keepdim=True).values, y.max(0, keepdim=True).values
    assert (lb <= ymin + TOL).all(), f"lower bound above a reachable value: {(lb - ymin).max()}"
    assert (ub >= ymax - TOL).all(), f"upper bound below a reachable value: {(ymax - ub).max()}"


@pytest.mark.parametrize("rounding", ["half_up", "half_even"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_mlp_sampled_containment(rounding, per_channel):
    model = qf.mlp([5, 16, 16, 3], rounding=rounding, seed=3, per_channel=per_channel)
    x = torch.tensor([[40.0, 100.3, 180.0, 220.5, 7.0]], dtype=torch.float64)
    lo, hi = x - 4.5, x + 4.5
    pts = box_samples(lo, hi, 10_000, seed=1)
    y = integer_forward(model, pts)
    for method in METHODS:
        lb, ub = compute(model, x, lo, hi, method)
        assert_contains(lb, ub, y)


@pytest.mark.parametrize("rounding", ["half_up", "half_even"])
def test_cnn_sampled_containment(rounding):
    model = qf.cnn(rounding=rounding, seed=5)
    torch.manual_seed(0)
    x = torch.randint(10, 240, (1, 1, 6, 6)).double()
    lo, hi = x - 2.5, x + 2.5
    pts = box_samples(lo, hi, 10_000, seed=2)
    y = integer_forward(model, pts)
    for conv_mode in ["patches", "matrix"]:
        for method in METHODS:
            lb, ub = compute(model, x, lo, hi, method, conv_mode=conv_mode)
            assert_contains(lb, ub, y)


@pytest.mark.parametrize("rounding", ["half_up", "half_even"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exhaustive_containment_tiny_qnn(rounding, seed):
    """Every integer point of the input box: the exact output range lies inside every bound,
    and IBP (exact image layer by layer) is never below it."""
    model = qf.mlp([2, 6, 6, 2], rounding=rounding, seed=seed, out_act=seed == 2)
    x = torch.tensor([[60.0, 130.0]], dtype=torch.float64)
    lo, hi = x - 15, x + 15
    grid = torch.tensor(list(itertools.product(range(45, 76), range(115, 146))), dtype=torch.float64)
    y = integer_forward(model, grid)
    for method in METHODS:
        lb, ub = compute(model, x, lo, hi, method)
        assert_contains(lb, ub, y)


def test_crown_tighter_than_ibp_on_deeper_net():
    """Through several quantized layers CROWN's hull relaxation beats IBP on average."""
    model = qf.mlp([4, 24, 24, 24, 3], seed=7)
    body = torch.nn.Sequential(*list(model)[1:])    # the input grid is handled by the caller
    widths = {"IBP": 0.0, "CROWN": 0.0}
    for s in range(4):
        torch.manual_seed(s)
        x = torch.randint(20, 230, (1, 4)).double()
        for m in widths:
            lb, ub = compute(body, x, x - 6, x + 6, m)
            widths[m] += (ub - lb).mean().item()
    assert widths["CROWN"] < widths["IBP"]


def test_ibp_gradients_reach_every_parameter():
    model = qf.mlp([5, 8, 8, 3], seed=4).float()
    for p in model.parameters():
        p.grad = None
    x = torch.tensor([[40.0, 100.0, 180.0, 220.0, 7.0]])
    bm = qa_lirpa.bounded_module(model, x, quant_slack=0.0)
    ptb = auto_lirpa.PerturbationLpNorm(norm=float("inf"), eps=2.0)
    c = torch.tensor([[[1.0, -1.0, 0.0], [1.0, 0.0, -1.0]]])
    lb, _ = bm.compute_bounds(x=(auto_lirpa.BoundedTensor(x, ptb),), method="IBP", C=c)
    (-lb.sum()).backward()
    named = dict(bm.named_parameters())
    assert len(named) == len(list(model.parameters()))
    for name, p in named.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_operators_are_registered_per_model_only():
    from auto_LiRPA.bound_op_map import bound_op_map

    qa_lirpa.bounded_module(qf.mlp([2, 3, 2]), torch.zeros(1, 2, dtype=torch.float64))
    assert not any(k.startswith("qa_lirpa::") for k in bound_op_map)
    assert "onnx::Round" not in bound_op_map


class OnnxOps(torch.nn.Module):
    """Standard ops that quantized models contain: QuantizeLinear/DequantizeLinear (from
    torch.fake_quantize_per_tensor_affine), Round (aten at opset 12), Clip, Floor."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.l1, self.l2 = torch.nn.Linear(4, 6), torch.nn.Linear(6, 3)

    def forward(self, x):
        h = self.l1(torch.fake_quantize_per_tensor_affine(x, 0.05, 3, 0, 255))
        h = torch.clamp(torch.round(h * 4) / 4, 0.0, 2.0)
        return self.l2(torch.floor(h * 8) / 8)


def test_standard_onnx_quantization_ops():
    model = OnnxOps()
    x = torch.rand(2, 4)
    bm = qa_lirpa.bounded_module(model, x)
    kinds = {type(n).__name__ for n in bm._modules.values()}
    assert {"BoundQuantizeLinear", "BoundDequantizeLinear", "BoundRound", "BoundClip", "BoundFloor"} <= kinds
    lo, hi = x - 0.2, x + 0.2
    pts = box_samples(lo[:1], hi[:1], 5000, seed=3).reshape(-1, 4)
    pts2 = box_samples(lo[1:], hi[1:], 5000, seed=4).reshape(-1, 4)
    with torch.no_grad():
        y = torch.stack([model(pts), model(pts2)], 1).double()
    ptb = auto_lirpa.PerturbationLpNorm(norm=float("inf"), x_L=lo, x_U=hi)
    for method in METHODS:
        lb, ub = bm.compute_bounds(x=(auto_lirpa.BoundedTensor(x, ptb),), method=method)
        assert (lb.double() <= y.min(0).values + 1e-5).all(), method
        assert (ub.double() >= y.max(0).values - 1e-5).all(), method


@pytest.mark.parametrize("rounding", ["half_up", "half_even", "down"])
@pytest.mark.parametrize("seed", [0, 1])
def test_alpha_crown_of_the_verifier_is_sound_and_tighter(rounding, seed):
    """The verifier's alpha-CROWN (CrownBounder: optimisable slopes of every rounding step, for the
    output rows only): every integer point of the box lies above its lower bounds, which are never
    below plain CROWN's and beat it somewhere (the slopes do move)."""
    from qa_lirpa.verify.grid import GridProblem

    model = qf.mlp([2, 10, 10, 10, 3], rounding=rounding, seed=seed)
    prob = GridProblem(model, (2,), torch.device("cpu"), alpha_iterations=30)
    assert prob.crown.alpha_ok
    C = torch.tensor([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0], [-1.0, 0.0, 1.0]], dtype=torch.float64).unsqueeze(0)
    gained = 0.0
    for cx, cy in [(60, 130), (100, 40), (200, 180), (30, 220)]:
        grid = torch.tensor(list(itertools.product(range(cx - 12, cx + 13), range(cy - 12, cy + 13))),
                            dtype=torch.float64)
        y = integer_forward(model, grid)
        codes = prob.codes(grid)
        lo, hi = codes.min(0, keepdim=True).values, codes.max(0, keepdim=True).values
        plain = prob.crown_lower(lo, hi, C)
        key = ("test", cx, cy)
        opt = prob.crown_lower(lo, hi, C, alpha=True, key=key)
        true_min = (y @ C[0].T).min(0).values
        assert (opt[0] <= true_min + TOL).all(), (opt, true_min)
        assert (opt >= plain - 1e-9).all()
        gained = max(gained, float((opt - plain).max()))
        # the kept slopes on the four quarter boxes (and on rows in another order): still below
        # every reachable value of each quarter
        mid = (lo + hi) // 2
        for qlo, qhi in [(lo, mid), (mid, hi), (torch.stack([lo[:, 0], mid[:, 1]], 1), torch.stack([mid[:, 0], hi[:, 1]], 1))]:
            inside = ((codes >= qlo) & (codes <= qhi)).all(1)
            q_min = (y[inside] @ C[0].T).min(0).values
            reused = prob.crown_lower(qlo, qhi, C.flip(1), key=key)
            assert (reused[0] <= q_min.flip(0) + TOL).all(), (reused, q_min)
        assert key in prob.crown._kept            # the reuse path ran (a failure clears the slopes)
    assert gained > 1e-4, gained
