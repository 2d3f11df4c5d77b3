"""Quantized layers. Each layer has a float forward (fake quantization, trainable with the STE,
traced by auto_LiRPA) and an exact integer step (``int_forward``) used by
:func:`qa_lirpa.integer_forward`; each layer type's meaning for every backend is its op definition
(:mod:`qa_lirpa.graph.registry`), in the layer's own module.

This module gathers the layers for ``from qa_lirpa.nn.layers import ...``.
"""
from __future__ import annotations

from torch import nn

from ..quant.functions import round_mode
from .add import QuantAdd
from .affine import QuantConv2d, QuantLinear, accumulator_bias_spec
from .batchnorm import QuantConvBN2d, QuantLinearBN
from .concat import QuantConcat
from .plain import FlattenOp, IdentityOp, ReluOp, UnflattenOp  # noqa: F401 - registers the plain ops
from .pool import QuantAvgPool2d
from .quantizers import QuantAct, QuantInput
from .tensors import IntBox, IntTensor, requantize


def set_float_mode(model: nn.Module, on: bool = True) -> nn.Module:
    """Switch every quantizer of ``model`` off (``on=True``) or back on, in place.

    In float mode the float forward has no rounding and no saturation: ``QuantInput`` only
    rescales, weights and biases are used as they are, and an unsigned ``QuantAct`` with zero point
    0 is a plain ReLU (other activation quantizers are the identity). This is for float training
    followed by post-training quantization (switch back on: every weight is then rounded into its
    fixed-point format). The integer semantics (``int_forward``, the verifier) ignore this flag:
    they always describe the quantized network.
    """
    for m in model.modules():
        if hasattr(type(m), "float_mode"):
            m.float_mode = bool(on)
    return model


__all__ = ["IntTensor", "IntBox", "QuantInput", "QuantAct", "QuantLinear", "QuantConv2d", "QuantAdd",
           "QuantAvgPool2d", "QuantConcat", "QuantConvBN2d", "QuantLinearBN", "requantize",
           "set_float_mode", "accumulator_bias_spec", "round_mode"]
