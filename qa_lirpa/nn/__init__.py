"""Quantized layers (each with its op definition) and the exact integer reference."""
from .layers import (IntBox, IntTensor, QuantAct, QuantConv2d, QuantInput, QuantLinear, accumulator_bias_spec,
                     requantize, set_float_mode)
from .reference import argmax_smallest, integer_codes, integer_forward, iter_layers

__all__ = ["IntBox", "IntTensor", "QuantAct", "QuantConv2d", "QuantInput", "QuantLinear", "accumulator_bias_spec",
           "requantize", "set_float_mode", "argmax_smallest", "integer_codes", "integer_forward", "iter_layers"]
