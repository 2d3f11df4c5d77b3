"""Branch and bound against exhaustive enumeration on many tiny QNNs: the verdict must equal the
oracle's (sat iff some grid point of the box violates), every sat must come with a counterexample
in the box that violates the property under the exact integer semantics."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from qa_lirpa.nn import argmax_smallest, integer_codes, integer_forward
from qa_lirpa.verify import InputSpec, Verdict, VerifierConfig, Verifier, read_vnnlib, verify
from qa_lirpa.verify.robustness import robustness_spec

from .tiny_qnn import exact_outputs, oracle, real_grid, tiny_cnn, tiny_mlp, violates


def random_box(rng, centre: np.ndarray, max_width: int) -> tuple[np.ndarray, np.ndarray]:
    """A real box around ``centre`` of integer width up to ``max_width`` per dimension, with
    fractional end points at times (so the input quantizer's rounding matters)."""
    w = rng.integers(0, max_width + 1, centre.size)
    lower = centre - w // 2 + rng.choice([0.0, 0.3, -0.4, 0.5], centre.size)
    upper = lower + w + rng.choice([0.0, 0.5, 0.2, -0.5], centre.size)
    return lower, np.maximum(upper, lower)


def random_disjuncts(rng, model, lower, upper, n_out: int, shape: tuple[int, ...] | None = None) -> list:
    """1-3 disjuncts of 1-2 rows with small integer coefficients; right-hand sides placed near the
    exact minimum of the row over the box, so that both verdicts occur and IBP alone rarely decides."""
    pts = real_grid(lower, upper, 1.0)
    y = integer_forward(model, pts.reshape((-1,) + (shape or pts.shape[1:]))).numpy()
    out = []
    for _ in range(int(rng.integers(1, 4))):
        mat = rng.integers(-2, 3, (int(rng.integers(1, 3)), n_out)).astype(float)
        vals = y @ mat.T
        shift = rng.choice([-1 / 32, 0.0, 1 / 64, 0.1])
        out.append((mat, vals.min(axis=0) + shift))
    return out


def make_case(seed: int):
    """A random tiny MLP and a property (robustness or random linear disjuncts)."""
    rng = np.random.default_rng(seed)
    n_in, n_out = 2 + seed % 2, 3
    centre = rng.integers(20, 230, n_in).astype(float)
    model = tiny_mlp(n_in, [int(rng.integers(4, 9))], n_out, torch.tensor(centre),
                     rounding=["half_up", "half_even"][seed % 2], seed=seed,
                     per_channel=seed % 3 == 1, out_act=seed % 4 >= 2)
    lower, upper = random_box(rng, centre, 12)
    if seed % 3 == 0:
        out = integer_codes(model, torch.tensor(centre)[None])
        label = int(argmax_smallest(out.dequantize())[0])
        return model, robustness_spec(out, label, lower, upper)
    return model, InputSpec(lower, upper, random_disjuncts(rng, model, lower, upper, n_out))


def check(result, model, specs, shape=None):
    specs = [specs] if isinstance(specs, InputSpec) else specs
    shape = shape or (specs[0].n_inputs,)
    truth = oracle(model, specs, shape, step=0.5)
    assert result.verdict is (Verdict.SAT if truth else Verdict.UNSAT), result.summary()
    if result.verdict is Verdict.SAT:
        x = result.counterexample
        assert x.dtype == np.float64 and x.shape == shape
        inside = [s for s in specs if np.all(x.reshape(-1) >= s.lower) and np.all(x.reshape(-1) <= s.upper)]
        y = exact_outputs(model, torch.tensor(x)[None])[0]
        assert any(violates(y, s.disjuncts) for s in inside), "counterexample not confirmed"
        assert np.array_equal(result.outputs.reshape(-1), np.array([float(v) for v in y]))
    return truth


@pytest.mark.parametrize("block", range(8))
def test_bab_equals_enumeration(block):
    verdicts = []
    for seed in range(block * 6, block * 6 + 6):
        model, spec = make_case(seed)
        verdicts.append(check(verify(model, spec, timeout=30), model, spec))
    assert len(verdicts) == 6


def test_both_verdicts_and_splitting_occur():
    """The random cases are not trivial: both verdicts, and proofs that need splitting. Branch
    and bound alone (``portfolio: none``): the portfolio's process, started right after the root
    box's bounds, wins some of these races before the first split."""
    truths, split = set(), 0
    for seed in range(0, 48, 3):
        model, spec = make_case(seed + 1)
        r = verify(model, spec, VerifierConfig(crown="never", portfolio="none"), timeout=30)
        truths.add(r.verdict)
        split += r.stats.max_depth > 0
    assert truths == {Verdict.SAT, Verdict.UNSAT} and split >= 3


@pytest.mark.parametrize("overrides", [{"method": "paper"}, {"branching": "widest", "crown": "never"},
                                       {"branching": "lookahead", "crown": "always"},
                                       {"attack_steps": 0, "random_points": 0, "batch_size": 3},
                                       {"falsify": False}, {"falsify": False, "crown": "never"},
                                       {"alpha_root": True, "crown_method": "CROWN-IBP"},
                                       {"alpha_root": True, "crown_method": "CROWN", "falsify": False},
                                       {"alpha_root": False}])
def test_variants_equal_enumeration(overrides):
    """Other settings give the same verdicts; ``falsify: false`` finds counterexamples only at
    single-point boxes, so these cases test the bounds and the splitting on their own."""
    cfg = VerifierConfig(**overrides)
    for seed in range(100, 112):
        model, spec = make_case(seed)
        check(verify(model, spec, cfg, timeout=30), model, spec)


@pytest.mark.parametrize("seed", range(3))
def test_cnn_equals_enumeration(seed):
    rng = np.random.default_rng(seed)
    centre = rng.integers(30, 220, 16).astype(float)
    model = tiny_cnn(torch.tensor(centre), rounding=["half_up", "half_even"][seed % 2], seed=seed)
    lower, upper = centre.copy(), centre.copy()
    for i in rng.choice(16, 3, replace=False):          # three free pixels
        lower[i], upper[i] = centre[i] - rng.integers(0, 5), centre[i] + rng.integers(0, 5)
    spec = InputSpec(lower, upper, random_disjuncts(rng, model, lower, upper, 3, (1, 4, 4)))
    check(verify(model, spec, timeout=30, input_shape=(1, 4, 4)), model, spec, (1, 4, 4))


def _atoms(disjunct) -> str:
    mat, rhs = disjunct
    terms = lambda row: " ".join(f"(* {float(c)!r} Y_{j})" for j, c in enumerate(row))  # noqa: E731
    return " ".join(f"(<= (+ {terms(row)}) {float(b)!r})" for row, b in zip(mat, rhs))


def test_disjuncts_with_input_bounds_from_vnnlib():
    """Disjuncts that bound inputs give several boxes (read_vnnlib), each with its own outputs."""
    for seed in range(200, 206):
        rng = np.random.default_rng(seed)
        model, spec = make_case(seed)
        cut = float(np.floor((spec.lower[0] + spec.upper[0]) / 2)) + 0.5
        d1, d2 = random_disjuncts(rng, model, spec.lower, spec.upper, 3)[0], \
            random_disjuncts(rng, model, spec.lower, spec.upper, 3)[0]
        lines = [f"(declare-const X_{i} Real)" for i in range(spec.n_inputs)]
        lines += [f"(declare-const Y_{j} Real)" for j in range(3)]
        for i, (a, b) in enumerate(zip(spec.lower, spec.upper)):
            lines += [f"(assert (>= X_{i} {float(a)!r}))", f"(assert (<= X_{i} {float(b)!r}))"]
        lines.append(f"(assert (or (and {_atoms(d1)}) (and (<= X_0 {cut!r}) {_atoms(d2)})))")
        specs = read_vnnlib("\n".join(lines) + "\n")
        assert len(specs) == 2
        check(verify(model, specs, timeout=30), model, specs)


def test_empty_and_point_boxes():
    model, spec = make_case(7)
    assert verify(model, [], timeout=5).verdict is Verdict.UNSAT
    empty = InputSpec(spec.upper + 1, spec.lower, spec.disjuncts)
    assert verify(model, empty, timeout=5).verdict is Verdict.UNSAT
    for x in real_grid(spec.lower, spec.upper, 1.0)[:12]:
        point = InputSpec(x.numpy(), x.numpy(), spec.disjuncts)
        check(verify(model, point, timeout=5), model, point)


def test_rowless_disjunct_is_sat_at_once():
    model, spec = make_case(8)
    r = verify(model, InputSpec(spec.lower, spec.upper, [(np.zeros((0, 3)), np.zeros(0))]), timeout=5)
    assert r.verdict is Verdict.SAT and r.stats.boxes_bounded <= 1


def test_timeout_is_honoured():
    """Unsat by construction (two rows that contradict each other) but no single row is refuted
    on wide boxes, so the search must go deep; timeout=1 ends within 2.5 s."""
    import time

    torch.manual_seed(0)
    centre = torch.full((12,), 128.0)
    model = tiny_mlp(12, [16], 2, centre, seed=3)
    mat = np.array([[1.0, -1.0], [-1.0, 1.0]])
    spec = InputSpec(centre.numpy() - 40, centre.numpy() + 40, [(mat, np.array([0.0, -1.0]))])
    verifier = Verifier(model, VerifierConfig(exact_fallback="none", portfolio="none"), input_shape=(12,))
    t0 = time.monotonic()
    r = verifier.verify(spec, timeout=1.0)
    assert r.verdict is Verdict.TIMEOUT and time.monotonic() - t0 < 2.5
    assert r.stats.boxes_bounded > 0 and r.stats.time_total < 2.5


def test_deadline_object_is_honoured():
    """A Deadline passed to verify is the deadline itself: one already past ends the search at once
    (timeout), one a second away ends it within 2.5 s, as the same budget in seconds would."""
    import time

    from qa_lirpa.base.deadline import Deadline

    torch.manual_seed(0)
    centre = torch.full((12,), 128.0)
    model = tiny_mlp(12, [16], 2, centre, seed=3)
    mat = np.array([[1.0, -1.0], [-1.0, 1.0]])
    spec = InputSpec(centre.numpy() - 40, centre.numpy() + 40, [(mat, np.array([0.0, -1.0]))])
    verifier = Verifier(model, VerifierConfig(exact_fallback="none", portfolio="none"), input_shape=(12,))
    verifier.problem((12,))                           # the bound machinery is built beforehand
    t0 = time.monotonic()
    r = verifier.verify(spec, timeout=Deadline.after(-1.0))
    assert r.verdict is Verdict.TIMEOUT and time.monotonic() - t0 < 1.0, r.stats.time_total
    t0 = time.monotonic()
    r = verify(model, spec, VerifierConfig(exact_fallback="none", portfolio="none"), timeout=Deadline.after(1.0), input_shape=(12,))
    assert r.verdict is Verdict.TIMEOUT and time.monotonic() - t0 < 2.5


def test_wrong_sizes_are_errors():
    model, spec = make_case(9)
    with pytest.raises(ValueError, match="inputs"):
        verify(model, InputSpec(np.zeros(5), np.ones(5), spec.disjuncts), timeout=5, input_shape=(5,))
    with pytest.raises(ValueError, match="outputs"):
        verify(model, InputSpec(spec.lower, spec.upper, [(np.ones((1, 4)), np.zeros(1))]), timeout=5)


def test_continuous_inputs_prove_find_or_answer_unknown():
    """Without a QuantInput the search runs on real boxes: a property proved by bounds is unsat, a
    violated one is sat (confirmed by the float64 forward), an undecidable tie is unknown."""
    centre = torch.tensor([60.0, 120.0])
    body = torch.nn.Sequential(*list(tiny_mlp(2, [5], 2, centre, seed=4))[1:])
    lower, upper = centre.numpy() - 2, centre.numpy() + 2
    with torch.no_grad():
        ys = body(real_grid(lower, upper, 0.05))
    lo, hi = ys.min(0).values.numpy(), ys.max(0).values.numpy()
    e0 = np.array([[1.0, 0.0]])
    proved = verify(body, InputSpec(lower, upper, [(e0, np.array([lo[0] - 2.0]))]), timeout=10)
    assert proved.verdict is Verdict.UNSAT
    found = verify(body, InputSpec(lower, upper, [(e0, np.array([hi[0]]))]), timeout=10)
    assert found.verdict is Verdict.SAT
    with torch.no_grad():
        y = body(torch.tensor(found.counterexample)[None])[0]
    assert float(y[0]) <= hi[0]
    # y_0 <= y_0 - 1e-3 and y_0 >= y_0 - 1e-3 ... a contradiction no box bound refutes where the
    # rows straddle: never sat; with little time, unknown (or unsat if bounds happen to suffice)
    tight = np.array([[1.0, -1.0], [-1.0, 1.0]])
    mid = float(np.median((ys[:, 0] - ys[:, 1]).numpy()))
    r = verify(body, InputSpec(lower, upper, [(tight, np.array([mid, -mid - 1e-9]))]), timeout=1.0)
    assert r.verdict in (Verdict.UNKNOWN, Verdict.UNSAT)


def test_verifier_reuse_and_paper_config():
    model, spec = make_case(10)
    v = Verifier(model, VerifierConfig(method="paper"))
    assert v.config.batch_size == 1 and v.config.branching == "widest" and v.config.crown == "never"
    a, b = v.verify(spec, timeout=30), v.verify(spec, timeout=30)
    assert a.verdict is b.verdict
    check(a, model, spec)
