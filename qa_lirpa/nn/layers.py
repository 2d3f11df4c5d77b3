"""Quantized layers. Each layer has a float forward (fake quantization, trainable with the STE, traced
by auto_LiRPA) and an exact integer step (``int_forward``) used by :func:`qa_lirpa.integer_forward`.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..quant import intmath
from ..quant.functions import fake_quant, quantize, round_mode
from ..quant.spec import QuantSpec


@dataclass
class IntTensor:
    """An exactly represented tensor: real value = ``(values - zero_point[c]) * scale[c]``.

    ``scale`` and ``zero_point`` have one entry (per tensor) or one per channel along ``axis``.
    """

    values: torch.Tensor  # int64; a numpy array of Python ints where int64 would overflow
    scale: list[Fraction]
    zero_point: list[int]
    axis: int = 1

    def centered(self) -> torch.Tensor:
        """``values - zero_point`` (int64, or Python ints for object values)."""
        if all(z == 0 for z in self.zero_point):
            return self.values
        if not isinstance(self.values, torch.Tensor):
            return self.values - intmath._object_view(self.zero_point, self.values.ndim, self.axis)
        z = intmath._channel_view(self.zero_point, self.values.dim(), self.axis, self.values.device)
        return self.values - z

    def dequantize(self) -> torch.Tensor:
        """Real values in float64: correctly rounded, so exact whenever representable (e.g.
        power-of-two scales)."""
        c = self.centered()
        if not isinstance(c, torch.Tensor):
            s = intmath._object_view(self.scale, c.ndim, self.axis)
            exact = np.frompyfunc(lambda v, f: float(v * f), 2, 1)(c, s)
            return torch.from_numpy(np.asarray(exact, dtype=np.float64))
        if len(self.scale) == 1:
            return c.double() * float(self.scale[0])
        s = torch.tensor([float(x) for x in self.scale], dtype=torch.float64, device=c.device)
        shape = [1] * c.dim()
        shape[self.axis] = len(self.scale)
        return c.double() * s.reshape(shape)

    def per_tensor_scale(self, layer: str) -> Fraction:
        if len(set(self.scale)) != 1 or len(set(self.zero_point)) != 1:
            raise ValueError(f"{layer}: its input must be quantized per tensor (one scale, one zero point)")
        return self.scale[0]


def requantize(x: IntTensor, spec: QuantSpec) -> IntTensor:
    """Exact ``clamp(R(real(x) / s) + z, qmin, qmax)`` of an exact tensor."""
    channels = max(len(x.scale), spec.channels)
    xs = x.scale * channels if len(x.scale) == 1 else x.scale
    os_ = spec.scale_fractions() * channels if not spec.per_channel else spec.scale_fractions()
    if spec.per_channel and len(x.scale) > 1 and spec.axis % x.values.dim() != x.axis:
        raise ValueError("requantize: per-channel axes of input and spec differ")
    axis = spec.axis % x.values.dim() if spec.per_channel else x.axis
    mult = [a / b for a, b in zip(xs, os_)]
    if len(set(mult)) == 1:
        mult = mult[:1]
    q = intmath.rescale(x.centered(), mult, axis, spec.rounding)
    z = intmath._channel_view(spec.zero_points(), q.dim(), axis, q.device)
    q = torch.clamp(q + z, spec.qmin, spec.qmax)
    return IntTensor(q, spec.scale_fractions(), spec.zero_points(), axis)


class QuantInput(nn.Module):
    """Quantizes the real input: codes ``q = clamp(R(x/s) + z)``; the next layer sees
    ``(q - z) * output_scale`` (``output_scale`` defaults to ``s``: plain fake quantization).

    A different ``output_scale`` (a power-of-two ratio to ``s`` keeps the float forward exact) lets
    a model take raw pixels (``s = 1``: the code *is* the pixel, eps in pixel units) while its first
    layer sees them in fixed point, e.g. ``output_scale = 2^-8`` as in the QA-IBP paper.
    The input grid is finite: branch and bound works on the codes.
    """

    def __init__(self, spec: QuantSpec, output_scale: float | None = None) -> None:
        super().__init__()
        if spec.per_channel and output_scale is not None:
            raise ValueError("QuantInput: output_scale needs a per-tensor input spec")
        self.spec = spec
        self.output_scale = None if output_scale is None else float(output_scale)

    float_mode = False   # see set_float_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.float_mode:
            return x if self.output_scale is None else x * (self.output_scale / self.spec.scale[0])
        y = fake_quant(x, self.spec)
        if self.output_scale is None or self.output_scale == self.spec.scale[0]:
            return y
        return y * (self.output_scale / self.spec.scale[0])

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes of real inputs (int64), computed as the float64 forward does. Monotone
        non-decreasing in ``x``, so a real box maps to the integer box of its end points' codes."""
        return quantize(x.double(), self.spec)

    def _out_scales(self) -> list[Fraction]:
        if self.output_scale is None:
            return self.spec.scale_fractions()
        return [Fraction(self.output_scale)]

    def dequantize_codes(self, q: torch.Tensor) -> torch.Tensor:
        """The real values (float64) that the next layer receives for integer codes ``q``."""
        return IntTensor(q, self._out_scales(), self.spec.zero_points(), self._axis(q)).dequantize()

    def real_inputs(self, q: torch.Tensor) -> torch.Tensor:
        """Real inputs (float64) that quantize exactly to the codes ``q``: ``(q - z) * s``."""
        zt = self.spec.zero_point_tensor(q.double())
        return (q.double() - zt) * self.spec.scale_tensor(q.double())

    def _axis(self, x: torch.Tensor) -> int:
        return self.spec.axis % x.dim() if self.spec.per_channel else 1

    def int_forward(self, x: torch.Tensor) -> IntTensor:
        """Quantize the real input exactly as the float64 forward does (division in float64)."""
        q = self.codes(x)
        return IntTensor(q, self._out_scales(), self.spec.zero_points(), self._axis(x))

    def extra_repr(self) -> str:
        extra = f", output_scale={self.output_scale}" if self.output_scale is not None else ""
        return repr(self.spec) + extra


