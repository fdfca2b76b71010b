"""Layers that drop weights: EmbeddingDropout (whole words) and WeightDrop (DropConnect), and
:func:`add_dropconnect` / :func:`remove_dropconnect`, which put DropConnect on a whole model's
chosen layers and take it off again."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as torch_F
from torch import nn
from torch.func import functional_call

from dropkit import functional as F
from dropkit._registry import register_layer
from dropkit.functional import check_p
from dropkit.nn._dropout import not_scriptable

__all__ = ["EmbeddingDropout", "WeightDrop", "add_dropconnect", "remove_dropconnect"]


@register_layer("embedding")
class EmbeddingDropout(nn.Module):
    """An :class:`torch.nn.Embedding` whose rows (words) are dropped during training.

    Every occurrence of a dropped word in the batch reads a zero vector; kept rows are scaled
    by ``1/(1-p)``. See :func:`dropkit.functional.embedding_dropout`. The wrapped embedding's
    parameters stay where they are (``state_dict`` keys gain an ``embedding.`` prefix).

    Args:
        embedding: the embedding to wrap.
        p: probability of dropping a word. Default: 0.5.

    Shape:
        - Input: integer indices of any shape. Output: ``(*, embedding_dim)``.

    Example:
        >>> import torch
        >>> from dropkit import nn
        >>> emb = nn.EmbeddingDropout(torch.nn.Embedding(100, 8), p=0.1)
        >>> emb(torch.tensor([[1, 2, 3]])).shape
        torch.Size([1, 3, 8])
    """

    p: float

    def __init__(self, embedding: nn.Embedding, p: float = 0.5) -> None:
        super().__init__()
        if not isinstance(embedding, nn.Embedding):
            raise TypeError(
                f"EmbeddingDropout: expected an nn.Embedding, got {type(embedding).__name__}"
            )
        self.embedding = embedding
        self.p = check_p("EmbeddingDropout", p)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        emb = self.embedding
        weight = F.embedding_dropout(emb.weight, self.p, self.training)
        return torch_F.embedding(
            input,
            weight,
            emb.padding_idx,
            emb.max_norm,
            emb.norm_type,
            emb.scale_grad_by_freq,
            emb.sparse,
        )

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def __prepare_scriptable__(self) -> nn.Module:
        raise not_scriptable(self)


@register_layer("dropconnect")
class WeightDrop(nn.Module):
    """DropConnect on named weights of a wrapped module, e.g. an LSTM's ``weight_hh_l0``.

    Each training forward calls the module with freshly dropped copies of the named weights
    through :func:`torch.func.functional_call`; the parameters themselves are never modified,
    so gradients reach them and recurrent modules keep their flattened weights consistent
    (the older approach of deleting and re-assigning parameters breaks on current PyTorch).
    See :func:`dropkit.functional.dropconnect` (Wan et al. 2013; Merity et al. 2017,
    https://arxiv.org/abs/1708.02182).

    Args:
        module: the module whose weights to drop.
        weights: the parameter name or names, as in ``module.named_parameters()``.
        p: probability of dropping a weight. Default: 0.5.

    Example:
        >>> import torch
        >>> from dropkit import nn
        >>> lstm = nn.WeightDrop(torch.nn.LSTM(4, 8), ["weight_hh_l0"], p=0.3)
        >>> out, _ = lstm(torch.randn(5, 2, 4))
        >>> out.shape
        torch.Size([5, 2, 8])
    """

    p: float

    def __init__(self, module: nn.Module, weights: str | Sequence[str], p: float = 0.5) -> None:
        super().__init__()
        self.p = check_p("WeightDrop", p)
        names = [weights] if isinstance(weights, str) else list(weights)
        params = dict(module.named_parameters())
        missing = [n for n in names if n not in params]
        if not names or missing:
            raise ValueError(
                f"WeightDrop: {type(module).__name__} has no parameter named {missing or names!r}; "
                f"expected some of {sorted(params)}"
            )
        self.module = module
        self.weights = tuple(names)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self.training or self.p == 0.0:
            return self.module(*args, **kwargs)
        params = self.module.get_parameter
        dropped = {name: F.dropconnect(params(name), self.p, True) for name in self.weights}
        return functional_call(self.module, dropped, args, kwargs, strict=False)

    def extra_repr(self) -> str:
        return f"weights={list(self.weights)}, p={self.p}"

    def __prepare_scriptable__(self) -> nn.Module:
        raise not_scriptable(self)


def _layer_types(layers: object) -> tuple[type[nn.Module], ...]:
    chosen = (layers,) if isinstance(layers, type) else tuple(layers)  # type: ignore[arg-type]
    for layer in chosen:
        if not (isinstance(layer, type) and issubclass(layer, nn.Module)):
            hint = f"; pass torch.nn.{layer}" if isinstance(layer, str) else ""
            raise TypeError(
                f"add_dropconnect: expected layers to be nn.Module classes (torch.nn.Linear, "
                f"torch.nn.Conv2d...), got {layer!r}{hint}"
            )
    if not chosen:
        raise ValueError("add_dropconnect: expected at least one layer class in layers")
    return chosen


def add_dropconnect(
    model: nn.Module,
    p: float = 0.5,
    *,
    layers: type[nn.Module] | Sequence[type[nn.Module]] = (nn.Linear,),
    weights: str | Sequence[str] = "weight",
    inplace: bool = False,
) -> nn.Module:
    """DropConnect on a whole model: each layer of the chosen classes is wrapped in a
    :class:`WeightDrop` that drops its ``weights`` with probability ``p`` while it trains.

    The layers keep their parameters (the trained weights, by the same tensors: gradients and
    optimizers reach them); only ``state_dict`` keys gain a ``.module`` level, which
    :func:`remove_dropconnect` takes away again. In eval mode the model computes what it did;
    :func:`dropkit.mc.mc_mode` and :func:`dropkit.mc.predict` switch the wrappers on for Monte
    Carlo DropConnect. Exact classes only (a subclass may read its weight elsewhere: the output
    projection of ``nn.MultiheadAttention`` is one); other dropout layers stay as they are.
    From Wan et al., "Regularization of Neural Networks using DropConnect" (ICML 2013,
    https://proceedings.mlr.press/v28/wan13.html); as Monte Carlo DropConnect, Mobiny et al.,
    "DropConnect Is Effective in Modeling Uncertainty of Bayesian Deep Networks"
    (https://arxiv.org/abs/1906.04569).

    Args:
        model: the model.
        p: probability of dropping a weight. Default: 0.5.
        layers: the layer classes to wrap. Default: ``(torch.nn.Linear,)``.
        weights: the parameter name or names to drop in each layer. Default: ``"weight"``.
        inplace: change ``model`` itself; otherwise a deep copy (a layer passed as ``model``
            is returned wrapped either way). Default: False.

    Returns:
        The model with the layers wrapped (``model`` itself when ``inplace=True``).

    Raises:
        TypeError: ``layers`` holds something other than module classes.
        ValueError: a chosen layer has no parameter named in ``weights``, or a bad ``p``.

    Example:
        >>> import torch
        >>> from dropkit import nn
        >>> patched = nn.add_dropconnect(torch.nn.Sequential(torch.nn.Linear(4, 4)), 0.2)
        >>> patched
        Sequential(
          (0): WeightDrop(
            weights=['weight'], p=0.2
            (module): Linear(in_features=4, out_features=4, bias=True)
          )
        )
        >>> nn.remove_dropconnect(patched)
        Sequential(
          (0): Linear(in_features=4, out_features=4, bias=True)
        )
    """
    rate = check_p("add_dropconnect", p)
    chosen = _layer_types(layers)
    names = (weights,) if isinstance(weights, str) else tuple(weights)
    if not inplace:
        model = copy.deepcopy(model)
    if type(model) in chosen:
        return _wrap(model, names, rate)
    wrapped: dict[int, WeightDrop] = {}  # one wrapper for an instance used in several places
    for parent in list(model.modules()):
        if isinstance(parent, WeightDrop):
            continue  # already dropped
        for name, child in list(parent._modules.items()):
            if child is not None and type(child) in chosen:
                if id(child) not in wrapped:
                    wrapped[id(child)] = _wrap(child, names, rate)
                parent._modules[name] = wrapped[id(child)]
    if not wrapped:
        kinds = ", ".join(layer.__name__ for layer in chosen)
        warnings.warn(
            f"add_dropconnect: {type(model).__name__} has no layer of class {kinds} outside a "
            "WeightDrop (exact classes only); the model is returned unchanged",
            stacklevel=2,
        )
    return model


def _wrap(layer: nn.Module, weights: tuple[str, ...], p: float) -> WeightDrop:
    new = WeightDrop(layer, weights, p)
    new.train(layer.training)
    return new


def remove_dropconnect(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Undo :func:`add_dropconnect`: every :class:`WeightDrop` in ``model`` is replaced by the
    module it wraps, which gives back the model as it was (its ``state_dict`` keys too).

    Args:
        model: the model.
        inplace: change ``model`` itself; otherwise a deep copy (a ``WeightDrop`` passed as
            ``model`` gives its module either way). Default: False.

    Returns:
        The model without DropConnect (``model`` itself when ``inplace=True``).

    Example:
        >>> import torch
        >>> from dropkit import nn
        >>> layer = nn.add_dropconnect(torch.nn.Linear(3, 3))
        >>> type(nn.remove_dropconnect(layer)).__name__
        'Linear'
    """
    if not inplace:
        model = copy.deepcopy(model)
    if isinstance(model, WeightDrop):
        return model.module
    found = False
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if isinstance(child, WeightDrop):
                parent._modules[name] = child.module
                found = True
    if not found:
        warnings.warn(
            f"remove_dropconnect: {type(model).__name__} has no WeightDrop; the model is "
            "returned unchanged",
            stacklevel=2,
        )
    return model
