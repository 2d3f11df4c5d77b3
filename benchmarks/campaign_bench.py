#!/usr/bin/env python
"""Campaign scaling on this machine: ``qa-lirpa certify`` serially and with ``--workers N`` (an
embedded local Ray runtime), the same samples, one run each, one after the other, for each
verifier variant (by default only the defaults; ``--variant no-portfolio:portfolio=none`` adds
a run without the portfolio's second process). Then a table: wall time, the ratio, the ideal
ratio for the serial per-sample times, the verdict counts (decided verdicts must agree; checked)
and the Ray start-up overhead (a 2-sample campaign with and without Ray, and ``ray.init`` alone).

    PYTHONPATH=. .venv/bin/python benchmarks/campaign_bench.py \\
        --model benchmarks/results/models/mnist_8bit_eps4/checkpoint.pt --eps 4 --samples 0:400 --workers 2

Each run is the command line itself (a fresh process: imports and model loading count). The serial
run and every Ray task use one torch thread. Writes the CSVs and ``campaign.md`` to ``--out-dir``.
A timeout in one run but a verdict in the other (a sample near the time limit on a loaded machine)
is reported, not an error; two different decided verdicts are.
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def certify(args: argparse.Namespace, out: Path, samples: str, workers: int, sets: list[str] = ()) -> float:
    cmd = [sys.executable, "-m", "qa_lirpa", "certify", "--model", args.model, "--dataset", args.dataset,
           "--eps", str(args.eps), "--samples", samples, "--timeout", str(args.timeout), "--threads", "1",
           "--out", str(out), "--restart", "--no-progress"]
    for s in sets:
        cmd += ["--set", s]
    if workers:
        cmd += ["--workers", str(workers)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.monotonic() - t0


def verdicts(path: Path) -> dict[int, str]:
    with open(path, newline="") as f:
        return {int(r["index"]): r["verdict"] for r in csv.DictReader(f)}


def times(path: Path) -> list[float]:
    with open(path, newline="") as f:
        return [float(r["time_s"]) for r in csv.DictReader(f)]


def makespan(ts: list[float], workers: int) -> float:
    """The wall of the serial run's per-sample times on ``workers`` workers, longest first, each to
    the least loaded worker (LPT): what perfect parallelism could reach, start-up not counted."""
    load = [0.0] * workers
    for t in sorted(ts, reverse=True):
        load[load.index(min(load))] += t
    return max(load)


def ray_init_seconds(workers: int) -> float:
    from qa_lirpa.campaign import Scale, start_ray

    t0 = time.monotonic()
    ray, _ = start_ray(Scale(workers=workers))
    dt = time.monotonic() - t0
    ray.shutdown()
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "benchmarks/results/models/mnist_8bit_eps4/checkpoint.pt"))
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--eps", type=float, default=4.0)
    ap.add_argument("--samples", default="0:400")
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--variant", action="append", default=None, metavar="NAME:KEY=VALUE,...",
                    help="verifier settings (--set) per variant; default: the defaults only")
    ap.add_argument("--out-dir", default=str(ROOT / "benchmarks/results/campaign"))
    a = ap.parse_args()
    a.variant = a.variant or ["default:"]
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    words = ["robust", "falsified", "timeout", "unknown", "misclassified", "error"]
    count = lambda d, w: sum(v == w for v in d.values())
    decided = {"robust", "falsified", "misclassified"}
    rows, ratios = [], []
    for variant in a.variant:
        name, _, rest = variant.partition(":")
        sets = [x for x in rest.split(",") if x]
        print(f"{name}: serial certify of {a.samples} ...", file=sys.stderr)
        t_serial = certify(a, out / f"{name}_serial.csv", a.samples, 0, sets)
        print(f"  {t_serial:.1f} s; --workers {a.workers} ...", file=sys.stderr)
        t_ray = certify(a, out / f"{name}_workers{a.workers}.csv", a.samples, a.workers, sets)
        print(f"  {t_ray:.1f} s", file=sys.stderr)
        s_, r_ = verdicts(out / f"{name}_serial.csv"), verdicts(out / f"{name}_workers{a.workers}.csv")
        assert s_.keys() == r_.keys(), "the runs certified different samples"
        conflicts = [i for i in s_ if s_[i] != r_[i] and s_[i] in decided and r_[i] in decided]
        assert not conflicts, f"decided verdicts differ on samples {conflicts}"
        near = [i for i in s_ if s_[i] != r_[i]]
        settings = ",".join(sets) or "defaults"
        rows.append(f"| {name} (`{settings}`) | serial | {t_serial:.1f} | "
                    + " | ".join(str(count(s_, w)) for w in words) + " | |")
        rows.append(f"| {name} (`{settings}`) | --workers {a.workers} | {t_ray:.1f} | "
                    + " | ".join(str(count(r_, w)) for w in words) + f" | **{t_serial / t_ray:.2f}x** |")
        ts = times(out / f"{name}_serial.csv")
        ideal = makespan(ts, a.workers)
        rows.append(f"| {name} (`{settings}`) | ideal for {a.workers} (the serial per-sample times, longest first) | "
                    f"{ideal + (t_serial - sum(ts)):.1f} | " + " | ".join("" for w in words)
                    + f" | {t_serial / (ideal + (t_serial - sum(ts))):.2f}x |")
        ratios.append(f"{name}: verdicts that differ between its two runs (a timeout in one only): {len(near)} {near[:10]}")
    print("start-up overhead ...", file=sys.stderr)
    first = int(a.samples.split(":")[0] or 0)
    small = f"{first}:{first + 2}"
    t_small_serial = certify(a, out / "small_serial.csv", small, 0)
    t_small_ray = certify(a, out / "small_ray.csv", small, a.workers)
    t_init = ray_init_seconds(a.workers)
    lines = [f"# Campaign scaling: certify {os.path.relpath(a.model, ROOT)}, {a.dataset} {a.samples}, eps {a.eps:g}, "
             f"timeout {a.timeout:g} s, one torch thread per run / task", "",
             f"Machine: {os.cpu_count()} CPU cores; each row one run of the command line, in this order, "
             "in one invocation of this script.", "",
             "| variant | run | wall s | " + " | ".join(words) + " | serial / workers |", "|---" * (len(words) + 4) + "|",
             *rows, "", *[f"- {x}" for x in ratios],
             "- The ideal row: the serial run's per-sample times scheduled on the workers longest first (a bound "
             "no scheduler beats when a few slow samples dominate), plus the serial run's own time outside the "
             "samples (start-up, loading).", "",
             f"Ray start-up overhead: a 2-sample campaign takes {t_small_ray:.1f} s with --workers {a.workers} and "
             f"{t_small_serial:.1f} s serially (+{t_small_ray - t_small_serial:.1f} s: runtime start, worker "
             f"processes importing torch and loading the model); `ray.init` alone {t_init:.1f} s.", "",
             "Regenerate: `PYTHONPATH=. .venv/bin/python benchmarks/campaign_bench.py --model "
             f"{os.path.relpath(a.model, ROOT)} --eps {a.eps:g} --samples {a.samples} --workers {a.workers}"
             + "".join(f" --variant {v}" for v in a.variant) + "`"]
    text = "\n".join(lines) + "\n"
    (out / "campaign.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
