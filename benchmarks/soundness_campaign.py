"""Soundness campaign: differential testing of the complete verifier and of the exact MILP
procedure against exhaustive enumeration, on random small quantized networks and properties.

Every case is built from one integer seed (``case_seed = seed * 100000 + index``), so a
disagreement is reproduced by ``--replay CASE_SEED``. A case varies: 2-4 inputs (8-bit pixels,
scale 1, so the input grid is the integer points), integer boxes of width 0..10 per dimension
(single points and boxes touching 0 or 255 included), 1-3 hidden layers of 3-8 units, all five
rounding modes (half_even, half_up, half_down, down, up; one per case), per-tensor or per-channel weight scales, weight/activation widths 4/6/8,
accumulator outputs or requantized signed outputs, and a property that is either a robustness
property (exact argmax tie semantics) or random linear rows in 1-3 disjuncts whose right-hand
sides sit exactly at reachable output values or just below them (ties matter), aiming at about
half sat.

Ground truth is enumeration: ``integer_forward`` on every integer point of the box (exact; the
outputs are dyadic with few bits, checked, so float64 row values and comparisons are exact).
Each case is then decided by

* ``bab``: the verifier, ``method="bab"``, default settings (the portfolio's process included);
* ``bab_nf``: the same with ``falsify: false`` and ``portfolio: none`` (no attacks or centre
  checks, no exact process: bounding and single-point boxes decide);
* ``bab_handover``: bab with ``falsify: false``, ``portfolio: none`` and ``exact_after: 0``: the exact MILP fallback
  takes over right after the root box, so its hand-over (per-box MILPs or the bounding box, the
  re-check of its counterexamples) decides most cases;
* ``paper``: ``method="paper"`` on every ``--paper-every``-th case;
* ``milp``: :func:`qa_lirpa.exact.decide_milp`;
* ``portfolio``: bab with ``portfolio: auto`` (the exact procedure, CP-SAT where OR-Tools is
  importable else the MILP, in a forked process from the root box on), ``falsify: false`` and
  ``exact_fallback: none``: whichever side answers first decides (the table counts the cases the
  process decided);
* ``alpha``: bab with alpha-CROWN on the root box (``alpha_root``, the rounding steps' optimisable
  slopes), full CROWN always on, ``falsify: false``, ``portfolio: none``, ``exact_fallback: none``:
  alpha-CROWN runs on every case the root's CROWN leaves open, sat ones included (the table counts
  them);
* ``local``: bab with the root's greedy descent on the input grid (``local_search_s``: 1 s, and
  ``local_search_solo`` times that for a near miss, as no seed restarts follow: ``restart_s: 0``) as
  the only counterexample search besides single points and box centres (no random points, no PGD
  steps), no CROWN (more roots stay open), portfolio and MILP off (the table counts the cases it
  ran on, the sat ones it decided and those whose budget was extended);
* ``lns``: bab with the neighbourhood search (``lns_s``: CP-SAT on sub-boxes around the local
  search's best point) after a local search of 1 ms, as ``local`` otherwise (the table counts
  the cases it ran on, and the sat ones decided at the root);
* ``restarts``: bab with the seed restarts (``restart_s``: short SCIP runs on the whole property,
  each with another seed) after a local search of 1 ms, as ``lns`` otherwise, without the
  neighbourhood search (the table counts the cases they ran on, and the sat ones decided at the
  root);
* ``crown_domains``: CP-SAT (:func:`qa_lirpa.exact.cpsat.solve_cpsat`, eager LP; LP tightening
  and presolve each on half of the cases, in all four combinations) with the hidden units' domains from
  CROWN's bounds on the box (``unit_bounds`` from ``GridProblem.step_code_bounds``, what the
  portfolio's CP-SAT process gets: ``cpsat_crown_domains``; the table counts the cases that had
  them);
* ``scip``: the MILP procedure solved by SCIP (``solve_milp(solver="scip")``, the portfolio's
  process on models up to 1024 hidden units), LP tightening on every other case;
* ``process``: the portfolio's exact process alone (:class:`qa_lirpa.verify.portfolio.ExactChild`
  on the whole property, its answer and counterexample taken as they come back over the pipe);
* ``presolve``: the same process with the large-model settings (no LP tightening, no CP-SAT
  presolve, CP-SAT's LP eager);
* ``yield``: bab with the portfolio and the MILP hand-over at once, ``portfolio_yield: 0.9``,
  ``exact_beside_portfolio: off``,
  ``falsify: false``, no alpha-CROWN (else the process answers before a batch), and branch and
  bound told it is always behind and the cores busy (``Search.eta`` infinite), so it waits for the process
  between its batches and the hand-over waits for the process to stop (the table counts the cases
  that waited).

``--tools`` picks a subset (e.g. ``--tools portfolio,process`` for the portfolio's campaign).

``--family dag`` (or ``both``) draws instead small random **DAG** QNNs (qa_lirpa.graph.QNNGraph):
residual MLPs (a QuantAdd of a hidden activation and a linear branch), two-branch MLPs joined by a
QuantConcat, and tiny CNNs on a ``[1, 2, 2]`` input with a residual conv block, average pooling,
max pooling, or a BatchNorm-folded conv; the same boxes, properties, tools and judge. DAG case seeds
are ``seed * 100000 + 50000 + index`` (disjoint from the chain cases).

A decided verdict that differs from enumeration, a ``sat`` whose counterexample is outside the
box or does not violate the property under ``integer_forward``, or an exception, is a BUG; the
case seed is printed.

    .venv/bin/python benchmarks/soundness_campaign.py --cases 500 --seed 0 --timeout 20 \\
        --out benchmarks/results/soundness_campaign.md
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import itertools
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn

from qa_lirpa import QuantSpec
from qa_lirpa.config import atomic_write_text
from qa_lirpa.exact import decide_milp
from qa_lirpa.graph import QNNGraph
from qa_lirpa.nn import (QuantAct, QuantAdd, QuantAvgPool2d, QuantConcat, QuantConv2d, QuantConvBN2d, QuantInput,
                         QuantLinear, accumulator_bias_spec, integer_codes, integer_forward)
from qa_lirpa.nn.reference import argmax_smallest
from qa_lirpa.quant.spec import ROUNDING_MODES
from qa_lirpa.verify import InputSpec, VerifierConfig, robustness_spec, verify

ROUNDINGS = ROUNDING_MODES          # every mode of QuantSpec, drawn uniformly per case
BITS = (4, 6, 8)
#: every output and row value is a multiple of 2**-EXACT_BITS and below 2**20 in magnitude
EXACT_BITS = 24
TOOLS = ("bab", "bab_nf", "bab_handover", "paper", "milp", "portfolio", "process", "alpha", "local", "presolve",
         "yield", "lns", "restarts", "scip", "crown_domains")
#: the tools a campaign runs unless told otherwise (the portfolio's two fork processes per case)
DEFAULT_TOOLS = ("bab", "bab_nf", "bab_handover", "paper", "milp")
DAG_ARCHS = ("residual_mlp", "concat_mlp", "residual_conv", "avgpool_conv", "maxpool_conv", "bn_conv")
DAG_OFFSET = 50000


@dataclass
class Case:
    """One random network, box and property, with its enumeration ground truth."""

    case_seed: int
    model: nn.Sequential
    spec: InputSpec
    meta: dict
    grid: torch.Tensor
    outputs: np.ndarray
    truth: str  # "sat" | "unsat" by enumeration


@dataclass
class Outcome:
    """What one tool said about one case."""

    verdict: str
    seconds: float
    problem: str = ""  # non-empty: a bug (wrong verdict, bad counterexample, exception)
    note: str = ""     # portfolio: "process" when its exact process decided


@dataclass
class CaseResult:
    case: Case
    outcomes: dict = field(default_factory=dict)

    @property
    def bugs(self) -> list[str]:
        return [f"{t}: {o.problem}" for t, o in self.outcomes.items() if o.problem]


# ----- generation ---------------------------------------------------------------------------

def _weight_spec(rng: np.random.Generator, bits: int, rounding: str, channels: int, per_channel: bool) -> QuantSpec:
    base = 2.0 ** -(bits - 1)
    if per_channel:
        scales = [base * 2.0 ** (1 - int(rng.integers(0, 3))) for _ in range(channels)]
        return QuantSpec(bits, True, scales, axis=0, rounding=rounding)
    return QuantSpec(bits, True, base, rounding=rounding)


def _box(rng: np.random.Generator, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer box in [0, 255]: widths 0..10 (sometimes all 0), sometimes at an edge."""
    widths = rng.integers(0, 11, size=n_in)
    if rng.random() < 0.1:
        widths[:] = 0
    elif rng.random() < 0.15:
        widths[rng.integers(0, n_in)] = 0
    mode = rng.random()
    lower = np.empty(n_in)
    for i, w in enumerate(widths):
        if mode < 0.2 or (mode < 0.3 and i % 2 == 0):
            lower[i] = 0
        elif mode < 0.4 or (mode < 0.5 and i % 2 == 1):
            lower[i] = 255 - w
        else:
            lower[i] = rng.integers(0, 256 - w)
    return lower.astype(np.float64), (lower + widths).astype(np.float64)


