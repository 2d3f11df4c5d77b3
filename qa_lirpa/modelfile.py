"""The one model-file loader: an ONNX file (plain or ``.onnx.gz``) or a qa-lirpa checkpoint, by
name, with every problem as one :class:`~qa_lirpa.base.errors.UserError` line naming the file."""
from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from .base.errors import QaLirpaError, UserError
from .models import load_model
from .onnx import load_onnx      # onnx and onnxruntime load only when load_onnx runs


def is_onnx(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return name.endswith(".onnx") or name.endswith(".onnx.gz")


def load_model_file(path: str | os.PathLike, device: str = "cpu") -> nn.Module:
    """The model in ``path`` in eval mode: ``qa_lirpa.onnx.load_onnx`` for ONNX files (they keep
    ``model.source``, so the verifier's referee is onnxruntime on that file), else
    ``qa_lirpa.models.load_model`` (float64 on ``device``)."""
    if not Path(path).exists():
        raise UserError(f"model file not found: {path}")
    try:
        if is_onnx(path):
            model = load_onnx(path)
        else:
            model = load_model(path, device)
    except UserError:
        raise
    except QaLirpaError as e:
        raise UserError(str(e)) from None
    except (ValueError, KeyError, RuntimeError, OSError, TypeError) as e:
        raise UserError(f"cannot load model {path}: {e}") from None
    return model.eval()


__all__ = ["load_model_file", "is_onnx"]
