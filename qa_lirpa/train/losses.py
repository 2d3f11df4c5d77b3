"""The three certified training losses (see :class:`qa_lirpa.train.config.LossConfig`).

Each loss takes the clean logits, the labels, the lower bounds of the margins ``z_y - z_k``
(``[B, K-1]``, from :class:`qa_lirpa.train.bounds.MarginBounds`) and the step's coefficients, and
returns ``(total, parts)`` where ``parts`` holds detached floats for logging.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def worst_case_ce(margin_lb: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the worst-case logits (``z_y = 0``, ``z_k = -LB(z_y - z_k)``), per batch mean:
    ``log(1 + sum_k exp(-lb_k))``."""
    zeros = margin_lb.new_zeros(margin_lb.shape[0], 1)
    return torch.logsumexp(torch.cat([zeros, -margin_lb], dim=1), dim=1).mean()


def gowal_loss(logits: torch.Tensor, y: torch.Tensor, margin_lb: torch.Tensor, kappa: float
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """``kappa * CE(clean) + (1 - kappa) * CE(worst-case logits)`` (Gowal et al. 2018)."""
    ce = F.cross_entropy(logits, y)
    rob = worst_case_ce(margin_lb)
    total = kappa * ce + (1.0 - kappa) * rob
    return total, {"ce": ce.item(), "robust": rob.item()}


def qaibp_loss(logits: torch.Tensor, y: torch.Tensor, margin_lb: torch.Tensor,
               widths: Sequence[torch.Tensor], lambda_rob: float, lambda_reg: float, margin: float
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """The official QA-IBP code's loss: ``CE + lambda_rob * mean hinge(margin - lb)
    + lambda_reg * sum of the hidden layers' mean interval widths``."""
    ce = F.cross_entropy(logits, y)
    hinge = F.relu(margin - margin_lb).mean()
    reg = torch.stack(list(widths)).sum() if len(widths) else logits.new_zeros(())
    total = ce + lambda_rob * hinge + lambda_reg * reg
    return total, {"ce": ce.item(), "robust": hinge.item(), "width": reg.item()}


def crown_ibp_loss(logits: torch.Tensor, y: torch.Tensor, crown_lb: torch.Tensor | None,
                   ibp_lb: torch.Tensor, kappa: float, beta: float
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    """CROWN-IBP (Zhang et al. 2020): the kappa loss on ``beta * LB_CROWN-IBP + (1 - beta) * LB_IBP``
    (``crown_lb`` may be None when ``beta`` is 0)."""
    lb = ibp_lb if crown_lb is None or beta <= 0 else beta * crown_lb + (1.0 - beta) * ibp_lb
    return gowal_loss(logits, y, lb, kappa)


def plain_loss(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Quantization-aware training without bounds (the warm-up)."""
    ce = F.cross_entropy(logits, y)
    return ce, {"ce": ce.item(), "robust": 0.0}


__all__ = ["worst_case_ce", "gowal_loss", "qaibp_loss", "crown_ibp_loss", "plain_loss"]