def _forward_float(layers: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return nn.Sequential(*layers).double()(x)


def build_model(rng: np.random.Generator, meta: dict, centre: torch.Tensor) -> nn.Sequential:
    """QuantInput(8 bit, scale 1) -> (QuantLinear, QuantAct unsigned)* -> QuantLinear
    [-> QuantAct signed], biased so that hidden units are mostly unsaturated at ``centre``."""
    rounding, w_bits, a_bits = meta["rounding"], meta["w_bits"], meta["a_bits"]
    ins = QuantSpec(8, False, 1.0, rounding=rounding)
    act = QuantSpec(a_bits, False, 0.5, rounding=rounding)
    layers: list[nn.Module] = [QuantInput(ins)]
    prev = ins
    sizes = [meta["n_in"]] + meta["hidden"] + [meta["n_out"]]
    x = centre.reshape(1, -1)
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        ws = _weight_spec(rng, w_bits, rounding, b, meta["per_channel"])
        lin = QuantLinear(a, b, ws, accumulator_bias_spec(prev, ws)).double()
        spread = 1.2 if i == 0 else 0.7
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy((rng.random((b, a)) - 0.5) * spread))
            lin.bias.zero_()
            pre = _forward_float(layers + [lin], x)[0]
            if last:
                target = (rng.random(b) - 0.5) * 2.0
            else:
                top = act.qmax * 0.5
                target = (0.15 + 0.7 * rng.random(b)) * top
            lin.bias.copy_(torch.from_numpy(target) - pre)
        layers.append(lin)
        if not last:
            layers.append(QuantAct(act))
            prev = act
    if meta["out_kind"] == "requant":
        layers.append(QuantAct(QuantSpec(meta["o_bits"], True, meta["o_scale"], rounding=rounding)))
    return nn.Sequential(*layers).double().eval()


