#!/usr/bin/env python
"""A network of the AAAI'21 benchmark family that we train ourselves (a stand-in for the held-back
ones), then the verifier on its first 300 test samples at the benchmark's radii.

The AAAI'21 benchmark's authors publish a 784-64-32 MLP for MNIST and one for Fashion-MNIST with
the fixed-point scheme of :mod:`qa_lirpa.aaai21`; only the MNIST file is here. ``--train`` trains
the same architecture with that exact quantization (straight-through fake quantization, weights
and biases clipped to their ranges, cross-entropy over all 32 outputs, Adam; deterministic given
``--seed`` on one CPU thread) on ``--dataset`` and writes its weights as Keras-layout HDF5
(``model_weights/quantized_dense{,_1}/.../kernel:0, bias:0``), which ``load_aaai21`` and every
``--model`` option read. Then, per block of 100 samples (eps 1, 2, 3 as in the benchmark's first
three blocks), ``benchmarks/certify_full.py`` with the given variants; the table sums the blocks:

    PYTHONPATH=. .venv/bin/python benchmarks/aaai21_family.py --train --dataset fashion-mnist \\
        --weights benchmarks/results/models/aaai21_fashion/fashion_mlp.h5 \\
        --out-dir benchmarks/results/aaai21_family/fashion --variant default:

Fashion-MNIST comes from the Debian package ``dataset-fashion-mnist`` (see the environment notes).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: the benchmark's radius of each block of 100 test samples (the first three blocks of qa_lirpa.aaai21)
BLOCKS = ((1, "0:100"), (2, "100:200"), (3, "200:300"))


def train(dataset: str, out: Path, epochs: int, seed: int) -> dict:
    """Train the proxy network and write its HDF5 weights to ``out``; returns its exact test
    accuracy (``integer_forward`` semantics: argmax over the 32 outputs, ties to the smallest)."""
    import h5py
    import numpy as np
    import torch
    from torch import nn

    from qa_lirpa.aaai21 import (BIAS_SPEC, HIDDEN_SPEC, INPUT_OUTPUT_SCALE, INPUT_SPEC, OUTPUT_SPEC,
                                 WEIGHT_SPEC, load_aaai21)
    from qa_lirpa.nn import QuantAct, QuantInput, QuantLinear
    from qa_lirpa.train.datasets import load_dataset
    from qa_lirpa.verify.certify import argmax_smallest

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    tr, te = load_dataset(dataset, "train"), load_dataset(dataset, "test")
    x = torch.as_tensor(np.asarray(tr.images)).reshape(len(tr.labels), -1).float()
    y = torch.as_tensor(np.asarray(tr.labels)).long()
    fc1 = QuantLinear(x.shape[1], 64, WEIGHT_SPEC, BIAS_SPEC)
    fc2 = QuantLinear(64, 32, WEIGHT_SPEC, BIAS_SPEC)
    with torch.no_grad():
        fc1.weight.normal_(0, (2 / x.shape[1]) ** 0.5)
        fc1.bias.fill_(0.1)
        fc2.weight.normal_(0, (2 / 64) ** 0.5)
        fc2.bias.zero_()
    net = nn.Sequential(QuantInput(INPUT_SPEC, output_scale=INPUT_OUTPUT_SCALE), nn.Flatten(), fc1,
                        QuantAct(HIDDEN_SPEC), fc2, QuantAct(OUTPUT_SPEC))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for epoch in range(epochs):
        perm = torch.randperm(len(x))
        net.train()
        total = 0.0
        for k in range(0, len(x), 128):
            idx = perm[k:k + 128]
            # the outputs lie in [-2, 2) (6-bit, f=4): a temperature of 2 for the loss
            loss = nn.functional.cross_entropy(net(x[idx]) * 2, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            with torch.no_grad():
                for layer in (fc1, fc2):
                    layer.weight.clamp_(-1, 31 / 32)
                    layer.bias.clamp_(-2, 31 / 16)
        print(f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}", file=sys.stderr, flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with h5py.File(tmp, "w") as f:
        for name, layer in (("quantized_dense", fc1), ("quantized_dense_1", fc2)):
            g = f.create_group(f"model_weights/{name}/{name}")
            g["kernel:0"] = layer.weight.detach().numpy().T.astype(np.float32)
            g["bias:0"] = layer.bias.detach().numpy().astype(np.float32)
    tmp.replace(out)
    model = load_aaai21(out, dtype=torch.float64)
    xt = torch.as_tensor(np.asarray(te.images)).to(torch.float64)
    with torch.no_grad():
        pred = argmax_smallest(model(xt).reshape(len(te.labels), -1))
    right = (pred == torch.as_tensor(np.asarray(te.labels))).to(torch.float64)
    return {"dataset": dataset, "epochs": epochs, "seed": seed, "test_accuracy": float(right.mean()),
            "accuracy_first_300": float(right[:300].mean())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, required=True, help="the network's HDF5 file (written by --train)")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--train", action="store_true", help="train the network first (overwrites --weights)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=None, help="run the verifier; its results go here")
    p.add_argument("--variant", action="append", default=[], help="certify_full.py's NAME:KEY=VALUE,...")
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--procs", type=int, default=2)
    args = p.parse_args(argv)
    if args.train:
        from qa_lirpa.base.errors import QaLirpaError

        try:
            info = train(args.dataset, args.weights, args.epochs, args.seed)
        except (QaLirpaError, OSError) as e:
            raise SystemExit(f"aaai21_family: {e}") from None
        args.weights.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
        print(json.dumps(info))
    elif not args.weights.is_file():
        raise SystemExit(f"aaai21_family: {args.weights}: no such file (train it with --train)")
    if args.out_dir is None:
        return 0
    import certify_full

    variants = args.variant or ["default:"]
    t0 = time.monotonic()
    for eps, samples in BLOCKS:
        cmd = ["--model", str(args.weights), "--dataset", args.dataset, "--eps", str(eps), "--samples", samples,
               "--timeout", str(args.timeout), "--procs", str(args.procs), "--out-dir", str(args.out_dir / f"eps{eps}")]
        for v in variants:
            cmd += ["--variant", v]
        if certify_full.main(cmd):
            return 1
    print(table(args, [certify_full.parse_variant(v)[0] for v in variants], time.monotonic() - t0))
    return 0


def table(args, names: list[str], wall: float) -> str:
    """The blocks' results side by side, per variant, and the undecided samples."""
    import certify_full

    lines = [f"{args.weights} ({args.dataset}), samples 0-299 at eps 1/2/3 by block of 100, "
             f"{args.timeout:g} s each, {args.procs} worker processes, {wall:.0f} s wall in all", "",
             "| variant | eps | robust | falsified | timeout | misclassified | median s | max s |",
             "|---|---|---|---|---|---|---|---|"]
    undecided = {}
    for name in names:
        for eps, _ in BLOCKS:
            res = certify_full.read(args.out_dir / f"eps{eps}" / f"{name}.csv")
            s = certify_full.summary(res, 0.0)
            lines.append(f"| {name} | {eps} | {s['robust']} | {s['falsified']} | {s['timeout']} | "
                         f"{s['misclassified']} | {s['median']:.2f} | {s['max']:.2f} |")
            undecided.setdefault(name, []).extend(i for i in sorted(res) if res[i][0] in ("timeout", "unknown"))
    for name, idx in undecided.items():
        lines.append(f"\n{name}: {len(idx)} undecided: " + (" ".join(map(str, idx)) or "none"))
    text = "\n".join(lines) + "\n"
    (args.out_dir / "summary.md").write_text(text)
    return text


if __name__ == "__main__":
    sys.exit(main())
