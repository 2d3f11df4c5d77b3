"""End to end: a short synthetic run, its files, resume, stopping, errors, the CLI."""
from __future__ import annotations

import json
import os

import pytest
import torch
import yaml

from qa_lirpa.cli import main
from qa_lirpa.config import ConfigError, load_config
from qa_lirpa.models import load_checkpoint, load_model
from qa_lirpa.nn import argmax_smallest, integer_forward
from qa_lirpa.train.cli import load_train_config
from qa_lirpa.train.config import TrainConfig
from qa_lirpa.train.datasets import load_dataset
from qa_lirpa.train.records import METRIC_COLUMNS, read_metrics_csv
from qa_lirpa.train.trainer import train

FAST = ["threads=1", "progress=false", "data.train_subset=600", "data.test_subset=200",
        "eval.test_subset=100", "eval.pgd_steps=3", "schedule.batch_size=100"]


def _cfg(tmp_path, *extra, name="run"):
    return load_train_config("synthetic", FAST + list(extra), str(tmp_path / name))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    cfg = _cfg(tmp, "schedule.epochs=3", "schedule.warmup_epochs=1", "loss.kind=gowal", "schedule.eps=12")
    logs = []
    return train(cfg, log=logs.append), logs


def test_end_to_end_files_and_metrics(run):
    result, logs = run
    out = result.out_dir
    for name in ("checkpoint.pt", "config.yaml", "metrics.csv", "training_curves.png", "final.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*.tmp")), "temporary files left behind"
    mask = os.umask(0)
    os.umask(mask)
    for f in out.iterdir():
        assert f.stat().st_mode & 0o777 == 0o666 & ~mask, f"{f.name}: not the mode of a new file"
    rows = read_metrics_csv(out / "metrics.csv")
    assert len(rows) == 3 and list(rows[0]) == list(METRIC_COLUMNS)
    assert rows[0]["eps"] == 0 and rows[-1]["eps"] == pytest.approx(12.1)
    assert rows[-1]["loss"] < rows[0]["loss"] * 2
    for r in rows:
        assert r["test_cert_acc"] <= r["test_pgd_acc"] <= r["test_clean_acc"]
    final = json.loads((out / "final.json").read_text())
    assert final["n"] == 200 and final["epochs_done"] == 3 and final["stopped"] is None
    assert final["cert_acc"] <= final["pgd_acc"] <= final["clean_acc"]
    assert final["clean_acc"] > 0.9 and final["cert_acc"] > 0.5
    assert any(line.startswith("final (200 test samples") for line in logs)
    assert (out / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_effective_config_reloads(run):
    result, _ = run
    cfg = load_config(TrainConfig, result.out_dir / "config.yaml")
    assert cfg.schedule.eps == 12 and cfg.loss.kind == "gowal" and cfg.out_dir == str(result.out_dir)


def test_checkpoint_holds_a_working_model(run):
    result, _ = run
    payload = load_checkpoint(result.out_dir / "checkpoint.pt")
    assert payload["epoch"] == 3 and len(payload["metrics"]) == 3 and payload["final"]["n"] == 200
    assert {"optimizer", "scheduler", "rng", "config"} <= set(payload)
    model = load_model(result.out_dir / "checkpoint.pt")
    test = load_dataset("synthetic", "test").subset(slice(0, 200))
    acc = (argmax_smallest(integer_forward(model, test.images.double())) == test.labels).float().mean()
    assert acc.item() == pytest.approx(payload["final"]["clean_acc"])


def _state(path):
    p = load_checkpoint(path)
    return p["state_dict"], p["optimizer"]["state"]


def test_resume_reaches_the_same_state(tmp_path):
    extra = ["schedule.epochs=2", "schedule.warmup_epochs=0", "eval.final=false", "data.augment=crop",
             "data.crop_padding=1", "schedule.eps=6"]
    full = train(_cfg(tmp_path, *extra, name="full"), log=lambda s: None)
    part_cfg = _cfg(tmp_path, *extra, name="part")
    first = train(part_cfg, stop_after=1, log=lambda s: None)
    assert first.epochs_done == 1 and first.stopped == "stop_after"
    resumed = train(_cfg(tmp_path, *extra, "resume=true", name="part"), log=lambda s: None)
    assert resumed.epochs_done == 2 and len(resumed.metrics) == 2
    (sa, oa), (sb, ob) = _state(tmp_path / "full" / "checkpoint.pt"), _state(tmp_path / "part" / "checkpoint.pt")
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    for k in oa:
        for name in oa[k]:
            assert torch.equal(torch.as_tensor(oa[k][name]), torch.as_tensor(ob[k][name])), (k, name)
    assert [r["loss"] for r in full.metrics] == [r["loss"] for r in resumed.metrics]


def test_resume_refuses_a_different_config(tmp_path):
    train(_cfg(tmp_path, "schedule.epochs=1", "eval.final=false"), log=lambda s: None)
    with pytest.raises(ConfigError, match="differs in schedule.lr"):
        train(_cfg(tmp_path, "schedule.epochs=1", "schedule.lr=0.5", "resume=true"), log=lambda s: None)
    with pytest.raises(ConfigError, match="already holds a checkpoint"):
        train(_cfg(tmp_path, "schedule.epochs=1"), log=lambda s: None)
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        train(_cfg(tmp_path, "resume=true", name="empty"), log=lambda s: None)


def test_time_budget_stops_and_still_evaluates(tmp_path):
    res = train(_cfg(tmp_path, "schedule.epochs=50", "schedule.max_minutes=0.0001"), log=lambda s: None)
    assert res.stopped == "time budget" and res.epochs_done < 50
    assert res.final is not None and res.final["stopped"] == "time budget"


def test_crown_ibp_and_qaibp_runs(tmp_path):
    for kind in ("crown_ibp", "qaibp"):
        res = train(_cfg(tmp_path, f"loss.kind={kind}", "schedule.epochs=1", "schedule.warmup_epochs=0",
                         "data.train_subset=200", "schedule.eps=8",
                         "eval.final=false", name=kind), log=lambda s: None)
        assert res.epochs_done == 1 and res.metrics[0]["robust"] > 0


def test_cli_train_and_errors(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["train", "synthetic", "--out-dir", str(out), "--no-progress", "--device", "cpu"]
    sets = [a for s in FAST + ["schedule.epochs=1", "eval.final_pgd=false"] for a in ("--set", s)]
    assert main(args + sets) == 0
    assert "wrote" in capsys.readouterr().out and (out / "final.json").is_file()
    assert main(args + sets) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err
    assert main(args + sets + ["--resume"]) == 0                 # nothing left to train: re-evaluates
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"schedule": {"epochs": 1, "epoch": 2}}))
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and "schedule.epoch'" in err
    assert main(["train", "no_such_config"]) == 2
    assert "no shipped config named 'no_such_config'" in capsys.readouterr().err


def test_missing_dataset_message(tmp_path, capsys):
    code = main(["train", "synthetic", "--out-dir", str(tmp_path / "c"), "--set", "data.name=cifar10",
                 "--set", f"data.root={tmp_path / 'nowhere'}"])
    assert code == 2
    assert "CIFAR-10 not found" in capsys.readouterr().err


def test_default_out_dir_and_validation():
    cfg = load_train_config("synthetic", [])
    assert cfg.out_dir == "runs/synthetic"
    with pytest.raises(ConfigError, match="warmup_epochs"):
        load_train_config("synthetic", ["schedule.warmup_epochs=9"])


@pytest.mark.parametrize("bits", [4, 6])
def test_low_bit_widths_train(tmp_path, bits):
    res = train(_cfg(tmp_path, f"model.bits={bits}", "schedule.epochs=2", "schedule.eps=4", "eval.pgd_steps=2",
                     name=f"b{bits}"), log=lambda s: None)
    assert res.final["clean_acc"] > 0.6 and res.final["cert_acc"] <= res.final["pgd_acc"] <= res.final["clean_acc"]
