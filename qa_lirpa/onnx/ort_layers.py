"""Quantizers that reproduce onnxruntime's float32 arithmetic bit for bit.

Where a model's scales are powers of two, onnxruntime's float32 arithmetic is exact and the plain
:class:`~qa_lirpa.nn.QuantInput` / :class:`~qa_lirpa.nn.QuantAct` already agree with it. With other
scales (e.g. models from ``onnxruntime.quantization.quantize_static``) they do not, at and next to
rounding ties:

- ``QuantizeLinear`` computes ``x / scale`` in float32 (a correctly rounded division, measured:
  not ``x * (1/scale)``), then rounds half to even. :class:`QuantInput` divides in float64. On
  inputs ``fl32((k + 1/2) * scale)`` about 20% of the codes differ, and about 2 in 10^6 uniform
  random inputs.
- The input pattern ``Mul(1/s) -> Add(0.5) -> Floor`` differs from exact half-up rounding at exactly
  one float32 value, ``x * (1/s) = 0.5 - 2^-25`` (measured over every float32 of magnitude
  below 2^22), because ``0.5 - 2^-25 + 0.5`` rounds to 1.0 in float32.
- Fused integer kernels (QLinearConv, QGemm, QLinearMatMul: what onnxruntime runs for
  DequantizeLinear -> Conv/Gemm/MatMul -> QuantizeLinear groups with its default optimizations)
  requantize an int32 accumulator as ``round_half_even(fl32(fl32(acc) * M))`` with the float32
  multiplier ``M = fl32(fl32(s_x * s_w) / s_y)``, not with the exact ratio.

:class:`Float32QuantInput` and :class:`Float32Requant` compute exactly that in their integer step
(``int_forward``/``codes``) and in their float forward. Under tracing (``bounded_module``) their
forward is the nominal fake quantization (the exact-arithmetic quantizer); the two differ by at
most ``float32_tolerance`` quantization steps, so bounds are sound for these layers when
``quant_slack >= float32_tolerance`` for IBP (see :func:`required_quant_slack`). CROWN's linear
relaxations are evaluated at the exact pre-activation, so for them the tolerance must shift the
relaxation itself (relax ``g(v + tol)`` above and ``g(v - tol)`` below), not only widen the
interval; measured: at a float32 requantization flip, CROWN with ``quant_slack = tol`` alone
returns an upper bound below onnxruntime's output. The traced forward passes its tolerance as
``fake_quant(..., tol=...)`` as soon as :func:`qa_lirpa.quant.fake_quant` accepts it (a proposed
extension of ``qa_lirpa.quant.functions`` and ``qa_lirpa.operators.step``); with it both IBP and
CROWN are sound at any ``quant_slack``.
"""
from __future__ import annotations

import inspect
import math
from fractions import Fraction
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..graph.registry import register
from ..nn.layers import IntTensor, QuantAct, QuantInput
from ..nn.quantizers import QuantActOp, QuantInputOp
from ..quant.functions import fake_quant, round_half_up
from ..quant.spec import QuantSpec

ROUNDING_IMPLS = ("half_even", "half_up", "add_half_floor", "floor", "ceil", "ceil_half")
#: the exact rounding mode (``QuantSpec.rounding``) that each float32 rounding pattern stands for;
#: the nominal quantizer (tracing, bounds) uses it, and the tolerance covers the difference
IMPL_ROUNDING = {"half_even": "half_even", "half_up": "half_up", "add_half_floor": "half_up",
                 "floor": "down", "ceil": "up", "ceil_half": "half_down"}
# fake_quant(x, spec, tol=...) (a per-node float tolerance for the bound operators) is a proposed
# extension of qa_lirpa.quant.functions; use it as soon as it exists
_FQ_TOL = "tol" in inspect.signature(fake_quant).parameters


def _fake_quant(x: torch.Tensor, spec: QuantSpec, tol: float) -> torch.Tensor:
    return fake_quant(x, spec, tol=tol) if _FQ_TOL else fake_quant(x, spec)
_U = 2.0 ** -24          # unit roundoff of float32


def _f32(v: float) -> float:
    return float(np.float32(v))


