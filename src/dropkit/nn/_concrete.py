"""Concrete dropout layers, whose rates are learned, with the regularizer that learns them.

From Gal, Hron & Kendall, "Concrete Dropout" (NeurIPS 2017, https://arxiv.org/abs/1705.07832).
Each layer holds one parameter, the logit of its rate; :func:`regularization` sums every
layer's term of the variational objective, to be added to the loss; :func:`concrete` turns the
dropout layers of an existing model into concrete ones.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import nn

from dropkit import functional as F
from dropkit._registry import layer_spec, learned_rate_layer, register_layer

__all__ = [
    "ConcreteDropout",
    "ConcreteDropout1d",
    "ConcreteDropout2d",
    "ConcreteDropout3d",
    "concrete",
    "regularization",
]


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


class _ConcreteBase(nn.Module):
    """Base of the concrete dropout layers: a learned rate, its bounds, and the regularizer."""

    _op: ClassVar[str]
    temperature: float
    weight_regularizer: float
    dropout_regularizer: float
    bounds: tuple[float, float]
    in_features: int | None

    def __init__(
        self,
        init_p: float = 0.1,
        *,
        temperature: float = 0.1,
        weight_regularizer: float = 1e-6,
        dropout_regularizer: float = 1e-5,
        bounds: tuple[float, float] = (0.0, 1.0),
        feeds: nn.Module | None = None,
        in_features: int | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        low, high = (float(b) for b in bounds)
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(
                f"{name}: expected bounds (low, high) with 0 <= low < high <= 1, got {bounds!r}"
            )
        if isinstance(init_p, bool) or not isinstance(init_p, int | float):
            raise ValueError(f"{name}: expected init_p to be a number, got {init_p!r}")
        if not low < init_p < high:
            raise ValueError(
                f"{name}: expected init_p strictly inside the bounds ({low:g}, {high:g}), got "
                f"{init_p!r}; the rate is low + (high - low) * sigmoid(p_logit)"
            )
        if not (isinstance(temperature, int | float) and 0.0 < temperature < math.inf):
            raise ValueError(
                f"{name}: expected temperature > 0 (the paper uses 0.1), got {temperature!r}"
            )
        for what, value in (
            ("weight_regularizer", weight_regularizer),
            ("dropout_regularizer", dropout_regularizer),
        ):
            if not (isinstance(value, int | float) and 0.0 <= value < math.inf):
                raise ValueError(f"{name}: expected {what} >= 0, got {value!r}")
        self.bounds = (low, high)
        self.temperature = float(temperature)
        self.weight_regularizer = float(weight_regularizer)
        self.dropout_regularizer = float(dropout_regularizer)
        self.in_features = in_features
        self.p_logit = nn.Parameter(torch.tensor(_logit((init_p - low) / (high - low))))
        self.feed(feeds)

    # ------------------------------------------------------------------ the rate

    def rate(self) -> torch.Tensor:
        """The rate as a 0-dim tensor, differentiable in :attr:`p_logit`."""
        low, high = self.bounds
        sigmoid = torch.sigmoid(self.p_logit)
        return sigmoid if (low, high) == (0.0, 1.0) else low + (high - low) * sigmoid

    @property
    def p(self) -> float:
        """The learned rate (a float, as the ``p`` of a fixed-rate layer)."""
        return float(self.rate().detach())

    @p.setter
    def p(self, value: float) -> None:
        raise AttributeError(
            f"{type(self).__name__}.p is learned and cannot be set; to restart from a rate, "
            "assign layer.p_logit.data, or build the layer with init_p"
        )

    # ------------------------------------------------------------------ the layer it feeds

    @property
    def feeds(self) -> nn.Module | None:
        """The layer whose input this dropout drops (its weights enter the regularizer)."""
        return self.__dict__.get("_feeds")

    def feed(self, layer: nn.Module | None) -> _ConcreteBase:
        """Say which layer this dropout's output feeds; returns ``self``.

        Kept as a plain reference, not a submodule: the layer stays where the model holds it
        (once in ``state_dict`` and ``named_modules``); ``copy.deepcopy`` of the model points
        the copy at the copied layer.
        """
        if layer is not None and not isinstance(layer, nn.Module):
            raise TypeError(
                f"{type(self).__name__}.feed: expected an nn.Module (the layer after this "
                f"dropout), got {type(layer).__name__}"
            )
        self.__dict__["_feeds"] = layer
        return self

    # ------------------------------------------------------------------ forward

    def _features(self, input: torch.Tensor) -> int:
        raise NotImplementedError

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.in_features = self._features(input)
        op = getattr(F, self._op)
        out: torch.Tensor = op(input, self.rate(), self.training, temperature=self.temperature)
        return out

    # ------------------------------------------------------------------ the regularizer

    def regularization(self) -> torch.Tensor:
        """This layer's term of the objective, to be added to the loss.

        ``weight_regularizer * ||W||^2 / (1 - p)`` over the parameters of :attr:`feeds`, plus
        ``dropout_regularizer * K * (p log p + (1 - p) log(1 - p))`` with ``K`` the input
        dimension (:attr:`in_features`: the features of a sample for the element-wise layer,
        the channels for the channel-wise ones, recorded at the last training forward).
        """
        name = type(self).__name__
        p = self.rate()
        total = torch.zeros((), dtype=p.dtype, device=p.device)
        if self.weight_regularizer > 0:
            layer = self.feeds
            if layer is None:
                raise ValueError(
                    f"{name}: the weight term needs the layer this dropout feeds; pass "
                    "feeds=<layer> (or call .feed(layer)), or weight_regularizer=0 to leave the "
                    "weights to the optimizer's weight decay"
                )
            squares = sum(w.square().sum() for w in layer.parameters())
            total = total + self.weight_regularizer * squares / (1.0 - p)
        if self.dropout_regularizer > 0:
            if self.in_features is None:
                raise ValueError(
                    f"{name}: the dropout term needs the input dimension; run a training "
                    "forward first, or pass in_features="
                )
            entropy = p * torch.log(p) + (1.0 - p) * torch.log1p(-p)
            total = total + self.dropout_regularizer * self.in_features * entropy
        return total

    def extra_repr(self) -> str:
        low, high = self.bounds
        bounds = "" if (low, high) == (0.0, 1.0) else f", bounds=({low:g}, {high:g})"
        return f"p={self.p:.4g}, temperature={self.temperature:g}{bounds}"


_ARGS_DOC = """
    Args:
        init_p: the initial rate, inside ``bounds``. Default: 0.1 (the paper's).
        temperature: the relaxation's temperature. Default: 0.1 (the paper's).
        weight_regularizer: the factor of ``||W||^2 / (1 - p)``, ``W`` the parameters of the
            layer this dropout feeds. The paper sets it to ``l**2 / (tau * N)``: ``l`` the prior
            length scale, ``tau`` the model precision (inverse observation noise) and ``N`` the
            number of training samples. Default: 1e-6.
        dropout_regularizer: the factor of ``K * (p log p + (1 - p) log(1 - p))``, ``K`` the
            input dimension; the paper sets it to ``2 / (tau * N)``. Default: 1e-5. With a loss
            that already is the mean negative log-likelihood (cross-entropy; a Gaussian NLL
            with a learned variance) take ``tau = 1``: ``l**2 / N`` and ``2 / N``.
        bounds: ``(low, high)``: the rate is ``low + (high - low) * sigmoid(p_logit)``.
            Default: (0, 1).
        feeds: the layer this dropout's output feeds (see :meth:`feed`). Needed for the weight
            term unless ``weight_regularizer`` is 0.
        in_features: the input dimension ``K`` of the dropout term. Default: recorded at each
            training forward.
