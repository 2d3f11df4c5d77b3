"""Model zoo: the QA-IBP paper's architectures, small MLPs, the AAAI'21 MLP shape; checkpoints.

Every model takes raw inputs in pixel units (0..255, so eps=1 is one grey level): its
:class:`QuantInput` has scale 1 (the code *is* the pixel) and hands the first layer ``p * 2^-8``, as
in the paper (input unsigned, 8 fractional bits). Formats for bit width ``b`` (power-of-two scales):

- weights: signed ``b`` bits, ``b - 1`` fractional bits (range [-1, 1));
- biases: signed ``b`` bits, ``b - 4`` fractional bits (range [-8, 8));
- hidden activations: unsigned ``b`` bits with ``act_int_bits`` integer bits (2 for the MNIST net,
  3 for the Fashion/CIFAR nets, as in the paper's code); the clamp at 0 is the ReLU;
- the last layer keeps its accumulator (no rounding, no saturation) unless ``out_bits`` is given.
"""
from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .base.files import atomic_write
from .graph import QNNGraph
from .nn import QuantAct, QuantAdd, QuantAvgPool2d, QuantConv2d, QuantConvBN2d, QuantInput, QuantLinear
from .quant import QuantSpec

CHECKPOINT_FORMAT = "qa-lirpa-checkpoint"
CHECKPOINT_VERSION = 1

# (filters, kernel, stride) per conv layer, then the hidden FC sizes (paper, VALID padding)
CONV_ARCHS: dict[str, tuple[list[tuple[int, int, int]], list[int]]] = {
    "mnist_conv": ([(64, 5, 2), (128, 3, 1), (256, 3, 1), (384, 3, 1), (512, 3, 2)], [128]),
    "fashion_conv": ([(64, 5, 2), (96, 3, 1), (128, 3, 2)], [128]),
    "cifar_conv": ([(64, 5, 2), (96, 3, 1), (128, 3, 2)], [128]),
    "small_conv": ([(16, 5, 2), (32, 3, 2)], [64]),
}


class QNN(nn.Sequential):
    """A quantized network: a Sequential that remembers how it was built (for checkpoints)."""

    def __init__(self, layers: Sequence[nn.Module], arch: dict[str, Any]) -> None:
        super().__init__(*layers)
        self.arch = arch


def formats(bits: int, act_int_bits: int, rounding: str = "half_up") -> dict[str, QuantSpec]:
    """The fixed-point formats of one bit width (see the module docstring)."""
    return {
        "input": QuantSpec(8, False, 1.0, rounding=rounding),
        "weight": QuantSpec.fixed_point(bits, bits - 1, True, rounding),
        "bias": QuantSpec.fixed_point(bits, bits - 4, True, rounding),
        "act": QuantSpec.fixed_point(bits, bits - act_int_bits, False, rounding),
    }


def _linear(n_in: int, n_out: int, f: dict[str, QuantSpec]) -> QuantLinear:
    return QuantLinear(n_in, n_out, f["weight"], f["bias"])


def _head(n_in: int, hidden: Sequence[int], n_classes: int, f: dict[str, QuantSpec],
          out_bits: int | None) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [_linear(n_in, h, f), QuantAct(f["act"])]
        n_in = h
    layers.append(_linear(n_in, n_classes, f))
    if out_bits is not None:
        layers.append(QuantAct(QuantSpec.fixed_point(out_bits, out_bits - 4, True, f["act"].rounding)))
    return layers


#: (stem filters, residual blocks, FC hidden) of the small ResNet-style QNNs: a stride-2 3x3 conv
#: stem, blocks ``act(x + conv(act(conv(x))))`` (the Add requantizes with the activation format, so
#: it is the block's ReLU), a 2x2 average pool (exact in onnxruntime's float32), then the FC head
RESNET_ARCHS: dict[str, tuple[int, int, list[int]]] = {
    "resnet_mini": (16, 1, [64]),
    "resnet_small": (32, 2, [128]),
}


