#!/usr/bin/env python
"""``qa-lirpa certify`` on a whole test set, with ``--workers K`` (K local Ray worker processes)
or ``--cluster ADDRESS``, with verifier settings per variant; then a table: outcomes, timeouts,
wall, summed per-sample time, the share of the summed time spent on the slowest 1% of the samples.

    PYTHONPATH=. .venv/bin/python benchmarks/certify_full.py \\
        --model benchmarks/results/models/mnist_8bit_eps4/checkpoint.pt --eps 4 --samples 0:10000 \\
        --procs 2 --variant landed: --variant portfolio:portfolio=auto \\
        --out-dir benchmarks/results/certify_full/eps4

A variant is ``NAME:KEY=VALUE,KEY=VALUE`` (VerifierConfig overrides; empty: the defaults).
Variants run one after the other, each with all K workers (the same machine, so compare their
walls only within one run); an interrupted variant resumes from its certify journal. ``--rerun-slow S`` then re-runs every sample that took more than S
seconds in any variant, the variants taking turns on each sample in one process (like-for-like
per-instance ratios); ``--slow-from CSV`` runs only that re-run (an ablation), in ``--rerun-procs``
processes side by side (2: the cores are shared as in a two-worker full-set run). Each task uses one torch thread (CP-SAT / HiGHS one worker each).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    over = {}
    for item in filter(None, rest.split(",")):
        k, _, v = item.partition("=")
        over[k] = v
    return name, over


def _config(over: dict):
    from qa_lirpa.verify import VerifierConfig
    import dataclasses

    kinds = {f.name: f.type for f in dataclasses.fields(VerifierConfig)}
    kw = {}
    for k, v in over.items():
        t = str(kinds[k])
        kw[k] = float(v) if "float" in t else int(v) if t == "int" else (v.lower() == "true") if "bool" in t else v
    return VerifierConfig(device="cpu", **kw)


def read(path: Path) -> dict:
    with open(path, newline="") as f:
        return {int(r["index"]): (r["verdict"], float(r["time_s"])) for r in csv.DictReader(f)}


def summary(res: dict, wall: float) -> dict:
    times = sorted((t for v, t in res.values() if v != "misclassified"), reverse=True)
    k = max(1, len(times) // 100)
    words = ("robust", "falsified", "timeout", "unknown", "misclassified")
    out = {w: sum(v == w for v, _ in res.values()) for w in words}
    out.update(n=len(res), wall=wall, summed=sum(times), slow1=sum(times[:k]) / max(sum(times), 1e-9),
               median=statistics.median(times) if times else 0.0, max=times[0] if times else 0.0)
    return out


def rerun(args, variants, indices: list[int]) -> dict:
    import torch

    torch.set_num_threads(1)
    from qa_lirpa.train.datasets import load_dataset
    from qa_lirpa.verify import Verifier
    from qa_lirpa.verify.certify import certify_sample, pixel_unit
    from qa_lirpa.verify.cli import load_model

    ds = load_dataset(args.dataset, "test")
    model = load_model(args.model, "cpu")
    unit = pixel_unit(model)
    vs = [(name, Verifier(model, _config(over), input_shape=tuple(ds.images.shape[1:]), device="cpu"))
          for name, over in variants]
    out = {name: {} for name, _ in variants}
    for i in indices:
        for name, v in vs:
            r = certify_sample(v, ds.images[i], int(ds.labels[i]), args.eps, unit, args.timeout, index=i)
            out[name][i] = (r.verdict, r.time_s)
            print(f"rerun {name} {i}: {r.verdict} {r.time_s:.2f} s", file=sys.stderr, flush=True)
    return out


def _share_main(args, variants, indices: list[int], path: Path) -> None:
    res = rerun(args, variants, indices)
    path.write_text(json.dumps({n: {str(i): list(v) for i, v in r.items()} for n, r in res.items()}))


def rerun_shared(args, variants, indices: list[int], procs: int) -> dict:
    """:func:`rerun` with the samples dealt round-robin to ``procs`` processes running side by side
    (so that, as in a full-set run with two workers, two verifiers and their exact processes share
    the cores); each process takes the variants in turns on each of its samples."""
    if procs <= 1:
        return rerun(args, variants, indices)
    import multiprocessing as mp

    ctx = mp.get_context("fork")          # not daemonic: the verifier's portfolio forks its own process
    files = [args.out_dir / f".rerun_share{k}.json" for k in range(procs)]
    ps = [ctx.Process(target=_share_main, args=(args, variants, indices[k::procs], files[k])) for k in range(procs)]
    for q in ps:
        q.start()
    for q in ps:
        q.join()
    if any(q.exitcode for q in ps):
        raise SystemExit(f"a re-run process failed (exit codes {[q.exitcode for q in ps]})")
    out: dict = {n: {} for n, _ in variants}
    for f in files:
        for n, r in json.loads(f.read_text()).items():
            out[n].update({int(i): (v[0], float(v[1])) for i, v in r.items()})
        f.unlink()
    return out


def ablation(args, variants) -> int:
    slow = sorted(i for i, (v, t) in read(args.slow_from).items() if t > args.rerun_slow)
    t0 = time.monotonic()
    rr = rerun_shared(args, variants, slow, args.rerun_procs)
    wall = time.monotonic() - t0
    base = variants[0][0]
    where = "one process" if args.rerun_procs <= 1 else f"{args.rerun_procs} processes side by side, the samples dealt round-robin"
    lines = [f"Ablation: certify {args.model}, eps {args.eps:g}, timeout {args.timeout:g} s: the {len(slow)} samples "
             f"slower than {args.rerun_slow:g} s in {args.slow_from}, every variant in turns on each sample, {where} "
             f"(wall {wall:.0f} s)", "",
             "Command: `PYTHONPATH=. .venv/bin/python benchmarks/certify_full.py " + " ".join(args.argv) + "`", "",
             "| variant | settings | robust | falsified | timeout | summed s | median ratio to " + base + " |",
             "|---|---|---|---|---|---|---|"]
    for n, over in variants:
        res = rr[n]
        ratios = [max(res[i][1], 1e-3) / max(rr[base][i][1], 1e-3) for i in slow]
        lines.append(f"| {n} | `{','.join(f'{k}={v}' for k, v in over.items()) or 'defaults'}` | "
                     f"{sum(res[i][0] == 'robust' for i in slow)} | {sum(res[i][0] == 'falsified' for i in slow)} | "
                     f"{sum(res[i][0] == 'timeout' for i in slow)} | {sum(res[i][1] for i in slow):.1f} | "
                     f"{statistics.median(ratios) if ratios else float('nan'):.2f} |")
    lines += ["", "| sample | " + " | ".join(n for n, _ in variants) + " |", "|---" * (len(variants) + 1) + "|"]
    for i in slow:
        lines.append(f"| {i} | " + " | ".join(f"{rr[n][i][0]} {rr[n][i][1]:.2f}" for n, _ in variants) + " |")
    dis = [i for i in slow if {rr[n][i][0] for n, _ in variants} >= {"robust", "falsified"}]
    lines.append(f"\ndisagreements: {dis or 'none'}")
    text = "\n".join(lines) + "\n"
    (args.out_dir / "ablation.md").write_text(text)
    print(text)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--eps", type=float, required=True)
    p.add_argument("--samples", default="0:10000")
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--procs", "--workers", type=int, default=2,
                   help="certify --workers (local Ray worker processes; 1: serial)")
    p.add_argument("--cluster", default=None, help="certify --cluster ADDRESS (an existing Ray cluster)")
    p.add_argument("--variant", action="append", default=[], help="NAME:KEY=VALUE,... (repeatable)")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--rerun-slow", type=float, default=0.0, help="re-run samples slower than this, interleaved")
    p.add_argument("--rerun-procs", type=int, default=1,
                   help="the ablation's re-run in this many processes side by side (2: the cores shared as in "
                        "a two-worker full-set run)")
    p.add_argument("--slow-from", type=Path, default=None,
                   help="only the interleaved re-run (an ablation): the samples slower than --rerun-slow "
                        "in this CSV (index,verdict,time_s), every --variant in turns on each")
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    variants = [parse_variant(v) for v in (args.variant or ["landed:"])]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.slow_from is not None:
        return ablation(args, variants)
    rows, results = [], {}
    for name, over in variants:
        spec = name + ":" + ",".join(f"{k}={v}" for k, v in over.items())
        out_csv = args.out_dir / f"{name}.csv"
        cmd = [sys.executable, "-m", "qa_lirpa", "certify", "--model", args.model, "--dataset", args.dataset,
               "--eps", str(args.eps), "--samples", args.samples, "--timeout", str(args.timeout), "--threads", "1",
               "--device", "cpu", "--out", str(out_csv), "--no-progress"]
        cmd += [x for k, v in over.items() for x in ("--set", f"{k}={v}")]
        cmd += ["--cluster", args.cluster] if args.cluster else ["--workers", str(args.procs)] if args.procs > 1 else []
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        t0 = time.monotonic()
        code = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode
        wall = time.monotonic() - t0
        if code:
            print(f"variant {name}: certify exit code {code}", file=sys.stderr)
            return 1
        res = read(out_csv)
        results[name] = res
        s = summary(res, wall)
        rows.append((name, spec, s))
        print(f"{name}: {json.dumps(s)}", file=sys.stderr, flush=True)
        (args.out_dir / f"{name}.json").write_text(json.dumps(dict(s, settings=over)) + "\n")
    lines = [f"certify {args.model}, eps {args.eps:g}, samples {args.samples}, timeout {args.timeout:g} s, "
             + (f"Ray cluster {args.cluster}" if args.cluster else f"{args.procs} worker processes"), "",
             "Command: `PYTHONPATH=. .venv/bin/python benchmarks/certify_full.py "
             + " ".join(argv if argv is not None else sys.argv[1:]) + "`", "",
             "| variant | settings | samples | robust | falsified | timeout | misclassified | wall s | summed s "
             "| median s | max s | slowest 1% share |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, spec, s in rows:
        lines.append(f"| {name} | `{spec.partition(':')[2] or 'defaults'}` | {s['n']} | {s['robust']} | "
                     f"{s['falsified']} | {s['timeout']} | {s['misclassified']} | {s['wall']:.0f} | "
                     f"{s['summed']:.0f} | {s['median']:.3f} | {s['max']:.2f} | {100 * s['slow1']:.0f}% |")
    for name, res in results.items():
        lines.append(f"\n{name} timeouts: " + (" ".join(str(i) for i in sorted(res) if res[i][0] == "timeout") or "none"))
    if len(results) > 1:
        names = list(results)
        a = results[names[0]]
        for b_name in names[1:]:
            b = results[b_name]
            dis = [i for i in a if i in b and {a[i][0], b[i][0]} == {"robust", "falsified"}]
            lines.append(f"\ndisagreements {names[0]} / {b_name}: {dis or 'none'}")
    if args.rerun_slow > 0 and len(results) > 1:
        slow = sorted({i for res in results.values() for i, (v, t) in res.items() if t > args.rerun_slow})
        rr = rerun(args, variants, slow)
        base = variants[0][0]
        lines += ["", f"Re-run of the {len(slow)} samples slower than {args.rerun_slow:g} s in some variant, "
                      "variants taking turns per sample (one process):", "",
                  "| sample | " + " | ".join(n for n, _ in variants) + " |", "|---" * (len(variants) + 1) + "|"]
        for i in slow:
            lines.append(f"| {i} | " + " | ".join(f"{rr[n][i][0]} {rr[n][i][1]:.2f}" for n, _ in variants) + " |")
        for n, _ in variants[1:]:
            ratios = [max(rr[n][i][1], 1e-3) / max(rr[base][i][1], 1e-3) for i in slow]
            if ratios:
                lines.append(f"\n{n} / {base} time ratio on the re-run: median {statistics.median(ratios):.2f}, "
                             f"summed {sum(rr[n][i][1] for i in slow):.1f} s / {sum(rr[base][i][1] for i in slow):.1f} s; "
                             f"timeouts {sum(rr[n][i][0] == 'timeout' for i in slow)} / "
                             f"{sum(rr[base][i][0] == 'timeout' for i in slow)}")
    text = "\n".join(lines) + "\n"
    (args.out_dir / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
