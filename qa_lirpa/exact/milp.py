"""An exact MILP decision procedure for properties of quantized networks (HiGHS).

The model is a graph (:class:`~qa_lirpa.graph.QNNGraph`; a chain is one) that starts with its
input quantizer, with the semantics of :func:`qa_lirpa.integer_forward`. The encoder walks the
graph and asks each node's op definition for its encoding (``OpDef.milp``, written next to the
layer, from the encoder's primitives; :func:`encoding_problem` says which models have one). Every
quantity of that semantics is an integer, and the encoding states it with integer variables,
integer coefficients and integer right-hand sides only:

* input codes: integer variables, bounded by the codes of the box end points (quantization is
  monotone, so the integer grid inside a real box is the box of its end points' codes);
* affine layers: the accumulator of output ``j`` is an exact integer linear expression
  ``m_a * sum_i W_ji (x_i - z_in) + m_b * b_j`` at a common scale of input x weight and bias
  (no variable is needed);
* a requantization ``q = clamp(R(v * n / d) + z, qmin, qmax)`` (``n/d`` the rational rescale
  factor, ``v`` the centred integer input):

  - every mode but half to even with an even ``d`` is one floor of an integer expression
    (:func:`qa_lirpa.quant.intmath.floor_form`): down ``floor(n v / d)``; up ``ceil(n v / d) =
    floor((n v + d - 1) / d)``; half up ``floor((2 n v + d) / (2d))``; half down
    ``ceil((2 n v - d) / (2d)) = floor((2 n v + d - 1) / (2d))`` (both divided through by 2 for
    even ``d``; for odd ``d`` no tie exists and the three nearest modes coincide). A floor
    ``t = floor(u / D)`` of an integer ``u`` is ``D t <= u <= D t + D - 1`` (``t <= u/D < t + 1``);
  - round half to even (only when ``d`` is even; for odd ``d`` no tie exists and it equals half
    up): ``t = 2k + p`` with ``k`` integer, ``p`` binary and ``-d + p <= 2 n v - 2 d t <= d - p``
    (at a tie only the even neighbour satisfies it);
  - the clamp, fused with the floor: ``y = clamp(floor(u / D), lo, hi)`` with two binaries
    (``r = 0`` forces ``y = lo``, ``p = 0`` forces ``y = hi``)::

        u - D y <= D - 1 + Mu (1 - p),   y >= hi - (hi - yL) p
        D y - u <= Ml (1 - r),           y <= lo + (yU - lo) r

    with ``Mu = uU - D hi - D + 1`` and ``Ml = D lo - uL`` from the bounds ``[uL, uU]`` (below)
    of ``u``; a side whose clamp cannot be active gets the plain floor constraint and no binary,
    and a unit that is constant on the box becomes a constant;
* outputs: the real output is ``(q - z) * s``; a spec row ``sum_k a_k y_k <= b`` with float64
  (dyadic) coefficients is multiplied by the common denominator to integers, divided by the gcd
  of its variable coefficients and its right-hand side floored: an exact integer row;
* bounds: exact interval arithmetic on the integer expressions; with ``tighten`` (default) the
  input of every requantization that depends on earlier units is further bounded by two LPs over
  the relaxation built so far, made rigorous by weak duality (:class:`_LpBounder`: the bound is
  recomputed from the LP duals in float64 with an explicit rounding-error allowance, so it is
  valid whatever the LP solver's accuracy) and rounded inwards to integers;
* the property: one MILP per disjunct (``mode="split"``; disjuncts infeasible on the interval
  bounds or, rigorously, on the LP relaxation are dropped first; a one-row disjunct minimises its
  row, which stays a constraint, and stops at the first point) or one MILP with a binary selector
  per disjunct (``mode="combined"``: ``sum z_j >= 1``, rows relaxed by exact big-M when
  ``z_j = 0``).

Trust. A ``SAT`` verdict is never taken from the solver on faith: the solver's input codes are
rounded, turned into a real input inside the box, and run through ``integer_forward``; if the
disjunct does not hold exactly there, :class:`SolverError` is raised. An ``UNSAT`` verdict that
comes from bounds alone (interval arithmetic, or the weak-duality LP bounds) is rigorous. An
``UNSAT`` from a MILP solve rests on HiGHS's branch and bound being right about the
infeasibility of an integer program whose data are integers of bounded size (checked:
coefficients and right-hand sides below ``2^31``, every row's largest activity below ``2^45``, so
integral points have exactly representable activities; tolerances are set to ``1e-9``). HiGHS
produces no certificate, so this is the residual trust assumption (e.g. a node LP wrongly declared
infeasible within its tolerances); every MILP-based verifier makes it. ``TIMEOUT`` means
undecided within the resources (time, or a HiGHS limit).
"""
from __future__ import annotations

import atexit
import math
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..base.deadline import Deadline, as_deadline
from ..base.errors import QaLirpaError
from ..base.verdict import Verdict
from ..base.vnnlib import InputSpec
from ..graph import OpDef, UnsupportedOp, as_graph, input_quantizer, op_for
from ..nn import layers as _layers  # noqa: F401 - registers the op definitions of the built-in layers
from ..nn.reference import integer_codes, iter_layers
from ..quant.intmath import floor_form
from .highs_worker import TOLERANCE, HighsStatusError, Worker, new_highs as _new_highs, solve_mip, to_highs_lp

__all__ = ["MilpEncodingError", "SolverError", "MilpResult", "decide_milp", "solve_milp",
           "unsupported_reason", "COEF_LIMIT", "ACTIVITY_LIMIT"]

#: Largest absolute coefficient or right-hand side allowed in the MILP.
COEF_LIMIT = 1 << 31
#: Largest absolute row activity (over the variable bounds) allowed in the MILP.
ACTIVITY_LIMIT = 1 << 45


class MilpEncodingError(QaLirpaError, ValueError):
    """The model or spec cannot be encoded exactly (unsupported layer, numbers too large, ...)."""


class SolverError(QaLirpaError, RuntimeError):
    """HiGHS returned a point that is not a counterexample, or an unexpected status."""


class _OutOfTime(Exception):
    """The deadline passed while the MILP was being built (the verdict is ``timeout``)."""




# --------------------------------------------------------------------------------------------
# Integer linear expressions and the model under construction
# --------------------------------------------------------------------------------------------

class _Lin:
    """``sum coefs[v] * var_v + const`` with Python-int coefficients."""

    __slots__ = ("coefs", "const")

    def __init__(self, coefs: Optional[dict] = None, const: int = 0) -> None:
        self.coefs = coefs if coefs is not None else {}
        self.const = int(const)

    @staticmethod
    def var(v: int) -> "_Lin":
        return _Lin({v: 1}, 0)

    def is_const(self) -> bool:
        return not self.coefs

    def add_scaled(self, other: "_Lin", k: int) -> None:
        """``self += k * other`` in place."""
        if k == 0:
            return
        c = self.coefs
        for v, a in other.coefs.items():
            n = c.get(v, 0) + k * a
            if n:
                c[v] = n
            else:
                c.pop(v, None)
        self.const += k * other.const

    def scaled(self, k: int, add: int = 0) -> "_Lin":
        if k == 0:
            return _Lin({}, add)
        return _Lin({v: k * a for v, a in self.coefs.items()}, k * self.const + add)


