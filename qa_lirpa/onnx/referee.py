"""onnxruntime as the meaning of an ONNX file, and the float32 envelope around an imported model.

An ONNX file means what onnxruntime computes on it: CPU provider, default session options, the
input cast to float32 (for a FLOAT input), float32 arithmetic wherever the graph has it. The model
that :func:`~qa_lirpa.onnx.load_onnx` imports is its *nominal* form: exact integer codes, exact
rational rescaling. The two agree exactly where every scale is a power of two and every accumulator
fits float32's 24-bit significand; elsewhere onnxruntime's result lies within a rigorous error
bound of the nominal one. :func:`float32_envelope` derives that bound per layer (a static bound,
valid for every input of the grid, and valid whether onnxruntime fuses a quantized group into an
integer kernel or runs it unfused in float32); :class:`OnnxReferee` runs onnxruntime on concrete
points. The verifier uses both: a box is dropped only when the property holds with the envelope's
margin, and a single grid point whose margin is within the envelope is decided by running
onnxruntime on it. The derivation is written out in ``docs/semantics.md`` ("onnxruntime is the
referee").

Notation: ``u = 2^-24`` (float32 unit roundoff), ``gamma(k) = k u / (1 - k u)``.

- A dot product of ``n`` float32 products plus a bias, summed in any order, with or without fused
  multiply-adds, whose operands are themselves float32 roundings of the nominal values (weights
  and activations dequantized in float32, a float bias), differs from the exact nominal value by at
  most ``gamma(n + 8) * (sum_i |w_i| (A + e) + |b|) + sum_i |w_i| e + r``, where ``A`` bounds the
  nominal inputs, ``e`` their own error and ``r`` the bias's distance to its nominal value (plus
  one accumulator step when onnxruntime may round a float bias into an int32 accumulator). The
  fused kernels (int32 accumulation, then ``fl32(fl32(acc) * M)`` with ``M = fl32(fl32(s_x s_w)
  / s_y)``) stay inside the same bound.
- A quantizer then rounds ``t = v / s_y`` computed in float32 (or through ``M``): onnxruntime's
  ``t`` lies within ``tol = e_v / s_y + 5 u (T + 1)`` of the nominal one (``T`` bounds ``|t|``),
  so its code lies between the nominal quantizer's codes at ``t - tol`` and ``t + tol``.
- A DequantizeLinear output ``fl32((q - z) s)`` is off by at most ``u |(q - z) s|``.

Subnormal results add an absolute ``2^-148`` per operation, which is included.

Plain float models (no QuantInput: float32 Linear/Conv2d and ReLU chains) get
:func:`float_chain_envelope`, the same dot-product bound on a given (float32-cast) input box.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..nn import layers as _layers  # noqa: F401 - registers the op definitions of the built-in layers

U32 = 2.0 ** -24          # float32 unit roundoff
_TINY32 = 2.0 ** -148     # per-operation absolute error bound near underflow (float32)
_F32_EXACT = 1 << 24      # integers below this are exact in float32


def gamma(k: int) -> float:
    """``k u / (1 - k u)`` for float32, rounded up generously (1% over)."""
    ku = k * U32
    if ku >= 0.5:
        return math.inf
    return 1.01 * ku / (1.0 - ku)


def _pow2(s: float) -> bool:
    if not (s > 0 and math.isfinite(s)):
        return False
    return math.frexp(s)[0] == 0.5


@dataclass
class Envelope:
    """The float32 envelope of an imported model (see the module docstring).

    ``tolerance``: per node index (``Node.index`` of :func:`~qa_lirpa.graph.as_graph`; for a chain,
    the layer index) of a quantizer whose input onnxruntime computes inexactly, the bound ``tol``
    in that quantizer's output steps.
    ``output_error``: bound on ``|onnxruntime output - nominal output|`` (real units, every output).
    ``notes``: one line per inexact layer, for logs.
    """

    tolerance: dict[int, float] = field(default_factory=dict)
    output_error: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        """True when onnxruntime provably computes the nominal model exactly."""
        return not self.tolerance and self.output_error == 0.0

    def describe(self) -> str:
        if self.exact:
            return "onnxruntime's float32 arithmetic is exact on this model"
        parts = []
        if self.tolerance:
            parts.append(f"hidden quantizers within {max(self.tolerance.values()):.3g} steps "
                         f"({len(self.tolerance)} layer{'s' if len(self.tolerance) > 1 else ''})")
        parts.append(f"outputs within {self.output_error:.3g}")
        return "float32 envelope: " + ", ".join(parts)


def _scales(spec) -> list[float]:
    return [float(s) for s in spec.scale]


def _fine(scales: Sequence[float]) -> float | None:
    """The finest grid of per-channel power-of-two scales (None unless all are powers of two)."""
    return min(scales) if all(_pow2(s) for s in scales) else None


def _max_code(spec) -> int:
    return max(max(abs(spec.qmin - z), abs(spec.qmax - z)) for z in spec.zero_points())


def _quantizer_out(scales: Sequence[float], spec) -> tuple[float, float]:
    """``(A, e)`` of a dequantized code tensor: its magnitude bound and onnxruntime's error."""
    a = _max_code(spec) * max(scales)
    exact = all(_pow2(s) for s in scales) and _max_code(spec) < _F32_EXACT
    return a, (0.0 if exact else U32 * a + _TINY32)


