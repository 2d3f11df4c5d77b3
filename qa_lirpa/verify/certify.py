"""Certify local robustness of dataset samples (``qa-lirpa certify``) and summarise like the
QA-IBP paper: verified robust / falsified / timeout / misclassified, time mean / median / max.

Pixels are the dataset's raw 0..255 values; pixel ``p`` is given to the model as the real input
``p * s`` with ``s`` the scale of the model's (per-tensor) QuantInput, so that its code is ``p``
(raw-pixel models have ``s = 1``). The box is ``[max(p - eps, 0), min(p + eps, 255)] * s``.
Misclassified samples (exact integer semantics, ties to the smallest index) are not verified.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .. import campaign
from ..base.errors import UserError
from ..base.files import atomic_write_bytes, atomic_write_text
from ..base.samples import parse_samples
from ..base.vnnlib import InputSpec
from ..base.verdict import Verdict
from ..graph import as_graph, input_quantizer
from ..modelfile import load_model_file
from ..nn.reference import argmax_smallest
from ..train.datasets import load_dataset
from .bab import Verifier
from .config import VerifierConfig
from .robustness import robustness_spec

#: certify's outcome words: one per verdict (robust = no violation exists), ``misclassified`` for a
#: sample that is not verified at all, and ``error`` for a sample whose verification raised or whose
#: worker died twice (the ``note`` column says why)
WORDS = {Verdict.UNSAT: "robust", Verdict.SAT: "falsified", Verdict.TIMEOUT: "timeout",
         Verdict.UNKNOWN: "unknown"}
MISCLASSIFIED = "misclassified"
ERROR = campaign.ERROR
ORDER = [WORDS[Verdict.UNSAT], WORDS[Verdict.SAT], WORDS[Verdict.TIMEOUT], WORDS[Verdict.UNKNOWN], MISCLASSIFIED,
         ERROR]


def outcome_word(verdict: Verdict | None) -> str:
    """certify's word for ``verdict`` (None: the sample was misclassified, so not verified)."""
    return MISCLASSIFIED if verdict is None else WORDS[verdict]


CSV_HEADER = "index,label,predicted,verdict,time_s,boxes,note"


@dataclass
class SampleResult:
    """One sample: its verdict word (robust, falsified, timeout, unknown, misclassified, error) and,
    for ``error``, the reason in ``note``."""

    index: int
    label: int
    predicted: int
    verdict: str
    time_s: float
    boxes: int
    note: str = ""

    def csv(self) -> str:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(
            [self.index, self.label, self.predicted, self.verdict, f"{self.time_s:.4f}", self.boxes, self.note])
        return buf.getvalue()

    @classmethod
    def from_csv(cls, line: str) -> "SampleResult":
        f = next(csv.reader([line]))
        return cls(int(f[0]), int(f[1]), int(f[2]), f[3], float(f[4]), int(f[5]), f[6] if len(f) > 6 else "")


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


def sample_property(verifier: Verifier, image: torch.Tensor, label: int, eps: float,
                    unit: float) -> tuple[int, InputSpec | None]:
    """The exact predicted class of ``image`` (pixel values 0-255) and, where it is ``label``,
    the robustness property of the ``eps`` box (pixel units, clipped to 0-255, times ``unit``);
    None for a misclassified image."""
    x = image.to(torch.float64).unsqueeze(0) * unit
    out = verifier.problem(tuple(image.shape)).exact_output(x)
    pred = int(argmax_smallest(out.dequantize().reshape(1, -1))[0])
    if pred != label:
        return pred, None
    p = image.to(torch.float64).reshape(-1).numpy()
    lower, upper = np.maximum(p - eps, 0.0) * unit, np.minimum(p + eps, 255.0) * unit
    return pred, robustness_spec(out, label, lower, upper)


