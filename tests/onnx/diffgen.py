"""Random small quantized ONNX models and VNN-LIB properties whose truth is decided by onnxruntime.

The differential soundness suite ("onnxruntime is the referee"): an ONNX file means what
onnxruntime computes (CPU provider, default session options, the input cast to float32), so a
property is violated (``sat``) iff some float32 input that the box can reach makes onnxruntime's
outputs meet a disjunct, compared exactly (``fractions.Fraction``) with the float64 constants
written in the VNN-LIB file.

Everything here is a pure function of a seed (numpy ``default_rng``):

- :func:`make_case` builds one model of a style (:data:`STYLES`): QDQ Gemm, MatMul+Add (the Add
  with its own Q/DQ, as ``quantize_static`` makes it), Conv with per-tensor or per-channel weight
  scales, a float (unquantized) output layer, float preprocessing (Sub/Div or Mul/Add) before the
  input QuantizeLinear, and PyTorch QAT exported with the TorchScript exporter. Options drawn per
  model: symmetric int8 / asymmetric uint8 activations, power-of-two or arbitrary scales, int32
  bias (DequantizeLinear at ``s_x * s_w``) or a float bias initializer, hidden ReLU as a node or
  as a uint8 zero-point-0 quantizer, a final DequantizeLinear output. The batch dimension is the
  symbolic ``N``.
- :class:`InputGrid` finds, for every input element, the float32 thresholds between the codes of
  the model's input quantizer by bisection over float32 values, running the model's own input
  subgraph (everything up to the first QuantizeLinear) in onnxruntime; the quantizer is monotone,
  so the codes reachable from ``[fl32(lo), fl32(hi)]`` and one float32 representative per code
  follow exactly. :meth:`InputGrid.enumerate` runs the whole model on the cartesian product.
- :func:`make_instance` draws a model and a property of a kind (:data:`KINDS`): box bounds at the
  float32 and float64 neighbours of input thresholds; ``Y_j >= t`` / ``Y_j <= t`` with ``t`` the
  true extreme over the box in onnxruntime or the float32/float64 value next to it; robustness
  (``Y_k >= Y_c`` for some ``k != c``) around points whose top-2 outputs are (nearly) tied.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import product
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
STYLES = ("gemm", "matmul_add", "conv_pt", "conv_pc", "float_out", "preproc", "torch_qat")
#: styles kept out of STYLES so that the committed 1000-instance table stays reproducible; the
#: bias Add with its own Q/DQ (quantize_static's MatMul + Add form) is supported since the
#: normalise-then-translate front end (150 of 150 right: ``--styles matmul_qadd --n 150 --seed 7``)
EXTRA_STYLES = ("matmul_qadd",)
KINDS = ("thr_max", "thr_min", "robust")
MAX_POINTS = 4096

F32_KEY_MAX = int(np.array(np.finfo(np.float32).max, np.float32).view(np.int32))


# ----------------------------------------------------------------------------------------------
# float32 ordering helpers

def f32_key(x) -> np.ndarray:
    """An int64 key per float32 value, monotone in the value (-0.0 and +0.0 share key 0)."""
    b = np.asarray(x, np.float32).view(np.int32).astype(np.int64)
    return np.where(b < 0, -(b & 0x7FFFFFFF), b)


def key_f32(k) -> np.ndarray:
    """Inverse of :func:`f32_key` (key 0 gives +0.0)."""
    k = np.asarray(k, np.int64)
    bits = np.where(k < 0, (-k) | 0x80000000, k)
    return bits.astype(np.uint32).view(np.float32)


def next32(x: float, direction: float) -> float:
    return float(np.nextafter(np.float32(x), np.float32(direction)))


def next64(x: float, direction: float) -> float:
    return float(np.nextafter(np.float64(x), np.float64(direction)))


def fl32(x: float) -> float:
    return float(np.float32(x))


# ----------------------------------------------------------------------------------------------
# onnxruntime

_SESSIONS: dict = {}


def ort_session(model_bytes: bytes):
    import onnxruntime as ort

    key = hash(model_bytes)
    sess = _SESSIONS.get(key)
    if sess is None or sess[0] != model_bytes:
        if len(_SESSIONS) > 64:
            _SESSIONS.clear()
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = (model_bytes, ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"]))
        _SESSIONS[key] = sess
    return sess[1]


_ORT_INT = {"tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int16)": np.int16,
            "tensor(uint16)": np.uint16, "tensor(int32)": np.int32, "tensor(int64)": np.int64}
_ORT_FLOAT = {"tensor(float)": np.float32, "tensor(double)": np.float64}


def ort_feed(sess, x: np.ndarray) -> np.ndarray:
    """``x`` cast to float32 (the rule), then to the session input's type: exactly (float64), or,
    for an integer-typed input, only when every value is an integer of that type's range
    (ValueError otherwise: such a value is no input of the model)."""
    x = np.asarray(x, np.float32)
    t = sess.get_inputs()[0].type
    if t in _ORT_INT:
        dt = _ORT_INT[t]
        info = np.iinfo(dt)
        if not (np.all(np.isfinite(x)) and np.all(x == np.round(x)) and np.all(x >= info.min)
                and np.all(x <= info.max)):
            raise ValueError(f"input values are not all integers of the graph input's type {t}")
        return x.astype(dt)
    if t not in _ORT_FLOAT:
        raise ValueError(f"graph input of type {t} is not supported")
    return x.astype(_ORT_FLOAT[t])


def ort_run(model_bytes: bytes, x: np.ndarray, chunk: int = 4096, batched: bool = False) -> np.ndarray:
    """onnxruntime on samples ``x`` ([M, ...], converted to float32); the output as [M, -1].

    Every sample runs on its own (``x[i:i+1]``, or ``x[i]`` for an input without a batch
    dimension), as the VNN-COMP checker runs it: onnxruntime's float MatMul/Gemm use other kernels
    (another summation order) for a batch than for one row. ``batched=True`` (for batch-independent
    graphs such as the elementwise input probe) runs a symbolic-batch input in chunks."""
    sess = ort_session(model_bytes)
    inp = sess.get_inputs()[0]
    name = inp.name
    x = np.ascontiguousarray(np.asarray(x, np.float32))
    shape = list(inp.shape) if inp.shape is not None else []
    if batched and len(shape) == x.ndim and not isinstance(shape[0], int):
        outs = [sess.run(None, {name: ort_feed(sess, x[i:i + chunk])})[0] for i in range(0, x.shape[0], chunk)]
        out = np.concatenate(outs, axis=0)
        return out.reshape(x.shape[0], -1)
    if len(shape) == x.ndim:
        outs = [np.asarray(sess.run(None, {name: ort_feed(sess, x[i:i + 1])})[0]).reshape(1, -1)
                for i in range(x.shape[0])]
    elif len(shape) == x.ndim - 1:
        outs = [np.asarray(sess.run(None, {name: ort_feed(sess, x[i])})[0]).reshape(1, -1) for i in range(x.shape[0])]
    else:
        raise ValueError(f"input of rank {len(shape)} cannot take samples of shape {x.shape[1:]}")
    if not outs:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(outs, axis=0)


# ----------------------------------------------------------------------------------------------
# graph building

def _pow2(v: float) -> float:
    return float(2.0 ** np.round(np.log2(v)))


class _Builder:
    """onnx.helper nodes plus a float64 nominal forward on calibration samples (to pick scales)."""

    def __init__(self, rng: np.random.Generator, pow2: bool, sym: bool):
        self.rng, self.pow2, self.sym = rng, pow2, sym
        self.nodes: list = []
        self.inits: list = []
        self.n = 0
        self.twin = False

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, base: str, arr) -> str:
        nm = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), nm))
        return nm

    def node(self, op: str, inputs: Sequence[str], **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out + "_node", **attrs))
        return out

    def scale(self, v: float) -> np.float32:
        v = max(float(v), 1e-6)
        return np.float32(_pow2(v) if self.pow2 else v)

    # quantizer formats: (dtype, qmin, qmax)
    @staticmethod
    def fmt(unsigned: bool):
        return (np.uint8, 0, 255) if unsigned else (np.int8, -128, 127)

    def qdq(self, x: str, s, z: int, unsigned: bool, samples: np.ndarray | None):
        """QuantizeLinear -> DequantizeLinear; returns (name, dequantized samples)."""
        dt, qmin, qmax = self.fmt(unsigned)
        sn, zn = self.const("s", np.float32(s)), self.const("z", dt(z))
        q = self.node("QuantizeLinear", [x, sn, zn])
        d = self.node("DequantizeLinear", [q, sn, zn])
        if samples is None:
            return d, None
        codes = np.clip(np.round(samples / float(s)) + z, qmin, qmax)
        return d, (codes - z) * float(s)

    def act_quant(self, x: str, samples: np.ndarray, relu: str):
        """A hidden activation quantizer calibrated on ``samples`` (optionally with ReLU)."""
        if relu == "node":
            x = self.node("Relu", [x])
            samples = np.maximum(samples, 0.0)
        lo, hi = float(np.percentile(samples, 2)), float(np.percentile(samples, 98))
        if relu == "u8q":  # ReLU as a uint8 quantizer with zero point 0
            s = self.scale(max(hi, 1e-3) / 255 * self.rng.uniform(0.7, 1.2))
            return self.qdq(x, s, 0, True, samples)
        if self.sym or relu == "node":
            unsigned = not self.sym
            amax = max(abs(lo), abs(hi), 1e-3)
            if unsigned:  # after a Relu node with asymmetric activations: uint8, zero point 0..10
                s = self.scale(max(hi, 1e-3) / 245 * self.rng.uniform(0.7, 1.2))
                return self.qdq(x, s, int(self.rng.integers(0, 11)), True, samples)
            s = self.scale(amax / 127 * self.rng.uniform(0.7, 1.2))
            return self.qdq(x, s, 0, False, samples)
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        s = self.scale(max(hi - lo, 1e-3) / 255 * self.rng.uniform(0.7, 1.2))
        z = int(np.clip(np.round(-lo / float(s)), 0, 255))
        return self.qdq(x, s, z, True, samples)

    def weight(self, shape, per_channel: bool, axis: int = 0):
        """int8 weight codes (zero point 0) with per-tensor or per-channel scales: (DQ name, float
        weights as DQ computes them nominally, scales array per output channel)."""
        rng = self.rng
        bound = int(rng.choice([7, 31, 127]))
        wq = rng.integers(-bound, bound + 1, size=shape).astype(np.int8)
        if self.twin and shape[axis] >= 2:  # output channel 1 = channel 0 with one code moved by one
            w0 = np.take(wq, 0, axis=axis).copy()
            flat = w0.reshape(-1)
            j = int(rng.integers(flat.size))
            flat[j] = np.clip(int(flat[j]) + int(rng.choice([-1, 1])), -bound, bound)
            idx = [slice(None)] * len(shape)
            idx[axis] = 1
            wq[tuple(idx)] = w0
        nout = shape[axis]
        if per_channel:
            s = np.array([self.scale(rng.uniform(0.3, 3.0) / bound) for _ in range(nout)], np.float32)
            if self.twin and nout >= 2:
                s[1] = s[0]
        else:
            s = np.array([self.scale(rng.uniform(0.3, 3.0) / bound)] * nout, np.float32)
        wn = self.const("w", wq)
        if per_channel:
            sn = self.const("ws", s)
            zn = self.const("wz", np.zeros(nout, np.int8))
            d = self.node("DequantizeLinear", [wn, sn, zn], axis=axis)
        else:
            sn = self.const("ws", np.float32(s[0]))
            zn = self.const("wz", np.int8(0))
            d = self.node("DequantizeLinear", [wn, sn, zn])
        shp = [1] * len(shape)
        shp[axis] = nout
        return d, wq.astype(np.float64) * s.astype(np.float64).reshape(shp), s

    def bias(self, s_x: float, s_w: np.ndarray, kind: str, per_channel: bool, scale_mag: float):
        """int32 bias via DequantizeLinear at fl32(s_x * s_w) or a float32 bias initializer."""
        nout = s_w.shape[0]
        sb = (np.float32(s_x) * s_w.astype(np.float32)).astype(np.float32)
        codes = np.round(self.rng.normal(0, 1, nout) * scale_mag / sb.astype(np.float64)).astype(np.int64)
        codes = np.clip(codes, -2 ** 20, 2 ** 20).astype(np.int32)
        if self.twin and nout >= 2:
            codes[1] = codes[0]
        if kind == "float":
            b = (codes * sb.astype(np.float64) * self.rng.uniform(0.8, 1.2, nout)).astype(np.float32)
            if self.twin and nout >= 2:
                b[1] = b[0]
            return self.const("b", b), b.astype(np.float64)
        bn = self.const("bq", codes)
        if per_channel:
            d = self.node("DequantizeLinear", [bn, self.const("bs", sb), self.const("bz", np.zeros(nout, np.int32))],
                          axis=0)
        else:
            d = self.node("DequantizeLinear", [bn, self.const("bs", np.float32(sb[0])), self.const("bz", np.int32(0))])
        return d, codes.astype(np.float64) * sb.astype(np.float64)


@dataclass
class Case:
    """One generated model: ``model`` (serialized ONNX), its input shape without the batch, and the
    options it was drawn with."""

    style: str
    seed: int
    model: bytes
    in_shape: tuple
    n_out: int
    options: dict = field(default_factory=dict)
    _grid: "InputGrid | None" = None

    @property
    def n_in(self) -> int:
        return int(np.prod(self.in_shape))

    def grid(self) -> "InputGrid":
        if self._grid is None:
            self._grid = input_grid(self.model, self.in_shape)
        return self._grid

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32).reshape(-1, *self.in_shape)
        return ort_run(self.model, x)

    def describe(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.style}[seed={self.seed}; {opts}]"


def _finish(b: _Builder, x_shape, out: str, n_out: int) -> bytes:
    out_final = "y"
    b.nodes.append(helper.make_node("Identity", [out], [out_final], name="out_identity"))
    g = helper.make_graph(b.nodes, "diff", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *x_shape])],
                          [helper.make_tensor_value_info(out_final, TensorProto.FLOAT, ["N", n_out])], b.inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="diffgen")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m.SerializeToString()


def _input_quant(b: _Builder, shape, preproc: str | None, options: dict):
    """Optional float preprocessing, then the input QuantizeLinear -> DequantizeLinear; returns the
    DQ name and calibration samples of the dequantized input."""
    rng = b.rng
    unsigned = not b.sym
    dt, qmin, qmax = b.fmt(unsigned)
    if rng.random() < 0.25:
        s_in = np.float32(1.0)
    else:
        s_in = b.scale(rng.uniform(0.004, 0.05))
    z_in = 0 if b.sym else int(rng.integers(0, 129))
    options.update(s_in=float(s_in), z_in=z_in)
    x = "x"
    if preproc == "subdiv":
        m, d = np.float32(rng.uniform(-1, 1)), np.float32(rng.uniform(0.1, 0.5))
        x = b.node("Sub", [x, b.const("mean", m)])
        x = b.node("Div", [x, b.const("std", d)])
        options.update(pre=f"sub{float(m):.4g}div{float(d):.4g}")
    elif preproc == "muladd":
        k, c = np.float32(rng.uniform(0.5, 4.0)), np.float32(rng.uniform(-1, 1))
        x = b.node("Mul", [x, b.const("k", k)])
        x = b.node("Add", [x, b.const("c", c)])
        options.update(pre=f"mul{float(k):.4g}add{float(c):.4g}")
    codes = rng.integers(qmin, qmax + 1, size=(512, int(np.prod(shape))))
    return b.qdq(x, s_in, z_in, unsigned, (codes - z_in) * float(s_in))


def _gemm_layer(b: _Builder, x: str, samples: np.ndarray, s_x: float, nout: int, bias: str, per_channel: bool):
    d, w, s_w = b.weight((nout, samples.shape[1]), per_channel, axis=0)
    y_nb = samples @ w.T
    bn, bv = b.bias(s_x, s_w, bias, per_channel, float(np.std(y_nb)) + 1e-3)
    y = b.node("Gemm", [x, d, bn], transB=1)
    return y, y_nb + bv


def _matmul_add_layer(b: _Builder, x: str, samples: np.ndarray, s_x: float, nout: int, bias: str,
                      per_channel: bool):
    """MatMul then Add of the bias (int32 DequantizeLinear or float), as torch exports a Linear:
    DQ(x) @ DQ(W) + b."""
    d, w, s_w = b.weight((samples.shape[1], nout), per_channel, axis=1)
    y_nb = samples @ w
    bn, bv = b.bias(s_x, s_w, bias, per_channel, float(np.std(y_nb)) + 1e-3)
    mm = b.node("MatMul", [x, d])
    return b.node("Add", [mm, bn]), y_nb + bv


def _matmul_qadd_layer(b: _Builder, x: str, samples: np.ndarray, nout: int, per_channel: bool, relu: str):
    """quantize_static's MatMul + Add: DQ(x) @ DQ(W) -> Q/DQ -> Add(DQ(bias)) -> Q/DQ."""
    d, w, _ = b.weight((samples.shape[1], nout), per_channel, axis=1)
    mm = b.node("MatMul", [x, d])
    ys = samples @ w
    mm_d, ys_q = b.act_quant(mm, ys, "none")
    bvals = b.rng.normal(0, 1, nout) * (float(np.std(ys)) + 1e-3)
    sb = b.scale(max(np.abs(bvals).max(), 1e-3) / 127)
    bq = np.clip(np.round(bvals / float(sb)), -127, 127).astype(np.int8)
    if b.twin and nout >= 2:
        bq[1] = bq[0]
    bd = b.node("DequantizeLinear", [b.const("bq", bq), b.const("bs", np.float32(sb)), b.const("bz", np.int8(0))])
    add = b.node("Add", [mm_d, bd])
    return add, ys_q + bq.astype(np.float64) * float(sb)