def _chan(values: Sequence[float], like: torch.Tensor, axis: int, dtype=None) -> torch.Tensor:
    t = torch.tensor(list(values), dtype=dtype or like.dtype, device=like.device)
    if len(values) == 1:
        return t.reshape(())
    shape = [1] * like.dim()
    shape[axis % like.dim()] = len(values)
    return t.reshape(shape)


def _round32(v: torch.Tensor, impl: str) -> torch.Tensor:
    """Round a float32 tensor as onnxruntime does for the given pattern (result float32)."""
    if impl == "half_even":
        return torch.round(v)
    if impl == "half_up":
        return round_half_up(v)
    if impl == "floor":
        return torch.floor(v)
    if impl == "ceil":
        return torch.ceil(v)
    if impl == "ceil_half":                     # Sub(v, 0.5) in v's dtype (float32), then Ceil
        return torch.ceil(v - torch.tensor(0.5, dtype=v.dtype))
    return torch.floor(v + torch.tensor(0.5, dtype=v.dtype))


class Float32QuantInput(QuantInput):
    """An input quantizer that reproduces onnxruntime exactly: a program of elementwise float32 ops
    (``("mul"|"div"|"add"|"sub", values)``, ``("clip", lo, hi)``) applied to ``fl32(x)``, then a
    rounding (``"half_even"`` = Round/QuantizeLinear, ``"half_up"`` = the exact Floor/Sub/
    GreaterOrEqual pattern, ``"add_half_floor"`` = ``Floor(Add(v, 0.5))`` in float32, ``"floor"`` =
    ``Floor(v)``, ``"ceil"`` = ``Ceil(v)``, ``"ceil_half"`` = ``Ceil(Sub(v, 0.5))`` with the
    subtraction rounded to float32 as onnxruntime does), then the zero point and saturation of
    ``spec``. Codes are monotone non-decreasing in ``x`` (every step is a monotone float32
    operation).

    ``spec.rounding`` must be the exact mode the pattern stands for (:data:`IMPL_ROUNDING`:
    ``half_up`` for ``"half_up"``/``"add_half_floor"``, ``down`` for ``"floor"``, ``up`` for
    ``"ceil"``, ``half_down`` for ``"ceil_half"``): the traced forward (bounds) is the nominal
    quantizer of that mode, and :attr:`float32_tolerance` (in steps) bounds how far the float32
    value that is rounded, the program's and the ``Add``/``Sub`` of 0.5's roundings included,
    can lie from the exact ``a x + b``. So the bound operators, which cover every rounded value
    within the tolerance for the mode's staircase, are sound for the float32 codes.

    ``spec.scale`` is the nominal scale ``1/a`` of the program's affine map ``v = a x + b`` (it
    is only used for bookkeeping and the traced forward); the next layer receives
    ``(q - z) * output_scale``. A QuantizeLinear is ``program=[("div", (s,))]``.
    """

    def __init__(self, spec: QuantSpec, output_scale: float | None = None, *,
                 program: Sequence[tuple], rounding_impl: str = "half_even") -> None:
        super().__init__(spec, output_scale)
        if rounding_impl not in ROUNDING_IMPLS:
            raise ValueError(f"Float32QuantInput: rounding_impl must be one of {ROUNDING_IMPLS}")
        if spec.rounding != IMPL_ROUNDING[rounding_impl]:
            raise ValueError(f"Float32QuantInput: rounding_impl {rounding_impl!r} rounds as "
                             f"{IMPL_ROUNDING[rounding_impl]!r}, but the spec says {spec.rounding!r}")
        steps = []
        for step in program:
            op = step[0]
            if op in ("mul", "div", "add", "sub"):
                vals = tuple(_f32(v) for v in np.asarray(step[1], dtype=np.float64).reshape(-1))
                if op in ("mul", "div") and not all(v > 0 and math.isfinite(v) for v in vals):
                    raise ValueError("Float32QuantInput: multipliers and divisors must be positive")
                steps.append((op, vals))
            elif op == "clip":
                steps.append(("clip", _f32(step[1]), _f32(step[2])))
            else:
                raise ValueError(f"Float32QuantInput: unknown program step {op!r}")
        self.program = tuple(steps)
        self.rounding_impl = rounding_impl
        self.float32_tolerance = self._tolerance()

    # ----- exact onnxruntime semantics ------------------------------------------------------
    def _vaxis(self, x: torch.Tensor) -> int:
        return self.spec.axis % x.dim() if self.spec.per_channel else 1

    def _unit_values(self, x: torch.Tensor) -> torch.Tensor:
        """The float32 value that is rounded: the program applied to ``fl32(x)``."""
        v = x.detach().to(torch.float32)
        ax = self._vaxis(v)
        for step in self.program:
            op = step[0]
            if op == "clip":
                v = torch.clamp(v, step[1], step[2])
                continue
            c = _chan(step[1], v, ax)
            v = v * c if op == "mul" else v / c if op == "div" else v + c if op == "add" else v - c
        return v

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes exactly as onnxruntime computes them on ``fl32(x)`` (int64)."""
        v = _round32(self._unit_values(x), self.rounding_impl).double()
        z = _chan(self.spec.zero_points(), v, self._vaxis(v))
        return torch.clamp(v + z, self.spec.qmin, self.spec.qmax).to(torch.int64)

    def real_inputs(self, q: torch.Tensor) -> torch.Tensor:
        """Float32-representable inputs (as float64) whose codes are exactly ``q``."""
        a, b = self.affine()
        ax = self._vaxis(q.double())
        z = _chan(self.spec.zero_points(), q.double(), ax)
        x = (((q.double() - z) - _chan(b, q.double(), ax)) / _chan(a, q.double(), ax)).float()
        for _ in range(64):
            got = self.codes(x)
            if bool((got == q).all()):
                return x.double()
            up = torch.nextafter(x, torch.full_like(x, math.inf))
            dn = torch.nextafter(x, torch.full_like(x, -math.inf))
            x = torch.where(got < q, up, torch.where(got > q, dn, x))
        raise ValueError("Float32QuantInput.real_inputs: some codes are not reachable")

    # ----- nominal (exact-arithmetic) version, for tracing and gradients -------------------------
    def affine(self) -> tuple[list[float], list[float]]:
        """Per-channel ``(a, b)`` of the program's affine part ``v = a x + b`` (float64)."""
        n = max([len(s[1]) for s in self.program if s[0] != "clip"] + [1])
        a, b = [1.0] * n, [0.0] * n
        for step in self.program:
            if step[0] == "clip":
                continue
            vals = step[1] * n if len(step[1]) == 1 else step[1]
            for i, c in enumerate(vals):
                if step[0] == "mul":
                    a[i], b[i] = a[i] * c, b[i] * c
                elif step[0] == "div":
                    a[i], b[i] = a[i] / c, b[i] / c
                elif step[0] == "add":
                    b[i] += c
                else:
                    b[i] -= c
        return a, b

    def _unit_spec(self) -> QuantSpec:
        return self.spec.replace(scale=1.0, zero_point=self.spec.zero_point, axis=self.spec.axis)

    def _nominal(self, x: torch.Tensor) -> torch.Tensor:
        """The exact-arithmetic quantizer (what bounds are computed for); as few traced ops as
        possible: without an offset it is the plain QuantInput forward (one FakeQuant node)."""
        a, b = self.affine()
        tol = self.float32_tolerance
        if all(bi == 0.0 for bi in b):                # as QuantInput.forward, plus the tolerance
            y = _fake_quant(x, self.spec, tol)
            if self.output_scale is None or self.output_scale == self.spec.scale[0]:
                return y
            return y * (self.output_scale / self.spec.scale[0])
        ax = self._vaxis(x)
        v = x * _chan(a, x, ax) + _chan(b, x, ax)
        c = _fake_quant(v, self._unit_spec(), tol)  # centered codes (q - z)
        return c * _chan([float(s) for s in self._out_scales()], x, ax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():
            return self._nominal(x)
        q = self.codes(x).to(x.dtype)
        ax = self._vaxis(x)
        y = (q - _chan(self.spec.zero_points(), x, ax)) * _chan([float(s) for s in self._out_scales()], x, ax)
        if torch.is_grad_enabled() and x.requires_grad:
            nom = self._nominal(x)
            y = y + (nom - nom.detach())             # value of y, gradient of the nominal STE
        return y

    def _tolerance(self) -> float:
        """Bound, in quantization steps, on |program(fl32(x)) - (a x + b)| for inputs whose value
        can matter (those mapping near the code range), times 2 for safety."""
        a, b = self.affine()
        zs = self.spec.zero_points()
        steps = list(self.program)
        worst = 0.0
        for ch in range(len(a)):
            def pick(vals):
                return vals[ch if len(vals) > 1 else 0]
            gains = [1.0] * (len(steps) + 1)            # gains[i]: product of the scalings from step i on
            for i in range(len(steps) - 1, -1, -1):
                g = gains[i + 1]
                if steps[i][0] == "mul":
                    g *= pick(steps[i][1])
                elif steps[i][0] == "div":
                    g /= pick(steps[i][1])
                gains[i] = g
            z = zs[ch if len(zs) > 1 else 0]
            vlo, vhi = self.spec.qmin - z - 2.0, self.spec.qmax - z + 2.0
            x1, x2 = (vlo - b[ch]) / a[ch], (vhi - b[ch]) / a[ch]
            lo, hi = min(x1, x2), max(x1, x2)
            err = max(abs(lo), abs(hi)) * _U * gains[0]          # rounding of fl32(x)
            for i, step in enumerate(steps):
                if step[0] == "clip":
                    lo, hi = max(lo, step[1]), min(hi, step[2])
                    continue
                c = pick(step[1])
                if step[0] == "mul":
                    lo, hi = lo * c, hi * c
                elif step[0] == "div":
                    lo, hi = lo / c, hi / c
                elif step[0] == "add":
                    lo, hi = lo + c, hi + c
                else:
                    lo, hi = lo - c, hi - c
                err += max(abs(lo), abs(hi)) * _U * gains[i + 1]  # rounding of this step's result
            if self.rounding_impl in ("add_half_floor", "ceil_half"):   # fl32(v +- 0.5)
                err += (max(abs(lo), abs(hi)) + 0.5) * _U
            worst = max(worst, err)
        return 2.0 * worst + 1e-12

    def extra_repr(self) -> str:
        return super().extra_repr() + f", program={list(self.program)}, rounding_impl={self.rounding_impl}"


class Float32Requant(QuantAct):
    """Requantization as onnxruntime's fused integer kernels compute it.

    The input is the accumulator of a quantized Conv/Linear (an :class:`IntTensor` at scale
    ``acc_scale[c] = s_x * s_w[c]``, exact; the bias must be at that same scale). Output codes::

        q = clamp(round_half_even(fl32(fl32(acc) * M[c])) + z, qmin, qmax),
        M[c] = fl32(fl32(acc_scale[c]) / s_y)

    ``spec`` is the output format (per tensor).
    """

    def __init__(self, spec: QuantSpec, acc_scale: Sequence[float]) -> None:
        super().__init__(spec)
        if spec.per_channel:
            raise ValueError("Float32Requant: the output format must be per tensor")
        self.acc_scale = tuple(float(s) for s in acc_scale)
        sy = np.float32(spec.scale[0])
        if float(sy) != spec.scale[0]:
            raise ValueError("Float32Requant: the output scale must be a float32 value")
        self.multipliers = tuple(float(np.float32(np.float32(s) / sy)) for s in self.acc_scale)
        self.float32_tolerance = self._tolerance()

    def _m(self, like: torch.Tensor) -> torch.Tensor:
        return _chan(self.multipliers, like, 1, dtype=torch.float32)

    def _requant(self, acc: torch.Tensor) -> torch.Tensor:
        """Codes (float64) of integer accumulators ``acc`` (any integer-valued tensor)."""
        v = acc.to(torch.float32) * self._m(acc)
        q = torch.round(v).double() + float(self.spec.zero_point[0])
        return torch.clamp(q, self.spec.qmin, self.spec.qmax)

    def int_forward(self, x: IntTensor) -> IntTensor:
        want = [Fraction(s) for s in self.acc_scale]
        have = list(x.scale)
        if len(have) != len(want) and len(want) == 1:
            want = want * len(have)
        if len(have) == 1 and len(want) > 1:
            have = have * len(want)
        if have != want or any(z != 0 for z in x.zero_point):
            raise ValueError("Float32Requant: the accumulator's scales differ from the layer's acc_scale "
                             "(the bias must be quantized at s_x * s_w)")
        acc = x.centered()
        if intmax(acc) >= 2 ** 31:
            raise OverflowError("Float32Requant: accumulator outside int32 (onnxruntime would wrap)")
        q = self._requant(acc).to(torch.int64)
        return IntTensor(q, self.spec.scale_fractions(), self.spec.zero_points(), axis=1)

    def _nominal(self, y: torch.Tensor) -> torch.Tensor:
        return _fake_quant(y, self.spec, self.float32_tolerance)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():
            return self._nominal(y)
        with torch.no_grad():
            sc = _chan(self.acc_scale, y, 1, dtype=torch.float64)
            acc = torch.round(y.detach().double() / sc)
            q = self._requant(acc)
            out = ((q - float(self.spec.zero_point[0])) * self.spec.scale[0]).to(y.dtype)
        if torch.is_grad_enabled() and y.requires_grad:
            nom = self._nominal(y)
            out = out + (nom - nom.detach())
        return out

    def _tolerance(self) -> float:
        """Bound, in output steps, on |fl32(fl32(acc) M) - acc * acc_scale / s_y| over the
        accumulators that can matter (those mapping near the code range), times 2."""
        z = self.spec.zero_point[0]
        r = max(abs(self.spec.qmin - z), abs(self.spec.qmax - z)) + 2.0
        sy = Fraction(self.spec.scale[0])
        worst = 0.0
        for s, m in zip(self.acc_scale, self.multipliers):
            exact = Fraction(s) / sy
            rel = abs(Fraction(m) - exact) / exact
            worst = max(worst, r * (2 * _U + float(rel)) * (1 + 4 * _U))
        return 2.0 * worst + 1e-12

    def extra_repr(self) -> str:
        return super().extra_repr() + f", float32 multipliers={len(self.multipliers)}"


class _Float32Emulation:
    """What the ops of the layers that emulate onnxruntime's float32 rounding share: no exact ONNX
    form of their own."""

    def onnx(self, m, em, *xs):
        raise em.error("layers that emulate onnxruntime's float32 rounding (imported from ONNX) cannot be "
                       "re-exported exactly")


class Float32QuantInputOp(_Float32Emulation, QuantInputOp):
    """:class:`Float32QuantInput`: the input quantizer's codes are onnxruntime's (``codes``,
    monotone), so the exact encodings, which state the box of the end points' codes and confirm
    counterexamples through ``codes``/``real_inputs``, hold for it as they are."""

    name = "float32 input quantizer"
    types = (Float32QuantInput,)

    def milp_refusal(self, m) -> str:
        return ""


class Float32RequantOp(_Float32Emulation, QuantActOp):
    """:class:`Float32Requant`: onnxruntime's float32 requantization (its own ``int_forward``),
    which the exact encodings (rational rounding) do not state."""

    name = "float32 requantizer"
    types = (Float32Requant,)

    def milp_refusal(self, m) -> str:
        return ("its own integer semantics (int_forward: onnxruntime's float32 multiplier and rounding) "
                "has no exact encoding")


register(Float32QuantInputOp())
register(Float32RequantOp())


def intmax(t: torch.Tensor) -> int:
    return int(t.abs().max().item()) if t.numel() else 0


def required_quant_slack(model: nn.Module) -> float:
    """The ``quant_slack`` that makes IBP bounds of ``qa_lirpa.bounded_module(model, ...)`` cover
    the float32 quantizers of an imported model (0 when it has none: plain layers are exact)."""
    tol = [m.float32_tolerance for m in model.modules() if hasattr(m, "float32_tolerance")]
    return max(tol, default=0.0)


__all__ = ["Float32QuantInput", "Float32Requant", "Float32QuantInputOp", "Float32RequantOp", "required_quant_slack",
           "ROUNDING_IMPLS", "IMPL_ROUNDING"]
