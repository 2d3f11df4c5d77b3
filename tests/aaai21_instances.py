"""One AAAI'21 benchmark instance (network and robustness property) for tests; skips when the
weights (../shared/data/aaai21/mnist_mlp.h5 or $QA_LIRPA_AAAI21_H5) or MNIST are missing."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
H5 = Path(os.environ.get("QA_LIRPA_AAAI21_H5", ROOT.parent / "shared" / "data" / "aaai21" / "mnist_mlp.h5"))


def aaai21_instance(i: int):
    """``(model, spec)`` of benchmark sample ``i`` at its benchmark eps (float64 model)."""
    if not H5.exists():
        pytest.skip(f"AAAI'21 weights not found at {H5}")
    from qa_lirpa.aaai21 import aaai21_robustness_spec, benchmark_eps, load_aaai21

    try:
        from qa_lirpa.train.datasets import load_dataset

        ds = load_dataset("mnist", "test")
    except Exception as err:  # noqa: BLE001 - any loader failure means "not available here"
        pytest.skip(f"MNIST not available: {err}")
    model = load_aaai21(H5, dtype=torch.float64)
    return model, aaai21_robustness_spec(ds.images[i], int(ds.labels[i]), benchmark_eps(i))
