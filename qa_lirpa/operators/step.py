"""auto_LiRPA bound operators for rounding steps: our FakeQuant node and ONNX Round, Floor, Ceil,
QuantizeLinear, plus Clip and DequantizeLinear.

Each rounding operator is ``out = c1 * clamp(R(a x + b), A, B) + c0`` (``a, c1 > 0``); subclasses
only say what ``a, b, A, B, c1, c0`` and ``R`` are (``R``: any of the five modes of
:data:`qa_lirpa.quant.spec.ROUNDING_MODES`, by its code). IBP is the exact interval image (the map
is monotone; rounding is exact in the bounds' dtype, float32 or float64); CROWN uses the hull lines
of :mod:`qa_lirpa.operators.relax` for the mode's staircase (jumps at ``k - 1/2 + shift``), which
are sound for every mode, ties included.

Soundness in floating point: before rounding, the unit-space interval ``[a l + b, a u + b]`` is
widened by ``slack`` units (bound option ``{"qa_lirpa": {"slack": ...}}``, set by
:func:`qa_lirpa.bounded_module`), so that a float error in a bound that lands just below a rounding
tie cannot drop the value above it. With ``slack=0`` the IBP image is exact for exact inputs.
"""
from __future__ import annotations

import math

import torch

from ..compat import import_auto_lirpa
from ..quant.functions import FakeQuantFunction, round_mode
from ..quant.spec import ROUNDING_SHIFT, rounding_name
from . import relax

_al = import_auto_lirpa()
from auto_LiRPA.operators.activation import BoundActivation, BoundOptimizableActivation  # noqa: E402
from auto_LiRPA.operators.base import Bound, Interval  # noqa: E402

INF = math.inf


def slack_from(options: dict | None) -> float:
    """The rounding slack (in quantization steps) from auto_LiRPA bound options."""
    return float(((options or {}).get("qa_lirpa") or {}).get("slack", 0.0))


