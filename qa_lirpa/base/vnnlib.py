"""A pure reader and writer for VNN-LIB 1.0 property files (numpy and the standard library only;
of qa_lirpa only ``qa_lirpa.base.errors`` and ``qa_lirpa.base.files``, which import nothing of
ours, so that this file also loads alone from its path, without the package and torch).

Supported input::

    ; comments run to the end of the line; statements may span lines
    (declare-const X_0 Real)            ; inputs X_0..X_{n-1}, outputs Y_0..Y_{m-1} (contiguous)
    (assert (<= X_0 0.5))               ; several top-level asserts form a conjunction
    (assert (or (and (>= Y_1 Y_0)) (and (<= Y_0 -2.5E+02) (>= X_0 0.25))))

Constraints are ``<=``, ``>=``, ``<``, ``>`` and ``=`` (chained as in SMT-LIB) over linear terms
built from variables, numbers, ``+``, ``-`` (unary or n-ary) and ``*`` (by constants); formulas
combine them with ``and``/``or`` nested arbitrarily (and ``true``/``false``). Numbers are read
as exact rationals (``fractions.Fraction`` of the decimal text; ``1e-400`` is not 0) and linear
terms are combined exactly; see docs/semantics.md. An input atom ``c * X_i <= k`` bounds the box
of float64 inputs: the upper bound is the largest float64 ``<= k / c`` (``<``: the largest one
``< k / c``), a lower bound the smallest float64 ``>=`` (``>``: ``>``) the rational.
``set-logic``, ``set-info``, ``set-option``, ``check-sat``, ``get-model`` and ``exit`` are ignored.

**Output rows** ``mat @ y <= rhs`` hold float64 coefficients (nearest) and ``rhs`` rounded up,
with strict ``<``/``>`` read as ``<=``/``>=``: the verifier bounds a superset of the violating
outputs, so its ``unsat`` is sound for the written property. Each spec also keeps the rows exactly
(``InputSpec.exact``: rational coefficients, rational right-hand side, strictness); a
counterexample is confirmed with :func:`violates_exactly`, against the written (strict) form.

Semantics of the result of :func:`read_vnnlib`: a list of :class:`InputSpec`; the property is
violated (``sat``) iff for some spec some input ``x`` with ``lower <= x <= upper`` yields outputs
``y`` with ``mat @ y <= rhs`` (every row) for some ``(mat, rhs)`` in ``spec.disjuncts``. Input atoms
must bound one ``X`` variable by a constant; each DNF conjunct's input bounds are intersected
with the top-level box, conjuncts with identical boxes share one spec, empty boxes are dropped,
and a conjunct without output rows has a ``(0, n_outputs)`` matrix (any output violates).
Errors are :class:`VnnlibError` with a ``FILE:LINE:COL: message`` text.
"""
from __future__ import annotations

import gc
from decimal import Decimal
from fractions import Fraction
import gzip
import itertools
import math
import os
import re
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

if __package__:
    from .errors import QaLirpaError
    from .files import atomic_write_bytes
else:   # loaded alone from its path (see the module docstring): its two helpers from theirs
    import importlib.util as _ilu

    def _sibling(name: str):
        spec = _ilu.spec_from_file_location(f"_qa_lirpa_base_{name}", os.path.join(os.path.dirname(__file__), f"{name}.py"))
        module = _ilu.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    QaLirpaError = _sibling("errors").QaLirpaError
    atomic_write_bytes = _sibling("files").atomic_write_bytes

__all__ = [
    "MAX_CONJUNCTS", "MAX_DEPTH", "VnnlibError", "InputSpec", "read_vnnlib", "parse_vnnlib_text",
    "format_vnnlib", "write_vnnlib", "robustness_property", "violates_exactly",
]

#: Largest number of DNF conjuncts a property may expand to before reading fails.
MAX_CONJUNCTS = 100_000
#: Deepest parenthesis nesting read (the reader recurses over the tree; real properties nest < 10)
MAX_DEPTH = 200

PathLike = Union[str, "os.PathLike[str]"]
Disjunct = tuple[np.ndarray, np.ndarray]

_TOKEN_RE = re.compile(r";[^\n]*|\(|\)|[^\s();]+")
_NUMBER_START_RE = re.compile(r"[-+]?\.?\d")
_NUMBER_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE]([-+]?\d+))?\Z")
#: decimal exponents beyond this are refused (an exact rational of 1e999999999 would not fit)
_MAX_EXPONENT = 4000
_VAR_RE = re.compile(r"([XY])_(0|[1-9]\d*)\Z")
_IGNORED = frozenset({"set-logic", "set-info", "set-option", "check-sat", "get-model", "exit"})
_COMPARE = frozenset({"<=", ">=", "<", ">", "="})
_KIND_NAME = {"X": "input", "Y": "output"}


