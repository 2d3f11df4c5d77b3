"""``qa-lirpa verify`` and ``qa-lirpa certify``.

verify: one model, one VNN-LIB property; prints the verdict word (sat, unsat, timeout, unknown) on
the first line, then a summary; exit status 0 for every verdict, 2 for bad input.
certify: local robustness of dataset samples (see :mod:`qa_lirpa.verify.certify`), serially or on Ray
(``--workers N``, ``--cluster ADDRESS``; :mod:`qa_lirpa.campaign`).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from torch import nn

from ..base.device import resolve_device
from ..campaign import add_campaign_arguments
from ..base.errors import UserError
from ..base.files import atomic_write_text
from ..base.vnnlib import read_vnnlib
from ..config import load_config
from ..modelfile import load_model_file
from .bab import Verifier
from .certify import certify_command
from .config import VerifierConfig
from .result import Verdict, VerifyResult


def load_model(path: str, device: str = "cpu") -> nn.Module:
    """A QNN from an ONNX file or a checkpoint (:func:`qa_lirpa.modelfile.load_model_file`)."""
    return load_model_file(path, device)


def load_verifier_config(source: str | None, overrides: list[str]) -> VerifierConfig:
    """``--config`` (shipped name or path) and ``--set key=value`` overrides."""
    try:
        return load_config(VerifierConfig, source, overrides)
    except ValueError as e:  # ConfigError is a ValueError too; keep its text
        raise UserError(str(e)) from None


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="qa-lirpa checkpoint, .onnx file or AAAI'21 Keras .h5 weights")
    p.add_argument("--config", default=None, help="verifier YAML (shipped name, e.g. verify_paper, or path)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for torch (default: torch's choice; 1 is faster on a busy machine)")


def register(subparsers) -> None:
    p = subparsers.add_parser("verify", help="verify a VNN-LIB property of a quantized network",
                              description="Complete verification on the integer input grid. Prints "
                                          "sat / unsat / timeout / unknown on the first line.")
    _add_common(p)
    p.add_argument("--vnnlib", required=True, help="VNN-LIB 1.0 property file (.vnnlib or .vnnlib.gz)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("--results", default=None, help="also write a VNN-COMP result file here")
    p.set_defaults(func=run_verify)
    c = subparsers.add_parser("certify", help="certify local robustness of dataset samples",
                              description="Verify L-inf robustness (eps in pixel units on 0..255) of test "
                                          "samples; prints a table and writes a CSV of per-sample results.")
    _add_common(c)
    c.add_argument("--dataset", default="mnist", help="mnist | fashion-mnist | cifar10 | synthetic")
    c.add_argument("--data-root", default=None, help="folder with the dataset's standard files")
    c.add_argument("--eps", type=float, required=True, help="perturbation radius in pixel units")
    c.add_argument("--samples", default="0:100", help="slice of test indices, e.g. 0:1000 (default 0:100)")
    c.add_argument("--timeout", type=float, default=20.0, help="seconds per sample (default 20)")
    c.add_argument("--out", default="certify_results.csv", help="per-sample CSV (default ./certify_results.csv)")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_campaign_arguments(c)
    c.set_defaults(func=run_certify)


def _device(name: str, threads: int = 0) -> str:
    if threads < 0:
        raise UserError("--threads must be >= 0")
    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        return str(resolve_device(name))
    except (ValueError, RuntimeError) as e:
        raise UserError(str(e)) from None


def run_verify(args: argparse.Namespace) -> int:
    cfg = load_verifier_config(args.config, args.set)
    if not args.timeout > 0:
        raise UserError("--timeout must be positive")
    device = _device(args.device, args.threads)
    specs = read_vnnlib(args.vnnlib)
    model = load_model(args.model, device)
    try:
        verifier = Verifier(model, cfg, device=device)
        result = verifier.verify(specs, timeout=args.timeout)
    except (ValueError, TypeError, OverflowError) as e:
        raise UserError(f"{args.vnnlib}: {e}") from None
    print(result.verdict.value)
    print(result.summary())
    if result.counterexample is not None:
        print("counterexample: " + np.array2string(result.counterexample.reshape(-1), precision=6, threshold=50))
    if args.results:
        write_result_file(args.results, result)
    return 0


def format_result(result: VerifyResult) -> str:
    """VNN-COMP result text: the verdict word and, for sat, ``((X_i v) ... (Y_j v))``."""
    lines = [result.verdict.value]
    if result.verdict is Verdict.SAT and result.counterexample is not None and result.outputs is not None:
        xs = [f"(X_{i} {float(v)!r})" for i, v in enumerate(result.counterexample.reshape(-1))]
        ys = [f"(Y_{j} {float(v)!r})" for j, v in enumerate(result.outputs.reshape(-1))]
        items = xs + ys
        lines.append("(" + "\n ".join(items) + ")")
    return "\n".join(lines) + "\n"


def write_result_file(path: str, result: VerifyResult) -> None:
    atomic_write_text(Path(path), format_result(result))


def run_certify(args: argparse.Namespace) -> int:
    cfg = load_verifier_config(args.config, args.set)
    return certify_command(args, cfg, load_model, _device(args.device, args.threads))


__all__ = ["register", "load_model", "run_verify", "run_certify", "format_result", "write_result_file"]
