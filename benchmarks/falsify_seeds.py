#!/usr/bin/env python
"""The root's greedy descent on the input grid (``qa_lirpa.verify.attack.LocalSearch``) alone, in
seeded runs on robustness properties: how often, and after how many CPU seconds, it finds a
counterexample, per variant of its settings. A search's time to its first violation is
heavy-tailed, so one run per property says little; this runs each property under many seeds.

    PYTHONPATH=. .venv/bin/python benchmarks/falsify_seeds.py \\
        --model benchmarks/results/models/mnist_8bit_eps4/checkpoint.pt --eps 4 --samples 707,3853 \\
        --seeds 0:20 --budget 3 --variant moves64:moves=64 --variant moves512:moves=512 \\
        --out benchmarks/results/falsify_seeds/eps4.md

Each run does what the verifier does once the root box stays open: the box's corners, centre and
32 random grid points plus PGD (``--pgd-steps`` x ``--pgd-restarts``) from the run's seed, then
the descent from the best two of them (its own random stream), in slices of 0.25 s, until a
violation that the exact semantics confirm or ``--budget`` CPU seconds (the PGD included). A
variant is ``NAME:moves=M`` (moves scored per step). One torch thread; CPU seconds, so runs side
by side do the same work. Nothing here decides a verdict.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_range(text: str, option: str) -> list[int]:
    """Comma-separated parts, each an index or a ``start:stop`` range (``parse_samples``'s syntax)."""
    from qa_lirpa.base.samples import parse_samples

    return [i for part in text.split(",") if part.strip() for i in parse_samples(part, option=option)]


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    over = {}
    for item in filter(None, rest.split(",")):
        k, _, v = item.partition("=")
        if k != "moves":
            raise SystemExit(f"falsify_seeds: variant {text!r}: unknown setting {k!r} (known: moves)")
        over[k] = int(v)
    return name, over


def properties(model_path: str, dataset: str, eps: int | None, samples: list[int]):
    """``(index, problem, lo, hi, ospec, lower, upper)`` of each correctly classified sample's
    robustness property (``certify``'s: ``eps`` pixel steps; None: the AAAI'21 rule
    ``1 + index // 100``)."""
    import numpy as np

    from qa_lirpa.train.datasets import load_dataset
    from qa_lirpa.verify import Verifier, VerifierConfig
    from qa_lirpa.verify.certify import pixel_unit, sample_property
    from qa_lirpa.verify.cli import load_model
    from qa_lirpa.verify.spec import OutputSpec

    model = load_model(model_path, "cpu")
    ds = load_dataset(dataset, "test")
    images = ds.images if ds.images.dim() == 4 else ds.images.unsqueeze(1)
    verifier = Verifier(model, VerifierConfig(device="cpu"), input_shape=tuple(images.shape[1:]), device="cpu")
    unit = pixel_unit(model)
    for i in samples:
        image = images[i]
        _, spec = sample_property(verifier, image, int(ds.labels[i]), eps if eps is not None else 1 + i // 100, unit)
        if spec is None:
            print(f"sample {i}: misclassified, skipped", flush=True)
            continue
        problem = verifier.problem(tuple(image.shape))
        lower, upper = np.asarray(spec.lower, np.float64), np.asarray(spec.upper, np.float64)
        root = problem.root(lower, upper)
        if root is None:
            print(f"sample {i}: no grid point in the box, skipped", flush=True)
            continue
        ospec = OutputSpec.from_disjuncts(spec.disjuncts, spec.n_outputs, problem.device)
        yield i, problem, root[0], root[1], ospec, lower, upper


def run_once(problem, lo, hi, ospec, lower, upper, seed: int, moves: int, budget: float,
             pgd_steps: int, pgd_restarts: int) -> tuple[float | None, float]:
    """One seeded run: (CPU seconds to a confirmed violation or None, best violation score)."""
    import torch

    from qa_lirpa.base.deadline import Deadline
    from qa_lirpa.verify import attack

    c0 = time.process_time()
    gen = torch.Generator().manual_seed(seed)
    pts = attack.box_points(problem, lo, hi, 32, gen)
    if pgd_steps and pgd_restarts:
        pts = torch.cat([pts, attack.pgd(problem, lo, hi, ospec, pgd_steps, pgd_restarts, gen, Deadline.never())])
    with torch.no_grad():
        v = attack.violation(problem.attack_forward(pts.to(torch.float64)), ospec)
    starts = pts[torch.argsort(v)[:2]]

    def confirm(points) -> bool:
        return problem.find_violation(points, lower, upper, ospec) is not None

    if bool(confirm(starts[:1])):
        return time.process_time() - c0, float(v.min())
    ls = attack.LocalSearch(problem, lo[0], hi[0], ospec, starts, torch.Generator().manual_seed(seed + 1),
                            confirm=confirm, candidates=moves)
    while not ls.done and time.process_time() - c0 < budget:
        ls.advance(Deadline.after(0.25), hard=Deadline.after(0.75))
    return (time.process_time() - c0 if ls.done else None), float(ls.best_v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--eps", type=int, default=None, help="pixel steps (default: 1 + index // 100)")
    ap.add_argument("--samples", required=True, help="indices: 707,3853 or 0:100")
    ap.add_argument("--seeds", default="0:20")
    ap.add_argument("--budget", type=float, default=3.0, help="CPU seconds per run")
    ap.add_argument("--pgd-steps", type=int, default=20)
    ap.add_argument("--pgd-restarts", type=int, default=8)
    ap.add_argument("--variant", action="append", default=[], help="NAME:moves=M (default: moves64:moves=64)")
    ap.add_argument("--out", default=None, help="markdown file for the tables")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    variants = [parse_variant(v) for v in (args.variant or ["moves64:moves=64"])]
    seeds = parse_range(args.seeds, "--seeds")
    rows = []                        # (sample, variant, CPU s to a find or None per seed, best scores)
    for i, problem, lo, hi, ospec, lower, upper in properties(args.model, args.dataset, args.eps,
                                                               parse_range(args.samples, "--samples")):
        for name, over in variants:
            times, bests = [], []
            for s in seeds:
                t, b = run_once(problem, lo, hi, ospec, lower, upper, s, over.get("moves", 64), args.budget,
                                args.pgd_steps, args.pgd_restarts)
                times.append(t)
                bests.append(b)
            found = [t for t in times if t is not None]
            rows.append((i, name, times, bests))
            med = f"{statistics.median(found):.2f}" if found else "-"
            print(f"sample {i} {name}: {len(found)}/{len(times)} found, median {med} s", flush=True)
    lines = [f"`falsify_seeds.py` on {args.model} ({args.dataset}), eps "
             f"{args.eps if args.eps is not None else '1 + index // 100'}, seeds {args.seeds}, "
             f"{args.budget:g} CPU s per run, PGD {args.pgd_steps} x {args.pgd_restarts}", "",
             "Command: `PYTHONPATH=. .venv/bin/python benchmarks/falsify_seeds.py "
             + " ".join(sys.argv[1:] if argv is None else argv) + "`", "",
             "| sample | variant | found / runs | median CPU s to a find | max CPU s to a find | "
             "median best score of the misses |", "|---|---|---|---|---|---|"]
    for i, name, times, bests in rows:
        found = [t for t in times if t is not None]
        misses = [b for b, t in zip(bests, times) if t is None]
        med = f"{statistics.median(found):.2f}" if found else "-"
        mx = f"{max(found):.2f}" if found else "-"
        miss = f"{statistics.median(misses):.4f}" if misses else "-"
        lines.append(f"| {i} | {name} | {len(found)} / {len(times)} | {med} | {mx} | {miss} |")
    lines += ["", "| variant | found / runs (all samples) |", "|---|---|"]
    for name, _ in variants:
        k = sum(sum(t is not None for t in r[2]) for r in rows if r[1] == name)
        n = sum(len(r[2]) for r in rows if r[1] == name)
        lines.append(f"| {name} | {k} / {n} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(out)
    return 0


if __name__ == "__main__":
    from qa_lirpa.base.errors import QaLirpaError

    try:
        sys.exit(main())
    except (QaLirpaError, OSError) as err:
        sys.exit(f"falsify_seeds: {err}")
