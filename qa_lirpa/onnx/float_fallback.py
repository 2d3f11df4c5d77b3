"""Plain float models that are not a chain of layers: conversion through onnx2pytorch.

onnx2pytorch 0.6.0 converts plain MLP/CNN exports exactly, with one pitfall fixed here: its
``Flatten`` computes the target shape from ``input.shape`` in Python, so a trace (auto_LiRPA's
``BoundedModule``) bakes the batch size into a reshape and the bounded module then fails on other
batch sizes. Each of its Flatten modules with ``axis=1`` is replaced by ``torch.nn.Flatten()``.
"""
from __future__ import annotations

import warnings

from torch import nn

from .errors import OnnxImportError
from .graph import node_label


def convert_float(model, path: str, reason: Exception) -> nn.Module:
    """Convert a float ONNX model with onnx2pytorch; errors name the file (and the node)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from onnx2pytorch import ConvertModel
            from onnx2pytorch.operations.flatten import Flatten as O2PFlatten
    except Exception as e:  # noqa: BLE001 - a missing or broken optional dependency
        raise OnnxImportError(f"{path}: {reason} (and onnx2pytorch, needed for other float graphs, "
                              f"cannot be imported: {e})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = ConvertModel(model)
    except NotImplementedError as e:
        msg = str(e)
        bad = next((n for n in model.graph.node if f"op_type={n.op_type}" in msg or f"'{n.op_type}'" in msg
                    or msg.endswith(n.op_type)), None)
        where = node_label(bad) if bad is not None else "a node"
        raise OnnxImportError(f"{path}: {where} is not supported ({msg})") from None
    except Exception as e:  # noqa: BLE001
        raise OnnxImportError(f"{path}: {reason}; onnx2pytorch could not convert it either "
                              f"({type(e).__name__}: {e})") from None
    for name, sub in list(module.named_children()):
        if isinstance(sub, O2PFlatten) and sub.start_dim == 1:
            setattr(module, name, nn.Flatten())
    return module.eval()


__all__ = ["convert_float"]
