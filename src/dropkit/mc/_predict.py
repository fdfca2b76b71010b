"""``predict``: Monte Carlo dropout samples, computing the deterministic prefix once.

Everything a network computes before its first stochastic operation is the same in all S
passes. The shared-prefix strategy runs the forward once on the N inputs and, at the first
dropout, replicates its input S times along the batch, so only the rest of the network runs on
S * N rows. Tensors computed before that point and used after it (skip connections) are
replicated when first used. Replicating the same tensor with the same seed is what replicating
the input would have done, so both strategies give the same samples.

The tracking is done by a ``TorchFunctionMode`` that sees every torch call of the forward and by
a hook that dropkit's dropout functions call first; it assumes the batch is dim 0 of the input
and of every tensor that carries it. Where that fails (an error, or an output whose dim 0 is not
S * N) the input is replicated instead, and :attr:`MCResult.strategy` says so.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from dropkit._torch_dropouts import TORCH_DROPOUTS
from dropkit.functional._validation import prefix_hook
from dropkit.mc._mode import _force_training, mc_mode

__all__ = ["MCResult", "predict"]


@dataclass(frozen=True)
class MCResult:
    """Monte Carlo samples and the summaries computed from them.

    ``samples`` is ``[S, N, ...]``: samples first, then the batch, then the model's output dims.
    For classification the last dim holds logits; for regression, predictions.
    """

    samples: torch.Tensor
    strategy: str

    # -------------------------------------------------------------- classification

    @property
    def sample_probs(self) -> torch.Tensor:
        """``[S, N, C]`` softmax of each sample's logits."""
        return torch.softmax(self.samples.float(), dim=-1)

    @property
    def probs(self) -> torch.Tensor:
        """``[N, C]`` mean of the per-sample softmax (not the softmax of mean logits)."""
        return self.sample_probs.mean(0)

    @property
    def predictive_entropy(self) -> torch.Tensor:
        """``[N]`` entropy of :attr:`probs` (total uncertainty), in nats."""
        return _entropy(self.probs)

    @property
    def expected_entropy(self) -> torch.Tensor:
        """``[N]`` mean over samples of each sample's entropy (aleatoric part)."""
        return _entropy(self.sample_probs).mean(0)

    @property
    def mutual_information(self) -> torch.Tensor:
        """``[N]`` predictive minus expected entropy: BALD (Houlsby et al. 2011), epistemic part."""
        return (self.predictive_entropy - self.expected_entropy).clamp_min(0.0)

    @property
    def variation_ratio(self) -> torch.Tensor:
        """``[N]`` fraction of samples whose predicted class is not the most frequent one."""
        votes = self.samples.argmax(-1)  # [S, N]
        counts = torch.nn.functional.one_hot(votes, self.samples.shape[-1]).sum(0)  # [N, C]
        return 1.0 - counts.max(-1).values.float() / self.samples.shape[0]

    @property
    def std(self) -> torch.Tensor:
        """``[N, C]`` standard deviation over samples of the per-sample probabilities."""
        return self.sample_probs.std(0, unbiased=False)

    # -------------------------------------------------------------- regression

    @property
    def mean(self) -> torch.Tensor:
        """``[N, ...]`` mean over samples (regression)."""
        return self.samples.mean(0)

    @property
    def variance(self) -> torch.Tensor:
        """``[N, ...]`` variance over samples (regression), normalized by S."""
        return self.samples.var(0, unbiased=False)


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1)


class _CannotShare(RuntimeError):
    pass


class _SharedPrefix(TorchFunctionMode):
    """Replicates the batch at the first stochastic op and pre-prefix tensors on later use."""

    def __init__(self, samples: int, batch: int, x: torch.Tensor) -> None:
        super().__init__()
        self.samples, self.batch = samples, batch
        self.started = False
        self._busy = False  # inside our own repeat: let torch calls through untouched
        self._before: dict[int, weakref.ref[torch.Tensor]] = {}
        self._copies: dict[int, torch.Tensor] = {}
        self._remember(x)

    def _remember(self, t: torch.Tensor) -> None:
        self._before[id(t)] = weakref.ref(t)

    def _is_before(self, t: torch.Tensor) -> bool:
        ref = self._before.get(id(t))
        return ref is not None and ref() is t

    def _replicate(self, t: torch.Tensor) -> torch.Tensor:
        copy = self._copies.get(id(t))
        if copy is None:
            self._busy = True
            try:
                copy = t.repeat(self.samples, *([1] * (t.dim() - 1)))
            finally:
                self._busy = False
            self._copies[id(t)] = copy
        return copy

    def hook(self, t: torch.Tensor) -> torch.Tensor:
        """The input of a stochastic op: start replication here, or replicate a pre-tensor."""
        if not self.started:
            if t.dim() == 0 or t.shape[0] != self.batch:
                raise _CannotShare(
                    f"the first dropout's input has shape {tuple(t.shape)}, whose dim 0 is not "
                    f"the batch ({self.batch})"
                )
            self.started = True
            return self._replicate(t)
        mapped: torch.Tensor = self._map(t)
        return mapped

    def _map(self, t: Any) -> Any:
        if (
            isinstance(t, torch.Tensor)
            and t.dim() > 0
            and t.shape[0] == self.batch
            and self._is_before(t)
        ):
            return self._replicate(t)
        return t

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if self._busy:
            return func(*args, **kwargs)
        if func in TORCH_DROPOUTS:
            args, kwargs = _force_training(func, args, kwargs)
            p = args[1] if len(args) > 1 else kwargs.get("p", 0.5)
            if p > 0:
                args = (self.hook(args[0]), *args[1:])
        elif self.started:
            args, kwargs = tree_map(self._map, (args, kwargs))
        out = func(*args, **kwargs)
        if not self.started:
            for leaf in tree_flatten(out)[0]:
                if isinstance(leaf, torch.Tensor):
                    self._remember(leaf)
        return out


