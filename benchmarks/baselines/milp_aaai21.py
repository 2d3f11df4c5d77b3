#!/usr/bin/env python
"""Baseline: the exact MILP procedure (qa_lirpa.exact.decide_milp, HiGHS) on the AAAI'21 benchmark.

For each MNIST test sample the benchmark radius is 1/2/3/4 for samples 0-99/100-199/200-299/300-399.
A sample misclassified at its own image is reported as ``misclassified`` (as in the paper) without
running the MILP; otherwise ``unsat`` -> ``robust``, ``sat`` -> ``vulnerable`` (counterexample
confirmed with integer_forward), ``timeout``. Each verdict is compared with the published one:
``agree``, ``new`` (published timeout, decided here), ``open`` (undecided here) or ``DISAGREE``
(exit status 1).

Examples::

    python benchmarks/baselines/milp_aaai21.py --samples 0-4,115 --timeout 60
    python benchmarks/baselines/milp_aaai21.py --eps-blocks 3,4 --samples 200-209,300-309
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from qa_lirpa.aaai21 import aaai21_robustness_spec, benchmark_eps, load_aaai21, published_verdicts  # noqa: E402
from qa_lirpa.exact import solve_milp  # noqa: E402
from qa_lirpa.nn import argmax_smallest, integer_codes  # noqa: E402

DEFAULT_WEIGHTS = ROOT.parent / "shared" / "data" / "aaai21" / "mnist_mlp.h5"
OURS = {"unsat": "robust", "sat": "vulnerable", "timeout": "timeout"}


def parse_indices(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = (int(v) for v in part.split("-", 1))
            out.extend(range(a, b + 1))
        else:
            out.append(int(part))
    return out


def compare(published: str, ours: str) -> str:
    if ours == "timeout":
        return "open"
    if published == "timeout":
        return "new"
    return "agree" if published == ours else "DISAGREE"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", default=None, help="indices and ranges, e.g. '0-9,115' (default: every "
                                                     "sample of the selected blocks)")
    ap.add_argument("--eps-blocks", default="1,2,3,4", help="radii whose blocks to run (1: 0-99, 2: 100-199, "
                                                             "3: 200-299, 4: 300-399)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per instance")
    ap.add_argument("--weights", default=os.environ.get("QA_LIRPA_AAAI21_H5", str(DEFAULT_WEIGHTS)))
    ap.add_argument("--mode", choices=["split", "combined"], default="split")
    ap.add_argument("--no-objective", action="store_true", help="pure feasibility search in split mode")
    ap.add_argument("--threads", type=int, default=None, help="HiGHS threads")
    ap.add_argument("--out", default=None, help="CSV path (default benchmarks/results/milp_aaai21_<time>.csv)")
    args = ap.parse_args(argv)

    blocks = {int(e) for e in args.eps_blocks.split(",") if e.strip()}
    if not blocks <= {1, 2, 3, 4}:
        ap.error("--eps-blocks takes values in 1..4")
    indices = parse_indices(args.samples) if args.samples else list(range(400))
    indices = [i for i in indices if 0 <= i < 400 and benchmark_eps(i) in blocks]
    if not indices:
        ap.error("no sample selected")

    from qa_lirpa.train.datasets import load_dataset
    model = load_aaai21(args.weights, dtype=torch.float64)
    data = load_dataset("mnist", "test")
    published = published_verdicts()
    out_path = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / \
        f"milp_aaai21_{time.strftime('%Y%m%d-%H%M%S')}.csv"
    out_path.parent.mkdir(parents=True, exist_ok=True)

    fields = ["sample", "eps", "label", "published", "verdict", "compare", "time_s", "binaries",
              "disjuncts_skipped", "milps", "nodes"]
    print(f"{'sample':>6} {'eps':>3} {'label':>5} {'published':>13} {'verdict':>13} {'compare':>8} "
          f"{'time_s':>7} {'bin':>4} {'milps':>5} {'nodes':>6}", flush=True)
    rows, disagreements, total = [], 0, 0.0
    with open(out_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for i in indices:
            eps, label = benchmark_eps(i), int(data.labels[i])
            x = data.images[i]
            t0 = time.perf_counter()
            pred = int(argmax_smallest(integer_codes(model, x.double().unsqueeze(0)).values)[0])
            if pred != label:
                verdict, res = "misclassified", None
            else:
                spec = aaai21_robustness_spec(x, label, eps)
                res = solve_milp(model, spec, timeout=args.timeout, mode=args.mode,
                                 objective=not args.no_objective, threads=args.threads)
                verdict = OURS[res.verdict]
            dt = time.perf_counter() - t0
            total += dt
            cmp = compare(published[i], verdict)
            disagreements += cmp == "DISAGREE"
            row = {"sample": i, "eps": eps, "label": label, "published": published[i], "verdict": verdict,
                   "compare": cmp, "time_s": f"{dt:.2f}",
                   "binaries": res.n_binaries if res else 0,
                   "disjuncts_skipped": res.disjuncts_skipped if res else 0,
                   "milps": res.disjuncts_solved if res else 0, "nodes": res.nodes if res else 0}
            w.writerow(row)
            fh.flush()
            rows.append(row)
            print(f"{i:>6} {eps:>3} {label:>5} {published[i]:>13} {verdict:>13} {cmp:>8} {dt:>7.2f} "
                  f"{row['binaries']:>4} {row['milps']:>5} {row['nodes']:>6}", flush=True)

    counts: dict[str, int] = {}
    for r in rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    times = np.array([float(r["time_s"]) for r in rows])
    print(f"\n{len(rows)} instances, total {total:.1f} s, median {np.median(times):.2f} s, "
          f"max {times.max():.2f} s; "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print(f"new decisions of published timeouts: {sum(r['compare'] == 'new' for r in rows)}; "
          f"disagreements: {disagreements}")
    print(f"CSV: {out_path}")
    return 1 if disagreements else 0


if __name__ == "__main__":
    sys.exit(main())
