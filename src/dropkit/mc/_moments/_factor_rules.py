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
    TINY,
    FactorPropagation,
    _energy,
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
    new = (e > TINY * v).any(0)
    count = int(new.sum())
    start = prop.sources
    width = start + count
    if weight.shape[0] * width > prop.max_factor:
        prop.record(
            func,
            f"diagonal: a factor of {weight.shape[0]} x {width} sources exceeds max_factor "
            f"{prop.max_factor}",
        )
        return
    old = None if f is None else prop.padded(f, start)
    sd = e[:, new].sqrt()
    cols = weight[:, new].unsqueeze(0) * sd.unsqueeze(1)  # [N, out, new]
    parts = [] if old is None else [torch.einsum("oi,nir->nor", weight, old)]
    if old is None and start:
        parts.append(cols.new_zeros((*cols.shape[:2], start)))
    factor = torch.cat([*parts, cols], -1)
    prop.sources = width
    if count:
        # The input's own variance is now these sources: a later use of the same input (a
        # skip connection beside this branch) must share them. Its factor is built only then.
        prop.bind_factor(x, _shared(x.shape, old, start, new, sd))
        prop.named(x, start, torch.nonzero(new).squeeze(1), sd)
    var = _energy(factor)
    left = e.masked_fill(new, 0.0)
    if bool((left > 0).any()):  # rounding-sized variance, kept on the diagonal
        var = var + left @ prop.square(weight).T
    prop.bind_factor(out, factor)
    prop.bind(out, var)
    prop.record(func, "lowrank")


def _shared(
    shape: torch.Size, old: torch.Tensor | None, start: int, new: torch.Tensor, sd: torch.Tensor
) -> Callable[[], torch.Tensor]:
    """The factor of a linear map's input once its own variance became sources ``start...``."""

    def build() -> torch.Tensor:
        count = sd.shape[-1]
        cols = sd.new_zeros((*shape, count))
        idx = torch.nonzero(new).squeeze(1)
        cols[:, idx, torch.arange(count, device=idx.device)] = sd
        head = sd.new_zeros((*shape, start)) if old is None else old
        return torch.cat([head, cols], -1)

    return build


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
    if spec is None or not isinstance(out, torch.Tensor):
        return
    if not spec.training(args, kwargs) or spec.rate(args, kwargs) == 0.0:
        prop.bind_factor(out, before(x)[1])
        return
    v, f = before(x)
    p = spec.rate(args, kwargs)
    shape = _mask_shape(spec, x, kwargs) if spec.variant in _MASKED else None
    if shape is None:
        if f is not None or spec.sharing != "element":
            prop.record(func, f"diagonal: no covariance rule for {spec.variant!r} dropout")
        prop.bind_factor(out, None)
        return
    # The mask c: E[c] = mu, Var(c) = sd^2 (mu = 1 for inverted dropout). Units under
    # different masks keep mu^2 of their covariance; units under one mask covary by
    # (mu^2 + sd^2) Cov(x_i, x_j) + sd^2 E[x_i] E[x_j].
    scale = 1.0 if not kwargs.get("scale_by_keep", True) else (0.0 if p >= 1 else 1 / (1 - p))
    mu, sd = scale * (1.0 - p), scale * math.sqrt(p * (1.0 - p))
    if mu == 0.0:
        prop.bind_factor(out, None)  # all dropped: a constant
        return
    if shape == tuple(x.shape):
        if f is None or v is None:
            return
        # Cov(c_i x_i, c_j x_j) = mu^2 Cov(x_i, x_j): the factor, scaled. x's own variance
        # goes on inside out's, unnamed, and is tied back only if x is used again.
        if prop.waiting(x):  # a chain of them: name x's variance, else it is lost to x's source
            f = prop.complete(func, x, v, f, or_as_is=True)
            assert f is not None
        e = _unattributed(v, f)
        if out is not x and not prop.waiting(x) and bool((e > TINY * v).any()):
            prop.pass_on(x, out, mu, e)
        prop.bind_factor(out, f * mu if mu != 1.0 else f)
        return
    full = None
    if f is not None and v is not None:
        full = prop.complete(func, x, v, f, or_as_is=True)  # the mask's noise is what is new
        if full is None:
            prop.bind_factor(out, None)
            return
    # One source per mask (sd E[x] on the units that share it), and, when x carries a factor,
    # sd times that factor again on each mask's units: the within-group term.
    mean = out / mu  # x's mean, also when the call overwrote x in place
    groups = math.prod(shape[1:])
    kept = 0 if f is None else f.shape[-1]
    start = prop.sources
    width = start + groups * (1 + kept)
    if x[0].numel() * width > prop.max_factor:
        prop.record(func, f"diagonal: {width} sources exceed max_factor {prop.max_factor}")
        prop.bind_factor(out, None)
        return
    ids = torch.arange(groups, device=x.device).reshape(shape[1:]).expand(x.shape[1:])
    one_hot = torch_F.one_hot(ids, groups).to(x.dtype)  # [*shape, groups]
    parts = [mean.new_zeros((*x.shape, start)) if full is None else prop.padded(full, start) * mu]
    parts.append((mean * sd).unsqueeze(-1) * one_hot)
    if f is not None and kept:
        within = f[..., :kept].unsqueeze(-2) * one_hot.unsqueeze(-1)  # [*shape, groups, kept]
        parts.append(within.flatten(-2) * sd)
    prop.sources = width
    prop.bind_factor(out, torch.cat(parts, -1))
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
    full = prop.complete(func, x, v, f, or_as_is=True)  # Stein's lemma holds for it too
    if full is None:
        prop.bind_factor(out, None)
        return
    g = _expected_slope(func, args, kwargs, m, v)
    prop.bind_factor(out, full * g.unsqueeze(-1))


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
        a, b = b, a
    # Each input's own variance becomes sources first: the other input (a branch computed
    # from this one) may hold it, and Var(a + b) needs their covariance.
    if fa is not None and va is not None:
        fa = prop.complete(func, a, va, fa, or_as_is=True)
        if fa is None:
            prop.bind_factor(out, None)
            return
        if b is a:
            fb = fa
    if fb is not None and vb is not None and b is not a:
        fb = prop.complete(func, b, vb, fb, or_as_is=True)
        if fb is None:
            prop.bind_factor(out, None)
            return
    # one allocation: the wider factor (scaled) plus the narrower one on its first columns
    pair = sorted(
        ((f, c) for f, c in ((fa, 1.0), (fb, alpha)) if f is not None),
        key=lambda fc: -fc[0].shape[-1],
    )
    if not all(_reaches(f.shape[:-1], out.shape) for f, _ in pair):
        prop.record(func, "diagonal: a broadcasting sum")
        prop.bind_factor(out, None)
        return
    wide, c = pair[0]  # a broadcast input's sources are every unit's it reaches: expanded
    factor = torch.broadcast_to(wide, (*out.shape, wide.shape[-1])) * c
    if len(pair) == 2:
        narrow, c = pair[1]
        factor[..., : narrow.shape[-1]].add_(narrow, alpha=c)
    e = torch.zeros_like(out)
    if va is not None:
        e = e + _unattributed(va, fa)
    if vb is not None and b is not a:
        e = e + _unattributed(vb, fb) * (alpha * alpha)
    prop.bind_factor(out, factor)
    prop.bind(out, e + _energy(factor))


