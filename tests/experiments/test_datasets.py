"""Data set loading, splits and label noise, on small files the tests make themselves."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import random
import re
import tarfile
import urllib.error

import numpy as np
import pytest
import torch

from dropkit.experiments import datasets
from dropkit.experiments.datasets import DatasetError, load_dataset


def test_synthetic_splits_are_fixed_by_the_split_seed() -> None:
    a = load_dataset("synthetic", split_seed=0)
    b = load_dataset("synthetic", split_seed=0)
    c = load_dataset("synthetic", split_seed=1)
    assert torch.equal(a.x_train, b.x_train)
    assert torch.equal(a.y_val, b.y_val)
    assert not torch.equal(a.y_val, c.y_val)
    assert torch.equal(a.y_test, c.y_test)  # the test split never moves
    assert a.sizes() == {"train": 800, "val": 200, "test": 2000}
    # Standardized by the training inputs.
    assert a.x_train.mean().abs() < 1e-5
    assert (a.x_train.std(0) - 1).abs().max() < 1e-3


def test_label_noise_touches_training_labels_only() -> None:
    clean = load_dataset("synthetic", split_seed=3)
    noisy = load_dataset("synthetic", split_seed=3, label_noise=0.5)
    assert torch.equal(clean.y_val, noisy.y_val)
    assert torch.equal(clean.y_test, noisy.y_test)
    assert torch.equal(clean.x_train, noisy.x_train)
    changed = (clean.y_train != noisy.y_train).float().mean().item()
    # Half the labels are redrawn uniformly from 4 classes: 3/4 of those change.
    assert abs(changed - 0.5 * 0.75) < 0.06
    with pytest.raises(DatasetError, match="label noise"):
        load_dataset("synthetic", label_noise=1.0)


def test_digits_shape() -> None:
    data = load_dataset("digits")
    assert data.input_shape == (1, 8, 8)
    assert data.num_classes == 10
    assert sum(data.sizes().values()) == 1797


def test_unknown_dataset() -> None:
    with pytest.raises(DatasetError, match="unknown data set 'imagenet'"):
        load_dataset("imagenet")


def test_mnist1d_is_generated_once_and_leaves_global_rngs_alone(tmp_path) -> None:
    pytest.importorskip("mnist1d")
    np.random.seed(123)  # noqa: NPY002  (the global state is what is checked)
    random.seed(123)
    np_before, py_before = np.random.get_state()[1].copy(), random.getstate()  # noqa: NPY002
    data = load_dataset("mnist1d", root=tmp_path)
    assert np.array_equal(np.random.get_state()[1], np_before)  # noqa: NPY002
    assert random.getstate() == py_before
    assert data.input_shape == (1, 40)
    assert data.sizes() == {"train": 3600, "val": 400, "test": 1000}
    cached = list((tmp_path / "mnist1d").glob("*.npz"))
    assert len(cached) == 1
    again = load_dataset("mnist1d", root=tmp_path)
    assert torch.equal(again.x_train, data.x_train)


# ---------------------------------------------------------------- downloaded formats


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte.gz": _idx(rng.integers(0, 256, (60, 28, 28))),
        "train-labels-idx1-ubyte.gz": _idx(np.arange(60) % 10),
        "t10k-images-idx3-ubyte.gz": _idx(rng.integers(0, 256, (20, 28, 28))),
        "t10k-labels-idx1-ubyte.gz": _idx(np.arange(20) % 10),
    }
    (tmp_path / "mnist").mkdir()
    for name, data in files.items():
        (tmp_path / "mnist" / name).write_bytes(data)
    base = datasets._IDX_SOURCES["mnist"][0]
    monkeypatch.setitem(
        datasets._IDX_SOURCES, "mnist", (base, [(n, _md5(d)) for n, d in files.items()])
    )
    return tmp_path


def test_mnist_from_cached_idx_files(fake_mnist) -> None:
    data = load_dataset("mnist", root=fake_mnist)
    assert data.input_shape == (1, 28, 28)
    assert data.sizes() == {"train": 55, "val": 5, "test": 20}
    assert torch.equal(data.y_test, torch.arange(20) % 10)


def test_corrupt_cached_file_is_named(fake_mnist) -> None:
    path = fake_mnist / "mnist" / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte.gz is corrupt"):
        load_dataset("mnist", root=fake_mnist)


def test_offline_and_not_cached_is_a_clear_error(tmp_path, monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(datasets.urllib.request, "urlopen", offline)
    with pytest.raises(DatasetError, match=r"fashion-mnist: cannot download .* not cached at"):
        load_dataset("fashion-mnist", root=tmp_path)
    # Nothing half-written is left behind.
    assert not list(tmp_path.rglob("*.gz*"))


def test_download_is_checked_and_atomic(tmp_path, monkeypatch) -> None:
    payload = b"not what was expected"

    monkeypatch.setattr(datasets.urllib.request, "urlopen", lambda *a, **k: io.BytesIO(payload))
    with pytest.raises(DatasetError, match="wrong MD5"):
        load_dataset("cifar10", root=tmp_path)
    assert not list((tmp_path / "cifar10").glob("*"))


def test_cifar10_from_a_cached_archive(tmp_path, monkeypatch) -> None:
    rng = np.random.default_rng(1)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, n in [(f"data_batch_{i}", 4) for i in range(1, 6)] + [("test_batch", 6)]:
            blob = pickle.dumps(
                {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": [1] * n}
            )
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    archive = buffer.getvalue()
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar-10-python.tar.gz").write_bytes(archive)
    base, file, _ = datasets._CIFAR10
    monkeypatch.setattr(datasets, "_CIFAR10", (base, file, _md5(archive)))
    data = load_dataset("cifar10", root=tmp_path)
    assert data.input_shape == (3, 32, 32)
    assert data.sizes() == {"train": 18, "val": 2, "test": 6}


# ---------------------------------------------------------------- your own data


def _pairs(n: int, classes: int = 3, seed: int = 0):
    from torch.utils.data import TensorDataset

    generator = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 5, generator=generator), torch.arange(n) % classes)


class _Items(torch.utils.data.Dataset):
    """A map-style Dataset that is not a TensorDataset: numpy inputs, int labels."""

    def __init__(self, labels) -> None:
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return np.full((2, 3), float(i), dtype=np.float32), self.labels[i]


def test_own_train_and_test_get_a_validation_split_by_the_split_seed() -> None:
    train, test = _pairs(100), _pairs(30, seed=1)
    a = datasets.from_splits((train, test), split_seed=0)
    b = datasets.from_splits(lambda: (train, test), split_seed=0)
    c = datasets.from_splits((train, test), split_seed=1)
    assert a.sizes() == {"train": 90, "val": 10, "test": 30}
    assert a.num_classes == 3
    assert torch.equal(a.y_val, b.y_val)
    assert not torch.equal(a.x_val, c.x_val)
    # Every training example is in exactly one of train and val.
    both = torch.cat([a.x_train, a.x_val])
    assert torch.equal(
        both[both[:, 0].argsort()], train.tensors[0][train.tensors[0][:, 0].argsort()]
    )


def test_own_validation_split_is_used_as_given() -> None:
    data = datasets.from_splits((_Items([0, 1] * 20), _Items([0, 1, 1, 0]), _Items([1, 0] * 10)))
    assert data.sizes() == {"train": 40, "val": 4, "test": 20}
    assert data.x_val.shape == (4, 2, 3)
    assert data.y_val.tolist() == [0, 1, 1, 0]


def test_own_data_with_label_noise_changes_only_training_labels() -> None:
    clean = datasets.from_splits((_pairs(200), _pairs(50)), split_seed=3)
    noisy = datasets.from_splits((_pairs(200), _pairs(50)), split_seed=3, label_noise=0.5)
    assert torch.equal(clean.y_val, noisy.y_val)
    assert torch.equal(clean.y_test, noisy.y_test)
    changed = (clean.y_train != noisy.y_train).float().mean().item()
    assert 0.2 < changed < 0.5  # half replaced, two thirds of those by another class


@pytest.mark.parametrize(
    ("splits", "message"),
    [
        (lambda: [1, 2, 3, 4], "expected (train, test)"),
        (lambda: (_Items([0, 1.5]), _Items([0, 1])), "expected one integer class index"),
        (lambda: (_Items([0, -1]), _Items([0, 1])), "class indices >= 0"),
        (lambda: (_Items([0, 1]), [3]), "expected an (input, label) pair"),
        (lambda: (_Items([0, 1]), _Items([])), "the test split is empty"),
        (lambda: 1 / 0, "ZeroDivisionError"),
    ],
)
def test_bad_own_data_is_named(splits, message) -> None:
    with pytest.raises(DatasetError, match=re.escape(message)):
        datasets.from_splits(splits, name="mine")


def test_own_data_by_file_and_name(tmp_path) -> None:
    path = tmp_path / "mydata.py"
    path.write_text(
        "import torch\n"
        "from torch.utils.data import TensorDataset\n"
        "def load():\n"
        "    x = torch.arange(40.0).reshape(20, 2)\n"
        "    y = torch.arange(20) % 2\n"
        "    return TensorDataset(x, y), TensorDataset(x[:4], y[:4])\n"
    )
    data = load_dataset(f"{path}:load")
    assert data.sizes() == {"train": 18, "val": 2, "test": 4}
    assert data.name == f"{path}:load"
    with pytest.raises(DatasetError, match="has no 'missing'"):
        load_dataset(f"{path}:missing")
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(f"{tmp_path / 'nope.py'}:load")


def test_the_same_data_with_one_thread_or_two() -> None:
    pytest.importorskip("mnist1d")
    # Issue 22: mnist1d's 144,000 training inputs are enough for torch to split the
    # standardization's sums between threads, and the split changed the data's bits (and so
    # every run's numbers) with the thread count, which a busy machine can change.
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = load_dataset("mnist1d")
        torch.set_num_threads(2)
        two = load_dataset("mnist1d")
        assert torch.get_num_threads() == 2  # put back after the statistics
    finally:
        torch.set_num_threads(before)
    for split in ("x_train", "x_val", "x_test"):
        assert torch.equal(getattr(one, split), getattr(two, split)), split