# ----- DAG cases ------------------------------------------------------------------------------

def _value(nodes: list, name: str, x: torch.Tensor) -> torch.Tensor:
    """Float forward of the partial graph ``nodes`` up to node ``name``."""
    with torch.no_grad():
        return QNNGraph(list(nodes), output=name).double().eval()(x)


def _aim_bias(nodes: list, name: str, layer: nn.Module, x: torch.Tensor, rng: np.random.Generator,
              top: float | None) -> None:
    """Set ``layer``'s bias (or its BatchNorm shift) so that its outputs at ``x`` land at random
    targets: inside ``[0.15, 0.85] * top`` (a hidden unit, mostly unsaturated) or in [-1, 1]."""
    with torch.no_grad():
        layer.bias.zero_()
        pre = _value(nodes, name, x)[0]
        shape = pre.shape
        if top is None:
            target = torch.from_numpy((rng.random(shape) - 0.5) * 2.0)
        else:
            target = torch.from_numpy((0.15 + 0.7 * rng.random(shape)) * top)
        shift = (target - pre).reshape(shape[0], -1).mean(dim=1)     # one bias per channel
        if hasattr(layer, "bn"):
            layer.bn.bias.add_(shift)
        else:
            layer.bias.copy_(shift)


def build_dag_model(rng: np.random.Generator, meta: dict, centre: torch.Tensor) -> QNNGraph:
    """A random DAG QNN of architecture ``meta["arch"]`` (see :data:`DAG_ARCHS`)."""
    rounding, w_bits, a_bits = meta["rounding"], meta["w_bits"], meta["a_bits"]
    ins = QuantSpec(8, False, 1.0, rounding=rounding)
    act = QuantSpec(a_bits, False, 0.5, rounding=rounding)
    top = act.qmax * 0.5
    arch, n_out = meta["arch"], meta["n_out"]
    x = centre.reshape((1,) + _shape(meta))
    nodes: list = [("q", QuantInput(ins), ["input"])]

    def affine(name, layer, src, hidden=True, spread=1.0):
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy((rng.random(tuple(layer.weight.shape)) - 0.5) * spread))
        nodes.append((name, layer.double(), [src]))
        _aim_bias(nodes, name, layer, x, rng, top if hidden else None)

    def ws(channels):
        return _weight_spec(rng, w_bits, rounding, channels, meta["per_channel"])

    n_in, h = meta["n_in"], meta["width"]
    if arch in ("residual_mlp", "concat_mlp"):
        w1 = ws(h)
        affine("l1", QuantLinear(n_in, h, w1, accumulator_bias_spec(ins, w1)), "q", spread=1.2)
        nodes.append(("a1", QuantAct(act), ["l1"]))
        if arch == "residual_mlp":
            w2 = ws(h)
            affine("l2", QuantLinear(h, h, w2, accumulator_bias_spec(act, w2)), "a1", hidden=False, spread=0.7)
            nodes.append(("add", QuantAdd(act), ["a1", "l2"]))
            last, width = "add", h
        else:
            for br in ("a", "b"):
                wb = ws(h)
                affine(f"l{br}", QuantLinear(h, h, wb, accumulator_bias_spec(act, wb)), "a1", spread=0.7)
                nodes.append((f"a{br}", QuantAct(act), [f"l{br}"]))
            nodes.append(("cat", QuantConcat(1), ["aa", "ab"]))
            last, width = "cat", 2 * h
    else:
        c = h
        w1 = ws(c)
        conv_cls = QuantConvBN2d if arch == "bn_conv" else QuantConv2d
        conv = conv_cls(1, c, 3, w1, accumulator_bias_spec(ins, w1), padding=1)
        if arch == "bn_conv":
            with torch.no_grad():
                conv.bn.weight.copy_(torch.from_numpy(0.5 + rng.random(c)))
                conv.bn.running_mean.copy_(torch.from_numpy(rng.random(c) - 0.5))
                conv.bn.running_var.copy_(torch.from_numpy(0.5 + rng.random(c)))
            conv.eval()
        affine("c1", conv, "q", spread=0.3)
        nodes.append(("a1", QuantAct(act), ["c1"]))
        last = "a1"
        if arch == "residual_conv":
            w2 = ws(c)
            affine("c2", QuantConv2d(c, c, 3, w2, accumulator_bias_spec(act, w2), padding=1), "a1", hidden=False,
                   spread=0.3)
            nodes.append(("add", QuantAdd(act), ["a1", "c2"]))
            last = "add"
        if arch == "maxpool_conv":
            nodes.append(("pool", nn.MaxPool2d(2), [last]))
            last = "pool"
        else:
            nodes.append(("pool", QuantAvgPool2d(2), [last]))
            nodes.append(("a2", QuantAct(act), ["pool"]))
            last = "a2"
        nodes.append(("flat", nn.Flatten(), [last]))
        last, width = "flat", c
    wo = ws(n_out)
    affine("out", QuantLinear(width, n_out, wo, accumulator_bias_spec(act, wo)), last, hidden=False, spread=0.7)
    if meta["out_kind"] == "requant":
        nodes.append(("oq", QuantAct(QuantSpec(meta["o_bits"], True, meta["o_scale"], rounding=rounding)), ["out"]))
    return QNNGraph(nodes).double().eval()


