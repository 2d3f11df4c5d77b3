"""A small stand-in corpus for the conformance harness (``benchmarks/onnx_conformance.py``).

Hand-built ONNX graphs in the dialects of the exporter corpus, small enough to enumerate in a
second: it exercises the harness itself (input grids cut at QuantizeLinear of either domain, int4
codes, Round + Clip, integer-typed and rank-1 inputs, DynamicQuantizeLinear that cannot be
enumerated, a raw QONNX ``Quant`` judged against a reference table). It is not the exporter corpus
(``tests/onnx/corpus``), which is made by the real exporters.

The raw QONNX fixture's reference table is computed here with numpy from the QONNX ``Quant``
definition (round half even, ``clip(round(x / s + z), qmin, qmax)``, then ``(q - z) s``), not by
qonnx's executor: the table is the fixture's semantics by definition.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import diffgen


def _model(nodes, inits, x_type, x_shape, y_shape, opset=17, extra_opsets=()) -> bytes:
    g = helper.make_graph(nodes, "mini", [helper.make_tensor_value_info("x", x_type, x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), *extra_opsets], producer_name="minicorpus")
    m.ir_version = 10 if opset >= 21 else 8
    return m.SerializeToString()


def rank1_qdq() -> bytes:
    """x [3] -> QuantizeLinear(uint8, s=1/16) -> DQ -> MatMul([3,2] float) -> Add -> y [2]."""
    w = np.array([[0.5, -0.25], [0.125, 0.75], [-1.0, 0.5]], np.float32)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
             helper.make_node("MatMul", ["d", "w"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["y"])]
    return _model(nodes, dict(s=np.float32(1 / 16), z=np.uint8(128), w=w, b=np.array([0.0, 0.0625], np.float32)),
                  TensorProto.FLOAT, [3], [2])


def round_clip_fixed_point() -> bytes:
    """Integer-domain fixed point: Mul(8) -> Round -> Clip(-8, 7) -> MatMul(int-valued) -> Add
    -> Mul(1/4) -> Floor -> y."""
    w = np.array([[1, -2, 3], [2, 1, -1]], np.float32)
    nodes = [helper.make_node("Mul", ["x", "k"], ["a"]), helper.make_node("Round", ["a"], ["r"]),
             helper.make_node("Clip", ["r", "lo", "hi"], ["c"]), helper.make_node("MatMul", ["c", "w"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["ab"]), helper.make_node("Mul", ["ab", "q"], ["sc"]),
             helper.make_node("Floor", ["sc"], ["y"])]
    return _model(nodes, dict(k=np.float32(8), lo=np.float32(-8), hi=np.float32(7), w=w,
                              b=np.array([1, 0, -2], np.float32), q=np.float32(0.25)),
                  TensorProto.FLOAT, ["N", 2], ["N", 3])


def int8_input() -> bytes:
    """x int8 [N, 2] -> Cast(float) -> MatMul -> y (a tf2onnx-style integer graph input)."""
    nodes = [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT), helper.make_node("MatMul", ["f", "w"], ["y"])]
    return _model(nodes, dict(w=np.array([[0.5, -1.0], [0.25, 0.75]], np.float32)), TensorProto.INT8, ["N", 2],
                  ["N", 2])


def int4_qdq() -> bytes:
    """x -> QuantizeLinear(int4, s=0.25) -> DQ -> Gemm(float) -> y (opset 21)."""
    zp = helper.make_tensor("z", TensorProto.INT4, [], [0])
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
             helper.make_node("Gemm", ["d", "w", "b"], ["y"], transB=1)]
    g = helper.make_graph(nodes, "mini", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
                          [numpy_helper.from_array(np.float32(0.25), "s"), zp,
                           numpy_helper.from_array(np.array([[1.0, 0.5], [0.5, 1.0]], np.float32), "w"),
                           numpy_helper.from_array(np.array([0.0, 0.125], np.float32), "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], producer_name="minicorpus")
    m.ir_version = 10
    return m.SerializeToString()


def ms_qdq() -> bytes:
    """x -> com.microsoft QuantizeLinear / DequantizeLinear (int8, s=1/8) -> Gemm -> y."""
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], domain="com.microsoft"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"], domain="com.microsoft"),
             helper.make_node("Gemm", ["d", "w", "b"], ["y"], transB=1)]
    return _model(nodes, dict(s=np.float32(0.125), z=np.int8(0), w=np.array([[1.0, -0.5], [0.25, 1.0]], np.float32),
                              b=np.array([0.0, 0.0], np.float32)),
                  TensorProto.FLOAT, ["N", 2], ["N", 2], extra_opsets=[helper.make_opsetid("com.microsoft", 1)])


def dynamic_quant() -> bytes:
    """quantize_dynamic's form: DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul(scales)."""
    wq = np.array([[3, -2], [1, 4]], np.int8)
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
             helper.make_node("MatMulInteger", ["xq", "wq", "xz", "wz"], ["acc"]),
             helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["xs", "ws"], ["sc"]), helper.make_node("Mul", ["accf", "sc"], ["y"])]
    return _model(nodes, dict(wq=wq, wz=np.int8(0), ws=np.float32(0.05)), TensorProto.FLOAT, ["N", 2], ["N", 2])


