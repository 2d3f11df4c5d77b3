"""The verifier's configuration: one typed dataclass, loadable from YAML with
:func:`qa_lirpa.config.load_config` (``load_config(VerifierConfig, "verify_default")``)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal


@dataclass
class VerifierConfig:
    """Settings of :func:`qa_lirpa.verify.verify`.

    ``method``: ``"bab"`` (batched exact-IBP + CROWN branch and bound, sensitivity branching,
    attacks on promising boxes) or ``"paper"`` (the QA-IBP paper's Algorithm 1 with integer
    bisection: IBP only, widest-dimension split, one box at a time, an attack on every unresolved
    box). The verdicts of both are sound and complete on the input grid; only the speed differs.

    ``portfolio="auto"`` (default; method bab only): once the root box's bounds have not decided
    a property, a forked process runs the exact procedure on the whole property (on models up to
    1024 hidden units the MILP solved by SCIP where PySCIPOpt is importable, else CP-SAT where
    OR-Tools is, else the MILP by HiGHS) while the root attacks and branch and bound go on here;
    the first definitive answer wins (:mod:`qa_lirpa.verify.portfolio`). On the AAAI'21 MNIST
    benchmark it decides the instances that neither branch and bound nor the MILP fallback decides
    in 20 s (sample 264); on the MNIST conv nets it decides nearly every hard image, and
    ``portfolio_yield`` leaves it the cores while branch and bound is behind
    (benchmarks/results/verifier_reach.md).

    ``exact_fallback="milp"`` (method bab only): once ``exact_after`` of the time budget has gone
    and boxes are still open, the exact MILP procedure (:mod:`qa_lirpa.exact`, HiGHS) takes
    over: one MILP per open box (at most ``exact_max_boxes`` of them, least safe first) or one
    MILP on the bounding box of all open boxes, each over the integer sub-box of the input grid
    and only for the disjuncts still alive there, with the time that is left. A MILP
    counterexample is re-checked by the exact semantics before it is reported; a MILP that fails
    or stops early hands the (unchanged) search back to branch and bound. ``"cpsat"`` does the
    same with the CP-SAT procedure (:mod:`qa_lirpa.exact.cpsat`; without OR-Tools installed it
    is not used, the reason is in ``VerifyStats.exact``). Models the MILP cannot
    encode (continuous inputs, float32 rounding, other layers) run plain branch and bound; the
    reason is in ``VerifyStats.exact``.
    """

    method: Literal["bab", "paper"] = "bab"
    #: most boxes bounded in one call (the batch also shrinks to keep one call under batch_time)
    batch_size: int = 2048
    #: target seconds per batch; bounds how late a timeout is noticed
    batch_time: float = 0.2
    #: CROWN on boxes exact IBP could not decide: "auto" keeps it on while it pays off
    crown: Literal["auto", "always", "never"] = "auto"
    #: "CROWN" (linear relaxation bounds for every layer), "CROWN-IBP" (interval bounds inside,
    #: CROWN for the property: far cheaper on large networks) or "auto" (CROWN up to
    #: ``crown_auto_units`` hidden units, else CROWN-IBP)
    crown_method: Literal["auto", "CROWN", "CROWN-IBP"] = "auto"
    #: 4096 since issue 14: the shipped MNIST small_conv models (3168 hidden units) get full CROWN,
    #: which on eps-4 images 0-1999 left 15 timeouts instead of 19 and took 247 s instead of 303 s
    #: wall (benchmarks/results/certify_full/eps4_crown)
    crown_auto_units: int = 4096
    #: alpha-CROWN (optimised slopes; the rounding steps' lines too, qa_lirpa.operators.step) on
    #: the root box, for the rows that CROWN and the root attack leave open (full CROWN only).
    #: On by default since issue 14: on the eps=4 MNIST model it proves some of the images that
    #: timed out, for about 2 s per open root (benchmarks/results/certify_full/eps4_alpha)
    alpha_root: bool = True
    #: CROWN on the boxes of a search whose root ran alpha-CROWN uses the root's optimised slopes
    #: of the rounding steps (sound on every sub-box; one CROWN pass per box as before)
    alpha_reuse: bool = True
    alpha_iterations: int = 20
    #: "sensitivity": width times the box's linearized gradient of the worst specification row;
    #: "widest": the widest dimension (first on ties); "lookahead": the best of the top
    #: ``lookahead_k`` sensitivity candidates by exact IBP of both children
    branching: Literal["sensitivity", "widest", "lookahead"] = "sensitivity"
    lookahead_k: int = 4
    #: counterexample search besides single-point boxes (attacks, exact checks of box corners
    #: and centres); without it the search still finds every counterexample, only later
    falsify: bool = True
    #: exact checks of the centres of this many least-safe open boxes per batch
    centre_checks: int = 64
    #: open grid boxes with at most this many points are decided point by point, in one batch,
    #: instead of being split further (1: only single points)
    leaf_points: int = 64
    #: PGD on the fake-quantized model (straight-through gradients) at the root
    attack_steps: int = 20
    attack_restarts: int = 8
    #: attack the ``attack_boxes`` least-safe open boxes every ``attack_every`` batches (0: never)
    attack_every: int = 8
    attack_boxes: int = 8
    #: random grid points checked exactly at the root
    random_points: int = 32
    #: grid models: once CROWN, the root attack and alpha-CROWN have left the root open, a greedy
    #: descent on the input grid (qa_lirpa.verify.attack.LocalSearch) from the
    #: ``local_search_starts`` best attack points, for at most this many seconds of the process's
    #: CPU time, in slices before the batches (0: never).
    #: Since issue 14: PGD's snapped points can end a few pixel moves short of a violation
    local_search_s: float = 3.0
    #: ... times this factor on models where no seed restarts follow it (``restart_s``: only
    #: where the portfolio runs SCIP) and its best point is then a near miss (within a tenth of
    #: the root bound's depth from violating: ``search.near_miss``): there the descent is the
    #: main falsifier. Since issue 14: on the eps=4 MNIST conv net the descent found its two hard
    #: counterexamples within 3 s in 28 of 40 seeded runs, within 6 s in 35; on the Fashion-MNIST
    #: networks, where SCIP's restarts find them, 2 more seconds of descent only delayed those
    #: finds (by 5-7 s), and on robust images it takes the exact process's time
    local_search_solo: float = 2.0
    local_search_starts: int = 2
    #: ... each descent step scoring the single-pixel moves that the straight-through gradient
    #: ranks best, this many (all of them where there are at most 2048). Since issue 14: cheap
    #: steps make more descents in the budget; on the eps=4 MNIST conv net's two hard
    #: counterexamples, 20 seeded 3-s runs each, the descent found them in 13 of the 40 runs with
    #: 512, in 32 with 64 (``benchmarks/falsify_seeds.py``)
    local_search_moves: int = 64
    #: once the root's local search has ended without a counterexample, while branch and bound
    #: is behind (Search.eta), at most this many CPU seconds of short runs of SCIP's MILP on the
    #: whole property, each with another random seed
    #: (1, 2, ...: the portfolio's SCIP process runs seed 0) and about ``restart_round_s`` CPU
    #: seconds (qa_lirpa.verify.attack.Restarts) -- only on models where ``portfolio: auto`` runs
    #: SCIP (at most 1024 hidden units, SCIP encodes the model exactly); it finds counterexamples,
    #: never proofs (0: never). Since issue 14: on the AAAI'21-family Fashion-MNIST networks the
    #: open instances are counterexamples that SCIP under another seed finds in 1-2 s
    restart_s: float = 10.0
    restart_round_s: float = 2.0
    #: then at most this many CPU seconds of CP-SAT on neighbourhoods of the local search's best
    #: point (qa_lirpa.verify.attack.NeighbourhoodSearch: ``lns_size`` inputs free at first, the
    #: others fixed; rounds of at most 1 s) -- only where CP-SAT encodes the model exactly; it
    #: finds counterexamples, never proofs (0: never). Since issue 14: on the AAAI'21-family
    #: Fashion-MNIST network the descent stops one output step short of violations that a
    #: neighbourhood of 128 pixels completes in 0.1-2 s
    lns_s: float = 2.0
    lns_size: int = 128
    #: memory for queued boxes; above it batches shrink to 16 boxes, so the queue stays below
    #: this plus 16 boxes per level of the search tree
    queue_mem_mb: int = 1024
    #: CROWN bounds count as a proof only above this (float error of the bound computation)
    crown_tol: float = 1e-7
    #: widening (in quantization steps) before each rounding inside CROWN (see bounded_module)
    quant_slack: float = 1e-6
    #: the exact procedure for the boxes branch and bound has not closed: "milp" (HiGHS),
    #: "cpsat" (OR-Tools CP-SAT, optional dependency: :mod:`qa_lirpa.exact.cpsat`) or "none"
    exact_fallback: Literal["none", "milp", "cpsat"] = "milp"
    #: hand over to it after this fraction of the time budget (0: right after the root box)
    exact_after: float = 0.1
    #: one MILP per open box when at most this many are open, else one on their bounding box
    exact_max_boxes: int = 16
    #: the MILP gets at most this share of the time left at the hand-over; if it has not decided
    #: by then, branch and bound continues with the rest (the MILP on a conv net can need longer
    #: than branch and bound would)
    exact_share: float = 0.75
    #: the exact procedure run in a second (forked) process beside branch and bound, on the whole
    #: property, once the root box's bounds have not decided it (qa_lirpa.verify.portfolio): "auto"
    #: (SCIP's MILP up to 1024 hidden units where PySCIPOpt is importable, else CP-SAT where OR-Tools
    #: is, else HiGHS's MILP), "scip", "cpsat", "milp" or "none". The first
    #: definitive answer wins; the other side is stopped. The exact_fallback hand-over still runs
    #: in this process at exact_after (see exact_beside_portfolio). Uses a second core while it
    #: runs.
    portfolio: Literal["none", "auto", "cpsat", "milp", "scip"] = "auto"
    #: start the portfolio's process only after this many seconds of branch and bound (0: right
    #: after the root box's bounds, beside the root attacks and alpha-CROWN), so that easy
    #: properties never fork
    portfolio_after: float = 0.0
    #: while the portfolio's process runs, branch and bound is behind (at its rate so far it
    #: would not prove the rest of the property by the deadline: Search.eta) and the cores are
    #: all busy (bab.cores_busy: e.g. the other worker of a two-worker certify run), this process
    #: waits for the exact process this share of the time between its batches (1: until it
    #: answers); 0: never. The cores then go to the exact process: on the eps=4 MNIST conv net it decides
    #: the hard images while branch and bound proves nothing (with the process started right
    #: after the root box's bounds and exact_beside_portfolio auto, 36 slowest images, two
    #: processes side by side: 21 -> 18 timeouts; benchmarks/results/certify_full/eps4_yield)
    portfolio_yield: float = 0.9
    #: whether the exact_fallback hand-over runs while the portfolio's process runs ("on"), or
    #: waits until the process has stopped undecided ("off"); "auto": on up to 1024 hidden units
    #: (on the AAAI'21 MLP the MILP hand-over, with its LP tightening, falsified samples 300, 303
    #: and 352 at eps 4 that the CP-SAT process did not), off above (on the eps=4 MNIST conv net
    #: the MILP without LP tightening decided nothing and took a core from the process)
    exact_beside_portfolio: Literal["auto", "on", "off"] = "auto"
    #: the exact procedures' (the portfolio's process and the exact_fallback hand-over) rigorous
    #: LP bound tightening of every hidden unit before they solve: "on", "off", or "auto" (on up
    #: to 1024 hidden units, e.g. the AAAI'21 MLP; off above, e.g. the MNIST small_conv models,
    #: where the LPs alone took about 20 s on hard images and CP-SAT without them proved some in
    #: 3-13 s: benchmarks/results/certify_full/eps4_tighten)
    exact_tighten: Literal["auto", "on", "off"] = "auto"
    #: CP-SAT's presolve in the exact procedures (the portfolio's process, exact_fallback "cpsat"):
    #: "on", "off", or "auto" (on up to 1024 hidden units and where the process has CROWN's
    #: domains, cpsat_crown_domains; off above without them: on the eps=4 MNIST conv
    #: net's 35 slowest images, two processes side by side, 20 instead of 25 timeouts;
    #: benchmarks/results/certify_full/eps4_presolve/ablation.md; with the domains presolve is
    #: the faster again: benchmarks/results/certify_full/eps4_domains_presolve)
    cpsat_presolve: Literal["auto", "on", "off"] = "auto"
    #: CP-SAT's LP relaxation in the exact procedures: "lazy" (constraints join the LP as cuts once
    #: violated, CP-SAT's default), "eager" (all from the start, as CP-SAT's max_lp worker), or
    #: "auto" (lazy up to 1024 hidden units, eager above). Full MNIST test sets, 20 s, 2 workers:
    #: eps=4 model 15 timeouts eager / 17 lazy, eps=1 model 12 eager / 10 lazy
    #: (benchmarks/results/certify_full/eps{4,1}_hull_full)
    cpsat_lp: Literal["auto", "lazy", "eager"] = "auto"
    #: CP-SAT in the portfolio's process gets the hidden units' domains from the bounds CROWN
    #: computes for the rounding steps' inputs on the root box
    #: (:meth:`~qa_lirpa.verify.grid.GridProblem.step_code_bounds`), besides the exact interval
    #: boxes (and the LP tightening's bounds where that is on)
    cpsat_crown_domains: bool = True
    #: HiGHS threads for the MILP (0: HiGHS's default, half the cores); CP-SAT workers (0: one)
    exact_threads: int = 0
    #: "auto" (cuda when available), "cpu", "cuda" or a torch device string
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [(self.batch_size >= 1, "batch_size must be >= 1"),
                  (self.batch_time > 0, "batch_time must be > 0"),
                  (self.lookahead_k >= 1, "lookahead_k must be >= 1"),
                  (self.attack_steps >= 0 and self.attack_restarts >= 0, "attack sizes must be >= 0"),
                  (self.attack_every >= 0 and self.attack_boxes >= 0, "attack_every/boxes must be >= 0"),
                  (self.random_points >= 0 and self.centre_checks >= 0, "random_points/centre_checks must be >= 0"),
                  (self.local_search_s >= 0 and self.local_search_starts >= 0,
                   "local_search_s/local_search_starts must be >= 0"),
                  (self.local_search_moves >= 1 and self.local_search_solo >= 0,
                   "local_search_moves must be >= 1 and local_search_solo >= 0"),
                  (self.lns_s >= 0 and self.lns_size >= 1, "lns_s must be >= 0 and lns_size >= 1"),
                  (self.restart_s >= 0 and self.restart_round_s > 0,
                   "restart_s must be >= 0 and restart_round_s > 0"),
                  (self.queue_mem_mb >= 1, "queue_mem_mb must be >= 1"),
                  (self.leaf_points >= 1, "leaf_points must be >= 1"),
                  (self.crown_tol >= 0 and self.quant_slack >= 0, "tolerances must be >= 0"),
                  (self.exact_fallback in ("none", "milp", "cpsat"),
                   "exact_fallback must be 'none', 'milp' or 'cpsat'"),
                  (self.portfolio in ("none", "auto", "cpsat", "milp", "scip"),
                   "portfolio must be 'none', 'auto', 'cpsat', 'milp' or 'scip'"),
                  (self.portfolio_after >= 0, "portfolio_after must be >= 0"),
                  (0.0 <= self.portfolio_yield <= 1.0, "portfolio_yield must be in [0, 1]"),
                  (self.exact_beside_portfolio in ("auto", "on", "off"),
                   "exact_beside_portfolio must be 'auto', 'on' or 'off'"),
                  (self.exact_tighten in ("auto", "on", "off"), "exact_tighten must be 'auto', 'on' or 'off'"),
                  (self.cpsat_presolve in ("auto", "on", "off"), "cpsat_presolve must be 'auto', 'on' or 'off'"),
                  (self.cpsat_lp in ("auto", "lazy", "eager"), "cpsat_lp must be 'auto', 'lazy' or 'eager'"),
                  (0.0 <= self.exact_after <= 1.0, "exact_after must be in [0, 1]"),
                  (0.0 < self.exact_share <= 1.0, "exact_share must be in (0, 1]"),
                  (self.exact_max_boxes >= 0 and self.exact_threads >= 0,
                   "exact_max_boxes/exact_threads must be >= 0")]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"VerifierConfig: {message}")

    def effective(self) -> "VerifierConfig":
        """The settings actually used: ``method="paper"`` fixes its own choices (no MILP either)."""
        if self.method != "paper":
            return self
        return replace(self, batch_size=1, crown="never", alpha_root=False, local_search_s=0.0, lns_s=0.0,
                       restart_s=0.0, branching="widest",
                       attack_every=1, attack_boxes=1, exact_fallback="none", portfolio="none",
                       leaf_points=1)


__all__ = ["VerifierConfig"]
