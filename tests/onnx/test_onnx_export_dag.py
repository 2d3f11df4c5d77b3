"""Exporting QNN graphs (residual adds, pooling, concatenation, folded BatchNorm): onnxruntime's
outputs equal the exact integer semantics bit for bit, with and without its graph optimizations,
on grid inputs with saturation and rounding ties; the float32 envelope of these exact graphs is
zero; what float32 cannot reproduce is refused with a one-line reason."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import qnn_factory as qf
from qa_lirpa import QuantSpec, integer_forward
from qa_lirpa.nn import (QNNGraph, QuantAct, QuantAdd, QuantAvgPool2d, QuantConcat, QuantConv2d, QuantInput,
                         QuantLinear, accumulator_bias_spec)
from qa_lirpa.onnx import OnnxExportError, export_onnx, float32_envelope, run_onnxruntime

from onnx_helpers import as64, pixel_inputs

N = 3000


def _spread(model: nn.Module, seed: int, w: float = 1.0, b: float = 30.0) -> nn.Module:
    """Weights over the whole code range and large biases (saturating quantizers)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (QuantLinear, QuantConv2d)):
            with torch.no_grad():
                m.weight.copy_((torch.rand(m.weight.shape, generator=g, dtype=m.weight.dtype) * 2 - 1) * w)
                if m.bias is not None:
                    m.bias.copy_((torch.rand(m.bias.shape, generator=g, dtype=m.bias.dtype) * 2 - 1) * b)
    return model


def _check_exact(model: nn.Module, shape, path, seed: int = 0, n: int = N) -> np.ndarray:
    export_onnx(model, path, shape)
    x = pixel_inputs(n, shape, seed=seed)
    x[:4] = np.float32(-8.0)                    # extremes: below and above the input grid
    x[4:8] = np.float32(300.0)
    x[8:12] = np.float32(0.0)
    ref = integer_forward(model, as64(x)).numpy()
    y = run_onnxruntime(path, x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y.astype(np.float64).reshape(ref.shape), ref)
    y0 = run_onnxruntime(path, x[:1000], optimize=False)             # the unfused kernels too
    np.testing.assert_array_equal(y0.astype(np.float64).reshape(ref[:1000].shape), ref[:1000])
    return ref


# ----- the factory's DAG QNNs: 6 kinds x 2 roundings x 3 weight draws = 36 graphs ----------------
@pytest.mark.parametrize("kind", qf.DAG_KINDS)
@pytest.mark.parametrize("rounding", ["half_up", "half_even"])
def test_random_dag_qnns_match_integer_forward(tmp_path, kind, rounding):
    for seed in range(3):
        model = qf.dag_qnn(kind, seed=seed, rounding=rounding)
        if seed == 2:
            _spread(model, seed, w=1.0, b=6.0)
        ref = _check_exact(model, model.input_shape, tmp_path / f"{kind}_{seed}.onnx", seed=seed)
        assert len(np.unique(ref)) > 3          # not a constant network
        env = float32_envelope(model)
        assert env.exact, env.notes


# ----- hand-built residual and pooling networks ---------------------------------------------------
def _residual_cnn(rounding: str, seed: int) -> QNNGraph:
    """Two residual blocks (the second adds a signed branch to the unsigned one), an average pool
    with a 4-element window, a max pool and a concat of two heads."""
    torch.manual_seed(seed)
    ins = QuantSpec(8, False, 1.0, rounding=rounding)
    ws = QuantSpec(6, True, 2.0 ** -5, rounding=rounding)
    act = QuantSpec(6, False, 2.0 ** -1, rounding=rounding)
    sact = QuantSpec(6, True, 2.0 ** -2, rounding=rounding)
    c0 = QuantConv2d(1, 3, 3, ws, accumulator_bias_spec(ins, ws), padding=1)
    c1 = QuantConv2d(3, 3, 3, ws, accumulator_bias_spec(act, ws), padding=1)
    c2 = QuantConv2d(3, 3, 3, ws, accumulator_bias_spec(act, ws), padding=1)
    fa = QuantLinear(3 * 3 * 3, 4, ws, accumulator_bias_spec(act, ws))
    fb = QuantLinear(3 * 3 * 3, 3, ws, accumulator_bias_spec(act, ws))
    fc = QuantLinear(7, 5, ws, accumulator_bias_spec(act, ws))
    nodes = [("q", QuantInput(ins), ["input"]), ("c0", c0, ["q"]), ("a0", QuantAct(act), ["c0"]),
             ("c1", c1, ["a0"]), ("s1", QuantAct(sact), ["c1"]), ("add1", QuantAdd(act), ["a0", "s1"]),
             ("c2", c2, ["add1"]), ("add2", QuantAdd(act), ["add1", "c2"]),
             ("avg", QuantAvgPool2d(2, stride=2, padding=1), ["add2"]), ("a2", QuantAct(act), ["avg"]),
             ("mp", nn.MaxPool2d(3, stride=1, padding=1), ["a2"]), ("flat", nn.Flatten(), ["mp"]),
             ("fa", fa, ["flat"]), ("ha", QuantAct(act), ["fa"]), ("fb", fb, ["flat"]), ("hb", QuantAct(act), ["fb"]),
             ("cat", QuantConcat(1), ["ha", "hb"]), ("fc", fc, ["cat"]),
             ("out", QuantAct(QuantSpec(8, True, 2.0 ** -2, rounding=rounding)), ["fc"])]
    return _spread(QNNGraph(nodes).double().eval(), seed, w=0.6, b=12.0)


