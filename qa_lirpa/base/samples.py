"""The sample-range syntax of the command line (``--samples``), one parser for every subcommand.

``START:STOP[:STEP]`` is a Python slice of the sample indices: parts may be left out (``:100``,
``::4``, ``8:``), a STOP past the end is clipped. A bare number ``N`` means one sample, the one with
index N (``bare="index"``: ``certify``, ``benchmark make``), or the first N samples
(``bare="count"``: ``demo``). Without the number of samples ``n``, open or negative ends cannot be
resolved and are errors. Bad input raises :class:`UserError` with one line.
"""
from __future__ import annotations

from typing import Optional

from .errors import UserError

SYNTAX = {"index": "START:STOP[:STEP] or an index N", "count": "START:STOP[:STEP] or a count N (the first N)"}


def parse_samples(text: str, n: Optional[int] = None, *, bare: str = "index", option: str = "--samples") -> range:
    """The indices ``text`` selects, as a range (see the module docstring for the syntax).

    ``n``: the number of samples available (indices 0..n-1), None if unknown. ``bare``: what a
    bare number means, ``"index"`` or ``"count"``. ``option``: the flag named in error messages.
    """
    if bare not in SYNTAX:
        raise ValueError(f"bare must be 'index' or 'count', got {bare!r}")
    text = str(text).strip()
    bad = UserError(f"{option} {text!r}: expected {SYNTAX[bare]}")
    try:
        parts = [int(p) if p.strip() else None for p in text.split(":")]
    except ValueError:
        raise bad from None
    if len(parts) > 3 or (len(parts) == 1 and parts[0] is None):
        raise bad
    if len(parts) == 1:
        k = parts[0]
        if bare == "count":
            if k < 1:
                raise UserError(f"{option} {text}: the count must be at least 1")
            parts = [0, k]
        else:
            if k < 0 or (n is not None and k >= n):
                where = f"0..{n - 1}" if n is not None else "0 or more"
                raise UserError(f"{option} {text}: index outside {where}")
            return range(k, k + 1)
    if n is None:
        start, stop = parts[0], parts[1]
        step = parts[2] if len(parts) > 2 else None
        if stop is None:
            raise UserError(f"{option} {text}: STOP is needed here ({SYNTAX[bare]})")
        if any(p is not None and p < 0 for p in (start, stop)) or (step is not None and step < 1):
            raise UserError(f"{option} {text}: negative indices and steps are not allowed here")
        r = range(start or 0, stop, step or 1)
    else:
        if len(parts) > 2 and parts[2] == 0:
            raise UserError(f"{option} {text}: STEP must not be 0")
        r = range(n)[slice(*parts)]
    if len(r) == 0:
        raise UserError(f"{option} {text}: selects no sample" + (f" of the {n} available" if n is not None else ""))
    return r


__all__ = ["parse_samples"]
