"""The exact integer reference: a quantized model evaluated with integer arithmetic.

``integer_forward`` walks the model's graph (:func:`qa_lirpa.graph.as_graph`; a chain is a graph)
and asks each node's op definition for its exact step (``OpDef.int_forward``), carrying
:class:`IntTensor` values (int64 codes with exact rational scales); affine layers accumulate in int64
(products computed in float64 only where that is provably exact), rescaling is exact rational
rounding. It is the semantics every bound of this project must contain and every counterexample
must satisfy.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from ..graph import as_graph, input_quantizer, op_for
from . import layers  # noqa: F401 - registers the op definitions of the built-in layers
from .tensors import IntTensor


def iter_layers(model: nn.Module) -> Iterator[nn.Module]:
    """The layers of ``model`` in execution order (for a chain, its leaf layers; for a
    :class:`~qa_lirpa.graph.QNNGraph`, its nodes' layers)."""
    for _, layer in as_graph(model).items():
        yield layer


def integer_codes(model: nn.Module, x: torch.Tensor) -> IntTensor:
    """Run ``model`` exactly on the real input ``x``; returns the output as an :class:`IntTensor`.

    The graph must start with an input quantizer (a :class:`QuantInput`); it quantizes ``x`` in
    float64.
    """
    graph = as_graph(model)
    if input_quantizer(graph) is None:
        raise TypeError("integer_forward: the model must start with a QuantInput layer")

    def step(node, layer, *xs):
        try:
            return op_for(layer).int_forward(layer, *xs)
        except (TypeError, ValueError, OverflowError) as e:
            kind = next(k for k in (TypeError, OverflowError, ValueError) if isinstance(e, k))
            raise kind(f"integer_forward: node {node.name} ({type(layer).__name__}): {e}") from None

    with torch.no_grad():
        return graph.walk(x, step)


def integer_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Exact outputs of the quantized ``model`` on ``x``, dequantized to float64.

    The float64 values are exact whenever the outputs are representable (always for power-of-two
    scales and accumulators below 2^53).
    """
    return integer_codes(model, x.to("cpu")).dequantize()


def argmax_smallest(y: torch.Tensor) -> torch.Tensor:
    """Argmax along the last dimension with ties to the smallest index (``torch.argmax`` does not
    promise this)."""
    is_max = y == y.max(dim=-1, keepdim=True).values
    idx = torch.arange(y.shape[-1], device=y.device).expand_as(y)
    return torch.where(is_max, idx, y.shape[-1]).min(dim=-1).values
