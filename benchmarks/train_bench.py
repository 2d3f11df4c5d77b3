"""QA-IBP training benchmark on MNIST (8-bit): accuracy after a time budget, and step costs.

Subcommands (run from the repository root with the project's Python):

  cost   time one training step of the mnist_8bit model (batch from the config) for: plain
         quantization-aware training; IBP through auto_LiRPA; the same IBP written by hand in torch;
         the full QA-IBP step (qaibp loss with the width regulariser); CROWN-IBP. Steps are
         interleaved round-robin and the median is reported (the machine may be shared).
         -> benchmarks/results/train_step_cost.json
  train  `qa-lirpa train mnist_8bit_eps{EPS}` with a wall-clock budget (schedule.max_minutes),
         into benchmarks/results/models/mnist_8bit_eps{EPS}/ (checkpoint, metrics, curves,
         final.json with clean and IBP-certified accuracy on the full test set);
         log in benchmarks/results/train_mnist_eps{EPS}.log
  table  collect both into benchmarks/results/train_mnist.md

Example:
  .venv/bin/python benchmarks/train_bench.py cost
  nohup .venv/bin/python benchmarks/train_bench.py train --eps 1 --time-budget-min 20 &
  .venv/bin/python benchmarks/train_bench.py table
"""
from __future__ import annotations

import os

# With the default (active) OpenMP wait policy, 2 torch threads on a 2-core machine shared with
# other processes run up to 10x slower; this must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def _step_functions(cfg, x, y, eps):
    """name -> (model, step()) with separate model copies and optimisers."""
    import copy

    import torch

    from qa_lirpa.train.bounds import MarginBounds, torch_ibp_margins
    from qa_lirpa.train.losses import crown_ibp_loss, gowal_loss, plain_loss, qaibp_loss
    from qa_lirpa.train.trainer import make_model

    torch.manual_seed(0)
    base = make_model(cfg, tuple(x.shape[1:]), 10)
    steps = {}

    def make(name, loss_fn, bounds=False):
        model = copy.deepcopy(base)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.schedule.lr, weight_decay=cfg.schedule.weight_decay)
        mb = MarginBounds(model, x, 10) if bounds else None

        def step():
            loss = loss_fn(model, mb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        steps[name] = step

    make("plain QAT", lambda m, mb: plain_loss(m(x), y)[0])
    make("IBP, hand-written torch", lambda m, mb: gowal_loss(m(x), y, torch_ibp_margins(m, x, y, eps, 10), 0.5)[0])
    make("IBP, auto_LiRPA", lambda m, mb: gowal_loss(m(x), y, mb.lower(x, y, eps), 0.5)[0], bounds=True)

    def qaibp(m, mb):
        lb = mb.lower(x, y, eps)
        return qaibp_loss(m(x), y, lb, mb.hidden_widths(), 0.5, 0.001, 0.2)[0]
    make("QA-IBP (qaibp loss), auto_LiRPA", qaibp, bounds=True)

    def crown(m, mb):
        clb, ilb = mb.lower(x, y, eps, "CROWN-IBP")
        return crown_ibp_loss(m(x), y, clb, ilb, 0.5, 1.0)[0]
    make("CROWN-IBP, auto_LiRPA", crown, bounds=True)
    return steps


def cmd_cost(args) -> int:
    import torch

    from qa_lirpa.train.cli import load_train_config
    from qa_lirpa.train.datasets import load_dataset
    from qa_lirpa.train.trainer import set_threads

    cfg = load_train_config(args.config, [f"schedule.eps={args.eps}"], "unused")
    set_threads(cfg.threads)
    ds = load_dataset("mnist", "train")
    b = cfg.schedule.batch_size
    x, y = ds.images[:b].float(), ds.labels[:b]
    eps = args.eps + cfg.schedule.eps_train_extra
    steps = _step_functions(cfg, x, y, eps)
    times = {k: [] for k in steps}
    for r in range(args.warmup + args.steps):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            if r >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    plain, hand = med["plain QAT"], med["IBP, hand-written torch"]
    rows = [{"step": k, "median_ms": 1000 * v, "min_ms": 1000 * min(times[k]),
             "ratio_to_plain": v / plain, "ratio_to_torch_ibp": v / hand} for k, v in med.items()]
    out = {"config": args.config, "model": cfg.model.arch, "bits": cfg.model.bits, "batch_size": b,
           "eps_train": eps, "threads": torch.get_num_threads(), "steps": args.steps,
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
           "load_average": os.getloadavg(), "rows": rows,
           "command": "benchmarks/train_bench.py cost " + " ".join(sys.argv[2:])}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "train_step_cost.json").write_text(json.dumps(out, indent=2) + "\n")
    for r in rows:
        print(f"{r['step']:36s} {r['median_ms']:8.1f} ms  x{r['ratio_to_plain']:5.2f} plain  "
              f"x{r['ratio_to_torch_ibp']:5.2f} hand-written IBP")
    return 0


def cmd_train(args) -> int:
    name = f"mnist_8bit_eps{args.eps}"
    out = RESULTS / "models" / name
    cmd = [sys.executable, "-m", "qa_lirpa", "train", name, "--out-dir", str(out.relative_to(ROOT)), "--no-progress",
           "--set", f"schedule.max_minutes={args.time_budget_min}"] + [a for s in args.set for a in ("--set", s)]
    if args.overwrite:
        cmd.append("--overwrite")
    log = RESULTS / f"train_mnist_eps{args.eps}.log"
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        f.write("$ " + " ".join(cmd[1:]) + "\n")
        f.flush()
        t0 = time.time()
        code = subprocess.call(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ))
        f.write(f"exit status {code}, wall {time.time() - t0:.0f} s, load average at end {os.getloadavg()}\n")
    return code


