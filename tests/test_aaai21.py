"""The AAAI'21 benchmark network: loader, exact semantics, spec and published table."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from qa_lirpa.aaai21 import (AAAI21ModelError, OUTPUT_STEP, aaai21_robustness_spec, benchmark_eps,
                             load_aaai21, published_verdicts)
from qa_lirpa.nn import argmax_smallest, integer_codes

H5 = Path(os.environ.get("QA_LIRPA_AAAI21_H5",
                         Path(__file__).resolve().parents[2] / "shared" / "data" / "aaai21" / "mnist_mlp.h5"))

K1 = "quantized_dense/quantized_model/quantized_dense/kernel:0"
B1 = "quantized_dense/quantized_model/quantized_dense/bias:0"
K2 = "quantized_dense_1/quantized_model/quantized_dense_1/kernel:0"
B2 = "quantized_dense_1/quantized_model/quantized_dense_1/bias:0"


# ----- an independent reference: the formulas of the notes in numpy int64 ------------------------

def _q(v: np.ndarray, lo: float, hi: float, frac: int) -> np.ndarray:
    """clip(floor(clip(v, lo, hi) * 2^frac + 0.5), -32, 31), in float64 (exact for these values)."""
    x = np.clip(v.astype(np.float64), lo, hi) * 2.0 ** frac + 0.5
    return np.clip(np.floor(x), -32, 31).astype(np.int64)


def numpy_reference(k1, b1, k2, b2, pixels: np.ndarray) -> np.ndarray:
    """The 32 integer outputs for uint8 pixels [N, 784]."""
    w1, w2 = _q(k1, -1, 31 / 32, 5), _q(k2, -1, 31 / 32, 5)
    c1, c2 = _q(b1, -2, 31 / 16, 4), _q(b2, -2, 31 / 16, 4)
    p = pixels.astype(np.int64)
    acc = p @ w1 + c1 * 2 ** 9
    h = np.clip(np.floor_divide(acc + 2 ** 8, 2 ** 9), 0, 63)
    acc2 = h @ w2 + c2 * 2 ** 5
    return np.clip(np.floor_divide(acc2 + 2 ** 4, 2 ** 5), -32, 31)


def _first_max(out: np.ndarray) -> np.ndarray:
    return np.argmax(out, axis=1)  # numpy's argmax returns the first maximum


# ----- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def h5_weights():
    if not H5.is_file():
        pytest.skip(f"AAAI'21 weights not found at {H5} (set QA_LIRPA_AAAI21_H5)")
    import h5py
    with h5py.File(H5, "r") as f:
        return tuple(np.asarray(f[k][()]) for k in (K1, B1, K2, B2))


@pytest.fixture(scope="module")
def model(h5_weights):
    return load_aaai21(H5)


@pytest.fixture(scope="module")
def mnist_test():
    from qa_lirpa.train.datasets import DatasetNotFoundError, load_dataset
    try:
        return load_dataset("mnist", "test")
    except DatasetNotFoundError as err:
        pytest.skip(f"MNIST not available: {err}")


@pytest.fixture(scope="module")
def mnist_outputs(model, mnist_test):
    return integer_codes(model, mnist_test.images.double())


# ----- the real benchmark network ------------------------------------------------------------------

def test_structure(model):
    names = [type(m).__name__ for m in model]
    assert names == ["QuantInput", "Flatten", "QuantLinear", "QuantAct", "QuantLinear", "QuantAct"]
    assert model[2].in_features == 784 and model[2].out_features == 64
    assert model[4].out_features == 32
    assert model[0].spec.scale == (1.0,) and model[0].output_scale == 2.0 ** -8
    for m in (model[0], model[3], model[5]):
        assert m.spec.rounding == "half_up"
    assert (model[3].spec.qmin, model[3].spec.qmax) == (0, 63)
    assert (model[5].spec.qmin, model[5].spec.qmax) == (-32, 31)


def test_parameter_codes(model, h5_weights):
    k1, b1, k2, b2 = h5_weights
    assert torch.equal(model[2].weight_codes(), torch.from_numpy(_q(k1, -1, 31 / 32, 5).T.copy()))
    assert torch.equal(model[4].weight_codes(), torch.from_numpy(_q(k2, -1, 31 / 32, 5).T.copy()))
    from qa_lirpa.quant import quantize
    for layer, b in ((model[2], b1), (model[4], b2)):
        assert torch.equal(quantize(layer.bias.detach(), layer.bias_spec), torch.from_numpy(_q(b, -2, 31 / 16, 4)))


def test_bit_exact_on_all_test_images(model, h5_weights, mnist_test, mnist_outputs):
    pixels = mnist_test.images.reshape(-1, 784).numpy()
    ref = numpy_reference(*h5_weights, pixels)
    out = mnist_outputs
    assert out.scale == [OUTPUT_STEP] and out.zero_point == [0]
    assert np.array_equal(out.values.numpy(), ref)
    # the float forward (float32 on CPU) is exact as well
    with torch.no_grad():
        y = model(mnist_test.images[:2000].float()).double()
    assert torch.equal(y, out.dequantize()[:2000])


def test_published_accuracy_and_misclassified(mnist_test, mnist_outputs):
    out = mnist_outputs.values
    pred = argmax_smallest(out)
    correct = int((pred == mnist_test.labels).sum())
    assert correct == 9708  # 97.08 %
    wrong = {i for i in range(400) if int(pred[i]) != int(mnist_test.labels[i])}
    assert wrong == {18, 149, 217, 241, 247, 259, 321, 340, 381}
    published = published_verdicts()
    assert wrong == {i for i, v in published.items() if v == "misclassified"}
    # ties are common in the saturated 6-bit outputs, so the tie rule matters
    top = out.max(dim=1, keepdim=True).values
    assert int(((out == top).sum(dim=1) > 1).sum()) > 0


def _violated_at(spec, y: np.ndarray) -> np.ndarray:
    """Exact evaluation of the spec's disjunction at output rows y [N, 32] (values k/16: exact)."""
    hit = np.zeros(y.shape[0], dtype=bool)
    for mat, rhs in spec.disjuncts:
        hit |= np.all(y @ mat.T <= rhs, axis=1)
    return hit