class BoundStep(BoundOptimizableActivation):
    """Base for ``c1 * clamp(R(a x + b), A, B) + c0``; subclasses define :meth:`params`.

    alpha-CROWN (``method="CROWN-Optimized"``): each unit's upper and lower lines have an
    optimisable slope per output row (``alpha[start][0]``: upper, ``[1]``: lower; each
    ``[2, rows, batch, *shape]``, index 0 for the lower bound, 1 for the upper), started at the
    hull lines of :mod:`relax`. Whatever the slope ``k >= 0``, the intercept is the one that makes
    the line valid at the staircase's four critical points (:func:`relax.staircase_points`), which
    makes it valid on the whole unit interval: optimisation only moves between sound lines.
    """

    rounding = 0  # the mode's code: 0 half_even, 1 half_up, 2 half_down, 3 down, 4 up

    def __init__(self, attr=None, inputs=None, output_index=0, options=None):
        super().__init__(attr, inputs, output_index, options)
        self.slack = slack_from(options)
        # the node's own float tolerance (steps): it rounds a x + b + e for an unknown |e| <= tol
        self.tol = float((attr or {}).get("tol", 0.0))
        self.alpha_batch_dim = 3
        self._init_k = None
        self._k_cap = None
        #: the start nodes (names) that get optimisable slopes (None: all; set by CrownBounder to
        #: the output node only, which keeps alpha-CROWN's cost near a few CROWN passes)
        self.alpha_starts: set | None = None

    def params(self, like: torch.Tensor):
        """Return ``(a, b, A, B, c1, c0)`` broadcastable against ``like``."""
        raise NotImplementedError

    def _unit(self, x: torch.Tensor, widen: float):
        a, b, A, B, c1, c0 = self.params(x)
        return a * x + b + widen, (A, B, c1, c0)

    def _value(self, v: torch.Tensor, A, B, c1, c0) -> torch.Tensor:
        return c1 * torch.clamp(round_mode(v, self.rounding), min=A, max=B) + c0

    def interval_propagate(self, *v):
        l, u = v[0]
        w = self.slack + self.tol
        vl, (A, B, c1, c0) = self._unit(l, -w)
        vu, _ = self._unit(u, w)
        return Interval.make_interval(self._value(vl, A, B, c1, c0), self._value(vu, A, B, c1, c0), v[0])

    def _unit_box(self, x):
        """``(a, b, c1, c0)``, the widened unit interval ``[vl, vu]``, ``A, B`` and the mode's shift."""
        a, b, A, B, c1, c0 = self.params(x.lower)
        vl = a * x.lower + b - self.slack
        vu = a * x.upper + b + self.slack
        A, B = torch.as_tensor(A, dtype=vl.dtype, device=vl.device), torch.as_tensor(B, dtype=vl.dtype, device=vl.device)
        shift = ROUNDING_SHIFT[rounding_name(self.rounding)]
        return (a, b, c1, c0), vl, vu, A.expand_as(vl), B.expand_as(vl), shift

    def _to_x(self, coef, uk, ub, lk, lb):
        """Unit-space lines ``y = k v + m`` to lines in x: ``out = c1 (k (a x + b) + m) + c0``."""
        a, b, c1, c0 = coef
        t = self.tol
        # g(v + e) <= g_up(v + t) <= uk (v + t) + ub  and  g(v + e) >= g_dn(v - t) >= lk (v - t) + lb
        ub, lb = ub + uk * t, lb - lk * t
        return c1 * uk * a, c1 * (uk * b + ub) + c0, c1 * lk * a, c1 * (lk * b + lb) + c0

    def bound_relax(self, x):
        coef, vl, vu, A, B, shift = self._unit_box(x)
        t = self.tol
        if self.opt_stage in ("opt", "reuse") and getattr(self, "_start", None) in self.alpha:
            self._relax_alpha(x, coef, vl, vu, A, B, shift)
            return
        uk, ub = relax.upper_line(vl + t, vu + t, A, B, shift)
        lk, lb = relax.lower_line(vl - t, vu - t, A, B, shift)
        if self.opt_stage == "init":
            self._init_k = (uk.detach(), lk.detach())
        self.uw, self.ub, self.lw, self.lb = self._to_x(coef, uk, ub, lk, lb)

    def _relax_alpha(self, x, coef, vl, vu, A, B, shift) -> None:
        t = self.tol
        alpha = self.alpha[self._start]
        up_pts, _ = relax.staircase_points(vl + t, vu + t, A, B, shift, upper=True)
        dn_pts, _ = relax.staircase_points(vl - t, vu - t, A, B, shift, upper=False)
        # projection onto k >= 0 whose gradient is 1 at the boundary (slopes of flat units start
        # at exactly 0; clamp's gradient there is 0 in recent torch, and they would never move)
        cap = self._k_cap
        ku = alpha[0] - (alpha[0] - torch.minimum(torch.clamp(alpha[0], min=0.0), cap)).detach()
        kl = alpha[1] - (alpha[1] - torch.minimum(torch.clamp(alpha[1], min=0.0), cap)).detach()
        ub = relax.intercept(up_pts, ku, upper=True)
        lb = relax.intercept(dn_pts, kl, upper=False)
        self.uw, self.ub, self.lw, self.lb = self._to_x(coef, ku, ub, kl, lb)

    def init_opt_parameters(self, start_nodes):
        l = self.inputs[0].lower
        if self._init_k is None:            # no init pass yet: the slope-1 lines
            self._init_k = (torch.ones_like(l), torch.ones_like(l))
        uk, lk = self._init_k
        # slopes stay in [0, 1] (unit space): the hull's steep chords over intervals a few slack
        # widths wide (a unit whose pre-activation sits on a tie) are exact only in exact
        # arithmetic; moved by the optimiser, their huge intercepts lose ~k |v| 1e-16 and the
        # bound can overshoot the true minimum by that much (seen: 4e-9 with k ~ 5e5). Plain
        # CROWN keeps those chords; the caller takes the better of the two bounds.
        self._k_cap = torch.ones_like(uk)
        self.alpha = {}
        for ns, size_s, _ in start_nodes:
            if self.alpha_starts is not None and ns not in self.alpha_starts:
                continue                    # this start node keeps the fixed hull lines
            n = math.prod(size_s) if isinstance(size_s, (torch.Size, tuple, list)) else int(size_s)
            a = torch.empty((2, 2, n) + tuple(l.shape), dtype=l.dtype, device=l.device)
            a.data[0] = torch.minimum(uk, self._k_cap).expand((2, n) + tuple(l.shape))
            a.data[1] = torch.minimum(lk, self._k_cap).expand((2, n) + tuple(l.shape))
            self.alpha[ns] = a

    def clip_alpha_(self):
        for a in self.alpha.values():
            a.data.clamp_(min=0.0)
            torch.minimum(a.data, self._k_cap, out=a.data)

    def dump_optimized_params(self):
        return self.alpha

    def restore_optimized_params(self, alpha):
        self.alpha = alpha

    def bound_backward(self, last_lA, last_uA, x, **kwargs):
        # auto_LiRPA starts the backward pass at an output node with a float32 identity: follow
        # the bounds' dtype instead (float64 models)
        last_lA, last_uA = _to_dtype(last_lA, x.lower.dtype), _to_dtype(last_uA, x.lower.dtype)
        start = kwargs.get("start_node")
        if start is None or (self.opt_stage in ("opt", "reuse") and start.name not in self.alpha):
            # a caller outside alpha-CROWN's bookkeeping, or a start node without slopes
            self._start = None if start is None else start.name
            stage, self.opt_stage = self.opt_stage, (None if self.opt_stage in ("opt", "reuse") else self.opt_stage)
            try:
                return BoundActivation.bound_backward(self, last_lA, last_uA, x)
            finally:
                self.opt_stage = stage
        return super().bound_backward(last_lA, last_uA, x, start_node=kwargs["start_node"],
                                      start_shape=kwargs.get("start_shape"))


