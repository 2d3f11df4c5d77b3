"""The AAAI'21 QNN verification benchmark (Henzinger, Lechner, Zikelic: "Scalable Verification of
Quantized Neural Networks", AAAI 2021) as a qa_lirpa model.

The authors publish Keras HDF5 weight files of a 784-64-32 MLP (MNIST and Fashion-MNIST). The
quantization is not stored in the file; it is the fixed-point scheme of their code, reproduced here
exactly (see ``docs`` / the project notes), with round half UP everywhere:

* input: the raw pixel ``p`` in 0..255 is the integer code (8-bit unsigned, f = 8);
* weights: 6-bit signed, f = 5: ``qW = clip(floor(clip(w, -1, 31/32) * 32 + 0.5), -32, 31)``;
* biases: 6-bit signed, f = 4: ``qb = clip(floor(clip(b, -2, 31/16) * 16 + 0.5), -32, 31)``;
* layer 1: ``acc = p . qW1 + qb1 * 2^9``; ``h = clip(floor((acc + 2^8) / 2^9), 0, 63)`` (6-bit
  unsigned, f = 4; the clip at 0 is the ReLU);
* layer 2: ``acc2 = h . qW2 + qb2 * 2^5``; ``out = clip(floor((acc2 + 2^4) / 2^5), -32, 31)``
  (6-bit signed, f = 4): 32 saturated outputs, the class is the argmax over all 32 with ties to
  the smallest index.

:func:`load_aaai21` builds ``QuantInput -> Flatten -> QuantLinear -> QuantAct -> QuantLinear ->
QuantAct`` whose :func:`qa_lirpa.integer_forward` is exactly this arithmetic (the input quantizer
has scale 1, so its codes are the pixels, and ``output_scale = 2^-8``, so the first layer sees
``p / 256`` as in the original). :func:`aaai21_robustness_spec` gives the exact violation condition
of the benchmark (ties broken towards the smaller index), :func:`published_verdicts` the published
Boolector results for samples 0..399.
"""
from __future__ import annotations

import math
import os
import re
import warnings
from typing import Union

import numpy as np
import torch
from torch import nn

from .base.errors import QaLirpaError
from .nn import QuantAct, QuantInput, QuantLinear
from .quant import QuantSpec
from .base.vnnlib import InputSpec

