"""Data sets by name, held in memory as tensors, with splits fixed by a seed.

- ``mnist1d``: the 1-D analogue of MNIST by Greydanus (2020, https://arxiv.org/abs/2011.14439),
  generated locally by the ``mnist1d`` package's ``make_dataset`` (never downloaded) and cached.
- ``digits``: the 8x8 handwritten digits that ship with scikit-learn.
- ``synthetic``: a generated 4-class problem with few informative features, easy to overfit.
- ``diabetes`` (regression): scikit-learn's diabetes data (442 patients, 10 features, a
  disease progression score one year later; Efron et al. 2004), embedded in scikit-learn.
  The targets are standardized by the training split's mean and standard deviation
  (:attr:`Dataset.target_mean`, :attr:`Dataset.target_std` give them back in the score's units).
- ``mnist``, ``fashion-mnist``, ``cifar10``: downloaded once into the cache directory, checked
  against their published MD5 checksums, and read into memory.
- your own: ``FILE.py:NAME`` or ``package.module:NAME``, a callable returning ``(train, test)`` or
  ``(train, val, test)`` torch ``Dataset``s of ``(input, integer label)`` pairs (see
  :func:`from_splits`).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import random
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from dropkit.experiments.own_data import from_splits
from dropkit.experiments.splits import (
    Dataset,
    DatasetError,
    noisy_labels,
    split_off,
    standardize,
)

__all__ = [
    "DATASETS",
    "REGRESSION_DATASETS",
    "TASKS",
    "Dataset",
    "DatasetError",
    "cache_dir",
    "dataset_task",
    "from_splits",
    "load_dataset",
]

#: What a comparison learns: class labels (cross-entropy) or real targets (squared error).
TASKS = ("classification", "regression")


def cache_dir() -> Path:
    """``$DROPKIT_CACHE``, else ``$XDG_CACHE_HOME/dropkit``, else ``~/.cache/dropkit``."""
    if os.environ.get("DROPKIT_CACHE"):
        return Path(os.environ["DROPKIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dropkit"


# ---------------------------------------------------------------- raw sources


Raw = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x_train, y_train, x_test, y_test


def _raw_mnist1d(root: Path) -> Raw:
    path = root / "mnist1d" / "mnist1d_5000_seed42.npz"
    if not path.exists():
        try:
            from mnist1d.data import get_dataset_args, make_dataset
        except ImportError as error:
            raise DatasetError(
                "mnist1d: the mnist1d package is not installed; pip install 'dropkit[experiments]'"
            ) from error
        # make_dataset seeds numpy's and Python's global generators; put them back afterwards.
        np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
        try:
            data = make_dataset(get_dataset_args())
        finally:
            np.random.set_state(np_state)  # noqa: NPY002
            random.setstate(py_state)
        x, y, x_test, y_test = (np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test"))
        _atomic_write(path, lambda f: np.savez(f, x=x, y=y, x_test=x_test, y_test=y_test))
    with np.load(path) as data:
        return data["x"][:, None, :], data["y"], data["x_test"][:, None, :], data["y_test"]


def _raw_digits(root: Path) -> Raw:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images[:, None, :, :].astype(np.float32)
    y = digits.target
    # A fixed test split, independent of the split seed, like the published ones.
    order = np.random.default_rng(0).permutation(len(y))
    test, train = order[:360], order[360:]
    return x[train], y[train], x[test], y[test]


def _raw_synthetic(root: Path) -> Raw:
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=3000,
        n_features=40,
        n_informative=8,
        n_redundant=8,
        n_classes=4,
        n_clusters_per_class=3,
        flip_y=0.05,
        class_sep=0.9,
        random_state=0,
    )
    x = x.astype(np.float32)
    return x[:1000], y[:1000], x[1000:], y[1000:]


def _raw_diabetes(root: Path) -> Raw:
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    # A fixed test split (88 of 442), independent of the split seed, as for digits.
    order = np.random.default_rng(0).permutation(len(y))
    test, train = order[:88], order[88:]
    x = x.astype(np.float32)
    return x[train], y[train], x[test], y[test]


# name -> (base URL, [(file, md5)]); checksums as published with the data sets (and used by
# torchvision).
_IDX_SOURCES: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        [
            ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
            ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
        ],
    ),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        [
            ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
            ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
        ],
    ),
}
_CIFAR10 = (
    "https://www.cs.toronto.edu/~kriz/",
    "cifar-10-python.tar.gz",
    "c58f30108f718f92721af3b95e74349a",
)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through a temporary file in the same folder, then rename: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fetch(name: str, url: str, path: Path, md5: str) -> Path:
    """``path`` if present with the right checksum, else downloaded there (atomically)."""
    if path.exists():
        if _md5(path) == md5:
            return path
        raise DatasetError(
            f"{name}: {path} is corrupt (MD5 {_md5(path)}, expected {md5}); delete it to "
            "download it again"
        )
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            _atomic_write(path, lambda f: f.write(response.read()))
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        raise DatasetError(
            f"{name}: cannot download {url} ({error}) and it is not cached at {path}. When "
            f"offline, put the file there by hand, or use --dataset mnist1d (generated locally)"
        ) from error
    if _md5(path) != md5:
        path.unlink()
        raise DatasetError(f"{name}: the download of {url} has the wrong MD5 checksum; try again")
    return path


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): magic, dims as big-endian int32, then uint8 data."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0:2] != b"\x00\x00" or data[2] != 0x08:
        raise DatasetError(f"{path}: not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">i4", count=ndim, offset=4)
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DatasetError(f"{path}: truncated IDX file ({body.size} of {np.prod(dims)} bytes)")
    array: np.ndarray = body.reshape(tuple(int(d) for d in dims)).copy()  # frombuffer: read-only
    return array


def _raw_idx(name: str, root: Path) -> Raw:
    base, files = _IDX_SOURCES[name]
    paths = [_fetch(name, base + f, root / name / f, md5) for f, md5 in files]
    x_train, y_train, x_test, y_test = (_read_idx(p) for p in paths)
    return x_train[:, None].astype(np.float32), y_train, x_test[:, None].astype(np.float32), y_test


def _raw_cifar10(root: Path) -> Raw:
    base, file, md5 = _CIFAR10
    archive = _fetch("cifar10", base + file, root / "cifar10" / file, md5)
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            stem = Path(member.name).name
            if stem.startswith(("data_batch_", "test_batch")):
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                # The archive passed its checksum, so unpickling it runs no foreign code.
                entry = pickle.load(handle, encoding="bytes")
                data = np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
                batches[stem] = (data, np.asarray(entry[b"labels"]))
    train_names = sorted(k for k in batches if k.startswith("data_batch_"))
    if len(train_names) != 5 or "test_batch" not in batches:
        raise DatasetError(f"cifar10: {archive} lacks some of data_batch_1..5 and test_batch")
    x_train = np.concatenate([batches[k][0] for k in train_names]).astype(np.float32)
    y_train = np.concatenate([batches[k][1] for k in train_names])
    x_test, y_test = batches["test_batch"]
    return x_train, y_train, x_test.astype(np.float32), y_test


_SOURCES: dict[str, tuple[Callable[[Path], Raw], int, float]] = {
    # name -> (raw loader, number of classes, validation fraction of the training pool)
    "mnist1d": (_raw_mnist1d, 10, 0.1),
    "digits": (_raw_digits, 10, 0.1),
    "synthetic": (_raw_synthetic, 4, 0.2),
    "mnist": (lambda root: _raw_idx("mnist", root), 10, 1 / 12),
    "fashion-mnist": (lambda root: _raw_idx("fashion-mnist", root), 10, 1 / 12),
    "cifar10": (_raw_cifar10, 10, 0.1),
    "diabetes": (_raw_diabetes, 1, 0.2),  # regression: one output
}
DATASETS: tuple[str, ...] = tuple(_SOURCES)
#: The built-in data sets whose targets are real numbers (``--task regression``).
REGRESSION_DATASETS: tuple[str, ...] = ("diabetes",)


def dataset_task(name: str) -> str:
    """``regression`` for the built-in regression data sets, else ``classification`` (your own
    data sets are classification: :func:`from_splits` takes integer labels).

    Example:
        >>> dataset_task("diabetes"), dataset_task("digits")
        ('regression', 'classification')
    """
    return "regression" if name in REGRESSION_DATASETS else "classification"


def load_dataset(
    name: str,
    *,
    split_seed: int = 0,
    label_noise: float = 0.0,
    root: Path | None = None,
) -> Dataset:
    """Load data set ``name`` into memory, split off validation data and add label noise.

    Args:
        name: one of :data:`DATASETS`.
        split_seed: seeds the train/validation split and the label noise.
        label_noise: fraction of *training* labels replaced by random ones (validation and test
            labels stay clean).
        root: the cache directory (default: :func:`cache_dir`).

    Example:
        >>> from dropkit.experiments.datasets import load_dataset
        >>> data = load_dataset("synthetic")
        >>> data.input_shape, data.num_classes, data.sizes()
        ((40,), 4, {'train': 800, 'val': 200, 'test': 2000})
    """
    if not 0.0 <= label_noise < 1.0:
        raise DatasetError(f"label noise must be in [0, 1), got {label_noise}")
    from dropkit.experiments import user

    if user.is_spec(name):
        try:
            make = user.load(name, "dataset")
        except user.SpecError as error:
            raise DatasetError(str(error)) from None
        return from_splits(make, name=name, split_seed=split_seed, label_noise=label_noise)
    if name not in _SOURCES:
        raise DatasetError(
            f"unknown data set {name!r}; expected one of {list(DATASETS)} or your own as "
            "FILE.py:NAME or package.module:NAME"
        )
    loader, num_classes, val_fraction = _SOURCES[name]
    x_pool, y_pool, x_test, y_test = loader(root or cache_dir())
    generator = torch.Generator().manual_seed(split_seed)
    task = dataset_task(name)
    labels = torch.long if task == "classification" else torch.float32
    x_train, y_train, x_val, y_val = split_off(
        torch.as_tensor(np.ascontiguousarray(x_pool), dtype=torch.float32),
        torch.as_tensor(np.asarray(y_pool), dtype=labels),
        val_fraction,
        generator,
    )
    x_train, x_val, x_test_t = standardize(
        x_train, x_val, torch.as_tensor(np.ascontiguousarray(x_test), dtype=torch.float32)
    )
    if task == "regression":
        if label_noise > 0:
            raise DatasetError(f"{name}: label noise applies to classification data sets only")
        mean, std = float(y_train.mean()), float(y_train.std())
        y_train, y_val, y_test_t = (
            (y - mean) / std
            for y in (y_train, y_val, torch.as_tensor(np.asarray(y_test), dtype=torch.float32))
        )
        return Dataset(
            name,
            x_train.contiguous(),
            y_train,
            x_val.contiguous(),
            y_val,
            x_test_t.contiguous(),
            y_test_t,
            num_classes,
            task,
            mean,
            std,
        )
    if label_noise > 0:
        y_train = noisy_labels(y_train, label_noise, num_classes, generator)
    return Dataset(
        name,
        x_train.contiguous(),
        y_train,
        x_val.contiguous(),
        y_val,
        x_test_t.contiguous(),
        torch.as_tensor(np.asarray(y_test), dtype=torch.long),
        num_classes,
    )