class BoundFakeQuant(BoundStep):
    """``qa_lirpa::FakeQuant``: ``s * clamp(R(x/s), qmin - z, qmax - z)``; IBP keeps the STE gradient."""

    def __init__(self, attr=None, inputs=None, output_index=0, options=None):
        super().__init__(attr, inputs, output_index, options)
        self.scale = tuple(float(s) for s in _as_list(attr["scale"]))
        self.zero_point = tuple(int(z) for z in _as_list(attr["zero_point"]))
        self.qmin, self.qmax = int(attr["qmin"]), int(attr["qmax"])
        self.axis, self.rounding = int(attr["axis"]), int(attr["rounding"])

    def _args(self):
        return (self.scale, self.zero_point, self.qmin, self.qmax, self.axis, self.rounding)

    def forward(self, x):
        return FakeQuantFunction.apply(x, *self._args())

    def params(self, like):
        s = _channel(self.scale, like, self.axis)
        z = _channel(self.zero_point, like, self.axis)
        return 1.0 / s, 0.0, self.qmin - z, self.qmax - z, s, 0.0

    def interval_propagate(self, *v):
        l, u = v[0]
        w = self.slack + self.tol
        if w:
            s = _channel(self.scale, l, self.axis)
            l, u = l - w * s, u + w * s
        return Interval.make_interval(self.forward(l), self.forward(u), v[0])


class BoundRound(BoundStep):
    """``onnx::Round`` (half to even)."""

    def forward(self, x):
        return torch.round(x)

    def params(self, like):
        return 1.0, 0.0, -INF, INF, 1.0, 0.0


class BoundFloor(BoundStep):
    """``onnx::Floor``: the ``down`` mode (exact in any float dtype)."""

    rounding = 3

    def forward(self, x):
        return torch.floor(x)

    def params(self, like):
        return 1.0, 0.0, -INF, INF, 1.0, 0.0


