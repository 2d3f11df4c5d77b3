"""Tests of the pure VNN-LIB 1.0 reader/writer in qa_lirpa.base.vnnlib (formerly qa_lirpa.verify.vnnlib)."""
from __future__ import annotations

import gzip
import itertools
import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qa_lirpa.base import vnnlib
from qa_lirpa.base.vnnlib import (
    InputSpec, VnnlibError, parse_vnnlib_text, read_vnnlib, robustness_property, write_vnnlib,
)

ROBUSTNESS = """\
; Robustness property, label 1
(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(declare-const Y_2 Real)
(assert (<= X_0 0.6))
(assert (>= X_0 0.4))
(assert (<= X_1 -0.1))
(assert (>= X_1 -0.3))
(assert (or
    (and (>= Y_0 Y_1))
    (and (>= Y_2 Y_1))
))
"""


def decls(nx: int, ny: int) -> str:
    return "".join(f"(declare-const X_{i} Real)\n" for i in range(nx)) + "".join(
        f"(declare-const Y_{j} Real)\n" for j in range(ny))


def box(bounds: list[tuple[float, float]]) -> str:
    lines = [f"(assert (>= X_{i} {lo}))\n(assert (<= X_{i} {hi}))\n" for i, (lo, hi) in enumerate(bounds)]
    return "".join(lines)


def up(text: str) -> float:
    """The smallest float64 >= the decimal ``text`` (how lower bounds and output rhs are read)."""
    from fractions import Fraction

    q, f = Fraction(text), float(text)
    return float(np.nextafter(f, np.inf)) if Fraction(f) < q else f


def down(text: str) -> float:
    """The largest float64 <= the decimal ``text`` (how upper bounds are read)."""
    return -up(text[1:] if text.startswith("-") else "-" + text)


def assert_disjuncts(actual, expected) -> None:
    assert len(actual) == len(expected)
    for (m, r), (em, er) in zip(actual, expected):
        assert m.dtype == np.float64 and r.dtype == np.float64
        em = np.asarray(em, dtype=np.float64).reshape(-1, m.shape[1])
        assert m.shape == em.shape
        np.testing.assert_array_equal(m, em)
        np.testing.assert_array_equal(r, np.asarray(er, dtype=np.float64))


def test_standard_robustness_file_exact() -> None:
    (spec,) = parse_vnnlib_text(ROBUSTNESS, n_inputs=2, n_outputs=3)
    assert isinstance(spec, InputSpec)
    assert spec.lower.dtype == np.float64 and spec.lower.shape == (2,)
    np.testing.assert_array_equal(spec.lower, [0.4, -0.3])
    np.testing.assert_array_equal(spec.upper, [0.6, -0.1])
    assert_disjuncts(spec.disjuncts, [([[-1.0, 1.0, 0.0]], [0.0]), ([[0.0, 1.0, -1.0]], [0.0])])
    assert spec.n_inputs == 2 and spec.n_outputs == 3


def test_several_top_level_asserts_are_a_conjunction() -> None:
    text = decls(1, 2) + box([(0, 1)]) + (
        "(assert (<= Y_0 3.5))\n(assert (>= Y_0 1e-3))\n(assert (or (and (>= Y_1 Y_0)) (and (<= Y_1 -1))))\n")
    (spec,) = parse_vnnlib_text(text)
    assert_disjuncts(spec.disjuncts, [
        ([[1, 0], [-1, 0], [1, -1]], [3.5, up("-1e-3"), 0.0]),
        ([[1, 0], [-1, 0], [0, 1]], [3.5, up("-1e-3"), -1.0]),
    ])


