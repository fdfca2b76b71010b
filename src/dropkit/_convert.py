"""Swap the dropout layers in a model for dropkit's, and say what was left to torch and why."""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import re
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar, overload

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from dropkit import nn as dk_nn
from dropkit._registry import Unmappable, layer_spec, layer_specs, variant
from dropkit._routing import route_functional
from dropkit._state import state_kept
from dropkit.nn import with_peer_names

__all__ = ["ConvertReport", "convert"]

_logger = logging.getLogger("dropkit")

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def _swappable() -> str:
    """The registered layers with a dropkit equivalent, by library: "torch's Dropout, ..."."""
    by_library: dict[str, list[str]] = {}
    for name, spec in layer_specs().items():
        if spec.to_dropkit is not None:
            by_library.setdefault(name.partition(".")[0], []).append(name.rpartition(".")[2])
    return "; ".join(f"{lib}'s {', '.join(names)}" for lib, names in by_library.items())


@dataclass(frozen=True)
class ConvertReport:
    """What :func:`convert` did: the layers it swapped and what it left to torch, with why.

    ``swapped`` counts the swapped layers by ``"old -> new"`` class; ``maybe_unused`` counts those
    of them whose parent may pass their rate to a function instead of calling them (without an
    example input; with one, ``never_ran`` counts the swapped layers that did not run on it,
    which ``swapped`` leaves out); ``left`` holds one line per group of dropout left as it was.
    With ``functional=True``, ``hooks`` holds the handles of the two forward hooks that route
    torch's functional dropout through dropkit's (``remove()`` on both undoes it) and, with an
    example input, ``routed`` counts the calls routed in one training-mode forward, by function.
    """

    swapped: Counter[str] = field(default_factory=Counter)
    maybe_unused: Counter[str] = field(default_factory=Counter)
    never_ran: Counter[str] = field(default_factory=Counter)
    left: list[str] = field(default_factory=list)
    routed: Counter[str] = field(default_factory=Counter)
    hooks: tuple[RemovableHandle, ...] = ()
    functional_ran: bool | None = None  # None: no example input, so not known

    @property
    def functional(self) -> bool:
        """Whether functional dropout is routed through dropkit (``convert(functional=True)``)."""
        return bool(self.hooks)

    @property
    def count(self) -> int:
        """The number of layers swapped (each instance once, however often it is reused)."""
        return sum(self.swapped.values())

    def __str__(self) -> str:
        lines = [f"convert: swapped {self.count} dropout layer{'' if self.count == 1 else 's'}"]
        lines += [f"  {n} x {what}" for what, n in sorted(self.swapped.items())]
        for what, n in sorted(self.never_ran.items()):
            lines.append(f"  (and {n} x {what} that did not run on the example input)")
        for owner, n in sorted(self.maybe_unused.items()):
            lines.append(
                f"  {n} of them inside {owner}, whose forward may pass the rate to "
                "scaled_dot_product_attention instead of calling the layer"
            )
        if self.functional and self.functional_ran is None:
            lines.append("functional dropout routed through dropkit at run time")
        elif self.functional:
            calls = sum(self.routed.values())
            lines.append(
                f"routed {calls} functional dropout call{'' if calls == 1 else 's'} per forward "
                "through dropkit"
            )
            lines += [
                f"  {n} x {name} -> dropkit.functional.{name.rpartition('.')[2]}"
                for name, n in sorted(self.routed.items())
            ]
        if self.left:
            lines.append("left to torch:")
            lines += [f"  {line}" for line in self.left]
        return "\n".join(lines)


def _library(cls: type) -> str:
    return cls.__module__.partition(".")[0]


def _name(cls: type) -> str:
    if _library(cls) == "dropkit":  # a layer under a peer's names: the dropkit class it extends
        cls = next((c for c in cls.__mro__ if getattr(dk_nn, c.__name__, None) is c), cls)
    return f"{_library(cls)}'s {cls.__qualname__}"


@functools.cache
def _source(cls: type) -> str | None:
    """The source of the methods of a class and its non-torch bases, ``__init__`` excepted (what
    runs when the model does), or None if any of it is unavailable."""
    parts = []
    for base in cls.__mro__:
        if base is object or _library(base) == "torch":
            continue
        for name, member in vars(base).items():
            if name == "__init__" or not inspect.isfunction(member):
                continue
            try:
                parts.append(inspect.getsource(member))
            except (OSError, TypeError):
                return None
    return "\n".join(parts)


