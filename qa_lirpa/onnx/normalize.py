"""Normalise, then translate: every quantized-ONNX dialect is first rewritten into one canonical
form, which :mod:`qa_lirpa.onnx.load` then translates into qa_lirpa layers.

The canonical form (what the translator reads):

- quantizers: ``QuantizeLinear -> [Clip] -> DequantizeLinear`` in the default domain with 8, 16 or
  32-bit codes (a Clip on the codes narrows the format, e.g. int4), or elementwise chains of
  ``Mul``/``Div``/``Add``/``Sub``/``Clip``/``Relu`` with constants around one ``Round`` (half even),
  ``Floor`` (down) or ``Ceil`` (up);
- affine layers: ``Gemm``/``MatMul [-> Add]``/``Conv`` whose weights are ``DequantizeLinear`` of
  integer constants or float constants (float64 where a rewrite computed them);
- ``Relu``, ``Flatten``, ``Reshape``, ``Identity``.

Each dialect has its rewrite, registered by ``(domain, op type)`` in :data:`REWRITES`:

- onnxruntime's QOperator ops (``QLinearConv``, ``QLinearMatMul``, ``QGemm``, ``QLinearAdd``)
  become ``DequantizeLinear -> op -> QuantizeLinear``, which onnxruntime fuses back into exactly
  these kernels (the translator models the fused kernels);
- ``MatMulInteger``/``ConvInteger`` become ``DequantizeLinear`` (scale 1, their zero points) into
  a float ``MatMul``/``Conv``: the products are exact integers either way;
- ``com.microsoft`` ``QuantizeLinear``/``DequantizeLinear`` move to the default domain; int4/uint4
  codes become int8/uint8 codes with a Clip to the 4-bit range; a ``QuantizeLinear`` with an
  ``output_dtype`` and no zero point gets an explicit zero point;
- QONNX ``Quant`` (Brevitas, FINN, QKeras, HAWQ): on a constant, integer codes through
  ``DequantizeLinear`` (qonnx's own float32 arithmetic); on a tensor, ``Div(s) -> Clip -> Round|
  Floor|Ceil -> Mul(s)``, which is qonnx's executable definition op for op;
- a ``Cast`` to an integer type whose input is provably integer-valued within the type's range,
  followed by ``DequantizeLinear``, becomes ``Sub(z) -> Mul(s)``; ``Cast`` that changes nothing is
  dropped.

Then two graph passes: constant sub-graphs (``ConstantOfShape``, ``Expand``, ``Range`` ... on
constants) are folded by ``onnx.reference`` (onnx's own executable semantics, which equal
onnxruntime's for these exact ops), and a float ``Mul``/``Div``/``Add``/``Sub`` by constants right
after an affine layer is folded into its weights and bias (exact in float64 up to one rounding
that the float32 envelope's relative slack covers), unless it is the scale of a quantizer that
dequantizes itself.

What cannot be bounded is refused with one line naming the file, the node, its op and domain and
the reason (:func:`refusal`): ``DynamicQuantizeLinear`` (its scale depends on the input),
``BipolarQuant``, unknown custom ops.

The rewritten model is for the translator only; onnxruntime always runs the original file, except
for QONNX files (which onnxruntime cannot run): :func:`runnable_bytes` gives the standard-op
expansion that the verifier's referee runs instead.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import OnnxImportError
from .graph import node_label as node_text

QONNX_DOMAINS = ("qonnx.custom_op.general", "onnx.brevitas", "finn.custom_op.general")
MS = "com.microsoft"
_ROUNDERS = ("Round", "Floor", "Ceil")
_INT_TYPES = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16, "int32": np.int32}


def domain_of(node) -> str:
    return node.domain if node.domain not in ("", "ai.onnx") else "ai.onnx"


def refusal(path: str, node, why: str) -> OnnxImportError:
    """The one-line refusal for a node whose semantics we cannot bound."""
    return OnnxImportError(f"{path}: {node_text(node)}: {why}")


class _Rewrite:
    """A mutable view of a model's graph for the rewrite passes: nodes in order, constants by name,
    element types by tensor name, and fresh names."""

    def __init__(self, model, path: str) -> None:
        from onnx import numpy_helper

        self.model, self.path = model, path
        try:
            import onnx

            typed = onnx.shape_inference.infer_shapes(model)
        except Exception:  # noqa: BLE001 - types are a convenience (custom ops stop inference)
            typed = model
        g = typed.graph
        self.nodes = list(g.node)
        self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.new_consts: dict[str, np.ndarray] = {}
        self.types: dict[str, int] = {}
        for vi in list(g.value_info) + list(g.input) + list(g.output):
            if vi.type.HasField("tensor_type"):
                self.types[vi.name] = vi.type.tensor_type.elem_type
        self._n = 0
        self.changed = False
        self.file_names = {n.name for n in model.graph.node if n.name}
        #: name of a node a rewrite made -> the label of the file's node it replaces
        self.origin: dict[str, str] = {}
        # layers onnxruntime runs in its u8*s8 integer kernel although the canonical form shows a
        # float op (MatMulInteger/ConvInteger): node name -> (raw s8 weight codes [out, ...],
        # per-output factor from accumulator codes to the layer's real output)
        self.int8_kernels: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    # ----- helpers ------------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        self._n += 1
        return f"{base}__qa{self._n}"

    def const(self, name: str) -> np.ndarray | None:
        if not name:
            return None
        if name in self.new_consts:
            return self.new_consts[name]
        if name in self.consts:
            return self.consts[name]
        p = self.producer(name)
        if p is not None and p.op_type == "Constant":
            from onnx import helper, numpy_helper

            for a in p.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
                if a.name in ("value_float", "value_floats", "value_int", "value_ints"):
                    return np.asarray(helper.get_attribute_value(a),
                                      np.float32 if "float" in a.name else np.int64)
        return None

    def add_const(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.new_consts[name] = np.asarray(value)
        return name

    def producer(self, name: str):
        for n in self.nodes:
            if name in n.output:
                return n
        return None

    def consumers(self, name: str) -> list:
        return [n for n in self.nodes if name in n.input]

    def elem_type(self, name: str) -> np.dtype | None:
        """The numpy dtype of a tensor where it is known (constants, typed values, Q outputs)."""
        from onnx import helper

        c = self.const(name)
        if c is not None:
            return c.dtype
        t = self.types.get(name)
        if t:
            try:
                return np.dtype(helper.tensor_dtype_to_np_dtype(t))
            except Exception:  # noqa: BLE001 - exotic types
                return None
        p = self.producer(name)
        if p is not None and p.op_type == "QuantizeLinear" and len(p.input) > 2 and p.input[2]:
            z = self.const(p.input[2])
            return None if z is None else z.dtype
        if p is not None and p.op_type == "QuantizeLinear":
            return np.dtype(np.uint8)
        return None

    def node(self, op: str, inputs, outputs, name: str = "", **attrs):
        from onnx import helper

        return helper.make_node(op, list(inputs), list(outputs), name=name or self.fresh(op), **attrs)

    def replace(self, old, new: list) -> None:
        i = next(k for k, n in enumerate(self.nodes) if n is old)
        self.nodes[i:i + 1] = new
        self.changed = True
        source = self.label(old)
        for n in new:                       # messages name the file's node, not the rewrite's
            if n.name not in self.file_names:
                self.origin.setdefault(n.name, source)

    def label(self, node) -> str:
        """How messages name ``node``: the node of the file it came from."""
        return self.origin.get(node.name) or node_text(node)

    def fail(self, node, why: str) -> OnnxImportError:
        return OnnxImportError(f"{self.path}: {self.label(node)}: {why}")

    def attrs(self, node) -> dict:
        from onnx import helper

        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def build(self):
        """The rewritten model (topologically ordered by construction)."""
        import onnx
        from onnx import helper, numpy_helper

        m = onnx.ModelProto()
        m.CopyFrom(self.model)
        g = m.graph
        del g.node[:]
        g.node.extend(self.nodes)
        used = {i for n in self.nodes for i in n.input} | {o.name for o in g.output}
        keep = [t for t in g.initializer if t.name in used]
        del g.initializer[:]
        g.initializer.extend(keep)
        for name, v in self.new_consts.items():
            if name in used:
                g.initializer.append(numpy_helper.from_array(np.asarray(v), name))
        # older exporters list initializers among the graph inputs: drop those that went away
        inits_now = {t.name for t in g.initializer}
        originals = {t.name for t in self.model.graph.initializer}
        keep_in = [i for i in g.input if i.name not in originals or i.name in inits_now]
        del g.input[:]
        g.input.extend(keep_in)
        if not any(o.domain in ("", "ai.onnx") for o in m.opset_import):
            m.opset_import.append(helper.make_opsetid("", 17))
        return m


# ----- the rewrite registry ------------------------------------------------------------------------
Rewriter = Callable[[_Rewrite, object], None]
REWRITES: dict[tuple[str, str], Rewriter] = {}


def rewrites(*keys: tuple[str, str]):
    """Register a rewrite for ``(domain, op type)`` keys (``"ai.onnx"`` for the default domain)."""
    def deco(fn: Rewriter) -> Rewriter:
        for k in keys:
            REWRITES[k] = fn
        return fn
    return deco


def _scalar32(v) -> np.ndarray:
    return np.asarray(v, np.float32)


def _dq(rw: _Rewrite, x: str, scale: str, zp: str | None, axis: int | None = None) -> tuple[list, str]:
    out = rw.fresh(x + "_dq")
    ins = [x, scale] + ([zp] if zp else [])
    kw = {} if axis is None else {"axis": axis}
    return [rw.node("DequantizeLinear", ins, [out], **kw)], out


def _q(rw: _Rewrite, x: str, scale: str, zp: str | None, out: str) -> list:
    return [rw.node("QuantizeLinear", [x, scale] + ([zp] if zp else []), [out])]


def _in(node, i: int) -> str:
    return node.input[i] if len(node.input) > i else ""


@rewrites((MS, "QuantizeLinear"), (MS, "DequantizeLinear"))
def _ms_qdq(rw: _Rewrite, node) -> None:
    """com.microsoft Q/DQ are the standard ops (older onnxruntime's home for 16-bit codes)."""
    new = rw.node(node.op_type, node.input, node.output, name=node.name)
    for a in node.attribute:
        if a.name == "axis":
            new.attribute.append(a)
    rw.replace(node, [new])


def _int4_codes(rw: _Rewrite, name: str) -> tuple[str, tuple[int, int]] | None:
    """An int4/uint4 constant as an int8/uint8 constant and its 4-bit range, else None."""
    v = rw.const(name)
    if v is None or v.dtype.name not in ("int4", "uint4"):
        return None
    signed = v.dtype.name == "int4"
    arr = np.asarray(v).astype(np.int8 if signed else np.uint8)
    return rw.add_const(name + "_i8", arr), ((-8, 7) if signed else (0, 15))


@rewrites(("ai.onnx", "QuantizeLinear"))
def _q_std(rw: _Rewrite, node) -> None:
    a = rw.attrs(node)
    if a.get("block_size", 0):
        raise rw.fail(node, "blocked quantization (block_size) is not supported")
    zp = _in(node, 2)
    if not zp and a.get("output_dtype"):
        from onnx import helper

        dt = np.dtype(helper.tensor_dtype_to_np_dtype(a["output_dtype"]))
        if dt.name in ("int4", "uint4"):
            dt = np.dtype(np.int8 if dt.name == "int4" else np.uint8)
            lo, hi = (-8, 7) if dt == np.int8 else (0, 15)
            zp = rw.add_const(node.output[0] + "_zp", np.zeros((), dt))
            return _q_narrow(rw, node, zp, lo, hi)
        zp = rw.add_const(node.output[0] + "_zp", np.zeros((), dt))
        kw = {"axis": a["axis"]} if "axis" in a else {}
        rw.replace(node, [rw.node("QuantizeLinear", [node.input[0], node.input[1], zp], node.output,
                                  name=node.name, **kw)])
        return
    z4 = _int4_codes(rw, zp) if zp else None
    if z4 is not None:
        relu = rw.producer(node.input[0])
        if (z4[1][0] < 0 and not np.any(rw.const(z4[0])) and relu is not None and relu.op_type == "Relu"
                and len(rw.consumers(relu.output[0])) == 1):
            # measured (onnxruntime 1.32, default options): a Relu in front of an int4
            # QuantizeLinear with zero point 0 is removed, as if 0 were the type's minimum
            _bypass(rw, relu)
        _q_narrow(rw, node, z4[0], *z4[1])


def _q_narrow(rw: _Rewrite, node, zp: str, lo: int, hi: int) -> None:
    a = rw.attrs(node)
    dt = rw.const(zp).dtype
    mid = rw.fresh(node.output[0] + "_wide")
    kw = {"axis": a["axis"]} if "axis" in a else {}
    q = rw.node("QuantizeLinear", [node.input[0], node.input[1], zp], [mid], name=node.name, **kw)
    clip = rw.node("Clip", [mid, rw.add_const("lo", np.asarray(lo, dt)), rw.add_const("hi", np.asarray(hi, dt))],
                   node.output)
    rw.replace(node, [q, clip])


_SHAPE_OPS = ("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity")


@rewrites(("ai.onnx", "DequantizeLinear"))
def _dq_std(rw: _Rewrite, node) -> None:
    a = rw.attrs(node)
    if a.get("block_size", 0):
        raise rw.fail(node, "blocked quantization (block_size) is not supported")
    src = rw.producer(node.input[0])
    sc = rw.const(_in(node, 1))
    if src is not None and src.op_type in _SHAPE_OPS and sc is not None and sc.size == 1 \
            and len(rw.consumers(src.output[0])) == 1:
        # integer codes reshaped (QOperator graphs keep codes between ops): dequantize first, so
        # that every QuantizeLinear meets its DequantizeLinear (a per-tensor DQ commutes with it)
        mid = rw.fresh(src.input[0] + "_dq")
        dq = rw.node("DequantizeLinear", [src.input[0]] + list(node.input[1:]), [mid], name=node.name)
        shp = rw.node(src.op_type, [mid] + list(src.input[1:]), node.output, name=src.name, **_copy_attrs(src))
        rw.replace(src, [])
        rw.replace(node, [dq, shp])
        return
    x4 = _int4_codes(rw, node.input[0])
    z4 = _int4_codes(rw, _in(node, 2)) if _in(node, 2) else None
    if x4 is None and z4 is None:
        if rw.elem_type(node.input[0]) is not None and rw.elem_type(node.input[0]).name in ("int4", "uint4"):
            # a dynamic int4 tensor: its Q was narrowed to int8 codes by _q_std
            pass
        return
    ins = list(node.input)
    if x4 is not None:
        clipped = rw.fresh(node.input[0] + "_c")
        dt = rw.const(x4[0]).dtype
        clip = rw.node("Clip", [x4[0], rw.add_const("lo", np.asarray(x4[1][0], dt)),
                                rw.add_const("hi", np.asarray(x4[1][1], dt))], [clipped])
        ins[0] = clipped
        pre = [clip]
    else:
        pre = []
    if z4 is not None:
        ins[2] = z4[0]
    kw = {"axis": a["axis"]} if "axis" in a else {}
    rw.replace(node, pre + [rw.node("DequantizeLinear", ins, node.output, name=node.name, **kw)])


def _require(rw: _Rewrite, node, *indices: int) -> None:
    """Refuse a node whose required inputs are missing or not constants where they must be."""
    for i in indices:
        if not _in(node, i):
            raise rw.fail(node, f"input {i} is missing")
        if i > 0 and rw.const(_in(node, i)) is None:
            raise rw.fail(node, f"input {i} ('{_in(node, i)}') must be a constant (weights, scales and zero "
                                f"points; two quantized tensors meeting in one op are not supported)")


def _copy_attrs(node, skip=()) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name not in skip}


