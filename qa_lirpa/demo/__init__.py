"""``qa-lirpa demo``: the main job end to end (see :mod:`.pipeline`), and with ``--bounds`` the
small bounds demo (see :mod:`.bounds`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..base.errors import UserError
from ..base.samples import parse_samples
from .bounds import run_bounds_demo
from .pipeline import run_pipeline
from .run import DemoOptions

EPILOG = """\
without --bounds: train a small MNIST QNN with QA-IBP (qa_lirpa/configs/demo.yaml), export it to
ONNX, write a VNN-COMP folder for the first test images at the training eps, verify every instance
with run_instance (the code behind vnncomp_configs/run_instance.sh), check every counterexample in
onnxruntime, print the table and write OUT/results.md, results.csv, summary.json and
verification.png. A finished training run in OUT/train with the same config is reused."""


def _samples(text: str) -> range:
    """``--samples``: N (the first N test images) or START:STOP[:STEP]."""
    return parse_samples(text, bare="count")


def options(a: argparse.Namespace) -> DemoOptions:
    """The pipeline's options from the command line (the flags become training-config overrides)."""
    if a.timeout <= 0:
        raise UserError(f"--timeout must be > 0, got {a.timeout:g}")
    overrides = []
    for key, value in (("schedule.epochs", a.epochs), ("data.train_subset", a.train_subset),
                       ("schedule.eps", a.eps), ("seed", a.seed)):
        if value is not None:
            overrides.append(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}")
    return DemoOptions(out=Path(a.out), config=a.config, overrides=overrides + list(a.overrides),
                       samples=_samples(a.samples), timeout=a.timeout, category=a.category,
                       retrain=a.retrain, via_script=a.via_script, script_checks=a.script_checks)


def _run(a: argparse.Namespace) -> int:
    if a.bounds:
        eps = 3 if a.eps is None else a.eps
        if eps != int(eps) or eps < 0:
            raise UserError(f"--bounds needs a whole number of pixels for --eps, got {eps:g}")
        return 0 if run_bounds_demo(0 if a.seed is None else a.seed, int(eps)) else 1
    return run_pipeline(options(a))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job on the built-in default: train, export, verify",
                       description="Train a QNN with QA-IBP, export ONNX, verify a VNN-COMP folder.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--config", default="demo", help="training config, shipped name or YAML (default demo)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training-config key (repeatable), as in qa-lirpa train")
    p.add_argument("--epochs", type=int, help="training epochs (default: the config's)")
    p.add_argument("--train-subset", type=int, help="train on the first N training images (0: all)")
    p.add_argument("--eps", type=float, default=None,
                   help="training and verification eps in pixels (default: the config's, 2); with --bounds "
                        "the box half-width (default 3)")
    p.add_argument("--samples", default="100", help="test images: N (the first N) or START:END (default 100)")
    p.add_argument("--timeout", type=float, default=10.0, help="per-instance timeout in seconds (default 10)")
    p.add_argument("--category", default="qnn_mnist", help="VNN-COMP category (vnncomp_configs/<category>.yaml)")
    p.add_argument("--retrain", action="store_true", help="train afresh even if OUT/train holds the run")
    p.add_argument("--via-script", action="store_true",
                   help="run vnncomp_configs/run_instance.sh once per instance (a new process each, ~3 s "
                        "start-up) instead of run_instance in this process")
    p.add_argument("--script-checks", type=int, default=3, metavar="N",
                   help="re-run N instances (sat first) through run_instance.sh as a cross-check (default 3)")
    p.add_argument("--seed", type=int, default=None, help="training seed (--bounds: the network's, default 0)")
    p.add_argument("--bounds", action="store_true",
                   help="instead: IBP and CROWN bounds through a small QNN checked against enumeration")
    p.set_defaults(func=_run)


__all__ = ["run_bounds_demo", "run_pipeline", "DemoOptions", "register", "options"]
