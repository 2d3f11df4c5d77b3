"""The quantized residual Add: ``clamp(R((real(a) + real(b)) / s) + z)`` with its own format.

Two quantized (or accumulator) tensors of the same shape are added exactly at their common scale
and requantized with the op's :class:`~qa_lirpa.quant.QuantSpec`; unsigned with zero point 0 the
requantization clamps at 0 (the ReLU after a ResNet block). Monotone non-decreasing in each input,
so the interval image of two boxes is the image of their lower ends and of their upper ends.
"""
from __future__ import annotations

import copy
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from ..graph.registry import OpDef, register
from ..quant import intmath
from ..quant.functions import fake_quant
from ..quant.spec import QuantSpec
from .quantizers import chord_slope, enveloped_requant
from .tensors import IntBox, IntTensor, requantize


class QuantAdd(nn.Module):
    """``fake_quant(a + b, spec)``: a residual Add with its own requantization.

    ``tol`` (steps, default 0) marks a requantization known only within ``tol`` steps (bound
    graphs of imported models); the value is unchanged, the bound operators cover it.
    """

    float_mode = False   # see qa_lirpa.nn.set_float_mode

    def __init__(self, spec: QuantSpec, tol: float = 0.0) -> None:
        super().__init__()
        self.spec = spec
        self.tol = float(tol)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.float_mode:
            s = a + b
            return F.relu(s) if self.is_relu() else s
        return fake_quant(a + b, self.spec, tol=self.tol)

    def is_relu(self) -> bool:
        return not self.spec.signed and all(z == 0 for z in self.spec.zero_points())

    def extra_repr(self) -> str:
        return repr(self.spec)


def _channel_scales(x: IntTensor | IntBox, channels: int) -> list[Fraction]:
    return x.scale * channels if len(x.scale) == 1 else list(x.scale)


def exact_sum(a_vals: torch.Tensor, a_scale: list[Fraction], b_vals: torch.Tensor, b_scale: list[Fraction],
              axis: int = 1) -> tuple[torch.Tensor, list[Fraction]]:
    """``a + b`` of centred integer values at their per-channel common scale: returns the integer
    sum (int64) and its scales. OverflowError where int64 could overflow."""
    channels = max(len(a_scale), len(b_scale))
    sa = a_scale * channels if len(a_scale) == 1 else a_scale
    sb = b_scale * channels if len(b_scale) == 1 else b_scale
    common = [intmath.common_scale([x, y]) for x, y in zip(sa, sb)]
    ma, mb = [int(x / c) for x, c in zip(sa, common)], [int(y / c) for y, c in zip(sb, common)]
    bound = intmath.max_abs(a_vals) * max(ma) + intmath.max_abs(b_vals) * max(mb)
    if bound >= (1 << 62):
        raise OverflowError("QuantAdd: the sum at the common scale does not fit in int64")
    if len(set(common)) == 1:
        return a_vals * ma[0] + b_vals * mb[0], common[:1]
    nd = a_vals.dim()
    va = intmath._channel_view(ma, nd, axis, a_vals.device)
    vb = intmath._channel_view(mb, nd, axis, a_vals.device)
    return a_vals * va + b_vals * vb, common


def _int64(x: IntTensor) -> torch.Tensor:
    c = x.centered()
    if not isinstance(c, torch.Tensor):
        raise OverflowError("QuantAdd: input values beyond int64 (requantize first)")
    return c


class LooseAdd(nn.Module):
    """The attack form of a QuantAdd: its value, with the gradient of ``a + b``."""

    def __init__(self, add: QuantAdd) -> None:
        super().__init__()
        self.add = add

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        s = a + b
        return s + (self.add(a, b) - s).detach()


class QuantAddOp(OpDef):
    name = "add"
    types = (QuantAdd,)
    arity = 2
    quantizer = True
    chord = True
    nonlinear = True
    bound_ops = ("BoundAdd", "BoundFakeQuant")

    def _sum(self, a: IntTensor, b: IntTensor) -> IntTensor:
        if a.values.shape != b.values.shape:
            raise ValueError(f"QuantAdd: inputs of shapes {tuple(a.values.shape)} and {tuple(b.values.shape)}")
        if (len(a.scale) > 1 and a.axis != 1) or (len(b.scale) > 1 and b.axis != 1):
            raise ValueError("QuantAdd: per-channel inputs must be quantized along axis 1")
        v, s = exact_sum(_int64(a), a.scale, _int64(b), b.scale)
        return IntTensor(v, s, [0], 1)

    def int_forward(self, m, a: IntTensor, b: IntTensor) -> IntTensor:
        return requantize(self._sum(a, b), m.spec)

    def sum_box(self, a: IntBox, b: IntBox) -> IntBox:
        """The exact box of ``a + b`` (before requantization)."""
        (al, ah), (bl, bh) = a.ends(), b.ends()
        return IntBox.of(self._sum(al, bl), self._sum(ah, bh))

    def interval(self, m, ctx, a: IntBox, b: IntBox) -> IntBox:
        s = self.sum_box(a, b)
        tol = ctx.tolerance()
        if tol > 0:
            return enveloped_requant(s, m.spec, tol)
        lo, hi = s.ends()
        return IntBox.of(requantize(lo, m.spec), requantize(hi, m.spec))

    def slope(self, m, boxes_in, box_out) -> torch.Tensor:
        return chord_slope(self.sum_box(*boxes_in), box_out)

    def sensitivity(self, m, ctx, record, g):
        pulled = g.reshape(record.slope.shape) * record.slope
        return [pulled, pulled]

    def frozen(self, m, tol: float = 0.0):
        out = copy.deepcopy(m)
        out.tol = max(float(tol), m.tol)
        return out

    def loose(self, m):
        return LooseAdd(m)

    def ibp(self, m, lo_a, hi_a, lo_b, hi_b):
        return m(lo_a, lo_b), m(hi_a, hi_b)

    def milp(self, m, enc, a, b):
        """The exact sum at the common scale, then the requantization."""
        return enc.requant(m.spec, enc.add(a, b))

    def cpsat(self, m, enc, a, b):
        return enc.requant(m.spec, enc.add(a, b))

    def milp_refusal(self, m) -> str:
        if m.tol > 0:
            return "float32 rounding has no exact encoding"
        return super().milp_refusal(m)

    def onnx(self, m, em, a, b):
        """``Add`` of the two dequantized inputs (exact in float32, checked), then the quantizer."""
        if m.tol:
            raise em.error("a requantization known only within a tolerance has no exact ONNX form")
        return em.quantize(em.add(a, b), m.spec, list(m.spec.scale))

    def float32(self, m, ctx, a, b):
        return ctx.requantized(ctx.sum(a, b), m.spec)


register(QuantAddOp())

__all__ = ["QuantAdd", "QuantAddOp", "exact_sum"]
