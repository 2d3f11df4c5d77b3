"""Quantized affine layers (:class:`QuantLinear`, :class:`QuantConv2d`) and their op definition.

Exact semantics: the integer dot product of centred input codes and weight codes plus the bias at
a common scale (:meth:`_QuantWeighted.affine_scales`), no rounding. Interval image: with
``c = lo + hi`` and ``r = hi - lo`` (centred codes), ``W c - |W| r = 2 (W+ lo + W- hi)`` and
``W c + |W| r = 2 (W+ hi + W- lo)`` are the doubled exact accumulator bounds; both products run in
float64 after checking that every partial sum stays below 2^53, so float64 is exact
(:func:`affine_interval`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..graph.registry import OpDef, register
from ..quant import intmath
from ..quant.functions import fake_quant, quantize
from ..quant.spec import QuantSpec
from .tensors import IntBox, IntTensor

_INT64_GUARD = 1 << 62
_F64_EXACT = 1 << 53


class _QuantWeighted:
    """Shared parts of quantized Linear and Conv2d (weight per tensor or per output channel)."""

    weight: nn.Parameter
    bias: nn.Parameter | None
    weight_spec: QuantSpec
    bias_spec: QuantSpec | None

    def _check_specs(self) -> None:
        ws = self.weight_spec
        if ws.per_channel and (ws.axis % self.weight.dim() != 0 or ws.channels != self.weight.shape[0]):
            raise ValueError(f"{type(self).__name__}: per-channel weight scales must be along axis 0 "
                             f"with {self.weight.shape[0]} entries")
        bs = self.bias_spec
        if bs is not None and bs.per_channel and bs.channels != self.weight.shape[0]:
            raise ValueError(f"{type(self).__name__}: per-channel bias scales need {self.weight.shape[0]} entries")

    float_mode = False   # see set_float_mode

    def effective_weight(self) -> torch.Tensor:
        """The real weight before quantization (a BatchNorm-folded layer folds it in here)."""
        return self.weight

    def effective_bias(self) -> torch.Tensor | None:
        """The real bias before quantization (None without one)."""
        return self.bias

    def _bias_format(self) -> QuantSpec:
        return self.bias_spec.replace(axis=0) if self.bias_spec.per_channel else self.bias_spec

    def qweight(self) -> torch.Tensor:
        if self.float_mode:
            return self.effective_weight()
        return fake_quant(self.effective_weight(), self.weight_spec)

    def qbias(self) -> torch.Tensor | None:
        b = self.effective_bias()
        if b is None or self.bias_spec is None or self.float_mode:
            return b
        return fake_quant(b, self._bias_format())

    def bias_codes(self) -> tuple[torch.Tensor, list[Fraction]] | None:
        """``(centred integer bias codes [C_out] int64, their scale per output channel)``; None
        without a bias. ValueError for a float bias (no exact integer semantics)."""
        b = self.effective_bias()
        if b is None:
            return None
        if self.bias_spec is None:
            raise ValueError(f"{type(self).__name__}: a float bias has no exact integer semantics; give a bias_spec")
        bs = self._bias_format()
        bq = quantize(b.detach().cpu(), bs) - torch.tensor(bs.zero_points(), dtype=torch.int64)
        scales = bs.scale_fractions()
        return bq, scales * int(bq.numel()) if len(scales) == 1 else scales

    def weight_codes(self) -> torch.Tensor:
        """Integer weight codes minus zero point (int64)."""
        spec = self.weight_spec
        q = quantize(self.effective_weight().detach(), spec)
        z = torch.tensor(spec.zero_points(), dtype=torch.int64).reshape([-1] + [1] * (q.dim() - 1))
        return q - (z if spec.per_channel else z.reshape(()))

    def affine_scales(self, s_in: Fraction) -> tuple[list[Fraction], list[int], torch.Tensor | None, list[int]]:
        """The exact integer plan of this layer for an input at scale ``s_in``.

        Returns ``(scales, m_acc, bias_codes, m_b)``: output channel ``c`` is
        ``acc[c] * m_acc[c] + bias_codes[c] * m_b[c]`` at scale ``scales[c]``, where ``acc`` is the
        integer dot product of centred input codes and weight codes. The scale is the common scale
        of ``s_in * s_w[c]`` and the bias scale, so both terms are integers. Without a bias,
        ``bias_codes`` is None and ``m_acc`` is all ones.
        """
        out_ch = self.weight.shape[0]
        w_scales = self.weight_spec.scale_fractions()
        acc_scales = [s_in * w for w in (w_scales * out_ch if len(w_scales) == 1 else w_scales)]
        codes = self.bias_codes()
        if codes is None:
            return acc_scales, [1] * out_ch, None, [0] * out_ch
        bq, b_scales = codes
        common = [intmath.common_scale([a, b]) for a, b in zip(acc_scales, b_scales)]
        m_acc = [int(a / c) for a, c in zip(acc_scales, common)]
        m_b = [int(b / c) for b, c in zip(b_scales, common)]
        return common, m_acc, bq, m_b

    def _int_affine(self, x: IntTensor, op, fan_in: int, **kw) -> IntTensor:
        s_in = x.per_tensor_scale(type(self).__name__)
        acc = intmath.exact_float_matmul(op, x.centered(), self.weight_codes(), fan_in, **kw)
        scales, m_acc, bq, m_b = self.affine_scales(s_in)
        if bq is None:
            return IntTensor(acc, scales, [0], axis=1)
        return IntTensor(_scaled_sum(acc, m_acc, bq, m_b), scales, [0], axis=1)


def _scaled_sum(acc: torch.Tensor, m_acc: list[int], bq: torch.Tensor, m_b: list[int]):
    """``acc * m_acc[c] + bq[c] * m_b[c]`` along axis 1, exactly: int64 when no value can
    overflow, else a numpy array of Python ints (scales that are not powers of two)."""
    shape = [1] * acc.dim()
    shape[1] = len(m_acc)
    bound = intmath.max_abs(acc) * max(m_acc) + intmath.max_abs(bq) * max(m_b)
    if bound >= (1 << 62):
        ma = intmath._object_view(m_acc, acc.dim(), 1)
        bb = intmath._object_view([int(b) * m for b, m in zip(bq.tolist(), m_b)], acc.dim(), 1)
        return intmath.to_object(acc) * ma + bb
    ma = torch.tensor(m_acc, dtype=torch.int64).reshape(shape)
    bb = (bq * torch.tensor(m_b, dtype=torch.int64)).reshape(shape)
    return acc * ma + bb


class QuantLinear(nn.Linear, _QuantWeighted):
    """Linear layer with fake-quantized weight (per tensor or per output channel) and bias.

    ``bias_spec=None`` keeps a float bias (no exact integer semantics); use
    :func:`accumulator_bias_spec` for the usual int32 bias at scale ``s_in * s_w``.
    """

    def __init__(self, in_features: int, out_features: int, weight_spec: QuantSpec,
                 bias_spec: QuantSpec | None = None, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.weight_spec = weight_spec
        self.bias_spec = bias_spec
        self._check_specs()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.qweight(), self.qbias())

    def functional(self) -> tuple[Callable, dict, int]:
        """``(F.linear, {}, fan-in)``: the float op this layer applies to its weights."""
        return F.linear, {}, self.in_features

    def int_forward(self, x: IntTensor) -> IntTensor:
        return self._int_affine(x, F.linear, self.in_features)


class QuantConv2d(nn.Conv2d, _QuantWeighted):
    """Conv2d with fake-quantized weight and bias; zero padding pads the real value 0."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, weight_spec: QuantSpec,
                 bias_spec: QuantSpec | None = None, stride=1, padding=0, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        self.weight_spec = weight_spec
        self.bias_spec = bias_spec
        self._check_specs()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.qweight(), self.qbias(), self.stride, self.padding)

    def functional(self) -> tuple[Callable, dict, int]:
        """``(F.conv2d, stride and padding, fan-in)``: the float op this layer applies."""
        fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        return F.conv2d, {"stride": self.stride, "padding": self.padding}, fan_in

    def int_forward(self, x: IntTensor) -> IntTensor:
        fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        return self._int_affine(x, F.conv2d, fan_in, stride=self.stride, padding=self.padding)


