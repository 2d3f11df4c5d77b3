"""The ground floor (``qa_lirpa.base``, issue 12): it imports nothing of ours above it, the exact
backends do not import the verifier, every project error derives from QaLirpaError, and the
shared pieces (sample ranges, atomic writes, devices, deadlines) behave."""
from __future__ import annotations

import ast
import importlib
import inspect
import os
import pkgutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import qa_lirpa
from qa_lirpa.base.errors import QaLirpaError, UserError
from qa_lirpa.base.samples import parse_samples

PACKAGE = Path(qa_lirpa.__file__).resolve().parent
#: modules whose optional dependencies may be missing; skipped when their import fails on that
OPTIONAL = ("onnx", "onnxruntime", "ortools", "highspy", "auto_LiRPA")


def _imported_modules(path: Path, package: str) -> set[str]:
    """The absolute names of the modules ``path`` imports anywhere (top level and function bodies)."""
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)
    return names


def test_base_imports_nothing_of_ours_above_it():
    for path in sorted((PACKAGE / "base").glob("*.py")):
        ours = {m for m in _imported_modules(path, "qa_lirpa.base") if m == "qa_lirpa" or m.startswith("qa_lirpa.")}
        above = {m for m in ours if not m.startswith("qa_lirpa.base")}
        assert not above, f"{path.name} imports {sorted(above)}"


def test_base_modules_import_alone():
    """Each base module imports in a fresh process; qa_lirpa's own __init__ (which imports nn) is
    the only thing of ours above the floor that comes with it."""
    names = sorted(f"qa_lirpa.base.{m.name}" for m in pkgutil.iter_modules([str(PACKAGE / "base")]))
    code = ("import sys\n"
            f"for n in {names!r}: __import__(n)\n"
            "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('qa_lirpa'))))\n")
    env = dict(os.environ, PYTHONPATH=str(PACKAGE.parent))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    loaded = set(out.split())
    assert set(names) <= loaded
    # qa_lirpa/__init__ imports nn (with the graph it builds on) and quant; nothing else may come along
    allowed = ("qa_lirpa.base", "qa_lirpa.graph", "qa_lirpa.nn", "qa_lirpa.quant")
    extra = {m for m in loaded if m != "qa_lirpa" and not m.startswith(allowed)}
    assert not extra, sorted(extra)


def test_exact_does_not_import_verify():
    bad = {}
    for path in sorted((PACKAGE / "exact").glob("*.py")):
        found = {m for m in _imported_modules(path, "qa_lirpa.exact") if m.startswith("qa_lirpa.verify")}
        if found:
            bad[path.name] = sorted(found)
    if bad == {"cpsat.py": ["qa_lirpa.verify.intervals", "qa_lirpa.verify.intervals.IntervalNet"]}:
        pytest.xfail("IntervalNet moves below verify in the graph redesign")
    assert not bad, bad


def _all_modules():
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="qa_lirpa."):
        if info.name.endswith("__main__"):      # runs the command line when imported
            continue
        try:
            yield importlib.import_module(info.name)
        except ImportError as e:
            if getattr(e, "name", None) and e.name.split(".")[0] in OPTIONAL:
                continue
            raise


def test_every_project_exception_derives_from_qa_lirpa_error():
    seen, bad = set(), []
    for module in _all_modules():
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException) and not name.startswith("_")
                    and obj.__module__ == module.__name__ and not issubclass(obj, Warning)):
                seen.add(f"{obj.__module__}.{name}")
                if not issubclass(obj, QaLirpaError):
                    bad.append(f"{obj.__module__}.{name}")
    assert not bad, bad
    for name in ("qa_lirpa.base.errors.UserError", "qa_lirpa.config.ConfigError",
                 "qa_lirpa.exact.milp.SolverError", "qa_lirpa.vnncomp.InstanceError"):
        assert name in seen
    # the older bases stay, so ``except ValueError`` code keeps working
    from qa_lirpa.config import ConfigError
    from qa_lirpa.train.datasets import DatasetNotFoundError

    assert issubclass(ConfigError, ValueError) and issubclass(DatasetNotFoundError, FileNotFoundError)
    from qa_lirpa import cli

    assert cli.UserError is UserError


