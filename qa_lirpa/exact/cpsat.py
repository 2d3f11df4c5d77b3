"""An exact CP-SAT decision procedure for properties of quantized networks (OR-Tools, optional).

The same models as :mod:`qa_lirpa.exact.milp` (graphs that start with their input quantizer, with
the semantics of :func:`qa_lirpa.integer_forward`; each node's op supplies its encoding,
``OpDef.cpsat``), the same interface (:func:`solve_cpsat` mirrors
:func:`~qa_lirpa.exact.milp.solve_milp`), but a constraint-programming encoding: CP-SAT works on
integers only, so the model has no tolerances at all.

* input codes: integer variables with the codes of the box end points as domain (or of
  ``code_box``); a fixed code is a constant;
* affine layers: the accumulator of a unit is the exact integer expression of the layer's own
  plan (:meth:`QuantLinear.affine_scales`: ``m_acc * sum_i W_ji (x_i - z_in) + m_b * b_j``);
* a requantization ``q = clamp(R(v n / d) + z, qmin, qmax)`` (``n / d`` the rational rescale
  factor, ``v`` the centred input): as in the MILP, every mode but half to even with an even
  ``d`` is ``floor(u / D)`` (:func:`qa_lirpa.quant.intmath.floor_form`; e.g. half up
  ``u = n v + d/2, D = d`` for even ``d`` or ``u = 2 n v + d, D = 2 d``; down ``u = n v``; up
  ``u = n v + d - 1``; half down ``u = n v + d/2 - 1`` for even ``d``); half to even (even ``d``)
  is ``t = 2k + p``, ``-d + p <= 2 n v - 2 d t <= d - p``. The floor and the clamp are one
  unit ``y = clamp(floor(u / D), lo, hi)`` stated with enforcement literals, not big-Ms:
  ``a`` means ``floor(u/D) >= lo`` and ``s`` means ``floor(u/D) > hi``::

      a  <=>  u >= D lo          (not a  =>  y = lo)
      s  <=>  u >= D (hi + 1)    (s  =>  y = hi)
      a and not s  =>  D y <= u <= D y + D - 1
      not s        =>  u <= D y + D - 1      (y >= floor(u/D); unconditional without s)
      a            =>  D y <= u              (y <= floor(u/D); unconditional without a)

  (the last two are implied, but CP-SAT's LP sees the enforced pair as big-M rows only);

  A side whose clamp cannot be active on the box has no literal; an accumulator with many
  terms gets its own variable (one long equality, short unit constraints);
* bounds: the exact interval image of the box (:class:`qa_lirpa.nn.intervals.IntervalNet`,
  intersected with the interval bounds of the expressions themselves) gives every variable its
  domain, and a unit whose output is constant on the box becomes that constant;
* the property: real outputs ``(q - z) s``; a row ``sum_k a_k y_k <= b`` becomes an exact integer
  row (common denominator, gcd, floored right-hand side, as in the MILP); a disjunction of
  conjunctions gets one model per disjunct (``mode="split"``, the default; a one-row disjunct
  minimises its row, which stays a constraint) or one literal per disjunct (``mode="combined"``:
  rows enforced by their literal, at least one literal true). Disjuncts infeasible on the
  interval bounds or, rigorously, on the LP relaxation are dropped first.

Trust. ``SAT`` is never taken on faith: the input codes of CP-SAT's solution are run through
``integer_forward`` (:func:`qa_lirpa.exact.milp._confirm`), else :class:`SolverError`. ``UNSAT``
rests on CP-SAT's correctness on an integer model whose every linear constraint is checked to
stay below ``2^62`` in activity (no overflow in CP-SAT's int64 arithmetic); there are no float
tolerances in the model. ``TIMEOUT``: undecided within the time limit.

OR-Tools is an optional dependency: :func:`available` says whether it can be imported.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..base.deadline import Deadline, as_deadline
from ..base.verdict import Verdict
from ..base.vnnlib import InputSpec
from ..nn.intervals import IntervalNet
from ..quant.intmath import floor_form
from . import milp as _milp
from .milp import (MilpEncodingError, SolverError, _Builder, _channel_index, _confirm, _Lin, _rhe,
                   _spec_rows, _State)

__all__ = ["CpsatEncodingError", "CpsatResult", "available", "solve_cpsat", "decide_cpsat",
           "unsupported_reason", "ACTIVITY_LIMIT"]

#: Largest absolute activity of a linear constraint (CP-SAT computes in int64).
ACTIVITY_LIMIT = 1 << 62
#: An accumulator with more terms than this gets its own variable.
_ACC_VAR_TERMS = 2


class CpsatEncodingError(MilpEncodingError):
    """The model or spec cannot be encoded exactly (unsupported layer, numbers too large, ...)."""


class _OutOfTime(Exception):
    pass


def available() -> bool:
    """Whether OR-Tools' CP-SAT can be imported."""
    try:
        from ortools.sat.python import cp_model  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return False
    return True


