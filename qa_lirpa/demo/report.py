"""The demo's report: the tables (stdout and ``results.md``), ``results.csv``, ``summary.json`` and
``verification.png``, every file written atomically."""
from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

import numpy as np

from ..base.files import atomic_write_bytes, atomic_write_text
from ..train.datasets import load_dataset
from .checks import onnx_outputs, read_result
from .run import DemoRun, Instance

WORDS = ("sat", "unsat", "timeout", "unknown", "error")
#: what an instance says about the model, and its colour in the plot
OUTCOMES = {"verified robust": "tab:green", "falsified": "tab:red", "misclassified": "tab:orange",
            "undecided": "tab:gray"}


def outcome(inst: Instance) -> str:
    if inst.misclassified:
        return "misclassified"
    return {"unsat": "verified robust", "sat": "falsified"}.get(inst.result, "undecided")


def word_counts(run: DemoRun) -> dict[str, int]:
    counts = {w: sum(i.result == w for i in run.instances) for w in WORDS}
    other = len(run.instances) - sum(counts.values())
    if other:
        counts["other"] = other
    return counts


def verdict_table(run: DemoRun) -> str:
    """Counts of the words in the verdict files, and time statistics, as markdown."""
    counts = word_counts(run)
    times = [i.time_s for i in run.instances] or [0.0]
    head = ["instances", *counts, "median time", "max time", "verify stage"]
    cells = [str(len(run.instances)), *(str(v) for v in counts.values()),
             f"{statistics.median(times):.2f} s", f"{max(times):.2f} s",
             f"{run.stage_seconds.get('verify', 0.0):.1f} s"]
    return _md_table(head, [cells])


def model_table(run: DemoRun) -> str:
    """Clean and IBP-certified accuracy on the test set, and the outcome of the instances."""
    n = len(run.instances)
    by = {k: sum(outcome(i) == k for i in run.instances) for k in OUTCOMES}
    cert = run.final.get("cert_acc")
    cert_n = run.final.get("n", run.n_test)
    head = ["clean accuracy", "IBP-certified", *(f"{k} (first {n})" for k in OUTCOMES)]
    cells = [f"{100 * run.clean_acc:.2f}% of {run.n_test}",
             f"{100 * cert:.2f}% of {cert_n}" if cert is not None else "-",
             *(f"{by[k]} ({100 * by[k] / max(n, 1):.0f}%)" for k in OUTCOMES)]
    return _md_table(head, [cells])


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def sat_lines(run: DemoRun) -> list[str]:
    lines = []
    for i in run.instances:
        if i.result != "sat":
            continue
        check = "counterexample confirmed by onnxruntime" if i.cex_problem is None else \
            f"COUNTEREXAMPLE REJECTED: {i.cex_problem}"
        why = "misclassified" if i.misclassified else "correctly classified"
        lines.append(f"- {i.result_file}: test image {i.sample}, label {i.label}, clean class {i.predicted} "
                     f"({why}); {check}")
    return lines


def _title(run: DemoRun) -> str:
    c = run.cfg
    return (f"{c.data.name}, {c.model.bits}-bit {c.model.arch} trained with QA-IBP ({c.loss.kind}) at eps "
            f"{run.eps:g}, {len(run.instances)} test images, timeout {run.opts.timeout:g} s")


def _body(run: DemoRun) -> list[str]:
    how = "vnncomp_configs/run_instance.sh, one process per instance" if run.opts.via_script else \
        "in this process"
    scripted = [i for i in run.instances if i.script_result is not None]
    lines = [f"Verdicts as written by run_instance ({how}) into {run.folder}/results/:", "",
             verdict_table(run), "", "What they say about the model:", "", model_table(run), ""]
    sats = sat_lines(run)
    lines += (["sat instances:", *sats] if sats else ["no sat instances"]) + [""]
    if scripted:
        same = sum(i.script_result == i.result for i in scripted)
        lines.append(f"run_instance.sh cross-check: {same} of {len(scripted)} instances gave the same word "
                     f"({', '.join(f'{Path(i.vnnlib).stem}: {i.script_result}' for i in scripted)})")
    if run.problems:
        lines += [f"{len(run.problems)} CHECK(S) FAILED:", *(f"- {p}" for p in run.problems)]
    else:
        lines.append("all checks passed")
    return lines


def console_text(run: DemoRun, total_s: float) -> str:
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in run.stage_seconds.items())
    out = run.opts.out
    return "\n".join([_title(run), "", *_body(run), "",
                      f"time: {total_s:.0f} s ({stages}; model {run.trained})",
                      f"wrote {out}/results.md, results.csv, summary.json, verification.png "
                      f"(training curves: {run.cfg.out_dir}/training_curves.png)"])


def write_report(run: DemoRun, say) -> None:
    out = run.opts.out
    c = run.cfg
    md = ["# qa-lirpa demo", "", _title(run) + ".", "", *_body(run), "",
          f"Training config: `{run.opts.config}`" + (f" with `{' '.join(run.opts.overrides)}`" if run.opts.overrides
                                                     else "") + f" ({run.trained}).", "",
          "| stage | seconds |", "|---|---|", *(f"| {k} | {v:.1f} |" for k, v in run.stage_seconds.items()), "",
          "![verification](verification.png)", "", f"![training]({Path(c.out_dir).name}/training_curves.png)", ""]
    atomic_write_text(out / "results.md", "\n".join(md))
    atomic_write_text(out / "results.csv", results_csv(run))
    atomic_write_text(out / "summary.json", json.dumps(summary(run), indent=2, sort_keys=True) + "\n")
    plot(run, out / "verification.png")
    say(f"      {out}/results.md, results.csv, summary.json, verification.png")


