"""End to end through the VNN-COMP path: benchmark folders, run_instance.sh, onnxruntime checks.

Oracles: the exact MILP procedure (our exported models and the AAAI'21 network, power-of-two
scales) and enumeration of the input grid in onnxruntime (a quantize_static model).
"""
from __future__ import annotations

import gzip
import itertools
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from qa_lirpa.base.verdict import Verdict
from qa_lirpa.benchfolder import make_folder, read_instances, run_folder, summary_table
from qa_lirpa.onnx import load_onnx, run_onnxruntime
from qa_lirpa.verify.vnnlib import read_vnnlib, robustness_property, write_vnnlib
from qa_lirpa.vnncomp import ort_outputs, run_instance

ROOT = Path(__file__).resolve().parent.parent


def parse_result(path: Path) -> tuple[str, dict[str, float]]:
    lines = path.read_text().splitlines()
    values = {}
    for line in lines[1:]:
        for tok in line.replace("(", " ").replace(")", " ").split("\n"):
            parts = tok.split()
            for name, val in zip(parts[::2], parts[1::2]):
                values[name] = float(val)
    return lines[0], values


def check_counterexample(onnx_path: Path, vnnlib_path: Path, values: dict[str, float]) -> None:
    """What the VNN-COMP checker does, with zero tolerance on the property."""
    specs = read_vnnlib(vnnlib_path)
    n_in = specs[0].lower.size
    x = np.array([values[f"X_{i}"] for i in range(n_in)])
    y_written = np.array([values[f"Y_{j}"] for j in range(len(values) - n_in)])
    y = ort_outputs(onnx_path, x)
    assert np.allclose(y, y_written, rtol=1e-3, atol=0)
    assert any(np.all(x >= s.lower) and np.all(x <= s.upper)
               and any(np.all(m @ y <= r) for m, r in s.disjuncts) for s in specs)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder made from a model trained here (QA-IBP on the synthetic set, a few seconds)."""
    from qa_lirpa.train import load_train_config, train

    tmp = tmp_path_factory.mktemp("bench")
    cfg = load_train_config("synthetic", ["progress=false", "model.hidden=[12]"], str(tmp / "run"))
    train(cfg, log=lambda *_: None)
    return make_folder(str(tmp / "run" / "checkpoint.pt"), "synthetic", range(0, 4), [3.0, 40.0],
                       str(tmp / "qnn"), 8.0)


def milp_verdict(onnx_path: Path, vnnlib_path: Path) -> str:
    from qa_lirpa.exact.milp import decide_milp

    model = load_onnx(onnx_path)
    verdicts = [decide_milp(model, s, timeout=60.0)[0] for s in read_vnnlib(vnnlib_path)]
    return "sat" if Verdict.SAT in verdicts else ("unsat" if all(v is Verdict.UNSAT for v in verdicts) else "timeout")


def test_benchmark_folder_agrees_with_milp(folder):
    rows = run_folder(str(folder), "qnn_mnist")
    assert len(rows) == 8 == len(read_instances(folder))
    assert "| instances |" in summary_table(rows)
    words = set()
    for row in rows:
        onnx_path, vnn_path = folder / row["onnx"], folder / row["vnnlib"]
        expected = milp_verdict(onnx_path, vnn_path)
        # a timeout is never wrong, but most instances here must be decided
        assert row["result"] in (expected, "timeout"), (row, expected)
        words.add(row["result"])
        if row["result"] == "sat":
            word, values = parse_result(folder / "results" / f"{Path(row['vnnlib']).stem}.txt")
            assert word == "sat"
            check_counterexample(onnx_path, vnn_path, values)
    assert {"sat", "unsat"} <= words, "the folder should hold both kinds of instance"
    assert sum(r["result"] == "timeout" for r in rows) <= 2
    assert (folder / "results.csv").read_text().startswith("instance,")


def test_run_instance_script_and_gz(folder, tmp_path):
    onnx_rel, vnn_rel, _ = read_instances(folder)[1]
    gz_onnx, gz_vnn = tmp_path / "m.onnx.gz", tmp_path / "p.vnnlib.gz"
    for src, dst in ((folder / onnx_rel, gz_onnx), (folder / vnn_rel, gz_vnn)):
        with open(src, "rb") as f, gzip.open(dst, "wb") as g:
            shutil.copyfileobj(f, g)
    out = tmp_path / "out.txt"
    p = subprocess.run(["bash", str(ROOT / "vnncomp_configs" / "run_instance.sh"), "v1", "qnn_mnist",
                        str(gz_onnx), str(gz_vnn), str(out), "60"], capture_output=True, text=True,
                       timeout=200)
    assert p.returncode == 0, p.stderr
    word, values = parse_result(out)
    assert word == milp_verdict(folder / onnx_rel, folder / vnn_rel)
    if word == "sat":
        check_counterexample(folder / onnx_rel, folder / vnn_rel, values)
    prep = subprocess.run(["bash", str(ROOT / "vnncomp_configs" / "prepare_instance.sh"), "v1", "qnn_mnist",
                           str(gz_onnx), str(gz_vnn)], capture_output=True, text=True, timeout=200)
    assert prep.returncode == 0, prep.stderr


def test_malformed_vnnlib_gives_error_word(folder, tmp_path):
    onnx_rel, _, _ = read_instances(folder)[0]
    bad = tmp_path / "bad.vnnlib"
    bad.write_text("(declare-const X_0 Real)\n(assert (<= X_0 1.0)\n")
    out = tmp_path / "out.txt"
    assert run_instance("x", str(folder / onnx_rel), str(bad), str(out), 10) == "error"
    assert out.read_text().splitlines()[0] == "error"


def test_malformed_onnx_gives_error_word(folder, tmp_path):
    _, vnn_rel, _ = read_instances(folder)[0]
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    out = tmp_path / "out.txt"
    assert run_instance("x", str(bad), str(folder / vnn_rel), str(out), 10) == "error"


@pytest.mark.parametrize("sample,eps,published", [(0, 1, "robust"), (115, 2, "vulnerable")])
def test_aaai21_network_through_run_instance(tmp_path, sample, eps, published):
    from qa_lirpa.aaai21 import aaai21_robustness_spec, load_aaai21
    from qa_lirpa.onnx import export_onnx
    from qa_lirpa.train.datasets import load_dataset

    h5 = ROOT.parent / "shared" / "data" / "aaai21" / "mnist_mlp.h5"
    if not h5.exists():
        pytest.skip(f"{h5} is not available")
    model = load_aaai21(h5)
    export_onnx(model, tmp_path / "aaai21.onnx", (1, 28, 28))
    ds = load_dataset("mnist", "test")
    spec = aaai21_robustness_spec(ds.images[sample], int(ds.labels[sample]), eps)
    write_vnnlib(tmp_path / "p.vnnlib", spec.lower, spec.upper, spec.disjuncts)
    out = tmp_path / "out.txt"
    word = run_instance("qnn_mnist", str(tmp_path / "aaai21.onnx"), str(tmp_path / "p.vnnlib"), str(out), 120)
    assert word == {"robust": "unsat", "vulnerable": "sat"}[published]
    if word == "sat":
        check_counterexample(tmp_path / "aaai21.onnx", tmp_path / "p.vnnlib", parse_result(out)[1])


def test_quantize_static_model_verified_end_to_end(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "onnx"))
    from onnx_helpers import quantize_static_model

    path, shape = quantize_static_model("mlp", per_channel=True)
    model = load_onnx(path)
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.8, size=int(np.prod(shape)))
    y0 = np.asarray(run_onnxruntime(path, x.astype(np.float32)[None]), np.float64).reshape(-1)
    label = int(np.argmax(y0))
    qin = model[0]
    for eps, free in ((0.02, 3), (0.3, 3)):
        lo, hi = x.copy(), x.copy()
        lo[:free], hi[:free] = x[:free] - eps, x[:free] + eps
        lo, hi, disj = robustness_property(lo, hi, label, y0.size)
        write_vnnlib(tmp_path / "p.vnnlib", lo, hi, disj)
        # oracle: every grid point of the free dims, evaluated in onnxruntime
        c_lo = qin.codes(torch.tensor(lo)[None]).reshape(-1)[:free].tolist()
        c_hi = qin.codes(torch.tensor(hi)[None]).reshape(-1)[:free].tolist()
        grid = list(itertools.product(*[range(a, b + 1) for a, b in zip(c_lo, c_hi)]))
        codes = qin.codes(torch.tensor(x)[None]).repeat(len(grid), 1)
        codes[:, :free] = torch.tensor(grid)
        xs = np.clip(qin.real_inputs(codes).numpy(), lo, hi)
        ys = np.asarray(run_onnxruntime(path, xs.astype(np.float32)), np.float64)
        violated = any(np.all(m @ ys.T <= r[:, None], axis=0).any() for m, r in disj)
        out = tmp_path / "out.txt"
        word = run_instance("default", path, str(tmp_path / "p.vnnlib"), str(out), 60)
        assert word == ("sat" if violated else "unsat"), (eps, word)
        if word == "sat":
            check_counterexample(Path(path), tmp_path / "p.vnnlib", parse_result(out)[1])
