"""``predict(model, x, method="moments")``: Monte Carlo dropout's mean and variance in one pass.

Instead of running the network S times with random masks, the mean and variance of every
activation are carried through one forward pass (Wang & Manning, "Fast dropout training",
ICML 2013, https://proceedings.mlr.press/v28/wang13a.html; Brach, Sick & Duerr, "Single Shot MC
Dropout Approximation", 2020, https://arxiv.org/abs/2007.03293):

- dropout keeps the mean; the variance becomes ``(Var[x] + E[x]^2) / (1 - p) - E[x]^2``;
- linear maps (``Linear``, convolutions, average pooling, BatchNorm in eval, sums, means,
  reshapes, concatenation) carry the mean exactly and the variance through the squared weights;
- ReLU and LeakyReLU use the exact moments of a rectified Gaussian; GELU, SiLU, tanh, sigmoid,
  softplus, ELU, SELU, CELU and Mish use Gauss-Hermite quadrature of their Gaussian input; max
  pooling uses Clark's moments of the maximum of Gaussians; LayerNorm and RMSNorm use
  normalization statistics fixed at their expected values (an approximation).

Every activation is treated as Gaussian and **independent of every other** (diagonal covariance,
as in both papers). The covariance the network creates is ignored: a residual branch and its
skip connection, or the units that share one channel-dropout or DropPath mask, are correlated,
and the variance after them is approximate.

How: the model runs once on the inputs, in eval mode, under a ``TorchFunctionMode`` that sees
every torch function, ``torch.Tensor`` method and dropout function (dropkit's and
``torch.nn.functional``'s, module or function). Each tensor it returns holds the *mean*; the
variances sit in a side table keyed by tensor identity. A call that gets a tensor carrying
variance and that has no rule here raises ``NotImplementedError`` naming the op and the module,
as do random-number calls and dropout that cannot be propagated (DropBlock, DropConnect,
recurrent and attention dropout): never a silent answer with part of the noise missing.
"""

from __future__ import annotations

import itertools
import math
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as torch_F
from torch import nn
from torch.overrides import TorchFunctionMode

from dropkit import functional as dk_F
from dropkit.functional._autograd import alpha_constants
from dropkit.functional._concrete import relaxed_moments
from dropkit.mc._gaussian import (
    dropout_moments,
    leaky_relu_moments,
    max_moments,
    quadrature_moments,
    relu_moments,
)
from dropkit.mc._mode import disable_mc, dropout_modules, enable_mc
from dropkit.mc._result import MCResult

__all__ = ["MomentResult", "predict_moments"]

_Handler = Callable[["_Propagation", Callable[..., Any], tuple[Any, ...], dict[str, Any]], Any]
_SAMPLING_HINT = "use method='sampling' for this model"


@dataclass(frozen=True)
class MomentResult(MCResult):
    """:class:`MCResult` of moment propagation: the output's Gaussian, and draws from it.

    ``output_mean`` and ``output_variance`` (``[N, ...]``) are the propagated moments, returned
    by :attr:`mean` and :attr:`variance`. ``samples`` (``[S, N, ...]``) are draws from
    ``N(output_mean, output_variance)``, independent per output, from which the classification
    scores (:attr:`probs`, entropies, mutual information, variation ratio) are computed exactly
    as for Monte Carlo samples.

    Example:
        >>> import torch
        >>> from dropkit import mc
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(),
        ...                             torch.nn.Dropout(0.5), torch.nn.Linear(16, 3))
        >>> result = mc.predict(model, torch.randn(5, 4), method="moments", seed=0)
        >>> result.mean.shape, result.variance.shape, result.samples.shape
        (torch.Size([5, 3]), torch.Size([5, 3]), torch.Size([30, 5, 3]))
        >>> result.strategy, result.probs.shape
        ('moments', torch.Size([5, 3]))
    """

    output_mean: torch.Tensor
    output_variance: torch.Tensor

    @property
    def mean(self) -> torch.Tensor:
        """``[N, ...]`` the propagated mean of the outputs (regression: the prediction)."""
        return self.output_mean

    @property
    def variance(self) -> torch.Tensor:
        """``[N, ...]`` the propagated variance of the outputs (diagonal)."""
        return self.output_variance


