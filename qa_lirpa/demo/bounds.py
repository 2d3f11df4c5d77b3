"""``qa-lirpa demo --bounds``: bounds through a quantized network, checked against the exact semantics.

Builds a small QNN (6 raw-pixel inputs, three quantized hidden layers), takes an input box of
+-eps pixels, computes IBP and CROWN bounds with auto_LiRPA through qa_lirpa's quantization
operators, enumerates every point of the integer input grid with the exact integer semantics, and
reports whether every bound contains the exact output range ("sound") and how tight each method is.
"""
from __future__ import annotations

import itertools
import sys
import time

import torch

from .. import bounded_module
from ..compat import import_auto_lirpa
from ..models import QNN, build_model
from ..nn import integer_forward


def demo_model(seed: int = 0, n_in: int = 6, hidden: tuple[int, ...] = (24, 24, 24), bits: int = 6) -> QNN:
    """A small untrained QNN whose hidden units are neither all dead nor all saturated."""
    model = build_model("mlp", in_shape=(n_in,), n_classes=3, bits=bits, hidden=hidden).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model:
            if hasattr(m, "weight_spec"):
                fan_in = m.weight.shape[1]
                m.weight.copy_((torch.rand(m.weight.shape, generator=g, dtype=torch.float64) - 0.5)
                               * (4.0 / fan_in ** 0.5))
                m.bias.uniform_(-0.5, 1.0, generator=g)
    return model


def grid_points(center: torch.Tensor, eps: int) -> torch.Tensor:
    """Every integer input within +-eps of ``center`` (clipped to 0..255), as float64 rows."""
    ranges = [range(max(int(c) - eps, 0), min(int(c) + eps, 255) + 1) for c in center.tolist()]
    return torch.tensor(list(itertools.product(*ranges)), dtype=torch.float64)


def bound(body: torch.nn.Module, lo: torch.Tensor, hi: torch.Tensor, method: str):
    """auto_LiRPA bounds of ``body`` over the real box [lo, hi] (float64, default tie slack)."""
    al = import_auto_lirpa()
    x = 0.5 * (lo + hi)
    bm = bounded_module(body, x)
    ptb = al.PerturbationLpNorm(norm=float("inf"), x_L=lo, x_U=hi)
    lb, ub = bm.compute_bounds(x=(al.BoundedTensor(x, ptb),), method=method)
    return lb.detach()[0], ub.detach()[0]


def run_bounds_demo(seed: int = 0, eps: int = 3, out=None) -> bool:
    """Print IBP and CROWN bounds against the exact range on every grid point; True if sound."""
    out = out if out is not None else sys.stdout
    torch.manual_seed(seed)
    model = demo_model(seed)
    center = torch.randint(eps, 256 - eps, (6,), generator=torch.Generator().manual_seed(seed + 1))
    pts = grid_points(center, eps)
    t0 = time.perf_counter()
    y = integer_forward(model, pts)
    t_exact = time.perf_counter() - t0
    exact_lo, exact_hi = y.min(0).values, y.max(0).values
    # the grid is handled exactly by the input quantizer: bound the rest on the integer box
    quant_in, body = model[0], torch.nn.Sequential(*list(model)[1:])
    codes_lo = quant_in.codes((center - eps).clamp(0, 255).double().unsqueeze(0))
    codes_hi = quant_in.codes((center + eps).clamp(0, 255).double().unsqueeze(0))
    lo, hi = quant_in.dequantize_codes(codes_lo), quant_in.dequantize_codes(codes_hi)
    print(f"qa-lirpa demo --bounds: 6-input QNN {[m.out_features for m in model if hasattr(m, 'out_features')]}, "
          f"6-bit, input {center.tolist()} +- {eps} pixels", file=out)
    print(f"exact output range by enumerating {len(pts)} grid points ({t_exact:.2f} s)", file=out)
    sound, widths = True, {}
    rows = [("exact", exact_lo, exact_hi)]
    for method in ("IBP", "CROWN"):
        t0 = time.perf_counter()
        lb, ub = bound(body, lo, hi, method)
        dt = time.perf_counter() - t0
        ok = bool((lb <= exact_lo).all() and (ub >= exact_hi).all())
        sound &= ok
        widths[method] = (ub - lb).mean().item()
        rows.append((f"{method} ({dt:.2f} s)", lb, ub))
    for name, lb, ub in rows:
        cells = "  ".join(f"[{a:9.4f}, {b:9.4f}]" for a, b in zip(lb.tolist(), ub.tolist()))
        print(f"  {name:<18} {cells}", file=out)
    print(f"mean width: exact {(exact_hi - exact_lo).mean().item():.4f}, IBP {widths['IBP']:.4f}, "
          f"CROWN {widths['CROWN']:.4f} (CROWN/IBP = {widths['CROWN'] / widths['IBP']:.2f})", file=out)
    print("sound" if sound else "UNSOUND: a bound misses a reachable output", file=out)
    return sound
