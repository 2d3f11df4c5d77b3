"""The model zoo: shapes, exact float64 forward, initialisation, checkpoints."""
from __future__ import annotations

import pytest
import torch

from qa_lirpa.models import (CONV_ARCHS, QNN, build_model, load_checkpoint, load_model, model_from_checkpoint,
                             save_checkpoint)
from qa_lirpa.nn import QuantConv2d, QuantLinear, integer_forward

SHAPES = {"mnist_conv": (1, 28, 28), "fashion_conv": (1, 28, 28), "cifar_conv": (3, 32, 32),
          "small_conv": (1, 28, 28), "mlp": (1, 8, 8), "aaai21_mlp": (1, 28, 28)}


def _images(shape, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *shape), generator=g).double()


@pytest.mark.parametrize("arch", sorted(SHAPES))
def test_output_shapes(arch):
    torch.manual_seed(0)
    model = build_model(arch, in_shape=SHAPES[arch], hidden=[16])
    assert isinstance(model, QNN) and model.arch["arch"] == arch
    out = model(_images(SHAPES[arch]).float())
    assert out.shape == (3, 32 if arch == "aaai21_mlp" else 10)


@pytest.mark.parametrize("bits", [4, 6, 8])
@pytest.mark.parametrize("arch", ["mlp", "small_conv", "fashion_conv"])
def test_float64_forward_is_exact(arch, bits):
    """Power-of-two scales: the float64 fake-quant forward equals the exact integer semantics."""
    torch.manual_seed(bits)
    shape = (1, 28, 28) if arch != "mlp" else (1, 8, 8)
    model = build_model(arch, in_shape=shape, bits=bits, hidden=[32]).double()
    x = _images(shape, n=4, seed=bits)
    assert torch.equal(model(x).detach(), integer_forward(model, x))


def test_one_dimensional_inputs():
    model = build_model("mlp", in_shape=(6,), n_classes=3, hidden=[8])
    assert model(torch.zeros(2, 6)).shape == (2, 3)


def test_out_bits_requantizes_outputs():
    model = build_model("mlp", in_shape=(1, 8, 8), hidden=[16], out_bits=8).double()
    y = integer_forward(model, _images((1, 8, 8)))
    assert torch.equal(y * 16, torch.round(y * 16)) and y.abs().max() <= 8


@pytest.mark.parametrize("bits", [4, 6, 8])
@pytest.mark.parametrize("arch", ["mlp", "small_conv", "mnist_conv"])
def test_init_is_neither_dead_nor_saturated(arch, bits):
    """At every bit width the quantized weights are not all zero, and on MNIST-like inputs the
    hidden units are partly active and not all saturated (gradients can flow)."""
    torch.manual_seed(1)
    shape = (1, 28, 28)
    model = build_model(arch, in_shape=shape, bits=bits, hidden=[64, 64])
    for m in model.modules():
        if isinstance(m, (QuantLinear, QuantConv2d)):
            assert (m.qweight() != 0).float().mean() > 0.3, (type(m).__name__, m.weight.shape)
    x = _images(shape, n=8) * (torch.rand(8, *shape, generator=torch.Generator().manual_seed(2)) < 0.2)
    h = x.float()
    for m in model:
        h = m(h)
        if type(m).__name__ == "QuantAct":
            top = m.spec.qmax * m.spec.scale[0]
            active = (h > 0).float().mean().item()
            saturated = (h >= top).float().mean().item()
            assert 0.05 < active and saturated < 0.5, (type(m).__name__, active, saturated)


def test_unknown_arch_and_small_input():
    with pytest.raises(ValueError, match="unknown architecture 'nope'"):
        build_model("nope")
    with pytest.raises(ValueError, match="too small"):
        build_model("mnist_conv", in_shape=(1, 8, 8))


def test_conv_archs_follow_the_paper():
    assert CONV_ARCHS["mnist_conv"][0] == [(64, 5, 2), (128, 3, 1), (256, 3, 1), (384, 3, 1), (512, 3, 2)]
    assert CONV_ARCHS["fashion_conv"][0] == [(64, 5, 2), (96, 3, 1), (128, 3, 2)]
    assert CONV_ARCHS["cifar_conv"] == CONV_ARCHS["fashion_conv"]


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(3)
    model = build_model("small_conv", bits=6)
    path = tmp_path / "sub" / "model.pt"
    save_checkpoint(path, model, extra={"epoch": 7})
    payload = load_checkpoint(path)
    assert payload["epoch"] == 7 and payload["arch"]["bits"] == 6
    again = model_from_checkpoint(payload)
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    loaded = load_model(path)
    assert next(loaded.parameters()).dtype == torch.float64 and not loaded.training
    x = _images((1, 28, 28))
    assert torch.equal(loaded(x), integer_forward(model, x))
    assert not list(tmp_path.glob("sub/.*tmp")), "temporary files left behind"
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask(), "not the mode of a new file"


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a qa-lirpa checkpoint"):
        load_checkpoint(bad)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no 'qa-lirpa-checkpoint' header"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="has no 'arch'"):
        save_checkpoint(tmp_path / "x.pt", torch.nn.Sequential(torch.nn.Linear(2, 2)))


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("init", ["he", "paper"])
def test_init_choice_is_recorded(init):
    model = build_model("mlp", in_shape=(1, 8, 8), hidden=[8], init=init)
    assert model.arch["init"] == init
    with pytest.raises(ValueError, match="unknown init"):
        build_model("mlp", init="zeros")
