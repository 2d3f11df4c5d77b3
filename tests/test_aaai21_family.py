"""benchmarks/aaai21_family.py: the AAAI'21-family network it trains is written as HDF5 that the
one model loader reads with the benchmark's exact semantics, deterministically."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from benchscripts import load_benchmark
from test_aaai21 import _first_max, numpy_reference

fam = load_benchmark("aaai21_family.py", "aaai21_family_bench")


def _weights(path):
    with h5py.File(path, "r") as f:
        g1, g2 = f["model_weights/quantized_dense/quantized_dense"], f["model_weights/quantized_dense_1/quantized_dense_1"]
        return g1["kernel:0"][()], g1["bias:0"][()], g2["kernel:0"][()], g2["bias:0"][()]


def test_trained_file_has_the_exact_semantics(tmp_path):
    import torch

    from qa_lirpa.modelfile import load_model_file
    from qa_lirpa.nn.reference import integer_codes
    from qa_lirpa.train.datasets import load_dataset

    path = tmp_path / "proxy.h5"
    info = fam.train("synthetic", path, epochs=1, seed=3)
    k1, b1, k2, b2 = _weights(path)
    assert k1.shape == (64, 64) and k2.shape == (64, 32)          # Keras (in, out) kernels
    te = load_dataset("synthetic", "test")
    pixels = np.asarray(te.images).reshape(len(te.labels), -1)
    ref = numpy_reference(k1, b1, k2, b2, pixels)
    model = load_model_file(path)
    out = integer_codes(model, torch.from_numpy(pixels).double()).values.numpy()
    assert np.array_equal(out, ref)
    acc = float((_first_max(ref) == np.asarray(te.labels)).mean())
    assert info["test_accuracy"] == pytest.approx(acc, abs=1e-12)
    assert info["test_accuracy"] > 0.2                              # it learnt something (10 classes)
    again = tmp_path / "again.h5"
    fam.train("synthetic", again, epochs=1, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(_weights(path), _weights(again)))


def test_missing_weights_is_one_line(tmp_path):
    with pytest.raises(SystemExit) as info:
        fam.main(["--weights", str(tmp_path / "none.h5"), "--out-dir", str(tmp_path / "out")])
    assert "no such file" in str(info.value.code) and "\n" not in str(info.value.code)