def _affine_data(layer: nn.Module, s_in: float):
    """Per output channel: sum of |w| (real), |bias| (nominal real), the bias's deviation bound
    ``r`` and whether the layer is exactly representable on a power-of-two grid."""
    codes = layer.weight_codes().double()
    ws = layer.weight_spec
    out_ch = codes.shape[0]
    w_sc = torch.tensor(_scales(ws), dtype=torch.float64)
    w_sc = w_sc if w_sc.numel() == out_ch else w_sc.expand(out_ch)
    wabs = codes.abs().reshape(out_ch, -1).sum(dim=1) * w_sc
    fan_in = codes[0].numel()
    w_res = float(getattr(layer, "weight_residual", 0.0) or 0.0)
    acc = (w_sc * s_in).numpy()
    pow2 = _pow2(s_in) and all(_pow2(float(s)) for s in w_sc)
    b = np.zeros(out_ch)
    r = np.zeros(out_ch)
    qb = layer.qbias()
    if qb is not None:
        b = np.abs(qb.detach().double().reshape(-1).numpy())
        bspec = layer.bias_spec
        pow2 = pow2 and bspec is not None and all(_pow2(s) for s in bspec.scale)
        true = getattr(layer, "bias_float", None)
        if true is not None:
            r = r + _float_bias_deviation(np.asarray(true, np.float64).reshape(-1),
                                          qb.detach().double().reshape(-1).numpy(), acc)
            pow2 = False
    res = getattr(layer, "bias_residual", None)      # also onnxruntime's kernel deviations (load.py)
    if res is not None:
        r = r + np.asarray(res, np.float64).reshape(-1)
        pow2 = pow2 and not r.any()
    return wabs.numpy(), b, r, w_res, fan_in, pow2, acc


def _float_bias_deviation(b: np.ndarray, nominal: np.ndarray, s_acc: np.ndarray) -> np.ndarray:
    """Bound on ``|bias onnxruntime uses - nominal bias|`` for a float bias ``b``: unfused, ``b``
    itself; fused, ``c s_acc`` with ``c`` the int32 rounding of ``b / s_acc`` (computed in float32,
    so any integer within ``1/2 + 1e-4 (|t| + 1)`` of ``t = b / s_acc``: one code, two near ties)."""
    t = b / s_acc
    eps = 1e-4 * (np.abs(t) + 1.0)
    c_lo, c_hi = np.ceil(t - 0.5 - eps), np.floor(t + 0.5 + eps)
    dev = np.maximum(np.abs(b - nominal), np.maximum(np.abs(c_lo * s_acc - nominal), np.abs(c_hi * s_acc - nominal)))
    return dev * (1 + 2.0 ** -40) + 2.0 ** -1000


@dataclass
class F32State:
    """What the quantized envelope knows of a tensor: ``|nominal value| <= amag``, onnxruntime's
    value within ``err`` of it; ``scale``: the (largest) scale of its grid; ``fine``: a power of two
    that every nominal value is a multiple of (None if unknown)."""

    amag: float
    err: float
    scale: float
    fine: float | None = None


class _NoModel(Exception):
    """Ends an envelope walk: an op without a float32 error model (the envelope is infinite)."""


