"""Dropout rules: where the variance comes from, by variant of :mod:`dropkit._registry`.

Each rule sees every call of a registered dropout function of its variant (on or off), with
the function's :class:`~dropkit._registry.FunctionSpec` saying where ``p`` and ``training`` sit.
A rule is on where ``training`` is True: the flags :func:`~dropkit.mc.mc_mode` sets, as for
sampling. The op itself still runs once with ``training=False``, so that it checks its arguments
(rank, ``p``, mode) exactly as it would when sampling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as torch_F

from dropkit import functional as dk_F
from dropkit._registry import FunctionSpec
from dropkit.functional._autograd import alpha_constants
from dropkit.functional._concrete import relaxed_moments
from dropkit.mc._moments._gaussian import dropout_moments, quadrature_moments, relu_moments
from dropkit.mc._moments._mode import DropoutRule, Propagation, arg, dropout_rule, replace

__all__: list[str] = []

_Constants = Callable[[float, dict[str, Any]], tuple[float, float, float]]


def _inplace_at(spec: FunctionSpec) -> int | None:
    # torch.nn.functional's and dropkit's ``(input, p, training, inplace)``; torch's C functions
    # (``torch.dropout_``...) say it with a trailing underscore instead.
    if spec.training_at is None or spec.training_name != "training":
        return None
    return spec.training_at + 1


def _masked(constants: _Constants) -> DropoutRule:
    """``y = where(keep, scale * x + shift, fill)``, the constants from the rate and the call."""

    def rule(
        prop: Propagation,
        spec: FunctionSpec,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        x = args[0] if args else kwargs["input"]
        if not spec.training(args, kwargs):
            return func(*args, **kwargs)  # off: the identity (the input's moments stay)
        checked_args, checked_kwargs = spec.with_training(args, kwargs, False)
        inplace_at = _inplace_at(spec)
        inplace = getattr(func, "__name__", "").endswith("_")
        if inplace_at is not None:
            inplace = inplace or bool(arg(args, kwargs, inplace_at, "inplace", False))
            checked_args, checked_kwargs = replace(
                checked_args, checked_kwargs, inplace_at, "inplace", False
            )
        func(*checked_args, **checked_kwargs)
        p = spec.rate(args, kwargs)
        prop.dropouts += 1
        if p == 0.0:
            return x
        scale, shift, fill = constants(p, kwargs)
        mean, var = dropout_moments(x, prop.var(x), p, scale, shift, fill)
        if inplace:
            return prop.rebind(x, mean, var)
        return prop.bind(mean, var)

    return rule


def _inverted(p: float, kwargs: dict[str, Any]) -> tuple[float, float, float]:
    scale = 1.0 if not kwargs.get("scale_by_keep", True) else (0.0 if p >= 1 else 1 / (1 - p))
    return scale, 0.0, 0.0


def _alpha(p: float, kwargs: dict[str, Any]) -> tuple[float, float, float]:
    return alpha_constants(p)


# Gaussian dropout's noise has the inverted Bernoulli mask's two moments; the mask's sharing
# (channel, sample, time) does not change the moments of each unit.
dropout_rule("element", "channel", "channel1d", "channel2d", "channel3d", "path", "locked")(
    _masked(_inverted)
)
dropout_rule("gaussian")(_masked(_inverted))
dropout_rule("alpha", "feature_alpha")(_masked(_alpha))


@dropout_rule("fused")
def _bias_dropout(
    prop: Propagation,
    spec: FunctionSpec,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """``bias_dropout(x, bias, p, training, *, activation)`` and ``bias_dropout_add(x, bias,
    residual, p, training)``: the bias, the activation, dropout and the residual, in turn."""
    with_residual = func is dk_F.bias_dropout_add
    x, bias = args[0], arg(args, kwargs, 1, "bias", None)
    residual = arg(args, kwargs, 2, "residual", None) if with_residual else None
    p = spec.rate(args, kwargs)
    if not spec.training(args, kwargs):
        p = 0.0  # off: still the bias, activation and residual
    checked_args, checked_kwargs = spec.with_training(args, kwargs, False)
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


@dropout_rule(
    dk_F.concrete_dropout, dk_F.concrete_dropout1d, dk_F.concrete_dropout2d, dk_F.concrete_dropout3d
)
def _concrete(
    prop: Propagation,
    spec: FunctionSpec,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Concrete dropout: ``x * m`` with the relaxed factor ``m``'s two moments
    (:func:`~dropkit.functional._concrete.relaxed_moments`), as sampling draws them."""
    x = args[0] if args else kwargs["input"]
    if not spec.training(args, kwargs):
        return func(*args, **kwargs)
    checked_args, checked_kwargs = spec.with_training(args, kwargs, False)
    func(*checked_args, **checked_kwargs)  # the op checks its arguments
    prop.dropouts += 1
    p = spec.rate(args, kwargs)
    if p == 0.0:
        return x
    mean, second = relaxed_moments(p, float(kwargs.get("temperature", 0.1)))
    var = prop.zvar(x) * second + x.square() * (second - mean * mean)
    return prop.bind(x * mean, var)


@dropout_rule("attention")
def _attention(
    prop: Propagation,
    spec: FunctionSpec,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Attention: its dropout (and softmax) have no rule."""
    if spec.active(args, kwargs):
        raise prop.unsupported(func, "attention dropout")
    return prop.plain(func, args, kwargs)


def _rejected(why: str) -> DropoutRule:
    def rule(
        prop: Propagation,
        spec: FunctionSpec,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        if spec.active(args, kwargs):
            raise prop.unsupported(func, why)
        return prop.plain(func, args, kwargs)

    return rule


dropout_rule("block")(_rejected("DropBlock's blocks and renormalization"))
dropout_rule("dropconnect", "embedding")(_rejected("dropout on weights"))
dropout_rule("rnn")(_rejected("dropout inside a fused recurrent op"))
# It returns its mask beside the output, which the element rule does not.
dropout_rule(torch.native_dropout)(_rejected("a dropout that returns its mask"))
