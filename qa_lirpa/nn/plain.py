"""Op definitions of the plain torch layers a QNN may contain: ReLU (on codes: a clamp at the zero
point), Flatten/Unflatten (exact reshapes of per-tensor quantized values), Identity and Dropout
(the identity at evaluation)."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..graph.registry import OpDef, register
from ..quant import intmath
from .affine import _square_input
from .quantizers import MonotoneOp
from .tensors import IntBox, IntTensor, per_tensor


def _int64(x: IntTensor, what: str) -> torch.Tensor:
    if not isinstance(x.values, torch.Tensor):
        raise OverflowError(f"{what}: accumulator values beyond int64 (requantize first)")
    return x.values


class ReluOp(MonotoneOp):
    """ReLU of the real value: on codes, ``max(q, z)`` per channel (exact)."""

    name = "relu"
    types = (nn.ReLU,)
    bound_ops = ("BoundRelu",)

    def int_forward(self, m, x: IntTensor) -> IntTensor:
        v = _int64(x, "ReLU")
        z = intmath._channel_view(x.zero_point, v.dim(), x.axis, v.device)
        return IntTensor(torch.maximum(v, z), x.scale, x.zero_point, x.axis)

    def milp(self, m, enc, x):
        return enc.relu(x)

    def cpsat(self, m, enc, x):
        return enc.relu(x)

    def onnx(self, m, em, x):
        return em.op("Relu", [x], x.state)

    def float32(self, m, ctx, x):
        return ctx.relu(x)


class ReshapeOp(OpDef):
    """Shape-only ops (exact on per-tensor quantized values): the layer's own forward is applied to
    the codes (and to both ends of a box)."""

    bound_ops = ("BoundReshape",)

    def int_forward(self, m, x: IntTensor) -> IntTensor:
        per_tensor(x, self.name)
        v = m(_int64(x, self.name))
        return IntTensor(v, x.scale[:1], x.zero_point[:1], axis=1)

    def interval(self, m, ctx, box: IntBox) -> IntBox:
        per_tensor(box, self.name)
        return IntBox(m(box.lo), m(box.hi), box.scale[:1], box.zero_point[:1], 1)

    def sensitivity(self, m, ctx, record, g):
        return [g.reshape(record.in_shapes[0])]

    def frozen(self, m, tol: float = 0.0):
        return copy.deepcopy(m)

    def ibp(self, m, lo, hi):
        return m(lo), m(hi)

    def out_shape(self, m, shape: tuple, name: str, error=ValueError) -> tuple:
        """The output shape (no batch dimension) for an input of ``shape``: the layer's own forward
        on an empty tensor (batch 2, so an op that reshapes the batch dimension is caught)."""
        out = m(torch.empty((2,) + tuple(shape)))
        if out.shape[0] != 2:
            raise error(f"{name}: reshaping the batch dimension is not supported")
        return tuple(int(v) for v in out.shape[1:])

    def milp(self, m, enc, x):
        """The flat (C-order) list of values is unchanged; only the shape changes."""
        return enc.reshape(x, self.out_shape(m, x.shape, enc.name, enc.Error))

    def cpsat(self, m, enc, x):
        return enc.reshape(x, self.out_shape(m, x.shape, enc.name, enc.Error))

    def float32(self, m, ctx, x):
        return ctx.reshaped(m, x)


class FlattenOp(ReshapeOp):
    name = "flatten"
    types = (nn.Flatten,)

    def onnx(self, m, em, x):
        if m.start_dim != 1 or m.end_dim != -1:
            raise em.error("only Flatten(start_dim=1, end_dim=-1) is supported")
        return em.op("Flatten", [x], em.state(x.state.bound, x.state.exp, 2), axis=1)


class UnflattenOp(ReshapeOp):
    name = "unflatten"
    types = (nn.Unflatten,)


class IdentityOp(OpDef):
    """Identity and Dropout (evaluation): the value passes unchanged."""

    name = "identity"
    types = (nn.Identity, nn.Dropout)

    def int_forward(self, m, x):
        return x

    def interval(self, m, ctx, box):
        return box

    def sensitivity(self, m, ctx, record, g):
        return [g]

    def frozen(self, m, tol: float = 0.0):
        return nn.Identity()

    def ibp(self, m, lo, hi):
        return lo, hi

    def milp(self, m, enc, x):
        return x

    def cpsat(self, m, enc, x):
        return x

    def onnx(self, m, em, x):
        return x

    def float32(self, m, ctx, x):
        return x


class FloatAffineOp(OpDef):
    """A float ``nn.Linear``/``nn.Conv2d`` (frozen bodies, float models imported from ONNX): no
    exact integer semantics; bounds and attacks run it as it is."""

    name = "float affine"
    weighted = True
    bound_ops = ("BoundLinear", "BoundConv")

    def frozen(self, m, tol: float = 0.0):
        return copy.deepcopy(m)

    def input_shape(self, m, n_inputs: int):
        return _square_input(m, n_inputs) if hasattr(m, "in_channels") else (n_inputs,)

    def float32(self, m, ctx, x):
        return ctx.float_affine(m, x, *self.function(m))

    def function(self, m):
        """``(lin, flat)``: ``lin(x, weight, bias)`` computes the layer with the given parameters;
        ``flat``: on ``[N, features]`` inputs. ``(None, False)`` where it has no such form."""
        return None, False


class FloatLinearOp(FloatAffineOp):
    name = "float linear"
    types = (nn.Linear,)

    def function(self, m):
        return F.linear, True


class FloatConvOp(FloatAffineOp):
    name = "float conv"
    types = (nn.Conv2d,)

    def function(self, m):
        if getattr(m, "padding_mode", "zeros") != "zeros":
            return None, False
        return (lambda x, w, b: F.conv2d(x, w, b, m.stride, m.padding, m.dilation, m.groups)), False


for _op in (ReluOp(), FlattenOp(), UnflattenOp(), IdentityOp(), FloatLinearOp(), FloatConvOp()):
    register(_op)

__all__ = ["ReluOp", "ReshapeOp", "FlattenOp", "UnflattenOp", "IdentityOp", "FloatAffineOp", "FloatLinearOp",
           "FloatConvOp"]