class _Builder:
    """Integer columns (all integral: binaries are integers in [0, 1]) and rows."""

    def __init__(self) -> None:
        self.lb: list[int] = []
        self.ub: list[int] = []
        self.rows: list[tuple[dict, Optional[int], Optional[int]]] = []  # (coefs, lo, hi)
        self.n_binary = 0

    def new_var(self, lb: int, ub: int, binary: bool = False) -> int:
        if lb > ub:
            raise AssertionError("empty variable range")
        self.lb.append(int(lb))
        self.ub.append(int(ub))
        self.n_binary += int(binary)
        return len(self.lb) - 1

    def bounds(self, e: _Lin) -> tuple[int, int]:
        lo = hi = e.const
        lb, ub = self.lb, self.ub
        for v, a in e.coefs.items():
            if a > 0:
                lo += a * lb[v]
                hi += a * ub[v]
            else:
                lo += a * ub[v]
                hi += a * lb[v]
        return lo, hi

    def add_row(self, e: _Lin, lo: Optional[int] = None, hi: Optional[int] = None,
                rows: Optional[list] = None) -> None:
        """``lo <= e <= hi`` (None: unbounded); the constant moves to the bounds."""
        if e.is_const():
            if (lo is not None and e.const < lo) or (hi is not None and e.const > hi):
                raise AssertionError("constant row violated during encoding")
            return
        lo2 = None if lo is None else lo - e.const
        hi2 = None if hi is None else hi - e.const
        (self.rows if rows is None else rows).append((dict(e.coefs), lo2, hi2))


@dataclass
class _State:
    """The current layer's integer codes: ``exprs[j]`` with real value ``(code - zp[j]) * scale[j]``."""

    exprs: list
    scale: list
    zp: list
    shape: tuple


def _channel_index(shape: tuple, axis_with_batch: int) -> np.ndarray:
    """Channel index of each element of a flattened tensor of ``shape`` (no batch dimension) along
    ``axis_with_batch`` (an axis of the tensor with its batch dimension)."""
    nd = len(shape) + 1
    a = axis_with_batch % nd
    if a == 0:
        raise MilpEncodingError("per-channel quantization along the batch axis is not supported")
    return np.indices(shape).reshape(len(shape), -1)[a - 1]


def _per_tensor(state: _State, layer: str, error: type = MilpEncodingError) -> tuple[Fraction, int]:
    if len(set(state.scale)) != 1 or len(set(state.zp)) != 1:
        raise error(f"{layer}: its input must be quantized per tensor (as integer_forward requires)")
    return state.scale[0], state.zp[0]