def _conv_forward(x: np.ndarray, w: np.ndarray, bias: np.ndarray) -> np.ndarray:
    n, c, hh, ww = x.shape
    o, _, kh, kw = w.shape
    out = np.zeros((n, o, hh - kh + 1, ww - kw + 1))
    for i in range(hh - kh + 1):
        for j in range(ww - kw + 1):
            patch = x[:, :, i:i + kh, j:j + kw].reshape(n, -1)
            out[:, :, i, j] = patch @ w.reshape(o, -1).T + bias
    return out


def _make_onnx_case(style: str, seed: int, force: dict | None = None) -> Case:
    """``force`` overrides drawn options (sym, pow2, bias, relu, pc, twin) after they are drawn, so
    the rest of the draw stays the same."""
    force = force or {}
    rng = np.random.default_rng(seed)
    conv = style in ("conv_pt", "conv_pc")
    float_out = style == "float_out"
    if float_out and rng.random() < 0.3:
        conv = True
    sym = bool(rng.random() < 0.5)
    pow2 = bool(rng.random() < 0.35)
    b = _Builder(rng, pow2, sym)
    bias_kind = str(rng.choice(["int32", "float"], p=[0.6, 0.4]))
    relu = str(rng.choice(["node", "u8q", "none"]))
    per_channel = style == "conv_pc" or (not conv and bool(rng.random() < 0.25))
    preproc = str(rng.choice(["subdiv", "muladd"])) if style == "preproc" else None
    sym, pow2 = bool(force.get("sym", sym)), bool(force.get("pow2", pow2))
    bias_kind, relu = str(force.get("bias", bias_kind)), str(force.get("relu", relu))
    per_channel = bool(force.get("pc", per_channel))
    b.sym, b.pow2 = sym, pow2
    options = dict(sym=sym, pow2=pow2, bias=bias_kind, relu=relu, pc=per_channel)
    if conv:
        hw = int(rng.choice([3, 4]))
        shape = (1, hw, hw)
    else:
        shape = (int(rng.integers(2, 5)),)
    x, samples = _input_quant(b, shape, preproc, options)
    s_x = options["s_in"]
    n_out = int(rng.integers(2, 5))
    if conv:
        cout, k = int(rng.integers(2, 4)), 2
        samples = samples.reshape(-1, *shape)
        d, w, s_w = b.weight((cout, 1, k, k), per_channel, axis=0)
        y_nb = _conv_forward(samples, w, np.zeros(cout))
        bn, bv = b.bias(s_x, s_w, bias_kind, per_channel, float(np.std(y_nb)) + 1e-3)
        y = b.node("Conv", [x, d, bn], kernel_shape=[k, k])
        hid, hs = b.act_quant(y, y_nb + bv.reshape(1, -1, 1, 1), relu)
        hid = b.node("Flatten", [hid], axis=1)
        hs = hs.reshape(hs.shape[0], -1)
        h_scale = _last_act_scale(b)
    else:
        hidden = int(rng.integers(3, 7))
        if style == "matmul_qadd":
            y, ys = _matmul_qadd_layer(b, x, samples, hidden, per_channel, relu)
        elif style == "matmul_add":
            y, ys = _matmul_add_layer(b, x, samples, s_x, hidden, bias_kind, per_channel)
        else:
            y, ys = _gemm_layer(b, x, samples, s_x, hidden, bias_kind, per_channel)
        hid, hs = b.act_quant(y, ys, relu)
        h_scale = _last_act_scale(b)
    twin = bool(force.get("twin", rng.random() < 0.5))  # two output rows nearly equal: ties and near ties
    options["twin"] = twin
    b.twin = twin
    if float_out:
        w = rng.normal(0, 1, (n_out, hs.shape[1])).astype(np.float32)
        if twin:
            w[1] = w[0]
            j = int(rng.integers(w.shape[1]))
            w[1, j] = np.float32(w[0, j] + np.float32(rng.integers(-4, 5)) * np.spacing(w[0, j]))
        bf = (rng.normal(0, 1, n_out) * np.std(hs @ w.T.astype(np.float64))).astype(np.float32)
        if twin:
            bf[1] = bf[0]
        out = b.node("Gemm", [hid, b.const("wf", w), b.const("bf", bf)], transB=1)
        options["out"] = "float"
    else:
        if style == "matmul_qadd":
            y, ys = _matmul_qadd_layer(b, hid, hs, n_out, per_channel, "none")
        elif style == "matmul_add":
            y, ys = _matmul_add_layer(b, hid, hs, h_scale, n_out, bias_kind, per_channel)
        else:
            y, ys = _gemm_layer(b, hid, hs, h_scale, n_out, bias_kind, per_channel and not conv)
        out, _ = b.act_quant(y, ys, "none")
        options["out"] = "dq"
    return Case(style, seed, _finish(b, shape, out, n_out), shape, n_out, options)


