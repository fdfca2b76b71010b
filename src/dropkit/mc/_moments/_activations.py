"""Activations: ReLU and LeakyReLU by the rectified Gaussian's exact moments, the smooth ones
(GELU, SiLU, Mish, softplus, ELU, CELU, SELU, tanh, sigmoid) by Gauss-Hermite quadrature."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as torch_F

from dropkit.mc._moments._gaussian import leaky_relu_moments, quadrature_moments, relu_moments
from dropkit.mc._moments._mode import Propagation, Rule, arg, moment_rule, replace

__all__: list[str] = []

_T = torch.Tensor


def _activation(
    moments: Callable[[torch.Tensor, torch.Tensor, tuple[Any, ...], dict[str, Any]], Any],
    inplace_at: int | None,
) -> Rule:
    """An element-wise function ``func(input, ..., inplace)``; ``inplace_at`` is its position."""

    def rule(
        prop: Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        x = args[0] if args else kwargs["input"]
        inplace = getattr(func, "__name__", "").endswith("_")
        if inplace_at is not None:
            inplace = inplace or bool(arg(args, kwargs, inplace_at, "inplace", False))
            args, kwargs = replace(args, kwargs, inplace_at, "inplace", False)
        rest = args[1:]
        mean, var = moments(x, prop.zvar(x), rest, kwargs)
        if inplace:
            return prop.rebind(x, mean, var)
        return prop.bind(mean, var)

    return rule


def _relu(m: torch.Tensor, v: torch.Tensor, rest: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return relu_moments(m, v)


def _leaky(m: torch.Tensor, v: torch.Tensor, rest: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    slope = rest[0] if rest else kwargs.get("negative_slope", 0.01)
    return leaky_relu_moments(m, v, float(slope))


def _quadrature(smooth: Callable[..., torch.Tensor]) -> Callable[..., Any]:
    def moments(m: torch.Tensor, v: torch.Tensor, rest: tuple[Any, ...], kw: dict[str, Any]) -> Any:
        kw = {k: a for k, a in kw.items() if k not in ("input", "inplace")}
        return quadrature_moments(lambda t: smooth(t, *rest, **kw), m, v)

    return moments


moment_rule(torch.relu, torch.relu_, _T.relu, _T.relu_)(_activation(_relu, inplace_at=None))
moment_rule(torch_F.relu)(_activation(_relu, inplace_at=1))
moment_rule(torch_F.leaky_relu)(_activation(_leaky, inplace_at=2))
moment_rule(torch_F.gelu)(_activation(_quadrature(torch_F.gelu), inplace_at=None))
moment_rule(torch_F.silu)(_activation(_quadrature(torch_F.silu), inplace_at=1))
moment_rule(torch_F.mish)(_activation(_quadrature(torch_F.mish), inplace_at=1))
moment_rule(torch_F.softplus)(_activation(_quadrature(torch_F.softplus), inplace_at=None))
moment_rule(torch_F.elu)(_activation(_quadrature(torch_F.elu), inplace_at=2))
moment_rule(torch_F.celu)(_activation(_quadrature(torch_F.celu), inplace_at=2))
moment_rule(torch_F.selu)(_activation(_quadrature(torch_F.selu), inplace_at=1))
moment_rule(torch.tanh, _T.tanh, torch_F.tanh)(
    _activation(_quadrature(torch.tanh), inplace_at=None)
)
moment_rule(torch.sigmoid, _T.sigmoid, torch_F.sigmoid)(
    _activation(_quadrature(torch.sigmoid), inplace_at=None)
)