"""


@register_layer("element", learned_rate=True)
class ConcreteDropout(_ConcreteBase):
    """Element-wise dropout with a learned rate (Concrete dropout).

    Gal, Hron & Kendall, "Concrete Dropout" (NeurIPS 2017, https://arxiv.org/abs/1705.07832):
    each element is kept by a relaxed Bernoulli factor (see
    :func:`dropkit.functional.concrete_dropout`), so that the rate ``p`` is learned by gradient
    descent; add :func:`dropkit.regularization` (the sum of :meth:`regularization` over the
    model) to the loss. In eval mode the layer is the identity; under
    :func:`dropkit.mc.predict` it draws the same relaxed masks as in training.
    {args}
    Shape:
        - Input: any shape ``(N, *)``. Output: the same shape.

    Example:
        >>> import torch
        >>> from dropkit import nn
        >>> fc = torch.nn.Linear(8, 1)
        >>> drop = nn.ConcreteDropout(feeds=fc)
        >>> drop
        ConcreteDropout(p=0.1, temperature=0.1)
        >>> y = fc(drop(torch.randn(4, 8)))
        >>> drop.in_features, drop.regularization().shape
        (8, torch.Size([]))
        >>> x = torch.ones(2, 8)
        >>> drop.eval()(x) is x
        True
    """

    _op = "concrete_dropout"

    def _features(self, input: torch.Tensor) -> int:
        return math.prod(input.shape[1:]) if input.dim() > 1 else input.numel()


class _ChannelConcrete(_ConcreteBase):
    def _features(self, input: torch.Tensor) -> int:
        return int(input.shape[1]) if input.dim() > 1 else 1


@register_layer("channel1d", learned_rate=True)
class ConcreteDropout1d(_ChannelConcrete):
    """Channel-wise Concrete dropout of ``(N, C, L)`` sequences: one relaxed factor per channel.

    See :class:`ConcreteDropout`; the input dimension ``K`` is the number of channels.
    {args}
    Example:
        >>> import torch
        >>> from dropkit import nn
        >>> nn.ConcreteDropout1d(0.2, weight_regularizer=0)(torch.ones(2, 3, 5)).shape
        torch.Size([2, 3, 5])
    """

    _op = "concrete_dropout1d"


@register_layer("channel2d", learned_rate=True)
class ConcreteDropout2d(_ChannelConcrete):
    """Channel-wise Concrete dropout of ``(N, C, H, W)`` maps: one relaxed factor per channel.

    See :class:`ConcreteDropout`; the input dimension ``K`` is the number of channels.
    {args}
    Example:
        >>> import torch
        >>> from dropkit import nn
        >>> conv = torch.nn.Conv2d(3, 4, 3)
        >>> drop = nn.ConcreteDropout2d(feeds=conv)
        >>> conv(drop(torch.ones(2, 3, 5, 5))).shape, drop.in_features
        (torch.Size([2, 4, 3, 3]), 3)
    """

    _op = "concrete_dropout2d"


@register_layer("channel3d", learned_rate=True)
class ConcreteDropout3d(_ChannelConcrete):
    """Channel-wise Concrete dropout of ``(N, C, D, H, W)`` volumes: one factor per channel.

    See :class:`ConcreteDropout`; the input dimension ``K`` is the number of channels.
    {args}
    Example:
        >>> import torch
        >>> from dropkit import nn
        >>> nn.ConcreteDropout3d(weight_regularizer=0)(torch.ones(1, 2, 2, 2, 2)).shape
        torch.Size([1, 2, 2, 2, 2])
    """

    _op = "concrete_dropout3d"


for _cls in (ConcreteDropout, ConcreteDropout1d, ConcreteDropout2d, ConcreteDropout3d):
    _cls.__doc__ = (_cls.__doc__ or "").replace("{args}", _ARGS_DOC)


def regularization(model: nn.Module) -> torch.Tensor:
    """The sum of every concrete dropout layer's :meth:`~ConcreteDropout.regularization` in
    ``model``: add it to the loss, ``loss = criterion(out, y) + dropkit.regularization(model)``.

    Raises:
        ValueError: ``model`` has no concrete dropout layer (nothing would be learned).

    Example:
        >>> import torch, dropkit
        >>> model = dropkit.concrete(torch.nn.Sequential(
        ...     torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2),
        ...     torch.nn.Linear(16, 1)))
        >>> loss = model(torch.randn(8, 4)).square().mean() + dropkit.regularization(model)
        >>> loss.backward()
        >>> model[2].p_logit.grad is not None
        True
    """
    terms = [m.regularization() for m in model.modules() if isinstance(m, _ConcreteBase)]
    if not terms:
        raise ValueError(
            f"regularization: {type(model).__name__} has no concrete dropout layer; add "
            "dropkit.nn.ConcreteDropout layers or convert the model with dropkit.concrete(model)"
        )
    return torch.stack(terms).sum()


def _first_with_parameters(module: nn.Module) -> nn.Module | None:
    for m in module.modules():
        if any(True for _ in m.parameters(recurse=False)):
            return m
    return None


def _next_layer(parent: nn.Module, index: int) -> nn.Module | None:
    """In an ``nn.Sequential``, the first module with parameters after child ``index``."""
    if not isinstance(parent, nn.Sequential):
        return None
    for child in list(parent.children())[index + 1 :]:
        found = _first_with_parameters(child)
        if found is not None:
            return found
    return None


def concrete(
    model: nn.Module,
    *,
    init_p: float | None = None,
    temperature: float = 0.1,
    weight_regularizer: float = 1e-6,
    dropout_regularizer: float = 1e-5,
    bounds: tuple[float, float] = (0.0, 1.0),
    feeds: Mapping[str, str] | None = None,
) -> nn.Module:
    """A copy of ``model`` with its dropout layers turned into concrete ones (learned rates).

    Element dropout (``torch.nn.Dropout``, ``dropkit.nn.Dropout`` without ``noise_shape``)
    becomes :class:`ConcreteDropout`, channel dropout (``Dropout1d/2d/3d``, torch's or
    dropkit's) ``ConcreteDropout1d/2d/3d``; exact classes only, as :func:`dropkit.convert`
    swaps them; ``model`` itself is not changed. Other dropout layers stay as they were, with a
    warning naming them. Each new layer is told the layer it feeds:
    inside an ``nn.Sequential`` the next module that has parameters; elsewhere give it in
    ``feeds``. This is a function of its own rather than an option of :func:`dropkit.convert`,
    since it changes what the model learns (new parameters, a term in the loss), where
    ``convert`` keeps the model's behaviour.

    Args:
        model: the model.
        init_p: every layer's initial rate. Default: the layer's own rate where it is in
            (0, 1), else 0.1 (the paper's).
        temperature, weight_regularizer, dropout_regularizer, bounds: as for
            :class:`ConcreteDropout`, for every layer.
        feeds: ``{dropout name: name of the layer it feeds}`` (names as in ``named_modules``),
            for dropout outside an ``nn.Sequential`` or to override the guess.

    Returns:
        The converted copy; optimize its parameters (the rates' ``p_logit`` included) and add
        :func:`regularization` to the loss.

    Raises:
        ValueError: no dropout layer to convert, or one whose fed layer is not known (and
            ``weight_regularizer`` > 0), naming it.

    Example:
        >>> import torch, dropkit
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.3),
        ...                             torch.nn.Linear(8, 2))
        >>> learned = dropkit.concrete(model)
        >>> learned[1], learned[1].feeds is learned[2]
        (ConcreteDropout(p=0.3, temperature=0.1), True)
    """
    copied = copy.deepcopy(model)
    modules = dict(copied.named_modules())
    named_feeds = dict(feeds or {})
    for name in named_feeds.values():
        if name not in modules:
            raise ValueError(f"concrete: feeds names {name!r}, which is no module of the model")
    converted = 0
    left: list[str] = []
    for parent_name, parent in list(copied.named_modules()):
        for index, (child_name, child) in enumerate(list(parent.named_children())):
            spec = layer_spec(child, exact=True)
            cls = learned_rate_layer(spec.variant) if spec is not None else None
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if isinstance(child, _ConcreteBase):
                continue
            if cls is None or getattr(child, "noise_shape", None) is not None:
                if layer_spec(child) is not None:
                    left.append(f"{name} ({type(child).__name__})")
                continue
            p = float(getattr(child, spec.rate_attr))  # type: ignore[union-attr]
            start = init_p if init_p is not None else (p if 0.0 < p < 1.0 else 0.1)
            if name in named_feeds:
                fed: nn.Module | None = modules[named_feeds.pop(name)]
            else:
                fed = _next_layer(parent, index)
            if fed is None and weight_regularizer > 0:
                why = (
                    "no module with parameters follows it in its nn.Sequential"
                    if isinstance(parent, nn.Sequential)
                    else f"its parent is a {type(parent).__name__}, not an nn.Sequential"
                )
                raise ValueError(
                    f"concrete: cannot tell which layer {name!r} ({type(child).__name__}) feeds "
                    f"({why}); pass feeds={{{name!r}: '<name of the next layer>'}}, or "
                    "weight_regularizer=0"
                )
            layer = cls(
                start,
                temperature=temperature,
                weight_regularizer=weight_regularizer,
                dropout_regularizer=dropout_regularizer,
                bounds=bounds,
                feeds=fed,
            )
            setattr(parent, child_name, layer)
            converted += 1
    if named_feeds:
        raise ValueError(
            f"concrete: feeds names {sorted(named_feeds)}, which are no convertible dropout "
            "layers of the model"
        )
    if left and converted:
        warnings.warn(
            f"concrete: left {', '.join(left)} as they were: only element and channel dropout "
            "without a noise_shape have a concrete equivalent",
            UserWarning,
            stacklevel=2,
        )
    if not converted:
        raise ValueError(
            f"concrete: {type(model).__name__} has no element or channel dropout layer to turn "
            "into a concrete one (torch.nn.Dropout, Dropout1d/2d/3d or dropkit's)"
        )
    return copied
