"""Certified bounds on the margins ``z_y - z_k`` for training and evaluation.

* :func:`spec_matrix`: the specification ``C`` with rows ``e_y - e_k`` (k != y); auto_LiRPA folds it
  into the last linear layer, so the bound is on the margins directly.
* :class:`MarginBounds`: one auto_LiRPA ``BoundedModule`` per model (built once, any batch size),
  quantization-aware through qa_lirpa's operators; IBP, CROWN-IBP, and the hidden-layer intervals
  of the last IBP pass (for the QA-IBP width regulariser).
* :func:`torch_ibp_margins`: the same IBP bound written by hand in torch (centre/radius through the
  affine layers, fake quantization on each end point), for cross-checks and the cost comparison.
"""
from __future__ import annotations

import torch
from torch import nn

from .. import bounded_module
from ..compat import import_auto_lirpa
from ..graph import as_graph, op_for


def spec_matrix(y: torch.Tensor, n_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``C`` of shape ``[B, n_classes - 1, n_classes]``: row j is ``e_y - e_k`` for the j-th k != y."""
    eye = torch.eye(n_classes, dtype=dtype, device=y.device)
    c = eye[y].unsqueeze(1) - eye.unsqueeze(0)                       # [B, K, K], row k: e_y - e_k
    keep = y.unsqueeze(1) != torch.arange(n_classes, device=y.device).unsqueeze(0)
    return c[keep].view(y.shape[0], n_classes - 1, n_classes)


def input_box(x: torch.Tensor, eps: float, lo: float = 0.0, hi: float = 255.0
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The L-infinity box ``[max(x - eps, lo), min(x + eps, hi)]`` (pixel units)."""
    return (x - eps).clamp(min=lo), (x + eps).clamp(max=hi)


class MarginBounds:
    """Lower bounds of ``z_y - z_k`` through auto_LiRPA, for one model.

    The ``BoundedModule`` shares the model's parameters (gradients reach them; weight updates are
    seen) and is built once. ``quant_slack`` is passed to :func:`qa_lirpa.bounded_module`: 0 for
    training (the exact interval image), the default 1e-6 steps for sound evaluation in float64.
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, n_classes: int,
                 quant_slack: float = 0.0) -> None:
        self.al = import_auto_lirpa()
        self.n_classes = int(n_classes)
        self.bm = bounded_module(model, example_input[:1], quant_slack=quant_slack)
        self._hidden = _hidden_act_nodes(self.bm)

    def lower(self, x: torch.Tensor, y: torch.Tensor, eps: float, method: str = "IBP"
              ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``[B, K-1]`` lower bounds of the margins over the box of radius ``eps`` around ``x``.

        ``method="IBP"`` returns one tensor; ``"CROWN-IBP"`` returns ``(crown_ibp, ibp)``, both from
        one pass (the IBP bound comes with the intermediate bounds CROWN-IBP needs anyway).
        """
        lo, hi = input_box(x, eps)
        ptb = self.al.PerturbationLpNorm(norm=float("inf"), x_L=lo, x_U=hi)
        bx = self.al.BoundedTensor(x, ptb)
        c = spec_matrix(y, self.n_classes, x.dtype)
        if method == "IBP":
            lb, _ = self.bm.compute_bounds(x=(bx,), C=c, method="IBP", bound_upper=False)
            return lb
        if method == "CROWN-IBP":
            lb, _ = self.bm.compute_bounds(x=(bx,), C=c, method="CROWN-IBP", bound_upper=False)
            return lb, self.bm.ibp_lower
        raise ValueError(f"MarginBounds: method must be 'IBP' or 'CROWN-IBP', got {method!r}")

    def hidden_widths(self) -> list[torch.Tensor]:
        """``mean(ub - lb)`` of every hidden activation's interval from the last bound pass."""
        return [(n.upper - n.lower).mean() for n in self._hidden if hasattr(n, "lower")]


def _hidden_act_nodes(bm) -> list:
    """The quantized activations that follow an affine layer (the hidden layers' outputs)."""
    from ..operators.step import BoundFakeQuant     # lazy: operators.step imports auto_LiRPA

    affine = ("BoundLinear", "BoundConv")
    return [n for n in bm._modules.values()
            if isinstance(n, BoundFakeQuant) and n.inputs and type(n.inputs[0]).__name__ in affine]


# ---------------------------------------------------------------------------------------------
# Hand-written IBP in plain torch
# ---------------------------------------------------------------------------------------------

def torch_ibp_margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                      n_classes: int) -> torch.Tensor:
    """IBP lower bounds ``[B, K-1]`` of ``z_y - z_k``, computed in torch without auto_LiRPA.

    The walk follows the model's graph and asks each op for its interval step (``OpDef.ibp``:
    centre/radius through affine layers, end point by end point through monotone ones, sums of
    bounds through a residual Add); the specification is folded into the output op when it can take
    it (``OpDef.ibp_margins``: a last QuantLinear). Differentiable (straight-through estimator).
    """
    graph = as_graph(model)
    c_spec = spec_matrix(y, n_classes, x.dtype)
    out = graph.output

    def step(node, layer, *bounds):
        op = op_for(layer)
        flat = [t for lo_hi in bounds for t in lo_hi]
        if node.name == out:
            return op.ibp_margins(layer, c_spec, *flat)
        return op.ibp(layer, *flat)

    return graph.walk(input_box(x, eps), step)


__all__ = ["spec_matrix", "input_box", "MarginBounds", "torch_ibp_margins"]
