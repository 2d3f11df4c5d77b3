"""Reading and indexing an ONNX graph: validation with clear errors, constants, producers and
consumers (of the canonical form that :mod:`qa_lirpa.onnx.normalize` made)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from .errors import OnnxImportError

# QuantizeLinear/DequantizeLinear element types we understand: numpy dtype, signed, bits
QUANT_TYPES = {
    np.dtype(np.uint8): (False, 8), np.dtype(np.int8): (True, 8),
    np.dtype(np.uint16): (False, 16), np.dtype(np.int16): (True, 16),
    np.dtype(np.int32): (True, 32),
}


def node_label(node) -> str:
    """``node 'name' (op X, domain D)``: how every message names a node."""
    domain = node.domain if node.domain not in ("", "ai.onnx") else "ai.onnx"
    return f"node '{node.name or node.output[0]}' (op {node.op_type}, domain {domain})"


def read_model(path: str | os.PathLike):
    """Load and validate an ONNX file; every failure is one :class:`OnnxImportError` naming the file."""
    import onnx
    from google.protobuf.message import DecodeError

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(path)
    except DecodeError as e:
        raise OnnxImportError(f"{path}: not an ONNX model (protobuf parse error: {e})") from None
    except Exception as e:  # noqa: BLE001 - onnx raises several types for broken files
        raise OnnxImportError(f"{path}: cannot be read as an ONNX model ({type(e).__name__}: {e})") from None
    if not model.HasField("graph") or not model.graph.node:
        raise OnnxImportError(f"{path}: not an ONNX model (no graph or an empty graph)")
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001 - ValidationError and friends
        msg = " ".join(str(e).split()) or type(e).__name__
        msg = msg if len(msg) <= 400 else msg[:400] + " ..."
        named = re.search(r"Name: (\S+) OpType:", msg) or re.search(r"Node \(([^)]*)\)", msg)
        bad = next((n for n in model.graph.node if named and n.name == named.group(1)), None)
        where = f"{node_label(bad)}: " if bad is not None else ""
        raise OnnxImportError(f"{path}: {where}invalid ONNX model: {msg}") from None
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    outputs = list(model.graph.output)
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        reader = next((n for i in inputs[1:] for n in model.graph.node if i.name in n.input), None)
        where = f"{node_label(reader)} reads another graph input; " if reader is not None else ""
        raise OnnxImportError(f"{path}: {where}expected exactly one graph input, found {len(inputs)} ({names})")
    if len(outputs) != 1:
        names = ", ".join(o.name for o in outputs) or "none"
        raise OnnxImportError(f"{path}: expected exactly one graph output, found {len(outputs)} ({names})")
    elem = inputs[0].type.tensor_type.elem_type
    if elem not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
        reader = next((n for n in model.graph.node if inputs[0].name in n.input), None)
        where = f"{node_label(reader)} reads " if reader is not None else ""
        raise OnnxImportError(f"{path}: {where}the graph input '{inputs[0].name}' of type "
                              f"{onnx.TensorProto.DataType.Name(elem)}: the input must be FLOAT or DOUBLE "
                              f"(VNN-LIB boxes are real-valued; export the model with float input and "
                              f"output, e.g. TFLite inference_input_type=tf.float32)")
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - shapes are a convenience only
        pass
    return model


@dataclass
class QuantConst:
    """A constant that reaches the graph through DequantizeLinear: integer codes, scale(s), zero point(s)."""

    codes: np.ndarray          # int64, the stored integers
    scale: np.ndarray          # float32, scalar or 1-D
    zero_point: np.ndarray     # int64, scalar or 1-D
    axis: int                  # axis of per-channel scales (normalized to >= 0)
    signed: bool
    bits: int
    qmin: int
    qmax: int

    def real(self) -> np.ndarray:
        """The values as onnxruntime's DequantizeLinear computes them (float32)."""
        s, z = self._bcast(self.scale), self._bcast(self.zero_point)
        return ((self.codes - z).astype(np.float32) * s.astype(np.float32)).astype(np.float32)

    def exact(self) -> np.ndarray:
        """The exact real values ``(q - z) * s`` in float64 (exact for 8/16-bit codes)."""
        s, z = self._bcast(self.scale), self._bcast(self.zero_point)
        return (self.codes - z).astype(np.float64) * s.astype(np.float64)

    def _bcast(self, v: np.ndarray) -> np.ndarray:
        if v.size == 1:
            return v.reshape(())
        shape = [1] * self.codes.ndim
        shape[self.axis] = v.size
        return v.reshape(shape)