def _reaches(shape: torch.Size, target: torch.Size) -> bool:
    """Whether ``shape`` broadcasts to ``target`` (and no further)."""
    if len(shape) > len(target):
        return False
    return all(s in (1, t) for s, t in zip(reversed(shape), reversed(target), strict=False))


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
    if divide and fa is None:
        return  # the diagonal rule has already refused a noisy divisor
    noisy, fixed = (fa, b) if fa is not None else (fb, a)
    t, v = (a, va) if fa is not None else (b, vb)
    assert noisy is not None
    assert v is not None
    noisy = prop.complete(func, t, v, noisy, or_as_is=True)  # its own variance, shared with t
    if noisy is None:
        prop.bind_factor(out, None)
        return
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
    v, f = before(args[0])
    if f is None or v is None or not isinstance(out, torch.Tensor):
        return
    # The view and the tensor share their own variance. A conv map's (C H W units) would
    # rarely fit max_factor: it then stays unattributed in both, as the next linear map
    # makes it sources of the view's, and only a second use of the tensor itself misses them.
    f = prop.complete(func, args[0], v, f, or_as_is=True)
    assert f is not None
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
    """LayerNorm through its Jacobian at the mean, its statistics from the factor.

    ``y = c / sqrt(s^2 + eps)`` with ``c = x - mean(x)``: its Jacobian at the mean ``m`` is
    ``(P - k u u^T) / sigma``, with ``P`` the centering, ``u = P m / |P m|`` and ``k`` the share
    of ``s^2`` in ``s^2 + eps``. The ``u u^T`` term is the normalization's own dependence on
    the input: noise that moves ``x`` along its centered mean (scales it) leaves ``y`` as it
    is. ``sigma^2`` is the expected ``s^2`` under the noise left by the projection: the spread
    of the mean plus that noise's mean variance, read off the factor (the diagonal rule
    assumes independent units there, which a factor shared by all units, as a residual
    stream's, is not). The output's mean is rebound to ``c(m) / sigma`` with that ``sigma``.
    """
    x = args[0]
    v, f = before(x)
    if f is None or v is None:
        return
    shape = arg(args, kwargs, 1, "normalized_shape", None)
    if len(tuple(shape)) != 1:
        prop.record(func, "diagonal: LayerNorm over more than one dim")
        prop.bind_factor(out, None)
        return
    full = prop.complete(func, x, v, f, or_as_is=True)
    assert full is not None
    weight = arg(args, kwargs, 2, "weight", None)
    bias = arg(args, kwargs, 3, "bias", None)
    eps = float(arg(args, kwargs, 4, "eps", 1e-5))
    d = x.shape[-1]
    c = x - x.mean(-1, keepdim=True)
    spread = c.square().mean(-1, keepdim=True)  # [..., 1]
    u = c / c.square().sum(-1, keepdim=True).sqrt().clamp_min(torch.finfo(c.dtype).tiny)
    e = _unattributed(v, full)  # not sources (rounding, or a map too wide): diagonal, centered
    # One tensor of the factor's size, worked in place: P L, then minus k u (u^T P L).
    factor = full - full.mean(-2, keepdim=True)
    r = factor.shape[-1]
    rows = factor.view(-1, d, r)
    radial = torch.bmm(u.reshape(-1, 1, d), rows) * (spread / (spread + eps)).reshape(-1, 1, 1)
    rows.baddbmm_(u.reshape(-1, d, 1), radial, alpha=-1.0)
    noise = torch.linalg.vector_norm(factor, dim=(-2, -1)).square().unsqueeze(-1) / d
    noise = noise + e.mean(-1, keepdim=True) * (1 - 1 / d)
    inv = (spread + noise + eps).rsqrt()
    mean = c * inv
    e = (e * (1 - 2 / d) + e.mean(-1, keepdim=True) / d) * inv * inv
    gain = inv
    if weight is not None:
        gain = inv * weight
        mean, e = mean * weight, e * weight * weight
    factor.mul_(gain.unsqueeze(-1))
    if bias is not None:
        mean = mean + bias
    out.copy_(mean)
    prop.bind_factor(out, factor)
    prop.bind(out, e + _energy(factor))
