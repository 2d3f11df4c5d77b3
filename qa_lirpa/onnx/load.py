"""Import ONNX models into qa_lirpa layers.

:func:`load_onnx` reads the graph with ``onnx`` (validated, shapes inferred) and walks it from the
input as a chain, matching patterns directly into qa_lirpa layers:

- ``QuantizeLinear -> [Clip] -> DequantizeLinear`` on the input: :class:`~qa_lirpa.nn.QuantInput`
  (the DequantizeLinear's scale becomes ``output_scale``); on a hidden value:
  :class:`~qa_lirpa.nn.QuantAct`. A Clip on the codes (QCDQ, as Brevitas exports) narrows the
  format (e.g. 4 bits in an int8 container, or the narrow signed range).
- Elementwise patterns with constants: ``[Mul(1/s) | Div(s)] -> [Clip] -> rounding -> [Clip]
  -> [Mul(s_out)]`` where the rounding is ``Round`` (half even), ``Add(0.5) -> Floor`` (half up)
  or the exact half-up pattern ``f = Floor(v); f + Cast(GreaterOrEqual(v - f, 0.5))``; on the
  input more general monotone programs (e.g. ``Sub(mean) -> Div(std) -> ...``) are accepted and
  reproduced in float32.
- ``Gemm``/``MatMul [-> Add]``/``Conv`` whose weights (and bias) are ``DequantizeLinear`` of
  integer initializers (``quantize_static`` QDQ models, per tensor or per channel; QCDQ weights
  through Clip) or float initializers: :class:`~qa_lirpa.nn.QuantLinear` /
  :class:`~qa_lirpa.nn.QuantConv2d` when the input is quantized and the weights have an exact
  integer form (float weights: a common power-of-two scale with codes of at most 32 bits), else
  plain ``nn.Linear``/``nn.Conv2d``.
- ``Relu``, ``Flatten(axis=1)``, flatten-like ``Reshape`` (constant or ``Shape``-computed target),
  ``Identity``, ``Dropout``.

Plain float models whose graph is not such a chain go through onnx2pytorch (its Flatten, which
bakes the batch size into a reshape when traced, is replaced by ``nn.Flatten``).

Semantics and exactness (see ``ort_layers`` for the measurements):

- power-of-two scales with bounded accumulators: onnxruntime's float32 arithmetic is exact and the
  imported model (plain qa_lirpa layers) equals it exactly;
- an input quantizer that onnxruntime computes inexactly (a non-power-of-two scale, or the
  ``Add(0.5) -> Floor`` pattern) becomes :class:`Float32QuantInput`, which replays onnxruntime's
  float32 ops exactly;
- ``requant="onnxruntime"`` (default): a layer group that onnxruntime fuses into an integer kernel
  (``DequantizeLinear -> Conv/Gemm/MatMul with DequantizeLinear weights -> QuantizeLinear``) is
  requantized with onnxruntime's float32 multiplier (:class:`Float32Requant`) unless that is
  provably exact; its bias is then taken at scale ``s_x * s_w`` exactly, as the fused kernel adds
  the int32 bias codes to the accumulator. ``requant="exact"``: the exact real-number semantics
  of the graph (rational rescaling, the bias at its declared scale), which is what onnxruntime's
  unfused float path computes up to float32 rounding.
"""
from __future__ import annotations

import math
import os
from fractions import Fraction
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..graph import OpDef, UnsupportedOp, as_graph, input_quantizer, op_for
from ..nn.layers import QuantAct, QuantConv2d, QuantInput, QuantLinear
from ..nn.pool import QuantAvgPool2d
from ..quant.spec import QuantSpec
from .errors import OnnxExactnessWarning, OnnxFloat32Warning, OnnxImportError
from .export import F32_EXACT, accumulator_bounds
from .graph import QUANT_TYPES, Graph, node_label, read_model
from .normalize import normalize
from .ort_layers import Float32QuantInput, Float32Requant

REQUANT_MODES = ("onnxruntime", "exact")
_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "Floor", "Ceil", "Round", "QLinearConv", "QLinearMatMul",
              "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"}
_ELEMENTWISE = {"Mul", "Div", "Add", "Sub", "Clip", "Max", "Min", "Floor", "Ceil", "Round", "Relu"}
_AFFINE = {"Gemm", "MatMul", "Conv"}
_PASS = {"Identity", "Dropout"}
_ROUND_STEPS = ("floor", "round", "half_up", "ceil")
_NP_ROUND = {"half_even": np.round, "half_up": lambda v: np.floor(v + 0.5), "down": np.floor, "up": np.ceil,
             "half_down": lambda v: np.ceil(v - 0.5)}
_SHAPE_OPS = {"Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Slice", "Identity", "Constant"}


class ImportedModel(nn.Sequential):
    """The result of :func:`load_onnx`: a Sequential of layers plus where it came from.

    Attributes: ``source`` (the file), ``input_shape`` (per sample, ``None`` entries where
    symbolic), ``requant`` (the semantics mode), ``quantized`` (whether it has exact integer
    semantics: starts with a QuantInput and every layer has an integer step).
    """

    def __init__(self, layers, source: str, input_shape, requant: str, quantized: bool) -> None:
        super().__init__(*layers)
        self.source = source
        self.input_shape = input_shape
        self.requant = requant
        self.quantized = quantized


class _ChainError(OnnxImportError):
    """The graph is not something the chain converter handles (a float model may fall back)."""


@dataclass
class _State:
    integer: bool = False                 # the current value has exact integer semantics
    spec: QuantSpec | None = None         # format of the current value (after a quantizer)
    scale: list[float] | None = None      # the real scale(s) of the current value's codes
    bound: int | None = None              # |value| <= bound * 2^exp (power-of-two models only)
    exp: int | None = None
    rank: int | None = None
    acc: dict[str, Any] | None = None     # set right after an affine layer
    started: bool = False                 # a layer has been emitted (the input is no longer raw)


def _scalar(v) -> float:
    return float(np.asarray(v).reshape(-1)[0])


def _pow2_exp(s: float) -> int | None:
    if not (s > 0 and math.isfinite(s)):
        return None
    m, e = math.frexp(s)
    return e - 1 if m == 0.5 else None


def _format_from_range(lo: int, hi: int) -> tuple[int, bool, bool] | None:
    """``(bits, signed, narrow)`` of a QuantSpec whose code range is exactly ``[lo, hi]``."""
    for b in range(2, 33):
        if lo == -(1 << (b - 1)) and hi == (1 << (b - 1)) - 1:
            return b, True, False
        if lo == -(1 << (b - 1)) + 1 and hi == (1 << (b - 1)) - 1 and b > 2:
            return b, True, True
        if lo == 0 and hi == (1 << b) - 1:
            return b, False, False
    return None


def _centered_format(lo: int, hi: int) -> tuple[int, bool, bool, int] | None:
    """A format ``(bits, signed, narrow, zero_point)`` whose centered range ``[qmin - z, qmax - z]``
    is ``[lo, hi]``."""
    f = _format_from_range(lo, hi)
    if f is not None:
        return (*f, 0)
    n = hi - lo + 1
    if n >= 4 and n & (n - 1) == 0 and lo <= 0 <= hi:
        return n.bit_length() - 1, False, False, -lo
    return None


def _pair_can_saturate(w: np.ndarray) -> bool:
    """Whether two weight codes of one output channel can make a u8*s8 pair sum leave int16
    (255 * (|w1| + |w2|) > 32767): the two largest magnitudes per row decide it."""
    rows = np.sort(np.abs(np.asarray(w, dtype=np.int64).reshape(w.shape[0], -1)), axis=1)
    if rows.shape[1] < 2:
        return False
    return bool(((rows[:, -1] + rows[:, -2]) * 255 > 32767).any())


def _saturation_bound(w: np.ndarray, consecutive: bool = False) -> np.ndarray:
    """Per output channel, a bound (in accumulator codes) on how far onnxruntime's u8*s8 kernel
    without VNNI can move the accumulator: it adds adjacent pairs ``a_i w_i + a_j w_j`` (raw u8
    activation codes ``a`` in [0, 255], raw s8 weight codes) saturated to int16, in a pairing we do
    not know (measured here: onnxruntime 1.32 on AVX2 without VNNI returns 32767 for one pair
    255 * 127 + 255 * 127). A pair of opposite signs cannot saturate; one of equal signs loses at
    most ``e(i, j) = max(0, 255 (|w_i| + |w_j|) - 32767)``, and ``e(i, j) <= (f_i + f_j) / 2`` with
    ``f_i = max(0, 255 (|w_i| + M_i) - 32767)`` (``M_i`` the largest other magnitude of the same
    sign), so any pairing loses at most ``sum_i f_i / 2``. ``consecutive``: the pairs are inputs
    ``(2m, 2m + 1)`` (measured for MatMul/Gemm here: [127, 127, 0, 0] saturates, [127, 0, 127, 0]
    does not), so the bound is the sum of ``e`` over those pairs."""
    w = np.asarray(w, dtype=np.int64).reshape(w.shape[0], -1)
    if consecutive:
        k = w.shape[1] - w.shape[1] % 2
        a, b = w[:, 0:k:2], w[:, 1:k:2]
        e = np.where(a * b > 0, np.maximum(0, 255 * (np.abs(a) + np.abs(b)) - 32767), 0)
        return e.sum(axis=1).astype(np.float64)
    out = np.zeros(w.shape[0])
    for r, row in enumerate(w):
        for sign in (1, -1):              # a pair of opposite signs stays within 255 * 128 < 32767
            mags = np.sort(np.abs(row[row * sign > 0]))
            if mags.size < 2:
                continue
            partner = np.where(np.arange(mags.size) == mags.size - 1, mags[-2], mags[-1])
            out[r] += np.maximum(0, 255 * (mags + partner) - 32767).sum() / 2.0
    return out