def unsupported_reason(model: nn.Module) -> str:
    """"" if ``model`` has an exact CP-SAT encoding here and OR-Tools is importable, else why not."""
    if not available():
        return "OR-Tools (ortools) is not installed"
    return _milp.encoding_problem(model, "cpsat")


@dataclass
class CpsatResult(_milp.ExactResult):
    """Outcome of :func:`solve_cpsat`."""

    n_bools: int = 0
    n_constraints: int = 0
    units: int = 0                                # requantized units that needed a variable
    constant_units: int = 0                       # requantized units constant on the box
    status: str = ""                              # CP-SAT's last status name
    stats: dict = field(default_factory=dict)


class _Encoder(_milp._GraphEncoder):
    """Builds the CP-SAT model node by node (asking each node's op: ``OpDef.cpsat``); ``b`` keeps
    the integer domains (for bounds)."""

    method = "cpsat"
    Error = CpsatEncodingError

    def __init__(self, model: nn.Module, input_shape: tuple, deadline: Deadline, hull_lines: bool = True) -> None:
        from ortools.sat.python import cp_model

        super().__init__(model, input_shape, deadline)
        self.hull_lines = hull_lines
        self.m = cp_model.CpModel()
        self.b = _Builder()
        self.vars: list = []                      # CP-SAT variable of each builder column
        self.n_units = 0
        self.n_const = 0
        self.n_bools = 0
        self.n_cons = 0
        try:
            self.ival = IntervalNet(model)
        except Exception:  # noqa: BLE001 - interval bounds are an optimisation only
            self.ival = None
        self.boxes: Optional[dict] = None         # node name -> IntBox of its output codes
        self.extra: dict = {}                     # node index -> [(lo, hi)] of its output codes
        self.known: Optional[tuple] = None        # bounds of the current node's output codes
        self._known_out = None                    # the value those bounds were applied to

    # ----- variables and constraints ------------------------------------------------------------
    def new_var(self, lo: int, hi: int, name: str = "") -> int:
        v = self.b.new_var(lo, hi)
        self.vars.append(self.m.new_int_var(int(lo), int(hi), name))
        return v

    def new_bool(self, name: str = ""):
        self.n_bools += 1
        return self.m.new_bool_var(name)

    def _check(self, e: _Lin, extra: int = 0) -> None:
        act = abs(e.const) + abs(extra)
        lb, ub = self.b.lb, self.b.ub
        for v, a in e.coefs.items():
            act += abs(a) * max(abs(lb[v]), abs(ub[v]))
        if act >= ACTIVITY_LIMIT:
            raise CpsatEncodingError(f"constraint activity up to {act} exceeds 2^62 (CP-SAT's int64)")

    def expr(self, e: _Lin, vars: Optional[list] = None):
        """The CP-SAT linear expression of ``e`` (checked for int64 overflow) over ``vars``
        (default: this model's variables)."""
        self._check(e)
        if not e.coefs:
            return e.const
        vs = self.vars if vars is None else vars
        return _weighted([vs[v] for v in e.coefs], list(e.coefs.values())) + e.const

    def constrain(self, ct, enforce: Sequence = ()) -> None:
        c = self.m.add(ct)
        if enforce:
            c.only_enforce_if(list(enforce))
        self.n_cons += 1

    # ----- the walk ----------------------------------------------------------------------------
    def new_input_var(self, lo: int, hi: int, i: int) -> int:
        return self.new_var(lo, hi, f"x{i}")

    def encode_input(self, code_lo: np.ndarray, code_hi: np.ndarray) -> _State:
        state = super().encode_input(code_lo, code_hi)
        self.boxes = None
        if self.ival is not None:
            lo_t = torch.as_tensor(np.asarray(code_lo, dtype=np.int64)).reshape(self.input_shape)
            hi_t = torch.as_tensor(np.asarray(code_hi, dtype=np.int64)).reshape(self.input_shape)
            try:
                self.boxes = self.ival.node_boxes(lo_t, hi_t)
            except Exception:  # noqa: BLE001 - e.g. float64 exactness guard: use expression bounds
                self.boxes = None
        return state

    def enter(self, node, layer) -> None:
        super().enter(node, layer)
        known = None
        box = None if self.boxes is None else self.boxes.get(node.name)
        if box is not None:
            known = (box.lo.reshape(-1).tolist(), box.hi.reshape(-1).tolist())
        extra = self.extra.get(node.index)
        if extra is not None:
            los, his = zip(*extra)
            if known is None:
                known = (list(los), list(his))
            else:
                if len(known[0]) != len(los):
                    raise CpsatEncodingError(f"{self.name}: {len(los)} unit bounds for {len(known[0])} units")
                known = ([max(a, b) for a, b in zip(known[0], los)], [min(a, b) for a, b in zip(known[1], his)])
            if any(a > b for a, b in zip(*known)):
                raise CpsatEncodingError(f"{self.name}: the unit bounds leave a unit without a value "
                                         f"(they contradict the exact interval box)")
        self.known, self._known_out = known, None

    def leave(self, node, state: _State) -> _State:
        if self._known_out is not None and state is not self._known_out:
            raise AssertionError(f"{self.name}: the node's output bounds were applied to a value that is "
                                 f"not its output (call requant/relu last in an op's cpsat)")
        self.known = self._known_out = None
        return state

    def _take_known(self):
        """``known(j, shift)``: the bounds of unit ``j`` of the current node's output (codes) minus
        ``shift``, or None; the bounds go to the first primitive that asks (its result must be the
        node's value, :meth:`leave` checks)."""
        known, self.known = self.known, None
        if known is None:
            return lambda j, shift=0: None
        self._known_out = True
        return lambda j, shift=0: (known[0][j] - shift, known[1][j] - shift)

    def _gave(self, state: _State) -> _State:
        if self._known_out is True:
            self._known_out = state
        return state

    # ----- primitives ----------------------------------------------------------------------------
    def relu(self, state: _State) -> _State:
        """``max(q, z)`` of every unit (ReLU on codes)."""
        known = self._take_known()
        return self._gave(_State([self._floor_clamp(e, 1, z, None, known(j))
                                  for j, (e, z) in enumerate(zip(state.exprs, state.zp))],
                                 state.scale, state.zp, state.shape))

    def max(self, state: _State, windows, shape: tuple) -> _State:
        """``y_j = max_{i in windows[j]} x_i`` of codes (CP-SAT's max constraint over the inputs
        that can be the maximum)."""
        known_of = self._take_known()
        exprs, scales, zps = [], [], []
        for j, win, bounds, floor, cand in self.max_windows(state, windows):
            cand = [i for i, _ in cand]
            top = max(bd[1] for bd in bounds)
            known = known_of(j)
            if known is not None:
                floor, top = max(floor, known[0]), min(top, known[1])
                if floor > top:
                    raise AssertionError("interval bounds and expression bounds disagree")
            if floor == top:
                self.n_const += 1
                exprs.append(_Lin({}, floor))
            elif len(cand) == 1:
                exprs.append(state.exprs[cand[0]])
            else:
                y = self.new_var(floor, top)
                self.m.add_max_equality(self.vars[y], [self.expr(state.exprs[i]) for i in cand])
                self.n_cons += 1
                self.n_units += 1
                exprs.append(_Lin.var(y))
            scales.append(state.scale[win[0]])
            zps.append(state.zp[win[0]])
        return self._gave(_State(exprs, scales, zps, tuple(shape)))

    def requant(self, spec, state: _State) -> _State:
        """``clamp(R(v * s_in / s_out) + z, qmin, qmax)`` of every unit, exactly (the node's bounds
        narrow the units' domains when this is the node's output)."""
        name = self.name
        known_of = self._take_known()
        n = len(state.exprs)
        o_scales, o_zps = spec.scale_fractions(), spec.zero_points()
        if spec.per_channel:
            ch = _channel_index(state.shape, spec.axis)
            if len(ch) != n or int(ch.max()) >= spec.channels:
                raise CpsatEncodingError(f"{name}: {spec.channels} channel scales do not fit shape {state.shape}")
        else:
            ch = np.zeros(n, dtype=np.int64)
        exprs, scales, zps = [], [], []
        for j, e in enumerate(state.exprs):
            if j % 64 == 0:
                self.check_time()
            c = int(ch[j])
            s_out, z_out = o_scales[c], o_zps[c]
            v = e.scaled(1, -state.zp[j])
            known = known_of(j, z_out)               # bounds of the result (codes minus z_out)
            mult = state.scale[j] / s_out
            num, den = mult.numerator, mult.denominator
            lo, hi = spec.qmin - z_out, spec.qmax - z_out
            if known is not None and known[0] == known[1]:
                self.n_const += 1
                y = _Lin({}, known[0])
            elif (form := floor_form(spec.rounding, den)) is not None:   # R(n/den) = floor((a n + c)/D)
                a, c, D = form
                y = self._floor_clamp(v.scaled(a * num, c), D, lo, hi, known)
            elif spec.rounding == "half_even":
                t = self._round_half_even(v.scaled(num), den)
                y = self._floor_clamp(t, 1, lo, hi, known)
            else:
                raise CpsatEncodingError(f"{name}: rounding mode {spec.rounding!r} has no CP-SAT encoding")
            exprs.append(y.scaled(1, z_out))
            scales.append(s_out)
            zps.append(z_out)
        return self._gave(_State(exprs, scales, zps, state.shape))

    def _as_var(self, u: _Lin, uL: int, uU: int) -> _Lin:
        """``u`` itself when short, else a new variable equal to it (domain ``[uL, uU]``)."""
        if len(u.coefs) <= _ACC_VAR_TERMS:
            return u
        a = self.new_var(uL, uU)
        self.constrain(self.expr(u) == self.vars[a])
        return _Lin.var(a)

    def _round_half_even(self, u: _Lin, d: int) -> _Lin:
        """``t = round_half_even(u / d)`` for even ``d``: ``t = 2k + p``, ``-d + p <= 2u - 2dt <= d - p``."""
        uL, uU = self.b.bounds(u)
        tL, tU = _rhe(uL, d), _rhe(uU, d)
        if tL == tU:
            return _Lin({}, tL)
        u = self._as_var(u, uL, uU)
        t = self.new_var(tL, tU)
        k = self.new_var(tL // 2, tU // 2)
        p = self.new_var(0, 1)
        self.n_bools += 1
        T, K, P = self.vars[t], self.vars[k], self.vars[p]
        self.constrain(T == 2 * K + P)
        e = self.expr(u.scaled(2)) - 2 * d * T
        self.constrain(e - P >= -d)                    # -d + p <= 2u - 2dt
        self.constrain(e + P <= d)                     # 2u - 2dt <= d - p
        return _Lin.var(t)

    def _floor_clamp(self, u: _Lin, D: int, lo: int, hi: Optional[int], known: Optional[tuple] = None) -> _Lin:
        """``y = clamp(floor(u / D), lo, hi)`` exactly (``hi=None``: no upper clamp); ``known``:
        interval bounds of ``y`` from elsewhere (intersected with those of ``u``)."""
        uL, uU = self.b.bounds(u)
        tL, tU = uL // D, uU // D

        def clamp(t: int) -> int:
            t = max(t, lo)
            return t if hi is None else min(t, hi)

        yL, yU = clamp(tL), clamp(tU)
        if known is not None:
            yL, yU = max(yL, known[0]), min(yU, known[1])
            if yL > yU:
                raise AssertionError("interval bounds and expression bounds disagree")
        if yL == yU:
            self.n_const += 1
            return _Lin({}, yL)
        low = tL < lo
        high = hi is not None and tU > hi
        if D == 1 and not low and not high:
            return u
        self.n_units += 1
        ua = self._as_var(u, uL, uU)
        U = self.expr(ua)
        y = self.new_var(yL, yU)
        Y = self.vars[y]
        mid = []
        if low:
            a = self.new_bool()                    # floor(u / D) >= lo
            self.constrain(U >= D * lo, [a])
            self.constrain(U <= D * lo - 1, [a.Not()])
            self.constrain(Y == lo, [a.Not()])
            mid.append(a)
        if high:
            s = self.new_bool()                    # floor(u / D) > hi
            self.constrain(U >= D * (hi + 1), [s])
            self.constrain(U <= D * (hi + 1) - 1, [s.Not()])
            self.constrain(Y == hi, [s])
            mid.append(s.Not())
            if low:
                self.m.add_implication(s, a)
                self.n_cons += 1
        self.constrain(D * Y <= U, mid)
        self.constrain(U <= D * Y + D - 1, mid)
        if self.hull_lines and mid:
            # the same two lines, each under the one literal it needs: implied by the above, but
            # their LP relaxation is tighter (y >= floor(u/D) whatever the lower clamp does, and
            # y <= floor(u/D) whatever the upper clamp does, as the ReLU's y >= x and y <= x
            # are in its LP hull); for the enforced pair above CP-SAT's LP has big-M rows only
            if low:
                self.constrain(U <= D * Y + D - 1, [s.Not()] if high else [])
            if high:
                self.constrain(D * Y <= U, [a] if low else [])
        return _Lin.var(y)


def _meet(a: dict, b: dict) -> dict:
    """Per node index and unit, the intersection of two bound lists ``[(lo, hi)]``."""
    out = dict(a)
    for k, bs in b.items():
        if k in out:
            if len(out[k]) != len(bs):
                raise CpsatEncodingError(f"unit bounds of node {k}: {len(bs)} units, expected {len(out[k])}")
            out[k] = [(max(l1, l2), min(h1, h2)) for (l1, h1), (l2, h2) in zip(out[k], bs)]
        else:
            out[k] = list(bs)
    return out


def _weighted(vs: list, coefs: list):
    from ortools.sat.python import cp_model

    return cp_model.LinearExpr.weighted_sum(vs, coefs)


class _Recorder(_milp._Encoder):
    """The MILP encoder with rigorous LP bound tightening, recording the bounds of every node's
    output codes (``bounds[node index]``)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.bounds: dict[int, list] = {}

    def leave(self, node, state):
        self.bounds[node.index] = [self.b.bounds(e) for e in state.exprs]
        return state


def _lp_prefilter(model, shape, code_lo, code_hi, spec, deadline: Deadline, threads):
    """Rigorous LP bounds of the hidden units (weak duality, :class:`~qa_lirpa.exact.milp._LpBounder`)
    and the disjuncts that the LP relaxation refutes: ``(bounds per layer index, dead disjuncts)``."""
    enc = _Recorder(model, shape, tighten=True, deadline=deadline, threads=threads)
    state = enc.encode_layers(enc.encode_input(code_lo, code_hi))
    dead = set()
    b = enc.b
    if not b.rows:
        return enc.bounds, dead
    lp = _milp._LpBounder(b, threads)
    for d, (mat, rhs) in enumerate(spec.disjuncts):
        rows = _spec_rows(b, state, np.asarray(mat, dtype=np.float64),
                          np.asarray(rhs, dtype=np.float64).reshape(-1))
        if rows is None:
            dead.add(d)
            continue
        for e, hi in rows:
            left = deadline.remaining()
            if left <= 0:
                return enc.bounds, dead
            bound = lp.lower(e.coefs, left)
            if bound is not None and math.ceil(bound) > hi:
                dead.add(d)
                break
    return enc.bounds, dead


def solve_cpsat(model: nn.Module, spec: InputSpec, timeout: float | Deadline = 60.0,
                input_shape: Optional[Sequence[int]] = None, mode: str = "split",
                threads: Optional[int] = None, code_box: Optional[tuple[np.ndarray, np.ndarray]] = None,
                hard_timeout: bool = False, seed: int = 0, tighten: bool = True, objective: bool = True,
                params: Optional[dict] = None, presolve: bool = True, eager_lp: bool = False,
                hull_lines: bool = True, unit_bounds: Optional[dict] = None, **_ignored) -> CpsatResult:
    """Decide ``spec`` on ``model`` exactly with CP-SAT (see the module docstring).

    The arguments are those of :func:`~qa_lirpa.exact.milp.solve_milp`. ``threads``: CP-SAT's
    ``num_workers`` (None: 1); with 2, the two workers are CP-SAT's ``max_lp`` and
    ``default_lp`` (its own choice for two workers leaves one without an LP, which timed out on
    AAAI'21 sample 264); every worker runs with ``linearization_level = 2``. ``mode``:
    ``"split"`` (one model per disjunct, the disjuncts with most slack on the interval bounds
    first) or ``"combined"`` (one model, one literal per disjunct). ``objective`` (split mode,
    one-row disjuncts): minimise the row, which stays a constraint, and stop at the first
    solution: this only steers the search (with it CP-SAT proves sample 264 in about a second).
    ``tighten``: before encoding, the MILP encoder's rigorous LP bounds
    (:class:`~qa_lirpa.exact.milp._LpBounder`) tighten the domains of the hidden units and
    refute the disjuncts their relaxation cannot satisfy. ``presolve``: CP-SAT's presolve (it takes
    well under a second on the MNIST conv nets, but the model it leaves searches differently: there
    CP-SAT decided most hard properties 1.5-3 times faster without it, and a few only with it).
    ``eager_lp``: every constraint of the LP relaxation goes into CP-SAT's LP from the start
    (``add_lp_constraints_lazily = False``, what CP-SAT's own ``max_lp`` worker does) instead of
    as cuts when violated: on the eps=4 MNIST conv net's hard images it proved three of 17
    timeouts in 4-9 s where the lazy LP proved one in 16 s (on the eps=1 net's, neither any).
    ``hull_lines``: each requantization with a clamp also states ``y >= floor(u/D)`` (under the
    upper clamp's literal only) and ``y <= floor(u/D)`` (under the lower clamp's only), implied
    constraints that tighten CP-SAT's LP relaxation (on six slow images of the eps=4 MNIST conv
    net, CP-SAT alone proved all six in 2-8 s with them, five in 5-16 s without).
    ``unit_bounds``: bounds of hidden units' output codes on the box (node index of the model's
    graph -> ``[(lo, hi)]`` per unit, e.g. CROWN's from
    :meth:`~qa_lirpa.verify.grid.GridProblem.step_code_bounds`) that narrow the units' domains
    beside the exact interval boxes and the LP tightening's bounds; the answer is only as sound as
    they are, and a unit whose domains do not meet raises :class:`CpsatEncodingError` (on the eps=4
    MNIST conv net's slow images CROWN's domains took CP-SAT from 18.5 / 26.0 s to 6.9 / 18.8 s).
    ``params``: extra CP-SAT parameters
    (name -> value; lists extend repeated fields). ``timeout`` (seconds from now, or a
    :class:`~qa_lirpa.base.deadline.Deadline`) covers building and solving;
    CP-SAT honours its time limit closely, and ``hard_timeout`` adds a timer that stops the
    search ``0.1`` s after the deadline whatever it is doing.
    """
    from ortools.sat.python import cp_model

    t0 = time.perf_counter()
    deadline = as_deadline(timeout)
    if mode not in ("split", "combined"):
        raise ValueError(f"mode must be 'split' or 'combined', got {mode!r}")
    res = CpsatResult(Verdict.UNSAT)

    def finish(verdict: Verdict, x=None, d=None) -> CpsatResult:
        res.verdict, res.counterexample, res.disjunct = verdict, x, d
        res.time_s = time.perf_counter() - t0
        return res

    enc = _Encoder(model, _milp.spec_code_box(model, spec, input_shape, shape_only=True), deadline, hull_lines)
    shape, code_lo, code_hi = _milp.spec_code_box(model, spec, input_shape, code_box)
    if code_lo is None:
        return finish(Verdict.UNSAT)
    dead: set = set()
    try:
        if tighten:
            t1 = time.perf_counter()
            enc.extra, dead = _lp_prefilter(model, shape, code_lo, code_hi, spec, deadline, threads)
            res.stats["lp_s"] = time.perf_counter() - t1
        if unit_bounds:
            enc.extra = _meet(enc.extra, unit_bounds)
        state = enc.encode_layers(enc.encode_input(code_lo, code_hi))
    except (_OutOfTime, _milp._OutOfTime):
        return finish(Verdict.TIMEOUT)
    if len(state.exprs) != spec.disjuncts[0][0].shape[1]:
        raise ValueError(f"spec has {spec.disjuncts[0][0].shape[1]} outputs, the model {len(state.exprs)}")

    live = []
    for d, (mat, rhs) in enumerate(spec.disjuncts):
        mat = np.asarray(mat, dtype=np.float64)
        rhs = np.asarray(rhs, dtype=np.float64).reshape(-1)
        if not (np.isfinite(mat).all() and np.isfinite(rhs).all()):
            raise CpsatEncodingError(f"disjunct {d}: non-finite coefficients")
        rows = None if d in dead else _spec_rows(enc.b, state, mat, rhs)
        if rows is None:
            res.disjuncts_skipped += 1
        else:
            for e, hi in rows:
                enc._check(e, hi)
            live.append((d, rows))
    res.n_vars, res.units, res.constant_units = len(enc.b.lb), enc.n_units, enc.n_const
    if not live:
        return finish(Verdict.UNSAT)
    for d, rows in live:
        if not rows:                                  # holds on the whole box
            return finish(Verdict.SAT, _confirm(model, spec, d, code_lo.astype(np.int64), shape), d)

    def codes_from(solver) -> np.ndarray:
        xs = code_lo.astype(np.int64).copy()
        for i, v in enumerate(enc.input_vars):
            if v is not None:
                xs[i] = int(solver.value(enc.vars[v]))
        return xs

    def run(m) -> tuple:
        left = deadline.remaining()
        if left <= 0:
            return Verdict.TIMEOUT, None
        solver = cp_model.CpSolver()
        p = solver.parameters
        p.max_time_in_seconds = float(left)
        p.num_workers = workers = int(threads) if threads else 1
        p.linearization_level = 2               # the LP relaxation of the enforced constraints
        if workers == 2:                        # both workers with an LP (CP-SAT's own pair has one)
            p.subsolvers.extend(["max_lp", "default_lp"])
        p.random_seed = int(seed)
        p.cp_model_presolve = bool(presolve)
        p.add_lp_constraints_lazily = not eager_lp
        p.log_search_progress = False
        p.stop_after_first_solution = True
        for key, val in (params or {}).items():
            if isinstance(val, (list, tuple)):
                getattr(p, key).extend(val)
            else:
                setattr(p, key, val)
        timer = None
        if hard_timeout:
            timer = threading.Timer(left + 0.1, solver.stop_search)
            timer.daemon = True
            timer.start()
        try:
            status = solver.solve(m)
        finally:
            if timer is not None:
                timer.cancel()
        res.status = solver.status_name(status)
        res.stats.setdefault("branches", 0)
        res.stats["branches"] += int(solver.num_branches)
        res.stats.setdefault("conflicts", 0)
        res.stats["conflicts"] += int(solver.num_conflicts)
        if status in (cp_model.FEASIBLE, cp_model.OPTIMAL):
            return Verdict.SAT, solver
        if status == cp_model.INFEASIBLE:
            return Verdict.UNSAT, None
        if status == cp_model.MODEL_INVALID:
            raise SolverError(f"CP-SAT: invalid model ({m.validate()})")
        return Verdict.TIMEOUT, None

    def rows_ct(m, rows, lit=None) -> None:
        for e, hi in rows:
            ct = m.add(enc.expr(e) <= hi)
            if lit is not None:
                ct.only_enforce_if(lit)

    if mode == "combined" and len(live) > 1:
        m = enc.m
        sel = []
        for d, rows in live:
            z = m.new_bool_var(f"d{d}")
            rows_ct(m, rows, z)
            sel.append((z, d))
        m.add_bool_or([z for z, _ in sel])
        res.n_bools, res.n_constraints = enc.n_bools + len(sel), enc.n_cons + len(sel) + 1
        res.disjuncts_solved = len(live)
        status, solver = run(m)
        if status is Verdict.SAT:
            x_codes = codes_from(solver)
            chosen = [d for z, d in sel if solver.boolean_value(z)]
            for d in chosen:                       # the first disjunct that holds exactly
                try:
                    return finish(Verdict.SAT, _confirm(model, spec, d, x_codes, shape), d)
                except SolverError:
                    continue
            raise SolverError("CP-SAT counterexample violates none of its chosen disjuncts under integer_forward")
        return finish(status)                     # UNSAT or TIMEOUT

    res.n_bools, res.n_constraints = enc.n_bools, enc.n_cons

    def slack(item) -> float:
        worst = 1.0
        for e, hi in item[1]:
            lo_b, hi_b = enc.b.bounds(e)
            worst = min(worst, (hi - lo_b) / max(1, hi_b - lo_b))
        return worst
    live.sort(key=slack, reverse=True)
    for d, rows in live:
        m = enc.m.clone()
        vs = [m.get_int_var_from_proto_index(v.index) for v in enc.vars]
        for e, hi in rows:
            m.add(enc.expr(e, vs) <= hi)
        if objective and len(rows) == 1:
            m.minimize(enc.expr(rows[0][0], vs))
        res.disjuncts_solved += 1
        status, solver = run(m)
        if status is Verdict.SAT:
            xs = code_lo.astype(np.int64).copy()
            for i, v in enumerate(enc.input_vars):
                if v is not None:
                    xs[i] = int(solver.value(vs[v]))
            return finish(Verdict.SAT, _confirm(model, spec, d, xs, shape), d)
        if status is Verdict.TIMEOUT:
            return finish(Verdict.TIMEOUT)
    return finish(Verdict.UNSAT)


def decide_cpsat(model: nn.Module, spec: InputSpec, timeout: float | Deadline = 60.0,
                 input_shape: Optional[Sequence[int]] = None, **kw):
    """``(verdict, counterexample)`` of :func:`solve_cpsat` (as :func:`~qa_lirpa.exact.milp.decide_milp`)."""
    r = solve_cpsat(model, spec, timeout, input_shape=input_shape, **kw)
    return r.verdict, r.counterexample
