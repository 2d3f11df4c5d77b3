#!/usr/bin/env python
"""Exact backends on the AAAI'21 MNIST benchmark: CP-SAT (1 and 2 workers), the MILP (HiGHS, 1
thread), the landed verifier (VerifierConfig defaults: branch and bound + MILP fallback, CPU, 1
thread) and the verifier with ``exact_fallback="cpsat"`` (1 worker), same instances, same time
limit, one run each.

Instances: sample 264 (eps 3, the one the verifier leaves open), the 73 published Boolector
timeouts, and ``--random`` (default 40) of the other correctly classified samples (seeded).
Every decided verdict is checked against the published one (Boolector) and, for the published
timeouts, against QVIP's (Zhang et al., ASE 2022; every MNIST instance decided): a disagreement
is printed and makes the exit status 1.

    PYTHONPATH=/tmp/ortools_site:. .venv/bin/python benchmarks/exact_backends.py --timeout 20 \\
        --csv benchmarks/results/exact_backends.csv > benchmarks/results/exact_backends.md

The CSV is appended to and read back (an interrupted run resumes; ``--table-only`` prints the
table from it). Prints markdown: per procedure decided / robust / vulnerable / timeout and the
median, 90th percentile and max time; per pair the per-instance time ratio on the instances
both decide.
"""
from __future__ import annotations

import argparse
import csv
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qa_lirpa.aaai21 import benchmark_eps, published_verdicts  # noqa: E402

#: QVIP's non-robust MNIST samples (ASE 2022); it decides every other one robust.
QVIP_VULNERABLE = {104, 115, 151, 158, 233, 257, 266, 282, 290, 300, 303, 320, 324, 352, 359, 376, 386}
PROCS = ("cpsat1", "cpsat2", "milp", "verifier", "verifier_cpsat")
NAMES = {"cpsat1": "CP-SAT, 1 worker", "cpsat2": "CP-SAT, 2 workers", "milp": "MILP (HiGHS, 1 thread)",
         "verifier": "verifier default (bab + MILP)", "verifier_cpsat": "verifier, exact_fallback cpsat"}
FIELDS = ["index", "eps", "proc", "verdict", "time_s", "note"]


def instances(n_random: int, seed: int) -> list[int]:
    pub = published_verdicts()
    timeouts = [i for i in range(400) if pub[i] == "timeout"]
    rest = [i for i in range(400) if pub[i] in ("robust", "vulnerable")]
    rng = random.Random(seed)
    picked = sorted(rng.sample(rest, n_random))
    return [264] + [i for i in timeouts if i != 264] + picked


def expected(i: int) -> str:
    pub = published_verdicts()[i]
    if pub in ("robust", "vulnerable"):
        return pub
    return "vulnerable" if i in QVIP_VULNERABLE else "robust"


def run(args, todo: list[tuple[int, str]]) -> None:
    import torch

    from qa_lirpa.aaai21 import aaai21_robustness_spec, load_aaai21
    from qa_lirpa.exact.cpsat import solve_cpsat
    from qa_lirpa.exact.milp import solve_milp
    from qa_lirpa.train.datasets import load_dataset
    from qa_lirpa.verify import Verifier, VerifierConfig

    torch.set_num_threads(1)
    model = load_aaai21(args.weights, dtype=torch.float64)
    ds = load_dataset("mnist", "test")
    verifiers = {name: Verifier(model, VerifierConfig(device="cpu", exact_threads=1, exact_fallback=fb),
                                input_shape=(784,), device="cpu")
                 for name, fb in (("verifier", "milp"), ("verifier_cpsat", "cpsat"))}
    word = {"sat": "vulnerable", "unsat": "robust"}
    new = not args.csv.exists()
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        if new:
            w.writeheader()
        for i, proc in todo:
            spec = aaai21_robustness_spec(ds.images[i], int(ds.labels[i]), benchmark_eps(i))
            note = ""
            t0 = time.perf_counter()
            try:
                if proc.startswith("cpsat"):
                    r = solve_cpsat(model, spec, timeout=args.timeout, threads=int(proc[-1]), hard_timeout=True)
                    verdict = word.get(r.verdict.value, "timeout")
                    note = r.status
                elif proc == "milp":
                    r = solve_milp(model, spec, timeout=args.timeout, threads=1, hard_timeout=True)
                    verdict = word.get(r.verdict.value, "timeout")
                else:
                    r = verifiers[proc].verify(spec, timeout=args.timeout)
                    verdict = {"unsat": "robust", "sat": "vulnerable"}.get(r.verdict.value, "timeout")
                    note = r.stats.exact or ""
            except Exception as e:  # noqa: BLE001 - recorded, counts as undecided
                verdict, note = "error", f"{type(e).__name__}: {e}"
            dt = time.perf_counter() - t0
            w.writerow({"index": i, "eps": benchmark_eps(i), "proc": proc, "verdict": verdict,
                        "time_s": f"{dt:.3f}", "note": note})
            fh.flush()
            print(f"{i:>4} {proc:>9} {verdict:>11} {dt:7.2f} s", file=sys.stderr, flush=True)


