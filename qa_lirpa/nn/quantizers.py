"""The quantizers: :class:`QuantInput` (real input -> input grid) and :class:`QuantAct`
(requantization; unsigned with zero point 0 it is a saturating, rounding ReLU), each with its
op definition (:mod:`qa_lirpa.graph.registry`).

Both are monotone non-decreasing, so the exact interval image of a box is the image of its two
end points; a quantizer whose rounded value is only known within ``tol`` steps (onnxruntime's
float32 arithmetic) is propagated by :func:`enveloped_requant`.
"""
from __future__ import annotations

import copy
import math
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..graph.registry import OpDef, register
from ..quant import intmath
from ..quant.functions import fake_quant, quantize
from ..quant.spec import ROUNDING_SHIFT, QuantSpec
from .tensors import IntBox, IntTensor, requantize


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


def enveloped_requant(box: IntBox, spec, tol: float) -> IntBox:
    """Codes that a quantizer with format ``spec`` can produce on ``box`` when the value it rounds,
    ``t = v / s_y``, is only known within ``tol`` steps of the nominal ``v / s_y`` (onnxruntime's
    float32 arithmetic, :func:`qa_lirpa.onnx.referee.float32_envelope`).

    Sound for every rounding mode: with ``shift`` from :data:`ROUNDING_SHIFT` (0 for the three
    round-to-nearest modes, +1/2 for ``down``, -1/2 for ``up``),
    ``ceil(t - shift - 1/2) <= R(t) <= floor(t - shift + 1/2)`` (round to nearest:
    ``ceil(t - 1/2) <= R(t) <= floor(t + 1/2)``; ``ceil(t - 1) <= floor(t)``;
    ``ceil(t) <= floor(t + 1)``), and both sides are monotone in ``t``. The float64 arithmetic here
    (dequantization, division, the offsets) is covered by a slack of ``2^-50 (|t| + 1)`` on top
    of ``tol``.
    """
    vlo, vhi = box.dequantize()
    nd = vlo.dim()
    axis = spec.axis % nd if spec.per_channel else 1
    sy = torch.tensor([float(s) for s in spec.scale], dtype=torch.float64, device=vlo.device)
    sy = sy.reshape(()) if sy.numel() == 1 else sy.reshape([-1 if d == axis else 1 for d in range(nd)])
    tlo, thi = vlo / sy, vhi / sy
    slo = tol + 2.0 ** -50 * (tlo.abs() + 1.0)
    shi = tol + 2.0 ** -50 * (thi.abs() + 1.0)
    shift = ROUNDING_SHIFT[spec.rounding]
    qlo = torch.ceil(tlo - slo - (shift + 0.5))
    qhi = torch.floor(thi + shi - (shift - 0.5))
    z = intmath._channel_view(spec.zero_points(), nd, axis, vlo.device).to(torch.float64)
    qlo = torch.clamp(qlo + z, spec.qmin, spec.qmax).to(torch.int64)
    qhi = torch.clamp(qhi + z, spec.qmin, spec.qmax).to(torch.int64)
    return IntBox(qlo, qhi, spec.scale_fractions(), spec.zero_points(), axis)


class TolerantQuant(nn.Module):
    """A quantizer whose rounded value is known only within ``tol`` steps (onnxruntime's float32
    arithmetic): ``fake_quant(x, spec, tol=tol)``, whose bound operators cover every such value."""

    def __init__(self, spec: QuantSpec, tol: float) -> None:
        super().__init__()
        self.spec, self.tol = spec, float(tol)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fake_quant(x, self.spec, tol=self.tol)


