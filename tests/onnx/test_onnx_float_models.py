"""Plain float models: our chain converter, the input quantizer that makes the input grid finite,
and the onnx2pytorch fallback for graphs that are not a chain."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

import qa_lirpa
from qa_lirpa import QuantSpec
from qa_lirpa.compat import import_auto_lirpa
from qa_lirpa.nn import QuantInput
from qa_lirpa.onnx import load_onnx, run_onnxruntime

from onnx_helpers import FloatCNN, FloatMLP, _DIR, export_float


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        x = torch.flatten(x, 1)
        return self.b(torch.relu(self.a(x)) + x)


def test_float_chain_models():
    torch.manual_seed(0)
    for i, (net, shape, kinds) in enumerate([
            (FloatMLP(), (20,), [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]),
            (FloatCNN(), (1, 14, 14), [nn.Conv2d, nn.ReLU, nn.Conv2d, nn.ReLU, nn.Flatten, nn.Linear])]):
        path = export_float(net, shape, f"{_DIR}/float_{i}.onnx")
        model = load_onnx(path)
        assert [type(m) for m in model] == kinds and not model.quantized
        x = np.random.default_rng(i).random((500, *shape)).astype(np.float32)
        with torch.no_grad():
            np.testing.assert_allclose(model(torch.tensor(x)).numpy(), run_onnxruntime(path, x), rtol=1e-5, atol=1e-6)


def test_input_quant_makes_the_grid_finite():
    torch.manual_seed(1)
    path = export_float(FloatCNN(), (1, 14, 14), f"{_DIR}/float_cnn_q.onnx")
    spec = QuantSpec(8, False, 1 / 256)
    model = load_onnx(path, input_quant=spec)
    assert isinstance(model[0], QuantInput) and model[0].spec == spec
    assert next(model.parameters()).dtype == torch.float64
    x = torch.rand(2, 1, 14, 14, dtype=torch.float64)
    al = import_auto_lirpa()
    bm = qa_lirpa.bounded_module(model, x)
    ptb = al.PerturbationLpNorm(norm=float("inf"), x_L=x - 2 / 256, x_U=x + 2 / 256)
    lb, ub = bm.compute_bounds(x=(al.BoundedTensor(x, ptb),), method="CROWN")
    with torch.no_grad():
        y = model(x)
    assert (lb <= y + 1e-9).all() and (ub >= y - 1e-9).all()


def test_onnx2pytorch_fallback_and_flatten_fix():
    """A residual graph is not a chain: it goes through onnx2pytorch, whose Flatten is replaced so
    that a BoundedModule built with batch 4 still works on batch 2."""
    torch.manual_seed(2)
    path = export_float(Residual(), (2, 4), f"{_DIR}/residual.onnx")
    model = load_onnx(path)
    assert type(model[0]).__name__ == "ConvertModel"
    assert not any(type(m).__module__.startswith("onnx2pytorch") and type(m).__name__ == "Flatten"
                   for m in model.modules())
    x = np.random.default_rng(0).random((300, 2, 4)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(model(torch.tensor(x)).numpy(), run_onnxruntime(path, x), rtol=1e-5, atol=1e-6)
    bm = qa_lirpa.bounded_module(model, torch.tensor(x[:4]))
    out = bm(torch.tensor(x[:2]))
    assert out.shape == (2, 3)


class Reshapes(nn.Module):
    def __init__(self):
        super().__init__()
        self.c, self.l = nn.Conv2d(1, 2, 3), nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        h = torch.relu(self.c(x.reshape(-1, 1, 6, 6)))
        return self.l(h.view(h.size(0), -1))          # Shape -> Gather -> Unsqueeze -> Concat -> Reshape


def test_reshape_patterns():
    torch.manual_seed(3)
    path = export_float(Reshapes(), (36,), f"{_DIR}/reshapes.onnx")
    model = load_onnx(path)
    assert [type(m) for m in model] == [nn.Unflatten, nn.Conv2d, nn.ReLU, nn.Flatten, nn.Linear]
    x = np.random.default_rng(0).random((50, 36)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(model(torch.tensor(x)).numpy(), run_onnxruntime(path, x), rtol=1e-5, atol=1e-6)
