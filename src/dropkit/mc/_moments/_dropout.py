"""Dropout rules: where the variance comes from, by variant of :mod:`dropkit._registry`.

Each rule sees every call of a registered dropout function of its variant (on or off), as a
:class:`~dropkit._intercept.DropoutCall`: its rate and flag read, its spec saying where ``p``
and ``training`` sit.
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
from dropkit._intercept import DropoutCall
from dropkit.functional import alpha_constants, relaxed_moments
from dropkit.mc._moments._gaussian import dropout_moments, quadrature_moments, relu_moments
from dropkit.mc._moments._mode import DropoutRule, Propagation, arg, dropout_rule

__all__: list[str] = []

_Constants = Callable[[float, dict[str, Any]], tuple[float, float, float]]


# The arguments already checked, so that a repeated call checks once: the op's checks depend
# only on these (the input's shape, dtype, device and strides, and the other arguments).
_CHECKED: dict[tuple[object, ...], None] = {}


def _check(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Run ``func`` (switched off) on the call's arguments: it raises where they are wrong (rank,
    ``p``, mode), exactly as when sampling."""
    x = args[0] if args else kwargs.get("input")
    key: tuple[object, ...] | None = None
    if isinstance(x, torch.Tensor):
        rest = (*args[1:], *kwargs.items())
        for a in rest:  # a loop, not any(...): this runs for every dropout call
            if isinstance(a, torch.Tensor) or (
                isinstance(a, tuple) and len(a) == 2 and isinstance(a[1], torch.Tensor)
            ):
                break
        else:
            key = (func, x.shape, x.dtype, x.device, x.stride(), *rest)
            try:
                if key in _CHECKED:
                    return
            except TypeError:  # an unhashable argument (a list): checked every time
                key = None
    func(*args, **kwargs)
    if key is not None:
        if len(_CHECKED) > 4096:
            _CHECKED.clear()
        _CHECKED[key] = None


def _masked(constants: _Constants) -> DropoutRule:
    """``y = where(keep, scale * x + shift, fill)``, the constants from the rate and the call."""

    def rule(prop: Propagation, call: DropoutCall) -> Any:
        func, args, kwargs, spec = call.func, call.args, call.kwargs, call.spec
        x = args[0] if args else kwargs["input"]
        if not call.training:
            return func(*args, **kwargs)  # off: the identity (the input's moments stay)
        # torch.nn.functional's and dropkit's ``(input, p, training, inplace)``; torch's C
        # functions (``torch.dropout_``...) say it with a trailing underscore instead.
        inplace = getattr(func, "__name__", "").endswith("_")
        at, name = spec.training_at, spec.training_name
        if at is None or name is None:  # the rate alone switches it: checked at rate 0
            _check(func, *spec.with_rate(args, kwargs, 0.0))
        else:  # the spec's positions read inline (no packed sequences): this runs per call
            n = len(args)
            checked = list(args)
            checked_kwargs = kwargs
            if n > at:
                checked[at] = False
            else:
                checked_kwargs = {**kwargs, name: False}
            if name == "training":
                if n > at + 1:
                    inplace = inplace or bool(args[at + 1])
                    checked[at + 1] = False
                elif kwargs.get("inplace"):
                    inplace = True
                    checked_kwargs = {**checked_kwargs, "inplace": False}
            _check(func, tuple(checked), checked_kwargs)
        p = call.rate
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
def _bias_dropout(prop: Propagation, call: DropoutCall) -> Any:
    """``bias_dropout(x, bias, p, training, *, activation)`` and ``bias_dropout_add(x, bias,
    residual, p, training)``: the bias, the activation, dropout and the residual, in turn."""
    func, args, kwargs, spec = call.func, call.args, call.kwargs, call.spec
    with_residual = func is dk_F.bias_dropout_add
    x, bias = args[0], arg(args, kwargs, 1, "bias", None)
    residual = arg(args, kwargs, 2, "residual", None) if with_residual else None
    p = call.rate if call.training else 0.0  # off: still the bias, activation and residual
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
def _concrete(prop: Propagation, call: DropoutCall) -> Any:
    """Concrete dropout: ``x * m`` with the relaxed factor ``m``'s two moments
    (:func:`~dropkit.functional.relaxed_moments`), as sampling draws them."""
    func, args, kwargs = call.func, call.args, call.kwargs
    x = args[0] if args else kwargs["input"]
    if not call.training:
        return func(*args, **kwargs)
    checked_args, checked_kwargs = call.spec.with_training(args, kwargs, False)
    func(*checked_args, **checked_kwargs)  # the op checks its arguments
    prop.dropouts += 1
    p = call.rate
    if p == 0.0:
        return x
    mean, second = relaxed_moments(p, float(kwargs.get("temperature", 0.1)))
    var = prop.zvar(x) * second + x.square() * (second - mean * mean)
    return prop.bind(x * mean, var)


@dropout_rule("attention")
def _attention(prop: Propagation, call: DropoutCall) -> Any:
    """Attention: its dropout (and softmax) have no rule."""
    if call.active:
        raise prop.unsupported(call.func, "attention dropout")
    return prop.plain(call.func, call.args, call.kwargs)


def _rejected(why: str) -> DropoutRule:
    def rule(prop: Propagation, call: DropoutCall) -> Any:
        if call.active:
            raise prop.unsupported(call.func, why)
        return prop.plain(call.func, call.args, call.kwargs)

    return rule


dropout_rule("block")(_rejected("DropBlock's blocks and renormalization"))
dropout_rule("dropconnect", "embedding")(_rejected("dropout on weights"))
dropout_rule("rnn")(_rejected("dropout inside a fused recurrent op"))
# It returns its mask beside the output, which the element rule does not.
dropout_rule(torch.native_dropout)(_rejected("a dropout that returns its mask"))
