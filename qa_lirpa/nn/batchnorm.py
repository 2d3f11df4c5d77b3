"""BatchNorm folded into a quantized Conv2d or Linear (quantization-aware training with folding).

The layer holds its own weight and bias and a BatchNorm of its outputs. Its meaning is always
the *folded* layer: weight ``w * g / sigma`` and bias ``beta + (b - mu) g / sigma`` (per output
channel, ``sigma = sqrt(var + eps)``), quantized with the layer's weight and bias formats. So the
exact semantics, every bound and the exported ONNX (a plain Conv/Gemm with the folded quantized
weights) read the folded values through :meth:`effective_weight`/:meth:`effective_bias`; the op
definition is the plain affine one (the registry finds it through the base class).

In training mode the forward folds the *batch* statistics of the unquantized layer's output (and
updates the running ones, as BatchNorm does); in evaluation mode, the running statistics: what is
trained is what is deployed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..quant.functions import fake_quant
from ..quant.spec import QuantSpec
from .affine import QuantConv2d, QuantLinear


class _FoldedBN:
    """Folding shared by the conv and linear variants (``self.bn`` is the BatchNorm)."""

    bn: nn.modules.batchnorm._BatchNorm
    training: bool

    def _fold(self, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # reciprocal, then a product: auto_LiRPA 0.3 reads "x / sqrt(.)" as a layer norm and fails
        inv = self.bn.weight * torch.reciprocal(torch.sqrt(var + self.bn.eps))
        w = self.weight * inv.reshape([-1] + [1] * (self.weight.dim() - 1))
        b = self.bn.bias + (self.bias - mean) * inv
        return w, b

    def effective_weight(self) -> torch.Tensor:
        return self._fold(self.bn.running_mean, self.bn.running_var)[0]

    def effective_bias(self) -> torch.Tensor:
        return self._fold(self.bn.running_mean, self.bn.running_var)[1]

    def _batch_stats(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dims = [d for d in range(y.dim()) if d != 1]
        mean = y.mean(dim=dims)
        var = y.var(dim=dims, unbiased=False)
        with torch.no_grad():
            n = y.numel() // y.shape[1]
            m = self.bn.momentum if self.bn.momentum is not None else 0.1
            self.bn.running_mean.mul_(1 - m).add_(m * mean.detach())
            self.bn.running_var.mul_(1 - m).add_(m * var.detach() * n / max(n - 1, 1))
            self.bn.num_batches_tracked += 1
        return mean, var

    def _folded_forward(self, x: torch.Tensor, linear) -> torch.Tensor:
        if self.training and not torch.jit.is_tracing():
            mean, var = self._batch_stats(linear(x, self.weight, None) + self.bias.reshape(
                [1, -1] + [1] * (x.dim() - 2)))
        else:
            mean, var = self.bn.running_mean, self.bn.running_var
        w, b = self._fold(mean, var)
        if not self.float_mode:
            w, b = fake_quant(w, self.weight_spec), fake_quant(b, self._bias_format())
        return linear(x, w, b)


class QuantConvBN2d(_FoldedBN, QuantConv2d):
    """``QuantConv2d`` followed by ``BatchNorm2d``, folded (see the module docstring). Needs a
    ``bias_spec`` (the folded bias is always there)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, weight_spec: QuantSpec,
                 bias_spec: QuantSpec, stride=1, padding=0, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, weight_spec, bias_spec, stride=stride,
                         padding=padding, bias=True)
        self.bn = nn.BatchNorm2d(out_channels, eps=eps, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._folded_forward(x, lambda v, w, b: F.conv2d(v, w, b, self.stride, self.padding))


class QuantLinearBN(_FoldedBN, QuantLinear):
    """``QuantLinear`` followed by ``BatchNorm1d``, folded (see the module docstring)."""

    def __init__(self, in_features: int, out_features: int, weight_spec: QuantSpec, bias_spec: QuantSpec,
                 eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(in_features, out_features, weight_spec, bias_spec, bias=True)
        self.bn = nn.BatchNorm1d(out_features, eps=eps, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._folded_forward(x, F.linear)


__all__ = ["QuantConvBN2d", "QuantLinearBN"]
