"""Model builders and exact (Fraction) references for the nn tests."""
from __future__ import annotations

import math
from fractions import Fraction

import torch
from torch import nn

from qa_lirpa.nn import IntTensor, QuantAct, QuantConv2d, QuantInput, QuantLinear, accumulator_bias_spec
from qa_lirpa.quant import QuantSpec, quantize

HALF = Fraction(1, 2)


# ----- exact rational rounding ------------------------------------------------------------------

def round_frac(v: Fraction, mode: str) -> int:
    if mode == "half_up":
        return math.floor(v + HALF)
    if mode == "half_down":
        return math.ceil(v - HALF)
    if mode == "down":
        return math.floor(v)
    if mode == "up":
        return math.ceil(v)
    if mode == "half_even":
        lo = math.floor(v)
        r = v - lo
        if r != HALF:
            return lo + (1 if r > HALF else 0)
        return lo + (lo % 2)
    raise ValueError(mode)


def quant_frac(v: Fraction, scale: float, zp: int, spec: QuantSpec) -> int:
    """Exact code clamp(R(v / s) + z, qmin, qmax) of a rational."""
    q = round_frac(Fraction(v) / Fraction(scale), spec.rounding) + zp
    return min(max(q, spec.qmin), spec.qmax)


def _channel(vals: tuple, c: int):
    return vals[0] if len(vals) == 1 else vals[c]


# ----- an independent pure-Python forward pass -----------------------------------------------------

def python_forward(model: nn.Sequential, x_row: list[float]) -> list[Fraction]:
    """Exact real outputs of an MLP (QuantInput, QuantLinear, QuantAct, ...) on one input row.

    Pure Python: one loop per neuron, integer codes, Fractions. Weight and bias codes are taken from
    ``quantize(param, spec)``; everything else (input quantization, accumulation, bias, rescaling,
    rounding, clamping) is computed here.
    """
    h: list[Fraction] | None = None
    for layer in model:
        if isinstance(layer, QuantInput):
            sp = layer.spec
            assert not sp.per_channel
            s, z = sp.scale[0], sp.zero_point[0]
            h = [(quant_frac(Fraction(v), s, z, sp) - z) * Fraction(s) for v in x_row]
        elif isinstance(layer, QuantLinear):
            ws = layer.weight_spec
            wq = quantize(layer.weight.detach(), ws).tolist()
            out = []
            for o in range(layer.out_features):
                sw, zw = Fraction(_channel(ws.scale, o)), _channel(ws.zero_point, o)
                acc = Fraction(0)
                for i in range(layer.in_features):
                    acc += h[i] * ((wq[o][i] - zw) * sw)
                out.append(acc)
            if layer.bias is not None:
                bs = layer.bias_spec
                if bs.per_channel:
                    bs = bs.replace(axis=0)
                bq = quantize(layer.bias.detach(), bs).tolist()
                for o in range(layer.out_features):
                    sb, zb = Fraction(_channel(bs.scale, o)), _channel(bs.zero_point, o)
                    out[o] += (bq[o] - zb) * sb
            h = out
        elif isinstance(layer, QuantAct):
            sp = layer.spec
            res = []
            for c, v in enumerate(h):
                s, z = _channel(sp.scale, c), _channel(sp.zero_point, c)
                res.append((quant_frac(v, s, z, sp) - z) * Fraction(s))
            h = res
        else:
            raise TypeError(type(layer).__name__)
    return h


def int_tensor_fractions(t: IntTensor) -> list[list[Fraction]]:
    """Exact real values of a 2-D IntTensor [N, C] (channels along axis 1)."""
    values = t.values.tolist() if hasattr(t.values, "dim") else [[int(v) for v in r] for r in t.values]
    assert len(values[0]) > 0 and all(isinstance(r, list) for r in values)
    out = []
    for row in values:
        r = []
        for c, v in enumerate(row):
            s = t.scale[0] if len(t.scale) == 1 else t.scale[c]
            z = t.zero_point[0] if len(t.zero_point) == 1 else t.zero_point[c]
            r.append((v - z) * Fraction(s))
        out.append(r)
    return out


# ----- counting rounding ties ----------------------------------------------------------------------

def _spec_channel_tensor(values, like: torch.Tensor, axis: int | None) -> torch.Tensor:
    t = torch.tensor(values, dtype=torch.float64)
    if len(values) == 1:
        return t.reshape(())
    shape = [1] * like.dim()
    shape[axis % like.dim()] = len(values)
    return t.reshape(shape)