@pytest.mark.parametrize("rounding", ["half_up", "half_even"])
def test_residual_pool_concat_network(tmp_path, rounding):
    model = _residual_cnn(rounding, seed=7)
    ref = _check_exact(model, (1, 5, 5), tmp_path / "res.onnx", seed=3, n=5000)
    assert len(np.unique(ref)) > 10
    ops = [n.op_type for n in onnx.load(tmp_path / "res.onnx").graph.node]
    assert {"Add", "AveragePool", "MaxPool", "Concat", "Conv", "Gemm"} <= set(ops)
    assert float32_envelope(model).exact


def test_residual_output_add_and_identity_output(tmp_path):
    """The output node is an Add (quantizer op) fed straight by an affine layer and by the input's
    DequantizeLinear: it must not become QuantizeLinear (no DequantizeLinear -> Gemm -> QuantizeLinear
    for onnxruntime to fuse); the graph's output is the output node, not the last node written."""
    ins = QuantSpec(8, False, 1.0)
    ws = QuantSpec(6, True, 2.0 ** -5)
    lin = QuantLinear(4, 4, ws, accumulator_bias_spec(ins, ws))
    dead = QuantLinear(4, 2, ws, accumulator_bias_spec(ins, ws))
    nodes = [("q", QuantInput(ins), ["input"]), ("l", lin, ["q"]), ("add", QuantAdd(QuantSpec(8, True, 2.0)), ["q", "l"]),
             ("dead", dead, ["q"])]
    model = _spread(QNNGraph(nodes, output="add").double().eval(), 1, w=1.0, b=40.0)
    _check_exact(model, (4,), tmp_path / "add.onnx")
    g = onnx.load(tmp_path / "add.onnx").graph
    assert [n.op_type for n in g.node].count("QuantizeLinear") == 1
    producer = [n for n in g.node if "output" in n.output]
    assert len(producer) == 1 and producer[0].op_type != "Gemm"


def test_refusals_on_graphs(tmp_path):
    ins = QuantSpec(8, False, 1.0)
    act = QuantSpec(6, False, 2.0 ** -1)
    path = tmp_path / "m.onnx"
    pool3 = QNNGraph([("q", QuantInput(ins), ["input"]), ("p", QuantAvgPool2d(3), ["q"]),
                      ("a", QuantAct(act), ["p"])]).double()
    with pytest.raises(OnnxExportError, match="kernel area 9 is not a power of two"):
        export_onnx(pool3, path, (1, 6, 6))
    # a sum beyond float32's 24 bits
    wide = QuantSpec(16, True, 2.0 ** -20)
    big = QNNGraph([("q", QuantInput(QuantSpec(8, False, 1.0)), ["input"]), ("a", QuantAct(wide), ["q"]),
                    ("b", QuantAct(QuantSpec(16, True, 2.0 ** -2)), ["q"]),
                    ("add", QuantAdd(QuantSpec(8, True, 1.0)), ["a", "b"])]).double()
    with pytest.raises(OnnxExportError, match="2\\^24"):
        export_onnx(big, path, (4,))
    assert not path.exists()
