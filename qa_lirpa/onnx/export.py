"""Export a QNN to ONNX so that onnxruntime computes its exact integer semantics.

The graph is written directly with ``onnx.helper`` (no torch.onnx) by walking the model's QNN
graph (:func:`qa_lirpa.graph.as_graph`; a chain is a graph): each node's op definition writes its
own nodes (``OpDef.onnx(layer, emitter, *inputs)``) through an :class:`OnnxEmitter`, which keeps,
per tensor, its ONNX name and a bound on its values (:class:`_State`) and offers the primitives
below with their exactness checks. The graph's output is the output node's tensor.

- input ``input`` FLOAT ``[N, *input_shape]`` (dynamic batch), output ``output`` FLOAT;
- the input quantizer and a final output quantizer with half-even rounding and at most 8 bits
  become ``QuantizeLinear -> [Clip on the codes, if the format is narrower than (u)int8] ->
  DequantizeLinear`` (the DequantizeLinear of a QuantInput uses its ``output_scale``); hidden
  half-even quantizers and wider formats become ``[Mul(1/s)] -> Clip -> Round -> [Mul(s)]``
  (ONNX Round is half-to-even). Hidden quantizers are not QDQ because onnxruntime's default
  optimizer rewrites ``DequantizeLinear -> Gemm/Conv (float weights) -> QuantizeLinear`` into an
  int8 kernel with weights it re-quantizes itself, which is not exact (see :func:`_qdq_choice`);
- a half-up quantizer becomes ``[Mul(1/s)] -> Clip(qmin - z, qmax - z) -> f = Floor(v) ->
  c = f + Cast(GreaterOrEqual(v - f, 0.5)) -> [Mul(s_out)]``. The shorter ``Add(0.5) -> Floor`` is
  not exact in float32: ``fl32(0.5 - 2^-25 + 0.5) = 1.0``, so an input at that value would get
  code 1 instead of 0;
- a half-down quantizer mirrors it: ``c = Ceil(v) - Cast(GreaterOrEqual(Ceil(v) - v, 0.5))``
  (``Ceil(v - 0.5)`` is not exact in float32 for the same reason); a ``down`` quantizer rounds
  with ``Floor(v)``, an ``up`` quantizer with ``Ceil(v)`` (exact on every float32). The clip before
  the rounding is exact for every mode: each maps integers to themselves and is monotone;
- QuantLinear -> ``Gemm`` and QuantConv2d -> ``Conv`` with the *dequantized* weights and bias as
  float32 initializers (exact: power-of-two scales, codes below 2^24). Integer weights behind
  DequantizeLinear would let onnxruntime fuse the layer into its int8 kernels, which on x86 CPUs
  without VNNI saturate int16 pair sums and so are not exact;
- Flatten -> ``Flatten``, ReLU -> ``Relu``; Identity/Dropout vanish;
- QuantAdd -> ``Add`` of the two dequantized inputs (exact below 2^24 units of the finer grid),
  then its quantizer; QuantAvgPool2d -> ``AveragePool`` (padding counted) only for a power-of-two
  kernel area (the division is then exact); MaxPool2d -> ``MaxPool``; QuantConcat -> ``Concat``.

Every scale must be a power of two, and every float32 value the graph computes must be exact:
for each output channel of an affine layer, ``sum_k |w_k| * max|x| + |b| < 2^24`` in units of the
finest scale involved (so any partial sum, in any order, is an exact float32). The exporter checks
this and raises :class:`OnnxExportError` otherwise; it also refuses anything else it cannot
express exactly.
"""
from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..base.files import atomic_write_bytes
from ..graph import INPUT, UnsupportedOp, as_graph, input_quantizer, op_for
from ..nn import layers as _layers  # noqa: F401 - registers the op definitions of the built-in layers
from ..quant.spec import QuantSpec
from .errors import OnnxExportError

F32_EXACT = 1 << 24
MIN_OPSET, MAX_OPSET = 13, 21
_EXP_RANGE = (-100, 100)    # keep every value far from float32 under/overflow


def _pow2_exp(s: float, what: str) -> int:
    m, e = math.frexp(s)
    if m != 0.5:
        raise OnnxExportError(f"export_onnx: {what}: scale {s!r} is not a power of two; onnxruntime's "
                              f"float32 arithmetic would not reproduce the integer semantics exactly")
    return e - 1