def test_spec_matches_argmax_rule(mnist_test, mnist_outputs):
    """At the unperturbed image the spec is violated exactly when the (ties-to-smallest) argmax
    is not the label: checked on every test image, with the true and with every other label."""
    out = mnist_outputs
    y = out.dequantize().numpy()
    pred = argmax_smallest(out.values).numpy()
    x0 = mnist_test.images[0]
    for label in range(10):
        spec = aaai21_robustness_spec(x0, label, 0)
        assert _violated_at(spec, y).tolist() == (pred != label).tolist()


def test_spec_ties_and_box():
    x = torch.tensor([[0, 3, 254, 255, 128]], dtype=torch.uint8)
    spec = aaai21_robustness_spec(x, 5, 2)
    assert spec.lower.tolist() == [0, 1, 252, 253, 126]
    assert spec.upper.tolist() == [2, 5, 255, 255, 130]
    assert spec.n_outputs == 32 and len(spec.disjuncts) == 31
    base = np.zeros((1, 32))
    base[0, 5] = 1.0
    for k in range(32):
        if k == 5:
            continue
        tie = base.copy()
        tie[0, k] = 1.0
        above = base.copy()
        above[0, k] = 1.0 + OUTPUT_STEP
        below = base.copy()
        below[0, k] = 1.0 - OUTPUT_STEP
        assert _violated_at(spec, tie)[0] == (k < 5)   # ties go to the smaller index
        assert _violated_at(spec, above)[0]
        assert not _violated_at(spec, below)[0]
    with pytest.raises(ValueError):
        aaai21_robustness_spec(torch.tensor([300]), 0, 1)
    with pytest.raises(ValueError):
        aaai21_robustness_spec(x, 32, 1)
    with pytest.raises(ValueError):
        aaai21_robustness_spec(x, 0, -1)


