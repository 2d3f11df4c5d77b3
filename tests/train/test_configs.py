"""The shipped training configs: each loads, its model builds and gets certified bounds."""
from __future__ import annotations

import pytest
import torch

from qa_lirpa.config import CONFIG_DIR, ConfigError, load_config
from qa_lirpa.train.bounds import MarginBounds
from qa_lirpa.train.cli import load_train_config
from qa_lirpa.train.config import TrainConfig
from qa_lirpa.train.trainer import make_model

SHIPPED = {"mnist_8bit": (1, 28, 28), "mnist_8bit_eps1": (1, 28, 28), "mnist_8bit_eps4": (1, 28, 28),
           "fashion_8bit": (1, 28, 28), "cifar_8bit": (3, 32, 32), "synthetic": (1, 8, 8),
           "demo": (1, 28, 28), "mnist_resnet": (1, 28, 28)}


def test_every_training_config_is_listed():
    found = {p.stem for p in CONFIG_DIR.glob("*.yaml") if not p.stem.startswith("verify_")}
    assert found == set(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_config_builds_and_bounds(name):
    cfg = load_train_config(name, [])
    assert cfg.out_dir == f"runs/{name}"
    text = (CONFIG_DIR / f"{name}.yaml").read_text()
    assert len([ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]) <= 25
    torch.manual_seed(0)
    model = make_model(cfg, SHIPPED[name], 4 if name == "synthetic" else 10)
    x = torch.randint(0, 256, (2, *SHIPPED[name])).float()
    y = torch.tensor([0, 1])
    lb = MarginBounds(model, x, 4 if name == "synthetic" else 10).lower(x, y, cfg.schedule.eps)
    assert lb.shape == (2, 3 if name == "synthetic" else 9) and torch.isfinite(lb).all()


def test_mnist_eps_variants():
    assert load_train_config("mnist_8bit_eps1", []).schedule.eps == 1
    assert load_train_config("mnist_8bit_eps4", []).schedule.eps == 4
    assert load_train_config("mnist_8bit", ["schedule.eps=4"]).schedule.eps == 4


def test_unknown_keys_are_errors_naming_file_and_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  arch: mlp\n  width: 3\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*unknown key 'model\.width'"):
        load_config(TrainConfig, p)
    with pytest.raises(ConfigError, match="unknown key 'loss.kappa'"):
        load_train_config("synthetic", ["loss.kappa=0.5"])
    with pytest.raises(ConfigError, match="'loss.kind' must be one of"):
        load_train_config("synthetic", ["loss.kind=hinge"])
