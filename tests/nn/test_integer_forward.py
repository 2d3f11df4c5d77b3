"""integer_forward against the float64 fake-quant forward (power-of-two scales: must be bit-for-bit
equal), with rounding ties constructed at the input quantizer and at hidden activations."""
from __future__ import annotations

import itertools
import zlib

import pytest
import torch
from torch import nn

from qa_lirpa.nn import (QuantAct, QuantInput, QuantLinear, accumulator_bias_spec, argmax_smallest,
                         integer_codes, integer_forward)
from qa_lirpa.quant import QuantSpec

from .helpers import build_cnn, build_mlp, count_ties, make_inputs

MODES = ["half_even", "half_up"]
BITS = [(4, 4), (6, 6), (8, 8)]
BIASES = ["acc", "acc_tensor", "coarse8", "fine8", "none"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _assert_bitwise(model, x):
    with torch.no_grad():
        y = model(x)
    yi = integer_forward(model, x)
    assert y.dtype == yi.dtype == torch.float64
    assert y.shape == yi.shape
    if not torch.equal(y, yi):
        idx = (y != yi).nonzero()[:5].tolist()
        pytest.fail(f"float64 forward != integer_forward at {idx}: "
                    f"{[(y[tuple(i)].item(), yi[tuple(i)].item()) for i in idx]}")
    return y


def _hidden_ties(model, x) -> int:
    counts = count_ties(model, x)
    return sum(c for i, c in counts.items() if not isinstance(model[i], QuantInput))


@pytest.mark.parametrize("final", ["keep", "signed"])
@pytest.mark.parametrize("bias", BIASES)
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("bits", BITS, ids=[f"w{w}a{a}" for w, a in BITS])
@pytest.mark.parametrize("rounding", MODES)
def test_mlp_bitwise(rounding, bits, per_channel, bias, final):
    w_bits, a_bits = bits
    seed = zlib.crc32(repr((rounding, bits, per_channel, bias, final)).encode()) % 1000
    model = build_mlp([6, 8, 8, 4], rounding=rounding, w_bits=w_bits, a_bits=a_bits, per_channel=per_channel,
                      bias=bias, final=final, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = make_inputs((64, 6), model[0].spec, g)
    counts = count_ties(model, x)
    # the test is about ties: the input quantizer and the hidden activations must meet some
    assert counts[0] > 0
    assert _hidden_ties(model, x) > 0, counts
    y = _assert_bitwise(model, x)
    # saturated and non-saturated outputs occur for a final activation
    if final == "signed":
        out_spec = model[-1].spec
        codes = integer_codes(model, x).values
        assert codes.min() >= out_spec.qmin and codes.max() <= out_spec.qmax
        assert (y != 0).any()


@pytest.mark.parametrize("rounding", MODES)
def test_mlp_bitwise_zero_points(rounding):
    """Signed input with a zero point, hidden unsigned activations with a nonzero zero point."""
    ins = QuantSpec(8, True, 0.25, zero_point=-3, rounding=rounding)
    for seed, per_channel in itertools.product(range(3), (False, True)):
        model = build_mlp([5, 7, 6, 3], rounding=rounding, per_channel=per_channel, bias="acc", final="signed",
                          seed=seed, in_spec=ins, act_zero_point=4)
        g = torch.Generator().manual_seed(100 + seed)
        x = make_inputs((48, 5), ins, g) - 1.0   # shift: negative inputs and ties below zero
        assert count_ties(model, x)[0] > 0
        assert _hidden_ties(model, x) > 0
        _assert_bitwise(model, x)


@pytest.mark.parametrize("final", ["keep", "signed"])
@pytest.mark.parametrize("bias", BIASES)
@pytest.mark.parametrize("w_bits", [4, 6, 8])
@pytest.mark.parametrize("rounding", MODES)
def test_cnn_bitwise(rounding, w_bits, bias, final):
    seed = zlib.crc32(repr((rounding, w_bits, bias, final)).encode()) % 1000
    model = build_cnn(rounding=rounding, w_bits=w_bits, a_bits=w_bits, bias=bias, final=final, seed=seed)
    g = torch.Generator().manual_seed(seed + 7)
    x = make_inputs((12, 2, 7, 7), model[0].spec, g)
    counts = count_ties(model, x)
    assert counts[0] > 0
    assert _hidden_ties(model, x) > 0, counts
    _assert_bitwise(model, x)


def test_rounding_modes_differ_on_these_inputs():
    """Same weights and inputs, the two modes: outputs must differ (ties really are exercised) and
    each mode must still match its own float64 forward."""
    outs = {}
    for rounding in MODES:
        model = build_mlp([6, 8, 8, 4], rounding=rounding, seed=3, final="signed")
        g = torch.Generator().manual_seed(4)
        x = make_inputs((64, 6), model[0].spec, g)
        outs[rounding] = _assert_bitwise(model, x)
    assert not torch.equal(outs["half_even"], outs["half_up"])


def test_hand_built_hidden_tie():
    """A 2-1-1 net whose hidden accumulator sits exactly at half steps of the activation scale.

    s_in = s_w = s_act = 1/2, weight codes (1, 0): the hidden pre-activation is x_0 / 2.
    x_0 = 1.5 -> 0.75 = 1.5 steps (both modes: 2); x_0 = 0.5 -> 0.25 = 0.5 steps (up: 1, even: 0);
    x_0 = 2.5 -> 1.25 = 2.5 steps (up: 3, even: 2). The output layer (weight code 1, no bias) keeps
    the accumulator: hidden code * 1/2 * 1/2.
    """
    results = {}
    for rounding in MODES:
        ins = QuantSpec(4, False, 0.5, rounding=rounding)
        ws = QuantSpec(4, True, 0.5, rounding=rounding)
        act = QuantSpec(4, False, 0.5, rounding=rounding)
        l1 = QuantLinear(2, 1, ws, bias=False)
        l2 = QuantLinear(1, 1, ws, bias=False)
        with torch.no_grad():
            l1.weight.copy_(torch.tensor([[0.5, 0.0]]))
            l2.weight.copy_(torch.tensor([[0.5]]))
        model = nn.Sequential(QuantInput(ins), l1, QuantAct(act), l2).double()
        x = torch.tensor([[1.5, 0.5], [0.5, 0.5], [2.5, 0.0]], dtype=torch.float64)
        results[rounding] = _assert_bitwise(model, x).reshape(-1).tolist()
    # hidden: 0.75 -> 1.5 steps, 0.25 -> 0.5 steps, 1.25 -> 2.5 steps; output = hidden * 0.5
    assert results["half_up"] == [2 * 0.5 * 0.5, 1 * 0.5 * 0.5, 3 * 0.5 * 0.5]
    assert results["half_even"] == [2 * 0.5 * 0.5, 0.0, 2 * 0.5 * 0.5]


def test_input_quantizer_ties_hand_checked():
    for rounding, want in (("half_up", [1.0, 2.0, 3.0, 0.0, 255.0]), ("half_even", [0.0, 2.0, 2.0, 0.0, 255.0])):
        ins = QuantSpec(8, False, 1.0, rounding=rounding)
        lin = QuantLinear(1, 1, QuantSpec(8, True, 1.0, rounding=rounding), bias=False)
        with torch.no_grad():
            lin.weight.fill_(1.0)
        model = nn.Sequential(QuantInput(ins), lin).double()
        x = torch.tensor([[0.5], [1.5], [2.5], [-0.5], [300.0]], dtype=torch.float64)
        y = _assert_bitwise(model, x)
        assert y.reshape(-1).tolist() == want


def test_float32_model_small_values_also_exact():
    """Small accumulators (far below 2^24): the float32 fake-quant forward is exact too."""
    model = build_mlp([6, 8, 4], seed=5).float()
    g = torch.Generator().manual_seed(6)
    x = make_inputs((32, 6), model[0].spec, g)
    with torch.no_grad():
        y32 = model(x.float())
    assert torch.equal(y32.double(), integer_forward(model, x))


# ----- argmax_smallest --------------------------------------------------------------------------

def _first_max(row):
    m = max(row)
    return row.index(m)


@pytest.mark.parametrize("seed", range(5))
def test_argmax_smallest_ties(seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (200, 7), generator=g).double()
    got = argmax_smallest(y).tolist()
    rows = y.tolist()
    assert got == [_first_max(r) for r in rows]
    # many rows really have ties at the maximum
    assert sum(r.count(max(r)) > 1 for r in rows) > 50


def test_argmax_smallest_hand_cases():
    y = torch.tensor([[1.0, 3.0, 3.0, 0.0], [5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 0.0, 1.0],
                      [-1.0, -2.0, -1.0, -3.0], [2.0, -0.0, 0.0, 2.0]])
    assert argmax_smallest(y).tolist() == [1, 0, 3, 0, 0]
    assert argmax_smallest(torch.tensor([0.0, 7.0, 7.0])).item() == 1
    y3 = torch.tensor([[[1, 1], [0, 2]], [[3, 3], [4, 3]]])
    assert argmax_smallest(y3).tolist() == [[0, 1], [0, 0]]


def test_argmax_smallest_on_model_outputs():
    model = build_mlp([6, 8, 8, 4], seed=7, final="signed", a_bits=4)
    g = torch.Generator().manual_seed(8)
    x = make_inputs((128, 6), model[0].spec, g)
    y = integer_forward(model, x)
    rows = y.tolist()
    assert argmax_smallest(y).tolist() == [_first_max(r) for r in rows]
    assert any(r.count(max(r)) > 1 for r in rows)


# ----- errors ------------------------------------------------------------------------------------

def test_model_must_start_with_quant_input():
    lin = QuantLinear(2, 2, QuantSpec(4, True, 0.5), bias=False).double()
    with pytest.raises(TypeError):
        integer_forward(nn.Sequential(lin), torch.zeros(1, 2, dtype=torch.float64))


def test_float_bias_has_no_integer_semantics():
    ins = QuantSpec(8, False, 1.0)
    lin = QuantLinear(2, 2, QuantSpec(4, True, 0.5), bias_spec=None, bias=True)
    with pytest.raises(ValueError):
        integer_forward(nn.Sequential(QuantInput(ins), lin).double(), torch.zeros(1, 2, dtype=torch.float64))


def test_accumulator_bias_spec():
    ins = QuantSpec(8, False, 0.5)
    ws = QuantSpec(6, True, [0.25, 0.125, 2.0 ** -6], axis=0, rounding="half_up")
    bs = accumulator_bias_spec(ins, ws)
    assert bs.signed and bs.bits == 32 and bs.axis == 0 and bs.rounding == "half_up"
    assert bs.scale == (0.125, 0.0625, 2.0 ** -7)
    assert accumulator_bias_spec(ins, QuantSpec(6, True, 0.25), bits=16).scale == (0.125,)
    with pytest.raises(ValueError):
        accumulator_bias_spec(QuantSpec(8, scale=[0.5, 0.25], axis=1), ws)
