"""The VNN-COMP tool interface (v1 contract) behind ``vnncomp_configs/*.sh``.

``python -m qa_lirpa.vnncomp prepare v1 CATEGORY ONNX VNNLIB``
``python -m qa_lirpa.vnncomp run v1 CATEGORY ONNX VNNLIB RESULTS_FILE TIMEOUT``

The results file's first line is always one of sat / unsat / timeout / unknown / error, written
atomically (temp file + rename). Before ``sat`` is written, the counterexample is run in
onnxruntime on the ONNX file and checked against the VNN-LIB property with zero tolerance; if that
check fails the answer is ``unknown``, never an unconfirmed ``sat``.

Exit status: 0 whenever a result word was written (also ``error``); 2 for a wrong argument count or
a first argument other than ``v1`` (then nothing is written, as there is no trustworthy path); 1 when
the results file cannot be written (one line on stderr).

Hardening (``run``): a stale results file is replaced by ``unknown`` before anything is loaded (by
``run_instance.sh`` too, before Python starts); TIMEOUT must be finite and > 0; the budget starts at
the process start (imports count) and a guard thread answers ``timeout`` at TIMEOUT + 1 s whatever
the run is doing; SIGTERM/SIGINT/SIGHUP write ``unknown`` (or the answer, if known), SIGKILL every
child process and exit 0. ``.gz`` inputs are unpacked into a size-bounded cache
(``$QA_LIRPA_CACHE_DIR``, ``$QA_LIRPA_CACHE_BYTES``, default 2 GB) with per-process temporary
files; one file may hold at most ``$QA_LIRPA_MAX_BYTES`` (1 GB) decompressed. Every failure ends
in one line on stderr naming the file and the cause (``QA_LIRPA_DEBUG=1`` adds the traceback).
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import signal
import sys
import threading
import time
import traceback
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .base.deadline import Deadline, as_deadline
from .base.errors import QaLirpaError
from .base.files import atomic_write, atomic_write_text
from .base.verdict import Verdict
from .base.vnnlib import VnnlibError, read_vnnlib, violates_exactly

# The verifier stack (qa_lirpa.onnx, qa_lirpa.config with yaml, qa_lirpa.verify: ~0.1 s) is imported
# inside load_instance / check_verifiable / decide / ort_outputs, not here: run's main writes
# "unknown" and starts the guard before it loads, and an import failure there is answered "error".

#: the words of a VNN-COMP result file, one per verdict and ``error`` for a run that failed
RESULT_WORDS_BY_VERDICT = {Verdict.SAT: "sat", Verdict.UNSAT: "unsat", Verdict.TIMEOUT: "timeout",
                           Verdict.UNKNOWN: "unknown", None: "error"}
RESULT_WORDS = tuple(RESULT_WORDS_BY_VERDICT.values())
CONFIG_DIR = Path(__file__).resolve().parent.parent / "vnncomp_configs"
CACHE_DIR = Path.home() / ".cache" / "qa-lirpa" / "vnncomp"
STARTUP_MARGIN_S = 2.0
#: environment variables: the cache folder, its size bound (bytes; least recently used entries are
#: pruned beyond it), and the most bytes one ``.gz`` file (or one VNN-LIB file) may hold
CACHE_DIR_ENV, CACHE_BYTES_ENV, MAX_BYTES_ENV = "QA_LIRPA_CACHE_DIR", "QA_LIRPA_CACHE_BYTES", "QA_LIRPA_MAX_BYTES"
DEFAULT_CACHE_BYTES = 2 << 30
DEFAULT_MAX_BYTES = 1 << 30
#: a temporary file in the cache older than this belongs to no live writer
STALE_TMP_S = 3600.0
#: the hard deadline (budget + this) at which a run answers ``timeout`` whatever it is doing
HARD_DEADLINE_SLACK_S = 1.0
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class InstanceError(QaLirpaError):
    """Bad input for an instance (missing or malformed file): reported as ``error``."""


def result_word(verdict: Verdict | None) -> str:
    """The VNN-COMP result-file word of ``verdict`` (None: the run failed, ``error``); the only place
    where verdicts become VNN-COMP words."""
    return RESULT_WORDS_BY_VERDICT[verdict]


def write_result(path: str | Path, word: str, body: str = "") -> None:
    """Write the result file atomically: the word on the first line, then ``body``."""
    if word not in RESULT_WORDS:
        raise ValueError(f"not a result word: {word}")
    atomic_write_text(path, word + "\n" + body)


def format_counterexample(x: np.ndarray, y: np.ndarray) -> str:
    """``((X_0 v)\\n (X_1 v)\\n ... (Y_0 v)...)`` with values written exactly (repr of float64)."""
    items = [f"(X_{i} {float(v)!r})" for i, v in enumerate(np.asarray(x, np.float64).reshape(-1))]
    items += [f"(Y_{j} {float(v)!r})" for j, v in enumerate(np.asarray(y, np.float64).reshape(-1))]
    return "(" + "\n ".join(items) + ")\n"


def _env_bytes(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 0:
        raise InstanceError(f"{name} must be a number of bytes >= 0, got '{text}'")
    return int(value)


def cache_dir() -> Path:
    """The ``.gz`` decompression cache: ``$QA_LIRPA_CACHE_DIR`` or ``~/.cache/qa-lirpa/vnncomp``."""
    env = os.environ.get(CACHE_DIR_ENV, "").strip()
    return Path(env) if env else CACHE_DIR


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def materialize(path: str | Path, deadline: Deadline | None = None) -> Path:
    """An uncompressed copy of ``path`` (``.gz`` files are unpacked into a cache keyed by content).

    Safe for concurrent runs: each process decompresses into its own temporary file and renames it
    into place (the entries are identical, so the last rename wins harmlessly). Refused: more than
    ``$QA_LIRPA_MAX_BYTES`` (1 GB) decompressed, a corrupt body, an empty result, or still
    decompressing at ``deadline`` (a :class:`Deadline`). The cache is then pruned to
    ``$QA_LIRPA_CACHE_BYTES`` (2 GB), least recently used first."""
    path = Path(path)
    if not path.is_file():
        raise InstanceError(f"file not found: {path}")
    if path.suffix != ".gz":
        return path
    try:
        digest = _sha256(path)[:16]
    except OSError as e:
        raise InstanceError(f"{path}: cannot read ({e.strerror or e})") from None
    cache = cache_dir()
    out = cache / f"{digest}-{path.stem}"
    try:
        if out.is_file() and out.stat().st_size > 0:
            os.utime(out)                                   # most recently used
            return out
    except OSError as e:
        raise InstanceError(f"{path}: cannot use the cache folder {cache} ({e.strerror or e})") from None
    limit = _env_bytes(MAX_BYTES_ENV, DEFAULT_MAX_BYTES)
    try:        # a cache entry: no fsync (a crash loses at most the entry, which is then redone)
        atomic_write(out, lambda dst: _gunzip_bounded(path, dst, limit, deadline), fsync=False)
    except OSError as e:
        raise InstanceError(f"{path}: cannot use the cache folder {cache} ({e.strerror or e})") from None
    prune_cache(cache, keep=out)
    return out


def _gunzip_bounded(path: Path, dst, limit: int, deadline: Deadline | None) -> None:
    with open(path, "rb") as raw:                           # ISIZE: the size mod 2^32, a quick first check
        raw.seek(0, os.SEEK_END)
        if raw.tell() >= 18:
            raw.seek(-4, os.SEEK_END)
            isize = int.from_bytes(raw.read(4), "little")
            if isize > limit:
                raise InstanceError(f"{path}: refusing to decompress: it declares {isize} bytes, more than "
                                    f"the limit of {limit} (set {MAX_BYTES_ENV} to change it)")
    total = 0
    try:
        with gzip.open(path, "rb") as src:
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                total += len(chunk)
                if total > limit:
                    raise InstanceError(f"{path}: refusing to decompress: more than {limit} bytes "
                                        f"(set {MAX_BYTES_ENV} to change the limit)")
                if deadline is not None and deadline.expired():
                    raise InstanceError(f"{path}: decompression did not finish within the time budget")
                dst.write(chunk)
    except (OSError, EOFError, zlib.error) as e:
        raise InstanceError(f"{path}: cannot decompress ({type(e).__name__}: {e})") from None
    if total == 0:
        raise InstanceError(f"{path}: decompresses to an empty file")


def prune_cache(cache: Path, keep: Path | None = None, max_bytes: int | None = None) -> None:
    """Remove 0-byte entries, temporary files older than an hour, and the least recently used
    entries (by mtime) until the cache holds at most ``max_bytes`` ($QA_LIRPA_CACHE_BYTES)."""
    if max_bytes is None:
        max_bytes = _env_bytes(CACHE_BYTES_ENV, DEFAULT_CACHE_BYTES)
    now = time.time()
    entries = []
    try:
        listing = list(os.scandir(cache))
    except OSError:
        return
    for e in listing:
        try:
            st = e.stat(follow_symlinks=False)
            if not e.is_file(follow_symlinks=False):
                continue
            if e.name.endswith(".tmp"):
                if now - st.st_mtime > STALE_TMP_S or (st.st_size == 0 and not e.name.startswith(".")):
                    os.unlink(e.path)                       # a dead writer's leftover
            elif st.st_size == 0:
                os.unlink(e.path)
            else:
                entries.append((st.st_mtime, st.st_size, e.path))
        except OSError:
            continue                                        # another process got there first
    total = sum(size for _, size, _ in entries)
    for _, size, p in sorted(entries):
        if total <= max_bytes:
            break
        if keep is not None and os.path.abspath(p) == os.path.abspath(keep):
            continue
        try:
            os.unlink(p)
            total -= size
        except OSError:
            pass


def category_config(category: str) -> Path | None:
    """``vnncomp_configs/<category>.yaml`` if it exists, else ``default.yaml`` (or None)."""
    for name in (category, "default"):
        p = CONFIG_DIR / f"{name}.yaml"
        if p.exists():
            return p
    return None


@dataclass
class Instance:
    model: object
    specs: list
    onnx_path: Path
    n_inputs: int
    n_outputs: int


def load_instance(onnx_path: str | Path, vnnlib_path: str | Path, deadline: Deadline | None = None) -> Instance:
    """Read the ONNX model and the VNN-LIB property; InstanceError with one clear message."""
    onnx_file = materialize(onnx_path, deadline)
    vnnlib_file = materialize(vnnlib_path, deadline)
    limit = _env_bytes(MAX_BYTES_ENV, DEFAULT_MAX_BYTES)
    if vnnlib_file.stat().st_size > limit:
        raise InstanceError(f"{vnnlib_path}: refusing to parse: more than {limit} bytes "
                            f"(set {MAX_BYTES_ENV} to change the limit)")
    from .onnx import OnnxFloat32Warning, OnnxImportError, load_onnx   # lazy: the verifier stack (see the top)

    _check_finite_weights(onnx_path, onnx_file)
    try:
        with warnings.catch_warnings():
            # float32 inexactness is covered by the verifier (onnxruntime is its referee)
            warnings.simplefilter("ignore", OnnxFloat32Warning)
            model = load_onnx(onnx_file)
    except (OnnxImportError, ValueError, OSError) as e:
        raise InstanceError(f"{onnx_path}: {e}") from None
    try:
        n_in, n_out = _io_sizes(onnx_file)
    except Exception as e:  # noqa: BLE001 - onnxruntime's own errors are long C++ messages
        raise InstanceError(f"{onnx_path}: onnxruntime cannot load it ({_short_ort_error(e)})") from None
    try:
        specs = read_vnnlib(vnnlib_file, n_inputs=n_in, n_outputs=n_out)
    except VnnlibError as e:
        raise InstanceError(str(e)) from None
    except UnicodeDecodeError as e:
        raise InstanceError(f"{vnnlib_path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    except RecursionError:
        raise InstanceError(f"{vnnlib_path}: expressions nested too deeply to read") from None
    except Exception as e:  # noqa: BLE001 - a recursion overflow can surface as another type
        if "recursion" in str(e).lower():
            raise InstanceError(f"{vnnlib_path}: expressions nested too deeply to read") from None
        raise
    return Instance(model, specs, onnx_file, n_in, n_out)


def _short_ort_error(e: Exception) -> str:
    """The informative part of an onnxruntime error, on one line."""
    import re

    text = " ".join(str(e).split())
    opset = re.search(r"Opset (\d+)", text)
    if opset:
        top = re.search(r"till opset (\d+)", text)
        return f"opset {opset.group(1)} is not supported" + (f" (onnxruntime supports up to {top.group(1)})" if top else "")
    for key in ("opset", "ShapeInferenceError", "Type Error", "INVALID_ARGUMENT", "Invalid"):
        i = text.find(key)
        if i >= 0:
            j = text.rfind("failed:", 0, i)
            if key == "opset":
                k = text.rfind(". ", 0, i)
                return text[k + 2 if k >= 0 else i:][:240]
            return text[j + 7 if j >= 0 else i:][:240].strip()
    return text[-240:]


def _check_finite_weights(onnx_path: str | Path, onnx_file: Path) -> None:
    """NaN or Inf in an initializer (or a Constant) cannot be verified: one clear line."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(onnx_file))
    except Exception:  # noqa: BLE001 - load_onnx reports unreadable files with its own message
        return
    tensors = [(t.name, t) for t in model.graph.initializer]
    for node in model.graph.node:
        if node.op_type == "Constant":
            tensors += [(node.output[0], a.t) for a in node.attribute if a.name == "value"]
    for name, t in tensors:
        try:
            arr = numpy_helper.to_array(t)
        except Exception:  # noqa: BLE001 - not ours to judge here
            continue
        if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            bad = "NaN" if np.isnan(arr).any() else "Inf"
            raise InstanceError(f"{onnx_path}: weights hold {bad} (tensor '{name}'): cannot verify such a model")