class Float32Walk:
    """The context of the ops' ``float32(layer, ctx, *states)`` rules for :func:`float32_envelope`:
    the error-model steps (affine dot products, requantization, sums), recording tolerances by
    node index in :attr:`env`."""

    def __init__(self, env: Envelope) -> None:
        self.env = env
        self.node = None
        self.layer = None

    def _label(self) -> str:
        return f"layer {self.node.index} ({type(self.layer).__name__})"

    def unsupported(self, why: str = "has no float32 error model") -> _NoModel:
        """The refusal an op raises where it has no rule here (the envelope becomes infinite)."""
        return _NoModel(f"{self._label()} {why}")

    # ----- the steps -------------------------------------------------------------------------------
    def quantized(self, out_scales: Sequence, spec) -> F32State:
        """A dequantized code tensor (the input quantizer's output): magnitude and float32 error."""
        scales = [float(s) for s in out_scales]
        amag, err = _quantizer_out(scales, spec)
        return F32State(amag, err, max(scales), _fine(scales))

    def requantized(self, x: F32State, spec) -> F32State:
        """A quantizer rounding ``x``: where onnxruntime computes ``x / s_y`` inexactly, its
        tolerance in steps is recorded for this node (:attr:`Envelope.tolerance`)."""
        sy = _scales(spec)
        s_min = min(sy)
        t_max = x.amag / s_min + 1.0
        exact = x.err == 0.0 and all(_pow2(s) for s in sy) and _pow2(x.scale) and t_max < 2 ** 23
        if not exact:
            tol = (x.err / s_min + 5 * U32 * (t_max + 1.0)) * 1.01 + 1e-300
            self.env.tolerance[self.node.index] = tol
            self.env.notes.append(f"{self._label()}: rounds within {tol:.3g} steps of the nominal value")
        amag, err = _quantizer_out(sy, spec)
        return F32State(amag, err, max(sy), _fine(sy))

    def affine(self, layer: nn.Module, x: F32State) -> F32State:
        """A quantized Linear/Conv2d: the dot-product bound (exact where the power-of-two grid and
        float32's 24 bits allow)."""
        wabs, b, r, w_res, n, pow2, acc = _affine_data(layer, x.scale)
        rel = float(getattr(layer, "input_requant_error", 0.0) or 0.0)
        if rel:                          # onnxruntime re-quantizes the inputs (MatMulNBits): see load.py
            x = F32State(x.amag, x.err + rel * (x.amag + x.err), x.scale, None)
            pow2 = False
        new_a = float(np.max(wabs * x.amag + b)) if wabs.size else 0.0
        bound_units = finest = None
        if pow2 and x.err == 0.0 and w_res == 0.0 and not r.any():
            finest = min([x.scale * float(s) for s in _scales(layer.weight_spec)]
                         + ([float(s) for s in layer.bias_spec.scale] if layer.qbias() is not None else []))
            bound_units = (new_a + float(np.max(b, initial=0.0))) / finest
        if bound_units is not None and bound_units < _F32_EXACT:
            new_err = 0.0
        else:
            finest = None
            g = gamma(n + 8)
            per = wabs * x.err + g * (wabs * (x.amag + x.err) + b) + r + n * w_res * (x.amag + x.err)
            new_err = float(np.max(per)) * (1 + 2.0 ** -20) + (n + 2) * _TINY32
            self.env.notes.append(f"layer {self.node.index} ({type(layer).__name__}, fan-in {n}): float32 "
                                  f"error <= {new_err:.3g}")
        return F32State(new_a, new_err, float(np.max(acc)), finest if x.fine is not None else None)

    def sum(self, a: F32State, b: F32State) -> F32State:
        """``a + b`` in float32 (exact on power-of-two grids while the sum stays below 2^24 units of
        the finer grid, else one rounding more)."""
        amag = a.amag + b.amag
        scale = min(a.scale, b.scale)
        if a.err == 0.0 and b.err == 0.0 and a.fine is not None and b.fine is not None:
            fine = min(a.fine, b.fine)
            if amag / fine < _F32_EXACT:
                return F32State(amag, 0.0, scale, fine)
        err = (a.err + b.err + U32 * (amag + a.err + b.err)) * (1 + 2.0 ** -20) + _TINY32
        return F32State(amag, err, scale)

    def pooled(self, x: F32State, k: int) -> F32State:
        """The average of ``k`` values (zero padding counted): exact when the window sums are and
        ``k`` is a power of two; else the float32 sum and division add ``gamma(k + 2)`` relative."""
        if x.err == 0.0 and x.fine is not None and _pow2(float(k)) and x.amag * k / x.fine < _F32_EXACT:
            return F32State(x.amag, 0.0, x.scale / k, x.fine / k)
        err = (x.err + gamma(k + 2) * (x.amag + x.err)) * (1 + 2.0 ** -20) + (k + 2) * _TINY32
        return F32State(x.amag, err, x.scale / k)

    def monotone(self, layer: nn.Module, x: F32State) -> F32State:
        """A selection such as max pooling: exact, and 1-Lipschitz in the largest error."""
        return x

    def concatenated(self, layer: nn.Module, *xs: F32State) -> F32State:
        fine = None if any(x.fine is None for x in xs) else min(x.fine for x in xs)
        return F32State(max(x.amag for x in xs), max(x.err for x in xs), max(x.scale for x in xs), fine)

    def relu(self, x: F32State) -> F32State:
        return x           # 1-Lipschitz, exact in float32

    def reshaped(self, layer: nn.Module, x: F32State) -> F32State:
        return x

    def float_affine(self, layer: nn.Module, x: F32State, lin=None, flat: bool = False) -> F32State:
        raise self.unsupported()


