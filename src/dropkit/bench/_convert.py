"""Models before and after :func:`dropkit.convert`: stock torch models and real ones."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

import dropkit.functional as DF
from dropkit.bench._timing import interleaved

__all__ = [
    "ConvertRow",
    "bench_convert",
    "bench_convert_real",
    "convert_models",
    "real_convert_models",
]


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
    times = interleaved(
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