@dataclass
class _State:
    """Values of the current tensor are integers ``k * 2^exp`` with ``|k| <= bound``."""

    bound: int
    exp: int
    rank: int


class _Builder:
    def __init__(self, opset: int) -> None:
        from onnx import TensorProto, helper, numpy_helper

        self.helper, self.TP, self.nh = helper, TensorProto, numpy_helper
        self.opset = opset
        self.nodes: list = []
        self.inits: list = []
        self.n = 0

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, base: str, arr: np.ndarray) -> str:
        name = self.name(base)
        self.inits.append(self.nh.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(self, op: str, inputs: Sequence[str], base: str, **attrs) -> str:
        out = self.name(base)
        self.nodes.append(self.helper.make_node(op, list(inputs), [out], name=f"{base}/{op}_{self.n}", **attrs))
        return out


def _chan_shape(values: Sequence, rank: int, axis: int) -> np.ndarray:
    """A float32 constant broadcasting along ``axis`` of a rank-``rank`` tensor (scalar if one value)."""
    arr = np.asarray(values, dtype=np.float32)
    if arr.size == 1:
        return arr.reshape(())
    axis = axis % rank
    return arr.reshape([arr.size] + [1] * (rank - 1 - axis))


def _spec_axis(spec: QuantSpec, rank: int) -> int:
    return spec.axis % rank if spec.per_channel else 1


def _check_float32(values: np.ndarray, what: str) -> np.ndarray:
    f = values.astype(np.float32)
    if not np.array_equal(f.astype(np.float64), values.astype(np.float64)):
        raise OnnxExportError(f"export_onnx: {what} is not exactly representable in float32")
    return f


def _exact_half(b, v: str, base: str, step: str, combine: str) -> str:
    """Round half up (``step="Floor"``, ``combine="Add"``) or half down (``"Ceil"``, ``"Sub"``)
    exactly in float32: ``f = step(v)``, then ``f`` combined with ``[|v - f| >= 1/2]``."""
    f = b.node(step, [v], base)
    frac = b.node("Sub", [v, f] if step == "Floor" else [f, v], base)
    ge = b.node("GreaterOrEqual", [frac, b.const(f"{base}.half", np.asarray(0.5, np.float32))], base)
    flag = b.node("Cast", [ge], base, to=b.TP.FLOAT)
    return b.node(combine, [f, flag], base)


def _emit_quantizer(b: _Builder, x: str, spec: QuantSpec, out_scales: Sequence[float], rank: int,
                    base: str, qdq: bool) -> str:
    """Nodes computing ``(clamp(R(x/s) + z, qmin, qmax) - z) * s_out`` exactly (QuantizeLinear/
    DequantizeLinear if ``qdq`` and the format allows it, else standard float ops)."""
    ax = _spec_axis(spec, rank)
    zps = spec.zero_points()
    scales = list(spec.scale) if spec.per_channel else [spec.scale[0]]
    if qdq and spec.rounding == "half_even" and spec.bits <= 8:
        dt = np.int8 if spec.signed else np.uint8
        info = np.iinfo(dt)
        z = np.asarray(zps if spec.per_channel else zps[:1], dtype=dt)
        z = z.reshape(()) if z.size == 1 else z
        s = np.asarray(scales, dtype=np.float32)
        s = s.reshape(()) if s.size == 1 else s
        axis_attr = {"axis": ax} if s.ndim == 1 else {}
        q = b.node("QuantizeLinear", [x, b.const(f"{base}.scale", s), b.const(f"{base}.zero_point", z)],
                   base, **axis_attr)
        if spec.qmin > info.min or spec.qmax < info.max:
            q = b.node("Clip", [q, b.const(f"{base}.qmin", np.asarray(spec.qmin, dtype=dt)),
                                b.const(f"{base}.qmax", np.asarray(spec.qmax, dtype=dt))], base)
        so = np.asarray(out_scales, dtype=np.float32)
        so = so.reshape(()) if so.size == 1 else so
        return b.node("DequantizeLinear", [q, b.const(f"{base}.out_scale", so),
                                           b.const(f"{base}.out_zero_point", z)], base,
                      **({"axis": ax} if so.ndim == 1 else {}))
    v = x
    inv = [1.0 / s for s in scales]
    if any(i != 1.0 for i in inv):
        v = b.node("Mul", [v, b.const(f"{base}.inv_scale", _chan_shape(inv, rank, ax))], base)
    lo = [spec.qmin - z for z in zps] if spec.per_channel else [spec.qmin - zps[0]]
    hi = [spec.qmax - z for z in zps] if spec.per_channel else [spec.qmax - zps[0]]
    if len(lo) == 1:
        v = b.node("Clip", [v, b.const(f"{base}.lo", np.asarray(lo[0], np.float32)),
                            b.const(f"{base}.hi", np.asarray(hi[0], np.float32))], base)
    else:
        v = b.node("Max", [v, b.const(f"{base}.lo", _chan_shape(lo, rank, ax))], base)
        v = b.node("Min", [v, b.const(f"{base}.hi", _chan_shape(hi, rank, ax))], base)
    if spec.rounding == "half_even":
        c = b.node("Round", [v], base)
    elif spec.rounding == "half_up":
        # floor(v + 1/2) = floor(v) + [v - floor(v) >= 1/2]
        c = _exact_half(b, v, base, "Floor", "Add")
    elif spec.rounding == "half_down":
        # ceil(v - 1/2) = ceil(v) - [ceil(v) - v >= 1/2]; ceil(v) - v rounds monotonically, so it
        # never crosses the representable 1/2 in float32
        c = _exact_half(b, v, base, "Ceil", "Sub")
    elif spec.rounding == "down":
        c = b.node("Floor", [v], base)
    elif spec.rounding == "up":
        c = b.node("Ceil", [v], base)
    else:
        raise OnnxExportError(f"export_onnx: rounding mode {spec.rounding!r} has no exact ONNX form")
    if any(s != 1.0 for s in out_scales):
        c = b.node("Mul", [c, b.const(f"{base}.out_scale", _chan_shape(list(out_scales), rank, ax))], base)
    return c


def _quant_state(spec: QuantSpec, out_scales: Sequence[float], rank: int, what: str) -> _State:
    exps = [_pow2_exp(s, what) for s in out_scales]
    for s in spec.scale:
        _pow2_exp(s, what)
    e = min(exps)
    zps = spec.zero_points()
    bound = 0
    for i, z in enumerate(zps):
        ei = exps[i if len(exps) > 1 else 0]
        bound = max(bound, max(abs(spec.qmin - z), abs(spec.qmax - z)) << (ei - e))
    _check_state(_State(bound, e, rank), what)
    return _State(bound, e, rank)


def _check_state(st: _State, what: str) -> None:
    if st.bound >= F32_EXACT:
        raise OnnxExportError(f"export_onnx: {what}: values need {st.bound.bit_length()} bits; float32 "
                              f"holds integers exactly only below 2^24")
    if not (_EXP_RANGE[0] <= st.exp and st.exp + 24 <= _EXP_RANGE[1]):
        raise OnnxExportError(f"export_onnx: {what}: scale 2^{st.exp} is too close to float32 under/overflow")


def accumulator_bounds(l1: Sequence[int], acc_exps: Sequence[int], bias_codes: Sequence[int],
                       bias_exps: Sequence[int], in_bound: int) -> tuple[list[int], list[int]]:
    """Per output channel ``c``: the unit exponent ``u_c`` (the finer of the accumulator and bias
    scales) and a bound, in units of ``2^u_c``, on every partial sum of ``sum_k w_k x_k + b`` in any
    order: ``sum_k |w_k| * max|x| + |b|``, where ``l1[c] = sum_k |w_ck|`` (codes), the input codes
    are bounded by ``in_bound``, and ``acc_exps``/``bias_exps`` are the power-of-two exponents of
    the accumulator and bias scales."""
    units = [min(a, e) for a, e in zip(acc_exps, bias_exps)]
    bounds = [int(l1[c]) * int(in_bound) * (1 << (acc_exps[c] - units[c]))
              + abs(int(bias_codes[c])) * (1 << (bias_exps[c] - units[c])) for c in range(len(units))]
    return bounds, units


class OnnxTensor:
    """A tensor of the graph being written: its ONNX name and what its values are (:class:`_State`)."""

    __slots__ = ("name", "state")

    def __init__(self, name: str, state: _State) -> None:
        self.name, self.state = name, state

    @property
    def rank(self) -> int:
        return self.state.rank


class OnnxEmitter:
    """The ONNX backend's context: what an op's ``onnx(layer, em, *inputs)`` method uses to write
    its nodes (``inputs`` and the result are :class:`OnnxTensor`). Every primitive keeps the
    exactness invariant (every value an exact float32) and raises :class:`OnnxExportError`, naming
    the node, where it cannot."""

    def __init__(self, opset: int, qdq: dict[str, bool]) -> None:
        self.b = _Builder(opset)
        self.qdq = qdq
        self.node = None
        self.layer = None

    # ----- where we are ------------------------------------------------------------------------
    @property
    def base(self) -> str:
        return f"l{self.node.index}"

    @property
    def what(self) -> str:
        return f"layer {self.node.index} ({type(self.layer).__name__})"

    def error(self, reason: str) -> OnnxExportError:
        """The one-line refusal for the node being written."""
        return OnnxExportError(f"export_onnx: {self.what}: {reason}")

    def reads_graph_input(self) -> bool:
        """The node being written reads the graph's input tensor (only the input quantizer may)."""
        return INPUT in self.node.inputs

    # ----- plain nodes ---------------------------------------------------------------------------
    @staticmethod
    def state(bound: int, exp: int, rank: int) -> _State:
        """Values ``k * 2^exp`` with ``|k| <= bound`` in a rank-``rank`` tensor."""
        return _State(int(bound), int(exp), int(rank))

    def checked(self, bound: int, exp: int, rank: int) -> _State:
        """:meth:`state`, refused where float32 could not hold every value exactly."""
        st = _State(int(bound), int(exp), int(rank))
        _check_state(st, self.what)
        return st

    def const(self, suffix: str, arr: np.ndarray) -> str:
        return self.b.const(f"{self.base}.{suffix}", arr)

    def op(self, op_type: str, inputs: Sequence[OnnxTensor | str], state: _State, **attrs) -> OnnxTensor:
        """One ONNX node ``op_type(*inputs)`` whose values are described by ``state``."""
        names = [x.name if isinstance(x, OnnxTensor) else x for x in inputs]
        return OnnxTensor(self.b.node(op_type, names, self.base, **attrs), state)

    # ----- quantizers, affine layers, sums -------------------------------------------------------
    def quantize(self, x: OnnxTensor, spec: QuantSpec, out_scales: Sequence[float]) -> OnnxTensor:
        """``(clamp(R(x / s) + z, qmin, qmax) - z) * s_out`` exactly (QuantizeLinear/DequantizeLinear
        where :func:`_qdq_choice` chose it for this node)."""
        outs = [float(s) for s in out_scales]
        st = _quant_state(spec, outs, x.rank, self.what)
        name = _emit_quantizer(self.b, x.name, spec, outs, x.rank, self.base, self.qdq.get(self.node.name, False))
        return OnnxTensor(name, st)

    def affine(self, m: nn.Module, x: OnnxTensor, op_type: str, rank: int, **attrs) -> OnnxTensor:
        """``op_type(x, W, b)`` (Gemm or Conv, written by the layer's op) with the dequantized weight
        and bias codes of ``m`` (``weight_codes()``, ``affine_scales``) as float32 initializers,
        after checking that every partial sum of every output channel is an exact float32."""
        return _affine(self, x, m, op_type, rank, attrs)

    def add(self, a: OnnxTensor, b: OnnxTensor) -> OnnxTensor:
        """``a + b`` of two tensors of the same shape, refused unless float32 adds them exactly."""
        e = min(a.state.exp, b.state.exp)
        bound = (a.state.bound << (a.state.exp - e)) + (b.state.bound << (b.state.exp - e))
        if bound >= F32_EXACT:
            raise self.error(f"the sum can reach {bound} units of 2^{e} >= 2^24, so onnxruntime's float32 "
                             f"addition could be inexact")
        return self.op("Add", [a, b], self.checked(bound, e, max(a.rank, b.rank)))


def _pow2_fraction_exp(f: Fraction, what: str) -> int:
    num, den = f.numerator, f.denominator
    if num <= 0 or num & (num - 1) or den & (den - 1):
        raise OnnxExportError(f"export_onnx: {what}: scale {float(f)!r} is not a power of two; onnxruntime's "
                              f"float32 arithmetic would not reproduce the integer semantics exactly")
    return num.bit_length() - den.bit_length()


def _affine(em: OnnxEmitter, x: OnnxTensor, layer: nn.Module, op_type: str, rank: int, attrs: dict) -> OnnxTensor:
    what = em.what
    st = x.state
    try:
        scales, m_acc, bq, m_b = layer.affine_scales(Fraction(2) ** st.exp)
    except ValueError as e:
        raise OnnxExportError(f"export_onnx: {what}: {e} (bias_spec=None)") from None
    wq = layer.weight_codes().numpy().astype(np.int64)          # centered codes [out, ...]
    out_ch = wq.shape[0]
    acc_exps = [_pow2_fraction_exp(s * m, f"{what} weights") for s, m in zip(scales, m_acc)]
    w_exps = [a - st.exp for a in acc_exps]
    l1 = np.abs(wq).reshape(out_ch, -1).sum(axis=1)
    has_bias = bq is not None
    if has_bias:
        b_exps = [_pow2_fraction_exp(s * m, f"{what} bias") for s, m in zip(scales, m_b)]
        bq = bq.numpy().astype(np.int64).reshape(-1)
    else:
        b_exps, bq = acc_exps, np.zeros(out_ch, dtype=np.int64)
    bounds, units = accumulator_bounds(l1, acc_exps, bq, b_exps, st.bound)
    worst = max(range(out_ch), key=lambda c: bounds[c])
    if bounds[worst] >= F32_EXACT:
        raise OnnxExportError(
            f"export_onnx: {what}: output channel {worst} can reach {bounds[worst]} units of 2^{units[worst]} "
            f"(sum|w| * max|x| + |b|) >= 2^24, so onnxruntime's float32 accumulation could be inexact")
    w_real = wq.astype(np.float64) * np.asarray([2.0 ** e for e in w_exps]).reshape([-1] + [1] * (wq.ndim - 1))
    inputs = [x.name, em.const("weight", _check_float32(w_real, f"{what} weights"))]
    if has_bias:
        b_real = bq.astype(np.float64) * np.asarray([2.0 ** e for e in b_exps])
        inputs.append(em.const("bias", _check_float32(b_real, f"{what} bias")))
    # every channel's values are exact float32 on their own; the merged description (one unit for
    # all channels) is what the next affine layer's check uses, which is pessimistic but sound
    e = min(units)
    if not (_EXP_RANGE[0] <= e and max(units) + 24 <= _EXP_RANGE[1]):
        raise OnnxExportError(f"export_onnx: {what}: accumulator scale 2^{e} is too close to float32 "
                              f"under/overflow")
    return em.op(op_type, inputs, _State(max(bd << (u - e) for bd, u in zip(bounds, units)), e, rank), **attrs)


def export_onnx(model: nn.Module, path: str | os.PathLike, input_shape: Sequence[int], opset: int = 17) -> None:
    """Write ``model`` (a QNN: a chain or a :class:`~qa_lirpa.graph.QNNGraph` whose first node is
    a QuantInput) as an ONNX file with one FLOAT input ``[N, *input_shape]`` and one FLOAT output,
    such that onnxruntime's outputs equal :func:`qa_lirpa.integer_forward` exactly (on float32
    inputs). Each node is written by its op definition's ``onnx`` method
    (:mod:`qa_lirpa.graph.registry`) through an :class:`OnnxEmitter`.

    Raises :class:`OnnxExportError` for anything that could not be reproduced exactly
    (non-power-of-two scales, float biases, accumulators that could leave float32's exact range,
    unsupported layers). The file is written atomically (temporary file, then rename).
    """
    import onnx
    from onnx import TensorProto, helper

    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise OnnxExportError(f"export_onnx: opset must be in {MIN_OPSET}..{MAX_OPSET}, got {opset}")
    try:
        model = copy.deepcopy(model).cpu().double().eval()      # never touch the caller's model
    except Exception as e:  # noqa: BLE001
        raise OnnxExportError(f"export_onnx: cannot copy the model to the CPU in float64: {e}") from None
    graph = as_graph(model)
    if not graph.nodes or input_quantizer(graph) is None:
        raise OnnxExportError("export_onnx: the model must start with a QuantInput (a QNN with exact "
                              "integer semantics)")
    input_shape = [int(d) for d in input_shape]
    em = OnnxEmitter(int(opset), _qdq_choice(graph))

    def step(node, layer, *xs):
        em.node, em.layer = node, layer
        try:
            return op_for(layer).onnx(layer, em, *xs)
        except UnsupportedOp as e:
            raise OnnxExportError(f"export_onnx: {em.what} is not supported (no exact ONNX form: {e})") from None

    out = graph.walk(OnnxTensor(INPUT, _State(0, 0, len(input_shape) + 1)), step)
    with torch.no_grad():
        probe = torch.zeros(1, *input_shape, dtype=torch.float64)
        try:
            out_shape = list(model(probe).shape[1:])
        except Exception as e:  # noqa: BLE001
            raise OnnxExportError(f"export_onnx: the model does not run on input shape {input_shape}: {e}") from None
    nodes = em.b.nodes
    if out.name == INPUT:
        nodes.append(helper.make_node("Identity", [INPUT], ["output"], name="output/Identity"))
    for n in nodes:                        # the output node's tensor is the graph output
        for k, name in enumerate(n.input):
            if name == out.name:
                n.input[k] = "output"
        for k, name in enumerate(n.output):
            if name == out.name:
                n.output[k] = "output"
    graph_proto = helper.make_graph(
        nodes, "qa_lirpa_qnn",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", *out_shape])],
        em.b.inits)
    opsets = [helper.make_opsetid("", int(opset))]
    from .. import __version__

    onnx_model = helper.make_model(graph_proto, opset_imports=opsets, producer_name="qa-lirpa",
                                   producer_version=__version__)
    onnx_model.ir_version = helper.find_min_ir_version_for(opsets)
    onnx_model.doc_string = ("Quantized network exported by qa-lirpa: onnxruntime reproduces its exact "
                             "integer semantics on float32 inputs.")
    try:
        onnx.checker.check_model(onnx_model, full_check=True)
    except Exception as e:  # noqa: BLE001 - a bug here, not the user's
        raise OnnxExportError(f"export_onnx: the generated graph is invalid: {e}") from None
    _atomic_save(onnx_model, Path(path))


def _qdq_choice(graph) -> dict[str, bool]:
    """Which quantizer nodes become QuantizeLinear/DequantizeLinear (by node name): the input
    quantizer, and the output node when it is a quantizer, unless a weighted node is fed by the
    input's DequantizeLinear and feeds the output's QuantizeLinear, both through nodes that are
    neither quantizers nor weighted (shape ops, ReLU, pooling, Add, ...); never a hidden quantizer.
    On a chain: the final quantizer is QDQ unless exactly one affine layer separates it from the
    input quantizer.

    Why: onnxruntime's default optimizer (WeightBiasQuantization, measured with onnxruntime 1.32)
    rewrites ``DequantizeLinear -> Gemm/Conv with float weights -> QuantizeLinear`` into an int8
    kernel with weights it quantizes itself (per tensor, scale max|w|/127), which changes the
    results; no Gemm/Conv may therefore sit between a DequantizeLinear and a QuantizeLinear. Hidden
    half-even quantizers use ``Mul -> Clip -> Round -> Mul``, which no QDQ transformer touches.
    The decision reads only the op flags ``quantizer``, ``weighted`` and ``is_input``."""
    def flags(layer) -> tuple[bool, bool, bool]:
        try:
            op = op_for(layer)
        except UnsupportedOp:
            return False, False, False
        return bool(op.quantizer), bool(op.weighted), bool(op.is_input)

    info = {node.name: flags(layer) for node, layer in graph.items()}
    use = {name: False for name, (q, _, _) in info.items() if q}
    first = graph.nodes[0]
    if info[first.name][2] and first.inputs == (INPUT,):
        use[first.name] = True
    out = graph.output
    if out not in use or use.get(out):
        return use
    # values that carry a DequantizeLinear's output unchanged but for transparent nodes
    from_dq = {name for name, on in use.items() if on}
    for node in graph.nodes:
        q, w, _ = info[node.name]
        if not q and not w and any(i in from_dq for i in node.inputs):
            from_dq.add(node.name)
    # values that reach the output quantizer through transparent nodes only
    to_q = set(graph.node(out).inputs)
    for node in reversed(graph.nodes):
        q, w, _ = info[node.name]
        if node.name in to_q and not q and not w:
            to_q.update(node.inputs)
    exposed = [node for node in graph.nodes
               if info[node.name][1] and node.name in to_q and any(i in from_dq for i in node.inputs)]
    use[out] = not exposed
    return use


def _atomic_save(onnx_model, path: Path) -> None:
    atomic_write_bytes(path, onnx_model.SerializeToString())


__all__ = ["export_onnx", "accumulator_bounds", "OnnxEmitter", "OnnxTensor"]
