#!/usr/bin/env python
"""AAAI'21 MNIST benchmark: our verifier and the exact MILP next to the published Boolector verdicts.

Reads the per-sample CSVs written by

    benchmarks/verifier_bench.py --aaai21-h5 ../shared/data/aaai21/mnist_mlp.h5 --eps E \\
        --samples A:B --methods bab --timeout 20 --threads 1 --out-dir benchmarks/results/aaai21/bab_epsE
    benchmarks/baselines/milp_aaai21.py --eps-blocks 1,2,3,4 --timeout 20 --threads 1 \\
        --out benchmarks/results/aaai21/milp_all.csv

and prints a markdown table per eps block (robust / vulnerable / timeout / misclassified), the
disagreements with the published verdicts and between the two procedures (there must be none), and
time per instance (median, 90th percentile, max).
"""
from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

from qa_lirpa.aaai21 import published_verdicts

WORDS = ("robust", "vulnerable", "timeout", "misclassified")
BAB_WORD = {"robust": "robust", "falsified": "vulnerable", "timeout": "timeout",
            "misclassified": "misclassified", "unknown": "timeout"}


def read_bab(folder: Path) -> dict[int, tuple[str, float]]:
    out = {}
    for path in sorted(folder.glob("bab_eps*/eps*_bab.csv")):
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                out[int(row["index"])] = (BAB_WORD[row["verdict"]], float(row["time_s"]))
    return out


def read_milp(path: Path) -> dict[int, tuple[str, float]]:
    out = {}
    if path.exists():
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                out[int(row["sample"])] = (row["verdict"], float(row["time_s"]))
    return out


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))] if s else float("nan")


def block_rows(name: str, results: dict[int, tuple[str, float]], published: dict[int, str]) -> list[str]:
    rows = []
    for eps in (1, 2, 3, 4):
        idx = [i for i in range((eps - 1) * 100, eps * 100) if i in results]
        if not idx:
            continue
        counts = {w: sum(results[i][0] == w for i in idx) for w in WORDS}
        times = [results[i][1] for i in idx if results[i][0] != "misclassified"]
        rows.append(f"| {name} | {eps} | {len(idx)} | " + " | ".join(str(counts[w]) for w in WORDS)
                    + f" | {statistics.median(times):.2f} | {pct(times, 0.9):.2f} | {max(times):.2f} |")
    return rows


def disagreements(a: dict, b: dict, label_a: str, label_b: str) -> list[str]:
    out = []
    for i in sorted(set(a) & set(b)):
        va, vb = a[i] if isinstance(a[i], str) else a[i][0], b[i] if isinstance(b[i], str) else b[i][0]
        if "timeout" in (va, vb) or va == vb:
            continue
        out.append(f"sample {i}: {label_a} {va}, {label_b} {vb}")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", default="benchmarks/results/aaai21")
    args = p.parse_args()
    folder = Path(args.folder)
    published = published_verdicts()
    bab, milp = read_bab(folder), read_milp(folder / "milp_all.csv")
    pub = {i: (v, 0.0) for i, v in published.items()}
    print("| procedure | eps | instances | robust | vulnerable | timeout | misclassified "
          "| median s | p90 s | max s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    published_rows = block_rows("published (Boolector)", pub, published)
    for line in published_rows:
        print(line.rsplit("|", 4)[0] + "| - | - | - |")
    for line in block_rows("qa-lirpa (bab, 20 s)", bab, published):
        print(line)
    for line in block_rows("exact MILP (HiGHS, 20 s)", milp, published):
        print(line)
    print()
    dis = (disagreements(bab, published, "bab", "published") + disagreements(milp, published, "milp", "published")
           + disagreements(bab, milp, "bab", "milp"))
    print("disagreements:", "none" if not dis else "")
    for d in dis:
        print("  " + d)
    pub_timeouts = [i for i, v in published.items() if v == "timeout"]
    for name, res in (("bab", bab), ("milp", milp)):
        decided = [i for i in pub_timeouts if i in res and res[i][0] != "timeout"]
        print(f"{name}: decides {len(decided)} of the {len(pub_timeouts)} published timeouts "
              f"({sum(res[i][0] == 'robust' for i in decided)} robust, "
              f"{sum(res[i][0] == 'vulnerable' for i in decided)} vulnerable)")
    both = [i for i in range(400) if any(r.get(i, ("timeout",))[0] != "timeout" for r in (bab, milp))]
    print(f"decided by at least one procedure: {len(both)} of 400")
    return 1 if dis else 0


if __name__ == "__main__":
    raise SystemExit(main())