def _int32_bias(rw: _Rewrite, node, bias: str, x_scale: str, w_scale: str, ins: list) -> list:
    """The int32 bias of a QOperator layer through DequantizeLinear at ``fl32(s_x s_w)`` (the
    fused kernel adds its codes to the accumulator); appends its output to ``ins``."""
    sx, sw = rw.const(x_scale), rw.const(w_scale)
    if sx is None or sw is None:
        raise rw.fail(node, f"the scales of a {node.op_type} with a bias must be constants")
    bsc = rw.add_const("bias_scale", (sx.astype(np.float32) * sw.astype(np.float32)).astype(np.float32))
    nodes, out = _dq(rw, bias, bsc, None, axis=0)
    ins.append(out)
    return nodes


@rewrites(("ai.onnx", "QLinearConv"), (MS, "QLinearConv"))
def _qlinear_conv(rw: _Rewrite, node) -> None:
    _require(rw, node, 0, 1, 3, 4, 6)
    x, xs, xz, w, ws, wz, ys, yz = (_in(node, i) for i in range(8))
    nodes, xf = _dq(rw, x, xs, xz)
    wn, wf = _dq(rw, w, ws, wz, axis=0)
    nodes += wn
    ins = [xf, wf]
    if _in(node, 8):
        nodes += _int32_bias(rw, node, _in(node, 8), xs, ws, ins)
    acc = rw.fresh(node.output[0] + "_acc")
    nodes.append(rw.node("Conv", ins, [acc], **_copy_attrs(node)))
    nodes += _q(rw, acc, ys, yz, node.output[0])
    rw.replace(node, nodes)


