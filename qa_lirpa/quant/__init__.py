"""Quantization specs, rounding, fake quantization and exact integer helpers."""
from .functions import (FAKE_QUANT_OP, FakeQuantFunction, dequantize, fake_quant, quantize, round_down,
                        round_half_down, round_half_even, round_half_up, round_mode, round_up)
from .spec import ROUNDING_CODE, ROUNDING_MODES, QuantSpec

__all__ = ["FAKE_QUANT_OP", "FakeQuantFunction", "QuantSpec", "ROUNDING_CODE", "ROUNDING_MODES", "dequantize", "fake_quant", "quantize",
           "round_half_down", "round_half_even", "round_half_up", "round_mode", "round_down", "round_up"]
