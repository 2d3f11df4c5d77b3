"""``qa-lirpa verify`` and ``qa-lirpa certify`` end to end (model loading monkeypatched where
``qa_lirpa.models`` is not available)."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from qa_lirpa.cli import main
from qa_lirpa.verify import cli as vcli
from qa_lirpa.verify.certify import SampleResult, parse_samples, summary_table
from qa_lirpa.verify.vnnlib import write_vnnlib

from .tiny_qnn import tiny_mlp


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """A tiny QNN behind the CLI's model loader; returns the model and a (fake) checkpoint path."""
    centre = torch.tensor([60.0, 120.0, 200.0], dtype=torch.float64)
    model = tiny_mlp(3, [6], 3, centre, seed=11)
    path = tmp_path / "model.pt"
    path.write_bytes(b"placeholder")
    monkeypatch.setattr(vcli, "load_model", lambda p, device="cpu": model)
    return model, str(path), centre.numpy()


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_prints_the_verdict_first(tiny, tmp_path, capsys):
    model, path, centre = tiny
    prop = tmp_path / "p.vnnlib"
    results = tmp_path / "out.txt"
    mat = np.array([[1.0, 0.0, 0.0]])
    with torch.no_grad():
        y0 = model(torch.tensor(centre)[None])[0, 0].item()
    write_vnnlib(prop, centre - 1, centre + 1, [(mat, np.array([y0 + 0.01]))])   # y_0 <= y_0(c): sat
    code, out, _ = run(capsys, "verify", "--model", path, "--vnnlib", str(prop), "--timeout", "20",
                       "--device", "cpu", "--results", str(results))
    assert code == 0 and out.splitlines()[0] == "sat"
    text = results.read_text().splitlines()
    assert text[0] == "sat" and text[1].startswith("((X_0 ") and text[-1].endswith(")")
    assert sum(line.strip().startswith(("(X_", "((X_")) for line in text) == 3
    write_vnnlib(prop, centre - 1, centre + 1, [(mat, np.array([-1e6]))])
    code, out, _ = run(capsys, "verify", "--model", path, "--vnnlib", str(prop), "--set", "method=paper")
    assert code == 0 and out.splitlines()[0] == "unsat"


def test_verify_bad_inputs_exit_2(tiny, tmp_path, capsys):
    _, path, centre = tiny
    bad = tmp_path / "bad.vnnlib"
    bad.write_text("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1.0)\n")
    code, _, err = run(capsys, "verify", "--model", path, "--vnnlib", str(bad))
    assert code == 2 and f"{bad}:3:1" in err
    good = tmp_path / "good.vnnlib"
    write_vnnlib(good, centre, centre, [(np.ones((1, 3)), np.zeros(1))])
    code, _, err = run(capsys, "verify", "--model", path, "--vnnlib", str(good), "--set", "batch_size=0")
    assert code == 2 and "batch_size" in err
    code, _, err = run(capsys, "verify", "--model", path, "--vnnlib", str(good), "--set", "nonsense=1")
    assert code == 2 and "unknown key" in err
    write_vnnlib(good, np.zeros(5), np.ones(5), [(np.ones((1, 3)), np.zeros(1))])
    code, _, err = run(capsys, "verify", "--model", path, "--vnnlib", str(good))
    assert code == 2 and "(5,)" in err


def test_model_loading_errors(tmp_path, capsys):
    prop = tmp_path / "p.vnnlib"
    write_vnnlib(prop, np.zeros(2), np.ones(2), [(np.ones((1, 2)), np.zeros(1))])
    code, _, err = run(capsys, "verify", "--model", str(tmp_path / "missing.pt"), "--vnnlib", str(prop))
    assert code == 2 and "not found" in err
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"")
    spec = importlib.util.find_spec("qa_lirpa.onnx")
    has_onnx = spec is not None and hasattr(importlib.import_module("qa_lirpa.onnx"), "load_onnx")
    if not has_onnx:
        code, _, err = run(capsys, "verify", "--model", str(onnx), "--vnnlib", str(prop))
        assert code == 2 and "ONNX import is not available" in err


@pytest.mark.skipif(importlib.util.find_spec("qa_lirpa.models") is None,
                    reason="qa_lirpa.models (checkpoint loading) is not written yet")
def test_verify_and_certify_load_a_real_checkpoint(tmp_path, capsys):
    import qa_lirpa.models as models

    torch.manual_seed(0)
    model = models.build_model("mlp", in_shape=(1, 8, 8), n_classes=4, hidden=(16,))
    ckpt = tmp_path / "m.pt"
    models.save_checkpoint(ckpt, model)
    prop = tmp_path / "p.vnnlib"
    x = np.full(64, 100.0)
    write_vnnlib(prop, x - 2, x + 2, [(np.ones((1, 4)), np.array([-1e9]))])
    code, out, err = run(capsys, "verify", "--model", str(ckpt), "--vnnlib", str(prop), "--timeout", "20")
    assert code == 0 and out.splitlines()[0] == "unsat", err
    csv = tmp_path / "c.csv"
    code, out, err = run(capsys, "certify", "--model", str(ckpt), "--dataset", "synthetic", "--eps", "1",
                         "--samples", "0:3", "--timeout", "5", "--out", str(csv), "--no-progress")
    assert code == 0 and "verified robust" in out and len(csv.read_text().splitlines()) == 4, err


