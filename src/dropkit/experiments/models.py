"""Models by name, with dropout in the usual places; one rate knob, per-layer multipliers.

- ``mlp``: Linear-ReLU-Dropout blocks (default hidden sizes 256-128), then the classifier.
- ``cnn``: two conv blocks (conv, ReLU, max-pool, channel dropout), then a dropout-regularized
  classifier; 1-D or 2-D by the input's shape.
- ``rescnn``: a 32-channel stem, three residual blocks whose branches are dropped by DropPath at
  the usual linearly increasing rates (the last block at the full rate), global pooling, a
  classifier.

Every model's dropout layers are, in forward order, the "dropout sites"; ``layer_scale`` scales
the compared rate per site (``rate_i = rate * layer_scale[i]``), so early layers can drop less.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from dropkit import dropout_layers, layer_spec
from dropkit import nn as dk_nn
from dropkit._registry import channel_layer
from dropkit.functional import inverted_scale
from dropkit.kernels import select

__all__ = [
    "CONV_VARIANTS",
    "MODELS",
    "SlicedDropout",
    "build_model",
    "conv_variants",
    "count_sites",
    "dropout_sites",
    "set_rate",
]

MODELS: tuple[str, ...] = ("mlp", "cnn", "rescnn")


class SlicedDropout(dk_nn.Dropout):
    """Element dropout on ``(S, ...)``, one mask stream per run, seeded from its generator.

    A :class:`dropkit.nn.Dropout` to everything that reads the registry of dropout layers
    (:func:`dropout_sites`, ``mc``, the doctor); only where its masks come from differs.
    """

    def __init__(self, generators: Sequence[torch.Generator], p: float = 0.0) -> None:
        super().__init__(p)
        self._generators = list(generators)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        # Run s's mask is dk_F.dropout(x[s], p, seed=seeds[s])'s, seeds[s] drawn from its
        # generator as torch.randint(0, 2**62, ()) draws: the stream's keep mask, scaled. One
        # multiply by the stacked masks gives the same bits as the S calls and their stack
        # (dropout multiplies by the scaled mask), with one autograd node instead of S slices,
        # S calls and a stack.
        if x.dim() < 1 or x.shape[0] != len(self._generators):
            raise ValueError(
                f"SlicedDropout: expected an input of {len(self._generators)} stacked runs "
                f"(dim 0), got shape {list(x.shape)}"
            )
        scale = inverted_scale(self.p)
        backend = select(x)
        if (
            backend.name == "numba"
            and type(x) is torch.Tensor
            and x.dtype in (torch.float32, torch.float64)
            and x.numel()
            and not torch._C._len_torch_dispatch_stack()
        ):
            # The seeds drawn into one int64 tensor that the kernel reads, S masks in one call.
            for generator, cell in zip(self._generators, self._cells(), strict=True):
                cell.random_(0, 2**62, generator=generator)
            masks: torch.Tensor = backend.drawn_scaled_mask(  # type: ignore[attr-defined]
                x.shape, x.numel(), self.p, self._seeds, 0, scale, x.dtype
            )
            return x * masks
        seeds = [int(torch.randint(0, 2**62, (), generator=g)) for g in self._generators]
        shape = tuple(x.shape[1:])
        masks = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        for run, seed in enumerate(seeds):  # each run's mask written in place, no stacking copy
            backend.scaled_mask(shape, self.p, seed, scale, x.dtype, x.device, out=masks[run])
        return x * masks

    def _cells(self) -> list[torch.Tensor]:
        """One 0-dim view per run into ``self._seeds``, the int64 seeds the kernel reads (a
        deep copy copies them as views of the copy's ``_seeds``)."""
        cells: list[torch.Tensor] | None = getattr(self, "_seed_cells", None)
        if cells is None:
            self._seeds = torch.zeros(len(self._generators), dtype=torch.int64)
            cells = self._seed_cells = list(self._seeds)
        return cells

    def extra_repr(self) -> str:
        return f"p={self.p}, runs={len(self._generators)}"


#: The experiment's choices for the dropout in the cnn's conv blocks (a setting, stored with the
#: results): whole channels (the default), single elements (weak on conv maps; the doctor's
#: DK003), or DropBlock (2-D inputs).
CONV_VARIANTS = ("channel", "element", "block")


def conv_variants(input_shape: tuple[int, ...]) -> tuple[str, ...]:
    """The :data:`CONV_VARIANTS` the cnn offers for inputs of ``input_shape`` (DropBlock: 2-D).

    Example:
        >>> conv_variants((1, 28, 28)), conv_variants((3, 100))
        (('channel', 'element', 'block'), ('channel', 'element'))
    """
    return tuple(v for v in CONV_VARIANTS if v != "block" or len(input_shape) == 3)


def dropout_sites(model: nn.Module) -> list[nn.Module]:
    """The model's dropout layers (those dropkit's registry knows) in registration order."""
    return [module for _, module, _ in dropout_layers(model)]


def set_rate(model: nn.Module, rate: float, layer_scale: Sequence[float] | None = None) -> None:
    """Set every dropout site's ``p`` to ``rate`` times its scale (DropPath: its schedule)."""
    sites = dropout_sites(model)
    scales = list(layer_scale) if layer_scale else [1.0] * len(sites)
    if len(scales) != len(sites):
        raise ValueError(
            f"layer_scale has {len(scales)} entries but the model has {len(sites)} dropout "
            "layers; give one multiplier per layer"
        )
    paths = [s for s in sites if isinstance(s, dk_nn.DropPath)]
    schedule = dk_nn.drop_path_rates(1.0, len(paths)) if paths else []
    path_rates = dict(zip(map(id, paths), schedule, strict=True))
    for site, scale in zip(sites, scales, strict=True):
        p = rate * scale * path_rates.get(id(site), 1.0)
        if not 0.0 <= p < 1.0:  # never clamped: the table would report a rate that was not used
            raise ValueError(
                f"set_rate: rate {rate:g} x layer scale {scale:g} gives p = {p:g}; every rate "
                "times every scale must be in [0, 1)"
            )
        spec = layer_spec(site)
        setattr(site, spec.rate_attr if spec else "p", p)


def count_sites(name: str, hidden: Sequence[int] = (256, 128)) -> int:
    """How many dropout layers model ``name`` has (independent of the data's shape).

    Example:
        >>> count_sites("mlp", (64, 32, 16)), count_sites("cnn"), count_sites("rescnn")
        (3, 3, 3)
    """
    return len(dropout_sites(build_model(name, (1, 8), 2, hidden=hidden)))


def _mlp(input_shape: tuple[int, ...], num_classes: int, hidden: Sequence[int]) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU(), dk_nn.Dropout(0.0)]
        width = size
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def _spatial(input_shape: tuple[int, ...]) -> tuple[type[nn.Module], ...]:
    # the channel dropout of a batch of these inputs, as the registry knows it
    channel_dropout = channel_layer(len(input_shape) + 1)
    if len(input_shape) == 2:
        return nn.Conv1d, nn.MaxPool1d, channel_dropout, nn.BatchNorm1d, nn.AdaptiveAvgPool1d
    if len(input_shape) == 3:
        return nn.Conv2d, nn.MaxPool2d, channel_dropout, nn.BatchNorm2d, nn.AdaptiveAvgPool2d
    raise ValueError(
        f"convolutional models need inputs (C, L) or (C, H, W), got {input_shape}; use --model mlp"
    )