class VnnlibError(QaLirpaError, ValueError):
    """A malformed or unsupported VNN-LIB file; ``str(err)`` is ``FILE:LINE:COL: message``."""

    def __init__(self, path: str, line: int, col: int, message: str) -> None:  # 1-based line, col
        super().__init__(f"{path}:{line}:{col}: {message}")
        self.path, self.line, self.col, self.message = path, line, col, message

    def __reduce__(self):  # keep the exception picklable despite the custom constructor
        return (type(self), (self.path, self.line, self.col, self.message))


@dataclass(frozen=True, eq=False)
class InputSpec:
    """One input box with the output disjuncts checked on it.

    ``lower``/``upper``: float64 arrays of shape ``[n_inputs]``; ``disjuncts``: ``(mat, rhs)``
    pairs, ``mat`` float64 ``[k, n_outputs]`` and ``rhs`` float64 ``[k]``, meaning ``mat @ y <= rhs``.
    """

    lower: np.ndarray
    upper: np.ndarray
    disjuncts: list[Disjunct]
    #: per disjunct, its rows exactly: ``(coefs {j: Fraction}, rhs Fraction, strict)`` meaning
    #: ``sum coefs_j y_j < rhs`` (strict) or ``<=``; None for specs not read from text
    exact: list | None = None

    @property
    def n_inputs(self) -> int:
        """Number of input variables."""
        return int(self.lower.shape[0])

    @property
    def n_outputs(self) -> int:
        """Number of output variables (a spec read always has a disjunct)."""
        return int(self.disjuncts[0][0].shape[1])


# Parse tree: an atom is the index of its token in ``_Reader.tokens``; a list is a Python list
# ``[index of its "(", child, child, ...]``. Offsets are recovered from token indices on error only.
Node = Union[int, list]
Linear = tuple[dict[tuple[str, int], Fraction], Fraction]  # exact coefficients by (kind, index), constant
Dnf = list[list[int]]  # conjuncts of literal ids; [] is false, [[]] is true


def _at(node: Node) -> int:
    return node if isinstance(node, int) else node[0]


