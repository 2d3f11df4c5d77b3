"""Broken or unsupported ONNX files give one clear error naming the file (and the node)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto as T
from onnx import helper as h

from qa_lirpa import QuantSpec
from qa_lirpa.onnx import OnnxImportError, load_onnx, run_onnxruntime

import onnx_graphs as graphs
from onnx_helpers import make_model, save


def _err(path, **kw) -> str:
    with pytest.raises(OnnxImportError) as e:
        load_onnx(path, **kw)
    msg = str(e.value)
    assert str(path) in msg
    return msg


def test_not_onnx(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01garbage \xff" * 10)
    assert "not an ONNX model" in _err(junk)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert "not an ONNX model" in _err(empty)
    good = save(graphs.qcdq_mlp(True), "good.onnx")
    data = open(good, "rb").read()
    cut = tmp_path / "truncated.onnx"
    cut.write_bytes(data[: len(data) // 2])
    assert "not an ONNX model" in _err(cut)
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        load_onnx(tmp_path / "nope.onnx")


def test_missing_input_and_io_counts():
    ghost = make_model([h.make_node("Relu", ["x"], ["y"], name="r"),
                        h.make_node("Add", ["y", "ghost"], ["out"], name="add_ghost")],
                       [h.make_tensor_value_info("x", T.FLOAT, ["N", 3])],
                       [h.make_tensor_value_info("out", T.FLOAT, ["N", 3])], [])
    msg = _err(save(ghost, "ghost.onnx"))
    assert "invalid ONNX model" in msg and "ghost" in msg
    two_in = make_model([h.make_node("Add", ["x", "x2"], ["out"], name="add")],
                        [h.make_tensor_value_info("x", T.FLOAT, ["N", 3]),
                         h.make_tensor_value_info("x2", T.FLOAT, ["N", 3])],
                        [h.make_tensor_value_info("out", T.FLOAT, ["N", 3])], [])
    assert "exactly one graph input, found 2 (x, x2)" in _err(save(two_in, "two_in.onnx"))
    two_out = make_model([h.make_node("Relu", ["x"], ["out"], name="r"), h.make_node("Relu", ["x"], ["o2"], name="r2")],
                         [h.make_tensor_value_info("x", T.FLOAT, ["N", 3])],
                         [h.make_tensor_value_info("out", T.FLOAT, ["N", 3]),
                          h.make_tensor_value_info("o2", T.FLOAT, ["N", 3])], [])
    assert "exactly one graph output, found 2" in _err(save(two_out, "two_out.onnx"))
    ints = make_model([h.make_node("Relu", ["x"], ["out"], name="r")],
                      [h.make_tensor_value_info("x", T.INT64, ["N", 3])],
                      [h.make_tensor_value_info("out", T.INT64, ["N", 3])], [])
    assert "must be FLOAT or DOUBLE" in _err(save(ints, "ints.onnx"))


def test_unsupported_op_names_node_and_op():
    m = graphs.qcdq_mlp(True)
    fc = next(n for n in m.graph.node if n.name == "fc0")
    m.graph.node.insert(list(m.graph.node).index(fc) + 1, h.make_node("Sin", [fc.output[0]], ["s"], name="my_sin"))
    next(n for n in m.graph.node if n.name == "act0.Q").input[0] = "s"
    msg = _err(save(m, "sin.onnx"))
    assert "node 'my_sin' (op Sin, domain ai.onnx) is not supported" in msg
    custom = make_model([h.make_node("Foo", ["x"], ["out"], name="weird", domain="com.example")],
                        [h.make_tensor_value_info("x", T.FLOAT, ["N", 3])],
                        [h.make_tensor_value_info("out", T.FLOAT, ["N", 3])], [])
    custom.opset_import.append(h.make_opsetid("com.example", 1))
    msg = _err(save(custom, "custom.onnx"))
    assert "node 'weird' (op Foo, domain com.example)" in msg and "not supported" in msg and "\n" not in msg


def test_patterns_without_exact_meaning():
    # a Floor with no Add(0.5) in front rounds down: a first-class quantizer, equal to onnxruntime
    floor = make_model([h.make_node("Mul", ["x", "k"], ["v"], name="m"), h.make_node("Floor", ["v"], ["f"], name="fl"),
                        h.make_node("Clip", ["f", "lo", "hi"], ["out"], name="c")],
                       [h.make_tensor_value_info("x", T.FLOAT, ["N", 3])],
                       [h.make_tensor_value_info("out", T.FLOAT, ["N", 3])],
                       [h.make_tensor("k", T.FLOAT, [], [4.0]), h.make_tensor("lo", T.FLOAT, [], [0.0]),
                        h.make_tensor("hi", T.FLOAT, [], [255.0])])
    path = save(floor, "floor.onnx")
    m = load_onnx(path)
    assert m[0].spec.rounding == "down"
    xs = np.linspace(-1.0, 70.0, 2001, dtype=np.float32).reshape(-1, 3)[:600]
    with torch.no_grad():
        mine = m(torch.tensor(xs, dtype=torch.float64)).numpy()
    assert np.array_equal(mine, run_onnxruntime(path, xs).astype(np.float64))
    # a Clip range that is no integer format
    odd = make_model([h.make_node("Round", ["x"], ["r"], name="rd"), h.make_node("Clip", ["r", "lo", "hi"], ["out"], name="c")],
                     [h.make_tensor_value_info("x", T.FLOAT, ["N", 3])],
                     [h.make_tensor_value_info("out", T.FLOAT, ["N", 3])],
                     [h.make_tensor("lo", T.FLOAT, [], [0.0]), h.make_tensor("hi", T.FLOAT, [], [200.0])])
    # an input saturation range that is no integer format: the clip runs before the rounding
    path = save(odd, "odd.onnx")
    m = load_onnx(path)
    xs = np.linspace(-3.0, 230.0, 1800, dtype=np.float32).reshape(-1, 3)
    with torch.no_grad():
        mine = m(torch.tensor(xs, dtype=torch.float64)).numpy()
    assert np.array_equal(mine, run_onnxruntime(path, xs).astype(np.float64))
    # an input quantizer on a model that quantizes its input already
    assert "quantizes its input already" in _err(save(graphs.qcdq_mlp(True), "q2.onnx"),
                                                 input_quant=QuantSpec(8, False, 1.0))
    # a quantized chain that branches
    br = graphs.qcdq_mlp(True)
    out = next(n for n in br.graph.node if n.name == "in.DQ").output[0]
    br.graph.node.append(h.make_node("Relu", [out], ["dangling"], name="side_branch"))
    msg = _err(save(br, "branch.onnx"))
    assert "feeds several nodes" in msg and "side_branch" in msg


def test_requant_argument():
    with pytest.raises(ValueError, match="requant"):
        load_onnx(save(graphs.qcdq_mlp(True), "q3.onnx"), requant="fast")
