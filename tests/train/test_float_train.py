"""Float training followed by post-training quantization (``model.float_train``)."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from qa_lirpa.models import build_model, load_model
from qa_lirpa.nn import QuantAct, QuantInput, QuantLinear, argmax_smallest, integer_forward, set_float_mode
from qa_lirpa.train.bounds import MarginBounds, torch_ibp_margins
from qa_lirpa.train.cli import load_train_config
from qa_lirpa.train.datasets import load_dataset
from qa_lirpa.train.trainer import train

FAST = ["threads=1", "progress=false", "data.train_subset=600", "data.test_subset=200",
        "eval.test_subset=100", "eval.pgd_steps=3", "schedule.batch_size=100"]


def _mlp(seed=0):
    torch.manual_seed(seed)
    m = build_model("mlp", in_shape=(5,), n_classes=3, hidden=(7,), bits=4).double()
    with torch.no_grad():
        for layer in m:
            if isinstance(layer, QuantLinear):   # weights off the grid and beyond the format's range
                layer.weight.mul_(3.0).add_(0.013)
    return m


def _plain_float(m, x):
    """The float network written out by hand: no rounding, no saturation, ReLU."""
    layers = [l for l in m if isinstance(l, QuantLinear)]
    h = x * 2.0 ** -8
    for i, layer in enumerate(layers):
        h = F.linear(h, layer.weight, layer.bias)
        if i < len(layers) - 1:
            h = F.relu(h)
    return h


def test_float_mode_is_the_plain_float_network_and_switches_back():
    m = _mlp()
    x = torch.rand(64, 5, dtype=torch.float64) * 255
    quantized = m(x)
    set_float_mode(m)
    assert torch.allclose(m(x), _plain_float(m, x), rtol=0, atol=1e-12)
    assert not torch.equal(m(x), quantized)           # the weights were off-grid: quantization matters
    set_float_mode(m, False)
    assert torch.equal(m(x), quantized)
    # the integer semantics never follow the flag
    set_float_mode(m)
    assert torch.equal(integer_forward(m, x.round()), integer_forward(set_float_mode(_mlp(), False), x.round()))


def test_float_mode_bounds_contain_the_float_network():
    m = set_float_mode(_mlp(1))
    x = torch.rand(8, 5, dtype=torch.float64) * 200 + 20
    y = torch.zeros(8, dtype=torch.long)
    lb = MarginBounds(m, x, 3).lower(x, y, 4.0, "IBP")
    assert torch.allclose(lb, torch_ibp_margins(m, x, y, 4.0, 3), atol=1e-9)
    pts = x.unsqueeze(1) + (torch.rand(8, 300, 5, dtype=torch.float64) * 8 - 4)
    out = _plain_float(m, pts.clamp(0, 255).reshape(-1, 5)).reshape(8, 300, 3)
    margins = out[..., :1] - out[..., 1:]
    assert (margins >= lb.unsqueeze(1) - 1e-9).all()


def test_float_mode_flags_every_quantizer():
    m = set_float_mode(build_model("small_conv", in_shape=(1, 12, 12), n_classes=4))
    quant = [l for l in m.modules() if isinstance(l, (QuantInput, QuantAct)) or hasattr(l, "weight_spec")]
    assert quant and all(l.float_mode for l in quant)


@pytest.fixture(scope="module")
def ptq_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ptq")
    cfg = load_train_config("synthetic", FAST + ["model.float_train=true", "schedule.epochs=2",
                                                 "schedule.warmup_epochs=1", "schedule.eps=8"], str(tmp / "run"))
    logs: list[str] = []
    return train(cfg, log=logs.append), logs


def test_ptq_run_reports_float_and_quantized_numbers(ptq_run):
    res, logs = ptq_run
    final = json.loads((res.out_dir / "final.json").read_text())
    assert {"float_clean_acc", "float_cert_acc", "clean_acc", "cert_acc"} <= set(final)
    assert any(line.startswith("float network before quantization") for line in logs)
    # the checkpoint is the quantized network: its exact accuracy is the reported clean accuracy
    model = load_model(res.out_dir / "checkpoint.pt")
    assert all(not getattr(l, "float_mode", False) for l in model.modules())
    test = load_dataset("synthetic", "test").subset(slice(0, 200))
    acc = (argmax_smallest(integer_forward(model, test.images.double())) == test.labels).float().mean()
    assert acc.item() == pytest.approx(final["clean_acc"])
    # the float accuracy is the float forward's
    set_float_mode(model)
    with torch.no_grad():
        facc = (model(test.images.double()).argmax(1) == test.labels).float().mean()
    assert facc.item() == pytest.approx(final["float_clean_acc"])


def test_ptq_training_trains_the_float_weights(ptq_run):
    """During float training the weights leave the quantization grid (quantization-aware training
    keeps gradient steps too, but the float run's forward never rounds them)."""
    res, _ = ptq_run
    w = [l.weight for l in res.model.modules() if isinstance(l, QuantLinear)][0].detach()
    step = 2.0 ** -7
    assert not torch.allclose(w / step, (w / step).round())
    assert res.model[0].float_mode


def test_resume_accepts_a_checkpoint_from_before_a_new_config_key(tmp_path):
    """A checkpoint written before ``model.float_train`` existed resumes: missing keys are defaults."""
    from qa_lirpa.models import load_checkpoint, save_checkpoint

    args = FAST + ["schedule.epochs=2", "eval.final=false"]
    cfg = load_train_config("synthetic", args, str(tmp_path / "old"))
    train(cfg, stop_after=1, log=lambda s: None)
    ckpt = tmp_path / "old" / "checkpoint.pt"
    payload = load_checkpoint(ckpt)
    del payload["config"]["model"]["float_train"]
    from qa_lirpa.models import model_from_checkpoint
    extra = {k: v for k, v in payload.items() if k not in ("format", "version", "arch", "state_dict")}
    save_checkpoint(ckpt, model_from_checkpoint(payload), extra)
    res = train(load_train_config("synthetic", args + ["resume=true"], str(tmp_path / "old")), log=lambda s: None)
    assert res.epochs_done == 2
    # a real difference is still refused
    bad = load_train_config("synthetic", args + ["resume=true", "model.float_train=true"], str(tmp_path / "old"))
    with pytest.raises(Exception, match="float_train"):
        train(bad, log=lambda s: None)