class Graph:
    """Index of a validated model: constants, producers, consumers, shapes."""

    def __init__(self, model, path: str) -> None:
        from onnx import numpy_helper

        self.model, self.path = model, path
        g = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        self.inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        inits = set(self.inits)
        self.input = next(i for i in g.input if i.name not in inits)
        self.input_name = self.input.name
        self.output_name = g.output[0].name
        self.producer: dict[str, object] = {}
        self.consumers: dict[str, list] = {}
        for node in g.node:
            for o in node.output:
                if o:
                    self.producer[o] = node
            for i in node.input:
                if i:
                    self.consumers.setdefault(i, []).append(node)
        self.shapes: dict[str, list] = {}
        for vi in list(g.value_info) + list(g.input) + list(g.output):
            t = vi.type.tensor_type
            if t.HasField("shape"):
                self.shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                                        for d in t.shape.dim]
        self._const_cache: dict[str, np.ndarray | None] = {}
        self.dynamic = self._dynamic_names()

    # ----- structure ---------------------------------------------------------------------------
    def _dynamic_names(self) -> set[str]:
        """Tensors that depend on the graph input."""
        dyn = {self.input_name}
        for node in self.model.graph.node:      # nodes are topologically sorted (checked by onnx)
            if any(i in dyn for i in node.input if i):
                dyn.update(o for o in node.output if o)
        return dyn

    def error(self, node, msg: str) -> OnnxImportError:
        return OnnxImportError(f"{self.path}: {node_label(node)}: {msg}")

    def attrs(self, node) -> dict:
        from onnx import helper

        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    # ----- constants ---------------------------------------------------------------------------
    def const(self, name: str) -> np.ndarray | None:
        """The value of a constant tensor (initializer, Constant, or a foldable constant sub-graph)."""
        if not name:
            return None
        if name in self.inits:
            return self.inits[name]
        if name in self.dynamic:
            return None
        if name not in self._const_cache:
            node = self.producer.get(name)
            self._const_cache[name] = None if node is None else self._fold(node, name)
        return self._const_cache[name]

    def quant_const(self, name: str) -> QuantConst | None:
        """If ``name`` is ``DequantizeLinear(constant integers, scale, zero point)``: its parts."""
        node = self.producer.get(name)
        if node is None or node.op_type != "DequantizeLinear" or name in self.dynamic:
            return None
        q = self.const(node.input[0])
        if q is None or q.dtype not in QUANT_TYPES:
            return None
        s = self.const(node.input[1])
        z = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros((), q.dtype)
        if s is None or z is None:
            return None
        return self._qconst(node, q, s, z)

    def _qconst(self, node, q: np.ndarray, s: np.ndarray, z: np.ndarray) -> QuantConst:
        signed, bits = QUANT_TYPES[np.dtype(q.dtype)]
        info = np.iinfo(q.dtype)
        axis = int(self.attrs(node).get("axis", 1))
        if s.size > 1:
            axis = axis % max(q.ndim, 1)
        lo, hi = int(info.min), int(info.max)
        src = self.producer.get(node.input[0])
        if src is not None and src.op_type == "Clip":       # QCDQ weights: Clip narrows the range
            lo_c = self.const(src.input[1]) if len(src.input) > 1 and src.input[1] else None
            hi_c = self.const(src.input[2]) if len(src.input) > 2 and src.input[2] else None
            lo = max(lo, int(lo_c)) if lo_c is not None else lo
            hi = min(hi, int(hi_c)) if hi_c is not None else hi
        return QuantConst(q.astype(np.int64), np.asarray(s, np.float32), np.asarray(z).astype(np.int64),
                          axis, signed, bits, lo, hi)

    def _fold(self, node, name: str) -> np.ndarray | None:
        """The value of a ``Constant`` node, of the ``Clip`` on weight codes, or of a
        ``DequantizeLinear`` of constants (as onnxruntime computes it, float32). Every other constant sub-graph was evaluated by
        :func:`qa_lirpa.onnx.normalize.normalize` (``onnx.reference``) before translation."""
        from onnx import numpy_helper

        op = node.op_type
        a = self.attrs(node)
        if op == "Constant":
            if "value" in a:
                return numpy_helper.to_array(a["value"])
            for k, dt in (("value_float", np.float32), ("value_floats", np.float32),
                          ("value_int", np.int64), ("value_ints", np.int64)):
                if k in a:
                    return np.asarray(a[k], dtype=dt)
            return None
        ins = [self.const(i) if i else None for i in node.input]
        if any(v is None for i, v in zip(node.input, ins) if i):
            return None
        if op == "Clip":              # the codes of QCDQ weights (the Clip is kept: it is their format)
            a_lo = ins[1] if len(ins) > 1 and ins[1] is not None else a.get("min")
            a_hi = ins[2] if len(ins) > 2 and ins[2] is not None else a.get("max")
            out = ins[0]
            if a_lo is not None:
                out = np.maximum(out, np.asarray(a_lo, dtype=out.dtype))
            if a_hi is not None:
                out = np.minimum(out, np.asarray(a_hi, dtype=out.dtype))
            return out.astype(ins[0].dtype)
        if op == "DequantizeLinear" and ins[1] is not None and np.dtype(ins[0].dtype) in QUANT_TYPES:
            qc = self._qconst(node, ins[0], ins[1], ins[2] if len(ins) > 2 and ins[2] is not None
                              else np.zeros((), ins[0].dtype))
            return qc.real()
        return None


__all__ = ["Graph", "QuantConst", "QUANT_TYPES", "read_model", "node_label"]
