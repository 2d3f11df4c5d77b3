"""Conformance on the exporter corpus: ``benchmarks/onnx_conformance.py`` on every manifest entry.

``tests/onnx/corpus/manifest.json`` lists real-exporter ONNX files (torch.ao, quantize_static,
QOperator, MatMulInteger, fixed point, QONNX, tf2onnx, int4/com.microsoft, quantize_dynamic) with
``expect`` = verify or refuse. Each accepted file gets a few properties whose truth is enumerated in
onnxruntime (a raw QONNX file: its reference table) and goes through ``run_instance``. Asserted:
no wrong answer, every ``sat`` counterexample confirmed, every expect=verify file accepted (and
enumerable, and run without error), every expect=refuse file refused with one ``OnnxImportError``
line naming the file and the node with its op and domain.

The corpus tests skip while the corpus is absent; the harness itself is tested on a small
hand-built stand-in corpus (``conformance_minicorpus``) whatever the importer accepts.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import diffgen as dg

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import onnx_conformance as oc  # noqa: E402

MANIFEST = ROOT / "tests" / "onnx" / "corpus" / "manifest.json"
PROPS, TIMEOUT, JOBS = 2, 4.0, 2


@pytest.fixture(scope="module")
def corpus_records():
    if not MANIFEST.exists():
        pytest.skip(f"no exporter corpus: {MANIFEST.relative_to(ROOT)} does not exist (not merged into this branch)")
    return oc.run(MANIFEST, props=PROPS, seed=0, timeout=TIMEOUT, jobs=JOBS, keep=None, progress=False)


def _where(r, p=None) -> str:
    s = f"{r['file']} (row {r['row']}, {r['dialect']})"
    if p is not None:
        s += f" property {p['i']} {p['kind']} truth={p['truth']} answer={p['word']}: {p['detail']} [{p.get('note', '')}]"
    return s


def test_corpus_no_wrong_answers(corpus_records):
    bad = [_where(r, p) for r in corpus_records for p in r["props"] if p["outcome"] == "wrong"]
    assert not bad, "wrong answers:\n" + "\n".join(bad)


def test_corpus_sat_counterexamples_confirmed(corpus_records):
    bad = [_where(r, p) for r in corpus_records for p in r["props"] if p["word"] == "sat" and not p.get("cex_confirmed")]
    assert not bad, "sat without a confirmed counterexample:\n" + "\n".join(bad)


def test_corpus_expected_verify_accepted(corpus_records):
    bad = [f"{_where(r)}: {r['message']}" for r in corpus_records if r["expect"] == "verify" and r["status"] != "accepted"]
    assert not bad, "expect=verify fixtures refused:\n" + "\n".join(bad)


def test_corpus_accepted_are_enumerable_and_run(corpus_records):
    bad = [f"{_where(r)}: {r['enum']}" for r in corpus_records if r["expect"] == "verify" and r["enum"]]
    bad += [_where(r, p) for r in corpus_records for p in r["props"] if p["outcome"] in ("error", "gen_error")]
    assert not bad, "accepted fixtures without a checked answer:\n" + "\n".join(bad)


def test_corpus_expected_refuse_one_line_message(corpus_records):
    bad = [f"{_where(r)}: accepted" for r in corpus_records if r["expect"] == "refuse" and r["status"] == "accepted"]
    bad += [f"{_where(r)}: {r['message_problem']}: {r['message']!r}" for r in corpus_records
            if r["expect"] == "refuse" and r["status"] != "accepted" and r["message_problem"]]
    assert not bad, "expect=refuse fixtures without the one-line refusal:\n" + "\n".join(bad)


# -- the harness on the stand-in corpus --------------------------------------------------------

@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    import conformance_minicorpus

    return conformance_minicorpus.write_mini_corpus(tmp_path_factory.mktemp("minicorpus"))


def test_harness_on_mini_corpus(mini):
    records = oc.run(mini, props=3, seed=1, timeout=TIMEOUT, jobs=1, keep=None, progress=False)
    by = {r["file"]: r for r in records}
    assert set(by) == {e.entry["file"] for e in oc.load_manifest(mini)}
    for r in records:
        assert r["status"] in ("accepted", "refused"), _where(r)
        for p in r["props"]:
            assert p["outcome"] != "wrong", _where(r, p)
            assert p["word"] != "sat" or p.get("cex_confirmed"), _where(r, p)
    # the QDQ Gemm that the importer has accepted all along is decided and right
    g = by["gemm_qdq.onnx"]
    assert g["status"] == "accepted" and [p["outcome"] for p in g["props"]] == ["right"] * 3
    text = oc.report(records, "test", 0.0, mini, 1)
    assert "| 3 | QDQ Conv, QDQ Gemm | 2 | 2 | 0 |" in text


@pytest.mark.parametrize("name,cmin,cmax,n", [
    ("gemm_qdq.onnx", -128, 127, None), ("round_clip.onnx", -8, 7, 2), ("int8_input.onnx", -128, 127, 2),
    ("int4_qdq.onnx", -8, 7, 2), ("ms_qdq.onnx", -128, 127, 2), ("rank1_qdq.onnx", 0, 255, 3)])
def test_grid_of_each_dialect(mini, name, cmin, cmax, n):
    """The grid cuts at the first rounding node (or is the integer input itself) and every grid
    point of a box gives onnxruntime's output on it."""
    b = (mini.parent / name).read_bytes()
    shape = oc.input_shape(b)
    grid = dg.input_grid(b, shape)
    assert (grid.cmin, grid.cmax) == (cmin, cmax)
    if n is not None:
        assert grid.n == n
    lo = np.array([grid.threshold(i, grid.cmin + 3) for i in range(grid.n)]) - 1e-9
    hi = np.array([grid.threshold(i, grid.cmin + 5) for i in range(grid.n)])
    x, y = grid.enumerate(lo, hi)
    per = [len(c) for c, _ in grid.reachable(lo, hi)]
    assert len(x) == int(np.prod(per)) and all(k in (2, 3) for k in per)
    assert np.array_equal(y, dg.ort_run(b, x.reshape(-1, *shape)))


