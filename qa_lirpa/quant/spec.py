"""The quantization specification: one frozen description of an integer format.

A :class:`QuantSpec` describes the map from a real value ``x`` to an integer ``q`` and back::

    q = clamp(R(x / scale) + zero_point, qmin, qmax)        (quantize)
    x' = (q - zero_point) * scale                            (dequantize)

with ``R`` one of five rounding modes (:data:`ROUNDING_MODES`; the integer codes of
:data:`ROUNDING_CODE` are what the traced ``FakeQuant`` node carries):

- ``half_even`` (0): round half to even (ONNX QuantizeLinear / Round, ``torch.round``);
- ``half_up`` (1): ``floor(v + 1/2)`` (TensorFlow fake quantization; the QA-IBP paper and the
  AAAI'21 benchmark networks). Ties round towards +infinity, also for negative values;
- ``half_down`` (2): ``ceil(v - 1/2)``: ties round towards -infinity (ONNX ``Ceil(v - 0.5)``);
- ``down`` (3): ``floor(v)`` (ONNX ``Floor``; an arithmetic right shift of a fixed-point value);
- ``up`` (4): ``ceil(v)`` (ONNX ``Ceil``).

Every mode is monotone non-decreasing and maps integers to themselves, so clamping to integer
bounds commutes with it. Each is ``floor`` or ``ceil`` of ``v`` shifted by :data:`ROUNDING_SHIFT`
except at ties, where ``half_even`` picks the even neighbour.

Scales are Python floats; every float is a dyadic rational, so the exact integer reference can do
its rescaling in exact rational arithmetic (:mod:`qa_lirpa.quant.intmath`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal, Sequence, Union

import torch

Rounding = Literal["half_even", "half_up", "half_down", "down", "up"]
ROUNDING_MODES: tuple[str, ...] = ("half_even", "half_up", "half_down", "down", "up")
#: the integer code of each mode (0 and 1 keep their historical meaning)
ROUNDING_CODE = {"half_even": 0, "half_up": 1, "half_down": 2, "down": 3, "up": 4}
ROUNDING_NAME = {c: n for n, c in ROUNDING_CODE.items()}
#: where each mode's steps sit: ``R`` jumps from ``k - 1`` to ``k`` at ``v = k - 1/2 + shift``
#: (0 for the three round-to-nearest modes, +1/2 for ``down``, -1/2 for ``up``)
ROUNDING_SHIFT = {"half_even": 0.0, "half_up": 0.0, "half_down": 0.0, "down": 0.5, "up": -0.5}


def rounding_name(rounding: str | int) -> str:
    """The mode's name from its name or integer code (ValueError for anything else)."""
    if isinstance(rounding, str):
        if rounding not in ROUNDING_CODE:
            raise ValueError(f"unknown rounding mode {rounding!r}; expected one of {ROUNDING_MODES}")
        return rounding
    code = int(rounding)
    if code not in ROUNDING_NAME:
        raise ValueError(f"unknown rounding code {rounding!r}; expected one of {sorted(ROUNDING_NAME)}")
    return ROUNDING_NAME[code]

ScaleLike = Union[float, Sequence[float]]


def _as_tuple(v: ScaleLike | int | Sequence[int], kind: type) -> tuple:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().reshape(-1).tolist()
    if isinstance(v, (list, tuple)):
        return tuple(kind(x) for x in v)
    return (kind(v),)