def test_disjuncts_with_input_bounds_give_boxes() -> None:
    text = decls(2, 2) + box([(0, 1), (0, 1)]) + """(assert (or
        (and (<= X_0 0.5) (>= Y_0 Y_1))
        (and (>= X_0 0.5) (<= Y_0 0))
        (and (<= X_0 0.5) (<= Y_1 2))
        (and (>= X_1 0.25))
        (and (>= X_1 2) (<= Y_0 0))
    ))"""
    specs = parse_vnnlib_text(text)
    assert len(specs) == 3  # the X_1 >= 2 box is empty and dropped; two X_0 <= 0.5 conjuncts grouped
    np.testing.assert_array_equal(specs[0].upper, [0.5, 1])
    assert_disjuncts(specs[0].disjuncts, [([[-1, 1]], [0]), ([[0, 1]], [2])])
    np.testing.assert_array_equal(specs[1].lower, [0.5, 0])
    assert_disjuncts(specs[1].disjuncts, [([[1, 0]], [0])])
    np.testing.assert_array_equal(specs[2].lower, [0, 0.25])
    assert specs[2].disjuncts[0][0].shape == (0, 2)  # no output rows: any output violates
    assert specs[2].disjuncts[0][1].shape == (0,)


def test_strict_operators() -> None:
    """Strict input bounds exclude the bound (next float64 inward); output rows are bounded as
    non-strict (a superset of the violations) and kept strict for the exact check."""
    from fractions import Fraction

    text = decls(1, 2) + "(assert (> X_0 -1))\n(assert (< X_0 1))\n(assert (< Y_0 Y_1))\n(assert (> Y_0 2))"
    (spec,) = parse_vnnlib_text(text)
    np.testing.assert_array_equal([spec.lower[0], spec.upper[0]], [np.nextafter(-1.0, 0), np.nextafter(1.0, 0)])
    assert_disjuncts(spec.disjuncts, [([[1, -1], [-1, 0]], [0, -2])])
    assert spec.exact == [[({0: 1, 1: -1}, Fraction(0), True), ({0: -1}, Fraction(-2), True)]]
    assert vnnlib.violates_exactly(spec, [3.0, 4.0])
    assert not vnnlib.violates_exactly(spec, [3.0, 3.0])          # Y_0 < Y_1 fails on the boundary
    assert not vnnlib.violates_exactly(spec, [2.0, 4.0])          # Y_0 > 2 fails on the boundary


def test_tiny_decimals_are_not_rounded_to_zero() -> None:
    text = decls(1, 1) + "(assert (>= X_0 1e-400))\n(assert (<= X_0 1))\n(assert (<= Y_0 -1e-400))"
    (spec,) = parse_vnnlib_text(text)
    assert spec.lower[0] == 5e-324                               # the smallest float64 > 0
    assert spec.disjuncts[0][1][0] == 0.0                        # rhs rounded up: a superset
    assert not vnnlib.violates_exactly(spec, [0.0])              # 0 <= -1e-400 is false
    assert vnnlib.violates_exactly(spec, [-5e-324])


def test_comments_and_multiline_statements() -> None:
    text = """; header ((( with parentheses
(declare-const   X_0
    Real) ; trailing comment )
(declare-const Y_0 Real)
(assert
  (and ; comment inside
     (>= X_0
         0)
     (<= X_0 1)))
(assert (<= Y_0 ; split
   7))"""
    (spec,) = parse_vnnlib_text(text)
    np.testing.assert_array_equal(spec.upper, [1])
    assert_disjuncts(spec.disjuncts, [([[1]], [7])])


def test_numbers_scientific_and_negative() -> None:
    text = decls(3, 1) + """(assert (>= X_0 1e-3)) (assert (<= X_0 2.5E+02))
    (assert (>= X_1 -0.5)) (assert (<= X_1 (- 0.5)))
    (assert (>= X_2 -2.5E-02)) (assert (<= X_2 .5))
    (assert (<= (+ Y_0 (* 2 Y_0) (- Y_0 1.5)) (- 4 1)))"""
    (spec,) = parse_vnnlib_text(text)
    np.testing.assert_array_equal(spec.lower, [up("1e-3"), -0.5, up("-0.025")])
    np.testing.assert_array_equal(spec.upper, [250.0, -0.5, 0.5])
    assert_disjuncts(spec.disjuncts, [([[4.0]], [4.5])])


