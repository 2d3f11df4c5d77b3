"""``qa-lirpa benchmark make|run``: VNN-COMP-style benchmark folders.

A folder holds ``onnx/``, ``vnnlib/`` and ``instances.csv`` (``onnx_path,vnnlib_path,timeout_s``,
paths relative to the folder). ``make`` writes one from a model and dataset samples at given
epsilons (the standard VNN-LIB robustness property: some other class scores at least as high as the
label, i.e. ties count as violations); ``run`` decides every instance with the same code path as
``run_instance.sh`` and writes ``results.csv`` and a summary table, serially or on Ray (``--workers N``,
``--cluster ADDRESS``: :mod:`qa_lirpa.campaign`).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from . import campaign
from .base.errors import UserError
from .base.files import atomic_write_bytes, atomic_write_text
from .base.samples import parse_samples
from .base.vnnlib import robustness_property, write_vnnlib
from .modelfile import is_onnx, load_model_file
from .nn import integer_forward
from .onnx import export_onnx
from .train.datasets import load_dataset
from .vnncomp import run_instance


def parse_slice(text: str) -> range:
    """``"0:100"`` -> range(0, 100); ``"7"`` -> range(7, 8) (:func:`qa_lirpa.base.samples.parse_samples`)."""
    return parse_samples(text, bare="index")


def _load_model(path: Path):
    """The model and, for ONNX files, the path (the folder ships the file itself)."""
    return load_model_file(path), (path if is_onnx(path) else None)


def make_folder(model_path: str, dataset: str, samples: range, eps_list: list[float], out: str,
                timeout: float, data_root: str | None = None, name: str = "model") -> Path:
    """Write ``out/{onnx,vnnlib}/`` and ``out/instances.csv``; returns the folder."""
    out_dir = Path(out)
    (out_dir / "onnx").mkdir(parents=True, exist_ok=True)
    (out_dir / "vnnlib").mkdir(parents=True, exist_ok=True)
    model, onnx_src = _load_model(Path(model_path))
    ds = load_dataset(dataset, "test", data_root)
    onnx_rel = f"onnx/{name}.onnx"
    if onnx_src is not None:
        atomic_write_bytes(out_dir / onnx_rel, onnx_src.read_bytes())
    else:
        export_onnx(model, out_dir / onnx_rel, tuple(ds.images.shape[1:]))
    n_out = int(integer_forward(model, ds.images[:1].double()).shape[-1])
    rows = []
    for eps in eps_list:
        for i in samples:
            x = ds.images[i].double()
            label = int(ds.labels[i])
            flat = x.reshape(-1).numpy()
            lo, hi = np.maximum(flat - eps, 0.0), np.minimum(flat + eps, 255.0)
            lo, hi, disj = robustness_property(lo, hi, label, n_out)
            rel = f"vnnlib/{dataset}_{i}_eps{eps:g}.vnnlib"
            write_vnnlib(out_dir / rel, lo, hi, disj,
                         comment=f"{dataset} test sample {i}, label {label}, eps {eps:g} pixels")
            rows.append((onnx_rel, rel, f"{timeout:g}"))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    atomic_write_text(out_dir / "instances.csv", buf.getvalue())
    return out_dir


def read_instances(folder: Path) -> list[tuple[str, str, float]]:
    path = folder / "instances.csv"
    if not path.exists():
        raise FileNotFoundError(f"no instances.csv in {folder}")
    rows = []
    with open(path, newline="") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 3:
                raise UserError(f"{path}:{lineno}: expected onnx_path,vnnlib_path,timeout_s")
            rows.append((row[0].strip(), row[1].strip(), float(row[2])))
    return rows


RESULT_FIELDS = ["instance", "onnx", "vnnlib", "result", "time_s", "timeout_s"]


def _row(k: int, onnx_rel: str, vnn_rel: str, word: str, time_s: float, timeout: float) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([k, onnx_rel, vnn_rel, word, round(time_s, 3), timeout])
    return buf.getvalue()


def instance_task(shared: tuple[str, str], payload: tuple[int, str, str, float]) -> campaign.Outcome:
    """One campaign task: decide instance ``payload = (k, onnx, vnnlib, timeout)`` of the folder
    ``shared = (folder, category)`` like run_instance.sh; the result file's text is the detail."""
    root, category = shared
    k, onnx_rel, vnn_rel, timeout = payload
    with tempfile.TemporaryDirectory(prefix="qa-lirpa-run-") as tmp:
        out = Path(tmp) / "result.txt"
        t0 = time.monotonic()
        word = run_instance(category, str(Path(root) / onnx_rel), str(Path(root) / vnn_rel), str(out), timeout,
                            started=t0)
        elapsed = time.monotonic() - t0
        text = out.read_text() if out.exists() else word + "\n"
    return campaign.Outcome(word, _row(k, onnx_rel, vnn_rel, word, elapsed, timeout), text)