def test_cli_prints_project_errors_on_one_line(capsys, monkeypatch):
    import argparse

    from qa_lirpa import cli

    def boom(args):
        raise QaLirpaError("something went wrong")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    monkeypatch.setattr(parser, "parse_args", lambda argv=None: argparse.Namespace(func=boom, command="x"))
    assert cli.main([]) == 2
    assert capsys.readouterr().err == "qa-lirpa x: error: something went wrong\n"


# ----- sample ranges --------------------------------------------------------------------------------
def test_samples_slices():
    assert list(parse_samples("0:3", 10)) == [0, 1, 2]
    assert list(parse_samples("::4", 10)) == [0, 4, 8]
    assert list(parse_samples("8:100", 10)) == [8, 9]
    assert list(parse_samples("8:", 10)) == [8, 9]
    assert parse_samples("2:5") == range(2, 5)
    assert parse_samples(":5", bare="count") == range(0, 5)
    assert parse_samples("0:10:3") == range(0, 10, 3)


def test_samples_bare_number():
    assert parse_samples("5", 10) == range(5, 6)           # certify, benchmark make: one index
    assert parse_samples("7") == range(7, 8)
    assert parse_samples("5", bare="count") == range(0, 5)  # demo: the first N
    assert parse_samples("20", 10, bare="count") == range(0, 10)


@pytest.mark.parametrize("text,n,bare", [
    ("a:b", 10, "index"), ("1:2:3:4", 10, "index"), ("11", 10, "index"), ("-1", None, "index"),
    ("", None, "index"), ("x", None, "count"), ("0", None, "count"), ("5:", None, "index"),
    ("5:2", None, "index"), ("5:2", 10, "index"), ("0:4:0", 10, "index"), ("-3:", None, "count")])
def test_samples_bad_input(text, n, bare):
    with pytest.raises(UserError) as info:
        parse_samples(text, n, bare=bare)
    assert "\n" not in str(info.value) and str(info.value).startswith("--samples")


def test_samples_callers_share_the_parser():
    from qa_lirpa.benchfolder import parse_slice
    from qa_lirpa.demo import _samples
    from qa_lirpa.verify.certify import parse_samples as certify_parse

    assert certify_parse is parse_samples
    assert parse_slice("0:100") == range(0, 100) and parse_slice("7") == range(7, 8)
    assert _samples("3") == range(0, 3) and _samples("2:4") == range(2, 4)


# ----- atomic writes ---------------------------------------------------------------------------------
def test_atomic_writes(tmp_path):
    from qa_lirpa.base.files import atomic_write, atomic_write_bytes, atomic_write_text, new_file_mode

    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "héllo\n")
    assert target.read_text(encoding="utf-8") == "héllo\n"
    assert stat.S_IMODE(target.stat().st_mode) == new_file_mode()
    atomic_write_bytes(target, b"ab", writer=lambda f: f.write(b"cd"))
    assert target.read_bytes() == b"abcd"
    atomic_write(target, lambda f: f.write(b"xyz"), fsync=False)
    assert target.read_bytes() == b"xyz"

    def fail(f):
        f.write(b"half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(target, fail)
    assert target.read_bytes() == b"xyz"                  # untouched, and no temporary file left
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]


def test_old_atomic_write_names_are_the_floor_ones():
    from qa_lirpa import config
    from qa_lirpa.base import files
    from qa_lirpa.train import records

    assert config.atomic_write_text is files.atomic_write_text
    assert records.atomic_write_bytes is files.atomic_write_bytes and records.atomic_write_text is files.atomic_write_text


