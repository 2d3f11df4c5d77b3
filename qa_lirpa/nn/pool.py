"""Pooling: :class:`QuantAvgPool2d` (exact sum pooling at scale ``s / k``) and max pooling
(``nn.MaxPool2d`` on codes).

Average pooling has no rounding of its own here: the exact value ``(1/k) sum x`` is an integer sum
of centred codes at scale ``s / k`` (``k`` the kernel area, padding counts as the real value 0), and
the next quantizer rounds it. Max pooling of codes within one channel is the code of the maximum
(one scale and zero point per channel). Both are monotone non-decreasing in every input: the
interval image of a box is the image of its two ends.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..graph.registry import OpDef, register
from .tensors import IntBox, IntTensor


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _int64(x: IntTensor, what: str) -> torch.Tensor:
    c = x.values
    if not isinstance(c, torch.Tensor):
        raise OverflowError(f"{what}: input values beyond int64 (requantize first)")
    return c


def _pool_back(fn, in_shape, g: torch.Tensor) -> torch.Tensor:
    """The vector-Jacobian product of a pooling function at 0 (for the branching heuristic)."""
    x = torch.zeros(in_shape, dtype=g.dtype, device=g.device, requires_grad=True)
    with torch.enable_grad():
        y = fn(x)
        (gx,) = torch.autograd.grad(y, x, g.reshape(y.shape))
    return gx


class QuantAvgPool2d(nn.AvgPool2d):
    """2-d average pooling with zero padding counted (``count_include_pad=True``), no ceil mode.
    Its exact value is carried at scale ``s / k`` (no rounding): put a quantizer after it."""

    def __init__(self, kernel_size, stride=None, padding=0) -> None:
        super().__init__(kernel_size, stride=stride, padding=padding, ceil_mode=False, count_include_pad=True)

    def area(self) -> int:
        kh, kw = _pair(self.kernel_size)
        return kh * kw

    def sum_pool(self, v: torch.Tensor) -> torch.Tensor:
        """Exact sums of integer values over each window (int64; float64 sums of integers below
        2^53 are exact, checked)."""
        k = self.area()
        if v.numel() and int(v.abs().max()) * k >= (1 << 53):
            raise OverflowError("QuantAvgPool2d: window sums beyond 2^53")
        s = F.avg_pool2d(v.double(), self.kernel_size, self.stride, self.padding, False, True) * k
        return torch.round(s).to(torch.int64)


class AvgPoolOp(OpDef):
    name = "average pool"
    types = (QuantAvgPool2d,)
    chord = False
    bound_ops = ("BoundAveragePool",)

    def int_forward(self, m, x: IntTensor) -> IntTensor:
        c = x.centered()
        if not isinstance(c, torch.Tensor):
            raise OverflowError("QuantAvgPool2d: input values beyond int64 (requantize first)")
        k = m.area()
        if len(x.scale) > 1 and x.axis != 1:
            raise ValueError("QuantAvgPool2d: per-channel inputs must be quantized along axis 1")
        return IntTensor(m.sum_pool(c), [s / k for s in x.scale], [0], 1)

    def interval(self, m, ctx, box: IntBox) -> IntBox:
        a, b = box.ends()
        return IntBox.of(self.int_forward(m, a), self.int_forward(m, b))

    def matrix(self, m, in_shape: tuple) -> tuple[np.ndarray, tuple]:
        """The sum pooling as an integer (0/1) matrix on the flat input of ``in_shape``
        (``[C, H, W]``): ``(matrix [out, in], output shape)``."""
        n = int(np.prod(in_shape))
        cols = m.sum_pool(torch.eye(n, dtype=torch.int64).reshape((n,) + tuple(in_shape)))
        return cols.reshape(n, -1).T.numpy(), tuple(int(v) for v in cols.shape[1:])

    def milp(self, m, enc, x):
        """Sums of the centred input codes of each window, at scale ``s / k`` (no rounding)."""
        if len(x.shape) != 3:
            raise enc.Error(f"{enc.name}: expects a [C, H, W] input, got {x.shape}")
        mat, shape = self.matrix(m, x.shape)
        plane = x.shape[1] * x.shape[2]
        k = m.area()
        scales = [x.scale[(j // (shape[1] * shape[2])) * plane] / k for j in range(mat.shape[0])]
        return enc.linear(x, mat, scales, shape)

    def cpsat(self, m, enc, x):
        return self.milp(m, enc, x)

    def sensitivity(self, m, ctx, record, g):
        return [_pool_back(m, record.in_shapes[0], g)]

    def frozen(self, m, tol: float = 0.0):
        return copy.deepcopy(m)

    def ibp(self, m, lo, hi):
        return m(lo), m(hi)

    def onnx(self, m, em, x):
        """``AveragePool`` (zero padding counted): exact in float32 only when the window sums are
        (checked) and the division by the kernel area ``k`` is, i.e. ``k`` is a power of two."""
        k = m.area()
        if k & (k - 1):
            raise em.error(f"kernel area {k} is not a power of two, so onnxruntime's float32 division by it "
                           f"would round")
        st = x.state
        out = em.checked(st.bound * k, st.exp - (k.bit_length() - 1), st.rank)
        ph, pw = _pair(m.padding)
        return em.op("AveragePool", [x], out, kernel_shape=list(_pair(m.kernel_size)),
                     strides=list(_pair(m.stride if m.stride is not None else m.kernel_size)),
                     pads=[ph, pw, ph, pw], count_include_pad=1)

    def float32(self, m, ctx, x):
        return ctx.pooled(x, m.area())


class MaxPoolOp(OpDef):
    """``nn.MaxPool2d`` (dilation 1, no ceil mode, no indices) on codes of one channel each."""

    name = "max pool"
    types = (nn.MaxPool2d,)
    chord = False
    nonlinear = True
    #: auto_LiRPA 0.3's alpha-CROWN for max pooling fails to build its slopes (TypeError in
    #: BoundMaxPool.init_opt_parameters); plain CROWN works
    optimizable = False
    bound_ops = ("BoundMaxPool",)

    @staticmethod
    def _check(m) -> None:
        if _pair(m.dilation) != (1, 1) or m.ceil_mode or m.return_indices:
            raise ValueError("MaxPool2d: only dilation 1, ceil_mode=False and no indices are supported")

    def int_forward(self, m, x: IntTensor) -> IntTensor:
        self._check(m)
        if len(x.scale) > 1 and x.axis != 1:
            raise ValueError("MaxPool2d: per-channel inputs must be quantized along axis 1")
        v = _int64(x, "MaxPool2d")
        if v.numel() and int(v.abs().max()) >= (1 << 53):
            raise OverflowError("MaxPool2d: values beyond 2^53")
        if any(_pair(m.padding)):
            # padding is -inf in torch: pad with a code below every real code of the channel
            lowest = int(v.min()) - 1 if v.numel() else -1
            ph, pw = _pair(m.padding)
            v = F.pad(v, (pw, pw, ph, ph), value=lowest)
            out = F.max_pool2d(v.double(), m.kernel_size, m.stride, 0)
        else:
            out = F.max_pool2d(v.double(), m.kernel_size, m.stride, 0)
        return IntTensor(out.to(torch.int64), x.scale, x.zero_point, x.axis)

    def interval(self, m, ctx, box: IntBox) -> IntBox:
        a, b = box.ends()
        return IntBox.of(self.int_forward(m, a), self.int_forward(m, b))

    def windows(self, m, in_shape: tuple) -> tuple[list[list[int]], tuple]:
        """The flat input indices (``in_shape = [C, H, W]``, C order) of each output's window,
        padding left out, and the output shape."""
        c = in_shape[0]
        idx = torch.arange(1, int(np.prod(in_shape)) + 1, dtype=torch.float64).reshape((1,) + tuple(in_shape))
        cols = F.unfold(idx, _pair(m.kernel_size), 1, _pair(m.padding), _pair(m.stride))  # [1, C*kh*kw, L]
        cols = cols.reshape(c, -1, cols.shape[-1]).to(torch.int64)
        out = F.max_pool2d(torch.zeros((1,) + tuple(in_shape)), m.kernel_size, m.stride, m.padding)
        wins = [[int(i) - 1 for i in cols[ch, :, l].tolist() if i > 0]
                for ch in range(c) for l in range(cols.shape[-1])]
        return wins, tuple(int(v) for v in out.shape[1:])

    def milp(self, m, enc, x):
        """The code of the maximum of each window (big-M with a binary per candidate)."""
        if len(x.shape) != 3:
            raise enc.Error(f"{enc.name}: expects a [C, H, W] input, got {x.shape}")
        wins, shape = self.windows(m, x.shape)
        return enc.max(x, wins, shape)

    def cpsat(self, m, enc, x):
        wins, shape = self.windows(m, x.shape)
        return enc.max(x, wins, shape)

    def milp_refusal(self, m) -> str:
        try:
            self._check(m)
        except ValueError as e:
            return str(e)
        return super().milp_refusal(m)

    def sensitivity(self, m, ctx, record, g):
        k = _pair(m.kernel_size)
        avg = nn.AvgPool2d(m.kernel_size, m.stride, m.padding)
        return [_pool_back(avg, record.in_shapes[0], g) * (k[0] * k[1])]

    def frozen(self, m, tol: float = 0.0):
        return copy.deepcopy(m)

    def ibp(self, m, lo, hi):
        return m(lo), m(hi)

    def onnx(self, m, em, x):
        """``MaxPool`` of the dequantized values (exact: the maximum of float32 values is one of
        them; ONNX pads with -inf like torch)."""
        try:
            self._check(m)
        except ValueError as e:
            raise em.error(str(e)) from None
        ph, pw = _pair(m.padding)
        return em.op("MaxPool", [x], x.state, kernel_shape=list(_pair(m.kernel_size)),
                     strides=list(_pair(m.stride if m.stride is not None else m.kernel_size)),
                     pads=[ph, pw, ph, pw])

    def float32(self, m, ctx, x):
        return ctx.monotone(m, x)


register(AvgPoolOp())
register(MaxPoolOp())

__all__ = ["QuantAvgPool2d", "AvgPoolOp", "MaxPoolOp"]
