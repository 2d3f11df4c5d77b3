"""integer_forward against an independent pure-Python (int / Fraction) forward pass, with
power-of-two scales (random tiny MLPs with many ties) and with non-power-of-two scales (exact
rational semantics)."""
from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from qa_lirpa.nn import QuantAct, QuantInput, QuantLinear, accumulator_bias_spec, integer_codes, integer_forward
from qa_lirpa.quant import QuantSpec, quantize

from .helpers import count_ties, int_tensor_fractions, python_forward, quant_frac

MODES = ["half_even", "half_up"]


def _set(param: torch.Tensor, values) -> None:
    with torch.no_grad():
        param.copy_(torch.tensor(values, dtype=param.dtype).reshape(param.shape))


def _check_against_python(model: nn.Sequential, rows: list[list[float]], compare_float: bool = True):
    x = torch.tensor(rows, dtype=torch.float64)
    exact = int_tensor_fractions(integer_codes(model, x))
    want = [python_forward(model, r) for r in rows]
    assert exact == want
    if compare_float:
        # power-of-two scales: the dequantized float64 output is exact
        got = [[Fraction(v) for v in r] for r in integer_forward(model, x).tolist()]
        assert got == want
    return want


def _check_weight_codes(layer: QuantLinear):
    """quantize() of the weights is the exact rounding of the stored float values."""
    ws = layer.weight_spec
    codes = quantize(layer.weight.detach(), ws).tolist()
    for o, row in enumerate(layer.weight.detach().tolist()):
        s = ws.scale[0] if len(ws.scale) == 1 else ws.scale[o]
        z = ws.zero_point[0] if len(ws.zero_point) == 1 else ws.zero_point[o]
        assert codes[o] == [quant_frac(Fraction(v), s, z, ws) for v in row]


# ----- power-of-two scales, hypothesis-drawn tiny MLPs ---------------------------------------------

@st.composite
def tiny_mlp(draw):
    rounding = draw(st.sampled_from(MODES))
    per_channel = draw(st.booleans())
    final = draw(st.sampled_from(["keep", "signed"]))
    bias_kind = draw(st.sampled_from(["acc", "explicit8", "none"]))
    a_bits = draw(st.sampled_from([4, 6]))
    in_zp = draw(st.sampled_from([0, 0, 2]))
    ins = QuantSpec(8, False, 0.5, zero_point=in_zp, rounding=rounding)
    sizes = [3, 4, 2]

    def wspec(n):
        if per_channel:
            return QuantSpec(4, True, [2.0 ** -(2 + (c % 3)) for c in range(n)], axis=0, rounding=rounding)
        return QuantSpec(4, True, 0.25, rounding=rounding)

    layers: list[nn.Module] = [QuantInput(ins)]
    prev = ins
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        ws = wspec(b)
        if bias_kind == "acc":
            bs = accumulator_bias_spec(prev, ws)
        elif bias_kind == "explicit8":
            bs = QuantSpec(8, True, 2.0 ** -draw(st.integers(1, 6)), rounding=rounding)
        else:
            bs = None
        lin = QuantLinear(a, b, ws, bs, bias=bs is not None).double()
        w = []
        for o in range(b):
            s = ws.scale[0] if len(ws.scale) == 1 else ws.scale[o]
            for _ in range(a):
                code = draw(st.integers(-10, 10))               # beyond [-8, 7]: clamped
                off = draw(st.sampled_from([0.0, 0.0, 0.5, -0.5, 0.25]))
                w.append((code + off) * s)
        _set(lin.weight, w)
        if bs is not None:
            bvals = []
            for o in range(b):
                s = bs.scale[0] if len(bs.scale) == 1 else bs.scale[o]
                bvals.append((draw(st.integers(-60, 60)) + draw(st.sampled_from([0.0, 0.5]))) * s)
            _set(lin.bias, bvals)
        layers.append(lin)
        if i < len(sizes) - 2:
            act = QuantSpec(a_bits, False, prev.scale[0] * max(ws.scale) * 2,
                            zero_point=draw(st.sampled_from([0, 0, 1])), rounding=rounding)
            layers.append(QuantAct(act))
            prev = act
    if final == "signed":
        layers.append(QuantAct(QuantSpec(a_bits, True, prev.scale[0] * 0.5, rounding=rounding)))
    model = nn.Sequential(*layers).double()
    rows = draw(st.lists(st.lists(st.tuples(st.integers(-3, 24), st.sampled_from([0.0, 0.5, 0.5, -0.5, 0.3])),
                                  min_size=3, max_size=3), min_size=1, max_size=8))
    xs = [[(k + off) * 0.5 for k, off in r] for r in rows]
    return model, xs


