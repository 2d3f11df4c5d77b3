"""The VNN-COMP tool interface (v1 contract) behind ``vnncomp_configs/*.sh``.

``python -m qa_lirpa.vnncomp prepare v1 CATEGORY ONNX VNNLIB``
``python -m qa_lirpa.vnncomp run v1 CATEGORY ONNX VNNLIB RESULTS_FILE TIMEOUT``

The results file's first line is always one of sat / unsat / timeout / unknown / error, written
atomically (temp file + rename). Before ``sat`` is written, the counterexample is run in
onnxruntime on the ONNX file and checked against the VNN-LIB property with zero tolerance; if that
check fails the answer is ``unknown``, never an unconfirmed ``sat``.

Exit status: 0 whenever a result word was written (also ``error``); 2 for a wrong argument count or
a first argument other than ``v1`` (then nothing is written, as there is no trustworthy path).
"""
from __future__ import annotations

import gzip
import hashlib
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .config import atomic_write_text

RESULT_WORDS = ("sat", "unsat", "timeout", "unknown", "error")
CONFIG_DIR = Path(__file__).resolve().parent.parent / "vnncomp_configs"
CACHE_DIR = Path.home() / ".cache" / "qa-lirpa" / "vnncomp"
STARTUP_MARGIN_S = 2.0


class InstanceError(Exception):
    """Bad input for an instance (missing or malformed file): reported as ``error``."""


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


def materialize(path: str | Path) -> Path:
    """An uncompressed copy of ``path`` (``.gz`` files are unpacked into a cache keyed by content)."""
    path = Path(path)
    if not path.is_file():
        raise InstanceError(f"file not found: {path}")
    if path.suffix != ".gz":
        return path
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    out = CACHE_DIR / f"{digest}-{path.stem}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        try:
            with gzip.open(path, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except (OSError, EOFError) as e:
            raise InstanceError(f"{path}: cannot decompress ({e})") from None
        tmp.replace(out)
    return out


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


def load_instance(onnx_path: str | Path, vnnlib_path: str | Path) -> Instance:
    """Read the ONNX model and the VNN-LIB property; InstanceError with one clear message."""
    onnx_file, vnnlib_file = materialize(onnx_path), materialize(vnnlib_path)
    from .onnx import OnnxImportError, load_onnx
    from .verify.vnnlib import VnnlibError, read_vnnlib

    import warnings

    from .onnx import OnnxFloat32Warning

    try:
        with warnings.catch_warnings():
            # float32 inexactness is covered by the verifier (onnxruntime is its referee)
            warnings.simplefilter("ignore", OnnxFloat32Warning)
            model = load_onnx(onnx_file)
    except (OnnxImportError, ValueError, OSError) as e:
        raise InstanceError(f"{onnx_path}: {e}") from None
    n_in, n_out = _io_sizes(onnx_file)
    try:
        specs = read_vnnlib(vnnlib_file, n_inputs=n_in, n_outputs=n_out)
    except VnnlibError as e:
        raise InstanceError(str(e)) from None
    return Instance(model, specs, onnx_file, n_in, n_out)


def _io_sizes(onnx_file: Path) -> tuple[int, int]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    sizes = []
    for v in (sess.get_inputs()[0], sess.get_outputs()[0]):
        dims = [d for d in v.shape[1:]] if len(v.shape) > 1 else list(v.shape)
        sizes.append(int(np.prod([d if isinstance(d, int) else 1 for d in dims])))
    return sizes[0], sizes[1]


def ort_outputs(onnx_file: str | Path, x_flat: np.ndarray) -> np.ndarray:
    """onnxruntime's outputs (float64, flat) for a flat input, reshaped in C order to the model's
    input shape (dynamic dimensions become 1), as the VNN-COMP checker does."""
    import onnxruntime as ort

    from .onnx import run_onnxruntime

    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in sess.get_inputs()[0].shape]
    x = np.asarray(x_flat, np.float32).reshape(shape)
    return np.asarray(run_onnxruntime(onnx_file, x), np.float64).reshape(-1)