def certify_sample(verifier: Verifier, image: torch.Tensor, label: int, eps: float,
                   unit: float, timeout: float, index: int = 0) -> SampleResult:
    """Classify exactly, then verify robustness in the eps box (pixel units)."""
    t0 = time.monotonic()
    pred, spec = sample_property(verifier, image, label, eps, unit)
    if spec is None:
        return SampleResult(index, label, pred, outcome_word(None), time.monotonic() - t0, 0)
    result = verifier.verify(spec, timeout=timeout)
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
        if k or word not in (WORDS[Verdict.UNKNOWN], ERROR):
            out.write(f"{('verified ' + word) if word == WORDS[Verdict.UNSAT] else word:<16}{k:>7}{100 * k / max(n, 1):>8.2f}\n")
    out.write(f"{'total':<16}{n:>7}\n")
    times = [r.time_s for r in results if r.verdict not in (MISCLASSIFIED, ERROR)]
    if times:
        out.write(f"time per verified sample (s): mean {statistics.fmean(times):.3f}, median "
                  f"{statistics.median(times):.3f}, max {max(times):.3f} (n={len(times)})\n")
    return out.getvalue()


def write_csv(path: str, results: Sequence[SampleResult]) -> None:
    """Per-sample CSV, written atomically."""
    atomic_write_text(path, "\n".join([CSV_HEADER] + [r.csv() for r in results]) + "\n")


@dataclass(frozen=True)
class CertifyJob:
    """What every sample of a certify campaign shares; it travels to each Ray worker once.

    ``model_path`` and ``model_sha`` (sha256 of the file) name the model; a worker that has the same
    file at that path loads it from there, else from ``model_bytes`` (sent by the driver when the
    campaign runs on Ray) written to a cache file named by the hash. ``threads``: torch CPU threads a
    worker pins (0: leave torch's choice, the serial run's ``--threads``)."""

    model_path: str
    model_sha: str
    config: VerifierConfig
    eps: float
    timeout: float
    device: str
    input_shape: tuple[int, ...]
    threads: int = 0
    model_bytes: bytes | None = None

    @property
    def key(self) -> str:
        text = f"{self.model_sha}|{self.config!r}|{self.device}|{self.input_shape}"
        return hashlib.sha256(text.encode()).hexdigest()[:20]


#: the verifier a process built for a job (key -> (verifier, pixel unit)); one model at a time
_VERIFIERS: dict[str, tuple[Verifier, float]] = {}


def _model_file(job: CertifyJob) -> str:
    """A local file with the job's model: its own path when the bytes there match, else a cache
    file written from ``job.model_bytes``."""
    path = Path(job.model_path)
    if path.is_file() and _sha256(path.read_bytes()) == job.model_sha:
        return str(path)
    if job.model_bytes is None:
        raise UserError(f"{job.model_path}: not on this machine (or changed) and its bytes were not sent")
    name = path.name.lower()
    suffix = ".onnx.gz" if name.endswith(".onnx.gz") else path.suffix
    cache = Path(tempfile.gettempdir()) / "qa-lirpa-models" / f"{job.model_sha[:24]}{suffix}"
    if not cache.is_file():
        atomic_write_bytes(cache, job.model_bytes)
    return str(cache)


def _verifier(job: CertifyJob) -> tuple[Verifier, float]:
    got = _VERIFIERS.get(job.key)
    if got is None:
        if job.threads:
            torch.set_num_threads(job.threads)
        model = load_model_file(_model_file(job), job.device)
        got = (Verifier(model, job.config, input_shape=job.input_shape, device=job.device), pixel_unit(model))
        _VERIFIERS.clear()
        _VERIFIERS[job.key] = got
    return got


def certify_task(job: CertifyJob, payload: tuple[int, np.ndarray, int]) -> campaign.Outcome:
    """One campaign task: sample ``(index, image uint8 [C, H, W], label)``; the verifier is built
    once per process."""
    index, image, label = payload
    verifier, unit = _verifier(job)
    r = certify_sample(verifier, torch.as_tensor(image), label, job.eps, unit, job.timeout, index=index)
    return campaign.Outcome(r.verdict, r.csv())


