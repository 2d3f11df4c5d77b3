"""Exact integer interval propagation through a quantized model, batched over many boxes.

The input is a batch of integer boxes ``[lo, hi]`` of the :class:`~qa_lirpa.nn.QuantInput`'s codes
(int64 tensors ``[B, *input_shape]``). Every step is computed exactly in integers:

- affine layers (QuantLinear, QuantConv2d): with ``c = lo + hi`` and ``r = hi - lo`` (centered
  codes), ``W c - |W| r = 2 (W+ lo + W- hi)`` and ``W c + |W| r = 2 (W+ hi + W- lo)`` are the doubled
  exact accumulator bounds; both products run in float64 after checking (as
  :func:`qa_lirpa.quant.intmath.exact_float_matmul` does) that every partial sum stays below 2^53,
  so float64 is exact; the bias is added in int64 at the common scale given by
  ``QuantLinear.affine_scales``, the plan ``integer_forward`` uses;
- requantization (QuantAct), ReLU, Flatten, Identity, Dropout are monotone non-decreasing: the image
  of ``[lo, hi]`` is ``[f(lo), f(hi)]``, computed by the layers' own exact ``int_forward``.

So the output interval is the exact interval image of the box through each layer in turn: it
contains every output of the exact integer semantics on every grid point of the box (with equality
at single-point boxes). There is no float error anywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.layers import IntTensor, QuantAct, QuantConv2d, QuantInput, QuantLinear
from ..nn.reference import iter_layers
from ..quant import intmath

_INT64_GUARD = 1 << 62
_F64_EXACT = 1 << 53


@dataclass
class IntBox:
    """An exact interval tensor: codes ``lo <= hi`` (int64) with IntTensor semantics
    (real value ``(code - zero_point[c]) * scale[c]`` along ``axis``)."""

    lo: torch.Tensor
    hi: torch.Tensor
    scale: list[Fraction]
    zero_point: list[int]
    axis: int = 1

    def ends(self) -> tuple[IntTensor, IntTensor]:
        """The two end points as :class:`IntTensor`."""
        return (IntTensor(self.lo, self.scale, self.zero_point, self.axis),
                IntTensor(self.hi, self.scale, self.zero_point, self.axis))

    def dequantize(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Real end points in float64 (exact for power-of-two scales; otherwise each value is the
        correctly rounded float of the exact rational)."""
        a, b = self.ends()
        return a.dequantize(), b.dequantize()

    @classmethod
    def of(cls, lo: IntTensor, hi: IntTensor) -> "IntBox":
        return cls(lo.values, hi.values, lo.scale, lo.zero_point, lo.axis)


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


class Trace:
    """What a branching heuristic needs from one propagation, kept small: per layer its input
    and output shapes and, for monotone nonlinear layers, the chord slope of each unit on the box,
    ``(f(hi) - f(lo)) / (hi - lo)`` in real values (float64; 0 where ``lo == hi``)."""

    def __init__(self) -> None:
        self.steps: list[tuple[nn.Module, tuple[int, ...], tuple[int, ...], torch.Tensor | None]] = []

    def record(self, layer: nn.Module, box_in: IntBox, box_out: IntBox) -> None:
        slope = None
        if not isinstance(layer, (QuantLinear, QuantConv2d, nn.Flatten, nn.Identity, nn.Dropout)):
            a, b = box_in.dequantize()
            qa, qb = box_out.dequantize()
            span = b - a
            slope = torch.where(span > 0, (qb - qa) / torch.where(span > 0, span, torch.ones_like(span)), 0.0)
        self.steps.append((layer, tuple(box_in.lo.shape), tuple(box_out.lo.shape), slope))

    def select(self, index: torch.Tensor) -> "Trace":
        """The trace of a subset of the boxes (``index`` into the batch)."""
        out = Trace()
        n = (int(index.numel()),)
        out.steps = [(layer, n + a[1:], n + b[1:], None if s is None else s[index])
                     for layer, a, b, s in self.steps]
        return out


def _op_of(layer: nn.Module) -> tuple[Callable, dict, int]:
    if isinstance(layer, QuantConv2d):
        fan_in = layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]
        return F.conv2d, {"stride": layer.stride, "padding": layer.padding}, fan_in
    return F.linear, {}, layer.in_features


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


def _relu(x: IntTensor) -> IntTensor:
    z = intmath._channel_view(x.zero_point, x.values.dim(), x.axis, x.values.device)
    return IntTensor(torch.maximum(x.values, z), x.scale, x.zero_point, x.axis)


