"""auto_LiRPA bound operators for quantization, registered per model (never globally)."""
from __future__ import annotations

import warnings
from typing import Any

import torch

from ..compat import import_auto_lirpa


def custom_ops() -> dict[str, type]:
    """The ``custom_ops=`` mapping for ``auto_LiRPA.BoundedModule`` (a fresh dict each call)."""
    from .step import CUSTOM_OPS        # lazy: step imports auto_LiRPA; this package must not

    return dict(CUSTOM_OPS)


def bounded_module(model: torch.nn.Module, example_input: torch.Tensor, *, quant_slack: float = 1e-6,
                   device: str | torch.device | None = None, **bound_opts: Any):
    """Wrap ``model`` in an auto_LiRPA ``BoundedModule`` that knows qa_lirpa's operators.

    Args:
        model: a torch module built from qa_lirpa layers (or with Round/Floor/Clip/QuantizeLinear/
            DequantizeLinear nodes).
        example_input: an input of the right shape (its batch size does not matter later).
        quant_slack: widening, in quantization steps, of every interval before it is rounded, so
            that float error in a bound that falls just short of a rounding tie stays sound. Use
            float64 models for verification; 1e-6 steps is far above float64 error for any
            realistic network and far below a step. 0 gives the exact interval image (training).
        device: where the bounded module lives (default: the example input's device).
        **bound_opts: passed to auto_LiRPA as ``bound_opts``.
    """
    auto_lirpa = import_auto_lirpa()
    opts = dict(bound_opts)
    opts["qa_lirpa"] = {**opts.get("qa_lirpa", {}), "slack": float(quant_slack)}
    dev = device if device is not None else example_input.device
    with warnings.catch_warnings():
        # tracing a model with per-channel constants warns once per op; the constants are meant
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        bm = auto_lirpa.BoundedModule(model, example_input, bound_opts=opts, custom_ops=custom_ops(),
                                      device=dev)
    _request_constant_bounds(bm)
    _matrix_mode_for_flat_adds(bm)
    return bm


def _matrix_mode_for_flat_adds(bm) -> None:
    """auto_LiRPA 0.3 gives every BoundAdd/BoundSub the conv mode ("patches" by default) and then,
    in CROWN, builds identity patches from ``output_shape[-3]`` (a FIXME there): an Add of flat
    tensors (a residual MLP) fails with IndexError. Patches only make sense for [N, C, H, W]
    outputs, so those Adds get the matrix mode (the mode every non-conv node uses)."""
    for node in bm._modules.values():
        if type(node).__name__ in ("BoundAdd", "BoundSub") and getattr(node, "mode", None) == "patches":
            if len(getattr(node, "output_shape", ()) or ()) != 4:
                node.mode = "matrix"


def _request_constant_bounds(bm) -> None:
    """Make every node that consumes a quantized *constant* (e.g. a fake-quantized weight) ask for
    that input's bounds.

    auto_LiRPA 0.3 gives ``lower``/``upper`` to parameter leaves only; an operator node computed from
    parameters alone gets them only if a consumer lists it in ``requires_input_bounds`` (then they
    are its forward value). Without this, CROWN through ``Linear(x, FakeQuant(W))`` fails.
    """
    from auto_LiRPA.operators import BoundInput

    constant: dict[str, bool] = {}

    def is_constant(node) -> bool:
        if node.name not in constant:
            if isinstance(node, BoundInput) and not node.inputs:
                constant[node.name] = type(node).__name__ != "BoundInput"
            else:
                constant[node.name] = bool(node.inputs) and all(is_constant(i) for i in node.inputs)
        return constant[node.name]

    for node in list(bm._modules.values()):
        for i, inp in enumerate(node.inputs):
            if inp.inputs and is_constant(inp):
                req = list(getattr(node, "requires_input_bounds", []))
                if i not in req:
                    node.requires_input_bounds = req + [i]


__all__ = ["bounded_module", "custom_ops"]