def certify_error(payload: tuple[int, np.ndarray, int], reason: str) -> campaign.Outcome:
    """The ``error`` row of a sample whose task raised or whose worker died twice."""
    index, _, label = payload
    return campaign.Outcome(ERROR, SampleResult(index, label, -1, ERROR, 0.0, 0, reason).csv(), reason)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def gpu_share(device: str, scale: campaign.Scale) -> float:
    """The GPU fraction one task asks Ray for: 0 on CPU; else the local GPUs shared by the workers
    (at most one each), or 1/--workers of one GPU on a cluster (a whole GPU by default)."""
    if not scale.parallel or not str(device).startswith("cuda"):
        return 0.0
    if scale.cluster:
        return 1.0 / max(scale.workers, 1)
    return min(1.0, torch.cuda.device_count() / max(scale.workers, 1))


def certify_command(args: argparse.Namespace, cfg: VerifierConfig, load_model: Callable, device: str) -> int:
    if not args.eps >= 0 or not args.timeout > 0:
        raise UserError("--eps must be >= 0 and --timeout > 0")
    try:
        ds = load_dataset(args.dataset, "test", args.data_root)
    except ValueError as e:
        raise UserError(str(e)) from None
    indices = parse_samples(args.samples, len(ds))
    scale = campaign.scale_from_args(args)
    model = load_model(args.model, device)       # errors in the model file show here, once
    data = Path(args.model).read_bytes()
    threads = args.threads or (1 if scale.parallel else 0)      # a Ray task pins 1 thread by default
    job = CertifyJob(str(Path(args.model).resolve()), _sha256(data), cfg, float(args.eps), float(args.timeout),
                     str(device), tuple(ds.images.shape[1:]), threads=threads,
                     model_bytes=data if scale.parallel else None)
    scale = dataclasses.replace(scale, cpus_per_task=max(threads, 1), gpus_per_task=gpu_share(str(device), scale))
    try:
        unit = pixel_unit(model)
        verifier = Verifier(model, cfg, input_shape=job.input_shape, device=device)
    except (ValueError, TypeError, OverflowError) as e:
        raise UserError(f"certify: {e}") from None
    _VERIFIERS.clear()
    _VERIFIERS[job.key] = (verifier, unit)       # the serial run uses the model loaded here
    title = (f"qa-lirpa certify: {args.dataset} test samples {args.samples}, eps {args.eps:g} pixels, "
             f"timeout {args.timeout:g} s, method {cfg.method}, device {device}"
             + (f", {scale.describe()}" if scale.parallel else ""))
    tasks = [campaign.Task(str(int(i)), (int(i), ds.images[i].numpy(), int(ds.labels[i]))) for i in indices]
    meta = {"command": "certify", "model_sha": job.model_sha, "dataset": args.dataset,
            "samples": [indices.start, indices.stop, indices.step], "eps": job.eps, "timeout": job.timeout,
            "device": job.device, "config": repr(cfg)}
    report = campaign.run_campaign(certify_task, job, tasks, csv_path=args.out, header=CSV_HEADER,
                                   on_error=certify_error, meta=meta, scale=scale, restart=args.restart,
                                   progress=not args.no_progress, desc="samples", order=ORDER[:5],
                                   hard_limit_s=3 * job.timeout + 300)
    results = [SampleResult.from_csv(o.row) for o in report.done]
    print(summary_table(results, title), end="")
    extra = [f"{report.resumed} from the earlier run's journal"] if report.resumed else []
    extra += [f"{report.retried} retried after a worker died"] if report.retried else []
    print(f"per-sample results: {args.out}" + (f" ({'; '.join(extra)})" if extra else ""))
    return 0


__all__ = ["SampleResult", "CertifyJob", "outcome_word", "parse_samples", "pixel_unit", "sample_property", "certify_sample", "certify",
           "certify_task", "certify_error", "summary_table", "write_csv", "certify_command",
           "gpu_share"]
