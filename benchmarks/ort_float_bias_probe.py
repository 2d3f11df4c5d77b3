"""Probe: what onnxruntime's CPU provider really computes for a QDQ layer whose bias is a FLOAT initializer.

Graph (onnx.helper, opsets 13/17/21 by default):

    X(float) -> QuantizeLinear(s_x, z_x) -> DequantizeLinear -> OP
             -> [QuantizeLinear(s_y, z_y) -> DequantizeLinear] -> Y
    OP weights = DequantizeLinear(int8 initializer, s_w per-tensor or per-channel)
    OP bias    = float32 initializer ("float")  or  DequantizeLinear(int32, s_x*s_w) ("int32")
    OP in {Conv, Gemm(transB=1), MatMul -> Add(bias)}

For each graph optimisation level the optimised model is saved (SessionOptions.optimized_model_filepath); the
table lists the op types it runs (counts; Q/DQ = QuantizeLinear/DequantizeLinear, ms. = com.microsoft) and where
the bias went: "float b kept -> Op[i]" (unchanged float initializer, consumer and input slot) or "int32 TAGS" with
the roundings of b/(s_x*s_w) it equals: rhe32 = rhe(fl(b/fl(s_x*s_w))), rha32 = same with ties away from zero,
rhe64 = rhe in float64, rhe32recip = rhe(fl(b*fl(1/fl(s_x*s_w)))); "scale=fl(sx*sw)" when its DequantizeLinear
scale is that. The float biases are built so that these differ: per channel, an exact float32 tie
fl(b/fl(s_x*s_w)) = k+0.5 with k+0.5 > 0 and float64 on the other side, one with k+0.5 < 0, a near-tie, a random
one. ORT's outputs on random and tie-adjacent inputs
(inputs built so that the candidate formulas disagree, or the exact result is within 1e-6 of a rounding tie)
are compared bit for bit with candidate formulas (x_q is taken from ORT's own QuantizeLinear):

    exact  exact rational arithmetic on the float32 parameter values, one final rounding
           (quantized output: round-half-even(V/s_y)+z_y, clamped; float output: nearest float32 of V)
    f32seq float32 unfused: x_d=fl(fl(x_q-z_x)*s_x), w_d=fl(w_q*s_w), acc=fl(acc+fl(x_d*w_d)) in K order,
           fl(acc+b), then QuantizeLinear rhe(fl(y/s_y))+z_y
    f32fma as f32seq but acc=fma(x_d, w_d, acc) (one rounding per step, K order)
    f32cr  as f32seq but the dot product rounded once to float32 (order-free)
    fmaBq  as f32fma but with the bias replaced by its quantized value fl(bq32*fl(s_x*s_w)) (bq32 as in int32)
    int32  fused integer kernel: acc=sum (x_q-z_x)*w_q + bq, bq=rhe(fl(b/fl(s_x*s_w))) (float32 route),
           requant M=fl(fl(s_x*s_w)/s_y), rhe(fl(fl(acc)*M))+z_y clamped; float output: fl(fl(acc)*fl(s_x*s_w))
    int64  as int32 but bq=rhe(b/(s_x*s_w)) in float64 (for an int32 bias both are the given bq)
    intM64 as int32 but with the multiplier rounded once: M=fl(s_x*s_w/s_y) (float64 quotient); float output: = int32
    ifb    integer acc, float bias added after scaling: v=fl(fl(fl(acc)*fl(s_x*s_w))+b) [then QuantizeLinear]
    ifma   as ifb with one rounding: v=fl(fma(fl(acc), fl(s_x*s_w), b)) [then QuantizeLinear]

Rows with the same optimised graph and bias placement are merged over opsets / activation types (u8/i8).
A cell is "✓" when every output element of every merged run matched bit for bit; a number N is the most
mismatching elements in one run (out of the elements per run given below the table); "✗p%" means only p% matched.
maxrel (float output only) = max |ORT - exact| / (sum_i |w_i a_i| + |b|), real-valued w_i, a_i.

    .venv/bin/python benchmarks/ort_float_bias_probe.py                     # full table, markdown on stdout
    .venv/bin/python benchmarks/ort_float_bias_probe.py --ops Conv --opsets 17 --random 500 --targets 50

Needs only numpy, onnx and onnxruntime.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from fractions import Fraction

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

F32 = np.float32
LD = np.longdouble
LEVELS = [("DISABLE_ALL", ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
          ("BASIC", ort.GraphOptimizationLevel.ORT_ENABLE_BASIC),
          ("EXTENDED", ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED),
          ("ALL", ort.GraphOptimizationLevel.ORT_ENABLE_ALL)]
FORMULAS = ["exact", "f32seq", "f32fma", "f32cr", "fmaBq", "int32", "int64", "intM64", "ifb", "ifma"]
ACT = {"u8": (np.uint8, TensorProto.UINT8, 0, 255, 117, 131),  # dtype, onnx type, qmin, qmax, z_x, z_y
       "i8": (np.int8, TensorProto.INT8, -128, 127, -9, 7)}


# ----------------------------------------------------------------------------------------------- parameters
class Params:
    """One layer: shapes, scales, zero points, int8 weights, float bias designed so that the float32 and
    float64 routes of rhe(b/(s_x*s_w)) disagree on the even channels."""

    def __init__(self, op: str, wgran: str, act: str, rng: np.random.Generator):
        self.op, self.wgran, self.act = op, wgran, act
        _, _, self.qmin, self.qmax, self.zx, self.zy = ACT[act]
        if op == "Conv":
            self.cin, self.k, self.hw = 3, 3, 5
            self.K = self.cin * self.k * self.k
            self.oh = self.hw - self.k + 1
        else:
            self.K = 16
        self.M = 4
        self.sx = F32(0.0213)
        self.wq = rng.integers(-127, 128, size=(self.M, self.K)).astype(np.int8)
        sw = [0.00731, 0.0113, 0.00417, 0.0191] if wgran == "channel" else [0.00731] * self.M
        self.sw = np.array(sw, dtype=F32)
        self.sxw32 = (self.sx * self.sw).astype(F32)                       # fl(s_x*s_w) per channel
        self.sxw64 = np.float64(self.sx) * self.sw.astype(np.float64)      # exact product
        # output scale: about 3 sigma of the real output over the quantized range, a non power of two
        sig = np.sqrt((self.wq.astype(np.float64) ** 2).sum(1)).max() * 74 * self.sxw64.max()
        self.sy = F32(float(f"{3 * sig / 127:.4g}") * 1.0007)
        # float bias per channel c (mod 4), q = fl(b / fl(s_x*s_w)):
        #   0: q is exactly k+0.5 > 0 (a float32 tie: half-even != half-away) and the float64 quotient is on the
        #      other side than half-even (rhe32 != rhe64);  1: q is exactly k+0.5 < 0, half-even != half-away,
        #      rhe32 == rhe64;  2: q within 2 ulp of k+0.5 but not on it;  3: random.
        # (b/(s_x*s_w) rounded in float32 and in float64 can only disagree on a float32 tie here: k+0.5 is a
        # float32 number and fl() is monotone, so fl(q) crosses k+0.5 only by landing on it; the fl(s_x*s_w)
        # rounding of the scale matters only for much larger |k|.)
        b = np.zeros(self.M, dtype=F32)
        for c in range(self.M):
            kind = c % 4
            if kind == 3:
                b[c] = F32(rng.uniform(-0.5, 0.5))
                continue
            found = None
            while found is None:
                kk = int(rng.integers(100, 3000)) * (-1 if kind == 1 else 1)
                v = F32((kk + 0.5) * np.float64(self.sxw32[c]))
                for _ in range(8):
                    v = np.nextafter(v, F32(-np.inf))
                for _ in range(17):
                    q = F32(v) / self.sxw32[c]
                    tie = q == F32(kk + 0.5)
                    r32, ra, r64 = rhe32(v, self.sxw32[c]), rha32(v, self.sxw32[c]), rhe64(v, self.sxw64[c])
                    if (kind == 0 and tie and r32 != ra and r32 != r64) or \
                            (kind == 1 and tie and r32 != ra and r32 == r64) or \
                            (kind == 2 and not tie and abs(q - F32(kk + 0.5)) <= 2 * np.spacing(q)):
                        found = v
                        break
                    v = np.nextafter(v, F32(np.inf))
            b[c] = found
        self.bf = b
        self.bq = np.array([rhe64(b[c], self.sxw64[c]) for c in range(self.M)], dtype=np.int32)

    def bias(self, kind: str):
        """(b as float32 seen by the float path, exact bias Fractions, bq32, bq64)"""
        if kind == "float":
            bq32 = np.array([rhe32(self.bf[c], self.sxw32[c]) for c in range(self.M)], dtype=np.int64)
            bq64 = np.array([rhe64(self.bf[c], self.sxw64[c]) for c in range(self.M)], dtype=np.int64)
            return self.bf, [Fraction(float(v)) for v in self.bf], bq32, bq64
        bd = (self.bq.astype(F32) * self.sxw32).astype(F32)  # DequantizeLinear output
        ex = [self.bq[c] * Fraction(float(self.sxw32[c])) for c in range(self.M)]
        return bd, ex, self.bq.astype(np.int64), self.bq.astype(np.int64)


def rhe32(b, sxw32) -> int:
    return int(np.rint(F32(b) / F32(sxw32)))


def rhe64(b, sxw64) -> int:
    return int(np.rint(np.float64(b) / np.float64(sxw64)))


def rha32(b, sxw32) -> int:
    q = F32(b) / F32(sxw32)
    return int(np.sign(q) * np.floor(np.abs(q) + F32(0.5)))


def rhe32_recip(b, sxw32) -> int:
    return int(np.rint(F32(b) * (F32(1) / F32(sxw32))))


# ----------------------------------------------------------------------------------------------- graphs
def build(P: Params, opset: int, bias: str, out: str) -> onnx.ModelProto:
    dt = ACT[P.act][0]
    inits, nodes = [], []

    def init(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))

    init("sx", P.sx)
    init("zx", np.array(P.zx, dtype=dt))
    init("sy", P.sy)
    init("zy", np.array(P.zy, dtype=dt))
    per_ch = P.wgran == "channel"
    if P.op == "Conv":
        w = P.wq.reshape(P.M, P.cin, P.k, P.k)
        waxis = 0
        xshape, yshape = ["N", P.cin, P.hw, P.hw], ["N", P.M, P.oh, P.oh]
    elif P.op == "Gemm":
        w, waxis = P.wq, 0
        xshape, yshape = ["N", P.K], ["N", P.M]
    else:
        w, waxis = np.ascontiguousarray(P.wq.T), 1
        xshape, yshape = ["N", P.K], ["N", P.M]
    init("wq", w)
    init("sw", P.sw if per_ch else P.sw[0])
    init("zw", np.zeros(P.M, dtype=np.int8) if per_ch else np.array(0, dtype=np.int8))
    nodes.append(helper.make_node("QuantizeLinear", ["X", "sx", "zx"], ["xq"], name="q_x"))
    nodes.append(helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"], name="dq_x"))
    nodes.append(helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wd"], name="dq_w",
                                  **({"axis": waxis} if per_ch else {})))
    if bias == "float":
        init("B", P.bf)
    else:
        init("Bq", P.bq)
        init("sb", P.sxw32 if per_ch else P.sxw32[0])
        nodes.append(helper.make_node("DequantizeLinear", ["Bq", "sb"], ["B"], name="dq_b",
                                      **({"axis": 0} if per_ch else {})))
    yf = "Y" if out == "float" else "yf"
    if P.op == "Conv":
        nodes.append(helper.make_node("Conv", ["xd", "wd", "B"], [yf], name="conv"))
    elif P.op == "Gemm":
        nodes.append(helper.make_node("Gemm", ["xd", "wd", "B"], [yf], name="gemm", transB=1))
    else:
        nodes.append(helper.make_node("MatMul", ["xd", "wd"], ["mm"], name="matmul"))
        nodes.append(helper.make_node("Add", ["mm", "B"], [yf], name="add"))
    if out == "q":
        nodes.append(helper.make_node("QuantizeLinear", ["yf", "sy", "zy"], ["yq"], name="q_y"))
        nodes.append(helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["Y"], name="dq_y"))
    g = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info("X", TensorProto.FLOAT, xshape)],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, yshape)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="ort_float_bias_probe")
    m.ir_version = min(m.ir_version, 10 if opset >= 21 else 8)
    onnx.checker.check_model(m)
    return m


def quantizer_model(P: Params, opset: int) -> onnx.ModelProto:
    dt, ot = ACT[P.act][0], ACT[P.act][1]
    g = helper.make_graph([helper.make_node("QuantizeLinear", ["X", "sx", "zx"], ["xq"])], "qref",
                          [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)],
                          [helper.make_tensor_value_info("xq", ot, None)],
                          [numpy_helper.from_array(P.sx, "sx"),
                           numpy_helper.from_array(np.array(P.zx, dtype=dt), "zx")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = min(m.ir_version, 10 if opset >= 21 else 8)
    return m


def session(model: onnx.ModelProto, level, opt_path: str | None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    if opt_path:
        so.optimized_model_filepath = opt_path
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


# ----------------------------------------------------------------------------------------------- inputs
def patches(P: Params, xq: np.ndarray) -> np.ndarray:
    """(x_q - z_x) as int64, shape [N, positions, K] in the weight's K order."""
    v = xq.astype(np.int64) - P.zx
    if P.op != "Conv":
        return v[:, None, :]
    cols = []
    for i in range(P.oh):
        for j in range(P.oh):
            cols.append(v[:, :, i:i + P.k, j:j + P.k].reshape(v.shape[0], -1))
    return np.stack(cols, 1)