def _walk_envelope(graph, env: Envelope, x0, ctx, after=None):
    """Walk ``graph`` with each op's ``float32`` rule; an op without one (or raising
    :class:`_NoModel`) makes ``env.output_error`` infinite. Returns the output's state or None."""
    from ..graph import UnsupportedOp, op_for

    def step(node, layer, *xs):
        ctx.node, ctx.layer = node, layer
        try:
            out = op_for(layer).float32(layer, ctx, *xs)
        except UnsupportedOp:
            raise _NoModel(f"layer {node.index} ({type(layer).__name__}) has no float32 error model") from None
        if after is not None:
            after(node, layer, out)
        return out

    try:
        return graph.walk(x0, step)
    except _NoModel as e:
        env.output_error = math.inf
        env.notes.append(str(e))
        return None


def float32_envelope(model: nn.Module) -> Envelope:
    """The static float32 envelope of an imported model (see the module docstring); tolerances are
    keyed by node index (the layer index for chains).

    Sound for every input of the model's input grid. A layer this analysis does not know (an op
    without a ``float32`` rule) makes the envelope infinite (``output_error = inf``), so that
    nothing is proved by bounds alone.
    """
    from ..graph import as_graph, input_quantizer

    graph = as_graph(model)
    env = Envelope()
    if not graph.nodes or input_quantizer(graph) is None:
        env.output_error = math.inf
        env.notes.append("no input quantizer")
        return env
    out = _walk_envelope(graph, env, None, Float32Walk(env))
    if out is not None:
        env.output_error = out.err
    return env


# ----- plain float chains ----------------------------------------------------------------------
def _float_affine(layer: nn.Module, lo: np.ndarray, hi: np.ndarray, err: float, lin, flat: bool):
    """One float32 Linear/Conv2d of a float chain: interval bounds ``[lo', hi']`` (``[1, ...]``
    float64) of its exact output on the exact input box ``[lo, hi]``, and the bound on
    onnxruntime's error when its inputs are off by at most ``err`` (see
    :func:`float_chain_envelope`). ``lin(x, weight, bias)``: the layer's float function (from its
    op definition); ``flat``: it takes ``[1, features]`` inputs."""
    w = layer.weight.detach().cpu().double()
    b = layer.bias.detach().cpu().double() if layer.bias is not None else None
    babs = torch.zeros(w.shape[0], dtype=torch.float64) if b is None else b.abs()
    c = (lo + hi) / 2
    # radius rounded up: the box lies in [c - r, c + r]
    r = np.maximum(hi - c, c - lo) * (1 + 2.0 ** -50) + 2.0 ** -1070
    a = np.maximum(np.abs(lo), np.abs(hi))                    # |exact input| <= a
    ct, rt, at = (torch.as_tensor(v, dtype=torch.float64) for v in (c, r, a))
    n = int(w[0].numel())
    if flat:
        ct, rt, at = ct.reshape(1, -1), rt.reshape(1, -1), at.reshape(1, -1)
    wabs = w.abs()
    mid = lin(ct, w, b)
    rad = lin(rt, wabs, None)
    # float64 rounding of mid and rad: gamma_64(n + 2) of the absolute terms, generously
    slack = (lin(ct.abs() + rt, wabs, babs) * ((n + 4) * 2.0 ** -51) + 2.0 ** -1000).numpy()
    mid, rad = mid.numpy(), rad.numpy()
    new_lo = (mid - rad - slack) - 2.0 ** -50 * np.abs(mid - rad - slack)
    new_hi = (mid + rad + slack) + 2.0 ** -50 * np.abs(mid + rad + slack)
    g = gamma(n + 4)
    rel = float(getattr(layer, "input_requant_error", 0.0) or 0.0)   # MatMulNBits (see load.py)
    wsum_e = lin(torch.full_like(at, err) + rel * (at + err), wabs, None)   # sum_i |W_ji| e_i
    wsum_a = lin(at + err, wabs, babs)                             # sum_i |W_ji| (A_i + e) + |b_j|
    per = wsum_e + g * wsum_a
    new_err = float(per.max()) * (1 + 2.0 ** -20) + (n + 2) * _TINY32 if per.numel() else 0.0
    return new_lo, new_hi, new_err, n


