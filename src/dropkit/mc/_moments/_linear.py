"""Linear maps: ``Linear``, convolutions and matrix products carry the mean exactly and the
variance through the squared weights (independent inputs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as torch_F

from dropkit.mc._moments._mode import Propagation, arg, moment_rule

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
    """``func(input, weight, bias, ...)`` linear in ``input``: Linear, conv, conv_transpose.

    The variance is the same map of the input's variance through the squared weights, with no
    bias: ``func(Var[x], weight**2, None, ...)``.
    """
    x = args[0]
    weight: torch.Tensor = args[1] if len(args) > 1 else kwargs["weight"]
    bias = args[2] if len(args) > 2 else kwargs.get("bias")
    if prop.random(weight) or (bias is not None and prop.random(bias)):
        raise prop.unsupported(func, "weights that carry dropout noise")
    mean = func(*args, **kwargs)
    rest = {k: a for k, a in kwargs.items() if k not in ("weight", "bias")} if kwargs else kwargs
    var = func(prop.zvar(x), prop.square(weight), None, *args[3:], **rest)
    return prop.bind(mean, var)


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