def solve_row(w: np.ndarray, t: int, lo: int, hi: int, rng) -> np.ndarray | None:
    """v in [lo, hi]^K with w.v == t, or None."""
    K = len(w)
    w = w.astype(np.int64)
    nz = np.flatnonzero(w)
    for _ in range(20):
        v = rng.integers(lo, hi + 1, size=K)
        for _ in range(400):
            d = t - int(w @ v)
            if d == 0:
                return v
            i = int(rng.choice(nz))
            step = int(np.rint(d / w[i]))
            if step == 0:
                step = 1 if d * w[i] > 0 else -1
            v[i] = min(hi, max(lo, v[i] + step))
            if abs(d) <= 2 * int(np.abs(w).max()):
                break
        d = t - int(w @ v)
        if d == 0:
            return v
        for i in nz:
            for a in range(-40, 41):
                if not lo <= v[i] + a <= hi:
                    continue
                r = d - int(w[i]) * a
                for j in nz:
                    if j == i or r % int(w[j]):
                        continue
                    bb = r // int(w[j])
                    if lo <= v[j] + bb <= hi:
                        v[i] += a
                        v[j] += bb
                        assert int(w @ v) == t
                        return v
    return None


def formulas_of_t(P: Params, c: int, t: np.ndarray, bias: str):
    """Quantized-output candidate formulas that depend on the integer accumulator only (for target search)."""
    bd, bex, bq32, bq64 = P.bias(bias)
    lo, hi = P.qmin, P.qmax
    M = F32(P.sxw32[c] / P.sy)
    out = {}
    M64 = F32(P.sxw64[c] / np.float64(P.sy))
    for name, bq, m in (("int32", bq32[c], M), ("int64", bq64[c], M), ("intM64", bq32[c], M64)):
        out[name] = np.clip(np.rint((t + bq).astype(F32) * m) + P.zy, lo, hi)
    v = (t.astype(F32) * P.sxw32[c]).astype(F32) + F32(bd[c])
    out["ifb"] = np.clip(np.rint((v / P.sy).astype(F32)) + P.zy, lo, hi)
    v = (t.astype(LD) * LD(P.sxw32[c]) + LD(bd[c])).astype(F32)
    out["ifma"] = np.clip(np.rint((v / P.sy).astype(F32)) + P.zy, lo, hi)
    e = (t * P.sxw64[c] + float(bex[c])) / np.float64(P.sy)
    out["exact"] = np.clip(np.rint(e) + P.zy, lo, hi)
    return out, np.abs(e - np.floor(e) - 0.5)


