"""Your own data as a :class:`~dropkit.experiments.datasets.Dataset`: ``(train, test)`` or
``(train, val, test)`` torch ``Dataset``s of ``(input, integer label)`` pairs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from dropkit.experiments.splits import Dataset, DatasetError, noisy_labels, split_off

__all__ = ["from_splits"]


# ---------------------------------------------------------------- the user's own data


def _tensors(split: Any, which: str, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack a torch ``Dataset`` of ``(input, integer label)`` pairs into two tensors."""
    try:
        size = len(split)
    except TypeError:
        raise DatasetError(
            f"{name}: the {which} split is a {type(split).__name__}, not a sized torch Dataset"
        ) from None
    if size == 0:
        raise DatasetError(f"{name}: the {which} split is empty")
    inputs, labels = [], []
    tensors = getattr(split, "tensors", None)  # a TensorDataset: no need to go item by item
    if (
        isinstance(tensors, tuple)
        and len(tensors) == 2
        and all(isinstance(t, torch.Tensor) for t in tensors)
        and tensors[1].dim() == 1
        and not (tensors[1].dtype.is_floating_point or tensors[1].dtype.is_complex)
    ):
        inputs, labels = list(tensors[0].unbind()), tensors[1].tolist()
        size = 0
    for i in range(size):
        item = split[i]
        if not (isinstance(item, Sequence) and len(item) == 2):
            raise DatasetError(
                f"{name}: {which}[{i}] is a {type(item).__name__}; expected an (input, label) pair"
            )
        x, y = item
        y_t = torch.as_tensor(y)
        if y_t.numel() != 1 or y_t.dtype.is_floating_point or y_t.dtype.is_complex:
            raise DatasetError(
                f"{name}: {which}[{i}] has label {y!r}; expected one integer class index"
            )
        inputs.append(torch.as_tensor(x))
        labels.append(int(y_t))
    shapes = {tuple(x.shape) for x in inputs}
    if len(shapes) > 1:
        raise DatasetError(f"{name}: the {which} inputs differ in shape: {sorted(shapes)[:3]}")
    x_all = torch.stack(inputs)
    if x_all.dtype.is_floating_point:
        x_all = x_all.float()
    y_all = torch.tensor(labels, dtype=torch.long)
    if int(y_all.min()) < 0:
        raise DatasetError(f"{name}: the {which} labels must be class indices >= 0")
    return x_all.contiguous(), y_all


def from_splits(
    make: Callable[[], Any] | Sequence[Any],
    *,
    name: str = "custom",
    split_seed: int = 0,
    label_noise: float = 0.0,
    val_fraction: float = 0.1,
) -> Dataset:
    """Your own data as a :class:`Dataset`: ``(train, test)`` or ``(train, val, test)``.

    Args:
        make: the splits, or a callable without arguments that returns them; each split is a
            torch ``Dataset`` (anything with ``len`` and ``[i]``) of ``(input, label)`` pairs with
            inputs of one shape and integer labels ``0 .. C-1``.
        name: the data set's name in messages and reports.
        split_seed: seeds the validation split (when there is no ``val``) and the label noise.
        label_noise: fraction of *training* labels replaced by random ones.
        val_fraction: the fraction of ``train`` split off for validation when there is no ``val``.

    Inputs are used as given (not standardized); the number of classes is the largest label + 1.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> from dropkit.experiments.datasets import from_splits
        >>> x, y = torch.randn(50, 3), torch.arange(50) % 2
        >>> data = from_splits((TensorDataset(x[:40], y[:40]), TensorDataset(x[40:], y[40:])))
        >>> data.sizes(), data.num_classes, data.input_shape
        ({'train': 36, 'val': 4, 'test': 10}, 2, (3,))
    """
    if not 0.0 <= label_noise < 1.0:
        raise DatasetError(f"label noise must be in [0, 1), got {label_noise}")
    try:
        splits = make() if callable(make) else make
    except Exception as error:  # the user's code: say whose it is
        raise DatasetError(f"{name}: calling it failed ({type(error).__name__}: {error})") from None
    if not (isinstance(splits, Sequence) and len(splits) in (2, 3)):
        raise DatasetError(
            f"{name}: returned a {type(splits).__name__}; expected (train, test) or "
            "(train, val, test) torch Datasets"
        )
    generator = torch.Generator().manual_seed(split_seed)
    x_train, y_train = _tensors(splits[0], "train", name)
    x_test, y_test = _tensors(splits[-1], "test", name)
    if len(splits) == 3:
        x_val, y_val = _tensors(splits[1], "val", name)
    else:
        x_train, y_train, x_val, y_val = split_off(x_train, y_train, val_fraction, generator)
        if len(y_val) == 0 or len(y_train) == 0:
            raise DatasetError(f"{name}: too few training examples to split off validation data")
    shapes = {tuple(t.shape[1:]) for t in (x_train, x_val, x_test)}
    if len(shapes) > 1:
        raise DatasetError(f"{name}: the splits' inputs differ in shape: {sorted(shapes)}")
    num_classes = int(max(y_train.max(), y_val.max(), y_test.max())) + 1
    if num_classes < 2:
        raise DatasetError(f"{name}: every label is 0; a classifier needs at least two classes")
    if label_noise > 0:
        y_train = noisy_labels(y_train, label_noise, num_classes, generator)
    return Dataset(
        name,
        x_train.contiguous(),
        y_train,
        x_val.contiguous(),
        y_val,
        x_test,
        y_test,
        num_classes,
    )
