"""Certify local robustness of dataset samples (``qa-lirpa certify``) and summarise like the
QA-IBP paper: verified robust / falsified / timeout / misclassified, time mean / median / max.

Pixels are the dataset's raw 0..255 values; pixel ``p`` is given to the model as the real input
``p * s`` with ``s`` the scale of the model's (per-tensor) QuantInput, so that its code is ``p``
(raw-pixel models have ``s = 1``). The box is ``[max(p - eps, 0), min(p + eps, 255)] * s``.
Misclassified samples (exact integer semantics, ties to the smallest index) are not verified.
"""
from __future__ import annotations

import argparse
import io
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..base.errors import UserError
from ..base.files import atomic_write_text
from ..base.samples import parse_samples
from ..base.verdict import Verdict
from ..graph import as_graph, input_quantizer
from ..nn.reference import argmax_smallest
from ..train.datasets import load_dataset
from .bab import Verifier
from .config import VerifierConfig
from .robustness import robustness_spec

#: certify's outcome words: one per verdict (robust = no violation exists), and ``misclassified``
#: for a sample that is not verified at all
WORDS = {Verdict.UNSAT: "robust", Verdict.SAT: "falsified", Verdict.TIMEOUT: "timeout",
         Verdict.UNKNOWN: "unknown"}
MISCLASSIFIED = "misclassified"
ORDER = [WORDS[Verdict.UNSAT], WORDS[Verdict.SAT], WORDS[Verdict.TIMEOUT], WORDS[Verdict.UNKNOWN], MISCLASSIFIED]


def outcome_word(verdict: Verdict | None) -> str:
    """certify's word for ``verdict`` (None: the sample was misclassified, so not verified)."""
    return MISCLASSIFIED if verdict is None else WORDS[verdict]
CSV_HEADER = "index,label,predicted,verdict,time_s,boxes"


@dataclass
class SampleResult:
    """One sample: its verdict word (robust, falsified, timeout, unknown, misclassified)."""

    index: int
    label: int
    predicted: int
    verdict: str
    time_s: float
    boxes: int

    def csv(self) -> str:
        return f"{self.index},{self.label},{self.predicted},{self.verdict},{self.time_s:.4f},{self.boxes}"


def pixel_unit(model: nn.Module) -> float:
    """The real input per pixel level: the QuantInput's scale (codes 0..255 must be representable)."""
    first = input_quantizer(as_graph(model))
    if first is None:
        raise UserError("certify needs a model whose first layer is a QuantInput (pixels on the input grid)")
    spec = first.spec
    if spec.per_channel:
        raise UserError("certify: a per-channel input quantizer cannot take raw pixels")
    z = spec.zero_point[0]
    if spec.qmin > z or z + 255 > spec.qmax:
        raise UserError(f"certify: the input quantizer {spec} cannot hold pixel codes 0..255")
    return spec.scale[0]


def certify_sample(verifier: Verifier, image: torch.Tensor, label: int, eps: float,
                   unit: float, timeout: float, index: int = 0) -> SampleResult:
    """Classify exactly, then verify robustness in the eps box (pixel units)."""
    t0 = time.monotonic()
    x = image.to(torch.float64).unsqueeze(0) * unit
    out = verifier.problem(tuple(image.shape)).exact_output(x)
    pred = int(argmax_smallest(out.dequantize().reshape(1, -1))[0])
    if pred != label:
        return SampleResult(index, label, pred, outcome_word(None), time.monotonic() - t0, 0)
    p = image.to(torch.float64).reshape(-1).numpy()
    lower, upper = np.maximum(p - eps, 0.0) * unit, np.minimum(p + eps, 255.0) * unit
    result = verifier.verify(robustness_spec(out, label, lower, upper), timeout=timeout)
    return SampleResult(index, label, pred, outcome_word(result.verdict), time.monotonic() - t0,
                        result.stats.boxes_bounded)


def certify(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, indices: Sequence[int],
            eps: float, config: VerifierConfig, timeout: float, device: str | None = None) -> Iterator[SampleResult]:
    """Yield one :class:`SampleResult` per index (images ``uint8 [N, C, H, W]``)."""
    unit = pixel_unit(model)
    verifier = Verifier(model, config, input_shape=tuple(images.shape[1:]), device=device)
    for i in indices:
        yield certify_sample(verifier, images[i], int(labels[i]), eps, unit, timeout, index=int(i))


def summary_table(results: Sequence[SampleResult], title: str = "") -> str:
    """The paper-style table: counts and percentages per outcome, then verification times."""
    n = len(results)
    out = io.StringIO()
    if title:
        out.write(title + "\n")
    out.write(f"{'outcome':<16}{'count':>7}{'%':>8}\n")
    for word in ORDER:
        k = sum(r.verdict == word for r in results)
        if k or word != WORDS[Verdict.UNKNOWN]:
            out.write(f"{('verified ' + word) if word == WORDS[Verdict.UNSAT] else word:<16}{k:>7}{100 * k / max(n, 1):>8.2f}\n")
    out.write(f"{'total':<16}{n:>7}\n")
    times = [r.time_s for r in results if r.verdict != MISCLASSIFIED]
    if times:
        out.write(f"time per verified sample (s): mean {statistics.fmean(times):.3f}, median "
                  f"{statistics.median(times):.3f}, max {max(times):.3f} (n={len(times)})\n")
    return out.getvalue()


def write_csv(path: str, results: Sequence[SampleResult]) -> None:
    """Per-sample CSV, written atomically."""
    atomic_write_text(path, "\n".join([CSV_HEADER] + [r.csv() for r in results]) + "\n")


def certify_command(args: argparse.Namespace, cfg: VerifierConfig, load_model: Callable, device: str) -> int:
    if not args.eps >= 0 or not args.timeout > 0:
        raise UserError("--eps must be >= 0 and --timeout > 0")
    try:
        ds = load_dataset(args.dataset, "test", args.data_root)
    except ValueError as e:
        raise UserError(str(e)) from None
    indices = parse_samples(args.samples, len(ds))
    model = load_model(args.model, device)
    title = (f"qa-lirpa certify: {args.dataset} test samples {args.samples}, eps {args.eps:g} pixels, "
             f"timeout {args.timeout:g} s, method {cfg.method}, device {device}")
    results: list[SampleResult] = []
    bar = _progress(len(indices), args.no_progress)
    try:
        for r in certify(model, ds.images, ds.labels, indices, args.eps, cfg, args.timeout, device):
            results.append(r)
            bar.update(1)
            bar.set_postfix({w[:4]: sum(x.verdict == w for x in results) for w in ORDER[:3]}, refresh=False)
            if len(results) % 50 == 0:
                write_csv(args.out, results)
    except (ValueError, TypeError, OverflowError) as e:
        raise UserError(f"certify: {e}") from None
    finally:
        bar.close()
        if results:
            write_csv(args.out, results)
    print(summary_table(results, title), end="")
    print(f"per-sample results: {args.out}")
    return 0


def _progress(total: int, disable: bool):
    from tqdm import tqdm

    return tqdm(total=total, disable=disable, unit="sample", dynamic_ncols=True, leave=False)


__all__ = ["SampleResult", "outcome_word", "parse_samples", "pixel_unit", "certify_sample", "certify", "summary_table",
           "write_csv", "certify_command"]
