"""One loader for the benchmark scripts the tests exercise (``benchmarks/*.py`` are scripts, not
a package)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(relpath: str, name: str):
    """The module of ``benchmarks/<relpath>`` under ``name``, loaded once per session (kept in
    ``sys.modules``: dataclasses look their module up by name)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / relpath)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[name]
        raise
    return mod
