"""Exact integer tensors: a value tensor (:class:`IntTensor`) and a box of them (:class:`IntBox`).

Both carry int64 codes with exact rational scales: real value ``(code - zero_point[c]) * scale[c]``
along ``axis``. They are what the op definitions' exact semantics (``int_forward``) and interval
images (``interval``) take and return.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

from ..quant import intmath
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
    """Exact ``clamp(R(real(x) / s) + z, qmin, qmax)`` of an exact tensor, ``R`` the spec's rounding
    mode (any of the five, ties included): integer arithmetic only (int64, or Python ints where
    int64 could overflow), no float anywhere."""
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


def per_tensor(x: IntTensor | IntBox, what: str) -> None:
    """ValueError unless ``x`` has one scale and one zero point (shape ops need it)."""
    if len(set(x.scale)) != 1 or len(set(x.zero_point)) != 1:
        raise ValueError(f"{what}: needs a per-tensor quantized input (one scale, one zero point)")


__all__ = ["IntTensor", "IntBox", "requantize", "per_tensor"]
