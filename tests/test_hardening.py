"""Hardening: no code runs from a checkpoint, runs survive signals and each other, budgets hold.

Each test replays one family of the robustness probes (benchmarks/robustness_probe.py replays them
all and prints a table)."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


# ----- checkpoints never run code ----------------------------------------------------------------

class _Payload:
    """Unpickling this would call os.system(touch MARKER)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious_checkpoint(tmp_path: Path, protocol: int) -> tuple[Path, Path]:
    marker = tmp_path / f"pwned-{protocol}"
    path = tmp_path / f"evil-{protocol}.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": "qa-lirpa-checkpoint", "version": 1, "x": _Payload(marker)}, f,
                    protocol=protocol)
    return path, marker


def _entry_point_loaders():
    """Every place a checkpoint path from the user is read: verify/certify (verify.cli.load_model),
    benchmark make (benchfolder._load_model), train --resume (Trainer.restore via train), demo
    (the demo's reuse check), and the library functions under them."""
    from qa_lirpa import benchfolder, models
    from qa_lirpa.demo import pipeline
    from qa_lirpa.verify import cli as vcli

    def resume(path: Path):
        from qa_lirpa.train.cli import load_train_config
        from qa_lirpa.train.trainer import CHECKPOINT, train

        out = path.parent / "resume_run"
        out.mkdir(exist_ok=True)
        (out / CHECKPOINT).write_bytes(path.read_bytes())
        cfg = load_train_config("synthetic", ["threads=1", "progress=false", "data.train_subset=100",
                                              "data.test_subset=50", "resume=true"], str(out))
        train(cfg, log=lambda s: None)

    def demo_reuse(path: Path):
        from qa_lirpa.train.cli import load_train_config

        cfg = load_train_config("synthetic", [], str(path.parent / "demo_run"))
        said = []
        assert pipeline._existing_run(path, cfg, said.append) is None
        raise ValueError(said[-1])

    return {"load_checkpoint": models.load_checkpoint, "load_model": models.load_model,
            "verify/certify": vcli.load_model, "benchmark make": lambda p: benchfolder._load_model(Path(p)),
            "train --resume": resume, "demo": demo_reuse}


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_malicious_checkpoint_runs_no_code(tmp_path, protocol):
    from qa_lirpa.cli import UserError
    from qa_lirpa.config import ConfigError

    path, marker = _malicious_checkpoint(tmp_path, protocol)
    for name, loader in _entry_point_loaders().items():
        with pytest.raises((ValueError, UserError, ConfigError)) as info:
            loader(path)
        msg = str(info.value)
        assert ("refusing to load" in msg or "not a qa-lirpa checkpoint" in msg), (name, msg)
        assert ".pt" in msg and "\n" not in msg, (name, msg)
        assert not marker.exists(), f"{name} ran the checkpoint's payload"


def test_malicious_checkpoint_cli_one_line(tmp_path):
    import subprocess
    import sys

    path, marker = _malicious_checkpoint(tmp_path, 2)
    spec = tmp_path / "p.vnnlib"
    spec.write_text("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1))\n"
                    "(assert (>= X_0 0))\n(assert (<= Y_0 0))\n")
    r = subprocess.run([sys.executable, "-m", "qa_lirpa", "verify", "--model", str(path), "--vnnlib", str(spec)],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert r.returncode == 2 and not marker.exists()
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "refusing to load" in lines[0] and "Traceback" not in r.stderr, r.stderr


def test_shipped_checkpoints_load_safely():
    import subprocess

    from qa_lirpa.models import load_checkpoint

    files = subprocess.run(["git", "ls-files", "*.pt"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    for f in files:
        payload = load_checkpoint(ROOT / f)
        assert payload["format"] == "qa-lirpa-checkpoint"


def test_rng_state_round_trips_through_a_safe_checkpoint(tmp_path):
    import random

    import numpy as np
    import torch

    from qa_lirpa.train.trainer import _rng_state, _set_rng_state

    random.seed(3), np.random.seed(4), torch.manual_seed(5)
    path = tmp_path / "rng.pt"
    torch.save({"rng": _rng_state()}, path)
    want = (random.random(), np.random.rand(), torch.rand(1).item())
    _set_rng_state(torch.load(path, weights_only=True)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == want
