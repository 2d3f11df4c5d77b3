"""CROWN / alpha-CROWN lower bounds of specification rows through auto_LiRPA (float64).

The bounded module is built once per model; batch sizes change freely. Bounds are float64 with
the operators' rounding slack (:func:`qa_lirpa.bounded_module`); callers accept a bound as a
proof only above a small tolerance.
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Hashable

import torch
from torch import nn

from .. import bounded_module
from ..compat import import_auto_lirpa
from ..graph import UnsupportedOp, as_graph, op_for


#: optimised slopes kept (CrownBounder.lower's ``key``), the least recently set dropped first
KEPT_SLOPES = 8
#: Adam step size of the slopes in alpha-CROWN (auto_LiRPA's 0.5 overshoots rounding slopes near 1)
ALPHA_LR = 0.1


class CrownBounder:
    """Linear-relaxation bounds of ``C @ model(x)`` over input boxes.

    Args:
        model: a float64 module on ``device`` (for quantized-input models: the body after the
            QuantInput, fed with dequantized codes).
        input_shape: the model's input shape without batch.
        quant_slack: see :func:`qa_lirpa.bounded_module`.
        alpha_iterations: optimisation steps of alpha-CROWN (``lower(..., alpha=True)``).
    """

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], device: torch.device,
                 quant_slack: float = 1e-6, alpha_iterations: int = 20, method: str = "auto",
                 auto_units: int = 4096) -> None:
        self._al = import_auto_lirpa()
        example = torch.zeros((1,) + tuple(input_shape), dtype=torch.float64, device=device)
        self.units = hidden_units(model, example)
        self.method = method if method != "auto" else "CROWN" if self.units <= auto_units else "CROWN-IBP"
        self.alpha_ok = alpha_supported(model)
        #: why alpha-CROWN was given up on this model ("" while it works)
        self.alpha_error = ""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.bm = bounded_module(model, example, quant_slack=quant_slack, device=device,
                                     optimize_bound_args={"iteration": int(alpha_iterations), "lr_alpha": ALPHA_LR})
        for node in self._steps():            # rounding steps: slopes for the output rows only
            node.alpha_starts = {self.bm.final_name}
        self._kept: OrderedDict = OrderedDict()   # key -> (rows, {node: (slopes, cap)})

    def lower(self, xlo: torch.Tensor, xhi: torch.Tensor, C: torch.Tensor, alpha: bool = False,
              key: Hashable | None = None) -> torch.Tensor:
        """Lower bounds ``[B, R]`` of ``C[b] @ model(x)`` for ``xlo[b] <= x <= xhi[b]``
        (float64 ``[B, *input_shape]``; ``C`` float64 ``[B, R, m]``, the same rows for every box
        when ``key`` is given).

        ``alpha`` (and a model alpha-CROWN can optimise): the better of alpha-CROWN's and CROWN's
        bound per row; with ``key``, the rounding steps' optimised slopes are kept under it.
        Without ``alpha``, with a ``key`` whose slopes cover ``C``'s rows: CROWN with those slopes
        (on sub-boxes of the box they were optimised on they are usually far better than the hull
        lines' midpoint choice; every slope is sound on every box, the intercepts come from each
        box's own intervals) -- the better of that and plain CROWN is *not* taken, to keep one
        CROWN pass per box."""
        if not alpha and key is not None and key in self._kept:
            reused = self._reuse(xlo, xhi, C, key)
            if reused is not None:
                return reused
        if alpha and self.alpha_ok and self.method == "CROWN":
            try:
                lb = self._compute(xlo, xhi, C, "CROWN-Optimized")
            except Exception as e:  # noqa: BLE001 - alpha only tightens: plain CROWN from now on
                for n in self.bm.optimizable_activations:
                    n.opt_end()
                self.alpha_ok = False
                self.alpha_error = f"alpha-CROWN unavailable on this model ({type(e).__name__}: {e})"
                return self._compute(xlo, xhi, C, self.method)
        else:
            lb = self._compute(xlo, xhi, C, self.method)
        if alpha and self.alpha_ok and self.method == "CROWN":
            if key is not None:
                self._keep(key, C[0])
            # both are lower bounds; the rounding steps' optimised slopes stay below CROWN's steep
            # chords (qa_lirpa.operators.step), so a row can come out better under plain CROWN
            lb = torch.maximum(lb, self._compute(xlo, xhi, C, self.method))
        return lb

    def _compute(self, xlo, xhi, C, method: str) -> torch.Tensor:
        al = self._al
        ptb = al.PerturbationLpNorm(norm=float("inf"), x_L=xlo, x_U=xhi)
        x = al.BoundedTensor((xlo + xhi) / 2, ptb)
        with warnings.catch_warnings(), torch.set_grad_enabled(method == "CROWN-Optimized"):
            warnings.simplefilter("ignore")   # alpha-CROWN optimises its slopes with autograd
            lb, _ = self.bm.compute_bounds(x=(x,), C=C, method=method, bound_upper=False)
        return lb.detach().to(torch.float64)

    def _steps(self) -> list:
        return [n for n in self.bm.optimizable_activations if hasattr(n, "alpha_starts")]

    def _keep(self, key: Hashable, rows: torch.Tensor) -> None:
        final = self.bm.final_name
        slopes = {n.name: (n.alpha[final].detach().clone(), n._k_cap) for n in self._steps() if final in n.alpha}
        self._kept[key] = (rows.detach().clone(), slopes)
        self._kept.move_to_end(key)
        while len(self._kept) > KEPT_SLOPES:
            self._kept.popitem(last=False)

    def _reuse(self, xlo, xhi, C, key: Hashable) -> torch.Tensor | None:
        rows, slopes = self._kept[key]
        want = C[0]
        if not slopes or want.shape[-1] != rows.shape[-1] or not bool((C == want).all()):
            return None
        match = (want.unsqueeze(1) == rows.unsqueeze(0)).all(dim=-1)        # [R_now, R_kept]
        if not bool(match.any(dim=1).all()):
            return None
        idx = match.to(torch.int64).argmax(dim=1)
        final = self.bm.final_name
        nodes = [n for n in self._steps() if n.name in slopes]
        try:
            for n in nodes:
                a, cap = slopes[n.name]
                n.alpha = {final: a[:, :, idx]}
                n._k_cap = cap
                n.opt_stage = "reuse"
            return self._compute(xlo, xhi, C, self.method)
        except Exception:  # noqa: BLE001 - the slopes only tighten: plain CROWN, and no reuse any more
            self._kept.clear()
            return None
        finally:
            for n in nodes:
                n.opt_stage = None
                n.alpha = {}

    def step_intervals(self, xlo: torch.Tensor, xhi: torch.Tensor) -> list[tuple] | None:
        """The output intervals of the model's rounding steps over one box ``xlo <= x <= xhi``
        (float64 ``[1, *input_shape]``), from the bounds of each step's input that this bounder's
        method (CROWN, or CROWN-IBP on large models) computes on its way to the outputs: sound for
        every slope the steps' relaxations use; each step's interval is its IBP image of those
        bounds, widened by the operators' slack (float64, real values). Per step of the bounded
        module, in its order: ``(value at the box's centre, lower, upper)``, each ``[1, ...]``
        (other nonlinear nodes, e.g. max pooling, are left out). None when a rounding step is
        not one of our FakeQuant nodes (e.g. ONNX's Round) or its input was left without bounds."""
        from ..operators.step import BoundFakeQuant, BoundStep

        al = self._al
        ptb = al.PerturbationLpNorm(norm=float("inf"), x_L=xlo, x_U=xhi)
        x = al.BoundedTensor((xlo + xhi) / 2, ptb)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            self.bm.compute_bounds(x=(x,), method=self.method, bound_upper=False)
        out = []
        for n in self.bm.optimizable_activations:
            if not isinstance(n, BoundStep):
                continue
            inp = n.inputs[0]
            if not isinstance(n, BoundFakeQuant) or getattr(inp, "lower", None) is None \
                    or getattr(inp, "upper", None) is None:
                return None
            lo, hi = n.interval_propagate((inp.lower, inp.upper))
            out.append((self.bm.get_forward_value(n).detach(), lo.detach(), hi.detach()))
        return out

    def interval(self, xlo: torch.Tensor, xhi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """IBP output bounds ``([B, *out], [B, *out])`` for ``xlo <= x <= xhi`` (float64)."""
        al = self._al
        ptb = al.PerturbationLpNorm(norm=float("inf"), x_L=xlo, x_U=xhi)
        x = al.BoundedTensor((xlo + xhi) / 2, ptb)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lb, ub = self.bm.compute_bounds(x=(x,), method="IBP")
        return lb.detach().to(torch.float64), ub.detach().to(torch.float64)


def hidden_units(model: nn.Module, example: torch.Tensor) -> int:
    """Number of outputs of the nonlinear ops (``OpDef.nonlinear``) in one forward pass of the
    model's graph: what full CROWN's cost grows with."""
    count = [0]

    def step(node, layer, *xs):
        out = layer(*xs)
        try:
            nonlinear = op_for(layer).nonlinear
        except UnsupportedOp:          # a layer of another library (e.g. a converted ONNX graph)
            nonlinear = True
        if nonlinear and isinstance(out, torch.Tensor):
            count[0] += out[0].numel()
        return out

    with torch.no_grad():
        as_graph(model).walk(example, step)
    return count[0]


def alpha_supported(model: nn.Module) -> bool:
    """Whether every op of the model's graph can take part in alpha-CROWN (``OpDef.optimizable``;
    a layer without an op definition is left to auto_LiRPA, as before the registry)."""
    for _, layer in as_graph(model).items():
        try:
            if not op_for(layer).optimizable:
                return False
        except UnsupportedOp:
            continue
    return True


__all__ = ["CrownBounder", "hidden_units", "alpha_supported"]
