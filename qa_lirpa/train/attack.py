"""PGD on the quantized network, with candidates checked in the exact integer semantics.

The attack follows the straight-through gradient of the float model (``model(x)``) inside the box;
each restart's end point is snapped to the input grid (integer codes of the model's
:class:`~qa_lirpa.nn.QuantInput`, clipped to the codes of the box) and evaluated exactly with
:func:`qa_lirpa.integer_forward`, so a reported attack is a real counterexample.
"""
from __future__ import annotations

import torch
from torch import nn

from ..graph import as_graph, input_quantizer
from ..nn import argmax_smallest, integer_forward
from .bounds import input_box


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per sample ``max_{k != y} z_k - z_y`` (positive: misclassified)."""
    zy = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(torch.nn.functional.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return other.max(dim=1).values - zy


def exact_predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Classes in the exact integer semantics (ties to the smallest index), on the CPU."""
    return argmax_smallest(integer_forward(model, x.detach().cpu().double()))


def pgd_attack(model: nn.Module, exact_model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
               steps: int, restarts: int, step_size: float | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Boolean ``[B]`` on the CPU: True where PGD found an input of the box (on the input grid) that
    ``exact_model`` (the same weights, any dtype, on the CPU) does not classify as ``y``.

    ``model`` gives the gradients (float STE forward, on ``x``'s device). The clean point itself is
    not tested here (see :func:`exact_predict`).
    """
    quant_in = input_quantizer(as_graph(exact_model))
    if quant_in is None:
        raise TypeError("pgd_attack: the model must start with a QuantInput")
    lo, hi = input_box(x, eps)
    code_lo, code_hi = quant_in.codes(lo.cpu()), quant_in.codes(hi.cpu())
    alpha = step_size if step_size is not None else max(0.5, eps / 4)
    broken = torch.zeros(x.shape[0], dtype=torch.bool)
    was_training = model.training
    model.eval()
    try:
        for _ in range(restarts):
            u = torch.rand(x.shape, generator=generator, dtype=torch.float64).to(x)
            xa = lo + u * (hi - lo)
            for _ in range(steps):
                xa = xa.detach().requires_grad_(True)
                loss = margin_loss(model(xa), y).sum()
                (g,) = torch.autograd.grad(loss, xa)
                xa = torch.minimum(torch.maximum(xa + alpha * g.sign(), lo), hi)
            codes = torch.minimum(torch.maximum(quant_in.codes(xa.detach().cpu()), code_lo), code_hi)
            broken |= exact_predict(exact_model, quant_in.real_inputs(codes)) != y.cpu()
    finally:
        model.train(was_training)
    return broken


__all__ = ["margin_loss", "exact_predict", "pgd_attack"]
