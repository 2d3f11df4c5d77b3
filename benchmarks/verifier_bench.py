"""Benchmark of the complete verifier: ``certify`` on MNIST test images with this project's
verifier (``method: bab``) and with the QA-IBP paper's Algorithm 1 (``method: paper``: IBP only,
widest-dimension split, one box at a time, an attack on every open box; integer bisection), on the
same instances, for a time ratio. Decided verdicts of the two must agree (checked).

    .venv/bin/python benchmarks/verifier_bench.py --model runs/mnist/model.pt --eps 1 4 --samples 0:1000
    .venv/bin/python benchmarks/verifier_bench.py --aaai21-h5 ../shared/data/aaai21/mnist_mlp.h5 --eps 2 --samples 100:200

``--model`` is a qa-lirpa checkpoint (e.g. a QA-IBP-trained MNIST network) or an ONNX file;
``--aaai21-h5`` loads the AAAI'21 benchmark MLP (784-64-32, 6-bit) with ``qa_lirpa.aaai21``.
Nothing is trained here.
Writes per-sample CSVs and the table to ``--out-dir``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

from qa_lirpa.config import atomic_write_text
from qa_lirpa.train.datasets import load_dataset
from qa_lirpa.verify.certify import certify, parse_samples, summary_table, write_csv
from qa_lirpa.verify.config import VerifierConfig


def load(args: argparse.Namespace) -> tuple[nn.Module, str]:
    if args.aaai21_h5:
        from qa_lirpa.aaai21 import AAAI21ModelError, load_aaai21

        try:
            return load_aaai21(args.aaai21_h5, dtype=torch.float64), f"AAAI'21 MLP ({args.aaai21_h5})"
        except AAAI21ModelError as e:
            raise SystemExit(f"error: {e}") from None
    if not args.model or not Path(args.model).exists():
        raise SystemExit(f"error: model {args.model!r} not found: train one first (a QA-IBP MNIST network, "
                         "e.g. with qa-lirpa train) or pass --aaai21-h5 PATH; this script trains nothing")
    from qa_lirpa.cli import UserError
    from qa_lirpa.verify.cli import load_model

    try:
        return load_model(args.model, "cpu"), args.model
    except UserError as e:
        raise SystemExit(f"error: {e}") from None


def run(model, ds, indices, eps: float, method: str, timeout: float, device: str, quiet: bool,
        exact_fallback: str = "milp"):
    cfg = VerifierConfig(method=method, exact_fallback=exact_fallback)
    results, t0 = [], time.monotonic()
    for r in certify(model, ds.images, ds.labels, indices, eps, cfg, timeout, device):
        results.append(r)
        if not quiet:
            print(f"\r  {method} eps={eps:g}: {len(results)}/{len(indices)}", end="", file=sys.stderr, flush=True)
    if not quiet:
        print(file=sys.stderr)
    return results, time.monotonic() - t0


def compare(a, b) -> list[str]:
    """Samples where both methods decided and disagree (must be empty: both are sound)."""
    decided = {"robust", "falsified"}
    return [f"sample {x.index}: bab {x.verdict}, paper {y.verdict}" for x, y in zip(a, b)
            if x.verdict in decided and y.verdict in decided and x.verdict != y.verdict]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="qa-lirpa checkpoint or ONNX file")
    p.add_argument("--aaai21-h5", help="AAAI'21 MNIST MLP weights (Keras .h5) instead of --model")
    p.add_argument("--eps", type=float, nargs="+", default=[1.0, 4.0], help="pixel units (default 1 4)")
    p.add_argument("--samples", default="0:1000")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds per sample (default 20)")
    p.add_argument("--methods", nargs="+", default=["bab", "paper"], choices=["bab", "paper"])
    p.add_argument("--exact-fallback", default="milp", choices=["milp", "none"],
                   help="bab's exact MILP hand-over (default milp, the verifier's default; none: bab alone)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--out-dir", default="benchmarks/results/verifier")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, name = load(args)
    ds = load_dataset("mnist", "test", args.data_root)
    indices = parse_samples(args.samples, len(ds))
    out = Path(args.out_dir)
    lines = [f"# verifier benchmark: {name}, MNIST test {args.samples}, timeout {args.timeout:g} s/sample, "
             f"device {args.device}, threads {torch.get_num_threads()}", ""]
    for eps in args.eps:
        totals = {}
        per = {}
        for method in args.methods:
            res, wall = run(model, ds, indices, eps, method, args.timeout, args.device, args.quiet,
                            args.exact_fallback)
            per[method], totals[method] = res, wall
            write_csv(str(out / f"eps{eps:g}_{method}.csv"), res)
            lines.append(summary_table(res, f"## eps {eps:g}, method {method}: wall {wall:.1f} s"))
        if len(per) == 2:
            bad = compare(per["bab"], per["paper"])
            t_b, t_p = (sum(r.time_s for r in per[m]) for m in ("bab", "paper"))
            lines.append(f"eps {eps:g}: summed per-sample time bab {t_b:.2f} s, paper {t_p:.2f} s, "
                         f"ratio paper / bab {t_p / max(t_b, 1e-9):.2f} (wall incl. setup: "
                         f"{totals['bab']:.1f} s vs {totals['paper']:.1f} s)")
            lines.append("decided verdicts agree" if not bad else "DISAGREEMENT: " + "; ".join(bad))
            lines.append("")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    atomic_write_text(out / "summary.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
