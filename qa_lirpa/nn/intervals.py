"""Exact integer interval propagation through a quantized model, batched over many boxes.

The input is a batch of integer boxes ``[lo, hi]`` of the input quantizer's codes (int64 tensors
``[B, *input_shape]``). The walk follows the model's graph and asks each node's op definition for
its exact interval image (``OpDef.interval``): affine layers bound the accumulator exactly in
integers (:func:`qa_lirpa.nn.affine.affine_interval`), monotone layers (quantizers, ReLU, shape
ops) map the end points, merging ops (a residual Add) combine their inputs' boxes.

So the output interval contains every output of the exact integer semantics on every grid point
of the box (with equality at single-point boxes, where every op is exact). There is no float error
anywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import nn

from ..graph import Node, OpDef, as_graph, input_quantizer, op_for
from . import layers  # noqa: F401 - registers the op definitions of the built-in layers
from .affine import AffinePlan, affine_interval, affine_plan
from .quantizers import enveloped_requant
from .tensors import IntBox


@dataclass
class Record:
    """One node of a propagation, as a branching heuristic needs it: the node, its input and output
    shapes and, for monotone nonlinear ops (``OpDef.chord``), the chord slope of each unit on the
    box (float64; 0 where ``lo == hi``)."""

    node: Node
    layer: nn.Module
    op: OpDef
    in_shapes: tuple[tuple[int, ...], ...]
    out_shape: tuple[int, ...]
    slope: torch.Tensor | None


class Trace:
    """The records of one propagation, in execution order (kept small: shapes and slopes)."""

    def __init__(self) -> None:
        self.steps: list[Record] = []

    def record(self, node: Node, layer: nn.Module, op: OpDef, boxes_in: tuple, box_out: IntBox) -> None:
        slope = op.slope(layer, boxes_in, box_out) if op.chord else None
        shapes = tuple(tuple(b.lo.shape) if isinstance(b, IntBox) else tuple(b[0].shape) for b in boxes_in)
        self.steps.append(Record(node, layer, op, shapes, tuple(box_out.lo.shape), slope))

    def select(self, index: torch.Tensor) -> "Trace":
        """The trace of a subset of the boxes (``index`` into the batch)."""
        out = Trace()
        n = (int(index.numel()),)
        out.steps = [Record(r.node, r.layer, r.op, tuple(n + s[1:] for s in r.in_shapes), n + r.out_shape[1:],
                            None if r.slope is None else r.slope[index]) for r in self.steps]
        return out


class IntervalNet:
    """Exact interval propagation for one model (affine plans are built on first use and cached).

    Args:
        model: a QNN (a chain or a :class:`~qa_lirpa.graph.QNNGraph`) whose first node is the input
            quantizer (any device; the integer data is copied to ``device``).
        device: where the propagation runs (int64 and float64 tensors; exact on CPU and CUDA).
        tolerances: per node index, a quantizer's float32 tolerance in steps
            (:class:`~qa_lirpa.onnx.referee.Envelope`); those quantizers are propagated with
            :func:`enveloped_requant`, so the intervals contain what onnxruntime computes.
    """

    def __init__(self, model: nn.Module, device: torch.device | str = "cpu",
                 tolerances: dict[int, float] | None = None) -> None:
        self.graph = as_graph(model)
        qin = input_quantizer(self.graph)
        if qin is None:
            raise TypeError("interval propagation: the model must start with a QuantInput layer")
        self.qin = qin
        self.device = torch.device(device)
        self.tolerances = dict(tolerances or {})
        self.node: Node | None = None        # the node being propagated (read by the ops)
        self._plans: dict[int, tuple[Fraction, AffinePlan]] = {}
        self._probes: dict[tuple[int, ...], object] = {}
        self._wabs: dict[int, torch.Tensor] = {}
        self.ops: list[OpDef] = []
        for node, layer in self.graph.items():
            try:
                op = op_for(layer)
            except TypeError:
                op = None
            if op is None or type(op).interval is OpDef.interval:
                raise TypeError(f"interval propagation: layer {node.index} ({type(layer).__name__}) is not supported")
            self.ops.append(op)

    # ----- what the ops ask for ------------------------------------------------------------
    def tolerance(self) -> float:
        """The float32 tolerance (steps) of the node being propagated (0: exact)."""
        return float(self.tolerances.get(self.node.index, 0.0)) if self.node is not None else 0.0

    def plan(self, layer: nn.Module, s_in: Fraction) -> AffinePlan:
        """The cached integer plan of the affine node being propagated, for input scale ``s_in``."""
        key = self.node.index
        cached = self._plans.get(key)
        if cached is None or cached[0] != s_in:
            cached = self._plans[key] = (s_in, affine_plan(layer, s_in, self.device))
        return cached[1]

    def weight_abs(self, layer: nn.Module) -> torch.Tensor:
        """``|qweight()|`` of a weighted layer on the device (float64, cached)."""
        key = id(layer)
        if key not in self._wabs:
            self._wabs[key] = layer.qweight().detach().abs().to(self.device, torch.float64)
        return self._wabs[key]

    def input_box(self, lo: torch.Tensor, hi: torch.Tensor) -> IntBox:
        """The IntBox of input codes ``[lo, hi]`` (int64, ``[B, *input_shape]``) as the first layer
        after the input quantizer sees them (its output scale and zero points)."""
        shape = tuple(lo.shape[1:])
        if shape not in self._probes:
            self._probes[shape] = self.qin.int_forward(torch.zeros((1,) + shape, dtype=torch.float64))
        probe = self._probes[shape]
        return IntBox(lo.to(self.device), hi.to(self.device), probe.scale, probe.zero_point, probe.axis)

    # ----- the walk ------------------------------------------------------------------------
    def propagate(self, lo: torch.Tensor, hi: torch.Tensor, trace: Trace | None = None) -> IntBox:
        """Exact output intervals for input code boxes ``[lo, hi]`` (int64 ``[B, *input_shape]``).

        If ``trace`` is given, each node after the input quantizer is recorded in it
        (:meth:`Trace.record`).
        """
        def step(node, layer, *boxes):
            self.node = node
            op = self.ops[node.index]
            out = op.interval(layer, self, *boxes)
            if trace is not None and node.index > 0:
                trace.record(node, layer, op, boxes, out)
            return out

        try:
            return self.graph.walk((lo, hi), step)
        finally:
            self.node = None

    def node_boxes(self, lo: torch.Tensor, hi: torch.Tensor) -> dict:
        """The exact interval box (:class:`IntBox`, codes) of every node's output, by node name,
        for input code boxes ``[lo, hi]`` (int64 ``[B, *input_shape]``); for ``lo == hi`` the
        exact codes of every node at that point."""
        def step(node, layer, *boxes):
            self.node = node
            return self.ops[node.index].interval(layer, self, *boxes)

        try:
            return self.graph.walk((lo, hi), step, keep=True)
        finally:
            self.node = None


__all__ = ["IntBox", "AffinePlan", "IntervalNet", "Trace", "Record", "affine_plan", "affine_interval",
           "enveloped_requant"]