def test_gz_file_and_path_types(tmp_path: Path) -> None:
    plain, packed = tmp_path / "p.vnnlib", tmp_path / "p.vnnlib.gz"
    plain.write_text(ROBUSTNESS)
    with gzip.open(packed, "wt") as f:
        f.write(ROBUSTNESS)
    for source in (plain, str(plain), packed, str(packed)):
        (spec,) = read_vnnlib(source)
        np.testing.assert_array_equal(spec.lower, [0.4, -0.3])
        assert len(spec.disjuncts) == 2
    packed.write_bytes(gzip.compress(b"; nothing declared\n"))
    with pytest.raises(VnnlibError, match=re.escape(f"{packed}:1:1: no input variables")):
        read_vnnlib(packed)


def test_round_trip_write_read(tmp_path: Path) -> None:
    lower, upper, disjuncts = robustness_property([0.0, -1.0, 0.25], [1.0, 1.0, 0.5], 2, 4)
    disjuncts.append((np.array([[0.5, -3.0, 0.0, 1.0], [0.0, 0.0, -1.0, 0.0]]), np.array([1e-3, -2.0])))
    disjuncts.append((np.zeros((0, 4)), np.zeros(0)))
    for name in ("r.vnnlib", "r.vnnlib.gz"):
        write_vnnlib(tmp_path / name, lower, upper, disjuncts, comment="line one\nline two")
        (spec,) = read_vnnlib(tmp_path / name, n_inputs=3, n_outputs=4)
        np.testing.assert_array_equal(spec.lower, lower)
        np.testing.assert_array_equal(spec.upper, upper)
        assert_disjuncts(spec.disjuncts, disjuncts)
    assert sorted(os.listdir(tmp_path)) == ["r.vnnlib", "r.vnnlib.gz"]  # no temp files left
    text = (tmp_path / "r.vnnlib").read_text()
    assert text.startswith("; line one\n; line two\n") and "(<= Y_2 Y_0)" in text


def test_robustness_property_rows() -> None:
    lo, hi, ds = robustness_property(np.zeros(2), np.ones(2), 0, 3)
    assert_disjuncts(ds, [([[1, -1, 0]], [0]), ([[1, 0, -1]], [0])])
    with pytest.raises(ValueError):
        robustness_property(np.zeros(2), np.ones(2), 3, 3)


HEAD = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"
BOXED = HEAD + "(assert (>= X_0 0))\n(assert (<= X_0 1))\n"  # the next line is line 5


@pytest.mark.parametrize("text, line, col, words", [
    (HEAD + "(assert (<= Y_0 1)))\n", 3, 20, "unbalanced ')'"),
    (HEAD + "(assert (<= Y_0 1)\n", 3, 1, "unbalanced '('"),
    (BOXED + "(assert (<= Z_0 1))", 5, 13, "unknown variable 'Z_0'"),
    (BOXED + "  (assert (<= Y_0 1.2.3))", 5, 19, "bad number '1.2.3'"),
    (BOXED + "(assert (<= Y_0 1e))", 5, 17, "bad number"),
    (BOXED + "(assert (and (<= Y_0 0)\n   (<= X_0 Y_0)))", 6, 4, "input (X) with output (Y)"),
    (BOXED + "(declare-const X_1 Real)\n(assert (<= X_0 X_1))", 6, 9, "one X variable"),
    (HEAD + "(assert (<= X_0 1))\n(assert (<= Y_0 0))", 1, 16, "X_0 has no finite lower bound"),
    (BOXED + "(assert (<= Y_1 1))", 5, 13, "undeclared variable Y_1"),
    (BOXED + "(declare-fun Y_1 () Real)", 5, 2, "unknown command 'declare-fun'"),
    (BOXED + "(declare-const X_0 Real)", 5, 16, "duplicate declaration of X_0"),
    ("(declare-const X_0 Int)", 1, 20, "unsupported type 'Int'"),
    (BOXED + "(assert (not (<= Y_0 1)))", 5, 10, "unsupported operator 'not'"),
    (BOXED + "(assert (<= (* Y_0 Y_0) 1))", 5, 13, "nonlinear"),
    (HEAD + "(declare-const X_2 Real)", 3, 16, "X_1 is not declared"),
    (BOXED + "X_0", 5, 1, "expected '('"),
    ("", 1, 1, "no input variables"),
])
def test_malformed_files_report_location(text: str, line: int, col: int, words: str) -> None:
    with pytest.raises(VnnlibError) as info:
        parse_vnnlib_text(text, source="bad.vnnlib")
    err = info.value
    assert str(err).startswith(f"bad.vnnlib:{line}:{col}: "), str(err)
    assert (err.path, err.line, err.col) == ("bad.vnnlib", line, col)
    assert words in str(err)
    assert isinstance(err, ValueError)
    assert str(pickle.loads(pickle.dumps(err))) == str(err)


