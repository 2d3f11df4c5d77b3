"""The one model-file loader: an ONNX file (plain or ``.onnx.gz``), an AAAI'21 benchmark MLP
(Keras HDF5 weights, ``.h5`` / ``.hdf5``) or a qa-lirpa checkpoint, by name, with every problem as
one :class:`~qa_lirpa.base.errors.UserError` line naming the file."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .aaai21 import load_aaai21
from .base.errors import QaLirpaError, UserError
from .models import load_model
from .onnx import load_onnx      # onnx and onnxruntime load only when load_onnx runs


def is_onnx(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return name.endswith(".onnx") or name.endswith(".onnx.gz")


def is_aaai21(path: str | os.PathLike) -> bool:
    """Whether ``path`` names Keras HDF5 weights (read as an AAAI'21 benchmark MLP)."""
    return str(path).lower().endswith((".h5", ".hdf5"))


def load_model_file(path: str | os.PathLike, device: str = "cpu") -> nn.Module:
    """The model in ``path`` in eval mode: ``qa_lirpa.onnx.load_onnx`` for ONNX files (they keep
    ``model.source``, so the verifier's referee is onnxruntime on that file),
    ``qa_lirpa.aaai21.load_aaai21`` for HDF5 weights (the benchmark's exact integer semantics,
    float64 on ``device``), else ``qa_lirpa.models.load_model`` (float64 on ``device``)."""
    if not Path(path).exists():
        raise UserError(f"model file not found: {path}")
    try:
        if is_onnx(path):
            model = load_onnx(path)
        elif is_aaai21(path):
            model = load_aaai21(path, dtype=torch.float64).to(device)
        else:
            model = load_model(path, device)
    except UserError:
        raise
    except QaLirpaError as e:
        raise UserError(str(e)) from None
    except (ValueError, KeyError, RuntimeError, OSError, TypeError) as e:
        raise UserError(f"cannot load model {path}: {e}") from None
    return model.eval()


__all__ = ["load_model_file", "is_onnx", "is_aaai21"]
