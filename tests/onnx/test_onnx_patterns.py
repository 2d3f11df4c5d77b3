"""Hand-built graphs: QCDQ (QuantizeLinear -> Clip -> DequantizeLinear, as Brevitas exports), the
Mul -> Add(0.5) -> Floor -> Clip half-up pattern, preprocessing before the input quantizer."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from qa_lirpa import integer_forward
from qa_lirpa.nn import QuantAct, QuantInput, QuantLinear
from qa_lirpa.onnx import load_onnx, run_onnxruntime
from qa_lirpa.onnx.ort_layers import Float32QuantInput, Float32Requant

import onnx_graphs as graphs
from onnx_helpers import HALF_UP_BAD, as64, pixel_inputs, save, scaled_ties

N = 10_000


@pytest.mark.parametrize("pow2", [True, False])
def test_qcdq_brevitas_style(pow2):
    path = save(graphs.qcdq_mlp(pow2), f"qcdq_{int(pow2)}.onnx")
    model = load_onnx(path)
    kinds = [type(m) for m in model]
    if pow2:
        assert kinds == [QuantInput, QuantLinear, QuantAct, QuantLinear, QuantAct]
    else:
        assert kinds == [Float32QuantInput, QuantLinear, Float32Requant, QuantLinear, Float32Requant]
    # the Clips narrow the int8 containers: 4-bit signed activations, narrow 4-bit weights
    assert (model[0].spec.bits, model[0].spec.signed, model[0].spec.qmin) == (4, True, -8)
    assert (model[1].weight_spec.bits, model[1].weight_spec.qmin, model[1].weight_spec.qmax) == (4, -7, 7)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((N, 6)) * 3).astype(np.float32)
    x[: N // 2] = rng.choice(scaled_ties(model[0].spec.scale[0], -10, 10), size=(N // 2, 6))
    y = run_onnxruntime(path, x)
    r = integer_forward(model, as64(x)).numpy()
    np.testing.assert_array_equal(r.astype(np.float32), y)
    with torch.no_grad():
        np.testing.assert_array_equal(model(as64(x[:2000])).numpy(), r[:2000])


def test_add_half_floor_pattern_is_reproduced_exactly():
    """Mul(1/s) -> Add(0.5) -> Floor: at x/s = 0.5 - 2^-25 float32 rounds the sum up to 1.0, so
    onnxruntime's code is 1 where exact half-up rounding gives 0. The import reproduces onnxruntime."""
    path = save(graphs.half_up_naive(), "half_up_naive.onnx")
    model = load_onnx(path)
    q_in = model[0]
    assert isinstance(q_in, Float32QuantInput) and q_in.rounding_impl == "add_half_floor"
    assert q_in.spec.rounding == "half_up" and q_in.spec.bits == 8 and q_in.output_scale == 2.0 ** -8
    assert [type(m) for m in model][1:] == [QuantLinear, QuantAct]
    x = pixel_inputs(N, (5,))
    y = run_onnxruntime(path, x)
    np.testing.assert_array_equal(integer_forward(model, as64(x)).numpy().astype(np.float32), y)
    bad = np.full((1, 5), HALF_UP_BAD, np.float32)
    assert q_in.codes(as64(bad)).tolist() == [[1] * 5]
    assert QuantInput(q_in.spec).codes(as64(bad)).tolist() == [[0] * 5]       # exact half up


def test_preprocessing_before_input_quantizer():
    """Sub(mean) -> Div(std) -> QuantizeLinear: replayed in float32 as onnxruntime computes it."""
    path = save(graphs.normalized_input(), "normalized.onnx")
    model = load_onnx(path)
    assert len(model) == 1 and isinstance(model[0], Float32QuantInput)
    assert [p[0] for p in model[0].program] == ["sub", "div", "div"]
    rng = np.random.default_rng(1)
    x = rng.random((N, 3)).astype(np.float32)
    # inputs whose normalized value sits on a tie of the quantizer
    k = rng.integers(-100, 100, size=(N // 2, 3))
    x[: N // 2] = ((k + 0.5) * 0.0123 * 0.3081 + 0.1307).astype(np.float32)
    np.testing.assert_array_equal(integer_forward(model, as64(x)).numpy().astype(np.float32),
                                  run_onnxruntime(path, x))
