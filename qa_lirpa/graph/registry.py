"""One registry of ops: the type of a layer -> its :class:`OpDef`.

An :class:`OpDef` is the single place that says what one op type means, for every backend (in the
spirit of auto_LiRPA's one Bound class per op). A backend walks a :class:`~qa_lirpa.graph.QNNGraph`
and, for each node, calls one method of ``op_for(module)`` with a context object of its own (the
MILP builder, the ONNX builder, ...), so the backend itself never names a layer type. A method an op
does not supply raises :class:`UnsupportedOp` with the node's name and the reason; backends turn it
into their own one-line error or a refusal ("no MILP encoding for ...").

The contract, method by method (``m`` is the layer module; inputs come in the node's input order):

=====================  ==========================================================================
``int_forward``        exact integer semantics: IntTensors in, IntTensor out (the meaning of a
                       model we build; :func:`qa_lirpa.integer_forward` walks it)
``interval``           exact interval image of integer boxes (IntBox in, IntBox out); ``ctx`` is
                       the :class:`~qa_lirpa.nn.intervals.IntervalNet` (plan cache, device,
                       float32 tolerances)
``sensitivity``        branching heuristic: pull a non-negative weight vector back through the op
                       (|W|, chord slopes); one tensor per input
``frozen``             the float64 module CROWN and attacks run (weights fake-quantized once; a
                       quantizer known only within ``tol`` steps becomes a tolerant one)
``loose``              a quantizer's attack form (identity gradient through rounding/saturation)
``ibp``                hand-written float interval step for training cross-checks (differentiable)
``milp`` / ``cpsat``   exact encodings (:mod:`qa_lirpa.exact`)
``onnx``               ONNX emission that onnxruntime reproduces exactly (:mod:`qa_lirpa.onnx`)
``float32``            the op's float32 error rule for the onnxruntime envelope
=====================  ==========================================================================

The auto_LiRPA bound operator of an op is whatever its traced float forward maps to
(``BoundFakeQuant`` for quantizers, auto_LiRPA's own ``BoundLinear``/``BoundConv``/``BoundAdd``/
``BoundAveragePool``/... otherwise); ``bound_ops`` names them for the documentation and tests.
"""
from __future__ import annotations

from typing import Any

from ..base.errors import QaLirpaError


class UnsupportedOp(QaLirpaError, TypeError):
    """A layer type without an op definition, or an op without the asked-for backend method."""


class OpDef:
    """What one op type means, for every backend. Subclass it next to the layer it defines and
    :func:`register` an instance; override the methods the op supports."""

    #: short name used in messages and docs
    name: str = "op"
    #: the layer classes it defines (subclasses inherit it unless they register their own)
    types: tuple[type, ...] = ()
    #: number of inputs (None: any number >= 1)
    arity: int | None = 1
    #: rounds onto a grid (attacks give it a straight-through gradient; float32 tolerances apply)
    quantizer: bool = False
    #: nonlinear (its outputs count as hidden units for CROWN's cost)
    nonlinear: bool = False
    #: its auto_LiRPA bound operator takes part in alpha-CROWN
    optimizable: bool = True
    #: monotone nonlinear: a propagation trace records its chord slopes (branching heuristics)
    chord: bool = False
    #: has weights (``qweight()``/``qbias()``)
    weighted: bool = False
    #: quantizes the real input onto the input grid (the first node of a QNN)
    is_input: bool = False
    #: the auto_LiRPA bound operators its traced forward uses
    bound_ops: tuple[str, ...] = ()

    def _missing(self, what: str, m: Any) -> UnsupportedOp:
        return UnsupportedOp(f"{self.name} ({type(m).__name__}): no {what}")

    # ----- exact semantics ------------------------------------------------------------------
    def int_forward(self, m, *xs):
        raise self._missing("exact integer semantics", m)

    def interval(self, m, ctx, *boxes):
        raise self._missing("interval image", m)

    # ----- float bounds and search -------------------------------------------------------------
    def slope(self, m, boxes_in, box_out):
        """For ``chord`` ops: per unit, the chord slope of the op on the boxes (float64)."""
        raise self._missing("chord slope", m)

    def sensitivity(self, m, ctx, record, g) -> list:
        raise self._missing("sensitivity rule", m)

    def frozen(self, m, tol: float = 0.0):
        raise self._missing("frozen float64 form", m)

    def loose(self, m):
        """For quantizers: the attack form (the same value, the identity as gradient through the
        rounding and the saturation)."""
        raise self._missing("attack form", m)

    def input_shape(self, m, n_inputs: int):
        """The input shape (without batch) this op, as the first shaped op of a model, implies
        for ``n_inputs`` flat inputs; None when it implies none (the walk goes on)."""
        return None

    def ibp(self, m, *bounds):
        raise self._missing("torch interval step", m)

    def ibp_margins(self, m, C, *bounds):
        """Lower bounds ``[B, R]`` of ``C @ output`` when this op computes the output (``bounds``:
        ``lo, hi`` of each input): the op's interval step, then the sign split of ``C``."""
        lo, hi = self.ibp(m, *bounds)
        lo, hi = lo.reshape(lo.shape[0], -1), hi.reshape(hi.shape[0], -1)
        return (C.clamp(min=0) @ lo.unsqueeze(-1) + C.clamp(max=0) @ hi.unsqueeze(-1)).squeeze(-1)

    # ----- MILP / CP-SAT (qa_lirpa.exact) ------------------------------------------------------
    def milp(self, m, enc, *states):
        raise self._missing("exact MILP encoding", m)

    def cpsat(self, m, enc, *states):
        raise self._missing("CP-SAT encoding", m)

    # ----- ONNX (qa_lirpa.onnx) ----------------------------------------------------------------
    def onnx(self, m, em, *inputs):
        raise self._missing("exact ONNX form", m)

    def float32(self, m, ctx, *states):
        raise self._missing("float32 error model", m)


_REGISTRY: dict[type, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    """Register ``opdef`` for each of its ``types`` (a later registration of a type replaces the
    earlier one); returns it, so ``FOO = register(FooOp())`` reads well."""
    if not opdef.types:
        raise ValueError(f"register: {type(opdef).__name__} defines no layer types")
    for t in opdef.types:
        _REGISTRY[t] = opdef
    return opdef


def op_for(module: Any) -> OpDef:
    """The op definition of ``module``: its class's own, else the nearest base class's (so a
    subclass that changes nothing of the meaning needs no entry). UnsupportedOp if none."""
    for cls in type(module).__mro__:
        op = _REGISTRY.get(cls)
        if op is not None:
            return op
    raise UnsupportedOp(f"{type(module).__name__}: no op definition (not a qa_lirpa layer; see "
                        f"docs/architecture.md to add one)")


def registered() -> dict[type, OpDef]:
    """A copy of the registry (for docs and tests)."""
    return dict(_REGISTRY)


__all__ = ["OpDef", "UnsupportedOp", "register", "op_for", "registered"]
