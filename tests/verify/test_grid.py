"""The real box <-> integer grid reduction: codes of a box, counterexample representatives inside
the box, quantizers whose codes skip values, float32-emulating quantizers."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from qa_lirpa.nn import IntTensor, QuantInput
from qa_lirpa.verify import InputSpec, Verdict, verify
from qa_lirpa.verify.grid import has_float32_quantizers, GridProblem, smallest_real_with_code

from .tiny_qnn import oracle, tiny_mlp


class EvenInput(QuantInput):
    """A monotone input quantizer whose codes are even only (as float arithmetic can skip codes):
    code = 2 * round(x / 2)."""

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(2 * torch.round(x.double() / 2), self.spec.qmin, self.spec.qmax).to(torch.int64)

    def real_inputs(self, q: torch.Tensor) -> torch.Tensor:
        return q.double()

    def int_forward(self, x: torch.Tensor) -> IntTensor:
        return IntTensor(self.codes(x), self.spec.scale_fractions(), self.spec.zero_points(), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * torch.round(x / 2)


def even_model(seed: int) -> nn.Sequential:
    centre = torch.tensor([100.0, 50.0])
    base = tiny_mlp(2, [5], 2, centre, seed=seed)
    return nn.Sequential(EvenInput(base[0].spec), *list(base)[1:]).double().eval()


def test_violations_only_at_unreachable_codes_are_not_counterexamples():
    """The integer box of [L, U] holds odd codes no real input reaches; a property violated only
    there is unsat, and no 'counterexample' may be reported for it."""
    decided = set()
    for seed in range(6):
        model = even_model(seed)
        lower, upper = np.array([95.0, 45.0]), np.array([105.0, 55.0])
        problem = GridProblem(model, (2,), torch.device("cpu"), use_crown=False)
        lo, hi = problem.root(lower, upper)
        codes = torch.tensor([[a, b] for a in range(int(lo[0, 0]), int(hi[0, 0]) + 1)
                              for b in range(int(lo[0, 1]), int(hi[0, 1]) + 1)])
        y, _ = problem.eval_points(codes)
        odd = (codes % 2 == 1).any(dim=1)
        # the row y_0 <= t with t just above the smallest output at an odd (unreachable) code
        t = float(y[odd, 0].min())
        if t >= float(y[~odd, 0].min()):
            continue
        spec = InputSpec(lower, upper, [(np.array([[1.0, 0.0]]), np.array([t]))])
        r = verify(model, spec, timeout=20)
        truth = oracle(model, [spec], (2,), step=0.5)
        assert not truth and r.verdict is Verdict.UNSAT, r.summary()
        decided.add(r.verdict)
    assert decided == {Verdict.UNSAT}


def test_representative_lies_in_the_box_and_has_the_code():
    model = tiny_mlp(3, [4], 2, torch.tensor([10.0, 20.0, 30.0]), seed=1)
    problem = GridProblem(model, (3,), torch.device("cpu"), use_crown=False)
    lower, upper = np.array([9.7, 19.5, 30.2]), np.array([10.2, 21.4, 31.5])
    lo, hi = problem.root(lower, upper)
    assert lo.tolist() == [[10, 20, 30]] and hi.tolist() == [[10, 21, 32]]   # half_up: 19.5 -> 20
    for code in [lo[0], hi[0], torch.tensor([10, 21, 31])]:
        x = problem.representative(code, lower, upper)
        assert x is not None and (x.reshape(-1).numpy() >= lower).all() and (x.reshape(-1).numpy() <= upper).all()
        assert torch.equal(problem.qin.int_forward(x).values, code.reshape(1, -1))


def test_bisection_finds_the_first_real_of_a_code():
    codes = lambda t: torch.round(t * 10).to(torch.int64)  # noqa: E731  (scale 0.1, half to even)
    q = torch.tensor([[3, 5, -7, 0]])
    lo = torch.tensor([[0.0, 0.47, -1.0, -0.3]], dtype=torch.float64)
    hi = torch.tensor([[1.0, 0.9, 0.0, 0.3]], dtype=torch.float64)
    x = smallest_real_with_code(codes, q, lo, hi)
    assert torch.equal(codes(x), q)
    before = torch.nextafter(x, torch.full_like(x, -10.0))
    inside = before >= lo
    assert (codes(before)[inside] < q[inside]).all()


def test_float32_quantizers_keep_crown():
    """Float32-emulating layers pass their tolerance into the bound operators (CROWN soundness at
    an onnxruntime float32 flip is tested in tests/onnx/test_onnx_quantize_static.py)."""
    model = tiny_mlp(2, [3], 2, torch.tensor([10.0, 20.0]), seed=0)
    model[2].float32_tolerance = 1e-6           # as qa_lirpa.onnx's float32-emulating layers carry
    problem = GridProblem(model, (2,), torch.device("cpu"), use_crown=True)
    assert has_float32_quantizers(problem.ref) and problem.crown is not None


def test_declared_input_shape_is_used():
    model = tiny_mlp(4, [3], 2, torch.tensor([10.0, 20.0, 30.0, 40.0]), seed=0)
    flat = nn.Sequential(model[0], nn.Flatten(), *list(model)[1:])
    flat.input_shape = [1, 2, 2]
    spec = InputSpec(np.full(4, 10.0), np.full(4, 12.0), [(np.array([[1.0, 0.0]]), np.array([-1e9]))])
    r = verify(flat, spec, timeout=10)
    assert r.verdict is Verdict.UNSAT
    flat.input_shape = [1, 3, 2]
    try:
        verify(flat, spec, timeout=10)
    except ValueError as e:
        assert "(1, 3, 2)" in str(e)
    else:
        raise AssertionError("a wrong declared shape must be an error")
