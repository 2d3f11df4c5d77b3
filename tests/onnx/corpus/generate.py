"""Generator of the quantized-ONNX conformance corpus (tests/onnx/corpus/).

Every fixture is a tiny quantized network (2-6 scalar inputs, 1-2 hidden layers of width 3-8,
2-4 outputs) written by the REAL exporter/quantizer of each dialect, so that a verifier can be
checked against onnxruntime on every input grid point of a small property box.  Rows follow the
issue's table (see README.md); manifest.json lists every file with its row, dialect, tool version,
description, expected verifier outcome and (raw QONNX only) a reference .npz.

Tools it uses, and how to get them WITHOUT touching the project venv
--------------------------------------------------------------------
* torch, onnx, onnxruntime (+ onnxruntime.quantization): the project venv (.venv).
* brevitas, qonnx, onnxscript (also needed by the torch dynamo exporter), onnxoptimizer, and their
  pure-python dependencies, installed into a private --target folder used through PYTHONPATH:

      .venv/bin/pip install --target /tmp/qtools --no-deps brevitas==0.13.4 qonnx==1.0.0 \\
          dependencies==2.0.1 unfoldNd attrs clize sigtools od docutils bitstring bitarray \\
          toposort onnxscript onnx_ir onnxoptimizer "setuptools<81"

* tensorflow + tf2onnx (row 8): a separate venv (the project venv's torch/onnx pins are not
  touched); this script re-invokes itself with that interpreter for the TensorFlow part:

      python3 -m venv /tmp/tf-venv && /tmp/tf-venv/bin/pip install tensorflow-cpu tf2onnx onnxruntime

Regenerate (from the repository root):

      PYTHONPATH=/tmp/qtools CORPUS_TF_PYTHON=/tmp/tf-venv/bin/python \\
          .venv/bin/python tests/onnx/corpus/generate.py

A tool that is not installed is skipped with a printed message (its rows' entries are then left
out of the regenerated manifest).  Seeds are fixed; nothing is trained (random weights, scales and
zero points calibrated on random data wherever the tool calibrates).
"""
from __future__ import annotations

import io
import itertools
import json
import os
import subprocess
import sys
import tempfile
import traceback
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
MAX_BYTES = 50_000
ENTRIES: list[dict] = []
NOTES: list[str] = []          # what could not be produced, and why (printed and stored in notes.json)

warnings.filterwarnings("ignore")


def note(msg: str) -> None:
    msg = msg.replace(str(HERE) + "/", "")
    print("NOTE:", msg)
    NOTES.append(msg)


# ----------------------------------------------------------------------------------------------
# common helpers
# ----------------------------------------------------------------------------------------------
_NP_OF_ORT = {"tensor(float)": np.float32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
              "tensor(int16)": np.int16, "tensor(uint16)": np.uint16, "tensor(double)": np.float64}


def ort_feed(sess, rng):
    feed = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        dt = _NP_OF_ORT[i.type]
        if np.issubdtype(dt, np.integer):
            info = np.iinfo(dt)
            feed[i.name] = rng.integers(info.min, info.max + 1, size=shape).astype(dt)
        else:
            feed[i.name] = rng.uniform(-1.0, 1.0, size=shape).astype(dt)
    return feed


