"""Normalization: BatchNorm in eval mode is linear; LayerNorm and RMSNorm use normalization
statistics fixed at their expected values (an approximation)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as torch_F

from dropkit.mc._moments._mode import Propagation, arg, moment_rule, ntuple

__all__: list[str] = []


@moment_rule(torch_F.batch_norm)
def _batch_norm(
    prop: Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    x = args[0]
    running_var = arg(args, kwargs, 2, "running_var", None)
    weight = arg(args, kwargs, 3, "weight", None)
    training = bool(arg(args, kwargs, 5, "training", False))
    eps = float(arg(args, kwargs, 7, "eps", 1e-5))
    if training or running_var is None:
        raise prop.unsupported(func, "batch statistics; BatchNorm must be in eval mode with stats")
    if prop.random(weight):
        raise prop.unsupported(func, "noisy weights")
    mean = func(*args, **kwargs)
    scale = (running_var + eps).reciprocal()
    if weight is not None:
        scale = scale * weight * weight
    shape = [1] * x.dim()
    shape[1] = -1
    return prop.bind(mean, prop.zvar(x) * scale.reshape(shape))


@moment_rule(torch_F.layer_norm)
def _layer_norm(
    prop: Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """LayerNorm with the feature mean and variance fixed at their expectations.

    ``E[s^2] = mean((m - mean(m))^2) + (1 - 1/D) mean(v)`` under independence; the output is
    ``(x - mean(x)) / sqrt(E[s^2] + eps)``, linear given that scale. The noise in the
    statistics themselves is ignored, which errs as D gets small.
    """
    x = args[0]
    shape = arg(args, kwargs, 1, "normalized_shape", None)
    weight, bias = arg(args, kwargs, 2, "weight", None), arg(args, kwargs, 3, "bias", None)
    eps = float(arg(args, kwargs, 4, "eps", 1e-5))
    if prop.random(weight) or prop.random(bias):
        raise prop.unsupported(func, "noisy weights")
    dims = tuple(range(-len(ntuple(shape, 1)), 0))
    d = math.prod(x.shape[i] for i in dims)
    v = prop.zvar(x)
    centered = x - x.mean(dims, keepdim=True)
    spread = centered.square().mean(dims, keepdim=True) + v.mean(dims, keepdim=True) * (1 - 1 / d)
    inv = (spread + eps).rsqrt()
    mean = centered * inv
    var = (v * (1 - 2 / d) + v.mean(dims, keepdim=True) / d) * inv * inv
    if weight is not None:
        mean, var = mean * weight, var * weight * weight
    if bias is not None:
        mean = mean + bias
    return prop.bind(mean, var)


@moment_rule(torch_F.rms_norm)
def _rms_norm(
    prop: Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """RMSNorm with the mean square fixed at its expectation ``mean(m^2 + v)``."""
    x = args[0]
    shape = arg(args, kwargs, 1, "normalized_shape", None)
    weight = arg(args, kwargs, 2, "weight", None)
    eps = arg(args, kwargs, 3, "eps", None)
    eps = torch.finfo(x.dtype).eps if eps is None else float(eps)
    if prop.random(weight):
        raise prop.unsupported(func, "noisy weights")
    dims = tuple(range(-len(ntuple(shape, 1)), 0))
    v = prop.zvar(x)
    inv = ((x.square() + v).mean(dims, keepdim=True) + eps).rsqrt()
    mean, var = x * inv, v * inv * inv
    if weight is not None:
        mean, var = mean * weight, var * weight * weight
    return prop.bind(mean, var)
