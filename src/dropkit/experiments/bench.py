"""Speed benchmarks: dropkit vs torch, side by side in one process (``dropkit bench`` and the
scripts in ``benchmarks/``).

They live with the experiments because they train the experiments' models on its data sets;
the CLI command only parses and prints. Times on a shared machine are noisy, so every contender
is timed in interleaved rounds (one run of each per round) and the median is kept; what to
read are the ratios within one run.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

import dropkit.functional as DF
from dropkit import nn as dk_nn
from dropkit.kernels import select
from dropkit.kernels._memory import spare

__all__ = [
    "ConvertRow",
    "DrawMaskMultiply",
    "KernelRow",
    "LoopRow",
    "MlpRow",
    "bench_compare_rates",
    "bench_convert",
    "bench_convert_real",
    "bench_fused",
    "bench_kernels",
    "bench_mc",
    "bench_mlp",
    "bench_training_loop",
    "convert_models",
    "mc_cnn",
    "mlp_epochs",
    "real_convert_models",
]


@dataclass(frozen=True)
class KernelRow:
    """Median milliseconds of each contender for one (size, dtype, pass)."""

    numel: int
    dtype: str
    pass_: str  # "forward" or "forward+backward"
    times_ms: dict[str, float]

    def to_json(self) -> dict[str, object]:
        row = asdict(self)
        row["pass"] = row.pop("pass_")
        return row


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


@dataclass(frozen=True)
class Paired:
    """One contender against a base timed in the same rounds: its median seconds, and the median
    of its per-round ratio to the base with a 95% confidence interval of that median."""

    seconds: float
    ratio: float
    low: float
    high: float


def median_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """A distribution-free interval for the median of ``values``: the order statistics
    ``x_(j)`` and ``x_(n+1-j)`` with the largest ``j`` whose binomial(n, 1/2) coverage is at
    least ``level`` (the whole range where even that falls short, n below 6 at 95%)."""
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        raise ValueError("median_interval: no values")
    j, tail = 0, 0.0  # tail = P(Binomial(n, 1/2) <= j - 1), the chance the median is below x_(j)
    while j + 1 <= n // 2:
        nxt = tail + math.comb(n, j) / 2**n
        if 1.0 - 2.0 * nxt < level:
            break
        j, tail = j + 1, nxt
    return (ordered[j - 1], ordered[n - j]) if j else (ordered[0], ordered[-1])


def _timed_rounds(
    contenders: Mapping[str, Callable[[], object]], rounds: int, order: random.Random | None
) -> dict[str, list[float]]:
    """Seconds of each call of each contender: one warm-up call each, then ``rounds`` rounds of
    one call each, in the mapping's order or, with ``order``, shuffled by it every round."""
    for run in contenders.values():
        run()
    names = list(contenders)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        if order is not None:
            order.shuffle(names)
        for name in names:
            start = time.perf_counter()
            contenders[name]()
            samples[name].append(time.perf_counter() - start)
    return samples


def _paired(
    contenders: Mapping[str, Callable[[], object]], rounds: int, base: str
) -> dict[str, Paired]:
    """Each contender timed once per round after a warm-up call, in an order shuffled each
    round (seeded), so that none always follows the same one; its ratio to ``base`` is taken
    within each round, which cancels the machine's slow drifts, and summarized by the median
    and :func:`median_interval`."""
    samples = _timed_rounds(contenders, rounds, random.Random(0))
    out = {}
    for name, times in samples.items():
        ratios = [t / b for t, b in zip(times, samples[base], strict=True)]
        low, high = median_interval(ratios)
        out[name] = Paired(statistics.median(times), statistics.median(ratios), low, high)
    return out


