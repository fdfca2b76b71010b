"""Pooling: average pooling is linear (each window's divisor squared); max pooling folds Clark's
moments of the maximum of two Gaussians over each window's elements."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as torch_F

from dropkit.mc._moments._gaussian import max_moments
from dropkit.mc._moments._mode import Propagation, arg, moment_rule, ntuple, op_name

__all__: list[str] = []


@moment_rule(torch_F.avg_pool1d, torch_F.avg_pool2d, torch_F.avg_pool3d)
def _avg_pool(
    prop: Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Average pooling: ``Var = avg_pool(v) / D`` with ``D`` each window's divisor."""
    x = args[0]
    nd = {torch_F.avg_pool1d: 1, torch_F.avg_pool2d: 2, torch_F.avg_pool3d: 3}[func]
    mean = func(*args, **kwargs)
    ones = torch.ones((1, 1, *x.shape[-nd:]), dtype=x.dtype, device=x.device)
    averaged = func(ones, *args[1:], **kwargs)  # (real elements in the window) / D
    kernel = ntuple(arg(args, kwargs, 1, "kernel_size", None), nd)
    stride = arg(args, kwargs, 2, "stride", None)
    stride = kernel if stride is None or stride == [] or stride == () else ntuple(stride, nd)
    padding = ntuple(arg(args, kwargs, 3, "padding", 0), nd)
    ceil_mode = bool(arg(args, kwargs, 4, "ceil_mode", False))
    if nd == 1:  # avg_pool1d has no divisor_override: count on a 2-D view
        counted = torch_F.avg_pool2d(
            ones.unsqueeze(-2), (1, *kernel), (1, *stride), (0, *padding), ceil_mode, True, 1
        ).squeeze(-2)
    else:
        pool = torch_F.avg_pool2d if nd == 2 else torch_F.avg_pool3d
        counted = pool(ones, kernel, stride, padding, ceil_mode, True, 1)
    var = func(prop.zvar(x), *args[1:], **kwargs) * (averaged / counted)
    return prop.bind(mean, var)


def _window_counts(size_in: int, size_out: int, like: torch.Tensor) -> torch.Tensor:
    i = torch.arange(size_out, device=like.device)
    start = torch.div(i * size_in, size_out, rounding_mode="floor")
    end = -torch.div(-(i + 1) * size_in, size_out, rounding_mode="floor")
    return (end - start).to(like.dtype)


@moment_rule(torch_F.adaptive_avg_pool1d, torch_F.adaptive_avg_pool2d, torch_F.adaptive_avg_pool3d)
def _adaptive_avg_pool(
    prop: Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    x = args[0]
    nd = {
        torch_F.adaptive_avg_pool1d: 1,
        torch_F.adaptive_avg_pool2d: 2,
        torch_F.adaptive_avg_pool3d: 3,
    }[func]
    mean = func(*args, **kwargs)
    counts = torch.ones((), dtype=x.dtype, device=x.device)
    for d in range(nd):
        c = _window_counts(x.shape[x.dim() - nd + d], mean.shape[mean.dim() - nd + d], x)
        counts = counts.unsqueeze(-1) * c
    return prop.bind(mean, func(prop.zvar(x), *args[1:], **kwargs) / counts)


@moment_rule(torch_F.max_pool1d, torch_F.max_pool2d, torch_F.max_pool3d)
def _max_pool(
    prop: Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Max pooling: Clark's moments of the maximum, folded over each window's elements."""
    x = args[0]
    nd = {torch_F.max_pool1d: 1, torch_F.max_pool2d: 2, torch_F.max_pool3d: 3}[func]
    if bool(arg(args, kwargs, 6, "return_indices", False)):
        raise prop.unsupported(func, "return_indices=True")
    kernel = ntuple(arg(args, kwargs, 1, "kernel_size", None), nd)
    stride = arg(args, kwargs, 2, "stride", None)
    stride = kernel if stride is None or stride == [] or stride == () else ntuple(stride, nd)
    padding = ntuple(arg(args, kwargs, 3, "padding", 0), nd)
    dilation = ntuple(arg(args, kwargs, 4, "dilation", 1), nd)
    ceil_mode = bool(arg(args, kwargs, 5, "ceil_mode", False))
    m, v = x, prop.zvar(x)
    pads: list[int] = []
    outs: list[int] = []
    for d in range(nd):
        size = x.shape[x.dim() - nd + d]
        span = dilation[d] * (kernel[d] - 1) + 1
        room = size + 2 * padding[d] - span
        if room < 0:
            raise ValueError(f"{op_name(func)}: the window {kernel} does not fit the input")
        out = (-(-room // stride[d]) if ceil_mode else room // stride[d]) + 1
        if ceil_mode and (out - 1) * stride[d] >= size + padding[d]:
            out -= 1
        right = max((out - 1) * stride[d] + span - size - padding[d], 0)
        pads = [padding[d], right, *pads]
        outs.append(out)
    absent = any(pads)
    if absent:
        m = torch_F.pad(m, pads, value=-math.inf)
        v = torch_F.pad(v, pads, value=0.0)
    # Each offset inside the window is a strided view of the (padded) input: no copies.
    views: list[tuple[torch.Tensor, torch.Tensor]] = []
    for offset in itertools.product(*(range(k) for k in kernel)):
        index: list[slice] = [slice(None)] * (x.dim() - nd)
        for d, o in enumerate(offset):
            first = o * dilation[d]
            index.append(slice(first, first + (outs[d] - 1) * stride[d] + 1, stride[d]))
        views.append((m[tuple(index)], v[tuple(index)]))
    mean, var = views[0]
    if len(views) == 1:
        # one element a window, stride 1: the view is the input's moments themselves, and
        # .contiguous() would hand them on, where torch's output is a new tensor: an in-place
        # op on the output (ReLU(inplace=True)) would have changed the input's moments
        return prop.bind(
            mean.clone(memory_format=torch.contiguous_format),
            var.clone(memory_format=torch.contiguous_format),
        )
    for m_j, v_j in views[1:]:
        mean, var = max_moments(mean, var, m_j, v_j, absent=absent)
    return prop.bind(mean.contiguous(), var.contiguous())