def synthetic_model() -> nn.Sequential:
    """A QNN for the synthetic dataset's 1x8x8 raw-pixel images (4 classes)."""
    flat = tiny_mlp(64, [8], 4, torch.full((64,), 128.0), seed=2)
    return nn.Sequential(flat[0], nn.Flatten(), *list(flat)[1:])


def test_certify_table_and_csv(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(vcli, "load_model", lambda p, device="cpu": synthetic_model())
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"x")
    csv = tmp_path / "res.csv"
    code, out, err = run(capsys, "certify", "--model", str(ckpt), "--dataset", "synthetic", "--eps", "2",
                         "--samples", "0:12", "--timeout", "5", "--out", str(csv), "--no-progress")
    assert code == 0, err
    assert "verified robust" in out and "misclassified" in out and "time per verified sample" in out
    lines = csv.read_text().splitlines()
    assert lines[0] == "index,label,predicted,verdict,time_s,boxes,note" and len(lines) == 13
    words = {line.split(",")[3] for line in lines[1:]}
    assert words <= {"robust", "falsified", "timeout", "unknown", "misclassified"}  # no "error"
    code, _, err = run(capsys, "certify", "--model", str(ckpt), "--dataset", "synthetic", "--eps", "2",
                       "--samples", "9999:10000")
    assert code == 2 and "selects no sample" in err


def test_shipped_configs_load():
    from qa_lirpa.config import load_config
    from qa_lirpa.verify import VerifierConfig

    assert load_config(VerifierConfig, "verify_default") == VerifierConfig()
    paper = load_config(VerifierConfig, "verify_paper").effective()
    assert (paper.method, paper.batch_size, paper.crown, paper.branching) == ("paper", 1, "never", "widest")


def test_on_off_settings_as_written_in_yaml(tmp_path):
    """The auto | on | off settings take a bare ``on`` / ``off`` (YAML 1.1 reads them as booleans)
    in a file and as an override; a boolean is no value of a setting without on / off."""
    from qa_lirpa.config import ConfigError, load_config
    from qa_lirpa.verify import VerifierConfig

    path = tmp_path / "onoff.yaml"
    path.write_text("cpsat_presolve: on\nexact_tighten: off\n")
    cfg = load_config(VerifierConfig, path, ["exact_beside_portfolio=off", "cpsat_lp=lazy"])
    assert (cfg.cpsat_presolve, cfg.exact_tighten, cfg.exact_beside_portfolio, cfg.cpsat_lp) == ("on", "off", "off", "lazy")
    with pytest.raises(ConfigError, match="cpsat_lp"):
        load_config(VerifierConfig, None, ["cpsat_lp=on"])


@pytest.mark.parametrize("text, words", [("portfolio_yield: 1.5\n", "portfolio_yield must be in [0, 1]"),
                                         ("exact_after: -0.1\n", "exact_after must be in [0, 1]"),
                                         ("exact_beside_portfolio: maybe\n", "exact_beside_portfolio")])
def test_config_value_errors_name_the_file(tmp_path, capsys, text, words):
    """A value out of range (the dataclass's own checks) is one line naming the file, as a
    mistyped key is."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, _, err = run(capsys, "verify", "--config", str(path), "--model", str(tmp_path / "m.pt"),
                       "--vnnlib", str(tmp_path / "p.vnnlib"))
    line = err.strip().splitlines()[-1]
    assert code == 2 and str(path) in line and words in line and "Traceback" not in err, err


def test_parse_samples_and_table():
    assert list(parse_samples("0:3", 10)) == [0, 1, 2]
    assert list(parse_samples("5", 10)) == [5]
    assert list(parse_samples("::4", 10)) == [0, 4, 8]
    assert list(parse_samples("8:100", 10)) == [8, 9]
    for bad in ["a:b", "1:2:3:4", "11"]:
        with pytest.raises(Exception):
            parse_samples(bad, 10)
    rows = [SampleResult(0, 1, 1, "robust", 0.5, 3), SampleResult(1, 2, 0, "misclassified", 0.01, 0),
            SampleResult(2, 3, 3, "timeout", 2.0, 100)]
    table = summary_table(rows)
    assert "verified robust       1   33.33" in table and "mean 1.250, median 1.250, max 2.000 (n=2)" in table
