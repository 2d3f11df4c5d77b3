"""``qa-lirpa demo`` end to end on a tiny setting (a few epochs on a few thousand MNIST images,
10 instances), checked from the files it leaves: the printed table against the verdict files,
every ``sat`` counterexample in onnxruntime (run here, not through qa_lirpa), the plot, the CSV,
and a second run that reuses the checkpoint and rewrites the benchmark folder."""
from __future__ import annotations

import csv
import io
import json
import re
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from qa_lirpa.cli import main
from qa_lirpa.demo.checks import counterexample_problem, read_result, violates_at_centre
from qa_lirpa.demo.pipeline import config_changes

WORDS = ("sat", "unsat", "timeout", "unknown", "error")
TINY = ["--epochs", "3", "--train-subset", "4000", "--eps", "1", "--timeout", "4",
        "--set", "schedule.ramp_length=1", "--set", "eval.test_subset=200"]


def run_demo(*args: str) -> tuple[int, str]:
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(["demo", *args])
    return rc, buf.getvalue()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    rc, text = run_demo("--out", str(out), "--samples", "10", "--script-checks", "1", *TINY)
    return out, rc, text


def printed_table(text: str) -> dict[str, str]:
    lines = text.splitlines()
    k = next(i for i, line in enumerate(lines) if line.startswith("| instances |"))
    head = [c.strip() for c in lines[k].strip("|").split("|")]
    cells = [c.strip() for c in lines[k + 2].strip("|").split("|")]
    return dict(zip(head, cells))


def verdict_files(folder: Path) -> list[tuple[Path, Path, Path]]:
    """(onnx, vnnlib, result file) per line of instances.csv."""
    with open(folder / "instances.csv", newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    return [(folder / o, folder / v, folder / "results" / f"{Path(v).stem}.txt") for o, v, _ in rows]


def ort_check(onnx_path: Path, vnnlib_path: Path, result_path: Path) -> None:
    """The VNN-COMP counterexample check with zero tolerance on the property, in onnxruntime."""
    import onnxruntime as ort

    from qa_lirpa.verify.vnnlib import read_vnnlib

    text = result_path.read_text()
    assert text.splitlines()[0] == "sat"
    pairs = re.findall(r"\((X|Y)_(\d+) ([^\s()]+)\)", text)
    x = np.array([float(v) for k, _, v in pairs if k == "X"])
    y_written = np.array([float(v) for k, _, v in pairs if k == "Y"])
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32).reshape(1, 1, 28, 28)})[0]
    y = y.reshape(-1).astype(np.float64)
    assert np.allclose(y, y_written, rtol=1e-3, atol=0)
    specs = read_vnnlib(vnnlib_path)
    assert any(np.all(x >= s.lower) and np.all(x <= s.upper) and any(np.all(m @ y <= r) for m, r in s.disjuncts)
               for s in specs), result_path


@pytest.mark.slow
def test_demo_runs_and_passes_its_checks(demo):
    out, rc, text = demo
    assert rc == 0, text
    assert "all checks passed" in text
    for k in range(1, 7):
        assert f"[{k}/6] " in text


@pytest.mark.slow
def test_table_counts_equal_the_verdict_files(demo):
    out, _, text = demo
    table = printed_table(text)
    files = verdict_files(out / "vnncomp")
    assert int(table["instances"]) == len(files) == 10
    words = [res.read_text().splitlines()[0] for _, _, res in files]
    assert set(words) <= set(WORDS)
    for w in WORDS:
        assert int(table[w]) == words.count(w), w
    assert {"sat", "unsat"} <= set(words), "the tiny setting should give both kinds of verdict"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdicts"] == {w: words.count(w) for w in WORDS}
    assert sum(summary["outcomes"].values()) == 10


@pytest.mark.slow
def test_every_sat_counterexample_holds_in_onnxruntime(demo):
    out, _, _ = demo
    sats = [(o, v, r) for o, v, r in verdict_files(out / "vnncomp") if r.read_text().startswith("sat\n")]
    assert sats
    for onnx_path, vnnlib_path, result in sats:
        ort_check(onnx_path, vnnlib_path, result)


@pytest.mark.slow
def test_clean_accuracy_and_misclassified_rows(demo):
    import onnxruntime as ort

    from qa_lirpa.train.datasets import load_dataset

    out, _, text = demo
    ds = load_dataset("mnist", "test")
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"input": ds.images.numpy().astype(np.float32)})[0]
    acc = float((y.argmax(1) == ds.labels.numpy()).mean())
    assert f"{100 * acc:.2f}% of 10000" in text
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["sample"]) for r in rows] == list(range(10))
    for r in rows:
        k = int(r["sample"])
        others = np.delete(y[k], int(ds.labels[k]))
        assert int(r["misclassified"]) == int(others.max() >= y[k][int(ds.labels[k])])
        if int(r["misclassified"]):
            assert r["result"] in ("sat", "timeout")      # the clean image is in the box
        assert (r["counterexample"] == "confirmed") == (r["result"] == "sat")


