"""The factor rules of :class:`FactorPropagation` (``_covariance.py``), by op family.

Each rule runs after the op's diagonal moment rule, on what it returned, and sets the factor
of the output (``prop.bind_factor``), or names the place where the output stays diagonal
(``prop.record``). The maths of each is in ``_covariance.py``'s docstring.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as torch_F

from dropkit._registry import function_spec
from dropkit.mc._moments._covariance import (
    FactorPropagation,
    _State,
    _unattributed,
    dropout_factor_rule,
    factor_rule,
)
from dropkit.mc._moments._gaussian import _hermite
from dropkit.mc._moments._mode import arg

__all__: list[str] = []

_T = torch.Tensor

# ------------------------------------------------------------------ linear maps


@factor_rule(torch_F.linear)
def _linear(
    prop: FactorPropagation,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    out: Any,
    before: Callable[[Any], _State],
) -> None:
    x, weight = args[0], arg(args, kwargs, 1, "weight", None)
    v, f = before(x)
    if v is None:
        return
    if x.dim() != 2:
        prop.record(func, f"diagonal: input of {x.dim()} dims, the covariance needs [N, D]")
        return
    e = _unattributed(v, f)
    new = (e > 0).any(0)
    width = prop.sources + int(new.sum())
    if weight.shape[0] * width > prop.max_factor:
        prop.record(
            func,
            f"diagonal: a factor of {weight.shape[0]} x {width} sources exceeds max_factor "
            f"{prop.max_factor}",
        )
        return
    cols = weight[:, new].unsqueeze(0) * e[:, new].sqrt().unsqueeze(1)  # [N, out, new]
    parts = [] if f is None else [torch.einsum("oi,nir->nor", weight, prop.padded(f, prop.sources))]
    if f is None and prop.sources:
        parts.append(cols.new_zeros((*cols.shape[:2], prop.sources)))
    factor = torch.cat([*parts, cols], -1)
    prop.sources = width
    prop.bind_factor(out, factor)
    prop.bind(out, factor.square().sum(-1))
    prop.record(func, "lowrank")


def _conv(
    prop: FactorPropagation,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    out: Any,
    before: Callable[[Any], _State],
) -> None:
    prop.record(func, "diagonal: convolution maps")


factor_rule(
    torch_F.conv1d,
    torch_F.conv2d,
    torch_F.conv3d,
    torch_F.conv_transpose1d,
    torch_F.conv_transpose2d,
    torch_F.conv_transpose3d,
)(_conv)


# ------------------------------------------------------------------ dropout


@dropout_factor_rule
def _dropout(
    prop: FactorPropagation,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    out: Any,
    before: Callable[[Any], _State],
) -> None:
    spec = function_spec(func)
    x = args[0] if args else kwargs["input"]
    _v, f = before(x)
    if spec is None or not isinstance(out, torch.Tensor):
        return
    if not spec.training(args, kwargs) or spec.rate(args, kwargs) == 0.0:
        prop.bind_factor(out, f)
        return
    p = spec.rate(args, kwargs)
    shape = _mask_shape(spec, x, kwargs) if spec.variant in _MASKED else None
    if shape is None:
        if f is not None or spec.sharing != "element":
            prop.record(func, f"diagonal: no covariance rule for {spec.variant!r} dropout")
        prop.bind_factor(out, None)
        return
    if shape == tuple(x.shape):
        if f is not None:
            prop.bind_factor(out, f)  # inverted dropout: E[mask] = 1, the covariance stays
        return
    # One source per mask: the units that share it move together by sqrt(p / (1 - p)) E[x].
    groups = math.prod(shape[1:])
    width = prop.sources + groups
    if x[0].numel() * width > prop.max_factor:
        prop.record(func, f"diagonal: {width} sources exceed max_factor {prop.max_factor}")
        prop.bind_factor(out, None)
        return
    ids = torch.arange(groups, device=x.device).reshape(shape[1:]).expand(x.shape[1:])
    one_hot = torch_F.one_hot(ids, groups).to(x.dtype)
    cols = (x * math.sqrt(p / (1.0 - p))).unsqueeze(-1) * one_hot
    old = x.new_zeros((*x.shape, prop.sources)) if f is None else prop.padded(f, prop.sources)
    prop.sources = width
    prop.bind_factor(out, torch.cat([old, cols], -1))
    prop.record(func, "lowrank")


_MASKED = ("element", "channel", "channel1d", "channel2d", "channel3d", "path")
_CHANNEL_DIMS = {"channel1d": 3, "channel2d": 4, "channel3d": 5}


def _mask_shape(spec: Any, x: torch.Tensor, kwargs: dict[str, Any]) -> tuple[int, ...] | None:
    """The shape of the call's mask (broadcast over the rest of ``x``), or None if unknown."""
    sharing = spec.sharing
    if sharing == "argument":
        if spec.variant == "path":
            sharing = "sample"
        else:
            given = kwargs.get("noise_shape")
            if given is None:
                return tuple(x.shape)
            if len(given) != x.dim():
                return None
            return tuple(x.shape[d] if s is None else int(s) for d, s in enumerate(given))
    if sharing == "element":
        return tuple(x.shape)
    if sharing == "channel":
        if x.dim() != _CHANNEL_DIMS.get(spec.variant, x.dim()) or x.dim() < 3:
            return None
        return (x.shape[0], x.shape[1], *([1] * (x.dim() - 2)))
    if sharing in ("sample", "batch"):
        return (x.shape[0], *([1] * (x.dim() - 1)))
    return None