class BoundCeil(BoundStep):
    """``onnx::Ceil``: the ``up`` mode (exact in any float dtype)."""

    rounding = 4

    def forward(self, x):
        return torch.ceil(x)

    def params(self, like):
        return 1.0, 0.0, -INF, INF, 1.0, 0.0


class BoundQuantizeLinear(BoundStep):
    """``onnx::QuantizeLinear(x, scale, zero_point)`` = ``clamp(round_half_even(x/s) + z, qmin, qmax)``;
    the output stays a float tensor of codes inside the bound graph."""

    def forward(self, x, scale, zero_point=None):
        z = zero_point if zero_point is not None else torch.zeros((), dtype=torch.uint8)
        lo, hi = _code_range(z)
        ax = self._axis(x)
        q = torch.round(x / _bcast(scale, x, ax).to(x.dtype)) + _bcast(z, x, ax).to(x.dtype)
        return torch.clamp(q, lo, hi)

    def _axis(self, x):
        ax = int(self.attr.get("axis", 1))
        return ax if ax >= 0 else x.dim() + ax

    def params(self, like):
        scale = self.inputs[1].value
        zp = self.inputs[2].value if len(self.inputs) > 2 else torch.zeros((), dtype=torch.uint8)
        lo, hi = _code_range(zp)
        ax = self._axis(like)
        return 1.0 / _bcast(scale, like, ax), _bcast(zp, like, ax).to(like.dtype), lo, hi, 1.0, 0.0

    def interval_propagate(self, *v):
        return super().interval_propagate(v[0])

    def bound_backward(self, last_lA, last_uA, x, *rest, **kwargs):
        A, lbias, ubias = super().bound_backward(last_lA, last_uA, x, **kwargs)
        return A + [(None, None)] * len(rest), lbias, ubias


class BoundDequantizeLinear(Bound):
    """``onnx::DequantizeLinear(q, scale, zero_point)`` = ``(q - z) * s``: affine, so exact."""

    def __init__(self, attr=None, inputs=None, output_index=0, options=None):
        super().__init__(attr, inputs, output_index, options)

    def _sz(self, like):
        ax = int(self.attr.get("axis", 1))
        ax = ax if ax >= 0 else like.dim() + ax
        s = _bcast(self.inputs[1].value, like, ax).to(like.dtype)
        z = self.inputs[2].value if len(self.inputs) > 2 else torch.zeros(())
        return s, _bcast(z, like, ax).to(like.dtype)

    def forward(self, q, scale, zero_point=None):
        s, z = self._sz(q.to(scale.dtype) if q.dtype in (torch.uint8, torch.int8, torch.int32) else q)
        return (q.to(s.dtype) - z) * s

    def interval_propagate(self, *v):
        (l, u) = v[0]
        s, z = self._sz(l)
        return Interval.make_interval((l - z) * s, (u - z) * s, v[0])

    def bound_backward(self, last_lA, last_uA, *x, **kwargs):
        like = torch.zeros((), dtype=self.inputs[1].value.dtype).expand(*self.output_shape)
        s, z = self._sz(like)
        def side(A):
            if A is None:
                return None, 0
            return A * s.unsqueeze(0), _sum_bias(A, -z * s)
        lA, lb = side(last_lA)
        uA, ub = side(last_uA)
        return [(lA, uA)] + [(None, None)] * (len(x) - 1), lb, ub