def _resnet(arch: str, in_shape: Sequence[int], n_classes: int, f: dict[str, QuantSpec], out_bits: int | None,
            batchnorm: bool) -> list[tuple[str, nn.Module, list[str]]]:
    filters, blocks, fc = RESNET_ARCHS[arch]
    c, h, w = (int(d) for d in in_shape)
    conv = QuantConvBN2d if batchnorm else QuantConv2d
    nodes: list[tuple[str, nn.Module, list[str]]] = [
        ("input_q", QuantInput(f["input"], output_scale=2.0 ** -8), ["input"]),
        ("stem", conv(c, filters, 3, f["weight"], f["bias"], stride=2, padding=1), ["input_q"]),
        ("stem_act", QuantAct(f["act"]), ["stem"])]
    h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    x = "stem_act"
    for b in range(blocks):
        p = f"block{b}"
        nodes += [(f"{p}_conv1", conv(filters, filters, 3, f["weight"], f["bias"], padding=1), [x]),
                  (f"{p}_act1", QuantAct(f["act"]), [f"{p}_conv1"]),
                  (f"{p}_conv2", conv(filters, filters, 3, f["weight"], f["bias"], padding=1), [f"{p}_act1"]),
                  (f"{p}_add", QuantAdd(f["act"]), [x, f"{p}_conv2"])]
        x = f"{p}_add"
    if h < 2 or w < 2:
        raise ValueError(f"build_model: input {list(in_shape)} too small for '{arch}'")
    nodes += [("pool", QuantAvgPool2d(2), [x]), ("pool_act", QuantAct(f["act"]), ["pool"]),
              ("flatten", nn.Flatten(), ["pool_act"])]
    x = "flatten"
    for i, layer in enumerate(_head(filters * (h // 2) * (w // 2), fc, n_classes, f, out_bits)):
        nodes.append((f"head{i}", layer, [x]))
        x = f"head{i}"
    return nodes


def build_model(arch: str, in_shape: Sequence[int] = (1, 28, 28), n_classes: int = 10, bits: int = 8,
                hidden: Sequence[int] = (128,), act_int_bits: int | None = None,
                rounding: str = "half_up", out_bits: int | None = None, init: str = "he",
                batchnorm: bool = False) -> QNN | QNNGraph:
    """Build a QNN: a chain (:class:`QNN`) or, for the residual architectures, a
    :class:`~qa_lirpa.graph.QNNGraph`.

    Args:
        arch: ``mlp`` (hidden sizes from ``hidden``), ``aaai21_mlp`` (784-64-32 shape, 6-bit by
            default in the original; here ``bits`` applies), one of :data:`CONV_ARCHS`, or one of
            the residual :data:`RESNET_ARCHS`.
        in_shape: input shape without batch, e.g. (1, 28, 28).
        n_classes: number of outputs.
        bits: bit width of weights, biases and activations.
        hidden: hidden layer sizes for ``mlp``.
        act_int_bits: integer bits of activations (default 2 for MNIST-like inputs, 3 otherwise).
        rounding: ``half_up`` (paper, TF), ``half_even`` (ONNX), ``half_down``, ``down`` (floor) or
            ``up`` (ceil); see :data:`qa_lirpa.quant.spec.ROUNDING_MODES`.
        out_bits: requantize the outputs to this many signed bits (default: keep the accumulator).
        init: ``he`` (:func:`init_he`, the default: trains at every bit width) or ``paper``
            (:func:`init_paper`). Uses the global torch RNG.
        batchnorm: residual architectures only: every conv is a :class:`~qa_lirpa.nn.QuantConvBN2d`
            (BatchNorm folded into the quantized conv; the checkpoint and export hold the folded
            layer).
    """
    if init not in INITS:
        raise ValueError(f"build_model: unknown init '{init}' (known: {', '.join(INITS)})")
    kwargs = dict(arch=arch, in_shape=list(in_shape), n_classes=n_classes, bits=bits, hidden=list(hidden),
                  act_int_bits=act_int_bits, rounding=rounding, out_bits=out_bits, init=init)
    if batchnorm:
        kwargs["batchnorm"] = True
    if act_int_bits is None:
        act_int_bits = 2 if arch in ("mlp", "aaai21_mlp", "mnist_conv", "small_conv", *RESNET_ARCHS) else 3
    f = formats(bits, act_int_bits, rounding)
    if arch in RESNET_ARCHS:
        graph = QNNGraph(_resnet(arch, in_shape, n_classes, f, out_bits, batchnorm), arch=kwargs)
        INITS[init](graph)
        return graph
    if batchnorm:
        raise ValueError(f"build_model: batchnorm is for the residual architectures ({', '.join(RESNET_ARCHS)})")
    layers: list[nn.Module] = [QuantInput(f["input"], output_scale=2.0 ** -8)]
    n_in = 1
    for d in in_shape:
        n_in *= int(d)
    if arch == "mlp":
        layers += [nn.Flatten()] + _head(n_in, hidden, n_classes, f, out_bits)
    elif arch == "aaai21_mlp":
        layers += [nn.Flatten()] + _head(n_in, [64], 32 if n_classes == 10 else n_classes, f, out_bits)
    elif arch in CONV_ARCHS:
        convs, fc = CONV_ARCHS[arch]
        c, h, w = (int(d) for d in in_shape)
        for filters, k, s in convs:
            layers += [QuantConv2d(c, filters, k, f["weight"], f["bias"], stride=s), QuantAct(f["act"])]
            c, h, w = filters, (h - k) // s + 1, (w - k) // s + 1
            if h < 1 or w < 1:
                raise ValueError(f"build_model: input {list(in_shape)} too small for '{arch}'")
        layers += [nn.Flatten()] + _head(c * h * w, fc, n_classes, f, out_bits)
    else:
        known = ", ".join(["mlp", "aaai21_mlp", *CONV_ARCHS, *RESNET_ARCHS])
        raise ValueError(f"build_model: unknown architecture '{arch}' (known: {known})")
    model = QNN(layers, kwargs)
    INITS[init](model)
    return model


def init_he(model: nn.Module, gain: float = 1.0, bias: float = 0.1) -> None:
    """He initialisation made quantization-aware: weights ~ truncated normal (2 std) with
    ``std = max(gain * sqrt(2 / fan_in), s_w)`` (``s_w`` the weight step, so that low bit widths do
    not round every weight to 0), clipped to the representable range; biases ``bias``.

    With inputs in [0, 1) (pixels * 2^-8) and ReLU-like activations this keeps pre-activations
    around unit scale through the layers: units are neither dead nor saturated at init.
    """
    for m in model.modules():
        if hasattr(m, "weight_spec"):
            fan_in = m.weight[0].numel()
            step = max(m.weight_spec.scale)
            lo, hi = (m.weight_spec.qmin * step, m.weight_spec.qmax * step)
            std = max(gain * (2.0 / fan_in) ** 0.5, step)
            with torch.no_grad():
                w = torch.randn(m.weight.shape).clamp_(-2, 2) * std
                m.weight.copy_(w.clamp_(lo, hi))
                if m.bias is not None:
                    m.bias.fill_(bias)


def init_paper(model: nn.Module, std: float = 0.2, bias: float = 0.25, seed: int | None = None) -> None:
    """Initialisation after the paper's code (truncated normal, std 0.2; biases 0.25), with both
    scaled by ``min(1, sqrt(16 / fan_in))`` so that wide layers do not start saturated."""
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    for m in model.modules():
        if hasattr(m, "weight_spec"):
            fan_in = m.weight[0].numel()
            w = torch.randn(m.weight.shape, generator=g).clamp_(-2, 2) * std * min(1.0, (16 / fan_in) ** 0.5)
            with torch.no_grad():
                m.weight.copy_(w)
                if m.bias is not None:
                    m.bias.fill_(bias * min(1.0, (16 / fan_in) ** 0.5))


INITS = {"he": init_he, "paper": init_paper}


def save_checkpoint(path: str | os.PathLike, model: QNN, extra: dict[str, Any] | None = None) -> None:
    """Save model architecture + weights (+ ``extra``, e.g. optimizer state) atomically."""
    arch = getattr(model, "arch", None)
    if arch is None:
        raise ValueError("save_checkpoint: the model has no 'arch' (build it with build_model)")
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "arch": arch,
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    payload.update(extra or {})
    atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint dict; a clear error for anything that is not one.

    Loaded with ``weights_only=True``: a checkpoint can hold tensors, numbers, strings, lists, tuples
    and dicts, never code (a crafted pickle raises ValueError and runs nothing)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        # weights_only: tensors, numbers, strings, lists and dicts only; a pickle that names any
        # other callable (a crafted __reduce__) is refused before anything of it runs
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # "Detected pickle protocol 4": harmless, noisy
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        refused = [ln for ln in lines if ln.startswith(("Trying to load", "Unsupported global"))]
        if isinstance(e, pickle.UnpicklingError) and refused:
            why = refused[0].split("WeightsUnpickler error:")[-1].strip()[:200]
            raise ValueError(f"{path}: refusing to load: the checkpoint holds objects other than tensors, "
                             f"numbers, strings, lists and dicts ({why})") from None
        msg = next((ln for ln in lines if ln.startswith("Unsupported")), " ".join(lines))[:300]
        raise ValueError(f"{path}: not a qa-lirpa checkpoint ({type(e).__name__}: {msg})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a qa-lirpa checkpoint (no '{CHECKPOINT_FORMAT}' header)")
    if payload.get("version", 0) > CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {payload['version']} is newer than this qa-lirpa")
    return payload


def model_from_checkpoint(payload: dict[str, Any]) -> QNN:
    arch = dict(payload["arch"])
    name = arch.pop("arch")
    model = build_model(name, **arch)
    model.load_state_dict(payload["state_dict"])
    return model


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float64) -> QNN:
    """Load a trained QNN from a checkpoint, in eval mode (float64 by default: the float forward is
    then exact for these power-of-two formats)."""
    model = model_from_checkpoint(load_checkpoint(path))
    return model.to(device=device, dtype=dtype).eval()
