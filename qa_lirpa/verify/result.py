"""Typed verification results: a :class:`VerifyResult` with statistics, and its
:class:`~qa_lirpa.base.verdict.Verdict` (defined in ``qa_lirpa.base.verdict``, re-exported here).
Turn a verdict into text only at the edge (CLI, result files).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from ..base.verdict import Verdict


@dataclass
class VerifyStats:
    """Counters and times (seconds) of one verification run."""

    boxes_bounded: int = 0
    max_depth: int = 0
    bound_calls: int = 0
    ibp_calls: int = 0
    crown_calls: int = 0
    #: alpha-CROWN at the root (VerifierConfig.alpha_root): calls and seconds
    alpha_calls: int = 0
    attack_calls: int = 0
    #: the root's greedy descent on the input grid (VerifierConfig.local_search_s)
    local_search_calls: int = 0
    #: ... of them given the longer budget for a near miss (VerifierConfig.local_search_solo)
    local_search_extended: int = 0
    #: rounds of the neighbourhood search after it (VerifierConfig.lns_s)
    lns_rounds: int = 0
    #: why the neighbourhood search stopped early ("" when it did not)
    lns_error: str = ""
    #: runs of the seed restarts after the local search (VerifierConfig.restart_s), and why they
    #: stopped early ("" when they did not)
    restart_rounds: int = 0
    restart_error: str = ""
    points_checked: int = 0
    queue_peak: int = 0
    time_total: float = 0.0
    time_bounding: float = 0.0
    time_attack: float = 0.0
    time_exact: float = 0.0
    time_alpha: float = 0.0
    #: the exact MILP fallback (VerifierConfig.exact_fallback): MILPs solved, boxes handed over,
    #: seconds, and what happened (or why it was not used), "" when it was not asked for
    milp_calls: int = 0
    milp_boxes: int = 0
    time_milp: float = 0.0
    exact: str = ""
    #: the portfolio's exact process (VerifierConfig.portfolio): what it did, and the seconds this
    #: process waited for it (VerifierConfig.portfolio_yield)
    portfolio: str = ""
    time_yield: float = 0.0
    #: ONNX models: grid points decided by running onnxruntime, and the float32 envelope the
    #: bounds carried (:func:`qa_lirpa.onnx.referee.float32_envelope`), "" for other models
    referee_points: int = 0
    float32: str = ""

    def merge(self, other: "VerifyStats") -> None:
        """Add ``other``'s counters and times to these (maxima for depth and queue peak; notes
        joined)."""
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, str):
                best = "; ".join(t for t in (a, b) if t)
            else:
                best = max(a, b) if f.name in ("max_depth", "queue_peak") else a + b
            setattr(self, f.name, best)


@dataclass
class VerifyResult:
    """The verdict, a confirmed counterexample for ``SAT``, and statistics.

    ``counterexample``: the real input point (float64, the model's input shape without batch) that
    lies in the property's input box; ``outputs``: the model's exact outputs there (float64,
    dequantized from the exact integer computation). Both are None unless the verdict is ``SAT``.
    """

    verdict: Verdict
    counterexample: np.ndarray | None = None
    outputs: np.ndarray | None = None
    stats: VerifyStats = field(default_factory=VerifyStats)
    message: str = ""

    def summary(self) -> str:
        """A few human-readable lines: the verdict, the work done, the times."""
        s = self.stats
        lines = [f"verdict: {self.verdict.value}" + (f" ({self.message})" if self.message else "")]
        if self.outputs is not None:
            lines.append("outputs: " + np.array2string(np.asarray(self.outputs).reshape(-1), precision=6))
        lines.append(f"boxes bounded: {s.boxes_bounded}, max depth: {s.max_depth}, bound calls: "
                     f"{s.bound_calls} (IBP {s.ibp_calls}, CROWN {s.crown_calls}), attacks: "
                     f"{s.attack_calls}, points checked: {s.points_checked}, queue peak: {s.queue_peak}")
        lines.append(f"time: {s.time_total:.3f} s (bounding {s.time_bounding:.3f}, attack "
                     f"{s.time_attack:.3f}, exact {s.time_exact:.3f}"
                     + (f", MILP {s.time_milp:.3f}" if s.milp_calls else "")
                     + (f", alpha-CROWN {s.time_alpha:.3f}" if s.alpha_calls else "")
                     + (f", waiting for the exact process {s.time_yield:.3f}" if s.time_yield else "") + ")")
        if s.exact:
            lines.append(f"exact fallback: {s.exact}")
        if s.portfolio:
            lines.append(f"portfolio: {s.portfolio}")
        if s.float32:
            lines.append(f"onnxruntime referee: {s.float32}")
        return "\n".join(lines)


__all__ = ["Verdict", "VerifyStats", "VerifyResult"]