@dataclass(frozen=True)
class QuantSpec:
    """An integer format: bit width, signedness, scale(s), zero point(s), rounding mode.

    Args:
        bits: bit width, 2..32 (activations and weights use 2..16; 32 is for bias accumulators).
        signed: two's complement range ``[-2^(b-1), 2^(b-1)-1]`` if True, else ``[0, 2^b - 1]``.
        scale: positive float, or a sequence of positive floats (one per channel along ``axis``).
        zero_point: integer, or one per channel; must lie inside the integer range.
        axis: channel axis for per-channel scales (negative values count from the end, as in ONNX;
            for activations of shape [N, C, ...] and weights of shape [C_out, ...] use the channel
            dimension). Ignored for per-tensor specs.
        rounding: one of :data:`ROUNDING_MODES` (``"half_even"``, ``"half_up"``, ``"half_down"``,
            ``"down"``, ``"up"``).
        narrow: if True the signed range is symmetric, ``[-2^(b-1)+1, 2^(b-1)-1]``.
    """

    bits: int
    signed: bool = False
    scale: tuple[float, ...] = field(default=(1.0,))
    zero_point: tuple[int, ...] = field(default=(0,))
    axis: int | None = None
    rounding: Rounding = "half_even"
    narrow: bool = False

    def __init__(self, bits: int, signed: bool = False, scale: ScaleLike = 1.0,
                 zero_point: int | Sequence[int] = 0, axis: int | None = None,
                 rounding: Rounding = "half_even", narrow: bool = False) -> None:
        object.__setattr__(self, "bits", int(bits))
        object.__setattr__(self, "signed", bool(signed))
        object.__setattr__(self, "scale", _as_tuple(scale, float))
        object.__setattr__(self, "zero_point", _as_tuple(zero_point, int))
        object.__setattr__(self, "axis", None if axis is None else int(axis))
        object.__setattr__(self, "rounding", rounding)
        object.__setattr__(self, "narrow", bool(narrow))
        self._validate()

    def _validate(self) -> None:
        if not 2 <= self.bits <= 32:
            raise ValueError(f"QuantSpec: bits must be in 2..32, got {self.bits}")
        if self.rounding not in ROUNDING_MODES:
            raise ValueError(f"QuantSpec: rounding must be one of {ROUNDING_MODES}, got {self.rounding!r}")
        for s in self.scale:
            if not (math.isfinite(s) and s > 0):
                raise ValueError(f"QuantSpec: scales must be finite and positive, got {s}")
        if len(self.zero_point) not in (1, len(self.scale)):
            raise ValueError("QuantSpec: zero_point must be a scalar or have one entry per scale")
        if self.per_channel and self.axis is None:
            raise ValueError("QuantSpec: per-channel scales need an axis")
        for z in self.zero_point:
            if not self.qmin <= z <= self.qmax:
                raise ValueError(f"QuantSpec: zero point {z} outside [{self.qmin}, {self.qmax}]")

    # ----- integer range -------------------------------------------------------------------
    @property
    def qmin(self) -> int:
        """Smallest integer code."""
        if not self.signed:
            return 0
        return -(1 << (self.bits - 1)) + (1 if self.narrow else 0)

    @property
    def qmax(self) -> int:
        """Largest integer code."""
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def per_channel(self) -> bool:
        return len(self.scale) > 1 or len(self.zero_point) > 1

    @property
    def channels(self) -> int:
        return max(len(self.scale), len(self.zero_point))

    @property
    def is_power_of_two(self) -> bool:
        """True if every scale is an exact power of two (then float rescaling is exact)."""
        return all(_is_pow2(s) for s in self.scale)

    def scale_fractions(self) -> list[Fraction]:
        """The scales as exact rationals (a float is a dyadic rational)."""
        return [Fraction(s) for s in self._broadcast(self.scale)]

    def zero_points(self) -> list[int]:
        return list(self._broadcast(self.zero_point))

    def _broadcast(self, t: tuple) -> tuple:
        return t * self.channels if len(t) == 1 else t

    # ----- tensors shaped for broadcasting ---------------------------------------------------
    def view_shape(self, ndim: int) -> list[int]:
        """Shape that broadcasts per-channel parameters against a tensor with ``ndim`` dims."""
        shape = [1] * ndim
        if self.per_channel:
            axis = self.axis if self.axis >= 0 else ndim + self.axis
            if not 0 <= axis < ndim:
                raise ValueError(f"QuantSpec axis {self.axis} invalid for a {ndim}-d tensor")
            shape[axis] = self.channels
        return shape

    def scale_tensor(self, like: torch.Tensor) -> torch.Tensor:
        """Scales as a tensor of ``like``'s dtype/device, broadcastable to ``like``."""
        t = torch.tensor(self._broadcast(self.scale), dtype=like.dtype, device=like.device)
        return t.reshape(self.view_shape(like.dim())) if self.per_channel else t.reshape(())

    def zero_point_tensor(self, like: torch.Tensor) -> torch.Tensor:
        t = torch.tensor(self._broadcast(self.zero_point), dtype=like.dtype, device=like.device)
        return t.reshape(self.view_shape(like.dim())) if self.per_channel else t.reshape(())

    def dequant_range(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Smallest and largest representable real values (after dequantization)."""
        s, z = self.scale_tensor(like), self.zero_point_tensor(like)
        return (self.qmin - z) * s, (self.qmax - z) * s

    def replace(self, **changes) -> "QuantSpec":
        """A copy with some fields changed."""
        kw = dict(bits=self.bits, signed=self.signed, scale=self.scale, zero_point=self.zero_point,
                  axis=self.axis, rounding=self.rounding, narrow=self.narrow)
        kw.update(changes)
        per_tensor = len(_as_tuple(kw["scale"], float)) == 1 and len(_as_tuple(kw["zero_point"], int)) == 1
        if per_tensor and "axis" not in changes:
            kw["axis"] = None
        return QuantSpec(**kw)

    @classmethod
    def fixed_point(cls, bits: int, frac_bits: int, signed: bool,
                    rounding: Rounding = "half_up") -> "QuantSpec":
        """A fixed-point format with ``frac_bits`` fractional bits: scale ``2^-frac_bits``, zero point 0."""
        return cls(bits=bits, signed=signed, scale=2.0 ** (-frac_bits), rounding=rounding)

    def __repr__(self) -> str:
        sc = self.scale[0] if len(self.scale) == 1 else f"[{len(self.scale)} scales]"
        zp = self.zero_point[0] if len(self.zero_point) == 1 else f"[{len(self.zero_point)} zps]"
        kind = "int" if self.signed else "uint"
        ax = f", axis={self.axis}" if self.per_channel else ""
        return f"QuantSpec({kind}{self.bits}, scale={sc}, zero_point={zp}{ax}, {self.rounding})"


def _is_pow2(s: float) -> bool:
    m, _ = math.frexp(s)
    return m == 0.5
