"""ONNX import and export for QNNs.

``export_onnx(model, path, input_shape)`` writes a QNN so that onnxruntime reproduces its exact
integer semantics; ``load_onnx(path)`` imports QDQ / QCDQ / half-up-pattern / plain float models
into qa_lirpa layers; ``run_onnxruntime(path, x)`` runs a file as the VNN-COMP checker does;
``required_quant_slack(model)`` is the ``quant_slack`` that IBP needs for an imported model's
float32-emulating quantizers (0 when it has none).
"""
from .errors import OnnxExactnessWarning, OnnxExportError, OnnxFloat32Warning, OnnxImportError
from .export import export_onnx
from .load import ImportedModel, load_onnx
from .ort_layers import Float32QuantInput, Float32Requant, required_quant_slack
from .referee import Envelope, OnnxReferee, float32_envelope
from .runtime import run_onnxruntime

__all__ = ["OnnxReferee", "float32_envelope", "Envelope", "export_onnx", "load_onnx", "run_onnxruntime", "required_quant_slack", "ImportedModel",
           "Float32QuantInput", "Float32Requant", "OnnxImportError", "OnnxExportError", "OnnxExactnessWarning", "OnnxFloat32Warning"]