def test_declared_counts_checked() -> None:
    with pytest.raises(VnnlibError, match=r"<string>:2:16: 1 output variables declared, expected 3"):
        parse_vnnlib_text(BOXED + "(assert (<= Y_0 1))", n_outputs=3)
    with pytest.raises(VnnlibError, match=r"1 input variables declared, expected 2"):
        parse_vnnlib_text(BOXED + "(assert (<= Y_0 1))", n_inputs=2)


def test_trivial_formulas() -> None:
    assert parse_vnnlib_text(BOXED + "(assert (or))") == []
    assert parse_vnnlib_text(BOXED + "(assert (and (<= Y_0 1) (<= 2 1)))") == []
    (spec,) = parse_vnnlib_text(BOXED + "(assert (and (<= 1 2) (= Y_0 3)))")
    assert_disjuncts(spec.disjuncts, [([[1], [-1]], [3, -3])])


def test_dnf_blowup_is_guarded() -> None:
    text = BOXED + "".join(f"(assert (or (<= Y_0 {i}) (>= Y_0 {i})))\n" for i in range(17))
    with pytest.raises(VnnlibError, match=r"<string>:21:1: property expands to more than 100000"):
        parse_vnnlib_text(text)


def test_ten_thousand_inputs_parse_fast() -> None:
    n, m = 10_000, 10
    rng = np.random.default_rng(0)
    lo = np.round(rng.uniform(-1, 0, n), 6)
    parts = [decls(n, m)]
    parts += [f"(assert (<= X_{i} {lo[i] + 0.5}))\n(assert (>= X_{i} {lo[i]}))\n" for i in range(n)]
    parts.append("(assert (or\n" + "".join(f"  (and (>= Y_{k} Y_3))\n" for k in range(m) if k != 3) + "))\n")
    text = "".join(parts)
    start = time.perf_counter()
    (spec,) = parse_vnnlib_text(text, n_inputs=n, n_outputs=m)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, elapsed
    np.testing.assert_array_equal(spec.lower, [up(repr(float(v))) for v in lo])
    assert len(spec.disjuncts) == m - 1 and spec.disjuncts[0][0].shape == (1, m)


def test_module_is_pure() -> None:
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('vnnlib_alone', {vnnlib.__file__!r})\n"
            "mod = importlib.util.module_from_spec(spec); sys.modules['vnnlib_alone'] = mod\n"
            "spec.loader.exec_module(mod)\n"
            "assert not {'torch', 'qa_lirpa'} & set(sys.modules), sorted(sys.modules)\n"
            "assert issubclass(mod.VnnlibError, ValueError)\n")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- property tests -------------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@st.composite
def properties(draw):
    nx, ny = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    lower = np.array(draw(st.lists(st.floats(-1e6, 1e6), min_size=nx, max_size=nx)))
    upper = lower + np.array(draw(st.lists(st.floats(0, 1e3), min_size=nx, max_size=nx)))
    disjuncts = []
    for _ in range(draw(st.integers(1, 4))):
        k = draw(st.integers(0, 3))
        mat = np.array(draw(st.lists(st.sampled_from([-2.5, -1.0, 0.0, 0.5, 1.0, 3.0]),
                                     min_size=k * ny, max_size=k * ny))).reshape(k, ny)
        mat[np.all(mat == 0, axis=1), 0] = 1.0
        disjuncts.append((mat, np.array(draw(st.lists(finite, min_size=k, max_size=k)))))
    return lower, upper, disjuncts