class BoundClip(BoundActivation):
    """``onnx::Clip(x, min, max)`` (opset >= 11 inputs; missing bounds are infinite)."""

    def _bounds(self, like):
        lo = self.inputs[1].value if len(self.inputs) > 1 and self.inputs[1] is not None else None
        hi = self.inputs[2].value if len(self.inputs) > 2 and self.inputs[2] is not None else None
        lo = self.attr.get("min", -INF) if lo is None else lo   # opset < 11 keeps them as attributes
        hi = self.attr.get("max", INF) if hi is None else hi
        lo = torch.as_tensor(lo, dtype=like.dtype, device=like.device)
        hi = torch.as_tensor(hi, dtype=like.dtype, device=like.device)
        return lo, hi

    def forward(self, x, lo=None, hi=None):
        a, b = self._bounds(x)
        return torch.minimum(torch.maximum(x, a), b)

    def interval_propagate(self, *v):
        l, u = v[0]
        return Interval.make_interval(self.forward(l), self.forward(u), v[0])

    def bound_relax(self, x):
        a, b = self._bounds(x.lower)
        a, b = a.expand_as(x.lower), b.expand_as(x.lower)
        self.lw, self.lb, self.uw, self.ub = relax.clip_lines(x.lower, x.upper, a, b)

    def bound_backward(self, last_lA, last_uA, x, *rest, **kwargs):
        A, lbias, ubias = super().bound_backward(last_lA, last_uA, x, **kwargs)
        return A + [(None, None)] * len(rest), lbias, ubias


def _to_dtype(A, dtype):
    return A.to(dtype) if isinstance(A, torch.Tensor) and A.dtype != dtype else A


def _sum_bias(A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum over the node's dims of A * b`` for a dense A of shape [spec, batch, *node_shape]."""
    prod = A * b.unsqueeze(0)
    return prod.reshape(prod.shape[0], prod.shape[1], -1).sum(-1)


def _as_list(v) -> list:
    if isinstance(v, torch.Tensor):
        return v.reshape(-1).tolist()
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _channel(values: tuple, like: torch.Tensor, axis: int) -> torch.Tensor:
    t = torch.tensor(values, dtype=like.dtype, device=like.device)
    if len(values) == 1:
        return t.reshape(())
    shape = [1] * like.dim()
    shape[axis if axis >= 0 else like.dim() + axis] = len(values)
    return t.reshape(shape)


def _bcast(t: torch.Tensor, like: torch.Tensor, axis: int) -> torch.Tensor:
    t = torch.as_tensor(t, device=like.device)
    if t.dim() == 0 or t.numel() == 1:
        return t.reshape(())
    shape = [1] * like.dim()
    shape[axis] = t.numel()
    return t.reshape(shape)


def _code_range(zp: torch.Tensor) -> tuple[int, int]:
    if zp.dtype == torch.uint8:
        return 0, 255
    if zp.dtype == torch.int8:
        return -128, 127
    if zp.dtype == torch.int16:
        return -32768, 32767
    if zp.dtype == torch.int32:
        return -2**31, 2**31 - 1
    return 0, 255


_ATEN_OPS = {"round": BoundRound, "floor": BoundFloor, "ceil": BoundCeil}


def bound_aten(attr, inputs, output_index, options):
    """``aten::ATen`` nodes (ops without an ONNX symbolic at auto_LiRPA's opset, e.g. ``round``):
    ours where we have one, else auto_LiRPA's ``BoundATen<Op>`` (a KeyError marks it unsupported)."""
    op = str(attr.get("operator", ""))
    if op in _ATEN_OPS:
        return _ATEN_OPS[op](attr, inputs, output_index, options)
    import auto_LiRPA.bound_general as bg

    return getattr(bg, f"BoundATen{op.capitalize()}")(attr, inputs, output_index, options) \
        if hasattr(bg, f"BoundATen{op.capitalize()}") else _unsupported(op)


def _unsupported(op: str):
    raise KeyError(f"aten::{op}")


CUSTOM_OPS: dict[str, object] = {
    "aten::ATen": bound_aten,
    "qa_lirpa::FakeQuant": BoundFakeQuant,
    "onnx::Round": BoundRound,
    "onnx::Floor": BoundFloor,
    "onnx::Ceil": BoundCeil,
    "onnx::Clip": BoundClip,
    "onnx::QuantizeLinear": BoundQuantizeLinear,
    "onnx::DequantizeLinear": BoundDequantizeLinear,
}
