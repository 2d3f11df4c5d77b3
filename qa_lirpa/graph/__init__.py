"""The QNN graph and the op registry (see docs/architecture.md).

- :class:`QNNGraph`: a DAG of layers; a tensor may have several consumers. Chains
  (``nn.Sequential`` of qa_lirpa layers) are graphs too: :func:`as_graph` views one as a graph
  without copying a layer.
- :class:`OpDef` and :func:`op_for`: one definition per op type supplies its integer semantics,
  interval image, MILP encoding, ONNX emission, ...; backends walk the graph and ask the registry,
  never switching on layer types.

This room imports nothing of qa_lirpa above :mod:`qa_lirpa.base`; the op definitions live with
their layers (:mod:`qa_lirpa.nn`) and register themselves when their module is imported.
"""
from .graph import INPUT, Node, QNNGraph, as_graph, input_quantizer
from .registry import OpDef, UnsupportedOp, op_for, register, registered

__all__ = ["INPUT", "Node", "QNNGraph", "as_graph", "input_quantizer", "OpDef", "UnsupportedOp", "op_for",
           "register", "registered"]
