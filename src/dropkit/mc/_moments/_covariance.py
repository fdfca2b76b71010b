"""Cross-unit covariance for moment propagation: a low-rank factor over the noise sources.

The diagonal pass treats every unit as independent of every other. Units that share upstream
masks covary, and a linear map that sums them (the classifier after a hidden layer) gets half
of Monte Carlo's variance or less. Here a tensor may also carry a **factor** ``L`` of shape
``[N, *shape, r]`` over ``r`` independent noise sources, so that its covariance is
``L L^T + diag(e)`` with ``e = var - sum(L^2, -1)`` the variance not attributed to a source
(every unit's own). Its variance stays the diagonal pass's (exact per unit where that is
exact); the factor adds the cross terms. Rules, registered with :func:`factor_rule` by op:

- ``linear`` on a ``[N, D]`` input: ``L <- W L``, and each input unit's unattributed variance
  becomes a source of its own (``W diag(sqrt(e))``): the output covariance is exact for a
  linear map. The output variance is then ``sum(L^2, -1)``: the diagonal pass's
  ``W^2 var`` plus the cross terms;
- element dropout keeps ``L`` (``E[mask] = 1``); channel dropout and DropPath add one source
  per mask (``sqrt(p / (1 - p)) E[x]`` on the units that share it);
- element-wise activations scale ``L`` by ``E[f'(x)]`` (``Phi(m / s)`` for ReLU; Gauss-Hermite
  quadrature for the smooth ones): by Stein's lemma the exact covariance of ``f(x)`` with
  any unit jointly Gaussian with ``x``, and the first term of Mehler's expansion of
  ``Cov(f(x_i), f(x_j))`` (Wu et al., "Deterministic Variational Inference for Robust
  Bayesian Neural Networks", ICLR 2019, https://arxiv.org/abs/1810.03958, derive the full
  bivariate form for ReLU);
- sums and differences add the factors (a skip connection and its branch covary through
  them), products and quotients by fixed tensors scale them, reshapes reshape them,
  LayerNorm (statistics fixed, as in the diagonal rule) centers and scales them.

Any other op that receives a factored tensor gives a diagonal output, as do convolutions
(conv maps stay diagonal) and layers whose factor would exceed ``max_factor`` elements per
input: each such place is named in :attr:`MomentResult.covariance`, never silently.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as torch_F
from torch import nn

from dropkit._registry import function_spec
from dropkit.mc._moments._gaussian import _hermite
from dropkit.mc._moments._mode import Propagation, arg, op_name

__all__ = ["FACTOR_RULES", "MAX_FACTOR", "FactorPropagation", "FactorRule", "factor_rule"]

#: Default limit on a factor's elements per input (``out_features * sources``): about 256 KB
#: of float32 per input, the size of a 256 -> 256 layer's factor.
MAX_FACTOR = 65_536

_T = torch.Tensor
_State = tuple[torch.Tensor | None, torch.Tensor | None]  # (variance, factor) before the call
#: ``rule(prop, func, args, kwargs, out, before)``: sets the factor of ``out`` (and may rebind
#: its variance); ``before(t)`` is an input's (variance, factor) as they were before the call.
FactorRule = Callable[
    [
        "FactorPropagation",
        Callable[..., Any],
        tuple[Any, ...],
        dict[str, Any],
        Any,
        Callable[[Any], _State],
    ],
    None,
]
FACTOR_RULES: dict[Callable[..., Any], FactorRule] = {}
_F = TypeVar("_F", bound=FactorRule)


def factor_rule(*funcs: Callable[..., Any]) -> Callable[[_F], _F]:
    """Register ``rule`` as the factor rule of each of ``funcs`` (a decorator)."""

    def register(rule: _F) -> _F:
        for func in funcs:
            FACTOR_RULES[func] = rule
        return rule

    return register


def _leaves(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    for a in (*args, *kwargs.values()):
        if isinstance(a, list | tuple):
            out.extend(a)
        else:
            out.append(a)
    return out


class FactorPropagation(Propagation):
    """:class:`Propagation` with a second side table: each tensor's factor ``[N, *shape, r]``.

    Sources are numbered in the order they appear; a factor covers the first ``r`` of them
    (later ones are zero for it), so two factors add after padding the shorter.
    """

    def __init__(self, model: nn.Module | None = None, max_factor: int = MAX_FACTOR) -> None:
        super().__init__(model)
        self.max_factor = max_factor
        self.sources = 0
        self.forms: dict[str, str] = {}  # "module (op)" -> the form used there
        self._factors: dict[int, tuple[Any, torch.Tensor]] = {}

    # -- the factor table

    def factor(self, t: Any) -> torch.Tensor | None:
        """The factor bound to ``t``, or None (its covariance is diagonal)."""
        if not isinstance(t, torch.Tensor):
            return None
        entry = self._factors.get(id(t))
        if entry is None or entry[0]() is not t:
            return None
        return entry[1]

    def bind_factor(self, t: torch.Tensor, f: torch.Tensor | None) -> None:
        """Record ``f`` as the factor of ``t`` (None: ``t`` is diagonal from here)."""
        import weakref

        if f is None:
            self._factors.pop(id(t), None)
            return
        self._factors[id(t)] = (weakref.ref(t), f)

    def padded(self, f: torch.Tensor, width: int) -> torch.Tensor:
        """``f`` with zero columns up to ``width`` sources."""
        return f if f.shape[-1] == width else torch_F.pad(f, (0, width - f.shape[-1]))

    def record(self, func: Callable[..., Any], form: str) -> None:
        """Name the form used at this call (once per module and op)."""
        where = self.module_name() or "<model>"
        self.forms.setdefault(f"{where} ({op_name(func)})", form)

    # -- dispatch: the diagonal rule first, then the factor rule on what it returned

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        leaves = _leaves(args, kwargs)
        before: dict[int, _State] = {}
        for a in leaves:
            if isinstance(a, torch.Tensor):
                v = self.var(a)
                if v is not None:
                    before[id(a)] = (v, self.factor(a))
        out = super().__torch_function__(func, types, args, kwargs)
        rule = FACTOR_RULES.get(func)
        if rule is None and function_spec(func) is not None:
            rule = _DROPOUT_FACTOR  # dropout makes sources even from a fixed input
        elif not before:
            return out
        factored = any(f is not None for _, f in before.values())
        if rule is None:
            tensors = (
                [out]
                if isinstance(out, torch.Tensor)
                else list(out)
                if isinstance(out, list | tuple)
                else []
            )
            if factored and any(isinstance(t, torch.Tensor) for t in tensors):
                self.record(func, "diagonal: no covariance rule for this op")
                for t in tensors:
                    if isinstance(t, torch.Tensor):
                        self.bind_factor(t, None)  # an in-place op keeps no stale factor
            return out

        def state(t: Any) -> _State:
            return before.get(id(t), (None, None)) if isinstance(t, torch.Tensor) else (None, None)

        rule(self, func, args, kwargs, out, state)
        return out


def _unattributed(v: torch.Tensor, f: torch.Tensor | None) -> torch.Tensor:
    return v if f is None else (v - f.square().sum(-1)).clamp_min(0.0)


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


_DROPOUT_FACTOR: FactorRule = _dropout


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
