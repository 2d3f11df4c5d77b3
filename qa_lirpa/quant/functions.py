"""Rounding and fake quantization on float tensors.

All functions here are exact on floats: ``round_half_up`` does not compute ``floor(v + 0.5)`` in
float (which rounds ``0.49999999999999994`` up) but ``floor(v) + (v - floor(v) >= 0.5)``: the
fractional part can round only for tiny negative ``v``, and never across 1/2 (tested one ulp around
every tie). ``round_half_down(v)`` is ``-round_half_up(-v)``; ``round_down``/``round_up`` are
``torch.floor``/``torch.ceil`` (exact in every float dtype). ``fake_quant`` divides by the scale in the tensor's dtype: with
power-of-two scales the division is exact, so the result equals the integer semantics whenever the
input value itself is exact (see docs/semantics.md for where float32 stops being exact).
"""
from __future__ import annotations

import torch

from .spec import ROUNDING_CODE, QuantSpec, rounding_name

DOMAIN = "qa_lirpa"
FAKE_QUANT_OP = f"{DOMAIN}::FakeQuant"


def round_half_even(v: torch.Tensor) -> torch.Tensor:
    """Round to nearest, ties to even (``torch.round``)."""
    return torch.round(v)


def round_half_up(v: torch.Tensor) -> torch.Tensor:
    """``floor(v + 1/2)`` computed exactly: ties go towards +infinity."""
    f = torch.floor(v)
    return f + (v - f >= 0.5).to(v.dtype)


def round_half_down(v: torch.Tensor) -> torch.Tensor:
    """``ceil(v - 0.5)`` computed exactly (in every float dtype): ties go towards -infinity.

    The ``half_down`` mode's semantics; it also gives sound lower ends for intervals of the three
    round-to-nearest modes (it is below each of them at every tie), as ``round_half_up`` gives
    sound upper ends.
    """
    return -round_half_up(-v)


def round_down(v: torch.Tensor) -> torch.Tensor:
    """``floor(v)`` (the ``down`` mode; exact in every float dtype)."""
    return torch.floor(v)


def round_up(v: torch.Tensor) -> torch.Tensor:
    """``ceil(v)`` (the ``up`` mode; exact in every float dtype)."""
    return torch.ceil(v)


ROUND_FUNCTIONS = {"half_even": round_half_even, "half_up": round_half_up, "half_down": round_half_down,
                   "down": round_down, "up": round_up}


def round_mode(v: torch.Tensor, rounding: str | int) -> torch.Tensor:
    """Round with the named mode or its code (:data:`qa_lirpa.quant.spec.ROUNDING_CODE`: 0
    ``half_even``, 1 ``half_up``, 2 ``half_down``, 3 ``down``, 4 ``up``), exactly, in ``v``'s dtype;
    ValueError for an unknown mode."""
    return ROUND_FUNCTIONS[rounding_name(rounding)](v)


def _param(values: tuple, like: torch.Tensor, axis: int) -> torch.Tensor:
    t = torch.tensor(values, dtype=like.dtype, device=like.device)
    if len(values) == 1:
        return t.reshape(())
    shape = [1] * like.dim()
    shape[axis if axis >= 0 else like.dim() + axis] = len(values)
    return t.reshape(shape)


def quantize_codes(x: torch.Tensor, scale: tuple, zero_point: tuple, qmin: int, qmax: int,
                   axis: int, rounding: str | int) -> torch.Tensor:
    """Integer codes ``clamp(R(x / s) + z, qmin, qmax)`` as a float tensor of ``x``'s dtype."""
    s, z = _param(scale, x, axis), _param(zero_point, x, axis)
    return torch.clamp(round_mode(x / s, rounding) + z, qmin, qmax)


def fake_quant_raw(x: torch.Tensor, scale: tuple, zero_point: tuple, qmin: int, qmax: int,
                   axis: int, rounding: str | int) -> torch.Tensor:
    """Quantize then dequantize, no autograd trick: ``(codes - z) * s``."""
    s, z = _param(scale, x, axis), _param(zero_point, x, axis)
    return (quantize_codes(x, scale, zero_point, qmin, qmax, axis, rounding) - z) * s


class FakeQuantFunction(torch.autograd.Function):
    """Fake quantization with a clipped straight-through estimator.

    Forward: ``(clamp(R(x/s) + z, qmin, qmax) - z) * s``. Backward: the gradient passes unchanged
    where ``x`` lies inside the representable range ``[(qmin - z) s, (qmax - z) s]`` (inclusive)
    and is 0 outside. Traced by auto_LiRPA as one node ``qa_lirpa::FakeQuant``.
    """

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax, axis, rounding, tol=0.0):  # type: ignore[override]
        s, z = _param(scale, x, axis), _param(zero_point, x, axis)
        ctx.save_for_backward(x)
        ctx.params = (scale, zero_point, qmin, qmax, axis)
        return (quantize_codes(x, scale, zero_point, qmin, qmax, axis, rounding) - z) * s

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        scale, zero_point, qmin, qmax, axis = ctx.params
        s, z = _param(scale, x, axis), _param(zero_point, x, axis)
        inside = (x >= (qmin - z) * s) & (x <= (qmax - z) * s)
        return grad * inside.to(grad.dtype), None, None, None, None, None, None, None

    @staticmethod
    def symbolic(g, x, scale, zero_point, qmin, qmax, axis, rounding, tol=0.0):
        # lists are passed as tensor attributes: TorchScript's kindOf() misreports float lists
        extra = {"tol_f": float(tol)} if tol else {}
        out = g.op(FAKE_QUANT_OP, x, scale_t=torch.tensor(scale, dtype=torch.float64),
                   zero_point_t=torch.tensor(zero_point, dtype=torch.int64),
                   qmin_i=int(qmin), qmax_i=int(qmax), axis_i=int(axis), rounding_i=int(rounding), **extra)
        out.setType(x.type())
        return out


def spec_args(spec: QuantSpec) -> tuple:
    """The positional attributes of :class:`FakeQuantFunction` for ``spec``."""
    axis = spec.axis if spec.per_channel else 0
    return (spec.scale, spec.zero_point, spec.qmin, spec.qmax, axis, ROUNDING_CODE[spec.rounding])


def fake_quant(x: torch.Tensor, spec: QuantSpec, tol: float = 0.0) -> torch.Tensor:
    """Fake-quantize ``x`` with ``spec`` (differentiable with the clipped STE).

    ``tol`` (in quantization steps, default 0) declares that the quantizer this stands for rounds
    ``x / s + e`` for some unknown ``|e| <= tol`` (e.g. onnxruntime's float32 arithmetic): the
    forward value is unchanged, the bound operators cover every such ``e``.
    """
    if tol:
        return FakeQuantFunction.apply(x, *spec_args(spec), float(tol))
    return FakeQuantFunction.apply(x, *spec_args(spec))


def quantize(x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Integer codes of ``x`` as ``torch.int64`` (computed in float64)."""
    return quantize_codes(x.double(), *spec_args(spec)).to(torch.int64)


def dequantize(q: torch.Tensor, spec: QuantSpec, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Real values ``(q - z) * s`` of integer codes."""
    qf = q.to(dtype)
    return (qf - spec.zero_point_tensor(qf)) * spec.scale_tensor(qf)