def _read_run(eps: int) -> dict | None:
    from qa_lirpa.train.records import read_metrics_csv

    d = RESULTS / "models" / f"mnist_8bit_eps{eps}"
    if not (d / "final.json").exists():
        return None
    final = json.loads((d / "final.json").read_text())
    rows = read_metrics_csv(d / "metrics.csv")
    ep = [r["epoch_seconds"] for r in rows[1:] if r["epoch_seconds"]]     # after the warm-up epoch
    import yaml

    cfg = yaml.safe_load((d / "config.yaml").read_text())
    return {"final": final, "epoch_train_s": statistics.median(ep) if ep else float("nan"),
            "cfg": cfg, "rows": rows, "size": (d / "checkpoint.pt").stat().st_size}


def cmd_table(args) -> int:
    lines = ["# QA-IBP training on MNIST, 8-bit (benchmarks/train_bench.py)", ""]
    lines += ["Machine: 2 CPU cores shared with other jobs (load average ~3.5-5 throughout; see the logs),",
              "torch threads 2, OMP_WAIT_POLICY=PASSIVE. Accuracy on the full MNIST test set (10,000): clean",
              "in the exact integer semantics; IBP-certified = the IBP lower bound of every margin z_y - z_k",
              "is > 0 over the box [x - eps, x + eps] clipped to [0, 255] (float64, sound); PGD = no",
              "counterexample found by PGD (10 steps, 1 restart; candidates checked exactly).",
              "Budget: each run was capped at 20 min wall clock (schedule.max_minutes=20) instead of the",
              "issue's 1 h (session time); the configured 30-epoch schedule finished inside the cap, so the",
              "cap did not cut either run. Epoch times vary with the machine's load.", ""]
    lines += ["| eps | model | loss | epochs | training (min) | run wall incl. eval (min) "
              "| s/epoch (median, training only) | clean % | IBP-certified % | PGD % |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for eps in (1, 4):
        r = _read_run(eps)
        if r is None:
            lines.append(f"| {eps} | (not run) | | | | | | | | |")
            continue
        f, c = r["final"], r["cfg"]
        pgd = f"{100 * f['pgd_acc']:.2f}" if "pgd_acc" in f else "-"
        lines.append(f"| {eps} | {c['model']['arch']} {c['model']['bits']}-bit | {c['loss']['kind']} | "
                     f"{f['epochs_done']}/{f['epochs']} | {f['train_seconds'] / 60:.1f} | "
                     f"{f.get('wall_seconds', float('nan')) / 60:.1f} | "
                     f"{r['epoch_train_s']:.1f} | {100 * f['clean_acc']:.2f} | {100 * f['cert_acc']:.2f} | {pgd} |")
    lines += ["", "Reference: the official QA-IBP code's only recorded figure is 97.26% clean and 86.80% verified",
              "(complete verification, 8.95% timeouts) on the MNIST test set after days of GPU training",
              "(model and eps not stated). IBP-certified is a lower bound of verified robustness.", ""]
    cost = RESULTS / "train_step_cost.json"
    if cost.exists():
        c = json.loads(cost.read_text())
        lines += [f"## Cost of one training step ({c['model']}, {c['bits']}-bit, batch {c['batch_size']}, "
                  f"train eps {c['eps_train']:g}, {c['threads']} threads, median of {c['steps']})", "",
                  "| step | median ms | x plain QAT | x hand-written torch IBP |", "|---|---|---|---|"]
        for row in c["rows"]:
            lines.append(f"| {row['step']} | {row['median_ms']:.1f} | {row['ratio_to_plain']:.2f} | "
                         f"{row['ratio_to_torch_ibp']:.2f} |")
        lines += ["", f"Load average during the measurement: {', '.join(f'{v:.2f}' for v in c['load_average'])}.",
                  f"Command: `.venv/bin/python {c['command']}`", ""]
    lines += ["Commands:", "```",
              ".venv/bin/python benchmarks/train_bench.py cost",
              "nohup .venv/bin/python benchmarks/train_bench.py train --eps 1 --time-budget-min 20 &",
              "nohup .venv/bin/python benchmarks/train_bench.py train --eps 4 --time-budget-min 20 &   # after eps 1",
              ".venv/bin/python benchmarks/train_bench.py table", "```",
              "(`train` runs `python -m qa_lirpa train mnist_8bit_eps{1,4} --out-dir "
              "benchmarks/results/models/mnist_8bit_eps{1,4} --no-progress --set schedule.max_minutes=20`.)", ""]
    (RESULTS / "train_mnist.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cost")
    c.add_argument("--config", default="mnist_8bit")
    c.add_argument("--eps", type=float, default=1.0)
    c.add_argument("--steps", type=int, default=20)
    c.add_argument("--warmup", type=int, default=3)
    t = sub.add_parser("train")
    t.add_argument("--eps", type=int, choices=[1, 4], required=True)
    t.add_argument("--time-budget-min", type=float, default=20.0)
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--overwrite", action="store_true")
    sub.add_parser("table")
    args = p.parse_args(argv)
    return {"cost": cmd_cost, "train": cmd_train, "table": cmd_table}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