# ------------------------------------------------------------------ argument helpers


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _replace(
    args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, value: Any
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if len(args) > index:
        return (*args[:index], value, *args[index + 1 :]), kwargs
    return args, {**kwargs, name: value}


def _op_name(func: Callable[..., Any]) -> str:
    name = getattr(func, "__name__", None) or repr(func)
    qualname = getattr(func, "__qualname__", "") or ""
    if qualname.startswith(("TensorBase.", "Tensor.")) or getattr(func, "__objclass__", None):
        return f"torch.Tensor.{name}"
    module = getattr(func, "__module__", None) or "torch"
    module = {"torch._C._nn": "torch.nn.functional", "torch._C._VariableFunctions": "torch"}.get(
        module, module
    )
    return f"{module}.{name}"


def _leaves(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[Any]:
    for a in (*args, *kwargs.values()):
        if isinstance(a, list | tuple):
            yield from a
        else:
            yield a


# ------------------------------------------------------------------ the mode


class _Propagation(TorchFunctionMode):
    """Carries (mean, variance) through the torch calls of one forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self._table: dict[int, tuple[weakref.ref[torch.Tensor], torch.Tensor]] = {}
        self._squares: dict[int, tuple[weakref.ref[torch.Tensor], torch.Tensor]] = {}
        self.dropouts = 0
        self.where: list[str] = []  # the stack of module names, for error messages

    # -- the side table

    def var(self, t: Any) -> torch.Tensor | None:
        if not isinstance(t, torch.Tensor):
            return None
        entry = self._table.get(id(t))
        if entry is None or entry[0]() is not t:
            return None
        return entry[1]

    def zvar(self, t: torch.Tensor) -> torch.Tensor:
        v = self.var(t)
        return torch.zeros_like(t) if v is None else v

    def bind(self, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        key = id(t)
        table = self._table

        def forget(ref: weakref.ref[torch.Tensor]) -> None:
            entry = table.get(key)
            if entry is not None and entry[0] is ref:
                del table[key]

        if v.shape != t.shape:
            v = torch.broadcast_to(v, t.shape)
        table[key] = (weakref.ref(t, forget), v.to(t.dtype))
        return t

    def random(self, t: Any) -> bool:
        return self.var(t) is not None

    def square(self, w: torch.Tensor) -> torch.Tensor:
        entry = self._squares.get(id(w))
        if entry is not None and entry[0]() is w:
            return entry[1]
        sq = w * w
        self._squares[id(w)] = (weakref.ref(w), sq)
        return sq

    # -- errors

    def unsupported(self, func: Callable[..., Any], why: str = "") -> NotImplementedError:
        where = f" in module {self.where[-1]!r}" if self.where else ""
        detail = f" ({why})" if why else ""
        return NotImplementedError(
            f"predict(method='moments'): {_op_name(func)}{where} has no moment-propagation rule"
            f"{detail}; {_SAMPLING_HINT}"
        )

    # -- dispatch

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        dropout = _DROPOUTS.get(func)
        if dropout is not None:
            return dropout(self, func, args, kwargs)
        if func in _RANDOM:
            raise self.unsupported(func, "it draws random numbers the propagation cannot see")
        if not any(self.random(a) for a in _leaves(args, kwargs)):
            return func(*args, **kwargs)
        rule = _RULES.get(func)
        if rule is not None:
            return rule(self, func, args, kwargs)
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor) or (
            isinstance(out, list | tuple) and any(isinstance(o, torch.Tensor) for o in out)
        ):
            raise self.unsupported(func, "its input carries dropout noise")
        return out  # metadata: shape, dtype, dim, ...


# ------------------------------------------------------------------ dropout


def _inplace_result(
    prop: _Propagation, target: torch.Tensor, mean: torch.Tensor, var: torch.Tensor
) -> torch.Tensor:
    target.copy_(mean)
    return prop.bind(target, var)


def _dropout_rule(
    constants: Callable[[float, dict[str, Any]], tuple[float, float, float]],
    *,
    training_name: str = "training",
    inplace_name: str | None = "inplace",
    default_training: bool = True,
) -> _Handler:
    """Dropout ``func(input, p, training, inplace, ...)``, on where ``training`` is True (the
    flags :func:`~dropkit.mc.mc_mode` sets, as for sampling)."""

    def rule(
        prop: _Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        x = args[0] if args else kwargs["input"]
        p = _arg(args, kwargs, 1, "p", 0.5)
        if not _arg(args, kwargs, 2, training_name, default_training):
            return func(*args, **kwargs)  # off: the identity (the input's moments stay)
        # The op itself checks its arguments (rank, p, mode); with training off it does nothing.
        checked_args, checked_kwargs = _replace(args, kwargs, 2, training_name, False)
        if inplace_name is not None:
            checked_args, checked_kwargs = _replace(
                checked_args, checked_kwargs, 3, inplace_name, False
            )
        func(*checked_args, **checked_kwargs)
        p = float(p)
        prop.dropouts += 1
        if p == 0.0:
            return x
        scale, shift, fill = constants(p, kwargs)
        mean, var = dropout_moments(x, prop.var(x), p, scale, shift, fill)
        inplace = inplace_name is not None and bool(_arg(args, kwargs, 3, inplace_name, False))
        if inplace or getattr(func, "__name__", "").endswith("_"):
            return _inplace_result(prop, x, mean, var)
        return prop.bind(mean, var)

    return rule


def _inverted(p: float, kwargs: dict[str, Any]) -> tuple[float, float, float]:
    scale = 1.0 if not kwargs.get("scale_by_keep", True) else (0.0 if p >= 1 else 1 / (1 - p))
    return scale, 0.0, 0.0


def _alpha(p: float, kwargs: dict[str, Any]) -> tuple[float, float, float]:
    return alpha_constants(p)


def _bias_dropout(
    prop: _Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``bias_dropout(x, bias, p, training, *, activation)`` and ``bias_dropout_add(x, bias,
    residual, p, training)``: the bias, the activation, dropout and the residual, in turn."""
    with_residual = func is dk_F.bias_dropout_add
    at = 3 if with_residual else 2
    x, bias = args[0], _arg(args, kwargs, 1, "bias", None)
    residual = _arg(args, kwargs, 2, "residual", None) if with_residual else None
    p = float(_arg(args, kwargs, at, "p", 0.5))
    if not _arg(args, kwargs, at + 1, "training", True):
        p = 0.0  # off: still the bias, activation and residual
    checked_args, checked_kwargs = _replace(args, kwargs, at + 1, "training", False)
    func(*checked_args, **checked_kwargs)
    if prop.random(bias):
        raise prop.unsupported(func, "a bias that carries dropout noise")
    prop.dropouts += 1
    m, v = x + bias, prop.zvar(x)
    activation = kwargs.get("activation")
    if activation == "relu":
        m, v = relu_moments(m, v)
    elif activation == "gelu":
        m, v = quadrature_moments(torch_F.gelu, m, v)
    if p > 0.0:
        m, v = dropout_moments(m, v, p, *_inverted(p, {}))
    if residual is not None:
        m, v = m + residual, v + prop.zvar(residual)
    return prop.bind(m, v)


def _attention(
    prop: _Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``scaled_dot_product_attention``: its dropout (and softmax) have no rule."""
    if float(_arg(args, kwargs, 4, "dropout_p", 0.0)) > 0.0:
        raise prop.unsupported(func, "attention dropout")
    if any(prop.random(a) for a in _leaves(args, kwargs)):
        raise prop.unsupported(func, "its input carries dropout noise")
    return func(*args, **kwargs)


def _concrete(
    prop: _Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Concrete dropout: ``x * m`` with the relaxed factor ``m``'s two moments
    (:func:`~dropkit.functional._concrete.relaxed_moments`), as sampling draws them."""
    x = args[0] if args else kwargs["input"]
    if not _arg(args, kwargs, 2, "training", True):
        return func(*args, **kwargs)
    checked_args, checked_kwargs = _replace(args, kwargs, 2, "training", False)
    func(*checked_args, **checked_kwargs)  # the op checks its arguments
    prop.dropouts += 1
    p = float(_arg(args, kwargs, 1, "p", 0.5))
    if p == 0.0:
        return x
    mean, second = relaxed_moments(p, float(kwargs.get("temperature", 0.1)))
    var = prop.zvar(x) * second + x.square() * (second - mean * mean)
    return prop.bind(x * mean, var)


def _rejected_dropout(why: str) -> _Handler:
    def rule(
        prop: _Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        raise prop.unsupported(func, why)

    return rule


_element = _dropout_rule(_inverted)
_DROPOUTS: dict[Callable[..., Any], _Handler] = {
    **dict.fromkeys(
        (
            torch_F.dropout,
            torch_F.dropout1d,
            torch_F.dropout2d,
            torch_F.dropout3d,
            dk_F.dropout,
            dk_F.dropout1d,
            dk_F.dropout2d,
            dk_F.dropout3d,
            dk_F.locked_dropout,
            dk_F.drop_path,
            # Gaussian dropout's noise has the inverted Bernoulli mask's two moments.
            dk_F.gaussian_dropout,
        ),
        _element,
    ),
    **dict.fromkeys(
        (torch_F.alpha_dropout, torch_F.feature_alpha_dropout),
        _dropout_rule(_alpha, default_training=False),
    ),
    **dict.fromkeys((dk_F.alpha_dropout, dk_F.feature_alpha_dropout), _dropout_rule(_alpha)),
    **dict.fromkeys(
        (torch.dropout, torch.feature_dropout, torch.dropout_, torch.feature_dropout_),
        _dropout_rule(_inverted, training_name="train", inplace_name=None),
    ),
    **dict.fromkeys(
        (
            torch.alpha_dropout,
            torch.feature_alpha_dropout,
            torch.alpha_dropout_,
            torch.feature_alpha_dropout_,
        ),
        _dropout_rule(_alpha, training_name="train", inplace_name=None),
    ),
    torch_F.scaled_dot_product_attention: _attention,
    dk_F.bias_dropout: _bias_dropout,
    **dict.fromkeys(
        (
            dk_F.concrete_dropout,
            dk_F.concrete_dropout1d,
            dk_F.concrete_dropout2d,
            dk_F.concrete_dropout3d,
        ),
        _concrete,
    ),
    dk_F.bias_dropout_add: _bias_dropout,
    dk_F.drop_block2d: _rejected_dropout("DropBlock's blocks and renormalization"),
    dk_F.drop_block3d: _rejected_dropout("DropBlock's blocks and renormalization"),
    dk_F.dropconnect: _rejected_dropout("dropout on weights"),
    dk_F.embedding_dropout: _rejected_dropout("dropout on weights"),
}

_RANDOM = frozenset(
    {
        torch.rand,
        torch.rand_like,
        torch.randn,
        torch.randn_like,
        torch.randint,
        torch.randint_like,
        torch.randperm,
        torch.bernoulli,
        torch.normal,
        torch.poisson,
        torch.multinomial,
        torch.Tensor.bernoulli,
        torch.Tensor.bernoulli_,
        torch.Tensor.uniform_,
        torch.Tensor.normal_,
        torch.Tensor.random_,
        torch.Tensor.exponential_,
        torch.Tensor.geometric_,
        torch.Tensor.cauchy_,
        torch.Tensor.log_normal_,
        torch.Tensor.multinomial,
    }
)


# ------------------------------------------------------------------ linear maps


def _weighted(
    prop: _Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``func(input, weight, bias, ...)`` linear in ``input``: Linear, conv, conv_transpose."""
    x, weight = args[0], _arg(args, kwargs, 1, "weight", None)
    bias = _arg(args, kwargs, 2, "bias", None)
    if prop.random(weight) or prop.random(bias):
        raise prop.unsupported(func, "weights that carry dropout noise")
    mean = func(*args, **kwargs)
    vargs, vkwargs = _replace(args, kwargs, 1, "weight", prop.square(weight))
    vargs, vkwargs = _replace(vargs, vkwargs, 2, "bias", None)
    vargs = (prop.zvar(x), *vargs[1:])
    return prop.bind(mean, func(*vargs, **vkwargs))


def _matmul(
    prop: _Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    a, b = args[0], _arg(args, kwargs, 1, "other", kwargs.get("mat2"))
    if prop.random(a) and prop.random(b):
        raise prop.unsupported(func, "a product of two noisy tensors")
    mean = func(a, b)
    var = func(prop.zvar(a), b * b) if prop.random(a) else func(a * a, prop.zvar(b))
    return prop.bind(mean, var)


def _structural(
    prop: _Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Ops that move, copy or select elements: the same op on the variances."""

    def to_var(a: Any) -> Any:
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            return prop.zvar(a)
        if isinstance(a, list | tuple):
            return type(a)(to_var(e) for e in a)
        return a

    mean = func(*args, **kwargs)
    var = func(*(to_var(a) for a in args), **{k: to_var(a) for k, a in kwargs.items()})
    if isinstance(mean, torch.Tensor):
        return prop.bind(mean, var)
    for m, v in zip(mean, var, strict=True):
        prop.bind(m, v)
    return mean


def _where(
    prop: _Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    cond, a, b = args[0], _arg(args, kwargs, 1, "input", None), _arg(args, kwargs, 2, "other", None)
    if prop.random(cond):
        raise prop.unsupported(func, "a condition that depends on dropout noise")

    def var(t: Any) -> Any:
        return prop.zvar(t) if isinstance(t, torch.Tensor) else 0.0

    return prop.bind(func(cond, a, b), torch.where(cond, var(a), var(b)))


def _pad(
    prop: _Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    x, pad = args[0], _arg(args, kwargs, 1, "pad", None)
    mode = _arg(args, kwargs, 2, "mode", "constant")
    mean = func(*args, **kwargs)
    var = torch_F.pad(prop.zvar(x), pad, mode, 0.0 if mode == "constant" else None)
    return prop.bind(mean, var)


def _reduction(
    prop: _Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``sum`` and ``mean``: the sum of variances (divided by n^2 for the mean)."""
    x = args[0]
    mean = func(*args, **kwargs)
    var = func(prop.zvar(x), *args[1:], **kwargs)
    if getattr(func, "__name__", "") == "mean" and mean.numel():
        var = var / (x.numel() // mean.numel())
    return prop.bind(mean, var)


# ------------------------------------------------------------------ element-wise arithmetic

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


def _arith(kind: str) -> _Handler:
    """Binary arithmetic with independent operands (a noisy and a fixed one, or two noisy)."""

    def rule(
        prop: _Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        a, b = args[0], _arg(args, kwargs, 1, "other", 0.0)
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
            return _inplace_result(prop, a, mean, var)
        return prop.bind(mean, var)

    return rule


def _neg(
    prop: _Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    return prop.bind(func(*args, **kwargs), prop.zvar(args[0]))


# ------------------------------------------------------------------ activations


def _activation(
    moments: Callable[[torch.Tensor, torch.Tensor, tuple[Any, ...], dict[str, Any]], Any],
    inplace_at: int | None,
) -> _Handler:
    """An element-wise function ``func(input, ..., inplace)``; ``inplace_at`` is its position."""

    def rule(
        prop: _Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        x = args[0] if args else kwargs["input"]
        inplace = getattr(func, "__name__", "").endswith("_")
        if inplace_at is not None:
            inplace = inplace or bool(_arg(args, kwargs, inplace_at, "inplace", False))
            args, kwargs = _replace(args, kwargs, inplace_at, "inplace", False)
        rest = args[1:]
        mean, var = moments(x, prop.zvar(x), rest, kwargs)
        if inplace:
            return _inplace_result(prop, x, mean, var)
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


# ------------------------------------------------------------------ pooling


def _ntuple(value: Any, n: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    values = tuple(int(e) for e in value)
    return values * n if len(values) == 1 else values


def _avg_pool(
    prop: _Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Average pooling: ``Var = avg_pool(v) / D`` with ``D`` each window's divisor."""
    x = args[0]
    nd = {torch_F.avg_pool1d: 1, torch_F.avg_pool2d: 2, torch_F.avg_pool3d: 3}[func]
    mean = func(*args, **kwargs)
    ones = torch.ones((1, 1, *x.shape[-nd:]), dtype=x.dtype, device=x.device)
    averaged = func(ones, *args[1:], **kwargs)  # (real elements in the window) / D
    kernel = _ntuple(_arg(args, kwargs, 1, "kernel_size", None), nd)
    stride = _arg(args, kwargs, 2, "stride", None)
    stride = kernel if stride is None or stride == [] or stride == () else _ntuple(stride, nd)
    padding = _ntuple(_arg(args, kwargs, 3, "padding", 0), nd)
    ceil_mode = bool(_arg(args, kwargs, 4, "ceil_mode", False))
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


def _adaptive_avg_pool(
    prop: _Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
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


def _max_pool(
    prop: _Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Max pooling: Clark's moments of the maximum, folded over each window's elements."""
    x = args[0]
    nd = {torch_F.max_pool1d: 1, torch_F.max_pool2d: 2, torch_F.max_pool3d: 3}[func]
    if bool(_arg(args, kwargs, 6, "return_indices", False)):
        raise prop.unsupported(func, "return_indices=True")
    kernel = _ntuple(_arg(args, kwargs, 1, "kernel_size", None), nd)
    stride = _arg(args, kwargs, 2, "stride", None)
    stride = kernel if stride is None or stride == [] or stride == () else _ntuple(stride, nd)
    padding = _ntuple(_arg(args, kwargs, 3, "padding", 0), nd)
    dilation = _ntuple(_arg(args, kwargs, 4, "dilation", 1), nd)
    ceil_mode = bool(_arg(args, kwargs, 5, "ceil_mode", False))
    m, v = x, prop.zvar(x)
    pads: list[int] = []
    outs: list[int] = []
    for d in range(nd):
        size = x.shape[x.dim() - nd + d]
        span = dilation[d] * (kernel[d] - 1) + 1
        room = size + 2 * padding[d] - span
        if room < 0:
            raise ValueError(f"{_op_name(func)}: the window {kernel} does not fit the input")
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
    for m_j, v_j in views[1:]:
        mean, var = max_moments(mean, var, m_j, v_j, absent=absent)
    return prop.bind(mean.contiguous(), var.contiguous())


# ------------------------------------------------------------------ normalization


def _batch_norm(
    prop: _Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    x = args[0]
    running_var = _arg(args, kwargs, 2, "running_var", None)
    weight = _arg(args, kwargs, 3, "weight", None)
    training = bool(_arg(args, kwargs, 5, "training", False))
    eps = float(_arg(args, kwargs, 7, "eps", 1e-5))
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


def _layer_norm(
    prop: _Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """LayerNorm with the feature mean and variance fixed at their expectations.

    ``E[s^2] = mean((m - mean(m))^2) + (1 - 1/D) mean(v)`` under independence; the output is
    ``(x - mean(x)) / sqrt(E[s^2] + eps)``, linear given that scale. The noise in the
    statistics themselves is ignored, which errs as D gets small.
    """
    x = args[0]
    shape = _arg(args, kwargs, 1, "normalized_shape", None)
    weight, bias = _arg(args, kwargs, 2, "weight", None), _arg(args, kwargs, 3, "bias", None)
    eps = float(_arg(args, kwargs, 4, "eps", 1e-5))
    if prop.random(weight) or prop.random(bias):
        raise prop.unsupported(func, "noisy weights")
    dims = tuple(range(-len(_ntuple(shape, 1)), 0))
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


def _rms_norm(
    prop: _Propagation, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """RMSNorm with the mean square fixed at its expectation ``mean(m^2 + v)``."""
    x = args[0]
    shape = _arg(args, kwargs, 1, "normalized_shape", None)
    weight = _arg(args, kwargs, 2, "weight", None)
    eps = _arg(args, kwargs, 3, "eps", None)
    eps = torch.finfo(x.dtype).eps if eps is None else float(eps)
    if prop.random(weight):
        raise prop.unsupported(func, "noisy weights")
    dims = tuple(range(-len(_ntuple(shape, 1)), 0))
    v = prop.zvar(x)
    inv = ((x.square() + v).mean(dims, keepdim=True) + eps).rsqrt()
    mean, var = x * inv, v * inv * inv
    if weight is not None:
        mean, var = mean * weight, var * weight * weight
    return prop.bind(mean, var)


# ------------------------------------------------------------------ the rule table

_T = torch.Tensor
_RULES: dict[Callable[..., Any], _Handler] = {
    **dict.fromkeys(
        (
            torch_F.linear,
            torch_F.conv1d,
            torch_F.conv2d,
            torch_F.conv3d,
            torch_F.conv_transpose1d,
            torch_F.conv_transpose2d,
            torch_F.conv_transpose3d,
        ),
        _weighted,
    ),
    **dict.fromkeys(
        (torch.matmul, torch.mm, torch.bmm, _T.matmul, _T.mm, _T.bmm, _T.__matmul__), _matmul
    ),
    **dict.fromkeys(
        (
            _T.view,
            _T.view_as,
            _T.reshape,
            _T.reshape_as,
            _T.flatten,
            _T.unflatten,
            _T.permute,
            _T.transpose,
            _T.t,
            _T.contiguous,
            _T.clone,
            _T.squeeze,
            _T.unsqueeze,
            _T.__getitem__,
            _T.narrow,
            _T.select,
            _T.expand,
            _T.expand_as,
            _T.repeat,
            _T.movedim,
            _T.flip,
            _T.roll,
            _T.chunk,
            _T.split,
            _T.unbind,
            _T.to,
            _T.float,
            _T.double,
            _T.half,
            _T.bfloat16,
            _T.type_as,
            _T.detach,
            _T.swapaxes,
            torch.flatten,
            torch.reshape,
            torch.permute,
            torch.transpose,
            torch.squeeze,
            torch.unsqueeze,
            torch.cat,
            torch.concat,
            torch.concatenate,
            torch.stack,
            torch.hstack,
            torch.vstack,
            torch.chunk,
            torch.split,
            torch.unbind,
            torch.narrow,
            torch.select,
            torch.movedim,
            torch.flip,
            torch.roll,
            torch.clone,
            torch.detach,
            torch.swapaxes,
            torch_F.pixel_shuffle,
            torch_F.pixel_unshuffle,
        ),
        _structural,
    ),
    torch.where: _where,
    torch_F.pad: _pad,
    **dict.fromkeys((torch.sum, torch.mean, _T.sum, _T.mean), _reduction),
    **dict.fromkeys(
        (torch.add, _T.add, _T.__add__, _T.__radd__, _T.add_, _T.__iadd__), _arith("add")
    ),
    **dict.fromkeys((torch.sub, _T.sub, _T.__sub__, _T.sub_, _T.__isub__), _arith("add")),
    **dict.fromkeys((torch.rsub, _T.__rsub__), _arith("rsub")),
    **dict.fromkeys(
        (torch.mul, _T.mul, _T.__mul__, _T.__rmul__, _T.mul_, _T.__imul__), _arith("mul")
    ),
    **dict.fromkeys(
        (torch.div, torch.true_divide, _T.div, _T.__truediv__, _T.div_, _T.__itruediv__),
        _arith("div"),
    ),
    **dict.fromkeys((torch.neg, _T.neg, _T.__neg__), _neg),
    **dict.fromkeys(
        (torch.relu, torch.relu_, _T.relu, _T.relu_), _activation(_relu, inplace_at=None)
    ),
    torch_F.relu: _activation(_relu, inplace_at=1),
    torch_F.leaky_relu: _activation(_leaky, inplace_at=2),
    torch_F.gelu: _activation(_quadrature(torch_F.gelu), inplace_at=None),
    torch_F.silu: _activation(_quadrature(torch_F.silu), inplace_at=1),
    torch_F.mish: _activation(_quadrature(torch_F.mish), inplace_at=1),
    torch_F.softplus: _activation(_quadrature(torch_F.softplus), inplace_at=None),
    torch_F.elu: _activation(_quadrature(torch_F.elu), inplace_at=2),
    torch_F.celu: _activation(_quadrature(torch_F.celu), inplace_at=2),
    torch_F.selu: _activation(_quadrature(torch_F.selu), inplace_at=1),
    **dict.fromkeys(
        (torch.tanh, _T.tanh, torch_F.tanh), _activation(_quadrature(torch.tanh), inplace_at=None)
    ),
    **dict.fromkeys(
        (torch.sigmoid, _T.sigmoid, torch_F.sigmoid),
        _activation(_quadrature(torch.sigmoid), inplace_at=None),
    ),
    **dict.fromkeys((torch_F.avg_pool1d, torch_F.avg_pool2d, torch_F.avg_pool3d), _avg_pool),
    **dict.fromkeys(
        (torch_F.adaptive_avg_pool1d, torch_F.adaptive_avg_pool2d, torch_F.adaptive_avg_pool3d),
        _adaptive_avg_pool,
    ),
    **dict.fromkeys((torch_F.max_pool1d, torch_F.max_pool2d, torch_F.max_pool3d), _max_pool),
    torch_F.batch_norm: _batch_norm,
    torch_F.layer_norm: _layer_norm,
    torch_F.rms_norm: _rms_norm,
    # Tensors made from a noisy one's shape only: deterministic.
    **dict.fromkeys(
        (
            torch.zeros_like,
            torch.ones_like,
            torch.empty_like,
            torch.full_like,
            _T.new_zeros,
            _T.new_ones,
            _T.new_empty,
            _T.new_full,
        ),
        lambda prop, func, args, kwargs: func(*args, **kwargs),
    ),
}


# ------------------------------------------------------------------ the forward


def _dropout_like(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Dropout modules with p > 0: dropkit's registry, plus anything else called *Drop* with a p."""
    found = {id(m): (name, m) for name, m, p in dropout_modules(model) if p > 0}
    for name, m in model.named_modules():
        p = getattr(m, "p", None)
        if "Drop" in type(m).__name__ and isinstance(p, float) and p > 0 and id(m) not in found:
            found[id(m)] = (name, m)
    return list(found.values())


def _reject_hidden_dropout(model: nn.Module, dropouts: list[tuple[str, nn.Module]]) -> None:
    for name, module in dropouts:
        if isinstance(module, nn.RNNBase | nn.MultiheadAttention) or type(module).__name__ in (
            "EmbeddingDropout",
            "WeightDrop",
        ):
            raise NotImplementedError(
                f"predict(method='moments'): module {name!r} ({type(module).__name__}) drops "
                f"units inside a fused op or on its weights, which moment propagation does not "
                f"cover; {_SAMPLING_HINT}"
            )


def _forward(
    model: nn.Module, x: torch.Tensor, dropouts: list[tuple[str, nn.Module]]
) -> tuple[torch.Tensor, torch.Tensor, int]:
    prop = _Propagation()
    handles = []
    names = {id(m): name or type(m).__name__ for name, m in model.named_modules()}
    seen_at: dict[int, int] = {}

    def enter(module: nn.Module, inputs: Any) -> None:
        prop.where.append(names.get(id(module), type(module).__name__))
        seen_at[id(module)] = prop.dropouts

    def leave(module: nn.Module, inputs: Any, output: Any) -> None:
        if prop.where:
            prop.where.pop()

    def check(module: nn.Module, inputs: Any, output: Any) -> None:
        if module.training and prop.dropouts == seen_at.get(id(module), prop.dropouts):
            raise NotImplementedError(
                f"predict(method='moments'): module {names[id(module)]!r} "
                f"({type(module).__name__}) is dropout but called no dropout function that "
                f"moment propagation knows; {_SAMPLING_HINT}"
            )

    try:
        for module in model.modules():
            handles.append(module.register_forward_pre_hook(enter))
            handles.append(module.register_forward_hook(leave))
        for _, module in dropouts:
            handles.append(module.register_forward_hook(check))
        with prop:
            out = model(x)
    finally:
        for handle in handles:
            handle.remove()
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"predict: the model must return a tensor, got {type(out).__name__}")
    var = prop.var(out)
    return out, (torch.zeros_like(out) if var is None else var), prop.dropouts


def _flushing_subnormals() -> bool:
    """Whether subnormal floats are flushed to zero now (torch has a setter, no getter)."""
    return bool((torch.tensor([1e-39]) * 1.0).item() == 0.0)


def predict_moments(
    model: nn.Module,
    x: object,
    samples: int = 30,
    *,
    batch_size: int | None = None,
    seed: int | None = None,
) -> MomentResult:
    """The output's mean and variance under MC dropout by moment propagation, in one pass.

    See :func:`dropkit.mc.predict` with ``method="moments"`` and the notes of this module.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"predict: expected samples to be a positive int, got {samples!r}")
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        raise ValueError(
            "predict(method='moments'): expected a tensor input with the batch in dim 0; for "
            "tuple or keyword inputs use method='sampling'"
        )
    if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
        raise ValueError(f"predict: expected batch_size >= 1 or None, got {batch_size!r}")
    dropouts = _dropout_like(model)
    _reject_hidden_dropout(model, dropouts)
    chunk = batch_size or max(1, x.shape[0])
    means: list[torch.Tensor] = []
    variances: list[torch.Tensor] = []
    # The same modules on as for sampling: mc_mode's flags (eval, the stochastic ones on).
    state = enable_mc(model)
    # Gaussian tails and their products underflow to subnormal floats, on which CPUs are
    # 10-100x slower; they are far below anything that matters here, so flush them to zero.
    flushing = _flushing_subnormals()
    torch.set_flush_denormal(True)
    try:
        with torch.no_grad():
            for start in range(0, x.shape[0], chunk):
                part = x[start : start + chunk]
                # Discovery runs the model in train mode: on a copy, in case it works in place.
                state.discover((part.clone(),), {}, "predict(method='moments')")
                mean, var, seen = _forward(model, part, dropouts)
                if seen == 0:
                    raise ValueError(
                        "predict(method='moments'): no dropout ran in the model's forward, so "
                        "there is no uncertainty to propagate; add dropout"
                    )
                means.append(mean)
                variances.append(var)
    finally:
        torch.set_flush_denormal(flushing)
        disable_mc(state)
    mean, var = torch.cat(means), torch.cat(variances)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=mean.device).manual_seed(seed)
    noise = torch.randn(
        (samples, *mean.shape), generator=generator, dtype=mean.dtype, device=mean.device
    )
    draws = mean + var.sqrt() * noise
    return MomentResult(draws, "moments", mean, var)
