"""Independent checks of the demo's verdict files, as the VNN-COMP checker would make them.

Nothing here trusts the verifier: result files are read back from disk, counterexamples are run in
onnxruntime on the ONNX file and checked against the VNN-LIB property with zero tolerance, and the
clean images are classified by onnxruntime too.
"""
from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ..base.vnnlib import read_vnnlib
from ..onnx import run_onnxruntime

_ASSIGNMENT = re.compile(r"\(\s*([XY])_(\d+)\s+([^\s()]+)\s*\)")
#: the counterexample checker's relative tolerance on the written outputs (VNN-COMP)
Y_RTOL = 1e-3


def read_result(path: str | Path) -> tuple[str, np.ndarray | None, np.ndarray | None]:
    """The first word of a result file and, for ``sat``, its X and Y values (None when absent or
    not numbered 0..n-1)."""
    path = Path(path)
    if not path.is_file():
        return "missing", None, None
    text = path.read_text()
    word = text.split("\n", 1)[0].strip()
    if word != "sat":
        return word, None, None
    values: dict[str, dict[int, float]] = {"X": {}, "Y": {}}
    for kind, idx, val in _ASSIGNMENT.findall(text):
        try:
            values[kind][int(idx)] = float(val)
        except ValueError:
            return word, None, None
    xs, ys = values["X"], values["Y"]
    if sorted(xs) != list(range(len(xs))) or sorted(ys) != list(range(len(ys))) or not xs or not ys:
        return word, None, None
    return word, np.array([xs[i] for i in range(len(xs))]), np.array([ys[j] for j in range(len(ys))])


def onnx_outputs(onnx_path: str | Path, x: np.ndarray, input_shape: Sequence[int]) -> np.ndarray:
    """onnxruntime's outputs (float64, one row per input) for inputs given flat or shaped."""
    x = np.asarray(x, np.float32).reshape(-1, *input_shape)
    return np.asarray(run_onnxruntime(onnx_path, x), np.float64).reshape(x.shape[0], -1)


def counterexample_problem(onnx_path: str | Path, vnnlib_path: str | Path, result_path: str | Path,
                           input_shape: Sequence[int]) -> str | None:
    """None when the ``sat`` result file's counterexample passes the checker with zero tolerance
    on the property; otherwise what is wrong with it."""
    word, x, y_written = read_result(result_path)
    if word != "sat":
        return f"the result is '{word}', not sat"
    if x is None:
        return "no well-formed counterexample after 'sat'"
    if x.size != int(np.prod(input_shape)):
        return f"{x.size} X values for an input of {int(np.prod(input_shape))}"
    y = onnx_outputs(onnx_path, x, input_shape)[0]
    if y_written.shape != y.shape or not np.allclose(y, y_written, rtol=Y_RTOL, atol=0.0):
        return "the written Y values differ from onnxruntime's outputs"
    for spec in read_vnnlib(vnnlib_path):
        if np.all(x >= spec.lower) and np.all(x <= spec.upper):
            if any(np.all(mat @ y <= rhs) for mat, rhs in spec.disjuncts):
                return None
    return "onnxruntime's output at X does not violate the property inside its input box"


def violates_at_centre(outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Rows whose clean output already violates the robustness property (some other class scores at
    least as high as the label, as the VNN-LIB files say): misclassified, ties included."""
    outputs = np.asarray(outputs, np.float64)
    own = outputs[np.arange(len(labels)), labels]
    others = outputs.copy()
    others[np.arange(len(labels)), labels] = -np.inf
    return others.max(1) >= own


def run_script(script: Path, category: str, onnx_path: Path, vnnlib_path: Path, result_path: Path,
               timeout: float) -> tuple[float, str]:
    """Run ``run_instance.sh v1 ...`` as the competition harness does (killed at timeout + 60 s);
    returns (seconds, stderr tail). The verdict is whatever the script wrote to ``result_path``."""
    result_path.parent.mkdir(parents=True, exist_ok=True)
    if result_path.exists():
        result_path.unlink()
    cmd = ["bash", str(script), "v1", category, str(onnx_path), str(vnnlib_path), str(result_path),
           f"{timeout:g}"]
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 60)
        tail = p.stderr.strip().splitlines()[-3:] if p.returncode != 0 else []
        if p.returncode != 0:
            tail.insert(0, f"exit status {p.returncode}")
    except subprocess.TimeoutExpired:
        tail = [f"killed after {timeout + 60:g} s"]
    return time.monotonic() - t0, " | ".join(tail)


__all__ = ["read_result", "onnx_outputs", "counterexample_problem", "violates_at_centre", "run_script"]