class _Reader:
    """Single-pass tokenizer and tree builder, then a DNF evaluation of the asserts."""

    def __init__(self, text: str, source: str) -> None:
        self.text, self.source = text, source
        self.tokens: list[str] = []
        self.decl: dict[str, dict[int, int]] = {"X": {}, "Y": {}}  # index -> declaring token
        self.lits: list[tuple] = []  # ("lo"|"hi", index, value) or ("row", {index: coef}, rhs)
        self.terms: dict[str, Linear] = {}

    def error(self, tok: int | None, message: str) -> VnnlibError:
        """The error at token number ``tok`` (the start of the text when None)."""
        pos = 0 if tok is None else next(itertools.islice(_TOKEN_RE.finditer(self.text), tok, None)).start()
        line = self.text.count("\n", 0, pos) + 1
        return VnnlibError(self.source, line, pos - self.text.rfind("\n", 0, pos), message)

    def tree(self) -> list[list]:
        tokens = self.tokens = _TOKEN_RE.findall(self.text)
        top: list = []
        cur, parents = top, []
        for i, tok in enumerate(tokens):
            if tok == "(":
                node = [i]
                cur.append(node)
                parents.append(cur)
                cur = node
                if len(parents) > MAX_DEPTH:
                    raise self.error(i, f"expressions nested deeper than {MAX_DEPTH} levels")
            elif tok == ")":
                if not parents:
                    raise self.error(i, "unbalanced ')'")
                cur = parents.pop()
            elif tok[0] != ";":
                if not parents:
                    raise self.error(i, f"expected '(' but found {tok!r}")
                cur.append(i)
        if parents:
            raise self.error(cur[0], "unbalanced '(': missing ')'")
        return top

    def head(self, node: list) -> str:
        if len(node) == 1:
            raise self.error(node[0], "empty expression '()'")
        if not isinstance(node[1], int):
            raise self.error(node[1][0], "expected an operator name")
        return self.tokens[node[1]]

    def run(self, n_inputs: int | None, n_outputs: int | None) -> list[InputSpec]:
        asserts: list[tuple[Dnf, int]] = []
        for node in self.tree():
            name = self.head(node)
            if name == "declare-const":
                self.declare(node)
            elif name == "assert":
                if len(node) != 3:
                    raise self.error(node[0], "expected (assert FORMULA)")
                asserts.append((self.formula(node[2]), node[0]))
            elif name not in _IGNORED:
                raise self.error(node[1], f"unknown command {name!r}")
        nx, ny = self.count("X", n_inputs), self.count("Y", n_outputs)
        return self.build(asserts, nx, ny)

    def declare(self, node: list) -> None:
        if len(node) != 4 or not all(isinstance(a, int) for a in node):
            raise self.error(node[0], "expected (declare-const NAME Real)")
        name, typ = self.tokens[node[2]], self.tokens[node[3]]
        m = _VAR_RE.match(name)
        if m is None:
            raise self.error(node[2], f"unknown variable {name!r} (expected X_i or Y_j)")
        if typ != "Real":
            raise self.error(node[3], f"unsupported type {typ!r} for {name} (only Real)")
        table, idx = self.decl[m.group(1)], int(m.group(2))
        if idx in table:
            raise self.error(node[2], f"duplicate declaration of {name}")
        table[idx] = node[2]

    def count(self, kind: str, expected: int | None) -> int:
        table, what = self.decl[kind], _KIND_NAME[kind]
        n = len(table)
        if n == 0:
            raise self.error(None, f"no {what} variables ({kind}_0, ...) declared")
        missing = sorted(set(range(n)) - table.keys())
        if missing:
            last = max(table)
            raise self.error(table[last], f"{kind}_{missing[0]} is not declared but {kind}_{last} is")
        if expected is not None and n != expected:
            raise self.error(table[n - 1], f"{n} {what} variables declared, expected {expected}")
        return n

    def formula(self, node: Node) -> Dnf:
        if isinstance(node, int):
            text = self.tokens[node]
            if text in ("true", "false"):
                return [[]] if text == "true" else []
            raise self.error(node, f"expected a constraint, found {text!r}")
        op, args = self.head(node), node[2:]
        if op == "and":
            return self.conjoin([(self.formula(a), _at(a)) for a in args])
        if op == "or":
            out: Dnf = []
            for a in args:
                out.extend(self.formula(a))
                self.guard(len(out), _at(a))
            return out
        if op in _COMPARE:
            return self.compare(op, args, node[0])
        raise self.error(node[1], f"unsupported operator {op!r}")

    def guard(self, size: int, tok: int) -> None:
        if size > MAX_CONJUNCTS:
            raise self.error(tok, f"property expands to more than {MAX_CONJUNCTS} DNF conjuncts")

    def split(self, parts: Sequence[tuple[Dnf, int]]) -> tuple[list[int], Dnf] | None:
        """AND of DNFs as (literals common to all conjuncts, product of the rest); None if false."""
        common: list[int] = []
        product: Dnf = [[]]
        for dnf, tok in parts:
            if not dnf:
                return None
            if len(dnf) == 1:
                common.extend(dnf[0])
                continue
            self.guard(len(product) * len(dnf), tok)
            product = [a + b for a in product for b in dnf]
        return common, product

    def conjoin(self, parts: Sequence[tuple[Dnf, int]]) -> Dnf:
        split = self.split(parts)
        if split is None:
            return []
        common, product = split
        return [common + p for p in product]

    def compare(self, op: str, args: list, tok: int) -> Dnf:
        if len(args) < 2:
            raise self.error(tok, f"{op!r} needs at least two arguments")
        terms = [self.linear(a) for a in args]
        lits: list[int] = []
        for a, b in zip(terms, terms[1:]):
            pairs = [(a, b)] if op in ("<=", "<") else [(b, a)] if op in (">=", ">") else [(a, b), (b, a)]
            for lhs, rhs in pairs:
                lit = self.constraint(lhs, rhs, tok, op in ("<", ">"))
                if lit is False:
                    return []
                if lit is not True:
                    lits.append(lit)
        return [lits]

    def constraint(self, a: Linear, b: Linear, tok: int, strict: bool = False) -> int | bool:
        """Literal id for ``a <= b`` (``a < b`` if ``strict``), or its truth value when no variable
        is left. Coefficients and constants are exact rationals here."""
        if not b[0]:
            coef = a[0]  # never mutated below
        elif not a[0]:
            coef = {k: -v for k, v in b[0].items()}
        else:
            coef = dict(a[0])
            for key, v in b[0].items():
                coef[key] = coef.get(key, 0) - v
        if 0 in coef.values():
            coef = {k: v for k, v in coef.items() if v != 0}
        const = a[1] - b[1]  # sum(coef * var) + const <= 0
        if not coef:
            return const < 0 if strict else const <= 0
        if len(coef) == 1:
            ((kind, idx), c), = coef.items()
            if kind == "X":
                q = Fraction(-const) / c
                if c > 0:
                    self.lits.append(("hi", idx, _float_below(q, strict)))
                else:
                    self.lits.append(("lo", idx, _float_above(q, strict)))
                return len(self.lits) - 1
        kinds = {k for k, _ in coef}
        if len(kinds) > 1:
            raise self.error(tok, "cannot compare input (X) with output (Y) variables")
        if "X" in kinds:
            raise self.error(tok, "an input constraint must bound one X variable by a constant")
        exact = {i: Fraction(v) for (_, i), v in coef.items()}
        floats = {i: float(v) for i, v in exact.items()}
        if not all(math.isfinite(v) for v in floats.values()):
            raise self.error(tok, "a coefficient is out of float64 range")
        self.lits.append(("row", floats, _float_above(Fraction(-const), False), (exact, Fraction(-const), strict)))
        return len(self.lits) - 1

    def linear(self, node: Node) -> Linear:
        if isinstance(node, int):
            return self.term(node)
        op = self.head(node)
        args = [self.linear(a) for a in node[2:]]
        if not args:
            raise self.error(node[0], f"{op!r} needs arguments")
        if op == "+":
            return _lin_sum(args)
        if op == "-":
            neg = [_lin_scale(t, -1) for t in args[1:]]
            return _lin_scale(args[0], -1) if len(args) == 1 else _lin_sum([args[0], *neg])
        if op == "*":
            variable = [t for t in args if t[0]]
            if len(variable) > 1:
                raise self.error(node[0], "nonlinear product of variables")
            scale = math.prod((t[1] for t in args if not t[0]), start=Fraction(1))
            return _lin_scale(variable[0], scale) if variable else ({}, scale)
        raise self.error(node[1], f"unsupported operator {op!r}")

    def term(self, tok: int) -> Linear:
        """A number or declared variable; results are cached by text and must not be mutated."""
        text = self.tokens[tok]
        cached = self.terms.get(text)
        if cached is None:
            cached = self.terms[text] = self.parse_term(tok, text)
        return cached

    def parse_term(self, tok: int, text: str) -> Linear:
        if _NUMBER_START_RE.match(text):
            m = _NUMBER_RE.match(text)
            if not m or abs(int(m.group(1) or 0)) > _MAX_EXPONENT:
                raise self.error(tok, f"bad number {text!r}")
            return {}, Fraction(text)
        m = _VAR_RE.match(text)
        if m is None:
            raise self.error(tok, f"unknown variable {text!r}")
        kind, idx = m.group(1), int(m.group(2))
        if idx not in self.decl[kind]:
            raise self.error(tok, f"undeclared variable {text}")
        return {(kind, idx): 1}, 0

    def apply(self, lits: list[int], lower: list[float], upper: list[float], rows: list) -> None:
        for lit in lits:
            kind, a, b = self.lits[lit][:3]
            if kind == "row":
                rows.append((a, b, self.lits[lit][3]))
            elif kind == "hi":
                upper[a] = min(upper[a], b)
            else:
                lower[a] = max(lower[a], b)

    def build(self, asserts: list[tuple[Dnf, int]], nx: int, ny: int) -> list[InputSpec]:
        split = self.split(asserts)
        if split is None:
            return []
        common, product = split
        base_lo, base_hi, base_rows = [-math.inf] * nx, [math.inf] * nx, []
        self.apply(common, base_lo, base_hi, base_rows)
        base = np.array(base_lo), np.array(base_hi)
        groups: dict[bytes, InputSpec] = {}
        for conj in product:
            lower, upper, rows = list(base_lo), list(base_hi), list(base_rows)
            self.apply(conj, lower, upper, rows)
            moved = any(self.lits[lit][0] != "row" for lit in conj)
            lo, hi = (np.array(lower), np.array(upper)) if moved else base
            if np.any(lo > hi):
                continue
            key = lo.tobytes() + hi.tobytes()
            if key not in groups:
                self.check_finite(lo, hi)
                groups[key] = InputSpec(lo.copy(), hi.copy(), [], [])
            groups[key].disjuncts.append(_matrix(rows, ny))
            groups[key].exact.append([r[2] for r in rows])
        return list(groups.values())

    def check_finite(self, lower: np.ndarray, upper: np.ndarray) -> None:
        bad = np.flatnonzero(~(np.isfinite(lower) & np.isfinite(upper)))
        if bad.size:
            i = int(bad[0])
            side = "lower" if not np.isfinite(lower[i]) else "upper"
            raise self.error(self.decl["X"][i], f"input X_{i} has no finite {side} bound")