# ------------------------------------------------------------------ activations


def _expected_slope(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    m: torch.Tensor,
    v: torch.Tensor,
) -> torch.Tensor:
    sd = v.sqrt()
    name = getattr(func, "__name__", "")
    if name in ("relu", "relu_", "leaky_relu"):
        z = (m / sd.clamp_min(torch.finfo(m.dtype).tiny)).clamp(-9.0, 9.0)
        cdf: torch.Tensor = torch.special.ndtr(z)
        if name == "leaky_relu":
            a = float(arg(args, kwargs, 1, "negative_slope", 0.01))
            return cdf * (1.0 - a) + a
        return cdf
    # Stein's lemma: E[f'(x)] = E[(x - m) f(x)] / v, by Gauss-Hermite quadrature.
    rest = args[1:]
    kw = {k: a for k, a in kwargs.items() if k not in ("input", "inplace")}
    plain: Callable[..., torch.Tensor] = func
    total = torch.zeros_like(m)
    safe = sd.clamp_min(1e-12)
    for t, w in _hermite(32):
        total += (w * t) * plain(m + sd * t, *rest, **kw)
    return total / safe


def _activation(
    prop: FactorPropagation,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    out: Any,
    before: Callable[[Any], _State],
) -> None:
    x = args[0] if args else kwargs["input"]
    v, f = before(x)
    if f is None or v is None:
        return
    m = x if out is not x else None
    if m is None:  # in place: the input's mean is gone, and with it the slope
        prop.record(func, "diagonal: an in-place activation")
        prop.bind_factor(out, None)
        return
    g = _expected_slope(func, args, kwargs, m, v)
    prop.bind_factor(out, f * g.unsqueeze(-1))


factor_rule(
    torch.relu,
    _T.relu,
    torch_F.relu,
    torch_F.leaky_relu,
    torch_F.gelu,
    torch_F.silu,
    torch_F.mish,
    torch_F.softplus,
    torch_F.elu,
    torch_F.celu,
    torch_F.selu,
    torch.tanh,
    _T.tanh,
    torch_F.tanh,
    torch.sigmoid,
    _T.sigmoid,
    torch_F.sigmoid,
)(_activation)


# ------------------------------------------------------------------ arithmetic and shapes


def _sum(
    prop: FactorPropagation,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    out: Any,
    before: Callable[[Any], _State],
) -> None:
    a, b = args[0], arg(args, kwargs, 1, "other", 0.0)
    (va, fa), (vb, fb) = before(a), before(b)
    if fa is None and fb is None:
        return
    name = getattr(func, "__name__", "")
    sign = -1.0 if "sub" in name else 1.0
    alpha = float(kwargs.get("alpha", 1.0)) * sign
    if "rsub" in name:
        (va, fa), (vb, fb), alpha = (vb, fb), (va, fa), -float(kwargs.get("alpha", 1.0))
    width = prop.sources
    parts = []
    for f, c in ((fa, 1.0), (fb, alpha)):
        if f is not None:
            parts.append(prop.padded(f, width) * c)
    factor = parts[0] if len(parts) == 1 else parts[0] + parts[1]
    if factor.shape[:-1] != out.shape:
        prop.record(func, "diagonal: a broadcasting sum")
        prop.bind_factor(out, None)
        return
    e = torch.zeros_like(out)
    if va is not None:
        e = e + _unattributed(va, fa)
    if vb is not None:
        e = e + _unattributed(vb, fb) * (alpha * alpha)
    prop.bind_factor(out, factor)
    prop.bind(out, e + factor.square().sum(-1))