def _use(parent: nn.Module, name: str, rate_attr: str) -> Literal["called", "rate", "both"]:
    """How ``parent``'s code uses its child layer ``name``: calls it, only reads its rate (Hugging
    Face attention passes ``self.dropout.p`` to ``scaled_dot_product_attention``), or both
    (timm's attention calls it on its eager path only). Unknown code counts as a call."""
    cls: type = type(parent)
    source = _source(cls) if name.isidentifier() else None
    if source is None:
        return "called"
    called = re.search(rf"self\.{name}\s*\(", source) is not None
    rate = re.search(rf"self\.{name}\.{rate_attr}\b", source) is not None
    if rate and not called:
        return "rate"
    return "both" if rate else "called"


def _rates_in_functions(model: nn.Module) -> Counter[tuple[str, str]]:
    """``(class, attribute)`` of the float rates that modules read as they run, to pass to
    torch's functions (``F.dropout(x, self.drop_rate, self.training)``, ``attention_dropout`` of
    Llama's attention): dropout that convert cannot swap, since it is no layer."""
    found: Counter[tuple[str, str]] = Counter()
    for module in model.modules():
        if _library(type(module)) in ("torch", "dropkit") or layer_spec(module) is not None:
            continue
        cls: type = type(module)
        source = _source(cls) or ""
        for attr, value in vars(module).items():
            if (
                "drop" in attr.lower()
                and isinstance(value, float | int)
                and not isinstance(value, bool)
                and 0 < value < 1
                and re.search(rf"self\.{attr}\b", source)
            ):
                found[type(module).__qualname__, attr] += 1
    return found


def _swap(module: nn.Module) -> nn.Module | None:
    """The dropkit layer for ``module``, or None if its exact class has none; raises
    :class:`Unmappable` (saying why) when this instance's settings have none."""
    spec = layer_spec(module, exact=True)
    if spec is None or spec.to_dropkit is None:
        return None
    new = with_peer_names(spec.to_dropkit(module), module)
    new.train(module.training)
    lost = [
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and name != "training" and not hasattr(new, name)
    ]
    if lost:
        warnings.warn(
            f"convert: {_name(type(module))} has {', '.join(map(repr, lost))}, which "
            f"{_name(type(new))} does not keep; setting {'it' if len(lost) == 1 else 'them'} on "
            "the converted layer changes nothing",
            RuntimeWarning,
            stacklevel=3,
        )
    return new


def _swap_root_inplace(root: nn.Module, new: nn.Module) -> None:
    """Turn ``root`` itself into ``new``: the caller's object stays the one in use, hooks kept."""
    hooks = {k: v for k, v in vars(root).items() if k.startswith("_") and "hook" in k}
    vars(root).clear()
    vars(root).update(vars(new))
    vars(root).update(hooks)
    root.__class__ = type(new)


@overload
def convert(
    model: ModuleT,
    example_input: object = None,
    *,
    inplace: bool = False,
    functional: bool = False,
    return_report: Literal[False] = False,
) -> ModuleT: ...


@overload
def convert(
    model: ModuleT,
    example_input: object = None,
    *,
    inplace: bool = False,
    functional: bool = False,
    return_report: Literal[True],
) -> tuple[ModuleT, ConvertReport]: ...