def check_verifiable(inst: Instance, config_path: Path | None) -> None:
    """What ``run`` does before its search, without searching: build the verification problem and
    bound every property's root box once (interval and, where used, CROWN bounds). Any failure
    here would make ``run`` fail too: InstanceError with one line."""
    import torch

    # lazy: the verifier stack (see the top of this module)
    from .config import load_config
    from .verify import VerifierConfig
    from .verify.bab import Verifier, infer_input_shape
    from .verify.spec import OutputSpec

    config = load_config(VerifierConfig, config_path) if config_path else VerifierConfig()
    try:
        ver = Verifier(inst.model, config)
        if not inst.specs:
            return
        problem = ver.problem(ver.input_shape or infer_input_shape(inst.model, inst.specs[0].n_inputs))
        with torch.no_grad():
            for spec in inst.specs:
                root = problem.root(spec.lower, spec.upper)
                if root is None:
                    continue
                lo, hi = root
                ylo, yhi = problem.output_intervals(lo, hi)
                if not (torch.isfinite(ylo).all() and torch.isfinite(yhi).all()):
                    raise InstanceError(f"{inst.onnx_path}: the output bounds are not finite")
                if problem.crown is not None and config.crown != "never":
                    ospec = OutputSpec.from_disjuncts(spec.disjuncts, spec.n_outputs, problem.device)
                    problem.crown_lower(lo, hi, ospec.mat.unsqueeze(0))
    except InstanceError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever would break the run
        text = " ".join(str(e).split())[:300]
        raise InstanceError(f"{inst.onnx_path}: cannot build the verification problem "
                            f"({type(e).__name__}: {text})") from None


