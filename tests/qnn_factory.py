"""Small random QNNs for tests (power-of-two scales so float64 fake quant is exact)."""
from __future__ import annotations

import torch
from torch import nn

from qa_lirpa import QuantSpec
from qa_lirpa.nn import QuantAct, QuantConv2d, QuantInput, QuantLinear, accumulator_bias_spec


def specs(rounding: str = "half_up", w_bits: int = 6, a_bits: int = 6, per_channel: int = 0):
    """Input (8-bit pixels), weight and activation specs."""
    ins = QuantSpec(8, False, 1.0, rounding=rounding)
    if per_channel:
        scales = [2.0 ** -(w_bits - 1 + (i % 3)) for i in range(per_channel)]
        ws = QuantSpec(w_bits, True, scales, axis=0, rounding=rounding)
    else:
        ws = QuantSpec(w_bits, True, 2.0 ** -(w_bits - 1), rounding=rounding)
    act = QuantSpec(a_bits, False, 2.0 ** -1, rounding=rounding)
    return ins, ws, act


def mlp(sizes: list[int], rounding: str = "half_up", seed: int = 0, per_channel: bool = False,
        out_act: bool = False, w_bits: int = 6, a_bits: int = 6) -> nn.Sequential:
    """QuantInput, (QuantLinear, QuantAct)*, QuantLinear [, signed QuantAct], in float64."""
    torch.manual_seed(seed)
    ins, _, act = specs(rounding, w_bits, a_bits)
    layers: list[nn.Module] = [QuantInput(ins)]
    prev = ins
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        _, ws, _ = specs(rounding, w_bits, a_bits, per_channel=b if per_channel else 0)
        lin = QuantLinear(a, b, ws, accumulator_bias_spec(prev, ws))
        nn.init.uniform_(lin.weight, -0.5, 0.5)
        nn.init.uniform_(lin.bias, -20.0, 20.0)
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(QuantAct(act))
            prev = act
    if out_act:
        layers.append(QuantAct(QuantSpec(a_bits, True, 2.0 ** -1, rounding=rounding)))
    return nn.Sequential(*layers).double()


def cnn(rounding: str = "half_up", seed: int = 0, hw: int = 6, channels: int = 3) -> nn.Sequential:
    """QuantInput, conv (per-channel, padding), act, conv stride 2, act, flatten, linear."""
    torch.manual_seed(seed)
    ins, _, act = specs(rounding)
    _, wpc, _ = specs(rounding, per_channel=channels)
    _, ws, _ = specs(rounding)
    c1 = QuantConv2d(1, channels, 3, wpc, accumulator_bias_spec(ins, wpc), padding=1)
    c2 = QuantConv2d(channels, channels, 3, ws, accumulator_bias_spec(act, ws), stride=2)
    side = (hw - 3) // 2 + 1
    fc = QuantLinear(channels * side * side, 3, ws, accumulator_bias_spec(act, ws))
    for m in (c1, c2, fc):
        nn.init.uniform_(m.weight, -0.5, 0.5)
        nn.init.uniform_(m.bias, -8.0, 8.0)
    return nn.Sequential(QuantInput(ins), c1, QuantAct(act), c2, QuantAct(act), nn.Flatten(), fc).double()