def convert(
    model: ModuleT,
    example_input: object = None,
    *,
    inplace: bool = False,
    functional: bool = False,
    return_report: bool = False,
) -> ModuleT | tuple[ModuleT, ConvertReport]:
    """Replace the dropout layers in ``model`` by their dropkit equivalents.

    Swapped, with the same rate, options and training flag: torch's ``nn.Dropout``,
    ``Dropout1d/2d/3d``, ``AlphaDropout`` and ``FeatureAlphaDropout``; timm's ``DropPath``
    (``scale_by_keep`` kept) and torchvision's ``StochasticDepth`` (``mode`` kept) become
    :class:`dropkit.nn.DropPath`; timm's ``DropBlock2d`` and torchvision's ``DropBlock2d/3d``
    become :class:`dropkit.nn.DropBlock2d/3d` with the options that give their semantics
    (the paper's gamma, their block placement and clipping, timm's ``couple_channels``,
    ``gamma_scale`` and ``with_noise``, rescaling by the batch's kept fraction with their
    ``eps``; see :func:`dropkit.functional.drop_block2d`); where torchvision raises on an even
    block size, dropkit's layer runs. Exact types only: a subclass may override ``forward``. An
    instance used in several places is swapped once and the one new layer takes every place.
    The masks come from dropkit's stream: the same distribution, not the same draws.

    Left to torch, and said so in the report: dropout inside ``nn.MultiheadAttention`` and
    between an RNN's layers (fused kernels), rates a module passes to torch's functions
    (``F.dropout``, ``scaled_dot_product_attention``: Hugging Face attention reads
    ``self.dropout.p`` and never calls that layer, which is then left as it is), layers whose
    settings dropkit's equivalent rejects (a DropBlock's ``p`` above 1; timm's DropBlock from
    before ``couple_channels``), and subclasses.

    With ``functional=True`` that functional dropout runs as dropkit's too (opt-in; off by
    default): while the model runs with some module in training mode, a ``TorchFunctionMode``
    (entered by a forward pre-hook, left by a forward hook that runs on an exception too) turns
    ``F.dropout``, ``dropout1d/2d/3d``, ``alpha_dropout`` and ``feature_alpha_dropout`` calls that
    drop into the :mod:`dropkit.functional` function of the same name and arguments, and
    ``scaled_dot_product_attention`` with ``dropout_p > 0`` (Hugging Face and timm attention,
    ``nn.MultiheadAttention`` through ``F.multi_head_attention_forward``) into
    :func:`dropkit.functional.scaled_dot_product_attention`. Calls that do not drop go to torch
    untouched, and in eval mode the mode is not entered, so eval outputs stay torch's, bit for
    bit. The report's ``hooks`` remove it; with ``example_input`` it counts the calls routed.

    The report is logged on the ``dropkit`` logger at INFO level (``return_report=True`` returns
    it too); a model with nothing to swap gives a warning. Which layers run is only known by
    running the model: with ``example_input`` the model runs once in training mode under
    ``torch.no_grad`` (training flags, buffers and torch's RNG state are put back) and the
    report counts the swapped layers that ran, apart from those that did not (a block's
    DropPath that only acts when the block has a skip connection).

    Note that :class:`torch.nn.Dropout2d` treats a 3D input as ``(N, C, L)`` with a warning;
    the dropkit layer raises instead, naming :class:`dropkit.nn.Dropout1d`.

    Args:
        model: the model to convert.
        example_input: optional, an input the model accepts: a tensor, a tuple of positional
            inputs or a dict of keyword inputs (as a Hugging Face model takes ``input_ids=``).
        inplace: modify ``model`` itself (a dropout layer passed as ``model`` becomes the dropkit
            layer in place); otherwise convert a deep copy. Default: False.
        functional: also route torch's functional dropout through dropkit's (see above).
            Default: False.
        return_report: return ``(model, report)``, a :class:`ConvertReport`. Default: False.

    Returns:
        The converted model (``model`` itself when ``inplace=True``).

    Example:
        >>> import torch
        >>> import dropkit
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.2))
        >>> dropkit.convert(model)[1]
        Dropout(p=0.2, inplace=False)
        >>> type(model[1]).__module__  # the original is untouched
        'torch.nn.modules.dropout'
        >>> _, report = dropkit.convert(model, return_report=True)
        >>> print(report)
        convert: swapped 1 dropout layer
          1 x torch's Dropout -> dropkit's Dropout
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert: expected an nn.Module, got {type(model).__name__}")
    if not isinstance(return_report, bool):
        raise TypeError(f"convert: expected return_report to be a bool, got {return_report!r}")
    if not isinstance(functional, bool):
        raise TypeError(f"convert: expected functional to be a bool, got {functional!r}")
    ran = None if example_input is None else _layers_that_run(model, example_input)
    if not inplace:
        model = copy.deepcopy(model)
    report = ConvertReport()
    root_left = None
    try:
        root = _swap(model)
    except Unmappable as error:
        root, root_left = None, str(error)
    if root is not None:
        report.swapped[f"{_name(type(model))} -> {_name(type(root))}"] += 1
        if inplace:
            _swap_root_inplace(model, root)
        else:
            model = root  # type: ignore[assignment]
    else:
        _convert_children(model, report, ran, root_left, functional)
    if functional:
        routing, hooks = route_functional(model)
        object.__setattr__(report, "hooks", hooks)
        if example_input is not None:
            _run_once(model, example_input)
            report.routed.update(routing.routed)
            routing.routed.clear()
            object.__setattr__(report, "functional_ran", bool(report.routed))
    nothing_routed = not functional or report.functional_ran is False
    if report.count + sum(report.never_ran.values()) == 0 and nothing_routed:
        warnings.warn(
            f"convert: found no dropout layer to swap ({_swappable()}); "
            "the model is returned unchanged"
            + (f"; {'; '.join(report.left)}" if report.left else ""),
            stacklevel=2,
        )
    else:
        _logger.info("%s", report)
    return (model, report) if return_report else model


def _layers_that_run(model: nn.Module, example_input: object) -> set[str]:
    """Qualified names (every name of a reused instance) of the registered layers that run in a
    training-mode forward on ``example_input``; everything is put back afterwards."""
    names: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if layer_spec(module) is not None:
            names.setdefault(id(module), []).append(name)
    ran: set[str] = set()
    modules = {id(m): m for m in model.modules()}
    handles = [
        modules[i].register_forward_hook(lambda m, a, o: ran.update(names[id(m)])) for i in names
    ]
    try:
        _run_once(model, example_input)
    finally:
        for handle in handles:
            handle.remove()
    return ran


def _run_once(model: nn.Module, example_input: object) -> None:
    """Run ``model`` once in training mode under ``torch.no_grad`` on ``example_input``; the
    training flags, the buffers and torch's RNG state are put back afterwards."""
    args: tuple[object, ...]
    if isinstance(example_input, Mapping):
        args, kwargs = (), dict(example_input)
    elif isinstance(example_input, tuple):
        args, kwargs = example_input, {}
    else:
        args, kwargs = (example_input,), {}
    with torch.random.fork_rng(devices=[]), state_kept(model), torch.no_grad():
        model.train()
        model(*args, **kwargs)