def _io_sizes(onnx_file: Path) -> tuple[int, int]:
    from .onnx.runtime import session      # lazy: the verifier stack (see the top of this module)

    sess = session(onnx_file)
    sizes = []
    for v in (sess.get_inputs()[0], sess.get_outputs()[0]):
        dims = [d for d in v.shape[1:]] if len(v.shape) > 1 else list(v.shape)
        sizes.append(int(np.prod([d if isinstance(d, int) else 1 for d in dims])))
    return sizes[0], sizes[1]


def ort_outputs(onnx_file: str | Path, x_flat: np.ndarray) -> np.ndarray:
    """onnxruntime's outputs (float64, flat) for a flat input, reshaped in C order to the model's
    input shape (dynamic dimensions become 1), as the VNN-COMP checker does."""
    from .onnx import run_onnxruntime      # lazy: the verifier stack (see the top of this module)
    from .onnx.runtime import session

    sess = session(onnx_file)
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in sess.get_inputs()[0].shape]
    x = np.asarray(x_flat, np.float32).reshape(shape)
    return np.asarray(run_onnxruntime(onnx_file, x), np.float64).reshape(-1)


def onnx_confirms(onnx_file: Path, x: np.ndarray, specs: list) -> np.ndarray | None:
    """Run ``x`` in onnxruntime; return its outputs if they violate the property exactly (zero
    tolerance) with ``x`` inside one of the property's boxes, else None."""
    x = np.asarray(x, np.float64).reshape(-1)
    y = ort_outputs(onnx_file, x)
    for spec in specs:
        if np.all(x >= spec.lower) and np.all(x <= spec.upper):
            if violates_exactly(spec, y):       # as written: exact rationals, strict stays strict
                return y
    return None