class LooseGradient(nn.Module):
    """A quantizer's value with the identity as gradient (also where it saturates): the attack
    form of a one-input quantizer (see ``OpDef.loose``)."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (self.act(x) - x).detach()


def chord_slope(box_in: IntBox, box_out: IntBox) -> torch.Tensor:
    """``(f(hi) - f(lo)) / (hi - lo)`` per unit in real values (float64; 0 where ``lo == hi``)."""
    a, b = box_in.dequantize()
    qa, qb = box_out.dequantize()
    span = b - a
    return torch.where(span > 0, (qb - qa) / torch.where(span > 0, span, torch.ones_like(span)), 0.0)


class MonotoneOp(OpDef):
    """Shared rules of elementwise monotone non-decreasing one-input ops: the interval image is the
    image of the end points; the branching sensitivity is the chord slope; the torch interval step
    applies the layer to both ends."""

    chord = True
    nonlinear = True

    def interval(self, m, ctx, box: IntBox) -> IntBox:
        a, b = box.ends()
        return IntBox.of(self.int_forward(m, a), self.int_forward(m, b))

    def slope(self, m, boxes_in, box_out) -> torch.Tensor:
        return chord_slope(boxes_in[0], box_out)

    def sensitivity(self, m, ctx, record, g):
        return [g.reshape(record.slope.shape) * record.slope]

    def frozen(self, m, tol: float = 0.0):
        return copy.deepcopy(m)

    def loose(self, m):
        return LooseGradient(m)

    def ibp(self, m, lo, hi):
        return m(lo), m(hi)


class QuantInputOp(OpDef):
    """The input quantizer: the first node; its value for the interval walk is the code box."""

    name = "input quantizer"
    types = (QuantInput,)
    is_input = True
    quantizer = True
    nonlinear = True
    bound_ops = ("BoundFakeQuant",)

    def int_forward(self, m, x):
        return m.int_forward(x)

    def interval(self, m, ctx, codes):
        return ctx.input_box(*codes)

    def ibp(self, m, lo, hi):
        return m(lo), m(hi)

    def flat_formats(self, m, shape: tuple, error=ValueError) -> tuple[list[Fraction], list[int]]:
        """Per flat input (C order over ``shape``, no batch dimension): the scale and zero point of
        the value the next layer sees."""
        n = math.prod(shape)
        scales, zps = m._out_scales(), m.spec.zero_points()
        if not m.spec.per_channel:
            return [scales[0]] * n, [zps[0]] * n
        axis = m.spec.axis % (len(shape) + 1)
        if axis == 0:
            raise error("per-channel quantization along the batch axis is not supported")
        ch = np.indices(shape).reshape(len(shape), -1)[axis - 1]
        return [scales[c] for c in ch], [zps[c] for c in ch]

    def milp(self, m, enc, codes):
        """``codes``: the box ``(lo, hi)`` of input codes (flat); the encoder states them."""
        return enc.input_codes(*codes, *self.flat_formats(m, enc.input_shape[1:], enc.Error))

    def cpsat(self, m, enc, codes):
        return enc.input_codes(*codes, *self.flat_formats(m, enc.input_shape[1:], enc.Error))

    def onnx(self, m, em, x):
        if not em.reads_graph_input():
            raise em.error("a QuantInput must be the first layer")
        return em.quantize(x, m.spec, [float(s) for s in m._out_scales()])

    def float32(self, m, ctx, x):
        return ctx.quantized(m._out_scales(), m.spec)


class QuantActOp(MonotoneOp):
    name = "quantizer"
    types = (QuantAct,)
    quantizer = True
    bound_ops = ("BoundFakeQuant",)

    def int_forward(self, m, x):
        return m.int_forward(x)

    def interval(self, m, ctx, box):
        tol = ctx.tolerance()
        if tol > 0:
            return enveloped_requant(box, m.spec, tol)
        return super().interval(m, ctx, box)

    def frozen(self, m, tol: float = 0.0):
        return TolerantQuant(m.spec, tol) if tol > 0 else copy.deepcopy(m)

    def milp(self, m, enc, x):
        return enc.requant(m.spec, x)

    def cpsat(self, m, enc, x):
        return enc.requant(m.spec, x)

    def milp_refusal(self, m) -> str:
        own = super().milp_refusal(m)
        if not own and float(getattr(m, "float32_tolerance", 0.0) or 0.0) > 0:
            return "float32 rounding has no exact encoding"
        return own

    def onnx(self, m, em, x):
        return em.quantize(x, m.spec, list(m.spec.scale))

    def float32(self, m, ctx, x):
        return ctx.requantized(x, m.spec)


class TolerantQuantOp(MonotoneOp):
    """A frozen quantizer with a float32 tolerance (only in bound and attack graphs: it has no
    exact semantics of its own)."""

    name = "tolerant quantizer"
    types = (TolerantQuant,)
    quantizer = True
    bound_ops = ("BoundFakeQuant",)


register(QuantInputOp())
register(QuantActOp())
register(TolerantQuantOp())

__all__ = ["QuantInput", "QuantAct", "TolerantQuant", "LooseGradient", "enveloped_requant", "chord_slope", "MonotoneOp",
           "QuantInputOp", "QuantActOp"]