def ort_check(path: Path) -> None:
    """Loads and runs the file twice in onnxruntime CPU on the same random inputs (determinism)."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feed = ort_feed(sess, np.random.default_rng(0))
    a = sess.run(None, feed)
    b = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feed)
    for u, v in zip(a, b):
        assert np.array_equal(u, v), f"{path.name}: onnxruntime is not deterministic"


def input_elems(model: onnx.ModelProto) -> int:
    inits = {i.name for i in model.graph.initializer}
    n = 0
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim]
        n += int(np.prod(dims)) if dims else 1
    return n


def strip_debug_metadata(path: Path) -> bool:
    """The torch dynamo exporter (also behind brevitas' exports) attaches metadata_props to nodes, values
    and the graph (stack traces with local paths, fx node text, class hierarchy): most of a tiny file and
    machine dependent.  They carry no semantics; drop them (and nothing else).  It also writes an (empty
    here) external-data file <name>.onnx.data: the model is re-saved with every tensor inline and that file
    removed.  Returns whether anything changed."""
    model = onnx.load(str(path))                              # loads external data too, if any
    changed = False
    protos = list(model.graph.node) + list(model.graph.value_info) + list(model.graph.initializer) + \
        list(model.graph.input) + list(model.graph.output) + [model.graph, model]
    for p in protos:
        if len(p.metadata_props):
            del p.metadata_props[:]
            changed = True
    data = path.with_name(path.name + ".data")
    if data.exists():
        for init in model.graph.initializer:
            if init.data_location == TensorProto.EXTERNAL:
                raise RuntimeError(f"{path.name}: unexpected external tensor {init.name}")
        changed = True
    if changed:
        onnx.save(model, str(path))
        if data.exists():
            data.unlink()
    return changed


#: fixtures qa-lirpa refuses on purpose, each with its one-line reason (checked by the conformance test)
REFUSED_ON_PURPOSE = {
    "r7_brevitas_conv_trunc_avgpool_qonnx.onnx": "QONNX Trunc is not supported",
    "r8_tflite_int8_io_conv.onnx": "integer graph inputs (VNN-LIB boxes are real-valued)",
    "r8_tflite_int8_io_mlp.onnx": "integer graph inputs (VNN-LIB boxes are real-valued)",
}


def finish(path: Path, row: int, dialect: str, tool: str, description: str, *, expect: str = "verify",
           reference: str | None = None, run_ort: bool = True) -> None:
    """Checks a written fixture and records its manifest entry."""
    if strip_debug_metadata(path):
        description += " [exporter debug metadata_props stripped]"
    model = onnx.load(str(path))
    size = path.stat().st_size
    assert size < MAX_BYTES, f"{path.name} is {size} bytes"
    n_in = input_elems(model)
    assert 2 <= n_in <= 6, f"{path.name}: {n_in} input elements"
    try:
        onnx.checker.check_model(model)
    except Exception as e:                                   # noqa: BLE001
        description += f" [onnx.checker.check_model fails: {str(e).splitlines()[0][:160]}]"
    if run_ort:
        ort_check(path)
    domains = sorted({n.domain for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    ops = sorted({n.op_type for n in model.graph.node})
    print(f"  row {row:2d} {path.name:48s} {size:6d} B  ops={','.join(ops)}"
          + (f" domains={','.join(domains)}" if domains else ""))
    if path.name in REFUSED_ON_PURPOSE:
        expect = "refuse"
        description += f" [refused by qa-lirpa: {REFUSED_ON_PURPOSE[path.name]}]"
    ENTRIES.append({"file": path.name, "row": row, "dialect": dialect, "tool": tool,
                    "description": description, "expect": expect, "reference": reference})


def short_err(e: BaseException) -> str:
    """The informative line of an exception (torch.export errors put it under 'Exception summary')."""
    text = str(e).replace("\x1b[96m", "").replace("\x1b[0m", "")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if "## Exception summary" in lines:
        i = lines.index("## Exception summary")
        lines = lines[i + 1:i + 2]
    return f"{type(e).__name__}: {lines[0][:300] if lines else ''}"


def run_step(label: str, fn, *args, **kwargs) -> bool:
    """Runs one fixture's production; a failure is recorded, never fatal to the whole corpus."""
    try:
        buf_out, buf_err = io.StringIO(), io.StringIO()
        with redirect_stdout(buf_out), redirect_stderr(buf_err):
            fn(*args, **kwargs)
        for line in buf_out.getvalue().splitlines():
            if line.startswith("  row") or line.startswith("NOTE:"):
                print(line)
        return True
    except Exception as e:                                   # noqa: BLE001
        msg = f"{label}: FAILED {short_err(e)}"
        note(msg)
        if os.environ.get("CORPUS_DEBUG"):
            traceback.print_exc()
        return False


def make_model(nodes, inputs, outputs, inits, opset=13, extra_opsets=(), ir_version=8, name="g"):
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    ops = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    m = helper.make_model(graph, opset_imports=ops, producer_name="qa-lirpa corpus generate.py")
    m.ir_version = ir_version
    return m


def t(name, arr, dtype=None):
    arr = np.asarray(arr)
    if dtype is not None:
        arr = arr.astype(dtype)
    return numpy_helper.from_array(arr, name)


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def ver(mod_name: str) -> str | None:
    try:
        mod = __import__(mod_name)
        return getattr(mod, "__version__", "?")
    except Exception:                                        # noqa: BLE001
        return None


# ----------------------------------------------------------------------------------------------
# float reference models (rows 3, 4, 9, 10 quantize these with onnxruntime.quantization)
# ----------------------------------------------------------------------------------------------
def float_mlp(kind: str, seed: int, n_in=4, hidden=6, n_out=3, relu=True, opset=13, rank1=False):
    """kind: 'matmul_add' (MatMul + Add bias) or 'gemm'."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.6, (n_in, hidden)).astype(np.float32)
    b1 = rng.normal(0, 0.2, (hidden,)).astype(np.float32)
    w2 = rng.normal(0, 0.6, (hidden, n_out)).astype(np.float32)
    b2 = rng.normal(0, 0.2, (n_out,)).astype(np.float32)
    nodes, inits = [], []
    if kind == "matmul_add":
        nodes += [helper.make_node("MatMul", ["x", "W1"], ["mm1"]), helper.make_node("Add", ["mm1", "B1"], ["h1"])]
        inits += [t("W1", w1), t("B1", b1)]
    else:
        nodes += [helper.make_node("Gemm", ["x", "W1t", "B1"], ["h1"], transB=1)]
        inits += [t("W1t", w1.T.copy()), t("B1", b1)]
    hin = "h1"
    if relu:
        nodes.append(helper.make_node("Relu", ["h1"], ["r1"]))
        hin = "r1"
    if kind == "matmul_add":
        nodes += [helper.make_node("MatMul", [hin, "W2"], ["mm2"]), helper.make_node("Add", ["mm2", "B2"], ["y"])]
        inits += [t("W2", w2), t("B2", b2)]
    else:
        nodes += [helper.make_node("Gemm", [hin, "W2t", "B2"], ["y"], transB=1)]
        inits += [t("W2t", w2.T.copy()), t("B2", b2)]
    xs = [n_in] if rank1 else [1, n_in]
    ys = [n_out] if rank1 else [1, n_out]
    return make_model(nodes, [vi("x", TensorProto.FLOAT, xs)], [vi("y", TensorProto.FLOAT, ys)], inits,
                      opset=opset, ir_version=10 if opset >= 21 else 8)


def float_conv(seed: int, relu=True, opset=13):
    """x [1,1,2,3] -> Conv 3x(2x2) -> [1,3,1,2] -> Relu -> Flatten (6) -> Gemm -> 3 outputs."""
    rng = np.random.default_rng(seed)
    wc = rng.normal(0, 0.6, (3, 1, 2, 2)).astype(np.float32)
    bc = rng.normal(0, 0.2, (3,)).astype(np.float32)
    w2 = rng.normal(0, 0.6, (3, 6)).astype(np.float32)
    b2 = rng.normal(0, 0.2, (3,)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "Wc", "Bc"], ["c"], kernel_shape=[2, 2])]
    hin = "c"
    if relu:
        nodes.append(helper.make_node("Relu", ["c"], ["r"]))
        hin = "r"
    nodes += [helper.make_node("Flatten", [hin], ["f"], axis=1),
              helper.make_node("Gemm", ["f", "W2", "B2"], ["y"], transB=1)]
    return make_model(nodes, [vi("x", TensorProto.FLOAT, [1, 1, 2, 3])], [vi("y", TensorProto.FLOAT, [1, 3])],
                      [t("Wc", wc), t("Bc", bc), t("W2", w2), t("B2", b2)], opset=opset,
                      ir_version=10 if opset >= 21 else 8)


class _Reader:
    """onnxruntime.quantization CalibrationDataReader over fixed random data."""

    def __init__(self, model: onnx.ModelProto, seed: int, n: int = 64):
        vi0 = model.graph.input[0]
        shape = [d.dim_value if d.dim_value > 0 else 1 for d in vi0.type.tensor_type.shape.dim]
        rng = np.random.default_rng(seed)
        self.data = [{vi0.name: rng.uniform(-1, 1, size=shape).astype(np.float32)} for _ in range(n)]
        self.it = iter(self.data)

    def get_next(self):
        return next(self.it, None)

    def rewind(self):
        self.it = iter(self.data)


def ort_quantize_static(fmodel: onnx.ModelProto, out: Path, seed: int, **kw) -> None:
    from onnxruntime.quantization import quantize_static
    with tempfile.TemporaryDirectory() as d:
        fpath = Path(d) / "float.onnx"
        onnx.save(fmodel, str(fpath))
        quantize_static(str(fpath), str(out), _Reader(fmodel, seed), **kw)


def ort_tool() -> str:
    import onnxruntime
    return f"onnxruntime.quantization {onnxruntime.__version__}"


# ----------------------------------------------------------------------------------------------
# Rows 1 and 2: torch.ao.quantization eager mode (QAT fake quant, and convert()ed int8 modules)
# ----------------------------------------------------------------------------------------------
def _torch_models():
    import torch.ao.quantization as tq
    import torch.nn as nn

    class Lin(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
            self.fc1, self.relu, self.fc2 = nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)

        def forward(self, x):
            return self.dequant(self.fc2(self.relu(self.fc1(self.quant(x)))))

    class LinFused(Lin):
        fuse = [["fc1", "relu"]]

    class Conv(nn.Module):
        fuse = [["conv", "relu"]]

        def __init__(self):
            super().__init__()
            self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
            self.conv, self.relu = nn.Conv2d(1, 3, 2), nn.ReLU()
            self.flat, self.fc = nn.Flatten(), nn.Linear(6, 3)

        def forward(self, x):
            return self.dequant(self.fc(self.flat(self.relu(self.conv(self.quant(x))))))

    return Lin, LinFused, Conv


def _int8_act_qconfig():
    import torch
    import torch.ao.quantization as tq
    act = tq.FakeQuantize.with_args(observer=tq.MovingAverageMinMaxObserver, quant_min=-128, quant_max=127,
                                    dtype=torch.qint8, qscheme=torch.per_tensor_affine, reduce_range=False)
    return tq.QConfig(activation=act, weight=tq.default_per_channel_weight_fake_quant)


def _qat_prepare(cls, qconfig, seed, backend=None):
    import torch
    import torch.ao.quantization as tq
    torch.manual_seed(seed)
    m = cls()
    if getattr(cls, "fuse", None):
        m.eval()
        m = tq.fuse_modules_qat(m.train(), cls.fuse)
    m.train()
    m.qconfig = qconfig
    tq.prepare_qat(m, inplace=True)
    shape = (32, 1, 2, 3) if "Conv" in cls.__name__ else (32, 4)
    with torch.no_grad():
        for _ in range(20):                                   # calibrate the observers (no training)
            m(torch.randn(*shape))
    m.apply(tq.disable_observer)
    m.eval()
    return m


def rows_1_2():
    try:
        import torch
        import torch.ao.quantization as tq
    except ImportError:
        print("SKIP rows 1-2: torch is not installed")
        return
    tool_ts = f"torch {torch.__version__} torch.onnx.export(dynamo=False)"
    tool_dyn = f"torch {torch.__version__} torch.onnx.export(dynamo=True)"
    Lin, LinFused, Conv = _torch_models()
    cases = [
        ("r1_qat_linear_fbgemm_perchannel", Lin, lambda: tq.get_default_qat_qconfig("fbgemm", version=0), "fbgemm",
         "QAT Linear(4,6)-ReLU-Linear(6,3), qconfig fbgemm version=0: weights qint8 per-channel symmetric, "
         "activations quint8 with reduce_range (codes 0..127 -> exporter adds Clip after QuantizeLinear), "
         "ReLU not fused (activation quantized before the ReLU)"),
        ("r1_qat_linear_qnnpack_pertensor", Lin, lambda: tq.get_default_qat_qconfig("qnnpack", version=0), "qnnpack",
         "QAT Linear(4,6)-ReLU-Linear(6,3), qconfig qnnpack version=0: weights qint8 per-tensor symmetric, "
         "activations quint8 0..255, ReLU not fused"),
        ("r1_qat_linear_fused_int8act", LinFused, _int8_act_qconfig, "fbgemm",
         "QAT LinearReLU fused (fuse_modules_qat) + Linear, custom qconfig: activations qint8 per-tensor affine "
         "-128..127, weights qint8 per-channel symmetric"),
        ("r1_qat_conv_fused_qnnpack", Conv, lambda: tq.get_default_qat_qconfig("qnnpack", version=0), "qnnpack",
         "QAT ConvReLU2d fused (1->3 ch, 2x2 kernel on 1x1x2x3 input) + Flatten + Linear(6,3), qnnpack version=0: "
         "weights qint8 per-tensor symmetric, activations quint8"),
        ("r1_qat_conv_fbgemm_perchannel", Conv, lambda: tq.get_default_qat_qconfig("fbgemm", version=0), "fbgemm",
         "QAT ConvReLU2d fused + Flatten + Linear(6,3), fbgemm version=0: weights per-channel, activations quint8 "
         "reduce_range (Clip 0..127)"),
    ]
    for name, cls, qc, backend, desc in cases:
        x = torch.rand(1, 1, 2, 3) if cls is Conv else torch.rand(1, 4)

        def qat_ts():
            m = _qat_prepare(cls, qc(), seed=len(name))
            p = HERE / f"{name}.onnx"
            torch.onnx.export(m, (x,), str(p), dynamo=False, opset_version=13, input_names=["x"],
                              output_names=["y"])
            finish(p, 1, "torch-qat-qdq", tool_ts, desc + "; TorchScript exporter, opset 13")
        run_step(f"row1 {name} (TorchScript exporter)", qat_ts)

        def qat_dyn():
            m = _qat_prepare(cls, qc(), seed=len(name))
            p = HERE / f"{name}_dynamo.onnx"
            prog = torch.onnx.export(m, (x,), dynamo=True, opset_version=18, input_names=["x"], output_names=["y"])
            prog.save(str(p))
            finish(p, 1, "torch-qat-dynamo", tool_dyn, desc + "; dynamo exporter")
        if cls is Lin and backend == "fbgemm":                 # one representative dynamo attempt per model kind
            run_step(f"row1 {name} (dynamo exporter)", qat_dyn)
        if cls is Conv and backend == "qnnpack":
            run_step(f"row1 {name} (dynamo exporter)", qat_dyn)

        def converted():
            engines = torch.backends.quantized.supported_engines
            old = torch.backends.quantized.engine
            if backend in engines:
                torch.backends.quantized.engine = backend
            try:
                m = _qat_prepare(cls, qc(), seed=len(name))
                mc = tq.convert(m.eval())
                p = HERE / f"{name.replace('r1_qat', 'r2_int8')}.onnx"
                torch.onnx.export(mc, (x,), str(p), dynamo=False, opset_version=13, input_names=["x"],
                                  output_names=["y"])
            finally:
                torch.backends.quantized.engine = old
            finish(p, 2, "torch-converted-qdq", tool_ts,
                   "torch.ao convert()ed int8 modules of: " + desc + f"; quantized engine {backend}; TorchScript "
                   "exporter, opset 13 (QuantizeLinear -> no-op Cast -> DequantizeLinear; weights as int8 "
                   "Constant+DequantizeLinear; bias DequantizeLinear of int32 with ConstantOfShape zero point)")
        run_step(f"row2 {name} convert()", converted)

    # dynamo exporter on the default (version=1) QAT qconfig: FusedMovingAvgObsFakeQuantize has no
    # data-dependent Python branch, so torch.export succeeds, but the ONNX translation may not
    def qat_dyn_v1():
        m = _qat_prepare(Lin, tq.get_default_qat_qconfig("fbgemm"), seed=4)
        p = HERE / "r1_qat_linear_fbgemm_v1_dynamo.onnx"
        prog = torch.onnx.export(m, (torch.rand(1, 4),), dynamo=True, input_names=["x"], output_names=["y"])
        prog.save(str(p))
        finish(p, 1, "torch-qat-dynamo", tool_dyn, "QAT Linear MLP, default fbgemm qconfig (version=1, "
               "FusedMovingAvgObsFakeQuantize), dynamo exporter")
    run_step("row1 QAT Linear, version=1 qconfig (dynamo exporter)", qat_dyn_v1)

    # dynamo exporter on a convert()ed model (the closest thing to a 'dynamo row 2')
    def converted_dyn():
        m = _qat_prepare(Lin, tq.get_default_qat_qconfig("fbgemm", version=0), seed=3)
        mc = tq.convert(m.eval())
        p = HERE / "r2_int8_linear_dynamo.onnx"
        prog = torch.onnx.export(mc, (torch.rand(1, 4),), dynamo=True, input_names=["x"], output_names=["y"])
        prog.save(str(p))
        finish(p, 2, "torch-converted-dynamo", tool_dyn, "convert()ed int8 Linear model, dynamo exporter")
    run_step("row2 convert()ed Linear (dynamo exporter)", converted_dyn)


# ----------------------------------------------------------------------------------------------
# Rows 3, 4, 9, 10: onnxruntime.quantization
# ----------------------------------------------------------------------------------------------
def rows_ort():
    try:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic
    except ImportError:
        print("SKIP rows 3, 4, 9, 10: onnxruntime.quantization is not installed")
        return
    tool = ort_tool()
    U8, S8 = QuantType.QUInt8, QuantType.QInt8

    def q(name, row, dialect, fmodel, seed, desc, **kw):
        def go():
            p = HERE / f"{name}.onnx"
            ort_quantize_static(fmodel, p, seed, **kw)
            finish(p, row, dialect, tool, desc)
        run_step(f"row{row} {name}", go)

    # row 3: QDQ
    q("r3_qdq_matmul_add_u8_pertensor", 3, "ort-qdq", float_mlp("matmul_add", 31), 31,
      "quantize_static QDQ on MatMul+Add+Relu+MatMul+Add (4-6-3): activations QUInt8, weights QInt8 per-tensor; "
      "the bias Add gets its own Q/DQ (int8 quantized bias initializer)",
      quant_format=QuantFormat.QDQ, activation_type=U8, weight_type=S8, per_channel=False)
    q("r3_qdq_matmul_add_s8_perchannel", 3, "ort-qdq", float_mlp("matmul_add", 32), 32,
      "quantize_static QDQ on MatMul+Add MLP (4-6-3, Relu): activations QInt8, weights QInt8 per-channel (axis 1)",
      quant_format=QuantFormat.QDQ, activation_type=S8, weight_type=S8, per_channel=True)
    q("r3_qdq_gemm_u8_reduce_range", 3, "ort-qdq", float_mlp("gemm", 33), 33,
      "quantize_static QDQ on Gemm+Relu+Gemm (4-6-3): activations QUInt8, weights QUInt8 per-tensor with "
      "reduce_range (7-bit weights), bias int32 DequantizeLinear",
      quant_format=QuantFormat.QDQ, activation_type=U8, weight_type=U8, per_channel=False, reduce_range=True)
    q("r3_qdq_gemm_s8_perchannel_norelu", 3, "ort-qdq", float_mlp("gemm", 34, relu=False, hidden=5, n_out=2), 34,
      "quantize_static QDQ on Gemm+Gemm without ReLU (4-5-2): activations QInt8, weights QInt8 per-channel, "
      "bias int32", quant_format=QuantFormat.QDQ, activation_type=S8, weight_type=S8, per_channel=True)
    q("r3_qdq_conv_u8_perchannel", 3, "ort-qdq", float_conv(35), 35,
      "quantize_static QDQ on Conv(1->3, 2x2)+Relu+Flatten+Gemm, input 1x1x2x3: activations QUInt8, weights QInt8 "
      "per-channel, bias int32", quant_format=QuantFormat.QDQ, activation_type=U8, weight_type=S8, per_channel=True)
    q("r3_qdq_conv_s8_reduce_range", 3, "ort-qdq", float_conv(36), 36,
      "quantize_static QDQ on Conv+Relu+Flatten+Gemm: activations QInt8, weights QInt8 per-tensor reduce_range",
      quant_format=QuantFormat.QDQ, activation_type=S8, weight_type=S8, per_channel=False, reduce_range=True)

    # row 4: QOperator
    q("r4_qop_matmul_add_u8", 4, "ort-qoperator", float_mlp("matmul_add", 41), 41,
      "quantize_static QOperator on MatMul+Add+Relu MLP (4-6-3): QLinearMatMul + QLinearAdd (com.microsoft), "
      "activations QUInt8, weights QInt8 per-tensor, QuantizeLinear/DequantizeLinear at the boundary",
      quant_format=QuantFormat.QOperator, activation_type=U8, weight_type=S8, per_channel=False)
    q("r4_qop_matmul_add_s8_perchannel", 4, "ort-qoperator", float_mlp("matmul_add", 42, hidden=5), 42,
      "quantize_static QOperator on MatMul+Add+Relu MLP (4-5-3): activations QInt8, weights QInt8 per-channel",
      quant_format=QuantFormat.QOperator, activation_type=S8, weight_type=S8, per_channel=True)
    q("r4_qop_gemm_u8", 4, "ort-qoperator", float_mlp("gemm", 43), 43,
      "quantize_static QOperator on Gemm+Relu+Gemm (4-6-3): QGemm (com.microsoft) with int32 bias, activations "
      "QUInt8, weights QInt8 per-tensor", quant_format=QuantFormat.QOperator, activation_type=U8, weight_type=S8,
      per_channel=False)
    q("r4_qop_gemm_s8_perchannel", 4, "ort-qoperator", float_mlp("gemm", 44, n_out=4), 44,
      "quantize_static QOperator on Gemm+Relu+Gemm (4-6-4): QGemm, activations QInt8, weights QInt8 per-channel",
      quant_format=QuantFormat.QOperator, activation_type=S8, weight_type=S8, per_channel=True)
    q("r4_qop_conv_u8_perchannel", 4, "ort-qoperator", float_conv(45), 45,
      "quantize_static QOperator on Conv+Relu+Flatten+Gemm: QLinearConv (int32 bias) + QGemm, activations "
      "QUInt8, weights QInt8 per-channel", quant_format=QuantFormat.QOperator, activation_type=U8,
      weight_type=S8, per_channel=True)

    # row 9: odds and ends produced by onnxruntime.quantization
    q("r9_qdq_int4_weights", 9, "ort-qdq-int4", float_mlp("matmul_add", 91, opset=21), 91,
      "quantize_static QDQ, opset 21, weight_type=QInt4 (INT4 weight initializers + DequantizeLinear), "
      "activations QUInt8, per-tensor", quant_format=QuantFormat.QDQ, activation_type=U8,
      weight_type=QuantType.QInt4, per_channel=False)
    q("r9_qdq_int4_weights_gemm_perchannel", 9, "ort-qdq-int4", float_mlp("gemm", 92, opset=21), 92,
      "quantize_static QDQ, opset 21, Gemm, weight_type=QInt4 per-channel, activations QInt8",
      quant_format=QuantFormat.QDQ, activation_type=S8, weight_type=QuantType.QInt4, per_channel=True)
    q("r9_qdq_contrib_u8", 9, "ort-qdq-msdomain", float_mlp("matmul_add", 93), 93,
      "quantize_static QDQ with extra_options UseQDQContribOps=True: QuantizeLinear/DequantizeLinear in domain "
      "com.microsoft, activations QUInt8, weights QInt8", quant_format=QuantFormat.QDQ, activation_type=U8,
      weight_type=S8, extra_options={"UseQDQContribOps": True})
    q("r9_qdq_contrib_int16_act", 9, "ort-qdq-msdomain-int16", float_mlp("gemm", 94), 94,
      "quantize_static QDQ, opset 13, activation_type=QInt16 (needs the com.microsoft Q/DQ ops), weights QInt8",
      quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt16, weight_type=S8,
      extra_options={"UseQDQContribOps": True})
    q("r9_qdq_int16_act_opset21", 9, "ort-qdq-int16", float_mlp("matmul_add", 95, opset=21), 95,
      "quantize_static QDQ, opset 21 standard-domain QuantizeLinear with INT16 activations (QInt16), weights "
      "QInt8 per-channel", quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt16, weight_type=S8,
      per_channel=True)
    q("r9_qdq_rank1_input", 9, "ort-qdq", float_mlp("matmul_add", 96, rank1=True), 96,
      "quantize_static QDQ on a MatMul+Add MLP whose input has rank 1 (shape [4], no batch dim), output [3]",
      quant_format=QuantFormat.QDQ, activation_type=U8, weight_type=S8)

    # row 10: quantize_dynamic (DynamicQuantizeLinear + MatMulInteger): not a fixed quantized network
    def dyn(name, fmodel, desc, **kw):
        def go():
            p = HERE / f"{name}.onnx"
            with tempfile.TemporaryDirectory() as d:
                fp = Path(d) / "f.onnx"
                onnx.save(fmodel, str(fp))
                quantize_dynamic(str(fp), str(p), **kw)
            finish(p, 10, "ort-dynamic", tool, desc, expect="refuse")
        run_step(f"row10 {name}", go)
    dyn("r10_dynamic_matmul_u8", float_mlp("matmul_add", 101),
        "quantize_dynamic on MatMul+Add MLP: DynamicQuantizeLinear (input-dependent scale) + MatMulInteger, "
        "weights QUInt8", weight_type=QuantType.QUInt8)
    dyn("r10_dynamic_matmul_s8_perchannel", float_mlp("matmul_add", 102),
        "quantize_dynamic on MatMul+Add MLP, weights QInt8 per-channel", weight_type=S8, per_channel=True)
    dyn("r10_dynamic_gemm", float_mlp("gemm", 103),
        "quantize_dynamic on Gemm MLP (Gemm is converted to MatMulInteger via DynamicQuantizeLinear)",
        weight_type=S8)
    dyn("r10_dynamic_conv", float_conv(104),
        "quantize_dynamic on Conv+Gemm: ConvInteger/MatMulInteger fed by DynamicQuantizeLinear",
        weight_type=QuantType.QUInt8, op_types_to_quantize=["Conv", "MatMul", "Gemm"])


# ----------------------------------------------------------------------------------------------
# Row 5: hand-written MatMulInteger / ConvInteger graphs with explicit requantization
# ----------------------------------------------------------------------------------------------
def _calib_scale(values, bits=8, signed=False):
    lo, hi = float(min(values.min(), 0.0)), float(max(values.max(), 0.0))
    if signed:
        return max(abs(lo), abs(hi)) / (2 ** (bits - 1) - 1), 0
    s = (hi - lo) / (2 ** bits - 1)
    return s, int(np.clip(round(-lo / s), 0, 2 ** bits - 1))


def row_5():
    tool = f"onnx.helper (onnx {onnx.__version__}), hand-written"

    def mlp_integer(name, seed, act_signed, per_channel, rounding, sizes, desc, out_dequant=False):
        rng = np.random.default_rng(seed)
        n_in = sizes[0]
        adt, anp, aqmin, aqmax = ((TensorProto.INT8, np.int8, -128, 127) if act_signed
                                  else (TensorProto.UINT8, np.uint8, 0, 255))
        x_cal = rng.uniform(-1, 1, (256, n_in)).astype(np.float32)
        s_in, zp_in = _calib_scale(x_cal, signed=act_signed)
        nodes = [helper.make_node("QuantizeLinear", ["x", "s_in", "zp_in"], ["q0"])]
        inits = [t("s_in", np.float32(s_in)), t("zp_in", np.array(zp_in, dtype=anp))]
        cur, cur_s, cur_zp = "q0", s_in, zp_in
        h_float = x_cal.astype(np.float64)
        for li, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            last = li == len(sizes) - 2
            w = rng.normal(0, 0.6, (a, b))
            bias = rng.normal(0, 0.2, (b,))
            sw = (np.abs(w).max(axis=0) if per_channel else np.full(b, np.abs(w).max())) / 127.0
            wq = np.clip(np.round(w / sw), -127, 127).astype(np.int8)
            bq = np.round(bias / (cur_s * sw)).astype(np.int32)
            p = f"l{li}"
            nodes += [helper.make_node("MatMulInteger", [cur, f"{p}_W", f"{p}_azp", f"{p}_bzp"], [f"{p}_acc"]),
                      helper.make_node("Add", [f"{p}_acc", f"{p}_B"], [f"{p}_accb"]),
                      helper.make_node("Cast", [f"{p}_accb"], [f"{p}_f"], to=TensorProto.FLOAT)]
            inits += [t(f"{p}_W", wq), t(f"{p}_azp", np.array(cur_zp, dtype=anp)), t(f"{p}_bzp", np.array(0, np.int8)),
                      t(f"{p}_B", bq)]
            acc_scale = (cur_s * sw).astype(np.float32)
            h_float = (h_float @ (wq * sw) + bq * cur_s * sw)
            if last:
                if out_dequant:
                    # accumulator -> float via Mul by the per-column scale, then Q/DQ at the boundary
                    ys, yzp = _calib_scale(h_float, signed=act_signed)
                    nodes += [helper.make_node("Mul", [f"{p}_f", f"{p}_M"], ["yf"]),
                              helper.make_node("QuantizeLinear", ["yf", "s_y", "zp_y"], ["yq"]),
                              helper.make_node("DequantizeLinear", ["yq", "s_y", "zp_y"], ["y"])]
                    inits += [t(f"{p}_M", acc_scale), t("s_y", np.float32(ys)), t("zp_y", np.array(yzp, dtype=anp))]
                else:
                    nodes.append(helper.make_node("Mul", [f"{p}_f", f"{p}_M"], ["y"]))
                    inits.append(t(f"{p}_M", acc_scale))
                break
            h_float = np.maximum(h_float, 0.0)                # ReLU realised by the clip at the zero point
            s_h, zp_h = _calib_scale(h_float, signed=act_signed)
            if act_signed:
                zp_h = 0
            mult = (acc_scale / np.float32(s_h)).astype(np.float32)
            nodes += [helper.make_node("Mul", [f"{p}_f", f"{p}_M"], [f"{p}_m"]),
                      helper.make_node(rounding, [f"{p}_m"], [f"{p}_r"]),
                      helper.make_node("Add", [f"{p}_r", f"{p}_zpf"], [f"{p}_z"]),
                      helper.make_node("Clip", [f"{p}_z", f"{p}_lo", f"{p}_hi"], [f"{p}_c"]),
                      helper.make_node("Cast", [f"{p}_c"], [f"{p}_q"], to=adt)]
            inits += [t(f"{p}_M", mult if per_channel else np.float32(mult[0])), t(f"{p}_zpf", np.float32(zp_h)),
                      t(f"{p}_lo", np.float32(zp_h)), t(f"{p}_hi", np.float32(aqmax))]
            h_float = np.clip(np.floor(h_float / s_h + 0.5) + zp_h, zp_h, aqmax) - zp_h
            h_float = h_float * s_h
            cur, cur_s, cur_zp = f"{p}_q", s_h, zp_h
        m = make_model(nodes, [vi("x", TensorProto.FLOAT, [1, n_in])], [vi("y", TensorProto.FLOAT, [1, sizes[-1]])],
                       inits, opset=13)
        pth = HERE / f"{name}.onnx"
        onnx.save(m, str(pth))
        finish(pth, 5, "matmulinteger-requant", tool, desc)

    run_step("row5 u8 round", mlp_integer, "r5_matmulinteger_u8_round", 51, False, False, "Round", [4, 6, 3],
             "float -> QuantizeLinear(uint8, zp) -> MatMulInteger(uint8 x int8, a_zero_point) -> Add int32 bias -> "
             "Cast float -> Mul(per-tensor multiplier) -> Round -> Add zp -> Clip(zp,255) (= ReLU) -> Cast uint8 -> "
             "MatMulInteger -> Add -> Cast -> Mul(scale) output")
    run_step("row5 s8 floor perchannel", mlp_integer, "r5_matmulinteger_s8_floor_perchannel", 52, True, True,
             "Floor", [4, 5, 3], "int8 activations (QuantizeLinear int8, zp 0), MatMulInteger int8 x int8, per-channel "
             "weight scales realised by Mul with a vector multiplier, requantization by Floor, Clip(0,127), Cast int8")
    run_step("row5 u8 two hidden", mlp_integer, "r5_matmulinteger_u8_2hidden_dq_out", 53, False, True, "Round",
             [3, 6, 4, 2], "two hidden layers (3-6-4-2), uint8 activations with zero points, per-channel multipliers, "
             "Round requantization; output accumulator Mul(scale) then QuantizeLinear/DequantizeLinear at the boundary",
             out_dequant=True)

    def conv_integer():
        rng = np.random.default_rng(54)
        x_cal = rng.uniform(0, 1, (256, 1, 2, 3)).astype(np.float32)
        s_in, zp_in = _calib_scale(x_cal)
        wc = rng.normal(0, 0.6, (3, 1, 2, 2))
        swc = np.abs(wc).max() / 127.0
        wq = (np.clip(np.round(wc / swc), -127, 127) + 128).astype(np.uint8)     # uint8 weights, zero point 128
        bc = np.round(rng.normal(0, 0.2, (3,)) / (s_in * swc)).astype(np.int32).reshape(1, 3, 1, 1)
        # calibrate the hidden scale on a float simulation of conv (2 output positions)
        wf = (wq.astype(np.float64) - 128) * swc
        h = np.stack([np.einsum("nhw,ohw->no", x_cal[:, 0, :, j:j + 2], wf[:, 0]) for j in range(2)], -1)
        h = np.maximum(h + bc.reshape(1, 3, 1) * s_in * swc, 0).reshape(256, 6)
        s_h, _ = _calib_scale(h)
        w2 = rng.normal(0, 0.6, (6, 3))
        sw2 = np.abs(w2).max() / 127.0
        w2q = np.clip(np.round(w2 / sw2), -127, 127).astype(np.int8)
        b2 = np.round(rng.normal(0, 0.2, (3,)) / (s_h * sw2)).astype(np.int32)
        nodes = [helper.make_node("QuantizeLinear", ["x", "s_in", "zp_in"], ["xq"]),
                 helper.make_node("ConvInteger", ["xq", "Wc", "xzp", "wzp"], ["cacc"], kernel_shape=[2, 2]),
                 helper.make_node("Add", ["cacc", "Bc"], ["caccb"]),
                 helper.make_node("Cast", ["caccb"], ["cf"], to=TensorProto.FLOAT),
                 helper.make_node("Mul", ["cf", "M1"], ["cm"]),
                 helper.make_node("Round", ["cm"], ["cr"]),
                 helper.make_node("Clip", ["cr", "lo", "hi"], ["cc"]),
                 helper.make_node("Cast", ["cc"], ["cq"], to=TensorProto.UINT8),
                 helper.make_node("Reshape", ["cq", "shape"], ["fq"]),
                 helper.make_node("MatMulInteger", ["fq", "W2", "hzp", "w2zp"], ["acc2"]),
                 helper.make_node("Add", ["acc2", "B2"], ["acc2b"]),
                 helper.make_node("Cast", ["acc2b"], ["f2"], to=TensorProto.FLOAT),
                 helper.make_node("Mul", ["f2", "M2"], ["y"])]
        inits = [t("s_in", np.float32(s_in)), t("zp_in", np.array(zp_in, np.uint8)), t("Wc", wq),
                 t("xzp", np.array(zp_in, np.uint8)), t("wzp", np.array(128, np.uint8)), t("Bc", bc),
                 t("M1", np.float32(s_in * swc / s_h)), t("lo", np.float32(0)), t("hi", np.float32(255)),
                 t("shape", np.array([1, 6], np.int64)), t("W2", w2q), t("hzp", np.array(0, np.uint8)),
                 t("w2zp", np.array(0, np.int8)), t("B2", b2), t("M2", np.float32(s_h * sw2))]
        m = make_model(nodes, [vi("x", TensorProto.FLOAT, [1, 1, 2, 3])], [vi("y", TensorProto.FLOAT, [1, 3])],
                       inits, opset=13)
        pth = HERE / "r5_convinteger_u8.onnx"
        onnx.save(m, str(pth))
        finish(pth, 5, "matmulinteger-requant", tool,
               "float 1x1x2x3 -> QuantizeLinear uint8 -> ConvInteger(uint8 x uint8 weights with zero point 128, "
               "3 channels, 2x2) -> Add int32 bias [1,3,1,1] -> Cast -> Mul -> Round -> Clip(0,255) -> Cast uint8 -> "
               "Reshape [1,6] -> MatMulInteger(uint8 x int8) -> Add -> Cast -> Mul(scale) output")
    run_step("row5 ConvInteger", conv_integer)


# ----------------------------------------------------------------------------------------------
# Row 6: integer-domain graphs in float ops (hand-written fixed point, AAAI'21 style)
# ----------------------------------------------------------------------------------------------
def row_6():
    tool = f"onnx.helper (onnx {onnx.__version__}), hand-written"

    def build(name, seed, sizes, in_scale, in_round, in_clip, requant, act_clip, out_mul, desc, relu_op=False):
        """requant: (kind, k) with kind in floor_mul, floor_div, floor_half, bias_half, round."""
        rng = np.random.default_rng(seed)
        nodes = [helper.make_node("Mul", ["x", "in_s"], ["xs"]),
                 helper.make_node(in_round, ["xs"], ["xr"]),
                 helper.make_node("Clip", ["xr", "in_lo", "in_hi"], ["a0"])]
        inits = [t("in_s", np.float32(in_scale)), t("in_lo", np.float32(in_clip[0])), t("in_hi", np.float32(in_clip[1]))]
        cur = "a0"
        kind, k = requant
        for li, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            p = f"l{li}"
            w = rng.integers(-8, 8, (a, b)).astype(np.float32)
            bias = rng.integers(-64, 64, (b,)).astype(np.float32)
            last = li == len(sizes) - 2
            if not last and kind == "bias_half":
                bias = bias + np.float32(2 ** (k - 1))         # the +0.5 of round-half-up folded into the bias
            nodes += [helper.make_node("MatMul", [cur, f"{p}_W"], [f"{p}_mm"]),
                      helper.make_node("Add", [f"{p}_mm", f"{p}_B"], [f"{p}_acc"])]
            inits += [t(f"{p}_W", w), t(f"{p}_B", bias)]
            if last:
                if out_mul is not None:
                    nodes.append(helper.make_node("Mul", [f"{p}_acc", "out_s"], ["y"]))
                    inits.append(t("out_s", np.float32(out_mul)))
                else:
                    nodes[-1].output[0] = "y"
                break
            v = f"{p}_acc"
            if relu_op:
                nodes.append(helper.make_node("Relu", [v], [f"{p}_relu"]))
                v = f"{p}_relu"
            if kind == "floor_div":
                nodes += [helper.make_node("Div", [v, f"{p}_k"], [f"{p}_d"]),
                          helper.make_node("Floor", [f"{p}_d"], [f"{p}_r"])]
                inits.append(t(f"{p}_k", np.float32(2 ** k)))
            elif kind == "floor_half":
                nodes += [helper.make_node("Mul", [v, f"{p}_k"], [f"{p}_d"]),
                          helper.make_node("Add", [f"{p}_d", f"{p}_half"], [f"{p}_dh"]),
                          helper.make_node("Floor", [f"{p}_dh"], [f"{p}_r"])]
                inits += [t(f"{p}_k", np.float32(2.0 ** -k)), t(f"{p}_half", np.float32(0.5))]
            else:                                             # floor_mul, bias_half, round
                op = "Round" if kind == "round" else "Floor"
                nodes += [helper.make_node("Mul", [v, f"{p}_k"], [f"{p}_d"]),
                          helper.make_node(op, [f"{p}_d"], [f"{p}_r"])]
                inits.append(t(f"{p}_k", np.float32(2.0 ** -k)))
            nodes.append(helper.make_node("Clip", [f"{p}_r", f"{p}_lo", f"{p}_hi"], [f"a{li + 1}"]))
            inits += [t(f"{p}_lo", np.float32(act_clip[0])), t(f"{p}_hi", np.float32(act_clip[1]))]
            cur = f"a{li + 1}"
        m = make_model(nodes, [vi("x", TensorProto.FLOAT, [1, sizes[0]])], [vi("y", TensorProto.FLOAT, [1, sizes[-1]])],
                       inits, opset=13)
        pth = HERE / f"{name}.onnx"
        onnx.save(m, str(pth))
        finish(pth, 6, "integer-domain-float", tool, desc)

    run_step("row6 a", build, "r6_int_mul255_round_floor_mul", 61, [4, 6, 3], 255.0, "Round", (0, 255),
             ("floor_mul", 7), (0, 127), None,
             "x*255 -> Round -> Clip(0,255); MatMul (integer-valued float weights in [-8,7]) + Add int bias; "
             "requant Mul(2^-7) -> Floor (round down) -> Clip(0,127); last layer outputs the accumulator")
    run_step("row6 b", build, "r6_int_mul16_floor_div_half", 62, [4, 5, 3], 16.0, "Floor", (0, 15),
             ("floor_half", 3), (0, 15), 0.0625,
             "x*16 -> Floor -> Clip(0,15) (4-bit input codes); MatMul + Add; requant Floor(v*2^-3 + 0.5) "
             "(round half up) -> Clip(0,15); output accumulator * 0.0625")
    run_step("row6 c", build, "r6_int_bias_half_folded_signed", 63, [4, 6, 3], 127.0, "Round", (-127, 127),
             ("bias_half", 7), (-8, 7), None,
             "x*127 -> Round -> Clip(-127,127) (signed input codes); hidden bias already contains +2^(k-1) so "
             "requant is Mul(2^-7) -> Floor; signed 4-bit activations Clip(-8,7) (no ReLU); output accumulator")
    run_step("row6 d", build, "r6_int_div_floor_two_hidden", 64, [4, 6, 5, 3], 255.0, "Floor", (0, 255),
             ("floor_div", 5), (0, 255), 2.0 ** -8,
             "two hidden layers (4-6-5-3): x*255 -> Floor -> Clip; requant Div(2^5) -> Floor -> Clip(0,255); "
             "output accumulator * 2^-8")
    run_step("row6 e", build, "r6_int_relu_round", 65, [3, 8, 2], 64.0, "Round", (0, 64),
             ("round", 6), (0, 127), None,
             "x*64 -> Round -> Clip(0,64); explicit Relu op on the accumulator, then Mul(2^-6) -> Round "
             "(half to even) -> Clip(0,127); 3-8-2", relu_op=True)

    def conv_int():
        rng = np.random.default_rng(66)
        wc = rng.integers(-8, 8, (3, 1, 2, 2)).astype(np.float32)
        bc = rng.integers(-64, 64, (3,)).astype(np.float32)
        w2 = rng.integers(-8, 8, (3, 6)).astype(np.float32)
        b2 = rng.integers(-64, 64, (3,)).astype(np.float32)
        nodes = [helper.make_node("Mul", ["x", "s"], ["xs"]), helper.make_node("Floor", ["xs"], ["xf"]),
                 helper.make_node("Clip", ["xf", "lo", "hi"], ["a0"]),
                 helper.make_node("Conv", ["a0", "Wc", "Bc"], ["c"], kernel_shape=[2, 2]),
                 helper.make_node("Div", ["c", "k"], ["cd"]), helper.make_node("Floor", ["cd"], ["cf"]),
                 helper.make_node("Clip", ["cf", "lo", "hi"], ["a1"]),
                 helper.make_node("Flatten", ["a1"], ["f"], axis=1),
                 helper.make_node("Gemm", ["f", "W2", "B2"], ["y"], transB=1)]
        inits = [t("s", np.float32(256.0)), t("lo", np.float32(0)), t("hi", np.float32(255)), t("Wc", wc),
                 t("Bc", bc), t("k", np.float32(32.0)), t("W2", w2), t("B2", b2)]
        m = make_model(nodes, [vi("x", TensorProto.FLOAT, [1, 1, 2, 3])], [vi("y", TensorProto.FLOAT, [1, 3])],
                       inits, opset=13)
        pth = HERE / "r6_int_conv_floor_div.onnx"
        onnx.save(m, str(pth))
        finish(pth, 6, "integer-domain-float", tool,
               "conv: x*256 -> Floor -> Clip(0,255); Conv (integer float weights, 3 ch 2x2) + bias; Div(32) -> Floor "
               "-> Clip(0,255); Flatten; Gemm(transB) output accumulator")
    run_step("row6 conv", conv_int)


# ----------------------------------------------------------------------------------------------
# Row 9 (hand-built): ConstantOfShape bias, hand-built rank-1 QDQ
# ----------------------------------------------------------------------------------------------
def row_9_hand():
    tool = f"onnx.helper (onnx {onnx.__version__}), hand-written"

    def cos_bias():
        rng = np.random.default_rng(97)
        w1 = rng.integers(-127, 128, (4, 6)).astype(np.int8)
        w2 = rng.integers(-127, 128, (6, 3)).astype(np.int8)
        nodes = [helper.make_node("QuantizeLinear", ["x", "s_x", "zp_x"], ["xq"]),
                 helper.make_node("DequantizeLinear", ["xq", "s_x", "zp_x"], ["xd"]),
                 helper.make_node("DequantizeLinear", ["W1q", "s_w1"], ["W1"]),
                 helper.make_node("MatMul", ["xd", "W1"], ["mm1"]),
                 # bias = ConstantOfShape([6], 1.0) * b1  (what some exporters emit instead of an initializer)
                 helper.make_node("ConstantOfShape", ["b1_shape"], ["ones"],
                                  value=numpy_helper.from_array(np.array([1.0], np.float32))),
                 helper.make_node("Mul", ["ones", "b1_vals"], ["b1"]),
                 helper.make_node("Add", ["mm1", "b1"], ["h"]),
                 helper.make_node("Relu", ["h"], ["hr"]),
                 helper.make_node("QuantizeLinear", ["hr", "s_h", "zp_h"], ["hq"]),
                 helper.make_node("DequantizeLinear", ["hq", "s_h", "zp_h"], ["hd"]),
                 helper.make_node("DequantizeLinear", ["W2q", "s_w2"], ["W2"]),
                 helper.make_node("MatMul", ["hd", "W2"], ["mm2"]),
                 # second bias: ConstantOfShape(0) + b2
                 helper.make_node("ConstantOfShape", ["b2_shape"], ["zeros"]),
                 helper.make_node("Add", ["zeros", "b2_vals"], ["b2"]),
                 helper.make_node("Add", ["mm2", "b2"], ["y"])]
        inits = [t("s_x", np.float32(2 / 255)), t("zp_x", np.array(128, np.uint8)), t("W1q", w1),
                 t("s_w1", np.float32(0.006)), t("b1_shape", np.array([6], np.int64)),
                 t("b1_vals", rng.normal(0, 0.2, (6,)).astype(np.float32)), t("s_h", np.float32(0.02)),
                 t("zp_h", np.array(0, np.uint8)), t("W2q", w2), t("s_w2", np.float32(0.005)),
                 t("b2_shape", np.array([3], np.int64)), t("b2_vals", rng.normal(0, 0.2, (3,)).astype(np.float32))]
        m = make_model(nodes, [vi("x", TensorProto.FLOAT, [1, 4])], [vi("y", TensorProto.FLOAT, [1, 3])], inits)
        pth = HERE / "r9_constantofshape_bias.onnx"
        onnx.save(m, str(pth))
        finish(pth, 9, "qdq-constantofshape-bias", tool,
               "QDQ MLP (uint8 activations, int8 weights via DequantizeLinear) whose float biases are computed: "
               "ConstantOfShape([6], value 1.0) * b1 and ConstantOfShape([3]) (default value 0) + b2")
    run_step("row9 ConstantOfShape bias", cos_bias)

    def rank1_hand():
        rng = np.random.default_rng(98)
        w1 = rng.integers(-127, 128, (4, 5)).astype(np.int8)
        w2 = rng.integers(-127, 128, (5, 2)).astype(np.int8)
        nodes = [helper.make_node("QuantizeLinear", ["x", "s_x", "zp_x"], ["xq"]),
                 helper.make_node("DequantizeLinear", ["xq", "s_x", "zp_x"], ["xd"]),
                 helper.make_node("DequantizeLinear", ["W1q", "s_w1", "zp_w1"], ["W1"], axis=1),
                 helper.make_node("MatMul", ["xd", "W1"], ["mm1"]),
                 helper.make_node("DequantizeLinear", ["B1q", "s_b1"], ["B1"]),
                 helper.make_node("Add", ["mm1", "B1"], ["h"]),
                 helper.make_node("QuantizeLinear", ["h", "s_h", "zp_h"], ["hq"]),
                 helper.make_node("DequantizeLinear", ["hq", "s_h", "zp_h"], ["hd"]),
                 helper.make_node("DequantizeLinear", ["W2q", "s_w2"], ["W2"]),
                 helper.make_node("MatMul", ["hd", "W2"], ["y"])]
        s_w1 = rng.uniform(0.004, 0.008, (5,)).astype(np.float32)
        inits = [t("s_x", np.float32(1 / 127)), t("zp_x", np.array(0, np.int8)), t("W1q", w1), t("s_w1", s_w1),
                 t("zp_w1", np.zeros(5, np.int8)), t("B1q", rng.integers(-2000, 2000, (5,)).astype(np.int32)),
                 t("s_b1", np.float32(1 / 127 * 0.006)), t("s_h", np.float32(0.01)), t("zp_h", np.array(0, np.int8)),
                 t("W2q", w2), t("s_w2", np.float32(0.007))]
        m = make_model(nodes, [vi("x", TensorProto.FLOAT, [4])], [vi("y", TensorProto.FLOAT, [2])], inits)
        pth = HERE / "r9_rank1_input_hand_qdq.onnx"
        onnx.save(m, str(pth))
        finish(pth, 9, "qdq-rank1", tool,
               "hand-built QDQ with a rank-1 input [4] (no batch dim): int8 activations, per-channel int8 weights "
               "(DequantizeLinear axis=1), int32 bias DequantizeLinear, hidden activation int8 without ReLU "
               "(saturating), last MatMul has no bias; output [2]")
    run_step("row9 rank-1 hand QDQ", rank1_hand)


# ----------------------------------------------------------------------------------------------
# Row 7: Brevitas -> QONNX / QCDQ
# ----------------------------------------------------------------------------------------------
def _quant_attrs(model: onnx.ModelProto) -> str:
    """A short description of the Quant-like nodes of a QONNX graph (attributes and constant inputs)."""
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)
    parts = []
    for n in model.graph.node:
        if n.op_type not in ("Quant", "BipolarQuant", "Trunc"):
            continue
        at = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        at = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in at.items()}
        ins = [consts.get(i) for i in n.input[1:]]

        def short(a):
            if a is None:
                return "?"
            a = np.asarray(a)
            return f"{a.item():g}" if a.size == 1 else f"[{a.size} values]"
        if n.op_type == "Quant":
            parts.append(f"Quant(bits={short(ins[2])}, zp={short(ins[1])}, signed={at.get('signed')}, "
                         f"narrow={at.get('narrow')}, rounding_mode={at.get('rounding_mode', 'ROUND')}, "
                         f"scale={short(ins[0])})")
        elif n.op_type == "BipolarQuant":
            parts.append(f"BipolarQuant(scale={short(ins[0])})")
        else:
            # Trunc v2 inputs: x, scale, zeropt, in_bitwidth, out_scale, out_bitwidth (v1: no out_scale)
            v2 = len(ins) >= 5
            parts.append(f"Trunc(scale={short(ins[0])}, zp={short(ins[1])}, in_bits={short(ins[2])}, "
                         + (f"out_scale={short(ins[3])}, out_bits={short(ins[4])}, " if v2 else
                            f"out_bits={short(ins[3])}, ")
                         + f"signed={at.get('signed', '-')}, narrow={at.get('narrow', '-')}, "
                         f"rounding_mode={at.get('rounding_mode', 'FLOOR')})")
    return "; ".join(parts)


def _input_grid(model: onnx.ModelProto, seed: int, max_points: int = 4096):
    """Every input-code combination of a small box: the first Quant node (the input quantizer) gives the
    scale, zero point and code range; each input element gets 3-4 neighbouring codes."""
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    inp = model.graph.input[0]
    first = next(n for n in model.graph.node if n.op_type == "Quant" and n.input[0] == inp.name)
    at = {a.name: helper.get_attribute_value(a) for a in first.attribute}
    scale = float(np.asarray(consts[first.input[1]]).reshape(-1)[0])
    zp = float(np.asarray(consts[first.input[2]]).reshape(-1)[0])
    bits = int(np.asarray(consts[first.input[3]]).reshape(-1)[0])
    signed, narrow = int(at.get("signed", 1)), int(at.get("narrow", 0))
    qmin = (-(2 ** (bits - 1)) + narrow) if signed else 0
    qmax = (2 ** (bits - 1) - 1) if signed else (2 ** bits - 1 - narrow)
    shape = [d.dim_value if d.dim_value > 0 else 1 for d in inp.type.tensor_type.shape.dim]
    n = int(np.prod(shape))
    per = 4 if 4 ** n <= max_points else 3
    rng = np.random.default_rng(seed)
    lo_c = rng.integers(qmin, qmax - per + 2, size=n)
    axes = [(lo_c[i] + np.arange(per) - zp) * scale for i in range(n)]
    pts = np.array(list(itertools.product(*axes)), dtype=np.float32).reshape(-1, *shape)
    lo = ((lo_c - zp) * scale).astype(np.float32).reshape(shape)
    hi = ((lo_c + per - 1 - zp) * scale).astype(np.float32).reshape(shape)
    return pts, lo, hi


def row_7():
    try:
        import brevitas
        import brevitas.nn as qnn
        import qonnx
        import torch
        import torch.nn as nn
        from brevitas.export import export_onnx_qcdq, export_qonnx
        from brevitas.graph.calibrate import calibration_mode
        from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8ActPerTensorFloat, Int8WeightPerTensorFixedPoint,
                                    Int8WeightPerTensorFloat, Int32Bias,
                                    SignedBinaryWeightPerTensorConst, Uint8ActPerTensorFixedPoint,
                                    Uint8ActPerTensorFloat)
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.core.onnx_exec import execute_onnx
        from qonnx.transformation.qonnx_to_qcdq import QuantToQCDQ
        from qonnx.util.cleanup import cleanup_model
    except ImportError as e:
        print(f"SKIP row 7: brevitas/qonnx not installed ({e})")
        return
    qonnx_ver = getattr(qonnx, "__version__", None)
    if qonnx_ver is None:
        from importlib.metadata import version
        qonnx_ver = version("qonnx")
    bv = f"brevitas {brevitas.__version__} (torch {torch.__version__})"

    class Mlp(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            self.cfg = cfg
            self.qin = qnn.QuantIdentity(act_quant=cfg["in_q"], bit_width=cfg["in_bits"], return_quant_tensor=True)
            self.fc1 = qnn.QuantLinear(cfg["n_in"], cfg["hid"], bias=True, weight_quant=cfg["w_q"],
                                       weight_bit_width=cfg["w_bits"], bias_quant=cfg["bias_q"],
                                       return_quant_tensor=True, **cfg.get("w_kw", {}))
            if cfg["act"] == "relu":
                self.act = qnn.QuantReLU(act_quant=cfg["relu_q"], bit_width=cfg["act_bits"], return_quant_tensor=True)
            else:
                self.act = qnn.QuantIdentity(act_quant=cfg["relu_q"], bit_width=cfg["act_bits"],
                                             return_quant_tensor=True)
            self.fc2 = qnn.QuantLinear(cfg["hid"], cfg["n_out"], bias=True, weight_quant=cfg["w_q"],
                                       weight_bit_width=cfg["w_bits"], bias_quant=cfg["bias_q"],
                                       return_quant_tensor=False, **cfg.get("w_kw", {}))

        def forward(self, x):
            return self.fc2(self.act(self.fc1(self.qin(x))))

    class ConvNet(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            self.cfg = cfg
            self.qin = qnn.QuantIdentity(act_quant=Uint8ActPerTensorFloat, bit_width=cfg["in_bits"],
                                         return_quant_tensor=True)
            self.conv = qnn.QuantConv2d(1, 3, 2, bias=True, weight_quant=Int8WeightPerTensorFloat,
                                        weight_bit_width=cfg["w_bits"],
                                        weight_scaling_per_output_channel=cfg["per_channel"],
                                        bias_quant=None, return_quant_tensor=True)
            self.act = qnn.QuantReLU(bit_width=cfg["act_bits"], return_quant_tensor=True)
            self.pool = None
            if cfg.get("trunc"):
                self.pool = qnn.TruncAvgPool2d(kernel_size=(1, 2), return_quant_tensor=True)
                n_flat = 3
            else:
                n_flat = 6
            self.flat = nn.Flatten()
            self.fc = qnn.QuantLinear(n_flat, 3, bias=True, weight_quant=Int8WeightPerTensorFloat,
                                      weight_bit_width=cfg["w_bits"], bias_quant=None, return_quant_tensor=False)

        def forward(self, x):
            h = self.act(self.conv(self.qin(x)))
            if self.pool is not None:
                h = self.pool(h)
            return self.fc(self.flat(h))

    mlp_cfgs = [
        ("r7_brevitas_mlp_w4a4_float_scale", dict(n_in=4, hid=6, n_out=3, in_q=Int8ActPerTensorFloat, in_bits=4,
                                                 w_q=Int8WeightPerTensorFloat, w_bits=4, bias_q=None, act="relu",
                                                 relu_q=Uint8ActPerTensorFloat, act_bits=4),
         "QuantIdentity 4-bit signed input, QuantLinear 4-bit per-tensor float-scale weights (narrow), float bias, "
         "QuantReLU 4-bit unsigned, QuantLinear 4-bit"),
        ("r7_brevitas_mlp_w4a8_pow2", dict(n_in=4, hid=5, n_out=3, in_q=Int8ActPerTensorFixedPoint, in_bits=8,
                                          w_q=Int8WeightPerTensorFixedPoint, w_bits=4, bias_q=None, act="relu",
                                          relu_q=Uint8ActPerTensorFixedPoint, act_bits=8),
         "power-of-two (fixed point) scales everywhere: 8-bit signed input, 4-bit weights, 8-bit unsigned ReLU, "
         "float bias"),
        ("r7_brevitas_mlp_int32bias_signed_act", dict(n_in=3, hid=6, n_out=2, in_q=Int8ActPerTensorFloat, in_bits=6,
                                                     w_q=Int8WeightPerTensorFloat, w_bits=4, bias_q=Int32Bias,
                                                     act="identity", relu_q=Int8ActPerTensorFloat, act_bits=5,
                                                     w_kw={"weight_scaling_per_output_channel": True}),
         "6-bit signed input, per-channel 4-bit weights, Int32Bias (bias Quant node with scale = input*weight "
         "scale), hidden QuantIdentity signed 5-bit (no ReLU)"),
        ("r7_brevitas_mlp_binary_weights", dict(n_in=4, hid=8, n_out=2, in_q=Int8ActPerTensorFloat, in_bits=4,
                                               w_q=SignedBinaryWeightPerTensorConst, w_bits=1, bias_q=None,
                                               act="relu", relu_q=Uint8ActPerTensorFloat, act_bits=2),
         "binary {-1,+1} weights (SignedBinaryWeightPerTensorConst -> BipolarQuant), 4-bit signed input, "
         "2-bit ReLU, float bias"),
    ]
    conv_cfgs = [
        ("r7_brevitas_conv_w4a4_perchannel", dict(in_bits=3, w_bits=4, act_bits=4, per_channel=True),
         "QuantIdentity 3-bit unsigned input (1x1x2x3), QuantConv2d 1->3 2x2 per-channel 4-bit weights, QuantReLU "
         "4-bit, Flatten, QuantLinear(6,3) 4-bit"),
        ("r7_brevitas_conv_trunc_avgpool", dict(in_bits=3, w_bits=4, act_bits=4, per_channel=False, trunc=True),
         "conv as above with per-tensor weights, then TruncAvgPool2d (1x2) -> Trunc node, Flatten, "
         "QuantLinear(3,3)"),
    ]

    def make(kind, cfg, seed):
        torch.manual_seed(seed)
        m = (Mlp if kind == "mlp" else ConvNet)(cfg)
        shape = (32, cfg["n_in"]) if kind == "mlp" else (32, 1, 2, 3)
        with torch.no_grad(), calibration_mode(m):
            for _ in range(10):
                x = torch.rand(*shape) if kind == "conv" else torch.randn(*shape)
                m(x)
        m.eval()
        x1 = torch.rand(1, *shape[1:])
        return m, x1

    def raw_and_derived(name, kind, cfg, seed, desc):
        m, x1 = make(kind, cfg, seed)
        raw = HERE / f"{name}_qonnx.onnx"
        dyn_note = ""
        try:
            export_qonnx(m, x1, export_path=str(raw))          # brevitas default: dynamo=True on torch >= 2.9
            exp = "export_qonnx (dynamo exporter, brevitas default; debug metadata_props stripped)"
        except Exception as e:                                 # noqa: BLE001
            dyn_note = f"export_qonnx dynamo=True failed ({short_err(e)})"
            note(f"row7 {name}: {dyn_note}; retrying with dynamo=False")
            export_qonnx(m, x1, export_path=str(raw), dynamo=False)
            exp = "export_qonnx (TorchScript exporter, dynamo=False)"
        strip_debug_metadata(raw)
        model = onnx.load(str(raw))
        pts, lo, hi = _input_grid(model, seed)
        mw = ModelWrapper(str(raw))
        iname, oname = mw.graph.input[0].name, mw.graph.output[0].name
        ys = []
        for p in pts:
            ys.append(execute_onnx(mw, {iname: p})[oname])
        ys = np.stack(ys).astype(np.float32)
        # the brevitas forward as a consistency check of the reference (loose: float reassociation)
        with torch.no_grad():
            yt = m(torch.from_numpy(pts.reshape(-1, *pts.shape[2:]))).numpy().reshape(ys.shape)
        err = float(np.abs(yt - ys).max())
        ref = HERE / f"{name}_qonnx.npz"
        np.savez_compressed(ref, x=pts, y=ys, lo=lo, hi=hi)   # x[i], lo, hi: the model's input shape
        finish(raw, 7, "qonnx", f"{bv}; qonnx {qonnx_ver} execute_onnx reference",
               f"{desc}; raw QONNX from brevitas {exp}; {_quant_attrs(model)}; reference: {len(pts)} grid points "
               f"(max |brevitas - qonnx exec| = {err:.2e})", reference=ref.name, run_ort=False)

        def qcdq_from_qonnx():
            mw2 = cleanup_model(ModelWrapper(str(raw)))
            mw2 = mw2.transform(QuantToQCDQ())
            left = sorted({n.op_type for n in mw2.graph.node if n.domain.startswith("qonnx") or
                           n.domain.startswith("onnx.brevitas") or n.domain == "finn.custom_op.general"})
            if left:
                raise RuntimeError(f"QuantToQCDQ left non-standard nodes {left} (it only rewrites Quant with "
                                   "2..8 bits, zero zero-point, ROUND; Trunc/BipolarQuant/int32 bias stay)")
            p = HERE / f"{name}_qonnx2qcdq.onnx"
            mw2.save(str(p))
            finish(p, 7, "qonnx-qcdq", f"{bv}; qonnx {qonnx_ver} cleanup_model + QuantToQCDQ",
                   f"{desc}; the raw QONNX after qonnx cleanup_model + QuantToQCDQ (QuantizeLinear -> Clip -> "
                   "DequantizeLinear, standard ONNX)")
        run_step(f"row7 {name} QuantToQCDQ", qcdq_from_qonnx)

        def brevitas_qcdq():
            p = HERE / f"{name}_brevitas_qcdq.onnx"
            try:
                export_onnx_qcdq(m, x1, export_path=str(p))
                exp2 = "dynamo exporter (brevitas default)"
            except Exception as e:                             # noqa: BLE001
                note(f"row7 {name}: export_onnx_qcdq dynamo=True failed ({short_err(e)}); retrying with dynamo=False")
                export_onnx_qcdq(m, x1, export_path=str(p), dynamo=False, opset_version=13)
                exp2 = "TorchScript exporter (dynamo=False, opset 13)"
            finish(p, 7, "brevitas-qcdq", bv, f"{desc}; brevitas export_onnx_qcdq, {exp2}")
        run_step(f"row7 {name} export_onnx_qcdq", brevitas_qcdq)

    for i, (name, cfg, desc) in enumerate(mlp_cfgs):
        run_step(f"row7 {name}", raw_and_derived, name, "mlp", cfg, 70 + i, desc)
    for i, (name, cfg, desc) in enumerate(conv_cfgs):
        run_step(f"row7 {name}", raw_and_derived, name, "conv", cfg, 80 + i, desc)


# ----------------------------------------------------------------------------------------------
# Row 8: TensorFlow (runs in its own interpreter: CORPUS_TF_PYTHON)
# ----------------------------------------------------------------------------------------------
def tf_part(outdir: Path) -> list[dict]:
    """Executed by the TensorFlow interpreter; writes the files, returns their (partial) entries."""
    import tensorflow as tf
    import tf2onnx
    tf.keras.utils.set_random_seed(8)
    rng = np.random.default_rng(8)
    out = []
    tool = f"tensorflow {tf.__version__}, tf2onnx {tf2onnx.__version__}"

    # (a) Keras model with fake-quant ops -> tf2onnx (from a tf.function)
    w1 = rng.normal(0, 0.6, (4, 6)).astype(np.float32)
    b1 = rng.normal(0, 0.2, (6,)).astype(np.float32)
    w2 = rng.normal(0, 0.6, (6, 3)).astype(np.float32)
    b2 = rng.normal(0, 0.2, (3,)).astype(np.float32)

    def fq(v, lo, hi, bits=8, narrow=False):
        return tf.quantization.fake_quant_with_min_max_vars(v, lo, hi, num_bits=bits, narrow_range=narrow)

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="x")])
    def fake_quant_mlp(x):
        xq = fq(x, -1.0, 1.0)
        h = tf.nn.relu(tf.matmul(xq, fq(tf.constant(w1), -2.0, 2.0, narrow=True)) + b1)
        hq = fq(h, 0.0, 3.0)
        return tf.matmul(hq, fq(tf.constant(w2), -2.0, 2.0, narrow=True)) + b2

    p = outdir / "r8_tf_fake_quant_vars_mlp.onnx"
    tf2onnx.convert.from_function(fake_quant_mlp, input_signature=fake_quant_mlp.input_signature, opset=13,
                                  output_path=str(p))
    out.append({"file": p.name, "row": 8, "dialect": "tf-fakequant", "tool": tool,
                "description": "tf.function MLP 4-6-3 with tf.quantization.fake_quant_with_min_max_vars on input "
                               "[-1,1] 8-bit, weights [-2,2] 8-bit narrow_range, ReLU output [0,3] 8-bit -> "
                               "tf2onnx.convert.from_function opset 13"})

    # (b) Keras model: custom Dense layer that fake-quantizes its kernel per output channel
    #     (fake_quant_with_min_max_vars_per_channel), activations by fake_quant_with_min_max_args Lambdas
    class FQDense(tf.keras.layers.Layer):
        def __init__(self, units, **kw):
            super().__init__(**kw)
            self.units = units

        def build(self, shape):
            self.kernel = self.add_weight(shape=(int(shape[-1]), self.units), initializer="glorot_uniform")
            self.bias = self.add_weight(shape=(self.units,), initializer=tf.keras.initializers.RandomNormal(0, 0.2))

        def call(self, v):
            m = tf.reduce_max(tf.abs(self.kernel), axis=0)
            k = tf.quantization.fake_quant_with_min_max_vars_per_channel(self.kernel, -m, m, num_bits=8,
                                                                         narrow_range=True)
            return tf.matmul(v, k) + self.bias

    def keras_fq(name, act_bits):
        inp = tf.keras.Input(shape=(4,), batch_size=1, name="x")
        z = tf.keras.layers.Lambda(lambda v: tf.quantization.fake_quant_with_min_max_args(v, -1.0, 1.0,
                                                                                          num_bits=8))(inp)
        z = tf.keras.layers.ReLU()(FQDense(5)(z))
        z = tf.keras.layers.Lambda(lambda v: tf.quantization.fake_quant_with_min_max_args(
            v, 0.0, 4.0, num_bits=act_bits))(z)
        z = FQDense(3)(z)
        km = tf.keras.Model(inp, z)

        @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="x")])
        def keras_fn(x):
            return km(x)
        p = outdir / f"{name}.onnx"
        tf2onnx.convert.from_function(keras_fn, input_signature=keras_fn.input_signature, opset=13,
                                      output_path=str(p))
        return p

    for name, bits in [("r8_tf_keras_fq_perchannel_a8", 8), ("r8_tf_keras_fq_perchannel_a4", 4)]:
        try:
            p = keras_fq(name, bits)
            out.append({"file": p.name, "row": 8, "dialect": "tf-fakequant", "tool": tool,
                        "description": "Keras model, custom layer FQDense (kernel through "
                                       "fake_quant_with_min_max_vars_per_channel, 8-bit narrow, symmetric), input "
                                       f"fake_quant_with_min_max_args [-1,1] 8-bit, ReLU, hidden [0,4] {bits}-bit, "
                                       "4-5-3 -> tf2onnx.convert.from_function opset 13"})
        except Exception as e:                                 # noqa: BLE001
            out.append({"failed": name, "why": f"{type(e).__name__}: {str(e)[-400:]}"})

    # (c, d) TFLite full-int8 models -> tf2onnx --tflite
    def tflite(name, io_int8, conv):
        bias_init = tf.keras.initializers.RandomNormal(0.0, 0.2)     # Keras' zero bias would be dropped
        if conv:
            i = tf.keras.Input(shape=(2, 3, 1), batch_size=1, name="x")
            h = tf.keras.layers.Conv2D(3, 2, activation="relu", bias_initializer=bias_init)(i)
            h = tf.keras.layers.Flatten()(h)
            o = tf.keras.layers.Dense(3, bias_initializer=bias_init)(h)
            shp = (1, 2, 3, 1)
        else:
            i = tf.keras.Input(shape=(4,), batch_size=1, name="x")
            h = tf.keras.layers.Dense(6, activation="relu", bias_initializer=bias_init)(i)
            o = tf.keras.layers.Dense(3, bias_initializer=bias_init)(h)
            shp = (1, 4)
        km2 = tf.keras.Model(i, o)

        def rep():
            r = np.random.default_rng(81)
            for _ in range(100):
                yield [r.uniform(-1, 1, shp).astype(np.float32)]
        conv_ = tf.lite.TFLiteConverter.from_keras_model(km2)
        conv_.optimizations = [tf.lite.Optimize.DEFAULT]
        conv_.representative_dataset = rep
        conv_.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io_int8:
            conv_.inference_input_type = tf.int8
            conv_.inference_output_type = tf.int8
        blob = conv_.convert()
        with tempfile.TemporaryDirectory() as d:
            tfl = Path(d) / "m.tflite"
            tfl.write_bytes(blob)
            pp = outdir / f"{name}.onnx"
            r = subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--tflite", str(tfl), "--output", str(pp),
                                "--opset", "13"], capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(r.stderr[-800:])
        return pp

    for name, io8, conv, desc in [
        ("r8_tflite_int8_io_mlp", True, False, "TFLite full-int8 Dense(6,relu)+Dense(3), int8 input/output "
         "(inference_input_type/output_type=int8) -> python -m tf2onnx.convert --tflite, opset 13"),
        ("r8_tflite_float_io_mlp", False, False, "TFLite full-int8 Dense(6,relu)+Dense(3) with float input/output "
         "(quantize/dequantize at the boundary) -> tf2onnx --tflite, opset 13"),
        ("r8_tflite_int8_io_conv", True, True, "TFLite full-int8 Conv2D(3, 2x2, relu) NHWC input 1x2x3x1 + "
         "Flatten + Dense(3), int8 I/O (per-channel conv weights) -> tf2onnx --tflite, opset 13"),
    ]:
        try:
            pp = tflite(name, io8, conv)
            out.append({"file": pp.name, "row": 8, "dialect": "tflite-int8", "tool": tool, "description": desc})
        except Exception as e:                                 # noqa: BLE001
            out.append({"failed": name, "why": f"{type(e).__name__}: {str(e)[-400:]}"})
    return out


def row_8():
    tfpy = os.environ.get("CORPUS_TF_PYTHON", "/tmp/tf-venv/bin/python")
    if not Path(tfpy).exists():
        print(f"SKIP row 8: no TensorFlow interpreter at {tfpy} (set CORPUS_TF_PYTHON)")
        return
    r = subprocess.run([tfpy, str(Path(__file__).resolve()), "--tf-part", str(HERE)], capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": "", "TF_CPP_MIN_LOG_LEVEL": "3"})
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("TF-ENTRIES ")]
    if r.returncode != 0 or not line:
        note(f"row8: the TensorFlow part failed (rc {r.returncode}): {r.stderr.strip()[-600:]}")
        return
    for e in json.loads(line[-1][len("TF-ENTRIES "):]):
        if "failed" in e:
            note(f"row8 {e['failed']}: FAILED {e['why']}")
            continue
        desc = e["description"]

        def go(e=e, desc=desc):
            # tf2onnx stamps its own version in producer_version; nothing else to normalise
            finish(HERE / e["file"], 8, e["dialect"], e["tool"], desc)
        run_step(f"row8 {e['file']}", go)


# ----------------------------------------------------------------------------------------------
def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--tf-part":
        try:
            import tensorflow  # noqa: F401
            import tf2onnx  # noqa: F401
        except ImportError as e:
            print(f"SKIP row 8: tensorflow/tf2onnx not installed ({e})", file=sys.stderr)
            sys.exit(3)
        print("TF-ENTRIES " + json.dumps(tf_part(Path(sys.argv[2]))))
        return
    only = set(sys.argv[1:])                                   # optional: row numbers to regenerate
    steps = [("1", rows_1_2), ("3", rows_ort), ("5", row_5), ("6", row_6), ("9", row_9_hand), ("7", row_7),
             ("8", row_8)]
    for key, fn in steps:
        if only and key not in only:
            continue
        print(f"== {fn.__name__}")
        fn()
    man = HERE / "manifest.json"
    if only and man.exists():                                  # partial run: keep the other rows' entries
        old = json.loads(man.read_text())
        mine = {e["file"] for e in ENTRIES}
        rows_done = {e["row"] for e in ENTRIES}
        ENTRIES[:0] = [e for e in old if e["file"] not in mine and e["row"] not in rows_done]
    ENTRIES.sort(key=lambda e: (e["row"], e["file"]))
    if not only:                                               # full run: drop files no entry lists
        keep = {e["file"] for e in ENTRIES} | {e["reference"] for e in ENTRIES if e["reference"]}
        for f in sorted(HERE.glob("*.onnx")) + sorted(HERE.glob("*.npz")):
            if f.name not in keep:
                print(f"  removing {f.name} (its production failed)")
                f.unlink()
    man.write_text(json.dumps(ENTRIES, indent=1) + "\n")
    (HERE / "notes.json").write_text(json.dumps(NOTES, indent=1) + "\n") if not only else None
    print(f"{len(ENTRIES)} fixtures in manifest.json; {len(NOTES)} notes")
    for n in NOTES:
        print("  -", n)


if __name__ == "__main__":
    main()