def make_dag_case(case_seed: int) -> Case:
    rng = np.random.default_rng(case_seed)
    arch = DAG_ARCHS[int(rng.integers(0, len(DAG_ARCHS)))]
    conv = arch.endswith("_conv")
    n_in = 4 if conv else int(rng.integers(2, 5))
    meta = dict(case_seed=case_seed, arch=arch, n_in=n_in, shape=[1, 2, 2] if conv else [n_in],
                width=int(rng.integers(2, 4)) if conv else int(rng.integers(3, 7)), hidden=[])
    return _finish_case(rng, meta, build_dag_model)


def grid_points(lower: np.ndarray, upper: np.ndarray) -> torch.Tensor:
    axes = [np.arange(int(lo), int(hi) + 1) for lo, hi in zip(lower, upper)]
    return torch.tensor(list(itertools.product(*axes)), dtype=torch.float64)


def _check_exact(values: np.ndarray, what: str) -> None:
    scaled = values * 2.0 ** EXACT_BITS
    if not (np.all(np.abs(values) < 2.0 ** 20) and np.all(scaled == np.round(scaled))):
        raise AssertionError(f"{what}: values not exactly representable for float64 checks")


def violated_rows(outputs: np.ndarray, disjuncts) -> np.ndarray:
    """Per output row (``[N, m]``): does some disjunct hold on every one of its rows?"""
    hit = np.zeros(outputs.shape[0], dtype=bool)
    for mat, rhs in disjuncts:
        vals = outputs @ np.asarray(mat).T
        _check_exact(vals, "row values")
        hit |= np.all(vals <= np.asarray(rhs)[None, :], axis=1)
    return hit


def _coefficients(rng: np.random.Generator, rows: int, m: int) -> np.ndarray:
    mat = rng.integers(-4, 5, size=(rows, m)) / 2.0
    for r in range(rows):
        if not np.any(mat[r]):
            mat[r, rng.integers(0, m)] = 1.0
    return mat


def build_spec(rng: np.random.Generator, model: nn.Module, meta: dict, lower, upper,
               grid: torch.Tensor, outputs: np.ndarray, centre: torch.Tensor) -> InputSpec:
    m = outputs.shape[1]
    if meta["spec_kind"] == "robust":
        out = integer_codes(model, centre.reshape((1,) + _shape(meta)))
        label = int(argmax_smallest(out.dequantize())[0]) if rng.random() < 0.75 else int(rng.integers(0, m))
        meta["label"] = label
        return robustness_spec(out, label, lower, upper)
    n_disj = int(rng.integers(1, 4))
    want_sat = bool(rng.random() < 0.5)
    chosen = int(rng.integers(0, n_disj))
    delta = 2.0 ** -20 if rng.random() < 0.7 else 2.0 ** -9
    meta.update(n_disjuncts=n_disj, want_sat=want_sat, delta=delta)
    disjuncts = []
    for d in range(n_disj):
        rows = int(rng.integers(1, 4))
        mat = _coefficients(rng, rows, m)
        vals = outputs @ mat.T  # [N, rows]
        _check_exact(vals, "row values")
        if rng.random() < 0.5:
            anchor = int(np.argmin(vals[:, 0]))  # an extreme point: the tie is on the boundary
        else:
            anchor = int(rng.integers(0, outputs.shape[0]))
        rhs = vals[anchor].copy()
        if not (want_sat and d == chosen):
            if rows == 1:
                rhs = np.array([vals[:, 0].min() - delta])
            elif rng.random() < 0.5:
                row = int(rng.integers(0, rows))  # one row below its minimum: the disjunct is empty
                rhs[row] = vals[:, row].min() - delta
            else:
                rhs[int(rng.integers(0, rows))] -= delta  # just misses the anchor; other points may hit
        disjuncts.append((mat, rhs))
    return InputSpec(np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64), disjuncts)


def _shape(meta: dict) -> tuple[int, ...]:
    """The model's input shape (without batch)."""
    return tuple(meta.get("shape", (meta["n_in"],)))


def make_case(case_seed: int) -> Case:
    """One case: a chain (case seeds below :data:`DAG_OFFSET` modulo 100000) or a DAG QNN."""
    if case_seed % 100000 >= DAG_OFFSET:
        return make_dag_case(case_seed)
    return make_chain_case(case_seed)


def make_chain_case(case_seed: int) -> Case:
    rng = np.random.default_rng(case_seed)
    n_in = int(rng.integers(2, 5))
    meta = dict(case_seed=case_seed, n_in=n_in,
                hidden=[int(h) for h in rng.integers(3, 9, size=int(rng.integers(1, 4)))])
    return _finish_case(rng, meta, build_model)