class QuantAct(nn.Module):
    """Activation quantizer. Unsigned with zero point 0 is ReLU with saturation (the QA-IBP paper);
    signed requantizes (the AAAI'21 networks' saturated outputs)."""

    def __init__(self, spec: QuantSpec) -> None:
        super().__init__()
        self.spec = spec

    float_mode = False   # see set_float_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.float_mode:
            return F.relu(x) if self.is_relu() else x
        return fake_quant(x, self.spec)

    def is_relu(self) -> bool:
        """Unsigned with zero point 0: the quantizer clamps at 0 (a saturating, rounding ReLU)."""
        return not self.spec.signed and all(z == 0 for z in self.spec.zero_points())

    def int_forward(self, x: IntTensor) -> IntTensor:
        return requantize(x, self.spec)

    def extra_repr(self) -> str:
        return repr(self.spec)


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

    def qweight(self) -> torch.Tensor:
        if self.float_mode:
            return self.weight
        return fake_quant(self.weight, self.weight_spec)

    def qbias(self) -> torch.Tensor | None:
        if self.bias is None or self.bias_spec is None or self.float_mode:
            return self.bias
        return fake_quant(self.bias, self.bias_spec.replace(axis=0) if self.bias_spec.per_channel else self.bias_spec)

    def weight_codes(self) -> torch.Tensor:
        """Integer weight codes minus zero point (int64)."""
        spec = self.weight_spec
        q = quantize(self.weight.detach(), spec)
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
        name = type(self).__name__
        out_ch = self.weight.shape[0]
        w_scales = self.weight_spec.scale_fractions()
        acc_scales = [s_in * w for w in (w_scales * out_ch if len(w_scales) == 1 else w_scales)]
        if self.bias is None:
            return acc_scales, [1] * out_ch, None, [0] * out_ch
        if self.bias_spec is None:
            raise ValueError(f"{name}: a float bias has no exact integer semantics; give a bias_spec")
        bs = self.bias_spec.replace(axis=0) if self.bias_spec.per_channel else self.bias_spec
        bq = quantize(self.bias.detach().cpu(), bs) - torch.tensor(bs.zero_points(), dtype=torch.int64)
        b_scales = bs.scale_fractions()
        b_scales = b_scales * out_ch if len(b_scales) == 1 else b_scales
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

    def int_forward(self, x: IntTensor) -> IntTensor:
        fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        return self._int_affine(x, F.conv2d, fan_in, stride=self.stride, padding=self.padding)


def set_float_mode(model: nn.Module, on: bool = True) -> nn.Module:
    """Switch every quantizer of ``model`` off (``on=True``) or back on, in place.

    In float mode the float forward has no rounding and no saturation: ``QuantInput`` only
    rescales, weights and biases are used as they are, and an unsigned ``QuantAct`` with zero point
    0 is a plain ReLU (other activation quantizers are the identity). This is for float training
    followed by post-training quantization (switch back on: every weight is then rounded into its
    fixed-point format). The integer semantics (``int_forward``, the verifier) ignore this flag:
    they always describe the quantized network.
    """
    for m in model.modules():
        if isinstance(m, (QuantInput, QuantAct, _QuantWeighted)):
            m.float_mode = bool(on)
    return model


def accumulator_bias_spec(in_spec: QuantSpec, weight_spec: QuantSpec, bits: int = 32) -> QuantSpec:
    """The standard bias format: signed ``bits``-bit at scale ``s_in * s_w`` (per channel if the
    weights are), zero point 0. Then the bias adds to the accumulator without rescaling."""
    if in_spec.per_channel:
        raise ValueError("accumulator_bias_spec: the layer input must be quantized per tensor")
    scales = [in_spec.scale[0] * s for s in weight_spec.scale]
    return QuantSpec(bits=bits, signed=True, scale=scales if len(scales) > 1 else scales[0],
                     axis=0 if len(scales) > 1 else None, rounding=weight_spec.rounding)


__all__ = ["IntTensor", "QuantInput", "QuantAct", "QuantLinear", "QuantConv2d", "requantize", "set_float_mode",
           "accumulator_bias_spec", "round_mode"]
