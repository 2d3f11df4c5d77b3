"""The verification problem of a model with a :class:`~qa_lirpa.nn.QuantInput`: boxes of integer
input codes, bounded by exact interval propagation (and CROWN on the dequantized box), points
decided by the exact integer semantics.

Soundness of the reduction: the QuantInput's ``codes`` is monotone, so the codes reachable from a
real box ``[L, U]`` are exactly the integer box ``[codes(L), codes(U)]``; each code ``q`` in it has
the real representative ``clip((q - z) s, L, U)``, which quantizes back to ``q``. The model's
output depends on the input only through its codes, so the property holds on the real box iff it
holds on every grid point of the integer box.
"""
from __future__ import annotations

import copy
import math
from fractions import Fraction
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..graph import INPUT, QNNGraph, as_graph, op_for
from ..nn.intervals import IntervalNet, Trace
from ..nn.layers import IntTensor, QuantInput
from ..nn.reference import integer_codes
from ..onnx.referee import float32_envelope
from ..quant.functions import dequantize, quantize
from .crown import CrownBounder
from .problem import ExactFn, first_violation
from .spec import OutputSpec



def output_fractions(t: IntTensor) -> list[list[Fraction]]:
    """Exact real outputs ``(q - z_c) * s_c`` of every sample, flattened in C order."""
    shape = tuple(t.values.shape[1:])
    n_ch = max(len(t.scale), len(t.zero_point))
    if n_ch == 1:
        ch = np.zeros(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)
    else:
        view = [1] * len(shape)
        view[t.axis - 1] = n_ch
        ch = np.broadcast_to(np.arange(n_ch).reshape(view), shape).reshape(-1)
    scales = [t.scale[c if len(t.scale) > 1 else 0] for c in ch]
    zps = [t.zero_point[c if len(t.zero_point) > 1 else 0] for c in ch]
    rows = t.values.reshape(t.values.shape[0], -1).cpu().tolist()
    return [[(q - z) * s for q, z, s in zip(row, zps, scales)] for row in rows]


def input_codes(qin: QuantInput, x: torch.Tensor) -> torch.Tensor:
    """The quantizer's own integer codes of real inputs (int64; monotone non-decreasing in x)."""
    codes = getattr(qin, "codes", None)
    return codes(x.to(torch.float64)) if codes is not None else quantize(x.to(torch.float64), qin.spec)


def input_reals(qin: QuantInput, q: torch.Tensor) -> torch.Tensor:
    """Real inputs whose codes are ``q`` (float64); raises ValueError for unreachable codes."""
    reals = getattr(qin, "real_inputs", None)
    return reals(q) if reals is not None else dequantize(q, qin.spec)


def _ordered(x: torch.Tensor) -> torch.Tensor:
    """float64 -> int64 keys in the same order (consecutive floats get consecutive keys)."""
    b = x.contiguous().view(torch.int64)
    return torch.where(b >= 0, b, -(b & torch.iinfo(torch.int64).max))


def _unordered(k: torch.Tensor) -> torch.Tensor:
    b = torch.where(k >= 0, k, (-k) | torch.iinfo(torch.int64).min)
    return b.contiguous().view(torch.float64)


