#!/usr/bin/env python
"""CP-SAT alone (the portfolio's exact procedure, :func:`qa_lirpa.exact.cpsat.solve_cpsat`) on
chosen robustness properties of a shipped MNIST model, under several option sets, side by side:
which options decide the hard images.

Each variant runs in its own process (``--procs``, default: all variants at once, one core each
on the 2-core box), the images one after the other, one CP-SAT worker, no LP tightening, no
presolve (the large-model settings), ``--timeout`` seconds each. Prints a markdown table
(decided per variant, then the time per image). Every ``sat`` comes with a counterexample that
``solve_cpsat`` has run through ``integer_forward``; every verdict is compared across variants and
a disagreement makes the exit status 1.

    PYTHONPATH=. .venv/bin/python benchmarks/cpsat_options.py \\
        --model benchmarks/results/models/mnist_8bit_eps4/checkpoint.pt --eps 4 \\
        --images 115,259,707 --variant lazy:eager_lp=false --variant eager:eager_lp=true --timeout 20

A variant is ``NAME:KEY=VALUE,...``: ``solve_cpsat`` keywords (``eager_lp``, ``hull_lines``,
``presolve``, ``threads``, ``objective``) or, prefixed with ``p.``, CP-SAT parameters (``p.linearization_level=1``).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEYWORDS = {"eager_lp": "bool", "hull_lines": "bool", "presolve": "bool", "objective": "bool", "threads": "int"}


def parse_variant(text: str) -> tuple[str, dict, dict]:
    """``(name, solve_cpsat keywords, CP-SAT parameters)`` of ``NAME:KEY=VALUE,...``."""
    name, _, rest = text.partition(":")
    kw, params = {}, {}
    for item in filter(None, rest.split(",")):
        key, sep, val = item.partition("=")
        if not sep:
            raise SystemExit(f"--variant {text!r}: {item!r} is not KEY=VALUE")
        if key.startswith("p."):
            params[key[2:]] = _number(val)
        elif key in KEYWORDS:
            kw[key] = val.lower() in ("1", "true", "on") if KEYWORDS[key] == "bool" else int(val)
        else:
            raise SystemExit(f"--variant {text!r}: unknown key {key!r} (one of {sorted(KEYWORDS)} or p.<param>)")
    return name, kw, params


def _number(val: str):
    low = val.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(val)
    except ValueError:
        return float(val)


def _run(args_dict: dict, variant: tuple, out) -> None:
    import torch

    torch.set_num_threads(1)
    name, kw, params = variant
    try:
        _images(args_dict, name, kw, params, out)
    except Exception as e:  # noqa: BLE001 - one line for this variant (exit status 1), the others go on
        print(f"cpsat_options: variant {name}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        raise SystemExit(1)
    finally:
        out.put((name, None, None, None, None))


def _images(args_dict: dict, name: str, kw: dict, params: dict, out) -> None:
    import numpy as np
    import torch

    from qa_lirpa.exact.cpsat import solve_cpsat
    from qa_lirpa.modelfile import load_model_file
    from qa_lirpa.train.datasets import load_dataset
    from qa_lirpa.verify import Verifier, VerifierConfig
    from qa_lirpa.verify.certify import argmax_smallest, pixel_unit
    from qa_lirpa.verify.robustness import robustness_spec

    eps = args_dict["eps"]
    model = load_model_file(args_dict["model"], "cpu")
    ds = load_dataset("mnist", "test")
    unit = pixel_unit(model)
    v = Verifier(model, VerifierConfig(device="cpu"), input_shape=tuple(ds.images.shape[1:]), device="cpu")
    for i in args_dict["images"]:
        image, label = ds.images[i], int(ds.labels[i])
        x = image.to(torch.float64).unsqueeze(0) * unit
        output = v.problem(tuple(image.shape)).exact_output(x)
        if int(argmax_smallest(output.dequantize().reshape(1, -1))[0]) != label:
            out.put((name, i, "MISCLASSIFIED", 0.0, 0))
            continue
        p = image.to(torch.float64).reshape(-1).numpy()
        lower, upper = np.maximum(p - eps, 0.0) * unit, np.minimum(p + eps, 255.0) * unit
        spec = robustness_spec(output, label, lower, upper)
        options = {"tighten": False, "presolve": False, **kw}
        t0 = time.perf_counter()
        r = solve_cpsat(model, spec, timeout=args_dict["timeout"], input_shape=(1,) + tuple(image.shape),
                        params=params, **options)
        out.put((name, i, r.verdict.name, time.perf_counter() - t0, int(r.stats.get("branches", 0))))


def table(names: list[str], images: list[int], got: dict, timeout: float) -> tuple[str, int]:
    lines = ["| variant | decided | unsat | sat | timeout |", "|---|---:|---:|---:|---:|"]
    for n in names:
        verdicts = [got[(n, i)][0] for i in images if (n, i) in got]
        dec = sum(v in ("UNSAT", "SAT") for v in verdicts)
        lines.append(f"| `{n}` | {dec} / {len(images)} | {verdicts.count('UNSAT')} | {verdicts.count('SAT')} "
                     f"| {len(verdicts) - dec} |")
    lines += ["", "| image | " + " | ".join(f"`{n}`" for n in names) + " |",
              "|---|" + "---:|" * len(names)]
    bad = 0
    for i in images:
        cells, decided = [], set()
        for n in names:
            verdict, t, _ = got.get((n, i), ("-", float("nan"), 0))
            if verdict in ("UNSAT", "SAT"):
                decided.add(verdict)
                cells.append(f"{verdict.lower()} {t:.1f} s")
            else:
                cells.append(f"timeout ({timeout:g} s)" if verdict == "TIMEOUT" else verdict.lower())
        if len(decided) > 1:
            bad += 1
            cells.append("**DISAGREE**")
        lines.append(f"| {i} | " + " | ".join(cells) + " |")
    return "\n".join(lines), bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--eps", type=float, required=True, help="radius in pixel levels")
    ap.add_argument("--images", required=True, help="comma-separated test-set indices")
    ap.add_argument("--variant", action="append", required=True, help="NAME:KEY=VALUE,... (see the module doc)")
    ap.add_argument("--timeout", type=float, default=20.0)
    args = ap.parse_args(argv)
    if not Path(args.model).is_file():
        raise SystemExit(f"cpsat_options: {args.model}: no such model file")
    try:
        images = [int(s) for s in args.images.split(",") if s]
    except ValueError:
        raise SystemExit(f"cpsat_options: --images {args.images!r}: not a comma-separated list of indices") from None
    variants = [parse_variant(v) for v in args.variant]
    names = [v[0] for v in variants]
    if len(set(names)) != len(names):
        raise SystemExit("variant names must differ")
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    cfg = {"model": args.model, "eps": args.eps, "images": images, "timeout": args.timeout}
    procs = [ctx.Process(target=_run, args=(cfg, v, out)) for v in variants]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    got, running = {}, len(procs)
    while running:
        name, i, verdict, t, branches = out.get()
        if i is None:
            running -= 1
            continue
        got[(name, i)] = (verdict, t, branches)
        print(json.dumps({"variant": name, "image": i, "verdict": verdict, "s": round(t, 2), "branches": branches}),
              file=sys.stderr, flush=True)
    for p in procs:
        p.join()
    text, bad = table(names, images, got, args.timeout)
    print(f"CP-SAT alone, one worker, no LP tightening, no presolve; {args.timeout:g} s per image; "
          f"the variants in {len(procs)} processes side by side; {time.perf_counter() - t0:.0f} s wall.\n")
    print("Command: `PYTHONPATH=. .venv/bin/python benchmarks/cpsat_options.py " + " ".join(sys.argv[1:]) + "`\n")
    print(text)
    if bad:
        print(f"\n{bad} image(s) with disagreeing verdicts", file=sys.stderr)
    return 1 if bad or any(p.exitcode for p in procs) else 0


if __name__ == "__main__":
    sys.exit(main())
