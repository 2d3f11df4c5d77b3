"""Differential soundness of the VNN-COMP entry point on random quantized ONNX models.

onnxruntime is the referee: each instance (a model and a VNN-LIB property from
``tests/onnx/diffgen.py``) has a truth computed by enumerating every float32 input code the box
reaches in onnxruntime. Every instance goes through ``qa_lirpa.vnncomp.run_instance``; a ``sat``
answer's counterexample is checked again here (inside the box, onnxruntime's outputs on its
float32 cast violate the property exactly).

    python benchmarks/onnx_soundness.py --n 1000 --seed 0 --timeout 10 --jobs 2

Outcomes: right (the truth), wrong (``unsat`` on a violated property, or ``sat`` whose
counterexample fails), undecided (``unknown``/``timeout``), error. The markdown table goes to
``benchmarks/results/onnx_soundness.md``; every wrong or error instance is kept (model, property,
result file, details) under ``benchmarks/results/onnx_soundness_cases/`` for reproduction.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "onnx"))
sys.path.insert(0, str(ROOT))

import diffgen  # noqa: E402
from qa_lirpa.campaign import Scale, map_records  # noqa: E402

OUTCOMES = ("right", "wrong", "undecided", "error")


def instance_spec(seed: int, i: int, styles) -> tuple[int, str]:
    """Instance ``i`` of a run: its generator seed and style (styles in turn, for balance)."""
    return seed * 1_000_003 + i, styles[i % len(styles)]


def run_one(args: tuple) -> dict:
    """Generate, write, verify and judge one instance; never raises."""
    inst_seed, style, timeout, keep_dir = args
    rec = dict(seed=inst_seed, style=style, kind="?", truth="?", word="", outcome="error", detail="", time=0.0)
    try:
        inst = diffgen.make_instance(inst_seed, style=style)
    except Exception as e:  # noqa: BLE001
        rec.update(outcome="gen_error", detail=f"generator: {type(e).__name__}: {e}")
        return rec
    rec.update(kind=inst.kind, truth=inst.expected, note=inst.note, model=inst.case.describe(),
               n_points=inst.n_points,
               witness=None if inst.witness is None else [float(v) for v in inst.witness])
    rec.update(judge(inst, timeout, keep_dir, f"{style}_{inst_seed}_{inst.kind}"))
    return rec


def error_record(args: tuple, reason: str) -> dict:
    """The record of an instance whose worker died twice (outcome ``error``)."""
    inst_seed, style, _, _ = args
    return dict(seed=inst_seed, style=style, kind="?", truth="?", word="", outcome="error",
                detail=f"worker lost: {reason}", time=0.0)


def judge(inst, timeout: float, keep_dir, tag: str, category: str = "diff", extra_files=()) -> dict:
    """Write ``inst``, run ``run_instance`` on it and judge the answer against the enumerated
    truth: ``word``, ``outcome`` (right/wrong/undecided/error), ``detail``, ``time`` and, for a
    wrong or error outcome with ``keep_dir``, ``kept`` (the folder holding model, property, result,
    stderr and info.json; ``extra_files`` are copied there too)."""
    from qa_lirpa.vnncomp import run_instance

    rec = dict(word="", outcome="error", detail="", time=0.0)
    with tempfile.TemporaryDirectory(prefix="onnxsound-") as tmp:
        onnx_path, vnn_path, res_path = (os.path.join(tmp, n) for n in ("model.onnx", "prop.vnnlib", "result.txt"))
        inst.write(onnx_path, vnn_path)
        err = io.StringIO()
        t0 = time.monotonic()
        with contextlib.redirect_stderr(err):
            try:
                word = run_instance(category, onnx_path, vnn_path, res_path, timeout)
            except BaseException as e:  # noqa: BLE001 - run_instance should never raise
                word = "error"
                print(f"run_instance raised {type(e).__name__}: {e}", file=sys.stderr)
        rec["time"] = round(time.monotonic() - t0, 3)
        rec["word"] = word
        result = Path(res_path).read_text() if os.path.exists(res_path) else ""
        stderr = err.getvalue().strip()
        if word == "sat":
            try:
                x = diffgen.read_counterexample(result, inst.case.n_in)
                ok, why = diffgen.check_counterexample(inst, x)
            except Exception as e:  # noqa: BLE001
                ok, why = False, f"unreadable counterexample: {e}"
            rec["outcome"] = "right" if ok and inst.truth else "wrong"
            rec["cex_confirmed"] = bool(ok)
            if not ok:
                rec["detail"] = f"sat with a bad counterexample: {why}"
            elif not inst.truth:  # cannot happen if enumeration is right
                rec["detail"] = "sat with a valid counterexample on a property the enumeration says holds (generator bug)"
        elif word == "unsat":
            rec["outcome"] = "wrong" if inst.truth else "right"
            if inst.truth:
                rec["detail"] = "unsat but onnxruntime violates the property on the grid"
        elif word in ("unknown", "timeout"):
            rec["outcome"] = "undecided"
        else:
            rec["outcome"] = "error"
            lines = [ln for ln in stderr.splitlines() if ln.strip()]
            rec["detail"] = lines[-1][:300] if lines else "error without a message"
        if rec["outcome"] in ("wrong", "error") and keep_dir:
            dest = Path(keep_dir) / tag
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(onnx_path, dest / "model.onnx")
            shutil.copy(vnn_path, dest / "prop.vnnlib")
            for f in extra_files:
                shutil.copy(f, dest / Path(f).name)
            (dest / "result.txt").write_text(result)
            (dest / "stderr.txt").write_text(stderr)
            (dest / "info.json").write_text(json.dumps(dict(rec, note=inst.note, truth=inst.expected, kind=inst.kind,
                                                            lo=inst.lo.tolist(), hi=inst.hi.tolist()),
                                                       indent=1, default=str))
            rec["kept"] = str(dest.relative_to(ROOT)) if dest.resolve().is_relative_to(ROOT) else str(dest)
    return rec


def table(records: list[dict], key: str) -> str:
    rows = defaultdict(Counter)
    for r in records:
        rows[r[key]][r["outcome"]] += 1
    total = Counter()
    lines = [f"| {key} | n | right | wrong | unknown+timeout | error | gen_error |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name in sorted(rows):
        c = rows[name]
        total.update(c)
        lines.append(f"| {name} | {sum(c.values())} | {c['right']} | {c['wrong']} | {c['undecided']} | {c['error']} "
                     f"| {c['gen_error']} |")
    lines.append(f"| **total** | {sum(total.values())} | {total['right']} | {total['wrong']} | {total['undecided']} "
                 f"| {total['error']} | {total['gen_error']} |")
    return "\n".join(lines)


def report(records: list[dict], command: str, elapsed: float) -> str:
    truth = Counter(r["truth"] for r in records)
    words = Counter(r["word"] for r in records)
    out = ["# Differential soundness on random quantized ONNX models (onnxruntime is the referee)", "",
           f"Command: `{command}`", "",
           f"{len(records)} instances in {elapsed:.0f} s; truth: {dict(truth)}; answers: {dict(words)}.", "",
           "Wrong = `unsat` where onnxruntime violates the property on some float32 input of the box, or `sat` "
           "whose counterexample does not reproduce exactly in onnxruntime.", "",
           "## By style", "", table(records, "style"), "", "## By property kind", "", table(records, "kind"), ""]
    bad = [r for r in records if r["outcome"] in ("wrong", "error", "gen_error")]
    out += ["## Wrong and error instances", ""]
    if not bad:
        out.append("None.")
    else:
        out += ["| outcome | style | seed | kind | truth | answer | detail | model | property | kept in |",
                "|---|---|---:|---|---|---|---|---|---|---|"]
        for r in sorted(bad, key=lambda r: (r["outcome"], r["style"], r["seed"])):
            out.append(f"| {r['outcome']} | {r['style']} | {r['seed']} | {r['kind']} | {r['truth']} | {r['word']} | "
                       f"{r['detail'].replace('|', '/')} | {r.get('model', '')} | {r.get('note', '')[:120]} | "
                       f"{r.get('kept', '')} |")
    out += ["", "Reproduce one instance: `python benchmarks/onnx_soundness.py --one SEED --style STYLE`."]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--jobs", "--workers", type=int, default=1, help="local Ray worker processes (1: serial)")
    ap.add_argument("--cluster", default=None, help="run the instances on this Ray cluster (HOST:PORT)")
    ap.add_argument("--styles", default=",".join(diffgen.STYLES), help="comma-separated subset of styles")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "onnx_soundness.md"))
    ap.add_argument("--keep", default=str(ROOT / "benchmarks" / "results" / "onnx_soundness_cases"),
                    help="folder for the files of wrong/error instances ('' to keep none)")
    ap.add_argument("--one", type=int, default=None, help="run the single instance with this generator seed")
    ap.add_argument("--style", default=None, help="with --one: its style")
    a = ap.parse_args(argv)
    styles = [s for s in a.styles.split(",") if s]
    if "torch_qat" in styles and not diffgen.torch_qat_available():
        print("torch QAT export not available: style torch_qat skipped", file=sys.stderr)
        styles.remove("torch_qat")
    if a.one is not None:
        rec = run_one((a.one, a.style or styles[0], a.timeout, a.keep))
        print(json.dumps(rec, indent=1, default=str))
        return 0
    jobs = [(*instance_spec(a.seed, i, styles), a.timeout, a.keep) for i in range(a.n)]
    t0 = time.monotonic()
    scale = Scale(workers=a.jobs if a.jobs > 1 else 0, cluster=a.cluster)
    if scale.parallel:
        worker_path()
    records = map_records(run_one, jobs, scale, on_error=lambda job, why: error_record(job, why))
    records.sort(key=lambda r: r["seed"])
    cmd = "python benchmarks/onnx_soundness.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(records, cmd.strip(), time.monotonic() - t0)
    write_report(a.out, text, records)
    return 0


def worker_path() -> None:
    """Give Ray's local workers this script's imports (benchmarks/, tests/onnx/, the repository)."""
    extra = [str(ROOT / "tests" / "onnx"), str(ROOT / "benchmarks"), str(ROOT)]
    old = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(extra + ([old] if old else []))


def write_report(out: str, text: str, records: list) -> None:
    """Print the markdown report, write it to ``out`` and the records beside it (``.jsonl``)."""
    print(text)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text)
    with open(Path(out).with_suffix(".jsonl"), "w") as f:
        for r in records:
            f.write(json.dumps(r, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