@pytest.mark.slow
def test_plot_and_reports_are_written(demo):
    out, _, _ = demo
    png = (out / "verification.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    assert (out / "train" / "training_curves.png").read_bytes().startswith(b"\x89PNG")
    md = (out / "results.md").read_text()
    assert "| instances |" in md and "verification.png" in md
    assert not list(out.rglob("*.tmp")), "a temporary file was left behind"


@pytest.mark.slow
def test_tampered_counterexample_is_rejected(demo, tmp_path):
    out, _, _ = demo
    onnx_path, vnnlib_path, result = next((o, v, r) for o, v, r in verdict_files(out / "vnncomp")
                                          if r.read_text().startswith("sat\n"))
    assert counterexample_problem(onnx_path, vnnlib_path, result, (1, 28, 28)) is None
    word, x, y = read_result(result)
    bad = tmp_path / "bad.txt"
    body = "".join(f"(X_{i} {float(v)!r})\n" for i, v in enumerate(x))
    bad.write_text("sat\n(" + body + "".join(f"(Y_{j} {float(v) + 1.0!r})\n" for j, v in enumerate(y)) + ")\n")
    assert "differ" in counterexample_problem(onnx_path, vnnlib_path, bad, (1, 28, 28))
    far = x.copy()
    far[0] = far[0] + 50.0                                 # outside the eps box
    bad.write_text("sat\n(" + "".join(f"(X_{i} {float(v)!r})\n" for i, v in enumerate(far))
                   + "".join(f"(Y_{j} {float(v)!r})\n" for j, v in enumerate(y)) + ")\n")
    assert counterexample_problem(onnx_path, vnnlib_path, bad, (1, 28, 28)) is not None


@pytest.mark.slow
def test_second_run_reuses_the_model_and_rewrites_the_folder(demo, tmp_path):
    out = tmp_path / "again"
    shutil.copytree(demo[0], out)           # the fixture's folder stays as it was for the other tests
    ckpt = out / "train" / "checkpoint.pt"
    before = ckpt.stat().st_mtime_ns
    rc, text = run_demo("--out", str(out), "--samples", "3", "--script-checks", "0", *TINY)
    assert rc == 0, text
    assert "reusing the finished run" in text
    assert ckpt.stat().st_mtime_ns == before
    assert len(verdict_files(out / "vnncomp")) == 3
    assert len(list((out / "vnncomp" / "vnnlib").iterdir())) == 3
    assert len(list((out / "vnncomp" / "results").iterdir())) == 3
    assert int(printed_table(text)["instances"]) == 3


@pytest.mark.slow
def test_via_script_runs_run_instance_sh_per_instance(demo, tmp_path):
    out = tmp_path / "script"
    shutil.copytree(demo[0] / "train", out / "train")
    rc, text = run_demo("--out", str(out), "--samples", "2", "--via-script", *TINY)
    assert rc == 0, text
    assert "run_instance.sh per instance" in text
    first = {r.name: r.read_text() for _, _, r in verdict_files(demo[0] / "vnncomp")}
    for onnx_path, vnnlib_path, result in verdict_files(out / "vnncomp"):
        text = result.read_text()
        words = {text.splitlines()[0], first[result.name].splitlines()[0]}
        assert len(words) == 1 or "timeout" in words, (result.name, words)   # a timeout is never wrong
        if text.startswith("sat\n"):
            ort_check(onnx_path, vnnlib_path, result)


@pytest.mark.slow
def test_an_interrupted_run_is_resumed(demo, tmp_path):
    import torch

    out = tmp_path / "resume"
    shutil.copytree(demo[0] / "train", out / "train")
    ckpt = out / "train" / "checkpoint.pt"
    payload = torch.load(ckpt, weights_only=False)
    payload.update(epoch=2, final=None, metrics=payload["metrics"][:2])    # as if stopped after epoch 2
    torch.save(payload, ckpt)
    rc, text = run_demo("--out", str(out), "--samples", "2", "--script-checks", "0", *TINY)
    assert rc == 0, text
    assert "resuming from" in text and "epoch 3/3" in text and "epoch 2/3" not in text
    assert "model resumed" in text


def test_config_changes_ignore_runtime_keys():
    a = {"schedule": {"eps": 2.0, "epochs": 8, "max_minutes": 0}, "out_dir": "x", "seed": 0}
    b = {"schedule": {"eps": 2.0, "epochs": 3, "max_minutes": 5}, "out_dir": "y", "seed": 0}
    assert config_changes(a, b) == ["schedule.epochs"]
    assert config_changes(a, a) == []


def test_misclassified_includes_ties():
    out = np.array([[1.0, 2.0, 0.0], [3.0, 3.0, 0.0], [5.0, 1.0, 4.0]])
    assert violates_at_centre(out, np.array([0, 1, 0])).tolist() == [True, True, False]


@pytest.mark.parametrize("bad", [["--samples", "abc"], ["--samples", "5:5"], ["--timeout", "0"]])
def test_bad_options_are_user_errors(bad, capsys, tmp_path):
    assert main(["demo", "--out", str(tmp_path / "x"), *bad]) == 2
    assert "qa-lirpa demo: error:" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