def _cnn(
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden: Sequence[int],
    variant: str = "channel",
) -> nn.Module:
    conv, pool, channel_dropout, _, _ = _spatial(input_shape)
    if variant not in conv_variants(input_shape):
        raise ValueError("variant 'block' (DropBlock) needs 2-D inputs (C, H, W)")
    drop: type[nn.Module] = {
        "channel": channel_dropout,
        "element": dk_nn.Dropout,
        "block": dk_nn.DropBlock2d,
    }[variant]
    kwargs = {"block_size": 3} if variant == "block" else {}
    channels = input_shape[0]
    widths = (32, 64)
    layers: list[nn.Module] = []
    for width in widths:
        layers += [conv(channels, width, 3, padding=1), nn.ReLU(), pool(2), drop(0.0, **kwargs)]
        channels = width
    body = nn.Sequential(*layers)
    with torch.no_grad():
        flat = body(torch.zeros(1, *input_shape)).numel()
    head_width = hidden[0] if hidden else 128
    head = nn.Sequential(
        nn.Flatten(),
        nn.Linear(flat, head_width),
        nn.ReLU(),
        dk_nn.Dropout(0.0),
        nn.Linear(head_width, num_classes),
    )
    return nn.Sequential(body, head)


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int, spatial: tuple[type[nn.Module], ...]) -> None:
        super().__init__()
        conv, _, _, norm, _ = spatial
        self.branch = nn.Sequential(
            conv(channels, channels, 3, padding=1),
            norm(channels),
            nn.ReLU(),
            conv(channels, channels, 3, padding=1),
            norm(channels),
        )
        self.drop_path = dk_nn.DropPath(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.drop_path(self.branch(x)))


def _rescnn(input_shape: tuple[int, ...], num_classes: int, hidden: Sequence[int]) -> nn.Module:
    spatial = _spatial(input_shape)
    conv, _, _, norm, global_pool = spatial
    width = 32  # fixed: ``hidden`` sizes the MLP and the CNN's head, not these convolutions
    return nn.Sequential(
        conv(input_shape[0], width, 3, padding=1),
        norm(width),
        nn.ReLU(),
        *(_ResidualBlock(width, spatial) for _ in range(3)),
        global_pool(1),
        nn.Flatten(),
        nn.Linear(width, num_classes),
    )


_BUILDERS = {"mlp": _mlp, "cnn": _cnn, "rescnn": _rescnn}


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    hidden: Sequence[int] = (256, 128),
    rate: float = 0.0,
    layer_scale: Sequence[float] | None = None,
    variant: str = "channel",
) -> nn.Module:
    """Build model ``name`` for inputs of ``input_shape`` with its dropout at ``rate``.

    Example:
        >>> from dropkit.experiments.models import build_model, dropout_sites
        >>> model = build_model("mlp", (40,), 10, rate=0.2)
        >>> [site.p for site in dropout_sites(model)]
        [0.2, 0.2]
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; expected one of {list(MODELS)}")
    if variant not in CONV_VARIANTS:
        raise ValueError(f"unknown dropout variant {variant!r}; expected one of {CONV_VARIANTS}")
    if name == "cnn":
        model = _cnn(input_shape, num_classes, hidden, variant)
    else:
        model = _BUILDERS[name](input_shape, num_classes, hidden)
    set_rate(model, rate, layer_scale)
    return model