def _convert_children(
    model: nn.Module,
    report: ConvertReport,
    ran: set[str] | None,
    root_left: str | None = None,
    functional: bool = False,
) -> None:
    new_of: dict[int, nn.Module] = {}  # id of a swapped instance -> its one replacement
    names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}
    left: Counter[str] = Counter()
    seen: set[int] = set()
    spec = layer_spec(model)
    if spec is not None and float(getattr(model, spec.rate_attr, 0.0)) > 0:  # not swappable
        if root_left is not None:
            why = root_left
        elif spec.to_dropkit is None:
            why = spec.kept_because
        else:
            why = "a subclass of a dropout layer, whose forward may differ"
        left[f"{_name(type(model))}: {why}"] += 1
    for parent in list(model.modules()):
        # ``_modules`` rather than named_children(): the same instance under two names of one
        # parent must be swapped under both.
        for name, child in list(parent._modules.items()):
            if child is None:
                continue
            spec = layer_spec(child)
            if spec is None:
                continue
            first = id(child) not in seen
            seen.add(id(child))
            if id(child) in new_of:
                parent._modules[name] = new_of[id(child)]
                continue
            p = float(getattr(child, spec.rate_attr, 0.0))
            if spec.to_dropkit is None:
                routed = functional and variant(spec.variant).site == "attention"
                if first and p > 0 and not routed:
                    left[f"{_name(type(child))}: {spec.kept_because}"] += 1
                continue
            if layer_spec(child, exact=True) is not spec:
                if first:
                    left[f"{_name(type(child))}: a subclass of a dropout layer, whose forward "
                         "may differ"] += 1  # fmt: skip
                continue
            use = _use(parent, name, spec.rate_attr)
            if use == "rate":
                if first and p > 0 and not functional:
                    left[f"attention-dropout rate inside {type(parent).__qualname__} stays "
                         f"torch's: it passes self.{name}.{spec.rate_attr} to torch's attention "
                         "and never calls the layer"] += 1  # fmt: skip
                continue
            try:
                new = _swap(child)
            except Unmappable as error:
                if first and p > 0:
                    left[f"{_name(type(child))}: {error}"] += 1
                continue
            assert new is not None
            new_of[id(child)] = new
            parent._modules[name] = new
            what = f"{_name(type(child))} -> {_name(type(new))}"
            qualified = f"{names[id(parent)]}.{name}".lstrip(".")
            if ran is None:
                report.swapped[what] += 1
                if use == "both":
                    report.maybe_unused[type(parent).__qualname__] += 1
            elif qualified in ran:
                report.swapped[what] += 1
            else:
                report.never_ran[what] += 1
    for (owner, attr), n in sorted(() if functional else _rates_in_functions(model).items()):
        left[f"functional dropout rate ({attr}) inside {owner}: torch's functions are called "
             "with it, and convert swaps layers, not function calls"] += n  # fmt: skip
    report.left.extend(f"{n} x {what}" for what, n in left.items())