def float_chain_envelope(model: nn.Module, lower, upper, input_shape: Sequence[int] | None = None) -> Envelope:
    """The float32 envelope of a plain float chain (no quantizers) on the input box ``[lower, upper]``.

    ``model``: a chain or graph (:func:`~qa_lirpa.graph.as_graph`) of ``nn.Linear`` /
    ``nn.Conv2d`` with float32 weights exactly as in the ONNX file, ``nn.ReLU``, ``nn.Flatten``,
    ``nn.Unflatten``, ``nn.Identity`` and ``nn.Dropout`` (what :func:`~qa_lirpa.onnx.load_onnx`
    imports for plain float MLP/CNN graphs). ``lower``/``upper``: the box (flat or shaped; reshaped
    to ``input_shape`` when given); it must already hold every float32-cast input, i.e. be widened
    to ``[min(lo, fl32(lo)), max(hi, fl32(hi))]``: onnxruntime's input is then a point ``x`` of the
    box, and the envelope's ``output_error`` bounds ``|onnxruntime(x) - f(x)|`` for every such
    ``x``, ``f`` the exact real-number function of the same weights.

    Walk: exact interval bounds of every activation (float64 interval propagation, widened for its
    rounding) give ``A_i`` (bound on the exact activation ``i``); ``e`` bounds onnxruntime's error on
    every activation of the layer (0 at the input). A Linear/Conv2d of fan-in ``n`` computes each
    output as a float32 dot product of its (inexact) inputs plus the bias in any order, FMA or not:
    ``e' = max_j (sum_i |W_ji| e + gamma(n + 4) (sum_i |W_ji| (A_i + e) + |b_j|)) (1 + 2^-20)
    + (n + 2) 2^-148`` (the ``2^-20`` covers this bound's own float64 rounding, ``2^-148`` per
    operation the underflow). ReLU is 1-Lipschitz and the shape layers exact: ``e`` stays. Any
    other layer (e.g. an onnx2pytorch ``ConvertModel``) makes ``output_error`` infinite.
    """
    from ..graph import as_graph

    env = Envelope()
    lo = np.asarray(lower, np.float64)
    hi = np.asarray(upper, np.float64)
    if input_shape is not None:
        lo, hi = lo.reshape((1,) + tuple(input_shape)), hi.reshape((1,) + tuple(input_shape))
    elif lo.ndim == 1:
        lo, hi = lo.reshape(1, -1), hi.reshape(1, -1)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        env.output_error = math.inf
        env.notes.append("the input box is unbounded")
        return env

    def finite(node, layer, out: FloatBox) -> None:
        if not (np.all(np.isfinite(out.lo)) and np.all(np.isfinite(out.hi)) and math.isfinite(out.err)):
            raise _NoModel(f"layer {node.index} ({type(layer).__name__}): bounds overflow")

    out = _walk_envelope(as_graph(model), env, FloatBox(lo, hi, 0.0), FloatChainWalk(env), finite)
    if out is not None:
        env.output_error = out.err
    return env


@dataclass
class FloatBox:
    """What :func:`float_chain_envelope` knows of a tensor: exact bounds ``[lo, hi]`` (float64,
    ``[1, ...]``) of its real value and onnxruntime's error bound ``err``."""

    lo: np.ndarray
    hi: np.ndarray
    err: float


