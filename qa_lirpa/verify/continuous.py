"""The verification problem of a model *without* an input quantizer: boxes of real inputs.

The input set is not finite, so the search can prove the property (every box refuted) or find a
counterexample, but it cannot always end: boxes that float64 can no longer halve are left open and
the answer is then ``unknown``. Bounds come from auto_LiRPA (IBP and CROWN, float64, with the
operators' rounding slack) and count as proofs only above a tolerance; the semantics of a point is
the model's float64 forward.

With a referee (an ONNX file: :class:`~qa_lirpa.onnx.referee.OnnxReferee`) the semantics of a
point is onnxruntime's output instead: the root box is widened to hold every float32-cast input
(``[min(lo, fl32(lo)), max(hi, fl32(hi))]``; ``fl32`` is monotone, so the cast of every input of
the box lies in it), bounds are widened by
:func:`~qa_lirpa.onnx.referee.float_chain_envelope` (onnxruntime's float32 error on that box), and
a point violates only when onnxruntime's outputs at it (clipped into the property's own box, which
leaves its float32 cast unchanged) violate the property, compared exactly.
"""
from __future__ import annotations

import copy
import math
from fractions import Fraction

import numpy as np
import torch
from torch import nn

from ..onnx.referee import float_chain_envelope
from .crown import CrownBounder
from .problem import ExactFn, first_violation
from .spec import OutputSpec


