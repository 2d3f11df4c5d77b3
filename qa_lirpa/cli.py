"""The ``qa-lirpa`` command. Each subcommand lives in its own module, which provides
``register(subparsers)``; that function adds a parser whose ``func(args) -> int`` runs it."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from . import __version__
from .base.errors import QaLirpaError, UserError

# subcommand modules, in the order they are listed in --help
SUBCOMMAND_MODULES = (
    "qa_lirpa.demo",
    "qa_lirpa.train.cli",
    "qa_lirpa.verify.cli",
    "qa_lirpa.benchfolder",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qa-lirpa",
        description="Quantized neural networks on auto_LiRPA: QA-IBP training and complete verification.")
    parser.add_argument("--version", action="version", version=f"qa-lirpa {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:     # not written yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``qa-lirpa``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (QaLirpaError, FileNotFoundError) as e:
        print(f"qa-lirpa {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qa-lirpa {args.command}: interrupted", file=sys.stderr)
        return 130


__all__ = ["SUBCOMMAND_MODULES", "UserError", "build_parser", "main"]
