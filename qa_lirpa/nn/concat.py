"""Concatenation of quantized tensors that share one format (per-tensor scale and zero point):
the codes are concatenated (exact); bounds concatenate the inputs' bounds."""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ..graph.registry import OpDef, register
from .tensors import IntBox, IntTensor


class QuantConcat(nn.Module):
    """``torch.cat(inputs, dim)``; the inputs must share one scale and zero point (per tensor)."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        if dim == 0:
            raise ValueError("QuantConcat: cannot concatenate along the batch dimension")
        self.dim = int(dim)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


def _same_format(xs, what: str) -> None:
    first = xs[0]
    for x in xs:
        if len(set(x.scale)) != 1 or len(set(x.zero_point)) != 1:
            raise ValueError(f"{what}: inputs must be quantized per tensor")
        if x.scale[0] != first.scale[0] or x.zero_point[0] != first.zero_point[0]:
            raise ValueError(f"{what}: inputs must share one scale and zero point "
                             f"({first.scale[0]}/{first.zero_point[0]} vs {x.scale[0]}/{x.zero_point[0]})")


class ConcatOp(OpDef):
    name = "concat"
    types = (QuantConcat,)
    arity = None
    bound_ops = ("BoundConcat",)

    def int_forward(self, m, *xs: IntTensor) -> IntTensor:
        _same_format(xs, "QuantConcat")
        if not all(isinstance(x.values, torch.Tensor) for x in xs):
            raise OverflowError("QuantConcat: values beyond int64")
        return IntTensor(torch.cat([x.values for x in xs], dim=m.dim), xs[0].scale[:1], xs[0].zero_point[:1], 1)

    def interval(self, m, ctx, *boxes: IntBox) -> IntBox:
        _same_format(boxes, "QuantConcat")
        return IntBox(torch.cat([b.lo for b in boxes], dim=m.dim), torch.cat([b.hi for b in boxes], dim=m.dim),
                      boxes[0].scale[:1], boxes[0].zero_point[:1], 1)

    def sensitivity(self, m, ctx, record, g):
        g = g.reshape(record.out_shape)
        sizes = [s[m.dim] for s in record.in_shapes]
        return list(torch.split(g, sizes, dim=m.dim))

    def frozen(self, m, tol: float = 0.0):
        return copy.deepcopy(m)

    def ibp(self, m, *bounds):
        return m(*bounds[0::2]), m(*bounds[1::2])

    def milp(self, m, enc, *xs):
        """The inputs' values in concatenated order (one shared format, as ``int_forward``)."""
        fmt = {enc.per_tensor(x) for x in xs}
        if len(fmt) != 1:
            raise enc.Error(f"{enc.name}: inputs must share one scale and zero point")
        axis = m.dim % (len(xs[0].shape) + 1) - 1
        if axis < 0:
            raise enc.Error(f"{enc.name}: cannot concatenate along the batch dimension")
        parts, start = [], 0
        for x in xs:
            n = len(x.exprs)
            parts.append(np.arange(start, start + n).reshape(x.shape))
            start += n
        try:
            index = np.concatenate(parts, axis=axis)
        except ValueError as e:
            raise enc.Error(f"{enc.name}: {e}") from None
        return enc.gather(xs, index.reshape(-1), index.shape)

    def cpsat(self, m, enc, *xs):
        return self.milp(m, enc, *xs)

    def onnx(self, m, em, *xs):
        e = min(x.state.exp for x in xs)
        bound = max(x.state.bound << (x.state.exp - e) for x in xs)
        return em.op("Concat", list(xs), em.checked(bound, e, xs[0].rank), axis=m.dim)

    def float32(self, m, ctx, *xs):
        return ctx.concatenated(m, *xs)


register(ConcatOp())

__all__ = ["QuantConcat", "ConcatOp"]