@rewrites(("ai.onnx", "QLinearMatMul"), (MS, "QLinearMatMul"))
def _qlinear_matmul(rw: _Rewrite, node) -> None:
    _require(rw, node, 0, 1, 3, 4, 6)
    a, as_, az, b, bs, bz, ys, yz = (_in(node, i) for i in range(8))
    nodes, af = _dq(rw, a, as_, az)
    bn, bf = _dq(rw, b, bs, bz, axis=1)
    acc = rw.fresh(node.output[0] + "_acc")
    nodes += bn + [rw.node("MatMul", [af, bf], [acc])] + _q(rw, acc, ys, yz, node.output[0])
    rw.replace(node, nodes)


@rewrites((MS, "QGemm"))
def _qgemm(rw: _Rewrite, node) -> None:
    _require(rw, node, 0, 1, 3, 4)
    a_, as_, az, b, bs, bz, c, ys, yz = (_in(node, i) for i in range(9))
    at = rw.attrs(node)
    if at.get("alpha", 1.0) != 1.0 or at.get("transA", 0):
        raise rw.fail(node, "QGemm with alpha != 1 or transA is not supported")
    nodes, af = _dq(rw, a_, as_, az)
    bn, bf = _dq(rw, b, bs, bz, axis=0 if at.get("transB", 0) else 1)
    nodes += bn
    ins = [af, bf]
    if c:
        nodes += _int32_bias(rw, node, c, as_, bs, ins)
    out = node.output[0]
    gemm_out = rw.fresh(out + "_acc") if ys else out
    nodes.append(rw.node("Gemm", ins, [gemm_out], transB=int(at.get("transB", 0))))
    if ys:
        nodes += _q(rw, gemm_out, ys, yz, out)
    rw.replace(node, nodes)