def test_cannot_enumerate_dynamic_quant(mini):
    b = (mini.parent / "dynamic.onnx").read_bytes()
    with pytest.raises(dg.CannotEnumerate, match="DynamicQuantizeLinear"):
        dg.input_grid(b, oc.input_shape(b))


def test_raw_qonnx_reference_table(mini):
    fx = next(f for f in oc.load_manifest(mini) if f.entry["file"] == "raw_quant.onnx")
    case = oc.build_case(fx, fx.path.read_bytes())
    assert isinstance(case, oc.TableCase)
    rng = np.random.default_rng(0)
    for kind, variant, truth in (("thr_max", "eq", True), ("thr_max", "next32", False), ("thr_min", "prev64", True)):
        inst = oc.table_instance(rng, case, kind, variant)
        assert inst.truth is truth
        if truth:
            assert dg.check_counterexample(inst, inst.witness) == (True, "")
    off = inst.lo + 0.25
    assert not dg.check_counterexample(inst, off)[0]


def test_refusal_message_check():
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("QuantizeLinear", ["x", "s"], ["q"], name="qin", domain="com.microsoft")],
                          "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("q", TensorProto.UINT8, [1])])
    b = helper.make_model(g).SerializeToString()
    assert onnx.load_from_string(b).graph.node[0].domain == "com.microsoft"
    good = "/c/m.onnx: node 'qin' (op QuantizeLinear, domain com.microsoft) is not supported"
    assert oc.message_problem(good, "/c/m.onnx", b) == ""
    assert "domain" in oc.message_problem("/c/m.onnx: node 'qin' (op QuantizeLinear) is not supported", "/c/m.onnx", b)
    assert "no node" in oc.message_problem("/c/m.onnx: unsupported", "/c/m.onnx", b)
    assert "file" in oc.message_problem("node 'qin' (op QuantizeLinear, domain com.microsoft)", "/c/m.onnx", b)
    assert "line" in oc.message_problem(good + "\nmore", "/c/m.onnx", b)