def _infer_pow2_spec(w: np.ndarray, signed: bool = True) -> QuantSpec | None:
    """The coarsest power-of-two format in which every value of ``w`` is an integer code of at
    most 32 bits (None if there is none)."""
    w = np.asarray(w, dtype=np.float64)
    if not np.all(np.isfinite(w)):
        return None
    nz = w[w != 0]
    if nz.size == 0:
        return QuantSpec(2, signed, 1.0)
    m, e = np.frexp(np.abs(nz))
    k = (m * 2.0 ** 53).astype(np.int64)
    low = np.log2((k & -k).astype(np.float64)).astype(np.int64)
    emin = int((e.astype(np.int64) - 53 + low).min())
    codes = nz / 2.0 ** emin
    big = int(np.abs(codes).max())
    bits = big.bit_length() + (1 if signed else 0)
    if bits > 32:
        return None
    return QuantSpec(max(bits, 2), signed, 2.0 ** emin)


def _approx_pow2(w: np.ndarray) -> tuple[QuantSpec, np.ndarray, float]:
    """Float weights on a 25-bit signed power-of-two grid: ``(spec, nominal values, max |w -
    nominal|)``; the residual is exact (a difference of two nearby doubles)."""
    big = float(np.max(np.abs(w)))
    e = (math.frexp(big)[1] if big > 0 else 0) - 24
    step = 2.0 ** e
    nominal = np.round(w / step) * step
    return QuantSpec(25, True, step), nominal, float(np.max(np.abs(w - nominal)))


def _fine_enough(bspec: QuantSpec, s_acc: np.ndarray) -> bool:
    """Whether an exact power-of-two bias grid keeps the accumulator's common scale small: the
    bias scale is at most 2^20 times finer than every accumulator scale, and those are powers of
    two too."""
    sb = [float(v) for v in bspec.scale]
    return (all(_pow2_exp(float(a)) is not None for a in list(s_acc) + sb)
            and float(np.min(s_acc)) / min(sb) <= 2 ** 20)