def raw_qonnx() -> tuple[bytes, dict]:
    """x -> QONNX Quant (4 bits signed, s=0.5) -> MatMul -> y; and its reference table."""
    nodes = [helper.make_node("Quant", ["x", "s", "z", "bw"], ["q"], domain="qonnx.custom_op.general",
                              signed=1, narrow=0, rounding_mode="ROUND"),
             helper.make_node("MatMul", ["q", "w"], ["y"])]
    w = np.array([[1.0, -1.0], [0.5, 2.0]], np.float32)
    model = _model(nodes, dict(s=np.float32(0.5), z=np.float32(0), bw=np.float32(4), w=w), TensorProto.FLOAT,
                   ["N", 2], ["N", 2], extra_opsets=[helper.make_opsetid("qonnx.custom_op.general", 1)])
    rng = np.random.default_rng(0)
    x = (rng.integers(-20, 20, size=(64, 2)) / 4).astype(np.float32)
    q = (np.clip(np.round(x / np.float32(0.5)), -8, 7) * np.float32(0.5)).astype(np.float32)
    return model, dict(x=x, y=(q @ w).astype(np.float32))


def write_mini_corpus(folder) -> Path:
    """Write the stand-in corpus and its manifest; returns the manifest's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    entries = []

    def add(name, data, row, dialect, expect="verify", reference=None, description=""):
        (folder / name).write_bytes(data)
        entries.append(dict(file=name, row=row, dialect=dialect, tool="minicorpus (hand-built)",
                            description=description, expect=expect, reference=reference))

    add("gemm_qdq.onnx", diffgen.make_case("gemm", 11).model, 3, "QDQ Gemm", description="diffgen gemm seed 11")
    add("conv_pc_qdq.onnx", diffgen.make_case("conv_pc", 12).model, 3, "QDQ Conv",
        description="diffgen conv_pc seed 12")
    add("round_clip.onnx", round_clip_fixed_point(), 6, "integer-domain fixed point")
    qmodel, table = raw_qonnx()
    np.savez(folder / "raw_quant.npz", **table)
    add("raw_quant.onnx", qmodel, 7, "QONNX Quant", reference="raw_quant.npz")
    add("int8_input.onnx", int8_input(), 8, "int8 graph input")
    add("int4_qdq.onnx", int4_qdq(), 9, "int4 Q/DQ")
    add("ms_qdq.onnx", ms_qdq(), 9, "com.microsoft Q/DQ")
    add("rank1_qdq.onnx", rank1_qdq(), 9, "rank-1 input")
    add("dynamic.onnx", dynamic_quant(), 10, "quantize_dynamic", expect="refuse")
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps(entries, indent=1))
    return manifest


if __name__ == "__main__":
    import sys

    print(write_mini_corpus(sys.argv[1] if len(sys.argv) > 1 else "/tmp/minicorpus"))
    for f in sorted(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/minicorpus").glob("*.onnx")):
        onnx.checker.check_model(onnx.load(f)) if "raw" not in f.name else None
