"""A quantized network as a small typed DAG of layers.

Why not ``torch.fx``: every node here must carry exact integer semantics (formats, rounding,
saturation) that backends read through the op registry; fx records ``call_function`` nodes such as
``operator.add`` that carry none, and fx tracing cannot see through our layers that reproduce
onnxruntime's float32 arithmetic (they branch on tracing). So a node is a qa_lirpa layer (an
``nn.Module`` with a registered :class:`~qa_lirpa.graph.OpDef`) plus the names of its inputs, and
the graph is a list of nodes in execution (topological) order.

A graph is an ``nn.Module``: its forward is the float (fake-quantized) forward, so the trainer
trains it and auto_LiRPA traces it like any model. A plain chain (``nn.Sequential``, possibly
nested) is viewed as a graph by :func:`as_graph`, sharing its layers (nothing is copied), with
node ``i`` named ``str(i)`` = the position of the layer in the chain.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from .registry import UnsupportedOp, op_for

#: the name of the graph's (one) input tensor
INPUT = "input"


@dataclass(frozen=True)
class Node:
    """One layer application: ``name = layer(*inputs)``; ``index`` is its position in execution
    order (for chains, the layer's position in the chain)."""

    name: str
    inputs: tuple[str, ...]
    index: int


class QNNGraph(nn.Module):
    """A DAG of layers with one input tensor (:data:`INPUT`) and one output.

    Args:
        nodes: ``(name, layer, input names)`` in an order where every input is defined before use
            (the graph input is :data:`INPUT`). Names are unique, non-empty, without ``"."``.
        output: the node whose value is the output (default: the last; with no nodes, the
            input: an empty graph is the identity).
        arch: how the graph was built (kept in checkpoints, see :mod:`qa_lirpa.models`).
    """

    def __init__(self, nodes: Sequence[tuple[str, nn.Module, Sequence[str]]], output: str | None = None,
                 arch: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleDict()
        self.nodes: list[Node] = []
        defined = {INPUT}
        for name, layer, inputs in nodes:
            name = str(name)
            if not name or "." in name or name in defined:
                raise ValueError(f"QNNGraph: bad or repeated node name {name!r}")
            inputs = tuple(str(i) for i in inputs)
            missing = [i for i in inputs if i not in defined]
            if missing or not inputs:
                raise ValueError(f"QNNGraph: node {name!r} uses {missing or 'no inputs'} before they are defined")
            if not isinstance(layer, nn.Module):
                raise TypeError(f"QNNGraph: node {name!r} is a {type(layer).__name__}, not an nn.Module")
            self.layers[name] = layer
            self.nodes.append(Node(name, inputs, len(self.nodes)))
            defined.add(name)
        last = self.nodes[-1].name if self.nodes else INPUT
        self.output = str(output) if output is not None else last
        if self.output not in defined:
            raise ValueError(f"QNNGraph: output {self.output!r} is not a node")
        if arch is not None:
            self.arch = arch

    # ----- structure -------------------------------------------------------------------------
    def layer(self, node: Node | str) -> nn.Module:
        return self.layers[node.name if isinstance(node, Node) else node]

    def items(self) -> Iterator[tuple[Node, nn.Module]]:
        """``(node, layer)`` in execution order."""
        for node in self.nodes:
            yield node, self.layers[node.name]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def consumers(self, name: str) -> list[Node]:
        return [n for n in self.nodes if name in n.inputs]

    def is_chain(self) -> bool:
        """Each node reads the one before it (or the input) and the last node is the output."""
        prev = INPUT
        for n in self.nodes:
            if n.inputs != (prev,):
                return False
            prev = n.name
        return self.output == prev

    def walk(self, x: Any, step, keep: bool = False) -> Any:
        """Evaluate the graph with a per-node rule: ``step(node, layer, *input values)`` gives a
        node's value from its inputs' values; ``x`` is the input's value. Returns the output's value
        (``keep=True``: the dict of every value by name). Values nobody reads any more are dropped
        as the walk goes unless ``keep``."""
        env: dict[str, Any] = {INPUT: x}
        layers = self.layers._modules
        for node, drops in zip(self.nodes, self._drops()):
            env[node.name] = step(node, layers[node.name], *[env[i] for i in node.inputs])
            if not keep:
                for i in drops:
                    del env[i]
        return env if keep else env[self.output]

    def _drops(self) -> list[tuple[str, ...]]:
        """Per node, the values no later node reads (computed once; nodes never change)."""
        drops = self.__dict__.get("_drop_plan")
        if drops is None:
            last_use: dict[str, int] = {}
            for n in self.nodes:
                for i in n.inputs:
                    last_use[i] = n.index
            drops = [tuple(i for i in dict.fromkeys(n.inputs) if last_use[i] == n.index and i != self.output)
                     for n in self.nodes]
            self.__dict__["_drop_plan"] = drops
        return drops

    # ----- float forward -----------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.walk(x, lambda node, layer, *xs: layer(*xs))

    def extra_repr(self) -> str:
        lines = [f"{n.name} <- {', '.join(n.inputs)}" for n in self.nodes]
        return "nodes: " + "; ".join(lines) + f"; output: {self.output}"


def _leaves(model: nn.Module) -> Iterator[nn.Module]:
    if isinstance(model, nn.Sequential) and not isinstance(model, QNNGraph):
        for child in model:
            yield from _leaves(child)
    else:
        yield model


def as_graph(model: nn.Module) -> QNNGraph:
    """``model`` as a :class:`QNNGraph`: itself if it is one, else the chain of its leaf layers
    (a nested ``nn.Sequential`` is flattened; a single layer is a one-node chain). The layers are
    shared, not copied; the view is built each call (cheap) so it always reflects the model."""
    if isinstance(model, QNNGraph):
        return model
    leaves = list(_leaves(model))
    if len(leaves) == 1 and isinstance(leaves[0], QNNGraph):
        return leaves[0]
    nodes, prev = [], INPUT
    for i, layer in enumerate(leaves):
        nodes.append((str(i), layer, (prev,)))
        prev = str(i)
    return QNNGraph(nodes)


def input_quantizer(graph: QNNGraph) -> nn.Module | None:
    """The graph's input quantizer: the first node, when its op is an input quantizer
    (``OpDef.is_input``) and it is the only reader of the graph input; None otherwise."""
    first, layer = next(graph.items())
    try:
        is_input = op_for(layer).is_input
    except UnsupportedOp:
        return None
    if is_input and first.inputs == (INPUT,) and len(graph.consumers(INPUT)) == 1:
        return layer
    return None


__all__ = ["INPUT", "Node", "QNNGraph", "as_graph", "input_quantizer"]
