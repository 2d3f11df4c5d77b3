"""export -> onnxruntime -> import: onnxruntime's outputs equal the exact integer semantics, and the
imported model reproduces them exactly (10^4 inputs each, with rounding ties)."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import qnn_factory as qf
from qa_lirpa import QuantSpec, integer_forward
from qa_lirpa.models import build_model
from qa_lirpa.nn import QuantAct, QuantConv2d, QuantInput, QuantLinear, accumulator_bias_spec
from qa_lirpa.onnx import OnnxExportError, export_onnx, load_onnx, run_onnxruntime

from onnx_helpers import HALF_UP_BAD, as64, pixel_inputs

N = 10_000


def spread_weights(model: nn.Module, seed: int) -> nn.Module:
    """Weights over the whole code range and large biases: saturating activations, big sums."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (QuantLinear, QuantConv2d)):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g, dtype=m.weight.dtype) * 2 - 1)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g, dtype=m.bias.dtype) * 8 - 4)
    return model


# every bit width, rounding mode and output format for the MLP; a spread of them for the CNN
CASES = [("mlp", (1, 14, 14), b, r, o) for b, r, o in [
    (4, "half_up", None), (4, "half_even", 8), (6, "half_up", 8), (6, "half_even", None),
    (8, "half_up", None), (8, "half_even", 8), (8, "half_up", 8), (8, "half_even", None)]]
CASES += [("small_conv", (1, 12, 12), b, r, o) for b, r, o in [
    (4, "half_up", None), (6, "half_even", 8), (8, "half_up", 8), (8, "half_even", None)]]


@pytest.mark.parametrize("arch,shape,bits,rounding,out_bits", CASES)
def test_build_model_roundtrip_exact(tmp_path, arch, shape, bits, rounding, out_bits):
    torch.manual_seed(bits)
    model = build_model(arch, shape, 10, bits=bits, hidden=[32], rounding=rounding, out_bits=out_bits)
    model = spread_weights(model, seed=bits).double().eval()
    path = tmp_path / "qnn.onnx"
    export_onnx(model, path, shape)
    x = pixel_inputs(N, shape, seed=bits)
    ref = integer_forward(model, as64(x)).numpy()

    y = run_onnxruntime(path, x)
    assert y.dtype == np.float32 and y.shape == (N, 10)
    np.testing.assert_array_equal(y.astype(np.float64), ref)
    y0 = run_onnxruntime(path, x[:2000], optimize=False)            # unfused reference kernels too
    np.testing.assert_array_equal(y0.astype(np.float64), ref[:2000])

    imported = load_onnx(path)
    kinds = [type(m) for m in imported]
    assert kinds == [type(m) for m in model], (kinds, [type(m) for m in model])   # plain layers, same chain
    assert imported.quantized
    np.testing.assert_array_equal(integer_forward(imported, as64(x)).numpy(), ref)
    with torch.no_grad():                                            # the float64 forward too
        np.testing.assert_array_equal(imported(as64(x[:1000])).numpy(), ref[:1000])


@pytest.mark.parametrize("rounding", ["half_up", "half_even"])
def test_per_channel_padding_and_unit_scale_input(tmp_path, rounding):
    """qnn_factory models: per-channel weight scales, conv padding, a signed output quantizer."""
    for i, (model, shape) in enumerate([(qf.mlp([20, 16, 16, 3], rounding=rounding, per_channel=True, out_act=True), (20,)),
                                        (qf.cnn(rounding=rounding, hw=8), (1, 8, 8))]):
        path = tmp_path / f"m{i}.onnx"
        export_onnx(model, path, shape)
        x = pixel_inputs(N, shape, seed=i)
        ref = integer_forward(model, as64(x)).numpy()
        np.testing.assert_array_equal(run_onnxruntime(path, x).astype(np.float64), ref)
        np.testing.assert_array_equal(integer_forward(load_onnx(path), as64(x)).numpy(), ref)