factor_rule(
    torch.add,
    _T.add,
    _T.__add__,
    _T.__radd__,
    _T.add_,
    _T.__iadd__,
    torch.sub,
    _T.sub,
    _T.__sub__,
    _T.sub_,
    _T.__isub__,
    torch.rsub,
    _T.__rsub__,
)(_sum)


def _scaled(
    prop: FactorPropagation,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    out: Any,
    before: Callable[[Any], _State],
) -> None:
    a, b = args[0], arg(args, kwargs, 1, "other", 1.0)
    (va, fa), (vb, fb) = before(a), before(b)
    if fa is None and fb is None:
        return
    divide = "div" in getattr(func, "__name__", "")
    if va is not None and vb is not None:
        why = "division by a noisy tensor" if divide else "a product of two noisy tensors"
        prop.record(func, f"diagonal: {why}")
        prop.bind_factor(out, None)
        return
    noisy, fixed = (fa, b) if fa is not None else (fb, a)
    if divide and fa is None:
        return  # the diagonal rule has already refused a noisy divisor
    assert noisy is not None
    if isinstance(fixed, torch.Tensor):
        factor = noisy / fixed.unsqueeze(-1) if divide else noisy * fixed.unsqueeze(-1)
    else:
        factor = noisy / float(fixed) if divide else noisy * float(fixed)
    if factor.shape[:-1] != out.shape:
        prop.record(func, "diagonal: a broadcasting product")
        prop.bind_factor(out, None)
        return
    prop.bind_factor(out, factor)


factor_rule(
    torch.mul,
    _T.mul,
    _T.__mul__,
    _T.__rmul__,
    _T.mul_,
    _T.__imul__,
    torch.div,
    torch.true_divide,
    _T.div,
    _T.__truediv__,
    _T.div_,
    _T.__itruediv__,
)(_scaled)


def _same(
    prop: FactorPropagation,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    out: Any,
    before: Callable[[Any], _State],
) -> None:
    """Element order kept: neg, clone, contiguous, detach; and reshapes of a row-major tensor."""
    _, f = before(args[0])
    if f is None or not isinstance(out, torch.Tensor):
        return
    if "neg" in getattr(func, "__name__", ""):
        f = -f
    prop.bind_factor(out, f.reshape(*out.shape, f.shape[-1]))


factor_rule(
    torch.neg,
    _T.neg,
    _T.__neg__,
    _T.clone,
    torch.clone,
    _T.contiguous,
    _T.detach,
    torch.detach,
    _T.view,
    _T.view_as,
    _T.reshape,
    _T.reshape_as,
    _T.flatten,
    torch.flatten,
    torch.reshape,
)(_same)


@factor_rule(torch_F.layer_norm)
def _layer_norm(
    prop: FactorPropagation,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    out: Any,
    before: Callable[[Any], _State],
) -> None:
    """Statistics fixed, as in the diagonal rule: ``y = (x - mean(x)) * inv * w + b``, linear."""
    x = args[0]
    v, f = before(x)
    if f is None or v is None:
        return
    shape = arg(args, kwargs, 1, "normalized_shape", None)
    if len(tuple(shape)) != 1:
        prop.record(func, "diagonal: LayerNorm over more than one dim")
        prop.bind_factor(out, None)
        return
    weight = arg(args, kwargs, 2, "weight", None)
    eps = float(arg(args, kwargs, 4, "eps", 1e-5))
    d = x.shape[-1]
    centered = x - x.mean(-1, keepdim=True)
    spread = centered.square().mean(-1, keepdim=True) + v.mean(-1, keepdim=True) * (1 - 1 / d)
    scale = (spread + eps).rsqrt()
    if weight is not None:
        scale = scale * weight
    e = _unattributed(v, f)
    e = (e * (1 - 2 / d) + e.mean(-1, keepdim=True) / d) * scale * scale
    factor = (f - f.mean(-2, keepdim=True)) * scale.unsqueeze(-1)
    prop.bind_factor(out, factor)
    prop.bind(out, e + factor.square().sum(-1))