@rewrites((MS, "QLinearAdd"))
def _qlinear_add(rw: _Rewrite, node) -> None:
    _require(rw, node, 0, 1, 3, 4, 6)
    a, as_, az, b, bs, bz, cs, cz = (_in(node, i) for i in range(8))
    nodes, af = _dq(rw, a, as_, az)
    bn, bf = _dq(rw, b, bs, bz)
    s = rw.fresh(node.output[0] + "_sum")
    nodes += bn + [rw.node("Add", [af, bf], [s])] + _q(rw, s, cs, cz, node.output[0])
    rw.replace(node, nodes)


def _unit_dq(rw: _Rewrite, node, x: str, zp: str, axis: int | None = None) -> tuple[list, str]:
    one = rw.add_const("one", np.ones((), np.float32))
    return _dq(rw, x, one, zp or None, axis=axis)


def _integer_product(rw: _Rewrite, node, float_op: str, w_axis: int, out_axis: int, **attrs) -> None:
    """MatMulInteger/ConvInteger ``(a, w, a_zero_point, w_zero_point)``: DequantizeLinear with
    scale 1 and the zero points into the float op (the integer products are exact either way)."""
    a, w, az, wz = (_in(node, i) for i in range(4))
    nodes, af = _unit_dq(rw, node, a, az)
    wz_c = rw.const(wz) if wz else None
    wn, wf = _unit_dq(rw, node, w, wz, axis=w_axis if wz_c is not None and wz_c.size > 1 else None)
    nodes += wn + [rw.node(float_op, [af, wf], node.output, name=node.name or rw.fresh(node.op_type), **attrs)]
    rw.types[node.output[0]] = 1
    _note_kernel(rw, nodes[-1].name, rw.const(w), out_axis=out_axis)
    rw.replace(node, nodes)


@rewrites(("ai.onnx", "MatMulInteger"))
def _matmul_integer(rw: _Rewrite, node) -> None:
    _integer_product(rw, node, "MatMul", w_axis=1, out_axis=1)


@rewrites(("ai.onnx", "ConvInteger"))
def _conv_integer(rw: _Rewrite, node) -> None:
    _integer_product(rw, node, "Conv", w_axis=0, out_axis=0, **_copy_attrs(node))


def _note_kernel(rw: _Rewrite, name: str, w: np.ndarray | None, out_axis: int) -> None:
    """Remember an integer layer with signed 8-bit weights: onnxruntime's u8*s8 kernel can
    saturate pairs of products in int16 (see :func:`qa_lirpa.onnx.load._saturation_bound`)."""
    if w is None or w.dtype != np.int8:
        return
    codes = np.moveaxis(w.astype(np.int64), out_axis, 0)
    rw.int8_kernels[name] = (codes, np.ones(codes.shape[0]))


@rewrites(("ai.onnx", "DynamicQuantizeLinear"))
def _dynamic(rw: _Rewrite, node) -> None:
    raise rw.fail(node, "dynamic quantization computes its scale and zero point from each input at run "
                        "time, so the network has no fixed integer format to verify (quantize it "
                        "statically, e.g. onnxruntime.quantization.quantize_static)")


def _is_integral(rw: _Rewrite, name: str, lo: int, hi: int, depth: int = 0) -> bool:
    """Whether float tensor ``name`` is provably an integer in ``[lo, hi]``: a Clip with bounds
    inside the range, over values that are integers (a rounding, plus or minus integer
    constants, Relu, Max/Min with integers)."""
    p = rw.producer(name)
    if p is None or depth > 16:
        return False
    if p.op_type == "Clip":
        clo, chi = rw.const(_in(p, 1)), rw.const(_in(p, 2))
        if clo is None or chi is None or clo.size != 1 or chi.size != 1:
            return False
        if not (lo <= float(clo) and float(chi) <= hi and float(clo) == round(float(clo))
                and float(chi) == round(float(chi))):
            return False
        return _integer_valued(rw, p.input[0], depth + 1)
    return False


