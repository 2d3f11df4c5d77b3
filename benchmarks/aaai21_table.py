#!/usr/bin/env python
"""AAAI'21 MNIST benchmark: branch and bound, the exact MILP and their combination next to the
published Boolector verdicts.

Reads the per-sample CSVs written by

    benchmarks/verifier_bench.py --aaai21-h5 ../shared/data/aaai21/mnist_mlp.h5 --eps E \\
        --samples A:B --methods bab --timeout 20 --threads 1 --out-dir benchmarks/results/aaai21/bab_epsE
    benchmarks/baselines/milp_aaai21.py --eps-blocks 1,2,3,4 --timeout 20 --threads 1 \\
        --out benchmarks/results/aaai21/milp_all.csv
    benchmarks/aaai21_table.py --run combined --timeout 20 --threads 1      (this script)

``--run combined`` runs the verifier with ``exact_fallback: milp`` (branch and bound, then the
MILP on what it has not closed; the other settings are VerifierConfig's defaults) on the samples
not yet in ``combined_all.csv`` and appends them (so an interrupted run resumes). ``--run bab``
does the same with ``exact_fallback: none`` into ``bab_all.csv``, which then replaces the
``bab_eps*`` CSVs of verifier_bench.py in the table.

Prints a markdown table per eps block (robust / vulnerable / timeout / misclassified, time per
instance: median, 90th percentile, max), every disagreement between any two of the published
verdicts, bab, MILP and combined (there must be none), per-instance time ratios of the
procedures on the instances both decide, and how many published timeouts each decides.
``--cactus PNG`` also draws instances solved against time.
"""
from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qa_lirpa.aaai21 import benchmark_eps, published_verdicts  # noqa: E402

WORDS = ("robust", "vulnerable", "timeout", "misclassified")
BAB_WORD = {"robust": "robust", "falsified": "vulnerable", "timeout": "timeout",
            "misclassified": "misclassified", "unknown": "timeout"}
CSV = {"combined": "combined_all.csv", "bab": "bab_all.csv", "portfolio": "portfolio_all.csv",
       "landed": "landed_rerun.csv", "portfolio_milp": "portfolio_milp.csv",
       "portfolio_nofallback": "portfolio_nofallback.csv", "portfolio_after1": "portfolio_after1.csv",
       "cpsat_fallback": "cpsat_fallback.csv"}
#: --ablation: the strategies compared with ``landed`` (all run interleaved in one --run)
ABLATION = ("landed", "portfolio", "portfolio_milp", "portfolio_nofallback", "portfolio_after1", "cpsat_fallback")
COMBINED_FIELDS = ["index", "eps", "label", "predicted", "verdict", "time_s", "boxes", "milp_calls",
                   "time_milp_s", "exact"]
NAMES = {"bab": "qa-lirpa bab", "milp": "exact MILP (HiGHS)", "combined": "qa-lirpa bab + MILP",
         "landed": "bab + MILP (re-run beside portfolio)", "portfolio": "portfolio (bab + MILP | exact process: SCIP up to 1024 hidden units, else CP-SAT)"}
#: the verifier settings of each --run strategy (besides device cpu and exact_threads)
STRATEGY = {"combined": dict(exact_fallback="milp", portfolio="none"),
            "landed": dict(exact_fallback="milp", portfolio="none"),
            "bab": dict(exact_fallback="none", portfolio="none"), "portfolio": dict(exact_fallback="milp", portfolio="auto"),
            "portfolio_milp": dict(exact_fallback="milp", portfolio="milp"),
            "portfolio_nofallback": dict(exact_fallback="none", portfolio="auto"),
            "portfolio_after1": dict(exact_fallback="milp", portfolio="auto", portfolio_after=1.0),
            "cpsat_fallback": dict(exact_fallback="cpsat", portfolio="none")}

Results = dict  # index -> (verdict word, seconds)


# ----- reading ---------------------------------------------------------------------------------

def read_bab(folder: Path) -> Results:
    if (folder / CSV["bab"]).exists():
        return read_combined(folder / CSV["bab"])
    out = {}
    for path in sorted(folder.glob("bab_eps*/eps*_bab.csv")):
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                out[int(row["index"])] = (BAB_WORD[row["verdict"]], float(row["time_s"]))
    return out


def read_milp(path: Path) -> Results:
    out = {}
    if path.exists():
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                out[int(row["sample"])] = (row["verdict"], float(row["time_s"]))
    return out