def _finish_case(rng: np.random.Generator, meta: dict, build) -> Case:
    """Draw the formats, the box, the centre and the property (in this order, so that a case seed
    always gives the same case), build the model with ``build(rng, meta, centre)`` and enumerate."""
    meta.update(n_out=int(rng.integers(2, 5)), rounding=ROUNDINGS[int(rng.integers(0, len(ROUNDINGS)))],
                w_bits=int(rng.choice(BITS)), a_bits=int(rng.choice(BITS)),
                per_channel=bool(rng.random() < 0.5),
                out_kind="requant" if rng.random() < 0.5 else "acc",
                o_bits=int(rng.choice(BITS)), o_scale=float(rng.choice([0.125, 0.25, 0.5])),
                spec_kind="robust" if rng.random() < 0.35 else "linear")
    lower, upper = _box(rng, meta["n_in"])
    meta["widths"] = [int(w) for w in upper - lower]
    centre = torch.from_numpy(np.array([rng.integers(int(lo), int(hi) + 1) for lo, hi in zip(lower, upper)],
                                       dtype=np.float64))
    model = build(rng, meta, centre)
    grid = grid_points(lower, upper)
    outputs = integer_forward(model, grid.reshape((-1,) + _shape(meta))).reshape(grid.shape[0], -1).numpy()
    _check_exact(outputs, "outputs")
    spec = build_spec(rng, model, meta, lower, upper, grid, outputs, centre)
    truth = "sat" if violated_rows(outputs, spec.disjuncts).any() else "unsat"
    meta["grid_points"] = int(grid.shape[0])
    return Case(meta["case_seed"], model, spec, meta, grid, outputs, truth)


# ----- deciding -----------------------------------------------------------------------------

def check_counterexample(case: Case, x) -> str:
    """Empty if ``x`` lies in the box and violates the property under integer_forward."""
    if x is None:
        return "sat without a counterexample"
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.shape[0] != case.spec.n_inputs:
        return f"counterexample has {x.shape[0]} inputs"
    if not (np.all(x >= case.spec.lower) and np.all(x <= case.spec.upper)):
        return f"counterexample {x.tolist()} outside the box"
    y = integer_forward(case.model, torch.from_numpy(x).reshape((1,) + _shape(case.meta))).reshape(1, -1).numpy()
    if not violated_rows(y, case.spec.disjuncts)[0]:
        return f"counterexample {x.tolist()} does not violate the property (outputs {y[0].tolist()})"
    return ""


def _judge(case: Case, verdict: str, x, seconds: float) -> Outcome:
    problem = ""
    if verdict in ("sat", "unsat") and verdict != case.truth:
        problem = f"verdict {verdict}, enumeration {case.truth}"
    elif verdict == "sat":
        problem = check_counterexample(case, x)
    return Outcome(verdict, seconds, problem)


@contextlib.contextmanager
def _always_behind(on: bool):
    """The ``yield`` tool: branch and bound is told that it is always behind (``Search.eta`` is
    infinite) and that the cores are busy (``cores_busy``), so it waits for the portfolio's process between its batches and the MILP hand-over
    waits until the process has stopped: the scheduling paths of ``portfolio_yield`` on cases that
    branch and bound alone would decide at once."""
    if not on:
        yield
        return
    from qa_lirpa.verify import bab
    from qa_lirpa.verify.search import Search

    saved = Search.eta, bab.cores_busy
    Search.eta, bab.cores_busy = (lambda self: math.inf), (lambda: True)
    try:
        yield
    finally:
        Search.eta, bab.cores_busy = saved