def _integer_valued(rw: _Rewrite, name: str, depth: int) -> bool:
    p = rw.producer(name)
    if p is None or depth > 16:
        return False
    if p.op_type in _ROUNDERS:
        return True
    if p.op_type in ("Relu", "Clip"):
        if p.op_type == "Clip":
            for i in (1, 2):
                c = rw.const(_in(p, i)) if _in(p, i) else None
                if _in(p, i) and (c is None or not np.all(np.asarray(c) == np.round(np.asarray(c)))):
                    return False
        return _integer_valued(rw, p.input[0], depth + 1)
    if p.op_type in ("Add", "Sub", "Max", "Min"):
        ins = list(p.input)
        cs = [rw.const(i) for i in ins]
        if sum(c is None for c in cs) != 1:
            return False
        c = next(c for c in cs if c is not None)
        dyn = ins[cs.index(None)]
        return bool(np.all(np.asarray(c, np.float64) == np.round(np.asarray(c, np.float64)))) and \
            _integer_valued(rw, dyn, depth + 1)
    return False


@rewrites(("ai.onnx", "Cast"))
def _cast(rw: _Rewrite, node) -> None:
    from onnx import helper

    to = np.dtype(helper.tensor_dtype_to_np_dtype(rw.attrs(node)["to"]))
    src = rw.elem_type(node.input[0])
    if src is not None and (src == to or (src.kind in "iu" and to.kind == "f")):
        # no-op casts, and integer -> float (exact below 2^24; beyond, the one rounding is inside
        # the float32 envelope's dot-product slack): the canonical form computes in float already
        _bypass(rw, node)
        return
    if to.kind in "iu" and src is not None and src.kind == "f":
        cons = rw.consumers(node.output[0])
        info = np.iinfo(to)
        if cons and all(c.op_type == "DequantizeLinear" and c.input[0] == node.output[0] for c in cons) \
                and _is_integral(rw, node.input[0], int(info.min), int(info.max)):
            for dq in cons:
                s, z = _in(dq, 1), _in(dq, 2)
                zc = rw.const(z) if z else np.zeros(())
                sc = rw.const(s)
                if zc is None or sc is None or zc.size != 1 or sc.size != 1:
                    raise rw.fail(dq, "the scale and zero point after an integer Cast must be constant scalars")
                steps = [(op, v) for op, v in (("Sub", float(zc)), ("Mul", float(sc)))
                         if v != (0.0 if op == "Sub" else 1.0)] or [("Identity", None)]
                new, t = [], node.input[0]
                for k, (op, v) in enumerate(steps):
                    out = dq.output[0] if k == len(steps) - 1 else rw.fresh(dq.output[0] + "_c")
                    ins = [t] if v is None else [t, rw.add_const(op.lower(), np.asarray(v, np.float32))]
                    new.append(rw.node(op, ins, [out]))
                    t = out
                rw.replace(dq, new)
            rw.replace(node, [])


def _bypass(rw: _Rewrite, node) -> None:
    """Remove a node that passes its input through (its consumers read the input instead)."""
    src, dst = node.input[0], node.output[0]
    outputs = {o.name for o in rw.model.graph.output}
    if dst in outputs:
        rw.replace(node, [rw.node("Identity", [src], [dst], name=node.name)])
        return
    for n in rw.nodes:
        for k, i in enumerate(n.input):
            if i == dst:
                n.input[k] = src
    rw.replace(node, [])


