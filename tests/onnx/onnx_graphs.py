"""Hand-built ONNX graphs (onnx.helper) for the import tests."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from onnx_helpers import make_model


def _t(name, arr):
    return nh.from_array(np.asarray(arr), name)


def qcdq_mlp(pow2: bool, seed: int = 0, sizes=(6, 10, 4)):
    """A QCDQ MLP as Brevitas exports it: every tensor goes QuantizeLinear -> Clip -> DequantizeLinear,
    with 4-bit signed activations in int8 containers and narrow-range (symmetric) 4-bit weights that
    are quantized at run time from float initializers; int32 biases at s_x * s_w."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def sc(v):
        return np.float32(2.0 ** np.round(np.log2(v))) if pow2 else np.float32(v)

    def qcdq(x, s, lo, hi, name):
        inits.extend([_t(f"{name}.s", np.float32(s)), _t(f"{name}.z", np.int8(0)),
                      _t(f"{name}.lo", np.int8(lo)), _t(f"{name}.hi", np.int8(hi))])
        nodes.extend([h.make_node("QuantizeLinear", [x, f"{name}.s", f"{name}.z"], [f"{name}.q"], name=f"{name}.Q"),
                      h.make_node("Clip", [f"{name}.q", f"{name}.lo", f"{name}.hi"], [f"{name}.c"], name=f"{name}.C"),
                      h.make_node("DequantizeLinear", [f"{name}.c", f"{name}.s", f"{name}.z"], [f"{name}.d"],
                                  name=f"{name}.DQ")])
        return f"{name}.d"

    s_act = [sc(0.37), sc(0.61), sc(0.29)]
    x = qcdq("x", s_act[0], -8, 7, "in")
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = (rng.standard_normal((b, a)) * 0.3).astype(np.float32)
        sw = sc(float(np.abs(w).max()) / 7)
        inits.append(_t(f"w{i}", w))
        wd = qcdq(f"w{i}", sw, -7, 7, f"w{i}q")
        sb = np.float32(np.float32(s_act[i]) * sw)
        bq = rng.integers(-40, 40, b).astype(np.int32)
        inits.extend([_t(f"b{i}", bq), _t(f"b{i}.s", sb), _t(f"b{i}.z", np.int32(0))])
        nodes.append(h.make_node("DequantizeLinear", [f"b{i}", f"b{i}.s", f"b{i}.z"], [f"b{i}.d"], name=f"b{i}.DQ"))
        nodes.append(h.make_node("Gemm", [x, wd, f"b{i}.d"], [f"y{i}"], transB=1, name=f"fc{i}"))
        x = qcdq(f"y{i}", s_act[i + 1], -8, 7, f"act{i}")
    nodes[-1].output[0] = "out"
    return make_model(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["N", sizes[0]])],
                      [h.make_tensor_value_info("out", T.FLOAT, ["N", sizes[-1]])], inits)


def half_up_naive(scale: float = 1.0, out_scale: float = 2.0 ** -8, seed: int = 0):
    """Input quantizer Mul(1/s) -> Add(0.5) -> Floor -> Clip(0, 255) -> Mul(s_out), then a Gemm with
    power-of-two weights and a final Round-pattern quantizer."""
    rng = np.random.default_rng(seed)
    w = (rng.integers(-64, 64, (3, 5)) / 64.0).astype(np.float32)
    b = (rng.integers(-16, 16, 3) / 16.0).astype(np.float32)
    nodes = [h.make_node("Mul", ["x", "inv_s"], ["v"], name="scale_in"),
             h.make_node("Add", ["v", "half"], ["v2"], name="add_half"),
             h.make_node("Floor", ["v2"], ["r"], name="floor"),
             h.make_node("Clip", ["r", "lo", "hi"], ["c"], name="clip"),
             h.make_node("Mul", ["c", "s_out"], ["xq"], name="scale_out"),
             h.make_node("Gemm", ["xq", "w", "b"], ["y"], transB=1, name="fc"),
             h.make_node("Mul", ["y", "inv_sy"], ["u"], name="act_scale"),
             h.make_node("Clip", ["u", "alo", "ahi"], ["uc"], name="act_clip"),
             h.make_node("Round", ["uc"], ["ur"], name="act_round"),
             h.make_node("Mul", ["ur", "sy"], ["out"], name="act_out")]
    inits = [_t("inv_s", np.float32(1.0 / scale)), _t("half", np.float32(0.5)), _t("lo", np.float32(0)),
             _t("hi", np.float32(255)), _t("s_out", np.float32(out_scale)), _t("w", w), _t("b", b),
             _t("inv_sy", np.float32(16.0)), _t("alo", np.float32(-128)), _t("ahi", np.float32(127)),
             _t("sy", np.float32(1 / 16.0))]
    return make_model(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["N", 5])],
                      [h.make_tensor_value_info("out", T.FLOAT, ["N", 3])], inits)


def normalized_input(mean: float = 0.1307, std: float = 0.3081, scale: float = 0.0123):
    """Sub(mean) -> Div(std) -> QuantizeLinear -> DequantizeLinear: an input quantizer after a float
    normalization (reproduced in float32 by Float32QuantInput)."""
    nodes = [h.make_node("Sub", ["x", "mean"], ["a"], name="sub_mean"),
             h.make_node("Div", ["a", "std"], ["b"], name="div_std"),
             h.make_node("QuantizeLinear", ["b", "s", "z"], ["q"], name="Q"),
             h.make_node("DequantizeLinear", ["q", "s", "z"], ["out"], name="DQ")]
    inits = [_t("mean", np.float32(mean)), _t("std", np.float32(std)), _t("s", np.float32(scale)),
             _t("z", np.int8(3))]
    return make_model(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["N", 3])],
                      [h.make_tensor_value_info("out", T.FLOAT, ["N", 3])], inits)


def requant_flip(s_x: float = 0.0039214, s_w: float = 0.00731, s_y: float = 0.0213, w: int = 119,
                 b: int = 30214):
    """One fused QDQ Gemm (1 -> 1) whose int32 accumulator 255 * w + b = 60559 is requantized by
    onnxruntime to 81.5 in float32 (code 82, ties to even), while the exact value
    60559 * s_x * s_w / s_y = 81.4999978 rounds to 81: the case that needs the float32 tolerance."""
    s_x, s_w, s_y = np.float32(s_x), np.float32(s_w), np.float32(s_y)
    nodes = [h.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"], name="Qx"),
             h.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"], name="DQx"),
             h.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wd"], name="DQw"),
             h.make_node("DequantizeLinear", ["b", "sb", "zb"], ["bd"], name="DQb"),
             h.make_node("Gemm", ["xd", "wd", "bd"], ["y"], transB=1, name="fc"),
             h.make_node("QuantizeLinear", ["y", "sy", "zy"], ["yq"], name="Qy"),
             h.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["out"], name="DQy")]
    inits = [_t("sx", s_x), _t("zx", np.uint8(0)), _t("w", np.array([[w]], np.int8)), _t("sw", s_w),
             _t("zw", np.int8(0)), _t("b", np.array([b], np.int32)), _t("sb", np.float32(s_x * s_w)),
             _t("zb", np.int32(0)), _t("sy", s_y), _t("zy", np.int8(-128))]
    return make_model(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["N", 1])],
                      [h.make_tensor_value_info("out", T.FLOAT, ["N", 1])], inits)