__all__ = [
    "AAAI21ModelError", "INPUT_SPEC", "WEIGHT_SPEC", "BIAS_SPEC", "HIDDEN_SPEC", "OUTPUT_SPEC",
    "OUTPUT_STEP", "BENCHMARK_EPS", "load_aaai21", "aaai21_robustness_spec", "published_verdicts",
    "benchmark_eps",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Raw pixels: the code is the pixel value.
INPUT_SPEC = QuantSpec.fixed_point(8, 0, signed=False, rounding="half_up")
#: What the first layer sees: ``p * 2^-8`` (the original f = 8 input format).
INPUT_OUTPUT_SCALE = 2.0 ** -8
#: 6-bit signed weights, f = 5 (range [-1, 31/32]).
WEIGHT_SPEC = QuantSpec.fixed_point(6, 5, signed=True, rounding="half_up")
#: 6-bit signed biases, f = 4 (range [-2, 31/16]).
BIAS_SPEC = QuantSpec.fixed_point(6, 4, signed=True, rounding="half_up")
#: 6-bit unsigned hidden activations, f = 4 (the clip at 0 is the ReLU).
HIDDEN_SPEC = QuantSpec.fixed_point(6, 4, signed=False, rounding="half_up")
#: 6-bit signed saturated outputs, f = 4.
OUTPUT_SPEC = QuantSpec.fixed_point(6, 4, signed=True, rounding="half_up")
#: Distance of two neighbouring output values (real units).
OUTPUT_STEP = OUTPUT_SPEC.scale[0]

#: Published perturbation radius (pixel units) per block of 100 test samples.
BENCHMARK_EPS = {0: 1, 1: 2, 2: 3, 3: 4}


class AAAI21ModelError(QaLirpaError, ValueError):
    """The weight file is missing, not HDF5, or does not have the benchmark's layout. The message
    starts with the file name."""


def _fail(path: PathLike, message: str) -> AAAI21ModelError:
    return AAAI21ModelError(f"{os.fspath(path)}: {message}")


_WEIGHT_RE = re.compile(r"(?:^|/)([^/]+)/(kernel|bias):0$")


def _find_dense_layers(path: PathLike, f) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(layer name, kernel, bias)`` of every dense layer in the file, in network order.

    Datasets are found by name (``.../<layer>/kernel:0`` and ``.../<layer>/bias:0``) anywhere in
    the file; the order is the file's ``layer_names`` attribute when present, else natural order of
    the layer names (``quantized_dense`` < ``quantized_dense_1`` < ``quantized_dense_2`` ...).
    """
    import h5py

    found: dict[str, dict[str, list[str]]] = {}

    def visit(name: str, obj) -> None:
        m = _WEIGHT_RE.search(name)
        if m and isinstance(obj, h5py.Dataset):
            found.setdefault(m.group(1), {}).setdefault(m.group(2), []).append(name)

    f.visititems(visit)
    layers = {k: v for k, v in found.items() if "kernel" in v}
    if not layers:
        raise _fail(path, "no dense layer weights found (expected datasets named like "
                          "'.../quantized_dense/kernel:0' and '.../quantized_dense/bias:0')")
    for name, parts in layers.items():
        if len(parts["kernel"]) != 1 or len(parts.get("bias", [])) != 1:
            raise _fail(path, f"layer {name!r}: expected exactly one 'kernel:0' and one 'bias:0' dataset, "
                              f"found {parts.get('kernel', [])} and {parts.get('bias', [])}")

    order: list[str] = []
    names_attr = f.attrs.get("layer_names")
    if names_attr is not None:
        for n in np.asarray(names_attr).reshape(-1):
            n = n.decode() if isinstance(n, bytes) else str(n)
            if n in layers and n not in order:
                order.append(n)
    if len(order) != len(layers):
        def natural(n: str):
            m = re.match(r"^(.*?)(?:_(\d+))?$", n)
            return (m.group(1), int(m.group(2) or 0))
        order = sorted(layers, key=natural)

    out = []
    for name in order:
        try:
            kernel = np.asarray(f[layers[name]["kernel"][0]][()])
            bias = np.asarray(f[layers[name]["bias"][0]][()])
        except Exception as err:  # unreadable dataset
            raise _fail(path, f"layer {name!r}: cannot read its weights ({err})") from None
        out.append((name, kernel, bias))
    return out


def _tf_float32_codes(v: np.ndarray, lo: float, hi: float, frac_bits: int, qmin: int, qmax: int) -> np.ndarray:
    """The codes as TensorFlow would compute them in float32 (to detect float32 near-ties)."""
    f32 = np.float32
    s = f32(2.0 ** frac_bits)
    c = np.floor(np.clip(v.astype(f32), f32(lo), f32(hi)) * s + f32(0.5))
    return np.clip(c, qmin, qmax).astype(np.int64)


def _exact_codes(v: np.ndarray, frac_bits: int, qmin: int, qmax: int) -> np.ndarray:
    """``clip(floor(v * 2^f + 1/2), qmin, qmax)`` exactly (float64 scaling by 2^f is exact)."""
    x = v.astype(np.float64) * (2.0 ** frac_bits)
    fl = np.floor(x)
    c = fl + (x - fl >= 0.5)
    return np.clip(c, qmin, qmax).astype(np.int64)


def load_aaai21(path: PathLike, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """Load an AAAI'21 benchmark MLP (Keras HDF5 weights) as a qa_lirpa model.

    Returns ``nn.Sequential(QuantInput, Flatten, QuantLinear, QuantAct, QuantLinear, QuantAct)``
    taking raw pixels (any shape ``[N, ...]`` with ``784`` values per sample for MNIST) whose
    :func:`qa_lirpa.integer_forward` is the exact integer semantics of the module docstring; the
    outputs are the 32 saturated values in real units (multiples of 1/16).

    The float forward is exact too in float64, and in float32 on CPU (every partial sum is a
    multiple of 2^-13 below 2^10 in magnitude), but not with TF32 matmuls on GPUs.

    Raises :class:`AAAI21ModelError` (message starting with the file name) when the file is missing,
    is not HDF5, or does not hold exactly two chained dense layers with finite weights.
    """
    try:
        import h5py
    except ImportError as err:  # pragma: no cover - h5py is a declared dependency
        raise ImportError("load_aaai21 needs h5py (pip install h5py)") from err

    p = os.fspath(path)
    if not os.path.isfile(p):
        raise _fail(p, "no such file (expected the AAAI'21 benchmark's Keras HDF5 weights)")
    try:
        f = h5py.File(p, "r")
    except Exception as err:
        raise _fail(p, f"not a readable HDF5 file ({type(err).__name__}: {err})") from None
    with f:
        dense = _find_dense_layers(p, f)

    if len(dense) != 2:
        raise _fail(p, f"expected 2 dense layers (784-64-32 MLP), found {len(dense)}: "
                       f"{[d[0] for d in dense]}")
    (n1, k1, b1), (n2, k2, b2) = dense
    if k1.ndim != 2 or k2.ndim != 2 or b1.shape != (k1.shape[1],) or b2.shape != (k2.shape[1],) \
            or k2.shape[0] != k1.shape[1]:
        raise _fail(p, f"layer shapes do not chain: {n1} kernel {k1.shape} bias {b1.shape}, "
                       f"{n2} kernel {k2.shape} bias {b2.shape} (expected (in, h), (h,), (h, out), (out,))")
    for name, arr in ((n1, k1), (n1, b1), (n2, k2), (n2, b2)):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(np.isfinite(arr)):
            raise _fail(p, f"layer {name!r}: weights must be finite floats, got dtype {arr.dtype}")

    # The exact codes of the notes versus TensorFlow's float32 arithmetic: they can only differ
    # for a value within float32 rounding of a tie; say so instead of silently picking one.
    for name, arr, fb, lo, hi in ((n1, k1, 5, -1.0, 31 / 32), (n1, b1, 4, -2.0, 31 / 16),
                                  (n2, k2, 5, -1.0, 31 / 32), (n2, b2, 4, -2.0, 31 / 16)):
        diff = int((_exact_codes(arr, fb, -32, 31) != _tf_float32_codes(arr, lo, hi, fb, -32, 31)).sum())
        if diff:
            warnings.warn(f"{p}: layer {name!r}: {diff} parameter(s) sit within float32 rounding of a "
                          "rounding tie; the exact half-up codes are used, TensorFlow's float32 "
                          "arithmetic may have rounded them differently", RuntimeWarning, stacklevel=2)

    n_in, n_hidden = k1.shape
    n_out = k2.shape[1]
    fc1 = QuantLinear(n_in, n_hidden, WEIGHT_SPEC, BIAS_SPEC)
    fc2 = QuantLinear(n_hidden, n_out, WEIGHT_SPEC, BIAS_SPEC)
    with torch.no_grad():
        # Keras kernels are (in, out); torch weights are (out, in). Values are copied as float64
        # (exact for the float32 file) and cast to ``dtype`` below (exact back to float32).
        fc1.weight.copy_(torch.from_numpy(k1.astype(np.float64).T.copy()))
        fc1.bias.copy_(torch.from_numpy(b1.astype(np.float64)))
        fc2.weight.copy_(torch.from_numpy(k2.astype(np.float64).T.copy()))
        fc2.bias.copy_(torch.from_numpy(b2.astype(np.float64)))
    model = nn.Sequential(
        QuantInput(INPUT_SPEC, output_scale=INPUT_OUTPUT_SCALE),
        nn.Flatten(),
        fc1,
        QuantAct(HIDDEN_SPEC),
        fc2,
        QuantAct(OUTPUT_SPEC),
    )
    model = model.to(dtype)
    model.eval()
    return model


def aaai21_robustness_spec(x_uint8, label: int, eps: int, out_step: float = OUTPUT_STEP,
                           n_outputs: int = 32) -> InputSpec:
    """The benchmark's exact violation condition for one sample as an :class:`InputSpec`.

    Input box: every pixel in ``[max(p - eps, 0), min(p + eps, 255)]`` (flattened, float64).
    Violation (one disjunct per output ``k != label``, over all ``n_outputs`` outputs):

    * ``k < label``: ``out_k >= out_label``, the row ``y_label - y_k <= 0``;
    * ``k > label``: ``out_k > out_label``; on the output grid (step ``out_step``) that is
      ``out_k >= out_label + step``, the row ``y_label - y_k <= -out_step``.

    So the spec is violated exactly when the argmax with ties to the smallest index is not ``label``
    for some integer input in the box (``out_step`` must be the output grid step: 1/16 here).
    """
    x = torch.as_tensor(x_uint8) if not isinstance(x_uint8, np.ndarray) else torch.from_numpy(x_uint8)
    x = x.detach().cpu().reshape(-1)
    if x.dtype.is_floating_point:
        if not torch.equal(x, torch.round(x)):
            raise ValueError("aaai21_robustness_spec: pixels must be integers 0..255")
    x = x.to(torch.int64)
    if x.numel() == 0 or int(x.min()) < 0 or int(x.max()) > 255:
        raise ValueError("aaai21_robustness_spec: pixels must be integers 0..255")
    eps = int(eps)
    if eps < 0:
        raise ValueError(f"aaai21_robustness_spec: eps must be >= 0, got {eps}")
    label = int(label)
    if not 0 <= label < n_outputs:
        raise ValueError(f"aaai21_robustness_spec: label {label} outside 0..{n_outputs - 1}")
    step = float(out_step)
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"aaai21_robustness_spec: out_step must be positive, got {out_step}")
    lo = np.maximum(x.numpy() - eps, 0).astype(np.float64)
    hi = np.minimum(x.numpy() + eps, 255).astype(np.float64)
    disjuncts = []
    for k in range(n_outputs):
        if k == label:
            continue
        mat = np.zeros((1, n_outputs), dtype=np.float64)
        mat[0, label], mat[0, k] = 1.0, -1.0
        rhs = np.array([0.0 if k < label else -step], dtype=np.float64)
        disjuncts.append((mat, rhs))
    return InputSpec(lo, hi, disjuncts)


# ----- the published results (Boolector), MNIST test samples 0..399 ---------------------------------

_MISCLASSIFIED = (18, 149, 217, 241, 247, 259, 321, 340, 381)
_VULNERABLE = (115, 151, 158, 282, 320)
_TIMEOUT = (
    104, 119, 175, 193, 195,
    204, 210, 211, 218, 221, 224, 227, 232, 233, 234, 235, 243, 244, 250, 251, 255, 257, 264, 266, 273,
    274, 275, 289, 290, 299,
    300, 301, 303, 307, 308, 322, 324, 325, 326, 328, 329, 335, 336, 337, 339, 341, 344, 345, 349, 350,
    352, 354, 357, 358, 359, 362, 366, 368, 370, 372, 373, 376, 377, 379, 383, 385, 386, 388, 389, 391,
    393, 394, 397,
)


def benchmark_eps(index: int) -> int:
    """The benchmark's radius for MNIST test sample ``index`` (0..399): 1, 2, 3 or 4 by block of 100."""
    if not 0 <= int(index) < 400:
        raise ValueError(f"the AAAI'21 benchmark covers samples 0..399, got {index}")
    return BENCHMARK_EPS[int(index) // 100]


def published_verdicts() -> dict[int, str]:
    """The published verdict of every MNIST test sample 0..399 at its benchmark radius
    (:func:`benchmark_eps`): ``"robust"``, ``"vulnerable"``, ``"timeout"`` or ``"misclassified"``.

    Per block (eps 1/2/3/4): robust 99/91/70/53, vulnerable 0/3/1/1, timeout 0/5/25/43,
    misclassified 1/1/4/3.
    """
    table = {i: "robust" for i in range(400)}
    for group, verdict in ((_MISCLASSIFIED, "misclassified"), (_VULNERABLE, "vulnerable"),
                           (_TIMEOUT, "timeout")):
        for i in group:
            table[i] = verdict
    return table


# The published table adds up; checked at import so a typo cannot slip in.
def _check_table() -> None:
    t = published_verdicts()
    expected = {0: (99, 0, 0, 1), 1: (91, 3, 5, 1), 2: (70, 1, 25, 4), 3: (53, 1, 43, 3)}
    for block, counts in expected.items():
        vs = [t[i] for i in range(100 * block, 100 * block + 100)]
        got = tuple(vs.count(v) for v in ("robust", "vulnerable", "timeout", "misclassified"))
        assert got == counts, (block, got, counts)


_check_table()
del _check_table
