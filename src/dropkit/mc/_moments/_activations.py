"""Activations: ReLU and LeakyReLU by the rectified Gaussian's exact moments, the smooth ones
(GELU, SiLU, Mish, softplus, ELU, CELU, SELU, tanh, sigmoid) by Gauss-Hermite quadrature."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as torch_F

from dropkit.mc._moments._gaussian import leaky_relu_moments, quadrature_moments, relu_moments
from dropkit.mc._moments._mode import Propagation, Rule, moment_rule

__all__: list[str] = []

_T = torch.Tensor


def _activation(
    moments: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    inplace_at: int | None,
    *,
    with_arguments: bool = False,
) -> Rule:
    """An element-wise function ``func(input, ..., inplace)``; ``inplace_at`` is its position.

    ``moments(m, v)`` gives the output's mean and variance for an input ``N(m, v)``; with
    ``with_arguments``, ``moments(m, v, rest, kwargs)`` also gets the call's other arguments.
    """

    def rule(
        prop: Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        x = args[0] if args else kwargs["input"]
        inplace = getattr(func, "__name__", "").endswith("_")
        if inplace_at is not None:
            if len(args) > inplace_at:
                inplace = inplace or bool(args[inplace_at])
                args = (*args[:inplace_at], False, *args[inplace_at + 1 :])
            elif kwargs.get("inplace"):
                inplace = True
        if with_arguments:
            mean, var = moments(x, prop.zvar(x), args[1:], kwargs)
        else:
            mean, var = moments(x, prop.zvar(x))
        if inplace:
            return prop.rebind(x, mean, var)
        return prop.bind(mean, var)

    return rule


def _leaky(m: torch.Tensor, v: torch.Tensor, rest: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    slope = rest[0] if rest else kwargs.get("negative_slope", 0.01)
    return leaky_relu_moments(m, v, float(slope))


def _quadrature(smooth: Callable[..., torch.Tensor], inplace_at: int | None) -> Rule:
    def moments(m: torch.Tensor, v: torch.Tensor, rest: tuple[Any, ...], kw: dict[str, Any]) -> Any:
        kw = {k: a for k, a in kw.items() if k not in ("input", "inplace")}
        return quadrature_moments(lambda t: smooth(t, *rest, **kw), m, v)

    return _activation(moments, inplace_at, with_arguments=True)


moment_rule(torch.relu, torch.relu_, _T.relu, _T.relu_)(_activation(relu_moments, None))
moment_rule(torch_F.relu)(_activation(relu_moments, 1))
moment_rule(torch_F.leaky_relu)(_activation(_leaky, 2, with_arguments=True))
moment_rule(torch_F.gelu)(_quadrature(torch_F.gelu, None))
moment_rule(torch_F.silu)(_quadrature(torch_F.silu, 1))
moment_rule(torch_F.mish)(_quadrature(torch_F.mish, 1))
moment_rule(torch_F.softplus)(_quadrature(torch_F.softplus, None))
moment_rule(torch_F.elu)(_quadrature(torch_F.elu, 2))
moment_rule(torch_F.celu)(_quadrature(torch_F.celu, 2))
moment_rule(torch_F.selu)(_quadrature(torch_F.selu, 1))
moment_rule(torch.tanh, _T.tanh, torch_F.tanh)(_quadrature(torch.tanh, None))
moment_rule(torch.sigmoid, _T.sigmoid, torch_F.sigmoid)(_quadrature(torch.sigmoid, None))