def onnx_confirms(onnx_file: Path, x: np.ndarray, specs: list) -> np.ndarray | None:
    """Run ``x`` in onnxruntime; return its outputs if they violate the property exactly (zero
    tolerance) with ``x`` inside one of the property's boxes, else None."""
    from fractions import Fraction

    import torch

    from .verify.spec import OutputSpec

    x = np.asarray(x, np.float64).reshape(-1)
    y = ort_outputs(onnx_file, x)
    exact = [Fraction(float(v)) for v in y]
    for spec in specs:
        if np.all(x >= spec.lower) and np.all(x <= spec.upper):
            ospec = OutputSpec.from_disjuncts(spec.disjuncts, y.size)
            yt = torch.as_tensor(y.reshape(1, -1))
            if bool(ospec.violated_points(yt, lambda n: exact)[0]):   # exact rational comparison
                return y
    return None



def decide(inst: Instance, timeout: float, config_path: Path | None) -> tuple[str, str]:
    """Run the verifier; return (word, counterexample text)."""
    from .config import load_config
    from .verify import VerifierConfig, verify

    config = load_config(VerifierConfig, config_path) if config_path else VerifierConfig()
    result = verify(inst.model, inst.specs, config=config, timeout=max(timeout, 0.5))
    word = result.verdict.value
    if result.stats.float32:
        # the float32 margin an answer relied on (onnxruntime is the referee of an ONNX file)
        print(f"qa-lirpa: {word}; onnxruntime referee: {result.stats.float32}", file=sys.stderr)
    if word != "sat":
        return word, ""
    x = np.asarray(result.counterexample, np.float64)
    y = onnx_confirms(inst.onnx_path, x, inst.specs)
    if y is None:
        print("qa-lirpa: the counterexample did not reproduce in onnxruntime; answering unknown",
              file=sys.stderr)
        return "unknown", ""
    return "sat", format_counterexample(x, y)


def run_instance(category: str, onnx_path: str, vnnlib_path: str, result_path: str, timeout: float,
                 started: float | None = None) -> str:
    """Decide one instance and write the result file; returns the word written."""
    started = time.monotonic() if started is None else started
    try:
        inst = load_instance(onnx_path, vnnlib_path)
        remaining = float(timeout) - (time.monotonic() - started) - STARTUP_MARGIN_S
        word, body = decide(inst, remaining, category_config(category))
    except InstanceError as e:
        print(f"qa-lirpa run_instance: error: {e}", file=sys.stderr)
        word, body = "error", ""
    except Exception:  # noqa: BLE001 - any crash still leaves a valid result word
        traceback.print_exc()
        word, body = "error", ""
    write_result(result_path, word, body)
    return word


def prepare_instance(category: str, onnx_path: str, vnnlib_path: str) -> int:
    """Unpack and check the files (no verification). Non-zero exit skips the category."""
    try:
        load_instance(onnx_path, vnnlib_path)
    except InstanceError as e:
        print(f"qa-lirpa prepare_instance: error: {e}", file=sys.stderr)
        return 1
    return 0


USAGE = ("usage: python -m qa_lirpa.vnncomp prepare v1 CATEGORY ONNX VNNLIB\n"
         "       python -m qa_lirpa.vnncomp run v1 CATEGORY ONNX VNNLIB RESULTS_FILE TIMEOUT")


def main(argv: Sequence[str] | None = None) -> int:
    started = time.monotonic()
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
    try:
        timeout = float(args[6])
    except ValueError:
        print(f"qa-lirpa vnncomp: TIMEOUT must be a number, got '{args[6]}'", file=sys.stderr)
        write_result(args[5], "error")
        return 0
    run_instance(args[2], args[3], args[4], args[5], timeout, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
