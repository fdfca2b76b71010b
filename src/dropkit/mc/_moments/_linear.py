"""Linear maps: ``Linear``, convolutions and matrix products carry the mean exactly and the
variance through the squared weights (independent inputs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as torch_F

from dropkit.mc._moments._mode import Propagation, arg, moment_rule, replace

__all__: list[str] = []

_T = torch.Tensor


@moment_rule(
    torch_F.linear,
    torch_F.conv1d,
    torch_F.conv2d,
    torch_F.conv3d,
    torch_F.conv_transpose1d,
    torch_F.conv_transpose2d,
    torch_F.conv_transpose3d,
)
def _weighted(
    prop: Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``func(input, weight, bias, ...)`` linear in ``input``: Linear, conv, conv_transpose."""
    x, weight = args[0], arg(args, kwargs, 1, "weight", None)
    bias = arg(args, kwargs, 2, "bias", None)
    if prop.random(weight) or prop.random(bias):
        raise prop.unsupported(func, "weights that carry dropout noise")
    mean = func(*args, **kwargs)
    vargs, vkwargs = replace(args, kwargs, 1, "weight", prop.square(weight))
    vargs, vkwargs = replace(vargs, vkwargs, 2, "bias", None)
    vargs = (prop.zvar(x), *vargs[1:])
    return prop.bind(mean, func(*vargs, **vkwargs))


@moment_rule(torch.matmul, torch.mm, torch.bmm, _T.matmul, _T.mm, _T.bmm, _T.__matmul__)
def _matmul(
    prop: Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    a, b = args[0], arg(args, kwargs, 1, "other", kwargs.get("mat2"))
    if prop.random(a) and prop.random(b):
        raise prop.unsupported(func, "a product of two noisy tensors")
    mean = func(a, b)
    var = func(prop.zvar(a), b * b) if prop.random(a) else func(a * a, prop.zvar(b))
    return prop.bind(mean, var)
