"""The exact integer reference: a quantized model evaluated with integer arithmetic.

``integer_forward`` walks the model's layers in order, carrying an :class:`IntTensor` (int64 codes
with exact rational scales); affine layers accumulate in int64 (products computed in float64 only
where that is provably exact), rescaling is exact rational rounding. It is the semantics every bound
of this project must contain and every counterexample must satisfy.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from .layers import IntTensor, QuantInput


def iter_layers(model: nn.Module) -> Iterator[nn.Module]:
    """The leaf layers of a (possibly nested) ``nn.Sequential`` in execution order."""
    if isinstance(model, nn.Sequential):
        for child in model:
            yield from iter_layers(child)
    else:
        yield model


def _flatten(x: IntTensor, layer: nn.Flatten) -> IntTensor:
    if len(set(x.scale)) != 1 or len(set(x.zero_point)) != 1:
        raise ValueError("Flatten: the integer reference needs a per-tensor quantized input")
    if not isinstance(x.values, torch.Tensor):
        raise OverflowError("Flatten: accumulator values beyond int64 (requantize first)")
    v = x.values.flatten(layer.start_dim, layer.end_dim)
    return IntTensor(v, x.scale[:1], x.zero_point[:1], axis=1)


def _relu(x: IntTensor) -> IntTensor:
    if not isinstance(x.values, torch.Tensor):
        raise OverflowError("ReLU: accumulator values beyond int64 (requantize first)")
    z = x.values.new_tensor(x.zero_point)
    if len(x.zero_point) > 1:
        shape = [1] * x.values.dim()
        shape[x.axis] = len(x.zero_point)
        z = z.reshape(shape)
    else:
        z = z.reshape(())
    return IntTensor(torch.maximum(x.values, z), x.scale, x.zero_point, x.axis)


def _step(layer: nn.Module, x: IntTensor, index: int) -> IntTensor:
    if hasattr(layer, "int_forward") and not isinstance(layer, QuantInput):
        return layer.int_forward(x)
    if isinstance(layer, nn.Flatten):
        return _flatten(x, layer)
    if isinstance(layer, nn.ReLU):
        return _relu(x)
    if isinstance(layer, nn.Unflatten):
        if len(set(x.scale)) != 1 or len(set(x.zero_point)) != 1 or not isinstance(x.values, torch.Tensor):
            raise ValueError(f"integer_forward: layer {index} (Unflatten) needs a per-tensor int64 input")
        v = x.values.unflatten(layer.dim, layer.unflattened_size)
        return IntTensor(v, x.scale[:1], x.zero_point[:1], axis=1)
    if isinstance(layer, (nn.Identity, nn.Dropout)):
        return x
    raise TypeError(f"integer_forward: layer {index} ({type(layer).__name__}) has no exact integer semantics")


def integer_codes(model: nn.Module, x: torch.Tensor) -> IntTensor:
    """Run ``model`` exactly on the real input ``x``; returns the output as an :class:`IntTensor`.

    The first layer must be a :class:`QuantInput`; it quantizes ``x`` in float64.
    """
    layers = list(iter_layers(model))
    if not layers or not isinstance(layers[0], QuantInput):
        raise TypeError("integer_forward: the model must start with a QuantInput layer")
    with torch.no_grad():
        h = layers[0].int_forward(x)
        for i, layer in enumerate(layers[1:], start=1):
            h = _step(layer, h, i)
    return h


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