def run_tool(case: Case, tool: str, timeout: float) -> Outcome:
    t0 = time.perf_counter()
    note = ""
    try:
        if tool in ("milp", "scip"):    # scip: the same MILP solved by SCIP, LP tightening every other case
            kw = {"solver": "scip", "tighten": case.case_seed % 2 == 0} if tool == "scip" else {}
            verdict, x = decide_milp(case.model, case.spec, timeout=timeout, input_shape=(1,) + _shape(case.meta), **kw)
            verdict = verdict.value                # the campaign's words are the Verdict values
        elif tool == "crown_domains":
            from qa_lirpa.exact.cpsat import solve_cpsat
            from qa_lirpa.verify.grid import GridProblem

            problem = GridProblem(case.model, _shape(case.meta), torch.device("cpu"))
            root = problem.root(case.spec.lower, case.spec.upper)
            bounds = None if root is None else problem.step_code_bounds(*root)
            note = "domains" if bounds else ""
            r = solve_cpsat(case.model, case.spec, timeout, input_shape=(1,) + _shape(case.meta),
                            tighten=case.case_seed % 2 == 0, presolve=case.case_seed % 4 < 2, eager_lp=True,
                            unit_bounds=bounds)
            verdict, x = r.verdict.value, r.counterexample
        elif tool in ("process", "presolve"):
            from qa_lirpa.base.deadline import Deadline
            from qa_lirpa.verify.portfolio import ExactChild, backend_for

            backend, options = backend_for("auto"), None
            if tool == "presolve":      # the large-model settings: no LP tightening, no CP-SAT presolve
                options = ({"tighten": False, "presolve": False, "eager_lp": True} if backend == "cpsat"
                           else {"tighten": False})
            child = ExactChild(backend, case.model, [case.spec], (1,) + _shape(case.meta),
                               Deadline.after(timeout), options=options)
            try:
                ans = None
                while ans is None:
                    ans = child.poll()
                    if ans is None:
                        time.sleep(0.002)
            finally:
                child.stop()
            name, _, x, message = ans
            if name == "ERROR":
                raise RuntimeError(message)
            verdict = name.lower()
        else:
            extra = {"exact_after": 0.0, "portfolio": "none"} if tool == "bab_handover" else {}
            if tool == "bab_nf":
                extra = {"portfolio": "none"}
            if tool == "portfolio":
                extra = {"portfolio": "auto", "exact_fallback": "none"}
            if tool == "yield":
                extra = {"portfolio": "auto", "portfolio_yield": 0.9, "exact_fallback": "milp", "exact_after": 0.0,
                         "alpha_root": False, "exact_beside_portfolio": "off"}
            if tool == "alpha":
                extra = {"portfolio": "none", "exact_fallback": "none", "alpha_root": True, "crown": "always",
                         "crown_method": "CROWN"}
            if tool == "local":
                extra = {"portfolio": "none", "exact_fallback": "none", "crown": "never", "alpha_root": False,
                         "random_points": 0, "attack_steps": 0, "local_search_s": 1.0, "local_search_starts": 2,
                         "restart_s": 0.0}
            if tool == "lns":
                extra = {"portfolio": "none", "exact_fallback": "none", "crown": "never", "alpha_root": False,
                         "random_points": 0, "attack_steps": 0, "local_search_s": 0.001, "local_search_starts": 1,
                         "lns_s": 2.0, "lns_size": 1, "restart_s": 0.0}
            if tool == "restarts":
                extra = {"portfolio": "none", "exact_fallback": "none", "crown": "never", "alpha_root": False,
                         "random_points": 0, "attack_steps": 0, "local_search_s": 0.001, "local_search_starts": 1,
                         "lns_s": 0.0, "restart_s": 2.0, "restart_round_s": 0.5}
            cfg = VerifierConfig(method="paper" if tool == "paper" else "bab",
                                 falsify=tool not in ("bab_nf", "bab_handover", "portfolio", "alpha", "yield"), device="cpu",
                                 seed=case.case_seed % (2 ** 31), **extra)
            with _always_behind(tool == "yield"):
                res = verify(case.model, [case.spec], cfg, timeout=timeout, input_shape=_shape(case.meta))
            verdict, x = res.verdict.value, res.counterexample
            if tool == "portfolio" and ("; unsat after" in res.stats.portfolio or "; sat after" in res.stats.portfolio):
                note = "process"
            if tool == "yield" and res.stats.time_yield:
                note = "waited"
            if tool == "alpha" and res.stats.alpha_calls:
                note = "alpha"
            if tool == "local" and res.stats.local_search_calls:
                note = "local_sat" if res.verdict.value == "sat" and res.stats.max_depth == 0 else "local"
                note += "_ext" if res.stats.local_search_extended else ""
            if tool == "lns" and res.stats.lns_rounds:
                note = "lns_sat" if res.verdict.value == "sat" and res.stats.max_depth == 0 else "lns"
            if tool == "restarts" and res.stats.restart_rounds:
                note = "restarts_sat" if res.verdict.value == "sat" and res.stats.max_depth == 0 else "restarts"
            if verdict == "sat" and x is not None and res.outputs is not None:
                y = integer_forward(case.model, torch.as_tensor(np.asarray(x, dtype=np.float64)).reshape(
                    (1,) + _shape(case.meta)))
                if not np.array_equal(np.asarray(res.outputs).reshape(-1), y.reshape(-1).numpy()):
                    return Outcome(verdict, time.perf_counter() - t0,
                                   f"reported outputs {np.asarray(res.outputs).reshape(-1).tolist()} differ "
                                   f"from integer_forward {y.reshape(-1).tolist()} at {np.asarray(x).tolist()}")
    except Exception as err:  # noqa: BLE001 - an exception is a finding, not a crash of the campaign
        return Outcome("error", time.perf_counter() - t0, f"{type(err).__name__}: {err}")
    out = _judge(case, verdict, x, time.perf_counter() - t0)
    out.note = note
    return out


def run_case(case_seed: int, timeout: float, paper: bool, tools=DEFAULT_TOOLS) -> CaseResult:
    case = make_case(case_seed)
    result = CaseResult(case)
    for tool in tools:
        if tool == "paper" and not paper:
            continue
        result.outcomes[tool] = run_tool(case, tool, timeout)
    return result


def case_seeds(cases: int, seed: int, family: str = "chain") -> list[int]:
    """The case seeds of a campaign: ``chain``, ``dag``, or ``both`` (alternating)."""
    chain = [seed * 100000 + i for i in range(cases)]
    dag = [seed * 100000 + DAG_OFFSET + i for i in range(cases)]
    if family == "chain":
        return chain
    if family == "dag":
        return dag
    if family == "both":
        return [c for pair in zip(chain, dag) for c in pair][:cases]
    raise ValueError(f"family must be chain, dag or both, not {family!r}")