class ContinuousProblem:
    """Boxes of real inputs (float64 ``[B, D]``) of a model with continuous inputs."""

    integral = False

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], device: torch.device,
                 use_crown: bool = True, quant_slack: float = 1e-6, alpha_iterations: int = 20,
                 crown_method: str = "auto", crown_auto_units: int = 4096, referee=None) -> None:
        self.referee = referee
        self.envelope = None          # the float32 envelope (with a referee), set by :meth:`root`
        self.output_error = 0.0       # its output error bound (the largest over the roots so far)
        self.model = copy.deepcopy(model).to(device).double().eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.shape = tuple(int(s) for s in input_shape)
        self.dim = int(math.prod(self.shape))
        self.device = device
        try:
            with torch.no_grad():
                self.n_outputs = int(self.attack_forward(torch.zeros(1, self.dim, dtype=torch.float64,
                                                                     device=device)).shape[1])
        except RuntimeError as e:
            raise ValueError(f"the model does not take inputs of shape {self.shape}: {e}") from None
        # float32-emulating quantizers (ONNX import): IBP is sound with a slack of at least their
        # tolerance; CROWN's relaxations are not widened for them yet
        tol = max((float(getattr(m, "float32_tolerance", 0.0) or 0.0) for m in self.model.modules()), default=0.0)
        self.bounder = CrownBounder(self.model, self.shape, device, max(quant_slack, tol), alpha_iterations,
                                    crown_method, crown_auto_units)
        self.crown = self.bounder if use_crown and tol == 0 else None
        self.crown_error = "CROWN off: the model emulates float32 quantizers" if use_crown and tol > 0 else ""

    def root(self, lower: np.ndarray, upper: np.ndarray) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The root box of the real box ``[lower, upper]``; with a referee widened to hold the
        float32 cast of each of its inputs, and the envelope on it accounted for (the problem keeps
        the largest output error of all its roots, which is sound for each of them)."""
        lo = torch.as_tensor(lower, dtype=torch.float64, device=self.device).reshape(1, -1)
        hi = torch.as_tensor(upper, dtype=torch.float64, device=self.device).reshape(1, -1)
        if bool((lo > hi).any()):
            return None
        if self.referee is not None:
            lo = torch.minimum(lo, self.referee.cast(lo))
            hi = torch.maximum(hi, self.referee.cast(hi))
            self._add_envelope(lo, hi)
        return lo, hi

    def begin(self) -> None:
        """Forget the envelopes of earlier roots (a new :meth:`Verifier.verify` call)."""
        self.envelope = None
        self.output_error = 0.0

    def _add_envelope(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        env = float_chain_envelope(self.model, lo.cpu().numpy(), hi.cpu().numpy(), self.shape)
        if self.envelope is None or not env.output_error <= self.envelope.output_error:
            self.envelope = env
        self.output_error = float(self.envelope.output_error)

    @staticmethod
    def storage_dtype() -> torch.dtype:
        return torch.float64

    @staticmethod
    def is_point(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        return (lo == hi).all(dim=1)

    @staticmethod
    def log_volume(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """log2 of each box's volume, zero widths counted as the smallest positive float."""
        return torch.log2(torch.clamp(hi - lo, min=2.0 ** -1074)).sum(dim=1)

    @staticmethod
    def widths(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """Interval widths; 0 where float64 cannot put a midpoint strictly inside."""
        mid = lo + (hi - lo) / 2
        ok = (mid > lo) & (mid < hi)
        return torch.where(ok, hi - lo, torch.zeros_like(lo))

    @staticmethod
    def split_points(lo: torch.Tensor, hi: torch.Tensor, dims: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Halving at ``dims[b]``: both children share the midpoint."""
        rows = torch.arange(lo.shape[0], device=lo.device)
        mid = lo[rows, dims] + (hi[rows, dims] - lo[rows, dims]) / 2
        return mid, mid

    @staticmethod
    def split(lo: torch.Tensor, hi: torch.Tensor, dims: torch.Tensor):
        """Halve each box at the midpoint of dimension ``dims[b]`` (the children share it)."""
        rows = torch.arange(lo.shape[0], device=lo.device)
        mid = lo[rows, dims] + (hi[rows, dims] - lo[rows, dims]) / 2
        hi1, lo2 = hi.clone(), lo.clone()
        hi1[rows, dims] = mid
        lo2[rows, dims] = mid
        return (lo, hi1), (lo2, hi)

    def output_intervals(self, lo: torch.Tensor, hi: torch.Tensor, trace=None) -> tuple[torch.Tensor, torch.Tensor]:
        """IBP output bounds (float64 ``[B, m]``; sound up to float error, see the module doc)."""
        if math.isinf(self.output_error):          # nothing is proved by bounds
            inf = torch.full((lo.shape[0], self.n_outputs), math.inf, dtype=torch.float64, device=lo.device)
            return -inf, inf
        ylo, yhi = self.bounder.interval(lo.reshape((-1,) + self.shape), hi.reshape((-1,) + self.shape))
        ylo, yhi = ylo.reshape(ylo.shape[0], -1), yhi.reshape(yhi.shape[0], -1)
        if self.output_error:
            # onnxruntime's outputs lie within output_error of the exact ones; 2^-50 |y| covers
            # the rounding of this subtraction
            ylo = ylo - (self.output_error + 2.0 ** -50 * ylo.abs())
            yhi = yhi + (self.output_error + 2.0 ** -50 * yhi.abs())
        return ylo, yhi

    def crown_lower(self, lo: torch.Tensor, hi: torch.Tensor, C: torch.Tensor, alpha: bool = False,
                    key=None) -> torch.Tensor:
        if math.isinf(self.output_error):
            return torch.full(C.shape[:-1], -math.inf, dtype=torch.float64, device=lo.device)
        lb = self.bounder.lower(lo.reshape((-1,) + self.shape), hi.reshape((-1,) + self.shape), C, alpha=alpha,
                                key=key)
        if self.output_error:
            lb = lb - self.output_error * C.abs().sum(dim=-1) * (1 + 2.0 ** -40)
        return lb

    def sensitivity(self, trace, lo: torch.Tensor, hi: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        """Width times the straight-through gradient of ``coef[b] @ y`` at the box centre."""
        x = ((lo + hi) / 2).detach().requires_grad_(True)
        with torch.enable_grad():
            y = self.attack_forward(x)
            (g,) = torch.autograd.grad((y * coef).sum(), x)
        return g.abs() * (hi - lo) + 1e-12 * (hi - lo)

    def eval_points(self, x: torch.Tensor) -> tuple[torch.Tensor, ExactFn]:
        """Float64 forward outputs ``[N, m]``; the floats are the semantics, so exact = as rationals."""
        with torch.no_grad():
            y = self.attack_forward(x)
        return y, lambda n: [Fraction(float(v)) for v in y[n]]

    def confirm(self, x: torch.Tensor, lower: np.ndarray, upper: np.ndarray, ospec: OutputSpec
                ) -> tuple[np.ndarray, np.ndarray] | None:
        """``(x, outputs)`` if the point ``x`` of the box violates the property under the model's
        meaning (with a referee: onnxruntime at ``x`` clipped into ``[lower, upper]``), else None."""
        if self.referee is not None:
            return self._referee_violation(x.reshape(1, -1), lower, upper, ospec)
        flat = x.reshape(-1).cpu().numpy().astype(np.float64)
        if not (np.all(flat >= lower) and np.all(flat <= upper)):
            return None
        y, exact = self.eval_points(x.reshape(1, -1).to(self.device))
        if not bool(ospec.violated_points(y.to(ospec.mat.device), exact)[0]):
            return None
        return flat.reshape(self.shape).copy(), y.reshape(-1).cpu().numpy().copy()

    def find_violation(self, x: torch.Tensor, lower: np.ndarray, upper: np.ndarray, ospec: OutputSpec
                       ) -> tuple[np.ndarray, np.ndarray] | None:
        """The first of the points ``x`` ``[N, D]`` that violates the property under the model's
        meaning (see :meth:`confirm`), or None."""
        if self.referee is not None:
            return self._referee_violation(x, lower, upper, ospec)
        return first_violation(self, x, lower, upper, ospec)

    def _referee_violation(self, x: torch.Tensor, lower: np.ndarray, upper: np.ndarray, ospec: OutputSpec
                           ) -> tuple[np.ndarray, np.ndarray] | None:
        """Run onnxruntime on the points ``x`` clipped into the property's box ``[lower, upper]``
        (the search's boxes are widened to the float32 casts of its bounds; by monotonicity of
        ``fl32`` clipping a point of the widened box keeps its cast) and decide exactly on its
        float32 outputs. Returns the first violating point and onnxruntime's outputs there."""
        pts = x.reshape(x.shape[0], -1).detach().cpu().to(torch.float64).numpy()
        lo, hi = np.asarray(lower, np.float64).reshape(1, -1), np.asarray(upper, np.float64).reshape(1, -1)
        pts = np.minimum(np.maximum(pts, lo), hi)
        ok = np.all(np.isfinite(pts), axis=1) & np.all(pts >= lo, axis=1) & np.all(pts <= hi, axis=1)
        pts = pts[ok]
        if pts.shape[0] == 0:
            return None
        y = self.referee.outputs(pts)
        yt = torch.as_tensor(y, dtype=torch.float64, device=ospec.mat.device)
        bad = ospec.violated_points(yt, self.referee.exact_outputs(y)).nonzero().squeeze(1)
        if bad.numel() == 0:
            return None
        i = int(bad[0])
        return pts[i].reshape(self.shape).copy(), y[i].reshape(-1).copy()

    def attack_forward(self, t: torch.Tensor, loose: bool = False) -> torch.Tensor:
        return self.model(t.reshape((-1,) + self.shape)).reshape(t.shape[0], -1)

    @staticmethod
    def snap(t: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.maximum(t, lo), hi)


__all__ = ["ContinuousProblem"]