def test_graph_shape_and_patterns(tmp_path):
    """One FLOAT input with a dynamic batch, one FLOAT output; QDQ on the input (half even); hidden
    half-even quantizers as Round; half up as the exact Floor/GreaterOrEqual pattern."""
    even = build_model("mlp", (1, 6, 6), 10, bits=8, hidden=[16], rounding="half_even", out_bits=8)
    export_onnx(even, tmp_path / "even.onnx", (1, 6, 6))
    g = onnx.load(tmp_path / "even.onnx").graph
    assert len(g.input) == 1 and len(g.output) == 1
    assert g.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert g.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    ops = [n.op_type for n in g.node]
    assert ops[:2] == ["QuantizeLinear", "DequantizeLinear"] and "Round" in ops
    assert ops.count("QuantizeLinear") == 2                  # input and final output only
    up = build_model("mlp", (1, 6, 6), 10, bits=8, hidden=[16], rounding="half_up")
    export_onnx(up, tmp_path / "up.onnx", (1, 6, 6))
    ops = [n.op_type for n in onnx.load(tmp_path / "up.onnx").graph.node]
    assert "QuantizeLinear" not in ops and {"Floor", "GreaterOrEqual", "Cast", "Clip"} <= set(ops)
    # the value at which Add(0.5) -> Floor would be wrong: exact half-up gives code 0
    x = np.full((1, 1, 6, 6), HALF_UP_BAD, np.float32)
    np.testing.assert_array_equal(run_onnxruntime(tmp_path / "up.onnx", x).astype(np.float64),
                                  integer_forward(up.double(), as64(x)).numpy())
    assert int(up[0].codes(as64(x)).max()) == 0


def test_batch_sizes_and_torch_inputs(tmp_path):
    model = build_model("mlp", (1, 5, 5), 4, bits=6, hidden=[8])
    export_onnx(model, tmp_path / "m.onnx", (1, 5, 5))
    x = pixel_inputs(7, (1, 5, 5))
    full = run_onnxruntime(tmp_path / "m.onnx", x)
    for b in (1, 3):
        np.testing.assert_array_equal(run_onnxruntime(tmp_path / "m.onnx", torch.tensor(x[:b])), full[:b])


# ----- refusals ----------------------------------------------------------------------------------
def _mlp(in_spec, w_spec, b_spec, act=None, n_in=4):
    layers = [QuantInput(in_spec), QuantLinear(n_in, 3, w_spec, b_spec)]
    if act is not None:
        layers.append(act)
    return nn.Sequential(*layers).double()


def test_refuses_what_it_cannot_express_exactly(tmp_path):
    p2 = QuantSpec(8, False, 1.0, rounding="half_up")
    w = QuantSpec(8, True, 2.0 ** -7, rounding="half_up")
    path = tmp_path / "m.onnx"
    with pytest.raises(OnnxExportError, match="power of two"):
        export_onnx(_mlp(QuantSpec(8, False, 0.1), w, accumulator_bias_spec(QuantSpec(8, False, 0.1), w)), path, [4])
    with pytest.raises(OnnxExportError, match="float bias"):
        export_onnx(_mlp(p2, w, None), path, [4])
    with pytest.raises(OnnxExportError, match="power of two"):
        export_onnx(_mlp(p2, w, accumulator_bias_spec(p2, w), QuantAct(QuantSpec(8, False, 0.3))), path, [4])
    w16 = QuantSpec(16, True, 2.0 ** -15)
    big = _mlp(p2, w16, accumulator_bias_spec(p2, w16), n_in=784)
    with torch.no_grad():
        big[1].weight.fill_(0.999)
    with pytest.raises(OnnxExportError, match="2\\^24"):
        export_onnx(big, path, [784])
    with pytest.raises(OnnxExportError, match="QuantInput"):
        export_onnx(nn.Sequential(nn.Linear(4, 3)), path, [4])
    with pytest.raises(OnnxExportError, match="Tanh"):
        export_onnx(nn.Sequential(QuantInput(p2), nn.Tanh()), path, [4])
    with pytest.raises(OnnxExportError, match="opset"):
        export_onnx(_mlp(p2, w, accumulator_bias_spec(p2, w)), path, [4], opset=11)
    assert not path.exists()
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_write_is_atomic(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous")
    bad = nn.Sequential(QuantInput(QuantSpec(8, False, 0.1)), nn.Flatten())
    with pytest.raises(OnnxExportError):
        export_onnx(bad, path, [4])
    assert path.read_bytes() == b"previous"
    good = nn.Sequential(QuantInput(QuantSpec(8, False, 1.0)), nn.Flatten())
    export_onnx(good, path, [4])
    assert onnx.load(path).graph.output[0].name == "output"
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]