def _interleaved(contenders: Mapping[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds of one call of each contender, timed round-robin after a warm-up call."""
    samples = _timed_rounds(contenders, rounds, None)
    return {name: statistics.median(times) for name, times in samples.items()}


def _repeat(fn: Callable[[], object], times: int) -> Callable[[], object]:
    def run() -> object:
        for _ in range(times):
            fn()
        return None

    return run


def _train_step(
    op: Callable[[torch.Tensor], torch.Tensor], *, leaf: torch.Tensor, grad: torch.Tensor
) -> Callable[[], None]:
    def run() -> None:
        leaf.grad = None
        op(leaf).backward(grad)  # type: ignore[no-untyped-call]

    return run


def bench_kernels(
    sizes: Sequence[int],
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.bfloat16),
    *,
    p: float = 0.5,
    rounds: int = 7,
    compiled: bool = True,
) -> list[KernelRow]:
    """Forward and forward+backward of element-wise dropout on CPU tensors of each size.

    Contenders: ``dropkit`` (the default backend), ``torch`` (``F.dropout``), ``torch.compile``
    (``F.dropout`` compiled with dynamic shapes, once per dtype) and two copies: ``copy`` into an
    existing tensor (the memory-bandwidth limit) and ``clone`` (a copy into a new tensor, which
    also pays for fresh memory, as every out-of-place op does).
    """
    rows: list[KernelRow] = []
    for dtype in dtypes:
        torch_compiled = (
            torch.compile(lambda t: torch.nn.functional.dropout(t, p, True), dynamic=True)
            if compiled
            else None
        )
        for numel in sizes:
            x = torch.randn(numel).to(dtype)
            reps = max(1, (1 << 20) // numel)  # keep each timed call above timer noise
            sink = torch.empty_like(x)
            forward: dict[str, Callable[[], object]] = {
                "dropkit": functools.partial(DF.dropout, x, p),
                "torch": functools.partial(torch.nn.functional.dropout, x, p),
                "copy": functools.partial(sink.copy_, x),
                "clone": x.clone,
            }
            if torch_compiled is not None:
                forward["torch.compile"] = functools.partial(torch_compiled, x)
            times = _interleaved({k: _repeat(v, reps) for k, v in forward.items()}, rounds)
            rows.append(
                KernelRow(
                    numel, str(dtype), "forward", {k: v / reps * 1e3 for k, v in times.items()}
                )
            )

            leaf = x.clone().requires_grad_()
            grad = torch.ones_like(x)
            train_step = functools.partial(_train_step, leaf=leaf, grad=grad)
            both: dict[str, Callable[[], object]] = {
                "dropkit": train_step(lambda t: DF.dropout(t, p)),
                "torch": train_step(lambda t: torch.nn.functional.dropout(t, p)),
            }
            if torch_compiled is not None:
                both["torch.compile"] = train_step(torch_compiled)
            times = _interleaved({k: _repeat(v, reps) for k, v in both.items()}, rounds)
            rows.append(
                KernelRow(
                    numel,
                    str(dtype),
                    "forward+backward",
                    {k: v / reps * 1e3 for k, v in times.items()},
                )
            )
    return rows


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
    """Dropout's irreducible work on the saved-mask road, without its checks or its module
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
        mask, n = spare(x.shape, x.dtype), x.numel()
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
    (:func:`_paired`), each epoch's overhead taken against the no-dropout epoch of its round.
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
        for k, v in _paired(runs, epochs, "no dropout").items()
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
    times = _interleaved(contenders, epochs)
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
    Rates are paired epoch by epoch (:func:`_paired`), against the first rate: ``ratio`` of
    rate ``r`` is what dropout at that rate costs the main job on this machine.
    """
    from dropkit.experiments.datasets import load_dataset

    data = load_dataset(dataset)
    runs = {str(rate): _stacked_epoch(data, rate) for rate in rates}
    times = _paired(runs, epochs, str(rates[0]))
    return {rate: times[str(rate)] for rate in rates}


@dataclass(frozen=True)
class ConvertRow:
    """Median milliseconds per training step of a model, as is and converted; ``swapped`` is
    how many dropout layers :func:`dropkit.convert` swapped (of those that ran)."""

    model: str
    swapped: int
    torch_ms: float
    converted_ms: float

    @property
    def speedup(self) -> float:
        return self.torch_ms / self.converted_ms

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "speedup": self.speedup}


def _mlp_torch(widths: Sequence[int]) -> nn.Module:
    """``Linear, ReLU, nn.Dropout(0.5)`` per hidden layer, then a last ``Linear``."""
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(widths[:-1]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU(), nn.Dropout(0.5)]
    return nn.Sequential(*layers, nn.Linear(widths[-2], widths[-1]))


def _transformer(d_model: int, layers: int) -> nn.Module:
    layer = nn.TransformerEncoderLayer(d_model, 4, 4 * d_model, dropout=0.1, batch_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


def convert_models(
    scale: float = 1.0,
) -> dict[str, tuple[Callable[[], nn.Module], torch.Tensor]]:
    """The stock torch models of :func:`bench_convert` with an input batch each; ``scale``
    shrinks their batches and widths (for tests)."""

    def n(size: int) -> int:
        return max(2, int(size * scale))

    return {
        "MLP 64-256-128-10, batch 64": (
            lambda: _mlp_torch([64, n(256), n(128), 10]),
            torch.randn(n(64), 64),
        ),
        "nn.TransformerEncoder, 2 layers, d_model 256, batch 16x128": (
            lambda: _transformer(4 * n(64), 2),
            torch.randn(n(16), n(128), 4 * n(64)),
        ),
        "MLP 1024-4096-4096-10, batch 256": (
            lambda: _mlp_torch([1024, n(4096), n(4096), 10]),
            torch.randn(n(256), 1024),
        ),
    }


def _train_stepper(model: nn.Module, inputs: Any) -> Callable[[], None]:
    """One training step of ``model`` on ``inputs``: Adam (lr 1e-4), loss the mean square of
    the main output (the logits of a Hugging Face model)."""
    from dropkit.experiments.real_models import call, main_output

    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        main_output(call(model, inputs)).square().mean().backward()  # type: ignore[no-untyped-call]
        optimizer.step()

    return step


def _time_convert(
    name: str, model: nn.Module, inputs: Any, rounds: int, functional: bool = False
) -> ConvertRow:
    """Training steps of ``model`` and of its converted copy, interleaved, after checking that
    the two give bit-identical outputs in eval mode (the same arithmetic but for dropout)."""
    from dropkit import convert
    from dropkit.experiments.real_models import call, main_output

    converted, report = convert(model, inputs, functional=functional, return_report=True)
    model.eval()
    converted.eval()
    with torch.no_grad():
        same = torch.equal(main_output(call(model, inputs)), main_output(call(converted, inputs)))
    if not same:
        raise RuntimeError(
            f"bench_convert: {name}: the converted model's eval outputs differ from the torch "
            "model's, so their training steps would not do the same work"
        )
    times = _interleaved(
        {"torch": _train_stepper(model, inputs), "converted": _train_stepper(converted, inputs)},
        rounds,
    )
    return ConvertRow(name, report.count, times["torch"] * 1e3, times["converted"] * 1e3)


def bench_convert(*, rounds: int = 9, scale: float = 1.0) -> list[ConvertRow]:
    """Training steps (Adam, loss: mean square of the output) of stock torch models with
    ``nn.Dropout``, before and after ``dropkit.convert``; steps of the two alternate.

    The models: the engine issue's small MLP (dropout 0.5), torch's own ``TransformerEncoder``
    (dropout 0.1; its attention-weight dropout is inside ``MultiheadAttention``, which convert
    leaves alone) and a wide MLP whose step is dominated by matrix products.
    """
    rows = []
    for name, (make, x) in convert_models(scale).items():
        torch.manual_seed(0)
        rows.append(_time_convert(name, make(), x, rounds))
    return rows


def real_convert_models(
    scale: float = 1.0,
) -> dict[str, tuple[str, Callable[[], tuple[nn.Module, Any]]]]:
    """The models of :func:`bench_convert_real`, by short name: a label and a builder that
    returns the model and an input batch (see :mod:`dropkit.experiments.real_models`).
    ``scale`` shrinks batches, sequences, widths and depths (for tests; VGG-11 keeps its
    4096-wide classifier)."""
    from dropkit.experiments import real_models as rm

    def n(size: int) -> int:
        return max(2, int(size * scale))

    width, batch, seq, layers = 4 * n(64), n(8), n(128), n(4)
    text = f"{width} wide, {layers} layers, batch {batch}x{seq}"
    vit_width, vit_depth, image = 6 * n(64), n(12), max(32, n(64))
    return {
        "nn-transformer-encoder": (
            f"nn.TransformerEncoder ({width} wide, 2 layers, batch {n(16)}x{seq})",
            lambda: (_transformer(width, 2), torch.randn(n(16), seq, width)),
        ),
        "bert": (
            f"HF BERT, sdpa attention ({text})",
            functools.partial(
                rm.bert, batch=batch, seq=seq, hidden=width, layers=layers, intermediate=4 * width
            ),
        ),
        "bert-eager": (
            f"HF BERT, eager attention ({text})",
            functools.partial(
                rm.bert,
                batch=batch,
                seq=seq,
                hidden=width,
                layers=layers,
                intermediate=4 * width,
                attention="eager",
            ),
        ),
        "gpt2": (
            f"HF GPT-2 ({text})",
            functools.partial(rm.gpt2, batch=batch, seq=seq, hidden=width, layers=layers),
        ),
        "timm-vit": (
            f"timm ViT-S/16 ({vit_width} wide, {vit_depth} blocks), {image}x{image}, batch {batch}",
            functools.partial(
                rm.timm_model,
                "vit_small_patch16_224",
                batch=batch,
                size=image,
                img_size=image,
                embed_dim=vit_width,
                depth=vit_depth,
                num_heads=6,
                drop_rate=0.1,
                proj_drop_rate=0.1,
                attn_drop_rate=0.1,
            ),
        ),
        "tv-vgg11": (
            f"torchvision VGG-11, {image}x{image}, batch {batch}",
            functools.partial(rm.torchvision_model, "vgg11", batch=batch, size=image),
        ),
    }


def bench_convert_real(
    *,
    rounds: int = 12,
    scale: float = 1.0,
    models: Sequence[str] | None = None,
    threads: int | None = 1,
    functional: bool = False,
) -> tuple[list[ConvertRow], dict[str, str]]:
    """Training steps of models people train, before and after ``dropkit.convert``.

    Each model (:func:`real_convert_models`; ``models`` picks some by short name) is built with
    torch's RNG seeded, converted (a deep copy), checked to give bit-identical eval outputs, and
    then its training steps (Adam, lr 1e-4, loss: mean square of the main output) alternate
    with the converted copy's: a warm-up step each, then ``rounds`` timed rounds, median kept.
    ``threads`` sets torch's intra-op threads for the run (None: leave them); a thread count
    that changes during the run is an error. With ``functional``, each model gets a second row,
    labelled ``(functional=True)``, timed against torch again with ``convert(functional=True)``
    (torch's functional and attention dropout routed through dropkit's too).

    Returns the rows, labelled, and the models skipped with the reason (a library that is not
    installed or does not import), label -> reason.
    """
    from dropkit.experiments.real_models import ModelUnavailable

    table = real_convert_models(scale)
    unknown = sorted(set(models or ()) - set(table))
    if unknown:
        raise ValueError(
            f"bench_convert_real: unknown models {unknown}; expected some of {sorted(table)}"
        )
    before = torch.get_num_threads()
    # Launching the CPU kernels' thread pool (numba's, on the OpenMP runtime torch shares) sets
    # torch's thread count to numba's; launch it before setting the count, not mid-run.
    DF.dropout(torch.zeros(1 << 20), 0.5)
    wanted = threads if threads is not None else before
    torch.set_num_threads(wanted)
    rows: list[ConvertRow] = []
    skipped: dict[str, str] = {}
    try:
        for key, (label, make) in table.items():
            if models is not None and key not in models:
                continue
            torch.manual_seed(0)
            try:
                model, inputs = make()
            except ModelUnavailable as error:
                skipped[label] = str(error)
                continue
            rows.append(_time_convert(label, model, inputs, rounds))
            if functional:
                rows.append(
                    _time_convert(f"{label} (functional=True)", model, inputs, rounds, True)
                )
            if torch.get_num_threads() != wanted:
                raise RuntimeError(
                    f"bench_convert_real: torch's thread count went from {wanted} to "
                    f"{torch.get_num_threads()} while timing {label}; its times are not at "
                    f"{wanted} thread(s)"
                )
    finally:
        torch.set_num_threads(before)
    return rows, skipped


def bench_fused(
    *, shape: tuple[int, ...] = (16, 512, 1024), p: float = 0.1, rounds: int = 7
) -> dict[str, dict[str, float]]:
    """``residual + dropout(x + bias)``: dropkit's fused op vs the eager torch expression.

    Returns median milliseconds per pass ("forward", "forward+backward") per contender.
    """
    x = torch.randn(shape)
    bias = torch.randn(shape[-1])
    residual = torch.randn(shape)

    def eager(x: torch.Tensor, b: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return r + torch.nn.functional.dropout(x + b, p)

    def fused(x: torch.Tensor, b: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return DF.bias_dropout_add(x, b, r, p)

    results: dict[str, dict[str, float]] = {}
    forward = _interleaved(
        {
            "torch eager": functools.partial(eager, x, bias, residual),
            "dropkit fused": functools.partial(fused, x, bias, residual),
        },
        rounds,
    )
    results["forward"] = {k: v * 1e3 for k, v in forward.items()}
    xs, bs, rs = (t.clone().requires_grad_() for t in (x, bias, residual))
    grad = torch.ones(shape)

    def step(op: Callable[..., torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            xs.grad = bs.grad = rs.grad = None
            op(xs, bs, rs).backward(grad)  # type: ignore[no-untyped-call]

        return run

    both = _interleaved({"torch eager": step(eager), "dropkit fused": step(fused)}, rounds)
    results["forward+backward"] = {k: v * 1e3 for k, v in both.items()}
    return results


def mc_cnn() -> nn.Module:
    """The CNN of the Monte Carlo benchmark (the common small-image shape)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout2d(0.25),
        nn.Flatten(),
        nn.Linear(8192, 512),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(512, 10),
    )


def bench_mc(
    *, samples: int = 20, batch: int = 64, rounds: int = 5, model: nn.Module | None = None
) -> dict[str, float]:
    """Median seconds for S Monte Carlo passes over ``batch`` 3x32x32 inputs, three ways.

    ``train() + loop``: the common recipe (``model.train()``, then S forward passes under
    ``no_grad``); ``replicate``: ``dropkit.mc.predict`` with the input replicated S times;
    ``predict (shared prefix)``: ``dropkit.mc.predict`` computing the part before the first
    dropout once.
    """
    from dropkit.mc import predict

    torch.manual_seed(0)
    net = model if model is not None else mc_cnn()
    x = torch.randn(batch, 3, 32, 32)

    def loop() -> None:
        net.train()
        with torch.no_grad():
            torch.stack([net(x) for _ in range(samples)])
        net.eval()

    contenders: dict[str, Callable[[], object]] = {
        "train() + loop": loop,
        "replicate": functools.partial(predict, net, x, samples, share_prefix=False),
        "predict (shared prefix)": functools.partial(predict, net, x, samples),
    }
    return _interleaved(contenders, rounds)