def accumulator_bias_spec(in_spec: QuantSpec, weight_spec: QuantSpec, bits: int = 32) -> QuantSpec:
    """The standard bias format: signed ``bits``-bit at scale ``s_in * s_w`` (per channel if the
    weights are), zero point 0. Then the bias adds to the accumulator without rescaling."""
    if in_spec.per_channel:
        raise ValueError("accumulator_bias_spec: the layer input must be quantized per tensor")
    scales = [in_spec.scale[0] * s for s in weight_spec.scale]
    return QuantSpec(bits=bits, signed=True, scale=scales if len(scales) > 1 else scales[0],
                     axis=0 if len(scales) > 1 else None, rounding=weight_spec.rounding)


@dataclass
class AffinePlan:
    """An affine layer's exact integer data on the propagation device."""

    op: Callable
    kwargs: dict
    fan_in: int
    weight: torch.Tensor       # centered weight codes as float64 (exact: |codes| < 2^53)
    weight_abs: torch.Tensor   # |weight|, float64
    weight_max: int            # max |weight code|
    mult: torch.Tensor         # accumulator multiplier per output channel, int64 [C]
    bias: torch.Tensor | None  # bias at the common scale per output channel, int64 [C]
    scale: list[Fraction]      # scale of the result per output channel (one entry if all equal)


