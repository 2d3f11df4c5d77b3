"""Shared pieces of the ONNX tests: inputs with rounding ties, small hand-built graphs, and
quantize_static models (cached per process)."""
from __future__ import annotations

import functools
import os
import tempfile
import warnings

import numpy as np
import torch

HALF_UP_BAD = np.float32(0.5) - np.float32(2.0 ** -25)   # fl32(this + 0.5) == 1.0


def pixel_inputs(n: int, shape, seed: int = 0, lo: float = -8.0, hi: float = 264.0) -> np.ndarray:
    """``n`` float32 raw-pixel inputs: uniform (also outside 0..255, to saturate), exact integers,
    exact ties k + 1/2, the float32 neighbours of ties, and the value where Add(0.5)->Floor is wrong."""
    rng = np.random.default_rng(seed)
    d = int(np.prod(shape))
    x = (lo + rng.random((n, d)) * (hi - lo)).astype(np.float32)
    q = n // 5
    x[:q] = np.floor(x[:q]) + np.float32(0.5)                                 # ties
    x[q:2 * q] = np.floor(x[q:2 * q])                                         # integers
    t = np.floor(x[2 * q:3 * q]) + np.float32(0.5)
    x[2 * q:3 * q] = np.where(rng.random(t.shape) < 0.5, np.nextafter(t, np.float32(np.inf)),
                              np.nextafter(t, np.float32(-np.inf)))           # next to ties
    mask = rng.random((q, d)) < 0.05
    x[3 * q:4 * q][mask] = HALF_UP_BAD
    return x.reshape(n, *shape)


def scaled_ties(scale: float, kmin: int, kmax: int) -> np.ndarray:
    """float32 inputs at and next to the ties (k + 1/2) * scale of a quantizer with that scale."""
    k = np.arange(kmin, kmax, dtype=np.float64)
    t = ((k + 0.5) * np.float64(np.float32(scale))).astype(np.float32)
    return np.concatenate([t, np.nextafter(t, np.float32(np.inf)), np.nextafter(t, np.float32(-np.inf))])


def as64(x: np.ndarray) -> torch.Tensor:
    return torch.tensor(np.asarray(x), dtype=torch.float64)


class _Reader:
    def __init__(self, shape, n=8):
        self.it = iter([{"x": np.random.default_rng(100 + i).random((4, *shape)).astype(np.float32)}
                        for i in range(n)])

    def get_next(self):
        return next(self.it, None)


class FloatMLP(torch.nn.Module):
    def __init__(self, sizes=(20, 32, 16, 5)):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


class FloatCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.c2 = torch.nn.Conv2d(4, 8, 3, stride=2)
        self.fc = torch.nn.Linear(8 * 3 * 3, 5)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.c2(torch.relu(self.c1(x)))), 1))


def export_float(net: torch.nn.Module, shape, path: str) -> str:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), torch.rand(1, *shape), path, dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, opset_version=17)
    return path


_DIR = tempfile.mkdtemp(prefix="qa_lirpa_onnx_tests_")


@functools.lru_cache(maxsize=None)
def quantize_static_model(arch: str, per_channel: bool, reduce_range: bool = True) -> tuple[str, tuple]:
    """A small float MLP or CNN, exported with torch.onnx (TorchScript exporter) and quantized with
    ``onnxruntime.quantization.quantize_static`` (QDQ format, calibration data reader)."""
    import logging

    from onnxruntime.quantization import QuantFormat, quantize_static

    torch.manual_seed(1)
    net, shape = (FloatMLP(), (20,)) if arch == "mlp" else (FloatCNN(), (1, 14, 14))
    fpath = export_float(net, shape, os.path.join(_DIR, f"{arch}_float.onnx"))
    qpath = os.path.join(_DIR, f"{arch}_qdq_pc{int(per_channel)}_rr{int(reduce_range)}.onnx")
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)        # quantize_static's "consider pre-processing"
    try:
        quantize_static(fpath, qpath, _Reader(shape), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        reduce_range=reduce_range)
    finally:
        logging.getLogger().setLevel(level)
    return qpath, shape


def make_model(nodes, inputs, outputs, inits, opset: int = 17):
    from onnx import helper

    g = helper.make_graph(nodes, "g", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = helper.find_min_ir_version_for([helper.make_opsetid("", opset)])
    return m


def save(model, name: str) -> str:
    import onnx

    path = os.path.join(_DIR, name)
    onnx.save(model, path)
    return path
