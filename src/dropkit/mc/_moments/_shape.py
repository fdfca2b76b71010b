"""Ops that move, copy, select, pad or sum elements: the same op on the variances (sums add
them), and tensors made from a noisy one's shape only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as torch_F

from dropkit.mc._moments._mode import Propagation, arg, moment_rule

__all__: list[str] = []

_T = torch.Tensor


@moment_rule(
    _T.view,
    _T.view_as,
    _T.reshape,
    _T.reshape_as,
    _T.flatten,
    _T.unflatten,
    _T.permute,
    _T.transpose,
    _T.t,
    _T.contiguous,
    _T.clone,
    _T.squeeze,
    _T.unsqueeze,
    _T.__getitem__,
    _T.narrow,
    _T.select,
    _T.expand,
    _T.expand_as,
    _T.repeat,
    _T.movedim,
    _T.flip,
    _T.roll,
    _T.chunk,
    _T.split,
    _T.unbind,
    _T.to,
    _T.float,
    _T.double,
    _T.half,
    _T.bfloat16,
    _T.type_as,
    _T.detach,
    _T.swapaxes,
    torch.flatten,
    torch.reshape,
    torch.permute,
    torch.transpose,
    torch.squeeze,
    torch.unsqueeze,
    torch.cat,
    torch.concat,
    torch.concatenate,
    torch.stack,
    torch.hstack,
    torch.vstack,
    torch.chunk,
    torch.split,
    torch.unbind,
    torch.narrow,
    torch.select,
    torch.movedim,
    torch.flip,
    torch.roll,
    torch.clone,
    torch.detach,
    torch.swapaxes,
    torch_F.pixel_shuffle,
    torch_F.pixel_unshuffle,
)
def _structural(
    prop: Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Ops that move, copy or select elements: the same op on the variances."""

    def to_var(a: Any) -> Any:
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            return prop.zvar(a)
        if isinstance(a, list | tuple):
            return type(a)(to_var(e) for e in a)
        return a

    mean = func(*args, **kwargs)
    var = func(*(to_var(a) for a in args), **{k: to_var(a) for k, a in kwargs.items()})
    if isinstance(mean, torch.Tensor):
        return prop.bind(mean, var)
    for m, v in zip(mean, var, strict=True):
        prop.bind(m, v)
    return mean


@moment_rule(torch.where)
def _where(
    prop: Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    cond, a, b = args[0], arg(args, kwargs, 1, "input", None), arg(args, kwargs, 2, "other", None)
    if prop.random(cond):
        raise prop.unsupported(func, "a condition that depends on dropout noise")

    def var(t: Any) -> Any:
        return prop.zvar(t) if isinstance(t, torch.Tensor) else 0.0

    return prop.bind(func(cond, a, b), torch.where(cond, var(a), var(b)))


@moment_rule(torch_F.pad)
def _pad(
    prop: Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    x, pad = args[0], arg(args, kwargs, 1, "pad", None)
    mode = arg(args, kwargs, 2, "mode", "constant")
    mean = func(*args, **kwargs)
    var = torch_F.pad(prop.zvar(x), pad, mode, 0.0 if mode == "constant" else None)
    return prop.bind(mean, var)


@moment_rule(torch.sum, torch.mean, _T.sum, _T.mean)
def _reduction(
    prop: Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``sum`` and ``mean``: the sum of variances (divided by n^2 for the mean)."""
    x = args[0]
    mean = func(*args, **kwargs)
    var = func(prop.zvar(x), *args[1:], **kwargs)
    if getattr(func, "__name__", "") == "mean" and mean.numel():
        var = var / (x.numel() // mean.numel())
    return prop.bind(mean, var)


@moment_rule(
    torch.zeros_like,
    torch.ones_like,
    torch.empty_like,
    torch.full_like,
    _T.new_zeros,
    _T.new_ones,
    _T.new_empty,
    _T.new_full,
)
def _shape_only(
    prop: Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Tensors made from a noisy one's shape only: deterministic."""
    return func(*args, **kwargs)