def tie_mask(pre: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Where ``pre / s`` sits exactly on a half integer whose two neighbours (plus z) are both codes
    (so that the rounding mode decides the result). ``pre`` must be float64 with exact values."""
    s = _spec_channel_tensor(spec.scale, pre, spec.axis)
    z = _spec_channel_tensor(spec.zero_point, pre, spec.axis)
    v = pre / s
    lo = torch.floor(v)
    return (v - lo == 0.5) & (lo + z >= spec.qmin) & (lo + 1 + z <= spec.qmax)


def count_ties(model: nn.Sequential, x: torch.Tensor) -> dict[int, int]:
    """Number of exact rounding ties at each quantizer (QuantInput / QuantAct), by layer index,
    measured on the float64 forward (exact with power-of-two scales)."""
    counts: dict[int, int] = {}
    h = x.double()
    with torch.no_grad():
        for i, layer in enumerate(model):
            if isinstance(layer, (QuantInput, QuantAct)):
                counts[i] = int(tie_mask(h, layer.spec).sum())
            h = layer(h)
    return counts


# ----- model builders ----------------------------------------------------------------------------

def _weight_spec(w_bits: int, rounding: str, channels: int, per_channel: bool) -> QuantSpec:
    base = -(w_bits - 1)
    if per_channel:
        return QuantSpec(w_bits, True, [2.0 ** (base - (c % 3)) for c in range(channels)], axis=0,
                         rounding=rounding)
    return QuantSpec(w_bits, True, 2.0 ** base, rounding=rounding)


def _init_weight(param: torch.Tensor, spec: QuantSpec, g: torch.Generator, small_codes: int = 3) -> None:
    """Mostly small codes (|code| <= small_codes, so that accumulators stay small and ties at the
    next quantizer are frequent), some half-code ties and some values beyond the range (clamped)."""
    shape = param.shape
    channels = shape[0]
    s = torch.tensor([spec.scale[0] if len(spec.scale) == 1 else spec.scale[c] for c in range(channels)],
                     dtype=torch.float64).reshape([-1] + [1] * (len(shape) - 1))
    codes = torch.randint(-small_codes, small_codes + 1, shape, generator=g).double()
    half = (torch.rand(shape, generator=g) < 0.2).double() * 0.5        # weight-quantizer ties
    jitter = (torch.rand(shape, generator=g, dtype=torch.float64) - 0.5) * 0.8
    jitter = torch.where(torch.rand(shape, generator=g) < 0.3, jitter, torch.zeros_like(jitter))
    big = torch.rand(shape, generator=g) < 0.05                          # saturated weights
    big_codes = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0).double() * (2 ** spec.bits)
    val = torch.where(big, big_codes, codes + torch.where(half > 0, half, jitter)) * s
    with torch.no_grad():
        param.copy_(val.to(param.dtype))


def _init_bias(param: torch.Tensor, spec: QuantSpec, g: torch.Generator, max_code: int,
               aligned: int = 1) -> None:
    """Bias codes in [-max_code, max_code], some half-code ties. ``aligned > 1``: most codes are
    multiples of ``aligned`` (a bias finer than the accumulator only leaves room for hidden ties
    when it is aligned with the accumulator grid)."""
    n = param.shape[0]
    s = torch.tensor([spec.scale[0] if len(spec.scale) == 1 else spec.scale[c] for c in range(n)],
                     dtype=torch.float64)
    codes = torch.randint(-max_code, max_code + 1, (n,), generator=g).double()
    if aligned > 1:
        k = torch.randint(-(max_code // aligned) + 1, max_code // aligned, (n,), generator=g).double()
        off = torch.tensor([0.0, 0.0, 0.0, aligned / 2, aligned / 4, 1.0])[
            torch.randint(0, 6, (n,), generator=g)]
        codes = k * aligned + off
    half = (torch.rand(n, generator=g) < 0.3).double() * 0.5
    with torch.no_grad():
        param.copy_(((codes + half) * s).to(param.dtype))


def _bias_spec(kind: str, in_spec: QuantSpec, ws: QuantSpec, rounding: str) -> QuantSpec | None:
    acc = in_spec.scale[0] * max(ws.scale)
    if kind == "acc":
        return accumulator_bias_spec(in_spec, ws)
    if kind == "acc_tensor":   # per-tensor bias at the scale of the finest accumulator channel
        return QuantSpec(32, True, in_spec.scale[0] * min(ws.scale), rounding=rounding)
    if kind == "coarse8":      # explicit 8-bit bias, coarser than the accumulator
        return QuantSpec(8, True, acc * 4, rounding=rounding)
    if kind == "fine8":        # explicit 8-bit bias, finer than every accumulator channel
        return QuantSpec(8, True, in_spec.scale[0] * min(ws.scale) / 4, rounding=rounding)
    if kind == "none":
        return None
    raise ValueError(kind)


def _bias_codes(kind: str) -> int:
    return {"acc": 40, "acc_tensor": 40, "coarse8": 6, "fine8": 127}[kind]


def _bias_aligned(kind: str) -> int:
    return 16 if kind == "fine8" else 1


def act_spec_after(in_spec: QuantSpec, ws: QuantSpec, bits: int, rounding: str, signed: bool = False,
                   factor: int = 2, zero_point: int = 0) -> QuantSpec:
    """An activation scale ``factor`` times the coarsest accumulator scale: then the requantization
    multiplier is 1/factor (or smaller) and rounding ties are frequent."""
    return QuantSpec(bits, signed, in_spec.scale[0] * max(ws.scale) * factor, zero_point=zero_point,
                     rounding=rounding)


def build_mlp(sizes: list[int], *, rounding: str = "half_up", w_bits: int = 6, a_bits: int = 6,
              per_channel: bool = False, bias: str = "acc", final: str = "keep", seed: int = 0,
              in_spec: QuantSpec | None = None, act_zero_point: int = 0) -> nn.Sequential:
    """QuantInput, (QuantLinear, QuantAct)*, QuantLinear, [signed QuantAct], in float64."""
    g = torch.Generator().manual_seed(seed)
    if in_spec is None:
        in_spec = QuantSpec(8, False, 0.5, rounding=rounding)
    layers: list[nn.Module] = [QuantInput(in_spec)]
    prev = in_spec
    n_lin = len(sizes) - 1
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        ws = _weight_spec(w_bits, rounding, b, per_channel)
        bs = _bias_spec(bias, prev, ws, rounding)
        lin = QuantLinear(a, b, ws, bs, bias=bs is not None)
        _init_weight(lin.weight, ws, g)
        if bs is not None:
            _init_bias(lin.bias, bs, g, _bias_codes(bias), _bias_aligned(bias))
        layers.append(lin)
        last = i == n_lin - 1
        if not last:
            act = act_spec_after(prev, ws, a_bits, rounding, zero_point=act_zero_point)
            layers.append(QuantAct(act))
            prev = act
        elif final == "signed":
            layers.append(QuantAct(act_spec_after(prev, ws, a_bits, rounding, signed=True)))
        elif final != "keep":
            raise ValueError(final)
    return nn.Sequential(*layers).double()


def build_cnn(*, rounding: str = "half_up", w_bits: int = 6, a_bits: int = 6, bias: str = "acc",
              final: str = "keep", seed: int = 0, channels: int = 4, hw: int = 7) -> nn.Sequential:
    """QuantInput, conv (per-channel weights, stride 2, padding 1), act, conv (per-tensor weights,
    padding 1), act, Flatten, QuantLinear, [signed QuantAct]."""
    g = torch.Generator().manual_seed(seed)
    ins = QuantSpec(8, False, 0.5, rounding=rounding)
    w1 = _weight_spec(w_bits, rounding, channels, True)
    b1 = _bias_spec(bias, ins, w1, rounding)
    c1 = QuantConv2d(2, channels, 3, w1, b1, stride=2, padding=1, bias=b1 is not None)
    a1 = act_spec_after(ins, w1, a_bits, rounding, factor=4)
    w2 = _weight_spec(w_bits, rounding, 3, False)
    b2 = _bias_spec(bias, a1, w2, rounding)
    c2 = QuantConv2d(channels, 3, 2, w2, b2, stride=1, padding=1, bias=b2 is not None)
    a2 = act_spec_after(a1, w2, a_bits, rounding, factor=4)
    side1 = (hw + 2 - 3) // 2 + 1
    side2 = side1 + 2 - 2 + 1
    w3 = _weight_spec(w_bits, rounding, 5, False)
    b3 = _bias_spec(bias, a2, w3, rounding)
    fc = QuantLinear(3 * side2 * side2, 5, w3, b3, bias=b3 is not None)
    for m, bs in ((c1, b1), (c2, b2), (fc, b3)):
        _init_weight(m.weight, m.weight_spec, g, small_codes=2)
        if bs is not None:
            _init_bias(m.bias, bs, g, _bias_codes(bias), _bias_aligned(bias))
    layers: list[nn.Module] = [QuantInput(ins), c1, QuantAct(a1), c2, QuantAct(a2), nn.Flatten(), fc]
    if final == "signed":
        layers.append(QuantAct(act_spec_after(a2, w3, a_bits, rounding, signed=True)))
    return nn.Sequential(*layers).double()


def make_inputs(shape, in_spec: QuantSpec, g: torch.Generator, max_code: int = 5) -> torch.Tensor:
    """Inputs on the input grid (small codes), exact input-quantizer ties (k + 1/2) s, random reals
    and some values outside the representable range."""
    s = in_spec.scale[0]
    codes = torch.randint(0, max_code + 1, shape, generator=g).double()
    kind = torch.randint(0, 10, shape, generator=g)
    tie = codes + 0.5
    rnd = torch.rand(shape, generator=g, dtype=torch.float64) * (max_code + 1)
    lo_out = -torch.rand(shape, generator=g, dtype=torch.float64) * 10 - 0.6
    hi_out = torch.full(shape, float(in_spec.qmax - in_spec.zero_point[0]) + 0.5 + 3, dtype=torch.float64)
    x = torch.where(kind < 4, codes, torch.where(kind < 7, tie, torch.where(kind < 9, rnd, lo_out)))
    x = torch.where(torch.rand(shape, generator=g) < 0.01, hi_out, x)
    return x * s