def decide(inst: Instance, timeout: float | Deadline, config_path: Path | None) -> tuple[str, str]:
    """Run the verifier until ``timeout`` (seconds or a Deadline; at least 0.5 s from now);
    return (word, counterexample text)."""
    from .config import load_config         # lazy: the verifier stack (see the top of this module)
    from .verify import VerifierConfig, verify

    deadline = as_deadline(timeout).later(Deadline.after(0.5))
    config = load_config(VerifierConfig, config_path) if config_path else VerifierConfig()
    result = verify(inst.model, inst.specs, config=config, timeout=deadline)
    word = result_word(result.verdict)
    if result.stats.float32:
        # the float32 margin an answer relied on (onnxruntime is the referee of an ONNX file)
        print(f"qa-lirpa: {word}; onnxruntime referee: {result.stats.float32}", file=sys.stderr)
    if result.verdict is not Verdict.SAT:
        return word, ""
    x = np.asarray(result.counterexample, np.float64)
    y = onnx_confirms(inst.onnx_path, x, inst.specs)
    if y is None:
        print("qa-lirpa: the counterexample did not reproduce in onnxruntime; answering unknown",
              file=sys.stderr)
        return result_word(Verdict.UNKNOWN), ""
    return word, format_counterexample(x, y)


class _Answer:
    """What a signal or the hard deadline writes: the run's answer once it is known."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.word: str | None = None
        self.body = ""

    def finish(self, word: str, body: str = "") -> None:
        with self.lock:
            self.word, self.body = word, body
            if self.path is not None:
                write_result(self.path, word, body)


_ANSWER = _Answer(None)


def run_instance(category: str, onnx_path: str, vnnlib_path: str, result_path: str,
                 timeout: float | Deadline, started: float | None = None) -> str:
    """Decide one instance and write the result file; returns the word written.

    ``timeout``: the budget, a Deadline (its end; :func:`main` passes the one it computed from the
    process start) or seconds counted from ``started`` (``time.monotonic()``, default now): the
    process start under ``run_instance.sh`` (imports and parsing count against the budget).
    Loading must end by the budget's end, the verifier STARTUP_MARGIN_S before it."""
    budget = timeout if isinstance(timeout, Deadline) else _budget(started, timeout)
    answer = _ANSWER if _ANSWER.path == result_path else _Answer(result_path)
    try:
        inst = load_instance(onnx_path, vnnlib_path, deadline=budget)
        word, body = decide(inst, budget.shifted(-STARTUP_MARGIN_S), category_config(category))
    except QaLirpaError as e:            # InstanceError and the other errors raised on purpose
        _say_error("run_instance", str(e) if isinstance(e, InstanceError) else _describe(e, onnx_path, vnnlib_path))
        word, body = result_word(None), ""
    except Exception as e:  # noqa: BLE001 - any crash still leaves a valid result word
        _say_error("run_instance", _describe(e, onnx_path, vnnlib_path))
        word, body = result_word(None), ""
    answer.finish(word, body)
    return word