class _Converter:
    def __init__(self, g: Graph, input_quant: QuantSpec | None, requant: str) -> None:
        self.g = g
        self.requant = requant
        self.layers: list[nn.Module] = []
        self.consumed: set[int] = set()
        self.st = _State(rank=len(g.shapes.get(g.input_name, [])) or None)
        self.pending_pre = None
        self.int8_kernels: dict = {}
        self.origin: dict = {}
        self.ort_optimized = True        # False: the referee runs the graph op by op (QONNX files)
        if input_quant is not None:
            self.layers.append(QuantInput(input_quant))
            self._after_quantizer(input_quant, [float(s) for s in input_quant.scale])
            self.st.started = True

    # ----- helpers -----------------------------------------------------------------------------
    def label(self, node) -> str:
        """How messages name ``node``: the file's node it came from (the normaliser's rewrites
        make new nodes)."""
        return self.origin.get(node.name) or node_label(node)

    def err(self, node, msg: str, fallback: bool = False) -> OnnxImportError:
        cls = _ChainError if fallback else OnnxImportError
        return cls(f"{self.g.path}: {self.label(node)}: {msg}")

    def unsupported(self, node) -> OnnxImportError:
        return _ChainError(f"{self.g.path}: {self.label(node)} is not supported")

    def use(self, *nodes) -> None:
        for n in nodes:
            if n is not None:
                self.consumed.add(id(n))

    def data_consumers(self, t: str) -> list:
        return [n for n in self.g.consumers.get(t, []) if n.op_type != "Shape" and id(n) not in self.consumed]

    def const_or_fail(self, node, idx: int, what: str) -> np.ndarray | None:
        if len(node.input) <= idx or not node.input[idx]:
            return None
        v = self.g.const(node.input[idx])
        if v is None:
            raise self.err(node, f"{what} must be a constant")
        return v

    def _after_quantizer(self, spec: QuantSpec, out_scales: list[float]) -> None:
        st = self.st
        st.spec, st.scale, st.acc = spec, out_scales, None
        exps = [_pow2_exp(s) for s in out_scales] + [_pow2_exp(s) for s in spec.scale]
        if all(e is not None for e in exps):
            e_out = [_pow2_exp(s) for s in out_scales]
            e = min(e_out)
            zs = spec.zero_points()
            st.bound = max(max(abs(spec.qmin - z), abs(spec.qmax - z)) << (e_out[i if len(e_out) > 1 else 0] - e)
                           for i, z in enumerate(zs))
            st.exp = e
        else:
            st.bound = st.exp = None

    # ----- the walk ----------------------------------------------------------------------------
    def run(self) -> list[nn.Module]:
        g = self.g
        cur = g.input_name
        guard = 0
        while cur != g.output_name:
            guard += 1
            if guard > 100000:
                raise OnnxImportError(f"{g.path}: graph walk does not terminate")
            cons = self.data_consumers(cur)
            if not cons:
                raise OnnxImportError(f"{g.path}: tensor '{cur}' is not used and is not the graph output")
            ops = sorted(n.op_type for n in cons)
            if len(cons) > 1 and ops != ["Floor", "Sub"]:
                names = ", ".join(self.label(n) for n in cons)
                raise _ChainError(f"{g.path}: tensor '{cur}' feeds several nodes ({names}); only chains "
                                  f"of layers are supported")
            node = cons[0] if len(cons) == 1 else next(n for n in cons if n.op_type == "Floor")
            if node.domain not in ("", "ai.onnx"):
                raise self.unsupported(node)
            handler = TRANSLATE.get(node.op_type)
            if handler is None:
                raise self.unsupported(node)
            cur = handler(self, cur, node)
        if self.st.acc is not None and self.st.integer and not self.st.acc["exact"]:
            warnings.warn(f"{g.path}: the output comes from an affine layer that onnxruntime computes in "
                          f"float32, which is not provably exact here; the imported model's exact outputs "
                          f"can differ from onnxruntime's in the last bits (the verifier covers this)", OnnxFloat32Warning,
                          stacklevel=3)
        left = [n for n in g.model.graph.node
                if id(n) not in self.consumed and any(o in g.dynamic for o in n.output)]
        if left:
            raise _ChainError(f"{g.path}: {self.label(left[0])} is not part of the input-to-output chain")
        return self.layers

    # ----- QuantizeLinear -> [Clip] -> DequantizeLinear ----------------------------------------
    def _qdq(self, cur: str, q) -> str:
        g = self.g
        if q.input[0] != cur:
            raise self.unsupported(q)
        s = self.const_or_fail(q, 1, "the scale")
        z = self.const_or_fail(q, 2, "the zero point")
        if z is None:
            z = np.zeros((), np.uint8)
        if np.dtype(z.dtype) not in QUANT_TYPES:
            raise self.err(q, f"quantized type {z.dtype} is not supported")
        info = np.iinfo(z.dtype)
        lo, hi = int(info.min), int(info.max)
        t = q.output[0]
        cons = self.data_consumers(t)
        clip = None
        if len(cons) == 1 and cons[0].op_type == "Clip":
            clip = cons[0]
            clo, chi = self._clip_bounds(clip)
            if clo is not None:
                lo = max(lo, int(_scalar(clo)))
            if chi is not None:
                hi = min(hi, int(_scalar(chi)))
            t = clip.output[0]
            cons = self.data_consumers(t)
        if len(cons) != 1 or cons[0].op_type != "DequantizeLinear" or cons[0].input[0] != t:
            raise self.err(q, "a QuantizeLinear must be followed by DequantizeLinear (optionally through a Clip)")
        dq = cons[0]
        s2 = self.const_or_fail(dq, 1, "the scale")
        z2 = self.const_or_fail(dq, 2, "the zero point")
        z2 = np.zeros((), z.dtype) if z2 is None else z2
        fmt = _format_from_range(lo, hi)
        if fmt is None:
            raise self.err(clip or q, f"code range [{lo}, {hi}] is not an integer format")
        bits, signed, narrow = fmt
        axis = int(g.attrs(q).get("axis", 1))
        scales = [float(v) for v in np.asarray(s, np.float32).reshape(-1)]
        zps = [int(v) for v in np.asarray(z).reshape(-1)]
        per_channel = len(scales) > 1 or len(zps) > 1
        if not np.array_equal(np.asarray(z).astype(np.int64).reshape(-1), np.asarray(z2).astype(np.int64).reshape(-1)):
            raise self.err(dq, "its zero point differs from the QuantizeLinear's")
        try:
            spec = QuantSpec(bits, signed, scales if len(scales) > 1 else scales[0],
                             zps if len(zps) > 1 else zps[0], axis=axis if per_channel else None,
                             rounding="half_even", narrow=narrow)
        except ValueError as e:
            raise self.err(q, str(e)) from None
        out_scales = [float(v) for v in np.asarray(s2, np.float32).reshape(-1)]
        same = np.array_equal(np.asarray(s2, np.float32).reshape(-1), np.asarray(s, np.float32).reshape(-1))
        self.use(q, clip, dq)
        if not self.st.started:
            if not same and (per_channel or len(out_scales) > 1):
                raise self.err(dq, "a per-channel input quantizer must dequantize with its own scales")
            out = None if same else out_scales[0]
            if self.pending_pre is not None:
                if per_channel:
                    raise self.err(q, "per-channel quantization after preprocessing is not supported")
                program = self._pre_program() + [("div", scales)]
                a = 1.0
                for p in program:
                    a = a * p[1][0] if p[0] == "mul" else a / p[1][0] if p[0] == "div" else a
                spec = spec.replace(scale=1.0 / a)
                layer = Float32QuantInput(spec, out if out is not None else scales[0], program=program,
                                          rounding_impl="half_even")
            elif spec.is_power_of_two:
                layer = QuantInput(spec, out)
            else:
                layer = Float32QuantInput(spec, out, program=[("div", scales)], rounding_impl="half_even")
            self.layers.append(layer)
            self.st.integer = True
            self.st.started = True
            self._after_quantizer(spec, out_scales if not same else scales)
        else:
            if not same:
                raise self.err(dq, "a hidden DequantizeLinear must use the QuantizeLinear's scale")
            self._act(spec, q, via_qdq=True)
        return dq.output[0]

    def _clip_bounds(self, node) -> tuple:
        a = self.g.attrs(node)
        lo = self.g.const(node.input[1]) if len(node.input) > 1 and node.input[1] else a.get("min")
        hi = self.g.const(node.input[2]) if len(node.input) > 2 and node.input[2] else a.get("max")
        if (len(node.input) > 1 and node.input[1] and lo is None) or (len(node.input) > 2 and node.input[2] and hi is None):
            raise self.err(node, "Clip bounds must be constants")
        return (None if lo is None else np.asarray(lo)), (None if hi is None else np.asarray(hi))

    def _act(self, spec: QuantSpec, node, via_qdq: bool) -> None:
        """Emit the quantizer of a hidden value."""
        st = self.st
        acc = st.acc
        layer: nn.Module = QuantAct(spec)
        if acc is not None and st.integer:
            fused = via_qdq and acc["fused"] and not (acc["relu"] and spec.zero_point[0] != spec.qmin)
            exact = acc["exact"] and spec.is_power_of_two
            if fused and self.requant == "onnxruntime" and not exact:
                # per-channel output formats keep the nominal requantizer: the verifier's float32
                # envelope covers onnxruntime's multipliers either way
                layer = QuantAct(spec) if spec.per_channel else Float32Requant(spec, acc["acc_scale"])
            elif not fused and not acc["exact"]:
                warnings.warn(f"{self.g.path}: {self.label(node)}: onnxruntime computes the layer before "
                              f"this quantizer in float32, which is not provably exact here (non-power-of-two "
                              f"scales or large accumulators); the imported model's exact semantics can "
                              f"differ from onnxruntime next to rounding ties (the verifier covers this)",
                              OnnxFloat32Warning, stacklevel=3)
        self.layers.append(layer)
        self._after_quantizer(spec, [float(s) for s in spec.scale])

    # ----- elementwise runs: quantizer patterns and Relu ---------------------------------------
    def _scalar_step(self, n, t: str):
        """One elementwise op with a constant operand, as a program step (None if it is not one)."""
        op = n.op_type
        if op in ("Floor", "Round", "Ceil"):
            return (op.lower(),) if n.input[0] == t else None
        if op == "Relu":
            return ("clip", np.zeros(()), np.full((), np.inf))
        if op == "Clip":
            if n.input[0] != t:
                return None
            lo, hi = self._clip_bounds(n)
            return ("clip", np.full((), -np.inf) if lo is None else lo.astype(np.float64),
                    np.full((), np.inf) if hi is None else hi.astype(np.float64))
        if op not in ("Mul", "Div", "Add", "Sub", "Max", "Min") or len(n.input) != 2:
            return None
        if n.input[0] == t:
            other = n.input[1]
        elif n.input[1] == t and op in ("Mul", "Add", "Max", "Min"):
            other = n.input[0]
        else:
            return None
        c = self.g.const(other)
        if c is None:
            return None
        c = np.asarray(c, dtype=np.float64)
        if op == "Max":
            return ("clip", c, np.full((), np.inf))
        if op == "Min":
            return ("clip", np.full((), -np.inf), c)
        return (op.lower(), c)

    def _half_up_diamond(self, t: str, cons: list):
        """``f = Floor(t); d = Sub(t, f); Add(f, Cast(GreaterOrEqual(d, 0.5)))``: nodes and output."""
        fl = next((n for n in cons if n.op_type == "Floor"), None)
        sub = next((n for n in cons if n.op_type == "Sub"), None)
        if fl is None or sub is None or list(sub.input) != [t, fl.output[0]]:
            return None
        f = fl.output[0]
        fc = self.data_consumers(f)
        ge = self.data_consumers(sub.output[0])
        if len(ge) != 1 or ge[0].op_type != "GreaterOrEqual" or ge[0].input[0] != sub.output[0]:
            return None
        half = self.g.const(ge[0].input[1])
        if half is None or half.size != 1 or _scalar(half) != 0.5:
            return None
        cast = self.data_consumers(ge[0].output[0])
        if len(cast) != 1 or cast[0].op_type != "Cast":
            return None
        add = self.data_consumers(cast[0].output[0])
        if len(add) != 1 or add[0].op_type != "Add" or sorted(add[0].input) != sorted([f, cast[0].output[0]]):
            return None
        if sorted(id(n) for n in fc) != sorted([id(sub), id(add[0])]):
            return None
        return [fl, sub, ge[0], cast[0], add[0]], add[0].output[0]

    def _elementwise(self, cur: str, first) -> str:
        steps, nodes = [], []
        t = cur
        while t != self.g.output_name:
            cons = self.data_consumers(t)
            if len(cons) == 2:
                d = self._half_up_diamond(t, cons)
                if d is None:
                    break
                steps.append(("half_up",))
                nodes.append(d[0])
                self.use(*d[0])
                t = d[1]
                continue
            if len(cons) != 1:
                break
            step = self._scalar_step(cons[0], t)
            if step is None:
                break
            steps.append(step)
            nodes.append([cons[0]])
            self.use(cons[0])
            t = cons[0].output[0]
            if step[0] in ("mul", "div") and any(s[0] in _ROUND_STEPS for s in steps):
                break                       # the output scaling ends a quantizer pattern
        if not steps:
            raise self.unsupported(first)
        rounding = any(st[0] in _ROUND_STEPS for st in steps)
        relu_only = all(st[0] == "clip" and np.all(st[1] == 0) and np.all(np.isinf(st[2])) for st in steps)
        nxt = self.data_consumers(t)
        if (not rounding and not relu_only and not self.st.started and len(nxt) == 1
                and nxt[0].op_type == "QuantizeLinear"):
            # float preprocessing (e.g. Sub(mean) -> Div(std)) in front of the input quantizer:
            # it becomes part of the quantizer's float32 program
            self.pending_pre = (steps, [n[0] for n in nodes])
            return t
        self._interpret(steps, [n[0] for n in nodes])
        return t

    def _pre_program(self) -> list:
        steps, nodes = self.pending_pre
        prog = []
        for st in steps:
            vals = [np.asarray(v, dtype=np.float64).reshape(-1) for v in st[1:]]
            if any(v.size != 1 for v in vals):
                raise self.err(nodes[0], "per-channel preprocessing in front of the input quantizer is not "
                                         "supported")
            if st[0] == "clip":
                prog.append(("clip", float(vals[0][0]), float(vals[1][0])))
            elif st[0] in ("mul", "div", "add", "sub"):
                if st[0] in ("mul", "div") and not vals[0][0] > 0:
                    raise self.err(nodes[0], "only positive scale factors are supported")
                prog.append((st[0], (float(vals[0][0]),)))
            else:
                raise self.err(nodes[0], f"unexpected step {st[0]} before the input quantizer")
        return prog

    def _interpret(self, steps: list, nodes: list) -> None:
        rounds = [i for i, s in enumerate(steps) if s[0] in _ROUND_STEPS]
        if not rounds:
            if all(s[0] == "clip" and np.all(s[1] == 0) and np.all(np.isinf(s[2])) for s in steps):
                self.layers.append(nn.ReLU())
                if self.st.acc is not None:
                    self.st.acc["relu"] = True
                return
            raise self.err(nodes[0], "elementwise ops with constants are supported only as quantizers "
                                     "(scale, round, clip) or Relu", fallback=True)
        if len(rounds) > 1:
            raise self.err(nodes[rounds[1]], "two roundings in one elementwise chain are not supported")
        k = rounds[0]
        pre, post = list(steps[:k]), list(steps[k + 1:])
        kind = steps[k][0]
        if kind == "round":
            impl, rounding = "half_even", "half_even"
        elif kind == "half_up":
            impl, rounding = "half_up", "half_up"
        elif kind == "floor":
            if pre and pre[-1][0] == "add" and np.all(pre[-1][1] == 0.5):
                pre = pre[:-1]
                impl, rounding = "add_half_floor", "half_up"
            else:
                impl, rounding = "floor", "down"
        else:
            if pre and ((pre[-1][0] == "add" and np.all(pre[-1][1] == -0.5))
                        or (pre[-1][0] == "sub" and np.all(pre[-1][1] == 0.5))):
                pre = pre[:-1]
                impl, rounding = "ceil_half", "half_down"
            else:
                impl, rounding = "ceil", "up"
        node0 = nodes[0]
        # channel count of per-channel constants
        sizes = {int(np.asarray(s[1]).size) for s in steps if s[0] != "clip" and s[0] not in _ROUND_STEPS}
        sizes |= {int(np.asarray(v).size) for s in steps if s[0] == "clip" for v in s[1:]}
        sizes.discard(1)
        if len(sizes) > 1:
            raise self.err(node0, "per-channel constants of different sizes")
        C = sizes.pop() if sizes else 1
        if C > 1 and any(np.asarray(v).squeeze().ndim > 1 for s in steps if s[0] not in _ROUND_STEPS
                         for v in s[1:]):
            raise self.err(node0, "per-channel constants must vary along one axis")
        axis = self._const_axis(steps, C)

        def vec(v):
            return np.broadcast_to(np.asarray(v, dtype=np.float64).reshape(-1), (C,)).copy()

        a, b = np.ones(C), np.zeros(C)
        inv = [Fraction(1)] * C                  # 1 / a, exactly (the nominal scale)
        program = []
        for s in pre:
            if s[0] == "clip":
                # remember the affine map so far: the clipped value is u = a0 x + b0
                program.append(("clip_raw", vec(s[1]), vec(s[2]), a.copy(), b.copy()))
                continue
            c = vec(s[1])
            if s[0] in ("mul", "div") and not np.all(c > 0):
                raise self.err(node0, "only positive scale factors are supported")
            if s[0] == "mul":
                a, b = a * c, b * c
                inv = [f / Fraction(float(ci)) for f, ci in zip(inv, c)]
            elif s[0] == "div":
                a, b = a / c, b / c
                inv = [f * Fraction(float(ci)) for f, ci in zip(inv, c)]
            elif s[0] == "add":
                b = b + c
            else:
                b = b - c
            program.append((s[0], c))
        # clips before rounding, mapped to the rounded variable v = a x + b (monotone)
        lo_v, hi_v = np.full(C, -np.inf), np.full(C, np.inf)
        for p in program:
            if p[0] != "clip_raw":
                continue
            _, lo, hi, a0, b0 = p
            # x-domain clip at the moment of the step: value u = a0 x + b0 -> v = (a/a0)(u - b0) + b
            g = a / a0
            lo_v = np.maximum(lo_v, np.where(np.isinf(lo), -np.inf, g * (lo - b0) + b))
            hi_v = np.minimum(hi_v, np.where(np.isinf(hi), np.inf, g * (hi - b0) + b))
        rnd = _NP_ROUND[rounding]
        A = np.where(np.isinf(lo_v), -np.inf, rnd(np.where(np.isinf(lo_v), 0, lo_v)))
        B = np.where(np.isinf(hi_v), np.inf, rnd(np.where(np.isinf(hi_v), 0, hi_v)))
        off = np.zeros(C)
        s_out = None
        for s in post:
            if s_out is not None:
                raise self.err(node0, "elementwise ops after the output scaling are not supported")
            if s[0] in ("add", "sub"):
                c = vec(s[1])
                if not np.all(c == np.round(c)):
                    raise self.err(node0, "a non-integer offset after rounding is not a quantizer")
                off = off + (c if s[0] == "add" else -c)
            elif s[0] == "clip":
                lo, hi = vec(s[1]), vec(s[2])
                if not (np.all(np.isinf(lo) | (lo == np.round(lo))) and np.all(np.isinf(hi) | (hi == np.round(hi)))):
                    raise self.err(node0, "a Clip after rounding must have integer bounds")
                A, B = np.maximum(A, lo - off), np.minimum(B, hi - off)
            elif s[0] in ("mul", "div"):
                c = vec(s[1])
                if not np.all(c > 0):
                    raise self.err(node0, "only positive output scales are supported")
                s_out = c if s[0] == "mul" else 1.0 / c
            else:
                raise self.err(node0, f"unexpected step {s[0]} after rounding")
        if not np.all(off == 0):
            raise self.err(node0, "offsets after rounding must cancel (add the zero point, clip, subtract it)")
        if not (np.all(np.isfinite(A)) and np.all(np.isfinite(B))):
            raise self.err(node0, "a quantizer needs a Clip (saturation) so that its codes are finite")
        fmts = [_centered_format(int(A[i]), int(B[i])) for i in range(C)]
        range_clip = None
        if (any(f is None for f in fmts) or len({f[:3] for f in fmts}) != 1) and not self.st.started \
                and np.all(A == A[0]) and np.all(B == B[0]):
            # an input quantizer saturating at a range that is no integer format (e.g. [0, 64]):
            # the clip moves in front of the rounding (equal for integer bounds and a monotone
            # rounding) and the codes live in the smallest format around the range
            lo_c, hi_c = int(A[0]), int(B[0])
            bits_c = max(2, max(abs(lo_c), abs(hi_c)).bit_length() + (1 if lo_c < 0 else 0))
            fmts = [(bits_c, lo_c < 0, False, 0)] * C
            range_clip = (float(lo_c), float(hi_c))
        if any(f is None for f in fmts) or len({f[:3] for f in fmts}) != 1:
            raise self.err(node0, f"clip range [{A.min():g}, {B.max():g}] is not an integer format")
        bits, signed, narrow, _ = fmts[0]
        zps = [f[3] for f in fmts]
        nominal = [float(f) for f in inv]
        s_out_l = [float(v) for v in (s_out if s_out is not None else np.ones(C))]
        per_channel = C > 1
        try:
            spec = QuantSpec(bits, signed, nominal if per_channel else nominal[0], zps if per_channel else zps[0],
                             axis=axis if per_channel else None, rounding=rounding, narrow=narrow)
        except ValueError as e:
            raise self.err(node0, str(e)) from None
        exact_prog = (np.all(b == 0) and all(_pow2_exp(1.0 / ai) is not None for ai in a)
                      and all(p[0] in ("mul", "div", "clip_raw") for p in program)
                      and all(_pow2_exp(float(v)) is not None for p in program if p[0] in ("mul", "div") for v in p[1])
                      and np.all(np.isinf(lo_v) | (lo_v == np.round(lo_v))) and np.all(np.isinf(hi_v) | (hi_v == np.round(hi_v))))
        if not self.st.started:
            if per_channel and s_out is not None and not np.allclose(s_out_l, nominal, rtol=0, atol=0):
                raise self.err(node0, "a per-channel input quantizer must output at its own scales")
            out = None if (not per_channel and s_out_l[0] == nominal[0]) else (None if per_channel else s_out_l[0])
            if exact_prog and impl not in ("add_half_floor", "ceil_half") and range_clip is None:
                layer = QuantInput(spec, out)
            else:
                prog = []
                for p in program:
                    if p[0] == "clip_raw":
                        prog.append(("clip", float(p[1].min()), float(p[2].max())))
                        if C > 1 and not (np.all(p[1] == p[1][0]) and np.all(p[2] == p[2][0])):
                            raise self.err(node0, "per-channel clip bounds on the input are not supported")
                    else:
                        prog.append((p[0], tuple(float(v) for v in p[1]) if C > 1 else (float(p[1][0]),)))
                if range_clip is not None:
                    if impl in ("add_half_floor", "ceil_half"):
                        raise self.err(node0, "a saturation range that is no integer format needs a plain "
                                              "Round, Floor or Ceil")
                    prog.append(("clip",) + range_clip)
                layer = Float32QuantInput(spec, out, program=prog, rounding_impl=impl)
            self.layers.append(layer)
            self.st.integer = True
            self.st.started = True
            self._after_quantizer(spec, s_out_l if not per_channel or s_out is not None else nominal)
            return
        # a hidden quantizer from float ops: onnxruntime's float32 scaling is within the envelope's
        # requantization tolerance (a few roundings of v / s); offsets before the rounding are not
        if not exact_prog and (np.any(b != 0) or len([p for p in program if p[0] in ("mul", "div")]) > 3
                               or not (np.all(np.isinf(lo_v) | (lo_v == np.round(lo_v)))
                                       and np.all(np.isinf(hi_v) | (hi_v == np.round(hi_v))))):
            raise self.err(node0, "a hidden quantizer built from float ops must not add offsets before "
                                  "rounding (onnxruntime's float32 result could not be bounded)")
        if impl in ("ceil_half",):
            raise self.err(node0, "a hidden Ceil(v - 0.5) quantizer is not supported")
        if not exact_prog and spec.is_power_of_two:
            raise self.err(node0, "float scaling steps whose product is a power of two but not each of "
                                  "them cannot be bounded here")
        if not np.array_equal(np.asarray(s_out_l), np.asarray(nominal)):
            raise self.err(nodes[-1], "the output scale of a hidden quantizer must equal its input scale")
        if impl == "add_half_floor" and not self._add_half_exact(a):
            warnings.warn(f"{self.g.path}: {self.label(node0)}: Add(0.5) -> Floor is exact in float32 only while "
                          f"|v| + 0.5 needs at most 24 bits; this cannot be proved here", OnnxFloat32Warning,
                          stacklevel=3)
        self._act(spec, node0, via_qdq=False)

    def _add_half_exact(self, a: np.ndarray) -> bool:
        st = self.st
        if st.bound is None or st.exp is None:
            return False
        e = [_pow2_exp(float(v)) for v in a]
        if any(v is None for v in e):
            return False
        f = -(st.exp + min(e))      # fractional bits of v
        return f <= 0 or (st.bound + (1 << (f - 1))) < F32_EXACT

    def _const_axis(self, steps: list, C: int) -> int:
        if C == 1:
            return 1
        rank = self.st.rank or 2
        for s in steps:
            for v in s[1:]:
                arr = np.asarray(v)
                if arr.size == C:
                    dims = [i for i, d in enumerate(arr.shape) if d == C]
                    return rank - arr.ndim + dims[0]
        return 1

    # ----- Gemm / MatMul [-> Add] / Conv ----------------------------------------------------------
    def _affine(self, cur: str, node) -> str:
        g, st = self.g, self.st
        op = node.op_type
        if node.input[0] != cur:
            raise self.err(node, "the layer's input must be its first operand (weights second)", fallback=True)
        wname = node.input[1]
        qw = g.quant_const(wname)
        wf = None if qw is not None else g.const(wname)
        if qw is None and wf is None:
            raise self.err(node, "weights must be constants (an initializer or DequantizeLinear of one)",
                           fallback=True)
        a = g.attrs(node)
        out_axis = 0
        if op == "Gemm":
            if a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0 or a.get("transA", 0):
                raise self.err(node, "only Gemm with alpha = beta = 1 and transA = 0 is supported", fallback=True)
            if not a.get("transB", 0):
                out_axis = 1
        elif op == "MatMul":
            out_axis = 1
        wshape = (qw.codes if qw is not None else wf).shape
        if op in ("Gemm", "MatMul") and len(wshape) != 2:
            raise self.err(node, "weights must be a matrix", fallback=True)
        if op == "Conv" and len(wshape) != 4:
            raise self.err(node, "only 2-d convolutions are supported", fallback=True)
        if qw is not None and qw.scale.size > 1 and qw.axis != out_axis:
            raise self.err(node, "per-channel weight scales must be along the output channels")
        out_ch = wshape[out_axis]

        def orient(arr):
            return arr.T if (op in ("Gemm", "MatMul") and out_axis == 1) else arr

        # bias
        bname, add = None, None
        tail = node.output[0]
        if op in ("Gemm", "Conv") and len(node.input) > 2 and node.input[2]:
            bname = node.input[2]
        elif op == "MatMul":
            cons = self.data_consumers(node.output[0])
            if len(cons) == 1 and cons[0].op_type == "Add":
                other = [i for i in cons[0].input if i != node.output[0]]
                if len(other) == 1 and (g.quant_const(other[0]) is not None or g.const(other[0]) is not None):
                    bname, add = other[0], cons[0]
                    tail = add.output[0]
        qb = g.quant_const(bname) if bname else None
        bf = (None if qb is not None else g.const(bname)) if bname else None
        if bname and qb is None and bf is None:
            raise self.err(node, "the bias must be a constant", fallback=True)

        # onnxruntime fuses DequantizeLinear -> op -> QuantizeLinear into its int8 kernels only for
        # 8-bit activations and weights (16-bit groups run unfused)
        dq_in = self._dequantized_input(cur)
        # 8-bit codes in, 8-bit weights: onnxruntime's u8*s8 integer kernels (QLinearMatMul, QGemm,
        # QLinearConv with an output quantizer, MatMulIntegerToFloat without one)
        int8_kernel = (self.ort_optimized and qw is not None and dq_in and qw.bits <= 8
                       and st.spec is not None and st.spec.bits <= 8)
        fused = int8_kernel and self._quantize_follows(tail, bits=8)
        # other MatMul/Gemm with DequantizeLinear weights (e.g. 16-bit activations): onnxruntime
        # 1.32 runs them as MatMulNBits with accuracy_level 4, which quantizes the activations per
        # block of 32 to int8 on the fly (|error| <= max |a| / 254 per element, ~1.2e-3 measured)
        nbits = self.ort_optimized and qw is not None and op in ("MatMul", "Gemm") and not int8_kernel
        # float weights in a quantized group (DequantizeLinear input, QuantizeLinear output):
        # onnxruntime 1.32 quantizes them itself (int8, per tensor, bias to int32) and fuses the
        # group into QGemm/QLinearConv (measured on tf2onnx fake-quant exports): weights move by
        # <= max |w| / 254, the bias by <= s_x max |w| / 254
        ort_quantizes = self.ort_optimized and qw is None and dq_in and self._quantize_follows(tail, bits=8)
        w_residual = 0.0
        wspec = None
        if qw is not None:
            per = qw.scale.size > 1
            fmt = _format_from_range(qw.qmin, qw.qmax) or (qw.bits, qw.signed, False)
            try:
                wspec = QuantSpec(fmt[0], fmt[1], [float(v) for v in qw.scale.reshape(-1)] if per else _scalar(qw.scale),
                                  [int(v) for v in qw.zero_point.reshape(-1)] if qw.zero_point.size > 1 else int(_scalar(qw.zero_point)),
                                  axis=0 if per or qw.zero_point.size > 1 else None, narrow=fmt[2])
            except ValueError as e:
                raise self.err(node, f"weight format: {e}") from None
            w_exact = orient(qw.exact())
            w_float = orient(qw.real())
        else:
            w_exact = orient(np.asarray(wf, np.float64))
            w_float = orient(np.asarray(wf))
            wspec = _infer_pow2_spec(w_exact) if st.integer else None
            if st.integer and wspec is None and np.all(np.isfinite(w_exact)):
                # float weights without an exact grid of <= 32 bits: nominal codes on a 24-bit
                # power-of-two grid, the rounding residual goes into the float32 envelope
                wspec, w_exact, w_residual = _approx_pow2(w_exact)
        bias_exact = bias_float = None
        bspec = None
        float_bias = None
        bias_residual = None
        if bname:
            if qb is not None:
                bias_float = np.broadcast_to(qb.real().reshape(-1), (out_ch,)).copy()
                codes = np.broadcast_to((qb.codes - qb._bcast(qb.zero_point)).reshape(-1), (out_ch,)).astype(np.int64)
                if fused and self.requant == "onnxruntime" and st.integer and st.scale is not None and len(st.scale) == 1:
                    if np.any(qb.zero_point != 0):
                        raise self.err(node, "a fused layer's bias must have zero point 0")
                    ws = list(wspec.scale) * (out_ch if len(wspec.scale) == 1 else 1)
                    bsc = [st.scale[0] * w for w in ws]      # exact: a product of two float32
                    bspec = QuantSpec(32, True, bsc if len(set(bsc)) > 1 else bsc[0],
                                      axis=0 if len(set(bsc)) > 1 else None)
                    bias_exact = codes.astype(np.float64) * np.asarray(bsc)
                else:
                    per = qb.scale.size > 1
                    bspec = QuantSpec(32, True, [float(v) for v in qb.scale.reshape(-1)] if per else _scalar(qb.scale),
                                      axis=0 if per else None)
                    b_sc = np.broadcast_to(qb.scale.astype(np.float64).reshape(-1), (out_ch,))
                    bias_exact = codes.astype(np.float64) * b_sc
                    if st.integer and wspec is not None and st.scale is not None and len(st.scale) == 1 \
                            and not np.any(qb.zero_point != 0):
                        ws = list(wspec.scale) * (out_ch if len(wspec.scale) == 1 else 1)
                        s_acc = np.asarray([st.scale[0] * w for w in ws], np.float64)
                        if np.any(b_sc != s_acc) and not _fine_enough(bspec, s_acc):
                            # an int32 bias whose scale is only near s_x * s_w (quantize_static
                            # stores fl32(s_x * s_w)): the nominal bias is its codes at s_x * s_w
                            # (what a fused kernel adds); the unfused float32 path is off by
                            # |code| |s_b - s_x s_w|, which goes into the float32 envelope
                            bspec = QuantSpec(32, True, [float(v) for v in s_acc] if len(set(s_acc)) > 1
                                              else float(s_acc[0]), axis=0 if len(set(s_acc)) > 1 else None)
                            bias_exact = codes.astype(np.float64) * s_acc
                            bias_residual = np.abs(codes.astype(np.float64)) * np.abs(b_sc - s_acc) * (1 + 2.0 ** -40)
            else:
                bias_float = np.broadcast_to(np.asarray(bf).reshape(-1), (out_ch,)).copy()
                bias_exact = bias_float.astype(np.float64)
                bspec = _infer_pow2_spec(bias_exact) if st.integer else None
                if st.integer and wspec is not None and st.scale is not None and len(st.scale) == 1:
                    # a float bias: onnxruntime rounds it into the int32 accumulator when it fuses
                    # the layer and adds it in float32 when it does not; the nominal bias is its
                    # rounding to the accumulator scale, and the float32 envelope covers both
                    ws = list(wspec.scale) * (out_ch if len(wspec.scale) == 1 else 1)
                    s_acc = np.asarray([st.scale[0] * w for w in ws], np.float64)
                    if bspec is None or not _fine_enough(bspec, s_acc):
                        if not np.all(np.isfinite(bias_exact)):
                            raise self.err(node, "the bias is not finite")
                        grid = s_acc.copy()               # s_x * s_w, doubled where the codes get too big
                        codes = np.round(bias_exact / grid)
                        for _ in range(80):
                            big = np.abs(codes) >= 2 ** 30
                            if not big.any():
                                break
                            grid = np.where(big, grid * 2, grid)
                            codes = np.round(bias_exact / grid)
                        bspec = QuantSpec(32, True, [float(v) for v in grid] if len(set(grid)) > 1 else float(grid[0]),
                                          axis=0 if len(set(grid)) > 1 else None)
                        bias_exact = codes * grid
                        float_bias = bias_float.astype(np.float64)
                    elif qw is not None:
                        # weights through DequantizeLinear: onnxruntime may fuse and round the bias
                        float_bias = bias_float.astype(np.float64)
        if st.integer and st.scale is not None and len(st.scale) > 1:
            raise self.err(node, "an affine layer after a per-channel quantizer (one scale per input feature) "
                                 "is not supported")
        integer = (st.integer and wspec is not None and (not bname or bspec is not None)
                   and st.scale is not None and len(st.scale) == 1 and st.spec is not None)
        layer = self._make_affine(node, op, a, w_exact if integer else w_float, bias_exact if integer else bias_float,
                                  wspec if integer else None, bspec if integer else None, out_ch)
        if nbits:
            layer.input_requant_error = 1.001 / 254
        if integer:
            # what the float32 envelope (qa_lirpa.onnx.referee) needs beyond the nominal layer
            layer.weight_residual = w_residual
            if float_bias is not None:
                layer.bias_float = float_bias
            if bias_residual is not None:
                layer.bias_residual = bias_residual
        if ort_quantizes and integer:
            wmax = float(np.max(np.abs(w_exact))) if w_exact.size else 0.0
            layer.weight_residual = max(float(layer.weight_residual), wmax / 254 * 1.01)
            dev = np.zeros(out_ch)
            if bname:
                dev += st.scale[0] * wmax / 254 * 1.01
            # ... and runs them in the u8*s8 kernel: its pair saturation, on codes estimated as
            # onnxruntime makes them (asymmetric int8 over [min(w, 0), max(w, 0)]), one code wider
            lo_w, hi_w = min(float(np.min(w_exact)), 0.0), max(float(np.max(w_exact)), 0.0)
            if hi_w > lo_w:
                sc_w = (hi_w - lo_w) / 255
                est = np.clip(np.round(w_exact / sc_w) + np.round(-128 - lo_w / sc_w), -128, 127)
                wide = np.sign(est) * np.minimum(np.abs(est) + 1, 128)
                dev += _saturation_bound(wide.reshape(out_ch, -1), consecutive=op != "Conv") \
                    * st.scale[0] * sc_w * 1.01
            prev = getattr(layer, "bias_residual", None)
            layer.bias_residual = dev + (0.0 if prev is None else np.asarray(prev, np.float64))
        kernel = self.int8_kernels.get(node.name) if node.name else None
        if kernel is not None and integer:       # MatMulInteger/ConvInteger: the u8*s8 kernel's pairs
            sat = _saturation_bound(kernel[0], consecutive=op != "Conv") * kernel[1]
            if sat.any():
                prev = getattr(layer, "bias_residual", None)
                layer.bias_residual = sat * (1 + 2.0 ** -40) + (0.0 if prev is None else np.asarray(prev, np.float64))
        self.layers.append(layer)
        self.use(node, add)
        # bookkeeping for the next quantizer
        exact = False
        if integer and st.bound is not None:
            w_exps = [_pow2_exp(s) for s in wspec.scale]
            b_exps = [_pow2_exp(s) for s in bspec.scale] if bspec is not None else [0]
            if all(e is not None for e in w_exps + b_exps):
                w_exps = w_exps * out_ch if len(w_exps) == 1 else w_exps
                acc_exps = [st.exp + e for e in w_exps]
                wc = layer.weight_codes().numpy()
                l1 = np.abs(wc).reshape(out_ch, -1).sum(axis=1)
                if bspec is not None:
                    bc = np.rint(bias_exact / np.asarray([2.0 ** e for e in (b_exps * out_ch if len(b_exps) == 1 else b_exps)])).astype(np.int64)
                    b_e = b_exps * out_ch if len(b_exps) == 1 else b_exps
                else:
                    bc, b_e = np.zeros(out_ch, np.int64), acc_exps
                bounds, units = accumulator_bounds(l1, acc_exps, bc, b_e, st.bound)
                if max(bounds) < F32_EXACT:
                    exact = True
                    e0 = min(units)
                    st.bound, st.exp = max(bd << (u - e0) for bd, u in zip(bounds, units)), e0
        if not exact:
            st.bound = st.exp = None
        if int8_kernel and integer and qw.signed and _pair_can_saturate(orient(qw.codes - qw._bcast(qw.zero_point))):
            # the int16 pair saturation of the u8*s8 kernel (x86 without VNNI) moves the accumulator
            # by at most _saturation_bound codes per output; the float32 envelope carries it
            ws = list(wspec.scale) * (out_ch if len(wspec.scale) == 1 else 1)
            sat = _saturation_bound(orient(qw.codes), consecutive=op != "Conv") * np.asarray([st.scale[0] * w for w in ws], np.float64)
            prev = getattr(layer, "bias_residual", None)
            layer.bias_residual = sat * (1 + 2.0 ** -40) + (0.0 if prev is None else np.asarray(prev, np.float64))
            warnings.warn(f"{g.path}: {self.label(node)}: onnxruntime fuses this layer into an int8 kernel; on "
                          f"x86 CPUs without VNNI (AVX2) that kernel adds pairs of u8*s8 products in int16 with "
                          f"saturation, which these weights can overflow (two codes with |w1| + |w2| > 128), so "
                          f"onnxruntime's results there can differ from the exact ONNX semantics (the verifier "
                          f"allows for it; quantize with reduce_range=True to avoid it)", OnnxExactnessWarning,
                          stacklevel=3)
        acc_scale = None
        if integer:
            ws = list(wspec.scale) * (out_ch if len(wspec.scale) == 1 else 1)
            acc_scale = [st.scale[0] * w for w in ws]
        st.acc = {"fused": fused, "exact": exact, "relu": False, "acc_scale": acc_scale}
        st.integer = integer
        st.spec = None
        st.scale = None
        st.rank = 2 if op in ("Gemm", "MatMul") else 4
        return tail

    def _dequantized_input(self, t: str) -> bool:
        """Whether ``t`` is a DequantizeLinear output, possibly through shape ops (which
        onnxruntime's QDQ propagation moves the DequantizeLinear across before fusing)."""
        for _ in range(8):
            p = self.g.producer.get(t)
            if p is None:
                return False
            if p.op_type == "DequantizeLinear":
                return True
            if p.op_type not in ("Flatten", "Reshape", "Identity", "Squeeze", "Unsqueeze"):
                return False
            t = p.input[0]
        return False

    def _quantize_follows(self, t: str, bits: int | None = None) -> bool:
        """Whether ``t`` (optionally through Relu) feeds a QuantizeLinear (of at most ``bits``
        bits): onnxruntime then fuses."""
        for _ in range(2):
            cons = self.data_consumers(t)
            if len(cons) != 1:
                return False
            if cons[0].op_type == "QuantizeLinear":
                if bits is None:
                    return True
                z = self.g.const(cons[0].input[2]) if len(cons[0].input) > 2 and cons[0].input[2] else None
                return z is None or np.dtype(z.dtype).itemsize * 8 <= bits
            if cons[0].op_type != "Relu":
                return False
            t = cons[0].output[0]
        return False

    def _make_affine(self, node, op: str, a: dict, w: np.ndarray, bias, wspec, bspec, out_ch: int) -> nn.Module:
        wt = torch.tensor(np.ascontiguousarray(w), dtype=torch.float64 if wspec is not None else torch.float32)
        has_bias = bias is not None
        if op in ("Gemm", "MatMul"):
            in_f = w.shape[1]
            if wspec is not None:
                layer = QuantLinear(in_f, out_ch, wspec, bspec, bias=has_bias)
            else:
                layer = nn.Linear(in_f, out_ch, bias=has_bias)
        else:
            kh, kw = w.shape[2], w.shape[3]
            ks = a.get("kernel_shape", [kh, kw])
            if list(ks) != [kh, kw]:
                raise self.err(node, "kernel_shape does not match the weights")
            if list(a.get("dilations", [1, 1])) != [1, 1] or a.get("group", 1) != 1:
                raise self.err(node, "only dilation 1 and group 1 are supported", fallback=True)
            auto = a.get("auto_pad", b"NOTSET")
            auto = auto.decode() if isinstance(auto, bytes) else auto
            if auto not in ("NOTSET", "VALID"):
                raise self.err(node, f"auto_pad={auto} is not supported", fallback=True)
            pads = list(a.get("pads", [0, 0, 0, 0])) if auto == "NOTSET" else [0, 0, 0, 0]
            if pads[0] != pads[2] or pads[1] != pads[3]:
                raise self.err(node, f"asymmetric padding {pads} is not supported", fallback=True)
            stride = tuple(a.get("strides", [1, 1]))
            padding = (int(pads[0]), int(pads[1]))
            if wspec is not None:
                layer = QuantConv2d(w.shape[1], out_ch, (kh, kw), wspec, bspec, stride=stride, padding=padding,
                                    bias=has_bias)
            else:
                layer = nn.Conv2d(w.shape[1], out_ch, (kh, kw), stride=stride, padding=padding, bias=has_bias)
        if wspec is not None:
            layer = layer.double()
        with torch.no_grad():
            layer.weight.copy_(wt.to(layer.weight.dtype))
            if has_bias:
                layer.bias.copy_(torch.tensor(np.asarray(bias), dtype=layer.bias.dtype))
        return layer

    # ----- Flatten / Reshape ---------------------------------------------------------------------
    def _pass(self, cur: str, node) -> str:
        if node.input[0] != cur:
            raise self.unsupported(node)
        self.use(node)
        return node.output[0]

    def _add(self, cur: str, node) -> str:
        """An ``Add`` of a constant to a quantized value (a bias with its own quantizers, as
        ``quantize_static`` writes MatMul + Add and onnxruntime's QLinearAdd computes): an
        identity affine layer with that bias; anything else is an elementwise step."""
        other = [i for i in node.input if i != cur]
        st = self.st
        if (len(node.input) == 2 and len(other) == 1 and st.integer and st.spec is not None and st.acc is None
                and self._quantize_follows(node.output[0])
                and (self.g.quant_const(other[0]) is not None or self.g.const(other[0]) is not None)):
            return self._identity_bias(cur, node, other[0])
        return self._elementwise(cur, node)

    def _identity_bias(self, cur: str, node, bname: str) -> str:
        st = self.st
        shape = self.g.shapes.get(cur)
        rank = st.rank or (len(shape) if shape else 2)
        qb = self.g.quant_const(bname)
        b = (qb.exact() if qb is not None else np.asarray(self.g.const(bname), np.float64))
        if rank == 2:
            n = int(shape[-1]) if shape and isinstance(shape[-1], int) else int(np.asarray(b).size)
            w = np.eye(n)
            op = "MatMul"
        elif rank == 4 and shape and isinstance(shape[1], int):
            n = int(shape[1])
            w = np.eye(n).reshape(n, n, 1, 1)
            op = "Conv"
        else:
            raise self.err(node, "a quantized bias Add is supported on [N, features] and [N, C, H, W] values")
        bvec = _channel_bias(np.asarray(b, np.float64), n, conv=op == "Conv")
        if bvec is None:
            raise self.err(node, "the added constant must be a bias (one value per feature or channel)")
        wspec = QuantSpec(2, True, 1.0)
        ws = [st.scale[0]] if st.scale is not None and len(st.scale) == 1 else None
        if ws is None:
            raise self.err(node, "a quantized bias Add needs a per-tensor input scale")
        if qb is not None and qb.scale.size == 1:
            # (q - z) s_b is exact on the grid s_b
            bspec = QuantSpec(32, True, float(qb.scale.reshape(-1)[0]))
            centered = (qb.codes - qb._bcast(qb.zero_point)).reshape(-1).astype(np.float64)
            bias_exact = np.broadcast_to(centered, (n,)) * float(qb.scale.reshape(-1)[0])
        else:
            bspec = _infer_pow2_spec(bvec)
            if bspec is not None:
                bias_exact = bvec.copy()
            else:            # no exact grid of <= 32 bits: a fine one, the residual goes to the envelope
                bspec, bias_exact, _ = _approx_pow2(bvec)
                bspec = QuantSpec(32, True, bspec.scale[0])
        layer = self._make_affine(node, op, {}, w if op == "Conv" else w, bias_exact, wspec, bspec, n)
        if not np.array_equal(bias_exact, bvec):
            layer.bias_float = bvec
        # onnxruntime fuses this group into QLinearAdd, which rounds v / s_y + z_y (not
        # round(v / s_y) + z_y): at a tie with an odd zero point the code differs by one. A
        # nonzero deviation makes the envelope's quantizer tolerance positive, so ties are open.
        layer.bias_residual = np.full(n, float(ws[0]) * 2.0 ** -30)
        self.layers.append(layer)
        self.use(node)
        st.acc = {"fused": False, "exact": False, "relu": False, "acc_scale": [st.scale[0]] * n}
        st.spec = None
        st.scale = None
        st.bound = st.exp = None
        return node.output[0]

    def _avgpool(self, cur: str, node) -> str:
        """``AveragePool``/``GlobalAveragePool`` right after a quantizer: the exact window sums at
        scale ``s / k`` (:class:`~qa_lirpa.nn.QuantAvgPool2d`); a quantizer must follow."""
        st, g = self.st, self.g
        if node.input[0] != cur or not (st.integer and st.spec is not None and st.scale is not None
                                        and len(st.scale) == 1):
            raise self.err(node, "average pooling is supported right after a per-tensor quantizer", fallback=True)
        a = g.attrs(node)
        if node.op_type == "GlobalAveragePool":
            shape = g.shapes.get(cur)
            if not shape or len(shape) != 4 or not all(isinstance(d, int) for d in shape[2:]):
                raise self.err(node, "the spatial size of a GlobalAveragePool input must be known")
            kernel, stride, pads = (int(shape[2]), int(shape[3])), None, (0, 0)
        else:
            ks = list(a.get("kernel_shape", []))
            if len(ks) != 2:
                raise self.err(node, "only 2-d average pooling is supported", fallback=True)
            auto = a.get("auto_pad", b"NOTSET")
            auto = auto.decode() if isinstance(auto, bytes) else auto
            pads = list(a.get("pads", [0, 0, 0, 0])) if auto == "NOTSET" else [0, 0, 0, 0]
            if auto not in ("NOTSET", "VALID") or a.get("ceil_mode", 0) or pads[0] != pads[2] or pads[1] != pads[3]:
                raise self.err(node, "average pooling with ceil_mode, auto padding or asymmetric pads is not "
                                     "supported", fallback=True)
            if any(pads) and not a.get("count_include_pad", 0):
                raise self.err(node, "padded average pooling must count the padding (count_include_pad=1)")
            kernel, stride, pads = tuple(int(k) for k in ks), tuple(int(v) for v in a.get("strides", [1, 1])), \
                (int(pads[0]), int(pads[1]))
        self.layers.append(QuantAvgPool2d(kernel, stride=stride, padding=pads))
        self.use(node)
        k = kernel[0] * kernel[1]
        st.spec, st.acc, st.scale = None, {"fused": False, "exact": False, "relu": False,
                                           "acc_scale": [st.scale[0] / k]}, [st.scale[0] / k]
        st.bound = st.exp = None
        return node.output[0]

    def _flatten(self, cur: str, node) -> str:
        if node.input[0] != cur or int(self.g.attrs(node).get("axis", 1)) != 1:
            raise self.err(node, "only Flatten(axis=1) is supported", fallback=True)
        self.layers.append(nn.Flatten())
        self.use(node)
        self.st.rank = 2
        self._break_fusion()
        return node.output[0]

    def _break_fusion(self) -> None:
        # a shape op between an affine layer and its quantizer breaks onnxruntime's fusion
        if self.st.acc is not None:
            self.st.acc["fused"] = False

    def _reshape(self, cur: str, node) -> str:
        g = self.g
        if node.input[0] != cur:
            raise self.unsupported(node)
        target, used = self._shape_value(node.input[1])
        shape = g.shapes.get(cur)
        if target is None or shape is None or any(not isinstance(d, int) or d <= 0 for d in shape[1:]):
            raise self.err(node, "the reshape target could not be determined", fallback=True)
        rest = [int(d) for d in shape[1:]]
        n_feat = int(np.prod(rest)) if rest else 1
        first, tail = target[0], list(target[1:])
        batch_ok = first in (0, -1, "N") or (isinstance(shape[0], int) and first == shape[0])
        if not batch_ok:
            raise self.err(node, f"a reshape that changes the batch dimension ({target}) is not supported",
                           fallback=True)
        if any(isinstance(d, str) for d in tail):
            raise self.err(node, "a symbolic reshape target is not supported", fallback=True)
        tail = [int(d) for d in tail]
        if -1 in tail:
            known = int(np.prod([d for d in tail if d != -1])) if len(tail) > 1 else 1
            tail = [n_feat // known if d == -1 else d for d in tail]
        tail = [rest[i] if d == 0 and i < len(rest) else d for i, d in enumerate(tail)]
        if tail == [n_feat]:
            layer: nn.Module = nn.Flatten()
            self.st.rank = 2
        elif len(rest) == 1 and int(np.prod(tail)) == rest[0]:
            layer = nn.Unflatten(1, tuple(tail))
            self.st.rank = 1 + len(tail)
        elif tail == rest:
            layer = nn.Identity()
        else:
            raise self.err(node, f"reshape {shape} -> {target} is not supported", fallback=True)
        self.layers.append(layer)
        self.use(node, *used)
        self._break_fusion()
        return node.output[0]

    def _shape_value(self, name: str, depth: int = 0):
        """The value of a shape tensor as a list (batch dims of ``Shape`` appear as ``"N"``), and the
        dynamic nodes used to compute it."""
        g = self.g
        c = g.const(name)
        if c is not None:
            return [int(v) for v in np.asarray(c).reshape(-1)], []
        node = g.producer.get(name)
        if node is None or depth > 20 or node.op_type not in _SHAPE_OPS:
            return None, []
        a = g.attrs(node)
        if node.op_type == "Shape":
            shp = g.shapes.get(node.input[0])
            if shp is None:
                return None, []
            vals = [d if isinstance(d, int) and d > 0 else "N" for d in shp]
            if vals and isinstance(vals[0], int) and node.input[0] == g.input_name:
                vals[0] = "N"
            start, end = a.get("start", 0), a.get("end", len(vals))
            return vals[start:end], [node]
        parts, used = [], [node]
        for i in node.input:
            if not i:
                parts.append(None)
                continue
            v, u = self._shape_value(i, depth + 1)
            if v is None:
                return None, []
            parts.append(v)
            used += u
        x = parts[0]
        if node.op_type in ("Cast", "Identity", "Unsqueeze", "Squeeze"):
            return x, used
        if node.op_type == "Concat":
            return [d for p in parts if p is not None for d in p], used
        if node.op_type == "Gather":
            idx = parts[1]
            return [x[int(i)] for i in idx], used
        if node.op_type == "Slice":
            starts, ends = parts[1], parts[2]
            return x[int(starts[0]):int(min(ends[0], len(x)))], used
        return None, []


def _channel_bias(b: np.ndarray, n: int, conv: bool) -> np.ndarray | None:
    """A constant that broadcasts per feature (per channel for convolutions) as a vector."""
    if b.size == 1:
        return np.full(n, float(b.reshape(-1)[0]))
    if b.size != n:
        return None
    if conv and not (b.ndim >= 3 and b.shape[-1] == 1 and b.shape[-2] == 1):
        return None
    return b.reshape(-1).astype(np.float64)


#: the translation of the canonical form: op type -> the converter step that consumes it
TRANSLATE = {
    "QuantizeLinear": _Converter._qdq,
    "Add": _Converter._add,
    **{op: _Converter._elementwise for op in _ELEMENTWISE if op != "Add"},
    **{op: _Converter._affine for op in _AFFINE},
    "Flatten": _Converter._flatten,
    "AveragePool": _Converter._avgpool,
    "GlobalAveragePool": _Converter._avgpool,
    "Reshape": _Converter._reshape,
    **{op: _Converter._pass for op in _PASS},
}


def _quantized_graph(g: Graph) -> bool:
    return any(n.op_type in _QUANT_OPS for n in g.model.graph.node)


def _op(m: nn.Module) -> OpDef | None:
    try:
        return op_for(m)
    except UnsupportedOp:
        return None


def _has_int_step(m: nn.Module) -> bool:
    """The layer's op has exact integer semantics (``OpDef.int_forward``)."""
    op = _op(m)
    return op is not None and type(op).int_forward is not OpDef.int_forward


def _starts_quantized(layers: list) -> bool:
    return bool(layers) and input_quantizer(as_graph(nn.Sequential(*layers))) is not None


def _integer_everywhere(layers: list) -> bool:
    return _starts_quantized(layers) and all(_has_int_step(m) for m in layers)


def _has_quantized_layer(layers: list) -> bool:
    """A quantizer or a quantized affine layer (the model then runs in float64)."""
    return any((op := _op(m)) is not None and (op.quantizer or (op.weighted and _has_int_step(m))) for m in layers)


def load_onnx(path: str | os.PathLike, *, input_quant: QuantSpec | None = None,
              requant: str = "onnxruntime") -> nn.Module:
    """Import an ONNX model (one input, one output) as a torch module of qa_lirpa layers.

    Args:
        path: the ONNX file.
        input_quant: an input quantizer to put in front of a model that has none (e.g.
            ``QuantSpec(8, False, 1.0)`` for raw 8-bit pixels), which makes the input grid finite.
            A model that starts with a quantizer already must not be given one.
        requant: ``"onnxruntime"`` (default) reproduces onnxruntime's fused integer kernels (float32
            requantization multiplier) where it uses them; ``"exact"`` gives the exact real-number
            semantics of the graph. They coincide for power-of-two scales.

    Returns:
        An :class:`ImportedModel` (an ``nn.Sequential``). Quantized models are float64 and, when
        every layer has an integer step, work with :func:`qa_lirpa.integer_forward`; plain float
        models keep the file's float32 parameters.

    Raises:
        OnnxImportError: a malformed file (one message naming the file), an unsupported op (naming
            the node and the op), or a pattern without an exact meaning.
    """
    if requant not in REQUANT_MODES:
        raise ValueError(f"load_onnx: requant must be one of {REQUANT_MODES}, got {requant!r}")
    path = os.fspath(path)
    original = read_model(path)
    canon = normalize(original, path)
    model = canon.model
    g = Graph(model, path)
    shape = g.shapes.get(g.input_name, [])
    rank1 = len(shape) == 1           # no batch dimension: one sample of shape [n]
    in_shape = [d if isinstance(d, int) and d > 0 else None for d in (shape if rank1 else shape[1:])]
    quantized = _quantized_graph(g)
    if input_quant is not None and quantized:
        first = [n for n in g.consumers.get(g.input_name, []) if n.op_type != "Shape"]
        if first and first[0].op_type in ("QuantizeLinear",) + tuple(_ELEMENTWISE):
            raise OnnxImportError(f"{path}: the model quantizes its input already ({node_label(first[0])}); "
                                  f"do not pass input_quant")
    conv = _Converter(g, input_quant, requant)
    conv.int8_kernels = canon.int8_kernels
    conv.origin = canon.origin
    conv.ort_optimized = not canon.qonnx
    if rank1:
        conv.st.rank = 2
    try:
        layers = conv.run()
    except _ChainError as e:
        if quantized:
            raise OnnxImportError(str(e)) from None
        from .float_fallback import convert_float

        module = convert_float(original, path, e)
        layers = [module] if input_quant is None else [QuantInput(input_quant), module]
        return ImportedModel(layers, path, in_shape, requant, False).eval()
    out = ImportedModel(layers, path, in_shape, requant, _integer_everywhere(layers))
    if _has_quantized_layer(layers):
        out = out.double()
    return out.eval()


__all__ = ["load_onnx", "ImportedModel", "REQUANT_MODES"]