# ----- QONNX -----------------------------------------------------------------------------------
def _qonnx_quant(rw: _Rewrite, node) -> None:
    """QONNX ``Quant(x, scale, zeropt, bitwidth; signed, narrow, rounding_mode)`` =
    ``(R(clamp(x / s + z, qmin, qmax)) - z) * s`` in float32 (qonnx's executable definition)."""
    at = rw.attrs(node)
    mode = at.get("rounding_mode", b"ROUND")
    mode = (mode.decode() if isinstance(mode, bytes) else str(mode)).upper()
    signed, narrow = bool(at.get("signed", 1)), bool(at.get("narrow", 0))
    s, z, bw = (rw.const(_in(node, i)) for i in (1, 2, 3))
    if s is None or z is None or bw is None:
        raise rw.fail(node, "scale, zero point and bit width must be constants")
    if bw.size != 1 or float(bw) != int(float(bw)) or not 2 <= int(float(bw)) <= 32:
        raise rw.fail(node, f"bit width {bw.reshape(-1)[:3]} is not an integer in 2..32 (1-bit quantizers "
                            f"are bipolar/binary, which has no integer format here)")
    bits = int(float(bw))
    if mode not in ("ROUND", "FLOOR", "CEIL"):
        raise rw.fail(node, f"rounding_mode {mode} is not supported (ROUND, FLOOR, CEIL are)")
    if signed:
        qmin, qmax = -(1 << (bits - 1)) + (1 if narrow else 0), (1 << (bits - 1)) - 1
    else:
        qmin, qmax = 0, (1 << bits) - 1 - (1 if narrow else 0)
    x = node.input[0]
    xc = rw.const(x)
    s32, z32 = s.astype(np.float32), z.astype(np.float32)
    if xc is not None:                               # weights: integer codes through DequantizeLinear
        t = np.clip(xc.astype(np.float32) / s32 + z32, np.float32(qmin), np.float32(qmax))
        r = {"ROUND": np.round, "FLOOR": np.floor, "CEIL": np.ceil}[mode](t)
        dt = np.int8 if bits <= 8 else np.int16 if bits <= 16 else np.int32
        if not signed:
            dt = {np.int8: np.uint8, np.int16: np.uint16, np.int32: np.int32}[dt]
        codes = r.astype(np.int64)
        if np.any(z32 != np.round(z32)):
            raise rw.fail(node, "a non-integer zero point is not supported")
        zi = np.round(z32).astype(np.int64)
        per = s32.size > 1 or z32.size > 1
        axis = None
        if per:
            dims = [i for i, d in enumerate(s32.shape if s32.size > 1 else z32.shape) if d > 1]
            if len(dims) != 1:
                raise rw.fail(node, "per-channel scales must vary along one axis")
            axis = dims[0] + xc.ndim - (s32.ndim if s32.size > 1 else z32.ndim)
            s_vec = np.broadcast_to(s32.reshape(-1), (xc.shape[axis],)) if s32.size > 1 else s32.reshape(())
            z_vec = np.broadcast_to(zi.reshape(-1), (xc.shape[axis],)) if zi.size > 1 else zi.reshape(())
            if s32.size > 1 and zi.size == 1:       # onnxruntime wants one zero point per scale
                z_vec = np.full(s_vec.shape, int(zi.reshape(-1)[0]))
        else:
            s_vec, z_vec = s32.reshape(()), zi.reshape(())
        if np.any(np.asarray(z_vec) != 0) and dt == np.int32:
            raise rw.fail(node, "zero points of 17- to 32-bit codes are not supported")
        q_name = rw.add_const(x + "_codes", codes.astype(dt))
        lo_hi = [rw.add_const("lo", np.asarray(qmin, dt)), rw.add_const("hi", np.asarray(qmax, dt))]
        clipped = rw.fresh(x + "_codes_c")
        nodes = [rw.node("Clip", [q_name] + lo_hi, [clipped])]
        sc = rw.add_const("s", np.asarray(s_vec, np.float32))
        zc = rw.add_const("z", np.asarray(z_vec).astype(dt))
        nodes += [rw.node("DequantizeLinear", [clipped, sc, zc], node.output, **({"axis": axis} if axis is not None else {}))]
        rw.replace(node, nodes)
        return
    if np.any(z32 != 0):
        raise rw.fail(node, "a Quant on a tensor with a nonzero zero point is not supported (qonnx rounds "
                            "x / s + z, which no QuantizeLinear-style format reproduces at every tie)")
    a = rw.fresh(x + "_u")
    c = rw.fresh(x + "_c")
    r = rw.fresh(x + "_r")
    rw.replace(node, [rw.node("Div", [x, rw.add_const("s", s32)], [a]),
                      rw.node("Clip", [a, rw.add_const("lo", np.asarray(qmin, np.float32)),
                                       rw.add_const("hi", np.asarray(qmax, np.float32))], [c]),
                      rw.node({"ROUND": "Round", "FLOOR": "Floor", "CEIL": "Ceil"}[mode], [c], [r]),
                      rw.node("Mul", [r, rw.add_const("s", s32)], node.output)])


def _qonnx_bipolar(rw: _Rewrite, node) -> None:
    """QONNX ``BipolarQuant(x, scale)`` = ``scale * (x >= 0 ? 1 : -1)``: on constants (binary
    weights) the codes ``+-1`` through DequantizeLinear; on tensors refused."""
    x, s = node.input[0], rw.const(_in(node, 1))
    xc = rw.const(x)
    if xc is None or s is None:
        raise rw.fail(node, "bipolar (1-bit) quantization of a tensor has no integer format here "
                            "(bipolar weights are supported)")
    codes = np.where(xc.astype(np.float32) >= 0, 1, -1).astype(np.int8)
    s32 = np.asarray(s, np.float32)
    if s32.size > 1:
        raise rw.fail(node, "per-channel scales of bipolar weights are not supported")
    rw.replace(node, [rw.node("DequantizeLinear", [rw.add_const(x + "_bipolar", codes),
                                                   rw.add_const("s", s32.reshape(())),
                                                   rw.add_const("z", np.zeros((), np.int8))], node.output)])


def _qonnx_refuse(rw: _Rewrite, node) -> None:
    why = {"BipolarQuant": "bipolar (1-bit) quantization has no integer format here",
           "Trunc": "QONNX Trunc (truncation of low bits) is not supported yet"}.get(
        node.op_type, "this QONNX op is not supported")
    raise rw.fail(node, why)


for _d in QONNX_DOMAINS:
    REWRITES[(_d, "Quant")] = _qonnx_quant
    REWRITES[(_d, "IntQuant")] = _qonnx_quant
    REWRITES[(_d, "BipolarQuant")] = _qonnx_bipolar
    REWRITES[(_d, "Trunc")] = _qonnx_refuse


# ----- graph passes ----------------------------------------------------------------------------------
def _rewrite_nodes(rw: _Rewrite, only_qonnx: bool = False) -> None:
    for _ in range(8):
        rw.changed = False
        for node in list(rw.nodes):
            if not any(n is node for n in rw.nodes):
                continue
            key = (domain_of(node), node.op_type)
            fn = REWRITES.get(key)
            if only_qonnx and key[0] not in QONNX_DOMAINS:
                continue
            if fn is None:
                if key[0] != "ai.onnx" and not only_qonnx:
                    raise rw.fail(node, "is not supported (an op of a custom domain without a known meaning)")
                continue
            fn(rw, node)
        if not rw.changed:
            return


_FOLD_SKIP = {"DequantizeLinear"}


