"""Local robustness of a classifier as a property with exact tie semantics.

The class is the argmax of the outputs with ties to the smallest index, so with label ``y`` the
property is violated iff some ``k < y`` has ``out_k >= out_y`` or some ``k > y`` has
``out_k > out_y``. Exact outputs are ``(q - z_c) s_c``: every difference ``out_k - out_y`` is an
integer multiple of ``g = gcd(s_k, s_y)`` (the largest rational dividing both), so
``out_k > out_y`` iff ``out_y - out_k <= r`` for any ``r`` in ``[-g, 0)``; we take the float
nearest to ``-g`` inside that interval. The resulting spec is exact, not conservative.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from ..nn.layers import IntTensor
from ..quant import intmath
from ..base.vnnlib import InputSpec


def _channel_scales(out: IntTensor, n_outputs: int) -> list[Fraction]:
    """Per flattened output its scale (outputs ``[1, m]``; per-channel along axis 1)."""
    if len(out.scale) == 1:
        return [out.scale[0]] * n_outputs
    if out.values.dim() != 2 or out.axis != 1 or len(out.scale) != n_outputs:
        raise ValueError("robustness: per-channel outputs must be a [N, classes] tensor scaled along axis 1")
    return list(out.scale)


def strict_rhs(g: Fraction) -> float:
    """A float ``r`` with ``-g <= r < 0`` (so ``d <= r`` iff ``d <= -g`` on the lattice ``g Z``)."""
    r = -float(g)
    if Fraction(r) < -g:
        r = math.nextafter(r, 0.0)
    if not (-g <= Fraction(r) < 0):
        raise ValueError(f"robustness: output step {g} is not representable")
    return r


def robustness_spec(out: IntTensor, label: int, lower: np.ndarray, upper: np.ndarray) -> InputSpec:
    """The property "some input in ``[lower, upper]`` is not classified ``label``" for a model
    whose exact output at some input is ``out`` (used only for its scales and shape).

    One disjunct per other class ``k``: ``out_label - out_k <= 0`` for ``k < label`` and
    ``out_label - out_k <= r_k`` (``r_k`` from :func:`strict_rhs`) for ``k > label``.
    """
    m = int(np.prod(out.values.shape[1:]))
    if not 0 <= label < m:
        raise ValueError(f"robustness: label {label} outside 0..{m - 1}")
    scales = _channel_scales(out, m)
    disjuncts = []
    for k in range(m):
        if k == label:
            continue
        mat = np.zeros((1, m))
        mat[0, label], mat[0, k] = 1.0, -1.0
        rhs = 0.0 if k < label else strict_rhs(intmath.common_scale([scales[k], scales[label]]))
        disjuncts.append((mat, np.array([rhs])))
    lo, hi = np.asarray(lower, dtype=np.float64).reshape(-1), np.asarray(upper, dtype=np.float64).reshape(-1)
    return InputSpec(lo.copy(), hi.copy(), disjuncts)


__all__ = ["robustness_spec", "strict_rhs"]
