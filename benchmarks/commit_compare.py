"""Same verdicts, same speed? Runs the AAAI'21 400-instance benchmark (the verifier's default
strategy, 20 s per instance) and ``make demo``'s pipeline (fresh training included) on two commits,
one after the other on this machine, and prints per-instance verdict agreement and wall-time ratios.

    .venv/bin/python benchmarks/commit_compare.py --base 3f4b3cc --out benchmarks/results/redesign_speed.md

The base commit is checked out into a temporary git worktree (sharing this checkout's ``.venv``);
the head is this checkout as it is. Each commit runs its own code (``PYTHONPATH`` = its tree).
``--repeat 2`` runs base, head, base, head and reports the smaller wall time of each (shared
machines are noisy: the ratio of the minima is the fairer one).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qa_lirpa.base.files import atomic_write_text  # noqa: E402

WEIGHTS = ROOT.parent / "shared" / "data" / "aaai21" / "mnist_mlp.h5"


def _run(cmd: list[str], tree: Path, log: Path) -> float:
    """Run ``cmd`` in ``tree`` with that tree's code; returns the wall time (s)."""
    env = dict(os.environ, PYTHONPATH=str(tree), PATH=f"{tree / 'bin'}:{os.environ.get('PATH', '')}")
    t0 = time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.run(cmd, cwd=tree, env=env, stdout=f, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if p.returncode not in (0, 1):        # aaai21_table exits 1 on disagreements: reported, not fatal
        raise SystemExit(f"{' '.join(cmd)} failed in {tree} (exit {p.returncode}); see {log}")
    return wall


def aaai21(tree: Path, work: Path, samples: str, timeout: float) -> tuple[float, dict[int, str]]:
    folder = work / "aaai21"
    wall = _run([sys.executable, "benchmarks/aaai21_table.py", "--folder", str(folder), "--run", "combined",
                 "--samples", samples, "--timeout", str(timeout), "--threads", "1", "--weights", str(WEIGHTS)],
                tree, work / "aaai21.log")
    with open(folder / "combined_all.csv") as f:
        verdicts = {int(r["index"]): r["verdict"] for r in csv.DictReader(f)}
    return wall, verdicts


def demo(tree: Path, work: Path) -> tuple[float, dict[str, float], dict[int, str]]:
    out = work / "demo"
    wall = _run([sys.executable, "-m", "qa_lirpa", "demo", "--out", str(out)], tree, work / "demo.log")
    summary = json.loads((out / "summary.json").read_text())
    with open(out / "results.csv") as f:
        verdicts = {int(r["instance"]): r["result"] for r in csv.DictReader(f)}
    return wall, dict(summary["stage_seconds"]), verdicts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="the commit to compare against (e.g. the previous one)")
    ap.add_argument("--samples", default="0:400", help="AAAI'21 samples (START:STOP)")
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    head_rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip())
    head_name = head_rev + ("+changes" if dirty else "")
    rows: dict[str, list] = {"base": [], "head": []}
    with tempfile.TemporaryDirectory(prefix="qa-compare-") as tmp:
        base_tree = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(base_tree), args.base], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            (base_tree / ".venv").symlink_to((ROOT / ".venv").resolve())
            trees = {"base": base_tree, "head": ROOT}
            for rep in range(args.repeat):
                for side in ("base", "head"):
                    work = Path(tmp) / f"{side}{rep}"
                    work.mkdir()
                    print(f"[{side} {rep + 1}/{args.repeat}] AAAI'21 {args.samples} ...", file=sys.stderr, flush=True)
                    a_wall, a_verdicts = aaai21(trees[side], work, args.samples, args.timeout)
                    d = (None, {}, {}) if args.skip_demo else demo(trees[side], work)
                    rows[side].append((a_wall, a_verdicts) + d)
                    print(f"  AAAI'21 {a_wall:.1f} s" + ("" if args.skip_demo else f", demo {d[0]:.1f} s"),
                          file=sys.stderr, flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, capture_output=True)
    lines = report(args, rows, head_name)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        atomic_write_text(args.out, text)
    return 0


def _ratio(head: float, base: float) -> str:
    return f"{head / base:.3f}" if base > 0 else "-"


def report(args, rows: dict[str, list], head_name: str) -> list[str]:
    base, head = rows["base"], rows["head"]
    a_base, a_head = min(r[0] for r in base), min(r[0] for r in head)
    vb, vh = base[0][1], head[0][1]
    diff = [i for i in sorted(set(vb) | set(vh)) if vb.get(i) != vh.get(i)]
    out = [f"# Same verdicts, same speed: {args.base} (base) vs {head_name} (head)", "",
           f"Command: `.venv/bin/python benchmarks/commit_compare.py --base {args.base} --samples {args.samples} "
           f"--timeout {args.timeout:g} --repeat {args.repeat}"
           + (" --skip-demo" if args.skip_demo else "") + "`", "",
           f"Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; machine: {platform.node()} "
           f"({os.cpu_count()} cores, shared), one run after the other in one process; wall times are the "
           f"minimum over {args.repeat} run(s) of each side.", "",
           "| run | base wall s | head wall s | head / base |", "|---|---:|---:|---:|",
           f"| AAAI'21 {args.samples}, default strategy, {args.timeout:g} s | {a_base:.1f} | {a_head:.1f} | "
           f"{_ratio(a_head, a_base)} |"]
    if not args.skip_demo:
        d_base, d_head = min(r[2] for r in base), min(r[2] for r in head)
        out.append(f"| `make demo` pipeline (train, export, verify, check) | {d_base:.1f} | {d_head:.1f} | "
                   f"{_ratio(d_head, d_base)} |")
        for stage in base[0][3]:
            sb = min(r[3].get(stage, 0.0) for r in base)
            sh = min(r[3].get(stage, 0.0) for r in head)
            out.append(f"| demo stage `{stage}` | {sb:.1f} | {sh:.1f} | {_ratio(sh, sb)} |")
    out += ["", f"AAAI'21 verdicts: {len(vb)} instances; differing: {len(diff)}"
            + (" (" + ", ".join(f"{i}: {vb.get(i)} -> {vh.get(i)}" for i in diff[:20]) + ")" if diff else "")]
    if not args.skip_demo:
        db, dh = base[0][4], head[0][4]
        ddiff = [i for i in sorted(set(db) | set(dh)) if db.get(i) != dh.get(i)]
        out.append(f"Demo verdicts: {len(db)} instances; differing: {len(ddiff)}"
                   + (" (" + ", ".join(f"{i}: {db.get(i)} -> {dh.get(i)}" for i in ddiff[:20]) + ")" if ddiff else ""))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
