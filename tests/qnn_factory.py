"""Small random QNNs for tests (power-of-two scales so float64 fake quant is exact)."""
from __future__ import annotations

import torch
from torch import nn

from qa_lirpa import QuantSpec
from qa_lirpa.nn import QuantAct, QuantConv2d, QuantInput, QuantLinear, accumulator_bias_spec
from qa_lirpa.quant.spec import ROUNDING_MODES

#: every rounding mode of QuantSpec; random tests cycle through them with :func:`rounding_for`
ROUNDINGS = ROUNDING_MODES


def rounding_for(i: int) -> str:
    """The rounding mode of the ``i``-th random case (cycles through all five)."""
    return ROUNDINGS[i % len(ROUNDINGS)]


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


# ----- small random DAG QNNs (residual adds, pools, concat, folded BatchNorm) -----------------
DAG_KINDS = ("residual_mlp", "residual_conv", "avgpool", "concat", "maxpool", "bn_conv")


def _init(mods, seed_gen: torch.Generator, w: float = 0.5, b: float = 8.0) -> None:
    for m in mods:
        with torch.no_grad():
            m.weight.uniform_(-w, w, generator=seed_gen)
            if m.bias is not None:
                m.bias.uniform_(-b, b, generator=seed_gen)


def dag_qnn(kind: str, seed: int = 0, rounding: str = "half_up", n_out: int = 3):
    """A small random QNN of ``kind`` (see :data:`DAG_KINDS`) as a float64 QNNGraph in eval mode,
    with ``input_shape`` set: MLP kinds take 3 inputs, conv kinds ``[1, 4, 4]``. Power-of-two
    scales; weights/biases random (``seed``)."""
    from qa_lirpa.nn import (QNNGraph, QuantAdd, QuantAvgPool2d, QuantConcat, QuantConvBN2d)

    g = torch.Generator().manual_seed(seed)
    ins, ws, act = specs(rounding, w_bits=5, a_bits=5)
    b_in, b_act = accumulator_bias_spec(ins, ws), accumulator_bias_spec(act, ws)
    out_spec = QuantSpec(8, True, 2.0 ** -2, rounding=rounding)
    if kind == "residual_mlp":
        l1, l2, l3 = QuantLinear(3, 4, ws, b_in), QuantLinear(4, 4, ws, b_act), QuantLinear(4, n_out, ws, b_act)
        _init([l1, l2, l3], g)
        nodes = [("q", QuantInput(ins), ["input"]), ("l1", l1, ["q"]), ("a1", QuantAct(act), ["l1"]),
                 ("l2", l2, ["a1"]), ("add", QuantAdd(act), ["a1", "l2"]), ("l3", l3, ["add"])]
        shape = (3,)
    elif kind == "concat":
        l1, la, lb = QuantLinear(3, 3, ws, b_in), QuantLinear(3, 2, ws, b_act), QuantLinear(3, 2, ws, b_act)
        l3 = QuantLinear(4, n_out, ws, b_act)
        _init([l1, la, lb, l3], g)
        nodes = [("q", QuantInput(ins), ["input"]), ("l1", l1, ["q"]), ("a1", QuantAct(act), ["l1"]),
                 ("la", la, ["a1"]), ("aa", QuantAct(act), ["la"]), ("lb", lb, ["a1"]),
                 ("ab", QuantAct(act), ["lb"]), ("cat", QuantConcat(1), ["aa", "ab"]), ("l3", l3, ["cat"])]
        shape = (3,)
    else:
        c = 2
        conv_cls = QuantConvBN2d if kind == "bn_conv" else QuantConv2d
        c1 = conv_cls(1, c, 3, ws, b_in, padding=1)
        _init([c1], g)
        if kind == "bn_conv":
            with torch.no_grad():
                c1.bn.weight.uniform_(0.5, 1.5, generator=g)
                c1.bn.bias.uniform_(-1, 1, generator=g)
                c1.bn.running_mean.uniform_(-2, 2, generator=g)
                c1.bn.running_var.uniform_(0.5, 2.0, generator=g)
        nodes = [("q", QuantInput(ins), ["input"]), ("c1", c1, ["q"]), ("a1", QuantAct(act), ["c1"])]
        last = "a1"
        if kind == "residual_conv":
            c2 = QuantConv2d(c, c, 3, ws, b_act, padding=1)
            _init([c2], g)
            nodes += [("c2", c2, ["a1"]), ("add", QuantAdd(act), ["a1", "c2"]),
                      ("pool", QuantAvgPool2d(2), ["add"]), ("a2", QuantAct(act), ["pool"])]
            last = "a2"
        elif kind == "avgpool":
            nodes += [("pool", QuantAvgPool2d(2), ["a1"]), ("a2", QuantAct(act), ["pool"])]
            last = "a2"
        elif kind == "maxpool":
            nodes += [("pool", nn.MaxPool2d(2), ["a1"])]
            last = "pool"
        elif kind == "bn_conv":
            nodes += [("pool", QuantAvgPool2d(2), ["a1"]), ("a2", QuantAct(act), ["pool"])]
            last = "a2"
        else:
            raise ValueError(f"dag_qnn: unknown kind {kind!r}")
        fc = QuantLinear(c * 2 * 2, n_out, ws, b_act)
        _init([fc], g)
        nodes += [("flat", nn.Flatten(), [last]), ("fc", fc, ["flat"])]
        shape = (1, 4, 4)
    nodes.append(("out", QuantAct(out_spec), [nodes[-1][0]]))
    model = QNNGraph(nodes).double().eval()
    model.input_shape = shape
    return model