def _last_act_scale(b: _Builder) -> float:
    """The scale of the last QuantizeLinear emitted (the current activation's scale)."""
    q = [n for n in b.nodes if n.op_type == "QuantizeLinear"][-1]
    init = {i.name: i for i in b.inits}[q.input[1]]
    return float(numpy_helper.to_array(init))


# ----------------------------------------------------------------------------------------------
# PyTorch QAT

def _make_torch_case(seed: int) -> Case:
    import torch
    import torch.ao.quantization as tq
    from torch import nn

    rng = np.random.default_rng(seed)
    torch.manual_seed(int(rng.integers(0, 2 ** 31)))
    conv = bool(rng.random() < 0.4)
    n_out = int(rng.integers(2, 5))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.dq = tq.QuantStub(), tq.DeQuantStub()
            if conv:
                self.body = nn.Sequential(nn.Conv2d(1, int(rng.integers(2, 4)), 2), nn.ReLU(), nn.Flatten())
                feats = self.body[0].out_channels * 9
            else:
                nin = int(rng.integers(2, 5))
                self.nin = nin
                self.body = nn.Sequential(nn.Linear(nin, int(rng.integers(3, 7))), nn.ReLU())
                feats = self.body[0].out_features
            self.head = nn.Linear(feats, n_out)

        def forward(self, x):
            return self.dq(self.head(self.body(self.q(x))))

    net = Net()
    shape = (1, 4, 4) if conv else (net.nin,)
    sym_w = bool(rng.random() < 0.5)
    act = tq.FakeQuantize.with_args(observer=tq.MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                                    dtype=torch.quint8, reduce_range=False)
    wq = tq.FakeQuantize.with_args(
        observer=tq.MovingAveragePerChannelMinMaxObserver if not sym_w else tq.MovingAverageMinMaxObserver,
        quant_min=-128, quant_max=127, dtype=torch.qint8,
        qscheme=torch.per_channel_symmetric if not sym_w else torch.per_tensor_symmetric)
    net.qconfig = tq.QConfig(activation=act, weight=wq)
    net.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tq.prepare_qat(net, inplace=True)
        span = float(rng.uniform(0.5, 4.0))
        for _ in range(4):
            net(torch.rand(16, *shape) * span - float(rng.uniform(0, 1)) * span)
        net.eval()
        net.apply(tq.disable_observer)
        buf = io.BytesIO()
        torch.onnx.export(net, (torch.zeros(1, *shape),), buf, dynamo=False, opset_version=OPSET,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return Case("torch_qat", seed, buf.getvalue(), shape, n_out,
                dict(conv=conv, per_channel_w=not sym_w, span=round(span, 3)))


def make_case(style: str, seed: int, **force) -> Case:
    """The model of ``style`` drawn from ``seed`` (``force``: options to override, ONNX styles)."""
    if style == "torch_qat":
        return _make_torch_case(seed)
    if style not in STYLES + EXTRA_STYLES:
        raise ValueError(f"unknown style {style}")
    return _make_onnx_case(style, seed, force)


def torch_qat_available() -> bool:
    try:
        make_case("torch_qat", 0)
        return True
    except Exception:  # noqa: BLE001 - any failure means the style is skipped
        return False


# ----------------------------------------------------------------------------------------------
# the input grid

class CannotEnumerate(ValueError):
    """The model's input cannot be cut at a per-element rounding node, so the float32 inputs of a
    box cannot be enumerated code by code (no guessing: the caller reports it)."""


#: standard ops whose output is the first discrete value of the input ("codes")
PROBE_CUT_OPS = ("QuantizeLinear", "Round", "Floor", "Ceil")
#: domains whose QuantizeLinear onnxruntime runs
_QUANT_DOMAINS = ("", "ai.onnx", "com.microsoft")
#: QONNX custom ops (onnxruntime cannot run them; their truth comes from a reference table)
QONNX_OPS = ("Quant", "BipolarQuant", "Trunc", "MultiThreshold", "IntQuant", "FloatQuant")
#: ops allowed between the input and the cut: elementwise (with constants or the input itself) or
#: reshapes that keep the flat order, so element i of the cut depends on input element i only
_PROBE_PREFIX_OPS = ("Sub", "Div", "Mul", "Add", "Neg", "Identity", "Cast", "Clip", "Max", "Min", "Relu",
                     "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Dropout")
#: saturating ops after a float rounding op (Round/Floor/Ceil) that bound its codes
_PROBE_SAT_OPS = ("Clip", "Max", "Min", "Relu")
_INT_TYPES = {TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16, TensorProto.INT32,
              TensorProto.INT64, TensorProto.UINT32}
_INT4_TYPES = {getattr(TensorProto, n) for n in ("INT4", "UINT4", "INT2", "UINT2") if hasattr(TensorProto, n)}
_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}


