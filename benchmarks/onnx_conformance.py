"""Conformance of the ONNX importer and ``run_instance`` on a corpus of real-exporter ONNX files.

The corpus (``tests/onnx/corpus/manifest.json``) lists files with the exporter row (1..10), its
dialect, and whether the importer is expected to ``verify`` or ``refuse`` them. For every file:

1. ``qa_lirpa.onnx.load_onnx``: accepted or refused. A refusal must be one ``OnnxImportError``
   line that names the file and a node of the graph with its op and domain (the default domain
   written ``ai.onnx``); anything else is reported as a bad message.
2. For an accepted file (and a file expected to be refused that is accepted anyway), ``--props``
   properties whose truth is enumerated (``tests/onnx/diffgen.py``): every float32 input code the
   box reaches runs in onnxruntime (CPU, default options), the grid found by bisection on the
   float32 thresholds of the model's first rounding node (QuantizeLinear of any domain,
   Round/Floor/Ceil, a Cast to an integer type; an integer-typed input is its own grid).
   Properties: ``Y_j >= t`` / ``Y_j <= t`` with ``t`` the box's true extreme or its float32/float64
   neighbour (tight: sat and unsat), and robustness around (nearly) tied top-2 outputs. A raw
   QONNX file (custom ``Quant`` ops, which onnxruntime cannot run) is judged against its reference
   table (``reference`` npz with ``x``/``y`` computed by qonnx's executor): point boxes on its rows.
   A model whose input cannot be cut that way is reported "cannot enumerate" (no guessing).
3. ``qa_lirpa.vnncomp.run_instance`` on each property: right, wrong (``unsat`` on a violated
   property, or ``sat`` whose counterexample is outside the box or does not violate the property
   exactly in onnxruntime / the reference table), undecided (``unknown``/``timeout``) or error.

    python benchmarks/onnx_conformance.py --props 6 --timeout 20 --jobs 2 --seed 0

writes ``benchmarks/results/onnx_conformance.md`` (and ``.jsonl``); the files of every wrong or
error property are kept under ``benchmarks/results/onnx_conformance_cases/`` for reproduction.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "onnx"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

import diffgen  # noqa: E402
import onnx_soundness  # noqa: E402
from qa_lirpa.campaign import Scale, map_records  # noqa: E402

DEFAULT_MANIFEST = ROOT / "tests" / "onnx" / "corpus" / "manifest.json"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "onnx_conformance.md"
DEFAULT_KEEP = ROOT / "benchmarks" / "results" / "onnx_conformance_cases"
OUTCOMES = ("right", "wrong", "undecided", "error")
#: the property schedule: kinds in turn; threshold variants in turn (eq: sat, next64/next32: unsat,
#: prev64: sat -- for both directions)
KIND_CYCLE = ("thr_max", "thr_min", "robust")
VARIANT_CYCLE = ("eq", "next64", "next32", "prev64")


# ----------------------------------------------------------------------------------------------
# the refusal message

def _default_domain(d: str) -> str:
    return d if d else "ai.onnx"


def message_problem(msg: str, path: str, model_bytes: bytes | None) -> str:
    """'' when ``msg`` is one line naming the file and a graph node with its op and domain, else
    what is missing."""
    import onnx

    text = msg.strip()
    problems = []
    if "\n" in text:
        problems.append("more than one line")
    if path not in text and os.path.basename(path) not in text:
        problems.append("does not name the file")
    if model_bytes is None:
        return "; ".join(problems)
    try:
        nodes = list(onnx.load_from_string(model_bytes).graph.node)
    except Exception:  # noqa: BLE001 - an unreadable file has no node to name
        nodes = []
    def names(n) -> bool:  # quoted, or a name long enough not to match by chance
        return any(v and (f"'{v}'" in text or f'"{v}"' in text or (len(v) >= 4 and v in text))
                   for v in (n.name, n.output[0] if n.output else ""))

    named = [n for n in nodes if names(n) and n.op_type in text]
    if not nodes:
        pass                   # a malformed file: naming the file is all there is
    elif not named:
        problems.append("names no node with its op")
    elif not any(_default_domain(n.domain) in text for n in named):
        problems.append("does not name the node's domain")
    return "; ".join(problems)


# ----------------------------------------------------------------------------------------------
# cases

def input_shape(model_bytes: bytes) -> tuple[int, ...]:
    """The per-sample input shape: without a first dimension that is symbolic or 1 (the batch) on
    inputs of rank >= 2; the whole shape on rank-1 inputs."""
    import onnx

    t = onnx.load_from_string(model_bytes).graph.input[0].type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim]
    if len(dims) >= 2 and (dims[0] is None or dims[0] == 1):
        dims = dims[1:]
    if not dims or any(d is None for d in dims):
        raise diffgen.CannotEnumerate(f"input shape {dims} has symbolic dimensions besides the batch")
    return tuple(int(d) for d in dims)


class TableCase(diffgen.Case):
    """A model onnxruntime cannot run (raw QONNX): its semantics is the reference table (``x``
    float32 inputs, ``y`` outputs, computed by qonnx's executor); only its rows can be run."""

    def set_table(self, x: np.ndarray, y: np.ndarray) -> None:
        self.ref_x = np.asarray(x, np.float32).reshape(len(x), -1)
        self.ref_y = np.asarray(y).reshape(len(y), -1)
        self._index = {row.tobytes(): k for k, row in enumerate(self.ref_x)}

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32).reshape(-1, self.n_in)
        out = []
        for row in x:
            k = self._index.get(np.ascontiguousarray(row).tobytes())
            if k is None:
                raise ValueError("input not in the reference table (its truth is unknown)")
            out.append(self.ref_y[k])
        return np.asarray(out)

    def grid(self):
        raise diffgen.CannotEnumerate("raw QONNX: only the reference table's rows have a known output")


