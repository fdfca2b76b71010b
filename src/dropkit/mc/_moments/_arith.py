"""Element-wise arithmetic with independent operands (a noisy and a fixed one, or two noisy)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from dropkit.mc._moments._mode import Propagation, Rule, arg, moment_rule

__all__: list[str] = []

_T = torch.Tensor
_IN_PLACE: dict[Callable[..., Any], Callable[..., Any]] = {
    torch.Tensor.add_: torch.add,
    torch.Tensor.__iadd__: torch.add,
    torch.Tensor.sub_: torch.sub,
    torch.Tensor.__isub__: torch.sub,
    torch.Tensor.mul_: torch.mul,
    torch.Tensor.__imul__: torch.mul,
    torch.Tensor.div_: torch.div,
    torch.Tensor.__itruediv__: torch.div,
}


def _arith(kind: str) -> Rule:
    """Binary arithmetic with independent operands (a noisy and a fixed one, or two noisy)."""

    def rule(
        prop: Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        a, b = args[0], arg(args, kwargs, 1, "other", 0.0)
        alpha = kwargs.get("alpha", 1.0)
        out_of_place = _IN_PLACE.get(func)
        mean = (out_of_place or func)(*args, **kwargs)
        va = prop.zvar(a) if isinstance(a, torch.Tensor) else 0.0
        vb = prop.zvar(b) if isinstance(b, torch.Tensor) else 0.0
        if kind == "add":  # a + alpha b, a - alpha b
            var = va + vb * (alpha * alpha)
        elif kind == "rsub":  # b - alpha a
            var = vb + va * (alpha * alpha)
        elif kind == "mul":
            var = va * (b * b) + vb * (a * a) + va * vb
        else:  # div
            if prop.random(b):
                raise prop.unsupported(func, "division by a noisy tensor")
            if kwargs.get("rounding_mode") is not None:
                raise prop.unsupported(func, "rounding")
            var = va / (b * b)
        var = torch.as_tensor(var, dtype=mean.dtype, device=mean.device)
        if out_of_place is not None:
            return prop.rebind(a, mean, var)
        return prop.bind(mean, var)

    return rule


@moment_rule(torch.neg, _T.neg, _T.__neg__)
def _neg(
    prop: Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    return prop.bind(func(*args, **kwargs), prop.zvar(args[0]))


moment_rule(torch.add, _T.add, _T.__add__, _T.__radd__, _T.add_, _T.__iadd__)(_arith("add"))
moment_rule(torch.sub, _T.sub, _T.__sub__, _T.sub_, _T.__isub__)(_arith("add"))
moment_rule(torch.rsub, _T.__rsub__)(_arith("rsub"))
moment_rule(torch.mul, _T.mul, _T.__mul__, _T.__rmul__, _T.mul_, _T.__imul__)(_arith("mul"))
moment_rule(torch.div, torch.true_divide, _T.div, _T.__truediv__, _T.div_, _T.__itruediv__)(
    _arith("div")
)
