"""Errors and warnings of the ONNX import/export."""
from __future__ import annotations

from ..base.errors import QaLirpaError


class OnnxImportError(QaLirpaError, ValueError):
    """An ONNX file that cannot be imported: malformed, or using an op or pattern we do not support.

    The message names the file and, where one is to blame, the node (name and op type).
    """


class OnnxExportError(QaLirpaError, ValueError):
    """A model that :func:`qa_lirpa.onnx.export_onnx` cannot express exactly in ONNX."""


class OnnxExactnessWarning(UserWarning):
    """onnxruntime may compute something other than the imported model's exact semantics
    (float32 accumulation that is not provably exact, or int8 kernels that saturate)."""


class OnnxFloat32Warning(OnnxExactnessWarning):
    """onnxruntime's float32 arithmetic is not provably identical to the imported model's exact
    semantics. :func:`qa_lirpa.integer_forward` of the imported model can then differ from
    onnxruntime next to rounding ties; the verifier covers it (onnxruntime is its referee, see
    ``qa_lirpa.onnx.referee``)."""


__all__ = ["OnnxImportError", "OnnxExportError", "OnnxExactnessWarning", "OnnxFloat32Warning"]
