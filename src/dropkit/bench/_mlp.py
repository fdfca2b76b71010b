"""The MLP epoch with each kind of dropout and its floors, the training loop, compare's rates."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from dropkit import nn as dk_nn
from dropkit.bench._timing import Paired, interleaved, paired
from dropkit.kernels import reusable_empty, select

__all__ = [
    "DrawMaskMultiply",
    "LoopRow",
    "MlpRow",
    "bench_compare_rates",
    "bench_mlp",
    "bench_training_loop",
    "mlp_epochs",
]


@dataclass(frozen=True)
class MlpRow:
    """Median seconds per epoch of the MLP with each kind of dropout."""

    variant: str
    epoch_s: float
    overhead_pct: float  # vs the same model without dropout, the median over paired epochs
    low_pct: float  # its 95% confidence interval
    high_pct: float

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _mlp(dropout: Callable[[], nn.Module]) -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, 256),
        nn.ReLU(),
        dropout(),
        nn.Linear(256, 128),
        nn.ReLU(),
        dropout(),
        nn.Linear(128, 10),
    )


class _NativeScale(nn.Module):
    """``x * 2``: the cheapest element-wise op torch can run where dropout sits (a floor)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0


class _ScaleFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        return grad * 2.0


class _PythonScale(nn.Module):
    """``x * 2`` as a Python ``autograd.Function``: the floor of any op whose forward and
    backward are Python (as a mask-free dropout's are, without a compiled extension)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = _ScaleFunction.apply(x)  # type: ignore[no-untyped-call]
        return out


class DrawMaskMultiply(nn.Module):
    """Dropout's irreducible work on the saved-mask path, without its checks or its module
    call into the function: one seed drawn from torch's default generator, the Philox mask
    written by the numba kernel, one native multiply (a floor for any dropout whose masks
    follow ``torch.manual_seed`` and come from a counter-based stream)."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = torch.empty((), dtype=torch.int64)
        backend: Any = select(self.cell.float())  # the CPU float backend, chosen once
        self.backend, self.threshold = backend, backend.threshold(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.cell.random_(0, 2**62)
        mask, n = reusable_empty(x.shape, x.dtype), x.numel()
        self.backend.entry_drawn_mask(  # as small_dropout calls it (float32, one thread)
            mask.data_ptr(), n, self.cell.data_ptr(), 1, 0, self.threshold, 2.0, False, True
        )
        return torch.mul(x, mask)


def mlp_epochs(
    variants: dict[str, Callable[[], nn.Module]], *, samples: int = 1200, batch_size: int = 64
) -> dict[str, Callable[[], None]]:
    """One training epoch of the MLP 64-256-128-10 per variant of what sits at its two dropout
    sites: Adam (lr 1e-3), cross-entropy, batches of ``batch_size`` drawn by indexing
    ``samples`` seeded in-memory inputs of 64 features (the size of the 8x8 digits; the values
    do not change the time). Each model starts from ``torch.manual_seed(0)``."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(samples, 64, generator=generator)
    targets = torch.randint(0, 10, (samples,), generator=generator)

    def epoch_runner(make: Callable[[], nn.Module]) -> Callable[[], None]:
        torch.manual_seed(0)
        model = _mlp(make)
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = nn.CrossEntropyLoss()

        def run() -> None:
            order = torch.randperm(samples, generator=generator)
            for start in range(0, samples, batch_size):
                index = order[start : start + batch_size]
                optimizer.zero_grad(set_to_none=True)
                loss_fn(model(inputs[index]), targets[index]).backward()
                optimizer.step()

        return run

    return {name: epoch_runner(make) for name, make in variants.items()}


def bench_mlp(*, epochs: int = 9, samples: int = 1200, batch_size: int = 64) -> list[MlpRow]:
    """Seconds per epoch of the MLP 64-256-128-10 of :func:`mlp_epochs`, dropout 0.5 after
    both hidden layers.

    Variants: no dropout, three floors in dropout's place (``x * 2`` as a native op and as a
    Python ``autograd.Function``; a seed draw, the Philox mask and a native multiply),
    ``torch.nn.Dropout``, ``dropkit.nn.Dropout``; ``epochs`` paired rounds of all
    (:func:`paired`), each epoch's overhead taken against the no-dropout epoch of its round.
    """
    variants: dict[str, Callable[[], nn.Module]] = {
        "no dropout": nn.Identity,
        "floor: x * 2, native": _NativeScale,
        "floor: x * 2, Python autograd.Function": _PythonScale,
        "floor: seed draw + Philox mask + multiply": DrawMaskMultiply,
        "torch dropout": lambda: nn.Dropout(0.5),
        "dropkit dropout": lambda: dk_nn.Dropout(0.5),
    }
    runs = mlp_epochs(variants, samples=samples, batch_size=batch_size)
    return [
        MlpRow(k, v.seconds, (v.ratio - 1.0) * 100.0, (v.low - 1.0) * 100.0, (v.high - 1.0) * 100.0)
        for k, v in paired(runs, epochs, "no dropout").items()
    ]


@dataclass(frozen=True)
class LoopRow:
    """Median seconds per epoch of one way of feeding batches."""

    loop: str
    epoch_s: float

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def bench_training_loop(*, epochs: int = 7, dataset: str = "digits") -> list[LoopRow]:
    """One epoch of the runner's MLP (256-128, dropout 0.2) on ``dataset``, fed two ways.

    ``in-memory indexing`` is what ``dropkit compare`` does (a permutation, then slicing tensors
    held in memory); ``DataLoader`` is the textbook loop over
    ``DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)``. Same model, optimizer and
    data; epochs of the two are interleaved.
    """
    from torch.utils.data import DataLoader, TensorDataset

    from dropkit.experiments.datasets import load_dataset
    from dropkit.experiments.models import build_model

    data = load_dataset(dataset)
    x, y = data.x_train, data.y_train

    def runner(feed: str) -> Callable[[], None]:
        torch.manual_seed(0)
        model = build_model("mlp", data.input_shape, data.num_classes, rate=0.2)
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
        generator = torch.Generator().manual_seed(0)

        def step(xb: torch.Tensor, yb: torch.Tensor) -> None:
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(xb), yb).backward()  # type: ignore[no-untyped-call]
            optimizer.step()

        def in_memory() -> None:
            order = torch.randperm(len(y), generator=generator)
            for i in range(0, len(y), 64):
                index = order[i : i + 64]
                step(x[index], y[index])

        def data_loader() -> None:
            for xb, yb in loader:
                step(xb, yb)

        return in_memory if feed == "in-memory indexing" else data_loader

    feeds = ("in-memory indexing", "DataLoader")
    contenders: dict[str, Callable[[], object]] = {feed: runner(feed) for feed in feeds}
    contenders["3 runs stacked"] = _stacked_epoch(data, 0.2, runs=3)
    times = interleaved(contenders, epochs)
    rows = [LoopRow(feed, times[feed]) for feed in feeds]
    rows.append(LoopRow("in-memory, 3 runs stacked (per run)", times["3 runs stacked"] / 3))
    return rows


def _stacked_epoch(data: Any, rate: float, runs: int = 3) -> Callable[[], None]:
    """One epoch of what ``dropkit compare`` trains: ``runs`` seeds of the runner's MLP at
    ``rate`` stacked into one model, Adam, batches of 64 indexed from in-memory tensors."""
    from dropkit.experiments.batched import StackedMLP
    from dropkit.experiments.models import build_model, dropout_sites, set_rate

    x, y = data.x_train, data.y_train
    mlps = []
    for seed in range(runs):
        torch.manual_seed(seed)
        mlps.append(build_model("mlp", data.input_shape, data.num_classes, rate=rate))
    generators = [torch.Generator().manual_seed(seed) for seed in range(runs)]
    model = StackedMLP(mlps, generators)
    set_rate(model, rate)  # as train_batched does each epoch: the stacked sites start at p = 0
    if rate > 0.0:
        assert all(site.p == rate for site in dropout_sites(model))
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def epoch() -> None:
        orders = torch.stack([torch.randperm(len(y), generator=g) for g in generators])
        for i in range(0, len(y), 64):
            index = orders[:, i : i + 64]
            logits = model(x[index])
            loss = torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), y[index], reduction="none"
            ).mean(1)
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()  # type: ignore[no-untyped-call]
            optimizer.step()

    return epoch


def bench_compare_rates(
    *, epochs: int = 7, dataset: str = "mnist1d", rates: Sequence[float] = (0.0, 0.2, 0.5)
) -> dict[float, Paired]:
    """Seconds per epoch of what the default ``dropkit compare`` trains, at each rate.

    The default compare trains the runner's MLP, 3 seeds per rate stacked into one model (its
    ``--batched`` default), with Adam and batches of 64 drawn by indexing in-memory tensors.
    Rates are paired epoch by epoch (:func:`paired`), against the first rate: ``ratio`` of
    rate ``r`` is what dropout at that rate costs the main job on this machine.
    """
    from dropkit.experiments.datasets import load_dataset

    data = load_dataset(dataset)
    runs = {str(rate): _stacked_epoch(data, rate) for rate in rates}
    times = paired(runs, epochs, str(rates[0]))
    return {rate: times[str(rate)] for rate in rates}