def read_combined(path: Path) -> Results:
    out = {}
    if path.exists():
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                out[int(row["index"])] = (BAB_WORD[row["verdict"]], float(row["time_s"]))
    return out


# ----- running the combined strategy -------------------------------------------------------------

def run_verifier(folder: Path, strategies: list[str], indices: list[int], timeout: float, threads: int,
                 weights: str) -> None:
    """Run the verifier with each of ``strategies`` on the samples missing from its CSV; with
    several strategies they take turns on each sample (the same machine conditions for all, so
    per-instance time ratios compare like with like)."""
    import torch

    from qa_lirpa.aaai21 import load_aaai21
    from qa_lirpa.train.datasets import load_dataset
    from qa_lirpa.verify import Verifier, VerifierConfig
    from qa_lirpa.verify.certify import certify_sample, pixel_unit

    if threads:
        torch.set_num_threads(threads)
    model = load_aaai21(weights, dtype=torch.float64)
    ds = load_dataset("mnist", "test")
    unit = pixel_unit(model)
    runs = []
    for strategy in strategies:
        path = folder / CSV[strategy]
        done = set(read_combined(path))
        cfg = VerifierConfig(exact_threads=threads, device="cpu", **STRATEGY[strategy])
        verifier = Verifier(model, cfg, input_shape=tuple(ds.images.shape[1:]), device="cpu")
        last = {}

        def recording(spec, timeout, verify=verifier.verify, last=last):
            last["r"] = verify(spec, timeout)
            return last["r"]

        verifier.verify = recording
        new = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a", newline="")
        w = csv.DictWriter(fh, fieldnames=COMBINED_FIELDS)
        if new:
            w.writeheader()
        runs.append((strategy, verifier, last, done, fh, w))
    t_all = time.monotonic()
    todo = [i for i in indices if any(i not in r[3] for r in runs)]
    try:
        for n, i in enumerate(todo, 1):
            for strategy, verifier, last, done, fh, w in runs:
                if i in done:
                    continue
                last.clear()
                r = certify_sample(verifier, ds.images[i], int(ds.labels[i]), benchmark_eps(i), unit, timeout,
                                   index=i)
                st = last["r"].stats if "r" in last else None
                exact = (st.exact + (" | portfolio: " + st.portfolio if st.portfolio else "")) if st else ""
                w.writerow({"index": i, "eps": benchmark_eps(i), "label": r.label, "predicted": r.predicted,
                            "verdict": r.verdict, "time_s": f"{r.time_s:.4f}", "boxes": r.boxes,
                            "milp_calls": st.milp_calls if st else 0,
                            "time_milp_s": f"{st.time_milp:.3f}" if st else "0.000", "exact": exact})
                fh.flush()
                print(f"[{n}/{len(todo)}] {strategy} sample {i}: {r.verdict} {r.time_s:.2f} s"
                      + (f" ({exact})" if exact else ""), file=sys.stderr, flush=True)
    finally:
        for run in runs:
            run[4].close()
    print(f"{'+'.join(strategies)}: {len(todo)} samples in {time.monotonic() - t_all:.1f} s wall", file=sys.stderr)


# ----- tables --------------------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))] if s else float("nan")


def block_rows(name: str, results: Results, with_times: bool = True) -> list[str]:
    rows = []
    for eps in (1, 2, 3, 4):
        idx = [i for i in range((eps - 1) * 100, eps * 100) if i in results]
        if not idx:
            continue
        counts = {w: sum(results[i][0] == w for i in idx) for w in WORDS}
        times = [results[i][1] for i in idx if results[i][0] != "misclassified"]
        tail = (f" {statistics.median(times):.2f} | {pct(times, 0.9):.2f} | {max(times):.2f} |"
                if with_times and times else " - | - | - |")
        rows.append(f"| {name} | {eps} | {len(idx)} | " + " | ".join(str(counts[w]) for w in WORDS) + " |" + tail)
    return rows


def disagreements(a: Results, b: Results, label_a: str, label_b: str) -> list[str]:
    out = []
    for i in sorted(set(a) & set(b)):
        va, vb = a[i][0], b[i][0]
        if "timeout" in (va, vb) or va == vb:
            continue
        out.append(f"sample {i}: {label_a} {va}, {label_b} {vb}")
    return out


def decided(r: Results, i: int) -> bool:
    return i in r and r[i][0] in ("robust", "vulnerable")


