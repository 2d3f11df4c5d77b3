"""qa-lirpa: quantized neural networks as first-class citizens of auto_LiRPA.

Public API::

    qa_lirpa.QuantSpec, qa_lirpa.fake_quant            the integer format and fake quantization
    qa_lirpa.nn.QuantInput / QuantLinear / QuantConv2d / QuantAct
    qa_lirpa.integer_forward(model, x)                 exact integer semantics (float64 outputs)
    qa_lirpa.bounded_module(model, x, **bound_opts)    an auto_LiRPA BoundedModule with our operators

Importing this package does not import auto_LiRPA; ``bounded_module`` does (with the fixes of
``qa_lirpa.compat``).
"""
import os as _os

# OpenMP threads that spin while waiting make torch 5-30x slower on small shared machines (measured
# on 2 cores); passive waiting costs nothing elsewhere. Only effective before torch is imported,
# and never overrides the user's own setting.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import nn  # noqa: E402
from .nn import integer_forward  # noqa: E402
from .quant import QuantSpec, fake_quant  # noqa: E402

__version__ = "0.1.0"


def auto_lirpa():
    """The ``auto_LiRPA`` module, imported with qa_lirpa's compatibility fixes applied."""
    from .compat import import_auto_lirpa   # lazy: importing qa_lirpa loads only base, graph, nn, quant

    return import_auto_lirpa()


def bounded_module(model, example_input, **bound_opts):
    """An auto_LiRPA ``BoundedModule`` of ``model`` with qa_lirpa's bound operators registered.

    See :func:`qa_lirpa.operators.bounded_module` for the options.
    """
    from .operators import bounded_module as _bm    # lazy: as auto_lirpa above (and it needs auto_LiRPA)

    return _bm(model, example_input, **bound_opts)


__all__ = ["QuantSpec", "fake_quant", "nn", "integer_forward", "bounded_module", "auto_lirpa", "__version__"]