@settings(max_examples=60, deadline=None)
@given(properties())
def test_write_read_round_trip_property(prop) -> None:
    lower, upper, disjuncts = prop
    text = vnnlib.format_vnnlib(lower, upper, disjuncts, n_outputs=disjuncts[0][0].shape[1])
    (spec,) = read_vnnlib(text)
    np.testing.assert_array_equal(spec.lower, lower)
    np.testing.assert_array_equal(spec.upper, upper)
    assert_disjuncts(spec.disjuncts, disjuncts)


GRID = ["-1", "-0.5", "0", "0.5", "1"]
OPS = ["<=", ">=", "<", ">", "="]


def atoms():
    y = st.sampled_from(["Y_0", "Y_1", "(- Y_1)", "(+ Y_0 (* 2 Y_1))", "(- Y_0 Y_1 0.5)"])
    x = st.sampled_from(["X_0", "X_1", "(* 2 X_0)"])
    c = st.sampled_from(GRID)
    pair = st.one_of(st.tuples(y, y), st.tuples(y, c), st.tuples(c, y), st.tuples(x, c), st.tuples(c, x))
    return st.builds(lambda op, p: f"({op} {p[0]} {p[1]})", st.sampled_from(OPS), pair)


def combine(sub):
    children = st.lists(sub, min_size=1, max_size=3)
    return st.builds(lambda op, xs: f"({op} {' '.join(xs)})", st.sampled_from(["and", "or"]), children)


formulas = st.recursive(atoms(), combine, max_leaves=8)


def sexpr(text: str):
    stack: list[list] = [[]]
    for tok in re.findall(r"\(|\)|[^\s()]+", text):
        if tok == "(":
            stack.append([])
        elif tok == ")":
            done = stack.pop()
            stack[-1].append(done)
        else:
            stack[-1].append(tok)
    return stack[0]


def evaluate(node, env):
    """Direct (vectorised) semantics, strict comparisons strict (the constants are dyadic, so
    float64 evaluates them exactly)."""
    if isinstance(node, str):
        return env[node] if node in env else float(node)
    op, *args = node
    vals = [evaluate(a, env) for a in args]
    if op in ("and", "or"):
        return np.all(vals, axis=0) if op == "and" else np.any(vals, axis=0)
    if op == "+":
        return sum(vals)
    if op == "-":
        return -vals[0] if len(vals) == 1 else vals[0] - sum(vals[1:])
    if op == "*":
        return vals[0] * vals[1]
    a, b = vals
    return {"<=": a <= b, "<": a < b, ">=": a >= b, ">": a > b, "=": a == b}[op]


@settings(max_examples=80, deadline=None)
@given(st.lists(formulas, min_size=1, max_size=3))
def test_semantics_match_brute_force(fs) -> None:
    text = decls(2, 2) + box([(-1, 1), (-1, 1)]) + "".join(f"(assert {f})\n" for f in fs)
    specs = parse_vnnlib_text(text)
    pts = np.array(list(itertools.product([-1.5, -1, -0.5, 0, 0.5, 1, 1.5], repeat=2)))
    ys = np.array(list(itertools.product([-1, -0.5, 0, 0.5, 1, 0.25], repeat=2)))
    x = np.repeat(pts, len(ys), axis=0)
    y = np.tile(ys, (len(pts), 1))
    env = {"X_0": x[:, 0], "X_1": x[:, 1], "Y_0": y[:, 0], "Y_1": y[:, 1]}
    truths = [evaluate(cmd[1], env) for cmd in sexpr(text) if cmd[0] == "assert"]
    expected = np.all([np.broadcast_to(t, len(x)) for t in truths], axis=0)
    got = np.zeros(len(x), bool)
    for spec in specs:
        inside = np.all((x >= spec.lower) & (x <= spec.upper), axis=1)
        viol = {tuple(v): vnnlib.violates_exactly(spec, v) for v in ys}   # strict rows strictly
        got |= inside & np.array([viol[tuple(v)] for v in y])
    np.testing.assert_array_equal(got, expected)