def campaign(cases: int, seed: int, timeout: float, paper_every: int = 4, log=None,
             family: str = "chain", tools=DEFAULT_TOOLS) -> list[CaseResult]:
    results = []
    for i, case_seed in enumerate(case_seeds(cases, seed, family)):
        r = run_case(case_seed, timeout, paper_every > 0 and i % paper_every == 0, tools)
        results.append(r)
        if log is not None:
            for bug in r.bugs:
                print(f"BUG case_seed={r.case.case_seed}: {bug}  (replay: --replay {r.case.case_seed})",
                      file=log, flush=True)
            if (i + 1) % 25 == 0:
                print(f"[{i + 1}/{cases}] done", file=log, flush=True)
    return results


# ----- reporting ----------------------------------------------------------------------------

def summarize(results: list[CaseResult]) -> dict:
    s = {"cases": len(results),
         "sat": sum(r.case.truth == "sat" for r in results),
         "unsat": sum(r.case.truth == "unsat" for r in results),
         "roundings": sorted({r.case.meta["rounding"] for r in results}),
         "bugs": [(r.case.case_seed, b) for r in results for b in r.bugs], "tools": {},
         "archs": {}}
    for r in results:
        arch = r.case.meta.get("arch", "chain")
        sat, unsat = s["archs"].get(arch, (0, 0))
        s["archs"][arch] = (sat + (r.case.truth == "sat"), unsat + (r.case.truth == "unsat"))
    for tool in TOOLS:
        outs = [r.outcomes[tool] for r in results if tool in r.outcomes]
        if not outs:
            continue
        times = np.array([o.seconds for o in outs])
        s["tools"][tool] = dict(
            runs=len(outs),
            agree=sum(o.verdict in ("sat", "unsat") and not o.problem for o in outs),
            undecided=sum(o.verdict in ("timeout", "unknown") for o in outs),
            disagree=sum(o.verdict in ("sat", "unsat") and o.verdict != r.case.truth
                         for r in results if tool in r.outcomes for o in [r.outcomes[tool]]),
            bad_cex=sum(o.verdict == "sat" and bool(o.problem) and "enumeration" not in o.problem for o in outs),
            errors=sum(o.verdict == "error" for o in outs),
            by_process=sum(o.note == "process" for o in outs),
            alpha_runs=sum(o.note == "alpha" for o in outs),
            local_runs=sum(o.note.startswith("local") for o in outs),
            local_sat=sum(o.note.startswith("local_sat") for o in outs),
            local_ext=sum(o.note.endswith("_ext") for o in outs),
            lns_runs=sum(o.note in ("lns", "lns_sat") for o in outs),
            lns_sat=sum(o.note == "lns_sat" for o in outs),
            restart_runs=sum(o.note in ("restarts", "restarts_sat") for o in outs),
            restart_sat=sum(o.note == "restarts_sat" for o in outs),
            waited=sum(o.note == "waited" for o in outs),
            domain_runs=sum(o.note == "domains" for o in outs),
            mean=float(times.mean()), median=float(np.median(times)), max=float(times.max()))
    return s


#: the line under the table for tools that count what they did (``summarize``'s fields)
FOOTNOTES = {
    "portfolio": "decided by its exact process in {by_process} of {runs} runs (the rest by branch and bound first)",
    "alpha": "alpha-CROWN ran on the root box of {alpha_runs} of {runs} cases (the rest were decided by the "
             "root's CROWN)",
    "local": "the root's local search ran on {local_runs} of {runs} cases; {local_sat} of them were sat at the "
             "root (found by it, or by a centre check); {local_ext} got the longer budget for a near miss",
    "lns": "the neighbourhood search ran on {lns_runs} of {runs} cases; {lns_sat} of them were sat at the root",
    "restarts": "the seed restarts ran on {restart_runs} of {runs} cases; {restart_sat} of them were sat at the root",
    "crown_domains": "CROWN's domains went into CP-SAT on {domain_runs} of {runs} cases (the rest had no open box "
                     "or no bounds)",
    "yield": "branch and bound waited for the exact process in {waited} of {runs} cases (the rest were decided "
             "before a batch ran)",
}