def _fold_constants(rw: _Rewrite) -> None:
    """Evaluate nodes whose inputs are all constants with ``onnx.reference`` (onnx's executable
    semantics; its QuantizeLinear of float32 weights equals onnxruntime's bit for bit, checked on
    ties), except the quantizer structure of weights: a DequantizeLinear and a Clip feeding one
    stay, so that the translator sees integer codes, their scale and their format."""
    from onnx.reference import ReferenceEvaluator

    for node in list(rw.nodes):
        if node.op_type in _FOLD_SKIP or domain_of(node) != "ai.onnx" or node.op_type == "Constant":
            continue
        if not node.input or any(i and rw.const(i) is None for i in node.input):
            continue
        if node.op_type == "Clip" and any(c.op_type == "DequantizeLinear" for c in rw.consumers(node.output[0])):
            continue
        try:
            import onnx
            from onnx import helper

            inputs = [i for i in node.input if i]
            g = helper.make_graph(
                [node], "fold",
                [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(rw.const(i).dtype),
                                               list(rw.const(i).shape)) for i in inputs],
                [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output if o])
            m = helper.make_model(g, opset_imports=list(rw.model.opset_import))
            outs = ReferenceEvaluator(m).run(None, {i: rw.const(i) for i in inputs})
        except Exception:  # noqa: BLE001 - not foldable here: the translator decides
            continue
        for o, v in zip([o for o in node.output if o], outs):
            rw.new_consts[o] = np.asarray(v)
        rw.replace(node, [])


def _affine_weights(rw: _Rewrite, node):
    """``(real weights as float64, out axis)`` of a MatMul/Gemm/Conv with constant weights."""
    w = node.input[1] if len(node.input) > 1 else ""
    p = rw.producer(w)
    if p is not None and p.op_type == "DequantizeLinear":
        q = rw.const(p.input[0])
        src = rw.producer(p.input[0])
        if q is None and src is not None and src.op_type == "Clip":
            q = rw.const(src.input[0])
        s, z = rw.const(_in(p, 1)), rw.const(_in(p, 2)) if _in(p, 2) else np.zeros(())
        if q is None or s is None or z is None:
            return None
        axis = int(rw.attrs(p).get("axis", 1)) % max(q.ndim, 1)
        shape = [1] * q.ndim
        if s.size > 1 or z.size > 1:
            shape[axis] = -1
        real = (q.astype(np.int64) - np.asarray(z, np.int64).reshape(shape if z.size > 1 else ())).astype(np.float64) \
            * np.asarray(s, np.float64).reshape(shape if s.size > 1 else ())
    else:
        real = rw.const(w)
        if real is None:
            return None
        real = np.asarray(real, np.float64)
    at = rw.attrs(node)
    if node.op_type == "Gemm":
        if at.get("alpha", 1.0) != 1.0 or at.get("beta", 1.0) != 1.0 or at.get("transA", 0):
            return None
        return real, (0 if at.get("transB", 0) else 1)
    if node.op_type == "MatMul":
        return (real, 1) if real.ndim == 2 else None
    return (real, 0) if real.ndim == 4 else None


def _channel_vector(c: np.ndarray, n_out: int, conv: bool) -> np.ndarray | None:
    """A constant that broadcasts per output channel as a length-``n_out`` vector (else None)."""
    c = np.asarray(c, np.float64)
    if c.size == 1:
        return np.full(n_out, float(c.reshape(-1)[0]))
    if conv:
        if c.ndim >= 3 and c.shape[-1] == 1 and c.shape[-2] == 1 and c.size == n_out:
            return c.reshape(-1)
        return None
    if c.shape[-1] == n_out and c.size == n_out:
        return c.reshape(-1)
    return None


def _dequantizes_itself(rw: _Rewrite, t: str) -> bool:
    """Whether the elementwise ops downstream of ``t`` reach a rounding that is followed by its own
    output scaling (Mul/Div): the scale in front of it belongs to that quantizer, not to the
    layer. (The exact half-up pattern ``Floor``/``Sub``/``GreaterOrEqual``/``Cast``/``Add`` is
    walked through as well.)"""
    elementwise = ("Clip", "Add", "Sub", "Relu", "Max", "Min", "Mul", "Div", "GreaterOrEqual", "Cast")
    frontier, seen = [(t, False)], set()
    for _ in range(64):
        if not frontier:
            return False
        name, after = frontier.pop()
        if (name, after) in seen:
            continue
        seen.add((name, after))
        for n in rw.consumers(name):
            if after and n.op_type in ("Mul", "Div"):
                return True
            if n.op_type in _ROUNDERS:
                frontier.append((n.output[0], True))
            elif n.op_type in elementwise:
                frontier.append((n.output[0], after))
    return False