def smallest_real_with_code(codes, q: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Per element, the smallest float64 ``x`` in ``[lo, hi]`` with ``codes(x) >= q``, by bisection
    over the ordered floats (``codes`` elementwise and non-decreasing; ``codes(hi) >= q``). Then
    ``q`` is reachable in the box iff ``codes(x) == q``."""
    a, b = _ordered(lo), _ordered(hi)
    while bool((a < b).any()):
        mid = a + torch.div(b - a, 2, rounding_mode="floor")
        ge = codes(_unordered(mid)) >= q
        a, b = torch.where(ge, a, mid + 1), torch.where(ge, mid, b)
    return _unordered(a)


def has_float32_quantizers(model: nn.Module) -> bool:
    """Whether some layer emulates float32 rounding (ONNX import). Their traced quantizers carry
    the float32 tolerance into the bound operators (``fake_quant(..., tol=...)``), which widen
    both the interval image and the CROWN relaxation by it, so CROWN stays sound for them."""
    return any(float(getattr(m, "float32_tolerance", 0.0) or 0.0) > 0 for m in model.modules())


class GridProblem:
    """Boxes of input codes (int64 ``[B, D]``, ``D`` = number of inputs) of a quantized model.

    Args:
        model: an ``nn.Sequential`` QNN whose first layer is a QuantInput (copied to CPU float64).
        input_shape: the model input shape without batch.
        device: where bounds and attacks run.
        use_crown: build the CROWN bounder (auto_LiRPA) for the body.
    """

    integral = True

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], device: torch.device,
                 use_crown: bool = True, quant_slack: float = 1e-6, alpha_iterations: int = 20,
                 crown_method: str = "auto", crown_auto_units: int = 4096, referee=None) -> None:
        self.ref = copy.deepcopy(model).cpu().double().eval()
        self.shape = tuple(int(s) for s in input_shape)
        self.dim = int(math.prod(self.shape))
        self.device = device
        self.referee = referee
        self.envelope = None
        tolerances: dict[int, float] = {}
        if referee is not None:
            self.envelope = float32_envelope(self.ref)
            tolerances = self.envelope.tolerance
        self.output_error = 0.0 if self.envelope is None else float(self.envelope.output_error)
        self.net = IntervalNet(self.ref, device, tolerances)
        self.qin: QuantInput = self.net.qin
        self.body = frozen_body(self.ref, tolerances).to(device)
        self.loose_body = loose_body(self.body)
        zero = torch.zeros((1,) + self.shape, dtype=torch.int64)
        probe = self.net.input_box(zero, zero)
        self._in_scale, self._in_zp, self._in_axis = probe.scale, probe.zero_point, probe.axis
        try:
            self.n_outputs = int(self.net.propagate(zero, zero).lo[0].numel())
        except RuntimeError as e:
            raise ValueError(f"the model does not take inputs of shape {self.shape}: {e}") from None
        self.code_range = (self.qin.spec.qmin, self.qin.spec.qmax)
        self.crown: CrownBounder | None = None
        self.crown_error = ""
        if use_crown:
            try:
                self.crown = CrownBounder(self.body, self.shape, device, quant_slack, alpha_iterations,
                                          crown_method, crown_auto_units)
            except Exception as e:  # an unsupported op only costs the CROWN speed-up
                self.crown_error = f"CROWN unavailable: {type(e).__name__}: {e}"

    # ----- boxes ---------------------------------------------------------------------------
    def root(self, lower: np.ndarray, upper: np.ndarray) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The integer code box of the real box ``[lower, upper]`` (flat float64), or None if it
        holds no grid point."""
        lo = self.codes(torch.as_tensor(lower, dtype=torch.float64).reshape((1,) + self.shape))
        hi = self.codes(torch.as_tensor(upper, dtype=torch.float64).reshape((1,) + self.shape))
        lo, hi = lo.reshape(1, -1).to(self.device), hi.reshape(1, -1).to(self.device)
        return None if bool((lo > hi).any()) else (lo, hi)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Input codes of real inputs ``x`` as the model's meaning computes them: for an ONNX
        model with a FLOAT input, of ``fl32(x)`` (the cast onnxruntime and the checker apply);
        monotone non-decreasing in ``x`` either way."""
        x = x.to(torch.float64)
        if self.referee is not None:
            x = self.referee.cast(x)
        return input_codes(self.qin, x)

    def storage_dtype(self) -> torch.dtype:
        lo, hi = self.code_range
        for dtype in (torch.int16, torch.int32):
            if torch.iinfo(dtype).min <= lo and hi <= torch.iinfo(dtype).max:
                return dtype
        return torch.int64

    @staticmethod
    def is_point(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        return (lo == hi).all(dim=1)

    @staticmethod
    def log_volume(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """log2 of the number of grid points of each box (float64 ``[B]``)."""
        return torch.log2((hi - lo + 1).to(torch.float64)).sum(dim=1)

    @staticmethod
    def widths(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """Number of grid points minus one per dimension (float64); 0 means not splittable."""
        return (hi - lo).to(torch.float64)

    @staticmethod
    def split_points(lo: torch.Tensor, hi: torch.Tensor, dims: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer bisection at ``dims[b]``: the left child's upper end ``m = floor((l + u) / 2)``
        and the right child's lower end ``m + 1``."""
        rows = torch.arange(lo.shape[0], device=lo.device)
        mid = torch.div(lo[rows, dims] + hi[rows, dims], 2, rounding_mode="floor")
        return mid, mid + 1

    @staticmethod
    def split(lo: torch.Tensor, hi: torch.Tensor, dims: torch.Tensor):
        """Integer bisection of each box at its dimension ``dims[b]``: ``[l, m]`` and ``[m+1, u]``."""
        rows = torch.arange(lo.shape[0], device=lo.device)
        l, u = lo[rows, dims], hi[rows, dims]
        mid = torch.div(l + u, 2, rounding_mode="floor")
        hi1, lo2 = hi.clone(), lo.clone()
        hi1[rows, dims] = mid
        lo2[rows, dims] = mid + 1
        return (lo, hi1), (lo2, hi)

    def body_inputs(self, codes: torch.Tensor) -> torch.Tensor:
        """Real values (float64 ``[B, *shape]``) that the layer after the QuantInput receives."""
        t = IntTensor(codes.reshape((-1,) + self.shape).to(torch.int64), self._in_scale, self._in_zp, self._in_axis)
        return t.dequantize()

    # ----- bounds --------------------------------------------------------------------------
    def output_intervals(self, lo: torch.Tensor, hi: torch.Tensor, trace: Trace | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact output intervals (dequantized to float64, ``[B, m]``) by interval propagation."""
        box = self.net.propagate(lo.reshape((-1,) + self.shape), hi.reshape((-1,) + self.shape), trace)
        ylo, yhi = box.dequantize()
        ylo, yhi = ylo.reshape(ylo.shape[0], -1), yhi.reshape(yhi.shape[0], -1)
        if self.output_error:
            # onnxruntime's outputs lie within output_error of the nominal ones; 2^-50 |y| covers
            # the rounding of this subtraction
            ylo = ylo - (self.output_error + 2.0 ** -50 * ylo.abs())
            yhi = yhi + (self.output_error + 2.0 ** -50 * yhi.abs())
        return ylo, yhi

    def crown_lower(self, lo: torch.Tensor, hi: torch.Tensor, C: torch.Tensor, alpha: bool = False,
                    key=None) -> torch.Tensor:
        """CROWN lower bounds ``[B, R]`` of ``C[b] @ y`` on the dequantized boxes (float64);
        ``alpha`` and ``key``: see :meth:`CrownBounder.lower`."""
        assert self.crown is not None
        lb = self.crown.lower(self.body_inputs(lo), self.body_inputs(hi), C, alpha=alpha, key=key)
        if self.output_error:
            lb = lb - self.output_error * C.abs().sum(dim=-1) * (1 + 2.0 ** -40)
        return lb

    def step_code_bounds(self, lo: torch.Tensor, hi: torch.Tensor) -> dict[int, list[tuple[int, int]]] | None:
        """Bounds of the output codes of every rounding step (requantizer) of the model over one
        grid box ``[lo, hi]`` (int64 ``[1, D]``), by node index of the model's graph: one
        ``(lowest, highest)`` code per unit, for the domains of an exact encoding
        (:func:`~qa_lirpa.exact.cpsat.solve_cpsat`'s ``unit_bounds``).

        They come from :meth:`CrownBounder.step_intervals` (the bounds CROWN computes for the
        steps' inputs, float64, widened by the operators' slack before rounding: as sound as the
        verifier's own CROWN bounds). Each step of the bounded module is matched to the graph's
        requantizer of the same position, checked by its value at the box's centre; the codes at
        both corners of the box (exact integer semantics) must lie within the bounds. None (no
        bounds: only an encoding's speed is lost) without CROWN, for a model with a float32
        referee, or when a check fails."""
        if self.crown is None or self.envelope is not None or lo.shape[0] != 1:
            return None
        xlo, xhi = self.body_inputs(lo), self.body_inputs(hi)
        steps = self.crown.step_intervals(xlo, xhi)
        graph = as_graph(self.ref)
        names = [node.name for node, layer in graph.items() if node.index > 0 and op_for(layer).quantizer]
        if steps is None or len(steps) != len(names):
            return None
        index = {node.name: node.index for node in graph.nodes}
        with torch.no_grad():
            at_centre = self.body.walk((xlo + xhi) / 2, lambda node, layer, *xs: layer(*xs), keep=True)
        shape = (1,) + self.shape
        corners = [self.net.node_boxes(c.reshape(shape), c.reshape(shape)) for c in (lo, hi)]
        out: dict[int, list[tuple[int, int]]] = {}
        for name, (value, vlo, vhi) in zip(names, steps):
            mine = at_centre[name]
            if tuple(mine.shape) != tuple(value.shape) or not torch.equal(mine.to(value.dtype), value):
                return None
            ref = corners[0][name]
            codes = [_real_to_codes(v, ref) for v in (vlo, vhi)]
            if any(c is None for c in codes):
                return None
            clo, chi = codes
            for box in (c[name] for c in corners):
                if not bool(((clo <= box.lo.cpu()) & (box.hi.cpu() <= chi)).all()):
                    return None
            out[index[name]] = list(zip(clo.reshape(-1).tolist(), chi.reshape(-1).tolist()))
        return out

    def sensitivity(self, trace: Trace, lo: torch.Tensor, hi: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        """Per box and input, the input's share in the interval width of ``coef[b] @ y``: a backward
        pass of ``|coef|`` through the graph, each op pulling it back through ``|W|`` or its chord
        slope on the box (``OpDef.sensitivity``), times the input interval's real width (float64
        ``[B, D]``; a heuristic, not a bound)."""
        pending: dict[str, torch.Tensor] = {self.net.graph.output: coef.abs()}
        first = self.net.graph.nodes[0].name
        for rec in reversed(trace.steps):
            g = pending.pop(rec.node.name, None)
            if g is None:               # not on a path to the output
                continue
            for name, shape, gi in zip(rec.node.inputs, rec.in_shapes, rec.op.sensitivity(rec.layer, self.net, rec, g)):
                gi = gi.reshape(shape)
                pending[name] = gi if name not in pending else pending[name] + gi
        width = self.body_inputs(hi) - self.body_inputs(lo)
        g = pending.get(first)
        if g is None:
            return torch.zeros(lo.shape, dtype=torch.float64, device=lo.device)
        return (g.reshape(width.shape) * width).reshape(lo.shape[0], -1)

    # ----- points --------------------------------------------------------------------------
    def eval_points(self, codes: torch.Tensor) -> tuple[torch.Tensor, ExactFn]:
        """Exact outputs of code points ``[N, D]``: float64 ``[N, m]`` and their exact rationals."""
        box = self.net.propagate(codes.reshape((-1,) + self.shape), codes.reshape((-1,) + self.shape))
        out = IntTensor(box.lo, box.scale, box.zero_point, box.axis)
        y = out.dequantize()
        cache: dict[int, Sequence[Fraction]] = {}

        def exact(n: int) -> Sequence[Fraction]:
            if n not in cache:
                one = IntTensor(out.values[n:n + 1], out.scale, out.zero_point, out.axis)
                cache[n] = output_fractions(one)[0]
            return cache[n]
        return y.reshape(y.shape[0], -1), exact

    def exact_output(self, x: torch.Tensor) -> IntTensor:
        """The exact integer outputs at real inputs ``x`` (``[N, *shape]``), through the cached
        interval plans at single points (equal to ``integer_codes``; the tests check it)."""
        q = self.codes(x.to(torch.float64).reshape((-1,) + self.shape).cpu()).to(self.device)
        box = self.net.propagate(q, q)
        return IntTensor(box.lo, box.scale, box.zero_point, box.axis)

    def representative(self, code: torch.Tensor, lower: np.ndarray, upper: np.ndarray) -> torch.Tensor | None:
        """A real input (float64 ``[1, *shape]``) in ``[lower, upper]`` whose codes are ``code``,
        or None when provably no real input of the box has these codes (a quantizer whose float
        arithmetic skips codes). First the quantizer's own preimage clipped into the box (clipping
        keeps the codes by monotonicity), else :func:`smallest_real_with_code`."""
        q = code.reshape((1,) + self.shape).cpu()
        lo = torch.as_tensor(lower, dtype=torch.float64).reshape(q.shape)
        hi = torch.as_tensor(upper, dtype=torch.float64).reshape(q.shape)
        try:
            x = torch.minimum(torch.maximum(input_reals(self.qin, q), lo), hi)
            if torch.equal(self.codes(x), q):
                return x
        except ValueError:
            pass
        x = smallest_real_with_code(self.codes, q, lo, hi)
        return x if torch.equal(self.codes(x), q) else None

    def find_violation(self, codes: torch.Tensor, lower: np.ndarray, upper: np.ndarray, ospec: OutputSpec
                       ) -> tuple[np.ndarray, np.ndarray] | None:
        """The first of the grid points ``codes`` ``[N, D]`` that violates the property under the
        model's meaning, as ``(x, outputs)`` (see :meth:`confirm`), or None when none does.

        With a referee (an ONNX model): points that interval propagation with the float32 envelope
        cannot show safe are run in onnxruntime at a real input of the box, and onnxruntime's
        float32 outputs decide, exactly."""
        if self.referee is None:
            return first_violation(self, codes, lower, upper, ospec)
        ylo, yhi = self.output_intervals(codes, codes)
        margin, _ = ospec.row_margins(ylo, yhi)
        safe = ospec.disjuncts_refuted(margin > 0).all(dim=1)
        cand = codes[~safe]
        if cand.shape[0] == 0:
            return None
        xs, valid = self.representatives(cand, lower, upper)
        if not valid.any():
            return None
        xs = xs[valid]
        y = self.referee.outputs(xs.reshape(xs.shape[0], -1).numpy())
        yt = torch.as_tensor(y, dtype=torch.float64, device=ospec.mat.device)
        bad = ospec.violated_points(yt, self.referee.exact_outputs(y)).nonzero().squeeze(1)
        if bad.numel() == 0:
            return None
        i = int(bad[0])
        return xs[i].reshape(self.shape).numpy().copy(), y[i].reshape(-1).copy()

    def representatives(self, codes: torch.Tensor, lower: np.ndarray, upper: np.ndarray
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`representative` for a batch of code points ``[N, D]``: real inputs (float64
        ``[N, *shape]``) and a mask of the points some real input of the box reaches."""
        q = codes.reshape((-1,) + self.shape).cpu().to(torch.int64)
        lo = torch.as_tensor(lower, dtype=torch.float64).reshape((1,) + self.shape)
        hi = torch.as_tensor(upper, dtype=torch.float64).reshape((1,) + self.shape)
        try:
            x = torch.minimum(torch.maximum(input_reals(self.qin, q), lo), hi)
            ok = (self.codes(x) == q).reshape(q.shape[0], -1).all(dim=1)
        except ValueError:
            x, ok = torch.zeros(q.shape, dtype=torch.float64), torch.zeros(q.shape[0], dtype=torch.bool)
        valid = ok.clone()
        for i in (~ok).nonzero().squeeze(1).tolist():
            r = self.representative(q[i], lower, upper)
            if r is not None:
                x[i], valid[i] = r.reshape(self.shape), True
        inside = ((x >= lo) & (x <= hi)).reshape(q.shape[0], -1).all(dim=1)
        return x, valid & inside

    def confirm(self, code: torch.Tensor, lower: np.ndarray, upper: np.ndarray, ospec: OutputSpec
                ) -> tuple[np.ndarray, np.ndarray] | None:
        """Re-check a violating grid point with the reference ``integer_codes`` at a real input in
        the box; returns ``(x, outputs)`` (float64, x in the model's input shape) if confirmed,
        None if provably no real input of the box has these codes (then the point is not part of
        the property's input set). Raises if the reference disagrees (a bug, never a verdict)."""
        x = self.representative(code, lower, upper)
        if x is None:
            return None
        flat = x.reshape(-1).numpy()
        if not (np.all(flat >= lower) and np.all(flat <= upper)):
            return None
        if self.referee is not None:                 # onnxruntime decides, exactly
            y = self.referee.outputs(flat.reshape(1, -1))
            yt = torch.as_tensor(y, dtype=torch.float64, device=ospec.mat.device)
            if not bool(ospec.violated_points(yt, self.referee.exact_outputs(y))[0]):
                return None
            return x.reshape(self.shape).numpy().copy(), y.reshape(-1).copy()
        out = integer_codes(self.ref, x)
        y = out.dequantize().reshape(1, -1)
        exact = output_fractions(out)
        if not bool(ospec.violated_points(y.to(ospec.mat.device), lambda n: exact[n])[0]):
            raise RuntimeError("internal inconsistency: a grid point violates the property under interval "
                               "propagation but not under the integer reference")
        return x.reshape(self.shape).numpy().copy(), y.reshape(-1).numpy().copy()

    # ----- attack space --------------------------------------------------------------------
    def attack_forward(self, t: torch.Tensor, loose: bool = False) -> torch.Tensor:
        """Float64 fake-quant outputs ``[N, m]`` at continuous codes ``t`` ``[N, D]``, differentiable
        with the straight-through gradient (``loose``: not clipped at saturation either)."""
        view = IntTensor(torch.zeros(1, dtype=torch.int64), self._in_scale, self._in_zp, self._in_axis)
        x = _affine_dequant(t.reshape((-1,) + self.shape), view)
        return (self.loose_body if loose else self.body)(x).reshape(t.shape[0], -1)

    @staticmethod
    def snap(t: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """Nearest grid points inside the boxes (int64)."""
        return torch.minimum(torch.maximum(torch.round(t).to(torch.int64), lo), hi)


def frozen_body(model: nn.Module, tolerances: dict[int, float] | None = None) -> QNNGraph:
    """The float64 graph after the input quantizer with each op in its frozen form
    (``OpDef.frozen``: the weights' fake quantization done once, the same function, cheaper to run
    and to bound; a quantizer of node index ``i`` with ``tolerances[i] > 0`` becomes a
    :class:`~qa_lirpa.nn.quantizers.TolerantQuant`). Its input is what the input quantizer hands
    on (dequantized codes); parameters do not require gradients."""
    graph = as_graph(model)
    tolerances = tolerances or {}
    first = graph.nodes[0].name
    nodes = []
    for node, layer in graph.items():
        if node.index == 0:
            continue
        ins = tuple(INPUT if i == first else i for i in node.inputs)
        nodes.append((node.name, op_for(layer).frozen(layer, float(tolerances.get(node.index, 0.0))), ins))
    body = QNNGraph(nodes, output=INPUT if graph.output == first else graph.output).double().eval()
    for p in body.parameters():
        p.requires_grad_(False)
    return body


def loose_body(body: QNNGraph) -> QNNGraph:
    """``body`` with every quantizer in its attack form (``OpDef.loose``: the quantizer's value with
    the identity as gradient, also where it saturates, so that an attack can leave flat, saturated
    regions); shares the layers."""
    nodes = []
    for node, layer in body.items():
        op = op_for(layer)
        nodes.append((node.name, op.loose(layer) if op.quantizer else layer, node.inputs))
    return QNNGraph(nodes, output=body.output)


def _real_to_codes(v: torch.Tensor, like) -> torch.Tensor | None:
    """The codes (int64) whose real values (``like``'s scales and zero points, an IntBox of the
    same shape) are the float64 values ``v``; None unless every value is within ``1e-9`` (relative)
    of a code's."""
    if len(like.scale) == 1:
        s = torch.tensor(float(like.scale[0]), dtype=torch.float64)
        z = torch.tensor(int(like.zero_point[0]), dtype=torch.int64)
    else:
        shape = [1] * v.dim()
        shape[like.axis] = len(like.scale)
        s = torch.tensor([float(x) for x in like.scale], dtype=torch.float64).reshape(shape)
        z = torch.tensor([int(x) for x in like.zero_point], dtype=torch.int64).reshape(shape)
    v = v.to(torch.float64).cpu()
    k = torch.round(v / s)
    if not bool(((k * s - v).abs() <= 1e-9 * torch.clamp(v.abs(), min=1.0)).all()):
        return None
    return (k.to(torch.int64) + z).reshape(like.lo.shape)


def _affine_dequant(t: torch.Tensor, like: IntTensor) -> torch.Tensor:
    """``(t - z_c) * s_c`` for float codes ``t`` with ``like``'s channel parameters (differentiable)."""
    def view(vals):
        v = torch.tensor([float(x) for x in vals], dtype=torch.float64, device=t.device)
        if len(vals) == 1:
            return v.reshape(())
        shape = [1] * t.dim()
        shape[like.axis] = len(vals)
        return v.reshape(shape)
    return (t - view(like.zero_point)) * view(like.scale)


__all__ = ["GridProblem", "output_fractions"]
