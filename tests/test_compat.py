"""Tests for qa_lirpa.compat: one test (at least) per auto_LiRPA 0.3 runtime fix.

Each fix has a test that fails if the fix is missing or broken. Fixes 5 and 6 also have a
"still needed" test that runs the unpatched auto_LiRPA method and expects the old failure,
so a torch or auto_LiRPA release that no longer needs them is noticed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy
import pytest
import torch
import torch.nn as nn

from qa_lirpa import compat

REPO_ROOT = Path(__file__).resolve().parents[1]
INF = float("inf")


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    # The models here are tiny: one intra-op thread is faster, and far faster on a busy box.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def auto_lirpa():
    return compat.import_auto_lirpa()


def _mlp(seed: int, sizes=(3, 8, 2)) -> nn.Sequential:
    torch.manual_seed(seed)
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _bounded_input(auto_lirpa, x: torch.Tensor, eps: float):
    ptb = auto_lirpa.PerturbationLpNorm(norm=INF, eps=eps)
    return auto_lirpa.BoundedTensor(x, ptb)


def _assert_contains_samples(model, x, eps, lb, ub, n=256, tol=1e-5):
    with torch.no_grad():
        for _ in range(n // 32):
            noise = (torch.rand((32,) + tuple(x.shape)) * 2 - 1) * eps
            y = torch.stack([model(x + d) for d in noise])
            assert (y >= lb - tol).all(), "a sampled output is below the lower bound"
            assert (y <= ub + tol).all(), "a sampled output is above the upper bound"


# -- general ------------------------------------------------------------------------------


def test_import_is_idempotent_and_fixes_are_not_reapplied(auto_lirpa):
    assert compat.import_auto_lirpa() is auto_lirpa
    assert set(compat.APPLIED_FIXES) <= set(compat.FIX_NAMES)
    # A second attempt at any fix finds it already in place and does nothing.
    for fix in (
        compat._fix_numpy_arraysetops,
        compat._fix_set_opset_version,
        compat._fix_node_getitem,
        compat._fix_named_members,
        compat._fix_avgpool_contiguous,
        compat._fix_relu_alpha_grad,
    ):
        assert fix() is None, fix.__name__
    from auto_LiRPA.operators.pooling import BoundAveragePool

    wrapped = BoundAveragePool.bound_backward
    if "avgpool_contiguous" in compat.APPLIED_FIXES:
        # Wrapped exactly once.
        inner = getattr(wrapped, compat._WRAPPED_ATTR)
        assert not hasattr(inner, compat._WRAPPED_ATTR)


# -- fix 1: numpy.lib.arraysetops ---------------------------------------------------------


def test_fix1_numpy_arraysetops(auto_lirpa):
    import auto_LiRPA.operators.base as base
    import numpy.lib.arraysetops as arraysetops

    got = arraysetops.isin(numpy.array([1, 2, 3, 4]), [2, 4])
    assert got.tolist() == [False, True, False, True]
    assert base.isin(numpy.array([5, 6]), [6]).tolist() == [False, True]
    if "numpy_arraysetops" in compat.APPLIED_FIXES:
        assert arraysetops.isin is numpy.isin


# -- fix 2: _set_opset_version ------------------------------------------------------------


def test_fix2_set_opset_version_and_bounded_module_ibp(auto_lirpa):
    import torch.onnx.symbolic_helper as helper

    assert callable(helper._set_opset_version)
    if "set_opset_version" in compat.APPLIED_FIXES:
        onnx_globals = compat._find_onnx_globals(helper)
        assert onnx_globals is not None, "the exporter's GLOBALS object was not found"
        # The very object the graph optimizer auto_LiRPA calls reads.
        assert onnx_globals is getattr(torch.onnx.utils, "GLOBALS", onnx_globals)
        previous = onnx_globals.export_onnx_opset_version
        try:
            helper._set_opset_version(13)
            assert onnx_globals.export_onnx_opset_version == 13
        finally:
            helper._set_opset_version(previous)

    model = _mlp(0)
    x = torch.rand(4, 3)
    bm = auto_lirpa.BoundedModule(model, x)
    assert torch.allclose(bm(x), model(x))
    eps = 0.1
    lb, ub = bm.compute_bounds(x=(_bounded_input(auto_lirpa, x, eps),), method="IBP")
    assert lb.shape == ub.shape == (4, 2)
    assert (lb <= ub).all()
    _assert_contains_samples(model, x, eps, lb, ub)


# -- fix 3: torch._C.Node.__getitem__ -----------------------------------------------------


def test_fix3_node_getitem_and_graph_parsing(auto_lirpa):
    model = _mlp(1)
    x = torch.rand(2, 3)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace is deprecated
        graph = torch.jit.trace(model, x).inlined_graph
    get_attrs = [n for n in graph.nodes() if n.kind() == "prim::GetAttr"]
    assert get_attrs, "expected prim::GetAttr nodes in the traced graph"
    names = set()
    for node in get_attrs:
        assert node.kindOf("name") == "s"
        names.add(node["name"])
    assert {"weight", "bias"} <= names

    # The ONNX-converted graph auto_LiRPA parses: float and int attributes.
    from auto_LiRPA.parse_graph import parse_module

    nodes_op, _, _, _ = parse_module(model, (x,))
    gemms = [n for n in nodes_op if n.op == "onnx::Gemm"]
    assert len(gemms) == 2
    for n in gemms:
        assert n.attr == {"alpha": 1.0, "beta": 1.0, "transB": 1}
    assert [n.op for n in nodes_op] == ["onnx::Gemm", "onnx::Relu", "onnx::Gemm"]


# -- fix 4: _named_members(remove_duplicate=...) ------------------------------------------


def test_fix4_parameters_and_optimizer(auto_lirpa):
    model = _mlp(2)
    x = torch.rand(4, 3)
    bm = auto_lirpa.BoundedModule(model, x)

    params = list(bm.parameters())
    assert len(params) == len(list(model.parameters())) == 4
    names = [name for name, _ in bm.named_parameters()]
    assert names == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert list(bm.buffers()) == []

    optimizer = torch.optim.SGD(bm.parameters(), lr=0.1)
    before = [p.detach().clone() for p in bm.parameters()]
    lb, ub = bm.compute_bounds(x=(_bounded_input(auto_lirpa, x, 0.1),), method="IBP")
    (ub - lb).sum().backward()
    optimizer.step()
    after = list(bm.parameters())
    assert any(not torch.equal(b, a.detach()) for b, a in zip(before, after))


# -- fix 5: contiguous A into BoundAveragePool.bound_backward -----------------------------


def _pool_cnn() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 8),
        nn.ReLU(),
        nn.Linear(8, 3),
    )


@pytest.mark.parametrize("conv_mode", ["patches", "matrix"])
def test_fix5_crown_through_avgpool(auto_lirpa, conv_mode):
    model = _pool_cnn()
    x = torch.rand(2, 1, 8, 8)  # batch > 1 is what made the A matrices non-contiguous
    eps = 0.05
    bm = auto_lirpa.BoundedModule(model, x, bound_opts={"conv_mode": conv_mode})
    lb, ub = bm.compute_bounds(x=(_bounded_input(auto_lirpa, x, eps),), method="backward")
    assert lb.shape == ub.shape == (2, 3)
    assert torch.isfinite(lb).all() and torch.isfinite(ub).all()
    _assert_contains_samples(model, x, eps, lb, ub)


def test_fix5_still_needed(auto_lirpa, monkeypatch):
    if "avgpool_contiguous" not in compat.APPLIED_FIXES:
        pytest.skip("fix 5 not applied")
    from auto_LiRPA.operators.pooling import BoundAveragePool

    monkeypatch.setattr(BoundAveragePool, "bound_backward", compat.original("avgpool_contiguous"))
    model = _pool_cnn()
    x = torch.rand(2, 1, 8, 8)
    bm = auto_lirpa.BoundedModule(model, x)
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        bm.compute_bounds(x=(_bounded_input(auto_lirpa, x, 0.05),), method="backward")


# -- fix 6: alpha-CROWN's ReLU slopes keep their gradient ---------------------------------


def _crown_and_alpha_crown(auto_lirpa):
    model = _mlp(4, sizes=(2, 20, 20, 2))
    torch.manual_seed(4)
    x = torch.rand(1, 2)
    eps = 0.3
    bm = auto_lirpa.BoundedModule(model, x)
    bm.set_bound_opts({"optimize_bound_args": {"iteration": 20, "lr_alpha": 0.1}})
    bx = _bounded_input(auto_lirpa, x, eps)
    lb_crown, ub_crown = bm.compute_bounds(x=(bx,), method="backward")
    lb_opt, ub_opt = bm.compute_bounds(x=(bx,), method="CROWN-Optimized")
    unstable = [int(((r.inputs[0].lower < 0) & (r.inputs[0].upper > 0)).sum()) for r in bm.relus]
    return model, x, eps, lb_crown.detach(), ub_crown.detach(), lb_opt.detach(), ub_opt.detach(), unstable


def test_fix6_alpha_crown_is_tighter_than_crown(auto_lirpa):
    model, x, eps, lb_crown, ub_crown, lb_opt, ub_opt, unstable = _crown_and_alpha_crown(auto_lirpa)
    assert all(u > 0 for u in unstable), unstable
    # Never looser, and strictly tighter on every output (margins here are ~0.02).
    assert (lb_opt >= lb_crown - 1e-6).all()
    assert (ub_opt <= ub_crown + 1e-6).all()
    assert ((lb_opt - lb_crown) > 1e-3).all(), (lb_opt - lb_crown)
    assert ((ub_crown - ub_opt) > 1e-3).all(), (ub_crown - ub_opt)
    _assert_contains_samples(model, x, eps, lb_opt, ub_opt)


def test_fix6_projection_gradient_and_values(auto_lirpa):
    alpha = torch.tensor([-0.5, 0.0, 0.25, 1.0, 1.5], requires_grad=True)
    projected = compat._project_unit_interval(alpha)
    assert projected.tolist() == [0.0, 0.0, 0.25, 1.0, 1.0]
    (grad,) = torch.autograd.grad(projected.sum(), alpha)
    assert grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]

    # Same values as auto_LiRPA's own method (when it was replaced).
    from auto_LiRPA.operators.activation import BoundRelu

    reference = compat._ORIGINALS.get("relu_alpha_grad", BoundRelu._relu_mask_alpha)
    torch.manual_seed(5)
    lower = torch.randn(3, 6)
    upper = lower + torch.rand(3, 6) * 2
    lower[0, 0], upper[0, 0] = -1.0, 0.0  # upper exactly 0: inactive
    lower[0, 1] = 0.0  # lower exactly 0: active
    lb_alpha = torch.rand(2, 3, 6) * 1.4 - 0.2
    ub_alpha = torch.rand(2, 3, 6) * 1.4 - 0.2
    got = BoundRelu._relu_mask_alpha(lower, upper, lb_alpha, ub_alpha)
    want = reference(lower, upper, lb_alpha, ub_alpha)
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    got_none = BoundRelu._relu_mask_alpha(lower, upper, None, ub_alpha)
    assert got_none[0] is None and torch.equal(got_none[1], want[1])


def test_fix6_still_needed(auto_lirpa, monkeypatch):
    if "relu_alpha_grad" not in compat.APPLIED_FIXES:
        pytest.skip("fix 6 not applied: clamp keeps gradient 1 at its bounds in this torch")
    from auto_LiRPA.operators.activation import BoundRelu

    monkeypatch.setattr(BoundRelu, "_relu_mask_alpha", staticmethod(compat.original("relu_alpha_grad")))
    _, _, _, lb_crown, ub_crown, lb_opt, ub_opt, _ = _crown_and_alpha_crown(auto_lirpa)
    # Unpatched, alpha-CROWN's slopes never move: it returns plain CROWN bounds.
    assert torch.allclose(lb_opt, lb_crown, atol=1e-6)
    assert torch.allclose(ub_opt, ub_crown, atol=1e-6)


# -- quiet, side-effect-contained import --------------------------------------------------


def test_import_is_quiet_and_keeps_warning_filters():
    code = textwrap.dedent(
        """
        import logging, sys, warnings
        # torch and numpy add warning filters of their own when first imported; that is
        # not what this test is about, so they are imported before the snapshot.
        import numpy, torch
        warnings.filterwarnings("error", message="qa-lirpa-marker")
        warnings.filterwarnings("ignore", category=FutureWarning, module="somewhere")
        before = list(warnings.filters)
        root_handlers = list(logging.getLogger().handlers)
        import qa_lirpa.compat as compat
        assert "auto_LiRPA" not in sys.modules, "importing qa_lirpa.compat imported auto_LiRPA"
        module = compat.import_auto_lirpa()
        assert module is sys.modules["auto_LiRPA"]
        assert compat.import_auto_lirpa() is module
        after = list(warnings.filters)
        if before != after:
            raise SystemExit("warning filters changed: %r -> %r" % (before, after))
        if list(logging.getLogger().handlers) != root_handlers:
            raise SystemExit("root logging handlers changed")
        """
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.pop("PYTHONWARNINGS", None)
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert result.stdout == ""
    assert result.stderr == ""


def _conv_after_scalar_mul():
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 3, 3)
            self.fc = torch.nn.Linear(3 * 4 * 4, 2)

        def forward(self, x):
            h = torch.relu(self.conv(x * 0.25))
            return self.fc(torch.relu(h).flatten(1))

    return Net()


def test_fix7_crown_patches_through_scalar_mul(auto_lirpa):
    net = _conv_after_scalar_mul()
    x = torch.rand(2, 1, 6, 6)
    ptb = auto_lirpa.PerturbationLpNorm(norm=float("inf"), eps=0.1)
    bounds = {}
    for mode in ("patches", "matrix"):
        bm = auto_lirpa.BoundedModule(net, x, bound_opts={"conv_mode": mode})
        lb, ub = bm.compute_bounds(x=(auto_lirpa.BoundedTensor(x, ptb),), method="backward")
        bounds[mode] = (lb.detach(), ub.detach())
    assert torch.allclose(bounds["patches"][0], bounds["matrix"][0], atol=1e-5)
    assert torch.allclose(bounds["patches"][1], bounds["matrix"][1], atol=1e-5)
    pts = x + (torch.rand(500, *x.shape) * 2 - 1) * 0.1
    with torch.no_grad():
        y = net(pts.reshape(-1, 1, 6, 6)).reshape(500, 2, 2)
    assert (bounds["patches"][0] <= y.min(0).values + 1e-5).all()
    assert (bounds["patches"][1] >= y.max(0).values - 1e-5).all()


def test_fix7_still_needed(auto_lirpa, monkeypatch):
    from auto_LiRPA.operators.bivariate import BoundMul

    monkeypatch.setattr(BoundMul, "_multiply_by_const", staticmethod(compat.original("mul_patches_scalar")))
    net = _conv_after_scalar_mul()
    x = torch.rand(2, 1, 6, 6)
    bm = auto_lirpa.BoundedModule(net, x, bound_opts={"conv_mode": "patches"})
    ptb = auto_lirpa.PerturbationLpNorm(norm=float("inf"), eps=0.1)
    with pytest.raises(AssertionError):
        bm.compute_bounds(x=(auto_lirpa.BoundedTensor(x, ptb),), method="backward")
