"""Exact interval propagation: containment of every grid point's exact outputs (enumerated and
sampled), equality with the integer reference at single points, tightness of the first layer."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import qnn_factory as qf
from qa_lirpa import QuantSpec
from qa_lirpa.nn import QuantInput, QuantLinear, accumulator_bias_spec, integer_codes
from qa_lirpa.quant.functions import quantize
from qa_lirpa.verify.intervals import IntervalNet, Trace

from .tiny_qnn import tiny_cnn, tiny_mlp


def grid_points(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Every integer point of the box ``[lo, hi]`` (flat int64 vectors)."""
    axes = [range(int(a), int(b) + 1) for a, b in zip(lo.reshape(-1), hi.reshape(-1))]
    return torch.tensor(list(itertools.product(*axes)), dtype=torch.int64)


def assert_contains(box, out):
    """``out`` (IntTensor of many points) lies in ``box`` (IntBox for one box), in real values."""
    blo, bhi = box.dequantize()
    y = out.dequantize()
    assert (y >= blo).all() and (y <= bhi).all()


@pytest.mark.parametrize("rounding", ["half_up", "half_even"])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("out_act", [False, True])
def test_mlp_contains_every_grid_point(rounding, per_channel, out_act):
    centre = torch.tensor([70.0, 140.0, 30.0])
    model = tiny_mlp(3, [6, 5], 3, centre, rounding=rounding, seed=2, per_channel=per_channel, out_act=out_act)
    net = IntervalNet(model)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        lo = centre.long().reshape(1, 3) + torch.randint(-6, 1, (1, 3), generator=g)
        hi = lo + torch.randint(0, 7, (1, 3), generator=g)
        box = net.propagate(lo, hi)
        out = integer_codes(model, grid_points(lo, hi).double())
        assert_contains(box, out)
        # the output interval is reached at both ends by some grid point when the net is this small
        y = out.dequantize()
        blo, bhi = box.dequantize()
        assert (y.min(0).values >= blo[0]).all() and (y.max(0).values <= bhi[0]).all()


@pytest.mark.parametrize("rounding", ["half_up", "half_even"])
def test_single_points_equal_the_reference(rounding):
    centre = torch.tensor([100.0, 20.0, 250.0])
    for per_channel, out_act in [(False, False), (True, True), (True, False)]:
        model = tiny_mlp(3, [8], 4, centre, rounding=rounding, seed=5, per_channel=per_channel, out_act=out_act)
        net = IntervalNet(model)
        pts = torch.randint(0, 256, (500, 3))
        box = net.propagate(pts, pts)
        ref = integer_codes(model, pts.double())
        assert torch.equal(box.lo, box.hi)
        assert torch.equal(box.dequantize()[0], ref.dequantize())


def test_cnn_contains_enumeration_and_equals_reference_at_points():
    centre = torch.arange(16, dtype=torch.float64) * 13 + 20
    for rounding in ["half_up", "half_even"]:
        model = tiny_cnn(centre, rounding=rounding, seed=3)
        net = IntervalNet(model)
        lo = centre.long().reshape(1, 1, 4, 4).clone()
        hi = lo.clone()
        free = [(0, 0, 1, 1), (0, 0, 0, 3), (0, 0, 2, 2)]   # three pixels vary, incl. one at the border
        for i in free:
            lo[i] -= 3
            hi[i] += 2
        box = net.propagate(lo, hi)
        flat = grid_points(lo, hi)
        out = integer_codes(model, flat.reshape(-1, 1, 4, 4).double())
        assert_contains(box, out)
        pts = flat[::7].reshape(-1, 1, 4, 4)
        at = net.propagate(pts, pts)
        assert torch.equal(at.dequantize()[0], integer_codes(model, pts.double()).dequantize())


def test_factory_models_sampled_containment():
    """The project's standard test QNNs (saturating MLP, CNN with padding and per-channel weights)."""
    g = torch.Generator().manual_seed(0)
    for model, shape in [(qf.mlp([5, 16, 16, 3], seed=3, per_channel=True), (5,)),
                         (qf.cnn(seed=5, rounding="half_even"), (1, 6, 6))]:
        lo = torch.randint(0, 240, (1,) + shape, generator=g)
        hi = lo + torch.randint(0, 6, (1,) + shape, generator=g)
        box = IntervalNet(model).propagate(lo, hi)
        pts = lo + (torch.rand((4000,) + shape, generator=g) * (hi - lo + 1)).floor().long()
        assert_contains(box, integer_codes(model, pts.double()))


def test_first_affine_layer_is_tight():
    """Through one affine layer the interval is the exact range (reached at box corners)."""
    ins = QuantSpec(8, False, 1.0)
    ws = QuantSpec(6, True, [2.0 ** -5, 2.0 ** -6], axis=0)
    lin = QuantLinear(3, 2, ws, accumulator_bias_spec(ins, ws)).double()
    model = nn.Sequential(QuantInput(ins), lin).double()
    lo, hi = torch.tensor([[10, 50, 200]]), torch.tensor([[14, 53, 209]])
    box = IntervalNet(model).propagate(lo, hi)
    y = integer_codes(model, grid_points(lo, hi).double()).dequantize()
    blo, bhi = box.dequantize()
    assert torch.equal(y.min(0).values, blo[0]) and torch.equal(y.max(0).values, bhi[0])


def test_accumulator_beyond_float64_exactness_is_refused():
    ins = QuantSpec(32, False, 1.0)
    ws = QuantSpec(24, True, 1.0)
    lin = QuantLinear(2, 1, ws, accumulator_bias_spec(ins, ws, bits=32)).double()
    with torch.no_grad():
        lin.weight.fill_(2.0 ** 21)
    model = nn.Sequential(QuantInput(ins), lin).double()
    big = torch.tensor([[2 ** 31, 2 ** 31]])
    with pytest.raises(OverflowError):
        IntervalNet(model).propagate(big, big)


def test_input_box_uses_the_quantizer_codes():
    """Codes of a real box come from the QuantInput's own quantization (monotone)."""
    spec = QuantSpec(8, False, 0.5, rounding="half_even")
    x = torch.tensor([[0.2, 0.25, 0.75, 1.25, 200.0]], dtype=torch.float64)
    assert quantize(x, spec).tolist() == [[0, 0, 2, 2, 255]]


def test_trace_records_slopes_and_selects_boxes():
    centre = torch.tensor([70.0, 140.0])
    model = tiny_mlp(2, [4], 2, centre, seed=1)
    net = IntervalNet(model)
    lo = torch.tensor([[60, 130], [70, 140], [65, 120]])
    hi = lo + torch.tensor([[10, 10], [0, 0], [5, 20]])
    trace = Trace()
    net.propagate(lo, hi, trace)
    kinds = [type(r.layer).__name__ for r in trace.steps]
    assert kinds == ["QuantLinear", "QuantAct", "QuantLinear"]
    slope = trace.steps[1].slope
    assert slope.shape == (3, 4) and (slope >= 0).all()
    assert (slope[1] == 0).all()                       # a point box: no width, no slope
    sub = trace.select(torch.tensor([2, 0]))
    assert sub.steps[1].in_shapes[0][0] == 2 and torch.equal(sub.steps[1].slope, slope[[2, 0]])