def read(path: Path) -> dict:
    out: dict = {}
    if path.exists():
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                out[(int(row["index"]), row["proc"])] = (row["verdict"], float(row["time_s"]))
    return out


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))] if s else float("nan")


def table(res: dict, idx: list[int], timeout: float) -> int:
    groups = {"sample 264": [264], "published timeouts (73)": [i for i in idx if published_verdicts()[i] == "timeout"],
              f"random others ({len(idx) - 73})": [i for i in idx if published_verdicts()[i] != "timeout"],
              f"all ({len(idx)})": idx}
    bad = []
    for (i, proc), (v, _) in sorted(res.items()):
        if v in ("robust", "vulnerable") and v != expected(i):
            bad.append(f"sample {i}: {proc} says {v}, expected {expected(i)}")
    print(f"Time limit {timeout:g} s per instance. Expected verdicts: published (Boolector) where decided, "
          "QVIP's for the published timeouts.\n")
    for name, ids in groups.items():
        print(f"### {name}\n")
        print("| procedure | decided | robust | vulnerable | undecided | median s | p90 s | max s |")
        print("|---|---|---|---|---|---|---|---|")
        for proc in PROCS:
            rows = [res[(i, proc)] for i in ids if (i, proc) in res]
            if not rows:
                continue
            dec = [t for v, t in rows if v in ("robust", "vulnerable")]
            times = [t for _, t in rows]
            n_r = sum(v == "robust" for v, _ in rows)
            n_v = sum(v == "vulnerable" for v, _ in rows)
            print(f"| {NAMES[proc]} | {len(dec)}/{len(rows)} | {n_r} | {n_v} | {len(rows) - len(dec)} | "
                  f"{statistics.median(times):.2f} | {pct(times, 0.9):.2f} | {max(times):.2f} |")
        print()
    print("### per-instance time ratio (row / column), instances both decide: median [p10, p90] (n)\n")
    print("| | " + " | ".join(NAMES[p] for p in PROCS) + " |")
    print("|---|" + "---|" * len(PROCS))
    for a in PROCS:
        cells = []
        for b in PROCS:
            r = []
            for i in idx:
                va, vb = res.get((i, a)), res.get((i, b))
                if va and vb and va[0] in ("robust", "vulnerable") and vb[0] in ("robust", "vulnerable"):
                    r.append(va[1] / max(vb[1], 1e-3))
            cells.append("-" if a == b or not r else f"{statistics.median(r):.2f} [{pct(r, .1):.2f}, {pct(r, .9):.2f}] ({len(r)})")
        print(f"| {NAMES[a]} | " + " | ".join(cells) + " |")
    print()
    for proc in PROCS:
        only = [i for i in idx if res.get((i, proc), ("",))[0] in ("robust", "vulnerable")
                and all(res.get((i, q), ("",))[0] not in ("robust", "vulnerable") for q in PROCS if q != proc)]
        und = [i for i in idx if (i, proc) in res and res[(i, proc)][0] not in ("robust", "vulnerable")]
        print(f"- {NAMES[proc]}: undecided {und or 'none'}; decided by it alone: {only or 'none'}")
    print(f"\nDisagreements with the expected verdicts: {len(bad)}")
    for line in bad:
        print(f"- {line}")
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--random", type=int, default=40, help="other samples, drawn with --seed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--procs", default=",".join(PROCS))
    ap.add_argument("--csv", type=Path, default=ROOT / "benchmarks" / "results" / "exact_backends.csv")
    ap.add_argument("--weights", default=str(ROOT.parent / "shared" / "data" / "aaai21" / "mnist_mlp.h5"))
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    idx = instances(args.random, args.seed)
    procs = [p for p in args.procs.split(",") if p]
    if not args.table_only:
        done = read(args.csv)
        todo = [(i, p) for i in idx for p in procs if (i, p) not in done]
        run(args, todo)
    return table(read(args.csv), idx, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