def _describe(e: BaseException, onnx_path: str, vnnlib_path: str) -> str:
    """One line for an unexpected exception, naming the files and the cause."""
    if isinstance(e, RecursionError) or "recursion" in str(e).lower():
        return f"{vnnlib_path}: nested too deeply to read ({onnx_path})"
    if isinstance(e, MemoryError):
        return f"{onnx_path}, {vnnlib_path}: out of memory"
    text = " ".join(str(e).split())[:300]
    return f"{onnx_path}, {vnnlib_path}: {type(e).__name__}: {text}"


def _say_error(where: str, message: str) -> None:
    print(f"qa-lirpa {where}: error: {' '.join(message.split())}", file=sys.stderr)
    if os.environ.get("QA_LIRPA_DEBUG"):
        traceback.print_exc()


def _budget(started: float | None, timeout: float) -> Deadline:
    """The end of a budget of ``timeout`` seconds that began at ``started`` (``time.monotonic()``;
    None: now): the one place where the run's seconds become a Deadline."""
    begun = Deadline.after(0.0) if started is None else Deadline.from_monotonic(started)
    return begun.shifted(float(timeout))


def process_start() -> float:
    """When this process started, on the ``time.monotonic()`` clock (Linux: from /proc, so the
    interpreter's start-up counts; run_instance.sh execs Python, so that is the script's start)."""
    now = time.monotonic()
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start_s = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        elapsed = time.clock_gettime(time.CLOCK_BOOTTIME) - start_s
        if 0 <= elapsed < 3600:
            return now - elapsed
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    return now


