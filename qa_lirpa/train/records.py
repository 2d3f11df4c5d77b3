"""Run records written beside the checkpoint, each atomically: ``metrics.csv``, ``final.json`` and
``training_curves.png``."""
from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Any, Sequence

from ..base.files import atomic_write_bytes, atomic_write_text


METRIC_COLUMNS = (
    "epoch", "step", "lr", "eps", "kappa", "lambda_rob", "lambda_reg", "beta",
    "loss", "ce", "robust", "width", "train_clean_acc", "train_cert_acc",
    "test_n", "test_clean_acc", "test_cert_acc", "test_pgd_acc", "epoch_seconds", "eval_seconds",
)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def write_metrics_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> None:
    """All rows, one per epoch, in :data:`METRIC_COLUMNS` order (missing values empty)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(METRIC_COLUMNS)
    for r in rows:
        w.writerow([_fmt(r.get(c)) for c in METRIC_COLUMNS])
    atomic_write_text(path, buf.getvalue())


def read_metrics_csv(path: str | os.PathLike) -> list[dict[str, float | None]]:
    """The rows of a ``metrics.csv`` as floats (None for empty cells)."""
    with open(path, newline="") as f:
        return [{k: (float(v) if v != "" else None) for k, v in row.items()} for row in csv.DictReader(f)]


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _series(rows: Sequence[dict[str, Any]], key: str, positive: bool = False
            ) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if v is not None and not (isinstance(v, float) and math.isnan(v)) and (v > 0 or not positive):
            xs.append(r["epoch"] + 1)
            ys.append(float(v))
    return xs, ys


def plot_training_curves(path: str | os.PathLike, rows: Sequence[dict[str, Any]], title: str = "") -> None:
    """Two panels: the loss terms, and test accuracies with the training eps (PNG, Agg canvas; the
    global matplotlib backend is not touched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    for key in ("loss", "ce", "robust"):
        ax1.plot(*_series(rows, key, positive=True), marker=".", label=key)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss")
    ax1.set_yscale("log")
    ax1.legend()
    for key, label in (("test_clean_acc", "clean"), ("test_pgd_acc", "PGD"), ("test_cert_acc", "IBP-certified"),
                       ("train_cert_acc", "train certified (train eps)")):
        xs, ys = _series(rows, key)
        if xs:
            ax2.plot(xs, [100 * y for y in ys], marker=".", label=label)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy (%)")
    ax2.set_ylim(0, 100)
    ax2.legend(loc="lower left")
    ax3 = ax2.twinx()
    ax3.plot(*_series(rows, "eps"), color="grey", linestyle="--", label="train eps")
    ax3.set_ylabel("train eps (pixels)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_write_bytes(path, writer=lambda f: fig.savefig(f, format="png", dpi=90))


__all__ = ["METRIC_COLUMNS", "atomic_write_bytes", "atomic_write_text", "write_metrics_csv", "read_metrics_csv",
           "write_json", "plot_training_curves"]