def table_instance(rng, case: TableCase, kind: str, variant: str) -> diffgen.Instance:
    """A property on a point box (one row of the reference table)."""
    y = case.ref_y.astype(np.float64)
    if kind == "robust" and case.n_out >= 2:
        ys = np.sort(y, axis=1)
        gap = ys[:, -1] - ys[:, -2]
        order = np.argsort(gap, kind="stable")
        r = int(order[int(rng.integers(min(4, len(order))))])
        best = np.flatnonzero(y[r] == y[r].max())
        label = int(best[int(rng.integers(len(best)))])
        disj = diffgen.robustness_disjuncts(case.n_out, label)
        note = f"row={r} label={label} gap={gap[r]!r} (reference table point)"
    else:
        kind = "thr_max" if kind == "robust" else kind
        r, j = int(rng.integers(len(y))), int(rng.integers(case.n_out))
        m = float(y[r, j])
        up = kind == "thr_max"
        away, toward = (np.inf, -np.inf) if up else (-np.inf, np.inf)
        t = {"eq": m, "next64": diffgen.next64(m, away), "next32": diffgen.next32(m, away),
             "prev64": diffgen.next64(m, toward)}[variant]
        disj = [diffgen.threshold_disjunct(case.n_out, j, t, ge=up)]
        note = f"row={r} Y{j} {variant} t={t!r} (reference table point)"
    lo = case.ref_x[r].astype(np.float64)
    truth = bool(diffgen.violates(y[r][None], disj)[0])
    return diffgen.Instance(case, kind, lo, lo.copy(), disj, truth, note, 1, lo.copy() if truth else None)


def grid_instance(rng, case: diffgen.Case, kind: str, variant: str) -> diffgen.Instance:
    """A property whose truth is enumerated over the box's input codes in onnxruntime."""
    if kind == "robust" and case.n_out < 2:
        kind = "thr_max"
    for attempt in range(8):          # a box too large to enumerate: draw the box again
        try:
            if kind == "robust":
                return diffgen._robust_instance(rng, case)
            return diffgen._threshold_instance(rng, case, kind, variant, exact_edges=case.n_in <= 16)
        except ValueError as e:
            if isinstance(e, diffgen.CannotEnumerate) or "code points" not in str(e) or attempt == 7:
                raise
    raise AssertionError("unreachable")