def instance_error(payload: tuple[int, str, str, float], reason: str) -> campaign.Outcome:
    k, onnx_rel, vnn_rel, timeout = payload
    return campaign.Outcome(campaign.ERROR, _row(k, onnx_rel, vnn_rel, campaign.ERROR, 0.0, timeout), reason)


def run_folder(folder: str, category: str = "default", results_name: str = "results.csv",
               scale: campaign.Scale = campaign.Scale(), restart: bool = False, progress: bool = True) -> list[dict]:
    """Decide every instance like run_instance.sh, serially or on Ray (``scale``); write
    ``results/<vnnlib stem>.txt`` per instance and ``results.csv`` (instance order) as results
    arrive; an interrupted run resumes (:func:`qa_lirpa.campaign.run_campaign`). Returns the rows.
    On a cluster, every node must see the folder at the same path (a shared file system)."""
    root = Path(folder).resolve()
    instances = read_instances(root)
    res_dir = root / "results"
    res_dir.mkdir(exist_ok=True)
    tasks = [campaign.Task(f"{k}:{o}:{v}", (k, o, v, t)) for k, (o, v, t) in enumerate(instances)]

    def write_result(task: campaign.Task, outcome: campaign.Outcome) -> None:
        text = outcome.detail if outcome.word != campaign.ERROR else "unknown\n"
        atomic_write_text(res_dir / f"{Path(task.payload[2]).stem}.txt", text)

    meta = {"command": "benchmark run", "folder": str(root), "category": category,
            "instances": hashlib.sha256((root / "instances.csv").read_bytes()).hexdigest()}
    report = campaign.run_campaign(instance_task, (str(root), category), tasks, csv_path=root / results_name,
                                   header=",".join(RESULT_FIELDS), on_error=instance_error, meta=meta, scale=scale,
                                   on_outcome=write_result, restart=restart, progress=progress,
                                   order=["sat", "unsat", "timeout", "unknown"],
                                   hard_limit_s=3 * max((t for _, _, t in instances), default=0) + 300)
    rows = []
    for o in report.done:
        r = dict(zip(RESULT_FIELDS, next(csv.reader([o.row]))))
        r.update(instance=int(r["instance"]), time_s=float(r["time_s"]), timeout_s=float(r["timeout_s"]))
        rows.append(r)
    return rows


def summary_table(rows: list[dict]) -> str:
    """Counts per result word and time statistics, as markdown."""
    words = ["sat", "unsat", "timeout", "unknown", "error"]
    counts = {w: sum(r["result"] == w for r in rows) for w in words}
    times = [r["time_s"] for r in rows] or [0.0]
    head = "| instances | " + " | ".join(words) + " | time mean | median | max |"
    sep = "|---" * (len(words) + 4) + "|"
    body = (f"| {len(rows)} | " + " | ".join(str(counts[w]) for w in words)
            + f" | {statistics.mean(times):.2f} s | {statistics.median(times):.2f} s | {max(times):.2f} s |")
    return "\n".join([head, sep, body])


def _cmd_make(a) -> int:
    eps = [float(e) for e in a.eps]
    folder = make_folder(a.model, a.dataset, parse_slice(a.samples), eps, a.out, a.timeout, a.data_root)
    print(f"wrote {folder}/instances.csv")
    return 0


def _cmd_run(a) -> int:
    rows = run_folder(a.folder, a.category, scale=campaign.scale_from_args(a), restart=a.restart,
                      progress=not a.no_progress)
    print(summary_table(rows))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="make or run a VNN-COMP-style benchmark folder")
    s = p.add_subparsers(dest="benchmark_command", metavar="ACTION", required=True)
    m = s.add_parser("make", help="write onnx/, vnnlib/ and instances.csv")
    m.add_argument("--model", required=True, help="checkpoint (.pt) or ONNX file")
    m.add_argument("--dataset", default="mnist")
    m.add_argument("--data-root", default=None)
    m.add_argument("--samples", default="0:100", help="test samples, START:END")
    m.add_argument("--eps", nargs="+", default=["2"], help="epsilons in pixel units")
    m.add_argument("--timeout", type=float, default=60.0, help="per-instance timeout (s)")
    m.add_argument("--out", required=True, help="the folder to write")
    m.set_defaults(func=_cmd_make)
    r = s.add_parser("run", help="decide every instance as run_instance.sh does")
    r.add_argument("folder")
    r.add_argument("--category", default="default", help="picks vnncomp_configs/<category>.yaml")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    campaign.add_campaign_arguments(r)
    r.set_defaults(func=_cmd_run)