def test_published_table():
    t = published_verdicts()
    assert sorted(t) == list(range(400))
    assert {i for i, v in t.items() if v == "vulnerable"} == {115, 151, 158, 282, 320}
    assert [benchmark_eps(i) for i in (0, 99, 100, 199, 200, 299, 300, 399)] == [1, 1, 2, 2, 3, 3, 4, 4]
    counts = [sum(t[i] == "timeout" for i in range(b, b + 100)) for b in (0, 100, 200, 300)]
    assert counts == [0, 5, 25, 43]
    assert sum(v == "robust" for v in t.values()) == 99 + 91 + 70 + 53
    with pytest.raises(ValueError):
        benchmark_eps(400)


# ----- the same loader on other files of the same layout (Fashion-MNIST) -----------------------------

def write_keras_h5(path, k1, b1, k2, b2, layer_names=True, names=("quantized_dense", "quantized_dense_1")):
    """An HDF5 file laid out as the authors' Keras 2.2.4 weight files."""
    import h5py
    with h5py.File(path, "w") as f:
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4-tf"
        if layer_names:
            f.attrs["layer_names"] = np.array([n.encode() for n in names] + [b"dropout", b"flatten"])
        for name, k, b in ((names[0], k1, b1), (names[1], k2, b2)):
            g = f.create_group(name)
            g.attrs["weight_names"] = np.array([f"quantized_model/{name}/kernel:0".encode(),
                                                f"quantized_model/{name}/bias:0".encode()])
            sub = g.create_group("quantized_model").create_group(name)
            sub.create_dataset("kernel:0", data=k)
            sub.create_dataset("bias:0", data=b)
        for name in ("dropout", "flatten"):
            f.create_group(name).attrs["weight_names"] = np.array([], dtype=np.float64)


def synthetic_weights(seed: int, hidden: int = 64, n_out: int = 32):
    rng = np.random.default_rng(seed)
    k1 = rng.normal(0, 0.15, (784, hidden)).astype(np.float32)
    k2 = rng.normal(0, 0.4, (hidden, n_out)).astype(np.float32)
    b1 = rng.normal(0, 0.5, hidden).astype(np.float32)
    b2 = rng.normal(0, 0.8, n_out).astype(np.float32)
    # exact rounding ties (w*32 = k + 1/2, b*16 = k + 1/2), negative ties, and out-of-range values
    k1[:20, 0] = (np.arange(-10, 10) + 0.5) / 32
    k1[20:24, 1] = [1.5, -1.5, 31 / 32 + 1 / 64, -1 - 1 / 64]
    k2[:8, 0] = (np.arange(-4, 4) + 0.5) / 32
    b1[:6] = (np.array([-3, -2, -1, 0, 1, 2]) + 0.5) / 16
    b2[:4] = [2.5, -2.5, -0.5 / 16, 0.5 / 16]
    return k1, b1, k2, b2


@pytest.mark.parametrize("layer_names", [True, False])
def test_synthetic_fashion_file(tmp_path, layer_names):
    w = synthetic_weights(1)
    path = tmp_path / "fashion_mlp.h5"
    write_keras_h5(path, *w, layer_names=layer_names)
    model = load_aaai21(path)
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (500, 784)).astype(np.uint8)
    pixels[:50] = rng.choice([0, 255], (50, 784))
    x = torch.from_numpy(pixels).reshape(-1, 1, 28, 28)
    out = integer_codes(model, x.double()).values.numpy()
    ref = numpy_reference(*w, pixels)
    assert np.array_equal(out, ref)
    assert np.array_equal(argmax_smallest(torch.from_numpy(out)).numpy(), _first_max(ref))
    with torch.no_grad():
        assert torch.equal(model(x.float()).double() * 16, torch.from_numpy(ref).double())
        assert torch.equal(load_aaai21(path, dtype=torch.float64)(x.double()) * 16, torch.from_numpy(ref).double())