def parse_timeout(text: str) -> float:
    """TIMEOUT in seconds: a finite number > 0 (``nan``, ``inf``, ``1e309``, 0, negatives: ValueError)."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"TIMEOUT must be a number of seconds, got '{text}'") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"TIMEOUT must be a finite number of seconds > 0, got '{text}'")
    return value


def _descendants(pid: int) -> list[int]:
    """The processes started (directly or not) by ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def kill_children() -> None:
    """SIGKILL every process this one started (the HiGHS worker, anything below it)."""
    for pid in _descendants(os.getpid()):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _guard(answer: _Answer, hard_deadline: Deadline, wakeup: int) -> None:
    """The guard thread: on SIGTERM/SIGINT/SIGHUP (whichever thread the kernel hands them to, the
    C-level handler writes their number to ``wakeup``) or at the hard deadline, write the answer
    if known (else ``unknown`` / ``timeout``), end the children and exit."""
    import select

    signum = None
    while True:
        left = hard_deadline.remaining()
        if left <= 0:
            break
        if select.select([wakeup], [], [], min(left, 3600.0))[0]:
            data = os.read(wakeup, 64)
            got = [b for b in data if b in {int(x) for x in HANDLED_SIGNALS}]
            if got:
                signum = got[0]
                break
    kill_children()
    locked = answer.lock.acquire(timeout=0.5)      # a result being written is let finish
    try:
        if answer.word is None or answer.word == result_word(Verdict.UNKNOWN) or not locked:
            word = result_word(Verdict.UNKNOWN if signum is not None else Verdict.TIMEOUT)
            why = f"signal {signal.Signals(signum).name}" if signum is not None else "the hard deadline"
            print(f"qa-lirpa run_instance: {why}: answering {word}", file=sys.stderr)
            write_result(answer.path, word)
        else:
            write_result(answer.path, answer.word, answer.body)
    except OSError:
        pass
    finally:
        sys.stderr.flush()
        os._exit(0)


