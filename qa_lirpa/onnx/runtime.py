"""Running an ONNX file in onnxruntime, as the VNN-COMP counterexample checker does."""
from __future__ import annotations

import os
import threading

import numpy as np

from .normalize import runnable_bytes

_CACHE: dict[tuple, object] = {}
_LOCK = threading.Lock()


def _session(path: str, optimize: bool):
    import onnxruntime as ort

    st = os.stat(path)
    key = (os.path.abspath(path), st.st_mtime_ns, st.st_size, bool(optimize))
    with _LOCK:
        sess = _CACHE.get(key)
        if sess is None:
            so = ort.SessionOptions()
            so.log_severity_level = 3
            # QONNX files (custom ops onnxruntime cannot run) mean qonnx's executable semantics:
            # their standard-op expansion, run op by op (onnxruntime's fusions, e.g. MatMulNBits,
            # would compute something else)
            expansion = runnable_bytes(path)
            if not optimize or expansion is not None:
                so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            source = expansion or path
            sess = ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])
            if len(_CACHE) > 16:
                _CACHE.clear()
            _CACHE[key] = sess
    return sess


def session(path: str | os.PathLike, *, optimize: bool = True):
    """The (cached) onnxruntime CPU session that runs ``path`` as the VNN-COMP checker does
    (QONNX files: their standard-op expansion, see :func:`qa_lirpa.onnx.normalize.runnable_bytes`)."""
    return _session(os.fspath(path), optimize)


def run_onnxruntime(path: str | os.PathLike, x, *, optimize: bool = True) -> np.ndarray:
    """Outputs of the ONNX model at ``path`` on ``x`` (its one input), computed by onnxruntime on CPU.

    ``x`` is converted to the model's input type (float32 for FLOAT inputs), exactly as the
    VNN-COMP checker does; pass values that are representable in float32 to compare with
    exact semantics. ``optimize=True`` uses onnxruntime's default session options (all graph
    optimizations, as the checker does: quantized groups run in fused integer kernels);
    ``optimize=False`` disables them (the unfused reference kernels: QuantizeLinear ->
    float op -> DequantizeLinear in float32).
    """
    sess = _session(os.fspath(path), optimize)
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise ValueError(f"{path}: expected one input, found {len(inputs)}")
    dtype = np.float64 if inputs[0].type == "tensor(double)" else np.float32
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.ascontiguousarray(np.asarray(x), dtype=dtype)
    return sess.run(None, {inputs[0].name: arr})[0]


__all__ = ["run_onnxruntime", "session"]