def test_layer_order_from_names(tmp_path):
    """Without ``layer_names`` the order is natural in the layer names, also past _9."""
    w = synthetic_weights(3, hidden=16, n_out=32)
    path = tmp_path / "renamed.h5"
    write_keras_h5(path, *w, layer_names=False, names=("quantized_dense_2", "quantized_dense_10"))
    model = load_aaai21(path)
    assert model[2].out_features == 16
    pixels = np.random.default_rng(0).integers(0, 256, (50, 784)).astype(np.uint8)
    out = integer_codes(model, torch.from_numpy(pixels).double()).values.numpy()
    assert np.array_equal(out, numpy_reference(*w, pixels))


def _expect_error(path, fragment: str):
    with pytest.raises(AAAI21ModelError) as info:
        load_aaai21(path)
    msg = str(info.value)
    assert msg.startswith(str(path)), msg
    assert fragment in msg, msg
    assert info.value.__cause__ is None


def test_malformed_files(tmp_path):
    import h5py
    _expect_error(tmp_path / "missing.h5", "no such file")
    bad = tmp_path / "text.h5"
    bad.write_text("not hdf5")
    _expect_error(bad, "not a readable HDF5 file")
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as f:
        f.create_group("dropout")
    _expect_error(empty, "no dense layer weights found")
    k1, b1, k2, b2 = synthetic_weights(4)
    wrong = tmp_path / "shapes.h5"
    write_keras_h5(wrong, k1, b1, k2[:10], b2)
    _expect_error(wrong, "do not chain")
    nan = tmp_path / "nan.h5"
    k1n = k1.copy()
    k1n[0, 0] = np.nan
    write_keras_h5(nan, k1n, b1, k2, b2)
    _expect_error(nan, "finite")
    one = tmp_path / "one_layer.h5"
    with h5py.File(one, "w") as f:
        g = f.create_group("quantized_dense/quantized_model/quantized_dense")
        g.create_dataset("kernel:0", data=k1)
        g.create_dataset("bias:0", data=b1)
    _expect_error(one, "expected 2 dense layers")
    nobias = tmp_path / "nobias.h5"
    with h5py.File(nobias, "w") as f:
        f.create_group("a/quantized_dense").create_dataset("kernel:0", data=k1)
        f.create_group("b/quantized_dense_1").create_dataset("kernel:0", data=k2)
        f["b/quantized_dense_1"].create_dataset("bias:0", data=b2)
    _expect_error(nobias, "bias:0")


def test_float32_near_tie_warns(tmp_path):
    """A weight a hair below a rounding tie: the exact half-up code and TensorFlow's float32 one
    differ; the loader keeps the exact one and says so."""
    k1, b1, k2, b2 = synthetic_weights(5)
    below = np.nextafter(np.float32(0.5 / 32), np.float32(0))  # w*32 = 0.5 - 2^-25: exact code 0
    k1[0, 0] = below
    path = tmp_path / "near_tie.h5"
    write_keras_h5(path, k1, b1, k2, b2)
    with pytest.warns(RuntimeWarning, match="float32"):
        model = load_aaai21(path)
    assert int(model[2].weight_codes()[0, 0]) == 0


def test_model_file_loader_reads_h5(tmp_path):
    """The one model-file loader (every --model option) reads the benchmark's HDF5 files with the
    same exact semantics, and names the file in one line when it cannot."""
    from qa_lirpa.base.errors import UserError
    from qa_lirpa.modelfile import load_model_file

    w = synthetic_weights(5)
    path = tmp_path / "family.H5"
    write_keras_h5(path, *w)
    model = load_model_file(path)
    assert next(model.parameters()).dtype == torch.float64 and not model.training
    pixels = np.random.default_rng(6).integers(0, 256, (200, 784)).astype(np.uint8)
    out = integer_codes(model, torch.from_numpy(pixels).double()).values.numpy()
    assert np.array_equal(out, numpy_reference(*w, pixels))
    bad = tmp_path / "text.hdf5"
    bad.write_text("not hdf5")
    with pytest.raises(UserError) as info:
        load_model_file(bad)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