def enveloped_requant(box: IntBox, spec, tol: float) -> IntBox:
    """Codes that a quantizer with format ``spec`` can produce on ``box`` when the value it rounds,
    ``t = v / s_y``, is only known within ``tol`` steps of the nominal ``v / s_y`` (onnxruntime's
    float32 arithmetic, :func:`qa_lirpa.onnx.referee.float32_envelope`).

    Sound for half-even and half-up rounding alike: ``ceil(t - 1/2) <= round(t) <= floor(t + 1/2)``;
    the float64 arithmetic here (dequantization, division, the +-1/2) is covered by a slack of
    ``2^-50 (|t| + 1)`` on top of ``tol``.
    """
    vlo, vhi = box.dequantize()
    nd = vlo.dim()
    axis = spec.axis % nd if spec.per_channel else 1
    sy = torch.tensor([float(s) for s in spec.scale], dtype=torch.float64, device=vlo.device)
    sy = sy.reshape(()) if sy.numel() == 1 else sy.reshape([-1 if d == axis else 1 for d in range(nd)])
    tlo, thi = vlo / sy, vhi / sy
    slo = tol + 2.0 ** -50 * (tlo.abs() + 1.0)
    shi = tol + 2.0 ** -50 * (thi.abs() + 1.0)
    qlo = torch.ceil(tlo - slo - 0.5)
    qhi = torch.floor(thi + shi + 0.5)
    z = intmath._channel_view(spec.zero_points(), nd, axis, vlo.device).to(torch.float64)
    qlo = torch.clamp(qlo + z, spec.qmin, spec.qmax).to(torch.int64)
    qhi = torch.clamp(qhi + z, spec.qmin, spec.qmax).to(torch.int64)
    return IntBox(qlo, qhi, spec.scale_fractions(), spec.zero_points(), axis)


def _flatten(box: IntBox, layer: nn.Flatten) -> IntBox:
    if len(set(box.scale)) != 1 or len(set(box.zero_point)) != 1:
        raise ValueError("Flatten: interval propagation needs a per-tensor quantized input")
    return IntBox(box.lo.flatten(layer.start_dim, layer.end_dim), box.hi.flatten(layer.start_dim, layer.end_dim),
                  box.scale[:1], box.zero_point[:1], 1)


class IntervalNet:
    """Exact interval propagation for one model (plans are built on first use and cached).

    Args:
        model: a quantized ``nn.Sequential`` starting with a :class:`QuantInput` (any device; the
            integer data is copied to ``device``).
        device: where the propagation runs (int64 and float64 tensors; exact on CPU and CUDA).
        tolerances: per layer index of ``iter_layers(model)``, a quantizer's float32 tolerance in
            steps (:class:`~qa_lirpa.onnx.referee.Envelope`); those quantizers are propagated with
            :func:`enveloped_requant`, so the intervals contain what onnxruntime computes.
    """

    def __init__(self, model: nn.Module, device: torch.device | str = "cpu",
                 tolerances: dict[int, float] | None = None) -> None:
        layers = list(iter_layers(model))
        if not layers or not isinstance(layers[0], QuantInput):
            raise TypeError("interval propagation: the model must start with a QuantInput layer")
        self.qin: QuantInput = layers[0]
        self.layers = layers[1:]
        self.device = torch.device(device)
        self.tolerances = dict(tolerances or {})
        self._plans: dict[int, tuple[Fraction, AffinePlan]] = {}
        self._probes: dict[tuple[int, ...], IntTensor] = {}
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, (QuantLinear, QuantConv2d, QuantAct, nn.ReLU, nn.Flatten,
                                      nn.Identity, nn.Dropout)):
                raise TypeError(f"interval propagation: layer {i + 1} ({type(layer).__name__}) is not supported")

    def input_box(self, lo: torch.Tensor, hi: torch.Tensor) -> IntBox:
        """The IntBox of input codes ``[lo, hi]`` (int64, ``[B, *input_shape]``) as the first layer
        after the QuantInput sees them (its output scale and zero points)."""
        shape = tuple(lo.shape[1:])
        if shape not in self._probes:
            self._probes[shape] = self.qin.int_forward(torch.zeros((1,) + shape, dtype=torch.float64))
        probe = self._probes[shape]
        return IntBox(lo.to(self.device), hi.to(self.device), probe.scale, probe.zero_point, probe.axis)

    def plan(self, index: int, layer: nn.Module, s_in: Fraction) -> AffinePlan:
        cached = self._plans.get(index)
        if cached is None or cached[0] != s_in:
            cached = self._plans[index] = (s_in, affine_plan(layer, s_in, self.device))
        return cached[1]

    def step(self, index: int, layer: nn.Module, box: IntBox) -> IntBox:
        """The exact interval image of ``box`` through one layer."""
        if isinstance(layer, (QuantLinear, QuantConv2d)):
            lo_t, hi_t = box.ends()
            s_in = lo_t.per_tensor_scale(type(layer).__name__)
            plan = self.plan(index, layer, s_in)
            lo, hi = affine_interval(plan, lo_t.centered(), hi_t.centered())
            return IntBox(lo, hi, plan.scale, [0], 1)
        if isinstance(layer, QuantAct):
            tol = self.tolerances.get(index + 1, 0.0)
            if tol > 0:
                return enveloped_requant(box, layer.spec, tol)
            a, b = box.ends()
            return IntBox.of(layer.int_forward(a), layer.int_forward(b))
        if isinstance(layer, nn.ReLU):
            a, b = box.ends()
            return IntBox.of(_relu(a), _relu(b))
        if isinstance(layer, nn.Flatten):
            return _flatten(box, layer)
        return box

    def propagate(self, lo: torch.Tensor, hi: torch.Tensor, trace: Trace | None = None) -> IntBox:
        """Exact output intervals for input code boxes ``[lo, hi]`` (int64 ``[B, *input_shape]``).

        If ``trace`` is given, each layer is recorded in it (:meth:`Trace.record`).
        """
        box = self.input_box(lo, hi)
        for i, layer in enumerate(self.layers):
            out = self.step(i, layer, box)
            if trace is not None:
                trace.record(layer, box, out)
            box = out
        return box


__all__ = ["IntBox", "AffinePlan", "IntervalNet", "Trace", "affine_plan", "affine_interval"]