def _fold_affine_tails(rw: _Rewrite) -> None:
    """Fold ``Mul``/``Div`` by (per-output-channel) constants, and the ``Add``/``Sub`` of
    constants around them, into the affine layer in front (only where the chain has a Mul or
    Div: a plain ``MatMul -> Add`` stays, the translator reads it as the bias)."""
    outputs = {o.name for o in rw.model.graph.output}
    for node in list(rw.nodes):
        if node.op_type not in ("MatMul", "Gemm", "Conv") or not any(n is node for n in rw.nodes):
            continue
        got = _affine_weights(rw, node)
        if got is None:
            continue
        w, out_axis = got
        conv = node.op_type == "Conv"
        n_out = w.shape[out_axis]
        b = np.zeros(n_out)
        if node.op_type in ("Gemm", "Conv") and _in(node, 2):
            bp = rw.producer(node.input[2])
            bc = rw.const(node.input[2])
            if bc is None and bp is not None and bp.op_type == "DequantizeLinear":
                q, s = rw.const(bp.input[0]), rw.const(_in(bp, 1))
                z = rw.const(_in(bp, 2)) if _in(bp, 2) else np.zeros(())
                if q is None or s is None or z is None:
                    continue
                bc = (q.astype(np.int64) - np.asarray(z, np.int64)).astype(np.float64) * np.asarray(s, np.float64)
            if bc is None:
                continue
            b = np.broadcast_to(np.asarray(bc, np.float64).reshape(-1), (n_out,)).copy()
        chain, t, scaled = [], node.output[0], False
        while t not in outputs:
            cons = rw.consumers(t)
            if len(cons) != 1 or cons[0].op_type not in ("Mul", "Div", "Add", "Sub") or len(cons[0].input) != 2:
                break
            n = cons[0]
            other = n.input[1] if n.input[0] == t else n.input[0]
            if n.op_type in ("Div", "Sub") and n.input[0] != t:
                break
            c = rw.const(other)
            v = None if c is None else _channel_vector(c, n_out, conv)
            if v is None:
                break
            if n.op_type in ("Mul", "Div") and _dequantizes_itself(rw, n.output[0]):
                break
            chain.append((n, v))
            scaled = scaled or n.op_type in ("Mul", "Div")
            t = n.output[0]
        while chain and chain[-1][0].op_type in ("Add", "Sub") and not scaled:
            chain.pop()
        if not scaled or not chain:
            continue
        wt = np.moveaxis(w, out_axis, 0).copy()
        for n, v in chain:
            shape = (-1,) + (1,) * (wt.ndim - 1)
            if n.op_type == "Mul":
                wt, b = wt * v.reshape(shape), b * v
            elif n.op_type == "Div":
                wt, b = wt / v.reshape(shape), b / v
            elif n.op_type == "Add":
                b = b + v
            else:
                b = b - v
        w_new = np.moveaxis(wt, 0, out_axis)
        last = chain[-1][0].output[0]
        wname = rw.add_const("w_folded", w_new)
        if conv:
            new = [rw.node("Conv", [node.input[0], wname, rw.add_const("b_folded", b)], [last], name=node.name,
                           **_copy_attrs(node))]
        elif node.op_type == "Gemm":
            new = [rw.node("Gemm", [node.input[0], wname, rw.add_const("b_folded", b)], [last], name=node.name,
                           transB=int(rw.attrs(node).get("transB", 0)))]
        else:
            mid = rw.fresh(last + "_mm")
            new = [rw.node("MatMul", [node.input[0], wname], [mid], name=node.name),
                   rw.node("Add", [mid, rw.add_const("b_folded", b)], [last])]
        for n, _ in chain:
            rw.replace(n, [])
        if node.name in rw.int8_kernels:
            codes, factor = rw.int8_kernels[node.name]
            for n, v in chain:
                factor = factor * np.abs(v) if n.op_type == "Mul" else factor / np.abs(v) if n.op_type == "Div" else factor
            rw.int8_kernels[node.name] = (codes, factor)
        rw.replace(node, new)


def _scale_before_relu(rw: _Rewrite) -> None:
    """``Relu -> Mul(c)`` / ``Relu -> Div(c)`` with positive constants becomes ``Mul -> Relu``
    (equal for c > 0, including in float32: the sign of a product does not round), so that the
    scale can fold into the layer in front or join the quantizer behind."""
    for relu in [n for n in rw.nodes if n.op_type == "Relu"]:
        cons = rw.consumers(relu.output[0])
        if len(cons) != 1 or cons[0].op_type not in ("Mul", "Div") or len(cons[0].input) != 2:
            continue
        mul = cons[0]
        other = mul.input[1] if mul.input[0] == relu.output[0] else mul.input[0]
        if mul.op_type == "Div" and mul.input[0] != relu.output[0]:
            continue
        c = rw.const(other)
        if c is None or not np.all(np.asarray(c, np.float64) > 0) or not np.all(np.isfinite(np.asarray(c, np.float64))):
            continue
        mid = rw.fresh(relu.output[0] + "_scaled")
        new_mul = rw.node(mul.op_type, [relu.input[0], other] if mul.input[0] == relu.output[0] else [other, relu.input[0]],
                          [mid], name=mul.name)
        new_relu = rw.node("Relu", [mid], list(mul.output), name=relu.name)
        rw.replace(mul, [])
        rw.replace(relu, [new_mul, new_relu])


def has_custom_ops(model) -> bool:
    return any(domain_of(n) != "ai.onnx" for n in model.graph.node)


@dataclass
class Normalized:
    """The canonical model and what the rewrites learned that the graph no longer shows."""

    model: object
    #: node name -> (raw s8 weight codes [out, ...], factor from accumulator codes to real output)
    int8_kernels: dict = field(default_factory=dict)
    #: a QONNX file: its meaning is qonnx's executable semantics, which onnxruntime computes by
    #: running the expansion op by op (``runnable_bytes``; no fused kernels)
    qonnx: bool = False
    #: node name -> label of the file's node it came from (for messages)
    origin: dict = field(default_factory=dict)


def normalize(model, path: str | os.PathLike) -> Normalized:
    """The canonical form of ``model`` (see the module docstring); raises the one-line
    :class:`OnnxImportError` for what cannot be bounded."""
    rw = _Rewrite(model, os.fspath(path))
    qonnx = any(domain_of(n) in QONNX_DOMAINS for n in model.graph.node)
    _rewrite_nodes(rw)
    _fold_constants(rw)
    _scale_before_relu(rw)
    _fold_affine_tails(rw)
    out = rw.build()
    try:
        import onnx

        out = onnx.shape_inference.infer_shapes(out)
    except Exception:  # noqa: BLE001 - shapes are a convenience only
        pass
    return Normalized(out, dict(rw.int8_kernels), qonnx, dict(rw.origin))


def runnable_bytes(path: str | os.PathLike) -> bytes | None:
    """For a file onnxruntime cannot run as it is (QONNX custom ops): the standard-op model that
    computes qonnx's executable semantics, serialized; None for every other file."""
    import onnx

    model = onnx.load(os.fspath(path))
    if not any(domain_of(n) in QONNX_DOMAINS for n in model.graph.node):
        return None
    rw = _Rewrite(model, os.fspath(path))
    _rewrite_nodes(rw, only_qonnx=True)
    m = rw.build()
    keep = [o for o in m.opset_import if o.domain not in QONNX_DOMAINS]
    del m.opset_import[:]
    m.opset_import.extend(keep)
    return m.SerializeToString()


__all__ = ["Normalized", "normalize", "runnable_bytes", "REWRITES", "rewrites", "refusal", "node_text", "domain_of",
           "has_custom_ops", "QONNX_DOMAINS"]
