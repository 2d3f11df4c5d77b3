"""Exact decision procedures for QNN properties, independent of the bound propagation code.

:func:`decide_milp` encodes the exact integer semantics of a chain QNN (the semantics of
:func:`qa_lirpa.integer_forward`) as a mixed-integer linear program with integer data and solves it
with HiGHS; every counterexample it reports has been re-run through ``integer_forward``.
"""
from .milp import MilpEncodingError, MilpResult, SolverError, decide_milp, solve_milp

__all__ = ["MilpEncodingError", "MilpResult", "SolverError", "decide_milp", "solve_milp"]