def _is_cut(n) -> bool:
    if n.op_type == "QuantizeLinear":
        return n.domain in _QUANT_DOMAINS
    if n.op_type in ("Round", "Floor", "Ceil"):
        return n.domain in ("", "ai.onnx")
    if n.op_type == "Cast":  # float -> integer: truncation toward zero
        to = next((a.i for a in n.attribute if a.name == "to"), None)
        return to in _INT_TYPES or to in _INT4_TYPES
    return False


def graph_input_type(model_bytes: bytes) -> int:
    m = onnx.load_from_string(model_bytes)
    return m.graph.input[0].type.tensor_type.elem_type


def is_raw_qonnx(model_bytes: bytes) -> bool:
    """Has the graph a QONNX custom op (``Quant``/``BipolarQuant``/..., not the ai.onnx domain)?"""
    m = onnx.load_from_string(model_bytes)
    return any(n.op_type in QONNX_OPS and n.domain not in ("", "ai.onnx") for n in m.graph.node)


def input_probe(model_bytes: bytes) -> bytes:
    """The model's input subgraph up to (and outputting) the codes of its first rounding node.

    The cut is the first node on the input's path that rounds or quantizes: QuantizeLinear
    (ai.onnx or com.microsoft domain), Round, Floor, Ceil, or a Cast to an integer type; after a
    float rounding op, a chain of saturating ops (Clip/Max/Min/Relu with constant bounds) that is
    the rounding's only consumer is included, so the codes are bounded. Between the input and the
    cut only elementwise ops and flat-order-preserving reshapes are allowed (element i of the
    codes depends on input element i alone). Checks that the input reaches the rest of the graph
    only through the cut, so the model's outputs depend on the input only through those codes.
    Raises :class:`CannotEnumerate` when the graph cannot be cut that way (DynamicQuantizeLinear,
    whose codes depend on the whole tensor's range; QONNX custom ops; other ops before the cut)."""
    m = onnx.load_from_string(model_bytes)
    g = m.graph
    xname = g.input[0].name
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    # forward closure from x
    tainted, fwd = {xname}, []
    qnode = None
    for n in g.node:  # nodes are topologically sorted
        if any(i in tainted for i in n.input):
            if n.op_type == "Shape" and qnode is None:
                continue  # the shape of the input does not depend on its values
            if qnode is None and n.input[0] in tainted and _is_cut(n):
                qnode = n
                continue
            if qnode is not None:
                raise CannotEnumerate(f"input reaches {n.name} ({n.op_type}) without going through the input quantizer")
            if n.op_type == "DynamicQuantizeLinear":
                raise CannotEnumerate(f"input quantizer {n.name or n.output[0]} is DynamicQuantizeLinear: its codes depend on the "
                                      "range of the whole input tensor, not on each element alone")
            if n.op_type in QONNX_OPS and n.domain not in ("", "ai.onnx"):
                raise CannotEnumerate(f"input quantizer {n.name or n.output[0]} is the QONNX op {n.domain}.{n.op_type}, which "
                                      "onnxruntime cannot run")
            if n.op_type not in _PROBE_PREFIX_OPS or n.domain not in ("", "ai.onnx"):
                raise CannotEnumerate(f"input reaches {n.name} ({n.domain or 'ai.onnx'}.{n.op_type}) before any "
                                      "rounding node")
            fwd.append(n)
            tainted.update(n.output)
    if qnode is None:
        raise CannotEnumerate("no rounding node (QuantizeLinear/Round/Floor/Ceil/Cast to int) on the input")
    cut_nodes = [qnode]
    if qnode.op_type in ("Round", "Floor", "Ceil"):  # include the saturation that bounds the codes
        while True:
            outs = [c for c in consumers.get(cut_nodes[-1].output[0], [])]
            if (len(outs) == 1 and outs[0].op_type in _PROBE_SAT_OPS and outs[0].input[0] == cut_nodes[-1].output[0]
                    and not (set(outs[0].input[1:]) & tainted) and cut_nodes[-1].output[0] not in
                    {o.name for o in g.output}):
                cut_nodes.append(outs[0])
            else:
                break
    cut = cut_nodes[-1].output[0]
    # the nodes after the cut that consume tainted values must all be past the cut
    for n in g.node:
        if n in fwd or n in cut_nodes:
            continue
        if any(i in tainted for i in n.input):
            raise CannotEnumerate(f"input reaches {n.name} ({n.op_type}) without going through the input quantizer")
    # backward closure of the cut
    need, stack = set(), [i for c in cut_nodes for i in c.input]
    while stack:
        t = stack.pop()
        if t in need or t == xname or t == "":
            continue
        need.add(t)
        if t in producer:
            stack.extend(producer[t].input)
    keep = [n for n in g.node if (set(n.output) & need) or n in cut_nodes]
    for n in fwd:
        if n not in keep:
            raise CannotEnumerate(f"input subgraph node {n.name} does not feed the quantizer")
    used = [inits[t] for t in need if t in inits]
    etype = None
    try:
        inf = onnx.shape_inference.infer_shapes(m)
        vi = {v.name: v for v in list(inf.graph.value_info) + list(inf.graph.output)}
        if cut in vi and vi[cut].type.tensor_type.elem_type:
            etype = vi[cut].type.tensor_type.elem_type
    except Exception:  # noqa: BLE001 - fall back to the zero point's type below
        etype = None
    if etype is None and qnode.op_type == "QuantizeLinear":
        zp = numpy_helper.to_array(inits[qnode.input[2]]) if len(qnode.input) > 2 and qnode.input[2] in inits else None
        if zp is None and len(qnode.input) > 2 and qnode.input[2] in producer:
            cn = producer[qnode.input[2]]
            while cn.op_type == "Identity":
                src = cn.input[0]
                if src in inits:
                    zp = numpy_helper.to_array(inits[src])
                    break
                cn = producer[src]
            if zp is None and cn.op_type == "Constant":
                zp = numpy_helper.to_array(cn.attribute[0].t)
        if zp is None or zp.dtype in (np.int8, np.uint8):
            etype = TensorProto.INT8 if zp is not None and zp.dtype == np.int8 else TensorProto.UINT8
        else:  # e.g. com.microsoft's QuantizeLinear to (u)int16, which shape inference does not know
            etype = helper.np_dtype_to_tensor_dtype(zp.dtype)
    if etype is None:
        etype = TensorProto.FLOAT
    out_name = cut
    if etype not in (TensorProto.INT8, TensorProto.UINT8) and etype not in _FLOAT_TYPES:
        out_name = cut + "__probe_int32"  # int4/int16/int32 codes: read back as int32
        keep = keep + [helper.make_node("Cast", [cut], [out_name], name="probe_cast", to=TensorProto.INT32)]
        etype = TensorProto.INT32
    inp = onnx.ValueInfoProto()
    inp.CopyFrom(g.input[0])
    dims = inp.type.tensor_type.shape.dim
    if (len(dims) >= 2 and dims[0].HasField("dim_value") and dims[0].dim_value == 1
            and not any(n.op_type in ("Reshape", "Flatten", "Squeeze", "Unsqueeze") for n in keep)):
        dims[0].dim_param = "N"  # a static batch of 1: the elementwise probe runs whole batches
    pg = helper.make_graph(keep, "probe", [inp], [helper.make_tensor_value_info(out_name, etype, None)], used)
    pm = helper.make_model(pg, opset_imports=list(m.opset_import))
    pm.ir_version = m.ir_version
    return pm.SerializeToString()


