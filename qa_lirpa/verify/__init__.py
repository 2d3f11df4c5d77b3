"""Complete verification of quantized networks: VNN-LIB properties, branch and bound on the
integer input grid, typed verdicts.

Public API::

    verify(model, spec, config=None, timeout=60.0, device=None) -> VerifyResult
    Verifier(model, config, input_shape=None, device=None).verify(spec, timeout)
    VerifierConfig, Verdict, VerifyResult, VerifyStats
    read_vnnlib(path) -> list[InputSpec]
    robustness_spec(exact_output, label, lower, upper) -> InputSpec   (exact argmax tie semantics)
"""
from .bab import Verifier, verify
from .config import VerifierConfig
from .result import Verdict, VerifyResult, VerifyStats
from .robustness import robustness_spec
from ..base.vnnlib import InputSpec, VnnlibError, read_vnnlib

__all__ = ["Verifier", "verify", "VerifierConfig", "Verdict", "VerifyResult", "VerifyStats",
           "InputSpec", "VnnlibError", "read_vnnlib", "robustness_spec"]