def results_csv(run: DemoRun) -> str:
    cols = ["instance", "sample", "label", "clean_class", "misclassified", "result", "time_s", "outcome",
            "counterexample", "script_result", "vnnlib", "result_file"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for i in run.instances:
        cex = "" if i.result != "sat" else ("confirmed" if i.cex_problem is None else i.cex_problem)
        w.writerow([i.index, i.sample, i.label, i.predicted, int(i.misclassified), i.result, f"{i.time_s:.3f}",
                    outcome(i), cex, i.script_result or "", i.vnnlib, i.result_file])
    return buf.getvalue()


def summary(run: DemoRun) -> dict:
    return {"eps": run.eps, "instances": len(run.instances), "timeout_s": run.opts.timeout,
            "verdicts": word_counts(run),
            "outcomes": {k: sum(outcome(i) == k for i in run.instances) for k in OUTCOMES},
            "clean_acc": run.clean_acc, "test_images": run.n_test, "onnx_exact": run.onnx_exact,
            "ibp_cert_acc": run.final.get("cert_acc"), "model": run.trained,
            "stage_seconds": run.stage_seconds, "problems": run.problems,
            "folder": str(run.folder), "onnx": str(run.onnx_path)}


# ----- the plot ----------------------------------------------------------------------------
def plot(run: DemoRun, path: Path) -> None:
    """Per-instance times sorted (coloured by outcome), outcome counts, and a counterexample image
    beside its test image (PNG, Agg canvas; the global matplotlib backend is not touched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4.2))
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1, 5, width_ratios=[3.2, 2.4, 1.5, 1.5, 1.5])
    _plot_times(run, fig.add_subplot(grid[0]))
    _plot_counts(run, fig.add_subplot(grid[1]))
    _plot_counterexample(run, [fig.add_subplot(grid[k]) for k in (2, 3, 4)])
    fig.suptitle(_title(run), fontsize=10)
    fig.tight_layout()
    atomic_write_bytes(path, writer=lambda f: fig.savefig(f, format="png", dpi=90))


def _plot_times(run: DemoRun, ax) -> None:
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ranked = sorted(run.instances, key=lambda i: i.time_s)
    for name, colour in OUTCOMES.items():
        pts = [(k + 1, i.time_s) for k, i in enumerate(ranked) if outcome(i) == name]
        if pts:
            ax.scatter(*zip(*pts), s=14, color=colour, label=f"{name} ({len(pts)})")
    ax.axhline(run.opts.timeout, color="black", linestyle="--", linewidth=0.8, label="timeout")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("instances, sorted by time")
    ax.set_ylabel("verification time (s)")
    ax.set_title("time per instance", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")


def _plot_counts(run: DemoRun, ax) -> None:
    names = list(OUTCOMES)
    counts = [sum(outcome(i) == k for i in run.instances) for k in names]
    bars = ax.barh(names[::-1], counts[::-1], color=[OUTCOMES[k] for k in names[::-1]])
    for bar, n in zip(bars, counts[::-1]):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {n}", va="center", fontsize=9)
    ax.set_xlim(0, max(len(run.instances), 1) * 1.15)
    ax.set_xlabel("instances")
    ax.set_title("outcome", fontsize=10)
    ax.tick_params(axis="y", labelsize=8)


def _plot_counterexample(run: DemoRun, axes) -> None:
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    sats = [i for i in run.instances if i.result == "sat" and i.cex_problem is None]
    sats.sort(key=lambda i: i.misclassified)        # a correctly classified image first
    if not sats or len(run.input_shape) != 3 or run.input_shape[0] not in (1, 3):
        axes[1].set_title("no counterexample", fontsize=9)
        return
    inst = sats[0]
    x0 = load_dataset(run.cfg.data.name, "test", run.cfg.data.root).images[inst.sample].numpy().astype(float)
    x = read_result(run.folder / inst.result_file)[1].reshape(run.input_shape)
    cls = int(onnx_outputs(run.folder / inst.onnx, x, run.input_shape)[0].argmax())
    show = [(x0, f"test image {inst.sample}\nlabel {inst.label}, class {inst.predicted}"),
            (x, f"counterexample\nclass {cls}"),
            (x - x0, f"difference (pixels)\nin [-{run.eps:g}, {run.eps:g}]")]
    for k, (ax, (img, title)) in enumerate(zip(axes, show)):
        img = np.transpose(img, (1, 2, 0)) if img.shape[0] == 3 else img[0]
        if k < 2:
            ax.imshow(np.clip(img, 0, 255) / 255.0, cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(img if img.ndim == 2 else img.mean(-1), cmap="bwr", vmin=-run.eps, vmax=run.eps)
        ax.set_title(title, fontsize=9)


__all__ = ["WORDS", "OUTCOMES", "outcome", "word_counts", "verdict_table", "model_table", "console_text",
           "write_report", "results_csv", "summary", "plot"]