def _lin_sum(terms: Sequence[Linear]) -> Linear:
    coef: dict[tuple[str, int], Fraction] = {}
    for c, _ in terms:
        for key, v in c.items():
            coef[key] = coef.get(key, 0) + v
    return coef, sum((k for _, k in terms), Fraction(0))


def _float_below(q: Fraction, strict: bool) -> float:
    """The largest float64 ``<= q`` (``< q`` if ``strict``); -inf/inf beyond the range."""
    try:
        f = float(q)
    except OverflowError:
        return math.inf if q > 0 else -math.inf
    if math.isfinite(f) and (Fraction(f) > q or (strict and Fraction(f) == q)):
        f = math.nextafter(f, -math.inf)
    return f + 0.0


def _float_above(q: Fraction, strict: bool) -> float:
    """The smallest float64 ``>= q`` (``> q`` if ``strict``)."""
    return -_float_below(-q, strict) + 0.0


def violates_exactly(spec: "InputSpec", y: Sequence[float]) -> bool:
    """Do the outputs ``y`` (float64, taken exactly) violate one of ``spec``'s disjuncts as written
    (exact rationals, strict comparisons strict)? Specs without exact rows: the float rows."""
    if spec.exact is None:                      # the float rows, compared exactly
        yq = [Fraction(float(v)) for v in np.asarray(y, np.float64).reshape(-1)]
        return any(all(sum((Fraction(float(c)) * yq[j] for j, c in enumerate(row) if c), Fraction(0))
                       <= Fraction(float(b)) for row, b in zip(np.asarray(m, np.float64), np.asarray(r, np.float64)))
                   for m, r in spec.disjuncts)
    yq = [Fraction(float(v)) for v in np.asarray(y, np.float64).reshape(-1)]
    for rows in spec.exact:
        ok = True
        for coefs, rhs, strict in rows:
            lhs = sum((c * yq[j] for j, c in coefs.items()), Fraction(0))
            if not (lhs < rhs if strict else lhs <= rhs):
                ok = False
                break
        if ok:
            return True
    return False