def markdown_table(s: dict) -> str:
    lines = [f"cases: {s['cases']}; enumeration: {s['sat']} sat, {s['unsat']} unsat; "
             f"rounding modes: {', '.join(s['roundings'])}",
             "architectures (sat/unsat): " + ", ".join(f"{a} {n[0]}/{n[1]}" for a, n in sorted(s.get("archs", {}).items())),
             "",
             "| tool | runs | agree | timeout/unknown | disagree | bad counterexample | error "
             "| mean s/case | median s | max s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    names = {"bab": "verifier bab", "bab_nf": "verifier bab, falsify off",
             "bab_handover": "verifier bab, falsify off, MILP hand-over at once", "paper": "verifier paper",
             "milp": "MILP (HiGHS)", "portfolio": "verifier bab + portfolio process, falsify off",
             "process": "portfolio process alone",
             "presolve": "portfolio process alone, no LP tightening, no CP-SAT presolve, eager LP",
             "yield": "verifier bab + portfolio process, bab told it is always behind (waits for the process)",
             "alpha": "verifier bab + alpha-CROWN at the root, falsify, portfolio and MILP off",
             "local": "verifier bab, the root's local search the only attack, CROWN, portfolio and MILP off",
             "lns": "verifier bab, the neighbourhood search after 1 ms of local search, CROWN, portfolio and MILP off",
             "restarts": "verifier bab, the seed restarts after 1 ms of local search, CROWN, LNS, portfolio and MILP off",
             "scip": "exact MILP solved by SCIP (cut separation off), LP tightening on every other case",
             "crown_domains": "CP-SAT with CROWN's hidden-unit domains, eager LP, LP tightening and presolve "
                              "each on half of the cases"}
    for tool, t in s["tools"].items():
        lines.append(f"| {names[tool]} | {t['runs']} | {t['agree']} | {t['undecided']} | {t['disagree']} | "
                     f"{t['bad_cex']} | {t['errors']} | {t['mean']:.3f} | {t['median']:.3f} | {t['max']:.3f} |")
    for tool, text in FOOTNOTES.items():
        if tool in s["tools"]:
            lines += ["", f"{tool}: " + text.format(**s["tools"][tool])]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ["case_seed", "arch", "n_in", "hidden", "n_out", "rounding", "w_bits", "a_bits", "per_channel",
              "out_kind", "o_bits", "o_scale", "widths", "grid_points", "spec_kind", "n_disjuncts",
              "enumeration"] + [f"{t}{k}" for t in TOOLS for k in ("", "_s")] + ["bugs"]


def csv_text(results: list[CaseResult]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in results:
        row = dict(r.case.meta)
        row["hidden"] = "-".join(map(str, row.get("hidden", [])))
        row.setdefault("arch", "chain")
        row["widths"] = "-".join(map(str, row["widths"]))
        row["o_bits"] = row["o_bits"] if row["out_kind"] == "requant" else ""
        row["o_scale"] = row["o_scale"] if row["out_kind"] == "requant" else ""
        row["enumeration"] = r.case.truth
        for t, o in r.outcomes.items():
            row[t], row[f"{t}_s"] = o.verdict, f"{o.seconds:.4f}"
        row["bugs"] = "; ".join(r.bugs)
        w.writerow(row)
    return buf.getvalue()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds per tool and case")
    ap.add_argument("--paper-every", type=int, default=4, help="method=paper on every k-th case (0: never)")
    ap.add_argument("--out", type=Path, default=None, help="markdown results file (a .csv is written beside it)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--family", choices=("chain", "dag", "both"), default="chain",
                    help="random chain MLPs (the landed campaign), DAG QNNs, or both alternating")
    ap.add_argument("--replay", type=int, default=None, help="run one case by its case seed, verbosely")
    ap.add_argument("--tools", default=",".join(DEFAULT_TOOLS),
                    help=f"comma-separated subset of {','.join(TOOLS)}")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    tools = tuple(t for t in args.tools.split(",") if t)
    if any(t not in TOOLS for t in tools):
        ap.error(f"--tools: choose from {','.join(TOOLS)}")
    if args.replay is not None:
        r = run_case(args.replay, args.timeout, True, tools)
        c = r.case
        print(f"meta: {c.meta}\nbox: {c.spec.lower.tolist()} .. {c.spec.upper.tolist()}")
        for mat, rhs in c.spec.disjuncts:
            print(f"disjunct: {mat.tolist()} <= {rhs.tolist()}")
        print(f"model:\n{c.model}\nenumeration: {c.truth}")
        for t, o in r.outcomes.items():
            print(f"{t}: {o.verdict} ({o.seconds:.3f} s) {o.problem}")
        return 1 if r.bugs else 0
    t0 = time.perf_counter()
    results = campaign(args.cases, args.seed, args.timeout, args.paper_every, log=sys.stderr, family=args.family,
                       tools=tools)
    wall = time.perf_counter() - t0
    s = summarize(results)
    table = markdown_table(s)
    print(table)
    bugs = s["bugs"]
    print(f"BUGS: {len(bugs)}" + "".join(f"\n  case_seed={cs}: {b}" for cs, b in bugs))
    if args.out is not None:
        cmd = ".venv/bin/python benchmarks/soundness_campaign.py " + " ".join(
            sys.argv[1:] if argv is None else argv)
        doc = ["# Soundness campaign: verifier and MILP against enumeration", "",
               f"Command: `{cmd}`", "",
               f"Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; machine: "
               f"{platform.node()} ({platform.machine()}, {platform.processor() or 'cpu'}), "
               f"torch {torch.__version__}, {args.threads} torch thread(s); total wall {wall:.0f} s.", "",
               "Enumeration (`integer_forward` on every integer point of the box) is the ground truth. "
               "`agree`: decided and equal to enumeration, counterexample (if sat) inside the box and "
               "violating under `integer_forward`. Times are per case, wall clock, in process.", "",
               table, "", f"Disagreements / bugs: {len(bugs)}"]
        doc += [f"- case_seed {cs}: {b} (replay: `--replay {cs}`)" for cs, b in bugs]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out.with_suffix(".csv"), csv_text(results))
        atomic_write_text(args.out, "\n".join(doc) + "\n")
    return 1 if bugs else 0


if __name__ == "__main__":
    sys.exit(main())