MAX_CODES = 1 << 16


class InputGrid:
    """Codes of the model's input quantizer as a function of each float32 input element.

    ``thr[i, k - cmin]`` is the smallest float32 input value whose code is ``>= k`` for element
    ``i`` (found by bisection over float32 values running the model's own input subgraph in
    onnxruntime), for every code ``k`` in ``cmin + 1 .. cmax``; the quantizer is monotone, so the
    code of ``v`` is ``cmin + #{k : thr[i, k] <= v}``."""

    def __init__(self, model_bytes: bytes, in_shape: Sequence[int]):
        self.model, self.in_shape = model_bytes, tuple(in_shape)
        self.probe = input_probe(model_bytes)
        self.n = int(np.prod(in_shape))
        lo = self._codes(np.full((1, self.n), -np.finfo(np.float32).max, np.float32))[0]
        hi = self._codes(np.full((1, self.n), np.finfo(np.float32).max, np.float32))[0]
        self.cmin, self.cmax = int(lo.min()), int(hi.max())
        if self.cmax - self.cmin > MAX_CODES:
            raise CannotEnumerate(f"the input's codes span {self.cmax - self.cmin + 1} values over the float32 range "
                                  f"(more than {MAX_CODES}: an unbounded rounding node)")
        ks = np.arange(self.cmin + 1, self.cmax + 1)
        kk = np.repeat(ks[:, None], self.n, axis=1)                   # [K, n] target codes
        klo = np.full(kk.shape, -F32_KEY_MAX, np.int64)               # code < k here
        khi = np.full(kk.shape, F32_KEY_MAX, np.int64)                # code >= k here
        if np.any(self._codes(key_f32(klo)) >= kk) or np.any(self._codes(key_f32(khi)) < kk):
            raise CannotEnumerate("input quantizer is not monotone (nondecreasing) over the float32 range")
        while np.any(khi - klo > 1):
            mid = klo + (khi - klo) // 2
            ge = self._codes(key_f32(mid)) >= kk
            khi = np.where(ge, mid, khi)
            klo = np.where(ge, klo, mid)
        self.thr = key_f32(khi).T.copy()                              # [n, K] float32
        # check: the code at each threshold is k and just below is k - 1 (monotone, steps of one)
        at = self._codes(self.thr.T)
        below = self._codes(key_f32(f32_key(self.thr.T) - 1))
        if not (np.all(at == kk) and np.all(below == kk - 1)):
            raise CannotEnumerate("input quantizer skips codes")

    def _codes(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32).reshape(-1, *self.in_shape)
        c = ort_run(self.probe, x, batched=True)
        if c.dtype.kind == "f":  # Round/Floor/Ceil codes: integral float values
            if not np.all(np.isfinite(c)):
                raise CannotEnumerate("the input's rounding node gives non-finite codes (unbounded)")
            if not np.all(c == np.round(c)):
                raise CannotEnumerate("the input's rounding node gives non-integer codes")
        return c.astype(np.int64)

    def code(self, v: np.ndarray) -> np.ndarray:
        """Codes of float32 values ``v`` [n] (or [M, n]) elementwise, from the thresholds."""
        v = np.asarray(v, np.float32)
        return self.cmin + (self.thr <= v[..., None]).sum(axis=-1)

    def threshold(self, i: int, k: int) -> float:
        """Smallest float32 value of element ``i`` with code ``>= k``."""
        return float(self.thr[i, k - self.cmin - 1])

    def reachable(self, lo: np.ndarray, hi: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per element: (codes, float32 representatives) reachable from a value in [lo, hi] (float64
        bounds) once cast to float32 (round to nearest even, monotone)."""
        lo32, hi32 = np.asarray(lo, np.float64).astype(np.float32), np.asarray(hi, np.float64).astype(np.float32)
        out = []
        for i in range(self.n):
            t = self.thr[i]
            inside = (t > lo32[i]) & (t <= hi32[i])
            reps = np.concatenate([[lo32[i]], t[inside]]).astype(np.float32)
            out.append((self.cmin + (t[None, :] <= reps[:, None]).sum(axis=1), reps))
        return out

    def count(self, lo, hi) -> int:
        return int(np.prod([len(c) for c, _ in self.reachable(lo, hi)], dtype=np.float64))

    def enumerate(self, lo, hi, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
        """All float32 inputs the box reaches, one per code combination, and onnxruntime's outputs
        on them (float32 [M, n_out])."""
        reps = [r for _, r in self.reachable(lo, hi)]
        total = int(np.prod([len(r) for r in reps], dtype=np.float64))
        if total > max_points:
            raise ValueError(f"box reaches {total} code points (> {max_points})")
        pts = np.array(list(product(*reps)), np.float32).reshape(total, self.n)
        return pts, ort_run(self.model, pts.reshape(-1, *self.in_shape)).astype(np.float32)


class IntInputGrid(InputGrid):
    """The grid of a graph whose input is already an integer type (8 or 16 bits): the codes are the
    integers themselves and a box reaches exactly the integers inside it (``thr[i, k - cmin - 1]
    = k``, the smallest value whose code ``floor(v)`` is ``>= k``)."""

    def __init__(self, model_bytes: bytes, in_shape: Sequence[int], elem_type: int):
        self.model, self.in_shape = model_bytes, tuple(in_shape)
        self.probe = None
        self.n = int(np.prod(in_shape))
        dt = helper.tensor_dtype_to_np_dtype(elem_type)
        info = np.iinfo(dt)
        if info.bits > 16:
            raise CannotEnumerate(f"integer graph input of type {np.dtype(dt).name}: too many codes to enumerate")
        self.cmin, self.cmax = int(info.min), int(info.max)
        ks = np.arange(self.cmin + 1, self.cmax + 1, dtype=np.float32)
        self.thr = np.repeat(ks[None], self.n, axis=0)

    def reachable(self, lo: np.ndarray, hi: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
        out = []
        for i in range(self.n):
            a, b = max(int(np.ceil(lo[i])), self.cmin), min(int(np.floor(hi[i])), self.cmax)
            ks = np.arange(a, b + 1, dtype=np.int64)
            out.append((ks, ks.astype(np.float32)))
        return out


def input_grid(model_bytes: bytes, in_shape: Sequence[int]) -> InputGrid:
    """The grid of a model's input: :class:`IntInputGrid` for an integer-typed graph input, else
    :class:`InputGrid` (cut at the first rounding node); :class:`CannotEnumerate` otherwise."""
    et = graph_input_type(model_bytes)
    if et in _INT_TYPES:
        return IntInputGrid(model_bytes, in_shape, et)
    if et not in (TensorProto.FLOAT, TensorProto.DOUBLE):
        raise CannotEnumerate(f"graph input of type {TensorProto.DataType.Name(et)}")
    return InputGrid(model_bytes, in_shape)


# ----------------------------------------------------------------------------------------------
# properties and truth

Disjunct = tuple[np.ndarray, np.ndarray]


def violates(y: np.ndarray, disjuncts: Sequence[Disjunct]) -> np.ndarray:
    """Exact check per row of ``y`` (float32 or float64 values): some disjunct's ``mat @ y <= rhs``
    holds in rational arithmetic."""
    y = np.asarray(y)
    if y.ndim == 1:
        y = y[None]
    uniq, inv = np.unique(y.astype(np.float64), axis=0, return_inverse=True)
    res = np.zeros(len(uniq), bool)
    for u, row in enumerate(uniq):
        fy = [Fraction(float(v)) for v in row]
        for mat, rhs in disjuncts:
            ok = True
            for mrow, r in zip(mat, rhs):
                if sum((Fraction(float(c)) * v for c, v in zip(mrow, fy) if c != 0), Fraction(0)) > Fraction(float(r)):
                    ok = False
                    break
            if ok:
                res[u] = True
                break
    return res[np.asarray(inv).reshape(-1)]


@dataclass
class Instance:
    case: Case
    kind: str
    lo: np.ndarray
    hi: np.ndarray
    disjuncts: list
    truth: bool                 # True: violated (sat)
    note: str = ""
    n_points: int = 0
    witness: np.ndarray | None = None   # float64 input inside the box that violates (when truth)

    @property
    def style(self) -> str:
        return self.case.style

    @property
    def seed(self) -> int:
        return self.case.seed

    @property
    def expected(self) -> str:
        return "sat" if self.truth else "unsat"

    def comment(self) -> str:
        return (f"diffgen {self.case.describe()} kind={self.kind} {self.note}\n"
                f"truth (onnxruntime, {self.n_points} grid points): {self.expected}")

    def write(self, onnx_path, vnnlib_path) -> None:
        from qa_lirpa.verify.vnnlib import write_vnnlib

        with open(onnx_path, "wb") as f:
            f.write(self.case.model)
        write_vnnlib(vnnlib_path, self.lo, self.hi, self.disjuncts, self.comment(), n_outputs=self.case.n_out)


def truth_of(case: Case, lo, hi, disjuncts) -> tuple[bool, int, np.ndarray | None]:
    """(violated?, number of grid points, a float64 witness inside the box when violated)."""
    x, y = case.grid().enumerate(lo, hi)
    bad = violates(y, disjuncts)
    return bool(bad.any()), len(y), (witness_of(case, lo, hi, x[int(np.argmax(bad))], disjuncts) if bad.any() else None)


def witness_of(case: Case, lo, hi, rep: np.ndarray, disjuncts) -> np.ndarray:
    """A float64 input inside [lo, hi] whose float32 cast is the grid point ``rep``: ``rep`` itself,
    or the bound that rounds to it. Checked in onnxruntime (a self-check of the enumeration)."""
    r = np.asarray(rep, np.float32).astype(np.float64)
    w = np.where(r < lo, lo, np.where(r > hi, hi, r))
    if not np.array_equal(w.astype(np.float32), np.asarray(rep, np.float32)):
        raise AssertionError("grid point not reachable from the box")
    if not violates(case.run(w[None]), disjuncts)[0]:
        raise AssertionError("witness does not violate the property in onnxruntime")
    return w


def _bound_variant(rng, grid: InputGrid, i: int, k: int) -> tuple[float, str]:
    """A float64 bound near the threshold between codes k-1 and k of element i: the float32
    threshold T, its float32 predecessor P, their float64 midpoint and its float64 neighbours, the
    float64 value just below T (rounds up to T in float32), or the float64 nominal threshold."""
    t = grid.threshold(i, k)
    p = next32(t, -np.inf)
    mid = (t + p) / 2.0  # exact in float64
    choices = [("T32", t), ("P32", p), ("mid", mid), ("mid-", next64(mid, -np.inf)), ("mid+", next64(mid, np.inf)),
               ("T-64", next64(t, -np.inf)), ("P+64", next64(p, np.inf))]
    name, v = choices[int(rng.integers(len(choices)))]
    return float(v), name


def random_box(rng, grid: InputGrid, n_vary: int, span: int, center_codes: np.ndarray | None = None,
               exact_edges: bool = True) -> tuple[np.ndarray, np.ndarray, str]:
    """A box varying ``n_vary`` elements over about ``span`` codes; bounds at threshold neighbours."""
    n = grid.n
    span = max(1, min(span, (grid.cmax - grid.cmin - 3) // 2))   # narrow formats (e.g. int4)
    if center_codes is None:
        center_codes = rng.integers(grid.cmin + span + 2, max(grid.cmax - span - 1, grid.cmin + span + 3), size=n)
    vary = set(rng.choice(n, size=min(n_vary, n), replace=False).tolist())
    lo, hi, notes = np.zeros(n), np.zeros(n), []
    for i in range(n):
        c = int(center_codes[i])
        a, bb = (c - int(rng.integers(0, span)), c) if i in vary else (c, c)
        if i in vary:
            bb = a + span - 1
        a = max(a, grid.cmin + 1)
        bb = min(bb, grid.cmax - 1)
        if exact_edges or i in vary:
            lo[i], nl = _bound_variant(rng, grid, i, a)
            hi[i], nh = _bound_variant(rng, grid, i, bb + 1)
            notes.append(f"X{i}:[{nl},{nh}]")
        else:
            lo[i] = hi[i] = grid.threshold(i, c)
        if lo[i] > hi[i]:
            lo[i], hi[i] = hi[i], lo[i]
    return lo, hi, " ".join(notes)


def _box_budget(n: int) -> tuple[int, int]:
    if n <= 2:
        return n, 16
    if n <= 4:
        return n, 6
    return 3, 5


def _threshold_instance(rng, case: Case, kind: str, variant: str | None = None, exact_edges: bool = True) -> Instance:
    """``exact_edges=False``: the elements that do not vary sit on one code (a point), which keeps
    the box enumerable for models with many inputs."""
    grid = case.grid()
    n_vary, span = _box_budget(grid.n)
    for _ in range(20):
        lo, hi, note = random_box(rng, grid, n_vary, span, exact_edges=exact_edges)
        if grid.count(lo, hi) <= MAX_POINTS:
            break
        span = max(1, span - 1)
    xg, y = grid.enumerate(lo, hi)
    j = int(rng.integers(case.n_out))
    col = y[:, j].astype(np.float64)
    drawn = str(rng.choice(["eq", "next64", "next32", "prev64"]))
    variant = variant or drawn
    if kind == "thr_max":
        m = float(col.max())
        t = {"eq": m, "next64": next64(m, np.inf), "next32": next32(m, np.inf), "prev64": next64(m, -np.inf)}[variant]
        mat, rhs = -np.eye(case.n_out)[[j]], np.array([-t])     # Y_j >= t
    else:
        m = float(col.min())
        t = {"eq": m, "next64": next64(m, -np.inf), "next32": next32(m, -np.inf), "prev64": next64(m, np.inf)}[variant]
        mat, rhs = np.eye(case.n_out)[[j]], np.array([t])        # Y_j <= t
    disj = [(mat, rhs)]
    bad = violates(y, disj)
    truth = bool(bad.any())
    wit = witness_of(case, lo, hi, xg[int(np.argmax(bad))], disj) if truth else None
    return Instance(case, kind, lo, hi, disj, truth, f"Y{j} {variant} t={t!r} {note}", len(y), wit)


def robustness_disjuncts(n_out: int, label: int) -> list[Disjunct]:
    out = []
    for k in range(n_out):
        if k != label:
            m = np.zeros((1, n_out))
            m[0, label], m[0, k] = 1.0, -1.0
            out.append((m, np.zeros(1)))
    return out


def _near_tie_point(rng, case: Case, tie: bool, n_samples: int = 4096) -> tuple[np.ndarray, np.ndarray, float]:
    """A float32 input (one representative per code) whose top-2 outputs in onnxruntime are tied
    (``tie``), else closest without a tie (in ulps of the top output), among random points of the
    whole code grid (a tie-free point when no tie is found and vice versa)."""
    grid = case.grid()
    ks = rng.integers(min(grid.cmin + 2, grid.cmax), max(grid.cmax - 1, grid.cmin + 3), size=(n_samples, grid.n))
    ks = np.clip(ks, grid.cmin + 1, grid.cmax)
    x = np.take_along_axis(grid.thr[None], (ks - grid.cmin - 1)[..., None], axis=2)[..., 0].astype(np.float32)
    y = case.run(x).astype(np.float64)
    ys = np.sort(y, axis=1)
    ulp = np.spacing(np.abs(ys[:, -1]).astype(np.float32)).astype(np.float64)
    gap = (ys[:, -1] - ys[:, -2]) / ulp
    key = gap if tie else np.where(gap > 0, gap, np.inf)
    order = np.argsort(key, kind="stable")
    p = int(order[int(rng.integers(min(4, len(order))))])
    return x[p], y[p], float(gap[p])


def _robust_instance(rng, case: Case) -> Instance:
    grid = case.grid()
    tie = bool(rng.random() < 0.4)
    xp, yp, gap = _near_tie_point(rng, case, tie)
    codes = grid.code(xp)
    best = np.flatnonzero(yp == yp.max())
    label = int(best[int(rng.integers(len(best)))])
    if rng.random() < 0.1:  # the runner-up as the label: violated at this very point
        label = int(np.argsort(yp, kind="stable")[-2])
    # a small box: the point's codes, widened by one code in up to two (one without a tie) elements
    n_widen = int(rng.integers(0, min(2 if tie else 1, grid.n) + 1))
    widen = set(rng.choice(grid.n, size=n_widen, replace=False).tolist())
    for attempt in range(10):
        lo, hi, notes = np.zeros(grid.n), np.zeros(grid.n), []
        for i in range(grid.n):
            c = int(codes[i])
            a, bb = c, c
            if i in widen:
                if rng.random() < 0.5:
                    a = c - 1
                else:
                    bb = c + 1
            if (rng.random() < 0.3 or attempt > 4) and i not in widen:
                lo[i] = hi[i] = float(xp[i])
                notes.append(f"X{i}:point")
            else:
                lo[i], nl = _bound_variant(rng, grid, i, a)
                hi[i], nh = _bound_variant(rng, grid, i, bb + 1)
                if lo[i] > hi[i]:
                    lo[i], hi[i] = hi[i], lo[i]
                notes.append(f"X{i}:[{nl},{nh}]")
        if grid.count(lo, hi) <= MAX_POINTS:
            break
    disj = robustness_disjuncts(case.n_out, label)
    truth, npts, wit = truth_of(case, lo, hi, disj)
    return Instance(case, "robust", lo, hi, disj, truth,
                    f"label={label} gap_ulps={gap:.3g} " + " ".join(notes), npts, wit)


def make_instance(seed: int, style: str | None = None, kind: str | None = None,
                  styles: Sequence[str] = STYLES, variant: str | None = None, **force) -> Instance:
    """One instance drawn from ``seed`` (style and kind drawn too unless given; ``variant``: the
    threshold variant eq/next64/next32/prev64 of thr_* kinds; ``force``: model options)."""
    rng = np.random.default_rng([seed, 7919])
    style = style or str(styles[int(rng.integers(len(styles)))])
    drawn = str(KINDS[int(rng.integers(len(KINDS)))])
    kind = kind or drawn
    case = make_case(style, seed, **force)
    for attempt in range(8):          # a box too large to enumerate: draw the box again
        try:
            if kind == "robust":
                return _robust_instance(rng, case)
            return _threshold_instance(rng, case, kind, variant)
        except ValueError as e:
            if "code points" not in str(e) or attempt == 7:
                raise
    raise AssertionError("unreachable")


def instance_from(case: Case, kind: str, lo, hi, disjuncts, note: str = "") -> Instance:
    """An instance with a given box and property; truth by enumeration."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    truth, npts, wit = truth_of(case, lo, hi, disjuncts)
    return Instance(case, kind, lo, hi, list(disjuncts), truth, note, npts, wit)


def threshold_disjunct(n_out: int, j: int, t: float, ge: bool = True) -> Disjunct:
    """``Y_j >= t`` (ge) or ``Y_j <= t`` as ``(mat, rhs)``."""
    row = np.eye(n_out)[[j]]
    return (-row, np.array([-t])) if ge else (row, np.array([t]))


# ----------------------------------------------------------------------------------------------
# hand-made regression models

def _tiny_model(n_in: int, body) -> bytes:
    """x [N, n_in] -> uint8 input quantizer at scale 1 (codes = rounded pixels) -> ``body``."""
    b = _Builder(np.random.default_rng(0), pow2=False, sym=False)
    x, _ = b.qdq("x", np.float32(1.0), 0, True, None)
    out, n_out = body(b, x)
    return _finish(b, (n_in,), out, n_out), n_out


def output_rescale_case(scale: float = 0.1767425) -> Case:
    """x -> uint8 codes (scale 1) -> QDQ Gemm with weight code 1 at scale ``s`` and int32 bias 0
    -> QuantizeLinear(s) -> DequantizeLinear(s): the output is onnxruntime's fl32(code * s), which
    differs from the exact code * s for this non-power-of-two ``s``."""
    def body(b, x):
        s = np.float32(scale)
        w = b.node("DequantizeLinear", [b.const("w", np.array([[1]], np.int8)), b.const("ws", s), b.const("wz", np.int8(0))])
        bias = b.node("DequantizeLinear", [b.const("bq", np.array([0], np.int32)),
                                           b.const("bs", np.float32(np.float32(1.0) * s)), b.const("bz", np.int32(0))])
        y = b.node("Gemm", [x, w, bias], transB=1)
        out, _ = b.qdq(y, s, 0, False, None)
        return out, 1
    model, n_out = _tiny_model(1, body)
    return Case("reg_output_rescale", 0, model, (1,), n_out, dict(scale=scale))


def input_cast_case() -> Case:
    """x -> uint8 codes at scale 1 -> QDQ Gemm with weight 1 (scale 1), int32 bias 0 -> uint8
    quantizer at scale 1: the output is the input code."""
    def body(b, x):
        one = np.float32(1.0)
        w = b.node("DequantizeLinear", [b.const("w", np.array([[1]], np.int8)), b.const("ws", one), b.const("wz", np.int8(0))])
        bias = b.node("DequantizeLinear", [b.const("bq", np.array([0], np.int32)), b.const("bs", one),
                                           b.const("bz", np.int32(0))])
        y = b.node("Gemm", [x, w, bias], transB=1)
        out, _ = b.qdq(y, one, 0, True, None)
        return out, 1
    model, n_out = _tiny_model(1, body)
    return Case("reg_input_cast", 0, model, (1,), n_out, {})


def float_out_case(w: np.ndarray, bias: np.ndarray, name: str) -> Case:
    """x [N, 2] -> uint8 codes at scale 1 -> a float Gemm (float32 weights ``w`` [n_out, 2] and bias)."""
    def body(b, x):
        y = b.node("Gemm", [x, b.const("wf", np.asarray(w, np.float32)), b.const("bf", np.asarray(bias, np.float32))],
                   transB=1)
        return y, int(np.asarray(w).shape[0])
    model, n_out = _tiny_model(2, body)
    return Case(name, 0, model, (2,), n_out, dict(w=np.asarray(w, np.float32).tolist()))


def _code_grid_2d(lo: int = 1, hi: int = 255) -> np.ndarray:
    h = np.arange(lo, hi + 1, dtype=np.float32)
    return np.stack(np.meshgrid(h, h, indexing="ij"), axis=-1).reshape(-1, 2)


def float_tie_case() -> tuple[Case, np.ndarray]:
    """A float output layer where onnxruntime ties Y_0 and Y_1 at some input codes (h0, h1)
    although the exact values differ: rows ``(1, c)`` and ``(1, c')`` with ``c'`` the float32
    predecessor of ``c``, so exactly ``Y_0 - Y_1 = (c - c') h1 > 0``. Returns the case and the
    first such point with h0 >= 100 (all codes run in onnxruntime at once)."""
    c = np.float32(0.001)
    cp = np.nextafter(c, np.float32(-np.inf))
    case = float_out_case(np.array([[1.0, c], [1.0, cp]], np.float32), np.zeros(2, np.float32), "reg_float_tie")
    x = _code_grid_2d(100)
    y = case.run(x)
    hit = np.flatnonzero(y[:, 0] == y[:, 1])
    if hit.size == 0:
        raise AssertionError("no onnxruntime tie found")
    p = x[hit[0]]
    assert Fraction(float(p[0])) + Fraction(float(c)) * int(p[1]) > Fraction(float(p[0])) + Fraction(float(cp)) * int(p[1])
    return case, p


def near_tie_case() -> tuple[Case, np.ndarray]:
    """A float output layer where onnxruntime's Y_1 is exactly one float32 ulp below Y_0 at some
    input codes (h0 >= 100, h1 >= 1)."""
    c = np.float32(0.00123)
    c2 = np.float32(float(c) - 1e-7)
    case = float_out_case(np.array([[1.0, c], [1.0, c2]], np.float32), np.zeros(2, np.float32), "reg_near_tie")
    x = _code_grid_2d(100)
    y = case.run(x)
    hit = np.flatnonzero(y[:, 1] == np.nextafter(y[:, 0], np.float32(-np.inf)))
    if hit.size == 0:
        raise AssertionError("no one-ulp near tie found")
    return case, x[hit[len(hit) // 2]]


# ----------------------------------------------------------------------------------------------
# checking a verifier's answer

def check_counterexample(inst: Instance, x: np.ndarray) -> tuple[bool, str]:
    """Is ``x`` (float64, flat) inside the box and does onnxruntime's output on fl32(x) violate
    the property exactly?"""
    x = np.asarray(x, np.float64).reshape(-1)
    if x.shape[0] != inst.case.n_in:
        return False, f"counterexample has {x.shape[0]} inputs, expected {inst.case.n_in}"
    if not (np.all(x >= inst.lo) and np.all(x <= inst.hi)):
        return False, "counterexample outside the box"
    try:
        y = inst.case.run(x[None])
    except ValueError as e:  # e.g. a non-integer value for an integer-typed graph input
        return False, f"onnxruntime cannot run the counterexample: {e}"
    if not violates(y, inst.disjuncts)[0]:
        return False, f"onnxruntime output {y[0].tolist()} does not violate the property"
    return True, ""


def read_counterexample(text: str, n_in: int) -> np.ndarray:
    """The X values of a ``sat`` result file (float64, in order)."""
    import re

    vals = {int(i): float(v) for i, v in re.findall(r"\(X_(\d+)\s+([^\s()]+)\)", text)}
    return np.array([vals[i] for i in range(n_in)], np.float64)