def _op_of(layer: nn.Module) -> tuple[Callable, dict, int]:
    """``(functional, keyword arguments, fan-in)`` of a quantized affine layer."""
    return layer.functional()


def affine_plan(layer: QuantLinear | QuantConv2d, s_in: Fraction, device: torch.device) -> AffinePlan:
    """The integer data of ``layer`` for an input at scale ``s_in``, from the layer's own
    :meth:`affine_scales` (the plan ``integer_forward`` uses)."""
    op, kwargs, fan_in = _op_of(layer)
    codes = layer.weight_codes()
    w, w_max = codes.to(device, torch.float64), intmath.max_abs(codes)
    scales, m_acc, bq, m_b = layer.affine_scales(s_in)
    mult = torch.tensor(m_acc, dtype=torch.int64, device=device)
    bias = None if bq is None else (bq * torch.tensor(m_b, dtype=torch.int64)).to(device)
    return AffinePlan(op, kwargs, fan_in, w, w.abs(), w_max, mult, bias, _collapse(scales))


def _collapse(scales: list[Fraction]) -> list[Fraction]:
    """One entry when all channels share the scale (the same IntTensor semantics, cheaper)."""
    return scales[:1] if len(set(scales)) == 1 else scales


def _exact_matmul(plan: AffinePlan, a: torch.Tensor, w: torch.Tensor, a_max: int) -> torch.Tensor:
    """``op(a, w)`` for int64 ``a`` with ``max|a| <= a_max``, exactly: float64 products and sums of
    integers are exact while every partial sum stays below 2^53, which is checked first (the same
    guard as :func:`qa_lirpa.quant.intmath.exact_float_matmul`, with the weight maximum cached)."""
    bound = a_max * plan.weight_max * max(plan.fan_in, 1)
    if bound >= _F64_EXACT:
        raise OverflowError(f"interval propagation: accumulator bound {bound} >= 2^53; float64 would be inexact")
    return torch.round(plan.op(a.to(torch.float64), w, **plan.kwargs)).to(torch.int64)


def _channel(t: torch.Tensor, ndim: int) -> torch.Tensor:
    return t.reshape([1, -1] + [1] * (ndim - 2))


