"""The box stack: order, children written in place, growth; the queue's memory bound in a search."""
from __future__ import annotations

import numpy as np
import torch

from qa_lirpa.verify import InputSpec, Verdict, VerifierConfig, Verifier
from qa_lirpa.verify.queue import BoxStack
from qa_lirpa.verify.search import OVER_BUDGET_BATCH

from .tiny_qnn import tiny_mlp


def test_push_pop_order_and_children():
    st = BoxStack(3, 2, torch.int16, torch.device("cpu"), capacity=1)
    lo = torch.tensor([[0, 0, 0], [10, 10, 10]])
    hi = torch.tensor([[5, 7, 9], [20, 20, 20]])
    alive = torch.tensor([[True, False], [True, True]])
    st.push(lo, hi, torch.tensor([0, 1]), alive, torch.tensor([2.0, -1.0], dtype=torch.float64))
    a = st.pop(1, torch.int64)
    assert a[0].tolist() == [[10, 10, 10]] and a[0].dtype == torch.int64      # lowest score on top
    st.push_split(lo, hi, torch.tensor([2, 0]), torch.tensor([4, 15]), torch.tensor([5, 16]),
                  torch.tensor([1, 2]), alive, torch.tensor([0.5, 3.0], dtype=torch.float64))
    assert len(st) == 5 and st.lo.shape[0] >= 5
    l, h, d, al, sc = st.pop(4, torch.int64)
    assert l.tolist() == [[10, 10, 10], [16, 10, 10], [0, 0, 0], [0, 0, 5]]
    assert h.tolist() == [[15, 20, 20], [20, 20, 20], [5, 7, 4], [5, 7, 9]]
    assert d.tolist() == [2, 2, 1, 1] and sc.tolist() == [3.0, 3.0, 0.5, 0.5]
    assert al.tolist() == [[True, True]] * 2 + [[True, False]] * 2
    assert len(st) == 1 and st.pop(10, torch.int64)[0].tolist() == [[0, 0, 0]]


def test_queue_stays_within_its_memory_budget():
    """A search that keeps splitting: the queue peak stays below the budget plus one batch plus
    OVER_BUDGET_BATCH boxes per level."""
    centre = torch.full((12,), 128.0)
    model = tiny_mlp(12, [16], 2, centre, seed=3)
    mat = np.array([[1.0, -1.0], [-1.0, 1.0]])
    spec = InputSpec(centre.numpy() - 40, centre.numpy() + 40, [(mat, np.array([0.0, -1.0]))])
    cfg = VerifierConfig(queue_mem_mb=1, batch_size=256, crown="never", exact_fallback="none", portfolio="none",
                         local_search_s=0.0)         # all 2 s for the splitting
    r = Verifier(model, cfg, input_shape=(12,)).verify(spec, timeout=2.0)
    assert r.verdict is Verdict.TIMEOUT
    per_box = 2 * 12 * 2 + 1 + 12                      # int16 codes, alive mask, depth + score
    budget = 2 ** 20 // per_box
    assert r.stats.queue_peak > budget // 4, "the search did not get near the budget"
    assert r.stats.queue_peak <= budget + 2 * 256 + OVER_BUDGET_BATCH * (r.stats.max_depth + 1)
