"""Quantized layers (each with its op definition) and the exact integer reference."""
from ..graph import QNNGraph, as_graph
from .layers import (IntBox, IntTensor, QuantAct, QuantAdd, QuantAvgPool2d, QuantConcat, QuantConv2d, QuantConvBN2d,
                     QuantInput, QuantLinear, QuantLinearBN, accumulator_bias_spec, requantize, set_float_mode)
from .reference import argmax_smallest, integer_codes, integer_forward, iter_layers

__all__ = ["QNNGraph", "as_graph", "IntBox", "IntTensor", "QuantAct", "QuantAdd", "QuantAvgPool2d", "QuantConcat",
           "QuantConv2d", "QuantConvBN2d", "QuantInput", "QuantLinear", "QuantLinearBN", "accumulator_bias_spec",
           "requantize", "set_float_mode", "argmax_smallest", "integer_codes", "integer_forward", "iter_layers"]