# ----- devices ---------------------------------------------------------------------------------------
def test_resolve_device():
    import torch

    from qa_lirpa.base.device import DeviceError, resolve_device
    from qa_lirpa.train import trainer
    from qa_lirpa.verify import bab

    assert trainer.resolve_device is resolve_device and bab.resolve_device is resolve_device
    auto = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("auto") == auto and resolve_device(None) == auto and resolve_device() == auto
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(torch.device("cpu")).type == "cpu"
    with pytest.raises(DeviceError):
        resolve_device("no-such-device")
    if not torch.cuda.is_available():
        for name in ("cuda", "cuda:1", torch.device("cuda")):
            with pytest.raises(ValueError, match="CUDA is not available"):
                resolve_device(name)


# ----- verdict words at the edges --------------------------------------------------------------------
def test_verdict_words_at_the_edges():
    from qa_lirpa.base.verdict import Verdict
    from qa_lirpa.verify import result
    from qa_lirpa.verify.certify import ORDER, outcome_word
    from qa_lirpa.vnncomp import RESULT_WORDS, result_word

    assert result.Verdict is Verdict
    assert [result_word(v) for v in Verdict] == ["sat", "unsat", "timeout", "unknown"]
    assert result_word(None) == "error" and set(RESULT_WORDS) == {"sat", "unsat", "timeout", "unknown", "error"}
    assert outcome_word(Verdict.UNSAT) == "robust" and outcome_word(Verdict.SAT) == "falsified"
    assert outcome_word(None) == "misclassified" and ORDER[0] == "robust"


# ----- deadlines -------------------------------------------------------------------------------------
def test_deadline():
    import math

    from qa_lirpa.base.deadline import Deadline

    d = Deadline.after(10.0)
    assert 9.0 < d.remaining() <= 10.0 and not d.expired()
    assert abs(d.at - (time.perf_counter() + 10.0)) < 1.0
    half = d.fraction(0.5)
    assert 4.0 < half.remaining() <= 5.0 and half.at <= d.at
    assert d.fraction(1.0).at <= d.at and d.fraction(0.0).remaining() <= 0.01
    assert Deadline.after(-1.0).expired() and Deadline.after(-1.0).remaining() == 0.0
    never = Deadline.never()
    assert never.remaining() == math.inf and not never.expired() and never.fraction(0.3) is never
    m = Deadline.from_monotonic(time.monotonic() + 3.0)
    assert 2.0 < m.remaining() <= 3.0
    assert d.earlier(half) is half and never.earlier(d) is d
    with pytest.raises(ValueError):
        d.fraction(1.5)


def test_deadline_shift_floor_and_coercion():
    import math

    from qa_lirpa.base.deadline import Deadline, as_deadline

    d = Deadline.after(10.0)
    assert d.shifted(-2.0).at == d.at - 2.0 and d.shifted(1.0).at == d.at + 1.0
    assert Deadline.never().shifted(-5.0).remaining() == math.inf
    floor = Deadline.after(0.5)
    assert d.later(floor) is d and Deadline.after(-3.0).later(floor) is floor
    assert as_deadline(d) is d                                  # a Deadline passes through
    assert 4.0 < as_deadline(5).remaining() <= 5.0              # seconds: converted once, from now
    assert as_deadline(math.inf).remaining() == math.inf and as_deadline(0.0).expired()


def test_seconds_become_a_deadline_only_in_the_floor():
    """No module computes a point in time from seconds by hand (``time.perf_counter() + t``,
    ``time.monotonic() + t``, ``start + float(timeout)``): that is Deadline's job. The HiGHS worker
    is exempt: it runs stand-alone and times its kill from the seconds HiGHS is given."""
    import re
    from pathlib import Path

    pkg = Path(__file__).resolve().parents[1] / "qa_lirpa"
    pattern = re.compile(r"(perf_counter|monotonic)\(\)\s*\+|\+\s*(float\()?\s*timeout\b")
    allowed = {pkg / "base" / "deadline.py", pkg / "exact" / "highs_worker.py"}
    hits = [f"{path.relative_to(pkg)}:{i}: {line.strip()}"
            for path in sorted(pkg.rglob("*.py")) if path not in allowed
            for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, hits