def affine_interval(plan: AffinePlan, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact bounds of ``acc * mult + bias`` over centered integer inputs in ``[lo, hi]`` (int64)."""
    x_max = max(intmath.max_abs(lo), intmath.max_abs(hi))
    c2 = _exact_matmul(plan, lo + hi, plan.weight, 2 * x_max)
    r2 = _exact_matmul(plan, hi - lo, plan.weight_abs, 2 * x_max)
    acc_lo, acc_hi = torch.div(c2 - r2, 2, rounding_mode="floor"), torch.div(c2 + r2, 2, rounding_mode="floor")
    mult = _channel(plan.mult, acc_lo.dim())
    bias = 0 if plan.bias is None else _channel(plan.bias, acc_lo.dim())
    bound = x_max * plan.weight_max * max(plan.fan_in, 1) * int(plan.mult.max())  # >= max |acc| * mult
    bound += 0 if plan.bias is None else intmath.max_abs(plan.bias)
    if bound >= _INT64_GUARD:
        raise OverflowError("interval propagation: accumulator with bias does not fit in int64")
    return acc_lo * mult + bias, acc_hi * mult + bias


def _square_input(m, n_inputs: int) -> tuple[int, ...]:
    c = m.in_channels
    side = math.isqrt(n_inputs // c) if n_inputs % c == 0 else 0
    if side * side * c != n_inputs:
        raise ValueError(f"cannot infer a square input for {n_inputs} inputs and {c} channels")
    return (c, side, side)


class AffineOp(OpDef):
    """Shared rules of QuantLinear and QuantConv2d (the op reads the layer's own ``affine_scales``
    plan, the one ``int_forward`` uses)."""

    weighted = True

    def int_forward(self, m, x: IntTensor) -> IntTensor:
        return m.int_forward(x)

    def interval(self, m, ctx, box: IntBox) -> IntBox:
        lo_t, hi_t = box.ends()
        s_in = lo_t.per_tensor_scale(type(m).__name__)
        plan = ctx.plan(m, s_in)
        lo, hi = affine_interval(plan, lo_t.centered(), hi_t.centered())
        return IntBox(lo, hi, plan.scale, [0], 1)

    def _float_layer(self, m, bias: bool) -> nn.Module:
        raise NotImplementedError

    def frozen(self, m, tol: float = 0.0) -> nn.Module:
        """A float64 Linear/Conv2d holding ``qweight()``/``qbias()`` (the same function, cheaper to
        run and to bound)."""
        w, b = m.qweight().detach().double(), m.qbias()
        new = self._float_layer(m, b is not None).double()
        with torch.no_grad():
            new.weight.copy_(w)
            if b is not None:
                new.bias.copy_(b.detach().double())
        return new

    # ----- exact encodings (qa_lirpa.exact) -----------------------------------------------------
    def matrix(self, m, in_shape: tuple, name: str, error=ValueError) -> tuple[np.ndarray, np.ndarray, tuple]:
        """The layer as an integer matrix on its flat input of ``in_shape`` (no batch dimension):
        ``(weight codes [out, in] int64, output channel of each row, output shape)``; ``error``
        (an exception class) for an input of the wrong shape, its message led by ``name``."""
        raise NotImplementedError

    def milp(self, m, enc, x):
        """``acc = m_acc * (W (x - z)) + m_b * b`` of the layer's own plan (:meth:`affine_scales`)."""
        return enc.affine(x, self.matrix(m, x.shape, enc.name, enc.Error), m.affine_scales)

    def cpsat(self, m, enc, x):
        return enc.affine(x, self.matrix(m, x.shape, enc.name, enc.Error), m.affine_scales)

    def ibp(self, m, lo, hi):
        """Centre/radius through the fake-quantized weights (differentiable)."""
        op, kw, _ = _op_of(m)
        w, b = m.qweight(), m.qbias()
        c, r = (hi + lo) / 2, (hi - lo) / 2
        c, r = op(c, w, b, **kw), op(r, w.abs(), None, **kw)
        return c - r, c + r

    def float32(self, m, ctx, x):
        return ctx.affine(m, x)


class LinearOp(AffineOp):
    name = "linear"
    types = (QuantLinear,)
    bound_ops = ("BoundLinear",)

    def _float_layer(self, m, bias: bool) -> nn.Module:
        return nn.Linear(m.in_features, m.out_features, bias=bias)

    def sensitivity(self, m, ctx, record, g):
        return [g.reshape(g.shape[0], -1) @ ctx.weight_abs(m)]

    def input_shape(self, m, n_inputs: int):
        return (n_inputs,)

    def matrix(self, m, in_shape, name, error=ValueError):
        if len(in_shape) != 1 or in_shape[0] != m.in_features:
            raise error(f"{name}: expects a flat input of {m.in_features} values, got shape "
                        f"{tuple(in_shape)} (add a Flatten, or pass input_shape)")
        w = m.weight_codes().cpu().numpy().astype(np.int64)
        return w, np.arange(w.shape[0]), (w.shape[0],)

    def onnx(self, m, em, x):
        if x.rank != 2:
            raise em.error("needs a 2-d input [N, features]; add a Flatten")
        return em.affine(m, x, "Gemm", 2, transB=1)

    def ibp_margins(self, m, C, lo, hi):
        """The specification folded into the weights: ``C W`` then centre/radius (tighter than
        bounding the outputs first)."""
        w = C.matmul(m.qweight())                          # [B, R, n]
        bias = m.qbias()
        b = C.matmul(bias) if bias is not None else 0.0
        c, r = (hi + lo) / 2, (hi - lo) / 2
        return torch.einsum("bkn,bn->bk", w, c) + b - torch.einsum("bkn,bn->bk", w.abs(), r)


class ConvOp(AffineOp):
    name = "conv"
    types = (QuantConv2d,)
    bound_ops = ("BoundConv",)

    def _float_layer(self, m, bias: bool) -> nn.Module:
        return nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                         bias=bias)

    def input_shape(self, m, n_inputs: int):
        return _square_input(m, n_inputs)

    def matrix(self, m, in_shape, name, error=ValueError):
        """The columns are the convolution (of the weight codes, float64: exact below 2^52) of
        the unit basis of the input."""
        if len(in_shape) != 3 or in_shape[0] != m.in_channels:
            raise error(f"{name}: expects a [C, H, W] input with C = {m.in_channels}, got {tuple(in_shape)}")
        n_in = int(np.prod(in_shape))
        w = m.weight_codes().cpu().double()
        if int(w.abs().max()) * max(n_in, 1) >= (1 << 52):
            raise error(f"{name}: weight codes too large")
        with torch.no_grad():
            basis = torch.eye(n_in, dtype=torch.float64).reshape((n_in,) + tuple(in_shape))
            cols = F.conv2d(basis, w, None, m.stride, m.padding)
        out_shape = tuple(int(v) for v in cols.shape[1:])
        mat = torch.round(cols.reshape(n_in, -1).T).to(torch.int64).numpy()
        return mat, np.arange(mat.shape[0]) // (out_shape[1] * out_shape[2]), out_shape

    def onnx(self, m, em, x):
        kh, kw = m.kernel_size
        ph, pw = m.padding if isinstance(m.padding, tuple) else (m.padding, m.padding)
        if isinstance(ph, str):
            raise em.error("string padding is not supported")
        if tuple(m.dilation) != (1, 1) or m.groups != 1 or m.padding_mode != "zeros":
            raise em.error("only dilation 1, groups 1 and zero padding are supported")
        return em.affine(m, x, "Conv", 4, kernel_shape=[kh, kw], strides=list(m.stride), pads=[ph, pw, ph, pw],
                         dilations=[1, 1], group=1)

    def sensitivity(self, m, ctx, record, g):
        return [torch.nn.grad.conv2d_input(record.in_shapes[0], ctx.weight_abs(m), g.reshape(record.out_shape),
                                           stride=m.stride, padding=m.padding)]


register(LinearOp())
register(ConvOp())

__all__ = ["QuantLinear", "QuantConv2d", "accumulator_bias_spec", "AffinePlan", "affine_plan", "affine_interval",
           "AffineOp", "LinearOp", "ConvOp"]
