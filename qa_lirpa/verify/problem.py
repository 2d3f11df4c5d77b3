"""The interface the branch-and-bound search needs from a verification problem; implemented by
:class:`~qa_lirpa.verify.grid.GridProblem` (integer input codes, exact) and
:class:`~qa_lirpa.verify.continuous.ContinuousProblem` (real inputs, float64).

Boxes are ``[B, D]`` tensors ``lo <= hi`` (int64 codes or float64 reals), ``D`` the number of inputs.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from .spec import OutputSpec

ExactFn = Callable[[int], Sequence[Fraction]]


class Problem(Protocol):
    integral: bool            # True: boxes of integer codes (finite, the search ends)
    shape: tuple[int, ...]    # model input shape without batch
    dim: int                  # number of inputs D
    n_outputs: int
    device: torch.device
    crown: object | None      # a CrownBounder, or None when CROWN is unavailable
    crown_error: str

    def root(self, lower: np.ndarray, upper: np.ndarray) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The box of the real input box (None: it holds no input)."""

    def storage_dtype(self) -> torch.dtype: ...

    def is_point(self, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor: ...

    def widths(self, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """Per dimension a positive number where the box can be split, else 0."""

    def log_volume(self, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor: ...

    def split(self, lo: torch.Tensor, hi: torch.Tensor, dims: torch.Tensor): ...

    def split_points(self, lo: torch.Tensor, hi: torch.Tensor, dims: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def output_intervals(self, lo: torch.Tensor, hi: torch.Tensor, trace=None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sound output bounds ``[B, m]`` (float64)."""

    def crown_lower(self, lo: torch.Tensor, hi: torch.Tensor, C: torch.Tensor, alpha: bool = False,
                    key=None) -> torch.Tensor: ...
        # key: optimised slopes kept by alpha=True and reused by later calls (CrownBounder.lower)

    def sensitivity(self, trace, lo: torch.Tensor, hi: torch.Tensor, coef: torch.Tensor) -> torch.Tensor: ...

    def eval_points(self, points: torch.Tensor) -> tuple[torch.Tensor, ExactFn]:
        """Outputs of points (float64 ``[N, m]``) and, per point, the exact outputs."""

    def confirm(self, point: torch.Tensor, lower: np.ndarray, upper: np.ndarray, ospec: OutputSpec
                ) -> tuple[np.ndarray, np.ndarray] | None:
        """A counterexample ``(x, outputs)`` re-checked by the reference semantics, or None."""

    def find_violation(self, points: torch.Tensor, lower: np.ndarray, upper: np.ndarray, ospec: OutputSpec
                       ) -> tuple[np.ndarray, np.ndarray] | None:
        """The first of ``points`` that violates the property under the model's meaning, confirmed
        (see :meth:`confirm`), or None."""

    def attack_forward(self, t: torch.Tensor, loose: bool = False) -> torch.Tensor: ...

    def snap(self, t: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor: ...


def first_violation(problem: Problem, points: torch.Tensor, lower: np.ndarray, upper: np.ndarray,
                    ospec: OutputSpec) -> tuple[np.ndarray, np.ndarray] | None:
    """:meth:`Problem.find_violation` for problems whose :meth:`~Problem.eval_points` is their
    meaning: evaluate, then confirm the violating points in order."""
    y, exact = problem.eval_points(points)
    bad = ospec.violated_points(y.to(ospec.mat.device), exact).nonzero().squeeze(1)
    for i in bad.tolist():
        found = problem.confirm(points[i], lower, upper, ospec)
        if found is not None:
            return found
    return None


__all__ = ["Problem", "ExactFn", "first_violation"]