def ratio_row(a: Results, b: Results, name_a: str, name_b: str) -> str:
    """Time of a / time of b on the instances both decide (times floored at 1 ms)."""
    both = [i for i in sorted(set(a) & set(b)) if decided(a, i) and decided(b, i)]
    if not both:
        return f"| {name_a} / {name_b} | 0 | - | - | - | - | - |"
    r = [max(a[i][1], 1e-3) / max(b[i][1], 1e-3) for i in both]
    geo = math.exp(statistics.fmean(math.log(v) for v in r))
    only_a = sum(decided(a, i) and not decided(b, i) for i in set(a) & set(b))
    only_b = sum(decided(b, i) and not decided(a, i) for i in set(a) & set(b))
    return (f"| {name_a} / {name_b} | {len(both)} | {statistics.median(r):.2f} | {geo:.2f} | "
            f"{sum(v < 1 for v in r)} | {sum(v > 1 for v in r)} | {only_a} / {only_b} |")


def cactus(path: Path, series: dict[str, Results], limit: float, n_verifiable: int) -> None:
    """Instances decided within t seconds, against t (log scale): all of them (left) and the top
    of the curves (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=120)
    curves = {}
    for name, res in series.items():
        times = sorted(max(t, 1e-3) for v, t in res.values() if v in ("robust", "vulnerable"))
        if times:
            curves[name] = ([1e-3] + times + [limit], [0] + list(range(1, len(times) + 1)) + [len(times)])
    at_1s = min((sum(x <= 1.0 for x in xs[1:-1]) for xs, _ in curves.values()), default=0)
    for ax, zoom in zip(axes, (False, True)):
        for (name, (xs, ys)), style in zip(curves.items(), ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))):
            ax.step(xs, ys, where="post", linestyle=style, linewidth=1.8, label=f"{name} ({ys[-1]})")
        ax.axhline(n_verifiable, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xlabel("time limit per instance (s, log scale)")
        if zoom:
            ax.set_xlim(0.1, limit * 1.05)
            ax.set_ylim(max(0, at_1s - 15), n_verifiable + 3)
            ax.set_title("top of the curves")
        else:
            ax.set_xlim(1e-3, limit * 1.05)
            ax.set_ylim(0, n_verifiable + 15)
            ax.set_ylabel("instances decided")
            ax.set_title(f"{n_verifiable} correctly classified instances (dotted)")
            ax.legend(loc="upper left", fontsize=9)
    fig.suptitle(f"AAAI'21 MNIST benchmark (400 instances, 9 misclassified), {limit:g} s limit, 1 CPU thread")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def ablation_table(folder: Path, limit: float) -> int:
    """Each --ablation strategy found in ``folder``: counts and times, and the ratio to landed."""
    runs = {k: read_combined(folder / CSV[k]) for k in ABLATION if (folder / CSV[k]).exists()}
    print("| strategy | settings | instances | decided | timeout | median s | p90 s | max s | summed s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k, res in runs.items():
        times = [t for v, t in res.values() if v != "misclassified"]
        print(f"| {k} | `{STRATEGY[k]}` | {len(res)} | {sum(decided(res, i) for i in res)} | "
              f"{sum(v == 'timeout' for v, _ in res.values())} | {statistics.median(times):.2f} | "
              f"{pct(times, 0.9):.2f} | {max(times):.2f} | {sum(times):.1f} |")
    print()
    print("| ratio | both decided | median | geometric mean | first faster | second faster | only first / only second |")
    print("|---|---|---|---|---|---|---|")
    for k in runs:
        if k != "landed" and "landed" in runs:
            print(ratio_row(runs[k], runs["landed"], k, "landed"))
    for k, res in runs.items():
        left = [i for i in sorted(res) if res[i][0] == "timeout"]
        print(f"\n{k} timeouts: {' '.join(map(str, left)) or 'none'}")
    pub = {i: (v, 0.0) for i, v in published_verdicts().items()}
    dis = [d for k, res in runs.items() for d in disagreements(pub, res, "published", k)]
    print("\ndisagreements with the published verdicts:", dis or "none")
    return 1 if dis else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", default="benchmarks/results/aaai21")
    p.add_argument("--run", choices=sorted(CSV), action="append", default=[],
                   help="first run the verifier (combined: exact_fallback milp, bab: none) on the samples "
                        "missing from combined_all.csv / bab_all.csv")
    p.add_argument("--run-combined", dest="run", action="append_const", const="combined",
                   help="the same as --run combined")
    p.add_argument("--samples", default="0:400", help="samples for --run (START:STOP, or a comma list)")
    p.add_argument("--ablation", action="store_true",
                   help="run (with --run) / tabulate the ablation strategies in --folder instead of the main table")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds per instance (--run; the table's limit)")
    p.add_argument("--threads", type=int, default=1, help="torch and HiGHS threads (--run)")
    p.add_argument("--weights", default=str(ROOT.parent / "shared" / "data" / "aaai21" / "mnist_mlp.h5"))
    p.add_argument("--cactus", default=None, help="write the cactus plot to this PNG")
    args = p.parse_args(argv)
    folder = Path(args.folder)
    if args.ablation and not args.run:
        args.run = list(ABLATION)
    if args.run:
        if ":" in args.samples:
            a, b = (int(v) for v in args.samples.split(":"))
            indices = list(range(a, b))
        else:
            indices = [int(v) for v in args.samples.split(",")]
        run_verifier(folder, list(dict.fromkeys(args.run)), indices, args.timeout, args.threads, args.weights)
    if args.ablation:
        return ablation_table(folder, args.timeout)

    published = published_verdicts()
    pub = {i: (v, 0.0) for i, v in published.items()}
    runs = {"bab": read_bab(folder), "milp": read_milp(folder / "milp_all.csv"),
            "combined": read_combined(folder / CSV["combined"]),
            "landed": read_combined(folder / CSV["landed"]),
            "portfolio": read_combined(folder / CSV["portfolio"])}
    limit = args.timeout
    print("| procedure | eps | instances | robust | vulnerable | timeout | misclassified "
          "| median s | p90 s | max s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for line in block_rows("published (Boolector)", pub, with_times=False):
        print(line)
    for key, res in runs.items():
        for line in block_rows(f"{NAMES[key]}, {limit:g} s", res):
            print(line)
    print()
    for key, res in runs.items():
        if res:
            n = sum(decided(res, i) for i in res)
            print(f"{NAMES[key]}: {len(res)} instances, decided {n} "
                  f"(+{sum(res[i][0] == 'misclassified' for i in res)} misclassified), "
                  f"{sum(res[i][0] == 'timeout' for i in res)} timeouts")
    print()
    labelled = [("published", pub)] + [(k, v) for k, v in runs.items()]
    dis = []
    for x in range(len(labelled)):
        for y in range(x + 1, len(labelled)):
            dis += disagreements(labelled[x][1], labelled[y][1], labelled[x][0], labelled[y][0])
    print("disagreements:", "none" if not dis else "")
    for d in dis:
        print("  " + d)
    print()
    print("Per-instance time ratios on the instances both procedures decide (times floored at 1 ms; "
          "'faster' counts instances where the first / the second is faster; last column: decided by "
          "the first only / the second only):")
    print()
    print("| ratio | both decided | median | geometric mean | first faster | second faster | only first / only second |")
    print("|---|---|---|---|---|---|---|")
    pairs = [("milp", "bab"), ("combined", "bab"), ("combined", "milp"), ("portfolio", "landed")]
    for a, b in pairs:
        if runs[a] and runs[b]:
            print(ratio_row(runs[a], runs[b], a, b))
    print()
    pub_timeouts = [i for i, v in published.items() if v == "timeout"]
    for name, res in runs.items():
        if not res:
            continue
        got = [i for i in pub_timeouts if decided(res, i)]
        print(f"{name}: decides {len(got)} of the {len(pub_timeouts)} published timeouts "
              f"({sum(res[i][0] == 'robust' for i in got)} robust, "
              f"{sum(res[i][0] == 'vulnerable' for i in got)} vulnerable)")
    either = [i for i in range(400) if any(decided(r, i) or r.get(i, ("",))[0] == "misclassified"
                                           for r in (runs["bab"], runs["milp"]))]
    print(f"bab or milp (misclassified included): {len(either)} of 400")
    if runs["combined"]:
        c = runs["combined"]
        print(f"combined (misclassified included): "
              f"{sum(decided(c, i) or c[i][0] == 'misclassified' for i in c)} of {len(c)}")
        left = [i for i in sorted(c) if c[i][0] == "timeout"]
        print(f"combined timeouts: {' '.join(map(str, left)) or 'none'}")
    if args.cactus:
        n_ver = sum(v != "misclassified" for v in published.values())
        cactus(Path(args.cactus), {NAMES[k]: v for k, v in runs.items()}, limit, n_ver)
        print(f"\ncactus plot: {args.cactus}")
    return 1 if dis else 0


if __name__ == "__main__":
    raise SystemExit(main())
