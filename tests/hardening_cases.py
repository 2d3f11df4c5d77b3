"""Malformed and hostile instance files for the hardening tests and benchmarks/robustness_probe.py."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np


def float_mlp_onnx(path: Path, n_in: int = 4, hidden: int = 8, n_out: int = 2, opset: int = 17,
                   poison: float | None = None, bad_shape: bool = False, seed: int = 0) -> Path:
    """A float Gemm-Relu-Gemm model; ``poison`` puts NaN/Inf in a weight, ``bad_shape`` gives the
    first weight a row count that does not match the input (onnxruntime refuses it)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = (rng.normal(size=(n_in + (1 if bad_shape else 0), hidden)) / np.sqrt(n_in)).astype(np.float32)
    w2 = (rng.normal(size=(hidden, n_out)) / np.sqrt(hidden)).astype(np.float32)
    if poison is not None:
        w1[0, 0] = poison
    inits = [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(np.zeros(hidden, np.float32), "B1"),
             numpy_helper.from_array(w2, "W2"), numpy_helper.from_array(np.zeros(n_out, np.float32), "B2")]
    nodes = [helper.make_node("Gemm", ["x", "W1", "B1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W2", "B2"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n_in])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n_out])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def box_vnnlib(n_in: int = 4, n_out: int = 2, lo: float = -0.1, hi: float = 0.1) -> str:
    lines = [f"(declare-const X_{i} Real)" for i in range(n_in)] + [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    for i in range(n_in):
        lines += [f"(assert (>= X_{i} {lo}))", f"(assert (<= X_{i} {hi}))"]
    lines.append("(assert (>= Y_0 1000.0))")
    return "\n".join(lines) + "\n"


def deep_vnnlib(n_in: int = 4, n_out: int = 2, depth: int = 5000) -> str:
    return box_vnnlib(n_in, n_out).replace("(assert (>= Y_0 1000.0))",
                                           "(assert " + "(and " * depth + "(>= Y_0 1000.0)" + ")" * depth + ")")


def non_utf8_vnnlib(n_in: int = 4, n_out: int = 2) -> bytes:
    return b"; caf\xe9 \xff\xfe\n" + box_vnnlib(n_in, n_out).encode()


def many_disjuncts_vnnlib(n_in: int = 4, n_out: int = 2, n: int = 90000) -> str:
    head = box_vnnlib(n_in, n_out).replace("(assert (>= Y_0 1000.0))\n", "")
    body = " ".join(f"(and (>= Y_0 {1000.0 + k}))" for k in range(n))
    return head + f"(assert (or {body}))\n"


def corrupt_gzip(data: bytes) -> bytes:
    raw = bytearray(gzip.compress(data))
    mid = len(raw) // 2
    raw[mid:mid + 8] = b"\xde\xad\xbe\xef" * 2
    return bytes(raw)


def gzip_bomb(path: Path, megabytes: int = 64) -> Path:
    with gzip.open(path, "wb", compresslevel=9) as g:
        chunk = b"\0" * (1 << 20)
        for _ in range(megabytes):
            g.write(chunk)
    return path