def _common(a: Fraction, b: Fraction) -> Fraction:
    """The largest rational S with a / S and b / S integers."""
    den = a.denominator * b.denominator // math.gcd(a.denominator, b.denominator)
    num = math.gcd(a.numerator * (den // a.denominator), b.numerator * (den // b.denominator))
    return Fraction(num, den)


# --------------------------------------------------------------------------------------------
# Rigorous LP bounds (optimisation-based bound tightening)
# --------------------------------------------------------------------------------------------

class _LpBounder:
    """Lower bounds of integer linear expressions over the LP relaxation of the rows built so far,
    made rigorous by weak duality instead of trusting the LP solver's objective value.

    For any row multipliers ``y`` (HiGHS's duals, cleaned so that a multiplier only uses a finite
    row side) and ``d = c - A^T y``, every point of the relaxation has
    ``c.x = d.x + y.(A x) >= sum_j min(d_j lb_j, d_j ub_j) + sum_r (y_r lo_r or y_r hi_r)``.
    That sum is evaluated in float64 and an explicit bound on its rounding error (far larger than
    the worst case of IEEE arithmetic) is subtracted, so the result is a valid lower bound whatever
    the quality of ``y``; HiGHS only has to be good for the bound to be tight.
    """

    def __init__(self, b: "_Builder", threads: Optional[int] = None) -> None:
        import highspy

        _check_sizes(b, b.rows)                     # floats hold every coefficient exactly
        self.n = n = len(b.lb)
        self.lb = np.asarray(b.lb, dtype=np.float64)
        self.ub = np.asarray(b.ub, dtype=np.float64)
        self.row_lo = np.array([-np.inf if lo is None else float(lo) for _, lo, _ in b.rows])
        self.row_hi = np.array([np.inf if hi is None else float(hi) for _, _, hi in b.rows])
        ent_row, ent_col, ent_val = [], [], []
        for r, (coefs, _, _) in enumerate(b.rows):
            ent_row.extend([r] * len(coefs))
            ent_col.extend(coefs.keys())
            ent_val.extend(coefs.values())
        self.ent_row = np.asarray(ent_row, dtype=np.int64)
        self.ent_col = np.asarray(ent_col, dtype=np.int64)
        self.ent_val = np.asarray(ent_val, dtype=np.float64)
        self.h = _new_highs(threads)
        lp = _to_highs_lp(b.lb, b.ub, b.rows, integral=False)
        self.h.passModel(lp)
        self._cost_idx: list[int] = []
        self._optimal = highspy.HighsModelStatus.kOptimal

    def lower(self, coefs: dict, time_limit: float) -> Optional[float]:
        """A rigorous lower bound of ``sum coefs[v] x_v`` over the relaxation (None: no LP answer)."""
        h = self.h
        if self._cost_idx:
            h.changeColsCost(len(self._cost_idx), np.asarray(self._cost_idx, dtype=np.int32),
                             np.zeros(len(self._cost_idx)))
        if any(abs(a) >= COEF_LIMIT for a in coefs.values()):
            raise MilpEncodingError("LP objective coefficient exceeds 2^31")
        idx = np.asarray(list(coefs.keys()), dtype=np.int32)
        val = np.asarray(list(coefs.values()), dtype=np.float64)
        h.changeColsCost(len(idx), idx, val)
        self._cost_idx = idx.tolist()
        h.setOptionValue("time_limit", max(float(time_limit), 1e-3))
        h.run()
        if h.getModelStatus() != self._optimal:
            return None
        y = np.asarray(h.getSolution().row_dual, dtype=np.float64)
        c = np.zeros(self.n)
        c[idx] = val
        best = None
        for yy in (y, -y):                      # both are valid; whichever sign convention is tight
            v = self._safe(c, yy)
            best = v if best is None else max(best, v)
        return best

    def _safe(self, c: np.ndarray, y: np.ndarray) -> float:
        y = y.copy()
        y[~np.isfinite(y)] = 0.0
        y[(y > 0) & ~np.isfinite(self.row_lo)] = 0.0
        y[(y < 0) & ~np.isfinite(self.row_hi)] = 0.0
        prod = self.ent_val * y[self.ent_row]
        aty = np.bincount(self.ent_col, weights=prod, minlength=self.n)
        aty_abs = np.bincount(self.ent_col, weights=np.abs(prod), minlength=self.n)
        d = c - aty
        col_terms = np.minimum(d * self.lb, d * self.ub)
        row_terms = np.where(y > 0, y * np.where(np.isfinite(self.row_lo), self.row_lo, 0.0),
                             np.where(y < 0, y * np.where(np.isfinite(self.row_hi), self.row_hi, 0.0), 0.0))
        total = float(col_terms.sum() + row_terms.sum())
        mag = np.maximum(np.abs(self.lb), np.abs(self.ub))
        scale = float(((np.abs(c) + aty_abs) * mag).sum() + np.abs(col_terms).sum() + np.abs(row_terms).sum())
        if not math.isfinite(total) or not math.isfinite(scale):
            return -math.inf
        return total - 1e-9 * (1.0 + scale)


# --------------------------------------------------------------------------------------------
# The encoder
# --------------------------------------------------------------------------------------------

def _node_name(node, layer) -> str:
    return f"layer {node.name} ({type(layer).__name__})"


def encoding_problem(model: nn.Module, method: str = "milp") -> str:
    """Why ``model`` has no exact encoding by its ops' ``method`` (``"milp"`` or ``"cpsat"``); ""
    if it has one. The model's graph must start with its input quantizer; a node's op encodes it iff
    the op's class overrides ``OpDef.<method>`` and ``op.<method>_refusal(layer)`` is "" (e.g. a
    subclass of a known layer that brings its own ``int_forward``, such as the ONNX import's float32
    requantizer, whose rounding differs from the exact rational rounding encoded here, is refused)."""
    what = {"milp": "MILP", "cpsat": "CP-SAT"}[method]
    graph = as_graph(model)
    if not graph.nodes or input_quantizer(graph) is None:
        return "the model must start with a QuantInput layer"
    base = getattr(OpDef, method)
    for node, layer in graph.items():
        name = _node_name(node, layer)
        try:
            op = op_for(layer)
        except UnsupportedOp:
            return f"{name}: no exact {what} encoding for this layer type"
        if node.index > 0 and op.is_input:
            return f"{name}: a QuantInput must be the first layer only"
        if getattr(type(op), method) is base:
            return f"{name}: no exact {what} encoding for this layer type"
        reason = getattr(op, method + "_refusal")(layer)
        if reason:
            return f"{name}: {reason}"
    return ""


def unsupported_reason(model: nn.Module) -> str:
    """"" if every layer of ``model`` has an exact MILP encoding here, else the reason why not
    (the encoding can still fail later on numbers too large: :class:`MilpEncodingError`)."""
    return encoding_problem(model, "milp")


def spec_code_box(model: nn.Module, spec: InputSpec, input_shape, code_box=None, shape_only: bool = False):
    """``(shape, code_lo, code_hi)``: the batch-1 input shape and the integer code box of
    ``spec``'s real box (or ``code_box``, checked to lie inside it); the codes are None when the
    box holds no grid point. ValueError for inconsistent arguments. ``shape_only``: just the
    checked shape (before the model is known to start with a QuantInput)."""
    lower = np.asarray(spec.lower, dtype=np.float64).reshape(-1)
    upper = np.asarray(spec.upper, dtype=np.float64).reshape(-1)
    if np.isnan(lower).any() or np.isnan(upper).any():
        raise ValueError("spec bounds contain NaN")
    shape = tuple(int(v) for v in input_shape) if input_shape is not None else (1, lower.size)
    if int(np.prod(shape)) != lower.size or shape[0] != 1:
        raise ValueError(f"input_shape {shape} does not hold {lower.size} inputs with batch 1")
    if shape_only:
        return shape
    if (lower > upper).any():
        return shape, None, None
    first = next(iter(iter_layers(model)))
    code_lo, code_hi = _input_codes(first, lower, upper, shape)
    if code_box is None:
        return shape, code_lo, code_hi
    box_lo = np.asarray(code_box[0]).reshape(-1)
    box_hi = np.asarray(code_box[1]).reshape(-1)
    if box_lo.shape != code_lo.shape or box_hi.shape != code_hi.shape:
        raise ValueError(f"code_box must hold {code_lo.size} codes per end")
    if not (np.array_equal(box_lo, np.round(box_lo)) and np.array_equal(box_hi, np.round(box_hi))):
        raise ValueError("code_box must hold integer codes")
    box_lo, box_hi = box_lo.astype(np.int64), box_hi.astype(np.int64)
    if (box_lo < code_lo).any() or (box_hi > code_hi).any():
        raise ValueError("code_box must lie inside the input codes of the spec's box")
    if (box_lo > box_hi).any():
        return shape, None, None
    return shape, box_lo, box_hi


def input_scales(qi: nn.Module, shape: tuple) -> tuple[list[Fraction], list[int]]:
    """Per flat input (C order over ``shape``): the scale and zero point of the value the first
    layer sees (the input op's :meth:`~qa_lirpa.nn.quantizers.QuantInputOp.flat_formats`)."""
    return op_for(qi).flat_formats(qi, tuple(shape), MilpEncodingError)


class _GraphEncoder:
    """Walks the model's graph (:func:`~qa_lirpa.graph.as_graph`) keeping one :class:`_State` per
    node and asks each node's op for its encoding: ``op_for(layer).<method>(layer, self, *states)``
    (``method``: ``"milp"`` or ``"cpsat"``). The ops build their encodings from the primitives
    here (``input_codes``, ``affine``, ``add``, ``reshape``, ``per_tensor``) and from those of the
    backend's encoder (``requant``, ``relu``, ...). While a node is encoded, ``node`` is it and
    ``name`` names it for messages; ``Error`` is the backend's encoding error."""

    method = "milp"
    Error: type = MilpEncodingError

    def __init__(self, model: nn.Module, input_shape: tuple, deadline: Deadline = Deadline.never()) -> None:
        self.graph = as_graph(model)
        reason = encoding_problem(self.graph, self.method)
        if reason:
            raise self.Error(reason)
        self.ops = [op_for(layer) for _, layer in self.graph.items()]
        self.input_shape = tuple(int(s) for s in input_shape)
        self.deadline = deadline
        self.node = None
        self.name = ""
        self.input_vars: list[Optional[int]] = []

    # ----- the walk ----------------------------------------------------------------------------
    def check_time(self) -> None:
        """Raise :class:`_OutOfTime` once the deadline has passed (encoding big layers is slow)."""
        if self.deadline.expired():
            raise _OutOfTime()

    def enter(self, node, layer) -> None:
        """Called before a node is encoded."""
        self.node, self.name = node, _node_name(node, layer)

    def leave(self, node, state: _State) -> _State:
        """Called with a node's encoded value (its result is the node's value)."""
        return state

    def encode_input(self, code_lo: np.ndarray, code_hi: np.ndarray) -> _State:
        """The input quantizer's node: its op states the box ``[code_lo, code_hi]`` of input codes
        (flat) with :meth:`input_codes`."""
        node, layer = next(self.graph.items())
        self.enter(node, layer)
        return self.leave(node, getattr(self.ops[0], self.method)(layer, self, (code_lo, code_hi)))

    def encode_layers(self, state: _State) -> _State:
        """The output state of the graph, from the input quantizer's state (:meth:`encode_input`)."""
        method = self.method

        def step(node, layer, *states):
            if node.index == 0:
                return states[0]
            self.check_time()
            self.enter(node, layer)
            return self.leave(node, getattr(self.ops[node.index], method)(layer, self, *states))

        try:
            return self.graph.walk(state, step)
        finally:
            self.node = None

    # ----- primitives (shared by the backends) ----------------------------------------------------
    def new_input_var(self, lo: int, hi: int, i: int) -> int:
        raise NotImplementedError

    def input_codes(self, code_lo, code_hi, scales: list, zps: list) -> _State:
        """Input codes in ``[code_lo, code_hi]`` (flat): a variable each, a constant where fixed;
        ``scales``/``zps``: the format of each flat input."""
        exprs = []
        for i in range(len(scales)):
            lo, hi = int(code_lo[i]), int(code_hi[i])
            if lo == hi:
                exprs.append(_Lin({}, lo))
                self.input_vars.append(None)
            else:
                v = self.new_input_var(lo, hi, i)
                exprs.append(_Lin.var(v))
                self.input_vars.append(v)
        return _State(exprs, list(scales), list(zps), tuple(self.input_shape[1:]))

    def per_tensor(self, state: _State) -> tuple[Fraction, int]:
        """``(scale, zero point)`` of a per-tensor quantized value (else the encoding error)."""
        return _per_tensor(state, self.name, self.Error)

    def reshape(self, state: _State, shape: tuple) -> _State:
        """The same values (flat, C order) with another shape (per-tensor values only, as
        ``integer_forward`` requires)."""
        self.per_tensor(state)
        if int(np.prod(shape)) != len(state.exprs):
            raise self.Error(f"{self.name}: cannot reshape {len(state.exprs)} values to {tuple(shape)}")
        return _State(state.exprs, state.scale, state.zp, tuple(shape))

    def affine(self, state: _State, matrix: tuple, plan) -> _State:
        """A weighted layer: ``matrix = (mat, out_channel, out_shape)`` its integer matrix on the
        flat input (``OpDef`` ``matrix``), ``plan(s_in)`` its integer plan ``(scales, m_acc,
        bias codes, m_b)`` (``affine_scales``): ``acc_j = m_acc[c] sum_i mat[j, i] (x_i - z_in) +
        m_b[c] b[c]`` at scale ``scales[c]`` (``c`` the channel of row ``j``), exactly."""
        mat, out_channel, out_shape = matrix
        s_in, z_in = self.per_tensor(state)
        try:
            scales, m_acc, bq, m_b = plan(s_in)
        except ValueError as e:
            raise self.Error(f"{self.name}: {e}") from None
        bias = None if bq is None else [int(v) for v in bq.reshape(-1).tolist()]
        centred = [e.scaled(1, -z_in) for e in state.exprs]
        exprs, out_scales = [], []
        for j in range(mat.shape[0]):
            if j % 64 == 0:
                self.check_time()
            o = int(out_channel[j])
            row = mat[j]
            k = m_acc[o]
            acc = _Lin({}, 0)
            for i in np.flatnonzero(row):
                acc.add_scaled(centred[i], int(row[i]) * k)
            if bias is not None:
                acc.const += m_b[o] * bias[o]
            exprs.append(acc)
            out_scales.append(scales[o])
        return _State(exprs, out_scales, [0] * len(exprs), tuple(out_shape))

    def add(self, a: _State, b: _State) -> _State:
        """``a + b`` of two values of the same shape, exactly, at the common scale of each pair of
        units (centred: zero point 0); requantize it with :meth:`requant`."""
        if a.shape != b.shape or len(a.exprs) != len(b.exprs):
            raise self.Error(f"{self.name}: inputs of shapes {a.shape} and {b.shape}")
        plans: dict = {}
        exprs, scales = [], []
        for ea, sa, za, eb, sb, zb in zip(a.exprs, a.scale, a.zp, b.exprs, b.scale, b.zp):
            p = plans.get((sa, sb))
            if p is None:
                S = _common(sa, sb)
                p = plans[(sa, sb)] = (S, int(sa / S), int(sb / S))
            S, ma, mb = p
            e = ea.scaled(ma, -za * ma)
            e.add_scaled(eb, mb)
            e.const -= zb * mb
            exprs.append(e)
            scales.append(S)
        return _State(exprs, scales, [0] * len(exprs), a.shape)


    def linear(self, state: _State, mat: np.ndarray, scales: list, shape: tuple) -> _State:
        """``y_j = sum_i mat[j, i] (x_i - z_i)`` (integer matrix, centred inputs) at scale
        ``scales[j]``, zero point 0, exactly (e.g. sum pooling)."""
        centred = [e.scaled(1, -z) for e, z in zip(state.exprs, state.zp)]
        exprs = []
        for j in range(mat.shape[0]):
            if j % 64 == 0:
                self.check_time()
            row = mat[j]
            acc = _Lin({}, 0)
            for i in np.flatnonzero(row):
                acc.add_scaled(centred[i], int(row[i]))
            exprs.append(acc)
        return _State(exprs, list(scales), [0] * len(exprs), tuple(shape))

    def gather(self, states: Sequence[_State], index: Sequence[int], shape: tuple) -> _State:
        """Element ``j`` of the result is element ``index[j]`` of the inputs' values concatenated
        (flat, in input order), with its format (e.g. a concatenation)."""
        exprs, scales, zps = [], [], []
        for st in states:
            exprs.extend(st.exprs)
            scales.extend(st.scale)
            zps.extend(st.zp)
        idx = [int(i) for i in index]
        return _State([exprs[i] for i in idx], [scales[i] for i in idx], [zps[i] for i in idx], tuple(shape))

    def max_windows(self, state, windows):
        """For each max-pool window ``j``: ``(j, window, bounds of its inputs, the largest lower
        bound, [(input, bounds)] of the inputs that can be the maximum)``; the window's inputs
        must share one format. Checks the time every 64 windows."""
        for j, win in enumerate(windows):
            if j % 64 == 0:
                self.check_time()
            win = [int(i) for i in win]
            if len({(state.scale[i], state.zp[i]) for i in win}) != 1:
                raise self.Error(f"{self.name}: a window mixes quantization formats")
            bounds = [self.b.bounds(state.exprs[i]) for i in win]
            floor = max(lo for lo, _ in bounds)
            yield j, win, bounds, floor, [(i, bd) for i, bd in zip(win, bounds) if bd[1] >= floor]


class _Encoder(_GraphEncoder):
    """The MILP encoder: integer columns and rows in :attr:`b`."""

    def __init__(self, model: nn.Module, input_shape: tuple, tighten: bool = False,
                 deadline: Deadline = Deadline.never(), threads: Optional[int] = None) -> None:
        super().__init__(model, input_shape, deadline)
        self.tighten = tighten
        self.threads = threads
        self.n_tightened = 0
        self.b = _Builder()
        self.n_units = 0          # requantized units that needed a variable

    def new_input_var(self, lo: int, hi: int, i: int) -> int:
        return self.b.new_var(lo, hi)

    def relu(self, state: _State) -> _State:
        """``max(q, z)`` of every unit (ReLU on codes)."""
        bounds = self._lp_bounds(state.exprs)
        exprs = [self._floor_clamp(e, 1, z, None, bd) for e, z, bd in zip(state.exprs, state.zp, bounds)]
        return _State(exprs, state.scale, state.zp, state.shape)

    def _lp_bounds(self, exprs: list) -> list:
        """Rigorous LP bounds ``(lo, hi)`` (integers) of expressions that depend on earlier
        requantized units (bounds of expressions of input codes alone are exact already); None
        where not computed."""
        out: list = [None] * len(exprs)
        if not self.tighten or not self.b.rows:
            return out
        inputs = {v for v in self.input_vars if v is not None}
        todo = [j for j, e in enumerate(exprs) if e.coefs and any(v not in inputs for v in e.coefs)]
        if not todo:
            return out
        lp = _LpBounder(self.b, self.threads)
        for j in todo:
            e = exprs[j]
            left = self.deadline.remaining()
            if left <= 0:
                break
            lo = lp.lower(e.coefs, left)
            neg = {v: -a for v, a in e.coefs.items()}
            hi = lp.lower(neg, max(self.deadline.remaining(), 1e-3))
            ilo, ihi = self.b.bounds(e)
            if lo is not None and math.isfinite(lo):
                ilo = max(ilo, math.ceil(lo) + e.const)
            if hi is not None and math.isfinite(hi):
                ihi = min(ihi, -math.ceil(hi) + e.const)
            if ilo > ihi:
                raise AssertionError("LP bound tightening produced an empty range")
            out[j] = (ilo, ihi)
            self.n_tightened += 1
        return out

    def requant(self, spec, state: _State) -> _State:
        """``clamp(R(v * s_in / s_out) + z, qmin, qmax)`` of every unit (``spec``: the output
        format), exactly; the inputs of units that depend on earlier units are bounded by LPs first
        (``tighten``)."""
        name = self.name
        n = len(state.exprs)
        o_scales, o_zps = spec.scale_fractions(), spec.zero_points()
        if spec.per_channel:
            ch = _channel_index(state.shape, spec.axis)
            if len(ch) != n or int(ch.max()) >= spec.channels:
                raise MilpEncodingError(f"{name}: {spec.channels} channel scales do not fit shape {state.shape}")
        else:
            ch = np.zeros(n, dtype=np.int64)
        exprs, scales, zps = [], [], []
        centred = [e.scaled(1, -state.zp[j]) for j, e in enumerate(state.exprs)]
        lp_bounds = self._lp_bounds(centred)
        for j, v in enumerate(centred):
            if j % 64 == 0:
                self.check_time()
            s_out, z_out = o_scales[int(ch[j])], o_zps[int(ch[j])]
            mult = state.scale[j] / s_out
            num, den = mult.numerator, mult.denominator
            vb = lp_bounds[j]
            lo, hi = spec.qmin - z_out, spec.qmax - z_out  # clamp range of R(...)
            form = floor_form(spec.rounding, den)      # R(n/den) = floor((a n + c) / D), or None
            if form is not None:
                a, c, D = form
                y = self._floor_clamp(v.scaled(a * num, c), D, lo, hi, _affine_bounds(vb, a * num, c))
            elif spec.rounding == "half_even":
                t = self._round_half_even(v.scaled(num), den, _affine_bounds(vb, num, 0))
                y = self._floor_clamp(t, 1, lo, hi)
            else:
                raise MilpEncodingError(f"{name}: rounding mode {spec.rounding!r} has no MILP encoding")
            exprs.append(y.scaled(1, z_out))
            scales.append(s_out)
            zps.append(z_out)
        return _State(exprs, scales, zps, state.shape)

    def max(self, state: _State, windows: Sequence[Sequence[int]], shape: tuple) -> _State:
        """``y_j = max_{i in windows[j]} x_i`` of codes (one format per window), with the standard
        big-M encoding: ``y >= x_i``, ``y <= x_i + (U - L_i)(1 - d_i)``, ``sum_i d_i = 1``
        (``d_i`` binary; ``U`` the largest upper bound, ``L_i`` the lower bound of ``x_i``); an
        input that can never be the maximum (``U_i < max_k L_k``) takes no part."""
        b = self.b
        exprs, scales, zps = [], [], []
        for j, win, bounds, floor, cand in self.max_windows(state, windows):
            if len(cand) == 1:
                exprs.append(state.exprs[cand[0][0]])
            else:
                top = max(hi for _, (_, hi) in cand)
                y = b.new_var(floor, top)
                self.n_units += 1
                ds = []
                for i, (lo, _) in cand:
                    x = state.exprs[i]
                    ge = _Lin({y: 1})                    # y - x >= 0
                    ge.add_scaled(x, -1)
                    b.add_row(ge, 0, None)
                    d = b.new_var(0, 1, binary=True)
                    ds.append(d)
                    big = top - lo
                    le = _Lin({y: 1, d: big})            # y - x + M d <= M
                    le.add_scaled(x, -1)
                    b.add_row(le, None, big)
                b.add_row(_Lin({d: 1 for d in ds}), 1, 1)
                exprs.append(_Lin.var(y))
            scales.append(state.scale[win[0]])
            zps.append(state.zp[win[0]])
        return _State(exprs, scales, zps, tuple(shape))

    # ----- the two primitive encodings -----------------------------------------------------------
    def unit_bounds(self, u: _Lin, extra: Optional[tuple] = None) -> tuple[int, int]:
        """Exact interval bounds of an integer expression over the variable bounds, intersected
        with ``extra`` (rigorous LP bounds) when given."""
        lo, hi = self.b.bounds(u)
        if extra is not None:
            lo, hi = max(lo, extra[0]), min(hi, extra[1])
            if lo > hi:
                raise AssertionError("inconsistent unit bounds")
        return lo, hi

    def _round_half_even(self, u: _Lin, d: int, ubounds: Optional[tuple] = None) -> _Lin:
        """``t = round_half_even(u / d)`` for even ``d`` (parity variable formulation)."""
        b = self.b
        uL, uU = self.unit_bounds(u, ubounds)
        tL, tU = _rhe(uL, d), _rhe(uU, d)
        if tL == tU:
            return _Lin({}, tL)
        t = b.new_var(tL, tU)
        k = b.new_var(_floor_div(tL, 2), _floor_div(tU, 2))
        p = b.new_var(0, 1, binary=True)
        # t = 2k + p
        b.add_row(_Lin({t: 1, k: -2, p: -1}), 0, 0)
        # -d + p <= 2u - 2 d t <= d - p
        e = u.scaled(2)
        e.add_scaled(_Lin({t: -2 * d}), 1)
        lo_row = _Lin(dict(e.coefs), e.const)
        lo_row.add_scaled(_Lin({p: -1}), 1)
        b.add_row(lo_row, -d, None)
        hi_row = _Lin(dict(e.coefs), e.const)
        hi_row.add_scaled(_Lin({p: 1}), 1)
        b.add_row(hi_row, None, d)
        return _Lin.var(t)

    def _floor_clamp(self, u: _Lin, D: int, lo: int, hi: Optional[int], ubounds: Optional[tuple] = None) -> _Lin:
        """``y = clamp(floor(u / D), lo, hi)`` exactly (``hi=None``: no upper clamp)."""
        b = self.b
        uL, uU = self.unit_bounds(u, ubounds)
        tL, tU = _floor_div(uL, D), _floor_div(uU, D)

        def clamp(t: int) -> int:
            t = max(t, lo)
            return t if hi is None else min(t, hi)

        yL, yU = clamp(tL), clamp(tU)
        if yL == yU:
            return _Lin({}, yL)
        low = tL < lo
        high = hi is not None and tU > hi
        if D == 1 and not low and not high:
            return u
        self.n_units += 1
        y = b.new_var(yL, yU)
        # floor(u / D) <= y, unless y is clamped at hi:  u - D y <= D - 1 [+ Mu (1 - p)]
        up = _Lin(dict(u.coefs), u.const)
        up.add_scaled(_Lin({y: -D}), 1)
        if high:
            p = b.new_var(0, 1, binary=True)
            mu = uU - D * hi - D + 1
            up.add_scaled(_Lin({p: mu}), 1)
            b.add_row(up, None, D - 1 + mu)
            b.add_row(_Lin({y: 1, p: hi - yL}), hi, None)        # p = 0  =>  y >= hi
        else:
            b.add_row(up, None, D - 1)
        # D y <= u, unless y is clamped at lo:  D y - u <= [Ml (1 - r)]
        dn = u.scaled(-1)
        dn.add_scaled(_Lin({y: D}), 1)
        if low:
            r = b.new_var(0, 1, binary=True)
            ml = D * lo - uL
            dn.add_scaled(_Lin({r: ml}), 1)
            b.add_row(dn, None, ml)
            b.add_row(_Lin({y: 1, r: -(yU - lo)}), None, lo)     # r = 0  =>  y <= lo
        else:
            b.add_row(dn, None, 0)
        return _Lin.var(y)


def _affine_bounds(b: Optional[tuple], k: int, add: int) -> Optional[tuple]:
    """Bounds of ``k * v + add`` (k > 0) from bounds of ``v``."""
    return None if b is None else (k * b[0] + add, k * b[1] + add)


def _floor_div(a: int, b: int) -> int:
    return a // b


def _rhe(u: int, d: int) -> int:
    """round_half_even(u / d) for integers, d > 0."""
    q, r = divmod(u, d)
    if 2 * r > d or (2 * r == d and q % 2 == 1):
        return q + 1
    return q


# --------------------------------------------------------------------------------------------
# Spec rows
# --------------------------------------------------------------------------------------------

def _spec_rows(b: _Builder, out: _State, mat: np.ndarray, rhs: np.ndarray):
    """Exact integer rows ``(coefs, hi)`` meaning ``coefs . vars <= hi`` for ``mat @ y <= rhs``;
    ``None`` if some row is infeasible on the output bounds (the disjunct is unsat), and rows that
    hold everywhere are dropped."""
    rows = []
    for r in range(mat.shape[0]):
        fr = [Fraction(float(a)) for a in mat[r]]
        b_r = Fraction(float(rhs[r]))
        terms = [(a * out.scale[k], k) for k, a in enumerate(fr) if a != 0]
        den = b_r.denominator
        for a, _ in terms:
            den = den * a.denominator // math.gcd(den, a.denominator)
        e = _Lin({}, 0)
        for a, k in terms:
            e.add_scaled(out.exprs[k].scaled(1, -out.zp[k]), int(a * den))
        hi = int(b_r * den) - e.const
        e.const = 0
        if not e.coefs:
            if 0 > hi:
                return None
            continue
        g = 0
        for c in e.coefs.values():
            g = math.gcd(g, c)
        e = _Lin({v: c // g for v, c in e.coefs.items()}, 0)
        hi = _floor_div(hi, g)
        lo_b, hi_b = b.bounds(e)
        if lo_b > hi:
            return None
        if hi_b <= hi:
            continue
        rows.append((e, hi))
    return rows


def _check_sizes(b: _Builder, rows) -> None:
    for coefs, lo, hi in rows:
        for c in coefs.values():
            if abs(c) >= COEF_LIMIT:
                raise MilpEncodingError(f"MILP coefficient {c} exceeds 2^31: no trustworthy float encoding")
        for v in (lo, hi):
            if v is not None and abs(v) >= COEF_LIMIT:
                raise MilpEncodingError(f"MILP right-hand side {v} exceeds 2^31")
        act = 0
        for v, c in coefs.items():
            act += abs(c) * max(abs(b.lb[v]), abs(b.ub[v]))
        if act >= ACTIVITY_LIMIT:
            raise MilpEncodingError(f"MILP row activity up to {act} exceeds 2^45")


# --------------------------------------------------------------------------------------------
# HiGHS
# --------------------------------------------------------------------------------------------

_to_highs_lp = to_highs_lp

#: the worker process of hard-deadline solves (started on first use, restarted after a kill)
_WORKER = Worker()
atexit.register(_WORKER.close)


#: the MILP solvers :func:`solve_milp` can hand its model to
SOLVERS = ("highs", "scip")


def _mip_solve(lb: list, ub: list, rows: list, time_limit: float, threads: Optional[int],
                 cost: Optional[dict] = None, target: Optional[float] = None, hard: bool = False,
                 solver: str = "highs", seed: int = 0):
    """Solve the MILP (feasibility, or minimise ``cost`` and stop once the objective is at most
    ``target``); returns (verdict, column values or None, node count), see
    :func:`~qa_lirpa.exact.highs_worker.solve_mip`. ``hard``: in the worker
    process, killed ``0.1`` s after ``time_limit`` whatever HiGHS is doing. ``solver="scip"``:
    the same model to SCIP (:func:`qa_lirpa.exact.scip.solve_mip`, in this process: it keeps
    its time limit)."""
    if solver == "scip":
        from .scip import ScipStatusError, solve_mip as scip_solve_mip

        try:
            return scip_solve_mip(lb, ub, rows, time_limit, threads, cost, target, seed)
        except ScipStatusError as e:
            raise SolverError(str(e)) from None
    try:
        if hard:
            return _WORKER.solve(lb, ub, rows, time_limit, threads, cost, target)
        return solve_mip(lb, ub, rows, time_limit, threads, cost, target)
    except HighsStatusError as e:
        raise SolverError(str(e)) from None


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

@dataclass
class ExactResult:
    """Outcome of an exact procedure (:func:`solve_milp`, :func:`qa_lirpa.exact.cpsat.solve_cpsat`)."""

    verdict: Verdict                              # SAT | UNSAT | TIMEOUT
    counterexample: Optional[np.ndarray] = None   # real input (flat, float64) for SAT
    disjunct: Optional[int] = None                # index of the violated disjunct for SAT
    time_s: float = 0.0
    n_vars: int = 0
    disjuncts_skipped: int = 0                    # proved unsat by bounds alone
    disjuncts_solved: int = 0                     # solver runs


@dataclass
class MilpResult(ExactResult):
    """Outcome of :func:`solve_milp`."""

    n_binaries: int = 0
    n_rows: int = 0
    nodes: int = 0
    stats: dict = field(default_factory=dict)


def _input_codes(qi: nn.Module, lower: np.ndarray, upper: np.ndarray, shape: tuple):
    lo = torch.from_numpy(lower.astype(np.float64)).reshape(shape)
    hi = torch.from_numpy(upper.astype(np.float64)).reshape(shape)
    return qi.codes(lo).reshape(-1).numpy(), qi.codes(hi).reshape(-1).numpy()


def _confirm(model: nn.Module, spec: InputSpec, d: int, x_codes: np.ndarray, shape: tuple) -> np.ndarray:
    """A real input in the box with codes ``x_codes`` on which disjunct ``d`` holds exactly under
    ``integer_forward``; raises :class:`SolverError` otherwise."""
    qi = next(iter_layers(model))
    q = torch.from_numpy(x_codes.astype(np.int64)).reshape(shape)
    x = qi.real_inputs(q).reshape(-1).numpy()
    x = np.minimum(np.maximum(x, spec.lower), spec.upper)
    xt = torch.from_numpy(x).reshape(shape)
    if not torch.equal(qi.codes(xt).reshape(-1), torch.from_numpy(x_codes.astype(np.int64))):
        raise SolverError("MILP counterexample: no real input in the box has the solver's input codes")
    out = integer_codes(model, xt)
    vals = out.values.reshape(-1).tolist()
    n_out = len(vals)
    sc = out.scale * n_out if len(out.scale) == 1 else out.scale
    zp = out.zero_point * n_out if len(out.zero_point) == 1 else out.zero_point
    if len(sc) != n_out or len(zp) != n_out:
        raise SolverError("unexpected output quantization layout")
    y = [(v - z) * s for v, z, s in zip(vals, zp, sc)]
    mat, rhs = spec.disjuncts[d]
    for r in range(mat.shape[0]):
        lhs = sum((Fraction(float(a)) * y[k] for k, a in enumerate(mat[r]) if a != 0), Fraction(0))
        if lhs > Fraction(float(rhs[r])):
            raise SolverError(f"MILP counterexample does not violate disjunct {d} under integer_forward "
                              f"(row {r}: {float(lhs)} > {float(rhs[r])})")
    return x


def solve_milp(model: nn.Module, spec: InputSpec, timeout: float | Deadline = 60.0,
               input_shape: Optional[Sequence[int]] = None, mode: str = "split", objective: bool = True, tighten: bool = True,
               threads: Optional[int] = None,
               code_box: Optional[tuple[np.ndarray, np.ndarray]] = None, hard_timeout: bool = False,
               solver: str = "highs", seed: int = 0) -> MilpResult:
    """Decide ``spec`` on ``model`` exactly (see the module docstring); details in :class:`MilpResult`.

    ``input_shape``: the model's input shape with batch dimension 1 (default ``(1, n_inputs)``;
    needed for convolutional models). ``mode``: ``"split"`` (one MILP per disjunct, most promising
    first) or ``"combined"`` (one MILP with a selector binary per disjunct). ``objective`` (split
    mode, one-row disjuncts): minimise the row's left-hand side and stop at the first point that
    satisfies it; the row stays a constraint, so this only guides the search (on the AAAI'21
    benchmark it finds counterexamples in seconds that pure feasibility search misses in 60 s).
    ``tighten``: bound the inputs of every requantization that depends on earlier units with
    rigorous LP bounds (two LPs per unit, made safe by weak duality, see :class:`_LpBounder`)
    before encoding it, and drop disjuncts whose rows are infeasible on the LP relaxation: smaller
    big-Ms, more units fixed (on the AAAI'21 benchmark it turns 60 s timeouts into seconds).
    ``timeout`` (seconds from now, or a :class:`~qa_lirpa.base.deadline.Deadline`) covers
    everything, the building of the MILP included (checked between layers and every 64 units). ``threads``: HiGHS's ``threads`` option (None: HiGHS's default).
    ``code_box``: integer input codes ``(lo, hi)`` (flat) inside the codes of ``spec``'s box; the
    MILP is then over that sub-box of the grid only (branch and bound hands over its open boxes
    this way). A counterexample is still a real input inside ``spec``'s box.
    ``hard_timeout``: HiGHS overshoots its time limit where it does not check the clock (more
    than 3 s in the root node of an AAAI'21 instance); with this flag each MILP runs in a worker
    process (:class:`~qa_lirpa.exact.highs_worker.Worker`) that is killed 0.1 s after the
    deadline, which then answers ``timeout`` (the LPs of ``tighten`` stay in this process: the
    simplex method checks the clock often).
    ``solver``: ``"highs"`` (default) or ``"scip"`` (PySCIPOpt, :mod:`qa_lirpa.exact.scip`): the
    same MILP, solved by SCIP (its cut separation off; it stops at the first feasible point); the
    LPs of ``tighten`` stay HiGHS's. ``hard_timeout`` applies to HiGHS only. ``seed``: SCIP's
    random seed shift (another seed searches elsewhere; SCIP only).
    """
    t0 = time.perf_counter()
    deadline = as_deadline(timeout)
    if mode not in ("split", "combined"):
        raise ValueError(f"mode must be 'split' or 'combined', got {mode!r}")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    res = MilpResult(Verdict.UNSAT)
    shape = spec_code_box(model, spec, input_shape, shape_only=True)
    enc = _Encoder(model, shape, tighten=tighten, deadline=deadline, threads=threads)
    shape, code_lo, code_hi = spec_code_box(model, spec, input_shape, code_box)
    if code_lo is None:                           # no grid point: nothing can violate
        res.time_s = time.perf_counter() - t0
        return res
    try:
        state = enc.encode_layers(enc.encode_input(code_lo, code_hi))
    except _OutOfTime:
        res.verdict, res.time_s = Verdict.TIMEOUT, time.perf_counter() - t0
        return res
    if len(state.exprs) != spec.disjuncts[0][0].shape[1]:
        raise ValueError(f"spec has {spec.disjuncts[0][0].shape[1]} outputs, the model {len(state.exprs)}")
    b = enc.b

    live = []
    for d, (mat, rhs) in enumerate(spec.disjuncts):
        mat = np.asarray(mat, dtype=np.float64)
        rhs = np.asarray(rhs, dtype=np.float64).reshape(-1)
        if not (np.isfinite(mat).all() and np.isfinite(rhs).all()):
            raise MilpEncodingError(f"disjunct {d}: non-finite coefficients")
        rows = _spec_rows(b, state, mat, rhs)
        if rows is None:
            res.disjuncts_skipped += 1
        else:
            _check_sizes(b, [(e.coefs, None, hi) for e, hi in rows])
            live.append((d, rows))
    base_rows = b.rows
    _check_sizes(b, base_rows)
    res.n_vars, res.n_binaries, res.n_rows = len(b.lb), b.n_binary, len(base_rows)
    res.stats["units"] = enc.n_units
    res.stats["lp_tightened"] = enc.n_tightened
    if tighten and base_rows and live:
        # a disjunct with a row that the LP relaxation cannot satisfy is unsat (rigorous bound)
        lp = _LpBounder(b, threads)
        kept = []
        for d, rows in live:
            dead = False
            for e, hi in rows:
                left = deadline.remaining()
                if left <= 0:
                    break
                bound = lp.lower(e.coefs, left)
                if bound is not None and math.ceil(bound) > hi:
                    dead = True
                    break
            if dead:
                res.disjuncts_skipped += 1
            else:
                kept.append((d, rows))
        res.stats["lp_skipped"] = len(live) - len(kept)
        live = kept

    def finish(verdict: Verdict, x=None, d=None) -> MilpResult:
        res.verdict, res.counterexample, res.disjunct = verdict, x, d
        res.time_s = time.perf_counter() - t0
        return res

    def codes_from(sol: list) -> np.ndarray:
        xs = code_lo.astype(np.int64).copy()
        for i, v in enumerate(enc.input_vars):
            if v is not None:
                val = sol[v]
                q = int(round(val))
                if abs(val - q) > 1e-5:             # within the solvers' integrality tolerance
                    raise SolverError(f"{solver} returned a fractional input code {val}")
                xs[i] = q
        return xs

    if not live:
        return finish(Verdict.UNSAT)
    for d, rows in live:
        if not rows:                              # holds on the whole box: any point violates
            return finish(Verdict.SAT, _confirm(model, spec, d, code_lo.astype(np.int64), shape), d)

    # Order: disjuncts whose rows have the most slack on the interval bounds first (likelier sat).
    def slack(item) -> float:
        worst = 1.0
        for e, hi in item[1]:
            lo_b, hi_b = b.bounds(e)
            worst = min(worst, (hi - lo_b) / max(1, hi_b - lo_b))
        return worst
    live.sort(key=slack, reverse=True)

    if mode == "combined" and len(live) > 1:
        lb, ub = list(b.lb), list(b.ub)
        extra = []
        sel = []
        for d, rows in live:
            z = len(lb)
            lb.append(0)
            ub.append(1)
            sel.append((z, d))
            for e, hi in rows:
                big = b.bounds(e)[1] - hi          # > 0, else the row would have been dropped
                coefs = dict(e.coefs)
                coefs[z] = big
                extra.append((coefs, None, hi + big))
        extra.append(({z: 1 for z, _ in sel}, 1, None))
        tmp = _Builder()
        tmp.lb, tmp.ub = lb, ub
        _check_sizes(tmp, extra)
        res.disjuncts_solved = 1
        status, sol, nodes = _mip_solve(lb, ub, base_rows + extra, deadline.remaining(), threads,
                                          hard=hard_timeout, solver=solver, seed=seed)
        res.nodes += nodes
        if status is Verdict.SAT:
            chosen = [d for z, d in sel if sol[z] > 0.5]
            xs = codes_from(sol)
            x = _confirm(model, spec, chosen[0], xs, shape)
            return finish(Verdict.SAT, x, chosen[0])
        return finish(status)                     # UNSAT or TIMEOUT

    timed_out = False
    for d, rows in live:
        left = deadline.remaining()
        if left <= 0:
            timed_out = True
            break
        extra = [(dict(e.coefs), None, hi) for e, hi in rows]
        res.disjuncts_solved += 1
        cost = target = None
        if objective and len(rows) == 1:
            cost, target = dict(rows[0][0].coefs), rows[0][1]
        status, sol, nodes = _mip_solve(b.lb, b.ub, base_rows + extra, left, threads, cost, target,
                                          hard=hard_timeout, solver=solver, seed=seed)
        res.nodes += nodes
        if status is Verdict.SAT:
            x = _confirm(model, spec, d, codes_from(sol), shape)
            return finish(Verdict.SAT, x, d)
        if status is Verdict.TIMEOUT:
            timed_out = True
            break
    return finish(Verdict.TIMEOUT if timed_out else Verdict.UNSAT)


def decide_milp(model: nn.Module, spec: InputSpec, timeout: float | Deadline = 60.0,
                input_shape: Optional[Sequence[int]] = None, **kw):
    """Decide whether some input in ``spec``'s box violates it (exact integer semantics).

    Returns ``(verdict, counterexample)``: ``(Verdict.SAT, x)`` with a real input ``x`` (flat float64,
    inside the box) that :func:`qa_lirpa.integer_forward` confirms violates a disjunct;
    ``(Verdict.UNSAT, None)``; or ``(Verdict.TIMEOUT, None)``. See :func:`solve_milp` for the options.
    """
    r = solve_milp(model, spec, timeout, input_shape=input_shape, **kw)
    return r.verdict, r.counterexample