def start_guard(answer: _Answer, hard_deadline: Deadline) -> None:
    """Route SIGTERM/SIGINT/SIGHUP to :func:`_guard` (a thread that runs even while the main thread
    is busy in C code) through :func:`signal.set_wakeup_fd`; call from the main thread."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    for s in HANDLED_SIGNALS:
        signal.signal(s, lambda *_: None)          # the guard thread acts; nothing to do here
    threading.Thread(target=_guard, args=(answer, hard_deadline, r), name="qa-lirpa-guard", daemon=True).start()


def prepare_instance(category: str, onnx_path: str, vnnlib_path: str) -> int:
    """Unpack the files and check that ``run`` can verify them (:func:`check_verifiable`: load, build
    the problem, bound the root boxes; no search). Non-zero exit skips the category."""
    try:
        inst = load_instance(onnx_path, vnnlib_path)
        check_verifiable(inst, category_config(category))
    except QaLirpaError as e:            # InstanceError and the other errors raised on purpose
        _say_error("prepare_instance", str(e) if isinstance(e, InstanceError) else _describe(e, onnx_path, vnnlib_path))
        return 1
    except Exception as e:  # noqa: BLE001 - one line, never a traceback
        _say_error("prepare_instance", _describe(e, onnx_path, vnnlib_path))
        return 1
    print(f"qa-lirpa prepare_instance: {onnx_path} and {vnnlib_path} load and can be verified", file=sys.stderr)
    return 0


USAGE = ("usage: python -m qa_lirpa.vnncomp prepare v1 CATEGORY ONNX VNNLIB\n"
         "       python -m qa_lirpa.vnncomp run v1 CATEGORY ONNX VNNLIB RESULTS_FILE TIMEOUT")


def main(argv: Sequence[str] | None = None) -> int:
    global _ANSWER
    started = process_start()
    args = list(sys.argv[1:] if argv is None else argv)
    want = {"prepare": 5, "run": 7}
    if not args or args[0] not in want or len(args) != want[args[0]]:
        print(f"qa-lirpa vnncomp: wrong arguments {args[1:]}\n{USAGE}", file=sys.stderr)
        return 2
    if args[1] != "v1":
        print(f"qa-lirpa vnncomp: the first argument must be 'v1', got '{args[1]}'", file=sys.stderr)
        return 2
    if args[0] == "prepare":
        return prepare_instance(*args[2:5])
    result_path = args[5]
    answer = _Answer(result_path)
    try:
        answer.finish(result_word(Verdict.UNKNOWN))     # replaces a stale result before anything is loaded
    except OSError as e:
        print(f"qa-lirpa run_instance: error: cannot write the result file {result_path} "
              f"({e.strerror or e})", file=sys.stderr)
        return 1
    try:
        timeout = parse_timeout(args[6])
    except ValueError as e:
        print(f"qa-lirpa vnncomp: {e}", file=sys.stderr)
        answer.finish(result_word(None))
        return 0
    budget = _budget(started, timeout)
    if argv is None:                    # a process of its own: signals and the hard deadline
        start_guard(answer, budget.shifted(HARD_DEADLINE_SLACK_S))
    _ANSWER = answer
    try:
        run_instance(args[2], args[3], args[4], result_path, budget)
    except OSError as e:
        print(f"qa-lirpa run_instance: error: cannot write the result file {result_path} "
              f"({e.strerror or e})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