@settings(max_examples=100, deadline=None)
@given(tiny_mlp())
def test_tiny_mlp_matches_python_reference(case):
    model, rows = case
    for layer in model:
        if isinstance(layer, QuantLinear):
            _check_weight_codes(layer)
    _check_against_python(model, rows)


@pytest.mark.parametrize("rounding", MODES)
def test_tiny_mlp_ties_and_signed_output(rounding):
    """Deterministic version with many rows: ties at the input and hidden quantizers, negative ties
    at a signed output quantizer; compares with the Python reference and checks the tie direction of
    the output quantizer by hand."""
    ins = QuantSpec(6, False, 0.5, rounding=rounding)
    ws = QuantSpec(4, True, 0.25, rounding=rounding)
    act = QuantSpec(6, False, 0.25, rounding=rounding)          # multiplier (1/2 * 1/4) / (1/4) = 1/2
    out = QuantSpec(6, True, 0.125, rounding=rounding)         # half steps: odd multiples of 1/16
    l1 = QuantLinear(3, 4, ws, accumulator_bias_spec(ins, ws)).double()
    l2 = QuantLinear(4, 2, ws, QuantSpec(8, True, 1 / 32, rounding=rounding)).double()
    _set(l1.weight, [[1, -2, 3], [2, 1, -1], [-3, 2, 1], [1, 1, 1]])
    with torch.no_grad():
        l1.weight.mul_(0.25)
    _set(l1.bias, [0.125, -0.375, 0.0, 0.25])
    _set(l2.weight, [[1, -1, 2, -3], [-2, 3, 1, -1]])
    with torch.no_grad():
        l2.weight.mul_(0.25)
    _set(l2.bias, [-4 / 32, 6 / 32])                            # 8-bit codes -4, 6 at scale 1/32
    model = nn.Sequential(QuantInput(ins), l1, QuantAct(act), l2, QuantAct(out)).double()
    rows = [[(a + 0.5 * (a % 2)) * 0.5, b * 0.5, (c - 0.5) * 0.5] for a in range(5) for b in range(4) for c in range(4)]
    ties = count_ties(model, torch.tensor(rows, dtype=torch.float64))
    assert ties[0] > 0 and ties[2] > 0 and ties[4] > 0
    want = _check_against_python(model, rows)
    # the output quantizer: compute its input without the final QuantAct and round by hand
    pre = nn.Sequential(*list(model)[:-1])
    pre_vals = [python_forward(pre, r) for r in rows]
    saw_negative_tie = False
    for pv, wv in zip(pre_vals, want):
        for v, w in zip(pv, wv):
            steps = v / Fraction(1, 8)
            if steps.denominator == 2 and -32 <= steps <= 31:
                k = math.floor(steps)
                expect = k + 1 if rounding == "half_up" or k % 2 == 1 else k
                assert w == expect * Fraction(1, 8)
                saw_negative_tie |= steps < 0
    assert saw_negative_tie


# ----- non-power-of-two scales: exact rational semantics -----------------------------------------