def read_model_bytes(path: Path) -> bytes:
    """The file as one serialized model: external data (``.onnx.data``) loaded inline, so that
    onnxruntime sessions from bytes and the copies written for ``run_instance`` are self-contained
    (the same tensors); the raw bytes where onnx cannot load the file."""
    import onnx

    raw = Path(path).read_bytes()
    try:
        bare = onnx.load(str(path), load_external_data=False)
        ext = [t for t in bare.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        ext += [a.t for n in bare.graph.node for a in n.attribute
                if a.HasField("t") and a.t.data_location == onnx.TensorProto.EXTERNAL]
        return onnx.load(str(path)).SerializeToString() if ext else raw
    except Exception:  # noqa: BLE001 - a malformed file: the importer reports it
        return raw


@dataclass
class Fixture:
    index: int
    entry: dict
    corpus: Path

    @property
    def path(self) -> Path:
        return self.corpus / self.entry["file"]


def build_case(fx: Fixture, model_bytes: bytes) -> diffgen.Case:
    name = fx.entry["file"]
    in_shape = input_shape(model_bytes)
    ref = fx.entry.get("reference")
    if diffgen.is_raw_qonnx(model_bytes):
        if not ref:
            raise diffgen.CannotEnumerate("raw QONNX without a reference table")
        data = np.load(fx.corpus / ref)
        x, y = np.asarray(data["x"]), np.asarray(data["y"])
        case = TableCase(name, 0, model_bytes, in_shape, int(np.prod(y.shape[1:])), dict(reference=ref))
        if int(np.prod(x.shape[1:])) != case.n_in:
            raise diffgen.CannotEnumerate(f"reference x has {x.shape[1:]} per sample, the input {in_shape}")
        case.set_table(x, y)
        return case
    y0 = diffgen.ort_run(model_bytes, np.zeros((1, *in_shape), np.float32))
    case = diffgen.Case(name, 0, model_bytes, in_shape, int(y0.shape[1]), {})
    case.grid()
    return case


def unfused_note(inst: diffgen.Instance) -> str:
    """A diagnosis of a wrong answer: the truth again with onnxruntime's graph optimizations off
    (no fused int8 kernels), which computes the ONNX operators one by one."""
    import onnxruntime as ort

    try:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.log_severity_level = 3
        sess = ort.InferenceSession(inst.case.model, so, providers=["CPUExecutionProvider"])
        x, y = inst.case.grid().enumerate(inst.lo, inst.hi)
        name = sess.get_inputs()[0].name
        shape = sess.get_inputs()[0].shape
        xs = x.reshape(-1, *inst.case.in_shape)
        if len(shape) == xs.ndim:
            y2 = np.concatenate([np.asarray(sess.run(None, {name: diffgen.ort_feed(sess, xs[k:k + 1])})[0]).reshape(1, -1)
                                 for k in range(len(xs))])
        else:
            y2 = np.concatenate([np.asarray(sess.run(None, {name: diffgen.ort_feed(sess, xs[k])})[0]).reshape(1, -1)
                                 for k in range(len(xs))])
        differ = int(np.sum(np.any(y != y2, axis=1)))
        t2 = bool(diffgen.violates(y2, inst.disjuncts).any())
        return (f"with graph optimizations off onnxruntime differs on {differ}/{len(x)} grid points and the "
                f"property is {'violated' if t2 else 'not violated'}")
    except Exception as e:  # noqa: BLE001
        return f"unfused check failed: {type(e).__name__}: {e}"


def reference_check(fx: Fixture, case: diffgen.Case) -> str:
    """For a file onnxruntime runs that has a reference table: how many rows onnxruntime differs
    on (a note; onnxruntime is the truth)."""
    ref = fx.entry.get("reference")
    if not ref or isinstance(case, TableCase):
        return ""
    try:
        data = np.load(fx.corpus / ref)
        x, y = np.asarray(data["x"]), np.asarray(data["y"])
        got = diffgen.ort_run(case.model, x.reshape(len(x), *case.in_shape))
        bad = int(np.sum(np.any(got != y.reshape(len(y), -1), axis=1)))
        return f"onnxruntime differs from the reference on {bad}/{len(x)} rows" if bad else ""
    except Exception as e:  # noqa: BLE001
        return f"reference not comparable: {type(e).__name__}: {e}"


# ----------------------------------------------------------------------------------------------
# one fixture

def fixture_error(fx: "Fixture", reason: str) -> dict:
    """The record of a fixture whose worker died twice (status ``lost``)."""
    e = fx.entry
    return dict(file=e["file"], row=int(e.get("row", 0)), dialect=e.get("dialect", ""), tool=e.get("tool", ""),
                expect=e.get("expect", "verify"), status="lost", message=reason, message_problem="", enum="",
                note="", props=[], time=0.0)


def run_fixture(args: tuple) -> dict:
    """Import, generate, verify and judge one fixture; never raises."""
    fx, n_props, seed, timeout, keep_dir = args
    e = fx.entry
    rec = dict(file=e["file"], row=int(e.get("row", 0)), dialect=e.get("dialect", ""), tool=e.get("tool", ""),
               expect=e.get("expect", "verify"), status="?", message="", message_problem="", enum="",
               note="", props=[], time=0.0)
    t0 = time.monotonic()
    try:
        model_bytes = read_model_bytes(fx.path)
    except OSError as err:
        rec.update(status="missing", message=f"{type(err).__name__}: {err}")
        return rec
    from qa_lirpa.onnx import load_onnx
    from qa_lirpa.onnx.errors import OnnxImportError

    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            load_onnx(str(fx.path))
            rec["status"] = "accepted"
        except OnnxImportError as err:
            rec.update(status="refused", message=str(err))
            rec["message_problem"] = message_problem(str(err), str(fx.path), model_bytes)
        except Exception as err:  # noqa: BLE001 - a crash is a refusal with a bad message
            rec.update(status="refused", message=f"{type(err).__name__}: {err}",
                       message_problem=f"not an OnnxImportError ({type(err).__name__})")
    if rec["status"] != "accepted":
        rec["time"] = round(time.monotonic() - t0, 2)
        return rec
    try:
        case = build_case(fx, model_bytes)
    except diffgen.CannotEnumerate as err:
        rec["enum"] = f"cannot enumerate: {err}"
    except Exception as err:  # noqa: BLE001
        rec["enum"] = f"cannot enumerate: {type(err).__name__}: {err}"
    if rec["enum"]:
        rec["time"] = round(time.monotonic() - t0, 2)
        return rec
    rec["note"] = reference_check(fx, case)
    extra = [fx.corpus / e["reference"]] if isinstance(case, TableCase) else []
    stem = Path(e["file"]).stem
    for i in range(n_props):
        kind = KIND_CYCLE[i % len(KIND_CYCLE)]
        variant = VARIANT_CYCLE[(i - i // len(KIND_CYCLE)) % len(VARIANT_CYCLE)]
        rng = np.random.default_rng([seed, fx.index, i])
        prec = dict(i=i, kind=kind, variant=variant if kind != "robust" else "", truth="?", outcome="gen_error",
                    word="", detail="")
        try:
            if isinstance(case, TableCase):
                inst = table_instance(rng, case, kind, variant)
            else:
                inst = grid_instance(rng, case, kind, variant)
        except Exception as err:  # noqa: BLE001
            prec["detail"] = f"generator: {type(err).__name__}: {err}"
            rec["props"].append(prec)
            continue
        prec.update(kind=inst.kind, truth=inst.expected, note=inst.note, n_points=inst.n_points)
        prec.update(onnx_soundness.judge(inst, timeout, keep_dir, f"{stem}_{seed}_{i}_{inst.kind}",
                                         category="conformance", extra_files=extra))
        if prec["outcome"] == "wrong" and not isinstance(case, TableCase):
            prec["detail"] += "; " + unfused_note(inst)
        rec["props"].append(prec)
    rec["time"] = round(time.monotonic() - t0, 2)
    return rec


# ----------------------------------------------------------------------------------------------
# the report

def fixture_counts(r: dict) -> dict:
    c = defaultdict(int)
    for p in r["props"]:
        c[p["outcome"]] += 1
    c["props"] = len(r["props"])
    c["sat_unconfirmed"] = sum(1 for p in r["props"] if p.get("word") == "sat" and not p.get("cex_confirmed"))
    return c


def fixture_problems(r: dict, max_undecided: int) -> list[str]:
    """Why the fixture is not conformant ([] when it is)."""
    c = fixture_counts(r)
    out = []
    if r["expect"] == "verify" and r["status"] != "accepted":
        out.append("expected verify, refused")
    if r["expect"] == "refuse" and r["status"] == "accepted":
        out.append("expected refuse, accepted")
    if r["status"] == "refused" and r["message_problem"]:
        out.append("bad message")
    if r["status"] == "missing":
        out.append("file missing")
    if r["status"] == "lost":
        out.append(f"worker lost: {r['message']}")
    if r["enum"]:
        out.append("cannot enumerate")
    for k in ("wrong", "error", "gen_error"):
        if c[k]:
            out.append(f"{c[k]} {k}")
    return out


def row_table(records: list[dict], max_undecided: int) -> str:
    rows = defaultdict(list)
    for r in records:
        rows[r["row"]].append(r)
    lines = ["| row | dialects | fixtures | accepted | refused | refusal reasons | bad messages | cannot enumerate "
             "| properties | right | wrong | undecided | error | verified-correct |",
             "|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    tot = defaultdict(int)
    for row, rs in sorted(rows.items()):
        dialect = ", ".join(sorted({r["dialect"] for r in rs}))
        c = defaultdict(int)
        for r in rs:
            for k, v in fixture_counts(r).items():
                c[k] += v
        acc = sum(r["status"] == "accepted" for r in rs)
        ref = [r for r in rs if r["status"] != "accepted"]
        bad = sum(bool(r["message_problem"]) for r in ref)
        nen = sum(bool(r["enum"]) for r in rs)
        err = c["error"] + c["gen_error"]
        why = []
        n_verify_refused = sum(r["expect"] == "verify" and r["status"] != "accepted" for r in rs)
        n_refuse_accepted = sum(r["expect"] == "refuse" and r["status"] == "accepted" for r in rs)
        for k, label in ((c["wrong"], "wrong"), (err, "error"), (c["sat_unconfirmed"], "sat unconfirmed"),
                         (n_verify_refused, "expect=verify refused"), (n_refuse_accepted, "expect=refuse accepted"),
                         (bad, "bad message"), (nen, "cannot enumerate")):
            if k:
                why.append(f"{k} {label}")
        if c["undecided"] > max_undecided:
            why.append(f"{c['undecided']} undecided > {max_undecided}")
        verdict = "yes" if not why else "no (" + ", ".join(why) + ")"
        reasons = defaultdict(int)
        for r in ref:
            reasons[_strip_path(r["message"], r["file"])] += 1
        why_refused = "; ".join(f"{_cell(m, 110)}" + (f" (×{k})" if k > 1 else "") for m, k in reasons.items())
        lines.append(f"| {row} | {dialect} | {len(rs)} | {acc} | {len(ref)} | {why_refused} | {bad} | {nen} | "
                     f"{c['props']} | "
                     f"{c['right']} | {c['wrong']} | {c['undecided']} | {err} | {verdict} |")
        for k, v in dict(fixtures=len(rs), acc=acc, ref=len(ref), bad=bad, nen=nen, props=c["props"],
                         right=c["right"], wrong=c["wrong"], und=c["undecided"], err=err).items():
            tot[k] += v
    lines.append(f"| | **total** | {tot['fixtures']} | {tot['acc']} | {tot['ref']} | | {tot['bad']} | {tot['nen']} | "
                 f"{tot['props']} | {tot['right']} | {tot['wrong']} | {tot['und']} | {tot['err']} | |")
    return "\n".join(lines)


def _strip_path(msg: str, file: str) -> str:
    """The message without its leading ``<path>: `` (the file is in the fixture column)."""
    head, sep, tail = msg.partition(": ")
    return tail if sep and head.endswith(file) else msg


def _cell(s: str, n: int = 220) -> str:
    s = " ".join(str(s).split()).replace("|", "/")
    return s if len(s) <= n else s[:n - 1] + "…"


def fixture_table(records: list[dict], max_undecided: int) -> str:
    lines = ["| row | file | tool | expect | import | refusal message (problem) | enumeration | props | right | wrong "
             "| undecided | error | sat cex confirmed | time s | problems |",
             "|---:|---|---|---|---|---|---|---:|---:|---:|---:|---:|---|---:|---|"]
    for r in sorted(records, key=lambda r: (r["row"], r["file"])):
        c = fixture_counts(r)
        msg = ""
        if r["status"] != "accepted":
            msg = _cell(r["message"]) + (f" (**bad message: {r['message_problem']}**)" if r["message_problem"] else "")
        nsat = sum(1 for p in r["props"] if p.get("word") == "sat")
        conf = f"{nsat - c['sat_unconfirmed']}/{nsat}" if nsat else ""
        enum = _cell(r["enum"], 160) if r["enum"] else ("" if r["status"] != "accepted" else "ok")
        if r.get("note"):
            enum += f"; {_cell(r['note'], 120)}"
        probs = ", ".join(fixture_problems(r, max_undecided)) or "-"
        lines.append(f"| {r['row']} | {r['file']} | {_cell(r['tool'], 40)} | {r['expect']} | {r['status']} | {msg} | "
                     f"{enum} | {c['props']} | {c['right']} | {c['wrong']} | {c['undecided']} | "
                     f"{c['error'] + c['gen_error']} | {conf} | {r['time']:.1f} | {probs} |")
    return "\n".join(lines)


def bad_table(records: list[dict]) -> str:
    bad = [(r, p) for r in records for p in r["props"] if p["outcome"] in ("wrong", "error", "gen_error")]
    if not bad:
        return "None."
    lines = ["| file | # | kind | truth | answer | outcome | detail | property | kept in |", "|---|---:|---|---|---|---|---|---|---|"]
    for r, p in bad:
        lines.append(f"| {r['file']} | {p['i']} | {p['kind']} | {p['truth']} | {p['word']} | {p['outcome']} | "
                     f"{_cell(p['detail'])} | {_cell(p.get('note', ''), 120)} | {p.get('kept', '')} |")
    return "\n".join(lines)


def report(records: list[dict], command: str, elapsed: float, manifest: Path, max_undecided: int,
           source: str = "") -> str:
    n_props = sum(len(r["props"]) for r in records)
    out = ["# ONNX conformance on the exporter corpus (onnxruntime is the referee)", "",
           f"Command: `{command}`", "",
           f"Manifest: `{manifest.resolve().relative_to(ROOT) if manifest.resolve().is_relative_to(ROOT) else manifest}` "
           f"(sha256 {_sha(manifest)}); {len(records)} fixtures, {n_props} properties, {elapsed:.0f} s; "
           f"onnxruntime {_ort_version()} on {_cpu()}." + (f" Corpus: {source}." if source else ""), "",
           "Each accepted file gets properties whose truth is enumerated over every float32 input code of the box "
           "in onnxruntime (raw QONNX: point boxes on the reference table's rows). *Wrong*: `unsat` on a violated "
           "property, or `sat` whose counterexample is outside the box or does not violate the property exactly. "
           "*Undecided*: `unknown`/`timeout`. *Bad message*: a refusal that is not one `OnnxImportError` line naming "
           "the file and a node with its op and domain. *Cannot enumerate*: the model's input has no per-element "
           "rounding node to cut at (e.g. DynamicQuantizeLinear), so no truth is computed.", "",
           f"**verified-correct** = yes iff, in that row: 0 wrong, 0 error, every sat counterexample confirmed, "
           f"every `expect=verify` fixture accepted and enumerable, every `expect=refuse` fixture refused with a "
           f"good one-line message, and at most {max_undecided} undecided properties.", "",
           "## By exporter row", "", row_table(records, max_undecided), "",
           "## By fixture", "", fixture_table(records, max_undecided), "",
           "## Wrong and error properties", "", bad_table(records), "",
           "Reproduce one fixture: `python benchmarks/onnx_conformance.py --manifest MANIFEST --only FILE --seed SEED` (the same seed gives the same properties)."]
    return "\n".join(out) + "\n"


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _cpu() -> str:
    """The CPU model and whether it has VNNI: onnxruntime's int8 kernels (and so the truth) differ
    between CPUs with and without it."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "an unknown CPU"
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    vnni = "with VNNI" if any("vnni" in f for f in flags) else "without VNNI"
    return f"{model} ({vnni})"


def load_manifest(path: Path) -> list[Fixture]:
    entries = json.loads(Path(path).read_text())
    if isinstance(entries, dict):
        entries = entries.get("fixtures", entries.get("entries", []))
    return [Fixture(i, e, Path(path).parent) for i, e in enumerate(entries)]


def run(manifest: Path, props: int = 6, seed: int = 0, timeout: float = 20.0, jobs: int = 1,
        keep: str | None = str(DEFAULT_KEEP), only: str | None = None, progress: bool = True,
        cluster: str | None = None) -> list[dict]:
    fixtures = load_manifest(manifest)
    if only:
        fixtures = [f for f in fixtures if f.entry["file"] == only or Path(f.entry["file"]).name == only]
    jobs_args = [(f, props, seed, timeout, keep or None) for f in fixtures]
    scale = Scale(workers=jobs if jobs > 1 else 0, cluster=cluster)
    if scale.parallel:
        onnx_soundness.worker_path()
    records = map_records(run_fixture, jobs_args, scale, progress=progress, desc="fixtures",
                          on_error=lambda a, why: fixture_error(a[0], why))
    if progress:
        for rec in records:
            print(f"  {rec['file']}: {rec['status']} {dict(fixture_counts(rec))}", file=sys.stderr)
    records.sort(key=lambda r: (r["row"], r["file"]))
    return records


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    ap.add_argument("--props", type=int, default=6, help="properties per accepted fixture")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=20.0, help="run_instance budget per property (s)")
    ap.add_argument("--jobs", "--workers", type=int, default=1,
                    help="local Ray worker processes (one fixture per task; 1: serial)")
    ap.add_argument("--cluster", default=None, help="run the fixtures on this Ray cluster (HOST:PORT)")
    ap.add_argument("--max-undecided", type=int, default=1, help="undecided properties a row may have and be "
                    "verified-correct")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--keep", default=str(DEFAULT_KEEP), help="folder for wrong/error cases ('' to keep none)")
    ap.add_argument("--only", default=None, help="run the one fixture with this file name")
    ap.add_argument("--source", default="", help="a note on where the corpus came from, for the report")
    a = ap.parse_args(argv)
    manifest = Path(a.manifest)
    if not manifest.exists():
        print(f"{manifest}: no corpus manifest", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    records = run(manifest, a.props, a.seed, a.timeout, a.jobs, a.keep, a.only, cluster=a.cluster)
    cmd = "python benchmarks/onnx_conformance.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(records, cmd.strip(), time.monotonic() - t0, manifest, a.max_undecided, a.source)
    onnx_soundness.write_report(a.out, text, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