def _lin_scale(term: Linear, s: float) -> Linear:
    return {key: v * s for key, v in term[0].items()}, term[1] * s


def _matrix(rows: list, ny: int) -> Disjunct:
    mat, rhs = np.zeros((len(rows), ny)), np.zeros(len(rows))
    for r, (coef, b, *_) in enumerate(rows):
        for j, v in coef.items():
            mat[r, j] = v
        rhs[r] = b
    return mat, rhs


def parse_vnnlib_text(
    text: str, source: str = "<string>", *, n_inputs: int | None = None, n_outputs: int | None = None
) -> list[InputSpec]:
    """Parse VNN-LIB 1.0 ``text``; ``source`` names it in error messages.

    ``n_inputs``/``n_outputs``, when given, must equal the numbers of declared X/Y variables.
    """
    enabled = gc.isenabled()
    gc.disable()  # the parse makes many small acyclic containers; collections only slow it down
    try:
        return _Reader(text, source).run(n_inputs, n_outputs)
    finally:
        if enabled:
            gc.enable()


def read_vnnlib(
    path_or_text: PathLike, *, n_inputs: int | None = None, n_outputs: int | None = None
) -> list[InputSpec]:
    """Read a VNN-LIB 1.0 file (gzip-compressed files are detected and unpacked).

    A ``str`` that holds a newline or starts with ``(`` or ``;`` is parsed as the text itself.
    """
    if isinstance(path_or_text, str) and ("\n" in path_or_text or path_or_text.lstrip()[:1] in ("(", ";")):
        return parse_vnnlib_text(path_or_text, n_inputs=n_inputs, n_outputs=n_outputs)
    path = os.fspath(path_or_text)
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return parse_vnnlib_text(data.decode("utf-8"), str(path), n_inputs=n_inputs, n_outputs=n_outputs)