def _random_rows(spec: QuantSpec, n: int, width: int, seed: int, lo: float, hi: float) -> list[list[float]]:
    """Random reals, kept away from the input quantizer's ties (|x/s - (k + 1/2)| > 1e-9): near a tie
    the exact quotient and the float64 one may round differently, and that is not what these tests
    are about."""
    g = torch.Generator().manual_seed(seed)
    s = Fraction(spec.scale[0])
    rows = []
    while len(rows) < n:
        r = (torch.rand(width, generator=g, dtype=torch.float64) * (hi - lo) + lo).tolist()
        ok = True
        for v in r:
            q = Fraction(v) / s
            if abs(q - math.floor(q) - Fraction(1, 2)) < Fraction(1, 10 ** 9):
                ok = False
        if ok:
            rows.append(r)
    return rows


def _ugly_mlp(rounding: str, per_channel: bool, final: str, bias: str | None, seed: int) -> nn.Sequential:
    ins = QuantSpec(8, False, 0.1, rounding=rounding)
    if per_channel:
        ws1 = QuantSpec(8, True, [0.0123, 0.037, 0.0071, 0.02], axis=0, rounding=rounding)
    else:
        ws1 = QuantSpec(8, True, 0.0123, rounding=rounding)
    act = QuantSpec(6, False, 0.037, zero_point=1, rounding=rounding)
    ws2 = QuantSpec(6, True, 0.0123 if not per_channel else [0.0123, 0.031], axis=0 if per_channel else None,
                    rounding=rounding)
    if bias == "acc":
        b1, b2 = accumulator_bias_spec(ins, ws1), accumulator_bias_spec(act, ws2)
    elif bias == "explicit8":
        b1 = QuantSpec(8, True, 0.05, rounding=rounding)
        b2 = QuantSpec(8, True, 0.013, rounding=rounding)
    else:
        b1 = b2 = None
    g = torch.Generator().manual_seed(seed)
    l1 = QuantLinear(3, 4, ws1, b1, bias=b1 is not None).double()
    l2 = QuantLinear(4, 2, ws2, b2, bias=b2 is not None).double()
    with torch.no_grad():
        l1.weight.copy_((torch.rand(4, 3, generator=g, dtype=torch.float64) - 0.45) * 2.5)
        l2.weight.copy_((torch.rand(2, 4, generator=g, dtype=torch.float64) - 0.5) * 1.2)
        if b1 is not None:
            l1.bias.copy_((torch.rand(4, generator=g, dtype=torch.float64) - 0.5) * 4)
            l2.bias.copy_((torch.rand(2, generator=g, dtype=torch.float64) - 0.5) * 1)
    layers = [QuantInput(ins), l1, QuantAct(act), l2]
    if final == "signed":
        layers.append(QuantAct(QuantSpec(6, True, 0.061, zero_point=-2, rounding=rounding)))
    return nn.Sequential(*layers).double()


@pytest.mark.parametrize("final", ["keep", "signed"])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("rounding", MODES)
def test_non_power_of_two_scales_no_bias(rounding, per_channel, final):
    model = _ugly_mlp(rounding, per_channel, final, None, seed=1)
    assert not model[0].spec.is_power_of_two and not model[1].weight_spec.is_power_of_two
    rows = _random_rows(model[0].spec, 40, 3, seed=2, lo=-1.0, hi=27.0)
    want = _check_against_python(model, rows, compare_float=False)
    # not a trivial network: outputs vary
    assert len({tuple(w) for w in want}) > 5
    # the float64 output is the exact value up to the rounding of scale and product
    y = integer_forward(model, torch.tensor(rows, dtype=torch.float64))
    for r, wr in zip(y.tolist(), want):
        for v, w in zip(r, wr):
            assert abs(Fraction(v) - w) <= abs(w) * Fraction(1, 2 ** 50)


