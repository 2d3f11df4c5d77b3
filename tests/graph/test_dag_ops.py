"""The new graph ops (residual Add, average and max pooling, concat, folded BatchNorm) on small
random DAG QNNs: exact semantics against the float forward, interval propagation (exact integer
IBP), auto_LiRPA IBP/CROWN and the hand-written torch IBP against enumeration of small grids."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from qa_lirpa import bounded_module, integer_forward
from qa_lirpa.graph import QNNGraph, as_graph, op_for
from qa_lirpa.nn import QuantAct, QuantAdd, QuantInput, QuantLinear, set_float_mode
from qa_lirpa.nn.intervals import IntervalNet, Trace
from qa_lirpa.quant import QuantSpec
from qa_lirpa.train.bounds import torch_ibp_margins
from qa_lirpa.verify.grid import GridProblem
from tests.qnn_factory import DAG_KINDS, dag_qnn


def _grid(model, seed: int, max_points: int = 256):
    """A small random integer box of the model's input (some inputs free, widths 1-3) and all of its
    grid points ``[N, *shape]``."""
    shape = model.input_shape
    n = int(np.prod(shape))
    rng = np.random.default_rng(seed)
    lo = rng.integers(0, 250, size=n)
    width = np.zeros(n, dtype=np.int64)
    free = rng.choice(n, size=min(n, 3), replace=False)
    width[free] = rng.integers(1, 4, size=free.size)
    if rng.random() < 0.2:
        lo[free[0]], width[free[0]] = 254, 1          # touch the top of the code range
    hi = lo + width
    pts = np.array(list(itertools.product(*[range(a, b + 1) for a, b in zip(lo, hi)])), dtype=np.float64)
    assert pts.shape[0] <= max_points
    return (torch.tensor(lo).reshape((1,) + shape), torch.tensor(hi).reshape((1,) + shape),
            torch.from_numpy(pts).reshape((-1,) + shape))


@pytest.mark.parametrize("kind", DAG_KINDS)
def test_exact_semantics_equal_the_float_forward(kind):
    for seed in range(4):
        model = dag_qnn(kind, seed)
        x = torch.randint(0, 256, (20,) + model.input_shape).double()
        x[0] = 0
        x[1] = 255
        exact = integer_forward(model, x).reshape(20, -1)
        with torch.no_grad():
            fl = model(x).reshape(20, -1)
        assert torch.equal(exact, fl), kind     # power-of-two formats: fake quant is exact in float64


@pytest.mark.parametrize("kind", DAG_KINDS)
def test_interval_propagation_contains_enumeration_and_is_exact_on_points(kind):
    for seed in range(6):
        model = dag_qnn(kind, seed)
        lo, hi, pts = _grid(model, seed)
        net = IntervalNet(model)
        ylo, yhi = net.propagate(lo, hi).dequantize()
        y = integer_forward(model, pts).reshape(pts.shape[0], -1)
        assert (y >= ylo.reshape(1, -1)).all() and (y <= yhi.reshape(1, -1)).all()
        assert torch.equal(y.min(0).values, ylo.reshape(-1)) or (y.min(0).values >= ylo.reshape(-1)).all()
        q = pts.to(torch.int64)
        plo, phi = net.propagate(q, q).dequantize()
        assert torch.equal(plo.reshape(y.shape), y) and torch.equal(phi.reshape(y.shape), y)


@pytest.mark.parametrize("kind", DAG_KINDS)
def test_crown_and_ibp_bounds_contain_enumeration(kind):
    for seed in range(2):
        model = dag_qnn(kind, seed)
        lo, hi, pts = _grid(model, seed + 10)
        problem = GridProblem(model, model.input_shape, torch.device("cpu"))
        assert problem.crown is not None, problem.crown_error
        y = integer_forward(model, pts).reshape(pts.shape[0], -1)
        m = y.shape[1]
        C = torch.cat([torch.eye(m), -torch.eye(m)]).double().unsqueeze(0)
        flat_lo, flat_hi = lo.reshape(1, -1), hi.reshape(1, -1)
        # alpha-CROWN through convolutions costs seconds per call on a loaded 2-core box: MLP kinds only
        for alpha in (False, True) if len(model.input_shape) == 1 else (False,):
            lb = problem.crown_lower(flat_lo, flat_hi, C, alpha=alpha)[0]
            assert (lb[:m] <= y.min(0).values + 1e-9).all(), (kind, seed, alpha)
            assert (-lb[m:] >= y.max(0).values - 1e-9).all(), (kind, seed, alpha)
        ilo, ihi = problem.crown.interval(problem.body_inputs(flat_lo), problem.body_inputs(flat_hi))
        assert (ilo.reshape(-1) <= y.min(0).values + 1e-9).all() and (ihi.reshape(-1) >= y.max(0).values - 1e-9).all()


@pytest.mark.parametrize("kind", DAG_KINDS)
def test_torch_ibp_margins_contain_enumeration(kind):
    model = dag_qnn(kind, 5)
    lo, hi, pts = _grid(model, 5)
    centre = torch.div(lo + hi, 2, rounding_mode="floor").double()
    eps = float((hi - lo).max())
    y = integer_forward(model, pts).reshape(pts.shape[0], -1)
    label = torch.tensor([0])
    # torch IBP on the eps-box around the centre contains the box [lo, hi]
    lb = torch_ibp_margins(model, centre, label, eps, y.shape[1])[0]
    inside = ((pts >= centre - eps) & (pts <= centre + eps)).reshape(pts.shape[0], -1).all(1)
    margins = y[inside, :1] - y[inside, 1:]
    assert (lb <= margins.min(0).values + 1e-9).all()


@pytest.mark.parametrize("kind", DAG_KINDS)
def test_sensitivity_walks_back_to_the_input(kind):
    model = dag_qnn(kind, 1)
    lo, hi, _ = _grid(model, 1)
    problem = GridProblem(model, model.input_shape, torch.device("cpu"), use_crown=False)
    trace = Trace()
    problem.output_intervals(lo.reshape(1, -1), hi.reshape(1, -1), trace)
    sens = problem.sensitivity(trace, lo.reshape(1, -1), hi.reshape(1, -1), torch.ones(1, 3, dtype=torch.float64))
    assert sens.shape == (1, lo.numel()) and (sens >= 0).all()
    free = (hi - lo).reshape(-1) > 0
    assert (sens[0, ~free] == 0).all()


def test_residual_add_needs_matching_shapes_and_names_the_node():
    ins = QuantSpec(8, False, 1.0)
    ws = QuantSpec(6, True, 2.0 ** -5)
    act = QuantSpec(6, False, 0.5)
    graph = QNNGraph([("q", QuantInput(ins), ["input"]), ("a", QuantLinear(2, 3, ws, bias=False), ["q"]),
                      ("b", QuantLinear(2, 2, ws, bias=False), ["q"]), ("add", QuantAdd(act), ["a", "b"])])
    with pytest.raises(ValueError, match="node add .*QuantAdd.*shapes"):
        integer_forward(graph, torch.zeros(1, 2, dtype=torch.float64))


def test_graph_rejects_undefined_inputs_and_duplicate_names():
    act = QuantAct(QuantSpec(4, False, 1.0))
    with pytest.raises(ValueError, match="before they are defined"):
        QNNGraph([("a", act, ["nowhere"])])
    with pytest.raises(ValueError, match="repeated"):
        QNNGraph([("a", act, ["input"]), ("a", act, ["input"])])


def test_a_chain_is_a_graph_sharing_its_layers():
    from tests.qnn_factory import mlp

    model = mlp([3, 4, 2])
    graph = as_graph(model)
    assert graph.is_chain() and [n.name for n in graph.nodes] == ["0", "1", "2", "3"]
    assert all(graph.layer(str(i)) is model[i] for i in range(4))
    x = torch.randint(0, 256, (5, 3)).double()
    assert torch.equal(graph(x), model(x))


def test_float_mode_switches_the_new_quantizers_off():
    model = dag_qnn("residual_mlp", 3)
    set_float_mode(model, True)
    assert model.layers["add"].float_mode
    set_float_mode(model, False)
    assert not model.layers["add"].float_mode


def test_bounded_module_traces_every_dag_kind():
    for kind in DAG_KINDS:
        model = dag_qnn(kind, 0)
        example = torch.zeros((1,) + model.input_shape, dtype=torch.float64)
        bm = bounded_module(model, example)
        assert bm is not None
        assert all(op_for(layer) is not None for _, layer in as_graph(model).items())
