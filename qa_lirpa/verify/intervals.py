"""Exact interval propagation lives in :mod:`qa_lirpa.nn.intervals` (below every backend); this
module keeps the old import path."""
from ..nn.affine import AffinePlan, affine_interval, affine_plan
from ..nn.intervals import IntervalNet, Record, Trace
from ..nn.quantizers import enveloped_requant
from ..nn.tensors import IntBox

__all__ = ["IntBox", "AffinePlan", "IntervalNet", "Trace", "Record", "affine_plan", "affine_interval",
           "enveloped_requant"]