@pytest.mark.parametrize("bias", ["acc", "explicit8"])
@pytest.mark.parametrize("final", ["keep", "signed"])
@pytest.mark.parametrize("rounding", MODES)
def test_non_power_of_two_scales_with_bias(rounding, final, bias):
    """Scales 0.1, 0.0123, 0.037, ... and a bias (accumulator spec or an explicit 8-bit spec):
    integer_forward must give the exact rational result."""
    model = _ugly_mlp(rounding, False, final, bias, seed=3)
    rows = _random_rows(model[0].spec, 30, 3, seed=4, lo=-1.0, hi=27.0)
    want = _check_against_python(model, rows, compare_float=False)
    assert len({tuple(w) for w in want}) > 5


def _dyadic_times_odd_mlp(rounding: str, per_channel: bool, final: str, bias: str) -> nn.Sequential:
    """Scales 3/8, 5/64, 15/256, ...: not powers of two, but with small rational relations, so that
    hidden rounding ties are frequent."""
    ins = QuantSpec(8, False, 0.375, rounding=rounding)
    if per_channel:
        ws = QuantSpec(6, True, [5 / 64, 3 / 32, 5 / 128, 7 / 64], axis=0, rounding=rounding)
    else:
        ws = QuantSpec(6, True, 5 / 64, rounding=rounding)
    act = QuantSpec(8, False, 2 * 0.375 * 5 / 64, rounding=rounding)       # multiplier 1/2
    ws2 = QuantSpec(6, True, 3 / 16, rounding=rounding)
    if bias == "acc":
        b1, b2 = accumulator_bias_spec(ins, ws), accumulator_bias_spec(act, ws2)
    else:
        b1, b2 = QuantSpec(8, True, 3 / 16, rounding=rounding), QuantSpec(8, True, 5 / 256, rounding=rounding)
    l1 = QuantLinear(3, 4, ws, b1).double()
    l2 = QuantLinear(4, 2, ws2, b2).double()
    g = torch.Generator().manual_seed(9)

    def codes(shape, lo, hi):
        return torch.randint(lo, hi + 1, shape, generator=g).double()

    s1 = torch.tensor(ws.scale if per_channel else ws.scale * 4, dtype=torch.float64).reshape(4, 1)
    with torch.no_grad():
        l1.weight.copy_(codes((4, 3), -4, 4) * s1)
        l2.weight.copy_(codes((2, 4), -4, 4) * ws2.scale[0])
        bs1 = torch.tensor(b1.scale if len(b1.scale) > 1 else b1.scale * 4, dtype=torch.float64)
        l1.bias.copy_(codes((4,), -6, 6) * bs1)
        l2.bias.copy_(codes((2,), -6, 6) * b2.scale[0])
    layers = [QuantInput(ins), l1, QuantAct(act), l2]
    if final == "signed":
        layers.append(QuantAct(QuantSpec(8, True, 2 * 15 / 256 * 3 / 16, rounding=rounding)))
    return nn.Sequential(*layers).double()


@pytest.mark.parametrize("bias", ["acc", "explicit8"])
@pytest.mark.parametrize("final", ["keep", "signed"])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("rounding", MODES)
def test_non_power_of_two_scales_with_ties(rounding, per_channel, final, bias):
    model = _dyadic_times_odd_mlp(rounding, per_channel, final, bias)
    assert not model[0].spec.is_power_of_two
    g = torch.Generator().manual_seed(10)
    # inputs on the input grid (exact multiples of 3/8; the division by 3/8 is then exact in float64)
    rows = (torch.randint(0, 12, (60, 3), generator=g).double() * 0.375).tolist()
    want = _check_against_python(model, rows, compare_float=False)
    assert len({tuple(w) for w in want}) > 5
    # hidden ties really occur: pre-activation / s_act is a half integer
    s_act = Fraction(model[2].spec.scale[0])
    pre = nn.Sequential(*list(model)[:2])
    n_ties = sum((v / s_act).denominator == 2 for r in rows for v in python_forward(pre, r))
    assert n_ties > 0