def _shared_prefix(model: nn.Module, x: torch.Tensor, samples: int) -> torch.Tensor:
    tracker = _SharedPrefix(samples, x.shape[0], x)
    token = prefix_hook.set(tracker.hook)
    try:
        with tracker:
            out: object = model(x)
    finally:
        prefix_hook.reset(token)
    if not isinstance(out, torch.Tensor):
        raise _CannotShare(f"the model returned {type(out).__name__}, not a tensor")
    if not tracker.started:
        raise _CannotShare("no stochastic operation ran")
    if out.dim() == 0 or out.shape[0] != samples * x.shape[0]:
        raise _CannotShare(f"the output's dim 0 is {out.shape[0] if out.dim() else None}")
    return out


def _replicated(model: nn.Module, x: torch.Tensor, samples: int) -> torch.Tensor:
    out = model(x.repeat(samples, *([1] * (x.dim() - 1))))
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"predict: the model must return a tensor, got {type(out).__name__}")
    return out


def predict(
    model: nn.Module,
    x: torch.Tensor,
    samples: int = 30,
    *,
    batch_size: int | None = None,
    share_prefix: bool = True,
    seed: int | None = None,
    method: str = "sampling",
) -> MCResult:
    """Monte Carlo dropout predictions of ``model`` on ``x``: ``samples`` stochastic passes.

    The model runs inside :func:`mc_mode` (eval mode, dropout on) under ``torch.no_grad``.
    From Gal & Ghahramani, "Dropout as a Bayesian Approximation" (ICML 2016,
    https://arxiv.org/abs/1506.02142).

    Args:
        model: a model whose forward takes ``x`` (batch in dim 0) and returns a tensor.
        x: ``[N, ...]`` inputs.
        samples: the number of passes S.
        batch_size: run at most this many inputs at once (memory grows with S * batch_size).
        share_prefix: compute the part before the first dropout once (see the module notes);
            otherwise replicate the input S times.
        seed: makes the result reproducible (torch's global RNG is left as it was).
        method: ``"sampling"`` (S stochastic passes) or ``"moments"``: one pass that carries
            each activation's mean and variance through the network (Wang & Manning, "Fast
            dropout training", ICML 2013; Brach, Sick & Duerr, "Single Shot MC Dropout
            Approximation", https://arxiv.org/abs/2007.03293), then ``samples`` draws from the
            resulting Gaussian over the outputs, from which the scores are computed; the result
            is a :class:`MomentResult` whose ``mean`` and ``variance`` are the propagated ones.
            Units are treated as independent (diagonal covariance); ops without a rule raise
            ``NotImplementedError``. See docs/uncertainty.md.

    Returns:
        An :class:`MCResult` with ``samples`` of shape ``[S, N, ...]``.

    Example:
        >>> import torch
        >>> from dropkit import mc
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(),
        ...                             torch.nn.Dropout(0.5), torch.nn.Linear(16, 3))
        >>> result = mc.predict(model, torch.randn(5, 4), samples=8, seed=0)
        >>> result.samples.shape, result.probs.shape, result.strategy
        (torch.Size([8, 5, 3]), torch.Size([5, 3]), 'shared-prefix')
    """
    if method == "moments":
        from dropkit.mc._moments import predict_moments

        return predict_moments(model, x, samples, batch_size=batch_size, seed=seed)
    if method != "sampling":
        raise ValueError(f"predict: expected method 'sampling' or 'moments', got {method!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"predict: expected samples to be a positive int, got {samples!r}")
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        raise ValueError("predict: expected x to be a tensor with the batch in dim 0")
    if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
        raise ValueError(f"predict: expected batch_size >= 1 or None, got {batch_size!r}")
    chunk = batch_size or max(1, x.shape[0])
    outputs: list[torch.Tensor] = []
    strategy = "shared-prefix" if share_prefix else "replicate"
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad(), mc_mode(model):
        if seed is not None:
            torch.manual_seed(seed)
        for start in range(0, x.shape[0], chunk):
            part = x[start : start + chunk]
            out = None
            if share_prefix:
                state = torch.get_rng_state()
                try:
                    out = _shared_prefix(model, part, samples)
                except (_CannotShare, RuntimeError) as error:
                    torch.set_rng_state(state)  # the fallback draws the same masks
                    strategy = f"replicate (shared prefix not possible: {error})"
            if out is None:
                out = _replicated(model, part, samples)
            outputs.append(out.reshape(samples, part.shape[0], *out.shape[1:]))
    return MCResult(torch.cat(outputs, dim=1), strategy)