def make_inputs(P: Params, bias: str, n_random: int, n_targets: int, rng) -> tuple[np.ndarray, int]:
    lo, hi = P.qmin - P.zx, P.qmax - P.zx
    N = n_random + n_targets * P.M
    vq = rng.integers(lo, hi + 1, size=(N, P.K) if P.op != "Conv" else (N, P.cin, P.hw, P.hw))
    n_solved = 0
    bd = P.bias(bias)[0]
    for c in range(P.M):
        w = P.wq[c].astype(np.int64)
        reach = int(np.abs(w).sum()) * min(-lo, hi)
        # t range whose exact output is inside the quantized range (no clamping), and reachable
        e_lo = ((P.qmin + 1 - P.zy) * np.float64(P.sy) - float(bd[c])) / P.sxw64[c]
        e_hi = ((P.qmax - 1 - P.zy) * np.float64(P.sy) - float(bd[c])) / P.sxw64[c]
        t = np.arange(max(int(e_lo), -reach * 3 // 4), min(int(e_hi), reach * 3 // 4) + 1, dtype=np.int64)
        outs, dist = formulas_of_t(P, c, t, bias)
        # disagreement categories: each formula vs exact, and the two bias roundings against each other
        cats = [outs[k] != outs["exact"] for k in outs if k != "exact"] + [outs["int32"] != outs["int64"]]
        per = max(1, n_targets // (len(cats) + 1))
        chosen: list = []
        for mask in cats:
            pick = np.flatnonzero(mask)
            rng.shuffle(pick)
            chosen += [int(i) for i in pick[:per] if int(i) not in chosen]
        chosen += [int(i) for i in np.argsort(dist)[: n_targets] if int(i) not in chosen]
        chosen = chosen[:n_targets]
        for r, idx in enumerate(chosen):
            n = n_random + c * n_targets + r
            v = solve_row(w, int(t[idx]), lo, hi, rng)
            if v is None:
                continue
            n_solved += 1
            if P.op == "Conv":
                vq[n, :, 0:P.k, 0:P.k] = v.reshape(P.cin, P.k, P.k)
            else:
                vq[n] = v
    # float inputs that quantize to the chosen x_q: centre +- jitter; a few exactly tie-adjacent
    jit = rng.uniform(-0.45, 0.45, size=vq.shape)
    tie = rng.random(vq.shape) < 0.05
    tie[n_random:] = False  # keep the targeted accumulators intact (a tie may round either way)
    jit[tie] = 0.5 * np.sign(rng.standard_normal(tie.sum()))
    X = ((vq + jit) * np.float64(P.sx)).astype(F32)
    nudge = rng.integers(-2, 3, size=X.shape)
    for s in (-2, -1, 1, 2):
        m = tie & (nudge == s)
        X[m] = np.nextafter(X[m], F32(np.inf) if s > 0 else F32(-np.inf))
        if abs(s) == 2:
            X[m] = np.nextafter(X[m], F32(np.inf) if s > 0 else F32(-np.inf))
    return X, n_solved


# ----------------------------------------------------------------------------------------------- reference
def nearest_f32(v: Fraction) -> np.float32:
    f = F32(float(v))
    best = None
    for c in (np.nextafter(f, F32(-np.inf)), f, np.nextafter(f, F32(np.inf))):
        d = abs(Fraction(float(c)) - v)
        if best is None or d < best[0] or (d == best[0] and int(c.view(np.uint32)) % 2 == 0):
            best = (d, c)
    return best[1]


def candidates(P: Params, xq: np.ndarray, bias: str) -> dict:
    """All candidate outputs, each for q (quantized-output, integer codes) and f (float output)."""
    bd, bex, bq32, bq64 = P.bias(bias)
    V = patches(P, xq)                                     # [N, S, K]
    t = np.einsum("nsk,mk->nsm", V, P.wq.astype(np.int64))  # [N, S, M]
    lo, hi, zy, sy = P.qmin, P.qmax, P.zy, P.sy

    def Q(y):  # ORT QuantizeLinear as assumed: rhe(fl(y/s_y)) + z_y, saturated
        return np.clip(np.rint((y / sy).astype(F32)) + zy, lo, hi)

    res = {}
    # exact
    sxw_ex = [Fraction(float(P.sx)) * Fraction(float(P.sw[c])) for c in range(P.M)]
    syf = Fraction(float(sy))
    eq = np.zeros(t.shape)
    ef = np.zeros(t.shape, F32)
    e64 = np.zeros(t.shape)
    memo = {}
    for idx in np.ndindex(t.shape):
        c = idx[-1]
        key = (int(t[idx]), c)
        if key not in memo:
            v = key[0] * sxw_ex[c] + bex[c]
            memo[key] = (min(hi, max(lo, round(v / syf) + zy)), nearest_f32(v), float(v))
        eq[idx], ef[idx], e64[idx] = memo[key]
    res["exact"] = (eq, ef)
    # float unfused
    xd = (V.astype(F32) * P.sx).astype(F32)                               # [N,S,K]
    wd = (P.wq.astype(F32) * P.sw[:, None]).astype(F32)                    # [M,K]
    prod = xd[:, :, None, :] * wd[None, None, :, :]                        # fl32 products [N,S,M,K]
    acc = np.zeros(t.shape, F32)
    accf = np.zeros(t.shape, F32)
    exact_prod = xd.astype(LD)[:, :, None, :] * wd.astype(LD)[None, None, :, :]
    for k in range(P.K):
        acc = (acc + prod[..., k]).astype(F32)
        accf = (accf.astype(LD) + exact_prod[..., k]).astype(F32)
    cr = exact_prod.sum(-1).astype(F32)
    for name, a in (("f32seq", acc), ("f32fma", accf), ("f32cr", cr)):
        y = (a + bd).astype(F32)
        res[name] = (Q(y), y)
    y = (accf + (bq32.astype(F32) * P.sxw32).astype(F32)).astype(F32)
    res["fmaBq"] = (Q(y), y)
    # fused integer
    M = (P.sxw32 / sy).astype(F32)
    M64 = (P.sxw64 / np.float64(sy)).astype(F32)
    for name, bq, m in (("int32", bq32, M), ("int64", bq64, M), ("intM64", bq32, M64)):
        a = (t + bq).astype(F32)
        res[name] = (np.clip(np.rint((a * m).astype(F32)) + zy, lo, hi), (a * P.sxw32).astype(F32))
    y = ((t.astype(F32) * P.sxw32).astype(F32) + bd).astype(F32)
    res["ifb"] = (Q(y), y)
    y = (t.astype(LD) * P.sxw32.astype(LD) + bd.astype(LD)).astype(F32)
    res["ifma"] = (Q(y), y)
    # error normaliser: sum |w_i a_i| + |b| (real values)
    absum = np.einsum("nsk,mk->nsm", np.abs(V).astype(np.float64), np.abs(P.wq.astype(np.float64))) \
        * P.sxw64 + np.abs(np.array([float(b) for b in bex]))
    return res, e64, absum


def to_layout(P: Params, arr: np.ndarray) -> np.ndarray:
    """[N,S,M] -> ORT output layout."""
    if P.op == "Conv":
        return arr.reshape(arr.shape[0], P.oh, P.oh, P.M).transpose(0, 3, 1, 2)
    return arr[:, 0, :]


# ----------------------------------------------------------------------------------------------- optimised graph
def describe(path: str, P: Params, bias: str) -> tuple[str, str]:
    m = onnx.load(path)
    abbrev = {"QuantizeLinear": "Q", "DequantizeLinear": "DQ"}
    counts: dict = {}
    for n in m.graph.node:
        dom = "ms." if n.domain == "com.microsoft" else n.domain + "." if n.domain not in ("", "ai.onnx") else ""
        name = dom + abbrev.get(n.op_type, n.op_type)
        counts[name] = counts.get(name, 0) + 1
    ops = [f"{k}×{v}" if v > 1 else k for k, v in sorted(counts.items(), key=lambda kv: (kv[0] in ("Q", "DQ"), kv[0]))]
    consumers = {}
    for n in m.graph.node:
        for i, name in enumerate(n.input):
            consumers.setdefault(name, []).append((n, i))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    bq32 = np.array([rhe32(P.bf[c], P.sxw32[c]) for c in range(P.M)])
    bq64 = np.array([rhe64(P.bf[c], P.sxw64[c]) for c in range(P.M)])
    bqr = np.array([rhe32_recip(P.bf[c], P.sxw32[c]) for c in range(P.M)])
    bqa = np.array([rha32(P.bf[c], P.sxw32[c]) for c in range(P.M)])
    notes = []
    for name, a in inits.items():
        if a.size not in (1, P.M) or name in ("sx", "sy", "sw"):
            continue
        flat = a.reshape(-1)
        if flat.size == 1 and P.M > 1:
            continue
        cons = ",".join(f"{n.op_type}[{i}]" for n, i in consumers.get(name, [])) or "graph output"
        if a.dtype == np.int32:
            v = flat.astype(np.int64)
            if bias == "int32" and np.array_equal(v, P.bq):
                notes.append(f"int32 given -> {cons}")
                continue
            tags = [tag for tag, ref in (("rhe32", bq32), ("rha32", bqa), ("rhe64", bq64), ("rhe32recip", bqr))
                    if np.array_equal(v, ref)]
            sc = ""
            for n, i in consumers.get(name, []):
                if n.op_type == "DequantizeLinear" and len(n.input) > 1 and n.input[1] in inits:
                    s = inits[n.input[1]].reshape(-1).astype(F32)
                    s_ref = P.sxw32 if s.size == P.M else P.sxw32[:1]
                    sc = " scale=fl(sx*sw)" if np.array_equal(s, s_ref) else f" scale={s.tolist()}"
            notes.append(f"int32 {'/'.join(tags) or 'other:' + str(v.tolist())}{sc} -> {cons}")
        elif a.dtype == np.float32 and flat.size == P.M and bias == "float":
            if np.array_equal(flat, P.bf):
                notes.append(f"float b kept -> {cons}")
            elif np.array_equal(flat, P.sxw32) or np.array_equal(flat, P.sw):
                continue
            else:
                notes.append(f"float {flat.tolist()} -> {cons}")
    return " ".join(ops), "; ".join(notes) or "-"


# ----------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", nargs="+", default=["Conv", "Gemm", "MatMul"], choices=["Conv", "Gemm", "MatMul"])
    ap.add_argument("--opsets", nargs="+", type=int, default=[13, 17, 21])
    ap.add_argument("--wgran", nargs="+", default=["tensor", "channel"], choices=["tensor", "channel"])
    ap.add_argument("--acts", nargs="+", default=["u8", "i8"], choices=["u8", "i8"])
    ap.add_argument("--bias", nargs="+", default=["float", "int32"], choices=["float", "int32"])
    ap.add_argument("--outs", nargs="+", default=["q", "float"], choices=["q", "float"])
    ap.add_argument("--random", type=int, default=2000, help="random inputs per layer")
    ap.add_argument("--targets", type=int, default=100, help="tie-adjacent/disagreement inputs per output channel")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-merge", action="store_true", help="one row per opset and activation type")
    ap.add_argument("--model-dir", help="keep the optimised models here (default: a temporary folder, removed)")
    args = ap.parse_args(argv)

    t0 = time.time()
    tmp = args.model_dir or tempfile.mkdtemp(prefix="ort_probe_")
    os.makedirs(tmp, exist_ok=True)
    rows = []
    qnotes = []
    for op in args.ops:
        for wgran in args.wgran:
            for act in args.acts:
                rng = np.random.default_rng([args.seed, ["Conv", "Gemm", "MatMul"].index(op), len(wgran), len(act)])
                P = Params(op, wgran, act, rng)
                for bias in args.bias:
                    X, n_solved = make_inputs(P, bias, args.random, args.targets, rng)
                    xq_by_opset = {}
                    for opset in args.opsets:
                        xq = session(quantizer_model(P, opset), ort.GraphOptimizationLevel.ORT_DISABLE_ALL, None) \
                            .run(None, {"X": X})[0]
                        xq_by_opset[opset] = xq
                        # side check of ORT's QuantizeLinear against division / reciprocal forms
                        div = np.clip(np.rint((X / P.sx).astype(F32)) + P.zx, P.qmin, P.qmax)
                        rec = np.clip(np.rint((X * (F32(1) / P.sx)).astype(F32)) + P.zx, P.qmin, P.qmax)
                        qnotes.append((op, act, opset, float(np.mean(xq == div)), float(np.mean(xq == rec))))
                    cache = {}
                    for opset in args.opsets:
                        xq = xq_by_opset[opset]
                        key = xq.tobytes()
                        if key not in cache:
                            cache[key] = candidates(P, xq, bias)
                        res, e64, absum = cache[key]
                        for out in args.outs:
                            model = build(P, opset, bias, out)
                            for lname, level in LEVELS:
                                path = os.path.join(tmp, f"{op}_{wgran}_{act}_{bias}_{out}_{opset}_{lname}.onnx")
                                y = session(model, level, path).run(None, {"X": X})[0]
                                ops, bnote = describe(path, P, bias)
                                cells = {}
                                if out == "q":
                                    yq = np.rint(y.astype(np.float64) / np.float64(P.sy)) + P.zy
                                    for f in FORMULAS:
                                        ref = to_layout(P, res[f][0])
                                        cells[f] = float(np.mean(ref == yq))
                                    maxrel = ""
                                else:
                                    for f in FORMULAS:
                                        ref = to_layout(P, res[f][1])
                                        cells[f] = float(np.mean(ref.view(np.uint32) == y.view(np.uint32)))
                                    err = np.abs(y.astype(np.float64) - to_layout(P, e64)) / to_layout(P, absum)
                                    maxrel = f"{err.max():.2e}"
                                rows.append(dict(opset=opset, op=op, wgran=wgran, act=act, bias=bias, out=out,
                                                 level=lname, ops=ops, bnote=bnote, cells=cells, maxrel=maxrel,
                                                 n=y.size, solved=n_solved))
                print(f"[{time.time() - t0:6.1f}s] {op} {wgran} {act}: {P.M} channels, sx={P.sx} sw={P.sw.tolist()} "
                      f"sy={P.sy} b={P.bf.tolist()} bq32={[rhe32(P.bf[c], P.sxw32[c]) for c in range(P.M)]} "
                      f"bq64={P.bq.tolist()}", file=sys.stderr)

    def cell(rs, f):
        miss = [round((1 - r["cells"][f]) * r["n"]) for r in rs]
        if max(miss) == 0:
            return "✓"
        share = min(r["cells"][f] for r in rs)
        return f"{max(miss)}" if share > 0.5 else f"✗{100 * share:.0f}%"

    # merge rows identical up to opset / activation type (ops column compared modulo nothing: must be equal)
    groups: dict = {}
    for r in rows:
        key = (r["op"], r["wgran"], r["bias"], r["out"], r["level"]) if not args.no_merge else \
            (r["op"], r["wgran"], r["bias"], r["out"], r["level"], r["opset"], r["act"])
        sig = (r["ops"], r["bnote"])
        groups.setdefault(key, {}).setdefault(sig, []).append(r)
    print(f"onnxruntime {ort.__version__} (CPUExecutionProvider, 1 thread), onnx {onnx.__version__}, "
          f"numpy {np.__version__}\n")
    hdr = ["op", "w", "bias", "out", "level", "opset/act", "ops run (optimised model)", "bias in optimised model"] \
        + FORMULAS + ["maxrel"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for key, sigs in groups.items():
        for sig, rs in sigs.items():
            r0 = rs[0]
            oa = ",".join(sorted({f"{r['opset']}/{r['act']}" for r in rs}))
            if len(rs) == len(args.opsets) * len(args.acts):
                oa = "all"
            maxrel = max((r["maxrel"] for r in rs), key=lambda s: float(s) if s else 0.0)
            print("| " + " | ".join([r0["op"], r0["wgran"], r0["bias"], r0["out"], r0["level"], oa,
                                     r0["ops"], r0["bnote"]] +
                                    [cell(rs, f) for f in FORMULAS] + [maxrel]) + " |")
    print()
    print("elements compared per row: " + ", ".join(sorted({f"{r['op']} {r['n']}" for r in rows})) +
          f"; targeted inputs solved per layer/bias: {min(r['solved'] for r in rows)}-{max(r['solved'] for r in rows)}")
    qd = min(q[3] for q in qnotes)
    qr = min(q[4] for q in qnotes)
    print(f"ORT QuantizeLinear(X) vs rhe(fl(x/s_x))+z: min match {100 * qd:.3f}%; "
          f"vs rhe(fl(x*fl(1/s_x)))+z: min match {100 * qr:.3f}% "
          f"(over all layers/opsets; 5% of the random inputs' entries are within 2 ulp of a rounding tie)")
    print(f"\n(wall {time.time() - t0:.0f}s)")
    if not args.model_dir:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
