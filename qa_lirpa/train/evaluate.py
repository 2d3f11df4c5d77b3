"""Evaluation of a quantized network: clean, IBP-certified and PGD accuracy.

* clean: the exact integer semantics (:func:`qa_lirpa.integer_forward`, ties to the smallest index);
* IBP-certified: a sample counts iff the IBP lower bounds of ``z_y - z_k`` are ``> 0`` for every
  ``k != y`` (ties count as not robust) over the box ``[max(x - eps, 0), min(x + eps, 255)]``,
  computed on a float64 copy of the model (exact for power-of-two scales) with the default rounding
  slack of :func:`qa_lirpa.bounded_module`, so the count is sound;
* PGD: clean-correct and no PGD candidate (snapped to the input grid, checked exactly) misclassified.

Per sample: certified implies PGD-robust implies clean-correct.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ..nn import set_float_mode
from .attack import exact_predict, pgd_attack
from .bounds import MarginBounds


@dataclass
class EvalResult:
    """Counts and per-sample flags (CPU bool tensors) of one evaluation."""

    n: int
    correct: torch.Tensor
    certified: torch.Tensor
    pgd_robust: torch.Tensor | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def _frac(self, flags: torch.Tensor) -> float:
        return int(flags.sum()) / self.n if self.n else 0.0

    @property
    def clean_acc(self) -> float:
        return self._frac(self.correct)

    @property
    def cert_acc(self) -> float:
        return self._frac(self.certified)

    @property
    def pgd_acc(self) -> float | None:
        return None if self.pgd_robust is None else self._frac(self.pgd_robust)

    def as_dict(self) -> dict[str, float | int]:
        """Fractions and counts (``n_correct``, ``n_certified``, ``n_pgd_robust``) and the time."""
        d: dict[str, float | int] = {"n": self.n, "clean_acc": self.clean_acc, "cert_acc": self.cert_acc,
                                     "n_correct": int(self.correct.sum()), "n_certified": int(self.certified.sum())}
        if self.pgd_robust is not None:
            d.update(pgd_acc=self.pgd_acc, n_pgd_robust=int(self.pgd_robust.sum()))
        d["eval_seconds"] = self.seconds
        return d


class Evaluator:
    """Holds a float64 copy of a model and its sound bounded module (built once).

    ``quantized=True`` (default) evaluates the quantized network, whatever the training model's
    float mode (:func:`qa_lirpa.nn.set_float_mode`); ``quantized=False`` evaluates the float
    network (quantizers off): clean accuracy by its float64 forward, IBP without quantization,
    no PGD. Only the quantized evaluation describes the deployed integer network.
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, n_classes: int,
                 device: torch.device | str = "cpu", quantized: bool = True) -> None:
        self.device = torch.device(device)
        self.n_classes = n_classes
        self.quantized = quantized
        self.model64 = set_float_mode(copy.deepcopy(model), not quantized).to(device=self.device,
                                                                              dtype=torch.float64).eval()
        self.cpu64 = self.model64 if self.device.type == "cpu" else copy.deepcopy(self.model64).cpu()
        self.bounds = MarginBounds(self.model64, example_input.to(self.device, torch.float64), n_classes)

    def sync(self, model: nn.Module) -> None:
        """Copy ``model``'s weights into the float64 copies (parameters stay shared with the bounds)."""
        src = model.state_dict()
        with torch.no_grad():
            for m in {id(self.model64): self.model64, id(self.cpu64): self.cpu64}.values():
                for k, v in m.state_dict().items():
                    v.copy_(src[k].to(device=v.device, dtype=v.dtype))

    def certified(self, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        """CPU bool ``[B]``: IBP proves every margin positive."""
        with torch.no_grad():
            lb = self.bounds.lower(x.to(self.device, torch.float64), y.to(self.device), eps, "IBP")
        return (lb > 0).all(dim=1).cpu()

    def evaluate(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float,
                 batch_size: int = 500, pgd_steps: int = 10, pgd_restarts: int = 1,
                 pgd_step_size: float | None = None, pgd: bool = True, seed: int = 0) -> EvalResult:
        """Evaluate ``model`` (the float training model; its weights are synced first) on raw
        uint8/float ``images`` in pixel units and ``labels``."""
        import time

        t0 = time.perf_counter()
        self.sync(model)
        gen = torch.Generator().manual_seed(int(seed))
        parts: dict[str, list[torch.Tensor]] = {"correct": [], "certified": [], "pgd": []}
        dev = next(model.parameters()).device
        dtype = next(model.parameters()).dtype
        for i in range(0, len(labels), batch_size):
            x = images[i:i + batch_size].to(torch.float64)
            y = labels[i:i + batch_size]
            if self.quantized:
                correct = exact_predict(self.cpu64, x) == y.cpu()
            else:
                with torch.no_grad():
                    correct = self.cpu64(x).argmax(1) == y.cpu()
            parts["correct"].append(correct)
            parts["certified"].append(self.certified(x, y, eps))
            if pgd and self.quantized:
                broken = pgd_attack(model, self.cpu64, x.to(dev, dtype), y.to(dev), eps, pgd_steps,
                                    pgd_restarts, pgd_step_size, gen)
                parts["pgd"].append(correct & ~broken)
        cat = lambda k: torch.cat(parts[k]) if parts[k] else torch.zeros(0, dtype=torch.bool)  # noqa: E731
        return EvalResult(n=len(labels), correct=cat("correct"), certified=cat("certified"),
                          pgd_robust=cat("pgd") if pgd and self.quantized else None, seconds=time.perf_counter() - t0)


__all__ = ["EvalResult", "Evaluator"]
