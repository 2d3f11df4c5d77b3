"""Tiny random QNNs whose hidden units are not saturated around a chosen input point, and an
exhaustive oracle for properties over small input boxes (independent of the verifier's code)."""
from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import torch
from torch import nn

from qa_lirpa import QuantSpec
from qa_lirpa.nn import QuantAct, QuantConv2d, QuantInput, QuantLinear, accumulator_bias_spec, integer_codes


def _wspec(rounding: str, channels: int) -> QuantSpec:
    if channels:
        return QuantSpec(6, True, [2.0 ** -(5 + i % 3) for i in range(channels)], axis=0, rounding=rounding)
    return QuantSpec(6, True, 2.0 ** -5, rounding=rounding)


def _centre_bias(layer: nn.Module, h: torch.Tensor, target: torch.Tensor) -> None:
    """Set the bias so that the pre-activation at ``h`` is about ``target``."""
    with torch.no_grad():
        layer.bias.zero_()
        pre = layer(h)
        pre = pre.mean(dim=(0, 2, 3)) if pre.dim() == 4 else pre[0]
        layer.bias.copy_(target - pre)


def tiny_mlp(n_in: int, hidden: list[int], n_out: int, centre: torch.Tensor, rounding: str = "half_up",
             seed: int = 0, per_channel: bool = False, out_act: bool = False, in_scale: float = 1.0) -> nn.Sequential:
    """QuantInput(8 bit, scale ``in_scale``) -> (QuantLinear, QuantAct(6 bit, scale 1/2))* ->
    QuantLinear [-> signed QuantAct], float64, biased so that units are active around ``centre``."""
    g = torch.Generator().manual_seed(seed)
    ins = QuantSpec(8, False, in_scale, rounding=rounding)
    act = QuantSpec(6, False, 0.5, rounding=rounding)
    layers: list[nn.Module] = [QuantInput(ins)]
    prev, h = ins, (centre.reshape(1, -1).double() / in_scale).round() * in_scale
    sizes = [n_in] + list(hidden) + [n_out]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        ws = _wspec(rounding, b if per_channel else 0)
        lin = QuantLinear(a, b, ws, accumulator_bias_spec(prev, ws)).double()
        with torch.no_grad():
            lin.weight.copy_((torch.rand(b, a, generator=g, dtype=torch.float64) - 0.5) * (1.2 if i == 0 else 0.6))
        last = i == len(sizes) - 2
        target = (torch.rand(b, generator=g, dtype=torch.float64) - 0.5) * 3 if last else \
            (0.25 + 0.5 * torch.rand(b, generator=g, dtype=torch.float64)) * 31.5
        _centre_bias(lin, h, target)
        layers.append(lin)
        if not last:
            layers.append(QuantAct(act))
            prev = act
        h = nn.Sequential(*layers[1:]).double()(layers[0](centre.reshape(1, -1).double()))
    if out_act:
        layers.append(QuantAct(QuantSpec(6, True, 0.25, rounding=rounding)))
    return nn.Sequential(*layers).double().eval()


def tiny_cnn(centre: torch.Tensor, rounding: str = "half_up", seed: int = 0) -> nn.Sequential:
    """Input 1x4x4 (8 bit, scale 1) -> conv 3x3 pad 1 (2 ch, per-channel) -> act -> conv 2x2 stride 2
    (2 ch) -> act -> flatten -> linear 3."""
    g = torch.Generator().manual_seed(seed)
    ins = QuantSpec(8, False, 1.0, rounding=rounding)
    act = QuantSpec(6, False, 0.5, rounding=rounding)
    w1, w2 = _wspec(rounding, 2), _wspec(rounding, 0)
    c1 = QuantConv2d(1, 2, 3, w1, accumulator_bias_spec(ins, w1), padding=1).double()
    c2 = QuantConv2d(2, 2, 2, w2, accumulator_bias_spec(act, w2), stride=2).double()
    fc = QuantLinear(8, 3, w2, accumulator_bias_spec(act, w2)).double()
    layers: list[nn.Module] = [QuantInput(ins)]
    x = centre.reshape(1, 1, 4, 4).double()
    for mod, scale, target in [(c1, 0.15, 15.0), (c2, 0.3, 15.0), (fc, 0.3, 0.0)]:
        with torch.no_grad():
            mod.weight.copy_((torch.rand(mod.weight.shape, generator=g, dtype=torch.float64) - 0.5) * 2 * scale)
        h = nn.Sequential(*layers)(x)
        _centre_bias(mod, h, torch.full((mod.weight.shape[0],), target, dtype=torch.float64))
        layers.append(mod)
        if mod is not fc:
            layers.append(QuantAct(act))
        if mod is c2:
            layers.append(nn.Flatten())
    return nn.Sequential(*layers).double().eval()


def exact_outputs(model: nn.Module, x: torch.Tensor, unique: bool = False) -> list[list[Fraction]]:
    """Exact rational outputs of the integer semantics at real inputs ``x`` ``[N, ...]`` (only the
    distinct ones if ``unique``)."""
    t = integer_codes(model, x.double())
    v = t.values.reshape(t.values.shape[0], -1)
    v = (torch.unique(v, dim=0) if unique else v).tolist()
    per = len(t.scale) > 1
    return [[(q - t.zero_point[j if len(t.zero_point) > 1 else 0]) * t.scale[j if per else 0]
             for j, q in enumerate(row)] for row in v]


def violates(y: list[Fraction], disjuncts) -> bool:
    """Exactly: some disjunct has ``mat @ y <= rhs`` on every row."""
    for mat, rhs in disjuncts:
        if all(sum(Fraction(float(c)) * v for c, v in zip(row, y)) <= Fraction(float(b))
               for row, b in zip(np.asarray(mat), np.asarray(rhs))):
            return True
    return False


def real_grid(lower: np.ndarray, upper: np.ndarray, step: float) -> torch.Tensor:
    """All points ``lower + k * step`` (and the upper ends) of the box, flat ``[N, D]``."""
    axes = [np.unique(np.append(np.arange(lo, hi, step), hi)) for lo, hi in zip(lower, upper)]
    return torch.tensor(list(itertools.product(*axes)), dtype=torch.float64)


def oracle(model: nn.Module, specs, shape: tuple[int, ...], step: float = 0.25) -> bool:
    """True iff some real point of a dense grid (finer than the input quantizer's step) in some
    box violates that box's property under the exact semantics."""
    for s in specs:
        pts = real_grid(s.lower, s.upper, step)
        ys = exact_outputs(model, pts.reshape((-1,) + shape), unique=True)
        if any(violates(y, s.disjuncts) for y in ys):
            return True
    return False