class FloatChainWalk(Float32Walk):
    """The context of the ops' ``float32`` rules for :func:`float_chain_envelope` (float Linear/
    Conv2d, ReLU, shape ops; quantized layers have no rule here)."""

    def float_affine(self, layer: nn.Module, x: FloatBox, lin=None, flat: bool = False) -> FloatBox:
        """A float Linear/Conv2d computing ``lin(x, weight, bias)`` (``flat``: on ``[1, n]``)."""
        if lin is None:
            raise self.unsupported()
        try:
            out = _float_affine(layer, x.lo, x.hi, x.err, lin, flat)
        except RuntimeError as e:          # shapes that do not fit
            self.env.notes.append(f"{self._label()}: {e}")
            out = None
        if out is None:
            raise self.unsupported()
        lo, hi, err, n = out
        self.env.notes.append(f"layer {self.node.index} ({type(layer).__name__}, fan-in {n}): float32 error "
                              f"<= {err:.3g}")
        return FloatBox(lo, hi, err)

    def relu(self, x: FloatBox) -> FloatBox:
        return FloatBox(np.maximum(x.lo, 0.0), np.maximum(x.hi, 0.0), x.err)

    def reshaped(self, layer: nn.Module, x: FloatBox) -> FloatBox:      # exact reshapes
        return FloatBox(layer(torch.as_tensor(x.lo)).numpy(), layer(torch.as_tensor(x.hi)).numpy(), x.err)

    def monotone(self, layer: nn.Module, x: FloatBox) -> FloatBox:       # exact selections (max pooling)
        return self.reshaped(layer, x)

    def concatenated(self, layer: nn.Module, *xs: FloatBox) -> FloatBox:
        lo = layer(*[torch.as_tensor(x.lo) for x in xs]).numpy()
        hi = layer(*[torch.as_tensor(x.hi) for x in xs]).numpy()
        return FloatBox(lo, hi, max(x.err for x in xs))

    def pooled(self, x, k):
        raise self.unsupported()

    def quantized(self, out_scales, spec):
        raise self.unsupported()

    def requantized(self, x, spec):
        raise self.unsupported()

    def affine(self, layer, x):
        raise self.unsupported()

    def sum(self, a, b):
        raise self.unsupported()


# ----- the referee -----------------------------------------------------------------------------
class OnnxReferee:
    """Runs an ONNX file in onnxruntime exactly as the VNN-COMP checker does.

    ``input_float32``: the graph input is FLOAT, so every real input is cast to float32 first.
    :meth:`outputs` returns float64 copies of onnxruntime's outputs (exact: float32 values).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        from .runtime import _session

        self.path = os.fspath(path)
        sess = _session(self.path, True)
        inputs = sess.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"{self.path}: expected one input, found {len(inputs)}")
        self.input_float32 = inputs[0].type != "tensor(double)"
        shape = inputs[0].shape
        self._shape = [d if isinstance(d, int) and d > 0 else 1 for d in shape]
        self.calls = 0
        self.points = 0

    @classmethod
    def for_model(cls, model: nn.Module) -> "OnnxReferee | None":
        """The referee of a model imported from an ONNX file (``model.source``), else None."""
        src = getattr(model, "source", None)
        if not isinstance(src, (str, os.PathLike)) or not os.path.isfile(src):
            return None
        return cls(src)

    def cast(self, x: torch.Tensor) -> torch.Tensor:
        """What the model receives for real inputs ``x`` (float64 out): ``fl32(x)`` for a FLOAT input."""
        return x.to(torch.float32).to(torch.float64) if self.input_float32 else x.to(torch.float64)

    def outputs(self, x: np.ndarray) -> np.ndarray:
        """onnxruntime's outputs (float64 ``[N, m]``) for real inputs ``x`` (``[N, D]``, float64)."""
        from .runtime import run_onnxruntime

        x = np.asarray(x, np.float64)
        n = x.shape[0]
        self.calls += 1
        self.points += n
        # one sample at a time, in the checker's shape: onnxruntime's float MatMul/Gemm take other
        # kernels (another summation order) for a batch than for one row, so batched results can
        # differ from what the checker computes
        rows = [np.asarray(run_onnxruntime(self.path, x[k].reshape(self._shape)), np.float64).reshape(-1)
                for k in range(n)]
        return np.stack(rows) if rows else np.zeros((0, 0))

    def exact_outputs(self, y: np.ndarray):
        """A function ``n -> [Fraction]``: the float outputs of row ``n`` as exact rationals."""
        return lambda k: [Fraction(float(v)) for v in y[k]]


__all__ = ["Envelope", "float32_envelope", "float_chain_envelope", "OnnxReferee", "gamma", "U32", "F32State",
           "FloatBox", "Float32Walk", "FloatChainWalk"]
