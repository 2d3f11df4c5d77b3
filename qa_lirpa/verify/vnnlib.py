"""Moved to :mod:`qa_lirpa.base.vnnlib` (the VNN-LIB reader and writer sit on the ground floor, so
that the exact backends need not import the verifier); the names stay importable from here."""
from ..base.vnnlib import (  # noqa: F401
    MAX_CONJUNCTS, MAX_DEPTH, Disjunct, InputSpec, PathLike, VnnlibError, format_vnnlib, parse_vnnlib_text,
    read_vnnlib, robustness_property, violates_exactly, write_vnnlib,
)

__all__ = [
    "MAX_CONJUNCTS", "MAX_DEPTH", "VnnlibError", "InputSpec", "read_vnnlib", "parse_vnnlib_text",
    "format_vnnlib", "write_vnnlib", "robustness_property", "violates_exactly",
]