def _num(v: float) -> str:
    """``v`` as a decimal whose exact value is ``v`` (numbers are read as exact rationals): the
    short repr where it is exact, else the full expansion."""
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"cannot write non-finite number {v}")
    text = repr(v)
    if Fraction(text) == Fraction(v):
        return text
    return format(Decimal(v), "f") if abs(v) >= 1e-5 else format(Decimal(v), "e")


def _row_text(coef: np.ndarray, rhs: float) -> str:
    nz = [int(i) for i in np.flatnonzero(coef)]
    vals = [float(coef[i]) for i in nz]
    if not nz:
        return f"(<= 0.0 {_num(rhs)})"
    if vals == [1.0]:
        return f"(<= Y_{nz[0]} {_num(rhs)})"
    if vals == [-1.0]:
        return f"(>= Y_{nz[0]} {_num(-rhs)})"
    if rhs == 0.0 and sorted(vals) == [-1.0, 1.0]:
        pos, neg = (nz[0], nz[1]) if vals[0] == 1.0 else (nz[1], nz[0])
        return f"(<= Y_{pos} Y_{neg})"
    terms = " ".join(f"(* {_num(v)} Y_{i})" for i, v in zip(nz, vals))
    return f"(<= (+ {terms}) {_num(rhs)})"


def format_vnnlib(
    lower: np.ndarray, upper: np.ndarray, disjuncts: Sequence[Disjunct],
    comment: str | None = None, *, n_outputs: int | None = None,
) -> str:
    """VNN-LIB 1.0 text for "some x in [lower, upper] has outputs meeting some disjunct"."""
    lo, hi = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    if lo.ndim != 1 or lo.shape != hi.shape or lo.size == 0 or np.any(lo > hi):
        raise ValueError("lower and upper must be non-empty 1-D arrays of one shape with lower <= upper")
    if not disjuncts:
        raise ValueError("at least one disjunct is needed")
    mats = [(np.asarray(m, dtype=np.float64), np.asarray(r, dtype=np.float64)) for m, r in disjuncts]
    ny = n_outputs if n_outputs is not None else mats[0][0].shape[1]
    for m, r in mats:
        if m.ndim != 2 or m.shape[1] != ny or r.shape != (m.shape[0],):
            raise ValueError(f"each disjunct needs mat [k, {ny}] and rhs [k]")
    lines = [f"; {line}" for line in (comment.splitlines() if comment else [])]
    lines += [f"(declare-const X_{i} Real)" for i in range(lo.size)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(ny)]
    for i, (a, b) in enumerate(zip(lo, hi)):
        lines += [f"(assert (>= X_{i} {_num(a)}))", f"(assert (<= X_{i} {_num(b)}))"]
    lines.append("(assert (or")
    for m, r in mats:
        lines.append("  (and " + " ".join(_row_text(row, b) for row, b in zip(m, r)) + ")")
    lines.append("))")
    return "\n".join(lines) + "\n"


def write_vnnlib(
    path: PathLike, lower: np.ndarray, upper: np.ndarray, disjuncts: Sequence[Disjunct],
    comment: str | None = None, *, n_outputs: int | None = None,
) -> None:
    """Write :func:`format_vnnlib`'s text to ``path`` atomically (gzip if it ends in ``.gz``)."""
    data = format_vnnlib(lower, upper, disjuncts, comment, n_outputs=n_outputs).encode("utf-8")
    path = os.fspath(path)
    if path.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    atomic_write_bytes(path, data)


def robustness_property(
    lower: np.ndarray, upper: np.ndarray, label: int, n_outputs: int
) -> tuple[np.ndarray, np.ndarray, list[Disjunct]]:
    """The classifier robustness violation spec: some class ``k != label`` has ``Y_k >= Y_label``.

    Returns float64 copies of the box and one disjunct per ``k`` (row ``y_label - y_k <= 0``). Ties
    count as violations, which is conservative when ties are broken towards the smaller index.
    """
    lo, hi = np.array(lower, dtype=np.float64), np.array(upper, dtype=np.float64)
    if lo.ndim != 1 or lo.shape != hi.shape:
        raise ValueError("lower and upper must be 1-D arrays of one shape")
    if n_outputs < 2 or not 0 <= label < n_outputs:
        raise ValueError(f"need n_outputs >= 2 and 0 <= label < n_outputs, got {label}, {n_outputs}")
    disjuncts = []
    for k in range(n_outputs):
        if k != label:
            mat = np.zeros((1, n_outputs))
            mat[0, label], mat[0, k] = 1.0, -1.0
            disjuncts.append((mat, np.zeros(1)))
    return lo, hi, disjuncts
