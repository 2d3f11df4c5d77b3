"""The answer to "does some input in the box violate the property?".

Every decision procedure answers with a :class:`Verdict`: branch and bound
(``qa_lirpa.verify``), the exact MILP and CP-SAT backends (``qa_lirpa.exact``) and the single
MILP solves of HiGHS. For a solver asked whether the constraints "input in the box, output
violates" have a solution, the mapping is: feasible = ``SAT`` (the solution is a violation),
infeasible = ``UNSAT`` (no violation exists), undecided within the resources = ``TIMEOUT``.

Words for people and files are made at the edges only: ``qa_lirpa.vnncomp.result_word`` (the
VNN-COMP result file), ``qa_lirpa.verify.certify.outcome_word`` (robust / falsified / ...).
The enum values are the VNN-COMP words for the verdicts that share them; do not compare strings.
"""
from __future__ import annotations

import enum


class Verdict(enum.Enum):
    """The answer of the verifier about "some input in the box violates the property".

    ``SAT``: a counterexample was found and confirmed by the exact semantics. ``UNSAT``: proved that
    none exists. ``TIMEOUT``: the time ran out on a problem the search would have decided.
    ``UNKNOWN``: the search cannot decide it (continuous inputs, unsupported layers).
    """

    SAT = "sat"
    UNSAT = "unsat"
    TIMEOUT = "timeout"
    UNKNOWN = "unknown"


__all__ = ["Verdict"]
